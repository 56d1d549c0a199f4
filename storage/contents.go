package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RepoTag is one tag pointer of one repository.
type RepoTag struct {
	Repo string
	Tag
}

// Contents returns every link and every tag of every repository, read in
// one transaction: a consistent snapshot for eviction, which groups them
// into images.
func (m *Meta) Contents(ctx context.Context) ([]RepoLink, []RepoTag, error) {
	var links []RepoLink
	var tags []RepoTag
	err := m.db.View(func(tx *bolt.Tx) error {
		repos := tx.Bucket(bucketRepos)
		return repos.ForEachBucket(func(repo []byte) error {
			r := repos.Bucket(repo)
			if b := r.Bucket(bucketLinks); b != nil {
				err := b.ForEach(func(_, v []byte) error {
					var l Link
					if err := json.Unmarshal(v, &l); err != nil {
						return err
					}
					links = append(links, RepoLink{Repo: string(repo), Link: l})
					return nil
				})
				if err != nil {
					return err
				}
			}
			if b := r.Bucket(bucketTags); b != nil {
				return b.ForEach(func(k, v []byte) error {
					var t Tag
					if err := json.Unmarshal(v, &t); err != nil {
						return err
					}
					t.Name = string(k)
					tags = append(tags, RepoTag{Repo: string(repo), Tag: t})
					return nil
				})
			}
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list links and tags: %w", err)
	}
	return links, tags, nil
}

// AccessTimes returns every recorded last-access time, by digest, as last
// flushed.
func (m *Meta) AccessTimes(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccess).ForEach(func(k, v []byte) error {
			var t time.Time
			if err := t.UnmarshalText(v); err != nil {
				return nil // a damaged entry is as good as none
			}
			out[string(k)] = t
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read access times: %w", err)
	}
	return out, nil
}

// Removal is what an eviction takes out of one repository.
type Removal struct {
	Repo string
	// Tags are removed only while they still point at the digest given
	// here: a tag that moved meanwhile belongs to another image.
	Tags map[string]string
	// Links are removed (manifests and blobs).
	Links []string
	// Subjects lose their referrers listing (its entries and when it was
	// fetched).
	Subjects []string
}

// Remove applies removals and forgets the access times of forget, in one
// transaction. Absent entries are skipped.
func (m *Meta) Remove(ctx context.Context, removals []Removal, forget []string) error {
	err := m.update(func(tx *bolt.Tx) error {
		for _, rm := range removals {
			if err := removeFrom(tx, rm); err != nil {
				return err
			}
		}
		access := tx.Bucket(bucketAccess)
		for _, d := range forget {
			if err := access.Delete([]byte(d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove evicted content: %w", err)
	}
	return nil
}

func removeFrom(tx *bolt.Tx, rm Removal) error {
	r := tx.Bucket(bucketRepos).Bucket([]byte(rm.Repo))
	if r == nil {
		return nil
	}
	if tags := r.Bucket(bucketTags); tags != nil {
		for name, digest := range rm.Tags {
			var t Tag
			if raw := tags.Get([]byte(name)); raw == nil || json.Unmarshal(raw, &t) != nil || t.Digest != digest {
				continue
			}
			if err := tags.Delete([]byte(name)); err != nil {
				return err
			}
		}
	}
	if links := r.Bucket(bucketLinks); links != nil {
		for _, d := range rm.Links {
			if err := links.Delete([]byte(d)); err != nil {
				return err
			}
		}
	}
	for _, s := range rm.Subjects {
		if refs := r.Bucket(bucketReferrers); refs != nil && refs.Bucket([]byte(s)) != nil {
			if err := refs.DeleteBucket([]byte(s)); err != nil {
				return err
			}
		}
		if f := r.Bucket(bucketFetched); f != nil {
			if err := f.Delete([]byte(s)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Image is everything an import records for one repository, committed in
// one transaction: links (blobs and manifests), tag pointers and
// referrers index entries.
type Image struct {
	Links     []Link
	Tags      []Tag
	Referrers []Referrer
	// ListedAt, when not zero, marks each subject's referrers listing as
	// fetched then (a cached repository serves it as it would a listing
	// fetched from its upstream).
	ListedAt time.Time
}

// PutImage records img in repo in one transaction.
func (m *Meta) PutImage(ctx context.Context, repo string, img Image) error {
	for _, l := range img.Links {
		if _, err := ParseDigest(l.Digest); err != nil {
			return err
		}
	}
	err := m.updateRepo(repo, func(tx *bolt.Tx) error {
		for _, l := range img.Links {
			if err := putLink(tx, repo, l, nil); err != nil {
				return err
			}
		}
		for _, t := range img.Tags {
			raw, err := json.Marshal(t)
			if err != nil {
				return err
			}
			tags, err := repoBucket(tx, repo, bucketTags, true)
			if err != nil {
				return err
			}
			if err := tags.Put([]byte(t.Name), raw); err != nil {
				return err
			}
		}
		for _, ref := range img.Referrers {
			if err := putReferrers(tx, repo, ref.Subject, []Descriptor{ref.Descriptor}, false); err != nil {
				return err
			}
			if img.ListedAt.IsZero() {
				continue
			}
			f, err := repoBucket(tx, repo, bucketFetched, true)
			if err != nil {
				return err
			}
			v, err := img.ListedAt.UTC().MarshalText()
			if err != nil {
				return err
			}
			if err := f.Put([]byte(ref.Subject), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record image in %s: %w", repo, err)
	}
	return nil
}
