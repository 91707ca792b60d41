"""A small DNS server for the egress tests (Python 3 standard library only).

UDP only, on 127.0.0.1 (a free port, or 53 inside a case's network
namespace). It answers A and AAAA questions from a table {name: [(address,
ttl)]}: the addresses of the question's family, each with its TTL; NOERROR
with no answer (NODATA) when the name is known but has no address of that
family; NXDOMAIN for a name it does not know. Names compare without case
and without a trailing dot. Other question types get NOTIMP.

Modes, changeable while it runs:
  "answer"  answer at once;
  "silent"  read each query and drop it (a server that never answers);
  "delay"   answer each query `delay` seconds after it arrived.

Every query is recorded in .queries as (monotonic time, name, "A"|"AAAA"|
type number), and each answer sent in .answered, so a case can wait for a
lookup to have started, or see that a name was (or was not) asked.

query() is the matching stub client, for the harness's self-checks.
"""

import ipaddress
import socket
import struct
import threading
import time

QTYPES = {1: "A", 28: "AAAA"}
RCODE_NOERROR, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 1, 3, 4


def _norm(name):
    return name.lower().rstrip(".")


def parse_question(msg):
    """(id, flags, qname, qtype, question bytes) of a query, or None if it
    is not a well-formed query with one question."""
    if len(msg) < 12:
        return None
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if flags & 0x8000 or qd != 1:
        return None
    i, labels = 12, []
    while True:
        if i >= len(msg):
            return None
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(msg):
            return None  # no compression in a question we accept
        labels.append(msg[i + 1:i + 1 + n].decode("latin-1"))
        i += 1 + n
    if i + 4 > len(msg):
        return None
    qtype, _qclass = struct.unpack("!HH", msg[i:i + 4])
    return qid, flags, ".".join(labels), qtype, msg[12:i + 4]


def build_answer(qid, flags, question, qtype, rcode, records):
    """A response: the question echoed as it came (c-ares may randomise the
    case of the name), then one record per (address, ttl), each naming the
    question by a pointer to offset 12."""
    rflags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode  # QR, opcode+RD kept, RA
    out = struct.pack("!HHHHHH", qid, rflags, 1, len(records), 0, 0) + question
    for addr, ttl in records:
        rdata = ipaddress.ip_address(addr).packed
        out += struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata
    return out


class DNSServer:
    """A DNS server in a thread of the case. .port, .queries, .answered,
    .set(), .mode, .delay, .close()."""

    def __init__(self, records=None, host="127.0.0.1", port=0, mode="answer", delay=0.0):
        self.lock = threading.Lock()
        self.table = {}
        for name, addrs in (records or {}).items():
            self.set(name, addrs)
        self.mode = mode
        self.delay = delay
        self.queries = []
        self.answered = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.timers = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def set(self, name, addrs, ttl=None):
        """addrs: [(address, ttl)] or [address] (then ttl, default 60)."""
        recs = []
        for a in addrs:
            if isinstance(a, tuple):
                recs.append((a[0], a[1]))
            else:
                recs.append((a, 60 if ttl is None else ttl))
        with self.lock:
            self.table[_norm(name)] = recs

    def remove(self, name):
        with self.lock:
            self.table.pop(_norm(name), None)

    def asked(self, name):
        """How many queries named name."""
        n = _norm(name)
        with self.lock:
            return sum(1 for _, q, _ in self.queries if _norm(q) == n)

    def _answer_for(self, msg):
        q = parse_question(msg)
        if q is None:
            if len(msg) >= 2:
                # FORMERR with no question, so the asker gives up at once.
                return struct.pack("!HHHHHH", struct.unpack("!H", msg[:2])[0],
                                   0x8000 | RCODE_FORMERR, 0, 0, 0, 0), None
            return None, None
        qid, flags, name, qtype, question = q
        with self.lock:
            self.queries.append((time.monotonic(), name, QTYPES.get(qtype, qtype)))
            recs = self.table.get(_norm(name))
        if qtype not in QTYPES:
            return build_answer(qid, flags, question, qtype, RCODE_NOTIMP, []), name
        if recs is None:
            return build_answer(qid, flags, question, qtype, RCODE_NXDOMAIN, []), name
        fam = 4 if qtype == 1 else 6
        mine = [(a, t) for a, t in recs if ipaddress.ip_address(a).version == fam]
        return build_answer(qid, flags, question, qtype, RCODE_NOERROR, mine), name

    def _send(self, data, peer, name):
        if self.closed:
            return
        try:
            self.sock.sendto(data, peer)
        except OSError:
            return
        with self.lock:
            self.answered.append((time.monotonic(), name))

    def _serve(self):
        while not self.closed:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            data, name = self._answer_for(msg)
            if data is None or self.mode == "silent":
                continue
            if self.mode == "delay" and self.delay > 0:
                t = threading.Timer(self.delay, self._send, (data, peer, name))
                t.daemon = True
                with self.lock:
                    self.timers.append(t)
                t.start()
            else:
                self._send(data, peer, name)

    def close(self):
        self.closed = True
        with self.lock:
            timers = list(self.timers)
        for t in timers:
            t.cancel()
        try:
            self.sock.close()
        except OSError:
            pass


def query(port, name, qtype="A", host="127.0.0.1", timeout=2.0, qid=0x1234):
    """Asks the server one question: (rcode, [(address, ttl)]); raises
    socket.timeout if no answer comes."""
    t = {"A": 1, "AAAA": 28}.get(qtype, qtype)
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", t, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(msg, (host, port))
        data, _ = s.recvfrom(4096)
    finally:
        s.close()
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid or not flags & 0x8000 or qd != 1:
        raise ValueError("bad answer header %r" % data[:12])
    if data[12:12 + len(q) + 4] != q + struct.pack("!HH", t, 1):
        raise ValueError("question not echoed: %r" % data[12:40])
    i = 12 + len(q) + 4
    out = []
    for _ in range(an):
        ptr, rtype, rclass, ttl, rdlen = struct.unpack("!HHHIH", data[i:i + 12])
        if ptr != 0xC00C or rclass != 1 or rtype != t:
            raise ValueError("unexpected record %r" % data[i:i + 12])
        rdata = data[i + 12:i + 12 + rdlen]
        out.append((str(ipaddress.ip_address(rdata)), ttl))
        i += 12 + rdlen
    return flags & 0xF, out
