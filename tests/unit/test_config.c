/*
 * test_config.c - the YAML configuration: every class of error with its
 * exact message (file:line:col, key path, text), the defaults, each form
 * of duration, size and address, and the example files.
 *
 * Messages are compared whole on purpose: the position and the path are
 * the product here, and a test that only checked "it failed" would pass
 * with an error that points at the wrong line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "egress_rules.h"

/* A listener and a function with one route "r0" whose map starts at 9:11;
 * tests append route keys at that indentation, or more routes. */
#define BASE                                                                                       \
    "listeners:\n"                                                                                 \
    "  - name: public\n"                                                                           \
    "    listen: 127.0.0.1:8080\n"                                                                 \
    "functions:\n"                                                                                 \
    "  - name: hello\n"                                                                            \
    "    endpoints: [127.0.0.1:9001]\n"                                                            \
    "    ingress:\n"                                                                               \
    "      routes:\n"                                                                              \
    "        - name: r0\n"

static struct config *parse_ok(const char *yaml)
{
    char err[CFG_ERR_MAX];
    struct config *c = NULL;
    int rc = config_parse("t.yaml", yaml, strlen(yaml), &c, err, sizeof(err));

    if (rc != 0)
        print_message("unexpected error: %s\nconfig:\n%s\n", err, yaml);
    assert_int_equal(rc, 0);
    assert_non_null(c);
    return c;
}

static void check_error(const char *yaml, const char *want)
{
    char err[CFG_ERR_MAX] = "";
    struct config *c = (struct config *)&c; /* must come back NULL */
    int rc = config_parse("t.yaml", yaml, strlen(yaml), &c, err, sizeof(err));

    if (rc == 0 || strcmp(err, want) != 0)
        print_message("config:\n%s\n", yaml);
    assert_int_equal(rc, -EINVAL);
    assert_null(c);
    assert_string_equal(err, want);
}

struct err_case {
    const char *yaml;
    const char *want;
};

static void check_errors(const struct err_case *cases, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        check_error(cases[i].yaml, cases[i].want);
}

#define CHECK_ERRORS(cases) check_errors(cases, sizeof(cases) / sizeof(cases[0]))

/* ---- document structure ---- */

static void test_document_errors(void **state)
{
    static const struct err_case cases[] = {
        {"", "t.yaml:1:1: expected a map of settings at the top level; the file is empty"},
        {"# nothing but a comment\n",
         "t.yaml:1:1: expected a map of settings at the top level; the file is empty"},
        {"- a\n- b\n", "t.yaml:1:1: expected a map of settings at the top level"},
        {"just words\n", "t.yaml:1:1: expected a map of settings at the top level"},
        {"workers: 2\n---\nworkers: 3\n", "t.yaml:2:1: expected one YAML document, found a second"},
        {"workers: 2\nadmin: x: y\n",
         "t.yaml:2:9: invalid YAML: mapping values are not allowed in this context"},
        {"listeners: [\n",
         "t.yaml:2:1: invalid YAML: did not find expected node content (while parsing a flow "
         "node at 2:1)"},
        {"admin: &a { listen: 127.0.0.1:9901 }\nlisteners: *a\n",
         "t.yaml:2:12: YAML aliases are not supported"},
        {"workers: 2\x01\n", "t.yaml:1:11: invalid YAML: control characters are not allowed"},
        {"workers: \"\xff\"\n", "t.yaml:1:11: invalid YAML: invalid leading UTF-8 octet"},
        {"? [a, b]\n: 1\n", "t.yaml:1:3: expected a key name, found a list"},
    };
    CHECK_ERRORS(cases);
}

static void test_nesting_limit(void **state)
{
    char yaml[200];

    /* 64 levels are allowed; the 65th opening bracket is refused. */
    memset(yaml, 0, sizeof(yaml));
    memcpy(yaml, "x: ", 3);
    memset(yaml + 3, '[', 70);
    check_error(yaml, "t.yaml:1:67: nested deeper than 64 levels");
}

static void test_size_limit(void **state)
{
    size_t len = (4u << 20) + 1;
    char *big = malloc(len), err[CFG_ERR_MAX];
    struct config *c = NULL;

    assert_non_null(big);
    memset(big, '#', len);
    assert_int_equal(config_parse("big.yaml", big, len, &c, err, sizeof(err)), -EFBIG);
    assert_null(c);
    assert_string_equal(err, "big.yaml: larger than 4 MiB");
    /* Exactly the limit is read (and is a file of nothing but a comment). */
    assert_int_equal(config_parse("big.yaml", big, len - 1, &c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err,
                        "big.yaml:1:1: expected a map of settings at the top level; the file is "
                        "empty");
    free(big);
}

/* ---- keys ---- */

static void test_unknown_keys(void **state)
{
    static const struct err_case cases[] = {
        {"foo: 1\n", "t.yaml:1:1: foo: unknown key \"foo\""},
        {"workers: 1\n\"we\\x01ird\": 2\n", "t.yaml:2:1: we?ird: unknown key \"we?ird\""},
        {"admin: { listen: 127.0.0.1:9901, port: 1 }\n",
         "t.yaml:1:34: admin.port: unknown key \"port\""},
        {"listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    bind: x\n",
         "t.yaml:4:5: listeners[0].bind: unknown key \"bind\""},
        {BASE "          match: { verb: GET }\n",
         "t.yaml:10:20: functions[0].ingress.routes[0].match.verb: unknown key \"verb\""},
        {BASE "          timeouts: 1s\n",
         "t.yaml:10:11: functions[0].ingress.routes[0].timeouts: unknown key \"timeouts\""},
        {"functions:\n  - name: f\n    endpoints: [127.0.0.1:1]\n    ingress: { route: [] }\n",
         "t.yaml:4:16: functions[0].ingress.route: unknown key \"route\""},
        {"functions:\n  - name: f\n    endpoint: 127.0.0.1:1\n",
         "t.yaml:3:5: functions[0].endpoint: unknown key \"endpoint\""},
    };
    CHECK_ERRORS(cases);
}

#define TLS_BASE                                                                                   \
    "listeners:\n"                                                                                 \
    "  - name: public\n"                                                                           \
    "    listen: 127.0.0.1:8443\n"                                                                 \
    "    tls:\n"

static void test_tls_listener(void **state)
{
    struct config *c = parse_ok(TLS_BASE "      certificates:\n"
                                         "        - { cert: a.crt, key: a.key }\n"
                                         "        - { cert: b.crt, key: b.key }\n"
                                         "      client_ca: ca.crt\n"
                                         "      min_version: \"1.3\"\n"
                                         "      sni_strict: true\n"
                                         "      handshake_timeout: 3s\n");
    const struct cfg_listener_tls *t = c->listeners[0].tls;

    (void)state;
    assert_non_null(t);
    assert_int_equal(t->n_certificates, 2);
    assert_string_equal(t->certificates[1].cert, "b.crt");
    assert_string_equal(t->certificates[1].key, "b.key");
    assert_string_equal(t->client_ca, "ca.crt");
    assert_int_equal(t->min_version, 13);
    assert_true(t->sni_strict);
    assert_int_equal(t->handshake_timeout_ms, 3000);
    config_free(c);

    c = parse_ok(TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n");
    t = c->listeners[0].tls;
    assert_null(t->client_ca);
    assert_int_equal(t->min_version, 12);
    assert_false(t->sni_strict);
    assert_int_equal(t->handshake_timeout_ms, 10000);
    config_free(c);

    static const struct err_case cases[] = {
        {TLS_BASE "      client_ca: ca.crt\n",
         "t.yaml:5:7: listeners[0].tls: missing required key \"certificates\""},
        {TLS_BASE "      certificates: []\n",
         "t.yaml:5:21: listeners[0].tls.certificates: expected a non-empty list of { cert, key }"},
        {TLS_BASE "      certificates: [{ cert: a.crt }]\n",
         "t.yaml:5:22: listeners[0].tls.certificates[0]: missing required key \"key\""},
        {TLS_BASE "      certificates: [{ cert: a.crt, key: a.key, pass: x }]\n",
         "t.yaml:5:49: listeners[0].tls.certificates[0].pass: unknown key \"pass\""},
        {TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n      min_version: \"1.1\"\n",
         "t.yaml:6:20: listeners[0].tls.min_version: expected \"1.2\" or \"1.3\""},
        {TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n      sni_strict: yes\n",
         "t.yaml:6:19: listeners[0].tls.sni_strict: expected true or false"},
        {TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n      ciphers: x\n",
         "t.yaml:6:7: listeners[0].tls.ciphers: unknown key \"ciphers\""},
    };
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_allowed_clients_and_upstream_tls(void **state)
{
    struct config *c =
        parse_ok(TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n"
                          "      client_ca: ca.crt\n"
                          "functions:\n"
                          "  - name: hello\n"
                          "    endpoints: [127.0.0.1:9001]\n"
                          "    upstream_tls: { ca: up.crt, server_name: Fn.Internal }\n"
                          "    ingress:\n"
                          "      allowed_clients: [\"spiffe://x/fn/a\", b]\n"
                          "      routes: [{ name: r, match: { path_prefix: / } }]\n");
    const struct cfg_function *f = &c->functions[0];

    (void)state;
    assert_int_equal(f->n_allowed_clients, 2);
    assert_string_equal(f->allowed_clients[0], "spiffe://x/fn/a");
    assert_string_equal(f->upstream_tls->ca, "up.crt");
    assert_string_equal(f->upstream_tls->server_name, "fn.internal");
    config_free(c);

    static const struct err_case cases[] = {
        {BASE "      allowed_clients: [a]\n",
         "t.yaml:7:5: functions[0]: ingress.allowed_clients needs tls.client_ca on listener "
         "\"public\" (route r0)"},
        {BASE "      allowed_clients: []\n",
         "t.yaml:10:24: functions[0].ingress.allowed_clients: expected a non-empty list of client "
         "identities"},
        {"functions:\n  - name: f\n    endpoints: [\"unix:/tmp/f.sock\"]\n    upstream_tls: {}\n",
         "t.yaml:4:5: functions[0]: server_name is required with unix endpoints"},
        {"functions:\n  - name: f\n    endpoints: [127.0.0.1:1]\n    upstream_tls: { sni: x }\n",
         "t.yaml:4:21: functions[0].upstream_tls.sni: unknown key \"sni\""},
    };
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_duplicate_keys(void **state)
{
    static const struct err_case cases[] = {
        {"workers: 1\nworkers: 2\n",
         "t.yaml:2:1: workers: duplicate key \"workers\" (first at t.yaml:1:1)"},
        {"listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    name: b\n",
         "t.yaml:4:5: listeners[0].name: duplicate key \"name\" (first at t.yaml:2:5)"},
        {BASE "          match: { path_prefix: /a, path_prefix: /b }\n",
         "t.yaml:10:37: functions[0].ingress.routes[0].match.path_prefix: duplicate key "
         "\"path_prefix\" (first at t.yaml:10:20)"},
    };
    CHECK_ERRORS(cases);
}

static void test_missing_keys(void **state)
{
    static const struct err_case cases[] = {
        {"admin: {}\n", "t.yaml:1:8: admin: missing required key \"listen\""},
        {"listeners:\n  - listen: 127.0.0.1:1\n",
         "t.yaml:2:5: listeners[0]: missing required key \"name\""},
        {"listeners:\n  - name: a\n", "t.yaml:2:5: listeners[0]: missing required key \"listen\""},
        {"functions:\n  - endpoints: [127.0.0.1:1]\n",
         "t.yaml:2:5: functions[0]: missing required key \"name\""},
        {"functions:\n  - name: f\n", "t.yaml:2:5: functions[0]: missing required key "
                                      "\"endpoints\""},
        {BASE "        - match: {}\n",
         "t.yaml:10:11: functions[0].ingress.routes[1]: missing required key \"name\""},
    };
    CHECK_ERRORS(cases);
}

/* ---- types ---- */

static void test_wrong_types(void **state)
{
    static const struct err_case cases[] = {
        {"listeners: {}\n", "t.yaml:1:12: listeners: expected a list of listeners"},
        {"listeners:\n", "t.yaml:1:11: listeners: expected a list of listeners"},
        {"functions: f\n", "t.yaml:1:12: functions: expected a list of functions"},
        {"admin: 127.0.0.1:9901\n",
         "t.yaml:1:8: admin: expected a map like { listen: 127.0.0.1:9901 }"},
        {"listeners: [public]\n",
         "t.yaml:1:13: listeners[0]: expected a map with the listener's name and listen "
         "address"},
        {"listeners: [{name: {a: 1}, listen: 127.0.0.1:1}]\n",
         "t.yaml:1:20: listeners[0].name: expected a name: 1 to 64 characters from A-Z a-z 0-9 _ "
         ". -"},
        {"listeners:\n  - name: null\n    listen: 127.0.0.1:1\n",
         "t.yaml:2:11: listeners[0].name: expected a name: 1 to 64 characters from A-Z a-z 0-9 _ "
         ". -"},
        {"listeners:\n  - name: a\n    listen: [127.0.0.1:1]\n",
         "t.yaml:3:13: listeners[0].listen: expected IP:port"},
        {"functions: [f]\n",
         "t.yaml:1:13: functions[0]: expected a map with the function's name and endpoints"},
        {"functions: [{name: f, endpoints: 127.0.0.1:1}]\n",
         "t.yaml:1:34: functions[0].endpoints: expected a non-empty list of endpoints, like "
         "[127.0.0.1:9001]"},
        {"functions: [{name: f, endpoints: []}]\n",
         "t.yaml:1:34: functions[0].endpoints: expected a non-empty list of endpoints, like "
         "[127.0.0.1:9001]"},
        {"functions: [{name: f, endpoints: [127.0.0.1:1], ingress: [] }]\n",
         "t.yaml:1:58: functions[0].ingress: expected a map with max_body and routes"},
        {"functions: [{name: f, endpoints: [127.0.0.1:1], ingress: { routes: {} } }]\n",
         "t.yaml:1:68: functions[0].ingress.routes: expected a list of routes"},
        {BASE "          match: /api\n",
         "t.yaml:10:18: functions[0].ingress.routes[0].match: expected a map like { "
         "path_prefix: /api, methods: [GET] }"},
        {BASE "        - just-a-name\n",
         "t.yaml:10:11: functions[0].ingress.routes[1]: expected a map with the route's name "
         "and match"},
        {BASE "          timeout: { s: 1 }\n",
         "t.yaml:10:20: functions[0].ingress.routes[0].timeout: expected a duration like 10s"},
        {BASE "          timeout:\n",
         "t.yaml:10:19: functions[0].ingress.routes[0].timeout: expected a duration like 10s"},
        {BASE "      max_body: [1]\n",
         "t.yaml:10:17: functions[0].ingress.max_body: expected a size like 16KiB"},
    };
    CHECK_ERRORS(cases);
}

/* ---- workers, durations, sizes ---- */

static void test_workers(void **state)
{
    static const struct {
        const char *text;
        unsigned want;
    } good[] = {{"auto", 0}, {"1", 1}, {"8", 8}, {"64", 64}, {"\"4\"", 4}};
    static const char *const bad[] = {
        "0", "65", "-1", "two", "Auto", "1.5", "\"4 \"", "\"\"", "99999999999999999999999", "[2]"};
    char yaml[128], want[128];
    struct config *c;
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), "workers: %s\n", good[i].text);
        c = parse_ok(yaml);
        assert_int_equal(c->workers, good[i].want);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "workers: %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "t.yaml:1:10: workers: expected auto or a number from 1 "
                 "to %d",
                 CFG_MAX_WORKERS);
        check_error(yaml, want);
    }
}

/* Limits are said, not silent: one more listener or endpoint than fnproxy
 * can serve is a config error naming the list, so --check refuses what
 * start would. */
