/*
 * test_config_json.c - GET /config's renderer: a full config (the README's
 * reference example) parsed from a string, rendered, checked to be valid
 * JSON by a minimal parser below, and searched for the values it must show
 * and the key paths it must never show; strings with quotes, backslashes
 * and control characters come out escaped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_json.h"

/* ---- a minimal JSON validator (RFC 8259 grammar, no semantics) ---- */

static void js_ws(const char **p)
{
    while (**p == ' ' || **p == '\n' || **p == '\r' || **p == '\t')
        (*p)++;
}

static bool js_value(const char **p, int depth);

static bool js_string(const char **p)
{
    if (**p != '"')
        return false;
    for ((*p)++; **p != '"'; (*p)++) {
        unsigned char ch = (unsigned char)**p;
        if (ch == '\0' || ch < 0x20)
            return false; /* raw control characters are not allowed */
        if (ch != '\\')
            continue;
        (*p)++;
        if (**p == 'u') {
            for (int i = 1; i <= 4; i++)
                if (!strchr("0123456789abcdefABCDEF", (*p)[i]) || (*p)[i] == '\0')
                    return false;
            *p += 4;
        } else if (**p == '\0' || !strchr("\"\\/bfnrt", **p)) {
            return false;
        }
    }
    (*p)++;
    return true;
}

static bool js_number(const char **p)
{
    const char *s = *p;

    if (**p == '-')
        (*p)++;
    if (**p == '0')
        (*p)++;
    else if (**p >= '1' && **p <= '9')
        while (**p >= '0' && **p <= '9')
            (*p)++;
    else
        return false;
    if (**p == '.') {
        (*p)++;
        if (!(**p >= '0' && **p <= '9'))
            return false;
        while (**p >= '0' && **p <= '9')
            (*p)++;
    }
    return *p > s;
}

static bool js_list(const char **p, int depth, char close, bool keyed)
{
    (*p)++;
    js_ws(p);
    if (**p == close) {
        (*p)++;
        return true;
    }
    for (;;) {
        js_ws(p);
        if (keyed) {
            if (!js_string(p))
                return false;
            js_ws(p);
            if (**p != ':')
                return false;
            (*p)++;
        }
        if (!js_value(p, depth + 1))
            return false;
        js_ws(p);
        if (**p == close) {
            (*p)++;
            return true;
        }
        if (**p != ',')
            return false;
        (*p)++;
    }
}

static bool js_value(const char **p, int depth)
{
    js_ws(p);
    if (depth > 64)
        return false;
    switch (**p) {
    case '{':
        return js_list(p, depth, '}', true);
    case '[':
        return js_list(p, depth, ']', false);
    case '"':
        return js_string(p);
    case 't':
        return strncmp(*p, "true", 4) == 0 ? (*p += 4, true) : false;
    case 'f':
        return strncmp(*p, "false", 5) == 0 ? (*p += 5, true) : false;
    case 'n':
        return strncmp(*p, "null", 4) == 0 ? (*p += 4, true) : false;
    default:
        return js_number(p);
    }
}

static bool json_valid(const char *s)
{
    const char *p = s;

    if (!js_value(&p, 0))
        return false;
    js_ws(&p);
    return *p == '\0';
}

/* ---- helpers ---- */

static struct config *parse(const char *yaml)
{
    char err[CFG_ERR_MAX];
    struct config *c = NULL;
    int rc = config_parse("/etc/fnproxy/fn.yaml", yaml, strlen(yaml), &c, err, sizeof(err));

    if (rc != 0)
        print_message("unexpected error: %s\n", err);
    assert_int_equal(rc, 0);
    return c;
}

static char *render(const struct config *c, const struct config_json_meta *m)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    assert_int_equal(config_json_render(f, c, m), 0);
    assert_int_equal(fclose(f), 0);
    if (!json_valid(text))
        print_message("invalid JSON:\n%s\n", text);
    assert_true(json_valid(text));
    return text;
}

static void has(const char *json, const char *want)
{
    if (strstr(json, want) == NULL)
        print_message("missing %s in:\n%s\n", want, json);
    assert_non_null(strstr(json, want));
}

