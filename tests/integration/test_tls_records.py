"""TLS records after the handshake, end to end: what fnproxy's own TLS 1.3
record layer (proxy/tlsrec.c) and the TLS 1.2 (OpenSSL) path do once a
connection carries requests.

  - KeyUpdate: s_client's "K" and "k" commands between keep-alive requests
    on one connection; every update_requested is answered (answers may
    coalesce) before the next response, with update_not_requested.
  - max_fragment_length 512 (s_client -maxfraglen): a 20 KB answer arrives
    whole, in records of at most 512 bytes of content (512 + 256 bytes of
    ciphertext), over 1.3 and 1.2.
  - close_notify: a client's close_notify is answered (ssl unwrap() returns
    cleanly), and an idle connection closed at keepalive_timeout says
    close_notify first.
  - Record errors: a record whose tag does not verify, or a plaintext
    ChangeCipherSpec after a TLS 1.3 handshake, gets the right fatal alert
    and a close, counts once in fnproxy_tls_record_errors_total with the
    right reason, logs the warning line, and forwards nothing; the log line
    is rate limited while the counter counts every connection.

The raw cases drive Python's ssl.SSLObject over memory BIOs on a plain
socket, so the test holds every byte: it seals a record with the client's
real keys and flips one bit before sending it. Every case makes its own
development PKI and talks only to 127.0.0.1; openssl and python3 come with
scripts/deps.sh, so a missing tool fails the case.
"""

import os
import re
import socket
import ssl
import subprocess
import threading
import time

from harness import (HOST, CaseFailure, Client, build_request, case, check, check_eq, fail,
                     listener_reasons, metric_value, parse_echo, settle, wait_for, wait_reasons)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(ROOT, "certs", "make-certs.sh")

# The reasons fnproxy_tls_record_errors_total may carry (proxy/tls.h).
RECORD_REASONS = {"bad_record_mac", "record_overflow", "unexpected_message", "decode_error",
                  "illegal_parameter", "empty_records", "warning_alerts", "peer_alert",
                  "protocol", "internal"}

# What a client's OpenSSL calls the fatal alert fnproxy sends, by reason.
ALERT_OF = {"bad_record_mac": "SSLV3_ALERT_BAD_RECORD_MAC",
            "unexpected_message": "SSLV3_ALERT_UNEXPECTED_MESSAGE"}


# ---------------------------------------------------------------------------
# fnproxy with TLS listeners


def make_certs(ctx):
    """A development PKI in the case's temp dir (see certs/README.md)."""
    d = ctx.path("pki")
    env = dict(os.environ, FNPROXY_CERT_CLIENTS="")  # no client certificates: not needed here
    try:
        p = subprocess.run(["sh", MAKE_CERTS, d], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60, cwd=ROOT, env=env)
    except FileNotFoundError as e:
        fail("cannot run make-certs.sh: %s" % e)
    if p.returncode != 0:
        fail("make-certs.sh %s exited %d: %s" % (d, p.returncode, p.stderr.decode()[-500:]))
    for f in ("ca.crt", "server.crt", "server.key"):
        check(os.path.exists(os.path.join(d, f)), "make-certs.sh made no %s" % f)
    return d


def start(ctx, listeners, workers=2):
    """fnbackend (recording) and fnproxy with one TLS listener per entry of
    listeners ({name: extra listener keys}), each routed to the backend.
    Returns (pki dir, backend, fnproxy)."""
    d = make_certs(ctx)
    b = ctx.start_backend()
    text = "workers: $WORKERS\nadmin: { listen: 127.0.0.1:$APORT }\nlisteners:\n"
    for name, extra in listeners.items():
        text += ("  - name: %s\n    listen: 127.0.0.1:$PORT_%s\n%s"
                 "    tls:\n      certificates: [{ cert: $D/server.crt, key: $D/server.key }]\n"
                 '      min_version: "1.2"\n' % (name, name, extra))
    text += "functions:\n  - name: f\n    endpoints: [127.0.0.1:$B]\n    ingress:\n      routes:\n"
    for name in listeners:
        text += ("        - { name: r_%s, match: { listener: %s, path_prefix: / } }\n"
                 % (name, name))
    fp = ctx.start_fnproxy(text, workers=workers, listeners=tuple(listeners), D=d, B=b.port)
    return d, b, fp


