"""A real Prometheus (the Debian package) scraping fnproxy's /metrics, and
promtool linting it.

The case starts prometheus itself on a free loopback port with a scrape
config for fnproxy's admin port (every second), runs a known load through
fnproxy (every request /delay/20, so durations fall in the (0.01, 0.025]
bucket on a quiet machine), waits until Prometheus has scraped the final count,
then asks its HTTP API for the p99 by histogram_quantile() and for the
counter, and compares them with fnproxy's own /stats and with what was
sent. prometheus and promtool missing is a failure, not a skip: the test is
the point. Prometheus is a Proc of the case, so teardown stops it (and
run.py kills the case's process group after that, whatever happened).
It checks the exposition against real tools, which the sanitizers add
nothing to (/metrics runs under them in test_observability), so it runs in
the normal build only.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

from harness import (Proc, case, check, check_eq, fail, free_port,
                     metric_value, request, spread_requests, std_config, wait_until)

# README "Metrics": the histogram buckets' upper bounds, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
           float("inf"))
N_REQUESTS = 240
DELAY_MS = 20

# Straight to 127.0.0.1, whatever http_proxy the environment has.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def need(tool):
    path = shutil.which(tool)
    if path is None:
        fail("%s not found: install the Debian package prometheus (make deps)" % tool)
    return path


def bucket_of(v):
    """The (lower, upper] bucket interval that v falls in."""
    lo = 0.0
    for up in BUCKETS:
        if v <= up:
            return (lo, up)
        lo = up
    return (lo, float("inf"))


def prom_get(port, path, params=None, timeout=3):
    url = "http://127.0.0.1:%d%s" % (port, path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with _OPENER.open(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def prom_query(port, expr):
    """An instant query: the list of (labels, float value)."""
    status, body = prom_get(port, "/api/v1/query", {"query": expr})
    check_eq(status, 200, "query %s" % expr)
    j = json.loads(body)
    check_eq(j.get("status"), "success", "query %s: %s" % (expr, body[:300]))
    return [(r["metric"], float(r["value"][1])) for r in j["data"]["result"]]


def start_prometheus(ctx, admin_port):
    binary = need("prometheus")
    port = free_port()
    cfg = ctx.path("prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "scrape_configs:\n"
                "  - job_name: fnproxy\n"
                "    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % admin_port)
    data = ctx.path("prometheus-data")
    os.mkdir(data)
    p = Proc(ctx, [binary, "--config.file=" + cfg, "--storage.tsdb.path=" + data,
                   "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
             "prometheus")

    def ready():
        if not p.alive():
            fail("prometheus exited with %s: %s" % (p.popen.returncode, p.stderr_text()[-800:]))
        try:
            return prom_get(port, "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False
    wait_until(ready, 15, "prometheus /-/ready", interval=0.1,
               detail=lambda: p.stderr_text()[-800:])
    return p, port


@case(timeout=30, san=False)
def prometheus_scrapes_quantile_and_count(ctx):
    need("promtool")
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], route="slow", timeout="5s"))
    prom, pport = start_prometheus(ctx, fp.admin_port)

    sel = 'route="slow",function="echo",direction="ingress"'
    counter = 'fnproxy_requests_total{%s,code="200"}' % sel

    # A series appears with its first count: one request first, scraped
    # before the load, so that the load is a rise of the counter that
    # rate() and increase() see whole.
    check_eq(request(fp.port, "GET", "/delay/%d" % DELAY_MS).status, 200, "first request")

    def counter_is(n):
        res = prom_query(pport, counter)
        return bool(res) and res[0][1] == n
    wait_until(lambda: counter_is(1), 10, "Prometheus's first scrape of fnproxy", interval=0.1)

    started = time.monotonic()
    spread_requests(fp.port, ["/delay/%d" % DELAY_MS] * N_REQUESTS)
    ctx.note("%d requests of /delay/%d in %.2fs" % (N_REQUESTS, DELAY_MS,
                                                      time.monotonic() - started))

    total = N_REQUESTS + 1
    wait_until(lambda: counter_is(total), 10, "Prometheus to scrape all %d requests" % total,
               interval=0.2, detail=lambda: prom_query(pport, counter))
    # The counter at the last scrape is exactly what was sent, and its raw
    # samples over the last minute (what rate() reads) rise by the load.
    res = prom_query(pport, counter)
    check_eq(len(res), 1, "series of %s" % counter)
    check_eq(res[0][1], float(total), counter)
    status, body = prom_get(pport, "/api/v1/query", {"query": "%s[1m]" % counter})
    samples = [float(v) for _, v in json.loads(body)["data"]["result"][0]["values"]]
    check_eq(samples[-1] - samples[0], float(N_REQUESTS),
             "rise of the counter's samples %r" % samples)
    # rate() and increase() extrapolate to the window's edges: near, not equal.
    inc = prom_query(pport, "sum(increase(%s[1m]))" % counter)
    check(inc and 0.9 * N_REQUESTS <= inc[0][1] <= 1.5 * N_REQUESTS,
          "increase() over the load: %r for %d requests" % (inc, N_REQUESTS))
    ctx.note("increase()[1m]: %.1f for %d requests" % (inc[0][1], N_REQUESTS))
    hist_count = prom_query(pport, "fnproxy_request_duration_seconds_count{%s}" % sel)
    check(hist_count and hist_count[0][1] == total,
          "histogram _count: %r for %d requests" % (hist_count, total))

    q = prom_query(pport, "histogram_quantile(0.99, sum by (le) "
                          "(rate(fnproxy_request_duration_seconds_bucket{%s}[1m])))" % sel)
    check(len(q) == 1, "histogram_quantile answered %r" % q)
    prom_p99 = q[0][1]

    r = request(fp.admin_port, "GET", "/stats")
    check_eq(r.status, 200, "/stats")
    route = [x for x in r.json()["routes"] if x["route"] == "slow"]
    check(route and route[0]["requests"] == total, "/stats of the route: %r" % route)
    stats_p99 = route[0]["latency_ms"]["p99"] / 1000.0
    ctx.note("p99: Prometheus %.4fs, /stats %.4fs" % (prom_p99, stats_p99))
    check_eq(bucket_of(prom_p99), bucket_of(stats_p99),
             "bucket of the p99 (Prometheus %.4fs, /stats %.4fs)" % (prom_p99, stats_p99))
    # /delay/20 takes 20 ms and more (a timer may fire a little early; a
    # busy machine adds, and may push the p99 past the 25 ms edge).
    check(stats_p99 >= 0.019, "/stats p99 %.4fs for /delay/%d" % (stats_p99, DELAY_MS))

    # promtool lints what fnproxy serves: names, HELP and TYPE.
    text = fp.metrics()
    check(metric_value(text, "fnproxy_requests_total", {"route": "slow"}) == total,
          "/metrics has the load")
    lint = subprocess.run([need("promtool"), "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=10)
    out = (lint.stdout + lint.stderr).decode("utf-8", "replace").strip()
    check(lint.returncode == 0 and out == "",
          "promtool check metrics exited %d: %s" % (lint.returncode, out[:1500]))

    prom.send_signal(15)
    check(prom.wait(10) is not None, "prometheus did not stop on SIGTERM")
