"""Reliability under failure (issue 11): fnproxy, nginx and HAProxy, each in
front of three fnbackend instances and each with its own retries as its
documentation suggests, while instances fail on purpose.

Called from bench/bench.py (`entry()`, from its __main__), which hands over
its own module for the process helpers (spawn/stop keep build/bench/pids up
to date for run.sh's trap; pinning as in the other scenarios: wrk on CPU 0,
the proxy and the three instances on CPU 1). The group's scenario keys
(KEYS) are selected with BENCH_SCENARIOS like the others; bench.py's own
scenarios run first, then this group, whose section is appended to
build/bench/results.md (or makes the file alone when only these keys are
asked for).

Scenarios (wrk -t1 -c20, GET /, --timeout 5s, bench/resil.lua counting
every status):
  resil-one-bad   instance 1 answers 503 to 10% of requests and resets 5%
  resil-storm     every instance answers 503 to everything
  resil-one-down  instance 1 is a port nothing listens on (refused)
  resil-heal      every instance answers 503 to everything for HEAL_FAIL_S,
                  then all are healed (/_fnbackend/fail?rate=0&reset=0) and
                  the next HEAL_MEASURE_S seconds are measured

Each run starts the proxy afresh (no state carried from the previous run:
nginx's max_fails marks, fnproxy's budget) on its scenario's endpoints,
sets the instances' failures through their control paths (seeded, the same
seeds for every proxy in a rep), and measures:
  success        2xx answers over what the client tried (completed
                 requests plus wrk's connect/read/write errors); a timed-out
                 answer counts as a failure
  p50/p99        wrk's latency histogram (every completed answer, whatever
                 its status)
  amplification  requests the instances received (their /_fnbackend/stats,
                 before and after) over requests the client completed
Outputs: a section of results.md, results-resilience.csv (medians) and
results-resilience-raw.csv (every run); logs/resil-*.log, logs/wrk/resil-*.
"""

import csv
import json
import os
import re
import signal
import atexit
import shutil
import socket
import statistics
import subprocess
import time
import platform
import calendar

PROXIES = ["fnproxy", "nginx", "haproxy"]
PEERS = ["nginx", "haproxy"]
CONNS = 20
HEAL_FAIL_S = 3      # every instance failing, under load, before the heal
HEAL_MEASURE_S = 3   # measured after the heal
WRK_TIMEOUT_S = 5
N_INSTANCES = 3

SCENARIOS = [
    {"key": "resil-one-bad",
     "title": "one instance of three answers 503 to 10% of requests and resets 5%",
     "faults": {0: (0.10, 0.05)}},
    {"key": "resil-storm", "title": "every instance answers 503 to everything (a storm)",
     "faults": {i: (1.0, 0.0) for i in range(N_INSTANCES)}},
    {"key": "resil-one-down", "title": "one instance of three not listening (connection refused)",
     "down": 0},
    {"key": "resil-heal",
     "title": "every instance answers 503 to everything for %d s, then healed: the first %d s after"
     % (HEAL_FAIL_S, HEAL_MEASURE_S), "heal": True},
]
KEYS = [sc["key"] for sc in SCENARIOS]

# fnproxy's goals from issue 11 (checked on the medians).
GOALS = [
    ("one bad instance: success", "resil-one-bad", "success_pct", ">= 99.99%"),
    ("one bad instance: amplification", "resil-one-bad", "amp", "<= 1.05"),
    ("one bad instance: p99", "resil-one-bad", "p99_ms", "<= better peer"),
    ("storm: amplification", "resil-storm", "amp", "<= 1.25"),
    ("healed: success in the first %d s" % HEAL_MEASURE_S, "resil-heal", "success_pct", ">= 99%"),
]

B = None  # bench.py's module (set by entry())


def note(msg=""):
    B.note(msg)


# ---- entry from bench.py -------------------------------------------------

