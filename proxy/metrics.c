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
#include <stdlib.h>
#include <string.h>

static const char *const timeout_names[TMO__N] = {"connect", "per_try", "total", "header", "idle"};
static const char *const uperr_names[UPERR__N] = {"refused", "reset",   "dns",
                                                  "tls",     "timeout", "protocol"};

struct route_stats *metrics_route(struct metrics *m, const char *function, const char *route)
{
    struct route_stats *s;

    for (s = m->routes; s != NULL; s = s->next)
        if (strcmp(s->function, function) == 0 && strcmp(s->route, route) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
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
            if (strcmp(s->function, r->function) == 0 && strcmp(s->route, r->route) == 0)
                return true;
    return false;
}

/* The same series summed over all shards. */
static void route_sum(struct metrics *const *shards, size_t n, const struct route_stats *r,
                      struct route_stats *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (size_t i = 0; i < n; i++) {
        for (struct route_stats *s = first_route(shards[i]); s != NULL; s = s->next) {
            if (strcmp(s->function, r->function) != 0 || strcmp(s->route, r->route) != 0)
                continue;
            for (int c = 0; c < 600; c++)
                sum->codes[c] += load(&s->codes[c]);
            for (int k = 0; k < TMO__N; k++)
                sum->timeouts[k] += load(&s->timeouts[k]);
            for (int k = 0; k < UPERR__N; k++)
                sum->upstream_errors[k] += load(&s->upstream_errors[k]);
        }
    }
}

void metrics_render(FILE *out, struct metrics *const *shards, size_t n)
{
    struct route_stats *sum = malloc(sizeof(*sum));
    struct route_stats **all = NULL;
    size_t n_all = 0;

    if (sum == NULL)
        return;
    /* One summed copy per distinct series, so each family prints together. */
    for (size_t i = 0; i < n; i++) {
        for (struct route_stats *r = first_route(shards[i]); r != NULL; r = r->next) {
            if (route_seen(shards, i, r))
                continue;
            struct route_stats **grown = realloc(all, (n_all + 1) * sizeof(*all));
            struct route_stats *copy = malloc(sizeof(*copy));
            if (grown == NULL || copy == NULL) {
                free(copy);
                all = grown != NULL ? grown : all;
                goto out;
            }
            all = grown;
            route_sum(shards, n, r, copy);
            memcpy(copy->function, r->function, sizeof(copy->function));
            memcpy(copy->route, r->route, sizeof(copy->route));
            all[n_all++] = copy;
        }
    }

    fputs("# HELP fnproxy_requests_total Requests answered, by status code.\n"
          "# TYPE fnproxy_requests_total counter\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        for (int c = 100; c < 600; c++)
            if (all[i]->codes[c] != 0)
                fprintf(out,
                        "fnproxy_requests_total{direction=\"ingress\",function=\"%s\","
                        "route=\"%s\",code=\"%d\"} %llu\n",
                        all[i]->function, all[i]->route, c, (unsigned long long)all[i]->codes[c]);

    fputs("# HELP fnproxy_timeouts_total Timeouts, by kind.\n"
          "# TYPE fnproxy_timeouts_total counter\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        for (int k = 0; k < TMO__N; k++)
            if (all[i]->timeouts[k] != 0)
                fprintf(out,
                        "fnproxy_timeouts_total{direction=\"ingress\",function=\"%s\","
                        "route=\"%s\",kind=\"%s\"} %llu\n",
                        all[i]->function, all[i]->route, timeout_names[k],
                        (unsigned long long)all[i]->timeouts[k]);

    fputs("# HELP fnproxy_upstream_errors_total Failed exchanges with a function, by reason.\n"
          "# TYPE fnproxy_upstream_errors_total counter\n",
          out);
    for (size_t i = 0; i < n_all; i++)
        for (int k = 0; k < UPERR__N; k++)
            if (all[i]->upstream_errors[k] != 0)
                fprintf(out,
                        "fnproxy_upstream_errors_total{direction=\"ingress\",function=\"%s\","
                        "route=\"%s\",reason=\"%s\"} %llu\n",
                        all[i]->function, all[i]->route, uperr_names[k],
                        (unsigned long long)all[i]->upstream_errors[k]);

    fputs("# HELP fnproxy_connections_active Open downstream connections.\n"
          "# TYPE fnproxy_connections_active gauge\n",
          out);
    for (size_t i = 0; i < n; i++) {
        for (struct listener_stats *l = first_listener(shards[i]); l != NULL; l = l->next) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                for (struct listener_stats *o = first_listener(shards[j]); o != NULL; o = o->next)
                    if (strcmp(o->name, l->name) == 0)
                        seen = true;
            if (seen)
                continue;
            long long active = 0;
            for (size_t j = 0; j < n; j++)
                for (struct listener_stats *o = first_listener(shards[j]); o != NULL; o = o->next)
                    if (strcmp(o->name, l->name) == 0)
                        active += __atomic_load_n(&o->active, __ATOMIC_RELAXED);
            fprintf(out, "fnproxy_connections_active{listener=\"%s\"} %lld\n", l->name, active);
        }
    }
out:
    for (size_t i = 0; i < n_all; i++)
        free(all[i]);
    free(all);
    free(sum);
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
