/*
 * xprt.c - plain and TLS transports behind one stream-like interface.
 *
 * TLS reads: ciphertext is read from the socket only when the engine has no
 * plaintext left for the owner, so the engine never holds more than one read
 * of ciphertext plus a partial record (well under TLS_IN_MAX). When the owner
 * stops reading while the engine still holds plaintext, and later starts
 * again, the rest is delivered from an idle handle on the next loop
 * iteration, never from inside the owner's own call.
 *
 * TLS writes: the owner's iovecs are encrypted a piece at a time into a
 * pooled buffer and written; the owner's completion runs when the last piece
 * is on the socket. Handshake messages, tickets and alerts go out the same
 * way, so at most one socket write is in flight per transport.
 */
#include "xprt.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

enum {
    XT_F_SOCK_READING = 1u << 0, /* uv_read_start is active */
    XT_F_HANDSHAKING = 1u << 1,
    XT_F_APP_WRITING = 1u << 2, /* an owner write is being encrypted and sent */
    XT_F_CWRITING = 1u << 3,    /* a ciphertext write is in flight */
    XT_F_SHUTDOWN = 1u << 4,    /* shut down once everything is sent */
    XT_F_QUEUED = 1u << 5,      /* on the loop's ready list */
    XT_F_FAILED = 1u << 6,
    XT_F_NOW = 1u << 7,      /* in xprt_write_now: a write done at once needs no callback */
    XT_F_DONE_NOW = 1u << 8, /* ... and it was */
    XT_F_OUT_FULL = 1u << 9, /* socket reads wait for the engine's output to drain */
};

struct xprt_tls {
    struct xprt *t;
    struct tls_conn *c;
    struct xprt_tls *next_ready;
    unsigned flags;
    xprt_handshake_fn *on_handshake;
    uv_write_t creq;
    char *cbuf; /* ciphertext being sent */
    char *rbuf; /* ciphertext being received */
    const uv_buf_t *wiov;
    unsigned wn, wi;
    size_t woff;
    uv_shutdown_t *sreq;
    uv_shutdown_cb sdone;
    bool released; /* the owner is gone: callbacks in flight do nothing */
};

static void xt_pump_read(struct xprt_tls *ts);
static void xt_pump_write(struct xprt_tls *ts);

/* --- plain streams ------------------------------------------------------------ */

static void plain_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct xprt *t = h->data;

    (void)suggested;
    t->on_alloc(t, b);
}

static void plain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct xprt *t = s->data;

    (void)b;
    if (nread != 0)
        t->on_read(t, nread);
}

static void plain_written(uv_write_t *req, int status)
{
    struct xprt *t = req->handle->data;

    t->on_write(t, status);
}

static void plain_write_done_later(struct xprt *t);

/* Tries the write at once: when it all fits in the socket buffer, as it
 * nearly always does, no write request is queued. libuv 1.44 re-arms the
 * socket's epoll registration after every queued write completes, one
 * epoll_ctl per write; this avoids it. */
static int plain_write(struct xprt *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                       bool now_ok)
{
    uv_buf_t rest[64];
    size_t done;
    unsigned k = 0;
    int rc;

    if (n > sizeof(rest) / sizeof(rest[0]))
        return uv_write(req, t->stream, bufs, n, plain_written);
    rc = uv_try_write(t->stream, bufs, n);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0)
        return rc;
    done = (size_t)rc;
    for (unsigned i = 0; i < n; i++) {
        if (done >= bufs[i].len) {
            done -= bufs[i].len;
            continue;
        }
        rest[k++] = uv_buf_init(bufs[i].base + done, (unsigned)(bufs[i].len - done));
        done = 0;
    }
    if (k == 0) {
        if (now_ok)
            return 1;
        plain_write_done_later(t);
        return 0;
    }
    return uv_write(req, t->stream, rest, k, plain_written);
}

/* --- loops -------------------------------------------------------------------- */

