"""What the function receives: hop-by-hop headers removed, X-Forwarded-*,
x-request-id, Host unchanged; and routing by host, path and method."""

import re

from harness import build_request, case, check, check_eq, chunked, hget, parse_echo, std_config

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-connection", "proxy-authorization", "proxy-authenticate"]


def _echo(ctx, fp, headers, host="svc.example:8080", method="GET", body=None):
    c = ctx.connect(fp.port)
    c.send(build_request(method, "/echo", headers, body=body, host=host))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    line, hdrs, got = parse_echo(r.body)
    return r, line, hdrs, got


@case()
def hop_by_hop_removed(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    r, line, hdrs, _ = _echo(ctx, fp, [
        ("Connection", "keep-alive, X-Named-Hop"),
        ("X-Named-Hop", "drop me"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Proxy-Authenticate", "Basic"),
        ("X-Keep", "yes"),
        ("Accept", "text/plain"),
    ])
    for h in HOP_BY_HOP + ["x-named-hop"]:
        check_eq(hget(hdrs, h), [], "forwarded %s" % h)
    check_eq(hget(hdrs, "x-keep"), ["yes"], "end-to-end header kept")
    check_eq(hget(hdrs, "accept"), ["text/plain"], "accept kept")
    check_eq(hget(hdrs, "host"), ["svc.example:8080"], "host forwarded unchanged")
    check_eq(line, "GET /echo HTTP/1.1", "request line")


@case()
def forwarded_headers_and_request_id(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    r, line, hdrs, _ = _echo(ctx, fp, [])
    check_eq(hget(hdrs, "x-forwarded-for"), ["127.0.0.1"], "x-forwarded-for")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["http"], "x-forwarded-proto")
    rid = hget(hdrs, "x-request-id")
    check(len(rid) == 1 and UUID4.match(rid[0]), "generated x-request-id %r" % rid)
    check_eq(r.header("x-request-id"), rid[0], "x-request-id on the response")
    # A second request gets a different id.
    r2, _, hdrs2, _ = _echo(ctx, fp, [])
    check(hget(hdrs2, "x-request-id") != rid, "request ids differ")
    # Existing values: X-Forwarded-For is appended to, -Proto replaced,
    # x-request-id kept.
    r, line, hdrs, _ = _echo(ctx, fp, [("X-Forwarded-For", "203.0.113.7"),
                                       ("X-Forwarded-Proto", "https"),
                                       ("X-Request-Id", "client-id-42")])
    check_eq(hget(hdrs, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"],
             "x-forwarded-for appended")
    check_eq(hget(hdrs, "x-forwarded-proto"), ["http"], "x-forwarded-proto replaced")
    check_eq(hget(hdrs, "x-request-id"), ["client-id-42"], "client's x-request-id kept")
    check_eq(r.header("x-request-id"), "client-id-42", "kept x-request-id on the response")


@case()
def chunked_forwarded_bytes_in_record(ctx):
    """The exact bytes forwarded for a chunked request: head without the
    client's framing quirks, then a well-formed chunked body."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(build_request("PUT", "/echo?x=1", [("Transfer-Encoding", "chunked"),
                                              ("X-Tag", "t1")]) +
           b"4;name=val\r\nwxyz\r\n" + chunked(b"12345"))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    rec = b.record()
    i = rec.find(b"\r\n\r\n")
    head = rec[:i].decode("latin-1").split("\r\n")
    check_eq(head[0], "PUT /echo?x=1 HTTP/1.1", "request line in the record")
    names = [l.split(":", 1)[0].lower() for l in head[1:]]
    check_eq(names.count("transfer-encoding"), 1, "one transfer-encoding header")
    check("content-length" not in names, "no content-length alongside chunked")
    # Decode the forwarded body strictly.
    body, rest = rec[i + 4:], b""
    out = b""
    while True:
        j = body.find(b"\r\n")
        check(j > 0, "chunk size line in %r" % body[:50])
        size = int(body[:j].split(b";")[0], 16)
        body = body[j + 2:]
        if size == 0:
            rest = body
            break
        out += body[:size]
        check_eq(body[size:size + 2], b"\r\n", "CRLF after a chunk")
        body = body[size + 2:]
    check_eq(out, b"wxyz12345", "decoded forwarded body")
    check_eq(rest, b"\r\n", "end of the chunked body (no trailers)")


ROUTING = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - { name: public, listen: 127.0.0.1:$PPORT }
functions:
  - name: fa
    endpoints: [127.0.0.1:$A]
    ingress:
      routes:
        - { name: host_exact, match: { listener: public, host: api.example.com, path_prefix: / } }
        - { name: host_wild, match: { listener: public, host: "*.wild.test", path_prefix: / } }
        - { name: post_v1, match: { listener: public, path_prefix: /api/v1, methods: [POST] } }
  - name: fb
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: api, match: { listener: public, path_prefix: /api } }
        - { name: v1, match: { listener: public, path_prefix: /api/v1 } }
        - { name: exact_in_wild, match: { listener: public, host: exact.wild.test, path_prefix: / } }
        - { name: root, match: { listener: public, path_prefix: / } }
"""


@case()
def routing_precedence(ctx):
    a = ctx.start_backend(name="A")
    b = ctx.start_backend(name="B")
    fp = ctx.start_fnproxy(ROUTING, A=a.port, B=b.port)
    cases = [
        # (method, path, host, backend, why)
        ("GET", "/api/x", "api.example.com", "A", "exact host beats a longer prefix"),
        ("GET", "/", "API.Example.COM.:8443", "A", "host compare ignores case, dot, port"),
        ("GET", "/api/x", "foo.wild.test", "A", "wildcard host beats no host"),
        ("GET", "/", "exact.wild.test", "B", "exact host beats wildcard"),
        ("GET", "/api/x", "other.test", "B", "longest prefix /api"),
        ("GET", "/x", "other.test", "B", "root"),
        ("POST", "/api/v1/items", "other.test", "A", "method route beats same prefix"),
        ("GET", "/api/v1/items", "other.test", "B", "no method match: /api/v1 any method"),
        ("PUT", "/api/v1/items", "other.test", "B", "PUT is not POST"),
    ]
    for method, path, host, want, why in cases:
        c = ctx.connect(fp.port)
        c.send(build_request(method, path, host=host, body=b"" if method != "GET" else None))
        r = c.read_response()
        check_eq(r.status, 200, "%s %s Host %s status" % (method, path, host))
        check_eq(r.header("x-backend"), want, "%s %s Host %s (%s)" % (method, path, host, why))
