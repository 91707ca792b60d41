"""Egress: each function's forward proxy (functions[].egress, a listener
named "<function>.egress"): absolute-form HTTP and CONNECT tunnels allowed
by the function's rules, SSRF defences decided on the address that is
dialled, name resolution (hosts file, DNS, its failures), TLS origination,
report mode, metrics, the access log and reload.

Every case here runs in a network namespace of its own whose only
interface is lo (@case(netns=True), see run.py), with the hosts table
HOSTS below as its /etc/hosts and 127.0.0.1 as its resolver: test names
map to 127.0.1.x, where the destinations listen on fixed ports (8080,
8443; the namespace is the case's own, so nothing else has them), and to
private addresses (10.0.0.1, 169.254.169.254, put on the namespace's lo)
where a listener waits to show that fnproxy never dialled them. No byte
leaves loopback, whatever fnproxy does.

Destinations are fnbackend (HTTP; it echoes what it got, see parse_echo),
TunnelPeer below (raw TCP, for tunnels), a second fnproxy terminating TLS
in front of fnbackend (the TLS destination: its wildcard certificate
covers *.fn.test) and dnsserver.DNSServer (UDP DNS in a thread of the
case). The first cases check those pieces themselves.
"""

import errno
import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import time

import dnsserver
from harness import (SAN, RawServer, Sender, build_request, case, check, check_eq, check_fnproxy_error,
                     curl, fail, free_port, hget, make_certs, metric_value, parse_echo, request,
                     settle, wait_for, wait_until)

HOSTS = {
    "api.test": "127.0.1.1",        # rule api; fnbackend "api" on :8080
    "x.svc.test": "127.0.1.2",      # rule wild (*.svc.test); fnbackend "wild"
    "tls.fn.test": "127.0.1.3",     # rule tlsdst: the TLS destination on :8443
    "secure.fn.test": "127.0.1.3",  # rule orig (tls: originate)
    "rogue.fn.test": "127.0.1.3",   # rule origrogue (originate, the wrong CA)
    "wrong.test": "127.0.1.3",      # rule origbad (originate; the cert has no such name)
    "ro.test": "127.0.1.4",         # rule ro (GET, /v1/ only)
    "other.test": "127.0.1.5",      # no rule
    "tun.svc.test": "127.0.1.6",    # rule wild; TunnelPeer
    "close.svc.test": "127.0.1.7",  # rule wild; a raw socket of the case
    "dead.svc.test": "127.0.1.9",   # rule wild; nothing listens
    "stall.svc.test": "127.0.1.8",  # rule stall (connect_timeout_answers_504): never accepts
    "ten.internal.test": "10.0.0.1",           # rule internal; private
    "meta.internal.test": "169.254.169.254",   # rule internal; link-local (metadata)
    "lo5.internal.test": "127.0.0.5",          # rule internal; loopback, no cidr rule
    "v6.internal.test": "::1",                 # rule internal; IPv6 loopback
    "self.test": "127.0.0.1",       # rule self: fnproxy's own listeners
}
LO_ADDRS = ("10.0.0.1/32", "169.254.169.254/32")
NS = dict(netns=True, hosts=HOSTS, lo_addrs=LO_ADDRS)

RULES = """\
        - { name: api, host: api.test, ports: [8080] }
        - { name: wild, host: "*.svc.test", ports: [8080] }
        - { name: ro, host: ro.test, ports: [8080], methods: [GET], paths: [/v1/] }
        - { name: internal, host: "*.internal.test", ports: [8080] }
        - { name: lab, cidr: 127.0.1.0/24, ports: [8080, 8443] }
"""
TLS_RULES = """\
        - { name: tlsdst, host: tls.fn.test, ports: [8443] }
        - { name: orig, host: secure.fn.test, ports: [8443], tls: originate, ca: $D/ca.crt }
        - { name: origbad, host: wrong.test, ports: [8443], tls: originate, ca: $D/ca.crt }
        - { name: origrogue, host: rogue.fn.test, ports: [8443], tls: originate,
            ca: $D/rogue-ca.crt }
"""
SELF_RULES = """\
        - { name: self, host: self.test, ports: [$APORT, $PPORT, $PORT_egress] }
        - { name: selfip, cidr: 127.0.0.1/32, ports: [$APORT, $PPORT, $PORT_egress] }
"""
DNS_BLOCK = ('dns: { servers: ["127.0.0.1:$DNSPORT"], timeout: %s,'
             ' cache: { min_ttl: 0s, max_ttl: 300s, entries: 1024 } }\n')

DENY_REASONS = {"no_rule", "private_address", "own_listener"}
BIG = (4 << 20) if SAN else (16 << 20)


def egress_config(rules=RULES, mode="enforce", dns_timeout=None, access_log=None,
                  idle="5s"):
    """One function "app" with an ingress route on "public" (to $BPORT) and
    an egress listener on $PORT_egress with the given allow rules. With
    dns_timeout, names not in the hosts file are asked of 127.0.0.1:$DNSPORT."""
    return (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "drain_timeout: 2s\n"
        + (DNS_BLOCK % dns_timeout if dns_timeout else "")
        + ("access_log: %s\n" % access_log if access_log else "")
        + "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 2s }\n"
        "functions:\n"
        "  - name: app\n"
        "    endpoints: [127.0.0.1:$BPORT]\n"
        "    ingress: { routes: [ { name: r, match: { listener: public }, timeout: 5s } ] }\n"
        "    egress:\n"
        "      listen: 127.0.0.1:$PORT_egress\n"
        "      mode: %s\n"
        "      deny_private: true\n"
        "      tunnel_idle_timeout: %s\n"
        "      allow:\n" % (mode, idle)
        + rules
    )


def start_egress(ctx, config=None, workers=1, bport=None, **subst):
    """fnproxy with egress_config() (or config); .eport is the egress
    listener. bport: the app's ingress endpoint (default: a dead port)."""
    fp = ctx.start_fnproxy(config or egress_config(), workers=workers,
                           listeners=("public", "egress"),
                           BPORT=bport or free_port(), **subst)
    fp.eport = fp.ports["egress"]
    return fp


def dest(ctx, name, ip, port=8080):
    """fnbackend listening on ip:port (an address of the namespace)."""
    return ctx.start_backend(name=name, listen=["%s:%d" % (ip, port)])


def via(port, url, method="GET", headers=None, body=None, host=None, timeout=10):
    """One absolute-form request to the egress listener on a fresh
    connection; Host is the URL's authority unless given."""
    if host is None:
        host = url.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0]
    return request(port, method, url, headers=headers, body=body, host=host, timeout=timeout)


def check_denied(r, host, port, reason, what):
    """403 egress_denied with the JSON body the brief specifies."""
    try:
        check_fnproxy_error(r, 403, "egress_denied")
    except AssertionError as e:
        fail("%s: %s" % (what, e))
    j = r.json()
    got_port = j.get("port")
    check(type(got_port) in (int, str) and str(got_port) == str(port),
          "%s: JSON port %r, want %d (%r)" % (what, got_port, port, j))
    check_eq((j.get("function"), j.get("host"), j.get("reason")), ("app", host, reason),
             "%s: JSON function, host, reason (%r)" % (what, j))


def check_error(r, status, code, what):
    try:
        check_fnproxy_error(r, status, code)
    except AssertionError as e:
        fail("%s: %s" % (what, e))


def check_untouched(what, *dests):
    """Nothing reached these destinations (fnbackend records, TunnelPeer
    connection counts)."""
    time.sleep(0.3)  # anything forwarded late arrives by now
    for d in dests:
        if isinstance(d, TunnelPeer):
            check_eq(d.conns, 0, "%s: connections that reached %s" % (what, d.addr))
        else:
            rec = d.record()
            check(rec == b"", "%s: %s (%s) received %r" % (what, d.name, d.addr, rec[:300]))


def connect_tunnel(ctx, port, target, extra=b""):
    """Sends CONNECT target; returns (client, head). A non-200 answer's
    body is read too."""
    c = ctx.connect(port)
    c.send(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + target.encode() +
           b"\r\n\r\n" + extra)
    r = c.read_head()
    if r.status != 200:
        c.read_body(r)
    return c, r


def check_established(c, r, what):
    check(r.status == 200, "%s: CONNECT answered %r" % (what, r))
    check_eq(r.reason, "Connection established", "%s: reason phrase" % what)
    check(r.header("content-length") is None and r.header("transfer-encoding") is None,
          "%s: a 2xx to CONNECT must not carry Content-Length or Transfer-Encoding: %r"
          % (what, r.headers))


