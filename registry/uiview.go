package registry

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"time"

	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/status"
)

// statusView is what the status page template shows: the summary, with
// its figures formatted and its charts laid out.
type statusView struct {
	S         status.Summary
	Refresh   int
	Generated string
	Uptime    string
	Healthy   bool
	// HitRatio of the last hour, and its class (good, warn, bad, none).
	HitRatio, HitClass string
	Reads              int64
	Saved, Fetched     string
	Store              storeView
	RatioChart         chart
	BytesChart         chart
	// ChartStart labels the left end of the charts.
	ChartStart   string
	Rules        []ruleView
	Sets         []setView
	Upstreams    []upstreamView
	HasRateLimit bool
}

type storeView struct {
	Used, Of, Detail string
	// Pct is the share used of the limit (or of the filesystem); -1 when
	// unknown.
	Pct   float64
	Class string
}

type ruleView struct {
	status.Rule
	Reads    int64
	Ratio    string
	RatioPct float64
	Class    string
	Saved    string
}

type setView struct {
	status.CredentialSet
	Class, Checked string
}

type upstreamView struct {
	status.Upstream
	Class, Contact, Fetched string
}

// newStatusView lays out s; times are told relative to when s was made.
func newStatusView(s status.Summary) statusView {
	now := s.GeneratedAt
	v := statusView{S: s, Refresh: refreshSeconds, Generated: s.GeneratedAt.Format("15:04:05 MST"),
		Uptime: status.Duration(now.Sub(s.StartedAt)), Healthy: len(s.Problems) == 0,
		Saved: status.Bytes(s.LastHour.StoreBytes), Fetched: status.Bytes(s.LastHour.FetchedBytes),
		HasRateLimit: s.RateLimits != nil}
	h := s.LastHour
	v.Reads = h.Hits + h.Misses + h.Stale
	v.HitRatio, v.HitClass = percent(h.Ratio)
	v.Store = newStoreView(s.Store)
	v.RatioChart, v.BytesChart = charts(h.Minutes)
	v.ChartStart = "60 min ago"
	for _, r := range s.Rules {
		rv := ruleView{Rule: r, Reads: r.Hits + r.Misses + r.Stale, Saved: status.Bytes(r.StoreBytes)}
		rv.Ratio, rv.Class = percent(r.Ratio())
		rv.RatioPct = math.Max(r.Ratio()*100, 0)
		v.Rules = append(v.Rules, rv)
	}
	for _, c := range s.CredentialSets {
		sv := setView{CredentialSet: c, Class: "none", Checked: "not yet"}
		switch c.State {
		case credentials.StateHealthy:
			sv.Class = "good"
		case credentials.StateUnhealthy:
			sv.Class = "bad"
		}
		if !c.CheckedAt.IsZero() {
			sv.Checked = ago(now, c.CheckedAt)
		}
		v.Sets = append(v.Sets, sv)
	}
	for _, u := range s.Upstreams {
		uv := upstreamView{Upstream: u, Contact: "never", Fetched: status.Bytes(u.FetchedBytes)}
		switch u.State {
		case status.UpstreamReachable:
			uv.Class = "good"
		case status.UpstreamFailing:
			uv.Class = "warn"
		case status.UpstreamUnreachable:
			uv.Class = "bad"
		default:
			uv.Class = "none"
		}
		if !u.LastContact.IsZero() {
			uv.Contact = ago(now, u.LastContact)
		}
		v.Upstreams = append(v.Upstreams, uv)
	}
	return v
}

func newStoreView(st status.Store) storeView {
	v := storeView{Used: "counting…", Pct: -1, Class: "none"}
	if st.Counted {
		v.Used = status.Bytes(st.Bytes)
		v.Detail = fmt.Sprintf("%s blobs", status.Count(st.Blobs))
	}
	var used, of float64
	switch {
	case st.LimitBytes > 0:
		v.Of = "of " + status.Bytes(st.LimitBytes) + " limit"
		used, of = float64(st.Bytes), float64(st.LimitBytes)
	case st.FilesystemBytes > 0:
		used, of = float64(st.FilesystemBytes-st.FilesystemFreeBytes), float64(st.FilesystemBytes)
		v.Of = fmt.Sprintf("disk %.0f%% full (%s of %s)", used/of*100, status.Bytes(int64(used)), status.Bytes(int64(of)))
	}
	if of > 0 && (st.Counted || st.LimitBytes == 0) {
		v.Pct = math.Min(used/of*100, 100)
		switch {
		case v.Pct >= 90:
			v.Class = "bad"
		case v.Pct >= 75:
			v.Class = "warn"
		default:
			v.Class = "good"
		}
	}
	return v
}

