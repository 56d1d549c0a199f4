package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/credentials"
)

// credentialSetCmd is `regcache credential-set`, shaped like
// `az acr credential-set`.
func credentialSetCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credential-set",
		Short: "Manage credential sets (create, update, show, list, delete, policy)",
		Long: `Manage credential sets of a running regcache through its admin API.

A credential set names an upstream login server and references a username
secret and a password secret kept in a secrets backend; regcache resolves
them when it fetches from the upstream (cached for a few minutes; a 401
makes it resolve them again, so rotated secrets work without a restart).
Give references, never secrets:

  vault://<mount>/<path>#<field>   HashiCorp Vault KV v2 (read at <mount>/data/<path>)
  file:///run/secrets/password     a mounted Kubernetes Secret or Docker secret
                                   (under the server's --secret-file-dir, default /run/secrets)
  env://REGCACHE_SECRET_TOKEN      a variable of the regcache server's environment
                                   (starting with --secret-env-prefix, default REGCACHE_SECRET_)

The login server must be one the server allows: the well-known public
registries, those given an endpoint with --upstream, and --allow-upstream.

A cache rule uses a set with "regcache cache create ... -c NAME". Each set is
Healthy or Unhealthy with a reason, checked at create and update, periodically
and on every failure. "policy" prints the least-privilege Vault policy to
grant regcache's Vault identity.`,
		Example: `  regcache credential-set create -n DockerHub -l docker.io -u env://HUB_USER -p file:///run/secrets/hub-token
  regcache credential-set list -o table
  regcache credential-set show -n DockerHub -o yaml
  regcache credential-set policy --all`,
	}
	clientFlags(cmd)
	cmd.AddCommand(credSetCreateCmd(getenv), credSetUpdateCmd(getenv), credSetShowCmd(getenv),
		credSetListCmd(getenv), credSetDeleteCmd(getenv), credSetPolicyCmd(getenv))
	return cmd
}

const credSetsPath = "/admin/v1/credential-sets"

func credSetCreateCmd(getenv func(string) string) *cobra.Command {
	var s credentials.Set
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a credential set",
		Example: `  regcache credential-set create -n DockerHub -l docker.io \
    -u vault://secret/regcache/dockerhub#username -p vault://secret/regcache/dockerhub#password
  regcache credential-set create -n Ghcr -l ghcr.io -u env://REGCACHE_SECRET_GHCR_USER -p file:///run/secrets/ghcr-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			in := map[string]string{"name": s.Name, "loginServer": s.LoginServer, "usernameSecretIdentifier": s.UsernameSecretRef, "passwordSecretIdentifier": s.PasswordSecretRef}
			var out credentials.Set
			if err := c.do(cmd.Context(), http.MethodPost, credSetsPath, in, &out); err != nil {
				return err
			}
			return printCredSets(cmd, false, out)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&s.Name, "name", "n", "", "credential set name: 5-50 letters, digits or '-' (required)")
	f.StringVarP(&s.LoginServer, "login-server", "l", "", "upstream login server, e.g. docker.io or ghcr.io (required)")
	f.StringVarP(&s.UsernameSecretRef, "username-id", "u", "", "reference to the username secret: vault://, file:// or env:// (required)")
	f.StringVarP(&s.PasswordSecretRef, "password-id", "p", "", "reference to the password or token secret: vault://, file:// or env:// (required)")
	for _, req := range []string{"name", "login-server", "username-id", "password-id"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}

func credSetUpdateCmd(getenv func(string) string) *cobra.Command {
	var name, user, pass string
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Change the username and/or password secret reference of a credential set",
		Example: `  regcache credential-set update -n DockerHub -p vault://secret/regcache/dockerhub-v2#password
  regcache credential-set update -n DockerHub -u env://REGCACHE_SECRET_HUB_USER -p env://REGCACHE_SECRET_HUB_TOKEN`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user == "" && pass == "" {
				return usageErrorf(cmd, "nothing to update: give -u/--username-id and/or -p/--password-id")
			}
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			in := map[string]string{}
			if user != "" {
				in["usernameSecretIdentifier"] = user
			}
			if pass != "" {
				in["passwordSecretIdentifier"] = pass
			}
			var out credentials.Set
			if err := c.do(cmd.Context(), http.MethodPatch, credSetsPath+"/"+url.PathEscape(name), in, &out); err != nil {
				return err
			}
			return printCredSets(cmd, false, out)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "credential set name (required)")
	f.StringVarP(&user, "username-id", "u", "", "new reference to the username secret")
	f.StringVarP(&pass, "password-id", "p", "", "new reference to the password secret")
	cmd.MarkFlagRequired("name")
	return cmd
}

