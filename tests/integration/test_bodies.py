"""Request and response bodies: Content-Length and chunked, 1 GiB each way
in bounded memory, Expect: 100-continue, close-delimited answers."""

import time

from harness import (SAN, Sender, build_request, case, check, check_eq, check_fnproxy_error,
                     chunked, hget, parse_echo, settle, std_config)

BIG = (256 << 20) if SAN else (1 << 30)
RSS_LIMIT_KIB = (256 if SAN else 64) * 1024


def _check_rss(fp, what):
    hwm = fp.vm_hwm_kib()
    check(hwm is not None, "VmHWM of fnproxy unreadable")
    check(hwm < RSS_LIMIT_KIB, "fnproxy peak RSS %d KiB after %s (limit %d KiB)"
          % (hwm, what, RSS_LIMIT_KIB))
    return hwm


@case()
def post_content_length_body(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    body = bytes(range(256)) * 300  # every byte value
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", [("Content-Type", "application/octet-stream")],
                         body=body))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    line, hdrs, got = parse_echo(r.body)
    check_eq(got, body, "body the backend received")
    check_eq(hget(hdrs, "content-length"), [str(len(body))], "forwarded content-length")
    check_eq(hget(hdrs, "transfer-encoding"), [], "forwarded transfer-encoding")
    check_eq(r.header("x-echo-body-bytes"), str(len(body)), "x-echo-body-bytes")


@case()
def post_chunked_body(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    pieces = [b"a" * 10, b"b" * 5000, bytes(range(256)) * 100, b"z"]
    c = ctx.connect(fp.port)
    head = build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
    # With a chunk extension, and split over several writes.
    enc = b"3;ext=1\r\nxyz\r\n" + chunked(*pieces)
    c.send(head + enc[:7])
    time.sleep(0.05)
    c.send(enc[7:5000])
    time.sleep(0.05)
    c.send(enc[5000:])
    r = c.read_response()
    check_eq(r.status, 200, "status")
    line, hdrs, got = parse_echo(r.body)
    want = b"xyz" + b"".join(pieces)
    check_eq(got, want, "decoded body the backend received")
    check_eq([v.lower() for v in hget(hdrs, "transfer-encoding")], ["chunked"],
             "forwarded transfer-encoding")
    check_eq(hget(hdrs, "content-length"), [], "forwarded content-length")


@case()
def empty_bodies(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", body=b""))
    r = c.read_response()
    line, hdrs, got = parse_echo(r.body)
    check_eq(got, b"", "empty body")
    check_eq(hget(hdrs, "content-length"), ["0"], "content-length: 0 forwarded")
    c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "empty chunked body")
    check_eq(parse_echo(r.body)[2], b"", "empty chunked body arrives empty")


@case(timeout=240, exclusive=True)
def upload_1gib_bounded_memory(ctx):
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="60s"))
    c = ctx.connect(fp.port, timeout=120)
    c.send(build_request("POST", "/sink", [("Content-Length", str(BIG))]))
    zero = bytes(1 << 20)
    t0 = time.monotonic()
    try:
        for _ in range(BIG >> 20):
            c.send(zero)
    except OSError as e:
        r = None
        try:
            r = c.read_response(timeout=2)
        except Exception:
            pass
        check(False, "upload failed: %s (response %r)" % (e, r))
    r = c.read_response(timeout=60)
    took = time.monotonic() - t0
    check_eq((r.status, r.body), (200, b"%d\n" % BIG), "sink answer")
    hwm = _check_rss(fp, "a %d MiB upload" % (BIG >> 20))
    ctx.note("upload %d MiB in %.1fs, fnproxy VmHWM %d KiB" % (BIG >> 20, took, hwm))


