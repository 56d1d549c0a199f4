# regcache build, test and CI entry points. `make test` is what CI runs
# (.ci/run); `make peers` installs the programs the e2e tests talk to.

GO ?= go
BIN := bin/regcache
# Extra arguments for `make run`, e.g. make run ARGS='--listen 127.0.0.1:5001'.
ARGS ?=

# `make image`: the container image, built FROM scratch out of a static binary
# compiled here (no base image is pulled). IMAGE names the tag to build;
# IMAGE_BIN and IMAGE_CONTEXT may point elsewhere (the e2e test uses a temp dir).
IMAGE ?= regcache:dev
IMAGE_ARCH ?= amd64
IMAGE_BIN ?= bin/linux-$(IMAGE_ARCH)/regcache
IMAGE_CONTEXT ?= bin/image-context
# The CA bundle copied into the image, for HTTPS upstreams.
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# The image's non-root user and group (distroless's "nonroot" id).
IMAGE_UID := 65532

.PHONY: all build run test test-s3 fuzz lint fmt-check vet peers image bench bench-smoke bench-micro mutate clean

all: build

# The first build downloads and compiles every dependency, which takes about
# a minute on two cores and prints nothing meanwhile: say so first.
build:
	@echo "building $(BIN) (the first build downloads and compiles the dependencies: about a minute on two cores)"
	$(GO) build -o $(BIN) ./cmd/regcache

# Stop it with Ctrl-C: make stays the server's parent, so killing make's PID
# would leave the server running (kill the server's own PID, or run
# bin/regcache serve directly, as README.md does).
run: build
	./$(BIN) serve $(ARGS)

# The whole suite: installs the test peers when missing (idempotent), then
# gofmt, go vet and every test, e2e included. Test artifacts (the OCI
# conformance suite's JUnit and HTML reports) are kept in TEST_ARTIFACTS.
TEST_ARTIFACTS ?= $(CURDIR)/bin/test-artifacts

test: peers lint
	@mkdir -p $(TEST_ARTIFACTS)
	$(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(TEST_ARTIFACTS) ./...

# The e2e suite once more, with every regcache the tests start keeping its
# blobs in an S3 bucket (REGCACHE_E2E_STORE=s3: a prefix each in one
# SeaweedFS shared by the test binary; about 3 minutes). CI runs it after
# `make test`.
test-s3: peers
	@mkdir -p $(TEST_ARTIFACTS)/s3
	REGCACHE_E2E_STORE=s3 $(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(TEST_ARTIFACTS)/s3 ./e2e/

# A bounded fuzz run (CI runs it after `make test`): every fuzz target of
# the module (func FuzzXxx in a _test.go file) for FUZZTIME each, on top of
# its committed corpus (testdata/fuzz/<FuzzXxx>/). A failure writes the
# input to that directory: commit it with the fix, as a regression case.
# Longer by hand: make fuzz FUZZTIME=5m.
FUZZTIME ?= 12s

fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		dir=$$(dirname "$$f"); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
			echo "fuzz: $$dir $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "$$dir"; \
		done; \
	done

lint: fmt-check vet

# Lists every Go file git knows about (tracked or new, not ignored), falling
# back to find outside a git checkout, and fails if gofmt would change any.
fmt-check:
	@files=$$( { git ls-files --cached --others --exclude-standard -- '*.go' 2>/dev/null \
		|| find . -name '*.go' -not -path './.git/*'; } | while read -r f; do [ -f "$$f" ] && echo "$$f"; done ); \
	if [ -z "$$files" ]; then echo "fmt-check: no Go files"; exit 0; fi; \
	unformatted=$$(gofmt -l $$files); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt needed (run gofmt -w) on:"; echo "$$unformatted"; exit 1; \
	fi

vet:
	$(GO) vet ./...

peers:
	.ci/install-peers

# The benchmark (e2e/bench): regcache against distribution's proxy and nginx
# proxy_cache, a direct pull, the bare cold pipeline (floor) and a static
# file server, on loopback. `make bench` runs the default sizes (about ten
# minutes on two cores and some 24 GiB of disk, the eviction run of 10 GiB
# of images through a 2 GiB limit included; nginx comes from `make peers`) and updates
# BENCHMARKS.md; BENCH_ARGS adds flags (go run ./e2e/bench -h).
# `make bench-smoke` is the tiny run CI does (also as e2e's TestBenchSmoke):
# every scenario against every server. `make bench-micro` runs only the
# go test -bench micro-benchmarks (path parser, rule matcher, manifest hit
# path) with allocations.
BENCH_ARGS ?=
BENCH_JSON ?= bin/bench-result.json

bench: peers
	@mkdir -p $(dir $(BENCH_JSON))
	$(GO) run ./e2e/bench --write-md --json $(BENCH_JSON) $(BENCH_ARGS)

bench-smoke: peers
	@mkdir -p $(dir $(BENCH_JSON))
	$(GO) run ./e2e/bench --smoke --json $(BENCH_JSON) $(BENCH_ARGS)

bench-micro:
	$(GO) test -run '^$$' -bench '^Benchmark(ParsePath|ManifestHit|RuleMatch)$$' -benchmem ./registry ./cache

# The mutation check (scripts/mutate): each entry of scripts/mutations.txt
# breaks one promise of the code with a small change, applied alone as a
# build overlay (the checkout is never modified); the tests it names must
# fail. Prints CAUGHT or MISSED per mutation and fails when one is missed or
# its original text is NOT FOUND. Not part of `make test`; CI runs it after.
# MUTATE_ARGS adds flags (go run ./scripts/mutate -h), e.g.
# MUTATE_ARGS='-only fill-last-byte -count 30'.
MUTATE_ARGS ?=

mutate:
	@mkdir -p bin
	$(GO) build -o bin/mutate ./scripts/mutate
	./bin/mutate $(MUTATE_ARGS)

# Stages bin/image-context (binary, CA bundle, passwd/group naming the
# non-root user, the data directory) and builds Dockerfile on it.
image:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags "-s -w" -o $(IMAGE_BIN) ./cmd/regcache
	rm -rf $(IMAGE_CONTEXT)
	mkdir -p $(IMAGE_CONTEXT)/etc/ssl/certs $(IMAGE_CONTEXT)/var/lib/regcache
	cp $(IMAGE_BIN) $(IMAGE_CONTEXT)/regcache
	cp $(CA_BUNDLE) $(IMAGE_CONTEXT)/etc/ssl/certs/ca-certificates.crt
	printf 'root:x:0:0:root:/root:/sbin/nologin\nregcache:x:$(IMAGE_UID):$(IMAGE_UID):regcache:/var/lib/regcache:/sbin/nologin\n' >$(IMAGE_CONTEXT)/etc/passwd
	printf 'root:x:0:\nregcache:x:$(IMAGE_UID):\n' >$(IMAGE_CONTEXT)/etc/group
	docker build -t $(IMAGE) -f Dockerfile $(IMAGE_CONTEXT)

clean:
	rm -rf bin/
