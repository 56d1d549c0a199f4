// Package requestid owns request IDs: the X-Request-Id a client sends (or
// one made up when it sends none usable), carried in the context of
// everything the request causes, and added to every log line written with
// that context by the slog handler Handler returns.
//
// Work that outlives a request (a cache fill) keeps the ID of the request
// that started it: copy it with With(detached, From(ctx)).
package requestid

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"time"
	"unsafe"
)

// Header is the HTTP header that carries a request ID, both ways.
const Header = "X-Request-Id"

// MaxLen is the longest client-sent ID kept; a longer one is replaced.
const MaxLen = 128

// LogKey is the log attribute holding the ID.
const LogKey = "requestId"

// Valid reports whether id, sent by a client, may be used as is: 1 to
// MaxLen characters among letters, digits and - _ . : + / = @. Anything
// else (spaces, quotes, control characters, other bytes) could forge or
// break log lines, so such an ID is replaced by a new one.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=' || c == '@':
		default:
			return false
		}
	}
	return true
}

// New returns a new random ID of 32 hexadecimal characters. IDs need to be
// unique, not secret: the runtime's per-thread generator is enough and
// costs no system call.
func New() string {
	var b [32]byte
	fill(&b)
	return string(b[:])
}

// fill writes a new ID into b.
func fill(b *[32]byte) {
	var r [16]byte
	binary.LittleEndian.PutUint64(r[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(r[8:], rand.Uint64())
	hex.Encode(b[:], r[:])
}

// FromClient returns the ID to use for a request whose client sent sent
// (empty when it sent none): sent when Valid, else a new one.
func FromClient(sent string) string {
	if Valid(sent) {
		return sent
	}
	return New()
}

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return context.WithValue(ctx, key{}, id)
}

// From returns the ID ctx carries, or "".
func From(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	switch id := ctx.Value(key{}).(type) {
	case string:
		return id
	case *string: // a Context's
		return *id
	}
	return ""
}

// Context is a context carrying a request ID, for a server to embed in a
// value it allocates for each request anyway: Init costs no allocation
// where With costs two (the context and the boxed ID). Its methods other
// than Value are its parent's.
type Context struct {
	parent context.Context
	id     string
	buf    [32]byte // the characters of an ID made up by Init
}

// Init makes c its parent carrying the ID for a request whose client sent
// sent (empty when it sent none): sent when Valid, else a new one, as
// FromClient. It returns the ID. Call it once, before c is used.
func (c *Context) Init(parent context.Context, sent string) string {
	c.parent = parent
	if Valid(sent) {
		c.id = sent
		return sent
	}
	fill(&c.buf)
	// The ID's bytes are c.buf, written above and never again: a string
	// over them stays the same, and keeps c's memory alive as long as it
	// is used (as a header value or in a log line).
	c.id = unsafe.String(&c.buf[0], len(c.buf))
	return c.id
}

// Deadline returns the parent's deadline.
func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns the parent's Done channel.
func (c *Context) Done() <-chan struct{} { return c.parent.Done() }

// Err returns the parent's error.
func (c *Context) Err() error { return c.parent.Err() }

// Value returns the ID for requestid's key (as a *string: pointing into c,
// it is boxed without allocating), else the parent's value.
func (c *Context) Value(k any) any {
	if _, ok := k.(key); ok {
		return &c.id
	}
	return c.parent.Value(k)
}

// Handler returns a slog handler that adds the request ID of the context a
// record is logged with (the *Context methods of slog.Logger) to the
// record, then hands it to next. (Under a group opened with WithGroup the
// ID lands in that group; regcache opens none.)
func Handler(next slog.Handler) slog.Handler { return handler{next} }

type handler struct{ next slog.Handler }

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if id := From(ctx); id != "" {
		r.AddAttrs(slog.String(LogKey, id))
	}
	return h.next.Handle(ctx, r)
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler { return handler{h.next.WithAttrs(attrs)} }
func (h handler) WithGroup(name string) slog.Handler       { return handler{h.next.WithGroup(name)} }

// Unwrap returns the wrapped handler.
func (h handler) Unwrap() slog.Handler { return h.next }
