package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// Progress modes of --progress.
const (
	progressAuto  = "auto"
	progressBar   = "bar"
	progressPlain = "plain"
)

// progressFlag registers --progress.
func progressFlag(cmd *cobra.Command) {
	cmd.Flags().String("progress", progressAuto, "how progress is shown: bar (a bar per image, redrawn in place), plain (log lines) or auto (bar on a terminal, plain otherwise)")
	cmd.RegisterFlagCompletionFunc("progress", cobra.FixedCompletions([]string{progressAuto, progressBar, progressPlain}, cobra.ShellCompDirectiveNoFileComp))
}

// progressMode returns bar or plain for the command's --progress and
// output writer w.
func progressMode(cmd *cobra.Command, w io.Writer) (string, error) {
	mode, _ := cmd.Flags().GetString("progress")
	switch mode {
	case progressBar, progressPlain:
		return mode, nil
	case progressAuto, "":
		if isTerminal(w) {
			return progressBar, nil
		}
		return progressPlain, nil
	}
	return "", usageErrorf(cmd, "--progress %q: want auto, bar or plain", mode)
}

// isTerminal reports whether w is a character device (a terminal), not
// a file or a pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// meter follows the progress of one transfer: it computes the rate (over
// the whole transfer so far) and the time left.
type meter struct {
	start time.Time
	now   func() time.Time
}

func newMeter() meter { return meter{start: time.Now(), now: time.Now} }

// rate and eta of done bytes out of total (total <= 0: unknown).
func (m meter) rateETA(done, total int64) (rate float64, eta time.Duration, ok bool) {
	el := m.now().Sub(m.start).Seconds()
	if el <= 0 || done <= 0 {
		return 0, 0, false
	}
	rate = float64(done) / el
	if total > 0 && total > done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
	}
	return rate, eta, true
}

// bar renders a bar of width cells for done of total.
func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(float64(width) * float64(min(done, total)) / float64(total))
	}
	return "[" + strings.Repeat("=", filled) + strings.Repeat(" ", width-filled) + "]"
}

// board redraws a set of lines in place on a terminal: each update moves
// the cursor back up over the lines drawn before.
type board struct {
	mu    sync.Mutex
	w     io.Writer
	drawn int
}

// draw replaces the lines drawn last with lines.
func (b *board) draw(lines []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	if b.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", b.drawn)
	}
	for _, l := range lines {
		sb.WriteString("\x1b[2K\r")
		sb.WriteString(l)
		sb.WriteString("\n")
	}
	io.WriteString(b.w, sb.String())
	b.drawn = len(lines)
}

// transferLine is one line of progress of a transfer of total bytes.
func transferLine(label string, done, total int64, m meter) string {
	rate, eta, ok := m.rateETA(done, total)
	s := label
	if total > 0 {
		s += fmt.Sprintf(" %s %3.0f%% %s / %s", bar(done, total, 24), 100*float64(done)/float64(total), humanBytes(done), humanBytes(total))
	} else {
		s += " " + humanBytes(done)
	}
	if ok {
		s += fmt.Sprintf("  %s/s", humanBytes(int64(rate)))
		if eta > 0 {
			s += "  ETA " + eta.String()
		}
	}
	return s
}
