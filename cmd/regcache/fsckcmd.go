package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

// fsckCmd is `regcache fsck`: a check of a data directory, or of the
// store of a running server through its admin API.
func fsckCmd(getenv func(string) string) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Verify stored blobs, links and tags; --repair quarantines what is wrong",
		Long: `Verify the store: every blob's bytes hash to the digest it is stored under,
every per-repository link names a blob that is stored intact with the size
the link records, and every tag points at a manifest linked to its
repository and stored intact. Problems are listed with what is wrong.

With --repair, corrupt blobs and stray files are moved to
<data-dir>/quarantine/<time of the check>/ (never deleted: look at them,
then remove them), and bad links and tags are removed from the metadata.
A cached image whose blob was quarantined is fetched again from its
upstream on the next pull.

Files of fills in progress (<data-dir>/blobs/tmp) are counted, never
checked or touched: a crash leaves them there, invisible, and
"regcache serve" removes them when it starts.

The data directory is --data-dir, else REGCACHE_DATA_DIR, else the dataDir
of the --config file, else ./regcache-data, as for "regcache serve". A
running regcache holds it locked: fsck then refuses, naming that process.
Give --server to have the running server check its own store instead,
without stopping it: it is safe next to fills and pulls (only committed
blobs are read, a blob is quarantined only if it is still the one found
corrupt, a record is removed only if it is still bad).

Blobs are hashed as a stream: memory does not grow with blob size.
Progress is shown on standard error when it is a terminal.

Exit status: 0 when nothing is wrong (or --repair repaired everything),
1 when a problem remains or the check could not run, 2 for a command line
that cannot run as given.`,
		Example: `  regcache fsck --data-dir /var/lib/regcache
  regcache fsck --data-dir /var/lib/regcache --repair
  regcache fsck --config /etc/regcache/config.yaml -o json
  regcache fsck --server http://localhost:5000 --token-file /var/lib/regcache/admin.token --repair`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			online := cmd.Flags().Changed("server")
			if online && (cmd.Flags().Changed("data-dir") || cmd.Flags().Changed("config")) {
				return usageErrorf(cmd, "give either --server (check a running regcache) or --data-dir/--config (check a stopped one's data directory), not both")
			}
			progress := newProgressLine(cmd.ErrOrStderr())
			var report storage.CheckReport
			var err error
			if online {
				report, err = fsckOnline(cmd, getenv, repair, progress)
			} else {
				report, err = fsckOffline(cmd, getenv, repair, progress)
			}
			progress.clear()
			if err != nil && report.Problems == nil {
				return err
			}
			if perr := printFsck(cmd, report); perr != nil {
				return perr
			}
			switch {
			case err != nil:
				return err
			case report.Unrepaired > 0 && repair:
				return fmt.Errorf("%d of %d problems could not be repaired (see the action of each)", report.Unrepaired, len(report.Problems))
			case report.Unrepaired > 0:
				return fmt.Errorf("%d problems found; run again with --repair to quarantine corrupt blobs and remove bad links and tags", report.Unrepaired)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&repair, "repair", false, "move corrupt blobs and stray files to <data-dir>/quarantine and remove bad links and tags")
	f.String("data-dir", "", "data directory of a stopped regcache (env REGCACHE_DATA_DIR; default the --config file's dataDir, else ./regcache-data)")
	f.String("config", "", "regcache config file to read dataDir from (env REGCACHE_CONFIG)")
	f.String("server", "", "check the store of the regcache running at this URL, e.g. http://localhost:5000, instead of a data directory")
	f.String("token", "", "admin token for --server (env REGCACHE_TOKEN; default: read from --token-file)")
	f.String("token-file", "", "file holding the admin token for --server (default <REGCACHE_DATA_DIR or ./regcache-data>/admin.token)")
	outputFlag(cmd, false, "table", "table", "json", "yaml")
	return cmd
}

// fsckDataDir returns the data directory to check: the flag, the
// environment, the config file, the default, in falling precedence.
func fsckDataDir(cmd *cobra.Command, getenv func(string) string) (string, error) {
	if cmd.Flags().Changed("data-dir") {
		dir, _ := cmd.Flags().GetString("data-dir")
		return dir, nil
	}
	if dir := getenv("REGCACHE_DATA_DIR"); dir != "" {
		return dir, nil
	}
	cfg := defaultConfig()
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		path = getenv("REGCACHE_CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return "", err
		}
	}
	return cfg.DataDir, nil
}

// fsckOffline checks a data directory no server is using.
func fsckOffline(cmd *cobra.Command, getenv func(string) string, repair bool, progress *progressLine) (storage.CheckReport, error) {
	dir, err := fsckDataDir(cmd, getenv)
	if err != nil {
		return storage.CheckReport{}, err
	}
	// OpenMeta would create an empty database: a mistyped path must not
	// pass for a healthy, empty store.
	metaPath := filepath.Join(dir, "meta.db")
	if _, err := os.Stat(metaPath); errors.Is(err, fs.ErrNotExist) {
		return storage.CheckReport{}, fmt.Errorf("%s is not a regcache data directory (it has no meta.db); name the server's with --data-dir, REGCACHE_DATA_DIR or --config", dir)
	}
	if where, err := os.ReadFile(filepath.Join(dir, etcdMetaMarker)); err == nil {
		return storage.CheckReport{}, fmt.Errorf("data directory %s keeps its metadata in etcd (%s), which fsck cannot check (its meta.db holds only upload sessions); fsck checks data directories of --meta bbolt", dir, strings.TrimSpace(string(where)))
	}
	meta, err := storage.OpenMeta(metaPath, storage.LockTimeout(time.Second))
	if errors.Is(err, storage.ErrLocked) {
		return storage.CheckReport{}, fmt.Errorf("data directory %s is in use: %w; stop that server first, or have it check its own store: regcache fsck --server <its URL>", dir, err)
	}
	if err != nil {
		return storage.CheckReport{}, err
	}
	defer meta.Close()
	blobs, err := storage.InspectBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		return storage.CheckReport{}, err
	}
	checker := storage.NewChecker(blobs, meta, filepath.Join(dir, "quarantine"))
	return checker.Check(cmd.Context(), storage.CheckOptions{Repair: repair, Progress: progress.show})
}

