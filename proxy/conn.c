/*
 * conn.c - the downstream connection state machine and the exchange that
 * proxies one request to a function and its response back.
 *
 * Bodies stream without copies: iovecs point into the read buffer of the
 * side they came from, and that side is not read again until the write that
 * uses them completes. One write in flight per direction is the
 * backpressure: a fast sender waits for the slow receiver.
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

#include "accesslog.h"
#include "log.h"
#include "upstream.h"

#define EXCH_FREE_MAX 256
_Static_assert(CFG_MAX_ENDPOINTS <= 64, "exch.tried has a bit per endpoint");
#define LINGER_MS 2000          /* reading what a client still sends after our answer */
#define LINGER_MAX (256 * 1024) /* ... at most this much */

static void conn_process(struct conn *c);
static void conn_linger(struct conn *c);
static void exch_pump_request(struct exch *x);
static void exch_pump_response(struct exch *x);
static void exch_response_written(struct exch *x);
static void exch_connect(struct exch *x);
static void exch_reply(struct exch *x, int status, const char *code, const char *message);

/* --- small helpers ------------------------------------------------------ */

static const struct cfg_listener *conn_listener_cfg(const struct conn *c)
{
    const struct config *cfg = c->w->cur->snap->cfg;

    if (c->l->idx >= cfg->n_listeners)
        return NULL; /* removed by a reload */
    return &cfg->listeners[c->l->idx];
}

