# throng — build, test and check targets. `make test` is what CI runs
# (.ci/run); every target works from a fresh clone.

GO       ?= go
BIN      ?= bin/throng
FUZZTIME ?= 10s
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/throngmq/throng/internal/app.Version=$(VERSION)

# Debian packages the interoperability tests use (real AMQP and MQTT
# clients and a reference broker; chromium for the console's browser
# tests). `make test` installs the missing ones when run as root (interop
# tests fail under CI=true when a client is missing).
TEST_APT_PACKAGES ?= python3-qpid-proton python3-paho-mqtt mosquitto-clients mosquitto chromium

.PHONY: all build test test-deps bench lint fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/throng

test-deps:
	@missing=""; \
	for p in $(TEST_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing test packages:$$missing"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		else \
			echo "missing test packages:$$missing (run as root, or install them, for the interop tests)"; \
		fi; \
	fi

# Packages run one at a time (-p 1): several packages start whole platforms
# with timing-sensitive failover tests, and on 2 cores running them side by
# side made such tests flaky; sequential runs take about 5 minutes.
test: test-deps
	$(GO) vet ./...
	$(GO) test -race -p 1 -timeout 30m ./...

bench:
	$(GO) test -run=NONE -bench=. -benchmem ./internal/...

lint:
	@out="$$(gofmt -l cmd internal)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	else echo "staticcheck not installed; skipped (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi

# Runs every fuzz target of every package for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./internal/...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run=NONE -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin

# Regenerates the console screenshots in docs/console/ (headless chromium,
# a platform with sample data and an MQTT publisher; about 40 s).
.PHONY: screenshots
screenshots:
	mkdir -p docs/console
	THRONG_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -run '^TestConsoleScreenshots$$' ./internal/console

# Runs throng bench against throng, mosquitto, nats-server and RabbitMQ on
# loopback and writes the table into docs/benchmarks.md (about 25 minutes
# with the defaults; REPS, DURATION, CONNS, BROKERS, SHAPES, NOTE: see the
# script's header).
.PHONY: bench-compare
bench-compare:
	scripts/bench-compare

# Runs the crash, fault and soak checker (internal/soak, docs/reliability.md)
# against a throng serve child for DURATION, with a fault every INTERVAL;
# progress lines, then the final table. Exits non-zero if an acknowledged
# message was lost or order was broken where promised. NODES=3 runs it on
# a cluster of three children (kill -9 and SIGSTOP of a random node);
# FAULTS=storm,clockjump,… picks the faults (docs/reliability.md).
DURATION ?= 1h
INTERVAL ?= 60s
NODES    ?= 1
FAULTS   ?=
.PHONY: soak
soak: build
	$(BIN) soak --duration $(DURATION) --interval $(INTERVAL) --nodes $(NODES) $(if $(FAULTS),--faults $(FAULTS))

# Device registry figures (issue 12; docs/benchmarks.md, "Device registry"):
# `throng bench registry` against `throng serve` children. 1) 1k devices,
# create/page/connect, temporary data; 2) REG_DEVICES devices (bcrypt
# pwd-hash) with every phase on REG_DIR/data, kept: a rerun skips the
# devices that exist, so an interrupted 1M load resumes; 3) pwd-plain
# (the server hashes with bcrypt) at REG_PLAIN devices, create only.
# REG_FLAGS go to every run (e.g. --create-for 30m, --pprof).
REG_DEVICES ?= 1000000
REG_PLAIN   ?= 2000
REG_DIR     ?= /tmp/throng-bench-registry
REG_FLAGS   ?=
.PHONY: bench-registry
bench-registry: build
	uptime
	$(BIN) bench registry --devices 1000 --phases create,page,connect $(REG_FLAGS)
	$(BIN) bench registry --devices $(REG_DEVICES) --data-dir $(REG_DIR)/data $(REG_FLAGS)
	$(BIN) bench registry --devices $(REG_PLAIN) --secret plain --phases create $(REG_FLAGS)
	uptime
