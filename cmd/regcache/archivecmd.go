package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/registry"
)

// exportCmd is `regcache export`.
func exportCmd(getenv func(string) string) *cobra.Command {
	var out, skipFile string
	var files []string
	var inventory bool
	cmd := &cobra.Command{
		Use:   "export --out FILE REF... | export --inventory [--out FILE]",
		Short: "Write images to an OCI image-layout archive, for an air-gapped registry",
		Long: `Write the images of cached or local repositories of a running regcache to a
standard OCI image-layout tar archive (readable by skopeo copy oci-archive:,
by crane once unpacked, and by regcache import): every platform of a
multi-platform image, and the referrers (signatures, SBOMs) of what is
exported. The server writes the archive and streams it here; content not
cached yet is fetched on the way unless the server is offline. Every blob is
verified as it is written. The file appears only once complete.

References are as for regcache warm (hub/app:1, docker.io/library/app:1),
as arguments or from -f FILE.

Incremental: on the receiving registry, regcache export --inventory writes
what it holds; --skip-present FILE leaves those blobs out, so that the
archive carries only what the other side lacks (it is then for that
registry only).`,
		Example: `  regcache export --out lab.tar hub/app:1 hub/multi:2
  regcache export --inventory --out lab-has.txt --server https://lab-regcache:5000   # on the lab side
  regcache export --out delta.tar --skip-present lab-has.txt -f images.txt`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			if inventory {
				if len(args) > 0 || len(files) > 0 || skipFile != "" {
					return usageErrorf(cmd, "--inventory lists what this registry holds: give no references, -f or --skip-present")
				}
				return writeInventory(cmd, c, out)
			}
			if out == "" {
				return usageErrorf(cmd, "--out FILE is required (- for standard output)")
			}
			refs, err := referencesOf(cmd, args, files)
			if err != nil {
				return err
			}
			req := registry.ExportRequest{References: refs}
			if skipFile != "" {
				f, err := os.Open(skipFile)
				if err != nil {
					return fmt.Errorf("--skip-present: %w", err)
				}
				skip, err := archive.ReadInventory(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("--skip-present %s: %w", skipFile, err)
				}
				for d := range skip {
					req.SkipPresent = append(req.SkipPresent, d)
				}
			}
			return runExport(cmd, c, req, out)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "O", "", "the archive to write (- for standard output)")
	f.StringArrayVarP(&files, "file", "f", nil, "read references from FILE, one per line (- for standard input); repeatable")
	f.StringVar(&skipFile, "skip-present", "", "leave out the blobs listed in FILE: what the receiving registry holds, as regcache export --inventory wrote it there")
	f.BoolVar(&inventory, "inventory", false, "write what this registry holds (for an incremental export to it) instead of an archive")
	progressFlag(cmd)
	connectionFlags(cmd)
	return cmd
}