static void on_idle(uv_idle_t *idle)
{
    struct xprt_loop *lp = idle->data;
    struct xprt_tls *list = lp->ready;
    struct xprt *written = lp->written;

    lp->ready = NULL;
    lp->written = NULL;
    uv_idle_stop(idle);
    while (written != NULL) {
        struct xprt *t = written;
        written = t->next_written;
        t->write_queued = false;
        t->on_write(t, 0);
    }
    while (list != NULL) {
        struct xprt_tls *ts = list;
        list = ts->next_ready;
        ts->flags &= ~XT_F_QUEUED;
        if (!ts->released)
            xt_pump_read(ts);
    }
}

int xprt_loop_init(struct xprt_loop *lp, uv_loop_t *loop)
{
    int rc = uv_idle_init(loop, &lp->idle);

    lp->idle.data = lp;
    lp->ready = NULL;
    lp->written = NULL;
    return rc;
}

/* Completes a write that went out at once, on the next loop iteration: the
 * owner's callback must not run inside its own call. */
static void plain_write_done_later(struct xprt *t)
{
    struct xprt_loop *lp = t->lp;

    t->write_queued = true;
    t->next_written = lp->written;
    lp->written = t;
    uv_idle_start(&lp->idle, on_idle);
}

void xprt_loop_close(struct xprt_loop *lp)
{
    uv_close((uv_handle_t *)&lp->idle, NULL);
}

static void xt_queue(struct xprt_tls *ts)
{
    struct xprt_loop *lp = ts->t->lp;

    if (ts->flags & XT_F_QUEUED)
        return;
    ts->flags |= XT_F_QUEUED;
    ts->next_ready = lp->ready;
    lp->ready = ts;
    uv_idle_start(&lp->idle, on_idle);
}

/* --- TLS ---------------------------------------------------------------------- */

static void xt_sock_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct xprt *t = h->data;
    struct xprt_tls *ts = t->tls;

    (void)suggested;
    if (ts->rbuf == NULL)
        ts->rbuf = t->lp->buf_get(t->lp->buf_ctx);
    if (ts->rbuf == NULL) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(ts->rbuf, (unsigned)t->lp->buf_size);
}

static void xt_sock_read_stop(struct xprt_tls *ts)
{
    if (ts->flags & XT_F_SOCK_READING) {
        uv_read_stop(ts->t->stream);
        ts->flags &= ~XT_F_SOCK_READING;
    }
}

static void xt_fail(struct xprt_tls *ts, int err);

static void xt_sock_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct xprt *t = s->data;
    struct xprt_tls *ts = t->tls;

    (void)b;
    if (nread == 0 || ts->released)
        return;
    if (nread < 0) {
        xt_sock_read_stop(ts);
        if (ts->flags & XT_F_HANDSHAKING) {
            ts->flags &= ~XT_F_HANDSHAKING;
            ts->on_handshake(t, (int)nread);
        } else if (t->reading) {
            t->on_read(t, nread);
        }
        return;
    }
    int took = tls_feed(ts->c, ts->rbuf, (size_t)nread);
    if (took < 0 || (size_t)took != (size_t)nread) {
        /* Cannot happen while reads wait for the engine to drain. */
        xt_fail(ts, UV_EPROTO);
        return;
    }
    /* The buffer is free again: an idle connection keeps none. */
    t->lp->buf_put(t->lp->buf_ctx, ts->rbuf);
    ts->rbuf = NULL;
    xt_pump_read(ts);
}

/* Reads the socket, unless more than TLS_OUT_MAX bytes of ciphertext wait
 * for it: a peer that sends and does not read (KeyUpdate requests, say,
 * which the engine must answer) is read again only once it has taken them. */
static void xt_sock_read_start(struct xprt_tls *ts)
{
    if (ts->flags & XT_F_FAILED)
        return;
    if (tls_pending(ts->c) > TLS_OUT_MAX) {
        xt_sock_read_stop(ts);
        ts->flags |= XT_F_OUT_FULL;
        return;
    }
    if (ts->flags & XT_F_SOCK_READING)
        return;
    if (uv_read_start(ts->t->stream, xt_sock_alloc, xt_sock_read) == 0)
        ts->flags |= XT_F_SOCK_READING;
}

