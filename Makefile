# esbc — build, test and check. `make test` is what CI runs (see .ci/run).
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG_APP  := github.com/esbc/esbc/cmd/esbc/internal/app
LDFLAGS  := -s -w -X $(PKG_APP).Version=$(VERSION) -X $(PKG_APP).Commit=$(COMMIT)
FUZZTIME ?= 20s

.PHONY: all build test check e2e bench fuzz-short clean

all: build

## build: static binary ./esbc (CGO_ENABLED=0, -trimpath, version and commit stamped)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o esbc ./cmd/esbc

## test: vet and every test with the race detector, including the black-box
## e2e tests in test/ (build tag e2e: the esbc binary against SIPp, dnsmasq,
## stunnel). This is what CI runs.
test:
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags bench ./test/bench/
	$(GO) test -race -tags e2e -timeout 60m ./...

## check: formatting, vet, golangci-lint (when installed), tests
check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null 2>&1; then golangci-lint run ./...; \
	else echo "golangci-lint not installed: skipped"; fi
	$(MAKE) test

## e2e: black-box tests (binary, SIPp, dnsmasq, stunnel, baresip)
e2e:
	$(GO) test -race -tags e2e -v -timeout 60m ./test/...

## bench: micro-benchmarks, then the load tests behind the bench tag
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./media/... ./b2bua/... ./acl/... ./nat/...
	$(GO) test -tags bench -v -timeout 30m ./test/bench/...

## fuzz-short: every fuzz target for $(FUZZTIME) each (<= 60s per target)
fuzz-short:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -f esbc
