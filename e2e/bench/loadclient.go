package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"time"
)

// loadConn is one keep-alive HTTP/1.1 connection driven by hand, for the
// request-rate scenarios: the request is written as prebuilt bytes and the
// answer parsed with http.ReadResponse on the same goroutine. It costs the
// load generator a fraction of what net/http's Client does per request
// (no per-request goroutine hand-offs, no connection pool), so that on a
// small machine the load measures the server more than the client.
type loadConn struct {
	addr string
	nc   net.Conn
	br   *bufio.Reader
	used int // requests answered on nc
	body bytes.Buffer
	get  http.Request // for http.ReadResponse: it needs only the method
	head http.Request
}

func newLoadConn(addr string) *loadConn {
	return &loadConn{addr: addr, get: http.Request{Method: http.MethodGet}, head: http.Request{Method: http.MethodHead}}
}

// requestBytes builds a request for path; accept may be empty.
func requestBytes(method, host, path, accept string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: regcache-bench\r\n", method, path, host)
	if accept != "" {
		fmt.Fprintf(&b, "Accept: %s\r\n", accept)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// answer is one response as the load scenarios check it.
type answer struct {
	status int
	header http.Header
	body   []byte // valid until the next request on the connection
	ttfb   time.Duration
	total  time.Duration
}

// requestTimeout bounds one request of a load scenario.
const requestTimeout = time.Minute

// do sends req (built by requestBytes for method) and reads the answer.
// A request that fails before any byte came back on a connection that had
// served others (the server closed it meanwhile) is retried once on a new
// connection, as net/http's client does.
func (c *loadConn) do(method string, req []byte) (answer, error) {
	a, retry, err := c.try(method, req)
	if err != nil && retry {
		a, _, err = c.try(method, req)
	}
	return a, err
}

// try is one attempt of do; retry says whether a failure may be retried.
func (c *loadConn) try(method string, req []byte) (a answer, retry bool, err error) {
	if c.nc == nil {
		nc, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			return a, false, err
		}
		c.nc, c.br, c.used = nc, bufio.NewReaderSize(nc, 64<<10), 0
	}
	reused := c.used > 0
	start := time.Now()
	c.nc.SetDeadline(start.Add(requestTimeout))
	if _, err := c.nc.Write(req); err != nil {
		c.close()
		return a, reused, err
	}
	if _, err := c.br.Peek(1); err != nil {
		c.close()
		return a, reused, err
	}
	a.ttfb = time.Since(start)
	r := &c.get
	if method == http.MethodHead {
		r = &c.head
	}
	resp, err := http.ReadResponse(c.br, r)
	if err != nil {
		c.close()
		return a, false, err
	}
	c.body.Reset()
	_, err = c.body.ReadFrom(resp.Body)
	resp.Body.Close()
	a.total = time.Since(start)
	if err != nil {
		c.close()
		return a, false, err
	}
	c.used++
	if resp.Close {
		c.close()
	}
	a.status, a.header, a.body = resp.StatusCode, resp.Header, c.body.Bytes()
	return a, false, nil
}

func (c *loadConn) close() {
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
}
