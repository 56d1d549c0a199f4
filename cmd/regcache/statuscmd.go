package main

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
)

// statusCmd is `regcache status`.
func statusCmd(getenv func(string) string) *cobra.Command {
	var uiLink bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the cache helps and is healthy",
		Long: `Show the status of a running regcache: what needs attention, the hit ratio
and bytes served from the store over the last hour, store usage against its
limit (or the disk), fills in progress, credential set health, upstream
reachability (from the last request to each), rate limits when known, and
each cache rule's hits and misses since start.

The same summary is GET /admin/v1/status (JSON), and the status page at
/ui/ draws it with charts. --ui-link prints a link that opens that page
once, within a minute, without typing the admin token.

The exit status is 0 even when something needs attention; scripts read
"problems" from -o json.`,
		Example: `  regcache status
  regcache status -o json | jq '.problems'
  regcache status -o yaml --server https://regcache.internal:5000 --token-file ./admin.token
  regcache status --ui-link`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			if uiLink {
				var t registry.UITicket
				if err := c.do(cmd.Context(), http.MethodPost, "/admin/v1/ui-tickets", nil, &t); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s%s\n(opens the status page once, until %s)\n", c.server, t.Path, t.ExpiresAt.Local().Format(time.TimeOnly))
				return nil
			}
			var s status.Summary
			if err := c.do(cmd.Context(), http.MethodGet, "/admin/v1/status", nil, &s); err != nil {
				return err
			}
			return printItems(cmd, false, []status.Summary{s}, func(w io.Writer, s []status.Summary) error {
				return statusTables(w, s[0])
			})
		},
	}
	connectionFlags(cmd)
	outputFlag(cmd, false, "table", "table", "json", "yaml")
	cmd.Flags().BoolVar(&uiLink, "ui-link", false, "print a one-time link to the status page instead")
	return cmd
}

// statusTables writes a summary as a headline and tables.
func statusTables(w io.Writer, s status.Summary) error {
	since := s.GeneratedAt.Sub(s.StartedAt)
	state := "all healthy"
	if n := len(s.Problems); n > 0 {
		state = plural(n, "problem")
	}
	fmt.Fprintf(w, "regcache %s, up %s: %s\n", s.Version, status.Duration(since), state)
	if s.Offline {
		fmt.Fprintln(w, "  offline: no upstream is contacted; cached and imported content only")
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}

	h := s.LastHour
	section(w, "LAST HOUR")
	table(w, []string{"HIT RATIO", "READS", "HITS", "STALE", "MISSES", "FROM STORE", "FROM UPSTREAMS"},
		[]string{status.Percent(h.Ratio), status.Count(h.Hits + h.Stale + h.Misses), status.Count(h.Hits), status.Count(h.Stale),
			status.Count(h.Misses), status.Bytes(h.StoreBytes), status.Bytes(h.FetchedBytes)})

	st := s.Store
	used, blobs, limit, disk := "counting", "counting", "none", "-"
	if st.Counted {
		used, blobs = status.Bytes(st.Bytes), status.Count(st.Blobs)
	}
	if st.LimitBytes > 0 {
		limit = status.Bytes(st.LimitBytes)
		if st.Counted {
			limit += fmt.Sprintf(" (%s used)", status.Percent(float64(st.Bytes)/float64(st.LimitBytes)))
		}
	}
	if st.FilesystemBytes > 0 {
		full := st.FilesystemBytes - st.FilesystemFreeBytes
		disk = fmt.Sprintf("%s full (%s of %s)", status.Percent(float64(full)/float64(st.FilesystemBytes)),
			status.Bytes(int64(full)), status.Bytes(int64(st.FilesystemBytes)))
	}
	section(w, "STORE")
	evicted := "-"
	if e := st.Evicted; e != nil {
		evicted = fmt.Sprintf("%s images, %s (%s runs)", status.Count(e.Images), status.Bytes(e.Bytes), status.Count(e.Runs))
	}
	table(w, []string{"USED", "BLOBS", "LIMIT", "DISK", "EVICTED", "FILLS", "QUEUED", "UPLOADS", "STORAGE FULL"},
		[]string{used, blobs, limit, disk, evicted, fmt.Sprint(s.Fills.Running), fmt.Sprint(s.Fills.Queued), fmt.Sprint(s.UploadSessions),
			status.Count(st.StorageFullEvents)})

	section(w, "CREDENTIAL SETS")
	rows := [][]string{}
	for _, c := range s.CredentialSets {
		checked := "not yet"
		if !c.CheckedAt.IsZero() {
			checked = status.Duration(s.GeneratedAt.Sub(c.CheckedAt)) + " ago"
		}
		rows = append(rows, []string{c.Name, c.LoginServer, c.State, checked, list(c.Rules), dash(c.Reason)})
	}
	table(w, []string{"NAME", "LOGIN SERVER", "STATE", "CHECKED", "RULES", "REASON"}, rows...)

	section(w, "UPSTREAMS")
	rows = rows[:0]
	for _, u := range s.Upstreams {
		contact := "never"
		if !u.LastContact.IsZero() {
			contact = status.Duration(s.GeneratedAt.Sub(u.LastContact)) + " ago"
		}
		last := "-"
		if u.LastStatus != 0 {
			last = fmt.Sprint(u.LastStatus)
		}
		rows = append(rows, []string{u.Name, u.State, last, contact, status.Count(u.Requests), status.Count(u.Errors),
			status.Bytes(u.FetchedBytes), u.Endpoint})
	}
	table(w, []string{"NAME", "STATE", "LAST STATUS", "LAST ANSWER", "REQUESTS", "ERRORS", "FETCHED", "ENDPOINT"}, rows...)

	if s.RateLimits != nil {
		section(w, "RATE LIMITS")
		rows = rows[:0]
		for _, l := range s.RateLimits {
			limit := "-"
			if l.Limit > 0 {
				limit = status.Count(l.Limit)
			}
			rows = append(rows, []string{l.Upstream, dash(l.CredentialSet), status.Count(l.Remaining), limit})
		}
		table(w, []string{"UPSTREAM", "CREDENTIAL SET", "REMAINING", "LIMIT"}, rows...)
	}
	if t := s.Throttling; t != nil && (len(t.Waits) > 0 || t.RateLimited > 0) {
		section(w, "UPSTREAM WAITS (429 with Retry-After)")
		rows = rows[:0]
		for host, until := range t.Waits {
			rows = append(rows, []string{host, until.UTC().Format(time.RFC3339)})
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
		table(w, []string{"UPSTREAM", "UNTIL"}, rows...)
		fmt.Fprintf(w, "%s 429 answers since start; %s requests held back\n", status.Count(t.RateLimited), status.Count(t.Held))
	}

	section(w, "RULES (since start)")
	rows = rows[:0]
	for _, r := range s.Rules {
		rows = append(rows, []string{r.Name, r.Source, r.Target, dash(r.CredentialSet), status.Count(r.Hits), status.Count(r.Misses),
			status.Count(r.Stale), status.Percent(r.Ratio()), status.Bytes(r.StoreBytes)})
	}
	table(w, []string{"NAME", "SOURCE", "TARGET", "CREDENTIAL SET", "HITS", "MISSES", "STALE", "HIT RATIO", "FROM STORE"}, rows...)
	return nil
}

func section(w io.Writer, title string) { fmt.Fprintf(w, "\n%s\n", title) }

// table writes a header and rows, aligned; "(none)" when there are no rows.
func table(w io.Writer, header []string, rows ...[]string) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "(none)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}
