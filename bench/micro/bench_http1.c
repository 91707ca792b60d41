/*
 * bench_http1.c - fnproxy's per-request HTTP/1.1 work on a typical request
 * with six headers: start a parser, feed the head up to H1_EV_HEAD, check
 * it, and write the head forwarded upstream (hop-by-hop headers dropped,
 * X-Forwarded-* and the request id added). Prints ns per request; asserts
 * nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http1.h"
#include "micro.h"

#define MEASURE(label, ops, body) MICRO_MEASURE(label, "request", 1, ops, body)

static const char request[] =
    "GET /api/v1/items/12345?expand=owner HTTP/1.1\r\n"
    "Host: api.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0\r\n"
    "Accept: application/json\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

static struct h1_parser parser;
static char head_out[8192];

/* One request's work; returns the forwarded head's length (0 on error). */
static size_t one(void)
{
    const struct h1_forward f = {
        .client_ip = "203.0.113.195",
        .proto = "http",
        .request_id = "0af7651916cd43dd8448eb211c80319c",
        .host = NULL,
    };
    const char *why;
    size_t used = 0;

    h1_parser_init(&parser, HTTP_REQUEST);
    if (h1_feed(&parser, request, sizeof(request) - 1, &used) != H1_EV_HEAD)
        return 0;
    if (h1_check_request(&parser.head, &why) != 0)
        return 0;
    return h1_write_request_head(head_out, sizeof(head_out), &parser.head, &f);
}

int main(void)
{
    const long n = 2 * 1000 * 1000;
    volatile size_t sink = 0;
    size_t len = one();

    if (len == 0) {
        fprintf(stderr, "bench_http1: the request did not parse\n");
        return 1;
    }
    printf("request head %zu bytes in, %zu bytes forwarded\n", sizeof(request) - 1, len);
    MEASURE("init + feed + check + write head", n, {
        for (long i = 0; i < n; i++)
            sink += one();
    });
    /* The share of the above that is starting the parser. */
    MEASURE("h1_parser_init alone", n, {
        for (long i = 0; i < n; i++)
            h1_parser_init(&parser, HTTP_REQUEST);
    });
    (void)sink;
    return 0;
}
