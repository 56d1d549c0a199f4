// Package vaultserver is a small HashiCorp Vault-compatible HTTP server for
// tests, written from Vault's HTTP API documentation
// (https://developer.hashicorp.com/vault/api-docs): the real
// github.com/hashicorp/vault/api client talks to it as to Vault.
//
// regcache's Vault tests run against a real Vault-API server (OpenBao, see
// e2e/peers.StartVault). This one serves only what a real server cannot do
// on a test machine: the Kubernetes auth method, whose real implementation
// validates the service-account token with a cluster's TokenReview API
// (here the test names the one token a role accepts).
//
// It implements, with Vault's status codes and envelopes:
//   - KV version 2 at mount "secret" (and others given to New): read, write,
//     soft-delete of the latest version, delete of all versions
//     (/v1/<mount>/data/<path>, /v1/<mount>/metadata/<path>);
//   - tokens in X-Vault-Token: lookup-self and renew-self, with TTL,
//     maximum TTL and expiry;
//   - Kubernetes login (roles registered with AddKubernetesRole);
//   - ACL policies written as HCL (/v1/sys/policies/acl/<name>), parsed
//     with github.com/hashicorp/hcl and enforced on every request: exact
//     paths and a trailing '*' glob, most specific path wins, "deny" wins,
//     403 {"errors":["permission denied"]} otherwise. As in Vault, every
//     token may look itself up and renew itself (the default policy).
//
// It is not Vault: no storage, seal, leases of secrets, "+" globs,
// parameters constraints or namespaces.
package vaultserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

// defaultMaxTTL is Vault's default maximum token TTL (32 days).
const defaultMaxTTL = 32 * 24 * time.Hour

// Server is a running Vault-compatible server on a loopback port.
type Server struct {
	// URL is the address to give the client (VAULT_ADDR).
	URL string
	// RootToken has the root policy: everything is allowed.
	RootToken string

	srv *httptest.Server

	mu         sync.Mutex
	mounts     map[string]bool                 // KV v2 mount names
	kv         map[string]map[string]*kvSecret // mount -> path -> secret
	policies   map[string]map[string]*pathRule // name -> path pattern -> rule
	tokens     map[string]*token               // by token ID
	authMounts map[string]string               // path -> type (kubernetes)
	k8sRoles   map[string]*k8sRole             // by role name
	counts     map[string]int                  // event -> count
}

type kvSecret struct {
	versions []kvVersion
}

type kvVersion struct {
	data    map[string]any
	created time.Time
	deleted time.Time
}

type pathRule struct {
	caps map[string]bool
}

type token struct {
	id        string
	policies  []string
	ttl       time.Duration
	maxTTL    time.Duration
	renewable bool
	issued    time.Time
	expires   time.Time // zero: never (root)
	path      string
}

type k8sRole struct {
	jwt      string
	policies []string
	ttl      time.Duration
	maxTTL   time.Duration
}

