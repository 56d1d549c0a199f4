package eviction

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/regcache/regcache/storage"
)

// unit is one image of a cached repository: what goes together.
type unit struct {
	repo      string
	root      string   // the top manifest; for a lone blob link, the blob
	manifests []string // the manifests of the image (none for a lone blob)
	closure   []string // every digest it links or references, once each
	tags      map[string]string
	lastUsed  time.Time
	reason    string
	bytes     int64 // freed by its eviction (estimated when planned)
}

// plan is a run's snapshot, grouped into images, and its choice.
type plan struct {
	opts    Options
	now     time.Time
	stored  int64
	sizes   map[string]int64          // stored blobs
	units   []*unit                   // every image of every cached repository
	global  map[string]int            // images linking or referencing a digest
	perRepo map[string]map[string]int // the same within each repository
	linked  map[string]map[string]bool
	pinned  map[string]bool // linked to, or referenced from, local repositories
	chosen  []*unit
	freed   int64
	note    string
}

// plan reads the snapshot (after the guard started: Collect) and chooses
// what to evict.
func (e *Evictor) plan(ctx context.Context) (*plan, error) {
	p := &plan{opts: e.opts, now: e.opts.Now(), sizes: map[string]int64{}, global: map[string]int{},
		perRepo: map[string]map[string]int{}, linked: map[string]map[string]bool{}, pinned: map[string]bool{}}
	if e.opts.Lock == nil {
		// This process alone changes the store: its running count is
		// exact. A shared store is counted by the walk below instead.
		u, err := e.blobs.WaitUsage(ctx)
		if err != nil {
			return nil, err
		}
		p.stored = u.Bytes
	}
	links, tags, err := e.meta.Contents(ctx)
	if err != nil {
		return nil, err
	}
	access, err := e.meta.AccessTimes(ctx)
	if err != nil {
		return nil, err
	}
	var walked int64
	if err := e.blobs.Walk(ctx, func(b storage.BlobInfo) error {
		p.sizes[b.Digest] = b.Size
		walked += b.Size
		return nil
	}); err != nil {
		return nil, err
	}
	if e.opts.Lock != nil {
		// A shared store: this replica's count would miss what the others
		// committed and removed; the walk has it all.
		p.stored = walked
	}
	byRepo := map[string][]storage.Link{}
	for _, l := range links {
		byRepo[l.Repo] = append(byRepo[l.Repo], l.Link)
	}
	tagsOf := map[string][]storage.Tag{}
	for _, t := range tags {
		tagsOf[t.Repo] = append(tagsOf[t.Repo], t.Tag)
	}
	seen := map[string]bool{}
	var localManifests []storage.Link
	repos := make([]string, 0, len(byRepo))
	for repo, ls := range byRepo {
		if _, _, cached := e.rules.Covering(repo); cached {
			repos = append(repos, repo)
			continue
		}
		for _, l := range ls {
			p.pinned[l.Digest] = true
			if l.MediaType != "" {
				localManifests = append(localManifests, l)
			}
		}
	}
	e.pinReferences(ctx, localManifests, p.pinned, seen)
	sort.Strings(repos)
	for _, repo := range repos {
		p.units = append(p.units, e.group(ctx, repo, byRepo[repo], tagsOf[repo], access, seen)...)
	}
	e.refs.prune(seen)
	for _, u := range p.units {
		if p.perRepo[u.repo] == nil {
			p.perRepo[u.repo] = map[string]int{}
		}
		for _, d := range u.closure {
			p.global[d]++
			p.perRepo[u.repo][d]++
		}
	}
	for repo, ls := range byRepo {
		set := map[string]bool{}
		for _, l := range ls {
			set[l.Digest] = true
		}
		p.linked[repo] = set
	}
	p.choose()
	return p, nil
}

