package uploads

import (
	"bytes"
	"testing"
)

// TestCount follows the number of open sessions across starts, a cancel, a
// restart and a commit.
func TestCount(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	f := open(t, dir, 0)
	a, err := f.s.Start(ctx, "lab/app")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.s.Start(ctx, "lab/app")
	if err != nil {
		t.Fatal(err)
	}
	if n := f.s.Count(); n != 2 {
		t.Fatalf("Count() = %d after two starts, want 2", n)
	}
	if err := f.s.Cancel(ctx, "lab/app", b); err != nil {
		t.Fatal(err)
	}
	if n := f.s.Count(); n != 1 {
		t.Fatalf("Count() = %d after a cancel, want 1", n)
	}
	f.meta.Close()
	f = open(t, dir, 0)
	defer f.meta.Close()
	if n := f.s.Count(); n != 1 {
		t.Fatalf("Count() = %d after a restart, want 1", n)
	}
	data := []byte("layer")
	if _, err := f.s.Commit(ctx, "lab/app", a, digestOf(data), 0, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if n := f.s.Count(); n != 0 {
		t.Fatalf("Count() = %d after the commit, want 0", n)
	}
}
