/*
 * metrics.c - counter registry per worker and the Prometheus exposition.
 *
 * Writers are workers, each on its own shard; the reader is the admin
 * endpoint on the main thread. New series are appended with a release store
 * and read with acquire loads, and never freed while workers run, so the
 * reader walks the lists without locks.
 */
#include "metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"

static const char *const timeout_names[TMO__N] = {
    "connect", "header", "body", "upstream", "idle", "dns", "per_try", "total", "slow_client"};
static const char *const uperr_names[UPERR__N] = {"refused", "reset",    "tls",
                                                  "timeout", "protocol", "dns"};

static const char *const direction_names[DIR__N] = {"ingress", "egress"};

const char *metrics_direction_name(enum metrics_direction d)
{
    return (unsigned)d < DIR__N ? direction_names[d] : "ingress";
}

/* A series is a direction, a function and a route. */
static bool same_series(const struct route_stats *a, enum metrics_direction direction,
                        const char *function, const char *route)
{
    return a->direction == direction && strcmp(a->function, function) == 0 &&
           strcmp(a->route, route) == 0;
}

struct route_stats *metrics_route(struct metrics *m, enum metrics_direction direction,
                                  const char *function, const char *route)
{
    struct route_stats *s;

    for (s = m->routes; s != NULL; s = s->next)
        if (same_series(s, direction, function, route))
            return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->direction = direction;
    snprintf(s->function, sizeof(s->function), "%s", function);
    snprintf(s->route, sizeof(s->route), "%s", route);
    s->next = m->routes;
    __atomic_store_n(&m->routes, s, __ATOMIC_RELEASE);
    return s;
}

struct listener_stats *metrics_listener(struct metrics *m, const char *name)
{
    struct listener_stats *s;