// fsckOnline has the server at --server check its own store, reading its
// progress as it goes.
func fsckOnline(cmd *cobra.Command, getenv func(string) string, repair bool, progress *progressLine) (storage.CheckReport, error) {
	c, err := newAdminClient(cmd, getenv)
	if err != nil {
		return storage.CheckReport{}, err
	}
	// A check of a large store takes long: no overall timeout (Ctrl-C, or
	// the server's idle timeouts, end it; the server reports every second).
	c.http = &http.Client{}
	resp, err := c.send(cmd.Context(), http.MethodPost, "/admin/v1/fsck", map[string]bool{"repair": repair})
	if err != nil {
		return storage.CheckReport{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var stopped error
	for {
		var e registry.FsckEvent
		if err := dec.Decode(&e); err != nil {
			if stopped != nil {
				return storage.CheckReport{}, stopped
			}
			return storage.CheckReport{}, fmt.Errorf("read the check's answer from %s: %w (the check stopped before its report)", c.server, err)
		}
		switch {
		case e.Progress != nil:
			progress.show(*e.Progress)
		case e.Error != nil:
			stopped = fmt.Errorf("the check stopped: %s (%s)", e.Error.Message, e.Error.Code)
		case e.Report != nil:
			return *e.Report, stopped
		}
	}
}

// printFsck writes the report in the --output format.
func printFsck(cmd *cobra.Command, r storage.CheckReport) error {
	format, _ := cmd.Flags().GetString("output")
	w := cmd.OutOrStdout()
	if format != "table" {
		return printValue(w, format, r)
	}
	if len(r.Problems) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tWHERE\tDETAIL\tACTION")
		for _, p := range r.Problems {
			action := p.Action
			if action == "" {
				action = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Kind, problemPlace(p), p.Detail, action)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Checked %s (%s), %s and %s in %s.\n", plural(r.Blobs, "blob"), humanBytes(r.BlobBytes),
		plural(r.Links, "link"), plural(r.Tags, "tag"), plural(r.Repositories, "repository"))
	if r.TempFiles > 0 {
		fmt.Fprintf(w, "%s of fills in progress or interrupted left as they are.\n", plural(r.TempFiles, "temporary file"))
	}
	if len(r.Problems) == 0 {
		_, err := fmt.Fprintln(w, "No problems found.")
		return err
	}
	_, err := fmt.Fprintf(w, "Found %s, %s, %s and %s: %d repaired, %d left.\n", plural(r.CorruptBlobs, "corrupt blob"),
		plural(r.StrayFiles, "stray file"), plural(r.BadLinks, "bad link"), plural(r.BadTags, "bad tag"), r.Repaired, r.Unrepaired)
	return err
}

// problemPlace names what a problem is about: a blob file, repo@digest or
// repo:tag.
func problemPlace(p storage.Problem) string {
	switch {
	case p.Tag != "":
		return p.Repository + ":" + p.Tag
	case p.Repository != "":
		return p.Repository + "@" + p.Digest
	case p.Digest != "":
		return p.Digest
	}
	return p.Path
}

// plural writes n and the noun, with an s (or -ies) when n is not 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if noun[len(noun)-1] == 'y' {
		return fmt.Sprintf("%d %sies", n, noun[:len(noun)-1])
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// humanBytes writes n in binary units, e.g. 3.2 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progressLine shows a check's progress on one line of a terminal,
// rewritten at most five times a second; on anything else it shows
// nothing.
type progressLine struct {
	w     io.Writer // nil: not a terminal
	last  time.Time
	shown bool
}

func newProgressLine(w io.Writer) *progressLine {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return &progressLine{w: w}
		}
	}
	return &progressLine{}
}

func (p *progressLine) show(pr storage.CheckProgress) {
	if p.w == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = time.Now(), true
	var text string
	switch pr.Phase {
	case "blobs":
		pct := 100.0
		if pr.BytesTotal > 0 {
			pct = min(100, 100*float64(pr.Bytes)/float64(pr.BytesTotal))
		}
		text = fmt.Sprintf("fsck: hashing blobs: %d of %d, %s of %s (%.0f%%)", pr.Blobs, pr.BlobsTotal, humanBytes(pr.Bytes), humanBytes(pr.BytesTotal), pct)
	default:
		text = fmt.Sprintf("fsck: checking links and tags: %d of %d repositories", pr.Repositories, pr.RepositoriesTotal)
	}
	fmt.Fprintf(p.w, "\r\033[K%s", text)
}

// clear erases the progress line, if one was shown.
func (p *progressLine) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
