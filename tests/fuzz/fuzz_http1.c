/*
 * fuzz_http1.c - libFuzzer target for the HTTP/1.1 glue: any bytes, as a
 * request and as a response, fed in two pieces split where the input says,
 * then checked and rewritten as fnproxy would. Crashes, sanitizer reports
 * and writes past the head buffer are the findings. `make fuzz`.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http1.h"

static void run(llhttp_type_t type, const uint8_t *data, size_t size)
{
    struct h1_parser p;
    struct h1_out out = {.chunked = size > 0 && (data[0] & 1)};
    char head[4096];
    size_t split = size > 1 ? data[1] % size : 0, used = 0, off = 0;
    const char *buf = (const char *)data;
    const char *why;

    h1_parser_init(&p, type);
    p.skip_body = size > 2 && (data[2] & 1);
    while (off < size) {
        size_t end = off < split ? split : size;
        enum h1_event ev = h1_feed(&p, buf + off, end - off, &used);
        off += used;
        if (ev == H1_EV_ERROR)
            return;
        if (ev == H1_EV_HEAD) {
            if (type == HTTP_REQUEST) {
                struct h1_forward f = {.client_ip = "127.0.0.1", .proto = "http",
                                       .request_id = "id", .client_id = "spiffe://x"};
                if (h1_check_request(&p.head, &why) != 0)
                    return;
                h1_write_request_head(head, sizeof(head), &p.head, &f);
            } else {
                struct h1_reply r = {.request_id = "id", .chunked = true};
                if (h1_check_response(&p.head, &why) != 0)
                    return;
                h1_write_response_head(head, sizeof(head), &p.head, &r);
            }
            p.out = &out;
        }
        if (ev == H1_EV_DONE) {
            h1_parser_next(&p);
            p.out = NULL;
        }
        h1_out_reset(&out);
        if (ev == H1_EV_MORE && off < split)
            continue;
        if (ev == H1_EV_MORE)
            break;
    }
    if (type == HTTP_RESPONSE)
        h1_finish(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(HTTP_REQUEST, data, size);
    run(HTTP_RESPONSE, data, size);
    return 0;
}
