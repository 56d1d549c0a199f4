package storage

import (
	"strings"
	"sync"
)

// readCache keeps decoded tag pointers and links in memory, so that the
// request pulls send most (a manifest by tag or digest, a blob's link)
// open no database transaction and decode no JSON. The database stays the
// only truth: an entry is used only while no write that could have
// changed it has committed since it was read.
//
// Every write bumps a generation after its commit: the repository's when
// it touches one repository, the global one otherwise (see Meta.update).
// A reader takes the generations before it reads the database and stores
// its result with them; an entry whose generations are no longer current
// is a miss. A write that commits after a reader's database read thus
// always invalidates what that reader stores, and a reader never serves a
// value older than the last write that returned.
type readCache struct {
	mu      sync.RWMutex
	entries map[readKey]readEntry
	global  uint64
	repos   map[string]uint64 // per repository; absent is 0
	max     int
}

// readKey names a cached record: a tag or a link of a repository.
type readKey struct {
	repo, key string
	kind      byte // kindTag or kindLink
}

const (
	kindTag byte = iota + 1
	kindLink
)

// stamp is the generations a value was read under.
type stamp struct{ global, repo uint64 }

type readEntry struct {
	stamp stamp
	tag   Tag
	link  Link
}

// maxReadEntries bounds the cache (about 300 bytes an entry); when full it
// starts over.
const maxReadEntries = 50_000

func newReadCache() *readCache {
	return &readCache{entries: map[readKey]readEntry{}, repos: map[string]uint64{}, max: maxReadEntries}
}

// get returns the entry of k when it is current, and the generations to
// store a value read now with.
func (c *readCache) get(k readKey) (readEntry, stamp, bool) {
	c.mu.RLock()
	now := stamp{c.global, c.repos[k.repo]}
	e, ok := c.entries[k]
	c.mu.RUnlock()
	return e, now, ok && e.stamp == now
}

// put stores e, read under s. The key's strings are copied: they often
// point into a request's URL.
func (c *readCache) put(k readKey, e readEntry, s stamp) {
	k.repo, k.key = strings.Clone(k.repo), strings.Clone(k.key)
	e.stamp = s
	c.mu.Lock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[k] = e
	c.mu.Unlock()
}

// changedRepo invalidates what was read of repo.
func (c *readCache) changedRepo(repo string) {
	c.mu.Lock()
	if _, ok := c.repos[repo]; !ok {
		repo = strings.Clone(repo)
	}
	c.repos[repo]++
	c.mu.Unlock()
}

// changedAll invalidates everything.
func (c *readCache) changedAll() {
	c.mu.Lock()
	c.global++
	c.mu.Unlock()
}