def curl_output(what, out):
    """curl -i output with CRLF as LF and the proxy's answer to curl's
    CONNECT, if there was one, checked and cut off: the destination's."""
    out = out.replace(b"\r\n", b"\n")
    if out.startswith(b"HTTP/1.1 200 Connection established\n"):
        head, sep, rest = out.partition(b"\n\n")
        check(sep and rest.startswith(b"HTTP/"), "%s: nothing after the CONNECT answer: %r"
              % (what, out[:300]))
        return rest
    check(not out.startswith(b"HTTP/1.1 200 Connection"), "%s: CONNECT answered %r"
          % (what, out[:100]))
    return out


def pattern(n):
    """n bytes of a 251-byte cycle (a prime, so a dropped or doubled piece
    shows wherever it happens)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


class TunnelPeer:
    """A raw TCP destination for tunnels. Each connection starts with a
    command line:
      ECHO\\n     every later byte is sent back as it comes; at EOF it
                 closes;
      SINK N\\n   everything up to the client's EOF (its half-close) is
                 counted and hashed, then "<count> <sha256>\\n" and
                 pattern(N) are sent and it closes.
    .conns counts connections accepted, .ended those that are over."""

    def __init__(self, host, port=8080):
        self.ended = 0
        self.errors = []
        self.server = RawServer(self._serve, host=host, port=port)
        self.addr = self.server.addr

    @property
    def conns(self):
        return self.server.conns

    def _serve(self, s, server):
        s.settimeout(120)
        try:
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            line, rest = buf.split(b"\n", 1)
            if line == b"ECHO":
                if rest:
                    s.sendall(rest)
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    s.sendall(chunk)
            elif line.startswith(b"SINK "):
                n = int(line[5:])
                h = hashlib.sha256(rest)
                count = len(rest)
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    count += len(chunk)
                s.sendall(b"%d %s\n" % (count, h.hexdigest().encode()) + pattern(n))
            else:
                self.errors.append("unknown command %r" % line[:100])
        except OSError as e:
            self.errors.append(str(e))
        finally:
            s.close()  # before it counts as ended (RawServer's close then does nothing)
            with server.lock:
                self.ended += 1

    def close(self):
        self.server.close()


INNER_TLS = """\
workers: 1
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: fn
    listen: 127.0.1.3:8443
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


def start_tls_dest(ctx, d):
    """The TLS destination on 127.0.1.3:8443: fnproxy terminating TLS
    (certificate *.fn.test by SNI, else localhost) in front of fnbackend
    "tlsfn". Returns (backend, inner fnproxy)."""
    b = ctx.start_backend(name="tlsfn")
    inner = ctx.start_fnproxy(INNER_TLS, workers=1, listeners=(), D=d, B=b.port)
    return b, inner


def access_entries(path, n, timeout=3):
    """The access log's lines as dicts, once there are at least n."""
    def lines():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return [ln for ln in data.split(b"\n")[:-1]]
    got = wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(lines()), timeout) or lines()
    check(len(got) >= n, "access log has %d lines, want %d: %r" % (len(got), n, got[-3:]))
    out = []
    for ln in got:
        try:
            out.append(json.loads(ln))
        except ValueError:
            fail("access log line is not JSON: %r" % ln[:300])
    return out


def egress_metric(fp, name, **labels):
    labels.setdefault("direction", "egress")
    labels.setdefault("function", "app")
    return metric_value(fp.metrics(), name, labels)


def hup_and_wait(fp, generation, timeout=5):
    fp.send_signal(signal.SIGHUP)
    want = "config generation %d in service" % generation
    ok = wait_for(lambda: want in fp.stderr_text(), timeout)
    check(ok, "no %r in stderr after SIGHUP: %r" % (want, fp.stderr_text()[-800:]))


# ---------------------------------------------------------------------------
# the pieces the cases stand on


@case(**NS)
def netns_only_loopback(ctx):
    """The case runs where lo is the only interface and there is no route
    off the machine; the namespace's hosts file and resolver are in force;
    fnbackend listens on a namespace address; the extra lo addresses exist."""
    check_eq([n for _, n in socket.if_nameindex()], ["lo"], "interfaces in the namespace")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        # TEST-NET-1: no interface but lo, so no route: refused locally,
        # nothing sent anywhere.
        err = s.connect_ex(("192.0.2.1", 80))
    finally:
        s.close()
    check_eq(err, errno.ENETUNREACH, "connect to 192.0.2.1 (no route out)")
    for name, addr in (("api.test", "127.0.1.1"), ("ten.internal.test", "10.0.0.1"),
                       ("meta.internal.test", "169.254.169.254")):
        got = sorted({ai[4][0] for ai in socket.getaddrinfo(name, 8080, socket.AF_INET)})
        check_eq(got, [addr], "getaddrinfo(%s) through the namespace's /etc/hosts" % name)
    with open("/etc/resolv.conf") as f:
        check_eq(f.read().split(), ["nameserver", "127.0.0.1"], "/etc/resolv.conf")
    b = dest(ctx, "api", "127.0.1.1")
    check_eq(b.addr, "127.0.1.1:8080", "backend address")
    for a in ("10.0.0.1", "169.254.169.254"):
        t = socket.socket()
        t.bind((a, 0))  # fails unless the address is on lo
        t.close()
    # fnbackend on 127.0.1.1:8080 answers.
    s = socket.create_connection(("127.0.1.1", 8080), timeout=5)
    try:
        s.sendall(build_request("GET", "/echo", host="api.test:8080"))
        data = s.recv(65536)
    finally:
        s.close()
    check(data.startswith(b"HTTP/1.1 200") and b"x-backend: api" in data.lower(),
          "fnbackend on 127.0.1.1:8080: %r" % data[:200])


@case(**NS)
def dns_server_answers(ctx):
    """dnsserver.DNSServer: A/AAAA with their TTLs, NODATA, NXDOMAIN,
    silent and delayed modes, and glibc's resolver (through the
    namespace's resolv.conf, so on port 53) accepting its answers."""
    d = dnsserver.DNSServer({"a.test": [("127.0.1.1", 30), ("127.0.1.2", 7)],
                             "six.test": [("::1", 5)]})
    try:
        check_eq(dnsserver.query(d.port, "a.test"), (0, [("127.0.1.1", 30), ("127.0.1.2", 7)]),
                 "A a.test")
        check_eq(dnsserver.query(d.port, "A.Test."), (0, [("127.0.1.1", 30), ("127.0.1.2", 7)]),
                 "A A.Test.")
        check_eq(dnsserver.query(d.port, "a.test", "AAAA"), (0, []), "AAAA a.test (NODATA)")
        check_eq(dnsserver.query(d.port, "six.test", "AAAA"), (0, [("::1", 5)]), "AAAA six.test")
        check_eq(dnsserver.query(d.port, "nx.test"), (3, []), "A nx.test (NXDOMAIN)")
        check_eq(d.asked("a.test"), 3, "queries recorded for a.test")
        d.mode = "silent"
        try:
            dnsserver.query(d.port, "a.test", timeout=0.5)
            fail("the silent server answered")
        except socket.timeout:
            pass
        check_eq(d.asked("a.test"), 4, "the silent server still records the query")
        d.mode, d.delay = "delay", 0.4
        t0 = time.monotonic()
        check_eq(dnsserver.query(d.port, "a.test", timeout=3)[0], 0, "delayed answer")
        check(time.monotonic() - t0 >= 0.35, "the delayed answer came after %.2fs"
              % (time.monotonic() - t0))
    finally:
        d.close()
    # A real resolver: glibc via /etc/resolv.conf (nameserver 127.0.0.1:53).
    d53 = dnsserver.DNSServer({"glibc.test": [("127.0.1.7", 30)]}, port=53)
    try:
        got = sorted({ai[4][0] for ai in socket.getaddrinfo("glibc.test", 80, socket.AF_INET)})
        check_eq(got, ["127.0.1.7"], "getaddrinfo(glibc.test) answered by the test server")
        try:
            socket.getaddrinfo("nothing.test", 80, socket.AF_INET)
            fail("getaddrinfo(nothing.test) resolved")
        except socket.gaierror as e:
            check_eq(e.errno, socket.EAI_NONAME, "getaddrinfo(nothing.test) error")
    finally:
        d53.close()


