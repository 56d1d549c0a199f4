package etcdmeta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regcache/regcache/storage"
)

// linkWrite returns the compare and operations that record l for repo (a
// blob link never demotes a manifest link of the same digest: the link is
// read, and the write applies only while it is as read).
func (m *Meta) linkWrite(ctx context.Context, repo string, l storage.Link) (clientv3.Cmp, clientv3.Op, error) {
	key := m.keys.link(repo, l.Digest)
	var old storage.Link
	rev, found, err := m.getJSON(ctx, key, &old)
	if err != nil && !found {
		return clientv3.Cmp{}, clientv3.Op{}, err
	}
	if l.MediaType == "" && found && err == nil && old.MediaType != "" {
		l.MediaType = old.MediaType
	}
	op, err := put(key, l)
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev), op, err
}

// tagWrite returns the operation that points repo's tag at digest.
func (m *Meta) tagWrite(repo string, t storage.Tag, digest string) (clientv3.Op, error) {
	t.Digest = digest
	return put(m.keys.tag(repo, t.Name), t)
}

// Link records l for repo and, when tag is not nil, points the tag at
// l.Digest (whatever tag.Digest says), in one transaction.
func (m *Meta) Link(ctx context.Context, repo string, l storage.Link, tag *storage.Tag) error {
	if _, err := storage.ParseDigest(l.Digest); err != nil {
		return err
	}
	if err := m.putManifest(ctx, repo, l, tag, nil); err != nil {
		return fmt.Errorf("link %s to %s: %w", l.Digest, repo, err)
	}
	return nil
}

// PutManifest links the manifest l to repo, points tag at it when tag is
// not nil, and records it as a referrer of its subject when ref is not
// nil, in one transaction.
func (m *Meta) PutManifest(ctx context.Context, repo string, l storage.Link, tag *storage.Tag, ref *storage.Referrer) error {
	if _, err := storage.ParseDigest(l.Digest); err != nil {
		return err
	}
	if ref != nil {
		if _, err := storage.ParseDigest(ref.Subject); err != nil {
			return err
		}
	}
	if err := m.putManifest(ctx, repo, l, tag, ref); err != nil {
		return fmt.Errorf("push manifest %s to %s: %w", l.Digest, repo, err)
	}
	return nil
}

func (m *Meta) putManifest(ctx context.Context, repo string, l storage.Link, tag *storage.Tag, ref *storage.Referrer) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	return m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
		c, op, err := m.linkWrite(ctx, repo, l)
		if err != nil {
			return nil, nil, false, err
		}
		ops := []clientv3.Op{op, clientv3.OpPut(m.keys.repo(repo), "")}
		if tag != nil {
			op, err := m.tagWrite(repo, *tag, l.Digest)
			if err != nil {
				return nil, nil, false, err
			}
			ops = append(ops, op)
		}
		if ref != nil {
			op, err := put(m.keys.referrers(repo, ref.Subject)+ref.Descriptor.Digest, ref.Descriptor)
			if err != nil {
				return nil, nil, false, err
			}
			ops = append(ops, op)
		}
		return []clientv3.Cmp{c}, ops, false, nil
	})
}

// Linked returns the link of digest in repo, or storage.ErrNotFound.
func (m *Meta) Linked(ctx context.Context, repo, digest string) (storage.Link, error) {
	var l storage.Link
	_, found, err := m.getJSON(ctx, m.keys.link(repo, digest), &l)
	if err != nil {
		return storage.Link{}, fmt.Errorf("links %s@%s: %w", repo, digest, err)
	}
	if !found {
		return storage.Link{}, fmt.Errorf("links %s@%s: %w", repo, digest, storage.ErrNotFound)
	}
	return l, nil
}

// Tag returns the tag pointer repo:tag, or storage.ErrNotFound.
func (m *Meta) Tag(ctx context.Context, repo, tag string) (storage.Tag, error) {
	var t storage.Tag
	_, found, err := m.getJSON(ctx, m.keys.tag(repo, tag), &t)
	if err != nil {
		return storage.Tag{}, fmt.Errorf("tags %s@%s: %w", repo, tag, err)
	}
	if !found {
		return storage.Tag{}, fmt.Errorf("tags %s@%s: %w", repo, tag, storage.ErrNotFound)
	}
	return t, nil
}

