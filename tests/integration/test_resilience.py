"""Resilience: timeouts of every kind and retries, over real sockets
(README "Timeouts" and "Retries", the Metrics table).

The function is fnbackend, whose /fail/N/WHAT/KEY paths fail the first N
requests with KEY (a status, a reset, a hang) and then echo with
x-backend-count (tests/backend/README.md), so a case knows exactly which
attempt failed and how many reached the function. Where fnbackend cannot
play the part (a response body that stalls after its head or trickles, a
function that never reads its request body, part of a head then a reset,
noting which connection or instance each attempt reached) a raw socket
server of the case does; a listener with a full accept queue makes a
connect hang. The egress case runs in test_egress's network namespace.

Every case checks what the client got (status, x-fnproxy-attempts, the
echo of what the function got) and what fnproxy counted
(fnproxy_retries_total, fnproxy_retries_skipped_total{reason},
fnproxy_timeouts_total{kind}). Time is asserted only where time is the
point, with generous bounds.

A GET reset on a *pooled* connection is the pool's stale connection
(README: sent again once on a new connection whatever `on` says), so every
reset case here makes its reset request on an upstream connection that is
new: the first request a fresh fnproxy sends.
"""

import json
import socket
import threading
import time

import test_egress as eg  # its namespace (hosts, addresses) and helpers
from harness import (HOST, RawServer, Sender, build_request, case, check, check_eq,
                     check_fnproxy_error, fail, free_port, hget, metric_value,
                     parse_echo, request, wait_for, wait_until)

ROUTE = "r"


def rcfg(endpoints, keys="timeout: 5s", routes=None, access_log=None):
    """One listener "public", one function "fn" with the given endpoints and
    routes: [(name, match, keys)], match and keys being the route's match
    and own keys in flow style ("host: a.test", "timeout: 5s, retries:
    { max: 2, on: [reset] }"). By default one route "r" for / with `keys`.
    (Routes differ by host: fnproxy passes the path on as it is, and
    fnbackend's /fail paths must start the path.)"""
    if routes is None:
        routes = [(ROUTE, "path_prefix: /", keys)]
    text = (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        + ("access_log: %s\n" % access_log if access_log else "")
        + "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 5s }\n"
        "functions:\n"
        "  - name: fn\n"
        "    endpoints: [%s]\n"
        "    ingress:\n"
        "      routes:\n" % ", ".join(endpoints)
    )
    for name, match, k in routes:
        text += ("        - { name: %s, match: { listener: public, %s }, %s }\n"
                 % (name, match, k))
    return text


def dead_addr():
    """An address nothing listens on: connects to it are refused."""
    return "127.0.0.1:%d" % free_port()


def attempts(r):
    v = r.header("x-fnproxy-attempts")
    check(v is not None and v.isdigit(), "x-fnproxy-attempts missing or not a number: %r" % (r,))
    check(len(r.headers_all("x-fnproxy-attempts")) == 1,
          "x-fnproxy-attempts more than once: %r" % r.headers)
    return int(v)


def timed(port, method, path, headers=None, body=None, timeout=10):
    """request() on a fresh connection; returns (Response, seconds)."""
    t0 = time.monotonic()
    r = request(port, method, path, headers=headers, body=body, timeout=timeout)
    return r, time.monotonic() - t0


def metric(fp, name, route=ROUTE, direction="ingress", **labels):
    """The value of one counter of this route (0 when the series is absent)."""
    labels.update(direction=direction, route=route)
    if direction == "ingress":
        labels.setdefault("function", "fn")
    v = metric_value(fp.metrics(), name, labels)
    return 0 if v is None else int(v)


def retries(fp, route=ROUTE, **kw):
    return metric(fp, "fnproxy_retries_total", route, **kw)


def skipped(fp, reason=None, route=ROUTE, **kw):
    """Skipped retries of one reason, or {reason: n} of every reason."""
    if reason is not None:
        return metric(fp, "fnproxy_retries_skipped_total", route, reason=reason, **kw)
    return {k: v for k in ("max", "non_idempotent", "body", "deadline", "budget")
            for v in [metric(fp, "fnproxy_retries_skipped_total", route, reason=k, **kw)] if v}


TIMEOUT_KINDS = ("connect", "header", "body", "upstream", "idle", "dns", "per_try", "total")


def timeouts(fp, route=ROUTE, **kw):
    """{kind: n} of fnproxy_timeouts_total for this route (nonzero ones)."""
    return {k: v for k in TIMEOUT_KINDS
            for v in [metric(fp, "fnproxy_timeouts_total", route, kind=k, **kw)] if v}


def check_counts(what, get, want, timeout=3):
    """Polls get() until it equals want (counters are bumped in the
    workers; a scrape right after the answer may be early), else fails."""
    last = [None]

    def done():
        last[0] = get()
        return last[0] == want

    if not wait_for(done, timeout):
        fail("%s: got %r, want %r" % (what, last[0], want))


def backend_stats(b):
    """fnbackend's {requests, failed} (control paths are never counted)."""
    r = request(b.port, "GET", "/_fnbackend/stats")
    check_eq(r.status, 200, "GET /_fnbackend/stats")
    return r.json()


def echo_of(r, what):
    """The echo a 200 from /fail carries: (request line, headers, body)."""
    check(r.status == 200, "%s: status %d, want 200 (%r)" % (what, r.status, r))
    return parse_echo(r.body)


