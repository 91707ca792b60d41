"""Observability: the JSON access log (to a file, to stdout, reopened on
SIGUSR1), GET /stats and the latency histograms of /metrics.

Access log lines are written by each worker from a buffer flushed every
100 ms, so every check of the log polls for a while before deciding. That
no extra line turns up (a duplicate, say) is checked once fnproxy has
exited: a clean exit flushes every worker's buffer, so the files are final.
"""

import calendar
import json
import os
import re
import signal
import socket
import struct
import time

from harness import (HOST, Fnproxy, Proc, case, check, check_eq, fail,
                     free_port, metric_value, request, spread_requests, wait_for, wait_until)

FIELDS = ("ts", "request_id", "trace_id", "client", "listener", "method", "path", "status",
          "function", "route", "upstream", "bytes_in", "bytes_out", "duration_ms", "upstream_ms",
          "attempts", "queue_ms", "direction")
STR_FIELDS = ("ts", "request_id", "trace_id", "client", "listener", "method", "path", "function",
              "route", "upstream", "direction")
# A W3C trace id, or "" for a head refused before it could be read.
TRACE_ID_RE = re.compile(r"^([0-9a-f]{32})?$")
TS_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$")
LOG_WAIT = 3.0  # lines are flushed every 100 ms; this is generous, also under ASan


def obs_config(backend_addr, dead_port, access_log=None):
    """Two functions: "echo" (routes echo, status, delay by path prefix and
    slow for the Host slow.test) and "dead" (one endpoint nobody listens
    on). Anything else has no route."""
    al = "access_log: %s\n" % access_log if access_log else ""
    return (
        "workers: $WORKERS\n"
        "%s"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 2s }\n"
        "functions:\n"
        "  - name: echo\n"
        "    endpoints: [%s]\n"
        "    ingress:\n"
        "      routes:\n"
        "        - { name: echo, match: { listener: public, path_prefix: /echo }, timeout: 5s }\n"
        "        - { name: status, match: { listener: public, path_prefix: /status },"
        " timeout: 5s }\n"
        "        - { name: delay, match: { listener: public, path_prefix: /delay }, timeout: 5s }\n"
        "        - { name: slow, match: { listener: public, host: slow.test, path_prefix: / },"
        " timeout: 5s }\n"
        "  - name: dead\n"
        "    endpoints: [127.0.0.1:%d]\n"
        "    ingress:\n"
        "      routes:\n"
        "        - { name: dead, match: { listener: public, path_prefix: /dead }, timeout: 2s,"
        " connect_timeout: 1s }\n"
        % (al, backend_addr, dead_port)
    )


# ---------------------------------------------------------------------------
# helpers


class Got:
    """What the client saw of one exchange on its own connection."""

    def __init__(self, sent, raw):
        self.sent = sent
        self.raw = raw
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        m = re.match(rb"^HTTP/1\.[01] (\d{3})", head[0]) if head else None
        if not m:
            fail("no status line in %r (request %r)" % (raw[:200], sent[:200]))
        self.status = int(m.group(1))
        self.headers = []
        for line in head[1:]:
            k, _, v = line.partition(b":")
            self.headers.append((k.strip().lower(), v.strip(b" \t")))

    def header(self, name):
        name = name.lower().encode()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def request_id(self):
        v = self.header("x-request-id")
        check(v is not None, "no x-request-id in the answer to %r: %r" % (self.sent[:80],
                                                                           self.raw[:300]))
        return v


def exchange(port, data, timeout=10):
    """Sends data on a fresh connection and reads until fnproxy closes it
    (requests here say Connection: close or are malformed). Every byte the
    client received is kept, so bytes_out can be compared exactly."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(data)
        raw = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("fnproxy did not close after answering %r (have %r)" % (data[:80], raw[:200]))
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue  # the deadline check above reports it
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    finally:
        s.close()
    return Got(data, raw)


def get(path, host="test.local", headers=b""):
    """A GET that asks for the connection to be closed after the answer."""
    if isinstance(path, str):
        path = path.encode("latin-1")
    return (b"GET " + path + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + headers +
            b"Connection: close\r\n\r\n")


def log_lines(path):
    """Complete lines of the log (a line still being written is left out)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [ln + b"\n" for ln in lines[:-1]]


