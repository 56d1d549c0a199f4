package main

// The ha group: a cache run as replicas behind a load balancer, the way
// deploy/kubernetes-ha runs regcache. regcache-ha is --ha-replicas
// regcache processes with their blobs in one S3 bucket (SeaweedFS's
// `weed mini`), their metadata in one etcd, and, when the build has it,
// the peer channel through which the owner of a digest fetches a cold
// blob once for all of them; distribution-ha is as many of
// distribution's proxies on the same bucket (its s3-aws driver), all
// under one prefix of their own, as its documentation has replicas share their storage,
// serving blob bytes itself rather than redirecting clients to the bucket
// (regcache's default; distproxy --s3-redirect is distribution's).
// Each has haproxy in front (round-robin per request, health checks: the
// configuration of e2e/peers/haproxy.go), and the --ha-clients clients
// pull through haproxy, as clients of a Service would. The reference is
// one regcache on the filesystem store (srvRegcache), pulled directly.
//
// A server's CPU, RSS and threads are summed over its replicas and
// haproxy (the balancer's share also reported apart); SeaweedFS and etcd
// are shared services, measured apart as "backing".

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regcache/regcache/e2e/peers"
)

// The ha servers, scenarios and group.
const (
	srvRegcacheHA     = "regcache-ha"     // regcache replicas on S3 + etcd behind haproxy
	srvDistributionHA = "distribution-ha" // distribution proxies on S3 behind haproxy
	scHACold          = "ha-cold"
	scHAWarm          = "ha-warm"
	groupHA           = "ha"
	aliasHA           = "ha" // selects both ha scenarios
)

// haServers are the servers made of replicas behind a load balancer.
var haServers = []string{srvRegcacheHA, srvDistributionHA}

// seaweedFSVersion is the version of SeaweedFS that .ci/install-peers
// builds as weed-<version>: the same as e2e/peers.SeaweedFSVersion (a test
// checks), repeated here so that the benchmark does not link the test
// helpers.
const seaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// haBinaries are the programs the ha servers need besides the built ones.
type haBinaries struct {
	weed, etcd, haproxy string
}

// findHABinaries finds SeaweedFS, etcd and haproxy (installed by
// .ci/install-peers): on PATH, or where install-peers puts them when PATH
// lacks the directory (GOPATH/bin, /usr/sbin).
func findHABinaries(ctx context.Context) (haBinaries, error) {
	var hb haBinaries
	gopath := ""
	if out, err := exec.CommandContext(ctx, goCommand(), "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(strings.SplitN(string(out), string(os.PathListSeparator), 2)[0])
	}
	var missing []string
	for _, p := range []struct {
		dst      *string
		name     string
		fallback string
	}{
		{&hb.weed, "weed-" + seaweedFSVersion, filepath.Join(gopath, "bin", "weed-"+seaweedFSVersion)},
		{&hb.etcd, "etcd", "/usr/bin/etcd"},
		{&hb.haproxy, "haproxy", "/usr/sbin/haproxy"},
	} {
		if path, err := exec.LookPath(p.name); err == nil {
			*p.dst = path
		} else if filepath.IsAbs(p.fallback) && fileExists(p.fallback) {
			*p.dst = p.fallback
		}
		if *p.dst == "" {
			missing = append(missing, p.name)
		}
	}
	if len(missing) > 0 {
		return hb, fmt.Errorf("%s not found (on PATH, in GOPATH/bin or /usr/sbin): run .ci/install-peers, or leave the ha servers out with --servers or the ha scenarios with --scenarios",
			strings.Join(missing, ", "))
	}
	return hb, nil
}

// wantHA reports whether the run includes an ha scenario against an ha
// server.
func (b *bench) wantHA() bool {
	for _, sc := range scenarioList {
		if sc.group != groupHA {
			continue
		}
		for _, srv := range haServers {
			if b.want(sc, srv) {
				return true
			}
		}
	}
	return false
}

// haServices are the long-lived services of the ha servers, started on
// first use and kept for the run; each instance of an ha server gets a
// prefix of its own in one bucket (and in etcd), so that it starts empty.
type haServices struct {
	bins haBinaries
	// peerChannel: the built regcache has the peer flags (--peer-listen).
	peerChannel    bool
	haproxyVersion string

	s3                   *child // SeaweedFS; its addr is the S3 API's
	s3Client             *awss3.Client
	accessKey, secretKey string
	etcd                 *child
}

