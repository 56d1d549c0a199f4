package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
)

// TestClusterConfig: the cluster: section, its REGCACHE_* variables and
// its flags, in rising precedence.
func TestClusterConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "regcache.yaml", `
cluster:
  listen: ":5001"
  advertise: 10.0.0.1:5001
  peers: [10.0.0.1:5001, 10.0.0.2:5001]
  secretFile: /run/secrets/peer
  ca: /etc/peer-ca.pem
`)
	cfg, err := parseServe(t, []string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := clusterConfig{Listen: ":5001", Advertise: "10.0.0.1:5001", Peers: []string{"10.0.0.1:5001", "10.0.0.2:5001"},
		SecretFile: "/run/secrets/peer", CA: "/etc/peer-ca.pem"}
	if !reflect.DeepEqual(cfg.Cluster, want) {
		t.Fatalf("from the file: %+v, want %+v", cfg.Cluster, want)
	}
	cfg, err = parseServe(t, []string{"--config", file, "--peers", "10.0.0.7:5001, 10.0.0.8:5001", "--peer-advertise", "10.0.0.7:5001"},
		map[string]string{"REGCACHE_PEER_LISTEN": ":6001", "REGCACHE_PEERS": "10.0.0.3:5001", "REGCACHE_PEER_SECRET_FILE": "/s"})
	if err != nil {
		t.Fatal(err)
	}
	want = clusterConfig{Listen: ":6001", Advertise: "10.0.0.7:5001", Peers: []string{"10.0.0.7:5001", "10.0.0.8:5001"},
		SecretFile: "/s", CA: "/etc/peer-ca.pem"}
	if !reflect.DeepEqual(cfg.Cluster, want) {
		t.Fatalf("with env and flags: %+v, want %+v", cfg.Cluster, want)
	}
}

func TestClusterConfigErrors(t *testing.T) {
	t.Parallel()
	base := []string{"--peer-listen", ":5001", "--peer-advertise", "10.0.0.1:5001", "--peer-secret-file", "/s"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peers", "10.0.0.1:5001"}, "cluster.listen (--peer-listen) is empty"},
		{[]string{"--peer-listen", "5001", "--peers", "a:1"}, `cluster.listen "5001": want [host]:port`},
		{[]string{"--peer-listen", ":5001", "--peers", "a:1", "--peer-secret-file", "/s"}, "--peer-advertise"},
		{[]string{"--peer-listen", ":5001", "--peers", "a:1", "--peer-advertise", "a:1"}, "--peer-secret-file"},
		{base, "either --peers"},
		{append(base, "--peers", "a:1", "--peers-dns", "svc:5001"), "either --peers"},
		{append(base, "--peers", "10.0.0.2"), `peers "10.0.0.2": want host:port`},
		{append(base, "--peers-dns", "regcache-peers"), `peersDNS "regcache-peers": want name:port`},
	} {
		if _, err := parseServe(t, tc.args, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// TestClusterSecretRefused: serve refuses to start with a weak or missing
// peer secret, and never prints it.
func TestClusterSecretRefused(t *testing.T) {
	t.Parallel()
	weak := writeFile(t, "peer.secret", "short-secret-value\n")
	for _, tc := range []struct {
		file, want string
	}{
		{weak, "18 bytes; want at least 32"},
		{weak + ".missing", "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--peer-listen", "127.0.0.1:0",
			"--peer-advertise", "127.0.0.1:5001", "--peers", "127.0.0.1:5001", "--peer-secret-file", tc.file}
		err := run(context.Background(), args, &stdout, &stderr, mapEnv(nil))
		out := stdout.String() + stderr.String() + errString(err)
		if err == nil || !strings.Contains(out, tc.want) || strings.Contains(out, "short-secret-value") {
			t.Errorf("secret file %s: err %v, output:\n%s\nwant a failure with %q and no secret", tc.file, err, out, tc.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
