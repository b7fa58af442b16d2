# writeboost: the two quick-start targets are `make demo` and `make test`.
GO       ?= go
BIN      := bin
COMMANDS := wb-format-cache wb-create wb-status wb-message wb-check
FUZZTIME ?= 30s

# make install: PREFIX and DESTDIR as usual (DESTDIR for staging a package).
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/writeboost
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
SYSCONFDIR ?= /etc

.PHONY: all build install uninstall deps kernel-deps demo test test-kernel unit scenarios lint fuzz bench bench-quick clean

all: build

# The revision --version shows, from git when this is a checkout: Go's own
# stamping (vcs.revision) is off where GOFLAGS has -buildvcs=false and
# fails in some checkouts, so the build passes it too; "modified" when
# tracked files differ from it. Empty outside git: then "rev unknown".
REV      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
MODIFIED ?= $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
LDFLAGS  := -X github.com/writeboost/writeboost/internal/cli.revision=$(REV) -X github.com/writeboost/writeboost/internal/cli.modified=$(MODIFIED)

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))

# The five binaries, their man pages (section 8), bash and zsh completion, the systemd unit (its
# ExecStart pointed at SBINDIR), the example volume table; /etc/writeboosttab
# only if there is none (an admin's table is never overwritten).
install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	for c in $(COMMANDS); do install -m 0644 dist/completion/writeboost.bash $(DESTDIR)$(BASHCOMPDIR)/$$c || exit 1; done
	install -m 0644 dist/completion/_writeboost $(DESTDIR)$(ZSHCOMPDIR)/_writeboost
	install -m 0755 $(addprefix $(BIN)/,$(COMMANDS)) $(DESTDIR)$(SBINDIR)/
	install -m 0644 $(addprefix man/,$(addsuffix .8,$(COMMANDS))) $(DESTDIR)$(MANDIR)/man8/
	sed 's#/usr/local/sbin/#$(SBINDIR)/#g; s#/etc/writeboosttab#$(SYSCONFDIR)/writeboosttab#g' dist/systemd/writeboost@.service >$(DESTDIR)$(UNITDIR)/writeboost@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/writeboost@.service
	install -m 0644 dist/writeboosttab $(DESTDIR)$(DOCDIR)/writeboosttab.example
	[ -e $(DESTDIR)$(SYSCONFDIR)/writeboosttab ] || install -m 0644 dist/writeboosttab $(DESTDIR)$(SYSCONFDIR)/writeboosttab

# Everything install put there but the volume table, which holds the admin's
# volumes.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(SBINDIR)/,$(COMMANDS))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(addsuffix .8,$(COMMANDS)))
	rm -f $(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(COMMANDS)) $(DESTDIR)$(ZSHCOMPDIR)/_writeboost
	rm -f $(DESTDIR)$(UNITDIR)/writeboost@.service $(DESTDIR)$(DOCDIR)/writeboosttab.example
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

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
