package archive

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// Media types of the manifests built for docker save images: OCI, with
// the uncompressed layers docker save writes.
const (
	ociConfig       = "application/vnd.oci.image.config.v1+json"
	ociUncompressed = "application/vnd.oci.image.layer.v1.tar"
)

// assembleDocker builds an OCI manifest for each image of a docker save
// archive (which holds configs and uncompressed layers, not the manifests
// a registry had): the config's digest is its name, each layer must hash
// to the diff_id the config lists at its position.
func (s *session) assembleDocker(opts ImportOptions) error {
	var entries []struct {
		Config   string   `json:"Config"`
		RepoTags []string `json:"RepoTags"`
		Layers   []string `json:"Layers"`
	}
	if err := json.Unmarshal(s.files["manifest.json"], &entries); err != nil {
		return fmt.Errorf("%w: manifest.json: %v", ErrInvalid, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("%w: manifest.json lists no image", ErrInvalid)
	}
	now := s.im.now()
	for i, e := range entries {
		what := fmt.Sprintf("manifest.json entry %d (%s)", i, strings.Join(e.RepoTags, ", "))
		cfgDigest := "sha256:" + strings.TrimSuffix(path.Base(e.Config), ".json")
		if _, err := storage.ParseDigest(cfgDigest); err != nil {
			return fmt.Errorf("%w: %s: config %q is not named by its digest", ErrInvalid, what, e.Config)
		}
		raw, err := s.readBlob(cfgDigest)
		if err != nil {
			return fmt.Errorf("%s: config: %w", what, err)
		}
		var cfg struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return fmt.Errorf("%w: %s: config %s: %v", ErrInvalid, what, cfgDigest, err)
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return fmt.Errorf("%w: %s: %d layers, its config lists %d diff_ids", ErrInvalid, what, len(e.Layers), len(cfg.RootFS.DiffIDs))
		}
		m := manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIManifest,
			Config: &manifest.Descriptor{MediaType: ociConfig, Digest: cfgDigest, Size: int64(len(raw))}}
		for j, lp := range e.Layers {
			d, err := s.layerDigest(lp)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if d != cfg.RootFS.DiffIDs[j] {
				return fmt.Errorf("%w: %s: layer %s hashes to %s, its config lists diff_id %s", ErrInvalid, what, lp, d, cfg.RootFS.DiffIDs[j])
			}
			n, _ := s.size(d)
			m.Layers = append(m.Layers, manifest.Descriptor{MediaType: ociUncompressed, Digest: d, Size: n})
		}
		body, err := json.Marshal(m)
		if err != nil {
			return err
		}
		digest, err := s.put(body)
		if err != nil {
			return err
		}
		desc := manifest.Descriptor{MediaType: manifest.OCIManifest, Digest: digest, Size: int64(len(body))}
		tags := e.RepoTags
		if len(tags) == 0 {
			if opts.To == "" {
				return fmt.Errorf("%w: %s has no repository and tag (it was saved by image ID): give one with --to", ErrInvalid, what)
			}
			tags = []string{""}
		}
		for _, rt := range tags {
			repo, tag := "", ""
			if rt != "" {
				repo, tag = dockerName(rt)
			}
			if repo, err = withPrefix(repo, opts.To); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
			}
			if tag != "" && !cache.ValidTag(tag) {
				return fmt.Errorf("%w: %s: tag %q is not valid", ErrInvalid, what, tag)
			}
			if err := s.walk(repo, desc, 0); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			img := s.image(repo)
			if tag != "" {
				img.Tags = append(img.Tags, storage.Tag{Name: tag, Digest: digest, FetchedAt: now})
			}
			s.rep.Images = append(s.rep.Images, Imported{Repository: repo, Tag: tag, Digest: digest})
		}
	}
	return nil
}

// layerDigest returns the digest of the layer at path p of the archive,
// following links.
func (s *session) layerDigest(p string) (string, error) {
	p = cleanName(p)
	for range 16 {
		if d, ok := s.layers[p]; ok {
			return d, nil
		}
		if hexPart, ok := strings.CutPrefix(p, "blobs/sha256/"); ok {
			return "sha256:" + hexPart, nil
		}
		next, ok := s.links[p]
		if !ok {
			break
		}
		p = next
	}
	return "", fmt.Errorf("%w: layer %s is not in the archive", ErrInvalid, p)
}

// put stages bytes built here (a manifest) as a blob.
func (s *session) put(b []byte) (string, error) {
	w, err := s.im.blobs.CreateUnknown(s.ctx, int64(len(b)))
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b); err != nil {
		w.Cancel()
		return "", err
	}
	digest := w.Digest()
	s.protect(digest)
	if _, ok := s.staged[digest]; ok {
		w.Cancel()
		return digest, nil
	}
	if _, ok := s.size(digest); ok {
		w.Cancel()
		return digest, nil
	}
	st, err := w.Stage(digest)
	if err != nil {
		return "", err
	}
	s.staged[digest] = st
	return digest, nil
}
