/*
 * test_egress_rules.c - the compiled egress allow list: which rule lets a
 * request through.
 *
 * Table-driven: each table row is a query and the exact rule index it must
 * get (-1 for a denial). Rule sets are written so that a matcher taking the
 * most specific rule instead of the first, or ignoring a label boundary, a
 * port, a method or a path, picks a different index. The last test holds
 * 10,000 generated rules to a naive linear scan over 100,000 queries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "egress_rules.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const uint16_t P443[] = {443};
static const uint16_t P80_443[] = {80, 443};
static const uint16_t P8443[] = {8443};
static const uint16_t P9999[] = {9999};
static const uint16_t P443_8443[] = {443, 8443};

#define HOST(nm, h, p)                                                                             \
    {                                                                                              \
        .name = nm, .host = h, .ports = p, .n_ports = N(p)                                         \
    }
#define CIDR(nm, c, p)                                                                             \
    {                                                                                              \
        .name = nm, .cidr = c, .ports = p, .n_ports = N(p)                                         \
    }

static struct egress_rules *compile_ok(const struct egress_rule_spec *s, size_t n)
{
    char err[256] = "untouched";
    struct egress_rules *r = egress_rules_compile(s, n, err, sizeof(err));

    if (r == NULL)
        print_message("unexpected error: %s\n", err);
    assert_non_null(r);
    assert_string_equal(err, "");
    assert_int_equal(egress_rules_count(r), n);
    return r;
}

struct hq {
    const char *host;
    uint16_t port;
    unsigned method;
    const char *path; /* NULL: CONNECT */
    int want;
};

static void run_host_table(const struct egress_rules *r, const struct hq *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int got = egress_rules_match_host(r, t[i].host, strlen(t[i].host), t[i].port, t[i].method,
                                          t[i].path, t[i].path ? strlen(t[i].path) : 0);
        if (got != t[i].want)
            print_message("row %zu: %s:%u %s -> %d, want %d\n", i, t[i].host, t[i].port,
                          t[i].path ? t[i].path : "(connect)", got, t[i].want);
        assert_int_equal(got, t[i].want);
    }
}

static void test_host_boundaries(void **state)
{
    static const struct egress_rule_spec s[] = {
        HOST("stripe", "api.stripe.com", P443),
        HOST("s3", "*.s3.amazonaws.com", P443),
        HOST("com", "*.com", P8443),
        HOST("example", "example.org", P80_443),
        HOST("deep", "*.a.b.c.d", P443),
        HOST("mixed", "Mixed.Example.NET", P443),
    };
    static const struct hq t[] = {
        {"api.stripe.com", 443, CFG_M_GET, "/", 0},
        {"api.stripe.com", 80, CFG_M_GET, "/", -1},
        {"stripe.com", 443, CFG_M_GET, "/", -1},
        {"xapi.stripe.com", 443, CFG_M_GET, "/", -1},
        {"pi.stripe.com", 443, CFG_M_GET, "/", -1},
        {"a.s3.amazonaws.com", 443, CFG_M_GET, "/", 1},
        {"x.y.s3.amazonaws.com", 443, CFG_M_GET, "/", 1},
        {"s3.amazonaws.com", 443, CFG_M_GET, "/", -1},
        {"evil-s3.amazonaws.com", 443, CFG_M_GET, "/", -1},
        {".s3.amazonaws.com", 443, CFG_M_GET, "/", -1},
        {"a.s3.amazonaws.com.evil.net", 443, CFG_M_GET, "/", -1},
        {"a.s3.amazonaws.co", 443, CFG_M_GET, "/", -1},
        {"com", 8443, CFG_M_GET, "/", -1},
        {"a.com", 8443, CFG_M_GET, "/", 2},
        {"x.s3.amazonaws.com", 8443, CFG_M_GET, "/", 2},
        {"api.stripe.com", 8443, CFG_M_GET, "/", 2},
        {"acom", 8443, CFG_M_GET, "/", -1},
        {"example.org", 80, CFG_M_GET, "/", 3},
        {"www.example.org", 80, CFG_M_GET, "/", -1},
        {"xample.org", 80, CFG_M_GET, "/", -1},
        {"example.or", 80, CFG_M_GET, "/", -1},
        {"example.org.", 80, CFG_M_GET, "/", -1},
        {"c.d", 443, CFG_M_GET, "/", -1},
        {"b.c.d", 443, CFG_M_GET, "/", -1},
        {"a.b.c.d", 443, CFG_M_GET, "/", -1},
        {"z.a.b.c.d", 443, CFG_M_GET, "/", 4},
        {"mixed.example.net", 443, CFG_M_GET, "/", 5},
        {"", 443, CFG_M_GET, "/", -1},
    };
    struct egress_rules *r = compile_ok(s, N(s));

    (void)state;
    run_host_table(r, t, N(t));
    /* len bounds the host: what follows is not part of it. */
    assert_int_equal(egress_rules_match_host(r, "api.stripe.comX", 14, 443, CFG_M_GET, "/", 1), 0);
    assert_int_equal(egress_rules_match_host(r, "api.stripe.com", 13, 443, CFG_M_GET, "/", 1), -1);
    assert_int_equal(egress_rules_match_host(r, NULL, 0, 443, CFG_M_GET, "/", 1), -1);
    egress_rules_free(r);
}