    for (s = m->listeners; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->next = m->listeners;
    __atomic_store_n(&m->listeners, s, __ATOMIC_RELEASE);
    return s;
}

void metrics_count_status(struct route_stats *s, int status)
{
    if (s != NULL && status >= 100 && status < 600)
        metrics_inc(&s->codes[status]);
}

static uint64_t load(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static struct route_stats *first_route(struct metrics *m)
{
    return __atomic_load_n(&m->routes, __ATOMIC_ACQUIRE);
}

static struct listener_stats *first_listener(struct metrics *m)
{
    return __atomic_load_n(&m->listeners, __ATOMIC_ACQUIRE);
}

/* True when an earlier shard already has this series: it was summed there. */
static bool route_seen(struct metrics *const *shards, size_t upto, const struct route_stats *r)
{
    for (size_t i = 0; i < upto; i++)
        for (struct route_stats *s = first_route(shards[i]); s != NULL; s = s->next)
            if (same_series(s, r->direction, r->function, r->route))
                return true;
    return false;
}

/* The same series summed over all shards. */
static void route_sum(struct metrics *const *shards, size_t n, const struct route_stats *r,
                      struct route_stats *sum)
{
    memset(sum, 0, sizeof(*sum));
    sum->direction = r->direction;
    memcpy(sum->function, r->function, sizeof(sum->function));
    memcpy(sum->route, r->route, sizeof(sum->route));
    for (size_t i = 0; i < n; i++) {
        for (struct route_stats *s = first_route(shards[i]); s != NULL; s = s->next) {
            if (!same_series(s, r->direction, r->function, r->route))
                continue;
            for (int c = 0; c < 600; c++)
                sum->codes[c] += load(&s->codes[c]);
            for (int k = 0; k < TMO__N; k++)
                sum->timeouts[k] += load(&s->timeouts[k]);
            for (int k = 0; k < UPERR__N; k++)
                sum->upstream_errors[k] += load(&s->upstream_errors[k]);
            for (int k = 0; k < DENY__N; k++) {
                sum->denials[k] += load(&s->denials[k]);
                sum->would_deny[k] += load(&s->would_deny[k]);
            }
            sum->retries += load(&s->retries);
            sum->ejections += load(&s->ejections);
            sum->breaker_rejections += load(&s->breaker_rejections);
            for (int k = 0; k < FAULT__N; k++)
                sum->faults[k] += load(&s->faults[k]);
            for (int k = 0; k < RETRY__N; k++)
                sum->retries_skipped[k] += load(&s->retries_skipped[k]);
            histogram_merge(&sum->duration, &s->duration);
            histogram_merge(&sum->attempt, &s->attempt);
            for (int k = 0; k < PHASE__N; k++)
                histogram_merge(&sum->phase[k], &s->phase[k]);
        }
    }
}

/* One summed copy per distinct series, in the order the shards list them,
 * so that each family prints together. Returns how many are in *out (the
 * caller frees them with free_summed); on running out of memory, those
 * made so far. */
static size_t collect_routes(struct metrics *const *shards, size_t n, struct route_stats ***out)
{
    struct route_stats **all = NULL;
    size_t n_all = 0;

    for (size_t i = 0; i < n; i++) {
        for (struct route_stats *r = first_route(shards[i]); r != NULL; r = r->next) {
            if (route_seen(shards, i, r))
                continue;
            struct route_stats **grown = realloc(all, (n_all + 1) * sizeof(*all));
            if (grown == NULL)
                goto out;
            all = grown;
            struct route_stats *copy = malloc(sizeof(*copy));
            if (copy == NULL)
                goto out;
            route_sum(shards, n, r, copy);
            all[n_all++] = copy;
        }
    }
out:
    *out = all;
    return n_all;
}

void metrics_each_route(struct metrics *const *shards, size_t n, struct route_stats *scratch,
                        metrics_route_fn *fn, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        for (struct route_stats *r = first_route(shards[i]); r != NULL; r = r->next) {
            if (route_seen(shards, i, r))
                continue;
            route_sum(shards, n, r, scratch);
            fn(scratch, arg);
        }
    }
}

static void free_summed(struct route_stats **all, size_t n_all)
{
    for (size_t i = 0; i < n_all; i++)
        free(all[i]);
    free(all);
}

/* Calls fn once per distinct listener with its counters summed over shards. */
static void each_listener(struct metrics *const *shards, size_t n,
                          void (*fn)(FILE *out, const struct listener_stats *sum, bool first),
                          FILE *out)
{
    struct listener_stats sum;
    bool first = true;

    for (size_t i = 0; i < n; i++) {
        for (struct listener_stats *l = first_listener(shards[i]); l != NULL; l = l->next) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                for (struct listener_stats *o = first_listener(shards[j]); o != NULL; o = o->next)
                    seen |= strcmp(o->name, l->name) == 0;
            if (seen)
                continue;
            memset(&sum, 0, sizeof(sum));
            memcpy(sum.name, l->name, sizeof(sum.name));
            for (size_t j = 0; j < n; j++) {
                for (struct listener_stats *o = first_listener(shards[j]); o != NULL; o = o->next) {
                    if (strcmp(o->name, l->name) != 0)
                        continue;
                    sum.active += __atomic_load_n(&o->active, __ATOMIC_RELAXED);
                    for (int k = 0; k < METRICS_TLS_REASONS; k++)
                        sum.tls_errors[k] += load(&o->tls_errors[k]);
                    for (int k = 0; k < TLS_REC__N; k++)
                        sum.tls_record_errors[k] += load(&o->tls_record_errors[k]);
                }
            }
            fn(out, &sum, first);
            first = false;
        }
    }
}

/* Microseconds as seconds, exactly: "1.000250". */
static void put_seconds(FILE *out, uint64_t us)
{
    fprintf(out, "%llu.%06llu", (unsigned long long)(us / 1000000),
            (unsigned long long)(us % 1000000));
}

/* One histogram series: cumulative buckets, +Inf, _sum and _count. extra is
 * a label to add after route ("" or ",phase=\"connect\""). Empty series are
 * left out, as zero counters are. */
