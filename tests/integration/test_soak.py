"""The bounded soak under faults (tests/soak/soak.py, issue #14 point 6):
FNPROXY_SOAK_SECONDS (default 20) of wrk and raw clients on ingress (plain
and TLS) and egress (absolute-form and CONNECT) while one backend is killed
and restarted, the other paused and told to reset connections, and fnproxy
reloaded every 2.5 s (every fourth config invalid). It fails on any check
soak.py makes: fds back at the idle level, RSS bounded, every request
answered, counters equal to what the clients saw, exit 0 on SIGTERM; in the
sanitizer build the case's teardown adds ASan/UBSan reports and leaks.
`make soak` is the long run.

Exclusive: wrk and the clients keep both cores busy on purpose, which would
skew the timing of cases running beside it.
"""

import os
import sys

from harness import case, fail

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "soak"))
import soak  # noqa: E402

SECONDS = int(os.environ.get("FNPROXY_SOAK_SECONDS", "20"))


@case(timeout=SECONDS + 120, exclusive=True, netns=True, hosts=soak.HOSTS)
def under_faults(ctx):
    rep = soak.Soak(ctx, SECONDS).run()
    fd, rss = rep["fd"], rep["rss_kib"]
    ctx.note("fds idle %s -> %s, load median %s max %s; RSS KiB start %s, after warm-up %s, "
             "max %s, end %s, slope %s/min; %s req/s; faults %r; reloads %r"
             % (fd["idle_start"], fd["idle_end"], fd["median"], fd["max"], rss["start"],
                rss["after_warmup"], rss["max"], rss["end"], rss["slope_second_half_kib_per_min"],
                rep["requests_per_s"], rep["faults"], rep["reloads"]))
    if rep["failures"]:
        fail("; ".join(rep["failures"]))
