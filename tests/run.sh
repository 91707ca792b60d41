#!/bin/sh
# Runs fnproxy's test suites for one or more build directories.
#
#   sh tests/run.sh [--only unit|integration|fuzz] BUILD_DIR...
#
# For each BUILD_DIR (e.g. build, then build/san): every BUILD_DIR/tests/test_*
# cmocka binary (tests counted from cmocka's "[  PASSED  ] N test(s).",
# "[  FAILED  ] N test(s)" and "[  SKIPPED ] N test(s)" summary lines, summed
# over every group the binary runs; a binary that dies without its summary
# counts as one failure), then the integration suite against
# BUILD_DIR/fnproxy and BUILD_DIR/fnbackend (its "N passed, N failed,
# N skipped" line). A directory whose name ends in
# "san" is a sanitizer build: the suite runs with FNPROXY_TEST_SAN=1 (smaller
# transfers, larger memory limits) and ASan/UBSan options that report leaks
# and stop on undefined behaviour.
#
# Then, once however many directories were given, a bounded run of each
# fuzz target in FUZZ_TARGETS (default: all of `make fuzz`: http1 config tls
# upstream egress): `make build/fuzz/fuzz_T` (clang with the flags of `make
# fuzz`), then FUZZ_TEST_SECONDS (default 8; about 40 s of fuzzing in all)
# on the working corpus build/fuzz/corpus-T, seeded from the committed
# tests/fuzz/corpus/T/, with tests/fuzz/T.dict. Each target counts as one
# test: passed when libFuzzer exits 0; failed, with its report and the
# crash input's path, when it finds anything, when it cannot be built (no
# clang, no libclang-rt: a failure, never a skip) or when it overruns
# FUZZ_TEST_TIMEOUT.
# Only with --only fuzz may BUILD_DIR be left out.
#
# Ends with exactly one line "N passed, N failed, N skipped" summing
# everything, and exits non-zero if anything failed. A skipped test is
# counted as skipped only, never as passed: cmocka 1.1.5 leaves skipped
# tests out of its PASSED count (checked with a binary that calls skip()),
# and should a version count them in, PASSED is corrected from the
# "N test(s) run." total.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ONLY=""
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
FUZZ_TEST_SECONDS=${FUZZ_TEST_SECONDS:-8}
FUZZ_TARGETS=${FUZZ_TARGETS:-"http1 config tls upstream egress"}
FUZZ_TEST_TIMEOUT=${FUZZ_TEST_TIMEOUT:-300}

usage() {
    echo "usage: sh tests/run.sh [--only unit|integration|fuzz] BUILD_DIR..." >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --only)
        [ $# -ge 2 ] || usage
        ONLY=$2
        shift 2
        ;;
    --only=*)
        ONLY=${1#--only=}
        shift
        ;;
    -h | --help) usage ;;
    --*) usage ;;
    *) break ;;
    esac
