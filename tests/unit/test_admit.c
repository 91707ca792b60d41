/*
 * test_admit.c - the admission queue and limits (proxy/admit.h): slots,
 * FIFO hand-over, depth, cancel, the readiness gate, reloads, and a limit
 * that holds under threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "admit.h"

/* A waiter that counts its wake-ups and remembers their order. */
struct tw {
    struct admit_waiter wt;
    int woken;
    int order;
};
static int wake_seq;

static void on_wake(struct admit_waiter *wt)
{
    struct tw *t = (struct tw *)wt;

    t->woken++;
    t->order = ++wake_seq;
}

static struct admit_fn *fn_with(const char *name, unsigned limit, unsigned depth)
{
    struct admit_fn *af = admit_fn_get(name);

    assert_non_null(af);
    admit_configure(af, limit, depth, false);
    return af;
}

static void test_limit_and_hand_over(void **state)
{
    struct admit_fn *af = fn_with("one", 1, 10);
    struct tw a = {.wt.wake = on_wake};

    (void)state;
    assert_true(admit_try(af));
    assert_false(admit_try(af)); /* the one slot is taken */
    assert_int_equal(admit_enqueue(af, &a.wt), ADMIT_QUEUED);
    assert_int_equal(af->queued, 1);
    assert_false(admit_granted(&a.wt));
    admit_release(af);
    /* Handed over: still one in flight, nobody waiting, the waiter woken once. */
    assert_true(admit_granted(&a.wt));
    assert_int_equal(a.woken, 1);
    assert_int_equal(af->inflight, 1);
    assert_int_equal(af->queued, 0);
    admit_release(af);
    assert_int_equal(af->inflight, 0);
    assert_true(admit_try(af));
    admit_release(af);
    admit_fn_put(af);
}

static void test_fifo_order(void **state)
{
    struct admit_fn *af = fn_with("fifo", 1, 10);
    struct tw w[4];

    (void)state;
    wake_seq = 0;
    assert_true(admit_try(af));
    for (int i = 0; i < 4; i++) {
        w[i] = (struct tw){.wt.wake = on_wake};
        assert_int_equal(admit_enqueue(af, &w[i].wt), ADMIT_QUEUED);
    }
    /* A newcomer does not overtake the queue even when a slot is free for
     * an instant: admit_try refuses while anyone waits. */
    for (int i = 0; i < 4; i++) {
        admit_release(af);
        assert_false(admit_try(af));
        assert_int_equal(w[i].order, i + 1);
        for (int j = i + 1; j < 4; j++)
            assert_int_equal(w[j].woken, 0);
    }
    admit_release(af);
    assert_int_equal(af->inflight, 0);
    admit_fn_put(af);
}

static void test_depth(void **state)
{
    struct admit_fn *af = fn_with("depth", 1, 2);
    struct tw w[3];

    (void)state;
    for (int i = 0; i < 3; i++)
        w[i] = (struct tw){.wt.wake = on_wake};
    assert_true(admit_try(af));
    assert_int_equal(admit_enqueue(af, &w[0].wt), ADMIT_QUEUED);
    assert_int_equal(admit_enqueue(af, &w[1].wt), ADMIT_QUEUED);
    assert_int_equal(admit_enqueue(af, &w[2].wt), ADMIT_FULL);
    assert_int_equal(af->queued, 2);
    assert_false(admit_cancel(af, &w[0].wt));
    assert_false(admit_cancel(af, &w[1].wt));
    admit_release(af);
    assert_int_equal(w[0].woken + w[1].woken, 0);

    /* Depth 0: a free slot is taken, a busy function refuses at once. */
    admit_configure(af, 1, 0, false);
    assert_int_equal(admit_enqueue(af, &w[0].wt), ADMIT_OK);
    assert_int_equal(admit_enqueue(af, &w[1].wt), ADMIT_FULL);
    admit_release(af);
    admit_fn_put(af);
}

static void test_cancel(void **state)
{
    struct admit_fn *af = fn_with("cancel", 1, 10);
    struct tw a = {.wt.wake = on_wake}, b = {.wt.wake = on_wake}, c = {.wt.wake = on_wake};

    (void)state;
    assert_true(admit_try(af));
    assert_int_equal(admit_enqueue(af, &a.wt), ADMIT_QUEUED);
    assert_int_equal(admit_enqueue(af, &b.wt), ADMIT_QUEUED);
    assert_int_equal(admit_enqueue(af, &c.wt), ADMIT_QUEUED);
    /* The middle one leaves: the list stays whole. */
    assert_false(admit_cancel(af, &b.wt));
    assert_int_equal(af->queued, 2);
    admit_release(af);
    assert_true(admit_granted(&a.wt));
    /* Granted, then given up (its client left): the caller holds the slot. */
    assert_true(admit_cancel(af, &a.wt));
    admit_release(af);
    assert_true(admit_granted(&c.wt));
    assert_int_equal(b.woken, 0);
    admit_release(af);
    assert_int_equal(af->inflight, 0);
    assert_int_equal(af->queued, 0);
    admit_fn_put(af);
}

