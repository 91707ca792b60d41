/*
 * exch.h - one exchange: a request and its response, from the request head
 * to the last byte of the answer.
 *
 * An exchange moves through explicit phases. Each phase has one deadline,
 * armed on its client side's one timer whenever the exchange makes progress
 * (exch_phase_timeout), and what a timeout in that phase means follows from
 * the phase alone (exch_on_deadline):
 *
 *     HEAD      the request head is arriving          header_timeout, 408
 *     ROUTE     matched, checked against policy       (no wait)
 *     QUEUE     waiting for a slot of the function    queue.timeout, 503 overloaded
 *               (max_concurrency) or a ready endpoint
 *     RESOLVE   egress: the destination's name        dns.timeout, 502 dns_failed
 *     CONNECT   a connection to an endpoint is made   connect_timeout, a retry
 *     BODY      waiting for the client's body         idle_timeout, 408
 *     SEND      waiting for the function to take it   idle_timeout, 504
 *     WAIT_HEAD the request is sent; no answer yet    timeout, 504
 *     BACKOFF   waiting before a retry                the backoff, then CONNECT
 *     STREAM    the answer's head went out; its body  idle_timeout, close
 *     TUNNEL    egress CONNECT: bytes both ways       tunnel_idle_timeout, close
 *     REPLY     fnproxy's own answer is written       header_timeout, close
 *     DONE
 *
 * CONNECT, SEND and WAIT_HEAD are also bounded by the request's deadline
 * (timeout, from when the request was routed: the queue, every attempt and
 * backoff spend from it; 504) and the attempt's (per_try_timeout: a retry).
 * QUEUE is bounded by queue.timeout and the request's deadline; a slot
 * freed on any worker ends it (admit.h). An exchange on an egress
 * listener (a function's forward
 * proxy) is routed by forward.c instead of the router: its target and
 * endpoints come from the egress decision, the rest is the same.
 *
 * Every failed attempt (a refused or slow connect, a TLS failure, a reset,
 * a bad or missing answer, a per-try timeout) goes through one function,
 * exch_attempt_failed, which counts it and decides what follows
 * (exch_decide): a retry if the route's retry policy allows it
 * (policy/retry.h), the same request once more on a new connection (a
 * stale pooled one), an answer (502, 504), or closing the client when its
 * answer had already started. A response whose status retries.on names
 * is retried the same way before anything of it reaches the client.
 *
 * The exchange reaches its client side only through struct exch_client_ops
 * (send the head, send body bytes, pause and resume reading, end), which an
 * HTTP/1.1 connection implements (conn.c) and an HTTP/2 stream can too. It
 * reaches the function through the pool's owner interface (pool.h).
 */
#ifndef FNPROXY_EXCH_H
#define FNPROXY_EXCH_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "admit.h"
#include "egress.h"
#include "http1.h"
#include "metrics.h"
#include "pool.h"
#include "resolve.h"
#include "trace.h"
#include "worker.h"

enum exch_phase {
    EXCH_PH_HEAD = 0,
    EXCH_PH_ROUTE,
    EXCH_PH_QUEUE,
    EXCH_PH_RESOLVE,
    EXCH_PH_CONNECT,
    EXCH_PH_BODY,
    EXCH_PH_SEND,
    EXCH_PH_WAIT_HEAD,
    EXCH_PH_BACKOFF,
    EXCH_PH_STREAM,
    EXCH_PH_TUNNEL,
    EXCH_PH_REPLY,
    EXCH_PH_DONE,
    EXCH_PH__N
};

/* The limits a phase's deadline comes from: the listener's and the
 * route's (before a route is chosen, the listener's only). */
struct exch_timeouts {
    uint64_t header_ms;  /* listener header_timeout */
    uint64_t connect_ms; /* route (or egress rule) connect_timeout */
    uint64_t timeout_ms; /* route (or egress rule) timeout: the response head */
    uint64_t idle_ms;    /* route (or egress rule) idle_timeout: bodies not moving */
    uint64_t dns_ms;     /* dns.timeout */
    uint64_t tunnel_ms;  /* egress tunnel_idle_timeout */
};

/* How long an exchange may stay in phase ph without progress, and the
 * fnproxy_timeouts_total kind a timeout there counts as (TMO__N: none, the
 * client is just not reading fnproxy's own answer). */
