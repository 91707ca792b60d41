/*
 * test_sni.c - the ClientHello's server name (policy/sni.c): a real
 * OpenSSL ClientHello fed whole and cut at every offset, the same hello
 * split over several records, and hand-made hellos that are truncated,
 * have no name, two names, two server_name extensions, odd bytes in the
 * name, lengths that overrun, or are not TLS at all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/ssl.h>

#include "sni.h"

/* --- hand-made hellos ------------------------------------------------------- */

struct buf {
    unsigned char b[20000];
    size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof(b->b));
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void put16(struct buf *b, size_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    put(b, x, 2);
}

/* A server_name extension with the given host names (type 0 each). */
static void ext_sni(struct buf *e, const char *const *names, size_t n)
{
    size_t list = 0;

    for (size_t i = 0; i < n; i++)
        list += 3 + strlen(names[i]);
    put16(e, 0);
    put16(e, list + 2);
    put16(e, list);
    for (size_t i = 0; i < n; i++) {
        unsigned char t = 0;
        put(e, &t, 1);
        put16(e, strlen(names[i]));
        put(e, names[i], strlen(names[i]));
    }
}

/* A ClientHello handshake message with extensions ext (NULL: none), in
 * records of at most rec bytes of payload. */
static void hello(struct buf *out, const struct buf *ext, size_t rec)
{
    struct buf body = {.n = 0}, hs = {.n = 0};
    unsigned char zero[32] = {0}, one = 1;

    put16(&body, 0x0303);
    put(&body, zero, 32);
    put(&body, &one, 1); /* session id: 1 byte */
    put(&body, zero, 1);
    put16(&body, 2);
    put16(&body, 0x1301);
    put(&body, &one, 1); /* compression: null */
    put(&body, zero, 1);
    if (ext != NULL) {
        put16(&body, ext->n);
        put(&body, ext->b, ext->n);
    }
    unsigned char h[4] = {1, (unsigned char)(body.n >> 16), (unsigned char)(body.n >> 8),
                          (unsigned char)body.n};
    put(&hs, h, 4);
    put(&hs, body.b, body.n);
    out->n = 0;
    for (size_t off = 0; off < hs.n; off += rec) {
        size_t k = hs.n - off < rec ? hs.n - off : rec;
        unsigned char r[5] = {22, 3, 1, (unsigned char)(k >> 8), (unsigned char)k};
        put(out, r, 5);
        put(out, hs.b + off, k);
    }
}

static enum sni_result parse(const struct buf *b, char *name)
{
    return sni_parse(b->b, b->n, name);
}

static void test_one_name(void **state)
{
    static const char *const n[] = {"Allowed.Example"};
    struct buf e = {.n = 0}, h;
    char name[SNI_NAME_MAX + 1];

    put16(&e, 0x000a); /* another extension first: supported_groups */
    put16(&e, 4);
    put16(&e, 2);
    put16(&e, 0x001d);
    ext_sni(&e, n, 1);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_OK);
    assert_string_equal(name, "Allowed.Example");
    /* Every prefix asks for more, never a wrong answer. */
    for (size_t i = 0; i < h.n; i++) {
        assert_int_equal(sni_parse(h.b, i, name), SNI_MORE);
        assert_string_equal(name, "");
    }
    /* What follows the hello (the client's next record) does not matter. */
    put(&h, "\x17\x03\x03\x00\x01x", 6);
    assert_int_equal(parse(&h, name), SNI_OK);
}

/* The handshake message cut into records of 1, 7 and 100 bytes. */
static void test_split_records(void **state)
{
    static const char *const n[] = {"a.example"};
    static const size_t sizes[] = {1, 7, 100};
    struct buf e = {.n = 0}, h;
    char name[SNI_NAME_MAX + 1];

    ext_sni(&e, n, 1);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        hello(&h, &e, sizes[s]);
        assert_int_equal(parse(&h, name), SNI_OK);
        assert_string_equal(name, "a.example");
        for (size_t i = 0; i < h.n; i++)
            assert_int_equal(sni_parse(h.b, i, name), SNI_MORE);
    }
}

static void test_no_name(void **state)
{
    struct buf e = {.n = 0}, h;
    char name[SNI_NAME_MAX + 1];

    hello(&h, NULL, 16384); /* no extensions at all */
    assert_int_equal(parse(&h, name), SNI_NONE);
    put16(&e, 0x002b); /* supported_versions only */
    put16(&e, 3);
    put(&e, "\x02\x03\x04", 3);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_NONE);
    assert_string_equal(name, "");
}

