/*
 * worker.c - a worker thread: its loop, its listening sockets, its view of
 * the current config, and its shutdown.
 *
 * Listening sockets are made by the main thread (so that a reload that
 * cannot bind is refused before anything changes) and handed over; a worker
 * accepts on its own SO_REUSEPORT socket with accept4() driven by a uv_poll_t
 * rather than uv_listen(), so that when accept fails for lack of file
 * descriptors it can stop polling for a moment instead of spinning, leaving
 * the connections queued in the kernel until it can take them.
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "tlsrec.h"

/* Connections taken per wake-up of a listener. One, as nginx does by
 * default: the connections already open are served before more are let
 * in, so under a burst of full TLS handshakes (each an RSA or ECDSA
 * signature) a request on a finished one waits for one new handshake, not
 * for a batch of them (bench: p50 13 ms -> 1.5 ms at the same handshake
 * rate; the new-connection rate of plain HTTP did not change). */
#define ACCEPT_BATCH 1
#define ACCEPT_BACKOFF_MS 100 /* pause after EMFILE and the like */
#define SWEEP_MS 100          /* access log flush; pool sweep every 10th tick */
#define DRAIN_CHECK_MS 50
/* A sweep tick this much later than due means the process was frozen (a
 * paused function's sidecar, SIGSTOP): no loop iteration takes this long. */
#define FREEZE_MS 1000
#define FREE_BUFS_MAX 256

/* --- buffers and small services ------------------------------------------- */

void *worker_buf_get(struct worker *w)
{
    void *b = w->free_bufs;

    if (b != NULL) {
        memcpy(&w->free_bufs, b, sizeof(void *));
        w->n_free_bufs--;
        return b;
    }
    return malloc(WORKER_BUF_SIZE);
}

void worker_buf_put(struct worker *w, void *buf)
{
    if (w->n_free_bufs >= FREE_BUFS_MAX || w->exiting) {
        free(buf);
        return;
    }
    memcpy(buf, &w->free_bufs, sizeof(void *));
    w->free_bufs = buf;
    w->n_free_bufs++;
}

static void worker_free_bufs(struct worker *w)
{
    while (w->free_bufs != NULL) {
        void *b = w->free_bufs;
        memcpy(&w->free_bufs, b, sizeof(void *));
        free(b);
    }
    w->n_free_bufs = 0;
}

static void *xprt_buf_get(void *w)
{
    return worker_buf_get(w);
}

static void xprt_buf_put(void *w, void *buf)
{
    worker_buf_put(w, buf);
}

uint64_t worker_rand(struct worker *w)
{
    /* xorshift128+: fast, per worker, good enough for balancing and ids. */
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];

    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

uint64_t worker_now_ms(struct worker *w)
{
    return uv_now(&w->loop);
}

/* --- config snapshots as this worker sees them ------------------------------- */

/* The IP of an inet endpoint, as the name its certificate must carry when no
 * server_name is configured. */
static char *endpoint_ip(const struct cfg_addr *a)
{
    char ip[INET6_ADDRSTRLEN] = "";

    if (a->sa.ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)&a->sa, ip, sizeof(ip));
    else if (a->sa.ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)&a->sa, ip, sizeof(ip));
    return strdup(ip);
}

/* A function's endpoint, shared by every function and config that name the
 * same address with the same TLS settings, so that their pools are too. */
static struct endpoint *fn_endpoint(struct worker *w, const struct cfg_addr *a,
                                    const struct cfg_upstream_tls *t)
{
    struct endpoint *ep;
    char *name = NULL;

    if (t != NULL) {
        name = t->server_name != NULL ? strdup(t->server_name) : endpoint_ip(a);
        if (name == NULL)
            return NULL;
    }
    ep = endpoint_get(&w->pool, a, name, t != NULL ? t->ca : NULL);
    free(name);
    return ep;
}

static void wsnap_free(struct wsnap *ws)
{
    if (ws->fns != NULL) {
        for (size_t i = 0; i < ws->snap->cfg->n_functions; i++) {
            for (size_t e = 0; e < ws->fns[i].n_eps; e++)
                endpoint_put(ws->fns[i].eps[e]);
            free(ws->fns[i].eps);
            free(ws->fns[i].routes);
            free(ws->fns[i].egress_rules);
        }
        free(ws->fns);
    }
    snapshot_unref(ws->snap);
    free(ws);
}

