/*
 * test_exch.c - the exchange's pure parts: which deadline each phase has
 * and what a timeout there counts as, and what follows a failed attempt.
 * (The exchange on real sockets is the integration suite's.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "exch.h"

static const struct exch_timeouts limits = {.header_ms = 111,
                                            .connect_ms = 222,
                                            .timeout_ms = 333,
                                            .idle_ms = 666,
                                            .dns_ms = 444,
                                            .tunnel_ms = 555};

static void test_phase_deadlines(void **state)
{
    static const struct {
        enum exch_phase ph;
        uint64_t ms;
        enum metrics_timeout kind;
    } want[] = {
        {EXCH_PH_HEAD, 111, TMO_HEADER},        /* the client's head: header_timeout */
        {EXCH_PH_CONNECT, 222, TMO_CONNECT},    /* connect_timeout */
        {EXCH_PH_BODY, 666, TMO_BODY},          /* the client's body: idle_timeout */
        {EXCH_PH_SEND, 666, TMO_UPSTREAM},      /* the function taking the request */
        {EXCH_PH_WAIT_HEAD, 333, TMO_UPSTREAM}, /* the function's answer: timeout */
        {EXCH_PH_STREAM, 666, TMO_IDLE},        /* the answer's body, either side */
        {EXCH_PH_RESOLVE, 444, TMO_DNS},        /* an egress name: dns.timeout */
        {EXCH_PH_TUNNEL, 555, TMO_IDLE},        /* a CONNECT tunnel: tunnel_idle_timeout */
        {EXCH_PH_REPLY, 111, TMO__N},           /* fnproxy's own answer: not counted */
    };
    bool seen[EXCH_PH__N] = {0};

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        enum metrics_timeout kind = TMO__N + 1;

        assert_int_equal(exch_phase_timeout(want[i].ph, &limits, &kind), want[i].ms);
        assert_int_equal(kind, want[i].kind);
        seen[want[i].ph] = true;
    }
    /* Every phase with a wait is listed above; the rest have no kind. */
    for (int ph = 0; ph < EXCH_PH__N; ph++) {
        enum metrics_timeout kind = TMO__N + 1;

        assert_string_not_equal(exch_phase_name((enum exch_phase)ph), "?");
        if (seen[ph])
            continue;
        exch_phase_timeout((enum exch_phase)ph, &limits, &kind);
        assert_int_equal(kind, TMO__N);
    }
}

static void test_connect_failures_try_another_endpoint(void **state)
{
    static const enum exch_failure fs[] = {EXCH_FAIL_REFUSED, EXCH_FAIL_CONNECT_TIMEOUT,
                                           EXCH_FAIL_TLS};
    struct exch_attempt a = {0};

    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
        assert_int_equal(exch_decide(fs[i], UV_ECONNREFUSED, &a), EXCH_NEXT_RETRY);
        /* whatever the method or body: nothing reached the function */
        a.has_body = true;
        assert_int_equal(exch_decide(fs[i], UV_ECONNREFUSED, &a), EXCH_NEXT_RETRY);
        a.has_body = false;
    }
}

/* A pooled connection that breaks before the function said anything is
 * taken for stale: the request goes once more on a new connection, and only
 * then, and only without a body. Any other broken connection is for the
 * retry policy to judge (test_retry). */
static void test_stale_pooled_connection_retried_once(void **state)
{
    static const int errs[] = {UV_EOF, UV_ECONNRESET, UV_EPIPE};
    struct exch_attempt a = {.reused = true, .idempotent = true};

    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        assert_int_equal(exch_decide(EXCH_FAIL_RESET, errs[i], &a), EXCH_NEXT_FRESH);
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_ETIMEDOUT, &a), EXCH_NEXT_RETRY);

    a.stale_retried = true; /* the one retry was made */
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_EOF, &a), EXCH_NEXT_RETRY);
    a.stale_retried = false;
    a.reused = false; /* a new connection is not stale */
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_EOF, &a), EXCH_NEXT_RETRY);
    a.reused = true;
    a.got_bytes = true; /* the function had started answering */
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_EOF, &a), EXCH_NEXT_RETRY);
    a.got_bytes = false;
    a.has_body = true; /* not replayable */
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_EOF, &a), EXCH_NEXT_RETRY);
    a.has_body = false;
    a.idempotent = false; /* the function may have got it: for the retry policy */
    assert_int_equal(exch_decide(EXCH_FAIL_RESET, UV_EOF, &a), EXCH_NEXT_RETRY);
}

static void test_answers_and_aborts(void **state)
{
    struct exch_attempt a = {0};

    assert_int_equal(exch_decide(EXCH_FAIL_PROTOCOL, 0, &a), EXCH_NEXT_REPLY);
    assert_int_equal(exch_decide(EXCH_FAIL_TIMEOUT, UV_ETIMEDOUT, &a), EXCH_NEXT_REPLY);
    assert_int_equal(exch_decide(EXCH_FAIL_DEADLINE, UV_ETIMEDOUT, &a), EXCH_NEXT_REPLY);
    assert_int_equal(exch_decide(EXCH_FAIL_PER_TRY_TIMEOUT, UV_ETIMEDOUT, &a), EXCH_NEXT_RETRY);
    /* Once the answer's head went out, nothing but closing is left. */
    a.resp_started = true;
    for (int f = 0; f < EXCH_FAIL__N; f++)
        assert_int_equal(exch_decide((enum exch_failure)f, UV_EOF, &a), EXCH_NEXT_ABORT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_deadlines),
        cmocka_unit_test(test_connect_failures_try_another_endpoint),
        cmocka_unit_test(test_stale_pooled_connection_retried_once),
        cmocka_unit_test(test_answers_and_aborts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