uint64_t exch_phase_timeout(enum exch_phase ph, const struct exch_timeouts *t,
                            enum metrics_timeout *kind);

const char *exch_phase_name(enum exch_phase ph);

/* Why an attempt failed. */
enum exch_failure {
    EXCH_FAIL_REFUSED = 0,     /* the connect failed */
    EXCH_FAIL_CONNECT_TIMEOUT, /* ... or did not finish in time */
    EXCH_FAIL_TLS,             /* the TLS handshake with the function failed */
    EXCH_FAIL_RESET,           /* the connection broke before the answer was whole */
    EXCH_FAIL_PROTOCOL,        /* the answer was malformed, too large or cut short */
    EXCH_FAIL_TIMEOUT,         /* the function made no progress within idle_timeout */
    EXCH_FAIL_PER_TRY_TIMEOUT, /* no response head within per_try_timeout */
    EXCH_FAIL_DEADLINE,        /* no response head within timeout: no more attempts */
    EXCH_FAIL__N
};

/* What happens after a failed attempt. */
enum exch_next {
    EXCH_NEXT_RETRY = 0, /* another attempt, if the retry policy allows it */
    EXCH_NEXT_FRESH,     /* the same request once more, on a new connection */
    EXCH_NEXT_REPLY,     /* answer the client (502 or 504) */
    EXCH_NEXT_ABORT,     /* the answer had started: close the client */
};

/* What decides it, besides the failure. */
struct exch_attempt {
    bool reused;        /* the connection came from the pool */
    bool got_bytes;     /* the function sent something in this attempt */
    bool has_body;      /* the request has a body (not replayable yet) */
    bool stale_retried; /* the one retry on a new connection was made */
    bool idempotent;    /* idempotent method, or Idempotency-Key */
    bool resp_started;  /* the answer's head went to the client */
};

/* The decision, as a pure function (unit-tested). A pooled connection that
 * breaks before the function said anything may have been closed by the
 * function while idle: the request, if it has no body and may be sent
 * twice (the function may have got it before the connection broke), is
 * made once more on a new connection. */
enum exch_next exch_decide(enum exch_failure f, int err, const struct exch_attempt *a);

/* The head of the answer, for the client side to frame: the function's
 * (rh), or fnproxy's own (rh NULL: status, x-fnproxy-error code, and a body
 * of body_len bytes). */
struct exch_head {
    int status;
    const struct h1_head *rh;
    const char *error_code;
    size_t body_len;
    const char *headers; /* fnproxy's own answer: more header lines, each ending CRLF; or NULL */
};

struct exch;

/* The client side of an exchange. Sends are one at a time; a send that
 * returns 0 completes with exch_client_sent(). */
struct exch_client_ops {
    /* Frames the head into x->resp_out (and sets resp_out.chunked for the
     * body); it goes out with the next send. 0, or <0 when it is too large. */
    int (*send_head)(struct exch *x, const struct exch_head *h);
    /* Sends x->resp_out: head and body bytes. 0 in flight; 1 (only with now)
     * all went at once; <0 failed. */
    int (*send)(struct exch *x, bool now);
    /* Tells the client to send its body (HTTP/1.1: 100 Continue). */
    int (*send_continue)(struct exch *x);
    /* Pauses or resumes reading the request. */
    void (*read)(struct exch *x, bool on);
    /* Request bytes read and not yet taken, and taking n of them. */
    void (*input)(struct exch *x, const char **p, size_t *n);
    void (*consume)(struct exch *x, size_t n);
    /* Nothing the exchange sends points into the bytes it took any more:
     * the client side may reuse their room. */
    void (*reclaim)(struct exch *x);
    /* The one deadline: ms from now. */
    void (*arm)(struct exch *x, uint64_t ms);
    /* The exchange is over (X_F_CLOSE: the client side must close); the
     * client side frees it. */
    void (*end)(struct exch *x);
    /* Closes the client side now (an answer cut short). */
    void (*abort)(struct exch *x);
    /* Tells the client nothing more will be sent, once the send in flight
     * is done (a tunnel whose destination closed its side). <0 failed. */
    int (*shutdown)(struct exch *x);
};

