#!/bin/sh
# Installs the npm packages of tests/deploy (kubernetes-models, yaml,
# dockerfile-utils: the offline checks of deploy/) exactly as its
# package-lock.json pins them, into tests/deploy/node_modules (git-ignored),
# and only when that lock changed since the last install: otherwise it runs
# no npm at all. Run by `make deps` after scripts/deps.sh (which installs
# node and npm). No package there needs an install script.
set -eu

dir="$(dirname "$0")/../tests/deploy"
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
[ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" = "$want" ] && exit 0

# The system's CA bundle, where there is one: it carries the CAs the
# machine's admin added (a TLS-intercepting egress proxy's, say), which
# node's own list lacks.
ca=""
[ -r /etc/ssl/certs/ca-certificates.crt ] && ca="--cafile=/etc/ssl/certs/ca-certificates.crt"

echo "deps: npm ci in tests/deploy" >&2
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error $ca) >&2
echo "$want" >"$dir/node_modules/.lock-sha256"