def pattern(n):
    """n bytes of a 251-byte cycle: a dropped or doubled piece shows."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


# ---------------------------------------------------------------------------
# raw servers and sockets for what fnbackend cannot do


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf


def wait_peer_gone(s, srv, timeout=30):
    """Reads and drops until the peer closes (or the server stops)."""
    s.settimeout(0.1)
    end = time.monotonic() + timeout
    while not srv.stop.is_set() and time.monotonic() < end:
        try:
            if not s.recv(65536):
                srv.note("peer closed")
                return
        except socket.timeout:
            continue
        except OSError:
            srv.note("peer closed")
            return


def stalling_body(s, srv):
    """A 200 head promising 1000 bytes, 100 of them, then nothing (no FIN):
    a response body that stops moving."""
    if read_head(s) is None:
        return
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    srv.note("sent part")
    wait_peer_gone(s, srv)


def never_reads(s, srv):
    """Accepts and never reads: a function that does not take its body."""
    srv.note("accepted")
    while not srv.stop.is_set():
        time.sleep(0.05)


def scripted(script):
    """A handler: connection n (1-based) behaves as script[n-1] (the last
    entry for later ones), for every request on it: "hang" never answers,
    "503" answers 503 to its first request and "conn N" to later ones,
    "503always" 503 to every one, "ok" answers 200 "conn N". Notes
    "request" for each request and "N closed" when the peer closes."""

    def handler(s, srv):
        with srv.lock:
            n = srv.conns
        what = script[min(n, len(script)) - 1]
        s.settimeout(0.1)
        buf = b""
        served = 0
        while not srv.stop.is_set():
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                srv.note("request")
                if what == "hang":
                    continue
                body = b"conn %d" % n
                fail503 = what == "503always" or (what == "503" and served == 0)
                status = b"503 Service Unavailable" if fail503 else b"200 OK"
                s.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                          + body)
                served += 1
            chunk = srv.recv(s)
            if chunk is None:
                continue
            if not chunk:
                srv.note("%d closed" % n)
                return
            buf += chunk

    return handler


class StalledListener:
    """127.0.0.1:port whose accept queue is full: the kernel drops new SYNs,
    so a connect to it hangs (test_egress.connect_timeout_answers_504 does
    this in a namespace; loopback in ours behaves the same)."""

    def __init__(self):
        self.lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsn.bind((HOST, 0))
        self.lsn.listen(0)
        self.port = self.lsn.getsockname()[1]
        self.addr = "%s:%d" % (HOST, self.port)
        self.fillers = []
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex((HOST, self.port))
            self.fillers.append(f)
        time.sleep(0.2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect((HOST, self.port))
            fail("the accept queue of the stalled listener is not full")
        except socket.timeout:
            pass
        finally:
            probe.close()

    def close(self):
        for f in self.fillers:
            f.close()
        self.lsn.close()


# ---------------------------------------------------------------------------
# 1. each `on` condition: retried when named, not retried when not


@case()
def on_connect_failure(ctx):
    """A dead endpoint next to a live one: a request that tried the dead one
    first is retried on the live one (on: [connect-failure], the default),
    at once (no backoff after a failed connect, even with a 2s one);
    with every endpoint dead, 502 after max+1 attempts; and without
    connect-failure in `on` a refused connect ends the request."""
    b = ctx.start_backend()
    # A backoff of 2s that must not apply: nothing reached anyone.
    fp = ctx.start_fnproxy(rcfg([dead_addr(), b.addr], "timeout: 5s,"
                                " retries: { backoff: { base: 2s, max: 2s } }"))
    seen = {1: 0, 2: 0}
    for i in range(24):
        r, took = timed(fp.port, "GET", "/echo?i=%d" % i)
        check_eq(r.status, 200, "request %d with a dead and a live endpoint" % i)
        check(took < 1, "request %d took %.2fs: no backoff after a failed connect" % (i, took))
        n = attempts(r)
        check(n in seen, "request %d: x-fnproxy-attempts %d" % (i, n))
        seen[n] += 1
    check(seen[2] > 0, "no request tried the dead endpoint first in 24 (%r): the balancer "
          "picks one of two at random" % seen)
    check_counts("retries after a refused connect", lambda: retries(fp), seen[2])
    check_eq(skipped(fp), {}, "skipped retries")

    # Every endpoint dead: the first attempt and max (2) retries, then 502.
    fp2 = ctx.start_fnproxy(rcfg([dead_addr(), dead_addr()],
                                 "timeout: 5s, retries: { max: 2, on: [connect-failure] }"))
    r = request(fp2.port, "GET", "/x")
    check_fnproxy_error(r, 502, "upstream_unreachable")
    check_eq(attempts(r), 3, "attempts with every endpoint dead")
    check_counts("retries and skipped with every endpoint dead",
                 lambda: (retries(fp2), skipped(fp2)), (2, {"max": 1}))

    # connect-failure not named: a refused connect is not tried again.
    fp3 = ctx.start_fnproxy(rcfg([dead_addr(), b.addr],
                                 "timeout: 5s, retries: { max: 2, on: [reset] }"))
    got = {}
    for i in range(24):
        r = request(fp3.port, "GET", "/echo?j=%d" % i)
        check_eq(attempts(r), 1, "attempts without connect-failure in on (%r)" % r)
        got[r.status] = got.get(r.status, 0) + 1
        if r.status != 200:
            check_fnproxy_error(r, 502, "upstream_unreachable")
    check(got.get(502, 0) > 0 and got.get(200, 0) > 0,
          "want both a 502 (the dead endpoint first) and a 200 in 24: %r" % got)
    check_counts("retries without connect-failure in on", lambda: (retries(fp3), skipped(fp3)),
                 (0, {}))


@case()
def on_refused_but_not_connect_timeout(ctx):
    """`refused` covers a refused connect only: with on: [refused], a dead
    endpoint is retried, a connect that times out is not; with
    connect-failure the timed-out connect is retried too."""
    b = ctx.start_backend()
    stalled = StalledListener()
    try:
        keys = "timeout: 5s, connect_timeout: 200ms, retries: { max: 1, on: [%s] }"
        fp = ctx.start_fnproxy(rcfg([dead_addr(), b.addr], keys % "refused"))
        n2 = 0
        for i in range(16):
            r = request(fp.port, "GET", "/echo?i=%d" % i)
            check_eq(r.status, 200, "refused connect retried (request %d)" % i)
            n2 += attempts(r) == 2
        check(n2 > 0, "no request of 16 tried the dead endpoint first")
        check_counts("retries after refused connects", lambda: retries(fp), n2)

        # A connect that hangs is a connect failure but not a refusal.
        fp2 = ctx.start_fnproxy(rcfg([stalled.addr], keys % "refused"))
        r, took = timed(fp2.port, "GET", "/x")
        check_fnproxy_error(r, 502, "upstream_unreachable")
        check_eq(attempts(r), 1, "attempts after a connect timeout, on: [refused]")
        check(took < 3, "answered %.2fs after a 200ms connect timeout" % took)
        check_counts("timeouts and retries, on: [refused]",
                     lambda: (timeouts(fp2), retries(fp2), skipped(fp2)),
                     ({"connect": 1}, 0, {}))

        fp3 = ctx.start_fnproxy(rcfg([stalled.addr, b.addr], keys % "connect-failure"))
        n2 = 0
        for i in range(12):
            r = request(fp3.port, "GET", "/echo?k=%d" % i)
            check_eq(r.status, 200, "timed-out connect retried (request %d)" % i)
            n2 += attempts(r) == 2
        check(n2 > 0, "no request of 12 tried the stalled endpoint first")
        check_counts("connect timeouts and retries, on: [connect-failure]",
                     lambda: (timeouts(fp3), retries(fp3)), ({"connect": n2}, n2))
    finally:
        stalled.close()


@case()
def on_reset(ctx):
    """/fail/1/reset/K: the connection is reset after the request was read.
    With reset in `on`, the GET is made again and gets 200 (the echo of the
    second request with this key); without, 502."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [reset] }"))
    r = request(fp.port, "GET", "/fail/1/reset/rs1")
    echo_of(r, "GET after a reset, on: [reset]")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "attempts, and requests with the key the function saw")
    check_counts("retries after a reset", lambda: (retries(fp), skipped(fp)), (1, {}))

    fp2 = ctx.start_fnproxy(rcfg([b.addr],
                                 "timeout: 5s, retries: { max: 2, on: [connect-failure] }"))
    r = request(fp2.port, "GET", "/fail/1/reset/rs2")
    check_fnproxy_error(r, 502, "upstream_bad_response")
    check_eq(attempts(r), 1, "attempts after a reset, reset not in on")
    check_counts("retries after a reset, reset not in on",
                 lambda: (retries(fp2), skipped(fp2)), (0, {}))
    r = request(fp2.port, "GET", "/fail/1/reset/rs2")
    check_eq((r.status, r.header("x-backend-count")), (200, "2"),
             "the key's next request: the function saw the first exactly once")

    # A FIN instead of the RST is the same failure (/fail/1/close).
    fp3 = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [reset] }"))
    r = request(fp3.port, "GET", "/fail/1/close/rs3")
    echo_of(r, "GET after a close, on: [reset]")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "close: attempts, requests the function saw")


def half_head_then_rst(s, srv):
    """The first connection: part of a response head, then a reset. Later
    ones: a whole answer "ok"."""
    with srv.lock:
        first = srv.conns == 1
    if read_head(s) is None:
        return
    if first:
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Len")
        time.sleep(0.05)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@case()
def on_reset_after_part_of_the_head(ctx):
    """reset: "the connection broke before a whole response head": a
    function that sent part of its head and reset is retried (on: [reset]);
    without reset in `on`, 502. A response cut after its head had gone to
    the client (/fail/1/mid) is never retried: the client sees the head,
    fewer bytes than promised and a close, and the function saw it once."""
    srv = RawServer(half_head_then_rst)
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 5s, retries: { max: 2, on: [reset] }"))
        r = request(fp.port, "GET", "/x")
        check_eq((r.status, r.body, attempts(r)), (200, b"ok", 2),
                 "after part of a head and a reset: status, body, attempts")
        check_eq(srv.conns, 2, "connections the function got")
    finally:
        srv.close()
    srv = RawServer(half_head_then_rst)
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 5s, retries: { max: 2, on: [503] }"))
        r = request(fp.port, "GET", "/x")
        check_fnproxy_error(r, 502, "upstream_bad_response")
        check_eq(attempts(r), 1, "attempts, reset not in on")
    finally:
        srv.close()

    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [reset] }"))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/fail/1/mid/mid1"))
    r = c.read_head(timeout=5)
    check_eq((r.status, attempts(r)), (200, 1), "cut after the head: status, attempts")
    if r.header("content-length"):
        n = c.count_body(r, timeout=5)
    else:
        n = len(c.read_to_eof(5))
    check(n < 1000 and c.eof, "cut after the head: %d of 1000 bytes, closed %s" % (n, c.eof))
    r = request(fp.port, "GET", "/fail/1/mid/mid1")
    check_eq((r.status, r.header("x-backend-count")), (200, "2"),
             "the key's next request: the cut one reached the function once")
    check_counts("retries after a cut body", lambda: (retries(fp), skipped(fp)), (0, {}))