@case(**NS)
def tls_destination_and_tunnel_peer(ctx):
    """The TLS destination on 127.0.1.3:8443 verifies as tls.fn.test
    against the test CA (Python ssl and curl) and not as wrong.test; the
    TunnelPeer echoes and sinks."""
    d = make_certs(ctx)
    b, _ = start_tls_dest(ctx, d)
    sc = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    raw = socket.create_connection(("tls.fn.test", 8443), timeout=5)
    s = sc.wrap_socket(raw, server_hostname="tls.fn.test")
    try:
        s.sendall(build_request("GET", "/echo?self", host="tls.fn.test:8443",
                                headers=[("Connection", "close")]))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    check(data.startswith(b"HTTP/1.1 200") and b"GET /echo?self HTTP/1.1" in data,
          "GET over TLS to the destination: %r" % data[:300])
    raw = socket.create_connection(("127.0.1.3", 8443), timeout=5)
    try:
        sc.wrap_socket(raw, server_hostname="wrong.test").close()
        fail("the TLS destination verified as wrong.test")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        raw.close()
    p = curl(["-i", "--cacert", os.path.join(d, "ca.crt"), "https://secure.fn.test:8443/echo"])
    check_eq(p.returncode, 0, "curl https://secure.fn.test:8443 (%s)" % p.stderr.decode())
    check(p.stdout.startswith(b"HTTP/1.1 200"), "curl: %r" % p.stdout[:200])
    check(b"GET /echo?self" in b.record(), "the destination's backend got the request")

    t = TunnelPeer("127.0.1.6")
    s = socket.create_connection(("127.0.1.6", 8080), timeout=5)
    s.sendall(b"ECHO\nhello")
    check_eq(s.recv(100), b"hello", "ECHO")
    s.close()
    s = socket.create_connection(("127.0.1.6", 8080), timeout=5)
    s.sendall(b"SINK 1000\nabc")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    check_eq(data, b"3 " + hashlib.sha256(b"abc").hexdigest().encode() + b"\n" + pattern(1000),
             "SINK")
    wait_until(lambda: t.ended == 2, 3, "both peer connections to end")
    check_eq((t.conns, t.errors), (2, []), "peer connections and errors")


# ---------------------------------------------------------------------------
# absolute-form HTTP


@case(**NS)
def absolute_form_forwarded_origin_form(ctx):
    """GET http://api.test:8080/... reaches api.test's address in origin
    form, Host taken from the target, hop-by-hop and Proxy-* headers gone;
    keep-alive to the client and to the destination; a second destination
    on the same client connection gets its own upstream connection."""
    api = dest(ctx, "api", "127.0.1.1")
    wild = dest(ctx, "wild", "127.0.1.2")
    fp = start_egress(ctx)
    c = ctx.connect(fp.eport)
    c.send(build_request("GET", "http://api.test:8080/echo?q=1", host=None, headers=[
        ("Host", "api.test:8080"), ("Proxy-Authorization", "Basic dTpw"),
        ("Proxy-Connection", "keep-alive"), ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "secret"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
        ("X-Keep", "yes")]))
    r1 = c.read_response()
    check(r1.status == 200, "allowed GET: %r" % r1)
    check_eq(r1.header("x-backend"), "api", "the destination that answered")
    line, hdrs, _ = parse_echo(r1.body)
    check_eq(line, "GET /echo?q=1 HTTP/1.1", "request line at the destination")
    check_eq(hget(hdrs, "host"), ["api.test:8080"], "Host at the destination")
    for h in ("proxy-authorization", "proxy-connection", "x-hop", "keep-alive", "te"):
        check_eq(hget(hdrs, h), [], "%s at the destination (hop-by-hop)" % h)
    check_eq(hget(hdrs, "x-keep"), ["yes"], "an end-to-end header")
    rec = api.record()
    check(b"proxy-" not in rec.lower() and b"http://" not in rec,
          "the destination received Proxy-* or an absolute URL: %r" % rec[:400])

    # Keep-alive: the same client connection, a POST with a body.
    c.send(build_request("POST", "http://api.test:8080/echo", host="api.test:8080",
                         body=b"hello egress"))
    r2 = c.read_response()
    check(r2.status == 200, "second request on the connection: %r" % r2)
    line, hdrs, body = parse_echo(r2.body)
    check_eq((line, body), ("POST /echo HTTP/1.1", b"hello egress"), "POST forwarded")
    check_eq(r2.header("x-backend-conn"), r1.header("x-backend-conn"),
             "the destination connection was reused (x-backend-conn)")

    # Another destination on the same client connection.
    c.send(build_request("GET", "http://x.svc.test:8080/echo", host="x.svc.test:8080"))
    r3 = c.read_response()
    check(r3.status == 200, "GET x.svc.test on the same connection: %r" % r3)
    check_eq(r3.header("x-backend"), "wild", "x.svc.test answered by its own address")
    check_eq(hget(parse_echo(r3.body)[1], "host"), ["x.svc.test:8080"], "Host of x.svc.test")

    # Host differs from the target: the target wins (RFC 9112 3.2.2).
    c.send(build_request("GET", "http://api.test:8080/echo?h", host="other.test"))
    r4 = c.read_response()
    check(r4.status == 200, "absolute-form with a different Host: %r" % r4)
    check_eq(r4.header("x-backend"), "api", "answered by the target, not the Host")
    check_eq(hget(parse_echo(r4.body)[1], "host"), ["api.test:8080"],
             "Host replaced by the target's")

    # An IP literal allowed by the cidr rule; case in the name ignored.
    r = via(fp.eport, "http://127.0.1.1:8080/echo?ip")
    check(r.status == 200 and r.header("x-backend") == "api", "IP literal: %r" % r)
    check_eq(hget(parse_echo(r.body)[1], "host"), ["127.0.1.1:8080"], "Host of an IP literal")
    r = via(fp.eport, "http://API.Test:8080/echo?case")
    check(r.status == 200 and r.header("x-backend") == "api", "API.Test: %r" % r)
    # No path: origin form "/" (RFC 9112 3.2.1), the query kept.
    r = via(fp.eport, "http://api.test:8080?nopath=1")
    check(r.status == 200 and r.header("x-backend") == "api", "URL without a path: %r" % r)
    check(b"\r\nGET /?nopath=1 HTTP/1.1\r\n" in b"\r\n" + api.record(),
          "a URL without a path was not forwarded as GET /?nopath=1: %r" % api.record()[-300:])
    check(wild.record().count(b"GET /echo HTTP/1.1") == 1, "wild got one request")


@case(**NS)
def denied_no_rule(ctx):
    """No rule for the host, the port, the method or the path: 403
    egress_denied (reason no_rule) and nothing reaches the destination."""
    other = dest(ctx, "other", "127.0.1.5")
    api = dest(ctx, "api", "127.0.1.1")
    ro = dest(ctx, "ro", "127.0.1.4")
    fp = start_egress(ctx)
    check_denied(via(fp.eport, "http://other.test:8080/echo"), "other.test", 8080, "no_rule",
                 "other.test (no rule)")
    check_denied(via(fp.eport, "http://api.test:9090/echo"), "api.test", 9090, "no_rule",
                 "api.test:9090 (port not in the rule)")
    check_denied(via(fp.eport, "http://api.test/echo"), "api.test", 80, "no_rule",
                 "api.test with no port (80)")
    check_denied(via(fp.eport, "http://svc.test:8080/echo"), "svc.test", 8080, "no_rule",
                 "svc.test (*.svc.test is names below it)")
    check_denied(via(fp.eport, "http://ro.test:8080/v1/x", method="POST", body=b"x"),
                 "ro.test", 8080, "no_rule", "POST to ro.test (GET only)")
    check_denied(via(fp.eport, "http://ro.test:8080/v2/x"), "ro.test", 8080, "no_rule",
                 "GET ro.test/v2/ (paths /v1/ only)")
    check_untouched("denied requests", other, api, ro)
    r = via(fp.eport, "http://ro.test:8080/v1/x")
    check(r.status == 200 and r.header("x-backend") == "ro", "GET ro.test/v1/x: %r" % r)


@case(**NS)
def denied_private_addresses(ctx):
    """Names allowed by a host rule that resolve to private, link-local or
    loopback addresses no cidr rule names: 403 private_address, and the
    listener waiting on that address sees no connection. IP literals with
    no cidr rule: 403 no_rule."""
    ten = dest(ctx, "ten", "10.0.0.1")
    meta = dest(ctx, "meta", "169.254.169.254")
    lo5 = dest(ctx, "lo5", "127.0.0.5")
    fp = start_egress(ctx)
    for name in ("ten.internal.test", "meta.internal.test", "lo5.internal.test",
                 "v6.internal.test"):
        check_denied(via(fp.eport, "http://%s:8080/latest/meta-data/" % name), name, 8080,
                     "private_address", name)
    for lit, host in (("10.0.0.1", "10.0.0.1"), ("169.254.169.254", "169.254.169.254"),
                      ("127.0.0.5", "127.0.0.5")):
        check_denied(via(fp.eport, "http://%s:8080/latest/meta-data/" % lit), host, 8080,
                     "no_rule", "IP literal %s" % lit)
    for lit in ("[::1]", "[::ffff:10.0.0.1]", "[::ffff:a00:1]"):
        r = via(fp.eport, "http://%s:8080/x" % lit)
        check_error(r, 403, "egress_denied", "IPv6 literal %s" % lit)
        check(r.json().get("reason") in ("no_rule", "private_address"),
              "reason for %s: %r" % (lit, r.json()))
    # CONNECT too.
    for name in ("ten.internal.test", "meta.internal.test", "lo5.internal.test"):
        c, r = connect_tunnel(ctx, fp.eport, "%s:8080" % name)
        check_denied(r, name, 8080, "private_address", "CONNECT %s" % name)
        check(c.wait_closed(3), "CONNECT %s: connection left open after the 403" % name)
    check_untouched("private destinations", ten, meta, lo5)


