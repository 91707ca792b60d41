/*
 * test_http1.c - the HTTP/1.1 glue: message heads, the checks that refuse
 * ambiguous messages, body re-framing and the heads fnproxy writes.
 *
 * Every message is parsed whole, split into two feeds at every offset, and
 * fed byte by byte (some also split in three everywhere), always from one
 * buffer that does not move, since the parser's spans point into it. Each
 * way must give the same head, the same verdict and the same body. A head is
 * reduced to a text digest so that a mismatch prints both sides, and the
 * digest of the whole feed is compared with one written out in the test.
 *
 * Bodies are collected through h1_parser.out the way conn.c does it: the
 * iovecs are read and the h1_out reset on H1_EV_BODY and H1_EV_DONE only, so
 * body spans must stay valid across H1_EV_MORE, and a body that fills the
 * iovecs must pause with H1_EV_BODY rather than lose bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define RAW(s) s, sizeof(s) - 1

#define MAX_MSG 4
#define DIGEST_MAX 8192
#define WIRE_MAX 65536

/* What conn.c puts in front of the body in the same h1_out (the head it
 * forwards); the head_iov option does the same to test the iovec budget. */
static const char head_iov[] = "<forwarded head>";

/* One message as the tests see it. */
struct msg {
    char head[DIGEST_MAX]; /* digest of the head, taken after the check */
    int check;             /* what h1_check_request/h1_check_response said */
    size_t head_end;       /* input offset where H1_EV_HEAD was reported */
    size_t end;            /* input offset where H1_EV_DONE was reported */
    char wire[WIRE_MAX];   /* the iovecs h1_parser.out gave, concatenated */
    size_t wire_len;
    char body[WIRE_MAX]; /* wire without head_iov and chunk framing */
    size_t body_len;
    uint64_t body_bytes; /* h1_parser.body_bytes when the message ended */
    char events[1024];   /* one letter per event other than H1_EV_MORE */
    size_t n_events;
    bool done;
};

struct run {
    struct msg msg[MAX_MSG];
    unsigned n_msg;
    int verdict;     /* 0, the status a request is refused with, -1 for a response */
    const char *why; /* h1_parser.error or what the check said */
    size_t used;     /* input consumed, all messages */
    bool needs_eof;  /* h1_needs_eof when the input ran out mid-message */
    int finish;      /* h1_finish's result then, or -1 when not called */
};

struct opts {
    llhttp_type_t type;
    bool chunked_out; /* h1_out.chunked: the body leaves as chunks */
    bool no_out;      /* h1_parser.out NULL: body bytes are dropped */
    bool skip_body;   /* a response to HEAD */
    bool head_iov;    /* put head_iov in the h1_out after the head, as conn.c */
    bool finish;      /* call h1_finish when the input runs out mid-message */
};

/* The input being fed, shown when a comparison fails. */
static const char *g_input = "";
static size_t g_input_len;

struct fixture {
    struct run ref;   /* the message fed whole */
    struct run trial; /* the same message fed in pieces */
    size_t *cuts;
};

static int group_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL)
        return -1;
    *state = fx;
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *fx = *state;

    if (fx != NULL) {
        free(fx->cuts);
        fx->cuts = NULL;
        free(fx);
    }
    return 0;
}

/* --- digests --------------------------------------------------------------- */

static void app(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < cap - *len);
    *len += (size_t)n;
}

static const char *sp(struct h1_span s)
{
    return s.p != NULL ? s.p : "";
}

/* A span is either empty or inside the buffer fed: nothing is copied. */
static void assert_inside(struct h1_span s, const char *data, size_t n)
{
    if (s.p == NULL) {
        assert_int_equal(s.len, 0);
        return;
    }
    assert_true(s.p >= data && s.p + s.len <= data + n);
}

static void digest(char *buf, size_t cap, const struct h1_head *h, const char *data, size_t n)
{
    static const char *const flag_names[] = {"CL", "CHUNKED", "KEEP_ALIVE", "EXPECT_CONTINUE",
                                             "HEAD_TOO_LARGE"};
    size_t len = 0;
    bool first = true;

    buf[0] = '\0';
    assert_inside(h->method, data, n);
    assert_inside(h->target, data, n);
    assert_inside(h->reason, data, n);
    app(buf, cap, &len,
        "method=%.*s target=%.*s status=%d reason=%.*s version=%u.%u\nflags=", (int)h->method.len,
        sp(h->method), (int)h->target.len, sp(h->target), h->status, (int)h->reason.len,
        sp(h->reason), h->major, h->minor);
    for (unsigned i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
        if (h->flags & (1u << i)) {
            app(buf, cap, &len, "%s%s", first ? "" : "|", flag_names[i]);
            first = false;
        }
    }
    app(buf, cap, &len, " cl=%llu host=%d request_id=%d\n", (unsigned long long)h->content_length,
        h->host, h->request_id);
    if (h->n_conn_tokens > 0) {
        app(buf, cap, &len, "conn=");
        for (unsigned i = 0; i < h->n_conn_tokens; i++)
            app(buf, cap, &len, "[%.*s]", (int)h->conn_tokens[i].len, sp(h->conn_tokens[i]));
        app(buf, cap, &len, "\n");
    }
    for (unsigned i = 0; i < h->n_hdr; i++) {
        const struct h1_header *hd = &h->hdr[i];
        assert_inside(hd->name, data, n);
        assert_inside(hd->value, data, n);
        app(buf, cap, &len, "%.*s: [%.*s]\n", (int)hd->name.len, sp(hd->name), (int)hd->value.len,
            sp(hd->value));
    }
}

/* --- body framing ------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Removes chunked framing as h1_out writes it: "%zx\r\n", the bytes, "\r\n"
 * for each chunk, then "0\r\n\r\n" and nothing after (or, when !need_end,
 * possibly nothing yet). No leading zeros, no empty chunk but the last.
 * False when the framing is anything else. */
static bool dechunk(const char *in, size_t n, bool need_end, char *out, size_t *out_len)
{
    size_t i = 0, o = 0;

    for (;;) {
        size_t size = 0, digits = 0;

        if (i == n && !need_end)
            break;
        while (i < n && hexval(in[i]) >= 0) {
            if (digits == 0 && in[i] == '0' && i + 1 < n && hexval(in[i + 1]) >= 0)
                return false;
            size = size * 16 + (size_t)hexval(in[i]);
            if (++digits > 15)
                return false;
            i++;
        }
        if (digits == 0 || n - i < 2 || in[i] != '\r' || in[i + 1] != '\n')
            return false;
        i += 2;
        if (size == 0) {
            if (n - i != 2 || in[i] != '\r' || in[i + 1] != '\n')
                return false;
            *out_len = o;
            return true;
        }
        if (n - i < size + 2 || o + size > WIRE_MAX)
            return false;
        memcpy(out + o, in + i, size);
        o += size;
        i += size;
        if (in[i] != '\r' || in[i + 1] != '\n')
            return false;
        i += 2;
    }
    *out_len = o;
    return true;
}

static void collect(struct msg *m, struct h1_out *out)
{
    for (unsigned i = 0; i < out->n; i++) {
        size_t len = out->iov[i].len;
        assert_true(len <= WIRE_MAX - m->wire_len);
        if (len > 0)
            memcpy(m->wire + m->wire_len, out->iov[i].base, len);
        m->wire_len += len;
    }
    h1_out_reset(out);
}

/* Derives the body from the wire bytes once a message ended or the input
 * ran out. */
static void msg_body(struct msg *m, const struct opts *o)
{
    const char *w = m->wire;
    size_t n = m->wire_len;

    if (o->head_iov && !o->no_out && m->check == 0 && m->n_events > 0 && m->events[0] == 'H') {
        size_t hl = sizeof(head_iov) - 1;
        assert_true(n >= hl);
        assert_memory_equal(w, head_iov, hl);
        w += hl;
        n -= hl;
    }
    if (o->chunked_out) {
        if (!dechunk(w, n, m->done, m->body, &m->body_len)) {
            print_message("bad chunked framing: \"%.*s\"\n", (int)n, w);
            fail();
        }
    } else {
        memcpy(m->body, w, n);
        m->body_len = n;
    }
}

static void msg_begin(struct msg *m)
{
    m->head[0] = '\0';
    m->check = 0;
    m->head_end = m->end = 0;
    m->wire_len = m->body_len = 0;
    m->body_bytes = 0;
    m->events[0] = '\0';
    m->n_events = 0;
    m->done = false;
}

static void event_add(struct msg *m, char e)
{
    assert_true(m->n_events + 1 < sizeof(m->events));
    m->events[m->n_events++] = e;
    m->events[m->n_events] = '\0';
}

/* --- the feeding driver --------------------------------------------------------- */

/* Feeds data[0..n) to a fresh parser as the segments ending at cuts[0],
 * cuts[1], ... and n, checking each head as it comes and starting the next
 * message after each H1_EV_DONE, like conn.c does. */
static void run_feed(const struct opts *o, const char *data, size_t n, const size_t *cuts,
                     size_t n_cuts, struct run *r)
{
    struct h1_parser p;
    struct h1_out out;
    size_t off = 0, avail = n_cuts > 0 ? cuts[0] : n, next_cut = 1;
    struct msg *m;
    unsigned long guard = 0;
    static char again[DIGEST_MAX];

    r->n_msg = 1;
    r->verdict = 0;
    r->why = NULL;
    r->used = 0;
    r->needs_eof = false;
    r->finish = -1;
    m = &r->msg[0];
    msg_begin(m);

    memset(&out, 0, sizeof(out));
    out.chunked = o->chunked_out;
    /* h1_parser_init must not depend on zeroed memory. */
    memset(&p, 0xa5, sizeof(p));
    h1_parser_init(&p, o->type);
    p.skip_body = o->skip_body;
    p.out = o->no_out ? NULL : &out;

    for (;;) {
        size_t used = (size_t)-1;
        const char *why = NULL;
        enum h1_event ev;

        assert_true(++guard < 100000 + 10 * n);
        ev = h1_feed(&p, data + off, avail - off, &used);
        assert_true(used <= avail - off);
        off += used;
        switch (ev) {
        case H1_EV_MORE:
            assert_int_equal(off, avail); /* MORE means it took everything */
            if (avail == n)
                goto out_of_input;
            avail = next_cut < n_cuts ? cuts[next_cut++] : n;
            break;
        case H1_EV_HEAD:
            event_add(m, 'H');
            assert_int_equal(out.n, 0); /* no body before the head is reported */
            m->head_end = off;
            if (o->type == HTTP_REQUEST)
                m->check = h1_check_request(&p.head, &why);
            else
                m->check = h1_check_response(&p.head, &why);
            digest(m->head, sizeof(m->head), &p.head, data, n);
            if (m->check != 0) {
                assert_non_null(why);
                r->verdict = o->type == HTTP_REQUEST ? m->check : -1;
                r->why = why;
                r->used = off;
                return;
            }
            if (o->head_iov && !o->no_out) {
                h1_out_reset(&out);
                assert_true(h1_out_raw(&out, head_iov, sizeof(head_iov) - 1));
            }
            break;
        case H1_EV_BODY:
            event_add(m, 'B');
            /* It paused because the iovecs are nearly full, not before. */
            assert_true(out.n + 4 > H1_OUT_IOV && out.n <= H1_OUT_IOV);
            collect(m, &out);
            break;
        case H1_EV_DONE:
            event_add(m, 'D');
            /* The head stays as reported while the body and trailers go by. */
            digest(again, sizeof(again), &p.head, data, n);
            assert_string_equal(again, m->head);
            collect(m, &out);
            m->end = off;
            m->done = true;
            m->body_bytes = p.body_bytes;
            msg_body(m, o);
            if (off == n) {
                r->used = off;
                return;
            }
            assert_true(r->n_msg < MAX_MSG);
            h1_parser_next(&p);
            m = &r->msg[r->n_msg++];
            msg_begin(m);
            break;
        case H1_EV_ERROR:
            event_add(m, 'E');
            assert_non_null(p.error);
            assert_true(p.error_status == 400 || p.error_status == 431);
            r->verdict = o->type == HTTP_REQUEST ? p.error_status : -1;
            r->why = p.error;
            /* How much was taken before the error depends on the split. */
            r->used = (size_t)-1;
            return;
        default:
            fail_msg("unknown event %d", (int)ev);
        }
    }

out_of_input:
    r->used = off;
    r->needs_eof = h1_needs_eof(&p);
    if (o->finish) {
        r->finish = (int)h1_finish(&p);
        if (r->finish == H1_EV_DONE) {
            event_add(m, 'D');
            m->done = true;
            m->end = off;
        } else {
            event_add(m, 'E');
            r->verdict = o->type == HTTP_REQUEST ? 400 : -1;
            r->why = p.error;
        }
    }
    collect(m, &out);
    m->body_bytes = p.body_bytes;
    if (m->check == 0 && (m->done || m->events[0] == 'H'))
        msg_body(m, o);
}

