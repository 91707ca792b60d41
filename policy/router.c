/*
 * router.c - ingress routing compiled from a validated config.
 *
 * router_new() gives each listener its routes as one array sorted by
 * specificity, so that router_match() only scans it and takes the first
 * route that matches: most specific first is what makes "first match" and
 * "best match" the same thing. The config has already refused routes that
 * tie on listener, host and path_prefix with overlapping methods, so the
 * order among equals never decides anything; file order breaks such ties
 * only to keep the order deterministic.
 *
 * Matching never allocates: the Host header is normalised by narrowing a
 * (pointer, length) view of it, and compared case-insensitively against
 * hosts that the config already stored in lower case.
 */
#include "router.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum router_host_kind {
    ROUTER_HOST_EXACT = 0, /* ordered from most to least specific */
    ROUTER_HOST_WILDCARD,
    ROUTER_HOST_ANY,
};

struct router_entry {
    const struct cfg_route *route;
    const struct cfg_function *fn;
    size_t fn_idx, route_idx;
    enum router_host_kind kind;
    const char *host; /* exact: the host; wildcard: the suffix after "*." */
    size_t host_len;
    size_t prefix_len;
};

struct router_listener {
    struct router_entry *entries; /* a slice of router.entries */
    size_t n;
};

struct router {
    struct router_listener *listeners;
    size_t n_listeners;
    struct router_entry *entries; /* all routes, grouped by listener */
};

static int entry_cmp(const void *a, const void *b)
{
    const struct router_entry *p = a, *q = b;

    if (p->kind != q->kind)
        return p->kind < q->kind ? -1 : 1;
    /* *.a.example.com is more specific than *.example.com. */
    if (p->kind == ROUTER_HOST_WILDCARD && p->host_len != q->host_len)
        return p->host_len > q->host_len ? -1 : 1;
    if (p->prefix_len != q->prefix_len)
        return p->prefix_len > q->prefix_len ? -1 : 1;
    if (!p->route->methods != !q->route->methods)
        return p->route->methods ? -1 : 1;
    if (p->fn_idx != q->fn_idx)
        return p->fn_idx < q->fn_idx ? -1 : 1;
    return p->route_idx < q->route_idx ? -1 : p->route_idx > q->route_idx;
}

static void entry_init(struct router_entry *e, const struct config *c, size_t fi, size_t ri)
{
    const struct cfg_route *r = &c->functions[fi].routes[ri];

    e->route = r;
    e->fn = &c->functions[fi];
    e->fn_idx = fi;
    e->route_idx = ri;
    e->prefix_len = strlen(r->path_prefix);
    if (!r->host) {
        e->kind = ROUTER_HOST_ANY;
        e->host = NULL;
        e->host_len = 0;
    } else if (r->host[0] == '*' && r->host[1] == '.') {
        e->kind = ROUTER_HOST_WILDCARD;
        e->host = r->host + 2;
        e->host_len = strlen(e->host);
    } else {
        e->kind = ROUTER_HOST_EXACT;
        e->host = r->host;
        e->host_len = strlen(r->host);
    }
}

struct router *router_new(const struct config *c)
{
    struct router *r;
    size_t fi, ri, li, total = 0, *fill;

    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    for (fi = 0; fi < c->n_functions; fi++)
        total += c->functions[fi].n_routes;
    /* calloc(0) may return NULL; ask for one element so NULL means no memory. */
    r->listeners = calloc(c->n_listeners ? c->n_listeners : 1, sizeof(*r->listeners));
    r->entries = calloc(total ? total : 1, sizeof(*r->entries));
    fill = calloc(c->n_listeners ? c->n_listeners : 1, sizeof(*fill));
    if (!r->listeners || !r->entries || !fill)
        goto out_free_router;
    r->n_listeners = c->n_listeners;

