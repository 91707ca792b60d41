/*
 * config_json.c - struct config rendered as JSON (config_json.h).
 *
 * A tiny streaming writer (jw_*) keeps the commas and the escaping in one
 * place; the rest walks the config section by section in the order of
 * DESIGN.md. Every string goes through jw_string(), which escapes quotes,
 * backslashes and control characters, so a path written with any of them
 * still gives valid JSON.
 *
 * Redaction: a field that holds a secret is written with jw_secret(),
 * which never looks at the value beyond whether it is set. Today the only
 * such field is a listener certificate's key path (certificate and CA
 * paths are not secrets: they name public material). A future secret
 * (a token, a password) takes one jw_secret() call.
 */
#include "config_json.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#define JW_DEPTH 16

struct jw {
    FILE *f;
    int depth;
    bool has_item[JW_DEPTH]; /* the open object or array has an item: next one needs a comma */
};

static void jw_string(struct jw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    fputc('"', w->f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", w->f);
            break;
        case '\\':
            fputs("\\\\", w->f);
            break;
        case '\n':
            fputs("\\n", w->f);
            break;
        case '\r':
            fputs("\\r", w->f);
            break;
        case '\t':
            fputs("\\t", w->f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(w->f, "\\u00%c%c", hex[*p >> 4], hex[*p & 15]);
            else
                fputc(*p, w->f); /* UTF-8 passes as is: libyaml took only valid UTF-8 */
        }
    }
    fputc('"', w->f);
}

/* The comma and the key (NULL inside an array) before a value. */
static void jw_key(struct jw *w, const char *key)
{
    if (w->has_item[w->depth])
        fputc(',', w->f);
    w->has_item[w->depth] = true;
    if (key != NULL) {
        jw_string(w, key);
        fputc(':', w->f);
    }
}

static void jw_open(struct jw *w, const char *key, char c)
{
    jw_key(w, key);
    fputc(c, w->f);
    if (w->depth + 1 < JW_DEPTH)
        w->depth++;
    w->has_item[w->depth] = false;
}

static void jw_obj(struct jw *w, const char *key)
{
    jw_open(w, key, '{');
}

static void jw_arr(struct jw *w, const char *key)
{
    jw_open(w, key, '[');
}

static void jw_end(struct jw *w, char c)
{
    fputc(c, w->f);
    if (w->depth > 0)
        w->depth--;
}

static void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    if (s == NULL)
        fputs("null", w->f);
    else
        jw_string(w, s);
}

static void jw_u64(struct jw *w, const char *key, uint64_t v)
{
    jw_key(w, key);
    fprintf(w->f, "%" PRIu64, v);
}

static void jw_bool(struct jw *w, const char *key, bool v)
{
    jw_key(w, key);
    fputs(v ? "true" : "false", w->f);
}

static void jw_null(struct jw *w, const char *key)
{
    jw_key(w, key);
    fputs("null", w->f);
}

/* v thousandths as a decimal number: 1500 -> 1.5, 2005 -> 2.005. */
static void jw_milli(struct jw *w, const char *key, uint64_t v)
{
    jw_key(w, key);
    uint64_t frac = v % 1000;
    int digits = 3;

    fprintf(w->f, "%" PRIu64, v / 1000);
    if (frac == 0)
        return;
    for (; frac % 10 == 0; frac /= 10)
        digits--;
    fprintf(w->f, ".%0*" PRIu64, digits, frac);
}

/* A secret: "(redacted)" when set, null when not. The value is not read. */
static void jw_secret(struct jw *w, const char *key, const char *secret)
{
    jw_str(w, key, secret != NULL ? CONFIG_JSON_REDACTED : NULL);
}

/* ---- pieces shared by sections ---- */

static void put_methods(struct jw *w, unsigned methods)
{
    static const char *const names[] = {"GET",    "HEAD",  "POST",    "PUT",
                                        "DELETE", "PATCH", "OPTIONS", "TRACE"};

    if (methods == 0) {
        jw_null(w, "methods"); /* any */
        return;
    }
    jw_arr(w, "methods");
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (methods & (1u << i))
            jw_str(w, NULL, names[i]);
    jw_end(w, ']');
}

static void put_timeouts(struct jw *w, const struct cfg_timeouts *t)
{
    jw_u64(w, "timeout", t->timeout_ms);
    jw_u64(w, "connect_timeout", t->connect_timeout_ms);
    jw_u64(w, "per_try_timeout", t->per_try_timeout_ms);
    jw_u64(w, "idle_timeout", t->idle_timeout_ms);
}

