package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ObjectStore keeps the committed blobs of a Blobs store outside the local
// filesystem: in an S3-compatible bucket (package storage/s3). Blobs
// writes and verifies every blob in its local temporary directory first;
// an ObjectStore only ever receives verified bytes, under their digest.
//
// An implementation makes an object visible in one step (a single PUT, or
// the completion of a multipart upload), never partially, and returns
// ErrNotFound (wrapped) for a digest it does not hold.
type ObjectStore interface {
	// Open returns the blob's bytes and size; the caller closes the body.
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error)
	// Stat returns the blob's size.
	Stat(ctx context.Context, digest string) (int64, error)
	// Put stores the size bytes of f (verified against digest) under
	// digest.
	Put(ctx context.Context, digest string, f *os.File, size int64) error
	// Remove deletes the blob.
	Remove(ctx context.Context, digest string) error
	// List calls fn for every blob whose hex digest starts with prefix
	// ("" for all), until fn returns an error (which List returns).
	List(ctx context.Context, prefix string, fn func(BlobInfo) error) error
}

// objectPlaceTimeout bounds handing one verified blob to the object store
// (Commit has no context of its own: it outlives the request that started
// a fill).
const objectPlaceTimeout = time.Hour

// objectPlacing orders the changes of an object store with the count of
// its usage (usage.go), one <first two hex> prefix at a time: while a
// prefix is listed for the count, no upload or removal in it runs, and the
// listing starts only once those in flight were accounted. So a change is
// either seen by the listing or accounted after it, never both nor
// neither. Only the prefix being listed waits, and no lock is held across
// a request to the object store. Concurrent commits of one digest share
// one upload, and so count once.
type objectPlacing struct {
	flights singleflight.Group

	mu       sync.Mutex
	changed  *sync.Cond    // on mu: a change ended, or a listing did
	inFlight [dirCount]int // changes running, by prefix
	listing  int           // the prefix being listed; -1 for none
	once     sync.Once     // makes changed and listing
}

func (p *objectPlacing) init() {
	p.once.Do(func() {
		p.changed = sync.NewCond(&p.mu)
		p.listing = -1
	})
}

// begin waits until digest's prefix is not being listed and marks a
// change in it as running; end marks it done (after it was accounted).
func (p *objectPlacing) begin(digest string) {
	p.init()
	d := dirIndex(digest)
	p.mu.Lock()
	for p.listing == d {
		p.changed.Wait()
	}
	p.inFlight[d]++
	p.mu.Unlock()
}

func (p *objectPlacing) end(digest string) {
	d := dirIndex(digest)
	p.mu.Lock()
	p.inFlight[d]--
	p.changed.Broadcast()
	p.mu.Unlock()
}

// listDir waits until no change in prefix dir runs, keeps new ones out
// until done is called, and returns done.
func (p *objectPlacing) listDir(dir int) (done func()) {
	p.init()
	p.mu.Lock()
	for p.listing != -1 {
		p.changed.Wait()
	}
	p.listing = dir
	for p.inFlight[dir] > 0 {
		p.changed.Wait()
	}
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.listing = -1
		p.changed.Broadcast()
		p.mu.Unlock()
	}
}

// placeObject hands the verified temporary file temp to the object store
// under digest, unless the store holds it already (content-addressed
// objects are written once), then removes temp. Readers holding temp open
// keep reading it.
func (b *Blobs) placeObject(temp, digest string, size int64) error {
	defer os.Remove(temp)
	_, err, _ := b.placing.flights.Do(digest, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), objectPlaceTimeout)
		defer cancel()
		b.placing.begin(digest)
		defer b.placing.end(digest)
		n, err := b.objects.Stat(ctx, digest)
		existed := err == nil
		switch {
		case existed && n == size:
			return nil, nil // stored already
		case err != nil && !errors.Is(err, ErrNotFound):
			return nil, err
		}
		f, err := os.Open(temp)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := b.objects.Put(ctx, digest, f, size); err != nil {
			return nil, err
		}
		b.usage.mu.Lock()
		defer b.usage.mu.Unlock()
		if existed { // an object of another size, replaced
			b.usage.changed(digest, n, -1)
		}
		b.usage.changed(digest, size, 1)
		return nil, nil
	})
	return err
}

// removeObject deletes digest from the object store and counts it out.
func (b *Blobs) removeObject(ctx context.Context, digest string) error {
	b.placing.begin(digest)
	defer b.placing.end(digest)
	size, err := b.objects.Stat(ctx, digest)
	if err != nil {
		return fmt.Errorf("remove blob %s: %w", digest, err)
	}
	if err := b.objects.Remove(ctx, digest); err != nil {
		return fmt.Errorf("remove blob %s: %w", digest, err)
	}
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	b.usage.changed(digest, size, -1)
	return nil
}

// countObjects counts the objects of one <first two hex> prefix; the
// caller keeps the prefix's changes out (placing.listDir).
func (b *Blobs) countObjects(ctx context.Context, dir int) (Usage, error) {
	var found Usage
	err := b.objects.List(ctx, fmt.Sprintf("%02x", dir), func(bi BlobInfo) error {
		found.Bytes += bi.Size
		found.Blobs++
		return nil
	})
	return found, err
}
