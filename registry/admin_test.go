package registry_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
)

const rulesPath = "/admin/v1/cache-rules"

// adminError is the body of a failed admin request.
type adminError struct {
	Error struct {
		Code            string `json:"code"`
		Message         string `json:"message"`
		Field           string `json:"field"`
		Value           string `json:"value"`
		ConflictingRule string `json:"conflictingRule"`
	} `json:"error"`
}

// configRule is declared in the config file of every admin test stack.
var configRule = cache.Rule{Name: "cfg-ubuntu", Source: "docker.io/library/ubuntu", Target: "ubuntu"}

// apiRule exists, created through the API, in every admin test stack.
var apiRule = cache.Rule{Name: "ghcr-team", Source: "ghcr.io/team/*", Target: "ghcr/*", CredentialSet: "team"}

func newAdminStack(t *testing.T) *stack {
	t.Helper()
	return newStack(t, stackConfig{
		config: []cache.Rule{configRule},
		rules:  []cache.Rule{apiRule},
		creds:  credSets{"team": "ghcr.io", "hub-team": "docker.io", "other-team": "docker.io"},
	})
}

// admin sends an admin request with the right token.
func admin(t *testing.T, s *stack, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	return do(t, method, s.url+path, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}, strings.NewReader(body))
}

func listRules(t *testing.T, s *stack) []cache.Rule {
	t.Helper()
	resp, body := admin(t, s, "GET", rulesPath, "")
	if resp.StatusCode != 200 {
		t.Fatalf("list: %s %s", resp.Status, body)
	}
	var rules []cache.Rule
	if err := json.Unmarshal(body, &rules); err != nil {
		t.Fatalf("list body %s: %v", body, err)
	}
	return rules
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	routes := []struct {
		name, method, path, body string
	}{
		{"list", "GET", rulesPath, ""},
		{"create", "POST", rulesPath, `{"name":"new-rule","sourceRepository":"quay.io/x/*","targetRepository":"quay/*"}`},
		{"show", "GET", rulesPath + "/" + apiRule.Name, ""},
		{"update", "PATCH", rulesPath + "/" + apiRule.Name, `{"credentialSetName":""}`},
		{"delete", "DELETE", rulesPath + "/" + apiRule.Name, ""},
		{"unknown admin path", "GET", "/admin/v1/nothing", ""},
	}
	auths := []struct {
		name   string
		header map[string]string
	}{
		{"no token", nil},
		{"wrong token", map[string]string{"Authorization": "Bearer wrong-" + testToken}},
		{"token prefix", map[string]string{"Authorization": "Bearer " + testToken[:len(testToken)-1]}},
		{"right token, wrong scheme", map[string]string{"Authorization": "Basic " + testToken}},
		{"bare token", map[string]string{"Authorization": testToken}},
	}
	for _, r := range routes {
		for _, a := range auths {
			t.Run(r.name+"/"+a.name, func(t *testing.T) {
				t.Parallel()
				s := newAdminStack(t)
				before := listRules(t, s)
				resp, body := do(t, r.method, s.url+r.path, a.header, strings.NewReader(r.body))
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401; body %s", resp.StatusCode, body)
				}
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
				}
				var e adminError
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "UNAUTHORIZED" {
					t.Errorf("body %s: want code UNAUTHORIZED (%v)", body, err)
				}
				if strings.Contains(string(body), testToken) {
					t.Errorf("body echoes the token: %s", body)
				}
				if after := listRules(t, s); !reflect.DeepEqual(after, before) {
					t.Errorf("rules changed by an unauthenticated request:\nbefore %+v\nafter  %+v", before, after)
				}
			})
		}
	}
}

