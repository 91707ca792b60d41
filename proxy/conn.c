/*
 * conn.c - a downstream HTTP/1.1 connection: accept, TLS handshake, reading
 * request heads, keep-alive, lingering close. The exchange it hands each
 * request to (exch.c) reaches it only through the client side interface
 * implemented here (h1_client_ops): framing answer heads for HTTP/1.x,
 * sending, pausing and resuming reads, ending.
 *
 * Requests on a connection are handled strictly one at a time; pipelined
 * requests wait in the buffer (or the kernel) until the response before them
 * has been written, which keeps responses in order by construction.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exch.h"
#include "log.h"

#define LINGER_MS 2000          /* reading what a client still sends after our answer */
#define LINGER_MAX (256 * 1024) /* ... at most this much */

static void conn_process(struct conn *c);
static void conn_linger(struct conn *c);
static void conn_capture_start(struct conn *c, bool final);

/* --- small helpers ------------------------------------------------------ */

static const struct cfg_listener *conn_listener_cfg(const struct conn *c)
{
    const struct config *cfg = c->w->cur->snap->cfg;

    if (c->l->idx >= cfg->n_listeners)
        return NULL; /* removed by a reload */
    return &cfg->listeners[c->l->idx];
}

static void conn_arm(struct conn *c, uint64_t ms);

static void conn_read(struct conn *c, bool on);

/* --- buffers -------------------------------------------------------------- */

static bool conn_buf_alloc(struct conn *c)
{
    const struct cfg_listener *lc = conn_listener_cfg(c);
    size_t need = lc != NULL ? lc->max_header_bytes + 1 : WORKER_BUF_SIZE;

    if (need <= WORKER_BUF_SIZE) {
        c->buf = worker_buf_get(c->w);
        c->cap = WORKER_BUF_SIZE;
    } else {
        c->buf = malloc(need);
        c->cap = (uint32_t)need;
    }
    return c->buf != NULL;
}

static void conn_buf_free(struct conn *c)
{
    if (c->buf == NULL)
        return;
    if (c->cap == WORKER_BUF_SIZE)
        worker_buf_put(c->w, c->buf);
    else
        free(c->buf);
    c->buf = NULL;
    c->cap = c->len = c->parsed = 0;
}

/* Moves unparsed bytes to the front. Only when nothing in flight points into
 * the buffer. */
static void conn_buf_compact(struct conn *c)
{
    if (c->parsed == 0)
        return;
    if (c->len > c->parsed)
        memmove(c->buf, c->buf + c->parsed, c->len - c->parsed);
    c->len -= c->parsed;
    c->parsed = 0;
}

/* --- the exchange's client side: HTTP/1.1 (exch.h) -------------------------- */

static struct conn *conn_of(const struct exch *x)
{
    return (struct conn *)((char *)x->cl - offsetof(struct conn, cl));
}

static void on_down_written(struct xprt *t, int status)
{
    struct conn *c = t->owner;

    if (c->state == CONN_ST_CLOSING || c->x == NULL)
        return;
    exch_client_sent(c->x, status);
}

/* Whether the connection closes after this exchange: the exchange says so,
 * or the connection does (half-closed by the client, draining, its
 * listener removed by a reload). */
static bool conn_closes_after(struct conn *c, struct exch *x)
{
    if ((c->flags & CONN_F_CLOSE_AFTER) || c->w->draining || conn_listener_cfg(c) == NULL)
        x->flags |= X_F_CLOSE;
    return (x->flags & X_F_CLOSE) != 0;
}

/* Frames the head for an HTTP/1.x client: the body's framing (kept, or
 * re-framed as chunked for HTTP/1.1; HTTP/1.0 clients read until the close)
 * and the connection headers. */
