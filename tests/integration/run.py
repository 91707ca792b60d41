#!/usr/bin/env python3
"""Runs the fnproxy integration suite.

    python3 tests/integration/run.py --fnproxy build/fnproxy \\
        --backend build/fnbackend [--filter SUBSTR]... [-j 2] [-v] [--list]

Each case runs in a child process of its own (this script with --run-one)
in a new process group, with a private temp directory; when the case's
time is up the whole group is killed, so nothing it started survives. At
most -j cases run at once (2 by default, the machine has 2 cores); cases
marked exclusive run alone afterwards, cases marked first start before the
others. Under FNPROXY_TEST_SAN=1 (the sanitizer build) cases marked
san=False are left out of the list. One line per case ("ok NAME",
"FAIL NAME: reason" or "skip NAME: reason"), then "N passed, N failed,
N skipped"; exit status 1 if anything failed. A case skips by raising
harness.Skip (harness.skip(reason)); a skip is never counted as a pass,
and a skipped case whose teardown finds a problem fails.

A case registered with @case(netns=True, hosts={...}) runs in a network
namespace of its own that has only a loopback interface: this script makes
fnp-<pid>-<n> (`ip netns add`, `ip link set lo up`, the case's extra lo
addresses), writes /etc/netns/<ns>/hosts (localhost plus the case's hosts
table) and /etc/netns/<ns>/resolv.conf (nameserver 127.0.0.1), runs the
child as `ip netns exec <ns> <the same command>` (which bind-mounts those
files over /etc/hosts and /etc/resolv.conf for everything in the case) and
deletes the namespace and /etc/netns/<ns> afterwards, whatever the case's
outcome (timeout included, and on SIGINT/SIGTERM of this script). The
child refuses to run such a case anywhere but in a namespace whose only
interface is lo. Without `ip` (iproute2) or the privilege to make a
namespace the case fails; it never runs outside one. Namespaces of earlier
runs whose runner died are removed at start.
"""

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def load_cases():
    for fn in sorted(os.listdir(HERE)):
        if fn.startswith("test_") and fn.endswith(".py"):
            importlib.import_module(fn[:-3])
    return list(harness.CASES)


def run_one(args):
    """Child mode: run one case, print one RESULT line of JSON whose
    "outcome" is "pass", "fail" or "skip"."""
    cases = {c.case_name: c for c in load_cases()}
    fn = cases[args.run_one]
    ctx = harness.Ctx(os.path.abspath(args.fnproxy), os.path.abspath(args.backend), args.tmp)
    ctx.hosts = fn.case_hosts
    result = {"outcome": "pass", "reason": "", "detail": ""}
    started = time.monotonic()
    try:
        if fn.case_netns:
            check_in_netns(args.netns)
        fn(ctx)
    except harness.Skip as e:
        result = {"outcome": "skip", "reason": str(e) or "(no reason given)", "detail": ""}
    except harness.CaseFailure as e:
        result = {"outcome": "fail", "reason": str(e), "detail": ""}
    except Exception as e:  # a bug in the case, or an unexpected socket error
        result = {"outcome": "fail", "reason": "%s: %s" % (type(e).__name__, e),
                  "detail": traceback.format_exc()}
    try:
        problems = ctx.teardown()
    except Exception as e:
        problems = ["teardown: %s: %s" % (type(e).__name__, e)]
    if problems:
        if result["outcome"] != "fail":
            # A sanitizer report or an unclean exit fails a skipped case too.
            result = {"outcome": "fail", "reason": "; ".join(problems), "detail": ""}
        else:
            result["detail"] += "\nteardown: " + "; ".join(problems)
    if result["outcome"] == "fail":
        tails = []
        for p in ctx.procs:
            t = p.stderr_text().strip()
            if t:
                tails.append("--- %s stderr (last 1500 bytes):\n%s" % (p.label, t[-1500:]))
        if ctx.notes:
            tails.append("--- notes:\n" + "\n".join(ctx.notes))
        result["detail"] += "\n".join(tails)
    result["notes"] = ctx.notes
    result["seconds"] = round(time.monotonic() - started, 2)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def check_in_netns(name):
    """For a netns case, in the child: the case may send traffic only to
    loopback, so it runs only where lo is the one interface and the hosts
    file is the namespace's own (ip netns exec bind-mounted it)."""
    ifaces = sorted(n for _, n in socket.if_nameindex())
    if ifaces != ["lo"]:
        harness.fail("refusing to run a netns case with interfaces %r (only lo allowed)"
                     % ifaces)
    with open("/etc/hosts") as f:
        first = f.readline().strip()
    if not name or first != Netns.MARK % name:
        harness.fail("refusing to run a netns case: /etc/hosts is not namespace %r's (first "
                     "line %r)" % (name, first))


