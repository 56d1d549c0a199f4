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
	"log/slog"
	"math/rand/v2"
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
	hex := func(dst []byte, v uint64) {
		const digits = "0123456789abcdef"
		for i := len(dst) - 1; i >= 0; i-- {
			dst[i] = digits[v&0xf]
			v >>= 4
		}
	}
	hex(b[:16], rand.Uint64())
	hex(b[16:], rand.Uint64())
	return string(b[:])
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
	id, _ := ctx.Value(key{}).(string)
	return id
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