/* The README's reference config, with key file names to look for. */
static const char full_yaml[] =
    "workers: auto\n"
    "admin: { listen: 127.0.0.1:9901 }\n"
    "drain_timeout: 10s\n"
    "access_log: /var/log/fnproxy/access.log\n"
    "dns:\n"
    "  servers: [127.0.0.1:5353, \"[::1]:53\"]\n"
    "  timeout: 5s\n"
    "  cache: { min_ttl: 1s, max_ttl: 300s, entries: 1024 }\n"
    "listeners:\n"
    "  - name: public\n"
    "    listen: 0.0.0.0:8080\n"
    "    header_timeout: 10s\n"
    "    keepalive_timeout: 60s\n"
    "    min_client_rate: 1KiB\n"
    "    max_header_bytes: 16KiB\n"
    "  - name: secure\n"
    "    listen: 0.0.0.0:8443\n"
    "    tls:\n"
    "      certificates:\n"
    "        - { cert: certs/out/server.crt, key: certs/out/SERVER-SECRET.key }\n"
    "        - { cert: certs/out/wildcard.crt, key: \"/k/WILD\\\"q\\\\b-SECRET.key\" }\n"
    "      client_ca: certs/out/ca.crt\n"
    "      min_version: \"1.3\"\n"
    "      sni_strict: true\n"
    "      handshake_timeout: 10s\n"
    "functions:\n"
    "  - name: thumbnail\n"
    "    endpoints: [127.0.0.1:9001, unix:/run/fn/t.sock]\n"
    "    upstream_tls: { ca: certs/out/ca.crt, server_name: localhost }\n"
    "    outlier: { consecutive_failures: 5, base_ejection_time: 10s, max_ejection_time: 300s,\n"
    "               max_ejected_percent: 50, failure_percent: 10, failure_window: 20 }\n"
    "    circuit_breaker: { max_active: 1000, max_pending: 900 }\n"
    "    readiness: { path: /healthz, interval: 50ms, timeout: 1s }\n"
    "    ingress:\n"
    "      max_body: 8MiB\n"
    "      max_concurrency: 50\n"
    "      queue: { depth: 100, timeout: 5s }\n"
    "      rate_limit: { rps: 2.5, burst: 100, per: client_ip }\n"
    "      routes:\n"
    "        - name: resize\n"
    "          match: { listener: public, host: thumb.example.com, path_prefix: /resize,\n"
    "                   methods: [POST, PUT] }\n"
    "          timeout: 10s\n"
    "          per_try_timeout: 3s\n"
    "          idle_timeout: 10s\n"
    "          connect_timeout: 1s\n"
    "          retries:\n"
    "            max: 2\n"
    "            on: [connect-failure, reset, gateway-error, per-try-timeout, 429]\n"
    "            backoff: { base: 25ms, max: 250ms }\n"
    "            budget: { ratio: 0.2, min_per_s: 5 }\n"
    "            replay_buffer: 64KiB\n"
    "          fault: { delay: { percent: 1.5, duration: 100ms }, abort: { percent: 0, status: 503 "
    "} }\n"
    "        - name: secure\n"
    "          match: { listener: secure, path_prefix: / }\n"
    "    egress:\n"
    "      listen: 127.0.0.1:15001\n"
    "      capture: { listen: 127.0.0.1:15006, first_bytes_timeout: 300ms }\n"
    "      mode: report\n"
    "      deny_private: true\n"
    "      tunnel_idle_timeout: 5m\n"
    "      allow:\n"
    "        - { name: stripe, host: api.stripe.com, ports: [443] }\n"
    "        - { name: orders, host: orders.internal, ports: [80, 8080], methods: [GET],\n"
    "            paths: [/v1/], tls: originate, ca: certs/out/ca.crt, timeout: 5s,\n"
    "            connect_timeout: 2s }\n"
    "        - { name: db, cidr: 10.1.0.0/16, ports: [5432] }\n";

/* ---- tests ---- */

