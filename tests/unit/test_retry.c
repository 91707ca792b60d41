/*
 * test_retry.c - the retry decision, backoff, budget and header parsing
 * (policy/retry.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "retry.h"

static const struct retry_policy pol = {
    .max = 2,
    .on = RETRY_ON_CONNECT_FAILURE | RETRY_ON_RESET | RETRY_ON_GATEWAY_ERROR,
    .statuses = {429},
    .n_statuses = 1,
    .backoff_base_ms = 25,
    .backoff_max_ms = 250,
    .budget_permille = 200,
    .budget_min_per_s = 1,
    .replay_max = 65536,
};

/* A retry that every check lets through; each test spoils one fact. */
static struct retry_facts good(enum retry_cond c)
{
    return (struct retry_facts){
        .cond = c,
        .status = 503,
        .sent = true,
        .idempotent = true,
        .replayable = true,
        .retries = 0,
        .wait_ms = 10,
        .left_ms = 1000,
        .budget_ok = true,
    };
}

static void test_on_conditions(void **state)
{
    struct retry_policy p = pol;
    struct retry_facts f;
    (void)state;

    assert_int_equal(
        retry_decide(
            &p, &(struct retry_facts){.cond = RETRY_C_CONNECT, .left_ms = 10, .budget_ok = true}),
        RETRY_GO);
    f = good(RETRY_C_REFUSED); /* refused is a connect failure */
    assert_int_equal(retry_decide(&p, &f), RETRY_GO);
    p.on = RETRY_ON_REFUSED; /* refused alone: not a timed-out connect */
    assert_int_equal(retry_decide(&p, &f), RETRY_GO);
    f = good(RETRY_C_CONNECT);
    assert_int_equal(retry_decide(&p, &f), RETRY_NOT_ON);
    p = pol;
    f = good(RETRY_C_PER_TRY_TIMEOUT);
    assert_int_equal(retry_decide(&p, &f), RETRY_NOT_ON);
    p.on |= RETRY_ON_PER_TRY_TIMEOUT;
    assert_int_equal(retry_decide(&p, &f), RETRY_GO);

    /* Statuses: gateway-error is 502-504, 5xx all, retriable-4xx 409, codes. */
    p = pol;
    static const struct {
        unsigned on;
        int status;
        bool retried;
    } st[] = {
        {RETRY_ON_GATEWAY_ERROR, 502, true},
        {RETRY_ON_GATEWAY_ERROR, 503, true},
        {RETRY_ON_GATEWAY_ERROR, 504, true},
        {RETRY_ON_GATEWAY_ERROR, 500, false},
        {RETRY_ON_GATEWAY_ERROR, 505, false},
        {RETRY_ON_5XX, 500, true},
        {RETRY_ON_5XX, 599, true},
        {RETRY_ON_5XX, 499, false},
        {RETRY_ON_RETRIABLE_4XX, 409, true},
        {RETRY_ON_RETRIABLE_4XX, 408, false},
        {0, 429, true},
        {0, 428, false},
    };
    for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
        p.on = st[i].on;
        f = good(RETRY_C_STATUS);
        f.status = st[i].status;
        assert_int_equal(retry_decide(&p, &f), st[i].retried ? RETRY_GO : RETRY_NOT_ON);
        assert_true(retry_on_status(&p, st[i].status) == st[i].retried);
    }
}

/* The checks come in a fixed order: the reason counted is the first. */
static void test_skip_reasons_in_order(void **state)
{
    struct retry_facts f = good(RETRY_C_RESET);
    (void)state;

    f.budget_ok = false;
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_BUDGET);
    f.wait_ms = f.left_ms; /* ending at the deadline is past it */
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_DEADLINE);
    f.replayable = false;
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_BODY);
    f.idempotent = false;
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_NON_IDEMPOTENT);
    f.retries = 2;
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_MAX);
    assert_string_equal(retry_verdict_name(RETRY_SKIP_MAX), "max");
    assert_string_equal(retry_verdict_name(RETRY_SKIP_NON_IDEMPOTENT), "non_idempotent");
    assert_string_equal(retry_verdict_name(RETRY_SKIP_BODY), "body");
    assert_string_equal(retry_verdict_name(RETRY_SKIP_DEADLINE), "deadline");
    assert_string_equal(retry_verdict_name(RETRY_SKIP_BUDGET), "budget");
    assert_null(retry_verdict_name(RETRY_GO));
    assert_null(retry_verdict_name(RETRY_NOT_ON));
}