static uint64_t conn_header_timeout(const struct conn *c)
{
    const struct cfg_listener *lc = conn_listener_cfg(c);

    return lc != NULL ? lc->header_timeout_ms : 10000;
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

/* --- exchanges ------------------------------------------------------------ */

static struct exch *exch_new(struct conn *c)
{
    struct worker *w = c->w;
    struct exch *x = w->free_exch;

    if (x != NULL) {
        w->free_exch = x->next_free;
        w->n_free_exch--;
    } else {
        x = malloc(sizeof(*x));
        if (x == NULL)
            return NULL;
    }
    /* Everything before the parsers and buffers; they are set up where
     * they are used. */
    memset(x, 0, offsetof(struct exch, req));
    x->req_out.n = x->resp_out.n = 0;
    x->request_id[0] = '\0';
    x->c = c;
    x->wreq.data = c;

    h1_parser_init(&x->req, HTTP_REQUEST);
    return x;
}

static void exch_free(struct worker *w, struct exch *x)
{
    if (x->req_head != NULL) {
        if (x->req_head_cap == WORKER_BUF_SIZE)
            worker_buf_put(w, x->req_head);
        else
            free(x->req_head);
    }
    if (x->resp_head != NULL)
        worker_buf_put(w, x->resp_head);
    if (w->n_free_exch >= EXCH_FREE_MAX || w->exiting) {
        free(x);
        return;
    }
    x->next_free = w->free_exch;
    w->free_exch = x;
    w->n_free_exch++;
}

void exch_free_all(struct worker *w)
{
    while (w->free_exch != NULL) {
        struct exch *x = w->free_exch;
        w->free_exch = x->next_free;
        free(x);
    }
    w->n_free_exch = 0;
}

/* The method and target as received: from the head forwarded upstream when
 * there is one (the client buffer may have moved on), else from the head
 * spans, which are still in place when no head was forwarded. */
static void exch_request_line(const struct exch *x, struct h1_span *method, struct h1_span *target)
{
    *method = x->req.head.method;
    *target = x->req.head.target;
    if (x->req_head != NULL && x->req_head_len > method->len + 1) {
        method->p = x->req_head;
        target->p = x->req_head + method->len + 1;
    }
}

/* Counts the finished request: status, latency and phases, access log. */
static void exch_count(struct exch *x)
{
    struct route_stats *s = x->stats != NULL ? x->stats : x->ws->noroute;
    struct worker *w = x->c->w;
    uint64_t now = metrics_now_us();
    uint64_t duration = x->t0 != 0 ? now - x->t0 : 0;

    metrics_count_status(s, x->status);
    metrics_observe_request(s, &(struct metrics_request_time){
                                   .duration_us = duration,
                                   .connect_us = x->connect_us,
                                   .upstream_us = x->upstream_us,
                                   .connected = x->connected,
                                   .sent = x->sent,
                               });
    if (w->alog.buf == NULL)
        return; /* access log off */
    struct h1_span method, target;
    const struct config *cfg = x->ws->snap->cfg;
    size_t li = x->c->l->idx;
    exch_request_line(x, &method, &target);
    accesslog_record(&w->alog, &(struct accesslog_entry){
                                   .ts_ms = x->ts_ms,
                                   .request_id = x->request_id,
                                   .client = x->c->client_ip,
                                   .listener = li < cfg->n_listeners ? cfg->listeners[li].name : "",
                                   .method = method.p,
                                   .method_len = method.len,
                                   .target = target.p,
                                   .target_len = target.len,
                                   .status = x->status,
                                   .function = x->fn != NULL ? x->fn->name : "",
                                   .route = x->route != NULL ? x->route->name : "",
                                   .upstream = x->ep != NULL ? x->ep->addr.text : "",
                                   .bytes_in = x->req_bytes + x->req.body_bytes,
                                   .bytes_out = x->bytes_out,
                                   .duration_us = duration,
                                   .upstream_us = x->upstream_us,
                               });
}

static void exch_count_uperr(struct exch *x, enum metrics_uperr reason)
{
    if (x->stats != NULL)
        metrics_inc(&x->stats->upstream_errors[reason]);
}

static void exch_count_timeout(struct exch *x, enum metrics_timeout kind)
{
    struct route_stats *s = x->stats != NULL ? x->stats : x->ws->noroute;

    metrics_inc(&s->timeouts[kind]);
}

/* A request's time starts when its head is parsed (or found bad): reading
 * the head is the client's time, not fnproxy's (metrics.h). */
static void exch_start_clock(struct exch *x)
{
    x->t0 = metrics_now_us();
    if (x->c->w->alog.buf != NULL)
        x->ts_ms = accesslog_now_ms(); /* the wall clock is only for the log */
}

/* An attempt ended (response head, or failure): its time and, if a head was
 * sent, its upstream phase. */
static void exch_attempt_done(struct exch *x)
{
    uint64_t now;

    if (x->t_attempt == 0)
        return;
    now = metrics_now_us();
    if (x->flags & X_F_HEAD_SENT)
        x->upstream_us += now - x->t_sent;
    metrics_observe_attempt(x->stats, now - x->t_attempt);
    x->t_attempt = 0;
}

/* Lets go of the upstream connection, to the pool when it is clean. */
static void exch_drop_upstream(struct exch *x, bool reusable)
{
    if (x->u == NULL)
        return;
    exch_attempt_done(x);
    upstream_release(x->u, reusable && !(x->flags & X_F_UP_BROKEN));
    x->u = NULL;
    x->ep->outstanding--;
}

/* The exchange is over (response written, or abandoned). */
static void exch_end(struct exch *x)
{
    struct conn *c = x->c;
    bool reusable = (x->flags & X_F_REQ_SENT) && (x->flags & X_F_RESP_PARSED) &&
                    (x->resp.head.flags & H1_F_KEEP_ALIVE);

    exch_count(x);
    exch_drop_upstream(x, reusable);
    c->flags &= ~CONN_F_UNREAD;
    if (!(x->flags & X_F_REQ_PARSED))
        c->flags |= CONN_F_CLOSE_AFTER | CONN_F_UNREAD; /* the rest of its body is coming */
    if (c->len > c->parsed)
        c->flags |= CONN_F_UNREAD;
    wsnap_unref(x->ws);
    c->x = NULL;
    exch_free(c->w, x);

    if ((c->flags & CONN_F_CLOSE_AFTER) || c->w->draining || conn_listener_cfg(c) == NULL) {
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

/* Stops everything and closes the connection: for failures after the
 * response head was sent, when no clean answer is possible any more. */
/* The status counted stays the one the client got in the head; the failure
 * shows in fnproxy_upstream_errors_total / fnproxy_timeouts_total. */
static void exch_abort(struct exch *x)
{
    x->flags |= X_F_UP_BROKEN;
    conn_close(x->c);
}

static void exch_touch(struct exch *x)
{
    conn_arm(x->c, x->route != NULL ? x->route->timeout_ms : conn_header_timeout(x->c));
}

/* --- writing to the client ------------------------------------------------ */

static void on_down_written(struct xprt *t, int status)
{
    struct conn *c = t->owner;
    struct exch *x = c->x;

    if (c->state == CONN_ST_CLOSING || x == NULL)
        return;
    x->flags &= ~X_F_DOWN_WRITING;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (x->flags & X_F_LOCAL) {
        exch_end(x);
        return;
    }
    if (x->reply_code != NULL) {
        exch_reply(x, x->status, x->reply_code, x->reply_msg);
        return;
    }
    exch_response_written(x);
    exch_pump_response(x);
}

/* A part of the response reached the client: the bytes it came from in
 * u->buf are free, the rest moves up. */
static void exch_response_written(struct exch *x)
{
    struct upconn *u = x->u;

    exch_touch(x);
    if (u != NULL && u->parsed > 0) {
        if (u->len > u->parsed)
            memmove(u->buf, u->buf + u->parsed, u->len - u->parsed);
        u->len -= u->parsed;
        u->parsed = 0;
    }
}

/* One write to the client at a time, whatever it carries (100 Continue, a
 * response part, an answer of fnproxy's): TLS needs it, and it keeps the
 * order of bytes obvious. With now, a write that all went at once returns 1
 * and on_down_written is not called: the caller goes on. */
static int conn_write(struct conn *c, const uv_buf_t *iov, unsigned n, bool now)
{
    for (unsigned i = 0; i < n; i++)
        c->x->bytes_out += iov[i].len;

    int rc = now ? xprt_write_now(&c->xp, &c->x->wreq, iov, n, on_down_written)
                 : xprt_write(&c->xp, &c->x->wreq, iov, n, on_down_written);

    if (rc == 0)
        c->x->flags |= X_F_DOWN_WRITING;
    return rc;
}

/* Answers the request itself. The exchange ends when the answer is written. */
static void exch_reply(struct exch *x, int status, const char *code, const char *message)
{
    struct conn *c = x->c;
    char body[256];
    int body_len, head_len;

    if (x->flags & X_F_RESP_STARTED) {
        exch_abort(x);
        return;
    }
    exch_drop_upstream(x, false);
    if (x->flags & X_F_DOWN_WRITING) {
        /* "100 Continue" is still being written: answer right after it. */
        x->status = status;
        x->reply_code = code;
        x->reply_msg = message;
        c->flags |= CONN_F_CLOSE_AFTER;
        return;
    }
    x->flags |= X_F_LOCAL;
    x->status = status;
    if (status == 400 || status == 408 || status == 431 || !(x->flags & X_F_REQ_PARSED) ||
        (x->req.head.flags & H1_F_KEEP_ALIVE) == 0)
        c->flags |= CONN_F_CLOSE_AFTER;
    conn_read(c, false);
    if (x->resp_head == NULL)
        x->resp_head = worker_buf_get(c->w);
    if (x->resp_head == NULL) {
        conn_close(c);
        return;
    }
    /* Messages are fnproxy's own constants, llhttp's reasons or a TLS
     * reason with quotes and controls replaced: nothing needs escaping. */
    body_len =
        snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}\n", code, message);
    if (body_len < 0 || (size_t)body_len >= sizeof(body))
        body_len = (int)strlen(body);
    head_len = snprintf(x->resp_head, WORKER_BUF_SIZE,
                        "HTTP/1.1 %d %s\r\n"
                        "content-type: application/json\r\n"
                        "content-length: %d\r\n"
                        "x-fnproxy-error: %s\r\n"
                        "%s%s%s"
                        "%s"
                        "\r\n%s",
                        status, h1_reason(status), body_len, code,
                        x->request_id[0] ? "x-request-id: " : "", x->request_id,
                        x->request_id[0] ? "\r\n" : "",
                        (c->flags & CONN_F_CLOSE_AFTER) ? "connection: close\r\n" : "",
                        /* An answer to HEAD has the length of the body, not the body. */
                        (x->flags & X_F_HEAD_METHOD) ? "" : body);
    h1_out_reset(&x->resp_out);
    h1_out_raw(&x->resp_out, x->resp_head, (size_t)head_len);
    conn_arm(c, conn_header_timeout(c));
    if (conn_write(c, x->resp_out.iov, x->resp_out.n, false) < 0)
        conn_close(c);
}

/* --- the request side ------------------------------------------------------- */

static void make_request_id(struct exch *x)
{
    struct h1_head *h = &x->req.head;
    uint64_t a, b;

    if (h->request_id >= 0) {
        struct h1_span v = h->hdr[h->request_id].value;
        if (v.len > 0 && v.len < sizeof(x->request_id)) {
            memcpy(x->request_id, v.p, v.len);
            x->request_id[v.len] = '\0';
            return;
        }
    }
    a = worker_rand(x->c->w);
    b = worker_rand(x->c->w);
    /* UUID version 4, variant 1: 8-4-4-4-12 hex digits. */
    a = (a & ~0xf000ULL) | 0x4000ULL;
    b = (b & ~(3ULL << 62)) | (2ULL << 62);
    static const char hex[] = "0123456789abcdef";
    char *o = x->request_id;
    for (int i = 0; i < 16; i++) {
        uint64_t v = i < 8 ? a : b;
        int shift = 60 - 8 * (i % 8);
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[(v >> shift) & 0xf];
        *o++ = hex[(v >> (shift - 4)) & 0xf];
    }
    *o = '\0';
}

static bool client_allowed(const struct cfg_function *fn, const char *id)
{
    if (id == NULL)
        return false;
    for (size_t i = 0; i < fn->n_allowed_clients; i++)
        if (strcmp(fn->allowed_clients[i], id) == 0)
            return true;
    return false;
}

/* The head is complete: check it, route it, and start the exchange. */
static void exch_begin(struct exch *x)
{
    struct conn *c = x->c;
    struct h1_head *h = &x->req.head;
    const char *why = NULL;
    struct route_match m;
    int status;

    x->ws = c->w->cur;
    wsnap_ref(x->ws);
    x->req_bytes = c->parsed;
    exch_start_clock(x);
    c->state = CONN_ST_EXCHANGE;
    if (!(h->flags & H1_F_KEEP_ALIVE))
        c->flags |= CONN_F_CLOSE_AFTER;
    if ((h->flags & H1_F_CHUNKED) || ((h->flags & H1_F_CONTENT_LENGTH) && h->content_length > 0)) {
        x->flags |= X_F_HAS_BODY;
        /* The body is read only when the function can take it. Without a
         * body, reading goes on (pipelined requests just wait in the
         * buffer): stopping and restarting would cost two syscalls. */
        conn_read(c, false);
    } else
        x->flags |= X_F_REQ_PARSED; /* nothing follows the head */

    if (h1_span_is(h->method, "head"))
        x->flags |= X_F_HEAD_METHOD;
    status = h1_check_request(h, &why);
    make_request_id(x);
    if (status != 0) {
        exch_reply(x, status, status == 417 ? "expectation_failed" : "bad_request", why);
        return;
    }

    struct h1_span host = h->host >= 0 ? h->hdr[h->host].value : (struct h1_span){"", 0};
    size_t path_len = 0;
    while (path_len < h->target.len && h->target.p[path_len] != '?')
        path_len++;
    if (conn_listener_cfg(c) == NULL ||
        router_match(x->ws->snap->router, c->l->idx, host.p, host.len, h->target.p, path_len,
                     h->method.p, h->method.len, &m) != 0) {
        exch_reply(x, 404, "no_route", "no route matches this request");
        return;
    }
    x->fn = m.fn;
    x->fn_idx = m.fn_idx;
    x->route = m.route;
    x->fs = &x->ws->fns[m.fn_idx];
    x->stats = x->fs->routes[m.route_idx];
    if (x->fn->n_allowed_clients > 0 && !client_allowed(x->fn, c->client_id)) {
        metrics_inc(&x->stats->denials[DENY_CLIENT]);
        exch_reply(x, 403, "client_not_allowed",
                   c->client_id != NULL ? "this client may not call this function"
                                        : "a client certificate is required");
        return;
    }

    if (x->fn->max_body > 0 && (h->flags & H1_F_CONTENT_LENGTH) &&
        h->content_length > x->fn->max_body) {
        exch_reply(x, 413, "body_too_large", "request body is larger than max_body");
        return;
    }
    if ((h->flags & H1_F_EXPECT_CONTINUE) && (x->flags & X_F_HAS_BODY) && h->minor >= 1)
        x->flags |= X_F_CONTINUE;

    /* The head sent upstream. Its size is bounded by the head received plus
     * what fnproxy adds. */
    size_t cap = (size_t)c->parsed + 1024 + sizeof(x->request_id) + INET6_ADDRSTRLEN;
    for (unsigned i = 0; i < h->n_hdr; i++)
        if (h1_span_eq(h->hdr[i].name, "x-forwarded-for"))
            cap += 2;
    if (cap <= WORKER_BUF_SIZE) {
        x->req_head = worker_buf_get(c->w);
        x->req_head_cap = WORKER_BUF_SIZE;
    } else {
        x->req_head = malloc(cap);
        x->req_head_cap = (uint32_t)cap;
    }
    if (x->req_head == NULL) {
        exch_reply(x, 503, "overloaded", "out of memory");
        return;
    }
    struct h1_forward f = {
        .client_ip = c->client_ip,
        .proto = c->xp.tls != NULL ? "https" : "http",
        .request_id = x->request_id,
        /* HTTP/1.0 may omit Host; HTTP/1.1, which fnproxy speaks upstream,
         * may not: name the address the client reached. */
        .host = conn_listener_cfg(c)->listen.text,
        .client_id = c->client_id,
    };
    x->req_head_len = (uint32_t)h1_write_request_head(x->req_head, x->req_head_cap, h, &f);
    if (x->req_head_len == 0) {
        exch_reply(x, 431, "header_too_large", "request head too large");
        return;
    }
    x->req_out.chunked = (h->flags & H1_F_CHUNKED) != 0;
    exch_touch(x);
    exch_connect(x);
}

/* Picks the endpoint: the less loaded of two random untried ones. */
static struct endpoint *exch_pick_endpoint(struct exch *x, size_t *idx)
{
    struct fn_state *fs = x->fs;
    size_t cand[CFG_MAX_ENDPOINTS], n = 0;

    for (size_t i = 0; i < fs->n_eps; i++) /* n_eps <= CFG_MAX_ENDPOINTS = 64 bits of tried */
        if (!(x->tried & (1ULL << i)))
            cand[n++] = i;
    if (n == 0)
        return NULL;
    if (n == 1) {
        *idx = cand[0];
        return fs->eps[cand[0]];
    }
    size_t i = worker_rand(x->c->w) % n;
    size_t j = worker_rand(x->c->w) % (n - 1);
    if (j >= i)
        j++; /* two distinct candidates */
    size_t a = cand[i], b = cand[j];
    *idx = fs->eps[b]->outstanding < fs->eps[a]->outstanding ? b : a;
    return fs->eps[*idx];
}

/* A connect attempt ended (connected, refused or timed out). */
static void exch_connect_done(struct exch *x)
{
    if (x->t_connect != 0) {
        x->connect_us += metrics_now_us() - x->t_connect;
        x->t_connect = 0;
    }
}

static void exch_connect(struct exch *x)
{
    struct endpoint *ep;
    size_t idx = 0;
    int err = 0;

    for (;;) {
        ep = exch_pick_endpoint(x, &idx);
        if (ep == NULL) {
            if (x->up_error[0] != '\0')
                exch_reply(x, 502, "upstream_tls_failed", x->up_error);
            else
                exch_reply(x, 502, "upstream_unreachable",
                           "no endpoint of the function accepted a connection");
            return;
        }
        x->tried |= 1ULL << idx;
        x->attempts++;
        x->ep = ep;
        ep->outstanding++;
        x->u = upstream_get(x->c->w, ep, x, x->ws->snap->upstream_tls[x->fn_idx],
                            (x->flags & X_F_FRESH) != 0, &err);
        if (x->u != NULL)
            break;
        ep->outstanding--;
        exch_count_uperr(x, UPERR_REFUSED);
        log_debug("connect to %s failed: %s", ep->addr.text, uv_strerror(err));
    }
    x->flags &= ~(X_F_GOT_BYTES | X_F_HEAD_SENT);
    x->t_attempt = metrics_now_us();
    if (!(x->u->flags & UP_F_CONNECTED)) {
        x->t_connect = x->t_attempt;
        x->connected = true;
    }
    if (x->u->flags & UP_F_CONNECTED) {
        exch_upstream_connected(x, 0);
        return;
    }
    conn_arm(x->c, x->route->connect_timeout_ms);
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

void exch_upstream_connected(struct exch *x, int status)
{
    struct conn *c;

    if (x == NULL)
        return;
    c = x->c;
    exch_connect_done(x);
    if (status == UV_EPROTO) {
        /* TLS to the function failed: say why, in the answer if no other
         * endpoint does better. Quotes would break the JSON answer. */
        snprintf(x->up_error, sizeof(x->up_error), "TLS to the function failed: %s",
                 upstream_tls_error(x->u));
        for (char *p = x->up_error; *p != '\0'; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                *p = '\'';
        if (log_ratelimit(&x->ep->last_error_log_ms, 1000))
            log_warn("function %s: TLS to %s failed: %s", x->fn->name, x->ep->addr.text,
                     upstream_tls_error(x->u));
        exch_count_uperr(x, UPERR_TLS);
        exch_drop_upstream(x, false);
        exch_connect(x);
        return;
    }
    if (status < 0) {
        log_debug("connect to %s failed: %s", x->ep->addr.text, uv_strerror(status));
        exch_count_uperr(x, UPERR_REFUSED);
        exch_drop_upstream(x, false);
        exch_connect(x); /* nothing was sent: always safe to try another */
        return;
    }
    h1_parser_init(&x->resp, HTTP_RESPONSE);
    x->resp.skip_body = (x->flags & X_F_HEAD_METHOD) != 0;
    upstream_read(x->u, true);
    exch_touch(x);
    if (x->flags & X_F_CONTINUE) {
        /* Nothing else has been written to the client yet. */
        x->flags &= ~X_F_CONTINUE;
        x->cont_buf = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
        if (conn_write(c, &x->cont_buf, 1, false) < 0) {
            conn_close(c);
            return;
        }
    }
    exch_pump_request(x);
}

/* Moves request bytes to the function: the head first, then the body as it
 * is read from the client. */
static void exch_pump_request(struct exch *x)
{
    struct conn *c = x->c;
    struct upconn *u = x->u;

again:
    if (u == NULL || !(u->flags & UP_F_CONNECTED) || (x->flags & (X_F_UP_WRITING | X_F_REQ_SENT)))
        return;
    h1_out_reset(&x->req_out);
    if (!(x->flags & X_F_HEAD_SENT)) {
        h1_out_raw(&x->req_out, x->req_head, x->req_head_len);
        x->flags |= X_F_HEAD_SENT;
        x->t_sent = metrics_now_us();
        x->sent = true;
    }
    if (!(x->flags & X_F_REQ_PARSED)) {
        size_t used = 0;
        x->req.out = &x->req_out;
        enum h1_event ev = h1_feed(&x->req, c->buf + c->parsed, c->len - c->parsed, &used);
        x->req.out = NULL;
        c->parsed += (uint32_t)used;
        if (ev == H1_EV_ERROR) {
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 400, "bad_request", x->req.error);
            return;
        }
        if (x->fn->max_body > 0 && x->req.body_bytes > x->fn->max_body) {
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 413, "body_too_large", "request body is larger than max_body");
            return;
        }
        if (ev == H1_EV_DONE)
            x->flags |= X_F_REQ_PARSED;
    }
    if (x->req_out.n > 0) {
        /* Body parts the socket takes at once need no completion: reading
         * the client goes on (as for responses, exch_pump_response). */
        bool more = !(x->flags & X_F_REQ_PARSED);
        int rc = upstream_write(u, x->req_out.iov, x->req_out.n, more);
        if (rc < 0) {
            exch_count_uperr(x, UPERR_RESET);
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 502, "upstream_bad_response", "write to the function failed");
            return;
        }
        if (rc == 1) {
            exch_touch(x);
            goto again;
        }
        if (more)
            conn_read(c, false); /* the write points into c->buf */
        x->flags |= X_F_UP_WRITING;
        return;
    }
    if (x->flags & X_F_REQ_PARSED) {
        x->flags |= X_F_REQ_SENT;
        return;
    }
    /* Everything read so far is sent: read more of the body. */
    conn_buf_compact(c);
    conn_read(c, true);
}

/* A pooled connection failed before the function sent anything: it may
 * have been closed by the function while idle (stale). Try exactly once
 * more, on a new connection, never on another pooled one, which could be
 * as stale. Only for requests without a body, which are still whole in
 * req_head. */
static bool exch_retry_stale(struct exch *x, int err)
{
    struct upconn *u = x->u;

    if (u == NULL || !(u->flags & UP_F_REUSED) ||
        (x->flags & (X_F_GOT_BYTES | X_F_HAS_BODY | X_F_STALE_RETRIED)))
        return false;
    if (err != UV_EOF && err != UV_ECONNRESET && err != UV_EPIPE)
        return false;
    x->flags |= X_F_UP_BROKEN;
    exch_drop_upstream(x, false);
    x->flags &= ~(X_F_UP_BROKEN | X_F_REQ_SENT | X_F_UP_WRITING);
    x->flags |= X_F_STALE_RETRIED | X_F_FRESH;
    x->tried = 0; /* the endpoint is fine; the connection was old */
    exch_connect(x);
    return true;
}

void exch_upstream_written(struct exch *x, int status)
{
    struct conn *c;

    if (x == NULL)
        return;
    c = x->c;
    x->flags &= ~X_F_UP_WRITING;
    if (status < 0) {
        if (exch_retry_stale(x, status))
            return;
        exch_count_uperr(x, UPERR_RESET);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 502, "upstream_bad_response", "the function closed the connection");
        return;
    }
    exch_touch(x);
    if (c->parsed == c->len) {
        c->parsed = c->len = 0;
    }
    if (x->flags & X_F_REQ_PARSED)
        x->flags |= X_F_REQ_SENT;
    if (!(x->flags & X_F_REQ_SENT)) {
        exch_pump_request(x);
        return;
    }
    if ((x->flags & X_F_RESP_PARSED) && !(x->flags & X_F_DOWN_WRITING))
        exch_end(x);
}

