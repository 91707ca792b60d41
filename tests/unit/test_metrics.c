/*
 * test_metrics.c - latency histograms and the metrics exposition.
 *
 * The histogram's bucket map is built by the compiler from formulas; here
 * it is checked against a brute-force list of edges (every fine edge plus
 * one edge just above each `le` bound), so that a formula slip shows up as
 * a value in the wrong bucket. Percentiles are checked against the exact
 * order statistic of random samples, within the documented 1/16. The
 * Prometheus and /stats outputs are compared line by line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "metrics.h"

/* ---- reference bucket edges ---- */

static uint64_t edges[HIST_BUCKETS + 1];
static size_t n_edges;

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Lower edges of all fine buckets, 0 .. 2^27, and bound + 1 for each bound. */
static void build_edges(void)
{
    n_edges = 0;
    for (uint64_t v = 0; v < 16; v++)
        edges[n_edges++] = v;
    for (unsigned e = 4; e < HIST_TOP_EXP; e++)
        for (uint64_t s = 0; s < 8; s++)
            edges[n_edges++] = (8 + s) << (e - 3);
    assert_int_equal(n_edges, HIST_FINE);
    for (unsigned k = 0; k < HIST_N_LE; k++) {
        /* The map assumes bound + 1 is never a fine edge: it splits a bucket. */
        for (size_t i = 0; i < HIST_FINE; i++)
            assert_true(edges[i] != hist_le_us[k] + 1);
        edges[n_edges++] = hist_le_us[k] + 1;
    }
    edges[n_edges++] = HIST_LIMIT_US; /* the overflow bucket starts here */
    qsort(edges, n_edges, sizeof(edges[0]), u64_cmp);
    assert_int_equal(n_edges, HIST_BUCKETS);
}

