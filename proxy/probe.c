/*
 * probe.c - readiness probes on the main loop (probe.h).
 */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"

/* One probe in flight. It holds its snapshot, so its function and
 * endpoint outlive a reload. */
struct probe {
    struct probe *next, *prev; /* the prober's, for stopping */
    struct prober *p;
    struct snapshot *s;
    size_t fn_idx;
    struct admit_ep *ep;
    union {
        uv_handle_t h;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    char req[1280];
    char buf[32]; /* "HTTP/1.1 200" is all a probe reads */
    size_t len;
    int open_handles;
    bool finished;
};

struct prober {
    uv_loop_t *loop;
    uv_timer_t tick;
    uv_async_t down; /* a worker found an endpoint refusing connections */
    struct snapshot *s;
    struct probe *probes; /* in flight */
    prober_ready_fn *on_ready;
    void *arg;
    int open_handles;
    unsigned in_flight;
    bool stopping;
    bool all_ready; /* as last told */
};

static void prober_release(struct prober *p)
{
    if (p->open_handles == 0 && p->in_flight == 0)
        free(p);
}

/* Recomputes every function's gate and tells whether all have a ready
 * endpoint. */
static void prober_refresh(struct prober *p)
{
    const struct config *cfg = p->s->cfg;
    bool all = true;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct snap_admit *sa = &p->s->admit[i];
        bool any = false;

        if (sa->eps == NULL)
            continue;
        admit_set_ready(sa->af, sa->eps, cfg->functions[i].n_endpoints);
        for (size_t e = 0; e < cfg->functions[i].n_endpoints && !any; e++)
            any = __atomic_load_n(&sa->eps[e]->ready, __ATOMIC_ACQUIRE);
        all &= any;
    }
    if (all != p->all_ready)
        log_info(all ? "every function with readiness has a ready endpoint"
                     : "waiting for a ready endpoint (readiness probes)");
    p->all_ready = all;
    p->on_ready(all, p->arg);
}

static void on_probe_closed(uv_handle_t *h)
{
    struct probe *pr = h->data;
    struct prober *p = pr->p;

    if (--pr->open_handles > 0)
        return;
    pr->ep->probing = false;
    if (pr->prev != NULL)
        pr->prev->next = pr->next;
    else
        p->probes = pr->next;
    if (pr->next != NULL)
        pr->next->prev = pr->prev;
    snapshot_unref(pr->s);
    free(pr);
    p->in_flight--;
    prober_release(p);
}

static void probe_finish(struct probe *pr, bool ok)
{
    struct prober *p = pr->p;

    if (pr->finished)
        return;
    pr->finished = true;
    uv_close(&pr->io.h, on_probe_closed);
    uv_close((uv_handle_t *)&pr->timer, on_probe_closed);
    if (!ok || p->stopping)
        return;
    __atomic_store_n(&pr->ep->ready, true, __ATOMIC_RELEASE);
    log_info("function %s: endpoint %s is ready", pr->s->cfg->functions[pr->fn_idx].name,
             pr->ep->addr);
    /* Judged by the endpoints in service: after a reload, this one may be
     * gone from its function. */
    prober_refresh(p);
}

static void on_probe_timeout(uv_timer_t *t)
{
    probe_finish(t->data, false);
}

static void on_probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct probe *pr = h->data;

    (void)suggested;
    *b = uv_buf_init(pr->buf + pr->len, (unsigned)(sizeof(pr->buf) - pr->len));
}

/* "HTTP/1.x NNN": ready on 2xx. */
static void on_probe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct probe *pr = st->data;
    const char *s = pr->buf;

    (void)b;
    if (n < 0) {
        probe_finish(pr, false);
        return;
    }
    pr->len += (size_t)n;
    if (pr->len < 12)
        return;
    probe_finish(pr, strncmp(s, "HTTP/1.", 7) == 0 && s[8] == ' ' && s[9] == '2' && s[10] >= '0' &&
                         s[10] <= '9' && s[11] >= '0' && s[11] <= '9');
}

static void on_probe_written(uv_write_t *req, int status)
{
    struct probe *pr = req->data;

    if (status < 0 || pr->finished) {
        probe_finish(pr, false);
        return;
    }
    if (uv_read_start(&pr->io.stream, on_probe_alloc, on_probe_read) < 0)
        probe_finish(pr, false);
}

static void on_probe_connected(uv_connect_t *req, int status)
{
    struct probe *pr = req->data;
    const struct cfg_function *fn = &pr->s->cfg->functions[pr->fn_idx];

    if (pr->finished)
        return;
    if (status < 0 || fn->readiness->path == NULL || fn->upstream_tls != NULL) {
        probe_finish(pr, status == 0);
        return;
    }
    uv_buf_t b = uv_buf_init(pr->req, (unsigned)strlen(pr->req));
    pr->wreq.data = pr;
    if (uv_write(&pr->wreq, &pr->io.stream, &b, 1, on_probe_written) < 0)
        probe_finish(pr, false);
}

