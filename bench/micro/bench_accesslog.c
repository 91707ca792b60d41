/*
 * bench_accesslog.c - what an access-log line costs: formatting a typical
 * entry, one with a path full of bytes that need escaping, and recording
 * with the buffer flushed to /dev/null by write(2) (the real write path,
 * minus the disk). Prints ns per entry; asserts nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

#define MEASURE(label, ops, body)                                                                  \
    do {                                                                                           \
        double runs[7];                                                                            \
        for (int r_ = 0; r_ < 7; r_++) {                                                           \
            uint64_t t0_ = now_ns();                                                               \
            body;                                                                                  \
            runs[r_] = (double)(now_ns() - t0_) / (double)(ops);                                   \
        }                                                                                          \
        qsort(runs, 7, sizeof(runs[0]), cmp_double);                                               \
        printf("%-44s %10.1f ns/entry  (min %.1f, max %.1f)\n", label, runs[3], runs[0], runs[6]); \
    } while (0)

int main(void)
{
    static char out[ACCESSLOG_ENTRY_MAX];
    static const char target[] = "/api/v1/items/12345/thumbnail?width=200&height=100";
    char nasty[256];
    const long n = 2 * 1000 * 1000;
    struct accesslog_buf fmt = {0}, b;
    struct accesslog *log;
    char err[256];
    volatile size_t sink = 0;
    uint64_t ts = accesslog_now_ms();

    for (int i = 0; i < (int)sizeof(nasty); i++)
        nasty[i] = (char)(i % 3 == 0 ? '"' : i % 3 == 1 ? '\x01' : 0xe9);
    nasty[0] = '/';
    struct accesslog_entry e = {
        .ts_ms = ts,
        .request_id = "0af7651916cd43dd8448eb211c80319c",
        .client = "203.0.113.195",
        .listener = "public",
        .method = "GET",
        .method_len = 3,
        .target = target,
        .target_len = sizeof(target) - 1,
        .status = 200,
        .function = "thumbnail",
        .route = "resize",
        .upstream = "127.0.0.1:9001",
        .bytes_in = 187,
        .bytes_out = 5120,
        .duration_us = 1234,
        .upstream_us = 981,
    };

    printf("typical line: %zu bytes\n", accesslog_format(&fmt, out, &e));
    MEASURE("format typical entry", n, {
        for (long i = 0; i < n; i++) {
            e.ts_ms = ts + (uint64_t)(i >> 10); /* a new second now and then */
            sink += accesslog_format(&fmt, out, &e);
        }
    });
    e.ts_ms = ts;
    e.target = nasty;
    e.target_len = sizeof(nasty);
    MEASURE("format entry, 256-byte path all escaped", n / 4, {
        for (long i = 0; i < n / 4; i++)
            sink += accesslog_format(&fmt, out, &e);
    });
    e.target = target;
    e.target_len = sizeof(target) - 1;

    log = accesslog_open("/dev/null", err, sizeof(err));
    if (log == NULL || accesslog_buf_init(&b, log) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    MEASURE("record + flush to /dev/null (write(2))", n, {
        for (long i = 0; i < n; i++)
            accesslog_record(&b, &e);
        accesslog_flush(&b);
    });
    printf("lines written %llu, dropped %llu\n", (unsigned long long)b.written,
           (unsigned long long)b.dropped);
    accesslog_buf_release(&b);
    accesslog_close(log);
    (void)sink;
    return 0;
}
