package peers

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestStartEtcd starts two etcd servers side by side (their ports must not
// collide), writes a key through one's HTTP gateway, restarts it and reads
// the key back, and checks that the other server does not have it.
func TestStartEtcd(t *testing.T) {
	t.Parallel()
	e := StartEtcd(t)
	other := StartEtcd(t)
	if e.Endpoint == other.Endpoint {
		t.Fatalf("both servers on %s", e.Endpoint)
	}
	// The v3 JSON gateway takes base64 keys: "a2V5" is "key", "dmFsdWU=" is "value".
	post := func(endpoint, path, body string) map[string]any {
		t.Helper()
		resp, err := http.Post(endpoint+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s %v", path, resp.Status, err)
		}
		return out
	}
	post(e.Endpoint, "/v3/kv/put", `{"key":"a2V5","value":"dmFsdWU="}`)
	e.Restart()
	if got := post(e.Endpoint, "/v3/kv/range", `{"key":"a2V5"}`); got["count"] != "1" {
		t.Errorf("after restart: %v, want the key", got)
	}
	if got := post(other.Endpoint, "/v3/kv/range", `{"key":"a2V5"}`); got["count"] != nil {
		t.Errorf("the other server: %v, want no key", got)
	}
}
