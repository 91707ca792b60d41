/*
 * test_history.c - the per-second stats history (history.h) and the
 * dashboard page around it (dashboard.h).
 *
 * Shards are filled by hand as workers would fill them, then sampled with
 * history_sample at chosen moments, so every point is known exactly: the
 * counts of a second, its percentiles (from the histogram difference, not
 * the totals), series that appear late, the ring wrapping, the JSON shape,
 * and the 1 s timer on a real loop that must close cleanly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"
#include "history.h"
#include "metrics.h"

static struct metrics m0, m1;
static struct metrics *shards[2] = {&m0, &m1};

static int teardown(void **state)
{
    (void)state;
    metrics_release(&m0);
    metrics_release(&m1);
    return 0;
}

static void add(struct route_stats *s, int status, uint64_t us, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        metrics_count_status(s, status);
        histogram_record(&s->duration, us);
    }
}

static size_t points(struct history *h, enum metrics_direction d, const char *fn, const char *route,
                     struct history_point *out)
{
    return history_points(h, d, fn, route, out, HISTORY_POINTS);
}

static void test_deltas(void **state)
{
    struct route_stats *a0 = metrics_route(&m0, DIR_INGRESS, "f", "r");
    struct route_stats *a1 = metrics_route(&m1, DIR_INGRESS, "f", "r");
    struct history *h = history_new(shards, 2);
    static struct history_point p[HISTORY_POINTS];

    (void)state;
    assert_non_null(h);
    assert_int_equal(points(h, DIR_INGRESS, "f", "r", p), 0);
    /* Second 1: 1 ms on both workers, one 503 and one 499. */
    add(a0, 200, 1000, 60);
    add(a1, 404, 1000, 38);
    add(a1, 503, 1000, 1);
    add(a1, 499, 1000, 1);
    metrics_inc(&a0->retries);
    metrics_inc(&a1->denials[DENY_RATE_LIMITED]);
    history_sample(h, 1000);
    /* Second 2: 100 ms only; the totals' p50 would still be 1 ms. */
    add(a0, 200, 100000, 10);
    metrics_inc(&a1->retries);
    metrics_inc(&a1->retries);
    history_sample(h, 2000);
    /* Second 3: nothing. */
    history_sample(h, 3000);

    assert_int_equal(points(h, DIR_INGRESS, "f", "r", p), 3);
    assert_int_equal(p[0].requests, 100);
    assert_int_equal(p[0].ok, 98); /* 2xx-4xx but not 499 */
    assert_in_range(p[0].p50_us, 1000 - 1000 / 16, 1000 + 1000 / 16);
    assert_in_range(p[0].p99_us, 1000 - 1000 / 16, 1000 + 1000 / 16);
    assert_int_equal(p[0].retries, 1);
    assert_int_equal(p[0].denials, 1);
    assert_int_equal(p[1].requests, 10);
    assert_int_equal(p[1].ok, 10);
    assert_in_range(p[1].p50_us, 100000 - 100000 / 16, 100000 + 100000 / 16);
    assert_in_range(p[1].p99_us, 100000 - 100000 / 16, 100000 + 100000 / 16);
    assert_int_equal(p[1].retries, 2);
    assert_int_equal(p[1].denials, 0);
    assert_int_equal(p[2].requests, 0);
    assert_int_equal(p[2].p50_us, 0);
    assert_int_equal(p[2].retries, 0);
    /* max keeps the most recent points. */
    assert_int_equal(history_points(h, DIR_INGRESS, "f", "r", p, 1), 1);
    assert_int_equal(p[0].requests, 0);
    /* The same names in the other direction are another series. */
    assert_int_equal(points(h, DIR_EGRESS, "f", "r", p), 0);
    history_free(h);
}

/* A route made between samples (a reload) counts from zero: its first
 * point is exact, its earlier points are zero. */
static void test_late_series(void **state)
{
    struct route_stats *a = metrics_route(&m0, DIR_INGRESS, "f", "a");
    struct history *h = history_new(shards, 2);
    static struct history_point p[HISTORY_POINTS];

    (void)state;
    add(a, 200, 50, 3);
    history_sample(h, 1000);
    history_sample(h, 2000);
    struct route_stats *b = metrics_route(&m1, DIR_EGRESS, "f", "");
    add(b, 403, 20, 4);
    metrics_inc(&b->denials[DENY_NO_RULE]);
    history_sample(h, 3000);
    assert_int_equal(points(h, DIR_EGRESS, "f", "", p), 3);
    assert_int_equal(p[0].requests, 0);
    assert_int_equal(p[1].requests, 0);
    assert_int_equal(p[2].requests, 4);
    assert_int_equal(p[2].ok, 4);
    assert_int_equal(p[2].denials, 1);
    assert_int_equal(points(h, DIR_INGRESS, "f", "a", p), 3);
    assert_int_equal(p[0].requests, 3);
    assert_int_equal(p[1].requests, 0);
    history_free(h);
}

