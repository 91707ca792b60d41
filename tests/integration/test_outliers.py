"""Outlier ejection, circuit breaking, fault injection and slow clients
(README "Outlier ejection and circuit breaking", "Fault injection",
"Timeouts"): real fnproxy and fnbackend processes on 127.0.0.1, one worker
each so that the per-worker records and caps are the ones counted."""

import select
import socket
import threading
import time

from harness import (build_request, case, check, check_eq, check_fnproxy_error,
                     free_port, metric_value, request)


def config(endpoints, route_extra="", fn_extra="", listener_extra=""):
    return (
        "workers: 1\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT%s }\n"
        "functions:\n"
        "  - name: app\n"
        "    endpoints: [%s]\n"
        "%s"
        "    ingress:\n"
        "      routes:\n"
        "        - name: r\n"
        "          timeout: 5s\n"
        "%s" % (listener_extra, ", ".join(endpoints), fn_extra, route_extra))


def counter(fp, name, **labels):
    labels.setdefault("function", "app")
    return metric_value(fp.metrics(), name, labels) or 0.0


@case(timeout=60)
def dead_endpoint_ejected_and_back(ctx):
    """One of three endpoints refuses connections: after 3 failures in a
    row it is ejected for 1 s and requests stop trying it (before ejection
    least-outstanding balancing sent a third to half of the first attempts
    there); when its time is up it gets real traffic again, fails again,
    and is ejected for 2 s; once it listens, it serves again."""
    a = ctx.start_backend(name="a")
    b = ctx.start_backend(name="b")
    dead = free_port()
    fp = ctx.start_fnproxy(config(
        [a.addr, b.addr, "127.0.0.1:%d" % dead],
        fn_extra="    outlier: { consecutive_failures: 3, base_ejection_time: 1s,"
                 " max_ejection_time: 10s }\n",
        route_extra="          retries: { max: 2, on: [connect-failure] }\n"), workers=1)
    c = ctx.connect(fp.port)
    for i in range(200):
        c.send(build_request("GET", "/status/200"))
        check_eq(c.read_response().status, 200, "request %d" % i)
    refused = counter(fp, "fnproxy_upstream_errors_total", reason="refused")
    check_eq(counter(fp, "fnproxy_outlier_ejections_total"), 1.0, "ejections after 200 requests")
    check(3 <= refused <= 4, "connects to the dead endpoint over 200 requests: %r (3 eject it)"
          % refused)
    time.sleep(1.2)  # its ejection is over: it takes real traffic, fails, goes for 2 s
    for i in range(100):
        c.send(build_request("GET", "/status/200"))
        check_eq(c.read_response().status, 200, "request %d after the ejection ended" % i)
    check_eq(counter(fp, "fnproxy_outlier_ejections_total"), 2.0, "ejected again")
    check_eq(counter(fp, "fnproxy_upstream_errors_total", reason="refused"), refused + 3,
             "refused connects after the first ejection ended")
    # It comes back to life; after its 2 s it serves its share.
    ctx.start_backend(name="revived", listen=["127.0.0.1:%d" % dead])
    time.sleep(2.2)
    served = set()
    for i in range(60):
        c.send(build_request("GET", "/status/200"))
        r = c.read_response()
        check_eq(r.status, 200, "request %d after it came back" % i)
        served.add(r.header("x-backend"))
    check("revived" in served, "the revived endpoint got no traffic after its ejection: %r"
          % served)


@case(timeout=60)
def failing_endpoint_ejected_on_5xx(ctx):
    """An endpoint that answers 503 to everything is ejected like a dead
    one (5xx count as failures); with retries on gateway-error no client
    sees its 503s, and after the ejection nearly all traffic avoids it."""
    good = ctx.start_backend(name="good")
    bad = ctx.start_backend(name="bad", args=["--fail-status", "503:1"])
    fp = ctx.start_fnproxy(config(
        [good.addr, bad.addr],
        fn_extra="    outlier: { consecutive_failures: 2, base_ejection_time: 30s }\n",
        route_extra="          retries: { max: 1, on: [gateway-error] }\n"), workers=1)
    c = ctx.connect(fp.port)
    for i in range(100):
        c.send(build_request("GET", "/status/200"))
        check_eq(c.read_response().status, 200, "request %d" % i)
    check_eq(counter(fp, "fnproxy_outlier_ejections_total"), 1.0, "the 503 endpoint ejected")
    r = request(bad.port, "GET", "/_fnbackend/stats")
    got = r.json()["requests"]
    check(got <= 3, "requests that reached the ejected endpoint: %d (2 eject it)" % got)