/* Events of one message: H once and first, B only after it, D or E last. */
static void assert_events_ok(const struct msg *m)
{
    const char *e = m->events;
    size_t n = m->n_events;

    for (size_t i = 0; i < n; i++) {
        bool ok;
        switch (e[i]) {
        case 'H':
            ok = i == 0;
            break;
        case 'B':
            ok = i > 0;
            break;
        case 'D':
        case 'E':
            ok = i == n - 1;
            break;
        default:
            ok = false;
        }
        if (!ok) {
            print_message("bad event sequence \"%s\"\n", e);
            fail();
        }
    }
}

static void assert_same_run(const struct run *a, const struct run *b, const char *how, size_t k1,
                            size_t k2)
{
    bool same = a->n_msg == b->n_msg && a->verdict == b->verdict && a->used == b->used &&
                a->needs_eof == b->needs_eof && a->finish == b->finish &&
                (a->why == NULL) == (b->why == NULL) &&
                (a->why == NULL || strcmp(a->why, b->why) == 0);

    for (unsigned i = 0; same && i < a->n_msg; i++) {
        const struct msg *x = &a->msg[i], *y = &b->msg[i];
        same = strcmp(x->head, y->head) == 0 && x->check == y->check &&
               x->head_end == y->head_end && x->end == y->end && x->done == y->done &&
               x->body_len == y->body_len && memcmp(x->body, y->body, x->body_len) == 0 &&
               x->body_bytes == y->body_bytes;
    }
    for (unsigned i = 0; i < b->n_msg; i++)
        assert_events_ok(&b->msg[i]);
    if (same)
        return;
    print_message("fed %s at %zu/%zu: not the same as fed whole:\n%.*s\n", how, k1, k2,
                  (int)g_input_len, g_input);
    assert_int_equal(a->n_msg, b->n_msg);
    assert_int_equal(a->verdict, b->verdict);
    assert_string_equal(a->why ? a->why : "(none)", b->why ? b->why : "(none)");
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->needs_eof, b->needs_eof);
    assert_int_equal(a->finish, b->finish);
    for (unsigned i = 0; i < a->n_msg; i++) {
        const struct msg *x = &a->msg[i], *y = &b->msg[i];
        assert_string_equal(x->head, y->head);
        assert_int_equal(x->check, y->check);
        assert_int_equal(x->head_end, y->head_end);
        assert_int_equal(x->end, y->end);
        assert_int_equal(x->done, y->done);
        assert_int_equal(x->body_bytes, y->body_bytes);
        assert_int_equal(x->body_len, y->body_len);
        assert_memory_equal(x->body, y->body, x->body_len);
    }
    fail();
}

/* Feeds data whole into fx->ref, then split in two at every offset, byte
 * by byte and, with three, split in three at every pair of offsets; each
 * must match fx->ref. */
static void feed_every_way(struct fixture *fx, const struct opts *o, const char *data, size_t n,
                           bool three)
{
    size_t cut[2];

    g_input = data;
    g_input_len = n;
    run_feed(o, data, n, NULL, 0, &fx->ref);
    for (unsigned i = 0; i < fx->ref.n_msg; i++)
        assert_events_ok(&fx->ref.msg[i]);
    for (size_t k = 0; k <= n; k++) {
        cut[0] = k;
        run_feed(o, data, n, cut, 1, &fx->trial);
        assert_same_run(&fx->ref, &fx->trial, "in two", k, n);
    }
    free(fx->cuts);
    fx->cuts = malloc((n + 1) * sizeof(*fx->cuts));
    assert_non_null(fx->cuts);
    for (size_t k = 0; k < n; k++)
        fx->cuts[k] = k + 1;
    run_feed(o, data, n, fx->cuts, n, &fx->trial);
    assert_same_run(&fx->ref, &fx->trial, "byte by byte", 0, n);
    if (!three)
        return;
    for (size_t k1 = 0; k1 <= n; k1++) {
        for (size_t k2 = k1; k2 <= n; k2++) {
            cut[0] = k1;
            cut[1] = k2;
            run_feed(o, data, n, cut, 2, &fx->trial);
            assert_same_run(&fx->ref, &fx->trial, "in three", k1, k2);
        }
    }
}

static void assert_msg(const struct run *r, unsigned i, const char *head, const char *body,
                       size_t body_len)
{
    const struct msg *m = &r->msg[i];

    assert_true(i < r->n_msg);
    assert_string_equal(m->head, head);
    assert_int_equal(m->check, 0);
    assert_true(m->done);
    assert_int_equal(m->body_len, body_len);
    assert_memory_equal(m->body, body, body_len);
}

/* The four ways a body can leave: as received, re-framed as chunks, with a
 * head in front of it in the same iovecs, and dropped. */
static const struct opts out_modes[] = {
    {.chunked_out = false},
    {.chunked_out = true},
    {.chunked_out = true, .head_iov = true},
    {.chunked_out = false, .head_iov = true},
    {.no_out = true},
};

/* Feeds a single message in every out mode and every split and checks the
 * result fed whole against head and body. */
static void one_message_every_way(struct fixture *fx, llhttp_type_t type, const char *data,
                                  size_t n, const char *head, const char *body, size_t body_len,
                                  bool three)
{
    for (size_t i = 0; i < sizeof(out_modes) / sizeof(out_modes[0]); i++) {
        struct opts o = out_modes[i];
        o.type = type;
        feed_every_way(fx, &o, data, n, three);
        assert_int_equal(fx->ref.n_msg, 1);
        assert_int_equal(fx->ref.verdict, 0);
        assert_int_equal(fx->ref.used, n);
        assert_int_equal(fx->ref.msg[0].body_bytes, body_len);
        if (o.no_out)
            assert_msg(&fx->ref, 0, head, "", 0);
        else
            assert_msg(&fx->ref, 0, head, body, body_len);
    }
}

/* --- requests, accepted ----------------------------------------------------------- */

static void test_request_get(void **state)
{
    static const char data[] = "GET /a/b?c=d HTTP/1.1\r\n"
                               "Host: example.com\r\n"
                               "User-Agent: t/1.0\r\n"
                               "X-Empty:\r\n"
                               "X-Pad: \t padded  value \t \r\n"
                               "Connection: keep-alive, X-Hop\r\n"
                               "X-Hop: 1\r\n"
                               "X-Request-Id: abc-123\r\n"
                               "\r\n";
    static const char head[] = "method=GET target=/a/b?c=d status=0 reason= version=1.1\n"
                               "flags=KEEP_ALIVE cl=0 host=0 request_id=6\n"
                               "conn=[keep-alive][X-Hop]\n"
                               "Host: [example.com]\n"
                               "User-Agent: [t/1.0]\n"
                               "X-Empty: []\n"
                               "X-Pad: [padded  value]\n"
                               "Connection: [keep-alive, X-Hop]\n"
                               "X-Hop: [1]\n"
                               "X-Request-Id: [abc-123]\n";

    one_message_every_way(*state, HTTP_REQUEST, RAW(data), head, "", 0, false);
    assert_int_equal(((struct fixture *)*state)->ref.msg[0].head_end, sizeof(data) - 1);
    assert_string_equal(((struct fixture *)*state)->ref.msg[0].events, "HD");
}

static void test_request_content_length(void **state)
{
    static const char data[] = "POST /upload HTTP/1.1\r\n"
                               "Host: h\r\n"
                               "Content-Length: 11\r\n"
                               "Expect: 100-continue\r\n"
                               "Content-Type: text/plain\r\n"
                               "\r\n"
                               "hello world";
    static const char head[] = "method=POST target=/upload status=0 reason= version=1.1\n"
                               "flags=CL|KEEP_ALIVE|EXPECT_CONTINUE cl=11 host=0 request_id=-1\n"
                               "Host: [h]\n"
                               "Content-Length: [11]\n"
                               "Expect: [100-continue]\n"
                               "Content-Type: [text/plain]\n";
    struct fixture *fx = *state;

    one_message_every_way(fx, HTTP_REQUEST, RAW(data), head, RAW("hello world"), true);
    assert_int_equal(fx->ref.msg[0].head_end, sizeof(data) - 1 - 11);
}

static void test_request_chunked(void **state)
{
    /* Extensions and trailers are legal; the trailers are dropped. */
    static const char data[] = "PUT /c HTTP/1.1\r\n"
                               "Host: h\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "\r\n"
                               "5;ext=1\r\nhello\r\n"
                               "A\r\n world, ok\r\n"
                               "1\r\n!\r\n"
                               "0\r\n"
                               "X-Trailer: t\r\n"
                               "\r\n";
    static const char head[] = "method=PUT target=/c status=0 reason= version=1.1\n"
                               "flags=CHUNKED|KEEP_ALIVE cl=0 host=0 request_id=-1\n"
                               "Host: [h]\n"
                               "Transfer-Encoding: [chunked]\n";

    one_message_every_way(*state, HTTP_REQUEST, RAW(data), head, RAW("hello world, ok!"), true);
}

/* Many small chunks fill the iovecs: h1_feed must pause with H1_EV_BODY,
 * never drop a span, and leave room for the last-chunk marker. */
static void test_request_many_chunks(void **state)
{
    struct fixture *fx = *state;
    static char data[4096];
    static char body[1024];
    size_t n = 0, b = 0;
    char head[512];

    n += (size_t)snprintf(data, sizeof(data),
                          "POST /many HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 70; i++) {
        int len = 1 + i % 3;
        n += (size_t)snprintf(data + n, sizeof(data) - n, "%x\r\n", len);
        for (int j = 0; j < len; j++) {
            char c = (char)('a' + (i + j) % 26);
            data[n++] = c;
            body[b++] = c;
        }
        data[n++] = '\r';
        data[n++] = '\n';
    }
    n += (size_t)snprintf(data + n, sizeof(data) - n, "0\r\n\r\n");
    snprintf(head, sizeof(head),
             "method=POST target=/many status=0 reason= version=1.1\n"
             "flags=CHUNKED|KEEP_ALIVE cl=0 host=0 request_id=-1\n"
             "Host: [h]\n"
             "Transfer-Encoding: [chunked]\n");

    one_message_every_way(fx, HTTP_REQUEST, data, n, head, body, b, false);

    /* Fed whole into a fresh h1_out, 70 spans cannot fit in one write. */
    struct opts o = {.type = HTTP_REQUEST, .chunked_out = true};
    run_feed(&o, data, n, NULL, 0, &fx->ref);
    assert_non_null(strchr(fx->ref.msg[0].events, 'B'));
}

/* A body larger than any single iovec count, fed in many pieces. */
static void test_request_large_body(void **state)
{
    struct fixture *fx = *state;
    static char data[8192];
    static char body[4000];
    size_t n;
    char head[512];

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(' ' + i % 90);
    n = (size_t)snprintf(data, sizeof(data),
                         "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
                         sizeof(body));
    memcpy(data + n, body, sizeof(body));
    n += sizeof(body);
    snprintf(head, sizeof(head),
             "method=POST target=/big status=0 reason= version=1.1\n"
             "flags=CL|KEEP_ALIVE cl=%zu host=0 request_id=-1\n"
             "Host: [h]\n"
             "Content-Length: [%zu]\n",
             sizeof(body), sizeof(body));
    one_message_every_way(fx, HTTP_REQUEST, data, n, head, body, sizeof(body), false);
}

static void test_request_http10(void **state)
{
    /* No Host is fine in HTTP/1.0; keep-alive only when asked for. */
    static const char ka[] = "POST /old HTTP/1.0\r\n"
                             "Connection: Keep-Alive\r\n"
                             "Content-Length: 3\r\n"
                             "\r\n"
                             "abc";
    static const char ka_head[] = "method=POST target=/old status=0 reason= version=1.0\n"
                                  "flags=CL|KEEP_ALIVE cl=3 host=-1 request_id=-1\n"
                                  "conn=[Keep-Alive]\n"
                                  "Connection: [Keep-Alive]\n"
                                  "Content-Length: [3]\n";
    static const char closed[] = "GET /old HTTP/1.0\r\n"
                                 "Accept: */*\r\n"
                                 "\r\n";
    static const char closed_head[] = "method=GET target=/old status=0 reason= version=1.0\n"
                                      "flags= cl=0 host=-1 request_id=-1\n"
                                      "Accept: [*/*]\n";
    static const char close11[] = "GET / HTTP/1.1\r\n"
                                  "Host: h\r\n"
                                  "Connection: close\r\n"
                                  "\r\n";
    static const char close11_head[] = "method=GET target=/ status=0 reason= version=1.1\n"
                                       "flags= cl=0 host=0 request_id=-1\n"
                                       "conn=[close]\n"
                                       "Host: [h]\n"
                                       "Connection: [close]\n";

    one_message_every_way(*state, HTTP_REQUEST, RAW(ka), ka_head, RAW("abc"), false);
    one_message_every_way(*state, HTTP_REQUEST, RAW(closed), closed_head, "", 0, false);
    one_message_every_way(*state, HTTP_REQUEST, RAW(close11), close11_head, "", 0, false);
}

