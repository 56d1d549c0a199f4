package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// memObjects is an ObjectStore in memory whose listing of one prefix can
// be held at a gate.
type memObjects struct {
	mu      sync.Mutex
	objects map[string][]byte

	holdPrefix string
	listing    chan struct{} // a value when the held listing reached the gate
	gate       chan struct{}
}

func (m *memObjects) Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error) {
	return nil, 0, fmt.Errorf("%s: %w", digest, ErrNotFound)
}

func (m *memObjects) Stat(ctx context.Context, digest string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[digest]
	if !ok {
		return 0, fmt.Errorf("%s: %w", digest, ErrNotFound)
	}
	return int64(len(b)), nil
}

func (m *memObjects) Put(ctx context.Context, digest string, f *os.File, size int64) error {
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.objects[digest] = b
	m.mu.Unlock()
	return nil
}

func (m *memObjects) Remove(ctx context.Context, digest string) error {
	m.mu.Lock()
	delete(m.objects, digest)
	m.mu.Unlock()
	return nil
}

// List takes what the prefix holds, then (for the held prefix) waits at
// the gate before answering, as a slow listing of a real store would.
func (m *memObjects) List(ctx context.Context, prefix string, fn func(BlobInfo) error) error {
	m.mu.Lock()
	var found []BlobInfo
	for d, b := range m.objects {
		if strings.HasPrefix(d, "sha256:"+prefix) {
			found = append(found, BlobInfo{Digest: d, Size: int64(len(b))})
		}
	}
	m.mu.Unlock()
	if prefix == m.holdPrefix {
		m.listing <- struct{}{}
		<-m.gate
	}
	for _, bi := range found {
		if err := fn(bi); err != nil {
			return err
		}
	}
	return nil
}

// TestObjectCountHoldsOnlyItsPrefix: while the usage count lists one
// prefix of an object store (a network request), a commit in another
// prefix completes; one in the listed prefix waits for the listing and is
// then counted once.
func TestObjectCountHoldsOnlyItsPrefix(t *testing.T) {
	t.Parallel()
	m := &memObjects{objects: map[string][]byte{}, holdPrefix: "40", listing: make(chan struct{}, 1), gate: make(chan struct{})}
	b, err := OpenObjectBlobs(t.TempDir(), m, "memory")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := blobIn(t, 0x40, "before")
	putBlob(t, b, before) // stored before the count: the listing finds it

	counted := make(chan error, 1)
	go func() { counted <- b.CountUsage(context.Background()) }()
	<-m.listing // the count is listing prefix 40

	other, _ := blobIn(t, 0x90, "other")
	done := make(chan struct{})
	go func() {
		putBlob(t, b, other)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(m.gate)
		t.Fatal("a commit in prefix 90 waited for the listing of prefix 40")
	}

	same, _ := blobIn(t, 0x40, "same")
	sameDone := make(chan struct{})
	go func() {
		putBlob(t, b, same)
		close(sameDone)
	}()
	close(m.gate)
	<-sameDone
	if err := <-counted; err != nil {
		t.Fatal(err)
	}
	wantUsage(t, b, Usage{Bytes: int64(len(before) + len(other) + len(same)), Blobs: 3})
	if got := m.objects[digestOf(same)]; !bytes.Equal(got, same) {
		t.Errorf("the commit in the listed prefix stored %q", got)
	}
}
