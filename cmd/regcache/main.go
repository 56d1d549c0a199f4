// Command regcache is a pull-through caching OCI registry: `regcache serve`
// runs it, and `regcache cache ...` manages its cache rules through the
// admin API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/regcache/regcache/logsink"
)

// Exit statuses, as `regcache --help` documents them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(exitStatus(os.Stderr, err))
}

// exitStatus writes err, if any, to w and returns the exit status it
// means: 2 for a command line that cannot run as given (with a pointer to
// the command's --help), 1 for any other failure.
func exitStatus(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(w, "error:", err)
	var u *usageError
	if errors.As(err, &u) {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", u.command)
		return exitUsage
	}
	return exitError
}

// run executes the command line args.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	root := newRoot(stdout, stderr, getenv)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// newRoot builds the whole command tree, writing to stdout and stderr.
func newRoot(stdout, stderr io.Writer, getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "regcache",
		Short: "A pull-through caching OCI registry",
		Long: `regcache is a self-hosted pull-through caching OCI registry.

Operators declare cache rules (an upstream source repository such as
docker.io/library/ubuntu -> a local target repository such as ubuntu).
Clients pull from regcache; a miss is fetched from the upstream, verified,
stored content-addressed and served; later pulls are served locally.

"regcache serve" runs the registry (on :5000, with ./regcache-data by
default); "regcache fsck" verifies a data directory; the other commands
talk to a running one through its admin API.

Exit status:
  0  success
  1  the command failed: a configuration error, the server refused the
     request or could not be reached, serve stopped on an error
  2  the command line cannot run as given: an unknown command or flag, a flag
     value of the wrong type, a missing or conflicting flag, an extra argument`,
		Example: `  regcache serve
  regcache cache create -n Ubuntu -s docker.io/library/ubuntu -t ubuntu
  docker pull localhost:5000/ubuntu:24.04
  regcache cache list -o table
  regcache version`,
		Version:       newVersionInfo(readBuildInfo()).line(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	// Before the completion command is added: it keeps the writer it
	// finds then.
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(getenv), cacheCmd(getenv), credentialSetCmd(getenv), gcCmd(getenv), fsckCmd(getenv), statusCmd(getenv),
		warmCmd(getenv), exportCmd(getenv), importCmd(getenv), versionCmd())
	addCompletionCmd(root)
	root.InitDefaultHelpCmd()
	if help, _, err := root.Find([]string{"help"}); err == nil && help.Name() == "help" {
		help.Example = "  regcache help cache create"
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageErr(cmd, err) })
	root.PersistentPreRunE = checkCommandLine
	markUsageErrors(root)
	return root
}

// addCompletionCmd adds cobra's `completion` command, with examples.
func addCompletionCmd(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	c, _, err := root.Find([]string{"completion"})
	if err != nil || c.Name() != "completion" {
		return
	}
	c.Example = `  source <(regcache completion bash)
  regcache completion zsh > "${fpath[1]}/_regcache"`
	examples := map[string]string{
		"bash":       "  source <(regcache completion bash)\n  regcache completion bash > /etc/bash_completion.d/regcache",
		"zsh":        "  regcache completion zsh > \"${fpath[1]}/_regcache\"",
		"fish":       "  regcache completion fish > ~/.config/fish/completions/regcache.fish",
		"powershell": "  regcache completion powershell | Out-String | Invoke-Expression",
	}
	for _, sub := range c.Commands() {
		sub.Example = examples[sub.Name()]
	}
}