static void xt_fail(struct xprt_tls *ts, int err)
{
    struct xprt *t = ts->t;

    ts->flags |= XT_F_FAILED;
    xt_sock_read_stop(ts);
    xt_pump_write(ts); /* the alert tells the peer why */
    if (ts->flags & XT_F_HANDSHAKING) {
        ts->flags &= ~XT_F_HANDSHAKING;
        ts->on_handshake(t, err);
        return;
    }
    if (t->reading)
        t->on_read(t, err);
}

/* Moves plaintext from the engine to the owner while it wants some; reads
 * the socket when the engine needs more. */
static void xt_pump_read(struct xprt_tls *ts)
{
    struct xprt *t = ts->t;

    if (ts->flags & XT_F_FAILED) {
        /* A write failed while the owner was not reading: it hears of it
         * when it reads again. */
        if (t->reading && !(ts->flags & XT_F_HANDSHAKING))
            t->on_read(t, UV_EPIPE);
        return;
    }
    if (ts->flags & XT_F_HANDSHAKING) {
        int rc = tls_handshake(ts->c);
        xt_pump_write(ts);
        if (rc == TLS_E_AGAIN) {
            xt_sock_read_start(ts);
            return;
        }
        if (rc < 0) {
            xt_fail(ts, UV_EPROTO);
            return;
        }
        ts->flags &= ~XT_F_HANDSHAKING;
        xt_sock_read_stop(ts);
        ts->on_handshake(t, 0);
        if (ts->released)
            return;
    }
    while (t->reading && !ts->released) {
        uv_buf_t b;
        t->on_alloc(t, &b);
        if (b.len == 0) {
            xt_sock_read_stop(ts);
            t->on_read(t, UV_ENOBUFS);
            return;
        }
        int n = tls_read(ts->c, b.base, b.len);
        if (tls_pending(ts->c) > 0)
            xt_pump_write(ts); /* tickets, key updates, alerts */
        if (n > 0) {
            t->on_read(t, n);
            continue;
        }
        if (n == 0) {
            xt_sock_read_start(ts);
            return;
        }
        xt_sock_read_stop(ts);
        if (n == TLS_E_CLOSED) {
            t->on_read(t, UV_EOF);
            return;
        }
        xt_fail(ts, UV_EPROTO);
        return;
    }
    if (!t->reading)
        xt_sock_read_stop(ts);
}

static void xt_cipher_written(uv_write_t *req, int status);

static void xt_done_writing(struct xprt_tls *ts, int status)
{
    struct xprt *t = ts->t;

    if (ts->flags & XT_F_APP_WRITING) {
        ts->flags &= ~XT_F_APP_WRITING;
        t->on_write(t, status);
    }
}

/* The owner's write is all on the socket: tell it on the next loop
 * iteration, never inside its own call. */
static void xt_done_writing_later(struct xprt_tls *ts)
{
    ts->flags &= ~XT_F_APP_WRITING;
    if (ts->flags & XT_F_NOW)
        ts->flags |= XT_F_DONE_NOW;
    else
        plain_write_done_later(ts->t);
}

/* Encrypts what the owner asked to send and writes the ciphertext straight
 * from the engine's buffer, up to TLS_OUT_MAX at a time, so that a large
 * response goes out in large writes and is not copied. What the socket does
 * not take at once is copied to a pooled buffer (the engine's may move
 * before the write completes) and waits in a write request, which libuv
 * 1.44 makes cost an epoll_ctl. */
