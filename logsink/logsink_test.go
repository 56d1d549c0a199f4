package logsink

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// gatedOut is an output that accepts nothing until its gate opens, and
// records each write it was handed.
type gatedOut struct {
	gate    chan struct{}
	mu      sync.Mutex
	writes  []string
	entered chan struct{} // receives once per write, as it starts
}

func newGatedOut() *gatedOut {
	return &gatedOut{gate: make(chan struct{}), entered: make(chan struct{}, 1000)}
}

func (o *gatedOut) Write(p []byte) (int, error) {
	o.entered <- struct{}{}
	<-o.gate
	o.mu.Lock()
	o.writes = append(o.writes, string(p))
	o.mu.Unlock()
	return len(p), nil
}

func (o *gatedOut) all() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.writes, "")
}

// While the output accepts nothing, Writes return at once and their lines
// gather; once it accepts again they go out in one write, in order, and
// nothing is lost.
func TestWritesDoNotWaitForTheOutput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := newGatedOut()
		w := New(out)
		var want strings.Builder
		line := func(i int) {
			l := fmt.Sprintf("time=now level=INFO msg=request n=%d\n", i)
			want.WriteString(l)
			if _, err := w.Write([]byte(l)); err != nil {
				t.Fatal(err)
			}
		}
		line(0)
		<-out.entered // the goroutine is writing line 0 and blocked in the output
		for i := 1; i <= 500; i++ {
			line(i) // returns although the output accepts nothing
		}
		close(out.gate)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := out.all(); got != want.String() {
			t.Fatalf("output differs from the lines written:\n%.300s", got)
		}
		out.mu.Lock()
		n := len(out.writes)
		out.mu.Unlock()
		if n != 2 {
			t.Errorf("%d writes to the output; want 2 (line 0, then the 500 lines that gathered meanwhile)", n)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// Once MaxPending bytes wait, a Write blocks until the output accepted
// them: memory stays bounded and no line is dropped.
func TestBoundedPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := newGatedOut()
		w := New(out)
		w.Write([]byte("first\n"))
		<-out.entered
		chunk := bytes.Repeat([]byte("x"), 1<<20-1)
		chunk = append(chunk, '\n')
		for range MaxPending / len(chunk) {
			w.Write(chunk)
		}
		returned := make(chan struct{})
		go func() {
			w.Write(chunk)
			close(returned)
		}()
		synctest.Wait()
		select {
		case <-returned:
			t.Fatal("a Write past MaxPending returned while the output accepted nothing")
		default:
		}
		close(out.gate)
		<-returned
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := len(out.all()), len("first\n")+(MaxPending/len(chunk)+1)*len(chunk); got != want {
			t.Fatalf("%d bytes written, want %d", got, want)
		}
	})
}

// Close writes what is pending; later Writes go straight to the output.
func TestClose(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	w := New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}))
	for i := range 100 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "after close\n")
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(out.String(), "\n"); n != 101 || !strings.HasSuffix(out.String(), "line 99\nafter close\n") {
		t.Fatalf("%d lines:\n%s", n, out.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// countingOut records how many writes it was handed.
type countingOut struct {
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (o *countingOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writes++
	return o.buf.Write(p)
}

// Lines of requests that are ready to run when the first one wakes the
// writing goroutine go out with it in one write, not in one write each.
// One processor makes the order of the goroutines the scheduler's, not
// the clock's: the writer, woken by the first line, lets the other
// hundred log theirs before it writes. Under the race detector the
// scheduler shuffles ready goroutines on purpose, which batches the lines
// with or without the yield: there the test checks only the outcome, and
// the mutation check (make mutate, no -race) holds the yield to it.
func TestReadyLinesShareAWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	out := &countingOut{}
	w := New(out)
	var want strings.Builder
	lines := make([]string, 100)
	for i := range lines {
		lines[i] = fmt.Sprintf("time=now level=INFO msg=request n=%d\n", i)
		want.WriteString(lines[i])
	}
	var wg sync.WaitGroup
	for i := range lines {
		wg.Go(func() {
			if _, err := w.Write([]byte(lines[i])); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	// The lines are in the order the goroutines ran, which is not theirs.
	if got := out.buf.Len(); got != want.Len() {
		t.Fatalf("%d bytes written, want the %d of the 100 lines", got, want.Len())
	}
	if out.writes > 5 {
		t.Errorf("100 lines ready together went out in %d writes, want at most 5", out.writes)
	}
}
