package main

import (
	"net"
	"strings"
	"testing"
)

// serve warns about plain HTTP when its address is reachable beyond the
// host: every address but a loopback one.
func TestLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.0.2:5000": true, "[::1]:5000": true,
		"0.0.0.0:5000": false, "[::]:5000": false, "10.0.0.5:5000": false, "192.168.1.2:5000": false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopback(a); got != want {
			t.Errorf("loopback(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A certificate without its key, or a key without its certificate, is
// refused before anything starts.
func TestTLSNeedsBoth(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--tls-cert", "/x/cert.pem"}, {"--tls-key", "/x/key.pem"}} {
		_, err := parseServe(t, args, nil)
		if err == nil || !strings.Contains(err.Error(), "--tls-cert and --tls-key") {
			t.Errorf("serve %v: %v, want a refusal naming both flags", args, err)
		}
	}
	if _, err := parseServe(t, nil, map[string]string{"REGCACHE_TLS_CERT": "/x/c.pem", "REGCACHE_TLS_KEY": "/x/k.pem"}); err != nil {
		t.Errorf("both from the environment: %v", err)
	}
}

// Sizes are read with the units operators write.
func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "20GiB": 20 << 30, "2GB": 2e9, "1.5G": 3 << 29, "10K": 10 << 10} {
		if got, err := parseSize("x", in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"big", "-1GiB", "10XB", "1e300GB"} {
		if _, err := parseSize("limits.maxUploadSize", bad); err == nil || !strings.Contains(err.Error(), "limits.maxUploadSize") {
			t.Errorf("parseSize(%q): %v, want an error naming the field", bad, err)
		}
	}
}
