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
#include "micro.h"

#define MEASURE(label, ops, body) MICRO_MEASURE(label, "entry", 1, ops, body)

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
