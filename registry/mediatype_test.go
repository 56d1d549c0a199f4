package registry_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/cache"
)

// noContentType is a small proxy in front of a real registry that drops the
// Content-Type of every response, as a careless upstream (a static file
// server, a hand-made mirror) does.
type noContentType struct{ next http.Handler }

func (p noContentType) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.next.ServeHTTP(dropContentType{w}, r)
}

type dropContentType struct{ http.ResponseWriter }

// WriteHeader sends no Content-Type: a nil value also keeps net/http from
// sniffing one.
func (d dropContentType) WriteHeader(code int) {
	d.Header()["Content-Type"] = nil
	d.ResponseWriter.WriteHeader(code)
}

func (d dropContentType) Write(b []byte) (int, error) {
	d.Header()["Content-Type"] = nil
	return d.ResponseWriter.Write(b)
}

// A manifest the upstream sends without Content-Type is served with its own
// top-level mediaType, or the type its shape says (an index has
// "manifests"): never the media type of its config or of a descriptor
// inside it, and never anything that is not a media type.
func TestManifestMediaTypeWithoutContentType(t *testing.T) {
	t.Parallel()
	real := newUpstream(t)
	up := httptest.NewServer(noContentType{real.Config.Handler})
	t.Cleanup(up.Close)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, real, "library/app:v1", img)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	child, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	desc := func(mt, digest string) string {
		return `{"mediaType":"` + mt + `","size":1,"digest":"` + digest + `"}`
	}
	manifests := []struct {
		name, body, want string
	}{
		{"no top-level mediaType", `{"schemaVersion":2,"config":` + desc("application/vnd.oci.image.config.v1+json", cfg.String()) +
			`,"layers":[` + desc("application/vnd.oci.image.layer.v1.tar", layer.String()) + `]}`, string(types.OCIManifestSchema1)},
		{"index without mediaType", `{"schemaVersion":2,"manifests":[` + desc(string(types.DockerManifestSchema2), child.String()) + `]}`, string(types.OCIImageIndex)},
		{"top-level mediaType after the config", `{"schemaVersion":2,"config":` + desc("application/vnd.oci.image.config.v1+json", cfg.String()) +
			`,"layers":[],"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}`, string(types.DockerManifestSchema2)},
		{"escaped slash", `{"schemaVersion":2,"mediaType":"application\/vnd.oci.image.manifest.v1+json","layers":[]}`, string(types.OCIManifestSchema1)},
		{"not a media type", `{"schemaVersion":2,"mediaType":"text/html\r\nX-Injected: 1","layers":[]}`, string(types.OCIManifestSchema1)},
	}
	for i, m := range manifests {
		tag := "m" + string(rune('0'+i))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, real.URL+"/v2/library/app/manifests/"+tag, strings.NewReader(m.body))
		req.Header.Set("Content-Type", m.want)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("push %s: %v %v", m.name, err, resp)
		}
		resp.Body.Close()
	}
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
	for i, m := range manifests {
		t.Run(m.name, func(t *testing.T) {
			tag := "m" + string(rune('0'+i))
			resp, body := do(t, "GET", s.url+"/v2/hub/app/manifests/"+tag, nil, nil)
			if resp.StatusCode != http.StatusOK || string(body) != m.body {
				t.Fatalf("GET %s: %s %q", tag, resp.Status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != m.want {
				t.Errorf("Content-Type %q, want %q", got, m.want)
			}
		})
	}
}
