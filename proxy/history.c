/*
 * history.c - the per-second ring of /stats?history=1 (history.h).
 *
 * Runs on the main thread only: the timer callback, the renderers and
 * history_free all run on the admin's loop, so nothing here is shared with
 * a worker except the shards, which are read the way /stats reads them.
 */
#include "history.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct history_series {
    struct history_series *next;
    enum metrics_direction direction;
    char function[METRICS_NAME_MAX];
    char route[METRICS_NAME_MAX];
    uint64_t requests, ok, denials, retries; /* totals at the previous sample */
    struct histogram duration;               /* the summed histogram then */
    struct history_point ring[HISTORY_POINTS];
};

struct history {
    struct metrics *const *shards;
    size_t n_shards;
    uv_timer_t timer;
    bool started;
    struct history_series *series, **tail; /* in the order first seen */
    unsigned head;                         /* the ring slot the next sample writes */
    unsigned count;                        /* points held, up to HISTORY_POINTS */
    uint64_t seq;                          /* samples taken */
    uint64_t end_ms;                       /* wall clock of the latest sample */
    struct route_stats scratch;            /* one series summed over the shards */
    struct histogram delta;                /* this second's observations */
};

struct history *history_new(struct metrics *const *shards, size_t n_shards)
{
    struct history *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->shards = shards;
    h->n_shards = n_shards;
    h->tail = &h->series;
    return h;
}

static struct history_series *find(const struct history *h, enum metrics_direction direction,
                                   const char *function, const char *route)
{
    for (struct history_series *s = h->series; s != NULL; s = s->next)
        if (s->direction == direction && strcmp(s->function, function) == 0 &&
            strcmp(s->route, route) == 0)
            return s;
    return NULL;
}

static bool status_ok(int code)
{
    return code >= 100 && code < 500 && code != 499;
}

