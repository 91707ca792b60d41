#!/usr/bin/env python3
"""Idle keep-alive connections for the memory scenario (loopback only).

Opens --conns connections to 127.0.0.1:PORT, at most --window at a time in
progress; on each sends one GET and reads the whole answer, so that the
target has really served it (a proxy has parsed, routed and forwarded the
request) before the connection goes idle. Then prints

    READY opened=N failed=F non2xx=X seconds=S

and holds every connection idle until a line arrives on stdin (or --hold-max
seconds pass). Then it checks which connections the target closed while
they were idle, closes them all and prints

    DONE alive=A closed_by_peer=C

Bounded: the opening phase stops after --open-timeout seconds, whatever it
reached.
"""

import argparse
import errno
import os
import re
import select
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"


class Conn:
    __slots__ = ("sock", "state", "buf")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.buf = b""


def answer_complete(buf):
    """(complete, status) for the answer read so far; None status if unknown."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False, None
    head = buf[:end].decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head)
    status = int(m.group(1)) if m else 0
    body = buf[end + 4:]
    m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(body) >= int(m.group(1)), status
    if re.search(r"(?im)^transfer-encoding:.*chunked", head):
        return body.endswith(b"0\r\n\r\n"), status
    return True, status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--path", default="/")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--hold-max", type=float, default=120.0)
    a = ap.parse_args()

    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: fnproxy-bench-idle\r\n\r\n"
               % (a.path, a.port)).encode()
    sel = selectors.DefaultSelector()
    idle = []
    started = failed = non2xx = 0
    in_flight = 0
    t0 = time.monotonic()
    deadline = t0 + a.open_timeout

    def fail(c):
        nonlocal failed, in_flight
        failed += 1
        in_flight -= 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while (started < a.conns or in_flight) and time.monotonic() < deadline:
        while started < a.conns and in_flight < a.window:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            in_flight += 1
            c = Conn(s)
            err = s.connect_ex((HOST, a.port))
            if err not in (0, errno.EINPROGRESS):
                fail(c)
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if c.state == "connecting":
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(c)
                    continue
                try:
                    c.sock.send(request)  # small: goes out whole on loopback
                except OSError:
                    fail(c)
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    fail(c)
                    continue
                if not data:
                    fail(c)
                    continue
                c.buf += data
                done, status = answer_complete(c.buf)
                if done:
                    if not 200 <= status < 300:
                        non2xx += 1
                    sel.unregister(c.sock)
                    c.buf = b""
                    in_flight -= 1
                    idle.append(c.sock)
    for key in list(sel.get_map().values()):  # timed out mid-way
        failed += 1
        key.fileobj.close()
    sel.close()

    print("READY opened=%d failed=%d non2xx=%d seconds=%.2f"
          % (len(idle), failed, non2xx, time.monotonic() - t0), flush=True)

    select.select([sys.stdin], [], [], a.hold_max)

    alive = closed = 0
    for s in idle:
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if data:
                alive += 1  # unexpected bytes, but still open
            else:
                closed += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            closed += 1
        s.close()
    print("DONE alive=%d closed_by_peer=%d" % (alive, closed), flush=True)


if __name__ == "__main__":
    main()