static void test_request_accepted_edges(void **state)
{
    static const char options[] = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    static const char options_head[] = "method=OPTIONS target=* status=0 reason= version=1.1\n"
                                       "flags=KEEP_ALIVE cl=0 host=0 request_id=-1\n"
                                       "Host: [h]\n";
    /* Whitespace around values goes, inner whitespace and obs-text stay. */
    static const char ws[] = "GET / HTTP/1.1\r\n"
                             "host:h\r\n"
                             "A: \t x \t y\t \r\n"
                             "B:\t\t\r\n"
                             "C: caf\xc3\xa9 \r\n"
                             "Content-Length: 0\r\n"
                             "\r\n";
    static const char ws_head[] = "method=GET target=/ status=0 reason= version=1.1\n"
                                  "flags=CL|KEEP_ALIVE cl=0 host=0 request_id=-1\n"
                                  "host: [h]\n"
                                  "A: [x \t y]\n"
                                  "B: []\n"
                                  "C: [caf\xc3\xa9]\n"
                                  "Content-Length: [0]\n";

    one_message_every_way(*state, HTTP_REQUEST, RAW(options), options_head, "", 0, false);
    one_message_every_way(*state, HTTP_REQUEST, RAW(ws), ws_head, "", 0, false);
}

/* --- pipelining ---------------------------------------------------------------------- */