def client_ctx(ca, version):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(ca)
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    c.minimum_version = c.maximum_version = v
    return c


def record_errors(fp, listener):
    got = listener_reasons(fp, "fnproxy_tls_record_errors_total", listener)
    bad = set(got) - RECORD_REASONS
    check(not bad, "undocumented record error reason(s) %s in %r" % (sorted(bad), got))
    return got


def handshake_errors(fp, listener):
    return listener_reasons(fp, "fnproxy_tls_handshake_errors_total", listener)


def wait_record_errors(fp, listener, total, timeout=3):
    """Waits until the listener's record errors add up to total; returns them."""
    return wait_reasons(lambda: record_errors(fp, listener), total, timeout)


def log_lines(fp, listener):
    """fnproxy's warning lines for TLS connections of listener that failed
    after the handshake: [(why, reason)]."""
    pat = (r"listener %s: TLS connection from 127\.0\.0\.1 failed after the handshake: "
           r"(.+) \(([a-z_]+)\)$" % re.escape(listener))
    return re.findall(pat, fp.stderr_text(), re.M)


def echo_response(raw):
    """Parses one /echo answer from bytes (content-length framed):
    (status, {header: value}, echoed request head+body, rest)."""
    i = raw.find(b"\r\n\r\n")
    if i < 0:
        fail("no end of head in %r" % raw[:300])
    lines = raw[:i].decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.1 (\d{3}) ", lines[0])
    if not m:
        fail("bad status line %r" % lines[0][:100])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    cl = hdrs.get("content-length")
    if cl is None:
        fail("answer without content-length: %r" % raw[:300])
    body = raw[i + 4:i + 4 + int(cl)]
    if len(body) < int(cl):
        fail("answer body %d of %s bytes" % (len(body), cl))
    return int(m.group(1)), hdrs, body, raw[i + 4 + int(cl):]


def bytes_body(n):
    """What fnbackend's /bytes/N sends (one 256 KiB piece of a..z)."""
    return bytes(97 + i % 26 for i in range(n))


# ---------------------------------------------------------------------------
# a TLS client whose bytes the test holds


class MemTLS:
    """A TLS client on a plain socket through ssl.SSLObject and two memory
    BIOs: ciphertext passes through the test, which may alter or forge it.
    Every wait is bounded by timeout."""

    def __init__(self, ctx, port, ca, version, timeout=5):
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx.socks.append(self)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = client_ctx(ca, version).wrap_bio(self.inc, self.out,
                                                    server_hostname="localhost")
        self.plain = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                if not self._recv(deadline):
                    fail("fnproxy closed during the handshake")
        self.flush()  # the client's Finished
        check_eq(self.obj.version(), "TLSv" + version, "negotiated version")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _recv(self, deadline):
        """One read from the socket into the incoming BIO; False at EOF."""
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out waiting for fnproxy")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            fail("timed out waiting for fnproxy")
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.inc.write(data)
        return True

    def _drain(self):
        while True:
            try:
                data = self.obj.read(65536)
            except ssl.SSLWantReadError:
                return
            if not data:
                return
            self.plain += data

    def seal(self, data):
        """The records that carry data, for the test to send (or not)."""
        self.obj.write(data)
        return self.out.read()

    def request(self, data):
        """Sends a request, returns its whole (content-length) answer."""
        self.sock.sendall(self.seal(data))
        deadline = time.monotonic() + self.timeout
        while True:
            self._drain()
            i = self.plain.find(b"\r\n\r\n")
            if i >= 0:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\r$", bytes(self.plain[:i + 2]))
                if m is None:
                    fail("answer without content-length: %r" % bytes(self.plain[:300]))
                end = i + 4 + int(m.group(1))
                if len(self.plain) >= end:
                    raw = bytes(self.plain[:end])
                    del self.plain[:end]
                    return raw
            if not self._recv(deadline):
                fail("fnproxy closed before a whole answer (have %r)" % bytes(self.plain[:300]))

    def read_to_close(self, timeout=3):
        """Reads until fnproxy closes; returns what the client's TLS makes
        of it: ("alert", OpenSSL's reason), ("close_notify", None), or
        ("data", bytes) if plaintext came instead. Fails if it stays open."""
        deadline = time.monotonic() + timeout
        try:
            while self._recv(deadline):
                pass
        except CaseFailure:
            fail("the connection is still open %ds after the bad bytes" % timeout)
        try:
            self._drain()
        except ssl.SSLError as e:
            return "alert", e.reason
        if self.plain:
            return "data", bytes(self.plain)
        return "close_notify", None