static int h1c_send_head(struct exch *x, const struct exch_head *h)
{
    struct conn *c = conn_of(x);
    const struct h1_head *qh = &x->req.head;
    int len;

    if (x->resp_head == NULL)
        x->resp_head = worker_buf_get(c->w);
    if (x->resp_head == NULL)
        return UV_ENOMEM;
    if (h->rh == NULL) {
        char attempts[40];
        snprintf(attempts, sizeof(attempts), "x-fnproxy-attempts: %u\r\n", x->attempts);
        len = snprintf(x->resp_head, WORKER_BUF_SIZE,
                       "HTTP/1.1 %d %s\r\n"
                       "content-type: application/json\r\n"
                       "content-length: %zu\r\n"
                       "x-fnproxy-error: %s\r\n"
                       "%s%s%s"
                       "%s%s%s"
                       "\r\n",
                       h->status, h1_reason(h->status), h->body_len, h->error_code,
                       h->headers != NULL ? h->headers : "",
                       x->request_id[0] ? "x-request-id: " : "", x->request_id,
                       x->request_id[0] ? "\r\n" : "", attempts,
                       conn_closes_after(c, x) ? "connection: close\r\n" : "");
        if (len < 0 || len >= WORKER_BUF_SIZE)
            return UV_E2BIG;
    } else {
        const struct h1_head *rh = h->rh;
        struct h1_reply r = {.request_id = x->request_id, .attempts = x->attempts};
        bool no_body = (x->flags & X_F_HEAD_METHOD) || rh->status == 204 || rh->status == 304;

        if (rh->flags & H1_F_CONTENT_LENGTH) {
            r.length = true;
        } else if (!no_body || (rh->flags & H1_F_CHUNKED)) {
            /* Chunked, or delimited by close: re-frame as chunked for
             * HTTP/1.1 clients; HTTP/1.0 clients read until we close. */
            if (qh->minor >= 1)
                r.chunked = true;
            else
                x->flags |= X_F_CLOSE;
        }
        x->resp_out.chunked = r.chunked && !no_body;
        if (!(x->flags & X_F_REQ_PARSED))
            x->flags |= X_F_CLOSE; /* answered before the body was read */
        r.close = conn_closes_after(c, x);
        r.keep_alive = !r.close && qh->minor == 0;
        len = (int)h1_write_response_head(x->resp_head, WORKER_BUF_SIZE, rh, &r);
        if (len == 0)
            return UV_E2BIG;
    }
    x->resp_head_len = (uint32_t)len;
    h1_out_raw(&x->resp_out, x->resp_head, (size_t)len);
    return 0;
}

/* One write to the client at a time, whatever it carries (100 Continue, a
 * response part, an answer of fnproxy's): TLS needs it, and it keeps the
 * order of bytes obvious. With now, a write that all went at once returns 1
 * and on_down_written is not called: the caller goes on. */
