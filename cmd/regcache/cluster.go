package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/cluster"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/uploads"
)

// clusterConfig is the cluster: section: replicas sharing one blob store
// fetch each blob from the upstream once, through the replica owning its
// digest. Off unless listen is set.
type clusterConfig struct {
	// Listen is the address of the peer channel, which serves other
	// replicas only (--peer-listen, REGCACHE_PEER_LISTEN; default: off).
	Listen string `yaml:"listen"`
	// Advertise is this replica's peer address as the others reach it
	// (--peer-advertise, REGCACHE_PEER_ADVERTISE), e.g. $(POD_IP):5001.
	Advertise string `yaml:"advertise"`
	// Peers lists the members' peer addresses, host:port (--peers,
	// comma-separated; REGCACHE_PEERS).
	Peers []string `yaml:"peers"`
	// PeersDNS is name:port of a name whose A/AAAA records are the
	// members, such as a Kubernetes headless Service (--peers-dns,
	// REGCACHE_PEERS_DNS).
	PeersDNS string `yaml:"peersDNS"`
	// SecretFile holds the shared secret authenticating replicas to each
	// other, at least 32 bytes (--peer-secret-file,
	// REGCACHE_PEER_SECRET_FILE).
	SecretFile string `yaml:"secretFile"`
	// TLSCert and TLSKey make the peer listener serve TLS; CA is the PEM
	// file of the CAs peers' certificates are checked against (default:
	// the system's) (--peer-tls-cert, --peer-tls-key, --peer-ca;
	// REGCACHE_PEER_TLS_CERT, REGCACHE_PEER_TLS_KEY, REGCACHE_PEER_CA).
	TLSCert string `yaml:"tlsCert"`
	TLSKey  string `yaml:"tlsKey"`
	CA      string `yaml:"ca"`
}

// clusterFlags registers the flags of clusterConfig.
func clusterFlags(fs *pflag.FlagSet) {
	fs.String("peer-listen", "", "address of the peer channel other replicas fetch blobs through, e.g. :5001; turns clustering on (env REGCACHE_PEER_LISTEN; default off)")
	fs.String("peer-advertise", "", "this replica's peer address as the other replicas reach it, e.g. 10.0.0.5:5001 (env REGCACHE_PEER_ADVERTISE)")
	fs.StringSlice("peers", nil, "peer addresses of the replicas, host:port, comma-separated (env REGCACHE_PEERS)")
	fs.String("peers-dns", "", "name:port whose A/AAAA records are the replicas, e.g. a Kubernetes headless Service (env REGCACHE_PEERS_DNS)")
	fs.String("peer-secret-file", "", "file holding the secret shared by the replicas, at least 32 bytes (env REGCACHE_PEER_SECRET_FILE)")
	fs.String("peer-tls-cert", "", "PEM certificate the peer channel serves TLS with (env REGCACHE_PEER_TLS_CERT; with --peer-tls-key)")
	fs.String("peer-tls-key", "", "PEM key of --peer-tls-cert (env REGCACHE_PEER_TLS_KEY)")
	fs.String("peer-ca", "", "PEM file of the CAs that peers' certificates are checked against; requests to peers use TLS (env REGCACHE_PEER_CA)")
}

// load reads the flags and environment variables of clusterConfig over
// what the file set.
func (c *clusterConfig) load(fs *pflag.FlagSet, getenv func(string) string) {
	for _, s := range []struct {
		dst       *string
		flag, env string
	}{
		{&c.Listen, "peer-listen", "REGCACHE_PEER_LISTEN"},
		{&c.Advertise, "peer-advertise", "REGCACHE_PEER_ADVERTISE"},
		{&c.PeersDNS, "peers-dns", "REGCACHE_PEERS_DNS"},
		{&c.SecretFile, "peer-secret-file", "REGCACHE_PEER_SECRET_FILE"},
		{&c.TLSCert, "peer-tls-cert", "REGCACHE_PEER_TLS_CERT"},
		{&c.TLSKey, "peer-tls-key", "REGCACHE_PEER_TLS_KEY"},
		{&c.CA, "peer-ca", "REGCACHE_PEER_CA"},
	} {
		if v := getenv(s.env); v != "" {
			*s.dst = v
		}
		if fs.Changed(s.flag) {
			*s.dst, _ = fs.GetString(s.flag)
		}
	}
	if v := getenv("REGCACHE_PEERS"); v != "" {
		c.Peers = strings.Split(v, ",")
	}
	if fs.Changed("peers") {
		c.Peers, _ = fs.GetStringSlice("peers")
	}
	for i, p := range c.Peers {
		c.Peers[i] = strings.TrimSpace(p)
	}
}