@case(timeout=240, exclusive=True)
def download_1gib_bounded_memory(ctx):
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="60s"))
    c = ctx.connect(fp.port, timeout=120)
    t0 = time.monotonic()
    c.send(build_request("GET", "/bytes/%d" % BIG))
    r = c.read_head(timeout=30)
    check_eq(r.status, 200, "status")
    n = c.count_body(r, timeout=180)
    took = time.monotonic() - t0
    check_eq(n, BIG, "bytes received")
    hwm = _check_rss(fp, "a %d MiB download" % (BIG >> 20))
    ctx.note("download %d MiB in %.1fs, fnproxy VmHWM %d KiB" % (BIG >> 20, took, hwm))
    # The connection is still good after it.
    c.send(build_request("GET", "/"))
    check_eq(c.read_response().status, 200, "request after the download")


@case(timeout=120)
def download_chunked_and_slow_reader(ctx):
    """A chunked answer passes through, and a client that reads slowly does
    not make fnproxy buffer the whole answer."""
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="30s"))
    c = ctx.connect(fp.port, timeout=60)
    c.send(build_request("GET", "/chunked/%d" % (10 << 20)))
    r = c.read_head()
    check_eq(c.count_body(r, timeout=60), 10 << 20, "chunked body bytes")
    n = 200 << 20
    c.send(build_request("GET", "/bytes/%d" % n))
    r = c.read_head()
    time.sleep(2)  # fnproxy must stop reading the backend meanwhile
    _check_rss(fp, "a client stalled on a %d MiB answer" % (n >> 20))
    check_eq(c.count_body(r, timeout=60), n, "bytes after the stall")


@case()
def close_delimited_answer_is_chunked(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/close-delimited/100000"))
    r = c.read_response(timeout=10)
    check_eq(r.status, 200, "status")
    check_eq((r.header("transfer-encoding") or "").lower(), "chunked",
             "close-delimited answer re-framed as chunked for HTTP/1.1")
    check_eq(len(r.body), 100000, "body bytes")
    check_eq(r.body[:26], b"abcdefghijklmnopqrstuvwxyz", "body content")
    # Re-framed, the client connection can stay open.
    c.send(build_request("GET", "/"))
    check_eq(c.read_response().status, 200, "request after it on the same connection")


@case()
def expect_100_continue(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                           ("Content-Length", "11")]))
    r = c.read_head(timeout=5)
    check_eq((r.status, r.version), (100, "HTTP/1.1"), "interim response")
    c.send(b"hello world")
    r = c.read_response(timeout=10)
    check_eq(r.status, 200, "final status")
    line, hdrs, got = parse_echo(r.body)
    check_eq(got, b"hello world", "body")
    check_eq(hget(hdrs, "expect"), [], "Expect forwarded to the function")
    check(b"expect:" not in b.record().lower(), "the record has an Expect header")


@case()
def expect_100_continue_over_max_body(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], max_body="1MiB"))
    c = ctx.connect(fp.port)
    c.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                           ("Content-Length", str(2 << 20))]))
    r = c.read_head(timeout=5)
    check(r.status != 100, "fnproxy said 100 Continue to a body over max_body")
    c._read_body(r, time.monotonic() + 5, False, 1 << 20)
    check_fnproxy_error(r, 413, "body_too_large")
    check_eq(settle(b), b"", "bytes the backend received")


@case()
def request_body_streams_before_complete(ctx):
    """The function starts receiving a large body before the client has
    sent all of it: fnproxy streams, it does not collect the body first."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="10s"))
    c = ctx.connect(fp.port)
    n = 8 << 20
    c.send(build_request("POST", "/sink", [("Content-Length", str(n))]))
    c.send(bytes(4 << 20))
    got = 0
    end = time.monotonic() + 5
    while time.monotonic() < end:
        got = len(b.record())
        if got > (2 << 20):
            break
        time.sleep(0.05)
    check(got > (2 << 20), "backend got %d bytes of the first 4 MiB of a body" % got)
    s = Sender(c, [bytes(4 << 20)])
    s.start()
    r = c.read_response(timeout=20)
    check_eq(r.body, b"%d\n" % n, "sink count")
