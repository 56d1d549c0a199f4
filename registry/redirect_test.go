package registry_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
)

// redirectBody is a stored blob's body that can name a presigned URL, as
// storage/s3's bodies do with redirects on (ok) or off.
type redirectBody struct {
	*bytes.Reader
	url    string
	ok     bool
	closed bool
}

func (b *redirectBody) Close() error { b.closed = true; return nil }

func (b *redirectBody) Redirect(context.Context) (string, bool, error) { return b.url, b.ok, nil }

// redirecting serves every blob from a redirectBody.
type redirecting struct {
	registry.Backend
	ok bool
}

func (b *redirecting) Route(_ context.Context, name, _ string) (string, error) { return name, nil }

func (b *redirecting) Blob(_ context.Context, _, digest string) (cache.Content, error) {
	body := []byte("the blob's bytes")
	return cache.Content{Body: &redirectBody{Reader: bytes.NewReader(body), url: "http://bucket.example/k?X-Amz-Signature=s3cr3tsig", ok: b.ok},
		Size: int64(len(body)), Digest: digest}, nil
}

// A blob GET whose body offers a redirect answers 307 to its URL, with
// the digest, and logs no part of the URL; without one (redirects off)
// the bytes are served.
func TestBlobRedirect(t *testing.T) {
	t.Parallel()
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, on := range []bool{true, false} {
		logs := &syncBuffer{}
		s := newStack(t, stackConfig{logs: logs, backend: func(b registry.Backend) registry.Backend { return &redirecting{Backend: b, ok: on} }})
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get(s.url + "/v2/app/blobs/" + digest)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !on {
			if resp.StatusCode != http.StatusOK || string(body) != "the blob's bytes" {
				t.Errorf("redirects off: %d %q, want the bytes", resp.StatusCode, body)
			}
			continue
		}
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "http://bucket.example/k?X-Amz-Signature=s3cr3tsig" ||
			resp.Header.Get("Docker-Content-Digest") != digest {
			t.Errorf("redirects on: %d, Location %q, digest %q; want 307 to the presigned URL", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Docker-Content-Digest"))
		}
		if strings.Contains(logs.String(), "s3cr3tsig") || strings.Contains(logs.String(), "bucket.example") {
			t.Errorf("the log holds the presigned URL:\n%s", logs.String())
		}
	}
}
