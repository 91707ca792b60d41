/*
 * fuzz_upstream.c - libFuzzer target for the upstream response path: what a
 * malicious function can send. The bytes are parsed as exch.c's
 * exch_pump_response and on_up_data parse them: one upconn buffer of
 * WORKER_BUF_SIZE that reads append to, h1_feed from u->parsed, the head
 * checked by h1_check_response (101 refused), 1xx interim responses dropped
 * and h1_parser_next'ed, the body collected once the final head is taken,
 * the buffer compacted once a body part is written downstream and emptied
 * when everything read was parsed, "head too large" when the buffer fills
 * before the head ends, skip_body for a response to HEAD, and h1_finish on
 * EOF for a close-delimited body.
 *
 * Input: [flags][n][n chunk lengths][the function's bytes]. flags & 1: the
 * request was HEAD; & 2: the client side frames the body as chunks; & 4:
 * the connection is closed after the last byte (else the run just stops).
 * The bytes arrive in reads of chunk lengths 1 + len[i % n] (n = 0: one
 * read of everything), each cut to the room left in the buffer.
 *
 * Besides crashes and sanitizer reports, the target abort()s when:
 *   - a span of the head (reason, header names and values) is not a run of
 *     consecutive bytes of that head as the function sent it: the buffer
 *     moved or was overwritten under it (every byte of the buffer carries
 *     the stream offset it came from);
 *   - a head with Transfer-Encoding and Content-Length, or two
 *     Content-Lengths, is accepted (checked on the bytes sent, independently
 *     of the parser's spans);
 *   - body bytes go downstream that are not the stream's next bytes after
 *     the head, in order, or more of them than Content-Length says, any at
 *     all for HEAD, 1xx, 204 and 304, or a body that ends (H1_EV_DONE)
 *     short of its Content-Length;
 *   - a chunked body completes without what was consumed ending in a line
 *     end;
 *   - a body framing error is answered with a 502 (the head came in the
 *     same read) after something of the response was sent downstream;
 *   - the parser consumes bytes past the end of the response in the call
 *     that completes it: everything it took belongs to this message (what
 *     follows makes exch.c mark the connection broken, never parsed).
 * `make fuzz`, and a short run in `make test`.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"
#include "worker.h" /* WORKER_BUF_SIZE: the upconn buffer */

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_upstream: oracle violation: %s (%s:%d)\n", what, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct up {
    char *buf;        /* u->buf */
    uint32_t *origin; /* origin[i]: the stream offset buf[i] came from */
    size_t len, parsed;

    const uint8_t *wire; /* what the function sent */
    size_t wire_len, fed;

    struct h1_parser resp;
    struct h1_out out;
    bool started, interim, parsed_all, failed;
    bool sent;          /* a send downstream since the final head */
    size_t msg_start;   /* stream offset where the current message began */
    size_t head_end;    /* stream offset just past its head */
    uint64_t body;      /* body bytes sent downstream for the final response */
    size_t next_body;   /* stream offset the next body byte must come from */
    bool framed_length; /* the final head has Content-Length (and a body) */
    bool no_body;       /* HEAD, 204, 304 */
    uint64_t length;    /* its Content-Length */
    bool chunked;       /* the final head is chunked (and has a body) */
};

/* Case-insensitive: does the line at p (up to end) name header `name`
 * followed by optional whitespace and ':'? Returns the value's start. */
static const uint8_t *line_names(const uint8_t *p, const uint8_t *end, const char *name)
{
    size_t n = strlen(name);

    if ((size_t)(end - p) < n + 1 || strncasecmp((const char *)p, name, n) != 0)
        return NULL;
    p += n;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p < end && *p == ':' ? p + 1 : NULL;
}

/* The framing headers in the head as sent, wire[from, to): counts of
 * Transfer-Encoding and Content-Length lines, and whether two
 * Content-Lengths differ (compared on their digits). */
static void scan_framing(const uint8_t *w, size_t from, size_t to, unsigned *n_te, unsigned *n_cl,
                         bool *cl_differ)
{
    const uint8_t *p = w + from, *end = w + to, *first = NULL;
    size_t first_len = 0;

    *n_te = *n_cl = 0;
    *cl_differ = false;
    /* The status line cannot name a header: skip to the first line end. */
    while (p < end && *p != '\n')
        p++;
    while (p < end) {
        const uint8_t *v;
        p++; /* past '\n' */
        if (p >= end)
            break;
        if (line_names(p, end, "transfer-encoding") != NULL)
            (*n_te)++;
        if ((v = line_names(p, end, "content-length")) != NULL) {
            const uint8_t *e = v;
            while (e < end && *e != '\r' && *e != '\n')
                e++;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (*n_cl > 0 && ((size_t)(e - v) != first_len || memcmp(v, first, first_len) != 0))
                *cl_differ = true;
            if (*n_cl == 0) {
                first = v;
                first_len = (size_t)(e - v);
            }
            (*n_cl)++;
        }
        while (p < end && *p != '\n')
            p++;
    }
}

