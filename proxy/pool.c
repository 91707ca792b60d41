/*
 * pool.c - upstream endpoints, connections to them and the per-worker pool
 * (see pool.h).
 *
 * A pooled connection keeps reading: a peer that closes it (idle timeout,
 * restart) is noticed at once and the connection dropped, instead of being
 * found dead when the next request is written to it. Anything a pooled
 * connection receives is a protocol error and closes it too.
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* --- endpoints ------------------------------------------------------------ */

void pool_init(struct pool *p, uv_loop_t *loop, struct xprt_loop *xlp, char *scratch)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->xlp = xlp;
    p->scratch = scratch;
}

static bool str_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void endpoint_free(struct endpoint *ep)
{
    free(ep->tls_name);
    free(ep->tls_ca);
    free(ep);
}

struct endpoint *endpoint_get(struct pool *p, const struct cfg_addr *addr, const char *tls_name,
                              const char *tls_ca)
{
    struct endpoint *ep;

    for (ep = p->endpoints; ep != NULL; ep = ep->next) {
        if (ep->addr.sa_len == addr->sa_len && memcmp(&ep->addr.sa, &addr->sa, addr->sa_len) == 0 &&
            str_same(ep->tls_name, tls_name) && str_same(ep->tls_ca, tls_ca)) {
            ep->refs++;
            return ep;
        }
    }
    ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    ep->pool = p;
    ep->addr = *addr;
    if ((tls_name != NULL && (ep->tls_name = strdup(tls_name)) == NULL) ||
        (tls_ca != NULL && (ep->tls_ca = strdup(tls_ca)) == NULL)) {
        endpoint_free(ep);
        return NULL;
    }
    ep->refs = 1;
    ep->next = p->endpoints;
    if (p->endpoints != NULL)
        p->endpoints->prev = ep;
    p->endpoints = ep;
    p->n_endpoints++;
    return ep;
}

void endpoint_put(struct endpoint *ep)
{
    struct pool *p;

    if (ep == NULL || --ep->refs > 0)
        return;
    /* Connections hold references: with none left, none is open. */
    p = ep->pool;
    if (ep->prev != NULL)
        ep->prev->next = ep->next;
    else
        p->endpoints = ep->next;
    if (ep->next != NULL)
        ep->next->prev = ep->prev;
    p->n_endpoints--;
    endpoint_free(ep);
}

/* --- connections ----------------------------------------------------------- */

static void on_close(uv_handle_t *h)
{
    struct xprt *t = h->data;
    struct upconn *u = t->owner;
    struct pool *p = u->pool;

    xprt_release(t);
    if (u->buf != NULL)
        p->xlp->buf_put(p->xlp->buf_ctx, u->buf);
    p->n_conns--;
    endpoint_put(u->ep);
    free(u);
}

static void idle_unlink(struct upconn *u)
{
    struct endpoint *ep = u->ep;

    if (u->prev_idle != NULL)
        u->prev_idle->next_idle = u->next_idle;
    else if (ep->idle == u)
        ep->idle = u->next_idle;
    else
        return; /* not pooled */
    if (u->next_idle != NULL)
        u->next_idle->prev_idle = u->prev_idle;
    u->next_idle = u->prev_idle = NULL;
    ep->n_idle--;
}

static void up_close(struct upconn *u)
{
    if (u->flags & UP_F_CLOSING)
        return;
    u->flags |= UP_F_CLOSING;
    /* Idle, it is a clean close; an owner's connection may be cut in the
     * middle of a message, which close_notify would hide. */
    if (u->owner == NULL) {
        idle_unlink(u);
        xprt_close_notify(&u->xp);
    }
    u->owner = NULL;
    uv_close(&u->io.handle, on_close);
}

static void on_alloc(struct xprt *t, uv_buf_t *b)
{
    struct upconn *u = t->owner;
    struct xprt_loop *xlp = u->pool->xlp;

    if (u->owner == NULL) {
        /* Pooled: whatever comes (a close, stray bytes) only closes it, and
         * a TLS engine asks even for a session ticket. No buffer of its own. */
        *b = uv_buf_init(u->pool->scratch, (unsigned)xlp->buf_size);
        return;
    }
    if (u->buf == NULL)
        u->buf = xlp->buf_get(xlp->buf_ctx);
    if (u->buf == NULL) {
        *b = uv_buf_init(NULL, 0); /* read callback gets UV_ENOBUFS */
        return;
    }
    *b = uv_buf_init(u->buf + u->len, (unsigned)(xlp->buf_size - u->len));
}

static void on_read(struct xprt *t, ssize_t nread)
{
    struct upconn *u = t->owner;

    if (nread == 0 || (u->flags & UP_F_CLOSING))
        return;
    if (u->owner == NULL) {
        /* Idle in the pool: a close, or bytes nobody asked for. */
        up_close(u);
        return;
    }
    if (nread > 0)
        u->len += (uint32_t)nread;
    u->ops->data(u->owner, nread);
}

void upconn_read(struct upconn *u, bool on)
{
    if (u->flags & UP_F_CLOSING)
        return;
    if (on && !(u->flags & UP_F_READING)) {
        if (xprt_read_start(&u->xp, on_alloc, on_read) == 0)
            u->flags |= UP_F_READING;
    } else if (!on && (u->flags & UP_F_READING)) {
        xprt_read_stop(&u->xp);
        u->flags &= ~UP_F_READING;
    }
}

