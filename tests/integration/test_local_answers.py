"""What fnproxy makes up itself: its answers keep a keep-alive connection in
step (an answer to HEAD carries the length of its JSON body but not the
body), and an HTTP/1.0 request without Host reaches the function, which
fnproxy speaks HTTP/1.1 to, with one."""

from harness import case, check, check_eq, std_config


@case()
def head_answered_locally_without_body(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(b"HEAD /echo HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n"
           b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n")
    r = c.read_response(head=True)
    check_eq(r.status, 417, "status of the HEAD")
    check(int(r.header("content-length")) > 0, "content-length of the JSON body")
    check_eq(r.header("x-fnproxy-error"), "expectation_failed", "x-fnproxy-error")
    r = c.read_response()
    check_eq(r.status, 201, "the next response on the connection")
    check_eq(r.body, b"status 201\n", "its body")


@case()
def http10_without_host_gets_one_upstream(ctx):
    b = ctx.start_backend(record=True)
    fp = ctx.start_fnproxy(std_config([b.addr]))
    c = ctx.connect(fp.port)
    c.send(b"GET /echo HTTP/1.0\r\nAccept: */*\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "status")
    head = r.body.split(b"\r\n\r\n", 1)[0].decode()
    check(head.startswith("GET /echo HTTP/1.1\r\n"), "forwarded as HTTP/1.1: %r" % head)
    check("\r\nhost: 127.0.0.1:%d" % fp.port in head,
          "the function gets the address the client reached as Host: %r" % head)