// Tags lists the tags recorded for repo, sorted.
func (m *Meta) Tags(ctx context.Context, repo string) ([]string, error) {
	return m.TagPage(ctx, repo, "", -1)
}

// TagPage lists, in order, at most limit (every one when limit < 0) of
// repo's tags that sort after after ("" for the first page). etcd keeps
// keys in byte order, Go's string order, so a page is one range request
// starting just after after.
func (m *Meta) TagPage(ctx context.Context, repo, after string, limit int) ([]string, error) {
	if limit == 0 {
		return nil, nil
	}
	prefix := m.keys.tags(repo)
	from := prefix
	if after != "" {
		from = prefix + after + "\x00"
	}
	var tags []string
	end := clientv3.GetPrefixRangeEnd(prefix)
	for limit < 0 || len(tags) < limit {
		n := pageSize
		if limit >= 0 {
			n = min(n, limit-len(tags))
		}
		resp, err := m.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(int64(n)), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("list tags of %s: %w", repo, err)
		}
		for _, kv := range resp.Kvs {
			tags = append(tags, strings.TrimPrefix(string(kv.Key), prefix))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return tags, nil
}

// HasRepo reports whether anything was ever linked or tagged in repo.
func (m *Meta) HasRepo(ctx context.Context, repo string) (bool, error) {
	resp, err := m.cli.Get(ctx, m.keys.repo(repo), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("look up repository %s: %w", repo, err)
	}
	return resp.Count > 0, nil
}

// SetReferrers replaces the referrers of subject recorded for repo (a
// cached listing fetched from an upstream at fetched).
func (m *Meta) SetReferrers(ctx context.Context, repo, subject string, ds []storage.Descriptor, fetched time.Time) error {
	if _, err := storage.ParseDigest(subject); err != nil {
		return err
	}
	if err := m.setReferrers(ctx, repo, subject, ds, fetched); err != nil {
		return fmt.Errorf("record referrers of %s in %s: %w", subject, repo, err)
	}
	return nil
}

func (m *Meta) setReferrers(ctx context.Context, repo, subject string, ds []storage.Descriptor, fetched time.Time) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	prefix := m.keys.referrers(repo, subject)
	var puts []clientv3.Op
	keep := map[string]bool{}
	for _, d := range ds {
		op, err := put(prefix+d.Digest, d)
		if err != nil {
			return err
		}
		puts = append(puts, op)
		keep[prefix+d.Digest] = true
	}
	puts = dedupe(puts)
	last := []clientv3.Op{clientv3.OpPut(m.keys.fetched(repo, subject), timeText(fetched)), clientv3.OpPut(m.keys.repo(repo), "")}
	// The entries recorded now that the listing does not keep: etcd
	// takes no put inside a range deleted by the same transaction, so
	// they are deleted one by one.
	staleOf := func() ([]clientv3.Op, int64, error) {
		var stale []clientv3.Op
		rev, err := m.getAll(ctx, prefix, 0, true, func(k string, _ []byte) error {
			if !keep[k] {
				stale = append(stale, clientv3.OpDelete(k))
			}
			return nil
		})
		return stale, rev, err
	}
	if len(puts)+len(last) < m.maxOps {
		// The listing replaced in one transaction, as bbolt does, while
		// no entry was added since it was read.
		err := m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
			stale, rev, err := staleOf()
			if err == nil && len(stale)+len(puts)+len(last) > m.maxOps {
				err = errTooLarge
			}
			if err != nil {
				return nil, nil, false, err
			}
			cmp := clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix()
			return []clientv3.Cmp{cmp}, slices.Concat(puts, stale, last), false, nil
		})
		if !errors.Is(err, errTooLarge) {
			return err
		}
	}
	// Too many for one transaction: the new entries first, then the old
	// ones that are not among them, then when the listing was fetched.
	// Meanwhile a reader sees the old listing, then the union of both.
	stale, _, err := staleOf()
	if err != nil {
		return err
	}
	return m.commit(ctx, slices.Concat(puts, stale, last))
}