// prepareHA finds the binaries and what the built regcache supports.
func (b *bench) prepareHA(ctx context.Context) error {
	bins, err := findHABinaries(ctx)
	if err != nil {
		return err
	}
	b.ha = &haServices{bins: bins, haproxyVersion: haproxyVersion(ctx, bins.haproxy)}
	help, err := exec.CommandContext(ctx, filepath.Join(b.binDir, "regcache"), "serve", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("regcache serve --help: %w\n%s", err, help)
	}
	b.ha.peerChannel = strings.Contains(string(help), "--peer-listen")
	if b.ha.peerChannel {
		b.logf("regcache has the peer channel: the replicas of %s run with --peer-listen, --peers and --peer-secret-file", srvRegcacheHA)
	} else {
		b.logf("regcache has no peer channel (serve --help lacks --peer-listen): the replicas of %s each fetch their own misses", srvRegcacheHA)
	}
	return nil
}

// haproxyVersion returns the version haproxy -v prints ("2.6.12-1").
func haproxyVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "-v").Output()
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 && f[0] == "HAProxy" && f[1] == "version" {
		return f[2]
	}
	return "unknown"
}

// serviceReadyTimeout bounds the start of SeaweedFS (master, volume
// server, filer and S3 gateway come up one after the other, about 5 s) and
// etcd.
const serviceReadyTimeout = 90 * time.Second

// pollReady calls check every 100 ms until it succeeds, c exits or
// serviceReadyTimeout passes.
func pollReady(ctx context.Context, c *child, check func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, serviceReadyTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready (%v); output:\n%s", c.name, c.err, c.tail(4096))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready on %s: %v; output:\n%s", c.name, c.addr, err, c.tail(4096))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startS3 starts SeaweedFS once, on free loopback ports with its data
// under the work directory and one identity with random keys.
func (b *bench) startS3(ctx context.Context) (*child, error) {
	h := b.ha
	if h.s3 != nil {
		return h.s3, nil
	}
	dir := filepath.Join(b.work, "data", "seaweedfs")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	key := make([]byte, 24)
	if _, err := crand.Read(key); err != nil {
		return nil, err
	}
	h.accessKey, h.secretKey = "AKIDBENCH"+strings.ToUpper(hex.EncodeToString(key[:4])), hex.EncodeToString(key[4:])
	ident, err := json.Marshal(map[string]any{"identities": []map[string]any{{
		"name":        "bench",
		"credentials": []map[string]string{{"accessKey": h.accessKey, "secretKey": h.secretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfg, ident, 0o600); err != nil {
		return nil, err
	}
	spec := childSpec{
		name: "seaweedfs",
		bin:  h.bins.weed,
		log:  filepath.Join(b.work, "logs", "seaweedfs.log"),
		args: func(addr string) ([]string, error) {
			_, s3Port, _ := strings.Cut(addr, ":")
			args := []string{"mini", "-dir=" + filepath.Join(dir, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.config=" + cfg,
				"-admin.ui=false", "-admin.port.legacy=0", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.port=" + s3Port}
			// weed mini listens on ten ports: each is given, none left to
			// a default that another server might hold.
			for _, n := range []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
				"s3.port.grpc", "admin.port", "admin.port.grpc"} {
				a, err := freeAddr()
				if err != nil {
					return nil, err
				}
				_, p, _ := strings.Cut(a, ":")
				args = append(args, "-"+n+"="+p)
			}
			return args, nil
		},
		ready: func(ctx context.Context, c *child) error {
			h.s3Client = awss3.New(awss3.Options{
				Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(c.URL()),
				Credentials:                aws.NewCredentialsCache(staticCreds{h.accessKey, h.secretKey}),
				RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
				ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
			})
			return pollReady(ctx, c, func(ctx context.Context) error {
				_, err := h.s3Client.ListBuckets(ctx, &awss3.ListBucketsInput{})
				return err
			})
		},
	}
	t := time.Now()
	c, err := startChild(ctx, b.procs, spec)
	if err != nil {
		return nil, err
	}
	h.s3 = c
	if err := h.createBucket(ctx); err != nil {
		return nil, err
	}
	b.logf("SeaweedFS %s (S3 API) on %s, ready in %v", seaweedFSVersion, c.addr, time.Since(t).Round(time.Millisecond))
	return c, nil
}

// staticCreds are the SeaweedFS identity's credentials.
type staticCreds struct{ id, secret string }

func (c staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: c.id, SecretAccessKey: c.secret, Source: "bench"}, nil
}

// s3Env is the environment that gives a replica the S3 credentials.
func (h *haServices) s3Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + h.accessKey, "AWS_SECRET_ACCESS_KEY=" + h.secretKey}
}

// haBucket is the one bucket of the ha servers; each instance keeps its
// objects under a prefix of its own. SeaweedFS allocates volumes per
// bucket on its first write, which a cold scenario would otherwise pay
// for once per instance (about a second).
const haBucket = "bench"

// createBucket creates haBucket and writes (then removes) one object, so
// that SeaweedFS has allocated its volumes before anything is measured.
func (h *haServices) createBucket(ctx context.Context) error {
	if _, err := h.s3Client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(haBucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", haBucket, err)
	}
	key := aws.String("warm-up")
	if _, err := h.s3Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(haBucket), Key: key, Body: strings.NewReader("warm-up")}); err != nil {
		return fmt.Errorf("write to bucket %s: %w", haBucket, err)
	}
	if _, err := h.s3Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(haBucket), Key: key}); err != nil {
		return fmt.Errorf("remove from bucket %s: %w", haBucket, err)
	}
	return nil
}