/* The bucket of v by search: the last edge <= v. */
static unsigned ref_index(uint64_t v)
{
    size_t lo = 0, hi = n_edges; /* edges[lo] <= v < edges[hi] */

    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (edges[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    return (unsigned)lo;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_index_map(void **state)
{
    build_edges();
    /* Every value up to 2^20 µs, then each edge and its neighbours, then
     * random values over the whole range and past it. */
    for (uint64_t v = 0; v < (1u << 20); v++)
        assert_int_equal(histogram_index(v), ref_index(v));
    for (size_t i = 0; i < n_edges; i++) {
        uint64_t e = edges[i];
        assert_int_equal(histogram_index(e), ref_index(e));
        assert_int_equal(histogram_index(e + 1), ref_index(e + 1));
        if (e > 0)
            assert_int_equal(histogram_index(e - 1), ref_index(e - 1));
    }
    for (int i = 0; i < 1000000; i++) {
        uint64_t v = rng() >> (rng() % 64);
        assert_int_equal(histogram_index(v), ref_index(v));
    }
    assert_int_equal(histogram_index(HIST_LIMIT_US - 1), HIST_BUCKETS - 2);
    assert_int_equal(histogram_index(HIST_LIMIT_US), HIST_BUCKETS - 1);
    assert_int_equal(histogram_index(UINT64_MAX), HIST_BUCKETS - 1);
}

static void test_bounds(void **state)
{
    uint64_t lo, hi, prev_hi = 0;

    build_edges();
    for (unsigned k = 0; k < HIST_BUCKETS; k++) {
        histogram_bounds(k, &lo, &hi);
        assert_int_equal(lo, edges[k]);
        assert_int_equal(lo, prev_hi);
        if (k + 1 < HIST_BUCKETS)
            assert_int_equal(hi, edges[k + 1]);
        else
            assert_true(hi == UINT64_MAX);
        assert_true(hi > lo);
        assert_int_equal(histogram_index(lo), k);
        if (hi != UINT64_MAX)
            assert_int_equal(histogram_index(hi - 1), k);
        /* Width at most 1/8 of the lower edge: the source of the error bound. */
        if (lo >= 16 && hi != UINT64_MAX)
            assert_true((hi - lo) * 8 <= lo);
        prev_hi = hi;
    }
}

static void test_record_merge(void **state)
{
    struct histogram *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    struct histogram *m = calloc(1, sizeof(*m));

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(m);
    assert_int_equal(histogram_count(a), 0);
    assert_int_equal(histogram_percentile(a, 500), 0);
    histogram_record(a, 0);
    histogram_record(a, 7);
    histogram_record(a, 7);
    histogram_record(a, 1000);
    histogram_record(b, 200000000); /* overflow */
    histogram_record(b, 42);
    assert_int_equal(histogram_count(a), 4);
    assert_int_equal(a->sum, 1014);
    assert_int_equal(a->b[7], 2);
    assert_int_equal(a->b[histogram_index(1000)], 1);
    assert_int_equal(b->b[HIST_BUCKETS - 1], 1);

    histogram_merge(m, a);
    histogram_merge(m, b);
    assert_int_equal(histogram_count(m), 6);
    assert_int_equal(m->sum, 1014 + 200000000 + 42);
    for (unsigned k = 0; k < HIST_BUCKETS; k++)
        assert_int_equal(m->b[k], a->b[k] + b->b[k]);
    /* The rank in the overflow bucket answers "at least HIST_LIMIT_US". */
    assert_int_equal(histogram_percentile(m, 1000), HIST_LIMIT_US);
    assert_int_equal(histogram_percentile(m, 0), 0);
    free(a);
    free(b);
    free(m);
}

/* The exact quantile as histogram_percentile defines it: the smallest value
 * with at least permille/1000 of the sample at or below it. */
static uint64_t exact_quantile(uint64_t *v, size_t n, unsigned permille)
{
    uint64_t rank = (n * permille + 999) / 1000;

    if (rank == 0)
        rank = 1;
    qsort(v, n, sizeof(*v), u64_cmp);
    return v[rank - 1];
}

static void test_percentiles(void **state)
{
    static const unsigned qs[] = {0, 1, 500, 900, 990, 999, 1000};
    enum { N = 5000 };
    uint64_t *v = malloc(N * sizeof(*v));
    struct histogram *h = malloc(sizeof(*h));

    assert_non_null(v);
    assert_non_null(h);

    /* Small values are exact. */
    memset(h, 0, sizeof(*h));
    for (uint64_t i = 1; i <= 10; i++)
        histogram_record(h, i);
    assert_int_equal(histogram_percentile(h, 500), 5);
    assert_int_equal(histogram_percentile(h, 900), 9);
    assert_int_equal(histogram_percentile(h, 999), 10);
    assert_int_equal(histogram_percentile(h, 1), 1);

    /* One value: every quantile is that value, within 1/16. */
    memset(h, 0, sizeof(*h));
    histogram_record(h, 123456);
    for (size_t q = 0; q < sizeof(qs) / sizeof(qs[0]); q++) {
        uint64_t got = histogram_percentile(h, qs[q]);
        assert_true(got * 16 >= 123456 * 15 && got * 16 <= 123456 * 17);
    }

    /* Random samples over several orders of magnitude. */
    for (int round = 0; round < 50; round++) {
        memset(h, 0, sizeof(*h));
        for (size_t i = 0; i < N; i++) {
            v[i] = 1 + (rng() % 1000) * (1 + rng() % (round % 5 == 0 ? 100000 : 1000));
            if (v[i] >= HIST_LIMIT_US)
                v[i] = HIST_LIMIT_US - 1;
            histogram_record(h, v[i]);
        }
        for (size_t q = 0; q < sizeof(qs) / sizeof(qs[0]); q++) {
            uint64_t want = exact_quantile(v, N, qs[q]);
            uint64_t got = histogram_percentile(h, qs[q]);
            uint64_t diff = got > want ? got - want : want - got;
            if (diff * 16 > want)
                print_message("q=%u want %llu got %llu\n", qs[q], (unsigned long long)want,
                              (unsigned long long)got);
            assert_true(diff * 16 <= want);
        }
    }
    free(v);
    free(h);
}

static void test_le_exact(void **state)
{
    struct histogram *h = calloc(1, sizeof(*h));

    assert_non_null(h);
    for (unsigned k = 0; k < HIST_N_LE; k++) {
        uint64_t b = hist_le_us[k];

        memset(h, 0, sizeof(*h));
        histogram_record(h, b - 1);
        histogram_record(h, b);     /* le is inclusive */
        histogram_record(h, b + 1); /* just above: the next bound */
        assert_int_equal(histogram_le_count(h, k), 2);
        for (unsigned j = 0; j < k; j++)
            assert_int_equal(histogram_le_count(h, j), 0);
        for (unsigned j = k + 1; j < HIST_N_LE; j++)
            assert_int_equal(histogram_le_count(h, j), 3);
    }
    /* The texts are the bounds in seconds. */
    for (unsigned k = 0; k < HIST_N_LE; k++) {
        char want[32];
        snprintf(want, sizeof(want), "%g", (double)hist_le_us[k] / 1e6);
        assert_string_equal(hist_le_text[k], want);
    }
    free(h);
}

/* ---- exposition ---- */

static char *render(void (*fn)(FILE *, struct metrics *const *, size_t),
                    struct metrics *const *shards, size_t n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    fn(f, shards, n);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void assert_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    print_message("missing line: %s\nin:\n%s\n", line, text);
    fail();
}

static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);

    for (const char *p = text; *p != '\0';) {
        if (strncmp(p, prefix, len) == 0)
            n++;
        p = strchr(p, '\n');
        if (p == NULL)
            break;
        p++;
    }
    return n;
}

static void test_render(void **state)
{
    struct metrics m[2] = {{0}};
    struct metrics *shards[2] = {&m[0], &m[1]};
    struct route_stats *r0 = metrics_route(&m[0], DIR_INGRESS, "fn", "r");
    struct route_stats *r1 = metrics_route(&m[1], DIR_INGRESS, "fn", "r");
    struct route_stats *none = metrics_route(&m[0], DIR_INGRESS, "", "");
    struct listener_stats *l0 = metrics_listener(&m[0], "public");
    struct listener_stats *l1 = metrics_listener(&m[1], "public");

    assert_non_null(r0);
    assert_non_null(r1);
    assert_non_null(none);
    assert_non_null(l0);
    assert_non_null(l1);
    metrics_count_status(r0, 200);
    metrics_count_status(r1, 200);
    metrics_count_status(r1, 503);
    metrics_count_status(none, 404);
    metrics_inc(&r0->timeouts[TMO_UPSTREAM]);
    metrics_inc(&r1->upstream_errors[UPERR_REFUSED]);
    metrics_gauge_add(&l0->active, 2);
    metrics_gauge_add(&l1->active, 1);

    /* Two requests, one per worker: 300 µs and 2 ms. */
    struct metrics_request_time t0 = {
        .duration_us = 300, .connect_us = 100, .upstream_us = 150, .connected = true, .sent = true};
    struct metrics_request_time t1 = {.duration_us = 2000, .upstream_us = 1500, .sent = true};
    metrics_observe_request(r0, &t0);
    metrics_observe_request(r1, &t1);
    metrics_observe_attempt(r0, 250);
    metrics_observe_attempt(r1, 1500);
    /* A local answer: all of it is fnproxy's. */
    struct metrics_request_time t2 = {.duration_us = 40};
    metrics_observe_request(none, &t2);
    metrics_observe_request(NULL, &t2); /* no series: ignored */

    char *text = render(metrics_render, shards, 2);

    /* The counters exactly as before histograms existed. */
    assert_has_line(text, "# HELP fnproxy_requests_total Requests answered, by status code.");
    assert_has_line(text, "# TYPE fnproxy_requests_total counter");
    assert_has_line(text, "fnproxy_requests_total{direction=\"ingress\",function=\"fn\","
                          "route=\"r\",code=\"200\"} 2");
    assert_has_line(text, "fnproxy_requests_total{direction=\"ingress\",function=\"fn\","
                          "route=\"r\",code=\"503\"} 1");
    assert_has_line(text, "fnproxy_requests_total{direction=\"ingress\",function=\"\","
                          "route=\"\",code=\"404\"} 1");
    assert_has_line(text, "fnproxy_timeouts_total{direction=\"ingress\",function=\"fn\","
                          "route=\"r\",kind=\"upstream\"} 1");
    assert_has_line(text, "fnproxy_upstream_errors_total{direction=\"ingress\",function=\"fn\","
                          "route=\"r\",reason=\"refused\"} 1");
    assert_has_line(text, "fnproxy_connections_active{listener=\"public\"} 3");
    assert_int_equal(count_prefix(text, "fnproxy_requests_total{"), 3);

    /* Histograms. */
    assert_has_line(text, "# TYPE fnproxy_request_duration_seconds histogram");
    assert_has_line(text, "# TYPE fnproxy_upstream_attempt_duration_seconds histogram");
    assert_has_line(text, "# TYPE fnproxy_phase_duration_seconds histogram");
#define DUR "fnproxy_request_duration_seconds"
#define LBL "{direction=\"ingress\",function=\"fn\",route=\"r\""
    assert_has_line(text, DUR "_bucket" LBL ",le=\"0.0005\"} 1");
    assert_has_line(text, DUR "_bucket" LBL ",le=\"0.001\"} 1");
    assert_has_line(text, DUR "_bucket" LBL ",le=\"0.0025\"} 2");
    assert_has_line(text, DUR "_bucket" LBL ",le=\"10\"} 2");
    assert_has_line(text, DUR "_bucket" LBL ",le=\"+Inf\"} 2");
    assert_has_line(text, DUR "_sum" LBL "} 0.002300");
    assert_has_line(text, DUR "_count" LBL "} 2");
    assert_int_equal(count_prefix(text, DUR "_bucket" LBL), 15);
    assert_has_line(text,
                    "fnproxy_upstream_attempt_duration_seconds_bucket" LBL ",le=\"0.0005\"} 1");
    assert_has_line(text, "fnproxy_upstream_attempt_duration_seconds_sum" LBL "} 0.001750");
    assert_has_line(text, "fnproxy_phase_duration_seconds_count" LBL ",phase=\"connect\"} 1");
    assert_has_line(text, "fnproxy_phase_duration_seconds_sum" LBL ",phase=\"connect\"} 0.000100");
    assert_has_line(text, "fnproxy_phase_duration_seconds_count" LBL ",phase=\"upstream\"} 2");
    assert_has_line(text, "fnproxy_phase_duration_seconds_sum" LBL ",phase=\"upstream\"} 0.001650");
    /* proxy = duration - connect - upstream: 50 + 500 µs. */
    assert_has_line(text, "fnproxy_phase_duration_seconds_sum" LBL ",phase=\"proxy\"} 0.000550");
    /* 500 µs is exactly the first bound: `le` is inclusive. */
    assert_has_line(text, "fnproxy_phase_duration_seconds_bucket" LBL
                          ",phase=\"proxy\",le=\"0.0005\"} 2");
    /* The unrouted series: duration and proxy only; empty histograms are
     * left out like zero counters. */
    assert_has_line(text, DUR "_count{direction=\"ingress\",function=\"\",route=\"\"} 1");
    assert_has_line(text, "fnproxy_phase_duration_seconds_sum{direction=\"ingress\",function="
                          "\"\",route=\"\",phase=\"proxy\"} 0.000040");
    assert_int_equal(count_prefix(text, "fnproxy_phase_duration_seconds_count{direction="
                                        "\"ingress\",function=\"\""),
                     1);
    assert_int_equal(count_prefix(text, "fnproxy_upstream_attempt_duration_seconds_count"), 1);
#undef DUR
#undef LBL
    /* A counter without labels is always there. */
    assert_has_line(text, "fnproxy_access_log_dropped_lines_total 0");
    /* Every line is a comment, "name{labels} value" or "name value". */
    for (char *line = text, *end; *line != '\0'; line = end + 1) {
        end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] == '#')
            continue;
        char *sp = memchr(line, ' ', (size_t)(end - line));
        assert_non_null(sp);
        assert_true(sp[-1] == '}' || memchr(line, '{', (size_t)(sp - line)) == NULL);
        assert_true(sp + 1 < end);
    }
    free(text);

    text = render(metrics_render_json, shards, 2);
    /* Routes in shard order: shard 0 lists "" first (made last). p50 of
     * {300, 2000}: rank 1, the bucket of 300 µs [288, 320), so 0.304 ms. */
    assert_string_equal(
        text, "{\"routes\":["
              "{\"direction\":\"ingress\",\"function\":\"\",\"route\":\"\",\"requests\":1,"
              "\"codes\":{\"404\":1},"
              "\"latency_ms\":{\"p50\":0.042,\"p90\":0.042,\"p99\":0.042,\"p999\":0.042}},"
              "{\"direction\":\"ingress\",\"function\":\"fn\",\"route\":\"r\",\"requests\":3,"
              "\"codes\":{\"200\":2,"
              "\"503\":1},"
              "\"latency_ms\":{\"p50\":0.304,\"p90\":1.984,\"p99\":1.984,\"p999\":1.984}}],"
              "\"listeners\":[{\"name\":\"public\",\"active\":3}]}\n");
    free(text);
    metrics_release(&m[0]);
    metrics_release(&m[1]);
}