static void xt_pump_write(struct xprt_tls *ts)
{
    struct xprt *t = ts->t;

    for (;;) {
        const char *cipher;
        size_t len;

        if (ts->flags & XT_F_CWRITING || ts->released)
            return;
        while ((ts->flags & XT_F_APP_WRITING) && ts->wi < ts->wn && !(ts->flags & XT_F_FAILED)) {
            const uv_buf_t *b = &ts->wiov[ts->wi];
            int n = b->len > ts->woff ? tls_write(ts->c, b->base + ts->woff, b->len - ts->woff) : 0;
            if (n < 0) {
                ts->flags |= XT_F_FAILED;
                break;
            }
            ts->woff += (size_t)n;
            if (ts->woff == b->len) {
                ts->wi++;
                ts->woff = 0;
            } else if (n == 0) {
                break; /* TLS_OUT_MAX waits: send it first */
            }
        }
        len = tls_peek(ts->c, &cipher);
        if (len == 0)
            break;
        uv_buf_t out = uv_buf_init((char *)cipher, (unsigned)len);
        int rc = uv_try_write(t->stream, &out, 1);
        if (rc == UV_EAGAIN)
            rc = 0;
        if (rc < 0) {
            ts->flags |= XT_F_FAILED;
            xt_done_writing(ts, rc);
            return;
        }
        tls_consume(ts->c, (size_t)rc);
        if ((size_t)rc == len)
            continue; /* all out: encrypt the next piece */
        if (ts->cbuf == NULL)
            ts->cbuf = t->lp->buf_get(t->lp->buf_ctx);
        if (ts->cbuf == NULL) {
            xt_done_writing(ts, UV_ENOBUFS);
            return;
        }
        out = uv_buf_init(ts->cbuf, (unsigned)tls_take(ts->c, ts->cbuf, t->lp->buf_size));
        if (uv_write(&ts->creq, t->stream, &out, 1, xt_cipher_written) < 0) {
            ts->flags |= XT_F_FAILED;
            xt_done_writing(ts, UV_EPIPE);
            return;
        }
        ts->flags |= XT_F_CWRITING;
        return;
    }
    if (ts->cbuf != NULL) {
        t->lp->buf_put(t->lp->buf_ctx, ts->cbuf);
        ts->cbuf = NULL;
    }
    if (ts->flags & XT_F_FAILED) {
        xt_done_writing(ts, UV_EPROTO);
        return;
    }
    if ((ts->flags & XT_F_APP_WRITING) && ts->wi == ts->wn) {
        xt_done_writing_later(ts);
        return;
    }
    if ((ts->flags & XT_F_SHUTDOWN) && !(ts->flags & XT_F_APP_WRITING)) {
        ts->flags &= ~XT_F_SHUTDOWN;
        if (uv_shutdown(ts->sreq, t->stream, ts->sdone) < 0)
            ts->sdone(ts->sreq, UV_EPIPE);
    }
}

static void xt_cipher_written(uv_write_t *req, int status)
{
    struct xprt_tls *ts = req->data;

    ts->flags &= ~XT_F_CWRITING;
    if (ts->released)
        return;
    if (status < 0) {
        ts->flags |= XT_F_FAILED;
        if (ts->flags & XT_F_APP_WRITING)
            xt_done_writing(ts, status);
        else if (ts->t->reading && (ts->flags & XT_F_OUT_FULL))
            ts->t->on_read(ts->t, status); /* reads were braked: nobody else will say */
        return;
    }
    xt_pump_write(ts);
    if (!ts->released && (ts->flags & XT_F_OUT_FULL) && tls_pending(ts->c) <= TLS_OUT_MAX) {
        ts->flags &= ~XT_F_OUT_FULL;
        xt_queue(ts); /* reads resume where they stopped */
    }
}

/* --- the interface ------------------------------------------------------------ */

void xprt_init(struct xprt *t, struct xprt_loop *lp, uv_stream_t *stream, void *owner)
{
    memset(t, 0, sizeof(*t));
    t->stream = stream;
    t->owner = owner;
    t->lp = lp;
    stream->data = t;
}

int xprt_tls_start(struct xprt *t, struct tls_ctx *ctx, const char *server_name,
                   xprt_handshake_fn *done)
{
    struct xprt_tls *ts = calloc(1, sizeof(*ts));

    if (ts == NULL)
        return UV_ENOMEM;
    ts->c = tls_conn_new(ctx, server_name);
    if (ts->c == NULL) {
        free(ts);
        return UV_ENOMEM;
    }
    ts->t = t;
    ts->creq.data = ts;
    ts->on_handshake = done;
    ts->flags = XT_F_HANDSHAKING;
    t->tls = ts;
    if (server_name != NULL) {
        xt_pump_read(ts); /* the client speaks first */
    } else {
        xt_sock_read_start(ts);
    }
    return 0;
}

struct tls_conn *xprt_tls_conn(const struct xprt *t)
{
    return t->tls != NULL ? t->tls->c : NULL;
}

