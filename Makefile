# fnproxy build. `make` installs missing Debian packages (scripts/deps.sh,
# a no-op when all are present) and tests/deploy's npm packages
# (scripts/npm-deps.sh, a no-op when its lock is unchanged), then builds
# build/fnproxy.
#   make run     demo function + fnproxy in front of it
#   make test    unit + integration suites, then again under ASan+UBSan, then
#                every fuzz target for FUZZ_TEST_SECONDS (8 s) each
#   make fuzz    every fuzz target for FUZZ_SECONDS (60 s) each
#   make bench   throughput against direct, nginx and HAProxy
#   make soak    SOAK_SECONDS (300) of mixed load under faults; fds, RSS, counters
# SAN=1 builds the sanitizer variant (into build/san by default).

CC       ?= cc
SAN      ?=
ifeq ($(SAN),1)
CC       := clang
BUILD    ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT      := -O1
else
BUILD    ?= build
SANFLAGS :=
OPT      := -O2
endif

LLHTTP_SRC_DIR := /usr/share/llhttp
LLHTTP_INC_DIR := /usr/share/include/llhttp

WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS := -D_GNU_SOURCE -I. -Iproxy -Ipolicy -I$(LLHTTP_INC_DIR) -DLLHTTP_STRICT_MODE=1
# policy/ is free of I/O and of proxy/ (DESIGN.md): its build cannot see them.
POLICY_CPPFLAGS := -D_GNU_SOURCE -Ipolicy
CFLAGS   := -std=c11 $(OPT) -g -pthread $(SANFLAGS) $(EXTRA_CFLAGS)
LDFLAGS  := -pthread $(SANFLAGS)
LDLIBS   := -luv -lssl -lcrypto -lyaml -lcares

