"""W3C Trace Context (README "Trace context"): a valid traceparent keeps its
trace id and sampled flag, each attempt to the function is a new span of
fnproxy's (the function's parent-id), a request without one starts a
trace, an invalid one is replaced and never forwarded, tracestate passes
only with a valid traceparent, and the access log says the trace id. The
egress case runs in test_egress's network namespace.

The function is fnbackend: /echo and the /fail paths echo the head they
got, and --record keeps every attempt's head (tests/backend/README.md).
"""

import json
import re

import test_egress as eg  # its namespace, destinations and helpers
from harness import case, check, check_eq, hget, parse_echo, request
from test_observability import wait_lines
from test_resilience import attempts, rcfg

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TP_LINE_RE = re.compile(rb"\r\ntraceparent: ([^\r]*)\r\n", re.I)


def sent_traceparent(hdrs, what):
    """The one traceparent the function got -> (trace id, span id, flags)."""
    got = hget(hdrs, "traceparent")
    check_eq(len(got), 1, "%s: traceparent headers the function got (%r)" % (what, got))
    m = TP_RE.match(got[0])
    check(m is not None, "%s: traceparent %r is not 00-<32 hex>-<16 hex>-<2 hex>" % (what, got[0]))
    trace, span, flags = m.groups()
    check(trace != "0" * 32 and span != "0" * 16, "%s: an all-zero id: %r" % (what, got[0]))
    return trace, span, flags


def echo(port, headers, what, path="/echo"):
    r = request(port, "GET", path, headers=headers)
    check(r.status == 200, "%s: %r" % (what, r))
    return parse_echo(r.body)[1]


@case()
def kept(ctx):
    """A valid traceparent: the function gets the same trace id, a parent
    id that is fnproxy's span (not the client's, new for each request), the
    sampled flag; reserved flag bits cleared; a later version is parsed as
    the spec says and sent on as 00; tracestate passes untouched."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr]))
    spans = set()
    for flags in ("01", "00"):
        for _ in range(2):
            hdrs = echo(fp.port, [("traceparent", "00-%s-%s-%s" % (TID, PID, flags)),
                                  ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7")],
                        "flags %s" % flags)
            trace, span, got_flags = sent_traceparent(hdrs, "flags %s" % flags)
            check_eq((trace, got_flags), (TID, flags), "trace id and flags kept")
            check(span != PID, "the function's parent id is the client's span: %s" % span)
            spans.add(span)
            check_eq(hget(hdrs, "tracestate"), ["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"],
                     "tracestate passed untouched")
    check_eq(len(spans), 4, "a new span per request")

    # Name in any case; reserved flag bits are cleared (level 1).
    hdrs = echo(fp.port, [("TraceParent", "00-%s-%s-03" % (TID, PID)),
                          ("TraceState", "a=1"), ("tracestate", "b=2")], "flags 03")
    check_eq(sent_traceparent(hdrs, "flags 03")[::2], (TID, "01"), "flags 03 sent as 01")
    check_eq(hget(hdrs, "tracestate"), ["a=1", "b=2"], "several tracestate headers, in order")

    # A later version: the 00 fields are taken, the rest ignored.
    hdrs = echo(fp.port, [("traceparent", "cc-%s-%s-01-future-fields" % (TID, PID)),
                          ("tracestate", "v=1")], "version cc")
    check_eq(sent_traceparent(hdrs, "version cc")[::2], (TID, "01"), "version cc sent on as 00")
    check_eq(hget(hdrs, "tracestate"), ["v=1"], "tracestate with a later version")


@case()
def generated_when_absent(ctx):
    """No traceparent: fnproxy starts a trace (random id, flags 00), a new
    one per request; a tracestate without traceparent is dropped; the
    response does not carry the trace."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr]))
    traces = set()
    for i in range(4):
        r = request(fp.port, "GET", "/echo", headers=[("tracestate", "orphan=1")] if i else [])
        check(r.status == 200, "request %d: %r" % (i, r))
        hdrs = parse_echo(r.body)[1]
        trace, span, flags = sent_traceparent(hdrs, "request %d" % i)
        check_eq(flags, "00", "flags of a trace fnproxy starts")
        check_eq(hget(hdrs, "tracestate"), [], "a tracestate without traceparent")
        check(r.header("traceparent") is None, "traceparent in the response: %r" % r.headers)
        traces.add(trace)
    check_eq(len(traces), 4, "a new trace per request")


