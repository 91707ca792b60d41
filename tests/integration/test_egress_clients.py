"""Egress with unmodified clients: curl with -x and with http_proxy /
https_proxy from the environment, Python's urllib (ProxyHandler from the
environment) and requests (HTTP_PROXY / HTTPS_PROXY). Each client runs as
a subprocess of the case, so inside the case's loopback-only network
namespace (see test_egress.py for the namespace, the names and the
destinations); the environment is built from scratch, so no proxy or
no_proxy setting of the machine leaks in.

Each client fetches http://api.test:8080/echo (absolute-form through the
proxy), https://tls.fn.test:8443/echo (a CONNECT tunnel carrying the
client's own TLS, verified against the test CA) and a denied URL (403
egress_denied as the client reports it).
"""

import json
import os
import subprocess
import sys

from harness import case, check, check_eq, hget, make_certs, parse_echo
from test_egress import (NS, RULES, TLS_RULES, curl_output, dest, egress_config, start_egress,
                         start_tls_dest)

# Run by the Python clients: fetch each URL in argv[2:] and print one JSON
# line per URL: {"url", "status", "error", "xerr", "body"}.
URLLIB = r"""
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
for url in sys.argv[2:]:
    out = {"url": url, "status": None, "error": None, "xerr": None, "body": ""}
    try:
        with opener.open(url, timeout=10) as r:
            out["status"] = r.status
            out["body"] = r.read().decode("latin-1")
    except urllib.error.HTTPError as e:
        out["status"] = e.code
        out["xerr"] = e.headers.get("x-fnproxy-error")
        out["body"] = e.read().decode("latin-1")
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(out), flush=True)
"""

REQUESTS = r"""
import json, sys
import requests
for url in sys.argv[2:]:
    out = {"url": url, "status": None, "error": None, "xerr": None, "body": ""}
    try:
        r = requests.get(url, verify=sys.argv[1], timeout=10)
        out["status"] = r.status_code
        out["xerr"] = r.headers.get("x-fnproxy-error")
        out["body"] = r.content.decode("latin-1")
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(out), flush=True)
"""

URLS = ("http://api.test:8080/echo?client", "https://tls.fn.test:8443/echo?client",
        "http://other.test:8080/echo?client", "https://other.test:8080/echo?client")


def setup(ctx):
    d = make_certs(ctx)
    api = dest(ctx, "api", "127.0.1.1")
    other = dest(ctx, "other", "127.0.1.5")
    tlsb, _ = start_tls_dest(ctx, d)
    fp = start_egress(ctx, egress_config(RULES + TLS_RULES), D=d)
    return d, api, other, tlsb, fp


def clean_env(ctx, **proxies):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": ctx.tmpdir, "LC_ALL": "C"}
    env.update(proxies)
    return env