POLICY_SRC := $(sort $(wildcard policy/*.c))
PROXY_SRC  := $(filter-out proxy/main.c,$(sort $(wildcard proxy/*.c)))
LLHTTP_OBJ := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
POLICY_OBJ := $(POLICY_SRC:%.c=$(BUILD)/obj/%.o)
# Generated sources live under $(BUILD)/gen; being outside proxy/, they are
# not in PROXY_SRC's wildcard and are added to the object list here.
GEN_SRC    := $(BUILD)/gen/dashboard_html.c
PROXY_OBJ  := $(PROXY_SRC:%.c=$(BUILD)/obj/%.o) $(GEN_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps run test test-unit test-integration test-san bench bench-quick bench-micro fuzz soak certs clean format

all: deps
	@$(MAKE) --no-print-directory build-all

build-all: $(BUILD)/fnproxy $(BUILD)/fnbackend $(UNIT_BIN)

deps:
	@sh scripts/deps.sh
	@sh scripts/npm-deps.sh

$(BUILD)/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -g $(SANFLAGS) -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC_DIR) -c $< -o $@

$(BUILD)/obj/policy/%.o: policy/%.c
	@mkdir -p $(dir $@)
	$(CC) $(POLICY_CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

# GET /dashboard's page as a C array (dashboard.h): od and sed, no xxd, no
# new tool. The trailing 0 makes it a C string too; the length leaves it out.
$(BUILD)/gen/dashboard_html.c: proxy/dashboard.html
	@mkdir -p $(dir $@)
	@{ printf '/* Generated from proxy/dashboard.html by the Makefile: do not edit. */\n'; \
	   printf '#include "dashboard.h"\nconst char dashboard_html[] = {\n'; \
	   od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	   printf '0};\nconst size_t dashboard_html_len = sizeof(dashboard_html) - 1;\n'; \
	 } > $@.tmp && mv $@.tmp $@

$(BUILD)/fnproxy: $(BUILD)/obj/proxy/main.o $(PROXY_OBJ) $(POLICY_OBJ) $(LLHTTP_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/fnbackend: $(BUILD)/obj/tests/backend/backend.o $(LLHTTP_OBJ)
	$(CC) $(LDFLAGS) $^ -luv -o $@

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(PROXY_OBJ) $(POLICY_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

run: all
	@sh scripts/run-demo.sh $(BUILD)

# The whole suite, then the whole suite again under ASan + UBSan.
test: all
	@$(MAKE) --no-print-directory SAN=1 build-all
	@sh tests/run.sh build build/san

test-unit test-integration: all
	@sh tests/run.sh --only $(@:test-%=%) $(BUILD)

bench: all
	@sh bench/run.sh

bench-quick: all
	@sh bench/run.sh --quick

# Micro benchmarks: ns per HTTP head, routing decision, histogram record,
# access-log line, TLS record, egress decision and admission (slot, token).
# They print figures and assert nothing.
bench-micro: all
	@sh bench/micro/build.sh >/dev/null
	@for b in build/micro/bench_*; do echo "== $$b"; $$b; done

# libFuzzer targets (clang, ASan + UBSan): the HTTP/1.1 glue (fuzz_http1),
# the config parser (fuzz_config), the TLS 1.3 record layer (fuzz_tls), the
# upstream response path as exch.c drives it, i.e. what a malicious function
# can send (fuzz_upstream), and egress target canonicalisation plus the
# deny_private decision, and the capture listener's ClientHello SNI parser
# (fuzz_egress). `make fuzz` runs each for
# FUZZ_SECONDS (default 60) with its dictionary tests/fuzz/<name>.dict, on a
# working corpus build/fuzz/corpus-<name> seeded from the committed seeds in
# tests/fuzz/corpus/<name>/ (tests/ is never written); crash inputs go to
# build/fuzz/. The binaries are file targets so that tests/run.sh builds
# them with these very flags for `make test`'s short runs (FUZZ_TEST_SECONDS
# each, tests/run.sh), and a second run reuses them.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1
FUZZ_TARGETS := http1 config tls upstream egress
FUZZ_BIN := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_RUN := -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/
fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@failed=""; for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus-$$t && cp tests/fuzz/corpus/$$t/* build/fuzz/corpus-$$t/; \
	    echo "== fuzz_$$t ($(FUZZ_SECONDS)s)"; \
	    build/fuzz/fuzz_$$t $(FUZZ_RUN) -dict=tests/fuzz/$$t.dict build/fuzz/corpus-$$t \
	        2>build/fuzz/fuzz_$$t.log; rc=$$?; \
	    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' build/fuzz/fuzz_$$t.log; \
	    if [ $$rc -ne 0 ]; then tail -n 40 build/fuzz/fuzz_$$t.log; failed="$$failed fuzz_$$t"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "make fuzz: findings in$$failed (build/fuzz/fuzz_*.log)"; exit 1; fi

build/fuzz/fuzz_http1: tests/fuzz/fuzz_http1.c proxy/http1.c proxy/http1.h
	@mkdir -p $(dir $@)
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) tests/fuzz/fuzz_http1.c proxy/http1.c \
	    $(LLHTTP_SRC_DIR)/api.c $(LLHTTP_SRC_DIR)/http.c $(LLHTTP_SRC_DIR)/llhttp.c -luv -o $@

FUZZ_CONFIG_SRC := policy/config.c policy/router.c policy/egress_rules.c policy/egress_addr.c \
                   policy/retry.c policy/outlier.c
build/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(FUZZ_CONFIG_SRC) policy/config.h policy/router.h \
                        policy/egress_rules.h policy/egress_addr.h policy/retry.h policy/outlier.h
	@mkdir -p $(dir $@)
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) tests/fuzz/fuzz_config.c $(FUZZ_CONFIG_SRC) \
	    -lyaml -o $@

build/fuzz/fuzz_tls: tests/fuzz/fuzz_tls.c proxy/tls.c proxy/tlsrec.c proxy/tls.h proxy/tlsrec.h
	@mkdir -p $(dir $@)
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) tests/fuzz/fuzz_tls.c proxy/tls.c proxy/tlsrec.c \
	    -lssl -lcrypto -o $@

build/fuzz/fuzz_upstream: tests/fuzz/fuzz_upstream.c proxy/http1.c proxy/http1.h proxy/worker.h
	@mkdir -p $(dir $@)
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) tests/fuzz/fuzz_upstream.c proxy/http1.c \
	    $(LLHTTP_SRC_DIR)/api.c $(LLHTTP_SRC_DIR)/http.c $(LLHTTP_SRC_DIR)/llhttp.c -luv -o $@

FUZZ_EGRESS_SRC := policy/egress.c policy/egress_rules.c policy/egress_addr.c policy/sni.c
build/fuzz/fuzz_egress: tests/fuzz/fuzz_egress.c $(FUZZ_EGRESS_SRC) policy/egress.h \
                        policy/egress_rules.h policy/egress_addr.h policy/config.h policy/sni.h
	@mkdir -p $(dir $@)
	clang -std=c11 $(CPPFLAGS) $(FUZZ_FLAGS) tests/fuzz/fuzz_egress.c $(FUZZ_EGRESS_SRC) -o $@

# Soak under faults (tests/soak/soak.py): SOAK_SECONDS of wrk and raw
# clients on ingress and egress while backends are killed, paused and made
# to reset, and fnproxy is reloaded; prints fd and RSS figures and the
# clients' counts, writes build/soak/report.{json,md}, fails on a failed
# check. Needs root (a network namespace). `make test` runs a bounded one;
# SAN=1 soaks the sanitizer build (its RSS bound, see soak.py).
SOAK_SECONDS ?= 300
soak: all
	@FNPROXY_TEST_SAN=$(SAN) python3 tests/soak/soak.py --fnproxy $(BUILD)/fnproxy --backend $(BUILD)/fnbackend \
	    --seconds $(SOAK_SECONDS) --out $(BUILD)/soak

certs:
	@sh certs/make-certs.sh certs/out

clean:
	rm -rf build

format:
	clang-format -i proxy/*.[ch] policy/*.[ch] tests/unit/*.c tests/backend/*.c

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
