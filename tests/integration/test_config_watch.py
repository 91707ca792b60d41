"""Reload on a file change, without a signal (watch.h): the config file
and the certificates it names are watched through their directories, so
that the way Kubernetes updates a mounted ConfigMap or Secret (the files
are symlinks through `..data`, which is swapped by one rename) is seen,
as are an in-place write and an editor's write-and-rename. What changes
nothing (a touch, identical bytes) does not reload; a broken update is
refused and logged and the old config keeps serving; `watch: off` leaves
reloads to SIGHUP. The fnproxy_config_* metrics and GET /config's hash say
which config is in service.

Deadlines: on the ConfigMap swap a new config must serve within 1 s of the
rename (the issue's figure; 250 ms of it is the debounce); 5 s in the
sanitizer build, whose fnproxy is several times slower. The other cases
note their times (about 260 ms) without failing on them. Absence (no reload) is checked by making a
real change afterwards and counting exactly one reload."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

from harness import SAN, Fnproxy, case, check, check_eq, free_port, request, wait_until

DEADLINE = 5.0 if SAN else 1.0  # new routes served after the rename, seconds

CONFIG = """\
workers: 1
admin: { listen: 127.0.0.1:$APORT }
drain_timeout: 1s
$EXTRA
listeners:
  - { name: public, listen: 127.0.0.1:$PORT_public }
