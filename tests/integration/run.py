#!/usr/bin/env python3
"""Runs the fnproxy integration suite.

    python3 tests/integration/run.py --fnproxy build/fnproxy \\
        --backend build/fnbackend [--filter SUBSTR]... [-j 2] [-v] [--list]

Each case runs in a child process of its own (this script with --run-one)
in a new process group, with a private temp directory; when the case's
time is up the whole group is killed, so nothing it started survives. At
most -j cases run at once (2 by default, the machine has 2 cores); cases
marked exclusive run alone afterwards. One line per case ("ok NAME",
"FAIL NAME: reason" or "skip NAME: reason"), then "N passed, N failed,
N skipped"; exit status 1 if anything failed. A case skips by raising
harness.Skip (harness.skip(reason)); a skip is never counted as a pass,
and a skipped case whose teardown finds a problem fails.
"""

import argparse
import importlib
import json
import os
import shutil
import signal
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
    result = {"outcome": "pass", "reason": "", "detail": ""}
    started = time.monotonic()
    try:
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


class Runner:
    def __init__(self, args, cases):
        self.args = args
        self.cases = cases
        self.lock = threading.Lock()
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def report(self, name, outcome, reason, detail, secs, notes=()):
        with self.lock:
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
        tmp = tempfile.mkdtemp(prefix="fnproxy-it-")
        cmd = [sys.executable, os.path.abspath(__file__), "--fnproxy", self.args.fnproxy,
               "--backend", self.args.backend, "--run-one", name, "--tmp", tmp]
        started = time.monotonic()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
        timed_out = False
        try:
            out, err = child.communicate(timeout=fn.case_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill_group(child.pid)
            out, err = child.communicate()
        # Whatever the case left behind in its group goes too.
        self.kill_group(child.pid)
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

    def run(self):
        shared = [c for c in self.cases if not c.case_exclusive]
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
    args = ap.parse_args()

    if args.run_one:
        return run_one(args)

    cases = load_cases()
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
    r = Runner(args, cases)
    r.run()
    if args.verbose:
        print("(%.1fs)" % (time.monotonic() - started))
    print("%d passed, %d failed, %d skipped" % (r.passed, r.failed, r.skipped))
    return 1 if r.failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