def wait_lines(path, n):
    """Polls until path has n lines and checks it has no more (a line
    written twice in the same flush shows here). Returns the lines. A line
    that a worker would write again later is caught by final_lines()."""
    lines = wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(log_lines(path)),
                     LOG_WAIT) or log_lines(path)
    check(len(lines) >= n, "access log %s has %d lines after %.1fs, want %d: %r"
          % (os.path.basename(path), len(lines), LOG_WAIT, n, lines[-3:]))
    check_eq(len(lines), n, "lines in %s" % os.path.basename(path))
    return lines


def final_lines(fp, want):
    """Stops fp and checks that each path in want ({path: n}) holds exactly
    n lines. fnproxy flushes every worker's buffer before a clean exit, so
    whatever it would ever have logged is in the files now: this is the
    event to wait for before saying no duplicate or late line exists."""
    fp.stop()
    for path, n in want.items():
        lines = log_lines(path)
        check_eq(len(lines), n, "lines in %s after fnproxy exited" % os.path.basename(path))


def parse_line(raw):
    """One access log line -> dict, checking what is true of every line:
    pure ASCII, one JSON object, the documented keys in order, their types."""
    check(raw.endswith(b"\n") and raw.count(b"\n") == 1, "not one line: %r" % raw[:300])
    bad = [b for b in raw if b >= 0x80]
    check(not bad, "access log line is not pure ASCII (%d bytes >= 0x80): %r"
          % (len(bad), raw[:300]))
    try:
        pairs = json.loads(raw.decode("ascii"), object_pairs_hook=lambda p: p)
    except ValueError as e:
        fail("access log line is not valid JSON (%s): %r" % (e, raw[:400]))
    check(isinstance(pairs, list), "access log line is not an object: %r" % raw[:300])
    check_eq(tuple(k for k, _ in pairs), FIELDS, "keys of an access log line, in order")
    e = dict(pairs)
    for k in STR_FIELDS:
        check(isinstance(e[k], str), "%s is not a string: %r" % (k, raw[:300]))
    for k in ("status", "bytes_in", "bytes_out"):
        check(type(e[k]) is int and e[k] >= 0, "%s is not a count: %r" % (k, e[k]))
    for k in ("duration_ms", "upstream_ms"):
        check(type(e[k]) in (int, float) and e[k] >= 0, "%s is not a duration: %r" % (k, e[k]))
    check(e["upstream_ms"] <= e["duration_ms"],
          "upstream_ms %r > duration_ms %r" % (e["upstream_ms"], e["duration_ms"]))
    check(TRACE_ID_RE.match(e["trace_id"]) and e["trace_id"] != "0" * 32,
          "trace_id %r is not 32 lower-case hex digits (or empty)" % e["trace_id"])
    m = TS_RE.match(e["ts"])
    check(m is not None, "ts %r is not RFC 3339 UTC with milliseconds" % e["ts"])
    y, mo, d, hh, mm, ss, ms = (int(g) for g in m.groups())
    e["_ts"] = calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0)) + ms / 1000.0
    return e


def by_request_id(lines):
    """Parsed lines keyed by request_id (as the bytes the client saw);
    each id must appear once."""
    out = {}
    for raw in lines:
        e = parse_line(raw)
        rid = e["request_id"].encode("latin-1")
        check(rid not in out, "request_id %r logged twice: %r" % (rid, raw[:300]))
        out[rid] = e
    return out


def check_entry(e, got, t_before, t_after, **want):
    """The fields of one line against what the client sent and received."""
    what = "log line of %r" % got.sent[:60]
    for k, v in want.items():
        check_eq(e[k], v, "%s: %s" % (what, k))
    check_eq(e["status"], got.status, "%s: status" % what)
    check_eq(e["client"], "127.0.0.1", "%s: client" % what)
    check_eq(e["listener"], "public", "%s: listener" % what)
    check_eq(e["bytes_in"], len(got.sent), "%s: bytes_in (request bytes sent)" % what)
    check_eq(e["bytes_out"], len(got.raw), "%s: bytes_out (bytes the client received)" % what)
    # ts is cut to the millisecond; the same clock on the same machine.
    check(t_before - 0.002 <= e["_ts"] <= t_after + 0.002,
          "%s: ts %s outside the exchange (%.3f .. %.3f)" % (what, e["ts"], t_before, t_after))


