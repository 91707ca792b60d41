"""Strict request-target and Host rules (RFC 9112 section 3.2, RFC 3986
authority grammar; the choices are in proxy/http1.h and the README, "What
fnproxy does to requests"), end to end on ingress and on the egress
listener: every bad form gets a 400 from fnproxy and closes, and nothing
behind fnproxy sees a byte of it; the valid forms keep working.

Requests are raw bytes (curl would normalise most of these). Each table
runs on one fnproxy, one fresh connection per input, and lists every
input answered wrongly before failing; the backend's record must stay
empty for the whole table. test_reject.py covers the framing attacks and
test_egress.py the egress canonicalisation (numeric hosts, userinfo and
percent-encoding in absolute-form); this file does not repeat them."""

import time

from harness import (build_request, case, check, check_eq, check_fnproxy_error, fail, hget,
                     parse_echo, raw_exchange, request, settle, std_config)
from test_egress import NS, connect_tunnel, dest, start_egress

# Host values (raw bytes) refused wherever they arrive.
BAD_HOSTS = [
    b"u@test.local", b"u:p@test.local:80", b"test.local:80@evil", b"test.local:80:80",
    b"test.local:1:2", b"a b", b"a\tb", b"a\x01b", b"a\x7fb", b"", b"   ", b"test.local/p",
    b"test.local/", b"test.local?", b"test.local?q", b"test.local#f", b"test.local\\x",
    b"[::1", b"[::1:80", b"[v1.fe]", b"[v1.fe]:80", b"[fe80::1%25eth0]", b"[test.local]",
    b"[]", b"::1", b"test.local:x", b"test.local:65536", b"test.local:", b"test.local:0",
    b"test.local:080", b"test.local:+80", b"a..b", b".", b"test.local..", b".test.local",
    b"test%2elocal", b"a,b", b"a;b", b"a!b", b"caf\xc3\xa9.local", b"test.local\x80",
]

# Whole request heads refused on ingress (name -> bytes).
H = b"Host: test.local\r\n"
BAD_INGRESS = {
    "two_hosts": b"GET /echo HTTP/1.1\r\n" + H + b"Host: test.local\r\n\r\n",
    "missing_host": b"GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "empty_host_http10": b"GET /echo HTTP/1.0\r\nHost:\r\n\r\n",
    "absolute_form": b"GET http://test.local/echo HTTP/1.1\r\n" + H + b"\r\n",
    "authority_form_get": b"GET test.local:80 HTTP/1.1\r\n" + H + b"\r\n",
    "connect_authority": b"CONNECT test.local:80 HTTP/1.1\r\n" + H + b"\r\n",
    "connect_origin": b"CONNECT /echo HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk_get": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk_post": b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
    "asterisk_more": b"OPTIONS *x HTTP/1.1\r\n" + H + b"\r\n",
    "no_slash": b"GET echo HTTP/1.1\r\n" + H + b"\r\n",
    "query_only": b"GET ?x HTTP/1.1\r\n" + H + b"\r\n",
    "fragment": b"GET /echo#x HTTP/1.1\r\n" + H + b"\r\n",
    "fragment_in_query": b"GET /echo?a#b HTTP/1.1\r\n" + H + b"\r\n",
    "space": b"GET /ec ho HTTP/1.1\r\n" + H + b"\r\n",
    "tab": b"GET /ec\tho HTTP/1.1\r\n" + H + b"\r\n",
    "ctl": b"GET /ec\x01ho HTTP/1.1\r\n" + H + b"\r\n",
    "del": b"GET /ec\x7fho HTTP/1.1\r\n" + H + b"\r\n",
    "nul": b"GET /ec\x00ho HTTP/1.1\r\n" + H + b"\r\n",
    "non_ascii": b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n",
    "backslash": b"GET /echo\\..\\admin HTTP/1.1\r\n" + H + b"\r\n",
    "backslash_query": b"GET /echo?a\\b HTTP/1.1\r\n" + H + b"\r\n",
    "pct_bad": b"GET /echo%zz HTTP/1.1\r\n" + H + b"\r\n",
    "pct_short": b"GET /echo%4 HTTP/1.1\r\n" + H + b"\r\n",
    "pct_lone": b"GET /echo?q=% HTTP/1.1\r\n" + H + b"\r\n",
    "quote": b"GET /a\"b HTTP/1.1\r\n" + H + b"\r\n",
    "angle": b"GET /<script> HTTP/1.1\r\n" + H + b"\r\n",
    "brace_in_path": b"GET /a{b} HTTP/1.1\r\n" + H + b"\r\n",
    "pipe_in_path": b"GET /a|b HTTP/1.1\r\n" + H + b"\r\n",
}


