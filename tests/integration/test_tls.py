"""TLS: termination on listeners (versions, resumption, ALPN, SNI, mTLS
identity and allowed_clients), bad input on a TLS port, certificate reload,
--check of certificate files, origination to TLS functions (upstream_tls)
and an sslscan of the listener.

Every case makes its own development PKI with certs/make-certs.sh in its
temp directory (about 0.4 s) and talks only to 127.0.0.1. Clients are curl,
openssl s_client and Python's ssl module; TLSClient below is the harness's
raw-socket Client over an ssl socket, so read_response() and friends work
the same over TLS.
"""

import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

from harness import (HOST, SAN, Client, build_request, case, check, check_eq,
                     check_fnproxy_error, curl, fail, hget, listener_reasons, make_certs,
                     metric_value, parse_echo, raw_exchange, request, settle, wait_for,
                     wait_reasons)

SPIFFE = "spiffe://fnproxy.local/fn/"

# The reasons fnproxy_tls_handshake_errors_total may carry (README, issue 4).
TLS_REASONS = {"plain_http", "not_tls", "version", "cipher", "sni", "alpn", "no_cert", "verify",
               "peer_alert", "closed", "protocol", "internal", "timeout"}
UPSTREAM_TLS_ERRORS = ("upstream_tls_failed", "upstream_bad_response", "upstream_unreachable")

BIG = (16 << 20) if SAN else (64 << 20)
RSS_LIMIT_KIB = 64 * 1024
# TLS frees and allocates record buffers all the time, and ASan keeps freed
# memory in a quarantine of 256 MiB by default, which would hide any bound;
# the big-transfer case runs its sanitized fnproxy with a small one.
SAN_QUARANTINE_MB = 8


# ---------------------------------------------------------------------------
# helpers


def client_ctx(ca, cert=None, key=None, version=None):
    """A verifying client context (hostname checked)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(ca)
    if cert:
        c.load_cert_chain(cert, key)
    if version == "1.2":
        c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_3
    return c


class TLSClient(Client):
    """harness.Client over TLS: the handshake happens in the constructor."""

    def __init__(self, port, sctx, server_hostname="localhost", timeout=10):
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = sctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout


def tls_connect(ctx, port, sctx, server_hostname="localhost", timeout=10):
    c = TLSClient(port, sctx, server_hostname, timeout)
    ctx.socks.append(c)
    return c


def tls_get(ctx, port, sctx, path="/echo", headers=None, server_hostname="localhost"):
    """One request on a fresh TLS connection."""
    c = tls_connect(ctx, port, sctx, server_hostname)
    try:
        c.send(build_request("GET", path, headers, host="localhost"))
        return c.read_response()
    finally:
        c.close()


def s_client(port, args, stdin=b"", timeout=10):
    """openssl s_client against 127.0.0.1:port: (exit status, stdout+stderr).
    With a request on stdin it waits for fnproxy to close (-ign_eof), so
    send "Connection: close" (http_req does)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)] + list(args)
    if stdin and "-ign_eof" not in cmd:
        cmd.append("-ign_eof")
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def handshake_line(out):
    """("New"|"Reused", "TLSv1.x", cipher) from s_client output, or None."""
    m = re.search(r"^(New|Reused), (TLSv1(?:\.\d)?|\(NONE\)), Cipher is (\S+)", out, re.M)
    return m.groups() if m else None


def accepted(out):
    """The handshake line of a successful s_client handshake, else None."""
    h = handshake_line(out)
    if h is None or h[1] == "(NONE)" or h[2] == "(NONE)":
        return None
    return h


def http_req(path="/", host="localhost"):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode()


def peer_cert_text(out):
    """Subject and SAN of the first certificate in s_client -showcerts output."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        fail("no certificate in s_client output: %r" % out[-600:])
    p = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName"],
                       input=m.group(0).encode(), capture_output=True, timeout=10)
    return p.stdout.decode()


def tls_errors(fp, listener):
    """{reason: count} of fnproxy_tls_handshake_errors_total for a listener."""
    return listener_reasons(fp, "fnproxy_tls_handshake_errors_total", listener)


def wait_errors(fp, listener, total, timeout=3):
    """Waits until the listener's handshake errors add up to total; returns them."""
    return wait_reasons(lambda: tls_errors(fp, listener), total, timeout)


def check_reasons(got, want, what):
    """got == want, and every reason is a documented one."""
    bad = set(got) - TLS_REASONS
    check(not bad, "%s: undocumented handshake error reason(s) %s in %r" % (what, sorted(bad), got))
    check_eq(got, want, "%s: fnproxy_tls_handshake_errors_total" % what)


def diff(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) != before.get(k, 0)}


def client_hello(server_hostname="localhost"):
    """The bytes of a real ClientHello (Python's own, made in memory)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = c.wrap_bio(inc, out, server_hostname=server_hostname)
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    check(len(hello) > 100 and hello[0] == 0x16, "made a ClientHello (%d bytes)" % len(hello))
    return hello


def hup_and_wait(fp, pattern, nth, timeout=5):
    """SIGHUP, then waits for the nth occurrence of pattern in stderr."""
    fp.send_signal(signal.SIGHUP)
    ok = wait_for(lambda: len(re.findall(pattern, fp.stderr_text())) >= nth, timeout)
    check(ok, "stderr after SIGHUP has no %r (#%d): %r" % (pattern, nth, fp.stderr_text()[-800:]))


def replace_file(src, dst):
    """Copies src over dst atomically (rename), as a deploy tool would."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------
# configs

# public: the default listener (server.crt default, wildcard.crt by SNI,
# handshake_timeout 1s); tls13: min_version 1.3; strict: sni_strict;
# mtls: client certificates required, function g only lets "frontend" in.
CONFIG = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: public
    listen: 127.0.0.1:$PORT_public
    tls:
      certificates:
        - { cert: $D/server.crt, key: $D/server.key }
        - { cert: $D/wildcard.crt, key: $D/wildcard.key }
      min_version: "1.2"
      sni_strict: false
      handshake_timeout: 1s
  - name: tls13
    listen: 127.0.0.1:$PORT_tls13
    tls:
      certificates: [{ cert: $D/server.crt, key: $D/server.key }]
      min_version: "1.3"
  - name: strict
    listen: 127.0.0.1:$PORT_strict
    tls:
      certificates:
        - { cert: $D/server.crt, key: $D/server.key }
        - { cert: $D/wildcard.crt, key: $D/wildcard.key }
      sni_strict: true
  - name: mtls
    listen: 127.0.0.1:$PORT_mtls
    tls:
      certificates: [{ cert: $D/server.crt, key: $D/server.key }]
      client_ca: $D/ca.crt
      handshake_timeout: 10s
