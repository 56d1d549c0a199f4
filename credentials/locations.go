package credentials

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/regcache/regcache/cache"
)

// Defaults of SecretLocations.
const (
	DefaultEnvPrefix = "REGCACHE_SECRET_"
	DefaultFileDir   = "/run/secrets"
)

// SecretLocations say which secrets a credential set may reference, so
// that the admin token alone cannot make regcache read an arbitrary
// variable of its environment or file of its host and send it upstream:
// env:// references name variables starting with EnvPrefix, file://
// references files under one of FileDirs (also after symlinks are
// resolved). vault:// references are confined by the Vault policy of
// regcache's token.
type SecretLocations struct {
	// EnvPrefix starts every variable an env:// reference may name
	// (default REGCACHE_SECRET_).
	EnvPrefix string `yaml:"envPrefix"`
	// FileDirs hold every file a file:// reference may name (default
	// /run/secrets, where Docker and the Kubernetes manifests mount them).
	FileDirs []string `yaml:"fileDirs"`
}

// withDefaults returns l with empty fields set to the defaults and the
// directories cleaned.
func (l SecretLocations) withDefaults() SecretLocations {
	if l.EnvPrefix == "" {
		l.EnvPrefix = DefaultEnvPrefix
	}
	if len(l.FileDirs) == 0 {
		l.FileDirs = []string{DefaultFileDir}
	}
	dirs := make([]string, len(l.FileDirs))
	for i, d := range l.FileDirs {
		dirs[i] = filepath.Clean(d)
	}
	l.FileDirs = dirs
	return l
}

// Validate checks the settings.
func (l SecretLocations) Validate() error {
	if l.EnvPrefix != "" && !envNameRE.MatchString(l.EnvPrefix) {
		return fmt.Errorf("secrets.envPrefix %q: want the start of a variable name, letters, digits and '_', e.g. %s", l.EnvPrefix, DefaultEnvPrefix)
	}
	for _, d := range l.FileDirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) == "/" {
			return fmt.Errorf("secrets.fileDirs %q: want an absolute directory other than /, e.g. %s", d, DefaultFileDir)
		}
	}
	return nil
}

// check refuses a reference outside the locations (l has its defaults).
func (l SecretLocations) check(field string, r Ref) error {
	switch r.Scheme {
	case SchemeEnv:
		if !strings.HasPrefix(r.Env, l.EnvPrefix) || r.Env == l.EnvPrefix {
			return &cache.FieldError{Field: field, Value: r.String(), Reason: fmt.Sprintf(
				"env:// references must name a variable starting with %s (secrets.envPrefix), e.g. env://%sDOCKERHUB_TOKEN: regcache sends no other variable of its environment upstream", l.EnvPrefix, l.EnvPrefix)}
		}
	case SchemeFile:
		if l.under(r.File) == "" {
			return &cache.FieldError{Field: field, Value: r.String(), Reason: fmt.Sprintf(
				"file:// references must name a file under %s (secrets.fileDirs), e.g. file://%s/dockerhub-token: regcache sends no other file upstream",
				strings.Join(l.FileDirs, " or "), l.FileDirs[0])}
		}
	}
	return nil
}

// under returns the allowed directory p is in, or "".
func (l SecretLocations) under(p string) string {
	for _, d := range l.FileDirs {
		if strings.HasPrefix(p, d+"/") {
			return d
		}
	}
	return ""
}

// validator turns sets given by an operator into entries: syntax, the
// allowed login servers and the allowed secret locations.
type validator struct {
	locs      SecretLocations // with defaults
	upstreams *cache.Endpoints
}

// entry validates s and returns it in canonical form.
func (v validator) entry(s Set, origin string) (*entry, error) {
	if !cache.ValidName(s.Name) {
		return nil, &cache.FieldError{Field: "name", Value: s.Name, Reason: cache.NameRule}
	}
	switch {
	case s.LoginServer == "":
		return nil, &cache.FieldError{Field: "loginServer", Value: s.LoginServer, Reason: "required: the registry host the credentials are for, e.g. docker.io or ghcr.io"}
	case strings.Contains(s.LoginServer, "://") || strings.Contains(s.LoginServer, "/"):
		return nil, &cache.FieldError{Field: "loginServer", Value: s.LoginServer, Reason: "give the registry host only, without scheme or path, e.g. docker.io or registry.example.com:5000"}
	case !cache.ValidHost(s.LoginServer):
		return nil, &cache.FieldError{Field: "loginServer", Value: s.LoginServer, Reason: "not a valid host[:port], e.g. docker.io or registry.example.com:5000"}
	}
	if err := v.upstreams.Allowed("loginServer", s.LoginServer); err != nil {
		return nil, err
	}
	refs := [2]Ref{}
	for i, f := range []struct{ field, ref string }{
		{"usernameSecretIdentifier", s.UsernameSecretRef}, {"passwordSecretIdentifier", s.PasswordSecretRef},
	} {
		r, err := ParseRef(f.field, f.ref)
		if err != nil {
			return nil, err
		}
		if err := v.locs.check(f.field, r); err != nil {
			return nil, err
		}
		refs[i] = r
	}
	return &entry{
		set:    Set{Name: s.Name, LoginServer: cache.CanonicalHost(s.LoginServer), UsernameSecretRef: refs[0].String(), PasswordSecretRef: refs[1].String(), Origin: origin},
		user:   refs[0],
		pass:   refs[1],
		status: Status{State: StateUnknown, Reason: "not checked yet"},
	}, nil
}
