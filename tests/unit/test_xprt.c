/*
 * test_xprt.c - the transport on a real loop: a uv_pipe_t over one end of a
 * socketpair is our side, a bare OpenSSL peer in a thread (or the test
 * itself, through the raw fd) is the other.
 *
 * Two behaviours need a loop rather than two engines in memory:
 *
 *  - output backpressure: while more than TLS_OUT_MAX bytes of ciphertext
 *    wait in the engine, the socket is not read. A peer that floods
 *    KeyUpdate(update_requested) and never reads makes an OpenSSL client
 *    (our upstream connections) answer each one; without the brake the
 *    answers pile up in the engine without bound. tls.h promises at most
 *    TLS_IN_MAX + 2 * TLS_OUT_MAX. Once the peer reads again, so do we;
 *    if it goes away instead, the owner is told.
 *  - close_notify on a clean close (xprt_close_notify): sent by a sound TLS
 *    connection with nothing waiting, never by a plain one or one that
 *    failed.
 *
 * Every test bounds itself in time (a guard timer on the loop, socket
 * timeouts and deadlines in the peer thread), closes every handle and ends
 * with uv_loop_close() == 0, and checks that each pooled buffer the
 * transport took was given back. Threads never call into libuv: the loop
 * learns where the peer is from an atomic it reads from a timer, and the
 * peer waits on a condition variable when it must wait for the loop.
 *
 * The group setup runs certs/make-certs.sh into a temporary directory (the
 * binary runs from the repository root), as test_tls.c does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <uv.h>

#include "tls.h"
#include "xprt.h"

#define BUF_SIZE (32 * 1024) /* the pooled buffers, as small as a worker's may be */
#define GUARD_MS 5000        /* no loop runs longer */
#define PEER_IO_TIMEOUT_S 3  /* blocking socket calls in a peer thread */

/* What the engine may hold while the peer floods and never reads (tls.h). */
#define PENDING_BOUND ((size_t)TLS_IN_MAX + 2 * (size_t)TLS_OUT_MAX)
/* A TLS 1.3 KeyUpdate record: 5-byte header, 4-byte message header, 1-byte
 * request flag, 1-byte inner content type, 16-byte AEAD tag. Our answer to
 * each request is one such record. */
#define KEY_UPDATE_RECORD 27
/* Our end's socket send buffer (the kernel doubles it): a known, small room
 * for our answers whatever net.core.wmem_default is, so that the engine's
 * output reaches TLS_OUT_MAX after a few thousand requests. */
#define OUR_SNDBUF (16 * 1024)
/* The flood: bounded by count and time. FLOOD_MAX requests answered and
 * kept would be 540 KB, 2.7 times the bound and far more than the socket
 * holds. A peer that made no progress for STALL_MS has been stopped by our
 * side not reading, which is the point: a working brake ends the flood
 * after ~4,000 requests (~0.2 s; ~1 s under a loaded ASan). */
#define FLOOD_MAX 20000
#define FLOOD_MS 3000
#define GONE_REPORT_MS 1000 /* once the peer is gone, the owner hears of it within */
#define STALL_MS 300
#define DRAIN_MS 2500
#define TICK_MS 2

/* Under ASan: each KeyUpdate makes OpenSSL, on both sides, allocate and free
 * a 16 KiB handshake buffer and cipher contexts. With the default 256 MiB
 * quarantine every one of them is fresh memory, page faults and all, and
 * the flood runs at ~700 KeyUpdates a second instead of ~20,000: too slow to
 * reach the brake in a few seconds. A 4 MiB quarantine still catches a use
 * after free of anything freed in the last few thousand allocations. Flags
 * in ASAN_OPTIONS (tests/run.sh sets detect_leaks) still apply on top. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=4";
}

static char cert_dir[64];
static struct tls_ctx *our_client; /* fnproxy's engine, as an upstream client */
static struct tls_ctx *our_server; /* ... and as a listener */
static SSL_CTX *peer_server;       /* bare OpenSSL peers */
static SSL_CTX *peer_client;

