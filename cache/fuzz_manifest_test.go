package cache

import (
	"encoding/json"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// manifestSeedDir holds real and hostile manifests: the seed corpus of every
// fuzz target that parses manifests. A new one (validation of pushed
// manifests, for example) starts with addManifestSeeds(f), or reads this
// directory from its own package.
const manifestSeedDir = "testdata/manifests"

// addManifestSeeds adds every file of manifestSeedDir to f's corpus.
func addManifestSeeds(f *testing.F) {
	f.Helper()
	entries, err := os.ReadDir(manifestSeedDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(manifestSeedDir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if len(entries) == 0 {
		f.Fatalf("no manifests in %s", manifestSeedDir)
	}
}

// Media types a manifest without a usable top-level mediaType is given.
const (
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociIndex    = "application/vnd.oci.image.index.v1+json"
)

// FuzzSniffMediaType: the media type regcache records (and later serves as
// Content-Type) for a manifest whose upstream sent none is always one media
// type with no parameters; it is the manifest's own top-level mediaType
// when that is one, and never one read from a descriptor nested inside
// (the config's, a layer's).
func FuzzSniffMediaType(f *testing.F) {
	addManifestSeeds(f)
	f.Add([]byte(`{"mediaType":"application/vnd.oci.image.manifest.v1+json"`))
	f.Add([]byte(`"mediaType"`))
	f.Add([]byte(`{"mediaType":"a"}`))
	f.Add([]byte(`[{"mediaType":"application/x"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := sniffMediaType(b)
		mt, params, err := mime.ParseMediaType(got)
		if err != nil || len(params) != 0 || mt != strings.ToLower(got) || strings.Count(got, "/") != 1 {
			t.Fatalf("sniffMediaType(%q) = %q: not one media type without parameters (%v)", b, got, err)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) != nil {
			return
		}
		var own string
		if raw, ok := top["mediaType"]; ok && json.Unmarshal(raw, &own) == nil && own != "" {
			if refMediaType(own) {
				if got != own {
					t.Fatalf("sniffMediaType(%q) = %q, want its own mediaType %q", b, got, own)
				}
				return
			}
		}
		want := ociManifest
		if _, ok := top["manifests"]; ok {
			want = ociIndex
		}
		if got != want {
			t.Fatalf("sniffMediaType(%q) = %q; a manifest without a usable top-level mediaType is %q", b, got, want)
		}
	})
}

// refMediaType is RFC 6838's media type name (type "/" subtype, each 1-127
// of [A-Za-z0-9!#$&^_.+-] starting with a letter or digit), written out by
// hand.
func refMediaType(s string) bool {
	typ, sub, ok := strings.Cut(s, "/")
	return ok && restrictedName(typ) && restrictedName(sub)
}

func restrictedName(s string) bool {
	if len(s) == 0 || len(s) > 127 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && (i == 0 || !strings.ContainsRune("!#$&^_.+-", rune(c))) {
			return false
		}
	}
	return true
}
