/*
 * test_router.c - ingress routing: which route a request takes.
 *
 * Configs are written as YAML and go through config_parse(), so the tests
 * also hold the router to what the config layer stores (lower-case hosts,
 * bare IPv6 literals, "/" as the default prefix). Routes are declared in an
 * order unlike their precedence, so that a router that forgot to sort would
 * fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "router.h"

struct fixture {
    struct config *c;
    struct router *r;
};

static struct fixture *fixture_new(const char *yaml)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char err[CFG_ERR_MAX];

    assert_non_null(fx);
    if (config_parse("t.yaml", yaml, strlen(yaml), &fx->c, err, sizeof(err)) != 0)
        print_message("unexpected error: %s\n", err);
    assert_non_null(fx->c);
    fx->r = router_new(fx->c);
    assert_non_null(fx->r);
    return fx;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;

    if (fx) {
        router_free(fx->r);
        config_free(fx->c);
        free(fx);
    }
    return 0;
}

/* What route_on() gives when no route matches: a string, so that comparing
 * it with an expected name fails cleanly instead of dereferencing NULL. */
#define NO_ROUTE "(no route)"

/* The name of the route taken, or NO_ROUTE. host may be NULL. */
static const char *route_on(const struct fixture *fx, size_t listener, const char *host,
                            const char *path, const char *method)
{
    struct route_match m;

    memset(&m, 0xa5, sizeof(m));
    if (router_match(fx->r, listener, host, host ? strlen(host) : 0, path, strlen(path), method,
                     strlen(method), &m) != 0)
        return NO_ROUTE;
    assert_ptr_equal(m.fn, &fx->c->functions[m.fn_idx]);
    assert_ptr_equal(m.route, &m.fn->routes[m.route_idx]);
    return m.route->name;
}

static const char *route(const struct fixture *fx, const char *host, const char *path,
                         const char *method)
{
    return route_on(fx, 0, host, path, method);
}

#define ONE_LISTENER                                                                               \
    "listeners: [{ name: public, listen: 127.0.0.1:8080 }]\n"                                      \
    "functions:\n"                                                                                 \
    "  - name: f\n"                                                                                \
    "    endpoints: [127.0.0.1:9001]\n"                                                            \
    "    ingress:\n"                                                                               \
    "      routes:\n"

/* Least specific first in the file, to prove the order is the router's. */
static int setup_precedence(void **state)
{
    *state = fixture_new(
        ONE_LISTENER
        "        - { name: any_root, match: {} }\n"
        "        - { name: any_api, match: { path_prefix: /api } }\n"
        "        - { name: any_api_get, match: { path_prefix: /api, methods: [GET] } }\n"
        "        - { name: wild, match: { host: \"*.example.com\" } }\n"
        "        - { name: wild_api, match: { host: \"*.example.com\", path_prefix: /api } }\n"
        "        - { name: wild_long, match: { host: \"*.a.example.com\" } }\n"
        "        - { name: exact, match: { host: a.example.com } }\n"
        "        - { name: exact_api, match: { host: a.example.com, path_prefix: /api } }\n");
    return 0;
}

static void test_precedence(void **state)
{
    const struct fixture *fx = *state;

    /* Exact host first, then the longest prefix under it. */
    assert_string_equal(route(fx, "a.example.com", "/api/x", "GET"), "exact_api");
    assert_string_equal(route(fx, "a.example.com", "/x", "GET"), "exact");
    /* The longer wildcard suffix wins, even over a longer prefix. */
    assert_string_equal(route(fx, "b.a.example.com", "/api", "GET"), "wild_long");
    /* Any wildcard beats no host, even with a shorter prefix. */
    assert_string_equal(route(fx, "b.example.com", "/x", "GET"), "wild");
    assert_string_equal(route(fx, "b.example.com", "/api", "GET"), "wild_api");
    /* No host: longest prefix, then methods over none. */
    assert_string_equal(route(fx, "other.org", "/api/v1", "GET"), "any_api_get");
    assert_string_equal(route(fx, "other.org", "/api/v1", "POST"), "any_api");
    assert_string_equal(route(fx, "other.org", "/", "GET"), "any_root");
    /* A wildcard needs a label before the suffix. */
    assert_string_equal(route(fx, "example.com", "/api", "POST"), "any_api");
    assert_string_equal(route(fx, NULL, "/other", "GET"), "any_root");
}

static int setup_hosts(void **state)
{
    *state =
        fixture_new(ONE_LISTENER "        - { name: api, match: { host: API.Example.com } }\n"
                                 "        - { name: v6, match: { host: \"[::1]\" } }\n"
                                 "        - { name: v4, match: { host: 10.0.0.1 } }\n"
                                 "        - { name: wild, match: { host: \"*.example.com\" } }\n"
                                 "        - { name: v6doc, match: { host: \"2001:DB8::A\" } }\n");
    return 0;
}

