package requestid_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/requestid"
)

func TestValid(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		id   string
		want bool
	}{
		{"", false},
		{"abc", true},
		{"7f3c2a9e-1b4d-4c6e-9a8b-0123456789ab", true},
		{"req:42/trace=ab+cd@edge_1.2", true},
		{strings.Repeat("a", requestid.MaxLen), true},
		{strings.Repeat("a", requestid.MaxLen+1), false},
		{"has space", false},
		{`quote"d`, false},
		{"new\nline", false},
		{"tab\t", false},
		{"caf\xc3\xa9", false},
		{"a;b", false},
	} {
		if got := requestid.Valid(c.id); got != c.want {
			t.Errorf("Valid(%q) = %v, want %v", c.id, got, c.want)
		}
	}
}

func TestFromClientAndNew(t *testing.T) {
	t.Parallel()
	if got := requestid.FromClient("client-id-1"); got != "client-id-1" {
		t.Errorf("a sane client ID was replaced by %q", got)
	}
	seen := map[string]bool{}
	for _, sent := range []string{"", "bad id", strings.Repeat("x", 200)} {
		got := requestid.FromClient(sent)
		if got == sent || len(got) != 32 || !requestid.Valid(got) || seen[got] {
			t.Errorf("FromClient(%q) = %q: want a new, valid, unique 32-character ID", sent, got)
		}
		seen[got] = true
	}
}

// TestHandlerAddsTheContextsID logs through the handler with and without an
// ID in the context, in both formats regcache writes.
func TestHandlerAddsTheContextsID(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(requestid.Handler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	ctx := requestid.With(context.Background(), "abc-123")
	log.InfoContext(ctx, "with")
	log.InfoContext(context.Background(), "without")
	log.Info("plain")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got %q", buf.String())
	}
	for i, want := range []string{"abc-123", "", ""} {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatal(err)
		}
		got, _ := m[requestid.LogKey].(string)
		if got != want || m["component"] != "test" {
			t.Errorf("line %d: %s = %q, component %v; want %q and the logger's attributes kept", i, requestid.LogKey, got, m["component"], want)
		}
	}

	buf.Reset()
	text := slog.New(requestid.Handler(slog.NewTextHandler(&buf, nil)))
	text.WarnContext(ctx, "text line")
	if !strings.Contains(buf.String(), " requestId=abc-123") {
		t.Errorf("text line without the ID: %q", buf.String())
	}
	if requestid.From(context.Background()) != "" || requestid.With(context.Background(), "") != context.Background() {
		t.Error("an empty context carries an ID")
	}
}

// TestContext: a Context carries the client's ID when valid, else a new
// one, through contexts derived from it, and is its parent otherwise
// (values, cancellation).
func TestContext(t *testing.T) {
	t.Parallel()
	type other struct{}
	parent, cancel := context.WithCancel(context.WithValue(t.Context(), other{}, "v"))
	seen := map[string]bool{}
	for _, sent := range []string{"client-id-1", "", "bad id", strings.Repeat("x", 200)} {
		var c requestid.Context
		id := c.Init(parent, sent)
		if sent == "client-id-1" && id != sent || sent != "client-id-1" && (len(id) != 32 || !requestid.Valid(id) || seen[id]) {
			t.Errorf("Init(%q) = %q: want the client's valid ID, else a new, valid, unique one", sent, id)
		}
		seen[id] = true
		derived, stop := context.WithTimeout(context.WithValue(&c, other{}, "w"), time.Hour)
		if got := requestid.From(derived); got != id {
			t.Errorf("From(derived) = %q, want %q", got, id)
		}
		if got := requestid.From(&c); got != id {
			t.Errorf("From = %q, want %q", got, id)
		}
		if c.Value(other{}) != "v" {
			t.Errorf("the parent's value is lost")
		}
		if requestid.From(requestid.With(&c, "inner")) != "inner" {
			t.Errorf("With over a Context: the inner ID is not the one seen")
		}
		stop()
	}
	var c requestid.Context
	c.Init(parent, "")
	derived, stop := context.WithCancel(&c)
	defer stop()
	cancel()
	<-derived.Done() // cancelling the parent ends what is derived from c
	if c.Err() == nil || derived.Err() == nil {
		t.Errorf("after cancel: Err %v, derived %v", c.Err(), derived.Err())
	}
}

// TestContextAllocatesNothing: Init and From on a Context allocate nothing.
func TestContextAllocatesNothing(t *testing.T) {
	c := new(requestid.Context)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		id := c.Init(ctx, "")
		if requestid.From(c) != id {
			t.Fatal("ID lost")
		}
	}); n != 0 {
		t.Errorf("%v allocations per Init and From; want 0", n)
	}
}

// TestHeaderIsCanonical: servers look the header up in a request's
// header map directly, which holds canonical keys.
func TestHeaderIsCanonical(t *testing.T) {
	t.Parallel()
	if c := http.CanonicalHeaderKey(requestid.Header); c != requestid.Header {
		t.Errorf("Header %q is not canonical (%q)", requestid.Header, c)
	}
}