def entry(bench, main):
    """bench.py's __main__: runs bench.py's main() for its own scenarios (all
    of them, or those BENCH_SCENARIOS names), then this group (all of it,
    or the keys of KEYS BENCH_SCENARIOS names). Returns the exit status."""
    global B
    B = bench
    import argparse
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--quick", action="store_true")
    quick = ap.parse_known_args()[0].quick
    only = os.environ.get("BENCH_SCENARIOS", "").replace(",", " ").split()
    theirs = [sc["key"] for sc in B.SCENARIOS]
    unknown = [k for k in only if k not in theirs and k not in KEYS]
    if unknown:
        raise SystemExit("bench: BENCH_SCENARIOS: no scenario %s (there are: %s)"
                         % (", ".join(unknown), ", ".join(theirs + KEYS)))
    others = [k for k in only if k not in KEYS]
    mine = [sc for sc in SCENARIOS if not only or sc["key"] in only]
    rc = 0
    ran_main = False
    if not only or others:
        if only:
            os.environ["BENCH_SCENARIOS"] = " ".join(others)
        rc = main() or 0
        ran_main = True
        B.stop_all()  # its targets are done with; this group starts its own
        if only:
            os.environ["BENCH_SCENARIOS"] = " ".join(only)
    if mine:
        rc = max(rc, run(mine, quick, ran_main))
    return rc


# ---- instances -----------------------------------------------------------

class Instance:
    def __init__(self, g, i):
        self.i, self.name = i, "i%d" % (i + 1)
        self.proc, self.port = None, None
        self.crashes = []
        self.start(g)

    def start(self, g):
        self.proc = B.spawn("resil-%s" % self.name,
                            [g.fnbackend, "--listen", "%s:0" % B.HOST, "--name", self.name],
                            cpu=B.SERVER_CPU, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"PORT (\d+)", line)
        if not m:
            raise SystemExit("bench: fnbackend %s did not print its port: %r" % (self.name, line))
        self.proc.stdout.close()
        self.port = int(m.group(1))

    def alive(self):
        return self.proc.poll() is None

    def control(self, query):
        st, body = B.http_get(self.port, "/_fnbackend/fail?" + query)
        if st != 200:
            raise SystemExit("bench: fnbackend %s refused /_fnbackend/fail?%s: %d %r"
                             % (self.name, query, st, body[:200]))
        return json.loads(body)

    def fail(self, rate, reset, seed=None):
        q = "status=503&rate=%g&reset=%g" % (rate, reset)
        if seed is not None:
            q += "&seed=%d" % seed
        return self.control(q)

    def requests(self):
        st, body = B.http_get(self.port, "/_fnbackend/stats")
        if st != 200:
            raise SystemExit("bench: fnbackend %s: /_fnbackend/stats gave %d" % (self.name, st))
        return json.loads(body)["requests"]


def total_requests(insts):
    return sum(x.requests() for x in insts)


def per_instance(insts):
    return [x.requests() for x in insts]


# ---- proxies -------------------------------------------------------------

