# keyless — build, run and test. See README.md.
#
#   make            build the gateway and the test tools into build/
#   make run        install dependencies, build, start the gateway (example config)
#   make test       install dependencies, build, run every test
#   make test SAN=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test TSAN=1 the same under ThreadSanitizer, into build-tsan/ (too slow
#                   for CI; tests/tsan.supp leaves out a libevent report)
#   make stress     a concurrency stress under ThreadSanitizer (build-tsan/),
#                   failing on any report; CI runs it
#   make fuzz       build the libFuzzer targets (clang) and run each briefly
#   make bench      run the benchmarks in bench/ (appends to BENCHMARKS.md)
#   make install    install keyless, its price table, a systemd unit and (when
#                   there is none) a server configuration; PREFIX, SYSCONFDIR,
#                   DESTDIR as usual

CC      ?= cc
PKGS    := libevent libevent_pthreads libevent_openssl libcurl libcjson jose openssl sqlite3 libpq zlib libhs \
           libcbor libzstd libpsl
SAN     ?=
TSAN    ?=
BUILD   ?= build$(if $(SAN),-san)$(if $(TSAN),-tsan)

CFLAGS_BASE := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
               -g -MMD -MP -Isrc
ifeq ($(SAN),1)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else ifeq ($(TSAN),1)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=thread
else
  OPT := -O2
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CFLAGS  += $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS)
LDFLAGS += $(if $(SAN),-fsanitize=address$(comma)undefined)$(if $(TSAN),-fsanitize=thread)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
comma := ,

SRC      := $(sort $(wildcard src/*.c src/*/*.c))
LIB_SRC  := $(filter-out src/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MOCK_SRC := $(sort $(wildcard tools/mockllm/*.c))
FTS_SRC  := $(sort $(wildcard tools/fake-tailscaled/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system

.PHONY: all deps run test unit integration stress fuzz bench clean print-pkgs install uninstall
all: $(BUILD)/keyless $(BUILD)/mockllm $(BUILD)/fake-tailscaled

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libkeyless.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/keyless: $(BUILD)/obj/src/main.o $(BUILD)/libkeyless.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/mockllm: $(MOCK_SRC:%.c=$(BUILD)/obj/%.o)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/fake-tailscaled: $(FTS_SRC:%.c=$(BUILD)/obj/%.o)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libkeyless.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

deps:
	@scripts/deps.sh build

run: deps
	@$(MAKE) --no-print-directory all
	scripts/run-example.sh

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	scripts/test-integration.sh $(BUILD)

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration
	@if [ -z "$(SAN)$(TSAN)" ]; then FUZZ_SECONDS=$${FUZZ_SECONDS:-5} scripts/fuzz.sh; fi

stress:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory TSAN=1 all
	scripts/stress-tsan.sh

fuzz:
	@scripts/deps.sh test
	scripts/fuzz.sh

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	bench/run.sh

clean:
	rm -rf build build-san build-tsan build-fuzz

# The configuration is installed only when there is none: a live one is
# never replaced (compare it with contrib/keyless.hujson by hand).
install: $(BUILD)/keyless
	install -D -m 0755 $(BUILD)/keyless $(DESTDIR)$(PREFIX)/bin/keyless
	install -D -m 0644 data/prices.json $(DESTDIR)$(PREFIX)/share/keyless/prices.json
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' contrib/systemd/keyless.service.in \
	  > $(DESTDIR)$(UNITDIR)/keyless.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/keyless.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/keyless
	test -e $(DESTDIR)$(SYSCONFDIR)/keyless/keyless.hujson || \
	  install -m 0644 contrib/keyless.hujson $(DESTDIR)$(SYSCONFDIR)/keyless/keyless.hujson

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/keyless $(DESTDIR)$(PREFIX)/share/keyless/prices.json \
	  $(DESTDIR)$(UNITDIR)/keyless.service
	-rmdir $(DESTDIR)$(PREFIX)/share/keyless

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# the pkg-config packages, for scripts/fuzz.sh
print-pkgs:
	@echo $(PKGS)
