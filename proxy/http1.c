/*
 * http1.c - HTTP/1.1 message heads and body framing over llhttp.
 *
 * llhttp (built with LLHTTP_STRICT_MODE) finds the message boundaries; this
 * file collects the head as spans, then checks what llhttp lets through but a
 * proxy must not: several Host or Content-Length headers, transfer codings
 * other than a lone "chunked", control bytes and folded lines in values,
 * targets that are not origin-form. A message that is ambiguous is refused
 * whole, so the function and fnproxy can never disagree on where it ends.
 */
#include "http1.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { CB_NONE = 0, CB_FIELD, CB_FIELD_DONE, CB_VALUE };

static struct h1_parser *parser_of(llhttp_t *ll)
{
    return ll->data;
}

static void span_extend(struct h1_span *s, const char *at, size_t len)
{
    if (s->p == NULL) {
        s->p = at;
        s->len = (uint32_t)len;
    } else {
        /* Input is fed from one buffer that does not move while a head is
         * collected, so a span split over two reads is still contiguous. */
        s->len = (uint32_t)(at + len - s->p);
    }
}

static int on_method(llhttp_t *ll, const char *at, size_t len)
{
    span_extend(&parser_of(ll)->head.method, at, len);
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    span_extend(&parser_of(ll)->head.target, at, len);
    return 0;
}

