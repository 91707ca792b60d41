/*
 * pool.h - upstream endpoints and the per-worker pool of connections to
 * them.
 *
 * An endpoint is one address as one worker sees it (address, port, and the
 * TLS name and CA it is reached with): its load and its idle connections.
 * Endpoints are made on demand, by the config's functions or at run time
 * (an egress destination), shared by everyone who names the same key, and
 * reference-counted: the config snapshots that list one, and every
 * connection to it, hold a reference; the last endpoint_put frees it, so an
 * endpoint nobody uses any more is gone once its idle connections are.
 *
 * A connection (struct upconn) either serves one owner or sits idle in its
 * endpoint's pool, where it is still read so that a close by the peer is
 * noticed before it is handed out again. The pool does not know its owners
 * (h2o's socket pool): pool_get takes a small callback interface and a
 * context, so an HTTP exchange and a byte tunnel can both hold one.
 */
#ifndef FNPROXY_POOL_H
#define FNPROXY_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "outlier.h"
#include "xprt.h"

struct upconn;

/* What a connection tells its owner. status 0 is success; on connected,
 * UV_EPROTO means the TLS handshake failed (upconn_tls_error says why). On
 * data, nread > 0 bytes were appended to u->buf; < 0 is UV_EOF, an error or
 * UV_ENOBUFS. */
struct pool_owner_ops {
    void (*connected)(void *owner, int status);
    void (*data)(void *owner, ssize_t nread);
    void (*written)(void *owner, int status);
};

struct endpoint {
    struct endpoint *next, *prev; /* the pool's registry */
    struct pool *pool;
    struct cfg_addr addr;
    char *tls_name;               /* TLS to it: the name sent and verified; NULL: plain */
    char *tls_ca;                 /* ... and the CA file it is verified with, part of the key */
    unsigned refs;                /* snapshots and owners that name it + its connections */
    unsigned outstanding;         /* owners using a connection to it, for least-outstanding */
    unsigned pending;             /* ... of which still connecting (circuit_breaker.max_pending) */
    struct outlier_state outlier; /* failures in a row, ejection (outlier.h) */
    uint64_t last_error_log_ms;   /* failures are logged at most once a second */
    struct upconn *idle;          /* pooled connections, most recently used first */
    unsigned n_idle;
    unsigned n_busy;              /* connections with an owner */
    unsigned busy_peak;           /* most n_busy since the last sweep, and ... */
    unsigned busy_peak_prev;      /* ... in the sweep period before: the idle cap */
};

enum upconn_flags {
    UP_F_CONNECTED = 1u << 0,
    UP_F_REUSED = 1u << 1, /* came from the pool */
    UP_F_CLOSING = 1u << 2,
    UP_F_WRITING = 1u << 3,
    UP_F_READING = 1u << 4,
    UP_F_SHUT = 1u << 5, /* shut down for writing: never pooled again */
};

struct upconn {
    struct upconn *next_idle, *prev_idle;
    struct pool *pool;
    struct endpoint *ep; /* referenced */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    struct xprt xp;      /* plain or TLS */
    struct tls_ctx *tls; /* for the handshake after connect; NULL: plain */
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    const struct pool_owner_ops *ops;
    void *owner;     /* NULL while pooled */
    char *buf;       /* read buffer (xprt_loop's pooled size), held only while owned */
    uint32_t len;    /* bytes in buf */
    uint32_t parsed; /* bytes of buf the owner has taken */
    uint64_t idle_since_ms;
    unsigned flags; /* UP_F_* */
};

struct pool {
    uv_loop_t *loop;
    struct xprt_loop *xlp; /* transports; its buffers are the connections' read buffers */
    char *scratch;         /* xlp->buf_size bytes where idle connections' reads land */
    struct endpoint *endpoints;
    unsigned n_endpoints;
    unsigned n_conns; /* open or closing */
    bool draining;    /* released connections close instead of pooling */
};

void pool_init(struct pool *p, uv_loop_t *loop, struct xprt_loop *xlp, char *scratch);

/* The endpoint for this key, made if there is none; one more reference.
 * NULL when out of memory. */
struct endpoint *endpoint_get(struct pool *p, const struct cfg_addr *addr, const char *tls_name,
                              const char *tls_ca);
void endpoint_put(struct endpoint *ep);

/* An idle pooled connection to ep (unless fresh), ready at once (its
 * UP_F_CONNECTED is set and no callback follows), or a new one being
 * connected, with TLS over tls when ep has a tls_name, that ends in
 * ops->connected. NULL when a socket could not even be made (*err says
 * why). */
struct upconn *pool_get(struct pool *p, struct endpoint *ep, struct tls_ctx *tls, bool fresh,
                        const struct pool_owner_ops *ops, void *owner, int *err);

/* The owner is done with u: back to the pool when reusable (connected,
 * nothing unread or being written, not draining) and the endpoint holds
 * fewer idle connections than it had in use at once recently (its peak
 * since the sweep before last), else closed. That cap keeps every
 * connection a steady load needs, and no more: connections made while
 * idle ones were there (a fresh one after a stale one) cannot pile up. */
void pool_put(struct upconn *u, bool reusable);

/* Closes pooled connections idle for idle_ms or more (0: all), and starts
 * a new period of the idle cap's peak. */
void pool_sweep(struct pool *p, uint64_t idle_ms);

/* Sends bufs; ops->written follows, except that with now a write that all
 * went at once returns 1 and nothing follows. */
int upconn_write(struct upconn *u, const uv_buf_t *bufs, unsigned n, bool now);

/* No more bytes to the peer once the write in flight is done (a tunnel
 * passing on a half-close). 0 or a libuv error. */
int upconn_shutdown(struct upconn *u);

/* Starts or stops reading (backpressure). */
void upconn_read(struct upconn *u, bool on);

/* Why the TLS handshake failed, after ops->connected got UV_EPROTO. */
const char *upconn_tls_error(const struct upconn *u);

#endif
