/*
 * test_capture.c - what the capture listener makes of a redirected
 * connection's first bytes (proxy/capture.c): HTTP, a ClientHello with or
 * without a name, anything else, too few bytes to tell; and the synthetic
 * CONNECT head for a name or the original address.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "capture.h"

/* A ClientHello with one server name, in one record. */
static size_t hello(unsigned char *b, const char *name)
{
    size_t nl = strlen(name), ext = 9 + nl, body = 2 + 32 + 1 + 4 + 2 + 2 + ext, n = 0;

    b[n++] = 22, b[n++] = 3, b[n++] = 1, b[n++] = (unsigned char)((body + 4) >> 8),
    b[n++] = (unsigned char)(body + 4);
    b[n++] = 1, b[n++] = 0, b[n++] = (unsigned char)(body >> 8), b[n++] = (unsigned char)body;
    b[n++] = 3, b[n++] = 3;
    memset(b + n, 0, 32), n += 32;
    b[n++] = 0;                                        /* session id */
    b[n++] = 0, b[n++] = 2, b[n++] = 0x13, b[n++] = 1; /* one cipher suite */
    b[n++] = 1, b[n++] = 0;                            /* compression: null */
    b[n++] = (unsigned char)(ext >> 8), b[n++] = (unsigned char)ext;
    b[n++] = 0, b[n++] = 0, b[n++] = (unsigned char)((nl + 5) >> 8),
    b[n++] = (unsigned char)(nl + 5);
    b[n++] = (unsigned char)((nl + 3) >> 8), b[n++] = (unsigned char)(nl + 3);
    b[n++] = 0, b[n++] = (unsigned char)(nl >> 8), b[n++] = (unsigned char)nl;
    memcpy(b + n, name, nl);
    return n + nl;
}

static void test_classify(void **state)
{
    unsigned char b[512];
    char name[SNI_NAME_MAX + 1];
    size_t n = hello(b, "api.fn.test");

    (void)state;
    assert_int_equal(capture_classify((char *)b, n, false, name), CAPTURE_RAW);
    assert_string_equal(name, "api.fn.test");
    assert_int_equal(capture_classify((char *)b, n - 1, false, name), CAPTURE_PENDING);
    assert_int_equal(capture_classify((char *)b, n - 1, true, name), CAPTURE_RAW);
    assert_string_equal(name, ""); /* cut short: no name */
    assert_int_equal(capture_classify((char *)b, 3, false, name), CAPTURE_PENDING);

    assert_int_equal(capture_classify("GET / HTTP/1.1\r\n", 16, false, name), CAPTURE_HTTP);
    assert_int_equal(capture_classify("OPTIONS ", 8, false, name), CAPTURE_HTTP);
    assert_int_equal(capture_classify("GE", 2, false, name), CAPTURE_PENDING);
    assert_int_equal(capture_classify("GE", 2, true, name), CAPTURE_RAW);
    assert_int_equal(capture_classify("get / HTTP/1.1", 14, false, name), CAPTURE_RAW);
    assert_int_equal(capture_classify(" GET", 4, false, name), CAPTURE_RAW);
    assert_int_equal(capture_classify("ABCDEFGHIJKLMNOPQ ", 18, false, name), CAPTURE_RAW);
    assert_int_equal(capture_classify("SSH-2.0-x\r\n", 11, false, name), CAPTURE_RAW);
    assert_int_equal(capture_classify("\x16\x03\x03\x00\x04\x02\x00\x00\x00", 9, false, name),
                     CAPTURE_RAW); /* TLS, but no ClientHello */
    assert_string_equal(name, "");
    assert_int_equal(capture_classify("", 0, false, name), CAPTURE_PENDING);
    assert_int_equal(capture_classify("", 0, true, name),
                     CAPTURE_RAW); /* the server speaks first */
}

static void test_connect_head(void **state)
{
    struct capture c;
    struct sockaddr_in *sin = (struct sockaddr_in *)&c.dst;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c.dst;
    char text[64];
    size_t n;

    (void)state;
    memset(&c, 0, sizeof(c));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(443);
    inet_pton(AF_INET, "203.0.113.66", &sin->sin_addr);
    n = capture_connect_head(&c, "api.fn.test");
    assert_int_equal(n, strlen(c.head));
    assert_string_equal(c.head,
                        "CONNECT api.fn.test:443 HTTP/1.1\r\nhost: api.fn.test:443\r\n\r\n");
    capture_connect_head(&c, "");
    assert_string_equal(c.head,
                        "CONNECT 203.0.113.66:443 HTTP/1.1\r\nhost: 203.0.113.66:443\r\n\r\n");
    assert_int_equal(capture_dst_port(&c.dst), 443);

    memset(&c, 0, sizeof(c));
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(5432);
    inet_pton(AF_INET6, "2001:db8::1", &sin6->sin6_addr);
    capture_connect_head(&c, "");
    assert_string_equal(c.head,
                        "CONNECT [2001:db8::1]:5432 HTTP/1.1\r\nhost: [2001:db8::1]:5432\r\n\r\n");
    capture_dst_text(&c.dst, text, sizeof(text));
    assert_string_equal(text, "[2001:db8::1]:5432");

    /* The longest name fits. */
    char name[SNI_NAME_MAX + 1];
    memset(name, 'a', SNI_NAME_MAX);
    name[SNI_NAME_MAX] = '\0';
    assert_true(capture_connect_head(&c, name) > 2 * SNI_NAME_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_connect_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
