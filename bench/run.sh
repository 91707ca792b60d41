#!/bin/sh
# bench/run.sh [--quick]: fnproxy against direct, nginx and HAProxy
# (ingress), against Squid and tinyproxy (egress) on loopback, then the
# reliability group (bench/resilience.py). `make bench` runs it in full (3
# reps of 8 s, about 22 min: 18 bounded at 20, and the reliability group's
# 3.5 bounded at 7), `make bench-quick` with --quick (1 rep of 3 s, about
# 4.7 min, bounded at 6).
#
# This wrapper installs the peers (Debian packages, only if missing),
# raises the fd limit for the 10,000-connection scenario, and runs
# bench/bench.py, which does the work (it also makes the TLS certificates
# with certs/make-certs.sh and builds bench/wrk-tls-shim.c and
# bench/connect-load.c, all into build/bench). Everything started is
# killed on exit, on failure and on Ctrl-C: bench.py stops what it
# started, and the trap here kills, by pid, whatever bench.py recorded in
# build/bench/pids (and removes the /dev/shm segments of the Squid it
# started, named after build/bench/squid-service).
# Results: build/bench/results.{md,csv,png}, results-egress.png.
#
# Environment: BUILD (default build), BENCH_REPS, BENCH_SECONDS,
# BENCH_BACKEND=nginx|fnbackend, BENCH_ACCESS_LOG=auto|on|off, BENCH_SCENARIOS
# (scenario keys: run only those).
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT="$BUILD/bench"

sh scripts/deps.sh wrk nginx-light haproxy gnuplot-nox squid tinyproxy

for b in "$BUILD/fnproxy" "$BUILD/fnbackend"; do
    if [ ! -x "$b" ]; then
        echo "bench: $b is missing: run 'make build-all' first" >&2
        exit 1
    fi
done

# 10,000 idle connections need more than the usual 1024 descriptors, in
# the client and in each proxy (they inherit this limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rm -rf "$OUT"
mkdir -p "$OUT/logs"
: >"$OUT/pids"

# The pids in build/bench/pids that still run one of the bench's programs.
still_ours() {
    for pid in $(cat "$OUT/pids"); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
            grep -Eq 'wrk|nginx|haproxy|fnproxy|fnbackend|idle\.py|squid|tinyproxy|connect-load'; then
            printf ' %s' "$pid"
        fi
    done
}

child=""
cleanup() {
    status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        # bench.py stops its processes itself; give it a moment.
        i=0
        while kill -0 "$child" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$child" 2>/dev/null || true
    fi
    # Anything bench.py started and did not stop (it died, or was killed):
    # the pids it listed, if they still run one of our programs.
    if [ -s "$OUT/pids" ]; then
        ours=$(still_ours)
        if [ -n "$ours" ]; then
            kill -TERM $ours 2>/dev/null || true
            sleep 0.5
            ours=$(still_ours)
            [ -z "$ours" ] || kill -KILL $ours 2>/dev/null || true
        fi
    fi
    # A Squid killed here leaves its shared-memory segments, named after
    # the service name bench.py gave it (fnbench<port>).
    if [ -s "$OUT/squid-service" ]; then
        svc=$(head -n1 "$OUT/squid-service")
        case "$svc" in
        fnbench[0-9]*) rm -f /dev/shm/"$svc"-*.shm ;;
        esac
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# In the background and waited for, so that a signal runs the trap at once.
BUILD="$BUILD" python3 bench/bench.py "$@" &
child=$!
wait "$child"
