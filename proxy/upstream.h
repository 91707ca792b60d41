/*
 * upstream.h - connections to a function's instances and their per-worker
 * pool. An upconn either serves one exchange (x set) or sits idle in its
 * endpoint's pool, where it is still read so that a close by the function
 * is noticed before the connection is handed out again.
 */
#ifndef FNPROXY_UPSTREAM_H
#define FNPROXY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "worker.h"

enum upconn_flags {
    UP_F_CONNECTED = 1u << 0,
    UP_F_REUSED = 1u << 1, /* came from the pool */
    UP_F_CLOSING = 1u << 2,
    UP_F_WRITING = 1u << 3,
};

struct upconn {
    struct upconn *next_idle, *prev_idle;
    struct worker *w;
    struct endpoint *ep;
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
    struct exch *x;  /* the exchange it serves; NULL in the pool */
    char *buf;       /* read buffer, held only while serving */
    uint32_t len;    /* bytes in buf */
    uint32_t parsed; /* bytes of buf the response parser has taken */
    uint64_t idle_since_ms;
    unsigned flags;
};

/* An idle pooled connection to ep (unless fresh), or a new one being connected (with TLS
 * over tls when it is not NULL: ep->tls_name is sent and verified); the
 * exchange hears of it through exch_upstream_connected(). NULL when a socket
 * could not even be made (the error is in *err). */
struct upconn *upstream_get(struct worker *w, struct endpoint *ep, struct exch *x,
                            struct tls_ctx *tls, bool fresh, int *err);

/* Why the connection failed when exch_upstream_connected() got UV_EPROTO: the
 * TLS handshake's reason. */
const char *upstream_tls_error(const struct upconn *u);

/* Sends bufs; exch_upstream_written() follows, except that with now a
 * write that all went at once returns 1 and nothing follows. */
int upstream_write(struct upconn *u, const uv_buf_t *bufs, unsigned n, bool now);

/* Starts or stops reading the response (backpressure). */
void upstream_read(struct upconn *u, bool on);

/* Ends the exchange's use of u: back to the pool when reusable, else closed. */
void upstream_release(struct upconn *u, bool reusable);

/* Closes pooled connections idle longer than POOL_IDLE_MS (or all). */
void upstream_sweep(struct worker *w, bool all);

/* Callbacks into the exchange (conn.c). */
void exch_upstream_connected(struct exch *x, int status);
void exch_upstream_data(struct exch *x, ssize_t nread);
void exch_upstream_written(struct exch *x, int status);

#endif