def _status_case(on, retried, not_retried, tag):
    """A case: with retries.on = on, each status in `retried` is made again
    (200, attempts 2, the function saw the key twice), each in
    `not_retried` goes to the client as it is (attempts 1, seen once)."""

    def fn(ctx):
        b = ctx.start_backend()
        fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [%s],"
                                    " backoff: { base: 1ms, max: 5ms } }" % on))
        for st in retried:
            r = request(fp.port, "GET", "/fail/1/%d/%s%d" % (st, tag, st))
            echo_of(r, "%d with on: [%s]" % (st, on))
            check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
                     "%d with on: [%s]: attempts, requests the function saw" % (st, on))
        for st in not_retried:
            r = request(fp.port, "GET", "/fail/1/%d/%s%d" % (st, tag, st))
            check_eq((r.status, attempts(r), r.header("x-backend-count")), (st, 1, "1"),
                     "%d with on: [%s]: status, attempts, requests the function saw"
                     % (st, on))
            line, _, _ = parse_echo(r.body)
            check(line.startswith("GET /fail/1/%d/" % st),
                  "the %d goes to the client as the function sent it: %r" % (st, r.body[:100]))
        check_counts("retries and skipped, on: [%s]" % on,
                     lambda: (retries(fp), skipped(fp)), (len(retried), {}))

    fn.__name__ = "on_" + tag
    fn.__qualname__ = fn.__name__
    fn.__module__ = __name__
    fn.__doc__ = "retries.on: [%s]: %r retried, %r not." % (on, retried, not_retried)
    return case()(fn)


on_gateway_error = _status_case("gateway-error", (502, 503, 504), (500, 501, 409, 429),
                                "gateway_error")
on_5xx = _status_case("5xx", (500, 501, 503, 599), (409, 429, 404), "5xx")
on_retriable_4xx = _status_case("retriable-4xx", (409,), (429, 400, 503, 500),
                                "retriable_4xx")
on_explicit_status = _status_case("429", (429,), (409, 503, 500), "explicit_status")
on_explicit_statuses_and_class = _status_case("418, retriable-4xx", (418, 409), (503, 429),
                                              "statuses_and_class")


@case()
def retry_prefers_another_endpoint(ctx):
    """A retry goes to an endpoint not tried yet, then to any but the last
    (README). Each fnbackend counts /fail keys on its own, so with two
    instances and /fail/1/503/K the first attempt gets a 503 from one, the
    retry a 503 from the other (its first request with K), and the third
    attempt the 200 from the first (its second): x-backend-count 2 after
    3 attempts, and each instance got the key the expected number of times.
    Had the retry gone back to the same instance, it would have answered
    200 at the second attempt. Later attempts alternate between the two
    (any but the last one tried), as the order of arrivals at two raw
    servers shows. With three instances and max 2 every
    attempt finds a fresh one: the client gets the third 503."""
    keys = ("timeout: 5s, retries: { max: 2, on: [503], backoff: { base: 1ms, max: 2ms } }")
    bs = [ctx.start_backend(name="i%d" % i) for i in range(3)]
    fp = ctx.start_fnproxy(rcfg([bs[0].addr, bs[1].addr], keys))
    for i in range(6):
        r = request(fp.port, "GET", "/fail/1/503/two%d" % i)
        echo_of(r, "two instances, request %d" % i)
        check_eq((attempts(r), r.header("x-backend-count")), (3, "2"),
                 "two instances, request %d: attempts, the answering instance's count" % i)
    got = sorted(backend_stats(b)["requests"] for b in bs[:2])
    check_eq(sum(got), 18, "requests the two instances got for 6 requests of 3 attempts")
    # Once both were tried, any but the last one: the attempts alternate.
    # Two raw servers answering 503 to everything note each request; the
    # order of arrivals shows no instance got two attempts in a row.
    srvs = [RawServer(scripted(["503always"])) for _ in range(2)]
    try:
        fp2 = ctx.start_fnproxy(rcfg([x.addr for x in srvs], keys.replace("{ max: 2,",
                                                                          "{ max: 4,")))
        for i in range(8):
            r = request(fp2.port, "GET", "/alt%d" % i)
            check_eq((r.status, attempts(r)), (503, 5), "always 503, request %d" % i)
        arrivals = sorted((t, k) for k, x in enumerate(srvs) for e, t in x.events
                          if e == "request")
        order = "".join("AB"[k] for _, k in arrivals)
        check_eq(len(order), 40, "requests the two instances got")
        for i in range(8):
            seq = order[5 * i:5 * i + 5]
            check(seq in ("ABABA", "BABAB"), "request %d's attempts went to %s (and all: %s): "
                  "want no instance twice in a row" % (i, seq, order))
    finally:
        for x in srvs:
            x.close()
    fp3 = ctx.start_fnproxy(rcfg([b.addr for b in bs], keys))
    for i in range(6):
        r = request(fp3.port, "GET", "/fail/1/503/three%d" % i)
        check_eq((r.status, attempts(r), r.header("x-backend-count")), (503, 3, "1"),
                 "three instances, request %d: status, attempts, the last one's count" % i)
    check_counts("three instances: retries, skipped", lambda: (retries(fp3), skipped(fp3)),
                 (12, {"max": 6}))


@case()
def retries_run_out_last_answer_as_is(ctx):
    """When the retries run out, the last answer goes to the client as it
    is (README): /fail/5/503 with max 2 gives the third 503, the echo of the
    third request, and one retry skipped for max."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [503],"
                                " backoff: { base: 1ms, max: 5ms } }"))
    r = request(fp.port, "GET", "/fail/5/503/out1")
    check_eq((r.status, attempts(r), r.header("x-backend-count")), (503, 3, "3"),
             "status, attempts, requests the function saw")
    line, hdrs, _ = parse_echo(r.body)
    check_eq(line, "GET /fail/5/503/out1 HTTP/1.1", "the 503's body is the function's echo")
    check_counts("retries and skipped", lambda: (retries(fp), skipped(fp)), (2, {"max": 1}))
    # max: 0 turns retries off: the first 503 is the answer.
    fp2 = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 0, on: [503] }"))
    r = request(fp2.port, "GET", "/fail/5/503/out2")
    check_eq((r.status, attempts(r), r.header("x-backend-count")), (503, 1, "1"),
             "max 0: status, attempts, requests the function saw")
    check_counts("max 0: retries and skipped", lambda: (retries(fp2), skipped(fp2)),
                 (0, {"max": 1}))


@case()
def on_per_try_timeout(ctx):
    """/fail/1/hang: the first attempt gets no answer. With per_try_timeout
    300ms and per-try-timeout in `on`, the second attempt answers 200;
    without it in `on`, the per-try timeout ends the request: 504
    upstream_timeout long before the route's timeout, kind per_try."""
    b = ctx.start_backend()
    keys = "timeout: 5s, per_try_timeout: 300ms, retries: { max: 2, on: [%s] }"
    fp = ctx.start_fnproxy(rcfg([b.addr], keys % "per-try-timeout"))
    r, took = timed(fp.port, "GET", "/fail/1/hang/pt1")
    echo_of(r, "after a hung attempt, on: [per-try-timeout]")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "attempts, requests the function saw")
    check(0.25 <= took < 3, "200 after %.2fs: want the 300ms per-try timeout, then a retry"
          % took)
    check_counts("timeouts, retries", lambda: (timeouts(fp), retries(fp), skipped(fp)),
                 ({"per_try": 1}, 1, {}))

    fp2 = ctx.start_fnproxy(rcfg([b.addr], keys % "reset"))
    r, took = timed(fp2.port, "GET", "/fail/1/hang/pt2")
    check_fnproxy_error(r, 504, "upstream_timeout")
    check_eq(attempts(r), 1, "attempts, per-try-timeout not in on")
    check(0.25 <= took < 3, "504 after %.2fs: want it at the 300ms per-try timeout, not the "
          "5s timeout" % took)
    check_counts("timeouts, retries, per-try-timeout not in on",
                 lambda: (timeouts(fp2), retries(fp2), skipped(fp2)), ({"per_try": 1}, 0, {}))