func runExport(cmd *cobra.Command, c *adminClient, req registry.ExportRequest, out string) error {
	stderr := cmd.ErrOrStderr()
	mode, err := progressMode(cmd, stderr)
	if err != nil {
		return err
	}
	resp, err := c.stream(cmd.Context(), http.MethodPost, "/admin/v1/export", req, "", 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	total, _ := strconv.ParseInt(resp.Header.Get("Regcache-Export-Bytes"), 10, 64)
	blobs := resp.Header.Get("Regcache-Export-Blobs")
	skipped := resp.Header.Get("Regcache-Export-Skipped")
	var w io.Writer = cmd.OutOrStdout()
	var tmp *os.File
	if out != "-" {
		if tmp, err = os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*"); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer os.Remove(tmp.Name()) // a no-op after the rename
		defer tmp.Close()
		w = tmp
	}
	p := newTransfer(stderr, "export "+out, total, mode)
	n, err := io.Copy(io.MultiWriter(w, p), resp.Body)
	p.finish()
	if err == nil {
		if msg := resp.Trailer.Get("Regcache-Export-Error"); msg != "" {
			err = errors.New(msg)
		}
	}
	if err != nil {
		return fmt.Errorf("export stopped after %s: %w", humanBytes(n), err)
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
	}
	note := ""
	if skipped != "" && skipped != "0" {
		note = fmt.Sprintf("; %s blobs the receiver holds left out", skipped)
	}
	fmt.Fprintf(stderr, "exported %d references to %s: %s blobs, %s%s\n", len(req.References), out, blobs, humanBytes(n), note)
	return nil
}

func writeInventory(cmd *cobra.Command, c *adminClient, out string) error {
	resp, err := c.stream(cmd.Context(), http.MethodGet, "/admin/v1/inventory", nil, "", 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == "" || out == "-" {
		_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}

// importCmd is `regcache import`.
func importCmd(getenv func(string) string) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "import ARCHIVE",
		Short: "Load an OCI image-layout or docker save archive into a running regcache",
		Long: `Send an archive to a running regcache, which loads it: an OCI image-layout
tar written by regcache export or by skopeo copy ... oci-archive:, or an
archive written by docker save (plain or gzip-compressed). The server
re-verifies every digest; it stores nothing of an archive that fails (the
error names the blob), and only once the whole archive has been read and
checked are the images linked and tagged.

Images are recorded under the repository names the archive records (a
registry host is dropped: 127.0.0.1:5000/hub/app is hub/app; Docker Hub's
short names get library/ as Docker gives them). --to PREFIX records them
under PREFIX/<name> instead, or under PREFIX when the archive records a tag
but no repository (skopeo copy ... oci-archive:lab.tar:v1). Importing into a
repository a cache rule covers pre-loads that cache.`,
		Example: `  regcache import lab.tar --server https://lab-regcache:5000
  regcache import app.tar --to lab/app
  docker save app:1 | regcache import - --to lab`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stderr := cmd.ErrOrStderr()
			mode, err := progressMode(cmd, stderr)
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			size := int64(-1)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					size = fi.Size()
				}
				r = f
			}
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			path := "/admin/v1/import"
			if to != "" {
				path += "?to=" + url.QueryEscape(to)
			}
			p := newTransfer(stderr, "import "+args[0], size, mode)
			resp, err := c.stream(cmd.Context(), http.MethodPost, path, io.TeeReader(r, p), "application/x-tar", size)
			p.finish()
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var rep archive.ImportReport
			if err := decodeAnswer(resp.Body, &rep); err != nil {
				return err
			}
			return printItems(cmd, false, []archive.ImportReport{rep}, importTable)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "record the images under PREFIX/<name in the archive> (or PREFIX when the archive records only a tag)")
	progressFlag(cmd)
	clientFlags(cmd)
	return cmd
}

func importTable(w io.Writer, reps []archive.ImportReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tDIGEST")
	for _, i := range reps[0].Images {
		tag := i.Tag
		if tag == "" {
			tag = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", i.Repository, tag, i.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	r := reps[0]
	_, err := fmt.Fprintf(w, "%s archive: %d blobs, %s; %d stored, %d already here\n", r.Format, r.Blobs, humanBytes(r.Bytes), r.Stored, r.Present)
	return err
}

// transfer shows the progress of one transfer of total bytes (-1:
// unknown) on w: a line redrawn in place, or a plain line every 5s.
type transfer struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	mode  string
	done  int64
	meter meter
	last  time.Time
	board board
}

func newTransfer(w io.Writer, label string, total int64, mode string) *transfer {
	return &transfer{w: w, label: label, total: total, mode: mode, meter: newMeter(), board: board{w: w}}
}

// Write counts b and shows the progress, at most every 200ms on a
// terminal and every 5s otherwise.
func (t *transfer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done += int64(len(b))
	every := 5 * time.Second
	if t.mode == progressBar {
		every = 200 * time.Millisecond
	}
	if time.Since(t.last) >= every {
		t.show()
	}
	return len(b), nil
}

func (t *transfer) show() {
	t.last = time.Now()
	line := transferLine(t.label, t.done, t.total, t.meter)
	if t.mode == progressBar {
		t.board.draw([]string{line})
		return
	}
	fmt.Fprintln(t.w, line)
}

// finish shows the final state.
func (t *transfer) finish() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mode == progressBar || t.done > 0 {
		t.show()
	}
}