# ---------------------------------------------------------------------------
# openssl s_client driven through its stdin


class SClient:
    """openssl s_client with stdin, stdout and stderr as pipes; a thread
    collects everything it prints, in order (its -msg callback flushes
    after each message, so the transcript interleaves protocol messages
    and data as they happened)."""

    def __init__(self, port, args):
        cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)] + list(args)
        try:
            self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
        except FileNotFoundError:
            fail("openssl is not installed (scripts/deps.sh installs it)")
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        for chunk in iter(lambda: self.p.stdout.read1(65536), b""):
            with self.lock:
                self.buf.extend(chunk)

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def send(self, s):
        self.p.stdin.write(s.encode())
        self.p.stdin.flush()

    def wait(self, pred, what, timeout=10):
        if not wait_for(lambda: pred(self.text()), timeout):
            fail("s_client: %s within %ds; transcript ends %r" % (what, timeout,
                                                                self.text()[-1200:]))

    def finish(self, timeout=10):
        """Closes stdin and waits for s_client to exit; its exit status."""
        try:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                return self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                fail("s_client did not exit within %ds" % timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
            self.t.join(timeout=5)


# One protocol message as -msg prints it: a "<<< " (received) or ">>> "
# (sent) line, then its bytes as lines of hex indented by four spaces.
MSG_RE = re.compile(r"(<<<|>>>) ([^\n]*)\n((?:    [0-9a-f]{2}[^\n]*\n)*)")
KEY_UPDATE_RE = re.compile(r"^TLS 1\.3, Handshake \[length 0005\], KeyUpdate$")


def msg_events(text):
    """(position, "sent"|"recv", request_update) for each KeyUpdate in an
    s_client -msg transcript."""
    out = []
    for m in MSG_RE.finditer(text):
        if not KEY_UPDATE_RE.match(m.group(2)):
            continue
        hexbytes = m.group(3).split()
        if hexbytes[:4] != ["18", "00", "00", "01"] or len(hexbytes) != 5:
            fail("KeyUpdate bytes %r" % hexbytes)
        out.append((m.start(), "sent" if m.group(1) == ">>>" else "recv", int(hexbytes[4], 16)))
    return out


def record_headers(text, direction="<<<"):
    """[(content type, length)] of the records of one direction in -msg output."""
    out = []
    for m in MSG_RE.finditer(text):
        if m.group(1) != direction or not m.group(2).endswith("RecordHeader [length 0005]"):
            continue
        h = [int(x, 16) for x in m.group(3).split()]
        check(len(h) == 5, "record header bytes %r" % m.group(3))
        out.append((h[0], h[3] << 8 | h[4]))
    return out


# ---------------------------------------------------------------------------
# KeyUpdate


@case(timeout=60)
def key_updates_between_keepalive_requests(ctx):
    """request, K, request, k, request, K, K, request on one s_client
    connection: each answer is the backend's echo of its own request, and
    every K (update_requested) gets a KeyUpdate back (update_not_requested,
    answers to K, K may coalesce into one) before the next response."""
    d, b, fp = start(ctx, {"public": ""})
    sc = SClient(fp.ports["public"], ["-tls1_3", "-CAfile", d + "/ca.crt", "-servername",
                                      "localhost", "-crlf", "-msg"])
    plan = ["R", "K", "R", "k", "R", "K", "K", "R"]
    n_req = n_ku = 0
    try:
        for step in plan:
            if step == "R":
                n_req += 1
                last = n_req == plan.count("R")
                sc.send("GET /echo?n=%d HTTP/1.1\nHost: localhost\nx-n: %d\n%s\n"
                        % (n_req, n_req, "Connection: close\n" if last else ""))
                # The echo of request n ends its answer.
                done = re.compile(r"GET /echo\?n=%d HTTP/1\.1\r\n.*?\r\n\r\n" % n_req, re.S)
                sc.wait(lambda t: done.search(t), "no answer to request %d" % n_req)
            else:
                # s_client takes a command from a read of its own and drops
                # the rest of that read: wait until it has sent the update.
                n_ku += 1
                sc.send(step + "\n")
                sc.wait(lambda t, k=n_ku: sum(1 for e in msg_events(t) if e[1] == "sent") >= k,
                        "sent no KeyUpdate for command %d (%s)" % (n_ku, step))
        # Connection: close on the last request: fnproxy answers, then
        # says close_notify and closes; s_client exits by itself.
        sc.wait(lambda t: "closed\n" in t, "connection not closed after Connection: close")
        rc = sc.finish()
    finally:
        if sc.p.poll() is None:
            sc.p.kill()
            sc.p.wait()
    text = sc.text()
    check_eq(text.count("CONNECTED("), 1, "TCP connections s_client made")
    check(re.search(r"^New, TLSv1\.3, Cipher is \S+$", text, re.M) is not None,
          "no TLS 1.3 handshake: %r" % text[-600:])
    check_eq(rc, 0, "s_client exit status")

    # Responses, by position in the transcript; the data without the
    # protocol messages and s_client's own lines.
    starts = [m.start() for m in re.finditer(r"HTTP/1\.1 \d{3} ", text)]
    check_eq(len(starts), 4, "status lines in the transcript")
    clean = MSG_RE.sub("", text).replace("read R BLOCK\n", "").replace("KEYUPDATE\n", "")
    rest = clean[clean.index("HTTP/1.1 "):].encode("latin-1", "replace")
    ids = set()
    for n in range(1, 5):
        status, hdrs, body, rest = echo_response(rest)
        check_eq(status, 200, "status of answer %d" % n)
        check_eq(hdrs.get("x-backend"), "backend", "x-backend of answer %d" % n)
        line, ehdrs, ebody = parse_echo(body)
        check_eq(line, "GET /echo?n=%d HTTP/1.1" % n, "request line the backend got (%d)" % n)
        check_eq([v for k, v in ehdrs if k.lower() == "x-n"], [str(n)], "x-n echoed (%d)" % n)
        check_eq(ebody, b"", "request body echoed (%d)" % n)
        check_eq([v for k, v in ehdrs if k.lower() == "x-request-id"], [hdrs["x-request-id"]],
                 "answer %d is the one to its own request" % n)
        ids.add(hdrs["x-request-id"])
        if n < 4:
            check(rest.lstrip(b"\r\n")[:9] == b"HTTP/1.1 ",
                  "bytes between answers %d and %d: %r" % (n, n + 1, rest[:200]))
    check_eq(len(ids), 4, "distinct request ids")
    check_eq(hdrs.get("connection"), "close", "connection header of the last answer")

    # KeyUpdates, in the order they happened around the answers.
    events = msg_events(text)
    sent = [e for e in events if e[1] == "sent"]
    recv = [e for e in events if e[1] == "recv"]
    check_eq([e[2] for e in sent], [1, 0, 1, 1], "request_update of the KeyUpdates s_client sent")
    check(all(e[2] == 0 for e in recv),
          "fnproxy's KeyUpdates must be update_not_requested: %r" % recv)
    # Between answer n and answer n+1: which updates were sent, and how
    # many came back after the last update_requested of that gap.
    for gap in range(3):
        lo, hi = starts[gap], starts[gap + 1]
        s_gap = [e for e in sent if lo < e[0] < hi]
        want = {0: [1], 1: [0], 2: [1, 1]}[gap]
        check_eq([e[2] for e in s_gap], want, "KeyUpdates sent between answers %d and %d"
                 % (gap + 1, gap + 2))
        asks = [e[0] for e in s_gap if e[2] == 1]
        if asks:
            answers = [e for e in recv if asks[-1] < e[0] < hi]
            check(len(answers) >= 1,
                  "no KeyUpdate from fnproxy between the update_requested sent after answer "
                  "%d and answer %d" % (gap + 1, gap + 2))
    before_first = [e for e in recv if e[0] < sent[0][0]]
    check_eq(before_first, [], "KeyUpdates from fnproxy before any was asked for")
    after_k = [e for e in recv if sent[1][0] < e[0] < sent[2][0]]
    check_eq(after_k, [], "KeyUpdates from fnproxy after an update_not_requested")
    check(2 <= len(recv) <= 3, "fnproxy sent %d KeyUpdates for 3 update_requested (2 of "
          "them back to back): %r" % (len(recv), recv))
    closing = re.search(r"<<< TLS 1\.3, Alert \[length 0002\], warning close_notify\n",
                        text[starts[3]:])
    check(closing is not None, "no close_notify from fnproxy after the Connection: close answer")
    check_eq(record_errors(fp, "public"), {}, "record errors after key updates")
    check_eq(handshake_errors(fp, "public"), {}, "handshake errors after key updates")
    ctx.note("fnproxy answered 3 update_requested with %d KeyUpdates" % len(recv))


# ---------------------------------------------------------------------------
# max_fragment_length


@case(timeout=60)
def max_fragment_length_512_big_answer(ctx):
    """A client that asked for max_fragment_length 512 gets a 20000-byte
    answer whole, in records of no more than 512 bytes of content (OpenSSL
    refuses bigger ones: "data length too long"). TLS 1.3 records are
    sealed by fnproxy, TLS 1.2 ones by OpenSSL."""
    d, b, fp = start(ctx, {"public": ""}, workers=1)
    size = 20000
    req = b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % size
    for flag in ("-tls1_3", "-tls1_2"):
        msgs = ctx.path("msg%s.txt" % flag)
        cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, fp.ports["public"]), flag,
               "-maxfraglen", "512", "-CAfile", d + "/ca.crt", "-servername", "localhost",
               "-quiet", "-msg", "-msgfile", msgs]
        try:
            p = subprocess.run(cmd, input=req, capture_output=True, timeout=15)
        except FileNotFoundError:
            fail("openssl is not installed (scripts/deps.sh installs it)")
        except subprocess.TimeoutExpired:
            fail("%s -maxfraglen 512: s_client still running after 15s" % flag)
        err = p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 0, "%s -maxfraglen 512: s_client exit status (%s)"
                 % (flag, err[-400:]))
        check("error" not in err.lower(), "%s -maxfraglen 512: s_client said %r"
              % (flag, err[-400:]))
        i = p.stdout.find(b"\r\n\r\n")
        check(p.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and i > 0,
              "%s -maxfraglen 512: answer %r" % (flag, p.stdout[:200]))
        check(re.search(rb"(?im)^content-length: %d\r$" % size, p.stdout[:i + 2]) is not None,
              "%s: content-length of the answer: %r" % (flag, p.stdout[:i]))
        body = p.stdout[i + 4:]
        check_eq(len(body), size, "%s -maxfraglen 512: body bytes received" % flag)
        check(body == bytes_body(size), "%s -maxfraglen 512: body differs from /bytes" % flag)
        with open(msgs) as f:
            text = f.read()
        if flag == "-tls1_3":
            check("EncryptedExtensions" in text, "-tls1_3: no TLS 1.3 handshake: %r" % text[:500])
        recs = [(t, n) for t, n in record_headers(text) if t == 23]  # application_data
        check(len(recs) >= size // 512,
              "%s: %d application_data records for a %d-byte answer: fragments not honoured"
              % (flag, len(recs), size))
        big = [n for t, n in recs if n > 512 + 256]
        check(not big, "%s: records of %r bytes with max_fragment_length 512" % (flag, big[:5]))
        ctx.note("%s -maxfraglen 512: %d records, largest %d bytes"
                 % (flag, len(recs), max(n for _, n in recs)))
    check_eq(record_errors(fp, "public"), {}, "record errors")