done
case "$ONLY" in "" | unit | integration | fuzz) ;; *) usage ;; esac
[ $# -ge 1 ] || [ "$ONLY" = fuzz ] || usage

PASSED=0
FAILED=0
SKIPPED=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fnproxy-run.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

# The sum of the numbers in the lines of file $2 that match cmocka's
# summary line "[  $1 ] N test(s)..." (one per group the binary ran), or
# nothing if there is no such line. The per-test lines ("[  SKIPPED ]
# test_name") carry no number and do not match.
sum_cmocka() {
    sed -n "s/^\[ *$1 *\] \([0-9][0-9]*\) test(s).*/\1/p" "$2" |
        awk '{ n += $1; seen = 1 } END { if (seen) print n }'
}

# Adds the counts in a cmocka binary's output ($1) to the totals.
count_cmocka() {
    out=$1
    rc=$2
    name=$3
    p=$(sum_cmocka PASSED "$out")
    f=$(sum_cmocka FAILED "$out")
    s=$(sum_cmocka SKIPPED "$out")
    if [ -z "$p" ] && [ -z "$f" ]; then
        # No summary: it crashed, hung or is not a cmocka binary.
        echo "FAIL $name: exited with status $rc and no cmocka summary"
        FAILED=$((FAILED + 1))
        return
    fi
    p=${p:-0}
    f=${f:-0}
    s=${s:-0}
    # "[==========] N test(s) run." counts every test that ran, skipped ones
    # included. If PASSED + SKIPPED + FAILED exceeds it, this cmocka counted
    # the skipped tests as passed as well: take them out of PASSED.
    run=$(sed -n 's/^\[==========\] \([0-9][0-9]*\) test(s) run\..*/\1/p' "$out" |
        awk '{ n += $1; seen = 1 } END { if (seen) print n }')
    if [ -n "$run" ] && [ $((p + s + f)) -gt "$run" ] && [ "$p" -ge "$s" ]; then
        p=$((p - s))
    fi
    [ "$s" -gt 0 ] && echo "(skip $name: $s test(s) skipped, not counted as passed)"
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # A summary that claims success, then a non-zero exit (a sanitizer
        # report at exit, say) still fails.
        echo "FAIL $name: exited with status $rc after its tests passed"
        FAILED=$((FAILED + 1))
    fi
}

run_unit() {
    dir=$1
    found=0
    for bin in "$dir"/tests/test_*; do
        [ -f "$bin" ] && [ -x "$bin" ] || continue
        found=1
        name=$(basename "$bin")
        echo "--- $name"
        out="$TMP/$name.out"
        # An inner shell that cannot exec its last command, so that a crash
        # report ("Segmentation fault") lands in $out, not between our lines.
        sh -c 'cd "$1" && timeout -k 10 "$2" "$3"; exit $?' sh "$ROOT" "$UNIT_TIMEOUT" "$bin" \
            >"$out" 2>&1
        rc=$?
        cat "$out"
        [ "$rc" -eq 124 ] && echo "(killed after ${UNIT_TIMEOUT}s)"
        count_cmocka "$out" "$rc" "$name"
    done
    [ "$found" -eq 1 ] || echo "(no unit test binaries in $dir/tests)"
}

run_integration() {
    dir=$1
    out="$TMP/integration.out"
    (cd "$ROOT" && python3 tests/integration/run.py --fnproxy "$dir/fnproxy" \
        --backend "$dir/fnbackend") 2>&1 | tee "$out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL integration: the runner ended without a summary"
        FAILED=$((FAILED + 1))
        return
    fi
    p=${line%% passed*}
    f=${line#*passed, }
    f=${f%% failed*}
    s=${line#*failed, }
    s=${s%% skipped*}
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + s))
}

# The bounded fuzz runs: one test per target (FUZZ_TARGETS). libFuzzer's own
# output is long and says nothing when all is well, so it is shown only on a
# failure, from the first line of the report on (or its last lines if there
# is none).
fuzz_fail() {
    echo "FAIL $1: $2"
    FAILED=$((FAILED + 1))
}

# $1: a target of `make fuzz` (http1, config, tls, upstream, egress).
run_fuzz() {
    t=$1
    name=fuzz_$t
    out="$TMP/$name.out"
    corpus=build/fuzz/corpus-$t
    if ! command -v clang >/dev/null 2>&1; then
        fuzz_fail "$name" "clang not found (scripts/deps.sh installs clang and libclang-rt-14-dev)"
        return
    fi
    if ! (cd "$ROOT" && make --no-print-directory "build/fuzz/$name") >"$out" 2>&1; then
        cat "$out"
        fuzz_fail "$name" "could not be built"
        return
    fi
    if [ "$t" = tls ] && ! (cd "$ROOT" && sh certs/make-certs.sh build/fuzz/certs) >"$out" 2>&1; then
        cat "$out"
        fuzz_fail "$name" "certs/make-certs.sh build/fuzz/certs failed"
        return
    fi
    # The working corpus, seeded from the committed one (tests/ is never
    # written: what libFuzzer adds stays in build/fuzz).
    if ! mkdir -p "$ROOT/$corpus" || ! cp "$ROOT/tests/fuzz/corpus/$t/"* "$ROOT/$corpus/"; then
        fuzz_fail "$name" "no seeds in tests/fuzz/corpus/$t"
        return
    fi
    # From the root (fuzz_tls finds its certificates there), crash inputs
    # in build/fuzz/, and the sanitizer options of `make fuzz`, not those
    # of the last build directory.
    (cd "$ROOT" && env -u ASAN_OPTIONS -u UBSAN_OPTIONS timeout -k 10 "$FUZZ_TEST_TIMEOUT" \
        "build/fuzz/$name" -max_total_time="$FUZZ_TEST_SECONDS" -print_final_stats=1 \
        -dict="tests/fuzz/$t.dict" -artifact_prefix=build/fuzz/ "$corpus") >"$out" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out")
    if [ "$rc" -eq 0 ]; then
        echo "ok $name: ${runs:-?} runs, ${speed:-?} exec/s, corpus $corpus"
        PASSED=$((PASSED + 1))
        return
    fi
    if grep -qE 'ERROR|oracle violation|runtime error|deadly signal' "$out"; then
        sed -n '/ERROR\|oracle violation\|runtime error\|deadly signal/,$p' "$out"
    else
        tail -n 40 "$out"
    fi
    [ "$rc" -eq 124 ] && echo "(killed after ${FUZZ_TEST_TIMEOUT}s)"
    unit=$(sed -n 's/.*Test unit written to //p' "$out" | tail -n 1)
    fuzz_fail "$name" "libFuzzer exited with status $rc${unit:+ (crash input $unit; again: build/fuzz/$name $unit)}"
}

for dir in "$@"; do
    case "$dir" in
    /*) ;;
    *) dir="$ROOT/$dir" ;;
    esac
    dir=${dir%/}
    echo "=== $dir"
    san=0
    case "$dir" in *san) san=1 ;; esac
    if [ "$san" -eq 1 ]; then
        export FNPROXY_TEST_SAN=1
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
        unset FNPROXY_TEST_SAN ASAN_OPTIONS UBSAN_OPTIONS 2>/dev/null || true
    fi
    if [ "$ONLY" = "" ] || [ "$ONLY" = unit ]; then
        echo "== unit tests ($dir)"
        run_unit "$dir"
    fi
    if [ "$ONLY" = "" ] || [ "$ONLY" = integration ]; then
        echo "== integration tests ($dir)"
        run_integration "$dir"
    fi
done

if [ "$ONLY" = "" ] || [ "$ONLY" = fuzz ]; then
    for t in $FUZZ_TARGETS; do
        echo "== fuzz_$t (${FUZZ_TEST_SECONDS}s)"
        run_fuzz "$t"
    done
fi

echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