static void test_first_match(void **state)
{
    static const uint16_t p80[] = {80};
    static const struct egress_rule_spec s[] = {
        {.name = "narrow-post",
         .host = "api.x.com",
         .ports = P443,
         .n_ports = 1,
         .methods = CFG_M_POST},
        HOST("wild", "*.x.com", P443),
        HOST("exact", "api.x.com", P443),
        HOST("wild-deep", "*.api.x.com", P443),
        HOST("com", "*.com", P443),
        HOST("y-80", "*.y.com", p80),
        HOST("a.y", "a.y.com", P80_443),
        HOST("y-443", "*.y.com", P443),
        HOST("b.y", "b.y.com", P443),
    };
    static const struct hq t[] = {
        {"api.x.com", 443, CFG_M_POST, "/", 0},
        /* The earlier wildcard beats the later, more specific exact host. */
        {"api.x.com", 443, CFG_M_GET, "/", 1},
        {"b.api.x.com", 443, CFG_M_GET, "/", 1},
        {"x.com", 443, CFG_M_GET, "/", 4},
        {"a.y.com", 80, CFG_M_GET, "/", 5},
        {"a.y.com", 443, CFG_M_GET, "/", 4},
        {"a.y.org", 80, CFG_M_GET, "/", -1},
        {"c.y.com", 80, CFG_M_GET, "/", 5},
    };
    /* Without "*.com", the candidates of one key are tried in order. */
    static const struct egress_rule_spec s2[] = {
        HOST("y-80", "*.y.com", p80),
        HOST("a.y", "a.y.com", P443),
        HOST("y-443", "*.y.com", P443_8443),
        HOST("a.y-8443", "a.y.com", P8443),
    };
    static const struct hq t2[] = {
        {"a.y.com", 80, CFG_M_GET, "/", 0},  {"a.y.com", 443, CFG_M_GET, "/", 1},
        {"b.y.com", 443, CFG_M_GET, "/", 2}, {"a.y.com", 8443, CFG_M_GET, "/", 2},
        {"a.y.com", 81, CFG_M_GET, "/", -1},
    };
    struct egress_rules *r = compile_ok(s, N(s));

    (void)state;
    run_host_table(r, t, N(t));
    assert_string_equal(egress_rules_name(r, 0), "narrow-post");
    assert_string_equal(egress_rules_name(r, 8), "b.y");
    assert_null(egress_rules_name(r, 9));
    assert_null(egress_rules_name(r, -1));
    egress_rules_free(r);

    r = compile_ok(s2, 4);
    run_host_table(r, t2, N(t2));
    egress_rules_free(r);
}

