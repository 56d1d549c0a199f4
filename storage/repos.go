package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketReferrers = []byte("referrers")
	bucketFetched   = []byte("referrers-fetched")
)

// Descriptor describes a manifest that refers to a subject, as the OCI
// referrers API lists it.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Referrer records that a manifest refers to Subject (its "subject" field).
type Referrer struct {
	Subject    string
	Descriptor Descriptor
}

// PutManifest links the manifest l to repo, points tag at it when tag is
// not nil, and records it as a referrer of its subject when ref is not
// nil, in one transaction.
func (m *Meta) PutManifest(ctx context.Context, repo string, l Link, tag *Tag, ref *Referrer) error {
	if _, err := ParseDigest(l.Digest); err != nil {
		return err
	}
	if ref != nil {
		if _, err := ParseDigest(ref.Subject); err != nil {
			return err
		}
	}
	err := m.updateRepo(repo, func(tx *bolt.Tx) error {
		if err := putLink(tx, repo, l, tag); err != nil || ref == nil {
			return err
		}
		return putReferrers(tx, repo, ref.Subject, []Descriptor{ref.Descriptor}, false)
	})
	if err != nil {
		return fmt.Errorf("push manifest %s to %s: %w", l.Digest, repo, err)
	}
	return nil
}

// SetReferrers replaces the referrers of subject recorded for repo (a
// cached listing fetched from an upstream at fetched).
func (m *Meta) SetReferrers(ctx context.Context, repo, subject string, ds []Descriptor, fetched time.Time) error {
	if _, err := ParseDigest(subject); err != nil {
		return err
	}
	err := m.updateRepo(repo, func(tx *bolt.Tx) error {
		if err := putReferrers(tx, repo, subject, ds, true); err != nil {
			return err
		}
		f, err := repoBucket(tx, repo, bucketFetched, true)
		if err != nil {
			return err
		}
		v, err := fetched.UTC().MarshalText()
		if err != nil {
			return err
		}
		return f.Put([]byte(subject), v)
	})
	if err != nil {
		return fmt.Errorf("record referrers of %s in %s: %w", subject, repo, err)
	}
	return nil
}

// putReferrers records ds as referrers of subject in repo, replacing the
// ones recorded when replace is true.
func putReferrers(tx *bolt.Tx, repo, subject string, ds []Descriptor, replace bool) error {
	refs, err := repoBucket(tx, repo, bucketReferrers, true)
	if err != nil {
		return err
	}
	if replace && refs.Bucket([]byte(subject)) != nil {
		if err := refs.DeleteBucket([]byte(subject)); err != nil {
			return err
		}
	}
	b, err := refs.CreateBucketIfNotExists([]byte(subject))
	if err != nil {
		return err
	}
	for _, d := range ds {
		raw, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(d.Digest), raw); err != nil {
			return err
		}
	}
	return nil
}

