/*
 * forward.c - the egress side of an exchange (forward.h): a request on a
 * function's egress listener is canonicalised, decided on, resolved and
 * checked here; exch.c then dials the addresses that passed and moves the
 * bytes as for any request, or hands a CONNECT over to the tunnel below.
 */
#include "forward.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "capture.h"
#include "exch_int.h"
#include "log.h"

/* A request mode: report lets through without a rule: the defaults of a
 * rule (README), and no retries. */
static const struct cfg_timeouts fwd_default_tmo = {
    .timeout_ms = 15000,
    .idle_timeout_ms = 15000,
    .connect_timeout_ms = 5000,
};

/* Which halves of a tunnel are done (x->tunnel). */
enum {
    TUN_OPEN = 1u << 0,        /* "200 Connection established" was sent */
    TUN_CLIENT_EOF = 1u << 1,  /* the client sent FIN ... */
    TUN_UP_SHUT = 1u << 2,     /* ... and the destination was told, after every byte */
    TUN_UP_EOF = 1u << 3,      /* the destination sent FIN ... */
    TUN_CLIENT_SHUT = 1u << 4, /* ... and the client was told, after every byte */
};
#define TUN_DONE (TUN_CLIENT_EOF | TUN_UP_SHUT | TUN_UP_EOF | TUN_CLIENT_SHUT)

static const char *const verdict_names[] = {
    [FWD_NONE] = "",
    [FWD_ALLOW] = "allow",
    [FWD_DENY] = "deny",
    [FWD_WOULD_DENY] = "would_deny",
};

const char *fwd_verdict_name(const struct exch *x)
{
    return x->verdict <= FWD_WOULD_DENY ? verdict_names[x->verdict] : "";
}

static const char *const denial_reasons[DENY__N] = {
    [DENY_NO_RULE] = "no_rule",
    [DENY_PRIVATE] = "private_address",
    [DENY_OWN_LISTENER] = "own_listener",
};

static const char *const denial_messages[DENY__N] = {
    [DENY_NO_RULE] = "no egress rule of this function allows this destination",
    [DENY_PRIVATE] = "the destination resolves to a private address no cidr rule allows",
    [DENY_OWN_LISTENER] = "the destination is one of fnproxy's own listeners",
};

static enum metrics_denial denial_of(enum egress_deny d)
{
    return d == EGRESS_DENY_PRIVATE ? DENY_PRIVATE : DENY_NO_RULE;
}

/* Where the origin-form part of the target starts: after the authority
 * of "http://host/path", or at once for a captured request (origin-form,
 * its destination named by Host). */
static size_t fwd_origin_at(const struct exch *x)
{
    struct h1_span t = x->req.head.target;
    size_t i = sizeof("http://") - 1;

    if (x->cl->capture == CAPTURE_HTTP)
        return 0;
    while (i < t.len && t.p[i] != '/' && t.p[i] != '?')
        i++;
    return i;
}

/* The path of the target (NULL for CONNECT): what path rules match,
 * without the query. */
static void fwd_path(const struct exch *x, const char **path, size_t *len)
{
    struct h1_span t = x->req.head.target;
    size_t i, n;

    *path = NULL;
    *len = 0;
    if (x->flags & X_F_TUNNEL)
        return;
    i = fwd_origin_at(x);
    for (n = 0; i + n < t.len && t.p[i + n] != '?'; n++)
        ;
    *path = n > 0 ? t.p + i : "/";
    *len = n > 0 ? n : 1;
}

static unsigned fwd_method(const struct exch *x)
{
    if (x->flags & X_F_TUNNEL)
        return 0;
    return cfg_method_bit(x->req.head.method.p, x->req.head.method.len);
}

/* --- answers ------------------------------------------------------------------ */

static void fwd_bad_target(struct exch *x, const char *why)
{
    char msg[128];

    snprintf(msg, sizeof(msg), "bad proxy target: %s", why);
    exch_reply(x, 400, "bad_target", msg);
}