# ---------------------------------------------------------------------------
# close_notify


class TLSClient(Client):
    """harness.Client over a Python ssl socket (the handshake happens here)."""

    def __init__(self, ctx, port, sctx, timeout=5):
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # Ragged EOFs raise: a close without close_notify must show.
            self.sock = sctx.wrap_socket(raw, server_hostname="localhost",
                                         suppress_ragged_eofs=False)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout
        ctx.socks.append(self)


@case(timeout=60)
def close_notify_answered_and_sent_on_idle_close(ctx):
    """A client that says close_notify after an answer on a keep-alive
    connection gets fnproxy's close_notify back (ssl's unwrap() returns
    instead of raising SSLEOFError), and then a TCP close. An idle
    connection that reaches keepalive_timeout gets close_notify before the
    close. TLS 1.3 (fnproxy's record layer) and 1.2 (OpenSSL) each."""
    d, b, fp = start(ctx, {"public": "", "idle": "    keepalive_timeout: 1s\n"})
    versions = ("1.3", "1.2")
    # keepalive_timeout: 1s on listener "idle": both connections go idle
    # now and are checked last, so that their waits overlap the rest.
    idle = []
    for version in versions:
        c = TLSClient(ctx, fp.ports["idle"], client_ctx(d + "/ca.crt", version))
        c.send(build_request("GET", "/echo?idle=%s" % version, host="localhost"))
        check_eq(c.read_response().status, 200, "%s: status on the idle listener" % version)
        idle.append((version, c, time.monotonic()))

    for version in versions:
        c = TLSClient(ctx, fp.ports["public"], client_ctx(d + "/ca.crt", version))
        check_eq(c.sock.version(), "TLSv" + version, "negotiated version")
        c.send(build_request("GET", "/echo?cn=%s" % version, host="localhost"))
        r = c.read_response()
        check_eq(r.status, 200, "%s: status before close_notify" % version)
        check(r.body.startswith(b"GET /echo?cn=%s HTTP/1.1\r\n" % version.encode()),
              "%s: answer %r" % (version, r.body[:60]))
        check(c.is_open(0.2), "%s: keep-alive connection closed after the answer" % version)
        t0 = time.monotonic()
        c.sock.settimeout(5)
        try:
            raw = c.sock.unwrap()  # sends close_notify, waits for fnproxy's
        except ssl.SSLEOFError as e:
            fail("%s: fnproxy closed without answering close_notify: %s" % (version, e))
        except (ssl.SSLError, OSError) as e:
            fail("%s: unwrap() after our close_notify: %s: %s" % (version, type(e).__name__, e))
        took = time.monotonic() - t0
        check(took < 2, "%s: close_notify answered after %.1fs" % (version, took))
        raw.settimeout(3)
        try:
            tail = raw.recv(100)
        except socket.timeout:
            fail("%s: TCP connection still open 3s after close_notify both ways" % version)
        except ConnectionResetError:
            fail("%s: connection reset after close_notify both ways" % version)
        check_eq(tail, b"", "%s: bytes after fnproxy's close_notify" % version)
        raw.close()

    for version, c, t0 in idle:
        c.sock.settimeout(max(0.1, t0 + 5 - time.monotonic()))
        try:
            got = c.sock.recv(100)  # b"" only after a close_notify
        except ssl.SSLEOFError as e:
            fail("%s: idle connection closed at keepalive_timeout without close_notify (%s)"
                 % (version, e))
        except socket.timeout:
            fail("%s: idle connection still open 5s after the answer (keepalive_timeout 1s)"
                 % version)
        except (ssl.SSLError, OSError) as e:
            fail("%s: idle close: %s: %s" % (version, type(e).__name__, e))
        took = time.monotonic() - t0
        check_eq(got, b"", "%s: data on an idle connection" % version)
        check(0.5 < took < 5, "%s: idle connection closed after %.1fs (keepalive_timeout 1s)"
              % (version, took))
        c.close()
    for name in ("public", "idle"):
        check_eq(record_errors(fp, name), {}, "record errors on %s" % name)
        check_eq(handshake_errors(fp, name), {}, "handshake errors on %s" % name)