static void put_retries(struct jw *w, const struct retry_policy *p)
{
    static const struct {
        unsigned bit;
        const char *name;
    } on[] = {
        {RETRY_ON_CONNECT_FAILURE, "connect-failure"},
        {RETRY_ON_REFUSED, "refused"},
        {RETRY_ON_RESET, "reset"},
        {RETRY_ON_GATEWAY_ERROR, "gateway-error"},
        {RETRY_ON_5XX, "5xx"},
        {RETRY_ON_RETRIABLE_4XX, "retriable-4xx"},
        {RETRY_ON_PER_TRY_TIMEOUT, "per-try-timeout"},
    };

    jw_obj(w, "retries");
    jw_u64(w, "max", p->max);
    jw_arr(w, "on");
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++)
        if (p->on & on[i].bit)
            jw_str(w, NULL, on[i].name);
    for (unsigned i = 0; i < p->n_statuses && i < RETRY_MAX_STATUSES; i++)
        jw_u64(w, NULL, p->statuses[i]);
    jw_end(w, ']');
    jw_obj(w, "backoff");
    jw_u64(w, "base", p->backoff_base_ms);
    jw_u64(w, "max", p->backoff_max_ms);
    jw_end(w, '}');
    jw_obj(w, "budget");
    jw_milli(w, "ratio", p->budget_permille);
    jw_u64(w, "min_per_s", p->budget_min_per_s);
    jw_end(w, '}');
    jw_u64(w, "replay_buffer", p->replay_max);
    jw_end(w, '}');
}

/* Shares are thousandths of a percent: 1500 is 1.5 %. A part with
 * nothing set is null. */
static void put_fault(struct jw *w, const struct cfg_fault *f)
{
    jw_obj(w, "fault");
    if (f->delay_share != 0 || f->delay_ms != 0) {
        jw_obj(w, "delay");
        jw_milli(w, "percent", f->delay_share);
        jw_u64(w, "duration", f->delay_ms);
        jw_end(w, '}');
    } else {
        jw_null(w, "delay");
    }
    if (f->abort_share != 0 || f->abort_status != 0) {
        jw_obj(w, "abort");
        jw_milli(w, "percent", f->abort_share);
        jw_u64(w, "status", (uint64_t)f->abort_status);
        jw_end(w, '}');
    } else {
        jw_null(w, "abort");
    }
    jw_end(w, '}');
}

static void put_strings(struct jw *w, const char *key, char *const *v, size_t n)
{
    if (v == NULL) {
        jw_null(w, key);
        return;
    }
    jw_arr(w, key);
    for (size_t i = 0; i < n; i++)
        jw_str(w, NULL, v[i]);
    jw_end(w, ']');
}

/* ---- sections ---- */

static void put_listener_tls(struct jw *w, const struct cfg_listener_tls *t)
{
    if (t == NULL) {
        jw_null(w, "tls");
        return;
    }
    jw_obj(w, "tls");
    jw_arr(w, "certificates");
    for (size_t i = 0; i < t->n_certificates; i++) {
        jw_obj(w, NULL);
        jw_str(w, "cert", t->certificates[i].cert);
        jw_secret(w, "key", t->certificates[i].key);
        jw_end(w, '}');
    }
    jw_end(w, ']');
    jw_str(w, "client_ca", t->client_ca);
    jw_str(w, "min_version", t->min_version == 13 ? "1.3" : "1.2");
    jw_bool(w, "sni_strict", t->sni_strict);
    jw_u64(w, "handshake_timeout", t->handshake_timeout_ms);
    jw_end(w, '}');
}

static void put_listeners(struct jw *w, const struct config *c)
{
    jw_arr(w, "listeners");
    for (size_t i = 0; i < c->n_listeners; i++) {
        const struct cfg_listener *l = &c->listeners[i];

        jw_obj(w, NULL);
        jw_str(w, "name", l->name);
        static const char *const kinds[CFG_LISTENER__N] = {
            [CFG_LISTENER_INGRESS] = "ingress",
            [CFG_LISTENER_EGRESS] = "egress",
            [CFG_LISTENER_CAPTURE] = "capture",
        };
        jw_str(w, "kind", kinds[l->kind]);
        if (l->kind != CFG_LISTENER_INGRESS && l->function < c->n_functions)
            jw_str(w, "function", c->functions[l->function].name);
        jw_str(w, "listen", l->listen.text);
        jw_u64(w, "header_timeout", l->header_timeout_ms);
        jw_u64(w, "keepalive_timeout", l->keepalive_timeout_ms);
        jw_u64(w, "max_header_bytes", l->max_header_bytes);
        jw_u64(w, "min_client_rate", l->min_client_rate);
        put_listener_tls(w, l->tls);
        jw_end(w, '}');
    }
    jw_end(w, ']');
}

