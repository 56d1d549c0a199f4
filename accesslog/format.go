package accesslog

import (
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// The formatters below write what slog's handlers write for an access
// line (log/slog handler.go, text_handler.go, json_handler.go, Go 1.26):
// built-in time, level and msg, then the Entry's attributes in Attrs'
// order, then requestid's attribute. The differential test and the fuzz
// target hold them to slog for any string a client can send.

// appendText appends the TextHandler line of e logged at t, with request
// ID id ("" when none); clock formats t.
func appendText(b []byte, clock *secondCache, t time.Time, e *Entry, id string) []byte {
	b = append(b, "time="...)
	b = clock.appendMillis(b, t)
	b = append(b, " level=INFO msg=request method="...)
	b = appendTextString(b, e.Method)
	b = append(b, " path="...)
	b = appendTextString(b, e.Path)
	b = append(b, " query="...)
	b = appendTextString(b, e.Query)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, " duration="...)
	b = append(b, e.Duration.Round(time.Microsecond).String()...) // String is inlined: no allocation
	b = append(b, " remote="...)
	b = appendTextString(b, e.Remote)
	b = append(b, " userAgent="...)
	b = appendTextString(b, e.UserAgent)
	if e.Cache != "" {
		b = append(b, " cache="...)
		b = appendTextString(b, e.Cache)
	}
	if e.Rule != "" {
		b = append(b, " rule="...)
		b = appendTextString(b, e.Rule)
	}
	if e.User != "" {
		b = append(b, " user="...)
		b = appendTextString(b, e.User)
	}
	if id != "" {
		b = append(b, " "+requestIDKey+"="...)
		b = appendTextString(b, id)
	}
	return append(b, '\n')
}

// appendJSON appends the JSONHandler line of e logged at t, with request
// ID id ("" when none); clock formats t.
func appendJSON(b []byte, clock *secondCache, t time.Time, e *Entry, id string) []byte {
	b = append(b, `{"time":"`...)
	b = clock.appendNano(b, t)
	b = append(b, `","level":"INFO","msg":"request","method":`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.Path)
	b = append(b, `,"query":`...)
	b = appendJSONString(b, e.Query)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(e.Duration.Round(time.Microsecond)), 10)
	b = append(b, `,"remote":`...)
	b = appendJSONString(b, e.Remote)
	b = append(b, `,"userAgent":`...)
	b = appendJSONString(b, e.UserAgent)
	if e.Cache != "" {
		b = append(b, `,"cache":`...)
		b = appendJSONString(b, e.Cache)
	}
	if e.Rule != "" {
		b = append(b, `,"rule":`...)
		b = appendJSONString(b, e.Rule)
	}
	if e.User != "" {
		b = append(b, `,"user":`...)
		b = appendJSONString(b, e.User)
	}
	if id != "" {
		b = append(b, `,"`+requestIDKey+`":`...)
		b = appendJSONString(b, id)
	}
	return append(b, "}\n"...)
}

// requestIDKey is requestid.LogKey, which needs no quoting or escaping
// (a test holds it to that).
const requestIDKey = "requestId"

// appendRFC3339Millis appends t as the TextHandler does: RFC 3339 with
// exactly three fraction digits, truncated.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	// RFC3339Nano trims trailing zeros: with a tenth of a millisecond
	// added there are always four digits, and the fourth is dropped.
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// appendTextString appends s as the TextHandler writes a string value:
// as is, or Go-quoted when it is empty or holds a space, '=', '"', a
// control character, a non-printing or space rune or invalid UTF-8.
func appendTextString(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	// The usual string is printable ASCII: checked 8 bytes at a time,
	// then byte by byte from the first word that may hold a byte to
	// quote (the word test may flag a plain word, never miss a byte).
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8] // of known length: one load, no bounds checks
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		eq, quote := x^(ones*'='), x^(ones*'"')
		if x&highs != 0 || // a byte of 0x80 or more
			(x-ones*('!'))&^x&highs != 0 || // a byte below '!': control or space
			(eq-ones)&^eq&highs != 0 || (quote-ones)&^quote&highs != 0 { // '=' or '"'
			break
		}
	}
	for i < len(s) && textPlain[s[i]] {
		i++
	}
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			// Backslash and DEL stand as they are (slog's rule: what JSON
			// would escape, but '\\', and space and '=').
			if c <= ' ' || c == '=' || c == '"' {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendJSONString appends s as a JSON string the way the JSONHandler
// escapes it: '"', '\\' and control characters escaped, invalid UTF-8 as
// U+FFFD, U+2028 and U+2029 escaped, HTML characters left as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonSafe reports whether c (ASCII) stands unescaped in a JSON string:
// all but the control characters, '"' and '\\' (encoding/json's safeSet,
// which slog uses).
func jsonSafe(c byte) bool { return c >= ' ' && c != '"' && c != '\\' }

// textPlain holds the bytes that need no quoting in a text value on their
// own: printable ASCII but space, '=' and '"' (a table, read only: the
// loop over a value is the access line's costliest part).
var textPlain = func() (t [256]bool) {
	for c := '!'; c < utf8.RuneSelf; c++ {
		t[c] = c != '=' && c != '"'
	}
	return t
}()