// startEtcd starts a one-member etcd once, on free loopback ports with
// its data under the work directory.
func (b *bench) startEtcd(ctx context.Context) (*child, error) {
	h := b.ha
	if h.etcd != nil {
		return h.etcd, nil
	}
	dir := filepath.Join(b.work, "data", "etcd")
	spec := childSpec{
		name: "etcd",
		bin:  h.bins.etcd,
		log:  filepath.Join(b.work, "logs", "etcd.log"),
		// ETCD_* variables of the developer's shell would change the server.
		drop: []string{"ETCD_"},
		args: func(addr string) ([]string, error) {
			peerAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			client, peer := "http://"+addr, "http://"+peerAddr
			return []string{
				"--name", "bench", "--data-dir", dir,
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
				"--initial-cluster", "bench=" + peer, "--initial-cluster-state", "new",
				"--logger", "zap", "--log-outputs", "stderr",
			}, nil
		},
		ready: func(ctx context.Context, c *child) error {
			return pollReady(ctx, c, func(ctx context.Context) error { return etcdHealthy(ctx, c.URL()) })
		},
	}
	c, err := startChild(ctx, b.procs, spec)
	if err != nil {
		return nil, err
	}
	h.etcd = c
	b.logf("etcd on %s", c.addr)
	return c, nil
}

// etcdHealthy asks etcd's /health whether it has a leader.
func etcdHealthy(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var health struct{ Health string }
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		return fmt.Errorf("/health: %s: %w", resp.Status, err)
	}
	if health.Health != "true" {
		return fmt.Errorf("/health: %s, health %q", resp.Status, health.Health)
	}
	return nil
}

// withHA starts server (an ha server) as --ha-replicas replicas with
// their directories under data, their objects under the prefix id of
// haBucket (and regcache's metadata under the etcd prefix /id/),
// and haproxy in front; runs f with haproxy's child (its members the
// replicas, its backing SeaweedFS and etcd); then stops them all.
func (b *bench) withHA(ctx context.Context, server, id, data string, f func(*child) error) error {
	h := b.ha
	if h == nil {
		return errors.New("the ha services were not prepared")
	}
	s3, err := b.startS3(ctx)
	if err != nil {
		return err
	}
	backing := []*child{s3}
	n := b.opts.HAReplicas
	var replica func(i int) childSpec
	// regcache's peer channel: the flags of replica i, and the peer
	// addresses.
	var peerArgs func(i int) []string
	var peerAddrs []string
	checkPath := "/readyz"
	switch server {
	case srvRegcacheHA:
		etcd, err := b.startEtcd(ctx)
		if err != nil {
			return err
		}
		backing = append(backing, etcd)
		cfg := filepath.Join(data, "regcache.yaml")
		if err := b.writeRegcacheConfig(cfg); err != nil {
			return err
		}
		if h.peerChannel {
			if peerArgs, peerAddrs, err = b.peerFlags(data, n); err != nil {
				return err
			}
		}
		replica = func(i int) childSpec {
			dir := filepath.Join(data, fmt.Sprintf("r%d", i))
			return childSpec{
				name: fmt.Sprintf("%s replica %d", server, i), bin: filepath.Join(b.binDir, "regcache"),
				log: filepath.Join(b.work, "logs", fmt.Sprintf("%s-r%d.log", id, i)), probe: true,
				drop: []string{"REGCACHE_", "AWS_"}, env: h.s3Env(),
				args: func(addr string) ([]string, error) {
					args := []string{"serve", "--config", cfg, "--listen", addr, "--data-dir", dir, fmt.Sprintf("--metrics=%t", b.opts.RegcacheMetrics),
						"--store", "s3", "--s3-endpoint", s3.URL(), "--s3-bucket", haBucket, "--s3-prefix", id, "--s3-path-style",
						"--meta", "etcd", "--etcd-endpoints", etcd.URL(), "--etcd-prefix", "/" + id + "/"}
					if peerArgs != nil {
						args = append(args, peerArgs(i)...)
					}
					return args, nil
				},
			}
		}
	case srvDistributionHA:
		checkPath = "/v2/"
		replica = func(i int) childSpec {
			return childSpec{
				name: fmt.Sprintf("%s replica %d", server, i), bin: filepath.Join(b.binDir, "distproxy"),
				log: filepath.Join(b.work, "logs", fmt.Sprintf("%s-r%d.log", id, i)), probe: true,
				drop: []string{"REGISTRY_", "OTEL_", "AWS_"}, env: append([]string{"OTEL_TRACES_EXPORTER=none"}, h.s3Env()...),
				args: func(addr string) ([]string, error) {
					// Every replica under the same root: they share what
					// any of them stored.
					return []string{"--addr", addr, "--remote", b.upstream.URL(), "--s3-endpoint", s3.URL(), "--s3-bucket", haBucket, "--s3-prefix", "/" + id}, nil
				},
			}
		}
	default:
		return fmt.Errorf("%s is not a replicated server", server)
	}

	var replicas []*child
	defer func() {
		for _, r := range replicas {
			r.stop()
		}
	}()
	addrs := make([]string, 0, n)
	for i := range n {
		r, err := startChild(ctx, b.procs, replica(i))
		if err != nil {
			return err
		}
		replicas = append(replicas, r)
		addrs = append(addrs, r.addr)
	}
	if peerAddrs != nil {
		// A replica that has not yet seen another up fetches that one's
		// digests itself: nothing is measured before they all have.
		t := time.Now()
		if err := waitMembers(ctx, replicas, peerAddrs); err != nil {
			return err
		}
		b.logf("%s: every replica sees the %d others up after %v", server, n-1, time.Since(t).Round(time.Millisecond))
	}
	front, err := startChild(ctx, b.procs, childSpec{
		name: server, bin: h.bins.haproxy, log: filepath.Join(b.work, "logs", id+"-haproxy.log"),
		args: func(addr string) ([]string, error) {
			cfg := filepath.Join(data, "haproxy.cfg")
			if err := writeHAProxyConfig(cfg, addr, checkPath, addrs); err != nil {
				return nil, err
			}
			// -db: foreground, so that the process is the proxy.
			return []string{"-db", "-f", cfg}, nil
		},
	})
	if err != nil {
		return err
	}
	defer front.stop()
	front.members, front.backing = replicas, backing
	b.logf("%s: %d replicas on %s behind haproxy on %s", server, n, strings.Join(addrs, ", "), front.addr)
	return f(front)
}

