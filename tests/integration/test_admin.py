"""The admin listener: /healthz, /ready, /metrics."""

import time

from harness import (case, check, check_eq, check_fnproxy_error, metric_value, request,
                     std_config)


@case()
def healthz_ready_metrics(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    r = request(fp.admin_port, "GET", "/healthz")
    check_eq((r.status, r.body.strip()), (200, b"ok"), "/healthz")
    r = request(fp.admin_port, "GET", "/ready")
    check_eq(r.status, 200, "/ready")
    for i in range(3):
        r = request(fp.port, "GET", "/status/200?i=%d" % i)
        check_eq(r.status, 200, "request %d" % i)
    r = request(fp.port, "GET", "/status/503")
    check_eq(r.status, 503, "503 passed through")
    text = fp.metrics()
    lbl = {"direction": "ingress", "function": "echo", "route": "all"}
    check_eq(metric_value(text, "fnproxy_requests_total", dict(lbl, code="200")), 3.0,
             "fnproxy_requests_total code=200")
    check_eq(metric_value(text, "fnproxy_requests_total", dict(lbl, code="503")), 1.0,
             "fnproxy_requests_total code=503")
    check(metric_value(text, "fnproxy_connections_active", {"listener": "public"}) is not None,
          "fnproxy_connections_active{listener=\"public\"} present")
    check("# TYPE fnproxy_requests_total counter" in text, "TYPE line for requests_total")


@case()
def connections_active_gauge(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr]))
    conns = [ctx.connect(fp.port) for _ in range(3)]
    for c in conns:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check_eq(c.read_response().status, 200, "request")
    v = metric_value(fp.metrics(), "fnproxy_connections_active", {"listener": "public"})
    check_eq(v, 3.0, "connections_active with 3 open")
    for c in conns:
        c.close()
    end = time.monotonic() + 3
    while time.monotonic() < end:
        v = metric_value(fp.metrics(), "fnproxy_connections_active", {"listener": "public"})
        if v == 0.0:
            break
        time.sleep(0.05)
    check_eq(v, 0.0, "connections_active after closing them")


@case()
def answered_before_routing_counts_empty_labels(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], path_prefix="/api"))
    r = request(fp.port, "GET", "/other")
    check_fnproxy_error(r, 404, "no_route")
    r = request(fp.port, "GET", "/api/x")
    check_eq(r.status, 200, "routed request")
    text = fp.metrics()
    v = metric_value(text, "fnproxy_requests_total",
                     {"direction": "ingress", "function": "", "route": "", "code": "404"})
    check_eq(v, 1.0, 'requests_total{function="",route="",code="404"}')
    v = metric_value(text, "fnproxy_requests_total",
                     {"direction": "ingress", "function": "echo", "route": "all", "code": "200"})
    check_eq(v, 1.0, "the routed request")