/* 403 egress_denied: counted per function and reason, never per host. */
static void fwd_deny(struct exch *x, enum metrics_denial why)
{
    char extra[384];

    x->verdict = FWD_DENY;
    x->deny = (uint8_t)why;
    x->stats = x->fs->egress_none;
    metrics_inc(&x->fs->egress_none->denials[why]);
    snprintf(extra, sizeof(extra),
             ",\"function\":\"%s\",\"host\":\"%s\",\"port\":%u,\"reason\":\"%s\"", x->fn->name,
             x->target.host, (unsigned)x->target.port, denial_reasons[why]);
    exch_reply_json(x, 403, "egress_denied", denial_messages[why], extra);
}

/* mode: report: the request goes on, counted and logged as would-deny. */
static void fwd_would_deny(struct exch *x, enum metrics_denial why)
{
    if (x->verdict == FWD_WOULD_DENY)
        return; /* the first reason is the one counted */
    x->verdict = FWD_WOULD_DENY;
    x->deny = (uint8_t)why;
    metrics_inc(&x->fs->egress_none->would_deny[why]);
    if (log_ratelimit(&x->fs->last_report_log_ms, 1000))
        log_info("function %s: egress to %s:%u would be denied (%s); let through by mode: report",
                 x->fn->name, x->target.host, (unsigned)x->target.port, denial_reasons[why]);
}

static void fwd_dns_failed(struct exch *x, int status)
{
    char msg[320];

    exch_count_uperr(x, UPERR_DNS);
    if (status == UV_ETIMEDOUT)
        exch_count_timeout(x, TMO_DNS);
    snprintf(msg, sizeof(msg), "could not resolve %s: %s", x->target.host,
             status == UV_ETIMEDOUT ? "timed out" : uv_strerror(status));
    exch_reply(x, 502, "dns_failed", msg);
}

void fwd_resolve_timeout(struct exch *x)
{
    if (x->flags & X_F_RESOLVING)
        resolve_cancel(&x->rq);
    x->flags &= ~X_F_RESOLVING;
    x->dns_us = metrics_now_us() - x->t_resolve;
    x->resolved = true;
    fwd_dns_failed(x, UV_ETIMEDOUT);
}

void fwd_unreachable(struct exch *x)
{
    if (x->last_fail == EXCH_FAIL_CONNECT_TIMEOUT)
        exch_reply(x, 504, "connect_timeout", "connecting to the destination timed out");
    else
        exch_reply(x, 502, "upstream_unreachable",
                   "the destination refused the connection or could not be reached");
}

/* --- the decision ---------------------------------------------------------------- */

/* Whether addr:port is one of fnproxy's own listeners (or its admin): a
 * request there would loop through fnproxy or reach its admin endpoint.
 * A listener on the unspecified address owns every loopback address. */
bool fwd_is_own(const struct config *cfg, int family, const uint8_t *addr, uint16_t port)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    enum egress_addr_class cls = egress_addr_classify(family, addr);
    bool local = cls == EGRESS_A_LOOPBACK || cls == EGRESS_A_UNSPECIFIED;

    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    for (size_t i = 0; i <= cfg->n_listeners; i++) {
        const struct cfg_addr *a = i < cfg->n_listeners ? &cfg->listeners[i].listen
                                   : cfg->has_admin     ? &cfg->admin_listen
                                                        : NULL;
        const uint8_t *la;
        size_t alen;
        uint16_t lport;

        if (a == NULL || a->kind != CFG_ADDR_INET)
            continue;
        if (a->sa.ss_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
            la = (const uint8_t *)&sin->sin_addr;
            alen = 4;
            lport = ntohs(sin->sin_port);
        } else {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->sa;
            la = (const uint8_t *)&sin6->sin6_addr;
            alen = 16;
            lport = ntohs(sin6->sin6_port);
        }
        if (lport != port)
            continue;
        if (egress_addr_classify(a->sa.ss_family, la) == EGRESS_A_UNSPECIFIED) {
            if (local)
                return true;
            continue;
        }
        if ((family == AF_INET ? 4u : 16u) == alen && memcmp(la, addr, alen) == 0)
            return true;
    }
    return false;
}

/* Stage 2 of the decision, on every address the name gave (or the
 * literal): the ones that pass are dialled, in order. */
