"""GET /config on the admin listener: the configuration in service as JSON,
its generation and load time across SIGHUP reloads (taken and refused),
and what it must never show: a certificate's key path, or any file's
content."""

import json
import os
import re
import shutil
import signal
import time

from harness import (case, check, check_eq, make_certs, request, wait_for)

# A plain and a TLS listener; $ROUTE_PREFIX changes between generations.
CONFIG = """\
workers: 2
admin: { listen: 127.0.0.1:$APORT }
drain_timeout: 3s
listeners:
  - { name: public, listen: 127.0.0.1:$PORT_public, header_timeout: 2s }
  - name: secure
    listen: 127.0.0.1:$PORT_secure
    tls:
      certificates:
        - { cert: "$CERT", key: "$KEY" }
functions:
  - name: echo
    endpoints: [127.0.0.1:$B]
    ingress:
      max_body: 1MiB
      routes:
        - { name: main, match: { listener: public, path_prefix: $ROUTE_PREFIX }, timeout: 3s }
        - { name: tls, match: { listener: secure }, timeout: 3s }
"""
LISTENERS = ("public", "secure")
KEY_NAME = "fnproxy-PRIVATE-7f3a.key"
CERT_NAME = 'we"ird\\cert.crt'  # a quote and a backslash: JSON must escape both


def yaml_dq(s):
    """s inside a YAML double-quoted scalar."""
    return s.replace("\\", "\\\\").replace('"', '\\"')


def get_config(fp):
    r = request(fp.admin_port, "GET", "/config")
    check_eq(r.status, 200, "GET /config status")
    ct = (r.header("content-type") or "").split(";")[0].strip()
    check_eq(ct, "application/json", "content-type of /config")
    try:
        j = json.loads(r.body)
    except ValueError:
        check(False, "/config is not JSON: %r" % r.body[:400])
    return r.body, j


def setup(ctx):
    d = make_certs(ctx)
    cert = os.path.join(d, CERT_NAME)
    key = os.path.join(d, KEY_NAME)
    shutil.copy(os.path.join(d, "server.crt"), cert)
    shutil.copy(os.path.join(d, "server.key"), key)
    b = ctx.start_backend(record=False)
    subst = dict(B=b.port, CERT=yaml_dq(cert), KEY=yaml_dq(key))
    fp = ctx.start_fnproxy(CONFIG, listeners=LISTENERS, ROUTE_PREFIX="/", **subst)
    return d, cert, key, fp, subst


def check_no_secret(body, key, d):
    """Neither the key's path nor its file name nor any line of its content
    (nor of any file of the PKI) is in body."""
    check(KEY_NAME.encode() not in body, "/config shows the key file name: %r" % body[:600])
    check(key.encode() not in body, "/config shows the key path")
    check(b"PRIVATE KEY" not in body and b"BEGIN" not in body,
          "/config shows PEM content")
    with open(key, "rb") as f:
        for line in f.read().splitlines():
            if len(line) >= 16 and not line.startswith(b"-----"):
                check(line not in body, "/config shows a line of the key file")
    with open(os.path.join(d, "server.crt"), "rb") as f:
        for line in f.read().splitlines():
            if len(line) >= 16 and not line.startswith(b"-----"):
                check(line not in body, "/config shows a line of the certificate file")


def parse_ts(s):
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$", s or "")
    check(m is not None, "loaded_at %r is not RFC 3339 UTC with ms" % s)
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return (time.mktime(t) - time.timezone) + int(m.group(7)) / 1000.0


