package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// mutation is one small change to the source that a named test must catch:
// the promise it breaks, where, and which tests should notice.
type mutation struct {
	Name     string
	Promise  string        // what the mutated code no longer does
	File     string        // relative to the repository root
	Original string        // exact text, occurring exactly once in File
	Mutated  string        // what replaces it
	Package  string        // go test package, e.g. ./cache
	Run      string        // go test -run pattern
	Timeout  time.Duration // go test -timeout (default 3m)
	Line     int           // where the entry starts in the list, for messages
}

// defaultTimeout bounds one go test run of a mutation: a mutation may make
// a test hang, and a hang that ends in the test timeout counts as caught.
const defaultTimeout = 3 * time.Minute

// parseList reads the mutation list format:
//
//	# comment
//	=== name
//	promise: what breaks
//	file: cache/fill.go
//	package: ./cache
//	run: ^TestLastByteWaitsForVerification$
//	timeout: 3m                (optional)
//	--- original
//	<exact lines, tabs and all>
//	--- mutated
//	<replacement lines; none to delete the original>
//
// Snippet lines are taken verbatim up to the next "---", "===" or comment
// line (one starting with '#', which no Go source line does); trailing blank
// lines of a snippet are dropped.
func parseList(r io.Reader) ([]mutation, error) {
	var (
		out     []mutation
		cur     *mutation
		section string // "", "original" or "mutated"
		snippet []string
		lineNo  int
	)
	flushSnippet := func() {
		for len(snippet) > 0 && strings.TrimSpace(snippet[len(snippet)-1]) == "" {
			snippet = snippet[:len(snippet)-1]
		}
		text := strings.Join(snippet, "\n")
		switch section {
		case "original":
			cur.Original = text
		case "mutated":
			cur.Mutated = text
		}
		snippet, section = nil, ""
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "=== "):
			if cur != nil {
				flushSnippet()
				out = append(out, *cur)
			}
			name := strings.TrimSpace(strings.TrimPrefix(line, "=== "))
			if prev, dup := seen[name]; dup {
				return nil, fmt.Errorf("line %d: mutation %q already defined at line %d", lineNo, name, prev)
			}
			seen[name] = lineNo
			cur = &mutation{Name: name, Line: lineNo, Timeout: defaultTimeout}
		case cur != nil && (line == "--- original" || line == "--- mutated"):
			flushSnippet()
			section = strings.TrimPrefix(line, "--- ")
		case strings.HasPrefix(line, "#"):
			// A comment; it ends a snippet (no Go line starts with '#').
			if section != "" {
				flushSnippet()
			}
		case section != "":
			snippet = append(snippet, line)
		case strings.TrimSpace(line) == "":
		case cur == nil:
			return nil, fmt.Errorf("line %d: %q before the first \"=== name\" line", lineNo, line)
		default:
			key, value, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("line %d: %q: want \"key: value\", \"--- original\" or \"--- mutated\"", lineNo, line)
			}
			if err := cur.set(strings.TrimSpace(key), strings.TrimSpace(value)); err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		flushSnippet()
		out = append(out, *cur)
	}
	for _, m := range out {
		if err := m.validate(); err != nil {
			return nil, fmt.Errorf("mutation %q (line %d): %w", m.Name, m.Line, err)
		}
	}
	return out, nil
}

func (m *mutation) set(key, value string) error {
	switch key {
	case "promise":
		m.Promise = value
	case "file":
		m.File = value
	case "package":
		m.Package = value
	case "run":
		m.Run = value
	case "timeout":
		d, err := time.ParseDuration(value)
		if err != nil || d <= 0 {
			return fmt.Errorf("timeout %q: want a positive duration such as 3m", value)
		}
		m.Timeout = d
	default:
		return fmt.Errorf("unknown key %q (known: promise, file, package, run, timeout)", key)
	}
	return nil
}

func (m mutation) validate() error {
	switch {
	case m.Promise == "":
		return fmt.Errorf("promise: required (what the mutation breaks)")
	case m.File == "":
		return fmt.Errorf("file: required")
	case m.Package == "":
		return fmt.Errorf("package: required, e.g. ./cache")
	case m.Run == "":
		return fmt.Errorf("run: required, the go test -run pattern of the tests that must catch it")
	case strings.TrimSpace(m.Original) == "":
		return fmt.Errorf("--- original: required, the exact source text to replace")
	case m.Original == m.Mutated:
		return fmt.Errorf("the mutated text equals the original")
	}
	if _, err := regexp.Compile(m.Run); err != nil {
		return fmt.Errorf("run %q: %w", m.Run, err)
	}
	return nil
}

// apply returns src with the mutation applied, or an error when the
// original text does not occur exactly once (a refactor moved it: the
// mutation must be updated, not silently skipped).
func (m mutation) apply(src string) (string, error) {
	switch n := strings.Count(src, m.Original); n {
	case 1:
		return strings.Replace(src, m.Original, m.Mutated, 1), nil
	case 0:
		return "", fmt.Errorf("NOT FOUND: the original text no longer occurs in %s", m.File)
	default:
		return "", fmt.Errorf("AMBIGUOUS: the original text occurs %d times in %s", n, m.File)
	}
}
