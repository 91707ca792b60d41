/*
 * history.h - the recent history of /stats: one point per second for the
 * last five minutes, per series (direction, function, route), so that a
 * dashboard opened now can draw trends at once (GET /dashboard, dashboard.h).
 *
 * Design. A 1 s timer on the main thread's loop (the admin's) sums the
 * workers' shards exactly as /stats does (metrics_each_route) and stores,
 * per series, the difference from the previous sample in a fixed ring of
 * HISTORY_POINTS points. The latency percentiles of a second are those of
 * the difference between the summed duration histogram and its copy at the
 * previous sample (histogram_diff), so they are exact to the histogram's
 * bound (histogram.h), not an average of averages. Issue 13 suggested a
 * ring per worker; sampling the merged shards on the main thread gives the
 * same numbers and leaves the workers' hot path untouched (they keep only
 * their counters, never a clock or a ring).
 *
 * Memory is fixed per series: one struct history_series (about 9 KiB: the
 * ring, the previous totals and histogram) made when the series is first
 * seen, since series are keyed by configured names and never go away
 * (metrics.h). A sample allocates nothing: the sums go into one scratch
 * struct route_stats owned by the history.
 *
 * A point's fields for the second before it was taken:
 *   requests  requests answered (any status, as fnproxy_requests_total)
 *   ok        of those, successes: status 100-498, i.e. anything but a 5xx
 *             (fnproxy's own 502/503/504 included) and 499 (the client left
 *             before an answer). A 4xx is the function or a policy
 *             answering as meant, so it counts as a success here.
 *   p50, p99  of the requests finished that second, µs (0 without any)
 *   denials   policy denials, every reason summed (metrics_denial)
 *   retries   retries made (fnproxy_retries_total)
 * A sample that comes late (a busy main loop) covers more than a second;
 * its point still holds what happened since the previous one.
 */
#ifndef FNPROXY_HISTORY_H
#define FNPROXY_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "metrics.h"

#define HISTORY_POINTS 300       /* five minutes */
#define HISTORY_INTERVAL_MS 1000 /* one point per second */

struct history_point {
    uint32_t requests;
    uint32_t ok;
    uint32_t p50_us;
    uint32_t p99_us;
    uint32_t denials;
    uint32_t retries;
};

struct history;

/* A history of the series in shards (read on each sample, as by /stats).
 * NULL when out of memory. */
struct history *history_new(struct metrics *const *shards, size_t n_shards);

/* Samples every HISTORY_INTERVAL_MS on loop until history_free. */
int history_start(struct history *h, uv_loop_t *loop);

/* Takes one sample now: one more point per series. now_ms is the wall
 * clock (ms since the epoch), kept to label the latest point. */
void history_sample(struct history *h, uint64_t now_ms);

/* Copies the up to max most recent points of a series, oldest first, to
 * out; returns how many. 0 for a series never seen. */
size_t history_points(const struct history *h, enum metrics_direction direction,
                      const char *function, const char *route, struct history_point *out,
                      size_t max);

/* The "history" member of /stats?history=1, the last `last` points of each
 * series (1..HISTORY_POINTS; anything else: all):
 *   "history":{"interval_ms":1000,"seq":S,"end_ms":T,"points":N,"series":[
 *     {"direction":"ingress","function":"f","route":"r",
 *      "total":{"requests":N,"ok":N,"denials":N,"retries":N},
 *      "requests":[..],"ok":[..],"p50_ms":[..],"p99_ms":[..],
 *      "denials":[..],"retries":[..]},..]}
 * Arrays are oldest first and all N long; seq counts the samples taken
 * since start, so point i is sample seq - N + 1 + i, taken at about
 * end_ms - (N - 1 - i) * interval_ms. A latency is null for a second
 * without requests. "total" is the series' totals at the latest sample. */
void history_render_json(FILE *out, const struct history *h, unsigned last);

/* The whole /stats?history=1 answer: /stats' object plus "history". */
void history_render_stats(FILE *out, const struct history *h, unsigned last);

/* Stops sampling; h is freed once its timer has closed (at once if it was
 * never started). */
void history_free(struct history *h);

#endif
