#!/usr/bin/env python3
"""Idle keep-alive connections for the memory scenario (loopback only).

Opens --conns connections to 127.0.0.1:PORT, at most --window at a time in
progress; on each sends one GET and reads the whole answer, so that the
target has really served it (a proxy has parsed, routed and forwarded the
request) before the connection goes idle. With --tls, each connection first
does a full TLS handshake (a fresh session every time, SNI localhost, the
certificate not verified: the bench checks it once beforehand), and the
request and answer go over TLS. Then prints

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
import re
import select
import selectors
import socket
import ssl
import sys
import time

HOST = "127.0.0.1"


class Conn:
    __slots__ = ("sock", "state", "buf", "out")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.buf = b""
        self.out = b""


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


def _raw_peek(s):
    """MSG_PEEK on the TCP socket under an SSLSocket (whose recv refuses
    flags): b"" at EOF, the bytes waiting, or BlockingIOError when none."""
    raw = socket.socket(fileno=s.fileno())
    try:
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        raw.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--path", default="/")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--hold-max", type=float, default=120.0)
    ap.add_argument("--tls", action="store_true", help="TLS (1.2 or 1.3, whatever is agreed)")
    a = ap.parse_args()

    tls_ctx = None
    if a.tls:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls_ctx.check_hostname = False
        tls_ctx.verify_mode = ssl.CERT_NONE
        tls_ctx.minimum_version = ssl.TLSVersion.TLSv1_2

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
                if tls_ctx is not None:
                    sel.unregister(c.sock)
                    c.sock = tls_ctx.wrap_socket(c.sock, server_hostname="localhost",
                                                 do_handshake_on_connect=False)
                    sel.register(c.sock, selectors.EVENT_WRITE, c)
                    c.state = "handshake"
                else:
                    c.state = "sending"
                c.out = request
            if c.state == "handshake":
                try:
                    c.sock.do_handshake()
                except ssl.SSLWantReadError:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                except ssl.SSLWantWriteError:
                    sel.modify(c.sock, selectors.EVENT_WRITE, c)
                    continue
                except OSError:  # ssl.SSLError included
                    fail(c)
                    continue
                c.state = "sending"
            if c.state == "sending":
                try:
                    n = c.sock.send(c.out)
                except (BlockingIOError, ssl.SSLWantWriteError):
                    sel.modify(c.sock, selectors.EVENT_WRITE, c)
                    continue
                except ssl.SSLWantReadError:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                except OSError:
                    fail(c)
                    continue
                c.out = c.out[n:]
                if c.out:
                    sel.modify(c.sock, selectors.EVENT_WRITE, c)
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            if c.state == "reading":
                while True:  # over TLS, a record may hold more than one recv
                    try:
                        data = c.sock.recv(65536)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        data = None
                    except OSError:
                        data = b""
                    if data is None:
                        break
                    if not data:
                        fail(c)
                        break
                    c.buf += data
                    done, status = answer_complete(c.buf)
                    if done:
                        if not 200 <= status < 300:
                            non2xx += 1
                        sel.unregister(c.sock)
                        c.buf = b""
                        in_flight -= 1
                        idle.append(c.sock)
                        break
                    if tls_ctx is None or not c.sock.pending():
                        break
    for key in list(sel.get_map().values()):  # timed out mid-way
        failed += 1
        key.fileobj.close()
    sel.close()

    print("READY opened=%d failed=%d non2xx=%d seconds=%.2f"
          % (len(idle), failed, non2xx, time.monotonic() - t0), flush=True)

    select.select([sys.stdin], [], [], a.hold_max)

    alive = closed = 0
    for s in idle:
        # The socket itself, under TLS too: a peer that closed has sent a FIN
        # (and, over TLS, a close_notify first: bytes that say "closed").
        try:
            data = socket.socket.recv(s, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) \
                if tls_ctx is None else _raw_peek(s)
            if data and tls_ctx is None:
                alive += 1  # unexpected bytes, but still open
            elif data:
                closed += 1  # a TLS alert: close_notify
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