static int on_status(llhttp_t *ll, const char *at, size_t len)
{
    span_extend(&parser_of(ll)->head.reason, at, len);
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(ll);
    struct h1_head *h = &p->head;

    if (p->head_done)
        return 0; /* trailers are dropped */
    if (p->cb_state != CB_FIELD) {
        if (h->n_hdr == H1_MAX_HEADERS) {
            p->error_status = 431;
            llhttp_set_error_reason(ll, "too many header fields");
            return HPE_USER;
        }
        memset(&h->hdr[h->n_hdr++], 0, sizeof(h->hdr[0]));
        p->cb_state = CB_FIELD;
    }
    span_extend(&h->hdr[h->n_hdr - 1].name, at, len);
    return 0;
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct h1_parser *p = parser_of(ll);

    if (!p->head_done)
        p->cb_state = CB_FIELD_DONE;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(ll);

    if (p->head_done)
        return 0;
    if (p->cb_state == CB_NONE) {
        /* A value with no field before it is a folded continuation line. */
        llhttp_set_error_reason(ll, "obsolete line folding");
        return HPE_USER;
    }
    p->cb_state = CB_VALUE;
    span_extend(&p->head.hdr[p->head.n_hdr - 1].value, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct h1_parser *p = parser_of(ll);

    if (!p->head_done)
        p->cb_state = CB_NONE;
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct h1_parser *p = parser_of(ll);
    struct h1_head *h = &p->head;

    p->head_done = true;
    p->event = H1_EV_HEAD;
    h->major = ll->http_major;
    h->minor = ll->http_minor;
    h->status = ll->status_code;
    if (llhttp_should_keep_alive(ll))
        h->flags |= H1_F_KEEP_ALIVE;
    if (ll->flags & F_CONTENT_LENGTH) {
        h->flags |= H1_F_CONTENT_LENGTH;
        h->content_length = ll->content_length;
    }
    if (ll->flags & F_CHUNKED)
        h->flags |= H1_F_CHUNKED;
    /* No body, whatever the framing headers say: a response to HEAD, and
     * 1xx, 204 and 304 responses (RFC 9112 section 6.3). llhttp only knows
     * the last three when they carry no framing headers. */
    if (p->skip_body ||
        (ll->type == HTTP_RESPONSE && (h->status < 200 || h->status == 204 || h->status == 304)))
        return 1; /* message ends here; on_message_complete follows */
    return HPE_PAUSED;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(ll);
    struct h1_out *out = p->out;

    p->body_bytes += len;
    if (out == NULL)
        return 0;
    h1_out_add(out, at, len);
    /* Leave room for one more framed span and the last-chunk marker. */
    if (out->n + 4 > H1_OUT_IOV) {
        p->event = H1_EV_BODY;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct h1_parser *p = parser_of(ll);

    if (p->out != NULL && p->out->chunked)
        h1_out_end_chunked(p->out);
    if (p->event == H1_EV_HEAD)
        p->done_pending = true; /* report the head first */
    else
        p->event = H1_EV_DONE;
    return HPE_PAUSED;
}

static const llhttp_settings_t h1_settings = {
    .on_method = on_method,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void h1_parser_init(struct h1_parser *p, llhttp_type_t type)
{
    /* No memset of the whole parser: its header array is large and only
     * the entries counted by n_hdr are ever read. */
    llhttp_init(&p->ll, type, &h1_settings);
    p->ll.data = p;
    p->out = NULL;
    p->skip_body = false;
    p->event = H1_EV_MORE;
    h1_parser_next(p);
}

void h1_parser_next(struct h1_parser *p)
{
    struct h1_head *h = &p->head;

    memset(h, 0, offsetof(struct h1_head, hdr));
    h->host = -1;
    h->request_id = -1;
    h->traceparent = -1;
    p->error = NULL;
    p->error_status = 400;
    p->body_bytes = 0;
    p->cb_state = CB_NONE;
    p->head_done = false;
    p->done_pending = false;
    /* skip_body stays: it belongs to the exchange (a response to HEAD),
     * not to one message of it (a 1xx before the final response). */
}

enum h1_event h1_feed(struct h1_parser *p, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t err;

    if (p->done_pending) {
        p->done_pending = false;
        *used = 0;
        return H1_EV_DONE;
    }
    if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
        llhttp_resume(&p->ll);
    p->event = H1_EV_MORE;
    err = llhttp_execute(&p->ll, data, len);
    if (err == HPE_OK) {
        *used = len;
        return H1_EV_MORE;
    }
    if (err == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&p->ll) - data);
        return (enum h1_event)p->event;
    }
    *used = 0;
    if (err == HPE_PAUSED_UPGRADE) {
        /* Upgrade is hop-by-hop and never forwarded: what follows the
         * message is not HTTP we can parse. */
        p->error = "protocol upgrade is not supported";
    } else {
        p->error = llhttp_get_error_reason(&p->ll);
    }
    return H1_EV_ERROR;
}

enum h1_event h1_finish(struct h1_parser *p)
{
    if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
        llhttp_resume(&p->ll);
    p->event = H1_EV_MORE;
    llhttp_errno_t err = llhttp_finish(&p->ll);
    /* on_message_complete pauses, and llhttp_finish passes that on. */
    if (err != HPE_OK && err != HPE_PAUSED) {
        p->error = "connection closed before the message was complete";
        return H1_EV_ERROR;
    }
    if (p->event != H1_EV_DONE) {
        p->error = "connection closed before the message was complete";
        return H1_EV_ERROR;
    }
    return H1_EV_DONE;
}

bool h1_needs_eof(const struct h1_parser *p)
{
    return llhttp_message_needs_eof(&p->ll);
}

bool h1_span_eq(struct h1_span s, const char *lower)
{
    size_t n = strlen(lower);

    return s.len == n && strncasecmp(s.p, lower, n) == 0;
}

static bool is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr(extra, c) != NULL;
}

/* Trims optional whitespace and refuses control bytes: CR and LF (folded or
 * split lines), NUL and the rest of C0 except HTAB, and DEL. */