// peerFlags writes the replicas' shared peer secret under dir and returns
// the peer channel flags of replica i of n, each on a loopback port chosen
// now (every replica must know all the others' before any starts), and
// those addresses.
func (b *bench) peerFlags(dir string, n int) (func(i int) []string, []string, error) {
	secret := make([]byte, 32)
	if _, err := crand.Read(secret); err != nil {
		return nil, nil, err
	}
	file := filepath.Join(dir, "peer-secret")
	if err := os.WriteFile(file, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		return nil, nil, err
	}
	peers := make([]string, n)
	for i := range peers {
		a, err := freeAddr()
		if err != nil {
			return nil, nil, err
		}
		peers[i] = a
	}
	return func(i int) []string {
		return []string{"--peer-listen", peers[i], "--peer-advertise", peers[i], "--peers", strings.Join(peers, ","), "--peer-secret-file", file}
	}, peers, nil
}

// membersTimeout bounds waitMembers: replicas ping each other about every
// second.
const membersTimeout = 30 * time.Second

// waitMembers waits until replica i has logged every other replica's peer
// address as up (regcache's "cluster member up" line), for every i.
func waitMembers(ctx context.Context, replicas []*child, peerAddrs []string) error {
	ctx, cancel := context.WithTimeout(ctx, membersTimeout)
	defer cancel()
	for {
		missing := ""
		for i, r := range replicas {
			log, err := os.ReadFile(r.log)
			if err != nil {
				return err
			}
			for j, a := range peerAddrs {
				if j != i && !strings.Contains(string(log), fmt.Sprintf(`msg="cluster member up" component=cluster peer=%s`, a)) {
					missing = fmt.Sprintf("%s has not seen replica %d (%s) up", r.name, j, a)
				}
			}
		}
		if missing == "" {
			return nil
		}
		for _, r := range replicas {
			if r.exited() {
				return fmt.Errorf("%s exited (%v); output:\n%s", r.name, r.err, r.tail(4096))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replicas not all up to each other after %v: %s", membersTimeout, missing)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeHAProxyConfig writes haproxy's configuration to path: the one the
// e2e tests run (e2e/peers.HAProxyConfig).
func writeHAProxyConfig(path, listen, checkPath string, backends []string) error {
	return os.WriteFile(path, []byte(peers.HAProxyConfig(listen, checkPath, backends)), 0o644)
}