static void fwd_check_addrs(struct exch *x, const struct resolve_addrs *a)
{
    const struct cfg_egress *eg = x->fn->egress;
    const struct config *cfg = x->ws->snap->cfg;
    struct egress_policy pol = {.rules = eg->rules, .deny_private = eg->deny_private};
    unsigned method = fwd_method(x), denied = 0;
    const char *path;
    size_t path_len;

    fwd_path(x, &path, &path_len);
    x->dial.n = 0;
    x->dial.port = x->target.port;
    for (unsigned i = 0; i < a->n; i++) {
        struct egress_decision d = x->policy;

        if (fwd_is_own(cfg, a->a[i].family, a->a[i].addr, x->target.port))
            continue; /* refused in either mode */
        if (x->verdict == FWD_ALLOW)
            egress_decide_addr(&pol, &x->target, a->a[i].family, a->a[i].addr, method, path,
                               path_len, &d);
        if (d.deny != EGRESS_ALLOW && eg->mode == CFG_EGRESS_ENFORCE) {
            denied++;
            continue;
        }
        if (d.deny != EGRESS_ALLOW)
            fwd_would_deny(x, denial_of(d.deny));
        x->dial.a[x->dial.n++] = a->a[i];
    }
    if (x->dial.n == 0) {
        fwd_deny(x, denied > 0 ? DENY_PRIVATE : DENY_OWN_LISTENER);
        return;
    }
    exch_first_attempt(x);
}

static void on_resolved(struct resolve_req *q, int status, const struct resolve_addrs *a)
{
    struct exch *x = (struct exch *)((char *)q - offsetof(struct exch, rq));

    x->flags &= ~X_F_RESOLVING;
    x->dns_us = metrics_now_us() - x->t_resolve;
    x->resolved = true;
    if (status < 0) {
        fwd_dns_failed(x, status);
        return;
    }
    fwd_check_addrs(x, a);
}

/* The head forwarded: origin-form target, Host from the target. */
static int fwd_write_head(struct exch *x, bool port_given)
{
    struct h1_head *h = &x->req.head;
    struct h1_span t = h->target, origin;
    char host[sizeof(x->target.host) + 8], query_target[2048];
    size_t i;
    bool v6 = x->target.is_ip && x->target.family == AF_INET6;

    i = fwd_origin_at(x);
    origin = (struct h1_span){t.p + i, t.len - (uint32_t)i};
    if (origin.len == 0) {
        origin = (struct h1_span){"/", 1};
    } else if (origin.p[0] == '?') {
        /* "http://host?q" asks for "/?q". */
        if (origin.len + 1 >= sizeof(query_target)) {
            fwd_bad_target(x, "query too long");
            return -1;
        }
        query_target[0] = '/';
        memcpy(query_target + 1, origin.p, origin.len);
        origin = (struct h1_span){query_target, origin.len + 1};
    }
    if (port_given)
        snprintf(host, sizeof(host), v6 ? "[%s]:%u" : "%s:%u", x->target.host,
                 (unsigned)x->target.port);
    else
        snprintf(host, sizeof(host), v6 ? "[%s]" : "%s", x->target.host);

    if (exch_head_buf(x, (size_t)x->req_bytes + 512 + sizeof(x->request_id)) < 0)
        return -1;
    struct h1_forward f = {
        .request_id = x->request_id,
        .host = host,
        .egress = true,
        .target = origin,
        .keep_tracestate = x->trace.kept,
    };
    x->req_head_len = (uint32_t)h1_write_request_head(x->req_head, x->req_head_cap, h, &f);
    if (x->req_head_len == 0) {
        exch_reply(x, 431, "header_too_large", "request head too large");
        return -1;
    }
    x->req_out.chunked = (h->flags & H1_F_CHUNKED) != 0;
    return 0;
}

/* The authority of the target: CONNECT's whole target, or what follows
 * "http://" up to the path or query. 0, or -1 when answered. */