static void test_list_limits(void **state)
{
    size_t cap = 64 * 1024, len, i;
    char *yaml = malloc(cap), want[CFG_ERR_MAX];
    struct config *c;
    int n;

    assert_non_null(yaml);
    for (n = CFG_MAX_LISTENERS; n <= CFG_MAX_LISTENERS + 1; n++) {
        len = (size_t)snprintf(yaml, cap, "listeners:\n");
        for (i = 0; i < (size_t)n; i++)
            len += (size_t)snprintf(yaml + len, cap - len,
                                    "  - { name: l%zu, listen: 127.0.0.1:%zu }\n", i, 10000 + i);
        len += (size_t)snprintf(yaml + len, cap - len,
                                "functions:\n  - name: f\n    endpoints: [127.0.0.1:9]\n");
        if (n == CFG_MAX_LISTENERS) {
            c = parse_ok(yaml);
            assert_int_equal(c->n_listeners, CFG_MAX_LISTENERS);
            config_free(c);
        } else {
            snprintf(want, sizeof(want), "t.yaml:2:3: listeners: at most %d listeners",
                     CFG_MAX_LISTENERS);
            check_error(yaml, want);
        }
    }
    for (n = CFG_MAX_ENDPOINTS; n <= CFG_MAX_ENDPOINTS + 1; n++) {
        len = (size_t)snprintf(yaml, cap, "functions:\n  - name: f\n    endpoints: [");
        for (i = 0; i < (size_t)n; i++)
            len += (size_t)snprintf(yaml + len, cap - len, "%s127.0.0.1:%zu", i ? ", " : "",
                                    10000 + i);
        len += (size_t)snprintf(yaml + len, cap - len, "]\n");
        if (n == CFG_MAX_ENDPOINTS) {
            c = parse_ok(yaml);
            assert_int_equal(c->functions[0].n_endpoints, CFG_MAX_ENDPOINTS);
            config_free(c);
        } else {
            snprintf(want, sizeof(want),
                     "t.yaml:3:16: functions[0].endpoints: at most %d endpoints per function",
                     CFG_MAX_ENDPOINTS);
            check_error(yaml, want);
        }
    }
    free(yaml);
}

static void test_durations(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {{"1ms", 1},           {"250ms", 250},      {"10s", 10000},
                {"2m", 120000},       {"0010s", 10000},    {"\"3s\"", 3000},
                {"86400s", 86400000}, {"1440m", 86400000}, {"86400000ms", 86400000}};
    static const struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"10", "expected a duration like 10s"},
        {"-1s", "expected a duration like 10s"},
        {"1.5s", "expected a duration like 10s"},
        {"10 s", "expected a duration like 10s"},
        {"10h", "expected a duration like 10s"},
        {"10S", "expected a duration like 10s"},
        {"10sec", "expected a duration like 10s"},
        {"s", "expected a duration like 10s"},
        {"+5s", "expected a duration like 10s"},
        {"1e3ms", "expected a duration like 10s"},
        {"\"\"", "expected a duration like 10s"},
        {"~", "expected a duration like 10s"},
        {"0s", "must be greater than zero"},
        {"0ms", "must be greater than zero"},
        {"86401s", "duration too large: at most 1440m"},
        {"1441m", "duration too large: at most 1440m"},
        {"99999999999999999999999ms", "duration too large: at most 1440m"},
        {"307445734561825861m", "duration too large: at most 1440m"},
    };
    char yaml[256], want[256];
    struct config *c;
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), "drain_timeout: %s\n", good[i].text);
        c = parse_ok(yaml);
        assert_int_equal(c->drain_timeout_ms, good[i].ms);
        config_free(c);

        snprintf(yaml, sizeof(yaml), BASE "          timeout: %s\n          connect_timeout: %s\n",
                 good[i].text, good[i].text);
        c = parse_ok(yaml);
        assert_int_equal(c->functions[0].routes[0].t.timeout_ms, good[i].ms);
        assert_int_equal(c->functions[0].routes[0].t.connect_timeout_ms, good[i].ms);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "drain_timeout: %s\n", bad[i].text);
        snprintf(want, sizeof(want), "t.yaml:1:16: drain_timeout: %s", bad[i].msg);
        check_error(yaml, want);

        snprintf(yaml, sizeof(yaml), BASE "          connect_timeout: %s\n", bad[i].text);
        snprintf(want, sizeof(want),
                 "t.yaml:10:28: functions[0].ingress.routes[0].connect_timeout: %s", bad[i].msg);
        check_error(yaml, want);

        snprintf(yaml, sizeof(yaml),
                 "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    keepalive_timeout: %s\n",
                 bad[i].text);
        snprintf(want, sizeof(want), "t.yaml:4:24: listeners[0].keepalive_timeout: %s", bad[i].msg);
        check_error(yaml, want);
    }
}

static void test_sizes(void **state)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {{"0", 0},
                {"512", 512},
                {"512B", 512},
                {"16KiB", 16384},
                {"8MiB", 8u << 20},
                {"1GiB", 1u << 30},
                {"17179869183GiB", 17179869183ull << 30},
                {"18446744073709551615", UINT64_MAX}};
    static const struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"16KB", "expected a size like 16KiB"},   {"16k", "expected a size like 16KiB"},
        {"16kib", "expected a size like 16KiB"},  {"-1", "expected a size like 16KiB"},
        {"1.5MiB", "expected a size like 16KiB"}, {"MiB", "expected a size like 16KiB"},
        {"16 KiB", "expected a size like 16KiB"}, {"1TiB", "expected a size like 16KiB"},
        {"17179869184GiB", "size too large"},     {"18446744073709551616", "size too large"},
    };
    char yaml[256], want[256];
    struct config *c;
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "      max_body: %s\n", good[i].text);
        c = parse_ok(yaml);
        assert_true(c->functions[0].max_body == good[i].bytes);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "      max_body: %s\n", bad[i].text);
        snprintf(want, sizeof(want), "t.yaml:10:17: functions[0].ingress.max_body: %s", bad[i].msg);
        check_error(yaml, want);
    }
}

static void test_max_header_bytes(void **state)
{
    static const struct {
        const char *text;
        size_t bytes;
    } good[] = {{"1KiB", 1024}, {"1024", 1024}, {"64KiB", 65536}, {"1MiB", 1u << 20}};
    static const struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"1023", "must be from 1KiB to 1MiB"},    {"0", "must be from 1KiB to 1MiB"},
        {"1025KiB", "must be from 1KiB to 1MiB"}, {"1GiB", "must be from 1KiB to 1MiB"},
        {"16KB", "expected a size like 16KiB"},
    };
    char yaml[256], want[256];
    struct config *c;
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml),
                 "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    max_header_bytes: %s\n",
                 good[i].text);
        c = parse_ok(yaml);
        assert_int_equal(c->listeners[0].max_header_bytes, good[i].bytes);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml),
                 "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    max_header_bytes: %s\n",
                 bad[i].text);
        snprintf(want, sizeof(want), "t.yaml:4:23: listeners[0].max_header_bytes: %s", bad[i].msg);
        check_error(yaml, want);
    }
}

/* ---- addresses ---- */

static void test_addresses_good(void **state)
{
    static const char yaml[] = "listeners:\n"
                               "  - { name: a, listen: 0.0.0.0:80 }\n"
                               "  - { name: b, listen: \"[::1]:65535\" }\n"
                               "  - { name: c, listen: localhost:8080 }\n"
                               "functions:\n"
                               "  - name: f\n"
                               "    endpoints:\n"
                               "      - 10.1.2.3:9001\n"
                               "      - \"[2001:db8::1]:443\"\n"
                               "      - unix:/run/fn/f.sock\n"
                               "      - localhost:1\n";
    struct config *c = parse_ok(yaml);
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;
    const struct sockaddr_un *sun;
    struct in6_addr want6;

    sin = (const struct sockaddr_in *)&c->listeners[0].listen.sa;
    assert_int_equal(c->listeners[0].listen.kind, CFG_ADDR_INET);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 80);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(c->listeners[0].listen.sa_len, sizeof(struct sockaddr_in));
    assert_string_equal(c->listeners[0].listen.text, "0.0.0.0:80");

    sin6 = (const struct sockaddr_in6 *)&c->listeners[1].listen.sa;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 65535);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));
    assert_int_equal(c->listeners[1].listen.sa_len, sizeof(struct sockaddr_in6));
    assert_string_equal(c->listeners[1].listen.text, "[::1]:65535");

    sin = (const struct sockaddr_in *)&c->listeners[2].listen.sa;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 8080);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    assert_string_equal(c->listeners[2].listen.text, "localhost:8080");

    assert_int_equal(c->functions[0].n_endpoints, 4);
    sin = (const struct sockaddr_in *)&c->functions[0].endpoints[0].sa;
    assert_int_equal(sin->sin_addr.s_addr, htonl(0x0a010203));
    assert_int_equal(ntohs(sin->sin_port), 9001);

    sin6 = (const struct sockaddr_in6 *)&c->functions[0].endpoints[1].sa;
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &want6), 1);
    assert_memory_equal(&sin6->sin6_addr, &want6, sizeof(want6));
    assert_int_equal(ntohs(sin6->sin6_port), 443);

    sun = (const struct sockaddr_un *)&c->functions[0].endpoints[2].sa;
    assert_int_equal(c->functions[0].endpoints[2].kind, CFG_ADDR_UNIX);
    assert_int_equal(sun->sun_family, AF_UNIX);
    assert_string_equal(sun->sun_path, "/run/fn/f.sock");
    assert_int_equal(c->functions[0].endpoints[2].sa_len,
                     offsetof(struct sockaddr_un, sun_path) + strlen("/run/fn/f.sock") + 1);
    assert_string_equal(c->functions[0].endpoints[2].text, "unix:/run/fn/f.sock");

    sin = (const struct sockaddr_in *)&c->functions[0].endpoints[3].sa;
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    config_free(c);
}

static void test_addresses_bad(void **state)
{
    static const struct {
        const char *text;
        const char *endpoint_msg; /* as an endpoint */
        const char *listen_msg;   /* as a listener's address */
    } cases[] = {
        {"example.com:80", "expected IP:port or unix:/path", "expected IP:port"},
        {"127.0.0.1", "expected IP:port or unix:/path", "expected IP:port"},
        {"127.0.0.1:0", "port must be from 1 to 65535", "port must be from 1 to 65535"},
        {"127.0.0.1:65536", "port must be from 1 to 65535", "port must be from 1 to 65535"},
        {"127.0.0.1:http", "port must be from 1 to 65535", "port must be from 1 to 65535"},
        {"127.0.0.1:+80", "port must be from 1 to 65535", "port must be from 1 to 65535"},
        {"\"127.0.0.1:\"", "port must be from 1 to 65535", "port must be from 1 to 65535"},
        {"256.0.0.1:80", "expected IP:port or unix:/path", "expected IP:port"},
        {"\"::1:80\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"\"[::1]\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"\"[::1]80\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"\"[fe80::1%eth0]:80\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"\"[127.0.0.1]:80\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"\":80\"", "expected IP:port or unix:/path", "expected IP:port"},
        {"unix:run/f.sock", "expected unix:/absolute/path",
         "expected IP:port; unix sockets are only for endpoints"},
        {"\"unix:\"", "expected unix:/absolute/path",
         "expected IP:port; unix sockets are only for endpoints"},
        {"unix:/f.sock", NULL, "expected IP:port; unix sockets are only for endpoints"},
    };
    char yaml[512], want[256];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].endpoint_msg) {
            snprintf(yaml, sizeof(yaml),
                     "functions:\n  - name: f\n    endpoints:\n      - 127.0.0.1:1\n      - %s\n",
                     cases[i].text);
            snprintf(want, sizeof(want), "t.yaml:5:9: functions[0].endpoints[1]: %s",
                     cases[i].endpoint_msg);
            check_error(yaml, want);
        }
        snprintf(yaml, sizeof(yaml), "listeners:\n  - name: a\n    listen: %s\n", cases[i].text);
        snprintf(want, sizeof(want), "t.yaml:3:13: listeners[0].listen: %s", cases[i].listen_msg);
        check_error(yaml, want);
        snprintf(yaml, sizeof(yaml), "admin:\n  listen: %s\n", cases[i].text);
        snprintf(want, sizeof(want), "t.yaml:2:11: admin.listen: %s", cases[i].listen_msg);
        check_error(yaml, want);
    }
}

static void test_unix_path_length(void **state)
{
    char path[200], yaml[400];
    struct config *c;
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

    /* The longest path that fits sun_path with its NUL. */
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[max] = '\0';
    snprintf(yaml, sizeof(yaml), "functions: [{ name: f, endpoints: [\"unix:%s\"] }]\n", path);
    c = parse_ok(yaml);
    assert_string_equal(((const struct sockaddr_un *)&c->functions[0].endpoints[0].sa)->sun_path,
                        path);
    config_free(c);

    path[max] = 'p';
    path[max + 1] = '\0';
    snprintf(yaml, sizeof(yaml), "functions: [{ name: f, endpoints: [\"unix:%s\"] }]\n", path);
    check_error(yaml, "t.yaml:1:36: functions[0].endpoints[0]: unix socket path too long: at "
                      "most 107 bytes");
}

/* ---- names and duplicates ---- */

static void test_names(void **state)
{
    static const char *const bad[] = {
        "\"\"",
        "a b",
        "a/b",
        "\"caf\xc3\xa9\"",
        "a:b",
        "\"a\\0b\"",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    char yaml[256];
    struct config *c;
    size_t i;

    c = parse_ok("listeners:\n"
                 "  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
                 "    listen: 127.0.0.1:1\n"
                 "  - name: A.b-c_9\n"
                 "    listen: 127.0.0.1:2\n");
    assert_int_equal(strlen(c->listeners[0].name), 64);
    assert_string_equal(c->listeners[1].name, "A.b-c_9");
    config_free(c);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "functions:\n  - name: %s\n    endpoints: [127.0.0.1:1]\n",
                 bad[i]);
        check_error(yaml, "t.yaml:2:11: functions[0].name: expected a name: 1 to 64 characters "
                          "from A-Z a-z 0-9 _ . -");
    }
}

static void test_duplicate_names(void **state)
{
    static const struct err_case cases[] = {
        {"listeners:\n"
         "  - { name: a, listen: 127.0.0.1:1 }\n"
         "  - { name: b, listen: 127.0.0.1:2 }\n"
         "  - { name: a, listen: 127.0.0.1:3 }\n",
         "t.yaml:4:13: listeners[2].name: duplicate listener name \"a\" (first at t.yaml:2:13)"},
        /* The first duplicate in file order is the one reported. */
        {"listeners:\n"
         "  - { name: b, listen: 127.0.0.1:1 }\n"
         "  - { name: a, listen: 127.0.0.1:2 }\n"
         "  - { name: a, listen: 127.0.0.1:3 }\n"
         "  - { name: b, listen: 127.0.0.1:4 }\n",
         "t.yaml:4:13: listeners[2].name: duplicate listener name \"a\" (first at t.yaml:3:13)"},
        {"listeners:\n"
         "  - { name: a, listen: 127.0.0.1:80 }\n"
         "  - { name: b, listen: 127.0.0.1:80 }\n",
         "t.yaml:3:24: listeners[1].listen: address already used by listeners[0] (t.yaml:2:24)"},
        {"listeners:\n"
         "  - { name: a, listen: 127.0.0.1:80 }\n"
         "  - { name: b, listen: localhost:80 }\n",
         "t.yaml:3:24: listeners[1].listen: address already used by listeners[0] (t.yaml:2:24)"},
        /* A wildcard address takes the port on every address. */
        {"listeners:\n"
         "  - { name: a, listen: 127.0.0.1:80 }\n"
         "  - { name: b, listen: 127.0.0.2:80 }\n"
         "  - { name: c, listen: 0.0.0.0:80 }\n",
         "t.yaml:4:24: listeners[2].listen: address already used by listeners[0] (t.yaml:2:24)"},
        {"listeners:\n"
         "  - { name: a, listen: \"[::]:80\" }\n"
         "  - { name: b, listen: 127.0.0.2:81 }\n"
         "  - { name: c, listen: 127.0.0.2:80 }\n",
         "t.yaml:4:24: listeners[2].listen: address already used by listeners[0] (t.yaml:2:24)"},
        {"listeners:\n"
         "  - { name: a, listen: 127.0.0.1:9901 }\n"
         "admin: { listen: 127.0.0.1:9901 }\n",
         "t.yaml:3:18: admin.listen: address already used by listeners[0] (t.yaml:2:24)"},
        {"admin: { listen: 0.0.0.0:9901 }\n"
         "listeners:\n"
         "  - { name: a, listen: 127.0.0.1:9902 }\n"
         "  - { name: b, listen: 127.0.0.1:9901 }\n",
         "t.yaml:1:18: admin.listen: address already used by listeners[1] (t.yaml:4:24)"},
        {"functions:\n"
         "  - { name: f, endpoints: [127.0.0.1:1] }\n"
         "  - { name: g, endpoints: [127.0.0.1:1] }\n"
         "  - { name: f, endpoints: [127.0.0.1:1] }\n",
         "t.yaml:4:13: functions[2].name: duplicate function name \"f\" (first at t.yaml:2:13)"},
        {BASE "        - name: r1\n"
              "          match: { path_prefix: /x }\n"
              "        - name: r0\n"
              "          match: { path_prefix: /y }\n",
         "t.yaml:12:17: functions[0].ingress.routes[2].name: duplicate route name \"r0\" (first "
         "at t.yaml:9:17)"},
    };
    struct config *c;

    CHECK_ERRORS(cases);

    /* Same addresses on different ports, or different addresses on one port,
     * and route names repeated in different functions, are all fine. */
    c = parse_ok("admin: { listen: 127.0.0.1:9901 }\n"
                 "listeners:\n"
                 "  - { name: a, listen: 127.0.0.1:80 }\n"
                 "  - { name: b, listen: 127.0.0.2:80 }\n"
                 "  - { name: c, listen: \"[::1]:80\" }\n"
                 "  - { name: d, listen: 0.0.0.0:81 }\n"
                 "functions:\n"
                 "  - name: f\n"
                 "    endpoints: [127.0.0.1:1]\n"
                 "    ingress: { routes: [{ name: r, match: { listener: a } }] }\n"
                 "  - name: g\n"
                 "    endpoints: [127.0.0.1:1]\n"
                 "    ingress: { routes: [{ name: r, match: { listener: b } }] }\n");
    assert_int_equal(c->n_listeners, 4);
    assert_int_equal(c->n_functions, 2);
    config_free(c);
}

