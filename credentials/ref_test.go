package credentials_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
)

func TestParseRef(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want credentials.Ref
		data string // KV data path of vault refs
	}{
		{"vault://secret/dockerhub#password", credentials.Ref{Scheme: "vault", Mount: "secret", Path: "dockerhub", Field: "password"}, "secret/data/dockerhub"},
		{"vault://kv/team/a/hub#user-name", credentials.Ref{Scheme: "vault", Mount: "kv", Path: "team/a/hub", Field: "user-name"}, "kv/data/team/a/hub"},
		{"file:///run/secrets/dockerhub-password", credentials.Ref{Scheme: "file", File: "/run/secrets/dockerhub-password"}, ""},
		{"env://DOCKERHUB_TOKEN", credentials.Ref{Scheme: "env", Env: "DOCKERHUB_TOKEN"}, ""},
		{"env://_x1", credentials.Ref{Scheme: "env", Env: "_x1"}, ""},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			got, err := credentials.ParseRef("passwordSecretIdentifier", tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
			if tc.data != "" && got.KVDataPath() != tc.data {
				t.Errorf("KVDataPath() = %q, want %q", got.KVDataPath(), tc.data)
			}
		})
	}
	bad := []struct {
		in, reason string
		echoed     bool // the value is repeated in the error
	}{
		{"", "required", false},
		{"hunter2-plain-secret", "not a secret reference", false},
		{"s3://bucket/key", "unknown scheme", false},
		{"vault://secret/dockerhub", "field", true},
		{"vault://secret/dockerhub#", "field", true},
		{"vault://dockerhub#password", "mount and a secret path", true},
		{"vault://secret//hub#password", "segment", true},
		{"vault://secret/../hub#password", "segment", true},
		{"vault://secret/hub*#password", "segment", true},
		{"vault://secret/data/hub#password", "without \"data\"", true},
		{"vault://secret/hub#pass word", "field", true},
		{"file://relative/path", "absolute path", true},
		{"file:///run/../etc/shadow", "not clean", true},
		{"file:///run/secrets/x?version=2", "'?'", true},
		{"env://1BAD", "variable name", true},
		{"env://BAD-NAME", "variable name", true},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.in, func(t *testing.T) {
			_, err := credentials.ParseRef("usernameSecretIdentifier", tc.in)
			var fe *cache.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseRef(%q) = %v, want a *cache.FieldError", tc.in, err)
			}
			if fe.Field != "usernameSecretIdentifier" || !strings.Contains(fe.Reason, tc.reason) {
				t.Errorf("error %q: want field usernameSecretIdentifier and a reason containing %q", err, tc.reason)
			}
			for _, form := range []string{"vault://<mount>/<path>#<field>", "file:///", "env://<NAME>"} {
				if !strings.Contains(err.Error(), form) {
					t.Errorf("error %q does not list the accepted form %s", err, form)
				}
			}
			if echoed := tc.in != "" && strings.Contains(err.Error(), tc.in); echoed != tc.echoed {
				t.Errorf("error %q: value echoed = %v, want %v (values that are not references may be secrets)", err, echoed, tc.echoed)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	sets := []credentials.Set{
		{Name: "hub-a", UsernameSecretRef: "vault://secret/regcache/hub#username", PasswordSecretRef: "vault://secret/regcache/hub#password"},
		{Name: "ghcr-b", UsernameSecretRef: "env://GHCR_USER", PasswordSecretRef: "vault://kv/ci/ghcr#token"},
		{Name: "hub-c", UsernameSecretRef: "vault://secret/regcache/hub#username", PasswordSecretRef: "file:///run/secrets/x"},
	}
	got, ok := credentials.Policy(sets...)
	want := `# Vault policy for regcache credential set(s) hub-a, ghcr-b, hub-c:
# read on exactly the KV v2 secrets they reference, nothing else.

# ghcr-b
path "kv/data/ci/ghcr" {
  capabilities = ["read"]
}

# hub-a, hub-c
path "secret/data/regcache/hub" {
  capabilities = ["read"]
}
`
	if !ok || got != want {
		t.Fatalf("Policy = %v\n%s\nwant\n%s", ok, got, want)
	}
	if _, ok := credentials.Policy(credentials.Set{Name: "files", UsernameSecretRef: "env://U", PasswordSecretRef: "file:///p"}); ok {
		t.Errorf("a set without vault:// references has a policy")
	}
}