functions:
  - name: f
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: public, match: { listener: public, path_prefix: / }, timeout: 30s }
        - { name: tls13, match: { listener: tls13, path_prefix: / } }
        - { name: strict, match: { listener: strict, path_prefix: / } }
  - name: g
    endpoints: [127.0.0.1:$B]
    ingress:
      allowed_clients: ["spiffe://fnproxy.local/fn/frontend"]
      routes:
        - { name: mtls, match: { listener: mtls, path_prefix: / } }
"""
LISTENERS = ("public", "tls13", "strict", "mtls")


def start(ctx, record=True, workers=2):
    d = make_certs(ctx)
    b = ctx.start_backend(record=record)
    fp = ctx.start_fnproxy(CONFIG, workers=workers, listeners=LISTENERS, D=d, B=b.port)
    return d, b, fp


# ---------------------------------------------------------------------------
# requests over TLS


@case()
def https_get_and_post_with_curl(ctx):
    d, b, fp = start(ctx)
    url = "https://localhost:%d/echo" % fp.ports["public"]
    p = curl(["--cacert", d + "/ca.crt", "-i", url,
              "-H", "x-fnproxy-client-id: spiffe://fnproxy.local/fn/admin"])
    check_eq(p.returncode, 0, "curl GET exit status (%s)" % p.stderr.decode()[-300:])
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "curl GET status line %r" % head[:40])
    line, hdrs, _ = parse_echo(body)
    check_eq(line, "GET /echo HTTP/1.1", "request line")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["https"], "x-forwarded-proto over TLS")
    check_eq(hget(hdrs, "x-forwarded-for"), ["127.0.0.1"], "x-forwarded-for")
    check_eq(hget(hdrs, "x-fnproxy-client-id"), [],
             "x-fnproxy-client-id a client sent on a listener without mTLS")
    payload = bytes(range(256)) * 40
    pf = ctx.path("payload.bin")
    with open(pf, "wb") as f:
        f.write(payload)
    p = curl(["--cacert", d + "/ca.crt", "--data-binary", "@" + pf,
              "-H", "Content-Type: application/octet-stream", url])
    check_eq(p.returncode, 0, "curl POST exit status (%s)" % p.stderr.decode()[-300:])
    line, hdrs, got = parse_echo(p.stdout)
    check_eq(line, "POST /echo HTTP/1.1", "request line")
    check_eq(got, payload, "POST body the backend received")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["https"], "x-forwarded-proto on the POST")
    # curl without the CA refuses the certificate: it is the dev CA's.
    p = curl(["-o", "/dev/null", url])
    check(p.returncode != 0, "curl without --cacert accepted the development certificate")


@case()
def keepalive_and_pipelining_over_tls(ctx):
    d, b, fp = start(ctx)
    c = tls_connect(ctx, fp.ports["public"], client_ctx(d + "/ca.crt"))
    for i in range(60):
        if i % 3 == 0:
            c.send(build_request("GET", "/echo?i=%d" % i))
            r = c.read_response()
            check(r.body.startswith(b"GET /echo?i=%d HTTP/1.1\r\n" % i),
                  "keep-alive answer %d is %r" % (i, r.body[:40]))
        elif i % 3 == 1:
            c.send(build_request("POST", "/echo", body=b"x" * (i * 1000)))
            r = c.read_response()
            check_eq(parse_echo(r.body)[2], b"x" * (i * 1000), "keep-alive POST %d body" % i)
        else:
            c.send(build_request("GET", "/bytes/%d" % (i * 3000)))
            r = c.read_response()
            check_eq(len(r.body), i * 3000, "keep-alive download %d" % i)
        check_eq(r.status, 200, "keep-alive request %d" % i)
    paths = ["/delay/100", "/status/201", "/echo?i=2", "/bytes/70000", "/chunked/300000",
             "/", "/status/204", "/delay/10", "/sink", "/echo?i=9"]
    c.send(b"".join(build_request("GET", p) for p in paths))  # one write
    for i, p in enumerate(paths):
        r = c.read_response(timeout=10)
        if p.startswith("/delay"):
            check_eq((r.status, r.body), (200, b"delayed\n"), "pipelined response %d" % i)
        elif p == "/status/201":
            check_eq(r.status, 201, "pipelined response %d" % i)
        elif p == "/status/204":
            check_eq((r.status, r.body), (204, b""), "pipelined response %d" % i)
        elif p.startswith("/echo"):
            check(r.body.startswith(("GET %s HTTP/1.1\r\n" % p).encode()),
                  "pipelined response %d is %r (out of order?)" % (i, r.body[:40]))
        elif p == "/bytes/70000":
            check_eq(len(r.body), 70000, "pipelined response %d bytes" % i)
        elif p == "/chunked/300000":
            check(r.chunked and len(r.body) == 300000, "pipelined response %d chunked" % i)
        elif p == "/sink":
            check_eq(r.body, b"0\n", "pipelined response %d" % i)
        else:
            check_eq((r.status, r.body), (200, b"hello from backend\n"), "response %d" % i)
    check(c.is_open(), "the TLS connection is still open after pipelining")
    c.send(build_request("GET", "/echo?last"))
    check_eq(c.read_response().status, 200, "a request after the pipelined ones")


@case(timeout=120)
def big_upload_and_download_over_tls_bounded_memory(ctx):
    if SAN:
        opts = os.environ.get("ASAN_OPTIONS", "")
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + \
            "quarantine_size_mb=%d" % SAN_QUARANTINE_MB
    d, b, fp = start(ctx, record=False)
    c = tls_connect(ctx, fp.ports["public"], client_ctx(d + "/ca.crt"), timeout=60)
    t0 = time.monotonic()
    c.send(build_request("POST", "/sink", [("Content-Length", str(BIG))]))
    piece = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(BIG >> 20):
        c.send(piece)
    r = c.read_response(timeout=60)
    up = time.monotonic() - t0
    check_eq((r.status, r.body), (200, b"%d\n" % BIG), "sink answer to a %d MiB upload"
             % (BIG >> 20))
    t0 = time.monotonic()
    c.send(build_request("GET", "/bytes/%d" % BIG))
    r = c.read_head(timeout=30)
    check_eq(r.status, 200, "download status")
    check_eq(c.count_body(r, timeout=90), BIG, "bytes downloaded over TLS")
    down = time.monotonic() - t0
    # Backpressure: a TLS client that stops reading a large answer does not
    # make fnproxy buffer it.
    n = 4 * BIG
    c.send(build_request("GET", "/bytes/%d" % n))
    r = c.read_head(timeout=30)
    check_eq(r.status, 200, "status of the stalled download")
    time.sleep(1.5)
    stalled = fp.vm_hwm_kib()
    check(stalled is not None and stalled < RSS_LIMIT_KIB,
          "fnproxy peak RSS %s KiB with a TLS client stalled on a %d MiB answer (limit %d KiB)"
          % (stalled, n >> 20, RSS_LIMIT_KIB))
    check_eq(c.count_body(r, timeout=90), n, "bytes after the stall")
    c.send(build_request("GET", "/echo?after"))
    check_eq(c.read_response().status, 200, "request after the big transfers")
    hwm = fp.vm_hwm_kib()
    check(hwm is not None, "VmHWM of fnproxy unreadable")
    check(hwm < RSS_LIMIT_KIB, "fnproxy peak RSS %d KiB after %d MiB up and down over TLS "
          "(limit %d KiB)" % (hwm, BIG >> 20, RSS_LIMIT_KIB))
    ctx.note("TLS %d MiB upload %.1fs, download %.1fs, fnproxy VmHWM %d KiB"
             % (BIG >> 20, up, down, hwm))


# ---------------------------------------------------------------------------
# protocol versions, resumption, ALPN, SNI


@case()
def versions_accepted_and_refused(ctx):
    d, b, fp = start(ctx, record=False)
    ca = ["-CAfile", d + "/ca.crt"]
    # SECLEVEL=0 so that this OpenSSL really offers TLS 1.1 (a client that
    # refuses by itself would prove nothing about fnproxy).
    rc, out = s_client(fp.ports["public"], ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"] + ca)
    check(accepted(out) is None, "TLS 1.1 handshake accepted: %r" % (handshake_line(out),))
    check("alert protocol version" in out, "no protocol_version alert for TLS 1.1: %r"
          % out[-500:])
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(fp.ports["public"], [flag, "-servername", "localhost"] + ca,
                           stdin=http_req("/echo"))
        h = accepted(out)
        check(h is not None and h[1] == want, "%s: handshake %r: %r" % (flag, h, out[-500:]))
        check("Verify return code: 0 (ok)" in out, "%s: certificate not verified" % flag)
        check("HTTP/1.1 200 OK" in out, "%s: no 200 answer through s_client" % flag)
    check_reasons(wait_errors(fp, "public", 1), {"version": 1}, "public after -tls1_1")
    # min_version "1.3"
    rc, out = s_client(fp.ports["tls13"], ["-tls1_2"] + ca)
    check(accepted(out) is None, "TLS 1.2 accepted by a min_version 1.3 listener: %r"
          % (handshake_line(out),))
    check("alert protocol version" in out, "no protocol_version alert: %r" % out[-500:])
    rc, out = s_client(fp.ports["tls13"], ["-tls1_3"] + ca, stdin=http_req())
    h = accepted(out)
    check(h is not None and h[1] == "TLSv1.3", "min_version 1.3 listener, -tls1_3: %r" % (h,))
    check("HTTP/1.1 200 OK" in out, "no 200 through the min_version 1.3 listener")
    check_reasons(wait_errors(fp, "tls13", 1), {"version": 1}, "tls13 after -tls1_2")
    # Python's default client (highest version) gets TLS 1.3.
    c = tls_connect(ctx, fp.ports["public"], client_ctx(d + "/ca.crt"))
    check_eq(c.sock.version(), "TLSv1.3", "version negotiated by a default client")


@case()
def session_resumption_12_and_13(ctx):
    d, b, fp = start(ctx, record=False)
    for flag in ("-tls1_2", "-tls1_3"):
        sess = ctx.path("sess%s.pem" % flag)
        args = [flag, "-CAfile", d + "/ca.crt", "-servername", "localhost"]
        rc, out = s_client(fp.ports["public"], args + ["-sess_out", sess], stdin=http_req())
        h = accepted(out)
        check(h is not None and h[0] == "New", "%s first connection: %r" % (flag, h))
        check("HTTP/1.1 200 OK" in out, "%s first connection: no 200" % flag)
        check(os.path.exists(sess) and os.path.getsize(sess) > 0,
              "%s: s_client saved no session (no ticket from fnproxy?)" % flag)
        for i in range(2):
            rc, out = s_client(fp.ports["public"], args + ["-sess_in", sess], stdin=http_req())
            h = accepted(out)
            check(h is not None and h[0] == "Reused",
                  "%s resumption %d: handshake %r, not Reused" % (flag, i, h))
            check("HTTP/1.1 200 OK" in out, "%s resumed connection: no 200" % flag)
    check_reasons(tls_errors(fp, "public"), {}, "after resumption")


@case()
def key_update_mid_connection(ctx):
    """After the handshake fnproxy protects TLS 1.3 records itself
    (proxy/tlsrec.c). s_client's "K" command sends a KeyUpdate asking for
    one back: the next request must be read with the client's new key and
    the answer sealed with fnproxy's new one, on the same connection."""
    d, b, fp = start(ctx)
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, fp.ports["public"]), "-tls1_3",
           "-CAfile", d + "/ca.crt", "-servername", "localhost", "-crlf"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = bytearray()
    lock = threading.Lock()

    def pump():
        for chunk in iter(lambda: p.stdout.read1(65536), b""):
            with lock:
                out.extend(chunk)

    def seen(text, n):
        with lock:
            return out.count(text) >= n

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        ask = "GET /echo HTTP/1.1\nHost: localhost\nx-n: %d\n%s\n"
        p.stdin.write((ask % (1, "")).encode())
        p.stdin.flush()
        check(wait_for(lambda: seen(b"HTTP/1.1 200 OK", 1), 10), "no first answer")
        for n, letter in ((2, "K"), (3, "k")):
            # s_client takes a command from a read of its own: wait for it.
            p.stdin.write((letter + "\n").encode())
            p.stdin.flush()
            check(wait_for(lambda: seen(b"KEYUPDATE", n - 1), 10), "s_client sent no KeyUpdate")
            p.stdin.write((ask % (n, "Connection: close\n" if n == 3 else "")).encode())
            p.stdin.flush()
            check(wait_for(lambda: seen(b"HTTP/1.1 200 OK", n), 10),
                  "no answer %d after KEYUPDATE: %r" % (n, bytes(out[-600:])))
        p.stdin.close()
        p.wait(timeout=10)
        t.join(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode("utf-8", "replace")
    check_eq(text.count("KEYUPDATE"), 2, "key updates s_client sent")
    check(accepted(text) is not None and accepted(text)[1] == "TLSv1.3", "not TLS 1.3: %r"
          % text[-400:])
    for n in (1, 2, 3):
        check("x-n: %d\r\n" % n in text,
              "request %d did not reach the function intact: %r" % (n, text[-800:]))
    check_reasons(tls_errors(fp, "public"), {}, "after key updates")


@case()
def alpn(ctx):
    d, b, fp = start(ctx, record=False)
    ca = ["-CAfile", d + "/ca.crt"]
    rc, out = s_client(fp.ports["public"], ["-alpn", "http/1.1"] + ca, stdin=http_req())
    check("ALPN protocol: http/1.1" in out, "http/1.1 not selected: %r" % out[-400:])
    check("HTTP/1.1 200 OK" in out, "no 200 with ALPN http/1.1")
    rc, out = s_client(fp.ports["public"], ["-alpn", "h2,http/1.1"] + ca)
    check("ALPN protocol: http/1.1" in out, "h2,http/1.1 offered: http/1.1 not selected: %r"
          % out[-400:])
    rc, out = s_client(fp.ports["public"], ca, stdin=http_req())
    check(accepted(out) and "No ALPN negotiated" in out, "a client without ALPN: %r"
          % out[-400:])
    check("HTTP/1.1 200 OK" in out, "no 200 without ALPN")
    rc, out = s_client(fp.ports["public"], ["-alpn", "h2"] + ca)
    check(accepted(out) is None, "h2-only client accepted: %r" % (handshake_line(out),))
    check("alert no application protocol" in out, "no no_application_protocol alert: %r"
          % out[-400:])
    check_reasons(wait_errors(fp, "public", 1), {"alpn": 1}, "after an h2-only client")


@case()
def sni_picks_certificate(ctx):
    d, b, fp = start(ctx, record=False)
    ca = ["-CAfile", d + "/ca.crt", "-showcerts"]
    port = fp.ports["public"]
    rc, out = s_client(port, ["-servername", "x.fn.test", "-verify_hostname", "x.fn.test"] + ca)
    text = peer_cert_text(out)
    check("CN = *.fn.test" in text and "DNS:*.fn.test" in text,
          "SNI x.fn.test got %r" % text)
    check("Verify return code: 0 (ok)" in out, "x.fn.test: wildcard cert did not verify")
    rc, out = s_client(port, ["-noservername"] + ca)
    text = peer_cert_text(out)
    check("CN = localhost" in text and "DNS:localhost" in text and "IP Address:127.0.0.1" in text,
          "no SNI got %r" % text)
    rc, out = s_client(port, ["-servername", "LOCALHOST"] + ca)
    check("CN = localhost" in peer_cert_text(out), "SNI LOCALHOST (case) got another cert")
    rc, out = s_client(port, ["-servername", "a.b.fn.test"] + ca)
    check("CN = localhost" in peer_cert_text(out),
          "a.b.fn.test (two labels under *.fn.test) did not get the default")
    rc, out = s_client(port, ["-servername", "unknown.example"] + ca)
    check(accepted(out) and "CN = localhost" in peer_cert_text(out),
          "non-strict listener: unknown name did not get the default: %r" % out[-300:])
    # curl, the way the certs README says: --resolve for the name.
    p = curl(["--cacert", d + "/ca.crt", "--resolve", "api.fn.test:%d:127.0.0.1" % port,
              "https://api.fn.test:%d/echo" % port])
    check_eq(p.returncode, 0, "curl to api.fn.test (%s)" % p.stderr.decode()[-300:])
    line, hdrs, _ = parse_echo(p.stdout)
    check_eq(hget(hdrs, "host"), ["api.fn.test:%d" % port], "host via SNI name")
    check_reasons(tls_errors(fp, "public"), {}, "public after SNI checks")
    # sni_strict
    sp = fp.ports["strict"]
    rc, out = s_client(sp, ["-servername", "unknown.example"] + ca)
    check(accepted(out) is None, "strict: unknown name accepted: %r" % (handshake_line(out),))
    check("unrecognized name" in out, "strict: no unrecognized_name alert: %r" % out[-400:])
    rc, out = s_client(sp, ["-servername", "y.fn.test"] + ca, stdin=http_req())
    check("CN = *.fn.test" in peer_cert_text(out) and "HTTP/1.1 200 OK" in out,
          "strict: y.fn.test not served with the wildcard")
    rc, out = s_client(sp, ["-servername", "localhost"] + ca, stdin=http_req())
    check("CN = localhost" in peer_cert_text(out) and "HTTP/1.1 200 OK" in out,
          "strict: localhost not served")
    rc, out = s_client(sp, ["-noservername"] + ca, stdin=http_req())
    check(accepted(out) and "CN = localhost" in peer_cert_text(out),
          "strict: a client without SNI did not get the default certificate: %r" % out[-300:])
    check_reasons(wait_errors(fp, "strict", 1), {"sni": 1}, "strict after an unknown name")


# ---------------------------------------------------------------------------
# mTLS


@case()
def mtls_identity_and_allowed_clients(ctx):
    d, b, fp = start(ctx)
    port = fp.ports["mtls"]
    fake = SPIFFE + "admin"
    p = curl(["--cacert", d + "/ca.crt", "--cert", d + "/client-frontend.crt",
              "--key", d + "/client-frontend.key", "-H", "x-fnproxy-client-id: " + fake,
              "-H", "X-FNPROXY-CLIENT-ID: " + fake, "-i",
              "https://localhost:%d/echo?who=frontend" % port])
    check_eq(p.returncode, 0, "curl with the frontend cert (%s)" % p.stderr.decode()[-300:])
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "frontend: status line %r" % head[:60])
    line, hdrs, _ = parse_echo(body)
    check_eq(hget(hdrs, "x-fnproxy-client-id"), [SPIFFE + "frontend"],
             "x-fnproxy-client-id the function received (client sent its own twice)")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["https"], "x-forwarded-proto")
    # Keep-alive: every request on the connection carries the identity.
    fe = client_ctx(d + "/ca.crt", d + "/client-frontend.crt", d + "/client-frontend.key")
    c = tls_connect(ctx, port, fe)
    for i in range(3):
        c.send(build_request("GET", "/echo?k=%d" % i, [("x-fnproxy-client-id", fake)]))
        r = c.read_response()
        check_eq(r.status, 200, "frontend keep-alive %d" % i)
        check_eq(hget(parse_echo(r.body)[1], "x-fnproxy-client-id"), [SPIFFE + "frontend"],
                 "identity on keep-alive request %d" % i)
    # hello has a valid certificate but is not in allowed_clients.
    for v in ("1.2", "1.3"):
        c = tls_connect(ctx, port, client_ctx(d + "/ca.crt", d + "/client-hello.crt",
                                              d + "/client-hello.key", version=v))
        for i in range(2):
            c.send(build_request("GET", "/echo?who=hello", [("x-fnproxy-client-id",
                                                               SPIFFE + "frontend")]))
            r = c.read_response()
            check_fnproxy_error(r, 403, "client_not_allowed")
    rec = settle(b)
    check(b"who=hello" not in rec, "a request of a client not allowed reached the function")
    check_eq(rec.count(b"who=frontend"), 1, "frontend requests in the backend record")
    text = fp.metrics()
    check_eq(metric_value(text, "fnproxy_policy_denials_total",
                          {"direction": "ingress", "function": "g", "reason": "client"}), 4.0,
             "fnproxy_policy_denials_total{function=g,reason=client}")
    check_reasons(tls_errors(fp, "mtls"), {}, "mtls after allowed and denied clients")
    # A resumed session keeps the identity of the certificate it began with
    # (the resuming client presents none).
    for flag in ("-tls1_2", "-tls1_3"):
        sess = ctx.path("mtls%s.pem" % flag)
        args = [flag, "-CAfile", d + "/ca.crt", "-servername", "localhost"]
        rc, out = s_client(port, args + ["-cert", d + "/client-frontend.crt", "-key",
                                         d + "/client-frontend.key", "-sess_out", sess],
                           stdin=http_req("/echo?resume=0"))
        check("HTTP/1.1 200 OK" in out, "%s: frontend via s_client: %r" % (flag, out[-300:]))
        rc, out = s_client(port, args + ["-sess_in", sess], stdin=http_req("/echo?resume=1"))
        h = accepted(out)
        check(h is not None and h[0] == "Reused", "%s: mTLS session not resumed: %r" % (flag, h))
        check("HTTP/1.1 200 OK" in out and ("x-fnproxy-client-id: %sfrontend" % SPIFFE) in out,
              "%s: resumed mTLS session lost its identity: %r" % (flag, out[-400:]))