static bool value_clean(struct h1_span *v)
{
    while (v->len > 0 && (v->p[0] == ' ' || v->p[0] == '\t')) {
        v->p++;
        v->len--;
    }
    while (v->len > 0 && (v->p[v->len - 1] == ' ' || v->p[v->len - 1] == '\t'))
        v->len--;
    for (uint32_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool name_clean(struct h1_span n)
{
    if (n.len == 0)
        return false;
    for (uint32_t i = 0; i < n.len; i++)
        if (!is_tchar((unsigned char)n.p[i]))
            return false;
    return true;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

enum auth_err {
    AUTH_OK = 0,
    AUTH_EMPTY,
    AUTH_LABEL,
    AUTH_USERINFO,
    AUTH_CHAR,
    AUTH_UNCLOSED,
    AUTH_IPV6,
    AUTH_IPVFUTURE,
    AUTH_PORT,
    AUTH_NO_PORT,
};

/* What is wrong, said of a Host header ([0]) or of CONNECT's target ([1]). */
static const char *const auth_why[][2] = {
    [AUTH_EMPTY] = {"invalid host: empty host", "CONNECT target (host:port): empty host"},
    [AUTH_LABEL] = {"invalid host: an empty label", "CONNECT target (host:port): an empty label"},
    [AUTH_USERINFO] = {"invalid host: userinfo (@) is not allowed",
                       "CONNECT target (host:port): userinfo (@) is not allowed"},
    [AUTH_CHAR] = {"invalid host: a character outside letters, digits and -._~",
                   "CONNECT target (host:port): a character outside letters, digits and -._~"},
    [AUTH_UNCLOSED] = {"invalid host: [ without ]", "CONNECT target (host:port): [ without ]"},
    [AUTH_IPV6] = {"invalid host: not an IPv6 address between [ ]",
                   "CONNECT target (host:port): not an IPv6 address between [ ]"},
    [AUTH_IPVFUTURE] = {"invalid host: IPvFuture literals are not supported",
                        "CONNECT target (host:port): IPvFuture literals are not supported"},
    [AUTH_PORT] = {"invalid host: bad port (decimal 1-65535, no leading zero)",
                   "CONNECT target (host:port): bad port (decimal 1-65535, no leading zero)"},
    [AUTH_NO_PORT] = {"invalid host: port required",
                      "CONNECT target must be host:port (authority-form)"},
};

/* A port after ':': decimal 1..65535 without sign or leading zero, one
 * spelling per port (RFC 3986 allows any *DIGIT, empty included; a
 * reader with strtol(..., 0) takes "010" as 8). */
static bool port_ok(const char *p, size_t n)
{
    unsigned v = 0;

    if (n == 0 || n > 5 || p[0] == '0')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)p[i]))
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v <= 65535;
}

/* RFC 3986's authority without userinfo, uri-host [":" port], as fnproxy
 * takes it (the choices are in http1.h). */
static enum auth_err authority_check(const char *p, size_t n, bool port_required)
{
    size_t i;

    if (memchr(p, '@', n) != NULL)
        return AUTH_USERINFO; /* RFC 9110 4.2.4: never in an http(s) URI on the wire */
    if (n > 0 && p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        char text[INET6_ADDRSTRLEN];
        unsigned char addr[16];
        size_t len;

        if (rb == NULL)
            return AUTH_UNCLOSED;
        len = (size_t)(rb - p) - 1;
        if (len > 0 && (p[1] == 'v' || p[1] == 'V'))
            return AUTH_IPVFUTURE; /* no version is defined: nothing could route it */
        if (len == 0 || len >= sizeof(text))
            return AUTH_IPV6;
        memcpy(text, p + 1, len);
        text[len] = '\0';
        /* glibc's inet_pton takes RFC 4291 text: no zone id ('%'), no IPv4
         * tail with leading zeros, no group over four hex digits. */
        if (inet_pton(AF_INET6, text, addr) != 1)
            return AUTH_IPV6;
        i = len + 2;
    } else {
        size_t label = 0;

        for (i = 0; i < n && p[i] != ':'; i++) {
            unsigned char c = (unsigned char)p[i];
            /* pct-encoded and sub-delims are reg-name too, but no DNS name
             * holds them and readers disagree on them ("a,b" is a list to
             * some, "%2e" a dot to others): one spelling per host. */
            if (!is_unreserved(c))
                return AUTH_CHAR;
            if (c == '.') {
                if (label == 0)
                    return AUTH_LABEL;
                label = 0;
            } else {
                label++;
            }
        }
        if (i == 0)
            return AUTH_EMPTY;
        /* One trailing dot names the root ("a."), but "." alone is empty
         * of a name and "a.." holds an empty label. */
        if (label == 0 && (i == 1 || p[i - 2] == '.'))
            return AUTH_LABEL;
    }
    if (i == n)
        return port_required ? AUTH_NO_PORT : AUTH_OK;
    if (p[i] != ':' || !port_ok(p + i + 1, n - i - 1))
        return AUTH_PORT;
    return AUTH_OK;
}