static void render_histogram(FILE *out, const char *name, const struct route_stats *r,
                             const char *extra, const struct histogram *h)
{
    uint64_t count = histogram_count(h);

    if (count == 0)
        return;
    for (unsigned k = 0; k < HIST_N_LE; k++)
        fprintf(out, "%s_bucket{direction=\"%s\",function=\"%s\",route=\"%s\"%s,le=\"%s\"} %llu\n",
                name, direction_names[r->direction], r->function, r->route, extra, hist_le_text[k],
                (unsigned long long)histogram_le_count(h, k));
    fprintf(out, "%s_bucket{direction=\"%s\",function=\"%s\",route=\"%s\"%s,le=\"+Inf\"} %llu\n",
            name, direction_names[r->direction], r->function, r->route, extra,
            (unsigned long long)count);
    fprintf(out, "%s_sum{direction=\"%s\",function=\"%s\",route=\"%s\"%s} ", name,
            direction_names[r->direction], r->function, r->route, extra);
    put_seconds(out, h->sum);
    fprintf(out, "\n%s_count{direction=\"%s\",function=\"%s\",route=\"%s\"%s} %llu\n", name,
            direction_names[r->direction], r->function, r->route, extra, (unsigned long long)count);
}

static void prom_listener(FILE *out, const struct listener_stats *sum, bool first)
{
    (void)first;
    fprintf(out, "fnproxy_connections_active{listener=\"%s\"} %lld\n", sum->name,
            (long long)sum->active);
}

static void prom_tls_errors(FILE *out, const struct listener_stats *sum, bool first)
{
    (void)first;
    for (int k = 0; k < METRICS_TLS_REASONS; k++)
        if (sum->tls_errors[k] != 0)
            fprintf(out, "fnproxy_tls_handshake_errors_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                    sum->name,
                    k == METRICS_TLS_TIMEOUT ? "timeout" : tls_failure_name((enum tls_failure)k),
                    (unsigned long long)sum->tls_errors[k]);
}

static void prom_tls_record_errors(FILE *out, const struct listener_stats *sum, bool first)
{
    (void)first;
    for (int k = TLS_REC_NONE + 1; k < TLS_REC__N; k++)
        if (sum->tls_record_errors[k] != 0)
            fprintf(out, "fnproxy_tls_record_errors_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                    sum->name, tls_record_error_name((enum tls_record_error)k),
                    (unsigned long long)sum->tls_record_errors[k]);
}

static const char *const denial_names[DENY__N] = {"client",       "no_rule",    "private_address",
                                                  "own_listener", "overloaded", "rate_limited"};

/* Denials are per function (DESIGN.md): the routes of a function summed.
 * off is the offset of the counts (denials or would_deny). */
static void render_denials(FILE *out, const char *name, struct route_stats *const *all,
                           size_t n_all, size_t off)
{
    for (size_t i = 0; i < n_all; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = all[j]->direction == all[i]->direction &&
                   strcmp(all[j]->function, all[i]->function) == 0;
        if (seen)
            continue;
        for (int k = 0; k < DENY__N; k++) {
            uint64_t sum = 0;
            for (size_t j = i; j < n_all; j++)
                if (all[j]->direction == all[i]->direction &&
                    strcmp(all[j]->function, all[i]->function) == 0)
                    sum += ((const uint64_t *)((const char *)all[j] + off))[k];
            if (sum != 0)
                fprintf(out, "%s{direction=\"%s\",function=\"%s\",reason=\"%s\"} %llu\n", name,
                        direction_names[all[i]->direction], all[i]->function, denial_names[k],
                        (unsigned long long)sum);
        }
    }
}

/* A counter family by route and one more label (kind, reason): the counts
 * at byte offset off of each route's stats, one per names[] entry; counts
 * of zero are left out. */
static void render_route_counts(FILE *out, const char *name, const char *help, const char *label,
                                struct route_stats *const *all, size_t n_all, size_t off,
                                const char *const *names, int n_names)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n_all; i++) {
        const uint64_t *count = (const uint64_t *)((const char *)all[i] + off);

        for (int k = 0; k < n_names; k++)
            if (count[k] != 0)
                fprintf(out, "%s{direction=\"%s\",function=\"%s\",route=\"%s\",%s=\"%s\"} %llu\n",
                        name, direction_names[all[i]->direction], all[i]->function, all[i]->route,
                        label, names[k], (unsigned long long)count[k]);
    }
}

