#!/bin/sh
# make-certs.sh [OUTDIR] - development certificates for fnproxy (default
# OUTDIR: certs/out). See certs/README.md for what is made and why.
#
# Idempotent: a file that exists and is still good (signed by the CA in
# OUTDIR, key matching, not expiring within a week) is kept; anything missing
# or bad is made again, and a new CA remakes every leaf signed by it. Each
# file is written under a temporary name and renamed, so an interrupted run
# leaves no half-written certificate behind. Needs only the openssl CLI.
#
# FNPROXY_CERT_CLIENTS: the client certificates to make, one per function
# name (default "frontend hello thumbnail"); each carries the URI SAN
# spiffe://fnproxy.local/fn/NAME that fnproxy takes as the caller identity.
set -eu

OUT=${1:-certs/out}
CLIENTS=${FNPROXY_CERT_CLIENTS-frontend hello thumbnail}
TRUST_DOMAIN=fnproxy.local
CA_DAYS=3650
LEAF_DAYS=825
RENEW_SECONDS=604800 # remake leaves that expire within a week

umask 077
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fnproxy-certs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

say() {
    printf 'make-certs: %s\n' "$*" >&2
}

for name in $CLIENTS; do
    case $name in
    *[!A-Za-z0-9._-]* | "")
        say "bad client name '$name' (letters, digits, '.', '_', '-' only)"
        exit 2
        ;;
    esac
done

# key_matches KEY CRT: the key is the private half of the certificate's key.
key_matches() {
    [ -f "$1" ] && [ -f "$2" ] || return 1
    a=$(openssl pkey -in "$1" -pubout 2>/dev/null) || return 1
    b=$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null) || return 1
    [ -n "$a" ] && [ "$a" = "$b" ]
}

# leaf_ok NAME CA [expired]: OUT/NAME.{crt,key} exist, match and verify
# against OUT/CA.crt; unless "expired", they must also stay valid a while.
leaf_ok() {
    key_matches "$OUT/$1.key" "$OUT/$1.crt" || return 1
    if [ "${3:-}" = expired ]; then
        openssl verify -no_check_time -CAfile "$OUT/$2.crt" "$OUT/$1.crt" >/dev/null 2>&1 ||
            return 1
        ! openssl x509 -in "$OUT/$1.crt" -noout -checkend 0 >/dev/null 2>&1
    else
        openssl verify -CAfile "$OUT/$2.crt" "$OUT/$1.crt" >/dev/null 2>&1 &&
            openssl x509 -in "$OUT/$1.crt" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1
    fi
}

ca_ok() {
    key_matches "$OUT/$1.key" "$OUT/$1.crt" &&
        openssl verify -CAfile "$OUT/$1.crt" "$OUT/$1.crt" >/dev/null 2>&1 &&
        openssl x509 -in "$OUT/$1.crt" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1
}

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

serial() {
    echo "0x$(openssl rand -hex 16)"
}

# install NAME: move the freshly made TMP/NAME.{key,crt} into OUT.
install_pair() {
    chmod 600 "$TMP/$1.key"
    chmod 644 "$TMP/$1.crt"
    mv -f "$TMP/$1.key" "$OUT/$1.key"
    mv -f "$TMP/$1.crt" "$OUT/$1.crt"
}

# make_ca NAME CN
make_ca() {
    newkey "$TMP/$1.key"
    openssl req -new -x509 -key "$TMP/$1.key" -sha256 -days "$CA_DAYS" -subj "/O=fnproxy/CN=$2" \
        -set_serial "$(serial)" -config /dev/null \
        -addext "basicConstraints = critical, CA:TRUE, pathlen:0" \
        -addext "keyUsage = critical, keyCertSign, cRLSign" \
        -addext "subjectKeyIdentifier = hash" -out "$TMP/$1.crt" 2>"$TMP/err" || {
        cat "$TMP/err" >&2
        exit 1
    }
    install_pair "$1"
    say "made $OUT/$1.crt"
}

# make_leaf NAME CA CN EKU SAN [expired]
make_leaf() {
    newkey "$TMP/$1.key"
    openssl req -new -key "$TMP/$1.key" -subj "/O=fnproxy/CN=$3" -config /dev/null \
        -out "$TMP/$1.csr" 2>"$TMP/err" || {
        cat "$TMP/err" >&2
        exit 1
    }
    cat >"$TMP/$1.ext" <<EOF
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $4
subjectAltName = $5
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    if [ "${6:-}" = expired ]; then
        # `openssl x509` in OpenSSL 3.0 cannot back-date, `openssl ca` can.
        : >"$TMP/index.txt"
        cat >"$TMP/ca.cnf" <<EOF
[ ca ]
default_ca = dev
[ dev ]
database = $TMP/index.txt
new_certs_dir = $TMP
serial = $TMP/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
organizationName = optional
EOF
        openssl rand -hex 16 >"$TMP/serial"
        openssl ca -batch -config "$TMP/ca.cnf" -cert "$OUT/$2.crt" -keyfile "$OUT/$2.key" \
            -in "$TMP/$1.csr" -out "$TMP/$1.crt" -notext -startdate 20200101000000Z \
            -enddate 20200102000000Z -extfile "$TMP/$1.ext" -extensions leaf 2>"$TMP/err" || {
            cat "$TMP/err" >&2
            exit 1
        }
    else
        openssl x509 -req -in "$TMP/$1.csr" -CA "$OUT/$2.crt" -CAkey "$OUT/$2.key" \
            -set_serial "$(serial)" -days "$LEAF_DAYS" -sha256 -extfile "$TMP/$1.ext" \
            -extensions leaf -out "$TMP/$1.crt" 2>"$TMP/err" || {
            cat "$TMP/err" >&2
            exit 1
        }
    fi
    install_pair "$1"
    say "made $OUT/$1.crt"
}

ca_ok ca || make_ca ca "fnproxy development CA"
ca_ok rogue-ca || make_ca rogue-ca "fnproxy rogue CA (negative tests only)"

leaf_ok server ca ||
    make_leaf server ca localhost serverAuth "DNS:localhost, IP:127.0.0.1, IP:::1"
leaf_ok wildcard ca ||
    make_leaf wildcard ca "*.fn.test" serverAuth "DNS:*.fn.test"

for name in $CLIENTS; do
    leaf_ok "client-$name" ca ||
        make_leaf "client-$name" ca "$name" clientAuth "URI:spiffe://$TRUST_DOMAIN/fn/$name"
done

# Negative-test clients: names no example function uses.
leaf_ok client-expired ca expired ||
    make_leaf client-expired ca expired clientAuth "URI:spiffe://$TRUST_DOMAIN/fn/expired" expired
leaf_ok client-rogue rogue-ca ||
    make_leaf client-rogue rogue-ca rogue clientAuth "URI:spiffe://$TRUST_DOMAIN/fn/rogue"

exit 0
