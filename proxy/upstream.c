/*
 * upstream.c - connections to function instances and the per-worker pool.
 *
 * A pooled connection keeps reading: a function that closes it (idle
 * timeout, restart) is noticed at once and the connection dropped, instead
 * of being found dead when the next request is written to it. Anything a
 * pooled connection receives is a protocol error and closes it too.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"

enum { UP_F_READING = 1u << 8 };

static void on_close(uv_handle_t *h)
{
    struct xprt *t = h->data;
    struct upconn *u = t->owner;

    xprt_release(t);
    if (u->buf != NULL)
        worker_buf_put(u->w, u->buf);
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
    if (u->x == NULL) { /* idle: a clean close (never mid-exchange: see conn_close) */
        idle_unlink(u);
        xprt_close_notify(&u->xp);
    }
    u->x = NULL;
    uv_close(&u->io.handle, on_close);
}

static void on_alloc(struct xprt *t, uv_buf_t *b)
{
    struct upconn *u = t->owner;

    if (u->x == NULL) {
        /* Pooled: whatever comes (a close, stray bytes) only closes it, and
         * a TLS engine asks even for a session ticket. No buffer of its own. */
        *b = uv_buf_init(u->w->scratch, WORKER_BUF_SIZE);
        return;
    }
    if (u->buf == NULL)
        u->buf = worker_buf_get(u->w);
    if (u->buf == NULL) {
        *b = uv_buf_init(NULL, 0); /* read callback gets UV_ENOBUFS */
        return;
    }
    *b = uv_buf_init(u->buf + u->len, WORKER_BUF_SIZE - u->len);
}

static void on_read(struct xprt *t, ssize_t nread)
{
    struct upconn *u = t->owner;

    if (nread == 0 || (u->flags & UP_F_CLOSING))
        return;
    if (u->x == NULL) {
        /* Idle in the pool: a close, or bytes nobody asked for. */
        up_close(u);
        return;
    }
    if (nread > 0)
        u->len += (uint32_t)nread;
    exch_upstream_data(u->x, nread);
}

void upstream_read(struct upconn *u, bool on)
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
        status = UV_EPROTO; /* upstream_tls_error() says why */
    exch_upstream_connected(u->x, status);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct upconn *u = req->data;

    if (u->flags & UP_F_CLOSING)
        return; /* the exchange gave up on it */
    if (status == 0 && u->tls != NULL) {
        /* Connected is when TLS is up: the connect timeout covers both. */
        status = xprt_tls_start(&u->xp, u->tls, u->ep->tls_name, on_tls_handshake);
        if (status == 0)
            return;
    }
    if (status == 0)
        u->flags |= UP_F_CONNECTED;
    exch_upstream_connected(u->x, status);
}

const char *upstream_tls_error(const struct upconn *u)
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

struct upconn *upstream_get(struct worker *w, struct endpoint *ep, struct exch *x,
                            struct tls_ctx *tls, bool fresh, int *err)
{
    struct upconn *u = fresh ? NULL : pool_take(ep);
    int rc;

    if (u != NULL) {
        u->x = x;
        u->flags |= UP_F_REUSED;
        return u;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    u->w = w;
    u->ep = ep;
    u->x = x;
    u->tls = ep->tls_name != NULL ? tls : NULL;
    u->creq.data = u;
    if (ep->addr.kind == CFG_ADDR_UNIX) {
        rc = uv_pipe_init(&w->loop, &u->io.pipe, 0);
        if (rc < 0)
            goto out_free;
        xprt_init(&u->xp, &w->xlp, &u->io.stream, u);
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&ep->addr.sa;
        uv_pipe_connect(&u->creq, &u->io.pipe, sun->sun_path, on_connect);
        return u;
    }
    rc = uv_tcp_init(&w->loop, &u->io.tcp);
    if (rc < 0)
        goto out_free;
    xprt_init(&u->xp, &w->xlp, &u->io.stream, u);
    uv_tcp_nodelay(&u->io.tcp, 1);
    rc = uv_tcp_connect(&u->creq, &u->io.tcp, (const struct sockaddr *)&ep->addr.sa, on_connect);
    if (rc < 0) {
        u->x = NULL;
        up_close(u);
        *err = rc;
        return NULL;
    }
    return u;

out_free:
    free(u);
    *err = rc;
    return NULL;
}

static void on_write(struct xprt *t, int status)
{
    struct upconn *u = t->owner;

    u->flags &= ~UP_F_WRITING;
    if (u->flags & UP_F_CLOSING)
        return;
    exch_upstream_written(u->x, status);
}

int upstream_write(struct upconn *u, const uv_buf_t *bufs, unsigned n, bool now)
{
    int rc = now ? xprt_write_now(&u->xp, &u->wreq, bufs, n, on_write)
                 : xprt_write(&u->xp, &u->wreq, bufs, n, on_write);

    if (rc == 0)
        u->flags |= UP_F_WRITING;
    return rc;
}

void upstream_release(struct upconn *u, bool reusable)
{
    struct endpoint *ep = u->ep;

    if (u->flags & UP_F_CLOSING)
        return;
    if (!reusable || !(u->flags & UP_F_CONNECTED) || (u->flags & UP_F_WRITING) ||
        u->len != u->parsed || u->w->draining) {
        up_close(u);
        return;
    }
    u->x = NULL;
    u->len = u->parsed = 0;
    /* An idle connection holds no buffer: it is taken again on the next read. */
    if (u->buf != NULL) {
        worker_buf_put(u->w, u->buf);
        u->buf = NULL;
    }
    upstream_read(u, true);
    u->idle_since_ms = worker_now_ms(u->w);
    u->prev_idle = NULL;
    u->next_idle = ep->idle;
    if (ep->idle != NULL)
        ep->idle->prev_idle = u;
    ep->idle = u;
    ep->n_idle++;
}

void upstream_sweep(struct worker *w, bool all)
{
    uint64_t now = worker_now_ms(w);

    for (struct endpoint *ep = w->endpoints; ep != NULL; ep = ep->next) {
        struct upconn *u = ep->idle;
        while (u != NULL) {
            struct upconn *next = u->next_idle;
            if (all || now - u->idle_since_ms >= POOL_IDLE_MS)
                up_close(u);
            u = next;
        }
    }
}