/* Every byte of s is in buf, and they are consecutive stream bytes of the
 * current head. */
static void check_span(const struct up *u, struct h1_span s, const char *what)
{
    size_t i, at;

    if (s.p == NULL) {
        CHECK(s.len == 0, what);
        return;
    }
    CHECK(s.p >= u->buf && s.p <= u->buf + u->len && s.len <= (size_t)(u->buf + u->len - s.p),
          what);
    at = (size_t)(s.p - u->buf);
    for (i = 0; i < s.len; i++) {
        CHECK(u->origin[at + i] == u->origin[at] + i, what);
        CHECK((unsigned char)s.p[i] == u->wire[u->origin[at + i]], what);
    }
    if (s.len > 0)
        CHECK(u->origin[at] >= u->msg_start && u->origin[at] + s.len <= u->head_end, what);
}

/* exch_response_head: false when the exchange fails. */
static bool on_head(struct up *u)
{
    struct h1_head *h = &u->resp.head;
    const char *why = NULL;
    unsigned n_te, n_cl;
    bool cl_differ;

    u->head_end = u->origin[u->parsed - 1] + 1;
    scan_framing(u->wire, u->msg_start, u->head_end, &n_te, &n_cl, &cl_differ);
    check_span(u, h->reason, "reason span");
    for (unsigned i = 0; i < h->n_hdr; i++) {
        check_span(u, h->hdr[i].name, "header name span");
        check_span(u, h->hdr[i].value, "header value span");
    }
    if (h1_check_response(h, &why) < 0 || h->status == 101)
        return false;
    CHECK(!(n_te > 0 && n_cl > 0), "a head with transfer-encoding and content-length accepted");
    CHECK(!cl_differ, "a head with two different content-lengths accepted");
    CHECK(n_cl <= 1, "a head with several content-lengths accepted");
    /* The spans were checked before h1_check_response trimmed them: the
     * trimmed ones are inside. */
    if (h->status < 200) {
        u->interim = true;
        return true;
    }
    u->started = true;
    u->no_body = u->resp.skip_body || h->status == 204 || h->status == 304;
    u->framed_length = !u->no_body && (h->flags & H1_F_CONTENT_LENGTH);
    u->chunked = !u->no_body && (h->flags & H1_F_CHUNKED);
    u->length = h->content_length;
    u->next_body = u->head_end;
    u->sent = false;
    return true;
}

/* What exch_send would write: the body spans (those pointing into buf),
 * which must be the stream's next bytes after the head. */
static void on_send(struct up *u)
{
    u->sent = true;
    for (unsigned i = 0; i < u->out.n; i++) {
        const char *b = u->out.iov[i].base;
        size_t n = u->out.iov[i].len, at;

        if (!(b >= u->buf && b < u->buf + WORKER_BUF_SIZE))
            continue; /* framing: a chunk-size line, "\r\n", the last chunk */
        CHECK(n <= (size_t)(u->buf + u->len - b), "body span past the bytes read");
        at = (size_t)(b - u->buf);
        for (size_t k = 0; k < n; k++) {
            CHECK(u->origin[at + k] >= u->next_body, "body byte sent twice or out of order");
            CHECK(u->origin[at + k] >= u->head_end, "head byte sent as body");
            CHECK(u->chunked || u->origin[at + k] == u->next_body,
                  "body bytes not contiguous without chunked framing");
            u->next_body = u->origin[at + k] + 1;
        }
        u->body += n;
        CHECK(!u->no_body, "body bytes for a response that has none");
        CHECK(!u->framed_length || u->body <= u->length, "more body than content-length");
    }
}

/* The response is complete: it must end where its framing says. */
static void on_done(struct up *u, bool eof)
{
    size_t end = u->parsed > 0 ? u->origin[u->parsed - 1] + 1 : u->head_end;

    if (u->no_body) {
        CHECK(u->body == 0, "body for a response that has none");
        CHECK(end == u->head_end, "bytes after a bodiless head consumed as its body");
    } else if (u->framed_length) {
        CHECK(u->body == u->length, "done short of content-length");
        CHECK(end == u->head_end + u->length, "consumed past content-length");
    } else if (u->chunked) {
        /* llhttp takes a bare LF as a line end (RFC 9112 section 2.2 allows it). */
        CHECK(end >= u->head_end + 3 && u->wire[end - 1] == '\n',
              "chunked body complete without its last chunk");
    } else {
        CHECK(eof, "a close-delimited body complete without a close");
    }
}

/* exch_pump_response after a read. Returns false when the exchange ends
 * (failed or the response is complete). */
