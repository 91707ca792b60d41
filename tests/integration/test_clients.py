"""Real clients through fnproxy: curl."""

import os

from harness import case, check, check_eq, curl, parse_echo, hget, std_config


@case()
def curl_get(ctx):
    b = ctx.start_backend(name="fn")
    fp = ctx.start_fnproxy(std_config([b.addr]))
    p = curl(["-i", "http://127.0.0.1:%d/hello" % fp.port])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    out = p.stdout.replace(b"\r\n", b"\n")
    check(out.startswith(b"HTTP/1.1 200"), "status line: %r" % out[:40])
    check(out.endswith(b"\n\nhello from fn\n"), "body: %r" % out[-40:])
    check(b"\nx-request-id: " in out.lower(), "x-request-id on the response")


@case()
def curl_post_form(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    p = curl(["-d", "name=fn&x=1", "http://127.0.0.1:%d/echo" % fp.port])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    line, hdrs, body = parse_echo(p.stdout)
    check_eq(line, "POST /echo HTTP/1.1", "request line")
    check_eq(body, b"name=fn&x=1", "body")
    check_eq(hget(hdrs, "content-length"), ["11"], "content-length")


@case()
def curl_upload_chunked(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="10s"))
    src = ctx.path("upload.bin")
    data = os.urandom(300000)
    with open(src, "wb") as f:
        f.write(data)
    p = curl(["-T", src, "-H", "Transfer-Encoding: chunked",
              "http://127.0.0.1:%d/echo" % fp.port])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    line, hdrs, body = parse_echo(p.stdout)
    check(line.startswith("PUT /echo"), "request line %r" % line)
    check_eq([v.lower() for v in hget(hdrs, "transfer-encoding")], ["chunked"],
             "forwarded transfer-encoding")
    check(body == data, "uploaded bytes differ (%d vs %d)" % (len(body), len(data)))
    # And a 20 MiB upload to /sink.
    big = ctx.path("big.bin")
    with open(big, "wb") as f:
        f.truncate(20 << 20)
    p = curl(["-T", big, "-H", "Transfer-Encoding: chunked",
              "http://127.0.0.1:%d/sink" % fp.port])
    check_eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode().strip())
    check_eq(p.stdout, b"%d\n" % (20 << 20), "sink count")
