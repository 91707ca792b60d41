/*
 * admin.c - the admin listener: /healthz, /ready, /metrics (Prometheus
 * text) and /stats (JSON with percentiles per route), both summed over the
 * workers' shards at the time of the request; /stats?history=1 adds the
 * last five minutes per second (history.h), which /dashboard charts
 * (dashboard.h). The history's 1 s timer runs on this loop from
 * admin_start to admin_stop. /config: the snapshot in service
 * (config_json.h).
 *
 * One request per connection, answered and closed: scrapers and probes
 * open a connection per request anyway, and it keeps this server trivially
 * correct. Requests are parsed with the same
 * strict HTTP/1.1 glue as the data plane.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_json.h"
#include "dashboard.h"
#include "history.h"
#include "http1.h"
#include "log.h"
#include "snapshot.h"

#define ADMIN_REQ_MAX 8192

struct admin {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    struct metrics *const *shards;
    size_t n_shards;
    bool ready;     /* false once draining */
    bool fns_ready; /* every function with readiness has a ready endpoint */
    bool stopping;
    struct snapshot *snap;               /* in service, for /config; a reference held */
    const struct admin_reloads *reloads; /* NULL: not shown */
    struct admin_conn *conns;
    unsigned n_open;      /* listener + connections not yet closed */
    struct history *hist; /* NULL: out of memory, /stats?history=1 has no "history" */
};

struct admin_conn {
    struct admin_conn *next, *prev;
    struct admin *a;
    uv_tcp_t tcp;
    uv_write_t wreq;
    struct h1_parser parser;
    char buf[ADMIN_REQ_MAX];
    size_t len;
    char *out; /* the response, malloc'd */
    bool closing;
    bool head_only; /* HEAD: the headers of the GET answer, no body */
};

static void admin_release(struct admin *a)
{
    if (--a->n_open == 0)
        free(a);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    struct admin *a = ac->a;

    free(ac->out);
    free(ac);
    admin_release(a);
}

static void admin_conn_close(struct admin_conn *ac)
{
    struct admin *a = ac->a;

    if (ac->closing)
        return;
    ac->closing = true;
    if (ac->prev != NULL)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next != NULL)
        ac->next->prev = ac->prev;
    uv_close((uv_handle_t *)&ac->tcp, on_conn_closed);
}

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    admin_conn_close(req->data);
}

static void admin_respond(struct admin_conn *ac, int status, const char *type, const char *body,
                          size_t body_len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                     "cache-control: no-store\r\nconnection: close\r\n\r\n",
                     status, h1_reason(status), type, body_len);

    if (ac->head_only)
        body_len = 0; /* content-length above still says what GET would get */
    ac->out = malloc((size_t)n + body_len);
    if (ac->out == NULL) {
        admin_conn_close(ac);
        return;
    }
    memcpy(ac->out, head, (size_t)n);
    memcpy(ac->out + n, body, body_len);
    uv_buf_t b = uv_buf_init(ac->out, (unsigned)((size_t)n + body_len));
    if (uv_write(&ac->wreq, (uv_stream_t *)&ac->tcp, &b, 1, on_written) < 0)
        admin_conn_close(ac);
}

/* The value of the query parameter name in target, or NULL; *len its length. */
static const char *query_param(struct h1_span target, const char *name, size_t *len)
{
    const char *q = memchr(target.p, '?', target.len), *end = target.p + target.len;
    size_t nlen = strlen(name);

    for (const char *p = q; p != NULL && p < end;) {
        p++; /* past '?' or '&' */
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - p) >= nlen && memcmp(p, name, nlen) == 0 &&
            (p + nlen == stop || p[nlen] == '=')) {
            const char *v = p + nlen == stop ? stop : p + nlen + 1;
            *len = (size_t)(stop - v);
            return v;
        }
        p = amp;
    }
    return NULL;
}