functions:
  - name: echo
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
$ROUTES
"""


def routes(*prefixes):
    return "\n".join("        - { name: r%d, match: { listener: public, path_prefix: %s } }"
                     % (i, p) for i, p in enumerate(prefixes))


def status(fp, path):
    try:
        return request(fp.port, "GET", path, timeout=5).status
    except OSError:
        return None


def metrics(fp):
    text = fp.metrics()
    m = {}
    for k, pat in (("ok", r'^fnproxy_config_reloads_total\{result="ok"\} (\d+)$'),
                   ("refused", r'^fnproxy_config_reloads_total\{result="refused"\} (\d+)$'),
                   ("hash", r'^fnproxy_config_info\{hash="([0-9a-f]{16})"\} 1$'),
                   ("generation", r"^fnproxy_config_generation (\d+)$"),
                   ("ts", r"^fnproxy_config_last_reload_success_timestamp_seconds "
                          r"(\d+\.\d{3})$")):
        found = re.findall(pat, text, re.M)
        check_eq(len(found), 1, "one %s line in /metrics" % k)
        m[k] = found[0] if k == "hash" else float(found[0]) if k == "ts" else int(found[0])
    return m


def config_hash(fp):
    r = request(fp.admin_port, "GET", "/config")
    check_eq(r.status, 200, "GET /config")
    j = json.loads(r.body)
    return j["hash"], j["generation"], j["watch"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Mount:
    """A directory laid out as kubelet's AtomicWriter lays out a ConfigMap
    or Secret volume: DIR/..TS/NAME, DIR/..data -> ..TS, DIR/NAME ->
    ..data/NAME. update() writes a new ..TS, points ..data_tmp at it,
    renames that over ..data and removes the old ..TS, as kubelet does."""

    def __init__(self, d, files):
        self.d = d
        self.n = 0
        os.mkdir(d)
        ts = self._payload(files)
        os.symlink(ts, os.path.join(d, "..data"))
        for name in files:
            os.symlink(os.path.join("..data", name), os.path.join(d, name))

    def _payload(self, files):
        self.n += 1
        ts = "..2026_12_07_01_00_%02d.%d" % (self.n, os.getpid())
        os.mkdir(os.path.join(self.d, ts))
        for name, data in files.items():
            mode = "wb" if isinstance(data, bytes) else "w"
            with open(os.path.join(self.d, ts, name), mode) as f:
                f.write(data)
        return ts

    def path(self, name):
        return os.path.join(self.d, name)

    def update(self, files):
        """Returns the monotonic time of the rename."""
        old = os.readlink(self.path("..data"))
        ts = self._payload(files)
        os.symlink(ts, self.path("..data_tmp"))
        os.rename(self.path("..data_tmp"), self.path("..data"))
        t = time.monotonic()
        shutil.rmtree(self.path(old))
        return t


def served_within(ctx, fp, path, since, what, deadline=None):
    """Waits for path to answer 200; with a deadline, fails if that took
    longer than deadline seconds from since (the issue's figure is checked
    on the ConfigMap swap; elsewhere the time is only noted, so that a
    loaded machine does not fail what the swap case already measures)."""
    wait_until(lambda: status(fp, path) == 200, DEADLINE + 30, what,
               detail=lambda: fp.stderr_text()[-800:])
    took = time.monotonic() - since
    ctx.note("%s served %.0f ms after the change" % (what, took * 1000))
    if deadline is not None:
        check(took <= deadline, "%s served %.2f s after the change (deadline %.1f s)"
              % (what, took, deadline))


def refused(ctx, fp, before, what, want):
    """Waits for one more refusal in the log; returns its line."""
    wait_until(lambda: fp.stderr_text().count("reload refused") > before, DEADLINE + 30,
               "%s refused" % what, detail=lambda: fp.stderr_text()[-800:])
    line = [l for l in fp.stderr_text().splitlines() if "reload refused" in l][-1]
    check(re.search(want, line) is not None, "%s: refusal %r does not match %r"
          % (what, line, want))
    return line


@case(timeout=60)
def watch_configmap_swap(ctx):
    """A ConfigMap update serves its new routes within a second; broken
    updates (bad YAML, an unknown key) are refused with file:line:column,
    logged and counted while the old routes keep serving; a good one after
    them is picked up; metrics and /config follow."""
    b = ctx.start_backend(record=False)
    aport, pport = free_port(), free_port()  # known before the file is written in the mount

    def text(*prefixes, extra=""):
        return ctx.render(CONFIG, {"public": pport}, aport, B=b.port, EXTRA=extra,
                          ROUTES=routes(*prefixes))

    cm = Mount(ctx.path("cm"), {"fnproxy.yaml": text("/v1/")})
    fp = Fnproxy(ctx, cm.path("fnproxy.yaml"), {"public": pport}, aport)
    check_eq((status(fp, "/v1/x"), status(fp, "/v2/x")), (200, 404), "routes at start")
    m0 = metrics(fp)
    check_eq((m0["ok"], m0["refused"], m0["generation"]), (0, 0, 1), "metrics at start")
    h0, g0, w0 = config_hash(fp)
    check_eq((h0, g0, w0), (m0["hash"], 1, "on"), "/config hash, generation and watch at start")
    check(abs(m0["ts"] - time.time()) < 60, "last reload timestamp %s is about now" % m0["ts"])

    t = cm.update({"fnproxy.yaml": text("/v1/", "/v2/")})
    served_within(ctx, fp, "/v2/x", t, "the new route", DEADLINE)
    m1 = wait_until(lambda: (lambda m: m if m["generation"] == 2 else None)(metrics(fp)), 10,
                    "generation 2 in the metrics")
    check_eq((m1["ok"], m1["refused"]), (1, 0), "reloads after the first update")
    check(m1["hash"] != m0["hash"], "the hash changed with the content")
    check(m1["ts"] >= m0["ts"], "last reload timestamp moved on")
    check_eq(config_hash(fp)[:2], (m1["hash"], 2), "/config hash and generation")
    check("config change detected in %s; reloading" % cm.d in fp.stderr_text(),
          "log names the directory: %s" % fp.stderr_text()[-600:])

    n = fp.stderr_text().count("reload refused")
    cm.update({"fnproxy.yaml": text("/v1/") + "  - [unclosed\n"})
    refused(ctx, fp, n, "bad YAML", r"reload refused, keeping the running config: "
            + re.escape(cm.path("fnproxy.yaml")) + r":\d+:\d+: ")
    cm.update({"fnproxy.yaml": text("/v1/", "/v3/", extra="colour: blue")})
    refused(ctx, fp, n + 1, "an unknown key", re.escape(cm.path("fnproxy.yaml"))
            + r':4:1: colour: unknown key "colour"')
    check_eq((status(fp, "/v1/x"), status(fp, "/v2/x"), status(fp, "/v3/x")), (200, 200, 404),
             "the old routes keep serving")
    m2 = metrics(fp)
    check_eq((m2["ok"], m2["refused"], m2["generation"], m2["hash"]),
             (1, 2, 2, m1["hash"]), "metrics after two refusals")

    t = cm.update({"fnproxy.yaml": text("/v3/")})
    served_within(ctx, fp, "/v3/x", t, "a good update after broken ones", DEADLINE)
    check_eq(status(fp, "/v2/x"), 404, "the route the good update dropped")
    m3 = wait_until(lambda: (lambda m: m if m["generation"] == 3 else None)(metrics(fp)), 10,
                    "generation 3 in the metrics")
    check_eq((m3["ok"], m3["refused"]), (2, 2), "reloads at the end")
    check_eq(config_hash(fp)[0], m3["hash"], "/config hash at the end")
    check(len({m0["hash"], m1["hash"], m3["hash"]}) == 3, "three configs, three hashes")


def make_cert(ctx, cn):
    crt, key = ctx.path(cn + ".crt"), ctx.path(cn + ".key")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=" + cn, "-keyout", key, "-out", crt], capture_output=True,
                       timeout=30)
    check_eq(p.returncode, 0, "openssl req: %s" % p.stderr.decode()[-300:])
    with open(crt, "rb") as f:
        pem = f.read()
    with open(key, "rb") as f:
        return pem, f.read(), ssl.PEM_cert_to_DER_cert(pem.decode())


def served_cert(port):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with c.wrap_socket(s, server_hostname="fn.test") as t:
                return t.getpeercert(binary_form=True)
    except OSError:
        return None


TLS_CONFIG = """\
workers: 1
admin: { listen: 127.0.0.1:$APORT }
drain_timeout: 1s
listeners:
  - name: public
    listen: 127.0.0.1:$PORT_public
    tls: { certificates: [{ cert: $SECRET/tls.crt, key: $SECRET/tls.key }] }
