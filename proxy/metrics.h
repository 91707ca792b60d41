/*
 * metrics.h - per-worker counters, merged on scrape.
 *
 * Each worker owns one struct metrics and is the only writer of it, so
 * counting is a plain relaxed store, no lock and no atomic read-modify-write.
 * Series are keyed by configured names (function, route, listener), never by
 * request data, so cardinality is bounded by the config. Series outlive
 * reloads: a route that keeps its name keeps its counters.
 *
 * Latency histograms (histogram.h) live in the same per-route struct. A
 * struct route_stats is 13,680 bytes: 4.7 KiB of status counters and five
 * histograms of 1.7 KiB. There is one per (worker, route) plus one per
 * worker for requests answered before routing, so 50 routes on 8 workers
 * take about 5.5 MB, allocated when a config is adopted.
 *
 * Timing of one request, as fnproxy_request_duration_seconds and the
 * phases of fnproxy_phase_duration_seconds measure it (all on the monotonic
 * clock, whole microseconds):
 *
 *   duration  from the request head parsed (routing starts) to the last
 *             response byte written to the client socket, or to the moment
 *             the exchange was abandoned. Reading the request head itself is
 *             not included: a slow client is not a slow proxy.
 *   connect   summed over the attempts of the request: from starting a
 *             connect to a new upstream connection to its outcome (success,
 *             failure or connect timeout). Not observed when every attempt
 *             took a pooled connection (or none was made).
 *   upstream  summed over the attempts that wrote a request head: from the
 *             head handed to the upstream connection to the response head
 *             parsed, or to the attempt failing. It includes the function
 *             reading the request body, since it normally reads it before
 *             answering. Not observed when no head was sent.
 *   dns       egress only: from starting to resolve the destination's name
 *             to its answer (a cached answer takes about nothing).
 *   proxy     duration - dns - connect - upstream (0 if negative): what fnproxy
 *             itself adds: routing and head rewriting, picking endpoints,
 *             time between attempts, and streaming the response body to
 *             the client (bounded below by the pace at which the function
 *             sends it, which this split cannot tell apart). Observed for
 *             every request, local answers included.
 *
 * So dns + connect + upstream + proxy = duration for every request. One
 * fnproxy_upstream_attempt_duration_seconds observation is made per
 * attempt: from its start (pool lookup or connect) to its response head or
 * its failure, i.e. that attempt's connect plus upstream time.
 */
#ifndef FNPROXY_METRICS_H
#define FNPROXY_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "histogram.h"
#include "retry.h"
#include "tls.h"

#define METRICS_NAME_MAX 72

/* fnproxy_timeouts_total{kind=...}: what stalled. */
enum metrics_timeout {
    TMO_CONNECT = 0, /* connecting to the function (connect_timeout) */
    TMO_HEADER,      /* the client's request head (header_timeout) */
    TMO_BODY,        /* the client's request body, no progress for the route's timeout */
    TMO_UPSTREAM,    /* the function: no response head, or not taking the body, in time */
    TMO_IDLE,        /* the response body, no progress either way, once it started; a tunnel */
    TMO_DNS,         /* an egress name not resolved within dns.timeout */
    TMO_PER_TRY,     /* one attempt: no response head within per_try_timeout */
    TMO_TOTAL,       /* no response head within timeout, every attempt and backoff included */
    TMO_SLOW_CLIENT, /* the client sent its body or read its answer under min_client_rate */
    TMO__N
};
enum metrics_uperr {
    UPERR_REFUSED = 0,
    UPERR_RESET,
    UPERR_TLS,
    UPERR_TIMEOUT,
    UPERR_PROTOCOL,
    UPERR_DNS, /* an egress name did not resolve */
    UPERR__N
};
/* fnproxy_policy_denials_total{reason=...} (and fnproxy_policy_would_deny_total
 * for egress in report mode): a fixed set, never a host. */