def _wrong(what, r, closed, err, codes=("bad_request",)):
    """None when r is fnproxy's own 400 with one of codes and a close."""
    if r is None:
        return "%s: no response (%s)" % (what, err)
    try:
        check(r.header("x-fnproxy-error") in codes, "x-fnproxy-error %r, want one of %r"
              % (r.header("x-fnproxy-error"), codes))
        check_fnproxy_error(r, 400, r.header("x-fnproxy-error"), close=True)
        check(closed, "connection left open")
    except AssertionError as e:
        return "%r: %s" % (what, e)
    return None


def _run_table(port, items, codes=("bad_request",)):
    wrong = []
    for what, data in items:
        r, closed, err = raw_exchange(port, data)
        w = _wrong(what, r, closed, err, codes)
        if w:
            wrong.append(w)
    return wrong


def _host_request(host, target=b"/echo", method=b"GET"):
    return method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


@case(timeout=120)
def ingress_bad_host(ctx):
    """Every Host value outside uri-host [":" port] (as fnproxy takes it)
    is a 400 bad_request, in HTTP/1.1 and HTTP/1.0; nothing forwarded."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    items = [(h, _host_request(h)) for h in BAD_HOSTS]
    items += [(b"1.0 " + h, b"GET /echo HTTP/1.0\r\nHost: " + h + b"\r\n\r\n")
              for h in BAD_HOSTS]
    wrong = _run_table(fp.port, items)
    check_eq(settle(b), b"", "bytes the backend received")
    check(not wrong, "not 400 bad_request + close:\n  " + "\n  ".join(wrong))


@case()
def ingress_bad_target(ctx):
    """Request targets other than origin-form (or "*" with OPTIONS), with
    bytes RFC 3986 does not allow, or with a fragment: 400 bad_request."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    wrong = _run_table(fp.port, sorted(BAD_INGRESS.items()))
    check_eq(settle(b), b"", "bytes the backend received")
    check(not wrong, "not 400 bad_request + close:\n  " + "\n  ".join(wrong))


