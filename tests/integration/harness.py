"""Integration test harness for fnproxy (Python 3 standard library only).

A case is a function decorated with @case. It receives a Ctx, which starts
fnbackend and fnproxy processes on ephemeral 127.0.0.1 ports, remembers
them, and stops them when the case ends. run.py runs each case in its own
child process and process group, under a timeout, so a hung case is killed
together with everything it started.

Helpers here speak HTTP/1.1 over raw sockets on purpose: the cases send
malformed bytes, pipeline, half-send bodies and watch for closes, which no
client library does. curl() is there for the cases where a real client is
the point.
"""

import json
import os
import random
import re
import select
import signal
import socket
import string
import subprocess
import threading
import time

HOST = "127.0.0.1"  # every socket in this suite is on loopback, nothing else
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(ROOT, "certs", "make-certs.sh")
SAN = os.environ.get("FNPROXY_TEST_SAN") == "1"
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

CASES = []  # filled by @case as test modules are imported


class CaseFailure(AssertionError):
    pass


class Skip(Exception):
    """Raised by skip(): the case did not run its checks. run.py reports it
    as "skip NAME: reason" and counts it apart, never as a pass."""


def case(timeout=60, exclusive=False, netns=False, hosts=None, lo_addrs=(), first=False,
         san=True):
    """Registers a case. exclusive: run it alone (heavy on CPU or timing).
    first: start it before the others, so that a long case that mostly
    waits overlaps the rest of the suite. san=False: the case is not part
    of the sanitizer build's suite (run.py leaves it out of the list there;
    it is neither run nor counted), for a long case whose subject the
    sanitizers add nothing to.
    netns: run it in a network namespace of its own whose only interface is
    lo (run.py makes and removes it); hosts: that namespace's /etc/hosts
    entries, {name: address or [addresses]}; lo_addrs: extra addresses put
    on its lo ("10.0.0.1/32"), so that a test can listen on an address that
    must never be dialled and see that it was not. Only with netns may a
    case name any address outside 127.0.0.1."""
    if (hosts or lo_addrs) and not netns:
        raise ValueError("hosts and lo_addrs need netns=True")

    def wrap(fn):
        fn.case_timeout = timeout
        fn.case_exclusive = exclusive
        fn.case_netns = netns
        fn.case_hosts = dict(hosts or {})
        fn.case_lo_addrs = tuple(lo_addrs)
        fn.case_first = first
        fn.case_san = san
        fn.case_name = fn.__module__.replace("test_", "", 1) + "." + fn.__name__
        CASES.append(fn)
        return fn

    return wrap


def fail(msg):
    raise CaseFailure(msg)


def skip(reason):
    """Ends the case as skipped (not passed), giving the reason."""
    raise Skip(reason)


def check(cond, msg):
    if not cond:
        raise CaseFailure(msg)


def check_eq(got, want, what):
    if got != want:
        raise CaseFailure("%s: got %r, want %r" % (what, got, want))


_handed_out = set()


def free_port():
    """A port that was free a moment ago (the kernel's choice on bind :0),
    never the same one twice in a case: the kernel may offer a port again
    as soon as it is closed, and a "dead" endpoint port must not turn out to
    be fnproxy's own admin port."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(pred, timeout, interval=0.02):
    """Polls pred() until it returns a true value or timeout passes."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return v
        time.sleep(interval)


def wait_until(cond, timeout, what, interval=0.02, detail=None):
    """Polls cond() until it returns a true value, which it returns; fails
    the case if timeout seconds pass first, saying it timed out waiting for
    `what` (and adding detail(), if given, e.g. a stderr tail). For waiting
    on an event instead of sleeping a guessed time."""
    v = wait_for(cond, timeout, interval)
    if not v:
        msg = "timed out after %gs waiting for %s" % (timeout, what)
        if detail is not None:
            msg += ": %s" % detail()
        fail(msg)
    return v