class StdoutFnproxy(Fnproxy):
    """fnproxy with its stdout in a file (the harness sends it to /dev/null)."""

    def __init__(self, ctx, config_text, stdout_path):
        self.admin_port = free_port()
        self.ports = {"public": free_port()}
        self.port = self.ports["public"]
        text = ctx.render(config_text, self.ports, self.admin_port, WORKERS=2)
        self.config_path = ctx.write_config(text, "fnproxy-stdout-%d.yaml" % len(ctx.procs))
        with open(stdout_path, "wb") as out:
            Proc.__init__(self, ctx, [ctx.fnproxy_bin, "-c", self.config_path],
                          "fnproxy-%d" % len(ctx.procs), stdout=out)
        self.stopped = False
        self.wait_ready()


def parse_metrics(text):
    """[(name, labels, value)] of every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        check(m is not None, "bad metrics line %r" % line)
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def buckets(samples, name, route, phase=None):
    """[(le text, count)] of one histogram series, in the order printed."""
    out = []
    for n, lb, v in samples:
        if (n == name + "_bucket" and lb.get("route") == route and lb.get("phase") == phase
                and lb.get("direction") == "ingress"):
            out.append((lb["le"], v))
    return out


def check_histogram(samples, name, route, phase=None):
    """Buckets ascending in le and cumulative, +Inf last and equal to _count,
    _count equal to the series count. Returns ({le: count}, count, sum)."""
    what = "%s{route=%s%s}" % (name, route, ",phase=" + phase if phase else "")
    bs = buckets(samples, name, route, phase)
    check(len(bs) >= 2, "%s: no buckets" % what)
    check_eq(bs[-1][0], "+Inf", "%s: last bucket" % what)
    les = [float(le) for le, _ in bs[:-1]]
    check(les == sorted(les) and len(set(les)) == len(les),
          "%s: le bounds not strictly ascending: %r" % (what, [le for le, _ in bs]))
    counts = [v for _, v in bs]
    for i in range(1, len(counts)):
        check(counts[i] >= counts[i - 1], "%s: buckets not cumulative at le=%s: %r"
              % (what, bs[i][0], bs))
    count = None
    total = None
    for n, lb, v in samples:
        if n == name + "_count" and lb.get("route") == route and lb.get("phase") == phase:
            count = v
        if n == name + "_sum" and lb.get("route") == route and lb.get("phase") == phase:
            total = v
    check(count is not None and total is not None, "%s: no _count or _sum" % what)
    check_eq(counts[-1], count, "%s: +Inf bucket vs _count" % what)
    return dict(bs), count, total


def requests_total(samples, route):
    return sum(v for n, lb, v in samples
               if n == "fnproxy_requests_total" and lb.get("route") == route)


# ---------------------------------------------------------------------------
# the access log


@case()
def access_log_file_fields(ctx):
    """One valid JSON line per request, whatever its outcome, with the
    documented fields matching what the client sent and received."""
    b = ctx.start_backend()
    dead = free_port()  # nothing listens there
    log = ctx.path("access.log")
    fp = ctx.start_fnproxy(obs_config(b.addr, dead, log))

    plans = [
        # (request bytes, status, expected fields)
        (get("/echo?secret=s3cr3t&b=2"), 200,
         dict(method="GET", path="/echo", function="echo", route="echo", upstream=b.addr)),
        (b"POST /echo?x=1 HTTP/1.1\r\nHost: test.local\r\nContent-Length: 11\r\n"
         b"Connection: close\r\n\r\nhello world", 200,
         dict(method="POST", path="/echo", function="echo", route="echo", upstream=b.addr)),
        (get("/status/404", headers=b"X-Request-Id: obs-client-id-1\r\n"), 404,
         dict(method="GET", path="/status/404", function="echo", route="status",
              upstream=b.addr, request_id="obs-client-id-1")),
        (get("/nothing/here?q=1"), 404,
         dict(method="GET", path="/nothing/here", function="", route="", upstream="",
              upstream_ms=0)),
        (b"GET /echo?y=2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
         dict(method="GET", path="/echo", function="", route="", upstream="", upstream_ms=0)),
        (b"GARBAGE\r\n\r\n", 400, dict(function="", route="", upstream="", upstream_ms=0)),
        (get("/dead/x"), 502,
         dict(method="GET", path="/dead/x", function="dead", route="dead",
              upstream="127.0.0.1:%d" % dead, upstream_ms=0)),
        (get("/delay/200"), 200,
         dict(method="GET", path="/delay/200", function="echo", route="delay", upstream=b.addr)),
    ]
    done = []
    for data, status, want in plans:
        t0 = time.time()
        got = exchange(fp.port, data)
        t1 = time.time()
        check_eq(got.status, status, "status of %r" % data[:60])
        done.append((got, t0, t1, want))

    lines = wait_lines(log, len(plans))
    check(not any(b"s3cr3t" in ln or b"q=1" in ln for ln in lines),
          "a query string was logged: %r" % [ln for ln in lines if b"s3cr3t" in ln or b"q=1" in ln])
    entries = by_request_id(lines)
    for got, t0, t1, want in done:
        rid = got.request_id
        e = entries.get(rid)
        check(e is not None, "no log line with request_id %r (the client's x-request-id); have %r"
              % (rid, sorted(entries)))
        check_entry(e, got, t0, t1, **want)
        check(e["bytes_in"] > 0 and e["bytes_out"] > 0, "bytes counted: %r" % e)
        if want.get("upstream") and got.status != 502:
            check(e["upstream_ms"] > 0, "upstream_ms of a proxied request: %r" % e)
    delayed = entries[done[-1][0].request_id]
    # The backend's timer may fire up to ~1 ms early (libuv's ms clock).
    check(delayed["upstream_ms"] >= 195, "upstream_ms of /delay/200: %r" % delayed)
    check(delayed["duration_ms"] >= delayed["upstream_ms"], "duration_ms of /delay/200: %r"
          % delayed)
    check(delayed["duration_ms"] < 2000, "duration_ms of /delay/200: %r" % delayed)
    fast = entries[done[0][0].request_id]
    check(fast["duration_ms"] < 1000, "duration_ms of a plain /echo: %r" % fast)
    final_lines(fp, {log: len(plans)})


@case()
def access_log_hostile_bytes(ctx):
    """Bytes a client controls (path, x-request-id) never break a line: it
    stays one line of pure-ASCII JSON, and the logged strings decode back to
    the exact bytes received (code point == byte)."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port(), log))

    rid = b'id"\\\x80\xfe\tz'
    long_path = b"/echo/" + b"p" * 3000
    # A quote, a backslash and "{|}" in a path are not RFC 3986: refused
    # (400), and logged all the same.
    plans = [
        (get("/echo/%00%ff%22%5c%0a"), b"/echo/%00%ff%22%5c%0a", None, 200),
        (get(b'/echo/a"b\\c{|}'), b'/echo/a"b\\c{|}', None, 400),
        (get("/echo/x", headers=b"X-Request-Id: " + rid + b"\r\n"), b"/echo/x", rid, 200),
        (get(long_path + b"?cut"), long_path[:2048], None, 200),
    ]
    gots = []
    for data, path, want_rid, status in plans:
        got = exchange(fp.port, data)
        check_eq(got.status, status, "status of %r" % data[:60])
        if want_rid is not None:
            check_eq(got.request_id, want_rid, "x-request-id echoed to the client")
        gots.append((got, path))
    # Raw bytes >= 0x80 and a control byte in the path: llhttp may refuse
    # them (400); whatever the answer, the line must stay valid.
    for raw_path in (b"/echo/\x80\xff", b"/echo/a\x01b", b"/echo/a\x7fb"):
        got = exchange(fp.port, get(raw_path))
        check(got.status in (200, 400), "status for path %r: %d" % (raw_path, got.status))
        gots.append((got, raw_path if got.status == 200 else None))

    lines = wait_lines(log, len(gots))
    entries = by_request_id(lines)  # checks every line: ASCII, JSON, keys
    for got, path in gots:
        e = entries.get(got.request_id)
        check(e is not None, "no line for request_id %r" % got.request_id)
        check_eq(e["status"], got.status, "status logged for %r" % got.sent[:60])
        check_eq(e["bytes_out"], len(got.raw), "bytes_out for %r" % got.sent[:60])
        if path is not None:
            check_eq(e["path"].encode("latin-1"), path, "path logged for %r" % got.sent[:60])
    e = entries[rid]
    check_eq(e["request_id"].encode("latin-1"), rid, "request_id decoded back to bytes")
    final_lines(fp, {log: len(gots)})