// Referrers returns the referrers of subject recorded for repo, sorted by
// digest, and when the listing was fetched from an upstream (zero for a
// listing built by pushes).
func (m *Meta) Referrers(ctx context.Context, repo, subject string) ([]Descriptor, time.Time, error) {
	var out []Descriptor
	var fetched time.Time
	err := m.db.View(func(tx *bolt.Tx) error {
		if f, _ := repoBucket(tx, repo, bucketFetched, false); f != nil {
			if v := f.Get([]byte(subject)); v != nil {
				if err := fetched.UnmarshalText(v); err != nil {
					return err
				}
			}
		}
		refs, _ := repoBucket(tx, repo, bucketReferrers, false)
		if refs == nil || refs.Bucket([]byte(subject)) == nil {
			return nil
		}
		return refs.Bucket([]byte(subject)).ForEach(func(_, v []byte) error {
			var d Descriptor
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("referrers of %s in %s: %w", subject, repo, err)
	}
	return out, fetched, nil
}

// DeleteManifest removes the manifest digest from repo: its link, every
// tag pointing at it and its entry as a referrer of subject (when not
// ""), in one transaction. It returns the tags removed, or ErrNotFound
// when digest is not linked to repo as a manifest.
func (m *Meta) DeleteManifest(ctx context.Context, repo, digest, subject string) ([]string, error) {
	var removed []string
	err := m.updateRepo(repo, func(tx *bolt.Tx) error {
		links, _ := repoBucket(tx, repo, bucketLinks, false)
		var l Link
		if links == nil || json.Unmarshal(links.Get([]byte(digest)), &l) != nil || l.MediaType == "" {
			return fmt.Errorf("manifest %s@%s: %w", repo, digest, ErrNotFound)
		}
		if err := links.Delete([]byte(digest)); err != nil {
			return err
		}
		if tags, _ := repoBucket(tx, repo, bucketTags, false); tags != nil {
			c := tags.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var t Tag
				if json.Unmarshal(v, &t) == nil && t.Digest == digest {
					removed = append(removed, string(k))
				}
			}
			for _, t := range removed {
				if err := tags.Delete([]byte(t)); err != nil {
					return err
				}
			}
		}
		if subject == "" {
			return nil
		}
		if refs, _ := repoBucket(tx, repo, bucketReferrers, false); refs != nil && refs.Bucket([]byte(subject)) != nil {
			return refs.Bucket([]byte(subject)).Delete([]byte(digest))
		}
		return nil
	})
	return removed, err
}

// DeleteTag removes the tag; ErrNotFound when repo has no such tag.
func (m *Meta) DeleteTag(ctx context.Context, repo, tag string) error {
	return m.updateRepo(repo, func(tx *bolt.Tx) error {
		tags, _ := repoBucket(tx, repo, bucketTags, false)
		if tags == nil || tags.Get([]byte(tag)) == nil {
			return fmt.Errorf("tag %s:%s: %w", repo, tag, ErrNotFound)
		}
		return tags.Delete([]byte(tag))
	})
}

// Unlink removes the link of blob digest from repo; ErrNotFound when
// absent. The bytes stay until garbage collection finds no reference.
func (m *Meta) Unlink(ctx context.Context, repo, digest string) error {
	return m.updateRepo(repo, func(tx *bolt.Tx) error {
		links, _ := repoBucket(tx, repo, bucketLinks, false)
		if links == nil || links.Get([]byte(digest)) == nil {
			return fmt.Errorf("link %s@%s: %w", repo, digest, ErrNotFound)
		}
		return links.Delete([]byte(digest))
	})
}

// UnlinkEverywhere removes the links of digests from every repository, in
// one transaction (garbage collection, after removing their bytes).
func (m *Meta) UnlinkEverywhere(ctx context.Context, digests []string) error {
	if len(digests) == 0 {
		return nil
	}
	err := m.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEachBucket(func(repo []byte) error {
			links := tx.Bucket(bucketRepos).Bucket(repo).Bucket(bucketLinks)
			if links == nil {
				return nil
			}
			for _, d := range digests {
				if err := links.Delete([]byte(d)); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("unlink collected blobs: %w", err)
	}
	return nil
}

// RepoLink is one link of one repository.
type RepoLink struct {
	Repo string
	Link
}

// Links returns every link of every repository, read in one transaction:
// a consistent snapshot for garbage collection.
func (m *Meta) Links(ctx context.Context) ([]RepoLink, error) {
	var out []RepoLink
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEachBucket(func(repo []byte) error {
			links := tx.Bucket(bucketRepos).Bucket(repo).Bucket(bucketLinks)
			if links == nil {
				return nil
			}
			return links.ForEach(func(_, v []byte) error {
				var l Link
				if err := json.Unmarshal(v, &l); err != nil {
					return err
				}
				out = append(out, RepoLink{Repo: string(repo), Link: l})
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return out, nil
}

// Repositories returns up to n repositories (n < 0: all) that hold a link
// or a tag, in lexical order, starting after last ("" from the first).
func (m *Meta) Repositories(ctx context.Context, last string, n int) ([]string, error) {
	out := []string{}
	err := m.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRepos).Cursor()
		k, _ := c.First()
		if last != "" {
			k, _ = c.Seek([]byte(last))
			if k != nil && bytes.Equal(k, []byte(last)) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && (n < 0 || len(out) < n); k, _ = c.Next() {
			r := tx.Bucket(bucketRepos).Bucket(k)
			if r == nil || (empty(r.Bucket(bucketLinks)) && empty(r.Bucket(bucketTags))) {
				continue
			}
			out = append(out, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

func empty(b *bolt.Bucket) bool {
	if b == nil {
		return true
	}
	k, _ := b.Cursor().First()
	return k == nil
}
