package etcdmeta

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regcache/regcache/storage"
)

// DefaultPrefix is where the keys live when Options.Prefix is empty.
const DefaultPrefix = "/regcache/"

// defaultMaxTxnOps is etcd's default --max-txn-ops: the most operations
// (and, separately, compares) one transaction may hold.
const defaultMaxTxnOps = 128

// defaultDialTimeout bounds the first connection when Options.DialTimeout
// is zero.
const defaultDialTimeout = 5 * time.Second

// pageSize is how many keys one range request of a full listing returns.
const pageSize = 1000

// maxRetries bounds the compare-and-swap attempts of one write; each
// failed attempt means another process changed the same keys meanwhile.
const maxRetries = 100

// TLS names the PEM files of a TLS connection to etcd; all optional.
type TLS struct {
	// CAFile verifies the servers' certificates (default: the system
	// roots).
	CAFile string
	// CertFile and KeyFile are a client certificate, for servers that
	// authenticate clients by certificate; both or neither.
	CertFile, KeyFile string
}

// Options say which etcd cluster to use and where in it.
type Options struct {
	// Endpoints are the client URLs of the cluster's members,
	// e.g. https://10.0.0.1:2379; at least one.
	Endpoints []string
	// Prefix is prepended to every key (default DefaultPrefix); replicas
	// that share metadata use the same prefix, unrelated installations
	// different ones.
	Prefix string
	// TLS is used when set (an https:// endpoint with the system roots
	// needs none of it).
	TLS *TLS
	// Username and Password authenticate to an etcd with auth enabled.
	Username, Password string
	// DialTimeout bounds the first connection (default 5 s).
	DialTimeout time.Duration
	// MaxTxnOps is the server's --max-txn-ops (default 128).
	MaxTxnOps int
	// Log receives connection problems; nil discards them.
	Log *slog.Logger
}

// Meta is regcache's metadata in etcd: the same methods, semantics and
// errors as storage.Meta, shared by every process that opens the same
// cluster and prefix (doc.go has the key layout and the consistency
// argument).
type Meta struct {
	cli    *clientv3.Client
	keys   keys
	maxOps int
	log    *slog.Logger
}

// Open connects to etcd and checks that it answers under opts.Prefix.
func Open(ctx context.Context, opts Options) (*Meta, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints (give at least one client URL, e.g. http://127.0.0.1:2379)")
	}
	for _, e := range opts.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return nil, fmt.Errorf("etcd endpoint %q: want a URL starting with http:// or https://", e)
		}
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: cmp(opts.DialTimeout, defaultDialTimeout),
		Username:    opts.Username,
		Password:    opts.Password,
		// The client logs through zap; what matters to an operator is
		// reported as errors of the calls that failed.
		Logger: zap.NewNop(),
	}
	if opts.TLS != nil {
		tc, err := tlsConfig(*opts.TLS)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	m := &Meta{cli: cli, keys: keys(prefix), maxOps: cmp(opts.MaxTxnOps, defaultMaxTxnOps), log: log}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %s: read %s: %w", strings.Join(opts.Endpoints, ","), prefix, err)
	}
	return m, nil
}