/* RFC 3986 pchar but pct-encoded, and '/': what a path holds. */
static bool is_path_char(unsigned char c)
{
    return is_unreserved(c) || (c != 0 && strchr("!$&'()*+,;=:@/", c) != NULL);
}

const char *h1_path_check(const char *p, size_t n)
{
    bool query = false;

    if (n > 0 && p[0] != '/' && p[0] != '?')
        return "the path must start with /";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '%') {
            /* "%zz" or a lone '%' is read three ways by three decoders. */
            if (i + 2 >= n || !is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2]))
                return "bad percent-encoding in the request target";
            i += 2;
        } else if (c == '#') {
            return "a fragment (#) is not part of a request target";
        } else if (c == '?') {
            query = true;
        } else if (!is_path_char(c) && !(query && c != 0 && strchr("[]{}|^`", c) != NULL)) {
            /* The query also takes what browsers send in it unencoded (the
             * WHATWG URL query percent-encode set leaves these). */
            return "invalid character in the request target";
        }
    }
    return NULL;
}

/* Splits a Connection value into its comma-separated names. */
static bool collect_conn_tokens(struct h1_head *h, struct h1_span v)
{
    const char *p = v.p, *end = v.p + v.len;

    while (p < end) {
        while (p < end && (*p == ',' || *p == ' ' || *p == '\t'))
            p++;
        const char *start = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p == start)
            continue;
        /* Each name is a header to remove: refusing beats forwarding one. */
        if (h->n_conn_tokens == H1_MAX_CONN_TOKENS)
            return false;
        h->conn_tokens[h->n_conn_tokens++] = (struct h1_span){start, (uint32_t)(p - start)};
    }
    return true;
}

/* Checks and indexes the headers both directions share. Returns NULL or
 * what is wrong. */
static const char *check_headers(struct h1_head *h, bool request)
{
    unsigned n_te = 0, n_cl = 0, n_host = 0;

    h->n_conn_tokens = 0; /* checking twice must not count names twice */

    for (unsigned i = 0; i < h->n_hdr; i++) {
        struct h1_header *hd = &h->hdr[i];

        if (!name_clean(hd->name))
            return "invalid header name";
        if (!value_clean(&hd->value))
            return "control character in a header value";
        switch (hd->name.len) {
        case 4:
            if (h1_span_is(hd->name, "host")) {
                n_host++;
                h->host = (int)i;
            }
            break;
        case 6:
            if (request && h1_span_is(hd->name, "expect")) {
                if (!h1_span_is(hd->value, "100-continue"))
                    return "expect";
                h->flags |= H1_F_EXPECT_CONTINUE;
            }
            break;
        case 10:
            if (h1_span_is(hd->name, "connection") && !collect_conn_tokens(h, hd->value))
                return "too many names in connection";
            break;
        case 11:
            /* Several are no valid trace context (checking twice keeps -2). */
            if (request && h1_span_is(hd->name, "traceparent"))
                h->traceparent = h->traceparent == -1 || h->traceparent == (int)i ? (int)i : -2;
            break;
        case 12:
            if (h1_span_is(hd->name, "x-request-id"))
                h->request_id = (int)i;
            break;
        case 14:
            if (h1_span_is(hd->name, "content-length"))
                n_cl++;
            break;
        case 17:
            if (h1_span_is(hd->name, "transfer-encoding")) {
                n_te++;
                if (!h1_span_is(hd->value, "chunked"))
                    return "transfer coding other than chunked";
            }
            break;
        }
    }
    if (n_cl > 1)
        return "more than one content-length";
    if (n_te > 1)
        return "more than one transfer-encoding";
    if (n_te > 0 && n_cl > 0)
        return "both content-length and transfer-encoding";
    if (n_te > 0 && !(h->flags & H1_F_CHUNKED))
        return "invalid transfer-encoding";
    if (n_te > 0 && h->major == 1 && h->minor == 0)
        return "transfer-encoding in an HTTP/1.0 message";
    if (request) {
        if (n_host > 1)
            return "more than one host";
        if (n_host == 0 && h->minor >= 1)
            return "missing host";
        /* RFC 9112 3.2: a Host that is not a valid uri-host [":" port] is a
         * 400, as much as a missing or repeated one. */
        if (n_host == 1) {
            struct h1_span v = h->hdr[h->host].value;
            enum auth_err e = authority_check(v.p, v.len, false);
            if (e != AUTH_OK)
                return auth_why[e][0];
        }
    }
    return NULL;
}

