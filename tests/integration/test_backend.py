"""fnbackend on its own: the other cases trust what it answers and records,
so its behaviour is pinned down here first (and these exercise the harness
without fnproxy)."""

import signal
import time

from harness import (SAN, Client, build_request, case, check, check_eq, chunked, parse_echo,
                     proc_status, request)


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