functions:
  - name: echo
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: all, match: { listener: public } }
"""


@case(timeout=60)
def watch_secret_swap(ctx):
    """A Secret update (certificate and key through ..data) is served
    within the deadline; the config file itself did not change, the hash
    did."""
    crt1, key1, der1 = make_cert(ctx, "one")
    crt2, key2, der2 = make_cert(ctx, "two")
    secret = Mount(ctx.path("secret"), {"tls.crt": crt1, "tls.key": key1})
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(TLS_CONFIG, B=b.port, SECRET=secret.d)
    check_eq(served_cert(fp.port), der1, "the certificate served at start")
    m0 = metrics(fp)
    t = secret.update({"tls.crt": crt2, "tls.key": key2})
    wait_until(lambda: served_cert(fp.port) == der2, DEADLINE + 30, "the new certificate",
               detail=lambda: fp.stderr_text()[-800:])
    ctx.note("new certificate served %.0f ms after the swap" % ((time.monotonic() - t) * 1000))
    m1 = metrics(fp)
    check_eq((m1["ok"], m1["refused"], m1["generation"]), (1, 0, 2), "one reload")
    check(m1["hash"] != m0["hash"], "the hash follows the certificate")
    check("config change detected in %s; reloading" % secret.d in fp.stderr_text(),
          "log names the Secret's directory")

    # A key that does not match the certificate: refused, the second pair
    # keeps serving.
    n = fp.stderr_text().count("reload refused")
    secret.update({"tls.crt": crt1, "tls.key": key2})
    refused(ctx, fp, n, "a mismatched pair", r"reload refused, keeping the running config: ")
    check_eq(served_cert(fp.port), der2, "the certificate served after the refusal")

    # A config naming a certificate not there yet is refused; the
    # certificate's directory is watched all the same, and its arrival
    # (the config unchanged) puts the config in service.
    later = ctx.path("later")
    os.mkdir(later)
    n = fp.stderr_text().count("reload refused")
    write(fp.config_path, ctx.render(TLS_CONFIG, fp.ports, fp.admin_port, B=b.port, SECRET=later))
    refused(ctx, fp, n, "a certificate not there yet", r"later/tls\.crt")
    check_eq(served_cert(fp.port), der2, "the certificate served while it is missing")
    write(os.path.join(later, "tls.key"), key1.decode())
    write(os.path.join(later, ".tls.crt.tmp"), crt1.decode())
    os.rename(os.path.join(later, ".tls.crt.tmp"), os.path.join(later, "tls.crt"))
    t = time.monotonic()
    wait_until(lambda: served_cert(fp.port) == der1, DEADLINE + 30, "the late certificate",
               detail=lambda: fp.stderr_text()[-800:])
    ctx.note("late certificate served %.0f ms after it came" % ((time.monotonic() - t) * 1000))
    m2 = metrics(fp)
    check_eq((m2["ok"], m2["generation"]), (2, 3), "the late certificate's reload")


@case(timeout=60)
def watch_plain_file_writes(ctx):
    """A plain file: an in-place write and an editor's write-and-rename are
    picked up; a touch and identical bytes are not reloads."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(CONFIG, B=b.port, EXTRA="", ROUTES=routes("/v1/"))
    path = fp.config_path

    def text(*prefixes):
        return ctx.render(CONFIG, fp.ports, fp.admin_port, B=b.port, EXTRA="",
                          ROUTES=routes(*prefixes))

    write(path, text("/v1/", "/v2/"))  # in place: truncate, write
    t = time.monotonic()
    served_within(ctx, fp, "/v2/x", t, "an in-place write")

    tmp = os.path.join(os.path.dirname(path), ".fnproxy.yaml.swp")
    write(tmp, text("/v3/"))
    os.rename(tmp, path)
    t = time.monotonic()
    served_within(ctx, fp, "/v3/x", t, "a write and rename")
    m = wait_until(lambda: (lambda m: m if m["generation"] == 3 else None)(metrics(fp)), 10,
                   "generation 3")
    check_eq((m["ok"], m["refused"]), (2, 0), "two reloads")

    # Nothing changes: a touch, the same bytes written again, a rename of
    # identical bytes over the file, and a file of another name written.
    os.utime(path)
    write(path, text("/v3/"))
    write(tmp, text("/v3/"))
    os.rename(tmp, path)
    write(os.path.join(os.path.dirname(path), "other.yaml"), "x: 1\n")
    time.sleep(1.5 if SAN else 0.8)  # past the debounce: a reload would have happened
    m2 = metrics(fp)
    check_eq((m2["ok"], m2["refused"], m2["generation"], m2["hash"]),
             (2, 0, 3, m["hash"]), "no reload for writes that change nothing")
    # ...and the watch still works, with exactly one reload for one change.
    write(path, text("/v4/"))
    served_within(ctx, fp, "/v4/x", time.monotonic(), "a change after the no-ops")
    m3 = wait_until(lambda: (lambda m: m if m["generation"] == 4 else None)(metrics(fp)), 10,
                    "generation 4")
    check_eq((m3["ok"], m3["refused"]), (3, 0), "exactly one more reload")
    check_eq(fp.stderr_text().count("config change detected"), 3, "change log lines")


@case(timeout=60)
def watch_off_needs_sighup(ctx):
    """watch: off: a change is not picked up until SIGHUP, which reloads as
    ever; /config says watch off."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(CONFIG, B=b.port, EXTRA="watch: off", ROUTES=routes("/v1/"))
    check_eq(config_hash(fp)[2], "off", "/config watch")
    write(fp.config_path, ctx.render(CONFIG, fp.ports, fp.admin_port, B=b.port,
                                     EXTRA="watch: off", ROUTES=routes("/v2/")))
    time.sleep(1.5 if SAN else 0.8)  # past the debounce
    check_eq(status(fp, "/v2/x"), 404, "not reloaded without SIGHUP")
    m0 = metrics(fp)
    check_eq((m0["ok"], m0["generation"]), (0, 1), "no reload")
    fp.send_signal(signal.SIGHUP)
    wait_until(lambda: status(fp, "/v2/x") == 200, 10, "the route after SIGHUP")
    m1 = metrics(fp)
    check_eq((m1["ok"], m1["refused"], m1["generation"]), (1, 0, 2), "SIGHUP counted")
    check(m1["hash"] != m0["hash"], "the hash changed")
    check("config change detected" not in fp.stderr_text(), "no change detected with watch off")
