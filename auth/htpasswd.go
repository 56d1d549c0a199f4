package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// reloadCheckEvery bounds how often Users looks at its file for changes.
const reloadCheckEvery = time.Second

// Users are the users of an htpasswd file (bcrypt hashes only), reloaded
// when the file changes: looked at, at most once a second, when a user is
// checked. A file that no longer parses keeps the users last loaded (an
// edit in progress must not lock everyone out) and is logged once.
type Users struct {
	path string
	now  func() time.Time
	log  *slog.Logger

	mu      sync.Mutex
	hashes  map[string][]byte
	dummy   []byte // compared for unknown users, so they take as long
	info    os.FileInfo
	checked time.Time
	lastErr string
}

// LoadUsers reads the htpasswd file at path. now is the clock (nil:
// time.Now).
func LoadUsers(path string, now func() time.Time, log *slog.Logger) (*Users, error) {
	if now == nil {
		now = time.Now
	}
	u := &Users{path: path, now: now, log: log}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	hashes, err := parseHtpasswd(path)
	if err != nil {
		return nil, err
	}
	u.set(hashes, info)
	u.checked = now()
	return u, nil
}

// set installs a parsed file; u.mu is held or u is not shared yet.
func (u *Users) set(hashes map[string][]byte, info os.FileInfo) {
	cost := bcrypt.DefaultCost
	for _, h := range hashes {
		if c, err := bcrypt.Cost(h); err == nil {
			cost = c
			break
		}
	}
	if u.dummy == nil || costOf(u.dummy) != cost {
		u.dummy, _ = bcrypt.GenerateFromPassword([]byte("regcache: no such user"), cost)
	}
	u.hashes, u.info = hashes, info
}

func costOf(hash []byte) int {
	c, _ := bcrypt.Cost(hash)
	return c
}

// Len is the number of users.
func (u *Users) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.hashes)
}

// Exists reports whether user is in the file (as last loaded).
func (u *Users) Exists(user string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	_, ok := u.hashes[user]
	return ok
}

// Check reports whether password is user's. Unknown users are compared
// against a hash of the same cost, so that the answer's timing does not
// tell whether the user exists.
func (u *Users) Check(user, password string) bool {
	u.mu.Lock()
	u.reloadLocked()
	hash, ok := u.hashes[user]
	if !ok {
		hash = u.dummy
	}
	u.mu.Unlock()
	match := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && match && password != ""
}

// fingerprint identifies user's current password hash ("" for no such
// user) without revealing it: refresh tokens carry it.
func (u *Users) fingerprint(user string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	hash, ok := u.hashes[user]
	if !ok {
		return ""
	}
	sum := sha256.Sum256(append([]byte("regcache refresh\x00"), hash...))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// sameFingerprint compares fingerprints in constant time.
func sameFingerprint(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// reloadLocked rereads the file if it changed (size, modification time,
// or another file at the path, as a Kubernetes Secret update swaps it).
func (u *Users) reloadLocked() {
	now := u.now()
	if now.Sub(u.checked) < reloadCheckEvery && !now.Before(u.checked) {
		return
	}
	u.checked = now
	info, err := os.Stat(u.path)
	if err == nil && os.SameFile(info, u.info) && info.Size() == u.info.Size() && info.ModTime().Equal(u.info.ModTime()) {
		return
	}
	var hashes map[string][]byte
	if err == nil {
		hashes, err = parseHtpasswd(u.path)
	}
	if err != nil {
		if msg := err.Error(); msg != u.lastErr {
			u.lastErr = msg
			u.log.Error("htpasswd file not reloaded; the users loaded before stay in force", "err", err)
		}
		return
	}
	u.lastErr = ""
	u.set(hashes, info)
	u.log.Info("htpasswd file reloaded", "path", u.path, "users", len(hashes))
}

// parseHtpasswd reads user:hash lines; blank lines and # comments are
// skipped. Every hash must be bcrypt: another kind is refused, naming the
// line, the user and the kind (never the hash).
func parseHtpasswd(path string) (map[string][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	hashes := map[string][]byte{}
	lineOf := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := fmt.Sprintf("htpasswd file %s, line %d", path, n)
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || user == "" || hash == "":
			return nil, fmt.Errorf("%s: want user:bcrypt-hash, as `htpasswd -B` writes", where)
		case strings.ContainsAny(user, " \t*"):
			return nil, fmt.Errorf("%s: user %q: a user name holds no spaces and no '*'", where, user)
		case lineOf[user] > 0:
			return nil, fmt.Errorf("%s: user %q is also on line %d", where, user, lineOf[user])
		}
		if kind := hashKind(hash); kind != "bcrypt" {
			return nil, fmt.Errorf("%s: user %q: the password hash is %s; only bcrypt ($2y$, $2b$, $2a$) is accepted: set it again with `htpasswd -B %s %s`", where, user, kind, path, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s: user %q: malformed bcrypt hash: %v", where, user, err)
		}
		hashes[user] = []byte(hash)
		lineOf[user] = n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("htpasswd file %s: %w", path, err)
	}
	return hashes, nil
}

// hashKind names the kind of an htpasswd hash.
func hashKind(h string) string {
	for _, k := range []struct{ prefix, kind string }{
		{"$2y$", "bcrypt"}, {"$2b$", "bcrypt"}, {"$2a$", "bcrypt"},
		{"$apr1$", "Apache MD5 ($apr1$)"}, {"{SHA}", "SHA-1 ({SHA})"},
		{"$1$", "MD5-crypt ($1$)"}, {"$5$", "SHA-256-crypt ($5$)"}, {"$6$", "SHA-512-crypt ($6$)"},
		{"$argon2", "Argon2"}, {"$y$", "yescrypt ($y$)"},
	} {
		if strings.HasPrefix(h, k.prefix) {
			return k.kind
		}
	}
	if len(h) == 13 && !strings.HasPrefix(h, "$") {
		return "DES crypt"
	}
	return "plain text or of an unknown kind"
}

// Names returns the user names, sorted.
func (u *Users) Names() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.hashes))
	for n := range u.hashes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
