/*
 * test_ratelimit.c - GCRA buckets, the per-client table and the RateLimit
 * header fields (policy/ratelimit.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#define S UINT64_C(1000000000)
#define MS UINT64_C(1000000)

static struct ratelimit_params params(uint64_t rate_milli, unsigned burst)
{
    struct ratelimit_params p;

    ratelimit_params_init(&p, rate_milli, burst);
    return p;
}

static bool take(struct ratelimit_bucket *b, const struct ratelimit_params *p, uint64_t now)
{
    struct ratelimit_result r;

    ratelimit_take(b, p, now, &r);
    return r.allowed;
}

static void test_params(void **state)
{
    struct ratelimit_params p = params(2500, 5);
    (void)state;

    assert_int_equal(p.interval_ns, 400 * MS);
    assert_int_equal(p.burst, 5);
    assert_int_equal(p.capacity_ns, 2 * S);
    p = params(0, 0); /* taken as 0.001 rps, burst 1 */
    assert_int_equal(p.interval_ns, 1000 * S);
    assert_int_equal(p.burst, 1);
    assert_int_equal(p.capacity_ns, 1000 * S);
    p = params(UINT64_MAX, 3); /* faster than the clock: one per ns */
    assert_int_equal(p.interval_ns, 1);
    assert_int_equal(p.capacity_ns, 3);
}

/* The whole burst passes at one instant, then nothing; a zeroed bucket is
 * full even at now == 0. */
static void test_burst_then_denied(void **state)
{
    struct ratelimit_params p = params(10000, 5); /* 10 rps */
    struct ratelimit_bucket b = {0};
    (void)state;

    for (int i = 0; i < 5; i++)
        assert_true(take(&b, &p, 0));
    assert_false(take(&b, &p, 0));
    assert_false(take(&b, &p, 0));
    assert_int_equal(b.tat, 5 * 100 * MS); /* denials leave it as it was */
}

static void test_refill_after_exactly_t(void **state)
{
    struct ratelimit_params p = params(10000, 1); /* T = 100 ms */
    struct ratelimit_bucket b = {0};
    struct ratelimit_result r;
    (void)state;

    uint64_t t0 = 7 * S;
    assert_true(take(&b, &p, t0));
    ratelimit_take(&b, &p, t0 + 100 * MS - 1, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, 1);
    assert_true(take(&b, &p, t0 + 100 * MS));
    assert_false(take(&b, &p, t0 + 100 * MS));
}

/* 0.5 rps: one every 2 s. */
static void test_fractional_rps(void **state)
{
    struct ratelimit_params p = params(500, 1);
    struct ratelimit_bucket b = {0};
    unsigned admitted = 0;
    (void)state;

    assert_int_equal(p.interval_ns, 2 * S);
    assert_true(take(&b, &p, 0));
    assert_false(take(&b, &p, 2 * S - 1));
    assert_true(take(&b, &p, 2 * S));
    assert_false(take(&b, &p, 3 * S));
    assert_true(take(&b, &p, 4 * S));

    b.tat = 0;
    for (uint64_t now = 0; now <= 10 * S; now += 100 * MS)
        admitted += take(&b, &p, now);
    assert_int_equal(admitted, 6); /* 0, 2, 4, 6, 8, 10 s */
}