int xprt_read_start(struct xprt *t, xprt_alloc_fn *alloc, xprt_read_fn *read)
{
    t->on_alloc = alloc;
    t->on_read = read;
    if (t->reading)
        return 0;
    t->reading = true;
    if (t->tls == NULL) {
        int rc = uv_read_start(t->stream, plain_alloc, plain_read);
        if (rc < 0)
            t->reading = false;
        return rc;
    }
    if (!(t->tls->flags & XT_F_HANDSHAKING))
        xt_queue(t->tls); /* the engine may hold plaintext already */
    return 0;
}

void xprt_read_stop(struct xprt *t)
{
    if (!t->reading)
        return;
    t->reading = false;
    if (t->tls == NULL)
        uv_read_stop(t->stream);
    else if (!(t->tls->flags & XT_F_HANDSHAKING))
        xt_sock_read_stop(t->tls);
}

int xprt_write(struct xprt *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
               xprt_write_fn *done)
{
    struct xprt_tls *ts = t->tls;

    t->on_write = done;
    if (ts == NULL)
        return plain_write(t, req, bufs, n, false);
    if (ts->flags & (XT_F_APP_WRITING | XT_F_FAILED | XT_F_HANDSHAKING))
        return UV_EBUSY;
    ts->wiov = bufs;
    ts->wn = n;
    ts->wi = 0;
    ts->woff = 0;
    ts->flags |= XT_F_APP_WRITING;
    xt_pump_write(ts);
    return 0;
}

int xprt_write_now(struct xprt *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                   xprt_write_fn *done)
{
    struct xprt_tls *ts = t->tls;
    int rc;

    if (ts == NULL) {
        t->on_write = done;
        return plain_write(t, req, bufs, n, true);
    }
    ts->flags |= XT_F_NOW;
    rc = xprt_write(t, req, bufs, n, done);
    if (rc == 0 && (ts->flags & XT_F_DONE_NOW))
        rc = 1;
    ts->flags &= ~(XT_F_NOW | XT_F_DONE_NOW);
    return rc;
}

void xprt_close_notify(struct xprt *t)
{
    struct xprt_tls *ts = t->tls;
    const char *cipher;
    size_t len;

    if (ts == NULL || (ts->flags & (XT_F_HANDSHAKING | XT_F_FAILED | XT_F_CWRITING)) ||
        tls_pending(ts->c) > 0 || tls_shutdown(ts->c) < 0)
        return;
    len = tls_peek(ts->c, &cipher);
    if (len > 0) {
        uv_buf_t b = uv_buf_init((char *)cipher, (unsigned)len);
        int rc = uv_try_write(t->stream, &b, 1);
        if (rc > 0)
            tls_consume(ts->c, (size_t)rc);
    }
}

int xprt_shutdown(struct xprt *t, uv_shutdown_t *req, uv_shutdown_cb done)
{
    struct xprt_tls *ts = t->tls;

    if (ts == NULL)
        return uv_shutdown(req, t->stream, done);
    if (!(ts->flags & (XT_F_HANDSHAKING | XT_F_FAILED)))
        tls_shutdown(ts->c); /* close_notify first */
    ts->sreq = req;
    ts->sdone = done;
    ts->flags |= XT_F_SHUTDOWN;
    xt_pump_write(ts);
    return 0;
}

void xprt_release(struct xprt *t)
{
    struct xprt_tls *ts = t->tls;

    if (t->write_queued) {
        struct xprt **pp = &t->lp->written;
        while (*pp != NULL && *pp != t)
            pp = &(*pp)->next_written;
        if (*pp == t)
            *pp = t->next_written;
        t->write_queued = false;
    }
    if (ts == NULL)
        return;
    t->tls = NULL;
    ts->released = true;
    if (ts->flags & XT_F_QUEUED) {
        /* Unlink from the loop's ready list. */
        struct xprt_tls **pp = &t->lp->ready;
        while (*pp != NULL && *pp != ts)
            pp = &(*pp)->next_ready;
        if (*pp == ts)
            *pp = ts->next_ready;
    }
    if (ts->rbuf != NULL)
        t->lp->buf_put(t->lp->buf_ctx, ts->rbuf);
    if (ts->cbuf != NULL)
        t->lp->buf_put(t->lp->buf_ctx, ts->cbuf);
    tls_conn_free(ts->c);
    free(ts);
}
