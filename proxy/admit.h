/*
 * admit.h - admission: how many requests a function may have in flight,
 * who waits, in what order, and whether any of its endpoints is ready.
 *
 * The state is per function and global across workers (a limit of 1 means
 * one request in flight in the whole process, whatever worker took the
 * connection). It lives outside config snapshots, found by function name,
 * so a reload keeps the count of requests in flight and the queue: a new
 * limit applies from the reload on and is never briefly doubled.
 *
 * Admitting a request when nothing waits and the limit is not reached is
 * one compare-and-swap (admit_try). Anything else takes the function's
 * lock: waiting in its FIFO queue, being handed a slot by the request that
 * frees it, giving up a wait. A request that frees a slot hands it to the
 * oldest waiter directly (the count in flight does not change), whichever
 * worker that waiter is on; its worker is told through the waiter's wake
 * callback and starts it on its own loop.
 *
 * Readiness (functions[].readiness): until one endpoint of the function
 * answers its probe the function is gated: every request queues, and the
 * first ready endpoint releases them in order, up to the limit.
 */
#ifndef FNPROXY_ADMIT_H
#define FNPROXY_ADMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ratelimit.h"

struct admit_fn;

/* The readiness of one endpoint of a function, by address: shared by the
 * snapshots that name it. */
struct admit_ep {
    struct admit_ep *next; /* the function's list */
    struct admit_fn *af;
    char addr[128]; /* cfg_addr.text */
    int refs;       /* under the registry lock */
    bool ready;     /* atomic */
    /* The prober's (main thread only). */
    bool probing;
    uint64_t probe_due_ms;
};

enum admit_wait_state {
    ADMIT_W_IDLE = 0, /* not waiting */
    ADMIT_W_QUEUED,   /* in the queue */
    ADMIT_W_GRANTED,  /* handed a slot; its worker has been woken */
};

struct admit_waiter;
/* Tells a waiter's worker that it was granted a slot. Called with the
 * function's lock held, on any thread: it may only signal. */
typedef void admit_wake_fn(struct admit_waiter *wt);

struct admit_waiter {
    struct admit_waiter *next, *prev; /* the function's queue, under its lock */
    admit_wake_fn *wake;
    int state; /* enum admit_wait_state; written under the lock, read with acquire */
};

struct admit_fn {
    struct admit_fn *next; /* the registry's list */
    char *name;
    int refs; /* snapshots naming it, under the registry lock */
    /* Set on commit (admit_commit): the config now in service. */
    uint32_t limit; /* atomic: max_concurrency, UINT32_MAX for none */
    uint32_t depth; /* atomic: queue.depth */
    bool gated;     /* atomic: readiness set and no endpoint ready */
    bool has_readiness;
    uint32_t inflight; /* atomic: admitted and not released */
    uint32_t queued;   /* atomic: waiters in the queue */
    pthread_mutex_t lock;
    struct admit_waiter *head, *tail;
    struct admit_ep *eps;
    /* Rate limit: one bucket, or one per client (created on first use of
     * per: client_id / client_ip, kept while the function lives). */
    struct ratelimit_bucket bucket;
    struct ratelimit_table *clients;
};

/* The function called name, made on first use; NULL when out of memory.
 * Holds a reference for the caller. Main thread (config loading). */
struct admit_fn *admit_fn_get(const char *name);
void admit_fn_put(struct admit_fn *af);

/* The readiness of endpoint addr of af, made not ready on first use. */
struct admit_ep *admit_ep_get(struct admit_fn *af, const char *addr);
void admit_ep_put(struct admit_ep *ep);

/* The per-client table of af, made on first use; NULL when out of memory. */
struct ratelimit_table *admit_fn_clients(struct admit_fn *af);

/* The config now in service for af: limit 0 for none. */
void admit_configure(struct admit_fn *af, unsigned limit, unsigned depth, bool readiness);

/* Takes a slot if one is free and nobody waits: the fast path. */
static inline bool admit_try(struct admit_fn *af)
{
    uint32_t n;

    if (__atomic_load_n(&af->queued, __ATOMIC_SEQ_CST) != 0 ||
        __atomic_load_n(&af->gated, __ATOMIC_RELAXED))
        return false;
    n = __atomic_load_n(&af->inflight, __ATOMIC_RELAXED);
    do {
        if (n >= __atomic_load_n(&af->limit, __ATOMIC_RELAXED))
            return false;
    } while (!__atomic_compare_exchange_n(&af->inflight, &n, n + 1, true, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
    return true;
}

enum admit_result {
    ADMIT_OK = 0, /* a slot is the caller's now */
    ADMIT_QUEUED, /* wt waits; wake() is called when it has a slot */
    ADMIT_FULL,   /* the queue is full (or has no room at all) */
};

/* Takes a slot, or queues wt behind the requests already waiting. */
enum admit_result admit_enqueue(struct admit_fn *af, struct admit_waiter *wt);

/* Whether wt, woken, has a slot now (then it is out of the queue). */
static inline bool admit_granted(const struct admit_waiter *wt)
{
    return __atomic_load_n(&wt->state, __ATOMIC_ACQUIRE) == ADMIT_W_GRANTED;
}

/* Gives up a wait (timeout, client gone). true when wt had been granted a
 * slot meanwhile: the caller holds it and must use or release it. */
bool admit_cancel(struct admit_fn *af, struct admit_waiter *wt);

/* Frees a slot: the oldest waiter gets it, if any. */
void admit_release(struct admit_fn *af);

/* Readiness changed (prober, main thread): recomputes the gate over the
 * endpoints in eps, and releases waiters when it opens. */
void admit_set_ready(struct admit_fn *af, struct admit_ep *const *eps, size_t n);

/* A worker found ep refusing connections: not ready until probed again.
 * Calls the hook set by admit_on_down (the prober's wake-up). */
void admit_ep_down(struct admit_ep *ep);
void admit_on_down(void (*hook)(void *arg), void *arg);

/* Applies fn to every function, under the registry lock (metrics). */
void admit_each(void (*fn)(const struct admit_fn *af, void *arg), void *arg);

#endif