@case(**NS)
def denied_own_listeners(ctx):
    """Even with rules that name them, fnproxy's own listeners and admin
    address are refused (reason own_listener): no loops, no admin access
    from the function."""
    app = ctx.start_backend(name="app")
    fp = start_egress(ctx, egress_config(RULES + SELF_RULES), bport=app.port)
    a, p, e = fp.admin_port, fp.ports["public"], fp.eport
    for url, host, port in (("http://self.test:%d/metrics" % a, "self.test", a),
                            ("http://127.0.0.1:%d/ready" % a, "127.0.0.1", a),
                            ("http://self.test:%d/echo" % p, "self.test", p),
                            ("http://127.0.0.1:%d/echo" % p, "127.0.0.1", p),
                            ("http://self.test:%d/x" % e, "self.test", e),
                            ("http://127.0.0.1:%d/x" % e, "127.0.0.1", e)):
        check_denied(via(fp.eport, url), host, port, "own_listener", url)
    for target, host, port in (("127.0.0.1:%d" % a, "127.0.0.1", a),
                               ("self.test:%d" % p, "self.test", p)):
        c, r = connect_tunnel(ctx, fp.eport, target)
        check_denied(r, host, port, "own_listener", "CONNECT " + target)
    check_untouched("requests to fnproxy's own public listener", app)
    check_eq(egress_metric(fp, "fnproxy_policy_denials_total", reason="own_listener"), 8.0,
             'fnproxy_policy_denials_total{reason="own_listener"}')


@case(**NS)
def malformed_targets(ctx):
    """Targets with numeric IPv4 forms, userinfo, percent-encoding, a
    backslash, a bad or empty port or host: 400 bad_target (a backslash is
    refused by the HTTP parser first, as bad_request, which is as good);
    origin form on the egress listener: 400 proxy_request_expected.
    Nothing forwarded."""
    api = dest(ctx, "api", "127.0.1.1")
    other = dest(ctx, "other", "127.0.1.5")
    fp = start_egress(ctx)
    bad = ["http://127.1:8080/echo", "http://0x7f.0.1.1:8080/echo", "http://0x7f.1/echo",
           "http://2130706433/echo", "http://2130706689:8080/echo",
           "http://0177.0.1.1:8080/echo", "http://127.0.1.01:8080/echo",
           "http://u@api.test:8080/echo", "http://u:p@api.test:8080/echo",
           "http://api%2etest:8080/echo", "http://%61pi.test:8080/echo",
           "http://api.test\\@other.test:8080/echo", "http://api.test:99999/echo",
           "http://api.test:0/echo", "http://:8080/echo"]
    wrong = []  # every target is tried; the failure lists all that were answered wrongly
    parser_refuses = {"http://api.test\\@other.test:8080/echo"}
    for url in bad:
        r = via(fp.eport, url, host="api.test:8080")
        if url in parser_refuses and (r.status, r.header("x-fnproxy-error")) == (400,
                                                                              "bad_request"):
            continue
        if (r.status, r.header("x-fnproxy-error")) != (400, "bad_target"):
            wrong.append("%s -> %d %s %r" % (url, r.status, r.header("x-fnproxy-error"),
                                             r.body[:120]))
        else:
            check_error(r, 400, "bad_target", url)
    for target in ("127.1:8080", "u@api.test:8080", "api.test:0", "api.test:99999",
                   "api.test", "0x7f.0.1.1:8080"):
        c, r = connect_tunnel(ctx, fp.eport, target)
        if (r.status, r.header("x-fnproxy-error")) != (400, "bad_target"):
            wrong.append("CONNECT %s -> %d %s %r" % (target, r.status,
                                                     r.header("x-fnproxy-error"), r.body[:120]))
        else:
            check_error(r, 400, "bad_target", "CONNECT " + target)
    r = request(fp.eport, "GET", "/echo", host="api.test:8080")
    check_error(r, 400, "proxy_request_expected", "origin-form GET on the egress listener")
    check_untouched("malformed targets", api, other)
    check(not wrong, "not 400 bad_target: " + "; ".join(wrong))


@case(**NS)
def ingress_never_forwards_to_the_named_host(ctx):
    """On the ingress listener of a fnproxy that has an egress listener,
    an absolute-form request naming api.test is not forwarded there (it is
    answered by the function or refused by fnproxy), and CONNECT opens no
    tunnel."""
    app = ctx.start_backend(name="app")
    api = dest(ctx, "api", "127.0.1.1")
    fp = start_egress(ctx, bport=app.port)
    r = request(fp.ports["public"], "GET", "http://api.test:8080/echo?ingress",
                host="api.test:8080")
    check(r.header("x-backend") == "app" or (400 <= r.status < 500 and
                                             r.header("x-fnproxy-error")),
          "absolute-form on ingress: neither the function's answer nor fnproxy's refusal: %r"
          % r)
    c, r = connect_tunnel(ctx, fp.ports["public"], "api.test:8080")
    check(r.status >= 400, "CONNECT on the ingress listener: %r" % r)
    check_untouched("ingress requests naming api.test", api)


# ---------------------------------------------------------------------------
# resolution


@case(**NS)
def dns_answers_failures_and_private_answers(ctx):
    """With dns.servers: names not in the hosts file are asked of the DNS
    server; the answer is checked and dialled; NXDOMAIN gives 502
    dns_failed; an answer with a private address gives 403
    private_address and no connection to it."""
    api = dest(ctx, "api", "127.0.1.1")
    ten = dest(ctx, "ten", "10.0.0.1")
    d = dnsserver.DNSServer({"dnsapi.svc.test": [("127.0.1.1", 30)],
                             "ten.svc.test": [("10.0.0.1", 30)],
                             "meta.svc.test": [("169.254.169.254", 30)],
                             "v6.svc.test": [("::1", 30)],
                             "mixed.svc.test": [("10.0.0.1", 30), ("127.0.1.1", 30)]})
    try:
        fp = start_egress(ctx, egress_config(dns_timeout="1s"), DNSPORT=d.port)
        r = via(fp.eport, "http://dnsapi.svc.test:8080/echo?dns")
        check(r.status == 200 and r.header("x-backend") == "api", "name from DNS: %r" % r)
        check_eq(hget(parse_echo(r.body)[1], "host"), ["dnsapi.svc.test:8080"], "Host")
        check(d.asked("dnsapi.svc.test") >= 1, "the DNS server was not asked for dnsapi")
        r = via(fp.eport, "http://nx.svc.test:8080/echo")
        check_error(r, 502, "dns_failed", "NXDOMAIN")
        check(d.asked("nx.svc.test") >= 1, "the DNS server was not asked for nx.svc.test")
        for name in ("ten.svc.test", "meta.svc.test", "v6.svc.test"):
            check_denied(via(fp.eport, "http://%s:8080/x" % name), name, 8080,
                         "private_address", "%s from DNS" % name)
        # One private and one allowed address: the private one is never
        # dialled, whether the request goes to the other or is refused.
        for i in range(3):
            r = via(fp.eport, "http://mixed.svc.test:8080/echo?mixed%d" % i)
            if r.status == 200:
                check_eq(r.header("x-backend"), "api", "mixed answer: who answered")
            else:
                check_denied(r, "mixed.svc.test", 8080, "private_address", "mixed answer")
        ctx.note("a name answering 10.0.0.1 and 127.0.1.1: %d %s" % (r.status, r.reason))
        # The hosts file still comes first.
        r = via(fp.eport, "http://api.test:8080/echo?hosts")
        check(r.status == 200 and r.header("x-backend") == "api", "name from hosts: %r" % r)
        check_eq(d.asked("api.test"), 0, "queries for a name in the hosts file")
        check_untouched("private answers", ten)
        check(fp.alive(), "fnproxy exited")
    finally:
        d.close()


