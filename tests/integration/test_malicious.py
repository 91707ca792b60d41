"""A malicious function: every framing ambiguity a response can carry,
answered by a raw socket server of the case (harness.RawServer), on
ingress and through a function's egress listener (absolute-form http://).

README "What fnproxy does to requests" says what must happen: nothing
ambiguous is passed on, a malformed answer is a 502 upstream_bad_response
or, once the answer has started towards the client, a closed client
connection, and that upstream connection is never reused. Each probe
below checks, for one answer of the function:

- what the client got: the 502 (no header of the bad answer in it), or a
  closed connection that never looks like a complete response, or (bytes
  after a well-framed response, a 204 with a body) exactly the declared
  response and nothing more;
- that fnproxy closed the connection the answer came on, that no request
  ever arrived on it again, and that the next request to the function
  arrived on a new connection;
- what fnproxy counted: fnproxy_upstream_errors_total{reason="protocol"}.

The function (Fn below) reads a request head, looks up the path's script
and plays it: byte strings are sent, numbers are pauses, "close" closes.
After a script it keeps reading and notes ("reused", n) if a byte ever
arrives on that connection again, and ("closed", n) when fnproxy closes it.
/ok answers 200 "conn N", N being the connection's number.
"""

import time

import test_egress as eg
from harness import (CaseFailure, Client, RawServer, build_request, case, check, check_eq,
                     check_fnproxy_error, fail, metric_value, request, wait_until)

OK_HEAD = b"HTTP/1.1 200 OK\r\nX-Evil: 1\r\n"


