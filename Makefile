# flowtrace build, test and tooling entry points. `make help` lists the targets.
# Every target is safe to run again: work already done is skipped.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go

# Version stamped into the binary: the nearest tag, or the commit; dev outside git.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

BIN_DIR := bin
BINARY := $(BIN_DIR)/flowtrace

# Packages that test, bench and lint act on, e.g. make test PKGS=./cmd/...
PKGS ?= ./...
TEST_TIMEOUT ?= 20m
# Benchmarks to run (go test -bench), e.g. make bench BENCH=Correlator
BENCH ?= .
# Arguments for make run, e.g. make run ARGS='--config=file:my.yaml'
ARGS ?=

# Downloads shared by every checkout live outside the repository.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/flowtrace

# chDB, the embedded ClickHouse engine, ships as a shared library in an npm
# package. Tests find it through CHDB_LIB_PATH, the binary next to itself.
CHDB_VERSION := 26.5.3
CHDB_LIB := $(CACHE_DIR)/chdb/$(CHDB_VERSION)/libchdb.so

# Debian packages the tests use: promtool (from prometheus) checks alert rules,
# kcat is a foreign Kafka client, python3-celery a foreign RabbitMQ client,
# chromium drives the UI tests headless.
DEB_PACKAGES := prometheus kcat python3-celery chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Linters are built per Go version: a linter built by an older Go cannot load
# packages written for a newer one.
STATICCHECK_VERSION := v0.8.2
GO_VERSION := $(shell $(GO) env GOVERSION)
TOOLS_DIR := $(CACHE_DIR)/tools/$(GO_VERSION)
STATICCHECK := $(TOOLS_DIR)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: deps-deb deps-brokers $(CHDB_LIB) deps-go ## install what the tests need (Debian packages, brokers, libchdb.so, Go modules)

.PHONY: deps-deb
deps-deb:
	@missing=(); \
	for pkg in $(DEB_PACKAGES); do \
		[[ $$(dpkg-query -W -f='$${db:Status-Status}' "$$pkg" 2>/dev/null) == installed ]] || missing+=("$$pkg"); \
	done; \
	if (( $${#missing[@]} )); then \
		echo "deps: installing Debian packages: $${missing[*]}"; \
		$(SUDO) apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}"; \
	fi

# The broker taps' tests talk to the local RabbitMQ, NATS and Redis. Start any
# that is installed but not listening; the RabbitMQ tap also needs the
# management API.
.PHONY: deps-brokers
deps-brokers:
	@scripts/local-brokers.sh

$(CHDB_LIB):
	@scripts/fetch-libchdb.sh $(CHDB_VERSION) $@

.PHONY: deps-go
deps-go:
	@$(GO) mod download

.PHONY: build
build: $(CHDB_LIB) ## build bin/flowtrace, with bin/libchdb.so linked next to it
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BINARY) ./cmd/flowtrace
	@ln -sfn $(CHDB_LIB) $(BIN_DIR)/libchdb.so

.PHONY: run
run: deps build ## run bin/flowtrace on the embedded default config (extra flags: ARGS=...)
	./$(BINARY) $(ARGS)

.PHONY: test
test: deps test-rules ## run the tests against the real chDB library, and the alert rules' tests
	CHDB_LIB_PATH=$(CHDB_LIB) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: test-rules
test-rules: deps-deb ## check the Prometheus alerting rules and run their promtool unit tests
	promtool check rules deploy/prometheus/*-alerts.yaml
	cd deploy/prometheus && promtool test rules *.test.yaml

.PHONY: bench
bench: deps ## run the benchmarks (select with BENCH=regexp)
	CHDB_LIB_PATH=$(CHDB_LIB) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^$$' -bench '$(BENCH)' -benchmem $(PKGS)

.PHONY: lint
lint: $(STATICCHECK) ## check formatting, then go vet and staticcheck
	@unformatted=$$(find . -type d \( -name .git -o -name node_modules -o -name testdata -o -path ./bin \) -prune \
		-o -type f -name '*.go' -print | xargs -r gofmt -l); \
	if [[ -n $$unformatted ]]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

$(STATICCHECK):
	GOBIN=$(@D) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: clean
clean: ## remove build and test output (the download cache in CACHE_DIR stays)
	rm -rf $(BIN_DIR) coverage.out coverage.html cpu.prof mem.prof
