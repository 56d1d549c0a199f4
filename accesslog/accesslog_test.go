package accesslog_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regcache/regcache/accesslog"
	"github.com/regcache/regcache/logsink"
	"github.com/regcache/regcache/requestid"
)

// tricky are strings a client puts in a path, query, user agent or
// request ID, and that quoting or escaping must get right.
var tricky = []string{
	"", "plain", "/v2/library/alpine/manifests/latest", "n=10&last=a b", "a=b", `quote"d`, `back\slash`,
	"with space", "tab\there", "new\nline", "cr\rhere", "nul\x00byte", "\x1f\x7f", "bell\a",
	"caf\u00e9", "日本語", "emoji 🐳", "\u00a0nbsp", "\u2028ls\u2029ps", "\u200bzero-width", "\ufeffbom",
	"bad\xffutf8", "\xc3", "\xed\xa0\x80surrogate", "<script>&amp;</script>", "key=value with=eq",
	"µs", "\\u0041", "'single'", "trailing ", " leading", "#hash", "%2F%20", strings.Repeat("x", 2000),
	"curl/8.5.0", "containerd/v1.7.13", "Go-http-client/1.1",
}

var zones = []*time.Location{time.UTC, time.FixedZone("east", 5*3600+30*60), time.FixedZone("west", -8*3600), time.Local,
	time.FixedZone("lmt", 9*60+21)}

// times holds times whose fraction formats differently: none, whole
// milliseconds, trailing zeros, nanoseconds.
var times = []time.Time{
	time.Date(2026, 11, 30, 0, 9, 53, 0, time.UTC),
	time.Date(2026, 1, 2, 3, 4, 5, 120_000_000, time.UTC),
	time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC),
	time.Date(1999, 12, 31, 23, 59, 59, 1, time.UTC),
	time.Date(2026, 6, 7, 8, 9, 10, 123_456_789, time.UTC),
	time.Date(2026, 6, 7, 8, 9, 10, 100_000, time.UTC),
	time.Date(10000, 1, 1, 0, 0, 0, 5_000_000, time.UTC), // years of other than 4 digits: formatted as slog does
	time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
}

var durations = []time.Duration{0, 1, 499, 500, 999_499, 1_234_567, 999_999_999, time.Second, 61*time.Second + 5*time.Millisecond, 3*time.Hour + 2*time.Nanosecond, -1500}

// reference returns the logger the access line is checked against:
// slog's own handler of format f under requestid's, which Log reaches
// through slog.
func reference(w io.Writer, f accesslog.Format) *slog.Logger {
	if f == accesslog.JSON {
		return slog.New(requestid.Handler(slog.NewJSONHandler(w, nil)))
	}
	return slog.New(requestid.Handler(slog.NewTextHandler(w, nil)))
}

// fast is a logger through the fast path and its output.
type fast struct {
	l   *slog.Logger
	out *bytes.Buffer
}

func newFast(f accesslog.Format) fast {
	var b bytes.Buffer
	return fast{slog.New(accesslog.NewHandler(&b, f, slog.LevelInfo)), &b}
}

// compare logs e with ID id through fl (a fast logger of format f, kept
// across calls so that its cache of formatted seconds is used) and
// through slog, and fails when the lines differ.
func compare(t testing.TB, f accesslog.Format, fl fast, e accesslog.Entry, id string) {
	t.Helper()
	ctx := requestid.With(context.Background(), id)
	var want bytes.Buffer
	fl.out.Reset()
	accesslog.Log(ctx, fl.l, &e)
	accesslog.Log(ctx, reference(&want, f), &e)
	if got := fl.out.String(); got != want.String() {
		t.Fatalf("format %d, entry %+v, id %q:\ngot  %q\nwant %q", f, e, id, got, want.String())
	}
	if want.Len() == 0 || strings.Count(want.String(), "\n") != 1 {
		t.Fatalf("slog wrote %q: want one line", want.String())
	}
}

