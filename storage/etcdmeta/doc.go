// Package etcdmeta keeps regcache's metadata in etcd, so that several
// regcache replicas on one blob store (an S3 bucket) share tags, links,
// referrers, rules and credential sets with no replica as owner. *Meta has
// the method set and the semantics of storage.Meta (bbolt); the shared
// contract test in storage/metatest runs on both.
//
// # Key layout
//
// Every key starts with the prefix (default /regcache/). A repository
// name ends with the component "_", which no valid repository name has,
// so the keys of repository a never start like those of a/b:
//
//	repos/<repo>                                  "" (the repository was written: HasRepo, Repositories)
//	tags/<repo>/_/<tag>                           storage.Tag as JSON
//	links/<repo>/_/<digest>                       storage.Link as JSON
//	referrers/<repo>/_/<subject>/<digest>         storage.Descriptor as JSON
//	fetched/<repo>/_/<subject>                    when the referrers listing was fetched (RFC 3339)
//	access/<digest>                               when the blob was last served (RFC 3339)
//	records/<kind>/<key>                          documents of other packages (rules, credential sets)
//	locks/<name>                                  holder of a cluster-wide lock, attached to a lease
//
// etcd keeps keys in byte order, so a tag list page or a catalog page is
// one range request starting after the last name returned, as bbolt's
// cursor seek is. Repositories skips repos/ markers whose repository has
// neither link nor tag any more (bbolt keeps its empty buckets the same
// way). Upload sessions are not here: they belong to the replica that
// holds the partial bytes, in its own bbolt file.
//
// # Consistency
//
// etcd is linearizable: a write acknowledged by one replica is seen by
// the next read of any replica. Each bbolt transaction becomes one etcd
// transaction; where bbolt's single writer made read-check-write atomic,
// the transaction compares the mod revisions of what it read and is
// retried when another process changed them meanwhile.
//
//   - Two replicas writing one tag: each write puts the whole Tag (digest
//     and time) in one key, in the transaction that links its manifest;
//     the last writer wins and a reader sees one write or the other, never
//     a mix, and never a tag whose manifest is not linked.
//   - Two replicas linking one blob: idempotent puts of the same link,
//     except that a blob link must not demote a manifest link of the same
//     digest; the link is read and written under a compare on its
//     revision, so the media type survives any interleaving.
//   - Deleting a manifest while another replica tags it: DeleteManifest
//     compares the link's revision and the revision of every tag of the
//     repository (a range compare); a tag written meanwhile makes it read
//     again and delete that tag too, so no tag is left pointing at an
//     unlinked manifest. A Link that commits after the delete recreates
//     link and tag together.
//   - Eviction: one replica at a time (TryLock("eviction")). Remove
//     deletes a tag only while it still points at the evicted digest (a
//     compare on the tag's revision), then referrers, links and access
//     times; the bytes are deleted only after Remove returned. A reader
//     that found the link before either opened the bytes before they went
//     or gets not-found from the store and fetches again; a reader after
//     finds no link. A replica that links the blob again after eviction
//     read its snapshot and before the bytes go keeps a link to bytes that
//     are then deleted: with write-once objects the next fill of that
//     digest writes them again, and fsck reports the dangling link; the
//     window is the time between Remove and the blob deletes.
//   - Records (rules, credential sets): each is one key written whole;
//     the last writer wins. WatchRecords tells every replica to reload.
//
// etcd refuses a transaction of more than --max-txn-ops operations (128
// by default; Options.MaxTxnOps). Writes that may exceed it are split in
// an order that keeps every intermediate state valid: access times
// (TouchBlobs) and UnlinkEverywhere in any order (each entry stands
// alone); PutImage links first, then referrers, then tags (a reader that
// finds a tag finds what it reaches); Remove tags first, then referrers,
// links and access times (an entry point goes before what it reaches);
// SetReferrers new entries, then stale ones, then the fetched time.
//
// # Coordination
//
// WatchRecords watches records/<kind>/ from the revision it last saw,
// resumes after an etcd restart, and calls back once more when it had to
// start over (compaction), so a caller that reloads on each call converges.
// TryLock puts locks/<name> only when absent, attached to a 10-second
// lease kept alive by the client: a killed holder frees it within the TTL.
package etcdmeta
