// Package cluster lets regcache replicas sharing one blob store fetch each
// blob from the upstream once: it knows the members (a static list or a
// DNS name such as a Kubernetes headless Service), which of them answer,
// which member owns a digest (rendezvous hashing over the live members),
// and it carries the peer channel, an authenticated listener that serves
// only a ping, the GET of a blob and the requests of upload sessions
// opened on it, to other replicas only.
//
// A replica's fill of a cold blob streams from the owner, which alone
// fetches from the upstream (cache.Options.Peers); when the owner is lost
// mid-blob the fill resumes elsewhere from the bytes it has (cache). An
// upload session stays on the replica that started it; requests for it
// reaching other replicas are forwarded there (uploads.go).
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Default intervals of membership.
const (
	DefaultProbeInterval   = time.Second
	DefaultResolveInterval = 5 * time.Second
)

// Config is a replica's view of its cluster.
type Config struct {
	// Advertise is this replica's peer address, host:port, as the others
	// reach it (and as it appears in Peers or the DNS answers, so that it
	// is told apart from the others).
	Advertise string
	// Peers is a static list of members' peer addresses (self may be in it).
	Peers []string
	// PeersDNS is name:port; the name's A/AAAA records are the members.
	PeersDNS string
	// Secret authenticates the peer channel (ReadSecret).
	Secret []byte
	// ServerTLS, when set, makes the peer listener serve TLS; ClientTLS,
	// when set, makes requests to peers use https with it.
	ServerTLS, ClientTLS *tls.Config
	// ProbeInterval is the period of pings (default 1s); ResolveInterval
	// the period of DNS lookups (default 5s).
	ProbeInterval, ResolveInterval time.Duration
	// Transport carries requests to peers (default: a transport with
	// short dial and header timeouts).
	Transport http.RoundTripper
	// Resolver resolves PeersDNS (default net.DefaultResolver).
	Resolver *net.Resolver
	// Now is the clock of tokens (tests).
	Now func() time.Time
	Log *slog.Logger
}

// Cluster is one replica's membership and peer channel.
type Cluster struct {
	self    string
	scheme  string
	members *membership
	sign    signer
	client  *http.Client
	uploads *http.Client // forwarded upload-session requests (uploads.go)
	srvTLS  *tls.Config
	probe   time.Duration
	resolve time.Duration
	log     *slog.Logger
}

// New checks cfg and returns the cluster; Run follows the members.
func New(cfg Config) (*Cluster, error) {
	if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil || cfg.Advertise == "" {
		return nil, fmt.Errorf("peer advertise address %q: want host:port, the address other replicas reach this one's peer listener on (--peer-advertise)", cfg.Advertise)
	}
	if (len(cfg.Peers) == 0) == (cfg.PeersDNS == "") {
		return nil, errors.New("cluster members: give either --peers (host:port,...) or --peers-dns (name:port), not both or neither")
	}
	for _, p := range cfg.Peers {
		if _, port, err := net.SplitHostPort(p); err != nil || port == "" {
			return nil, fmt.Errorf("peers %q: want host:port, e.g. 10.0.0.2:5001", p)
		}
	}
	if cfg.PeersDNS != "" {
		if h, port, err := net.SplitHostPort(cfg.PeersDNS); err != nil || h == "" || port == "" {
			return nil, fmt.Errorf("peersDNS %q: want name:port, e.g. regcache-peers.default.svc.cluster.local:5001", cfg.PeersDNS)
		}
	}
	if len(cfg.Secret) < MinSecretSize {
		return nil, fmt.Errorf("peer secret: %d bytes; want at least %d", len(cfg.Secret), MinSecretSize)
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ResolveInterval <= 0 {
		cfg.ResolveInterval = DefaultResolveInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	scheme := "http"
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     cfg.ClientTLS,
			TLSHandshakeTimeout: 5 * time.Second,
			// The owner answers once its upstream answered (and it had a
			// fill slot): no longer than a client would wait for it.
			ResponseHeaderTimeout: 2 * time.Minute,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16,
		}
	}
	if cfg.ClientTLS != nil {
		scheme = "https"
	}
	// A forwarded PUT is answered once the owner committed the blob, which
	// takes as long as its size asks: no deadline on the answer there (the
	// client's connection bounds it).
	upTransport := cfg.Transport
	if t, ok := cfg.Transport.(*http.Transport); ok {
		t = t.Clone()
		t.ResponseHeaderTimeout = 0
		upTransport = t
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	m := &membership{self: cfg.Advertise, static: cfg.Peers, dns: cfg.PeersDNS, resolver: cfg.Resolver, log: cfg.Log, live: map[string]bool{}}
	m.update(cfg.Peers)
	return &Cluster{self: cfg.Advertise, scheme: scheme, members: m, sign: signer{secret: cfg.Secret, now: cfg.Now},
		client:  &http.Client{Transport: cfg.Transport, CheckRedirect: noRedirect},
		uploads: &http.Client{Transport: upTransport, CheckRedirect: noRedirect},
		srvTLS:  cfg.ServerTLS, probe: cfg.ProbeInterval, resolve: cfg.ResolveInterval, log: cfg.Log}, nil
}

// LoadTLS builds the TLS settings of the peer channel: the listener
// serves cert and key; requests to peers trust the CAs in the PEM file ca
// (the system's when empty). All empty: plain HTTP.
func LoadTLS(cert, key, ca string) (server, client *tls.Config, err error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, nil, fmt.Errorf("peer TLS: tlsCert %q, tlsKey %q: give both (--peer-tls-cert and --peer-tls-key), or neither", cert, key)
	}
	client = &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, nil, fmt.Errorf("peer CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("peer CA %s: no PEM certificate in it", ca)
		}
		client.RootCAs = pool
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, nil, fmt.Errorf("peer TLS certificate: %w", err)
		}
		server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}}
	}
	return server, client, nil
}

