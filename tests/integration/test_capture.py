"""Transparent capture (functions[].egress.capture, a listener named
"<function>.capture"): a function's outbound TCP, redirected by the
nftables rules of deploy/capture-rules.sh, is decided by the function's
egress rules on the name its first bytes give (TLS SNI, HTTP Host), or on
the original destination by cidr rules when there is none; the name is
resolved by fnproxy and the checked address dialled.

The netns case runs in a network namespace with only lo (run.py), where
the "remote" addresses are put on lo: connecting to them is local delivery
but still passes the nat output hook, so the rules redirect it. The
"function" is curl or Python run as nobody (uid 65534) with no proxy
variables; fnproxy and the destinations run as root, the user the rules
exempt. Destinations: fnbackend on 198.51.100.10:80 (api.fn.test), a
second fnproxy terminating TLS on 198.51.100.10:443 in front of another
fnbackend, an "evil" raw server on 203.0.113.66:443 and a private one on
10.0.0.1:80 that must never see a connection.
"""

import os
import socket
import subprocess
import threading

from harness import (ROOT, RawServer, case, check, check_eq, free_port, make_certs, metric_value,
                     settle, wait_until)
from test_egress import access_entries, hup_and_wait

NOBODY = 65534
PY = "/usr/bin/python3"  # Debian's, which nobody can run (a pyenv shim may not be)
SCRIPT = os.path.join(ROOT, "deploy", "capture-rules.sh")
API = "198.51.100.10"
HOSTS = {
    "api.fn.test": API,             # rule api (*.fn.test): fnbackend :80, TLS :443
    "priv.fn.test": "10.0.0.1",     # rule api, but a private address
    "denied.test": "198.51.100.20",  # no rule
}
LO_ADDRS = (API + "/32", "198.51.100.20/32", "203.0.113.66/32", "10.0.0.1/32")

# The function "app" and its egress listener, as every case here has them.
APP = """\
workers: 2
admin: { listen: 127.0.0.1:$APORT }
access_log: $LOG
listeners:
  - { name: public, listen: 127.0.0.1:$PPORT }
functions:
  - name: app
    endpoints: [127.0.0.1:$PPORT]
    ingress: { routes: [ { name: r, match: { listener: public } } ] }
    egress:
      listen: 127.0.0.1:$PORT_egress
"""

CONFIG = APP + """\
      capture: 127.0.0.1:$PORT_capture
      allow:
        - { name: api, host: "*.fn.test", ports: [80, 443] }
        - { name: testnet, cidr: 198.51.100.10/32, ports: [80, 443] }
"""

INNER_TLS = """\
workers: 1
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: fn
    listen: %s:443
    tls: { certificates: [ { cert: $D/wildcard.crt, key: $D/wildcard.key } ] }
functions:
  - name: inner
    endpoints: [127.0.0.1:$B]
    ingress: { routes: [ { name: all, match: { listener: fn } } ] }
""" % API

# The TLS client of the SNI spoof: connects to the address given, asks for
# api.fn.test, prints the status line it gets.
SPOOF = """\
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = socket.create_connection((sys.argv[1], 443), timeout=10)
t = ctx.wrap_socket(s, server_hostname="api.fn.test")
t.sendall(b"GET /spoof HTTP/1.1\\r\\nHost: api.fn.test\\r\\nConnection: close\\r\\n\\r\\n")
print(t.recv(4096).split(b"\\r\\n")[0].decode())
"""

HTTP_CLIENT = """\
import http.client
c = http.client.HTTPConnection("api.fn.test", 80, timeout=10)
c.request("GET", "/py")
r = c.getresponse()
print(r.status, r.read().decode()[:40].replace("\\n", " "))
"""


