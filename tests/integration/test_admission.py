"""Admission (issue 12, DESIGN "functions[].ingress"): max_concurrency with
its FIFO queue, rate limits, readiness probes that hold requests through a
cold start, over real sockets between real fnproxy and fnbackend processes.

fnbackend's /_fnbackend/stats counts the requests it has in flight and the
most it ever had at once (inflight_max, reset by ?reset=1), so a case sees
what the function saw; --listen-after MS and --ready-after MS play an
instance that is not up yet (tests/backend/README.md). fnproxy's side shows
in its gauges (fnproxy_queue_depth, fnproxy_admitted_in_flight,
fnproxy_endpoint_ready), in fnproxy_policy_denials_total{reason} and in
/ready on the admin port.

Time is asserted only as an order of events or with generous bounds; a
case waits for an event (a gauge, /ready) rather than sleeping a guess.
The order in which requests reached the function is read from fnbackend's
record (the bytes it read, in order), not from client clocks. A function
frozen with SIGSTOP accepts connections (the kernel does) and answers
nothing, which keeps a readiness probe in flight as long as a case needs.
The per-client_ip case connects from 127.0.0.2 too, so it runs in a
network namespace of its own (run.py).
"""

import json
import re
import select
import signal
import socket
import struct
import threading
import time

from harness import (HOST, Client, Proc, build_request, case, check, check_eq,
                     check_fnproxy_error, fail, free_port, metric_value, request, wait_for,
                     wait_until)

FN = "fn"


def acfg(endpoints, ingress=(), readiness=None, routes=None, access_log=None):
    """One listener "public" on 127.0.0.1, one function "fn" with these
    endpoints; ingress: lines of its ingress map ("max_concurrency: 1",
    "queue: { depth: 2, timeout: 5s }"); readiness: the flow map of
    functions[].readiness, or None; routes: [(name, path_prefix, keys)],
    by default one route "r" for / with a 15 s timeout (longer than any
    queue wait here, unless a case means the route's timeout to bound it)."""
    if routes is None:
        routes = [("r", "/", "timeout: 15s")]
    text = (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        + ("access_log: %s\n" % access_log if access_log else "")
        + "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 5s }\n"
        "functions:\n"
        "  - name: %s\n"
        "    endpoints: [%s]\n" % (FN, ", ".join(endpoints))
    )
    if readiness is not None:
        text += "    readiness: %s\n" % readiness
    text += "    ingress:\n"
    for line in ingress:
        text += "      %s\n" % line
    text += "      routes:\n"
    for name, prefix, keys in routes:
        text += ("        - { name: %s, match: { listener: public, path_prefix: %s }, %s }\n"
                 % (name, prefix, keys))
    return text


def metric(fp, name, **labels):
    """The value of a series of function fn, or None when it is absent."""
    labels.setdefault("function", FN)
    return metric_value(fp.metrics(), name, labels)


def denials(fp, reason):
    return metric(fp, "fnproxy_policy_denials_total", direction="ingress", reason=reason) or 0


def codes(fp, code):
    return metric(fp, "fnproxy_requests_total", direction="ingress", code=str(code)) or 0


def wait_metric(fp, name, want, timeout=3, **labels):
    """Polls a series until it equals want; fails with the last value."""
    last = [None]

    def done():
        last[0] = metric(fp, name, **labels)
        return last[0] == want

    if not wait_for(done, timeout, 0.02):
        fail("%s%r: got %r, want %r after %gs" % (name, labels, last[0], want, timeout))


def stats(b, reset=False):
    """fnbackend's {requests, failed, inflight, inflight_max}."""
    r = request(b.port, "GET", "/_fnbackend/stats" + ("?reset=1" if reset else ""))
    check_eq(r.status, 200, "GET /_fnbackend/stats")
    return r.json()


def ready_status(fp):
    """(status, body) of GET /ready on the admin port, or None while the
    admin port does not answer yet."""
    try:
        r = request(fp.admin_port, "GET", "/ready", timeout=2)
    except (OSError, AssertionError):
        return None
    return r.status, r.body


def wait_admin(fp):
    """For fnproxy started with wait_ready=False: waits until the admin
    port answers; returns that first (status, body) of /ready."""
    return wait_until(lambda: ready_status(fp), 15, "fnproxy's admin port",
                      detail=lambda: fp.stderr_text()[-500:])


def late_backend(ctx, port, after_ms, name="late", args=()):
    """fnbackend binding 127.0.0.1:port only after_ms after its start. The
    Proc is returned at once (harness.Backend waits for the PORT line,
    which comes only when it listens)."""
    argv = [ctx.backend_bin, "--name", name, "--listen", "%s:%d" % (HOST, port),
            "--listen-after", str(after_ms)] + list(args)
    return Proc(ctx, argv, "backend-%s-%d" % (name, len(ctx.procs)))


class Bg(threading.Thread):
    """One request on a fresh connection, in the background after `delay`
    seconds: .resp (or .error), .t_sent and .t_done (monotonic)."""

    def __init__(self, port, path, delay=0.0, timeout=20):
        super().__init__(daemon=True)
        self.port, self.path, self.delay, self.timeout = port, path, delay, timeout
        self.resp = self.error = None
        self.t_sent = self.t_done = None
        self.start()

    def run(self):
        time.sleep(self.delay)
        self.t_sent = time.monotonic()
        try:
            self.resp = request(self.port, "GET", self.path, timeout=self.timeout)
        except Exception as e:  # reported by result()
            self.error = e
        self.t_done = time.monotonic()

    def result(self, what):
        self.join(self.timeout + 5)
        check(not self.is_alive(), "%s: no answer" % what)
        if self.error is not None:
            fail("%s: %s: %s" % (what, type(self.error).__name__, self.error))
        return self.resp


def parallel(n, fn, timeout=30):
    """Runs fn(i) for i in range(n) in n threads released together; returns
    the results in order, an exception standing for a result."""
    barrier = threading.Barrier(n)
    out = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            out[i] = fn(i)
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.01, end - time.monotonic()))
    check(not any(t.is_alive() for t in threads), "parallel requests still running after %ds"
          % timeout)
    return out


def statuses(results):
    return [r.status if hasattr(r, "status") else "%s: %s" % (type(r).__name__, r)
            for r in results]


def answered(c):
    """Whether anything (an answer) has arrived on client c."""
    return bool(c.buf) or bool(select.select([c.sock], [], [], 0)[0])


def arrival_order(b, tags):
    """The order in which requests carrying these tags (unique strings in
    their paths) reached fnbackend: its record keeps the bytes it read, in
    the order it read them."""
    rec = b.record()
    pos = {}
    for t in tags:
        i = rec.find(t.encode())
        check(i >= 0, "fnbackend never got the request %s" % t)
        pos[t] = i
    return sorted(tags, key=lambda t: pos[t])


def generations(fp):
    """The config generations fnproxy put in service, from its log."""
    return [int(g) for g in re.findall(r"config generation (\d+) in service", fp.stderr_text())]


# ---------------------------------------------------------------------------
# max_concurrency and the queue


