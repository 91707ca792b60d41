/*
 * backend.c - fnbackend, the small HTTP/1.1 server that plays "the function"
 * in integration tests, benchmarks and the `make run` demo.
 *
 * One libuv loop, one thread. Each connection owns an llhttp parser, a fixed
 * read buffer and an output buffer. Requests are answered strictly in order:
 * when a request needs an asynchronous answer (a timer, a large streamed
 * body, an echo of a large body) the parser is paused at the end of that
 * request and reading stops, so pipelined requests wait in the read buffer
 * until the answer is complete. Small answers are appended to the output
 * buffer and flushed once per read, so a pipelined burst costs one write.
 *
 * Bodies are streamed: a request body is only kept for /echo (which must
 * send it back with a Content-Length); everything else is counted and
 * dropped. Large response bodies are written from one static buffer, one
 * piece at a time, the next piece only when the previous write completed.
 *
 * Answers built here carry x-backend: NAME and x-backend-conn: SERIAL (the
 * connection's number since start), except the fixed "hello" answer, which
 * is prebuilt for speed and carries x-backend only.
 *
 * With --record FILE every byte read on any connection is appended to FILE
 * with one write() per read, so a test can check exactly what a proxy sent.
 *
 * Routes (query string ignored unless said): /echo, /status/NNN, /delay/MS,
 * /bytes/N, /chunked/N, /close-delimited/N, /sink, /close-mid, /close-now,
 * /hang, /healthz, /bad/{garbage,cl-te,dup-cl,extra,header-ctl},
 * /fail/N/WHAT/KEY...; anything else answers "hello from NAME\n".
 * tests/backend/README.md describes each one.
 *
 * Failures, for testing and benchmarking retries and ejection:
 *
 * - /fail/N/WHAT/KEY[/anything][?retry_after=S]: the first N requests whose
 *   path has this KEY get WHAT, later ones an echo of the request (as /echo)
 *   with status 200. Every answer carries x-backend-count: K, the number of
 *   requests with this KEY seen so far, this one included. WHAT is a status
 *   NNN (200..599: an echo with that status, plus Retry-After: S if the
 *   query has retry_after=S), reset (RST: SO_LINGER 0 then close), close
 *   (FIN), hang (no answer; read and drop until the peer leaves) or mid (a
 *   head with content-length 1000, 100 body bytes, then FIN). KEY is 1..64
 *   bytes of [A-Za-z0-9_-]; at most FAIL_KEYS_MAX keys are kept, a new one
 *   beyond that answers 507. Counts live as long as the process.
 * - Global random failures: --fail-status NNN:RATE, --reset-rate RATE,
 *   --retry-after S and --seed N at start; GET /_fnbackend/fail?status=NNN&
 *   rate=R&reset=R&retry_after=S|none&seed=N at run time (each parameter
 *   optional; answers the settings as JSON). One draw of a splitmix64
 *   generator per request decides: reset with probability `reset`, the
 *   status with probability `rate`, else the route's own answer. A request
 *   that a global failure takes never reaches its route (a /fail key does
 *   not count it).
 * - GET /_fnbackend/stats[?reset=1]: {"requests":N,"failed":M,"inflight":I,
 *   "inflight_max":X}: requests whose head was read, of those how many got
 *   an injected failure (global or /fail), how many are in flight (head
 *   parsed, answer not yet written, connection open) and the most ever in
 *   flight at once; reset=1 restarts the most from the current figure.
 *   Paths under /_fnbackend/ are control paths: never failed and never
 *   counted; nor is /healthz, the readiness probe.
 *
 * Cold starts: --listen-after MS opens the listeners only MS ms after start
 * (nothing is bound before); --ready-after MS makes /healthz answer 503
 * until MS ms after they are open.
 *
 * The hot path pays for this with a few counter increments and a test of
 * one flag per request; no allocation, no system call.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#define READ_BUF_SIZE (64 * 1024)         /* one read at most */
#define PIECE_SIZE (256 * 1024)           /* one write of a streamed body */
#define ECHO_MAX_BODY (64u * 1024 * 1024) /* /echo keeps at most this much */
#define ECHO_MAX_HEAD (1024 * 1024)       /* and at most this much head */
#define URL_MAX 512                       /* longer targets are cut */
#define LINGER_MS 2000                    /* after our FIN, wait for the peer's */
#define WRITE_QUEUE_MAX (1024 * 1024)     /* unsent answers before reading stops */
#define FAIL_KEY_MAX 64                   /* bytes of a /fail key */
#define FAIL_KEYS_MAX 4096                /* /fail keys kept; a new one beyond: 507 */
#define FAIL_SLOTS 8192                   /* hash table slots: at most half used */
#define MID_LENGTH 1000                   /* /fail/N/mid: declared body length */
#define MID_SENT 100                      /* and the bytes sent before the close */

enum handle_kind { H_LISTENER = 1, H_CONN, H_SIGNAL };

enum route {
    R_HELLO = 0,
    R_ECHO,
    R_STATUS,
    R_DELAY,
    R_BYTES,
    R_CHUNKED,
    R_CLOSE_DELIMITED,
    R_SINK,
    R_CLOSE_MID,
    R_CLOSE_NOW,
    R_HANG,
    R_BAD_GARBAGE,
    R_BAD_CL_TE,
    R_BAD_DUP_CL,
    R_BAD_EXTRA,
    R_BAD_HEADER_CTL,
    R_NOT_FOUND_NUM, /* /status/xyz and friends: a number was expected */
    R_FAIL,          /* /fail/N/WHAT/KEY: c->fail says what to do */
    R_FAIL_FULL,     /* /fail with a new key and no room for it: 507 */
    R_BAD_PATH,      /* a malformed /fail path: 400 with c->err */
    R_FAULT_STATUS,  /* a global random failure: fault.status */
    R_FAULT_RESET,   /* a global random failure: reset */
    /* not requests to the function: never failed, never counted */
    R_HEALTHZ, /* the readiness probe: see ready_at */
    /* control paths, under /_fnbackend/ */
    R_CTL_FAIL,
    R_CTL_STATS,
    R_CTL_UNKNOWN,
};

/* What a /fail request gets. */
enum fail_what { FW_OK = 0, FW_STATUS, FW_RESET, FW_CLOSE, FW_HANG, FW_MID };

enum pause_why { P_NONE = 0, P_HEAD_DONE, P_MSG_DONE };

/* What to do once the one asynchronous write in flight has completed. */
enum after_write { AW_DONE = 0, AW_STREAM, AW_CLOSE };

enum stream_kind { S_LENGTH = 0, S_CHUNKED, S_CLOSE_DELIMITED };

/* A growable byte buffer with a hard cap. */
struct dbuf {
    char *data;
    size_t len, cap;
};

