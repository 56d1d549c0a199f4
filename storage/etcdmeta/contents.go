package etcdmeta

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regcache/regcache/storage"
)

// Contents returns every link and every tag of every repository, read at
// one revision: a consistent snapshot for eviction, which groups them
// into images.
func (m *Meta) Contents(ctx context.Context) ([]storage.RepoLink, []storage.RepoTag, error) {
	links, tags, _, err := m.contents(ctx, 0, true)
	if err != nil {
		return nil, nil, fmt.Errorf("list links and tags: %w", err)
	}
	return links, tags, nil
}

// AccessTimes returns every recorded last-access time, by digest, as last
// flushed (by any process).
func (m *Meta) AccessTimes(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	under := m.keys.access()
	_, err := m.getAll(ctx, under, 0, false, func(k string, v []byte) error {
		var t time.Time
		if t.UnmarshalText(v) == nil { // a damaged entry is as good as none
			out[strings.TrimPrefix(k, under)] = t
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read access times: %w", err)
	}
	return out, nil
}

// TouchBlobs records when blobs were last served. The times are written
// in transactions of at most MaxTxnOps: each is a hint for eviction, and
// one written without the others is as good as a later flush.
func (m *Meta) TouchBlobs(ctx context.Context, times map[string]time.Time) error {
	ops := make([]clientv3.Op, 0, len(times))
	for d, t := range times {
		ops = append(ops, clientv3.OpPut(m.keys.accessOf(d), timeText(t)))
	}
	if err := m.commit(ctx, ops); err != nil {
		return fmt.Errorf("record access times: %w", err)
	}
	return nil
}

// LastAccess returns when the blob was last served, as last flushed, or
// storage.ErrNotFound.
func (m *Meta) LastAccess(ctx context.Context, digest string) (time.Time, error) {
	resp, err := m.cli.Get(ctx, m.keys.accessOf(digest))
	if err != nil {
		return time.Time{}, fmt.Errorf("access time of %s: %w", digest, err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, fmt.Errorf("access time of %s: %w", digest, storage.ErrNotFound)
	}
	var t time.Time
	if err := t.UnmarshalText(resp.Kvs[0].Value); err != nil {
		return time.Time{}, fmt.Errorf("access time of %s: %w", digest, err)
	}
	return t, nil
}

// Remove applies removals and forgets the access times of forget. Absent
// entries are skipped; a tag is removed only while it still points at the
// digest the removal names, which holds until the transaction commits (a
// compare on the tag's revision).
//
// It is one transaction when it fits in MaxTxnOps. Otherwise it commits,
// in this order, the tags, the referrers listings, the links and the
// access times: every state in between is one a reader may see (a tag is
// gone before the manifest it reached; a link is gone before eviction
// removes the bytes).
func (m *Meta) Remove(ctx context.Context, removals []storage.Removal, forget []string) error {
	if err := m.remove(ctx, removals, forget); err != nil {
		return fmt.Errorf("remove evicted content: %w", err)
	}
	return nil
}

type tagRef struct{ key, digest string }

func (m *Meta) remove(ctx context.Context, removals []storage.Removal, forget []string) error {
	var tags []tagRef
	var rest []clientv3.Op
	for _, rm := range removals {
		for name, d := range rm.Tags {
			tags = append(tags, tagRef{m.keys.tag(rm.Repo, name), d})
		}
	}
	for _, rm := range removals {
		for _, s := range rm.Subjects {
			rest = append(rest, clientv3.OpDelete(m.keys.referrers(rm.Repo, s), clientv3.WithPrefix()), clientv3.OpDelete(m.keys.fetched(rm.Repo, s)))
		}
	}
	for _, rm := range removals {
		for _, d := range rm.Links {
			rest = append(rest, clientv3.OpDelete(m.keys.link(rm.Repo, d)))
		}
	}
	for _, d := range forget {
		rest = append(rest, clientv3.OpDelete(m.keys.accessOf(d)))
	}
	if len(tags) <= m.maxOps && len(tags)+len(rest) <= m.maxOps {
		return m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
			cmps, ops, err := m.tagDeletes(ctx, tags)
			return cmps, slices.Concat(ops, rest), false, err
		})
	}
	for chunk := range slices.Chunk(tags, m.maxOps) {
		err := m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
			cmps, ops, err := m.tagDeletes(ctx, chunk)
			return cmps, ops, len(ops) == 0, err
		})
		if err != nil {
			return err
		}
	}
	return m.commit(ctx, rest)
}