/* ---- match ---- */

static void test_match_listener(void **state)
{
    static const char two[] = "listeners:\n"
                              "  - { name: a, listen: 127.0.0.1:1 }\n"
                              "  - { name: b, listen: 127.0.0.1:2 }\n"
                              "functions:\n"
                              "  - name: f\n"
                              "    endpoints: [127.0.0.1:9]\n"
                              "    ingress:\n"
                              "      routes:\n";
    static const char none[] = "functions:\n"
                               "  - name: f\n"
                               "    endpoints: [127.0.0.1:9]\n"
                               "    ingress:\n"
                               "      routes:\n";
    char yaml[1024];
    struct config *c;

    snprintf(yaml, sizeof(yaml), "%s        - { name: r, match: { listener: b } }\n", two);
    c = parse_ok(yaml);
    assert_int_equal(c->functions[0].routes[0].listener, 1);
    config_free(c);

    /* Listeners may come after the functions that name them. */
    c = parse_ok("functions:\n"
                 "  - { name: f, endpoints: [127.0.0.1:9],\n"
                 "      ingress: { routes: [{ name: r, match: { listener: z } }] } }\n"
                 "listeners:\n"
                 "  - { name: y, listen: 127.0.0.1:1 }\n"
                 "  - { name: z, listen: 127.0.0.1:2 }\n");
    assert_int_equal(c->functions[0].routes[0].listener, 1);
    config_free(c);

    c = parse_ok(BASE);
    assert_int_equal(c->functions[0].routes[0].listener, 0);
    config_free(c);

    snprintf(yaml, sizeof(yaml), "%s        - { name: r, match: { listener: c } }\n", two);
    check_error(yaml, "t.yaml:9:41: functions[0].ingress.routes[0].match.listener: no listener "
                      "named \"c\"");
    snprintf(yaml, sizeof(yaml), "%s        - { name: r, match: { listener: [a] } }\n", two);
    check_error(yaml, "t.yaml:9:41: functions[0].ingress.routes[0].match.listener: expected a "
                      "listener name");
    snprintf(yaml, sizeof(yaml), "%s        - { name: r, match: { path_prefix: /a } }\n", two);
    check_error(yaml, "t.yaml:9:29: functions[0].ingress.routes[0].match.listener: required "
                      "when there are several listeners");
    snprintf(yaml, sizeof(yaml), "%s        - name: r\n", two);
    check_error(yaml, "t.yaml:9:11: functions[0].ingress.routes[0].match.listener: required "
                      "when there are several listeners");
    snprintf(yaml, sizeof(yaml), "%s        - name: r\n", none);
    check_error(yaml, "t.yaml:6:11: functions[0].ingress.routes[0].match.listener: no listeners "
                      "are configured");
    snprintf(yaml, sizeof(yaml), "%s        - { name: r, match: { listener: a } }\n", none);
    check_error(yaml, "t.yaml:6:41: functions[0].ingress.routes[0].match.listener: no listener "
                      "named \"a\"");
}

static void test_match_host(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } good[] = {
        {"api.example.com", "api.example.com"},
        {"API.Example.COM.", "api.example.com"},
        {"\"*.Example.com\"", "*.example.com"},
        {"\"*.example.com.\"", "*.example.com"},
        {"\"*.com\"", "*.com"},
        {"10.0.0.1", "10.0.0.1"},
        {"\"[::1]\"", "::1"},
        {"\"::1\"", "::1"},
        {"\"[2001:DB8::A]\"", "2001:db8::a"},
        {"my_host-1", "my_host-1"},
        {"localhost", "localhost"},
    };
    static const struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"api.example.com:8080", "expected a host without a port"},
        {"\"[::1]:8080\"", "expected a host without a port"},
        {"\"a*.example.com\"", "the * wildcard must be the whole first label, like *.example.com"},
        {"\"*.*.example.com\"", "the * wildcard must be the whole first label, like *.example.com"},
        {"\"a.*.com\"", "the * wildcard must be the whole first label, like *.example.com"},
        {"\"*\"", "the * wildcard must be the whole first label, like *.example.com"},
        {"\"*.\"", "the * wildcard must be the whole first label, like *.example.com"},
        {"\"a b.com\"", "expected a host like api.example.com or *.example.com"},
        {"a..b", "expected a host like api.example.com or *.example.com"},
        {".a.b", "expected a host like api.example.com or *.example.com"},
        {"\".\"", "expected a host like api.example.com or *.example.com"},
        {"\"\"", "expected a host like api.example.com or *.example.com"},
        {"a/b", "expected a host like api.example.com or *.example.com"},
        {"\"[::1\"", "expected a host like api.example.com or *.example.com"},
        {"\"[nope]\"", "expected a host like api.example.com or *.example.com"},
        {"\"a:b:c\"", "expected a host like api.example.com or *.example.com"},
        {"[a]", "expected a host like api.example.com or *.example.com"},
        {"a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.c",
         "expected a host like api.example.com or *.example.com"},
    };
    char yaml[512], want[256];
    struct config *c;
    size_t i;

    c = parse_ok(BASE);
    assert_null(c->functions[0].routes[0].host);
    config_free(c);
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "          match: { host: %s }\n", good[i].text);
        c = parse_ok(yaml);
        assert_string_equal(c->functions[0].routes[0].host, good[i].want);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "          match: { host: %s }\n", bad[i].text);
        snprintf(want, sizeof(want), "t.yaml:10:26: functions[0].ingress.routes[0].match.host: %s",
                 bad[i].msg);
        check_error(yaml, want);
    }
}

static void test_match_path_prefix(void **state)
{
    static const char *const good[] = {"/", "/api", "/api/", "/a%20b", "/v1/orders;x=1"};
    static const char *const bad[] = {"api",      "\"\"",       "\"/a b\"",         "\"/a?b\"",
                                      "\"/a#b\"", "\"/a\\tb\"", "\"/caf\xc3\xa9\"", "[/a]"};
    char yaml[512];
    struct config *c;
    size_t i;

    c = parse_ok(BASE);
    assert_string_equal(c->functions[0].routes[0].path_prefix, "/");
    config_free(c);
    c = parse_ok(BASE "          match: { host: a.com }\n");
    assert_string_equal(c->functions[0].routes[0].path_prefix, "/");
    config_free(c);
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "          match: { path_prefix: %s }\n", good[i]);
        c = parse_ok(yaml);
        assert_string_equal(c->functions[0].routes[0].path_prefix, good[i]);
        config_free(c);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), BASE "          match: { path_prefix: %s }\n", bad[i]);
        check_error(yaml, "t.yaml:10:33: functions[0].ingress.routes[0].match.path_prefix: "
                          "expected a path like /api: ASCII, starting with /, without spaces, ? "
                          "or #");
    }
}

static void test_match_methods(void **state)
{
    static const struct err_case cases[] = {
        {BASE "          match: { methods: [GET, get] }\n",
         "t.yaml:10:35: functions[0].ingress.routes[0].match.methods[1]: unknown method \"get\": "
         "expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or TRACE"},
        {BASE "          match: { methods: [CONNECT] }\n",
         "t.yaml:10:30: functions[0].ingress.routes[0].match.methods[0]: unknown method "
         "\"CONNECT\": expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or TRACE"},
        {BASE "          match: { methods: [[GET]] }\n",
         "t.yaml:10:30: functions[0].ingress.routes[0].match.methods[0]: unknown method "
         "\"[...]\": expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or TRACE"},
        {BASE "          match: { methods: [GET, POST, GET] }\n",
         "t.yaml:10:41: functions[0].ingress.routes[0].match.methods[2]: duplicate method GET "
         "(first at t.yaml:10:30)"},
        {BASE "          match: { methods: [] }\n",
         "t.yaml:10:29: functions[0].ingress.routes[0].match.methods: expected a non-empty list "
         "of methods, like [GET, POST]"},
        {BASE "          match: { methods: GET }\n",
         "t.yaml:10:29: functions[0].ingress.routes[0].match.methods: expected a non-empty list "
         "of methods, like [GET, POST]"},
    };
    struct config *c;

    CHECK_ERRORS(cases);
    c = parse_ok(BASE "          match:\n"
                      "            methods:\n"
                      "              - GET\n"
                      "              - HEAD\n"
                      "              - POST\n"
                      "              - PUT\n"
                      "              - DELETE\n"
                      "              - PATCH\n"
                      "              - OPTIONS\n"
                      "              - TRACE\n");
    assert_int_equal(c->functions[0].routes[0].methods, 0xff);
    config_free(c);
    c = parse_ok(BASE "          match: { methods: [POST, GET] }\n");
    assert_int_equal(c->functions[0].routes[0].methods, CFG_M_GET | CFG_M_POST);
    config_free(c);
}

/* ---- routes that can never match ---- */

static void test_shadowed_routes(void **state)
{
    static const struct err_case cases[] = {
        /* Two catch-alls. */
        {BASE "        - name: r1\n",
         "t.yaml:10:11: functions[0].ingress.routes[1]: never matches: shadowed by "
         "functions[0].ingress.routes[0] (t.yaml:9:11)"},
        /* Across functions, with hosts equal only once normalised. */
        {BASE "          match: { host: a.example.com, path_prefix: /x }\n"
              "  - name: other\n"
              "    endpoints: [127.0.0.1:9002]\n"
              "    ingress:\n"
              "      routes:\n"
              "        - name: r0\n"
              "          match: { listener: public, host: A.Example.COM., path_prefix: /x }\n",
         "t.yaml:15:11: functions[1].ingress.routes[0]: never matches: shadowed by "
         "functions[0].ingress.routes[0] (t.yaml:9:11)"},
        /* Every method taken by one earlier route. */
        {BASE "          match: { methods: [GET, POST] }\n"
              "        - name: r1\n"
              "          match: { methods: [POST] }\n",
         "t.yaml:11:11: functions[0].ingress.routes[1]: never matches: shadowed by "
         "functions[0].ingress.routes[0] (t.yaml:9:11)"},
        /* Every method taken, by several earlier routes. */
        {BASE "          match: { methods: [GET] }\n"
              "        - name: r1\n"
              "          match: { methods: [PUT] }\n"
              "        - name: r2\n"
              "          match: { methods: [POST] }\n"
              "        - name: r3\n"
              "          match: { methods: [POST, GET] }\n",
         "t.yaml:15:11: functions[0].ingress.routes[3]: never matches: shadowed by "
         "functions[0].ingress.routes[0] (t.yaml:9:11) and functions[0].ingress.routes[2] "
         "(t.yaml:13:11)"},
        /* Some methods taken. */
        {BASE "          match: { methods: [GET, POST] }\n"
              "        - name: r1\n"
              "          match: { methods: [PUT, POST] }\n",
         "t.yaml:11:11: functions[0].ingress.routes[1]: never matches for POST: taken by "
         "functions[0].ingress.routes[0] (t.yaml:9:11)"},
        /* The earliest offender in the file is reported, whatever the group. */
        {BASE "          match: { path_prefix: /b }\n"
              "        - name: r1\n"
              "          match: { path_prefix: /a }\n"
              "        - name: r2\n"
              "          match: { path_prefix: /a }\n"
              "        - name: r3\n"
              "          match: { path_prefix: /b }\n",
         "t.yaml:13:11: functions[0].ingress.routes[2]: never matches: shadowed by "
         "functions[0].ingress.routes[1] (t.yaml:11:11)"},
    };
    struct config *c;

    CHECK_ERRORS(cases);

    /* These all coexist: a route with methods beside one without; disjoint
     * methods; the same match on other listeners, hosts or prefixes; a
     * wildcard beside the exact host. */
    c = parse_ok("listeners:\n"
                 "  - { name: a, listen: 127.0.0.1:1 }\n"
                 "  - { name: b, listen: 127.0.0.1:2 }\n"
                 "functions:\n"
                 "  - name: f\n"
                 "    endpoints: [127.0.0.1:9]\n"
                 "    ingress:\n"
                 "      routes:\n"
                 "        - { name: r0, match: { listener: a } }\n"
                 "        - { name: r1, match: { listener: a, methods: [GET] } }\n"
                 "        - { name: r2, match: { listener: a, methods: [POST, PUT] } }\n"
                 "        - { name: r3, match: { listener: b } }\n"
                 "        - { name: r4, match: { listener: a, path_prefix: /x } }\n"
                 "        - { name: r5, match: { listener: a, host: x.com } }\n"
                 "        - { name: r6, match: { listener: a, host: \"*.x.com\" } }\n"
                 "        - { name: r7, match: { listener: a, host: y.x.com } }\n"
                 "        - { name: r8, match: { listener: a, path_prefix: /x/ } }\n"
                 "  - name: g\n"
                 "    endpoints: [127.0.0.1:9]\n"
                 "    ingress:\n"
                 "      routes:\n"
                 "        - { name: r0, match: { listener: a, methods: [DELETE] } }\n");
    assert_int_equal(c->functions[0].n_routes, 9);
    config_free(c);
}

/* ---- egress ---- */

/* A listener and a function "app" whose egress allow list is open at line
 * 10: EG_RULE puts one flow-map rule there, its "{" at 10:11. */
#define EG_BASE                                                                                    \
    "listeners:\n"                                                                                 \
    "  - name: public\n"                                                                           \
    "    listen: 127.0.0.1:8080\n"                                                                 \
    "functions:\n"                                                                                 \
    "  - name: app\n"                                                                              \
    "    endpoints: [127.0.0.1:9001]\n"                                                            \
    "    egress:\n"                                                                                \
    "      listen: 127.0.0.1:15001\n"                                                              \
    "      allow:\n"
#define EG_RULE(keys) EG_BASE "        - { " keys " }\n"
/* A function "app" whose egress map starts at 4:13, after "    egress: ". */
#define EG_FN "functions:\n  - name: app\n    endpoints: [127.0.0.1:9001]\n    egress: "