@case()
def failed_attempt_connection_closed_never_reused(ctx):
    """An attempt that failed (its per-try timeout passed, or its status was
    retried) is cancelled cleanly: fnproxy closes that connection to the
    function at once and never sends a later request over it; the same for
    a request that ran out of its total timeout."""
    for on, first, keys in (("per-try-timeout", "hang", "per_try_timeout: 300ms, "),
                            ("503", "503", "")):
        srv = RawServer(scripted([first, "ok"]))
        try:
            fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 5s, %sretries: { max: 2, on: [%s],"
                                        " backoff: { base: 1ms, max: 2ms } }" % (keys, on)),
                                   workers=1)
            r = request(fp.port, "GET", "/x")
            t_answer = time.monotonic()
            check_eq((r.status, r.body, attempts(r)), (200, b"conn 2", 2),
                     "on [%s]: the retry's answer" % on)
            ev = wait_until(lambda: [t for e, t in srv.events if e == "1 closed"], 3,
                            "on [%s]: fnproxy to close the failed attempt's connection" % on)
            check(ev[0] - t_answer < 1, "on [%s]: the failed connection closed %.2fs after "
                  "the answer" % (on, ev[0] - t_answer))
            for i in range(5):
                r = request(fp.port, "GET", "/y%d" % i)
                check_eq((r.status, r.body), (200, b"conn 2"),
                         "on [%s]: request %d after (conn 1 must never serve again)" % (on, i))
        finally:
            srv.close()
    srv = RawServer(scripted(["hang", "ok"]))
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 400ms"), workers=1)
        r = request(fp.port, "GET", "/x")
        check_fnproxy_error(r, 504, "upstream_timeout")
        wait_until(lambda: any(e == "1 closed" for e, _ in srv.events), 3,
                   "fnproxy to close the connection of a request past its timeout")
        r = request(fp.port, "GET", "/y")
        check_eq((r.status, r.body), (200, b"conn 2"), "the request after a 504")
    finally:
        srv.close()


@case()
def pipelined_requests_retried_in_order(ctx):
    """Pipelined requests on one client connection, the first and the third
    failing once (a reset, a 503): each is retried and the answers come in
    order, each with its own x-fnproxy-attempts."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [reset, 503],"
                                " backoff: { base: 1ms, max: 2ms } }"))
    c = ctx.connect(fp.port)
    paths = ["/fail/1/reset/pl1", "/echo?two", "/fail/1/503/pl3", "/echo?four"]
    c.send(b"".join(build_request("GET", p) for p in paths))
    for p, want in zip(paths, (2, 1, 2, 1)):
        r = c.read_response(timeout=5)
        line, _, _ = echo_of(r, "pipelined %s" % p)
        check_eq((line, attempts(r)), ("GET %s HTTP/1.1" % p, want),
                 "pipelined answer: the request it echoes, attempts")
    check_counts("retries", lambda: retries(fp), 2)


@case()
def client_gone_during_a_retry(ctx):
    """A client that resets its connection while its request waits for a
    retry (a Retry-After of 1s) or for an attempt that hangs: the request
    ends there (code 499), no further attempt reaches the function, and
    fnproxy serves on. A client that only half-closes after its request
    still gets the answer of the retry (README: it "still gets, and is
    counted with, the answer")."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, per_try_timeout: 300ms,"
                                " retries: { max: 2, on: [503, per-try-timeout] }"), workers=1)
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/fail/1/503/gone1?retry_after=1"))
    wait_until(lambda: backend_stats(b)["requests"] == 1, 3, "the first attempt to arrive")
    time.sleep(0.1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/fail/1/hang/gone2"))
    wait_until(lambda: backend_stats(b)["requests"] == 2, 3, "the hanging attempt to arrive")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    time.sleep(1.5)  # past the Retry-After and the per-try timeout
    check_eq(backend_stats(b)["requests"], 2, "requests the function got after the clients left")
    check_counts("requests counted 499",
                 lambda: metric(fp, "fnproxy_requests_total", code="499"), 2)
    for k in ("gone1", "gone2"):
        r = request(fp.port, "GET", "/fail/1/503/%s" % k)
        check_eq((r.status, r.header("x-backend-count")), (200, "2"),
                 "%s: the key's next request (the function saw it once before)" % k)

    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/fail/1/503/half?retry_after=1"))
    c.shutdown_write()
    r = c.read_response(timeout=5)
    echo_of(r, "a half-closed client's request after a 503 with Retry-After: 1")
    check_eq(attempts(r), 2, "half-closed client: attempts")


# ---------------------------------------------------------------------------
# 2. each timeout kind


@case()
def timeout_total(ctx):
    """A function that never answers, timeout 500ms, no per_try_timeout:
    504 upstream_timeout at about 500ms, kind total and nothing else."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 500ms"))
    r, took = timed(fp.port, "GET", "/hang")
    check_fnproxy_error(r, 504, "upstream_timeout")
    check(0.45 <= took < 3, "504 after %.2fs with timeout 500ms" % took)
    check_counts("timeout kinds", lambda: timeouts(fp), {"total": 1})
    # The total bounds every attempt: per-try timeouts and retries included.
    fp2 = ctx.start_fnproxy(rcfg([b.addr], "timeout: 700ms, per_try_timeout: 300ms,"
                                 " retries: { max: 10, on: [per-try-timeout],"
                                 " backoff: { base: 1ms, max: 1ms } }"))
    r, took = timed(fp2.port, "GET", "/hang")
    check_fnproxy_error(r, 504, "upstream_timeout")
    check(0.65 <= took < 3, "504 after %.2fs with timeout 700ms" % took)
    check_eq(attempts(r), 3, "attempts: two 300ms tries and a third cut by the 700ms total")

    def kinds():
        t = timeouts(fp2)
        return t if t.get("total") == 1 else None

    t = wait_for(kinds, 3) or timeouts(fp2)
    check_eq(t, {"per_try": 2, "total": 1}, "timeout kinds under a total of 700ms")


@case()
def timeout_connect(ctx):
    """A connect that hangs (a listener with a full accept queue), with
    connect_timeout 200ms and the default retries (max 2 on
    connect-failure): three connects, each timed out (kind connect), then
    502 upstream_unreachable (README: no endpoint accepted a connection).
    A timeout shorter than connect_timeout cuts the connect: 504, total."""
    stalled = StalledListener()
    try:
        fp = ctx.start_fnproxy(rcfg([stalled.addr], "timeout: 5s, connect_timeout: 200ms"))
        r, took = timed(fp.port, "GET", "/x")
        check_fnproxy_error(r, 502, "upstream_unreachable")
        check_eq(attempts(r), 3, "attempts: the first and the default 2 retries")
        check(0.55 <= took < 3.5, "answered after %.2fs: want three 200ms connect timeouts"
              % took)
        check_counts("timeout kinds, retries", lambda: (timeouts(fp), retries(fp), skipped(fp)),
                     ({"connect": 3}, 2, {"max": 1}))
        # The request's timeout is shorter than connect_timeout: it ends the
        # connect, 504 upstream_timeout, kind total.
        fp2 = ctx.start_fnproxy(rcfg([stalled.addr], "timeout: 300ms, connect_timeout: 2s"))
        r, took = timed(fp2.port, "GET", "/x")
        check_fnproxy_error(r, 504, "upstream_timeout")
        check(0.25 <= took < 1.8, "504 after %.2fs: want the 300ms timeout, not the 2s "
              "connect_timeout" % took)
        check_counts("timeout kinds, timeout < connect_timeout", lambda: timeouts(fp2),
                     {"total": 1})
    finally:
        stalled.close()


@case()
def timeout_idle_response_body(ctx):
    """A response body that stops moving after its head (a raw server sends
    a head promising 1000 bytes, 100 of them, and then nothing, without
    closing): with idle_timeout 300ms the client is closed at about 300ms
    with fewer than 1000 bytes (kind idle), and the function's connection
    is closed too. The 5s timeout does not cut it: the head had come."""
    srv = RawServer(stalling_body)
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 5s, idle_timeout: 300ms"))
        c = ctx.connect(fp.port)
        c.send(build_request("GET", "/stall"))
        r = c.read_head(timeout=5)
        t_head = time.monotonic()
        check_eq((r.status, attempts(r)), (200, 1), "status and attempts of the head")
        n = c.count_body(r, timeout=5) if r.header("content-length") else len(c.read_to_eof(5))
        took = time.monotonic() - t_head
        check(c.eof, "the client connection is closed")
        check(n < 1000, "got %d of 1000 body bytes" % n)
        check(0.2 <= took < 3, "closed %.2fs after the head with idle_timeout 300ms" % took)
        wait_until(lambda: any(e == "peer closed" for e, _ in srv.events), 3,
                   "fnproxy to close its connection to the stalled function")
        check_counts("timeout kinds", lambda: timeouts(fp), {"idle": 1})
    finally:
        srv.close()


def trickle(s, srv):
    """A head at once, then 10 body bytes, one every 120ms."""
    if read_head(s) is None:
        return
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    for i in range(10):
        time.sleep(0.12)
        s.sendall(b"%d" % i)
    wait_peer_gone(s, srv, 5)


@case()
def timeouts_bound_the_head_not_a_moving_body(ctx):
    """timeout and per_try_timeout bound the response head; a body that
    keeps moving (a byte every 120ms for 1.2s) is not cut by a 500ms
    timeout, a 300ms per-try timeout or a 400ms idle_timeout."""
    srv = RawServer(trickle)
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 500ms, per_try_timeout: 300ms,"
                                    " idle_timeout: 400ms"))
        r, took = timed(fp.port, "GET", "/slow")
        check_eq((r.status, r.body, attempts(r)), (200, b"0123456789", 1),
                 "a body trickling for 1.2s")
        check(took >= 1.0, "took %.2fs" % took)
        check_counts("timeout kinds", lambda: timeouts(fp), {})
    finally:
        srv.close()


@case()
def timeout_body_client_stalls(ctx):
    """The client stops sending its body: 408 request_timeout after
    idle_timeout (300ms, not the 5s timeout), kind body."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, idle_timeout: 300ms"))
    c = ctx.connect(fp.port)
    t0 = time.monotonic()
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    r = c.read_response(timeout=5)
    took = time.monotonic() - t0
    check_fnproxy_error(r, 408, "request_timeout")
    check(0.25 <= took < 3, "408 after %.2fs with idle_timeout 300ms" % took)
    check_counts("timeout kinds", lambda: timeouts(fp), {"body": 1})