// TestSameAsSlog holds the fast line to slog's, byte for byte, for every
// field holding every tricky string, at times in several zones, with and
// without the optional fields and the request ID.
func TestSameAsSlog(t *testing.T) {
	t.Parallel()
	for _, f := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
		t.Run(fmt.Sprint("format", f), func(t *testing.T) {
			t.Parallel()
			base := accesslog.Entry{Method: "GET", Path: "/v2/hub/library/alpine/manifests/latest", Status: 200,
				Bytes: 1234, Duration: 1_234_567, Remote: "127.0.0.1:50000", UserAgent: "containerd/v1.7.13"}
			fl := newFast(f)
			n := 0
			for i, s := range tricky {
				for field := range 9 {
					e := base
					e.Time = times[(i+field)%len(times)].In(zones[(i+field)%len(zones)])
					e.Duration = durations[(i+field)%len(durations)]
					e.Status = []int{200, 404, 0, -1, 999}[field%5]
					e.Bytes = []int64{0, 1 << 40, -1}[field%3]
					switch field {
					case 0:
						e.Method = s
					case 1:
						e.Path = s
					case 2:
						e.Query = s
					case 3:
						e.Remote = s
					case 4:
						e.UserAgent = s
					case 5:
						e.Cache = s
					case 6:
						e.Rule = s
					case 7:
						e.User = s
					case 8:
						e.Cache, e.Rule, e.User = "HIT", "hub", s
					}
					compare(t, f, fl, e, "")
					compare(t, f, fl, e, "0123456789abcdef0123456789abcdef")
					compare(t, f, fl, e, "a=b/c+d@e") // Valid, and needs quoting in text
					compare(t, f, fl, e, s)           // what requestid.With carries, valid or not
					// The same second again, at other fractions: the
					// formatted second is reused.
					sec := e.Time.Truncate(time.Second)
					for _, ns := range []int{0, 1, 999_999, 1_000_000, 10_000_000, 120_000_000, 999_999_999} {
						e.Time = sec.Add(time.Duration(ns))
						compare(t, f, fl, e, "id")
					}
					n += 11
				}
			}
			t.Logf("%d lines identical", n)
		})
	}
}

// FuzzSameAsSlog holds the fast line to slog's for any strings.
func FuzzSameAsSlog(f *testing.F) {
	for i, s := range tricky {
		f.Add(s, s, s, s, s, s, int64(durations[i%len(durations)]), int64(i)*7_654_321)
	}
	f.Fuzz(func(t *testing.T, method, path, query, ua, user, id string, dur, nanos int64) {
		e := accesslog.Entry{Time: time.Unix(1_780_000_000, nanos%1e9).In(zones[int(uint64(nanos)%uint64(len(zones)))]),
			Method: method, Path: path, Query: query, Status: 200, Bytes: nanos, Duration: time.Duration(dur),
			Remote: "[::1]:1234", UserAgent: ua, Cache: "HIT", Rule: id, User: user}
		for _, format := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
			fl := newFast(format)
			compare(t, format, fl, e, id)
			e2 := e
			e2.Time = e.Time.Add(time.Duration(uint64(dur) % uint64(2*time.Second))) // often the same second
			compare(t, format, fl, e2, id)
		}
	})
}

// TestNowWhenNoTime: an entry without a time is logged at the current
// time.
func TestNowWhenNoTime(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	before := time.Now().Truncate(time.Millisecond)
	accesslog.Log(context.Background(), slog.New(accesslog.NewHandler(&buf, accesslog.JSON, slog.LevelInfo)), &accesslog.Entry{Method: "GET"})
	var line struct{ Time time.Time }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	if line.Time.Before(before) || line.Time.After(time.Now()) {
		t.Fatalf("line time %v: want the time of the Log call (after %v)", line.Time, before)
	}
}

// TestLevel: below the handler's level nothing is written, whichever
// path the line takes, and a LevelVar is followed as it changes.
func TestLevel(t *testing.T) {
	t.Parallel()
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	var buf bytes.Buffer
	e := accesslog.Entry{Time: times[0], Method: "GET"}
	for _, l := range []*slog.Logger{
		slog.New(accesslog.NewHandler(&buf, accesslog.Text, &lv)),
		slog.New(accesslog.NewHandler(&buf, accesslog.Text, &lv)).With("component", "x"),
	} {
		accesslog.Log(context.Background(), l, &e)
	}
	if buf.Len() != 0 {
		t.Fatalf("at level warn: %q; want nothing", buf.String())
	}
	lv.Set(slog.LevelInfo)
	accesslog.Log(context.Background(), slog.New(accesslog.NewHandler(&buf, accesslog.Text, &lv)), &e)
	if !strings.Contains(buf.String(), "msg=request method=GET") {
		t.Fatalf("at level info: %q; want the line", buf.String())
	}
}

// TestDerivedFallsBack: a logger derived with attributes or a group logs
// the access line through slog, with what the derivation adds.
func TestDerivedFallsBack(t *testing.T) {
	t.Parallel()
	e := accesslog.Entry{Time: times[1], Method: "HEAD", Path: "/v2/", Status: 200}
	ctx := requestid.With(context.Background(), "id1")
	for _, tc := range []struct {
		name   string
		derive func(*slog.Logger) *slog.Logger
	}{
		{"with attrs", func(l *slog.Logger) *slog.Logger { return l.With("node", "a b") }},
		{"with group", func(l *slog.Logger) *slog.Logger { return l.WithGroup("http") }},
	} {
		for _, f := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
			var got, want bytes.Buffer
			accesslog.Log(ctx, tc.derive(slog.New(accesslog.NewHandler(&got, f, slog.LevelInfo))), &e)
			accesslog.Log(ctx, tc.derive(reference(&want, f)), &e)
			if got.String() != want.String() || !strings.Contains(got.String(), "http") && !strings.Contains(got.String(), "node") {
				t.Fatalf("%s, format %d:\ngot  %q\nwant %q", tc.name, f, got.String(), want.String())
			}
		}
	}
}

