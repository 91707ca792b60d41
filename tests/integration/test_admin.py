"""The admin listener: /healthz, /ready, /metrics."""

import time

from harness import (case, check, check_eq, check_fnproxy_error, metric_value, raw_exchange,
                     request, std_config)


def _scrape_until(fp, ok, timeout=2):
    """Scrapes /metrics until ok(text) or timeout; returns the last text.
    A worker may count a request just after its answer went out, so a
    scrape right after the answer can miss it for a moment."""
    end = time.monotonic() + timeout
    while True:
        text = fp.metrics()
        if ok(text) or time.monotonic() >= end:
            return text
        time.sleep(0.05)


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
    lbl = {"direction": "ingress", "function": "echo", "route": "all"}
    want = {"200": 3.0, "503": 1.0}
    text = _scrape_until(fp, lambda t: all(
        metric_value(t, "fnproxy_requests_total", dict(lbl, code=k)) == v
        for k, v in want.items()))
    for k, v in want.items():
        check_eq(metric_value(text, "fnproxy_requests_total", dict(lbl, code=k)), v,
                 "fnproxy_requests_total code=%s" % k)
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
    text = _scrape_until(fp, lambda t: metric_value(
        t, "fnproxy_connections_active", {"listener": "public"}) == 3.0)
    v = metric_value(text, "fnproxy_connections_active", {"listener": "public"})
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
    r, closed, err = raw_exchange(fp.port, b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    check_fnproxy_error(r, 400, "bad_request", close=True)
    empty = {"direction": "ingress", "function": "", "route": ""}
    routed = {"direction": "ingress", "function": "echo", "route": "all", "code": "200"}
    text = _scrape_until(fp, lambda t: metric_value(t, "fnproxy_requests_total",
                                                    dict(empty, code="404")) == 1.0
                         and metric_value(t, "fnproxy_requests_total",
                                          dict(empty, code="400")) == 1.0
                         and metric_value(t, "fnproxy_requests_total", routed) == 1.0)
    v = metric_value(text, "fnproxy_requests_total", dict(empty, code="404"))
    check_eq(v, 1.0, 'requests_total{function="",route="",code="404"}')
    v = metric_value(text, "fnproxy_requests_total", dict(empty, code="400"))
    check_eq(v, 1.0, 'requests_total{function="",route="",code="400"}')
    v = metric_value(text, "fnproxy_requests_total",
                     {"direction": "ingress", "function": "echo", "route": "all", "code": "200"})
    check_eq(v, 1.0, "the routed request")


@case()
def admin_serves_while_draining(ctx):
    """After SIGTERM the admin listener keeps answering until the process
    exits: /ready says 503 so a load balancer stops sending, while /metrics
    and /stats still show the drain."""
    import signal

    from harness import build_request, wait_for
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="5s"))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/delay/1500"))
    check(wait_for(lambda: b"GET /delay/1500 " in b.record(), 5), "request reached the backend")
    fp.send_signal(signal.SIGTERM)
    check(wait_for(lambda: "draining" in fp.stderr_text(), 5), "fnproxy logged the drain")
    r = request(fp.admin_port, "GET", "/ready")
    check_eq((r.status, r.body.strip()), (503, b"draining"), "/ready while draining")
    r = request(fp.admin_port, "GET", "/metrics")
    check_eq(r.status, 200, "/metrics while draining")
    check(b"fnproxy_connections_active" in r.body, "/metrics has the connection gauge")
    r = request(fp.admin_port, "GET", "/stats")
    check_eq(r.status, 200, "/stats while draining")
    r = c.read_response(timeout=10)
    check_eq((r.status, r.body), (200, b"delayed\n"), "the request in flight")
    rc = fp.wait(15)
    fp.stopped = True
    check_eq(rc, 0, "exit status after the drain")


@case()
def access_log_dropped_lines_exported(ctx):
    """Access-log lines lost to write errors are counted on /metrics (a log on
    a full disk: /dev/full fails every write with ENOSPC), and requests are
    not affected."""
    from harness import wait_for
    b = ctx.start_backend()
    cfg = std_config([b.addr]).replace("admin:", "access_log: /dev/full\nadmin:", 1)
    fp = ctx.start_fnproxy(cfg)
    check_eq(metric_value(fp.metrics(), "fnproxy_access_log_dropped_lines_total", {}), 0.0,
             "dropped lines before any request")
    for i in range(3):
        check_eq(request(fp.port, "GET", "/status/200?i=%d" % i).status, 200, "request %d" % i)
    check(wait_for(lambda: metric_value(fp.metrics(), "fnproxy_access_log_dropped_lines_total",
                                        {}) == 3.0, 5),
          "dropped lines after 3 requests: %r"
          % metric_value(fp.metrics(), "fnproxy_access_log_dropped_lines_total", {}))
