"""Requests fnproxy must refuse with 400 and a close, forwarding nothing;
and the other limits: 431, 413, 408, 417, 404.

Each malformed input is its own case with a fresh backend, whose record
must stay empty: nothing ambiguous may reach the function."""

import time

from harness import (Sender, build_request, case, check, check_eq, check_fnproxy_error,
                     raw_exchange, settle, std_config)

H = b"Host: test.local\r\n"

# name -> raw request. Every one must get 400 + close, nothing forwarded.
MALFORMED = {
    "cl_and_te": b"POST /echo HTTP/1.1\r\n" + H +
                 b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST /echo HTTP/1.1\r\n" + H +
                 b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two_cl_same": b"POST /echo HTTP/1.1\r\n" + H +
                   b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "two_cl_different": b"POST /echo HTTP/1.1\r\n" + H +
                        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_abc": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n",
    "cl_list": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1,1\r\n\r\nx",
    "cl_negative": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "te_gzip": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "te_chunked_gzip": b"POST /echo HTTP/1.1\r\n" + H +
                       b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_gzip_chunked": b"POST /echo HTTP/1.1\r\n" + H +
                       b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_twice": b"POST /echo HTTP/1.1\r\n" + H +
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs_fold": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n",
    "obs_fold_tab": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n\r\n",
    "space_before_colon": b"GET /echo HTTP/1.1\r\n" + H + b"X-A : one\r\n\r\n",
    "bare_cr_in_value": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "bare_cr_in_request_line": b"GET /ec\rho HTTP/1.1\r\n" + H + b"\r\n",
    "nul_in_value": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "ctl_in_value": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "missing_host": b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two_hosts": b"GET /echo HTTP/1.1\r\n" + H + b"Host: other.local\r\n\r\n",
    "request_line_extra": b"GET /echo HTTP/1.1 extra\r\n" + H + b"\r\n",
    "request_line_no_version": b"GET /echo\r\n\r\n",
    "lowercase_method": b"get /echo HTTP/1.1\r\n" + H + b"\r\n",
    "absolute_form": b"GET http://test.local/echo HTTP/1.1\r\n" + H + b"\r\n",
    "te_in_http10": b"POST /echo HTTP/1.0\r\n" + H +
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
}


def _make_malformed(name, data):
    def fn(ctx):
        b = ctx.start_backend()
        fp = ctx.start_fnproxy(std_config([b.addr]))
        r, closed, err = raw_exchange(fp.port, data)
        check(r is not None, "no response: %s" % err)
        check_fnproxy_error(r, 400, "bad_request", close=True)
        check(closed, "fnproxy closed the connection")
        check_eq(settle(b), b"", "bytes the backend received")

    fn.__name__ = "malformed_" + name
    fn.__qualname__ = fn.__name__
    fn.__module__ = __name__
    return case()(fn)


for _n, _d in MALFORMED.items():
    globals()["malformed_" + _n] = _make_malformed(_n, _d)


def _complete_chunked_request_forwarded(record):
    """True if the backend got a whole chunked request (head and the last
    chunk), which it would then have answered."""
    i = record.find(b"\r\n\r\n")
    return i >= 0 and b"0\r\n\r\n" in record[i + 4:]


def _make_bad_chunk(name, body):
    def fn(ctx):
        b = ctx.start_backend()
        fp = ctx.start_fnproxy(std_config([b.addr]))
        data = (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        r, closed, err = raw_exchange(fp.port, data)
        check(r is not None, "no response: %s" % err)
        check_fnproxy_error(r, 400, "bad_request", close=True)
        check(closed, "fnproxy closed the connection")
        rec = settle(b)
        check(not _complete_chunked_request_forwarded(rec),
              "the backend received a complete request: %r" % rec[:300])

    fn.__name__ = "malformed_" + name
    fn.__qualname__ = fn.__name__
    fn.__module__ = __name__
    return case()(fn)


malformed_chunk_size_zz = _make_bad_chunk("chunk_size_zz", b"5\r\nhello\r\nzz\r\nab\r\n0\r\n\r\n")
malformed_chunk_size_overflow = _make_bad_chunk(
    "chunk_size_overflow", b"5\r\nhello\r\nFFFFFFFFFFFFFFFFFF\r\nab\r\n0\r\n\r\n")


@case()
def header_too_large_431(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], max_header_bytes="8KiB"))
    data = build_request("GET", "/echo", [("X-Big", "a" * 10000)])
    r, closed, err = raw_exchange(fp.port, data)
    check(r is not None, "no response: %s" % err)
    check_fnproxy_error(r, 431, "header_too_large", close=True)
    check(closed, "fnproxy closed the connection")
    check_eq(settle(b), b"", "bytes the backend received")
    # Many small headers add up too.
    data = build_request("GET", "/echo", [("X-H%d" % i, "v" * 60) for i in range(200)])
    r, closed, err = raw_exchange(fp.port, data)
    check(r is not None, "no response (many headers): %s" % err)
    check_fnproxy_error(r, 431, "header_too_large", close=True)
    check_eq(settle(b), b"", "bytes the backend received")
    # Just under the limit passes.
    data = build_request("GET", "/echo", [("X-Big", "a" * 7000)])
    r, closed, err = raw_exchange(fp.port, data)
    check(r is not None and r.status == 200, "a 7 KB head is served: %r %s" % (r, err))


