/*
 * test_trace.c - W3C Trace Context values (proxy/trace.c): what a received
 * traceparent must look like to be kept, the versioning rules, the line
 * fnproxy sends, and ids that are never all zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static bool parse(const char *v, struct trace_ctx *t)
{
    memset(t, 0x5a, sizeof(*t));
    return trace_parse(t, v, strlen(v));
}

static void test_valid(void **state)
{
    struct trace_ctx t;

    assert_true(parse("00-" TID "-" PID "-01", &t));
    assert_string_equal(t.trace_id, TID);
    assert_int_equal(t.flags, 1);
    assert_true(t.kept);
    assert_true(trace_known(&t));

    assert_true(parse("00-" TID "-" PID "-00", &t));
    assert_int_equal(t.flags, 0);
    /* Only the sampled bit is defined in level 1; the others are cleared. */
    assert_true(parse("00-" TID "-" PID "-03", &t));
    assert_int_equal(t.flags, 1);
    assert_true(parse("00-" TID "-" PID "-fe", &t));
    assert_int_equal(t.flags, 0);
    assert_true(parse("00-" TID "-" PID "-ff", &t));
    assert_int_equal(t.flags, 1);
    /* Ids with one nonzero digit are fine. */
    assert_true(parse("00-00000000000000000000000000000001-0000000000000001-01", &t));
    assert_string_equal(t.trace_id, "00000000000000000000000000000001");
}

static void test_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "00",
        "garbage",
        "00-" TID "-" PID "-0",                           /* short */
        "00-" TID "-" PID "-01-",                         /* 00 is exactly 55 characters */
        "00-" TID "-" PID "-01-extra",                    /* ... even after a dash */
        "00-" TID "-" PID "-010",                         /* long */
        "00-" TID "0-" PID "-01",                         /* trace id too long */
        "00-" TID "-" PID "0-1",                          /* parent id too long */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* upper case */
        "00-" TID "-00F067AA0BA902B7-01",
        "00-" TID "-" PID "-0A",
        "0A-" TID "-" PID "-01",
        "00-00000000000000000000000000000000-" PID "-01", /* all-zero trace id */
        "00-" TID "-0000000000000000-01",                 /* all-zero parent id */
        "ff-" TID "-" PID "-01",                          /* version ff is forbidden */
        "00_" TID "-" PID "-01",
        "00-" TID "_" PID "-01",
        "00-" TID "-" PID "_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-" PID "-01", /* not hex */
        "00-" TID "-00f067aa0ba902bz-01",
        "00-" TID "-" PID "-0g",
        "0g-" TID "-" PID "-01",
        "00- " TID "-" PID "-01",
        "00-" TID "-" PID "- 1",
        "-00-" TID "-" PID "-01",
        "00--" TID "-" PID "-01",
    };
    struct trace_ctx t;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &t)) {
            print_message("accepted: \"%s\"\n", bad[i]);
            fail();
        }
    }
    /* A NUL inside the given length. */
    char v[] = "00-" TID "-" PID "-01";
    v[10] = '\0';
    assert_false(trace_parse(&t, v, sizeof(v) - 1));
    /* Cut anywhere. */
    char full[] = "00-" TID "-" PID "-01";
    for (size_t n = 0; n < sizeof(full) - 1; n++)
        assert_false(trace_parse(&t, full, n));
}

