package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
)

// freshnessFlags registers --max-stale and --deleted-tags.
func freshnessFlags(f *pflag.FlagSet, maxStale, deletedTags *string) {
	f.StringVar(maxStale, "max-stale", "", `serve a cached tag when the upstream cannot be asked only if it confirmed it within this long, e.g. 72h ("": no limit, the default)`)
	f.StringVar(deletedTags, "deleted-tags", "", "what a cached tag becomes when its upstream deleted it: serve (until evicted; the default) or forget")
}

// cacheRefreshCmd is `regcache cache refresh`.
func cacheRefreshCmd(getenv func(string) string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "refresh -n NAME [REPOSITORY:TAG...]",
		Short: "Ask a rule's upstream now where its cached tags point, and move those that moved",
		Long: `Revalidate the cached tags of the repositories a cache rule covers (all of
them, or those named) now, whatever the rule's tag TTL: this is how a rule
with --tag-ttl never takes a new digest. Each tag is reported unchanged,
updated (the new manifest is fetched), deleted upstream (still served unless
the rule forgets deleted tags) or removed, or failed with the reason.`,
		Example: `  regcache cache refresh -n HubLibrary -o table
  regcache cache refresh -n HubLibrary hub/nginx:1.27 hub/redis:7`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var in any
			if len(args) > 0 {
				in = map[string][]string{"tags": args}
			}
			var out []cache.Refreshed
			if err := c.do(cmd.Context(), http.MethodPost, "/admin/v1/cache-rules/"+url.PathEscape(name)+"/refresh", in, &out); err != nil {
				return err
			}
			return printItems(cmd, true, out, func(w io.Writer, rs []cache.Refreshed) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "REPOSITORY\tTAG\tRESULT\tBEFORE\tAFTER")
				for _, r := range rs {
					result := r.Result
					if r.Error != "" {
						result += ": " + r.Error
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, result, r.Before, dash(r.After))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "rule name (required)")
	cmd.MarkFlagRequired("name")
	return cmd
}

// ruleDetails is the table of one rule: the rules table, then its
// freshness settings and what its upstream announced.
func ruleDetails(w io.Writer, rules []registry.RuleView) error {
	if err := ruleTable(w, rules); err != nil {
		return err
	}
	r := rules[0]
	stale := "unlimited"
	if r.MaxStale != "" {
		stale = r.MaxStale
	}
	deleted := cache.DeletedTagsServe
	if r.DeletedTags != "" {
		deleted = r.DeletedTags
	}
	fmt.Fprintf(w, "\nmax stale: %s; tags deleted upstream: %s\n", stale, deleted)
	st := r.UpstreamStatus
	switch {
	case st == nil:
	case st.Offline:
		fmt.Fprintln(w, "upstream: not contacted (regcache is offline)")
	default:
		set := r.CredentialSet
		if set == "" {
			set = "anonymous"
		}
		if l := st.RateLimit; l != nil {
			left := fmt.Sprintf("%d", l.Remaining)
			if l.Remaining < 0 {
				left = "?"
			}
			window := ""
			if l.WindowSeconds > 0 {
				window = fmt.Sprintf(" per %v", time.Duration(l.WindowSeconds)*time.Second)
			}
			fmt.Fprintf(w, "upstream pull limit (%s): %s of %d left%s, as of %s\n", set, left, l.Limit, window, l.ObservedAt.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "upstream pull limit (%s): none announced yet\n", set)
		}
		if st.WaitUntil != nil {
			fmt.Fprintf(w, "upstream answered 429: no request until %s\n", st.WaitUntil.UTC().Format(time.RFC3339))
		}
	}
	return nil
}
