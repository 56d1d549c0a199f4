# regcache build, test and CI entry points. `make test` is what CI runs
# (.ci/run); `make peers` installs the programs the e2e tests talk to.

GO ?= go
BIN := bin/regcache
# Extra arguments for `make run`, e.g. make run ARGS='--listen 127.0.0.1:5001'.
ARGS ?=

.PHONY: all build run test lint fmt-check vet peers clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/regcache

run: build
	./$(BIN) serve $(ARGS)

test: lint
	$(GO) test -race -count=1 -timeout 20m ./...

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

clean:
	rm -rf bin/