/* Timeouts and retries of a route (egress rules share the parser). */
static void test_route_retries(void **state)
{
    struct config *c = parse_ok(BASE "          timeout: 10s\n"
                                     "          per_try_timeout: 3s\n"
                                     "          connect_timeout: 300ms\n"
                                     "          retries:\n"
                                     "            max: 3\n"
                                     "            on: [connect-failure, reset, gateway-error, "
                                     "per-try-timeout, 429, 409]\n"
                                     "            backoff: { base: 10ms, max: 1s }\n"
                                     "            budget: { ratio: 0.125, min_per_s: 7 }\n"
                                     "            replay_buffer: 128KiB\n"
                                     "        - name: defaults\n"
                                     "          match: { path_prefix: /d }\n"
                                     "          timeout: 4s\n");
    const struct cfg_route *r = &c->functions[0].routes[0], *d = &c->functions[0].routes[1];
    (void)state;

    assert_int_equal(r->t.timeout_ms, 10000);
    assert_int_equal(r->t.per_try_timeout_ms, 3000);
    assert_int_equal(r->t.idle_timeout_ms, 10000); /* idle_timeout defaults to timeout */
    assert_int_equal(r->t.connect_timeout_ms, 300);
    assert_int_equal(r->retries.max, 3);
    assert_int_equal(r->retries.on, RETRY_ON_CONNECT_FAILURE | RETRY_ON_RESET |
                                        RETRY_ON_GATEWAY_ERROR | RETRY_ON_PER_TRY_TIMEOUT);
    assert_int_equal(r->retries.n_statuses, 2);
    assert_int_equal(r->retries.statuses[0], 429);
    assert_int_equal(r->retries.statuses[1], 409);
    assert_int_equal(r->retries.backoff_base_ms, 10);
    assert_int_equal(r->retries.backoff_max_ms, 1000);
    assert_int_equal(r->retries.budget_permille, 125);
    assert_int_equal(r->retries.budget_min_per_s, 7);
    assert_int_equal(r->retries.replay_max, 128 << 10);
    /* The defaults (README): max 2 on connect-failure, 25ms..250ms, 20% + 5/s, 64 KiB. */
    assert_int_equal(d->t.timeout_ms, 4000);
    assert_int_equal(d->t.per_try_timeout_ms, 0);
    assert_int_equal(d->t.idle_timeout_ms, 4000);
    assert_int_equal(d->t.connect_timeout_ms, 1000);
    assert_int_equal(d->retries.max, 2);
    assert_int_equal(d->retries.on, RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(d->retries.n_statuses, 0);
    assert_int_equal(d->retries.backoff_base_ms, 25);
    assert_int_equal(d->retries.backoff_max_ms, 250);
    assert_int_equal(d->retries.budget_permille, 200);
    assert_int_equal(d->retries.budget_min_per_s, 5);
    assert_int_equal(d->retries.replay_max, 64 << 10);
    config_free(c);

    c = parse_ok(EG_RULE("name: a, host: a.com, ports: [80], idle_timeout: 2s, "
                         "retries: { max: 0, budget: { ratio: 1 } }"));
    const struct cfg_egress_rule *e = &c->functions[0].egress->allow[0];
    assert_int_equal(e->t.timeout_ms, 15000);
    assert_int_equal(e->t.idle_timeout_ms, 2000);
    assert_int_equal(e->t.connect_timeout_ms, 5000);
    assert_int_equal(e->retries.max, 0);
    assert_int_equal(e->retries.budget_permille, 1000);
    config_free(c);
}

static void test_route_retries_errors(void **state)
{
#define R BASE "          retries: "
    static const struct err_case cases[] = {
        {R "3\n", "t.yaml:10:20: functions[0].ingress.routes[0].retries: expected a map like "
                  "{ max: 2, on: [connect-failure, reset] }"},
        {R "{ max: 11 }\n", "t.yaml:10:27: functions[0].ingress.routes[0].retries.max: expected a "
                            "number from 0 to 10"},
        {R "{ max: -1 }\n", "t.yaml:10:27: functions[0].ingress.routes[0].retries.max: expected a "
                            "number from 0 to 10"},
        {R "{ on: [] }\n", "t.yaml:10:26: functions[0].ingress.routes[0].retries.on: expected a "
                           "list like [connect-failure, reset, 503]"},
        {R "{ on: [reset, 5xxx] }\n",
         "t.yaml:10:34: functions[0].ingress.routes[0].retries.on[1]: expected connect-failure, "
         "refused, reset, gateway-error, 5xx, retriable-4xx, per-try-timeout or a status code "
         "like 503"},
        {R "{ on: [600] }\n",
         "t.yaml:10:27: functions[0].ingress.routes[0].retries.on[0]: expected connect-failure, "
         "refused, reset, gateway-error, 5xx, retriable-4xx, per-try-timeout or a status code "
         "like 503"},
        {R "{ backoff: { base: 1s, max: 10ms } }\n",
         "t.yaml:10:31: functions[0].ingress.routes[0].retries.backoff: base (1000ms) is greater "
         "than max (10ms)"},
        {R "{ backoff: { base: 0ms } }\n",
         "t.yaml:10:39: functions[0].ingress.routes[0].retries.backoff.base: must be greater than "
         "zero"},
        {R "{ budget: { ratio: 1.5 } }\n",
         "t.yaml:10:39: functions[0].ingress.routes[0].retries.budget.ratio: expected a ratio "
         "from 0 to 1, like 0.2"},
        {R "{ budget: { ratio: 0.2x } }\n",
         "t.yaml:10:39: functions[0].ingress.routes[0].retries.budget.ratio: expected a ratio "
         "from 0 to 1, like 0.2"},
        {R "{ budget: { ratio: 0.1234 } }\n",
         "t.yaml:10:39: functions[0].ingress.routes[0].retries.budget.ratio: expected a ratio "
         "from 0 to 1, like 0.2"},
        {R "{ budget: { min_per_s: 10001 } }\n",
         "t.yaml:10:43: functions[0].ingress.routes[0].retries.budget.min_per_s: expected a "
         "number from 0 to 10000"},
        {R "{ replay_buffer: 17MiB }\n",
         "t.yaml:10:37: functions[0].ingress.routes[0].retries.replay_buffer: at most 16MiB"},
        {R "{ tries: 3 }\n",
         "t.yaml:10:22: functions[0].ingress.routes[0].retries.tries: unknown key \"tries\""},
        {BASE "          per_try_timeout: 0s\n",
         "t.yaml:10:28: functions[0].ingress.routes[0].per_try_timeout: must be greater than "
         "zero"},
        {BASE "          idle_timeout: soon\n",
         "t.yaml:10:25: functions[0].ingress.routes[0].idle_timeout: expected a duration like "
         "10s"},
    };
#undef R
    (void)state;
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_min_client_rate(void **state)
{
    struct config *c = parse_ok("listeners:\n"
                                "  - { name: a, listen: 127.0.0.1:1 }\n"
                                "  - { name: b, listen: 127.0.0.1:2, min_client_rate: 64KiB }\n"
                                "  - { name: c, listen: 127.0.0.1:3, min_client_rate: 0 }\n");
    (void)state;

    assert_int_equal(c->listeners[0].min_client_rate, 1024);
    assert_int_equal(c->listeners[1].min_client_rate, 64 << 10);
    assert_int_equal(c->listeners[2].min_client_rate, 0);
    config_free(c);
    check_error("listeners:\n  - { name: a, listen: 127.0.0.1:1, min_client_rate: fast }\n",
                "t.yaml:2:54: listeners[0].min_client_rate: expected a size like 16KiB");
    check_error("listeners:\n  - { name: a, listen: 127.0.0.1:1, min_client_rate: 2GiB }\n",
                "t.yaml:2:54: listeners[0].min_client_rate: at most 1GiB (a second)");
}

static void test_fault(void **state)
{
    struct config *c = parse_ok(BASE "          fault: { delay: { percent: 12.5, duration: 100ms },"
                                     " abort: { percent: 0.001, status: 503 } }\n");
    const struct cfg_fault *f = &c->functions[0].routes[0].fault;
    (void)state;

    assert_int_equal(f->delay_share, 12500);
    assert_int_equal(f->delay_ms, 100);
    assert_int_equal(f->abort_share, 1);
    assert_int_equal(f->abort_status, 503);
    config_free(c);
    c = parse_ok(EG_RULE("name: a, host: a.com, ports: [80], fault: { abort: { percent: 100, "
                         "status: 429 } }"));
    assert_int_equal(c->functions[0].egress->allow[0].fault.abort_share, 100000);
    assert_int_equal(c->functions[0].egress->allow[0].fault.delay_share, 0);
    config_free(c);

#define R BASE "          fault: "
    static const struct err_case cases[] = {
        {R "{ abort: { percent: 101, status: 503 } }\n",
         "t.yaml:10:38: functions[0].ingress.routes[0].fault.abort.percent: expected a "
         "percentage from 0 to 100, like 10 or 0.5"},
        {R "{ abort: { percent: 1.2345, status: 503 } }\n",
         "t.yaml:10:38: functions[0].ingress.routes[0].fault.abort.percent: expected a "
         "percentage from 0 to 100, like 10 or 0.5"},
        {R "{ abort: { percent: 5, status: 100 } }\n",
         "t.yaml:10:49: functions[0].ingress.routes[0].fault.abort.status: expected a status "
         "from 200 to 599"},
        {R "{ abort: { percent: 5 } }\n",
         "t.yaml:10:27: functions[0].ingress.routes[0].fault.abort: missing required key "
         "\"status\""},
        {R "{ delay: { percent: 5 } }\n",
         "t.yaml:10:27: functions[0].ingress.routes[0].fault.delay: missing required key "
         "\"duration\""},
        {R "{ crash: {} }\n",
         "t.yaml:10:20: functions[0].ingress.routes[0].fault.crash: unknown key \"crash\""},
    };
#undef R
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_outlier_and_breaker(void **state)
{
    struct config *c = parse_ok(
        "functions:\n"
        "  - name: a\n"
        "    endpoints: [127.0.0.1:1]\n"
        "    outlier: { consecutive_failures: 3, base_ejection_time: 2s, max_ejection_time: 1m,"
        " max_ejected_percent: 30, failure_percent: 10, failure_window: 50 }\n"
        "    circuit_breaker: { max_active: 10, max_pending: 0 }\n"
        "  - name: b\n"
        "    endpoints: [127.0.0.1:2]\n");
    const struct cfg_function *a = &c->functions[0], *b = &c->functions[1];
    (void)state;

    assert_int_equal(a->outlier.consecutive_failures, 3);
    assert_int_equal(a->outlier.base_ejection_ms, 2000);
    assert_int_equal(a->outlier.max_ejection_ms, 60000);
    assert_int_equal(a->outlier.max_ejected_percent, 30);
    assert_int_equal(a->outlier.failure_percent, 10);
    assert_int_equal(a->outlier.failure_window, 50);
    assert_int_equal(a->circuit_breaker.max_active, 10);
    assert_int_equal(a->circuit_breaker.max_pending, 0);
    /* The defaults (README). */
    assert_int_equal(b->outlier.consecutive_failures, 5);
    assert_int_equal(b->outlier.base_ejection_ms, 10000);
    assert_int_equal(b->outlier.max_ejection_ms, 300000);
    assert_int_equal(b->outlier.max_ejected_percent, 50);
    assert_int_equal(b->outlier.failure_percent, 0);
    assert_int_equal(b->outlier.failure_window, 20);
    assert_int_equal(b->circuit_breaker.max_active, 1024);
    assert_int_equal(b->circuit_breaker.max_pending, 1024);
    config_free(c);

#define F "functions:\n  - name: a\n    endpoints: [127.0.0.1:1]\n"
    static const struct err_case cases[] = {
        {F "    outlier: 5\n",
         "t.yaml:4:14: functions[0].outlier: expected a map like { consecutive_failures: 5, "
         "base_ejection_time: 10s }"},
        {F "    outlier: { max_ejected_percent: 101 }\n",
         "t.yaml:4:37: functions[0].outlier.max_ejected_percent: expected a number from 0 to 100"},
        {F "    outlier: { base_ejection_time: 1m, max_ejection_time: 10s }\n",
         "t.yaml:4:14: functions[0].outlier: base_ejection_time is greater than "
         "max_ejection_time"},
        {F "    outlier: { consecutive: 5 }\n",
         "t.yaml:4:16: functions[0].outlier.consecutive: unknown key \"consecutive\""},
        {F "    circuit_breaker: { max_active: x }\n",
         "t.yaml:4:36: functions[0].circuit_breaker.max_active: expected a number from 0 to "
         "1000000"},
    };
#undef F
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ingress admission: max_concurrency, queue and rate_limit, with their
 * defaults when left out. */
static void test_admission(void **state)
{
    struct config *c = parse_ok(BASE "      max_concurrency: 50\n"
                                     "      queue: { depth: 0, timeout: 2s }\n"
                                     "      rate_limit: { rps: 0.5, burst: 3, per: client_ip }\n");
    const struct cfg_admission *a = &c->functions[0].admission;
    (void)state;

    assert_int_equal(a->max_concurrency, 50);
    assert_int_equal(a->queue_depth, 0);
    assert_int_equal(a->queue_timeout_ms, 2000);
    assert_int_equal(a->rate_milli, 500);
    assert_int_equal(a->burst, 3);
    assert_int_equal(a->per, CFG_RATE_CLIENT_IP);
    config_free(c);

    /* The defaults (README): no limit, no rate limit, a queue of 100 for 5s. */
    c = parse_ok(BASE);
    a = &c->functions[0].admission;
    assert_int_equal(a->max_concurrency, 0);
    assert_int_equal(a->queue_depth, 100);
    assert_int_equal(a->queue_timeout_ms, 5000);
    assert_int_equal(a->rate_milli, 0);
    assert_int_equal(a->burst, 0);
    assert_int_equal(a->per, CFG_RATE_FUNCTION);
    config_free(c);

    c = parse_ok(BASE "      max_concurrency: 1000000\n"
                      "      queue: {}\n"
                      "      rate_limit: { rps: 1000000 }\n");
    a = &c->functions[0].admission;
    assert_int_equal(a->max_concurrency, 1000000);
    assert_int_equal(a->queue_depth, 100);
    assert_int_equal(a->queue_timeout_ms, 5000);
    assert_int_equal(a->rate_milli, 1000000000);
    assert_int_equal(a->burst, 1000000);
    assert_int_equal(a->per, CFG_RATE_FUNCTION);
    config_free(c);

    c = parse_ok(BASE "      max_concurrency: 1\n"
                      "      queue: { depth: 100000, timeout: 60m }\n");
    a = &c->functions[0].admission;
    assert_int_equal(a->queue_depth, 100000);
    assert_int_equal(a->queue_timeout_ms, 3600000);
    config_free(c);

    /* burst left out: rps rounded up, at least 1. */
    static const struct {
        const char *rps;
        uint64_t milli;
        unsigned burst;
    } rates[] = {
        {"0.001", 1, 1},  {"0.5", 500, 1},      {"1", 1000, 1},
        {"2.5", 2500, 3}, {"12.05", 12050, 13}, {"500", 500000, 500},
    };
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        char yaml[512];

        snprintf(yaml, sizeof(yaml), BASE "      rate_limit: { rps: %s }\n", rates[i].rps);
        c = parse_ok(yaml);
        assert_int_equal(c->functions[0].admission.rate_milli, rates[i].milli);
        assert_int_equal(c->functions[0].admission.burst, rates[i].burst);
        config_free(c);
    }

    /* A queue with readiness alone holds requests through a cold start; the
     * function's keys may come in any order. */
    c = parse_ok("functions:\n"
                 "  - name: a\n"
                 "    endpoints: [127.0.0.1:1]\n"
                 "    ingress: { queue: { depth: 10 } }\n"
                 "    readiness: {}\n");
    assert_int_equal(c->functions[0].admission.queue_depth, 10);
    assert_int_equal(c->functions[0].admission.max_concurrency, 0);
    config_free(c);

    /* per: client_id where every route's listener asks for certificates,
     * or on a function with no routes. */
    c = parse_ok(TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n"
                          "      client_ca: ca.crt\n"
                          "functions:\n"
                          "  - name: hello\n"
                          "    endpoints: [127.0.0.1:9001]\n"
                          "    ingress:\n"
                          "      rate_limit: { rps: 10, per: client_id }\n"
                          "      routes: [{ name: r, match: { path_prefix: / } }]\n"
                          "  - name: quiet\n"
                          "    endpoints: [127.0.0.1:9002]\n"
                          "    ingress: { rate_limit: { rps: 10, per: client_id } }\n");
    assert_int_equal(c->functions[0].admission.per, CFG_RATE_CLIENT_ID);
    assert_int_equal(c->functions[0].admission.burst, 10);
    assert_int_equal(c->functions[1].admission.per, CFG_RATE_CLIENT_ID);
    config_free(c);
}

static void test_admission_errors(void **state)
{
#define I BASE "      "
#define K "      " /* a second ingress key */
#define RATE_MSG "expected requests a second from 0.001 to 1000000, like 500 or 0.5"
    static const struct err_case cases[] = {
        {I "max_concurrency: 0\n",
         "t.yaml:10:24: functions[0].ingress.max_concurrency: must be greater than zero (leave "
         "it out for no limit)"},
        {I "max_concurrency: 1000001\n",
         "t.yaml:10:24: functions[0].ingress.max_concurrency: expected a number from 0 to "
         "1000000"},
        {I "max_concurrency: -1\n",
         "t.yaml:10:24: functions[0].ingress.max_concurrency: expected a number from 0 to "
         "1000000"},
        {I "max_concurrency: 1.5\n",
         "t.yaml:10:24: functions[0].ingress.max_concurrency: expected a number from 0 to "
         "1000000"},
        {I "max_concurrency: [1]\n",
         "t.yaml:10:24: functions[0].ingress.max_concurrency: expected a number from 0 to "
         "1000000"},
        {I "max_concurrency:\n",
         "t.yaml:10:23: functions[0].ingress.max_concurrency: expected a number from 0 to "
         "1000000"},
        {I "max_concurrency: 1\n" K "max_concurrency: 2\n",
         "t.yaml:11:7: functions[0].ingress.max_concurrency: duplicate key \"max_concurrency\" "
         "(first at t.yaml:10:7)"},

        {I "max_concurrency: 1\n" K "queue: 5\n",
         "t.yaml:11:14: functions[0].ingress.queue: expected a map like { depth: 100, timeout: "
         "5s }"},
        {I "max_concurrency: 1\n" K "queue: { depth: 100001 }\n",
         "t.yaml:11:23: functions[0].ingress.queue.depth: expected a number from 0 to 100000"},
        {I "max_concurrency: 1\n" K "queue: { depth: x }\n",
         "t.yaml:11:23: functions[0].ingress.queue.depth: expected a number from 0 to 100000"},
        {I "max_concurrency: 1\n" K "queue: { timeout: 0s }\n",
         "t.yaml:11:25: functions[0].ingress.queue.timeout: must be greater than zero"},
        {I "max_concurrency: 1\n" K "queue: { timeout: 61m }\n",
         "t.yaml:11:25: functions[0].ingress.queue.timeout: at most 60m"},
        {I "max_concurrency: 1\n" K "queue: { timeout: soon }\n",
         "t.yaml:11:25: functions[0].ingress.queue.timeout: expected a duration like 10s"},
        {I "max_concurrency: 1\n" K "queue: { size: 1 }\n",
         "t.yaml:11:16: functions[0].ingress.queue.size: unknown key \"size\""},
        /* A queue with nothing to wait for: pointed at the queue key. */
        {I "queue: { depth: 10 }\n",
         "t.yaml:10:7: functions[0].ingress.queue: a queue needs max_concurrency or readiness on "
         "this function"},
        {I "queue: {}\n" K "rate_limit: { rps: 1 }\n",
         "t.yaml:10:7: functions[0].ingress.queue: a queue needs max_concurrency or readiness on "
         "this function"},

        {I "rate_limit: 500\n",
         "t.yaml:10:19: functions[0].ingress.rate_limit: expected a map like { rps: 500, burst: "
         "100 }"},
        {I "rate_limit: {}\n",
         "t.yaml:10:19: functions[0].ingress.rate_limit: missing required key \"rps\""},
        {I "rate_limit: { burst: 5 }\n",
         "t.yaml:10:19: functions[0].ingress.rate_limit: missing required key \"rps\""},
        {I "rate_limit: { rps: 0 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 0.000 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 0.0001 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 1000000.001 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 1000001 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: -1 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 1e3 }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: fast }\n",
         "t.yaml:10:26: functions[0].ingress.rate_limit.rps: " RATE_MSG},
        {I "rate_limit: { rps: 1, burst: 0 }\n",
         "t.yaml:10:36: functions[0].ingress.rate_limit.burst: must be greater than zero"},
        {I "rate_limit: { rps: 1, burst: 1000001 }\n",
         "t.yaml:10:36: functions[0].ingress.rate_limit.burst: expected a number from 0 to "
         "1000000"},
        {I "rate_limit: { rps: 1, per: client }\n",
         "t.yaml:10:34: functions[0].ingress.rate_limit.per: expected client_id or client_ip"},
        {I "rate_limit: { rps: 1, per: [client_ip] }\n",
         "t.yaml:10:34: functions[0].ingress.rate_limit.per: expected client_id or client_ip"},
        {I "rate_limit: { rps: 1, window: 1s }\n",
         "t.yaml:10:29: functions[0].ingress.rate_limit.window: unknown key \"window\""},
        /* An identity exists only where client certificates are asked for. */
        {I "rate_limit: { rps: 1, per: client_id }\n",
         "t.yaml:10:34: functions[0].ingress.rate_limit.per: client_id needs tls.client_ca on "
         "listener \"public\" (route r0)"},
    };
#undef RATE_MSG
#undef K
#undef I
    (void)state;
    CHECK_ERRORS(cases);

    /* per: client_id on a TLS listener without client_ca is refused too. */
    check_error(TLS_BASE "      certificates: [{ cert: a.crt, key: a.key }]\n"
                         "functions:\n"
                         "  - name: hello\n"
                         "    endpoints: [127.0.0.1:9001]\n"
                         "    ingress:\n"
                         "      routes: [{ name: r, match: { path_prefix: / } }]\n"
                         "      rate_limit: { per: client_id, rps: 5 }\n",
                "t.yaml:11:26: functions[0].ingress.rate_limit.per: client_id needs "
                "tls.client_ca on listener \"public\" (route r)");
}

/* readiness: a probe per endpoint; no path means a TCP connect. */
static void test_readiness(void **state)
{
    struct config *c = parse_ok("functions:\n"
                                "  - name: a\n"
                                "    endpoints: [127.0.0.1:1]\n"
                                "    readiness: { path: \"/healthz?deep=1\", interval: 10ms,"
                                " timeout: 2s }\n"
                                "  - name: b\n"
                                "    endpoints: [127.0.0.1:2]\n"
                                "    readiness: {}\n"
                                "  - name: c\n"
                                "    endpoints: [127.0.0.1:3]\n");
    const struct cfg_readiness *r = c->functions[0].readiness;
    char yaml[1200], want[256];
    (void)state;

    assert_non_null(r);
    assert_string_equal(r->path, "/healthz?deep=1");
    assert_int_equal(r->interval_ms, 10);
    assert_int_equal(r->timeout_ms, 2000);
    /* {} is a TCP probe with the defaults (README). */
    r = c->functions[1].readiness;
    assert_non_null(r);
    assert_null(r->path);
    assert_int_equal(r->interval_ms, 50);
    assert_int_equal(r->timeout_ms, 1000);
    assert_null(c->functions[2].readiness);
    config_free(c);

    c = parse_ok("functions:\n  - name: a\n    endpoints: [127.0.0.1:1]\n"
                 "    readiness: { path: /, interval: 1m, timeout: 1ms }\n");
    r = c->functions[0].readiness;
    assert_string_equal(r->path, "/");
    assert_int_equal(r->interval_ms, 60000);
    assert_int_equal(r->timeout_ms, 1);
    config_free(c);

    /* A path of exactly 1024 bytes is taken; one more is refused. */
    memset(want, 0, sizeof(want));
    for (int len = 1024; len <= 1025; len++) {
        int n = snprintf(yaml, sizeof(yaml),
                         "functions:\n  - name: a\n    endpoints: [127.0.0.1:1]\n"
                         "    readiness: { path: /");
        memset(yaml + n, 'x', (size_t)len - 1);
        snprintf(yaml + n + len - 1, sizeof(yaml) - (size_t)(n + len - 1), " }\n");
        if (len == 1024) {
            c = parse_ok(yaml);
            assert_int_equal(strlen(c->functions[0].readiness->path), 1024);
            config_free(c);
        } else {
            check_error(yaml, "t.yaml:4:24: functions[0].readiness.path: path too long: at most "
                              "1024 bytes");
        }
    }

#define F "functions:\n  - name: a\n    endpoints: [127.0.0.1:1]\n"
    static const struct err_case cases[] = {
        {F "    readiness: /healthz\n",
         "t.yaml:4:16: functions[0].readiness: expected a map like { path: /healthz, interval: "
         "50ms, timeout: 1s }"},
        {F "    readiness:\n",
         "t.yaml:4:15: functions[0].readiness: expected a map like { path: /healthz, interval: "
         "50ms, timeout: 1s }"},
        {F "    readiness: { path: healthz }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path like /healthz, starting "
         "with /"},
        {F "    readiness: { path: \"\" }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path like /healthz, starting "
         "with /"},
        {F "    readiness: { path: [/healthz] }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path like /healthz, starting "
         "with /"},
        {F "    readiness: { path: \"/a b\" }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path of visible ASCII "
         "characters, without spaces or #"},
        {F "    readiness: { path: /a#b }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path of visible ASCII "
         "characters, without spaces or #"},
        {F "    readiness: { path: \"/\\u00e9\" }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path of visible ASCII "
         "characters, without spaces or #"},
        {F "    readiness: { path: \"/a\\tb\" }\n",
         "t.yaml:4:24: functions[0].readiness.path: expected a path of visible ASCII "
         "characters, without spaces or #"},
        {F "    readiness: { interval: 0ms }\n",
         "t.yaml:4:28: functions[0].readiness.interval: must be greater than zero"},
        {F "    readiness: { interval: 61s }\n",
         "t.yaml:4:28: functions[0].readiness.interval: at most 1m"},
        {F "    readiness: { interval: fast }\n",
         "t.yaml:4:28: functions[0].readiness.interval: expected a duration like 10s"},
        {F "    readiness: { timeout: 2m }\n",
         "t.yaml:4:27: functions[0].readiness.timeout: at most 1m"},
        {F "    readiness: { timeout: 0s }\n",
         "t.yaml:4:27: functions[0].readiness.timeout: must be greater than zero"},
        {F "    readiness: { port: 8080 }\n",
         "t.yaml:4:18: functions[0].readiness.port: unknown key \"port\""},
        {F "    readiness: {}\n    readiness: {}\n",
         "t.yaml:5:5: functions[0].readiness: duplicate key \"readiness\" (first at t.yaml:4:5)"},
    };
#undef F
    check_errors(cases, sizeof(cases) / sizeof(cases[0]));
}

/* A unix socket is a function's own too: whoever can open the file. */
static void test_egress_unix_listen(void **state)
{
    struct config *c = parse_ok(EG_FN "{ listen: unix:/run/fn/app-egress.sock }\n");
    const struct cfg_listener *l;

    (void)state;
    assert_int_equal(c->n_listeners, 1);
    l = &c->listeners[0];
    assert_string_equal(l->name, "app.egress");
    assert_int_equal(l->kind, CFG_LISTENER_EGRESS);
    assert_int_equal(l->listen.kind, CFG_ADDR_UNIX);
    assert_int_equal(l->listen.sa.ss_family, AF_UNIX);
    assert_string_equal(((const struct sockaddr_un *)&l->listen.sa)->sun_path,
                        "/run/fn/app-egress.sock");
    assert_int_equal(c->functions[0].egress->listener, 0);
    config_free(c);
}

static void test_egress_full(void **state)
{
    struct config *c = parse_ok(
        "admin: { listen: 127.0.0.1:9901 }\n"
        "listeners:\n"
        "  - name: public\n"
        "    listen: 0.0.0.0:8080\n"
        "  - name: internal\n"
        "    listen: 127.0.0.1:8081\n"
        "functions:\n"
        "  - name: app\n"
        "    endpoints: [127.0.0.1:9001]\n"
        "    egress:\n"
        "      listen: 127.0.0.1:15001\n"
        "      mode: report\n"
        "      deny_private: false\n"
        "      tunnel_idle_timeout: 30s\n"
        "      allow:\n"
        "        - { name: stripe, host: API.Stripe.com., ports: [443] }\n"
        "        - { name: s3, host: \"*.s3.amazonaws.com\", ports: [443, 8443] }\n"
        "        - { name: orders, host: orders.internal, ports: [80], methods: [GET, HEAD],\n"
        "            paths: [/v1/, /v2/x], tls: originate, ca: certs/out/ca.crt, timeout: 5s,\n"
        "            connect_timeout: 2s }\n"
        "        - { name: db, cidr: 10.1.0.0/16, ports: [5432] }\n"
        "        - { name: v6, host: \"[2001:DB8::0001]\", ports: [443] }\n"
        "        - { name: v4, host: 192.0.2.1, ports: [443] }\n"
        "    ingress:\n"
        "      routes: [{ name: r, match: { listener: internal } }]\n"
        "  - name: quiet\n"
        "    endpoints: [127.0.0.1:9002]\n"
        "  - name: other\n"
        "    endpoints: [127.0.0.1:9003]\n"
        "    egress: { listen: \"[::1]:15002\" }\n");
    const struct cfg_function *f = &c->functions[0];
    const struct cfg_egress *e = f->egress;
    const struct cfg_egress_rule *r;
    const struct cfg_listener *l;
    const uint8_t in_db[4] = {10, 1, 2, 3}, out_db[4] = {10, 2, 0, 1};
    const uint8_t v4[4] = {192, 0, 2, 1};

    (void)state;
    /* The egress listeners come after the top-level ones, in function
     * order; the routes still point at the top-level ones. */
    assert_int_equal(c->n_listeners, 4);
    assert_string_equal(c->listeners[0].name, "public");
    assert_int_equal(c->listeners[0].kind, CFG_LISTENER_INGRESS);
    assert_string_equal(c->listeners[1].name, "internal");
    assert_int_equal(c->listeners[1].kind, CFG_LISTENER_INGRESS);
    assert_int_equal(f->routes[0].listener, 1);

    l = &c->listeners[2];
    assert_string_equal(l->name, "app.egress");
    assert_int_equal(l->kind, CFG_LISTENER_EGRESS);
    assert_int_equal(l->function, 0);
    assert_int_equal(l->listen.kind, CFG_ADDR_INET);
    assert_int_equal(l->listen.sa.ss_family, AF_INET);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&l->listen.sa)->sin_port), 15001);
    assert_string_equal(l->listen.text, "127.0.0.1:15001");
    assert_int_equal(l->header_timeout_ms, 10000);
    assert_int_equal(l->keepalive_timeout_ms, 60000);
    assert_int_equal(l->max_header_bytes, 16384);
    assert_null(l->tls);
    assert_int_equal(l->line, 11);
    assert_int_equal(l->col, 15);

    l = &c->listeners[3];
    assert_string_equal(l->name, "other.egress");
    assert_int_equal(l->kind, CFG_LISTENER_EGRESS);
    assert_int_equal(l->function, 2);
    assert_int_equal(l->listen.sa.ss_family, AF_INET6);
    assert_string_equal(l->listen.text, "[::1]:15002");
    assert_int_equal(l->line, 30);
    assert_int_equal(l->col, 23);

    assert_null(c->functions[1].egress);

    assert_non_null(e);
    assert_int_equal(e->listener, 2);
    assert_int_equal(e->mode, CFG_EGRESS_REPORT);
    assert_false(e->deny_private);
    assert_int_equal(e->tunnel_idle_timeout_ms, 30000);
    assert_int_equal(e->line, 11);
    assert_int_equal(e->col, 7);
    assert_int_equal(e->n_allow, 6);

    r = &e->allow[0];
    assert_string_equal(r->name, "stripe");
    assert_string_equal(r->host, "api.stripe.com");
    assert_null(r->cidr);
    assert_int_equal(r->n_ports, 1);
    assert_int_equal(r->ports[0], 443);
    assert_int_equal(r->methods, 0);
    assert_null(r->paths);
    assert_int_equal(r->n_paths, 0);
    assert_false(r->tls_originate);
    assert_null(r->ca);
    assert_int_equal(r->t.timeout_ms, 15000);
    assert_int_equal(r->t.connect_timeout_ms, 5000);
    assert_int_equal(r->line, 16);
    assert_int_equal(r->col, 11);

    r = &e->allow[1];
    assert_string_equal(r->name, "s3");
    assert_string_equal(r->host, "*.s3.amazonaws.com");
    assert_int_equal(r->n_ports, 2);
    assert_int_equal(r->ports[0], 443);
    assert_int_equal(r->ports[1], 8443);

    r = &e->allow[2];
    assert_string_equal(r->name, "orders");
    assert_string_equal(r->host, "orders.internal");
    assert_int_equal(r->n_ports, 1);
    assert_int_equal(r->ports[0], 80);
    assert_int_equal(r->methods, CFG_M_GET | CFG_M_HEAD);
    assert_int_equal(r->n_paths, 2);
    assert_string_equal(r->paths[0], "/v1/");
    assert_string_equal(r->paths[1], "/v2/x");
    assert_true(r->tls_originate);
    assert_string_equal(r->ca, "certs/out/ca.crt");
    assert_int_equal(r->t.timeout_ms, 5000);
    assert_int_equal(r->t.connect_timeout_ms, 2000);
    assert_int_equal(r->line, 18);

    r = &e->allow[3];
    assert_string_equal(r->name, "db");
    assert_null(r->host);
    assert_string_equal(r->cidr, "10.1.0.0/16");
    assert_int_equal(r->ports[0], 5432);

    /* IP literals are kept as inet_ntop writes them: the form a request's
     * canonical target has. */
    assert_string_equal(e->allow[4].host, "2001:db8::1");
    assert_string_equal(e->allow[5].host, "192.0.2.1");

    /* The compiled rules answer as the list says. */
    assert_non_null(e->rules);
    assert_int_equal(egress_rules_count(e->rules), 6);
    assert_string_equal(egress_rules_name(e->rules, 3), "db");
    assert_int_equal(egress_rules_match_host(e->rules, "api.stripe.com", 14, 443, 0, NULL, 0), 0);
    assert_int_equal(egress_rules_match_host(e->rules, "api.stripe.com", 14, 80, 0, NULL, 0), -1);
    assert_int_equal(
        egress_rules_match_host(e->rules, "b.s3.amazonaws.com", 18, 8443, CFG_M_PUT, "/", 1), 1);
    assert_int_equal(egress_rules_match_host(e->rules, "s3.amazonaws.com", 16, 443, 0, NULL, 0),
                     -1);
    assert_int_equal(
        egress_rules_match_host(e->rules, "orders.internal", 15, 80, CFG_M_GET, "/v1/o", 5), 2);
    assert_int_equal(
        egress_rules_match_host(e->rules, "orders.internal", 15, 80, CFG_M_POST, "/v1/o", 5), -1);
    assert_int_equal(
        egress_rules_match_host(e->rules, "orders.internal", 15, 80, CFG_M_GET, "/v3", 3), -1);
    assert_int_equal(egress_rules_match_host(e->rules, "2001:db8::1", 11, 443, 0, NULL, 0), 4);
    assert_int_equal(egress_rules_match_addr(e->rules, AF_INET, in_db, 5432, 0, NULL, 0), 3);
    assert_int_equal(egress_rules_match_addr(e->rules, AF_INET, out_db, 5432, 0, NULL, 0), -1);
    assert_int_equal(egress_rules_match_host(e->rules, "192.0.2.1", 9, 443, 0, NULL, 0), 5);
    assert_int_equal(egress_rules_match_addr(e->rules, AF_INET, v4, 443, 0, NULL, 0), -1);

    /* Defaults: enforce, deny_private, 5 min tunnels; no allow list is an
     * empty one, compiled all the same: everything is denied. */
    e = c->functions[2].egress;
    assert_non_null(e);
    assert_int_equal(e->listener, 3);
    assert_int_equal(e->mode, CFG_EGRESS_ENFORCE);
    assert_true(e->deny_private);
    assert_int_equal(e->tunnel_idle_timeout_ms, 300000);
    assert_int_equal(e->n_allow, 0);
    assert_null(e->allow);
    assert_non_null(e->rules);
    assert_int_equal(egress_rules_count(e->rules), 0);
    assert_int_equal(egress_rules_match_host(e->rules, "api.stripe.com", 14, 443, 0, NULL, 0), -1);
    config_free(c);
}