static uint32_t delta32(uint64_t now, uint64_t before)
{
    uint64_t d = now > before ? now - before : 0;

    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* metrics_route_fn: one series' point of this sample. */
static void sample_series(const struct route_stats *sum, void *arg)
{
    struct history *h = arg;
    struct history_series *s = find(h, sum->direction, sum->function, sum->route);
    uint64_t requests = 0, ok = 0, denials = 0;

    if (s == NULL) {
        /* First seen: its counters started at zero after the previous
         * sample (or before the first), so zero totals make the first
         * point exact. The ring's earlier slots stay zero. */
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return; /* no history for it; /stats still has its totals */
        s->direction = sum->direction;
        memcpy(s->function, sum->function, sizeof(s->function));
        memcpy(s->route, sum->route, sizeof(s->route));
        *h->tail = s;
        h->tail = &s->next;
    }
    for (int c = 100; c < 600; c++) {
        requests += sum->codes[c];
        if (status_ok(c))
            ok += sum->codes[c];
    }
    for (int k = 0; k < DENY__N; k++)
        denials += sum->denials[k];

    struct history_point *p = &s->ring[h->head];
    p->requests = delta32(requests, s->requests);
    p->ok = delta32(ok, s->ok);
    p->denials = delta32(denials, s->denials);
    p->retries = delta32(sum->retries, s->retries);
    histogram_diff(&h->delta, &sum->duration, &s->duration);
    p->p50_us = (uint32_t)histogram_percentile(&h->delta, 500);
    p->p99_us = (uint32_t)histogram_percentile(&h->delta, 990);
    s->requests = requests;
    s->ok = ok;
    s->denials = denials;
    s->retries = sum->retries;
    s->duration = sum->duration;
}

void history_sample(struct history *h, uint64_t now_ms)
{
    /* Series not met this time (none go away, but be safe) get a zero
     * point, so that every ring stays aligned on h->head. */
    for (struct history_series *s = h->series; s != NULL; s = s->next)
        memset(&s->ring[h->head], 0, sizeof(s->ring[h->head]));
    metrics_each_route(h->shards, h->n_shards, &h->scratch, sample_series, h);
    h->head = (h->head + 1) % HISTORY_POINTS;
    if (h->count < HISTORY_POINTS)
        h->count++;
    h->seq++;
    h->end_ms = now_ms;
}

static void on_tick(uv_timer_t *t)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    history_sample(t->data, (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

int history_start(struct history *h, uv_loop_t *loop)
{
    int rc = uv_timer_init(loop, &h->timer);

    if (rc < 0)
        return rc;
    h->timer.data = h;
    h->started = true;
    return uv_timer_start(&h->timer, on_tick, HISTORY_INTERVAL_MS, HISTORY_INTERVAL_MS);
}

/* The ring slot of the i-th of the last n points, oldest first. */
static unsigned slot(const struct history *h, unsigned n, unsigned i)
{
    return (h->head + HISTORY_POINTS - n + i) % HISTORY_POINTS;
}

size_t history_points(const struct history *h, enum metrics_direction direction,
                      const char *function, const char *route, struct history_point *out,
                      size_t max)
{
    const struct history_series *s = find(h, direction, function, route);
    unsigned n = h->count;

    if (s == NULL)
        return 0;
    if (max < n)
        n = (unsigned)max;
    for (unsigned i = 0; i < n; i++)
        out[i] = s->ring[slot(h, n, i)];
    return n;
}

enum hist_field { HF_REQUESTS, HF_OK, HF_P50, HF_P99, HF_DENIALS, HF_RETRIES };

static void put_array(FILE *out, const struct history *h, const struct history_series *s,
                      unsigned n, const char *name, enum hist_field f)
{
    fprintf(out, ",\"%s\":[", name);
    for (unsigned i = 0; i < n; i++) {
        const struct history_point *p = &s->ring[slot(h, n, i)];
        if (i > 0)
            putc(',', out);
        switch (f) {
        case HF_REQUESTS:
            fprintf(out, "%u", p->requests);
            break;
        case HF_OK:
            fprintf(out, "%u", p->ok);
            break;
        case HF_P50:
        case HF_P99:
            if (p->requests == 0)
                fputs("null", out);
            else
                metrics_json_ms(out, f == HF_P50 ? p->p50_us : p->p99_us);
            break;
        case HF_DENIALS:
            fprintf(out, "%u", p->denials);
            break;
        case HF_RETRIES:
            fprintf(out, "%u", p->retries);
            break;
        }
    }
    putc(']', out);
}

void history_render_json(FILE *out, const struct history *h, unsigned last)
{
    unsigned n = h->count;

    if (last >= 1 && last < n)
        n = last;
    fprintf(out,
            "\"history\":{\"interval_ms\":%d,\"seq\":%llu,\"end_ms\":%llu,\"points\":%u,"
            "\"series\":[",
            HISTORY_INTERVAL_MS, (unsigned long long)h->seq, (unsigned long long)h->end_ms, n);
    for (const struct history_series *s = h->series; s != NULL; s = s->next) {
        fprintf(out, "%s{\"direction\":\"%s\",\"function\":", s == h->series ? "" : ",",
                metrics_direction_name(s->direction));
        metrics_json_string(out, s->function);
        fputs(",\"route\":", out);
        metrics_json_string(out, s->route);
        fprintf(out, ",\"total\":{\"requests\":%llu,\"ok\":%llu,\"denials\":%llu,\"retries\":%llu}",
                (unsigned long long)s->requests, (unsigned long long)s->ok,
                (unsigned long long)s->denials, (unsigned long long)s->retries);
        put_array(out, h, s, n, "requests", HF_REQUESTS);
        put_array(out, h, s, n, "ok", HF_OK);
        put_array(out, h, s, n, "p50_ms", HF_P50);
        put_array(out, h, s, n, "p99_ms", HF_P99);
        put_array(out, h, s, n, "denials", HF_DENIALS);
        put_array(out, h, s, n, "retries", HF_RETRIES);
        putc('}', out);
    }
    fputs("]}", out);
}

void history_render_stats(FILE *out, const struct history *h, unsigned last)
{
    putc('{', out);
    metrics_render_json_members(out, h->shards, h->n_shards);
    putc(',', out);
    history_render_json(out, h, last);
    fputs("}\n", out);
}

static void on_timer_closed(uv_handle_t *t)
{
    struct history *h = t->data;

    while (h->series != NULL) {
        struct history_series *next = h->series->next;
        free(h->series);
        h->series = next;
    }
    free(h);
}

void history_free(struct history *h)
{
    if (h == NULL)
        return;
    if (h->started) {
        uv_close((uv_handle_t *)&h->timer, on_timer_closed);
        return;
    }
    h->timer.data = h;
    on_timer_closed((uv_handle_t *)&h->timer);
}