@case()
def timeout_upstream_function_not_reading(ctx):
    """A function that accepts and never reads a large request body: once
    the socket buffers are full nothing moves, and after idle_timeout
    (300ms) the answer is 504 upstream_timeout, kind upstream."""
    srv = RawServer(never_reads, rcvbuf=4096)
    try:
        fp = ctx.start_fnproxy(rcfg([srv.addr], "timeout: 30s, idle_timeout: 300ms"))
        size = 32 << 20
        c = ctx.connect(fp.port)
        c.send(build_request("PUT", "/upload", [("Content-Length", str(size))]))
        block = b"u" * (1 << 16)
        sender = Sender(c, (block for _ in range(size // len(block))))
        sender.start()
        t0 = time.monotonic()
        r = c.read_response(timeout=20)
        took = time.monotonic() - t0
        check_fnproxy_error(r, 504, "upstream_timeout")
        check(sender.sent < size, "the whole body went through (%d bytes)" % sender.sent)
        check(took < 15, "504 after %.2fs" % took)
        check_counts("timeout kinds", lambda: timeouts(fp), {"upstream": 1})
    finally:
        srv.close()


# ---------------------------------------------------------------------------
# 3. idempotency


@case()
def post_reset_after_sending_not_retried(ctx):
    """A POST whose connection is reset after the function read it is not
    made again (reset in `on`, but it was sent and POST is not idempotent):
    502, one attempt, skipped non_idempotent, and the function saw it once.
    The same for PATCH; a PUT is idempotent and is retried."""
    b = ctx.start_backend()
    keys = "timeout: 5s, retries: { max: 2, on: [reset] }"
    fp = ctx.start_fnproxy(rcfg([b.addr], keys), workers=1)
    r = request(fp.port, "POST", "/fail/1/reset/post1", body=b"order=1")
    check_fnproxy_error(r, 502, "upstream_bad_response")
    check_eq(attempts(r), 1, "attempts of a reset POST")
    check_counts("retries and skipped", lambda: (retries(fp), skipped(fp)),
                 (0, {"non_idempotent": 1}))
    check_eq(backend_stats(b)["requests"], 1, "requests the function got")

    fp2 = ctx.start_fnproxy(rcfg([b.addr], keys), workers=1)
    r = request(fp2.port, "PATCH", "/fail/1/reset/patch1", body=b"x=1")
    check_fnproxy_error(r, 502, "upstream_bad_response")
    check_eq(attempts(r), 1, "attempts of a reset PATCH")
    check_counts("PATCH: retries and skipped", lambda: (retries(fp2), skipped(fp2)),
                 (0, {"non_idempotent": 1}))

    fp3 = ctx.start_fnproxy(rcfg([b.addr], keys), workers=1)
    r = request(fp3.port, "PUT", "/fail/1/reset/put1", body=b"x=2")
    _, _, body = echo_of(r, "a reset PUT")
    check_eq((attempts(r), body), (2, b"x=2"), "a reset PUT: attempts, the body it carried")
    fp4 = ctx.start_fnproxy(rcfg([b.addr], keys), workers=1)
    r = request(fp4.port, "DELETE", "/fail/1/reset/del1")
    echo_of(r, "a reset DELETE")
    check_eq(attempts(r), 2, "a reset DELETE: attempts")
    check_counts("PUT, DELETE: retries and skipped",
                 lambda: (retries(fp3), skipped(fp3), retries(fp4)), (1, {}, 1))


@case()
def post_status_and_per_try_timeout_not_retried(ctx):
    """The function got a POST and answered 503, or did not answer within
    per_try_timeout: either way it may have acted on it, so no retry
    (non_idempotent): the 503 goes to the client, the hang is a 504. With
    Idempotency-Key both are retried, the body replayed."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, per_try_timeout: 300ms,"
                                " retries: { max: 2, on: [503, per-try-timeout] }"))
    r = request(fp.port, "POST", "/fail/1/503/ps1", body=b"a=1")
    check_eq((r.status, attempts(r), r.header("x-backend-count")), (503, 1, "1"),
             "POST answered 503: status, attempts, requests the function saw")
    r = request(fp.port, "POST", "/fail/1/hang/ps2", body=b"a=2")
    check_fnproxy_error(r, 504, "upstream_timeout")
    check_eq(attempts(r), 1, "POST that hung: attempts")
    check_counts("POST: retries and skipped", lambda: (retries(fp), skipped(fp)),
                 (0, {"non_idempotent": 2}))
    body = pattern(2000)
    for path in ("/fail/1/503/ps3", "/fail/1/hang/ps4"):
        r = request(fp.port, "POST", path, [("Idempotency-Key", path)], body)
        _, _, got = echo_of(r, "POST with Idempotency-Key to %s" % path)
        check_eq((attempts(r), r.header("x-backend-count"), got == body), (2, "2", True),
                 "POST with Idempotency-Key to %s: attempts, requests seen, body intact" % path)
    check_counts("with Idempotency-Key: retries and skipped",
                 lambda: (retries(fp), skipped(fp)), (2, {"non_idempotent": 2}))


@case()
def post_to_dead_endpoint_retried(ctx):
    """A POST whose first attempt could not connect reached no one: it is
    made again on the live endpoint whatever its method, body intact, and
    whatever its size (replay_buffer 1KiB, a 64 KiB body)."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([dead_addr(), b.addr],
                                "timeout: 5s, retries: { max: 2, on: [connect-failure] }"))
    body = pattern(3000)
    n2 = 0
    for i in range(24):
        r = request(fp.port, "POST", "/echo?p=%d" % i, body=body)
        _, _, got = echo_of(r, "POST %d with a dead and a live endpoint" % i)
        check(got == body, "POST %d: the function got %d bytes, not the 3000 sent"
              % (i, len(got)))
        n2 += attempts(r) == 2
    check(n2 > 0, "no POST of 24 tried the dead endpoint first")
    check_counts("retries and skipped", lambda: (retries(fp), skipped(fp)), (n2, {}))
    # Even a body larger than the replay buffer: none of it was read yet.
    fp2 = ctx.start_fnproxy(rcfg([dead_addr(), b.addr], "timeout: 5s, retries: { max: 2,"
                                 " on: [connect-failure], replay_buffer: 1KiB }"))
    big = pattern(64 << 10)
    n2 = 0
    for i in range(16):
        r = request(fp2.port, "POST", "/echo?q=%d" % i, body=big)
        _, _, got = echo_of(r, "64 KiB POST %d over a 1 KiB replay buffer" % i)
        check(got == big, "64 KiB POST %d: the function got %d bytes, equal %s"
              % (i, len(got), got == big))
        n2 += attempts(r) == 2
    check(n2 > 0, "no 64 KiB POST of 16 tried the dead endpoint first")
    check_counts("64 KiB: retries and skipped", lambda: (retries(fp2), skipped(fp2)), (n2, {}))


@case()
def idempotency_key_retried_body_intact(ctx):
    """A POST with Idempotency-Key is made again after a reset, and the
    function gets the whole body: 40 KiB of a pattern with Content-Length,
    a chunked body of several chunks (de-chunked by the echo), and a body
    sent after Expect: 100-continue (the client gets one 100)."""
    b = ctx.start_backend()
    keys = "timeout: 5s, retries: { max: 2, on: [reset] }"
    body = pattern(40 << 10)
    fp = ctx.start_fnproxy(rcfg([b.addr], keys))
    r = request(fp.port, "POST", "/fail/1/reset/idem1", [("Idempotency-Key", "k-1")], body)
    line, hdrs, got = echo_of(r, "POST with Idempotency-Key after a reset")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "attempts, requests the function saw")
    check_eq(hget(hdrs, "idempotency-key"), ["k-1"], "Idempotency-Key forwarded")
    check_eq(hget(hdrs, "content-length"), [str(len(body))], "content-length of the retry")
    check(got == body, "the retry's body: %d bytes, equal: %s" % (len(got), got == body))

    fp2 = ctx.start_fnproxy(rcfg([b.addr], keys))
    pieces = [pattern(5000), pattern(1), pattern(7000)[::-1], pattern(3333)]
    c = ctx.connect(fp2.port)
    c.send(build_request("POST", "/fail/1/reset/idem2",
                         [("Idempotency-Key", "k-2"), ("Transfer-Encoding", "chunked")]))
    for p in pieces:  # as separate writes
        c.send(b"%x\r\n" % len(p) + p + b"\r\n")
        time.sleep(0.01)
    c.send(b"0\r\n\r\n")
    r = c.read_response(timeout=5)
    line, hdrs, got = echo_of(r, "chunked POST with Idempotency-Key after a reset")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "chunked: attempts, requests the function saw")
    want = b"".join(pieces)
    check(got == want, "the chunked retry's body: %d bytes of %d, equal: %s"
          % (len(got), len(want), got == want))

    # Expect: 100-continue: one 100 for the client, the body replayed.
    fp3 = ctx.start_fnproxy(rcfg([b.addr], keys))
    body3 = pattern(9000)
    c = ctx.connect(fp3.port)
    c.send(build_request("POST", "/fail/1/reset/idem3",
                         [("Idempotency-Key", "k-3"), ("Expect", "100-continue"),
                          ("Content-Length", str(len(body3)))]))
    r = c.read_head(timeout=5)
    check_eq(r.status, 100, "the answer to Expect: 100-continue")
    c.send(body3)
    r = c.read_response(timeout=5, skip_1xx=False)
    _, hdrs, got = echo_of(r, "100-continue POST after a reset (a second 100?)")
    check_eq((attempts(r), r.header("x-backend-count"), got == body3), (2, "2", True),
             "100-continue: attempts, requests the function saw, body intact")
    check_counts("retries", lambda: (retries(fp), retries(fp2), retries(fp3)), (1, 1, 1))