static void test_full(void **state)
{
    struct config *c = parse(full_yaml);
    struct config_json_meta m = {
        .generation = 7, .hash = "0123456789abcdef", .loaded_at_ms = 1767323045678, .workers = 4};
    char *j = render(c, &m);

    (void)state;
    has(j, "{\"generation\":7,\"hash\":\"0123456789abcdef\","
           "\"loaded_at\":\"2026-01-02T03:04:05.678Z\","
           "\"path\":\"/etc/fnproxy/fn.yaml\",\"workers\":\"auto\",\"workers_effective\":4,");
    has(j, "\"admin\":{\"listen\":\"127.0.0.1:9901\"}");
    has(j, "\"drain_timeout\":10000,\"access_log\":\"/var/log/fnproxy/access.log\","
           "\"metrics\":\"on\",\"watch\":\"on\"");
    has(j, "\"dns\":{\"servers\":\"127.0.0.1:5353,[::1]:53\",\"timeout\":5000,"
           "\"cache\":{\"min_ttl\":1000,\"max_ttl\":300000,\"entries\":1024}}");
    has(j, "{\"name\":\"public\",\"kind\":\"ingress\",\"listen\":\"0.0.0.0:8080\","
           "\"header_timeout\":10000,\"keepalive_timeout\":60000,\"max_header_bytes\":16384,"
           "\"min_client_rate\":1024,\"tls\":null}");
    /* Certificates: the cert path shows, the key never does. */
    has(j, "\"certificates\":[{\"cert\":\"certs/out/server.crt\",\"key\":\"(redacted)\"},"
           "{\"cert\":\"certs/out/wildcard.crt\",\"key\":\"(redacted)\"}],"
           "\"client_ca\":\"certs/out/ca.crt\",\"min_version\":\"1.3\",\"sni_strict\":true,"
           "\"handshake_timeout\":10000}");
    assert_null(strstr(j, "SECRET"));
    assert_null(strstr(j, ".key\""));
    /* The egress listener, after the top-level ones. */
    has(j, "{\"name\":\"thumbnail.egress\",\"kind\":\"egress\",\"function\":\"thumbnail\","
           "\"listen\":\"127.0.0.1:15001\",");
    has(j, "\"endpoints\":[\"127.0.0.1:9001\",\"unix:/run/fn/t.sock\"],"
           "\"upstream_tls\":{\"ca\":\"certs/out/ca.crt\",\"server_name\":\"localhost\"},"
           "\"readiness\":{\"path\":\"/healthz\",\"interval\":50,\"timeout\":1000},"
           "\"outlier\":{\"consecutive_failures\":5,\"base_ejection_time\":10000,"
           "\"max_ejection_time\":300000,\"max_ejected_percent\":50,\"failure_percent\":10,"
           "\"failure_window\":20},\"circuit_breaker\":{\"max_active\":1000,\"max_pending\":900}");
    has(j, "\"ingress\":{\"max_body\":8388608,\"allowed_clients\":null,\"max_concurrency\":50,"
           "\"queue\":{\"depth\":100,\"timeout\":5000},"
           "\"rate_limit\":{\"rps\":2.5,\"burst\":100,\"per\":\"client_ip\"},");
    has(j, "{\"name\":\"resize\",\"match\":{\"listener\":\"public\",\"host\":\"thumb.example.com\","
           "\"path_prefix\":\"/resize\",\"methods\":[\"POST\",\"PUT\"]},\"timeout\":10000,"
           "\"connect_timeout\":1000,\"per_try_timeout\":3000,\"idle_timeout\":10000,"
           "\"retries\":{\"max\":2,\"on\":[\"connect-failure\",\"reset\",\"gateway-error\","
           "\"per-try-timeout\",429],\"backoff\":{\"base\":25,\"max\":250},"
           "\"budget\":{\"ratio\":0.2,\"min_per_s\":5},\"replay_buffer\":65536},"
           "\"fault\":{\"delay\":{\"percent\":1.5,\"duration\":100},\"abort\":{\"percent\":0,"
           "\"status\":503}}}");
    has(j, "\"match\":{\"listener\":\"secure\",\"host\":null,\"path_prefix\":\"/\","
           "\"methods\":null}");
    has(j, "{\"name\":\"thumbnail.capture\",\"kind\":\"capture\",\"function\":\"thumbnail\","
           "\"listen\":\"127.0.0.1:15006\",");
    has(j, "\"egress\":{\"listen\":\"127.0.0.1:15001\",\"capture\":{\"listen\":"
           "\"127.0.0.1:15006\",\"first_bytes_timeout\":300},"
           "\"mode\":\"report\",\"deny_private\":true,"
           "\"tunnel_idle_timeout\":300000,\"allow\":[{\"name\":\"stripe\","
           "\"host\":\"api.stripe.com\",\"cidr\":null,\"ports\":[443],\"methods\":null,"
           "\"paths\":null,\"tls\":null,\"ca\":null,");
    has(j, "{\"name\":\"orders\",\"host\":\"orders.internal\",\"cidr\":null,\"ports\":[80,8080],"
           "\"methods\":[\"GET\"],\"paths\":[\"/v1/\"],\"tls\":\"originate\","
           "\"ca\":\"certs/out/ca.crt\",\"timeout\":5000,\"connect_timeout\":2000,");
    has(j, "{\"name\":\"db\",\"host\":null,\"cidr\":\"10.1.0.0/16\",\"ports\":[5432],");
    assert_int_equal(j[strlen(j) - 1], '\n');
    free(j);
    config_free(c);
}

