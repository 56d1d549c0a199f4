package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
)

func TestParsePath(t *testing.T) {
	t.Parallel()
	const digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	tag128 := "a" + strings.Repeat("b", 127)
	tag129 := tag128 + "c"
	tests := []struct {
		name    string
		path    string
		want    ociPath
		wantErr error
	}{
		{name: "base with slash", path: "/v2/", want: ociPath{kind: kindBase}},
		{name: "base without slash", path: "/v2", want: ociPath{kind: kindBase}},

		{name: "manifest by tag", path: "/v2/ubuntu/manifests/24.04", want: ociPath{kind: kindManifest, name: "ubuntu", ref: "24.04"}},
		{name: "manifest by tag multi-segment name", path: "/v2/a/b/c/manifests/latest", want: ociPath{kind: kindManifest, name: "a/b/c", ref: "latest"}},
		{name: "manifest by digest multi-segment name", path: "/v2/a/b/c/manifests/" + digest, want: ociPath{kind: kindManifest, name: "a/b/c", ref: digest}},
		{name: "manifest tag of 128 characters", path: "/v2/a/manifests/" + tag128, want: ociPath{kind: kindManifest, name: "a", ref: tag128}},
		{name: "manifest tag with underscore first", path: "/v2/a/manifests/_x.Y-1", want: ociPath{kind: kindManifest, name: "a", ref: "_x.Y-1"}},
		{name: "name with manifests segment", path: "/v2/x/manifests/y/manifests/latest", want: ociPath{kind: kindManifest, name: "x/manifests/y", ref: "latest"}},
		{name: "name with blobs segment, manifest", path: "/v2/x/blobs/y/manifests/latest", want: ociPath{kind: kindManifest, name: "x/blobs/y", ref: "latest"}},
		{name: "name with tags segment, manifest", path: "/v2/x/tags/list/manifests/latest", want: ociPath{kind: kindManifest, name: "x/tags/list", ref: "latest"}},
		{name: "name named manifests", path: "/v2/manifests/manifests/v1", want: ociPath{kind: kindManifest, name: "manifests", ref: "v1"}},

		{name: "blob", path: "/v2/a/b/blobs/" + digest, want: ociPath{kind: kindBlob, name: "a/b", ref: digest}},
		{name: "name with blobs segment, blob", path: "/v2/x/blobs/y/blobs/" + digest, want: ociPath{kind: kindBlob, name: "x/blobs/y", ref: digest}},
		{name: "name with manifests segment, blob", path: "/v2/x/manifests/y/blobs/" + digest, want: ociPath{kind: kindBlob, name: "x/manifests/y", ref: digest}},
		{name: "name with blobs/uploads segments, manifest", path: "/v2/x/blobs/uploads/y/manifests/latest", want: ociPath{kind: kindManifest, name: "x/blobs/uploads/y", ref: "latest"}},
		{name: "name with uploads-like segment, manifest", path: "/v2/x/blobs/uploadsy/manifests/latest", want: ociPath{kind: kindManifest, name: "x/blobs/uploadsy", ref: "latest"}},

		{name: "tags list", path: "/v2/a/b/tags/list", want: ociPath{kind: kindTags, name: "a/b"}},
		{name: "tags list of a name with manifests segment", path: "/v2/x/manifests/tags/list", want: ociPath{kind: kindTags, name: "x/manifests"}},

		{name: "upload start", path: "/v2/a/b/blobs/uploads/", want: ociPath{kind: kindUpload, name: "a/b"}},
		{name: "upload start without slash", path: "/v2/a/blobs/uploads", want: ociPath{kind: kindUpload, name: "a"}},
		{name: "upload session", path: "/v2/a/blobs/uploads/3f1c-uuid", want: ociPath{kind: kindUpload, name: "a", ref: "3f1c-uuid"}},
		{name: "catalog", path: "/v2/_catalog", want: ociPath{kind: kindCatalog}},

		{name: "referrers", path: "/v2/a/referrers/" + digest, want: ociPath{kind: kindReferrer, name: "a", ref: digest}},

		{name: "uppercase name", path: "/v2/Ubuntu/manifests/latest", wantErr: cache.ErrNameInvalid},
		{name: "trailing slash in name", path: "/v2/ubuntu//manifests/latest", wantErr: cache.ErrNameInvalid},
		{name: "double slash in name", path: "/v2/a//b/manifests/latest", wantErr: cache.ErrNameInvalid},
		{name: "leading separator in name", path: "/v2/-a/tags/list", wantErr: cache.ErrNameInvalid},
		{name: "uppercase name on blob", path: "/v2/A/blobs/" + digest, wantErr: cache.ErrNameInvalid},
		{name: "empty name on tags", path: "/v2//tags/list", wantErr: cache.ErrNameInvalid},

		{name: "tag of 129 characters", path: "/v2/a/manifests/" + tag129, wantErr: errTagInvalid},
		{name: "tag with leading dot", path: "/v2/a/manifests/.hidden", wantErr: errTagInvalid},
		{name: "tag with leading dash", path: "/v2/a/manifests/-x", wantErr: errTagInvalid},
		{name: "empty tag", path: "/v2/a/manifests/", wantErr: errTagInvalid},

		{name: "short manifest digest", path: "/v2/a/manifests/sha256:short", wantErr: errDigestInvalid},
		{name: "md5 manifest digest", path: "/v2/a/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", wantErr: errDigestInvalid},
		{name: "short blob digest", path: "/v2/a/blobs/sha256:short", wantErr: errDigestInvalid},
		{name: "md5 blob digest", path: "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", wantErr: errDigestInvalid},
		{name: "uppercase hex blob digest", path: "/v2/a/blobs/" + strings.ToUpper(digest), wantErr: errDigestInvalid},
		{name: "tag where a blob digest belongs", path: "/v2/a/blobs/latest", wantErr: errDigestInvalid},
		{name: "referrers without digest", path: "/v2/a/referrers/latest", wantErr: errDigestInvalid},

		{name: "other API version", path: "/v3/", wantErr: errNotFound},
		{name: "prefix only", path: "/v2x", wantErr: errNotFound},
		{name: "root", path: "/", wantErr: errNotFound},
		{name: "name without endpoint", path: "/v2/ubuntu", wantErr: errNotFound},
		{name: "unknown endpoint", path: "/v2/ubuntu/catalog/x", wantErr: errNotFound},
		{name: "manifests without name", path: "/v2/manifests/latest", wantErr: errNotFound},
		{name: "tags without list", path: "/v2/a/tags", wantErr: errNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parsePath(tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("parsePath(%q) = %+v, %v; want error %v", tt.path, got, err, tt.wantErr)
				}
				// Every parse error must map to a client error, never a 500.
				if _, status := codeOf(err); status >= 500 {
					t.Errorf("parsePath(%q) error %v maps to status %d", tt.path, err, status)
				}
				return
			}
			if err != nil {
				t.Fatalf("parsePath(%q) error: %v", tt.path, err)
			}
			if got != tt.want {
				t.Errorf("parsePath(%q) = %+v, want %+v", tt.path, got, tt.want)
			}
		})
	}
}
