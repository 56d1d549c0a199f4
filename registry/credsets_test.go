package registry_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

const setsPath = "/admin/v1/credential-sets"

// newCredStack is regcache with a real credentials.Manager (env:// secrets
// from a fixed environment), wired as serve wires it; the upstream
// docker.io is a registry that needs no credentials.
func newCredStack(t testing.TB) *stack {
	t.Helper()
	return newCredStackLog(t, io.Discard)
}

// newCredStackLog is newCredStack writing the server's log to w.
func newCredStackLog(t testing.TB, w io.Writer) *stack {
	t.Helper()
	return newCredStackWith(t, stackConfig{logs: w})
}

// newCredStackWith is newCredStack logging to sc.logs and trusting the
// proxies sc.trusted.
func newCredStackWith(t testing.TB, sc stackConfig) *stack {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	if sc.logs == nil {
		sc.logs = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(sc.logs, nil))
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	up := newUpstream(t)
	endpoints, err := cache.NewEndpoints(map[string]string{"docker.io": up.URL})
	if err != nil {
		t.Fatal(err)
	}
	environment := map[string]string{"REGCACHE_SECRET_HUB_USER": "hub-user", "REGCACHE_SECRET_HUB_PASS": "hub-s3cr3t"}
	var store *cache.Store
	mgr, err := credentials.NewManager(ctx, credentials.Options{
		Records: meta, Endpoints: endpoints, Log: logger,
		LookupEnv: func(k string) (string, bool) { v, ok := environment[k]; return v, ok },
		Config:    []credentials.Set{{Name: "cfg-set", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_HUB_USER", PasswordSecretRef: "vault://secret/cfg#password"}},
		InUse: func(set string) []string {
			var names []string
			for _, r := range store.List() {
				if r.CredentialSet == set {
					names = append(names, r.Name)
				}
			}
			return names
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	store, err = cache.NewStore(ctx, meta, mgr, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	puller := cache.NewPuller(store, endpoints, mgr, blobs, meta, logger, cache.Options{})
	t.Cleanup(puller.Close)
	h, err := registry.New(registry.Config{Backend: puller, Rules: store, AdminToken: testToken, Log: logger, CredentialSets: mgr,
		TrustedProxies: sc.trusted})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &stack{url: srv.URL, handler: h, store: store, blobs: blobs}
}

func TestCredentialSetsAdmin(t *testing.T) {
	t.Parallel()
	s := newCredStack(t)
	steps := []struct {
		name, method, path, body string
		status                   int
		code                     string // error code, or "" for success
		check                    func(t *testing.T, body []byte)
	}{
		{"create", "POST", setsPath, `{"name":"hub-team","loginServer":"registry-1.docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, 201, "",
			func(t *testing.T, b []byte) {
				var set credentials.Set
				json.Unmarshal(b, &set)
				if set.LoginServer != "docker.io" || set.Origin != "api" || set.Status.State != "Healthy" {
					t.Errorf("created %s", b)
				}
			}},
		{"create again", "POST", setsPath, `{"name":"hub-team","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_A","passwordSecretIdentifier":"env://REGCACHE_SECRET_B"}`, 409, "CONFLICT", nil},
		{"create with a literal secret", "POST", setsPath, `{"name":"literal","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_A","passwordSecretIdentifier":"hunter2hunter2"}`, 400, "INVALID_FIELD",
			func(t *testing.T, b []byte) {
				var e adminError
				json.Unmarshal(b, &e)
				if e.Error.Field != "passwordSecretIdentifier" || strings.Contains(string(b), "hunter2") || !strings.Contains(e.Error.Message, "vault://<mount>/<path>#<field>") {
					t.Errorf("body %s: want the field, the accepted forms and not the value", b)
				}
			}},
		{"create with a bad reference", "POST", setsPath, `{"name":"bad-ref","loginServer":"docker.io","usernameSecretIdentifier":"vault://secret/x","passwordSecretIdentifier":"env://REGCACHE_SECRET_B"}`, 400, "INVALID_FIELD",
			func(t *testing.T, b []byte) {
				var e adminError
				json.Unmarshal(b, &e)
				if e.Error.Field != "usernameSecretIdentifier" || e.Error.Value != "vault://secret/x" {
					t.Errorf("body %s", b)
				}
			}},
		{"create with unknown field", "POST", setsPath, `{"name":"x-set","password":"oops"}`, 400, "BAD_REQUEST", nil},
		{"create unresolvable", "POST", setsPath, `{"name":"broken","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_NOPE"}`, 201, "",
			func(t *testing.T, b []byte) {
				var set credentials.Set
				json.Unmarshal(b, &set)
				if set.Status.State != "Unhealthy" || set.Status.Reason != "env: REGCACHE_SECRET_NOPE is not set in regcache's environment" {
					t.Errorf("created %s: want Unhealthy with the reason", b)
				}
			}},
		{"show", "GET", setsPath + "/hub-team", "", 200, "", nil},
		{"show missing", "GET", setsPath + "/nope-nope", "", 404, "NOT_FOUND", nil},
		{"list", "GET", setsPath, "", 200, "",
			func(t *testing.T, b []byte) {
				var sets []credentials.Set
				json.Unmarshal(b, &sets)
				var names []string
				for _, s := range sets {
					names = append(names, s.Name+"/"+s.Origin)
				}
				if !slices.Equal(names, []string{"broken/api", "cfg-set/config", "hub-team/api"}) {
					t.Errorf("list %v", names)
				}
			}},
		{"update nothing", "PATCH", setsPath + "/hub-team", `{}`, 400, "BAD_REQUEST", nil},
		{"update", "PATCH", setsPath + "/hub-team", `{"passwordSecretIdentifier":"vault://secret/regcache/hub#password"}`, 200, "",
			func(t *testing.T, b []byte) {
				var set credentials.Set
				json.Unmarshal(b, &set)
				if set.UsernameSecretRef != "env://REGCACHE_SECRET_HUB_USER" || set.PasswordSecretRef != "vault://secret/regcache/hub#password" || set.Status.State != "Unhealthy" {
					t.Errorf("updated %s", b)
				}
			}},
		{"update config set", "PATCH", setsPath + "/cfg-set", `{"usernameSecretIdentifier":"env://REGCACHE_SECRET_X"}`, 409, "READ_ONLY", nil},
		{"policy", "GET", setsPath + "/hub-team/policy", "", 200, "",
			func(t *testing.T, b []byte) {
				if !strings.Contains(string(b), "path \"secret/data/regcache/hub\" {\n  capabilities = [\"read\"]\n}") {
					t.Errorf("policy:\n%s", b)
				}
			}},
		{"policy of a set without vault refs", "GET", setsPath + "/broken/policy", "", 404, "NO_VAULT_SECRETS", nil},
		{"policy of all", "GET", "/admin/v1/credential-sets-policy", "", 200, "",
			func(t *testing.T, b []byte) {
				if !strings.Contains(string(b), `path "secret/data/cfg"`) || !strings.Contains(string(b), `path "secret/data/regcache/hub"`) {
					t.Errorf("policy:\n%s", b)
				}
			}},
		{"rule using the set", "POST", rulesPath, `{"name":"hub-rule","sourceRepository":"docker.io/library/*","targetRepository":"hub/*","credentialSetName":"hub-team"}`, 201, "", nil},
		{"rule using a set of another login server", "POST", rulesPath, `{"name":"quay-rule","sourceRepository":"quay.io/x/*","targetRepository":"quay/*","credentialSetName":"hub-team"}`, 400, "INVALID_FIELD", nil},
		{"delete in use", "DELETE", setsPath + "/hub-team", "", 409, "IN_USE",
			func(t *testing.T, b []byte) {
				var e struct {
					Error struct {
						Rules []string `json:"rules"`
					} `json:"error"`
				}
				json.Unmarshal(b, &e)
				if !slices.Equal(e.Error.Rules, []string{"hub-rule"}) || !strings.Contains(string(b), "hub-rule") {
					t.Errorf("body %s: want the rule named", b)
				}
			}},
		{"delete config set", "DELETE", setsPath + "/cfg-set", "", 409, "READ_ONLY", nil},
		{"detach", "PATCH", rulesPath + "/hub-rule", `{"credentialSetName":""}`, 200, "", nil},
		{"delete", "DELETE", setsPath + "/hub-team", "", 204, "", nil},
		{"deleted", "GET", setsPath + "/hub-team", "", 404, "NOT_FOUND", nil},
	}
	for _, st := range steps {
		resp, body := admin(t, s, st.method, st.path, st.body)
		if resp.StatusCode != st.status {
			t.Fatalf("%s: %s %s: %d %s, want %d", st.name, st.method, st.path, resp.StatusCode, body, st.status)
		}
		if st.code != "" {
			var e adminError
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != st.code {
				t.Fatalf("%s: body %s, want code %s", st.name, body, st.code)
			}
		}
		if st.check != nil {
			st.check(t, body)
		}
		if strings.Contains(string(body), "hub-s3cr3t") || strings.Contains(string(body), "hub-user\"") {
			t.Errorf("%s: a secret value in the response: %s", st.name, body)
		}
	}
	// Every credential-set route needs the admin token.
	for _, r := range []struct{ method, path string }{
		{"GET", setsPath}, {"POST", setsPath}, {"GET", setsPath + "/broken"}, {"PATCH", setsPath + "/broken"},
		{"DELETE", setsPath + "/broken"}, {"GET", setsPath + "/broken/policy"}, {"GET", "/admin/v1/credential-sets-policy"},
	} {
		resp, body := do(t, r.method, s.url+r.path, map[string]string{"Authorization": "Bearer wrong"}, strings.NewReader("{}"))
		if resp.StatusCode != 401 {
			t.Errorf("%s %s with a wrong token: %d %s", r.method, r.path, resp.StatusCode, body)
		}
	}
}

// TestUnhealthySetPull: a pull through a rule whose set cannot be resolved
// answers UNAUTHORIZED naming the set and where an operator finds why; the
// reason itself (a secret's location) is for the operator, in the set's
// status, not for the client.
func TestUnhealthySetPull(t *testing.T) {
	t.Parallel()
	s := newCredStack(t)
	for _, st := range []struct{ method, path, body string }{
		{"POST", setsPath, `{"name":"broken","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"file:///run/secrets/nonexistent/regcache/password"}`},
		{"POST", rulesPath, `{"name":"app-rule","sourceRepository":"docker.io/library/app","targetRepository":"app","credentialSetName":"broken"}`},
	} {
		if resp, body := admin(t, s, st.method, st.path, st.body); resp.StatusCode != 201 {
			t.Fatalf("%s %s: %d %s", st.method, st.path, resp.StatusCode, body)
		}
	}
	resp, body := do(t, "GET", s.url+"/v2/app/manifests/v1", nil, nil)
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"UNAUTHORIZED"`) || !strings.Contains(string(body), `credential set \"broken\"`) ||
		!strings.Contains(string(body), "credential-set show -n broken") {
		t.Fatalf("pull: %d %s; want UNAUTHORIZED naming the set and where to look", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "/run/secrets") {
		t.Errorf("pull: the client sees the secret's location: %s", body)
	}
	if resp, body := admin(t, s, "GET", setsPath+"/broken", ""); resp.StatusCode != 200 ||
		!strings.Contains(string(body), "file not found: /run/secrets/nonexistent/regcache/password") {
		t.Errorf("show: %d %s; want the reason in the set's status", resp.StatusCode, body)
	}
}