static void test_filters(void **state)
{
    static const char *const v1[] = {"/v1/", "/health"};
    static const struct egress_rule_spec s[] = {
        {.name = "get-v1",
         .host = "h.com",
         .ports = P443_8443,
         .n_ports = 2,
         .methods = CFG_M_GET | CFG_M_HEAD,
         .paths = v1,
         .n_paths = 2},
        {.name = "post", .host = "h.com", .ports = P443, .n_ports = 1, .methods = CFG_M_POST},
    };
    static const struct hq t[] = {
        {"h.com", 443, CFG_M_GET, "/v1/x", 0},    {"h.com", 8443, CFG_M_HEAD, "/health", 0},
        {"h.com", 443, CFG_M_GET, "/healthz", 0}, /* a prefix, byte for byte */
        {"h.com", 443, CFG_M_GET, "/v1/", 0},     {"h.com", 443, CFG_M_GET, "/v1", -1},
        {"h.com", 443, CFG_M_GET, "/V1/x", -1},   {"h.com", 443, CFG_M_GET, "/v2/x", -1},
        {"h.com", 443, CFG_M_GET, "", -1},        {"h.com", 443, CFG_M_GET, "//v1/", -1},
        {"h.com", 443, CFG_M_POST, "/v1/x", 1},   {"h.com", 8443, CFG_M_POST, "/v1/x", -1},
        {"h.com", 443, CFG_M_PUT, "/v1/x", -1},   {"h.com", 443, 0, "/v1/x", -1},
        {"h.com", 80, CFG_M_GET, "/v1/x", -1},    {"h.com", 443, CFG_M_GET | CFG_M_POST, "/x", 1},
    };
    struct egress_rules *r = compile_ok(s, N(s));

    (void)state;
    run_host_table(r, t, N(t));
    /* path_len bounds the path: "/v1/x" cut to "/v1" matches no prefix. */
    assert_int_equal(egress_rules_match_host(r, "h.com", 5, 443, CFG_M_GET, "/v1/x", 3), -1);
    assert_int_equal(egress_rules_match_host(r, "h.com", 5, 443, CFG_M_GET, "/v1/x", 4), 0);
    egress_rules_free(r);
}

static void test_connect(void **state)
{
    static const char *const root[] = {"/"};
    static const struct egress_rule_spec s[] = {
        {.name = "paths",
         .host = "h.com",
         .ports = P443,
         .n_ports = 1,
         .paths = root,
         .n_paths = 1},
        {.name = "methods", .host = "h.com", .ports = P443, .n_ports = 1, .methods = CFG_M_GET},
        {.name = "net-paths",
         .cidr = "10.0.0.0/8",
         .ports = P443,
         .n_ports = 1,
         .paths = root,
         .n_paths = 1},
        HOST("plain", "h.com", P443),
        CIDR("net", "10.0.0.0/8", P443),
    };
    static const struct hq t[] = {
        {"h.com", 443, CFG_M_GET, "/", 0},
        {"h.com", 443, CFG_M_GET, "x", 1},
        {"h.com", 443, CFG_M_POST, "x", 3},
        /* CONNECT: the method argument is ignored, restricted rules skipped. */
        {"h.com", 443, 0, NULL, 3},
        {"h.com", 443, CFG_M_GET, NULL, 3},
        {"h.com", 80, 0, NULL, -1},
    };
    struct egress_rules *r = compile_ok(s, N(s));
    uint8_t a[4] = {10, 9, 8, 7};

    (void)state;
    run_host_table(r, t, N(t));
    assert_int_equal(egress_rules_match_addr(r, AF_INET, a, 443, CFG_M_GET, "/x", 2), 2);
    assert_int_equal(egress_rules_match_addr(r, AF_INET, a, 443, CFG_M_GET, NULL, 0), 4);
    egress_rules_free(r);

    /* Only restricted rules: a CONNECT is denied. */
    r = compile_ok(s, 2);
    assert_int_equal(egress_rules_match_host(r, "h.com", 5, 443, CFG_M_GET, NULL, 0), -1);
    assert_int_equal(egress_rules_match_host(r, "h.com", 5, 443, CFG_M_GET, "/", 1), 0);
    egress_rules_free(r);
}

struct aq {
    const char *addr; /* family from the text */
    uint16_t port;
    int want;
};

static void run_addr_table(const struct egress_rules *r, const struct aq *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t a[16];
        int af = strchr(t[i].addr, ':') ? AF_INET6 : AF_INET;
        assert_int_equal(inet_pton(af, t[i].addr, a), 1);
        int got = egress_rules_match_addr(r, af, a, t[i].port, CFG_M_GET, "/", 1);
        if (got != t[i].want)
            print_message("row %zu: %s port %u -> %d, want %d\n", i, t[i].addr, t[i].port, got,
                          t[i].want);
        assert_int_equal(got, t[i].want);
    }
}

