package accesslog

import (
	"sync/atomic"
	"time"
)

// Formatting a time costs as much as the rest of the line, and every line
// of one second shares all of it but the fraction. secondCache keeps the
// date, time of day and zone of the last second formatted.

// second is the formatted date and time of day (2006-01-02T15:04:05) and
// zone (Z or -07:00) of one second in one location, both the same for
// every instant of that second (zones change offset on whole seconds).
type second struct {
	unix int64
	loc  *time.Location
	date [19]byte
	zone string
}

// secondCache holds the last second formatted; lines of any goroutine
// read and replace it.
type secondCache struct{ last atomic.Pointer[second] }

// get returns t's second, or nil when t's year has other than 4 digits
// (the caller formats such a time itself).
func (c *secondCache) get(t time.Time) *second {
	u, loc := t.Unix(), t.Location()
	if s := c.last.Load(); s != nil && s.unix == u && s.loc == loc {
		return s
	}
	if y := t.Year(); y < 0 || y > 9999 {
		return nil
	}
	var buf [32]byte
	b := t.AppendFormat(buf[:0], time.RFC3339) // no fraction
	s := &second{unix: u, loc: loc, zone: string(b[19:])}
	copy(s.date[:], b)
	c.last.Store(s)
	return s
}

// appendMillis appends t as RFC 3339 with exactly three fraction digits,
// truncated (the TextHandler's time).
func (c *secondCache) appendMillis(b []byte, t time.Time) []byte {
	s := c.get(t)
	if s == nil {
		return appendRFC3339Millis(b, t)
	}
	ms := t.Nanosecond() / 1e6
	b = append(b, s.date[:]...)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, s.zone...)
}

// appendNano appends t as time.RFC3339Nano formats it: the fraction's
// trailing zeros dropped, and its point with them when it is zero (the
// JSONHandler's time).
func (c *secondCache) appendNano(b []byte, t time.Time) []byte {
	s := c.get(t)
	if s == nil {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	b = append(b, s.date[:]...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, s.zone...)
}
