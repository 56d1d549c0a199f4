package local

import "context"

// The guard (gc.go) is the one protocol between whatever deletes blobs and
// whatever makes them reachable. Garbage collection and the operations of
// local repositories use it here; the methods below lend it to the other
// packages that do either: the puller's fills and an archive import make
// blobs reachable (Protect), eviction deletes them (Collect).

// Protect marks digests in use until release is called: an operation that
// is about to make them reachable (check that a blob is stored, then link
// it) holds them for that whole sequence. A collection running meanwhile
// or starting later does not delete them; one that deleted a digest before
// it was protected leaves the operation to find the blob gone when it
// checks.
func (r *Repos) Protect(digests ...string) (release func()) {
	return r.guard.protect(digests...)
}

// Sweep calls remove, under the guard's lock, with those of candidates
// that no operation protected since the collection began and none has in
// use now: nothing can protect them while remove runs. remove takes the
// links out before it deletes bytes.
type Sweep = func(candidates []string, remove func(gone []string) error) error

// Collect runs fn as one collection of another owner (eviction): never at
// the same time as a garbage collection, with the guard recording every
// digest protected from before fn reads its snapshot of the links until fn
// returns. fn deletes blobs only through sweep.
func (r *Repos) Collect(ctx context.Context, fn func(ctx context.Context, sweep Sweep) error) error {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	r.guard.begin()
	defer r.guard.end()
	return fn(ctx, r.guard.sweep)
}
