// Package accesslog owns the access log line: the one line regcache logs
// for every answered request, at info level, with message "request".
//
// The line goes through slog like every other line, except when the
// logger's handler is the one NewHandler returns (the handler regcache
// serves with): then Log formats the line itself, byte for byte as slog's
// TextHandler or JSONHandler and requestid's handler would, and writes it
// to the same output. slog's general path (a Record, attributes boxed in
// Values, a copy of them for the request ID, a handle state, a lock) cost
// about as much as the rest of a cached manifest answer; the line's fields
// are fixed, so a formatter for them is short. Any other handler, or one
// derived with WithAttrs or WithGroup, gets the line through slog.
package accesslog

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/regcache/regcache/logsink"
	"github.com/regcache/regcache/requestid"
)

// Message is the msg of every access log line.
const Message = "request"

// Entry is one answered request.
type Entry struct {
	// Time is when the answer ended; zero: when Log is called.
	Time         time.Time
	Method, Path string
	Query        string // the raw query, "" when none
	Status       int
	Bytes        int64
	Duration     time.Duration // logged rounded to the microsecond
	Remote       string
	UserAgent    string
	Cache        string // where a distribution API answer came from; omitted when ""
	Rule         string // the cache rule of the repository; omitted when ""
	User         string // the authenticated client; omitted when ""
}

// maxAttrs is the most attributes an Entry has.
const maxAttrs = 11

// Attrs appends the line's attributes to dst, in the order of the line.
func (e *Entry) Attrs(dst []slog.Attr) []slog.Attr {
	dst = append(dst,
		slog.String("method", e.Method), slog.String("path", e.Path), slog.String("query", e.Query),
		slog.Int("status", e.Status), slog.Int64("bytes", e.Bytes), slog.Duration("duration", e.Duration.Round(time.Microsecond)),
		slog.String("remote", e.Remote), slog.String("userAgent", e.UserAgent))
	if e.Cache != "" {
		dst = append(dst, slog.String("cache", e.Cache))
	}
	if e.Rule != "" {
		dst = append(dst, slog.String("rule", e.Rule))
	}
	if e.User != "" {
		dst = append(dst, slog.String("user", e.User))
	}
	return dst
}

// Log writes e's line with logger at info level, if that level is
// enabled; ctx carries the request's ID.
func Log(ctx context.Context, logger *slog.Logger, e *Entry) {
	h := logger.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	if fh, ok := h.(*Handler); ok && fh.write(ctx, t, e) {
		return
	}
	// What Logger.LogAttrs does, at e's time; the source is Log's caller.
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:])
	r := slog.NewRecord(t, slog.LevelInfo, Message, pcs[0])
	var buf [maxAttrs]slog.Attr // on the stack: no slice allocated
	r.AddAttrs(e.Attrs(buf[:0])...)
	_ = h.Handle(ctx, r) // as Logger does: a handler's error has nowhere to go
}

// Format is how lines are written.
type Format int

// Formats: slog's TextHandler (key=value) and JSONHandler.
const (
	Text Format = iota
	JSON
)

// Handler is the slog handler of regcache's log: slog's TextHandler or
// JSONHandler with a minimum level and no other option, under
// requestid.Handler. Log writes access lines for it directly.
type Handler struct {
	slog.Handler // requestid.Handler(slog.NewTextHandler or NewJSONHandler)
	w            io.Writer
	json         bool
	bufs         sync.Pool // of *[]byte: line buffers
	clock        secondCache
}

// NewHandler returns the handler writing lines of format f at level and
// above to w. w receives one whole line per Write; a *logsink.Writer is
// used as is (it takes lines from many goroutines), any other writer is
// guarded by a lock, as slog's handlers guard theirs.
func NewHandler(w io.Writer, f Format, level slog.Leveler) *Handler {
	if _, ok := w.(*logsink.Writer); !ok {
		w = &lockedWriter{w: w}
	}
	opts := &slog.HandlerOptions{Level: level}
	var inner slog.Handler
	if f == JSON {
		inner = slog.NewJSONHandler(w, opts)
	} else {
		inner = slog.NewTextHandler(w, opts)
	}
	return &Handler{Handler: requestid.Handler(inner), w: w, json: f == JSON}
}

// lockedWriter serialises the writes of slog's handler and of Log, so
// that lines never interleave on a writer not made for concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// maxPooled is the largest buffer kept for reuse (as slog keeps).
const maxPooled = 16 << 10

// write formats e's line logged at t and writes it, as slog would through
// h; it reports false, having written nothing, for a line it leaves to
// slog.
func (h *Handler) write(ctx context.Context, t time.Time, e *Entry) bool {
	t = t.Round(0) // as slog: no monotonic reading
	if y := t.Year(); h.json && (y < 0 || y >= 10000) {
		return false // slog writes an error in place of such a time
	}
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil { // a line of a usual request is a few hundred bytes
		b := make([]byte, 0, 1024)
		bp = &b
	}
	var b []byte
	if h.json {
		b = appendJSON((*bp)[:0], &h.clock, t, e, requestid.From(ctx))
	} else {
		b = appendText((*bp)[:0], &h.clock, t, e, requestid.From(ctx))
	}
	_, _ = h.w.Write(b) // as slog's Logger: a write error has nowhere to go
	if cap(b) <= maxPooled {
		*bp = b
		h.bufs.Put(bp)
	}
	return true
}
