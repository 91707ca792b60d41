"""fnbackend on its own: the other cases trust what it answers and records,
so its behaviour is pinned down here first (and these exercise the harness
without fnproxy)."""

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import (HOST, SAN, Client, Proc, build_request, case, check, check_eq, chunked,
                     free_port, hget, parse_echo, proc_status, request, wait_until)


@case()
def echo_and_record(ctx):
    b = ctx.start_backend(name="b1")
    req = build_request("POST", "/echo?q=1", [("X-A", "1")], body=b"hello")
    c = ctx.connect(b.port)
    c.send(req)
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check_eq(r.header("x-backend"), "b1", "x-backend")
    check_eq(r.header("x-echo-body-bytes"), "5", "x-echo-body-bytes")
    check_eq(r.body, req, "echo body")
    check_eq(b.record(), req, "record")


@case()
def chunked_echo_and_expect(ctx):
    b = ctx.start_backend()
    c = ctx.connect(b.port)
    head = build_request("PUT", "/echo", [("Transfer-Encoding", "chunked"),
                                          ("Expect", "100-continue")])
    c.send(head)
    r = c.read_head()
    check_eq(r.status, 100, "interim status")
    c.send(chunked(b"abc", b"defgh"))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    line, hdrs, body = parse_echo(r.body)
    check_eq(line, "PUT /echo HTTP/1.1", "request line")
    check_eq(body, b"abcdefgh", "de-chunked body")
    check_eq(r.header("x-echo-body-bytes"), "8", "x-echo-body-bytes")


@case()
def pipelining_in_order(ctx):
    b = ctx.start_backend()
    c = ctx.connect(b.port)
    paths = ["/delay/100", "/status/201", "/echo?i=2", "/bytes/70000", "/chunked/300000",
             "/", "/status/204", "/delay/10", "/sink", "/echo?i=9"]
    c.send(b"".join(build_request("GET", p) for p in paths))
    for i, p in enumerate(paths):
        r = c.read_response()
        if p.startswith("/delay"):
            check_eq((r.status, r.body), (200, b"delayed\n"), "response %d" % i)
        elif p == "/status/201":
            check_eq((r.status, r.body), (201, b"status 201\n"), "response %d" % i)
        elif p == "/status/204":
            check_eq((r.status, r.body, r.header("content-length")), (204, b"", None),
                     "response %d" % i)
        elif p.startswith("/echo"):
            check(r.body.startswith(("GET %s HTTP/1.1\r\n" % p).encode()),
                  "response %d is %r" % (i, r.body[:40]))
        elif p == "/bytes/70000":
            check_eq(len(r.body), 70000, "bytes")
        elif p == "/chunked/300000":
            check(r.chunked, "chunked")
            check_eq(len(r.body), 300000, "chunked bytes")
        elif p == "/sink":
            check_eq(r.body, b"0\n", "sink")
        else:
            check_eq(r.body, b"hello from backend\n", "hello")
    check(c.is_open(), "connection still open")


@case()
def close_semantics(ctx):
    b = ctx.start_backend()
    # HTTP/1.0 without keep-alive: answer, then close.
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/", version="HTTP/1.0"))
    r = c.read_response()
    check_eq(r.status, 200, "1.0 status")
    check(c.wait_closed(), "closed after an HTTP/1.0 answer")
    # Connection: close
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/status/500", [("Connection", "close")]))
    r = c.read_response()
    check_eq((r.status, r.header("connection")), (500, "close"), "close answer")
    check(c.wait_closed(), "closed after connection: close")
    # close-delimited
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/close-delimited/12345"))
    r = c.read_response()
    check_eq(len(r.body), 12345, "close-delimited body")
    check(r.header("content-length") is None and r.header("transfer-encoding") is None,
          "no framing headers")
    # close-mid and close-now
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/close-mid"))
    r = c.read_head()
    check_eq(r.header("content-length"), "100", "close-mid length")
    n = c.count_body(r, timeout=5)
    check_eq(n, 10, "close-mid bytes before close")
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/close-now"))
    check(c.wait_closed(), "close-now closes")
    check_eq(bytes(c.buf), b"", "close-now sends nothing")


