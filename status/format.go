package status

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The figures of a summary as people read them, shared by the status
// page and `regcache status`.

// Percent writes a ratio (0 to 1) as a percentage: 100%, 87.5%, 0%;
// "–" for a ratio of -1 (no reads).
func Percent(r float64) string {
	switch {
	case r < 0:
		return "–"
	case r >= 0.9995 || r == 0:
		return strconv.FormatFloat(r*100, 'f', 0, 64) + "%"
	}
	return strconv.FormatFloat(r*100, 'f', 1, 64) + "%"
}

// Bytes writes n bytes in binary units: 0 B, 512 B, 1.5 KiB, 20 GiB.
func Bytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	unit := 0
	for f >= 1024 && unit < 5 {
		f /= 1024
		unit++
	}
	prec := 1
	if f >= 100 {
		prec = 0
	}
	return strconv.FormatFloat(f, 'f', prec, 64) + " " + [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}[unit]
}

// Count writes n with thousands separators: 1,234,567.
func Count(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return sign + b.String()
}

// Duration writes a duration coarsely: 3d 4h, 5h 12m, 7m, 40s.
func Duration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", max(d/time.Second, 0))
}