    /* Count per listener, carve r->entries into slices, then fill them. */
    for (fi = 0; fi < c->n_functions; fi++) {
        for (ri = 0; ri < c->functions[fi].n_routes; ri++) {
            li = c->functions[fi].routes[ri].listener;
            if (li < r->n_listeners)
                r->listeners[li].n++;
        }
    }
    for (li = 0, total = 0; li < r->n_listeners; li++) {
        r->listeners[li].entries = r->entries + total;
        total += r->listeners[li].n;
    }
    for (fi = 0; fi < c->n_functions; fi++) {
        for (ri = 0; ri < c->functions[fi].n_routes; ri++) {
            li = c->functions[fi].routes[ri].listener;
            if (li < r->n_listeners)
                entry_init(&r->listeners[li].entries[fill[li]++], c, fi, ri);
        }
    }
    for (li = 0; li < r->n_listeners; li++)
        qsort(r->listeners[li].entries, r->listeners[li].n, sizeof(struct router_entry), entry_cmp);
    free(fill);
    return r;

out_free_router:
    free(fill);
    router_free(r);
    return NULL;
}

void router_free(struct router *r)
{
    if (!r)
        return;
    free(r->entries);
    free(r->listeners);
    free(r);
}

/* Narrows a Host header value to the bare host: "[::1]:8080" -> "::1",
 * "Example.COM.:80" -> "Example.COM" (case is handled when comparing). A
 * value with several colons and no brackets is left whole: it is not a
 * host:port, and it will simply not equal any configured host. */
static void host_normalise(const char **host, size_t *len)
{
    const char *s = *host, *colon = NULL;
    size_t n = *len, i;

    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);

        if (close) {
            *host = s + 1;
            *len = (size_t)(close - s - 1);
        }
        return;
    }
    for (i = 0; i < n; i++) {
        if (s[i] != ':')
            continue;
        if (colon)
            return;
        colon = s + i;
    }
    if (colon)
        n = (size_t)(colon - s);
    if (n && s[n - 1] == '.')
        n--;
    *len = n;
}

/* cfg is already lower case. */
static bool host_eq(const char *req, const char *cfg, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char ch = req[i];

        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != cfg[i])
            return false;
    }
    return true;
}

static bool entry_host_matches(const struct router_entry *e, const char *host, size_t len)
{
    switch (e->kind) {
    case ROUTER_HOST_EXACT:
        return len == e->host_len && host_eq(host, e->host, len);
    case ROUTER_HOST_WILDCARD:
        /* At least one character and a dot before the suffix: *.example.com
         * matches a.example.com and a.b.example.com, not example.com. */
        return len >= e->host_len + 2 && host[len - e->host_len - 1] == '.' &&
               host_eq(host + len - e->host_len, e->host, e->host_len);
    case ROUTER_HOST_ANY:
        return true;
    }
    return false;
}

int router_match(const struct router *r, size_t listener, const char *host, size_t host_len,
                 const char *path, size_t path_len, const char *method, size_t method_len,
                 struct route_match *m)
{
    const struct router_listener *l;
    unsigned bit;
    size_t i;

    if (!r || listener >= r->n_listeners)
        return -1;
    l = &r->listeners[listener];
    if (!host)
        host_len = 0;
    host_normalise(&host, &host_len);
    bit = cfg_method_bit(method, method_len);

    for (i = 0; i < l->n; i++) {
        const struct router_entry *e = &l->entries[i];

        if (!entry_host_matches(e, host, host_len))
            continue;
        /* A plain prefix, as Envoy's: /api matches /api, /api/x and /apix. */
        if (path_len < e->prefix_len || memcmp(path, e->route->path_prefix, e->prefix_len) != 0)
            continue;
        /* An unknown method has no bit and so only matches routes that
         * accept any method. */
        if (e->route->methods && !(e->route->methods & bit))
            continue;
        m->fn = e->fn;
        m->route = e->route;
        m->fn_idx = e->fn_idx;
        m->route_idx = e->route_idx;
        return 0;
    }
    return -1;
}