@case(**NS)
def dns_silent_server_times_out(ctx):
    """A DNS server that never answers: 502 dns_failed after about
    dns.timeout (1s; the bound checked is generous), and once it answers
    again the name resolves (failures are not cached)."""
    api = dest(ctx, "api", "127.0.1.1")
    d = dnsserver.DNSServer({"quiet.svc.test": [("127.0.1.1", 30)]}, mode="silent")
    try:
        fp = start_egress(ctx, egress_config(dns_timeout="1s"), DNSPORT=d.port)
        t0 = time.monotonic()
        r = via(fp.eport, "http://quiet.svc.test:8080/echo", timeout=20)
        took = time.monotonic() - t0
        check_error(r, 502, "dns_failed", "silent DNS server")
        check(took < 10, "dns_failed came after %.1fs with dns.timeout 1s" % took)
        check(d.asked("quiet.svc.test") >= 1, "the DNS server was not asked")
        ctx.note("dns_failed after %.2fs (dns.timeout 1s)" % took)
        d.mode = "answer"
        r = via(fp.eport, "http://quiet.svc.test:8080/echo?again")
        check(r.status == 200 and r.header("x-backend") == "api",
              "after the server answers again: %r" % r)
        check(b"?again" in api.record(), "the destination got the request")
    finally:
        d.close()


@case(**NS)
def dns_answer_checked_every_time(ctx):
    """DNS rebinding: a name whose answer (TTL 0) changes from an allowed
    address to a private one is refused the second time, and the private
    address is never dialled."""
    api = dest(ctx, "api", "127.0.1.1")
    ten = dest(ctx, "ten", "10.0.0.1")
    d = dnsserver.DNSServer({"rebind.svc.test": [("127.0.1.1", 0)]})
    try:
        fp = start_egress(ctx, egress_config(dns_timeout="1s"), DNSPORT=d.port)
        r = via(fp.eport, "http://rebind.svc.test:8080/echo")
        check(r.status == 200 and r.header("x-backend") == "api", "first answer: %r" % r)
        d.set("rebind.svc.test", [("10.0.0.1", 0)])
        time.sleep(1.1)  # a TTL 0 answer is not kept past this second
        check_denied(via(fp.eport, "http://rebind.svc.test:8080/echo"), "rebind.svc.test", 8080,
                     "private_address", "after the answer changed to 10.0.0.1")
        c, r = connect_tunnel(ctx, fp.eport, "rebind.svc.test:8080")
        check_denied(r, "rebind.svc.test", 8080, "private_address", "CONNECT after the change")
        check_untouched("a rebound name", ten)
    finally:
        d.close()


@case(**NS)
def dns_from_resolv_conf(ctx):
    """Without a dns section fnproxy uses /etc/resolv.conf (the
    namespace's: 127.0.0.1, where a DNS server listens on port 53)."""
    api = dest(ctx, "api", "127.0.1.1")
    d = dnsserver.DNSServer({"viaresolv.svc.test": [("127.0.1.1", 30)]}, port=53)
    try:
        fp = start_egress(ctx)
        r = via(fp.eport, "http://viaresolv.svc.test:8080/echo")
        check(r.status == 200 and r.header("x-backend") == "api", "name via resolv.conf: %r" % r)
        check(d.asked("viaresolv.svc.test") >= 1, "the resolv.conf server was not asked")
        r = via(fp.eport, "http://nx.svc.test:8080/echo")
        check_error(r, 502, "dns_failed", "NXDOMAIN via resolv.conf")
    finally:
        d.close()


@case(**NS)
def client_gone_during_resolution(ctx):
    """The client resets while its name is being resolved (the DNS server
    answers after 1.5 s): fnproxy survives the late answer, counts the
    request as 499 and serves the next one; the same for a CONNECT."""
    api = dest(ctx, "api", "127.0.1.1")
    log = ctx.path("access.log")
    d = dnsserver.DNSServer({"slow.svc.test": [("127.0.1.1", 30)],
                             "slow2.svc.test": [("127.0.1.1", 30)]}, mode="delay", delay=1.5)
    try:
        fp = start_egress(ctx, egress_config(dns_timeout="3s", access_log=log), DNSPORT=d.port)
        for n, (name, data) in enumerate((
                ("slow.svc.test", build_request("GET", "http://slow.svc.test:8080/echo?gone",
                                                host="slow.svc.test:8080")),
                ("slow2.svc.test", b"CONNECT slow2.svc.test:8080 HTTP/1.1\r\n"
                                   b"Host: slow2.svc.test:8080\r\n\r\n"))):
            c = ctx.connect(fp.eport)
            c.send(data)
            wait_until(lambda: d.asked(name) >= 1, 5, "the lookup of %s to start" % name)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # a reset
            wait_until(lambda: len([a for a in d.answered if a[1].lower() == name]) >= 1, 5,
                       "the late answer for %s" % name)
            time.sleep(0.3)
            check(fp.alive(), "fnproxy exited after the late answer for %s" % name)
            r = via(fp.eport, "http://api.test:8080/echo?next%d" % n)
            check(r.status == 200 and r.header("x-backend") == "api",
                  "the request after the abandoned one: %r" % r)
        check(b"?gone" not in api.record(), "the abandoned request was forwarded anyway")
        v = wait_for(lambda: egress_metric(fp, "fnproxy_requests_total", code="499"), 3)
        check_eq(v, 2.0, 'fnproxy_requests_total{direction="egress",function="app",code="499"}')
        entries = access_entries(log, 4)
        gone = [e for e in entries if e.get("status") == 499]
        check_eq(len(gone), 2, "access log lines with status 499 (%r)" % entries)
        check(all(e.get("direction") == "egress" for e in gone), "499 lines: %r" % gone)
    finally:
        d.close()


@case(**NS)
def upstream_unreachable(ctx):
    """An allowed destination where nothing listens: 502
    upstream_unreachable, for a request and for a CONNECT."""
    fp = start_egress(ctx)
    check_error(via(fp.eport, "http://dead.svc.test:8080/x"), 502, "upstream_unreachable",
                "GET to a dead address")
    c, r = connect_tunnel(ctx, fp.eport, "dead.svc.test:8080")
    check_error(r, 502, "upstream_unreachable", "CONNECT to a dead address")
    check(c.wait_closed(3), "connection left open after a failed CONNECT")


