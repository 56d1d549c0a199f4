// Package metatest is the contract every implementation of regcache's
// metadata (storage.Meta in bbolt, etcdmeta.Meta in etcd) must keep: the
// same results, errors and atomicity for the same calls, also when two
// handles on the same data write concurrently.
package metatest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

// Store is the method set of regcache's metadata.
type Store interface {
	Link(ctx context.Context, repo string, l storage.Link, tag *storage.Tag) error
	Linked(ctx context.Context, repo, digest string) (storage.Link, error)
	Tag(ctx context.Context, repo, tag string) (storage.Tag, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	TagPage(ctx context.Context, repo, after string, limit int) ([]string, error)
	HasRepo(ctx context.Context, repo string) (bool, error)
	PutRecord(ctx context.Context, kind, key string, value []byte) error
	DeleteRecord(ctx context.Context, kind, key string) error
	Records(ctx context.Context, kind string) (map[string][]byte, error)
	TouchBlobs(ctx context.Context, times map[string]time.Time) error
	LastAccess(ctx context.Context, digest string) (time.Time, error)
	AccessTimes(ctx context.Context) (map[string]time.Time, error)
	PutManifest(ctx context.Context, repo string, l storage.Link, tag *storage.Tag, ref *storage.Referrer) error
	SetReferrers(ctx context.Context, repo, subject string, ds []storage.Descriptor, fetched time.Time) error
	Referrers(ctx context.Context, repo, subject string) ([]storage.Descriptor, time.Time, error)
	DeleteManifest(ctx context.Context, repo, digest, subject string) ([]string, error)
	DeleteTag(ctx context.Context, repo, tag string) error
	Unlink(ctx context.Context, repo, digest string) error
	UnlinkEverywhere(ctx context.Context, digests []string) error
	Links(ctx context.Context) ([]storage.RepoLink, error)
	Repositories(ctx context.Context, last string, n int) ([]string, error)
	Contents(ctx context.Context) ([]storage.RepoLink, []storage.RepoTag, error)
	Remove(ctx context.Context, removals []storage.Removal, forget []string) error
	PutImage(ctx context.Context, repo string, img storage.Image) error
	Close() error
}

// Option adjusts Run.
type Option func(*options)

type options struct {
	second func(t *testing.T, s Store) Store
}

// Second gives the concurrency tests a second handle on the data of s
// (another client of the same cluster and prefix), so that two writers
// race as two processes would. Without it they race through s alone.
func Second(fn func(t *testing.T, s Store) Store) Option {
	return func(o *options) { o.second = fn }
}

// digest returns the sha256 digest of s.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}