/* --- the response side ------------------------------------------------------ */

/* The response head arrived: decide how its body is framed downstream and
 * queue the head. Returns false when the exchange was ended. */
static bool exch_response_head(struct exch *x)
{
    struct conn *c = x->c;
    struct h1_head *rh = &x->resp.head;
    struct h1_head *qh = &x->req.head;
    const char *why = NULL;
    struct h1_reply r = {.request_id = x->request_id};
    bool no_body;

    if (h1_check_response(rh, &why) < 0 || rh->status == 101) {
        exch_count_uperr(x, UPERR_PROTOCOL);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 502, "upstream_bad_response",
                   why != NULL ? why : "unexpected protocol switch");
        return false;
    }
    if (rh->status < 200) {
        x->flags |= X_F_INTERIM; /* 1xx: dropped; the final response follows */
        return true;
    }
    no_body = (x->flags & X_F_HEAD_METHOD) || rh->status == 204 || rh->status == 304;
    if (rh->flags & H1_F_CONTENT_LENGTH) {
        r.length = true;
    } else if (!no_body || (rh->flags & H1_F_CHUNKED)) {
        /* Chunked, or delimited by close: re-frame as chunked for HTTP/1.1
         * clients; HTTP/1.0 clients read until we close. */
        if (qh->minor >= 1)
            r.chunked = true;
        else
            c->flags |= CONN_F_CLOSE_AFTER;
    }
    x->resp_out.chunked = r.chunked && !no_body;
    if (c->w->draining || !(qh->flags & H1_F_KEEP_ALIVE) || conn_listener_cfg(c) == NULL)
        c->flags |= CONN_F_CLOSE_AFTER;
    if (!(x->flags & X_F_REQ_PARSED))
        c->flags |= CONN_F_CLOSE_AFTER; /* answered before the body was read */
    r.close = (c->flags & CONN_F_CLOSE_AFTER) != 0;
    r.keep_alive = !r.close && qh->minor == 0;

    if (x->resp_head == NULL)
        x->resp_head = worker_buf_get(c->w);
    if (x->resp_head != NULL)
        x->resp_head_len = (uint32_t)h1_write_response_head(x->resp_head, WORKER_BUF_SIZE, rh, &r);
    if (x->resp_head == NULL || x->resp_head_len == 0) {
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 502, "upstream_bad_response", "response head too large");
        return false;
    }
    exch_attempt_done(x);
    x->status = rh->status;
    x->flags |= X_F_RESP_STARTED;
    h1_out_raw(&x->resp_out, x->resp_head, x->resp_head_len);
    return true;
}