@case()
def client_gone_logged_and_counted_as_499(ctx):
    """A client that goes away (a reset) before any answer: one line with
    status 499 and nothing sent, and code="499" in /metrics and /stats.
    (A plain FIN is taken as a half-close: the answer is still sent.)"""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port(), log))
    c = ctx.connect(fp.port)
    t0 = time.time()
    c.send(get("/delay/2000", headers=b"X-Request-Id: obs-gone-1\r\n"))
    wait_until(lambda: b"obs-gone-1" in b.record(), 5, "the request to reach the function")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t_reset = time.time()
    c.close()  # with SO_LINGER 0: a reset
    e = by_request_id(wait_lines(log, 1)).get(b"obs-gone-1")
    check(e is not None, "no line for the abandoned request: %r" % log_lines(log))
    check_eq((e["status"], e["bytes_out"], e["function"], e["route"], e["upstream"]),
             (499, 0, "echo", "delay", b.addr), "status, bytes_out, function, route, upstream")
    check(e["bytes_in"] > 0, "bytes_in of the abandoned request: %r" % e)
    # Counted when fnproxy saw the reset: not before it (ts is cut to the
    # millisecond), and well before the function's 2 s.
    end = e["_ts"] + e["duration_ms"] / 1000.0
    check(t_reset - 0.005 <= end and e["duration_ms"] < 1500,
          "duration_ms of the abandoned request: %r (reset sent %.3fs after ts)"
          % (e, t_reset - e["_ts"]))
    check(t0 - 0.002 <= e["_ts"] <= t0 + 0.5, "ts of the abandoned request: %r" % e)
    text = wait_for(lambda: (lambda t: t if metric_value(
        t, "fnproxy_requests_total", {"route": "delay", "code": "499"}) else None)(fp.metrics()),
        3) or fp.metrics()
    check_eq(metric_value(text, "fnproxy_requests_total", {"route": "delay", "code": "499"}), 1.0,
             'requests_total{route="delay",code="499"}')
    r = request(fp.admin_port, "GET", "/stats")
    st = stats_route(r.json(), "echo", "delay")
    check(st is not None and st["codes"] == {"499": 1} and st["requests"] == 1,
          "/stats of the delay route: %r" % st)
    final_lines(fp, {log: 1})