def as_nobody(args, timeout=20):
    """args run as uid/gid 65534, no supplementary groups, no proxy variables."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                           "--clear-groups"] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env)


def curl_nobody(*args):
    return as_nobody(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\\n%{http_code}"]
                     + list(args))


def app_metric(fp, name, **labels):
    labels.setdefault("direction", "egress")
    labels.setdefault("function", "app")
    return metric_value(fp.metrics(), name, labels) or 0


def rules(*args):
    return subprocess.run(["sh", SCRIPT] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20)


def never_touched(s, server):
    server.note("connected")


@case(timeout=90, netns=True, hosts=HOSTS, lo_addrs=LO_ADDRS)
def capture_in_netns(ctx):
    d = make_certs(ctx)
    for p in (ctx.tmpdir, d):
        os.chmod(p, 0o755)  # the CA is read by nobody's clients
    os.chmod(os.path.join(d, "ca.crt"), 0o644)
    ca = os.path.join(d, "ca.crt")
    log = ctx.path("access.log")

    api = ctx.start_backend(name="api", listen=["%s:80" % API])
    tlsb = ctx.start_backend(name="tlsfn")
    ctx.start_fnproxy(INNER_TLS, workers=1, listeners=(), D=d, B=tlsb.port)
    evil = RawServer(never_touched, host="203.0.113.66", port=443)
    private = RawServer(never_touched, host="10.0.0.1", port=80)
    fp = ctx.start_fnproxy(CONFIG, workers=2, listeners=("public", "egress", "capture"), LOG=log)
    cport = fp.ports["capture"]

    p = rules("--proxy-uid", "0", "--port", str(cport), "--uid", str(NOBODY))
    check(p.returncode == 0, "capture-rules.sh failed: %s" % p.stderr.decode()[-300:])

    # Plain HTTP by name: curl and Python's http.client, straight to the
    # destination as far as they know.
    r = curl_nobody("http://api.fn.test/hello?x=1")
    out = r.stdout.decode()
    check(r.returncode == 0 and out.endswith("\n200"), "curl http: %d %r %r"
          % (r.returncode, out[-200:], r.stderr[-300:]))
    r = as_nobody([PY, "-c", HTTP_CLIENT])
    check(r.returncode == 0 and r.stdout.startswith(b"200 "), "http.client: %r %r"
          % (r.stdout[-200:], r.stderr[-300:]))
    rec = settle(api).lower()
    check_eq(rec.count(b"\r\nhost: api.fn.test\r\n"), 2, "requests the api destination got")
    check(rec.startswith(b"get /hello?x=1 http/1.1\r\n") and b"get /py http/1.1\r\n" in rec,
          "the destination got: %r" % rec[:300])

    # A Host naming another port than the one connected to: refused.
    r = curl_nobody("-H", "Host: api.fn.test:8080", "http://api.fn.test/port")
    out = r.stdout.decode()
    check(out.endswith("\n400") and '"bad_target"' in out, "Host port mismatch: %r" % out[-300:])
    # No name (not TLS, not HTTP): the original address, allowed by a cidr
    # rule, gets the bytes as they are.
    r = as_nobody([PY, "-c", "import socket; s = socket.create_connection(('%s', 80), timeout=10);"
                   " s.sendall(b'\\x01opaque\\n'); s.shutdown(socket.SHUT_WR); s.recv(100)" % API])
    check(r.returncode == 0, "opaque to an allowed address: %r" % r.stderr[-300:])
    wait_until(lambda: b"\x01opaque\n" in api.record(), 5, "the opaque bytes at the destination")

    # TLS by name: an opaque tunnel to the resolved address; the
    # certificate verifies, so curl spoke to the real destination.
    r = curl_nobody("--cacert", ca, "https://api.fn.test/tls")
    out = r.stdout.decode()
    check(r.returncode == 0 and out.endswith("\n200"), "curl https: %d %r %r"
          % (r.returncode, out[-200:], r.stderr[-300:]))
    check(b"GET /tls HTTP/1.1\r\n" in settle(tlsb, 0.1), "the TLS destination got no GET /tls")

    # SNI spoofing: to the evil address, asking for api.fn.test: fnproxy
    # dials api.fn.test's address, never the evil one.
    r = as_nobody([PY, "-c", SPOOF, "203.0.113.66", ca])
    check(r.returncode == 0 and r.stdout.startswith(b"HTTP/1.1 200"), "spoofed SNI: %r %r"
          % (r.stdout[-200:], r.stderr[-300:]))
    check(b"GET /spoof HTTP/1.1\r\n" in settle(tlsb, 0.1), "the spoof's request went elsewhere")
    check_eq(evil.conns, 0, "connections the evil address got")

    # Denied: a name without a rule (HTTP 403, TLS closed), a name with a
    # private address, a private address by IP (HTTP and opaque).
    denials0 = app_metric(fp, "fnproxy_policy_denials_total")
    r = curl_nobody("http://denied.test/")
    out = r.stdout.decode()
    check(out.endswith("\n403") and '"egress_denied"' in out and '"no_rule"' in out,
          "denied name over http: %r" % out[-300:])
    r = curl_nobody("--cacert", ca, "https://denied.test/")
    check(r.returncode in (35, 56) and r.stdout.decode().endswith("000"),
          "denied name over TLS: curl exit %d %r" % (r.returncode, r.stderr[-200:]))
    r = curl_nobody("http://priv.fn.test/")
    check('"private_address"' in r.stdout.decode(), "private name: %r" % r.stdout[-300:])
    r = curl_nobody("http://10.0.0.1/")
    check(r.stdout.decode().endswith("\n403"), "private IP over http: %r" % r.stdout[-300:])
    r = as_nobody([PY, "-c", "import socket; s = socket.create_connection(('10.0.0.1', 80),"
                   " timeout=10); s.sendall(b'\\x00hello'); print(repr(s.recv(10)))"])
    check(r.stdout.strip() == b"b''" or b"ConnectionResetError" in r.stderr,
          "opaque to a private IP: %r %r" % (r.stdout, r.stderr[-200:]))
    check_eq(private.conns, 0, "connections the private address got")
    wait_until(lambda: app_metric(fp, "fnproxy_policy_denials_total") - denials0 >= 5, 5,
               "five more denials")
    check_eq(app_metric(fp, "fnproxy_policy_denials_total", reason="private_address"), 1,
             "private_address denials")

    # Connecting to the capture port itself (not redirected: loopback is
    # exempt) is refused and counted, never looped.
    own0 = app_metric(fp, "fnproxy_policy_denials_total", reason="own_listener")
    try:
        with socket.create_connection(("127.0.0.1", cport), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: api.fn.test\r\n\r\n")
            check_eq(s.recv(100), b"", "a direct connection's answer")
    except (ConnectionResetError, BrokenPipeError):
        pass  # the reset may come before the connect returns, or the request is sent
    wait_until(lambda: app_metric(fp, "fnproxy_policy_denials_total", reason="own_listener")
               == own0 + 1, 5, "the direct connection counted as own_listener")

    # fnproxy's own connections (as root) were not redirected to itself: a
    # loop would come back as one more refused connection each, and none
    # is left open.
    check_eq(own0, 0, "own_listener denials before the direct connection")
    wait_until(lambda: metric_value(fp.metrics(), "fnproxy_connections_active",
                                    {"listener": "app.capture"}) == 0, 5,
               "the capture listener's connections all closed")

    lines = [e for e in access_entries(log, 9) if e.get("listener") == "app.capture"]
    allowed = [e for e in lines if e.get("verdict") == "allow"]
    check_eq(sorted((e.get("method"), e.get("route"), e.get("host"), e.get("resolved"))
                    for e in allowed),
             [("CONNECT", "api", "api.fn.test", API + ":443"),  # curl https
              ("CONNECT", "api", "api.fn.test", API + ":443"),  # the spoof
              ("CONNECT", "testnet", API, API + ":80"),  # opaque, no name
              ("GET", "api", "api.fn.test", API + ":80"),  # curl http
              ("GET", "api", "api.fn.test", API + ":80")],  # http.client
             "allowed lines of the access log")
    check(any(e.get("verdict") == "deny" and e.get("host") == "denied.test" for e in lines),
          "no deny line for denied.test: %r" % lines)


@case(timeout=30)
def capture_rules_script(ctx):
    p = rules("--proxy-uid", "101", "--port", "15006", "--print")
    out = p.stdout.decode()
    check_eq(p.returncode, 0, "exit status of --print")
    for want in ("table inet fnproxy_capture", "delete table inet fnproxy_capture",
                 "type nat hook output", "meta l4proto != tcp return", "meta skuid 101 return",
                 "ip daddr 127.0.0.0/8 return", "ip6 daddr ::1 return",
                 "meta l4proto tcp redirect to :15006"):
        check(want in out, "ruleset lacks %r:\n%s" % (want, out))
    check("!=" not in out.replace("l4proto !=", ""), "no --uid, yet a user filter:\n" + out)
    p = rules("--proxy-uid", "101", "--port", "15006", "--uid", "1000", "--uid", "1001", "--print")
    check("meta skuid != { 1000, 1001 } return" in p.stdout.decode(),
          "--uid filter missing:\n" + p.stdout.decode())
    # The exemptions come before the redirect.
    lines = p.stdout.decode().splitlines()
    at = {k: next(i for i, ln in enumerate(lines) if k in ln)
          for k in ("skuid 101", "127.0.0.0/8", "redirect")}
    check(at["skuid 101"] < at["redirect"] and at["127.0.0.0/8"] < at["redirect"],
          "exemptions after the redirect:\n" + p.stdout.decode())
    for args, msg in ((["--port", "15006"], "--proxy-uid is required"),
                      (["--proxy-uid", "0"], "--port is required"),
                      (["--proxy-uid", "0", "--port", "70000"], "70000 is larger than 65535"),
                      (["--proxy-uid", "x", "--port", "1"], "--proxy-uid: expected a number"),
                      (["--proxy-uid", "0", "--port", "0"], "0 is not a port"),
                      (["--proxy-uid", "0", "--port", "1", "--uid"], "--uid needs a value"),
                      (["--bogus"], 'unknown argument "--bogus"')):
        p = rules(*args)
        check(p.returncode == 2 and msg in p.stderr.decode(),
              "%r: exit %d, stderr %r" % (args, p.returncode, p.stderr))


# --- first_bytes_timeout, a split ClientHello, report mode, reloads, IPv6 ---

BANNER_IP = "198.51.100.30"  # a server-speaks-first destination (port 25), allowed by cidr
V6 = "2001:db8::10"  # an IPv6 destination (port 80), allowed by cidr
MORE = APP + """\
      $CAPTURE
      mode: $MODE
      allow:
        - { name: api, host: "*.fn.test", ports: [80, 443] }
        - { name: testnet, cidr: %s/32, ports: [80, 443] }
        - { name: smtp, cidr: %s/32, ports: [25] }
        - { name: v6, cidr: "%s/128", ports: [80] }
