/*
 * conn.h - a downstream HTTP/1.1 connection and the exchange (one request
 * and its response) it is working on.
 *
 * A connection is small and long-lived; an exchange is large (two parsers,
 * two heads, iovecs) and lives only while a request is in flight, taken from
 * a per-worker free list. An idle keep-alive connection holds no exchange and
 * no buffer.
 */
#ifndef FNPROXY_CONN_H
#define FNPROXY_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "http1.h"
#include "router.h"
#include "worker.h"
#include "xprt.h"

enum conn_state {
    CONN_ST_HANDSHAKE = 0, /* TLS handshake in progress */
    CONN_ST_IDLE,          /* between requests */
    CONN_ST_HEAD,          /* a request head is arriving */
    CONN_ST_EXCHANGE,      /* the request is being proxied or answered */
    CONN_ST_LINGER,        /* answered and shut down for writing; discarding input */
    CONN_ST_CLOSING,
};

enum conn_flags {
    CONN_F_READING = 1u << 0,
    CONN_F_CLOSE_AFTER = 1u << 1, /* close once the current response is written */
    CONN_F_SCRATCH = 1u << 2,     /* the read in progress lands in the worker's scratch */
    CONN_F_UNREAD = 1u << 3,      /* the client may still be sending: linger on close */
};

struct conn {
    struct conn *next, *prev; /* the worker's connections */
    struct worker *w;
    struct wlistener *l;
    uv_tcp_t tcp;
    struct xprt xp;     /* plain or TLS, over tcp */
    uv_timer_t timer;   /* the one deadline this connection waits on */
    uint64_t deadline;  /* loop time it expires at */
    uint64_t timer_due; /* loop time the timer is set for: <= deadline */
    uv_shutdown_t sreq; /* lingering close */
    char *buf;          /* request bytes; NULL while idle */
    uint32_t cap, len;  /* buf size, bytes in buf */
    uint32_t parsed;    /* bytes of buf taken by the parser */
    uint32_t discarded; /* bytes thrown away while lingering */
    struct exch *x;     /* the exchange in progress */
    uint8_t state;
    unsigned flags;
    int pending_closes;
    char client_ip[INET6_ADDRSTRLEN];
    char *client_id; /* verified client certificate identity (mTLS), or NULL */
};

enum exch_flags {
    X_F_HEAD_SENT = 1u << 0,    /* request head queued to the function */
    X_F_REQ_PARSED = 1u << 1,   /* the whole request was read */
    X_F_REQ_SENT = 1u << 2,     /* ... and written to the function */
    X_F_UP_WRITING = 1u << 3,   /* a write to the function is pending */
    X_F_DOWN_WRITING = 1u << 4, /* a write to the client is pending */
    X_F_RESP_STARTED = 1u << 5, /* response head queued to the client */
    X_F_RESP_PARSED = 1u << 6,  /* the whole response was read */
    X_F_UP_BROKEN = 1u << 7,    /* the upstream connection must not be reused */
    X_F_HEAD_METHOD = 1u << 8,
    X_F_LOCAL = 1u << 9,      /* fnproxy answered itself */
    X_F_GOT_BYTES = 1u << 10, /* the function sent something in this attempt */
    X_F_INTERIM = 1u << 11,   /* the response being parsed is a 1xx */
    X_F_HAS_BODY = 1u << 12,  /* the request has a body */
    X_F_CONTINUE = 1u << 13,  /* 100 Continue owed to the client */
    X_F_FRESH = 1u << 14,     /* the next attempt takes a new connection, not a pooled one */
    X_F_STALE_RETRIED = 1u << 15, /* the one retry after a stale pooled connection was made */
};

struct exch {
    struct exch *next_free;
    struct conn *c;
    struct wsnap *ws;
    const struct cfg_function *fn;
    const struct cfg_route *route;
    struct fn_state *fs;
    struct route_stats *stats;
    struct endpoint *ep;
    struct upconn *u;
    /* Writes to the client belong to the exchange, not the connection, so
     * that an idle connection stays small. */
    uv_write_t wreq;   /* bytes to the client */
    uv_buf_t cont_buf; /* "100 Continue" */
    char *req_head;    /* the head sent upstream */
    uint32_t req_head_len;
    uint32_t req_head_cap;
    char *resp_head; /* the head sent downstream (pooled buffer) */
    uint32_t resp_head_len;
    uint64_t tried; /* endpoints tried, by index (at most CFG_MAX_ENDPOINTS) */
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
    uint64_t req_bytes;     /* request head bytes */
    bool connected;         /* a new connection was tried */
    bool sent;              /* a request head was sent */
    size_t fn_idx;          /* fn's index in the config */
    char up_error[160];     /* why the last TLS connection to the function failed */
    const char *reply_code; /* an answer waiting for the write in flight */
    const char *reply_msg;
    /* Large members last: exch_new clears everything before them. */
    struct h1_parser req;
    struct h1_parser resp;
    struct h1_out req_out;
    struct h1_out resp_out;
    char request_id[129];
};

/* Takes an accepted socket and its peer's address; closes it on failure. */
void conn_accept(struct wlistener *l, int fd, const struct sockaddr *peer);

/* Draining: idle connections close now, busy ones after their response. */
void conn_drain(struct conn *c);

/* Closes now, abandoning any request in flight. */
void conn_close(struct conn *c);

void exch_free_all(struct worker *w);

#endif