func credSetShowCmd(getenv func(string) string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show a credential set and its health",
		Example: `  regcache credential-set show -n DockerHub -o table`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out credentials.Set
			if err := c.do(cmd.Context(), http.MethodGet, credSetsPath+"/"+url.PathEscape(name), nil, &out); err != nil {
				return err
			}
			return printCredSets(cmd, false, out)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "credential set name (required)")
	cmd.MarkFlagRequired("name")
	return cmd
}

func credSetListCmd(getenv func(string) string) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List credential sets and their health",
		Example: `  regcache credential-set list -o table`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			var out []credentials.Set
			if err := c.do(cmd.Context(), http.MethodGet, credSetsPath, nil, &out); err != nil {
				return err
			}
			return printCredSets(cmd, true, out...)
		},
	}
}

func credSetDeleteCmd(getenv func(string) string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "delete",
		Short:   "Delete a credential set (refused while a cache rule uses it)",
		Example: `  regcache credential-set delete -n DockerHub`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, credSetsPath+"/"+url.PathEscape(name), nil, nil)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "credential set name (required)")
	cmd.MarkFlagRequired("name")
	return cmd
}

func credSetPolicyCmd(getenv func(string) string) *cobra.Command {
	var name string
	var all bool
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Print the least-privilege Vault policy (HCL) for a credential set, or for all",
		Long: `Print the HashiCorp Vault policy (HCL) that grants read on exactly the KV v2
secrets the set's vault:// references point to, and nothing else. Write it
to Vault and attach it to regcache's Vault identity (token, AppRole role or
Kubernetes role):

  regcache credential-set policy -n DockerHub > regcache.hcl
  vault policy write regcache regcache.hcl`,
		Example: `  regcache credential-set policy -n DockerHub
  regcache credential-set policy --all | vault policy write regcache -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (name != "") {
				return usageErrorf(cmd, "give exactly one of -n/--name NAME or --all")
			}
			c, err := newAdminClient(cmd, getenv)
			if err != nil {
				return err
			}
			path := "/admin/v1/credential-sets-policy"
			if name != "" {
				path = credSetsPath + "/" + url.PathEscape(name) + "/policy"
			}
			var policy string
			if err := c.doText(cmd.Context(), path, &policy); err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), policy)
			return err
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "credential set name")
	cmd.Flags().BoolVar(&all, "all", false, "one policy for every credential set")
	return cmd
}

// printCredSets writes sets as JSON (an array when list is true) or a table.
func printCredSets(cmd *cobra.Command, list bool, sets ...credentials.Set) error {
	return printItems(cmd, list, sets, credSetTable)
}

func credSetTable(w io.Writer, sets []credentials.Set) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLOGIN SERVER\tUSERNAME SECRET\tPASSWORD SECRET\tSTATUS\tORIGIN\tREASON")
	for _, s := range sets {
		reason := s.Status.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.LoginServer, s.UsernameSecretRef, s.PasswordSecretRef,
			s.Status.State, s.Origin, strings.ReplaceAll(reason, "\n", " "))
	}
	return tw.Flush()
}
