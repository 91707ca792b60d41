/*
 * admit.c - per-function admission state, shared by workers and kept
 * across reloads (admit.h).
 *
 * The queue and the count in flight obey one rule that keeps waiters from
 * being forgotten: whoever makes the queue longer, and whoever frees a slot,
 * looks at the other's counter afterwards (both sequentially consistent),
 * so that at least one of them sees both changes and hands the slot over.
 */
#include "admit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The registry: every function any snapshot names. Touched when configs
 * are loaded and freed, and by a scrape, never per request. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct admit_fn *registry;

#define CLIENT_TABLE_SIZE 16384

struct admit_fn *admit_fn_get(const char *name)
{
    struct admit_fn *af;

    pthread_mutex_lock(&registry_lock);
    for (af = registry; af != NULL; af = af->next)
        if (strcmp(af->name, name) == 0)
            break;
    if (af == NULL) {
        af = calloc(1, sizeof(*af));
        if (af != NULL && (af->name = strdup(name)) == NULL) {
            free(af);
            af = NULL;
        }
        if (af != NULL) {
            af->limit = UINT32_MAX;
            pthread_mutex_init(&af->lock, NULL);
            af->next = registry;
            registry = af;
        }
    }
    if (af != NULL)
        af->refs++;
    pthread_mutex_unlock(&registry_lock);
    return af;
}