def proc_status(pid, key):
    """A field of /proc/PID/status in kB (e.g. VmHWM), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# processes


class Proc:
    """A child process whose stderr goes to a file we can read any time."""

    def __init__(self, ctx, args, label, preexec_fn=None, stdout=subprocess.DEVNULL):
        self.ctx = ctx
        self.label = label
        self.args = args
        self.stderr_path = ctx.path("%s.stderr" % label)
        self._err = open(self.stderr_path, "ab")
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=self._err,
            preexec_fn=preexec_fn,
            close_fds=True,
        )
        self.pid = self.popen.pid
        self.returncode = None
        ctx.procs.append(self)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.popen.poll() is None

    def send_signal(self, sig):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout):
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self.returncode = self.popen.returncode

    def close_files(self):
        for f in (self._err, self.popen.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass


class Backend(Proc):
    """fnbackend: .port (first listener), .ports, .host, .record()."""

    def __init__(self, ctx, name="backend", record=True, listeners=1, unix=None, listen=None,
                 args=()):
        self.name = name
        self.record_path = ctx.path("%s-%d.record" % (name, len(ctx.procs))) if record else None
        extra = args  # more options: --fail-status, --seed, ...
        args = [ctx.backend_bin, "--name", name]
        # listen: ["HOST:PORT", ...] instead of `listeners` ephemeral ports on HOST.
        specs = list(listen) if listen else [HOST + ":0"] * listeners
        listeners = len(specs)
        self.host = specs[0].rsplit(":", 1)[0].strip("[]") if specs else HOST
        for spec in specs:
            args += ["--listen", spec]
        if unix:
            args += ["--unix", unix]
        if self.record_path:
            open(self.record_path, "wb").close()
            args += ["--record", self.record_path]
        args += list(extra)
        super().__init__(ctx, args, "backend-" + name + "-%d" % len(ctx.procs),
                         stdout=subprocess.PIPE)
        self.ports = []
        fd = self.popen.stdout.fileno()
        buf = b""
        end = time.monotonic() + 10
        want = listeners + (1 if unix else 0)
        while len(buf.splitlines()) < want or not buf.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or self.popen.poll() is not None:
                fail("fnbackend did not start: %s" % self.stderr_text().strip()[-500:])
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
        for line in buf.decode().splitlines():
            if line.startswith("PORT "):
                self.ports.append(int(line.split()[1]))
        self.port = self.ports[0] if self.ports else None

    @property
    def addr(self):
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    def record(self):
        with open(self.record_path, "rb") as f:
            return f.read()

    def stop(self):
        self.send_signal(signal.SIGTERM)
        rc = self.wait(10)
        if rc is None:
            self.kill()
            fail("fnbackend %s did not exit on SIGTERM" % self.name)
        return rc


class Fnproxy(Proc):
    """fnproxy -c FILE. .port = the first listener, .ports by listener name,
    .admin_port, .config_path."""

    def __init__(self, ctx, config_path, ports, admin_port, preexec_fn=None, wait_ready=True):
        self.config_path = config_path
        self.ports = ports
        self.admin_port = admin_port
        self.port = next(iter(ports.values())) if ports else None
        super().__init__(ctx, [ctx.fnproxy_bin, "-c", config_path], "fnproxy-%d" % len(ctx.procs),
                         preexec_fn=preexec_fn)
        self.stopped = False
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout=15):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.popen.poll() is not None:
                fail("fnproxy exited with %s before ready: %s"
                     % (self.popen.returncode, self.stderr_text().strip()[-800:]))
            try:
                r = request(self.admin_port, "GET", "/ready", timeout=2)
                if r.status == 200:
                    return
                last = "status %d" % r.status
            except (OSError, CaseFailure) as e:
                last = str(e)
            time.sleep(0.05)
        fail("fnproxy not ready after %ds (%s): %s"
             % (timeout, last, self.stderr_text().strip()[-800:]))

    def rewrite_config(self, text, **subst):
        """Writes a new config to the same file (for SIGHUP)."""
        with open(self.config_path, "w") as f:
            f.write(self.ctx.render(text, self.ports, self.admin_port, **subst))

    def metrics(self):
        r = request(self.admin_port, "GET", "/metrics", timeout=5)
        check_eq(r.status, 200, "GET /metrics status")
        return r.body.decode("utf-8", "replace")

    def vm_hwm_kib(self):
        return proc_status(self.pid, "VmHWM")

    def stop(self, timeout=15):
        """SIGTERM; fnproxy must exit 0 within timeout seconds."""
        self.stopped = True
        self.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            fail("fnproxy did not exit within %ds of SIGTERM" % timeout)
        if rc != 0:
            fail("fnproxy exited with %d after SIGTERM: %s"
                 % (rc, self.stderr_text().strip()[-800:]))
        return rc


def std_config(endpoints, *, timeout="2s", connect_timeout="1s", max_body=None,
               path_prefix="/", header_timeout="2s", max_header_bytes="8KiB",
               function="echo", route="all"):
    """The usual test config: one listener, one function, one route. The
    placeholders $WORKERS, $APORT and $PPORT are filled by start_fnproxy."""
    eps = ", ".join(endpoints)
    mb = "      max_body: %s\n" % max_body if max_body else ""
    return (
        "workers: $WORKERS\n"
        "admin: { listen: 127.0.0.1:$APORT }\n"
        "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:$PPORT, header_timeout: %s,"
        " max_header_bytes: %s }\n"
        "functions:\n"
        "  - name: %s\n"
        "    endpoints: [%s]\n"
        "    ingress:\n"
        "%s"
        "      routes:\n"
        "        - { name: %s, match: { listener: public, path_prefix: %s },"
        " timeout: %s, connect_timeout: %s }\n"
        % (header_timeout, max_header_bytes, function, eps, mb, route, path_prefix,
           timeout, connect_timeout)
    )


class Ctx:
    """What a case gets: process starters and a private temp directory."""

    def __init__(self, fnproxy_bin, backend_bin, tmpdir):
        self.fnproxy_bin = fnproxy_bin
        self.backend_bin = backend_bin
        self.tmpdir = tmpdir
        self.procs = []
        self.socks = []
        self.notes = []
        self.hosts = {}  # a netns case's hosts table (see case())

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def note(self, msg):
        self.notes.append(msg)

    def start_backend(self, name="backend", record=True, listeners=1, unix=None, listen=None,
                      args=()):
        """args: more fnbackend options, e.g. ["--fail-status", "503:0.1"]."""
        return Backend(self, name=name, record=record, listeners=listeners, unix=unix,
                       listen=listen, args=args)

    @staticmethod
    def render(text, ports, admin_port, **subst):
        values = {"APORT": str(admin_port), "WORKERS": "2"}
        for lname, p in ports.items():
            values["PORT_" + lname] = str(p)
        if "public" in ports:
            values["PPORT"] = str(ports["public"])
        for k, v in subst.items():
            values[k] = str(v)
        return string.Template(text).substitute(values)

    def write_config(self, text, name="fnproxy.yaml"):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def start_fnproxy(self, config_text, workers=2, listeners=("public",), preexec_fn=None,
                      wait_ready=True, **subst):
        """Fills $APORT, $PPORT (listener "public"), $PORT_<name>, $WORKERS and
        any extra $KEY=value, writes the file, runs fnproxy, waits for /ready."""
        admin_port = free_port()
        ports = {}
        for lname in listeners:
            ports[lname] = free_port()
        subst.setdefault("WORKERS", workers)
        text = self.render(config_text, ports, admin_port, **subst)
        path = self.write_config(text, "fnproxy-%d.yaml" % len(self.procs))
        return Fnproxy(self, path, ports, admin_port, preexec_fn=preexec_fn,
                       wait_ready=wait_ready)

    def run_fnproxy(self, args, timeout=10):
        """Runs fnproxy to completion (--check, --version, ...)."""
        return subprocess.run([self.fnproxy_bin] + list(args), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)

    def connect(self, port, timeout=10):
        s = Client(port, timeout)
        self.socks.append(s)
        return s

    def teardown(self):
        """Stops what is still running; returns problems found (sanitizer
        reports, fnproxy failing to exit cleanly)."""
        problems = []
        for s in self.socks:
            s.close()
        for p in self.procs:
            if p.alive():
                if isinstance(p, Fnproxy) and not p.stopped:
                    try:
                        p.stop()
                    except CaseFailure as e:
                        problems.append(str(e))
                else:
                    p.send_signal(signal.SIGTERM)
                    if p.wait(10) is None:
                        p.kill()
                        if isinstance(p, Backend):
                            problems.append("fnbackend %s ignored SIGTERM" % p.name)
            p.close_files()
            text = p.stderr_text()
            for m in SANITIZER_MARKERS:
                if m in text:
                    i = text.index(m)
                    excerpt = text[max(0, i - 200):i + 600].replace("\n", " | ")
                    problems.append("%s stderr has %s: %s" % (p.label, m, excerpt))
                    break
        return problems


# ---------------------------------------------------------------------------
# HTTP over raw sockets


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []  # [(name, value)] as received, in order
        self.body = b""
        self.raw_head = b""
        self.chunked = False

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def headers_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %r %r body=%r>" % (self.status, self.reason, self.headers,
                                                 self.body[:200])


class Client:
    """A client connection with its own read buffer."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        """Reads more into buf; False on EOF or reset."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                fail("line longer than %d bytes" % limit)
            if not self._fill(deadline):
                fail("connection closed while reading a line (have %r)" % bytes(self.buf[:200]))

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                fail("connection closed with %d of %d body bytes" % (len(self.buf), n))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_head(self, timeout=None):
        """Reads a status line and headers (a 1xx head included)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        r = Response()
        try:
            line = self._line(deadline)
        except socket.timeout:
            fail("timed out waiting for a response")
        except CaseFailure:
            fail("connection closed before a response (%d bytes: %r)"
                 % (len(self.buf), bytes(self.buf[:100])))
        raw = [line]
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            fail("bad status line %r" % line[:200])
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        while True:
            line = self._line(deadline)
            raw.append(line)
            if line == b"":
                break
            if b":" not in line:
                fail("bad header line %r" % line[:200])
            k, v = line.split(b":", 1)
            r.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        r.raw_head = b"\r\n".join(raw) + b"\r\n"
        return r

    def read_response(self, timeout=None, head=False, skip_1xx=True, max_body=1 << 31):
        """Reads one full response. head=True: the request was HEAD (no body).
        A close-delimited body is read to EOF."""
        t = timeout or self.timeout
        deadline = time.monotonic() + t
        while True:
            r = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= r.status < 200 and skip_1xx:
                continue
            break
        try:
            self._read_body(r, deadline, head, max_body)
        except socket.timeout:
            fail("timed out reading the body of %r" % r)
        return r

    def read_body(self, r, timeout=None, max_body=1 << 31):
        """Reads the body of head r (from read_head) into r.body."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            self._read_body(r, deadline, False, max_body)
        except socket.timeout:
            fail("timed out reading the body of %r" % r)
        return r

    def _read_body(self, r, deadline, head, max_body):
        if head or r.status in (204, 304) or 100 <= r.status < 200:
            return
        te = r.header("transfer-encoding")
        cls = r.headers_all("content-length")
        if te is not None:
            if te.lower() != "chunked":
                fail("response transfer-encoding %r" % te)
            if cls:
                fail("response has both transfer-encoding and content-length")
            r.chunked = True
            body = bytearray()
            while True:
                line = self._line(deadline)
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    fail("bad chunk size line %r" % line[:100])
                if size == 0:
                    while self._line(deadline) != b"":
                        pass  # trailers
                    break
                body += self._exact(size, deadline)
                if self._exact(2, deadline) != b"\r\n":
                    fail("chunk not followed by CRLF")
                if len(body) > max_body:
                    fail("body larger than %d" % max_body)
            r.body = bytes(body)
        elif cls:
            if len(set(cls)) != 1:
                fail("response has content-lengths %r" % cls)
            r.body = self._exact(int(cls[0]), deadline)
        else:
            while self._fill(deadline):
                if len(self.buf) > max_body:
                    fail("body larger than %d" % max_body)
            r.body = bytes(self.buf)
            self.buf.clear()

    def count_body(self, r, timeout=120):
        """For big bodies: consumes the body of head r, counting bytes
        without keeping them. Returns the count."""
        deadline = time.monotonic() + timeout
        cl = r.header("content-length")
        total = 0
        if r.header("transfer-encoding"):
            while True:
                line = self._line(deadline)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._line(deadline) != b"":
                        pass
                    return total
                total += self._discard(size, deadline)
                if self._exact(2, deadline) != b"\r\n":
                    fail("chunk not followed by CRLF")
        if cl is not None:
            return self._discard(int(cl), deadline, exact=False)
        while True:
            total += len(self.buf)
            self.buf.clear()
            if not self._fill(deadline):
                return total

    def _discard(self, n, deadline, exact=True):
        got = 0
        view = memoryview(bytearray(1 << 20))
        take = min(n, len(self.buf))
        del self.buf[:take]
        got += take
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.sock.settimeout(left)
            try:
                k = self.sock.recv_into(view, min(len(view), n - got))
            except ConnectionResetError:
                k = 0
            if k == 0:
                self.eof = True
                if exact:
                    fail("connection closed with %d of %d body bytes" % (got, n))
                return got
            got += k
        return got

    def read_exact(self, n, timeout=None):
        """Exactly n bytes (for raw bytes, in a CONNECT tunnel say); fails
        on EOF or timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            return self._exact(n, deadline)
        except socket.timeout:
            fail("timed out with %d of %d bytes" % (len(self.buf), n))

    def read_to_eof(self, timeout=None, limit=1 << 30):
        """Everything until the peer closes; fails on timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while self._fill(deadline):
                if len(self.buf) > limit:
                    fail("more than %d bytes before EOF" % limit)
        except socket.timeout:
            fail("timed out waiting for EOF (have %d bytes)" % len(self.buf))
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def wait_closed(self, timeout=3):
        """True if the peer closes (EOF or reset) within timeout, reading and
        dropping anything still in flight. False if it stays open."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self._fill(deadline):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return True
            self.buf.clear()

    def is_open(self, wait=0.3):
        """True if the connection shows no EOF within wait seconds (data
        arriving counts as open and is kept)."""
        if self.eof:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except OSError:
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True


def build_request(method, path, headers=None, body=None, host="test.local", version="HTTP/1.1"):
    """Bytes of a request. headers: list of (k, v); a Host header is added
    unless host is None; Content-Length is added for a body unless a
    content-length or transfer-encoding header is given."""
    lines = ["%s %s %s" % (method, path, version)]
    hdrs = list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in hdrs:
        lines.append("%s: %s" % (k, v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body
    return data


def chunked(*pieces):
    """A chunked body from byte strings."""
    out = b""
    for p in pieces:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


def request(port, method, path, headers=None, body=None, timeout=10, host="test.local"):
    """One request on a fresh connection; returns the Response."""
    c = Client(port, timeout)
    try:
        c.send(build_request(method, path, headers, body, host=host))
        return c.read_response(head=(method == "HEAD"))
    finally:
        c.close()


def raw_exchange(port, data, timeout=5):
    """Sends raw bytes on a fresh connection; returns (Response or None,
    closed, error). closed: fnproxy closed the connection after the
    response."""
    c = Client(port, timeout)
    try:
        try:
            c.send(data)
        except OSError:
            pass  # it may close before reading everything; the answer counts
        try:
            r = c.read_response(timeout=timeout)
        except CaseFailure as e:
            return None, c.eof, str(e)
        return r, c.wait_closed(timeout=3), None
    finally:
        c.close()


def parse_echo(body):
    """The backend's /echo body -> (request line, [(k, v)], body bytes)."""
    i = body.find(b"\r\n\r\n")
    if i < 0:
        fail("echo body has no end of head: %r" % body[:300])
    head = body[:i].decode("latin-1").split("\r\n")
    hdrs = []
    for line in head[1:]:
        k, v = line.split(":", 1)
        hdrs.append((k, v.strip(" \t")))
    return head[0], hdrs, body[i + 4:]


