#!/bin/sh
# `make run`: the demo function on 127.0.0.1:9001 and fnproxy in front of it
# on 127.0.0.1:8080 with policy/examples/demo.yaml. Ctrl-C stops both.
set -eu
BUILD=${1:-build}
CONFIG=policy/examples/demo.yaml

# The demo's HTTPS listener needs development certificates.
sh certs/make-certs.sh certs/out >/dev/null

"$BUILD/fnproxy" --check -c "$CONFIG"
"$BUILD/fnbackend" --listen 127.0.0.1:9001 --name hello >/dev/null &
BACKEND=$!
"$BUILD/fnproxy" -c "$CONFIG" &
PROXY=$!
trap 'kill $PROXY $BACKEND 2>/dev/null; wait 2>/dev/null; exit 0' INT TERM
trap 'kill $PROXY $BACKEND 2>/dev/null' EXIT

# Wait until the admin endpoint says it is serving.
i=0
until curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 $PROXY 2>/dev/null; then
        echo "fnproxy did not start" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

fnproxy is serving the demo function "hello" on http://127.0.0.1:8080
Try:
  curl -i http://127.0.0.1:8080/                     # route "default"
  curl -i http://127.0.0.1:8080/api/hi               # route "api" (GET and POST under /api/)
  curl -i http://127.0.0.1:8080/echo -d 'hi'         # shows what the function received from fnproxy
  curl -i http://127.0.0.1:8080/status/503           # the function's answers pass through
  curl -i --cacert certs/out/ca.crt https://localhost:8443/   # the same over TLS
  curl -s http://127.0.0.1:9901/metrics              # Prometheus metrics
  kill -HUP $PROXY                                  # reload policy/examples/demo.yaml
Ctrl-C stops fnproxy and the demo function.

MSG
wait $PROXY
