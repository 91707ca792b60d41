/*
 * exch.c - the exchange: one request proxied to a function and its response
 * back (see exch.h for the phases, the failure path and the client side).
 *
 * Bodies stream without copies: iovecs point into the read buffer of the
 * side they came from, and that side is not read again until the write that
 * uses them completes. One write in flight per direction is the
 * backpressure: a fast sender waits for the slow receiver.
 */
#include "exch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "accesslog.h"
#include "exch_int.h"
#include "forward.h"
#include "log.h"

#define EXCH_FREE_MAX 256
#define REPLAY_WORKER_MAX (64u << 20) /* replay buffers of one worker, all requests together */
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
_Static_assert(CFG_MAX_ENDPOINTS <= 64, "exch.tried has a bit per endpoint");

static void exch_pump_request(struct exch *x);
static void exch_pump_response(struct exch *x);
static void exch_give_up(struct exch *x, enum exch_failure f, const char *msg);

/* --- phases and decisions (pure) ------------------------------------------------ */

static const char *const phase_names[EXCH_PH__N] = {
    [EXCH_PH_HEAD] = "head",       [EXCH_PH_ROUTE] = "route",         [EXCH_PH_QUEUE] = "queue",
    [EXCH_PH_RESOLVE] = "resolve", [EXCH_PH_CONNECT] = "connect",     [EXCH_PH_BODY] = "body",
    [EXCH_PH_SEND] = "send",       [EXCH_PH_WAIT_HEAD] = "wait_head", [EXCH_PH_BACKOFF] = "backoff",
    [EXCH_PH_STREAM] = "stream",   [EXCH_PH_TUNNEL] = "tunnel",       [EXCH_PH_REPLY] = "reply",
    [EXCH_PH_DONE] = "done",
};

const char *exch_phase_name(enum exch_phase ph)
{
    return (unsigned)ph < EXCH_PH__N ? phase_names[ph] : "?";
}

uint64_t exch_phase_timeout(enum exch_phase ph, const struct exch_timeouts *t,
                            enum metrics_timeout *kind)
{
    switch (ph) {
    case EXCH_PH_HEAD:
        *kind = TMO_HEADER;
        return t->header_ms;
    case EXCH_PH_CONNECT:
        *kind = TMO_CONNECT;
        return t->connect_ms;
    case EXCH_PH_BODY:
        *kind = TMO_BODY;
        return t->idle_ms;
    case EXCH_PH_SEND:
        *kind = TMO_UPSTREAM;
        return t->idle_ms;
    case EXCH_PH_WAIT_HEAD:
        *kind = TMO_UPSTREAM;
        return t->timeout_ms;
    case EXCH_PH_STREAM:
        *kind = TMO_IDLE;
        return t->idle_ms;
    case EXCH_PH_RESOLVE:
        *kind = TMO_DNS;
        return t->dns_ms;
    case EXCH_PH_TUNNEL:
        *kind = TMO_IDLE;
        return t->tunnel_ms;
    default: /* route (no wait), backoff (armed with its wait), reply (the client not
              * reading it), done */
        *kind = TMO__N;
        return t->header_ms;
    }
}

enum exch_next exch_decide(enum exch_failure f, int err, const struct exch_attempt *a)
{
    if (a->resp_started)
        return EXCH_NEXT_ABORT; /* no clean answer is possible any more */
    switch (f) {
    case EXCH_FAIL_REFUSED:
    case EXCH_FAIL_CONNECT_TIMEOUT:
    case EXCH_FAIL_TLS:
    case EXCH_FAIL_PER_TRY_TIMEOUT:
        return EXCH_NEXT_RETRY;
    case EXCH_FAIL_RESET:
        if (a->reused && !a->got_bytes && !a->has_body && !a->stale_retried && a->idempotent &&
            (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE))
            return EXCH_NEXT_FRESH; /* maybe the pool's stale connection: not the policy's */
        return EXCH_NEXT_RETRY;
    default: /* a malformed answer, no progress, the deadline: not retried */
        return EXCH_NEXT_REPLY;
    }
}

/* --- small helpers ------------------------------------------------------------ */

/* The listener the request came on, NULL when a reload removed it. */
const struct cfg_listener *exch_listener(const struct exch *x)
{
    const struct config *cfg = (x->ws != NULL ? x->ws : x->cl->w->cur)->snap->cfg;

    size_t i = *x->cl->listener;

    return i < cfg->n_listeners ? &cfg->listeners[i] : NULL;
}

/* Arms the deadline of the current phase, from now: every bit of progress
 * calls this. */
void exch_touch(struct exch *x)
{
    const struct cfg_listener *lc = exch_listener(x);
    struct exch_timeouts t = {.header_ms = lc != NULL ? lc->header_timeout_ms : 10000};
    enum metrics_timeout kind;

    uint64_t ms;

    t.connect_ms = x->tmo != NULL ? x->tmo->connect_timeout_ms : t.header_ms;
    t.timeout_ms = x->tmo != NULL ? x->tmo->timeout_ms : t.header_ms;
    t.idle_ms = x->tmo != NULL ? x->tmo->idle_timeout_ms : t.header_ms;
    if (x->flags & X_F_EGRESS) {
        /* The resolver gives up at dns.timeout; this deadline is a backstop. */
        t.dns_ms = x->ws->snap->cfg->dns.timeout_ms + 1000;
        t.tunnel_ms = x->fn->egress->tunnel_idle_timeout_ms;
    }
    ms = exch_phase_timeout(x->phase, &t, &kind);
    if (x->phase == EXCH_PH_BACKOFF || x->phase == EXCH_PH_QUEUE) { /* a fixed wait */
        uint64_t now = worker_now_ms(x->cl->w);
        ms = x->wake_at > now ? x->wake_at - now : 0;
    }
    if (x->phase == EXCH_PH_CONNECT || x->phase == EXCH_PH_SEND || x->phase == EXCH_PH_WAIT_HEAD) {
        /* Waiting on the function: the request's and the attempt's deadlines too. */
        uint64_t now = worker_now_ms(x->cl->w);
        if (x->deadline != 0)
            ms = MIN(ms, x->deadline > now ? x->deadline - now : 0);
        if (x->try_deadline != 0)
            ms = MIN(ms, x->try_deadline > now ? x->try_deadline - now : 0);
    }
    x->cl->ops->arm(x, ms);
}

void exch_enter(struct exch *x, enum exch_phase ph)
{
    if (ph == EXCH_PH_BODY && x->phase != EXCH_PH_BODY)
        x->body_since = worker_now_ms(x->cl->w);
    x->phase = ph;
    exch_touch(x);
}

/* --- exchanges ------------------------------------------------------------ */

struct exch *exch_new(struct exch_client *cl)
{
    struct worker *w = cl->w;
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
    x->cl = cl;
    h1_parser_init(&x->req, HTTP_REQUEST);
    /* The head has header_timeout in all, not per read (slow clients). */
    exch_enter(x, EXCH_PH_HEAD);
    return x;
}

void exch_free(struct worker *w, struct exch *x)
{
    if (x->req_head != NULL) {
        if (x->req_head_cap == WORKER_BUF_SIZE)
            worker_buf_put(w, x->req_head);
        else
            free(x->req_head);
    }
    if (x->resp_head != NULL)
        worker_buf_put(w, x->resp_head);
    if (x->replay != NULL) {
        w->replay_bytes -= x->replay_cap;
        free(x->replay);
    }
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
    if (x->flags & X_F_TUNNEL) {
        /* The client's buffer may carry the tunnel's bytes now; the log's
         * host and port say where it went. */
        *method = (struct h1_span){"CONNECT", 7};
        *target = (struct h1_span){"", 0};
        return;
    }
    if ((x->flags & X_F_EGRESS) && x->req_head == NULL) {
        /* Refused before forwarding: the path only, never an authority,
         * which may hold a userinfo password. */
        uint32_t i = 0;
        if (target->len > 7 && strncasecmp(target->p, "http://", 7) == 0)
            for (i = 7; i < target->len && target->p[i] != '/' && target->p[i] != '?'; i++)
                ;
        else if (target->len == 0 || target->p[0] != '/')
            i = target->len;
        target->p += i;
        target->len -= i;
        return;
    }
    if (x->req_head != NULL && x->req_head_len > method->len + 1) {
        method->p = x->req_head;
        target->p = x->req_head + method->len + 1;
        if (x->flags & X_F_EGRESS) { /* forwarded in origin-form: another length */
            const char *sp = memchr(target->p, ' ', x->req_head_len - method->len - 1);
            target->len = sp != NULL ? (uint32_t)(sp - target->p) : 0;
        }
    }
}