@case()
def hang_and_bad(ctx):
    b = ctx.start_backend(name="bb")
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/hang"))
    check(c.is_open(wait=0.5) and not c.buf, "hang answers nothing and stays open")
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/bad/garbage"))
    c.wait_closed()
    check_eq(bytes(c.buf), b"", "buffer dropped by wait_closed")
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/bad/extra"))
    r = c.read_response()
    check_eq(r.body, b"hello", "extra: declared body")
    time.sleep(0.1)
    c.is_open()
    check_eq(bytes(c.buf), b"EXTRA", "extra: the lie")
    for path, needle in (("/bad/cl-te", b"transfer-encoding: chunked"),
                         ("/bad/dup-cl", b"content-length: 6"),
                         ("/bad/header-ctl", b"\x01")):
        c = ctx.connect(b.port)
        c.send(build_request("GET", path))
        check(c.wait_closed(), "%s closes" % path)
        c2 = Client(b.port)
        c2.send(build_request("GET", path))
        data = b""
        while True:
            chunk = c2.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        c2.close()
        check(needle in data and b"x-backend: bb" in data, "%s: %r" % (path, data))


@case()
def head_and_status(ctx):
    b = ctx.start_backend()
    c = ctx.connect(b.port)
    c.send(build_request("HEAD", "/bytes/100"))
    r = c.read_response(head=True)
    check_eq((r.status, r.header("content-length")), (200, "100"), "HEAD")
    c.send(build_request("GET", "/status/404?x=y"))
    r = c.read_response()
    check_eq((r.status, r.body), (404, b"status 404\n"), "status after HEAD")
    r = request(b.port, "GET", "/delay/50")
    check_eq(r.body, b"delayed\n", "delay")


@case()
def bad_request_and_sigterm(ctx):
    b = ctx.start_backend()
    c = ctx.connect(b.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 400, "status")
    check(c.wait_closed(), "closed")
    keep = ctx.connect(b.port)
    keep.send(build_request("GET", "/hang"))
    time.sleep(0.1)
    b.send_signal(signal.SIGTERM)
    check_eq(b.wait(5), 0, "backend exit status on SIGTERM")