/* The request-target forms of RFC 9112 3.2: origin-form and asterisk-form
 * (OPTIONS only) to a server; to a forward proxy, authority-form for
 * CONNECT only, and absolute-form, whose scheme, authority and path
 * forward.c takes apart (it answers each with its own code). */
const char *h1_check_target(const struct h1_head *h, bool origin_form)
{
    struct h1_span t = h->target;
    bool connect = h1_span_is(h->method, "connect");
    bool asterisk = t.len == 1 && t.p[0] == '*';
    enum auth_err e;

    if (!origin_form) {
        if (connect) {
            e = authority_check(t.p, t.len, true);
            return e == AUTH_OK ? NULL : auth_why[e][1];
        }
        if (asterisk)
            return "asterisk-form (*) is for OPTIONS to a server, not to a proxy";
        return NULL;
    }
    if (connect)
        return "CONNECT needs a forward proxy: this listener takes origin-form targets";
    if (asterisk && h1_span_is(h->method, "options"))
        return NULL;
    if (t.len == 0 || t.p[0] != '/')
        return "request target must be a path (origin-form)";
    return h1_path_check(t.p, t.len);
}

static int check_request(struct h1_head *h, bool origin_form, const char **why)
{
    const char *err;

    if (h->major != 1 || h->minor > 1) {
        *why = "unsupported HTTP version";
        return 400;
    }
    err = h1_check_target(h, origin_form);
    if (err != NULL) {
        *why = err;
        return 400;
    }
    err = check_headers(h, true);
    if (err != NULL && strcmp(err, "expect") == 0) {
        *why = "only expect: 100-continue is supported";
        return 417;
    }
    if (err != NULL) {
        *why = err;
        return 400;
    }
    return 0;
}

int h1_check_request(struct h1_head *h, const char **why)
{
    return check_request(h, true, why);
}

int h1_check_proxy_request(struct h1_head *h, const char **why)
{
    return check_request(h, false, why);
}

int h1_check_response(struct h1_head *h, const char **why)
{
    const char *err;

    if (h->major != 1 || h->minor > 1) {
        *why = "unsupported HTTP version";
        return -1;
    }
    if (h->status < 100 || h->status > 599) {
        *why = "invalid status code";
        return -1;
    }
    /* reason-phrase = *( HTAB / SP / VCHAR / obs-text ): llhttp lets any
     * byte but CR and LF through, and the reason is forwarded as it is. */
    for (uint32_t i = 0; i < h->reason.len; i++) {
        unsigned char c = (unsigned char)h->reason.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *why = "control character in the reason phrase";
            return -1;
        }
    }
    err = check_headers(h, false);
    if (err != NULL) {
        *why = err;
        return -1;
    }
    return 0;
}

/* Headers fnproxy removes from what it forwards: hop-by-hop ones and those
 * it writes itself. */
