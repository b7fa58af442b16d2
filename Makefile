# writeboost: the two quick-start targets are `make demo` and `make test`.
GO       ?= go
BIN      := bin
COMMANDS := wb-format-cache wb-create wb-status wb-message wb-check
FUZZTIME ?= 30s

.PHONY: all build deps kernel-deps demo test test-kernel unit scenarios lint fuzz bench bench-quick clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))

deps:
	@scripts/deps.sh

# The product on sparse image files: format, serve, write, status, stop, check.
demo: deps build
	@scripts/demo.sh

# The whole suite: lint, Go tests under the race detector (seed corpora of
# every fuzz target included), then the shell scenarios with real clients.
test: deps lint unit scenarios

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -timeout 20m ./...

scenarios: build
	@testing/run.sh

kernel-deps:
	@scripts/kernel-deps.sh

# The interop suite against the real dm-writeboost kernel target: Debian's
# kernel and module in QEMU (testing/kernel/README.md); about 15 minutes.
test-kernel: kernel-deps build
	@testing/kernel/run.sh

# Run every fuzz target for FUZZTIME each.
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

bench: deps build
	@$(GO) run ./bench

bench-quick: deps build
	@$(GO) run ./bench --quick

clean:
	rm -rf $(BIN)
