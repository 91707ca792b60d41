/*
 * metrics.h - per-worker counters, merged on scrape.
 *
 * Each worker owns one struct metrics and is the only writer of it, so
 * counting is a plain relaxed store, no lock and no atomic read-modify-write.
 * Series are keyed by configured names (function, route, listener), never by
 * request data, so cardinality is bounded by the config. Series outlive
 * reloads: a route that keeps its name keeps its counters.
 */
#ifndef FNPROXY_METRICS_H
#define FNPROXY_METRICS_H

#include <stdint.h>
#include <stdio.h>

#define METRICS_NAME_MAX 72

enum metrics_timeout { TMO_CONNECT = 0, TMO_PER_TRY, TMO_TOTAL, TMO_HEADER, TMO_IDLE, TMO__N };
enum metrics_uperr {
    UPERR_REFUSED = 0,
    UPERR_RESET,
    UPERR_DNS,
    UPERR_TLS,
    UPERR_TIMEOUT,
    UPERR_PROTOCOL,
    UPERR__N
};

struct route_stats {
    struct route_stats *next;        /* registry list; published with a release store */
    char function[METRICS_NAME_MAX]; /* "" before a route was chosen */
    char route[METRICS_NAME_MAX];
    uint64_t codes[600]; /* requests answered, by status code */
    uint64_t timeouts[TMO__N];
    uint64_t upstream_errors[UPERR__N];
};

struct listener_stats {
    struct listener_stats *next;
    char name[METRICS_NAME_MAX];
    int64_t active; /* open downstream connections */
    uint64_t accepted;
};

struct metrics {
    struct route_stats *routes;
    struct listener_stats *listeners;
};

/* The series for a function and route, made on first use. NULL only when out
 * of memory. Called on config adoption, not per request. */
struct route_stats *metrics_route(struct metrics *m, const char *function, const char *route);
struct listener_stats *metrics_listener(struct metrics *m, const char *name);

static inline void metrics_inc(uint64_t *c)
{
    __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

static inline void metrics_gauge_add(int64_t *g, int64_t d)
{
    __atomic_store_n(g, *g + d, __ATOMIC_RELAXED);
}

void metrics_count_status(struct route_stats *s, int status);

/* Writes the Prometheus text format (0.0.4) of all shards, summed. */
void metrics_render(FILE *out, struct metrics *const *shards, size_t n);

void metrics_release(struct metrics *m);

#endif