# ---------------------------------------------------------------------------
# 4. the replay buffer


@case()
def replay_buffer_cap(ctx):
    """replay_buffer 1KiB: a POST with Idempotency-Key and a 4 KiB body that
    is reset is not made again (skipped body); one of 512 bytes is; and
    the cap is inclusive: 1024 bytes are replayed, 1025 are not."""
    b = ctx.start_backend()
    keys = "timeout: 5s, retries: { max: 2, on: [reset], replay_buffer: 1KiB }"
    fp = ctx.start_fnproxy(rcfg([b.addr], keys))
    r = request(fp.port, "POST", "/fail/1/reset/rb1", [("Idempotency-Key", "a")], pattern(4096))
    check_fnproxy_error(r, 502, "upstream_bad_response")
    check_eq(attempts(r), 1, "attempts of a 4 KiB body over a 1 KiB replay buffer")
    check_counts("4 KiB: retries and skipped", lambda: (retries(fp), skipped(fp)),
                 (0, {"body": 1}))

    # The boundary: a body of exactly replay_buffer bytes fits, one more does not.
    fp3 = ctx.start_fnproxy(rcfg([b.addr], keys))
    r = request(fp3.port, "POST", "/fail/1/reset/rb3", [("Idempotency-Key", "c")], pattern(1024))
    _, _, got = echo_of(r, "1024 bytes (= replay_buffer) after a reset")
    check_eq((attempts(r), got == pattern(1024)), (2, True), "1024 bytes: attempts, body intact")
    fp4 = ctx.start_fnproxy(rcfg([b.addr], keys))
    r = request(fp4.port, "POST", "/fail/1/reset/rb4", [("Idempotency-Key", "d")], pattern(1025))
    check_fnproxy_error(r, 502, "upstream_bad_response")
    check_eq(attempts(r), 1, "1025 bytes: attempts")
    check_counts("1024 and 1025 bytes: skipped", lambda: (skipped(fp3), skipped(fp4)),
                 ({}, {"body": 1}))

    fp2 = ctx.start_fnproxy(rcfg([b.addr], keys))
    small = pattern(512)
    r = request(fp2.port, "POST", "/fail/1/reset/rb2", [("Idempotency-Key", "b")], small)
    _, _, got = echo_of(r, "512 bytes after a reset")
    check_eq((attempts(r), got == small), (2, True), "512 bytes: attempts, body intact")
    check_counts("512 bytes: retries and skipped", lambda: (retries(fp2), skipped(fp2)),
                 (1, {}))


# ---------------------------------------------------------------------------
# 5. Retry-After


@case()
def retry_after_honoured(ctx):
    """A 503 with Retry-After: 1 (on: [503], timeout 5s): the retry waits
    about a second, far longer than the backoff (at most 5ms here), and the
    client gets the 200."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [503],"
                                " backoff: { base: 1ms, max: 5ms } }"))
    r, took = timed(fp.port, "GET", "/fail/1/503/ra1?retry_after=1")
    _, hdrs, _ = echo_of(r, "after a 503 with Retry-After: 1")
    left = _timeout_ms(hdrs, "the retry after Retry-After: 1")
    check(0 < left <= 4000 + 50, "the retry's x-fnproxy-timeout-ms %d: the 1s wait is spent "
          "from the 5s timeout" % left)
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "attempts, requests the function saw")
    check(0.9 <= took < 5, "200 after %.2fs: want Retry-After's 1s wait" % took)
    check_counts("retries and skipped", lambda: (retries(fp), skipped(fp)), (1, {}))
    # Without Retry-After the same failure is retried at once (backoff <= 5ms).
    r, took = timed(fp.port, "GET", "/fail/1/503/ra2")
    check_eq((r.status, attempts(r)), (200, 2), "503 without Retry-After")
    check(took < 0.8, "retried after %.2fs without Retry-After" % took)


@case()
def retry_after_past_deadline_not_retried(ctx):
    """Retry-After: 10 with timeout 2s: waiting would end past the deadline,
    so there is no retry (skipped deadline) and the client gets the 503 at
    once, Retry-After and all."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 2s, retries: { max: 2, on: [503] }"))
    r, took = timed(fp.port, "GET", "/fail/1/503/rad?retry_after=10")
    check_eq((r.status, attempts(r), r.header("x-backend-count")), (503, 1, "1"),
             "status, attempts, requests the function saw")
    check_eq(r.header("retry-after"), "10", "the function's Retry-After reaches the client")
    check(took < 1.5, "503 after %.2fs: it must not wait" % took)
    check_counts("retries and skipped", lambda: (retries(fp), skipped(fp)),
                 (0, {"deadline": 1}))
    # 429 honours Retry-After too (README: on a 503 or 429).
    fp2 = ctx.start_fnproxy(rcfg([b.addr], "timeout: 2s, retries: { max: 2, on: [429] }"))
    r, took = timed(fp2.port, "GET", "/fail/1/429/rad429?retry_after=10")
    check_eq((r.status, attempts(r)), (429, 1), "429 with Retry-After past the deadline")
    check(took < 1.5, "429 after %.2fs: it must not wait" % took)
    check_counts("429: retries and skipped", lambda: (retries(fp2), skipped(fp2)),
                 (0, {"deadline": 1}))