/* Egress listeners need no top-level listener, and an empty allow list is
 * as good as none. */
static void test_egress_small(void **state)
{
    struct config *c = parse_ok(EG_FN "{ listen: localhost:15001, allow: [] }\n");

    (void)state;
    assert_int_equal(c->n_listeners, 1);
    assert_string_equal(c->listeners[0].name, "app.egress");
    assert_int_equal(c->listeners[0].kind, CFG_LISTENER_EGRESS);
    assert_int_equal(c->functions[0].egress->listener, 0);
    assert_int_equal(c->functions[0].egress->n_allow, 0);
    assert_non_null(c->functions[0].egress->rules);
    config_free(c);

    /* Anywhere in 127/8, and [::1]. */
    c = parse_ok(EG_FN "{ listen: 127.1.2.3:1 }\n"
                       "  - name: b\n    endpoints: [127.0.0.1:9001]\n"
                       "    egress: { listen: \"[::1]:1\" }\n");
    assert_int_equal(c->n_listeners, 2);
    assert_string_equal(c->listeners[1].name, "b.egress");
    assert_int_equal(c->functions[1].egress->listener, 1);
    config_free(c);

    /* An IPv6 host may be written without brackets (no port to tell
     * apart); a wildcard over a one-label domain is a wildcard still. */
    c = parse_ok(EG_RULE("name: a, host: \"::FFFF:7F00:1\", ports: [80] }\n"
                         "        - { name: b, host: \"*.Internal.\", ports: [80]"));
    assert_string_equal(c->functions[0].egress->allow[0].host, "::ffff:127.0.0.1");
    assert_string_equal(c->functions[0].egress->allow[1].host, "*.internal");
    assert_int_equal(egress_rules_match_host(c->functions[0].egress->rules, "x.internal", 10, 80,
                                             CFG_M_GET, "/", 1),
                     1);
    config_free(c);
}