// chart is an inline SVG bar chart: 60 one-minute slots across a viewBox
// of chartWidth x chartHeight, scaled to its box by CSS.
type chart struct {
	Bars []bar
	// Empty is true when no minute had reads.
	Empty bool
	// Max labels the top of the scale.
	Max string
}

type bar struct {
	X, Width, Y, Height float64
	Class               string
	Title               string
}

const (
	chartWidth  = 600
	chartHeight = 160
	chartSlots  = 60
)

// charts lays out the hit ratio and the bytes of each minute: a minute's
// slot is counted back from the minute in progress (the rightmost).
func charts(minutes []status.Minute) (ratio, bytes chart) {
	ratio.Empty, bytes.Empty = true, true
	ratio.Max = "100%"
	if len(minutes) == 0 {
		return ratio, bytes
	}
	last := minutes[len(minutes)-1].Start.Truncate(time.Minute)
	var maxBytes int64
	for _, m := range minutes {
		maxBytes = max(maxBytes, m.StoreBytes+m.FetchedBytes)
	}
	scale := niceCeil(maxBytes)
	if scale > 0 {
		bytes.Max = status.Bytes(scale)
	}
	slotW := float64(chartWidth) / chartSlots
	for _, m := range minutes {
		slot := chartSlots - 1 - int(last.Sub(m.Start.Truncate(time.Minute))/time.Minute)
		if slot < 0 {
			continue
		}
		x := float64(slot)*slotW + 1
		w := slotW - 2
		when := m.Start.Format("15:04")
		if r := m.Ratio(); r >= 0 {
			ratio.Empty = false
			h := math.Max(r*chartHeight, 2)
			_, class := percent(r)
			ratio.Bars = append(ratio.Bars, bar{X: x, Width: w, Y: chartHeight - h, Height: h, Class: class,
				Title: fmt.Sprintf("%s: %s hits (%d hits, %d stale, %d misses)", when, status.Percent(r), m.Hits, m.Stale, m.Misses)})
		}
		if m.StoreBytes+m.FetchedBytes > 0 && scale > 0 {
			bytes.Empty = false
			hs := float64(m.StoreBytes) / float64(scale) * chartHeight
			hf := float64(m.FetchedBytes) / float64(scale) * chartHeight
			title := fmt.Sprintf("%s: %s from the store, %s from upstreams", when, status.Bytes(m.StoreBytes), status.Bytes(m.FetchedBytes))
			bytes.Bars = append(bytes.Bars,
				bar{X: x, Width: w, Y: chartHeight - hs, Height: hs, Class: "saved", Title: title},
				bar{X: x, Width: w, Y: chartHeight - hs - hf, Height: hf, Class: "fetched", Title: title})
		}
	}
	return ratio, bytes
}

// niceCeil rounds n bytes up to a round figure in its binary unit: 1, 2
// or 5 times a power of ten KiB, MiB...: the top of the bytes chart.
func niceCeil(n int64) int64 {
	if n <= 0 {
		return 0
	}
	unit := int64(1)
	for n/unit >= 1024 && unit < 1<<50 {
		unit <<= 10
	}
	v := (n + unit - 1) / unit // in units, rounded up
	p := int64(1)
	for p*10 <= v {
		p *= 10
	}
	for _, f := range []int64{1, 2, 5, 10} {
		if f*p >= v {
			if f*p >= 1000 && unit < 1<<50 {
				return unit << 10 // 1 of the next unit, not 1000 of this one
			}
			return f * p * unit
		}
	}
	return 10 * p * unit
}

// percent formats a ratio (-1: no reads) and classes it.
func percent(r float64) (string, string) {
	switch {
	case r < 0:
		return "–", "none"
	case r >= 0.9:
		return status.Percent(r), "good"
	case r >= 0.5:
		return status.Percent(r), "warn"
	}
	return status.Percent(r), "bad"
}

func ago(now, t time.Time) string { return status.Duration(now.Sub(t)) + " ago" }

// uiFuncs are the template's helpers.
var uiFuncs = template.FuncMap{
	"count": status.Count,
	"bytes": status.Bytes,
	"f1":    func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
}