@case(timeout=30)
def config_shows_effective_config_redacted(ctx):
    d, cert, key, fp, _ = setup(ctx)
    body, j = get_config(fp)
    check_eq(j["generation"], 1, "generation at start")
    check_eq(j["path"], fp.config_path, "path")
    loaded = parse_ts(j["loaded_at"])
    check(abs(loaded - time.time()) < 60, "loaded_at %s is about now" % j["loaded_at"])
    check_eq((j["workers"], j["workers_effective"]), (2, 2), "workers")
    check_eq(j["admin"], {"listen": "127.0.0.1:%d" % fp.admin_port}, "admin")
    check_eq(j["drain_timeout"], 3000, "drain_timeout in ms")
    check_eq(j["metrics"], "on", "metrics")
    check_eq([l["name"] for l in j["listeners"]], ["public", "secure"], "listener names")
    pub, sec = j["listeners"]
    check_eq((pub["kind"], pub["listen"], pub["header_timeout"], pub["tls"]),
             ("ingress", "127.0.0.1:%d" % fp.ports["public"], 2000, None), "public listener")
    check_eq(sec["tls"]["certificates"], [{"cert": cert, "key": "(redacted)"}],
             "certificates: the cert path as written, the key redacted")
    fn = j["functions"][0]
    check_eq(fn["ingress"]["max_body"], 1 << 20, "max_body in bytes")
    check_eq([r["name"] for r in fn["ingress"]["routes"]], ["main", "tls"], "routes")
    check_eq(fn["ingress"]["routes"][0]["timeout"], 3000, "route timeout in ms")
    check_eq(fn["egress"], None, "no egress")
    # The cert path is in the raw body, escaped (quote and backslash).
    check(json.dumps(cert).encode() in body, "escaped cert path in %r" % body[:600])
    check_no_secret(body, key, d)
    # HEAD has the headers only; other methods are refused.
    r = request(fp.admin_port, "HEAD", "/config")
    check_eq((r.status, r.body), (200, b""), "HEAD /config")
    r = request(fp.admin_port, "POST", "/config", body=b"x")
    check_eq(r.status, 405, "POST /config")


@case(timeout=30)
def config_follows_reloads(ctx):
    d, cert, key, fp, subst = setup(ctx)
    body1, j1 = get_config(fp)
    check_eq(j1["generation"], 1, "generation at start")
    check_eq(j1["functions"][0]["ingress"]["routes"][0]["match"]["path_prefix"], "/",
             "route before the reload")
    time.sleep(0.01)  # loaded_at has ms: the next load is later

    # A reload with a changed route: generation 2, new content and time.
    fp.rewrite_config(CONFIG, ROUTE_PREFIX="/v2/", **subst)
    fp.send_signal(signal.SIGHUP)
    check(wait_for(lambda: get_config(fp)[1]["generation"] == 2, 5, 0.05),
          "generation 2 after SIGHUP: %s" % fp.stderr_text()[-400:])
    body2, j2 = get_config(fp)
    check_eq(j2["functions"][0]["ingress"]["routes"][0]["match"]["path_prefix"], "/v2/",
             "route after the reload")
    check(parse_ts(j2["loaded_at"]) > parse_ts(j1["loaded_at"]),
          "loaded_at moved: %s then %s" % (j1["loaded_at"], j2["loaded_at"]))
    check_no_secret(body2, key, d)

    # Refused reloads: a bad file, then a good file whose key is missing.
    # Either way generation 2 stays in service, byte for byte.
    for why, text in (("a bad key", CONFIG.replace("drain_timeout:", "bogus_key: 1\ndrain_timeout:")),
                      ("a missing key file", CONFIG)):
        s = dict(subst)
        if why == "a missing key file":
            s["KEY"] = subst["KEY"] + ".gone"
        n_refused = fp.stderr_text().count("reload refused")
        fp.rewrite_config(text, ROUTE_PREFIX="/v3/", **s)
        fp.send_signal(signal.SIGHUP)
        check(wait_for(lambda: fp.stderr_text().count("reload refused") > n_refused, 5, 0.05),
              "reload with %s refused: %s" % (why, fp.stderr_text()[-400:]))
        body3, j3 = get_config(fp)
        check_eq(j3["generation"], 2, "generation after a reload with %s" % why)
        check(body3 == body2, "/config unchanged after a reload with %s" % why)
    check(fp.alive(), "fnproxy alive")
