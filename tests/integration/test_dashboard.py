"""GET /dashboard in a real browser, and the /stats history it draws.

fnproxy runs with one function, two ingress routes (a, b) and an egress
listener with one allow rule (lo: the backend's loopback port), so that
the page has ingress and egress series, egress denials and retries. After a
few seconds of load the page is opened in headless Chromium (driven by
python3-selenium and chromedriver): every route's charts must have data
points, the console must hold no error, and nothing may have been fetched
from outside the admin origin. A screenshot is kept in
build/test-artifacts/dashboard.png. A second browser with JavaScript off
must still show every route in the server-rendered table.

Chromium and selenium are required: without them the case fails, it never
skips. Browsers and their drivers are quit in `finally`, and run.py kills
the whole process group if the case overruns.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time

from harness import HOST, case, check, check_eq, fail, request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEBIAN_PY = "/usr/lib/python3/dist-packages"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build",
                         "test-artifacts")
LOAD_SECONDS = 3.0

CONFIG = (
    "workers: $WORKERS\n"
    "admin: { listen: 127.0.0.1:$APORT }\n"
    "listeners:\n"
    "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 2s }\n"
    "functions:\n"
    "  - name: app\n"
    "    endpoints: [127.0.0.1:$BPORT]\n"
    "    ingress:\n"
    "      routes:\n"
    "        - { name: a, match: { listener: public, host: a.test }, timeout: 5s,"
    " retries: { max: 1, on: [503] } }\n"
    "        - { name: b, match: { listener: public, host: b.test }, timeout: 5s }\n"
    "    egress:\n"
    "      listen: 127.0.0.1:$PORT_egress\n"
    "      deny_private: false\n"
    "      allow:\n"
    "        - { name: lo, cidr: 127.0.0.1/32, ports: [$BPORT] }\n"
)

# The series the page must chart: direction/function/route.
SERIES = ("ingress/app/a", "ingress/app/b", "egress/app/lo", "egress/app/")


def _load(fp, bport, stop, counts, lock):
    """Requests on both routes and both egress outcomes until stop."""
    i = 0
    while not stop.is_set():
        i += 1
        jobs = [("a", fp.port, "/status/200?i=%d" % i, "a.test"),
                ("b", fp.port, "/status/200?i=%d" % i, "b.test"),
                ("lo", fp.ports["egress"], "http://127.0.0.1:%d/e?i=%d" % (bport, i),
                 "127.0.0.1:%d" % bport),
                ("denied", fp.ports["egress"], "http://denied.test:8080/", "denied.test:8080")]
        if i % 5 == 0:  # a 503 retried into a 200, and a 503 that stays one
            jobs.append(("a", fp.port, "/fail/1/503/k%d" % i, "a.test"))
            jobs.append(("a", fp.port, "/status/503?i=%d" % i, "a.test"))
        for name, port, path, host in jobs:
            r = request(port, "GET", path, host=host, timeout=5)
            with lock:
                counts[name] = counts.get(name, 0) + 1
                counts["status %s %d" % (name, r.status)] = (
                    counts.get("status %s %d" % (name, r.status), 0) + 1)
        time.sleep(0.01)


def _history(fp):
    r = request(fp.admin_port, "GET", "/stats?history=1", timeout=5)
    check_eq(r.status, 200, "GET /stats?history=1")
    return json.loads(r.body)


def _browser(user_dir, javascript=True):
    """Headless Chromium through chromedriver; logs the console."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        # python3-selenium is a Debian package: when the suite runs under
        # another python3 (pyenv, a venv), look where Debian put it.
        if DEBIAN_PY not in sys.path:
            sys.path.append(DEBIAN_PY)
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError as e:
            fail("python3-selenium is required for the dashboard test: %s" % e)
    for p in (CHROMIUM, CHROMEDRIVER):
        if not os.access(p, os.X_OK):
            fail("%s is required for the dashboard test (Debian chromium, chromium-driver)" % p)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--user-data-dir=" + user_dir, "--window-size=1440,900", "--no-first-run",
              "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    if not javascript:
        opts.add_argument("--disable-javascript")
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(0.2)
    fail("%s not seen within %.0fs (last: %r)" % (what, timeout, last))


# The data-points of each chart line, per series, as the page shows them.
POINTS_JS = """
var out = {};
document.querySelectorAll('.card[data-series]').forEach(function (c) {
  var lines = {};
  c.querySelectorAll('path[data-points]').forEach(function (p) {
    lines[p.closest('figure').getAttribute('data-chart') + ':' + p.getAttribute('data-name')] =
      parseInt(p.getAttribute('data-points'), 10);
  });
  out[c.getAttribute('data-series')] = lines;
});
return out;
"""