// TestOtherLines: every other line goes through slog's handler, with the
// request ID of its context.
func TestOtherLines(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := slog.New(accesslog.NewHandler(&buf, accesslog.Text, slog.LevelInfo))
	l.WarnContext(requestid.With(context.Background(), "abc"), "fill failed", "repo", "library/alpine")
	if s := buf.String(); !strings.Contains(s, `level=WARN msg="fill failed" repo=library/alpine requestId=abc`) {
		t.Fatalf("line %q", s)
	}
}

// TestConcurrentWholeLines: access lines and other lines logged at once
// from many goroutines reach a writer not made for concurrent use as
// whole lines (the race detector watches the writer), and through a
// logsink.Writer too.
func TestConcurrentWholeLines(t *testing.T) {
	t.Parallel()
	for _, sink := range []bool{false, true} {
		var buf bytes.Buffer
		var w io.Writer = &buf
		var ls *logsink.Writer
		if sink {
			ls = logsink.New(&buf)
			w = ls
		}
		l := slog.New(accesslog.NewHandler(w, accesslog.Text, slog.LevelInfo))
		const goroutines, lines = 8, 200
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				ctx := requestid.With(context.Background(), fmt.Sprint("g", g))
				for i := range lines {
					accesslog.Log(ctx, l, &accesslog.Entry{Method: "GET", Path: fmt.Sprintf("/v2/r%d/manifests/t%d", g, i), UserAgent: strings.Repeat("u", 300)})
					l.InfoContext(ctx, "other", "i", i)
				}
			})
		}
		wg.Wait()
		if ls != nil {
			if err := ls.Close(); err != nil {
				t.Fatal(err)
			}
		}
		n := 0
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "time=") || !strings.Contains(line, " requestId=g") {
				t.Fatalf("sink %v: broken line %q", sink, line)
			}
			n++
		}
		if n != goroutines*lines*2 {
			t.Fatalf("sink %v: %d lines; want %d", sink, n, goroutines*lines*2)
		}
	}
}

// TestRequestIDKey: the key the formatter writes is requestid's.
func TestRequestIDKey(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	accesslog.Log(requestid.With(context.Background(), "x"), slog.New(accesslog.NewHandler(&buf, accesslog.Text, slog.LevelInfo)), &accesslog.Entry{})
	if !strings.HasSuffix(buf.String(), " "+requestid.LogKey+"=x\n") {
		t.Fatalf("line %q: want it to end with %s=x", buf.String(), requestid.LogKey)
	}
}

// BenchmarkLog compares the access line through the fast path and
// through slog.
func BenchmarkLog(b *testing.B) {
	e := accesslog.Entry{Method: "GET", Path: "/v2/hub/library/alpine/manifests/latest", Status: 200, Bytes: 1234,
		Duration: 123_456, Remote: "127.0.0.1:50000", UserAgent: "containerd/v1.7.13", Cache: "HIT", Rule: "hub"}
	ctx := requestid.With(context.Background(), requestid.New())
	for _, f := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
		for _, bc := range []struct {
			name string
			l    *slog.Logger
		}{
			{"fast", slog.New(accesslog.NewHandler(io.Discard, f, slog.LevelInfo))},
			{"slog", reference(io.Discard, f)},
		} {
			b.Run(fmt.Sprintf("format%d/%s", f, bc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					e.Time = time.Time{}
					accesslog.Log(ctx, bc.l, &e)
				}
			})
		}
	}
}

// TestEveryBytePosition: each byte that decides quoting or escaping, at
// every position of strings longer than the formatters' 8-byte words,
// gives slog's line.
func TestEveryBytePosition(t *testing.T) {
	t.Parallel()
	for _, f := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
		fl := newFast(f)
		for _, c := range []string{"\x00", "\x1f", " ", "!", "=", `"`, `\`, "\x7f", "\x80", "\xff", "é", "\u2028", "~", "<"} {
			for n := 1; n <= 24; n++ {
				for pos := 0; pos < n; pos++ {
					s := strings.Repeat("a", pos) + c + strings.Repeat("b", n-pos-1)
					compare(t, f, fl, accesslog.Entry{Time: times[4], Method: "GET", Path: s, UserAgent: s}, "")
				}
			}
		}
	}
}