// Self is this replica's advertised peer address.
func (c *Cluster) Self() string { return c.self }

// Live returns this replica and the members answering now, sorted.
func (c *Cluster) Live() []string { return c.members.liveMembers() }

// Owner returns the live member owning digest; empty when this replica
// owns it (or no other member is live). It implements cache.Peers.
func (c *Cluster) Owner(digest string) string {
	if o := Owner(digest, c.members.liveMembers()); o != c.self {
		return o
	}
	return ""
}

// Run resolves the members and pings them until ctx ends.
func (c *Cluster) Run(ctx context.Context) {
	var resolved time.Time
	t := time.NewTicker(c.probe)
	defer t.Stop()
	for {
		if c.members.dns != "" && time.Since(resolved) >= c.resolve {
			if addrs, err := c.members.resolve(ctx); err != nil {
				c.log.Warn("resolving the cluster members failed: keeping the last known", "peersDNS", c.members.dns, "err", err)
			} else {
				c.members.update(addrs)
			}
			resolved = time.Now()
		}
		var wg sync.WaitGroup
		for _, a := range c.members.known() {
			wg.Go(func() {
				err := c.ping(ctx, a)
				if ctx.Err() == nil {
					c.members.pinged(a, err)
				}
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping asks addr whether it answers and accepts this replica's token.
func (c *Cluster) ping(ctx context.Context, addr string) error {
	// Generous: a replica busy streaming must not drop out of the hash.
	ctx, cancel := context.WithTimeout(ctx, max(c.probe, 2*time.Second))
	defer cancel()
	resp, err := c.do(ctx, addr, pingPath)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("ping %s: %s%s", addr, resp.Status, errorBody(resp.Body))
	}
	return nil
}

// do sends a signed GET of uri (path and query) to addr.
func (c *Cluster) do(ctx context.Context, addr, uri string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+addr+uri, nil)
	if err != nil {
		return nil, err
	}
	c.sign.sign(req, c.self)
	return c.client.Do(req)
}

// Open streams the blob digest of repo from byte offset on from the
// member owner and returns the blob's whole size. A member that cannot be
// reached, or whose stream breaks, is out of the hash until it answers a
// ping again. It implements cache.Peers.
func (c *Cluster) Open(ctx context.Context, owner, repo, digest string, offset int64) (io.ReadCloser, int64, error) {
	q := url.Values{"repo": {repo}}
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	resp, err := c.do(ctx, owner, blobsPath+digest+"?"+q.Encode())
	if err != nil {
		if ctx.Err() == nil {
			c.members.set(owner, false, err)
		}
		return nil, 0, fmt.Errorf("blob owner %s: %w", owner, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, fmt.Errorf("blob owner %s: %s%s", owner, resp.Status, errorBody(resp.Body))
	}
	size, err := strconv.ParseInt(resp.Header.Get(sizeHeader), 10, 64)
	if err != nil || resp.ContentLength < 0 || offset+resp.ContentLength != size {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("blob owner %s: %s %q and Content-Length %d do not add up from offset %d", owner, sizeHeader, resp.Header.Get(sizeHeader), resp.ContentLength, offset)
	}
	return &peerBody{rc: resp.Body, broken: func(err error) {
		if ctx.Err() == nil {
			c.members.set(owner, false, err)
		}
	}}, size, nil
}

// peerBody reports a stream that broke, so that its member leaves the
// hash at once instead of at the next ping.
type peerBody struct {
	rc     io.ReadCloser
	broken func(error)
	once   sync.Once
}

func (b *peerBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.once.Do(func() { b.broken(err) })
	}
	return n, err
}

func (b *peerBody) Close() error { return b.rc.Close() }

// errorBody returns ": " and the start of an error answer's body.
func errorBody(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	if len(b) == 0 {
		return ""
	}
	return ": " + string(b)
}
