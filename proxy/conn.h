/*
 * conn.h - a downstream HTTP/1.1 connection: the client side of the
 * exchanges (exch.h) it hands its requests to, one at a time.
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

#include "capture.h"
#include "exch.h"
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
    CONN_F_RESET = 1u << 4,       /* close with a reset: drop what waits unsent */
};

struct conn {
    struct conn *next, *prev; /* the worker's connections */
    struct worker *w;
    struct wlistener *l;
    uv_tcp_t tcp;
    struct xprt xp;        /* plain or TLS, over tcp */
    uv_timer_t timer;      /* the one deadline this connection waits on */
    uint64_t deadline;     /* loop time it expires at */
    uint64_t timer_due;    /* loop time the timer is set for: <= deadline */
    uv_shutdown_t sreq;    /* lingering close */
    char *buf;             /* request bytes; NULL while idle */
    uint32_t cap, len;     /* buf size, bytes in buf */
    uint32_t parsed;       /* bytes of buf taken by the parser */
    uint32_t discarded;    /* bytes thrown away while lingering */
    struct exch *x;        /* the exchange in progress */
    struct exch_client cl; /* what the exchange sees of this connection */
    uint8_t state;
    unsigned flags;
    int pending_closes;
    char client_ip[INET6_ADDRSTRLEN];
    char *client_id;      /* verified client certificate identity (mTLS), or NULL */
    struct capture *capt; /* on a capture listener (capture.h); else NULL */
};

/* Takes an accepted socket and its peer's address; closes it on failure. */
void conn_accept(struct wlistener *l, int fd, const struct sockaddr *peer);

/* Draining: idle connections close now, busy ones after their response. */
void conn_drain(struct conn *c);

/* The process was frozen for lost_ms: its deadline (and its exchange's)
 * move on by that much instead of all passing at once. */
void conn_thaw(struct conn *c, uint64_t lost_ms);

/* Closes now, abandoning any request in flight. */
void conn_close(struct conn *c);

#endif
