/*
 * bench_admit.c - what admission costs a request when its limits are not
 * hit: a slot taken and given back (admit_try + admit_release), a token
 * from the function's rate limit, and one from a per-client table; on one
 * thread, and on two threads sharing the function (the cache line moves
 * between cores, as between two workers). Prints ns per request; asserts
 * nothing (see bench/micro/build.sh).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "admit.h"
#include "micro.h"
#include "ratelimit.h"

#define MEASURE(label, ops, body) MICRO_MEASURE(label, "request", 1, ops, body)

static struct admit_fn *af;
static struct ratelimit_params rate;
static struct ratelimit_table *clients;
static const long n = 10 * 1000 * 1000;

static void slot(long count)
{
    for (long i = 0; i < count; i++) {
        if (admit_try(af))
            admit_release(af);
    }
}

static void token(long count)
{
    struct ratelimit_result r;

    for (long i = 0; i < count; i++)
        ratelimit_take(&af->bucket, &rate, now_ns(), &r);
}

static void client_token(long count)
{
    static const char *const ips[4] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"};
    struct ratelimit_result r;

    for (long i = 0; i < count; i++)
        ratelimit_table_take(clients, ips[i & 3], 8, &rate, now_ns(), &r);
}

static void *run_slot(void *arg)
{
    slot(*(long *)arg);
    return NULL;
}

static void *run_token(void *arg)
{
    token(*(long *)arg);
    return NULL;
}

/* body on this thread and another at once; ns per request of either. */
static void two_threads(void *(*fn)(void *), long count)
{
    pthread_t t;

    if (pthread_create(&t, NULL, fn, &count) != 0)
        exit(1);
    fn(&count);
    pthread_join(t, NULL);
}

int main(void)
{
    af = admit_fn_get("bench");
    clients = ratelimit_table_new(16384);
    if (af == NULL || clients == NULL)
        return 1;
    admit_configure(af, 100000, 1000, false);
    ratelimit_params_init(&rate, 1000000000ull, 1000000); /* 1e6 rps: never spent */

    MEASURE("clock read (CLOCK_MONOTONIC), for scale", n, {
        volatile uint64_t s = 0;
        for (long i = 0; i < n; i++)
            s += now_ns();
    });
    MEASURE("max_concurrency: slot taken and freed", n, slot(n));
    MEASURE("rate_limit: one token (with its clock read)", n, token(n));
    MEASURE("rate_limit per client: one token", n, client_token(n));
    MEASURE("max_concurrency, 2 threads at once", 2 * n, two_threads(run_slot, n));
    MEASURE("rate_limit, 2 threads at once", 2 * n, two_threads(run_token, n));
    ratelimit_table_free(clients);
    admit_fn_put(af);
    return 0;
}