static void test_cidr_v4(void **state)
{
    static const struct egress_rule_spec s[] = {
        CIDR("one", "127.0.1.0/24", P443),  CIDR("host", "10.1.2.3/32", P443),
        CIDR("net16", "10.1.0.0/16", P443), CIDR("seven", "2.0.0.0/7", P443),
        CIDR("all", "0.0.0.0/0", P9999),    CIDR("last", "255.255.255.255/32", P443),
    };
    static const struct aq t[] = {
        {"127.0.1.0", 443, 0},     {"127.0.1.255", 443, 0},     {"127.0.0.255", 443, -1},
        {"127.0.2.0", 443, -1},    {"10.1.2.3", 443, 1},        {"10.1.2.2", 443, 2},
        {"10.1.2.4", 443, 2},      {"10.1.0.0", 443, 2},        {"10.1.255.255", 443, 2},
        {"10.0.255.255", 443, -1}, {"10.2.0.0", 443, -1},       {"2.0.0.0", 443, 3},
        {"3.255.255.255", 443, 3}, {"1.255.255.255", 443, -1},  {"4.0.0.0", 443, -1},
        {"8.8.8.8", 9999, 4},      {"0.0.0.0", 9999, 4},        {"10.1.2.3", 9999, 4},
        {"8.8.8.8", 443, -1},      {"255.255.255.255", 443, 5}, {"255.255.255.254", 443, -1},
        {"::1", 9999, -1}, /* v4 rules say nothing of IPv6 */
    };
    static const struct egress_rule_spec wide_first[] = {
        CIDR("wide", "10.0.0.0/8", P443),
        CIDR("narrow", "10.1.2.0/24", P80_443),
    };
    static const struct aq t2[] = {
        {"10.1.2.5", 443, 0},
        {"10.1.2.5", 80, 1},
        {"10.1.3.5", 80, -1},
    };
    struct egress_rules *r = compile_ok(s, N(s));
    uint8_t a[4] = {10, 1, 2, 3};

    (void)state;
    run_addr_table(r, t, N(t));
    assert_int_equal(egress_rules_match_addr(r, AF_UNIX, a, 443, CFG_M_GET, "/", 1), -1);
    assert_int_equal(egress_rules_match_addr(r, AF_INET, NULL, 443, CFG_M_GET, "/", 1), -1);
    /* Host rules are not consulted for addresses, nor cidr rules for names. */
    assert_int_equal(egress_rules_match_host(r, "10.1.2.3", 8, 443, CFG_M_GET, "/", 1), -1);
    egress_rules_free(r);

    r = compile_ok(wide_first, N(wide_first));
    run_addr_table(r, t2, N(t2));
    egress_rules_free(r);
}

static void test_cidr_v6(void **state)
{
    static const struct egress_rule_spec s[] = {
        CIDR("doc", "2001:db8::/32", P443),
        CIDR("one", "::1/128", P443),
        CIDR("all6", "::/0", P9999),
        CIDR("ula", "fc00::/7", P443),
        CIDR("odd", "2001:db8:8000::/33", P80_443),
    };
    static const struct aq t[] = {
        {"2001:db8::", 443, 0},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 443, 0},
        {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 443, -1},
        {"2001:db9::", 443, -1},
        {"::1", 443, 1},
        {"::2", 443, -1},
        {"::", 443, -1},
        {"::1", 9999, 2},
        {"ffff::", 9999, 2},
        {"fc00::", 443, 3},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 443, 3},
        {"fe00::", 443, -1},
        {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 443, -1},
        {"2001:db8:8000::", 80, 4},
        {"2001:db8:7fff:ffff:ffff:ffff:ffff:ffff", 80, -1},
        {"2001:db8:ffff::1", 80, 4},
        {"::ffff:10.1.2.3", 443, -1},
        {"10.0.0.1", 9999, -1},
    };
    struct egress_rules *r = compile_ok(s, N(s));

    (void)state;
    run_addr_table(r, t, N(t));
    egress_rules_free(r);
}

struct eq {
    struct egress_rule_spec spec;
    const char *want;
};

