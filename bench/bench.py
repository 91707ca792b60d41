#!/usr/bin/env python3
"""fnproxy load benchmark: fnproxy against direct, nginx and HAProxy.

Run through bench/run.sh (which installs the peers, raises the fd limit and
makes sure everything this starts is killed on exit). Python 3 standard
library only.

Layout on a 2-core machine: the load generator (wrk, and the idle-connection
client) on CPU 0; the proxy under test and the backend on CPU 1. All
traffic is on 127.0.0.1, on ports chosen free at run time. Every target is
started once and stays up for the whole run; for each scenario the targets
take turns rep by rep (the order rotates each rep), so that slow drifts of a
shared machine hit every target alike.

Targets:
  direct   wrk -> backend (the limit: no proxy; plain HTTP only)
  fnproxy  build/fnproxy, workers: 1           (bench/fnproxy.yaml)
  nginx    1 worker, proxy_pass + keepalive   (bench/nginx-proxy.conf)
  haproxy  nbthread 1, http-reuse always      (bench/haproxy.cfg)
Backend: nginx returning a fixed body (bench/nginx-backend.conf) or
fnbackend; both are measured at the start and the faster one serves every
target (BENCH_BACKEND=nginx|fnbackend forces one). The backend is plain
HTTP; for the TLS scenarios the three proxies terminate TLS and `direct`
sits out. Each proxy has two TLS ports: one with the ECDSA P-256
certificate of certs/make-certs.sh (into build/bench/certs), for
tls-keepalive and tls-idle, and one with an RSA-2048 certificate from the
same CA (made here), for tls-handshake only: see CERTS.

Outputs under build/bench/: results.md, results.csv (medians and ratios),
results-raw.csv (every rep), results.png, logs/ (every process's output,
every wrk run), fnproxy-metrics.txt (its /metrics at the end).
"""

import argparse
import atexit
import csv
import grp
import http.client
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.path.abspath(os.path.join(ROOT, os.environ.get("BUILD", "build")))
OUT = os.path.join(BUILD, "bench")
LOGS = os.path.join(OUT, "logs")
PIDFILE = os.path.join(OUT, "pids")
HOST = "127.0.0.1"  # every socket of this benchmark is on loopback

LOAD_CPU, SERVER_CPU = 0, 1
CONNS = 50           # wrk connections in every load scenario
PACED_RATE = 5000    # req/s for the paced scenario
IDLE_CONNS = 10000   # idle keep-alive connections for the memory scenario
TLS_IDLE_CONNS = 5000  # idle TLS connections (each a full handshake by the Python client)
TARGETS = ["direct", "fnproxy", "nginx", "haproxy"]
PEERS = ["nginx", "haproxy"]
PROXIES = ["fnproxy", "nginx", "haproxy"]

# The server certificates, by the "cert" key of a scenario: each proxy has a
# TLS port per entry. ECDSA P-256 (certs/make-certs.sh's server.crt) is
# what a deployment would use and serves tls-keepalive and tls-idle. The
# full-handshake scenario uses RSA-2048 (signed by the same CA) instead:
# with ECDSA a full handshake costs the client more than the server (on
# the 2-core bench machine, wrk up to ~530 us of CPU each, the proxies
# 310-390 us), so wrk, on one CPU, set the pace and every proxy showed the
# same rate with CPU to spare. An RSA-2048 signature costs the server ~15
# times what its verification costs wrk (`openssl speed` there: 239 against
# 16 us, ECDSA P-256 19 against 60 us), which puts the server's side above
# the client's: the proxy's CPU, not wrk, is then the limit.
RSA_BITS = 2048
CERTS = {"ecdsa": "ECDSA P-256", "rsa": "RSA-%d" % RSA_BITS}

# The scenarios, in the order they run. kind "wrk" runs wrk against each
# target; "idle" opens many keep-alive connections and measures RSS.
# TLS scenarios ("tls": True) go to each proxy's TLS port for the
# scenario's "cert" (CERTS; default "ecdsa"): fnproxy a listener with a
# tls: block, nginx a server with `listen ... ssl`, HAProxy a `bind ... ssl
# crt`, each proxy with the same certificate as the others; the backend
# stays plain, so `direct` has no TLS figure. wrk runs with wrk-tls-shim.so
# preloaded, which counts full and resumed handshakes and, for
# "no_resume", makes every handshake a full one (wrk would otherwise resume
# the session it kept from the previous connection: see the shim).
SCENARIOS = [
    {"key": "keepalive", "title": "keep-alive, max rate", "kind": "wrk", "path": "/"},
    {"key": "newconn", "title": "new connection per request", "kind": "wrk", "path": "/",
     "headers": ["Connection: close"]},
    {"key": "64k", "title": "64 KiB responses, keep-alive", "kind": "wrk", "path": "/bytes/65536"},
    {"key": "tls-keepalive", "title": "TLS 1.3 keep-alive, max rate", "kind": "wrk", "path": "/",
     "tls": True, "targets": PROXIES},
    {"key": "tls-handshake",
     "title": "TLS 1.3 full handshake per request, %s certificate (new connection, no resumption)"
     % CERTS["rsa"],
     "kind": "wrk", "path": "/", "tls": True, "cert": "rsa", "no_resume": True,
     "headers": ["Connection: close"], "targets": PROXIES},
    {"key": "paced", "title": "paced %d req/s" % PACED_RATE, "kind": "wrk", "path": "/",
     "paced": PACED_RATE},
    {"key": "idle", "title": "%d idle keep-alive connections" % IDLE_CONNS, "kind": "idle",
     "path": "/"},
    {"key": "tls-idle", "title": "%d idle TLS 1.3 keep-alive connections" % TLS_IDLE_CONNS,
     "kind": "idle", "path": "/", "tls": True, "conns": TLS_IDLE_CONNS, "targets": PROXIES},
]
IDLE_KINDS = ("idle", "tls-idle")