static void test_ambiguous(void **state)
{
    static const char *const two[] = {"a.example", "b.example"};
    static const char *const one[] = {"a.example"};
    struct buf e = {.n = 0}, h;
    char name[SNI_NAME_MAX + 1];

    ext_sni(&e, two, 2);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
    assert_string_equal(name, "");
    e.n = 0;
    ext_sni(&e, one, 1);
    ext_sni(&e, one, 1);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
}

static void test_bad_names(void **state)
{
    static const char *const bad[] = {"a b",   "a\r\nHost: x",     "a/b",
                                      "a:443", "\xc3\xa9.example", "a\x01"};
    char long_name[SNI_NAME_MAX + 2];
    struct buf e, h;
    char name[SNI_NAME_MAX + 1];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e.n = 0;
        ext_sni(&e, &bad[i], 1);
        hello(&h, &e, 16384);
        assert_int_equal(parse(&h, name), SNI_BAD);
    }
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    const char *ln = long_name;
    e.n = 0;
    ext_sni(&e, &ln, 1);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
    long_name[SNI_NAME_MAX] = '\0'; /* 253 is the longest taken */
    e.n = 0;
    ext_sni(&e, &ln, 1);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_OK);
    assert_int_equal(strlen(name), SNI_NAME_MAX);
    /* An empty name. */
    const char *empty = "";
    e.n = 0;
    ext_sni(&e, &empty, 1);
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
}

/* Lengths that disagree with what encloses them. */
static void test_overruns(void **state)
{
    static const char *const n[] = {"a.example"};
    struct buf e = {.n = 0}, h;
    char name[SNI_NAME_MAX + 1];

    ext_sni(&e, n, 1);
    e.b[5]++; /* the name list claims one byte more than its extension */
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
    e.b[5]--;
    e.b[3]++; /* the extension claims one byte more than the extensions */
    hello(&h, &e, 16384);
    assert_int_equal(parse(&h, name), SNI_BAD);
    e.b[3]--;
    hello(&h, &e, 16384);
    h.b[5 + 4 + 34] = 33; /* a session id longer than 32 */
    assert_int_equal(parse(&h, name), SNI_BAD);
    hello(&h, &e, 16384);
    h.b[3] = 0x40; /* a record longer than 2^14 */
    h.b[4] = 0x01;
    assert_int_equal(parse(&h, name), SNI_BAD);
    hello(&h, &e, 16384);
    h.b[3] = 0; /* an empty record */
    h.b[4] = 0;
    assert_int_equal(parse(&h, name), SNI_BAD);
}

static void test_not_tls(void **state)
{
    char name[SNI_NAME_MAX + 1];
    static const char *const inputs[] = {"GET / HTTP/1.1\r\n", "\x16\x04", "\x17\x03\x03\x00\x05",
                                         "SSH-2.0-OpenSSH\r\n"};

    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
        assert_int_equal(sni_parse((const unsigned char *)inputs[i], strlen(inputs[i]), name),
                         SNI_BAD);
    assert_int_equal(sni_parse((const unsigned char *)"\x16", 1, name), SNI_MORE);
    assert_int_equal(sni_parse((const unsigned char *)"", 0, name), SNI_MORE);
    /* A handshake record that is a ServerHello, not a ClientHello. */
    assert_int_equal(
        sni_parse((const unsigned char *)"\x16\x03\x03\x00\x04\x02\x00\x00\x00", 9, name), SNI_BAD);
    assert_string_equal(sni_result_name(SNI_OK), "ok");
    assert_string_equal(sni_result_name(SNI_BAD), "bad");
}

/* A ClientHello as OpenSSL writes it, with its many extensions. */
static void test_openssl_hello(void **state)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    BIO *rb, *wb;
    unsigned char out[8192];
    char name[SNI_NAME_MAX + 1];
    int n;

    assert_non_null(ctx);
    ssl = SSL_new(ctx);
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    assert_true(ssl && rb && wb);
    SSL_set_bio(ssl, rb, wb);
    assert_int_equal(SSL_set_tlsext_host_name(ssl, "api.allowed.example"), 1);
    SSL_set_connect_state(ssl);
    assert_true(SSL_do_handshake(ssl) <= 0); /* wants to read the server's answer */
    n = BIO_read(wb, out, sizeof(out));
    assert_true(n > 100);
    assert_int_equal(sni_parse(out, (size_t)n, name), SNI_OK);
    assert_string_equal(name, "api.allowed.example");
    for (int i = 0; i < n; i++)
        assert_int_equal(sni_parse(out, (size_t)i, name), SNI_MORE);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_name),  cmocka_unit_test(test_split_records),
        cmocka_unit_test(test_no_name),   cmocka_unit_test(test_ambiguous),
        cmocka_unit_test(test_bad_names), cmocka_unit_test(test_overruns),
        cmocka_unit_test(test_not_tls),   cmocka_unit_test(test_openssl_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