static bool is_dropped(const struct h1_head *h, struct h1_span name, bool request)
{
    struct h1_span n = name;

    switch (n.len) {
    case 2:
        if (h1_span_is(n, "te"))
            return true;
        break;
    case 4:
        if (h1_span_is(n, "host"))
            return false; /* "Connection: host" must not strip it */
        break;
    case 6:
        if (request && h1_span_is(n, "expect"))
            return true;
        break;
    case 7:
        if (h1_span_is(n, "trailer") || h1_span_is(n, "upgrade"))
            return true;
        break;
    case 10:
        if (h1_span_is(n, "connection") || h1_span_is(n, "keep-alive"))
            return true;
        break;
    case 11:
        /* fnproxy writes its own, per attempt (exch_head_out). */
        if (request && h1_span_is(n, "traceparent"))
            return true;
        break;
    case 12:
        if (h1_span_is(n, "x-request-id"))
            return true;
        break;
    case 14:
        if (h1_span_is(n, "content-length"))
            return true;
        break;
    case 15:
        if (request && h1_span_is(n, "x-forwarded-for"))
            return true;
        break;
    case 17:
        if (h1_span_is(n, "transfer-encoding") || (request && h1_span_is(n, "x-forwarded-proto")))
            return true;
        break;
    case 19:
        /* Only fnproxy says who the caller is: a client cannot. */
        if (request && h1_span_is(n, "x-fnproxy-client-id"))
            return true;
        break;
    case 20:
        /* Only fnproxy says how long is left (and a function's own outbound
         * call carrying it is held to it, never passes it on). */
        if (request && h1_span_is(n, "x-fnproxy-timeout-ms"))
            return true;
        break;
    }
    /* Proxy-* are all meant for this hop (Proxy-Authorization,
     * Proxy-Connection, Proxy-Authenticate, Proxy-Authentication-Info...). */
    if (n.len > 6 && strncasecmp(n.p, "proxy-", 6) == 0)
        return true;
    for (unsigned i = 0; i < h->n_conn_tokens; i++) {
        struct h1_span t = h->conn_tokens[i];
        if (t.len == n.len && strncasecmp(t.p, n.p, t.len) == 0)
            return true;
    }
    return false;
}

/* A bounded string builder; overflow is sticky and reported at the end. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool overflow;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->overflow || b->cap - b->len < n) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_span(struct sbuf *b, struct h1_span s)
{
    sb_put(b, s.p, s.len);
}

static void sb_u64(struct sbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sb_put(b, tmp + i, sizeof(tmp) - i);
}

size_t h1_hex(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;

    do {
        tmp[n++] = digits[v & 0xf];
        v >>= 4;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static void sb_header(struct sbuf *b, const char *name, const char *value)
{
    sb_str(b, name);
    sb_put(b, ": ", 2);
    sb_str(b, value);
    sb_put(b, "\r\n", 2);
}

/* With egress, a forward proxy's request: it names the host itself (RFC
 * 9112 section 3.2.2), and the x-forwarded-* the function set are its own
 * business, passed on as they are. */
static bool egress_kept(struct h1_span n)
{
    return h1_span_is(n, "x-forwarded-for") || h1_span_is(n, "x-forwarded-proto");
}

static void sb_forwarded_headers(struct sbuf *b, const struct h1_head *h, bool egress,
                                 bool drop_tracestate)
{
    for (unsigned i = 0; i < h->n_hdr; i++) {
        const struct h1_header *hd = &h->hdr[i];
        if (drop_tracestate && h1_span_is(hd->name, "tracestate"))
            continue;
        if (egress ? h1_span_is(hd->name, "host") ||
                         (is_dropped(h, hd->name, true) && !egress_kept(hd->name))
                   : is_dropped(h, hd->name, h->target.p != NULL))
            continue;
        sb_span(b, hd->name);
        sb_put(b, ": ", 2);
        sb_span(b, hd->value);
        sb_put(b, "\r\n", 2);
    }
}

size_t h1_write_request_head(char *buf, size_t cap, const struct h1_head *h,
                             const struct h1_forward *f)
{
    struct sbuf b = {buf, 0, cap, false};
    bool first_xff = true;

    sb_span(&b, h->method);
    sb_put(&b, " ", 1);
    sb_span(&b, f->egress ? f->target : h->target);
    sb_str(&b, " HTTP/1.1\r\n");
    sb_forwarded_headers(&b, h, f->egress, !f->keep_tracestate);
    if ((h->host < 0 || f->egress) && f->host != NULL)
        sb_header(&b, "host", f->host);
    if (f->egress) {
        /* The caller is the function itself: nothing to say about it. */
        sb_header(&b, "x-request-id", f->request_id);
        goto framing;
    }

    /* Every x-forwarded-for the client sent, in order, then the client. */
    sb_str(&b, "x-forwarded-for: ");
    for (unsigned i = 0; i < h->n_hdr; i++) {
        if (!h1_span_is(h->hdr[i].name, "x-forwarded-for") || h->hdr[i].value.len == 0)
            continue;
        if (!first_xff)
            sb_put(&b, ", ", 2);
        sb_span(&b, h->hdr[i].value);
        first_xff = false;
    }
    if (!first_xff)
        sb_put(&b, ", ", 2);
    sb_str(&b, f->client_ip);
    sb_put(&b, "\r\n", 2);
    sb_header(&b, "x-forwarded-proto", f->proto);
    sb_header(&b, "x-request-id", f->request_id);
    if (f->client_id != NULL)
        sb_header(&b, "x-fnproxy-client-id", f->client_id);
framing:
    if (h->flags & H1_F_CHUNKED) {
        sb_str(&b, "transfer-encoding: chunked\r\n");
    } else if (h->flags & H1_F_CONTENT_LENGTH) {
        sb_str(&b, "content-length: ");
        sb_u64(&b, h->content_length);
        sb_put(&b, "\r\n", 2);
    }
    sb_put(&b, "\r\n", 2);
    return b.overflow ? 0 : b.len;
}

