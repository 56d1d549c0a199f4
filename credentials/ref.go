package credentials

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/regcache/regcache/cache"
)

// Reference schemes.
const (
	SchemeVault = "vault"
	SchemeFile  = "file"
	SchemeEnv   = "env"
)

// acceptedForms is quoted by every reference parse error.
const acceptedForms = "vault://<mount>/<path>#<field> (HashiCorp Vault KV v2, e.g. vault://secret/regcache/dockerhub#password), " +
	"file:///<absolute path> (e.g. file:///run/secrets/dockerhub-password) or env://<NAME> (e.g. env://REGCACHE_SECRET_DOCKERHUB_TOKEN)"

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// A Vault path segment: no spaces, no '#', '?' or '*' (which policies
	// treat as globs).
	vaultSegmentRE = regexp.MustCompile(`^[A-Za-z0-9._@=+,:-]+$`)
	vaultFieldRE   = regexp.MustCompile(`^[^\s#?]+$`)
)

// Ref is a parsed secret reference. It never holds a secret value.
type Ref struct {
	// Scheme is vault, file or env.
	Scheme string
	// Mount, Path and Field locate a Vault KV v2 secret field: the secret
	// is read at <Mount>/data/<Path>.
	Mount, Path, Field string
	// File is the absolute path of a file reference.
	File string
	// Env is the variable name of an environment reference.
	Env string
}

// ParseRef parses a secret reference given for field (usernameSecretIdentifier
// or passwordSecretIdentifier). A reference that does not parse is a
// *cache.FieldError naming the accepted forms. The value is echoed only when
// it starts with a known scheme: anything else may be a secret pasted where
// its reference belongs, and must not be repeated in responses and logs.
func ParseRef(field, s string) (Ref, error) {
	bad := func(reason string) error {
		v := s
		if !strings.HasPrefix(v, SchemeVault+"://") && !strings.HasPrefix(v, SchemeFile+"://") && !strings.HasPrefix(v, SchemeEnv+"://") {
			v = "(not shown: not a secret reference, and it may be a secret)"
		}
		return &cache.FieldError{Field: field, Value: v, Reason: reason + "; accepted forms: " + acceptedForms}
	}
	if s == "" {
		return Ref{}, bad("required")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Ref{}, bad("not a secret reference: give a reference to the secret, never the secret itself")
	}
	switch scheme {
	case SchemeVault:
		loc, field, ok := strings.Cut(rest, "#")
		if !ok || field == "" {
			return Ref{}, bad("a vault reference names the field of the KV v2 secret after '#'")
		}
		if !vaultFieldRE.MatchString(field) {
			return Ref{}, bad(fmt.Sprintf("field %q must not contain spaces, '#' or '?'", field))
		}
		segs := strings.Split(loc, "/")
		if len(segs) < 2 {
			return Ref{}, bad("a vault reference needs a mount and a secret path, e.g. vault://secret/dockerhub#password")
		}
		for _, seg := range segs {
			if seg == "" || seg == "." || seg == ".." || !vaultSegmentRE.MatchString(seg) {
				return Ref{}, bad(fmt.Sprintf("path segment %q: segments are non-empty letters, digits and ._@=+,:- (no '*' or '?')", seg))
			}
		}
		if segs[1] == "data" || segs[1] == "metadata" {
			return Ref{}, bad(fmt.Sprintf("give the secret path without %q: regcache reads KV v2 secrets at <mount>/data/<path> itself, e.g. vault://%s/%s#%s",
				segs[1], segs[0], strings.Join(segs[2:], "/"), field))
		}
		return Ref{Scheme: SchemeVault, Mount: segs[0], Path: strings.Join(segs[1:], "/"), Field: field}, nil
	case SchemeFile:
		if !strings.HasPrefix(rest, "/") {
			return Ref{}, bad("a file reference needs an absolute path: file:// followed by /path, e.g. file:///run/secrets/password")
		}
		if strings.ContainsAny(rest, "?#") {
			return Ref{}, bad("a file path must not contain '?' or '#'")
		}
		if path.Clean(rest) != rest {
			return Ref{}, bad(fmt.Sprintf("the path is not clean (did you mean file://%s?)", path.Clean(rest)))
		}
		return Ref{Scheme: SchemeFile, File: rest}, nil
	case SchemeEnv:
		if !envNameRE.MatchString(rest) {
			return Ref{}, bad("an environment variable name is letters, digits and '_', not starting with a digit")
		}
		return Ref{Scheme: SchemeEnv, Env: rest}, nil
	}
	return Ref{}, bad(fmt.Sprintf("unknown scheme %q", scheme))
}

// String returns the reference in its canonical form.
func (r Ref) String() string {
	switch r.Scheme {
	case SchemeVault:
		return "vault://" + r.Mount + "/" + r.Path + "#" + r.Field
	case SchemeFile:
		return "file://" + r.File
	case SchemeEnv:
		return "env://" + r.Env
	}
	return ""
}

// KVDataPath is the Vault API path a vault reference is read at
// (<mount>/data/<path>), which is also the path its policy grants.
func (r Ref) KVDataPath() string { return r.Mount + "/data/" + r.Path }
