package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseList(t *testing.T) {
	t.Parallel()
	const good = `# a comment
=== first
promise: adds
file: calc/calc.go
package: ./calc
run: ^TestAdd$
timeout: 1m
--- original
	if a > 0 {

		return a + b
	}

--- mutated
	return a - b
# a comment ends a snippet
=== second
promise: deletes
file: calc/calc.go
package: ./calc
run: ^TestAdd$
--- original
	return a - b
--- mutated
`
	got, err := parseList(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("parsed %d mutations, want 2", len(got))
	}
	first, second := got[0], got[1]
	if first.Name != "first" || first.Promise != "adds" || first.File != "calc/calc.go" || first.Package != "./calc" ||
		first.Run != "^TestAdd$" || first.Timeout != time.Minute || first.Line != 2 {
		t.Errorf("first = %+v", first)
	}
	if want := "\tif a > 0 {\n\n\t\treturn a + b\n\t}"; first.Original != want {
		t.Errorf("first original = %q, want %q (tabs and inner blank lines kept, trailing ones dropped)", first.Original, want)
	}
	if first.Mutated != "\treturn a - b" {
		t.Errorf("first mutated = %q, want the line before the comment", first.Mutated)
	}
	if second.Mutated != "" || second.Timeout != defaultTimeout {
		t.Errorf("second = %+v, want an empty replacement and the default timeout", second)
	}

	for _, tc := range []struct{ name, list, want string }{
		{"text before the first entry", "promise: x\n", "before the first"},
		{"unknown key", "=== a\npromises: x\n", `unknown key "promises"`},
		{"not a key", "=== a\njust words\n", "want \"key: value\""},
		{"duplicate name", "=== a\npromise: p\nfile: f\npackage: ./p\nrun: T\n--- original\nx\n=== a\n", "already defined at line 1"},
		{"no promise", "=== a\nfile: f\npackage: ./p\nrun: T\n--- original\nx\n", "promise: required"},
		{"no file", "=== a\npromise: p\npackage: ./p\nrun: T\n--- original\nx\n", "file: required"},
		{"no package", "=== a\npromise: p\nfile: f\nrun: T\n--- original\nx\n", "package: required"},
		{"no run", "=== a\npromise: p\nfile: f\npackage: ./p\n--- original\nx\n", "run: required"},
		{"no original", "=== a\npromise: p\nfile: f\npackage: ./p\nrun: T\n", "--- original: required"},
		{"no change", "=== a\npromise: p\nfile: f\npackage: ./p\nrun: T\n--- original\nx\n--- mutated\nx\n", "equals the original"},
		{"bad pattern", "=== a\npromise: p\nfile: f\npackage: ./p\nrun: (\n--- original\nx\n", "run \"(\""},
		{"bad timeout", "=== a\ntimeout: soon\n", `timeout "soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseList(strings.NewReader(tc.list))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	m := mutation{File: "f.go", Original: "a + b", Mutated: "a - b"}
	if got, err := m.apply("return a + b"); err != nil || got != "return a - b" {
		t.Fatalf("apply = %q, %v", got, err)
	}
	if _, err := m.apply("return a * b"); err == nil || !strings.HasPrefix(err.Error(), "NOT FOUND") {
		t.Fatalf("original missing: err = %v, want NOT FOUND", err)
	}
	if _, err := m.apply("a + b; a + b"); err == nil || !strings.HasPrefix(err.Error(), "AMBIGUOUS") {
		t.Fatalf("original twice: err = %v, want AMBIGUOUS", err)
	}
}

// TestCommittedList: every mutation of scripts/mutations.txt still applies
// to the source, so that a refactor that moves a mutated line fails here,
// in make test, and not only in make mutate.
func TestCommittedList(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	f, err := os.Open(filepath.Join(root, "scripts", "mutations.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	muts, err := parseList(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range muts {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(m.File)))
		if err != nil {
			t.Errorf("%s: %v", m.Name, err)
			continue
		}
		if _, err := m.apply(string(src)); err != nil {
			t.Errorf("%s (scripts/mutations.txt line %d): %v; update the entry to the code as it is now", m.Name, m.Line, err)
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(m.Package))); err != nil {
			t.Errorf("%s: package %s: %v", m.Name, m.Package, err)
		}
	}
}

// TestCheck runs the whole check on a small module: a caught mutation, a
// missed one, one whose text is gone, one that does not compile, and tests
// that skip; the source is unchanged afterwards.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	const src = `package calc

// Add returns a + b.
func Add(a, b int) int { return a + b }

// Sub returns a - b.
func Sub(a, b int) int { return a - b }
`
	files := map[string]string{
		"go.mod":            "module example.com/m\n\ngo 1.22\n",
		"calc/calc.go":      src,
		"calc/calc_test.go": "package calc\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(2, 3) != 5 {\n\t\tt.Fatal(\"Add(2, 3) != 5\")\n\t}\n}\n\nfunc TestPeer(t *testing.T) { t.Skip(\"no peer here\") }\n",
		"mutations.txt": `=== add
promise: adds
file: calc/calc.go
package: ./calc
run: ^TestAdd$
--- original
{ return a + b }
--- mutated
{ return a - b }

=== sub
promise: subtracts (no test)
file: calc/calc.go
package: ./calc
run: ^TestAdd$
--- original
{ return a - b }
--- mutated
{ return a + b }

=== gone
promise: multiplies
file: calc/calc.go
package: ./calc
run: ^TestAdd$
--- original
{ return a * b }
--- mutated
{ return a / b }

=== syntax
promise: compiles
file: calc/calc.go
package: ./calc
run: ^TestAdd$
--- original
{ return a + b }
--- mutated
{ return a + }
`,
		"skips.txt": `=== peer
promise: needs a peer
file: calc/calc.go
package: ./calc
run: ^TestPeer$
--- original
{ return a + b }
--- mutated
{ return a - b }
`,
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	t.Setenv("GOFLAGS", "")

	var out bytes.Buffer
	ok, err := check(t.Context(), options{list: "mutations.txt", count: 1, goBin: "go"}, &out)
	if err != nil || ok {
		t.Fatalf("check = %v, %v; want false (not all caught), no error\n%s", ok, err, out.String())
	}
	for _, want := range []string{"CAUGHT     add", "TestAdd 1/1 failed", "MISSED     sub", "NOT FOUND  gone", "BROKEN     syntax", "1 of 4 caught, 3 not"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if b, err := os.ReadFile(filepath.Join("calc", "calc.go")); err != nil || string(b) != src {
		t.Fatalf("the source changed: %v\n%s", err, b)
	}

	out.Reset()
	ok, err = check(t.Context(), options{list: "skips.txt", count: 1, goBin: "go"}, &out)
	if err != nil || ok || !strings.Contains(out.String(), "BASELINE SKIPPED") {
		t.Fatalf("tests that skip: check = %v, %v; want false and BASELINE SKIPPED\n%s", ok, err, out.String())
	}
}