def wait_tcp(port, proc, timeout=10.0):
    """Until port accepts a connection (no request: a probe through the
    proxy would change its state, e.g. nginx marking a server failed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((B.HOST, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Proxy:
    """One proxy process for one run: started on the scenario's endpoints,
    stopped after it."""

    def __init__(self, g, name, key, eps):
        self.name, self.key = name, key
        self.port = B.free_port()
        self.admin_port = None
        self.access_log = os.path.join(B.LOGS, "%s-%s-access.log" % (key, name)) \
            if g.access_log else None
        if self.access_log:
            open(self.access_log, "w").close()  # the last rep's only
        user, group = B.user_group()
        v = {"PORT": self.port, "EP1": eps[0], "EP2": eps[1], "EP3": eps[2]}
        if name == "fnproxy":
            self.admin_port = B.free_port()
            v.update({"ADMIN_PORT": self.admin_port,
                      "ACCESS_LOG": "access_log: %s" % self.access_log if self.access_log else ""})
            conf = B.render("resil-fnproxy.yaml", "resil-fnproxy.yaml", v)
            self.proc = B.spawn("resil-fnproxy", [g.fnproxy, "-c", conf], cpu=B.SERVER_CPU)
        elif name == "nginx":
            v.update({"USER": user, "GROUP": group, "DIR": B.OUT, "NOFILE": g.nofile,
                      "ACCESS_LOG": "access_log %s combined buffer=64k flush=1s;" % self.access_log
                      if self.access_log else "access_log off;"})
            conf = B.render("resil-nginx.conf", "resil-nginx.conf", v)
            self.proc = B.spawn("resil-nginx", ["nginx", "-p", B.OUT, "-c", conf, "-e", g.nginx_errlog],
                                cpu=B.SERVER_CPU)
        else:
            v.update({"DIR": B.OUT,
                      "ACCESS_LOG_GLOBAL": "log stdout format raw local0" if self.access_log else "",
                      "ACCESS_LOG_DEFAULTS": "log global\n    option httplog"
                      if self.access_log else ""})
            conf = B.render("resil-haproxy.cfg", "resil-haproxy.cfg", v)
            with open(self.access_log or os.devnull, "wb") as acc:
                self.proc = B.spawn("resil-haproxy", ["haproxy", "-db", "-f", conf],
                                    cpu=B.SERVER_CPU, stdout=acc)
        if not wait_tcp(self.port, self.proc):
            raise SystemExit("bench: %s (resilience) did not come up (see %s/resil-%s.log)"
                             % (name, B.LOGS, name))

    def metrics(self):
        """fnproxy: its counters that tell how failures were handled, summed
        by name and reason/kind: {"fnproxy_retries_total": n, ...}."""
        if self.admin_port is None:
            return {}
        try:
            st, body = B.http_get(self.admin_port, "/metrics", timeout=5)
        except OSError:
            return {}
        out = {}
        for line in body.decode("utf-8", "replace").splitlines():
            m = re.match(r"^(fnproxy_\w+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
            if not m:
                continue
            name, labels, val = m.group(1), m.group(2) or "", float(m.group(3))
            if (name.endswith(("_bucket", "_sum", "_count")) or val == 0
                    or re.match(r"fnproxy_(requests_total|connections_active|tls_|access_log_)",
                                name)):
                continue
            lab = re.search(r'(?:reason|kind)="([^"]*)"', labels)
            key = name + ("{%s}" % lab.group(1) if lab else "")
            out[key] = out.get(key, 0) + val
        return out

    def stop(self):
        B.stop(self.proc)


# ---- load ----------------------------------------------------------------

BENCH_RE = re.compile(r"^BENCH (.*)$", re.M)
STATUS_RE = re.compile(r"^STATUSES ?(.*)$", re.M)


def wrk(g, name, port, seconds):
    argv = ["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % seconds, "--timeout", "%ds" % WRK_TIMEOUT_S,
            "--latency", "-s", os.path.join(B.BENCH, "resil.lua"), "http://%s:%d/" % (B.HOST, port)]
    logpath = os.path.join(B.LOGS, "wrk", "resil-%s.log" % name)
    with open(logpath, "wb") as out:
        p = B.spawn("wrk", argv, cpu=B.LOAD_CPU, stdout=out)
    try:
        p.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        note("  !! wrk did not finish in time; killed")
    B.stop(p)
    with open(logpath) as f:
        text = f.read()
    m, ms = BENCH_RE.search(text), STATUS_RE.search(text)
    if not m or not ms:
        return None
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    r["statuses"] = {int(k): int(v) for k, v in (kv.split("=") for kv in ms.group(1).split())}
    return r


def figures(r, received):
    """A run's figures from wrk's result r and the requests the instances
    received meanwhile."""
    n = int(r["requests"])
    sock = int(r["err_connect"] + r["err_read"] + r["err_write"])
    ok = sum(v for k, v in r["statuses"].items() if 200 <= k < 300)
    ok = max(0, ok - int(r["err_timeout"]))
    tried = n + sock
    return {
        "requests": n, "tried": tried, "ok": ok, "failed_n": tried - ok,
        "success_pct": 100.0 * ok / tried if tried else None,
        "non2xx": n - sum(v for k, v in r["statuses"].items() if 200 <= k < 300),
        "sock_errors": sock, "timeouts": int(r["err_timeout"]),
        "rps": n / (r["duration_us"] / 1e6) if r["duration_us"] > 0 else None,
        "p50_ms": r["p50_us"] / 1000 if n else None, "p99_ms": r["p99_us"] / 1000 if n else None,
        "received": received, "amp": received / n if n else None,
        "statuses": " ".join("%d=%d" % kv for kv in sorted(r["statuses"].items())),
    }


def log_since(path, pos):
    try:
        with open(path, errors="replace") as f:
            f.seek(pos)
            return f.read()
    except OSError:
        return ""


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def fnproxy_attempts(path, since_epoch=None):
    """{attempts: count} from fnproxy's access log (lines at or after
    since_epoch only, if given)."""
    out = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = re.search(r'"attempts":(\d+)', line)
                if not m:
                    continue
                if since_epoch is not None:
                    t = re.match(r'\{"ts":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z"', line)
                    if t and calendar.timegm(time.strptime(t.group(1), "%Y-%m-%dT%H:%M:%S")) \
                            + int(t.group(2)) / 1000 < since_epoch:
                        continue
                a = int(m.group(1))
                out[a] = out.get(a, 0) + 1
    except OSError:
        pass
    return out


def one_run(g, sc, name, rep, seconds):
    """One measured run of scenario sc through proxy name; a row."""
    insts = g.instances
    seed = 1000 + 100 * rep
    for x in insts:
        x.fail(0, 0, seed + x.i)
    eps = [x.port for x in insts]
    if "down" in sc:
        eps[sc["down"]] = g.dead_port
    px = Proxy(g, name, sc["key"], eps)
    row = {"scenario": sc["key"], "target": name, "rep": rep + 1, "failed": 1}
    err0 = size(g.nginx_errlog)
    tag = "%s-%s-%d" % (sc["key"], name, rep + 1)
    try:
        for i, (rate, reset) in sc.get("faults", {}).items():
            insts[i].fail(rate, reset)
        if sc.get("heal"):
            for x in insts:
                x.fail(1.0, 0.0)
            before = total_requests(insts)
            rf = wrk(g, tag + "-failing", px.port, HEAL_FAIL_S)
            failing = total_requests(insts) - before
            for x in insts:
                x.fail(0, 0)
            healed_at = time.time()
            per0 = per_instance(insts)
            mid = sum(per0)
            r = wrk(g, tag, px.port, HEAL_MEASURE_S)
            per1 = per_instance(insts)
            after = sum(per1)
            row["per_instance"] = [b1 - b0 for b0, b1 in zip(per0, per1)]
            if rf:
                f = figures(rf, failing)
                row.update({"fail_success_pct": f["success_pct"], "fail_amp": f["amp"],
                            "fail_requests": f["requests"], "fail_statuses": f["statuses"]})
            before = mid
        else:
            healed_at = None
            per0 = per_instance(insts)
            before = sum(per0)
            r = wrk(g, tag, px.port, seconds)
            per1 = per_instance(insts)
            after = sum(per1)
            row["per_instance"] = [b1 - b0 for b0, b1 in zip(per0, per1)]
        row["metrics"] = px.metrics()
    finally:
        px.stop()
    if name == "nginx":
        text = log_since(g.nginx_errlog, err0)
        row["nginx_no_live"] = text.count("no live upstreams")
        row["nginx_disabled"] = text.count("upstream server temporarily disabled")
    if row.get("metrics"):
        row["fn_metrics"] = " ".join("%s=%g" % (k.replace("fnproxy_", ""), v)
                                     for k, v in sorted(row["metrics"].items()))
    if name == "fnproxy" and px.access_log:
        row["attempts"] = fnproxy_attempts(px.access_log, healed_at)
    for x in insts:
        if not x.alive():
            x.crashes.append("%s rep %d (%s)" % (sc["key"], rep + 1, name))
            note("  !! instance %s died; restarting it" % x.name)
            x.start(g)
    if r is None:
        return row
    row.update(figures(r, after - before))
    row["failed"] = 0
    return row


# ---- summary -------------------------------------------------------------

def med(rows, k):
    v = [r[k] for r in rows if r.get(k) is not None and not r.get("failed")]
    return statistics.median(v) if v else None


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def summarize(raw, scenarios):
    out = []
    for sc in scenarios:
        for name in PROXIES:
            rows = [r for r in raw if r["scenario"] == sc["key"] and r["target"] == name]
            if not rows:
                continue
            ok = [r for r in rows if not r.get("failed")]
            s = {"scenario": sc["key"], "target": name, "reps": len(ok),
                 "failed_reps": len(rows) - len(ok)}
            for k in ("success_pct", "rps", "p50_ms", "p99_ms", "amp", "fail_amp",
                      "fail_success_pct"):
                s[k] = med(rows, k)
            for k in ("requests", "tried", "failed_n", "non2xx", "sock_errors", "timeouts",
                      "nginx_no_live", "nginx_disabled"):
                s[k] = sum(r.get(k) or 0 for r in ok)
            s["success_min"] = min((r["success_pct"] for r in ok if r.get("success_pct") is not None),
                                   default=None)
            st = {}
            for r in ok:
                for kv in r.get("statuses", "").split():
                    c, n = kv.split("=")
                    st[c] = st.get(c, 0) + int(n)
            s["statuses"] = " ".join("%s=%d" % kv for kv in sorted(st.items()))
            att = {}
            for r in ok:
                for a, n in (r.get("attempts") or {}).items():
                    att[a] = att.get(a, 0) + n
            s["attempts"] = att
            pi = [sum(r["per_instance"][i] for r in ok if r.get("per_instance"))
                  for i in range(N_INSTANCES)]
            s["per_instance"] = pi if sum(pi) else None
            mt = {}
            for r in ok:
                for k, v in (r.get("metrics") or {}).items():
                    mt.setdefault(k, []).append(v)
            s["metrics"] = {k: statistics.median(v + [0] * (len(ok) - len(v))) for k, v in mt.items()}
            out.append(s)
    return out


def goal_checks(summary):
    get = {(s["scenario"], s["target"]): s for s in summary}
    out = []
    for what, key, k, goal in GOALS:
        s = get.get((key, "fnproxy"))
        v = s.get(k) if s else None
        if v is None:
            out.append((what, goal, "-", "n/a"))
            continue
        if goal == "<= better peer":
            peers = [get[(key, p)][k] for p in PEERS if (key, p) in get and get[(key, p)].get(k) is not None]
            best = min(peers) if peers else None
            ok = None if best is None else v <= best
            shown = "%.3f ms (better peer %s ms)" % (v, fmt(best, "%.3f"))
        else:
            bound = float(re.search(r"[\d.]+", goal).group(0))
            ok = v >= bound if goal.startswith(">=") else v <= bound
            shown = ("%.4f%%" % v) if k == "success_pct" else ("%.3f" % v)
        out.append((what, goal, shown, "n/a" if ok is None else ("met" if ok else "NOT met")))
    return out


COLS = ["proxy", "success", "failed", "non-2xx", "socket err", "req/s", "p50 ms", "p99 ms",
        "amplification"]


def cells(s, heal):
    c = [s["target"], fmt(s["success_pct"], "%.3f%%"), "%d of %d" % (s["failed_n"], s["tried"]),
         str(s["non2xx"]), str(s["sock_errors"] + s["timeouts"]), fmt(s["rps"], "%.0f"),
         fmt(s["p50_ms"], "%.3f"), fmt(s["p99_ms"], "%.3f"), fmt(s["amp"], "%.3f")]
    if heal:
        c += [fmt(s["fail_amp"], "%.3f"), fmt(s["fail_success_pct"], "%.2f%%")]
    return c


def scenario_notes(s):
    """What each proxy did about the failures (its counters, its log)."""
    bits = []
    if s["statuses"]:
        bits.append("statuses " + s["statuses"])
    if s.get("per_instance"):
        tot = sum(s["per_instance"])
        bits.append("requests received by i1/i2/i3: " + "/".join(
            "%.1f%%" % (100.0 * n / tot) for n in s["per_instance"])
            + (" (i1 refuses connections)" if s["scenario"] == "resil-one-down" else "")
            + (" (after the heal)" if s["scenario"] == "resil-heal" else ""))
    if s["target"] == "fnproxy":
        if s["attempts"]:
            tot = sum(s["attempts"].values())
            bits.append("attempts per request (access log, all reps%s): %s" % (
                ", lines after the heal" if s["scenario"] == "resil-heal" else "",
                ", ".join("%d: %d (%.2f%%)" % (a, n, 100.0 * n / tot)
                          for a, n in sorted(s["attempts"].items()))))
        if s["metrics"]:
            bits.append("/metrics (median per run): " + ", ".join(
                "%s %g" % (k.replace("fnproxy_", ""), v) for k, v in sorted(s["metrics"].items())))
    if s["target"] == "nginx" and (s["nginx_no_live"] or s["nginx_disabled"]):
        bits.append("error log over the reps: %d \"no live upstreams\", %d \"upstream server "
                    "temporarily disabled\"" % (s["nginx_no_live"], s["nginx_disabled"]))
    return "; ".join(bits)


def section(summary, scenarios, checks, notes, info_line):
    md = ["## Reliability under failure (issue 11)", "",
          info_line, "",
          "Success: 2xx answers over what the client tried (completed requests plus wrk's "
          "connect/read/write errors; a timed-out answer counts as failed). p50/p99: wrk's "
          "histogram over every completed answer, whatever its status. Amplification: requests "
          "the three instances received (their `/_fnbackend/stats`) over requests the client "
          "completed; a connection refused reaches no instance, so it can be below 1. Medians "
          "over the reps; failed, non-2xx and socket errors summed over them. fnproxy's "
          "attempts per request come from its access log (every rep), its counters from "
          "its `/metrics` after each run (medians); requests received per instance: "
          "summed over the reps.", ""]
    for sc in scenarios:
        rows = [s for s in summary if s["scenario"] == sc["key"]]
        if not rows:
            continue
        heal = bool(sc.get("heal"))
        cols = COLS + (["amplification while failing", "success while failing"] if heal else [])
        md += ["### %s: %s" % (sc["key"], sc["title"]), "",
               "| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        md += ["| " + " | ".join(cells(s, heal)) + " |" for s in rows]
        md += [""]
        md += ["- %s: %s" % (s["target"], scenario_notes(s)) for s in rows if scenario_notes(s)]
        md += [""]
    md += ["### fnproxy against the goals of issue 11", "",
           "| goal | bound | measured | |", "|---|---|---|---|"]
    md += ["| %s | %s | %s | %s |" % c for c in checks]
    if notes:
        md += ["", "### Notes", ""] + ["- " + n for n in notes]
    return "\n".join(md) + "\n"


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else
                            "%.6g" % r[k] if isinstance(r.get(k), float) else
                            "/".join(map(str, r[k])) if isinstance(r.get(k), list) else r[k])
                        for k in fields})


# ---- the group -----------------------------------------------------------

class G:
    pass


def fnproxy_accepts_retries(fnproxy):
    probe = os.path.join(B.OUT, "probe-retries.yaml")
    with open(probe, "w") as f:
        f.write("workers: 1\nlisteners:\n  - name: l\n    listen: 127.0.0.1:%d\n"
                "functions:\n  - name: f\n    endpoints: [127.0.0.1:9, 127.0.0.1:10]\n"
                "    ingress:\n      routes:\n        - name: r\n"
                "          match: { listener: l, path_prefix: / }\n"
                "          retries: { max: 2, on: [connect-failure, reset, gateway-error] }\n"
                % B.free_port())
    r = subprocess.run([fnproxy, "--check", "-c", probe], cwd=B.ROOT, capture_output=True,
                       text=True, timeout=10)
    return r.returncode == 0, (r.stdout + r.stderr).strip()[:300]


def run(scenarios, quick, append):
    t_start = time.monotonic()
    for d in (os.path.join(B.LOGS, "wrk"), os.path.join(B.OUT, "tmp")):
        os.makedirs(d, exist_ok=True)
    signal.signal(signal.SIGTERM, B.on_signal)
    signal.signal(signal.SIGHUP, B.on_signal)
    atexit.register(B.stop_all)
    reps = int(os.environ.get("BENCH_REPS", 1 if quick else 3))
    seconds = int(os.environ.get("BENCH_SECONDS", 3 if quick else 5))
    # Runs: 3 scenarios x 3 proxies x reps x (seconds + ~1 s of start, stop
    # and control), the heal scenario x 3 proxies x reps x (3 + 3 + ~1 s):
    # full (3 x 5 s) ~ 3.6 min, quick (1 x 3 s) ~ 1 min.
    budget = 100 if quick else 400
    cpus = sorted(os.sched_getaffinity(0))
    B.PIN = B.LOAD_CPU in cpus and B.SERVER_CPU in cpus and shutil.which("taskset") is not None
    g = G()
    g.fnproxy = os.path.join(B.BUILD, "fnproxy")
    g.fnbackend = os.path.join(B.BUILD, "fnbackend")
    import resource
    g.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    g.nginx_errlog = os.path.join(B.LOGS, "resil-nginx.error.log")
    acc = os.environ.get("BENCH_ACCESS_LOG", "auto")
    fn_log = B.fnproxy_accepts_access_log(g.fnproxy)
    g.access_log = fn_log if acc == "auto" else acc in ("1", "on", "yes")
    notes = []
    proxies = list(PROXIES)
    ok, why = fnproxy_accepts_retries(g.fnproxy)
    if not ok:
        proxies.remove("fnproxy")
        notes.append("fnproxy sat out: it refuses `retries`: %s" % why)
    note("\n== reliability under failure: %s; %d rep(s), %d s runs (heal: %d s failing, %d s "
         "measured), wrk -t1 -c%d" % (", ".join(sc["key"] for sc in scenarios), reps, seconds,
                                     HEAL_FAIL_S, HEAL_MEASURE_S, CONNS))
    g.instances = [Instance(g, i) for i in range(N_INSTANCES)]
    g.dead_port = B.free_port()  # nothing listens there
    note("instances (fnbackend, CPU %d): %s; not listening: %d"
         % (B.SERVER_CPU, ", ".join("%s :%d" % (x.name, x.port) for x in g.instances), g.dead_port))

    # Each proxy, healthy instances: every request a 200, all three used.
    for name in proxies:
        px = Proxy(g, name, "resil-check", [x.port for x in g.instances])
        try:
            per0 = [x.requests() for x in g.instances]
            sts = []
            for _ in range(30):
                sts.append(B.http_get(px.port, "/")[0])
            per = [x.requests() - a for x, a in zip(g.instances, per0)]
        finally:
            px.stop()
        if any(s != 200 for s in sts) or min(per) == 0:
            raise SystemExit("bench: %s (resilience config) with healthy instances: statuses %s, "
                             "requests per instance %s" % (name, sorted(set(sts)), per))
        note("  %-8s healthy check: 30 x 200, per instance %s" % (name, per))

    raw = []
    skipped = 0
    for sc in scenarios:
        note("\n-- %s: %s" % (sc["key"], sc["title"]))
        for rep in range(reps):
            k = rep % len(proxies)
            for name in proxies[k:] + proxies[:k]:
                need = (HEAL_FAIL_S + HEAL_MEASURE_S if sc.get("heal") else seconds) + 2
                if time.monotonic() - t_start + need > budget:
                    skipped += 1
                    continue
                row = one_run(g, sc, name, rep, seconds)
                raw.append(row)
                if row.get("failed"):
                    note("  %-8s rep %d: wrk gave no result (see build/bench/logs/wrk/)"
                         % (name, rep + 1))
                    continue
                extra = ""
                if sc.get("heal"):
                    extra = "  (while failing: amp %s, success %s%%)" % (
                        fmt(row.get("fail_amp"), "%.3f"), fmt(row.get("fail_success_pct"), "%.2f"))
                note("  %-8s rep %d: success %8.4f%%  (%d failed of %d: non-2xx %d, socket %d)  "
                     "%6.0f req/s  p50 %6.3f ms  p99 %7.3f ms  amp %.3f%s" % (
                         name, rep + 1, row["success_pct"] or 0, row["failed_n"], row["tried"],
                         row["non2xx"], row["sock_errors"] + row["timeouts"], row["rps"] or 0,
                         row["p50_ms"] or 0, row["p99_ms"] or 0, row["amp"] or 0, extra))
    for x in g.instances:
        B.stop(x.proc)
    if skipped:
        notes.append("%d run(s) skipped to stay within the group's %d s budget" % (skipped, budget))
    for x in g.instances:
        for c in x.crashes:
            notes.append("instance %s CRASHED in %s" % (x.name, c))

    summary = summarize(raw, scenarios)
    checks = goal_checks(summary) if "fnproxy" in proxies else []
    elapsed = time.monotonic() - t_start
    info_line = ("fnproxy, nginx and HAProxy (one worker each) in front of three fnbackend "
                 "instances, each proxy with its own retries as its documentation suggests "
                 "(bench/resil-fnproxy.yaml: `retries { max: 2, on: [connect-failure, reset, "
                 "gateway-error] }`, default backoff and budget; bench/resil-nginx.conf: "
                 "`proxy_next_upstream error timeout http_502 http_503 http_504`, "
                 "`proxy_next_upstream_tries 3`, default max_fails=1 fail_timeout=10s; "
                 "bench/resil-haproxy.cfg: `retry-on all-retryable-errors`, `retries 3`, "
                 "`option redispatch 1`). A fresh proxy for every run. Load: wrk -t1 -c%d GET /, "
                 "%d s per run (resil-heal: %d s with every instance failing, then %d s "
                 "measured after the heal), %d rep(s), proxies alternated rep by rep; wrk on "
                 "CPU %d, proxy and instances on CPU %d%s. %.0f s."
                 % (CONNS, seconds, HEAL_FAIL_S, HEAL_MEASURE_S, reps, B.LOAD_CPU, B.SERVER_CPU,
                    "" if B.PIN else " (pinning OFF)", elapsed))
    text = section(summary, scenarios, checks, notes, info_line)

    # The console: the table and the goals.
    for sc in scenarios:
        rows = [s for s in summary if s["scenario"] == sc["key"]]
        if not rows:
            continue
        note("\n== %s: %s" % (sc["key"], sc["title"]))
        note("%-8s %10s %16s %8s %8s %8s %6s" % ("proxy", "success", "failed/tried", "req/s",
                                                  "p50 ms", "p99 ms", "amp"))
        for s in rows:
            note("%-8s %10s %16s %8s %8s %8s %6s%s" % (
                s["target"], fmt(s["success_pct"], "%.3f%%"), "%d/%d" % (s["failed_n"], s["tried"]),
                fmt(s["rps"], "%.0f"), fmt(s["p50_ms"], "%.3f"), fmt(s["p99_ms"], "%.3f"),
                fmt(s["amp"], "%.3f"),
                ("  while failing: amp %s" % fmt(s["fail_amp"], "%.3f")) if sc.get("heal") else ""))
    if checks:
        note("\nfnproxy against issue 11's goals:")
        for c in checks:
            note("  %-36s %-16s %-34s %s" % c)
    for n in notes:
        note("  - " + n)

    path = os.path.join(B.OUT, "results.md")
    if append and os.path.exists(path):
        with open(path, "a") as f:
            f.write("\n" + text)
    else:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        ver = B.versions()
        head = ["# fnproxy benchmark results", "",
                "- command: BENCH_SCENARIOS=%s %s" % (",".join(sc["key"] for sc in scenarios),
                                                      "make bench-quick" if quick else "make bench"),
                "- date: %s" % time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "- machine: %s, %d CPUs, Linux %s" % (B.cpu_model(), os.cpu_count(),
                                                      platform.release()),
                "- versions: fnproxy %s; nginx %s; %s; %s" % (ver.get("fnproxy"), ver.get("nginx"),
                                                              ver.get("haproxy"), ver.get("wrk")),
                "- load average: end of run: %s (a shared machine: numbers are indicative)" % load,
                ""]
        with open(path, "w") as f:
            f.write("\n".join(head) + "\n" + text)
    fields = ["scenario", "target", "reps", "failed_reps", "success_pct", "success_min",
              "tried", "failed_n", "non2xx", "sock_errors", "timeouts", "rps", "p50_ms",
              "p99_ms", "amp", "fail_amp", "fail_success_pct", "statuses", "per_instance"]
    write_csv(os.path.join(B.OUT, "results-resilience.csv"), summary, fields)
    write_csv(os.path.join(B.OUT, "results-resilience-raw.csv"), raw,
              ["scenario", "target", "rep", "failed", "requests", "tried", "ok", "failed_n",
               "success_pct", "non2xx", "sock_errors", "timeouts", "rps", "p50_ms", "p99_ms",
               "received", "per_instance", "amp", "fail_amp", "fail_success_pct", "fail_requests", "statuses",
               "fail_statuses", "nginx_no_live", "nginx_disabled", "fn_metrics"])
    note("\nwrote the reliability section of %s, %s, %s (%.0f s)" % (
        os.path.relpath(path, B.ROOT),
        os.path.relpath(os.path.join(B.OUT, "results-resilience.csv"), B.ROOT),
        os.path.relpath(os.path.join(B.OUT, "results-resilience-raw.csv"), B.ROOT), elapsed))
    return 1 if any(x.crashes for x in g.instances) else 0