@case(timeout=60)
def charts_in_headless_chromium(ctx):
    b = ctx.start_backend(record=False)
    bport = int(b.addr.rsplit(":", 1)[1])
    fp = ctx.start_fnproxy(CONFIG, listeners=("public", "egress"), BPORT=bport)
    admin = "http://%s:%d" % (HOST, fp.admin_port)

    # The page itself: one document, no URL to anywhere.
    r = request(fp.admin_port, "GET", "/dashboard", timeout=5)
    check_eq(r.status, 200, "GET /dashboard")
    check(r.header("content-type").startswith("text/html"), "content-type %r"
          % r.header("content-type"))
    page = r.body.decode("utf-8")
    for scheme in ("http://", "https://", "//cdn", "<link rel=\"stylesheet\"", "<script src"):
        check(scheme not in page, "the page holds no %r" % scheme)
    for s in SERIES[:2]:
        check('<tr data-series="%s">' % s in page, "server table row for %s" % s)

    stop, lock, counts = threading.Event(), threading.Lock(), {}
    t = threading.Thread(target=_load, args=(fp, bport, stop, counts, lock), daemon=True)
    t.start()
    time.sleep(LOAD_SECONDS)
    stop.set()
    t.join(10)
    check(not t.is_alive(), "load thread ended")
    ctx.note("load: %r" % counts)
    check(counts.get("status a 200", 0) > 0 and counts.get("status b 200", 0) > 0,
          "routes answered 200: %r" % counts)
    check(counts.get("status lo 200", 0) > 0, "egress allowed answered 200: %r" % counts)
    check(counts.get("status denied 403", 0) > 0, "egress denied answered 403: %r" % counts)

    # The history is exact: once sampled past the load, a route's points sum
    # to the requests it answered.
    def settled():
        h = _history(fp)["history"]
        by = {"%s/%s/%s" % (s["direction"], s["function"], s["route"]): s for s in h["series"]}
        if any(k not in by for k in SERIES):
            return None
        ok = (sum(by["ingress/app/a"]["requests"]) == counts["a"]
              and sum(by["ingress/app/b"]["requests"]) == counts["b"])
        return by if ok else None
    by = _wait(settled, 5, "history totals equal to the requests sent")
    check(sum(by["egress/app/"]["denials"]) >= counts["denied"],
          "egress denials in the history: %r" % by["egress/app/"]["denials"])
    check(sum(by["ingress/app/a"]["retries"]) > 0, "retries in the history of route a")
    check(any(v is not None and v > 0 for v in by["ingress/app/b"]["p99_ms"]), "p99 of b")
    check_eq(sum(by["ingress/app/b"]["ok"]), counts["b"], "b successes")

    os.makedirs(ARTIFACTS, exist_ok=True)
    user_dir = tempfile.mkdtemp(prefix="fnproxy-chromium-", dir=ctx.tmpdir)
    driver = None
    try:
        driver = _browser(user_dir)
        driver.set_page_load_timeout(10)
        driver.set_script_timeout(5)
        driver.get(admin + "/dashboard")

        def charted():
            pts = driver.execute_script(POINTS_JS)
            for s in SERIES:
                lines = pts.get(s)
                if not lines or not lines.get("Requests/s:rate"):
                    return None
            for s in SERIES[:3]:
                if not pts[s].get("Latency ms:p50") or not pts[s].get("Latency ms:p99"):
                    return None
            return pts
        pts = _wait(charted, 10, "charts with data points for each route")
        ctx.note("data-points: %r" % pts)
        for s in SERIES:
            for chart in ("Requests/s:rate", "Success %:ok", "Denials, retries /s:denials",
                          "Denials, retries /s:retries"):
                check(chart in pts[s], "%s has a %s line" % (s, chart))
        check(pts["egress/app/"]["Denials, retries /s:denials"] > 0, "egress denials drawn")

        # Every resource came from the admin origin; the console is clean.
        urls = driver.execute_script(
            "return [location.href].concat(performance.getEntriesByType('resource')"
            ".map(function (e) { return e.name; }));")
        check(any("/stats?history=1" in u for u in urls), "the page polled /stats: %r" % urls)
        for u in urls:
            check(u.startswith(admin + "/"), "request to %r outside %s" % (u, admin))
        logs = driver.get_log("browser")
        errors = [e for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        check(not errors, "console errors: %r" % errors)
        path = os.path.join(ARTIFACTS, "dashboard.png")
        check(driver.save_screenshot(path), "screenshot saved to %s" % path)
        ctx.note("screenshot: %s" % os.path.abspath(path))
    finally:
        if driver is not None:
            driver.quit()

    # Without JavaScript: the server's table, every route in it.
    shutil.rmtree(user_dir, ignore_errors=True)
    user_dir = tempfile.mkdtemp(prefix="fnproxy-chromium-", dir=ctx.tmpdir)
    driver = None
    try:
        driver = _browser(user_dir, javascript=False)
        driver.set_page_load_timeout(10)
        driver.get(admin + "/dashboard")
        rows = {}
        for tr in driver.find_elements("css selector", "#now tbody tr"):
            cells = [td.text for td in tr.find_elements("css selector", "td")]
            rows[tr.get_attribute("data-series")] = cells
        for s in SERIES:
            check(s in rows, "no-script table row for %s: %r" % (s, sorted(rows)))
        check_eq(rows["ingress/app/a"][:3], ["ingress", "app", "a"], "row a's names")
        check_eq(int(rows["ingress/app/b"][3]), counts["b"], "row b's requests")
        charts = driver.find_elements("css selector", "#charts .card")
        check_eq(len(charts), 0, "no charts without JavaScript")
        driver.save_screenshot(os.path.join(ARTIFACTS, "dashboard-nojs.png"))
    finally:
        if driver is not None:
            driver.quit()
