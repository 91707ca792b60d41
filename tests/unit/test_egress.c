/*
 * test_egress.c - the egress decision (policy/egress.c): both stages, with
 * targets from egress_target_parse and rules from egress_rules_compile, the
 * way the egress listener will call them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "config.h"
#include "egress.h"

static const uint16_t p443[] = {443}, p80[] = {80}, p5432[] = {5432};
static const char *const v1[] = {"/v1/"};

/* The DESIGN.md example, plus a cidr for a test range on loopback. */
static const struct egress_rule_spec specs[] = {
    {.name = "stripe", .host = "api.stripe.com", .ports = p443, .n_ports = 1},
    {.name = "s3", .host = "*.s3.amazonaws.com", .ports = p443, .n_ports = 1},
    {.name = "orders",
     .host = "orders.internal",
     .ports = p80,
     .n_ports = 1,
     .methods = CFG_M_GET,
     .paths = v1,
     .n_paths = 1},
    {.name = "db", .cidr = "10.1.0.0/16", .ports = p5432, .n_ports = 1},
    {.name = "orders-net", .cidr = "10.2.0.0/16", .ports = p80, .n_ports = 1},
};

static struct egress_rules *rules;

static int setup(void **state)
{
    char err[256];

    rules = egress_rules_compile(specs, sizeof(specs) / sizeof(specs[0]), err, sizeof(err));
    if (rules == NULL)
        print_message("compile: %s\n", err);
    return rules == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    egress_rules_free(rules);
    return 0;
}

/* Both stages for authority, method, path and one address (text). */
static struct egress_decision decide(bool deny_private, const char *authority, unsigned method,
                                     const char *path, const char *ip)
{
    struct egress_policy p = {.rules = rules, .deny_private = deny_private};
    struct egress_decision d;
    struct egress_target t;
    uint8_t addr[16];
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;

    assert_int_equal(egress_target_parse(authority, strlen(authority), 0, &t), EGRESS_T_OK);
    egress_decide_target(&p, &t, method, path, path ? strlen(path) : 0, &d);
    assert_int_equal(inet_pton(family, ip, addr), 1);
    egress_decide_addr(&p, &t, family, addr, method, path, path ? strlen(path) : 0, &d);
    return d;
}

static void expect(struct egress_decision d, enum egress_deny deny, const char *rule)
{
    assert_string_equal(egress_deny_name(d.deny), egress_deny_name(deny));
    if (rule == NULL)
        assert_int_equal(d.rule, -1);
    else
        assert_string_equal(egress_rules_name(rules, d.rule), rule);
}

static void test_names_allowed_and_denied(void **state)
{
    expect(decide(true, "api.stripe.com:443", CFG_M_POST, NULL, "54.187.174.169"), EGRESS_ALLOW,
           "stripe");
    expect(decide(true, "API.Stripe.COM.:443", CFG_M_POST, NULL, "8.8.8.8"), EGRESS_ALLOW,
           "stripe");
    expect(decide(true, "api.stripe.com:80", CFG_M_GET, "/", "8.8.8.8"), EGRESS_DENY_NO_RULE, NULL);
    expect(decide(true, "evil.com:443", CFG_M_GET, NULL, "8.8.8.8"), EGRESS_DENY_NO_RULE, NULL);
    expect(decide(true, "bucket.s3.amazonaws.com:443", CFG_M_GET, NULL, "52.0.0.1"), EGRESS_ALLOW,
           "s3");
    expect(decide(true, "s3.amazonaws.com:443", CFG_M_GET, NULL, "52.0.0.1"), EGRESS_DENY_NO_RULE,
           NULL);
}

/* SSRF: an allowed name that resolves to a private address is refused
 * unless a cidr rule names that range and port. */
static void test_private_addresses(void **state)
{
    static const char *const private_ips[] = {
        "127.0.0.1", "10.0.0.1", "169.254.169.254",        "100.64.0.1",         "::1",
        "fe80::1",   "fd00::1",  "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "0.0.0.0",
        "224.0.0.1"};

    for (size_t i = 0; i < sizeof(private_ips) / sizeof(private_ips[0]); i++) {
        struct egress_decision d =
            decide(true, "api.stripe.com:443", CFG_M_GET, NULL, private_ips[i]);

        expect(d, EGRESS_DENY_PRIVATE, NULL);
        assert_int_not_equal(d.cls, EGRESS_A_PUBLIC);
        /* deny_private off: the name's rule is enough. */
        expect(decide(false, "api.stripe.com:443", CFG_M_GET, NULL, private_ips[i]), EGRESS_ALLOW,
               "stripe");
    }
    /* A cidr rule of the function names its range, for its ports only. */
    expect(decide(true, "orders.internal:80", CFG_M_GET, "/v1/x", "10.2.3.4"), EGRESS_ALLOW,
           "orders");
    expect(decide(true, "orders.internal:80", CFG_M_GET, "/v1/x", "10.1.3.4"), EGRESS_DENY_PRIVATE,
           NULL);
    expect(decide(true, "orders.internal:80", CFG_M_POST, "/v1/x", "10.2.3.4"), EGRESS_DENY_NO_RULE,
           NULL);
    expect(decide(true, "orders.internal:80", CFG_M_GET, "/v2/x", "10.2.3.4"), EGRESS_DENY_NO_RULE,
           NULL);
}

/* IP literals: allowed by a cidr rule, and refused in any disguise the
 * parser does not take for an address. */
static void test_ip_literals(void **state)
{
    struct egress_target t;

    expect(decide(true, "10.1.2.3:5432", 0, NULL, "10.1.2.3"), EGRESS_ALLOW, "db");
    expect(decide(true, "10.1.2.3:5433", 0, NULL, "10.1.2.3"), EGRESS_DENY_NO_RULE, NULL);
    expect(decide(true, "10.3.2.3:5432", 0, NULL, "10.3.2.3"), EGRESS_DENY_NO_RULE, NULL);
    expect(decide(true, "[::ffff:10.1.2.3]:5432", 0, NULL, "::ffff:10.1.2.3"), EGRESS_DENY_NO_RULE,
           NULL);
    assert_int_equal(egress_target_parse("2130706433:80", 13, 0, &t), EGRESS_T_NUMERIC);
    assert_int_equal(egress_target_parse("0x7f.1:80", 9, 0, &t), EGRESS_T_NUMERIC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_allowed_and_denied),
        cmocka_unit_test(test_private_addresses),
        cmocka_unit_test(test_ip_literals),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