/* A later version: parsed as 00 where it can be, extra fields after a dash. */
static void test_versions(void **state)
{
    struct trace_ctx t;

    assert_true(parse("01-" TID "-" PID "-01", &t));
    assert_string_equal(t.trace_id, TID);
    assert_int_equal(t.flags, 1);
    assert_true(parse("cc-" TID "-" PID "-00", &t));
    assert_int_equal(t.flags, 0);
    assert_true(parse("cc-" TID "-" PID "-01-what-the-future-will-be-like", &t));
    assert_string_equal(t.trace_id, TID);
    assert_int_equal(t.flags, 1);
    assert_true(parse("fe-" TID "-" PID "-01-", &t));

    assert_false(parse("cc-" TID "-" PID "-01.what", &t)); /* no dash after the flags */
    assert_false(parse("cc-" TID "-" PID "-010", &t));
    assert_false(parse("cc-" TID "-" PID "-0", &t)); /* under 55 */
    assert_false(parse("cc-" TID "-0000000000000000-01-x", &t));
    assert_false(parse("cc-" TID "-" PID "-0X-x", &t));
    assert_false(parse("CC-" TID "-" PID "-01", &t));
    assert_false(parse("ff-" TID "-" PID "-01-x", &t));
}

/* A generator that hands out a fixed sequence. */
struct seq {
    const uint64_t *v;
    size_t n, i;
};

static uint64_t seq_next(void *ctx)
{
    struct seq *s = ctx;

    assert_true(s->i < s->n);
    return s->v[s->i++];
}

static void test_format(void **state)
{
    struct trace_ctx t;
    char line[TRACE_LINE_LEN + 1];
    size_t n;

    assert_int_equal(TRACE_LINE_LEN, 70);
    assert_true(parse("00-" TID "-" PID "-01", &t));
    n = trace_write_line(line, &t, 0xb7ad6b7169203331ull);
    line[n] = '\0';
    assert_int_equal(n, TRACE_LINE_LEN);
    assert_string_equal(line, "traceparent: 00-" TID "-b7ad6b7169203331-01\r\n");

    /* Leading zeros are written; what is written parses back. */
    n = trace_write_line(line, &t, 1);
    line[n] = '\0';
    assert_string_equal(line, "traceparent: 00-" TID "-0000000000000001-01\r\n");
    struct trace_ctx back;
    assert_true(trace_parse(&back, line + 13, n - 15));
    assert_string_equal(back.trace_id, TID);
    assert_int_equal(back.flags, 1);

    /* A later version is sent on as 00, its extra fields dropped. */
    assert_true(parse("cc-" TID "-" PID "-00-xyz", &t));
    n = trace_write_line(line, &t, UINT64_MAX);
    line[n] = '\0';
    assert_string_equal(line, "traceparent: 00-" TID "-ffffffffffffffff-00\r\n");
}

static void test_generate(void **state)
{
    /* Zero draws are drawn again: neither id is ever all zero. */
    static const uint64_t zeros_first[] = {0, 0, 0, 0, 0, 7};
    struct seq s = {zeros_first, 6, 0};
    struct trace_ctx t;

    trace_start(&t, 0, seq_next, &s);
    assert_int_equal(s.i, 6);
    assert_string_equal(t.trace_id, "00000000000000000000000000000007");
    assert_int_equal(t.flags, 0);
    assert_false(t.kept);
    assert_true(trace_known(&t));

    /* One zero half is fine: the id as a whole is not zero. */
    static const uint64_t hi_only[] = {0x0123456789abcdefull, 0};
    s = (struct seq){hi_only, 2, 0};
    trace_start(&t, TRACE_F_SAMPLED, seq_next, &s);
    assert_string_equal(t.trace_id, "0123456789abcdef0000000000000000");
    assert_int_equal(t.flags, 1);

    static const uint64_t spans[] = {0, 0, 42};
    s = (struct seq){spans, 3, 0};
    assert_int_equal(trace_span_id(seq_next, &s), 42);
    assert_int_equal(s.i, 3);

    /* A started trace is written as a valid traceparent. */
    char line[TRACE_LINE_LEN];
    struct trace_ctx back;
    size_t n = trace_write_line(line, &t, 42);
    assert_true(trace_parse(&back, line + 13, n - 15));
    assert_string_equal(back.trace_id, t.trace_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),    cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_versions), cmocka_unit_test(test_format),
        cmocka_unit_test(test_generate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