@case(**NS)
def connect_timeout_answers_504(ctx):
    """A destination that never completes the handshake: a listening
    socket with a full accept queue, whose SYNs the kernel drops. With
    connect_timeout 300ms the request gets 504 connect_timeout, a CONNECT
    too, each after the default retries (2, on connect-failure) tried the
    one address again: 3 connect timeouts each, 2 retries each."""
    lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.bind(("127.0.1.8", 8080))
    lsn.listen(0)
    fillers = []
    try:
        # Fill the accept queue (backlog 0 still takes one, and a SYN or
        # two may sit in the SYN queue); then a connect of ours must hang.
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(("127.0.1.8", 8080))
            fillers.append(f)
        time.sleep(0.2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.1.8", 8080))
            fail("the accept queue of the stalled destination is not full")
        except socket.timeout:
            pass
        finally:
            probe.close()
        rules = ("        - { name: stall, host: stall.svc.test, ports: [8080],"
                 " connect_timeout: 300ms }\n" + RULES)
        fp = start_egress(ctx, egress_config(rules=rules))
        t0 = time.monotonic()
        check_error(via(fp.eport, "http://stall.svc.test:8080/x"), 504, "connect_timeout",
                    "GET to a stalled destination")
        check(time.monotonic() - t0 < 5, "the 504 took %.1fs" % (time.monotonic() - t0))
        c, r = connect_tunnel(ctx, fp.eport, "stall.svc.test:8080")
        check_error(r, 504, "connect_timeout", "CONNECT to a stalled destination")
        check(c.wait_closed(3), "connection left open after a timed-out CONNECT")
        m = fp.metrics()
        check_eq(metric_value(m, "fnproxy_timeouts_total",
                              {"direction": "egress", "function": "app", "route": "stall",
                               "kind": "connect"}), 6.0, "connect timeouts of rule stall")
        check_eq(metric_value(m, "fnproxy_retries_total",
                              {"direction": "egress", "function": "app", "route": "stall"}), 4.0,
                 "retries of rule stall")
    finally:
        for f in fillers:
            f.close()
        lsn.close()


def unix_exchange(path, data, timeout=5):
    """Sends data on a new connection to the unix socket path; returns
    what comes back until the peer closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    finally:
        s.close()


@case(**NS)
def unix_socket_listener(ctx):
    """egress.listen: unix:PATH. Absolute-form and CONNECT work through it
    (two workers share it); the file goes when fnproxy exits; a stale file
    left by a killed fnproxy is replaced; a path another process accepts
    on, or a file that is not a socket, is refused at start."""
    api = dest(ctx, "api", "127.0.1.1")
    sock = ctx.path("egress.sock")
    conf = egress_config().replace("listen: 127.0.0.1:$PORT_egress", "listen: unix:" + sock)
    fp = ctx.start_fnproxy(conf, workers=2, listeners=("public",), BPORT=free_port())
    for i in range(4):  # connections land on either worker
        out = unix_exchange(sock, b"GET http://api.test:8080/echo?u=%d HTTP/1.1\r\n"
                                  b"Host: api.test:8080\r\nConnection: close\r\n\r\n" % i)
        check(out.startswith(b"HTTP/1.1 200 "), "GET through the unix socket: %r" % out[:200])
    out = unix_exchange(sock, b"CONNECT api.test:8080 HTTP/1.1\r\nHost: api.test:8080\r\n\r\n"
                              b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 "),
          "CONNECT through the unix socket: %r" % out[:200])
    out = unix_exchange(sock, b"GET http://other.test:8080/ HTTP/1.1\r\nHost: other.test\r\n"
                              b"Connection: close\r\n\r\n")
    check(b"x-fnproxy-error: egress_denied" in out, "denied through the unix socket: %r"
          % out[:300])
    fp.stop()
    check(not os.path.exists(sock), "the socket file is left after exit")

    # A killed fnproxy leaves its file: the next one replaces it.
    fp = ctx.start_fnproxy(conf, workers=1, listeners=("public",), BPORT=free_port())
    fp.kill()
    fp.wait(5)
    check(os.path.exists(sock), "a killed fnproxy's socket file is gone (the case tests nothing)")
    fp = ctx.start_fnproxy(conf, workers=1, listeners=("public",), BPORT=free_port())
    out = unix_exchange(sock, b"GET http://api.test:8080/echo HTTP/1.1\r\nHost: api.test\r\n"
                              b"Connection: close\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 200 "), "GET after replacing a stale file: %r" % out[:200])

    # The path is in use: a second fnproxy (its TCP ports free) refuses to
    # start, the first serves on.
    with open(fp.config_path) as f:
        text = f.read()
    for port in (fp.ports["public"], fp.admin_port):
        text = text.replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % free_port())
    second = ctx.write_config(text, "second.yaml")
    r = ctx.run_fnproxy(["-c", second], timeout=10)
    check(r.returncode != 0 and b"another process accepts on it" in r.stderr,
          "a second fnproxy on the same unix path: rc %d, %r" % (r.returncode, r.stderr[-300:]))
    out = unix_exchange(sock, b"GET http://api.test:8080/echo HTTP/1.1\r\nHost: api.test\r\n"
                              b"Connection: close\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 200 "), "the first fnproxy after the refused second: %r"
          % out[:200])
    fp.stop()

    # Not a socket: refused, and the file is left alone.
    with open(sock, "w") as f:
        f.write("keep me")
    r = ctx.run_fnproxy(["-c", second], timeout=10)
    check(r.returncode != 0 and b"not a socket" in r.stderr,
          "a regular file at the unix path: rc %d, %r" % (r.returncode, r.stderr[-300:]))
    with open(sock) as f:
        check_eq(f.read(), "keep me", "the regular file's content")


# ---------------------------------------------------------------------------
# CONNECT


@case(**NS)
def connect_tunnel_both_ways_and_half_close(ctx):
    """CONNECT tun.svc.test:8080: 200 Connection established, then an
    opaque tunnel: 4 MiB echoed while being sent, BIG bytes up and BIG
    down after the client's half-close, the destination's close ending the
    tunnel for the client."""
    peer = TunnelPeer("127.0.1.6")
    fp = start_egress(ctx)
    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_established(c, r, "CONNECT tun.svc.test:8080")
    data = os.urandom(4 << 20)
    c.send(b"ECHO\n")
    s = Sender(c, (data[i:i + 65536] for i in range(0, len(data), 65536)))
    s.start()
    back = c.read_exact(len(data), timeout=60)
    s.join(10)
    check(s.error is None, "sending into the tunnel: %s" % s.error)
    check(back == data, "echoed bytes differ from those sent")
    c.shutdown_write()
    check(c.wait_closed(5), "the tunnel stayed open after both sides finished")

    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_established(c, r, "second CONNECT")
    up = os.urandom(BIG)
    c.send(b"SINK %d\n" % BIG)
    s = Sender(c, (up[i:i + (1 << 20)] for i in range(0, len(up), 1 << 20)))
    s.start()
    s.join(120)
    check(s.error is None and s.sent == BIG, "sent %d of %d (%s)" % (s.sent, BIG, s.error))
    c.shutdown_write()  # the destination answers only after our EOF
    got = c.read_to_eof(timeout=120)
    want = b"%d %s\n" % (BIG, hashlib.sha256(up).hexdigest().encode())
    check(got.startswith(want), "the destination's summary %r, want %r" % (got[:100], want))
    check(got[len(want):] == pattern(BIG), "the %d bytes down differ (%d received)"
          % (BIG, len(got) - len(want)))
    wait_until(lambda: peer.ended == 2, 5, "the peer's connections to end")
    check_eq((peer.conns, peer.errors), (2, []), "peer connections and errors")


@case(**NS)
def connect_tunnel_ends_from_either_side(ctx):
    """A tunnel ends whichever side ends it: the destination's close
    reaches the client after its last bytes, the client's reset and the
    destination's reset reach the other side; afterwards no connection is
    left open and each tunnel is counted once."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.1.7", 8080))
    srv.listen(8)
    srv.settimeout(5)
    fp = start_egress(ctx)

    def tunnel():
        c, r = connect_tunnel(ctx, fp.eport, "close.svc.test:8080")
        check_established(c, r, "CONNECT close.svc.test")
        a, _ = srv.accept()
        a.settimeout(5)
        return c, a

    def rst(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def closed(sock, timeout=5):
        sock.settimeout(timeout)
        try:
            while sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    # The destination says bye and closes: the client gets the bytes, then EOF.
    c, a = tunnel()
    a.sendall(b"bye")
    a.close()
    check_eq(c.read_exact(3, timeout=5), b"bye", "the destination's last bytes")
    check(c.wait_closed(5), "the destination's close did not reach the client")
    c.close()
    # The client resets: the destination sees the end.
    c, a = tunnel()
    c.send(b"hello")
    check_eq(a.recv(5), b"hello", "bytes up")
    rst(c.sock)
    check(closed(a), "the client's reset did not reach the destination")
    a.close()
    # The destination resets: the client sees the end.
    c, a = tunnel()
    a.sendall(b"x")
    check_eq(c.read_exact(1, timeout=5), b"x", "bytes down")
    rst(a)
    check(c.wait_closed(5), "the destination's reset did not reach the client")
    c.close()
    srv.close()
    left = wait_for(lambda: metric_value(fp.metrics(), "fnproxy_connections_active",
                                         {"listener": "app.egress"}) == 0, 5)
    check(left, "egress connections still open after every tunnel ended: %r"
          % metric_value(fp.metrics(), "fnproxy_connections_active", {"listener": "app.egress"}))
    n = wait_for(lambda: egress_metric(fp, "fnproxy_requests_total", route="wild") == 3, 3)
    check(n, "tunnels counted in fnproxy_requests_total{route=\"wild\"}: %r (want 3)"
          % egress_metric(fp, "fnproxy_requests_total", route="wild"))


@case(**NS)
def connect_bytes_sent_with_the_request(ctx):
    """Bytes the client sends right behind the CONNECT head (before the
    200 arrives) are not lost: they reach the destination (or the CONNECT
    is refused outright, never silently shortened)."""
    peer = TunnelPeer("127.0.1.6")
    fp = start_egress(ctx)
    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080", extra=b"ECHO\nearly bytes")
    if r.status == 200:
        check_established(c, r, "CONNECT with bytes behind it")
        check_eq(c.read_exact(len(b"early bytes"), timeout=5), b"early bytes",
                 "the bytes sent with the CONNECT, echoed")
    else:
        check(r.status >= 400 and c.wait_closed(3),
              "CONNECT with bytes behind it: neither a tunnel nor a clean refusal: %r" % r)
        ctx.note("fnproxy refuses CONNECT with bytes behind it: %r" % r)
    check_eq(peer.errors, [], "peer errors")


@case(**NS)
def connect_denied_no_tunnel(ctx):
    """A denied CONNECT: 403 egress_denied, the connection closed after
    it, nothing connected to the destination. Rules with methods or paths
    never match a CONNECT."""
    other = TunnelPeer("127.0.1.5")
    ro = TunnelPeer("127.0.1.4")
    fp = start_egress(ctx)
    for target, host, port in (("other.test:8080", "other.test", 8080),
                               ("ro.test:8080", "ro.test", 8080),
                               ("api.test:443", "api.test", 443),
                               ("10.0.0.1:8080", "10.0.0.1", 8080)):
        c, r = connect_tunnel(ctx, fp.eport, target)
        check_denied(r, host, port, "no_rule", "CONNECT " + target)
        try:
            c.send(b"ECHO\nafter the 403")
        except OSError:
            pass
        check(c.wait_closed(3), "CONNECT %s: the connection stayed open after the 403" % target)
    check_untouched("denied CONNECTs", other, ro)


@case(**NS)
def connect_tls_through_curl(ctx):
    """curl --proxy http://EGRESS https://tls.fn.test:8443/: a CONNECT
    tunnel carrying curl's own TLS to the destination, verified by curl
    against the test CA."""
    d = make_certs(ctx)
    b, _ = start_tls_dest(ctx, d)
    fp = start_egress(ctx, egress_config(RULES + TLS_RULES), D=d)
    p = curl(["-i", "--proxy", "http://127.0.0.1:%d" % fp.eport, "--cacert",
              os.path.join(d, "ca.crt"), "https://tls.fn.test:8443/echo?curl"])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    check(p.stdout.startswith(b"HTTP/1.1 200 Connection established\r\n"),
          "curl saw no tunnel: %r" % p.stdout[:300])
    out = curl_output("curl through the tunnel", p.stdout)
    check(out.startswith(b"HTTP/1.1 200"), "curl saw: %r" % out[:300])
    check(b"GET /echo?curl HTTP/1.1" in out, "the destination's echo: %r" % out[-400:])
    check(b"GET /echo?curl HTTP/1.1" in b.record(), "the TLS destination's backend")


@case(**NS)
def connect_tunnel_idle_timeout(ctx):
    """tunnel_idle_timeout 1s: a tunnel with traffic every 0.3 s stays
    open; once idle, fnproxy closes it on both sides."""
    peer = TunnelPeer("127.0.1.6")
    fp = start_egress(ctx, egress_config(idle="1s"))
    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_established(c, r, "CONNECT")
    c.send(b"ECHO\n")
    end = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < end:
        c.send(b"p%d;" % n)
        check_eq(c.read_exact(len(b"p%d;" % n), timeout=5), b"p%d;" % n, "echo %d" % n)
        n += 1
        time.sleep(0.3)
    t0 = time.monotonic()
    check(c.wait_closed(10), "the idle tunnel was still open 10s after the last byte "
          "(tunnel_idle_timeout 1s)")
    took = time.monotonic() - t0
    wait_until(lambda: peer.ended == 1, 5, "the destination side of the tunnel to close")
    ctx.note("idle tunnel closed %.2fs after the last byte (timeout 1s)" % took)


# ---------------------------------------------------------------------------
# TLS origination


@case(**NS)
def tls_originate(ctx):
    """tls: originate: the function speaks plain HTTP to the proxy
    (curl -x ... http://secure.fn.test:8443/), fnproxy speaks TLS to the
    destination and verifies it against the rule's CA and the name. A
    certificate without the name, or from another CA: 502
    upstream_tls_failed, and nothing sent."""
    d = make_certs(ctx)
    b, inner = start_tls_dest(ctx, d)
    fp = start_egress(ctx, egress_config(RULES + TLS_RULES), D=d)
    p = curl(["-i", "-x", "http://127.0.0.1:%d" % fp.eport,
              "http://secure.fn.test:8443/echo?orig"])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    out = p.stdout
    check(out.startswith(b"HTTP/1.1 200"), "curl -x http://secure.fn.test:8443: %r" % out[:300])
    line, hdrs, _ = parse_echo(out.split(b"\r\n\r\n", 1)[1])
    check_eq(line, "GET /echo?orig HTTP/1.1", "request line at the TLS destination")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["https"], "the hop to the destination was TLS")
    check_eq(hget(hdrs, "host"), ["secure.fn.test:8443"], "Host at the destination")
    errs = metric_value(inner.metrics(), "fnproxy_tls_handshake_errors_total",
                        {"listener": "fn", "reason": "plain_http"})
    check(not errs, "fnproxy spoke plain HTTP to the TLS destination (%r)" % errs)
    # Keep-alive over the originated TLS connection.
    c = ctx.connect(fp.eport)
    for i in range(3):
        c.send(build_request("GET", "http://secure.fn.test:8443/echo?k%d" % i,
                             host="secure.fn.test:8443"))
        r = c.read_response()
        check(r.status == 200, "request %d over originated TLS: %r" % (i, r))
    active = metric_value(inner.metrics(), "fnproxy_connections_active", {"listener": "fn"})
    check_eq(active, 1.0, "TLS connections open to the destination after 4 sequential requests")
    for name in ("wrong.test", "rogue.fn.test"):
        r = via(fp.eport, "http://%s:8443/echo?bad-%s" % (name, name))
        check_error(r, 502, "upstream_tls_failed", name)
    rec = settle(b)
    check(b"bad-" not in rec, "a request reached the destination over unverified TLS: %r"
          % rec[-300:])