static bool pump(struct up *u)
{
    enum h1_event ev;
    bool head_unsent; /* as exch.c: the final head came in this pass */

again:
    head_unsent = false;
    h1_out_reset(&u->out);
    for (;;) {
        size_t used = 0;
        u->resp.out = u->started ? &u->out : NULL;
        ev = h1_feed(&u->resp, u->buf + u->parsed, u->len - u->parsed, &used);
        CHECK(used <= u->len - u->parsed, "h1_feed used more than it was given");
        u->parsed += used;
        if (ev == H1_EV_HEAD) {
            if (!on_head(u))
                return false;
            head_unsent = u->started;
            continue;
        }
        if (ev == H1_EV_DONE && u->interim) {
            CHECK(u->resp.body_bytes == 0, "a 1xx response with a body");
            u->interim = false;
            h1_parser_next(&u->resp);
            u->msg_start = u->parsed > 0 ? u->origin[u->parsed - 1] + 1 : u->msg_start;
            /* As exch.c: the 1xx head leaves the buffer at once. */
            memmove(u->buf, u->buf + u->parsed, u->len - u->parsed);
            memmove(u->origin, u->origin + u->parsed, (u->len - u->parsed) * sizeof(u->origin[0]));
            u->len -= u->parsed;
            u->parsed = 0;
            continue;
        }
        break;
    }
    u->resp.out = NULL;
    if (ev == H1_EV_ERROR) {
        /* exch.c answers 502 when the head came in this pass: nothing of
         * the response may have gone downstream then. */
        CHECK(!head_unsent || !u->sent, "a 502 after part of the response was sent");
        return false;
    }
    if (ev == H1_EV_MORE && !u->started && u->len == WORKER_BUF_SIZE)
        return false; /* response head too large */
    if (u->out.n > 0)
        on_send(u);
    if (ev == H1_EV_DONE) {
        on_done(u, false);
        u->parsed_all = true;
        return false;
    }
    if (u->out.n > 0) {
        /* exch_response_written: the bytes sent are free, the rest moves up. */
        if (u->parsed > 0) {
            memmove(u->buf, u->buf + u->parsed, u->len - u->parsed);
            memmove(u->origin, u->origin + u->parsed, (u->len - u->parsed) * sizeof(u->origin[0]));
            u->len -= u->parsed;
            u->parsed = 0;
        }
        goto again;
    }
    /* As exch.c: a head still being collected is spans into the buffer. */
    if (u->parsed == u->len && u->resp.head_done)
        u->parsed = u->len = 0;
    return true;
}

/* on_up_data with UV_EOF. */
static void on_eof(struct up *u)
{
    if (!(u->started && h1_needs_eof(&u->resp) && u->parsed == u->len))
        return; /* "closed the connection without a complete response" */
    h1_out_reset(&u->out);
    u->resp.out = &u->out;
    enum h1_event ev = h1_finish(&u->resp);
    u->resp.out = NULL;
    if (ev == H1_EV_DONE) {
        on_send(u);
        on_done(u, true);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct up u;
    const uint8_t *lens;
    size_t n_lens, i = 0;
    uint8_t flags;

    if (size < 2)
        return 0;
    flags = data[0];
    n_lens = data[1] % 8;
    if (size < 2 + n_lens)
        return 0;
    lens = data + 2;

    if (u.buf == NULL) {
        u.buf = malloc(WORKER_BUF_SIZE);
        u.origin = malloc(WORKER_BUF_SIZE * sizeof(u.origin[0]));
        CHECK(u.buf != NULL && u.origin != NULL, "malloc");
    }
    u.len = u.parsed = 0;
    u.wire = data + 2 + n_lens;
    u.wire_len = size - 2 - n_lens;
    u.fed = 0;
    u.started = u.interim = u.parsed_all = u.failed = u.sent = false;
    u.msg_start = u.head_end = u.next_body = 0;
    u.body = u.length = 0;
    u.framed_length = u.no_body = u.chunked = false;
    memset(&u.out, 0, sizeof(u.out));
    u.out.chunked = (flags & 2) != 0;
    h1_parser_init(&u.resp, HTTP_RESPONSE);
    u.resp.skip_body = (flags & 1) != 0;

    for (;;) {
        if (u.fed == u.wire_len) {
            if (flags & 4)
                on_eof(&u);
            break;
        }
        size_t k = n_lens > 0 ? 1 + (size_t)lens[i++ % n_lens] : u.wire_len;
        if (k > u.wire_len - u.fed)
            k = u.wire_len - u.fed;
        if (k > WORKER_BUF_SIZE - u.len)
            k = WORKER_BUF_SIZE - u.len;
        CHECK(k > 0, "a read with no room in the buffer");
        memcpy(u.buf + u.len, u.wire + u.fed, k);
        for (size_t j = 0; j < k; j++)
            u.origin[u.len + j] = (uint32_t)(u.fed + j);
        u.len += k;
        u.fed += k;
        if (!pump(&u))
            break;
    }
    return 0;
}
