#!/usr/bin/env python3
"""Measures fnproxy's footprint for the Kubernetes resource requests
(README "Resource sizing"): RSS idle, RSS under wrk load, and CPU per 1000
requests a second. Prints figures; asserts nothing.

    python3 tests/deploy/footprint.py [--fnproxy build/fnproxy]
        [--backend build/fnbackend] [--workers 1] [--seconds 10]
        [--connections 64]

fnproxy runs the sidecar shape (one listener, one function, an egress
listener, access log to a file, metrics on) in front of fnbackend, all on
127.0.0.1; wrk (-t1) drives it at its maximum rate. CPU is fnproxy's own
utime + stime over the wrk run (from /proc), so the figure holds on a
loaded machine too; the rate does not.
"""
import argparse, os, re, socket, subprocess, sys, tempfile, time

CONFIG = """workers: {workers}
admin: {{ listen: 127.0.0.1:{admin} }}
drain_timeout: 2s
access_log: {log}
listeners: [{{ name: in, listen: 127.0.0.1:{port}, header_timeout: 10s, keepalive_timeout: 60s }}]
functions:
  - name: fn
    endpoints: [127.0.0.1:{backend}]
    ingress:
      max_concurrency: 1024   # above -c: admission is not measured here
      routes: [{{ name: all, match: {{ path_prefix: / }}, timeout: 30s }}]
    egress:
      listen: 127.0.0.1:{egress}
      allow: [{{ name: example, host: example.com, ports: [443] }}]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s for pid %d" % (key, pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("footprint: port %d never opened" % port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fnproxy", default="build/fnproxy")
    ap.add_argument("--backend", default="build/fnbackend")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fnproxy-footprint-")
    bport, port, admin, egress = free_port(), free_port(), free_port(), free_port()
    cfg = os.path.join(tmp, "fnproxy.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(workers=a.workers, admin=admin, port=port, backend=bport,
                              egress=egress, log=os.path.join(tmp, "access.log")))
    be = subprocess.Popen([a.backend, "--listen", "127.0.0.1:%d" % bport], stdout=subprocess.DEVNULL)
    px = subprocess.Popen([a.fnproxy, "-c", cfg], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        wait_port(bport, deadline)
        wait_port(port, deadline)
        time.sleep(1)
        idle = status_kib(px.pid, "VmRSS")
        cpu0 = cpu_seconds(px.pid)
        out = subprocess.run(["wrk", "-t1", "-c%d" % a.connections, "-d%ds" % a.seconds,
                              "http://127.0.0.1:%d/" % port],
                             capture_output=True, text=True, timeout=a.seconds + 60).stdout
        cpu = cpu_seconds(px.pid) - cpu0
        loaded = status_kib(px.pid, "VmRSS")
        peak = status_kib(px.pid, "VmHWM")
        m = re.search(r"(\d+) requests in", out)
        if not m or "Non-2xx" in out or "Socket errors" in out:
            sys.exit("footprint: wrk run not clean:\n" + out)
        reqs = int(m.group(1))
        print("workers %d, wrk -t1 -c%d -d%ds" % (a.workers, a.connections, a.seconds))
        print("RSS idle %.1f MiB, after load %.1f MiB, peak %.1f MiB"
              % (idle / 1024, loaded / 1024, peak / 1024))
        print("%d requests, %.0f req/s, fnproxy CPU %.2f s: %.1f us/request = %.3f cores per 1000 req/s"
              % (reqs, reqs / a.seconds, cpu, cpu / reqs * 1e6, cpu / reqs * 1000))
    finally:
        for p in (px, be):
            p.terminate()
            p.wait(timeout=20)


if __name__ == "__main__":
    main()