/* A counter family by route: the count at byte offset off of each route's
 * stats; zeros left out. */
static void render_route_counter(FILE *out, const char *name, const char *help,
                                 struct route_stats *const *all, size_t n_all, size_t off)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n_all; i++) {
        uint64_t v = *(const uint64_t *)((const char *)all[i] + off);
        if (v != 0)
            fprintf(out, "%s{direction=\"%s\",function=\"%s\",route=\"%s\"} %llu\n", name,
                    direction_names[all[i]->direction], all[i]->function, all[i]->route,
                    (unsigned long long)v);
    }
}

/* Admission gauges (admit.h): global, not per worker. Functions with
 * neither max_concurrency nor readiness have none. */
static bool admit_gated(const struct admit_fn *af)
{
    return __atomic_load_n(&af->limit, __ATOMIC_RELAXED) != UINT32_MAX || af->has_readiness;
}

static void prom_queue_depth(const struct admit_fn *af, void *out)
{
    if (admit_gated(af))
        fprintf(out, "fnproxy_queue_depth{function=\"%s\"} %u\n", af->name,
                __atomic_load_n(&af->queued, __ATOMIC_RELAXED));
}

static void prom_in_flight(const struct admit_fn *af, void *out)
{
    if (admit_gated(af))
        fprintf(out, "fnproxy_admitted_in_flight{function=\"%s\"} %u\n", af->name,
                __atomic_load_n(&af->inflight, __ATOMIC_RELAXED));
}

static void prom_endpoint_ready(const struct admit_fn *af, void *out)
{
    if (!af->has_readiness)
        return;
    for (const struct admit_ep *ep = af->eps; ep != NULL; ep = ep->next)
        fprintf(out, "fnproxy_endpoint_ready{function=\"%s\",endpoint=\"%s\"} %d\n", af->name,
                ep->addr, __atomic_load_n(&ep->ready, __ATOMIC_RELAXED) ? 1 : 0);
}