static int h1c_send(struct exch *x, bool now)
{
    struct conn *c = conn_of(x);

    return now ? xprt_write_now(&c->xp, &x->wreq, x->resp_out.iov, x->resp_out.n, on_down_written)
               : xprt_write(&c->xp, &x->wreq, x->resp_out.iov, x->resp_out.n, on_down_written);
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int h1c_send_continue(struct exch *x)
{
    struct conn *c = conn_of(x);

    x->cont_buf = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
    x->bytes_out += x->cont_buf.len;
    return xprt_write(&c->xp, &x->wreq, &x->cont_buf, 1, on_down_written);
}

static void h1c_read(struct exch *x, bool on)
{
    conn_read(conn_of(x), on);
}

static void h1c_input(struct exch *x, const char **p, size_t *n)
{
    struct conn *c = conn_of(x);

    *p = c->buf + c->parsed;
    *n = c->len - c->parsed;
}

static void h1c_consume(struct exch *x, size_t n)
{
    conn_of(x)->parsed += (uint32_t)n;
}

static void h1c_reclaim(struct exch *x)
{
    conn_buf_compact(conn_of(x));
}

static void h1c_arm(struct exch *x, uint64_t ms)
{
    conn_arm(conn_of(x), ms);
}

/* The exchange is over: the next request, or a close. */
static void h1c_end(struct exch *x)
{
    struct conn *c = conn_of(x);

    c->flags &= ~CONN_F_UNREAD;
    if (!(x->flags & X_F_REQ_PARSED))
        c->flags |= CONN_F_UNREAD; /* the rest of its body is coming */
    if (c->len > c->parsed)
        c->flags |= CONN_F_UNREAD;
    if (conn_closes_after(c, x))
        c->flags |= CONN_F_CLOSE_AFTER;
    c->x = NULL;
    exch_free(c->w, x);

    if (c->flags & CONN_F_CLOSE_AFTER) {
        /* Linger when the client may still be sending, and over TLS, which
         * must say close_notify before it closes (RFC 8446 section 6.1). */
        if ((c->flags & CONN_F_UNREAD) || c->xp.tls != NULL)
            conn_linger(c);
        else
            conn_close(c);
        return;
    }
    c->state = CONN_ST_IDLE;
    conn_buf_compact(c);
    if (c->len == 0)
        conn_buf_free(c); /* idle connections hold no buffer */
    conn_process(c);
}

/* An answer cut short (a slow or stalled reader, a broken function): the
 * connection is reset, not closed. A plain close leaves the unsent rest of
 * the answer in the kernel's send buffer (megabytes on loopback), which an
 * orphaned socket in FIN-WAIT-1 goes on trickling to a reader that takes a
 * few bytes a second, for as long as it keeps reading: the slow read would
 * outlive fnproxy's deadline in the kernel. SO_LINGER 0 drops it at once
 * (nginx's reset_timedout_connection, HAProxy's nolinger), and a reset
 * also tells the client the body was cut. */
static void h1c_abort(struct exch *x)
{
    struct conn *c = conn_of(x);

    c->flags |= CONN_F_RESET;
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status);

static int h1c_shutdown(struct exch *x)
{
    struct conn *c = conn_of(x);

    return xprt_shutdown(&c->xp, &c->sreq, on_shutdown);
}

static const struct exch_client_ops h1_client_ops = {
    .send_head = h1c_send_head,
    .send = h1c_send,
    .send_continue = h1c_send_continue,
    .read = h1c_read,
    .input = h1c_input,
    .consume = h1c_consume,
    .reclaim = h1c_reclaim,
    .arm = h1c_arm,
    .end = h1c_end,
    .abort = h1c_abort,
    .shutdown = h1c_shutdown,
};

/* --- the connection ----------------------------------------------------------- */

static void conn_closed(struct conn *c);

static void on_tcp_closed(uv_handle_t *h)
{
    struct xprt *t = h->data;
    struct conn *c = t->owner;

    xprt_release(t);
    conn_closed(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    conn_closed(h->data);
}

static void conn_closed(struct conn *c)
{
    if (--c->pending_closes > 0)
        return;
    if (c->x != NULL) {
        exch_free(c->w, c->x);
        c->x = NULL;
    }
    conn_buf_free(c);
    wlistener_unref(c->l);
    free(c->client_id);
    free(c->capt);
    c->capt = NULL;
    free(c);
}

void conn_close(struct conn *c)
{
    struct worker *w = c->w;

    if (c->state == CONN_ST_CLOSING)
        return;
    /* Between requests a TLS close is a clean one; in the middle of an
     * answer close_notify would hide a truncated body from the client. */
    if (c->state == CONN_ST_IDLE)
        xprt_close_notify(&c->xp);
    c->state = CONN_ST_CLOSING;
    /* The exchange is freed with the connection: a write still in flight
     * may point into its buffers. */
    if (c->x != NULL)
        exch_client_gone(c->x);
    metrics_gauge_add(&c->l->stats->active, -1);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->n_conns--;
    c->pending_closes = 2;
    /* uv_tcp_close_reset refuses a handle with a shutdown pending (EINVAL);
     * that one closes as usual. */
    if (!(c->flags & CONN_F_RESET) || uv_tcp_close_reset(&c->tcp, on_tcp_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* The head is bad, too large or late: the exchange becomes fnproxy's own
 * answer (exch_refuse_head, or the HEAD phase's deadline). */
static void conn_head_over(struct conn *c)
{
    c->state = CONN_ST_EXCHANGE;
    c->x->req_bytes = c->len;
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exch *x = c->x;

    switch (c->state) {
    case CONN_ST_HANDSHAKE:
        metrics_inc(&c->l->stats->tls_errors[METRICS_TLS_TIMEOUT]);
        log_debug("listener %s: TLS handshake with %s timed out", c->l->stats->name, c->client_ip);
        conn_close(c);
        return;
    case CONN_ST_IDLE:
        if (c->capt != NULL && c->capt->kind == CAPTURE_PENDING) {
            conn_capture_start(c, true); /* what it sent so far is all it says first */
            return;
        }
        conn_close(c);
        return;
    case CONN_ST_LINGER:
        conn_close(c);
        return;
    case CONN_ST_HEAD:
        conn_head_over(c);
        exch_on_deadline(x); /* the head's deadline: 408 */
        return;
    case CONN_ST_EXCHANGE:
        exch_on_deadline(x); /* what it means follows from the exchange's phase */
        return;
    default:
        return;
    }
}

/* Moving a deadline later (every bit of progress does) only updates a field;
 * the timer is re-armed when it fires early. A heap update per read or write
 * would cost more than the proxying around it. */
static void on_timer_due(uv_timer_t *t)
{
    struct conn *c = t->data;
    uint64_t now = uv_now(t->loop);

    if (now < c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timer_due, c->deadline - now, 0);
        return;
    }
    on_timer(t);
}

static void conn_arm(struct conn *c, uint64_t ms)
{
    uint64_t now = uv_now(c->timer.loop);

    c->deadline = now + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->deadline < c->timer_due) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timer_due, ms, 0);
    }
}

static void on_alloc(struct xprt *t, uv_buf_t *b)
{
    struct conn *c = t->owner;

    if (c->buf == NULL) {
        c->flags |= CONN_F_SCRATCH;
        *b = uv_buf_init(c->w->scratch, WORKER_BUF_SIZE);
        return;
    }
    *b = uv_buf_init(c->buf + c->len, c->cap - c->len);
}

/* A TLS connection that failed after its handshake: counted by reason, and
 * logged at most once a second per listener and worker, since a client can
 * make this happen as fast as it can connect. */
static void conn_count_record_error(struct conn *c)
{
    struct tls_conn *tc = xprt_tls_conn(&c->xp);
    enum tls_record_error e = tc != NULL ? tls_record_error(tc) : TLS_REC_NONE;

    if (e == TLS_REC_NONE)
        return;
    metrics_inc(&c->l->stats->tls_record_errors[e]);
    if (log_ratelimit(&c->l->last_tls_log_ms, 1000))
        log_warn("listener %s: TLS connection from %s failed after the handshake: %s (%s)",
                 c->l->stats->name, c->client_ip, tls_error(tc), tls_record_error_name(e));
}

static void on_read(struct xprt *t, ssize_t nread)
{
    struct conn *c = t->owner;

    if (nread == 0 || c->state == CONN_ST_CLOSING)
        return;
    if (nread == UV_ENOBUFS) {
        /* The buffer is full: wait until what is in it has been used. */
        conn_read(c, false);
        return;
    }
    if (nread == UV_EOF && c->state == CONN_ST_EXCHANGE && c->x != NULL &&
        (c->x->flags & X_F_REQ_PARSED)) {
        /* A client that half-closes after its request still gets the answer;
         * a tunnel passes the half-close on. */
        c->flags |= CONN_F_CLOSE_AFTER;
        conn_read(c, false);
        exch_client_eof(c->x);
        return;
    }
    if (nread < 0) {
        /* The client closed or failed. Nothing useful can be sent back. */
        if (nread == UV_EPROTO)
            conn_count_record_error(c);
        conn_close(c);
        return;
    }
    if (c->flags & CONN_F_SCRATCH) {
        /* Read into the worker's scratch buffer while idle: keep the bytes
         * in a buffer of the connection's own. Idle connections that only
         * see a close never take one. */
        c->flags &= ~CONN_F_SCRATCH;
        if (c->state != CONN_ST_LINGER) {
            if (!conn_buf_alloc(c)) {
                conn_close(c);
                return;
            }
            memcpy(c->buf, c->w->scratch, (size_t)nread);
        }
    }
    if (c->state == CONN_ST_LINGER) {
        c->discarded += (uint32_t)nread;
        if (c->discarded > LINGER_MAX)
            conn_close(c);
        return; /* c->len stays 0: the next read reuses the buffer */
    }
    c->len += (uint32_t)nread;
    if (c->state == CONN_ST_EXCHANGE && c->x != NULL) {
        exch_input(c->x);
        return;
    }
    conn_process(c);
}

static void conn_read(struct conn *c, bool on)
{
    if (c->state == CONN_ST_CLOSING)
        return;
    if (on && !(c->flags & CONN_F_READING)) {
        if (xprt_read_start(&c->xp, on_alloc, on_read) == 0)
            c->flags |= CONN_F_READING;
    } else if (!on && (c->flags & CONN_F_READING)) {
        xprt_read_stop(&c->xp);
        c->flags &= ~CONN_F_READING;
    }
}

/* Drives a connection that is between requests or receiving a head. */
static void conn_process(struct conn *c)
{
    const struct cfg_listener *lc = conn_listener_cfg(c);
    struct exch *x;
    size_t used = 0;

    if (c->state == CONN_ST_IDLE && c->capt != NULL && c->capt->kind == CAPTURE_PENDING) {
        conn_capture_start(c, false);
        return;
    }
    if (c->state == CONN_ST_IDLE) {
        if (c->len == 0) {
            conn_arm(c, lc != NULL ? lc->keepalive_timeout_ms : 1000);
            conn_read(c, true);
            return;
        }
        x = exch_new(&c->cl);
        if (x == NULL) {
            conn_close(c);
            return;
        }
        c->x = x; /* exch_new armed the head's deadline */
        c->state = CONN_ST_HEAD;
    }
    if (c->state != CONN_ST_HEAD)
        return;
    x = c->x;
    enum h1_event ev = h1_feed(&x->req, c->buf + c->parsed, c->len - c->parsed, &used);
    c->parsed += (uint32_t)used;
    switch (ev) {
    case H1_EV_HEAD:
        if (lc != NULL && c->parsed > lc->max_header_bytes)
            break;
        c->state = CONN_ST_EXCHANGE;
        x->req_bytes = c->parsed;
        exch_begin(x);
        return;
    case H1_EV_MORE:
        if ((lc != NULL && c->len > lc->max_header_bytes) || c->len == c->cap)
            break;
        conn_read(c, true);
        return;
    default:
        if (x->req.error_status == 431)
            break;
        conn_head_over(c);
        exch_refuse_head(x, 400, "bad_request",
                         x->req.error != NULL ? x->req.error : "malformed request");
        return;
    }
    conn_head_over(c);
    exch_refuse_head(x, 431, "header_too_large", "request head is larger than max_header_bytes");
}

/* --- capture (capture.h) ----------------------------------------------------- */

/* A redirected connection: refused when it was not redirected or would
 * loop into fnproxy; else its first bytes are awaited. 0, or -1 when it
 * was closed. */
static int conn_capture_accept(struct conn *c, int fd)
{
    const struct cfg_listener *lc = conn_listener_cfg(c);
    const struct config *cfg = c->w->cur->snap->cfg;
    char dst[INET6_ADDRSTRLEN + 8] = "none";
    int err;

    c->capt = calloc(1, sizeof(*c->capt));
    if (c->capt == NULL) {
        conn_close(c);
        return -1;
    }
    c->capt->kind = CAPTURE_PENDING;
    err = capture_orig_dst(fd, &c->capt->dst);
    if (err == 0 && !capture_dst_is_own(cfg, &c->capt->dst)) {
        c->cl.orig_port = capture_dst_port(&c->capt->dst);
        return 0;
    }
    /* Connected straight to the capture port, or redirected to one of
     * fnproxy's listeners: serving it would loop. */
    if (err == 0)
        capture_dst_text(&c->capt->dst, dst, sizeof(dst));
    if (lc != NULL)
        metrics_inc(&c->w->cur->fns[lc->function].egress_none->denials[DENY_OWN_LISTENER]);
    if (log_ratelimit(&c->l->last_capture_log_ms, 1000))
        log_warn("listener %s: connection from %s refused: %s", c->l->stats->name, c->client_ip,
                 err == 0 ? "its destination is fnproxy itself" : "it was not redirected");
    log_debug("listener %s: original destination %s (%s)", c->l->stats->name, dst,
              err == 0 ? "own" : uv_strerror(err));
    c->flags |= CONN_F_RESET;
    conn_close(c);
    return -1;
}

/* The first bytes tell what the connection speaks: HTTP goes on as
 * requests; TLS and the rest become one CONNECT-like exchange to the SNI
 * name, or to the original address. */
static void conn_capture_start(struct conn *c, bool final)
{
    const struct cfg_listener *lc = conn_listener_cfg(c);
    char name[SNI_NAME_MAX + 1];
    enum capture_kind k;
    size_t n, used = 0;
    struct exch *x;

    if (lc == NULL) {
        conn_close(c);
        return;
    }
    k = capture_classify(c->buf, c->len, final || (c->buf != NULL && c->len >= c->cap), name);
    if (k == CAPTURE_PENDING) {
        /* Silence past first_bytes_timeout: the server speaks first. Once
         * bytes came, the client speaks first and the rest of its first
         * message (a ClientHello split over writes) gets header_timeout. */
        if (c->len == 0) {
            conn_arm(c, lc->first_bytes_timeout_ms);
        } else if (!c->capt->speaking) {
            c->capt->speaking = true;
            conn_arm(c, lc->header_timeout_ms);
        }
        conn_read(c, true);
        return;
    }
    c->capt->kind = (uint8_t)k;
    c->cl.capture = (uint8_t)k;
    if (k == CAPTURE_HTTP) {
        conn_process(c);
        return;
    }
    if (c->buf == NULL && !conn_buf_alloc(c)) { /* the tunnel reads into it */
        conn_close(c);
        return;
    }
    n = capture_connect_head(c->capt, name);
    x = n > 0 ? exch_new(&c->cl) : NULL;
    if (x == NULL) {
        conn_close(c);
        return;
    }
    c->x = x;
    c->state = CONN_ST_EXCHANGE;
    if (h1_feed(&x->req, c->capt->head, n, &used) != H1_EV_HEAD) {
        conn_close(c); /* the head is fnproxy's own: cannot happen */
        return;
    }
    exch_begin(x);
}

/* What a plain-HTTP client that dialled a TLS port gets before the close:
 * something it can read, instead of a reset (nginx does the same). */
static const char plain_http_reply[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "content-type: application/json\r\n"
    "content-length: 80\r\n"
    "x-fnproxy-error: plain_http_to_tls_port\r\n"
    "connection: close\r\n"
    "\r\n"
    "{\"error\":\"plain_http_to_tls_port\",\"message\":\"this port speaks HTTPS, not HTTP\"}\n";

static void on_handshake(struct xprt *t, int status)
{
    struct conn *c = t->owner;
    struct tls_conn *tc = xprt_tls_conn(t);

    if (c->state != CONN_ST_HANDSHAKE)
        return;
    if (status < 0) {
        enum tls_failure f = tc != NULL ? tls_failure(tc) : TLS_FAIL_INTERNAL;
        if (f == TLS_FAIL_NONE)
            f = TLS_FAIL_CLOSED; /* the client went away mid-handshake */
        metrics_inc(&c->l->stats->tls_errors[f]);
        log_debug("listener %s: TLS handshake with %s failed: %s", c->l->stats->name, c->client_ip,
                  tc != NULL ? tls_error(tc) : uv_strerror(status));
        if (f == TLS_FAIL_PLAIN_HTTP) {
            uv_buf_t b = uv_buf_init((char *)plain_http_reply, sizeof(plain_http_reply) - 1);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort */
        }
        conn_close(c);
        return;
    }
    char id[1024];
    if (tls_peer_identity(tc, id, sizeof(id)) > 0) {
        c->client_id = strdup(id);
        if (c->client_id == NULL) {
            conn_close(c);
            return;
        }
        c->cl.id = c->client_id;
    }
    c->state = CONN_ST_IDLE;
    conn_process(c);
}

void conn_accept(struct wlistener *l, int fd, const struct sockaddr *peer)
{
    struct worker *w = l->w;
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL || uv_tcp_init(&w->loop, &c->tcp) < 0) {
        free(c);
        close(fd);
        return;
    }
    xprt_init(&c->xp, &w->xlp, (uv_stream_t *)&c->tcp, c);
    c->w = w;
    c->l = l;
    c->cl.ops = &h1_client_ops;
    c->cl.w = w;
    c->cl.listener = &l->idx;
    c->cl.ip = c->client_ip;
    l->refs++;
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        /* The handle is initialised and must be closed through the loop;
         * the timer is not, so only one close is pending. */
        close(fd);
        c->state = CONN_ST_CLOSING;
        c->pending_closes = 1;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        return;
    }
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->sreq.data = c;
    if (peer->sa_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)peer, c->client_ip, sizeof(c->client_ip));
    else if (peer->sa_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)peer, c->client_ip, sizeof(c->client_ip));
    else if (peer->sa_family == AF_UNIX)
        snprintf(c->client_ip, sizeof(c->client_ip), "unix");
    if (c->client_ip[0] == '\0')
        snprintf(c->client_ip, sizeof(c->client_ip), "unknown");
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    metrics_inc(&l->stats->accepted);
    metrics_gauge_add(&l->stats->active, 1);
    struct tls_ctx *tls = conn_listener_cfg(c) != NULL ? w->cur->snap->listener_tls[l->idx] : NULL;
    if (tls != NULL) {
        c->state = CONN_ST_HANDSHAKE;
        c->cl.tls = true;
        conn_arm(c, tls_ctx_handshake_timeout_ms(tls));
        if (xprt_tls_start(&c->xp, tls, NULL, on_handshake) < 0)
            conn_close(c);
        return;
    }
    c->state = CONN_ST_IDLE;
    if (conn_listener_cfg(c) != NULL && conn_listener_cfg(c)->kind == CFG_LISTENER_CAPTURE &&
        conn_capture_accept(c, fd) < 0)
        return;
    conn_process(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    if (status < 0 && c->state == CONN_ST_LINGER)
        conn_close(c);
}

