package main

import (
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/local"
)

// gcCmd is `regcache gc`: one garbage collection now.
func gcCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete the blobs nothing needs any more, now",
		Long: `Run one garbage collection on a running regcache through its admin API
(the server also runs one every --gc-interval).

A blob is deleted when no manifest of any repository references it, no
repository a cache rule covers has it, and it was not written or linked
within --gc-grace. Pushes and pulls go on meanwhile. Deleting a manifest,
tag or blob through the registry API only removes references; the bytes go
at the next collection.`,
		Example: `  regcache gc -o table`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var rep local.GCReport
			if err := c.do(cmd.Context(), http.MethodPost, "/admin/v1/gc", nil, &rep); err != nil {
				return err
			}
			return printItems(cmd, false, []local.GCReport{rep}, func(w io.Writer, reps []local.GCReport) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BLOBS\tKEPT\tDELETED\tBYTES FREED\tDURATION")
				for _, r := range reps {
					fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%v\n", r.Blobs, r.Kept, r.Deleted, r.Bytes, r.Duration.Round(time.Millisecond))
				}
				return tw.Flush()
			})
		},
	}
	clientFlags(cmd)
	return cmd
}
