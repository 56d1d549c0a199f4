package registry

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// recordingConn is a response writer and connection that records every
// write (by size) and every write deadline set before it.
type recordingConn struct {
	header http.Header
	body   bytes.Buffer
	events []string // "deadline" or "write"
	sizes  []int64
}

func (c *recordingConn) Header() http.Header { return c.header }
func (c *recordingConn) WriteHeader(int)     {}
func (c *recordingConn) Write(p []byte) (int, error) {
	c.events = append(c.events, "write")
	c.sizes = append(c.sizes, int64(len(p)))
	return c.body.Write(p)
}
func (c *recordingConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.body.ReadFrom(r)
	c.events = append(c.events, "write")
	c.sizes = append(c.sizes, n)
	return n, err
}
func (c *recordingConn) SetWriteDeadline(time.Time) error {
	c.events = append(c.events, "deadline")
	return nil
}
func (c *recordingConn) SetReadDeadline(time.Time) error { return nil }

// sections sends what it is asked for in one piece, as a fill reader does
// with a readable stretch.
type sections struct{ r *bytes.Reader }

func (s sections) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s sections) SendTo(w io.Writer, n int64) (int64, error) {
	return io.Copy(w, io.LimitReader(s.r, n))
}

// The write deadline is a progress deadline: pushed back before every
// write, and a body is handed to sendfile (or a fill's sections) at most
// sendSection bytes at a time, each after a push. A transfer of any length
// then survives as long as each section moves within the idle timeout.
func TestProgressDeadline(t *testing.T) {
	t.Parallel()
	size := int64(5*sendSection + 123)
	data := bytes.Repeat([]byte{7}, int(size))
	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{"file", bytes.NewReader(data)},
		{"fill sections", sections{bytes.NewReader(data)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &recordingConn{header: http.Header{}}
			w := &statusWriter{ResponseWriter: c, conn: c, idle: time.Minute}
			n, err := w.ReadFrom(&io.LimitedReader{R: tc.body, N: size})
			if err != nil || n != size || !bytes.Equal(c.body.Bytes(), data) {
				t.Fatalf("sent %d of %d bytes: %v", n, size, err)
			}
			if want := int(size/sendSection) + 1; len(c.sizes) != want {
				t.Errorf("%d writes, want %d sections of at most %d bytes", len(c.sizes), want, sendSection)
			}
			for i, s := range c.sizes {
				if s > sendSection {
					t.Errorf("write %d sends %d bytes, more than a section", i, s)
				}
			}
			for i, e := range c.events {
				if e == "write" && (i == 0 || c.events[i-1] != "deadline") {
					t.Fatalf("a write without a deadline pushed back just before it: %v", c.events)
				}
			}
		})
	}
	t.Run("writes", func(t *testing.T) {
		c := &recordingConn{header: http.Header{}}
		w := &statusWriter{ResponseWriter: c, conn: c, idle: time.Minute}
		for range 3 {
			w.Write([]byte("manifest"))
		}
		if want := []string{"deadline", "write", "deadline", "write", "deadline", "write"}; !slices.Equal(c.events, want) {
			t.Errorf("events %v, want %v", c.events, want)
		}
	})
}
