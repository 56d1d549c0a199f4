package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/storage/etcdmeta"
)

// TestMetaEtcd runs two regcache replicas on one etcd (--meta etcd): a
// rule created through replica 1 is stored in etcd and listed by replica
// 2 after a restart, and a tag pulled through replica 1 is listed by
// replica 2 (tags/list, _catalog).
func TestMetaEtcd(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	etcd := peers.StartEtcd(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", true)
	prefix := "/rc-e2e/"
	meta := []string{"--upstream", "docker.io=" + u.URL(), "--meta", "etcd", "--etcd-endpoints", etcd.Endpoint, "--etcd-prefix", prefix}
	one := peers.StartRegcache(t, bin, meta...)
	two := peers.StartRegcache(t, bin, meta...)
	cli := func(rc *peers.Regcache, args ...string) string { t.Helper(); return replicaCLI(t, bin, rc, args...) }
	cli(one, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*")

	// The rule is in etcd, under the prefix.
	m, err := etcdmeta.Open(t.Context(), etcdmeta.Options{Endpoints: []string{etcd.Endpoint}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rules, err := m.Records(t.Context(), "cache-rules")
	if err != nil || len(rules) != 1 || !strings.Contains(string(rules["HubLibrary"]), "docker.io/library/*") {
		t.Fatalf("rules in etcd: %q, %v; want HubLibrary", rules, err)
	}

	two.Restart()
	if out := cli(two, "cache", "list", "-o", "table"); !strings.Contains(out, "HubLibrary") {
		t.Fatalf("replica 2 does not list the rule made through replica 1:\n%s", out)
	}

	checkImage(t, one.Addr+"/hub/app:v1", img)
	var tags struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	getJSON(t, two.URL()+"/v2/hub/app/tags/list", &tags)
	if tags.Name != "hub/app" || !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Errorf("replica 2 tags/list: %+v, want hub/app [v1]", tags)
	}
	var catalog struct {
		Repositories []string `json:"repositories"`
	}
	getJSON(t, two.URL()+"/v2/_catalog", &catalog)
	if !slices.Contains(catalog.Repositories, "hub/app") {
		t.Errorf("replica 2 _catalog: %v, want hub/app", catalog.Repositories)
	}
	// Replica 2 finds the tag's manifest link: a HEAD by tag answers with
	// the digest replica 1 recorded (its bytes are in replica 1's store).
	if tg, err := m.Tag(t.Context(), "hub/app", "v1"); err != nil || tg.Digest != img.Digest {
		t.Errorf("tag in etcd: %+v, %v; want %s", tg, err, img.Digest)
	}
}

// TestMetaEtcdAdminChangesReachEveryReplica: rules and credential sets
// changed through one replica's admin API are in force on the other within
// a few seconds, with no restart: a rule created through replica 1 serves
// a pull through replica 2, a credential set created through replica 2 is
// listed by replica 1, and a rule deleted through replica 2 stops matching
// on replica 1.
func TestMetaEtcdAdminChangesReachEveryReplica(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	etcd := peers.StartEtcd(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", true)
	meta := []string{"--upstream", "docker.io=" + u.URL(), "--meta", "etcd", "--etcd-endpoints", etcd.Endpoint, "--etcd-prefix", "/rc-admin/"}
	one := peers.StartRegcache(t, bin, meta...)
	two := peers.StartRegcache(t, bin, meta...)
	cli := func(rc *peers.Regcache, args ...string) string { t.Helper(); return replicaCLI(t, bin, rc, args...) }
	// within waits up to a few seconds for cond on a replica.
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after 5s: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Replica 2 has read the (empty) rules before the change.
	if out := cli(two, "cache", "list", "-o", "table"); strings.Contains(out, "HubLibrary") {
		t.Fatalf("replica 2 lists a rule before it was created:\n%s", out)
	}
	start := time.Now()
	cli(one, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*")
	within("replica 2 does not list the rule created through replica 1", func() bool {
		return strings.Contains(cli(two, "cache", "list", "-o", "table"), "HubLibrary")
	})
	t.Logf("rule in force on replica 2 %v after its creation on replica 1", time.Since(start).Round(time.Millisecond))
	checkImage(t, two.Addr+"/hub/app:v1", img)

	cli(two, "credential-set", "create", "-n", "HubCreds", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_USER", "-p", "env://REGCACHE_SECRET_PASS")
	within("replica 1 does not list the credential set created through replica 2", func() bool {
		return strings.Contains(cli(one, "credential-set", "list", "-o", "table"), "HubCreds")
	})

	cli(two, "cache", "delete", "-n", "HubLibrary")
	within("replica 1 still lists the rule deleted through replica 2", func() bool {
		return !strings.Contains(cli(one, "cache", "list", "-o", "table"), "HubLibrary")
	})
	// Nothing is fetched through the deleted rule any more: a repository
	// never pulled is unknown.
	resp, err := http.Get(one.URL() + "/v2/hub/other/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("replica 1 after the rule was deleted through replica 2: GET hub/other:v1 = %s, want 404", resp.Status)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// replicaCLI runs the admin CLI against rc with its token and returns its
// output; a failure ends the test.
func replicaCLI(t *testing.T, bin string, rc *peers.Regcache, args ...string) string {
	t.Helper()
	stdout, stderr, code := peers.Run(t, bin, append(args, "--server", rc.URL(), "--token", rc.Token())...)
	if code != 0 {
		t.Fatalf("regcache %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}