enum metrics_denial {
    DENY_CLIENT = 0,   /* ingress: the caller's identity is not allowed */
    DENY_NO_RULE,      /* egress: no allow rule names the destination */
    DENY_PRIVATE,      /* egress: a private address no cidr rule names */
    DENY_OWN_LISTENER, /* egress: one of fnproxy's own listeners (always denied) */
    DENY_OVERLOADED,   /* ingress: max_concurrency reached and the queue full or waited out */
    DENY_RATE_LIMITED, /* ingress: the rate limit is spent */
    DENY__N
};
/* fnproxy_tls_handshake_errors_total{reason=...}: tls.h's failures, then a
 * handshake that did not finish in time. */
#define METRICS_TLS_TIMEOUT TLS_FAIL__N
#define METRICS_TLS_REASONS (TLS_FAIL__N + 1)
/* fnproxy_phase_duration_seconds{phase=...}; tls comes later. */
enum metrics_phase {
    PHASE_CONNECT = 0,
    PHASE_UPSTREAM,
    PHASE_PROXY,
    PHASE_DNS,
    PHASE_QUEUE,
    PHASE__N
};

/* fnproxy_faults_injected_total{kind=...} */
enum metrics_fault { FAULT_DELAY = 0, FAULT_ABORT, FAULT__N };

/* The direction label: which side of the function a series counts. */
enum metrics_direction { DIR_INGRESS = 0, DIR_EGRESS, DIR__N };

struct route_stats {
    struct route_stats *next; /* registry list; published with a release store */
    enum metrics_direction direction;
    char function[METRICS_NAME_MAX]; /* "" before a route was chosen */
    char route[METRICS_NAME_MAX];
    uint64_t codes[600]; /* requests answered, by status code */
    uint64_t timeouts[TMO__N];
    uint64_t upstream_errors[UPERR__N];
    uint64_t denials[DENY__N];
    uint64_t would_deny[DENY__N];       /* egress, mode: report: let through, would be denied */
    uint64_t retries;                   /* fnproxy_retries_total */
    uint64_t ejections;                 /* fnproxy_outlier_ejections_total */
    uint64_t breaker_rejections;        /* fnproxy_circuit_breaker_rejections_total */
    uint64_t faults[FAULT__N];          /* fnproxy_faults_injected_total, by kind */
    uint64_t retries_skipped[RETRY__N]; /* fnproxy_retries_skipped_total, by retry_verdict */
    struct retry_budget budget;       /* the route's retry budget on this worker: not a metric, kept
                                       * here because it lives as long as the series */
    struct histogram duration;        /* fnproxy_request_duration_seconds */
    struct histogram attempt;         /* fnproxy_upstream_attempt_duration_seconds */
    struct histogram phase[PHASE__N]; /* fnproxy_phase_duration_seconds */
};

struct listener_stats {
    struct listener_stats *next;
    char name[METRICS_NAME_MAX];
    int64_t active; /* open downstream connections */
    uint64_t accepted;
    uint64_t tls_errors[METRICS_TLS_REASONS]; /* failed handshakes, by reason */
    uint64_t tls_record_errors[TLS_REC__N];   /* failures after the handshake, by reason */
};

struct metrics {
    struct route_stats *routes;
    struct listener_stats *listeners;
    uint64_t accesslog_dropped; /* access-log lines lost to write errors (a copy, per flush) */
};

/* The series for a function and route, made on first use. NULL only when out
 * of memory. Called on config adoption, not per request. */
struct route_stats *metrics_route(struct metrics *m, enum metrics_direction direction,
                                  const char *function, const char *route);

/* "ingress" or "egress". */
const char *metrics_direction_name(enum metrics_direction d);
struct listener_stats *metrics_listener(struct metrics *m, const char *name);

static inline void metrics_inc(uint64_t *c)
{
    __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* A counter the worker keeps elsewhere, copied for the scraper. */
static inline void metrics_store(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, v, __ATOMIC_RELAXED);
}

static inline void metrics_gauge_add(int64_t *g, int64_t d)
{
    __atomic_store_n(g, *g + d, __ATOMIC_RELAXED);
}

