package manifest

import (
	"errors"
	"strings"
	"testing"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestParse(t *testing.T) {
	t.Parallel()
	image := `{"schemaVersion":2,"mediaType":"` + OCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d1 + `","size":2},"layers":[{"mediaType":"l","digest":"` + d2 + `","size":3}]}`
	for _, tc := range []struct {
		name, contentType, body string
		wantType, wantErr       string // wantErr: a substring of the error
	}{
		{"oci image", OCIManifest, image, OCIManifest, ""},
		{"content type with parameters", OCIManifest + "; charset=utf-8", image, OCIManifest, ""},
		{"no media type anywhere: inferred image", "", `{"schemaVersion":2,"config":{"mediaType":"c","digest":"` + d1 + `","size":2}}`, OCIManifest, ""},
		{"no field: from Content-Type", DockerManifest, `{"schemaVersion":2,"config":{"mediaType":"c","digest":"` + d1 + `","size":2}}`, DockerManifest, ""},
		{"inferred index", "", `{"schemaVersion":2,"manifests":[]}`, OCIIndex, ""},
		{"docker list", DockerList, `{"schemaVersion":2,"mediaType":"` + DockerList + `","manifests":[{"mediaType":"` + DockerManifest + `","digest":"` + d1 + `","size":5,"platform":{"architecture":"amd64","os":"linux"}}]}`, DockerList, ""},
		{"header disagrees", OCIIndex, image, "", "differs from the Content-Type"},
		{"not json", OCIManifest, "blablabla", "", "not a JSON manifest"},
		{"schema 1", "", `{"schemaVersion":1,"name":"x"}`, "", "schemaVersion 1"},
		{"unknown media type", "", `{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}`, "", "want one of"},
		{"bad layer digest", OCIManifest, strings.Replace(image, d2, "sha256:abc", 1), "", "layers[0].digest"},
		{"image without config", OCIManifest, `{"schemaVersion":2,"layers":[]}`, "", "needs a config"},
		{"index with layers", OCIIndex, `{"schemaVersion":2,"manifests":[],"layers":[]}`, "", "not config or layers"},
		{"negative size", OCIManifest, strings.Replace(image, `"size":3`, `"size":-1`, 1), "", "must not be negative"},
		{"bad subject", OCIManifest, strings.TrimSuffix(image, "}") + `,"subject":{"mediaType":"m","digest":"sha512:x","size":1}}`, "", "subject.digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := Parse(tc.contentType, []byte(tc.body))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse = %v, want ErrInvalid with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || m.MediaType != tc.wantType {
				t.Fatalf("Parse = %+v, %v; want media type %s", m, err, tc.wantType)
			}
		})
	}
}

func TestArtifactType(t *testing.T) {
	t.Parallel()
	m, err := Parse(OCIManifest, []byte(`{"schemaVersion":2,"config":{"mediaType":"application/x-sig","digest":"`+d1+`","size":2},"subject":{"mediaType":"`+OCIManifest+`","digest":"`+d2+`","size":9}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.EffectiveArtifactType(); got != "application/x-sig" {
		t.Errorf("artifact type from config = %q", got)
	}
	m.ArtifactType = "application/x-explicit"
	if got := m.EffectiveArtifactType(); got != "application/x-explicit" {
		t.Errorf("artifact type field = %q", got)
	}
	if len(m.Blobs()) != 1 || m.Subject.Digest != d2 {
		t.Errorf("blobs %v, subject %v", m.Blobs(), m.Subject)
	}
	if !Foreign(Descriptor{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", URLs: []string{"https://x"}}) || Foreign(Descriptor{MediaType: "l"}) {
		t.Error("Foreign")
	}
}