/* Nothing reached the function: any method, any body may go again. */
static void test_unsent_is_always_safe(void **state)
{
    struct retry_facts f = good(RETRY_C_REFUSED);
    (void)state;

    f.sent = false;
    f.idempotent = false;
    f.replayable = false;
    assert_int_equal(retry_decide(&pol, &f), RETRY_GO);
    f.sent = true;
    assert_int_equal(retry_decide(&pol, &f), RETRY_SKIP_NON_IDEMPOTENT);
}

static void test_backoff_full_jitter(void **state)
{
    (void)state;
    /* Caps: 25, 50, 100, 200, then 250 for ever. */
    static const uint64_t caps[] = {25, 50, 100, 200, 250, 250, 250};
    for (unsigned n = 0; n < sizeof(caps) / sizeof(caps[0]); n++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        uint64_t x = 0x9e3779b97f4a7c15ULL * (n + 1);
        for (int i = 0; i < 20000; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift */
            uint64_t b = retry_backoff_ms(&pol, n, x);
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
        }
        assert_int_equal(lo, 0);       /* full jitter reaches zero ... */
        assert_int_equal(hi, caps[n]); /* ... and the cap, never beyond */
    }
    assert_int_equal(retry_backoff_ms(&pol, 1000, UINT64_MAX), UINT64_MAX % 251);
    struct retry_policy zero = pol;
    zero.backoff_base_ms = zero.backoff_max_ms = 0;
    assert_int_equal(retry_backoff_ms(&zero, 3, 12345), 0);
}

static void test_budget(void **state)
{
    struct retry_budget b = {0};
    uint64_t now = 1000, made = 0;
    (void)state;

    /* 1000 requests in one second, each wanting a retry: 20% of them plus
     * min_per_s (1) over the 10 s window. */
    for (int i = 0; i < 1000; i++) {
        retry_budget_request(&b, now);
        if (retry_budget_allows(&b, &pol, now)) {
            retry_budget_spend(&b, now);
            made++;
        }
    }
    assert_int_equal(made, 200 + 10);
    /* The window slides: 10 s later the old second is gone. */
    now += RETRY_WINDOW_S;
    assert_true(retry_budget_allows(&b, &pol, now));
    for (int i = 0; i < 10; i++)
        retry_budget_spend(&b, now);
    assert_false(retry_budget_allows(&b, &pol, now)); /* min_per_s alone: 10 in the window */
    /* Half a window later the old seconds still count. */
    now += RETRY_WINDOW_S / 2;
    assert_false(retry_budget_allows(&b, &pol, now));
    /* A clock far ahead clears the lot. */
    now += 1000000;
    assert_true(retry_budget_allows(&b, &pol, now));
}

static void test_idempotent_methods(void **state)
{
    static const char *const yes[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    static const char *const no[] = {"POST", "PATCH", "CONNECT", "get", "GETX", ""};
    (void)state;

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(retry_method_idempotent(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(retry_method_idempotent(no[i], strlen(no[i])));
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(retry_after_ms("2", 1), 2000);
    assert_int_equal(retry_after_ms("0", 1), 0);
    assert_int_equal(retry_after_ms("120", 3), 120000);
    assert_int_equal(retry_after_ms("99999999999999999999", 20), 86400000);
    assert_int_equal(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 29), -1);
    assert_int_equal(retry_after_ms("-1", 2), -1);
    assert_int_equal(retry_after_ms("1.5", 3), -1);
    assert_int_equal(retry_after_ms("", 0), -1);
    assert_int_equal(retry_after_ms(NULL, 0), -1);
}

static void test_on_names(void **state)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"connect-failure", RETRY_ON_CONNECT_FAILURE},
        {"refused", RETRY_ON_REFUSED},
        {"reset", RETRY_ON_RESET},
        {"gateway-error", RETRY_ON_GATEWAY_ERROR},
        {"5xx", RETRY_ON_5XX},
        {"retriable-4xx", RETRY_ON_RETRIABLE_4XX},
        {"per-try-timeout", RETRY_ON_PER_TRY_TIMEOUT},
        {"503", 0},
        {"Reset", 0},
        {"connect-failures", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_int_equal(retry_on_bit(names[i].name, strlen(names[i].name)), names[i].bit);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_on_conditions),
        cmocka_unit_test(test_skip_reasons_in_order),
        cmocka_unit_test(test_unsent_is_always_safe),
        cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_idempotent_methods),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_on_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