def cl(body, extra=b""):
    """A 200 with Content-Length, extra bytes right after it."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + extra


# name -> (script, expected outcome). Outcomes: "502": 502
# upstream_bad_response; "cut": the client connection is closed before a
# complete response (a 200 head may have been sent first); "exact": 200
# with body "hello" and nothing more, the client connection still usable;
# "empty": the status in the script, no body, the client connection usable.
FRAMING = {
    # Content-Length and Transfer-Encoding (RFC 9112 section 6.3)
    "cl_te": ([OK_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_cl": ([OK_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_chunked_identity": ([OK_HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_gzip_chunked": ([OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_chunked_gzip": ([OK_HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_identity": ([OK_HEAD + b"Transfer-Encoding: identity\r\n\r\nhello", "close"], "502"),
    "te_twice": ([OK_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "te_in_http10": ([b"HTTP/1.0 200 OK\r\nX-Evil: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    # several Content-Lengths: different values are an error (RFC 9112
    # 6.3 item 5); fnproxy refuses identical duplicates too (README: "several
    # ... Content-Length").
    "cl_dup_same": ([OK_HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "cl_dup_diff": ([OK_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"], "502"),
    "cl_list": ([OK_HEAD + b"Content-Length: 5, 5\r\n\r\nhello"], "502"),
    "cl_plus": ([OK_HEAD + b"Content-Length: +5\r\n\r\nhello"], "502"),
    "cl_minus": ([OK_HEAD + b"Content-Length: -5\r\n\r\nhello"], "502"),
    "cl_inner_space": ([OK_HEAD + b"Content-Length: 1 5\r\n\r\nhello"], "502"),
    "cl_hex": ([OK_HEAD + b"Content-Length: 0x5\r\n\r\nhello"], "502"),
    "cl_empty": ([OK_HEAD + b"Content-Length: \r\n\r\nhello"], "502"),
    "cl_overflow": ([OK_HEAD + b"Content-Length: 184467440737095516160\r\n\r\nhello"], "502"),
    "cl_space_before_colon": ([OK_HEAD + b"Content-Length : 5\r\n\r\nhello"], "502"),
}

CHUNKS = {
    # The head is fine but the body framing is not. Each script is one
    # small send(), so the head and the bad chunk come in one read: nothing
    # of the answer was handed to the client yet, so it is a 502.
    "chunk_bad_first": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"], "502"),
    "chunk_nonhex": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"], "502"),
    "chunk_overflow": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                        b"10000000000000005\r\nhello\r\n0\r\n\r\n"], "502"),
    "chunk_negative": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                        b"-5\r\nhello\r\n0\r\n\r\n"], "502"),
    "chunk_size_space": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                          b"5 5\r\nhello\r\n0\r\n\r\n"], "502"),
    "chunk_no_crlf": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello"
                       b"5\r\nhello\r\n0\r\n\r\n"], "502"),
    "chunk_lf_only": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"], "502"),
    "chunk_ext_ctl": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n"
                       b"0\r\n\r\n"], "502"),
    "chunk_ext_bare_cr": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n"
                           b"0\r\n\r\n"], "502"),
    "chunk_ext_lf": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;a\nX: y\r\nhello\r\n"
                      b"0\r\n\r\n"], "502"),
    # The bad chunk in a later read: the head (and the first chunk) went
    # to the client already, so the client connection is closed. The pause
    # is long enough that a loaded fnproxy still reads the head alone.
    "chunk_nonhex_later": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0.3,
                            b"zz\r\n"], "cut"),
    # bodies that are not as long as declared
    "short_cl_close": ([OK_HEAD + b"Content-Length: 100\r\n\r\nhello", "close"], "cut"),
    "short_chunked_close": ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                             "close"], "cut"),
    "extra_after_cl": ([cl(b"hello", b"EXTRA")], "exact"),
    "extra_later": ([cl(b"hello"), 0.1, b"EXTRA"], "exact"),
    "extra_after_chunked": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\nEXTRA"], "exact"),
    "pipelined_response": ([cl(b"hello", cl(b"EVIL!"))], "exact"),
    "no_body_204_cl": ([b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"], "empty"),
    "no_body_204_te": ([b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n"], "empty"),
    "no_body_304_cl": ([b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"],
                       "empty"),
}

HEADERS = {
    "value_bare_cr": ([OK_HEAD + b"X-A: a\rContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"],
                      "502"),
    "value_bare_lf": ([OK_HEAD + b"X-A: a\nContent-Length: 1\r\nContent-Length: 5\r\n\r\n"
                       b"hello"], "502"),
    "value_lf_line_ends": ([b"HTTP/1.1 200 OK\nX-Evil: 1\nContent-Length: 5\n\nhello"], "502"),
    "value_nul": ([OK_HEAD + b"X-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "value_ctl": ([OK_HEAD + b"X-A: a\x1bb\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "name_nul": ([OK_HEAD + b"X-\x00A: b\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "obs_fold": ([OK_HEAD + b"X-A: a\r\n Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"],
                 "502"),
    "obs_fold_tab": ([OK_HEAD + b"X-A: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "first_line_folded": ([b"HTTP/1.1 200 OK\r\n X-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"],
                          "502"),
    "name_space_before_colon": ([OK_HEAD + b"X-A : b\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "name_no_colon": ([OK_HEAD + b"X-A b\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "reason_nul": ([b"HTTP/1.1 200 O\x00K\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "reason_ctl": ([b"HTTP/1.1 200 O\x1b[2JK\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"],
                   "502"),
}

STATUS = {
    "status_garbage": ([b"garbage\r\n\r\n"], "502"),
    "status_letters": ([b"HTTP/1.1 2x0 OK\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"],
                       "502"),
    "status_four_digits": ([b"HTTP/1.1 2000 OK\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"],
                           "502"),
    "status_600": ([b"HTTP/1.1 600 Odd\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "status_lowercase": ([b"http/1.1 200 OK\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"],
                         "502"),
    "http09": ([b"hello, no status line\n", "close"], "502"),
    "http2_preface": ([b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"],
                      "502"),
    "http2_status": ([b"HTTP/2 200\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "http12": ([b"HTTP/1.2 200 OK\r\nX-Evil: 1\r\nContent-Length: 5\r\n\r\nhello"], "502"),
    "switching_101": ([b"HTTP/1.1 101 Switching Protocols\r\nX-Evil: 1\r\nUpgrade: websocket\r\n"
                       b"Connection: upgrade\r\n\r\nEVIL FRAMES"], "502"),
    "interim_101_then_200": ([b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + cl(b"EVIL!")], "502"),
}

EGRESS = {k: v for d in (FRAMING, CHUNKS, HEADERS) for k, v in d.items()
          if k in ("cl_te", "cl_dup_same", "cl_dup_diff", "te_gzip_chunked", "extra_after_cl",
                   "pipelined_response", "chunk_bad_first", "chunk_nonhex",
                   "chunk_nonhex_later", "short_cl_close", "obs_fold",
                   "value_bare_cr")}

ALL = dict(FRAMING, **CHUNKS, **HEADERS, **STATUS)

# Bytes that arrive once the response was whole and the connection is back
# in the pool close it there, where no route is known to count them under.
NOT_COUNTED = {"extra_later"}


class Fn:
    """The malicious function: a RawServer playing ALL's scripts by path
    (/bad/NAME), /ok, /flood/N (N 100 Continue and N 103 Early Hints heads
    before a 200), /flood-forever (100 Continue every 2 ms) and
    /unsolicited (a 200, then a second response nobody asked for)."""

    def __init__(self, host="127.0.0.1", port=0):
        self.srv = RawServer(self._serve, host=host, port=port)
        self.addr = self.srv.addr

    def events(self, kind):
        with self.srv.lock:
            return [w for w, _ in self.srv.events if w[0] == kind]

    def conn_of(self, path):
        """The connection the last request for path arrived on."""
        got = [w[1] for w in self.events("req") if w[2] == path]
        check(got, "the function never got %s" % path)
        return got[-1]

    def _serve(self, s, srv):
        with srv.lock:
            n = srv.conns
        s.settimeout(0.1)
        buf = b""
        while not srv.stop.is_set():
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ", 2)[1].decode("latin-1")
                srv.note(("req", n, path))
                if path.startswith("/ok"):
                    body = b"conn %d" % n
                    s.sendall(cl(body))
                    continue
                script = self._script(path, n)
                for step in script:
                    if step == "close":
                        srv.note(("we_closed", n))
                        return
                    if isinstance(step, float):
                        time.sleep(step)
                    elif callable(step):
                        if not step(s, srv):
                            return
                    else:
                        s.sendall(step)
                srv.note(("played", n, path))
                if path.startswith("/flood/") or (path.startswith("/bad/")
                                                  and ALL[path[5:]][1] == "valid"):
                    continue
                self._watch(s, srv, n, buf)
                return
            chunk = srv.recv(s)
            if chunk is None:
                continue
            if not chunk:
                srv.note(("closed", n))
                return
            buf += chunk

    def _script(self, path, n):
        if path.startswith("/bad/"):
            return ALL[path[5:]][0]
        if path.startswith("/flood/"):
            k = int(path[7:])
            return [b"HTTP/1.1 100 Continue\r\n\r\n" * k
                    + b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n" * k
                    + cl(b"final")]
        if path == "/flood-forever":
            def forever(s, srv):
                end = time.monotonic() + 20
                while not srv.stop.is_set() and time.monotonic() < end:
                    try:
                        s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 20)
                    except OSError:
                        srv.note(("closed", n))
                        return False
                    time.sleep(0.002)
                return True
            return [forever]
        if path == "/unsolicited":
            return [cl(b"hello"), 0.3,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Evil: 1\r\n\r\nEVIL!"]
        fail("no script for %s" % path)

    def _watch(self, s, srv, n, buf):
        """After a script: note a reuse if anything arrives, and the close."""
        if buf:
            srv.note(("reused", n, buf[:100]))
        while not srv.stop.is_set():
            chunk = srv.recv(s)
            if chunk is None:
                continue
            if not chunk:
                srv.note(("closed", n))
                return
            srv.note(("reused", n, chunk[:100]))

    def close(self):
        self.srv.close()


def config(addr):
    return ("workers: 1\n"
            "admin: { listen: 127.0.0.1:$APORT }\n"
            "listeners:\n"
            "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: 5s }\n"
            "functions:\n"
            "  - name: fn\n"
            "    endpoints: [%s]\n"
            "    ingress:\n"
            "      routes:\n"
            "        - { name: r, match: { listener: public }, timeout: 2s }\n" % addr)


def protocol_errors(fp, egress=False):
    labels = {"reason": "protocol"}
    labels.update({"direction": "egress", "function": "app", "route": "wild"} if egress
                  else {"direction": "ingress", "function": "fn", "route": "r"})
    v = metric_value(fp.metrics(), "fnproxy_upstream_errors_total", labels)
    return int(v or 0)


def get(port, path, egress):
    """Bytes of a GET of path to the function (absolute-form on egress)."""
    if egress:
        return build_request("GET", "http://close.svc.test:8080" + path,
                             host="close.svc.test:8080")
    return build_request("GET", path)


def check_cut(c, what):
    """The client connection closes before a complete response arrives;
    returns what it got ("nothing", or "head 200")."""
    data = c.read_to_eof(timeout=5)
    if not data:
        return "closed, nothing sent"
    check(data.startswith(b"HTTP/1.1 200 "), "%s: got %r" % (what, data[:200]))
    head, _, body = data.partition(b"\r\n\r\n")
    hl = head.lower()
    check(b"x-evil" in hl, "%s: the head is not the function's: %r" % (what, head))
    if b"transfer-encoding: chunked" in hl:
        check(not body.endswith(b"0\r\n\r\n"), "%s: a cut chunked body ended cleanly: %r"
              % (what, data[:300]))
    else:
        m = [ln for ln in hl.split(b"\r\n") if ln.startswith(b"content-length:")]
        check(len(m) == 1, "%s: head %r" % (what, head))
        want = int(m[0].split(b":", 1)[1])
        check(len(body) < want, "%s: %d of %d body bytes, then close" % (what, len(body), want))
    return "head 200 sent, then closed (%d body bytes)" % len(body)


def probe(fp, fn, name, expect, egress=False, results=None):
    """One bad answer: checks the client, the upstream connection, the
    counter. Returns a line for the table."""
    path = "/bad/" + name
    before = protocol_errors(fp, egress)
    port = fp.eport if egress else fp.port
    c = Client(port, timeout=10)
    try:
        c.send(get(port, path, egress))
        if expect == "502":
            r = c.read_response(timeout=10)
            try:
                check_fnproxy_error(r, 502, "upstream_bad_response")
            except AssertionError as e:
                fail("%s: %s" % (name, e))
            check(r.header("x-evil") is None and b"EVIL" not in r.body,
                  "%s: the bad answer leaks into the 502: %r" % (name, r))
            seen = "502 upstream_bad_response"
            later = c.is_open(0.1)
            seen += ", client kept" if later else ", client closed"
        elif expect == "cut":
            seen = check_cut(c, name)
        else:
            r = c.read_response(timeout=10)
            if expect == "exact":
                check_eq((r.status, r.body), (200, b"hello"), "%s: status, body" % name)
                check(r.header("content-length") == "5" or r.chunked,
                      "%s: framing %r" % (name, r.headers))
            else:
                want = int(ALL[name][0][0][9:12])
                check_eq((r.status, r.body), (want, b""), "%s: status, body" % name)
                check(r.header("transfer-encoding") is None,
                      "%s: a %d with transfer-encoding: %r" % (name, want, r.headers))
                if want == 204:
                    check(r.header("content-length") is None,
                          "%s: a 204 with content-length: %r" % (name, r.headers))
            if name in NOT_COUNTED:
                # Late bytes: fnproxy can only know once they came (a
                # request sent before that would get them as its answer).
                n = fn.conn_of(path)
                wait_until(lambda: any(w[1] == n for w in fn.events("closed")), 3,
                           "%s: fnproxy to close the function's connection %d" % (name, n))
            # The client connection carries on with a clean next answer
            # (anything left of the bad one would be read as its head).
            c.send(get(port, "/ok-after-" + name, egress))
            r2 = c.read_response(timeout=10)
            check(r2.status == 200 and r2.body.startswith(b"conn "),
                  "%s: the next answer on the client connection: %r" % (name, r2))
            seen = "%d, exact body" % r.status
    finally:
        c.close()
    n = fn.conn_of(path)
    if not any(w[1] == n for w in fn.events("we_closed")):
        wait_until(lambda: any(w[1] == n for w in fn.events("closed")), 3,
                   "%s: fnproxy to close the function's connection %d" % (name, n))
    if egress:
        r = request(port, "GET", "http://close.svc.test:8080/ok-next", host="close.svc.test:8080")
    else:
        r = request(port, "GET", "/ok-next")
    check(r.status == 200 and r.body.startswith(b"conn "), "%s: the next request: %r" % (name, r))
    nxt = int(r.body.split()[1])
    check(nxt > n, "%s: the next request arrived on connection %d, the bad answer came on %d"
          % (name, nxt, n))
    reused = [w for w in fn.events("reused") if w[1] == n]
    check(not reused, "%s: fnproxy sent more on the bad connection: %r" % (name, reused))
    want = 0 if name in NOT_COUNTED else 1
    got = wait_for_count(fp, egress, before + want)
    time.sleep(0.05 if want == 0 else 0)
    got = protocol_errors(fp, egress)
    check_eq(got - before, want, "%s: fnproxy_upstream_errors_total{reason=\"protocol\"} increase"
             % name)
    if results is not None:
        results.append("%s | %s | upstream closed, next on a new one" % (name, seen))
    return seen


def wait_for_count(fp, egress, want, timeout=2):
    end = time.monotonic() + timeout
    while True:
        got = protocol_errors(fp, egress)
        if got >= want or time.monotonic() > end:
            return got
        time.sleep(0.02)


def run_table(ctx, table, egress=False):
    fn = Fn()
    try:
        fp = ctx.start_fnproxy(config(fn.addr))
        results, failures = [], []
        for name, (_, expect) in table.items():
            try:
                probe(fp, fn, name, expect, egress, results)
            except AssertionError as e:  # the rest of the table still runs
                failures.append(str(e))
        for line in results:
            ctx.note(line)
        check(not failures, "; ".join(failures))
    finally:
        fn.close()


@case()
def malicious_framing_headers(ctx):
    """Content-Length with Transfer-Encoding, transfer codings other than a
    lone chunked, several and non-numeric Content-Lengths: 502."""
    run_table(ctx, FRAMING)


@case()
def malicious_bodies(ctx):
    """Bad chunk sizes and chunk lines in the read that brought the head
    (502: nothing was sent) or in a later one (the client connection is
    closed after the head), bodies shorter than declared then a close (the
    same), bodies longer than declared and a response after the response
    (the client gets exactly the declared one), a 204 or 304 with a body
    (the status without it)."""
    run_table(ctx, CHUNKS)


@case()
def malicious_header_bytes(ctx):
    """CR or LF alone, NUL and other control bytes in header values and
    names, obs-fold, whitespace before the colon, a line without a colon,
    control bytes in the reason phrase: 502."""
    run_table(ctx, HEADERS)


@case()
def malicious_status_lines(ctx):
    """Status line garbage, HTTP/0.9, an HTTP/2 preface or status line,
    HTTP/1.2, a 101 to a request that asked for no upgrade: 502."""
    run_table(ctx, STATUS)


@case()
def malicious_interim_floods(ctx):
    """1xx heads are dropped, never forwarded; a flood of them costs no
    memory (each is parsed and dropped from the read buffer) and is bounded
    by the route's timeout: 500 100 Continue and 500 103 Early Hints before
    a 200 get the 200; 100 Continue without end gets 504 at the timeout,
    and that connection is closed and not reused."""
    fn = Fn()
    try:
        fp = ctx.start_fnproxy(config(fn.addr))
        hwm0 = fp.vm_hwm_kib()
        c = ctx.connect(fp.port)
        c.send(build_request("GET", "/flood/500"))
        r = c.read_head()
        check_eq(r.status, 200, "status after 1000 interim heads (none forwarded)")
        c.read_body(r)
        check_eq(r.body, b"final", "body after the flood")
        t0 = time.monotonic()
        before = protocol_errors(fp)
        r = request(fp.port, "GET", "/flood-forever")
        took = time.monotonic() - t0
        check_fnproxy_error(r, 504, "upstream_timeout")
        check(1.8 < took < 4, "504 after %.2fs of 100 Continue (route timeout 2s)" % took)
        n = fn.conn_of("/flood-forever")
        wait_until(lambda: any(w[1] == n for w in fn.events("closed")), 3,
                   "fnproxy to close the flooding connection")
        r = request(fp.port, "GET", "/ok")
        check(r.status == 200 and int(r.body.split()[1]) > n, "the next request: %r" % r)
        check_eq(protocol_errors(fp) - before, 0, "protocol errors for a flood (a timeout)")
        hwm1 = fp.vm_hwm_kib()
        if hwm0 and hwm1:
            check(hwm1 - hwm0 < 16 << 10, "VmHWM grew %d KiB over the floods" % (hwm1 - hwm0))
            ctx.note("VmHWM %d -> %d KiB over the floods" % (hwm0, hwm1))
    finally:
        fn.close()


@case()
def malicious_unsolicited_response(ctx):
    """A response on an idle pooled connection, before any request: fnproxy
    closes that connection when it arrives and never gives it to a client;
    the next request goes on a new connection and gets its own answer."""
    fn = Fn()
    try:
        fp = ctx.start_fnproxy(config(fn.addr))
        r = request(fp.port, "GET", "/unsolicited")
        check_eq((r.status, r.body), (200, b"hello"), "the solicited answer")
        n = fn.conn_of("/unsolicited")
        wait_until(lambda: fn.events("played"), 3, "the function to send the unsolicited answer")
        wait_until(lambda: any(w[1] == n for w in fn.events("closed")), 3,
                   "fnproxy to close the connection the unsolicited answer came on")
        for i in range(3):
            r = request(fp.port, "GET", "/ok%d" % i)
            check(r.status == 200 and r.body.startswith(b"conn ") and int(r.body.split()[1]) > n
                  and r.header("x-evil") is None, "request %d after: %r" % (i, r))
        check(not [w for w in fn.events("reused") if w[1] == n],
              "a request was sent on the connection that had the unsolicited answer")
    finally:
        fn.close()


@case(**eg.NS)
def malicious_egress(ctx):
    """The same through a function's egress listener: an absolute-form
    http:// call to a destination (close.svc.test, rule wild) that answers
    with CL+TE, two Content-Lengths, a body longer than declared, bad
    chunks (in the head's read: 502; in a later read: a close after the
    head), a short body then a close, obs-fold, a bare CR; then a
    response nobody asked for on an idle pooled destination connection."""
    fn = Fn(host="127.0.1.7", port=8080)
    try:
        fp = eg.start_egress(ctx)
        results, failures = [], []
        for name, (_, expect) in EGRESS.items():
            try:
                probe(fp, fn, name, expect, True, results)
            except AssertionError as e:
                failures.append(str(e))
        for line in results:
            ctx.note("egress " + line)
        check(not failures, "; ".join(failures))
        r = eg.via(fp.eport, "http://close.svc.test:8080/unsolicited")
        check_eq((r.status, r.body), (200, b"hello"), "egress: the solicited answer")
        n = fn.conn_of("/unsolicited")
        wait_until(lambda: any(w[1] == n for w in fn.events("closed")), 3,
                   "egress: fnproxy to close the connection the unsolicited answer came on")
        r = eg.via(fp.eport, "http://close.svc.test:8080/ok")
        check(r.status == 200 and int(r.body.split()[1]) > n and r.header("x-evil") is None,
              "egress: the request after the unsolicited answer: %r" % r)
    finally:
        fn.close()


@case()
def malicious_control_split_heads(ctx):
    """The control: a valid response head that arrives over several reads
    (split inside a header name, inside a value, before the blank line,
    after an interim 100) is a valid response: 200 with every header whole,
    and the connection is reused."""
    splits = [
        [b"HTTP/1.1 200 OK\r\nX-Ab", 0.15, b"cd: v\r\nContent-Length: 5\r\n\r\nhello"],
        [b"HTTP/1.1 200 OK\r\nX-Abcd: ab", 0.15, b"c\r\nContent-Length: 5\r\n\r\nhello"],
        [b"HTTP/1.1 200 OK\r\nX-Abcd: abc\r\nContent-Length: 5\r\n", 0.15, b"\r\nhello"],
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", 0.15,
         b"00 OK\r\nX-Abcd: abc\r\nContent-Length: 5\r\n\r\nhello"],
    ]
    for i, script in enumerate(splits):
        ALL["split%d" % i] = (script, "valid")
    fn = Fn()
    try:
        fp = ctx.start_fnproxy(config(fn.addr))
        for i in range(len(splits)):
            r = request(fp.port, "GET", "/bad/split%d" % i)
            check_eq((r.status, r.body), (200, b"hello"), "split %d: status, body" % i)
            if i < 3:
                check_eq(r.header("x-abcd"), "v" if i == 0 else "abc", "split %d: x-abcd" % i)
        check_eq(protocol_errors(fp), 0, "protocol errors for valid answers")
    finally:
        fn.close()