/* Counts the finished request: status, latency and phases, access log. */
static void exch_count(struct exch *x)
{
    struct route_stats *s = x->stats != NULL ? x->stats : x->ws->noroute;
    struct worker *w = x->cl->w;
    uint64_t now = metrics_now_us();
    uint64_t duration = x->t0 != 0 ? now - x->t0 : 0;

    /* A denied egress request counts in fnproxy_policy_denials_total only
     * (DESIGN.md): a function probing hosts adds no series and no codes.
     * metrics: off counts nothing here (the bench's observability-cost). */
    if (x->verdict != FWD_DENY && !x->ws->snap->cfg->metrics_off) {
        metrics_count_status(s, x->status);
        metrics_observe_request(s, &(struct metrics_request_time){
                                       .duration_us = duration,
                                       .connect_us = x->connect_us,
                                       .upstream_us = x->upstream_us,
                                       .dns_us = x->dns_us,
                                       .queue_us = x->queue_us,
                                       .connected = x->connected,
                                       .sent = x->sent,
                                       .resolved = x->resolved,
                                   });
    }
    if (w->alog.buf == NULL)
        return; /* access log off */
    struct h1_span method, target;
    const struct cfg_listener *lc = exch_listener(x);
    exch_request_line(x, &method, &target);
    accesslog_record(&w->alog, &(struct accesslog_entry){
                                   .ts_ms = x->ts_ms,
                                   .request_id = x->request_id,
                                   .trace_id = x->trace.trace_id,
                                   .client = x->cl->ip,
                                   .listener = lc != NULL ? lc->name : "",
                                   .method = method.p,
                                   .method_len = method.len,
                                   .target = target.p,
                                   .target_len = target.len,
                                   .status = x->status,
                                   .function = x->fn != NULL ? x->fn->name : "",
                                   .route = x->route != NULL  ? x->route->name
                                            : x->rule != NULL ? x->rule->name
                                                              : "",
                                   .upstream = x->ep != NULL ? x->ep->addr.text : "",
                                   .egress = (x->flags & X_F_EGRESS) != 0,
                                   .verdict = fwd_verdict_name(x),
                                   .host = x->target.host,
                                   .port = x->target.port,
                                   .bytes_in = x->req_bytes + x->req.body_bytes,
                                   .bytes_out = x->bytes_out,
                                   .duration_us = duration,
                                   .upstream_us = x->upstream_us,
                                   .queue_us = x->queue_us,
                                   .attempts = x->attempts,
                               });
}

void exch_count_uperr(struct exch *x, enum metrics_uperr reason)
{
    if (x->stats != NULL)
        metrics_inc(&x->stats->upstream_errors[reason]);
}

void exch_count_timeout(struct exch *x, enum metrics_timeout kind)
{
    struct route_stats *s = x->stats != NULL ? x->stats : x->ws->noroute;

    if (kind < TMO__N)
        metrics_inc(&s->timeouts[kind]);
}

/* A request's time starts when its head is parsed (or found bad): reading
 * the head is the client's time, not fnproxy's (metrics.h). */
static void exch_start_clock(struct exch *x)
{
    x->t0 = metrics_now_us();
    if (x->cl->w->alog.buf != NULL)
        x->ts_ms = accesslog_now_ms(); /* the wall clock is only for the log */
}

/* An attempt ended (response head, or failure): its time and, if a head was
 * sent, its upstream phase. */
void exch_attempt_done(struct exch *x)
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

/* A connect attempt ended (connected, refused or timed out). */
void exch_connect_done(struct exch *x)
{
    if (x->t_connect != 0) {
        x->connect_us += metrics_now_us() - x->t_connect;
        x->t_connect = 0;
        x->ep->pending--;
    }
}

/* Lets go of the upstream connection, to the pool when it is clean. */
static void exch_drop_upstream(struct exch *x, bool reusable)
{
    if (x->u == NULL)
        return;
    exch_connect_done(x); /* a connect given up on */
    exch_attempt_done(x);
    pool_put(x->u, reusable && !(x->flags & X_F_UP_BROKEN));
    x->u = NULL;
    x->ep->outstanding--;
}

/* An egress exchange holds its own reference to the endpoint it dials. */
static void exch_release_endpoint(struct exch *x)
{
    if (x->flags & X_F_EP_OWNED)
        endpoint_put(x->ep);
    x->flags &= ~X_F_EP_OWNED;
    x->ep = NULL;
}

/* --- admission (admit.h) --------------------------------------------------- */

static const struct snap_admit *exch_admission(const struct exch *x)
{
    return &x->ws->snap->admit[x->fn_idx];
}

/* Leaves the worker's queued list, with the time it waited. */
static void exch_unqueue(struct exch *x)
{
    struct worker *w = x->cl->w;

    if (x->q_prev != NULL)
        x->q_prev->q_next = x->q_next;
    else
        w->queued = x->q_next;
    if (x->q_next != NULL)
        x->q_next->q_prev = x->q_prev;
    else
        w->queued_tail = x->q_prev;
    x->q_next = x->q_prev = NULL;
    x->flags &= ~X_F_QUEUED;
    x->queue_us += metrics_now_us() - x->t_queued;
}

/* Lets go of the exchange's slot, or of its place in the queue: the
 * function's next waiter goes on. */
static void exch_admit_done(struct exch *x)
{
    struct admit_fn *af;

    if (!(x->flags & (X_F_QUEUED | X_F_ADMITTED)))
        return;
    af = exch_admission(x)->af;
    if (x->flags & X_F_QUEUED) {
        exch_unqueue(x);
        if (admit_cancel(af, &x->wt))
            admit_release(af); /* granted meanwhile */
    }
    if (x->flags & X_F_ADMITTED) {
        x->flags &= ~X_F_ADMITTED;
        admit_release(af);
    }
}

/* The exchange is over (answer written, or abandoned): the client side
 * goes on with its next request, or closes. */
void exch_end(struct exch *x)
{
    bool reusable = (x->flags & X_F_REQ_SENT) && (x->flags & X_F_RESP_PARSED) &&
                    (x->resp.head.flags & H1_F_KEEP_ALIVE);

    exch_admit_done(x);
    exch_count(x);
    exch_drop_upstream(x, reusable);
    exch_release_endpoint(x);
    if (!(x->flags & X_F_REQ_PARSED))
        x->flags |= X_F_CLOSE; /* the rest of its body is still coming */
    wsnap_unref(x->ws);
    x->ws = NULL;
    x->phase = EXCH_PH_DONE;
    x->cl->ops->end(x);
}

/* Closes the client: for failures after the answer's head was sent, when
 * no clean answer is possible any more. The status counted stays the one
 * the client got in the head; the failure shows in
 * fnproxy_upstream_errors_total / fnproxy_timeouts_total. */
void exch_abort(struct exch *x)
{
    x->flags |= X_F_UP_BROKEN;
    x->cl->ops->abort(x);
}

void exch_client_gone(struct exch *x)
{
    if (x->ws == NULL)
        return; /* ended already, or never started */
    if (x->status == 0)
        x->status = 499; /* the client went away before an answer; counted as such */
    if (x->flags & X_F_RESOLVING)
        resolve_cancel(&x->rq);
    x->flags &= ~X_F_RESOLVING;
    exch_admit_done(x);
    exch_count(x);
    x->flags |= X_F_UP_BROKEN;
    exch_drop_upstream(x, false);
    exch_release_endpoint(x);
    wsnap_unref(x->ws);
    x->ws = NULL;
    x->phase = EXCH_PH_DONE;
}

/* --- writing to the client ------------------------------------------------ */

/* Sends what resp_out holds; with now, 1 means it all went at once. */
int exch_send(struct exch *x, bool now)
{
    int rc;

    for (unsigned i = 0; i < x->resp_out.n; i++)
        x->bytes_out += x->resp_out.iov[i].len;
    rc = x->cl->ops->send(x, now);
    if (rc == 0) {
        x->flags |= X_F_DOWN_WRITING;
        x->down_since = worker_now_ms(x->cl->w);
    }
    return rc;
}

/* Whether the client moved fewer than min_client_rate bytes a second over
 * the wait_ms fnproxy has waited on it so far (judged once 10 s were
 * waited): a client that trickles its body or reads its answer a byte at a
 * time must not hold a connection to the function for ever. */