// pinReferences adds to pinned everything the manifests reference,
// following index children.
func (e *Evictor) pinReferences(ctx context.Context, manifests []storage.Link, pinned, seen map[string]bool) {
	type item struct{ digest, mediaType string }
	stack := make([]item, 0, len(manifests))
	for _, l := range manifests {
		stack = append(stack, item{l.Digest, l.MediaType})
	}
	done := map[string]bool{}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if done[it.digest] {
			continue
		}
		done[it.digest] = true
		pinned[it.digest] = true
		r, ok := e.refs.get(ctx, e.blobs, it.digest, it.mediaType)
		if !ok {
			continue
		}
		seen[it.digest] = true
		for _, b := range r.blobs {
			pinned[b] = true
		}
		for _, c := range r.children {
			stack = append(stack, item{c, ""})
		}
	}
}

// group groups the links and tags of one cached repository into images.
func (e *Evictor) group(ctx context.Context, repo string, links []storage.Link, tags []storage.Tag, access map[string]time.Time, seen map[string]bool) []*unit {
	manifests := map[string]storage.Link{}
	blobs := map[string]storage.Link{}
	for _, l := range links {
		if l.MediaType != "" {
			manifests[l.Digest] = l
		} else {
			blobs[l.Digest] = l
		}
	}
	uf := unionFind{parent: map[string]string{}}
	refsOf := map[string]refs{}
	hasParent := map[string]bool{}
	for d, l := range manifests {
		uf.add(d)
		r, ok := e.refs.get(ctx, e.blobs, d, l.MediaType)
		if !ok {
			continue
		}
		seen[d] = true
		refsOf[d] = r
		for _, c := range r.children {
			if _, ok := manifests[c]; ok {
				uf.union(d, c)
				hasParent[c] = true
			}
		}
		if _, ok := manifests[r.subject]; ok && r.subject != "" {
			uf.union(d, r.subject)
			hasParent[d] = true
		}
	}
	for _, t := range tags {
		// The referrers tag schema: sha256-<hex> lists the referrers of
		// sha256:<hex>, and goes with it.
		if hex, ok := strings.CutPrefix(t.Name, "sha256-"); ok {
			if _, ok := manifests["sha256:"+hex]; ok {
				if _, ok := manifests[t.Digest]; ok {
					uf.union(t.Digest, "sha256:"+hex)
					hasParent[t.Digest] = true
				}
			}
		}
	}
	groups := uf.groups()
	var out []*unit
	referenced := map[string]bool{}
	for _, g := range groups {
		u := &unit{repo: repo, manifests: g, tags: map[string]string{}}
		set := map[string]bool{}
		add := func(d string) {
			if d != "" && !set[d] {
				set[d] = true
				u.closure = append(u.closure, d)
			}
		}
		for _, m := range g {
			add(m)
			u.lastUsed = latest(u.lastUsed, access[m], manifests[m].LinkedAt)
			for _, b := range refsOf[m].blobs {
				add(b)
			}
			for _, c := range refsOf[m].children {
				add(c)
			}
		}
		for _, t := range tags {
			if set[t.Digest] {
				u.tags[t.Name] = t.Digest
				u.lastUsed = latest(u.lastUsed, t.FetchedAt)
			}
		}
		u.root = rootOf(g, hasParent, u.tags)
		for d := range set {
			referenced[d] = true
		}
		out = append(out, u)
	}
	lone := make([]string, 0, len(blobs))
	for d := range blobs {
		if !referenced[d] {
			lone = append(lone, d)
		}
	}
	sort.Strings(lone)
	for _, d := range lone {
		out = append(out, &unit{repo: repo, root: d, closure: []string{d}, tags: map[string]string{},
			lastUsed: latest(access[d], blobs[d].LinkedAt)})
	}
	return out
}