@case(timeout=120, exclusive=True)
def big_bodies(ctx):
    b = ctx.start_backend(record=False)
    n = 256 << 20
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/bytes/%d" % n))
    r = c.read_head()
    check_eq(c.count_body(r), n, "bytes received")
    c.send(build_request("GET", "/chunked/%d" % (n // 4)))
    r = c.read_head()
    check_eq(c.count_body(r), n // 4, "chunked bytes received")
    c.send(build_request("POST", "/sink", [("Content-Length", str(n))]))
    zero = bytes(1 << 20)
    for _ in range(n >> 20):
        c.send(zero)
    r = c.read_response()
    check_eq(r.body, b"%d\n" % n, "sink count")
    kib = proc_status(b.pid, "VmHWM")
    limit = 256 if SAN else 64
    check(kib is not None and kib < limit * 1024, "backend VmHWM %s KiB" % kib)


# ---------------------------------------------------------------------------
# Failures on purpose: /fail/N/WHAT/KEY, the global rates, /_fnbackend/.

FAULT_HEADERS = [("x-fnproxy-timeout-ms", "1500"), ("x-request-id", "rid-1"),
                 ("Idempotency-Key", "ik-1")]


def ending(c, timeout=3):
    """How the connection ends from here: ("reset" | "eof" | "open", bytes
    received first). "open": nothing ended it within timeout."""
    data = bytes(c.buf)
    c.buf.clear()
    c.sock.settimeout(timeout)
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return "eof", data
            data += chunk
    except ConnectionResetError as e:
        check_eq(e.errno, errno.ECONNRESET, "errno of the reset")
        return "reset", data
    except socket.timeout:
        return "open", data


def get_or_reset(c, path, headers=None):
    """One request on c: its Response, or None if the backend reset c
    before answering (then c is closed). Fails on a plain EOF."""
    c.send(build_request("GET", path, headers))
    c.sock.settimeout(10)
    try:
        chunk = c.sock.recv(65536)
    except ConnectionResetError:
        c.close()
        return None
    check(chunk, "EOF instead of an answer to %s" % path)
    c.buf += chunk
    return c.read_response()


def check_fail_echo(r, status, count, path, headers=()):
    check_eq((r.status, r.header("x-backend-count")), (status, str(count)),
             "status and x-backend-count of %s" % path)
    line, hdrs, _ = parse_echo(r.body)
    check_eq(line, "GET %s HTTP/1.1" % path, "echoed request line")
    for k, v in headers:
        check_eq(hget(hdrs, k), [v], "echoed %s" % k)


def stats(port, query=""):
    r = request(port, "GET", "/_fnbackend/stats" + query)
    check_eq((r.status, r.header("content-type")), (200, "application/json"), "stats answer")
    j = r.json()
    check_eq(sorted(j), ["failed", "inflight", "inflight_max", "requests"], "stats keys")
    return j


def counts(port):
    """requests and failed of /_fnbackend/stats."""
    j = stats(port)
    return {"requests": j["requests"], "failed": j["failed"]}


@case()
def fail_status_counts_then_heals(ctx):
    b = ctx.start_backend()
    c = ctx.connect(b.port)
    paths = ["/fail/2/503/k1?retry_after=3", "/fail/2/503/k1/other/part", "/fail/2/503/k1",
             "/fail/2/503/k1?retry_after=3"]
    for i, p in enumerate(paths):
        c.send(build_request("GET", p, FAULT_HEADERS))
        r = c.read_response()
        check_fail_echo(r, 503 if i < 2 else 200, i + 1, p, FAULT_HEADERS)
        want_ra = "3" if i == 0 else None
        check_eq(r.header("retry-after"), want_ra, "retry-after of answer %d" % (i + 1))
    check(c.is_open(), "keep-alive after 503s")
    # Keys count apart; N=0 never fails; a body is echoed; 204 has none.
    r = request(b.port, "GET", "/fail/1/429/k2?retry_after=0")
    check_eq((r.status, r.header("x-backend-count"), r.header("retry-after")), (429, "1", "0"),
             "another key")
    r = request(b.port, "GET", "/fail/0/503/k3")
    check_eq((r.status, r.header("x-backend-count")), (200, "1"), "N=0")
    r = request(b.port, "POST", "/fail/1/500/k4", body=b"payload")
    check_eq((r.status, r.header("x-echo-body-bytes")), (500, "7"), "POST status")
    check_eq(parse_echo(r.body)[2], b"payload", "echoed body")
    r = request(b.port, "POST", "/fail/1/500/k4", body=b"again")
    check_eq((r.status, parse_echo(r.body)[2]), (200, b"again"), "POST then 200")
    r = request(b.port, "GET", "/fail/1/204/k5")
    check_eq((r.status, r.body, r.header("x-backend-count")), (204, b"", "1"), "204")
    r = request(b.port, "GET", "/fail/1/503/k1")
    check_eq((r.status, r.header("x-backend-count")), (200, "5"), "k1 kept its count")


@case()
def fail_reset_close_mid(ctx):
    b = ctx.start_backend()
    for what in ("reset", "close"):
        path = "/fail/1/%s/key-%s" % (what, what)
        c = ctx.connect(b.port)
        c.send(build_request("GET", path, FAULT_HEADERS))
        how, data = ending(c)
        check_eq((how, data), ("reset" if what == "reset" else "eof", b""),
                 "%s: how the connection ended, bytes before" % what)
        c = ctx.connect(b.port)
        c.send(build_request("GET", path, FAULT_HEADERS))
        check_fail_echo(c.read_response(), 200, 2, path, FAULT_HEADERS)
    path = "/fail/2/mid/key_mid"
    for i in (1, 2):
        c = ctx.connect(b.port)
        c.send(build_request("GET", path))
        r = c.read_head()
        check_eq((r.status, r.header("content-length"), r.header("x-backend-count")),
                 (200, "1000", str(i)), "mid head %d" % i)
        check_eq(c.count_body(r, timeout=5), 100, "mid bytes before the close %d" % i)
        check(c.eof, "mid ends in EOF")
    c = ctx.connect(b.port)
    c.send(build_request("GET", path))
    check_fail_echo(c.read_response(), 200, 3, path)


@case()
def fail_hang(ctx):
    b = ctx.start_backend()
    path = "/fail/1/hang/hk"
    hung = ctx.connect(b.port)
    hung.send(build_request("GET", path))
    how, data = ending(hung, timeout=1)
    check_eq((how, data), ("open", b""), "hang: no answer within 1 s")
    hung.send(build_request("GET", "/"))  # read and dropped
    c = ctx.connect(b.port)
    c.send(build_request("GET", path))
    check_fail_echo(c.read_response(), 200, 2, path)
    check_eq(ending(hung, timeout=0.3), ("open", b""), "still nothing on the hung connection")
    hung.close()
    r = request(b.port, "GET", "/")
    check_eq(r.body, b"hello from backend\n", "served after the hung peer left")


@case()
def fail_bad_paths_and_key_limit(ctx):
    b = ctx.start_backend(record=False)
    for p in ("/fail/x/503/k", "/fail/1/abc/k", "/fail/1/999/k", "/fail/1/199/k",
              "/fail/1/503/", "/fail/1/503", "/fail/", "/fail/1/503/a.b", "/fail/1/503/a%41",
              "/fail/1/503/" + "k" * 65):
        r = request(b.port, "GET", p)
        check_eq(r.status, 400, "status of %s" % p)
        check(r.body.startswith(b"want /fail/N/WHAT/KEY"), "body of %s: %r" % (p, r.body))
    long_key = "K" * 64
    r = request(b.port, "GET", "/fail/1/503/%s/tail" % long_key)
    check_eq((r.status, r.header("x-backend-count")), (503, "1"), "a 64-byte key")
    # 4096 keys at most: 4095 more fit, the next new one gets 507.
    c = ctx.connect(b.port)
    paths = ["/fail/0/503/n%d" % i for i in range(4095)] + ["/fail/0/503/one-too-many"]
    for i in range(0, len(paths), 500):
        batch = paths[i:i + 500]
        c.send(b"".join(build_request("GET", p) for p in batch))
        for p in batch:
            r = c.read_response()
            want = 507 if p.endswith("one-too-many") else 200
            check_eq(r.status, want, "status of %s" % p)
    r = request(b.port, "GET", "/fail/0/503/n17")
    check_eq((r.status, r.header("x-backend-count")), (200, "2"), "a known key after the limit")
    r = request(b.port, "GET", "/fail/1/503/" + long_key)
    check_eq((r.status, r.header("x-backend-count")), (200, "2"), "the 64-byte key")


def draw_pattern(port, n, path="/"):
    """Status of n requests in order; 0 for a reset (then a new connection)."""
    out = []
    c = Client(port)
    try:
        for _ in range(n):
            r = get_or_reset(c, path)
            if r is None:
                out.append(0)
                c = Client(port)
            else:
                out.append(r.status)
                if r.status == 503:
                    check_eq(r.body, b"injected 503\n", "injected body")
    finally:
        c.close()
    return out


@case()
def global_status_rate(ctx):
    args = ["--fail-status", "503:0.10", "--seed", "42", "--retry-after", "2"]
    b = ctx.start_backend(record=False, args=args)
    c = ctx.connect(b.port)
    n503 = 0
    for i in range(1000):
        c.send(build_request("GET", "/echo" if i % 2 else "/"))
        r = c.read_response()
        check(r.status in (200, 503), "status %d" % r.status)
        if r.status == 503:
            n503 += 1
            check_eq((r.header("retry-after"), r.body), ("2", b"injected 503\n"), "a 503")
        else:
            check_eq(r.header("retry-after"), None, "retry-after on a 200")
    check(50 <= n503 <= 150, "%d of 1000 answered 503 at rate 0.10" % n503)
    check(c.is_open(), "keep-alive through injected 503s")
    check_eq(counts(b.port), {"requests": 1000, "failed": n503}, "stats")
    # The same seed draws the same; another seed does not.
    p1 = draw_pattern(ctx.start_backend(record=False, args=args).port, 300)
    p2 = draw_pattern(ctx.start_backend(record=False, args=args).port, 300)
    p3 = draw_pattern(ctx.start_backend(record=False, args=args[:2] + ["--seed", "43"]).port, 300)
    check(p1 == p2, "same seed, same failures")
    check(p1 != p3, "another seed, other failures")


@case()
def global_reset_rate(ctx):
    b = ctx.start_backend(record=False, args=["--reset-rate", "0.05", "--seed", "7"])
    pattern = draw_pattern(b.port, 1000, "/fail/0/503/gk")
    resets = pattern.count(0)
    check(25 <= resets <= 75, "%d of 1000 reset at rate 0.05" % resets)
    check_eq(pattern.count(200), 1000 - resets, "the others answered 200")
    check_eq(counts(b.port), {"requests": 1000, "failed": resets}, "stats")
    # A reset request never reached /fail: the key counted only the others.
    r = request(b.port, "GET", "/_fnbackend/fail?reset=0")
    check_eq(r.status, 200, "heal")
    r = request(b.port, "GET", "/fail/0/503/gk")
    check_eq(r.header("x-backend-count"), str(1000 - resets + 1), "key count")


@case()
def control_endpoint(ctx):
    b = ctx.start_backend(record=False)
    r = request(b.port, "GET", "/_fnbackend/fail")
    check_eq((r.status, r.header("content-type")), (200, "application/json"), "settings")
    j = r.json()
    check_eq(sorted(j), ["rate", "reset", "retry_after", "seed", "status"], "settings keys")
    check_eq((j["status"], j["rate"], j["reset"], j["retry_after"]), (503, 0, 0, None),
             "default settings")
    check(isinstance(j["seed"], int), "seed %r" % j["seed"])
    # Everything fails...
    r = request(b.port, "GET", "/_fnbackend/fail?status=502&rate=1&retry_after=5&seed=9")
    check_eq(r.json(), {"status": 502, "rate": 1, "reset": 0, "retry_after": 5, "seed": 9},
             "settings after a change")
    for p in ("/", "/echo", "/fail/0/503/ck"):
        r = request(b.port, "GET", p)
        check_eq((r.status, r.header("retry-after")), (502, "5"), "failed %s" % p)
    r = request(b.port, "GET", "/_fnbackend/fail?status=503&rate=0.1&reset=0.05")
    check_eq(r.json(), {"status": 503, "rate": 0.1, "reset": 0.05, "retry_after": 5, "seed": 9},
             "the example of the README")
    r = request(b.port, "GET", "/_fnbackend/fail?rate=0&reset=1&retry_after=none")
    check_eq((r.json()["reset"], r.json()["retry_after"]), (1, None), "reset everything")
    c = ctx.connect(b.port)
    check_eq(get_or_reset(c, "/"), None, "reset while reset=1")
    # ... but never a control path, which is not counted either.
    check_eq(counts(b.port), {"requests": 4, "failed": 4}, "stats while failing")
    r = request(b.port, "GET", "/_fnbackend/fail?rate=0&reset=0")
    check_eq((r.json()["rate"], r.json()["reset"]), (0, 0), "healed")
    for p in ("/", "/echo", "/fail/0/503/ck"):
        check_eq(request(b.port, "GET", p).status, 200, "healed %s" % p)
    # A seed given again replays the same draws.
    pats = []
    for _ in range(2):
        request(b.port, "GET", "/_fnbackend/fail?rate=0.3&reset=0.2&seed=1234")
        pats.append(draw_pattern(b.port, 200))
    check(pats[0] == pats[1], "seed=1234 twice: same draws")
    check(0 in pats[0] and 503 in pats[0] and 200 in pats[0], "a mix: %r" % pats[0][:40])
    for q in ("rate=2", "rate=-0.1", "rate=0.6&reset=0.6", "rate=x", "status=99",
              "status=600", "retry_after=soon", "seed=-1"):
        r = request(b.port, "GET", "/_fnbackend/fail?" + q)
        check_eq((r.status, r.header("content-type")), (400, "application/json"), q)
        check("error" in r.json(), "error for %s" % q)
    r = request(b.port, "GET", "/_fnbackend/fail")
    check_eq((r.json()["rate"], r.json()["reset"]), (0.3, 0.2), "a refused change changes nothing")
    check_eq(request(b.port, "GET", "/_fnbackend/nope").status, 404, "unknown control path")


@case()
def stats_counts(ctx):
    b = ctx.start_backend(record=False)
    check_eq(counts(b.port), {"requests": 0, "failed": 0}, "fresh")
    for p in ("/", "/echo", "/status/500", "/fail/x/503/k", "/fail/1/503/s", "/fail/1/503/s"):
        request(b.port, "GET", p)
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/fail/1/close/s2"))
    check_eq(ending(c)[0], "eof", "close")
    request(b.port, "GET", "/_fnbackend/fail?rate=0")
    request(b.port, "GET", "/_fnbackend/nope")
    # A 500 of /status is the route's answer, not an injected failure.
    check_eq(counts(b.port), {"requests": 7, "failed": 2}, "after 7 requests, 2 failed")


@case()
def keepalive_and_pipelining_after_failures(ctx):
    b = ctx.start_backend()
    a = ctx.connect(b.port)
    a.send(build_request("GET", "/"))
    check_eq(a.read_response().status, 200, "first answer on the kept connection")
    for what in ("reset", "close", "mid", "hang"):
        c = ctx.connect(b.port)
        c.send(build_request("GET", "/fail/1/%s/other-%s" % (what, what)))
        ending(c, timeout=0.3)
    paths = ["/", "/fail/1/503/pp", "/fail/1/503/pp", "/echo?x=1", "/delay/20",
             "/fail/1/mid/pm/x", "/"]
    a.send(b"".join(build_request("GET", p) for p in paths[:5]))
    for i, p in enumerate(paths[:5]):
        r = a.read_response()
        want = {0: (200, None), 1: (503, "1"), 2: (200, "2"), 3: (200, None), 4: (200, None)}[i]
        check_eq((r.status, r.header("x-backend-count")), want, "answer %d (%s)" % (i, p))
    check_eq(r.body, b"delayed\n", "delay in order")
    check(a.is_open(), "kept connection open after failures elsewhere")
    # A pipelined burst whose second request is cut mid-body: the first is
    # answered, the third never.
    a.send(b"".join(build_request("GET", p) for p in paths[4:]))
    check_eq(a.read_response().body, b"delayed\n", "answer before the cut one")
    r = a.read_head()
    check_eq((r.header("content-length"), a.count_body(r, timeout=5)), ("1000", 100),
             "cut answer")
    check(a.eof, "closed after the cut answer")
    r = request(b.port, "GET", "/")
    check_eq(r.body, b"hello from backend\n", "new connections still served")


@case()
def fail_options(ctx):
    p = subprocess.run([ctx.backend_bin, "--help"], capture_output=True, timeout=10)
    out = p.stdout.decode()
    check_eq(p.returncode, 0, "--help exit status")
    for needle in ("--fail-status NNN:RATE", "--reset-rate RATE", "--retry-after S", "--seed N",
                   "/fail/N/WHAT/KEY", "/_fnbackend/fail", "/_fnbackend/stats", "/close-mid"):
        check(needle in out, "--help mentions %s" % needle)
    for bad in (["--fail-status", "503"], ["--fail-status", "503:1.5"], ["--fail-status", "99:0.1"],
                ["--reset-rate", "x"], ["--reset-rate", "-1"], ["--seed", "abc"],
                ["--retry-after", "-2"], ["--fail-status", "503:0.6", "--reset-rate", "0.5"]):
        p = subprocess.run([ctx.backend_bin, "--listen", "127.0.0.1:0"] + bad,
                           capture_output=True, timeout=10)
        check_eq(p.returncode, 2, "exit status for %s" % " ".join(bad))
        check(p.stderr.startswith(b"fnbackend: "), "a message for %s: %r" % (bad, p.stderr))


# ---------------------------------------------------------------------------
# Requests in flight: /_fnbackend/stats's inflight and inflight_max.


def inflight(port):
    return stats(port)["inflight"]


def wait_inflight(port, n, what, timeout=5):
    wait_until(lambda: inflight(port) == n, timeout, "%s: inflight %d" % (what, n),
               detail=lambda: repr(stats(port)))


@case()
def inflight_parallel_and_reset(ctx):
    b = ctx.start_backend(record=False)
    check_eq(stats(b.port), {"requests": 0, "failed": 0, "inflight": 0, "inflight_max": 0},
             "fresh")
    n = 5
    results = [None] * n

    def one(i):
        results[i] = request(b.port, "GET", "/delay/300")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # Reading stats while they wait: control paths are not in flight.
    wait_inflight(b.port, n, "five /delay/300 at once")
    check_eq(stats(b.port)["inflight_max"], n, "inflight_max while they wait")
    for t in threads:
        t.join(10)
    check_eq([r and (r.status, r.body) for r in results], [(200, b"delayed\n")] * n, "answers")
    # An answer is written before its client can read it: 0 at once.
    check_eq(stats(b.port), {"requests": n, "failed": 0, "inflight": 0, "inflight_max": n},
             "after the answers")
    for _ in range(5):
        request(b.port, "GET", "/_fnbackend/fail")
        request(b.port, "GET", "/_fnbackend/nope")
    # reset=1 answers the figures as they were, then restarts the most.
    check_eq(stats(b.port, "?reset=1")["inflight_max"], n, "the answer to reset=1")
    check_eq(stats(b.port)["inflight_max"], 0, "inflight_max after reset=1 while idle")
    hung = ctx.connect(b.port)
    hung.send(build_request("GET", "/hang"))
    wait_inflight(b.port, 1, "a hung request")
    check_eq(stats(b.port, "?reset=1")["inflight_max"], 1, "max with one hung")
    check_eq(stats(b.port)["inflight_max"], 1, "reset=1 restarts from inflight, not 0")
    hung.close()
    wait_inflight(b.port, 0, "the hung peer left")
    # A request waiting behind an asynchronous answer on its connection is
    # not parsed yet, so not in flight.
    stats(b.port, "?reset=1")
    c = ctx.connect(b.port)
    c.send(b"".join(build_request("GET", "/delay/50") for _ in range(3)))
    for i in range(3):
        check_eq(c.read_response().body, b"delayed\n", "pipelined delay %d" % i)
    check_eq(stats(b.port)["inflight_max"], 1, "three pipelined /delay")
    for q in ("?reset=0", "?reset=yes", "?reset="):
        r = request(b.port, "GET", "/_fnbackend/stats" + q)
        check_eq((r.status, "error" in r.json()), (400, True), "stats" + q)
    check_eq(stats(b.port)["inflight_max"], 1, "a refused reset changes nothing")


def rst_close(c):
    """Closes c with a reset (SO_LINGER 0) instead of a FIN."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


@case()
def inflight_back_to_zero(ctx):
    """Every way a request ends takes it out of inflight."""
    b = ctx.start_backend(record=False)
    # Peers that leave before the answer: FIN or RST, on /hang, a /fail hang,
    # a /delay (not read while it waits: noticed when it ends), mid-body.
    waits = []
    for path in ("/hang", "/fail/1/hang/z1", "/hang", "/delay/300", "/delay/300"):
        c = ctx.connect(b.port)
        c.send(build_request("GET", path))
        waits.append(c)
    half = ctx.connect(b.port)
    half.send(build_request("POST", "/echo", [("Content-Length", "100")]) + b"x" * 10)
    waits.append(half)
    wait_inflight(b.port, 6, "six waiting")
    for i, c in enumerate(waits):
        if i % 2:
            rst_close(c)
        else:
            c.close()
    # Answers that end the connection, stream, or go out in parts.
    for p in ("/fail/1/reset/z2", "/fail/1/close/z3", "/fail/1/mid/z4", "/close-now",
              "/close-mid", "/bad/garbage", "/bad/cl-te"):
        c = ctx.connect(b.port)
        c.send(build_request("GET", p))
        ending(c)
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/close-delimited/300000"))
    check_eq(len(c.read_response().body), 300000, "close-delimited")
    c = ctx.connect(b.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    check_eq(c.read_response().status, 400, "bad request")
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/", [("Connection", "Upgrade"), ("Upgrade", "x")]))
    check_eq(c.read_response().status, 200, "upgrade refused")
    big = ctx.connect(b.port)
    paths = ["/bytes/5000000", "/chunked/600000", "/bytes/0", "/chunked/0"]
    big.send(b"".join(build_request("GET", p) for p in paths) +
             build_request("HEAD", "/close-delimited/5"))
    for p in paths:
        r = big.read_head()
        big.count_body(r)
    big.read_head()
    check(big.wait_closed(), "closed after HEAD /close-delimited")
    echo = ctx.connect(b.port)
    body = b"e" * (1 << 20)
    echo.send(build_request("POST", "/echo", body=body) + build_request("GET", "/sink"))
    check_eq(len(echo.read_response().body) > len(body), True, "large echo")
    check_eq(echo.read_response().body, b"0\n", "sink after it")
    burst = ctx.connect(b.port)
    burst.send(b"".join(build_request("GET", "/") for _ in range(200)))
    for _ in range(200):
        burst.read_response()
    wait_inflight(b.port, 0, "every request ended")
    j = stats(b.port)
    check(j["inflight_max"] >= 6, "inflight_max %d" % j["inflight_max"])
    # A reader that never reads: answers pile up in the kernel; a reset ends them.
    slow = ctx.connect(b.port)
    slow.send(b"".join(build_request("GET", "/bytes/1000000") for _ in range(8)))
    wait_until(lambda: inflight(b.port) >= 1, 5, "a slow reader's requests in flight")
    rst_close(slow)
    wait_inflight(b.port, 0, "the slow reader reset")
    # SIGTERM with requests in flight still exits 0.
    c = ctx.connect(b.port)
    c.send(build_request("GET", "/hang"))
    wait_inflight(b.port, 1, "hung before SIGTERM")
    b.send_signal(signal.SIGTERM)
    check_eq(b.wait(5), 0, "exit status on SIGTERM")


# ---------------------------------------------------------------------------
# Cold starts: --listen-after MS, --ready-after MS.


def start_late(ctx, args):
    """fnbackend with args, not waiting for its PORT lines (Backend would)."""
    return Proc(ctx, [ctx.backend_bin] + args, "backend-late-%d" % len(ctx.procs),
                stdout=subprocess.PIPE)


def stdout_lines(p, n, timeout):
    """The first n lines p prints, or fewer if timeout passes first."""
    fd = p.popen.stdout.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while buf.count(b"\n") < n and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0, end - time.monotonic()))
        chunk = os.read(fd, 4096) if r else b""
        if r and not chunk:
            break
        buf += chunk
    return buf.decode().splitlines()


def refused(port):
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def unix_get(path, target):
    """One GET over the unix socket at path: the raw answer to EOF."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(build_request("GET", target, [("Connection", "close")]))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


@case()
def listen_after(ctx):
    port = free_port()
    path = ctx.path("late.sock")
    start = time.monotonic()
    p = start_late(ctx, ["--listen", "%s:%d" % (HOST, port), "--unix", path,
                         "--listen-after", "800"])
    # Neither the port nor the socket exists before MS: connections are
    # refused, and nothing is printed yet.
    tries = 0
    while time.monotonic() < start + 0.6:
        check(refused(port), "a connection accepted %.2f s after start"
              % (time.monotonic() - start))
        check(not os.path.exists(path), "the unix socket exists already")
        tries += 1
        time.sleep(0.05)
    check(tries >= 2, "tried only %d times" % tries)  # few on a loaded machine; >= 2 shows a refusal held
    lines = stdout_lines(p, 2, 10)
    check_eq(lines, ["PORT %d" % port, "UNIX %s" % path], "printed once bound")
    check(time.monotonic() - start >= 0.8, "bound after %.2f s" % (time.monotonic() - start))
    check_eq(request(port, "GET", "/").body, b"hello from backend\n", "TCP answer after")
    check(unix_get(path, "/status/201").startswith(b"HTTP/1.1 201 "), "unix answer after")
    p.send_signal(signal.SIGTERM)
    check_eq(p.wait(5), 0, "exit status on SIGTERM")
    # SIGTERM before MS: exits 0 without ever listening.
    port = free_port()
    p = start_late(ctx, ["--listen", "%s:%d" % (HOST, port), "--listen-after", "5000"])
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    check_eq(p.wait(5), 0, "exit status on SIGTERM before listening")
    check(refused(port), "never listened")


@case()
def listen_after_needs_a_fixed_port(ctx):
    for args in (["--listen", "127.0.0.1:0"], [], ["--listen", "127.0.0.1:0", "--unix",
                                                    ctx.path("x.sock")]):
        p = subprocess.run([ctx.backend_bin] + args + ["--listen-after", "100"],
                           capture_output=True, timeout=10)
        check_eq(p.returncode, 2, "exit status for %s" % args)
        check(p.stderr.startswith(b"fnbackend: --listen-after needs a fixed port"),
              "message for %s: %r" % (args, p.stderr))
    for bad in ("x", "-1", ""):
        p = subprocess.run([ctx.backend_bin, "--listen", "127.0.0.1:1", "--listen-after", bad],
                           capture_output=True, timeout=10)
        check_eq((p.returncode, p.stderr.startswith(b"fnbackend: --listen-after wants")),
                 (2, True), "--listen-after %r" % bad)
    p = subprocess.run([ctx.backend_bin, "--help"], capture_output=True, timeout=10)
    check(b"--listen-after MS" in p.stdout, "--help mentions --listen-after")


def healthz(port):
    r = request(port, "GET", "/healthz")
    return r.status, r.body


@case()
def ready_after(ctx):
    b = ctx.start_backend(record=False)
    check_eq(healthz(b.port), (200, b"ok\n"), "/healthz without --ready-after")
    start = time.monotonic()
    b = ctx.start_backend(record=False, args=["--ready-after", "800"])
    check_eq(healthz(b.port), (503, b"starting\n"), "/healthz at once")
    r = request(b.port, "GET", "/healthz?x=1")
    check_eq((r.status, r.header("x-backend")), (503, "backend"), "a query changes nothing")
    check_eq(request(b.port, "GET", "/").status, 200, "other paths answer meanwhile")
    wait_until(lambda: healthz(b.port) == (200, b"ok\n"), 10, "/healthz 200")
    check(time.monotonic() - start >= 0.8, "ready after %.2f s" % (time.monotonic() - start))
    check_eq(healthz(b.port), (200, b"ok\n"), "and it stays ready")
    # Probes are not requests to the function: neither counted nor failed.
    request(b.port, "GET", "/_fnbackend/fail?rate=1")
    check_eq(healthz(b.port), (200, b"ok\n"), "/healthz is never failed")
    check_eq(stats(b.port), {"requests": 1, "failed": 0, "inflight": 0, "inflight_max": 1},
             "/healthz not counted")
    # With --listen-after, MS counts from when the listener is up.
    port = free_port()
    start = time.monotonic()
    p = start_late(ctx, ["--listen", "%s:%d" % (HOST, port), "--listen-after", "300",
                         "--ready-after", "500"])
    check_eq(stdout_lines(p, 1, 10), ["PORT %d" % port], "printed once bound")
    check_eq(healthz(port), (503, b"starting\n"), "/healthz once listening")
    wait_until(lambda: healthz(port) == (200, b"ok\n"), 10, "/healthz 200")
    check(time.monotonic() - start >= 0.8, "ready after %.2f s" % (time.monotonic() - start))
    for bad in ("x", "-5"):
        q = subprocess.run([ctx.backend_bin, "--ready-after", bad], capture_output=True,
                           timeout=10)
        check_eq((q.returncode, q.stderr.startswith(b"fnbackend: --ready-after wants")),
                 (2, True), "--ready-after %r" % bad)
    q = subprocess.run([ctx.backend_bin, "--help"], capture_output=True, timeout=10)
    check(b"--ready-after MS" in q.stdout and b"/healthz" in q.stdout,
          "--help mentions --ready-after and /healthz")