static const char *cert(const char *name)
{
    static char slots[4][160];
    static unsigned next;
    char *p = slots[next++ % 4];

    snprintf(p, sizeof(slots[0]), "%s/%s", cert_dir, name);
    return p;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void ssl_errors(char *out, size_t cap)
{
    unsigned long e = ERR_get_error();

    snprintf(out, cap, "%s", e != 0 ? ERR_reason_error_string(e) : "(no OpenSSL error)");
    ERR_clear_error();
}

static int group_setup(void **state)
{
    char err[256] = "";

    (void)state;
    signal(SIGPIPE, SIG_IGN); /* the peer writes to sockets we close */
    snprintf(cert_dir, sizeof(cert_dir), "/tmp/fnproxy-test-xprt-XXXXXX");
    if (mkdtemp(cert_dir) == NULL)
        return -1;
    if (sh("FNPROXY_CERT_CLIENTS= sh certs/make-certs.sh '%s' 2>/dev/null", cert_dir) != 0)
        return -1;

    struct tls_client_opts co = {.ca_file = cert("ca.crt"), .min_version = 13};
    our_client = tls_client_ctx_new(&co, err, sizeof(err));
    if (our_client == NULL) {
        fprintf(stderr, "tls_client_ctx_new: %s\n", err);
        return -1;
    }
    struct tls_cert_file cf = {strdup(cert("server.crt")), strdup(cert("server.key"))};
    struct tls_server_opts so = {.certificates = &cf, .n_certificates = 1, .min_version = 13};
    our_server = tls_server_ctx_new(&so, err, sizeof(err));
    free((char *)cf.cert_file);
    free((char *)cf.key_file);
    if (our_server == NULL) {
        fprintf(stderr, "tls_server_ctx_new: %s\n", err);
        return -1;
    }

    peer_server = SSL_CTX_new(TLS_server_method());
    if (peer_server == NULL || !SSL_CTX_set_min_proto_version(peer_server, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate_chain_file(peer_server, cert("server.crt")) != 1 ||
        SSL_CTX_use_PrivateKey_file(peer_server, cert("server.key"), SSL_FILETYPE_PEM) != 1)
        return -1;
    SSL_CTX_set_num_tickets(peer_server, 0);
    peer_client = SSL_CTX_new(TLS_client_method());
    if (peer_client == NULL || !SSL_CTX_set_min_proto_version(peer_client, TLS1_3_VERSION) ||
        SSL_CTX_load_verify_locations(peer_client, cert("ca.crt"), NULL) != 1)
        return -1;
    SSL_CTX_set_verify(peer_client, SSL_VERIFY_PEER, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tls_ctx_unref(our_client);
    tls_ctx_unref(our_server);
    SSL_CTX_free(peer_server);
    SSL_CTX_free(peer_client);
    if (strncmp(cert_dir, "/tmp/fnproxy-test-xprt-", 23) == 0)
        sh("rm -rf '%s'", cert_dir);
    return 0;
}

/* ---- our side: a loop, a pipe over a socketpair, a transport ------------- */

struct side {
    uv_loop_t loop;
    struct xprt_loop xl;
    uv_pipe_t pipe;
    uv_timer_t guard;
    struct xprt t;
    int fds[2];   /* [0]: the pipe's (closed with it); [1]: the peer's */
    int bufs_out; /* pooled buffers taken and not given back */
    bool closing;
    bool timed_out;
    int hs_status;
    bool hs_done;
    ssize_t read_err; /* the first nread < 0 */
    size_t nread;     /* plaintext bytes received */
    char got[64];     /* ... the first of them */
    char app[16384];  /* where plaintext goes */
    size_t max_pending;
    void (*on_close_all)(struct side *s); /* closes the test's own handles */
};

static void *buf_get(void *ctx)
{
    struct side *s = ctx;
    void *b = malloc(BUF_SIZE);

    if (b != NULL)
        s->bufs_out++;
    return b;
}

static void buf_put(void *ctx, void *buf)
{
    struct side *s = ctx;

    s->bufs_out--;
    free(buf);
}

static void sample_pending(struct side *s)
{
    struct tls_conn *c = xprt_tls_conn(&s->t);

    if (c != NULL && tls_pending(c) > s->max_pending)
        s->max_pending = tls_pending(c);
}

static void on_pipe_close(uv_handle_t *h)
{
    struct xprt *t = h->data; /* xprt_init made it so */

    xprt_release(t);
}

static void side_close_all(struct side *s)
{
    if (s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->pipe, on_pipe_close);
    uv_close((uv_handle_t *)&s->guard, NULL);
    xprt_loop_close(&s->xl);
    if (s->on_close_all != NULL)
        s->on_close_all(s);
}

static void on_guard(uv_timer_t *tm)
{
    struct side *s = tm->data;

    s->timed_out = true;
    side_close_all(s);
}

static void side_open(struct side *s)
{
    memset(s, 0, sizeof(*s));
    s->hs_status = 1;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s->fds), 0);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    assert_int_equal(xprt_loop_init(&s->xl, &s->loop), 0);
    s->xl.buf_get = buf_get;
    s->xl.buf_put = buf_put;
    s->xl.buf_ctx = s;
    s->xl.buf_size = BUF_SIZE;
    assert_int_equal(uv_pipe_init(&s->loop, &s->pipe, 0), 0);
    assert_int_equal(uv_pipe_open(&s->pipe, s->fds[0]), 0);
    xprt_init(&s->t, &s->xl, (uv_stream_t *)&s->pipe, s);
    assert_int_equal(uv_timer_init(&s->loop, &s->guard), 0);
    s->guard.data = s;
    assert_int_equal(uv_timer_start(&s->guard, on_guard, GUARD_MS, 0), 0);
}

/* Runs the loop until every handle is closed. */
static void side_run(struct side *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* After side_run and after the peer thread is joined (an assertion must not
 * leave a thread running): nothing may be left. */
static void side_check(struct side *s)
{
    assert_true(s->closing);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    assert_int_equal(s->bufs_out, 0);
}

static void on_alloc(struct xprt *t, uv_buf_t *b)
{
    struct side *s = t->owner;

    sample_pending(s);
    *b = uv_buf_init(s->app, sizeof(s->app));
}

static void on_read(struct xprt *t, ssize_t nread)
{
    struct side *s = t->owner;

    if (nread < 0) {
        if (s->read_err == 0)
            s->read_err = nread;
        return;
    }
    if (s->nread < sizeof(s->got)) {
        size_t n =
            sizeof(s->got) - s->nread < (size_t)nread ? sizeof(s->got) - s->nread : (size_t)nread;
        memcpy(s->got + s->nread, s->app, n);
    }
    s->nread += (size_t)nread;
}

/* Bytes the peer's end has received and not read. */
static int peer_unread(const struct side *s)
{
    int n = -1;

    assert_int_equal(ioctl(s->fds[1], FIONREAD, &n), 0);
    return n;
}

/* Everything the peer's end receives until EOF (our end must be closed). */
static size_t peer_read_to_eof(const struct side *s)
{
    char b[4096];
    size_t total = 0;
    ssize_t n;

    while ((n = read(s->fds[1], b, sizeof(b))) > 0)
        total += (size_t)n;
    assert_int_equal(n, 0);
    return total;
}

static void peer_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = PEER_IO_TIMEOUT_S};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- 1. a KeyUpdate flood from a peer that never reads ------------------- */

enum { FL_HANDSHAKE = 0, FL_FLOOD, FL_OVER, FL_DRAIN, FL_DONE };

struct flood {
    struct side s;
    uv_timer_t tick;
    /* The peer waits at FL_OVER until the loop has looked (seen), so that
     * the loop sees the engine as the flood left it, before any drain. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool seen;
    bool peer_leaves; /* after the flood the peer closes instead of reading */
    uint64_t done_ms; /* when the loop saw FL_DONE */
    /* written by the peer thread */
    atomic_int phase;
    unsigned long written; /* KeyUpdate requests wholly written */
    bool stalled;          /* the flood ended because we stopped reading */
    bool after_sent;
    size_t drained; /* ciphertext the peer read (and threw away) */
    char err[200];  /* "" unless the peer failed */
    /* the loop's view */
    bool flood_seen_over;
    size_t pending_at_flood_end;
    size_t pending_after_close_notify;
};

static void flood_fail(struct flood *f, const char *what, SSL *ssl, int r)
{
    char why[160];
    int e = ssl != NULL ? SSL_get_error(ssl, r) : 0;

    ssl_errors(why, sizeof(why));
    snprintf(f->err, sizeof(f->err), "%s: SSL error %d, %s (errno %d)", what, e, why, errno);
}

/* The peer: a TLS 1.3 server that, once the handshake is done, sends
 * KeyUpdate(update_requested) as fast as the socket takes them and reads
 * nothing. Then it reads (raw ciphertext, thrown away: our answers) so that
 * we can write, finishes its last KeyUpdate, sends "after" and reads on
 * until our side closes. */
static void *flood_peer(void *arg)
{
    struct flood *f = arg;
    int fd = f->s.fds[1];
    SSL *ssl = SSL_new(peer_server);
    bool inflight = false;
    uint64_t deadline, last_progress;
    int r;

    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        flood_fail(f, "SSL_new", NULL, 0);
        goto out;
    }
    peer_timeouts(fd);
    ERR_clear_error();
    r = SSL_accept(ssl);
    if (r != 1) {
        flood_fail(f, "handshake", ssl, r);
        goto out;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    atomic_store(&f->phase, FL_FLOOD);
    deadline = now_ms() + FLOOD_MS;
    last_progress = now_ms();
    while (f->written < FLOOD_MAX) {
        uint64_t now;

        if (!inflight) {
            if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1) {
                flood_fail(f, "SSL_key_update", NULL, 0);
                goto out;
            }
            inflight = true;
        }
        r = SSL_do_handshake(ssl);
        now = now_ms();
        if (r == 1) {
            f->written++;
            inflight = false;
            last_progress = now;
            if (now >= deadline)
                break;
            continue;
        }
        if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_WRITE) {
            flood_fail(f, "sending KeyUpdate", ssl, r);
            goto out;
        }
        if (now >= deadline)
            break;
        if (now - last_progress >= STALL_MS) {
            f->stalled = true;
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 10);
    }

    atomic_store(&f->phase, FL_OVER);
    {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += PEER_IO_TIMEOUT_S;
        pthread_mutex_lock(&f->lock);
        while (!f->seen)
            if (pthread_cond_timedwait(&f->cond, &f->lock, &until) != 0)
                break;
        pthread_mutex_unlock(&f->lock);
    }
    if (f->peer_leaves) {
        SSL_free(ssl);
        ssl = NULL;
        close(fd);
        f->s.fds[1] = -1;
        goto out;
    }
    atomic_store(&f->phase, FL_DRAIN);
    deadline = now_ms() + DRAIN_MS;
    for (;;) {
        static const char after[] = "after";
        char junk[65536];
        ssize_t n;

        /* OpenSSL wants a write it began finished before the next one. */
        if (inflight) {
            r = SSL_do_handshake(ssl);
            if (r == 1) {
                inflight = false;
                f->written++;
            } else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_WRITE) {
                flood_fail(f, "finishing KeyUpdate", ssl, r);
                goto out;
            }
        } else if (!f->after_sent) {
            r = SSL_write(ssl, after, sizeof(after) - 1);
            if (r == (int)sizeof(after) - 1) {
                f->after_sent = true;
            } else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_WRITE) {
                flood_fail(f, "SSL_write", ssl, r);
                goto out;
            }
        }
        n = read(fd, junk, sizeof(junk));
        if (n > 0) {
            f->drained += (size_t)n;
            continue;
        }
        if (n == 0 || errno != EAGAIN)
            break; /* our side closed */
        if (now_ms() >= deadline) {
            snprintf(f->err, sizeof(f->err), "drain: our side did not close in %d ms", DRAIN_MS);
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (inflight || !f->after_sent)
            p.events |= POLLOUT;
        poll(&p, 1, 10);
    }
