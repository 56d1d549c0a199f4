// Command regcache is a pull-through caching OCI registry: `regcache serve`
// runs it, and `regcache cache ...` manages its cache rules through the
// admin API.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// run executes the command line args.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	root := &cobra.Command{
		Use:   "regcache",
		Short: "A pull-through caching OCI registry",
		Long: `regcache is a self-hosted pull-through caching OCI registry.

Operators declare cache rules (an upstream source repository such as
docker.io/library/ubuntu -> a local target repository such as ubuntu).
Clients pull from regcache; a miss is fetched from the upstream, verified,
stored content-addressed and served; later pulls are served locally.

  regcache serve                    run the registry on :5000 with ./regcache-data
  regcache cache create -n Ubuntu -s docker.io/library/ubuntu -t ubuntu
  docker pull localhost:5000/ubuntu:24.04`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(getenv), cacheCmd(getenv), credentialSetCmd(getenv), gcCmd(getenv))
	return root.ExecuteContext(ctx)
}

func serveCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the registry: the OCI distribution API under /v2/, the admin API under
/admin/v1/, and /healthz.

With no configuration it listens on :5000, keeps blobs and metadata in
./regcache-data, and writes a random admin token to ./regcache-data/admin.token
on first start. Upstream login servers are reached at https://<host>
(docker.io at https://registry-1.docker.io) unless --upstream says otherwise.
It starts, and serves what it has cached, when every upstream is down.

Local repositories: a repository that no cache rule's target covers is
local. Clients push to it, delete from it and list its referrers; a push
into a repository a rule covers is refused (DENIED, naming the rule). With
defaultRegistry set, every name no rule's target covers is a Docker Hub
name, routed to the rule whose source covers it; list the namespaces you
push to in localNamespaces (--local-namespace lab/*) and routing keeps them
local (no rule may target them). Deletes only remove references; garbage
collection (every gcInterval, or regcache gc) deletes the blobs no manifest
references, never those of cached repositories nor those written within
gcGrace.

Every setting can come from the YAML file given by --config, a REGCACHE_*
environment variable, or a flag (flags win over the environment, which wins
over the file). Config file:

  listen: ":5000"
  dataDir: /var/lib/regcache
  adminTokenFile: /run/secrets/regcache-admin-token
  logLevel: info          # debug, info, warn, error
  logFormat: text         # text, json
  defaultRegistry: docker.io   # names no rule matches belong to Docker Hub (registry-mirrors)
  localNamespaces: [lab/*]     # ...except these: pushed repositories, never routed upstream
  allowDelete: [manifests, tags, blobs]   # or [none]
  uploadIdleTimeout: 1h   # an upload session receiving nothing this long is removed
  gcInterval: 1h          # garbage collection period (0: off)
  gcGrace: 1h             # blobs written or linked within this are kept
  upstreams:
    docker.io: https://mirror.example.com
  credentialSets:         # read-only through the admin API
    - name: DockerHub
      loginServer: docker.io
      usernameSecret: vault://secret/regcache/dockerhub#username
      passwordSecret: file:///run/secrets/dockerhub-token
  vault:                  # or the VAULT_* environment
    address: https://vault.example.com:8200
    auth: kubernetes      # token, approle, kubernetes
    kubernetesRole: regcache
  rules:                  # read-only through the admin API
    - name: ubuntu
      source: docker.io/library/ubuntu
      target: ubuntu
      credentialSet: DockerHub
    - name: hub-library
      source: docker.io/library/*
      target: hub/*
      tagTTL: 10m         # cached tags served 10m before a HEAD revalidates them`,
		Example: `  regcache serve
  regcache serve --listen 127.0.0.1:5000 --data-dir /var/lib/regcache
  regcache serve --upstream docker.io=http://127.0.0.1:5001 --log-format json
  regcache serve --default-registry docker.io --local-namespace lab/* --gc-grace 2h
  REGCACHE_CONFIG=/etc/regcache/config.yaml regcache serve`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, newLogger(cfg, cmd.ErrOrStderr()))
		},
	}
	serveFlags(cmd.Flags())
	return cmd
}