static struct wsnap *wsnap_new(struct worker *w, struct snapshot *s)
{
    struct wsnap *ws = calloc(1, sizeof(*ws));
    const struct config *cfg = s->cfg;

    if (ws == NULL)
        return NULL;
    snapshot_ref(s);
    ws->snap = s;
    ws->w = w;
    ws->refs = 1;
    ws->fns = calloc(cfg->n_functions ? cfg->n_functions : 1, sizeof(*ws->fns));
    ws->noroute = metrics_route(&w->metrics, DIR_INGRESS, "", "");
    if (ws->fns == NULL || ws->noroute == NULL)
        goto out_free;
    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct cfg_function *fn = &cfg->functions[i];
        struct fn_state *fs = &ws->fns[i];

        fs->eps = calloc(fn->n_endpoints ? fn->n_endpoints : 1, sizeof(*fs->eps));
        fs->routes = calloc(fn->n_routes ? fn->n_routes : 1, sizeof(*fs->routes));
        if (fs->eps == NULL || fs->routes == NULL)
            goto out_free;
        for (size_t e = 0; e < fn->n_endpoints; e++, fs->n_eps++)
            if ((fs->eps[e] = fn_endpoint(w, &fn->endpoints[e], fn->upstream_tls)) == NULL)
                goto out_free;
        for (size_t r = 0; r < fn->n_routes; r++)
            if ((fs->routes[r] =
                     metrics_route(&w->metrics, DIR_INGRESS, fn->name, fn->routes[r].name)) == NULL)
                goto out_free;
        if (fn->egress == NULL)
            continue;
        fs->egress_rules = calloc(fn->egress->n_allow + 1, sizeof(*fs->egress_rules));
        fs->egress_none = metrics_route(&w->metrics, DIR_EGRESS, fn->name, "");
        if (fs->egress_rules == NULL || fs->egress_none == NULL)
            goto out_free;
        for (size_t r = 0; r < fn->egress->n_allow; r++) {
            if ((fs->egress_rules[r] = metrics_route(&w->metrics, DIR_EGRESS, fn->name,
                                                     fn->egress->allow[r].name)) == NULL)
                goto out_free;
            fs->egress_paths |= fn->egress->allow[r].n_paths > 0;
        }
    }
    return ws;

out_free:
    wsnap_free(ws);
    return NULL;
}

void wsnap_ref(struct wsnap *ws)
{
    ws->refs++;
}

void wsnap_unref(struct wsnap *ws)
{
    if (ws != NULL && --ws->refs == 0)
        wsnap_free(ws);
}

/* --- listeners ---------------------------------------------------------------- */

static void wlistener_start(struct wlistener *l);

void wlistener_unref(struct wlistener *l)
{
    if (--l->refs == 0)
        free(l);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct wlistener *l = h->data;

    if (--l->pending_closes > 0)
        return;
    close(l->fd);
    wlistener_unref(l);
}