@case()
def access_log_sigusr1_reopen(ctx):
    """logrotate's way: rename the file, SIGUSR1, and the next lines go to
    a new file at the configured path while the renamed one keeps the old."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    rotated = ctx.path("access.log.1")
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port(), log))

    before = [exchange(fp.port, get("/echo?n=%d" % i)).request_id for i in range(3)]
    wait_lines(log, 3)
    os.rename(log, rotated)
    # Until the signal, lines still go to the open (renamed) file.
    between = exchange(fp.port, get("/status/201")).request_id
    wait_lines(rotated, 4)
    check(not os.path.exists(log), "%s came back before SIGUSR1" % log)

    fp.send_signal(signal.SIGUSR1)
    check(wait_for(lambda: os.path.exists(log), 3),
          "no new %s within 3s of SIGUSR1; stderr: %s"
          % (os.path.basename(log), fp.stderr_text()[-500:]))
    after = exchange(fp.port, get("/status/202")).request_id
    new = by_request_id(wait_lines(log, 1))
    check_eq(sorted(new), [after], "request ids in the new file")
    check_eq(new[after]["status"], 202, "status in the new file")
    old = by_request_id(log_lines(rotated))
    check_eq(sorted(old), sorted(before + [between]), "request ids kept in the rotated file")
    check_eq(os.stat(log).st_mode & 0o777, 0o644, "mode of the reopened file")

    # A second rotation works as well, and the process is unharmed.
    os.rename(log, ctx.path("access.log.2"))
    fp.send_signal(signal.SIGUSR1)
    check(wait_for(lambda: os.path.exists(log), 3), "no new file after a second SIGUSR1")
    last = exchange(fp.port, get("/echo")).request_id
    check_eq(sorted(by_request_id(wait_lines(log, 1))), [last], "ids after the second rotation")
    check_eq(sorted(by_request_id(log_lines(ctx.path("access.log.2")))), [after],
             "ids in access.log.2")
    check(fp.alive(), "fnproxy still running")
    final_lines(fp, {rotated: 4, ctx.path("access.log.2"): 1, log: 1})


def wait_sigusr1_handled(fp):
    """Waits for fnproxy's log line saying it handled SIGUSR1 (it logs one
    even when there is no file to reopen)."""
    wait_until(lambda: "SIGUSR1: access log reopened" in fp.stderr_text() or not fp.alive(),
               5, "fnproxy to handle SIGUSR1", detail=lambda: fp.stderr_text()[-500:])


@case()
def access_log_stdout(ctx):
    """access_log: stdout puts the lines on standard output (and only
    there); SIGUSR1 is harmless then."""
    b = ctx.start_backend()
    out = ctx.path("fnproxy.stdout")
    fp = StdoutFnproxy(ctx, obs_config(b.addr, free_port(), "stdout"), out)
    ids = [exchange(fp.port, get("/echo?i=%d" % i)).request_id for i in range(2)]
    ids.append(exchange(fp.port, get("/nothing")).request_id)
    entries = by_request_id(wait_lines(out, 3))  # every stdout line is an entry
    check_eq(sorted(entries), sorted(ids), "request ids on stdout")
    check_eq(entries[ids[2]]["status"], 404, "no-route status on stdout")
    check(b'"request_id"' not in fp.stderr_text().encode(), "access log lines on stderr")

    fp.send_signal(signal.SIGUSR1)
    wait_sigusr1_handled(fp)
    check(fp.alive(), "fnproxy exited on SIGUSR1 with access_log: stdout")
    rid = exchange(fp.port, get("/status/203")).request_id
    entries = by_request_id(wait_lines(out, 4))
    check_eq(entries[rid]["status"], 203, "a line after SIGUSR1")
    final_lines(fp, {out: 4})


@case()
def access_log_off_sigusr1_harmless(ctx):
    """Without an access log (the default), SIGUSR1 neither kills fnproxy
    nor creates a file."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port()))
    before = set(os.listdir(ctx.tmpdir))
    fp.send_signal(signal.SIGUSR1)
    wait_sigusr1_handled(fp)
    check(fp.alive(), "fnproxy exited on SIGUSR1 without an access log")
    check_eq(exchange(fp.port, get("/echo")).status, 200, "a request after SIGUSR1")
    made = set(os.listdir(ctx.tmpdir)) - before
    check(not made, "files appeared: %r" % sorted(made))


