package registry

import (
	"strconv"
	"testing"
	"time"
)

// TestSessionExpires: a session cookie is good until its expiry, signed
// with the page's key only.
func TestSessionExpires(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	p := &statusPage{key: []byte("key-of-this-process"), now: func() time.Time { return now }}
	exp := strconv.FormatInt(now.Add(sessionLifetime).Unix(), 10)
	cookie := exp + "." + p.sign(exp)
	if !p.sessionOK(cookie) {
		t.Fatal("a fresh session is refused")
	}
	for _, bad := range []string{"", "nodot", exp + ".", "." + p.sign(exp), exp + "." + p.sign(exp)[1:]} {
		if p.sessionOK(bad) {
			t.Errorf("cookie %q accepted", bad)
		}
	}
	other := &statusPage{key: []byte("key-of-another-process"), now: p.now}
	if other.sessionOK(cookie) {
		t.Error("a session signed with another key is accepted (after a restart, sessions end)")
	}
	now = now.Add(sessionLifetime - time.Second)
	if !p.sessionOK(cookie) {
		t.Error("a session is refused before its expiry")
	}
	now = now.Add(time.Second)
	if p.sessionOK(cookie) {
		t.Error("an expired session is accepted")
	}
}