static void put_routes(struct jw *w, const struct config *c, const struct cfg_function *fn)
{
    jw_arr(w, "routes");
    for (size_t i = 0; i < fn->n_routes; i++) {
        const struct cfg_route *r = &fn->routes[i];

        jw_obj(w, NULL);
        jw_str(w, "name", r->name);
        jw_obj(w, "match");
        jw_str(w, "listener", r->listener < c->n_listeners ? c->listeners[r->listener].name : NULL);
        jw_str(w, "host", r->host);
        jw_str(w, "path_prefix", r->path_prefix);
        put_methods(w, r->methods);
        jw_end(w, '}');
        put_timeouts(w, &r->t);
        put_retries(w, &r->retries);
        put_fault(w, &r->fault);
        jw_end(w, '}');
    }
    jw_end(w, ']');
}

static void put_ingress(struct jw *w, const struct config *c, const struct cfg_function *fn)
{
    static const char *const per[] = {"function", "client_id", "client_ip"};
    const struct cfg_admission *a = &fn->admission;

    jw_obj(w, "ingress");
    jw_u64(w, "max_body", fn->max_body);
    put_strings(w, "allowed_clients", fn->allowed_clients, fn->n_allowed_clients);
    jw_u64(w, "max_concurrency", a->max_concurrency);
    jw_obj(w, "queue");
    jw_u64(w, "depth", a->queue_depth);
    jw_u64(w, "timeout", a->queue_timeout_ms);
    jw_end(w, '}');
    if (a->rate_milli != 0) {
        jw_obj(w, "rate_limit");
        jw_milli(w, "rps", a->rate_milli);
        jw_u64(w, "burst", a->burst);
        jw_str(w, "per", (unsigned)a->per < 3 ? per[a->per] : "?");
        jw_end(w, '}');
    } else {
        jw_null(w, "rate_limit");
    }
    put_routes(w, c, fn);
    jw_end(w, '}');
}

static void put_egress(struct jw *w, const struct config *c, const struct cfg_egress *eg)
{
    if (eg == NULL) {
        jw_null(w, "egress");
        return;
    }
    jw_obj(w, "egress");
    jw_str(w, "listen",
           eg->listener < c->n_listeners ? c->listeners[eg->listener].listen.text : NULL);
    if (eg->has_capture && eg->capture_listener < c->n_listeners) {
        const struct cfg_listener *cl = &c->listeners[eg->capture_listener];

        jw_obj(w, "capture");
        jw_str(w, "listen", cl->listen.text);
        jw_u64(w, "first_bytes_timeout", cl->first_bytes_timeout_ms);
        jw_end(w, '}');
    } else {
        jw_null(w, "capture");
    }
    jw_str(w, "mode", eg->mode == CFG_EGRESS_REPORT ? "report" : "enforce");
    jw_bool(w, "deny_private", eg->deny_private);
    jw_u64(w, "tunnel_idle_timeout", eg->tunnel_idle_timeout_ms);
    jw_arr(w, "allow");
    for (size_t i = 0; i < eg->n_allow; i++) {
        const struct cfg_egress_rule *r = &eg->allow[i];

        jw_obj(w, NULL);
        jw_str(w, "name", r->name);
        jw_str(w, "host", r->host);
        jw_str(w, "cidr", r->cidr);
        jw_arr(w, "ports");
        for (size_t p = 0; p < r->n_ports; p++)
            jw_u64(w, NULL, r->ports[p]);
        jw_end(w, ']');
        put_methods(w, r->methods);
        put_strings(w, "paths", r->paths, r->n_paths);
        jw_str(w, "tls", r->tls_originate ? "originate" : NULL);
        jw_str(w, "ca", r->ca);
        put_timeouts(w, &r->t);
        put_retries(w, &r->retries);
        put_fault(w, &r->fault);
        jw_end(w, '}');
    }
    jw_end(w, ']');
    jw_end(w, '}');
}

