#!/bin/sh
# Builds the micro benchmarks into build/micro/ with the Makefile's flags
# (-O2, the same warnings and defines), compiling only the sources each one
# needs, so that it works whatever state the rest of the tree is in.
#
#   sh bench/micro/build.sh && build/micro/bench_histogram
#
# The programs print ns per operation and assert nothing.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/build/micro
CC=${CC:-cc}
LLHTTP_SRC_DIR=/usr/share/llhttp
LLHTTP_INC_DIR=/usr/share/include/llhttp

CPPFLAGS="-D_GNU_SOURCE -I$ROOT -I$ROOT/proxy -I$ROOT/policy -I$LLHTTP_INC_DIR -DLLHTTP_STRICT_MODE=1"
CFLAGS="-std=c11 -O2 -g -pthread"
WARN="-Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter"

mkdir -p "$OUT/llhttp"
for f in api http llhttp; do
    $CC -std=c11 -O2 -g -DLLHTTP_STRICT_MODE=1 -I$LLHTTP_INC_DIR -c "$LLHTTP_SRC_DIR/$f.c" \
        -o "$OUT/llhttp/$f.o"
done

# shellcheck disable=SC2086 # the flag lists are meant to split
build() {
    name=$1
    shift
    echo "$CC ... bench/micro/$name.c $* -o build/micro/$name"
    $CC $CPPFLAGS $CFLAGS $WARN "$ROOT/bench/micro/$name.c" "$@" -pthread -luv -o "$OUT/$name"
}

build bench_histogram "$ROOT/proxy/histogram.c"
build bench_accesslog "$ROOT/proxy/accesslog.c"
build bench_http1 "$ROOT/proxy/http1.c" "$OUT/llhttp/api.o" "$OUT/llhttp/http.o" "$OUT/llhttp/llhttp.o"
build bench_router "$ROOT/policy/router.c" "$ROOT/policy/config.c" "$ROOT/policy/egress_rules.c" \
    "$ROOT/policy/egress_addr.c" "$ROOT/policy/retry.c" "$ROOT/policy/outlier.c" -lyaml
build bench_tlsrec "$ROOT/proxy/tlsrec.c" -lcrypto
build bench_egress "$ROOT/policy/egress_rules.c"
build bench_admit "$ROOT/proxy/admit.c" "$ROOT/policy/ratelimit.c"
echo "built: $OUT/bench_histogram $OUT/bench_accesslog $OUT/bench_http1 $OUT/bench_router $OUT/bench_tlsrec $OUT/bench_egress"