/* After more than HISTORY_POINTS samples the ring holds the last ones,
 * oldest first. */
static void test_ring_wraps(void **state)
{
    struct route_stats *a = metrics_route(&m0, DIR_INGRESS, "f", "r");
    struct history *h = history_new(shards, 2);
    static struct history_point p[HISTORY_POINTS];

    (void)state;
    for (unsigned i = 1; i <= HISTORY_POINTS + 50; i++) {
        add(a, 200, 10, i);
        history_sample(h, i * 1000u);
    }
    assert_int_equal(points(h, DIR_INGRESS, "f", "r", p), HISTORY_POINTS);
    for (unsigned i = 0; i < HISTORY_POINTS; i++)
        assert_int_equal(p[i].requests, 51 + i);
    history_free(h);
}

static char *render(struct history *h, unsigned last)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    history_render_stats(f, h, last);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void test_render(void **state)
{
    struct route_stats *a = metrics_route(&m0, DIR_INGRESS, "f", "r");
    struct history *h = history_new(shards, 2);
    char *text;

    (void)state;
    text = render(h, 0);
    assert_non_null(strstr(text, "\"history\":{\"interval_ms\":1000,\"seq\":0,\"end_ms\":0,"
                                 "\"points\":0,\"series\":[]}}\n"));
    free(text);
    add(a, 200, 2000, 2);
    history_sample(h, 5000);
    history_sample(h, 6000);
    add(a, 502, 3000, 1);
    metrics_inc(&a->retries);
    history_sample(h, 7000);

    text = render(h, 2);
    /* /stats' own members first, then the history. */
    assert_true(strncmp(text, "{\"routes\":[{\"direction\":\"ingress\",\"function\":\"f\"", 48) ==
                0);
    assert_non_null(strstr(text, "],\"listeners\":[],\"history\":{"));
    assert_non_null(strstr(
        text,
        "\"history\":{\"interval_ms\":1000,\"seq\":3,\"end_ms\":7000,\"points\":2,\"series\":["
        "{\"direction\":\"ingress\",\"function\":\"f\",\"route\":\"r\","
        "\"total\":{\"requests\":3,\"ok\":2,\"denials\":0,\"retries\":1},"
        "\"requests\":[0,1],\"ok\":[0,0],\"p50_ms\":[null,2.944],\"p99_ms\":[null,2.944],"
        "\"denials\":[0,0],\"retries\":[0,1]}]}}\n"));
    free(text);
    text = render(h, 0); /* all */
    assert_non_null(strstr(text, "\"points\":3,"));
    assert_non_null(strstr(text, "\"requests\":[2,0,1]"));
    free(text);
    history_free(h);
}

/* The timer samples on a real loop, and history_free leaves nothing open. */
static void on_stop(uv_timer_t *t)
{
    history_free(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_timer(void **state)
{
    uv_loop_t loop;
    uv_timer_t stop;
    struct history *h = history_new(shards, 2);
    static struct history_point p[HISTORY_POINTS];

    (void)state;
    metrics_route(&m0, DIR_INGRESS, "f", "r");
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(history_start(h, &loop), 0);
    uv_timer_init(&loop, &stop);
    stop.data = h;
    uv_timer_start(&stop, on_stop, HISTORY_INTERVAL_MS + 200, 0);
    /* Checked from inside the run: sampled once before the stop timer. */
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(points(h, DIR_INGRESS, "f", "r", p), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The dashboard: the table in place of the marker, no external URL. */
static void test_dashboard(void **state)
{
    struct route_stats *a = metrics_route(&m0, DIR_INGRESS, "fn<1>", "r");
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    add(a, 200, 1000, 3);
    add(a, 503, 1000, 1);
    f = open_memstream(&text, &len);
    dashboard_render(f, shards, 2);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(strlen(dashboard_html), dashboard_html_len);
    assert_null(strstr(text, DASHBOARD_TABLE_MARK));
    assert_non_null(strstr(dashboard_html, DASHBOARD_TABLE_MARK));
    assert_non_null(strstr(text, "<tr data-series=\"ingress/fn&lt;1&gt;/r\"><td>ingress</td>"
                                 "<td>fn&lt;1&gt;</td><td>r</td><td>4</td><td>75.00%</td>"));
    assert_null(strstr(text, "http://"));
    assert_null(strstr(text, "https://"));
    assert_null(strstr(text, "//cdn"));
    assert_true(len > dashboard_html_len);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_deltas, teardown),
        cmocka_unit_test_teardown(test_late_series, teardown),
        cmocka_unit_test_teardown(test_ring_wraps, teardown),
        cmocka_unit_test_teardown(test_render, teardown),
        cmocka_unit_test_teardown(test_timer, teardown),
        cmocka_unit_test_teardown(test_dashboard, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
