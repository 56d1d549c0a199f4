package registry

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Limits bound what one client can hold of the server: connections,
// header sizes and the time a connection may make no progress. None of
// them cuts a slow but live transfer: write and body deadlines are
// progress deadlines, pushed back on every write or read.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 20s).
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout"`
	// IdleTimeout closes a keep-alive connection idle for this long
	// (default 2m).
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// WriteIdleTimeout cuts a response the client did not read from for
	// this long (default 2m). A response that makes progress is never cut.
	WriteIdleTimeout time.Duration `yaml:"writeIdleTimeout"`
	// ReadIdleTimeout cuts a request body the client did not send
	// anything of for this long (default 2m).
	ReadIdleTimeout time.Duration `yaml:"readIdleTimeout"`
	// MaxHeaderBytes bounds the request line and headers (default 64 KiB);
	// over it the client gets 431.
	MaxHeaderBytes int `yaml:"maxHeaderBytes"`
	// MaxURLBytes bounds a request's URL (default 8 KiB); over it the
	// client gets 414 with the spec's error body.
	MaxURLBytes int `yaml:"maxURLBytes"`
	// MaxConnsPerAddress caps the open connections from one IP address
	// (default 512; negative: no cap). Behind a load balancer or proxy
	// every client shares its address: raise it or turn it off there.
	MaxConnsPerAddress int `yaml:"maxConnsPerAddress"`
	// MaxConns caps all open connections (default: a third of the
	// open-files limit, keeping descriptors for blob files and upstream
	// connections; negative: no cap).
	MaxConns int `yaml:"maxConns"`
}

// Defaults of Limits.
const (
	DefaultReadHeaderTimeout  = 20 * time.Second
	DefaultIdleTimeout        = 2 * time.Minute
	DefaultWriteIdleTimeout   = 2 * time.Minute
	DefaultReadIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes     = 64 << 10
	DefaultMaxURLBytes        = 8 << 10
	DefaultMaxConnsPerAddress = 512
)

// DefaultMaxConns is the total connection cap for a process allowed
// openFiles descriptors: a connection serving a blob holds two (the socket
// and the file), and some are kept for upstream connections, fills and the
// database.
func DefaultMaxConns(openFiles uint64) int {
	const reserve = 512
	if openFiles < reserve+3*64 {
		return 64
	}
	return int(min((openFiles-reserve)/3, 1<<20))
}

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults(openFiles uint64) Limits {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	set(&l.WriteIdleTimeout, DefaultWriteIdleTimeout)
	set(&l.ReadIdleTimeout, DefaultReadIdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxURLBytes == 0 {
		l.MaxURLBytes = DefaultMaxURLBytes
	}
	if l.MaxConnsPerAddress == 0 {
		l.MaxConnsPerAddress = DefaultMaxConnsPerAddress
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns(openFiles)
	}
	return l
}

// Validate checks limits given by an operator.
func (l Limits) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"readHeaderTimeout", l.ReadHeaderTimeout}, {"idleTimeout", l.IdleTimeout},
		{"writeIdleTimeout", l.WriteIdleTimeout}, {"readIdleTimeout", l.ReadIdleTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("limits.%s %v: must be a positive duration such as 30s or 2m (0 means the default)", d.name, d.v)
		}
	}
	if l.MaxURLBytes < 0 || (l.MaxURLBytes > 0 && l.MaxURLBytes < 1024) {
		return fmt.Errorf("limits.maxURLBytes %d: must be at least 1024 (0 means the default, %d)", l.MaxURLBytes, DefaultMaxURLBytes)
	}
	if l.MaxHeaderBytes < 0 || (l.MaxHeaderBytes > 0 && l.MaxHeaderBytes < 4096) {
		return fmt.Errorf("limits.maxHeaderBytes %d: must be at least 4096 (0 means the default, %d)", l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	}
	return nil
}

// Listen listens on addr with the connection caps of l (see Limits).
func Listen(addr string, l Limits, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return newLimitListener(ln, max(l.MaxConnsPerAddress, 0), max(l.MaxConns, 0), log), nil
}

// NewServer returns the HTTP server of handler (New's) with the timeouts
// of l. It sets no absolute write or read timeout: those would cut a slow
// 1 GiB download or upload; the handler applies progress deadlines.
func NewServer(handler http.Handler, l Limits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// deadlines is the part of a connection the progress deadlines use
// (http.ResponseController's, without its allocation).
type deadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// sendSection is how much of a file is handed to sendfile between two
// pushes of the write deadline: with the default 2-minute deadline a
// client must read at least 1 MiB every 2 minutes (about 9 KB/s).
const sendSection = 1 << 20

// progressBody pushes the connection's read deadline back on every read
// of a request body, and clears it when the body ends: net/http reads the
// connection in the background after the body (to notice a client going
// away), and an expired deadline there would cancel the request.
type progressBody struct {
	io.ReadCloser
	conn deadlines
	idle time.Duration
	done bool
}

func (b *progressBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done = true
		b.conn.SetReadDeadline(time.Time{})
	}
	return n, err
}
