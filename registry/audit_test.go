package registry_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// Every change through the admin API (cache rules and credential sets:
// create, update, delete) logs exactly one audit line: the event, the
// name, the changed fields (references, never secret values) and where
// it came from; X-Forwarded-For only when the peer is a trusted proxy.
// Reads and refused changes log none.
func TestAdminAudit(t *testing.T) {
	t.Parallel()
	const forwarded = "198.51.100.7"
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string // the forwardedFor attribute, "" for none
	}{
		{"direct", nil, ""},
		{"through a trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "forwardedFor=" + forwarded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := logFile(t)
			s := newCredStackWith(t, stackConfig{logs: logs, trusted: tc.trusted})
			text := func() string { raw, _ := os.ReadFile(logs.Name()); return string(raw) }
			steps := []struct {
				method, path, body string
				status             int
				want               []string // in the one audit line; nil: no audit line
			}{
				{"POST", setsPath, `{"name":"hub-team","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, 201,
					[]string{"event=credential-set.create", "name=hub-team", "changed.loginServer=docker.io",
						"changed.usernameSecretIdentifier=env://REGCACHE_SECRET_HUB_USER", "changed.passwordSecretIdentifier=env://REGCACHE_SECRET_HUB_PASS"}},
				{"PATCH", setsPath + "/hub-team", `{"passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS2"}`, 200,
					[]string{"event=credential-set.update", "name=hub-team", "changed.passwordSecretIdentifier=env://REGCACHE_SECRET_HUB_PASS2"}},
				{"POST", rulesPath, `{"name":"hub-library","sourceRepository":"docker.io/library/*","targetRepository":"hub/*"}`, 201,
					[]string{"event=cache-rule.create", "name=hub-library", "changed.sourceRepository=docker.io/library/*", "changed.targetRepository=hub/*", `changed.credentialSetName=""`}},
				{"PATCH", rulesPath + "/hub-library", `{"credentialSetName":"hub-team"}`, 200,
					[]string{"event=cache-rule.update", "name=hub-library", "changed.credentialSetName=hub-team"}},
				{"GET", rulesPath + "/hub-library", "", 200, nil},
				{"POST", rulesPath, `{"name":"bad rule"}`, 400, nil},
				{"DELETE", rulesPath + "/hub-library", "", 204, []string{"event=cache-rule.delete", "name=hub-library"}},
				{"DELETE", setsPath + "/hub-team", "", 204, []string{"event=credential-set.delete", "name=hub-team"}},
			}
			for _, st := range steps {
				before := auditLines(text())
				resp, body := do(t, st.method, s.url+st.path, map[string]string{"Authorization": "Bearer " + testToken,
					"Content-Type": "application/json", "X-Forwarded-For": forwarded}, strings.NewReader(st.body))
				if resp.StatusCode != st.status {
					t.Fatalf("%s %s: %d %s", st.method, st.path, resp.StatusCode, body)
				}
				lines := auditLines(text())[len(before):]
				if st.want == nil {
					if len(lines) != 0 {
						t.Errorf("%s %s logged audit lines: %q", st.method, st.path, lines)
					}
					continue
				}
				if len(lines) != 1 {
					t.Fatalf("%s %s: %d audit lines, want 1: %q", st.method, st.path, len(lines), lines)
				}
				for _, w := range append(st.want, "remote=127.0.0.1:") {
					if !strings.Contains(lines[0], " "+w) {
						t.Errorf("%s %s: audit line %q lacks %s", st.method, st.path, lines[0], w)
					}
				}
				if got := strings.Contains(lines[0], "forwardedFor="); got != (tc.want != "") || !strings.Contains(lines[0], tc.want) {
					t.Errorf("audit line %q; want forwardedFor %q", lines[0], tc.want)
				}
				if !strings.HasPrefix(lines[0], "time=") {
					t.Errorf("audit line %q has no time", lines[0])
				}
			}
			for _, secret := range []string{"hub-s3cr3t", "hub-user", testToken} {
				if strings.Contains(text(), secret) {
					t.Errorf("the logs hold the secret %q:\n%s", secret, text())
				}
			}
		})
	}
}

// auditLines returns the audit lines of text logs.
func auditLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, " msg=audit ") {
			out = append(out, l)
		}
	}
	return out
}