// New starts a server with KV v2 mounted at "secret" and at every mount in
// kvMounts. Close stops it.
func New(kvMounts ...string) *Server {
	s := &Server{
		mounts:     map[string]bool{"secret": true},
		kv:         map[string]map[string]*kvSecret{},
		policies:   map[string]map[string]*pathRule{},
		tokens:     map[string]*token{},
		authMounts: map[string]string{"token": "token"},
		k8sRoles:   map[string]*k8sRole{},
		counts:     map[string]int{},
	}
	for _, m := range kvMounts {
		s.mounts[m] = true
	}
	s.RootToken = "hvs.root-" + randomID()
	s.tokens[s.RootToken] = &token{id: s.RootToken, policies: []string{"root"}, path: "auth/token/root", issued: time.Now()}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Count returns how often an event happened: "login:kubernetes",
// "renew-self", "lookup-self", "read:<path>", "denied:<path>".
func (s *Server) Count(event string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[event]
}

// AddKubernetesRole registers a role of the Kubernetes auth method (mounted
// at "kubernetes"): a login with that role and exactly jwt gets a token with
// the policies. Real Vault validates the JWT with the cluster's TokenReview
// API; here the test names the one JWT it accepts.
func (s *Server) AddKubernetesRole(role, jwt string, policies []string, ttl, maxTTL time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authMounts["kubernetes"] = "kubernetes"
	s.k8sRoles[role] = &k8sRole{jwt: jwt, policies: policies, ttl: ttl, maxTTL: maxTTL}
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// response helpers

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErrors(w http.ResponseWriter, status int, errs ...string) {
	if errs == nil {
		errs = []string{}
	}
	writeJSON(w, status, map[string]any{"errors": errs})
}

// envelope is Vault's response body.
func envelope(data any, auth any) map[string]any {
	return map[string]any{
		"request_id": randomID(), "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": auth,
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		writeErrors(w, http.StatusNotFound)
		return
	}
	p = strings.Trim(p, "/")
	method := r.Method
	if method == "GET" && r.URL.Query().Get("list") == "true" {
		method = "LIST"
	}
	var body map[string]any
	if r.Body != nil && (method == "POST" || method == "PUT") {
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if len(raw) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				writeErrors(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
				return
			}
		}
	}
	if body == nil {
		body = map[string]any{}
	}

	// Unauthenticated endpoints.
	switch {
	case p == "sys/health":
		writeJSON(w, http.StatusOK, map[string]any{"initialized": true, "sealed": false, "standby": false, "version": "1.17.0-vaultserver"})
		return
	case strings.HasPrefix(p, "auth/") && strings.HasSuffix(p, "/login") && (method == "POST" || method == "PUT"):
		s.login(w, strings.TrimSuffix(strings.TrimPrefix(p, "auth/"), "/login"), body)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	tok := s.validToken(r.Header.Get("X-Vault-Token"))
	if tok == nil {
		s.counts["denied:"+p]++
		writeErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	switch p {
	case "auth/token/lookup-self":
		s.counts["lookup-self"]++
		writeJSON(w, http.StatusOK, envelope(s.lookupData(tok), nil))
		return
	case "auth/token/renew-self":
		s.counts["renew-self"]++
		s.renew(w, tok, body)
		return
	}
	if !s.allowed(tok, p, capabilityOf(method, p, s)) {
		s.counts["denied:"+p]++
		writeErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	switch {
	case strings.HasPrefix(p, "sys/policies/acl/") || strings.HasPrefix(p, "sys/policy/"):
		name := p[strings.LastIndex(p, "/")+1:]
		s.policy(w, method, name, body)
	default:
		s.kvRequest(w, method, p, body)
	}
}

// capabilityOf maps a request to the ACL capability it needs.
func capabilityOf(method, p string, s *Server) string {
	switch method {
	case "GET", "HEAD":
		return "read"
	case "LIST":
		return "list"
	case "DELETE":
		return "delete"
	}
	if mount, rest, ok := strings.Cut(p, "/data/"); ok && s.mounts[mount] {
		if sec := s.kv[mount][rest]; sec == nil {
			return "create"
		}
	}
	return "update"
}

func (s *Server) validToken(id string) *token {
	t := s.tokens[id]
	if t == nil {
		return nil
	}
	if !t.expires.IsZero() && time.Now().After(t.expires) {
		delete(s.tokens, id)
		return nil
	}
	return t
}

// allowed evaluates the token's policies for path and capability: the most
// specific matching path pattern of all policies (exact beats glob, longer
// glob beats shorter); the capabilities of equal patterns are merged, and
// "deny" wins.
func (s *Server) allowed(t *token, path, capability string) bool {
	merged := map[string]map[string]bool{}
	for _, name := range t.policies {
		if name == "root" {
			return true
		}
		for pattern, rule := range s.policies[name] {
			if merged[pattern] == nil {
				merged[pattern] = map[string]bool{}
			}
			for c := range rule.caps {
				merged[pattern][c] = true
			}
		}
	}
	best, bestLen, exact := "", -1, false
	for pattern := range merged {
		if pattern == path {
			best, exact = pattern, true
			break
		}
		if prefix, ok := strings.CutSuffix(pattern, "*"); ok && strings.HasPrefix(path, prefix) && len(prefix) > bestLen {
			best, bestLen = pattern, len(prefix)
		}
	}
	if !exact && bestLen < 0 {
		return false
	}
	caps := merged[best]
	return !caps["deny"] && (caps[capability] || caps["sudo"] && capability == "update")
}

// ParsePolicy parses a Vault ACL policy in HCL: path "<pattern>" {
// capabilities = [...] } blocks. Unknown capabilities are an error, as in
// Vault.
func ParsePolicy(src string) (map[string][]string, error) {
	root, err := hcl.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("failed to parse policy: %w", err)
	}
	list, ok := root.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("failed to parse policy: does not contain a root object")
	}
	valid := map[string]bool{"create": true, "read": true, "update": true, "patch": true, "delete": true, "list": true, "sudo": true, "deny": true, "subscribe": true}
	out := map[string][]string{}
	for _, item := range list.Filter("path").Items {
		if len(item.Keys) != 1 {
			return nil, fmt.Errorf("failed to parse policy: path blocks take one label")
		}
		key, ok := item.Keys[0].Token.Value().(string)
		if !ok {
			return nil, fmt.Errorf("failed to parse policy: path label is not a string")
		}
		var rule struct {
			Capabilities []string `hcl:"capabilities"`
		}
		if err := hcl.DecodeObject(&rule, item.Val); err != nil {
			return nil, fmt.Errorf("failed to parse policy: path %q: %w", key, err)
		}
		for _, c := range rule.Capabilities {
			if !valid[c] {
				return nil, fmt.Errorf("failed to parse policy: path %q: invalid capability %q", key, c)
			}
		}
		key = strings.TrimPrefix(key, "/")
		out[key] = append(out[key], rule.Capabilities...)
	}
	return out, nil
}

func (s *Server) policy(w http.ResponseWriter, method, name string, body map[string]any) {
	switch method {
	case "POST", "PUT":
		src, _ := body["policy"].(string)
		if src == "" {
			src, _ = body["rules"].(string)
		}
		parsed, err := ParsePolicy(src)
		if err != nil {
			writeErrors(w, http.StatusBadRequest, err.Error())
			return
		}
		rules := map[string]*pathRule{}
		for p, caps := range parsed {
			r := &pathRule{caps: map[string]bool{}}
			for _, c := range caps {
				r.caps[c] = true
			}
			rules[p] = r
		}
		s.policies[name] = rules
		w.WriteHeader(http.StatusNoContent)
	case "DELETE":
		delete(s.policies, name)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeErrors(w, http.StatusMethodNotAllowed, "unsupported operation")
	}
}

// durationOf reads a TTL given as seconds or a Go/Vault duration string.
func durationOf(v any) (time.Duration, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case json.Number:
		n, err := x.Int64()
		return time.Duration(n) * time.Second, err
	case string:
		if x == "" {
			return 0, nil
		}
		if n, err := strconv.Atoi(x); err == nil {
			return time.Duration(n) * time.Second, nil
		}
		return time.ParseDuration(x)
	}
	return 0, fmt.Errorf("not a duration: %v", v)
}

// issue creates a token and returns the "auth" object of a login response.
func (s *Server) issue(policies []string, ttl, maxTTL time.Duration, renewable bool, path string, meta map[string]string) map[string]any {
	if maxTTL <= 0 {
		maxTTL = defaultMaxTTL
	}
	if ttl <= 0 || ttl > maxTTL {
		ttl = min(maxTTL, defaultMaxTTL)
	}
	pols := append([]string{"default"}, policies...)
	sort.Strings(pols)
	now := time.Now()
	t := &token{id: "hvs." + randomID(), policies: pols, ttl: ttl, maxTTL: maxTTL, renewable: renewable, issued: now, expires: now.Add(ttl), path: path}
	s.tokens[t.id] = t
	return s.authObject(t, meta)
}

func (s *Server) authObject(t *token, meta map[string]string) map[string]any {
	left := int(time.Until(t.expires).Round(time.Second).Seconds())
	if t.expires.IsZero() {
		left = 0
	}
	return map[string]any{
		"client_token": t.id, "accessor": "acc-" + t.id[len(t.id)-8:], "policies": t.policies, "token_policies": t.policies,
		"metadata": meta, "lease_duration": left, "renewable": t.renewable, "entity_id": "", "token_type": "service", "orphan": true,
	}
}

func (s *Server) lookupData(t *token) map[string]any {
	ttl, expire := 0, any(nil)
	if !t.expires.IsZero() {
		ttl = int(time.Until(t.expires).Round(time.Second).Seconds())
		expire = t.expires.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"accessor": "acc-" + t.id[len(t.id)-8:], "creation_time": t.issued.Unix(), "creation_ttl": int(t.ttl.Seconds()),
		"display_name": "token", "entity_id": "", "expire_time": expire, "explicit_max_ttl": 0, "id": t.id,
		"issue_time": t.issued.UTC().Format(time.RFC3339Nano), "meta": nil, "num_uses": 0, "orphan": true, "path": t.path,
		"policies": t.policies, "renewable": t.renewable, "ttl": ttl, "type": "service",
	}
}

// renew extends the token by the increment (default its TTL), never past
// its maximum TTL; a token at its maximum keeps its expiry.
func (s *Server) renew(w http.ResponseWriter, t *token, body map[string]any) {
	if !t.renewable || t.expires.IsZero() {
		writeErrors(w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	inc, err := durationOf(body["increment"])
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if inc <= 0 {
		inc = t.ttl
	}
	next := time.Now().Add(inc)
	if limit := t.issued.Add(t.maxTTL); next.After(limit) {
		next = limit
	}
	if next.After(t.expires) {
		t.expires = next
	}
	writeJSON(w, http.StatusOK, envelope(nil, s.authObject(t, nil)))
}

// login serves auth/<mount>/login of Kubernetes.
func (s *Server) login(w http.ResponseWriter, mount string, body map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.authMounts[mount] {
	case "kubernetes":
		roleName, _ := body["role"].(string)
		jwt, _ := body["jwt"].(string)
		role := s.k8sRoles[roleName]
		if role == nil {
			writeErrors(w, http.StatusBadRequest, fmt.Sprintf("invalid role name %q", roleName))
			return
		}
		if jwt == "" || jwt != role.jwt {
			writeErrors(w, http.StatusForbidden, "permission denied")
			return
		}
		s.counts["login:kubernetes"]++
		writeJSON(w, http.StatusOK, envelope(nil, s.issue(role.policies, role.ttl, role.maxTTL, true, "auth/"+mount+"/login", map[string]string{"role": roleName})))
	default:
		writeErrors(w, http.StatusBadRequest, fmt.Sprintf("no auth method mounted at auth/%s", mount))
	}
}

// kvRequest serves KV v2 data and metadata paths.
func (s *Server) kvRequest(w http.ResponseWriter, method, p string, body map[string]any) {
	mount, rest, _ := strings.Cut(p, "/")
	kind, path, ok := strings.Cut(rest, "/")
	if !s.mounts[mount] || !ok || path == "" || (kind != "data" && kind != "metadata") {
		writeErrors(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", p))
		return
	}
	if s.kv[mount] == nil {
		s.kv[mount] = map[string]*kvSecret{}
	}
	sec := s.kv[mount][path]
	switch {
	case kind == "data" && method == "GET":
		s.counts["read:"+p]++
		if sec == nil {
			writeErrors(w, http.StatusNotFound)
			return
		}
		v := sec.versions[len(sec.versions)-1]
		meta := versionMeta(v, len(sec.versions))
		if !v.deleted.IsZero() {
			writeJSON(w, http.StatusNotFound, envelope(map[string]any{"data": nil, "metadata": meta}, nil))
			return
		}
		writeJSON(w, http.StatusOK, envelope(map[string]any{"data": v.data, "metadata": meta}, nil))
	case kind == "data" && (method == "POST" || method == "PUT"):
		data, ok := body["data"].(map[string]any)
		if !ok {
			writeErrors(w, http.StatusBadRequest, "no data provided")
			return
		}
		if sec == nil {
			sec = &kvSecret{}
			s.kv[mount][path] = sec
		}
		sec.versions = append(sec.versions, kvVersion{data: data, created: time.Now()})
		writeJSON(w, http.StatusOK, envelope(versionMeta(sec.versions[len(sec.versions)-1], len(sec.versions)), nil))
	case kind == "data" && method == "DELETE":
		if sec != nil {
			sec.versions[len(sec.versions)-1].deleted = time.Now()
		}
		w.WriteHeader(http.StatusNoContent)
	case kind == "metadata" && method == "DELETE":
		delete(s.kv[mount], path)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeErrors(w, http.StatusMethodNotAllowed, "unsupported operation")
	}
}

func versionMeta(v kvVersion, n int) map[string]any {
	deletion := ""
	if !v.deleted.IsZero() {
		deletion = v.deleted.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{"created_time": v.created.UTC().Format(time.RFC3339Nano), "custom_metadata": nil, "deletion_time": deletion, "destroyed": false, "version": n}
}
