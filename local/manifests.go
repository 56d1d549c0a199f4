package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// Pushed describes a manifest a push stored.
type Pushed struct {
	Digest string
	// Subject is the digest of the manifest's subject ("" when none): the
	// registry answers it as OCI-Subject.
	Subject string
}

// PutManifest stores body as a manifest of repo, sent with contentType,
// under ref (a tag, or the digest the body must hash to). Every blob and
// child manifest it references must be linked to repo; a manifest with a
// subject becomes one of the subject's referrers.
func (r *Repos) PutManifest(ctx context.Context, repo, ref, contentType string, body []byte) (Pushed, error) {
	if err := r.writable(repo); err != nil {
		return Pushed{}, err
	}
	if len(body) > manifest.MaxSize {
		return Pushed{}, fmt.Errorf("%w: %d bytes; at most %d are accepted", ErrManifestTooLarge, len(body), manifest.MaxSize)
	}
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	tag := ""
	if strings.Contains(ref, ":") {
		if ref != digest {
			return Pushed{}, fmt.Errorf("%w: pushed as %s, the body hashes to %s", ErrDigestInvalid, ref, digest)
		}
	} else {
		tag = ref
	}
	m, err := manifest.Parse(contentType, body)
	if err != nil {
		return Pushed{}, fmt.Errorf("%w: %w", ErrManifestInvalid, err)
	}
	refs := []string{digest}
	for _, d := range append(m.Blobs(), m.Manifests...) {
		refs = append(refs, d.Digest)
	}
	release := r.guard.protect(refs...)
	defer release()
	if err := r.checkReferences(ctx, repo, m); err != nil {
		return Pushed{}, err
	}
	if _, err := r.blobs.Stat(ctx, digest); err != nil {
		w, err := r.blobs.Create(ctx, digest, int64(len(body)))
		if err != nil {
			return Pushed{}, err
		}
		if _, err := w.Write(body); err != nil {
			w.Cancel()
			return Pushed{}, err
		}
		if err := w.Commit(); err != nil {
			return Pushed{}, err
		}
	}
	now := r.opts.Now()
	l := storage.Link{Digest: digest, MediaType: m.MediaType, Size: int64(len(body)), LinkedAt: now}
	var t *storage.Tag
	if tag != "" {
		t = &storage.Tag{Name: tag, Digest: digest, FetchedAt: now}
	}
	var referrer *storage.Referrer
	out := Pushed{Digest: digest}
	if m.Subject != nil {
		out.Subject = m.Subject.Digest
		referrer = &storage.Referrer{Subject: m.Subject.Digest, Descriptor: storage.Descriptor{
			MediaType: m.MediaType, Digest: digest, Size: int64(len(body)),
			ArtifactType: m.EffectiveArtifactType(), Annotations: m.Annotations,
		}}
	}
	if err := r.meta.PutManifest(ctx, repo, l, t, referrer); err != nil {
		return Pushed{}, err
	}
	r.log.InfoContext(ctx, "pushed manifest", "repo", repo, "ref", ref, "digest", digest, "mediaType", m.MediaType, "subject", out.Subject)
	return out, nil
}

// checkReferences makes sure every blob and child manifest m references is
// linked to repo and stored (with the size its descriptor says).
func (r *Repos) checkReferences(ctx context.Context, repo string, m manifest.Manifest) error {
	for i, d := range m.Blobs() {
		field := "config"
		if i > 0 {
			field = fmt.Sprintf("layers[%d]", i-1)
			if manifest.Foreign(d) {
				continue
			}
		}
		if err := r.checkLinked(ctx, repo, d, field, false); err != nil {
			return err
		}
	}
	for i, d := range m.Manifests {
		if err := r.checkLinked(ctx, repo, d, fmt.Sprintf("manifests[%d]", i), true); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repos) checkLinked(ctx context.Context, repo string, d manifest.Descriptor, field string, isManifest bool) error {
	what, how := "blob", "upload or mount it"
	if isManifest {
		what, how = "manifest", "push it by digest"
	}
	l, err := r.meta.Linked(ctx, repo, d.Digest)
	if err == nil && isManifest && l.MediaType == "" {
		err = storage.ErrNotFound
	}
	var size int64
	if err == nil {
		size, err = r.blobs.Stat(ctx, d.Digest)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s %s (%s) is not in repository %s; %s first", ErrManifestBlobUnknown, what, d.Digest, field, repo, how)
	}
	if err != nil {
		return err
	}
	if size != d.Size {
		return fmt.Errorf("%w: %s.size is %d, but %s %s has %d bytes", ErrManifestInvalid, field, d.Size, what, d.Digest, size)
	}
	return nil
}

// DeleteManifest deletes manifest digest from repo with every tag that
// points at it. Its bytes stay until garbage collection finds nothing
// referencing them.
func (r *Repos) DeleteManifest(ctx context.Context, repo, digest string) error {
	if !r.deletes.Manifests {
		return fmt.Errorf("%w: deleting manifests is turned off on this registry (allowDelete)", ErrDeleteDisabled)
	}
	if err := r.writable(repo); err != nil {
		return err
	}
	subject := r.subjectOf(ctx, digest)
	tags, err := r.meta.DeleteManifest(ctx, repo, digest, subject)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s@%s", ErrManifestUnknown, repo, digest)
	}
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "deleted manifest", "repo", repo, "digest", digest, "tags", tags)
	return nil
}

// subjectOf reads the subject of stored manifest digest ("" when it has
// none or cannot be read).
func (r *Repos) subjectOf(ctx context.Context, digest string) string {
	f, _, err := r.blobs.Open(ctx, digest)
	if err != nil {
		return ""
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return ""
	}
	m, err := manifest.Parse("", body)
	if err != nil || m.Subject == nil {
		return ""
	}
	return m.Subject.Digest
}

// DeleteTag deletes a tag of repo; the manifest stays.
func (r *Repos) DeleteTag(ctx context.Context, repo, tag string) error {
	if !r.deletes.Tags {
		return fmt.Errorf("%w: deleting tags is turned off on this registry (allowDelete)", ErrDeleteDisabled)
	}
	if err := r.writable(repo); err != nil {
		return err
	}
	if err := r.meta.DeleteTag(ctx, repo, tag); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s:%s", ErrManifestUnknown, repo, tag)
	} else if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "deleted tag", "repo", repo, "tag", tag)
	return nil
}

// DeleteBlob unlinks blob digest from repo; its bytes stay until garbage
// collection finds nothing referencing them.
func (r *Repos) DeleteBlob(ctx context.Context, repo, digest string) error {
	if !r.deletes.Blobs {
		return fmt.Errorf("%w: deleting blobs is turned off on this registry (allowDelete)", ErrDeleteDisabled)
	}
	if err := r.writable(repo); err != nil {
		return err
	}
	l, err := r.meta.Linked(ctx, repo, digest)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s@%s", ErrBlobUnknown, repo, digest)
	}
	if err != nil {
		return err
	}
	if l.MediaType != "" {
		return fmt.Errorf("%w: %s@%s is a manifest; delete it with DELETE /v2/%s/manifests/%s", ErrBlobUnknown, repo, digest, repo, digest)
	}
	if err := r.meta.Unlink(ctx, repo, digest); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "deleted blob", "repo", repo, "digest", digest)
	return nil
}
