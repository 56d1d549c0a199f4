package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/accesslog"
	"github.com/regcache/regcache/requestid"
)

// TestLoggerTakesTheAccessLinesFastPath: serve's logger, in either format,
// is the handler accesslog writes access lines for itself, at the level
// configured, and its lines carry the request ID.
func TestLoggerTakesTheAccessLinesFastPath(t *testing.T) {
	t.Parallel()
	ctx := requestid.With(context.Background(), "rid-1")
	e := &accesslog.Entry{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Method: "GET", Path: "/v2/", Status: 200}
	for _, tc := range []struct{ level, format, want string }{
		{"info", "text", `time=2026-01-02T03:04:05.000Z level=INFO msg=request method=GET path=/v2/ query="" status=200 bytes=0 duration=0s remote="" userAgent="" requestId=rid-1` + "\n"},
		{"debug", "json", `{"time":"2026-01-02T03:04:05Z","level":"INFO","msg":"request","method":"GET","path":"/v2/","query":"","status":200,"bytes":0,"duration":0,"remote":"","userAgent":"","requestId":"rid-1"}` + "\n"},
		{"warn", "text", ""},
	} {
		var buf bytes.Buffer
		log := newLogger(Config{LogLevel: tc.level, LogFormat: tc.format}, &buf)
		if _, ok := log.Handler().(*accesslog.Handler); !ok {
			t.Fatalf("%s/%s: the handler is %T, not the access log's", tc.level, tc.format, log.Handler())
		}
		accesslog.Log(ctx, log, e)
		if buf.String() != tc.want {
			t.Errorf("%s/%s: access line %q, want %q", tc.level, tc.format, buf.String(), tc.want)
		}
		if tc.format == "json" && !json.Valid(buf.Bytes()) {
			t.Errorf("json line %q is not JSON", buf.String())
		}
		buf.Reset()
		log.WarnContext(ctx, "other")
		if !strings.Contains(buf.String(), "rid-1") {
			t.Errorf("%s/%s: line %q without the request ID", tc.level, tc.format, buf.String())
		}
	}
}