size_t h1_write_response_head(char *buf, size_t cap, const struct h1_head *h,
                              const struct h1_reply *r)
{
    struct sbuf b = {buf, 0, cap, false};
    char status[4] = {(char)('0' + h->status / 100 % 10), (char)('0' + h->status / 10 % 10),
                      (char)('0' + h->status % 10), ' '};

    sb_str(&b, "HTTP/1.1 ");
    sb_put(&b, status, sizeof(status));
    if (h->reason.len > 0)
        sb_span(&b, h->reason);
    else
        sb_str(&b, h1_reason(h->status));
    sb_put(&b, "\r\n", 2);
    sb_forwarded_headers(&b, h, false, false);
    if (r->request_id != NULL)
        sb_header(&b, "x-request-id", r->request_id);
    if (r->attempts > 0) {
        sb_str(&b, "x-fnproxy-attempts: ");
        sb_u64(&b, r->attempts);
        sb_put(&b, "\r\n", 2);
    }
    if (h->status < 200 || h->status == 204) {
        /* No framing header at all (RFC 9110 8.6, RFC 9112 6.1: a server
         * MUST NOT send them): the function's would tell a lenient client
         * to read a body that is not there. */
    } else if (r->chunked) {
        sb_str(&b, "transfer-encoding: chunked\r\n");
    } else if (r->length) {
        sb_str(&b, "content-length: ");
        sb_u64(&b, h->content_length);
        sb_put(&b, "\r\n", 2);
    }
    if (r->close)
        sb_str(&b, "connection: close\r\n");
    else if (r->keep_alive)
        sb_str(&b, "connection: keep-alive\r\n");
    sb_put(&b, "\r\n", 2);
    return b.overflow ? 0 : b.len;
}

void h1_out_reset(struct h1_out *out)
{
    out->n = 0;
    out->n_sizes = 0;
}

bool h1_out_add(struct h1_out *out, const char *p, size_t len)
{
    if (len == 0)
        return true;
    if (!out->chunked) {
        if (out->n == H1_OUT_IOV)
            return false;
        out->iov[out->n++] = uv_buf_init((char *)p, (unsigned)len);
        return true;
    }
    if (out->n + 3 > H1_OUT_IOV || out->n_sizes == sizeof(out->sizes) / sizeof(out->sizes[0]))
        return false;
    char *line = out->sizes[out->n_sizes++];
    size_t n = h1_hex(line, len);
    line[n++] = '\r';
    line[n++] = '\n';
    out->iov[out->n++] = uv_buf_init(line, (unsigned)n);
    out->iov[out->n++] = uv_buf_init((char *)p, (unsigned)len);
    out->iov[out->n++] = uv_buf_init("\r\n", 2);
    return true;
}

bool h1_out_raw(struct h1_out *out, const char *p, size_t len)
{
    if (out->n == H1_OUT_IOV)
        return false;
    out->iov[out->n++] = uv_buf_init((char *)p, (unsigned)len);
    return true;
}

bool h1_out_end_chunked(struct h1_out *out)
{
    if (out->n == H1_OUT_IOV)
        return false;
    out->iov[out->n++] = uv_buf_init("0\r\n\r\n", 5);
    return true;
}

const char *h1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}
