/*
 * router.h - ingress routing: which route of which function a request
 * takes, compiled once per config so that a decision is a short scan.
 *
 * Most specific wins: exact host, then "*." wildcard host (longest suffix
 * first), then no host; then the longest path_prefix; then a route with
 * methods over one without. Host comparison ignores case, a trailing dot
 * and the port. Pure: no I/O.
 */
#ifndef FNPROXY_ROUTER_H
#define FNPROXY_ROUTER_H

#include <stddef.h>

#include "config.h"

struct router;

struct route_match {
    const struct cfg_function *fn;
    const struct cfg_route *route;
    size_t fn_idx;    /* index into config.functions */
    size_t route_idx; /* index into fn->routes */
};

/* Compiles the routes of a validated config; the config must outlive it.
 * Returns NULL only when out of memory. */
struct router *router_new(const struct config *c);
void router_free(struct router *r);

/* Finds the route for a request that arrived on listener (index into
 * config.listeners). host is the Host header as received (any case, may
 * carry ":port" or a trailing dot, may be empty); path is the request
 * target's path without the query; method is the method as on the wire.
 * Returns 0 and fills *m, or -1 when no route matches. */
int router_match(const struct router *r, size_t listener, const char *host, size_t host_len,
                 const char *path, size_t path_len, const char *method, size_t method_len,
                 struct route_match *m);

#endif
