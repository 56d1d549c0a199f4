// Package local owns local repositories: the repositories no cache rule
// covers, where clients push, mount and delete content. Reads of every
// repository, local or cached, go through the puller (package cache); this
// package owns what changes local repositories, the referrers index that
// pushes build, and garbage collection of the blobs nothing needs any more.
//
// # Data flow
//
// A blob arrives through an upload session (package uploads: POST, PATCH
// chunks, PUT with the digest), in one request (POST with the digest), or
// by a cross-repository mount. Every way ends in storage.Writer, which
// verifies size and digest before the atomic rename that makes bytes
// visible; then the blob is linked to the repository. A manifest push
// checks the body (size, digest, structure, media type), checks that every
// blob and child manifest it references is linked to the repository,
// stores the body as a blob, and links it (with its tag and, when it has a
// subject, its entry in the subject's referrers index) in one metadata
// transaction. Deletes remove links and tags only; bytes go when garbage
// collection finds nothing referencing them.
//
// # Invariants
//
//   - A repository a cache rule covers is never changed here: every write
//     is refused with ErrDenied, naming the rule, before anything is stored.
//   - Bytes become visible only verified (storage.Writer), and a manifest
//     is linked only when everything it references is linked to its
//     repository.
//   - A mount links a blob only when the ReadPolicy lets the caller read
//     it in the source repository (today: it is linked there).
//
// # Garbage collection
//
// A collection keeps every blob that is referenced by a manifest linked to
// any repository (and, following indexes, by their children), linked to a
// repository a cache rule covers, or written or linked within the grace
// period; it deletes the rest and their links. Why an upload in progress,
// a mount and a manifest push never lose a blob they need:
//
//  1. Bytes of an upload in progress are in the session's directory, which
//     a collection never looks at.
//  2. Each operation that makes a blob reachable protects the digests it
//     relies on (guard.protect) before it checks that they exist and holds
//     the protection until their link is committed to the metadata.
//  3. A collection first marks the guard running and records every digest
//     protected from then on, plus those protected at that moment
//     (touched); then it reads all links in one transaction (a snapshot).
//  4. A link committed after the snapshot belongs to an operation that
//     protected its digests before committing: before the collection began
//     (then the digest was in use at begin) or after (then it was recorded
//     when protected). Either way the digest is touched.
//  5. The collection deletes a blob only under the guard's lock, after
//     checking that it is untouched and not in use, and removes its links
//     in the same critical section. An operation that protects the digest
//     afterwards finds the blob gone when it checks, and fails cleanly
//     (MANIFEST_BLOB_UNKNOWN, or a mount falls back to an upload) instead
//     of linking a missing blob.
//
// Between operations, a client's blobs are protected by the grace period:
// the blobs of an image whose manifest has not arrived yet are young. A
// push that takes longer than the grace period between its first blob and
// its manifest may lose blobs to a collection and must upload them again.
//
// # The guard beyond local repositories
//
// The guard is lent to the other packages that make blobs reachable or
// delete them (shared.go): the puller's fills, its links of stored bytes
// and its manifest fetches and tag revalidations, and archive imports
// protect the digests they link (Protect); eviction, which removes images
// of cached repositories, runs as a collection of its own under the same
// guard (Collect), never at the same time as a garbage collection, and
// deletes only through its sweep. Garbage collection itself never deletes
// a blob linked to a cached repository; eviction removes those links
// first. Both remove links before bytes, so that a reader finds either no
// link or the whole blob.
package local