/* direction is data of the series: an egress route and an ingress route
 * with the same names are two series, each with its own label. */
static void test_direction_is_data(void **state)
{
    struct metrics m = {0};
    struct metrics *shards[1] = {&m};
    struct route_stats *in = metrics_route(&m, DIR_INGRESS, "fn", "r");
    struct route_stats *out = metrics_route(&m, DIR_EGRESS, "fn", "r");
    char *text;

    assert_non_null(in);
    assert_non_null(out);
    assert_ptr_not_equal(in, out);
    assert_ptr_equal(metrics_route(&m, DIR_EGRESS, "fn", "r"), out);
    metrics_count_status(in, 200);
    metrics_count_status(out, 200);
    metrics_count_status(out, 200);
    metrics_inc(&out->denials[DENY_CLIENT]);
    text = render(metrics_render, shards, 1);
    assert_has_line(text, "fnproxy_requests_total{direction=\"ingress\",function=\"fn\","
                          "route=\"r\",code=\"200\"} 1");
    assert_has_line(text, "fnproxy_requests_total{direction=\"egress\",function=\"fn\","
                          "route=\"r\",code=\"200\"} 2");
    assert_has_line(text, "fnproxy_policy_denials_total{direction=\"egress\",function=\"fn\","
                          "reason=\"client\"} 1");
    assert_int_equal(count_prefix(text, "fnproxy_policy_denials_total{"), 1);
    free(text);
    metrics_release(&m);
}

static void test_render_empty(void **state)
{
    struct metrics m = {0};
    struct metrics *shards[1] = {&m};
    char *text = render(metrics_render_json, shards, 1);

    assert_string_equal(text, "{\"routes\":[],\"listeners\":[]}\n");
    free(text);
    /* A series without requests: zeros, no codes. */
    assert_non_null(metrics_route(&m, DIR_INGRESS, "f", "r\"x"));
    text = render(metrics_render_json, shards, 1);
    assert_string_equal(text, "{\"routes\":[{\"direction\":\"ingress\",\"function\":\"f\","
                              "\"route\":\"r\\\"x\",\"requests\":0,"
                              "\"codes\":{},\"latency_ms\":{\"p50\":0.000,\"p90\":0.000,"
                              "\"p99\":0.000,\"p999\":0.000}}],\"listeners\":[]}\n");
    free(text);
    text = render(metrics_render, shards, 1);
    assert_null(strstr(text, "_bucket"));
    free(text);
    metrics_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_map),         cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_record_merge),      cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_le_exact),          cmocka_unit_test(test_render),
        cmocka_unit_test(test_direction_is_data), cmocka_unit_test(test_render_empty),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