#define CLIENT_RATE_WINDOW_MS 10000
static bool exch_client_too_slow(struct exch *x, uint64_t bytes, uint64_t wait_ms)
{
    const struct cfg_listener *lc = exch_listener(x);

    return lc != NULL && lc->min_client_rate != 0 && wait_ms >= CLIENT_RATE_WINDOW_MS &&
           bytes * 1000 < lc->min_client_rate * wait_ms;
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

void exch_client_sent(struct exch *x, int status)
{
    x->flags &= ~X_F_DOWN_WRITING;
    if (x->down_since != 0) {
        x->down_wait_ms += worker_now_ms(x->cl->w) - x->down_since;
        x->down_since = 0;
    }
    if (x->phase == EXCH_PH_STREAM && exch_client_too_slow(x, x->bytes_out, x->down_wait_ms)) {
        log_debug("request %s: the client reads under min_client_rate: closed", x->request_id);
        exch_count_timeout(x, TMO_SLOW_CLIENT);
        exch_abort(x);
        return;
    }
    if (status < 0) {
        x->cl->ops->abort(x);
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
    if (x->phase == EXCH_PH_TUNNEL) {
        fwd_tunnel_sent(x);
        return;
    }
    exch_response_written(x);
    exch_pump_response(x);
}

void exch_reply(struct exch *x, int status, const char *code, const char *message)
{
    exch_reply_json(x, status, code, message, "");
}

void exch_reply_json(struct exch *x, int status, const char *code, const char *message,
                     const char *extra)
{
    exch_reply_full(x, status, code, message, extra, NULL);
}

void exch_reply_full(struct exch *x, int status, const char *code, const char *message,
                     const char *extra, const char *headers)
{
    char body[512];
    int body_len;

    if (x->flags & X_F_RESP_STARTED) {
        exch_abort(x);
        return;
    }
    if (x->flags & X_F_RAW) {
        /* A captured TLS or opaque stream cannot read an HTTP answer: it is
         * reset, and the status stays for the log and the counters. */
        x->status = status;
        exch_abort(x);
        return;
    }
    exch_drop_upstream(x, false);
    x->phase = EXCH_PH_REPLY;
    if (x->flags & X_F_DOWN_WRITING) {
        /* "100 Continue" is still being sent: answer right after it. */
        x->status = status;
        x->reply_code = code;
        x->reply_msg = message;
        x->flags |= X_F_CLOSE;
        return;
    }
    x->flags |= X_F_LOCAL;
    x->status = status;
    if (status == 400 || status == 408 || status == 431 || !(x->flags & X_F_REQ_PARSED) ||
        (x->req.head.flags & H1_F_KEEP_ALIVE) == 0)
        x->flags |= X_F_CLOSE;
    x->cl->ops->read(x, false);
    /* Messages are fnproxy's own constants, llhttp's reasons or a TLS
     * reason with quotes and controls replaced: nothing needs escaping. */
    body_len = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"%s}\n", code,
                        message, extra);
    if (body_len < 0 || (size_t)body_len >= sizeof(body))
        body_len = (int)strlen(body);
    h1_out_reset(&x->resp_out);
    if (x->cl->ops->send_head(x, &(struct exch_head){.status = status,
                                                     .error_code = code,
                                                     .body_len = (size_t)body_len,
                                                     .headers = headers}) < 0) {
        x->cl->ops->abort(x);
        return;
    }
    /* An answer to HEAD has the length of the body, not the body. The body
     * goes after the head in its buffer, which outlives the send. */
    if (!(x->flags & X_F_HEAD_METHOD) &&
        (size_t)x->resp_head_len + (size_t)body_len <= WORKER_BUF_SIZE) {
        memcpy(x->resp_head + x->resp_head_len, body, (size_t)body_len);
        h1_out_raw(&x->resp_out, x->resp_head + x->resp_head_len, (size_t)body_len);
    }
    exch_touch(x);
    if (exch_send(x, false) < 0)
        x->cl->ops->abort(x);
}

/* --- the request side ------------------------------------------------------- */

void exch_make_request_id(struct exch *x)
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
    a = worker_rand(x->cl->w);
    b = worker_rand(x->cl->w);
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

static uint64_t exch_rand(void *w)
{
    return worker_rand(w);
}

void exch_take_trace(struct exch *x, bool start)
{
    struct h1_head *h = &x->req.head;

    if (h->traceparent >= 0) {
        struct h1_span v = h->hdr[h->traceparent].value;
        if (trace_parse(&x->trace, v.p, v.len))
            return;
    }
    /* Absent, several, or invalid: never forwarded (h1_write_request_head
     * drops every traceparent received) and replaced by a new trace. */
    if (start)
        trace_start(&x->trace, 0, exch_rand, x->cl->w);
}

void exch_refuse_head(struct exch *x, int status, const char *code, const char *why)
{
    x->ws = x->cl->w->cur;
    wsnap_ref(x->ws);
    exch_start_clock(x);
    exch_make_request_id(x);
    if (status == 408)
        exch_count_timeout(x, TMO_HEADER);
    exch_reply(x, status, code, why);
}

void exch_set_policy(struct exch *x, const struct cfg_timeouts *tmo, const struct retry_policy *rp,
                     const struct cfg_fault *fault)
{
    struct h1_head *h = &x->req.head;
    uint64_t now = worker_now_ms(x->cl->w);

    x->tmo = tmo;
    x->retries = rp;
    x->fault = fault;
    x->deadline = now + tmo->timeout_ms;
    if (retry_method_idempotent(h->method.p, h->method.len)) {
        x->flags |= X_F_IDEMPOTENT;
    } else {
        for (unsigned i = 0; i < h->n_hdr; i++)
            if (h1_span_is(h->hdr[i].name, "idempotency-key"))
                x->flags |= X_F_IDEMPOTENT; /* the client vouches for it */
    }
    if (rp != NULL)
        retry_budget_request(&x->stats->budget, now / 1000);
}

/* Waits ms before the next attempt (a backoff, an injected delay). */
static void exch_wait(struct exch *x, uint64_t ms)
{
    x->wake_at = worker_now_ms(x->cl->w) + ms;
    exch_enter(x, EXCH_PH_BACKOFF);
}

int exch_head_buf(struct exch *x, size_t cap)
{
    if (cap <= WORKER_BUF_SIZE) {
        x->req_head = worker_buf_get(x->cl->w);
        x->req_head_cap = WORKER_BUF_SIZE;
    } else {
        x->req_head = malloc(cap);
        x->req_head_cap = (uint32_t)cap;
    }
    if (x->req_head == NULL) {
        exch_reply(x, 503, "overloaded", "out of memory");
        return -1;
    }
    return 0;
}

/* true with a share in 100000 */
static bool exch_chance(struct exch *x, uint32_t share)
{
    return share != 0 && worker_rand(x->cl->w) % 100000 < share;
}

void exch_first_attempt(struct exch *x)
{
    const struct cfg_fault *f = x->fault;

    if (f != NULL && exch_chance(x, f->abort_share)) {
        metrics_inc(&x->stats->faults[FAULT_ABORT]);
        exch_reply(x, f->abort_status, "fault_injected", "answered by fault injection (abort)");
        return;
    }
    if (f != NULL && exch_chance(x, f->delay_share)) {
        metrics_inc(&x->stats->faults[FAULT_DELAY]);
        exch_wait(x, f->delay_ms); /* its end starts the first attempt */
        return;
    }
    exch_connect(x);
}

/* 429 when the function's rate limit (or its client's) is spent. */
static bool exch_rate_limited(struct exch *x)
{
    const struct snap_admit *sa = exch_admission(x);
    struct ratelimit_result r;
    char headers[256];

    if (sa->af == NULL || sa->rate.interval_ns == 0)
        return false;
    if (sa->clients != NULL) {
        const char *key = x->fn->admission.per == CFG_RATE_CLIENT_IP ? x->cl->ip
                          : x->cl->id != NULL                        ? x->cl->id
                                                                     : "";
        ratelimit_table_take(sa->clients, key, strlen(key), &sa->rate, x->t0 * 1000, &r);
    } else {
        ratelimit_take(&sa->af->bucket, &sa->rate, x->t0 * 1000, &r);
    }
    if (r.allowed)
        return false;
    metrics_inc(&x->stats->denials[DENY_RATE_LIMITED]);
    if (ratelimit_headers(headers, sizeof(headers), x->fn->name, &sa->rate, &r) == 0)
        headers[0] = '\0';
    exch_reply_full(x, 429, "rate_limited", "the function's rate limit is spent; see Retry-After",
                    "", headers);
    return true;
}

static void exch_overloaded(struct exch *x, const char *why)
{
    metrics_inc(&x->stats->denials[DENY_OVERLOADED]);
    exch_reply_full(x, 503, "overloaded", why, "", "retry-after: 1\r\n");
}

static void exch_admitted(struct exch *x)
{
    x->flags |= X_F_ADMITTED;
    if (x->attempts == 0)
        exch_first_attempt(x);
    else
        exch_connect(x); /* held again after its endpoints refused (exch_hold_again) */
}

/* Called with the function's lock held, on the thread that freed the slot
 * (or the prober's): only tells x's worker. */
static void on_admit_wake(struct admit_waiter *wt)
{
    struct exch *x = (struct exch *)((char *)wt - offsetof(struct exch, wt));
    struct worker *w = x->cl->w;

    __atomic_store_n(&w->admit_wake, true, __ATOMIC_RELEASE);
    uv_async_send(&w->wake);
}

/* A slot of the function (max_concurrency, readiness), or a place in its
 * queue: QUEUE until one is handed over or queue.timeout passes. */
static void exch_admit(struct exch *x)
{
    const struct snap_admit *sa = exch_admission(x);
    struct worker *w = x->cl->w;
    uint64_t now;

    if (!sa->gate) {
        exch_first_attempt(x);
        return;
    }
    if (admit_try(sa->af)) {
        exch_admitted(x);
        return;
    }
    x->wt.wake = on_admit_wake;
    switch (admit_enqueue(sa->af, &x->wt)) {
    case ADMIT_OK:
        exch_admitted(x);
        return;
    case ADMIT_FULL:
        exch_overloaded(x, "the function is at max_concurrency and its queue is full");
        return;
    case ADMIT_QUEUED:
        break;
    }
    x->flags |= X_F_QUEUED;
    x->t_queued = metrics_now_us();
    x->q_prev = w->queued_tail;
    if (w->queued_tail != NULL)
        w->queued_tail->q_next = x;
    else
        w->queued = x;
    w->queued_tail = x;
    now = worker_now_ms(w);
    x->wake_at = now + x->fn->admission.queue_timeout_ms;
    if (x->deadline != 0 && x->deadline < x->wake_at)
        x->wake_at = x->deadline;
    exch_enter(x, EXCH_PH_QUEUE);
}

void exch_admit_granted(struct worker *w)
{
    struct exch *x, *next;

    for (x = w->queued; x != NULL; x = next) {
        next = x->q_next;
        if (!admit_granted(&x->wt))
            continue;
        __atomic_store_n(&x->wt.state, ADMIT_W_IDLE, __ATOMIC_RELAXED);
        exch_unqueue(x);
        exch_admitted(x);
    }
}

/* queue.timeout (or the request's deadline) passed while waiting. */
static void exch_queue_timeout(struct exch *x)
{
    struct admit_fn *af = exch_admission(x)->af;

    exch_unqueue(x);
    if (admit_cancel(af, &x->wt)) { /* a slot came just now */
        exch_admitted(x);
        return;
    }
    exch_overloaded(x, __atomic_load_n(&af->gated, __ATOMIC_RELAXED)
                           ? "no endpoint of the function became ready within queue.timeout"
                           : "no slot of the function (max_concurrency) within queue.timeout");
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

void exch_begin(struct exch *x)
{
    struct exch_client *cl = x->cl;
    struct h1_head *h = &x->req.head;
    const struct cfg_listener *lc;
    const char *why = NULL;
    struct route_match m;
    int status;

    x->ws = cl->w->cur;
    wsnap_ref(x->ws);
    x->phase = EXCH_PH_ROUTE;
    exch_start_clock(x);
    if (!(h->flags & H1_F_KEEP_ALIVE))
        x->flags |= X_F_CLOSE;
    if ((h->flags & H1_F_CHUNKED) || ((h->flags & H1_F_CONTENT_LENGTH) && h->content_length > 0)) {
        x->flags |= X_F_HAS_BODY;
        /* The body is read only when the function can take it. Without a
         * body, reading goes on (pipelined requests just wait in the
         * buffer): stopping and restarting would cost two syscalls. */
        cl->ops->read(x, false);
    } else
        x->flags |= X_F_REQ_PARSED; /* nothing follows the head */

    if (h1_span_is(h->method, "head"))
        x->flags |= X_F_HEAD_METHOD;
    lc = exch_listener(x);
    if (lc != NULL && lc->kind != CFG_LISTENER_INGRESS) {
        fwd_begin(x);
        return;
    }
    status = h1_check_request(h, &why);
    exch_make_request_id(x);  /* the check found the client's x-request-id */
    exch_take_trace(x, true); /* ... and its traceparent */
    if (status != 0) {
        exch_reply(x, status, status == 417 ? "expectation_failed" : "bad_request", why);
        return;
    }

    struct h1_span host = h->host >= 0 ? h->hdr[h->host].value : (struct h1_span){"", 0};
    size_t path_len = 0;
    while (path_len < h->target.len && h->target.p[path_len] != '?')
        path_len++;
    if (lc == NULL || router_match(x->ws->snap->router, *cl->listener, host.p, host.len,
                                   h->target.p, path_len, h->method.p, h->method.len, &m) != 0) {
        exch_reply(x, 404, "no_route", "no route matches this request");
        return;
    }
    x->fn = m.fn;
    x->fn_idx = m.fn_idx;
    x->route = m.route;
    x->fs = &x->ws->fns[m.fn_idx];
    x->stats = x->fs->routes[m.route_idx];
    exch_set_policy(x, &m.route->t, &m.route->retries, &m.route->fault);
    if (x->fn->n_allowed_clients > 0 && !client_allowed(x->fn, cl->id)) {
        metrics_inc(&x->stats->denials[DENY_CLIENT]);
        exch_reply(x, 403, "client_not_allowed",
                   cl->id != NULL ? "this client may not call this function"
                                  : "a client certificate is required");
        return;
    }

    if (x->fn->max_body > 0 && (h->flags & H1_F_CONTENT_LENGTH) &&
        h->content_length > x->fn->max_body) {
        exch_reply(x, 413, "body_too_large", "request body is larger than max_body");
        return;
    }
    if (exch_rate_limited(x))
        return;
    if ((h->flags & H1_F_EXPECT_CONTINUE) && (x->flags & X_F_HAS_BODY) && h->minor >= 1)
        x->flags |= X_F_CONTINUE;

    /* The head sent upstream. Its size is bounded by the head received plus
     * what fnproxy adds. */
    size_t cap = (size_t)x->req_bytes + 1024 + sizeof(x->request_id) + INET6_ADDRSTRLEN;
    for (unsigned i = 0; i < h->n_hdr; i++)
        if (h1_span_eq(h->hdr[i].name, "x-forwarded-for"))
            cap += 2;
    if (exch_head_buf(x, cap) < 0)
        return;
    struct h1_forward f = {
        .client_ip = cl->ip,
        .proto = cl->tls ? "https" : "http",
        .request_id = x->request_id,
        /* HTTP/1.0 may omit Host; HTTP/1.1, which fnproxy speaks upstream,
         * may not: name the address the client reached. */
        .host = lc->listen.text,
        .client_id = cl->id,
        .keep_tracestate = x->trace.kept,
    };
    x->req_head_len = (uint32_t)h1_write_request_head(x->req_head, x->req_head_cap, h, &f);
    if (x->req_head_len == 0) {
        exch_reply(x, 431, "header_too_large", "request head too large");
        return;
    }
    x->req_out.chunked = (h->flags & H1_F_CHUNKED) != 0;
    exch_admit(x);
}

/* Picks the endpoint: the less loaded of two random untried ones; once
 * every one was tried, any but the last one tried (a retry prefers another
 * endpoint). */
/* At its circuit breaker's limits: as many requests in flight as allowed,
 * or as many connects under way with no idle connection to take instead. */
bool endpoint_full(const struct endpoint *ep, const struct cfg_circuit_breaker *cb)
{
    return (cb->max_active != 0 && ep->outstanding >= cb->max_active) ||
           (cb->max_pending != 0 && ep->pending >= cb->max_pending && ep->n_idle == 0);
}

static struct endpoint *exch_pick_endpoint(struct exch *x, size_t *idx, bool *full)
{
    struct fn_state *fs = x->fs;
    size_t cand[CFG_MAX_ENDPOINTS], ejected[CFG_MAX_ENDPOINTS], n = 0, n_ejected = 0;
    uint64_t all = fs->n_eps >= 64 ? UINT64_MAX : (1ULL << fs->n_eps) - 1;
    uint64_t now = worker_now_ms(x->cl->w);
    struct admit_ep *const *ready = exch_admission(x)->eps;

    if (fs->n_eps == 0)
        return NULL;
    if ((x->tried & all) == all)
        x->tried = fs->n_eps > 1 ? 1ULL << x->ep_idx : 0;
    for (size_t i = 0; i < fs->n_eps; i++) {
        if (x->tried & (1ULL << i))
            continue;
        if (endpoint_full(fs->eps[i], &x->fn->circuit_breaker)) {
            *full = true;
            continue;
        }
        if (outlier_ejected(&fs->eps[i]->outlier, now) ||
            (ready != NULL && !__atomic_load_n(&ready[i]->ready, __ATOMIC_ACQUIRE)))
            ejected[n_ejected++] = i; /* ejected, or not ready: last resorts */
        else
            cand[n++] = i;
    }
    if (n == 0) { /* only ejected ones left: better them than nothing */
        memcpy(cand, ejected, n_ejected * sizeof(cand[0]));
        n = n_ejected;
    }
    if (n == 0)
        return NULL;
    if (n == 1) {
        *idx = cand[0];
        return fs->eps[cand[0]];
    }
    size_t i = worker_rand(x->cl->w) % n;
    size_t j = worker_rand(x->cl->w) % (n - 1);
    if (j >= i)
        j++; /* two distinct candidates */
    size_t a = cand[i], b = cand[j];
    *idx = fs->eps[b]->outstanding < fs->eps[a]->outstanding ? b : a;
    return fs->eps[*idx];
}

static void on_up_connected(void *owner, int status);
static void on_up_data(void *owner, ssize_t nread);
static void on_up_written(void *owner, int status);

static const struct pool_owner_ops exch_pool_ops = {
    .connected = on_up_connected,
    .data = on_up_data,
    .written = on_up_written,
};

/* The next attempt: a connection to an untried endpoint (or a new one to
 * the same, after a stale pooled connection). */
void exch_connect(struct exch *x)
{
    struct endpoint *ep;
    struct tls_ctx *tls;
    size_t idx = 0;
    bool full = false;
    int err = 0;
    uint64_t tried = x->tried;

    if (x->flags & X_F_SAME_EP)
        x->tried = ~(1ULL << x->ep_idx); /* every other one counts as tried, for the pick */
    if (x->flags & X_F_EGRESS) {
        ep = fwd_next_endpoint(x, &idx, &tls, &full);
    } else {
        ep = exch_pick_endpoint(x, &idx, &full);
        tls = x->ws->snap->upstream_tls[x->fn_idx];
    }
    if (x->flags & X_F_SAME_EP) {
        x->tried = tried;
        x->flags &= ~X_F_SAME_EP;
    }
    if (ep == NULL && full) {
        metrics_inc(&x->stats->breaker_rejections);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 503, "overloaded",
                   "every endpoint is at its circuit_breaker limits; try again shortly");
        return;
    }
    if (ep == NULL) { /* no endpoint at all (or out of memory) */
        exch_give_up(x, EXCH_FAIL_REFUSED, NULL);
        return;
    }
    x->tried |= 1ULL << idx;
    x->ep_idx = (uint8_t)idx;
    x->attempts++;
    x->ep = ep;
    ep->outstanding++;
    x->flags &= ~(X_F_GOT_BYTES | X_F_HEAD_SENT);
    x->t_attempt = metrics_now_us();
    x->try_deadline = x->tmo != NULL && x->tmo->per_try_timeout_ms != 0
                          ? worker_now_ms(x->cl->w) + x->tmo->per_try_timeout_ms
                          : 0;
    /* A tunnel takes a connection of its own, never pooled afterwards. */
    x->u = pool_get(&x->cl->w->pool, ep, tls, (x->flags & (X_F_FRESH | X_F_TUNNEL)) != 0,
                    (x->flags & X_F_TUNNEL) ? &fwd_tunnel_pool_ops : &exch_pool_ops, x, &err);
    if (x->u == NULL) {
        ep->outstanding--;
        x->t_attempt = 0;
        exch_attempt_failed(x, EXCH_FAIL_REFUSED, err, NULL);
        return;
    }
    if (x->u->flags & UP_F_CONNECTED) {
        on_up_connected(x, 0);
        return;
    }
    x->t_connect = x->t_attempt;
    ep->pending++;
    x->connected = true;
    exch_enter(x, EXCH_PH_CONNECT);
}

/* An attempt's outcome, for outlier ejection: a failure to connect or to
 * answer, or a 5xx, counts against the endpoint; anything else for it. */
static void exch_endpoint_outcome(struct exch *x, bool ok)
{
    struct endpoint *ep = x->ep;
    unsigned n = (x->flags & X_F_EGRESS) ? x->dial.n : (unsigned)x->fs->n_eps, n_ejected = 0;
    uint64_t now = worker_now_ms(x->cl->w);

    if (ep == NULL)
        return;
    if (!ok && !(x->flags & X_F_EGRESS))
        for (size_t i = 0; i < x->fs->n_eps; i++)
            n_ejected += outlier_ejected(&x->fs->eps[i]->outlier, now);
    if (!outlier_record(&ep->outlier, &x->fn->outlier, ok, now, n_ejected, n))
        return;
    metrics_inc(&x->stats->ejections);
    if (log_ratelimit(&ep->last_error_log_ms, 1000))
        log_warn("function %s: %s ejected for %llu ms after %u failures in a row (ejection %u)",
                 x->fn->name, ep->addr.text, (unsigned long long)(ep->outlier.until_ms - now),
                 x->fn->outlier.consecutive_failures, ep->outlier.ejections);
}

/* Every endpoint of a function with readiness refused: it is starting or
 * restarting. The request, which reached nobody, waits for a ready
 * endpoint again rather than failing, if it arrived less than
 * queue.timeout ago. */
static bool exch_hold_again(struct exch *x)
{
    const struct snap_admit *sa;

    if (x->flags & X_F_EGRESS)
        return false;
    sa = exch_admission(x);
    if (sa->eps == NULL || metrics_now_us() - x->t0 >= x->fn->admission.queue_timeout_ms * 1000)
        return false;
    for (size_t e = 0; e < x->fn->n_endpoints; e++)
        if (__atomic_load_n(&sa->eps[e]->ready, __ATOMIC_ACQUIRE))
            return false;
    admit_set_ready(sa->af, sa->eps, x->fn->n_endpoints); /* gated now, not when probed */
    exch_drop_upstream(x, false);
    exch_admit_done(x);
    x->tried = 0;
    exch_admit(x);
    return true;
}

/* No more attempts: the answer says why the last one failed. */
static void exch_give_up(struct exch *x, enum exch_failure f, const char *msg)
{
    if (f == EXCH_FAIL_REFUSED && exch_hold_again(x))
        return;
    x->flags |= X_F_UP_BROKEN;
    switch (f) {
    case EXCH_FAIL_REFUSED:
    case EXCH_FAIL_CONNECT_TIMEOUT:
    case EXCH_FAIL_TLS:
        if (x->up_error[0] != '\0')
            exch_reply(x, 502, "upstream_tls_failed", x->up_error);
        else if (x->flags & X_F_EGRESS)
            fwd_unreachable(x);
        else
            exch_reply(x, 502, "upstream_unreachable",
                       "no endpoint of the function accepted a connection");
        return;
    case EXCH_FAIL_TIMEOUT:
    case EXCH_FAIL_PER_TRY_TIMEOUT:
    case EXCH_FAIL_DEADLINE:
        exch_reply(x, 504, "upstream_timeout",
                   (x->flags & X_F_EGRESS) ? "the destination did not answer in time"
                                           : "the function did not answer in time");
        return;
    default:
        exch_reply(x, 502, "upstream_bad_response", msg);
        return;
    }
}

static enum retry_cond exch_retry_cond(enum exch_failure f, int err)
{
    switch (f) {
    case EXCH_FAIL_REFUSED:
        return err == UV_ECONNREFUSED ? RETRY_C_REFUSED : RETRY_C_CONNECT;
    case EXCH_FAIL_CONNECT_TIMEOUT:
    case EXCH_FAIL_TLS:
        return RETRY_C_CONNECT;
    case EXCH_FAIL_PER_TRY_TIMEOUT:
        return RETRY_C_PER_TRY_TIMEOUT;
    default:
        return RETRY_C_RESET;
    }
}

/* Whether an endpoint (or egress address) is left that this request has
 * not tried. */
static bool exch_untried_left(const struct exch *x)
{
    size_t n = (x->flags & X_F_EGRESS) ? x->dial.n : x->fs->n_eps;
    uint64_t all = n >= 64 ? UINT64_MAX : (1ULL << n) - 1;

    return (x->tried & all) != all;
}

/* Another attempt, if the retry policy allows it (policy/retry.h): true
 * when one is made, now or after its backoff. A retry not made is counted
 * with its reason. retry_after: a 503's or 429's Retry-After in ms, or -1. */
static bool exch_try_retry(struct exch *x, enum retry_cond cond, int status, int64_t retry_after)
{
    const struct retry_policy *rp = x->retries;
    struct worker *w = x->cl->w;
    uint64_t now = worker_now_ms(w);
    bool connect = cond == RETRY_C_CONNECT || cond == RETRY_C_REFUSED;
    enum retry_verdict v;

    if (rp == NULL || (x->flags & X_F_TUNNEL && !connect))
        return false;
    struct retry_facts f = {
        .cond = cond,
        .status = status,
        .sent = !connect && (x->flags & X_F_HEAD_SENT) != 0,
        .idempotent = (x->flags & X_F_IDEMPOTENT) != 0,
        .replayable = !(x->flags & X_F_REPLAY_LOST),
        .retries = x->n_retries,
        /* Nothing reached the function, or the next attempt goes to an
         * endpoint not tried yet: at once. Backoff spares one that failed. */
        .wait_ms = connect || exch_untried_left(x)
                       ? 0
                       : retry_backoff_ms(rp, x->n_retries, worker_rand(w)),
        .left_ms = x->deadline > now ? x->deadline - now : 0,
    };
    if (retry_after >= 0 && (uint64_t)retry_after > f.wait_ms)
        f.wait_ms = (uint64_t)retry_after;
    /* A failed connect put no load on the function: another endpoint is
     * tried without spending the budget, which guards the functions. */
    f.budget_ok = connect || retry_budget_allows(&x->stats->budget, rp, now / 1000);
    v = retry_decide(rp, &f);
    if (v != RETRY_GO) {
        if (v != RETRY_NOT_ON)
            metrics_inc(&x->stats->retries_skipped[v]);
        return false;
    }
    if (!connect)
        retry_budget_spend(&x->stats->budget, now / 1000);
    metrics_inc(&x->stats->retries);
    x->n_retries++;
    x->flags |= X_F_UP_BROKEN;
    exch_drop_upstream(x, false);
    x->flags &= ~(X_F_UP_BROKEN | X_F_REQ_SENT | X_F_UP_WRITING | X_F_HEAD_SENT | X_F_GOT_BYTES |
                  X_F_INTERIM);
    if (f.wait_ms == 0) {
        exch_connect(x);
        return true;
    }
    exch_wait(x, f.wait_ms);
    return true;
}

/* Every failed attempt comes here: it is counted, and what follows is
 * decided in one place (exch_decide, then the retry policy). */
void exch_attempt_failed(struct exch *x, enum exch_failure f, int err, const char *msg)
{
    struct exch_attempt a = {
        .reused = x->u != NULL && (x->u->flags & UP_F_REUSED),
        .got_bytes = (x->flags & X_F_GOT_BYTES) != 0,
        .has_body = (x->flags & X_F_HAS_BODY) != 0,
        .stale_retried = (x->flags & X_F_STALE_RETRIED) != 0,
        .idempotent = (x->flags & X_F_IDEMPOTENT) != 0,
        .resp_started = (x->flags & X_F_RESP_STARTED) != 0,
    };
    enum exch_next next = exch_decide(f, err, &a);
    enum metrics_timeout kind;

    x->last_fail = (uint8_t)f;
    if (next != EXCH_NEXT_FRESH && next != EXCH_NEXT_ABORT && f != EXCH_FAIL_TIMEOUT &&
        f != EXCH_FAIL_DEADLINE)
        exch_endpoint_outcome(x, false); /* the endpoint failed this attempt */

    switch (f) {
    case EXCH_FAIL_REFUSED:
        exch_connect_done(x);
        exch_count_uperr(x, UPERR_REFUSED);
        if (!(x->flags & X_F_EGRESS) && exch_admission(x)->eps != NULL)
            admit_ep_down(exch_admission(x)->eps[x->ep_idx]); /* probed again until it answers */
        log_debug("connect to %s failed: %s", x->ep->addr.text, uv_strerror(err));
        break;
    case EXCH_FAIL_CONNECT_TIMEOUT:
        exch_connect_done(x);
        exch_count_timeout(x, TMO_CONNECT);
        exch_count_uperr(x, UPERR_TIMEOUT);
        break;
    case EXCH_FAIL_TLS:
        exch_connect_done(x);
        /* Said in the answer if no other endpoint does better. Quotes
         * would break the JSON answer. */
        snprintf(x->up_error, sizeof(x->up_error), "TLS to the function failed: %s",
                 upconn_tls_error(x->u));
        for (char *p = x->up_error; *p != '\0'; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                *p = '\'';
        if (log_ratelimit(&x->ep->last_error_log_ms, 1000))
            log_warn("function %s: TLS to %s (%s) failed: %s", x->fn->name, x->ep->addr.text,
                     x->ep->tls_name, upconn_tls_error(x->u));
        exch_count_uperr(x, UPERR_TLS);
        break;
    case EXCH_FAIL_RESET:
        /* Counted even when it may be a stale pooled connection: a function
         * that resets requests must show, and the pool notices an idle
         * connection's close, so a true stale one is a rare race. */
        exch_count_uperr(x, err == UV_EOF ? UPERR_PROTOCOL : UPERR_RESET);
        break;
    case EXCH_FAIL_PROTOCOL:
        exch_count_uperr(x, UPERR_PROTOCOL);
        break;
    case EXCH_FAIL_TIMEOUT:
        exch_phase_timeout(x->phase, &(struct exch_timeouts){0}, &kind);
        exch_count_timeout(x, kind);
        if (!a.resp_started)
            exch_count_uperr(x, UPERR_TIMEOUT);
        break;
    case EXCH_FAIL_PER_TRY_TIMEOUT:
    case EXCH_FAIL_DEADLINE:
        exch_connect_done(x);
        exch_count_timeout(x, f == EXCH_FAIL_DEADLINE ? TMO_TOTAL : TMO_PER_TRY);
        exch_count_uperr(x, UPERR_TIMEOUT);
        break;
    default:
        break;
    }

    switch (next) {
    case EXCH_NEXT_RETRY:
        if (!exch_try_retry(x, exch_retry_cond(f, err), 0, -1))
            exch_give_up(x, f, msg);
        return;
    case EXCH_NEXT_FRESH:
        /* Exactly once, on a new connection: another pooled one could be
         * as stale. The request has no body, so it is whole in req_head. */
        x->flags |= X_F_UP_BROKEN;
        exch_drop_upstream(x, false);
        x->flags &= ~(X_F_UP_BROKEN | X_F_REQ_SENT | X_F_UP_WRITING);
        /* The endpoint is fine; the connection was old: the same endpoint
         * again, whose pool this new connection then replaces the broken
         * one in. Another attempt sent, so counted as a retry; not the
         * policy's, so it spends neither its budget nor its max. */
        x->flags |= X_F_STALE_RETRIED | X_F_FRESH | X_F_SAME_EP;
        metrics_inc(&x->stats->retries);
        exch_connect(x);
        return;
    case EXCH_NEXT_REPLY:
        exch_give_up(x, f, msg);
        return;
    case EXCH_NEXT_ABORT:
        if (msg != NULL)
            log_debug("function %s: answer cut short: %s", x->fn->name, msg);
        exch_abort(x);
        return;
    }
}

static void on_up_connected(void *owner, int status)
{
    struct exch *x = owner;

    if (status == UV_EPROTO) {
        exch_attempt_failed(x, EXCH_FAIL_TLS, status, NULL);
        return;
    }
    if (status < 0) {
        exch_attempt_failed(x, EXCH_FAIL_REFUSED, status, NULL);
        return;
    }
    exch_connect_done(x);
    h1_parser_init(&x->resp, HTTP_RESPONSE);
    x->resp.skip_body = (x->flags & X_F_HEAD_METHOD) != 0;
    upconn_read(x->u, true);
    x->phase = EXCH_PH_SEND;
    exch_touch(x);
    if (x->flags & X_F_CONTINUE) {
        /* Nothing else has been sent to the client yet. */
        x->flags &= ~X_F_CONTINUE;
        if (x->cl->ops->send_continue(x) < 0) {
            x->cl->ops->abort(x);
            return;
        }
        x->flags |= X_F_DOWN_WRITING;
    }
    exch_pump_request(x);
}

void exch_input(struct exch *x)
{
    if (x->phase == EXCH_PH_BODY) {
        uint64_t now = worker_now_ms(x->cl->w);
        x->body_wait_ms += now - x->body_since;
        x->body_since = now;
        if (exch_client_too_slow(x, x->req.body_bytes, x->body_wait_ms)) {
            exch_count_timeout(x, TMO_SLOW_CLIENT);
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 408, "request_timeout",
                       "the request body arrives slower than min_client_rate");
            return;
        }
    }
    exch_touch(x);
    if (x->flags & X_F_TUNNEL) {
        fwd_tunnel_input(x);
        return;
    }
    exch_pump_request(x);
}

void exch_thaw(struct exch *x, uint64_t lost_ms)
{
    uint64_t *t[] = {&x->deadline, &x->try_deadline, &x->wake_at, &x->body_since, &x->down_since};

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (*t[i] != 0)
            *t[i] += lost_ms;
}

void exch_client_eof(struct exch *x)
{
    if ((x->flags & X_F_TUNNEL) && x->ws != NULL)
        fwd_tunnel_client_eof(x);
}

/* The head of this attempt: it ends with the lines each attempt says anew,
 * then whatever of the body a retry replays. The traceparent names a new
 * span of fnproxy's per attempt (trace.h), the parent of the function's;
 * to a function, the time left follows (x-fnproxy-timeout-ms, DESIGN.md
 * "deadlines that travel"). */
static void exch_head_out(struct exch *x)
{
    size_t n = 0;

    if (trace_known(&x->trace))
        n = trace_write_line(x->tail_hdr, &x->trace, trace_span_id(exch_rand, x->cl->w));
    if (x->deadline != 0 && !(x->flags & X_F_EGRESS)) {
        uint64_t now = worker_now_ms(x->cl->w);
        uint64_t left = x->deadline > now ? x->deadline - now : 1;
        n += (size_t)snprintf(x->tail_hdr + n, sizeof(x->tail_hdr) - n,
                              "x-fnproxy-timeout-ms: %llu\r\n", (unsigned long long)left);
    }
    if (n > 0) {
        memcpy(x->tail_hdr + n, "\r\n", 2);
        n += 2;
        h1_out_raw(&x->req_out, x->req_head, x->req_head_len - 2); /* without its blank line */
        h1_out_raw(&x->req_out, x->tail_hdr, n);
    } else {
        h1_out_raw(&x->req_out, x->req_head, x->req_head_len);
    }
    if (x->replay_len > 0)
        h1_out_raw(&x->req_out, x->replay, x->replay_len);
}

/* Keeps the body bytes about to be sent (req_out's iovecs from first on,
 * framed as sent) for a retry, within the route's replay_buffer and the
 * worker's cap; beyond them the request loses its retries (counted as
 * "body" when one is wanted). */
static void exch_keep_for_replay(struct exch *x, unsigned first)
{
    struct worker *w = x->cl->w;
    size_t add = 0, need;

    if (x->flags & X_F_REPLAY_LOST)
        return;
    for (unsigned i = first; i < x->req_out.n; i++)
        add += x->req_out.iov[i].len;
    if (add == 0)
        return;
    need = (size_t)x->replay_len + add;
    if (x->retries == NULL || x->retries->max == 0 || need > x->retries->replay_max)
        goto lost;
    if (need > x->replay_cap) {
        size_t cap = x->replay_cap ? (size_t)x->replay_cap * 2 : 4096;
        while (cap < need)
            cap *= 2;
        if (cap > x->retries->replay_max)
            cap = x->retries->replay_max;
        if (w->replay_bytes + (cap - x->replay_cap) > REPLAY_WORKER_MAX)
            goto lost;
        char *p = realloc(x->replay, cap);
        if (p == NULL)
            goto lost;
        w->replay_bytes += cap - x->replay_cap;
        x->replay = p;
        x->replay_cap = (uint32_t)cap;
    }
    for (unsigned i = first; i < x->req_out.n; i++) {
        memcpy(x->replay + x->replay_len, x->req_out.iov[i].base, x->req_out.iov[i].len);
        x->replay_len += (uint32_t)x->req_out.iov[i].len;
    }
    return;
lost:
    x->flags |= X_F_REPLAY_LOST;
    if (x->replay != NULL) {
        w->replay_bytes -= x->replay_cap;
        free(x->replay);
        x->replay = NULL;
        x->replay_len = x->replay_cap = 0;
    }
}

/* Moves request bytes to the function: the head first, then the body as it
 * is read from the client. */
static void exch_pump_request(struct exch *x)
{
    const struct exch_client_ops *ops = x->cl->ops;
    struct upconn *u = x->u;

    unsigned fresh; /* req_out's first iovec of body bytes not sent before */

again:
    if (u == NULL || !(u->flags & UP_F_CONNECTED) || (x->flags & (X_F_UP_WRITING | X_F_REQ_SENT)))
        return;
    h1_out_reset(&x->req_out);
    if (!(x->flags & X_F_HEAD_SENT)) {
        exch_head_out(x);
        x->flags |= X_F_HEAD_SENT;
        x->t_sent = metrics_now_us();
        x->sent = true;
    }
    fresh = x->req_out.n;
    if (!(x->flags & X_F_REQ_PARSED)) {
        const char *p;
        size_t n, used = 0;

        ops->input(x, &p, &n);
        x->req.out = &x->req_out;
        enum h1_event ev = h1_feed(&x->req, p, n, &used);
        x->req.out = NULL;
        ops->consume(x, used);
        if (ev == H1_EV_ERROR) {
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 400, "bad_request", x->req.error);
            return;
        }
        if (x->fn->max_body > 0 && x->req.body_bytes > x->fn->max_body &&
            !(x->flags & X_F_EGRESS)) {
            x->flags |= X_F_UP_BROKEN;
            exch_reply(x, 413, "body_too_large", "request body is larger than max_body");
            return;
        }
        if (ev == H1_EV_DONE)
            x->flags |= X_F_REQ_PARSED;
        exch_keep_for_replay(x, fresh);
    }
    if (x->req_out.n > 0) {
        /* Body parts the socket takes at once need no completion: reading
         * the client goes on (as for responses, exch_pump_response). */
        bool more = !(x->flags & X_F_REQ_PARSED);
        int rc = upconn_write(u, x->req_out.iov, x->req_out.n, more);
        if (rc < 0) {
            exch_attempt_failed(x, EXCH_FAIL_RESET, rc, "write to the function failed");
            return;
        }
        if (rc == 1) {
            exch_touch(x);
            goto again;
        }
        if (more)
            ops->read(x, false); /* the write points into the client's buffer */
        x->flags |= X_F_UP_WRITING;
        if (x->phase != EXCH_PH_STREAM)
            exch_enter(x, EXCH_PH_SEND);
        return;
    }
    if (x->flags & X_F_REQ_PARSED) {
        x->flags |= X_F_REQ_SENT;
        if (x->phase != EXCH_PH_STREAM)
            exch_enter(x, EXCH_PH_WAIT_HEAD);
        return;
    }
    /* Everything read so far is sent: read more of the body. */
    ops->reclaim(x);
    ops->read(x, true);
    if (x->phase != EXCH_PH_STREAM)
        exch_enter(x, EXCH_PH_BODY);
}

