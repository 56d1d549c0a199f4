package etcdmeta

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/storage/metatest"
)

// opener opens Metas on one etcd, each under a prefix of its own, and
// second handles on an existing Meta's prefix.
type opener struct {
	etcd   *peers.Etcd
	maxOps int
	mu     sync.Mutex
	prefix map[metatest.Store]string
}

func newOpener(t *testing.T, maxOps int) *opener {
	return &opener{etcd: peers.StartEtcd(t), maxOps: maxOps, prefix: map[metatest.Store]string{}}
}

func (o *opener) openAt(t *testing.T, prefix string) *Meta {
	t.Helper()
	m, err := Open(t.Context(), Options{Endpoints: []string{o.etcd.Endpoint}, Prefix: prefix, MaxTxnOps: o.maxOps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	o.mu.Lock()
	o.prefix[m] = prefix
	o.mu.Unlock()
	return m
}

func (o *opener) open(t *testing.T) metatest.Store {
	b := make([]byte, 6)
	rand.Read(b)
	return o.openAt(t, "/test-"+hex.EncodeToString(b)+"/")
}

func (o *opener) second(t *testing.T, s metatest.Store) metatest.Store {
	o.mu.Lock()
	p := o.prefix[s]
	o.mu.Unlock()
	return o.openAt(t, p)
}

// TestContract runs the metadata contract on a real etcd, the concurrency
// cases through two clients.
func TestContract(t *testing.T) {
	t.Parallel()
	o := newOpener(t, 0)
	metatest.Run(t, o.open, metatest.Second(o.second))
}

// TestContractSmallTransactions runs the contract with transactions of
// at most 4 operations, so that every write too large for one
// transaction takes its chunked path.
func TestContractSmallTransactions(t *testing.T) {
	t.Parallel()
	o := newOpener(t, 4)
	metatest.Run(t, o.open, metatest.Second(o.second))
}

// TestOpenErrors: bad options are refused with the option named.
func TestOpenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no endpoints", Options{}, "no endpoints"},
		{"not a URL", Options{Endpoints: []string{"127.0.0.1:2379"}}, `"127.0.0.1:2379"`},
		{"cert without key", Options{Endpoints: []string{"https://127.0.0.1:1"}, TLS: &TLS{CertFile: "c.pem"}}, "give both or neither"},
		{"missing CA", Options{Endpoints: []string{"https://127.0.0.1:1"}, TLS: &TLS{CAFile: "/nonexistent/ca.pem"}}, "etcd CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Open(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestRepoAndKindNames: names the key layout cannot keep apart are refused.
func TestRepoAndKindNames(t *testing.T) {
	t.Parallel()
	o := newOpener(t, 0)
	m := o.open(t).(*Meta)
	l := storage.Link{Digest: "sha256:" + strings.Repeat("a", 64)}
	for _, repo := range []string{"", "a/_", "_/a", "a//b", "a/_/b"} {
		if err := m.Link(t.Context(), repo, l, nil); err == nil {
			t.Errorf("Link to %q accepted", repo)
		}
	}
	if err := m.PutRecord(t.Context(), "a/b", "k", nil); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("kind with a slash: %v", err)
	}
}