static void exch_pump_response(struct exch *x)
{
    struct conn *c = x->c;
    struct upconn *u = x->u;
    enum h1_event ev;

again:
    ev = H1_EV_MORE;
    if (u == NULL || (x->flags & (X_F_DOWN_WRITING | X_F_RESP_PARSED)))
        goto check_end;
    if (u->buf == NULL) {
        upstream_read(u, true); /* nothing from the function yet */
        return;
    }
    h1_out_reset(&x->resp_out);
    for (;;) {
        size_t used = 0;
        x->resp.out = (x->flags & X_F_RESP_STARTED) ? &x->resp_out : NULL;
        ev = h1_feed(&x->resp, u->buf + u->parsed, u->len - u->parsed, &used);
        u->parsed += (uint32_t)used;
        if (ev == H1_EV_HEAD) {
            if (!exch_response_head(x))
                return;
            continue;
        }
        if (ev == H1_EV_DONE && (x->flags & X_F_INTERIM)) {
            x->flags &= ~X_F_INTERIM;
            h1_parser_next(&x->resp);
            continue;
        }
        break;
    }
    x->resp.out = NULL;
    if (ev == H1_EV_ERROR) {
        exch_count_uperr(x, UPERR_PROTOCOL);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 502, "upstream_bad_response", "malformed response from the function");
        return;
    }
    if (ev == H1_EV_DONE) {
        x->flags |= X_F_RESP_PARSED;
        if (u->parsed != u->len)
            x->flags |= X_F_UP_BROKEN; /* more bytes than the response said */
    }
    if (ev == H1_EV_MORE && !(x->flags & X_F_RESP_STARTED) && u->len == WORKER_BUF_SIZE) {
        exch_count_uperr(x, UPERR_PROTOCOL);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 502, "upstream_bad_response", "response head too large");
        return;
    }
    if (x->resp_out.n > 0) {
        int rc = conn_write(c, x->resp_out.iov, x->resp_out.n, true);
        if (rc < 0) {
            conn_close(c);
            return;
        }
        if (rc == 0) { /* in flight, pointing into u->buf: no reads into it meanwhile */
            if (!(x->flags & X_F_RESP_PARSED))
                upstream_read(u, false);
            return;
        }
        exch_response_written(x); /* all sent at once: reads go on */
        goto again;
    }
    if (!(x->flags & X_F_RESP_PARSED)) {
        if (u->parsed == u->len)
            u->parsed = u->len = 0;
        upstream_read(u, true);
        return;
    }