static void wlistener_close(struct wlistener *l)
{
    struct worker *w = l->w;
    struct wlistener **pp;

    if (l->closed)
        return;
    l->closed = true;
    l->idx = SIZE_MAX; /* its connections close after their current request */
    for (pp = &w->listeners; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    l->pending_closes = 2;
    uv_close((uv_handle_t *)&l->poll, on_listener_closed);
    uv_close((uv_handle_t *)&l->backoff, on_listener_closed);
}

static void on_backoff(uv_timer_t *t)
{
    wlistener_start(t->data);
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
    struct wlistener *l = p->data;

    (void)events;
    if (status < 0) {
        log_error("listener %s: poll failed: %s", l->stats->name, uv_strerror(status));
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            l->accept(l, fd, (struct sockaddr *)&peer);
            if (l->closed)
                return;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        /* Out of descriptors or memory: accepting again at once would fail
         * again at once. Leave the connections queued and retry shortly. */
        if (log_ratelimit(&l->last_error_log_ms, 1000))
            log_error("listener %s: accept failed: %s; pausing accepts for %d ms", l->stats->name,
                      strerror(errno), ACCEPT_BACKOFF_MS);
        uv_poll_stop(&l->poll);
        l->listening = false;
        uv_timer_start(&l->backoff, on_backoff, ACCEPT_BACKOFF_MS, 0);
        return;
    }
}

static void wlistener_start(struct wlistener *l)
{
    if (l->closed || l->listening)
        return;
    if (uv_poll_start(&l->poll, UV_READABLE, on_acceptable) == 0)
        l->listening = true;
}

/* What each kind of listener does with a connection. */
static wlistener_accept_fn *const accept_by_kind[CFG_LISTENER__N] = {
    [CFG_LISTENER_INGRESS] = conn_accept,
    [CFG_LISTENER_EGRESS] = conn_accept,  /* the exchange tells them apart (forward.c) */
    [CFG_LISTENER_CAPTURE] = conn_accept, /* ... after capture.c found the destination */
};

static struct wlistener *wlistener_new(struct worker *w, int fd, size_t idx,
                                       const struct cfg_listener *lc)
{
    struct wlistener *l = calloc(1, sizeof(*l));
    const char *name = lc->name;

    if (l == NULL)
        return NULL;
    l->accept = accept_by_kind[lc->kind];
    l->w = w;
    l->fd = fd;
    l->idx = idx;
    l->refs = 1;
    l->stats = metrics_listener(&w->metrics, name);
    if (l->stats == NULL || uv_poll_init_socket(&w->loop, &l->poll, fd) < 0) {
        free(l);
        return NULL;
    }
    uv_timer_init(&w->loop, &l->backoff);
    l->poll.data = l;
    l->backoff.data = l;
    l->next = w->listeners;
    w->listeners = l;
    wlistener_start(l);
    return l;
}

/* Makes the listeners match the new config: sockets kept across the reload
 * stay open (no connection is refused), new ones start, removed ones close. */
static void worker_set_listeners(struct worker *w, const struct config *cfg, const int *fds)
{
    struct wlistener *l, *next;

    for (l = w->listeners; l != NULL; l = l->next)
        l->idx = SIZE_MAX;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        for (l = w->listeners; l != NULL; l = l->next)
            if (l->fd == fds[i])
                break;
        if (l != NULL) {
            l->idx = i;
            l->accept = accept_by_kind[cfg->listeners[i].kind]; /* a socket may change kind */
            continue;
        }
        if (wlistener_new(w, fds[i], i, &cfg->listeners[i]) == NULL) {
            log_error("listener %s: cannot start: out of memory", cfg->listeners[i].name);
            close(fds[i]);
        }
    }
    for (l = w->listeners; l != NULL; l = next) {
        next = l->next;
        if (l->idx != SIZE_MAX)
            continue;
        /* Gone from the config: its idle connections close now, busy ones
         * after their response, as on drain. */
        for (struct conn *c = w->conns, *cn; c != NULL; c = cn) {
            cn = c->next;
            if (c->l == l)
                conn_drain(c);
        }
        wlistener_close(l);
    }
}

static int worker_adopt(struct worker *w, struct snapshot *s, const int *fds)
{
    struct wsnap *ws = wsnap_new(w, s);

    if (ws == NULL) {
        log_error("config generation %u: out of memory; keeping the old one", s->generation);
        for (size_t i = 0; i < s->cfg->n_listeners; i++) {
            bool in_use = false;
            for (struct wlistener *l = w->listeners; l != NULL; l = l->next)
                in_use |= l->fd == fds[i];
            if (!in_use)
                close(fds[i]);
        }
        return UV_ENOMEM;
    }
    struct wsnap *old = w->cur;
    w->cur = ws;
    worker_set_listeners(w, s->cfg, fds);
    wsnap_unref(old);
    return 0;
}

/* --- lifecycle -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void worker_exit(struct worker *w)
{
    struct wlistener *l;

    if (w->exiting)
        return;
    w->exiting = true;
    while ((l = w->listeners) != NULL)
        wlistener_close(l);
    while (w->conns != NULL)
        conn_close(w->conns);
    w->pool.draining = true;
    pool_sweep(&w->pool, 0);
    if (w->has_resolver)
        resolve_close(&w->resolver, NULL); /* no lookup is left: their connections closed */
    w->has_resolver = false;
    uv_close((uv_handle_t *)&w->wake, on_handle_closed);
    uv_close((uv_handle_t *)&w->sweep, on_handle_closed);
    xprt_loop_close(&w->xlp);
}