static void test_compile_errors(void **state)
{
    static const char *const null_path[] = {"/", NULL};
    static const uint16_t p0[] = {443, 0};
    static const struct eq t[] = {
        {{.name = NULL, .host = "a.com", .ports = P443, .n_ports = 1}, "rule 0: name: empty"},
        {{.name = "", .host = "a.com", .ports = P443, .n_ports = 1}, "rule 0: name: empty"},
        {{.name = "r", .host = "a.com", .cidr = "10.0.0.0/8", .ports = P443, .n_ports = 1},
         "rule 0 (r): both host and cidr given"},
        {{.name = "r", .ports = P443, .n_ports = 1}, "rule 0 (r): neither host nor cidr given"},
        {CIDR("r", "10.1.0.0/33", P443), "rule 0 (r): cidr: bad prefix length 33"},
        {CIDR("r", "2001:db8::/129", P443), "rule 0 (r): cidr: bad prefix length 129"},
        {CIDR("r", "10.0.0.0/+8", P443), "rule 0 (r): cidr: bad prefix length +8"},
        {CIDR("r", "10.0.0.0/0x8", P443), "rule 0 (r): cidr: bad prefix length 0x8"},
        {CIDR("r", "10.0.0.0/ 8", P443), "rule 0 (r): cidr: bad prefix length  8"},
        {CIDR("r", "10.0.0.0/1000", P443), "rule 0 (r): cidr: bad prefix length 1000"},
        {CIDR("r", "10.1.2.3/16", P443),
         "rule 0 (r): cidr: host bits set in 10.1.2.3/16 (the network is 10.1.0.0/16)"},
        {CIDR("r", "0.0.0.1/0", P443),
         "rule 0 (r): cidr: host bits set in 0.0.0.1/0 (the network is 0.0.0.0/0)"},
        {CIDR("r", "3.0.0.0/7", P443),
         "rule 0 (r): cidr: host bits set in 3.0.0.0/7 (the network is 2.0.0.0/7)"},
        {CIDR("r", "2001:db8::1/32", P443),
         "rule 0 (r): cidr: host bits set in 2001:db8::1/32 (the network is 2001:db8::/32)"},
        {CIDR("r", "fd00::/7", P443),
         "rule 0 (r): cidr: host bits set in fd00::/7 (the network is fc00::/7)"},
        {CIDR("r", "10.1.0.0", P443),
         "rule 0 (r): cidr: expected address/prefix-length, got \"10.1.0.0\""},
        {CIDR("r", "10.1.0.0/", P443),
         "rule 0 (r): cidr: expected address/prefix-length, got \"10.1.0.0/\""},
        {CIDR("r", "10.1.0/16", P443), "rule 0 (r): cidr: bad address \"10.1.0\""},
        {CIDR("r", "/8", P443), "rule 0 (r): cidr: bad address \"\""},
        {CIDR("r", "example.com/8", P443), "rule 0 (r): cidr: bad address \"example.com\""},
        {CIDR("r", "2001:db8::g/32", P443), "rule 0 (r): cidr: bad address \"2001:db8::g\""},
        {HOST("r", "*", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "*.", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "**.com", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "*com", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "*.*.com", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "a.*.com", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "api*.com", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "a.com*", P443), "rule 0 (r): host: a wildcard must be of the form *.domain"},
        {HOST("r", "", P443), "rule 0 (r): host: empty"},
        {HOST("r", "a..com", P443), "rule 0 (r): host: empty label"},
        {HOST("r", "a.com.", P443), "rule 0 (r): host: empty label"},
        {HOST("r", ".a.com", P443), "rule 0 (r): host: empty label"},
        {HOST("r", "*..com", P443), "rule 0 (r): host: empty label"},
        {{.name = "r", .host = "a.com"}, "rule 0 (r): ports: empty"},
        {{.name = "r", .host = "a.com", .ports = P443, .n_ports = 0}, "rule 0 (r): ports: empty"},
        {{.name = "r", .host = "a.com", .ports = p0, .n_ports = 2}, "rule 0 (r): ports: port 0"},
        {{.name = "r", .host = "a.com", .ports = P443, .n_ports = 1, .n_paths = 1},
         "rule 0 (r): paths: missing"},
        {{.name = "r",
          .host = "a.com",
          .ports = P443,
          .n_ports = 1,
          .paths = null_path,
          .n_paths = 2},
         "rule 0 (r): paths: null path 1"},
    };

    (void)state;
    for (size_t i = 0; i < N(t); i++) {
        char err[256] = "untouched";
        struct egress_rules *r = egress_rules_compile(&t[i].spec, 1, err, sizeof(err));
        if (r != NULL || strcmp(err, t[i].want) != 0)
            print_message("row %zu: got \"%s\"\n", i, err);
        assert_null(r);
        assert_string_equal(err, t[i].want);
    }
}

