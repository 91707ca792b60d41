#!/bin/sh
# Installs the Debian packages fnproxy needs to build and test, and only
# those that are missing: with everything present it runs no apt at all.
# Usage: scripts/deps.sh [extra-package ...]
set -eu

# Build: gcc make, the -dev libraries, node-llhttp (llhttp's C sources).
# Tests: curl, openssl, python3, clang + its sanitizer runtime, sslscan;
# iproute2 (`ip netns`: the egress cases run in a loopback-only network
# namespace) and python3-requests (a real client library through egress);
# prometheus (a real server scrapes fnproxy; promtool checks /metrics) and
# chromium, chromium-driver, python3-selenium (the dashboard in a real
# browser); slowhttptest (slow headers, bodies and readers against a
# listener) and testssl.sh (a scan of the TLS listener, gated on its JSON);
# nftables (the capture cases apply deploy/capture-rules.sh in a namespace);
# wrk (the soak's keep-alive load).
PKGS="gcc make libuv1-dev libssl-dev libcmocka-dev libyaml-dev node-llhttp
curl openssl python3 clang libclang-rt-14-dev sslscan libc-ares-dev iproute2
python3-requests prometheus chromium chromium-driver python3-selenium
slowhttptest testssl.sh nftables wrk"
# nodejs and npm: the offline checks of deploy/ (tests/deploy; their npm
# packages are scripts/npm-deps.sh's). Debian's npm only where there is no
# npm yet: NodeSource's nodejs carries its own and conflicts with it.
PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

missing=""
for p in $PKGS "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A stale package list makes install fail on a fresh machine; refresh once.
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
