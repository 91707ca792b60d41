"""Connection handling: keep-alive and upstream reuse, pipelining, HEAD,
balancing over endpoints."""

from harness import build_request, case, check, check_eq, request, std_config


@case()
def keepalive_100_requests_pool_reuse(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    conns = set()
    for i in range(100):
        c.send(build_request("GET", "/echo?i=%d" % i))
        r = c.read_response()
        check_eq(r.status, 200, "request %d" % i)
        check(r.body.startswith(b"GET /echo?i=%d HTTP/1.1\r\n" % i),
              "response %d answers request %d: %r" % (i, i, r.body[:40]))
        conns.add(r.header("x-backend-conn"))
    check(c.is_open(), "client connection still open after 100 requests")
    check(len(conns) <= 10, "100 sequential requests used %d backend connections" % len(conns))


@case()
def pipelined_10_in_one_write(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    paths = ["/echo?p=0", "/delay/50", "/status/201", "/echo?p=3", "/delay/50", "/status/201",
             "/echo?p=6", "/status/201", "/delay/50", "/echo?p=9"]
    c = ctx.connect(fp.port)
    c.send(b"".join(build_request("GET", p) for p in paths))
    for i, p in enumerate(paths):
        r = c.read_response(timeout=10)
        if p.startswith("/echo"):
            check_eq(r.status, 200, "response %d status" % i)
            check(r.body.startswith(("GET %s HTTP/1.1\r\n" % p).encode()),
                  "response %d out of order: %r" % (i, r.body[:40]))
        elif p.startswith("/delay"):
            check_eq((r.status, r.body), (200, b"delayed\n"), "response %d" % i)
        else:
            check_eq((r.status, r.body), (201, b"status 201\n"), "response %d" % i)
    check(c.is_open(), "connection open after the pipeline")
    check_eq(bytes(c.buf), b"", "nothing after the 10 responses")


@case()
def pipelined_post_bodies(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    reqs = []
    for i in range(5):
        body = (b"body-%d-" % i) * (i * 100 + 1)
        reqs.append((body, build_request("POST", "/echo?b=%d" % i, body=body)))
    c = ctx.connect(fp.port)
    c.send(b"".join(r for _, r in reqs))
    for i, (body, _) in enumerate(reqs):
        r = c.read_response(timeout=10)
        check_eq(r.status, 200, "response %d" % i)
        check(r.body.endswith(b"\r\n\r\n" + body), "response %d carries body %d" % (i, i))


@case()
def head_request(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("HEAD", "/bytes/100"))
    r = c.read_response(head=True)
    check_eq(r.status, 200, "HEAD status")
    check_eq(r.header("content-length"), "100", "HEAD content-length")
    c.send(build_request("GET", "/status/202"))
    r = c.read_response()
    # If fnproxy had sent a body for the HEAD, those bytes would be read here.
    check_eq((r.status, r.body), (202, b"status 202\n"), "GET after HEAD")
    check(c.is_open(), "connection still usable")


@case()
def balance_over_two_backends(ctx):
    b1 = ctx.start_backend(name="one")
    b2 = ctx.start_backend(name="two")
    fp = ctx.start_fnproxy(std_config([b1.addr, b2.addr]))
    seen = {}
    conns = [ctx.connect(fp.port) for _ in range(10)]
    for i in range(200):
        c = conns[i % 10]
        c.send(build_request("GET", "/"))
        r = c.read_response()
        check_eq(r.status, 200, "request %d" % i)
        name = r.header("x-backend")
        seen[name] = seen.get(name, 0) + 1
    check(set(seen) == {"one", "two"}, "backends that answered: %r" % seen)


@case()
def http10_client(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/echo", version="HTTP/1.0"))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check(r.version in ("HTTP/1.0", "HTTP/1.1"), "version %r" % r.version)
    check(c.wait_closed(), "HTTP/1.0 without keep-alive: closed after the response")
    # A close-delimited answer to an HTTP/1.0 client: body to EOF.
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/close-delimited/5000", version="HTTP/1.0"))
    r = c.read_response()
    check_eq(len(r.body), 5000, "close-delimited body for HTTP/1.0")
    check(r.header("transfer-encoding") is None, "no chunked framing for HTTP/1.0")
    # A chunked answer from the function must be re-framed for HTTP/1.0:
    # transfer-encoding is hop-by-hop, and a 1.0 client cannot decode it.
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/chunked/5000", version="HTTP/1.0"))
    r = c.read_response()
    check(r.header("transfer-encoding") is None,
          "transfer-encoding %r sent to an HTTP/1.0 client" % r.header("transfer-encoding"))
    check_eq(len(r.body), 5000, "chunked answer's bytes for HTTP/1.0")
    check_eq(r.body[:3], b"abc", "body starts with the data, not a chunk size")


@case()
def client_connection_close(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/", [("Connection", "close")]))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check_eq((r.header("connection") or "").lower(), "close", "connection header")
    check(c.wait_closed(), "closed after Connection: close")
    r = request(fp.port, "GET", "/")
    check_eq(r.body, b"hello from backend\n", "hello")
