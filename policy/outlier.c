/*
 * outlier.c - outlier ejection on failures in a row or a share of failures
 * (see outlier.h).
 */
#include "outlier.h"

bool outlier_ejected(const struct outlier_state *s, uint64_t now_ms)
{
    return s->until_ms > now_ms;
}

bool outlier_record(struct outlier_state *s, const struct outlier_policy *p, bool ok,
                    uint64_t now_ms, unsigned n_ejected, unsigned n)
{
    uint64_t ms;
    bool due = false;

    if (s->ejections > 0 && now_ms >= s->until_ms + p->max_ejection_ms)
        s->ejections = 0; /* healthy for long: start over */
    if (outlier_ejected(s, now_ms))
        return false; /* answers of requests sent before it went */
    if (p->failure_percent != 0 && p->failure_window != 0) {
        s->window_n++;
        s->window_fail += !ok;
        if (s->window_n >= p->failure_window) {
            due = (uint64_t)s->window_fail * 100 >= (uint64_t)p->failure_percent * s->window_n;
            s->window_n = s->window_fail = 0;
        }
    }
    if (ok)
        s->consecutive = 0;
    else if (p->consecutive_failures != 0 && ++s->consecutive >= p->consecutive_failures)
        due = true;
    if (!due)
        return false;
    if (n < 2 || (uint64_t)(n_ejected + 1) * 100 > (uint64_t)p->max_ejected_percent * n)
        return false; /* a run of failures goes on: it ejects once room is made */
    s->consecutive = 0;
    s->window_n = s->window_fail = 0;
    s->ejections++;
    ms = p->base_ejection_ms * s->ejections;
    if (ms > p->max_ejection_ms || ms / s->ejections != p->base_ejection_ms)
        ms = p->max_ejection_ms;
    s->until_ms = now_ms + ms;
    return true;
}