out:
    SSL_free(ssl);
    ERR_clear_error();
    atomic_store(&f->phase, FL_DONE);
    return NULL;
}

static void flood_on_handshake(struct xprt *t, int status)
{
    struct side *s = t->owner;

    s->hs_done = true;
    s->hs_status = status;
    if (status < 0 || xprt_read_start(t, on_alloc, on_read) < 0)
        side_close_all(s);
}

static void flood_close_all(struct side *s)
{
    struct flood *f = (struct flood *)s;

    uv_close((uv_handle_t *)&f->tick, NULL);
}

static void flood_on_tick(uv_timer_t *tm)
{
    struct flood *f = tm->data;
    struct side *s = &f->s;
    int phase = atomic_load(&f->phase);

    sample_pending(s);
    if (phase >= FL_OVER && !f->flood_seen_over && xprt_tls_conn(&s->t) != NULL) {
        struct tls_conn *c = xprt_tls_conn(&s->t);

        /* Ciphertext waits: close_notify must not be slipped in ahead of
         * it (nor after it, in a write of its own). */
        f->flood_seen_over = true;
        f->pending_at_flood_end = tls_pending(c);
        xprt_close_notify(&s->t);
        f->pending_after_close_notify = tls_pending(c);
        pthread_mutex_lock(&f->lock);
        f->seen = true;
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->lock);
    }
    if (phase == FL_DONE && f->done_ms == 0)
        f->done_ms = now_ms();
    if (s->read_err != 0 ||
        (phase == FL_DONE && (!f->peer_leaves || now_ms() - f->done_ms > GONE_REPORT_MS)) ||
        (f->flood_seen_over && s->nread >= 5 && memcmp(s->got, "after", 5) == 0))
        side_close_all(s);
}