static void test_compile_error_index(void **state)
{
    static const struct egress_rule_spec s[] = {
        HOST("a", "a.com", P443),
        HOST("b", "b.com", P443),
        CIDR("c", "10.0.0.0/8", P443),
        CIDR("db", "10.1.0.0/33", P443),
    };
    char err[256], small[12];

    (void)state;
    assert_null(egress_rules_compile(s, N(s), err, sizeof(err)));
    assert_string_equal(err, "rule 3 (db): cidr: bad prefix length 33");
    /* A short buffer gets a truncated, terminated message; none is fine too. */
    assert_null(egress_rules_compile(s, N(s), small, sizeof(small)));
    assert_string_equal(small, "rule 3 (db)");
    assert_null(egress_rules_compile(s, N(s), NULL, 0));
    assert_null(egress_rules_compile(NULL, 2, err, sizeof(err)));
    assert_string_equal(err, "no rules given");
}

static void test_empty(void **state)
{
    struct egress_rules *r = compile_ok(NULL, 0);
    uint8_t a[16] = {0};

    (void)state;
    assert_int_equal(egress_rules_match_host(r, "a.com", 5, 443, CFG_M_GET, "/", 1), -1);
    assert_int_equal(egress_rules_match_addr(r, AF_INET, a, 443, CFG_M_GET, "/", 1), -1);
    assert_int_equal(egress_rules_match_addr(r, AF_INET6, a, 443, CFG_M_GET, NULL, 0), -1);
    assert_null(egress_rules_name(r, 0));
    egress_rules_free(r);
    egress_rules_free(NULL);
    assert_int_equal(egress_rules_count(NULL), 0);
}

/* ---- 10,000 generated rules against a naive scan ---------------------- */

#define GEN_RULES 10000
#define GEN_QUERIES 100000

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 16) % n);
}

static const uint16_t gen_ports[][2] = {{80, 443}, {443, 443}, {8080, 8080}, {443, 8443}};
static const char *const gen_paths[][2] = {{"/a", "/b/"}, {"/a/x", "/c"}, {"/", "/"}};
static const unsigned gen_methods[] = {0, 0, CFG_M_GET, CFG_M_POST, CFG_M_GET | CFG_M_HEAD};

struct gen {
    struct egress_rule_spec spec[GEN_RULES];
    char text[GEN_RULES][48];
    char name[GEN_RULES][16];
    int af[GEN_RULES];
    uint8_t net[GEN_RULES][16];
    unsigned plen[GEN_RULES];
};

static void mask(uint8_t *a, unsigned plen, size_t nbytes)
{
    for (size_t b = 0; b < nbytes; b++) {
        unsigned keep = plen >= (b + 1) * 8 ? 8 : plen > b * 8 ? (unsigned)(plen - b * 8) : 0;
        a[b] &= (uint8_t)(0xff00u >> keep);
    }
}

static void gen_rules(struct gen *g)
{
    for (size_t i = 0; i < GEN_RULES; i++) {
        struct egress_rule_spec *s = &g->spec[i];
        uint32_t kind = rnd(4), a = rnd(20), b = rnd(400);

        snprintf(g->name[i], sizeof(g->name[i]), "r%zu", i);
        s->name = g->name[i];
        if (kind == 0) {
            snprintf(g->text[i], sizeof(g->text[i]), "h%u.d%u.example", a, b);
            s->host = g->text[i];
        } else if (kind == 1) {
            if (rnd(2))
                snprintf(g->text[i], sizeof(g->text[i]), "*.d%u.example", b);
            else
                snprintf(g->text[i], sizeof(g->text[i]), "*.h%u.d%u.example", a, b);
            s->host = g->text[i];
        } else if (kind == 2) {
            uint8_t *n = g->net[i];
            g->af[i] = AF_INET;
            n[0] = 10;
            n[1] = (uint8_t)rnd(4);
            n[2] = (uint8_t)rnd(256);
            n[3] = (uint8_t)rnd(256);
            g->plen[i] = 8 + rnd(25);
            mask(n, g->plen[i], 4);
            inet_ntop(AF_INET, n, g->text[i], sizeof(g->text[i]));
            snprintf(g->text[i] + strlen(g->text[i]), 8, "/%u", g->plen[i]);
            s->cidr = g->text[i];
        } else {
            uint8_t *n = g->net[i];
            g->af[i] = AF_INET6;
            memset(n, 0, 16);
            n[0] = 0x20, n[1] = 0x01, n[2] = 0x0d, n[3] = 0xb8;
            n[4] = (uint8_t)rnd(4);
            for (int k = 5; k < 16; k++)
                n[k] = (uint8_t)rnd(256);
            g->plen[i] = 16 + rnd(113);
            mask(n, g->plen[i], 16);
            inet_ntop(AF_INET6, n, g->text[i], sizeof(g->text[i]));
            snprintf(g->text[i] + strlen(g->text[i]), 8, "/%u", g->plen[i]);
            s->cidr = g->text[i];
        }
        s->ports = gen_ports[rnd(N(gen_ports))];
        s->n_ports = 1 + rnd(2);
        s->methods = gen_methods[rnd(N(gen_methods))];
        if (rnd(3) == 0) {
            s->paths = gen_paths[rnd(N(gen_paths))];
            s->n_paths = 1 + rnd(2);
        }
    }
}