@case(timeout=60)
def concurrency_one_across_workers(ctx):
    """max_concurrency 1 on 4 workers: 20 clients at once, each on its own
    connection (spread over the workers by SO_REUSEPORT), all get 200 and
    the function never has two in flight; afterwards nothing is left in
    flight or queued, the queue phase was observed, and the access log
    says how long each waited (queue_ms)."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 50, timeout: 10s }"],
                                access_log=log), workers=4)
    n = 20
    got = parallel(n, lambda i: request(fp.port, "GET", "/delay/100", timeout=20))
    check_eq(statuses(got), [200] * n, "statuses of %d parallel /delay/100" % n)
    st = stats(b)
    check_eq(st["inflight_max"], 1, "the most requests fnbackend had in flight at once")
    check_eq(st["requests"], n, "requests that reached fnbackend")
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    wait_metric(fp, "fnproxy_queue_depth", 0.0)
    queued = metric(fp, "fnproxy_phase_duration_seconds_count", phase="queue") or 0
    check(0 < queued <= n, "requests observed in the queue phase: %r of %d" % (queued, n))

    def lines():
        try:
            with open(log, "rb") as f:
                ls = [ln for ln in f.read().split(b"\n") if ln.strip()]
        except OSError:
            return None
        return ls if len(ls) >= n else None

    ls = wait_until(lines, 5, "%d access log lines" % n)
    waits = []
    for ln in ls:
        e = json.loads(ln.decode("ascii"))
        check("queue_ms" in e, "access log line without queue_ms: %r" % e)
        check(isinstance(e["queue_ms"], (int, float)) and e["queue_ms"] >= 0,
              "queue_ms not a number >= 0: %r" % e)
        waits.append(e["queue_ms"])
    # 20 requests of 100 ms one at a time: most waited for others.
    check(sum(1 for w in waits if w > 0) >= n // 2, "queue_ms of the 20: %r" % waits)
    check(max(waits) >= 500, "the longest wait, 20 x 100 ms one at a time: %r" % waits)


@case(timeout=60)
def queue_full_overloaded(ctx):
    """max_concurrency 1, queue depth 2: one request holds the slot, two
    wait; a fourth is refused at once with 503 overloaded and retry-after,
    while the holder is still being served. The two waiting are served
    after it, in the order they came; the refusal is counted."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 2, timeout: 10s }"]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/2000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    q1 = Bg(fp.port, "/delay/10?q1")
    wait_metric(fp, "fnproxy_queue_depth", 1.0)
    q2 = Bg(fp.port, "/delay/10?q2")
    wait_metric(fp, "fnproxy_queue_depth", 2.0)
    t0 = time.monotonic()
    r = request(fp.port, "GET", "/delay/10")
    took = time.monotonic() - t0
    check_fnproxy_error(r, 503, "overloaded")
    check_eq(r.header("retry-after"), "1", "retry-after of the refusal")
    check(took < 1.0, "the refusal took %.2fs: not at once" % took)
    check(not answered(holder), "the holder was answered before the 4th was refused")
    check_eq(holder.read_response().status, 200, "the holder")
    check_eq(q1.result("the first queued").status, 200, "the first queued")
    check_eq(q2.result("the second queued").status, 200, "the second queued")
    check_eq(arrival_order(b, ["?q1", "?q2"]), ["?q1", "?q2"],
             "the order the queued requests reached the function")
    check_eq(stats(b)["inflight_max"], 1, "fnbackend's inflight_max")
    check_eq(denials(fp, "overloaded"), 1.0, "denials overloaded")
    check_eq(codes(fp, 503), 1.0, "fnproxy_requests_total code 503")
    wait_metric(fp, "fnproxy_queue_depth", 0.0)


@case(timeout=60)
def queue_is_fifo_across_workers(ctx):
    """max_concurrency 1 on 4 workers: 6 requests queued one after another
    (each on its own connection, so on any worker) behind a holder are
    served in the order they queued."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 10, timeout: 10s }"]), workers=4)
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/500"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    queued = []
    for i in range(6):
        queued.append(Bg(fp.port, "/delay/100?n=%d" % i))
        wait_metric(fp, "fnproxy_queue_depth", float(i + 1))
    check_eq(holder.read_response().status, 200, "the holder")
    for i, bg in enumerate(queued):
        check_eq(bg.result("queued request %d" % i).status, 200, "queued request %d" % i)
    tags = ["?n=%d " % i for i in range(len(queued))]
    check_eq(arrival_order(b, tags), tags, "the order the queued requests reached the function")
    check_eq(stats(b)["inflight_max"], 1, "fnbackend's inflight_max")


@case(timeout=60)
def queue_depth_zero_refuses_at_once(ctx):
    """queue depth 0: at max_concurrency a request is refused at once (503
    overloaded), none waits; below it requests go through."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 0, timeout: 10s }"]))
    check_eq(request(fp.port, "GET", "/").status, 200, "a request with the slot free")
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/1500"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    r = request(fp.port, "GET", "/")
    check_fnproxy_error(r, 503, "overloaded")
    check(not answered(holder), "the holder was answered before the refusal")
    check_eq(metric(fp, "fnproxy_queue_depth"), 0.0, "queue depth")
    check_eq(holder.read_response().status, 200, "the holder")
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    check_eq(request(fp.port, "GET", "/").status, 200, "a request once the slot is free")
    check_eq(denials(fp, "overloaded"), 1.0, "denials overloaded")


@case(timeout=60)
def queue_timeout_overloaded(ctx):
    """max_concurrency 1, queue timeout 300ms: a request waiting behind a
    2 s holder gets 503 overloaded with Retry-After once its wait expires,
    while the holder is still being served; counted as a denial."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 10, timeout: 300ms }"]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/2000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    t0 = time.monotonic()
    r = request(fp.port, "GET", "/delay/10")
    took = time.monotonic() - t0
    check_fnproxy_error(r, 503, "overloaded")
    check_eq(r.header("retry-after"), "1", "retry-after")
    check(took >= 0.25, "the 503 came after %.3fs: it did not wait its queue.timeout" % took)
    check(not answered(holder), "the holder was answered before the wait expired (%.2fs)" % took)
    check_eq(denials(fp, "overloaded"), 1.0, "denials overloaded")
    check_eq(metric(fp, "fnproxy_queue_depth"), 0.0, "queue depth after the timeout")
    check_eq(holder.read_response().status, 200, "the holder")
    check_eq(stats(b)["requests"], 1, "requests that reached fnbackend")
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    check_eq(request(fp.port, "GET", "/delay/10").status, 200, "a request once the slot is free")


@case(timeout=60)
def queue_wait_bounded_by_route_timeout(ctx):
    """The wait in the queue is bounded by the route's timeout too: with
    queue.timeout 10s, a request of a route with timeout 500ms waiting
    behind a holder of another route gets 503 overloaded long before 10 s."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg(
        [b.addr], ["max_concurrency: 1", "queue: { depth: 10, timeout: 10s }"],
        routes=[("slow", "/delay/", "timeout: 15s"), ("short", "/", "timeout: 500ms")]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/3000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    t0 = time.monotonic()
    r = request(fp.port, "GET", "/short")
    took = time.monotonic() - t0
    check_fnproxy_error(r, 503, "overloaded")
    check(0.4 <= took < 3.0, "the answer came after %.2fs (route timeout 500ms, queue.timeout "
          "10s)" % took)
    check(not answered(holder), "the holder was answered first")
    check_eq(holder.read_response().status, 200, "the holder")