// Referrers returns the referrers of subject recorded for repo, sorted by
// digest, and when the listing was fetched from an upstream (zero for a
// listing built by pushes).
func (m *Meta) Referrers(ctx context.Context, repo, subject string) ([]storage.Descriptor, time.Time, error) {
	var out []storage.Descriptor
	var fetched time.Time
	fail := func(err error) ([]storage.Descriptor, time.Time, error) {
		return nil, time.Time{}, fmt.Errorf("referrers of %s in %s: %w", subject, repo, err)
	}
	resp, err := m.cli.Get(ctx, m.keys.fetched(repo, subject))
	if err != nil {
		return fail(err)
	}
	if len(resp.Kvs) > 0 {
		if err := fetched.UnmarshalText(resp.Kvs[0].Value); err != nil {
			return fail(err)
		}
	}
	// The listing at the revision the fetched time was read at: both
	// from one state of the cluster.
	_, err = m.getAll(ctx, m.keys.referrers(repo, subject), resp.Header.Revision, false, func(_ string, v []byte) error {
		var d storage.Descriptor
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return out, fetched, nil
}

// DeleteManifest removes the manifest digest from repo: its link, every
// tag pointing at it and its entry as a referrer of subject (when not
// ""), in one transaction. It returns the tags removed, or
// storage.ErrNotFound when digest is not linked to repo as a manifest.
//
// The transaction applies only while the link and every tag of repo are
// as read: a tag pointed at digest meanwhile (by another process) makes
// it read again, so no tag is left pointing at the removed manifest.
func (m *Meta) DeleteManifest(ctx context.Context, repo, digest, subject string) ([]string, error) {
	var removed []string
	linkKey := m.keys.link(repo, digest)
	tagsPrefix := m.keys.tags(repo)
	err := m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
		removed = nil
		var l storage.Link
		lrev, found, err := m.getJSON(ctx, linkKey, &l)
		if err != nil && !found {
			return nil, nil, false, err
		}
		if !found || err != nil || l.MediaType == "" {
			return nil, nil, false, fmt.Errorf("manifest %s@%s: %w", repo, digest, storage.ErrNotFound)
		}
		var tagOps []clientv3.Op
		var tagCmps []clientv3.Cmp
		rev, err := m.getAll(ctx, tagsPrefix, 0, false, func(k string, v []byte) error {
			var t storage.Tag
			if json.Unmarshal(v, &t) == nil && t.Digest == digest {
				removed = append(removed, strings.TrimPrefix(k, tagsPrefix))
				tagOps = append(tagOps, clientv3.OpDelete(k))
			}
			return nil
		})
		if err != nil {
			return nil, nil, false, err
		}
		if len(tagOps)+2 > m.maxOps {
			// Too many tags for one transaction with the link: remove
			// tags first, each while it is as read, then try again.
			for chunk := range slices.Chunk(tagOps, m.maxOps) {
				if _, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(tagsPrefix), "<", rev+1).WithPrefix()).Then(chunk...).Commit(); err != nil {
					return nil, nil, false, wrap(err)
				}
			}
			tagOps = nil
		}
		tagCmps = append(tagCmps,
			clientv3.Compare(clientv3.ModRevision(linkKey), "=", lrev),
			clientv3.Compare(clientv3.ModRevision(tagsPrefix), "<", rev+1).WithPrefix())
		ops := append(tagOps, clientv3.OpDelete(linkKey))
		if subject != "" {
			ops = append(ops, clientv3.OpDelete(m.keys.referrers(repo, subject)+digest))
		}
		return tagCmps, ops, false, nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// DeleteTag removes the tag; storage.ErrNotFound when repo has no such tag.
func (m *Meta) DeleteTag(ctx context.Context, repo, tag string) error {
	return m.deleteExisting(ctx, m.keys.tag(repo, tag), fmt.Sprintf("tag %s:%s", repo, tag))
}

// Unlink removes the link of blob digest from repo; storage.ErrNotFound
// when absent. The bytes stay until garbage collection finds no reference.
func (m *Meta) Unlink(ctx context.Context, repo, digest string) error {
	return m.deleteExisting(ctx, m.keys.link(repo, digest), fmt.Sprintf("link %s@%s", repo, digest))
}

// deleteExisting deletes key in one transaction that checks it exists.
func (m *Meta) deleteExisting(ctx context.Context, key, what string) error {
	resp, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", what, wrap(err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
	}
	return nil
}