# ---------------------------------------------------------------------------
# report mode, metrics, access log


@case(**NS)
def report_mode_lets_through_and_counts(ctx):
    """mode: report: what enforce would deny goes through, counted in
    fnproxy_policy_would_deny_total and logged with verdict would_deny;
    nothing is counted as a denial."""
    other = dest(ctx, "other", "127.0.1.5")
    ten = dest(ctx, "ten", "10.0.0.1")
    api = dest(ctx, "api", "127.0.1.1")
    log = ctx.path("access.log")
    fp = start_egress(ctx, egress_config(mode="report", access_log=log))
    r = via(fp.eport, "http://other.test:8080/echo?report")
    check(r.status == 200 and r.header("x-backend") == "other", "no rule, report mode: %r" % r)
    r = via(fp.eport, "http://ten.internal.test:8080/echo?report")
    check(r.status == 200 and r.header("x-backend") == "ten",
          "private address, report mode: %r" % r)
    r = via(fp.eport, "http://api.test:8080/echo?report")
    check(r.status == 200 and r.header("x-backend") == "api", "allowed, report mode: %r" % r)
    c, r = connect_tunnel(ctx, fp.eport, "other.test:8080")
    check_established(c, r, "CONNECT other.test in report mode")
    c.send(build_request("GET", "/echo?tunnel", host="other.test:8080"))
    r = c.read_response()
    check(r.status == 200 and r.header("x-backend") == "other", "through the tunnel: %r" % r)
    c.close()
    check(api.record() and other.record() and ten.record(), "every destination was reached")
    name = "fnproxy_policy_would_deny_total"
    wait_for(lambda: (egress_metric(fp, name, reason="no_rule") or 0) >= 2, 3)
    check_eq(egress_metric(fp, name, reason="no_rule"), 2.0, name + '{reason="no_rule"}')
    check_eq(egress_metric(fp, name, reason="private_address"), 1.0,
             name + '{reason="private_address"}')
    check(not egress_metric(fp, "fnproxy_policy_denials_total"),
          "denials counted in report mode: %r" % egress_metric(fp, "fnproxy_policy_denials_total"))
    entries = [e for e in access_entries(log, 4) if e.get("direction") == "egress"]
    verdicts = sorted(e.get("verdict") for e in entries)
    check_eq(verdicts, ["allow", "would_deny", "would_deny", "would_deny"],
             "verdicts in the access log (%r)" % entries)