def run_python(ctx, script, env, ca):
    p = subprocess.run([sys.executable, "-c", script, ca] + list(URLS), env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    check_eq(p.returncode, 0, "python client exit status (%s)"
             % p.stderr.decode("utf-8", "replace")[-800:])
    res = [json.loads(ln) for ln in p.stdout.decode().splitlines() if ln.strip()]
    check_eq([r["url"] for r in res], list(URLS), "the client fetched every URL")
    return res


def check_results(what, res, api, other, tlsb):
    """What every client must see: both allowed fetches answered by the
    destinations (origin form at each), the plain denied one a 403 with
    x-fnproxy-error, the tunnelled denied one an error (the client sees a
    403 to its CONNECT), and nothing at other.test."""
    ok_http, ok_tls, deny_http, deny_tls = res
    for r, b in ((ok_http, api), (ok_tls, tlsb)):
        check(r["status"] == 200 and not r["error"], "%s: %s: %r" % (what, r["url"], r))
        line, hdrs, _ = parse_echo(r["body"].encode("latin-1"))
        check_eq(line, "GET /echo?client HTTP/1.1", "%s: request line at %s" % (what, r["url"]))
        check(b"GET /echo?client HTTP/1.1" in b.record(), "%s: %s did not get the request"
              % (what, b.name))
    check_eq(hget(parse_echo(ok_http["body"].encode("latin-1"))[1], "host"), ["api.test:8080"],
             "%s: Host at api.test" % what)
    check(deny_http["status"] == 403 and deny_http["xerr"] == "egress_denied",
          "%s: plain http to other.test: %r" % (what, deny_http))
    check(deny_tls["status"] is None and deny_tls["error"] and "403" in deny_tls["error"],
          "%s: https to other.test: want the CONNECT's 403 as an error, got %r"
          % (what, deny_tls))
    check(other.record() == b"", "%s: other.test got %r" % (what, other.record()[:200]))


def curl_fetch(ctx, args, **proxies):
    """curl -i ARGS with a clean environment plus proxies."""
    return subprocess.run(["curl", "-sS", "--max-time", "15", "-i"] + list(args),
                          env=clean_env(ctx, **proxies), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20)


def curl_check(what, p, b, status=b"200"):
    check_eq(p.returncode, 0, "%s: curl exit status (%s)" % (what, p.stderr.decode().strip()))
    out = curl_output(what, p.stdout)
    check(out.startswith(b"HTTP/1.1 " + status), "%s: %r" % (what, out[:300]))
    if b is not None:
        check(b"GET /echo?" in out and b"GET /echo?" in b.record(),
              "%s: the destination's echo: %r" % (what, out[-300:]))
    return out


@case(**NS)
def curl_proxy_flag_and_env(ctx):
    """curl -x, and curl with http_proxy / https_proxy in its environment."""
    d, api, other, tlsb, fp = setup(ctx)
    proxy = "http://127.0.0.1:%d" % fp.eport
    ca = os.path.join(d, "ca.crt")
    curl_check("curl -x http", curl_fetch(ctx, ["-x", proxy, "http://api.test:8080/echo?x"]),
               api)
    curl_check("curl -x https", curl_fetch(ctx, ["-x", proxy, "--cacert", ca,
                                                 "https://tls.fn.test:8443/echo?x"]), tlsb)
    env = dict(http_proxy=proxy, https_proxy=proxy)
    curl_check("curl http_proxy", curl_fetch(ctx, ["http://api.test:8080/echo?env"], **env), api)
    curl_check("curl https_proxy",
               curl_fetch(ctx, ["--cacert", ca, "https://tls.fn.test:8443/echo?env"], **env), tlsb)
    out = curl_check("curl http_proxy, denied",
                     curl_fetch(ctx, ["http://other.test:8080/echo?env"], **env), None,
                     status=b"403")
    check(b"\nx-fnproxy-error: egress_denied\n" in out.lower(), "denied: %r" % out[:400])
    p = curl_fetch(ctx, ["--cacert", ca, "https://other.test:8080/echo?env"], **env)
    check(p.returncode != 0 and b"403" in p.stderr + p.stdout,
          "curl https_proxy to a denied host: want the CONNECT's 403, got %d %r %r"
          % (p.returncode, p.stdout[:200], p.stderr[:300]))
    check(other.record() == b"", "other.test got %r" % other.record()[:200])


@case(**NS)
def python_urllib_proxies_from_env(ctx):
    """urllib.request with its default ProxyHandler (proxies from
    http_proxy / https_proxy in the environment)."""
    d, api, other, tlsb, fp = setup(ctx)
    proxy = "http://127.0.0.1:%d" % fp.eport
    res = run_python(ctx, URLLIB, clean_env(ctx, http_proxy=proxy, https_proxy=proxy),
                     os.path.join(d, "ca.crt"))
    check_results("urllib", res, api, other, tlsb)


@case(**NS)
def python_requests_proxies_from_env(ctx):
    """requests with HTTP_PROXY / HTTPS_PROXY in the environment. requests
    is a test dependency (python3-requests, scripts/deps.sh): its absence
    fails the case."""
    d, api, other, tlsb, fp = setup(ctx)
    p = subprocess.run([sys.executable, "-c", "import requests"], capture_output=True,
                       timeout=30)
    check(p.returncode == 0, "requests cannot be imported by %s (install python3-requests: "
          "sh scripts/deps.sh): %s" % (sys.executable, p.stderr.decode()[-300:]))
    proxy = "http://127.0.0.1:%d" % fp.eport
    res = run_python(ctx, REQUESTS, clean_env(ctx, HTTP_PROXY=proxy, HTTPS_PROXY=proxy),
                     os.path.join(d, "ca.crt"))
    check_results("requests", res, api, other, tlsb)