static int fwd_authority(struct exch *x, const char **auth, size_t *len)
{
    struct h1_span t = x->req.head.target;
    static const char scheme[] = "http://";
    size_t n = sizeof(scheme) - 1, i;

    if (x->flags & X_F_TUNNEL) {
        *auth = t.p;
        *len = t.len;
        return 0;
    }
    if (x->cl->capture == CAPTURE_HTTP) {
        /* The function meant to talk to the server itself: the name is its
         * Host (the target was checked as origin-form). */
        const struct h1_head *h = &x->req.head;
        if (h->host < 0) {
            fwd_bad_target(x, "no Host header: a captured request is decided on its Host");
            return -1;
        }
        *auth = h->hdr[h->host].value.p;
        *len = h->hdr[h->host].value.len;
        return 0;
    }
    if (t.len > 0 && t.p[0] == '/') {
        exch_reply(x, 400, "proxy_request_expected",
                   "this is a function's egress proxy: send absolute-form requests "
                   "(GET http://host/path) or CONNECT host:port");
        return -1;
    }
    if (memchr(t.p, '#', t.len) != NULL) {
        fwd_bad_target(x, "a fragment (#) is not part of a request target");
        return -1;
    }
    if (t.len < n || strncasecmp(t.p, scheme, n) != 0) {
        fwd_bad_target(x, t.len >= 8 && strncasecmp(t.p, "https://", 8) == 0
                              ? "https:// goes through CONNECT, or http:// with tls: originate"
                              : "the target must be an http:// URL");
        return -1;
    }
    for (i = n; i < t.len && t.p[i] != '/' && t.p[i] != '?'; i++)
        ;
    /* The authority goes through egress_target_parse; what follows is sent
     * on as the origin-form target, held to the same rules as ingress's. */
    const char *why = h1_path_check(t.p + i, t.len - i);
    if (why != NULL) {
        fwd_bad_target(x, why);
        return -1;
    }
    *auth = t.p + n;
    *len = i - n;
    return 0;
}

/* A function that got x-fnproxy-timeout-ms passes it on to its outbound
 * calls (its HTTP client library copies incoming headers, or the function
 * does): such a call is held to what is left of it, if that is less than
 * its rule's timeout. The header never leaves (h1_write_request_head). */
static void fwd_travelling_deadline(struct exch *x)
{
    const struct h1_head *h = &x->req.head;

    for (unsigned i = 0; i < h->n_hdr; i++) {
        if (!h1_span_is(h->hdr[i].name, "x-fnproxy-timeout-ms"))
            continue;
        struct h1_span v = h->hdr[i].value;
        uint64_t ms = 0;
        uint32_t k;
        for (k = 0; k < v.len && k < 10 && v.p[k] >= '0' && v.p[k] <= '9'; k++)
            ms = ms * 10 + (uint64_t)(v.p[k] - '0');
        if (k > 0 && k == v.len && worker_now_ms(x->cl->w) + ms < x->deadline)
            x->deadline = worker_now_ms(x->cl->w) + ms;
        return;
    }
}