# ---------------------------------------------------------------------------
# /stats and /metrics


def stats_route(stats, function, route):
    for r in stats.get("routes", []):
        if r.get("function") == function and r.get("route") == route:
            return r
    return None


def scrape_stats(fp, want):
    """Polls /stats until every (function, route) in want has that many
    requests; returns the last JSON."""
    def ok():
        r = request(fp.admin_port, "GET", "/stats", timeout=5)
        check_eq(r.status, 200, "GET /stats")
        ct = (r.header("content-type") or "").split(";")[0].strip()
        check_eq(ct, "application/json", "content-type of /stats")
        try:
            j = r.json()
        except ValueError:
            fail("/stats is not JSON: %r" % r.body[:300])
        last[0] = j
        return all((stats_route(j, f, rt) or {}).get("requests") == n
                   for (f, rt), n in want.items())
    last = [None]
    wait_for(ok, 3, 0.05)
    return last[0]


@case(timeout=90)
def stats_requests_codes_percentiles(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port()))
    plans = [  # (path, Host, status)
        *[("/status/200", "test.local", 200)] * 5,
        *[("/status/503", "test.local", 503)] * 2,
        ("/status/404", "test.local", 404),
        # The slow route (by Host): one quick answer, three of 200 ms.
        ("/status/200", "slow.test", 200),
        *[("/delay/200", "slow.test", 200)] * 3,
    ]
    for path, host, status in plans:
        check_eq(exchange(fp.port, get(path, host=host)).status, status, path)
    # The delay route: 1000 requests whose percentiles all differ. Sorted,
    # ranks 1-880 take ~0 ms, 881-980 5 ms, 981-995 20 ms, 996-1000 60 ms:
    # p50, p90, p99 and p99.9 fall in a different group each, away from
    # the group edges.
    spread_requests(fp.port, ["/delay/0"] * 880 + ["/delay/5"] * 100 + ["/delay/20"] * 15 +
                    ["/delay/60"] * 5)

    want = {("echo", "status"): 8, ("echo", "slow"): 4, ("echo", "delay"): 1000}
    j = scrape_stats(fp, want)
    lat = {}
    for (f, rt), n in want.items():
        r = stats_route(j, f, rt)
        check(r is not None, "/stats has no route %s/%s: %r" % (f, rt, j))
        check_eq(r["requests"], n, "requests of route %s" % rt)
        lm = r.get("latency_ms")
        check(isinstance(lm, dict), "latency_ms of %s: %r" % (rt, r))
        ps = [lm.get(k) for k in ("p50", "p90", "p99", "p999")]
        check(all(type(p) in (int, float) for p in ps), "percentiles of %s: %r" % (rt, lm))
        check(all(p > 0 for p in ps), "percentiles of %s not all > 0: %r" % (rt, lm))
        check(ps == sorted(ps), "percentiles of %s not ordered: %r" % (rt, lm))
        lat[rt] = lm
    check_eq(stats_route(j, "echo", "status")["codes"], {"200": 5, "503": 2, "404": 1},
             "codes of the status route")
    check_eq(stats_route(j, "echo", "slow")["codes"], {"200": 4}, "codes of the slow route")
    check_eq(stats_route(j, "echo", "delay")["codes"], {"200": 1000}, "codes of the delay route")
    check(lat["status"]["p999"] < 200, "percentiles of quick answers: %r" % lat["status"])
    check(200 <= lat["slow"]["p50"] and lat["slow"]["p999"] < 2000,
          "one quick and three /delay/200 requests: %r" % lat["slow"])
    # Percentiles are bucket midpoints, within 1/16 of the value; a timer
    # may fire up to a millisecond early.
    d = lat["delay"]
    check(d["p50"] < 4 and 4 <= d["p90"] < 15 and 15 <= d["p99"] < 50 and
          50 <= d["p999"] < 500, "percentiles of the delay route: %r" % d)
    # Configured routes are listed even without requests (with zeros), and
    # so is the series of requests answered before routing.
    for f, rt in (("echo", "echo"), ("dead", "dead"), ("", "")):
        r = stats_route(j, f, rt)
        if r is not None:
            check(r["requests"] == 0 and r["codes"] == {} and
                  all(v == 0 for v in r["latency_ms"].values()),
                  "route %r without requests: %r" % (rt, r))
    check_eq([ls.get("name") for ls in j.get("listeners", [])], ["public"],
             "listeners in /stats")


