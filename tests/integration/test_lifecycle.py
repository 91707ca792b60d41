"""Signals and resource limits: SIGTERM drains, SIGHUP reloads (bad config
refused, good config swapped in without dropping anything), EMFILE does
not make fnproxy spin."""

import re
import resource
import signal
import socket
import time

from harness import (HOST, build_request, case, check, check_eq, proc_cpu_seconds, request,
                     std_config, wait_for, wait_until)


def _wait_recorded(backend, needle, timeout=5):
    return wait_for(lambda: needle in backend.record(), timeout)


@case()
def sigterm_drains_in_flight(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(std_config([b.addr], timeout="5s"))
    c = ctx.connect(fp.port)
    c.send(build_request("GET", "/delay/1500"))
    check(_wait_recorded(b, b"GET /delay/1500 "), "request reached the backend")
    t0 = time.monotonic()
    fp.send_signal(signal.SIGTERM)

    def refused():
        try:
            s = socket.create_connection((HOST, fp.port), timeout=2)
        except ConnectionRefusedError:
            return True
        s.close()
        return False

    # Every worker closes its listener on its own loop: poll until a
    # connect is refused, which is the event "stopped accepting". It takes
    # a few ms; the deadline is the bound on how long it may take.
    wait_until(refused, 1, "fnproxy to refuse new connections after SIGTERM",
               detail=lambda: fp.stderr_text()[-500:])
    t_refused = time.monotonic() - t0
    check(fp.alive(), "fnproxy exited with a request in flight")
    r = c.read_response(timeout=10)
    check_eq((r.status, r.body), (200, b"delayed\n"), "the request in flight")
    rc = fp.wait(15)
    fp.stopped = True
    check(rc is not None, "fnproxy did not exit within 15s of draining")
    check_eq(rc, 0, "exit status")
    ctx.note("refused connections %.3fs after SIGTERM; exited %.2fs after it"
             % (t_refused, time.monotonic() - t0))


BLOCK = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: public
    listen: 127.0.0.1:$PPORT
%sfunctions:
  - name: echo
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: all, match: { listener: public, path_prefix: / } }
"""


@case()
def sighup_bad_config_keeps_serving(ctx):
    b = ctx.start_backend()
    fp = ctx.start_fnproxy(BLOCK % "", B=b.port)
    check_eq(request(fp.port, "GET", "/").status, 200, "before reload")
    # The unknown key is on line 6, column 5.
    fp.rewrite_config(BLOCK % "    bogus_reload_key: 1\n", B=b.port)
    fp.send_signal(signal.SIGHUP)
    pat = re.escape(fp.config_path) + r":6:5:"
    found = wait_for(lambda: re.search(pat, fp.stderr_text()), 5)
    check(found, "stderr has %s:6:5: after SIGHUP with a bad file: %r"
          % (fp.config_path, fp.stderr_text()[-600:]))
    check(fp.alive(), "fnproxy exited on a bad reload")
    for i in range(5):
        r = request(fp.port, "GET", "/status/200?after=%d" % i)
        check_eq(r.status, 200, "request %d after the refused reload" % i)


RELOAD = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - { name: public, listen: 127.0.0.1:$PPORT }
functions:
  - name: fa
    endpoints: [127.0.0.1:$A]
    ingress:
      routes:
        - { name: root, match: { listener: public, path_prefix: / }, timeout: 5s }
"""

RELOAD_ADD = RELOAD + """\
  - name: fb
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: b, match: { listener: public, path_prefix: /b }, timeout: 5s }
"""


@case()
def sighup_good_config_swaps_without_drops(ctx):
    a = ctx.start_backend(name="A")
    b = ctx.start_backend(name="B")
    fp = ctx.start_fnproxy(RELOAD, A=a.port, B=b.port)
    keep = ctx.connect(fp.port)
    keep.send(build_request("GET", "/b/before"))
    r = keep.read_response()
    check_eq((r.status, r.header("x-backend")), (200, "A"), "before reload /b goes to A")
    slow = ctx.connect(fp.port)
    slow.send(build_request("GET", "/delay/1500"))
    check(_wait_recorded(a, b"GET /delay/1500 "), "slow request reached A")
    fp.rewrite_config(RELOAD_ADD, A=a.port, B=b.port)
    fp.send_signal(signal.SIGHUP)

    def routed_to_b():
        r = request(fp.port, "GET", "/b/x")
        return r.status == 200 and r.header("x-backend") == "B"

    check(wait_for(routed_to_b, 5, 0.05), "new requests to /b reach B after SIGHUP")
    r = slow.read_response(timeout=10)
    check_eq((r.status, r.body), (200, b"delayed\n"), "request in flight across the reload")
    keep.send(build_request("GET", "/b/after"))
    r = keep.read_response()
    check_eq(r.status, 200, "keep-alive connection from before the reload")
    keep.send(build_request("GET", "/"))
    r = keep.read_response()
    check_eq((r.status, r.header("x-backend")), (200, "A"), "/ still goes to A")
    check(fp.alive(), "fnproxy alive")


@case(timeout=90, exclusive=True)
def emfile_does_not_spin(ctx):
    b = ctx.start_backend()

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    fp = ctx.start_fnproxy(std_config([b.addr]), preexec_fn=limit)
    check_eq(request(fp.port, "GET", "/").status, 200, "before")
    socks = []
    for _ in range(100):
        try:
            s = socket.create_connection((HOST, fp.port), timeout=1)
            socks.append(s)
        except OSError:
            pass
    # fnproxy has taken all the descriptors it may have once it reports the
    # failed accept; the connections beyond stay queued.
    wait_until(lambda: re.search(r"accept failed: .*too many open files", fp.stderr_text(),
                                 re.I),
               5, "fnproxy to report EMFILE on accept",
               detail=lambda: fp.stderr_text()[-500:])
    cpu0 = proc_cpu_seconds(fp.pid)
    # Not synchronisation but the measurement itself: fnproxy is held at
    # EMFILE with connections queued for 2 s, and its CPU time over that
    # window is what a spinning accept loop would show.
    time.sleep(2)
    cpu = proc_cpu_seconds(fp.pid) - cpu0
    err = fp.stderr_text()
    lines = [l for l in err.splitlines() if "accept" in l.lower()]
    ctx.note("%d client sockets; fnproxy CPU %.2fs in 2s; %d accept lines"
             % (len(socks), cpu, len(lines)))
    check(cpu < 0.5, "fnproxy used %.2fs of CPU in 2s at EMFILE (accept spin?)" % cpu)
    check(any(re.search(r"emfile|too many open files", l, re.I) for l in lines),
          "stderr mentions the accept error: %r" % err[-500:])
    check(len(lines) < 50, "%d accept error lines on stderr" % len(lines))
    for s in socks:
        s.close()

    def works():
        try:
            return request(fp.port, "GET", "/", timeout=2).status == 200
        except Exception:
            return False

    check(wait_for(works, 10, 0.2), "a request succeeds after the connections closed")