// validate checks the settings that need no file: the secret and the
// certificates are read at start.
func (c clusterConfig) validate() error {
	if c.Listen == "" {
		if c.Advertise != "" || len(c.Peers) > 0 || c.PeersDNS != "" {
			return errors.New("cluster: peers are configured but cluster.listen (--peer-listen) is empty; give the address of the peer channel, e.g. :5001")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("cluster.listen %q: want [host]:port, e.g. :5001", c.Listen)
	}
	if c.Advertise == "" {
		return fmt.Errorf("cluster.advertise: empty; give this replica's peer address as the others reach it (--peer-advertise), e.g. 10.0.0.5%s", c.Listen[strings.LastIndex(c.Listen, ":"):])
	}
	if c.SecretFile == "" {
		return errors.New("cluster.secretFile: empty; replicas authenticate each other with a shared secret of at least 32 bytes (--peer-secret-file)")
	}
	_, err := cluster.New(cluster.Config{Advertise: c.Advertise, Peers: c.Peers, PeersDNS: c.PeersDNS, Secret: make([]byte, cluster.MinSecretSize)})
	return err
}

// peerChannel is the cluster of a replica, its listener bound, before it
// serves.
type peerChannel struct {
	cl  *cluster.Cluster
	ln  net.Listener
	log *slog.Logger
}

// openCluster reads the secret and certificates, binds the peer listener
// and builds the cluster; nil when cluster.listen is empty (off).
func openCluster(c clusterConfig, log *slog.Logger) (*peerChannel, error) {
	if c.Listen == "" {
		return nil, nil
	}
	secret, err := cluster.ReadSecret(c.SecretFile)
	if err != nil {
		return nil, err
	}
	srvTLS, cliTLS, err := cluster.LoadTLS(c.TLSCert, c.TLSKey, c.CA)
	if err != nil {
		return nil, err
	}
	log = log.With("component", "cluster")
	cl, err := cluster.New(cluster.Config{Advertise: c.Advertise, Peers: c.Peers, PeersDNS: c.PeersDNS, Secret: secret,
		ServerTLS: srvTLS, ClientTLS: cliTLS, Log: log})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.listen %q (--peer-listen): %w", c.Listen, err)
	}
	return &peerChannel{cl: cl, ln: ln, log: log}, nil
}

// peers returns the cluster as the puller's Peers (nil when off).
func (pc *peerChannel) peers() cache.Peers {
	if pc == nil {
		return nil
	}
	return pc.cl
}

// close releases the listener of a cluster that never served.
func (pc *peerChannel) close() {
	if pc != nil {
		pc.ln.Close()
	}
}

// uploadIDSuffix is what this replica's upload session IDs end with, so
// that the others forward requests for them here; empty when off.
func (c clusterConfig) uploadIDSuffix() string {
	if c.Listen == "" {
		return ""
	}
	return cluster.UploadTag(c.Advertise)
}

// forwarder returns the cluster as the registry's UploadForwarder (nil
// when off).
func (pc *peerChannel) forwarder() registry.UploadForwarder {
	if pc == nil {
		return nil
	}
	return pc.cl
}

// peerUploads serves forwarded upload-session requests: the sessions say
// which are open here, the registry serves them.
type peerUploads struct {
	*uploads.Sessions
	*registry.PeerUploads
}

// serve serves the puller's blobs and the upload sessions of this replica
// to the other replicas and follows the members until stop.
func (pc *peerChannel) serve(ctx context.Context, src cluster.Source, up cluster.Uploads) (stop func()) {
	if pc == nil {
		return func() {}
	}
	srv := pc.cl.Server(src, up, pc.log)
	served := make(chan error, 1)
	go func() {
		if pc.cl.TLS() {
			served <- srv.ServeTLS(pc.ln, "", "")
			return
		}
		served <- srv.Serve(pc.ln)
	}()
	stopRun := background(ctx, pc.cl.Run)
	pc.log.Info("peer channel serving", "addr", pc.ln.Addr().String(), "advertise", pc.cl.Self(), "tls", pc.cl.TLS())
	return func() {
		stopRun()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			pc.log.Warn("peer channel stopped", "err", err)
		}
	}
}