def hget(hdrs, name):
    name = name.lower()
    return [v for k, v in hdrs if k.lower() == name]


def check_fnproxy_error(r, status, code, close=None, client=None):
    """A response fnproxy generated itself: status, JSON body, header."""
    if r is None:
        fail("no response; wanted %d %s" % (status, code))
    if r.status != status:
        fail("status %d (want %d %s): headers %r body %r"
             % (r.status, status, code, r.headers, r.body[:200]))
    check_eq(r.header("x-fnproxy-error"), code, "x-fnproxy-error")
    ct = (r.header("content-type") or "").split(";")[0].strip().lower()
    check_eq(ct, "application/json", "content-type of a %d" % status)
    try:
        j = r.json()
    except ValueError:
        fail("error body is not JSON: %r" % r.body[:200])
    check(isinstance(j, dict), "error body is not an object: %r" % j)
    check_eq(j.get("error"), code, "JSON error")
    check(isinstance(j.get("message"), str) and j["message"], "JSON message missing: %r" % j)
    if close:
        check_eq((r.header("connection") or "").lower(), "close", "connection header")


def make_certs(ctx, name="pki"):
    """A development PKI in the case's temp dir (see certs/README.md)."""
    d = ctx.path(name)
    p = subprocess.run(["sh", MAKE_CERTS, d], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60, cwd=ROOT)
    if p.returncode != 0:
        fail("make-certs.sh %s exited %d: %s" % (d, p.returncode, p.stderr.decode()[-500:]))
    for f in ("ca.crt", "server.crt", "server.key", "wildcard.crt", "client-frontend.crt",
              "client-hello.crt", "client-expired.crt", "client-rogue.crt"):
        check(os.path.exists(os.path.join(d, f)), "make-certs.sh made no %s" % f)
    return d