static void on_up_written(void *owner, int status)
{
    struct exch *x = owner;

    x->flags &= ~X_F_UP_WRITING;
    if (status < 0) {
        exch_attempt_failed(x, EXCH_FAIL_RESET, status, "the function closed the connection");
        return;
    }
    exch_touch(x);
    x->cl->ops->reclaim(x);
    if (x->flags & X_F_REQ_PARSED)
        x->flags |= X_F_REQ_SENT;
    if (!(x->flags & X_F_REQ_SENT)) {
        exch_pump_request(x);
        return;
    }
    if (x->phase != EXCH_PH_STREAM)
        exch_enter(x, EXCH_PH_WAIT_HEAD);
    if ((x->flags & X_F_RESP_PARSED) && !(x->flags & X_F_DOWN_WRITING))
        exch_end(x);
}

/* --- the response side ------------------------------------------------------ */

/* The response head arrived: the client side frames it and it is queued.
 * Returns false when the exchange went another way. */
static bool exch_response_head(struct exch *x)
{
    struct h1_head *rh = &x->resp.head;
    const char *why = NULL;

    if (h1_check_response(rh, &why) < 0 || rh->status == 101) {
        exch_attempt_failed(x, EXCH_FAIL_PROTOCOL, 0,
                            why != NULL ? why : "unexpected protocol switch");
        return false;
    }
    if (rh->status < 200) {
        x->flags |= X_F_INTERIM; /* 1xx: dropped; the final response follows */
        return true;
    }
    exch_endpoint_outcome(x, rh->status < 500);
    if (x->retries != NULL && retry_on_status(x->retries, rh->status)) {
        int64_t after = -1;
        if (rh->status == 503 || rh->status == 429)
            for (unsigned i = 0; i < rh->n_hdr; i++)
                if (h1_span_is(rh->hdr[i].name, "retry-after"))
                    after = retry_after_ms(rh->hdr[i].value.p, rh->hdr[i].value.len);
        /* Its body is not read: the connection goes, the retry takes another. */
        if (exch_try_retry(x, RETRY_C_STATUS, rh->status, after))
            return false;
    }
    if (x->cl->ops->send_head(x, &(struct exch_head){.status = rh->status, .rh = rh}) < 0) {
        exch_attempt_failed(x, EXCH_FAIL_PROTOCOL, 0, "response head too large");
        return false;
    }
    exch_attempt_done(x);
    x->status = rh->status;
    x->flags |= X_F_RESP_STARTED;
    exch_enter(x, EXCH_PH_STREAM);
    return true;
}