/* After a freeze the clock has jumped: every deadline would pass at once and
 * pooled connections may have been closed by their peers meanwhile. The
 * deadlines move on by the time lost (what was waited before still
 * counts), and the pooled connections go. */
static void worker_thaw(struct worker *w, uint64_t lost_ms)
{
    log_warn("worker %u: the clock jumped %llu ms (the process was frozen): deadlines moved on, "
             "pooled connections dropped",
             w->id, (unsigned long long)lost_ms);
    pool_sweep(&w->pool, 0);
    for (struct conn *c = w->conns; c != NULL; c = c->next)
        conn_thaw(c, lost_ms);
}

static void on_sweep(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = worker_now_ms(w);

    if (w->last_sweep_ms != 0 && now > w->last_sweep_ms + SWEEP_MS + FREEZE_MS)
        worker_thaw(w, now - w->last_sweep_ms - SWEEP_MS);
    w->last_sweep_ms = now;

    accesslog_flush(&w->alog);
    metrics_store(&w->metrics.accesslog_dropped, w->alog.dropped);
    if (!w->draining) {
        if (++w->sweep_ticks % 10 == 0)
            pool_sweep(&w->pool, POOL_IDLE_MS);
        return;
    }
    pool_sweep(&w->pool, 0);
    if (w->n_conns == 0 || worker_now_ms(w) >= w->drain_deadline_ms) {
        if (w->n_conns > 0)
            log_warn("drain timeout: closing %u connections with requests in flight", w->n_conns);
        worker_exit(w);
    }
}

static void worker_drain(struct worker *w, uint64_t drain_ms)
{
    struct conn *c, *next;

    if (w->draining)
        return;
    w->draining = true;
    w->pool.draining = true;
    w->drain_deadline_ms = worker_now_ms(w) + drain_ms;
    while (w->listeners != NULL)
        wlistener_close(w->listeners);
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_drain(c);
    }
    pool_sweep(&w->pool, 0);
    uv_timer_start(&w->sweep, on_sweep, 0, DRAIN_CHECK_MS);
}

static void on_wake(uv_async_t *a)
{
    struct worker *w = a->data;
    struct snapshot *s;
    int fds[CFG_MAX_LISTENERS];
    bool stop;
    uint64_t drain_ms;

    uv_mutex_lock(&w->lock);
    s = w->mbox_snap;
    w->mbox_snap = NULL;
    memcpy(fds, w->mbox_fds, sizeof(fds));
    stop = w->mbox_stop;
    drain_ms = w->mbox_drain_ms;
    uv_mutex_unlock(&w->lock);

    if (s != NULL && !w->draining) {
        worker_adopt(w, s, fds);
        snapshot_unref(s);
    } else if (s != NULL) {
        snapshot_unref(s);
    }
    if (stop)
        worker_drain(w, drain_ms);
    if (__atomic_exchange_n(&w->admit_wake, false, __ATOMIC_ACQUIRE))
        exch_admit_granted(w);
}

/* The resolver egress names go through. Its options are the first
 * config's: a reload does not change them. Without one, every egress name
 * fails with dns_failed (logged once here). */