/* Closes after the answer without losing it: closing a socket with unread
 * input makes the kernel send a reset, which can destroy the answer before
 * the client reads it (a 413 to a client still uploading). So: shut down
 * writing, read and discard for a while, then close (nginx's lingering
 * close). */
static void conn_linger(struct conn *c)
{
    c->state = CONN_ST_LINGER;
    c->len = c->parsed = 0;
    c->discarded = 0;
    if (xprt_shutdown(&c->xp, &c->sreq, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    conn_arm(c, LINGER_MS);
    conn_read(c, true);
}

void conn_thaw(struct conn *c, uint64_t lost_ms)
{
    uint64_t now = uv_now(c->timer.loop);

    if (c->state == CONN_ST_CLOSING)
        return;
    if (c->x != NULL)
        exch_thaw(c->x, lost_ms);
    if (!uv_is_active((uv_handle_t *)&c->timer))
        return;
    c->deadline += lost_ms;
    c->timer_due = c->deadline;
    uv_timer_start(&c->timer, on_timer_due, c->deadline > now ? c->deadline - now : 0, 0);
}

void conn_drain(struct conn *c)
{
    if (c->state == CONN_ST_IDLE || c->state == CONN_ST_HANDSHAKE)
        conn_close(c);
    else
        c->flags |= CONN_F_CLOSE_AFTER;
}
