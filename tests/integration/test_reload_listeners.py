"""SIGHUP that adds and removes listeners: a new listener serves at once, a
removed one stops accepting and its open connections close after their
current request, and the listener that stays keeps its socket throughout."""

import signal
import socket

from harness import (build_request, case, check, check_eq, free_port, request, wait_for)

ONE = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - { name: public, listen: 127.0.0.1:$PPORT }
functions:
  - name: fa
    endpoints: [127.0.0.1:$A]
    ingress:
      routes:
        - { name: root, match: { listener: public, path_prefix: / } }
"""

TWO = """\
workers: $WORKERS
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - { name: public, listen: 127.0.0.1:$PPORT }
  - { name: extra, listen: 127.0.0.1:$XPORT }
functions:
  - name: fa
    endpoints: [127.0.0.1:$A]
    ingress:
      routes:
        - { name: root, match: { listener: public, path_prefix: / } }
        - { name: extra, match: { listener: extra, path_prefix: / } }
"""


def _refused(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


@case()
def sighup_adds_and_removes_listeners(ctx):
    a = ctx.start_backend(name="A")
    xport = free_port()
    fp = ctx.start_fnproxy(ONE, A=a.port)
    check(_refused(xport), "the extra port is closed before the reload")
    keep = ctx.connect(fp.port)
    keep.send(build_request("GET", "/echo"))
    check_eq(keep.read_response().status, 200, "public before")

    fp.rewrite_config(TWO, A=a.port, XPORT=xport)
    fp.send_signal(signal.SIGHUP)
    check(wait_for(lambda: not _refused(xport) and request(xport, "GET", "/echo").status == 200,
                   5, 0.05), "the added listener serves after SIGHUP")
    keep.send(build_request("GET", "/echo"))
    check_eq(keep.read_response().status, 200, "public connection from before, after adding")
    on_extra = ctx.connect(xport)
    on_extra.send(build_request("GET", "/echo"))
    check_eq(on_extra.read_response().status, 200, "keep-alive connection on the extra listener")

    fp.rewrite_config(ONE, A=a.port)
    fp.send_signal(signal.SIGHUP)
    check(wait_for(lambda: _refused(xport), 5, 0.05), "the removed listener stops accepting")
    # Its idle keep-alive connection is closed by fnproxy, as on drain.
    check(on_extra.wait_closed(5), "idle connection of the removed listener closed")
    keep.send(build_request("GET", "/echo"))
    check_eq(keep.read_response().status, 200, "public connection from before, after removing")
    check_eq(request(fp.port, "GET", "/echo").status, 200, "public serves new connections")
    check(fp.alive(), "fnproxy alive")
