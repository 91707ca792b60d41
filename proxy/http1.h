/*
 * http1.h - HTTP/1.1 glue over llhttp: collects a message head as spans into
 * the caller's buffer, checks it strictly (everything request smuggling
 * relies on is refused here, also where llhttp is lenient), writes the head
 * fnproxy forwards, and turns body spans into iovecs with fresh framing.
 *
 * Nothing is copied: header spans and body iovecs point into the buffer the
 * caller fed, which must stay put until they are used.
 */
#ifndef FNPROXY_HTTP1_H
#define FNPROXY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include <llhttp.h>
#include <uv.h>

#define H1_MAX_HEADERS 100    /* more is answered 431 */
#define H1_MAX_CONN_TOKENS 16 /* names listed in Connection */
#define H1_OUT_IOV 48         /* iovecs per write */

struct h1_span {
    const char *p;
    uint32_t len;
};

struct h1_header {
    struct h1_span name;
    struct h1_span value; /* leading and trailing whitespace removed */
};

enum h1_flags {
    H1_F_CONTENT_LENGTH = 1u << 0, /* framed by Content-Length */
    H1_F_CHUNKED = 1u << 1,        /* framed by Transfer-Encoding: chunked */
    H1_F_KEEP_ALIVE = 1u << 2,     /* the sender allows another message after this one */
    H1_F_EXPECT_CONTINUE = 1u << 3,
};

struct h1_head {
    struct h1_span method; /* request */
    struct h1_span target; /* request */
    struct h1_span reason; /* response */
    int status;            /* response */
    uint8_t major, minor;
    unsigned flags;          /* H1_F_* */
    uint64_t content_length; /* with H1_F_CONTENT_LENGTH */
    int host;                /* index of Host in hdr, or -1 */
    int request_id;          /* index of x-request-id, or -1 */
    int traceparent;         /* request: index of traceparent, -1, or -2 when there are several */
    struct h1_span conn_tokens[H1_MAX_CONN_TOKENS]; /* Connection: a, b */
    unsigned n_conn_tokens;
    unsigned n_hdr;
    struct h1_header hdr[H1_MAX_HEADERS];
};

/* What h1_feed stopped for. */
enum h1_event {
    H1_EV_MORE = 0, /* all input used; feed more */
    H1_EV_HEAD,     /* the head is complete: check it, then feed the rest */
    H1_EV_BODY,     /* the body iovecs are full: write them, then feed the rest */
    H1_EV_DONE,     /* the message is complete */
    H1_EV_ERROR,    /* malformed; see h1_parser.error */
};

/* Body bytes ready to send, re-framed: chunked input can leave as chunked or
 * as raw bytes, and raw input can leave chunked (a close-delimited response
 * sent to an HTTP/1.1 client). */
struct h1_out {
    uv_buf_t iov[H1_OUT_IOV];
    unsigned n;
    char sizes[H1_OUT_IOV / 3 + 1][20]; /* chunk-size lines */
    unsigned n_sizes;
    bool chunked; /* frame body bytes as chunks */
};

struct h1_parser {
    llhttp_t ll;
    struct h1_head head;
    struct h1_out *out;  /* where body spans go; NULL drops them */
    const char *error;   /* why the input was refused */
    uint64_t body_bytes; /* body bytes seen in this message, de-chunked */
    int error_status;    /* 400, or 431 for too many headers */
    uint8_t cb_state;    /* which span the last callback extended */
    uint8_t event;       /* what the last callback asked h1_feed to report */
    bool head_done;
    bool done_pending; /* message ended in the call that reported its head */
    bool skip_body;    /* response to HEAD: no body whatever the head says */
};

void h1_parser_init(struct h1_parser *p, llhttp_type_t type);

/* Starts a new message; the next bytes fed are its first. */
void h1_parser_next(struct h1_parser *p);

/* Parses up to len bytes of data and says why it stopped; *used is how many
 * bytes it took. Spans in head and out point into data. */
enum h1_event h1_feed(struct h1_parser *p, const char *data, size_t len, size_t *used);

/* Tells the parser the peer closed; a close-delimited body then completes.
 * Returns H1_EV_DONE or H1_EV_ERROR. */
enum h1_event h1_finish(struct h1_parser *p);

/* True when the message ends only when the peer closes. */
bool h1_needs_eof(const struct h1_parser *p);

