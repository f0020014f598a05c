# ssmproxy: SSH over AWS Session Manager in one binary.
#
#   make demo    the main job on the embedded fake (no AWS account needed)
#   make test    unit, integration and pure-Go end-to-end tests
#   make e2e     end-to-end tests with the real OpenSSH ssh/scp/sshd and rsync,
#                and the official session-manager-plugin
#   make bench   throughput, CPU, RSS and latency against plain ssh, then
#                forward with 1 and 8 connections against plain TCP
#                (BENCHFLAGS, e.g. "-only forward -forward-mb 16")
#   make soak    the long haul: SOAK_SIZE (default 1G) each way with rsync plus
#                an interactive ssh session under one mixed fault plan; ends
#                with "soak: ok" or "soak: FAIL" (SOAK_CRED_TTL, SOAK_LIFETIMES)
#   make fuzz    every fuzz target for FUZZTIME (default 30s)
#   make lint    gofmt and go vet
#   make interop bin/session-manager-plugin, the official AWS plugin built
#                from source (interop/plugin), for the e2e interop tests
#   make interop-test  only the e2e tests that run that plugin through the
#                fake (make e2e includes them)

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The commit's time, not the build's: two builds of one commit are the same
# bytes (docs/platforms.md 1).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1)
DATE    ?= $(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null || echo unknown)
LDFLAGS := -s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
# make dist and make cross: every platform people run ssh from.
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
SOURCES := $(shell find . -name '*.go' -not -path './e2e/*' -not -name '*_test.go') go.mod go.sum

.PHONY: all build fakeaws test e2e bench soak demo lint fuzz clean interop interop-test dist cross

all: build fakeaws

build: bin/ssmproxy

bin/ssmproxy: $(SOURCES)
	$(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' -o $@ .

# Release archives for every platform: dist/ssmproxy_VERSION_OS_ARCH.tar.gz
# (.zip for windows) and dist/SHA256SUMS, reproducibly (CGO off, -trimpath,
# no build id, the commit's time everywhere; docs/platforms.md 1).
dist:
	rm -rf dist
	set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' \
	    -o dist/build/$${os}_$${arch}/ssmproxy$$ext . ; \
	done
	$(GO) run ./internal/dist -version $(VERSION) -epoch $(SOURCE_DATE_EPOCH) -out dist $$(ls -d dist/build/*)
	rm -rf dist/build
	cd dist && ls -l && cat SHA256SUMS

# Every platform compiles (all packages, tests included) and vets: CI runs
# this (docs/platforms.md).
cross:
	set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  echo "cross: $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -o /dev/null . ; \
	done
	CGO_ENABLED=0 GOOS=darwin $(GO) vet ./...
	CGO_ENABLED=0 GOOS=windows $(GO) vet ./...
	@echo "cross: $(PLATFORMS) build; darwin and windows vet"

fakeaws: bin/fakeaws

bin/fakeaws: $(SOURCES)
	$(GO) build -trimpath -o $@ ./fakeaws/cmd/fakeaws

bin/bench: $(SOURCES)
	$(GO) build -trimpath -o $@ ./internal/bench

bin/soak: $(SOURCES)
	$(GO) build -trimpath -o $@ ./internal/soak

bin/demo: $(SOURCES)
	$(GO) build -trimpath -o $@ ./internal/demo

# Everything but the OpenSSH suite, with the race detector. The e2e package
# runs its pure-Go test here (no OpenSSH needed); its OpenSSH tests run in
# `make e2e`.
test:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /e2e$$)
	$(GO) test -count=1 -timeout 10m -run 'TestPureGo|TestCLI' ./e2e/

# The end-to-end suite with the real OpenSSH client and server and rsync,
# and the official session-manager-plugin (built first); missing tools fail
# the run instead of skipping.
e2e: bin/session-manager-plugin
	SSMPROXY_E2E_REQUIRE_OPENSSH=1 SSMPROXY_E2E_REQUIRE_PLUGIN=1 $(GO) test -count=1 -timeout 25m -v ./e2e/

# Every fuzz target in the module, one after another, FUZZTIME each (default
# 30s); FUZZ narrows it to the targets matching a regexp. Each target's last
# line gives its executions.
# go test -fuzz sometimes fails a short run with only "context deadline
# exceeded" when -fuzztime ends while a worker is busy (a toolchain race,
# seen here with 10 s runs); such a run that wrote no failing input is
# reported as a timeout, not a find. A real find always leaves its input in
# testdata/fuzz/<Target>/.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for pkg in $$($(GO) list ./... | grep -v /e2e$$); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' | grep -E "$${FUZZ:-.}" || true); do \
	    finds() { ls $$dir/testdata/fuzz/$$t 2>/dev/null | grep -vc '^seed-' || true; }; \
	    before=$$(finds); \
	    if $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $${FUZZTIME:-30s} $$pkg >$$log 2>&1; then \
	      echo "fuzz: ok   $$pkg $$t: $$(grep -o 'execs: [0-9]*' $$log | tail -n 1)"; \
	    elif grep -q 'context deadline exceeded' $$log && [ "$$(finds)" = "$$before" ]; then \
	      echo "fuzz: ok   $$pkg $$t: $$(grep -o 'execs: [0-9]*' $$log | tail -n 1) (go test's deadline race at the end, no failing input)"; \
	    else \
	      echo "fuzz: FAIL $$pkg $$t"; tail -n 30 $$log; exit 1; \
	    fi; \
	  done; \
	done

bench: bin/ssmproxy bin/fakeaws bin/bench
	bin/bench -bin bin $(BENCHFLAGS)

# SOAK_SIZE, SOAK_CRED_TTL and SOAK_LIFETIMES pass through the environment.
soak: bin/ssmproxy bin/fakeaws bin/soak
	bin/soak -bin bin $(SOAKFLAGS)

demo: bin/ssmproxy bin/fakeaws bin/demo
	bin/demo -bin bin

# The official session-manager-plugin, built from its published source at
# the version interop/plugin/go.mod pins (a module of its own, so go test
# ./... and go vet ./... never enter it). Needs only the Go module proxy.
interop: bin/session-manager-plugin

bin/session-manager-plugin: interop/plugin/go.mod interop/plugin/go.sum interop/plugin/main.go
	cd interop/plugin && $(GO) build -trimpath -o ../../$@ .

# Only the e2e tests that run that plugin through bin/fakeaws (make e2e
# runs them too); a missing plugin fails them instead of skipping.
interop-test: bin/session-manager-plugin
	SSMPROXY_E2E_REQUIRE_OPENSSH=1 SSMPROXY_E2E_REQUIRE_PLUGIN=1 $(GO) test -count=1 -timeout 10m -v -run 'TestPlugin' ./e2e/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin dist