static void test_readiness_gate(void **state)
{
    struct admit_fn *af = admit_fn_get("cold");
    struct admit_ep *eps[2];
    struct tw w[3];

    (void)state;
    eps[0] = admit_ep_get(af, "127.0.0.1:9001");
    eps[1] = admit_ep_get(af, "127.0.0.1:9002");
    assert_ptr_equal(admit_ep_get(af, "127.0.0.1:9001"), eps[0]); /* shared by address */
    admit_ep_put(eps[0]);
    admit_configure(af, 2, 10, true);
    admit_set_ready(af, eps, 2);
    assert_true(af->gated);
    /* Nothing in flight, still every request waits. */
    assert_false(admit_try(af));
    wake_seq = 0;
    for (int i = 0; i < 3; i++) {
        w[i] = (struct tw){.wt.wake = on_wake};
        assert_int_equal(admit_enqueue(af, &w[i].wt), ADMIT_QUEUED);
    }
    /* One endpoint answers: the first two go (the limit), in order. */
    __atomic_store_n(&eps[1]->ready, true, __ATOMIC_RELEASE);
    admit_set_ready(af, eps, 2);
    assert_false(af->gated);
    assert_int_equal(w[0].order, 1);
    assert_int_equal(w[1].order, 2);
    assert_int_equal(w[2].woken, 0);
    admit_release(af);
    assert_int_equal(w[2].order, 3);
    /* It refuses connections: gated again once told. */
    admit_ep_down(eps[1]);
    admit_set_ready(af, eps, 2);
    assert_true(af->gated);
    admit_release(af);
    admit_release(af);
    admit_ep_put(eps[0]);
    admit_ep_put(eps[1]);
    admit_fn_put(af);
}

/* A reload keeps the count in flight and the queue; a higher limit lets
 * waiters go at once, a lower one only as slots free. */
static void test_reload_keeps_state(void **state)
{
    struct admit_fn *af = fn_with("reload", 1, 10);
    struct admit_fn *again;
    struct tw a = {.wt.wake = on_wake}, b = {.wt.wake = on_wake};

    (void)state;
    assert_true(admit_try(af));
    assert_int_equal(admit_enqueue(af, &a.wt), ADMIT_QUEUED);
    assert_int_equal(admit_enqueue(af, &b.wt), ADMIT_QUEUED);
    again = admit_fn_get("reload"); /* the new snapshot's */
    assert_ptr_equal(again, af);
    admit_configure(again, 2, 10, false);
    assert_true(admit_granted(&a.wt));
    assert_false(admit_granted(&b.wt));
    assert_int_equal(af->inflight, 2);
    admit_fn_put(af); /* the old snapshot goes */
    admit_configure(again, 1, 10, false);
    admit_release(again); /* 2 -> 1: at the new limit, b still waits */
    assert_false(admit_granted(&b.wt));
    admit_release(again);
    assert_true(admit_granted(&b.wt));
    admit_release(again);
    assert_int_equal(again->inflight, 0);
    admit_fn_put(again);
}

/* Threads share a limit of 3: never more than 3 inside, every one of them
 * gets in, whether by the fast path or a hand-over. */
#define THREADS 4
#define ROUNDS 20000
static struct admit_fn *shared;
static int inside, most_inside;

struct twait {
    struct admit_waiter wt;
    pthread_mutex_t m;
    pthread_cond_t c;
    bool woken;
};

static void on_wake_cond(struct admit_waiter *wt)
{
    struct twait *t = (struct twait *)wt;

    pthread_mutex_lock(&t->m);
    t->woken = true;
    pthread_cond_signal(&t->c);
    pthread_mutex_unlock(&t->m);
}

static void *worker_thread(void *arg)
{
    struct twait t = {.wt.wake = on_wake_cond};

    (void)arg;
    pthread_mutex_init(&t.m, NULL);
    pthread_cond_init(&t.c, NULL);
    for (int i = 0; i < ROUNDS; i++) {
        if (!admit_try(shared)) {
            t.woken = false;
            enum admit_result r = admit_enqueue(shared, &t.wt);
            assert_int_not_equal(r, ADMIT_FULL); /* room for every thread */
            if (r == ADMIT_QUEUED) {
                pthread_mutex_lock(&t.m);
                while (!t.woken)
                    pthread_cond_wait(&t.c, &t.m);
                pthread_mutex_unlock(&t.m);
                assert_true(admit_granted(&t.wt));
                t.wt.state = ADMIT_W_IDLE;
            }
        }
        int n = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
        int m = __atomic_load_n(&most_inside, __ATOMIC_RELAXED);
        while (n > m && !__atomic_compare_exchange_n(&most_inside, &m, n, false, __ATOMIC_RELAXED,
                                                     __ATOMIC_RELAXED))
            ;
        __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
        admit_release(shared);
    }
    pthread_cond_destroy(&t.c);
    pthread_mutex_destroy(&t.m);
    return NULL;
}

static void test_threads_share_the_limit(void **state)
{
    pthread_t th[THREADS];

    (void)state;
    shared = fn_with("threads", 3, THREADS);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker_thread, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_true(most_inside <= 3);
    assert_true(most_inside >= 1);
    assert_int_equal(shared->inflight, 0);
    assert_int_equal(shared->queued, 0);
    admit_fn_put(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_and_hand_over),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_readiness_gate),
        cmocka_unit_test(test_reload_keeps_state),
        cmocka_unit_test(test_threads_share_the_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