static void test_egress_errors(void **state)
{
    static const char loopback[] =
        "must be a loopback address (127.0.0.0/8 or [::1]): the egress listener is the "
        "function's identity, so nothing off this host may reach it";
    static const struct err_case cases[] = {
        /* the egress map */
        {EG_FN "[]\n", "t.yaml:4:13: functions[0].egress: expected a map with listen and allow"},
        {EG_FN "{ allow: [] }\n",
         "t.yaml:4:13: functions[0].egress: missing required key \"listen\""},
        {EG_FN "{ listen: 127.0.0.1:1, policy: x }\n",
         "t.yaml:4:36: functions[0].egress.policy: unknown key \"policy\""},
        {EG_FN "{ listen: 127.0.0.1 }\n",
         "t.yaml:4:23: functions[0].egress.listen: expected IP:port or unix:/path"},
        {EG_FN "{ listen: \"unix:\" }\n",
         "t.yaml:4:23: functions[0].egress.listen: expected unix:/absolute/path"},
        {EG_FN "{ listen: 127.0.0.1:1, mode: audit }\n",
         "t.yaml:4:42: functions[0].egress.mode: expected enforce or report"},
        {EG_FN "{ listen: 127.0.0.1:1, deny_private: no }\n",
         "t.yaml:4:50: functions[0].egress.deny_private: expected true or false"},
        {EG_FN "{ listen: 127.0.0.1:1, tunnel_idle_timeout: 0s }\n",
         "t.yaml:4:57: functions[0].egress.tunnel_idle_timeout: must be greater than zero"},
        {EG_FN "{ listen: 127.0.0.1:1, allow: { name: a } }\n",
         "t.yaml:4:43: functions[0].egress.allow: expected a list of allow rules"},
        {EG_FN "{ listen: 127.0.0.1:1, allow: [stripe] }\n",
         "t.yaml:4:44: functions[0].egress.allow[0]: expected a map like { name: api, host: "
         "api.example.com, ports: [443] }"},

        /* a rule's keys */
        {EG_RULE("host: a.com, ports: [443]"),
         "t.yaml:10:11: functions[0].egress.allow[0]: missing required key \"name\""},
        {EG_RULE("name: \"a b\", host: a.com, ports: [443]"),
         "t.yaml:10:19: functions[0].egress.allow[0].name: expected a name: 1 to 64 characters "
         "from A-Z a-z 0-9 _ . -"},
        {EG_RULE("name: a, host: a.com"),
         "t.yaml:10:11: functions[0].egress.allow[0]: missing required key \"ports\""},
        {EG_RULE("name: a, ports: [443]"),
         "t.yaml:10:11: functions[0].egress.allow[0]: missing required key \"host\" or \"cidr\""},
        {EG_RULE("name: a, host: a.com, cidr: 10.0.0.0/8, ports: [443]"),
         "t.yaml:10:11: functions[0].egress.allow[0]: expected host or cidr, not both"},
        {EG_RULE("name: a, host: a.com, ports: [443], port: 80"),
         "t.yaml:10:49: functions[0].egress.allow[0].port: unknown key \"port\""},

        /* ports */
        {EG_RULE("name: a, host: a.com, ports: 443"),
         "t.yaml:10:42: functions[0].egress.allow[0].ports: expected a list of ports"},
        {EG_RULE("name: a, host: a.com, ports: []"),
         "t.yaml:10:42: functions[0].egress.allow[0].ports: expected at least one port, like "
         "[443]"},
        {EG_RULE("name: a, host: a.com, ports: [0]"),
         "t.yaml:10:43: functions[0].egress.allow[0].ports[0]: expected a port from 1 to 65535"},
        {EG_RULE("name: a, host: a.com, ports: [443, 70000]"),
         "t.yaml:10:48: functions[0].egress.allow[0].ports[1]: expected a port from 1 to 65535"},
        {EG_RULE("name: a, host: a.com, ports: [https]"),
         "t.yaml:10:43: functions[0].egress.allow[0].ports[0]: expected a port from 1 to 65535"},
        {EG_RULE("name: a, host: a.com, ports: [443, 80, 443]"),
         "t.yaml:10:52: functions[0].egress.allow[0].ports[2]: duplicate port 443 (first at "
         "t.yaml:10:43)"},

        /* methods, paths, tls, ca */
        {EG_RULE("name: a, host: a.com, ports: [80], methods: [FETCH]"),
         "t.yaml:10:58: functions[0].egress.allow[0].methods[0]: unknown method \"FETCH\": "
         "expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or TRACE"},
        {EG_RULE("name: a, host: a.com, ports: [80], methods: []"),
         "t.yaml:10:57: functions[0].egress.allow[0].methods: expected a non-empty list of "
         "methods, like [GET, POST]"},
        {EG_RULE("name: a, host: a.com, ports: [80], paths: [/v1, v2]"),
         "t.yaml:10:61: functions[0].egress.allow[0].paths[1]: expected a path like /api: ASCII, "
         "starting with /, without spaces, ? or #"},
        {EG_RULE("name: a, host: a.com, ports: [80], paths: /v1"),
         "t.yaml:10:55: functions[0].egress.allow[0].paths: expected a non-empty list of path "
         "prefixes, like [/v1/]"},
        {EG_RULE("name: a, host: a.com, ports: [80], tls: terminate"),
         "t.yaml:10:53: functions[0].egress.allow[0].tls: expected originate (the only TLS mode "
         "of an allow rule)"},
        {EG_RULE("name: a, host: a.com, ports: [80], ca: ca.crt"),
         "t.yaml:10:52: functions[0].egress.allow[0].ca: only allowed with tls: originate"},
        {EG_RULE("name: a, host: a.com, ports: [80], timeout: 0s"),
         "t.yaml:10:57: functions[0].egress.allow[0].timeout: must be greater than zero"},
        {EG_RULE("name: a, host: a.com, ports: [80], connect_timeout: 5"),
         "t.yaml:10:65: functions[0].egress.allow[0].connect_timeout: expected a duration like "
         "10s"},

        /* hosts: the spellings egress_target_parse refuses, by its name */
        {EG_RULE("name: a, host: 127.1, ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: numeric_host: \"127.1\" looks like a "
         "number but is not a dotted-quad IPv4 address"},
        {EG_RULE("name: a, host: 0x7f.1, ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: numeric_host: \"0x7f.1\" looks like a "
         "number but is not a dotted-quad IPv4 address"},
        {EG_RULE("name: a, host: 2130706433, ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: numeric_host: \"2130706433\" looks "
         "like a number but is not a dotted-quad IPv4 address"},
        {EG_RULE("name: a, host: \"*.\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: expected a domain after *., like "
         "*.example.com"},
        {EG_RULE("name: a, host: \"*\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: the * wildcard must be the whole "
         "first label, like *.example.com"},
        {EG_RULE("name: a, host: \"a.*.com\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: the * wildcard must be the whole "
         "first label, like *.example.com"},
        {EG_RULE("name: a, host: \"*.10.0.0.1\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: a * wildcard takes a domain name, "
         "not an IP address"},
        {EG_RULE("name: a, host: \"api.com:443\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: expected a host without a port"},
        {EG_RULE("name: a, host: \"[::1]:443\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: expected a host without a port"},
        {EG_RULE("name: a, host: \"[::g]\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: bad_ipv6: not an IPv6 address"},
        {EG_RULE("name: a, host: a..com, ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: bad_label: an empty label, or one "
         "that starts or ends with -"},
        {EG_RULE("name: a, host: \"a b.com\", ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: bad_char: a host name takes letters, "
         "digits, - _ and . (IDNs as xn--...)"},
        {EG_RULE("name: a, host: [a.com], ports: [80]"),
         "t.yaml:10:28: functions[0].egress.allow[0].host: expected a host like "
         "api.example.com, *.example.com or an IP"},

        /* cidr, checked by egress_rules_compile, reported at the rule */
        {EG_RULE("name: a, host: a.com, ports: [80] }\n        - { name: b, cidr: 10.1.0.0/33, "
                 "ports: [80]"),
         "t.yaml:11:11: functions[0].egress.allow[1]: cidr: bad prefix length 33"},
        {EG_RULE("name: db, cidr: 10.1.0.1/16, ports: [80]"),
         "t.yaml:10:11: functions[0].egress.allow[0]: cidr: host bits set in 10.1.0.1/16 (the "
         "network is 10.1.0.0/16)"},
        {EG_RULE("name: db, cidr: nope, ports: [80]"),
         "t.yaml:10:11: functions[0].egress.allow[0]: cidr: expected address/prefix-length, got "
         "\"nope\""},

        /* names */
        {EG_RULE("name: a, host: a.com, ports: [80] }\n        - { name: b, host: b.com, ports: "
                 "[80] }\n        - { name: a, host: c.com, ports: [80]"),
         "t.yaml:12:19: functions[0].egress.allow[2].name: duplicate rule name \"a\" (first at "
         "t.yaml:10:19)"},

        /* the listener */
        {EG_FN "{ listen: 0.0.0.0:15001 }\n", NULL},
        {EG_FN "{ listen: 10.0.0.1:15001 }\n", NULL},
        {EG_FN "{ listen: \"[::]:15001\" }\n", NULL},
        {EG_FN "{ listen: \"[::ffff:127.0.0.1]:15001\" }\n", NULL},
        {"listeners:\n  - { name: public, listen: 127.0.0.1:15001 }\n" EG_FN
         "{ listen: 127.0.0.1:15001 }\n",
         "t.yaml:6:23: functions[0].egress.listen: address already used by listeners[0] "
         "(t.yaml:2:29)"},
        {"listeners:\n  - { name: public, listen: 0.0.0.0:15001 }\n" EG_FN
         "{ listen: 127.0.0.2:15001 }\n",
         "t.yaml:6:23: functions[0].egress.listen: address already used by listeners[0] "
         "(t.yaml:2:29)"},
        {EG_FN "{ listen: 127.0.0.1:15001 }\n"
               "  - { name: b, endpoints: [127.0.0.1:1], egress: { listen: 127.0.0.1:15001 } }\n",
         "t.yaml:5:60: functions[1].egress.listen: address already used by "
         "functions[0].egress.listen (t.yaml:4:23)"},
        {EG_FN "{ listen: unix:/run/fn/egress.sock }\n"
               "  - { name: b, endpoints: [127.0.0.1:1], egress: { listen: "
               "unix:/run/fn/egress.sock } }\n",
         "t.yaml:5:60: functions[1].egress.listen: address already used by "
         "functions[0].egress.listen (t.yaml:4:23)"},
        {"admin: { listen: 127.0.0.1:9901 }\n" EG_FN "{ listen: 127.0.0.1:9901 }\n",
         "t.yaml:5:23: functions[0].egress.listen: address already used by admin.listen "
         "(t.yaml:1:18)"},
        {"listeners:\n  - { name: app.egress, listen: 127.0.0.1:8080 }\n" EG_FN
         "{ listen: 127.0.0.1:15001 }\n",
         "t.yaml:6:13: functions[0].egress: its listener would be named \"app.egress\", the name "
         "of listeners[0] (t.yaml:2:13)"},
        /* Routes name top-level listeners only. */
        {EG_FN "{ listen: 127.0.0.1:15001 }\n"
               "    ingress: { routes: [{ name: r, match: { listener: app.egress } }] }\n",
         "t.yaml:5:55: functions[0].ingress.routes[0].match.listener: no listener named "
         "\"app.egress\""},
        {"listeners:\n  - { name: public, listen: 127.0.0.1:8080 }\n"
         "functions:\n"
         "  - name: other\n"
         "    endpoints: [127.0.0.1:1]\n"
         "    egress: { listen: 127.0.0.1:15001 }\n"
         "  - name: app\n"
         "    endpoints: [127.0.0.1:9001]\n"
         "    ingress: { routes: [{ name: r, match: { listener: other.egress } }] }\n",
         "t.yaml:9:55: functions[1].ingress.routes[0].match.listener: no listener named "
         "\"other.egress\""},
    };
    char want[CFG_ERR_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].want != NULL) {
            check_error(cases[i].yaml, cases[i].want);
            continue;
        }
        snprintf(want, sizeof(want), "t.yaml:4:23: functions[0].egress.listen: %s", loopback);
        check_error(cases[i].yaml, want);
    }
}

/* egress.capture: a listener "<function>.capture" of kind capture after
 * every egress listener, governed by the same function's egress. */
static void test_capture_listen(void **state)
{
    struct config *c =
        parse_ok("listeners:\n  - { name: public, listen: 127.0.0.1:8080 }\n"
                 "functions:\n"
                 "  - name: app\n"
                 "    endpoints: [127.0.0.1:9001]\n"
                 "    ingress: { routes: [{ name: r, match: { listener: public } }] }\n"
                 "    egress: { listen: 127.0.0.1:15001, capture: 127.0.0.1:15006 }\n"
                 "  - name: other\n"
                 "    endpoints: [127.0.0.1:9002]\n"
                 "    egress: { listen: 127.0.0.1:15002,\n"
                 "              capture: { listen: \"[::1]:15006\", first_bytes_timeout: 250ms } }\n"
                 "  - name: plain\n"
                 "    endpoints: [127.0.0.1:9003]\n"
                 "    egress: { listen: 127.0.0.1:15003 }\n");
    const struct cfg_egress *e = c->functions[0].egress;

    (void)state;
    assert_int_equal(c->n_listeners, 6);
    assert_string_equal(c->listeners[3].name, "plain.egress");
    assert_string_equal(c->listeners[4].name, "app.capture");
    assert_int_equal(c->listeners[4].kind, CFG_LISTENER_CAPTURE);
    assert_int_equal(c->listeners[4].function, 0);
    assert_string_equal(c->listeners[4].listen.text, "127.0.0.1:15006");
    assert_int_equal(c->listeners[4].header_timeout_ms, 10000);
    assert_int_equal(c->listeners[4].first_bytes_timeout_ms, 1000); /* the default */
    assert_int_equal(c->listeners[1].first_bytes_timeout_ms, 0);    /* egress: none */
    assert_true(e->has_capture);
    assert_int_equal(e->capture_listener, 4);
    assert_int_equal(e->listener, 1);
    assert_string_equal(c->listeners[5].name, "other.capture");
    assert_int_equal(c->listeners[5].listen.sa.ss_family, AF_INET6);
    assert_string_equal(c->listeners[5].listen.text, "[::1]:15006");
    assert_int_equal(c->listeners[5].first_bytes_timeout_ms, 250);
    assert_int_equal(c->functions[1].egress->capture_listener, 5);
    assert_false(c->functions[2].egress->has_capture);
    config_free(c);
}

static void test_capture_errors(void **state)
{
#define CAP(v) EG_FN "{ listen: 127.0.0.1:15001, capture: " v " }\n"
    static const struct {
        const char *yaml, *want;
    } cases[] = {
        {CAP("10.0.0.1:15006"),
         "t.yaml:4:49: functions[0].egress.capture: must be a loopback address (127.0.0.0/8 or "
         "[::1]): nftables redirects the function's connections there, and nothing off this host "
         "may reach it"},
        {CAP("\"[::]:15006\""),
         "t.yaml:4:49: functions[0].egress.capture: must be a loopback address (127.0.0.0/8 or "
         "[::1]): nftables redirects the function's connections there, and nothing off this host "
         "may reach it"},
        {CAP("unix:/run/fn/c.sock"),
         "t.yaml:4:49: functions[0].egress.capture: expected IP:port; unix sockets are only for "
         "endpoints"},
        {CAP("127.0.0.1"), "t.yaml:4:49: functions[0].egress.capture: expected IP:port"},
        {CAP("[a, b]"), "t.yaml:4:49: functions[0].egress.capture: expected IP:port"},
        {CAP("127.0.0.1:15001"),
         "t.yaml:4:49: functions[0].egress.capture: address already used by "
         "functions[0].egress.listen (t.yaml:4:23)"},
        {"listeners:\n  - { name: public, listen: 0.0.0.0:15006 }\n" CAP("127.0.0.1:15006"),
         "t.yaml:6:49: functions[0].egress.capture: address already used by listeners[0] "
         "(t.yaml:2:29)"},
        {"admin: { listen: 127.0.0.1:9901 }\n" CAP("127.0.0.1:9901"),
         "t.yaml:5:49: functions[0].egress.capture: address already used by admin.listen "
         "(t.yaml:1:18)"},
        {CAP("127.0.0.1:15006") "  - { name: b, endpoints: [127.0.0.1:1], egress: { listen: "
                                "127.0.0.1:15002, capture: 127.0.0.1:15006 } }\n",
         "t.yaml:5:86: functions[1].egress.capture: address already used by "
         "functions[0].egress.capture (t.yaml:4:49)"},
        {"listeners:\n  - { name: app.capture, listen: 127.0.0.1:8080 }\n" CAP("127.0.0.1:15006"),
         "t.yaml:6:13: functions[0].egress: its listener would be named \"app.capture\", the "
         "name of listeners[0] (t.yaml:2:13)"},
        {EG_FN "{ capture: 127.0.0.1:15006 }\n",
         "t.yaml:4:13: functions[0].egress: missing required key \"listen\""},
        {EG_FN "{ listen: 127.0.0.1:15001, capture: 127.0.0.1:15006, capture: 127.0.0.1:15007 }\n",
         "t.yaml:4:66: functions[0].egress.capture: duplicate key \"capture\" (first at "
         "t.yaml:4:40)"},
        /* The map form: { listen, first_bytes_timeout }. */
        {CAP("{ listen: 127.0.0.1:15006, first_bytes_timeout: 0s }"),
         "t.yaml:4:97: functions[0].egress.capture.first_bytes_timeout: must be greater than "
         "zero"},
        {CAP("{ listen: 127.0.0.1:15006, first_bytes_timeout: soon }"),
         "t.yaml:4:97: functions[0].egress.capture.first_bytes_timeout: expected a duration like "
         "10s"},
        {CAP("{ listen: 127.0.0.1:15006, first_bytes_timeout: [1s] }"),
         "t.yaml:4:97: functions[0].egress.capture.first_bytes_timeout: expected a duration like "
         "10s"},
        {CAP("{ first_bytes_timeout: 1s }"),
         "t.yaml:4:49: functions[0].egress.capture: missing required key \"listen\""},
        {CAP("{ listen: 10.0.0.1:15006 }"),
         "t.yaml:4:59: functions[0].egress.capture.listen: must be a loopback address (127.0.0.0/8 "
         "or [::1]): nftables redirects the function's connections there, and nothing off this "
         "host may reach it"},
        {CAP("{ listen: 127.0.0.1:15006, timeout: 1s }"),
         "t.yaml:4:76: functions[0].egress.capture.timeout: unknown key \"timeout\""},
        {CAP("{ listen: 127.0.0.1:15001 }"),
         "t.yaml:4:59: functions[0].egress.capture.listen: address already used by "
         "functions[0].egress.listen (t.yaml:4:23)"},
        {CAP("127.0.0.1:15006") "  - { name: b, endpoints: [127.0.0.1:1], egress: { listen: "
                                "127.0.0.1:15002, capture: { listen: 127.0.0.1:15006 } } }\n",
         "t.yaml:5:96: functions[1].egress.capture.listen: address already used by "
         "functions[0].egress.capture (t.yaml:4:49)"},
    };
#undef CAP

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_error(cases[i].yaml, cases[i].want);
}

/* Egress listeners count toward CFG_MAX_LISTENERS. */
static void test_egress_listener_limit(void **state)
{
    size_t cap = 64 * 1024, len, i;
    char *yaml = malloc(cap), want[CFG_ERR_MAX];
    struct config *c;
    int extra;

    (void)state;
    assert_non_null(yaml);
    for (extra = 0; extra <= 1; extra++) {
        len = (size_t)snprintf(yaml, cap, "listeners:\n");
        for (i = 0; i < (size_t)CFG_MAX_LISTENERS - 2 + (size_t)extra; i++)
            len += (size_t)snprintf(yaml + len, cap - len,
                                    "  - { name: l%zu, listen: 127.0.0.1:%zu }\n", i, 10000 + i);
        len += (size_t)snprintf(yaml + len, cap - len,
                                "functions:\n"
                                "  - { name: f, endpoints: [127.0.0.1:9], egress: { listen: "
                                "127.0.0.1:20001 } }\n"
                                "  - { name: g, endpoints: [127.0.0.1:9], egress: { listen: "
                                "127.0.0.1:20002 } }\n");
        if (!extra) {
            c = parse_ok(yaml);
            assert_int_equal(c->n_listeners, CFG_MAX_LISTENERS);
            assert_string_equal(c->listeners[CFG_MAX_LISTENERS - 1].name, "g.egress");
            assert_int_equal(c->functions[1].egress->listener, CFG_MAX_LISTENERS - 1);
            config_free(c);
        } else {
            snprintf(want, sizeof(want),
                     "t.yaml:%d:50: functions[1].egress: at most %d listeners, egress and capture "
                     "listeners included",
                     CFG_MAX_LISTENERS + 3, CFG_MAX_LISTENERS);
            check_error(yaml, want);
        }
    }
    free(yaml);
}

/* ---- dns ---- */

static void test_dns(void **state)
{
    static const struct err_case bad[] = {
        {"dns: 1\n",
         "t.yaml:1:6: dns: expected a map like { servers: [127.0.0.1:53], timeout: 5s }"},
        {"dns: { server: [127.0.0.1] }\n", "t.yaml:1:8: dns.server: unknown key \"server\""},
        {"dns: { servers: 127.0.0.1 }\n",
         "t.yaml:1:17: dns.servers: expected a non-empty list of DNS servers, like "
         "[127.0.0.1:53]"},
        {"dns: { servers: [] }\n",
         "t.yaml:1:17: dns.servers: expected a non-empty list of DNS servers, like "
         "[127.0.0.1:53]"},
        {"dns: { servers: [127.0.0.1:53, dns.google] }\n",
         "t.yaml:1:32: dns.servers[1]: expected an IP address with an optional port, like "
         "127.0.0.1:53 or [::1]:53"},
        {"dns: { servers: [\"::1\"] }\n",
         "t.yaml:1:18: dns.servers[0]: expected an IP address with an optional port, like "
         "127.0.0.1:53 or [::1]:53"},
        {"dns: { servers: [127.1] }\n",
         "t.yaml:1:18: dns.servers[0]: expected an IP address with an optional port, like "
         "127.0.0.1:53 or [::1]:53"},
        {"dns: { servers: [127.0.0.1:0] }\n",
         "t.yaml:1:18: dns.servers[0]: expected an IP address with an optional port, like "
         "127.0.0.1:53 or [::1]:53"},
        {"dns: { servers: [127.0.0.1:65536] }\n",
         "t.yaml:1:18: dns.servers[0]: expected an IP address with an optional port, like "
         "127.0.0.1:53 or [::1]:53"},
        {"dns: { timeout: 0s }\n", "t.yaml:1:17: dns.timeout: must be greater than zero"},
        {"dns: { timeout: 61s }\n", "t.yaml:1:17: dns.timeout: must be at most 60s"},
        {"dns: { timeout: 5 }\n", "t.yaml:1:17: dns.timeout: expected a duration like 10s"},
        {"dns: { cache: 5 }\n",
         "t.yaml:1:15: dns.cache: expected a map like { min_ttl: 0s, max_ttl: 300s, entries: "
         "1024 }"},
        {"dns: { cache: { min_ttl: 301s } }\n",
         "t.yaml:1:26: dns.cache.min_ttl: min_ttl (301s) is greater than max_ttl (300s)"},
        {"dns:\n  cache:\n    min_ttl: 10s\n    max_ttl: 5s\n",
         "t.yaml:3:14: dns.cache.min_ttl: min_ttl (10s) is greater than max_ttl (5s)"},
        {"dns: { cache: { min_ttl: 2s, max_ttl: 1s } }\n",
         "t.yaml:1:26: dns.cache.min_ttl: min_ttl (2s) is greater than max_ttl (1s)"},
        {"dns: { cache: { max_ttl: 1500ms } }\n",
         "t.yaml:1:26: dns.cache.max_ttl: expected whole seconds, like 30s"},
        {"dns: { cache: { entries: 1000001 } }\n",
         "t.yaml:1:26: dns.cache.entries: expected a number from 0 to 1000000"},
        {"dns: { cache: { entries: -1 } }\n",
         "t.yaml:1:26: dns.cache.entries: expected a number from 0 to 1000000"},
        {"dns: { cache: { size: 1 } }\n", "t.yaml:1:17: dns.cache.size: unknown key \"size\""},
    };
    struct config *c;

    /* Absent: /etc/resolv.conf, a 5 s lookup, a cache of 1024 answers kept
     * as long as their TTL says, up to 300 s. */
    c = parse_ok("workers: 1\n");
    assert_null(c->dns.servers);
    assert_int_equal(c->dns.timeout_ms, 5000);
    assert_int_equal(c->dns.cache_min_ttl_s, 0);
    assert_int_equal(c->dns.cache_max_ttl_s, 300);
    assert_int_equal(c->dns.cache_entries, 1024);
    config_free(c);

    c = parse_ok("dns: {}\n");
    assert_null(c->dns.servers);
    assert_int_equal(c->dns.timeout_ms, 5000);
    assert_int_equal(c->dns.cache_max_ttl_s, 300);
    assert_int_equal(c->dns.cache_entries, 1024);
    config_free(c);

    /* Servers are written out canonical, each with its port. */
    c = parse_ok("dns:\n"
                 "  servers: [127.0.0.1:5353, \"[::1]:53\", 10.0.0.2, \"[FE80::0001]\", 1.1.1.1.]\n"
                 "  timeout: 60s\n"
                 "  cache: { min_ttl: 1m, max_ttl: 10m, entries: 1000000 }\n");
    assert_string_equal(c->dns.servers, "127.0.0.1:5353,[::1]:53,10.0.0.2:53,[fe80::1]:53,"
                                        "1.1.1.1:53");
    assert_int_equal(c->dns.timeout_ms, 60000);
    assert_int_equal(c->dns.cache_min_ttl_s, 60);
    assert_int_equal(c->dns.cache_max_ttl_s, 600);
    assert_int_equal(c->dns.cache_entries, 1000000);
    config_free(c);

    /* 0 turns the cache off; min_ttl == max_ttl pins every answer. */
    c = parse_ok("dns: { timeout: 250ms, cache: { max_ttl: 0s, entries: 0 } }\n");
    assert_int_equal(c->dns.timeout_ms, 250);
    assert_int_equal(c->dns.cache_max_ttl_s, 0);
    assert_int_equal(c->dns.cache_entries, 0);
    config_free(c);
    c = parse_ok("dns: { cache: { min_ttl: 30s, max_ttl: 30s } }\n");
    assert_int_equal(c->dns.cache_min_ttl_s, 30);
    assert_int_equal(c->dns.cache_max_ttl_s, 30);
    config_free(c);

    CHECK_ERRORS(bad);
}

/* ---- whole configs ---- */

static void test_defaults(void **state)
{
    struct config *c = parse_ok(BASE);
    const struct cfg_listener *l = &c->listeners[0];
    const struct cfg_function *f = &c->functions[0];
    const struct cfg_route *r = &f->routes[0];

    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(c->workers, 0);
    assert_false(c->has_admin);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_null(c->access_log);
    assert_int_equal(c->n_listeners, 1);
    assert_string_equal(l->name, "public");
    assert_int_equal(l->header_timeout_ms, 10000);
    assert_int_equal(l->keepalive_timeout_ms, 60000);
    assert_int_equal(l->max_header_bytes, 16384);
    assert_int_equal(l->line, 2);
    assert_int_equal(l->col, 5);
    assert_int_equal(c->n_functions, 1);
    assert_string_equal(f->name, "hello");
    assert_int_equal(f->max_body, 0);
    assert_int_equal(f->line, 5);
    assert_int_equal(f->col, 5);
    assert_int_equal(f->n_routes, 1);
    assert_string_equal(r->name, "r0");
    assert_int_equal(r->listener, 0);
    assert_null(r->host);
    assert_string_equal(r->path_prefix, "/");
    assert_int_equal(r->methods, 0);
    assert_int_equal(r->t.timeout_ms, 15000);
    assert_int_equal(r->t.connect_timeout_ms, 1000);
    assert_int_equal(r->line, 9);
    assert_int_equal(r->col, 11);
    config_free(c);
}

/* access_log: stdout, off (the same as leaving it out) or a path, kept as
 * written; the file is not opened by the config layer. */
static void test_access_log(void **state)
{
    static const struct {
        const char *yaml;
        const char *want; /* NULL: off */
    } good[] = {
        {"access_log: stdout\n", "stdout"},
        {"access_log: off\n", NULL},
        {"access_log: \"off\"\n", NULL},
        {"access_log: /var/log/fnproxy/access.log\n", "/var/log/fnproxy/access.log"},
        {"access_log: logs/access.log\n", "logs/access.log"},
        {"access_log: \"/tmp/with space.log\"\n", "/tmp/with space.log"},
    };
    static const struct err_case bad[] = {
        {"access_log:\n", "t.yaml:1:12: access_log: expected stdout, off or a file path"},
        {"access_log: \"\"\n", "t.yaml:1:13: access_log: expected stdout, off or a file path"},
        {"access_log: [stdout]\n", "t.yaml:1:13: access_log: expected stdout, off or a file path"},
        {"access_log: { path: /x }\n",
         "t.yaml:1:13: access_log: expected stdout, off or a file path"},
        {"access_log: \"/tmp/a\\nb\"\n",
         "t.yaml:1:13: access_log: expected stdout, off or a file path"},
        {"access_log: \"/tmp/a\\0b\"\n",
         "t.yaml:1:13: access_log: expected stdout, off or a file path"},
        {"access_log: stdout\naccess_log: off\n",
         "t.yaml:2:1: access_log: duplicate key \"access_log\" (first at t.yaml:1:1)"},
    };
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config *c = parse_ok(good[i].yaml);

        if (good[i].want == NULL)
            assert_null(c->access_log);
        else
            assert_string_equal(c->access_log, good[i].want);
        config_free(c);
    }
    CHECK_ERRORS(bad);
}

/* metrics: on (the default) or off; off turns per-request counting off. */
static void test_metrics_switch(void **state)
{
    static const struct err_case bad[] = {
        {"metrics: no\n", "t.yaml:1:10: metrics: expected on or off"},
        {"metrics:\n", "t.yaml:1:9: metrics: expected on or off"},
        {"metrics: [off]\n", "t.yaml:1:10: metrics: expected on or off"},
        {"metrics: { enabled: false }\n", "t.yaml:1:10: metrics: expected on or off"},
    };
    struct config *c;

    c = parse_ok("workers: 1\n");
    assert_false(c->metrics_off);
    config_free(c);
    c = parse_ok("metrics: on\n");
    assert_false(c->metrics_off);
    config_free(c);
    c = parse_ok("metrics: off\n");
    assert_true(c->metrics_off);
    config_free(c);
    c = parse_ok("metrics: \"off\"\n");
    assert_true(c->metrics_off);
    config_free(c);
    CHECK_ERRORS(bad);
}

/* watch: on (the default) or off; off: no reload on a file change. */
static void test_watch_switch(void **state)
{
    static const struct err_case bad[] = {
        {"watch: yes\n", "t.yaml:1:8: watch: expected on or off"},
        {"watch:\n", "t.yaml:1:7: watch: expected on or off"},
        {"workers: 1\nwatch: [off]\n", "t.yaml:2:8: watch: expected on or off"},
        {"watch: { files: off }\n", "t.yaml:1:8: watch: expected on or off"},
        {"wacth: off\n", "t.yaml:1:1: wacth: unknown key \"wacth\""},
    };
    struct config *c;

    c = parse_ok("workers: 1\n");
    assert_false(c->watch_off);
    config_free(c);
    c = parse_ok("watch: on\n");
    assert_false(c->watch_off);
    config_free(c);
    c = parse_ok("watch: off\nmetrics: on\n");
    assert_true(c->watch_off);
    assert_false(c->metrics_off);
    config_free(c);
    CHECK_ERRORS(bad);
}

static void test_small_configs(void **state)
{
    struct config *c;

    /* No listeners, no functions: nothing to serve, but valid. */
    c = parse_ok("workers: 2\n");
    assert_int_equal(c->workers, 2);
    assert_int_equal(c->n_listeners, 0);
    assert_int_equal(c->n_functions, 0);
    assert_null(c->listeners);
    assert_null(c->functions);
    config_free(c);

    c = parse_ok("listeners: []\nfunctions: []\n");
    assert_int_equal(c->n_listeners, 0);
    assert_int_equal(c->n_functions, 0);
    config_free(c);

    /* A function without routes serves nothing on ingress; also fine. */
    c = parse_ok("functions:\n"
                 "  - name: f\n"
                 "    endpoints: [127.0.0.1:1]\n"
                 "  - name: g\n"
                 "    endpoints: [127.0.0.1:2]\n"
                 "    ingress: { max_body: 1KiB, routes: [] }\n");
    assert_int_equal(c->n_functions, 2);
    assert_int_equal(c->functions[0].n_routes, 0);
    assert_int_equal(c->functions[1].n_routes, 0);
    assert_int_equal(c->functions[1].max_body, 1024);
    config_free(c);
}

static void test_full_config(void **state)
{
    struct config *c = parse_ok("workers: 3\n"
                                "admin: { listen: \"[::1]:9901\" }\n"
                                "access_log: /var/log/fnproxy.log\n"
                                "drain_timeout: 2m\n"
                                "listeners:\n"
                                "  - name: public\n"
                                "    listen: 0.0.0.0:8443\n"
                                "    header_timeout: 5s\n"
                                "    keepalive_timeout: 250ms\n"
                                "    max_header_bytes: 32KiB\n"
                                "  - name: internal\n"
                                "    listen: 127.0.0.1:8081\n"
                                "functions:\n"
                                "  - name: thumbnail\n"
                                "    endpoints: [127.0.0.1:9001, unix:/run/fn/t.sock]\n"
                                "    ingress:\n"
                                "      max_body: 8MiB\n"
                                "      routes:\n"
                                "        - name: resize\n"
                                "          match:\n"
                                "            listener: internal\n"
                                "            host: Thumb.Example.com\n"
                                "            path_prefix: /resize\n"
                                "            methods: [POST, PUT]\n"
                                "          timeout: 10s\n"
                                "          connect_timeout: 300ms\n");
    const struct cfg_route *r = &c->functions[0].routes[0];

    assert_int_equal(c->workers, 3);
    assert_true(c->has_admin);
    assert_int_equal(c->admin_listen.sa.ss_family, AF_INET6);
    assert_string_equal(c->admin_listen.text, "[::1]:9901");
    assert_int_equal(c->drain_timeout_ms, 120000);
    assert_string_equal(c->access_log, "/var/log/fnproxy.log");
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].header_timeout_ms, 5000);
    assert_int_equal(c->listeners[0].keepalive_timeout_ms, 250);
    assert_int_equal(c->listeners[0].max_header_bytes, 32768);
    assert_int_equal(c->listeners[1].header_timeout_ms, 10000);
    assert_int_equal(c->listeners[1].line, 11);
    assert_int_equal(c->functions[0].n_endpoints, 2);
    assert_int_equal(c->functions[0].endpoints[1].kind, CFG_ADDR_UNIX);
    assert_int_equal(c->functions[0].max_body, 8u << 20);
    assert_string_equal(r->name, "resize");
    assert_int_equal(r->listener, 1);
    assert_string_equal(r->host, "thumb.example.com");
    assert_string_equal(r->path_prefix, "/resize");
    assert_int_equal(r->methods, CFG_M_POST | CFG_M_PUT);
    assert_int_equal(r->t.timeout_ms, 10000);
    assert_int_equal(r->t.connect_timeout_ms, 300);
    assert_int_equal(r->line, 19);
    assert_int_equal(r->col, 11);
    config_free(c);
}

/* ---- files ---- */

/* The examples live beside the sources; find them from this file's path so
 * the test runs from the repository root or with an absolute __FILE__. */
static void example_path(char *buf, size_t size, const char *name)
{
    const char *f = __FILE__, *p = strstr(f, "tests/unit/");

    snprintf(buf, size, "%.*spolicy/examples/%s", (int)(p ? p - f : 0), f, name);
}

static void test_example_demo(void **state)
{
    char path[4096], err[CFG_ERR_MAX];
    struct config *c = NULL;
    const struct cfg_function *f;
    const struct sockaddr_in *sin;

    example_path(path, sizeof(path), "demo.yaml");
    if (config_load(path, &c, err, sizeof(err)) != 0)
        print_message("%s\n", err);
    assert_non_null(c);
    assert_int_equal(c->n_listeners, 2);
    assert_string_equal(c->listeners[0].name, "public");
    assert_string_equal(c->listeners[0].listen.text, "127.0.0.1:8080");
    assert_null(c->listeners[0].tls);
    assert_string_equal(c->listeners[1].name, "secure");
    assert_non_null(c->listeners[1].tls);
    assert_string_equal(c->listeners[1].tls->certificates[0].cert, "certs/out/server.crt");
    assert_string_equal(c->access_log, "stdout");
    assert_true(c->has_admin);
    assert_string_equal(c->admin_listen.text, "127.0.0.1:9901");
    assert_int_equal(c->n_functions, 1);
    f = &c->functions[0];
    assert_string_equal(f->name, "hello");
    assert_int_equal(f->n_endpoints, 1);
    sin = (const struct sockaddr_in *)&f->endpoints[0].sa;
    assert_int_equal(ntohs(sin->sin_port), 9001);
    assert_int_equal(f->n_routes, 3);
    assert_string_equal(c->path, path);
    config_free(c);
}

static void test_example_gateway(void **state)
{
    char path[4096], err[CFG_ERR_MAX];
    struct config *c = NULL;
    size_t i, routes = 0;

    example_path(path, sizeof(path), "gateway.yaml");
    if (config_load(path, &c, err, sizeof(err)) != 0)
        print_message("%s\n", err);
    assert_non_null(c);
    assert_true(c->n_listeners >= 2);
    assert_true(c->n_functions >= 2);
    for (i = 0; i < c->n_functions; i++)
        routes += c->functions[i].n_routes;
    assert_true(routes >= 4);
    config_free(c);
}

static void test_load_errors(void **state)
{
    char path[] = "/tmp/fnproxy-test-XXXXXX", err[CFG_ERR_MAX], want[256];
    struct config *c = (struct config *)&c;
    size_t big = (4u << 20) + 1, off;
    char chunk[4096];
    int fd;

    assert_int_equal(config_load("/nonexistent/fnproxy.yaml", &c, err, sizeof(err)), -ENOENT);
    assert_null(c);
    assert_string_equal(err, "cannot read /nonexistent/fnproxy.yaml: No such file or directory");

    assert_int_equal(config_load("/", &c, err, sizeof(err)), -EISDIR);
    assert_string_equal(err, "cannot read /: Is a directory");

    /* Errors inside the file carry its path as given. */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "workers: 1\nlisteners: 3\n", 24), 24);
    assert_int_equal(config_load(path, &c, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s:2:12: listeners: expected a list of listeners", path);
    assert_string_equal(err, want);

    /* One byte over 4 MiB is refused before parsing. */
    memset(chunk, '#', sizeof(chunk));
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    for (off = 0; off < big; off += sizeof(chunk)) {
        size_t n = big - off < sizeof(chunk) ? big - off : sizeof(chunk);

        assert_int_equal(write(fd, chunk, n), (ssize_t)n);
    }
    assert_int_equal(config_load(path, &c, err, sizeof(err)), -EFBIG);
    assert_null(c);
    snprintf(want, sizeof(want), "cannot read %s: larger than 4 MiB", path);
    assert_string_equal(err, want);
    close(fd);
    unlink(path);
}

static void test_method_bit(void **state)
{
    assert_int_equal(cfg_method_bit("GET", 3), CFG_M_GET);
    assert_int_equal(cfg_method_bit("HEAD", 4), CFG_M_HEAD);
    assert_int_equal(cfg_method_bit("POST", 4), CFG_M_POST);
    assert_int_equal(cfg_method_bit("PUT", 3), CFG_M_PUT);
    assert_int_equal(cfg_method_bit("DELETE", 6), CFG_M_DELETE);
    assert_int_equal(cfg_method_bit("PATCH", 5), CFG_M_PATCH);
    assert_int_equal(cfg_method_bit("OPTIONS", 7), CFG_M_OPTIONS);
    assert_int_equal(cfg_method_bit("TRACE", 5), CFG_M_TRACE);
    /* Length decides, not a NUL: "GETX" cut at 3 is GET; "GE" is nothing. */
    assert_int_equal(cfg_method_bit("GETX", 3), CFG_M_GET);
    assert_int_equal(cfg_method_bit("GETX", 4), 0);
    assert_int_equal(cfg_method_bit("GET", 2), 0);
    assert_int_equal(cfg_method_bit("get", 3), 0);
    assert_int_equal(cfg_method_bit("CONNECT", 7), 0);
    assert_int_equal(cfg_method_bit("", 0), 0);
    assert_int_equal(cfg_method_bit(NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_errors),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_list_limits),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_tls_listener),
        cmocka_unit_test(test_allowed_clients_and_upstream_tls),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_missing_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_max_header_bytes),
        cmocka_unit_test(test_addresses_good),
        cmocka_unit_test(test_addresses_bad),
        cmocka_unit_test(test_unix_path_length),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_match_listener),
        cmocka_unit_test(test_match_host),
        cmocka_unit_test(test_match_path_prefix),
        cmocka_unit_test(test_match_methods),
        cmocka_unit_test(test_shadowed_routes),
        cmocka_unit_test(test_egress_full),
        cmocka_unit_test(test_egress_unix_listen),
        cmocka_unit_test(test_route_retries),
        cmocka_unit_test(test_route_retries_errors),
        cmocka_unit_test(test_outlier_and_breaker),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_admission_errors),
        cmocka_unit_test(test_readiness),
        cmocka_unit_test(test_fault),
        cmocka_unit_test(test_min_client_rate),
        cmocka_unit_test(test_egress_small),
        cmocka_unit_test(test_egress_errors),
        cmocka_unit_test(test_egress_listener_limit),
        cmocka_unit_test(test_capture_listen),
        cmocka_unit_test(test_capture_errors),
        cmocka_unit_test(test_dns),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_access_log),
        cmocka_unit_test(test_small_configs),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_example_demo),
        cmocka_unit_test(test_example_gateway),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_method_bit),
        cmocka_unit_test(test_metrics_switch),
        cmocka_unit_test(test_watch_switch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
