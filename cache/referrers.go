package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// ReferrerStore holds the referrers index (storage.Meta): built by pushes
// for local repositories, fetched from upstreams for cached ones.
type ReferrerStore interface {
	Referrers(ctx context.Context, repo, subject string) ([]storage.Descriptor, time.Time, error)
	SetReferrers(ctx context.Context, repo, subject string, ds []storage.Descriptor, fetched time.Time) error
}

// Referrers lists the manifests of repo whose subject is the manifest
// subject (the OCI referrers API), unfiltered.
//
// For a local repository the list comes from the index pushes built. For a
// cached repository it comes from the upstream's referrers API, or, when
// the upstream has none (404), from its sha256-<hex> tag (the referrers
// tag schema); each referrer manifest and its blobs are cached with it, so
// that signatures verify through regcache with the upstream down. A cached
// list is fresh for the rule's tag TTL; after that the upstream is asked
// again, and if it cannot answer the cached list is served.
func (p *Puller) Referrers(ctx context.Context, repo, subject string) ([]storage.Descriptor, error) {
	rs, ok := p.meta.(ReferrerStore)
	if !ok {
		return nil, fmt.Errorf("%w: this store keeps no referrers", ErrUnavailable)
	}
	cached, fetched, err := rs.Referrers(ctx, repo, subject)
	if err != nil {
		return nil, err
	}
	up, ruled := p.match(repo)
	if !ruled {
		// Entries of manifests deleted since are skipped.
		out := cached[:0]
		for _, d := range cached {
			if _, err := p.meta.Linked(ctx, repo, d.Digest); err == nil {
				out = append(out, d)
			}
		}
		return out, nil
	}
	now := p.opts.Now()
	if (!fetched.IsZero() && now.Sub(fetched) < up.tagTTL) || p.opts.Upstreams.Offline() {
		p.answered(ctx, up.rule, SourceHit, false)
		return cached, nil
	}
	fresh, err := p.fetchReferrers(ctx, repo, up, subject)
	// Set after fetchReferrers, whose reads of referrer manifests and
	// blobs record their own outcomes.
	if err != nil {
		if !fetched.IsZero() {
			p.log.WarnContext(ctx, "serving cached referrers: upstream failed", "repo", repo, "subject", subject, "err", err)
			p.answered(ctx, up.rule, SourceStale, false)
			return cached, nil
		}
		p.answered(ctx, up.rule, SourceMiss, false)
		return nil, err
	}
	p.answered(ctx, up.rule, SourceMiss, false)
	if err := rs.SetReferrers(ctx, repo, subject, fresh, now); err != nil {
		p.log.WarnContext(ctx, "record referrers", "repo", repo, "subject", subject, "err", err)
	}
	return fresh, nil
}

// fetchReferrers asks the upstream for the referrers of subject and caches
// each referrer manifest and its blobs.
func (p *Puller) fetchReferrers(ctx context.Context, repo string, up upstreamRepo, subject string) ([]storage.Descriptor, error) {
	list, err := p.upstreamReferrers(ctx, up, subject)
	if errors.Is(err, errNotFound) {
		list, err = p.tagSchemaReferrers(ctx, repo, up, subject)
	}
	if err != nil {
		return nil, err
	}
	out := make([]storage.Descriptor, 0, len(list))
	for _, d := range list {
		if err := p.cacheReferrer(ctx, repo, d.Digest); err != nil {
			return nil, fmt.Errorf("cache referrer %s of %s: %w", d.Digest, subject, err)
		}
		out = append(out, storage.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: d.ArtifactType, Annotations: d.Annotations})
	}
	p.log.InfoContext(ctx, "cached referrers", "repo", repo, "subject", subject, "count", len(out), "upstream", up.host+"/"+up.path)
	return out, nil
}

// upstreamReferrers calls the upstream's referrers API; errNotFound when
// the upstream does not have it.
func (p *Puller) upstreamReferrers(ctx context.Context, up upstreamRepo, subject string) ([]manifest.Descriptor, error) {
	mctx, cancel := context.WithTimeout(ctx, p.opts.ManifestTimeout)
	defer cancel()
	resp, err := p.clients.do(mctx, up, http.MethodGet, up.url("referrers", subject), http.Header{"Accept": {manifest.OCIIndex}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != manifest.OCIIndex {
		// Not the API (a registry answering something else there).
		return nil, fmt.Errorf("%w: referrers answered with %q", errNotFound, mt)
	}
	var idx struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if err := decodeJSON(resp.Body, &idx); err != nil {
		return nil, fmt.Errorf("%w: referrers of %s from %s/%s: %v", ErrUnavailable, subject, up.host, up.path, err)
	}
	return idx.Manifests, nil
}

// tagSchemaReferrers reads the sha256-<hex> tag the upstream keeps for
// clients of registries without the referrers API, caching it like any
// other tag; no such tag means no referrers.
func (p *Puller) tagSchemaReferrers(ctx context.Context, repo string, up upstreamRepo, subject string) ([]manifest.Descriptor, error) {
	tag := strings.Replace(subject, ":", "-", 1)
	c, err := p.fetchManifest(ctx, repo, up, tag, tag)
	if errors.Is(err, ErrManifestUnknown) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer c.Body.Close()
	body, err := io.ReadAll(io.LimitReader(c.Body, manifest.MaxSize+1))
	if err != nil {
		return nil, err
	}
	var idx struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("%w: tag %s of %s/%s is not a referrers index: %v", ErrUnavailable, tag, up.host, up.path, err)
	}
	return idx.Manifests, nil
}

// cacheReferrer stores referrer manifest digest of repo and the blobs (and
// child manifests) it references.
func (p *Puller) cacheReferrer(ctx context.Context, repo, digest string) error {
	c, err := p.Manifest(ctx, repo, digest)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(c.Body, manifest.MaxSize+1))
	c.Body.Close()
	if err != nil {
		return err
	}
	m, err := manifest.Parse(c.MediaType, body)
	if err != nil {
		return nil // an artifact type regcache does not read: the manifest is cached
	}
	for _, d := range m.Manifests {
		if err := p.cacheReferrer(ctx, repo, d.Digest); err != nil {
			return err
		}
	}
	for _, d := range m.Blobs() {
		b, err := p.Blob(ctx, repo, d.Digest)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		_, err = io.Copy(io.Discard, b.Body)
		b.Body.Close()
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
	}
	return nil
}