void fwd_begin(struct exch *x)
{
    struct h1_head *h = &x->req.head;
    const struct cfg_listener *lc = exch_listener(x);
    struct worker *w = x->cl->w;
    const struct cfg_egress *eg;
    const char *auth, *path, *why = NULL;
    size_t auth_len, path_len;
    bool port_given;
    uint8_t capture;
    int err;

    x->flags |= X_F_EGRESS;
    x->fn_idx = lc->function;
    x->fn = &x->ws->snap->cfg->functions[x->fn_idx];
    x->fs = &x->ws->fns[x->fn_idx];
    x->stats = x->fs->egress_none;
    x->target.host[0] = '\0';
    x->target.port = 0;
    eg = x->fn->egress;
    capture = x->cl->capture;
    if (capture == CAPTURE_RAW)
        x->flags |= X_F_RAW;
    err = capture == CAPTURE_HTTP ? h1_check_request(h, &why) : h1_check_proxy_request(h, &why);
    exch_make_request_id(x);
    /* A function's call carries its trace on (it propagated the traceparent
     * it received) or starts one. A tunnel is opaque: nothing can be
     * injected, so a new trace would tie the log line to nothing; it logs
     * the trace of the CONNECT's own traceparent, or none. */
    exch_take_trace(x, !h1_span_is(h->method, "connect"));
    if (err != 0 && why == h1_check_target(h, capture == CAPTURE_HTTP)) {
        /* A bad target is bad_target on this listener, however it is bad. */
        fwd_bad_target(x, why);
        return;
    }
    if (err != 0) {
        exch_reply(x, err, err == 417 ? "expectation_failed" : "bad_request", why);
        return;
    }
    if (h1_span_is(h->method, "connect"))
        x->flags |= X_F_TUNNEL | X_F_CLOSE; /* what follows the head is not HTTP */

    if (fwd_authority(x, &auth, &auth_len) < 0)
        return;
    err = egress_target_parse(auth, auth_len, 0, &x->target);
    port_given = err == EGRESS_T_OK;
    /* No port: 80, or for a captured request the port it was headed for. */
    if (err == EGRESS_T_BAD_PORT && !(x->flags & X_F_TUNNEL))
        err = egress_target_parse(auth, auth_len, capture == CAPTURE_HTTP ? x->cl->orig_port : 80,
                                  &x->target);
    if (err != EGRESS_T_OK) {
        fwd_bad_target(x, egress_target_error_name(err));
        return;
    }
    if (capture == CAPTURE_HTTP && x->target.port != x->cl->orig_port) {
        /* The connection's port is the one decided and dialled; a Host
         * that names another is a client (or a spoof) fnproxy cannot
         * serve both ways. */
        fwd_bad_target(x, "the Host header names a port other than the one connected to");
        return;
    }

    struct egress_policy pol = {.rules = eg->rules, .deny_private = eg->deny_private};
    fwd_path(x, &path, &path_len);
    if (path != NULL && x->fs->egress_paths && egress_path_ambiguous(path, path_len)) {
        fwd_bad_target(x, "dot segments or encoded slashes in the path, which path rules "
                          "cannot vouch for");
        return;
    }
    egress_decide_target(&pol, &x->target, fwd_method(x), path, path_len, &x->policy);
    if (x->policy.deny == EGRESS_ALLOW) {
        x->verdict = FWD_ALLOW;
        x->rule = &eg->allow[x->policy.rule];
        x->stats = x->fs->egress_rules[x->policy.rule];
        exch_set_policy(x, &x->rule->t, &x->rule->retries, &x->rule->fault);
    } else if (eg->mode == CFG_EGRESS_ENFORCE) {
        fwd_deny(x, denial_of(x->policy.deny));
        return;
    } else {
        fwd_would_deny(x, denial_of(x->policy.deny));
        exch_set_policy(x, &fwd_default_tmo, NULL, NULL);
    }
    fwd_travelling_deadline(x);

    if (!(x->flags & X_F_TUNNEL)) {
        /* Rules match the port the URL names; tls: originate dials 443 when
         * it names none, as the https:// URL would. */
        if (x->rule != NULL && x->rule->tls_originate && !port_given)
            x->target.port = 443;
        if ((h->flags & H1_F_EXPECT_CONTINUE) && (x->flags & X_F_HAS_BODY) && h->minor >= 1)
            x->flags |= X_F_CONTINUE;
        if (fwd_write_head(x, port_given) < 0)
            return;
    }

    if (x->target.is_ip) {
        struct resolve_addrs a = {.n = 1, .port = x->target.port};
        a.a[0].family = x->target.family;
        memcpy(a.a[0].addr, x->target.addr, sizeof(a.a[0].addr));
        fwd_check_addrs(x, &a);
        return;
    }
    x->t_resolve = metrics_now_us();
    err = w->has_resolver
              ? resolve_start(&w->resolver, &x->rq, x->target.host, x->target.port, on_resolved)
              : UV_ENOSYS;
    if (err < 0) {
        x->resolved = true;
        fwd_dns_failed(x, err);
        return;
    }
    x->flags |= X_F_RESOLVING;
    exch_enter(x, EXCH_PH_RESOLVE);
}

/* The endpoint of dial address i (one more reference), and the TLS
 * context it is reached with. Endpoints are found by address; the text of
 * one is written once, when it is made. */
static struct endpoint *fwd_endpoint_of(struct exch *x, unsigned i, struct tls_ctx **tls)
{
    const struct resolve_addr *ra = &x->dial.a[i];
    struct cfg_addr a = {.kind = CFG_ADDR_INET};
    const char *tls_name = NULL, *ca = NULL;
    struct endpoint *ep;

