#!/bin/sh
# Writes the nftables rules that send a function's outbound TCP to
# fnproxy's capture listener (README "Transparent capture"). Run it in the
# pod's network namespace with CAP_NET_ADMIN, e.g. as an init container.
#
#   sh deploy/capture-rules.sh --proxy-uid UID --port PORT [--uid UID]... [--print]
#
#   --proxy-uid UID  fnproxy's user: its own connections (the ones it dials
#                    for the function) are never redirected, so never loop
#   --port PORT      the capture listener's port (egress.capture); the
#                    connection is redirected to it on loopback
#   --uid UID        redirect only this user's connections (repeatable);
#                    without it, every user's but fnproxy's
#   --print          print the ruleset instead of applying it (nft -f -)
#
# One table, inet fnproxy_capture, with a nat output chain: TCP to a
# loopback destination (127.0.0.0/8, ::1) stays local; everything else from
# the users named is redirected. The table is deleted and written anew, so
# running it twice leaves one copy. UDP (DNS, QUIC) is not redirected.
set -eu

usage() {
    echo "usage: sh deploy/capture-rules.sh --proxy-uid UID --port PORT [--uid UID]... [--print]" >&2
    exit 2
}

die() {
    echo "capture-rules.sh: $*" >&2
    exit 2
}

# A decimal number without sign or leading zeros, at most max.
number() { # name value max
    case "$2" in
    "" | *[!0-9]* | 0?*) die "$1: expected a number, got \"$2\"" ;;
    esac
    [ "${#2}" -le 10 ] && [ "$2" -le "$3" ] || die "$1: $2 is larger than $3"
}

PROXY_UID=""
PORT=""
UIDS=""
PRINT=0
while [ $# -gt 0 ]; do
    case "$1" in
    --proxy-uid | --port | --uid)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --proxy-uid) number --proxy-uid "$2" 4294967294 && PROXY_UID=$2 ;;
        --port) number --port "$2" 65535 && PORT=$2 ;;
        --uid) number --uid "$2" 4294967294 && UIDS="${UIDS:+$UIDS, }$2" ;;
        esac
        shift 2
        ;;
    --print)
        PRINT=1
        shift
        ;;
    -h | --help) usage ;;
    *) die "unknown argument \"$1\"" ;;
    esac
done
[ -n "$PROXY_UID" ] || die "--proxy-uid is required (fnproxy's user, whose connections are never redirected)"
[ -n "$PORT" ] || die "--port is required (the capture listener's port)"
[ "$PORT" -ge 1 ] || die "--port: 0 is not a port"

WHO=""
[ -n "$UIDS" ] && WHO="meta skuid != { $UIDS } return"

RULES=$(cat <<RULES
table inet fnproxy_capture
delete table inet fnproxy_capture
table inet fnproxy_capture {
	chain output {
		type nat hook output priority -100; policy accept;
		meta l4proto != tcp return
		meta skuid $PROXY_UID return comment "fnproxy itself: never looped"
		ip daddr 127.0.0.0/8 return comment "local traffic stays local"
		ip6 daddr ::1 return
		$WHO
		meta l4proto tcp redirect to :$PORT comment "fnproxy's capture listener"
	}
}
RULES
)

if [ "$PRINT" -eq 1 ]; then
    printf '%s\n' "$RULES"
    exit 0
fi
command -v nft >/dev/null 2>&1 || die "nft not found (Debian: apt-get install nftables)"
printf '%s\n' "$RULES" | nft -f -