static void test_result_values(void **state)
{
    struct ratelimit_params p = params(2000, 4); /* T = 500 ms, full in 2 s */
    struct ratelimit_bucket b = {0};
    struct ratelimit_result r;
    (void)state;

    ratelimit_take(&b, &p, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    assert_int_equal(r.retry_after_ns, 0);
    assert_int_equal(r.reset_ns, 500 * MS);
    ratelimit_take(&b, &p, 0, &r);
    ratelimit_take(&b, &p, 0, &r);
    ratelimit_take(&b, &p, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ns, 2 * S);

    ratelimit_take(&b, &p, 200 * MS, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_ns, 300 * MS);
    assert_int_equal(r.reset_ns, 1800 * MS);

    /* 1.2 s later 2.4 tokens came back: one taken, one whole one left. */
    ratelimit_take(&b, &p, 1200 * MS, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 1);
    assert_int_equal(r.reset_ns, 1300 * MS);

    /* Long idle: full again, never fuller. */
    ratelimit_take(&b, &p, 60 * S, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    assert_int_equal(r.reset_ns, 500 * MS);
}

/* Starting full, a window of W admits burst + rps * W: offered far more,
 * every millisecond, for 10 s at 100 rps, burst 20. */
static void test_window_admits_burst_plus_rate(void **state)
{
    struct ratelimit_params p = params(100000, 20);
    struct ratelimit_bucket b = {0};
    unsigned admitted = 0;
    (void)state;

    for (uint64_t now = 0; now <= 10 * S; now += MS)
        for (int i = 0; i < 5; i++)
            admitted += take(&b, &p, now);
    assert_int_equal(admitted, 20 + 1000);
}

static void test_no_overflow(void **state)
{
    struct ratelimit_params p = params(1, 1000000); /* 0.001 rps: T = 1000 s */
    struct ratelimit_bucket b = {0};
    struct ratelimit_result r;
    (void)state;

    assert_int_equal(p.interval_ns, 1000 * S);
    assert_int_equal(p.capacity_ns, UINT64_C(1000000) * 1000 * S); /* 1e18 fits */
    ratelimit_take(&b, &p, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 999999);
    assert_int_equal(r.reset_ns, 1000 * S);

    /* burst * T past 2^64: clamped, and still a working bucket. */
    p = params(1, 4000000000u);
    assert_int_equal(p.capacity_ns, RATELIMIT_CAPACITY_MAX_NS);
    b.tat = 0;
    uint64_t now = UINT64_C(1) << 62; /* a clock far from zero */
    ratelimit_take(&b, &p, now, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, RATELIMIT_CAPACITY_MAX_NS / (1000 * S) - 1);
    assert_int_equal(r.reset_ns, 1000 * S);
    b.tat = now + RATELIMIT_CAPACITY_MAX_NS; /* deepest debt there is */
    ratelimit_take(&b, &p, now, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, 1000 * S);
    assert_int_equal(r.reset_ns, RATELIMIT_CAPACITY_MAX_NS);

    /* Burst 1 at 0.001 rps: the next one in 1000 s. */
    p = params(1, 1);
    b.tat = 0;
    assert_true(take(&b, &p, 5));
    ratelimit_take(&b, &p, 5, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, 1000 * S);
}

/* The bucket outlives a reload; the new params apply from the next take. */
static void test_params_change(void **state)
{
    struct ratelimit_params slow = params(1000, 2), fast = params(10000, 2);
    struct ratelimit_bucket b = {0};
    (void)state;

    assert_true(take(&b, &slow, 0));
    assert_true(take(&b, &slow, 0));
    assert_false(take(&b, &slow, 500 * MS)); /* 1 rps: not before 1 s */
    /* The debt is kept as time (2 s); at 10 rps, burst 2, the first
     * request passes once it is under 200 ms - 100 ms: at 1.9 s. */
    assert_false(take(&b, &fast, 1899 * MS));
    assert_true(take(&b, &fast, 1900 * MS));
    assert_false(take(&b, &fast, 1900 * MS));
    assert_true(take(&b, &fast, 2000 * MS));
}

#define N_THREADS 4
#define TRIES 100000

struct racer {
    pthread_t thread;
    unsigned *ready;                 /* threads at the start line */
    struct ratelimit_bucket *bucket; /* or */
    struct ratelimit_table *table;   /* ... with key */
    const char *key;
    const struct ratelimit_params *p;
    uint64_t now;
    unsigned admitted;
};

static void *racer_main(void *arg)
{
    struct racer *x = arg;
    struct ratelimit_result r;

    /* Spin rather than sleep on a barrier: the threads then start within
     * nanoseconds of each other and really race, even on two CPUs. */
    __atomic_add_fetch(x->ready, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(x->ready, __ATOMIC_ACQUIRE) < N_THREADS)
        sched_yield();
    for (int i = 0; i < TRIES; i++) {
        if (x->bucket != NULL)
            ratelimit_take(x->bucket, x->p, x->now, &r);
        else
            ratelimit_table_take(x->table, x->key, strlen(x->key), x->p, x->now, &r);
        x->admitted += r.allowed;
    }
    return NULL;
}

/* Threads hammer one bucket (or one client's) at a fixed now: exactly the
 * burst passes, none lost to a race, none twice. */
static unsigned race(struct ratelimit_bucket *b, struct ratelimit_table *t,
                     const struct ratelimit_params *p, uint64_t now)
{
    struct racer x[N_THREADS];
    unsigned ready = 0, total = 0;

    for (int i = 0; i < N_THREADS; i++) {
        x[i] = (struct racer){
            .ready = &ready, .bucket = b, .table = t, .key = "spiffe://a", .p = p, .now = now};
        assert_int_equal(pthread_create(&x[i].thread, NULL, racer_main, &x[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(x[i].thread, NULL);
        total += x[i].admitted;
    }
    return total;
}

static void test_concurrent_takes(void **state)
{
    struct ratelimit_params p = params(1000, 200000);
    struct ratelimit_bucket b;
    struct ratelimit_table *t = ratelimit_table_new(64);
    (void)state;

    assert_non_null(t);
    /* A lost update needs two threads inside one take at once: rounds
     * make a race that happens to be missed unlikely to be missed again. */
    for (int i = 0; i < 8; i++) {
        b.tat = 0;
        assert_int_equal(race(&b, NULL, &p, 42), 200000);
        assert_int_equal(race(NULL, t, &p, 42 + i * 2 * p.capacity_ns), 200000);
    }
    ratelimit_table_free(t);
}

static bool ttake(struct ratelimit_table *t, const char *key, const struct ratelimit_params *p,
                  uint64_t now, struct ratelimit_result *r)
{
    ratelimit_table_take(t, key, strlen(key), p, now, r);
    return r->allowed;
}

static void test_table_keeps_clients_apart(void **state)
{
    struct ratelimit_params p = params(1000, 3);
    struct ratelimit_table *t = ratelimit_table_new(16384);
    struct ratelimit_result r;
    (void)state;

    assert_non_null(t);
    for (int i = 0; i < 3; i++)
        assert_true(ttake(t, "10.0.0.1", &p, 0, &r));
    assert_false(ttake(t, "10.0.0.1", &p, 0, &r));
    assert_true(ttake(t, "10.0.0.10", &p, 0, &r)); /* a prefix is another key */
    assert_int_equal(r.remaining, 2);
    assert_true(ttake(t, "", &p, 0, &r)); /* no identity: a key too */
    assert_false(ttake(t, "10.0.0.1", &p, 0, &r));
    assert_true(ttake(t, "10.0.0.1", &p, S, &r));
    ratelimit_table_free(t);
}

/* A table of 8 is one stripe whose window is every slot, whatever the seed. */
static void fill(struct ratelimit_table *t, const struct ratelimit_params *p, const int *takes)
{
    struct ratelimit_result r;
    char key[16];

    for (int c = 0; c < 8; c++)
        for (int i = 0; i < takes[c]; i++) {
            snprintf(key, sizeof(key), "client-%d", c);
            assert_true(ttake(t, key, p, 0, &r));
        }
}

/* Each client c of 8 takes once more at now and must see `remaining`;
 * -1: it was forgotten (a fresh bucket: burst - 1). */
static void check_kept(struct ratelimit_table *t, const struct ratelimit_params *p, uint64_t now,
                       const int *remaining, int skip)
{
    struct ratelimit_result r;
    char key[16];

    for (int c = 0; c < 8; c++) {
        if (c == skip)
            continue;
        snprintf(key, sizeof(key), "client-%d", c);
        ratelimit_table_take(t, key, strlen(key), p, now, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, remaining[c]);
    }
}

/* Which slot a key starts its window at follows from the seed: each
 * eviction test runs on this many tables, so that a wrong choice that
 * happens to be right for one seed cannot pass. */
#define SEEDS 16

static void test_eviction_prefers_full(void **state)
{
    struct ratelimit_params p = params(1000, 10); /* T = 1 s */
    struct ratelimit_result r;
    /* At 2 s only client 3 is full again (TAT 1 s): its slot is taken,
     * which costs it nothing. */
    static const int takes[8] = {6, 7, 8, 1, 5, 6, 3, 8};
    /* At 2 s, one more: 10 - (takes + 1 - 2); client 3 skipped. */
    static const int left[8] = {5, 4, 3, -1, 6, 5, 8, 3};
    (void)state;

    for (int i = 0; i < SEEDS; i++) {
        struct ratelimit_table *t = ratelimit_table_new(8);
        assert_non_null(t);
        fill(t, &p, takes);
        assert_true(ttake(t, "newcomer", &p, 2 * S, &r));
        assert_int_equal(r.remaining, 9);
        check_kept(t, &p, 2 * S, left, 3);
        /* Client 3 comes back to the full bucket it had. */
        assert_true(ttake(t, "client-3", &p, 2 * S, &r));
        assert_int_equal(r.remaining, 9);
        ratelimit_table_free(t);
    }
}

static void test_eviction_at_capacity_takes_closest(void **state)
{
    struct ratelimit_params p = params(1000, 10);
    struct ratelimit_result r;
    /* All in debt at 0.5 s; client 5 (TAT 2 s) is the closest to full. */
    static const int takes[8] = {4, 7, 3, 9, 5, 2, 6, 8};
    /* At 0.5 s, one more: floor(10 - (takes + 1 - 0.5)). */
    static const int left[8] = {5, 2, 6, 0, 4, -1, 3, 1};
    (void)state;

    for (int i = 0; i < SEEDS; i++) {
        struct ratelimit_table *t = ratelimit_table_new(8);
        assert_non_null(t);
        fill(t, &p, takes);
        assert_true(ttake(t, "newcomer", &p, 500 * MS, &r));
        assert_int_equal(r.remaining, 9);
        check_kept(t, &p, 500 * MS, left, 5);
        /* Client 5 was forgotten: it comes back to a full bucket. */
        assert_true(ttake(t, "client-5", &p, 500 * MS, &r));
        assert_int_equal(r.remaining, 9);
        ratelimit_table_free(t);
    }
}

static void test_siphash_vectors(void **state)
{
    uint8_t key[16], msg[16];
    /* vectors_sip64 of the reference implementation, for n = 0, 1, 7, 8, 15 */
    static const struct {
        size_t n;
        uint64_t h;
    } v[] = {
        {0, UINT64_C(0x726fdb47dd0e0e31)}, {1, UINT64_C(0x74f839c593dc67fd)},
        {7, UINT64_C(0xab0200f58b01d137)}, {8, UINT64_C(0x93f5f5799a932462)},
        {9, UINT64_C(0x9e0082df0ba9e4b0)}, {15, UINT64_C(0xa129ca6149be45e5)},
    };
    (void)state;

    for (int i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_int_equal(ratelimit_siphash24(key, msg, v[i].n), v[i].h);
}

static void test_headers(void **state)
{
    struct ratelimit_params p = params(400, 2); /* T = 2.5 s, full in 5 s */
    struct ratelimit_bucket b = {0};
    struct ratelimit_result r, denied_r;
    char buf[256];
    size_t n;
    (void)state;

    ratelimit_take(&b, &p, 0, &r);
    n = ratelimit_headers(buf, sizeof(buf), "thumbnail", &p, &r);
    static const char allowed[] = "RateLimit-Policy: \"thumbnail\";q=2;w=5\r\n"
                                  "RateLimit: \"thumbnail\";r=1;t=0\r\n";
    assert_int_equal(n, strlen(allowed));
    assert_string_equal(buf, allowed);

    /* The last token: the next one in 2.5 s, rounded up. */
    ratelimit_take(&b, &p, 0, &r);
    assert_true(r.allowed);
    assert_int_not_equal(ratelimit_headers(buf, sizeof(buf), "thumbnail", &p, &r), 0);
    assert_string_equal(buf, "RateLimit-Policy: \"thumbnail\";q=2;w=5\r\n"
                             "RateLimit: \"thumbnail\";r=0;t=3\r\n");

    ratelimit_take(&b, &p, 0, &denied_r);
    assert_false(denied_r.allowed);
    n = ratelimit_headers(buf, sizeof(buf), "fn_a.v-2", &p, &denied_r);
    static const char denied[] = "RateLimit-Policy: \"fn_a.v-2\";q=2;w=5\r\n"
                                 "RateLimit: \"fn_a.v-2\";r=0;t=3\r\n"
                                 "Retry-After: 3\r\n";
    assert_int_equal(n, strlen(denied));
    assert_string_equal(buf, denied);

    /* A wait under a second is still 1. */
    ratelimit_take(&b, &p, 4900 * MS, &r);
    ratelimit_take(&b, &p, 4900 * MS, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, 100 * MS);
    assert_int_not_equal(ratelimit_headers(buf, sizeof(buf), "f", &p, &r), 0);
    assert_string_equal(buf, "RateLimit-Policy: \"f\";q=2;w=5\r\n"
                             "RateLimit: \"f\";r=0;t=1\r\n"
                             "Retry-After: 1\r\n");

    /* Names outside [A-Za-z0-9_.-] are not quoted through. */
    static const char *const bad[] = {"a b", "x\"y", "", "caf\xc3\xa9", "a\r\nX: 1", NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_not_equal(ratelimit_headers(buf, sizeof(buf), bad[i], &p, &r), 0);
        assert_string_equal(buf, "RateLimit-Policy: \"default\";q=2;w=5\r\n"
                                 "RateLimit: \"default\";r=0;t=1\r\n"
                                 "Retry-After: 1\r\n");
    }

    /* It fits only with room for the NUL. */
    n = strlen(denied);
    assert_int_equal(ratelimit_headers(buf, n, "fn_a.v-2", &p, &denied_r), 0);
    assert_int_equal(ratelimit_headers(buf, 10, "fn_a.v-2", &p, &denied_r), 0);
    assert_int_equal(ratelimit_headers(NULL, 0, "fn_a.v-2", &p, &denied_r), 0);
    assert_int_equal(ratelimit_headers(buf, n + 1, "fn_a.v-2", &p, &denied_r), n);
    assert_string_equal(buf, denied);

    /* w rounds the refill time up: 3 tokens at 2 rps refill in 1.5 s. */
    p = params(2000, 3);
    b.tat = 0;
    ratelimit_take(&b, &p, 0, &r);
    assert_int_not_equal(ratelimit_headers(buf, sizeof(buf), "f", &p, &r), 0);
    assert_string_equal(buf, "RateLimit-Policy: \"f\";q=3;w=2\r\n"
                             "RateLimit: \"f\";r=2;t=0\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_burst_then_denied),
        cmocka_unit_test(test_refill_after_exactly_t),
        cmocka_unit_test(test_fractional_rps),
        cmocka_unit_test(test_result_values),
        cmocka_unit_test(test_window_admits_burst_plus_rate),
        cmocka_unit_test(test_no_overflow),
        cmocka_unit_test(test_params_change),
        cmocka_unit_test(test_concurrent_takes),
        cmocka_unit_test(test_table_keeps_clients_apart),
        cmocka_unit_test(test_eviction_prefers_full),
        cmocka_unit_test(test_eviction_at_capacity_takes_closest),
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_headers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