@case()
def mtls_handshake_refusals(ctx):
    d, b, fp = start(ctx)
    port = fp.ports["mtls"]
    attempts = [("no certificate", None), ("expired", "client-expired"),
                ("rogue CA", "client-rogue")]
    seen = []
    before = {}
    for what, name in attempts:
        for v in ("1.2", "1.3"):
            cert = key = None
            if name:
                cert, key = d + "/%s.crt" % name, d + "/%s.key" % name
            sctx = client_ctx(d + "/ca.crt", cert, key, version=v)
            answer = None
            err = None
            t0 = time.monotonic()
            try:
                # In TLS 1.3 the client finishes first; the refusal comes as
                # an alert when it reads.
                c = tls_connect(ctx, port, sctx, timeout=5)
                c.send(build_request("GET", "/echo?who=%s" % (name or "nobody")))
                try:
                    answer = c.read_response(timeout=5)
                except Exception as e:  # closed: the failure we want
                    err = str(e)
            except (ssl.SSLError, OSError) as e:
                err = str(e)
            took = time.monotonic() - t0
            check(answer is None, "%s (TLS %s): got an HTTP answer %r" % (what, v, answer))
            check(took < 3, "%s (TLS %s): refused after %.1fs, not promptly" % (what, v, took))
            after = wait_errors(fp, "mtls", sum(before.values()) + 1)
            got = diff(after, before)
            check(sum(got.values()) == 1 and set(got) <= TLS_REASONS,
                  "%s (TLS %s): counted %r (want one documented reason)" % (what, v, got))
            if name is None:
                check_eq(got, {"no_cert": 1}, "%s (TLS %s) counted" % (what, v))
            else:
                check_eq(got, {"verify": 1}, "%s (TLS %s) counted" % (what, v))
            seen.append("%s/TLS%s: %s (%s)" % (what, v, list(got)[0], (err or "")[:80]))
            before = after
    check_eq(settle(b), b"", "bytes the backend received from refused clients")
    ctx.note("; ".join(seen))
    # The listener still serves a good client.
    r = tls_get(ctx, port, client_ctx(d + "/ca.crt", d + "/client-frontend.crt",
                                      d + "/client-frontend.key"))
    check_eq(r.status, 200, "frontend after the refusals")