def make_rsa_cert(d):
    """d/server-rsa.{crt,key}: an RSA (RSA_BITS) server certificate signed by the
    CA in d (ca.crt, ca.key from certs/make-certs.sh), with the names and
    extensions of its server.crt. Returns "" or why it failed. Made afresh
    on every call (well under a second): make-certs.sh may have made a new
    CA since the last run."""
    tmp = tempfile.mkdtemp(prefix="rsa.", dir=d)  # 0700: the key is made there
    try:
        key, csr, crt, ext = (os.path.join(tmp, n) for n in ("key", "csr", "crt", "ext"))
        with open(ext, "w") as f:
            f.write("[ leaf ]\nbasicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
                    "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n"
                    "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
        for argv in (
                ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % RSA_BITS,
                 "-out", key],
                ["openssl", "req", "-new", "-key", key, "-subj", "/O=fnproxy/CN=localhost",
                 "-config", "/dev/null", "-out", csr],
                ["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.crt"),
                 "-CAkey", os.path.join(d, "ca.key"), "-set_serial", "0x" + os.urandom(16).hex(),
                 "-days", "825", "-sha256", "-extfile", ext, "-extensions", "leaf", "-out", crt]):
            r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                return "openssl %s failed: %s" % (argv[1], r.stderr.strip()[-300:])
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        os.replace(key, os.path.join(d, "server-rsa.key"))
        os.replace(crt, os.path.join(d, "server-rsa.crt"))
        return ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tls_ready(ctx):
    """(ready, why not). The TLS scenarios run only when this says so: the
    certificates are made (ctx.certs, by CERTS key: cert, key, pem, der),
    this fnproxy accepts a tls: listener with each, and the wrk shim
    builds."""
    d = os.path.join(OUT, "certs")
    env = dict(os.environ, FNPROXY_CERT_CLIENTS="")
    r = subprocess.run(["sh", os.path.join(ROOT, "certs", "make-certs.sh"), d], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        return False, "certs/make-certs.sh failed: %s" % r.stderr.strip()[-300:]
    why = make_rsa_cert(d)
    if why:
        return False, "the %s certificate: %s" % (CERTS["rsa"], why)
    ctx.ca = os.path.join(d, "ca.crt")
    ctx.certs = {}
    for kind, stem in (("ecdsa", "server"), ("rsa", "server-rsa")):
        c = {"cert": os.path.join(d, stem + ".crt"), "key": os.path.join(d, stem + ".key"),
             # HAProxy takes the certificate and its key from one file.
             "pem": os.path.join(d, stem + ".pem")}
        with open(c["pem"], "w") as out:
            for n in (c["cert"], c["key"]):
                with open(n) as f:
                    out.write(f.read())
        os.chmod(c["pem"], 0o600)
        with open(c["cert"]) as f:
            c["der"] = ssl.PEM_cert_to_DER_cert(f.read())
        ctx.certs[kind] = c
    probe = os.path.join(OUT, "probe-tls.yaml")
    with open(probe, "w") as f:
        f.write("workers: 1\nlisteners:\n")
        for kind, c in ctx.certs.items():
            f.write("  - name: l-%s\n    listen: 127.0.0.1:%d\n    tls:\n"
                    "      certificates: [{ cert: %s, key: %s }]\n      min_version: \"1.2\"\n"
                    % (kind, free_port(), c["cert"], c["key"]))
        f.write("functions:\n  - name: f\n    endpoints: [127.0.0.1:9]\n    ingress:\n"
                "      routes:\n")
        for kind in ctx.certs:
            f.write("        - name: r-%s\n          match: { listener: l-%s, path_prefix: / }\n"
                    % (kind, kind))
    r = subprocess.run([ctx.fnproxy, "--check", "-c", probe], cwd=ROOT, capture_output=True,
                       text=True, timeout=10)
    if r.returncode != 0:
        return False, ("this fnproxy refuses a tls: listener (%s): %s"
                       % (" or ".join(CERTS.values()), (r.stdout + r.stderr).strip()[:300]))
    ctx.shim = os.path.join(OUT, "wrk-tls-shim.so")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return False, "no C compiler for bench/wrk-tls-shim.c"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", ctx.shim,
                        os.path.join(BENCH, "wrk-tls-shim.c"), "-ldl", "-lssl", "-lcrypto"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return False, "bench/wrk-tls-shim.c does not build: %s" % r.stderr.strip()[:300]
    return True, ""


def tls_probe(port, ca, cert_der):
    """One HTTPS GET to 127.0.0.1:port (SNI localhost), the certificate
    verified against ca. Returns "version suite" of the handshake; raises
    SystemExit unless the target serves the certificate cert_der and a 200."""
    c = ssl.create_default_context(cafile=ca)
    with socket.create_connection((HOST, port), timeout=3) as raw:
        with c.wrap_socket(raw, server_hostname="localhost") as tls:
            if tls.getpeercert(binary_form=True) != cert_der:
                raise SystemExit("bench: 127.0.0.1:%d serves another certificate" % port)
            desc = "%s %s" % (tls.version(), tls.cipher()[0])  # before the close
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            buf = b""
            while True:
                d = tls.recv(65536)
                if not d:
                    break
                buf += d
            if not re.match(rb"HTTP/1\.1 200 ", buf):
                raise SystemExit("bench: https://127.0.0.1:%d/ answered %r" % (port, buf[:40]))
            return desc


# ---- processes ---------------------------------------------------------

PROCS = []
PIN = False


def note(msg=""):
    print(msg, flush=True)


def spawn(name, argv, cpu=None, stdin=None, stdout=None, env=None):
    """Starts argv (pinned to cpu when pinning is on), output to logs/NAME.log.
    Remembers it, and writes its pid to build/bench/pids for run.sh's trap."""
    if cpu is not None and PIN:
        argv = ["taskset", "-c", str(cpu)] + list(argv)
    log = open(os.path.join(LOGS, name + ".log"), "ab")
    p = subprocess.Popen(argv, cwd=ROOT, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else log, stderr=log,
                         env=dict(os.environ, **env) if env else None)
    log.close()
    p.bench_name = name
    PROCS.append(p)
    write_pidfile()
    return p


def write_pidfile():
    """build/bench/pids: the processes started here and not yet reaped, for
    run.sh's trap (should this process die without cleaning up)."""
    with open(PIDFILE, "w") as f:
        f.write("".join("%d\n" % p.pid for p in PROCS if p.returncode is None))


def stop(p, grace=3.0):
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
    if p in PROCS:
        PROCS.remove(p)
    write_pidfile()


def stop_all():
    for p in list(PROCS):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    end = time.monotonic() + 4
    for p in list(PROCS):
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    PROCS.clear()
    write_pidfile()


def on_signal(signum, frame):
    print("\nbench: stopped by signal %d; stopping everything it started" % signum,
          file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=3.0):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_http(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            if http_get(port, "/", timeout=1.0)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


# ---- /proc -------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(ppid, utime+stime ticks) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree(pid):
    """pid and all its descendants (nginx's workers)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                kids.setdefault(st[0], []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    t = 0
    for p in pids:
        st = proc_stat(p)
        if st:
            t += st[1]
    return t / CLK_TCK


def rss_kib(pids):
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


def fd_count(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            pass
    return n


# ---- configs -----------------------------------------------------------

def render(template, out_name, values):
    with open(os.path.join(BENCH, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SystemExit("bench: %s: unfilled %s" % (template, ", ".join(sorted(set(left)))))
    path = os.path.join(OUT, out_name)
    with open(path, "w") as f:
        f.write(text)
    return path


def user_group():
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def fnproxy_accepts_access_log(fnproxy):
    """Whether this fnproxy's config has an access_log key yet."""
    probe = os.path.join(OUT, "probe-access-log.yaml")
    with open(probe, "w") as f:
        f.write("workers: 1\naccess_log: %s\nlisteners:\n  - name: l\n    listen: 127.0.0.1:%d\n"
                "functions:\n  - name: f\n    endpoints: [127.0.0.1:9]\n    ingress:\n"
                "      routes:\n        - name: r\n          match: { listener: l, path_prefix: / }\n"
                % (os.path.join(LOGS, "probe-access.log"), free_port()))
    r = subprocess.run([fnproxy, "--check", "-c", probe], cwd=ROOT, capture_output=True, timeout=10)
    return r.returncode == 0


# ---- backend and targets ----------------------------------------------

class Server:
    """A process serving HTTP on port: the backend or a target proxy."""

    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.proc = None
        self.port = None
        self.tls_ports = {}  # proxies only: a TLS port per CERTS key (same certificates for all)
        self.tls_desc = {}  # per CERTS key: "TLSv1.3 TLS_AES_128_GCM_SHA256" from the start-up probe
        self.crashes = []

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return tree(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self, path, tls=False, cert="ecdsa"):
        """The URL of path; with tls, on the TLS port that serves cert (a
        CERTS key)."""
        if tls:
            return "https://%s:%d%s" % (HOST, self.tls_ports[cert], path)
        return "http://%s:%d%s" % (HOST, self.port, path)


class Backend(Server):
    def restart(self, ctx):
        stop(self.proc)
        self.start(ctx)

    def start(self, ctx):
        if self.port is None:
            self.port = free_port()
        if self.kind == "fnbackend":
            self.proc = spawn("backend-fnbackend",
                              [ctx.fnbackend, "--listen", "%s:%d" % (HOST, self.port),
                               "--name", "bench"],
                              cpu=SERVER_CPU, stdout=subprocess.PIPE)
            line = self.proc.stdout.readline().decode()
            if not re.match(r"PORT (\d+)", line):
                raise SystemExit("bench: fnbackend did not print its port: %r" % line)
            self.proc.stdout.close()
        else:
            www = os.path.join(OUT, "www")
            os.makedirs(os.path.join(www, "bytes"), exist_ok=True)
            with open(os.path.join(www, "bytes", "65536"), "wb") as f:
                f.write(b"x" * 65536)
            user, group = user_group()
            conf = render("nginx-backend.conf", "nginx-backend.conf", {
                "USER": user, "GROUP": group, "DIR": OUT, "PORT": self.port, "WWW": www,
                "NOFILE": ctx.nofile, "WORKER_CONNECTIONS": ctx.worker_connections})
            self.proc = spawn("backend-nginx", ["nginx", "-p", OUT, "-c", conf, "-e",
                                                os.path.join(LOGS, "backend-nginx.error.log")],
                              cpu=SERVER_CPU)
        if not wait_http(self.port, self.proc):
            raise SystemExit("bench: backend %s did not come up (see %s)" % (self.kind, LOGS))
        st, body = http_get(self.port, "/bytes/65536")
        if st != 200 or len(body) != 65536:
            raise SystemExit("bench: backend %s: /bytes/65536 gave %d, %d bytes"
                             % (self.kind, st, len(body)))


class Target(Server):
    def restart(self, ctx):
        """A fresh process on the same port (direct: a fresh backend)."""
        if self.name == "direct":
            ctx.backend.restart(ctx)
        else:
            stop(self.proc)
        self.start(ctx)

    def start(self, ctx):
        b = ctx.backend
        if self.name == "direct":
            self.proc, self.port = b.proc, b.port
            return
        if self.port is None:
            self.port = free_port()
            self.tls_ports = {k: free_port() for k in CERTS}
        user, group = user_group()
        if self.name == "fnproxy":
            if not hasattr(self, "admin_port"):
                self.admin_port = free_port()
            conf = render("fnproxy.yaml", "fnproxy.yaml", {
                "PORT": self.port, "ADMIN_PORT": self.admin_port, "BACKEND_PORT": b.port,
                "TLS_PORT": self.tls_ports["ecdsa"], "CERT": ctx.certs["ecdsa"]["cert"],
                "KEY": ctx.certs["ecdsa"]["key"], "TLS_RSA_PORT": self.tls_ports["rsa"],
                "RSA_CERT": ctx.certs["rsa"]["cert"], "RSA_KEY": ctx.certs["rsa"]["key"],
                "ACCESS_LOG_FNPROXY": ("access_log: %s" % os.path.join(LOGS, "fnproxy-access.log"))
                if ctx.access_log else ""})
            self.proc = spawn("fnproxy", [ctx.fnproxy, "-c", conf], cpu=SERVER_CPU)
        elif self.name == "nginx":
            conf = render("nginx-proxy.conf", "nginx-proxy.conf", {
                "USER": user, "GROUP": group, "DIR": OUT, "PORT": self.port,
                "TLS_PORT": self.tls_ports["ecdsa"], "CERT": ctx.certs["ecdsa"]["cert"],
                "KEY": ctx.certs["ecdsa"]["key"], "TLS_RSA_PORT": self.tls_ports["rsa"],
                "RSA_CERT": ctx.certs["rsa"]["cert"], "RSA_KEY": ctx.certs["rsa"]["key"],
                "BACKEND_PORT": b.port, "NOFILE": ctx.nofile,
                "WORKER_CONNECTIONS": ctx.worker_connections,
                "ACCESS_LOG_NGINX": ("access_log %s combined buffer=64k flush=1s;"
                                     % os.path.join(LOGS, "nginx-access.log"))
                if ctx.access_log else "access_log off;"})
            self.proc = spawn("nginx", ["nginx", "-p", OUT, "-c", conf, "-e",
                                        os.path.join(LOGS, "nginx.error.log")], cpu=SERVER_CPU)
        elif self.name == "haproxy":
            conf = render("haproxy.cfg", "haproxy.cfg", {
                "DIR": OUT, "PORT": self.port, "BACKEND_PORT": b.port, "NOFILE": ctx.nofile,
                "TLS_PORT": self.tls_ports["ecdsa"], "PEM": ctx.certs["ecdsa"]["pem"],
                "TLS_RSA_PORT": self.tls_ports["rsa"], "RSA_PEM": ctx.certs["rsa"]["pem"],
                "MAXCONN": ctx.maxconn,
                "ACCESS_LOG_HAPROXY_GLOBAL": "log stdout format raw local0" if ctx.access_log else "",
                "ACCESS_LOG_HAPROXY_DEFAULTS": "log global\n    option httplog"
                if ctx.access_log else ""})
            # stdout carries the access log only (HAProxy's own messages
            # go to stderr, logs/haproxy.log).
            with open(os.path.join(LOGS, "haproxy-access.log"), "ab") as acc:
                self.proc = spawn("haproxy", ["haproxy", "-db", "-f", conf], cpu=SERVER_CPU,
                                  stdout=acc)
        if not wait_http(self.port, self.proc):
            raise SystemExit("bench: %s did not come up (see %s/%s.log)" % (self.name, LOGS, self.name))
        for path, size in (("/", None), ("/bytes/65536", 65536)):
            st, body = http_get(self.port, path)
            if st != 200 or (size and len(body) != size):
                raise SystemExit("bench: %s: GET %s gave %d with %d bytes"
                                 % (self.name, path, st, len(body)))
        end = time.monotonic() + 5
        for kind, port in self.tls_ports.items():  # each TLS port: its certificate, a 200
            while True:
                try:
                    self.tls_desc[kind] = tls_probe(port, ctx.ca, ctx.certs[kind]["der"])
                    break
                except (OSError, ssl.SSLError) as e:
                    if time.monotonic() > end or not self.alive():
                        raise SystemExit("bench: %s: no HTTPS with the %s certificate on port %d: %s"
                                         % (self.name, CERTS[kind], port, e))
                    time.sleep(0.05)

    def check_alive(self, ctx, where):
        """After a run: a target that died is recorded and restarted."""
        if self.name == "direct" or self.alive():
            return True
        rc = self.proc.returncode
        why = ("killed by signal %d" % -rc) if rc < 0 else ("exit %d" % rc)
        self.crashes.append("%s: %s" % (where, why))
        note("  !! %s died during %s (%s); see %s; restarting it"
             % (self.name, where, why, os.path.join(LOGS, self.name + ".log")))
        if self.proc in PROCS:
            PROCS.remove(self.proc)
        write_pidfile()
        try:
            self.start(ctx)
        except SystemExit as e:
            note("  !! %s could not be restarted: %s" % (self.name, e))
        return False


# ---- running load ------------------------------------------------------

WRK_RE = re.compile(r"^BENCH (.*)$", re.M)
TLSSTAT_RE = re.compile(r"^TLSSTAT full=(\d+) resumed=(\d+) offered=(\d+) version=(\S+) "
                        r"cipher=(\S+) group=(\S+)$", re.M)


def wrk_tls_env(ctx, sc, resume=None):
    """wrk's environment for scenario sc: for TLS, the shim preloaded (it
    counts handshakes) and, unless resume, told to drop sessions."""
    if not sc.get("tls"):
        return None
    if resume is None:
        resume = not sc.get("no_resume")
    return {"LD_PRELOAD": ctx.shim, "BENCH_TLS_NO_RESUME": "0" if resume else "1"}


def run_wrk(ctx, name, url, seconds, headers=(), paced=None, conns=CONNS, env=None):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    argv += ["-s", os.path.join(BENCH, "paced.lua" if paced else "report.lua"), url]
    if paced:
        argv += ["--", str(paced)]
    logpath = os.path.join(LOGS, "wrk", name + ".log")
    # wrk's own CPU time, from the rusage of reaped children (wrk is the
    # only child reaped meanwhile): near 100% of its run, the load
    # generator, not the target, sets the pace.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logpath, "wb") as out:
        p = spawn("wrk", argv, cpu=LOAD_CPU, stdout=out, env=env)
    try:
        p.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        note("  !! wrk did not finish in time; killed")
    stop(p)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    with open(logpath) as f:
        text = f.read()
    m = WRK_RE.search(text)
    if not m:
        return None
    r = {}
    for kv in m.group(1).split():
        k, v = kv.split("=")
        r[k] = float(v)
    r["wrk_cpu_pct"] = 100.0 * wrk_cpu / (r["duration_us"] / 1e6) if r["duration_us"] > 0 else None
    m = TLSSTAT_RE.search(text)
    if m:
        r["tls_full"], r["tls_resumed"], r["tls_offered"] = (int(m.group(i)) for i in (1, 2, 3))
        r["tls_params"] = "%s %s %s" % (m.group(4), m.group(5), m.group(6))
    return r


def wrk_run(ctx, sc, t, rep, seconds):
    """One measured wrk run of scenario sc against target t."""
    be = ctx.backend
    tp, bp = t.pids(), be.pids()
    proxied = t.name != "direct"
    cpu0 = cpu_seconds(tp) if proxied else None
    bcpu0 = cpu_seconds(bp)
    ctx.truncate_access_logs()
    log0 = ctx.access_log_pos(t)
    r = run_wrk(ctx, "%s-%s-%d" % (sc["key"], t.name, rep),
                t.url(sc["path"], sc.get("tls"), sc.get("cert", "ecdsa")), seconds,
                sc.get("headers", ()), sc.get("paced"), env=wrk_tls_env(ctx, sc))
    cpu1 = cpu_seconds(t.pids()) if proxied else None
    bcpu1 = cpu_seconds(be.pids())
    rss = rss_kib(t.pids())
    log1 = ctx.access_log_pos(t)
    alive = t.check_alive(ctx, "%s rep %d" % (sc["key"], rep + 1))
    row = {"scenario": sc["key"], "target": t.name, "rep": rep + 1, "alive_after": int(alive)}
    if r is None or r["requests"] <= 0:
        row["failed"] = 1
        return row
    n = r["requests"]
    row.update({
        "requests": int(n),
        "rps": n / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000, "p999_ms": r["p999_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "err_connect": int(r["err_connect"]), "err_read": int(r["err_read"]),
        "err_write": int(r["err_write"]), "err_timeout": int(r["err_timeout"]),
        "non2xx": int(r["err_status"]),
        "proxy_cpu_us": (cpu1 - cpu0) / n * 1e6 if proxied else None,
        # The proxy's CPU time over the run's length: near 100 (less the
        # backend's share of CPU 1), the proxy set the pace; see wrk_cpu_pct.
        "proxy_cpu_pct": 100.0 * (cpu1 - cpu0) / (r["duration_us"] / 1e6)
        if proxied and r["duration_us"] > 0 else None,
        "backend_cpu_us": (bcpu1 - bcpu0) / n * 1e6,
        "rss_kib": rss,
        "wrk_cpu_pct": r.get("wrk_cpu_pct"),
        "access_log_bytes": (log1 - log0) if log0 is not None and log1 is not None else None,
        "failed": 0,
    })
    if sc.get("tls"):
        row.update({"tls_full": r.get("tls_full"), "tls_resumed": r.get("tls_resumed"),
                    "tls_params": r.get("tls_params")})
    return row


def idle_run(ctx, sc, t, rep):
    """Opens many keep-alive connections (one request each; for tls-idle,
    each after a full TLS handshake), holds them idle and measures the
    target's RSS per connection.

    Each rep starts from a fresh process (restarted on the same port): in a
    process that already held and freed that many connections, the
    allocator hands the same memory back and the increase says nothing. A
    1 s keep-alive run at the usual concurrency (over TLS for tls-idle)
    warms it first, so that the buffers and pools that the load needs anyway
    are in the baseline."""
    tls = bool(sc.get("tls"))
    conns = min(sc.get("conns", ctx.idle_conns), ctx.idle_conns)
    t.restart(ctx)
    cert = sc.get("cert", "ecdsa")
    run_wrk(ctx, "warmup-%s-%s-%d" % (sc["key"], t.name, rep), t.url(sc["path"], tls, cert), 1,
            env=wrk_tls_env(ctx, sc))
    time.sleep(0.5)
    rss0, fds0 = rss_kib(t.pids()), fd_count(t.pids())
    argv = [sys.executable, os.path.join(BENCH, "idle.py"), "--conns", str(conns),
            "--path", sc["path"], "--open-timeout", "60", "--hold-max", "90"]
    argv += ["--port", str(t.tls_ports[cert]), "--tls"] if tls else ["--port", str(t.port)]
    p = spawn("idle", argv, cpu=LOAD_CPU, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    row = {"scenario": sc["key"], "target": t.name, "rep": rep + 1, "failed": 1}
    ready = p.stdout.readline().decode()
    m = re.match(r"READY opened=(\d+) failed=(\d+) non2xx=(\d+) seconds=([\d.]+)", ready)
    if m:
        opened, failed, non2xx = int(m.group(1)), int(m.group(2)), int(m.group(3))
        time.sleep(1.0)  # let the target settle (release what it releases)
        rss1, fds1 = rss_kib(t.pids()), fd_count(t.pids())
        p.stdin.write(b"go\n")
        p.stdin.flush()
        done = p.stdout.readline().decode()
        m2 = re.match(r"DONE alive=(\d+) closed_by_peer=(\d+)", done)
        alive_conns = int(m2.group(1)) if m2 else 0
        closed = int(m2.group(2)) if m2 else opened
        row.update({
            "failed": 0, "conns": opened, "conn_failed": failed, "non2xx": non2xx,
            "open_s": float(m.group(4)), "closed_by_peer": closed, "alive_conns": alive_conns,
            "rss_before_kib": rss0, "rss_idle_kib": rss1,
            "kib_per_conn": (rss1 - rss0) / opened if opened else None,
            "fds_before": fds0, "fds_idle": fds1,
        })
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    stop(p)
    time.sleep(1.0)
    row["rss_after_close_kib"] = rss_kib(t.pids())
    row["rss_kib"] = row.get("rss_idle_kib")
    row["alive_after"] = int(t.check_alive(ctx, "%s rep %d" % (sc["key"], rep + 1)))
    return row


# ---- summary -----------------------------------------------------------

def med(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None and not r.get("failed")]
    return statistics.median(v) if v else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize(raw, scenarios):
    out = []
    for sc in scenarios:
        by_t = {}
        for t in TARGETS:
            rows = [r for r in raw if r["scenario"] == sc["key"] and r["target"] == t]
            if not rows:
                continue
            s = {"scenario": sc["key"], "target": t, "reps": len([r for r in rows if not r.get("failed")]),
                 "failed_reps": len([r for r in rows if r.get("failed")]),
                 "crashed_reps": len([r for r in rows if not r.get("alive_after", 1)])}
            for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "proxy_cpu_us", "backend_cpu_us", "rss_kib",
                      "wrk_cpu_pct",
                      "kib_per_conn", "rss_before_kib", "rss_idle_kib", "rss_after_close_kib"):
                s[k] = med(rows, k)
            s["errors"] = sum(r.get(k, 0) or 0 for r in rows
                              for k in ("err_connect", "err_read", "err_write", "err_timeout"))
            s["non2xx"] = sum(r.get("non2xx", 0) or 0 for r in rows)
            s["closed_by_peer"] = sum(r.get("closed_by_peer", 0) or 0 for r in rows)
            s["conn_failed"] = sum(r.get("conn_failed", 0) or 0 for r in rows)
            by_t[t] = s
        if not by_t:
            continue
        d = by_t.get("direct", {})
        peers = [by_t[p] for p in PEERS if p in by_t]

        def best(key, pick):
            v = [p[key] for p in peers if p.get(key) is not None]
            return pick(v) if v else None
        b_rps, b_p99 = best("rps", max), best("p99_ms", min)
        b_cpu, b_kib = best("proxy_cpu_us", min), best("kib_per_conn", min)
        for t in TARGETS:
            if t not in by_t:
                continue
            s = by_t[t]
            s["rps_x_direct"] = ratio(s["rps"], d.get("rps"))
            s["rps_x_peer"] = ratio(s["rps"], b_rps)
            s["p99_x_direct"] = ratio(s["p99_ms"], d.get("p99_ms"))
            s["p99_x_peer"] = ratio(s["p99_ms"], b_p99)
            s["cpu_x_peer"] = ratio(s["proxy_cpu_us"], b_cpu)
            s["kib_x_peer"] = ratio(s["kib_per_conn"], b_kib)
            out.append(s)
    return out


def fmt(v, spec="%.0f", none="-"):
    return none if v is None else spec % v


def row_cells(s, idle):
    """One summary row's cells as the printed table and results.md both show
    them (each adds its own error columns to a load row)."""
    if idle:
        return [s["target"], fmt(s["kib_per_conn"], "%.2f"), fmt(s["kib_x_peer"], "%.2f"),
                fmt(s["rss_before_kib"], "%.0f KiB"), fmt(s["rss_idle_kib"], "%.0f KiB"),
                fmt(s["rss_after_close_kib"], "%.0f KiB"), str(s["conn_failed"]),
                str(s["closed_by_peer"])]
    return [s["target"], fmt(s["rps"]), fmt(s["rps_x_direct"], "%.2f"),
            fmt(s["rps_x_peer"], "%.2f"), fmt(s["p50_ms"], "%.3f"), fmt(s["p99_ms"], "%.3f"),
            fmt(s["p99_x_peer"], "%.2f"), fmt(s["p99_x_direct"], "%.2f"),
            fmt(s["proxy_cpu_us"], "%.1f"), fmt(s["cpu_x_peer"], "%.2f"),
            fmt(s["backend_cpu_us"], "%.1f"), fmt(s["wrk_cpu_pct"], "%.0f"),
            fmt(s["rss_kib"] and s["rss_kib"] / 1024, "%.1f")]


def table_lines(summary, titles):
    lines = []
    cur = None
    for s in summary:
        if s["scenario"] != cur:
            cur = s["scenario"]
            lines.append("")
            lines.append("== %s" % titles[cur])
            if cur in IDLE_KINDS:
                lines.append("%-8s %9s %9s %11s %11s %11s %6s %6s" % (
                    "target", "KiB/conn", "x peer", "RSS before", "RSS idle", "after close",
                    "failed", "closed"))
            else:
                lines.append("%-8s %9s %7s %7s %8s %8s %7s %7s %9s %6s %8s %6s %8s %6s" % (
                    "target", "req/s", "x dir", "x peer", "p50 ms", "p99 ms", "p99 xp",
                    "p99 xd", "CPU us/rq", "x peer", "be us/rq", "wrk %", "RSS MiB", "errs"))
        if cur in IDLE_KINDS:
            lines.append("%-8s %9s %9s %11s %11s %11s %6s %6s" % tuple(row_cells(s, True)))
        else:
            lines.append("%-8s %9s %7s %7s %8s %8s %7s %7s %9s %6s %8s %6s %8s %6s"
                         % tuple(row_cells(s, False) + [str(s["errors"] + s["non2xx"])]))
    return lines


def markdown(summary, titles, info, checks, notes):
    md = ["# fnproxy benchmark results", ""]
    md += ["- %s: %s" % (k, v) for k, v in info]
    md += ["", "Medians over the reps. `x direct` and `x peer`: ratio to the direct run and to "
           "the better of nginx and HAProxy (higher throughput, lower latency, CPU and memory). "
           "CPU per request: user+sys time of the proxy's processes over the run (from "
           "/proc/PID/stat) divided by the requests wrk completed; for `direct` only the "
           "backend's is shown. wrk CPU %: the load generator's CPU time over the run's "
           "length (near 100: wrk on CPU 0, not the target, set the pace). RSS: the target's "
           "processes (for `direct`, the backend's) after the run. Errors: wrk's connect/read/write/timeout errors plus non-2xx answers, summed "
           "over the reps.", ""]
    cur = None
    for s in summary:
        if s["scenario"] != cur:
            cur = s["scenario"]
            md += ["", "## %s" % titles[cur], ""]
            if cur in IDLE_KINDS:
                md += ["| target | KiB per idle conn | x peer | RSS before | RSS with idle conns "
                       "| RSS after close | conns failed | closed while idle |",
                       "|---|---:|---:|---:|---:|---:|---:|---:|"]
            else:
                md += ["| target | req/s | x direct | x peer | p50 ms | p99 ms | p99 x peer "
                       "| p99 x direct | proxy CPU µs/req | CPU x peer | backend CPU µs/req "
                       "| wrk CPU % | RSS MiB | errors | non-2xx |",
                       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        cells = row_cells(s, cur in IDLE_KINDS)
        if cur not in IDLE_KINDS:
            cells += [str(s["errors"]), str(s["non2xx"])]
        md.append("| " + " | ".join(cells) + " |")
    md += ["", "## fnproxy against the targets of issues 3 and 4", "",
           "| target | goal | measured | |", "|---|---|---|---|"]
    md += ["| %s | %s | %s | %s |" % c for c in checks]
    if notes:
        md += ["", "## Notes", ""] + ["- " + n for n in notes]
    return "\n".join(md) + "\n"


def target_checks(summary):
    def get(sc, t, k):
        for s in summary:
            if s["scenario"] == sc and s["target"] == t:
                return s.get(k)
        return None
    checks = []

    def add(what, goal, v, ok, spec="%.2f"):
        checks.append((what, goal, fmt(v, spec),
                       "n/a" if ok is None else ("met" if ok else "NOT met")))
    v = get("keepalive", "fnproxy", "cpu_x_peer")
    add("CPU per keep-alive request", "<= 0.70x better peer", v, None if v is None else v <= 0.7)
    v = get("keepalive", "fnproxy", "rps_x_peer")
    add("keep-alive throughput", ">= 1.20x better peer", v, None if v is None else v >= 1.2)
    v = get("paced", "fnproxy", "p99_x_peer")
    add("p99 at %d req/s" % PACED_RATE, "<= 1.00x better peer", v, None if v is None else v <= 1.0)
    v = get("idle", "fnproxy", "kib_per_conn")
    add("memory per idle plain connection", "<= 1 KiB", v, None if v is None else v <= 1.0,
        "%.2f KiB")
    v = get("newconn", "fnproxy", "rps_x_peer")
    add("new-connection rate", ">= 1.00x better peer", v, None if v is None else v >= 1.0)
    v = get("tls-handshake", "fnproxy", "rps_x_peer")
    add("TLS full handshake rate", ">= 1.00x better peer", v, None if v is None else v >= 1.0)
    v = get("tls-idle", "fnproxy", "kib_per_conn")
    add("memory per idle TLS connection", "<= 8 KiB", v, None if v is None else v <= 8.0, "%.2f KiB")
    # Issue 4 asks for these ratios, without a target.
    v = get("tls-keepalive", "fnproxy", "rps_x_peer")
    checks.append(("TLS keep-alive throughput", "(reported) x better peer", fmt(v, "%.2f"), "info"))
    v = get("tls-keepalive", "fnproxy", "cpu_x_peer")
    checks.append(("TLS keep-alive CPU per request", "(reported) x better peer", fmt(v, "%.2f"), "info"))
    v = get("tls-handshake", "fnproxy", "cpu_x_peer")
    checks.append(("TLS handshake CPU per request", "(reported) x better peer", fmt(v, "%.2f"), "info"))
    return checks


def plot(summary, scenarios):
    """build/bench/results.png: throughput, p99, CPU per request and KiB per
    idle connection, per target. Returns the path or None."""
    if not shutil.which("gnuplot"):
        return None
    keys = [sc["key"] for sc in scenarios if sc["kind"] == "wrk"]
    get = {(s["scenario"], s["target"]): s for s in summary}
    dat = os.path.join(OUT, "plot.dat")
    with open(dat, "w") as f:
        f.write("# scenario " + " ".join("rps_%s" % t for t in TARGETS) + " "
                + " ".join("p99_%s" % t for t in TARGETS) + " "
                + " ".join("cpu_%s" % t for t in TARGETS) + "\n")
        for k in keys:
            vals = []
            for field in ("rps", "p99_ms", "cpu"):
                for t in TARGETS:
                    s = get.get((k, t), {})
                    v = s.get("backend_cpu_us" if t == "direct" else "proxy_cpu_us") \
                        if field == "cpu" else s.get(field)
                    vals.append("?" if v is None else "%.6g" % v)
            f.write("%s %s\n" % (k, " ".join(vals)))
    idat = os.path.join(OUT, "plot-idle.dat")
    with open(idat, "w") as f:
        f.write("# target kib_per_plain_conn kib_per_tls_conn\n")
        for t in PROXIES:
            v = [get.get((k, t), {}).get("kib_per_conn") for k in IDLE_KINDS]
            f.write("%s %s\n" % (t, " ".join("?" if x is None else "%.6g" % x for x in v)))
    png = os.path.join(OUT, "results.png")
    r = subprocess.run(["gnuplot", "-e", "datafile='%s'; idlefile='%s'; outfile='%s'"
                        % (dat, idat, png), os.path.join(BENCH, "plot.gp")],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        note("bench: gnuplot failed: %s" % r.stderr.strip()[:500])
        return None
    return png


# ---- main --------------------------------------------------------------

class Ctx:
    pass


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else
                            ("%.6g" % r[k] if isinstance(r.get(k), float) else r[k])) for k in fields})


def versions():
    def first(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return {
        "nginx": first(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": first(["haproxy", "-v"]).split(" - ")[0],
        "wrk": first(["wrk", "--version"]).split(" Copyright")[0],
        "fnproxy": first(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    global PIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 rep, 3 s runs: checks the harness")
    a = ap.parse_args()

    t_start = time.monotonic()
    quick = a.quick
    # Time budget. Full: 6 wrk scenarios (22 target x scenario pairs, the
    # TLS ones without direct) x (1 s warm-up + 3 reps x 8 s) ~ 590 s, the
    # two idle scenarios ~ 130 s, backend trial, start-up and the
    # resumption probe ~ 30 s: ~ 12.5 min. Quick: 1 rep of 3 s, ~ 2.3 min.
    reps = int(os.environ.get("BENCH_REPS", 1 if quick else 3))
    seconds = int(os.environ.get("BENCH_SECONDS", 3 if quick else 8))
    budget = 170 if quick else 870  # seconds; runs that would pass it are skipped
    # BENCH_SCENARIOS="tls-handshake ..." (keys, comma or space separated):
    # run only those, for a check of one scenario without the whole run.
    only = os.environ.get("BENCH_SCENARIOS", "").replace(",", " ").split()
    unknown = [k for k in only if k not in [sc["key"] for sc in SCENARIOS]]
    if unknown:
        raise SystemExit("bench: BENCH_SCENARIOS: no scenario %s (there are: %s)"
                         % (", ".join(unknown), ", ".join(sc["key"] for sc in SCENARIOS)))
    scenarios = [sc for sc in SCENARIOS if not only or sc["key"] in only]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(stop_all)

    for d in (os.path.join(LOGS, "wrk"), os.path.join(OUT, "tmp")):
        os.makedirs(d, exist_ok=True)

    ctx = Ctx()
    ctx.fnproxy = os.path.join(BUILD, "fnproxy")
    ctx.fnbackend = os.path.join(BUILD, "fnbackend")
    for b in (ctx.fnproxy, ctx.fnbackend):
        if not os.access(b, os.X_OK):
            raise SystemExit("bench: %s is missing: run `make build-all` first" % b)
    ctx.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    ctx.worker_connections = max(1024, min(ctx.nofile - 200, 65000))
    ctx.idle_conns = min(IDLE_CONNS, ctx.nofile - 500)
    ctx.maxconn = max(1000, min(ctx.idle_conns + 500, ctx.nofile - 100))
    acc = os.environ.get("BENCH_ACCESS_LOG", "auto")
    fn_has_log = fnproxy_accepts_access_log(ctx.fnproxy)
    ctx.access_log = fn_has_log if acc == "auto" else acc in ("1", "on", "yes")
    if ctx.access_log and not fn_has_log:
        raise SystemExit("bench: BENCH_ACCESS_LOG=on but this fnproxy has no access_log key")

    # Every proxy logs to a file under build/bench/logs, truncated before
    # each run to keep it small. fnproxy and nginx append (O_APPEND), so the
    # size after a run is what the run wrote. HAProxy's stdout loses
    # O_APPEND (HAProxy sets O_NONBLOCK with F_SETFL): it goes on writing at
    # its own offset and the truncated part becomes a hole, so what it wrote
    # is the change in its fd 1's offset (/proc/PID/fdinfo/1).
    access_logs = {t: os.path.join(LOGS, "%s-access.log" % t) for t in PROXIES}

    def truncate_access_logs():
        for p in access_logs.values():
            if ctx.access_log and os.path.exists(p):
                os.truncate(p, 0)
    ctx.truncate_access_logs = truncate_access_logs

    def access_log_pos(t):
        """Where t's access log stands: bytes written, for a delta over a run."""
        if not ctx.access_log or t.name not in access_logs:
            return None
        try:
            if t.name == "haproxy":
                with open("/proc/%d/fdinfo/1" % t.proc.pid) as f:
                    return int(re.search(r"^pos:\s*(\d+)", f.read(), re.M).group(1))
            return os.path.getsize(access_logs[t.name])
        except (OSError, AttributeError):
            return None
    ctx.access_log_pos = access_log_pos

    tls_ok, tls_why = tls_ready(ctx)
    if not tls_ok:
        raise SystemExit("bench: cannot set up the TLS scenarios: " + tls_why)

    cpus = sorted(os.sched_getaffinity(0))
    PIN = LOAD_CPU in cpus and SERVER_CPU in cpus and shutil.which("taskset") is not None
    notes = []
    info = []
    ver = versions()
    mode = "quick (--quick)" if quick else "full"
    note("fnproxy bench, %s: %d rep(s) of %d s per scenario and target, wrk -t1 -c%d"
         % (mode, reps, seconds, CONNS))
    if only:
        note("scenarios: only %s (BENCH_SCENARIOS)" % ", ".join(sc["key"] for sc in scenarios))
        notes.append("only the scenario(s) %s ran (BENCH_SCENARIOS)"
                     % ", ".join(sc["key"] for sc in scenarios))
    if PIN:
        note("pinning: load generator (wrk, idle client) on CPU %d (taskset -c %d); "
             "proxy and backend on CPU %d (taskset -c %d)" % (LOAD_CPU, LOAD_CPU, SERVER_CPU, SERVER_CPU))
    else:
        note("pinning: OFF (this process may use CPUs %s; need 0 and 1)" % cpus)
    note("fd limit %d; idle scenario: %d connections; access logs: %s"
         % (ctx.nofile, ctx.idle_conns, "on for every proxy" if ctx.access_log else
            "off for every proxy (fnproxy has no access_log yet)" if not fn_has_log else "off"))
    note("versions: fnproxy %s, nginx %s, %s, %s" % (ver["fnproxy"], ver["nginx"], ver["haproxy"], ver["wrk"]))
    note("load average at start: %s" % open("/proc/loadavg").read().split()[:3])

    # Backend: measure both quickly, keep the faster.
    forced = os.environ.get("BENCH_BACKEND")
    cands = [forced] if forced else ["nginx", "fnbackend"]
    backends = {}
    for k in cands:
        b = Backend("backend", k)
        b.start(ctx)
        backends[k] = b
    pick_note = ""
    if len(backends) > 1:
        trial = {k: [] for k in backends}
        for i in range(2 if quick else 3):
            for k, b in backends.items():
                r = run_wrk(ctx, "backend-trial-%s-%d" % (k, i), b.url("/"), 1 if quick else 2)
                if r and r["requests"] > 0 and r["err_status"] == 0:
                    trial[k].append(r["requests"] / (r["duration_us"] / 1e6))
        desc = []
        for k, v in trial.items():
            if v:
                desc.append("%s %.0f req/s (range %.0f-%.0f)" % (k, statistics.median(v), min(v), max(v)))
            else:
                desc.append("%s failed" % k)
        ok = {k: statistics.median(v) for k, v in trial.items() if v}
        if not ok:
            raise SystemExit("bench: no backend served the trial")
        chosen = max(ok, key=ok.get)
        why = "faster"
        # nginx is the neutral choice (neither side's code): keep it unless
        # fnbackend is clearly faster.
        if chosen != "nginx" and "nginx" in ok and ok[chosen] < ok["nginx"] * 1.05:
            chosen, why = "nginx", "within 5%: the neutral one"
        pick_note = "direct keep-alive trial: %s; chose %s (%s)" % ("; ".join(desc), chosen, why)
        for k, b in backends.items():
            if k != chosen:
                stop(b.proc)
    else:
        chosen = cands[0]
        pick_note = "forced by BENCH_BACKEND"
    ctx.backend = backends[chosen]
    note("backend: %s on port %d (%s)" % (chosen, ctx.backend.port, pick_note))

    targets = {}
    for name in TARGETS:
        t = Target(name, name)
        t.start(ctx)
        targets[name] = t
    note("targets: " + ", ".join("%s :%d" % (n, t.port) for n, t in targets.items())
         + "; TLS: " + ", ".join("%s :%d (%s)" % (n, targets[n].tls_ports[k], CERTS[k])
                                 for n in PROXIES for k in CERTS))
    note("TLS probe (Python client, SNI localhost, verified against the bench CA): "
         + "; ".join("%s %s %s" % (n, CERTS[k], targets[n].tls_desc[k])
                     for n in PROXIES for k in CERTS))
    fn_rss_start = rss_kib(targets["fnproxy"].pids())

    raw = []
    titles = {sc["key"]: sc["title"] for sc in SCENARIOS}
    ran = []
    skipped_budget = 0
    fn_rss_trace = []
    resume_probe = []
    for sc in scenarios:
        ran.append(sc)
        note("\n-- %s" % sc["title"])
        names = sc.get("targets", TARGETS)
        if sc["kind"] == "wrk":
            for name in names:  # warm-up, not recorded
                if time.monotonic() - t_start + 1 < budget:
                    run_wrk(ctx, "warmup-%s-%s" % (sc["key"], name),
                            targets[name].url(sc["path"], sc.get("tls"), sc.get("cert", "ecdsa")), 1,
                            sc.get("headers", ()), sc.get("paced"), env=wrk_tls_env(ctx, sc))
        if sc.get("no_resume"):
            # Not recorded either: the same load with wrk left to resume
            # the session it kept (its own behaviour), to show that each
            # server resumes and what that is worth next to full handshakes.
            for name in names:
                if time.monotonic() - t_start + 2 < budget:
                    r = run_wrk(ctx, "resume-probe-%s" % name,
                                targets[name].url(sc["path"], True, sc.get("cert", "ecdsa")), 1,
                                sc.get("headers", ()), env=wrk_tls_env(ctx, sc, resume=True))
                    if r and r.get("tls_full") is not None:
                        resume_probe.append((name, r["requests"] / (r["duration_us"] / 1e6),
                                             r["tls_resumed"], r["tls_full"] + r["tls_resumed"]))
                        note("  %-8s resumption probe (1 s, wrk resumes): %6.0f req/s, %d of %d "
                             "handshakes resumed" % resume_probe[-1])
        for rep in range(reps):
            k = rep % len(names)
            order = names[k:] + names[:k]
            for name in order:
                t = targets[name]
                need = seconds + 3 if sc["kind"] == "wrk" else (25 if sc.get("tls") else 20)
                if time.monotonic() - t_start + need > budget:
                    skipped_budget += 1
                    continue
                if sc["kind"] == "wrk":
                    row = wrk_run(ctx, sc, t, rep, seconds)
                    if row.get("failed"):
                        note("  %-8s rep %d: wrk gave no result (see build/bench/logs/wrk/)" % (name, rep + 1))
                    else:
                        errs = row["err_connect"] + row["err_read"] + row["err_write"] + row["err_timeout"]
                        note("  %-8s rep %d: %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %s us/req  "
                             "proxy %s%%  wrk %s%%  rss %6.1f MiB%s" % (
                                 name, rep + 1, row["rps"], row["p50_ms"], row["p99_ms"],
                                 fmt(row["proxy_cpu_us"] if name != "direct" else None, "%.1f"),
                                 fmt(row["proxy_cpu_pct"], "%.0f"),
                                 fmt(row["wrk_cpu_pct"], "%.0f"), row["rss_kib"] / 1024,
                                 ("  ERRORS %d" % errs if errs else "")
                                 + ("  NON-2XX %d" % row["non2xx"] if row["non2xx"] else "")
                                 + ("  handshakes: %s full, %s resumed" % (row.get("tls_full"),
                                                                          row.get("tls_resumed"))
                                    if sc.get("tls") else "")))
                else:
                    row = idle_run(ctx, sc, t, rep)
                    if row.get("failed"):
                        note("  %-8s rep %d: idle client failed (see build/bench/logs/idle.log)" % (name, rep + 1))
                    else:
                        note("  %-8s rep %d: %d conns (%d failed, %d closed while idle), RSS %d -> %d KiB "
                             "(%.2f KiB/conn), after close %d KiB, fds %d -> %d" % (
                                 name, rep + 1, row["conns"], row["conn_failed"], row["closed_by_peer"],
                                 row["rss_before_kib"], row["rss_idle_kib"], row["kib_per_conn"],
                                 row["rss_after_close_kib"], row["fds_before"], row["fds_idle"]))
                raw.append(row)
                if name == "fnproxy":
                    fn_rss_trace.append((sc["key"], rep + 1, rss_kib(t.pids())))
    if skipped_budget:
        notes.append("%d run(s) skipped to stay within the %d s budget" % (skipped_budget, budget))

    # fnproxy's own view: its metrics and log.
    fn = targets["fnproxy"]
    try:
        st, body = http_get(fn.admin_port, "/metrics", timeout=5)
        with open(os.path.join(OUT, "fnproxy-metrics.txt"), "wb") as f:
            f.write(body)
        text = body.decode("utf-8", "replace")
        codes = re.findall(r'^fnproxy_requests_total\{[^}]*code="(\d+)"[^}]*\} (\d+)', text, re.M)
        bad = [(c, n) for c, n in codes if not c.startswith("2") and int(n) > 0]
        probs = [l for l in text.splitlines()
                 if re.match(r"fnproxy_(timeouts|upstream_errors|tls_handshake_errors)_total\{", l)
                 and not l.endswith(" 0")]
        if bad:
            notes.append("fnproxy /metrics counts non-2xx answers: "
                         + ", ".join("%s x%s" % b for b in bad))
        for l in probs:
            notes.append("fnproxy /metrics: " + l)
    except (OSError, http.client.HTTPException) as e:
        notes.append("fnproxy /metrics could not be read at the end: %s" % e)
    for t in targets.values():
        for c in t.crashes:
            notes.append("%s CRASHED: %s (log: build/bench/logs/%s.log)" % (t.name, c, t.name))
    try:
        with open(os.path.join(LOGS, "fnproxy.log"), errors="replace") as f:
            loglines = [l.rstrip() for l in f if re.search(r"\b(ERROR|WARN|error|warn)", l)]
        if loglines:
            notes.append("fnproxy logged %d warning/error line(s), first: `%s`"
                         % (len(loglines), loglines[0][:200]))
    except OSError:
        pass
    for name, kind in [(n, k) for k in IDLE_KINDS for n in TARGETS[1:]]:
        rows = [r for r in raw if r["scenario"] == kind and r["target"] == name
                and not r.get("failed") and r.get("rss_after_close_kib") and r.get("rss_idle_kib")]
        rose = [r for r in rows if r["rss_after_close_kib"] > 1.2 * r["rss_idle_kib"]]
        if rose:
            notes.append("%s RSS rose after the idle %sconnections closed, in %d of %d reps: %s"
                         % (name, "TLS " if kind == "tls-idle" else "", len(rose), len(rows), "; ".join(
                             "%d KiB before, %d KiB with %d idle connections, %d KiB 1 s after "
                             "they closed" % (r["rss_before_kib"], r["rss_idle_kib"], r["conns"],
                                              r["rss_after_close_kib"]) for r in rose)))
    if fn_rss_trace:
        load = [r for sc, _, r in fn_rss_trace if sc not in IDLE_KINDS]
        if load:
            notes.append("fnproxy RSS over the load scenarios: %d KiB at start, %d KiB after the "
                         "last load run, %d KiB at most (the idle scenario then restarts it)"
                         % (fn_rss_start, load[-1], max(load)))
    # TLS: what wrk negotiated with each proxy, and whether the handshake
    # scenario really did full handshakes only.
    tls_params = {}
    for r in raw:
        if r.get("tls_params"):
            tls_params.setdefault(r["target"], set()).add(r["tls_params"])
    tls_info = "; ".join("%s %s" % (n, " / ".join(sorted(v))) for n, v in tls_params.items())
    if len({p for v in tls_params.values() for p in v}) > 1:
        notes.append("the proxies did not all negotiate the same TLS parameters with wrk: " + tls_info)
    hs = [r for r in raw if r["scenario"] == "tls-handshake" and not r.get("failed")]
    if hs:
        full = sum(r.get("tls_full") or 0 for r in hs)
        resumed = sum(r.get("tls_resumed") or 0 for r in hs)
        notes.append("tls-handshake: wrk completed %d full and %d resumed handshakes over all "
                     "targets and reps (wrk-tls-shim.so drops the session wrk keeps across "
                     "reconnects)%s" % (full, resumed, "" if resumed == 0 else ": NOT all full"))
        # The point of its RSA certificate: the proxy, not wrk, is the side
        # that runs out of CPU. wrk's own figure overstates its work here:
        # it waits for a handshake's next message with the socket watched
        # for writable too (wrk.c's socket_connected), so it polls busily
        # until the server answers.
        per = []
        for name in PROXIES:
            rows = [r for r in hs if r["target"] == name]
            if rows:
                per.append("%s: proxy %s%%, wrk %s%%" % (name, fmt(med(rows, "proxy_cpu_pct")),
                                                         fmt(med(rows, "wrk_cpu_pct"))))
        notes.append("tls-handshake (%s certificate): CPU use over the runs, medians: %s (the "
                     "proxy shares its CPU with the backend; wrk polls busily while its "
                     "handshakes wait for the server, so its figure overstates its work and "
                     "the proxy's is the one to read)" % (CERTS["rsa"], "; ".join(per)))
    if resume_probe:
        notes.append("resumption probe, 1 s each, the same load with wrk left to resume (not "
                     "in the table): " + "; ".join("%s %.0f req/s, %d of %d handshakes resumed"
                                                   % p for p in resume_probe))
    # Access logs: every proxy wrote one (bytes per request, keep-alive runs).
    if ctx.access_log:
        per = []
        for name in PROXIES:
            rows = [r for r in raw if r["target"] == name and r["scenario"] == "keepalive"
                    and not r.get("failed") and r.get("access_log_bytes") is not None]
            empty = [r for r in raw if r["target"] == name and not r.get("failed")
                     and r.get("requests") and r.get("access_log_bytes") == 0]
            if empty:
                notes.append("%s's access log stayed EMPTY in %d run(s): %s" % (
                    name, len(empty), ", ".join("%s rep %d" % (r["scenario"], r["rep"]) for r in empty)))
            if rows:
                per.append("%s %.0f" % (name, statistics.median(
                    r["access_log_bytes"] / r["requests"] for r in rows)))
        if per:
            notes.append("access log bytes written per keep-alive request (the tail still "
                         "buffered at the end of a run not counted): " + ", ".join(per))
    notes.append("backend: " + chosen + " (" + pick_note + ")")

    summary = summarize(raw, ran)
    elapsed = time.monotonic() - t_start
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])
    info = [
        ("command", "make bench-quick" if quick else "make bench"),
        ("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("machine", "%s, %d CPUs, %s, Linux %s" % (cpu_model(), os.cpu_count(),
                                                  "%.0f GiB" % (os.sysconf("SC_PAGE_SIZE") *
                                                                os.sysconf("SC_PHYS_PAGES") / 2**30),
                                                  platform.release())),
        ("pinning", ("wrk and the idle client on CPU %d; proxy and backend on CPU %d (taskset)"
                     % (LOAD_CPU, SERVER_CPU)) if PIN else "none"),
        ("load", "wrk -t1 -c%d, %d s per run, %d rep(s), targets alternated rep by rep; paced: "
                 "%d req/s over %d connections; idle: %d connections (TLS: %d), one request each"
         % (CONNS, seconds, reps, PACED_RATE, CONNS, ctx.idle_conns,
            min(TLS_IDLE_CONNS, ctx.idle_conns))),
        ("TLS", "fnproxy, nginx and HAProxy terminate TLS 1.2/1.3 with the same ECDSA P-256 "
                "certificate, except in tls-handshake, where they all serve an " + CERTS["rsa"]
                + " one from the same CA (an RSA signature costs the server far more than its "
                "verification costs wrk, so the servers, not wrk, are the bottleneck); the same "
                "ECDHE+AEAD suites and groups, server preference, session tickets and cache as "
                "each has them by default; backend plain, so no `direct` row. Negotiated with "
                "wrk: " + (tls_info or "?")),
        ("backend", "%s (%s)" % (chosen, pick_note)),
        ("versions", "fnproxy %s; nginx %s; %s; %s" % (ver["fnproxy"], ver["nginx"], ver["haproxy"],
                                                       ver["wrk"])),
        ("access logs", ("on for every proxy, each to a file under build/bench/logs (fnproxy: JSON "
                         "lines, batched; nginx: combined, buffer=64k flush=1s; HAProxy: httplog "
                         "to stdout, one write per line); metrics on (fnproxy's admin endpoint)")
         if ctx.access_log else "off for all targets"),
        ("load average", "end of run: %s (a shared machine: numbers are indicative)" % load_end),
        ("duration", "%.0f s" % elapsed),
    ]
    checks = target_checks(summary)

    lines = table_lines(summary, titles)
    note("\n" + "\n".join(lines))
    note("\nissue 3 and 4 targets for fnproxy:")
    for c in checks:
        note("  %-34s %-22s %-10s %s" % c)
    if notes:
        note("\nnotes:")
        for n in notes:
            note("  - " + n)

    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(markdown(summary, titles, info, checks, notes))
    write_csv(os.path.join(OUT, "results.csv"), summary,
              ["scenario", "target", "reps", "failed_reps", "crashed_reps", "rps", "rps_x_direct",
               "rps_x_peer", "p50_ms", "p99_ms", "p999_ms", "p99_x_direct", "p99_x_peer",
               "proxy_cpu_us", "cpu_x_peer", "backend_cpu_us", "wrk_cpu_pct", "rss_kib", "kib_per_conn",
               "kib_x_peer", "rss_before_kib", "rss_idle_kib", "rss_after_close_kib", "errors",
               "non2xx", "conn_failed", "closed_by_peer"])
    write_csv(os.path.join(OUT, "results-raw.csv"), raw,
              ["scenario", "target", "rep", "failed", "alive_after", "requests", "rps", "p50_ms",
               "p90_ms", "p99_ms", "p999_ms", "max_ms", "err_connect", "err_read", "err_write",
               "err_timeout", "non2xx", "proxy_cpu_us", "proxy_cpu_pct", "backend_cpu_us", "wrk_cpu_pct",
               "rss_kib", "conns",
               "conn_failed", "closed_by_peer", "open_s", "rss_before_kib", "rss_idle_kib",
               "kib_per_conn", "rss_after_close_kib", "fds_before", "fds_idle", "tls_full",
               "tls_resumed", "tls_params", "access_log_bytes"])
    png = plot(summary, ran)
    note("\nwrote %s, %s, %s%s (%.0f s)" % (
        os.path.relpath(os.path.join(OUT, "results.md"), ROOT),
        os.path.relpath(os.path.join(OUT, "results.csv"), ROOT),
        os.path.relpath(os.path.join(OUT, "results-raw.csv"), ROOT),
        (", " + os.path.relpath(png, ROOT)) if png else " (no chart)", elapsed))
    crashed = any(t.crashes for t in targets.values())
    return 1 if crashed else 0


if __name__ == "__main__":
    try:
        # bench/resilience.py runs main() for the scenarios above, then its
        # own group (reliability under failure, issue 11).
        import resilience
        sys.exit(resilience.entry(sys.modules[__name__], main))
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything", file=sys.stderr)
        sys.exit(130)