void metrics_count_status(struct route_stats *s, int status);

/* Monotonic time in microseconds (CLOCK_MONOTONIC, as uv_hrtime), for the
 * timestamps the durations below are differences of. */
static inline uint64_t metrics_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* One value into one histogram. Only the owning worker may call this. */
static inline void metrics_observe(struct histogram *h, uint64_t us)
{
    histogram_record(h, us);
}

/* One request's time, split as described at the top of this file. */
struct metrics_request_time {
    uint64_t duration_us;
    uint64_t connect_us;  /* summed over new connections tried */
    uint64_t upstream_us; /* summed over attempts that sent a head */
    uint64_t dns_us;      /* resolving an egress name */
    uint64_t queue_us;    /* waiting for admission; 0: did not wait */
    bool connected;       /* a new connection was tried: observe connect */
    bool sent;            /* a request head was sent: observe upstream */
    bool resolved;        /* a name was resolved: observe dns */
};

/* Records a finished request: its duration and its phases. s may be NULL. */
static inline void metrics_observe_request(struct route_stats *s,
                                           const struct metrics_request_time *t)
{
    uint64_t other = t->connect_us + t->upstream_us + t->dns_us + t->queue_us;

    if (s == NULL)
        return;
    histogram_record(&s->duration, t->duration_us);
    if (t->connected)
        histogram_record(&s->phase[PHASE_CONNECT], t->connect_us);
    if (t->sent)
        histogram_record(&s->phase[PHASE_UPSTREAM], t->upstream_us);
    if (t->resolved)
        histogram_record(&s->phase[PHASE_DNS], t->dns_us);
    if (t->queue_us != 0)
        histogram_record(&s->phase[PHASE_QUEUE], t->queue_us);
    histogram_record(&s->phase[PHASE_PROXY], t->duration_us > other ? t->duration_us - other : 0);
}

/* Records one attempt: start (pool lookup or connect) to response head or
 * failure. s may be NULL. */
static inline void metrics_observe_attempt(struct route_stats *s, uint64_t us)
{
    if (s != NULL)
        histogram_record(&s->attempt, us);
}

/* Writes the Prometheus text format (0.0.4) of all shards, summed. Series
 * that never counted anything are left out, histograms included. */
void metrics_render(FILE *out, struct metrics *const *shards, size_t n);

/* Writes the JSON of GET /stats, summed over shards:
 * {"routes":[{"function":..,"route":..,"requests":N,"codes":{"200":N,..},
 *   "latency_ms":{"p50":..,"p90":..,"p99":..,"p999":..}},..],
 *  "listeners":[{"name":..,"active":N},..]}
 * Percentiles come from fnproxy_request_duration_seconds (histogram.h gives
 * their error bound), in ms with three decimals; 0 for a route without
 * requests. The series answered before routing has "" names.
 * GET /stats?history=1 adds a "history" member after "listeners": per
 * series, one point per second for five minutes (shape in history.h). */
void metrics_render_json(FILE *out, struct metrics *const *shards, size_t n);

/* The members of that object without its braces and newline
 * ("routes":[..],"listeners":[..]), for a caller that adds its own (the
 * "history" of /stats?history=1, history.h). */
void metrics_render_json_members(FILE *out, struct metrics *const *shards, size_t n);

/* Calls fn once per distinct series (direction, function, route) with its
 * counters summed over the shards into *scratch, which fn may read until it
 * returns. Allocates nothing: the stats history (history.h) samples this
 * every second. */
/* s as a JSON string, escaped; us as milliseconds with three decimals. */
void metrics_json_string(FILE *out, const char *s);
void metrics_json_ms(FILE *out, uint64_t us);

typedef void metrics_route_fn(const struct route_stats *sum, void *arg);
void metrics_each_route(struct metrics *const *shards, size_t n, struct route_stats *scratch,
                        metrics_route_fn *fn, void *arg);

void metrics_release(struct metrics *m);

#endif
