/*
 * test_outlier.c - consecutive-failure ejection (policy/outlier.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "outlier.h"

static const struct outlier_policy pol = {
    .consecutive_failures = 3,
    .base_ejection_ms = 1000,
    .max_ejection_ms = 2500,
    .max_ejected_percent = 50,
};

/* Fails s until it is ejected; returns the failures it took. */
static int fail_until_ejected(struct outlier_state *s, uint64_t now)
{
    for (int i = 1; i <= 100; i++)
        if (outlier_record(s, &pol, false, now, 0, 3))
            return i;
    return -1;
}

static void test_ejects_after_a_run(void **state)
{
    struct outlier_state s = {0};
    (void)state;

    assert_false(outlier_record(&s, &pol, false, 0, 0, 3));
    assert_false(outlier_record(&s, &pol, false, 0, 0, 3));
    assert_false(outlier_record(&s, &pol, true, 0, 0, 3)); /* a success breaks the run */
    assert_false(outlier_record(&s, &pol, false, 0, 0, 3));
    assert_false(outlier_record(&s, &pol, false, 0, 0, 3));
    assert_true(outlier_record(&s, &pol, false, 10, 0, 3));
    assert_true(outlier_ejected(&s, 10));
    assert_true(outlier_ejected(&s, 1009));
    assert_false(outlier_ejected(&s, 1010)); /* base: 1 s */
    /* Failures while ejected (requests in flight) change nothing. */
    assert_false(outlier_record(&s, &pol, false, 500, 0, 3));
    assert_int_equal(s.until_ms, 1010);
}

static void test_ejection_time_grows_and_is_capped(void **state)
{
    struct outlier_state s = {0};
    uint64_t now = 0;
    (void)state;

    assert_int_equal(fail_until_ejected(&s, now), 3);
    assert_int_equal(s.until_ms - now, 1000);
    now = s.until_ms; /* back, and failing again at once */
    assert_int_equal(fail_until_ejected(&s, now), 3);
    assert_int_equal(s.until_ms - now, 2000);
    now = s.until_ms;
    assert_int_equal(fail_until_ejected(&s, now), 3);
    assert_int_equal(s.until_ms - now, 2500); /* 3 s capped at max */
    /* Healthy for max_ejection_ms after the last ejection: forgotten. */
    now = s.until_ms + 2500;
    assert_false(outlier_record(&s, &pol, true, now, 0, 3));
    assert_int_equal(fail_until_ejected(&s, now), 3);
    assert_int_equal(s.until_ms - now, 1000);
}

static void test_max_ejected_share(void **state)
{
    struct outlier_state s = {0};
    (void)state;

    /* 1 of 3 ejected already: a second is 67% > 50%: not ejected, and it
     * stays "due", ejected on the first failure once room is made. */
    for (int i = 0; i < 5; i++)
        assert_false(outlier_record(&s, &pol, false, 0, 1, 3));
    assert_true(outlier_record(&s, &pol, false, 0, 0, 3));
    /* 2 of 4: the second fits 50%. */
    s = (struct outlier_state){0};
    assert_int_equal(fail_until_ejected(&s, 0), 3);
    s = (struct outlier_state){0};
    for (int i = 0; i < 2; i++)
        assert_false(outlier_record(&s, &pol, false, 0, 1, 4));
    assert_true(outlier_record(&s, &pol, false, 0, 1, 4));
    /* A lone endpoint is never ejected: there is nowhere else to go. */
    s = (struct outlier_state){0};
    for (int i = 0; i < 10; i++)
        assert_false(outlier_record(&s, &pol, false, 0, 0, 1));
    /* consecutive_failures 0: off. */
    struct outlier_policy off = pol;
    off.consecutive_failures = 0;
    s = (struct outlier_state){0};
    for (int i = 0; i < 10; i++)
        assert_false(outlier_record(&s, &off, false, 0, 0, 3));
}

/* failure_percent: 20% of 10 attempts, counted in blocks of 10. */
static void test_failure_share(void **state)
{
    struct outlier_policy p = pol;
    struct outlier_state s = {0};
    (void)state;

    p.failure_percent = 20;
    p.failure_window = 10;
    /* One failure in ten, never two in a row: a share of 10%, kept. */
    for (int block = 0; block < 5; block++)
        for (int i = 0; i < 10; i++)
            assert_false(outlier_record(&s, &p, i != 4, 0, 0, 3));
    /* Two in ten, apart: 20%, ejected at the end of the block. */
    for (int i = 0; i < 9; i++)
        assert_false(outlier_record(&s, &p, i != 2 && i != 6, 0, 0, 3));
    assert_true(outlier_record(&s, &p, true, 0, 0, 3));
    assert_true(outlier_ejected(&s, 500));
    /* Back: a fresh window, not the old one's failures. */
    for (int i = 0; i < 9; i++)
        assert_false(outlier_record(&s, &p, i != 0, 1000, 0, 3));
    assert_false(outlier_record(&s, &p, true, 1000, 0, 3));
    /* Off (percent 0): the same failures never eject by share. */
    p.failure_percent = 0;
    s = (struct outlier_state){0};
    for (int i = 0; i < 100; i++)
        assert_false(outlier_record(&s, &p, i % 2 == 0, 0, 0, 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ejects_after_a_run),
        cmocka_unit_test(test_ejection_time_grows_and_is_capped),
        cmocka_unit_test(test_max_ejected_share),
        cmocka_unit_test(test_failure_share),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
