package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// stream sends a request whose body or answer may be long (a warm, an
// archive): no overall timeout, the connection's progress is the limit.
// in is a JSON value, or an io.Reader sent as contentType of length size
// (-1: unknown). A non-2xx answer is returned as the server's error.
func (c *adminClient) stream(ctx context.Context, method, path string, in any, contentType string, size int64) (*http.Response, error) {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case io.Reader:
		body = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body, contentType, size = bytes.NewReader(b), "application/json", int64(len(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if body != nil {
		req.ContentLength = size
	}
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach regcache at %s: %w", c.server, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, answerError(method, path, resp.Status, raw)
	}
	return resp, nil
}

// decodeAnswer decodes a JSON answer (at most 16 MiB) into v.
func decodeAnswer(r io.Reader, v any) error {
	if err := json.NewDecoder(io.LimitReader(r, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("read the server's answer: %w", err)
	}
	return nil
}