""" % (API, BANNER_IP, V6)

# The client of a server-speaks-first protocol: sends nothing until the
# banner came; prints how long that took, the banner and the answer to its
# own line.
BANNER_CLIENT = """\
import socket, sys, time
t0 = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
banner = s.recv(100)
waited = time.monotonic() - t0
s.sendall(b"HELO fn\\r\\n")
s.shutdown(socket.SHUT_WR)
rest = b""
while True:
    d = s.recv(100)
    if not d:
        break
    rest += d
print("%.3f %r %r" % (waited, banner, rest))
"""

# A real ClientHello (Python's ssl over memory BIOs) for api.fn.test, sent
# to the address given in 5 writes 100 ms apart (400 ms in all: longer than
# first_bytes_timeout), then the handshake finished and one request made
# over the same socket; prints the status line.
SPLIT_HELLO = """\
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
t = ctx.wrap_bio(inc, out, server_hostname="api.fn.test")
try:
    t.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
s = socket.create_connection((sys.argv[1], 443), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cuts = [0, 3] + [3 + (len(hello) - 3) * i // 4 for i in (1, 2, 3)] + [len(hello)]
for a, b in zip(cuts, cuts[1:]):
    s.sendall(hello[a:b])
    time.sleep(0.1)
def feed():
    d = s.recv(65536)
    if not d:
        sys.exit("closed by the peer")
    inc.write(d)
while True:
    try:
        t.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
        feed()
s.sendall(out.read())
t.write(b"GET /split HTTP/1.1\\r\\nHost: api.fn.test\\r\\nConnection: close\\r\\n\\r\\n")
s.sendall(out.read())
resp = b""
while b"\\r\\n" not in resp:
    try:
        resp += t.read(4096)
    except ssl.SSLWantReadError:
        feed()
print(resp.split(b"\\r\\n")[0].decode())
"""

# Connects, sends a line, half-closes, prints what came back (or the error).
OPAQUE = """\
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"\\x01" + sys.argv[3].encode() + b"\\n")
    s.shutdown(socket.SHUT_WR)
    print(repr(s.recv(100)))
except OSError as e:
    print(type(e).__name__)
"""


def logged(log, what, **fields):
    """Waits for an access log line with these fields (the log is written
    in batches)."""
    wait_until(lambda: any(all(e.get(k) == v for k, v in fields.items())
                           for e in access_entries(log, 1)), 5, what)


def banner_server(s, server):
    """Speaks first; then answers the client's line."""
    s.sendall(b"220 banner.fn.test ESMTP\r\n")
    got = b""
    while True:
        d = server.recv(s)
        if not d:
            break
        got += d
    s.sendall(b"250 got " + got.strip() + b"\r\n")


def echo6_server(srv):
    """An IPv6 echo server (RawServer is IPv4 only): each connection's
    bytes back, until it half-closes."""
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            data = b""
            while True:
                d = c.recv(100)
                if not d:
                    break
                data += d
            c.sendall(b"echo " + data)


@case(timeout=90, netns=True, hosts=HOSTS,
      lo_addrs=LO_ADDRS + (BANNER_IP + "/32", V6 + "/128"))
def capture_first_bytes_report_reload_v6(ctx):
    """first_bytes_timeout lets a server-speaks-first protocol through soon;
    a ClientHello in five slow writes still gives its name; mode: report
    lets a denied name through as would_deny; reloads add, move and remove
    the capture listener; an IPv6 connection is captured at [::1]."""
    d = make_certs(ctx)
    for p in (ctx.tmpdir, d):
        os.chmod(p, 0o755)
    os.chmod(os.path.join(d, "ca.crt"), 0o644)
    ca = os.path.join(d, "ca.crt")
    log = ctx.path("access.log")

    api = ctx.start_backend(name="api", listen=["%s:80" % API])
    denied = ctx.start_backend(name="denied", listen=["198.51.100.20:80"])
    tlsb = ctx.start_backend(name="tlsfn")
    ctx.start_fnproxy(INNER_TLS, workers=1, listeners=(), D=d, B=tlsb.port)
    banner = RawServer(banner_server, host=BANNER_IP, port=25)
    evil = RawServer(never_touched, host="203.0.113.66", port=443)
    srv6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv6.bind((V6, 80))
    srv6.listen(8)
    threading.Thread(target=echo6_server, args=(srv6,), daemon=True).start()

    p1, p2 = free_port(), free_port()
    cap = "capture: { listen: 127.0.0.1:%d, first_bytes_timeout: 300ms }" % p1
    fp = ctx.start_fnproxy(MORE, workers=2, listeners=("public", "egress"), LOG=log, CAPTURE=cap,
                           MODE="enforce")

    def redirect_to(port):
        p = rules("--proxy-uid", "0", "--port", str(port), "--uid", str(NOBODY))
        check(p.returncode == 0, "capture-rules.sh failed: %s" % p.stderr.decode()[-300:])

    def reload(gen, capture, mode="enforce"):
        fp.rewrite_config(MORE, LOG=log, CAPTURE=capture, MODE=mode)
        hup_and_wait(fp, gen)

    def http_status(url):
        out = curl_nobody(url).stdout.decode()
        return out.rsplit("\n", 1)[-1]

    redirect_to(p1)

    # Server speaks first: the client sends nothing, so fnproxy waits
    # first_bytes_timeout (300 ms), then dials the original address (cidr
    # rule smtp); the banner comes then, and the stream works both ways.
    r = as_nobody([PY, "-c", BANNER_CLIENT, BANNER_IP, "25"])
    out = r.stdout.decode().split(" ", 1)
    check(r.returncode == 0 and len(out) == 2, "banner client: %r %r" % (r.stdout, r.stderr[-300:]))
    check_eq(out[1].strip(), "b'220 banner.fn.test ESMTP\\r\\n' b'250 got HELO fn\\r\\n'",
             "what the server-speaks-first client got")
    waited = float(out[0])
    check(0.25 <= waited < 5, "the banner came after %.3f s (first_bytes_timeout 300ms; the "
          "listener's header_timeout is 10s)" % waited)

    # A ClientHello in five writes over 400 ms, sent to the evil address:
    # fnproxy reads it whole (the wait after the first bytes is
    # header_timeout), dials api.fn.test by its SNI, and the handshake
    # completes through the tunnel.
    r = as_nobody([PY, "-c", SPLIT_HELLO, "203.0.113.66", ca])
    check(r.returncode == 0 and r.stdout.startswith(b"HTTP/1.1 200"),
          "split ClientHello: %r %r" % (r.stdout[-200:], r.stderr[-300:]))
    check(b"GET /split HTTP/1.1\r\n" in settle(tlsb, 0.1), "the TLS destination got no GET /split")
    check_eq(evil.conns, 0, "connections the evil address got")

    # mode: report: a name no rule allows goes through, counted and logged
    # as would_deny, not denied.
    deny0 = app_metric(fp, "fnproxy_policy_denials_total")
    reload(2, cap, mode="report")
    check_eq(http_status("http://denied.test/report"), "200", "denied.test in report mode")
    check(b"GET /report HTTP/1.1\r\n" in settle(denied, 0.1), "denied.test got no GET /report")
    wait_until(lambda: app_metric(fp, "fnproxy_policy_would_deny_total", reason="no_rule") == 1,
               5, "one would_deny (no_rule)")
    check_eq(app_metric(fp, "fnproxy_policy_denials_total"), deny0, "denials in report mode")
    logged(log, "a would_deny line for denied.test", listener="app.capture",
           verdict="would_deny", host="denied.test")

    # The capture address moves to p2: the rules still say p1, where
    # nothing listens any more, so a redirected connection is refused (it
    # fails closed); once the rules say p2 it is served.
    reload(3, "capture: 127.0.0.1:%d" % p2)
    check_eq(as_nobody([PY, "-c", OPAQUE, API, "80", "moved"]).stdout.strip(),
             b"ConnectionRefusedError", "a connection redirected to the old address")
    redirect_to(p2)
    check_eq(http_status("http://api.fn.test/moved"), "200", "after the rules followed")

    # Capture removed: redirected connections are refused; none reaches
    # fnproxy, so none loops.
    own0 = app_metric(fp, "fnproxy_policy_denials_total", reason="own_listener")
    reload(4, "")
    check_eq(as_nobody([PY, "-c", OPAQUE, API, "80", "removed"]).stdout.strip(),
             b"ConnectionRefusedError", "a connection redirected once capture is removed")
    check(b"\x01removed" not in api.record() and b"\x01moved" not in api.record(),
          "a refused connection reached the destination")

    # Added back, on [::1] at p1 (the script redirects IPv6 to [::1]:PORT):
    # an IPv6 connection is captured and decided on its original address
    # (cidr rule v6); an IPv4 one now finds nothing at 127.0.0.1:p1.
    reload(5, "capture: \"[::1]:%d\"" % p1)
    redirect_to(p1)
    check_eq(as_nobody([PY, "-c", OPAQUE, V6, "80", "six"]).stdout.strip(),
             b"b'echo \\x01six\\n'", "an IPv6 connection through [::1]")
    check_eq(as_nobody([PY, "-c", OPAQUE, API, "80", "four"]).stdout.strip(),
             b"ConnectionRefusedError", "an IPv4 connection with an IPv6-only capture")
    logged(log, "an allowed IPv6 line", listener="app.capture", verdict="allow",
           resolved="[%s]:80" % V6)
    check_eq(app_metric(fp, "fnproxy_policy_denials_total", reason="own_listener"), own0,
             "own_listener denials (a loop would add some)")
    wait_until(lambda: metric_value(fp.metrics(), "fnproxy_connections_active",
                                    {"listener": "app.capture"}) == 0, 5,
               "the capture listener's connections all closed")
    srv6.close()