check_end:
    if ((x->flags & X_F_RESP_PARSED) && !(x->flags & X_F_DOWN_WRITING)) {
        if (x->flags & X_F_REQ_SENT) {
            exch_end(x);
        } else if (!(x->flags & X_F_UP_WRITING)) {
            /* The function answered before taking the whole body. */
            x->flags |= X_F_UP_BROKEN;
            exch_end(x);
        }
    }
}

void exch_upstream_data(struct exch *x, ssize_t nread)
{
    if (x->flags & X_F_RESP_PARSED) {
        /* Bytes or a close after a complete response spoil the connection,
         * not the exchange. */
        x->flags |= X_F_UP_BROKEN;
        upstream_read(x->u, false);
        return;
    }
    if (nread > 0) {
        x->flags |= X_F_GOT_BYTES;
        exch_touch(x);
        exch_pump_response(x);
        return;
    }
    if (nread == UV_ENOBUFS) {
        exch_reply(x, 503, "overloaded", "out of buffers");
        return;
    }
    /* EOF or error from the function. */
    if (exch_retry_stale(x, (int)nread))
        return;
    if (nread == UV_EOF && (x->flags & X_F_RESP_STARTED) && h1_needs_eof(&x->resp) &&
        !(x->flags & X_F_DOWN_WRITING) && x->u->parsed == x->u->len) {
        /* A body delimited by close ends here. */
        h1_out_reset(&x->resp_out);
        x->resp.out = &x->resp_out;
        enum h1_event ev = h1_finish(&x->resp);
        x->resp.out = NULL;
        x->flags |= X_F_UP_BROKEN;
        if (ev == H1_EV_DONE) {
            x->flags |= X_F_RESP_PARSED;
            if (x->resp_out.n > 0) {
                if (conn_write(x->c, x->resp_out.iov, x->resp_out.n, false) < 0)
                    conn_close(x->c);
                return;
            }
            exch_pump_response(x);
            return;
        }
    }
    x->flags |= X_F_UP_BROKEN;
    exch_count_uperr(x, nread == UV_EOF ? UPERR_PROTOCOL : UPERR_RESET);
    if (x->flags & X_F_RESP_STARTED) {
        log_debug("function closed mid-response: %s", uv_strerror((int)nread));
        exch_abort(x);
        return;
    }
    exch_reply(x, 502, "upstream_bad_response",
               "the function closed the connection without a complete response");
}

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
    if (c->x != NULL) {
        struct exch *x = c->x;
        if (x->ws != NULL) {
            if (x->status == 0)
                x->status = 499; /* client went away before an answer; counted as such */
            exch_count(x);
            x->flags |= X_F_UP_BROKEN;
            exch_drop_upstream(x, false);
            wsnap_unref(x->ws);
            x->ws = NULL;
        }
        /* The exchange is freed with the connection: a write still
         * in flight may point into its buffers. */
    }
    metrics_gauge_add(&c->l->stats->active, -1);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->n_conns--;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* The head is bad, too large or late: the exchange becomes fnproxy's own
 * answer, counted and logged like any request. */
