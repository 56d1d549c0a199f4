package registry

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// recordingConn is a response writer and connection that records every
// write (by size) and every write deadline set before it.
type recordingConn struct {
	header   http.Header
	body     bytes.Buffer
	events   []string // "deadline" or "write"
	sizes    []int64
	deadline time.Time       // the last one set
	lefts    []time.Duration // how far the deadline was at each write
	pause    time.Duration   // how long each write takes (in a synctest bubble)
}

func (c *recordingConn) Header() http.Header { return c.header }
func (c *recordingConn) WriteHeader(int)     {}
func (c *recordingConn) Write(p []byte) (int, error) {
	c.events = append(c.events, "write")
	c.lefts = append(c.lefts, c.deadline.Sub(time.Now()))
	c.sizes = append(c.sizes, int64(len(p)))
	return c.body.Write(p)
}
func (c *recordingConn) ReadFrom(r io.Reader) (int64, error) {
	c.lefts = append(c.lefts, c.deadline.Sub(time.Now()))
	defer time.Sleep(c.pause)
	n, err := c.body.ReadFrom(r)
	c.events = append(c.events, "write")
	c.sizes = append(c.sizes, n)
	return n, err
}
func (c *recordingConn) SetWriteDeadline(d time.Time) error {
	c.events = append(c.events, "deadline")
	c.deadline = d
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
			// In a bubble the clock moves only by each write's pause (a
			// client taking half the idle timeout to read a section): how
			// far the deadline is at each write is exact.
			synctest.Test(t, func(t *testing.T) {
				c := &recordingConn{header: http.Header{}, pause: time.Minute / 2}
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
				for i, left := range c.lefts {
					if left < time.Minute {
						t.Fatalf("write %d with the deadline %v away, less than the idle timeout (events %v)", i, left, c.events)
					}
				}
			})
		})
	}
	t.Run("writes", func(t *testing.T) {
		// In a bubble, time moves only when every goroutine waits: each
		// write below sees the clock the test set.
		synctest.Test(t, func(t *testing.T) {
			const idle = time.Minute
			c := &recordingConn{header: http.Header{}}
			w := &statusWriter{ResponseWriter: c, conn: c, idle: idle}
			for _, pause := range []time.Duration{0, 0, time.Second, idle / idleSlack, idle - time.Second, 0, idle + time.Hour} {
				time.Sleep(pause)
				w.Write([]byte("manifest"))
				if left := c.deadline.Sub(time.Now()); left < idle || left > idle+idle/idleSlack {
					t.Fatalf("after a pause of %v: the deadline is %v away; want %v to %v", pause, left, idle, idle+idle/idleSlack)
				}
			}
			// The first write sets it; the next ones within the slack do
			// not, the ones after it do.
			if want := []string{"deadline", "write", "write", "write", "deadline", "write", "deadline", "write", "write", "deadline", "write"}; !slices.Equal(c.events, want) {
				t.Errorf("events %v, want %v", c.events, want)
			}
		})
	})
}