/* Answers 200 with what render writes (500 when it fails). */
static void admin_answer(struct admin_conn *ac, const char *type,
                         int (*render)(FILE *f, struct admin_conn *ac))
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc;

    if (f == NULL) {
        admin_respond(ac, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    rc = render(f, ac);
    if (fclose(f) != 0 || rc < 0) {
        free(text);
        admin_respond(ac, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    admin_respond(ac, 200, type, text, len);
    free(text);
}

/* The workers' shards summed, as each page shows them. */
/* Which config this instance serves, and how its reloads went. */
static void render_config_metrics(FILE *f, const struct admin *a)
{
    const struct snapshot *s = a->snap;
    char hex[CFGHASH_HEX + 1];

    if (a->reloads != NULL)
        fprintf(f,
                "# HELP fnproxy_config_reloads_total Config reloads (SIGHUP or a file change), "
                "by result.\n"
                "# TYPE fnproxy_config_reloads_total counter\n"
                "fnproxy_config_reloads_total{result=\"ok\"} %llu\n"
                "fnproxy_config_reloads_total{result=\"refused\"} %llu\n",
                (unsigned long long)a->reloads->ok, (unsigned long long)a->reloads->refused);
    if (s == NULL)
        return;
    cfghash_hex(&s->hash, hex);
    fprintf(f,
            "# HELP fnproxy_config_info The config in service; hash: SHA-256 of its file and "
            "the files it names, first 16 hex digits.\n"
            "# TYPE fnproxy_config_info gauge\n"
            "fnproxy_config_info{hash=\"%s\"} 1\n"
            "# HELP fnproxy_config_generation The config generation in service (1 at start, "
            "+1 per reload put in service).\n"
            "# TYPE fnproxy_config_generation gauge\n"
            "fnproxy_config_generation %u\n"
            "# HELP fnproxy_config_last_reload_success_timestamp_seconds When the config in "
            "service was loaded (start or reload), Unix time.\n"
            "# TYPE fnproxy_config_last_reload_success_timestamp_seconds gauge\n"
            "fnproxy_config_last_reload_success_timestamp_seconds %lld.%03d\n",
            hex, s->generation, (long long)(s->loaded_at_ms / 1000), (int)(s->loaded_at_ms % 1000));
}

static int render_metrics(FILE *f, struct admin_conn *ac)
{
    metrics_render(f, ac->a->shards, ac->a->n_shards);
    render_config_metrics(f, ac->a);
    return 0;
}

static int render_stats(FILE *f, struct admin_conn *ac)
{
    metrics_render_json(f, ac->a->shards, ac->a->n_shards);
    return 0;
}

static int render_dashboard(FILE *f, struct admin_conn *ac)
{
    dashboard_render(f, ac->a->shards, ac->a->n_shards);
    return 0;
}

/* GET /stats?history=1[&last=N]: /stats plus the history (history.h). */
static int render_stats_history(FILE *f, struct admin_conn *ac)
{
    unsigned last = 0;
    size_t vlen;
    const char *v = query_param(ac->parser.head.target, "last", &vlen);

    for (size_t i = 0;
         v != NULL && i < vlen && v[i] >= '0' && v[i] <= '9' && last <= HISTORY_POINTS; i++)
        last = last * 10 + (unsigned)(v[i] - '0');
    history_render_stats(f, ac->a->hist, last);
    return 0;
}

/* GET /config: the snapshot in service (config_json.h), secrets redacted. */
static int render_config(FILE *f, struct admin_conn *ac)
{
    const struct snapshot *s = ac->a->snap;
    char hex[CFGHASH_HEX + 1];
    struct config_json_meta m = {
        .generation = s->generation,
        .hash = hex,
        .loaded_at_ms = s->loaded_at_ms,
        .workers = (unsigned)ac->a->n_shards,
    };

    cfghash_hex(&s->hash, hex);
    return config_json_render(f, s->cfg, &m);
}

static void admin_route(struct admin_conn *ac)
{
    struct h1_head *h = &ac->parser.head;
    struct h1_span t = h->target;
    const char *why, *hv;
    size_t hlen;

    if (h1_check_request(h, &why) != 0) {
        admin_respond(ac, 400, "text/plain", "bad request\n", 12);
        return;
    }
    for (uint32_t i = 0; i < t.len; i++)
        if (t.p[i] == '?')
            t.len = i;
    ac->head_only = h1_span_eq(h->method, "head");
    if (!h1_span_eq(h->method, "get") && !ac->head_only) {
        admin_respond(ac, 405, "text/plain", "method not allowed\n", 19);
    } else if (h1_span_eq(t, "/healthz")) {
        admin_respond(ac, 200, "text/plain", "ok\n", 3);
    } else if (h1_span_eq(t, "/ready")) {
        if (!ac->a->ready)
            admin_respond(ac, 503, "text/plain", "draining\n", 9);
        else if (!ac->a->fns_ready)
            admin_respond(ac, 503, "text/plain", "starting\n", 9);
        else
            admin_respond(ac, 200, "text/plain", "ready\n", 6);
    } else if (h1_span_eq(t, "/metrics")) {
        admin_answer(ac, "text/plain; version=0.0.4", render_metrics);
    } else if (h1_span_eq(t, "/stats")) {
        hv = query_param(h->target, "history", &hlen);
        if (hv != NULL && !(hlen == 1 && hv[0] == '0') && ac->a->hist != NULL)
            admin_answer(ac, "application/json", render_stats_history);
        else
            admin_answer(ac, "application/json", render_stats);
    } else if (h1_span_eq(t, "/dashboard")) {
        admin_answer(ac, "text/html; charset=utf-8", render_dashboard);
    } else if (h1_span_eq(t, "/config")) {
        if (ac->a->snap == NULL)
            admin_respond(ac, 503, "text/plain", "no config in service\n", 21);
        else
            admin_answer(ac, "application/json", render_config);
    } else {
        admin_respond(ac, 404, "text/plain", "not found\n", 10);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct admin_conn *ac = h->data;

    (void)suggested;
    *b = uv_buf_init(ac->buf + ac->len, (unsigned)(sizeof(ac->buf) - ac->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct admin_conn *ac = s->data;
    size_t used = 0;

    (void)b;
    if (nread == 0 || ac->closing)
        return;
    if (nread < 0) {
        admin_conn_close(ac);
        return;
    }
    size_t start = ac->len;
    ac->len += (size_t)nread;
    enum h1_event ev = h1_feed(&ac->parser, ac->buf + start, ac->len - start, &used);
    if (ev == H1_EV_MORE && ac->len < sizeof(ac->buf))
        return;
    uv_read_stop(s);
    if (ev == H1_EV_HEAD)
        admin_route(ac);
    else
        admin_respond(ac, 400, "text/plain", "bad request\n", 12);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    struct admin_conn *ac;

    if (status < 0 || a->stopping)
        return;
    ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return;
    ac->a = a;
    uv_tcp_init(a->loop, &ac->tcp);
    ac->tcp.data = ac;
    ac->wreq.data = ac;
    a->n_open++;
    ac->next = a->conns;
    if (a->conns != NULL)
        a->conns->prev = ac;
    a->conns = ac;
    h1_parser_init(&ac->parser, HTTP_REQUEST);
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&ac->tcp, on_alloc, on_read) < 0)
        admin_conn_close(ac);
}

static void on_listener_closed(uv_handle_t *h)
{
    admin_release(h->data);
}

struct admin *admin_start(uv_loop_t *loop, const struct cfg_addr *addr,
                          struct metrics *const *shards, size_t n_shards, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    int rc;

    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    a->loop = loop;
    a->shards = shards;
    a->n_shards = n_shards;
    a->ready = true;
    a->fns_ready = true;
    a->n_open = 1;
    uv_tcp_init(loop, &a->tcp);
    a->tcp.data = a;
    rc = uv_tcp_bind(&a->tcp, (const struct sockaddr *)&addr->sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->tcp, 128, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "admin: cannot listen on %s: %s", addr->text, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
        return NULL;
    }
    log_info("admin listening on %s", addr->text);
    a->hist = history_new(shards, n_shards);
    if (a->hist == NULL || history_start(a->hist, loop) < 0)
        log_warn("admin: no stats history (out of memory)");
    return a;
}

void admin_set_ready(struct admin *a, bool ready)
{
    if (a != NULL)
        a->ready = ready;
}

void admin_set_functions_ready(struct admin *a, bool ready)
{
    if (a != NULL)
        a->fns_ready = ready;
}

void admin_set_snapshot(struct admin *a, struct snapshot *s)
{
    if (a == NULL)
        return;
    snapshot_ref(s);
    snapshot_unref(a->snap);
    a->snap = s;
}

void admin_set_reloads(struct admin *a, const struct admin_reloads *r)
{
    if (a != NULL)
        a->reloads = r;
}

void admin_stop(struct admin *a)
{
    if (a == NULL || a->stopping)
        return;
    a->stopping = true;
    history_free(a->hist);
    a->hist = NULL;
    snapshot_unref(a->snap);
    a->snap = NULL;
    while (a->conns != NULL)
        admin_conn_close(a->conns);
    uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
}