/* Who the client is, for routing, forwarding headers and logs. */
struct exch_client {
    const struct exch_client_ops *ops;
    struct worker *w;
    const size_t *listener; /* index in the current snapshot's listeners (a reload moves it) */
    const char *ip;         /* the client's address */
    const char *id;         /* its verified mTLS identity, or NULL */
    bool tls;               /* it came over TLS ("https") */
    uint8_t capture;        /* enum capture_kind: on a capture listener, what it speaks */
    uint16_t orig_port;     /* ... and the port it was headed for */
};

enum exch_flags {
    X_F_HEAD_SENT = 1u << 0,    /* request head queued to the function */
    X_F_REQ_PARSED = 1u << 1,   /* the whole request was read */
    X_F_REQ_SENT = 1u << 2,     /* ... and written to the function */
    X_F_UP_WRITING = 1u << 3,   /* a write to the function is pending */
    X_F_DOWN_WRITING = 1u << 4, /* a send to the client is pending */
    X_F_RESP_STARTED = 1u << 5, /* the answer's head is queued for the client */
    X_F_RESP_PARSED = 1u << 6,  /* the whole response was read */
    X_F_UP_BROKEN = 1u << 7,    /* the upstream connection must not be reused */
    X_F_HEAD_METHOD = 1u << 8,
    X_F_LOCAL = 1u << 9,          /* fnproxy answered itself */
    X_F_GOT_BYTES = 1u << 10,     /* the function sent something in this attempt */
    X_F_INTERIM = 1u << 11,       /* the response being parsed is a 1xx */
    X_F_HAS_BODY = 1u << 12,      /* the request has a body */
    X_F_CONTINUE = 1u << 13,      /* 100 Continue owed to the client */
    X_F_FRESH = 1u << 14,         /* the next attempt takes a new connection */
    X_F_STALE_RETRIED = 1u << 15, /* the one retry on a new connection was made */
    X_F_CLOSE = 1u << 16,         /* the client side closes after this exchange */
    X_F_EGRESS = 1u << 17,        /* on an egress listener: forward.c decides and dials */
    X_F_TUNNEL = 1u << 18,        /* a CONNECT tunnel */
    X_F_EP_OWNED = 1u << 19,      /* x->ep is the exchange's reference (egress) */
    X_F_RESOLVING = 1u << 20,     /* x->rq is in flight */
    X_F_REPLAY_LOST = 1u << 21,   /* body bytes were sent that the replay buffer does not hold */
    X_F_IDEMPOTENT = 1u << 22,    /* idempotent method, or Idempotency-Key */
    X_F_ADMITTED = 1u << 23,      /* holds a slot of its function (admit.h) */
    X_F_QUEUED = 1u << 24,        /* waits for one, in the worker's queued list */
    X_F_RAW = 1u << 25,           /* capture of TLS or opaque bytes: no HTTP answer, a close */
    X_F_SAME_EP = 1u << 26,       /* the next attempt goes to the last one's endpoint */
};

