package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/registry"
)

// gcCmd is `regcache gc`: eviction and one garbage collection now.
func gcCmd(getenv func(string) string) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Evict what the cache's bounds say must go, and delete the blobs nothing needs any more, now",
		Long: `Run eviction and one garbage collection on a running regcache through its
admin API (the server also runs eviction whenever the store goes over
--max-size, looks for images unused for --evict-unused-after, and collects
garbage every --gc-interval). With --dry-run, list what would go and how
many bytes, removing nothing.

Eviction works on images of cached repositories (local repositories are
never evicted): over --max-size, the least recently used go until the store
is under the low-water mark (--evict-low-water, 90% of --max-size by
default); images nobody pulled for --evict-unused-after go whatever the
size. An image's tags, manifests and the blobs nothing else needs go
together; a layer shared with an image that stays is kept.

A blob is collected when no manifest of any repository references it, no
repository a cache rule covers has it, and it was not written or linked
within --gc-grace. Pushes and pulls go on meanwhile. Deleting a manifest,
tag or blob through the registry API only removes references; the bytes go
at the next collection.`,
		Example: `  regcache gc --dry-run -o table
  regcache gc -o table`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			path := "/admin/v1/gc"
			if dryRun {
				path += "?dryRun=true"
			}
			var rep registry.GCResult
			if err := c.do(cmd.Context(), http.MethodPost, path, nil, &rep); err != nil {
				return err
			}
			return printItems(cmd, false, []registry.GCResult{rep}, gcTable)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be evicted and collected, and how many bytes, removing nothing")
	clientFlags(cmd)
	return cmd
}

func gcTable(w io.Writer, reps []registry.GCResult) error {
	r := reps[0]
	verb, gcVerb := "evicted", "deleted"
	if r.DryRun {
		verb, gcVerb = "would evict", "would delete"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if e := r.Eviction; e != nil {
		fmt.Fprintf(tw, "STORE\t%s\n", storeLine(e.StoredBytes, e.MaxSize, e.LowWaterBytes, e.UnusedAfter))
		if len(e.Images) > 0 {
			fmt.Fprintln(tw, "REPOSITORY\tTAGS\tDIGEST\tLAST USED\tBYTES\tREASON")
			for _, i := range e.Images {
				tags := strings.Join(i.Tags, ",")
				if tags == "" {
					tags = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", i.Repository, tags, i.Digest, i.LastUsed.UTC().Format(time.RFC3339), i.Bytes, i.Reason)
			}
		}
		fmt.Fprintf(tw, "EVICTION\t%s %d images, %d bytes", verb, len(e.Images), e.Bytes)
		if e.Kept > 0 {
			fmt.Fprintf(tw, "; %d kept because they were in use", e.Kept)
		}
		fmt.Fprintln(tw)
		if e.Note != "" {
			fmt.Fprintf(tw, "NOTE\t%s\n", e.Note)
		}
	}
	fmt.Fprintf(tw, "GARBAGE\t%s %d of %d blobs, %d bytes, in %v\n", gcVerb, r.Deleted, r.Blobs, r.Bytes, r.Duration.Round(time.Millisecond))
	return tw.Flush()
}

// storeLine describes the store's usage and bounds.
func storeLine(stored, max, low int64, unused time.Duration) string {
	s := fmt.Sprintf("%d bytes stored", stored)
	if max > 0 {
		s += fmt.Sprintf(", maximum %d (evicting down to %d)", max, low)
	}
	if unused > 0 {
		s += fmt.Sprintf(", unused images evicted after %v", unused)
	}
	if max == 0 && unused == 0 {
		s += ", no bounds set"
	}
	return s
}