// usageError is a command line that regcache cannot run as given: exit
// status 2 and a pointer to the command's --help.
type usageError struct {
	command string // the command's path, e.g. "regcache cache create"
	err     error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErr marks err, about cmd's command line, as a usage error.
func usageErr(cmd *cobra.Command, err error) error {
	return &usageError{command: cmd.CommandPath(), err: err}
}

// usageErrorf is usageErr with a formatted error.
func usageErrorf(cmd *cobra.Command, format string, a ...any) error {
	return usageErr(cmd, fmt.Errorf(format, a...))
}

// markUsageErrors makes every refusal of a command line by cobra a usage
// error: argument checks are wrapped, and commands that only group others
// (regcache, cache, credential-set, completion) refuse an unknown
// subcommand instead of printing their help with status 0.
func markUsageErrors(c *cobra.Command) {
	switch {
	case !c.Runnable():
		c.Args = unknownSubcommand
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	case c.Args != nil:
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageErr(cmd, err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// unknownSubcommand is the argument check of a command that groups others:
// any argument is a subcommand it does not have.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, applied only by its own check
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageErrorf(cmd, "unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
}

// checkCommandLine runs before every command: required flags and the
// --output format are checked here, before anything is sent or started,
// and refused as usage errors (cobra would check required flags later,
// without telling them apart from other failures).
func checkCommandLine(cmd *cobra.Command, _ []string) error {
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return usageErr(cmd, err)
	}
	if err := checkOutputFormat(cmd); err != nil {
		return usageErr(cmd, err)
	}
	return nil
}

func serveCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the registry: the OCI distribution API under /v2/, the admin API under
/admin/v1/, /healthz and /readyz, Prometheus metrics on /metrics, and a
read-only status page under /ui/ (the admin token opens it; regcache status
prints the same summary).

Every distribution API answer says where it came from in X-Cache: HIT (from
the store), MISS (the upstream answered), STALE (from the store, the
upstream could not revalidate it) or LOCAL (a local repository). Every
request has an ID, the client's X-Request-Id when it sends a usable one,
answered back and written in every log line the request causes, the fills
it starts included.

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

Client authentication is off by default: anyone who reaches the port may
pull (fine on loopback or a lab network). --auth-htpasswd FILE requires a
login: docker login, podman login, skopeo --creds and containerd's
credentials get short-lived signed tokens from /v2/token (the Docker token
flow). Users come from the htpasswd file (bcrypt only: htpasswd -B),
reloaded when it changes; the auth: section of the config file says who
pulls and pushes which local repositories (the target of a cache rule, as
served after containerd's ns or a mirror's path prefix is resolved).
Failed logins are limited per client address (429 with Retry-After).

Bounded disk: over maxSize (--max-size 50GiB or 80% of the filesystem) the
least recently used images of cached repositories are evicted down to
evictLowWater of it; evictUnusedAfter evicts those nobody pulled for that
long. Local repositories are never evicted. With offline (--offline)
regcache contacts no upstream: it serves cached and imported content and
answers anything else at once saying it is offline.

Blobs in S3-compatible storage: with store s3 (--store s3 --s3-endpoint URL
--s3-bucket NAME, --s3-path-style for MinIO, Ceph RGW or SeaweedFS) blobs are
objects under <s3.prefix>/blobs/sha256/<xx>/<hex> in an existing bucket;
the credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or
an AWS credentials file (--s3-credentials-file). Fills and pushes are still
written and verified in the data directory and uploaded only once verified;
metadata (links, tags, rules, credential sets, upload sessions) stays in the
data directory's database. --s3-redirect answers blob GETs with a 307 to a
presigned URL valid for s3.redirectExpiry, so that clients fetch the bytes
from the bucket.

Every setting can come from the YAML file given by --config, a REGCACHE_*
environment variable, or a flag (flags win over the environment, which wins
over the file). Config file:

  listen: ":5000"
  tlsCert: /etc/regcache/tls/tls.crt   # with tlsKey: HTTPS, reloaded when renewed
  tlsKey: /etc/regcache/tls/tls.key
  dataDir: /var/lib/regcache
  adminTokenFile: /run/secrets/regcache-admin-token
  logLevel: info          # debug, info, warn, error
  logFormat: text         # text, json
  metrics:
    enabled: true         # false: no /metrics, no counts on the status page
    listen: 127.0.0.1:9091   # serve /metrics here instead of on listen
  defaultRegistry: docker.io   # names no rule matches belong to Docker Hub (registry-mirrors)
  localNamespaces: [lab/*]     # ...except these: pushed repositories, never routed upstream
  allowDelete: [manifests, tags, blobs]   # or [none]
  uploadIdleTimeout: 1h   # an upload session receiving nothing this long is removed
  gcInterval: 1h          # garbage collection period (0: off)
  gcGrace: 1h             # blobs written or linked within this are kept
  fillIdleTimeout: 2m     # a blob fill whose upstream sends nothing for this long fails
  upstreamHeaderTimeout: 30s   # an upstream request answered no headers within this fails
  maxSize: 50GiB          # or 80% (of the filesystem): evict the least recently used cached images
  evictLowWater: 90%      # ... down to this much of maxSize
  evictUnusedAfter: 720h  # evict cached images nobody pulled for this long
  notFoundTTL: 1m         # an upstream's "no such manifest" is remembered this long
  offline: false          # true: contact no upstream, serve what is cached or imported
  heapFloor: 32MiB        # the Go heap may grow this far before a collection; 0: Go's default
  store: fs               # or s3: blobs in the bucket below (metadata stays in dataDir)
  s3:                     # credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or credentialsFile
    endpoint: http://minio.example.com:9000   # default: AWS S3
    bucket: regcache
    region: us-east-1
    prefix: prod          # keys: prod/blobs/sha256/<xx>/<hex>
    pathStyle: true       # MinIO, Ceph RGW, SeaweedFS
    redirect: false       # true: blob GETs answer 307 to a presigned URL
    redirectExpiry: 5m
    partSize: 64MiB       # multipart uploads above this
    credentialsFile: /run/secrets/s3-credentials   # [default] aws_access_key_id, aws_secret_access_key
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
    maxUpstreamFetches: 64  # blobs fetched from upstreams at once; more wait
    maxUploadSize: 20GiB    # one pushed blob (default: no cap)
  secrets:                # what credential sets may reference
    envPrefix: REGCACHE_SECRET_   # env:// variables must start with it
    fileDirs: [/run/secrets]      # file:// files must be under one of these
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
      tagTTL: 10m         # cached tags served 10m before a HEAD revalidates them (never: until refreshed)
      maxStale: 72h       # upstream down: serve a tag only if confirmed within 72h
      deletedTags: serve  # a tag deleted upstream: serve (until evicted) or forget
  auth:                   # client authentication: off unless htpasswd is set
    htpasswd: /etc/regcache/htpasswd   # users: htpasswd -B -c /etc/regcache/htpasswd alice
    realm: https://regcache.example.com/v2/token   # behind a proxy; default: from the request
    tokenTTL: 5m
    access:               # absent: every user pulls and pushes everything
      - repository: "hub/*"   # a name, a prefix/*, or * (local names)
        pull: ["*"]           # "*": every user of the htpasswd file
      - repository: "lab/*"
        pull: [bob]
        push: [alice]         # push implies pull
        anonymousPull: false  # true: also clients that did not log in
    catalog: [alice]      # who may list /v2/_catalog
    loginFailures: {max: 10, window: 5m}   # per client address
  trustedProxies: [10.0.0.0/8]   # X-Forwarded-For believed from these`,
		Example: `  regcache serve
  regcache serve --listen 127.0.0.1:5000 --data-dir /var/lib/regcache
  regcache serve --upstream docker.io=http://127.0.0.1:5001 --log-format json
  regcache serve --metrics-listen 127.0.0.1:9091 --log-level debug
  regcache serve --default-registry docker.io --local-namespace lab/* --gc-grace 2h
  regcache serve --auth-htpasswd /etc/regcache/htpasswd
  regcache serve --max-size 80% --evict-unused-after 720h
  regcache serve --offline --data-dir /srv/lab-regcache
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... regcache serve --store s3 --s3-endpoint http://127.0.0.1:8333 --s3-bucket regcache --s3-path-style
  REGCACHE_CONFIG=/etc/regcache/config.yaml regcache serve`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			// A request never waits for the log's output; what is pending is
			// written before serve's error, if any, is printed.
			out := logsink.New(cmd.ErrOrStderr())
			defer out.Close()
			return serve(cmd.Context(), cfg, getenv, newLogger(cfg, out))
		},
	}
	serveFlags(cmd.Flags())
	return cmd
}