struct exch {
    struct exch *next_free;
    struct exch_client *cl;
    enum exch_phase phase;
    struct wsnap *ws;
    const struct cfg_function *fn;
    const struct cfg_route *route;
    struct fn_state *fs;
    struct route_stats *stats;
    struct endpoint *ep;
    struct upconn *u;
    uv_write_t wreq;   /* bytes to the client (the client side's send) */
    uv_buf_t cont_buf; /* "100 Continue" */
    char *req_head;    /* the head sent upstream */
    uint32_t req_head_len;
    uint32_t req_head_cap;
    char *resp_head; /* the head sent downstream (pooled buffer) */
    uint32_t resp_head_len;
    uint32_t req_bytes; /* request head bytes */
    uint64_t tried;     /* endpoints tried, by index (at most CFG_MAX_ENDPOINTS) */
    unsigned attempts;
    unsigned flags; /* X_F_* */
    int status;     /* sent to the client */
    /* Timing and sizes, for metrics and the access log (metrics.h). */
    uint64_t t0;            /* request head parsed, metrics_now_us() */
    uint64_t ts_ms;         /* the same, wall clock */
    uint64_t t_attempt;     /* this attempt started */
    uint64_t t_connect;     /* a new connection was started; 0 when none is pending */
    uint64_t t_sent;        /* the request head was handed to the function */
    uint64_t connect_us;    /* summed over new connections */
    uint64_t upstream_us;   /* summed over attempts that sent a head */
    uint64_t bytes_out;     /* written to the client */
    bool connected;         /* a new connection was tried */
    bool sent;              /* a request head was sent */
    size_t fn_idx;          /* fn's index in the config */
    char up_error[160];     /* why the last TLS connection to the function failed */
    const char *reply_code; /* an answer waiting for the send in flight */
    const char *reply_msg;
    const struct cfg_timeouts *tmo;     /* the route's or egress rule's; NULL before one */
    const struct retry_policy *retries; /* ... and its retry policy */
    const struct cfg_fault *fault;      /* ... and its fault injection (NULL: none) */
    uint64_t deadline;                  /* loop ms: the response head by then (0: none yet) */
    uint64_t try_deadline;              /* loop ms: this attempt's (0: none) */
    uint64_t wake_at;                   /* loop ms: the end of a BACKOFF wait */
    uint64_t body_since, body_wait_ms;  /* loop ms: waiting on the client's body (BODY) */
    uint64_t down_since, down_wait_ms;  /* ... on the client taking the answer (a send) */
    unsigned n_retries;                 /* retries made */
    uint8_t ep_idx;                     /* the endpoint (or address) of the last attempt */
    char *replay;                       /* body bytes as sent, for a retry */
    uint32_t replay_len, replay_cap;
    /* Egress (forward.c). */
    const struct cfg_egress_rule *rule; /* the rule that let it through; NULL: none */
    uint64_t t_resolve;                 /* resolving started */
    uint64_t dns_us;
    bool resolved;          /* a name was resolved: the dns phase is observed */
    uint8_t verdict;        /* enum fwd_verdict */
    uint8_t deny;           /* enum metrics_denial, with a deny or would-deny verdict */
    uint8_t tunnel;         /* TUN_* bits: which sides of a tunnel are done */
    uint8_t last_fail;      /* enum exch_failure of the last failed attempt */
    uint32_t tunnel_unsent; /* client bytes handed to the destination, not yet written */
    /* Admission (admit.h). */
    struct admit_waiter wt;
    struct exch *q_next, *q_prev; /* the worker's queued exchanges */
    uint64_t t_queued;            /* it started waiting, metrics_now_us() */
    uint64_t queue_us;            /* how long it waited */
    struct trace_ctx trace;       /* W3C trace context: kept, started or none (trace.h) */
    /* Large members last: exch_new clears everything before them. */
    struct h1_parser req;
    struct h1_parser resp;
    struct h1_out req_out;
    struct h1_out resp_out;
    char request_id[129];
    struct egress_target target;   /* egress: the canonical destination */
    struct resolve_req rq;         /* ... its name being resolved */
    struct resolve_addrs dial;     /* ... the addresses that passed, tried in order */
    struct egress_decision policy; /* ... stage 1 of the decision (egress.h) */
    /* The head's end, written anew per attempt: "traceparent: ...\r\n",
     * "x-fnproxy-timeout-ms: N\r\n", then the blank line. */
    char tail_hdr[TRACE_LINE_LEN + 48];
};

/* A new exchange for a request whose head is about to arrive (phase HEAD);
 * NULL when out of memory. The client side frees it when it ends. */
struct exch *exch_new(struct exch_client *cl);
void exch_free(struct worker *w, struct exch *x);
void exch_free_all(struct worker *w);

/* The client side parsed the head (x->req): route it and start. */
void exch_begin(struct exch *x);

/* The head could not be taken: 400 (malformed), 431 (too large) or 408
 * (late), counted and logged like any request. */
void exch_refuse_head(struct exch *x, int status, const char *code, const char *why);

/* More request bytes arrived. */
void exch_input(struct exch *x);

/* A send to the client completed. */
void exch_client_sent(struct exch *x, int status);

/* The deadline of the current phase passed. */
void exch_on_deadline(struct exch *x);

/* Some of the worker's queued exchanges were granted a slot (admit.h):
 * they go on. */
void exch_admit_granted(struct worker *w);

/* The process was frozen for lost_ms: the exchange's deadlines move on. */
void exch_thaw(struct exch *x, uint64_t lost_ms);

/* The client half-closed (sent FIN): a tunnel passes it on; other
 * exchanges answer what they have. */
void exch_client_eof(struct exch *x);

/* The client side is going away: the exchange is counted (499 when nothing
 * was answered) and lets go of its upstream connection. The client side
 * frees it once no send points into it. */
void exch_client_gone(struct exch *x);

#endif