static void flood_run(struct flood *f, bool peer_leaves)
{
    struct side *s = &f->s;
    int sndbuf = OUR_SNDBUF;
    pthread_t th;

    memset(f, 0, sizeof(*f));
    side_open(s);
    s->on_close_all = flood_close_all;
    f->peer_leaves = peer_leaves;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    assert_int_equal(setsockopt(s->fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    atomic_init(&f->phase, FL_HANDSHAKE);
    assert_int_equal(uv_timer_init(&s->loop, &f->tick), 0);
    f->tick.data = f;
    assert_int_equal(uv_timer_start(&f->tick, flood_on_tick, TICK_MS, TICK_MS), 0);
    assert_int_equal(xprt_tls_start(&s->t, our_client, "localhost", flood_on_handshake), 0);
    assert_int_equal(pthread_create(&th, NULL, flood_peer, f), 0);

    side_run(s);
    pthread_join(th, NULL);
    if (s->fds[1] >= 0)
        close(s->fds[1]);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    side_check(s);

    print_message("flood: %lu KeyUpdate requests written (%s), our answers would be %lu bytes; "
                  "max pending %zu (bound %zu), %zu at the flood's end; peer drained %zu bytes\n",
                  f->written, f->stalled ? "stopped by us not reading" : "not stopped",
                  f->written * KEY_UPDATE_RECORD, s->max_pending, PENDING_BOUND,
                  f->pending_at_flood_end, f->drained);
    if (f->err[0] != '\0')
        print_message("peer: %s\n", f->err);
    assert_string_equal(f->err, "");
    assert_false(s->timed_out);
    assert_int_equal(s->hs_status, 0);
}

/* One struct flood at a time, in static storage so that a failed assertion
 * leaks nothing. */
static struct flood flood_state;

static void test_key_update_flood_is_throttled(void **state)
{
    struct flood *f = &flood_state;
    struct side *s = &f->s;

    (void)state;
    flood_run(f, false);
    assert_int_equal(s->read_err, 0);
    /* The engine stayed within its bound ... */
    assert_true(s->max_pending <= PENDING_BOUND);
    /* ... because our side stopped reading, not because the flood was weak:
     * the peer still had requests to send (FLOOD_MAX of them would have
     * overflowed the bound) when the socket stopped taking them, and our
     * output did get past the point where reading must stop. */
    assert_true(f->stalled);
    assert_true(f->written < FLOOD_MAX);
    assert_true(s->max_pending > TLS_OUT_MAX);
    /* Nothing could be said while ciphertext waited. */
    assert_true(f->pending_at_flood_end > 0);
    assert_int_equal(f->pending_after_close_notify, f->pending_at_flood_end);
    /* Reading resumed once the peer read. */
    assert_true(f->after_sent);
    assert_true(s->nread >= 5);
    assert_memory_equal(s->got, "after", 5);
}

/* The same flood, after which the peer closes its socket rather than read.
 * Whether or not our side had stopped reading, the owner must hear that the
 * connection is gone (an error or EOF from its read callback), not be left
 * waiting for a read that will never be started again. */
static void test_peer_gone_during_flood_is_reported(void **state)
{
    struct flood *f = &flood_state;
    struct side *s = &f->s;

    (void)state;
    flood_run(f, true);
    print_message("peer gone: the owner's read callback got %zd\n", s->read_err);
    assert_true(s->read_err < 0);
}

/* ---- 2. close_notify on a clean close ------------------------------------ */

enum cn_mode {
    CN_CLEAN,      /* handshake, then xprt_close_notify and close */
    CN_NO_NOTIFY,  /* the same without xprt_close_notify: a plain EOF */
    CN_BAD_RECORD, /* the peer sends a record that does not authenticate */
};

struct cn {
    struct side s;
    enum cn_mode mode;
    /* the peer thread */
    bool peer_hs_ok;
    int peer_ret, peer_err;
    char peer_why[160];
    /* the loop */
    int unread_before, unread_after; /* at the peer, around xprt_close_notify */
    size_t pending_after;
    enum tls_record_error rec_err;
};

/* The peer: a bare OpenSSL client. It handshakes, then reads once (CN_CLEAN,
 * CN_NO_NOTIFY) or sends a forged application data record (CN_BAD_RECORD). */
static void *cn_peer(void *arg)
{
    struct cn *x = arg;
    int fd = x->s.fds[1];
    SSL *ssl = SSL_new(peer_client);
    char b[256];
    int r;

    if (ssl == NULL)
        goto out;
    peer_timeouts(fd);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    ERR_clear_error();
    r = SSL_connect(ssl);
    if (r != 1) {
        x->peer_err = SSL_get_error(ssl, r);
        ssl_errors(x->peer_why, sizeof(x->peer_why));
        goto out;
    }
    x->peer_hs_ok = true;
    if (x->mode == CN_BAD_RECORD) {
        uint8_t rec[5 + 32] = {0x17, 0x03, 0x03, 0x00, 0x20};

        memset(rec + 5, 0x41, 32);
        if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
            snprintf(x->peer_why, sizeof(x->peer_why), "write: errno %d", errno);
        goto out;
    }
    ERR_clear_error();
    x->peer_ret = SSL_read(ssl, b, sizeof(b));
    x->peer_err = SSL_get_error(ssl, x->peer_ret);
    ssl_errors(x->peer_why, sizeof(x->peer_why));
out:
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

static void cn_say_goodbye(struct cn *x)
{
    struct tls_conn *c = xprt_tls_conn(&x->s.t);

    x->unread_before = peer_unread(&x->s);
    xprt_close_notify(&x->s.t);
    x->unread_after = peer_unread(&x->s);
    x->pending_after = c != NULL ? tls_pending(c) : 0;
    x->rec_err = c != NULL ? tls_record_error(c) : TLS_REC_NONE;
    side_close_all(&x->s);
}

static void cn_on_read(struct xprt *t, ssize_t nread)
{
    struct cn *x = t->owner;

    on_read(t, nread);
    if (nread < 0)
        cn_say_goodbye(x);
}

static void cn_on_handshake(struct xprt *t, int status)
{
    struct cn *x = t->owner;

    x->s.hs_done = true;
    x->s.hs_status = status;
    if (status < 0) {
        cn_say_goodbye(x);
        return;
    }
    switch (x->mode) {
    case CN_CLEAN:
        /* What conn_close does for an idle connection. */
        xprt_close_notify(t);
        x->pending_after = tls_pending(xprt_tls_conn(t));
        side_close_all(&x->s);
        break;
    case CN_NO_NOTIFY:
        side_close_all(&x->s);
        break;
    case CN_BAD_RECORD:
        if (xprt_read_start(t, on_alloc, cn_on_read) < 0)
            side_close_all(&x->s);
        break;
    }
}

/* One struct cn at a time, in static storage so that a failed assertion
 * leaks nothing. */
static struct cn cn_state;

static struct cn *cn_new(void)
{
    memset(&cn_state, 0, sizeof(cn_state));
    side_open(&cn_state.s);
    return &cn_state;
}

static struct cn *cn_run(enum cn_mode mode)
{
    struct cn *x = cn_new();
    pthread_t th;

    x->mode = mode;
    assert_int_equal(xprt_tls_start(&x->s.t, our_server, NULL, cn_on_handshake), 0);
    assert_int_equal(pthread_create(&th, NULL, cn_peer, x), 0);
    side_run(&x->s);
    pthread_join(th, NULL);
    side_check(&x->s);
    assert_false(x->s.timed_out);
    assert_true(x->s.hs_done);
    assert_int_equal(x->s.hs_status, 0);
    assert_true(x->peer_hs_ok);
    return x;
}

static void test_close_notify_after_clean_close(void **state)
{
    struct cn *x = cn_run(CN_CLEAN);

    (void)state;
    if (x->peer_err != SSL_ERROR_ZERO_RETURN)
        print_message("peer: SSL_read %d, SSL error %d, %s\n", x->peer_ret, x->peer_err,
                      x->peer_why);
    /* All of it went in one write the socket took. */
    assert_int_equal(x->pending_after, 0);
    assert_int_equal(x->peer_ret, 0);
    assert_int_equal(x->peer_err, SSL_ERROR_ZERO_RETURN);
    close(x->s.fds[1]);
}

/* The control: without close_notify the peer sees a bare EOF, which
 * OpenSSL 3 calls an error. */
static void test_plain_eof_without_close_notify(void **state)
{
    struct cn *x = cn_run(CN_NO_NOTIFY);

    (void)state;
    print_message("peer: SSL_read %d, SSL error %d, %s\n", x->peer_ret, x->peer_err, x->peer_why);
    assert_true(x->peer_ret <= 0);
    assert_int_not_equal(x->peer_err, SSL_ERROR_ZERO_RETURN);
    assert_true(x->peer_err == SSL_ERROR_SYSCALL || x->peer_err == SSL_ERROR_SSL);
    close(x->s.fds[1]);
}

/* After a record that does not authenticate, our side has sent its fatal
 * alert; xprt_close_notify adds nothing, then or later. */
static void test_no_close_notify_after_record_failure(void **state)
{
    struct cn *x = cn_run(CN_BAD_RECORD);

    (void)state;
    assert_int_equal(x->s.read_err, UV_EPROTO);
    assert_int_equal(x->rec_err, TLS_REC_BAD_RECORD_MAC);
    assert_true(x->unread_before > 0); /* the alert, at least */
    assert_int_equal(x->unread_after, x->unread_before);
    assert_int_equal(x->pending_after, 0);
    assert_int_equal(peer_read_to_eof(&x->s), (size_t)x->unread_before);
    close(x->s.fds[1]);
}

/* A handshake that fails (plain HTTP to a TLS port): nothing either. */
static void test_no_close_notify_after_handshake_failure(void **state)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    struct cn *x = cn_new();

    (void)state;
    x->mode = CN_CLEAN;
    assert_int_equal(write(x->s.fds[1], req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    assert_int_equal(xprt_tls_start(&x->s.t, our_server, NULL, cn_on_handshake), 0);
    side_run(&x->s);
    side_check(&x->s);
    assert_false(x->s.timed_out);
    assert_true(x->s.hs_done);
    assert_true(x->s.hs_status < 0);
    assert_int_equal(x->unread_after, x->unread_before);
    assert_int_equal(peer_read_to_eof(&x->s), (size_t)x->unread_before);
    close(x->s.fds[1]);
}

/* A plain stream: xprt_close_notify sends nothing, before or after data. */
static void plain_on_write(struct xprt *t, int status)
{
    struct side *s = t->owner;
    struct cn *x = (struct cn *)s;

    assert_int_equal(status, 0);
    cn_say_goodbye(x);
}

static void test_close_notify_is_a_noop_on_plain(void **state)
{
    struct cn *x = cn_new();
    uv_write_t req;
    uv_buf_t b = uv_buf_init("ping", 4);
    char got[16];

    (void)state;
    assert_null(xprt_tls_conn(&x->s.t));
    assert_int_equal(xprt_write(&x->s.t, &req, &b, 1, plain_on_write), 0);
    side_run(&x->s);
    side_check(&x->s);
    assert_false(x->s.timed_out);
    assert_int_equal(x->unread_before, 4);
    assert_int_equal(x->unread_after, 4);
    assert_int_equal(read(x->s.fds[1], got, sizeof(got)), 4);
    assert_memory_equal(got, "ping", 4);
    assert_int_equal(peer_read_to_eof(&x->s), 0);
    close(x->s.fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_update_flood_is_throttled),
        cmocka_unit_test(test_peer_gone_during_flood_is_reported),
        cmocka_unit_test(test_close_notify_after_clean_close),
        cmocka_unit_test(test_plain_eof_without_close_notify),
        cmocka_unit_test(test_no_close_notify_after_record_failure),
        cmocka_unit_test(test_no_close_notify_after_handshake_failure),
        cmocka_unit_test(test_close_notify_is_a_noop_on_plain),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