@case(timeout=60)
def circuit_breaker_caps_requests_in_flight(ctx):
    """max_active 2 on the one endpoint: with 2 slow requests in flight a
    third is answered 503 overloaded at once, and counted; once they are
    done, requests go through again."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(config([b.addr],
                                  fn_extra="    circuit_breaker: { max_active: 2 }\n"),
                           workers=1)
    slow = [ctx.connect(fp.port) for _ in range(2)]
    for s in slow:
        s.send(build_request("GET", "/delay/1000"))
    time.sleep(0.3)
    t0 = time.monotonic()
    r = request(fp.port, "GET", "/status/200")
    check_fnproxy_error(r, 503, "overloaded")
    check(time.monotonic() - t0 < 0.5, "the 503 was not immediate")
    for s in slow:
        check_eq(s.read_response().status, 200, "a slow request within the cap")
    check_eq(request(fp.port, "GET", "/status/200").status, 200, "after the slow ones ended")
    check_eq(counter(fp, "fnproxy_circuit_breaker_rejections_total"), 1.0, "rejections")


@case(timeout=60)
def fault_ratios(ctx):
    """abort 25% with 418 and delay 100% of the rest by 1 ms: over 800
    requests the aborts are within 5 standard deviations of 200, each is
    answered by fnproxy (fault_injected) without reaching the function, and
    the counters match what the client saw."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(config(
        [b.addr], route_extra="          fault: { abort: { percent: 25, status: 418 },"
                              " delay: { percent: 100, duration: 1ms } }\n"), workers=1)
    c = ctx.connect(fp.port)
    aborted = 0
    n = 800
    for i in range(n):
        c.send(build_request("GET", "/status/200"))
        r = c.read_response()
        if r.status == 418:
            check_eq(r.header("x-fnproxy-error"), "fault_injected", "an injected abort")
            aborted += 1
        else:
            check_eq(r.status, 200, "request %d" % i)
    sd = (n * 0.25 * 0.75) ** 0.5
    check(abs(aborted - n * 0.25) <= 5 * sd, "%d of %d aborted, want about %d" %
          (aborted, n, n * 0.25))
    check_eq(counter(fp, "fnproxy_faults_injected_total", kind="abort"), float(aborted),
             "abort faults counted")
    check_eq(counter(fp, "fnproxy_faults_injected_total", kind="delay"), float(n - aborted),
             "delay faults counted")
    got = request(b.port, "GET", "/_fnbackend/stats").json()["requests"]
    check_eq(got, n - aborted, "requests that reached the function")


@case(timeout=90)
def slow_reader_cut_off_others_served(ctx):
    """A client that reads its answer, but slowly (about 40 KB/s under a
    200 KiB/s min_client_rate, with idle_timeout far away), is closed once
    10 s were waited on it, counted as slow_client; another client is
    served meanwhile."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(config(
        [b.addr], listener_extra=", min_client_rate: 200KiB",
        route_extra="          idle_timeout: 60s\n"), workers=1)
    s = socket.create_connection(("127.0.0.1", fp.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(build_request("GET", "/bytes/%d" % (200 << 20)))
    stop = threading.Event()
    served = []

    def other():
        while not stop.is_set():
            served.append(request(fp.port, "GET", "/status/200").status)
            time.sleep(0.2)

    t = threading.Thread(target=other)
    t.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 40:
            if counter(fp, "fnproxy_timeouts_total", kind="slow_client") >= 1:
                break
            s.recv(8192)
            time.sleep(0.2)
    finally:
        stop.set()
        t.join()
        s.close()
    check_eq(counter(fp, "fnproxy_timeouts_total", kind="slow_client"), 1.0,
             "the slow reader cut off (after %.1fs)" % (time.monotonic() - t0))
    check(served and all(st == 200 for st in served),
          "the other client meanwhile: %r" % served[:20])


@case(timeout=60)
def slow_body_sender_gets_408(ctx):
    """A client that sends its body at about 100 bytes a second, under the
    default min_client_rate (1 KiB a second), gets 408 once 10 s were
    waited, though it never stalled long enough for idle_timeout."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(config([b.addr], route_extra="          idle_timeout: 30s\n"),
                           workers=1)
    c = ctx.connect(fp.port, timeout=30)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 25:
        if select.select([c.sock], [], [], 0.2)[0]:
            break  # the answer is there
        try:
            c.send(b"x" * 20)
        except OSError:
            break
    took = time.monotonic() - t0
    r = c.read_response(timeout=10)
    check_fnproxy_error(r, 408, "request_timeout")
    check(9 <= took <= 20, "408 after %.1fs of a 100 B/s body (10 s window)" % took)
    check_eq(counter(fp, "fnproxy_timeouts_total", kind="slow_client"), 1.0, "slow_client")


@case(timeout=60)
def paused_backend_per_try_timeout_and_ejection(ctx):
    """One of two instances is paused (SIGSTOP, as a frozen function is): it
    accepts connections (the kernel does) and never answers. With
    per_try_timeout 300ms and retries on per-try-timeout, each request that
    lands there is answered by the other instance within the deadline; after
    two such timeouts in a row it is ejected and requests stop waiting on it;
    resumed (SIGCONT) and its ejection over, it serves again."""
    import signal
    a = ctx.start_backend(name="a")
    b = ctx.start_backend(name="b")
    fp = ctx.start_fnproxy(config(
        [a.addr, b.addr],
        fn_extra="    outlier: { consecutive_failures: 2, base_ejection_time: 2s }\n",
        route_extra="          per_try_timeout: 300ms\n"
                    "          retries: { max: 1, on: [connect-failure, per-try-timeout] }\n"),
        workers=1)
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/status/200"))
    check_eq(c.read_response().status, 200, "before the pause")
    b.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for i in range(20):
            c.send(build_request("GET", "/status/200"))
            r = c.read_response(timeout=5)
            check_eq((r.status, r.header("x-backend")), (200, "a"), "request %d while b is paused"
                     % i)
        took = time.monotonic() - t0
        check(took < 2.0, "20 requests took %.1fs: more than two waited on the paused one" % took)
        check_eq(counter(fp, "fnproxy_timeouts_total", kind="per_try"), 2.0,
                 "per-try timeouts before the ejection")
        check_eq(counter(fp, "fnproxy_outlier_ejections_total"), 1.0, "the paused one ejected")
    finally:
        b.send_signal(signal.SIGCONT)
    time.sleep(2.2)
    seen = set()
    for i in range(40):
        c.send(build_request("GET", "/status/200"))
        r = c.read_response(timeout=5)
        check_eq(r.status, 200, "request %d after the resume" % i)
        seen.add(r.header("x-backend"))
    check_eq(seen, {"a", "b"}, "instances serving after the resume")