/* The semantics written out plainly, one rule at a time. */
static bool naive_allows(const struct egress_rule_spec *s, uint16_t port, unsigned method,
                         const char *path)
{
    bool ok = false;

    for (size_t k = 0; k < s->n_ports; k++)
        ok = ok || s->ports[k] == port;
    if (!ok)
        return false;
    if (path == NULL)
        return s->methods == 0 && s->n_paths == 0;
    if (s->methods != 0 && !(s->methods & method))
        return false;
    for (size_t k = 0; k < s->n_paths; k++) {
        if (strncmp(path, s->paths[k], strlen(s->paths[k])) == 0)
            return true;
    }
    return s->n_paths == 0;
}

static int naive_host(const struct gen *g, const char *host, uint16_t port, unsigned method,
                      const char *path)
{
    size_t hl = strlen(host);

    for (size_t i = 0; i < GEN_RULES; i++) {
        const char *rh = g->spec[i].host;
        if (rh == NULL)
            continue;
        bool m;
        if (rh[0] == '*') {
            size_t sl = strlen(rh + 1); /* ".suffix" */
            m = hl >= sl + 1 && strcmp(host + hl - sl, rh + 1) == 0;
        } else {
            m = strcmp(host, rh) == 0;
        }
        if (m && naive_allows(&g->spec[i], port, method, path))
            return (int)i;
    }
    return -1;
}

static int naive_addr(const struct gen *g, int af, const uint8_t *addr, uint16_t port,
                      unsigned method, const char *path)
{
    for (size_t i = 0; i < GEN_RULES; i++) {
        if (g->spec[i].cidr == NULL || g->af[i] != af)
            continue;
        uint8_t a[16];
        size_t nb = af == AF_INET ? 4 : 16;
        memcpy(a, addr, nb);
        mask(a, g->plen[i], nb);
        if (memcmp(a, g->net[i], nb) == 0 && naive_allows(&g->spec[i], port, method, path))
            return (int)i;
    }
    return -1;
}

