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

from harness import (ROOT, RawServer, case, check, check_eq, make_certs, metric_value, settle,
                     wait_until)
from test_egress import access_entries

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

CONFIG = """\
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