@case()
def metrics_histograms(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(obs_config(b.addr, free_port()))
    # Upstream connections are pooled per endpoint, not per route: a
    # request makes a new one exactly when its answer carries an
    # x-backend-conn serial not seen before (requests go one at a time).
    serials = set()
    new_conns = {"status": 0, "slow": 0}
    plans = [("/status/200", "test.local", "status")] * 5 + \
        [("/status/500", "test.local", "status")] + [("/delay/300", "slow.test", "slow")] * 4
    for path, host, rt in plans:
        got = exchange(fp.port, get(path, host=host))
        check_eq(got.status, int(path.rsplit("/", 1)[1]) if rt == "status" else 200, path)
        serial = got.header("x-backend-conn")
        check(serial is not None, "no x-backend-conn in %r" % got.raw[:300])
        if serial not in serials:
            serials.add(serial)
            new_conns[rt] += 1
    for _ in range(2):
        check_eq(exchange(fp.port, get("/dead")).status, 502, "dead endpoint")
    want = {"status": 6, "slow": 4, "dead": 2}

    def settled(t):
        s = parse_metrics(t)
        return all(requests_total(s, rt) == n for rt, n in want.items()) and all(
            metric_value(t, "fnproxy_request_duration_seconds_count", {"route": rt}) == n
            for rt, n in want.items())
    text = wait_for(lambda: (lambda t: t if settled(t) else None)(fp.metrics()), 3) \
        or fp.metrics()
    check("# TYPE fnproxy_request_duration_seconds histogram" in text, "TYPE of the histogram")
    check("# TYPE fnproxy_phase_duration_seconds histogram" in text, "TYPE of the phases")
    s = parse_metrics(text)
    dur = "fnproxy_request_duration_seconds"
    phase = "fnproxy_phase_duration_seconds"
    for rt, n in want.items():
        check_eq(requests_total(s, rt), n, "fnproxy_requests_total of route %s" % rt)
        le, count, total = check_histogram(s, dur, rt)
        check_eq(count, n, "%s_count of route %s (= its requests_total)" % (dur, rt))
        sums = 0.0
        for ph in ("upstream", "proxy") if rt != "dead" else ("connect", "proxy"):
            _, pc, ps = check_histogram(s, phase, rt, ph)
            check_eq(pc, n, "phase %s count of route %s" % (ph, rt))
        for ph in ("connect", "upstream", "proxy"):
            if buckets(s, phase, rt, ph):
                _, pc, ps = check_histogram(s, phase, rt, ph)
                check(pc <= n, "phase %s of route %s counted %d > %d requests" % (ph, rt, pc, n))
                sums += ps
        # connect + upstream + proxy = duration for every request, in whole µs.
        check(abs(sums - total) < 1e-6 * (n + 1),
              "phase sums %.6f != duration sum %.6f for route %s" % (sums, total, rt))
    check_eq(metric_value(text, "fnproxy_requests_total", {"route": "dead", "code": "502"}), 2.0,
             "502s of the dead route")
    # Series that never counted anything are left out, histograms included.
    for name in (dur, phase, "fnproxy_upstream_attempt_duration_seconds"):
        check_eq(buckets(s, name, "echo"), [], "%s of the unused route echo" % name)

    le, _, _ = check_histogram(s, dur, "slow")
    check_eq(le.get("0.25"), 0.0, "/delay/300 requests at or below le=0.25")
    check_eq(le.get("0.5"), 4.0, "/delay/300 requests at or below le=0.5")
    up, _, _ = check_histogram(s, phase, "slow", "upstream")
    check_eq((up.get("0.25"), up.get("0.5")), (0.0, 4.0),
             "upstream phase of /delay/300 at le=0.25 and le=0.5")
    px, _, _ = check_histogram(s, phase, "slow", "proxy")
    check_eq(px.get("0.25"), 4.0, "proxy phase of /delay/300 (fnproxy's own time) at le=0.25")
    # connect is observed once per request that made a new connection; the
    # dead route tries a new one every time and never sends a head.
    check(new_conns["status"] >= 1, "no new upstream connection: %r" % new_conns)
    for rt, n in new_conns.items():
        cc = check_histogram(s, phase, rt, "connect")[1] if n else 0
        check_eq(buckets(s, phase, rt, "connect") != [], n > 0,
                 "connect phase series of route %s present" % rt)
        check_eq(cc, n, "connect phase count of route %s (new upstream connections)" % rt)
    _, cc, _ = check_histogram(s, phase, "dead", "connect")
    check_eq(cc, 2.0, "connect phase of the dead route")
    check_eq(buckets(s, phase, "dead", "upstream"), [], "upstream phase of the dead route")