static void test_generated(void **state)
{
    static const uint16_t qports[] = {80, 443, 8080, 8443, 9000};
    static const char *const qpaths[] = {"/a", "/a/x/y", "/b/", "/b", "/c/d", "/", "", "/zz"};
    static const unsigned qmethods[] = {CFG_M_GET, CFG_M_POST, CFG_M_HEAD, CFG_M_PUT, 0};
    struct gen *g = calloc(1, sizeof(*g));
    char err[256];
    size_t hits = 0, misses = 0, bad = 0;

    (void)state;
    assert_non_null(g);
    rng_state = 0x9e3779b97f4a7c15ull;
    gen_rules(g);
    struct egress_rules *r = egress_rules_compile(g->spec, GEN_RULES, err, sizeof(err));
    if (r == NULL)
        print_message("unexpected error: %s\n", err);
    assert_non_null(r);

    for (size_t qi = 0; qi < GEN_QUERIES; qi++) {
        uint16_t port = qports[rnd(N(qports))];
        unsigned method = qmethods[rnd(N(qmethods))];
        const char *path = rnd(10) == 0 ? NULL : qpaths[rnd(N(qpaths))];
        size_t plen = path ? strlen(path) : 0;
        uint32_t kind = rnd(3), a = rnd(22), b = rnd(410);
        int got, want;
        char host[64];

        if (kind == 0) {
            switch (rnd(5)) {
            case 0:
                snprintf(host, sizeof(host), "h%u.d%u.example", a, b);
                break;
            case 1:
                snprintf(host, sizeof(host), "x.h%u.d%u.example", a, b);
                break;
            case 2:
                snprintf(host, sizeof(host), "d%u.example", b);
                break;
            case 3:
                snprintf(host, sizeof(host), "xh%u.d%u.example", a, b);
                break;
            default:
                snprintf(host, sizeof(host), "h%u.d%u.example.net", a, b);
                break;
            }
            got = egress_rules_match_host(r, host, strlen(host), port, method, path, plen);
            want = naive_host(g, host, port, method, path);
        } else {
            uint8_t addr[16];
            int af = kind == 1 ? AF_INET : AF_INET6;
            if (rnd(3) == 0) {
                /* Somewhere inside a random rule's network, of either family. */
                size_t ri = rnd(GEN_RULES);
                while (g->spec[ri].cidr == NULL || g->af[ri] != af)
                    ri = (ri + 1) % GEN_RULES;
                memcpy(addr, g->net[ri], 16);
                for (unsigned bit = g->plen[ri]; bit < (af == AF_INET ? 32u : 128u); bit++)
                    if (rnd(2))
                        addr[bit >> 3] |= (uint8_t)(0x80u >> (bit & 7));
            } else if (af == AF_INET) {
                addr[0] = rnd(8) ? 10 : 11;
                addr[1] = (uint8_t)rnd(5);
                addr[2] = (uint8_t)rnd(256);
                addr[3] = (uint8_t)rnd(256);
            } else {
                static const uint8_t doc[4] = {0x20, 0x01, 0x0d, 0xb8};
                memcpy(addr, doc, 4);
                addr[4] = (uint8_t)rnd(5);
                for (int k = 5; k < 16; k++)
                    addr[k] = (uint8_t)rnd(256);
            }
            got = egress_rules_match_addr(r, af, addr, port, method, path, plen);
            want = naive_addr(g, af, addr, port, method, path);
        }
        if (got != want && bad++ < 5)
            print_message("query %zu: got %d, want %d\n", qi, got, want);
        if (want >= 0)
            hits++;
        else
            misses++;
    }
    print_message("%zu hits, %zu misses\n", hits, misses);
    assert_int_equal(bad, 0);
    /* The comparison means something only if both outcomes are common. */
    assert_true(hits > GEN_QUERIES / 10);
    assert_true(misses > GEN_QUERIES / 10);
    egress_rules_free(r);
    free(g);
}

/* s in a heap buffer of exactly its length (no NUL): reading past it fails under ASan. */
static char *exact_copy(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n > 0 ? n : 1);

    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* Paths a destination could serve as another path than their prefix says. */
static void test_ambiguous_paths(void **state)
{
    static const char *const ambiguous[] = {
        "/v1/../admin",  "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/.%2e/admin", "/v1/..%2fadmin",
        "/v1/./x",       "/v1/x/../../a",    "/v1/..",           "/v1/.",          "/..",
        "/v1/..;/admin", "/v1/.;x/a",        "/v1/%2fadmin",     "/v1/%2Fadmin",   "/v1/%5cadmin",
        "/v1\\admin",    "/v1/%2e",
    };
    static const char *const plain[] = {
        "/",        "/v1/",   "/v1/a.b",       "/v1/...",   "/v1/.hidden",
        "/v1/a..b", "/v1/%2", "/v1/%2e%2e%2e", "/v1/a%20b", "/v1/;x",
        "/v1/x;..", "",       "/v1/%",         "/v1/%2",    "/v1/%e2",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(ambiguous) / sizeof(ambiguous[0]); i++) {
        char *p = exact_copy(ambiguous[i]);
        if (!egress_path_ambiguous(p, strlen(ambiguous[i])))
            fail_msg("%s: not found ambiguous", ambiguous[i]);
        free(p);
    }
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        char *p = exact_copy(plain[i]);
        if (egress_path_ambiguous(p, strlen(plain[i])))
            fail_msg("%s: found ambiguous", plain[i]);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_boundaries), cmocka_unit_test(test_first_match),
        cmocka_unit_test(test_filters),         cmocka_unit_test(test_connect),
        cmocka_unit_test(test_cidr_v4),         cmocka_unit_test(test_cidr_v6),
        cmocka_unit_test(test_compile_errors),  cmocka_unit_test(test_compile_error_index),
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_generated),
        cmocka_unit_test(test_ambiguous_paths),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