class Netns:
    """A network namespace with only lo, and its /etc/netns files."""

    PREFIX = "fnp-"
    MARK = "# fnproxy test namespace %s"
    serial = 0
    serial_lock = threading.Lock()

    def __init__(self, hosts=None, lo_addrs=(), name=None):
        """A new name of this runner's, or (name given) an existing one."""
        if name is None:
            with Netns.serial_lock:
                Netns.serial += 1
                name = "%s%d-%d" % (self.PREFIX, os.getpid(), Netns.serial)
        self.name = name
        self.etc = os.path.join("/etc/netns", self.name)
        self.hosts = hosts or {}
        self.lo_addrs = list(lo_addrs)
        self.made = os.path.exists(os.path.join("/run/netns", self.name))

    @staticmethod
    def ip(args, timeout=20):
        """Runs ip; returns an error message or None."""
        exe = shutil.which("ip")
        if not exe:
            return ("`ip` (iproute2) is not installed, so the case cannot get the network "
                    "namespace it must run in; `sh scripts/deps.sh` installs it")
        try:
            p = subprocess.run([exe] + args, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "ip %s: %s" % (" ".join(args), e)
        if p.returncode != 0:
            return "ip %s exited %d: %s" % (" ".join(args), p.returncode,
                                            p.stderr.decode("utf-8", "replace").strip())
        return None

    def hosts_text(self):
        lines = [self.MARK % self.name, "127.0.0.1 localhost", "::1 localhost"]
        for name, addrs in self.hosts.items():
            for a in ([addrs] if isinstance(addrs, str) else addrs):
                lines.append("%s %s" % (a, name))
        return "\n".join(lines) + "\n"

    def create(self):
        """Makes the namespace; returns an error message or None (then
        whatever was made is gone again)."""
        err = self.ip(["netns", "add", self.name])
        if err:
            return err
        self.made = True
        err = self.ip(["-n", self.name, "link", "set", "lo", "up"])
        for a in self.lo_addrs:
            err = err or self.ip(["-n", self.name, "addr", "add", a, "dev", "lo"])
        if not err:
            try:
                os.makedirs(self.etc)
                with open(os.path.join(self.etc, "hosts"), "w") as f:
                    f.write(self.hosts_text())
                with open(os.path.join(self.etc, "resolv.conf"), "w") as f:
                    f.write("nameserver 127.0.0.1\n")
            except OSError as e:
                err = "writing %s: %s" % (self.etc, e)
        if err:
            self.delete()
        return err

    def exec_prefix(self):
        return [shutil.which("ip") or "ip", "netns", "exec", self.name]

    def delete(self):
        """Removes the namespace and its /etc/netns directory; returns an
        error message or None."""
        err = None
        if self.made:
            err = self.ip(["netns", "del", self.name])
            if not err:
                self.made = False
        shutil.rmtree(self.etc, ignore_errors=True)
        if os.path.exists(self.etc):
            err = err or "could not remove %s" % self.etc
        return err

    @classmethod
    def remove_stale(cls):
        """Deletes namespaces of runners that are no longer alive."""
        names = set()
        for d in ("/run/netns", "/etc/netns"):
            try:
                names.update(os.listdir(d))
            except OSError:
                pass
        for name in sorted(names):
            m = re.match(r"^%s(\d+)-\d+$" % re.escape(cls.PREFIX), name)
            if not m or int(m.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(m.group(1)), 0)
                continue  # its runner is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            cls(name=name).delete()


class Runner:
    def __init__(self, args, cases):
        self.args = args
        self.cases = cases
        self.lock = threading.Lock()
        self.live = {}  # child pid -> its Netns or None, while it runs
        self.aborting = False
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def report(self, name, outcome, reason, detail, secs, notes=()):
        with self.lock:
            if self.aborting:
                return  # the case was killed by our interruption, not by itself
            if outcome in ("pass", "skip"):
                if outcome == "pass":
                    self.passed += 1
                    line = "ok %s" % name
                else:
                    self.skipped += 1
                    line = "skip %s: %s" % (name, " ".join(reason.split()))
                if self.args.verbose:
                    line += " (%.1fs)" % secs
                    for n in notes:
                        line += "\n    " + n
                print(line, flush=True)
            else:
                self.failed += 1
                self.failures.append(name)
                reason = " ".join(reason.split())
                if len(reason) > 600 and not self.args.verbose:
                    reason = reason[:600] + "..."
                print("FAIL %s: %s" % (name, reason), flush=True)
                if self.args.verbose and detail:
                    for line in detail.rstrip().splitlines():
                        print("    " + line)
                    sys.stdout.flush()

    def run_case(self, fn):
        name = fn.case_name
        started = time.monotonic()
        ns = None
        if fn.case_netns:
            ns = Netns(fn.case_hosts, fn.case_lo_addrs)
            with self.lock:
                if self.aborting:
                    return
                err = ns.create()
            if err:
                self.report(name, "fail", "no network namespace for the case (it must run in "
                            "one): %s" % err, "", time.monotonic() - started)
                return
        try:
            self.run_child(fn, ns, started)
        finally:
            if ns is not None:
                err = ns.delete()
                if err:
                    self.report(name + " (cleanup)", "fail", err, "", 0)

    def run_child(self, fn, ns, started):
        name = fn.case_name
        tmp = tempfile.mkdtemp(prefix="fnproxy-it-")
        cmd = [sys.executable, os.path.abspath(__file__), "--fnproxy", self.args.fnproxy,
               "--backend", self.args.backend, "--run-one", name, "--tmp", tmp]
        if ns is not None:
            cmd = ns.exec_prefix() + cmd + ["--netns", ns.name]
        with self.lock:
            if self.aborting:
                return
            child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
            self.live[child.pid] = ns
        timed_out = False
        try:
            out, err = child.communicate(timeout=fn.case_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill_group(child.pid)
            out, err = child.communicate()
        finally:
            # Whatever the case left behind in its group goes too.
            self.kill_group(child.pid)
            with self.lock:
                self.live.pop(child.pid, None)
            shutil.rmtree(tmp, ignore_errors=True)
        secs = time.monotonic() - started
        if timed_out:
            self.report(name, "fail", "timed out after %ds (all its processes killed)"
                        % fn.case_timeout, err.decode("utf-8", "replace")[-3000:], secs)
            return
        result = None
        for line in out.decode("utf-8", "replace").splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        if result is None:
            self.report(name, "fail", "case process exited %s without a result"
                        % child.returncode, err.decode("utf-8", "replace")[-3000:], secs)
            return
        outcome = result.get("outcome")
        if outcome not in ("pass", "fail", "skip"):
            self.report(name, "fail", "case process gave no known outcome: %r" % result, "", secs)
            return
        self.report(name, outcome, result["reason"], result.get("detail", ""), secs,
                    result.get("notes", ()))

    @staticmethod
    def kill_group(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def abort(self):
        """On SIGINT/SIGTERM: kills every running case's group and deletes
        their namespaces (the worker threads are left to die with us)."""
        with self.lock:
            self.aborting = True
            live = dict(self.live)
        for pid, ns in live.items():
            self.kill_group(pid)
            if ns is not None:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                ns.delete()

    def run(self):
        shared = [c for c in self.cases if not c.case_exclusive and c.case_first]
        shared += [c for c in self.cases if not c.case_exclusive and not c.case_first]
        alone = [c for c in self.cases if c.case_exclusive]
        queue = list(shared)
        qlock = threading.Lock()

        def worker():
            while True:
                with qlock:
                    if not queue:
                        return
                    fn = queue.pop(0)
                self.run_case(fn)

        threads = [threading.Thread(target=worker) for _ in range(max(1, self.args.jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fn in alone:
            self.run_case(fn)


def main():
    ap = argparse.ArgumentParser(description="fnproxy integration tests")
    ap.add_argument("--fnproxy", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--filter", action="append", default=[],
                    help="run only cases whose name contains this (repeatable: any)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print timings, and stderr of the processes of failed cases")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--netns", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run_one:
        return run_one(args)

    cases = load_cases()
    if harness.SAN:
        cases = [c for c in cases if c.case_san]
    if args.filter:
        cases = [c for c in cases if any(f in c.case_name for f in args.filter)]
    if args.list:
        for c in cases:
            print(c.case_name)
        return 0
    for b in (args.fnproxy, args.backend):
        if not os.access(b, os.X_OK):
            print("FAIL setup: %s is not an executable" % b)
            print("0 passed, 1 failed, 0 skipped")
            return 1
    started = time.monotonic()
    if any(c.case_netns for c in cases):
        Netns.remove_stale()
    r = Runner(args, cases)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        r.run()
    except KeyboardInterrupt:
        r.abort()
        print("interrupted: %d passed, %d failed, %d skipped" % (r.passed, r.failed, r.skipped),
              flush=True)
        os._exit(130)
    if args.verbose:
        print("(%.1fs)" % (time.monotonic() - started))
    print("%d passed, %d failed, %d skipped" % (r.passed, r.failed, r.skipped))
    return 1 if r.failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