/* Without meta (--check would have none): no generation, no hash, no
 * loaded_at; an explicit worker count; metrics and watch off. */
static void test_minimal(void **state)
{
    struct config *c = parse("workers: 2\nmetrics: off\nwatch: off\n");
    char *j = render(c, NULL);

    (void)state;
    assert_string_equal(j, "{\"path\":\"/etc/fnproxy/fn.yaml\",\"workers\":2,\"admin\":null,"
                           "\"drain_timeout\":10000,\"access_log\":null,\"metrics\":\"off\","
                           "\"watch\":\"off\",\"dns\":{\"servers\":null,\"timeout\":5000,"
                           "\"cache\":{\"min_ttl\":0,\"max_ttl\":300000,\"entries\":1024}},"
                           "\"listeners\":[],"
                           "\"functions\":[]}\n");
    free(j);
    config_free(c);
}

/* Quotes, backslashes and control characters in strings come out escaped
 * (a path may hold any of them), and the result still parses. */
static void test_escaping(void **state)
{
    static const char yaml[] = "access_log: \"/tmp/a\\\"b\\\\c\\u00e9 d.log\"\n"
                               "listeners:\n"
                               "  - name: public\n"
                               "    listen: 127.0.0.1:8080\n"
                               "functions:\n"
                               "  - name: hello\n"
                               "    endpoints: [127.0.0.1:9001]\n"
                               "    ingress:\n"
                               "      routes:\n"
                               "        - name: r0\n"
                               "          match: { path_prefix: \"/a\\\"b\" }\n";
    struct config *c;
    char *j;

    (void)state;
    c = parse(yaml);
    free(c->path); /* as a caller could name it: with a tab and a quote */
    c->path = strdup("/etc/\tq\"uo\\te\x01.yaml");
    assert_non_null(c->path);
    j = render(c, NULL);
    has(j, "\"path\":\"/etc/\\tq\\\"uo\\\\te\\u0001.yaml\"");
    has(j, "\"access_log\":\"/tmp/a\\\"b\\\\c\xc3\xa9 d.log\"");
    has(j, "\"path_prefix\":\"/a\\\"b\"");
    free(j);
    config_free(c);
}

/* allowed_clients, as a list; rate_limit absent is null. */
static void test_allowed_clients(void **state)
{
    static const char yaml[] = "listeners:\n"
                               "  - name: secure\n"
                               "    listen: 127.0.0.1:8443\n"
                               "    tls:\n"
                               "      certificates: [{ cert: /c/s.crt, key: /c/HIDDEN.key }]\n"
                               "      client_ca: /c/ca.crt\n"
                               "functions:\n"
                               "  - name: hello\n"
                               "    endpoints: [127.0.0.1:9001]\n"
                               "    ingress:\n"
                               "      allowed_clients: [\"spiffe://x/a\", \"spiffe://x/b\"]\n"
                               "      routes:\n"
                               "        - name: r0\n"
                               "          match: { listener: secure }\n";
    struct config *c = parse(yaml);
    char *j = render(c, NULL);

    (void)state;
    has(j, "\"allowed_clients\":[\"spiffe://x/a\",\"spiffe://x/b\"],\"max_concurrency\":0,"
           "\"queue\":{\"depth\":100,\"timeout\":5000},\"rate_limit\":null,");
    has(j, "\"cert\":\"/c/s.crt\",\"key\":\"(redacted)\"");
    has(j, "\"min_version\":\"1.2\",\"sni_strict\":false");
    assert_null(strstr(j, "HIDDEN"));
    has(j, "\"readiness\":null");
    has(j, "\"upstream_tls\":null");
    has(j, "\"egress\":null");
    free(j);
    config_free(c);
}

/* The validator itself refuses what it should (so a pass means something). */
static void test_validator(void **state)
{
    (void)state;
    assert_true(json_valid("{\"a\":[1,2.5,true,null,\"x\\\"\\u00e9\"],\"b\":{}}"));
    assert_false(json_valid("{\"a\":1,}"));
    assert_false(json_valid("{\"a\":\"x\ty\"}"));
    assert_false(json_valid("{\"a\":\"x\\qy\"}"));
    assert_false(json_valid("{\"a\":1}{"));
    assert_false(json_valid("[1 2]"));
    assert_false(json_valid("{\"a\" 1}"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validator),       cmocka_unit_test(test_full),
        cmocka_unit_test(test_minimal),         cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_allowed_clients),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
