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
	root.AddCommand(serveCmd(getenv), cacheCmd(getenv), credentialSetCmd(getenv))
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
Plain HTTP is used only for an endpoint given as http://...: an upstream on a
loopback or private address is reached over https like any other, and a
request falling back to http is refused, so credentials never travel in clear
unless the operator said so. It starts, and serves what it has cached, when
every upstream is down.

Rules and credential sets may name only the well-known public registries
(docker.io, ghcr.io, quay.io, gcr.io, *.gcr.io, *.pkg.dev, registry.k8s.io,
mcr.microsoft.com, public.ecr.aws, nvcr.io, registry.gitlab.com, *.azurecr.io),
login servers given an endpoint with --upstream, and those allowed with
--allow-upstream (e.g. registry.example.com or *.corp.example.com).

Every setting can come from the YAML file given by --config, a REGCACHE_*
environment variable, or a flag (flags win over the environment, which wins
over the file). Config file:

  listen: ":5000"
  dataDir: /var/lib/regcache
  adminTokenFile: /run/secrets/regcache-admin-token
  logLevel: info          # debug, info, warn, error
  logFormat: text         # text, json
  defaultRegistry: docker.io   # names no rule matches belong to Docker Hub (registry-mirrors)
  upstreams:
    docker.io: https://mirror.example.com
  allowedUpstreams:       # besides the well-known registries and upstreams
    - registry.example.com
    - "*.corp.example.com"
  limits:                 # 0 or absent: the default
    maxConns: 0           # default: a third of the open-files limit
    maxConnsPerAddress: 512
    readHeaderTimeout: 20s
    idleTimeout: 2m       # keep-alive connections
    writeIdleTimeout: 2m  # a client that reads nothing for this long is cut
    readIdleTimeout: 2m   # a client that sends nothing of its body for this long is cut
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
