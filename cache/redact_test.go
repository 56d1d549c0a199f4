package cache

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSignedURLQueryIsNotLogged: an upstream redirects the blob download to
// a pre-signed URL whose query carries credentials (as S3 and CDN-backed
// registries do); when that download fails, neither the error returned nor
// the log names the query, while both still say which URL failed.
func TestSignedURLQueryIsNotLogged(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, _ := layerOf(t, img)
	const signature = "c2lnbmF0dXJlLXRoYXQtaXMtYS1zZWNyZXQ"
	// The storage behind the redirect drops every connection.
	var downloads atomic.Int64
	storageServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.Add(1)
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(storageServer.Close)
	signed := storageServer.URL + "/layers/" + strings.TrimPrefix(digest, "sha256:") +
		"?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=" + signature
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
			return false
		}
		http.Redirect(w, r, signed, http.StatusTemporaryRedirect)
		return true
	})

	_, err := f.puller.Blob(t.Context(), "hub/app", digest)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("download from the redirect target failed: err = %v, want ErrUnavailable", err)
	}
	f.puller.Close() // the fill has logged its failure
	if downloads.Load() == 0 {
		t.Fatal("the redirect to the signed URL was not followed")
	}
	logs := f.logs.String()
	for what, text := range map[string]string{"error": err.Error(), "log": logs} {
		if strings.Contains(text, signature) || strings.Contains(text, "AKIAEXAMPLE") {
			t.Errorf("the %s shows the signed URL's query:\n%s", what, text)
		}
		if !strings.Contains(text, storageServer.URL+"/layers/") {
			t.Errorf("the %s does not name the URL that failed:\n%s", what, text)
		}
	}
}