@case()
def ingress_valid_forms(ctx):
    """What the rules accept reaches the function unchanged: names in any
    case, with or without a port, a trailing dot, IPv4 and IPv6 literals,
    unreserved bytes; targets with sub-delims, ':' and '@', percent-encoding,
    and in the query what browsers send raw."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    hosts = ["test.local", "TEST.Local", "test.local:8080", "test.local.", "test.local.:80",
             "127.0.0.1", "127.0.0.1:65535", "[::1]", "[::1]:8080", "[2001:DB8::1]:443",
             "[::ffff:127.0.0.1]", "my_fn-1.svc~x"]
    for host in hosts:
        r = request(fp.port, "GET", "/echo", host=host)
        check_eq(r.status, 200, "Host %s: status" % host)
        line, hdrs, _ = parse_echo(r.body)
        check_eq(hget(hdrs, "host"), [host], "Host %s as forwarded" % host)
    targets = ["/echo", "/x/a:b@c!$&'()*+,;=-._~", "/x/%41%2F%e9", "//x", "/x?q=/a?b:c@d",
               "/x?a[]=1&b={x}|^`"]
    for t in targets:
        r = request(fp.port, "GET", t)
        check_eq(r.status, 200, "%s: status" % t)
    rec = settle(b)
    for t in targets:
        check(b"GET " + t.encode() + b" HTTP/1.1\r\n" in rec, "%s: not forwarded as it came" % t)
    r = request(fp.port, "OPTIONS", "*")
    check(r.status != 400, "OPTIONS *: %d %r" % (r.status, r.body[:200]))


@case(timeout=120, **NS)
def egress_bad_host(ctx):
    """On the egress listener the Host is replaced by the target's authority
    (RFC 9112 3.2.2), but a bad one is still a 400 (3.2: "a Host header
    field with an invalid field value"), for absolute-form and CONNECT."""
    api = dest(ctx, "api", "127.0.1.1")
    fp = start_egress(ctx)
    items = [(h, _host_request(h, b"http://api.test:8080/echo")) for h in BAD_HOSTS]
    items += [(b"CONNECT " + h, _host_request(h, b"api.test:8080", b"CONNECT"))
              for h in BAD_HOSTS]
    items += [("two hosts", b"GET http://api.test:8080/echo HTTP/1.1\r\nHost: api.test:8080\r\n"
                            b"Host: api.test:8080\r\n\r\n"),
              ("missing host", b"GET http://api.test:8080/echo HTTP/1.1\r\n\r\n")]
    wrong = _run_table(fp.eport, items)
    time.sleep(0.3)
    check_eq(api.record(), b"", "bytes api.test received")
    check(not wrong, "not 400 bad_request + close:\n  " + "\n  ".join(wrong))


@case(**NS)
def egress_bad_target(ctx):
    """Targets refused on the egress listener: authority-form but for
    CONNECT, CONNECT but in authority-form, "*", and in absolute-form an
    authority outside the grammar (two ports, an empty or non-decimal
    port, an unclosed '[', IPvFuture) or a path or query with bytes RFC
    3986 does not allow (backslash, '|', '"', bad percent-encoding). 400
    bad_request (the head's check) or bad_target (the target's
    canonicalisation); nothing forwarded, no tunnel."""
    api = dest(ctx, "api", "127.0.1.1")
    fp = start_egress(ctx)
    hh = b"Host: api.test:8080\r\n"
    heads = [
        b"GET api.test:8080", b"OPTIONS *", b"GET *", b"CONNECT /echo", b"CONNECT *",
        b"CONNECT http://api.test:8080/", b"CONNECT api.test:8080/x", b"CONNECT [::1",
        b"CONNECT [v1.fe]:8080", b"CONNECT api.test:", b"CONNECT api.test:x",
        b"GET http://api.test:8080:80/echo", b"GET http://api.test:/echo",
        b"GET http://api.test:x/echo", b"GET http://[::1/echo", b"GET http://[v1.fe]:8080/echo",
        b"GET http://api.test:8080/ec\\ho", b"GET http://api.test:8080/echo?a\\b",
        b"GET http://api.test:8080/a|b", b"GET http://api.test:8080/a\"b",
        b"GET http://api.test:8080/echo%zz", b"GET http://api.test:8080/echo?q=%",
        b"GET http://api.test:8080/echo#f", b"GET http://api.test:8080/<x>",
    ]
    items = [(h, h + b" HTTP/1.1\r\n" + hh + b"\r\n") for h in heads]
    wrong = _run_table(fp.eport, items, codes=("bad_request", "bad_target"))
    time.sleep(0.3)
    check_eq(api.record(), b"", "bytes api.test received")
    check(not wrong, "not 400 + close:\n  " + "\n  ".join(wrong))


@case(**NS)
def egress_valid_forms(ctx):
    """Absolute-form in any case, with the function's Host disagreeing (it
    is replaced), an IPv4 literal, a query with what browsers send raw;
    CONNECT in authority-form."""
    api = dest(ctx, "api", "127.0.1.1")
    fp = start_egress(ctx)
    for url, host, want_host in (
            ("http://api.test:8080/echo", "api.test:8080", "api.test:8080"),
            ("http://API.Test:8080/echo", "api.test:8080", "api.test:8080"),
            ("http://api.test.:8080/echo", "api.test.:8080", "api.test:8080"),
            ("HTTP://api.test:8080/echo", "api.test", "api.test:8080"),
            ("http://api.test:8080/echo", "other.test", "api.test:8080"),
            ("http://127.0.1.1:8080/echo", "127.0.1.1:8080", "127.0.1.1:8080"),
            ("http://api.test:8080/echo?a[]=1&b=%41|{}", "api.test:8080", "api.test:8080")):
        r = request(fp.eport, "GET", url, host=host)
        check_eq(r.status, 200, "%s (Host %s): status" % (url, host))
        line, hdrs, _ = parse_echo(r.body)
        check_eq(hget(hdrs, "host"), [want_host], "%s: Host forwarded" % url)
    c, r = connect_tunnel(ctx, fp.eport, "api.test:8080")
    check_eq(r.status, 200, "CONNECT api.test:8080")
    c.send(build_request("GET", "/echo", host="api.test:8080"))
    r = c.read_response()
    check_eq(r.status, 200, "GET through the tunnel")