# ---------------------------------------------------------------------------
# bad input


class Steady(threading.Thread):
    """A good TLS keep-alive client asking all the time."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.c = client
        self.ok = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.c.send(build_request("GET", "/echo?steady=%d" % self.ok))
                r = self.c.read_response(timeout=5)
                if r.status != 200:
                    self.errors.append("status %d" % r.status)
                    return
                self.ok += 1
            except Exception as e:
                self.errors.append("%s: %s" % (type(e).__name__, e))
                return
            time.sleep(0.01)


@case()
def bad_input_on_tls_port(ctx):
    d, b, fp = start(ctx)
    port = fp.ports["public"]
    sctx = client_ctx(d + "/ca.crt")
    steady = Steady(tls_connect(ctx, port, sctx))
    steady.start()
    # Plain HTTP: a readable 400, then close.
    t0 = time.monotonic()
    r, closed, err = raw_exchange(port, build_request("GET", "/echo?plain=1"), timeout=3)
    check(err is None, "plain HTTP to the TLS port: %s" % err)
    check_fnproxy_error(r, 400, "plain_http_to_tls_port", close=True)
    check_eq(r.version, "HTTP/1.1", "version of the 400")
    check(closed, "connection left open after the plain-HTTP 400")
    check(time.monotonic() - t0 < 1, "plain HTTP answered slowly")
    # Random bytes (first byte neither a TLS record type nor a letter).
    rnd = random.Random(4).randbytes(600)
    rnd = b"\x00" + rnd[1:]
    for what, data in (("random bytes", rnd),
                       ("a handshake record of garbage",
                        b"\x16\x03\x01\x02\x00" + random.Random(5).randbytes(512))):
        c = ctx.connect(port, timeout=5)
        t0 = time.monotonic()
        c.send(data)
        check(c.wait_closed(timeout=3), "%s: connection not closed" % what)
        check(time.monotonic() - t0 < 0.5, "%s: closed after %.2fs, not promptly"
              % (what, time.monotonic() - t0))
    # Half a ClientHello, then nothing: closed by handshake_timeout (1s).
    hello = client_hello()
    c = ctx.connect(port, timeout=5)
    t0 = time.monotonic()
    c.send(hello[:len(hello) // 2])
    check(c.wait_closed(timeout=4), "a stalled half ClientHello was not closed within 4s")
    took = time.monotonic() - t0
    check(0.8 <= took <= 2.5, "stalled handshake closed after %.2fs (handshake_timeout 1s)"
          % took)
    # A ClientHello trickled a byte every 0.2s: the timeout is for the whole
    # handshake, not for each read.
    c = ctx.connect(port, timeout=5)
    t0 = time.monotonic()
    sent = 0
    try:
        while sent < len(hello) and time.monotonic() - t0 < 4:
            c.send(hello[sent:sent + 1])
            sent += 1
            if not c.is_open(wait=0.2):
                break
    except OSError:
        pass
    took3 = time.monotonic() - t0
    check(sent < len(hello) and took3 <= 2.5,
          "a trickled ClientHello (%d of %d bytes in %.1fs) was not cut at handshake_timeout"
          % (sent, len(hello), took3))
    # Nothing at all after connecting: the same timeout.
    c = ctx.connect(port, timeout=5)
    t0 = time.monotonic()
    check(c.wait_closed(timeout=4), "a silent connection was not closed within 4s")
    took2 = time.monotonic() - t0
    check(0.8 <= took2 <= 2.5, "silent connection closed after %.2fs" % took2)
    got = wait_errors(fp, "public", 6)
    steady.stop.set()
    steady.join(10)
    check(not steady.errors, "the good TLS client was disturbed: %s" % steady.errors)
    check(steady.ok >= 20, "the good TLS client made only %d requests" % steady.ok)
    bad = set(got) - TLS_REASONS
    check(not bad, "undocumented reasons %s in %r" % (sorted(bad), got))
    check_eq(got.get("plain_http"), 1, "plain_http count in %r" % got)
    check_eq(got.get("timeout"), 3, "timeout count in %r" % got)
    check_eq(got.get("not_tls", 0) + got.get("protocol", 0), 2,
             "not_tls + protocol count in %r" % got)
    check_eq(sum(got.values()), 6, "handshake errors in all: %r" % got)
    rec = settle(b)
    check(b"plain=1" not in rec, "the plain-HTTP request reached the function")
    check_eq(tls_get(ctx, port, sctx).status, 200, "a new TLS client afterwards")
    ctx.note("steady client: %d requests; reasons %r" % (steady.ok, got))


@case()
def plain_http_any_method_gets_400(ctx):
    """Whatever the method, plain HTTP on a TLS port is answered with the
    readable 400, not a silent close."""
    d, b, fp = start(ctx)
    port = fp.ports["public"]
    wrong = []
    for m in ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT"):
        target = "localhost:443" if m == "CONNECT" else "/echo?method=" + m
        body = b"{}" if m in ("POST", "PUT", "PATCH") else None
        r, closed, err = raw_exchange(port, build_request(m, target, body=body), timeout=3)
        if r is None or r.status != 400 or \
                r.header("x-fnproxy-error") != "plain_http_to_tls_port" or not closed:
            wrong.append("%s -> %s" % (m, err or "%s %s closed=%s" % (
                r.status, r.header("x-fnproxy-error"), closed)))
    errs = wait_errors(fp, "public", 8)
    check(not wrong, "plain HTTP to the TLS port not answered 400 plain_http_to_tls_port: %s "
          "(handshake errors counted: %r)" % ("; ".join(wrong), errs))
    check_reasons(errs, {"plain_http": 8}, "after plain HTTP with 8 methods")
    check_eq(settle(b), b"", "bytes the backend received")


@case()
def abandoned_handshakes_counted_with_documented_reasons(ctx):
    """Clients that go away mid-handshake (a port probe, half a ClientHello,
    a cut record) are closed and, if counted, under a documented reason."""
    d, b, fp = start(ctx, record=False)
    port = fp.ports["public"]
    hello = client_hello()
    wrong = []
    before = {}
    for what, data in (("connect then close", b""),
                       ("half a ClientHello then close", hello[:len(hello) // 2]),
                       ("a truncated record then EOF", b"\x16\x03\x01\x00\x05abc")):
        c = ctx.connect(port, timeout=5)
        if data:
            c.send(data)
        c.shutdown_write()
        t0 = time.monotonic()
        check(c.wait_closed(timeout=2), "%s: fnproxy did not close within 2s" % what)
        took = time.monotonic() - t0
        c.close()
        time.sleep(0.2)
        after = tls_errors(fp, "public")
        got = diff(after, before)
        before = after
        bad = set(got) - TLS_REASONS
        if bad or "timeout" in got or took > 0.5:
            wrong.append("%s: closed after %.2fs, counted %r" % (what, took, got))
    check(not wrong, "abandoned handshakes closed late or counted under undocumented "
          "reasons (documented: %s): %s" % (", ".join(sorted(TLS_REASONS)), "; ".join(wrong)))
    check_eq(tls_get(ctx, port, client_ctx(d + "/ca.crt")).status, 200, "a good client after")


# ---------------------------------------------------------------------------
# reload and --check


@case()
def reload_rereads_certificates(ctx):
    a = make_certs(ctx, "pkiA")
    bdir = make_certs(ctx, "pkiB")  # another CA
    live = ctx.path("live")
    shutil.copytree(a, live)
    be = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(CONFIG, listeners=LISTENERS, D=live, B=be.port)
    port = fp.ports["public"]
    ctx_a, ctx_b = client_ctx(a + "/ca.crt"), client_ctx(bdir + "/ca.crt")
    keep = tls_connect(ctx, port, ctx_a)
    keep.send(build_request("GET", "/echo?keep=0"))
    check_eq(keep.read_response().status, 200, "keep-alive connection before the reload")
    old_der = keep.sock.getpeercert(binary_form=True)
    # A valid new pair from another CA.
    replace_file(bdir + "/server.crt", live + "/server.crt")
    replace_file(bdir + "/server.key", live + "/server.key")
    hup_and_wait(fp, r"config generation 2 in service", 1)
    r = tls_get(ctx, port, ctx_b)
    check_eq(r.status, 200, "new connection verified with the new CA")
    try:
        tls_get(ctx, port, ctx_a)
        fail("a new connection still verified with the old CA after the reload")
    except ssl.SSLCertVerificationError:
        pass
    c = tls_connect(ctx, port, ctx_b)
    with open(bdir + "/server.crt") as f:
        new_der = ssl.PEM_cert_to_DER_cert(f.read())
    check(c.sock.getpeercert(binary_form=True) == new_der, "new handshake: not the new cert")
    c.close()
    for i in range(1, 4):
        keep.send(build_request("GET", "/echo?keep=%d" % i))
        check_eq(keep.read_response().status, 200, "connection opened before the reload, "
                 "request %d after it" % i)
    check(keep.sock.getpeercert(binary_form=True) == old_der, "old connection's cert changed")
    # A key that does not match the certificate: refused, the old one kept.
    replace_file(a + "/server.key", live + "/server.key")
    hup_and_wait(fp, r"reload refused", 1)
    err = fp.stderr_text()
    line = [l for l in err.splitlines() if "reload refused" in l][-1]
    check("server.key" in line and "does not match" in line,
          "the refusal does not name the mismatched key: %r" % line)
    check(fp.alive(), "fnproxy exited on a refused reload")
    check("config generation 3" not in err, "a mismatched pair was put in service")
    for i in range(3):
        c = tls_connect(ctx, port, ctx_b)
        check(c.sock.getpeercert(binary_form=True) == new_der,
              "after the refused reload, handshake %d: not the previous cert" % i)
        c.send(build_request("GET", "/echo"))
        check_eq(c.read_response().status, 200, "request after the refused reload")
        c.close()
    keep.send(build_request("GET", "/echo?keep=9"))
    check_eq(keep.read_response().status, 200, "the first connection after both reloads")
    # An unreadable certificate file is refused too (with the key fixed).
    replace_file(bdir + "/server.key", live + "/server.key")
    os.unlink(live + "/wildcard.crt")
    hup_and_wait(fp, r"reload refused", 2)
    line = [l for l in fp.stderr_text().splitlines() if "reload refused" in l][-1]
    check("wildcard.crt" in line, "the refusal does not name the missing file: %r" % line)
    check_eq(tls_get(ctx, port, ctx_b).status, 200, "serving after the second refusal")


@case()
def check_refuses_unloadable_certificates(ctx):
    d = make_certs(ctx)
    good = ctx.render(CONFIG, {l: 19900 + i for i, l in enumerate(LISTENERS)}, 19899,
                      WORKERS=2, D=d, B=9)
    path = ctx.write_config(good, "good.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    check_eq(p.returncode, 0, "--check of a good TLS config (stderr %r)" % p.stderr[-300:])
    cases = [
        ("missing cert", d + "/server.crt", d + "/nope/server.crt", "nope/server.crt"),
        ("missing key", d + "/wildcard.key", d + "/missing.key", "missing.key"),
        ("missing client_ca", "client_ca: " + d + "/ca.crt", "client_ca: " + d + "/noca.crt",
         "noca.crt"),
        ("key of another cert", d + "/wildcard.key", d + "/server.key", "server.key"),
        ("not a certificate", d + "/server.crt", d + "/server.key", "server.key"),
    ]
    for what, old, new, named in cases:
        check(old in good, "config has %r" % old)
        text = good.replace(old, new, 1)
        path = ctx.write_config(text, "bad.yaml")
        p = ctx.run_fnproxy(["--check", "-c", path])
        err = p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 1, "--check with %s: exit status (stderr %r)" % (what, err))
        check(named in err, "--check with %s: message does not name %s: %r" % (what, named, err))
    # allowed_clients on a listener without client_ca cannot work.
    text = good.replace("      client_ca: %s/ca.crt\n" % d, "", 1)
    check(text != good, "config without client_ca")
    path = ctx.write_config(text, "noca.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    err = p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 1, "--check of allowed_clients without client_ca (%r)" % err)
    check("allowed_clients" in err and "client_ca" in err, "message: %r" % err)
    # Starting with a missing file fails the same way instead of serving.
    text = good.replace(d + "/server.crt", d + "/nope/server.crt", 1)
    path = ctx.write_config(text, "bad-start.yaml")
    p = ctx.run_fnproxy(["-c", path], timeout=10)
    check_eq(p.returncode, 1, "starting with a missing certificate: exit status")
    check("nope/server.crt" in p.stderr.decode(), "start-up message names the file: %r"
          % p.stderr.decode()[-300:])


# ---------------------------------------------------------------------------
# upstream_tls: fnproxy -> a TLS "function" (a second fnproxy terminating
# TLS in front of fnbackend)

INNER = """\
workers: 1
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: fn
    listen: 127.0.0.1:$PORT_fn
    tls:
      certificates:
        - { cert: $D/server.crt, key: $D/server.key }
        - { cert: $D/wildcard.crt, key: $D/wildcard.key }