static void worker_resolver_init(struct worker *w, const struct cfg_dns *d)
{
    struct resolve_opts o = {
        .timeout_ms = (uint32_t)d->timeout_ms,
        .servers = d->servers,
        .cache_min_ttl_s = d->cache_min_ttl_s,
        .cache_max_ttl_s = d->cache_max_ttl_s,
        .cache_max_entries = d->cache_entries,
    };
    int rc = resolve_init(&w->resolver, &w->loop, &o);

    w->has_resolver = rc == 0;
    if (rc < 0)
        log_error("worker %u: cannot start the resolver: %s; egress names will not resolve", w->id,
                  uv_strerror(rc));
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    char name[24];

    snprintf(name, sizeof(name), "worker %u", w->id);
    log_set_thread(name);
    uv_run(&w->loop, UV_RUN_DEFAULT);

    /* Every handle is closed: free what the loop used. */
    wsnap_unref(w->cur);
    w->cur = NULL;
    /* Snapshots and connections held every endpoint: none is left. */
    if (w->pool.n_endpoints != 0)
        log_error("worker %u: %u endpoints left at exit", w->id, w->pool.n_endpoints);
    exch_free_all(w);
    worker_free_bufs(w);
    accesslog_flush(&w->alog);
    accesslog_buf_release(&w->alog);
    free(w->scratch);
    w->scratch = NULL;
    tlsrec_thread_done();
    if (uv_loop_close(&w->loop) != 0)
        log_error("worker %u: handles left open at exit", w->id);
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    if (w->exit_notify != NULL)
        uv_async_send(w->exit_notify);
}

bool worker_exited(struct worker *w)
{
    return __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

int worker_start(struct worker *w, unsigned id, struct snapshot *s, const int *fds,
                 struct accesslog *log)
{
    int rc;

    w->id = id;
    rc = accesslog_buf_init(&w->alog, log);
    if (rc < 0)
        return rc;
    if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng)) {
        w->rng[0] = (uint64_t)uv_hrtime() ^ ((uint64_t)id << 32);
        w->rng[1] = 0x9e3779b97f4a7c15ULL;
    }
    w->rng[0] |= 1;
    w->scratch = malloc(WORKER_BUF_SIZE);
    if (w->scratch == NULL) {
        accesslog_buf_release(&w->alog);
        return UV_ENOMEM;
    }
    rc = uv_loop_init(&w->loop);
    if (rc < 0)
        goto out_scratch;
    rc = uv_mutex_init(&w->lock);
    if (rc < 0)
        goto out_loop;
    xprt_loop_init(&w->xlp, &w->loop);
    w->xlp.buf_get = xprt_buf_get;
    w->xlp.buf_put = xprt_buf_put;
    w->xlp.buf_ctx = w;
    w->xlp.buf_size = WORKER_BUF_SIZE;
    pool_init(&w->pool, &w->loop, &w->xlp, w->scratch);
    worker_resolver_init(w, &s->cfg->dns);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->sweep);
    w->sweep.data = w;
    uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    rc = worker_adopt(w, s, fds);
    if (rc < 0)
        goto out_handles;
    rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc < 0)
        goto out_handles;
    return 0;

out_handles:
    worker_exit(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    wsnap_unref(w->cur);
    w->cur = NULL;
    uv_mutex_destroy(&w->lock);
out_loop:
    uv_loop_close(&w->loop);
out_scratch:
    free(w->scratch);
    w->scratch = NULL;
    accesslog_buf_release(&w->alog);
    return rc;
}

void worker_reload(struct worker *w, struct snapshot *s, const int *fds)
{
    snapshot_ref(s);
    uv_mutex_lock(&w->lock);
    /* Reloads reach a worker one at a time: a reload still in the mailbox
     * may carry sockets the next one drops, which only the worker, on
     * adopting it, knows to close. Workers take their mail within a loop
     * iteration; SIGHUPs are rare. */
    for (int i = 0; i < 1000 && w->mbox_snap != NULL; i++) {
        uv_mutex_unlock(&w->lock);
        uv_sleep(1);
        uv_mutex_lock(&w->lock);
    }
    if (w->mbox_snap != NULL) {
        log_warn("worker %u has not taken the previous config after 1 s; replacing it", w->id);
        snapshot_unref(w->mbox_snap);
    }
    w->mbox_snap = s;
    memcpy(w->mbox_fds, fds, s->cfg->n_listeners * sizeof(int));
    uv_mutex_unlock(&w->lock);
    uv_async_send(&w->wake);
}

void worker_stop(struct worker *w, uint64_t drain_ms)
{
    uv_mutex_lock(&w->lock);
    w->mbox_stop = true;
    w->mbox_drain_ms = drain_ms;
    uv_mutex_unlock(&w->lock);
    uv_async_send(&w->wake);
}

void worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
    uv_mutex_destroy(&w->lock);
    metrics_release(&w->metrics);
}