func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func tlsConfig(t TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s: no PEM certificate in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("etcd client certificate: cert file %q and key file %q: give both or neither", t.CertFile, t.KeyFile)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %s: %w", t.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Close ends the connection to etcd.
func (m *Meta) Close() error { return m.cli.Close() }

// keys builds the keys of the layout in doc.go under a prefix ending in /.
type keys string

// sep ends a repository name in a key: "_" is no valid path component
// of a repository name, so the keys of repository a never start like the
// keys of a repository a/<x>.
const sep = "/_/"

func (k keys) repo(repo string) string       { return string(k) + "repos/" + repo }
func (k keys) repos() string                 { return string(k) + "repos/" }
func (k keys) tags(repo string) string       { return string(k) + "tags/" + repo + sep }
func (k keys) tag(repo, tag string) string   { return k.tags(repo) + tag }
func (k keys) links(repo string) string      { return string(k) + "links/" + repo + sep }
func (k keys) allLinks() string              { return string(k) + "links/" }
func (k keys) allTags() string               { return string(k) + "tags/" }
func (k keys) link(repo, d string) string    { return k.links(repo) + d }
func (k keys) fetched(repo, s string) string { return string(k) + "fetched/" + repo + sep + s }
func (k keys) referrers(repo, s string) string {
	return string(k) + "referrers/" + repo + sep + s + "/"
}
func (k keys) access() string                 { return string(k) + "access/" }
func (k keys) accessOf(d string) string       { return k.access() + d }
func (k keys) records(kind string) string     { return string(k) + "records/" + kind + "/" }
func (k keys) record(kind, key string) string { return k.records(kind) + key }
func (k keys) lock(name string) string        { return string(k) + "locks/" + name }

// repoOf splits a key under links/ or tags/ into repository and the rest.
func repoOf(key, under string) (repo, rest string, ok bool) {
	s := strings.TrimPrefix(key, under)
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}

// checkRepo rejects a repository name the key layout cannot hold apart
// from another's.
func checkRepo(repo string) error {
	if repo == "" {
		return errors.New("repository name: empty")
	}
	for _, c := range strings.Split(repo, "/") {
		if c == "_" || c == "" {
			return fmt.Errorf("repository name %q: a path component is empty or \"_\" (not a valid repository name)", repo)
		}
	}
	return nil
}

// checkKind rejects a record kind that would share keys with another.
func checkKind(kind string) error {
	if kind == "" || strings.Contains(kind, "/") {
		return fmt.Errorf("record kind %q: want a non-empty name without \"/\"", kind)
	}
	return nil
}

// wrap reports etcd refusing a write for want of space as
// storage.ErrStorageFull.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, rpctypes.ErrNoSpace) || strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error()) {
		return fmt.Errorf("%w: etcd: %w", storage.ErrStorageFull, err)
	}
	return err
}

// errConflict ends a compare-and-swap attempt whose compares failed.
var errConflict = errors.New("etcd: changed concurrently")

// errTooLarge ends a compare-and-swap attempt whose writes do not fit in
// one transaction; the caller writes them in order instead.
var errTooLarge = errors.New("etcd: too many operations for one transaction")

// dedupe drops every operation on a key that a later one in ops also
// writes: etcd refuses a transaction that writes a key twice.
func dedupe(ops []clientv3.Op) []clientv3.Op {
	seen := map[string]bool{}
	out := make([]clientv3.Op, 0, len(ops))
	for i := len(ops) - 1; i >= 0; i-- {
		k := string(ops[i].KeyBytes()) + "\x00" + string(ops[i].RangeBytes())
		if !seen[k] {
			seen[k] = true
			out = append(out, ops[i])
		}
	}
	slices.Reverse(out)
	return out
}

// cas runs attempt until its transaction's compares hold: attempt reads
// what it needs, and returns the compares that say nothing it read has
// changed and the operations to apply. attempt may return done to stop
// without a transaction (the write is not needed, or it found an error).
func (m *Meta) cas(ctx context.Context, attempt func() (cmps []clientv3.Cmp, ops []clientv3.Op, done bool, err error)) error {
	for range maxRetries {
		cmps, ops, done, err := attempt()
		if err != nil || done {
			return err
		}
		ops = dedupe(ops)
		resp, err := m.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return wrap(err)
		}
		if resp.Succeeded {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w %d times in a row", errConflict, maxRetries)
}

// commit applies ops in order, as one transaction when they fit in one,
// else in consecutive transactions (callers order ops so that every
// prefix of them leaves a state readers may see).
func (m *Meta) commit(ctx context.Context, ops []clientv3.Op) error {
	ops = dedupe(ops)
	for len(ops) > 0 {
		n := min(len(ops), m.maxOps)
		if _, err := m.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return wrap(err)
		}
		ops = ops[n:]
	}
	return nil
}

// getAll calls fn for every key under prefix at revision rev (0: now),
// a page at a time, and returns the revision read.
func (m *Meta) getAll(ctx context.Context, prefix string, rev int64, keysOnly bool, fn func(key string, value []byte) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize), clientv3.WithRev(rev)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := m.cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			if err := fn(string(kv.Key), kv.Value); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// getJSON reads key into v; found is false when the key is absent. rev is
// the key's mod revision (0 when absent), for compare-and-swap.
func (m *Meta) getJSON(ctx context.Context, key string, v any) (rev int64, found bool, err error) {
	resp, err := m.cli.Get(ctx, key)
	if err != nil {
		return 0, false, err
	}
	if len(resp.Kvs) == 0 {
		return 0, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return resp.Kvs[0].ModRevision, true, fmt.Errorf("decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, true, nil
}

func put(key string, v any) (clientv3.Op, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(key, string(raw)), nil
}

func timeText(t time.Time) string {
	v, _ := t.UTC().MarshalText()
	return string(v)
}