# ---------------------------------------------------------------------------
# 6. the budget


def _storm(ctx, budget, n=400, conns=4):
    """fnbackend answering 503 to everything, route retries max 3 on 503
    with the given budget, one worker; n GETs over `conns` keep-alive
    connections at once. Returns (fnproxy, requests the function got)."""
    b = ctx.start_backend(record=False, args=["--fail-status", "503:1"])
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 3, on: [503],"
                                " backoff: { base: 1ms, max: 2ms }, budget: %s }" % budget),
                           workers=1)
    errors = []
    statuses = {}
    lock = threading.Lock()

    def client(k):
        try:
            c = ctx.connect(fp.port)
            for i in range(k, n, conns):
                c.send(build_request("GET", "/storm/%d" % i))
                r = c.read_response(timeout=10)
                with lock:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
        except Exception as e:  # reported below
            errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check(not errors, "client errors: %r" % errors[:3])
    check_eq(statuses, {503: n}, "what the clients got")
    return fp, backend_stats(b)["requests"]


@case(timeout=90)
def budget_stops_a_storm(ctx):
    """Every request fails with 503 and wants 3 retries. With budget
    { ratio: 0.2, min_per_s: 1 } the retries stay within 20% of the
    requests plus 10 (min_per_s over the 10 s window): the function gets at
    most 400 * 1.2 + 10 requests, and the retries not made are counted as
    budget. With a budget that never runs out (ratio 1, min_per_s 10000)
    the same storm makes every retry: 1600 requests, so the budget is what
    stopped it."""
    n = 400
    t0 = time.monotonic()
    fp, got = _storm(ctx, "{ ratio: 0.2, min_per_s: 1 }", n)
    took = time.monotonic() - t0
    check(took < 10, "the storm took %.1fs: the 10 s window no longer holds every request"
          % took)
    r = retries(fp)
    check(n <= got <= n * 1.2 + 10, "the function got %d requests for %d client requests "
          "(bound %d)" % (got, n, n * 1.2 + 10))
    check_eq(got - n, r, "retries counted vs. extra requests the function got")
    sk = skipped(fp)
    ctx.note("budget 0.2/1: the function got %d requests for %d, %d retries, skipped %r"
             % (got, n, r, sk))
    check(sk.get("budget", 0) >= n - r, "skipped retries %r (retries made %d): each request "
          "whose retries were cut by the budget counts one" % (sk, r))
    check_eq(set(sk) - {"budget", "max"}, set(), "skipped reasons")

    fp2, got2 = _storm(ctx, "{ ratio: 1, min_per_s: 10000 }", n)
    check_eq(got2, 4 * n, "requests the function got without a binding budget")
    check_counts("without a binding budget: retries, skipped",
                 lambda: (retries(fp2), skipped(fp2)), (3 * n, {"max": n}))


# ---------------------------------------------------------------------------
# 7. deadlines that travel


def _timeout_ms(hdrs, what):
    v = hget(hdrs, "x-fnproxy-timeout-ms")
    check(len(v) == 1 and v[0].isdigit(), "%s: x-fnproxy-timeout-ms %r" % (what, v))
    return int(v[0])


@case()
def deadline_header_seen_by_function(ctx):
    """The function gets x-fnproxy-timeout-ms, the time left of the route's
    timeout (3s): at most 3000, and not much less on an immediate attempt.
    A value the client sends is replaced, never passed through, smaller or
    larger."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 3s"))
    r = request(fp.port, "GET", "/echo")
    _, hdrs, _ = echo_of(r, "/echo")
    v = _timeout_ms(hdrs, "plain GET")
    check(2000 < v <= 3000, "x-fnproxy-timeout-ms %d with timeout 3s" % v)
    for sent in ("999999", "5", "abc"):
        r = request(fp.port, "GET", "/echo", [("X-Fnproxy-Timeout-Ms", sent)])
        _, hdrs, _ = echo_of(r, "/echo with a client's x-fnproxy-timeout-ms")
        v = _timeout_ms(hdrs, "client sent %s" % sent)
        check(2000 < v <= 3000, "client sent %s: the function got %d" % (sent, v))


@case()
def deadline_header_shrinks_across_attempts(ctx):
    """After a first attempt that hung for per_try_timeout (300ms), the
    second attempt's x-fnproxy-timeout-ms is smaller by at least ~250ms:
    both attempts' heads are in the function's record."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 3s, per_try_timeout: 300ms,"
                                " retries: { max: 2, on: [per-try-timeout] }"))
    r = request(fp.port, "GET", "/fail/1/hang/dl1")
    _, hdrs, _ = echo_of(r, "after a hung attempt")
    second = _timeout_ms(hdrs, "second attempt")
    check_eq(attempts(r), 2, "attempts")
    heads = [h for h in b.record().split(b"\r\n\r\n") if b"GET /fail/1/hang/dl1" in h]
    check_eq(len(heads), 2, "heads of the key in the function's record")
    vals = []
    for h in heads:
        lines = h.decode("latin-1").split("\r\n")
        vals.append(_timeout_ms([tuple(x.split(": ", 1)) for x in lines[1:] if ": " in x],
                                "recorded head"))
    check_eq(vals[1], second, "the echo's value is the second recorded one")
    check(2700 <= vals[0] <= 3000, "first attempt's x-fnproxy-timeout-ms %d (timeout 3s)"
          % vals[0])
    check(vals[1] <= vals[0] - 250, "second attempt's %d vs the first's %d: want at least "
          "~250ms less after a 300ms per-try timeout" % (vals[1], vals[0]))
    check(vals[1] <= 3000 - 250, "second attempt's %d: at least 250ms gone of 3000" % vals[1])


# ---------------------------------------------------------------------------
# 8. backoff