    if (ra->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.sa;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(x->dial.port);
        memcpy(&sin->sin_addr, ra->addr, 4);
        a.sa_len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.sa;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(x->dial.port);
        memcpy(&sin6->sin6_addr, ra->addr, 16);
        a.sa_len = sizeof(*sin6);
    }
    *tls = NULL;
    if (x->rule != NULL && x->rule->tls_originate && !(x->flags & X_F_TUNNEL)) {
        tls_name = x->target.host; /* the name verified, whatever address it resolved to */
        ca = x->rule->ca;
        *tls = x->ws->snap->egress_tls[x->fn_idx][x->policy.rule];
    }
    ep = endpoint_get(&x->cl->w->pool, &a, tls_name, ca);
    if (ep != NULL && ep->addr.text[0] == '\0') {
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(ra->family, ra->addr, ip, sizeof(ip));
        snprintf(ep->addr.text, sizeof(ep->addr.text), ra->family == AF_INET ? "%s:%u" : "[%s]:%u",
                 ip, (unsigned)x->dial.port);
    }
    return ep;
}

struct endpoint *fwd_next_endpoint(struct exch *x, size_t *idx, struct tls_ctx **tls, bool *full)
{
    uint64_t all = x->dial.n >= 64 ? UINT64_MAX : (1ULL << x->dial.n) - 1;
    uint64_t now = worker_now_ms(x->cl->w);
    int fallback = -1; /* an ejected one, if nothing better */

    if (x->flags & X_F_EP_OWNED)
        endpoint_put(x->ep);
    x->flags &= ~X_F_EP_OWNED;
    x->ep = NULL;
    if (x->dial.n == 0)
        return NULL;
    if ((x->tried & all) == all) /* every address was tried: another than the last */
        x->tried = x->dial.n > 1 ? 1ULL << x->ep_idx : 0;
    for (unsigned i = 0; i < x->dial.n; i++) {
        if (x->tried & (1ULL << i))
            continue;
        struct endpoint *ep = fwd_endpoint_of(x, i, tls);
        if (ep == NULL)
            return NULL;
        if (endpoint_full(ep, &x->fn->circuit_breaker)) {
            *full = true;
        } else if (outlier_ejected(&ep->outlier, now)) {
            if (fallback < 0)
                fallback = (int)i;
        } else {
            x->flags |= X_F_EP_OWNED;
            *idx = i;
            return ep;
        }
        endpoint_put(ep);
    }
    if (fallback < 0)
        return NULL;
    struct endpoint *ep = fwd_endpoint_of(x, (unsigned)fallback, tls);
    if (ep != NULL) {
        x->flags |= X_F_EP_OWNED;
        *idx = (size_t)fallback;
    }
    return ep;
}

/* --- the tunnel ------------------------------------------------------------------ */

static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";

static void tunnel_failed(struct exch *x, enum metrics_uperr why)
{
    exch_count_uperr(x, why);
    exch_abort(x);
}

/* Both halves are closed and nothing is in flight: the exchange ends and
 * the client connection closes. */
static void tunnel_check_done(struct exch *x)
{
    if ((x->tunnel & TUN_DONE) == TUN_DONE && !(x->flags & (X_F_UP_WRITING | X_F_DOWN_WRITING)))
        exch_end(x);
}

static void tunnel_connected(void *owner, int status)
{
    struct exch *x = owner;

    if (status < 0) {
        exch_attempt_failed(x, status == UV_EPROTO ? EXCH_FAIL_TLS : EXCH_FAIL_REFUSED, status,
                            NULL);
        return;
    }
    exch_connect_done(x);
    exch_attempt_done(x);
    x->flags |= X_F_UP_BROKEN | X_F_RESP_STARTED; /* never pooled; no other answer now */
    x->status = 200;
    x->phase = EXCH_PH_TUNNEL;
    exch_touch(x);
    if (x->flags & X_F_RAW) {
        /* Captured: the client thinks it is talking to the destination
         * already; the bytes it sent first (the ClientHello) go out now. */
        fwd_tunnel_sent(x);
        fwd_tunnel_input(x);
        return;
    }
    h1_out_reset(&x->resp_out);
    h1_out_raw(&x->resp_out, established, sizeof(established) - 1);
    if (exch_send(x, false) < 0) {
        exch_abort(x);
        return;
    }
    fwd_tunnel_input(x); /* what the client sent after its CONNECT */
}