// tagDeletes reads tags (at most MaxTxnOps) and returns, for those that
// still point at their digest, the deletes and the compares that keep
// them valid.
func (m *Meta) tagDeletes(ctx context.Context, tags []tagRef) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(tags) == 0 {
		return nil, nil, nil
	}
	gets := make([]clientv3.Op, len(tags))
	for i, t := range tags {
		gets[i] = clientv3.OpGet(t.key)
	}
	resp, err := m.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, nil, err
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().Kvs
		var t storage.Tag
		if len(kvs) == 0 || json.Unmarshal(kvs[0].Value, &t) != nil || t.Digest != tags[i].digest {
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(tags[i].key), "=", kvs[0].ModRevision))
		ops = append(ops, clientv3.OpDelete(tags[i].key))
	}
	return cmps, ops, nil
}

// PutImage records img in repo, in one transaction when it fits in
// MaxTxnOps. A larger image is written links first, then referrers, then
// tags: a reader that finds a tag finds everything it reaches, and an
// import cut short leaves links that nothing tags (collected like the
// leftovers of an interrupted pull).
func (m *Meta) PutImage(ctx context.Context, repo string, img storage.Image) error {
	for _, l := range img.Links {
		if _, err := storage.ParseDigest(l.Digest); err != nil {
			return err
		}
	}
	if err := m.putImage(ctx, repo, img); err != nil {
		return fmt.Errorf("record image in %s: %w", repo, err)
	}
	return nil
}

func (m *Meta) putImage(ctx context.Context, repo string, img storage.Image) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if len(img.Links) == 0 && len(img.Tags) == 0 && len(img.Referrers) == 0 {
		return nil
	}
	var tail []clientv3.Op
	for _, ref := range img.Referrers {
		op, err := put(m.keys.referrers(repo, ref.Subject)+ref.Descriptor.Digest, ref.Descriptor)
		if err != nil {
			return err
		}
		tail = append(tail, op)
		if !img.ListedAt.IsZero() {
			tail = append(tail, clientv3.OpPut(m.keys.fetched(repo, ref.Subject), timeText(img.ListedAt)))
		}
	}
	for _, t := range img.Tags {
		op, err := put(m.keys.tag(repo, t.Name), t)
		if err != nil {
			return err
		}
		tail = append(tail, op)
	}
	tail = append(tail, clientv3.OpPut(m.keys.repo(repo), ""))
	img.Links = foldLinks(img.Links)
	links := func(ls []storage.Link) ([]clientv3.Cmp, []clientv3.Op, error) {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, l := range ls {
			c, op, err := m.linkWrite(ctx, repo, l)
			if err != nil {
				return nil, nil, err
			}
			cmps, ops = append(cmps, c), append(ops, op)
		}
		return cmps, ops, nil
	}
	if len(img.Links)+len(tail) <= m.maxOps {
		return m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
			cmps, ops, err := links(img.Links)
			return cmps, append(ops, tail...), false, err
		})
	}
	for chunk := range slices.Chunk(img.Links, m.maxOps) {
		err := m.cas(ctx, func() ([]clientv3.Cmp, []clientv3.Op, bool, error) {
			cmps, ops, err := links(chunk)
			return cmps, ops, false, err
		})
		if err != nil {
			return err
		}
	}
	return m.commit(ctx, tail)
}

// foldLinks merges links of one digest into the last one, as writing them
// one after the other would leave it (a blob link keeps an earlier
// manifest link's media type).
func foldLinks(ls []storage.Link) []storage.Link {
	at := map[string]int{}
	var out []storage.Link
	for _, l := range ls {
		i, ok := at[l.Digest]
		if !ok {
			at[l.Digest] = len(out)
			out = append(out, l)
			continue
		}
		if l.MediaType == "" {
			l.MediaType = out[i].MediaType
		}
		out[i] = l
	}
	return out
}