def settle(backend, delay=0.3):
    """Waits a little so that anything forwarded late reaches the record."""
    time.sleep(delay)
    return backend.record()


def curl(args, timeout=20):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout - 2)] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def listener_reasons(fp, name, listener):
    """{reason: count} of the counter family name for one listener."""
    out = {}
    for line in fp.metrics().splitlines():
        m = re.match(r"^%s\{(.*)\}\s+(\S+)$" % name, line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(1)))
        if labels.get("listener") == listener:
            r = labels.get("reason")
            out[r] = out.get(r, 0) + int(float(m.group(2)))
    return out


def wait_reasons(get, total, timeout=3):
    """Waits until the counts get() returns add up to total; returns the last."""
    last = [{}]

    def done():
        last[0] = get()
        return sum(last[0].values()) >= total

    wait_for(done, timeout, 0.05)
    return last[0]


def metric_value(text, name, labels):
    """The value of metric name{labels...} (labels: dict, all must match; the
    series may have more labels), or None. Sums if several series match."""
    total = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(m.group(4))
    return total


class RawServer:
    """A TCP server (on 127.0.0.1 and a free port unless told) whose every
    connection is handed to handler(sock, server) in a thread of its own,
    closed when the handler returns. .conns counts them."""

    def __init__(self, handler, host=HOST, port=0, rcvbuf=None):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.srv.bind((host, port))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.addr = "%s:%d" % (host, self.port)
        self.handler = handler
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.conns = 0
        self.events = []  # (what, monotonic time) of the handler's choosing
        threading.Thread(target=self._accept, daemon=True).start()

    def note(self, what):
        with self.lock:
            self.events.append((what, time.monotonic()))

    @staticmethod
    def recv(s):
        """One read of a handler's socket: the bytes, b"" when the peer
        closed or reset it, None when the socket's timeout passed first."""
        try:
            return s.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            return b""

    def _accept(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
            threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        try:
            self.handler(s, self)
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        self.stop.set()
        self.srv.close()


class Sender(threading.Thread):
    """Sends bytes from a generator in the background, ignoring errors (the
    peer may answer and close before taking everything)."""

    def __init__(self, client, pieces):
        super().__init__(daemon=True)
        # A socket object of its own: the reader changes its own timeout.
        self.sock = client.sock.dup()
        self.sock.settimeout(300)
        self.pieces = pieces
        self.sent = 0
        self.error = None

    def run(self):
        try:
            for p in self.pieces:
                self.sock.sendall(p)
                self.sent += len(p)
        except OSError as e:
            self.error = e
        finally:
            self.sock.close()


def spread_requests(port, paths, conns=4):
    """GETs paths (shuffled) over a few keep-alive connections at once;
    every answer must be 200."""
    paths = list(paths)
    random.Random(7).shuffle(paths)
    errors = []

    def run(part):
        try:
            c = Client(port, timeout=20)
            try:
                for p in part:
                    c.send(build_request("GET", p))
                    r = c.read_response()
                    if r.status != 200:
                        errors.append("%s: status %d" % (p, r.status))
                        return
            finally:
                c.close()
        except Exception as e:  # reported below, on the case's thread
            errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=run, args=(paths[i::conns],), daemon=True)
               for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    check(not any(t.is_alive() for t in threads), "requests still running after 40s")
    check(not errors, "spread requests: %s" % errors[:3])