static void probe_start(struct prober *p, size_t fn_idx, size_t e)
{
    const struct cfg_function *fn = &p->s->cfg->functions[fn_idx];
    const struct cfg_addr *a = &fn->endpoints[e];
    struct probe *pr = calloc(1, sizeof(*pr));
    int rc;

    if (pr == NULL)
        return; /* tried again next tick */
    pr->p = p;
    pr->s = p->s;
    snapshot_ref(pr->s);
    pr->fn_idx = fn_idx;
    pr->ep = p->s->admit[fn_idx].eps[e];
    pr->ep->probing = true;
    pr->next = p->probes;
    if (p->probes != NULL)
        p->probes->prev = pr;
    p->probes = pr;
    p->in_flight++;
    if (fn->readiness->path != NULL)
        snprintf(pr->req, sizeof(pr->req),
                 "GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: fnproxy-readiness\r\n"
                 "connection: close\r\n\r\n",
                 fn->readiness->path, a->kind == CFG_ADDR_UNIX ? "localhost" : a->text);
    pr->io.h.data = pr->timer.data = pr->creq.data = pr;
    pr->open_handles = 2;
    uv_timer_init(p->loop, &pr->timer);
    uv_timer_start(&pr->timer, on_probe_timeout, fn->readiness->timeout_ms, 0);
    if (a->kind == CFG_ADDR_UNIX) {
        uv_pipe_init(p->loop, &pr->io.pipe, 0);
        pr->io.h.data = pr;
        uv_pipe_connect(&pr->creq, &pr->io.pipe, ((const struct sockaddr_un *)&a->sa)->sun_path,
                        on_probe_connected);
        return;
    }
    uv_tcp_init(p->loop, &pr->io.tcp);
    pr->io.h.data = pr;
    rc =
        uv_tcp_connect(&pr->creq, &pr->io.tcp, (const struct sockaddr *)&a->sa, on_probe_connected);
    if (rc < 0)
        probe_finish(pr, false);
}

/* Starts the probes that are due; stops ticking when every endpoint is
 * ready. */
static void on_tick(uv_timer_t *t)
{
    struct prober *p = t->data;
    const struct config *cfg = p->s->cfg;
    uint64_t now = uv_now(p->loop);
    bool waiting = false;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct snap_admit *sa = &p->s->admit[i];
        const struct cfg_function *fn = &cfg->functions[i];

        for (size_t e = 0; sa->eps != NULL && e < fn->n_endpoints; e++) {
            struct admit_ep *ep = sa->eps[e];

            if (__atomic_load_n(&ep->ready, __ATOMIC_ACQUIRE))
                continue;
            waiting = true;
            if (ep->probing || now < ep->probe_due_ms)
                continue;
            ep->probe_due_ms = now + fn->readiness->interval_ms;
            probe_start(p, i, e);
        }
    }
    if (!waiting)
        uv_timer_stop(&p->tick);
}

/* Ticks at the shortest interval of the snapshot's functions. */
static void prober_kick(struct prober *p)
{
    const struct config *cfg = p->s->cfg;
    uint64_t every = 0;

    for (size_t i = 0; i < cfg->n_functions; i++)
        if (cfg->functions[i].readiness != NULL &&
            (every == 0 || cfg->functions[i].readiness->interval_ms < every))
            every = cfg->functions[i].readiness->interval_ms;
    if (every == 0)
        uv_timer_stop(&p->tick);
    else
        uv_timer_start(&p->tick, on_tick, 0, every);
}

static void on_down(uv_async_t *a)
{
    struct prober *p = a->data;

    if (p->stopping || p->s == NULL)
        return;
    prober_refresh(p);
    prober_kick(p);
}

static void on_down_hook(void *arg)
{
    struct prober *p = arg;

    uv_async_send(&p->down);
}

struct prober *prober_start(uv_loop_t *loop, prober_ready_fn *on_ready, void *arg)
{
    struct prober *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->on_ready = on_ready;
    p->arg = arg;
    p->all_ready = true;
    if (uv_async_init(loop, &p->down, on_down) < 0) {
        free(p);
        return NULL;
    }
    uv_timer_init(loop, &p->tick);
    p->tick.data = p->down.data = p;
    p->open_handles = 2;
    admit_on_down(on_down_hook, p);
    return p;
}

void prober_set(struct prober *p, struct snapshot *s)
{
    snapshot_ref(s);
    snapshot_unref(p->s);
    p->s = s;
    prober_refresh(p);
    prober_kick(p);
}

static void on_prober_closed(uv_handle_t *h)
{
    struct prober *p = h->data;

    p->open_handles--;
    prober_release(p);
}

void prober_stop(struct prober *p)
{
    if (p == NULL)
        return;
    admit_on_down(NULL, NULL);
    p->stopping = true;
    for (struct probe *pr = p->probes; pr != NULL; pr = pr->next)
        probe_finish(pr, false);
    snapshot_unref(p->s);
    p->s = NULL;
    uv_close((uv_handle_t *)&p->tick, on_prober_closed);
    uv_close((uv_handle_t *)&p->down, on_prober_closed);
}