static void test_pipelined_stepwise(void **state)
{
    static const char data[] = "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                               "GET /two HTTP/1.1\r\nHost: b\r\nX-Two: 2\r\n\r\n";
    const size_t head1 = sizeof("POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n") - 1;
    const size_t n = sizeof(data) - 1;
    struct h1_parser p;
    struct h1_out out;
    const char *why = NULL;
    size_t off = 0, used = 0;

    memset(&out, 0, sizeof(out));
    h1_parser_init(&p, HTTP_REQUEST);
    p.out = &out;

    assert_int_equal(h1_feed(&p, data, n, &used), H1_EV_HEAD);
    assert_int_equal(used, head1);
    off += used;
    assert_int_equal(h1_check_request(&p.head, &why), 0);
    assert_true(h1_span_eq(p.head.target, "/one"));
    assert_int_equal(out.n, 0);

    assert_int_equal(h1_feed(&p, data + off, n - off, &used), H1_EV_DONE);
    assert_int_equal(used, 3);
    off += used;
    assert_int_equal(out.n, 1);
    assert_int_equal(out.iov[0].len, 3);
    assert_ptr_equal(out.iov[0].base, data + head1);
    h1_out_reset(&out);

    h1_parser_next(&p);
    assert_int_equal(p.head.n_hdr, 0);
    assert_int_equal(p.head.flags, 0);
    assert_null(p.head.method.p);
    assert_int_equal(h1_feed(&p, data + off, n - off, &used), H1_EV_HEAD);
    off += used;
    assert_int_equal(off, n);
    assert_int_equal(h1_check_request(&p.head, &why), 0);
    assert_true(h1_span_eq(p.head.method, "get"));
    assert_true(h1_span_eq(p.head.target, "/two"));
    assert_int_equal(p.head.n_hdr, 2);
    assert_int_equal(p.head.host, 0);
    assert_true(h1_span_eq(p.head.hdr[0].value, "b"));
    assert_int_equal(p.head.flags, H1_F_KEEP_ALIVE);
    assert_int_equal(h1_feed(&p, data + off, n - off, &used), H1_EV_DONE);
    assert_int_equal(used, 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(p.body_bytes, 0);
}

static void test_pipelined_every_split(void **state)
{
    struct fixture *fx = *state;
    static const char data[] = "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                               "POST /two HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "2\r\nde\r\n0\r\n\r\n"
                               "GET /three HTTP/1.1\r\nHost: c\r\n\r\n";

    for (size_t i = 0; i < sizeof(out_modes) / sizeof(out_modes[0]); i++) {
        struct opts o = out_modes[i];
        o.type = HTTP_REQUEST;
        feed_every_way(fx, &o, RAW(data), false);
        assert_int_equal(fx->ref.n_msg, 3);
        assert_int_equal(fx->ref.used, sizeof(data) - 1);
        assert_int_equal(fx->ref.msg[0].body_bytes, 3);
        assert_int_equal(fx->ref.msg[1].body_bytes, 2);
        assert_int_equal(fx->ref.msg[2].body_bytes, 0);
        if (o.no_out)
            continue;
        assert_msg(&fx->ref, 0,
                   "method=POST target=/one status=0 reason= version=1.1\n"
                   "flags=CL|KEEP_ALIVE cl=3 host=0 request_id=-1\n"
                   "Host: [a]\n"
                   "Content-Length: [3]\n",
                   RAW("abc"));
        assert_msg(&fx->ref, 1,
                   "method=POST target=/two status=0 reason= version=1.1\n"
                   "flags=CHUNKED|KEEP_ALIVE cl=0 host=0 request_id=-1\n"
                   "Host: [b]\n"
                   "Transfer-Encoding: [chunked]\n",
                   RAW("de"));
        assert_msg(&fx->ref, 2,
                   "method=GET target=/three status=0 reason= version=1.1\n"
                   "flags=KEEP_ALIVE cl=0 host=0 request_id=-1\n"
                   "Host: [c]\n",
                   "", 0);
    }
}

/* --- requests, refused ----------------------------------------------------------------- */

struct reject {
    const char *name;
    const char *data;
    size_t len;
    int status;      /* 400, 417 or 431; -1 for a refused response */
    const char *why; /* a part of the reason given, or NULL */
};

/* The verdict must not depend on how the input was split, and nothing of
 * the message may have been reported complete before it. */
static void refused_every_way(struct fixture *fx, const struct reject *c, llhttp_type_t type)
{
    struct opts o = {.type = type};

    feed_every_way(fx, &o, c->data, c->len, false);
    if (fx->ref.verdict != c->status)
        print_message("case %s: verdict %d (%s), want %d\n", c->name, fx->ref.verdict,
                      fx->ref.why ? fx->ref.why : "-", c->status);
    assert_int_equal(fx->ref.verdict, c->status);
    assert_non_null(fx->ref.why);
    if (c->why != NULL && strstr(fx->ref.why, c->why) == NULL) {
        print_message("case %s: reason \"%s\", want \"%s\"\n", c->name, fx->ref.why, c->why);
        fail();
    }
    assert_int_equal(fx->ref.n_msg, 1);
    assert_false(fx->ref.msg[0].done);
}

#define GET11 "GET / HTTP/1.1\r\nHost: h\r\n"
#define POST11 "POST / HTTP/1.1\r\nHost: h\r\n"

static const struct reject request_rejects[] = {
    {"CL then TE", RAW(POST11 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     400, NULL},
    {"TE then CL", RAW(POST11 "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
     400, NULL},
    {"two CL, same", RAW(POST11 "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), 400, NULL},
    {"two CL, differ", RAW(POST11 "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), 400, NULL},
    {"CL abc", RAW(POST11 "Content-Length: abc\r\n\r\n"), 400, NULL},
    {"CL 1,1", RAW(POST11 "Content-Length: 1,1\r\n\r\na"), 400, NULL},
    {"CL -1", RAW(POST11 "Content-Length: -1\r\n\r\n"), 400, NULL},
    {"CL +1", RAW(POST11 "Content-Length: +1\r\n\r\na"), 400, NULL},
    {"CL 1 1", RAW(POST11 "Content-Length: 1 1\r\n\r\na"), 400, NULL},
    {"CL overflow", RAW(POST11 "Content-Length: 99999999999999999999999\r\n\r\n"), 400, NULL},
    {"TE gzip", RAW(POST11 "Transfer-Encoding: gzip\r\n\r\nabc"), 400, NULL},
    {"TE chunked, gzip", RAW(POST11 "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), 400,
     NULL},
    {"TE gzip, chunked", RAW(POST11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 400,
     NULL},
    {"TE chunked twice",
     RAW(POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400,
     NULL},
    {"TE gzip then chunked",
     RAW(POST11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400,
     NULL},
    {"TE identity", RAW(POST11 "Transfer-Encoding: identity\r\n\r\n"), 400, NULL},
    {"chunk size zz", RAW(POST11 "Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"), 400,
     NULL},
    {"chunk size overflow",
     RAW(POST11 "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nab\r\n0\r\n\r\n"), 400,
     NULL},
    {"chunk size overflow, long",
     RAW(POST11 "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"), 400, NULL},
    {"chunk data too long", RAW(POST11 "Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
     400, NULL},
    {"obs-fold, space", RAW(GET11 "X-A: a\r\n b\r\n\r\n"), 400, NULL},
    {"obs-fold, tab", RAW(GET11 "X-A: a\r\n\tb\r\n\r\n"), 400, NULL},
    {"obs-fold, first header", RAW("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400, NULL},
    {"space before colon", RAW(GET11 "X-A : a\r\n\r\n"), 400, NULL},
    {"space before colon, Host", RAW("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400, NULL},
    {"empty name", RAW(GET11 ": a\r\n\r\n"), 400, NULL},
    {"bare CR in value", RAW(GET11 "X-A: a\rb\r\n\r\n"), 400, NULL},
    {"bare CR ends a value", RAW(GET11 "X-A: a\rX-B: b\r\n\r\n"), 400, NULL},
    {"bare LF ends a line", RAW(GET11 "X-A: a\nX-B: b\r\n\r\n"), 400, NULL},
    {"NUL in value", RAW(GET11 "X-A: a\0b\r\n\r\n"), 400, NULL},
    {"0x01 in value",
     RAW(GET11 "X-A: a\x01"
               "b\r\n\r\n"),
     400, NULL},
    {"0x7f in value",
     RAW(GET11 "X-A: a\x7f"
               "b\r\n\r\n"),
     400, NULL},
    {"0x1f in value", RAW(GET11 "X-A: \x1f\r\n\r\n"), 400, NULL},
    {"missing Host", RAW("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400, "missing host"},
    {"two Host", RAW("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400, "more than one host"},
    {"two Host, same", RAW("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400,
     "more than one host"},
    {"Host with userinfo", RAW("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n"), 400, "userinfo"},
    {"Host with two ports", RAW("GET / HTTP/1.1\r\nHost: h:1:2\r\n\r\n"), 400, "port"},
    {"Host with a space", RAW("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400, "character"},
    {"Host empty", RAW("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400, "empty host"},
    {"Host only spaces", RAW("GET / HTTP/1.1\r\nHost:  \t \r\n\r\n"), 400, "empty host"},
    {"Host empty, HTTP/1.0", RAW("GET / HTTP/1.0\r\nHost: \r\n\r\n"), 400, "empty host"},
    {"Host unclosed [", RAW("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400, "]"},
    {"target with #", RAW("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "fragment"},
    {"target with \\", RAW("GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "character"},
    {"target with %zz", RAW("GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "percent"},
    {"CONNECT in origin-form", RAW("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "CONNECT"},
    {"HTTP/1.0 with TE", RAW("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400,
     NULL},
    {"absolute-form", RAW("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "origin-form"},
    {"authority-form", RAW("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), 400, "origin-form"},
    {"asterisk with GET", RAW("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "origin-form"},
    {"asterisk and more", RAW("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"HTTP/2.0", RAW("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 400, NULL},
    {"HTTP/1.2", RAW("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 400, NULL},
    {"HTTP/0.9 line", RAW("GET /\r\n\r\n"), 400, NULL},
    {"lowercase method", RAW("get / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"unknown method", RAW("FETCH / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"bare LF line ends", RAW("GET / HTTP/1.1\nHost: h\n\n"), 400, NULL},
    {"Expect other", RAW(GET11 "Expect: 100-continue-please\r\n\r\n"), 417, "100-continue"},
    {"Expect empty", RAW(GET11 "Expect:\r\n\r\n"), 417, "100-continue"},
};

static void test_request_rejections(void **state)
{
    for (size_t i = 0; i < sizeof(request_rejects) / sizeof(request_rejects[0]); i++)
        refused_every_way(*state, &request_rejects[i], HTTP_REQUEST);
}

static size_t many_headers(char *buf, size_t cap, unsigned n_hdr)
{
    size_t n = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: h\r\n");

    for (unsigned i = 1; i < n_hdr; i++)
        n += (size_t)snprintf(buf + n, cap - n, "X-H%u: %u\r\n", i, i);
    n += (size_t)snprintf(buf + n, cap - n, "\r\n");
    assert_true(n < cap);
    return n;
}

static void test_request_header_count(void **state)
{
    struct fixture *fx = *state;
    static char data[4096];
    struct opts o = {.type = HTTP_REQUEST};
    size_t n;

    n = many_headers(data, sizeof(data), H1_MAX_HEADERS);
    feed_every_way(fx, &o, data, n, false);
    assert_int_equal(fx->ref.verdict, 0);
    assert_true(fx->ref.msg[0].done);
    assert_non_null(strstr(fx->ref.msg[0].head, "X-H99: [99]\n"));

    n = many_headers(data, sizeof(data), H1_MAX_HEADERS + 1);
    struct reject c = {"one header too many", data, n, 431, NULL};
    refused_every_way(fx, &c, HTTP_REQUEST);
}

/* check_headers must also hold where llhttp is lenient or changes: heads
 * built by hand reach h1_check_request and h1_check_response directly. */
static void head_init(struct h1_head *h, const char *method, const char *target, int status,
                      int minor)
{
    memset(h, 0, sizeof(*h));
    h->host = -1;
    h->request_id = -1;
    h->major = 1;
    h->minor = (uint8_t)minor;
    h->status = status;
    if (method != NULL) {
        h->method = (struct h1_span){method, (uint32_t)strlen(method)};
        h->target = (struct h1_span){target, (uint32_t)strlen(target)};
    }
}

static void head_addn(struct h1_head *h, const char *name, const char *value, size_t vlen)
{
    assert_true(h->n_hdr < H1_MAX_HEADERS);
    h->hdr[h->n_hdr].name = (struct h1_span){name, (uint32_t)strlen(name)};
    h->hdr[h->n_hdr].value = (struct h1_span){value, (uint32_t)vlen};
    h->n_hdr++;
}

static void head_add(struct h1_head *h, const char *name, const char *value)
{
    head_addn(h, name, value, strlen(value));
}

static int check_req(struct h1_head *h, const char *why_part)
{
    const char *why = NULL;
    int rc = h1_check_request(h, &why);

    if (rc != 0) {
        assert_non_null(why);
        if (why_part != NULL && strstr(why, why_part) == NULL) {
            print_message("reason \"%s\", want \"%s\"\n", why, why_part);
            fail();
        }
    }
    return rc;
}

static int check_resp(struct h1_head *h, const char *why_part)
{
    const char *why = NULL;
    int rc = h1_check_response(h, &why);

    if (rc != 0) {
        assert_int_equal(rc, -1);
        assert_non_null(why);
        if (why_part != NULL && strstr(why, why_part) == NULL) {
            print_message("reason \"%s\", want \"%s\"\n", why, why_part);
            fail();
        }
    }
    return rc;
}

/* The header checks requests and responses share. */
static void shared_header_checks(bool request)
{
    static const char *const bad_values[] = {"a\0b", "a\rb",  "a\nb", "a\r\n b",
                                             "\x01", "a\x7f", "\x1f", "\x0b"};
    static const char *const bad_names[] = {"",     "X A",  "X:A", "X\tA", "X\x7f", "caf\xc3\xa9",
                                            "X\"A", "X(A)", "X/A", "X@A"};
    struct h1_head h;

#define CHECK(want, part) ((request ? check_req(&h, part) : check_resp(&h, part)) == (want))
#define BAD (request ? 400 : -1)
#define START()                                                                                    \
    do {                                                                                           \
        if (request) {                                                                             \
            head_init(&h, "POST", "/", 0, 1);                                                      \
            head_add(&h, "Host", "h");                                                             \
        } else {                                                                                   \
            head_init(&h, NULL, NULL, 200, 1);                                                     \
        }                                                                                          \
    } while (0)

    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        START();
        head_addn(&h, "X-V", bad_values[i], i == 0 ? 3 : strlen(bad_values[i]));
        assert_true(CHECK(BAD, "control character"));
    }
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        START();
        head_add(&h, bad_names[i], "v");
        assert_true(CHECK(BAD, "header name"));
    }

    /* Every tchar, HTAB and obs-text inside a value: fine, and trimmed. */
    START();
    head_add(&h, "!#$%&'*+-.^_`|~09azAZ", " \t a\tb \xff\x80 \t");
    assert_true(CHECK(0, NULL));
    assert_int_equal(h.hdr[h.n_hdr - 1].value.len, 6);
    assert_memory_equal(h.hdr[h.n_hdr - 1].value.p, "a\tb \xff\x80", 6);

    START();
    h.flags |= H1_F_CONTENT_LENGTH;
    head_add(&h, "Content-Length", "3");
    head_add(&h, "content-length", "3");
    assert_true(CHECK(BAD, "more than one content-length"));

    START();
    h.flags |= H1_F_CHUNKED;
    head_add(&h, "Content-Length", "3");
    head_add(&h, "Transfer-Encoding", "chunked");
    assert_true(CHECK(BAD, "both content-length and transfer-encoding"));

    START();
    h.flags |= H1_F_CHUNKED;
    head_add(&h, "Transfer-Encoding", "chunked");
    head_add(&h, "TRANSFER-ENCODING", "chunked");
    assert_true(CHECK(BAD, "more than one transfer-encoding"));

    static const char *const bad_te[] = {
        "gzip", "chunked, gzip", "gzip, chunked", "chunked,", "chunkedx", "identity", ""};
    for (size_t i = 0; i < sizeof(bad_te) / sizeof(bad_te[0]); i++) {
        START();
        h.flags |= H1_F_CHUNKED;
        head_add(&h, "Transfer-Encoding", bad_te[i]);
        assert_true(CHECK(BAD, "transfer coding other than chunked"));
    }

    /* llhttp did not see chunked as the framing: refuse rather than guess. */
    START();
    head_add(&h, "Transfer-Encoding", "chunked");
    assert_true(CHECK(BAD, "invalid transfer-encoding"));

    START();
    h.flags |= H1_F_CHUNKED;
    head_add(&h, "Transfer-Encoding", " Chunked ");
    assert_true(CHECK(0, NULL));

    START();
    h.minor = 0;
    h.flags |= H1_F_CHUNKED;
    head_add(&h, "Transfer-Encoding", "chunked");
    assert_true(CHECK(BAD, "HTTP/1.0"));

    START();
    h.major = 2;
    h.minor = 0;
    assert_true(CHECK(BAD, "version"));
    START();
    h.minor = 2;
    assert_true(CHECK(BAD, "version"));
    START();
    h.major = 0;
    h.minor = 9;
    assert_true(CHECK(BAD, "version"));

#undef START
#undef BAD
#undef CHECK
}

static void test_check_request_built(void **state)
{
    struct h1_head h;

    shared_header_checks(true);

    head_init(&h, "GET", "/", 0, 1);
    assert_int_equal(check_req(&h, "missing host"), 400);
    head_init(&h, "GET", "/", 0, 0);
    assert_int_equal(check_req(&h, NULL), 0);
    assert_int_equal(h.host, -1);
    head_init(&h, "GET", "/", 0, 0);
    head_add(&h, "Host", "a");
    head_add(&h, "HOST", "a");
    assert_int_equal(check_req(&h, "more than one host"), 400);

    head_init(&h, "GET", "", 0, 1);
    head_add(&h, "Host", "a");
    assert_int_equal(check_req(&h, "origin-form"), 400);
    head_init(&h, "OPTIONS", "*", 0, 1);
    head_add(&h, "Host", "a");
    assert_int_equal(check_req(&h, NULL), 0);
    head_init(&h, "GET", "*", 0, 1);
    head_add(&h, "Host", "a");
    assert_int_equal(check_req(&h, "origin-form"), 400);
    head_init(&h, "OPTIONS", "**", 0, 1);
    head_add(&h, "Host", "a");
    assert_int_equal(check_req(&h, "origin-form"), 400);
    head_init(&h, "GET", "h:80", 0, 1);
    head_add(&h, "Host", "a");
    assert_int_equal(check_req(&h, "origin-form"), 400);

    head_init(&h, "GET", "/", 0, 1);
    head_add(&h, "Host", "a");
    head_add(&h, "EXPECT", "  100-Continue ");
    assert_int_equal(check_req(&h, NULL), 0);
    assert_true(h.flags & H1_F_EXPECT_CONTINUE);
    head_init(&h, "GET", "/", 0, 1);
    head_add(&h, "Host", "a");
    head_add(&h, "Expect", "100-continue, x");
    assert_int_equal(check_req(&h, "100-continue"), 417);

    /* The indexes it fills in, and the names Connection lists. */
    head_init(&h, "GET", "/", 0, 1);
    head_add(&h, "Accept", "*/*");
    head_add(&h, "Connection", "close,, X-A ,\tX-B");
    head_add(&h, "hOsT", "a");
    head_add(&h, "x-request-ID", "r");
    head_add(&h, "connection", "X-C");
    assert_int_equal(check_req(&h, NULL), 0);
    assert_int_equal(h.host, 2);
    assert_int_equal(h.request_id, 3);
    assert_int_equal(h.n_conn_tokens, 4);
    assert_true(h1_span_eq(h.conn_tokens[0], "close"));
    assert_true(h1_span_eq(h.conn_tokens[1], "x-a"));
    assert_true(h1_span_eq(h.conn_tokens[2], "x-b"));
    assert_true(h1_span_eq(h.conn_tokens[3], "x-c"));
}

/* --- Host: RFC 9112 section 3.2 and RFC 3986 uri-host [":" port] --------------------------- */

struct host_case {
    const char *value;
    size_t len;      /* 0: strlen(value) */
    const char *why; /* NULL: accepted; else a part of the reason */
};

static const struct host_case host_accepts[] = {
    {"h", 0, NULL},
    {"example.com", 0, NULL},
    {"Example.COM", 0, NULL},
    {"EXAMPLE.COM:8080", 0, NULL},
    {"example.com.", 0, NULL}, /* one trailing dot: the root, the router ignores it */
    {"example.com.:80", 0, NULL},
    {"my_svc-1.internal~x", 0, NULL}, /* unreserved: ALPHA DIGIT - . _ ~ */
    {"127.0.0.1", 0, NULL},
    {"127.0.0.1:1", 0, NULL},
    {"127.1", 0, NULL}, /* a reg-name to RFC 3986; fnproxy resolves no Host */
    {"h:65535", 0, NULL},
    {"[::1]", 0, NULL},
    {"[::1]:8080", 0, NULL},
    {"[2001:DB8::1]:443", 0, NULL},
    {"[::ffff:127.0.0.1]:80", 0, NULL},
    {"[1:2:3:4:5:6:7:8]", 0, NULL},
};

static const struct host_case host_refuses[] = {
    {"", 0, "empty host"},
    {":80", 0, "empty host"},
    {".", 0, "empty label"},
    {"a..b", 0, "empty label"},
    {".a", 0, "empty label"},
    {"a..", 0, "empty label"},
    {"u@h", 0, "userinfo"},
    {"u:p@h:80", 0, "userinfo"},
    {"h:80@evil", 0, "userinfo"},
    {"@h", 0, "userinfo"},
    {"h:1:2", 0, "port"},
    {"h:80:80", 0, "port"},
    {"h:", 0, "port"},
    {"h:x", 0, "port"},
    {"h:8x", 0, "port"},
    {"h:0", 0, "port"},
    {"h:080", 0, "port"},
    {"h:+80", 0, "port"},
    {"h:-1", 0, "port"},
    {"h:65536", 0, "port"},
    {"h:123456", 0, "port"},
    {"h: 80", 0, "port"},
    {"a b", 0, "character"},
    {"a\tb", 0, "character"},
    {"h/p", 0, "character"},
    {"h/", 0, "character"},
    {"h?", 0, "character"},
    {"h?q", 0, "character"},
    {"h#f", 0, "character"},
    {"h\\evil", 0, "character"},
    {"h%2ecom", 0, "character"},      /* pct-encoded: refused in a Host (one spelling) */
    {"h!$&'()*+,;=", 0, "character"}, /* sub-delims: no name holds them */
    {"a,b", 0, "character"},
    {"a;b", 0, "character"},
    {"h\"", 0, "character"},
    {"caf\xc3\xa9.example", 0, "character"},
    {"h\x80", 0, "character"},
    {"[::1", 0, "]"},
    {"[::1:80", 0, "]"},
    {"::1", 0, "empty host"},
    {"[]", 0, "IPv6"},
    {"[h]", 0, "IPv6"},
    {"[127.0.0.1]", 0, "IPv6"},
    {"[fe80::1%25eth0]", 0, "IPv6"},
    {"[fe80::1%eth0]", 0, "IPv6"},
    {"[v1.fe]", 0, "IPvFuture"},
    {"[V7.a:b]:80", 0, "IPvFuture"},
    {"[::1]x", 0, "port"},
    {"[::1]:", 0, "port"},
    {"[::1]:0", 0, "port"},
    {"[::1]]:80", 0, "port"},
    {"[[::1]]", 0, "IPv6"},
    {"a[b]", 0, "character"},
};

static void host_case_check(const struct host_case *c, int minor, bool proxy)
{
    struct h1_head h;
    const char *why = NULL;
    int rc;

    head_init(&h, proxy ? "CONNECT" : "GET", proxy ? "h:443" : "/", 0, minor);
    head_addn(&h, "Host", c->value, c->len ? c->len : strlen(c->value));
    rc = proxy ? h1_check_proxy_request(&h, &why) : h1_check_request(&h, &why);
    if (c->why == NULL && rc != 0) {
        print_message("Host \"%s\" (1.%d%s): refused (%s), want accepted\n", c->value, minor,
                      proxy ? ", proxy" : "", why ? why : "-");
        fail();
    }
    if (c->why != NULL &&
        (rc != 400 || why == NULL || strstr(why, "host") == NULL || strstr(why, c->why) == NULL)) {
        print_message("Host \"%s\" (1.%d%s): %d (%s), want 400 with \"%s\"\n", c->value, minor,
                      proxy ? ", proxy" : "", rc, why ? why : "-", c->why);
        fail();
    }
}

/* The same rules on ingress and on the egress listener, in HTTP/1.1 and
 * HTTP/1.0 (which may omit Host, but not send a bad one). */
static void test_check_request_host(void **state)
{
    for (int proxy = 0; proxy < 2; proxy++) {
        for (int minor = 0; minor < 2; minor++) {
            for (size_t i = 0; i < sizeof(host_accepts) / sizeof(host_accepts[0]); i++)
                host_case_check(&host_accepts[i], minor, proxy);
            for (size_t i = 0; i < sizeof(host_refuses) / sizeof(host_refuses[0]); i++)
                host_case_check(&host_refuses[i], minor, proxy);
        }
    }
}

/* --- request-target forms: RFC 9112 section 3.2 ------------------------------------------ */

struct target_case {
    const char *method, *target;
    const char *why; /* NULL: accepted; else a part of the reason */
};

/* Ingress: origin-form, or "*" with OPTIONS; nothing else. */
static const struct target_case ingress_targets[] = {
    {"GET", "/", NULL},
    {"GET", "/a/b?c=d&e=f", NULL},
    {"GET", "//double//slashes/", NULL},
    {"GET", "/a:b@c!$&'()*+,;=-._~", NULL},
    {"GET", "/%41%2f%2F%e9", NULL},
    {"GET", "/?q=/a?b:c@d", NULL},
    {"GET", "/?a[]=1&b={x}|^`", NULL}, /* what browsers send raw in a query */
    {"OPTIONS", "/", NULL},
    {"OPTIONS", "*", NULL},
    {"GET", "*", "origin-form"},
    {"POST", "*", "origin-form"},
    {"OPTIONS", "**", "origin-form"},
    {"GET", "", "origin-form"},
    {"GET", "a/b", "origin-form"},
    {"GET", "h:80", "origin-form"},
    {"GET", "http://h/", "origin-form"},
    {"CONNECT", "h:443", "CONNECT"},
    {"CONNECT", "/x", "CONNECT"},
    {"GET", "/a#b", "fragment"},
    {"GET", "/#", "fragment"},
    {"GET", "/?q#f", "fragment"},
    {"GET", "/a\\b", "character"},
    {"GET", "/?a\\b", "character"},
    {"GET", "/a b", "character"},
    {"GET", "/a\tb", "character"},
    {"GET", "/a\x01", "character"},
    {"GET", "/a\x7f", "character"},
    {"GET", "/caf\xc3\xa9", "character"},
    {"GET", "/a\"b", "character"},
    {"GET", "/<x>", "character"},
    {"GET", "/a[b]", "character"},
    {"GET", "/a{b}", "character"},
    {"GET", "/a|b", "character"},
    {"GET", "/a^b", "character"},
    {"GET", "/a`b", "character"},
    {"GET", "/?a\"b", "character"},
    {"GET", "/?a<b>", "character"},
    {"GET", "/%", "percent"},
    {"GET", "/%4", "percent"},
    {"GET", "/%zz", "percent"},
    {"GET", "/%4g", "percent"},
    {"GET", "/?q=%", "percent"},
};

/* The egress listener: CONNECT with authority-form only; other methods'
 * absolute-form is forward.c's to take apart (its scheme, authority and
 * answers), so any other target passes here but "*". */
static const struct target_case proxy_targets[] = {
    {"CONNECT", "h:443", NULL},
    {"CONNECT", "Example.COM:8443", NULL},
    {"CONNECT", "[::1]:443", NULL},
    {"CONNECT", "127.0.0.1:1", NULL},
    {"GET", "http://h/", NULL},
    {"GET", "/x", NULL}, /* forward.c answers proxy_request_expected */
    {"CONNECT", "h", "host:port"},
    {"CONNECT", "[::1]", "host:port"},
    {"CONNECT", "/x", "host:port"},
    {"CONNECT", "*", "host:port"},
    {"CONNECT", "http://h:443/", "port"},
    {"CONNECT", "h:", "port"},
    {"CONNECT", "h:0", "port"},
    {"CONNECT", "h:65536", "port"},
    {"CONNECT", "h:443/x", "port"},
    {"CONNECT", "u@h:443", "userinfo"},
    {"CONNECT", ":443", "empty host"},
    {"CONNECT", "[::1:443", "]"},
    {"CONNECT", "[v1.x]:443", "IPvFuture"},
    {"CONNECT", "h%2e:443", "character"},
    {"OPTIONS", "*", "asterisk"},
    {"GET", "*", "asterisk"},
};

static void target_case_check(const struct target_case *c, bool proxy)
{
    struct h1_head h;
    const char *why = NULL;
    int rc;

    head_init(&h, c->method, c->target, 0, 1);
    head_add(&h, "Host", "h");
    rc = proxy ? h1_check_proxy_request(&h, &why) : h1_check_request(&h, &why);
    if (c->why == NULL && rc != 0) {
        print_message("%s \"%s\"%s: refused (%s), want accepted\n", c->method, c->target,
                      proxy ? " (proxy)" : "", why ? why : "-");
        fail();
    }
    if (c->why != NULL && (rc != 400 || why == NULL || strstr(why, c->why) == NULL)) {
        print_message("%s \"%s\"%s: %d (%s), want 400 with \"%s\"\n", c->method, c->target,
                      proxy ? " (proxy)" : "", rc, why ? why : "-", c->why);
        fail();
    }
}

static void test_check_request_target(void **state)
{
    for (size_t i = 0; i < sizeof(ingress_targets) / sizeof(ingress_targets[0]); i++)
        target_case_check(&ingress_targets[i], false);
    for (size_t i = 0; i < sizeof(proxy_targets) / sizeof(proxy_targets[0]); i++)
        target_case_check(&proxy_targets[i], true);
}

/* What forward.c checks after an absolute-form target's authority: RFC
 * 3986 path-abempty [ "?" query ], with the same characters as above. */
static void test_path_check(void **state)
{
    static const char *const good[] = {"", "/", "?q", "/a/b?c", "//x", "/%2F", "/?a[]=1"};
    static const char *const bad[] = {"x",    ":80/", "/a#b", "/a\\b",
                                      "/a b", "/%g0", "/a|b", "/\x80"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (h1_path_check(good[i], strlen(good[i])) != NULL) {
            print_message("\"%s\" refused\n", good[i]);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (h1_path_check(bad[i], strlen(bad[i])) == NULL) {
            print_message("\"%s\" accepted\n", bad[i]);
            fail();
        }
    }
}

static void test_check_response_built(void **state)
{
    struct h1_head h;

    shared_header_checks(false);

    /* Host and Expect mean nothing in a response. */
    head_init(&h, NULL, NULL, 200, 1);
    head_add(&h, "Host", "a");
    head_add(&h, "Host", "b");
    head_add(&h, "Expect", "x");
    assert_int_equal(check_resp(&h, NULL), 0);
    assert_false(h.flags & H1_F_EXPECT_CONTINUE);

    head_init(&h, NULL, NULL, 100, 1);
    assert_int_equal(check_resp(&h, NULL), 0);
    head_init(&h, NULL, NULL, 599, 1);
    assert_int_equal(check_resp(&h, NULL), 0);
    head_init(&h, NULL, NULL, 99, 1);
    assert_int_equal(check_resp(&h, "status"), -1);
    head_init(&h, NULL, NULL, 600, 1);
    assert_int_equal(check_resp(&h, "status"), -1);
    head_init(&h, NULL, NULL, 0, 1);
    assert_int_equal(check_resp(&h, "status"), -1);
}

/* --- responses --------------------------------------------------------------------------- */

static void test_response_content_length(void **state)
{
    static const char data[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 12\r\n"
                               "\r\n"
                               "hello, world";
    static const char head[] = "method= target= status=200 reason=OK version=1.1\n"
                               "flags=CL|KEEP_ALIVE cl=12 host=-1 request_id=-1\n"
                               "Content-Type: [text/plain]\n"
                               "Content-Length: [12]\n";
    static const char nf[] = "HTTP/1.1 404 Not Found Here\r\n"
                             "Content-Length: 0\r\n"
                             "Connection: close\r\n"
                             "\r\n";
    static const char nf_head[] = "method= target= status=404 reason=Not Found Here version=1.1\n"
                                  "flags=CL cl=0 host=-1 request_id=-1\n"
                                  "conn=[close]\n"
                                  "Content-Length: [0]\n"
                                  "Connection: [close]\n";
    static const char empty_reason[] = "HTTP/1.1 201 \r\nContent-Length: 1\r\n\r\nx";
    static const char empty_reason_head[] = "method= target= status=201 reason= version=1.1\n"
                                            "flags=CL|KEEP_ALIVE cl=1 host=-1 request_id=-1\n"
                                            "Content-Length: [1]\n";

    one_message_every_way(*state, HTTP_RESPONSE, RAW(data), head, RAW("hello, world"), true);
    one_message_every_way(*state, HTTP_RESPONSE, RAW(nf), nf_head, "", 0, false);
    one_message_every_way(*state, HTTP_RESPONSE, RAW(empty_reason), empty_reason_head, RAW("x"),
                          false);
}

static void test_response_chunked(void **state)
{
    static const char data[] = "HTTP/1.1 200 OK\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Trailer: X-Sum\r\n"
                               "\r\n"
                               "3\r\nabc\r\n"
                               "10\r\n0123456789abcdef\r\n"
                               "0\r\n"
                               "X-Sum: 1\r\n"
                               "\r\n";
    static const char head[] = "method= target= status=200 reason=OK version=1.1\n"
                               "flags=CHUNKED|KEEP_ALIVE cl=0 host=-1 request_id=-1\n"
                               "Transfer-Encoding: [chunked]\n"
                               "Trailer: [X-Sum]\n";

    one_message_every_way(*state, HTTP_RESPONSE, RAW(data), head, RAW("abc0123456789abcdef"), true);
}

/* A response to HEAD: its head may say Content-Length or chunked, and
 * there is still no body; what follows belongs to the next response. */
static void test_response_skip_body(void **state)
{
    struct fixture *fx = *state;
    static const char cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    static const char te[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char eof[] = "HTTP/1.1 200 OK\r\n\r\n";
    static const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
                              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct opts o = {.type = HTTP_RESPONSE, .skip_body = true};
    struct h1_parser p;
    struct h1_out out;
    size_t used = 0;

    feed_every_way(fx, &o, RAW(cl), false);
    assert_int_equal(fx->ref.n_msg, 1);
    assert_string_equal(fx->ref.msg[0].events, "HD");
    assert_msg(&fx->ref, 0,
               "method= target= status=200 reason=OK version=1.1\n"
               "flags=CL|KEEP_ALIVE cl=10 host=-1 request_id=-1\n"
               "Content-Length: [10]\n",
               "", 0);
    assert_int_equal(fx->ref.msg[0].body_bytes, 0);
    assert_false(fx->ref.needs_eof);

    feed_every_way(fx, &o, RAW(te), false);
    assert_string_equal(fx->ref.msg[0].events, "HD");
    assert_true(fx->ref.msg[0].done);
    feed_every_way(fx, &o, RAW(eof), false);
    assert_string_equal(fx->ref.msg[0].events, "HD");
    assert_true(fx->ref.msg[0].done);

    /* Step by step: HEAD takes the head only, then DONE takes nothing. */
    memset(&out, 0, sizeof(out));
    h1_parser_init(&p, HTTP_RESPONSE);
    p.skip_body = true;
    p.out = &out;
    assert_int_equal(h1_feed(&p, two, sizeof(two) - 1, &used), H1_EV_HEAD);
    assert_int_equal(used, sizeof(cl) - 1);
    assert_true(p.head.flags & H1_F_CONTENT_LENGTH);
    assert_int_equal(p.head.content_length, 10);
    assert_int_equal(h1_feed(&p, two + used, sizeof(two) - 1 - used, &used), H1_EV_DONE);
    assert_int_equal(used, 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(p.body_bytes, 0);
    assert_false(h1_needs_eof(&p));
}

/* A HEAD request answered 103 then 200: conn.c calls h1_parser_next after
 * the 1xx and feeds on; the final response has no body either. */
static void test_response_skip_body_after_interim(void **state)
{
    struct fixture *fx = *state;
    static const char data[] = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct opts o = {.type = HTTP_RESPONSE, .skip_body = true};

    /* skip_body survives h1_parser_next: it belongs to the exchange (a
     * response to HEAD), and a 1xx may come before the final response. */

    feed_every_way(fx, &o, RAW(data), false);
    assert_int_equal(fx->ref.n_msg, 2);
    assert_msg(&fx->ref, 1,
               "method= target= status=200 reason=OK version=1.1\n"
               "flags=CL|KEEP_ALIVE cl=5 host=-1 request_id=-1\n"
               "Content-Length: [5]\n",
               "", 0);
    assert_int_equal(fx->ref.msg[1].body_bytes, 0);
}

static void test_response_interim(void **state)
{
    struct fixture *fx = *state;
    static const char data[] = "HTTP/1.1 100 Continue\r\n\r\n"
                               "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

    for (size_t i = 0; i < sizeof(out_modes) / sizeof(out_modes[0]); i++) {
        struct opts o = out_modes[i];
        o.type = HTTP_RESPONSE;
        if (o.chunked_out)
            continue; /* conn.c never re-frames a 1xx: it has no body */
        feed_every_way(fx, &o, RAW(data), true);
        assert_int_equal(fx->ref.n_msg, 3);
        assert_msg(&fx->ref, 0,
                   "method= target= status=100 reason=Continue version=1.1\n"
                   "flags=KEEP_ALIVE cl=0 host=-1 request_id=-1\n",
                   "", 0);
        assert_msg(&fx->ref, 1,
                   "method= target= status=103 reason=Early Hints version=1.1\n"
                   "flags=KEEP_ALIVE cl=0 host=-1 request_id=-1\n"
                   "Link: [</s.css>; rel=preload]\n",
                   "", 0);
        assert_msg(&fx->ref, 2,
                   "method= target= status=200 reason=OK version=1.1\n"
                   "flags=CL|KEEP_ALIVE cl=2 host=-1 request_id=-1\n"
                   "Content-Length: [2]\n",
                   o.no_out ? "" : "hi", o.no_out ? 0 : 2);
    }
}

/* 204 and 304 end at their head; the next response follows at once. */
static void test_response_no_body_status(void **state)
{
    struct fixture *fx = *state;
    static const char data[] = "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
                               "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct opts o = {.type = HTTP_RESPONSE};

    feed_every_way(fx, &o, RAW(data), true);
    assert_int_equal(fx->ref.n_msg, 3);
    assert_false(fx->ref.needs_eof);
    assert_msg(&fx->ref, 0,
               "method= target= status=204 reason=No Content version=1.1\n"
               "flags=KEEP_ALIVE cl=0 host=-1 request_id=-1\n"
               "X-A: [1]\n",
               "", 0);
    assert_msg(&fx->ref, 1,
               "method= target= status=304 reason=Not Modified version=1.1\n"
               "flags=KEEP_ALIVE cl=0 host=-1 request_id=-1\n"
               "ETag: [\"x\"]\n",
               "", 0);
    assert_msg(&fx->ref, 2,
               "method= target= status=200 reason=OK version=1.1\n"
               "flags=CL|KEEP_ALIVE cl=2 host=-1 request_id=-1\n"
               "Content-Length: [2]\n",
               RAW("ok"));
}

/* RFC 9112 6.3: a 1xx, 204 or 304 response always ends at the empty line
 * after its head, whatever its header fields say; a 304 may carry the
 * Content-Length of the representation it stands for (RFC 9110 8.6). */
static void test_response_no_body_status_with_framing(void **state)
{
    struct fixture *fx = *state;
    static const char data[] = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
                               "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
                               "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct opts o = {.type = HTTP_RESPONSE};

    /* 204 and 304 have no body even with framing headers; llhttp alone
     * would read one and take the next response's bytes as its body. */

    feed_every_way(fx, &o, RAW(data), false);
    assert_int_equal(fx->ref.n_msg, 4);
    for (unsigned i = 0; i < 3; i++) {
        assert_true(fx->ref.msg[i].done);
        assert_int_equal(fx->ref.msg[i].body_len, 0);
        assert_int_equal(fx->ref.msg[i].body_bytes, 0);
    }
    assert_msg(&fx->ref, 3,
               "method= target= status=200 reason=OK version=1.1\n"
               "flags=CL|KEEP_ALIVE cl=2 host=-1 request_id=-1\n"
               "Content-Length: [2]\n",
               RAW("ok"));
}

static const char close_delimited[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                                      "all of this, until the close";
static const char close_delimited_head[] = "method= target= status=200 reason=OK version=1.1\n"
                                           "flags= cl=0 host=-1 request_id=-1\n"
                                           "Content-Type: [text/plain]\n";

/* A body without Content-Length or chunked: everything until the peer
 * closes is body, handed out as it comes. */
static void test_response_close_delimited(void **state)
{
    struct fixture *fx = *state;
    static const char http10[] = "HTTP/1.0 200 OK\r\n\r\nabc";
    const size_t head_len = sizeof("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n") - 1;

    for (size_t i = 0; i < sizeof(out_modes) / sizeof(out_modes[0]); i++) {
        struct opts o = out_modes[i];
        const char *body = close_delimited + head_len;
        size_t body_len = sizeof(close_delimited) - 1 - head_len;
        o.type = HTTP_RESPONSE;

        feed_every_way(fx, &o, RAW(close_delimited), false);
        assert_int_equal(fx->ref.n_msg, 1);
        assert_true(fx->ref.needs_eof);
        assert_false(fx->ref.msg[0].done);
        assert_string_equal(fx->ref.msg[0].head, close_delimited_head);
        assert_int_equal(fx->ref.msg[0].body_bytes, body_len);
        if (o.no_out)
            body_len = 0;
        assert_int_equal(fx->ref.msg[0].body_len, body_len);
        assert_memory_equal(fx->ref.msg[0].body, body, body_len);

        feed_every_way(fx, &o, RAW(http10), false);
        assert_true(fx->ref.needs_eof);
        assert_int_equal(fx->ref.msg[0].body_bytes, 3);
    }
}

/* The peer's close ends such a body: h1_finish says H1_EV_DONE and, when
 * the body leaves chunked, adds the last chunk. */
static void test_response_close_delimited_finish(void **state)
{
    struct fixture *fx = *state;
    const size_t head_len = sizeof("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n") - 1;

    for (size_t i = 0; i < sizeof(out_modes) / sizeof(out_modes[0]); i++) {
        struct opts o = out_modes[i];
        o.type = HTTP_RESPONSE;
        o.finish = true;
        feed_every_way(fx, &o, RAW(close_delimited), false);
        assert_int_equal(fx->ref.finish, H1_EV_DONE);
        assert_true(fx->ref.needs_eof);
        /* With chunked out, h1_finish also appended the last chunk:
         * msg_body checked the framing ends in 0\r\n\r\n. */
        assert_msg(&fx->ref, 0, close_delimited_head, o.no_out ? "" : close_delimited + head_len,
                   o.no_out ? 0 : sizeof(close_delimited) - 1 - head_len);
    }
}

static void test_response_truncated(void **state)
{
    struct fixture *fx = *state;
    static const char *const cases[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 2",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct opts o = {.type = HTTP_RESPONSE, .finish = true};
        feed_every_way(fx, &o, cases[i], strlen(cases[i]), false);
        if (fx->ref.msg[0].events[0] == 'H')
            assert_false(fx->ref.needs_eof); /* only meaningful after a head */
        assert_int_equal(fx->ref.finish, H1_EV_ERROR);
        assert_non_null(fx->ref.why);
        assert_false(fx->ref.msg[0].done);
    }
}

static const struct reject response_rejects[] = {
    {"CL and TE",
     RAW("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), -1,
     NULL},
    {"two CL", RAW("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), -1,
     NULL},
    {"two TE",
     RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n0\r\n\r\n"),
     -1, NULL},
    {"TE gzip", RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"), -1, NULL},
    {"TE gzip, chunked",
     RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), -1, NULL},
    {"HTTP/1.0 with TE", RAW("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), -1,
     NULL},
    {"NUL in value", RAW("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"0x01 in value", RAW("HTTP/1.1 200 OK\r\nX-A: \x01\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"0x7f in value", RAW("HTTP/1.1 200 OK\r\nX-A: \x7f\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"bare CR in value", RAW("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"), -1,
     NULL},
    {"obs-fold", RAW("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"space before colon", RAW("HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0\r\n\r\n"), -1,
     NULL},
    {"status 600", RAW("HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"status 99", RAW("HTTP/1.1 99 Odd\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"HTTP/1.2", RAW("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"HTTP/2.0", RAW("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), -1, NULL},
    {"not HTTP", RAW("ICY 200 OK\r\n\r\n"), -1, NULL},
    {"bad chunk size", RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), -1,
     NULL},
};

static void test_response_rejections(void **state)
{
    for (size_t i = 0; i < sizeof(response_rejects) / sizeof(response_rejects[0]); i++)
        refused_every_way(*state, &response_rejects[i], HTTP_RESPONSE);
}

/* --- writing heads --------------------------------------------------------------------- */

/* Parses one head from data fed whole and checks it; the parser keeps the
 * spans. */
static void parse_head(struct h1_parser *p, llhttp_type_t type, const char *data, size_t n)
{
    const char *why = NULL;
    size_t used = 0;

    h1_parser_init(p, type);
    assert_int_equal(h1_feed(p, data, n, &used), H1_EV_HEAD);
    if (type == HTTP_REQUEST)
        assert_int_equal(h1_check_request(&p->head, &why), 0);
    else
        assert_int_equal(h1_check_response(&p->head, &why), 0);
}

static void assert_bytes(const char *got, size_t got_len, const char *want)
{
    if (got_len != strlen(want) || memcmp(got, want, got_len) != 0) {
        print_message("got:\n%.*s\nwant:\n%s\n", (int)got_len, got, want);
        fail();
    }
}

/* Every cap short of the whole head gives 0 and writes nothing past cap. */
static void assert_caps(const struct h1_head *h, const struct h1_forward *f,
                        const struct h1_reply *r, size_t full)
{
    char buf[2048];

    assert_true(full + 16 <= sizeof(buf));
    for (size_t cap = 0; cap <= full; cap++) {
        size_t n;
        memset(buf, '#', sizeof(buf));
        if (f != NULL)
            n = h1_write_request_head(buf, cap, h, f);
        else
            n = h1_write_response_head(buf, cap, h, r);
        assert_int_equal(n, cap == full ? full : 0);
        for (size_t i = cap; i < sizeof(buf); i++)
            assert_int_equal(buf[i], '#');
    }
}

static const char sample_request[] = "POST /submit?x=1 HTTP/1.1\r\n"
                                     "Host: api.example\r\n"
                                     "Connection: keep-alive, X-Hop\r\n"
                                     "X-Hop: secret\r\n"
                                     "Keep-Alive: timeout=5\r\n"
                                     "TE: trailers\r\n"
                                     "Trailer: X-Checksum\r\n"
                                     "Transfer-Encoding: chunked\r\n"
                                     "Upgrade: h2c\r\n"
                                     "Proxy-Connection: keep-alive\r\n"
                                     "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
                                     "Expect: 100-continue\r\n"
                                     "X-Forwarded-For: 198.51.100.1\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "X-Forwarded-For:  \r\n"
                                     "x-forwarded-for: 198.51.100.2, 198.51.100.3 \r\n"
                                     "X-Forwarded-Proto: ftp\r\n"
                                     "X-Request-Id: from-client\r\n"
                                     "Accept: */*\r\n"
                                     "\r\n"
                                     "5\r\nhello\r\n0\r\n\r\n";

static const char sample_request_out[] =
    "POST /submit?x=1 HTTP/1.1\r\n"
    "Host: api.example\r\n"
    "Content-Type: text/plain\r\n"
    "Accept: */*\r\n"
    "x-forwarded-for: 198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.7\r\n"
    "x-forwarded-proto: https\r\n"
    "x-request-id: rid-0001\r\n"
    "transfer-encoding: chunked\r\n"
    "\r\n";

static void test_write_request_head_sample(void **state)
{
    struct h1_parser p, q;
    struct h1_forward f = {.client_ip = "192.0.2.7",
                           .proto = "https",
                           .request_id = "rid-0001",
                           .host = "unused.example"};
    char buf[2048];
    size_t n;

    parse_head(&p, HTTP_REQUEST, RAW(sample_request));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n, sample_request_out);
    assert_caps(&p.head, &f, NULL, n);

    /* What is written parses back, strictly, to the same request. */
    parse_head(&q, HTTP_REQUEST, buf, n);
    assert_true(h1_span_eq(q.head.method, "post"));
    assert_true(q.head.flags & H1_F_CHUNKED);
    assert_int_equal(q.head.n_hdr, 7);
}

/* traceparent is found by the check (several: -2) and never forwarded;
 * tracestate only with keep_tracestate; both pass in a response. */
static void test_trace_headers(void **state)
{
    struct h1_parser p;
    struct h1_forward f = {.client_ip = "c", .proto = "http", .request_id = "r"};
    const char *why = NULL;
    char buf[1024];
    size_t n;

    static const char one[] = "GET / HTTP/1.1\r\n"
                              "host: h\r\n"
                              "TraceParent:  00-x  \r\n"
                              "tracestate: a=1\r\n"
                              "TRACESTATE: b=2\r\n"
                              "\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(one));
    assert_int_equal(p.head.traceparent, 1);
    assert_true(h1_span_eq(p.head.hdr[1].value, "00-x"));
    assert_int_equal(h1_check_request(&p.head, &why), 0); /* twice: same answer */
    assert_int_equal(p.head.traceparent, 1);
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET / HTTP/1.1\r\n"
                 "host: h\r\n"
                 "x-forwarded-for: c\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "\r\n");
    f.keep_tracestate = true;
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET / HTTP/1.1\r\n"
                 "host: h\r\n"
                 "tracestate: a=1\r\n"
                 "TRACESTATE: b=2\r\n"
                 "x-forwarded-for: c\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "\r\n");

    static const char none[] = "GET / HTTP/1.1\r\nhost: h\r\n\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(none));
    assert_int_equal(p.head.traceparent, -1);

    static const char two[] = "GET / HTTP/1.1\r\n"
                              "traceparent: a\r\n"
                              "host: h\r\n"
                              "traceparent: b\r\n"
                              "\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(two));
    assert_int_equal(p.head.traceparent, -2);
    assert_int_equal(h1_check_request(&p.head, &why), 0);
    assert_int_equal(p.head.traceparent, -2);
    f.egress = true; /* a forward proxy's request drops it too */
    f.host = "h";
    f.target = (struct h1_span){"/", 1};
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n, "GET / HTTP/1.1\r\nhost: h\r\nx-request-id: r\r\n\r\n");

    /* A function's response: its headers are its own. */
    static const char resp[] = "HTTP/1.1 200 OK\r\n"
                               "traceparent: 00-y\r\n"
                               "tracestate: c=3\r\n"
                               "content-length: 0\r\n"
                               "\r\n";
    parse_head(&p, HTTP_RESPONSE, RAW(resp));
    assert_int_equal(p.head.traceparent, -1);
    struct h1_reply r = {.length = true};
    n = h1_write_response_head(buf, sizeof(buf), &p.head, &r);
    assert_bytes(buf, n,
                 "HTTP/1.1 200 OK\r\n"
                 "traceparent: 00-y\r\n"
                 "tracestate: c=3\r\n"
                 "content-length: 0\r\n"
                 "\r\n");
}

static void test_write_request_head_framing(void **state)
{
    struct h1_parser p;
    struct h1_forward f = {.client_ip = "10.1.1.1", .proto = "http", .request_id = "r"};
    char buf[1024];
    size_t n;

    /* Content-Length rewritten from the parsed value; Connection: host
     * keeps Host, the other names listed go. */
    static const char cl[] = "PUT /x HTTP/1.1\r\n"
                             "host: h\r\n"
                             "content-length: 0012\r\n"
                             "Connection: Host, X-Drop\r\n"
                             "X-Drop: 1\r\n"
                             "X-Keep: 2\r\n"
                             "x-drop: 3\r\n"
                             "\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(cl));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "PUT /x HTTP/1.1\r\n"
                 "host: h\r\n"
                 "X-Keep: 2\r\n"
                 "x-forwarded-for: 10.1.1.1\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "content-length: 12\r\n"
                 "\r\n");

    /* Content-Length: 0 is still framing to forward. */
    static const char cl0[] = "POST /z HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(cl0));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "POST /z HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "x-forwarded-for: 10.1.1.1\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "content-length: 0\r\n"
                 "\r\n");

    /* HTTP/1.0 without Host leaves as HTTP/1.1 with the fallback host. */
    static const char old[] = "GET /old HTTP/1.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n";
    f.host = "fn.local";
    parse_head(&p, HTTP_REQUEST, RAW(old));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET /old HTTP/1.1\r\n"
                 "Accept: */*\r\n"
                 "host: fn.local\r\n"
                 "x-forwarded-for: 10.1.1.1\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "\r\n");
    assert_caps(&p.head, &f, NULL, n);

    /* With a Host of its own, the fallback is not added. */
    static const char old_host[] = "GET /old HTTP/1.0\r\nHost: mine\r\n\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(old_host));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET /old HTTP/1.1\r\n"
                 "Host: mine\r\n"
                 "x-forwarded-for: 10.1.1.1\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: r\r\n"
                 "\r\n");
}

static void test_write_request_head_forwarding(void **state)
{
    struct h1_parser p;
    struct h1_forward f = {.client_ip = "2001:db8::1", .proto = "https", .request_id = "gen-7"};
    char buf[1024];
    size_t n;

    /* No x-forwarded-for yet: the client alone. The client's x-request-id
     * and x-forwarded-proto are replaced, not repeated. */
    static const char plain[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n"
                                "x-request-id: client\r\nX-Real: 1\r\n\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(plain));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "X-Real: 1\r\n"
                 "x-forwarded-for: 2001:db8::1\r\n"
                 "x-forwarded-proto: https\r\n"
                 "x-request-id: gen-7\r\n"
                 "\r\n");

    /* Several x-forwarded-for, in order, empty ones skipped. */
    static const char xff[] = "GET / HTTP/1.1\r\n"
                              "X-Forwarded-For:\r\n"
                              "X-FORWARDED-FOR: a\r\n"
                              "Host: h\r\n"
                              "x-forwarded-for: b, c\r\n"
                              "X-Forwarded-For: \t\r\n"
                              "X-Forwarded-For: d\r\n"
                              "\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(xff));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "x-forwarded-for: a, b, c, d, 2001:db8::1\r\n"
                 "x-forwarded-proto: https\r\n"
                 "x-request-id: gen-7\r\n"
                 "\r\n");
    assert_caps(&p.head, &f, NULL, n);

    /* Hop-by-hop names matched without regard to case, in Connection and
     * in the headers it lists. */
    static const char hop[] = "GET / HTTP/1.1\r\n"
                              "HOST: h\r\n"
                              "CONNECTION: x-a\r\n"
                              "connection: X-B\r\n"
                              "X-A: 1\r\n"
                              "x-b: 2\r\n"
                              "KEEP-ALIVE: 1\r\n"
                              "te: trailers\r\n"
                              "TRAILER: t\r\n"
                              "proxy-connection: close\r\n"
                              "PROXY-AUTHORIZATION: x\r\n"
                              "EXPECT: 100-continue\r\n"
                              "X-Stay: 3\r\n"
                              "\r\n";
    parse_head(&p, HTTP_REQUEST, RAW(hop));
    n = h1_write_request_head(buf, sizeof(buf), &p.head, &f);
    assert_bytes(buf, n,
                 "GET / HTTP/1.1\r\n"
                 "HOST: h\r\n"
                 "X-Stay: 3\r\n"
                 "x-forwarded-for: 2001:db8::1\r\n"
                 "x-forwarded-proto: https\r\n"
                 "x-request-id: gen-7\r\n"
                 "\r\n");
}

/* RFC 9110 7.6.1: a proxy removes every field Connection names. */
static void test_check_request_too_many_connection_names(void **state)
{
    static char data[2048];
    struct h1_parser p;
    const char *why = NULL;
    size_t n = 0, used = 0;
    const unsigned names = H1_MAX_CONN_TOKENS + 4;

    /* More Connection names than fnproxy tracks: refused, since each one
     * names a header that must not be forwarded. */

    n += (size_t)snprintf(data + n, sizeof(data) - n, "GET / HTTP/1.1\r\nHost: h\r\nConnection: ");
    for (unsigned i = 0; i < names; i++)
        n += (size_t)snprintf(data + n, sizeof(data) - n, "%sx-%u", i ? ", " : "", i);
    n += (size_t)snprintf(data + n, sizeof(data) - n, "\r\n");
    for (unsigned i = 0; i < names; i++)
        n += (size_t)snprintf(data + n, sizeof(data) - n, "X-%u: hop\r\n", i);
    n += (size_t)snprintf(data + n, sizeof(data) - n, "\r\n");

    h1_parser_init(&p, HTTP_REQUEST);
    assert_int_equal(h1_feed(&p, data, n, &used), H1_EV_HEAD);
    assert_int_equal(h1_check_request(&p.head, &why), 400);
    assert_string_equal(why, "too many names in connection");
}

static const char sample_response[] = "HTTP/1.1 201 Created\r\n"
                                      "Content-Type: application/json\r\n"
                                      "Connection: keep-alive, X-Internal\r\n"
                                      "X-Internal: 1\r\n"
                                      "Keep-Alive: timeout=5\r\n"
                                      "Content-Length: 2\r\n"
                                      "Proxy-Authenticate: Basic\r\n"
                                      "Proxy-Connection: keep-alive\r\n"
                                      "Trailer: X-T\r\n"
                                      "Upgrade: h2c\r\n"
                                      "X-Request-Id: fn-side\r\n"
                                      "X-Forwarded-For: 1.2.3.4\r\n"
                                      "Set-Cookie: a=1\r\n"
                                      "X-Forwarded-Proto: https\r\n"
                                      "Expect: kept\r\n"
                                      "Set-Cookie: b=2\r\n"
                                      "\r\n"
                                      "{}";

#define SAMPLE_RESPONSE_KEPT                                                                       \
    "Content-Type: application/json\r\n"                                                           \
    "X-Forwarded-For: 1.2.3.4\r\n"                                                                 \
    "Set-Cookie: a=1\r\n"                                                                          \
    "X-Forwarded-Proto: https\r\n"                                                                 \
    "Expect: kept\r\n"                                                                             \
    "Set-Cookie: b=2\r\n"

static void test_write_response_head_sample(void **state)
{
    struct h1_parser p;
    struct h1_reply r = {.request_id = "rid-9", .length = true};
    char buf[2048];
    size_t n;

    parse_head(&p, HTTP_RESPONSE, RAW(sample_response));
    n = h1_write_response_head(buf, sizeof(buf), &p.head, &r);
    assert_bytes(buf, n,
                 "HTTP/1.1 201 Created\r\n" SAMPLE_RESPONSE_KEPT "x-request-id: rid-9\r\n"
                 "content-length: 2\r\n"
                 "\r\n");
    assert_caps(&p.head, NULL, &r, n);
}

static void test_write_response_head_reply(void **state)
{
    struct h1_parser p;
    char buf[2048];
    size_t n;
    struct {
        struct h1_reply r;
        const char *tail;
    } cases[] = {
        {{.request_id = "a", .chunked = true}, "x-request-id: a\r\ntransfer-encoding: chunked\r\n"},
        {{.request_id = "a", .length = true, .chunked = true},
         "x-request-id: a\r\ntransfer-encoding: chunked\r\n"},
        {{.length = true, .close = true}, "content-length: 2\r\nconnection: close\r\n"},
        {{.length = true, .keep_alive = true}, "content-length: 2\r\nconnection: keep-alive\r\n"},
        {{.close = true, .keep_alive = true}, "connection: close\r\n"},
        {{.request_id = NULL}, ""},
    };

    parse_head(&p, HTTP_RESPONSE, RAW(sample_response));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[1024];
        snprintf(want, sizeof(want), "HTTP/1.1 201 Created\r\n" SAMPLE_RESPONSE_KEPT "%s\r\n",
                 cases[i].tail);
        n = h1_write_response_head(buf, sizeof(buf), &p.head, &cases[i].r);
        assert_bytes(buf, n, want);
        assert_caps(&p.head, NULL, &cases[i].r, n);
    }

    /* No reason phrase: the standard one is written. */
    static const char bare[] = "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n";
    struct h1_reply len = {.length = true};
    parse_head(&p, HTTP_RESPONSE, RAW(bare));
    n = h1_write_response_head(buf, sizeof(buf), &p.head, &len);
    assert_bytes(buf, n, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    static const char odd[] = "HTTP/1.0 299 \r\n\r\n";
    struct h1_reply none = {0};
    parse_head(&p, HTTP_RESPONSE, RAW(odd));
    n = h1_write_response_head(buf, sizeof(buf), &p.head, &none);
    assert_bytes(buf, n, "HTTP/1.1 299 Unknown\r\n\r\n");

    /* A chunked response re-framed with a length it does not have is the
     * caller's choice; the head says what the reply says. */
    static const char te[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
    struct h1_reply ch = {.chunked = true, .keep_alive = true};
    parse_head(&p, HTTP_RESPONSE, RAW(te));
    n = h1_write_response_head(buf, sizeof(buf), &p.head, &ch);
    assert_bytes(buf, n,
                 "HTTP/1.1 200 OK\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n"
                 "connection: keep-alive\r\n\r\n");
}

/* --- h1_out ------------------------------------------------------------------------ */

static void assert_iov(const uv_buf_t *b, const char *want, size_t len)
{
    assert_int_equal(b->len, len);
    assert_memory_equal(b->base, want, len);
}

static void test_out_plain(void **state)
{
    static const char data[2 * H1_OUT_IOV];
    struct h1_out out;

    memset(&out, 0, sizeof(out));
    assert_true(h1_out_add(&out, data, 0));
    assert_int_equal(out.n, 0);
    for (unsigned i = 0; i < H1_OUT_IOV; i++)
        assert_true(h1_out_add(&out, data + i, i + 1));
    assert_int_equal(out.n, H1_OUT_IOV);
    for (unsigned i = 0; i < H1_OUT_IOV; i++) {
        assert_ptr_equal(out.iov[i].base, data + i);
        assert_int_equal(out.iov[i].len, i + 1);
    }
    assert_false(h1_out_add(&out, data, 1));
    assert_true(h1_out_add(&out, data, 0)); /* nothing to add fits always */
    assert_false(h1_out_raw(&out, data, 1));
    assert_false(h1_out_end_chunked(&out));
    assert_int_equal(out.n, H1_OUT_IOV);

    h1_out_reset(&out);
    assert_int_equal(out.n, 0);
    assert_false(out.chunked);
    assert_true(h1_out_add(&out, "x", 1));
    assert_int_equal(out.n, 1);
}

static void test_out_chunked(void **state)
{
    static char big[0x12345];
    struct h1_out out;
    unsigned adds = 0;

    memset(&out, 0, sizeof(out));
    out.chunked = true;
    assert_true(h1_out_add(&out, "", 0));
    assert_int_equal(out.n, 0);

    assert_true(h1_out_add(&out, "a", 1));
    assert_true(h1_out_add(&out, "0123456789", 10));
    assert_true(h1_out_add(&out, big, 255));
    assert_true(h1_out_add(&out, big, 256));
    assert_true(h1_out_add(&out, big, sizeof(big)));
    assert_int_equal(out.n, 15);
    assert_iov(&out.iov[0], RAW("1\r\n"));
    assert_iov(&out.iov[1], RAW("a"));
    assert_iov(&out.iov[2], RAW("\r\n"));
    assert_iov(&out.iov[3], RAW("a\r\n"));
    assert_iov(&out.iov[4], RAW("0123456789"));
    assert_iov(&out.iov[6], RAW("ff\r\n"));
    assert_iov(&out.iov[9], RAW("100\r\n"));
    assert_iov(&out.iov[12], RAW("12345\r\n"));
    assert_ptr_equal(out.iov[13].base, big);
    assert_int_equal(out.iov[13].len, sizeof(big));
    assert_iov(&out.iov[14], RAW("\r\n"));

    /* Three iovecs a span: 16 fit in 48, and each keeps its own size line. */
    h1_out_reset(&out);
    assert_true(out.chunked);
    while (h1_out_add(&out, big, adds + 1))
        adds++;
    assert_int_equal(adds, H1_OUT_IOV / 3);
    assert_int_equal(out.n, H1_OUT_IOV);
    for (unsigned i = 0; i < adds; i++) {
        char line[8];
        int len = snprintf(line, sizeof(line), "%x\r\n", i + 1);
        assert_iov(&out.iov[3 * i], line, (size_t)len);
        assert_int_equal(out.iov[3 * i + 1].len, i + 1);
    }
    assert_false(h1_out_end_chunked(&out));

    /* A span needs three free iovecs: two left is not enough. */
    h1_out_reset(&out);
    for (unsigned i = 0; i < H1_OUT_IOV - 2; i++)
        assert_true(h1_out_raw(&out, "h", 1));
    assert_false(h1_out_add(&out, "x", 1));
    assert_int_equal(out.n, H1_OUT_IOV - 2);
    assert_true(h1_out_raw(&out, "h", 1));
    assert_true(h1_out_end_chunked(&out));
    assert_int_equal(out.n, H1_OUT_IOV);

    h1_out_reset(&out);
    for (unsigned i = 0; i < H1_OUT_IOV - 3; i++)
        assert_true(h1_out_raw(&out, "h", 1));
    assert_true(h1_out_add(&out, "x", 1));
    assert_int_equal(out.n, H1_OUT_IOV);
}

static void test_out_raw_and_end(void **state)
{
    static const char head[] = "HTTP/1.1 200 OK\r\n\r\n";
    struct h1_out out;
    char wire[256];
    size_t n = 0, len = 0;
    char body[64];

    memset(&out, 0, sizeof(out));
    out.chunked = true;
    assert_true(h1_out_raw(&out, head, sizeof(head) - 1));
    assert_true(h1_out_add(&out, "hello", 5));
    assert_true(h1_out_add(&out, " world", 6));
    assert_true(h1_out_end_chunked(&out));
    assert_int_equal(out.n, 8);
    assert_ptr_equal(out.iov[0].base, head); /* raw bytes are not copied or framed */
    assert_iov(&out.iov[7], RAW("0\r\n\r\n"));
    for (unsigned i = 0; i < out.n; i++) {
        memcpy(wire + n, out.iov[i].base, out.iov[i].len);
        n += out.iov[i].len;
    }
    assert_bytes(wire, n, "HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_true(dechunk(wire + sizeof(head) - 1, n - (sizeof(head) - 1), true, body, &len));
    assert_int_equal(len, 11);
    assert_memory_equal(body, "hello world", 11);

    /* The last-chunk marker takes the last iovec, and no more. */
    h1_out_reset(&out);
    for (unsigned i = 0; i < H1_OUT_IOV - 1; i++)
        assert_true(h1_out_raw(&out, "h", 1));
    assert_true(h1_out_end_chunked(&out));
    assert_false(h1_out_end_chunked(&out));
    assert_false(h1_out_raw(&out, "h", 1));
    assert_int_equal(out.n, H1_OUT_IOV);
}

static void test_hex(void **state)
{
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {0xf, "f"},
        {0x10, "10"},
        {0xabcdef, "abcdef"},
        {0x1000000000000000ull, "1000000000000000"},
        {UINT64_MAX, "ffffffffffffffff"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[20];
        size_t n;
        memset(out, '#', sizeof(out));
        n = h1_hex(out, cases[i].v);
        assert_bytes(out, n, cases[i].want);
        for (size_t j = n; j < sizeof(out); j++)
            assert_int_equal(out[j], '#');
    }
}

/* Lengths are written from the parsed value, all 20 digits of the largest. */
static void test_write_head_lengths(void **state)
{
    struct h1_head h;
    struct h1_forward f = {.client_ip = "c", .proto = "http", .request_id = "r"};
    struct h1_reply r = {.length = true};
    char buf[512];
    size_t n;

    head_init(&h, "PUT", "/", 0, 1);
    h.flags = H1_F_CONTENT_LENGTH;
    h.content_length = UINT64_MAX;
    n = h1_write_request_head(buf, sizeof(buf), &h, &f);
    assert_bytes(buf, n,
                 "PUT / HTTP/1.1\r\nx-forwarded-for: c\r\nx-forwarded-proto: http\r\n"
                 "x-request-id: r\r\ncontent-length: 18446744073709551615\r\n\r\n");

    head_init(&h, NULL, NULL, 200, 1);
    h.flags = H1_F_CONTENT_LENGTH;
    h.content_length = 1000000007;
    n = h1_write_response_head(buf, sizeof(buf), &h, &r);
    assert_bytes(buf, n, "HTTP/1.1 200 OK\r\ncontent-length: 1000000007\r\n\r\n");
    /* 1xx and 204 never carry a framing header, whatever the function sent. */
    for (int st = 100; st <= 204; st += 104) {
        struct h1_reply rc = {.chunked = true};
        h.status = st;
        n = h1_write_response_head(buf, sizeof(buf), &h, &r);
        assert_bytes(buf, n, st == 100 ? "HTTP/1.1 100 Continue\r\n\r\n"
                                       : "HTTP/1.1 204 No Content\r\n\r\n");
        n = h1_write_response_head(buf, sizeof(buf), &h, &rc);
        assert_bytes(buf, n, st == 100 ? "HTTP/1.1 100 Continue\r\n\r\n"
                                       : "HTTP/1.1 204 No Content\r\n\r\n");
    }
    h.status = 503;
    h.content_length = 9;
    n = h1_write_response_head(buf, sizeof(buf), &h, &r);
    assert_bytes(buf, n, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\n");
}

static void test_span_eq_and_reason(void **state)
{
    struct h1_span s = {"Content-LENGTH: 5", 14};

    assert_true(h1_span_eq(s, "content-length"));
    assert_false(h1_span_eq(s, "content-lengt"));
    assert_false(h1_span_eq(s, "content-length:"));
    assert_false(h1_span_eq(s, "content-lengti"));
    assert_true(h1_span_eq((struct h1_span){"", 0}, ""));
    assert_string_equal(h1_reason(100), "Continue");
    assert_string_equal(h1_reason(200), "OK");
    assert_string_equal(h1_reason(404), "Not Found");
    assert_string_equal(h1_reason(417), "Expectation Failed");
    assert_string_equal(h1_reason(431), "Request Header Fields Too Large");
    assert_string_equal(h1_reason(502), "Bad Gateway");
    assert_string_equal(h1_reason(299), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_get),
        cmocka_unit_test(test_request_content_length),
        cmocka_unit_test(test_request_chunked),
        cmocka_unit_test(test_request_many_chunks),
        cmocka_unit_test(test_request_large_body),
        cmocka_unit_test(test_request_http10),
        cmocka_unit_test(test_request_accepted_edges),
        cmocka_unit_test(test_pipelined_stepwise),
        cmocka_unit_test(test_pipelined_every_split),
        cmocka_unit_test(test_request_rejections),
        cmocka_unit_test(test_request_header_count),
        cmocka_unit_test(test_check_request_built),
        cmocka_unit_test(test_check_request_host),
        cmocka_unit_test(test_check_request_target),
        cmocka_unit_test(test_path_check),
        cmocka_unit_test(test_check_response_built),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_skip_body),
        cmocka_unit_test(test_response_interim),
        cmocka_unit_test(test_response_skip_body_after_interim),
        cmocka_unit_test(test_response_no_body_status),
        cmocka_unit_test(test_response_no_body_status_with_framing),
        cmocka_unit_test(test_response_close_delimited),
        cmocka_unit_test(test_response_close_delimited_finish),
        cmocka_unit_test(test_response_truncated),
        cmocka_unit_test(test_response_rejections),
        cmocka_unit_test(test_write_request_head_sample),
        cmocka_unit_test(test_write_request_head_framing),
        cmocka_unit_test(test_trace_headers),
        cmocka_unit_test(test_write_request_head_forwarding),
        cmocka_unit_test(test_check_request_too_many_connection_names),
        cmocka_unit_test(test_write_response_head_sample),
        cmocka_unit_test(test_write_response_head_reply),
        cmocka_unit_test(test_out_plain),
        cmocka_unit_test(test_out_chunked),
        cmocka_unit_test(test_out_raw_and_end),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_write_head_lengths),
        cmocka_unit_test(test_span_eq_and_reason),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