# ---------------------------------------------------------------------------
# record errors: counted, logged, alert sent, nothing forwarded


def flip_a_bit(records):
    """The same records with one bit flipped in the middle of the first
    record's encrypted part: its authentication tag no longer verifies."""
    check(len(records) > 5 + 16 and records[0] == 23,
          "sealed an application_data record (%r)" % records[:5])
    n = 5 + (records[3] << 8 | records[4])
    bad = bytearray(records)
    bad[5 + (n - 5) // 2] ^= 0x01
    return bytes(bad)


def check_record_error(ctx, version, attack, reason):
    """One connection: handshake, a good request and its answer, then the
    attack's bytes. fnproxy must send the alert named after reason, close,
    count reason once and log it, and forward nothing but the good request."""
    listener = "sec"
    d, b, fp = start(ctx, {listener: ""})
    port = fp.ports[listener]
    hs_before = handshake_errors(fp, listener)
    check_eq(record_errors(fp, listener), {}, "record errors at start")
    t = MemTLS(ctx, port, d + "/ca.crt", version)
    raw = t.request(build_request("GET", "/echo?good", host="localhost"))
    status, hdrs, body, _ = echo_response(raw)
    check_eq(status, 200, "status of the good request")
    check(body.startswith(b"GET /echo?good HTTP/1.1\r\n"), "answer to the good request %r"
          % body[:60])
    if attack == "flip":
        bad = flip_a_bit(t.seal(build_request("GET", "/echo?forged", host="localhost")))
    elif attack == "ccs":
        bad = b"\x14\x03\x03\x00\x01\x01"  # a plaintext ChangeCipherSpec
    else:
        fail("unknown attack %r" % attack)
    t.sock.sendall(bad)
    what, detail = t.read_to_close()
    check_eq((what, detail), ("alert", ALERT_OF[reason]),
             "TLS %s, %s: what the client got before the close" % (version, attack))
    got = wait_record_errors(fp, listener, 1)
    check_eq(got, {reason: 1}, "TLS %s, %s: fnproxy_tls_record_errors_total{listener=%r}"
             % (version, attack, listener))
    check(metric_value(fp.metrics(), "fnproxy_tls_record_errors_total",
                       {"listener": listener, "reason": reason}) == 1,
          "series fnproxy_tls_record_errors_total{listener=%r,reason=%r} is not 1"
          % (listener, reason))
    check_eq(handshake_errors(fp, listener), hs_before,
             "handshake errors (a record error is not one)")
    wait_for(lambda: log_lines(fp, listener), 3)
    lines = log_lines(fp, listener)
    check_eq([r for _, r in lines], [reason], "TLS %s, %s: warning lines in fnproxy's stderr"
             % (version, attack))
    rec = settle(b)
    check_eq(rec.count(b" HTTP/1.1\r\n"), 1, "requests the backend received")
    check(rec.startswith(b"GET /echo?good HTTP/1.1\r\n"), "backend record %r" % rec[:100])
    check(b"forged" not in rec, "the backend received bytes of the bad record: %r" % rec)
    # The listener still serves.
    t2 = MemTLS(ctx, port, d + "/ca.crt", version)
    status, _, body, _ = echo_response(t2.request(build_request("GET", "/echo?after",
                                                                host="localhost")))
    check_eq((status, body[:24]), (200, b"GET /echo?after HTTP/1.1"), "a request afterwards")
    ctx.note("TLS %s %s: log line %r" % (version, attack, lines[0][0]))


@case(timeout=60)
def bad_record_mac_tls13(ctx):
    check_record_error(ctx, "1.3", "flip", "bad_record_mac")


@case(timeout=60)
def bad_record_mac_tls12(ctx):
    check_record_error(ctx, "1.2", "flip", "bad_record_mac")


@case(timeout=60)
def plaintext_change_cipher_spec_after_tls13_handshake(ctx):
    check_record_error(ctx, "1.3", "ccs", "unexpected_message")


@case(timeout=90)
def record_error_log_is_rate_limited(ctx):
    """20 connections in a row that each send a forged record right after
    the handshake: 20 counted, but the warning is logged at most once a
    second per worker."""
    workers = 2
    n = 20
    d, b, fp = start(ctx, {"flood": ""}, workers=workers)
    port = fp.ports["flood"]
    t0 = time.monotonic()
    for i in range(n):
        t = MemTLS(ctx, port, d + "/ca.crt", "1.3")
        t.sock.sendall(flip_a_bit(t.seal(build_request("GET", "/echo?forged", host="localhost"))))
        what, detail = t.read_to_close()
        check_eq((what, detail), ("alert", ALERT_OF["bad_record_mac"]),
                 "connection %d: what the client got" % i)
        t.close()
    got = wait_record_errors(fp, "flood", n)
    elapsed = time.monotonic() - t0
    check_eq(got, {"bad_record_mac": n}, "fnproxy_tls_record_errors_total after %d forged "
             "records" % n)
    lines = log_lines(fp, "flood")
    check(all(r == "bad_record_mac" for _, r in lines), "reasons logged: %r" % lines)
    limit = workers * (int(elapsed) + 1)
    check(1 <= len(lines) <= limit, "%d warning lines for %d failed connections in %.2fs "
          "(at most %d: once a second per worker)" % (len(lines), n, elapsed, limit))
    check_eq(settle(b, 0.2), b"", "bytes the backend received")
    ctx.note("%d failed connections in %.2fs: %d log lines" % (n, elapsed, len(lines)))