static void exch_refuse_head(struct exch *x)
{
    struct conn *c = x->c;

    x->ws = c->w->cur;
    wsnap_ref(x->ws);
    c->state = CONN_ST_EXCHANGE;
    x->req_bytes = c->len;
    exch_start_clock(x);
    make_request_id(x);
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
    case CONN_ST_LINGER:
        conn_close(c);
        return;
    case CONN_ST_HEAD:
        exch_refuse_head(x);
        exch_count_timeout(x, TMO_HEADER);
        exch_reply(x, 408, "request_timeout", "request head not received in time");
        return;
    case CONN_ST_EXCHANGE:
        if (x->flags & X_F_LOCAL) {
            conn_close(c); /* the client does not read our answer */
            return;
        }
        if (x->u != NULL && !(x->u->flags & UP_F_CONNECTED)) {
            exch_connect_done(x);
            exch_count_timeout(x, TMO_CONNECT);
            exch_count_uperr(x, UPERR_TIMEOUT);
            exch_drop_upstream(x, false);
            exch_touch(x);
            exch_connect(x);
            return;
        }
        if (x->flags & X_F_RESP_STARTED) {
            exch_count_timeout(x, TMO_IDLE);
            exch_abort(x);
            return;
        }
        if (!(x->flags & (X_F_REQ_PARSED | X_F_UP_WRITING)) && x->u != NULL) {
            exch_count_timeout(x, TMO_BODY);
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 408, "request_timeout", "request body not received in time");
            return;
        }
        exch_count_timeout(x, TMO_UPSTREAM);
        exch_count_uperr(x, UPERR_TIMEOUT);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 504, "upstream_timeout", "the function did not answer in time");
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
        /* A client that half-closes after its request still gets the answer. */
        c->flags |= CONN_F_CLOSE_AFTER;
        conn_read(c, false);
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
        exch_touch(c->x);
        exch_pump_request(c->x);
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

    if (c->state == CONN_ST_IDLE) {
        if (c->len == 0) {
            conn_arm(c, lc != NULL ? lc->keepalive_timeout_ms : 1000);
            conn_read(c, true);
            return;
        }
        x = exch_new(c);
        if (x == NULL) {
            conn_close(c);
            return;
        }
        c->x = x;
        c->state = CONN_ST_HEAD;
        conn_arm(c, conn_header_timeout(c));
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
        exch_refuse_head(x);
        exch_reply(x, 400, "bad_request",
                   x->req.error != NULL ? x->req.error : "malformed request");
        return;
    }
    exch_refuse_head(x);
    exch_reply(x, 431, "header_too_large", "request head is larger than max_header_bytes");
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
        conn_arm(c, tls_ctx_handshake_timeout_ms(tls));
        if (xprt_tls_start(&c->xp, tls, NULL, on_handshake) < 0)
            conn_close(c);
        return;
    }
    c->state = CONN_ST_IDLE;
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

void conn_drain(struct conn *c)
{
    if (c->state == CONN_ST_IDLE || c->state == CONN_ST_HANDSHAKE)
        conn_close(c);
    else
        c->flags |= CONN_F_CLOSE_AFTER;
}
