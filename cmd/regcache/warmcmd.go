package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/warm"
)

// warmCmd is `regcache warm`: pre-load images, done by the server.
func warmCmd(getenv func(string) string) *cobra.Command {
	var files, platforms []string
	var all bool
	cmd := &cobra.Command{
		Use:   "warm REF... [-f FILE]",
		Short: "Pre-load images into the cache, so that they are served with the upstream gone",
		Long: `Pull the manifests and blobs of each reference into the cache of a running
regcache. The server does the work (this command asks it through the admin
API and shows its progress), so a laptop warms a remote regcache without
the bytes passing through it.

A reference is a repository of this registry (hub/app:1) or an upstream
reference (docker.io/library/app:1) resolved through the cache rules; without
a tag or digest it means :latest. Every platform of a multi-platform image is
warmed unless --platform names some (--all-platforms says so explicitly).
References can also come from files (-f list.txt, or -f - for standard
input), one per line; blank lines and lines starting with # are skipped.

On a terminal each image gets a progress bar (bytes, blobs, rate, time
left); otherwise plain lines are printed. A summary follows. The exit status
is 1, naming every reference that failed, when any did.`,
		Example: `  regcache warm hub/app:1 docker.io/library/nginx:1.27
  regcache warm -f images.txt --platform linux/amd64 --platform linux/arm64
  regcache warm --server https://regcache.lab:5000 --token-file ./admin.token -f -  < images.txt`,
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := referencesOf(cmd, args, files)
			if err != nil {
				return err
			}
			if all && len(platforms) > 0 {
				return usageErrorf(cmd, "give --platform or --all-platforms, not both")
			}
			req := warm.Request{References: refs, Platforms: platforms}
			if err := warm.Check(req); err != nil {
				return usageErr(cmd, err)
			}
			out := cmd.OutOrStdout()
			format, _ := cmd.Flags().GetString("output")
			mode, err := progressMode(cmd, out)
			if err != nil {
				return err
			}
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			resp, err := c.stream(cmd.Context(), http.MethodPost, "/admin/v1/warm", req, "", 0)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			view := newWarmView(out, refs, mode, format)
			sum, err := view.follow(resp.Body)
			if err != nil {
				return err
			}
			if len(sum.Failed) > 0 {
				return fmt.Errorf("%d of %d references failed: %s", len(sum.Failed), sum.Succeeded+len(sum.Failed), strings.Join(sum.Failed, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "file", "f", nil, "read references from FILE, one per line (- for standard input); repeatable")
	f.StringArrayVar(&platforms, "platform", nil, "warm only this platform of multi-platform images, os/arch[/variant], e.g. linux/arm64; repeatable (default: every platform)")
	f.BoolVar(&all, "all-platforms", false, "warm every platform of multi-platform images (the default)")
	progressFlag(cmd)
	connectionFlags(cmd)
	outputFlag(cmd, false, "text", "text", "json")
	return cmd
}

// referencesOf gathers the references of a command: its arguments, then
// those of the -f files; at least one.
func referencesOf(cmd *cobra.Command, args, files []string) ([]string, error) {
	refs := append([]string(nil), args...)
	for _, f := range files {
		more, err := readList(f, cmd.InOrStdin())
		if err != nil {
			return nil, err
		}
		refs = append(refs, more...)
	}
	if len(refs) == 0 {
		return nil, usageErrorf(cmd, "give at least one reference, as arguments or with -f FILE")
	}
	return refs, nil
}

// readList reads references from a file ("-": in), one per line.
func readList(path string, in io.Reader) ([]string, error) {
	r := in
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reference list: %w", err)
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reference list %s: %w", path, err)
	}
	return out, nil
}

// warmView shows a warm's events: redrawn bars, plain lines, or the
// events themselves (-o json).
type warmView struct {
	w      io.Writer
	mode   string
	format string
	order  []string
	state  map[string]*warmState
	board  board
	width  int
}

type warmState struct {
	ev        warm.Event
	meter     meter
	lastPrint time.Time
}

func newWarmView(w io.Writer, refs []string, mode, format string) *warmView {
	v := &warmView{w: w, mode: mode, format: format, state: map[string]*warmState{}, board: board{w: w}}
	for _, r := range refs {
		r = strings.TrimSpace(r)
		if _, ok := v.state[r]; ok {
			continue
		}
		v.order = append(v.order, r)
		v.state[r] = &warmState{ev: warm.Event{Ref: r}}
		v.width = min(max(v.width, len(r)), 48)
	}
	return v
}

// follow reads the events and shows them; it returns the summary.
func (v *warmView) follow(r io.Reader) (warm.Event, error) {
	dec := json.NewDecoder(r)
	for {
		var e warm.Event
		if err := dec.Decode(&e); err != nil {
			if errors.Is(err, io.EOF) {
				return warm.Event{}, errors.New("the server ended the warm without a summary (did it stop?)")
			}
			return warm.Event{}, fmt.Errorf("read warm progress: %w", err)
		}
		if v.format == "json" {
			json.NewEncoder(v.w).Encode(e)
		}
		if e.Type == warm.TypeSummary {
			if v.format != "json" {
				v.summary(e)
			}
			return e, nil
		}
		if v.format != "json" {
			v.show(e)
		}
	}
}

func (v *warmView) show(e warm.Event) {
	st := v.state[e.Ref]
	if st == nil {
		st = &warmState{}
		v.state[e.Ref] = st
		v.order = append(v.order, e.Ref)
	}
	if e.Type == warm.TypeStart {
		st.meter = newMeter()
	}
	st.ev = e
	if v.mode == progressBar {
		lines := make([]string, 0, len(v.order))
		for _, r := range v.order {
			lines = append(lines, v.line(v.state[r]))
		}
		v.board.draw(lines)
		return
	}
	switch e.Type {
	case warm.TypeStart:
		fmt.Fprintf(v.w, "%s: warming %s@%s%s: %d blobs, %s\n", e.Ref, e.Repository, e.Digest, platformsNote(e.Platforms), e.Blobs, humanBytes(e.Bytes))
		st.lastPrint = time.Now()
	case warm.TypeProgress:
		if time.Since(st.lastPrint) >= 5*time.Second {
			fmt.Fprintf(v.w, "%s: %s, %d/%d blobs\n", e.Ref, strings.TrimSpace(transferLine("", e.BytesDone, e.Bytes, st.meter)), e.BlobsDone, e.Blobs)
			st.lastPrint = time.Now()
		}
	case warm.TypeDone, warm.TypeError:
		fmt.Fprintln(v.w, v.line(st))
	}
}

// line is the state of one reference.
func (v *warmView) line(st *warmState) string {
	e := st.ev
	label := fmt.Sprintf("%-*s", v.width, e.Ref)
	if v.mode == progressPlain {
		label = e.Ref + ":"
	}
	switch e.Type {
	case "":
		return label + " waiting"
	case warm.TypeError:
		return label + " failed: " + e.Error
	case warm.TypeDone:
		return fmt.Sprintf("%s done: %d blobs, %s in %.1fs (%s fetched from the upstream)", label, e.Blobs, humanBytes(e.Bytes), e.Seconds, humanBytes(e.Fetched))
	}
	return fmt.Sprintf("%s  %d/%d blobs", transferLine(label, e.BytesDone, e.Bytes, st.meter), e.BlobsDone, e.Blobs)
}

func (v *warmView) summary(e warm.Event) {
	total := e.Succeeded + len(e.Failed)
	fmt.Fprintf(v.w, "warmed %d of %d references: %s (%s fetched from upstreams)\n", e.Succeeded, total, humanBytes(e.Bytes), humanBytes(e.Fetched))
	if len(e.Failed) > 0 {
		fmt.Fprintf(v.w, "failed: %s\n", strings.Join(e.Failed, ", "))
	}
}

func platformsNote(ps []string) string {
	if len(ps) == 0 {
		return ""
	}
	return " (" + strings.Join(ps, ", ") + ")"
}
