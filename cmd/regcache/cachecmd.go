package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
)

// cacheCmd is `regcache cache`, shaped like `az acr cache`.
func cacheCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Manage cache rules (create, update, show, list, delete)",
		Long: `Manage cache rules of a running regcache through its admin API.

A cache rule maps an upstream source repository to a local target
repository. A pull of the target that misses is fetched from the source,
verified, stored and served; later pulls are served locally.

  static:   -s docker.io/library/ubuntu -t ubuntu
  wildcard: -s docker.io/library/*      -t hub/*   (hub/nginx -> docker.io/library/nginx)

A static rule beats a wildcard rule; among wildcard rules the longest target
prefix wins. Rules declared in the server's config file are listed with
origin "config" and cannot be changed here.

The admin token is read from --token, REGCACHE_TOKEN, or the file the server
wrote on first start (<data-dir>/admin.token).`,
		Example: `  regcache cache create -n Ubuntu -s docker.io/library/ubuntu -t ubuntu
  regcache cache list -o table
  regcache cache show -n Ubuntu -o yaml
  regcache cache list --server http://regcache.internal:5000 --token-file ./admin.token`,
	}
	clientFlags(cmd)
	cmd.AddCommand(cacheCreateCmd(getenv), cacheUpdateCmd(getenv), cacheShowCmd(getenv), cacheListCmd(getenv), cacheDeleteCmd(getenv), cacheRefreshCmd(getenv))
	return cmd
}

func cacheCreateCmd(getenv func(string) string) *cobra.Command {
	var r cache.Rule
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a cache rule",
		Example: `  regcache cache create -n Ubuntu -s docker.io/library/ubuntu -t ubuntu
  regcache cache create -n HubLibrary -s docker.io/library/* -t hub/*
  regcache cache create -n Ghcr -s ghcr.io/my-org/* -t ghcr/* -c MyGhcrCredSet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out registry.RuleView
			in := map[string]string{"name": r.Name, "sourceRepository": r.Source, "targetRepository": r.Target, "credentialSetName": r.CredentialSet, "tagTTL": r.TagTTL,
				"maxStale": r.MaxStale, "deletedTags": r.DeletedTags}
			if err := c.do(cmd.Context(), http.MethodPost, "/admin/v1/cache-rules", in, &out); err != nil {
				return err
			}
			return printRules(cmd, false, out)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&r.Name, "name", "n", "", "rule name: 5-50 letters, digits or '-' (required)")
	f.StringVarP(&r.Source, "source-repo", "s", "", "upstream repository, registry host included, e.g. docker.io/library/ubuntu or docker.io/library/* (required)")
	f.StringVarP(&r.Target, "target-repo", "t", "", "local repository, e.g. ubuntu or hub/* (required)")
	f.StringVarP(&r.CredentialSet, "cred-set", "c", "", "credential set for the upstream (default: anonymous)")
	f.StringVar(&r.TagTTL, "tag-ttl", "", "how long a cached tag is served before it is revalidated upstream, e.g. 30s, 10m, 24h; 0s: every pull; never: until regcache cache refresh (default 5m)")
	freshnessFlags(f, &r.MaxStale, &r.DeletedTags)
	for _, req := range []string{"name", "source-repo", "target-repo"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}

func cacheUpdateCmd(getenv func(string) string) *cobra.Command {
	var name, credSet, tagTTL, maxStale, deletedTags string
	var remove bool
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Change or remove the credential set, or change the freshness settings, of a cache rule",
		Example: `  regcache cache update -n Ubuntu -c NewCredSet
  regcache cache update -n Ubuntu --remove-cred-set
  regcache cache update -n Ubuntu --tag-ttl 1h
  regcache cache update -n Ubuntu --tag-ttl never --max-stale 72h --deleted-tags forget`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			changed := cmd.Flags().Changed
			if remove && changed("cred-set") {
				return usageErrorf(cmd, "give either -c/--cred-set NAME or --remove-cred-set, not both")
			}
			if !remove && !changed("cred-set") && !changed("tag-ttl") && !changed("max-stale") && !changed("deleted-tags") {
				return usageErrorf(cmd, "nothing to update: give -c/--cred-set NAME, --remove-cred-set, --tag-ttl DURATION, --max-stale DURATION or --deleted-tags serve|forget")
			}
			in := map[string]string{}
			if remove || changed("cred-set") {
				in["credentialSetName"] = credSet
			}
			for flag, key := range map[string]string{"tag-ttl": "tagTTL", "max-stale": "maxStale", "deleted-tags": "deletedTags"} {
				if changed(flag) {
					in[key], _ = cmd.Flags().GetString(flag)
				}
			}
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out registry.RuleView
			if err := c.do(cmd.Context(), http.MethodPatch, "/admin/v1/cache-rules/"+url.PathEscape(name), in, &out); err != nil {
				return err
			}
			return printRules(cmd, false, out)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "rule name (required)")
	f.StringVarP(&credSet, "cred-set", "c", "", "credential set to use for the upstream")
	f.BoolVar(&remove, "remove-cred-set", false, "detach the credential set: pull anonymously")
	f.StringVar(&tagTTL, "tag-ttl", "", `how long a cached tag is served before it is revalidated upstream; never: until regcache cache refresh ("" restores the default, 5m)`)
	freshnessFlags(f, &maxStale, &deletedTags)
	cmd.MarkFlagRequired("name")
	return cmd
}

func cacheShowCmd(getenv func(string) string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show a cache rule, with its freshness settings and what its upstream announced (pull limit, a wait after 429)",
		Example: `  regcache cache show -n Ubuntu -o table`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out registry.RuleView
			if err := c.do(cmd.Context(), http.MethodGet, "/admin/v1/cache-rules/"+url.PathEscape(name), nil, &out); err != nil {
				return err
			}
			return printItems(cmd, false, []registry.RuleView{out}, ruleDetails)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "rule name (required)")
	cmd.MarkFlagRequired("name")
	return cmd
}

func cacheListCmd(getenv func(string) string) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List cache rules",
		Example: `  regcache cache list -o table`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out []registry.RuleView
			if err := c.do(cmd.Context(), http.MethodGet, "/admin/v1/cache-rules", nil, &out); err != nil {
				return err
			}
			return printRules(cmd, true, out...)
		},
	}
}

func cacheDeleteCmd(getenv func(string) string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "delete",
		Short:   "Delete a cache rule (cached content stays and is still served)",
		Example: `  regcache cache delete -n Ubuntu`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, "/admin/v1/cache-rules/"+url.PathEscape(name), nil, nil)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "rule name (required)")
	cmd.MarkFlagRequired("name")
	return cmd
}

// printRules writes rules as JSON (an array when list is true) or a table.
func printRules(cmd *cobra.Command, list bool, rules ...registry.RuleView) error {
	return printItems(cmd, list, rules, ruleTable)
}

func ruleTable(w io.Writer, rules []registry.RuleView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE REPOSITORY\tTARGET REPOSITORY\tCREDENTIAL SET\tTAG TTL\tORIGIN\tUPSTREAM ENDPOINT")
	for _, r := range rules {
		cs, ttl := r.CredentialSet, r.TagTTL
		if cs == "" {
			cs = "-"
		}
		if ttl == "" {
			ttl = "default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Source, r.Target, cs, ttl, r.Origin, r.UpstreamEndpoint)
	}
	return tw.Flush()
}