@case(timeout=60)
def churn_leaves_no_slot_behind(ctx):
    """max_concurrency 2, queue depth 5, timeout 100ms on 2 workers: 8
    clients for about 2.5 s, on /delay/30, one request in five abandoned
    (on /delay/1) with a reset soon after it is sent: waits expire, slots are handed
    over, places given up, all at once. The function never has more than
    2 in flight, every answer is 200 or 503 overloaded, every 503 is a
    denial, and afterwards nothing is left queued or admitted: 2 requests
    run at once again (no slot was lost)."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 2",
                                           "queue: { depth: 5, timeout: 100ms }"]), workers=2)
    lock = threading.Lock()
    seen = {}
    bad = []

    def loop(i, t_end):
        n = 0
        while time.monotonic() < t_end:
            n += 1
            try:
                c = Client(fp.port, timeout=10)
                try:
                    abandon = (n + i) % 5 == 0
                    # An abandoned request frees its slot at once, while the
                    # function may still work on it (README "Admission"):
                    # /delay/1 keeps that overlap out of the function's
                    # high-water mark, which counts the others.
                    c.send(build_request("GET", "/delay/1" if abandon else "/delay/30"))
                    if abandon:
                        time.sleep(0.02)
                        reset(c)
                        continue
                    r = c.read_response()
                finally:
                    c.close()
            except Exception as e:
                with lock:
                    bad.append("client %d: %s: %s" % (i, type(e).__name__, e))
                return
            with lock:
                seen[r.status] = seen.get(r.status, 0) + 1
                if r.status == 503 and r.header("x-fnproxy-error") != "overloaded":
                    bad.append(r)
                elif r.status not in (200, 503):
                    bad.append(r)

    t_end = time.monotonic() + 2.5
    threads = [threading.Thread(target=loop, args=(i, t_end), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    check(not any(t.is_alive() for t in threads), "a client loop did not end")
    check(not bad, "unexpected answers: %r" % bad[:3])
    ctx.note("answers %r" % seen)
    check(seen.get(200, 0) > 0 and seen.get(503, 0) > 0, "both 200 and 503 expected: %r" % seen)
    wait_metric(fp, "fnproxy_queue_depth", 0.0)
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    wait_until(lambda: stats(b)["inflight"] == 0, 3, "fnbackend idle")
    check(stats(b, reset=True)["inflight_max"] <= 2, "fnbackend's inflight_max under a limit of 2")
    n503 = codes(fp, 503)
    check(n503 >= seen[503], "503s counted %r < 503s seen %r" % (n503, seen[503]))
    check_eq(denials(fp, "overloaded"), n503, "denials overloaded against the 503s counted")
    got = parallel(2, lambda i: request(fp.port, "GET", "/delay/500"))
    check_eq(statuses(got), [200, 200], "2 parallel requests afterwards")
    check_eq(stats(b)["inflight_max"], 2, "fnbackend's inflight_max of the 2")


@case(timeout=60)
def reload_keeps_the_limit(ctx):
    """max_concurrency 2 on 2 workers, 6 clients looping on /delay/30 for
    about 3 s while the config is rewritten and reloaded every 300 ms (a
    route added and removed, the limit restated): the function never has
    more than 2 in flight and no request fails. Then a reload raising the
    limit to 4 lets 4 run at once."""
    b = ctx.start_backend()
    base = ["queue: { depth: 100, timeout: 10s }"]
    routes = [("r", "/", "timeout: 15s")]
    extra = routes + [("extra", "/extra/", "timeout: 15s")]
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 2"] + base), workers=2)
    stop = threading.Event()
    lock = threading.Lock()
    seen = {}
    bad = []

    def loop(i):
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = Client(fp.port, timeout=15)
                c.send(build_request("GET", "/delay/30"))
                r = c.read_response()
            except Exception as e:
                with lock:
                    bad.append("client %d: %s: %s" % (i, type(e).__name__, e))
                return
            with lock:
                seen[r.status] = seen.get(r.status, 0) + 1
            if r.status != 200:
                with lock:
                    bad.append("client %d: %r" % (i, r))
            if (r.header("connection") or "").lower() == "close":
                c.close()
                c = None
        if c is not None:
            c.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    reloads = 0
    try:
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end and not bad:
            time.sleep(0.3)
            reloads += 1
            fp.rewrite_config(acfg([b.addr], ["max_concurrency: 2"] + base,
                                   routes=extra if reloads % 2 else routes), WORKERS=2)
            fp.send_signal(signal.SIGHUP)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    check(not any(t.is_alive() for t in threads), "a client loop did not end")
    check(not bad, "requests that failed during the reloads: %r" % bad[:5])
    gens = wait_until(lambda: (lambda g: g if g and max(g) >= reloads + 1 else None)(
        generations(fp)), 5, "generation %d in service" % (reloads + 1),
        detail=lambda: fp.stderr_text()[-800:])
    st = stats(b, reset=True)
    check(st["inflight_max"] <= 2, "fnbackend had %d in flight at once under max_concurrency 2 "
          "(%d reloads)" % (st["inflight_max"], reloads))
    check_eq(st["inflight_max"], 2, "fnbackend's inflight_max with 6 clients and a limit of 2")
    check(seen.get(200, 0) >= 50, "requests served in 3 s: %r" % seen)
    ctx.note("%d reloads (generations %r), %r answers" % (reloads, gens[-3:], seen))

    # The limit raised to 4: 8 at once, 4 in flight at the function.
    fp.rewrite_config(acfg([b.addr], ["max_concurrency: 4"] + base), WORKERS=2)
    fp.send_signal(signal.SIGHUP)
    want = max(gens) + 1
    wait_until(lambda: want in generations(fp), 5, "generation %d in service" % want,
               detail=lambda: fp.stderr_text()[-800:])
    check_eq(stats(b, reset=True)["inflight"], 0, "fnbackend's inflight before the burst")
    got = parallel(8, lambda i: request(fp.port, "GET", "/delay/500", timeout=20))
    check_eq(statuses(got), [200] * 8, "8 parallel /delay/500 under max_concurrency 4")
    check_eq(stats(b)["inflight_max"], 4, "fnbackend's inflight_max under max_concurrency 4")


@case(timeout=60)
def reload_changes_the_limit_under_load(ctx):
    """A reload applies its limit to what is already queued and in flight:
    raising max_concurrency from 1 to 3 releases the two requests waiting
    behind a holder at once (before the holder ends); lowering it from 3
    to 1 while 3 are in flight makes a new request wait until all 3 are
    done."""
    b = ctx.start_backend()
    q = "queue: { depth: 10, timeout: 10s }"
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1", q]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/2500"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    queued = [Bg(fp.port, "/delay/10"), Bg(fp.port, "/delay/10")]
    wait_metric(fp, "fnproxy_queue_depth", 2.0)
    fp.rewrite_config(acfg([b.addr], ["max_concurrency: 3", q]))
    fp.send_signal(signal.SIGHUP)
    for i, bg in enumerate(queued):
        check_eq(bg.result("queued request %d" % i).status, 200, "queued request %d" % i)
    check(not answered(holder), "the holder ended before the raised limit let the queue go")
    check_eq(holder.read_response().status, 200, "the holder")
    check(2 in generations(fp), "generation 2 not in service: %r" % fp.stderr_text()[-500:])

    # Lowered to 1 with 3 in flight: a new request waits for all 3.
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    old = [Bg(fp.port, "/delay/1000") for _ in range(3)]
    wait_metric(fp, "fnproxy_admitted_in_flight", 3.0)
    fp.rewrite_config(acfg([b.addr], ["max_concurrency: 1", q]))
    fp.send_signal(signal.SIGHUP)
    wait_until(lambda: 3 in generations(fp), 5, "generation 3 in service",
               detail=lambda: fp.stderr_text()[-500:])
    new = Bg(fp.port, "/delay/10")
    wait_metric(fp, "fnproxy_queue_depth", 1.0)
    check(not any(bg.t_done for bg in old), "the 3 old requests ended before the new one queued")
    check_eq(new.result("the request after the limit went down").status, 200,
             "the request after the limit went down")
    for i, bg in enumerate(old):
        check_eq(bg.result("old request %d" % i).status, 200, "old request %d" % i)
    # The old ones cannot have ended at the function before 1 s after they
    # were sent; the new one could be answered only after that.
    check(new.t_done >= max(bg.t_sent for bg in old) + 0.95,
          "the new request was answered %.3fs after the last of the 3 old ones was sent, "
          "before any of them could end: admitted with more than 1 in flight"
          % (new.t_done - max(bg.t_sent for bg in old)))


def reset(c):
    """Closes client c with a reset (SO_LINGER 0): a client that goes away.
    (A plain FIN is a half-close, README: the answer is still sent.)"""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


@case(timeout=60)
def clients_leaving_free_their_place(ctx):
    """Clients that reset their connection while queued leave the queue at
    once (its depth drops while the holder is still served), never reach
    the function and count as 499; a client that only half-closes (FIN)
    keeps its place and gets its answer. A holder whose client resets frees
    its slot: the next request is served. Nothing stays admitted or queued."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 10, timeout: 10s }"]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/2000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    leaving = []
    for i in range(3):
        c = Client(fp.port)
        c.send(build_request("GET", "/delay/10?leaving=%d" % i))
        leaving.append(c)
        wait_metric(fp, "fnproxy_queue_depth", float(i + 1))
    half = ctx.connect(fp.port, timeout=20)
    half.send(build_request("GET", "/delay/10?half"))
    wait_metric(fp, "fnproxy_queue_depth", 4.0)
    half.shutdown_write()
    stayer = Bg(fp.port, "/delay/10?stayer")
    wait_metric(fp, "fnproxy_queue_depth", 5.0)
    for c in leaving:
        reset(c)
    wait_metric(fp, "fnproxy_queue_depth", 2.0)
    check(not answered(holder), "the holder ended before the queue lost its 3 resets")
    check_eq(holder.read_response().status, 200, "the holder")
    check_eq(half.read_response().status, 200, "the half-closed client")
    check_eq(stayer.result("the request that stayed").status, 200, "the request that stayed")
    wait_metric(fp, "fnproxy_queue_depth", 0.0)
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    check_eq(b.record().count(b"leaving="), 0, "requests of the reset clients that reached the "
             "function")
    wait_metric(fp, "fnproxy_requests_total", 3.0, direction="ingress", code="499")

    # A holder whose client resets: its slot is freed, the next is served.
    check_eq(stats(b, reset=True)["inflight"], 0, "fnbackend's inflight")
    h2 = Client(fp.port)
    h2.send(build_request("GET", "/delay/1000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    nxt = Bg(fp.port, "/status/200")
    wait_metric(fp, "fnproxy_queue_depth", 1.0)
    reset(h2)
    check_eq(nxt.result("the request behind a holder that left").status, 200,
             "the request behind a holder that left")
    wait_metric(fp, "fnproxy_admitted_in_flight", 0.0)
    wait_metric(fp, "fnproxy_queue_depth", 0.0)
    check_eq(request(fp.port, "GET", "/").status, 200, "a request afterwards")
    check_eq(denials(fp, "overloaded"), 0, "denials overloaded")
    # fnbackend's /delay notices the reset only when its delay ends, so the
    # function may have had the abandoned holder and the next one at once.
    ctx.note("fnbackend's inflight_max around the holder that reset: %d"
             % stats(b)["inflight_max"])


@case(timeout=60)
def queued_request_with_body(ctx):
    """A POST with a 256 KiB body waits in the queue behind a holder (its
    body arriving meanwhile) and reaches the function whole once admitted;
    so does a small /echo body."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(acfg([b.addr], ["max_concurrency: 1",
                                           "queue: { depth: 10, timeout: 10s }"]))
    holder = ctx.connect(fp.port, timeout=20)
    holder.send(build_request("GET", "/delay/1000"))
    wait_metric(fp, "fnproxy_admitted_in_flight", 1.0)
    n = 256 << 10
    body = bytes(range(256)) * (n // 256)
    big = ctx.connect(fp.port, timeout=20)
    sender = threading.Thread(target=lambda: big.send(build_request("POST", "/sink", body=body)),
                              daemon=True)
    sender.start()
    wait_metric(fp, "fnproxy_queue_depth", 1.0)
    small = ctx.connect(fp.port, timeout=20)
    small.send(build_request("POST", "/echo", body=b"hello queue"))
    wait_metric(fp, "fnproxy_queue_depth", 2.0)
    check_eq(holder.read_response().status, 200, "the holder")
    r = big.read_response()
    check_eq((r.status, r.body), (200, b"%d\n" % n), "the queued POST /sink")
    sender.join(10)
    r = small.read_response()
    check_eq(r.status, 200, "the queued POST /echo")
    check(r.body.endswith(b"\r\n\r\nhello queue"), "the echo of the queued POST: %r"
          % r.body[-100:])
    check_eq(stats(b)["inflight_max"], 1, "fnbackend's inflight_max")


# ---------------------------------------------------------------------------
# rate limits


RL_POLICY = re.compile(r'^"([^"]*)";q=(\d+);w=(\d+)$')
RL_STATE = re.compile(r'^"([^"]*)";r=(\d+);t=(\d+)$')


def check_rate_limited(r, burst, what):
    """A 429 of fnproxy's with its three headers: returns (q, w, r, t,
    retry_after) as numbers."""
    check_fnproxy_error(r, 429, "rate_limited")
    pol = r.header("ratelimit-policy")
    state = r.header("ratelimit")
    ra = r.header("retry-after")
    m1 = RL_POLICY.match(pol or "")
    m2 = RL_STATE.match(state or "")
    check(m1 is not None, "%s: RateLimit-Policy %r" % (what, pol))
    check(m2 is not None, "%s: RateLimit %r" % (what, state))
    check(ra is not None and ra.isdigit(), "%s: Retry-After %r" % (what, ra))
    check_eq((m1.group(1), m2.group(1)), (FN, FN), "%s: the policy names" % what)
    q, w, rem, t = int(m1.group(2)), int(m1.group(3)), int(m2.group(2)), int(m2.group(3))
    check_eq(q, burst, "%s: q= of RateLimit-Policy" % what)
    check_eq(rem, 0, "%s: r= of RateLimit on a denial" % what)
    check(int(ra) >= 1, "%s: Retry-After %s" % (what, ra))
    check_eq(t, int(ra), "%s: t= of RateLimit against Retry-After" % what)
    return q, w, rem, t, int(ra)


@case(timeout=60)
def rate_limit_window(ctx):
    """rps 20, burst 10, one bucket for the function on 2 workers: 3
    clients sending as fast as they can for about 2 s get burst + rps x W
    answers 200 (W measured from the first request to the last, within
    2 + 5%); every other answer is 429 rate_limited with RateLimit-Policy
    q=10;w=1, RateLimit r=0 and Retry-After, and each is counted."""
    b = ctx.start_backend(record=False)
    rps, burst = 20, 10
    fp = ctx.start_fnproxy(acfg([b.addr], ["rate_limit: { rps: %d, burst: %d }" % (rps, burst)]),
                           workers=2)
    lock = threading.Lock()
    sends, recvs, bad, denied = [], [], [], []
    counts = {}

    def loop(i, t_end):
        c = None
        try:
            while time.monotonic() < t_end:
                if c is None:
                    c = Client(fp.port, timeout=10)
                t_s = time.monotonic()
                c.send(build_request("GET", "/"))
                r = c.read_response()
                t_r = time.monotonic()
                with lock:
                    sends.append(t_s)
                    recvs.append(t_r)
                    counts[r.status] = counts.get(r.status, 0) + 1
                    if r.status == 429 and len(denied) < 200:
                        denied.append(r)
                    elif r.status not in (200, 429):
                        bad.append(r)
                if (r.header("connection") or "").lower() == "close":
                    c.close()
                    c = None
        except Exception as e:
            with lock:
                bad.append("client %d: %s: %s" % (i, type(e).__name__, e))
        finally:
            if c is not None:
                c.close()

    t_end = time.monotonic() + 2.0
    threads = [threading.Thread(target=loop, args=(i, t_end), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    check(not any(t.is_alive() for t in threads), "a client loop did not end")
    check(not bad, "answers neither 200 nor 429: %r" % bad[:3])
    ok, limited = counts.get(200, 0), counts.get(429, 0)
    w_hi = max(recvs) - min(sends)  # every decision fell in here
    w_lo = max(sends) - min(recvs)  # and clients were asking all along this
    lo = burst + rps * w_lo
    hi = burst + rps * w_hi
    tol = 2 + 0.05 * hi
    ctx.note("%d x 200, %d x 429 over W %.3f..%.3f s: want %.1f..%.1f +- %.1f"
             % (ok, limited, w_lo, w_hi, lo, hi, tol))
    check(limited > ok, "the clients did not outrun the limit: %r" % counts)
    check(lo - tol <= ok <= hi + tol, "%d admitted over %.3f..%.3f s at rps %d burst %d: want "
          "%.1f..%.1f (+- %.1f)" % (ok, w_lo, w_hi, rps, burst, lo, hi, tol))
    for i, r in enumerate(denied):
        _, w, _, _, _ = check_rate_limited(r, burst, "429 #%d" % i)
        check_eq(w, 1, "429 #%d: w= of RateLimit-Policy (10 tokens at 20/s: 0.5 s, up)" % i)
    wait_metric(fp, "fnproxy_policy_denials_total", float(limited), direction="ingress",
                reason="rate_limited")
    check_eq(codes(fp, 429), float(limited), "fnproxy_requests_total code 429")
    check_eq(codes(fp, 200), float(ok), "fnproxy_requests_total code 200")
    check_eq(stats(b)["requests"], ok, "requests that reached fnbackend")


class SourceClient(Client):
    """A Client whose socket is bound to a source address first."""

    def __init__(self, port, source, timeout=10):
        self.sock = socket.create_connection((HOST, port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout


def request_from(source, port, path):
    c = SourceClient(port, source)
    try:
        c.send(build_request("GET", path))
        return c.read_response()
    finally:
        c.close()


def forwarded_for(r):
    """The X-Forwarded-For fnbackend's /echo got."""
    check_eq(r.status, 200, "an /echo")
    head = r.body.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    m = re.search(r"(?im)^x-forwarded-for:\s*(.*?)\s*$", head)
    check(m is not None, "no x-forwarded-for in the echo: %r" % head)
    return m.group(1)


@case(timeout=60, netns=True)
def rate_limit_per_client_ip(ctx):
    """per: client_ip, rps 1, burst 2: each client address has a bucket of
    its own. From 127.0.0.1 three quick requests get 200, 200, 429; from
    127.0.0.2 (to the same listener on 127.0.0.1, which fnproxy sees as
    the client address: its x-forwarded-for) two more get 200; a token
    later 127.0.0.1 is served again."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(acfg([b.addr], ["rate_limit: { rps: 1, burst: 2, per: client_ip }"]))
    a1 = request_from("127.0.0.1", fp.port, "/echo")
    check_eq(forwarded_for(a1), "127.0.0.1", "x-forwarded-for from 127.0.0.1")
    check_eq(request_from("127.0.0.1", fp.port, "/").status, 200, "127.0.0.1's second")
    r = request_from("127.0.0.1", fp.port, "/")
    _, w, _, _, ra = check_rate_limited(r, 2, "127.0.0.1's third")
    check_eq(w, 2, "w= of RateLimit-Policy (2 tokens at 1/s)")
    check_eq(ra, 1, "Retry-After (one token at 1/s)")
    a2 = request_from("127.0.0.2", fp.port, "/echo")
    check_eq(forwarded_for(a2), "127.0.0.2", "x-forwarded-for from 127.0.0.2")
    check_eq(request_from("127.0.0.2", fp.port, "/").status, 200, "127.0.0.2's second")
    check_rate_limited(request_from("127.0.0.2", fp.port, "/"), 2, "127.0.0.2's third")
    check_eq(denials(fp, "rate_limited"), 2.0, "denials rate_limited")
    time.sleep(1.2)
    check_eq(request_from("127.0.0.1", fp.port, "/").status, 200,
             "127.0.0.1 once a token came back")


@case(timeout=60)
def rate_limit_survives_reload(ctx):
    """A bucket is kept across reloads: spent (rps 0.2, burst 3), it stays
    spent after a SIGHUP with the same limit, instead of refilling."""
    b = ctx.start_backend()
    text = acfg([b.addr], ["rate_limit: { rps: 0.2, burst: 3 }"])
    fp = ctx.start_fnproxy(text)
    check_eq([request(fp.port, "GET", "/").status for _ in range(4)], [200, 200, 200, 429],
             "4 quick requests at burst 3")
    fp.rewrite_config(text)
    fp.send_signal(signal.SIGHUP)
    wait_until(lambda: 2 in generations(fp), 5, "generation 2 in service",
               detail=lambda: fp.stderr_text()[-500:])
    r = request(fp.port, "GET", "/")
    _, w, _, _, ra = check_rate_limited(r, 3, "a request right after the reload")
    check(ra >= 1, "Retry-After %d" % ra)
    check_eq(w, 15, "w= of RateLimit-Policy (3 tokens at 0.2/s)")
    check_eq(denials(fp, "rate_limited"), 2.0, "denials rate_limited")


@case(timeout=90)
def rate_limit_per_client_id(ctx):
    """per: client_id on an mTLS listener: each verified identity has a
    bucket of its own, whatever connection it comes on (rps 1, burst 1):
    frontend gets 200 then 429, on a second connection 429 again; hello
    gets 200."""
    import test_tls as tt  # its certificates and TLS client
    d = tt.make_certs(ctx)
    b = ctx.start_backend()
    text = (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "listeners:\n"
        "  - name: mtls\n"
        "    listen: 127.0.0.1:$PORT_mtls\n"
        "    tls:\n"
        "      certificates: [{ cert: $D/server.crt, key: $D/server.key }]\n"
        "      client_ca: $D/ca.crt\n"
        "functions:\n"
        "  - name: %s\n"
        "    endpoints: [%s]\n"
        "    ingress:\n"
        "      rate_limit: { rps: 1, burst: 1, per: client_id }\n"
        "      routes:\n"
        "        - { name: r, match: { listener: mtls, path_prefix: / }, timeout: 10s }\n"
        % (FN, b.addr))
    fp = ctx.start_fnproxy(text, listeners=("mtls",), D=d)
    port = fp.ports["mtls"]

    def who(name):
        return tt.client_ctx(d + "/ca.crt", d + "/client-%s.crt" % name,
                             d + "/client-%s.key" % name)

    fe = tt.tls_connect(ctx, port, who("frontend"))
    fe.send(build_request("GET", "/", host="localhost"))
    check_eq(fe.read_response().status, 200, "frontend's first")
    fe.send(build_request("GET", "/", host="localhost"))
    check_rate_limited(fe.read_response(), 1, "frontend's second")
    check_rate_limited(tt.tls_get(ctx, port, who("frontend"), "/"), 1,
                       "frontend's third, on a new connection")
    check_eq(tt.tls_get(ctx, port, who("hello"), "/").status, 200, "hello's first")
    check_eq(denials(fp, "rate_limited"), 2.0, "denials rate_limited")


# ---------------------------------------------------------------------------
# readiness and cold starts


@case(timeout=60)
def cold_start_holds_requests(ctx):
    """fnproxy starts first; its function listens 2 s later. /ready is 503
    "starting" meanwhile; requests sent at spread times during those 2 s
    are held (no connection is tried: no refused connect) and all get 200
    once it listens, after which /ready is 200 and the endpoint ready."""
    port = free_port()
    addr = "%s:%d" % (HOST, port)
    fp = ctx.start_fnproxy(acfg([addr], ["queue: { depth: 50, timeout: 5s }"],
                                readiness="{ path: /healthz, interval: 50ms }"),
                           wait_ready=False)
    first = wait_admin(fp)
    check_eq(first, (503, b"starting\n"), "/ready before the function listens")
    t_start = time.monotonic()
    late_backend(ctx, port, 2000)
    bgs = [Bg(fp.port, "/", delay=d) for d in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)]
    check_eq(ready_status(fp), (503, b"starting\n"), "/ready while the function is starting")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=addr), 0.0, "endpoint_ready")
    for i, bg in enumerate(bgs):
        r = bg.result("request %d" % i)
        check_eq(r.status, 200, "request %d, sent %.2fs after the function's start (%r)"
                 % (i, bg.t_sent - t_start, r))
    # Answers come only after it listens (2 s after its start).
    check(min(bg.t_done for bg in bgs) - t_start >= 1.9,
          "an answer %.2fs after the function's start, before it listened"
          % (min(bg.t_done for bg in bgs) - t_start))
    check_eq(ready_status(fp), (200, b"ready\n"), "/ready once the function listens")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=addr), 1.0, "endpoint_ready")
    check_eq(metric(fp, "fnproxy_upstream_errors_total", reason="refused") or 0, 0,
             "refused connects (the requests were held, not tried)")
    check_eq(denials(fp, "overloaded"), 0, "denials overloaded")
    check(metric(fp, "fnproxy_phase_duration_seconds_count", phase="queue") == len(bgs),
          "requests observed in the queue phase: %r" %
          metric(fp, "fnproxy_phase_duration_seconds_count", phase="queue"))


@case(timeout=60)
def cold_start_releases_in_order(ctx):
    """Held through a cold start with max_concurrency 1, requests are
    released in the order they came, one at a time."""
    port = free_port()
    addr = "%s:%d" % (HOST, port)
    fp = ctx.start_fnproxy(acfg([addr], ["max_concurrency: 1",
                                         "queue: { depth: 50, timeout: 8s }"],
                                readiness="{ path: /healthz, interval: 50ms }"),
                           wait_ready=False)
    wait_admin(fp)
    late_backend(ctx, port, 1000, args=["--record", ctx.path("late.record")])
    held = []
    for i in range(5):
        held.append(Bg(fp.port, "/delay/100?n=%d" % i))
        wait_metric(fp, "fnproxy_queue_depth", float(i + 1))
    for i, bg in enumerate(held):
        check_eq(bg.result("held request %d" % i).status, 200, "held request %d" % i)
    with open(ctx.path("late.record"), "rb") as f:
        rec = f.read()
    tags = [b"?n=%d " % i for i in range(len(held))]
    check(all(t in rec for t in tags), "held requests missing from the function's record")
    check_eq(sorted(tags, key=rec.find), tags, "the order the held requests reached the function")
    r = request(port, "GET", "/_fnbackend/stats")
    check_eq(r.json()["inflight_max"], 1, "fnbackend's inflight_max")


@case(timeout=60)
def cold_start_on_a_unix_socket(ctx):
    """The same over a unix socket endpoint: the socket file appears only
    1.5 s after the function's start; the HTTP probe goes over it, a
    request sent meanwhile is held and served, the endpoint is ready."""
    sock = ctx.path("fn.sock")
    fp = ctx.start_fnproxy(acfg(["unix:" + sock], ["queue: { depth: 50, timeout: 5s }"],
                                readiness="{ path: /healthz, interval: 50ms }"),
                           wait_ready=False)
    check_eq(wait_admin(fp), (503, b"starting\n"), "/ready before the function listens")
    t_start = time.monotonic()
    Proc(ctx, [ctx.backend_bin, "--name", "unix", "--unix", sock, "--listen-after", "1500"],
         "backend-unix")
    bg = Bg(fp.port, "/")
    r = bg.result("the request sent during the cold start")
    check_eq(r.status, 200, "the request sent during the cold start (%r)" % r)
    check(bg.t_done - t_start >= 1.4, "answered %.2fs after the function's start, before its "
          "socket existed" % (bg.t_done - t_start))
    check_eq(ready_status(fp), (200, b"ready\n"), "/ready")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint="unix:" + sock), 1.0,
             "endpoint_ready of the unix endpoint")


@case(timeout=60)
def readiness_gates_each_function_alone(ctx):
    """Two functions with readiness: one up, one not yet. Requests to the
    one that is up are served at once; the other's are held; /ready is 503
    until both have a ready endpoint."""
    up = ctx.start_backend(name="up")
    port = free_port()
    text = (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT }\n"
        "functions:\n"
        "  - name: a\n"
        "    endpoints: [%s]\n"
        "    readiness: { path: /healthz, interval: 50ms }\n"
        "    ingress:\n"
        "      routes: [{ name: a, match: { listener: public, path_prefix: /a/ } }]\n"
        "  - name: b\n"
        "    endpoints: [127.0.0.1:%d]\n"
        "    readiness: { path: /healthz, interval: 50ms }\n"
        "    ingress:\n"
        "      queue: { depth: 10, timeout: 8s }\n"
        "      routes: [{ name: b, match: { listener: public, path_prefix: /b/ }, "
        "timeout: 15s }]\n" % (up.addr, port))
    fp = ctx.start_fnproxy(text, wait_ready=False)
    wait_admin(fp)
    wait_until(lambda: metric_value(fp.metrics(), "fnproxy_endpoint_ready", {"function": "a"})
               == 1.0, 5, "function a's endpoint ready")
    held = Bg(fp.port, "/b/held")
    wait_until(lambda: metric_value(fp.metrics(), "fnproxy_queue_depth", {"function": "b"})
               == 1.0, 5, "function b's request held")
    for i in range(5):
        check_eq(request(fp.port, "GET", "/a/x").status, 200, "function a, request %d" % i)
    check_eq(ready_status(fp), (503, b"starting\n"), "/ready with b not ready")
    check(held.t_done is None, "b's request was answered before b listened")
    late_backend(ctx, port, 0, name="b")
    check_eq(held.result("b's held request").status, 200, "b's held request")
    wait_until(lambda: ready_status(fp) == (200, b"ready\n"), 5, "/ready 200")


@case(timeout=60)
def cold_start_past_queue_timeout(ctx):
    """The function listens only 2.5 s after its start and queue.timeout is
    500ms: a request sent meanwhile gets 503 overloaded with Retry-After
    once its wait expires (never a 502), /ready stays 503; once the
    function is up, /ready turns 200 and requests are served."""
    port = free_port()
    addr = "%s:%d" % (HOST, port)
    fp = ctx.start_fnproxy(acfg([addr], ["queue: { depth: 50, timeout: 500ms }"],
                                readiness="{ path: /healthz, interval: 50ms }"),
                           wait_ready=False)
    wait_admin(fp)
    t_start = time.monotonic()
    late_backend(ctx, port, 2500)
    t0 = time.monotonic()
    r = request(fp.port, "GET", "/")
    took = time.monotonic() - t0
    check_fnproxy_error(r, 503, "overloaded")
    check_eq(r.header("retry-after"), "1", "retry-after")
    check(took >= 0.4, "the 503 came after %.2fs: it did not wait its queue.timeout" % took)
    check_eq(denials(fp, "overloaded"), 1.0, "denials overloaded")
    if time.monotonic() - t_start < 2.3:  # surely before it listens
        check_eq(ready_status(fp), (503, b"starting\n"), "/ready after the held request's 503")
        check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=addr), 0.0, "endpoint_ready")
    wait_until(lambda: ready_status(fp) == (200, b"ready\n"), 10, "/ready 200",
               detail=lambda: fp.stderr_text()[-500:])
    check(time.monotonic() - t_start >= 2.4, "/ready 200 %.2fs after the function's start, "
          "before it listened" % (time.monotonic() - t_start))
    check_eq(request(fp.port, "GET", "/").status, 200, "a request once the function is up")
    check_eq(metric(fp, "fnproxy_upstream_errors_total", reason="refused") or 0, 0,
             "refused connects")


@case(timeout=60)
def cold_start_never_ready(ctx):
    """Nothing ever listens at the endpoint: requests get 503 overloaded
    after queue.timeout, never 502, and /ready stays 503."""
    addr = "%s:%d" % (HOST, free_port())
    fp = ctx.start_fnproxy(acfg([addr], ["queue: { depth: 50, timeout: 300ms }"],
                                readiness="{ interval: 50ms }"), wait_ready=False)
    wait_admin(fp)
    got = parallel(3, lambda i: request(fp.port, "GET", "/"))
    for i, r in enumerate(got):
        if isinstance(r, Exception):
            fail("request %d: %s" % (i, r))
        check_fnproxy_error(r, 503, "overloaded")
    check_eq(denials(fp, "overloaded"), 3.0, "denials overloaded")
    check_eq(codes(fp, 502), 0, "502s")
    time.sleep(0.3)
    check_eq(ready_status(fp), (503, b"starting\n"), "/ready")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=addr), 0.0, "endpoint_ready")


@case(timeout=60)
def http_probe_waits_for_healthz(ctx):
    """A function that listens at once but answers /healthz 503 for its
    first 1.5 s (--ready-after): with readiness path /healthz, a request
    sent at once is held until /healthz says 200 (it never reaches the
    function before; the probes do, as GET /healthz)."""
    t_before = time.monotonic()
    b = ctx.start_backend(args=["--ready-after", "1500"])
    ready_at = t_before + 1.5  # the earliest it can be ready
    fp = ctx.start_fnproxy(acfg([b.addr], ["queue: { depth: 50, timeout: 10s }"],
                                readiness="{ path: /healthz, interval: 50ms, timeout: 1s }"),
                           wait_ready=False)
    wait_admin(fp)
    bg = Bg(fp.port, "/")
    time.sleep(max(0.0, ready_at - 0.5 - time.monotonic()))
    st = stats(b)
    if time.monotonic() < ready_at - 0.05:  # the stats were surely read before it was ready
        check_eq(st["requests"], 0, "requests that reached the function before /healthz was 200")
        check_eq(ready_status(fp), (503, b"starting\n"), "/ready before /healthz is 200")
    else:
        ctx.note("too slow to look before the function was ready")
    r = bg.result("the request sent at once")
    check_eq(r.status, 200, "the request sent at once")
    check(bg.t_done >= ready_at - 0.05, "answered %.2fs before /healthz could say 200"
          % (ready_at - bg.t_done))
    check_eq(ready_status(fp), (200, b"ready\n"), "/ready")
    check(b"GET /healthz HTTP/1.1" in b.record(), "fnbackend never saw a GET /healthz probe")


@case(timeout=60)
def tcp_probe_ready_on_connect(ctx):
    """The same function (/healthz 503 for its first 3 s) with readiness
    and no path: a TCP connect is the probe, so the function is ready as
    soon as it listens and a request is served while /healthz still says
    503."""
    b = ctx.start_backend(args=["--ready-after", "3000"])
    fp = ctx.start_fnproxy(acfg([b.addr], ["queue: { depth: 50, timeout: 10s }"],
                                readiness="{ interval: 50ms }"))
    r = request(fp.port, "GET", "/")
    check_eq(r.status, 200, "a request")
    check(b"GET /healthz" not in b.record(), "a TCP probe sent an HTTP request")
    h = request(b.port, "GET", "/healthz")
    check_eq(h.status, 503, "fnbackend's /healthz right after the request was served (if this "
             "is 200, the machine was too slow for the case)")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=b.addr), 1.0, "endpoint_ready")


def frozen_cold_start(ctx, endpoints, rd, queue):
    """fnproxy started on a config whose probe (rd) is sure to be in
    flight across a reload: the function (fnbackend) is frozen (SIGSTOP),
    so the first probe has connected and waits for its answer. Returns
    (function, fnproxy) once the admin port answers 503 "starting"."""
    f = ctx.start_backend(name="frozen")
    f.send_signal(signal.SIGSTOP)
    fp = ctx.start_fnproxy(acfg([e.replace("$F", f.addr) for e in endpoints], queue,
                                readiness=rd), wait_ready=False)
    check_eq(wait_admin(fp), (503, b"starting\n"), "/ready at the start")
    time.sleep(0.3)  # the first probe is connected and waiting (timeout 5s)
    return f, fp


def hup(fp, text, gen):
    fp.rewrite_config(text)
    fp.send_signal(signal.SIGHUP)
    wait_until(lambda: gen in generations(fp), 5, "generation %d in service" % gen,
               detail=lambda: fp.stderr_text()[-500:])


@case(timeout=60)
def ready_after_reload_during_cold_start(ctx):
    """A reload during a cold start, while a probe is in flight (the
    function frozen, its probe waiting for /healthz), with the same
    config: when that probe then succeeds, the endpoint is ready, requests
    are served, and /ready turns 200."""
    rd = "{ path: /healthz, interval: 50ms, timeout: 5s }"
    q = ["queue: { depth: 50, timeout: 8s }"]
    f, fp = frozen_cold_start(ctx, ["$F"], rd, q)
    try:
        hup(fp, acfg([f.addr], q, readiness=rd), 2)
    finally:
        f.send_signal(signal.SIGCONT)
    check_eq(request(fp.port, "GET", "/").status, 200, "a request once the function answers")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=f.addr), 1.0, "endpoint_ready")
    st = wait_for(lambda: (lambda v: v if v == (200, b"ready\n") else None)(ready_status(fp)), 3)
    check(st, "/ready still %r 3 s after the endpoint became ready (a probe started before the "
          "reload made it ready)" % (ready_status(fp),))


@case(timeout=60)
def reload_replacing_endpoint_during_cold_start(ctx):
    """A reload during a cold start replaces the function's endpoint
    while a probe of the old one is in flight; that probe then succeeds.
    The old endpoint is no longer the function's: the function stays not
    ready, so a request is held and gets 503 overloaded at queue.timeout
    (never sent to the new endpoint, which does not listen: no 502)."""
    rd = "{ path: /healthz, interval: 50ms, timeout: 5s }"
    q = ["queue: { depth: 50, timeout: 500ms }"]
    dead = "%s:%d" % (HOST, free_port())
    f, fp = frozen_cold_start(ctx, ["$F"], rd, q)
    try:
        hup(fp, acfg([dead], q, readiness=rd), 2)
    finally:
        f.send_signal(signal.SIGCONT)
    # The old probe's answer arrives now.
    wait_until(lambda: b"endpoint %s is ready" % f.addr.encode() in fp.stderr_text().encode(),
               3, "the old probe to succeed", detail=lambda: fp.stderr_text()[-500:])
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=dead), 0.0, "endpoint_ready of the new "
             "endpoint")
    for i in range(2):
        r = request(fp.port, "GET", "/")
        check(r.status != 502, "request %d was sent to the endpoint that was never ready: %d %s"
              % (i, r.status, r.header("x-fnproxy-error")))
        check_fnproxy_error(r, 503, "overloaded")
    check_eq(metric(fp, "fnproxy_upstream_errors_total", reason="refused") or 0, 0,
             "refused connects to the endpoint that was never ready")
    check_eq(ready_status(fp), (503, b"starting\n"), "/ready")


@case(timeout=60)
def endpoint_goes_away_and_back(ctx):
    """With a TCP readiness probe: the function dies; the next request
    finds its connection refused, the endpoint is marked not ready (/ready
    503) and that request, which reached nobody, waits for the function
    again instead of getting 502, as later ones do; all are served when the
    function listens again on the same port; /ready is 200 and the
    endpoint ready again."""
    port = free_port()
    listen = ["%s:%d" % (HOST, port)]
    b = ctx.start_backend(name="first", listen=listen)
    fp = ctx.start_fnproxy(acfg([b.addr], ["queue: { depth: 50, timeout: 5s }"],
                                readiness="{ interval: 50ms }"))
    check_eq(request(fp.port, "GET", "/").status, 200, "while the function is up")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=b.addr), 1.0, "endpoint_ready")
    b.stop()
    held = [Bg(fp.port, "/")]
    wait_until(lambda: (metric(fp, "fnproxy_upstream_errors_total", reason="refused") or 0) >= 1,
               3, "the refused connect counted")
    wait_until(lambda: ready_status(fp) == (503, b"starting\n"), 3, "/ready 503",
               detail=lambda: repr(ready_status(fp)))
    wait_metric(fp, "fnproxy_endpoint_ready", 0.0, endpoint=b.addr)
    refused = metric(fp, "fnproxy_upstream_errors_total", reason="refused")
    held += [Bg(fp.port, "/"), Bg(fp.port, "/echo")]
    wait_metric(fp, "fnproxy_queue_depth", 3.0)
    check(not any(bg.t_done for bg in held), "a held request was answered while the function "
          "was down")
    ctx.start_backend(name="second", listen=listen)
    for i, bg in enumerate(held):
        r = bg.result("held request %d" % i)
        check_eq(r.status, 200, "held request %d (%r)" % (i, r))
    check_eq(metric(fp, "fnproxy_upstream_errors_total", reason="refused"), refused,
             "refused connects while the requests were held")
    wait_until(lambda: ready_status(fp) == (200, b"ready\n"), 3, "/ready 200")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=b.addr), 1.0, "endpoint_ready")
    check_eq(metric(fp, "fnproxy_queue_depth"), 0.0, "queue depth")


@case(timeout=60)
def not_ready_endpoint_gets_no_traffic(ctx):
    """Two endpoints, one never listening, with a TCP probe: the function
    is ready with one (/ready 200, gauges 1 and 0) and every request goes
    to the ready one: no connect is refused."""
    b = ctx.start_backend()
    dead = "%s:%d" % (HOST, free_port())
    fp = ctx.start_fnproxy(acfg([dead, b.addr], ["queue: { depth: 50, timeout: 5s }"],
                                readiness="{ interval: 50ms }"))
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=b.addr), 1.0, "the live one")
    check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=dead), 0.0, "the dead one")
    got = parallel(4, lambda i: [request(fp.port, "GET", "/").status for _ in range(10)])
    check_eq(got, [[200] * 10] * 4, "40 requests (statuses per client)")
    check_eq(metric(fp, "fnproxy_upstream_errors_total", reason="refused") or 0, 0,
             "refused connects (to the endpoint that is not ready)")
    check_eq(stats(b)["requests"], 40, "requests that reached the live endpoint")
    check_eq(ready_status(fp), (200, b"ready\n"), "/ready")


@case(timeout=60)
def frozen_function_probe_times_out(ctx):
    """A function frozen (SIGSTOP) before fnproxy starts accepts
    connections (the kernel does) but never answers /healthz: each probe
    ends at its timeout (200ms), the endpoint stays not ready and a
    request is held; thawed (SIGCONT), the next probe succeeds and the
    held request is served."""
    b = ctx.start_backend()
    b.send_signal(signal.SIGSTOP)
    try:
        fp = ctx.start_fnproxy(acfg([b.addr], ["queue: { depth: 50, timeout: 8s }"],
                                    readiness="{ path: /healthz, interval: 50ms, timeout: 200ms }"),
                               wait_ready=False)
        wait_admin(fp)
        bg = Bg(fp.port, "/")
        time.sleep(1.0)  # a few probes time out meanwhile
        check_eq(ready_status(fp), (503, b"starting\n"), "/ready while the function is frozen")
        check_eq(metric(fp, "fnproxy_endpoint_ready", endpoint=b.addr), 0.0, "endpoint_ready")
        check_eq(metric(fp, "fnproxy_queue_depth"), 1.0, "the request held")
        check(bg.t_done is None, "the request was answered while the function was frozen: %r"
              % (bg.resp or bg.error))
    finally:
        b.send_signal(signal.SIGCONT)
    check_eq(bg.result("the held request").status, 200, "the held request")
    wait_until(lambda: ready_status(fp) == (200, b"ready\n"), 5, "/ready 200")


# ---------------------------------------------------------------------------
# configuration


@case()
def check_refuses_queue_alone(ctx):
    """fnproxy --check refuses a queue on a function with neither
    max_concurrency nor readiness, naming file:line:col and the key's path;
    the same file with max_concurrency (or readiness) is ok."""
    def text(ingress=(), readiness=None):
        t = acfg(["127.0.0.1:9"], list(ingress) + ["queue: { depth: 5, timeout: 1s }"],
                 readiness=readiness)
        return ctx.render(t, {"public": 19902}, 19901, WORKERS=1)

    bad = text()
    path = ctx.write_config(bad, "queue-alone.yaml")
    lines = bad.split("\n")
    ln = next(i for i, s in enumerate(lines) if "queue:" in s)
    col = lines[ln].index("queue") + 1
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 1, "exit status of --check (stderr %r)" % err)
    where = "%s:%d:%d:" % (path, ln + 1, col)
    check(where in err, "stderr names %s: %r" % (where, err))
    line = [s for s in err.splitlines() if where in s][0]
    check("functions[0].ingress.queue" in line, "the message names the path: %r" % line)
    check("max_concurrency" in line and "readiness" in line,
          "the message says what a queue needs: %r" % line)
    check("ok" not in out, "stdout says ok: %r" % out)
    for name, good in (("with-limit.yaml", text(["max_concurrency: 3"])),
                       ("with-readiness.yaml", text(readiness="{ path: /healthz }"))):
        gp = ctx.write_config(good, name)
        p = ctx.run_fnproxy(["--check", "-c", gp])
        check_eq(p.returncode, 0, "--check of %s (stderr %r)" % (name, p.stderr[-300:]))
    # A rate limit keyed on something else than client_id or client_ip.
    bad = text(["max_concurrency: 3", "rate_limit: { rps: 5, per: client_port }"])
    path = ctx.write_config(bad, "bad-per.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    err = p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 1, "exit status of --check with per: client_port")
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", err)
    check(m is not None, "stderr has file:line:col: %r" % err)
    check_eq(bad.split("\n")[int(m.group(1)) - 1].strip().startswith("rate_limit:"), True,
             "line %s is the rate_limit line" % m.group(1))
    check("functions[0].ingress.rate_limit.per" in m.group(3) and "client_ip" in m.group(3),
          "the message names the key and the choices: %r" % m.group(0))
