/*
 * xprt.h - the transport under an HTTP connection: plain TCP (or a unix
 * socket), or TLS over it through the sans-I/O engine in tls.h.
 *
 * It mirrors libuv's stream calls (read start/stop with an alloc and a read
 * callback, write with a completion, shutdown) so that the HTTP code is the
 * same over both. Plain streams cost one indirect call; TLS state is
 * allocated only for TLS connections.
 *
 * Lifetime: the owner owns the uv stream and closes it; it calls
 * xprt_release() from the stream's close callback, after which no xprt
 * callback runs.
 */
#ifndef FNPROXY_XPRT_H
#define FNPROXY_XPRT_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "tls.h"

struct xprt;
struct xprt_tls;

/* Where the next plaintext goes; a zero-length buffer means "full" and is
 * answered with a read callback of UV_ENOBUFS. */
typedef void xprt_alloc_fn(struct xprt *t, uv_buf_t *buf);
/* nread > 0 bytes were put in the buffer; < 0: UV_EOF, a socket error,
 * UV_EPROTO (TLS failure: see xprt_tls_conn) or UV_ENOBUFS. */
typedef void xprt_read_fn(struct xprt *t, ssize_t nread);
typedef void xprt_write_fn(struct xprt *t, int status);
/* The TLS handshake finished (0) or failed (<0). */
typedef void xprt_handshake_fn(struct xprt *t, int status);

/* Per-loop state: TLS connections whose engine holds plaintext that the
 * owner was not ready for are served from an idle handle, not recursively. */
struct xprt_loop {
    uv_idle_t idle;
    struct xprt_tls *ready; /* list of TLS transports to drain */
    struct xprt *written;   /* plain writes that completed at once */
    void *(*buf_get)(void *ctx);
    void (*buf_put)(void *ctx, void *buf);
    void *buf_ctx;
    size_t buf_size;
};

struct xprt {
    uv_stream_t *stream;
    void *owner;
    struct xprt_loop *lp;
    struct xprt_tls *tls; /* NULL: plain */
    xprt_alloc_fn *on_alloc;
    xprt_read_fn *on_read;
    xprt_write_fn *on_write;
    struct xprt *next_written; /* on the loop's list of completed writes */
    bool write_queued;
    bool reading; /* the owner wants data */
};

int xprt_loop_init(struct xprt_loop *lp, uv_loop_t *loop);
void xprt_loop_close(struct xprt_loop *lp);

void xprt_init(struct xprt *t, struct xprt_loop *lp, uv_stream_t *stream, void *owner);

/* Switches t to TLS over ctx (server when server_name is NULL) and starts
 * the handshake: the client sends its hello at once, the server reads. */
int xprt_tls_start(struct xprt *t, struct tls_ctx *ctx, const char *server_name,
                   xprt_handshake_fn *done);

/* The TLS engine, for identity, version and failure reasons (NULL: plain). */
struct tls_conn *xprt_tls_conn(const struct xprt *t);

int xprt_read_start(struct xprt *t, xprt_alloc_fn *alloc, xprt_read_fn *read);
void xprt_read_stop(struct xprt *t);

/* Sends bufs (which must stay valid until done runs); one write at a time.
 * req is used for plain streams. */
int xprt_write(struct xprt *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
               xprt_write_fn *done);

/* The same, except that a write that all went at once (for TLS: encrypted
 * and all its ciphertext sent) returns 1 and done is not called: the caller
 * carries on in the same callback. That saves a loop iteration per write
 * and, for a body streamed from a function, stopping and restarting reads
 * on it (epoll_ctl calls). */
int xprt_write_now(struct xprt *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                   xprt_write_fn *done);

/* Just before the owner closes the stream: a TLS connection that is still
 * sound and has nothing else waiting to be sent says close_notify (RFC 8446
 * §6.1), as much of it as the socket takes at once (24 bytes: in practice
 * all of it; a peer whose buffer is full gets an abrupt close, as without
 * it). A plain stream needs nothing. */
void xprt_close_notify(struct xprt *t);

/* Shuts down writing (after a TLS close_notify). */
int xprt_shutdown(struct xprt *t, uv_shutdown_t *req, uv_shutdown_cb done);

/* From the stream's close callback: frees TLS state. */
void xprt_release(struct xprt *t);

#endif
