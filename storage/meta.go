package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket layout:
//
//	records/<kind>/<key>          JSON documents owned by other packages (cache rules)
//	repos/<repo>/links/<digest>   Link: the blob was fetched or pushed for <repo>
//	repos/<repo>/tags/<tag>       Tag: the manifest a tag points at, and when it was fetched
//	repos/<repo>/referrers/<subject>/<digest>  Descriptor of a manifest whose subject is <subject>
//	repos/<repo>/referrers-fetched/<subject>   when a cached repository's listing was fetched
//	access/<digest>               when the blob was last served (RFC 3339), written in batches
var (
	bucketRecords = []byte("records")
	bucketRepos   = []byte("repos")
	bucketLinks   = []byte("links")
	bucketTags    = []byte("tags")
	bucketAccess  = []byte("access")
)

// Link records that a blob or manifest was fetched or pushed for a repository.
// A blob is served under a repository only when such a link exists.
type Link struct {
	Digest    string    `json:"digest"`
	MediaType string    `json:"mediaType,omitempty"`
	Size      int64     `json:"size"`
	LinkedAt  time.Time `json:"linkedAt"`
}

// Tag is a tag pointer of a repository.
type Tag struct {
	Name      string    `json:"name"`
	Digest    string    `json:"digest"`
	FetchedAt time.Time `json:"fetchedAt"`
}

// ErrLocked reports that another process holds the metadata database open.
var ErrLocked = errors.New("locked")

// Meta is regcache's metadata database (bbolt).
type Meta struct {
	db    *bolt.DB
	reads *readCache
	group groupCommit // groupcommit.go
}

// defaultLockTimeout is how long OpenMeta waits, by default, for another
// process to release the database: long enough to outlast a server that is
// shutting down, short enough that a second server fails promptly.
const defaultLockTimeout = 2 * time.Second

// MetaOption adjusts OpenMeta.
type MetaOption func(*metaOptions)

type metaOptions struct {
	lockTimeout time.Duration
}

// LockTimeout sets how long OpenMeta waits for another process to release
// the database before it fails with ErrLocked (default 2 s). d must be
// positive: bbolt reads 0 as "wait forever".
func LockTimeout(d time.Duration) MetaOption {
	return func(o *metaOptions) {
		if d > 0 {
			o.lockTimeout = d
		}
	}
}

// OpenMeta opens (creating when needed) the bbolt database at path. When
// another process holds the database, it fails after the lock timeout with
// an error wrapping ErrLocked that names that process when it can be told.
func OpenMeta(path string, opts ...MetaOption) (*Meta, error) {
	o := metaOptions{lockTimeout: defaultLockTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		if pid, command, ok := lockHolder(path); ok {
			return nil, fmt.Errorf("open metadata %s: %w by %s (pid %d)", path, ErrLocked, command, pid)
		}
		return nil, fmt.Errorf("open metadata %s: %w by another process (is another regcache using this data directory?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketRepos, bucketAccess} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise metadata %s: %w", path, err)
	}
	return &Meta{db: db, reads: newReadCache()}, nil
}

// Close closes the database.
func (m *Meta) Close() error { return m.db.Close() }

// repoBucket returns repos/<repo>/<sub>, creating it when create is true;
// it returns nil when it does not exist and create is false.
func repoBucket(tx *bolt.Tx, repo string, sub []byte, create bool) (*bolt.Bucket, error) {
	repos := tx.Bucket(bucketRepos)
	if !create {
		r := repos.Bucket([]byte(repo))
		if r == nil {
			return nil, nil
		}
		return r.Bucket(sub), nil
	}
	r, err := repos.CreateBucketIfNotExists([]byte(repo))
	if err != nil {
		return nil, err
	}
	return r.CreateBucketIfNotExists(sub)
}

// Link records l for repo and, when tag is not nil, points the tag at
// l.Digest (whatever tag.Digest says), in one transaction.
func (m *Meta) Link(ctx context.Context, repo string, l Link, tag *Tag) error {
	if _, err := ParseDigest(l.Digest); err != nil {
		return err
	}
	err := m.updateGrouped(repo, func(tx *bolt.Tx) error { return putLink(tx, repo, l, tag) })
	if err != nil {
		return fmt.Errorf("link %s to %s: %w", l.Digest, repo, err)
	}
	return nil
}

func putLink(tx *bolt.Tx, repo string, l Link, tag *Tag) error {
	linkJSON, err := json.Marshal(l)
	if err != nil {
		return err
	}
	links, err := repoBucket(tx, repo, bucketLinks, true)
	if err != nil {
		return err
	}
	if l.MediaType == "" {
		// A blob link never demotes a manifest link of the same digest.
		var old Link
		if raw := links.Get([]byte(l.Digest)); raw != nil && json.Unmarshal(raw, &old) == nil && old.MediaType != "" {
			kept := l
			kept.MediaType = old.MediaType
			if linkJSON, err = json.Marshal(kept); err != nil {
				return err
			}
		}
	}
	if err := links.Put([]byte(l.Digest), linkJSON); err != nil {
		return err
	}
	if tag == nil {
		return nil
	}
	t := *tag
	t.Digest = l.Digest
	tagJSON, err := json.Marshal(t)
	if err != nil {
		return err
	}
	tags, err := repoBucket(tx, repo, bucketTags, true)
	if err != nil {
		return err
	}
	return tags.Put([]byte(tag.Name), tagJSON)
}

