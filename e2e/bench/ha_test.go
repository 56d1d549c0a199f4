package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// TestSeaweedFSVersion: the benchmark runs the SeaweedFS that
// .ci/install-peers builds, as the e2e tests do.
func TestSeaweedFSVersion(t *testing.T) {
	t.Parallel()
	if seaweedFSVersion != peers.SeaweedFSVersion {
		t.Errorf("seaweedFSVersion %s, e2e/peers.SeaweedFSVersion %s: change them together", seaweedFSVersion, peers.SeaweedFSVersion)
	}
}

// TestHAProxyConfig checks the generated configuration with haproxy
// itself (haproxy -c) and that it balances over every replica with the
// health check asked for.
func TestHAProxyConfig(t *testing.T) {
	t.Parallel()
	bin := "/usr/sbin/haproxy"
	if p, err := exec.LookPath("haproxy"); err == nil {
		bin = p
	} else if !fileExists(bin) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("haproxy not installed (run .ci/install-peers): %v", err)
		}
		t.Skipf("haproxy not installed (run .ci/install-peers): %v", err)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	backends := []string{"127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"}
	if err := writeHAProxyConfig(path, "127.0.0.1:18080", "/readyz", backends); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"bind 127.0.0.1:18080\n",
		"balance roundrobin\n",
		"option httpchk GET /readyz\n",
		"server b0 127.0.0.1:18081 check\n",
		"server b1 127.0.0.1:18082 check\n",
		"server b2 127.0.0.1:18083 check\n",
	} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, cfg)
		}
	}
}

// TestPeerFlags: every replica gets its own listen address, advertised as
// such, the same list of all of them and the same secret file, holding at
// least 32 bytes.
func TestPeerFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := &bench{}
	flags, addrs, err := b.peerFlags(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	value := func(args []string, flag string) string {
		i := slices.Index(args, flag)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("%q has no %s", args, flag)
		}
		return args[i+1]
	}
	var listens []string
	for i := range 3 {
		args := flags(i)
		listen := value(args, "--peer-listen")
		if adv := value(args, "--peer-advertise"); adv != listen || !strings.HasPrefix(listen, "127.0.0.1:") {
			t.Errorf("replica %d: --peer-listen %s, --peer-advertise %s; want one loopback address", i, listen, adv)
		}
		listens = append(listens, listen)
		if got, want := value(args, "--peers"), value(flags(0), "--peers"); got != want {
			t.Errorf("replica %d: --peers %s, replica 0's %s", i, got, want)
		}
		secret, err := os.ReadFile(value(args, "--peer-secret-file"))
		if err != nil || len(secret) < 32 {
			t.Errorf("replica %d: secret file: %d bytes, %v; want at least 32", i, len(secret), err)
		}
	}
	if got := strings.Split(value(flags(0), "--peers"), ","); !slices.Equal(got, listens) || !slices.Equal(addrs, listens) {
		t.Errorf("--peers %v, want every replica's address %v", got, listens)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(listens)))) != 3 {
		t.Errorf("peer addresses %v: want three different ones", listens)
	}
}

// TestChildPids: a replicated server's processes are its balancer's and
// its replicas', not those of the services it keeps its state in.
func TestChildPids(t *testing.T) {
	t.Parallel()
	start := func() *child {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{name: "sleep", cmd: cmd, done: make(chan struct{})}
		go func() { c.err = cmd.Wait(); close(c.done) }()
		t.Cleanup(c.kill)
		return c
	}
	front, r0, r1, s3 := start(), start(), start(), start()
	front.members, front.backing = []*child{r0, r1}, []*child{s3}
	if got, want := front.pids(), []int{front.Pid(), r0.Pid(), r1.Pid()}; !slices.Equal(got, want) {
		t.Errorf("pids %v, want the balancer's and the replicas' %v", got, want)
	}
	if got, want := front.backingPids(), []int{s3.Pid()}; !slices.Equal(got, want) {
		t.Errorf("backing pids %v, want %v", got, want)
	}
	if got := r0.pids(); !slices.Equal(got, []int{r0.Pid()}) {
		t.Errorf("a lone server's pids %v, want its own", got)
	}
}

// TestHAMarkdown: the report shows the replicated runs in a table of
// their own and says how they ran.
func TestHAMarkdown(t *testing.T) {
	t.Parallel()
	peer := true
	r := &Report{
		Config: RunConfig{HAReplicas: 3, HAClients: 48, HAPeerChannel: &peer, HAProxyVersion: "2.6.12", SeaweedFSVersion: seaweedFSVersion},
		Results: []Result{
			{Scenario: scCold1, Server: srvRegcache, Clients: 1},
			{Scenario: scHACold, Server: srvRegcacheHA, Clients: 48, Replicas: 3, UpstreamRatio: 1, CPUSeconds: 2.5, BalancerCPUSeconds: 0.5, BackingCPUSeconds: 1.25},
			{Scenario: scHAWarm, Server: srvRegcacheHA, Clients: 48, Replicas: 3, BackingPeakRSSMiB: 321},
		},
	}
	md := markdown(r)
	for _, want := range []string{
		"- Replicas (ha-cold, ha-warm): 3 per server behind haproxy 2.6.12",
		"48 clients through it",
		"its peer channel on",
		"Replicas behind haproxy",
		"| ha-cold | regcache-ha | 3 | 48 |",
		"| 2.50 | 0.50 |",
		"| 1.25 |",
		"| 321 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Count(md, "| cold-1 |") != 2 { // transfers, requests; not the ha table
		t.Errorf("cold-1 in %d tables, want 2 (not the ha table):\n%s", strings.Count(md, "| cold-1 |"), md)
	}
}

// TestWaitMembers: the replicas count as formed once each has logged every
// other one's peer address as up, and not before.
func TestWaitMembers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := []string{"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"}
	up := func(a string) string { return `msg="cluster member up" component=cluster peer=` + a + "\n" }
	var replicas []*child
	for i := range addrs {
		r := &child{name: "replica " + strconv.Itoa(i), log: filepath.Join(dir, strconv.Itoa(i)+".log"), done: make(chan struct{})}
		var log string
		for j, a := range addrs {
			if j != i {
				log += "time=... level=INFO " + up(a)
			}
		}
		if i == 2 { // replica 2 has not seen replica 0 yet
			log = strings.Replace(log, up(addrs[0]), "", 1)
		}
		if err := os.WriteFile(r.log, []byte(log), 0o644); err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := waitMembers(ctx, replicas, addrs); err == nil || !strings.Contains(err.Error(), "replica 2 has not seen replica 0") {
		t.Fatalf("waitMembers with replica 2 missing replica 0: %v, want an error saying so", err)
	}
	f, err := os.OpenFile(replicas[2].log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(up(addrs[0])); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := waitMembers(t.Context(), replicas, addrs); err != nil {
		t.Fatalf("waitMembers with every replica up to the others: %v", err)
	}
}