void admit_fn_put(struct admit_fn *af)
{
    struct admit_fn **p;

    if (af == NULL)
        return;
    pthread_mutex_lock(&registry_lock);
    if (--af->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    for (p = &registry; *p != af; p = &(*p)->next)
        ;
    *p = af->next;
    pthread_mutex_unlock(&registry_lock);
    /* No snapshot names it, so no exchange holds a slot or waits. */
    ratelimit_table_free(af->clients);
    pthread_mutex_destroy(&af->lock);
    free(af->name);
    free(af);
}

struct admit_ep *admit_ep_get(struct admit_fn *af, const char *addr)
{
    struct admit_ep *ep;

    pthread_mutex_lock(&registry_lock);
    for (ep = af->eps; ep != NULL; ep = ep->next)
        if (strcmp(ep->addr, addr) == 0)
            break;
    if (ep == NULL && (ep = calloc(1, sizeof(*ep))) != NULL) {
        ep->af = af;
        snprintf(ep->addr, sizeof(ep->addr), "%s", addr);
        ep->next = af->eps;
        af->eps = ep;
        af->refs++; /* the endpoint's list lives in af */
    }
    if (ep != NULL)
        ep->refs++;
    pthread_mutex_unlock(&registry_lock);
    return ep;
}

void admit_ep_put(struct admit_ep *ep)
{
    struct admit_fn *af;
    struct admit_ep **p;

    if (ep == NULL)
        return;
    af = ep->af;
    pthread_mutex_lock(&registry_lock);
    if (--ep->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    for (p = &af->eps; *p != ep; p = &(*p)->next)
        ;
    *p = ep->next;
    pthread_mutex_unlock(&registry_lock);
    free(ep);
    admit_fn_put(af);
}

struct ratelimit_table *admit_fn_clients(struct admit_fn *af)
{
    pthread_mutex_lock(&registry_lock);
    if (af->clients == NULL)
        af->clients = ratelimit_table_new(CLIENT_TABLE_SIZE);
    pthread_mutex_unlock(&registry_lock);
    return af->clients;
}

/* Hands free slots to the oldest waiters; self, if granted, is not woken
 * (its caller goes on). Lock held. */
static void dispatch_locked(struct admit_fn *af, const struct admit_waiter *self)
{
    while (af->head != NULL && !__atomic_load_n(&af->gated, __ATOMIC_RELAXED)) {
        struct admit_waiter *wt = af->head;
        uint32_t n = __atomic_load_n(&af->inflight, __ATOMIC_SEQ_CST);

        if (n >= __atomic_load_n(&af->limit, __ATOMIC_RELAXED))
            return;
        if (!__atomic_compare_exchange_n(&af->inflight, &n, n + 1, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_RELAXED))
            continue; /* taken by admit_try meanwhile: look again */
        af->head = wt->next;
        if (af->head != NULL)
            af->head->prev = NULL;
        else
            af->tail = NULL;
        wt->next = wt->prev = NULL;
        __atomic_sub_fetch(&af->queued, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&wt->state, ADMIT_W_GRANTED, __ATOMIC_RELEASE);
        if (wt != self)
            wt->wake(wt);
    }
}

void admit_configure(struct admit_fn *af, unsigned limit, unsigned depth, bool readiness)
{
    pthread_mutex_lock(&af->lock);
    __atomic_store_n(&af->limit, limit != 0 ? (uint32_t)limit : UINT32_MAX, __ATOMIC_SEQ_CST);
    __atomic_store_n(&af->depth, (uint32_t)depth, __ATOMIC_RELAXED);
    af->has_readiness = readiness;
    if (!readiness)
        __atomic_store_n(&af->gated, false, __ATOMIC_SEQ_CST);
    dispatch_locked(af, NULL); /* a higher limit, or the gate gone */
    pthread_mutex_unlock(&af->lock);
}

enum admit_result admit_enqueue(struct admit_fn *af, struct admit_waiter *wt)
{
    enum admit_result r;

    pthread_mutex_lock(&af->lock);
    if (__atomic_load_n(&af->queued, __ATOMIC_RELAXED) >=
        __atomic_load_n(&af->depth, __ATOMIC_RELAXED)) {
        /* No room to wait; a free slot is still taken when nobody waits
         * (a queue of depth 0). */
        r = af->head == NULL && admit_try(af) ? ADMIT_OK : ADMIT_FULL;
        pthread_mutex_unlock(&af->lock);
        return r;
    }
    wt->next = NULL;
    wt->prev = af->tail;
    if (af->tail != NULL)
        af->tail->next = wt;
    else
        af->head = wt;
    af->tail = wt;
    __atomic_store_n(&wt->state, ADMIT_W_QUEUED, __ATOMIC_RELAXED);
    __atomic_add_fetch(&af->queued, 1, __ATOMIC_SEQ_CST);
    dispatch_locked(af, wt);
    r = __atomic_load_n(&wt->state, __ATOMIC_RELAXED) == ADMIT_W_GRANTED ? ADMIT_OK : ADMIT_QUEUED;
    if (r == ADMIT_OK)
        wt->state = ADMIT_W_IDLE;
    pthread_mutex_unlock(&af->lock);
    return r;
}

bool admit_cancel(struct admit_fn *af, struct admit_waiter *wt)
{
    bool granted;

    pthread_mutex_lock(&af->lock);
    granted = wt->state == ADMIT_W_GRANTED;
    if (wt->state == ADMIT_W_QUEUED) {
        if (wt->prev != NULL)
            wt->prev->next = wt->next;
        else
            af->head = wt->next;
        if (wt->next != NULL)
            wt->next->prev = wt->prev;
        else
            af->tail = wt->prev;
        wt->next = wt->prev = NULL;
        __atomic_sub_fetch(&af->queued, 1, __ATOMIC_SEQ_CST);
    }
    wt->state = ADMIT_W_IDLE;
    pthread_mutex_unlock(&af->lock);
    return granted;
}

void admit_release(struct admit_fn *af)
{
    __atomic_sub_fetch(&af->inflight, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&af->queued, __ATOMIC_SEQ_CST) == 0)
        return;
    pthread_mutex_lock(&af->lock);
    dispatch_locked(af, NULL);
    pthread_mutex_unlock(&af->lock);
}

void admit_set_ready(struct admit_fn *af, struct admit_ep *const *eps, size_t n)
{
    bool any = false;

    for (size_t i = 0; i < n && !any; i++)
        any = __atomic_load_n(&eps[i]->ready, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&af->lock);
    __atomic_store_n(&af->gated, af->has_readiness && !any, __ATOMIC_SEQ_CST);
    dispatch_locked(af, NULL);
    pthread_mutex_unlock(&af->lock);
}

static void (*down_hook)(void *arg);
static void *down_arg;

void admit_on_down(void (*hook)(void *arg), void *arg)
{
    pthread_mutex_lock(&registry_lock);
    down_hook = hook;
    down_arg = arg;
    pthread_mutex_unlock(&registry_lock);
}

void admit_ep_down(struct admit_ep *ep)
{
    if (!__atomic_exchange_n(&ep->ready, false, __ATOMIC_ACQ_REL))
        return; /* known already */
    pthread_mutex_lock(&registry_lock);
    if (down_hook != NULL)
        down_hook(down_arg);
    pthread_mutex_unlock(&registry_lock);
}

void admit_each(void (*fn)(const struct admit_fn *af, void *arg), void *arg)
{
    pthread_mutex_lock(&registry_lock);
    for (const struct admit_fn *af = registry; af != NULL; af = af->next)
        fn(af, arg);
    pthread_mutex_unlock(&registry_lock);
}