struct conn {
    int kind; /* H_CONN: first member, read through handle->data */
    union {
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer; /* /delay and the lingering close */
    uv_write_t areq;  /* the one asynchronous write in flight */
    uv_shutdown_t sreq;
    llhttp_t parser;
    int closes_pending; /* handles whose close callback has not run */
    bool closing;       /* uv_close called: ignore everything */
    bool shutting;      /* FIN sent or queued: only lingering remains */
    bool paused;        /* waiting for an asynchronous answer */
    bool reading;
    bool hung; /* /hang: read and drop until the peer leaves */
    bool peer_eof;
    bool write_blocked; /* reading stopped: the peer does not take our answers */
    bool resumed;       /* the parser was paused and resumed: run it again */
    enum pause_why why;
    enum after_write after;
    char rbuf[READ_BUF_SIZE];
    size_t rpos, rlen; /* unparsed bytes: rbuf[rpos..rlen) */
    /* the request being parsed */
    enum route route;
    uint64_t arg;              /* NNN, MS or N from the path */
    enum fail_what fail;       /* R_FAIL: what this request gets */
    unsigned fail_status;      /* R_FAIL: NNN of /fail/N/NNN/KEY */
    uint64_t fail_count;       /* R_FAIL: x-backend-count */
    int64_t retry_after;       /* R_FAIL: ?retry_after=S, or -1 */
    const char *err;           /* R_BAD_PATH: a static message */
    uint16_t key_off, key_len; /* R_FAIL: the key, in url */
    bool is_head;              /* HEAD: headers only */
    bool keep_alive;
    bool http10;
    bool in_head;          /* between message begin and headers complete */
    const char *head_mark; /* start of the head bytes in the chunk being parsed */
    bool expect_continue;
    char url[URL_MAX];
    size_t url_len;
    char hname[16]; /* the header name being read, cut to fit */
    size_t hname_len;
    char hval[32];
    size_t hval_len;
    uint64_t body_bytes;
    struct dbuf head; /* raw head bytes, for /echo */
    struct dbuf body; /* body bytes, for /echo */
    bool echo_overflow;
    /* streamed response */
    uint64_t stream_left;
    enum stream_kind stream_kind;
    char chunk_line[24];
    struct dbuf out; /* small answers not yet written */
    uint64_t serial; /* x-backend-conn: which connection answered */
    /* in flight (see inflight_begin): counted requests of this connection */
    unsigned inflight; /* heads parsed, answers not yet written */
    unsigned buffered; /* of those, answered in out, not yet handed to a write */
    bool counted;      /* the request being answered is one of them */
};

struct listener {
    int kind; /* H_LISTENER */
    union {
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
};

/* A copy of the output buffer that uv_try_write could not take at once. */
struct wreq {
    uv_write_t req;
    size_t len;
    unsigned answers; /* requests whose answers end in data: done when written */
    char data[];
};

static uv_loop_t *loop;
static const char *name = "backend";
static int record_fd = -1;
static llhttp_settings_t settings;
static char piece[PIECE_SIZE]; /* body bytes of /bytes and friends */
static char hello_ka[256], hello_close[256], hello_head_ka[256], hello_head_close[256];
static size_t hello_ka_len, hello_close_len, hello_head_ka_len, hello_head_close_len;
static int kind_signal = H_SIGNAL;
static unsigned n_listeners;
static uint64_t conn_serial;
static uint64_t ready_after; /* --ready-after MS */
static uint64_t ready_at;    /* loop time from which /healthz answers 200 */

/* Global random failures (--fail-status, --reset-rate, /_fnbackend/fail).
 * A request draws u, uniform in [0, 2^53): u < reset_below resets it, else
 * u < reset_below + status_below answers status; rates that sum to more
 * than 1 are refused, so both shares are exact. */
static struct fault {
    unsigned status;       /* the injected status, 503 unless set */
    double rate, reset;    /* shares of requests, as given */
    uint64_t status_below; /* rate * 2^53 */
    uint64_t reset_below;  /* reset * 2^53 */
    int64_t retry_after;   /* Retry-After on injected statuses, or -1 */
    uint64_t seed;         /* last seed given (or taken from the clock) */
    uint64_t rng;          /* splitmix64 state */
    bool active;           /* a rate is not 0: draw for each request */
} fault = {.status = 503, .retry_after = -1};

/* GET /_fnbackend/stats */
static struct {
    uint64_t requests;     /* heads read, control paths excepted */
    uint64_t failed;       /* of those, answered with an injected failure */
    uint64_t inflight;     /* of those, answers not yet written (connections open) */
    uint64_t inflight_max; /* the highest inflight since start or ?reset=1 */
} stats;

/* /fail keys: open addressing, linear probing, never deleted. 8192 slots of
 * 80 bytes in .bss cost no memory until touched. */
struct fail_key {
    uint64_t count; /* requests seen with this key */
    uint8_t len;    /* 0: a free slot */
    char key[FAIL_KEY_MAX];
};
static struct fail_key fail_keys[FAIL_SLOTS];
static unsigned n_fail_keys;

static void conn_close(struct conn *c);
static void conn_close_graceful(struct conn *c);
static void conn_parse(struct conn *c);
static void conn_continue(struct conn *c);
static void stream_next(struct conn *c);
static bool parse_num(const char *s, size_t n, uint64_t *out);

/* ---- small buffers ---------------------------------------------------- */

static bool dbuf_put(struct dbuf *b, const void *p, size_t n, size_t max)
{
    if (b->len + n > max)
        return false;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *d = realloc(b->data, cap);
        if (!d)
            return false;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return true;
}

static void dbuf_release(struct dbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Output is capped only to catch a runaway; answers are small. */
static void out_put(struct conn *c, const void *p, size_t n)
{
    if (!dbuf_put(&c->out, p, n, 64u * 1024 * 1024)) {
        fprintf(stderr, "fnbackend: output buffer full\n");
        abort();
    }
}

static void out_str(struct conn *c, const char *s)
{
    out_put(c, s, strlen(s));
}

static void out_u64(struct conn *c, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_put(c, tmp + i, sizeof tmp - i);
}

static const char *reason_of(unsigned code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 507:
        return "Insufficient Storage";
    default:
        return "Status";
    }
}

/* Status line, x-backend, x-backend-conn (a serial number of the connection,
 * so tests can tell whether requests shared one), connection, and
 * content-length unless len < 0. */
static void out_head(struct conn *c, unsigned code, int64_t len, const char *ctype)
{
    out_str(c, "HTTP/1.1 ");
    out_u64(c, code);
    out_str(c, " ");
    out_str(c, reason_of(code));
    out_str(c, "\r\nx-backend: ");
    out_str(c, name);
    out_str(c, "\r\nx-backend-conn: ");
    out_u64(c, c->serial);
    out_str(c, "\r\n");
    if (ctype) {
        out_str(c, "content-type: ");
        out_str(c, ctype);
        out_str(c, "\r\n");
    }
    if (!c->keep_alive)
        out_str(c, "connection: close\r\n");
    else if (c->http10)
        out_str(c, "connection: keep-alive\r\n");
    if (len >= 0) {
        out_str(c, "content-length: ");
        out_u64(c, (uint64_t)len);
        out_str(c, "\r\n");
    }
}

/* A complete small answer with a text body. */
static void out_simple(struct conn *c, unsigned code, const char *body, size_t len)
{
    bool nobody = code == 204 || code == 304;
    out_head(c, code, nobody ? -1 : (int64_t)len, nobody ? NULL : "text/plain");
    out_str(c, "\r\n");
    if (!nobody && !c->is_head)
        out_put(c, body, len);
}

/* ---- requests in flight ---------------------------------------------- */

/* A request is in flight from when its head has been parsed until its
 * answer has been handed to the kernel in full (uv_try_write took it all, or
 * the callback of the write that carried its end ran) or until its
 * connection answers nothing more (closed, reset, or FIN sent). Control
 * paths are not counted. Each connection keeps its share, so that closing it
 * takes back exactly what it holds. */
static void inflight_begin(struct conn *c)
{
    c->counted = true;
    c->inflight++;
    if (++stats.inflight > stats.inflight_max)
        stats.inflight_max = stats.inflight;
}

/* The answer being made is complete in c->out (or was written by the one
 * asynchronous write): the next conn_flush settles it. */
static void inflight_answered(struct conn *c)
{
    if (!c->counted)
        return;
    c->counted = false;
    c->buffered++;
}

static void inflight_end(struct conn *c, unsigned n)
{
    if (n > c->inflight) { /* a bug here would skew every admission test */
        fprintf(stderr, "fnbackend: in-flight count below 0\n");
        abort();
    }
    c->inflight -= n;
    stats.inflight -= n;
}

/* The connection answers nothing more: all its requests are done. */
static void inflight_drop(struct conn *c)
{
    inflight_end(c, c->inflight);
    c->buffered = 0;
    c->counted = false;
}

/* ---- writing ---------------------------------------------------------- */

static void conn_read_start(struct conn *c);

static void wreq_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = req->handle->data;
    unsigned answers = w->answers;
    free(w);
    if (status == UV_ECANCELED || c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    inflight_end(c, answers);
    /* A client that pipelines without reading was paused; it has caught up. */
    if (c->write_blocked && c->h.stream.write_queue_size <= WRITE_QUEUE_MAX / 2) {
        c->write_blocked = false;
        if (!c->paused || c->hung)
            conn_read_start(c);
    }
}

/* Hands the output buffer to the socket, in order with earlier writes. */
static void conn_flush(struct conn *c)
{
    unsigned answers = c->buffered; /* complete answers in out, still in flight */
    c->buffered = 0;
    if (!c->out.len || c->closing) {
        c->out.len = 0;
        inflight_end(c, answers);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write(&c->h.stream, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        c->out.len = 0;
        conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    if (done < c->out.len) {
        size_t rest = c->out.len - done;
        struct wreq *w = malloc(sizeof *w + rest);
        if (!w)
            abort();
        w->len = rest;
        w->answers = answers;
        memcpy(w->data, c->out.data + done, rest);
        uv_buf_t wb = uv_buf_init(w->data, (unsigned)rest);
        if (uv_write(&w->req, &c->h.stream, &wb, 1, wreq_cb) < 0) {
            free(w);
            c->out.len = 0;
            conn_close(c);
            return;
        }
    } else {
        inflight_end(c, answers);
    }
    c->out.len = 0;
    /* Keep a burst's buffer, but give back one that an echo made large. */
    if (c->out.cap > 256 * 1024)
        dbuf_release(&c->out);
}

static void areq_cb(uv_write_t *req, int status)
{
    struct conn *c = req->handle->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    switch (c->after) {
    case AW_STREAM:
        stream_next(c);
        break;
    case AW_CLOSE:
        conn_close_graceful(c);
        break;
    case AW_DONE:
        inflight_answered(c);
        dbuf_release(&c->head);
        dbuf_release(&c->body);
        conn_continue(c);
        break;
    }
}

/* The one asynchronous write; the parser stays paused until it completes. */
static void conn_write_async(struct conn *c, uv_buf_t *bufs, unsigned n, enum after_write after)
{
    conn_flush(c);
    if (c->closing)
        return;
    c->paused = true;
    c->after = after;
    if (uv_write(&c->areq, &c->h.stream, bufs, n, areq_cb) < 0)
        conn_close(c);
}

/* ---- connection lifecycle --------------------------------------------- */

static void conn_free(struct conn *c)
{
    dbuf_release(&c->out);
    dbuf_release(&c->head);
    dbuf_release(&c->body);
    free(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->closes_pending == 0)
        conn_free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->closes_pending = 2;
    inflight_drop(c);
    uv_close((uv_handle_t *)&c->h.stream, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

static void linger_timer_cb(uv_timer_t *t)
{
    conn_close(t->data);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    /* Reading only happens when everything read before has been parsed. */
    buf->base = c->rbuf;
    buf->len = sizeof c->rbuf;
}

static void record(const char *p, size_t n)
{
    while (record_fd >= 0 && n > 0) {
        ssize_t w = write(record_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fnbackend: record: %s\n", strerror(errno));
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* After our FIN: drop what the peer still sends until it closes too, so that
 * closing does not reset a connection whose answer is still in flight. */
static void linger_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread > 0)
        record(buf->base, (size_t)nread);
    if (nread < 0)
        conn_close(c);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    inflight_drop(c); /* FIN sent: nothing more will be answered */
    if (status < 0 || c->peer_eof) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, linger_timer_cb, LINGER_MS, 0);
    if (uv_read_start(&c->h.stream, alloc_cb, linger_read_cb) < 0)
        conn_close(c);
}

/* Sends what is buffered, then FIN, then closes once the peer is gone. */
static void conn_close_graceful(struct conn *c)
{
    if (c->closing || c->shutting)
        return;
    conn_flush(c);
    if (c->closing)
        return;
    c->shutting = true;
    uv_read_stop(&c->h.stream);
    c->reading = false;
    uv_timer_stop(&c->timer);
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, &c->h.stream, shutdown_cb) < 0)
        conn_close(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_stop(struct conn *c);

/* Reads unless closing, or unless too many answers wait to be sent: then
 * wreq_cb starts reading again once they drain. */
static void conn_read_start(struct conn *c)
{
    if (c->closing || c->shutting || c->peer_eof)
        return;
    if (c->h.stream.write_queue_size > WRITE_QUEUE_MAX) {
        c->write_blocked = true;
        conn_read_stop(c);
        return;
    }
    if (c->reading)
        return;
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) < 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void conn_read_stop(struct conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop(&c->h.stream);
    c->reading = false;
}

/* The answer to the current request is complete: go on with the next one. */
static void conn_continue(struct conn *c)
{
    if (c->closing || c->shutting)
        return;
    c->paused = false;
    if (!c->keep_alive) {
        conn_close_graceful(c);
        return;
    }
    /* This answer goes out before the next request is parsed, so that a
     * pipelined request is never in flight together with it. */
    conn_flush(c);
    if (c->closing)
        return;
    conn_parse(c);
    if (c->closing || c->shutting)
        return;
    conn_flush(c);
    if (c->closing || c->paused || c->hung)
        return;
    if (c->peer_eof)
        conn_close_graceful(c);
    else
        conn_read_start(c);
}

/* ---- failures --------------------------------------------------------- */

static uint64_t fault_next(void)
{
    /* splitmix64: a few multiplies, good enough for shares of requests. */
    uint64_t z = (fault.rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void fault_seed(uint64_t seed)
{
    fault.seed = seed;
    fault.rng = seed;
}

/* Sets the global failure shares; false if they are out of [0, 1] or sum to
 * more than 1 (then nothing changes). */
static bool fault_set(unsigned status, double rate, double reset, int64_t retry_after)
{
    if (!(rate >= 0 && rate <= 1 && reset >= 0 && reset <= 1 && rate + reset <= 1))
        return false;
    fault.status = status;
    fault.rate = rate;
    fault.reset = reset;
    fault.status_below = (uint64_t)(rate * 9007199254740992.0); /* 2^53 */
    fault.reset_below = (uint64_t)(reset * 9007199254740992.0);
    fault.retry_after = retry_after;
    fault.active = fault.status_below || fault.reset_below;
    return true;
}

/* One draw for a request that is about to be routed. */
static void fault_draw(struct conn *c)
{
    uint64_t u = fault_next() >> 11;
    if (u < fault.reset_below)
        c->route = R_FAULT_RESET;
    else if (u - fault.reset_below < fault.status_below)
        c->route = R_FAULT_STATUS;
    else
        return;
    stats.failed++;
}

static uint32_t fnv1a(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* The slot of key, added if new; NULL if new and FAIL_KEYS_MAX are kept. */
static struct fail_key *fail_key_get(const char *key, size_t len)
{
    size_t i = fnv1a(key, len) & (FAIL_SLOTS - 1);
    for (;; i = (i + 1) & (FAIL_SLOTS - 1)) {
        struct fail_key *k = &fail_keys[i];
        if (k->len == len && memcmp(k->key, key, len) == 0)
            return k;
        if (k->len == 0)
            break;
    }
    if (n_fail_keys >= FAIL_KEYS_MAX)
        return NULL;
    n_fail_keys++;
    fail_keys[i].len = (uint8_t)len;
    memcpy(fail_keys[i].key, key, len);
    return &fail_keys[i];
}

/* Counts a /fail request against its key and decides its answer. */
static void fail_count(struct conn *c)
{
    struct fail_key *k = fail_key_get(c->url + c->key_off, c->key_len);
    if (!k) {
        c->route = R_FAIL_FULL;
        return;
    }
    c->fail_count = ++k->count;
    if (c->fail_count > c->arg)
        c->fail = FW_OK;
    if (c->fail != FW_OK)
        stats.failed++;
}

/* Resets the connection: RST, not FIN, whatever the peer still sends. What
 * earlier pipelined answers left in the output buffer is handed to the
 * socket first, but the kernel drops anything still unsent. A unix socket
 * has no reset: it is closed. */
static void conn_reset(struct conn *c)
{
    c->paused = true;
    conn_flush(c);
    if (c->closing)
        return;
    if (c->h.stream.type != UV_TCP || c->shutting) {
        conn_close(c);
        return;
    }
    c->closing = true;
    c->closes_pending = 2;
    inflight_drop(c);
    if (uv_tcp_close_reset(&c->h.tcp, conn_close_cb) < 0)
        uv_close((uv_handle_t *)&c->h.stream, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

/* ---- answers ---------------------------------------------------------- */

static void stream_next(struct conn *c)
{
    if (c->stream_left == 0) {
        inflight_answered(c);
        if (c->stream_kind == S_CHUNKED) {
            out_str(c, "0\r\n\r\n");
            conn_flush(c);
        }
        if (c->stream_kind == S_CLOSE_DELIMITED)
            conn_close_graceful(c);
        else
            conn_continue(c);
        return;
    }
    size_t n = c->stream_left < PIECE_SIZE ? (size_t)c->stream_left : PIECE_SIZE;
    c->stream_left -= n;
    if (c->stream_kind == S_CHUNKED) {
        int l = snprintf(c->chunk_line, sizeof c->chunk_line, "%zx\r\n", n);
        uv_buf_t bufs[3] = {
            uv_buf_init(c->chunk_line, (unsigned)l),
            uv_buf_init(piece, (unsigned)n),
            uv_buf_init("\r\n", 2),
        };
        conn_write_async(c, bufs, 3, AW_STREAM);
    } else {
        uv_buf_t b = uv_buf_init(piece, (unsigned)n);
        conn_write_async(c, &b, 1, AW_STREAM);
    }
}

static void delay_timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;
    out_simple(c, 200, "delayed\n", 8);
    inflight_answered(c);
    conn_continue(c);
}

static void answer_hello(struct conn *c)
{
    if (c->is_head)
        out_put(c, c->keep_alive ? hello_head_ka : hello_head_close,
                c->keep_alive ? hello_head_ka_len : hello_head_close_len);
    else
        out_put(c, c->keep_alive ? hello_ka : hello_close,
                c->keep_alive ? hello_ka_len : hello_close_len);
}

/* Retry-After: S, if S >= 0. */
static void out_retry_after(struct conn *c, int64_t s)
{
    if (s < 0)
        return;
    out_str(c, "retry-after: ");
    out_u64(c, (uint64_t)s);
    out_str(c, "\r\n");
}

/* The request head as received and its body, as the body of an answer with
 * this status; a /fail answer adds x-backend-count and its Retry-After. */
static void answer_echo(struct conn *c, unsigned code)
{
    if (c->echo_overflow) {
        out_simple(c, 413, "echo body too large\n", 20);
        return;
    }
    bool nobody = code == 204 || code == 304;
    out_head(c, code, nobody ? -1 : (int64_t)(c->head.len + c->body.len),
             nobody ? NULL : "text/plain");
    out_str(c, "x-echo-body-bytes: ");
    out_u64(c, c->body_bytes);
    out_str(c, "\r\n");
    if (c->route == R_FAIL) {
        out_str(c, "x-backend-count: ");
        out_u64(c, c->fail_count);
        out_str(c, "\r\n");
        if (c->fail == FW_STATUS)
            out_retry_after(c, c->retry_after);
    }
    out_str(c, "\r\n");
    if (c->is_head || nobody)
        return;
    if (c->head.len + c->body.len <= 16 * 1024) {
        /* Small: copy, so that a pipelined burst still makes one write. */
        out_put(c, c->head.data, c->head.len);
        if (c->body.len)
            out_put(c, c->body.data, c->body.len);
        return;
    }
    uv_buf_t bufs[2] = {
        uv_buf_init(c->head.data, (unsigned)c->head.len),
        uv_buf_init(c->body.data ? c->body.data : piece, (unsigned)c->body.len),
    };
    conn_write_async(c, bufs, 2, AW_DONE);
}

/* Reads and drops until the peer leaves; never answers. */
static void answer_hang(struct conn *c)
{
    c->paused = true;
    c->hung = true;
    conn_flush(c);
    conn_read_start(c); /* only to notice when the peer goes away */
}

static void answer_fail(struct conn *c)
{
    switch (c->fail) {
    case FW_OK:
        answer_echo(c, 200);
        break;
    case FW_STATUS:
        answer_echo(c, c->fail_status);
        break;
    case FW_RESET:
        conn_reset(c);
        break;
    case FW_CLOSE:
        c->paused = true;
        conn_close_graceful(c);
        break;
    case FW_HANG:
        answer_hang(c);
        break;
    case FW_MID:
        out_head(c, 200, MID_LENGTH, "text/plain");
        out_str(c, "x-backend-count: ");
        out_u64(c, c->fail_count);
        out_str(c, "\r\n\r\n");
        if (!c->is_head)
            out_put(c, piece, MID_SENT);
        c->paused = true;
        conn_close_graceful(c);
        break;
    }
}

static void answer_fault_status(struct conn *c)
{
    char body[24];
    int n = snprintf(body, sizeof body, "injected %u\n", fault.status);
    bool nobody = fault.status == 204 || fault.status == 304;
    out_head(c, fault.status, nobody ? -1 : n, nobody ? NULL : "text/plain");
    out_retry_after(c, fault.retry_after);
    out_str(c, "\r\n");
    if (!nobody && !c->is_head)
        out_put(c, body, (size_t)n);
}

static void answer_json(struct conn *c, unsigned code, const char *body, size_t len)
{
    out_head(c, code, (int64_t)len, "application/json");
    out_str(c, "\r\n");
    if (!c->is_head)
        out_put(c, body, len);
}

/* The value of query parameter key (a NUL-free span of url), or NULL. */
static const char *query_get(struct conn *c, const char *key, size_t *len)
{
    const char *end = c->url + c->url_len;
    const char *q = memchr(c->url, '?', c->url_len);
    size_t kl = strlen(key);
    while (q && q < end) {
        const char *p = q + 1;
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
            *len = (size_t)(e - p - (ptrdiff_t)kl - 1);
            return p + kl + 1;
        }
        q = amp;
    }
    return NULL;
}

static bool query_num(struct conn *c, const char *key, bool *given, uint64_t *v)
{
    size_t n;
    const char *s = query_get(c, key, &n);
    *given = s != NULL;
    return !s || parse_num(s, n, v);
}

static bool query_rate(struct conn *c, const char *key, double *v)
{
    size_t n;
    const char *s = query_get(c, key, &n);
    char tmp[32], *e;
    if (!s)
        return true;
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double d = strtod(tmp, &e);
    if (*e || !(d >= 0 && d <= 1))
        return false;
    *v = d;
    return true;
}

static void ctl_error(struct conn *c, const char *msg)
{
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
    answer_json(c, 400, body, (size_t)n);
}

/* GET /_fnbackend/fail?status=NNN&rate=R&reset=R&retry_after=S|none&seed=N:
 * each parameter optional, the others keep their values. */
static void ctl_fail(struct conn *c)
{
    unsigned status = fault.status;
    double rate = fault.rate, reset = fault.reset;
    int64_t retry_after = fault.retry_after;
    uint64_t v, seed;
    bool given, seed_given;
    size_t n;
    if (!query_num(c, "status", &given, &v) || (given && (v < 200 || v > 599))) {
        ctl_error(c, "status must be 200..599");
        return;
    }
    if (given)
        status = (unsigned)v;
    if (!query_rate(c, "rate", &rate) || !query_rate(c, "reset", &reset) || rate + reset > 1) {
        ctl_error(c, "rate and reset must be in [0, 1] and sum to at most 1");
        return;
    }
    const char *ra = query_get(c, "retry_after", &n);
    if (ra && n == 4 && memcmp(ra, "none", 4) == 0) {
        retry_after = -1;
    } else if (ra) {
        if (!parse_num(ra, n, &v) || v > INT32_MAX) {
            ctl_error(c, "retry_after must be seconds or none");
            return;
        }
        retry_after = (int64_t)v;
    }
    if (!query_num(c, "seed", &seed_given, &seed)) {
        ctl_error(c, "seed must be a number");
        return;
    }
    fault_set(status, rate, reset, retry_after);
    if (seed_given)
        fault_seed(seed);
    char body[256], ra_text[24];
    if (fault.retry_after >= 0)
        snprintf(ra_text, sizeof ra_text, "%" PRId64, fault.retry_after);
    else
        snprintf(ra_text, sizeof ra_text, "null");
    int len = snprintf(body, sizeof body,
                       "{\"status\":%u,\"rate\":%.6g,\"reset\":%.6g,\"retry_after\":%s,"
                       "\"seed\":%" PRIu64 "}\n",
                       fault.status, fault.rate, fault.reset, ra_text, fault.seed);
    answer_json(c, 200, body, (size_t)len);
}

/* GET /_fnbackend/stats[?reset=1]: the counters; reset=1 then restarts
 * inflight_max from inflight (the answer has the figures from before, so a
 * test reads and resets in one request). */
static void ctl_stats(struct conn *c)
{
    size_t n;
    const char *reset = query_get(c, "reset", &n);
    if (reset && !(n == 1 && reset[0] == '1')) {
        ctl_error(c, "reset must be 1");
        return;
    }
    char body[160];
    int len = snprintf(body, sizeof body,
                       "{\"requests\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"inflight\":%" PRIu64
                       ",\"inflight_max\":%" PRIu64 "}\n",
                       stats.requests, stats.failed, stats.inflight, stats.inflight_max);
    if (reset)
        stats.inflight_max = stats.inflight;
    answer_json(c, 200, body, (size_t)len);
}

/* Raw, deliberately broken answers; after them the connection closes unless
 * the case says it stays open. */
static void answer_raw(struct conn *c, const char *raw, bool close_after)
{
    out_str(c, raw);
    if (close_after) {
        c->paused = true;
        conn_close_graceful(c);
    }
}

static void answer_bad(struct conn *c)
{
    char buf[512];
    switch (c->route) {
    case R_BAD_GARBAGE:
        answer_raw(c, "NOT HTTP AT ALL\r\n\r\n", true);
        break;
    case R_BAD_CL_TE:
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 200 OK\r\nx-backend: %s\r\ncontent-length: 5\r\n"
                 "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                 name);
        answer_raw(c, buf, true);
        break;
    case R_BAD_DUP_CL:
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 200 OK\r\nx-backend: %s\r\ncontent-length: 5\r\n"
                 "content-length: 6\r\n\r\nhello!",
                 name);
        answer_raw(c, buf, true);
        break;
    case R_BAD_EXTRA:
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 200 OK\r\nx-backend: %s\r\nx-backend-conn: %" PRIu64
                 "\r\ncontent-length: 5\r\n\r\nhelloEXTRA",
                 name, c->serial);
        answer_raw(c, buf, false);
        break;
    case R_BAD_HEADER_CTL:
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 200 OK\r\nx-backend: %s\r\nx-bad: a\001b\r\n"
                 "content-length: 2\r\n\r\nok",
                 name);
        answer_raw(c, buf, true);
        break;
    default:
        break;
    }
}

/* Called with the parser paused at the end of a request. */
static void answer(struct conn *c)
{
    switch (c->route) {
    case R_HELLO:
        answer_hello(c);
        break;
    case R_ECHO:
        answer_echo(c, 200);
        break;
    case R_STATUS:
        if (c->arg < 200 || c->arg > 599) {
            out_simple(c, 400, "status must be 200..599\n", 24);
        } else {
            char body[16];
            int n = snprintf(body, sizeof body, "status %u\n", (unsigned)c->arg);
            out_simple(c, (unsigned)c->arg, body, (size_t)n);
        }
        break;
    case R_DELAY:
        c->paused = true;
        conn_flush(c);
        uv_timer_start(&c->timer, delay_timer_cb, c->arg, 0);
        break;
    case R_BYTES:
    case R_CHUNKED:
    case R_CLOSE_DELIMITED:
        if (c->route == R_BYTES) {
            out_head(c, 200, (int64_t)c->arg, "application/octet-stream");
            c->stream_kind = S_LENGTH;
        } else if (c->route == R_CHUNKED) {
            out_head(c, 200, -1, "application/octet-stream");
            out_str(c, "transfer-encoding: chunked\r\n");
            c->stream_kind = S_CHUNKED;
        } else {
            out_head(c, 200, -1, "application/octet-stream");
            c->stream_kind = S_CLOSE_DELIMITED;
        }
        out_str(c, "\r\n");
        /* No body to stream: answered here, so that stream_next never ends
         * an answer (and parses the next request) inside conn_parse. */
        if (c->is_head || c->arg == 0) {
            if (c->route == R_CHUNKED && !c->is_head)
                out_str(c, "0\r\n\r\n");
            if (c->route == R_CLOSE_DELIMITED) {
                c->paused = true;
                conn_close_graceful(c);
            }
            break;
        }
        c->paused = true;
        c->stream_left = c->arg;
        stream_next(c);
        break;
    case R_SINK: {
        char body[24];
        int n = snprintf(body, sizeof body, "%" PRIu64 "\n", c->body_bytes);
        out_simple(c, 200, body, (size_t)n);
        break;
    }
    case R_CLOSE_MID: {
        out_head(c, 200, 100, "text/plain");
        out_str(c, "\r\n0123456789");
        c->paused = true;
        conn_close_graceful(c);
        break;
    }
    case R_CLOSE_NOW:
        c->paused = true;
        conn_close_graceful(c);
        break;
    case R_HANG:
        answer_hang(c);
        break;
    case R_BAD_GARBAGE:
    case R_BAD_CL_TE:
    case R_BAD_DUP_CL:
    case R_BAD_EXTRA:
    case R_BAD_HEADER_CTL:
        answer_bad(c);
        break;
    case R_NOT_FOUND_NUM:
        out_simple(c, 404, "expected a number in the path\n", 30);
        break;
    case R_FAIL:
        answer_fail(c);
        break;
    case R_FAIL_FULL:
        out_simple(c, 507, "too many /fail keys\n", 20);
        break;
    case R_BAD_PATH:
        out_simple(c, 400, c->err, strlen(c->err));
        break;
    case R_FAULT_STATUS:
        answer_fault_status(c);
        break;
    case R_FAULT_RESET:
        conn_reset(c);
        break;
    case R_HEALTHZ:
        if (uv_now(loop) < ready_at)
            out_simple(c, 503, "starting\n", 9);
        else
            out_simple(c, 200, "ok\n", 3);
        break;
    case R_CTL_FAIL:
        ctl_fail(c);
        break;
    case R_CTL_STATS:
        ctl_stats(c);
        break;
    case R_CTL_UNKNOWN:
        out_simple(c, 404, "no such control path\n", 21);
        break;
    }
}

/* ---- routing ---------------------------------------------------------- */

static bool parse_num(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool path_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

/* "/prefix/NUM": true and *arg when p starts with prefix (which ends in '/'). */
static bool path_num(const char *p, size_t n, const char *prefix, struct conn *c)
{
    size_t l = strlen(prefix);
    if (n < l || memcmp(p, prefix, l) != 0)
        return false;
    if (!parse_num(p + l, n - l, &c->arg))
        c->route = R_NOT_FOUND_NUM;
    return true;
}

/* The next path segment: [*p, '/' or end); *p moves past the '/'. */
static size_t path_segment(const char **p, const char *end, const char **seg)
{
    const char *slash = memchr(*p, '/', (size_t)(end - *p));
    const char *e = slash ? slash : end;
    *seg = *p;
    size_t n = (size_t)(e - *p);
    *p = slash ? slash + 1 : end;
    return n;
}

static bool key_ok(const char *k, size_t n)
{
    if (n == 0 || n > FAIL_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = k[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* /fail/N/WHAT/KEY[/...]: p and n are the path after "/fail/". The key is
 * looked up later (fail_count), once the request is known to reach it. */
static void route_fail(struct conn *c, const char *p, size_t n)
{
    const char *end = p + n, *seg;
    uint64_t v;
    size_t l = path_segment(&p, end, &seg);
    c->route = R_BAD_PATH;
    if (!parse_num(seg, l, &c->arg)) {
        c->err = "want /fail/N/WHAT/KEY: N is a count\n";
        return;
    }
    l = path_segment(&p, end, &seg);
    c->fail_status = 0;
    if (path_is(seg, l, "reset"))
        c->fail = FW_RESET;
    else if (path_is(seg, l, "close"))
        c->fail = FW_CLOSE;
    else if (path_is(seg, l, "hang"))
        c->fail = FW_HANG;
    else if (path_is(seg, l, "mid"))
        c->fail = FW_MID;
    else if (parse_num(seg, l, &v) && v >= 200 && v <= 599) {
        c->fail = FW_STATUS;
        c->fail_status = (unsigned)v;
    } else {
        c->err = "want /fail/N/WHAT/KEY: WHAT is 200..599, reset, close, hang or mid\n";
        return;
    }
    l = path_segment(&p, end, &seg);
    if (!key_ok(seg, l)) {
        c->err = "want /fail/N/WHAT/KEY: KEY is 1..64 of [A-Za-z0-9_-]\n";
        return;
    }
    c->key_off = (uint16_t)(seg - c->url);
    c->key_len = (uint16_t)l;
    c->retry_after = -1;
    size_t ql;
    const char *ra = query_get(c, "retry_after", &ql);
    if (ra && parse_num(ra, ql, &v) && v <= INT32_MAX)
        c->retry_after = (int64_t)v;
    c->route = R_FAIL;
}

static void route_control(struct conn *c, const char *p, size_t n)
{
    if (path_is(p, n, "fail"))
        c->route = R_CTL_FAIL;
    else if (path_is(p, n, "stats"))
        c->route = R_CTL_STATS;
    else
        c->route = R_CTL_UNKNOWN;
}

/* Control paths and /healthz: never failed, never counted. */
static bool route_is_control(enum route r)
{
    return r >= R_HEALTHZ;
}

static void route_request(struct conn *c)
{
    const char *p = c->url;
    size_t n = c->url_len;
    /* An absolute-form target: skip scheme and authority. */
    if (n && p[0] != '/') {
        const char *s = memchr(p, '/', n);
        if (s && s + 1 < p + n && s[1] == '/') {
            const char *e = memchr(s + 2, '/', (size_t)(p + n - (s + 2)));
            n = e ? (size_t)(p + n - e) : 0;
            p = e ? e : p + n;
        }
    }
    const char *q = memchr(p, '?', n);
    if (q)
        n = (size_t)(q - p);
    c->route = R_HELLO;
    c->arg = 0;
    /* Every other route is longer: "/", the benchmark's path, skips the
     * comparisons below (they cost more than all the /fail bookkeeping). */
    if (n < 5)
        return;
    if (path_is(p, n, "/echo"))
        c->route = R_ECHO;
    else if (path_num(p, n, "/status/", c))
        c->route = c->route == R_NOT_FOUND_NUM ? c->route : R_STATUS;
    else if (path_num(p, n, "/delay/", c))
        c->route = c->route == R_NOT_FOUND_NUM ? c->route : R_DELAY;
    else if (path_num(p, n, "/bytes/", c))
        c->route = c->route == R_NOT_FOUND_NUM ? c->route : R_BYTES;
    else if (path_num(p, n, "/chunked/", c))
        c->route = c->route == R_NOT_FOUND_NUM ? c->route : R_CHUNKED;
    else if (path_num(p, n, "/close-delimited/", c))
        c->route = c->route == R_NOT_FOUND_NUM ? c->route : R_CLOSE_DELIMITED;
    else if (path_is(p, n, "/sink"))
        c->route = R_SINK;
    else if (path_is(p, n, "/close-mid"))
        c->route = R_CLOSE_MID;
    else if (path_is(p, n, "/close-now"))
        c->route = R_CLOSE_NOW;
    else if (path_is(p, n, "/hang"))
        c->route = R_HANG;
    else if (path_is(p, n, "/healthz"))
        c->route = R_HEALTHZ;
    else if (path_is(p, n, "/bad/garbage"))
        c->route = R_BAD_GARBAGE;
    else if (path_is(p, n, "/bad/cl-te"))
        c->route = R_BAD_CL_TE;
    else if (path_is(p, n, "/bad/dup-cl"))
        c->route = R_BAD_DUP_CL;
    else if (path_is(p, n, "/bad/extra"))
        c->route = R_BAD_EXTRA;
    else if (path_is(p, n, "/bad/header-ctl"))
        c->route = R_BAD_HEADER_CTL;
    else if (n >= 6 && memcmp(p, "/fail/", 6) == 0)
        route_fail(c, p + 6, n - 6);
    else if (n >= 12 && memcmp(p, "/_fnbackend/", 12) == 0)
        route_control(c, p + 12, n - 12);
}

/* ---- llhttp callbacks ------------------------------------------------- */

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    c->in_head = true;
    c->head_mark = NULL;
    c->head.len = 0;
    c->body.len = 0;
    c->url_len = 0;
    c->hname_len = c->hval_len = 0;
    c->expect_continue = false;
    c->echo_overflow = false;
    c->body_bytes = 0;
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (!c->head_mark && c->head.len == 0)
        c->head_mark = at;
    return 0;
}

/* Appends a piece of a span llhttp hands over in parts, cut at cap. */
static void span_append(char *buf, size_t cap, size_t *len, const char *at, size_t n)
{
    if (n > cap - *len)
        n = cap - *len;
    memcpy(buf + *len, at, n);
    *len += n;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    span_append(c->url, sizeof c->url, &c->url_len, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    span_append(c->hname, sizeof c->hname, &c->hname_len, at, len);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    span_append(c->hval, sizeof c->hval, &c->hval_len, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->hname_len == 6 && strncasecmp(c->hname, "expect", 6) == 0 && c->hval_len == 12 &&
        strncasecmp(c->hval, "100-continue", 12) == 0)
        c->expect_continue = true;
    c->hname_len = c->hval_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->why = P_HEAD_DONE;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->body_bytes += len;
    bool keep =
        c->route == R_ECHO || (c->route == R_FAIL && (c->fail == FW_OK || c->fail == FW_STATUS));
    if (keep && !c->echo_overflow && !dbuf_put(&c->body, at, len, ECHO_MAX_BODY))
        c->echo_overflow = true;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p);
    c->why = P_MSG_DONE;
    return HPE_PAUSED;
}

/* The request head is complete: choose the answer, say 100 Continue. */
static void head_done(struct conn *c)
{
    c->in_head = false;
    c->is_head = llhttp_get_method(&c->parser) == HTTP_HEAD;
    c->http10 = llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
    c->keep_alive = llhttp_should_keep_alive(&c->parser);
    route_request(c);
    if (!route_is_control(c->route)) {
        stats.requests++;
        inflight_begin(c);
        if (fault.active)
            fault_draw(c);
        if (c->route == R_FAIL)
            fail_count(c);
    }
    if (c->expect_continue && !c->http10)
        out_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
}

static void bad_request(struct conn *c, llhttp_errno_t err)
{
    static const char body[] = "bad request\n";
    c->keep_alive = false;
    c->is_head = false;
    out_head(c, 400, (int64_t)(sizeof body - 1), "text/plain");
    out_str(c, "\r\n");
    out_put(c, body, sizeof body - 1);
    c->paused = true;
    conn_close_graceful(c);
}

/* Parses rbuf[rpos..rlen) until it is used up or a request waits for an
 * asynchronous answer. */
static void conn_parse(struct conn *c)
{
    /* After a pause the parser runs once more even with no bytes left: a
     * request without a body completes only then. */
    while ((c->rpos < c->rlen || c->resumed) && !c->paused && !c->closing && !c->shutting) {
        c->resumed = false;
        const char *start = c->rbuf + c->rpos;
        size_t n = c->rlen - c->rpos;
        if (c->in_head && (c->head_mark || c->head.len))
            c->head_mark = start;
        c->why = P_NONE;
        llhttp_errno_t err = llhttp_execute(&c->parser, start, n);
        if (err == HPE_OK) {
            if (c->in_head && c->head_mark &&
                !dbuf_put(&c->head, c->head_mark, (size_t)(start + n - c->head_mark),
                          ECHO_MAX_HEAD))
                c->echo_overflow = true;
            c->head_mark = NULL;
            c->rpos = c->rlen;
            break;
        }
        if (err != HPE_PAUSED) {
            if (err == HPE_PAUSED_UPGRADE) {
                /* No upgrades here: answer it as a plain request, then close. */
                c->rpos = c->rlen;
                c->keep_alive = false;
                answer(c);
                if (!c->paused) {
                    inflight_answered(c);
                    conn_close_graceful(c);
                }
                break;
            }
            bad_request(c, err);
            break;
        }
        const char *at = llhttp_get_error_pos(&c->parser);
        c->rpos = (size_t)(at - c->rbuf);
        llhttp_resume(&c->parser);
        c->resumed = true;
        if (c->why == P_HEAD_DONE) {
            if (c->head_mark &&
                !dbuf_put(&c->head, c->head_mark, (size_t)(at - c->head_mark), ECHO_MAX_HEAD))
                c->echo_overflow = true;
            c->head_mark = NULL;
            head_done(c);
        } else if (c->why == P_MSG_DONE) {
            answer(c);
            if (!c->paused)
                inflight_answered(c);
            if (!c->paused && !c->keep_alive) {
                c->paused = true;
                conn_close_graceful(c);
            }
        }
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        conn_read_stop(c);
        if (nread != UV_EOF || c->hung) {
            conn_close(c);
            return;
        }
        c->peer_eof = true;
        if (!c->paused)
            conn_close_graceful(c);
        return;
    }
    record(buf->base, (size_t)nread);
    if (c->hung)
        return;
    c->rpos = 0;
    c->rlen = (size_t)nread;
    conn_parse(c);
    if (c->closing || c->shutting)
        return;
    conn_flush(c);
    if (c->paused && !c->hung)
        conn_read_stop(c);
    else
        conn_read_start(c); /* stops reading if answers pile up */
}

/* ---- listeners -------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status < 0) {
        fprintf(stderr, "fnbackend: accept: %s\n", uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->kind = H_CONN;
    c->serial = ++conn_serial;
    if (server->type == UV_TCP)
        uv_tcp_init(loop, &c->h.tcp);
    else
        uv_pipe_init(loop, &c->h.pipe, 0);
    uv_timer_init(loop, &c->timer);
    c->h.stream.data = c;
    c->timer.data = c;
    c->keep_alive = true;
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    if (uv_accept(&l->h.stream, &c->h.stream) < 0) {
        conn_close(c);
        return;
    }
    if (server->type == UV_TCP)
        uv_tcp_nodelay(&c->h.tcp, 1);
    conn_read_start(c);
}

static int listen_tcp(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host) {
        fprintf(stderr, "fnbackend: --listen wants HOST:PORT, got %s\n", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    int port = atoi(colon + 1);
    struct sockaddr_storage ss;
    int rc;
    if (host[0] == '[') {
        size_t hl = strlen(host);
        if (hl < 2 || host[hl - 1] != ']') {
            fprintf(stderr, "fnbackend: bad address %s\n", spec);
            return -1;
        }
        host[hl - 1] = 0;
        rc = uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)&ss);
    } else {
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    }
    if (rc < 0) {
        fprintf(stderr, "fnbackend: bad address %s: %s\n", spec, uv_strerror(rc));
        return -1;
    }
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        abort();
    l->kind = H_LISTENER;
    uv_tcp_init(loop, &l->h.tcp);
    l->h.stream.data = l;
    if ((rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen(&l->h.stream, 1024, on_connection)) < 0) {
        fprintf(stderr, "fnbackend: listen %s: %s\n", spec, uv_strerror(rc));
        return -1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&bound, &blen);
    unsigned bport = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                                 : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    printf("PORT %u\n", bport);
    fflush(stdout);
    n_listeners++;
    return 0;
}

static int listen_unix(const char *path)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        abort();
    l->kind = H_LISTENER;
    uv_pipe_init(loop, &l->h.pipe, 0);
    l->h.stream.data = l;
    unlink(path);
    int rc;
    if ((rc = uv_pipe_bind(&l->h.pipe, path)) < 0 ||
        (rc = uv_listen(&l->h.stream, 1024, on_connection)) < 0) {
        fprintf(stderr, "fnbackend: listen unix:%s: %s\n", path, uv_strerror(rc));
        return -1;
    }
    printf("UNIX %s\n", path);
    fflush(stdout);
    n_listeners++;
    return 0;
}

/* What --listen and --unix asked for: opened at start, or by listen_timer
 * --listen-after MS later (until then the ports are not even bound). */
static struct {
    const char *tcp[16];
    const char *unix_paths[16];
    size_t n_tcp, n_unix;
} specs;
static uv_timer_t listen_timer;

/* Opens every listener; false after a message if one fails. */
static bool listen_all(void)
{
    for (size_t i = 0; i < specs.n_tcp; i++)
        if (listen_tcp(specs.tcp[i]) < 0)
            return false;
    for (size_t i = 0; i < specs.n_unix; i++)
        if (listen_unix(specs.unix_paths[i]) < 0)
            return false;
    uv_update_time(loop);
    ready_at = uv_now(loop) + ready_after;
    return true;
}

static void listen_timer_cb(uv_timer_t *t)
{
    if (!listen_all())
        exit(1);
}

/* The port of HOST:PORT (0 if it is not a number). */
static uint64_t spec_port(const char *spec)
{
    const char *colon = strrchr(spec, ':');
    uint64_t port;
    return colon && parse_num(colon + 1, strlen(colon + 1), &port) ? port : 0;
}

/* ---- main ------------------------------------------------------------- */

static void listener_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    int *kind = h->data;
    if (kind && *kind == H_CONN) {
        conn_close((struct conn *)kind);
        return;
    }
    if (kind && *kind == H_LISTENER) {
        uv_close(h, listener_close_cb);
        return;
    }
    uv_close(h, NULL);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    /* Close everything; uv_run then returns and main exits 0. */
    uv_walk(loop, close_walk_cb, NULL);
}

static void build_hello(char *buf, size_t *len, bool keep_alive, bool head)
{
    char body[300];
    int bl = snprintf(body, sizeof body, "hello from %s\n", name);
    int n = snprintf(buf, 256,
                     "HTTP/1.1 200 OK\r\nx-backend: %s\r\ncontent-type: text/plain\r\n"
                     "%scontent-length: %d\r\n\r\n%s",
                     name, keep_alive ? "" : "connection: close\r\n", bl, head ? "" : body);
    if (n < 0 || n >= 256) {
        fprintf(stderr, "fnbackend: --name too long\n");
        exit(2);
    }
    *len = (size_t)n;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: fnbackend [--listen HOST:PORT]... [--unix PATH]... [--name NAME]\n"
        "                 [--record FILE] [--fail-status NNN:RATE] [--reset-rate RATE]\n"
        "                 [--retry-after S] [--seed N] [--listen-after MS]\n"
        "                 [--ready-after MS]\n"
        "The test function. Prints \"PORT n\" for each TCP listener once it is bound\n"
        "(127.0.0.1:0 when no --listen or --unix is given).\n"
        "\n"
        "  --listen HOST:PORT    listen on TCP (up to 16)\n"
        "  --unix PATH           listen on a unix socket (up to 16)\n"
        "  --listen-after MS     bind and listen only MS ms after start (connections\n"
        "                        are refused until then); needs fixed ports\n"
        "  --ready-after MS      /healthz answers 503 until MS ms after listening\n"
        "  --name NAME           x-backend: NAME on answers (default backend)\n"
        "  --record FILE         append every byte read to FILE\n"
        "  --fail-status NNN:RATE  answer NNN to a share RATE (0..1) of requests\n"
        "  --reset-rate RATE     reset the connection of a share RATE of requests\n"
        "  --retry-after S       Retry-After: S on the answers of --fail-status\n"
        "  --seed N              seed of the failure draws (default: from the clock)\n"
        "\n"
        "Paths (query ignored unless said; anything else: \"hello from NAME\"):\n"
        "  /echo                 the request head and body as the body\n"
        "  /status/NNN           that status\n"
        "  /delay/MS             200 after MS milliseconds\n"
        "  /bytes/N, /chunked/N, /close-delimited/N   N body bytes, so framed\n"
        "  /sink                 counts the request body, answers the count\n"
        "  /close-mid            content-length 100, 10 bytes, then FIN\n"
        "  /close-now            FIN, no answer\n"
        "  /hang                 no answer; reads until the peer leaves\n"
        "  /healthz              200 \"ok\", or 503 \"starting\" before --ready-after;\n"
        "                        never failed, never counted\n"
        "  /bad/{garbage,cl-te,dup-cl,extra,header-ctl}   malformed answers\n"
        "  /fail/N/WHAT/KEY[/...][?retry_after=S]\n"
        "                        the first N requests with KEY get WHAT, later ones\n"
        "                        an echo with 200; each answer has x-backend-count:\n"
        "                        K, this KEY's requests so far. WHAT: NNN (an echo\n"
        "                        with that status, Retry-After: S if asked), reset\n"
        "                        (RST), close (FIN), hang, mid (content-length 1000,\n"
        "                        100 bytes, FIN). KEY: 1..64 of [A-Za-z0-9_-];\n"
        "                        4096 keys at most, then 507\n"
        "  /_fnbackend/fail[?status=NNN&rate=R&reset=R&retry_after=S|none&seed=N]\n"
        "                        sets the global failures; answers them as JSON\n"
        "                        {\"status\":NNN,\"rate\":R,\"reset\":R,\"retry_after\":S|null,\n"
        "                        \"seed\":N}; rate=0&reset=0 heals\n"
        "  /_fnbackend/stats[?reset=1]\n"
        "                        {\"requests\":N,\"failed\":M,\"inflight\":I,\"inflight_max\":X}:\n"
        "                        requests read, of those failed on purpose, in flight\n"
        "                        now and at most at once (/_fnbackend/ not counted);\n"
        "                        reset=1: inflight_max restarts from inflight\n");
}

/* A rate for an option: a number in [0, 1]. */
static bool opt_rate(const char *s, double *v)
{
    char *e;
    double d = strtod(s, &e);
    if (e == s || *e || !(d >= 0 && d <= 1))
        return false;
    *v = d;
    return true;
}

static bool opt_num(const char *s, uint64_t *v)
{
    return parse_num(s, strlen(s), v);
}

int main(int argc, char **argv)
{
    const char *record_path = NULL;
    unsigned fail_status = 503;
    double fail_rate = 0, reset_rate = 0;
    int64_t retry_after = -1;
    uint64_t num, seed = 0, listen_after = 0;
    bool seed_given = false, listen_after_given = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--listen") && specs.n_tcp < 16)
            specs.tcp[specs.n_tcp++] = argv[++i];
        else if (!strcmp(a, "--unix") && specs.n_unix < 16)
            specs.unix_paths[specs.n_unix++] = argv[++i];
        else if (!strcmp(a, "--name"))
            name = argv[++i];
        else if (!strcmp(a, "--record"))
            record_path = argv[++i];
        else if (!strcmp(a, "--fail-status")) {
            const char *v = argv[++i];
            const char *colon = strchr(v, ':');
            if (!colon || !parse_num(v, (size_t)(colon - v), &num) || num < 200 || num > 599 ||
                !opt_rate(colon + 1, &fail_rate)) {
                fprintf(stderr,
                        "fnbackend: --fail-status wants NNN:RATE (200..599, 0..1), "
                        "got %s\n",
                        v);
                return 2;
            }
            fail_status = (unsigned)num;
        } else if (!strcmp(a, "--reset-rate")) {
            if (!opt_rate(argv[++i], &reset_rate)) {
                fprintf(stderr, "fnbackend: --reset-rate wants 0..1, got %s\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--retry-after")) {
            if (!opt_num(argv[++i], &num) || num > INT32_MAX) {
                fprintf(stderr, "fnbackend: --retry-after wants seconds, got %s\n", argv[i]);
                return 2;
            }
            retry_after = (int64_t)num;
        } else if (!strcmp(a, "--seed")) {
            if (!opt_num(argv[++i], &seed)) {
                fprintf(stderr, "fnbackend: --seed wants a number, got %s\n", argv[i]);
                return 2;
            }
            seed_given = true;
        } else if (!strcmp(a, "--listen-after")) {
            if (!opt_num(argv[++i], &listen_after)) {
                fprintf(stderr, "fnbackend: --listen-after wants milliseconds, got %s\n", argv[i]);
                return 2;
            }
            listen_after_given = true;
        } else if (!strcmp(a, "--ready-after")) {
            if (!opt_num(argv[++i], &ready_after)) {
                fprintf(stderr, "fnbackend: --ready-after wants milliseconds, got %s\n", argv[i]);
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (strlen(name) > 100) {
        fprintf(stderr, "fnbackend: --name too long\n");
        return 2;
    }
    if (specs.n_tcp == 0 && specs.n_unix == 0)
        specs.tcp[specs.n_tcp++] = "127.0.0.1:0";
    /* A test must know the port before it is bound: the kernel cannot choose. */
    for (size_t i = 0; listen_after_given && i < specs.n_tcp; i++) {
        if (spec_port(specs.tcp[i]) == 0) {
            fprintf(stderr,
                    "fnbackend: --listen-after needs a fixed port: --listen HOST:PORT with "
                    "PORT > 0, or --unix PATH; got %s\n",
                    specs.tcp[i]);
            return 2;
        }
    }
    if (!fault_set(fail_status, fail_rate, reset_rate, retry_after)) {
        fprintf(stderr, "fnbackend: --fail-status and --reset-rate rates sum to more than 1\n");
        return 2;
    }
    fault_seed(seed_given ? seed : uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL));
    if (record_path) {
        record_fd = open(record_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (record_fd < 0) {
            fprintf(stderr, "fnbackend: %s: %s\n", record_path, strerror(errno));
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof piece; i++)
        piece[i] = (char)('a' + i % 26);
    build_hello(hello_ka, &hello_ka_len, true, false);
    build_hello(hello_close, &hello_close_len, false, false);
    build_hello(hello_head_ka, &hello_head_ka_len, true, true);
    build_hello(hello_head_close, &hello_head_close_len, false, true);

    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_method = on_method;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    loop = uv_default_loop();
    if (listen_after_given) {
        uv_timer_init(loop, &listen_timer);
        uv_timer_start(&listen_timer, listen_timer_cb, listen_after, 0);
    } else if (!listen_all()) {
        return 1;
    }

    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    sigterm.data = &kind_signal;
    sigint.data = &kind_signal;
    uv_signal_start(&sigterm, signal_cb, SIGTERM);
    uv_signal_start(&sigint, signal_cb, SIGINT);

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    for (size_t i = 0; i < specs.n_unix; i++)
        unlink(specs.unix_paths[i]);
    if (record_fd >= 0)
        close(record_fd);
    return 0;
}