// UnlinkEverywhere removes the links of digests from every repository
// (garbage collection, after removing their bytes). The links found are
// deleted in transactions of at most MaxTxnOps: every one goes, so the
// order does not matter, and a link made after the listing is kept as it
// would be after bbolt's one transaction.
func (m *Meta) UnlinkEverywhere(ctx context.Context, digests []string) error {
	if len(digests) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, d := range digests {
		want[d] = true
	}
	var ops []clientv3.Op
	_, err := m.getAll(ctx, m.keys.allLinks(), 0, true, func(k string, _ []byte) error {
		if _, d, ok := repoOf(k, m.keys.allLinks()); ok && want[d] {
			ops = append(ops, clientv3.OpDelete(k))
		}
		return nil
	})
	if err == nil {
		err = m.commit(ctx, ops)
	}
	if err != nil {
		return fmt.Errorf("unlink collected blobs: %w", err)
	}
	return nil
}

// Links returns every link of every repository, read at one revision: a
// consistent snapshot for garbage collection.
func (m *Meta) Links(ctx context.Context) ([]storage.RepoLink, error) {
	links, _, _, err := m.contents(ctx, 0, false)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return links, nil
}

// contents reads every link and, when withTags, every tag, at rev (0:
// now), returning the revision read.
func (m *Meta) contents(ctx context.Context, rev int64, withTags bool) ([]storage.RepoLink, []storage.RepoTag, int64, error) {
	var links []storage.RepoLink
	var tags []storage.RepoTag
	under := m.keys.allLinks()
	rev, err := m.getAll(ctx, under, rev, false, func(k string, v []byte) error {
		repo, _, ok := repoOf(k, under)
		if !ok {
			return nil
		}
		var l storage.Link
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		links = append(links, storage.RepoLink{Repo: repo, Link: l})
		return nil
	})
	if err != nil || !withTags {
		return links, nil, rev, err
	}
	under = m.keys.allTags()
	_, err = m.getAll(ctx, under, rev, false, func(k string, v []byte) error {
		repo, name, ok := repoOf(k, under)
		if !ok {
			return nil
		}
		var t storage.Tag
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		t.Name = name
		tags = append(tags, storage.RepoTag{Repo: repo, Tag: t})
		return nil
	})
	return links, tags, rev, err
}

// Repositories returns up to n repositories (n < 0: all) that hold a link
// or a tag, in lexical order, starting after last ("" from the first).
func (m *Meta) Repositories(ctx context.Context, last string, n int) ([]string, error) {
	out := []string{}
	prefix := m.keys.repos()
	from := prefix
	if last != "" {
		from = prefix + last + "\x00"
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	for n < 0 || len(out) < n {
		resp, err := m.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(pageSize), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("list repositories: %w", err)
		}
		for _, kv := range resp.Kvs {
			if n >= 0 && len(out) >= n {
				break
			}
			repo := strings.TrimPrefix(string(kv.Key), prefix)
			ok, err := m.holdsAny(ctx, repo, resp.Header.Revision)
			if err != nil {
				return nil, fmt.Errorf("list repositories: %w", err)
			}
			if ok {
				out = append(out, repo)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return out, nil
}

// holdsAny reports whether repo has a link or a tag at rev.
func (m *Meta) holdsAny(ctx context.Context, repo string, rev int64) (bool, error) {
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(m.keys.links(repo), clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev)),
		clientv3.OpGet(m.keys.tags(repo), clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev)),
	).Commit()
	if err != nil {
		return false, err
	}
	for _, r := range resp.Responses {
		if r.GetResponseRange().Count > 0 {
			return true, nil
		}
	}
	return false, nil
}