@case(**NS)
def metrics_and_access_log(ctx):
    """Allowed requests count under the rule's name; denials only in
    fnproxy_policy_denials_total by reason; no host name or address the
    function asked for appears anywhere in /metrics; egress access log
    lines say direction, verdict and the address dialled."""
    api = dest(ctx, "api", "127.0.1.1")
    log = ctx.path("access.log")
    fp = start_egress(ctx, egress_config(access_log=log), workers=2)
    probe = "probe-%08x.test" % random.getrandbits(32)
    plan = [("http://api.test:8080/echo", 200, "allow"),
            ("http://api.test:8080/status/503", 503, "allow"),
            ("http://127.0.1.1:8080/echo", 200, "allow"),
            ("http://other.test:8080/x", 403, "deny"),
            ("http://%s:8080/x" % probe, 403, "deny"),
            ("http://ten.internal.test:8080/x", 403, "deny")]
    for url, status, _ in plan:
        r = via(fp.eport, url)
        check_eq(r.status, status, "status of %s" % url)
    c = ctx.connect(fp.eport)  # held open: connections_active
    wait_for(lambda: metric_value(fp.metrics(), "fnproxy_connections_active",
                                  {"listener": "app.egress"}), 3)
    text = fp.metrics()
    want = {("fnproxy_requests_total", (("route", "api"), ("code", "200"))): 1.0,
            ("fnproxy_requests_total", (("route", "api"), ("code", "503"))): 1.0,
            ("fnproxy_requests_total", (("route", "lab"), ("code", "200"))): 1.0,
            ("fnproxy_policy_denials_total", (("reason", "no_rule"),)): 2.0,
            ("fnproxy_policy_denials_total", (("reason", "private_address"),)): 1.0}
    for (name, labels), v in want.items():
        got = metric_value(text, name, dict(labels, direction="egress", function="app"))
        check_eq(got, v, "%s%r" % (name, dict(labels)))
    check_eq(metric_value(text, "fnproxy_requests_total", {"direction": "egress"}), 3.0,
             "egress requests_total over all series (denials are not in it)")
    active = metric_value(text, "fnproxy_connections_active", {"listener": "app.egress"})
    check(active is not None and active >= 1, "connections_active{listener=\"app.egress\"}: %r"
          % active)
    c.close()
    for s in ("api.test", "other.test", probe, "ten.internal.test", "127.0.1.1", "10.0.0.1"):
        check(s not in text, "/metrics mentions %r" % s)
    entries = [e for e in access_entries(log, len(plan)) if e.get("direction") == "egress"]
    check_eq(len(entries), len(plan), "egress lines in the access log (%r)" % entries)
    got = sorted((e.get("status"), e.get("verdict")) for e in entries)
    check_eq(got, sorted((s, v) for _, s, v in plan), "(status, verdict) of the egress lines")
    for e in entries:
        check_eq(e.get("function"), "app", "function of %r" % e)
        if e.get("verdict") == "allow":
            check_eq(e.get("resolved"), "127.0.1.1:8080", "resolved of %r" % e)
    check(len(api.record()) > 0, "api reached")


@case(**NS)
def access_log_egress_fields_are_the_requests(ctx):
    """An egress line's method and path are the request's own (the method,
    the path without its query; for CONNECT its target or nothing, with
    host, port and resolved saying where, as README documents), never bytes of
    the forwarded head or of the tunnel; no query string and no userinfo
    password reaches the log; every line of the egress listener, a 400
    included, says direction egress."""
    api = dest(ctx, "api", "127.0.1.1")
    peer = TunnelPeer("127.0.1.6")
    log = ctx.path("access.log")
    fp = start_egress(ctx, egress_config(access_log=log))
    check_eq(via(fp.eport, "http://api.test:8080/echo").status, 200, "GET /echo")
    check_eq(via(fp.eport, "http://api.test:8080/echo?token=s3cr3t").status, 200, "GET ?token")
    check_eq(via(fp.eport, "http://other.test:8080/x?token=s3cr3t").status, 403, "denied ?token")
    check_eq(via(fp.eport, "http://u:pw-s3cr3t@api.test:8080/x").status, 400, "userinfo")
    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_established(c, r, "CONNECT")
    c.send(b"ECHO\n" + b"Z" * 200)
    c.read_exact(200)
    c.shutdown_write()
    check(c.wait_closed(5), "tunnel end")
    entries = access_entries(log, 5)
    with open(log, "rb") as f:
        raw = f.read()
    problems = []  # all of them, not just the first
    for ln in raw.split(b"\n"):
        if b"s3cr3t" in ln:
            problems.append("a query string or userinfo password logged: %r" % ln)
        if b"ZZZZ" in ln or b"ECHO" in ln:
            problems.append("tunnel bytes logged: %r" % ln)
    want = [("GET", ("/echo", "http://api.test:8080/echo")),
            ("GET", ("/echo", "http://api.test:8080/echo")),
            ("GET", ("/x", "http://other.test:8080/x")),
            ("GET", ("/x", "http://api.test:8080/x", "")),
            ("CONNECT", ("tun.svc.test:8080", ""))]  # README: host and port say where
    check_eq(len(entries), len(want), "access log lines (%r)" % entries)
    for e, (method, paths) in zip(entries, want):
        if e.get("listener") != "app.egress" or e.get("direction") != "egress":
            problems.append("listener %r direction %r logged for %s %s (the metrics count it "
                            "as egress)" % (e.get("listener"), e.get("direction"), method,
                                            paths[0]))
        if e.get("method") != method or e.get("path") not in paths:
            problems.append("method %r path %r logged, want %s and one of %r"
                            % (e.get("method"), e.get("path"), method, paths))
    t = entries[-1]
    if (t.get("host"), t.get("port"), t.get("resolved")) != ("tun.svc.test", 8080,
                                                           "127.0.1.6:8080"):
        problems.append("the tunnel's line has host %r port %r resolved %r, want tun.svc.test, "
                        "8080, 127.0.1.6:8080" % (t.get("host"), t.get("port"),
                                                  t.get("resolved")))
    check(not problems, "; ".join(problems))


def effective_path(target):
    """The path a server that decodes %2e and %2f and removes dot segments
    (RFC 3986 5.2.4) serves for an origin-form target."""
    p = target.split("?", 1)[0].split("#", 1)[0]
    p = re.sub("%2[eE]", ".", p)
    p = re.sub("%2[fF]", "/", p)
    out = []
    for seg in p.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    return "/" + "/".join(out)


@case(**NS)
def path_rules_not_bypassed_by_dot_segments(ctx):
    """A rule with paths: [/v1/] lets through only what a destination
    serves under /v1/: a target whose dot segments (plain or
    percent-encoded) climb out of /v1/ is refused, or forwarded only in a
    form that stays under /v1/."""
    ro = dest(ctx, "ro", "127.0.1.4")
    fp = start_egress(ctx)
    escapes = ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/..%2fadmin",
               "/v1/./../admin", "/v1/x/../../admin"]
    answers = []
    for path in escapes:
        check_eq(effective_path(path), "/admin", "the test's own normalisation of %s" % path)
        r = via(fp.eport, "http://ro.test:8080" + path)
        answers.append("%s -> %d %s" % (path, r.status, r.header("x-fnproxy-error")))
        check(r.status == 200 or (400 <= r.status < 500 and r.header("x-fnproxy-error")),
              "%s: %r" % (path, r))
    time.sleep(0.3)
    got = re.findall(rb"(?:^|\r\n\r\n)GET (\S+) HTTP/1\.1\r\n", ro.record())
    escaped = [t.decode("latin-1") for t in got
               if not effective_path(t.decode("latin-1")).startswith("/v1/")]
    check(not escaped, "requests outside /v1/ reached ro.test through the /v1/ rule: %r (%s)"
          % (escaped, "; ".join(answers)))


# ---------------------------------------------------------------------------
# reload


RELOADED_RULES = """\
        - { name: api, host: api.test, ports: [8080] }
        - { name: other, host: other.test, ports: [8080] }
        - { name: lab, cidr: 127.0.1.0/24, ports: [8080, 8443] }
"""


@case(**NS)
def reload_keeps_tunnels_applies_new_rules(ctx):
    """SIGHUP with a new allow list: a tunnel opened before keeps working
    (though its rule is gone); new requests and CONNECTs follow the new
    rules."""
    peer = TunnelPeer("127.0.1.6")
    other = dest(ctx, "other", "127.0.1.5")
    fp = start_egress(ctx, workers=2)
    check_denied(via(fp.eport, "http://other.test:8080/x"), "other.test", 8080, "no_rule",
                 "other.test before the reload")
    c, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_established(c, r, "CONNECT before the reload")
    c.send(b"ECHO\nbefore;")
    check_eq(c.read_exact(7), b"before;", "tunnel before the reload")
    fp.rewrite_config(egress_config(RELOADED_RULES), BPORT=free_port())
    hup_and_wait(fp, 2)
    c.send(b"after;")
    check_eq(c.read_exact(6), b"after;", "the tunnel opened before the reload")
    c2, r = connect_tunnel(ctx, fp.eport, "tun.svc.test:8080")
    check_denied(r, "tun.svc.test", 8080, "no_rule", "CONNECT tun.svc.test after the reload")
    r = via(fp.eport, "http://other.test:8080/echo")
    check(r.status == 200 and r.header("x-backend") == "other", "other.test after: %r" % r)
    c.send(b"still;")
    check_eq(c.read_exact(6), b"still;", "the old tunnel after new requests")
    c.shutdown_write()
    check(c.wait_closed(5), "the old tunnel did not close after both sides finished")
    check_eq(peer.conns, 1, "connections to the tunnel peer")
