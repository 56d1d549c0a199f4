package storage

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseDigest: ParseDigest accepts exactly "sha256:" followed by 64
// lowercase hex characters, returns those 64 characters, and refuses
// everything else with ErrInvalidDigest. The digest names a file under the
// blob root, so anything else accepted (a '/', "..", an uppercase twin of
// a stored digest) would be a path or an alias into the store.
func FuzzParseDigest(f *testing.F) {
	valid := digestOf([]byte("x"))
	f.Add(valid)
	f.Add(digestOf(nil))
	f.Add("sha256:" + strings.Repeat("0", 64))
	for _, c := range invalidDigests(valid) {
		f.Add(c.digest)
	}
	f.Add("sha256:../../../../etc/passwd" + strings.Repeat("a", 35))
	f.Add("sha512:" + strings.Repeat("a", 128))
	f.Fuzz(func(t *testing.T, s string) {
		hexPart, err := ParseDigest(s)
		want := isSHA256Digest(s)
		switch {
		case want && err != nil:
			t.Fatalf("ParseDigest(%q) refused a valid digest: %v", s, err)
		case !want && err == nil:
			t.Fatalf("ParseDigest(%q) = %q, accepted an invalid digest", s, hexPart)
		case err != nil && !errors.Is(err, ErrInvalidDigest):
			t.Fatalf("ParseDigest(%q): %v, not ErrInvalidDigest", s, err)
		case err == nil && hexPart != s[len("sha256:"):]:
			t.Fatalf("ParseDigest(%q) = %q, want the 64 hex characters after sha256:", s, hexPart)
		}
		if err == nil {
			b := &Blobs{root: "/root-of-store"}
			p, perr := b.path(s)
			if perr != nil || p != "/root-of-store/sha256/"+hexPart[:2]+"/"+hexPart {
				t.Fatalf("path(%q) = %q, %v; want the file under the store's sha256 directory", s, p, perr)
			}
		}
	})
}

// isSHA256Digest is the digest grammar written out byte by byte, the
// reference FuzzParseDigest holds ParseDigest (a regular expression) to.
func isSHA256Digest(s string) bool {
	const prefix = "sha256:"
	if len(s) != len(prefix)+64 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