func TestAdminLifecycle(t *testing.T) {
	t.Parallel()
	s := newAdminStack(t)
	decode := func(t *testing.T, body []byte) cache.Rule {
		t.Helper()
		var r cache.Rule
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("rule body %s: %v", body, err)
		}
		return r
	}
	want := cache.Rule{Name: "Hub-Library", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-team", Origin: cache.OriginAPI}

	// Create, with a Docker Hub alias normalised.
	resp, body := admin(t, s, "POST", rulesPath, `{"name":"Hub-Library","sourceRepository":"index.docker.io/library/*","targetRepository":"hub/*","credentialSetName":"hub-team"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %s %s", resp.Status, body)
	}
	if got := decode(t, body); got != want {
		t.Fatalf("created %+v, want %+v", got, want)
	}

	resp, body = admin(t, s, "GET", rulesPath+"/Hub-Library", "")
	if resp.StatusCode != 200 {
		t.Fatalf("show: %s %s", resp.Status, body)
	}
	if got := decode(t, body); got != want {
		t.Fatalf("show %+v, want %+v", got, want)
	}

	cfg := configRule
	cfg.Origin = cache.OriginConfig
	api := apiRule
	api.Origin = cache.OriginAPI
	if got, wantList := listRules(t, s), []cache.Rule{want, cfg, api}; !reflect.DeepEqual(got, wantList) {
		t.Fatalf("list = %+v, want %+v (sorted by name)", got, wantList)
	}

	// Change the credential set, then remove it.
	resp, body = admin(t, s, "PATCH", rulesPath+"/Hub-Library", `{"credentialSetName":"other-team"}`)
	if resp.StatusCode != 200 || decode(t, body).CredentialSet != "other-team" {
		t.Fatalf("update to other-team: %s %s", resp.Status, body)
	}
	resp, body = admin(t, s, "PATCH", rulesPath+"/Hub-Library", `{"credentialSetName":""}`)
	if resp.StatusCode != 200 {
		t.Fatalf("remove credential set: %s %s", resp.Status, body)
	}
	if strings.Contains(string(body), "credentialSetName") {
		t.Errorf("body still names a credential set: %s", body)
	}
	noCreds := want
	noCreds.CredentialSet = ""
	if got := decode(t, body); got != noCreds {
		t.Errorf("updated %+v, want %+v", got, noCreds)
	}
	if got, err := s.store.Get("Hub-Library"); err != nil || got != noCreds {
		t.Errorf("store holds %+v (%v), want %+v", got, err, noCreds)
	}

	resp, body = admin(t, s, "DELETE", rulesPath+"/Hub-Library", "")
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("delete: %s %q", resp.Status, body)
	}
	resp, body = admin(t, s, "GET", rulesPath+"/Hub-Library", "")
	var e adminError
	if resp.StatusCode != 404 || json.Unmarshal(body, &e) != nil || e.Error.Code != "NOT_FOUND" {
		t.Fatalf("show after delete: %s %s", resp.Status, body)
	}
	if got := listRules(t, s); len(got) != 2 {
		t.Errorf("list after delete = %+v, want the two initial rules", got)
	}
}

func TestAdminErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode                 string
		wantField, wantValue     string
		wantConflict             string
	}{
		{
			name: "invalid name", method: "POST", path: rulesPath,
			body:       `{"name":"ab","sourceRepository":"quay.io/x/*","targetRepository":"quay/*"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "name", wantValue: "ab",
		},
		{
			name: "source with scheme", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"https://quay.io/x","targetRepository":"quay-x"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "sourceRepository", wantValue: "https://quay.io/x",
		},
		{
			name: "uppercase target", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x","targetRepository":"Quay"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "targetRepository", wantValue: "Quay",
		},
		{
			name: "wildcard on one side", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x/*","targetRepository":"quay"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "targetRepository", wantValue: "quay",
		},
		{
			name: "unknown credential set", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x","targetRepository":"quay-x","credentialSetName":"nope"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "credentialSetName", wantValue: "nope",
		},
		{
			name: "update to unknown credential set", method: "PATCH", path: rulesPath + "/" + apiRule.Name,
			body:       `{"credentialSetName":"nope"}`,
			wantStatus: 400, wantCode: "INVALID_FIELD", wantField: "credentialSetName", wantValue: "nope",
		},
		{
			name: "same target as config rule", method: "POST", path: rulesPath,
			body:       `{"name":"other-ubuntu","sourceRepository":"quay.io/x/ubuntu","targetRepository":"ubuntu"}`,
			wantStatus: 409, wantCode: "CONFLICT", wantConflict: configRule.Name,
		},
		{
			name: "same name as api rule", method: "POST", path: rulesPath,
			body:       `{"name":"ghcr-team","sourceRepository":"quay.io/x","targetRepository":"quay-x"}`,
			wantStatus: 409, wantCode: "CONFLICT", wantConflict: apiRule.Name,
		},
		{
			name: "same source as api rule", method: "POST", path: rulesPath,
			body:       `{"name":"ghcr-again","sourceRepository":"ghcr.io/team/*","targetRepository":"g2/*"}`,
			wantStatus: 409, wantCode: "CONFLICT", wantConflict: apiRule.Name,
		},
		{
			name: "unknown JSON field on create", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x","targetRepository":"quay-x","origin":"config"}`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "misspelt JSON field on create", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","source":"quay.io/x","targetRepository":"quay-x"}`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "unknown JSON field on update", method: "PATCH", path: rulesPath + "/" + apiRule.Name,
			body:       `{"credentialSet":""}`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "empty update", method: "PATCH", path: rulesPath + "/" + apiRule.Name,
			body:       `{}`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "not JSON", method: "POST", path: rulesPath, body: `name=x`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "trailing data after the JSON object", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x","targetRepository":"quay-x"} {"name":"quay-y"}`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "trailing garbage on update", method: "PATCH", path: rulesPath + "/" + apiRule.Name,
			body:       `{"credentialSetName":""}x`,
			wantStatus: 400, wantCode: "BAD_REQUEST",
		},
		{
			name: "body over 1 MiB", method: "POST", path: rulesPath,
			body:       `{"name":"quay-x","sourceRepository":"quay.io/x","targetRepository":"quay-x","tagTTL":"` + strings.Repeat("9", 10<<20) + `"}`,
			wantStatus: 413, wantCode: "TOO_LARGE",
		},
		{
			name: "update config rule", method: "PATCH", path: rulesPath + "/" + configRule.Name,
			body:       `{"credentialSetName":"team"}`,
			wantStatus: 409, wantCode: "READ_ONLY",
		},
		{
			name: "delete config rule", method: "DELETE", path: rulesPath + "/" + configRule.Name,
			wantStatus: 409, wantCode: "READ_ONLY",
		},
		{
			name: "show missing", method: "GET", path: rulesPath + "/missing-rule",
			wantStatus: 404, wantCode: "NOT_FOUND",
		},
		{
			name: "update missing", method: "PATCH", path: rulesPath + "/missing-rule",
			body:       `{"credentialSetName":""}`,
			wantStatus: 404, wantCode: "NOT_FOUND",
		},
		{
			name: "delete missing", method: "DELETE", path: rulesPath + "/missing-rule",
			wantStatus: 404, wantCode: "NOT_FOUND",
		},
		{
			name: "unknown admin path", method: "GET", path: "/admin/v1/credential-sets",
			wantStatus: 404, wantCode: "NOT_FOUND",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newAdminStack(t)
			before := listRules(t, s)
			resp, body := admin(t, s, tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var e adminError
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if e.Error.Code != tt.wantCode || e.Error.Message == "" {
				t.Errorf("code = %q message = %q, want code %s and a message", e.Error.Code, e.Error.Message, tt.wantCode)
			}
			if e.Error.Field != tt.wantField || e.Error.Value != tt.wantValue {
				t.Errorf("field/value = %q/%q, want %q/%q", e.Error.Field, e.Error.Value, tt.wantField, tt.wantValue)
			}
			if e.Error.ConflictingRule != tt.wantConflict {
				t.Errorf("conflictingRule = %q, want %q", e.Error.ConflictingRule, tt.wantConflict)
			}
			if after := listRules(t, s); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused request changed the rules:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

func TestAdminConfigRuleShown(t *testing.T) {
	t.Parallel()
	s := newAdminStack(t)
	tests := []struct {
		name, path string
	}{
		{"show", rulesPath + "/" + configRule.Name},
		{"list", rulesPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := admin(t, s, "GET", tt.path, "")
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s", resp.Status, body)
			}
			var rules []cache.Rule
			if strings.HasPrefix(strings.TrimSpace(string(body)), "[") {
				if err := json.Unmarshal(body, &rules); err != nil {
					t.Fatal(err)
				}
			} else {
				var r cache.Rule
				if err := json.Unmarshal(body, &r); err != nil {
					t.Fatal(err)
				}
				rules = []cache.Rule{r}
			}
			found := false
			for _, r := range rules {
				if r.Name == configRule.Name {
					found = true
					if r.Origin != cache.OriginConfig {
						t.Errorf("config rule origin = %q, want %q", r.Origin, cache.OriginConfig)
					}
				} else if r.Origin != cache.OriginAPI {
					t.Errorf("rule %s origin = %q, want %q", r.Name, r.Origin, cache.OriginAPI)
				}
			}
			if !found {
				t.Errorf("config rule missing from %s", body)
			}
		})
	}
}