static void put_function(struct jw *w, const struct config *c, const struct cfg_function *fn)
{
    const struct outlier_policy *o = &fn->outlier;

    jw_obj(w, NULL);
    jw_str(w, "name", fn->name);
    jw_arr(w, "endpoints");
    for (size_t i = 0; i < fn->n_endpoints; i++)
        jw_str(w, NULL, fn->endpoints[i].text);
    jw_end(w, ']');
    if (fn->upstream_tls != NULL) {
        jw_obj(w, "upstream_tls");
        jw_str(w, "ca", fn->upstream_tls->ca);
        jw_str(w, "server_name", fn->upstream_tls->server_name);
        jw_end(w, '}');
    } else {
        jw_null(w, "upstream_tls");
    }
    if (fn->readiness != NULL) {
        jw_obj(w, "readiness");
        jw_str(w, "path", fn->readiness->path);
        jw_u64(w, "interval", fn->readiness->interval_ms);
        jw_u64(w, "timeout", fn->readiness->timeout_ms);
        jw_end(w, '}');
    } else {
        jw_null(w, "readiness");
    }
    jw_obj(w, "outlier");
    jw_u64(w, "consecutive_failures", o->consecutive_failures);
    jw_u64(w, "base_ejection_time", o->base_ejection_ms);
    jw_u64(w, "max_ejection_time", o->max_ejection_ms);
    jw_u64(w, "max_ejected_percent", o->max_ejected_percent);
    jw_u64(w, "failure_percent", o->failure_percent);
    jw_u64(w, "failure_window", o->failure_window);
    jw_end(w, '}');
    jw_obj(w, "circuit_breaker");
    jw_u64(w, "max_active", fn->circuit_breaker.max_active);
    jw_u64(w, "max_pending", fn->circuit_breaker.max_pending);
    jw_end(w, '}');
    put_ingress(w, c, fn);
    put_egress(w, c, fn->egress);
    jw_end(w, '}');
}

/* RFC 3339, UTC, with milliseconds: 2026-01-02T03:04:05.678Z. */
static void put_time(struct jw *w, const char *key, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char buf[64];

    if (gmtime_r(&s, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        jw_null(w, key);
        return;
    }
    size_t n = strlen(buf);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    jw_str(w, key, buf);
}

int config_json_render(FILE *out, const struct config *c, const struct config_json_meta *m)
{
    struct jw w = {.f = out};

    jw_obj(&w, NULL);
    if (m != NULL && m->generation != 0)
        jw_u64(&w, "generation", m->generation);
    if (m != NULL && m->hash != NULL)
        jw_str(&w, "hash", m->hash);
    if (m != NULL && m->loaded_at_ms > 0)
        put_time(&w, "loaded_at", m->loaded_at_ms);
    jw_str(&w, "path", c->path);
    if (c->workers == 0)
        jw_str(&w, "workers", "auto");
    else
        jw_u64(&w, "workers", c->workers);
    if (m != NULL && m->workers != 0)
        jw_u64(&w, "workers_effective", m->workers);
    if (c->has_admin) {
        jw_obj(&w, "admin");
        jw_str(&w, "listen", c->admin_listen.text);
        jw_end(&w, '}');
    } else {
        jw_null(&w, "admin");
    }
    jw_u64(&w, "drain_timeout", c->drain_timeout_ms);
    jw_str(&w, "access_log", c->access_log);
    jw_str(&w, "metrics", c->metrics_off ? "off" : "on");
    jw_str(&w, "watch", c->watch_off ? "off" : "on");
    jw_obj(&w, "dns");
    jw_str(&w, "servers", c->dns.servers);
    jw_u64(&w, "timeout", c->dns.timeout_ms);
    jw_obj(&w, "cache");
    jw_u64(&w, "min_ttl", (uint64_t)c->dns.cache_min_ttl_s * 1000);
    jw_u64(&w, "max_ttl", (uint64_t)c->dns.cache_max_ttl_s * 1000);
    jw_u64(&w, "entries", c->dns.cache_entries);
    jw_end(&w, '}');
    jw_end(&w, '}');
    put_listeners(&w, c);
    jw_arr(&w, "functions");
    for (size_t i = 0; i < c->n_functions; i++)
        put_function(&w, c, &c->functions[i]);
    jw_end(&w, ']');
    jw_end(&w, '}');
    fputc('\n', out);
    return ferror(out) ? -1 : 0;
}