@case()
def backoff_bounded_by_max(ctx):
    """backoff { base: 200ms, max: 200ms } on 503, /fail/4/503: four retries,
    each wait uniform in [0, 200ms] (full jitter: no lower bound), so the
    whole request takes well under the 5s timeout and under what an
    uncapped doubling (200+400+800+1600ms) would allow."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 4, on: [503],"
                                " backoff: { base: 200ms, max: 200ms } }"))
    r, took = timed(fp.port, "GET", "/fail/4/503/bo1")
    echo_of(r, "after four 503s")
    check_eq((attempts(r), r.header("x-backend-count")), (5, "5"),
             "attempts, requests the function saw")
    check(took < 1.5, "took %.2fs: four waits of at most 200ms each" % took)
    check_counts("retries", lambda: retries(fp), 4)


@case()
def backoff_past_deadline_skipped(ctx):
    """backoff { base: 1s, max: 1s } and timeout 600ms. README: a retry is
    made only if its wait (full jitter: uniform in [0, 1s]) ends before the
    deadline. So each /fail/1/503 request either waits less than what is
    left and gets its 200 (or, when the wait ends just before the deadline,
    504 when the retry cannot answer in what is left), or is not retried
    (skipped deadline) and gets the 503 at once, without waiting."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 600ms, retries: { max: 2, on: [503],"
                                " backoff: { base: 1s, max: 1s } }"))
    n, conns = 30, 6
    results = []
    errors = []
    lock = threading.Lock()

    def client(k):
        try:
            for i in range(k, n, conns):
                r, took = timed(fp.port, "GET", "/fail/1/503/bd%d" % i)
                with lock:
                    results.append((r.status, attempts(r), took, r))
        except Exception as e:
            errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    check(not errors, "client errors: %r" % errors[:3])
    check_eq(len(results), n, "answers")
    count = {200: 0, 503: 0, 504: 0}
    for st, att, took, r in results:
        check(st in count, "unexpected answer %r" % r)
        count[st] += 1
        if st == 503:
            check_eq(att, 1, "attempts of a 503 (retry skipped)")
            check(took < 0.4, "a 503 whose retry was skipped took %.2fs: it must not wait" % took)
        else:
            check_eq(att, 2, "attempts of a %d (retried)" % st)
            check(took < 1.2, "a retried request took %.2fs with timeout 600ms" % took)
            if st == 504:
                check_fnproxy_error(r, 504, "upstream_timeout")
    ctx.note("answers: %r" % count)
    check(count[503] > 0 and count[200] > 0,
          "with waits uniform in [0, 1s] and ~600ms left, want both retried and skipped "
          "requests in %d: %r" % (n, count))
    check_counts("retries, skipped and total timeouts",
                 lambda: (retries(fp), skipped(fp), timeouts(fp).get("total", 0)),
                 (count[200] + count[504], {"deadline": count[503]} if count[503] else {},
                  count[504]))


# ---------------------------------------------------------------------------
# 9. the access log and per-route metrics


@case()
def access_log_attempts_and_route_metrics(ctx):
    """The access log's attempts equals x-fnproxy-attempts for 1, 2 and 3
    attempts, and fnproxy_retries_total counts per route."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    keys = "timeout: 5s, retries: { max: 3, on: [503], backoff: { base: 1ms, max: 2ms } }"
    keys_c = ("timeout: 2s, per_try_timeout: 150ms,"
              " retries: { max: 1, on: [per-try-timeout] }")
    fp = ctx.start_fnproxy(rcfg([b.addr], routes=[("a", "host: a.test", keys),
                                                  ("b", "host: b.test", keys),
                                                  ("c", "host: c.test", keys_c)],
                                access_log=log))
    want = {}
    plan = [("a", 0), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("b", 0)]
    for i, (route, fails) in enumerate(plan):
        rid = "rid-%d" % i
        r = request(fp.port, "GET", "/fail/%d/503/al%d" % (fails, i) if fails else "/x%d" % i,
                    [("x-request-id", rid)], host="%s.test" % route)
        check_eq(r.status, 200, "request %d" % i)
        check_eq(attempts(r), fails + 1, "request %d: attempts" % i)
        want[rid] = fails + 1
    # fnproxy's own answer: two attempts cut by their per-try timeouts.
    r = request(fp.port, "GET", "/hang", [("x-request-id", "rid-c")], host="c.test")
    check_fnproxy_error(r, 504, "upstream_timeout")
    check_eq(attempts(r), 2, "route c: attempts of the 504")
    want["rid-c"] = 2

    def entries():
        try:
            with open(log) as f:
                lines = [json.loads(x) for x in f.read().splitlines() if x.strip()]
        except (OSError, ValueError):
            return None
        got = {e.get("request_id"): e.get("attempts") for e in lines}
        return got if set(want) <= set(got) else None

    got = wait_until(entries, 3, "access log lines of the %d requests" % len(want))
    check_eq({k: got[k] for k in want}, want, "attempts in the access log by request id")
    check_counts("retries per route",
                 lambda: (retries(fp, "a"), retries(fp, "b"), retries(fp, "c")), (3, 5, 1))


@case()
def attempts_header_on_answers_before_any_attempt(ctx):
    """README: "Every answer carries x-fnproxy-attempts: N; the access log
    has attempts." fnproxy's own answers made before any attempt (404 no
    route, 413 over max_body, 400 bad framing) log attempts 0, so the
    header must say 0 as well."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    cfg = rcfg([b.addr], routes=[(ROUTE, "path_prefix: /a", "timeout: 2s")], access_log=log)
    fp = ctx.start_fnproxy(cfg.replace("    ingress:\n", "    ingress:\n      max_body: 100\n"))
    answers = {}
    r = request(fp.port, "GET", "/nothing", [("x-request-id", "rid-404")])
    check_fnproxy_error(r, 404, "no_route")
    answers["rid-404"] = r
    r = request(fp.port, "POST", "/a", [("x-request-id", "rid-413")], b"x" * 200)
    check_fnproxy_error(r, 413, "body_too_large")
    answers["rid-413"] = r
    c = ctx.connect(fp.port)
    c.send(b"POST /a HTTP/1.1\r\nHost: x\r\nx-request-id: rid-400\r\nContent-Length: 1\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    r = c.read_response(timeout=5)
    check_fnproxy_error(r, 400, "bad_request")
    answers["rid-400"] = r

    def logged():
        """attempts by status of the three lines (the 400's request id is
        fnproxy's own: a malformed request's headers are not taken)."""
        try:
            with open(log) as f:
                got = {e.get("status"): e.get("attempts")
                       for e in map(json.loads, f.read().splitlines())}
        except (OSError, ValueError):
            return None
        return got if {400, 404, 413} <= set(got) else None

    got = wait_for(logged, 3)
    if got is None:
        with open(log) as f:
            fail("the access log lacks some of the 400, 404, 413: %s" % f.read()[-1500:])
    check_eq(got, {400: 0, 404: 0, 413: 0}, "attempts in the access log by status")
    check_eq({k: r.header("x-fnproxy-attempts") for k, r in answers.items()},
             {k: "0" for k in answers}, "x-fnproxy-attempts of fnproxy's own answers")


# ---------------------------------------------------------------------------
# 10. egress


@case(**eg.NS)
def egress_retry_503(ctx):
    """An egress rule with retries on [503] (test_egress's namespace: api.test
    is fnbackend on 127.0.1.1:8080): a call to a destination that fails once
    gets 200 with x-fnproxy-attempts: 2. A call carrying
    x-fnproxy-timeout-ms is held to it, and the header is not sent on."""
    eg.dest(ctx, "api", "127.0.1.1")
    rules = ("        - { name: api, host: api.test, ports: [8080], timeout: 5s,"
             " retries: { max: 2, on: [503], backoff: { base: 1ms, max: 5ms } } }\n"
             "        - { name: lab, cidr: 127.0.1.0/24, ports: [8080] }\n")
    fp = eg.start_egress(ctx, eg.egress_config(rules=rules))
    r = eg.via(fp.eport, "http://api.test:8080/fail/1/503/eg1")
    echo_of(r, "egress call to a destination that fails once")
    check_eq((attempts(r), r.header("x-backend-count")), (2, "2"),
             "egress: attempts, requests the destination saw")
    check_counts("egress retries of rule api",
                 lambda: (retries(fp, "api", direction="egress", function="app"),
                          skipped(fp, route="api", direction="egress", function="app")),
                 (1, {}))
    # A call carrying x-fnproxy-timeout-ms (the function passing its own
    # deadline on) is held to it, and the header does not leave.
    r, took = timed(fp.eport, "GET", "http://api.test:8080/hang",
                    [("Host", "api.test:8080"), ("x-fnproxy-timeout-ms", "400")])
    check_fnproxy_error(r, 504, "upstream_timeout")
    check(0.35 <= took < 3, "egress 504 after %.2fs: want the 400ms the header left, not "
          "the rule's 5s" % took)
    r = eg.via(fp.eport, "http://api.test:8080/echo", headers=[("x-fnproxy-timeout-ms", "4000")])
    _, hdrs, _ = echo_of(r, "egress /echo")
    check_eq(hget(hdrs, "x-fnproxy-timeout-ms"), [], "x-fnproxy-timeout-ms sent on by egress")
    check_counts("egress timeout kinds of rule api",
                 lambda: timeouts(fp, "api", direction="egress", function="app"),
                 {"total": 1})