MALFORMED = [
    "",
    "garbage",
    "00-%s-%s-0" % (TID, PID),                          # short
    "00-%s-%s-010" % (TID, PID),                        # long
    "00-%s-%s-01-extra" % (TID, PID),                   # version 00 has no more fields
    "00-%s-%s-01" % (TID.upper(), PID),                 # upper-case hex
    "00-%s-%s-01" % (TID, PID.upper()),
    "00-%s-%s-01" % ("0" * 32, PID),                    # all-zero trace id
    "00-%s-%s-01" % (TID, "0" * 16),                    # all-zero parent id
    "ff-%s-%s-01" % (TID, PID),                         # version ff
    "cc-%s-%s-01.x" % (TID, PID),                       # later version, no dash after flags
    "00_%s_%s_01" % (TID, PID),
    "00-%sg-%s-01" % (TID[:-1], PID),                   # not hex
]


@case()
def replaced_when_malformed(ctx):
    """Every malformed traceparent, and two valid ones at once, is replaced
    by a new trace: the function never sees the value sent, and the
    tracestate that came with it is dropped."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr]))
    cases = [[("traceparent", v), ("tracestate", "bad=1")] for v in MALFORMED]
    cases.append([("traceparent", "00-%s-%s-01" % (TID, PID)),
                  ("traceparent", "00-%s-%s-01" % ("1" * 32, PID)),
                  ("tracestate", "bad=1")])
    for hs in cases:
        what = "traceparent %r" % [v for k, v in hs if k == "traceparent"]
        hdrs = echo(fp.port, hs, what)
        trace, span, flags = sent_traceparent(hdrs, what)
        check(trace not in (TID, "1" * 32, TID.lower()) and span != PID,
              "%s: the trace was kept: %r" % (what, hget(hdrs, "traceparent")))
        check_eq(flags, "00", "%s: flags of the new trace" % what)
        check_eq(hget(hdrs, "tracestate"), [], "%s: tracestate" % what)
    rec = b.record()
    for v in MALFORMED[1:]:
        check(v.encode() not in rec, "the function received %r" % v)
    check(PID.encode() not in rec and PID.upper().encode() not in rec,
          "the function received the client's parent id")
    check(b"bad=1" not in rec, "the function received a tracestate of an invalid trace")


def record_traceparents(rec):
    return [m.decode() for m in TP_LINE_RE.findall(rec)]


@case()
def new_span_per_attempt(ctx):
    """A retried request: both attempts carry the same trace (the client's,
    or the one fnproxy started) with different span ids, the second being
    what the function's answer echoes."""
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(rcfg([b.addr], "timeout: 5s, retries: { max: 2, on: [gateway-error],"
                                " backoff: { base: 1ms, max: 5ms } }"))
    for key, hs in (("kept", [("traceparent", "00-%s-%s-01" % (TID, PID))]), ("new", [])):
        before = len(record_traceparents(b.record()))
        r = request(fp.port, "GET", "/fail/1/503/%s" % key, headers=hs)
        check(r.status == 200, "%s: %r" % (key, r))
        check_eq(attempts(r), 2, "%s: attempts" % key)
        tps = record_traceparents(b.record())[before:]
        check_eq(len(tps), 2, "%s: traceparent lines the function got (%r)" % (key, tps))
        parsed = [TP_RE.match(t) for t in tps]
        check(all(parsed), "%s: malformed traceparent sent: %r" % (key, tps))
        (t1, s1, f1), (t2, s2, f2) = (m.groups() for m in parsed)
        check_eq(t1, t2, "%s: the trace id of both attempts" % key)
        check(s1 != s2, "%s: both attempts had span %s" % (key, s1))
        check_eq(f1, f2, "%s: flags of both attempts" % key)
        if hs:
            check_eq((t1, f1), (TID, "01"), "kept: the client's trace")
        echoed = sent_traceparent(parse_echo(r.body)[1], key)
        check_eq(echoed, (t2, s2, f2), "%s: the echo is the second attempt's" % key)


@case()
def logged(ctx):
    """The access log's trace_id is the trace the function got: kept or
    started; for a head refused before it was read, ""."""
    b = ctx.start_backend()
    log = ctx.path("access.log")
    fp = ctx.start_fnproxy(rcfg([b.addr], access_log=log))
    r1 = request(fp.port, "GET", "/echo", headers=[("traceparent", "00-%s-%s-01" % (TID, PID)),
                                                  ("x-request-id", "kept-1")])
    r2 = request(fp.port, "GET", "/echo", headers=[("x-request-id", "new-1")])
    r3 = request(fp.port, "GET", "/echo", headers=[("traceparent", "nonsense"),
                                                  ("x-request-id", "bad-1")])
    c = ctx.connect(fp.port)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    r4 = c.read_response()
    check_eq(r4.status, 400, "a malformed head")
    seen = {}
    for rid, r in (("kept-1", r1), ("new-1", r2), ("bad-1", r3)):
        check(r.status == 200, "%s: %r" % (rid, r))
        seen[rid] = sent_traceparent(parse_echo(r.body)[1], rid)[0]
    check_eq(seen["kept-1"], TID, "the kept trace")
    lines = [json.loads(ln) for ln in wait_lines(log, 4)]
    got = {e["request_id"]: e["trace_id"] for e in lines if e["status"] == 200}
    check_eq(got, seen, "trace_id in the access log, by request_id")
    refused = [e for e in lines if e["status"] == 400]
    check_eq([e["trace_id"] for e in refused], [""], "trace_id of a head refused unread")


