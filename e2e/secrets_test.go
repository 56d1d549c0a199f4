package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// secretScan gathers everything a regcache under test showed to the
// outside (HTTP responses, CLI output, then its log and data directory)
// and searches it for secret values: the invariant that a secret appears
// nowhere but in the secrets backend.
//
// A value is also searched for in base64, at any offset and in both
// alphabets, which finds it inside an encoded Basic credential
// ("user:password") or any other base64 blob.
type secretScan struct {
	mu       sync.Mutex
	secrets  []string        // the values, for counting
	patterns []secretPattern // what is searched for
	places   []string        // names of what was recorded, in order
	texts    map[string]*bytes.Buffer
}

// secretPattern is one form of secret number n.
type secretPattern struct {
	n    int
	form string // "as is", "base64", ...
	text string
}

func newSecretScan() *secretScan {
	return &secretScan{texts: map[string]*bytes.Buffer{}}
}

// addSecret adds values that must never be found.
func (s *secretScan) addSecret(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		if v == "" {
			continue
		}
		n := len(s.secrets)
		s.secrets = append(s.secrets, v)
		s.patterns = append(s.patterns, secretPattern{n, "as is", v})
		for _, enc := range []struct {
			name string
			enc  *base64.Encoding
		}{{"base64", base64.RawStdEncoding}, {"base64url", base64.RawURLEncoding}} {
			for offset := range 3 {
				if p := base64Core(enc.enc, v, offset); len(p) >= 8 {
					s.patterns = append(s.patterns, secretPattern{n, fmt.Sprintf("%s at offset %d", enc.name, offset), p})
				}
			}
		}
	}
}

// base64Core returns the part of the base64 encoding of v, preceded by
// offset other bytes, that depends on v's bytes alone: the characters of
// the 3-byte groups lying wholly inside v. Whatever surrounds v in an
// encoded text (a user name and a colon before a password), one of the
// three offsets gives a string found in that text.
func base64Core(enc *base64.Encoding, v string, offset int) string {
	padded := strings.Repeat("\x00", offset) + v
	full := enc.EncodeToString([]byte(padded))
	first := (offset + 2) / 3     // first group starting inside v
	last := (offset + len(v)) / 3 // groups ending inside v
	if last <= first {
		return ""
	}
	return full[4*first : 4*last]
}

// record appends text to the named place.
func (s *secretScan) record(place, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.texts[place]
	if b == nil {
		b = &bytes.Buffer{}
		s.texts[place] = b
		s.places = append(s.places, place)
	}
	b.WriteString(text)
	b.WriteByte('\n')
}

// transport returns a RoundTripper that records every response it
// receives (status line, headers and the whole body, error bodies
// included) as "HTTP responses", passing the body on unchanged.
func (s *secretScan) transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return recordingTransport{base: base, scan: s}
}

// client is an HTTP client whose responses are recorded.
func (s *secretScan) client() *http.Client { return &http.Client{Transport: s.transport(nil)} }

type recordingTransport struct {
	base http.RoundTripper
	scan *secretScan
}

func (rt recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		rt.scan.record("HTTP errors", fmt.Sprintf("%s %s: %v", req.Method, req.URL, err))
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s -> %s\n", req.Method, req.URL, resp.Status)
	resp.Header.Write(&head)
	rt.scan.record("HTTP responses", head.String()+string(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("read response of %s %s: %w", req.Method, req.URL, err)
	}
	return resp, nil
}

// check adds the server's log and every file under dataDir to what was
// recorded, then fails the test for each place holding any form of any
// secret. It names the place, the secret's number and the form, never the
// value.
func (s *secretScan) check(t *testing.T, serverLog, dataDir string) {
	t.Helper()
	s.record("server log", serverLog)
	files := 0
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		s.record("data file "+path, string(b))
		return nil
	})
	if err != nil {
		t.Errorf("read data directory %s: %v", dataDir, err)
	}
	if _, ok := s.texts["data file "+filepath.Join(dataDir, "meta.db")]; !ok {
		t.Errorf("no meta.db in %s", dataDir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.secrets) == 0 {
		t.Fatalf("secret scan: no secret values to search for")
	}
	var hits []string
	for _, place := range s.places {
		text := s.texts[place].String()
		for _, p := range s.patterns {
			if strings.Contains(text, p.text) {
				hits = append(hits, fmt.Sprintf("%s holds secret #%d (%s)", place, p.n, p.form))
			}
		}
	}
	sort.Strings(hits)
	for _, h := range hits {
		t.Error(h)
	}
	bytesSearched := 0
	for _, b := range s.texts {
		bytesSearched += b.Len()
	}
	t.Logf("secret scan: %d values in %d forms searched in %d places (%d data files, %d bytes): %d hits",
		len(s.secrets), len(s.patterns), len(s.places), files, bytesSearched, len(hits))
}