// Linked returns the link of digest in repo, or ErrNotFound.
func (m *Meta) Linked(ctx context.Context, repo, digest string) (Link, error) {
	k := readKey{repo: repo, key: digest, kind: kindLink}
	e, now, ok := m.reads.get(k)
	if ok {
		return e.link, nil
	}
	var l Link
	if err := m.get(repo, bucketLinks, digest, &l); err != nil {
		return Link{}, err
	}
	m.reads.put(k, readEntry{link: l}, now)
	return l, nil
}

// Tag returns the tag pointer repo:tag, or ErrNotFound.
func (m *Meta) Tag(ctx context.Context, repo, tag string) (Tag, error) {
	k := readKey{repo: repo, key: tag, kind: kindTag}
	e, now, ok := m.reads.get(k)
	if ok {
		return e.tag, nil
	}
	var t Tag
	if err := m.get(repo, bucketTags, tag, &t); err != nil {
		return Tag{}, err
	}
	m.reads.put(k, readEntry{tag: t}, now)
	return t, nil
}

func (m *Meta) get(repo string, sub []byte, key string, v any) error {
	return m.db.View(func(tx *bolt.Tx) error {
		b, err := repoBucket(tx, repo, sub, false)
		if err != nil {
			return err
		}
		var raw []byte
		if b != nil {
			raw = b.Get([]byte(key))
		}
		if raw == nil {
			return fmt.Errorf("%s %s@%s: %w", sub, repo, key, ErrNotFound)
		}
		return json.Unmarshal(raw, v)
	})
}

// Tags lists the tags recorded for repo, sorted.
func (m *Meta) Tags(ctx context.Context, repo string) ([]string, error) {
	return m.TagPage(ctx, repo, "", -1)
}

// TagPage lists, in order, at most limit (every one when limit < 0) of
// repo's tags that sort after after ("" for the first page). A page costs
// its own length, not the repository's number of tags: the tags bucket is
// kept in byte order, which is Go's string order, so the page starts with
// a seek.
func (m *Meta) TagPage(ctx context.Context, repo, after string, limit int) ([]string, error) {
	var tags []string
	err := m.db.View(func(tx *bolt.Tx) error {
		b, err := repoBucket(tx, repo, bucketTags, false)
		if err != nil || b == nil {
			return err
		}
		c := b.Cursor()
		k, _ := c.First()
		if after != "" {
			k, _ = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, _ = c.Next()
			}
		}
		for ; k != nil && (limit < 0 || len(tags) < limit); k, _ = c.Next() {
			tags = append(tags, string(k))
		}
		return nil
	})
	return tags, err
}

// HasRepo reports whether anything was ever linked or tagged in repo.
func (m *Meta) HasRepo(ctx context.Context, repo string) (bool, error) {
	var ok bool
	err := m.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketRepos).Bucket([]byte(repo)) != nil
		return nil
	})
	return ok, err
}

// PutRecord stores value under kind/key, replacing any earlier value.
func (m *Meta) PutRecord(ctx context.Context, kind, key string, value []byte) error {
	err := m.updateRecords(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketRecords).CreateBucketIfNotExists([]byte(kind))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("store %s %q: %w", kind, key, err)
	}
	return nil
}

// DeleteRecord removes kind/key; it returns ErrNotFound when absent.
func (m *Meta) DeleteRecord(ctx context.Context, kind, key string) error {
	return m.updateRecords(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(kind))
		if b == nil || b.Get([]byte(key)) == nil {
			return fmt.Errorf("%s %q: %w", kind, key, ErrNotFound)
		}
		return b.Delete([]byte(key))
	})
}

// Records returns every record of kind, keyed by key.
func (m *Meta) Records(ctx context.Context, kind string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(kind))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}

// TouchBlobs records when blobs were last served, in one transaction
// (callers batch hits in memory and flush periodically).
func (m *Meta) TouchBlobs(ctx context.Context, times map[string]time.Time) error {
	err := m.updateRecords(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccess)
		for d, t := range times {
			v, err := t.UTC().MarshalText()
			if err != nil {
				return err
			}
			if err := b.Put([]byte(d), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record access times: %w", err)
	}
	return nil
}

// LastAccess returns when the blob was last served, as last flushed, or
// ErrNotFound.
func (m *Meta) LastAccess(ctx context.Context, digest string) (time.Time, error) {
	var t time.Time
	err := m.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAccess).Get([]byte(digest))
		if v == nil {
			return fmt.Errorf("access time of %s: %w", digest, ErrNotFound)
		}
		return t.UnmarshalText(v)
	})
	return t, err
}

// update runs fn in one read-write transaction; a filesystem with no room
// for the database's pages is reported as ErrStorageFull. Once it ended,
// every tag and link read before is stale (readCache).
func (m *Meta) update(fn func(*bolt.Tx) error) error {
	defer m.reads.changedAll()
	return full(m.db.Update(fn), "metadata")
}

// updateRepo is update for a transaction that changes the tags and links
// of repo only.
func (m *Meta) updateRepo(repo string, fn func(*bolt.Tx) error) error {
	defer m.reads.changedRepo(repo)
	return full(m.db.Update(fn), "metadata")
}

// updateRecords is update for a transaction that changes no tag or link
// (records, access times).
func (m *Meta) updateRecords(fn func(*bolt.Tx) error) error {
	return full(m.db.Update(fn), "metadata")
}
