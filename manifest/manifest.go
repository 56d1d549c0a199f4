// Package manifest parses the manifests regcache stores and serves (OCI
// image manifests and indexes, Docker schema 2 manifests and manifest
// lists): the descriptors they reference, their subject and artifact type.
// It holds no state; local repositories validate pushes with it, and the
// puller reads children and referrers with it.
package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/regcache/regcache/storage"
)

// Media types of the manifests regcache accepts.
const (
	OCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	OCIIndex       = "application/vnd.oci.image.index.v1+json"
	DockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	DockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// MaxSize is the largest manifest accepted (the distribution spec asks
// registries to accept at least 4 MiB).
const MaxSize = 4 << 20

// ErrInvalid reports a body that is not a manifest regcache accepts.
var ErrInvalid = errors.New("invalid manifest")

// Types lists the accepted media types, for messages.
var Types = []string{OCIManifest, OCIIndex, DockerManifest, DockerList}

// Known reports whether mediaType is one of Types.
func Known(mediaType string) bool {
	for _, t := range Types {
		if t == mediaType {
			return true
		}
	}
	return false
}

// IsIndex reports whether mediaType lists other manifests.
func IsIndex(mediaType string) bool { return mediaType == OCIIndex || mediaType == DockerList }

// Platform is the platform of an index entry.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Descriptor points at a blob or manifest.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// Manifest is the part of a manifest or index that regcache reads.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config,omitempty"`
	Layers        []Descriptor      `json:"layers,omitempty"`
	Manifests     []Descriptor      `json:"manifests,omitempty"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Parse reads body as a manifest sent with the given Content-Type ("" when
// none) and checks its structure: a known media type (from the body, else
// the Content-Type, else inferred from the fields), which the body and
// the header agree on, and well-formed descriptors.
func Parse(contentType string, body []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("%w: not a JSON manifest: %v", ErrInvalid, err)
	}
	header := ""
	if contentType != "" {
		if mt, _, err := mime.ParseMediaType(contentType); err == nil {
			header = mt
		}
	}
	if m.SchemaVersion != 2 {
		return m, fmt.Errorf("%w: schemaVersion %d: only schema version 2 manifests (%s) are accepted", ErrInvalid, m.SchemaVersion, strings.Join(Types, ", "))
	}
	switch {
	case m.MediaType != "" && header != "" && m.MediaType != header && Known(header):
		return m, fmt.Errorf("%w: the body's mediaType %s differs from the Content-Type %s", ErrInvalid, m.MediaType, header)
	case m.MediaType == "" && Known(header):
		m.MediaType = header
	case m.MediaType == "" && m.Manifests != nil:
		m.MediaType = OCIIndex
	case m.MediaType == "" && m.Config != nil:
		m.MediaType = OCIManifest
	}
	if !Known(m.MediaType) {
		return m, fmt.Errorf("%w: media type %q: want one of %s", ErrInvalid, m.MediaType, strings.Join(Types, ", "))
	}
	if IsIndex(m.MediaType) {
		if m.Config != nil || m.Layers != nil {
			return m, fmt.Errorf("%w: an index (%s) has manifests, not config or layers", ErrInvalid, m.MediaType)
		}
		for i, d := range m.Manifests {
			if err := checkDescriptor(d, fmt.Sprintf("manifests[%d]", i)); err != nil {
				return m, err
			}
		}
	} else {
		if m.Config == nil {
			return m, fmt.Errorf("%w: an image manifest (%s) needs a config descriptor", ErrInvalid, m.MediaType)
		}
		if m.Manifests != nil {
			return m, fmt.Errorf("%w: an image manifest (%s) has config and layers, not manifests", ErrInvalid, m.MediaType)
		}
		if err := checkDescriptor(*m.Config, "config"); err != nil {
			return m, err
		}
		for i, d := range m.Layers {
			if err := checkDescriptor(d, fmt.Sprintf("layers[%d]", i)); err != nil {
				return m, err
			}
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject, "subject"); err != nil {
			return m, err
		}
	}
	return m, nil
}

func checkDescriptor(d Descriptor, field string) error {
	if _, err := storage.ParseDigest(d.Digest); err != nil {
		return fmt.Errorf("%w: %s.digest: %v", ErrInvalid, field, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: %s.size %d: must not be negative", ErrInvalid, field, d.Size)
	}
	if d.MediaType == "" {
		return fmt.Errorf("%w: %s.mediaType: required", ErrInvalid, field)
	}
	return nil
}

// Blobs returns the blobs an image manifest references: config, then
// layers (none for an index).
func (m Manifest) Blobs() []Descriptor {
	if m.Config == nil {
		return nil
	}
	return append([]Descriptor{*m.Config}, m.Layers...)
}

// Foreign reports whether a layer may live outside the registry
// (non-distributable layers with URLs), so a push need not upload it.
func Foreign(d Descriptor) bool {
	return len(d.URLs) > 0 && (strings.Contains(d.MediaType, "foreign") || strings.Contains(d.MediaType, "nondistributable"))
}

// EffectiveArtifactType is the artifact type the referrers API lists: the
// artifactType field, else (for an image manifest) the config media type.
func (m Manifest) EffectiveArtifactType() string {
	if m.ArtifactType != "" || m.Config == nil {
		return m.ArtifactType
	}
	return m.Config.MediaType
}