functions:
  - name: inner
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: all, match: { listener: fn, path_prefix: / } }
"""

OUTER_FN = """\
  - name: %(name)s
    endpoints: [127.0.0.1:$T]
    upstream_tls: { %(tls)s }
    ingress:
      routes:
        - { name: %(name)s, match: { listener: public, host: %(name)s.test, path_prefix: / },
            timeout: 5s, connect_timeout: 1s }
"""


@case()
def upstream_tls_to_a_tls_function(ctx):
    d = make_certs(ctx)
    b = ctx.start_backend()
    inner = ctx.start_fnproxy(INNER, workers=1, listeners=("fn",), D=d, B=b.port)
    fns = [("good", "ca: $D/ca.crt, server_name: localhost"),
           ("sni", "ca: $D/ca.crt, server_name: api.fn.test"),
           ("ip", "ca: $D/ca.crt"),
           ("badca", "ca: $D/rogue-ca.crt, server_name: localhost"),
           ("badname", "ca: $D/ca.crt, server_name: wrong.example")]
    outer_cfg = ("workers: 1\nadmin: { listen: 127.0.0.1:$APORT }\nlisteners:\n"
                 "  - { name: public, listen: 127.0.0.1:$PPORT }\nfunctions:\n" +
                 "".join(OUTER_FN % {"name": n, "tls": t} for n, t in fns))
    outer = ctx.start_fnproxy(outer_cfg, workers=1, D=d, T=inner.port)

    def get(name, n=0):
        return request(outer.port, "GET", "/echo?fn=%s&n=%d" % (name, n), host=name + ".test")

    r = get("good")
    check(not (r.status == 400 and r.header("x-fnproxy-error") == "plain_http_to_tls_port"),
          "fnproxy spoke plain HTTP to the TLS function despite upstream_tls (the function "
          "answered 400 plain_http_to_tls_port): %r" % r)
    check_eq(r.status, 200, "through upstream_tls (%r)" % r)
    line, hdrs, _ = parse_echo(r.body)
    check_eq(hget(hdrs, "x-forwarded-proto"), ["https"],
             "the TLS function saw https (the hop was TLS)")
    check_eq(hget(hdrs, "x-forwarded-for"), ["127.0.0.1, 127.0.0.1"], "two hops")
    for i in range(1, 6):
        check_eq(get("good", i).status, 200,
                 "upstream_tls request %d" % i)
    # Pooled: sequential requests reuse one TLS connection to the function.
    active = metric_value(inner.metrics(), "fnproxy_connections_active", {"listener": "fn"})
    check_eq(active, 1.0, "connections open to the TLS function after 6 sequential requests")
    r = get("sni")
    check_eq(r.status, 200, "server_name api.fn.test (wildcard cert chosen by SNI): %r" % r)
    r = get("ip")
    check_eq(r.status, 200, "no server_name: the endpoint IP checked against IP SANs: %r" % r)
    codes = []
    for name, want in (("badca", "verify"), ("badname", "mismatch")):
        r = get(name)
        check(r.status == 502 and r.header("x-fnproxy-error") in UPSTREAM_TLS_ERRORS,
              "%s: want 502 with one of %s, got %r" % (name, UPSTREAM_TLS_ERRORS, r))
        check_fnproxy_error(r, 502, r.header("x-fnproxy-error"))
        check(want in r.json()["message"], "%s: the 502 does not say why: %r"
              % (name, r.json()))
        codes.append("%s: %s (%s)" % (name, r.header("x-fnproxy-error"), r.json()["message"]))
        v = metric_value(outer.metrics(), "fnproxy_upstream_errors_total",
                         {"function": name, "reason": "tls"})
        check(v is not None and v >= 1, "%s: not counted as upstream error reason=tls" % name)
    rec = settle(b)
    check(b"fn=badca" not in rec and b"fn=badname" not in rec,
          "a request reached the function over a TLS connection that failed verification")
    # The TLS function saw the outer fnproxy abort those handshakes.
    errs = tls_errors(inner, "fn")
    check(set(errs) <= TLS_REASONS and sum(errs.values()) >= 2,
          "inner handshake errors %r" % errs)
    # Nothing fnproxy sent over upstream_tls was plain HTTP.
    check(errs.get("plain_http", 0) == 0,
          "fnproxy spoke plain HTTP to the TLS function despite upstream_tls: the function "
          "counted %d plain_http handshake errors (%r)" % (errs.get("plain_http", 0), errs))
    ctx.note("; ".join(codes) + "; inner counted %r" % errs)


# ---------------------------------------------------------------------------
# sslscan


def _sslscan():
    """The sslscan executable. scripts/deps.sh installs it (`make test` runs
    deps.sh first); a case never installs anything itself, and a missing
    sslscan fails the case rather than letting it pass untested."""
    exe = shutil.which("sslscan")
    if not exe:
        fail("sslscan is not installed (not found on PATH %r), so the TLS listener could not "
             "be scanned; install it with `sh scripts/deps.sh` (which `make test` runs first)"
             % os.environ.get("PATH", ""))
    return exe


@case(timeout=150)
def sslscan_no_weak_protocols_ciphers_or_renegotiation(ctx):
    exe = _sslscan()
    d, b, fp = start(ctx, record=False)
    xml = ctx.path("sslscan.xml")
    p = subprocess.run([exe, "--no-colour", "--xml=" + xml, "%s:%d" % (HOST, fp.ports["public"])],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    check_eq(p.returncode, 0, "sslscan exit status (%s)" % p.stderr.decode()[-300:])
    root = ET.parse(xml).getroot()
    test = root.find("ssltest")
    check(test is not None, "no <ssltest> in sslscan XML")
    protos = {(e.get("type"), e.get("version")): e.get("enabled")
              for e in test.findall("protocol")}
    for v in ("ssl/2", "ssl/3", "tls/1.0", "tls/1.1"):
        t, ver = v.split("/")
        check(protos.get((t, ver)) != "1", "%s enabled according to sslscan (%r)" % (v, protos))
    check_eq(protos.get(("tls", "1.2")), "1", "TLS 1.2 enabled")
    check_eq(protos.get(("tls", "1.3")), "1", "TLS 1.3 enabled")
    ciphers = [(c.get("sslversion"), c.get("cipher")) for c in test.findall("cipher")
               if c.get("status") in ("accepted", "preferred")]
    check(ciphers, "sslscan saw no accepted cipher")
    for ver, name in ciphers:
        check(ver in ("TLSv1.2", "TLSv1.3"), "cipher %s accepted with %s" % (name, ver))
        check("CBC" not in name and "SHA1" not in name and not name.endswith("-SHA")
              and "RC4" not in name and "3DES" not in name and "NULL" not in name,
              "weak cipher accepted: %s %s" % (ver, name))
        if ver == "TLSv1.2":
            check(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name),
                  "TLS 1.2 cipher without ECDHE and AEAD accepted: %s" % name)
        else:
            check(name.startswith("TLS_"), "odd TLS 1.3 suite %s" % name)
    reneg = test.find("renegotiation")
    check(reneg is not None, "no renegotiation result from sslscan")
    insecure = reneg.get("supported") == "1" and reneg.get("secure") != "1"
    check(not insecure, "insecure renegotiation supported (%r)" % reneg.attrib)
    check(reneg.get("supported") != "1", "renegotiation supported (%r)" % reneg.attrib)
    comp = test.find("compression")
    check(comp is None or comp.get("supported") != "1", "TLS compression supported")
    hb = [h.attrib for h in test.findall("heartbleed") if h.get("vulnerable") == "1"]
    check(not hb, "heartbleed: %r" % hb)
    ctx.note("sslscan: %s; renegotiation %r" % (", ".join("%s %s" % c for c in ciphers),
                                                reneg.attrib))
