package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// tagLists remembers the tag list of each upstream repository for the
// walks through its pages. A listing that starts (no "last") asks the
// upstream, one request for every client starting one at that moment; the
// pages that continue it are cut from the list that first page fetched, as
// long as it is younger than the rule's tag TTL. So a client paging
// through 10,000 tags in pages of 100 costs the upstream one list, not
// one hundred, and each page costs its own length here, not a sort of
// every tag.
type tagLists struct {
	flights singleflight.Group

	mu    sync.Mutex
	lists map[string]tagList // by upstreamRepo.key()
}

type tagList struct {
	tags []string // sorted, without duplicates; never modified once stored
	at   time.Time
}

// maxTagLists bounds the remembered lists; when full it starts over.
const maxTagLists = 256

// TagPage is a page of a repository's tag list.
type TagPage struct {
	Tags []string
	// More: tags follow the page (the caller links to the next page).
	More bool
}

// Tags lists, in order, the tags of repo that sort after after ("" for
// the first page), at most n of them (all with n < 0): the upstream's
// (when a rule covers repo and the upstream answers) merged with those
// cached here.
func (p *Puller) Tags(ctx context.Context, repo, after string, n int) (TagPage, error) {
	limit := -1
	if n >= 0 {
		limit = n + 1 // one more than asked: is there a next page?
	}
	local, err := p.meta.TagPage(ctx, repo, after, limit)
	if err != nil {
		return TagPage{}, err
	}
	up, ruled := p.match(repo)
	switch {
	case !ruled:
		if len(local) == 0 {
			if err := p.unknown(ctx, repo, nil); err != nil {
				return TagPage{}, err
			}
		}
		return page(local, nil, n), nil
	case p.opts.Upstreams.Offline():
		return page(local, nil, n), nil
	}
	remote, src, err := p.upstreamTagList(ctx, up, after == "")
	if err != nil {
		if errors.Is(err, errNotFound) && after == "" && len(local) == 0 {
			p.answered(ctx, up.rule, SourceMiss, false)
			return TagPage{}, fmt.Errorf("%w: %s (upstream %s/%s does not exist)", ErrNameUnknown, repo, up.host, up.path)
		}
		p.log.WarnContext(ctx, "listing cached tags only: upstream tag list failed", "repo", repo, "err", err)
		p.answered(ctx, up.rule, SourceStale, false)
		return page(local, nil, n), nil
	}
	p.answered(ctx, up.rule, src, false)
	if after != "" {
		i, found := slices.BinarySearch(remote, after)
		if found {
			i++
		}
		remote = remote[i:]
	}
	return page(local, remote, n), nil
}

// page merges two sorted lists of tags into a page of at most n (n < 0:
// all of them).
func page(a, b []string, n int) TagPage {
	size := len(a) + len(b)
	if n >= 0 {
		size = min(size, n+1)
	}
	out := make([]string, 0, size)
	for (len(a) > 0 || len(b) > 0) && (n < 0 || len(out) <= n) {
		switch {
		case len(b) == 0 || len(a) > 0 && a[0] < b[0]:
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0] < a[0]:
			out, b = append(out, b[0]), b[1:]
		default: // the same tag in both
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	if n >= 0 && len(out) > n {
		return TagPage{Tags: out[:n], More: true}
	}
	return TagPage{Tags: out}
}

// upstreamTagList returns up's tag list, sorted: from the upstream when
// fresh is set or the remembered list is older than the rule's tag TTL,
// else the remembered one (SourceHit).
func (p *Puller) upstreamTagList(ctx context.Context, up upstreamRepo, fresh bool) ([]string, Source, error) {
	key := up.key()
	l := &p.lists
	if !fresh {
		l.mu.Lock()
		got, ok := l.lists[key]
		l.mu.Unlock()
		if ok && (up.pinned || p.opts.Now().Sub(got.at) < up.tagTTL) {
			return got.tags, SourceHit, nil
		}
	}
	v, err := joinFlight(ctx, &l.flights, key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.ManifestTimeout)
		defer cancel()
		tags, err := p.upstreamTags(lctx, up)
		if err != nil {
			return nil, err
		}
		sort.Strings(tags)
		tags = slices.Clip(slices.Compact(tags))
		l.mu.Lock()
		if l.lists == nil || len(l.lists) >= maxTagLists {
			l.lists = map[string]tagList{}
		}
		l.lists[key] = tagList{tags: tags, at: p.opts.Now()}
		l.mu.Unlock()
		return tags, nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.([]string), SourceMiss, nil
}

// upstreamTags reads every page of the upstream tag list (up to 100 pages).
func (p *Puller) upstreamTags(ctx context.Context, up upstreamRepo) ([]string, error) {
	next := up.endpoint.String() + "/v2/" + up.path + "/tags/list"
	var tags []string
	for i := 0; next != "" && i < 100; i++ {
		resp, err := p.clients.do(ctx, up, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = decodeJSON(resp.Body, &body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: tag list of %s/%s: %v", ErrUnavailable, up.host, up.path, err)
		}
		tags = append(tags, body.Tags...)
		next = nextLink(up, resp.Header.Get("Link"))
	}
	return tags, nil
}

// nextLink resolves an RFC 5988 rel="next" Link header against the endpoint.
func nextLink(up upstreamRepo, h string) string {
	if h == "" || !strings.Contains(h, `rel="next"`) {
		return ""
	}
	start, end := strings.IndexByte(h, '<'), strings.IndexByte(h, '>')
	if start < 0 || end < start {
		return ""
	}
	u, err := up.endpoint.Parse(h[start+1 : end])
	if err != nil || u.Host != up.endpoint.Host {
		return ""
	}
	return u.String()
}