// rootOf picks the manifest that names an image: a tagged one without a
// parent in the group, else any without a parent, else the first.
func rootOf(group []string, hasParent map[string]bool, tags map[string]string) string {
	tagged := map[string]bool{}
	for name, d := range tags {
		if !strings.HasPrefix(name, "sha256-") {
			tagged[d] = true
		}
	}
	for _, pass := range []func(string) bool{
		func(d string) bool { return !hasParent[d] && tagged[d] },
		func(d string) bool { return !hasParent[d] },
	} {
		for _, d := range group {
			if pass(d) {
				return d
			}
		}
	}
	return group[0]
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// choose picks the images to evict: those unused for UnusedAfter, then,
// when the store holds more than MaxSize, the least recently used until
// it would hold at most the low-water mark.
func (p *plan) choose() {
	sort.SliceStable(p.units, func(i, j int) bool {
		a, b := p.units[i], p.units[j]
		if !a.lastUsed.Equal(b.lastUsed) {
			return a.lastUsed.Before(b.lastUsed)
		}
		if a.repo != b.repo {
			return a.repo < b.repo
		}
		return a.root < b.root
	})
	left := make(map[string]int, len(p.global))
	for d, n := range p.global {
		left[d] = n
	}
	take := func(u *unit, reason string) {
		u.reason = reason
		for _, d := range u.closure {
			left[d]--
			if left[d] == 0 && !p.pinned[d] {
				u.bytes += p.sizes[d]
			}
		}
		p.freed += u.bytes
		p.chosen = append(p.chosen, u)
	}
	taken := map[*unit]bool{}
	if p.opts.UnusedAfter > 0 {
		cutoff := p.now.Add(-p.opts.UnusedAfter)
		for _, u := range p.units {
			if u.lastUsed.Before(cutoff) {
				take(u, ReasonUnused)
				taken[u] = true
			}
		}
	}
	if p.opts.MaxSize <= 0 || p.stored <= p.opts.MaxSize {
		return
	}
	target := int64(float64(p.opts.MaxSize) * p.opts.LowWater)
	for _, u := range p.units {
		if p.stored-p.freed <= target {
			return
		}
		if !taken[u] {
			take(u, ReasonSize)
		}
	}
	if p.stored-p.freed > target {
		p.note = fmt.Sprintf("with every image of cached repositories evicted the store would still hold %d bytes, over the low-water mark of %d: "+
			"the rest is local repositories and blobs no repository links (garbage collection removes those after gcGrace)", p.stored-p.freed, target)
	}
}

// report describes the plan.
func (p *plan) report(dryRun bool) Report {
	r := Report{DryRun: dryRun, StoredBytes: p.stored, MaxSize: p.opts.MaxSize, UnusedAfter: p.opts.UnusedAfter, Note: p.note, Images: []Image{}}
	if p.opts.MaxSize > 0 {
		r.LowWaterBytes = int64(float64(p.opts.MaxSize) * p.opts.LowWater)
	}
	if dryRun {
		for _, u := range p.chosen {
			r.Images = append(r.Images, u.image())
			r.Bytes += u.bytes
		}
	}
	return r
}

func (u *unit) image() Image {
	img := Image{Repository: u.repo, Digest: u.root, Manifests: len(u.manifests), LastUsed: u.lastUsed, Bytes: u.bytes, Reason: u.reason}
	for t := range u.tags {
		img.Tags = append(img.Tags, t)
	}
	sort.Strings(img.Tags)
	return img
}

// unionFind groups manifests.
type unionFind struct {
	parent map[string]string
	order  []string
}

func (u *unionFind) add(d string) {
	if _, ok := u.parent[d]; !ok {
		u.parent[d] = d
		u.order = append(u.order, d)
	}
}

func (u *unionFind) find(d string) string {
	for u.parent[d] != d {
		u.parent[d] = u.parent[u.parent[d]]
		d = u.parent[d]
	}
	return d
}

func (u *unionFind) union(a, b string) {
	u.add(a)
	u.add(b)
	ra, rb := u.find(a), u.find(b)
	if ra != rb {
		u.parent[rb] = ra
	}
}

// groups returns the groups, each sorted, in a stable order.
func (u *unionFind) groups() [][]string {
	sort.Strings(u.order)
	idx := map[string]int{}
	var out [][]string
	for _, d := range u.order {
		r := u.find(d)
		i, ok := idx[r]
		if !ok {
			i = len(out)
			idx[r] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], d)
	}
	return out
}