static void on_tls_handshake(struct xprt *t, int status)
{
    struct upconn *u = t->owner;

    if (u->flags & UP_F_CLOSING)
        return;
    if (status == 0)
        u->flags |= UP_F_CONNECTED;
    else
        status = UV_EPROTO; /* upconn_tls_error() says why */
    u->ops->connected(u->owner, status);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct upconn *u = req->data;

    if (u->flags & UP_F_CLOSING)
        return; /* the owner gave up on it */
    if (status == 0 && u->tls != NULL) {
        /* Connected is when TLS is up: the connect timeout covers both. */
        status = xprt_tls_start(&u->xp, u->tls, u->ep->tls_name, on_tls_handshake);
        if (status == 0)
            return;
    }
    if (status == 0)
        u->flags |= UP_F_CONNECTED;
    u->ops->connected(u->owner, status);
}

const char *upconn_tls_error(const struct upconn *u)
{
    struct tls_conn *tc = xprt_tls_conn(&u->xp);

    return tc != NULL ? tls_error(tc) : "";
}

static struct upconn *pool_take(struct endpoint *ep)
{
    struct upconn *u = ep->idle;

    if (u != NULL)
        idle_unlink(u);
    return u;
}

struct upconn *pool_get(struct pool *p, struct endpoint *ep, struct tls_ctx *tls, bool fresh,
                        const struct pool_owner_ops *ops, void *owner, int *err)
{
    struct upconn *u = fresh ? NULL : pool_take(ep);
    int rc;

    if (++ep->n_busy > ep->busy_peak)
        ep->busy_peak = ep->n_busy;
    if (u != NULL) {
        u->ops = ops;
        u->owner = owner;
        u->flags |= UP_F_REUSED;
        return u;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        ep->n_busy--;
        *err = UV_ENOMEM;
        return NULL;
    }
    u->pool = p;
    u->ops = ops;
    u->owner = owner;
    u->tls = ep->tls_name != NULL ? tls : NULL;
    u->creq.data = u;
    rc = ep->addr.kind == CFG_ADDR_UNIX ? uv_pipe_init(p->loop, &u->io.pipe, 0)
                                        : uv_tcp_init(p->loop, &u->io.tcp);
    if (rc < 0) {
        ep->n_busy--;
        free(u);
        *err = rc;
        return NULL;
    }
    u->ep = ep;
    ep->refs++;
    p->n_conns++;
    xprt_init(&u->xp, p->xlp, &u->io.stream, u);
    if (ep->addr.kind == CFG_ADDR_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&ep->addr.sa;

        uv_pipe_connect(&u->creq, &u->io.pipe, sun->sun_path, on_connect);
        return u;
    }
    uv_tcp_nodelay(&u->io.tcp, 1);
    rc = uv_tcp_connect(&u->creq, &u->io.tcp, (const struct sockaddr *)&ep->addr.sa, on_connect);
    if (rc < 0) {
        ep->n_busy--;
        u->owner = NULL;
        u->flags |= UP_F_CLOSING; /* never pooled: nothing to unlink or say */
        uv_close(&u->io.handle, on_close);
        *err = rc;
        return NULL;
    }
    return u;
}

static void on_write(struct xprt *t, int status)
{
    struct upconn *u = t->owner;

    u->flags &= ~UP_F_WRITING;
    if (u->flags & UP_F_CLOSING)
        return;
    u->ops->written(u->owner, status);
}

int upconn_write(struct upconn *u, const uv_buf_t *bufs, unsigned n, bool now)
{
    int rc = now ? xprt_write_now(&u->xp, &u->wreq, bufs, n, on_write)
                 : xprt_write(&u->xp, &u->wreq, bufs, n, on_write);

    if (rc == 0)
        u->flags |= UP_F_WRITING;
    return rc;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req; /* a failure shows as a read or write error, or not at all */
    (void)status;
}

int upconn_shutdown(struct upconn *u)
{
    u->flags |= UP_F_SHUT;
    return xprt_shutdown(&u->xp, &u->sreq, on_shutdown);
}

void pool_put(struct upconn *u, bool reusable)
{
    struct endpoint *ep = u->ep;
    struct pool *p = u->pool;

    if (u->flags & UP_F_CLOSING)
        return;
    ep->n_busy--;
    if (!reusable || !(u->flags & UP_F_CONNECTED) || (u->flags & (UP_F_WRITING | UP_F_SHUT)) ||
        u->len != u->parsed || p->draining ||
        ep->n_idle >= (ep->busy_peak > ep->busy_peak_prev ? ep->busy_peak : ep->busy_peak_prev)) {
        up_close(u);
        return;
    }
    u->ops = NULL;
    u->owner = NULL;
    u->len = u->parsed = 0;
    /* An idle connection holds no buffer: it is taken again on the next read. */
    if (u->buf != NULL) {
        p->xlp->buf_put(p->xlp->buf_ctx, u->buf);
        u->buf = NULL;
    }
    upconn_read(u, true);
    u->idle_since_ms = uv_now(p->loop);
    u->prev_idle = NULL;
    u->next_idle = ep->idle;
    if (ep->idle != NULL)
        ep->idle->prev_idle = u;
    ep->idle = u;
    ep->n_idle++;
}

void pool_sweep(struct pool *p, uint64_t idle_ms)
{
    uint64_t now = uv_now(p->loop);

    for (struct endpoint *ep = p->endpoints, *next_ep; ep != NULL; ep = next_ep) {
        /* Closing an endpoint's last connection may free it (on_close, a
         * later loop iteration): hold it until its list is walked. */
        ep->refs++;
        ep->busy_peak_prev = ep->busy_peak;
        ep->busy_peak = ep->n_busy;
        for (struct upconn *u = ep->idle, *next; u != NULL; u = next) {
            next = u->next_idle;
            if (idle_ms == 0 || now - u->idle_since_ms >= idle_ms)
                up_close(u);
        }
        next_ep = ep->next;
        endpoint_put(ep);
    }
}
