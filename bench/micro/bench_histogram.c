/*
 * bench_histogram.c - what a latency histogram costs: recording one value
 * (the hot path), reading the clock around it, and a scrape (merging
 * shards, percentiles, `le` counts). Prints ns per operation; asserts
 * nothing (see bench/micro/build.sh).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "histogram.h"
#include "metrics.h"
#include "micro.h"

#define VALUES 4096 /* a power of two: the index is masked */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define MEASURE(label, ops, body) MICRO_MEASURE(label, "op", 2, ops, body)

int main(void)
{
    static uint64_t values[VALUES];
    struct histogram *h = calloc(1, sizeof(*h));
    struct histogram *shards = calloc(16, sizeof(*shards));
    struct histogram *sum = calloc(1, sizeof(*sum));
    const long n = 100 * 1000 * 1000;
    volatile uint64_t sink = 0;

    if (h == NULL || shards == NULL || sum == NULL)
        return 1;
    /* Log-uniform from 1 µs to ~16 s: every octave, every branch. */
    for (int i = 0; i < VALUES; i++)
        values[i] = 1 + (rng() >> (40 + rng() % 24)); /* below 2^24 */

    printf("histogram: %d buckets, %zu bytes\n", HIST_BUCKETS, sizeof(struct histogram));
    MEASURE("histogram_record (varied values)", n, {
        for (long i = 0; i < n; i++)
            histogram_record(h, values[i & (VALUES - 1)]);
    });
    MEASURE("histogram_record (one value)", n, {
        for (long i = 0; i < n; i++)
            histogram_record(h, 1234);
    });
    MEASURE("histogram_index only", n, {
        uint64_t acc = 0;
        for (long i = 0; i < n; i++)
            acc += histogram_index(values[i & (VALUES - 1)]);
        sink += acc;
    });
    MEASURE("metrics_now_us (clock_gettime MONOTONIC)", n / 10, {
        uint64_t acc = 0;
        for (long i = 0; i < n / 10; i++)
            acc += metrics_now_us();
        sink += acc;
    });

    for (int s = 0; s < 16; s++)
        for (int i = 0; i < 100000; i++)
            histogram_record(&shards[s], values[(size_t)(i * 7 + s) & (VALUES - 1)]);
    MEASURE("scrape: merge 16 shards", 10000, {
        for (int i = 0; i < 10000; i++) {
            memset(sum, 0, sizeof(*sum));
            for (int s = 0; s < 16; s++)
                histogram_merge(sum, &shards[s]);
        }
    });
    MEASURE("scrape: p50+p90+p99+p999", 10000, {
        for (int i = 0; i < 10000; i++)
            sink += histogram_percentile(sum, 500) + histogram_percentile(sum, 900) +
                    histogram_percentile(sum, 990) + histogram_percentile(sum, 999);
    });
    MEASURE("scrape: 14 le counts", 10000, {
        for (int i = 0; i < 10000; i++)
            for (unsigned k = 0; k < HIST_N_LE; k++)
                sink += histogram_le_count(sum, k);
    });
    (void)sink;
    free(h);
    free(shards);
    free(sum);
    return 0;
}
