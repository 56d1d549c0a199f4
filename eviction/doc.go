// Package eviction keeps a cache that runs unattended within its bounds:
// a maximum size of the store (evicting the least recently used images of
// cached repositories until the store is back under a low-water mark) and
// a maximum age without a pull (evicting what nobody pulled for that
// long). Local (pushed or imported) repositories are never evicted.
//
// # What goes together
//
// Eviction works on images, not loose blobs. In each repository a cache
// rule covers, the manifests are grouped: an index with its child
// manifests, a manifest with its referrers (signatures, SBOMs: manifests
// whose subject it is) and the referrers-tag-schema index naming them;
// every tag pointing into a group belongs to it. A group, its tags and its
// links go together; a blob linked to the repository but referenced by no
// manifest there is a group of its own. The bytes of a blob go only when
// no group that stays, in any repository, references or links it, no
// local repository links it, and no manifest of a local repository
// references it: a layer shared with content that stays is kept.
//
// An image's last use is the latest of: when one of its manifests was
// last served (access times batched in memory by the puller and flushed
// before each run, never a metadata write per pull), linked (fetched or
// revalidated) or, for a tag, confirmed by the upstream.
//
// # When
//
// The store's usage is counted once and then kept by every commit and
// removal (storage.Blobs.Usage), so comparing it with the limit costs
// nothing: it is done every CheckInterval (1s by default), and a run
// starts when the store holds more than MaxSize. It evicts, oldest last
// use first, until the store would hold at most LowWater of MaxSize, so
// that it does not run again for every blob fetched. The age limit is
// looked at every AgeInterval. `regcache gc` runs one now; with --dry-run
// it lists what would go.
//
// # Why a reader never gets a short or empty body
//
// A reader (puller.openLinked) looks up the link, then opens the file, and
// serves the open *os.File: its size comes from the open file, and on
// Linux an open file stays readable to its end after its path is removed.
// A run removes links first (one metadata transaction) and bytes after.
// So a reader either finds no link (the image is fetched again from the
// upstream, or, offline, gets a clean error), or finds the link and opens
// the file before its removal (and serves all of it), or finds the link
// and fails to open the file (and fetches it again: the puller treats a
// vanished blob as a miss). No step serves a length it has not opened.
// A blob followed while it is being filled is read from the fill's
// temporary file, which a run never touches.
//
// # Why a run never deletes what is being filled or linked
//
// Runs share garbage collection's guard (package local, Repos.Collect):
//
//  1. A run starts the guard before it reads anything, and reads its
//     snapshot (links, tags, access times) afterwards.
//  2. Every operation that makes a blob reachable protects its digest
//     from before it checks the blob is stored until its link is
//     committed: a fill from its start until every joining repository is
//     linked, a link of bytes stored for another repository, a manifest
//     fetch, a tag revalidation that relinks, an import, and every push.
//  3. The run removes links and bytes only inside the guard's sweep, for
//     digests no operation protected since it began: an image any of
//     whose manifests was protected (fetched, relinked) is kept whole,
//     and a blob protected is kept with its links.
//  4. An operation that protects a digest after the sweep removed it
//     finds the blob gone when it checks, and fetches it again.
//
// The one cost the guard does not spare: a manifest fetched after the
// run's snapshot that shares a layer with an image evicted by that run
// may find the layer gone and fetch it again from the upstream.
package eviction