static void test_host_normalisation(void **state)
{
    const struct fixture *fx = *state;
    struct route_match m;

    assert_string_equal(route(fx, "api.example.com", "/", "GET"), "api");
    assert_string_equal(route(fx, "API.EXAMPLE.COM", "/", "GET"), "api");
    assert_string_equal(route(fx, "api.example.com:8080", "/", "GET"), "api");
    assert_string_equal(route(fx, "api.example.com.", "/", "GET"), "api");
    assert_string_equal(route(fx, "Api.Example.Com.:443", "/", "GET"), "api");
    /* Only one trailing dot is the root; two is not a host name. */
    assert_string_equal(route(fx, "api.example.com..", "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "api.example.co", "/", "GET"), NO_ROUTE);
    /* Not a suffix match on the exact host: this one is left to the wildcard. */
    assert_string_equal(route(fx, "pi.example.com", "/", "GET"), "wild");

    assert_string_equal(route(fx, "[::1]:8080", "/", "GET"), "v6");
    assert_string_equal(route(fx, "[::1]", "/", "GET"), "v6");
    assert_string_equal(route(fx, "::1", "/", "GET"), "v6");
    assert_string_equal(route(fx, "[::2]:8080", "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "[::1", "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "[2001:db8::a]:80", "/", "GET"), "v6doc");
    assert_string_equal(route(fx, "[2001:DB8::A]", "/", "GET"), "v6doc");

    assert_string_equal(route(fx, "10.0.0.1", "/", "GET"), "v4");
    assert_string_equal(route(fx, "10.0.0.1:80", "/", "GET"), "v4");
    assert_string_equal(route(fx, "10.0.0.10", "/", "GET"), NO_ROUTE);

    /* host_len is honoured: the bytes after it are not part of the host. */
    assert_int_equal(router_match(fx->r, 0, "api.example.com.evil", 15, "/", 1, "GET", 3, &m), 0);
    assert_string_equal(m.route->name, "api");
    assert_int_equal(router_match(fx->r, 0, "10.0.0.1:80xyz", 11, "/", 1, "GET", 3, &m), 0);
    assert_string_equal(m.route->name, "v4");

    /* No route here takes a request without a host. */
    assert_string_equal(route(fx, "", "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, NULL, "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, ":80", "/", "GET"), NO_ROUTE);
}

static int setup_wildcards(void **state)
{
    *state =
        fixture_new(ONE_LISTENER "        - { name: wild, match: { host: \"*.example.com\" } }\n"
                                 "        - { name: fallback, match: {} }\n");
    return 0;
}

static void test_wildcards(void **state)
{
    const struct fixture *fx = *state;

    assert_string_equal(route(fx, "a.example.com", "/", "GET"), "wild");
    assert_string_equal(route(fx, "a.b.example.com", "/", "GET"), "wild");
    assert_string_equal(route(fx, "A.EXAMPLE.COM:8443", "/", "GET"), "wild");
    assert_string_equal(route(fx, "a.example.com.", "/", "GET"), "wild");
    assert_string_equal(route(fx, "example.com", "/", "GET"), "fallback");
    assert_string_equal(route(fx, ".example.com", "/", "GET"), "fallback");
    assert_string_equal(route(fx, "aexample.com", "/", "GET"), "fallback");
    assert_string_equal(route(fx, "a.example.com.evil.org", "/", "GET"), "fallback");
    assert_string_equal(route(fx, "a.example.comx", "/", "GET"), "fallback");
}

static int setup_methods(void **state)
{
    *state = fixture_new(
        ONE_LISTENER "        - { name: any, match: { path_prefix: /a } }\n"
                     "        - { name: read, match: { path_prefix: /a, methods: [GET, HEAD] } }\n"
                     "        - { name: write, match: { path_prefix: /a, methods: [POST, PUT, "
                     "DELETE, PATCH] } }\n"
                     "        - { name: only_get, match: { path_prefix: /g, methods: [GET] } }\n");
    return 0;
}

static void test_methods(void **state)
{
    const struct fixture *fx = *state;
    struct route_match m;

    assert_string_equal(route(fx, "h", "/a", "GET"), "read");
    assert_string_equal(route(fx, "h", "/a", "HEAD"), "read");
    assert_string_equal(route(fx, "h", "/a", "POST"), "write");
    assert_string_equal(route(fx, "h", "/a", "PATCH"), "write");
    assert_string_equal(route(fx, "h", "/a", "OPTIONS"), "any");
    /* Methods are case-sensitive on the wire; unknown ones only match a
     * route without methods. */
    assert_string_equal(route(fx, "h", "/a", "get"), "any");
    assert_string_equal(route(fx, "h", "/a", "PROPFIND"), "any");
    assert_string_equal(route(fx, "h", "/a", ""), "any");
    assert_string_equal(route(fx, "h", "/g", "GET"), "only_get");
    assert_string_equal(route(fx, "h", "/g", "POST"), NO_ROUTE);
    assert_string_equal(route(fx, "h", "/g", "BREW"), NO_ROUTE);
    /* method_len is honoured. */
    assert_int_equal(router_match(fx->r, 0, "h", 1, "/g", 2, "GETX", 3, &m), 0);
    assert_string_equal(m.route->name, "only_get");
    assert_int_equal(router_match(fx->r, 0, "h", 1, "/g", 2, "GETX", 4, &m), -1);
}

static void test_path_prefix(void **state)
{
    struct fixture *fx =
        fixture_new(ONE_LISTENER "        - { name: api, match: { path_prefix: /api } }\n"
                                 "        - { name: api_v1, match: { path_prefix: /api/v1/ } }\n");
    struct route_match m;

    *state = fx;
    /* Plain string prefixes, as Envoy's prefix match. */
    assert_string_equal(route(fx, "h", "/api", "GET"), "api");
    assert_string_equal(route(fx, "h", "/api/x", "GET"), "api");
    assert_string_equal(route(fx, "h", "/apix", "GET"), "api");
    assert_string_equal(route(fx, "h", "/api/v1", "GET"), "api");
    assert_string_equal(route(fx, "h", "/api/v1/", "GET"), "api_v1");
    assert_string_equal(route(fx, "h", "/api/v1/orders", "GET"), "api_v1");
    assert_string_equal(route(fx, "h", "/ap", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "h", "/API", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "h", "/", "GET"), NO_ROUTE);
    assert_string_equal(route(fx, "h", "", "GET"), NO_ROUTE);
    /* path_len is honoured. */
    assert_int_equal(router_match(fx->r, 0, "h", 1, "/api/v1/x", 7, "GET", 3, &m), 0);
    assert_string_equal(m.route->name, "api");
    assert_int_equal(router_match(fx->r, 0, "h", 1, NULL, 0, "GET", 3, &m), -1);
}

static int setup_listeners(void **state)
{
    *state = fixture_new(
        "listeners:\n"
        "  - { name: public, listen: 127.0.0.1:8080 }\n"
        "  - { name: internal, listen: 127.0.0.1:8081 }\n"
        "  - { name: idle, listen: 127.0.0.1:8082 }\n"
        "functions:\n"
        "  - name: web\n"
        "    endpoints: [127.0.0.1:9001]\n"
        "    ingress:\n"
        "      routes:\n"
        "        - { name: site, match: { listener: public } }\n"
        "        - { name: admin, match: { listener: internal, path_prefix: /admin } }\n"
        "  - name: api\n"
        "    endpoints: [127.0.0.1:9002]\n"
        "  - name: ops\n"
        "    endpoints: [127.0.0.1:9003]\n"
        "    ingress:\n"
        "      routes:\n"
        "        - { name: health, match: { listener: internal, path_prefix: /healthz } }\n"
        "        - { name: root, match: { listener: internal } }\n");
    return 0;
}

static void test_listeners(void **state)
{
    const struct fixture *fx = *state;
    struct route_match m;

    assert_string_equal(route_on(fx, 0, "h", "/admin", "GET"), "site");
    assert_string_equal(route_on(fx, 1, "h", "/admin", "GET"), "admin");
    assert_string_equal(route_on(fx, 1, "h", "/healthz", "GET"), "health");
    assert_string_equal(route_on(fx, 1, "h", "/x", "GET"), "root");
    /* A listener without routes, and one that does not exist. */
    assert_string_equal(route_on(fx, 2, "h", "/", "GET"), NO_ROUTE);
    assert_string_equal(route_on(fx, 3, "h", "/", "GET"), NO_ROUTE);
    assert_string_equal(route_on(fx, (size_t)-1, "h", "/", "GET"), NO_ROUTE);

    /* The indices point into the config. */
    assert_int_equal(router_match(fx->r, 1, "h", 1, "/healthz", 8, "GET", 3, &m), 0);
    assert_int_equal(m.fn_idx, 2);
    assert_int_equal(m.route_idx, 0);
    assert_ptr_equal(m.fn, &fx->c->functions[2]);
    assert_ptr_equal(m.route, &fx->c->functions[2].routes[0]);
    assert_int_equal(router_match(fx->r, 1, "h", 1, "/admin/x", 8, "GET", 3, &m), 0);
    assert_int_equal(m.fn_idx, 0);
    assert_int_equal(m.route_idx, 1);
}

static void test_empty(void **state)
{
    struct fixture *fx = fixture_new("workers: 1\n");
    struct route_match m;

    *state = fx;
    assert_int_equal(router_match(fx->r, 0, "h", 1, "/", 1, "GET", 3, &m), -1);
    assert_int_equal(router_match(NULL, 0, "h", 1, "/", 1, "GET", 3, &m), -1);
    router_free(NULL);
}

static void test_no_routes(void **state)
{
    struct fixture *fx = fixture_new("listeners: [{ name: a, listen: 127.0.0.1:1 }]\n"
                                     "functions: [{ name: f, endpoints: [127.0.0.1:2] }]\n");

    *state = fx;
    assert_string_equal(route(fx, "h", "/", "GET"), NO_ROUTE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_precedence, setup_precedence, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_host_normalisation, setup_hosts, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_wildcards, setup_wildcards, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_methods, setup_methods, fixture_teardown),
        cmocka_unit_test_teardown(test_path_prefix, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_listeners, setup_listeners, fixture_teardown),
        cmocka_unit_test_teardown(test_empty, fixture_teardown),
        cmocka_unit_test_teardown(test_no_routes, fixture_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