static void exch_pump_response(struct exch *x)
{
    struct upconn *u = x->u;
    enum h1_event ev;
    bool head_unsent; /* the head was queued in this pass, not yet handed to the client */

again:
    ev = H1_EV_MORE;
    head_unsent = false;
    if (u == NULL || (x->flags & (X_F_DOWN_WRITING | X_F_RESP_PARSED)))
        goto check_end;
    if (u->buf == NULL) {
        upconn_read(u, true); /* nothing from the function yet */
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
            head_unsent = (x->flags & X_F_RESP_STARTED) != 0;
            continue;
        }
        if (ev == H1_EV_DONE && (x->flags & X_F_INTERIM)) {
            x->flags &= ~X_F_INTERIM;
            h1_parser_next(&x->resp);
            /* Nothing of the next head was fed yet: drop the 1xx one, so
             * that any number of them never fills the buffer. */
            memmove(u->buf, u->buf + u->parsed, u->len - u->parsed);
            u->len -= u->parsed;
            u->parsed = 0;
            continue;
        }
        break;
    }
    x->resp.out = NULL;
    if (ev == H1_EV_ERROR) {
        if (head_unsent) {
            /* The body's framing failed in the head's read: nothing of the
             * answer left, so the client still gets a clean 502. */
            x->flags &= ~X_F_RESP_STARTED;
            h1_out_reset(&x->resp_out);
        }
        exch_attempt_failed(x, EXCH_FAIL_PROTOCOL, 0, "malformed response from the function");
        return;
    }
    if (ev == H1_EV_DONE) {
        x->flags |= X_F_RESP_PARSED;
        exch_admit_done(x); /* the function is done with it: the slot is free */
        if (u->parsed != u->len && !(x->flags & X_F_UP_BROKEN)) {
            x->flags |= X_F_UP_BROKEN; /* more bytes than the response said */
            exch_count_uperr(x, UPERR_PROTOCOL);
        }
    }
    if (ev == H1_EV_MORE && !(x->flags & X_F_RESP_STARTED) && u->len == WORKER_BUF_SIZE) {
        exch_attempt_failed(x, EXCH_FAIL_PROTOCOL, 0, "response head too large");
        return;
    }
    if (x->resp_out.n > 0) {
        int rc = exch_send(x, true);
        if (rc < 0) {
            x->cl->ops->abort(x);
            return;
        }
        if (rc == 0) { /* in flight, pointing into u->buf: no reads into it meanwhile */
            if (!(x->flags & X_F_RESP_PARSED))
                upconn_read(u, false);
            return;
        }
        exch_response_written(x); /* all sent at once: reads go on */
        goto again;
    }
    if (!(x->flags & X_F_RESP_PARSED)) {
        /* A head still being collected is spans into u->buf: the bytes
         * stay put until it is whole (it must fit, see above). */
        if (u->parsed == u->len && x->resp.head_done)
            u->parsed = u->len = 0;
        upconn_read(u, true);
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

static void on_up_data(void *owner, ssize_t nread)
{
    struct exch *x = owner;

    if (x->flags & X_F_RESP_PARSED) {
        /* Bytes or a close after a complete response spoil the connection,
         * not the exchange; bytes are the function's protocol error. */
        if (nread > 0 && !(x->flags & X_F_UP_BROKEN))
            exch_count_uperr(x, UPERR_PROTOCOL);
        x->flags |= X_F_UP_BROKEN;
        upconn_read(x->u, false);
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
    if (nread == UV_EOF && (x->flags & X_F_RESP_STARTED) && h1_needs_eof(&x->resp) &&
        !(x->flags & X_F_DOWN_WRITING) && x->u->parsed == x->u->len) {
        /* A body delimited by close ends here: not a failure. */
        h1_out_reset(&x->resp_out);
        x->resp.out = &x->resp_out;
        enum h1_event ev = h1_finish(&x->resp);
        x->resp.out = NULL;
        x->flags |= X_F_UP_BROKEN;
        if (ev == H1_EV_DONE) {
            x->flags |= X_F_RESP_PARSED;
            exch_admit_done(x);
            if (x->resp_out.n > 0) {
                if (exch_send(x, false) < 0)
                    x->cl->ops->abort(x);
                return;
            }
            exch_pump_response(x);
            return;
        }
    }
    exch_attempt_failed(x, EXCH_FAIL_RESET, (int)nread,
                        "the function closed the connection without a complete response");
}

/* --- deadlines ------------------------------------------------------------------ */

/* The request's or the attempt's deadline passed: true when that was it
 * (and the failure is handled). */
static bool exch_past_deadline(struct exch *x)
{
    uint64_t now = worker_now_ms(x->cl->w);

    if (x->deadline != 0 && now >= x->deadline) {
        exch_attempt_failed(x, EXCH_FAIL_DEADLINE, UV_ETIMEDOUT, NULL);
        return true;
    }
    if (x->try_deadline != 0 && now >= x->try_deadline) {
        exch_attempt_failed(x, EXCH_FAIL_PER_TRY_TIMEOUT, UV_ETIMEDOUT, NULL);
        return true;
    }
    return false;
}

void exch_on_deadline(struct exch *x)
{
    log_debug("request %s: deadline of phase %s passed", x->request_id, exch_phase_name(x->phase));
    switch (x->phase) {
    case EXCH_PH_HEAD:
        exch_refuse_head(x, 408, "request_timeout", "request head not received in time");
        return;
    case EXCH_PH_RESOLVE:
        fwd_resolve_timeout(x);
        return;
    case EXCH_PH_CONNECT:
        if (!exch_past_deadline(x))
            exch_attempt_failed(x, EXCH_FAIL_CONNECT_TIMEOUT, UV_ETIMEDOUT, NULL);
        return;
    case EXCH_PH_BACKOFF:
        exch_connect(x);
        return;
    case EXCH_PH_QUEUE:
        exch_queue_timeout(x);
        return;
    case EXCH_PH_TUNNEL:
        exch_count_timeout(x, TMO_IDLE);
        exch_abort(x);
        return;
    case EXCH_PH_BODY:
        exch_count_timeout(x, TMO_BODY);
        x->flags |= X_F_UP_BROKEN;
        exch_reply(x, 408, "request_timeout", "request body not received in time");
        return;
    case EXCH_PH_SEND:
    case EXCH_PH_WAIT_HEAD:
        if (exch_past_deadline(x))
            return;
        __attribute__((fallthrough)); /* the function made no progress */
    case EXCH_PH_STREAM:
        exch_attempt_failed(x, EXCH_FAIL_TIMEOUT, UV_ETIMEDOUT,
                            "the function did not answer in time");
        return;
    default: /* fnproxy's own answer is not being read */
        x->cl->ops->abort(x);
        return;
    }
}