@case()
def body_too_large_413_content_length(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], max_body="1MiB"))
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", [("Content-Length", str(2 << 20))]))
    s = Sender(c, (bytes(65536) for _ in range(32)))
    s.start()
    r = c.read_response(timeout=10)
    check_fnproxy_error(r, 413, "body_too_large")
    check_eq(settle(b), b"", "bytes the backend received")
    # At the limit is fine (413 is for Content-Length > max_body).
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/sink", [("Content-Length", str(1 << 20))]))
    Sender(c, (bytes(65536) for _ in range(16))).start()
    r = c.read_response(timeout=20)
    check_eq((r.status, r.body), (200, b"1048576\n"), "a body of exactly max_body (1 MiB)")


@case()
def body_too_large_413_chunked(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], max_body="1MiB"))
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
    piece = b"10000\r\n" + bytes(65536) + b"\r\n"
    s = Sender(c, [piece] * 32 + [b"0\r\n\r\n"])
    s.start()
    r = c.read_response(timeout=10)
    check_fnproxy_error(r, 413, "body_too_large")
    rec = settle(b)
    check(not _complete_chunked_request_forwarded(rec),
          "the backend received a complete over-limit body (%d bytes recorded)" % len(rec))


@case()
def no_route_404(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], path_prefix="/api"))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/other"))
    r = c.read_response()
    check_fnproxy_error(r, 404, "no_route")
    check_eq(settle(b), b"", "bytes the backend received")
    # The connection is still usable for a routed request.
    c.send(build_request("GET", "/api/x"))
    r = c.read_response()
    check_eq(r.status, 200, "routed request after a 404 on the same connection")


@case()
def header_timeout_408(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], header_timeout="1s"))
    c = ctx.connect(fp.port)
    t0 = time.monotonic()
    c.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n")  # the head never ends
    r = c.read_response(timeout=6)
    took = time.monotonic() - t0
    check_fnproxy_error(r, 408, "request_timeout", close=True)
    check(0.8 <= took <= 4, "408 after %.2fs with header_timeout 1s" % took)
    check(c.wait_closed(), "fnproxy closed the connection")
    check_eq(settle(b), b"", "bytes the backend received")


@case()
def slow_head_in_pieces_still_times_out(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], header_timeout="1s"))
    c = ctx.connect(fp.port)
    t0 = time.monotonic()
    c.send(b"GET /echo HTTP/1.1\r\n")
    got = None
    for i in range(30):  # a byte every 100 ms must not reset the clock
        time.sleep(0.1)
        try:
            c.send(b"X-Slow-%d: y\r\n" % i)
        except OSError:
            break
        if not c.is_open(wait=0.001) or c.buf:
            break
    got = c.read_response(timeout=5)
    took = time.monotonic() - t0
    check_fnproxy_error(got, 408, "request_timeout", close=True)
    check(took < 2.5, "408 after %.2fs of trickling with header_timeout 1s" % took)
    check_eq(settle(b), b"", "bytes the backend received")


@case()
def expect_unknown_417(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    r, closed, err = raw_exchange(fp.port, build_request(
        "POST", "/echo", [("Expect", "foo"), ("Content-Length", "5")], body=None))
    check(r is not None, "no response: %s" % err)
    check_fnproxy_error(r, 417, "expectation_failed")
    check_eq(settle(b), b"", "bytes the backend received")