void metrics_render(FILE *out, struct metrics *const *shards, size_t n)
{
    static const char *const phase_labels[PHASE__N] = {",phase=\"connect\"", ",phase=\"upstream\"",
                                                       ",phase=\"proxy\"", ",phase=\"dns\"",
                                                       ",phase=\"queue\""};
    struct route_stats **all;
    size_t n_all = collect_routes(shards, n, &all);

    fputs("# HELP fnproxy_requests_total Requests answered, by status code.\n"
          "# TYPE fnproxy_requests_total counter\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        for (int c = 100; c < 600; c++)
            if (all[i]->codes[c] != 0)
                fprintf(out,
                        "fnproxy_requests_total{direction=\"%s\",function=\"%s\","
                        "route=\"%s\",code=\"%d\"} %llu\n",
                        direction_names[all[i]->direction], all[i]->function, all[i]->route, c,
                        (unsigned long long)all[i]->codes[c]);

    render_route_counts(out, "fnproxy_timeouts_total", "Timeouts, by kind.", "kind", all, n_all,
                        offsetof(struct route_stats, timeouts), timeout_names, TMO__N);
    render_route_counter(out, "fnproxy_retries_total", "Retries made (attempts after the first).",
                         all, n_all, offsetof(struct route_stats, retries));
    render_route_counter(out, "fnproxy_outlier_ejections_total",
                         "Endpoints ejected after failing in a row (counted on the route of the "
                         "failure that ejected them).",
                         all, n_all, offsetof(struct route_stats, ejections));
    render_route_counter(out, "fnproxy_circuit_breaker_rejections_total",
                         "Requests answered 503 because every endpoint was at its "
                         "circuit_breaker limits.",
                         all, n_all, offsetof(struct route_stats, breaker_rejections));
    const char *skip_names[RETRY__N];
    for (int k = 0; k < RETRY__N; k++) {
        const char *name = retry_verdict_name((enum retry_verdict)k);
        skip_names[k] = name != NULL ? name : ""; /* go and not-on are never counted */
    }
    render_route_counts(out, "fnproxy_retries_skipped_total",
                        "Retries the policy wanted and did not make, by reason.", "reason", all,
                        n_all, offsetof(struct route_stats, retries_skipped), skip_names, RETRY__N);
    static const char *const fault_names[FAULT__N] = {"delay", "abort"};
    render_route_counts(out, "fnproxy_faults_injected_total",
                        "Requests delayed or answered on purpose (fault), by kind.", "kind", all,
                        n_all, offsetof(struct route_stats, faults), fault_names, FAULT__N);
    render_route_counts(out, "fnproxy_upstream_errors_total",
                        "Failed exchanges with a function, by reason.", "reason", all, n_all,
                        offsetof(struct route_stats, upstream_errors), uperr_names, UPERR__N);

    fputs("# HELP fnproxy_request_duration_seconds Time from the request head to the last "
          "response byte written.\n"
          "# TYPE fnproxy_request_duration_seconds histogram\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        render_histogram(out, "fnproxy_request_duration_seconds", all[i], "", &all[i]->duration);

    fputs("# HELP fnproxy_upstream_attempt_duration_seconds Time of one attempt, from its start "
          "to the response head or its failure.\n"
          "# TYPE fnproxy_upstream_attempt_duration_seconds histogram\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        render_histogram(out, "fnproxy_upstream_attempt_duration_seconds", all[i], "",
                         &all[i]->attempt);

    fputs("# HELP fnproxy_phase_duration_seconds Time of a request by phase: connecting, waiting "
          "on the function, and fnproxy's own.\n"
          "# TYPE fnproxy_phase_duration_seconds histogram\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        for (int k = 0; k < PHASE__N; k++)
            render_histogram(out, "fnproxy_phase_duration_seconds", all[i], phase_labels[k],
                             &all[i]->phase[k]);

    fputs("# HELP fnproxy_policy_denials_total Requests refused by policy, by reason.\n"
          "# TYPE fnproxy_policy_denials_total counter\n",
          out);
    render_denials(out, "fnproxy_policy_denials_total", all, n_all,
                   offsetof(struct route_stats, denials));
    fputs("# HELP fnproxy_policy_would_deny_total Egress requests a policy in report mode let "
          "through that enforce would have refused, by reason.\n"
          "# TYPE fnproxy_policy_would_deny_total counter\n",
          out);
    render_denials(out, "fnproxy_policy_would_deny_total", all, n_all,
                   offsetof(struct route_stats, would_deny));

    fputs("# HELP fnproxy_connections_active Open downstream connections.\n"
          "# TYPE fnproxy_connections_active gauge\n",
          out);
    each_listener(shards, n, prom_listener, out);

    fputs("# HELP fnproxy_queue_depth Requests waiting for admission (max_concurrency, "
          "readiness), by function.\n"
          "# TYPE fnproxy_queue_depth gauge\n",
          out);
    admit_each(prom_queue_depth, out);
    fputs("# HELP fnproxy_admitted_in_flight Requests holding a slot of their function's "
          "max_concurrency, across workers.\n"
          "# TYPE fnproxy_admitted_in_flight gauge\n",
          out);
    admit_each(prom_in_flight, out);
    fputs("# HELP fnproxy_endpoint_ready Whether an endpoint of a function with readiness "
          "answered its probe (1) or not (0).\n"
          "# TYPE fnproxy_endpoint_ready gauge\n",
          out);
    admit_each(prom_endpoint_ready, out);

    fputs("# HELP fnproxy_tls_handshake_errors_total Failed TLS handshakes, by reason.\n"
          "# TYPE fnproxy_tls_handshake_errors_total counter\n",
          out);
    each_listener(shards, n, prom_tls_errors, out);

    fputs("# HELP fnproxy_tls_record_errors_total TLS connections failed after the handshake, "
          "by reason.\n"
          "# TYPE fnproxy_tls_record_errors_total counter\n",
          out);
    each_listener(shards, n, prom_tls_record_errors, out);

    uint64_t dropped = 0;
    for (size_t i = 0; i < n; i++)
        dropped += load(&shards[i]->accesslog_dropped);
    fprintf(out,
            "# HELP fnproxy_access_log_dropped_lines_total Access-log lines lost to write "
            "errors.\n"
            "# TYPE fnproxy_access_log_dropped_lines_total counter\n"
            "fnproxy_access_log_dropped_lines_total %llu\n",
            (unsigned long long)dropped);
    free_summed(all, n_all);
}

/* A JSON string. Names are configured ([A-Za-z0-9_.-]), but escaping costs
 * nothing here and keeps the output valid whatever they hold. */
static void json_string(FILE *out, const char *s)
{
    putc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(out, "\\u%04x", ch);
        else
            putc(ch, out);
    }
    putc('"', out);
}

/* Microseconds as milliseconds with three decimals. */
static void put_ms(FILE *out, uint64_t us)
{
    fprintf(out, "%llu.%03llu", (unsigned long long)(us / 1000), (unsigned long long)(us % 1000));
}

void metrics_json_string(FILE *out, const char *s)
{
    json_string(out, s);
}

void metrics_json_ms(FILE *out, uint64_t us)
{
    put_ms(out, us);
}

static void json_listener(FILE *out, const struct listener_stats *sum, bool first)
{
    fputs(first ? "{\"name\":" : ",{\"name\":", out);
    json_string(out, sum->name);
    fprintf(out, ",\"active\":%lld}", (long long)sum->active);
}

void metrics_render_json(FILE *out, struct metrics *const *shards, size_t n)
{
    putc('{', out);
    metrics_render_json_members(out, shards, n);
    fputs("}\n", out);
}

void metrics_render_json_members(FILE *out, struct metrics *const *shards, size_t n)
{
    static const struct {
        const char *name;
        unsigned permille;
    } pcts[] = {{"p50", 500}, {"p90", 900}, {"p99", 990}, {"p999", 999}};
    struct route_stats **all;
    size_t n_all = collect_routes(shards, n, &all);

    fputs("\"routes\":[", out);
    for (size_t i = 0; i < n_all; i++) {
        const struct route_stats *r = all[i];
        uint64_t requests = 0;
        bool first = true;

        for (int c = 0; c < 600; c++)
            requests += r->codes[c];
        fprintf(out, "%s{\"direction\":\"%s\",\"function\":", i == 0 ? "" : ",",
                direction_names[r->direction]);
        json_string(out, r->function);
        fputs(",\"route\":", out);
        json_string(out, r->route);
        fprintf(out, ",\"requests\":%llu,\"codes\":{", (unsigned long long)requests);
        for (int c = 100; c < 600; c++) {
            if (r->codes[c] == 0)
                continue;
            fprintf(out, "%s\"%d\":%llu", first ? "" : ",", c, (unsigned long long)r->codes[c]);
            first = false;
        }
        fputs("},\"latency_ms\":{", out);
        for (size_t k = 0; k < sizeof(pcts) / sizeof(pcts[0]); k++) {
            fprintf(out, "%s\"%s\":", k == 0 ? "" : ",", pcts[k].name);
            put_ms(out, histogram_percentile(&r->duration, pcts[k].permille));
        }
        fputs("}}", out);
    }
    fputs("],\"listeners\":[", out);
    each_listener(shards, n, json_listener, out);
    putc(']', out);
    free_summed(all, n_all);
}

void metrics_release(struct metrics *m)
{
    while (m->routes != NULL) {
        struct route_stats *next = m->routes->next;
        free(m->routes);
        m->routes = next;
    }
    while (m->listeners != NULL) {
        struct listener_stats *next = m->listeners->next;
        free(m->listeners);
        m->listeners = next;
    }
}