/* Client to destination: what the client side has read goes out, one
 * write at a time; reading the client waits while one is in flight. */
void fwd_tunnel_input(struct exch *x)
{
    const struct exch_client_ops *ops = x->cl->ops;
    struct upconn *u = x->u;

    if (x->phase != EXCH_PH_TUNNEL || (x->flags & X_F_UP_WRITING))
        return;
    for (;;) {
        const char *p;
        size_t n;
        int rc;

        ops->input(x, &p, &n);
        if (n == 0)
            break;
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        x->req.body_bytes += n;
        rc = upconn_write(u, &b, 1, true);
        if (rc < 0) {
            tunnel_failed(x, UPERR_RESET);
            return;
        }
        if (rc == 0) {
            x->tunnel_unsent = (uint32_t)n;
            x->flags |= X_F_UP_WRITING;
            ops->read(x, false); /* the write points into the client's buffer */
            return;
        }
        ops->consume(x, n);
        ops->reclaim(x);
    }
    ops->reclaim(x);
    if (!(x->tunnel & TUN_CLIENT_EOF)) {
        ops->read(x, true);
        return;
    }
    if (!(x->tunnel & TUN_UP_SHUT)) {
        x->tunnel |= TUN_UP_SHUT;
        if (upconn_shutdown(u) < 0) {
            tunnel_failed(x, UPERR_RESET);
            return;
        }
    }
    tunnel_check_done(x);
}

void fwd_tunnel_client_eof(struct exch *x)
{
    x->tunnel |= TUN_CLIENT_EOF;
    fwd_tunnel_input(x);
}

/* The client took what was sent (the 200 first): read the destination. */
void fwd_tunnel_sent(struct exch *x)
{
    struct upconn *u = x->u;

    x->tunnel |= TUN_OPEN;
    exch_touch(x);
    u->len = u->parsed = 0;
    if (!(x->tunnel & TUN_UP_EOF)) {
        upconn_read(u, true);
        return;
    }
    if (!(x->tunnel & TUN_CLIENT_SHUT)) {
        x->tunnel |= TUN_CLIENT_SHUT;
        if (x->cl->ops->shutdown(x) < 0) {
            exch_abort(x);
            return;
        }
    }
    tunnel_check_done(x);
}

/* Destination to client: each read goes out before the next is taken. */
static void tunnel_up_data(void *owner, ssize_t nread)
{
    struct exch *x = owner;
    struct upconn *u = x->u;
    int rc;

    if (nread == UV_EOF) {
        x->tunnel |= TUN_UP_EOF;
        upconn_read(u, false);
        if (!(x->flags & X_F_DOWN_WRITING))
            fwd_tunnel_sent(x); /* passes the FIN on */
        return;
    }
    if (nread < 0) {
        tunnel_failed(x, UPERR_RESET);
        return;
    }
    exch_touch(x);
    h1_out_reset(&x->resp_out);
    h1_out_raw(&x->resp_out, u->buf, u->len);
    rc = exch_send(x, true);
    if (rc < 0) {
        exch_abort(x);
        return;
    }
    if (rc == 1) {
        u->len = u->parsed = 0;
        return;
    }
    upconn_read(u, false); /* the send points into u->buf */
}

static void tunnel_up_written(void *owner, int status)
{
    struct exch *x = owner;

    x->flags &= ~X_F_UP_WRITING;
    if (status < 0) {
        tunnel_failed(x, UPERR_RESET);
        return;
    }
    x->cl->ops->consume(x, x->tunnel_unsent);
    x->tunnel_unsent = 0;
    exch_touch(x);
    fwd_tunnel_input(x);
}

const struct pool_owner_ops fwd_tunnel_pool_ops = {
    .connected = tunnel_connected,
    .data = tunnel_up_data,
    .written = tunnel_up_written,
};