/* Checks a request head; returns 0 when it may be forwarded, else the status
 * to answer (400, 417, 431) with *why saying what was wrong.
 *
 * Target and Host follow RFC 9112 3.2 and RFC 3986's authority grammar,
 * with these choices where the grammar leaves room (a refusal is a 400):
 *  - The target is origin-form (absolute-path [ "?" query ]), or "*" with
 *    OPTIONS. CONNECT is refused here (h1_check_proxy_request takes it).
 *  - A target holds RFC 3986 characters only: no space, control, non-ASCII,
 *    '#', '\', '"', '<', '>'; '%' only before two hex digits. The query
 *    also takes "[]{}|^`", which browsers send unencoded there.
 *  - Host: exactly one in HTTP/1.1, at most one in HTTP/1.0, and never
 *    empty (RFC 9110 4.2.1: an http URI has a host). Its value is uri-host
 *    [":" port] where uri-host is "[" IPv6 "]" (inet_pton: no zone id) or
 *    a reg-name of letters, digits and "-._~" with no empty label (one
 *    trailing dot allowed); no userinfo (RFC 9110 4.2.4), pct-encoding,
 *    sub-delims or IPvFuture. A port is decimal 1-65535 without leading
 *    zero; ':' with no port after it is refused. */
int h1_check_request(struct h1_head *h, const char **why);

/* The same for a request to a forward proxy: CONNECT must carry
 * authority-form (uri-host ":" port, as Host above), "*" is refused, and
 * absolute-form is the caller's to take apart (its authority goes through
 * egress_target_parse, the rest through h1_path_check); a Host is checked
 * as above, then replaced by the target's authority (RFC 9112 3.2.2). */
int h1_check_proxy_request(struct h1_head *h, const char **why);

/* The target-form part of the two checks above (origin_form: the first):
 * NULL, or the very string they give as *why when the target is what is
 * wrong, so that a caller can answer that with a code of its own. */
const char *h1_check_target(const struct h1_head *h, bool origin_form);

/* What may follow an absolute-form target's authority: RFC 3986
 * path-abempty [ "?" query ], with the characters h1_check_request takes.
 * NULL, or what is wrong. */
const char *h1_path_check(const char *p, size_t n);

/* Checks a response head; 0 or -1 with *why. */
int h1_check_response(struct h1_head *h, const char **why);

/* What the proxy adds to a forwarded request. */
struct h1_forward {
    const char *client_ip;  /* appended to x-forwarded-for */
    const char *proto;      /* x-forwarded-proto */
    const char *request_id; /* x-request-id, kept or generated */
    const char *host;       /* used when the request had no Host (HTTP/1.0) */
    const char *client_id;  /* x-fnproxy-client-id: verified mTLS identity, or NULL */
    /* Forward proxying (egress): target (origin-form) replaces the
     * absolute-form one received and host replaces any Host; no
     * x-forwarded-* and no client id are added (the caller is the
     * function itself); x-request-id still is. */
    bool egress;
    struct h1_span target;
    /* tracestate passes through only with a valid traceparent (W3C Trace
     * Context: without one it means nothing). traceparent itself is always
     * dropped: fnproxy writes its own for each attempt (trace.h). */
    bool keep_tracestate;
};

/* Writes the request head forwarded upstream into buf: hop-by-hop headers
 * dropped, forwarding headers added, framing rewritten. Returns its length,
 * or 0 when it does not fit in cap. */
size_t h1_write_request_head(char *buf, size_t cap, const struct h1_head *h,
                             const struct h1_forward *f);

/* What the proxy sets on a response sent downstream. */
struct h1_reply {
    const char *request_id;
    unsigned attempts; /* x-fnproxy-attempts: attempts made (0: none, not said) */
    bool length;       /* content-length: head.content_length */
    bool chunked;      /* transfer-encoding: chunked */
    bool close;        /* connection: close */
    bool keep_alive;   /* connection: keep-alive (HTTP/1.0 clients) */
};

size_t h1_write_response_head(char *buf, size_t cap, const struct h1_head *h,
                              const struct h1_reply *r);

/* Appends a span to out; false when out is full. */
bool h1_out_add(struct h1_out *out, const char *p, size_t len);

/* Appends bytes that are not body (a message head): never chunk-framed. */
bool h1_out_raw(struct h1_out *out, const char *p, size_t len);

/* Appends the last-chunk marker of a chunked body. */
bool h1_out_end_chunked(struct h1_out *out);

void h1_out_reset(struct h1_out *out);

/* Case-insensitive comparison of a span with a NUL-terminated lower-case string. */
bool h1_span_eq(struct h1_span s, const char *lower);

/* The same with a string literal: the length is known at compile time, so
 * most mismatches cost one compare. */
#define h1_span_is(s, lit)                                                                         \
    ((s).len == sizeof(lit) - 1 && strncasecmp((s).p, (lit), sizeof(lit) - 1) == 0)

/* Writes v in hexadecimal (no prefix) and returns the length; out holds 16. */
size_t h1_hex(char *out, uint64_t v);

/* The standard reason phrase of a status code. */
const char *h1_reason(int status);

#endif
