/*
 * test_egress_addr.c - the egress target's canonical form and the address
 * classes behind deny_private.
 *
 * Every case is copied into a heap buffer of exactly its length, with no
 * NUL after it, so that under ASan a parser reading past len fails here.
 * Results are asserted exactly (error, host text, port, family), and every
 * class boundary is tested on both sides.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "egress_addr.h"

/* len of a case when it is the whole string */
#define WHOLE ((size_t)-1)

struct parse_case {
    const char *in;
    size_t len; /* WHOLE, or fewer bytes than the string holds */
    uint16_t default_port;
    int err;
    const char *host; /* expected when err == EGRESS_T_OK */
    uint16_t port;
    int family; /* 0 for a name */
};

static const struct parse_case parse_cases[] = {
    /* names, case folding, trailing dot */
    {"example.com:443", WHOLE, 0, EGRESS_T_OK, "example.com", 443, 0},
    {"Example.COM:80", WHOLE, 0, EGRESS_T_OK, "example.com", 80, 0},
    {"EXAMPLE.com", WHOLE, 443, EGRESS_T_OK, "example.com", 443, 0},
    {"example.com.:443", WHOLE, 0, EGRESS_T_OK, "example.com", 443, 0},
    {"example.com.", WHOLE, 80, EGRESS_T_OK, "example.com", 80, 0},
    {"example.com..:443", WHOLE, 0, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"example.com..", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"localhost.", WHOLE, 80, EGRESS_T_OK, "localhost", 80, 0},
    {"LocalHost", WHOLE, 80, EGRESS_T_OK, "localhost", 80, 0},
    {"xn--bcher-kva.example", WHOLE, 443, EGRESS_T_OK, "xn--bcher-kva.example", 443, 0},
    {"my_svc.internal:8080", WHOLE, 0, EGRESS_T_OK, "my_svc.internal", 8080, 0},
    {"a-b.c-d.example:1", WHOLE, 0, EGRESS_T_OK, "a-b.c-d.example", 1, 0},
    {"1password.example", WHOLE, 443, EGRESS_T_OK, "1password.example", 443, 0},
    {"1.2.3.4.example", WHOLE, 443, EGRESS_T_OK, "1.2.3.4.example", 443, 0},
    {"0x7f.example", WHOLE, 443, EGRESS_T_OK, "0x7f.example", 443, 0},
    {"a", WHOLE, 80, EGRESS_T_OK, "a", 80, 0},
    /* labels */
    {".example.com", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"a..b", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"-a.example", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"a-.example", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"a.-example", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"a.example-", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    {"..", WHOLE, 80, EGRESS_T_BAD_LABEL, NULL, 0, 0},
    /* empty */
    {"", WHOLE, 80, EGRESS_T_EMPTY, NULL, 0, 0},
    {":443", WHOLE, 0, EGRESS_T_EMPTY, NULL, 0, 0},
    {".", WHOLE, 80, EGRESS_T_EMPTY, NULL, 0, 0},
    {".:443", WHOLE, 0, EGRESS_T_EMPTY, NULL, 0, 0},
    {"[]:443", WHOLE, 0, EGRESS_T_EMPTY, NULL, 0, 0},
    {"[]", WHOLE, 80, EGRESS_T_EMPTY, NULL, 0, 0},
    /* IPv4 literals: only the dotted quad */
    {"127.0.0.1:80", WHOLE, 0, EGRESS_T_OK, "127.0.0.1", 80, AF_INET},
    {"127.0.0.1", WHOLE, 8080, EGRESS_T_OK, "127.0.0.1", 8080, AF_INET},
    {"127.0.0.1.:80", WHOLE, 0, EGRESS_T_OK, "127.0.0.1", 80, AF_INET},
    {"169.254.169.254", WHOLE, 80, EGRESS_T_OK, "169.254.169.254", 80, AF_INET},
    {"0.0.0.0:1", WHOLE, 0, EGRESS_T_OK, "0.0.0.0", 1, AF_INET},
    {"2130706433", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"2130706433:80", WHOLE, 0, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0x7f000001", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0X7F000001", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0177.0.0.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.0.0.01", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.0.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0x7f.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0x7f.0.0.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.0.0.0x1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"1e100", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"0x", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.0.0.256", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"127.0.0.1.1", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"1.2.3.4.5.6.7.8.9", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"example.123", WHOLE, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    /* IPv6 literals */
    {"[::1]:443", WHOLE, 0, EGRESS_T_OK, "::1", 443, AF_INET6},
    {"[::1]", WHOLE, 80, EGRESS_T_OK, "::1", 80, AF_INET6},
    {"[::1]", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[2001:DB8::1]:8443", WHOLE, 0, EGRESS_T_OK, "2001:db8::1", 8443, AF_INET6},
    {"[2001:0db8:0000:0000::0001]:1", WHOLE, 0, EGRESS_T_OK, "2001:db8::1", 1, AF_INET6},
    {"[::ffff:127.0.0.1]:443", WHOLE, 0, EGRESS_T_OK, "::ffff:127.0.0.1", 443, AF_INET6},
    {"[::FFFF:7f00:1]:443", WHOLE, 0, EGRESS_T_OK, "::ffff:127.0.0.1", 443, AF_INET6},
    {"[64:ff9b::a9fe:a9fe]", WHOLE, 80, EGRESS_T_OK, "64:ff9b::a9fe:a9fe", 80, AF_INET6},
    {"[::127.0.0.1]:80", WHOLE, 0, EGRESS_T_OK, "::127.0.0.1", 80, AF_INET6},
    {"[fe80::1%eth0]:443", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[fe80::1%25eth0]", WHOLE, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[127.0.0.1]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[example.com]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[::ffff:0177.0.0.1]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[::ffff:127.1]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[1:2:3:4:5:6:7:8:9]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[00000::1]:80", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[::1", WHOLE, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[::1:443", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[0000:0000:0000:0000:0000:ffff:255.255.255.255:1]", WHOLE, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"::1", WHOLE, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"fe80::1:443", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[::1]x", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:0", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:+80", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:65535", WHOLE, 0, EGRESS_T_OK, "::1", 65535, AF_INET6},
    {"[::1]]:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[[::1]]:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[::1]:80@evil", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    /* ports: decimal 1..65535, no sign, no leading zero */
    {"a:1", WHOLE, 0, EGRESS_T_OK, "a", 1, 0},
    {"a:65535", WHOLE, 0, EGRESS_T_OK, "a", 65535, 0},
    {"a:8080", WHOLE, 80, EGRESS_T_OK, "a", 8080, 0},
    {"a", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:0", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:00", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:65536", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:99999", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:123456", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:4294967297", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:08080", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:010", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:+80", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:-80", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:0x50", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:80a", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"host:80:90", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:80:90", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0}, /* reads as unbracketed IPv6 */
    {"example.com:80:90", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a:80 ", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a: 80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    /* bytes never accepted */
    {"user@example.com:443", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"user:pass@example.com:443", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com@evil.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"%31%32%37.0.0.1", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example%2ecom", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa\\mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"evil.example\\@good.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {" example.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com#x", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com/x", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com?x", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa\tmple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa\x01mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa\x7fmple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"b\xc3\xbc"
     "cher.example",
     WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"\x80", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com\xff", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"example.com\0.evil", 17, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa+mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa*mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"exa;mple.com", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a[b]", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"::1]", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[::1%eth0@x]", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    /* RFC 3986 authority spellings the grammar allows but a dialled name
     * never holds: IPvFuture, sub-delims and '~' in a reg-name, an empty
     * port, a port with a sign or letters */
    {"[v1.fe]:443", WHOLE, 0, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"[V7.a:b]", WHOLE, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"a!b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a$b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a&b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a'b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a(b).example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a,b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a=b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a~b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"a\"b.example", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"h:", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"h:x", WHOLE, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"h:1:2", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:x", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"[::1]:65536", WHOLE, 0, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"u@h", WHOLE, 80, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"@h:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"u@[::1]:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[::1]@h:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"h:80?", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"h:80#", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"h:80/", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"h:8\t0", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[::1\x01]:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    {"[::1 ]:80", WHOLE, 0, EGRESS_T_BAD_CHAR, NULL, 0, 0},
    /* ... and what it does accept of the grammar */
    {"A-Z_0.example~", 13, 80, EGRESS_T_OK, "a-z_0.example", 80, 0},
    {"[::]:80", WHOLE, 0, EGRESS_T_OK, "::", 80, AF_INET6},
    {"[1:2:3:4:5:6:7:8]:80", WHOLE, 0, EGRESS_T_OK, "1:2:3:4:5:6:7:8", 80, AF_INET6},
    {"[1:2:3:4:5:6:1.2.3.4]:80", WHOLE, 0, EGRESS_T_OK, "1:2:3:4:5:6:102:304", 80, AF_INET6},
    /* len shorter than the string: the bytes after it do not exist */
    {"example.com:443", 11, 80, EGRESS_T_OK, "example.com", 80, 0},
    {"example.com:4434", 15, 0, EGRESS_T_OK, "example.com", 443, 0},
    {"example.com.evil", 11, 80, EGRESS_T_OK, "example.com", 80, 0},
    {"[::1]:443", 5, 80, EGRESS_T_OK, "::1", 80, AF_INET6},
    {"[::1]:443", 4, 80, EGRESS_T_BAD_IPV6, NULL, 0, 0},
    {"127.0.0.1:80", 9, 80, EGRESS_T_OK, "127.0.0.1", 80, AF_INET},
    {"127.0.0.1", 8, 80, EGRESS_T_NUMERIC, NULL, 0, 0},
    {"a:80", 2, 80, EGRESS_T_BAD_PORT, NULL, 0, 0},
    {"a@b", 1, 80, EGRESS_T_OK, "a", 80, 0},
    {"example.com", 0, 80, EGRESS_T_EMPTY, NULL, 0, 0},
};

static size_t case_len(const struct parse_case *c)
{
    return c->len == WHOLE ? strlen(c->in) : c->len;
}

/* Prints the case before failing, so that a table failure names its row. */
static void check_case(size_t i, const struct parse_case *c)
{
    size_t len = case_len(c);
    char *buf = malloc(len ? len : 1);
    struct egress_target t;
    int err;
    bool ok;

    assert_non_null(buf);
    memcpy(buf, c->in, len); /* no NUL: an overread is an ASan error */
    memset(&t, 0xa5, sizeof(t));
    err = egress_target_parse(buf, len, c->default_port, &t);
    free(buf);

    ok = err == c->err;
    if (ok && err == EGRESS_T_OK)
        ok = strcmp(t.host, c->host) == 0 && t.host_len == strlen(c->host) && t.port == c->port &&
             t.family == c->family && t.is_ip == (c->family != 0);
    if (!ok)
        print_message("case %zu \"%.*s\" (len %zu, default %u): got %s \"%s\" port %u family %d, "
                      "want %s \"%s\" port %u family %d\n",
                      i, (int)len, c->in, len, c->default_port, egress_target_error_name(err),
                      err == EGRESS_T_OK ? t.host : "", t.port, t.family,
                      egress_target_error_name(c->err), c->host ? c->host : "", c->port, c->family);
    assert_true(ok);
    if (err != EGRESS_T_OK) {
        /* a refused target is all zeros, never half filled */
        static const struct egress_target zero;
        assert_memory_equal(&t, &zero, sizeof(t));
    }
}

static void test_parse_table(void **state)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++)
        check_case(i, &parse_cases[i]);
}

/* The literal's address bytes, not only its text. */
static void test_parse_addr(void **state)
{
    struct egress_target t;
    static const uint8_t v4[4] = {169, 254, 169, 254};
    static const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};

    assert_int_equal(egress_target_parse("169.254.169.254:80", 18, 0, &t), EGRESS_T_OK);
    assert_memory_equal(t.addr, v4, 4);
    assert_int_equal(egress_addr_classify(t.family, t.addr), EGRESS_A_LINK_LOCAL);

    assert_int_equal(egress_target_parse("[::ffff:127.0.0.1]:443", 22, 0, &t), EGRESS_T_OK);
    assert_true(t.is_ip);
    assert_memory_equal(t.addr, mapped, 16);
    assert_int_equal(egress_addr_classify(t.family, t.addr), EGRESS_A_LOOPBACK);

    assert_int_equal(egress_target_parse("[64:ff9b::a9fe:a9fe]", 20, 80, &t), EGRESS_T_OK);
    assert_int_equal(egress_addr_classify(t.family, t.addr), EGRESS_A_LINK_LOCAL);

    assert_int_equal(egress_target_parse("[::127.0.0.1]", 13, 80, &t), EGRESS_T_OK);
    assert_int_equal(egress_addr_classify(t.family, t.addr), EGRESS_A_LOOPBACK);

    assert_int_equal(egress_target_parse("example.com", 11, 80, &t), EGRESS_T_OK);
    assert_false(t.is_ip);
    assert_int_equal(t.family, 0);

    assert_int_equal(egress_target_parse(NULL, 0, 80, &t), EGRESS_T_EMPTY);
    assert_int_equal(egress_target_parse(NULL, 5, 80, &t), EGRESS_T_EMPTY);
}

/* Host 253 and label 63 are the limits; one more byte is TOO_LONG. Built
 * at run time in buffers of exactly the length. */
static int parse_sized(const char *s, size_t len, struct egress_target *t)
{
    char *buf = malloc(len);
    int err;

    assert_non_null(buf);
    memcpy(buf, s, len);
    err = egress_target_parse(buf, len, 443, t);
    free(buf);
    return err;
}

static void test_lengths(void **state)
{
    char s[300];
    struct egress_target t;

    /* one label: 63 ok, 64 too long */
    memset(s, 'a', 64);
    assert_int_equal(parse_sized(s, 63, &t), EGRESS_T_OK);
    assert_int_equal(t.host_len, 63);
    assert_int_equal(parse_sized(s, 64, &t), EGRESS_T_TOO_LONG);
    /* a long label in the middle */
    memcpy(s, "x.", 2);
    memset(s + 2, 'b', 64);
    memcpy(s + 66, ".y", 2);
    assert_int_equal(parse_sized(s, 68, &t), EGRESS_T_TOO_LONG);

    /* 63.63.63.61 = 253 bytes: ok; 254: too long */
    memset(s, 'c', sizeof(s));
    s[63] = s[127] = s[191] = '.';
    assert_int_equal(parse_sized(s, 253, &t), EGRESS_T_OK);
    assert_int_equal(t.host_len, 253);
    assert_int_equal(strlen(t.host), 253);
    assert_int_equal(t.host[0], 'c');
    assert_int_equal(parse_sized(s, 254, &t), EGRESS_T_TOO_LONG);
    /* 253 plus the trailing dot that is removed: ok */
    s[253] = '.';
    assert_int_equal(parse_sized(s, 254, &t), EGRESS_T_OK);
    assert_int_equal(t.host_len, 253);
    /* ... and with a port after it */
    memcpy(s + 254, ":8443", 5);
    assert_int_equal(parse_sized(s, 259, &t), EGRESS_T_OK);
    assert_int_equal(t.host_len, 253);
    assert_int_equal(t.port, 8443);
    /* upper case at the limit is folded */
    memset(s, 'C', 253);
    s[63] = s[127] = s[191] = '.';
    assert_int_equal(parse_sized(s, 253, &t), EGRESS_T_OK);
    assert_int_equal(t.host[252], 'c');

    /* the longest IPv6 text (45) is accepted, one more is not */
    assert_int_equal(parse_sized("[0000:0000:0000:0000:0000:ffff:255.255.255.255]", 47, &t),
                     EGRESS_T_OK);
    assert_string_equal(t.host, "::ffff:255.255.255.255");
    assert_int_equal(parse_sized("[0000:0000:0000:0000:0000:ffff:255.255.255.2555]", 48, &t),
                     EGRESS_T_BAD_IPV6);
}

static void test_error_names(void **state)
{
    static const char *const want[EGRESS_T__N] = {
        "ok",        "empty_host",   "too_long", "bad_char",
        "bad_label", "numeric_host", "bad_port", "bad_ipv6",
    };

    for (int e = 0; e < EGRESS_T__N; e++)
        assert_string_equal(egress_target_error_name(e), want[e]);
    assert_string_equal(egress_target_error_name(-1), "unknown");
    assert_string_equal(egress_target_error_name(EGRESS_T__N), "unknown");
}

struct class_case {
    const char *ip;
    enum egress_addr_class c;
};

static const struct class_case class_cases[] = {
    /* IPv4, each range with its neighbours */
    {"0.0.0.0", EGRESS_A_UNSPECIFIED},
    {"0.255.255.255", EGRESS_A_UNSPECIFIED},
    {"1.0.0.0", EGRESS_A_PUBLIC},
    {"8.8.8.8", EGRESS_A_PUBLIC},
    {"9.255.255.255", EGRESS_A_PUBLIC},
    {"10.0.0.0", EGRESS_A_PRIVATE},
    {"10.255.255.255", EGRESS_A_PRIVATE},
    {"11.0.0.0", EGRESS_A_PUBLIC},
    {"100.63.255.255", EGRESS_A_PUBLIC},
    {"100.64.0.0", EGRESS_A_CGNAT},
    {"100.127.255.255", EGRESS_A_CGNAT},
    {"100.128.0.0", EGRESS_A_PUBLIC},
    {"126.255.255.255", EGRESS_A_PUBLIC},
    {"127.0.0.0", EGRESS_A_LOOPBACK},
    {"127.0.0.1", EGRESS_A_LOOPBACK},
    {"127.255.255.255", EGRESS_A_LOOPBACK},
    {"128.0.0.0", EGRESS_A_PUBLIC},
    {"169.253.255.255", EGRESS_A_PUBLIC},
    {"169.254.0.0", EGRESS_A_LINK_LOCAL},
    {"169.254.169.254", EGRESS_A_LINK_LOCAL},
    {"169.254.255.255", EGRESS_A_LINK_LOCAL},
    {"169.255.0.0", EGRESS_A_PUBLIC},
    {"172.15.255.255", EGRESS_A_PUBLIC},
    {"172.16.0.0", EGRESS_A_PRIVATE},
    {"172.31.255.255", EGRESS_A_PRIVATE},
    {"172.32.0.0", EGRESS_A_PUBLIC},
    {"191.255.255.255", EGRESS_A_PUBLIC},
    {"192.0.0.0", EGRESS_A_RESERVED},
    {"192.0.0.255", EGRESS_A_RESERVED},
    {"192.0.1.0", EGRESS_A_PUBLIC},
    {"192.0.1.255", EGRESS_A_PUBLIC},
    {"192.0.2.0", EGRESS_A_RESERVED},
    {"192.0.2.255", EGRESS_A_RESERVED},
    {"192.0.3.0", EGRESS_A_PUBLIC},
    {"192.167.255.255", EGRESS_A_PUBLIC},
    {"192.168.0.0", EGRESS_A_PRIVATE},
    {"192.168.255.255", EGRESS_A_PRIVATE},
    {"192.169.0.0", EGRESS_A_PUBLIC},
    {"198.17.255.255", EGRESS_A_PUBLIC},
    {"198.18.0.0", EGRESS_A_RESERVED},
    {"198.19.255.255", EGRESS_A_RESERVED},
    {"198.20.0.0", EGRESS_A_PUBLIC},
    {"198.51.99.255", EGRESS_A_PUBLIC},
    {"198.51.100.0", EGRESS_A_RESERVED},
    {"198.51.100.255", EGRESS_A_RESERVED},
    {"198.51.101.0", EGRESS_A_PUBLIC},
    {"203.0.112.255", EGRESS_A_PUBLIC},
    {"203.0.113.0", EGRESS_A_RESERVED},
    {"203.0.113.255", EGRESS_A_RESERVED},
    {"203.0.114.0", EGRESS_A_PUBLIC},
    {"223.255.255.255", EGRESS_A_PUBLIC},
    {"224.0.0.0", EGRESS_A_MULTICAST},
    {"239.255.255.255", EGRESS_A_MULTICAST},
    {"240.0.0.0", EGRESS_A_RESERVED},
    {"255.255.255.254", EGRESS_A_RESERVED},
    {"255.255.255.255", EGRESS_A_BROADCAST},
    /* IPv6 */
    {"::", EGRESS_A_UNSPECIFIED},
    {"::1", EGRESS_A_LOOPBACK},
    {"2606:4700:4700::1111", EGRESS_A_PUBLIC},
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_PUBLIC},
    {"fc00::", EGRESS_A_UNIQUE_LOCAL},
    {"fd12:3456::1", EGRESS_A_UNIQUE_LOCAL},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_UNIQUE_LOCAL},
    {"fe00::", EGRESS_A_PUBLIC},
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_PUBLIC},
    {"fe80::", EGRESS_A_LINK_LOCAL},
    {"fe80::1", EGRESS_A_LINK_LOCAL},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_LINK_LOCAL},
    {"fec0::", EGRESS_A_RESERVED},
    {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_RESERVED},
    {"ff00::", EGRESS_A_MULTICAST},
    {"ff02::1", EGRESS_A_MULTICAST},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_MULTICAST},
    {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_PUBLIC},
    {"2001:db8::", EGRESS_A_RESERVED},
    {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", EGRESS_A_RESERVED},
    {"2001:db9::", EGRESS_A_PUBLIC},
    /* IPv4-mapped ::ffff:0:0/96 */
    {"::ffff:127.0.0.1", EGRESS_A_LOOPBACK},
    {"::ffff:10.1.2.3", EGRESS_A_PRIVATE},
    {"::ffff:169.254.169.254", EGRESS_A_LINK_LOCAL},
    {"::ffff:0.0.0.0", EGRESS_A_UNSPECIFIED},
    {"::ffff:255.255.255.255", EGRESS_A_BROADCAST},
    {"::ffff:8.8.8.8", EGRESS_A_PUBLIC},
    {"::1:ffff:127.0.0.1", EGRESS_A_PUBLIC}, /* not ::ffff:0:0/96 */
    /* IPv4-compatible ::/96 (but :: and ::1) */
    {"::127.0.0.1", EGRESS_A_LOOPBACK},
    {"::2", EGRESS_A_UNSPECIFIED}, /* 0.0.0.2 */
    {"::10.0.0.1", EGRESS_A_PRIVATE},
    {"::8.8.8.8", EGRESS_A_PUBLIC},
    {"::1:0:0", EGRESS_A_PUBLIC}, /* outside ::/96 */
    /* NAT64 well-known 64:ff9b::/96 */
    {"64:ff9b::a9fe:a9fe", EGRESS_A_LINK_LOCAL},
    {"64:ff9b::7f00:1", EGRESS_A_LOOPBACK},
    {"64:ff9b::c0a8:101", EGRESS_A_PRIVATE},
    {"64:ff9b::808:808", EGRESS_A_PUBLIC},
    {"64:ff9b::1:7f00:1", EGRESS_A_PUBLIC}, /* outside the /96 */
    {"64:ff9a:ffff:ffff:ffff:ffff:7f00:1", EGRESS_A_PUBLIC},
    /* NAT64 local-use 64:ff9b:1::/48, every RFC 6052 embedding */
    {"64:ff9b:1::a9fe:a9fe", EGRESS_A_LINK_LOCAL},     /* /96 */
    {"64:ff9b:1::808:808", EGRESS_A_PUBLIC},           /* /96 */
    {"64:ff9b:1:0:7f:0:100:0", EGRESS_A_LOOPBACK},     /* /64: 127.0.0.1 */
    {"64:ff9b:1:a:0:1::", EGRESS_A_PRIVATE},           /* /56: 10.0.0.1 */
    {"64:ff9b:1:a9fe:a9:fe00::", EGRESS_A_LINK_LOCAL}, /* /48: 169.254.169.254 */
    {"64:ff9b:1::", EGRESS_A_UNSPECIFIED},
    {"64:ff9b:2::a9fe:a9fe", EGRESS_A_PUBLIC}, /* outside the /48 */
    /* 6to4 2002::/16 */
    {"2002:a9fe:a9fe::", EGRESS_A_LINK_LOCAL},
    {"2002:7f00:1::1", EGRESS_A_LOOPBACK},
    {"2002:a00:1::", EGRESS_A_PRIVATE},
    {"2002:808:808::1", EGRESS_A_PUBLIC},
    {"2001:ffff:7f00:1::", EGRESS_A_PUBLIC},
    {"2003:7f00:1::", EGRESS_A_PUBLIC},
    /* Teredo 2001::/32, client IPv4 inverted in the last 32 bits */
    {"2001:0:4136:e378:8000:63bf:80ff:fffe", EGRESS_A_LOOPBACK}, /* 127.0.0.1 */
    {"2001::5601:5601", EGRESS_A_LINK_LOCAL},                    /* 169.254.169.254 */
    {"2001:0:4136:e378:8000:63bf:f5ff:fffe", EGRESS_A_PRIVATE},  /* 10.0.0.1 */
    {"2001:0:4136:e378:8000:63bf:f7f7:f7f7", EGRESS_A_PUBLIC},   /* 8.8.8.8 */
    {"2001::ffff:ffff", EGRESS_A_UNSPECIFIED},                   /* 0.0.0.0 */
    {"2001:1::80ff:fffe", EGRESS_A_PUBLIC},                      /* outside 2001::/32 */
};

static void test_classify_table(void **state)
{
    for (size_t i = 0; i < sizeof(class_cases) / sizeof(class_cases[0]); i++) {
        const struct class_case *c = &class_cases[i];
        int family = strchr(c->ip, ':') ? AF_INET6 : AF_INET;
        uint8_t addr[16];
        enum egress_addr_class got;

        if (inet_pton(family, c->ip, addr) != 1)
            print_message("case %zu: bad test address %s\n", i, c->ip);
        assert_int_equal(inet_pton(family, c->ip, addr), 1);
        got = egress_addr_classify(family, addr);
        if (got != c->c)
            print_message("case %zu %s: got %s, want %s\n", i, c->ip, egress_addr_class_name(got),
                          egress_addr_class_name(c->c));
        assert_int_equal(got, c->c);
        assert_int_equal(egress_addr_is_private(got), c->c != EGRESS_A_PUBLIC);
    }
}

static void test_classify_edges(void **state)
{
    static const uint8_t a[16] = {127, 0, 0, 1};

    /* the guard fails closed on what it cannot read */
    assert_int_equal(egress_addr_classify(AF_UNIX, a), EGRESS_A_RESERVED);
    assert_int_equal(egress_addr_classify(0, a), EGRESS_A_RESERVED);
    assert_int_equal(egress_addr_classify(AF_INET, NULL), EGRESS_A_RESERVED);
    assert_int_equal(egress_addr_classify(AF_INET6, NULL), EGRESS_A_RESERVED);
    assert_int_equal(egress_addr_classify(AF_INET, a), EGRESS_A_LOOPBACK);
}

static void test_class_names(void **state)
{
    static const char *const want[EGRESS_A__N] = {
        "public",       "loopback",  "private",   "cgnat",       "link_local",
        "unique_local", "multicast", "broadcast", "unspecified", "reserved",
    };

    for (int c = 0; c < EGRESS_A__N; c++) {
        assert_string_equal(egress_addr_class_name((enum egress_addr_class)c), want[c]);
        assert_int_equal(egress_addr_is_private((enum egress_addr_class)c), c != EGRESS_A_PUBLIC);
    }
    assert_string_equal(egress_addr_class_name(EGRESS_A__N), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),    cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_lengths),        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_classify_table), cmocka_unit_test(test_classify_edges),
        cmocka_unit_test(test_class_names),
    };

    print_message("%zu parse cases, %zu class cases\n",
                  sizeof(parse_cases) / sizeof(parse_cases[0]),
                  sizeof(class_cases) / sizeof(class_cases[0]));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
