/*
 * outlier.h - outlier ejection: an endpoint that fails several times in a
 * row is left out of balancing for a while (Envoy's consecutive-failure
 * outlier detection), the n-th time for n times the base, at most the max,
 * and never more than a share of a function's endpoints at once. When its
 * time is up it takes real traffic again; one more run of failures ejects
 * it for longer. A second trigger, off by default, catches an endpoint that
 * fails often but seldom many times in a row: failure_percent or more of
 * its last failure_window attempts (counted in blocks of that many). Pure:
 * the caller passes the time.
 */
#ifndef FNPROXY_OUTLIER_H
#define FNPROXY_OUTLIER_H

#include <stdbool.h>
#include <stdint.h>

struct outlier_policy {
    unsigned consecutive_failures; /* failures in a row that eject; 0: never */
    uint64_t base_ejection_ms;
    uint64_t max_ejection_ms;
    unsigned max_ejected_percent; /* of a function's endpoints at once */
    unsigned failure_percent;     /* failures in a window that eject; 0: never */
    unsigned failure_window;      /* attempts in that window */
};

/* One endpoint's record (per worker). */
struct outlier_state {
    uint32_t consecutive; /* failures in a row */
    uint32_t ejections;   /* times ejected, for the growing ejection time */
    uint64_t until_ms;    /* ejected until then (0: never was) */
    uint32_t window_n;    /* attempts in the current window */
    uint32_t window_fail; /* ... of which failed */
};

bool outlier_ejected(const struct outlier_state *s, uint64_t now_ms);

/* Records an attempt's outcome. Returns true when this failure ejects the
 * endpoint: n_ejected of the n endpoints it is balanced with are ejected
 * already, and one more must stay within max_ejected_percent (an endpoint
 * alone is never ejected). A success clears the run of failures; a long
 * healthy stretch (max_ejection_ms past the last ejection) forgets them. */
bool outlier_record(struct outlier_state *s, const struct outlier_policy *p, bool ok,
                    uint64_t now_ms, unsigned n_ejected, unsigned n);

#endif
