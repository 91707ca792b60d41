/*
 * worker.h - one event loop per thread. A worker owns everything its
 * connections touch: its SO_REUSEPORT listening sockets, its upstream pools,
 * its buffers and its metric shard, so the hot path shares nothing with
 * other threads. The main thread talks to it only through a small mailbox
 * (new config, stop) and a uv_async_t.
 */
#ifndef FNPROXY_WORKER_H
#define FNPROXY_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "accesslog.h"
#include "metrics.h"
#include "pool.h"
#include "resolve.h"
#include "snapshot.h"
#include "xprt.h"

#define WORKER_BUF_SIZE (32 * 1024) /* pooled I/O buffer */
/* How long a pooled upstream connection is kept idle: under typical server
 * idle limits (Node: 5 s). */
#define POOL_IDLE_MS 4000

struct conn;
struct exch;

/* A function under one snapshot, resolved to this worker's endpoints. */
struct fn_state {
    struct endpoint **eps; /* referenced */
    size_t n_eps;
    struct route_stats **routes;       /* one per route, same order as the config */
    struct route_stats **egress_rules; /* one per egress allow rule, same order */
    struct route_stats *egress_none;   /* egress answered before a rule matched (route "") */
    uint64_t last_report_log_ms;       /* mode: report lines, at most one a second */
    bool egress_paths;                 /* some egress rule restricts paths */
};

/* A snapshot as adopted by one worker. Counted without atomics: only this
 * worker touches it. */
struct wsnap {
    struct snapshot *snap;
    struct worker *w;
    int refs; /* the worker's current pointer + exchanges */
    struct fn_state *fns;
    struct route_stats *noroute; /* answered before a route was chosen */
};

struct wlistener;

/* Takes an accepted socket (closing it on failure): one per listener kind. */
typedef void wlistener_accept_fn(struct wlistener *l, int fd, const struct sockaddr *peer);

struct wlistener {
    struct wlistener *next;
    struct worker *w;
    wlistener_accept_fn *accept; /* by the listener's kind */
    uv_poll_t poll;
    uv_timer_t backoff; /* accepting paused after EMFILE and the like */
    int fd;
    size_t idx;     /* in the current snapshot's listeners */
    bool listening; /* poll active */
    bool closed;    /* handles closed or closing */
    int refs;       /* 1 until closed + one per connection */
    int pending_closes;
    struct listener_stats *stats;
    uint64_t last_error_log_ms;
    uint64_t last_tls_log_ms;     /* TLS record errors: logged at most once a second */
    uint64_t last_capture_log_ms; /* capture: refused connections, likewise */
};

struct worker {
    unsigned id;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;  /* the mailbox has something */
    uv_timer_t sweep; /* closes pooled connections idle too long; drain deadline */

    uv_mutex_t lock;                 /* guards the mailbox */
    struct snapshot *mbox_snap;      /* adopt this config next */
    int mbox_fds[CFG_MAX_LISTENERS]; /* its listeners' sockets, by listener index */
    bool mbox_stop;                  /* drain and exit */
    uint64_t mbox_drain_ms;          /* ... within this long */

    struct xprt_loop xlp; /* TLS transports' deferred reads */
    struct wsnap *cur;
    struct wlistener *listeners;
    struct conn *conns; /* every downstream connection */
    unsigned n_conns;
    struct pool pool;         /* endpoints and upstream connections */
    struct resolver resolver; /* egress names (dns options of the first config) */
    bool has_resolver;
    struct metrics metrics;
    struct accesslog_buf alog; /* this worker's lines, flushed every SWEEP_MS */
    unsigned sweep_ticks;
    uint64_t last_sweep_ms; /* loop time of the last sweep tick: a late one means a freeze */

    char *scratch;   /* reads of idle connections land here first */
    void *free_bufs; /* pooled WORKER_BUF_SIZE buffers, linked through their first bytes */
    unsigned n_free_bufs;
    struct exch *queued, *queued_tail; /* waiting for admission, oldest first */
    bool admit_wake;                   /* atomic: one of them was granted a slot */
    struct exch *free_exch;
    unsigned n_free_exch;
    uint64_t replay_bytes; /* replay buffers of exchanges, under REPLAY_WORKER_MAX */

    uint64_t rng[2];
    uv_async_t *exit_notify;    /* the main loop's, told when this loop has ended (may be NULL) */
    bool exited;                /* atomic: the loop has ended; read by the main thread */
    uint64_t drain_deadline_ms; /* 0 when not draining */
    bool draining;
    bool exiting; /* handles are being closed; loop ends */
};

/* Starts a worker thread serving snapshot s on the listening sockets fds
 * (one per listener of s, in order); the worker owns them from now on. */
int worker_start(struct worker *w, unsigned id, struct snapshot *s, const int *fds,
                 struct accesslog *log);

/* Hands a new snapshot (and its listeners' sockets) to a running worker. */
void worker_reload(struct worker *w, struct snapshot *s, const int *fds);

/* Asks a worker to stop accepting, finish requests in flight within
 * drain_ms, and exit its loop. */
void worker_stop(struct worker *w, uint64_t drain_ms);
void worker_join(struct worker *w);

/* Whether the worker's loop has ended (from any thread). */
bool worker_exited(struct worker *w);

void *worker_buf_get(struct worker *w);
void worker_buf_put(struct worker *w, void *buf);

uint64_t worker_rand(struct worker *w);
uint64_t worker_now_ms(struct worker *w);

void wsnap_ref(struct wsnap *ws);
void wsnap_unref(struct wsnap *ws);

/* A connection ended on this listener. */
void wlistener_unref(struct wlistener *l);

#endif