@case(**eg.NS)
def egress_carries_the_trace(ctx):
    """A function's call through its egress listener: a traceparent it
    sends keeps its trace id with a new span (tracestate passes), none
    starts a trace, a malformed one is replaced; each access log line has
    the trace id. A CONNECT tunnel is opaque: the traceparent inside goes
    through untouched, and its line has the CONNECT's own trace, or ""."""
    api = eg.dest(ctx, "api", "127.0.1.1")
    log = ctx.path("access.log")
    fp = eg.start_egress(ctx, eg.egress_config(access_log=log))
    url = "http://api.test:8080/echo"

    r = eg.via(fp.eport, url + "?kept", headers=[("traceparent", "00-%s-%s-01" % (TID, PID)),
                                                ("tracestate", "fn=1")])
    check(r.status == 200, "kept: %r" % r)
    hdrs = parse_echo(r.body)[1]
    trace, span, flags = sent_traceparent(hdrs, "egress, kept")
    check_eq((trace, flags), (TID, "01"), "egress: trace id and flags kept")
    check(span != PID, "egress: the destination's parent id is the function's span")
    check_eq(hget(hdrs, "tracestate"), ["fn=1"], "egress: tracestate")

    r = eg.via(fp.eport, url + "?new", headers=[("tracestate", "orphan=1")])
    check(r.status == 200, "new: %r" % r)
    hdrs = parse_echo(r.body)[1]
    new_trace, _, flags = sent_traceparent(hdrs, "egress, none sent")
    check(new_trace != TID and flags == "00", "egress: a new trace: %s %s" % (new_trace, flags))
    check_eq(hget(hdrs, "tracestate"), [], "egress: tracestate without traceparent")

    r = eg.via(fp.eport, url + "?bad", headers=[("traceparent", "00-%s-%s-01" % (TID.upper(),
                                                                                 PID))])
    check(r.status == 200, "bad: %r" % r)
    bad_trace = sent_traceparent(parse_echo(r.body)[1], "egress, malformed")[0]
    check(bad_trace not in (TID, TID.upper(), new_trace), "egress: malformed not replaced")
    check(TID.upper().encode() not in api.record(), "the destination got the malformed value")

    # CONNECT: nothing injected, the bytes inside untouched.
    inner = ("GET /echo?tunnel HTTP/1.1\r\nHost: api.test:8080\r\n"
             "traceparent: 00-%s-%s-01\r\nConnection: close\r\n\r\n" % ("2" * 32, PID)).encode()
    c, head = eg.connect_tunnel(ctx, fp.eport, "api.test:8080")
    eg.check_established(c, head, "CONNECT")
    c.send(inner)
    r = c.read_response()
    check(r.status == 200, "through the tunnel: %r" % r)
    check_eq(hget(parse_echo(r.body)[1], "traceparent"), ["00-%s-%s-01" % ("2" * 32, PID)],
             "traceparent inside a tunnel")
    c.close()
    c = ctx.connect(fp.eport)
    c.send(b"CONNECT api.test:8080 HTTP/1.1\r\nHost: api.test:8080\r\n"
           b"traceparent: 00-" + ("3" * 32).encode() + b"-" + PID.encode() + b"-01\r\n\r\n")
    head = c.read_head()
    eg.check_established(c, head, "CONNECT with a traceparent")
    c.close()

    lines = [json.loads(ln) for ln in wait_lines(log, 5)]
    tunnels = [e for e in lines if e["method"] == "CONNECT"]
    check_eq(sorted(e["trace_id"] for e in tunnels), ["", "3" * 32], "trace_id of tunnels")
    plain = [e["trace_id"] for e in lines if e["method"] == "GET"]
    check_eq(plain, [TID, new_trace, bad_trace], "trace_id of egress requests, in order")
    check(all(e["direction"] == "egress" for e in lines), "direction of every line")
