/*
 * test_tls.c - the TLS engine: two engines (or an engine and a bare OpenSSL
 * client) handshake in memory, with tls_take -> tls_feed as the wire.
 *
 * The group setup runs certs/make-certs.sh into a temporary directory (the
 * binary runs from the repository root), adds a few files the script does
 * not make (a key that needs a passphrase, a client certificate with only a
 * CN), and the teardown removes it all.
 *
 * main() installs counting allocators in OpenSSL before anything else, so
 * that test_memory_per_connection can tell how many bytes one idle server
 * connection keeps; tls.c allocates through OPENSSL_malloc for that reason.
 * Allocations are charged to whichever engine is being called (OWN()).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"
#include "tlsrec.h"

/* ---- counting allocators ------------------------------------------------ */

struct mem_hdr {
    size_t size;
    int owner;
} __attribute__((aligned(16)));

static size_t mem_live[2]; /* [1]: charged to the measured connection */
static int mem_owner;
static bool mem_counting;
static struct tls_conn *measured;

#define OWN(conn) (mem_owner = ((conn) != NULL && (conn) == measured))

static void *t_malloc(size_t n, const char *file, int line)
{
    struct mem_hdr *h = malloc(sizeof(*h) + n);

    if (h == NULL)
        return NULL;
    h->size = n;
    h->owner = mem_owner;
    mem_live[h->owner] += n;
    return h + 1;
}

static void t_free(void *p, const char *file, int line)
{
    struct mem_hdr *h;

    if (p == NULL)
        return;
    h = (struct mem_hdr *)p - 1;
    mem_live[h->owner] -= h->size;
    free(h);
}

static void *t_realloc(void *p, size_t n, const char *file, int line)
{
    struct mem_hdr *h, *nh;

    if (p == NULL)
        return t_malloc(n, file, line);
    if (n == 0) {
        t_free(p, file, line);
        return NULL;
    }
    h = (struct mem_hdr *)p - 1;
    mem_live[h->owner] -= h->size;
    nh = realloc(h, sizeof(*nh) + n);
    if (nh == NULL) {
        mem_live[h->owner] += h->size;
        return NULL;
    }
    nh->size = n;
    nh->owner = mem_owner;
    mem_live[nh->owner] += n;
    return nh + 1;
}

/* ---- certificates ------------------------------------------------------- */

static char cert_dir[64];

/* Path of a file in the certificate directory (a few may be live at once). */
static const char *cert(const char *name)
{
    static char slots[8][160];
    static unsigned next;
    char *p = slots[next++ % 8];

    snprintf(p, sizeof(slots[0]), "%s/%s", cert_dir, name);
    return p;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static int group_setup(void **state)
{
    snprintf(cert_dir, sizeof(cert_dir), "/tmp/fnproxy-test-tls-XXXXXX");
    if (mkdtemp(cert_dir) == NULL)
        return -1;
    unsetenv("FNPROXY_CERT_CLIENTS");
    if (sh("sh certs/make-certs.sh '%s' 2>/dev/null", cert_dir) != 0)
        return -1;
    /* A passphrase-protected copy of the server key, and a client
     * certificate with neither URI nor DNS SAN (identity from the CN). */
    if (sh("openssl pkey -in '%s/server.key' -aes256 -passout pass:secret -out '%s/enc.key' "
           "2>/dev/null",
           cert_dir, cert_dir) != 0)
        return -1;
    if (sh("cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           "-out client-cn.key 2>/dev/null && "
           "openssl req -new -key client-cn.key -subj /CN=legacy-caller -config /dev/null "
           "-out client-cn.csr 2>/dev/null && "
           "printf 'extendedKeyUsage = clientAuth\\n' > client-cn.ext && "
           "openssl x509 -req -in client-cn.csr -CA ca.crt -CAkey ca.key -set_serial 7 "
           "-days 30 -extfile client-cn.ext -out client-cn.crt 2>/dev/null",
           cert_dir) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    if (cert_dir[0] != '\0' && strncmp(cert_dir, "/tmp/fnproxy-test-tls-", 22) == 0)
        sh("rm -rf '%s'", cert_dir);
    return 0;
}

/* ---- contexts and pairs ------------------------------------------------- */

static struct tls_ctx *server_ctx_opts(struct tls_server_opts *o)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_server_ctx_new(o, err, sizeof(err));

    if (ctx == NULL)
        print_message("tls_server_ctx_new: %s\n", err);
    assert_non_null(ctx);
    return ctx;
}

/* Server with server.crt (default) and wildcard.crt. */
static struct tls_ctx *server_ctx(const char *client_ca, int min_version, bool sni_strict)
{
    struct tls_cert_file certs[2] = {
        {strdup(cert("server.crt")), strdup(cert("server.key"))},
        {strdup(cert("wildcard.crt")), strdup(cert("wildcard.key"))},
    };
    struct tls_server_opts o = {
        .certificates = certs,
        .n_certificates = 2,
        .client_ca = client_ca,
        .min_version = min_version,
        .sni_strict = sni_strict,
    };
    struct tls_ctx *ctx = server_ctx_opts(&o);

    for (int i = 0; i < 2; i++) {
        free((char *)certs[i].cert_file);
        free((char *)certs[i].key_file);
    }
    return ctx;
}

static struct tls_ctx *client_ctx_opts(struct tls_client_opts *o)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_client_ctx_new(o, err, sizeof(err));

    if (ctx == NULL)
        print_message("tls_client_ctx_new: %s\n", err);
    assert_non_null(ctx);
    return ctx;
}

/* Client trusting the development CA, with an optional client certificate
 * ("frontend" for client-frontend.crt) and TLS version cap. */
static struct tls_ctx *client_ctx(const char *client_name, int max_version)
{
    char crt[160], key[160], ca[160];
    struct tls_client_opts o = {.max_version = max_version};

    snprintf(ca, sizeof(ca), "%s", cert("ca.crt"));
    o.ca_file = ca;
    if (client_name != NULL) {
        snprintf(crt, sizeof(crt), "%s/client-%s.crt", cert_dir, client_name);
        snprintf(key, sizeof(key), "%s/client-%s.key", cert_dir, client_name);
        o.cert_file = crt;
        o.key_file = key;
    }
    return client_ctx_opts(&o);
}

struct pair {
    struct tls_conn *c, *s;
    int rc_c, rc_s; /* handshake outcomes */
};

/* Moves every pending byte of ciphertext from one engine to the other, in
 * pieces of at most chunk bytes; plaintext that must be read to make room
 * is appended to sink (when given). */
static size_t pump_chunked(struct tls_conn *from, struct tls_conn *to, size_t chunk, char *sink,
                           size_t *sink_len, size_t sink_cap)
{
    char buf[16384];
    size_t moved = 0;

    if (chunk > sizeof(buf))
        chunk = sizeof(buf);
    for (;;) {
        size_t n, off = 0;

        OWN(from);
        n = tls_take(from, buf, chunk);
        if (n == 0)
            break;
        moved += n;
        while (off < n) {
            int f;

            OWN(to);
            f = tls_feed(to, buf + off, n - off);
            assert_true(f >= 0);
            off += (size_t)f;
            if (f == 0) { /* full: read plaintext to make room */
                int r;

                assert_non_null(sink);
                OWN(to);
                r = tls_read(to, sink + *sink_len, sink_cap - *sink_len);
                assert_true(r > 0);
                *sink_len += (size_t)r;
            }
        }
    }
    OWN(NULL);
    return moved;
}

static size_t pump(struct tls_conn *from, struct tls_conn *to)
{
    return pump_chunked(from, to, 16384, NULL, NULL, 0);
}

static bool settled(int rc)
{
    return rc != TLS_E_AGAIN;
}

/* Runs the handshake to its end on both sides. A client whose handshake is
 * done then reads once, to take in what the server sent after its own end
 * (TLS 1.3 tickets, or the alert of a server that refused its certificate). */
static void pair_handshake_chunked(struct pair *p, size_t chunk)
{
    char b[64];
    int i, r;

    p->rc_c = p->rc_s = TLS_E_AGAIN;
    for (i = 0; i < 2000 && !(settled(p->rc_c) && settled(p->rc_s)); i++) {
        OWN(p->c);
        p->rc_c = tls_handshake(p->c);
        pump_chunked(p->c, p->s, chunk, NULL, NULL, 0);
        OWN(p->s);
        p->rc_s = tls_handshake(p->s);
        pump_chunked(p->s, p->c, chunk, NULL, NULL, 0);
    }
    if (p->rc_c == 0) {
        do {
            OWN(p->c);
            r = tls_read(p->c, b, sizeof(b));
            pump_chunked(p->c, p->s, chunk, NULL, NULL, 0);
        } while (r > 0);
        if (r < 0)
            p->rc_c = r;
    }
    OWN(NULL);
}

static void pair_handshake(struct pair *p)
{
    pair_handshake_chunked(p, 16384);
}

static struct pair pair_new(struct tls_ctx *sctx, struct tls_ctx *cctx, const char *name)
{
    struct pair p = {0};

    OWN(NULL);
    p.c = tls_conn_new(cctx, name);
    assert_non_null(p.c);
    p.s = tls_conn_new(sctx, NULL);
    assert_non_null(p.s);
    return p;
}

static void pair_free(struct pair *p)
{
    tls_conn_free(p->c);
    tls_conn_free(p->s);
    p->c = p->s = NULL;
}

static void expect_ok(const struct pair *p)
{
    if (p->rc_c != 0 || p->rc_s != 0)
        print_message("client %d '%s', server %d '%s'\n", p->rc_c, tls_error(p->c), p->rc_s,
                      tls_error(p->s));
    assert_int_equal(p->rc_c, 0);
    assert_int_equal(p->rc_s, 0);
    assert_true(tls_handshake_done(p->c));
    assert_true(tls_handshake_done(p->s));
}

static void assert_contains(const char *s, const char *part)
{
    if (s == NULL || strstr(s, part) == NULL) {
        print_message("'%s' does not contain '%s'\n", s ? s : "(null)", part);
        fail();
    }
}

/* Sends len bytes from one engine to the other in pieces of varying size
 * (and ciphertext in chunks of varying size), checking every byte. */
static void transfer(struct tls_conn *from, struct tls_conn *to, size_t len)
{
    char *data = malloc(len), *got = malloc(len);
    size_t sent = 0, got_len = 0, i;
    uint32_t seed = 12345;

    assert_non_null(data);
    assert_non_null(got);
    for (i = 0; i < len; i++)
        data[i] = (char)(i * 7 + i / 251);
    while (got_len < len) {
        size_t piece, chunk;
        int r;

        seed = seed * 1103515245 + 12345;
        piece = 1 + (seed >> 8) % 40000;
        chunk = 1 + (seed >> 4) % 16384;
        if (sent < len) {
            if (piece > len - sent)
                piece = len - sent;
            OWN(from);
            r = tls_write(from, data + sent, piece);
            assert_true(r >= 0);
            sent += (size_t)r;
        }
        pump_chunked(from, to, chunk, got, &got_len, len);
        do {
            OWN(to);
            r = tls_read(to, got + got_len, len - got_len);
            assert_true(r >= 0);
            got_len += (size_t)r;
        } while (r > 0 && got_len < len);
        assert_true(got_len <= sent);
    }
    OWN(NULL);
    assert_int_equal(sent, len);
    assert_memory_equal(data, got, len);
    free(data);
    free(got);
}

/* Reads what is there into buf (NUL-terminated); returns the last code. */
static int read_all(struct tls_conn *c, char *buf, size_t cap, size_t *len)
{
    int r;

    *len = 0;
    do {
        r = tls_read(c, buf + *len, cap - 1 - *len);
        if (r > 0)
            *len += (size_t)r;
    } while (r > 0 && *len < cap - 1);
    buf[*len] = '\0';
    return r;
}

static void exchange_small(struct pair *p)
{
    char buf[256];
    size_t n;

    assert_int_equal(tls_write(p->c, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    pump(p->c, p->s);
    assert_int_equal(read_all(p->s, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(tls_write(p->s, "HTTP/1.1 204 No Content\r\n\r\n", 27), 27);
    pump(p->s, p->c);
    assert_int_equal(read_all(p->c, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, "HTTP/1.1 204 No Content\r\n\r\n");
}

/* ---- a bare OpenSSL client, for what our client never sends ----------- */

struct raw {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
};

static void raw_new(struct raw *r, const char *alpn, size_t alpn_len, int max_version,
                    const char *ciphers)
{
    r->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r->ctx);
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
    if (max_version != 0) {
        SSL_CTX_set_min_proto_version(r->ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(r->ctx, max_version);
    }
    if (ciphers != NULL)
        assert_int_equal(SSL_CTX_set_cipher_list(r->ctx, ciphers), 1);
    r->ssl = SSL_new(r->ctx);
    assert_non_null(r->ssl);
    r->rbio = BIO_new(BIO_s_mem());
    r->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(r->ssl, r->rbio, r->wbio);
    SSL_set_connect_state(r->ssl);
    if (alpn != NULL)
        assert_int_equal(
            SSL_set_alpn_protos(r->ssl, (const unsigned char *)alpn, (unsigned)alpn_len), 0);
}

static void raw_free(struct raw *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
}

/* Handshakes a bare client with server s; returns 1 when the client is done,
 * -1 when it failed. */
static int raw_handshake(struct raw *r, struct tls_conn *s, int *rc_s)
{
    char buf[16384];
    int i, rc = 0, err;

    *rc_s = TLS_E_AGAIN;
    for (i = 0; i < 50; i++) {
        int n;

        rc = SSL_do_handshake(r->ssl);
        err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(r->ssl, rc);
        while ((n = BIO_read(r->wbio, buf, sizeof(buf))) > 0)
            assert_int_equal(tls_feed(s, buf, (size_t)n) >= 0 ? n : -1, n);
        *rc_s = tls_handshake(s);
        while ((n = (int)tls_take(s, buf, sizeof(buf))) > 0)
            BIO_write(r->rbio, buf, n);
        if (rc == 1 && settled(*rc_s))
            break;
        if (rc <= 0 && err != SSL_ERROR_WANT_READ)
            break;
    }
    if (rc <= 0) { /* take in the server's alert */
        rc = SSL_do_handshake(r->ssl);
    }
    ERR_clear_error();
    return rc == 1 ? 1 : -1;
}

/* ---- tests: the basics -------------------------------------------------- */

static void test_tls13_handshake_and_data(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char id[128];

    assert_false(tls_handshake_done(p.c));
    assert_null(tls_version(p.c));
    assert_int_equal(tls_write(p.c, "x", 1), TLS_E_AGAIN);
    pair_handshake(&p);
    expect_ok(&p);
    assert_string_equal(tls_version(p.c), "TLSv1.3");
    assert_string_equal(tls_version(p.s), "TLSv1.3");
    assert_string_equal(tls_alpn(p.c), "http/1.1");
    assert_string_equal(tls_alpn(p.s), "http/1.1");
    assert_string_equal(tls_sni(p.s), "localhost");
    assert_string_equal(tls_sni(p.c), "localhost");
    assert_false(tls_resumed(p.c));
    assert_false(tls_resumed(p.s));
    assert_string_equal(tls_error(p.s), "");
    assert_int_equal(tls_failure(p.s), TLS_FAIL_NONE);
    /* The client sees the server's name; the server sees no client cert. */
    assert_int_equal(tls_peer_identity(p.c, id, sizeof(id)), 9);
    assert_string_equal(id, "localhost");
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 0);
    assert_int_equal(tls_peer_identity(p.c, id, 5), -ENOSPC);

    exchange_small(&p);
    transfer(p.c, p.s, 1 << 20);
    transfer(p.s, p.c, 1 << 20);
    exchange_small(&p);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_tls12_handshake_and_data(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 12);
    struct pair p = pair_new(sctx, cctx, "localhost");

    pair_handshake(&p);
    expect_ok(&p);
    assert_string_equal(tls_version(p.c), "TLSv1.2");
    assert_string_equal(tls_version(p.s), "TLSv1.2");
    assert_string_equal(tls_alpn(p.s), "http/1.1");
    exchange_small(&p);
    transfer(p.c, p.s, 1 << 20);
    transfer(p.s, p.c, 1 << 20);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_close_notify(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char buf[64];
    size_t n;

    pair_handshake(&p);
    expect_ok(&p);
    assert_int_equal(tls_write(p.c, "bye", 3), 3);
    assert_int_equal(tls_shutdown(p.c), 0);
    assert_int_equal(tls_shutdown(p.c), 0); /* twice is harmless */
    assert_int_equal(tls_write(p.c, "more", 4), TLS_E_SHUTDOWN);
    pump(p.c, p.s);
    /* The data before close_notify arrives, then the close. */
    assert_int_equal(read_all(p.s, buf, sizeof(buf), &n), TLS_E_CLOSED);
    assert_string_equal(buf, "bye");
    assert_int_equal(tls_read(p.s, buf, sizeof(buf)), TLS_E_CLOSED);
    assert_int_equal(tls_failure(p.s), TLS_FAIL_NONE);
    assert_int_equal(tls_shutdown(p.s), 0);
    pump(p.s, p.c);
    assert_int_equal(tls_read(p.c, buf, sizeof(buf)), TLS_E_CLOSED);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

/* tls_peek/tls_consume hand out the same ciphertext as tls_take, in place,
 * a part at a time. */
static void test_peek_and_consume(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    const char *data;
    char wire[4096], buf[64];
    size_t n, half;

    pair_handshake(&p);
    expect_ok(&p);
    assert_int_equal(tls_peek(p.s, &data), 0);
    assert_null(data);
    assert_int_equal(tls_write(p.s, "peeked", 6), 6);
    n = tls_peek(p.s, &data);
    assert_true(n > 6 && n < sizeof(wire));
    assert_int_equal(n, tls_pending(p.s));
    memcpy(wire, data, n);
    half = n / 2;
    tls_consume(p.s, half);
    assert_int_equal(tls_pending(p.s), n - half);
    assert_int_equal(tls_peek(p.s, &data), n - half);
    assert_memory_equal(data, wire + half, n - half);
    tls_consume(p.s, n); /* more than is left: all of it */
    assert_int_equal(tls_pending(p.s), 0);
    assert_int_equal(tls_feed(p.c, wire, n), (int)n);
    assert_int_equal(read_all(p.c, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, "peeked");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_min_version_13_refuses_tls12_client(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 13, false), *cctx = client_ctx(NULL, 12);
    struct pair p = pair_new(sctx, cctx, "localhost");

    pair_handshake(&p);
    assert_int_equal(p.rc_s, TLS_E_PROTO);
    assert_int_equal(p.rc_c, TLS_E_PROTO);
    assert_int_equal(tls_failure(p.s), TLS_FAIL_VERSION);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERSION);
    assert_contains(tls_error(p.s), "no TLS version in common");
    assert_contains(tls_error(p.c), "protocol version");
    assert_string_equal(tls_failure_name(tls_failure(p.s)), "version");
    /* A failed connection keeps failing the same way. */
    assert_int_equal(tls_read(p.s, (char[8]){0}, 8), TLS_E_PROTO);
    assert_int_equal(tls_write(p.s, "x", 1), TLS_E_PROTO);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_tls11_refused(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct tls_conn *s = tls_conn_new(sctx, NULL);
    struct raw r;
    int rc_s;

    raw_new(&r, NULL, 0, TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0");
    assert_int_equal(raw_handshake(&r, s, &rc_s), -1);
    assert_int_equal(rc_s, TLS_E_PROTO);
    assert_int_equal(tls_failure(s), TLS_FAIL_VERSION);
    raw_free(&r);
    tls_conn_free(s);
    tls_ctx_unref(sctx);
}

/* ---- resumption --------------------------------------------------------- */

static void resume_check(int max_version)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, max_version);
    struct pair p = pair_new(sctx, cctx, "localhost");
    int i;

    pair_handshake(&p);
    expect_ok(&p);
    assert_false(tls_resumed(p.c));
    exchange_small(&p);
    pair_free(&p);

    for (i = 0; i < 3; i++) { /* each resumption leaves a new session to resume */
        p = pair_new(sctx, cctx, "localhost");
        pair_handshake(&p);
        expect_ok(&p);
        assert_true(tls_resumed(p.c));
        assert_true(tls_resumed(p.s));
        assert_string_equal(tls_alpn(p.s), "http/1.1");
        exchange_small(&p);
        pair_free(&p);
    }

    /* Another destination has no session yet. */
    p = pair_new(sctx, cctx, "127.0.0.1");
    pair_handshake(&p);
    expect_ok(&p);
    assert_false(tls_resumed(p.c));
    pair_free(&p);

    /* A ticket sealed with the previous key still opens... */
    tls_ctx_rotate_ticket_keys(sctx);
    p = pair_new(sctx, cctx, "localhost");
    pair_handshake(&p);
    expect_ok(&p);
    assert_true(tls_resumed(p.s));
    pair_free(&p);
    /* ...but not once its key is gone: a full handshake, no failure. */
    for (i = 0; i < TLS_TICKET_KEYS; i++)
        tls_ctx_rotate_ticket_keys(sctx);
    p = pair_new(sctx, cctx, "localhost");
    pair_handshake(&p);
    expect_ok(&p);
    assert_false(tls_resumed(p.s));
    pair_free(&p);

    /* A new server context (a reload) has new keys: a full handshake. */
    tls_ctx_unref(sctx);
    sctx = server_ctx(NULL, 12, false);
    p = pair_new(sctx, cctx, "localhost");
    pair_handshake(&p);
    expect_ok(&p);
    assert_false(tls_resumed(p.s));
    pair_free(&p);

    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_resumption_tls13(void **state)
{
    resume_check(13);
}

static void test_resumption_tls12(void **state)
{
    resume_check(12);
}

/* ---- SNI ---------------------------------------------------------------- */

/* Handshakes a client asking for name; returns the identity of the server
 * certificate the client verified ("" when the handshake failed). */
static const char *served_cert(struct tls_ctx *sctx, struct tls_ctx *cctx, const char *name,
                               struct pair *out)
{
    static char id[128];
    struct pair p = pair_new(sctx, cctx, name);

    id[0] = '\0';
    pair_handshake(&p);
    if (p.rc_c == 0 && p.rc_s == 0)
        tls_peer_identity(p.c, id, sizeof(id));
    *out = p;
    return id;
}

static void test_sni_selects_certificate(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct tls_ctx *cctx12 = client_ctx(NULL, 12);
    struct pair p;

    assert_string_equal(served_cert(sctx, cctx, "api.fn.test", &p), "*.fn.test");
    assert_string_equal(tls_sni(p.s), "api.fn.test");
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx12, "thumb.fn.test", &p), "*.fn.test");
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx, "Other.FN.test", &p), "*.fn.test");
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx, "localhost", &p), "localhost");
    pair_free(&p);
    /* No SNI (an IP literal): the default certificate, checked by IP SAN. */
    assert_string_equal(served_cert(sctx, cctx, "127.0.0.1", &p), "localhost");
    assert_null(tls_sni(p.s));
    assert_null(tls_sni(p.c));
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx, "[::1]", &p), "localhost");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
    tls_ctx_unref(cctx12);
}

static void test_sni_unknown_name_gets_default(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p;

    /* The default certificate is served (the server does not refuse), and
     * the client, rightly, finds it is not for that name. A wildcard covers
     * one label only. */
    assert_string_equal(served_cert(sctx, cctx, "a.b.fn.test", &p), "");
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERIFY);
    assert_contains(tls_error(p.c), "hostname mismatch (wanted a.b.fn.test)");
    assert_int_equal(tls_failure(p.s), TLS_FAIL_PEER_ALERT);
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx, "fn.test", &p), "");
    assert_int_equal(tls_failure(p.s), TLS_FAIL_PEER_ALERT);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_sni_strict_refuses_unknown_name(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, true), *cctx = client_ctx(NULL, 0);
    struct tls_ctx *cctx12 = client_ctx(NULL, 12);
    struct pair p;

    assert_string_equal(served_cert(sctx, cctx, "unknown.example", &p), "");
    assert_int_equal(p.rc_s, TLS_E_PROTO);
    assert_int_equal(tls_failure(p.s), TLS_FAIL_SNI);
    assert_string_equal(tls_error(p.s), "unknown server name");
    assert_int_equal(tls_failure(p.c), TLS_FAIL_PEER_ALERT);
    assert_contains(tls_error(p.c), "unrecognized name");
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx12, "unknown.example", &p), "");
    assert_int_equal(tls_failure(p.s), TLS_FAIL_SNI);
    pair_free(&p);
    /* Known names still work, and clients that send no name get the
     * default: they cannot ask for anything else. */
    assert_string_equal(served_cert(sctx, cctx, "api.fn.test", &p), "*.fn.test");
    pair_free(&p);
    assert_string_equal(served_cert(sctx, cctx, "127.0.0.1", &p), "localhost");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
    tls_ctx_unref(cctx12);
}

/* ---- ALPN --------------------------------------------------------------- */

static void test_alpn(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct tls_conn *s;
    struct raw r;
    int rc_s;

    /* Offered among others: http/1.1 is chosen. */
    s = tls_conn_new(sctx, NULL);
    raw_new(&r, "\x02h2\x08http/1.1", 12, 0, NULL);
    assert_int_equal(raw_handshake(&r, s, &rc_s), 1);
    assert_int_equal(rc_s, 0);
    assert_string_equal(tls_alpn(s), "http/1.1");
    raw_free(&r);
    tls_conn_free(s);

    /* No ALPN at all: served, without ALPN. */
    s = tls_conn_new(sctx, NULL);
    raw_new(&r, NULL, 0, 0, NULL);
    assert_int_equal(raw_handshake(&r, s, &rc_s), 1);
    assert_int_equal(rc_s, 0);
    assert_null(tls_alpn(s));
    raw_free(&r);
    tls_conn_free(s);

    /* Only protocols we do not speak: no_application_protocol (RFC 7301). */
    s = tls_conn_new(sctx, NULL);
    raw_new(&r, "\x02h2", 3, 0, NULL);
    assert_int_equal(raw_handshake(&r, s, &rc_s), -1);
    assert_int_equal(rc_s, TLS_E_PROTO);
    assert_int_equal(tls_failure(s), TLS_FAIL_ALPN);
    assert_contains(tls_error(s), "no application protocol in common");
    assert_int_equal(SSL_get_verify_result(r.ssl), X509_V_OK);
    raw_free(&r);
    tls_conn_free(s);
    tls_ctx_unref(sctx);
}

/* ---- mTLS --------------------------------------------------------------- */

static void mtls_good(int max_version)
{
    struct tls_ctx *sctx = server_ctx(cert("ca.crt"), 12, false);
    struct tls_ctx *cctx = client_ctx("frontend", max_version);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char id[128];

    pair_handshake(&p);
    expect_ok(&p);
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 34);
    assert_string_equal(id, "spiffe://fnproxy.local/fn/frontend");
    exchange_small(&p);
    pair_free(&p);

    /* A resumed session keeps the verified identity. */
    p = pair_new(sctx, cctx, "localhost");
    pair_handshake(&p);
    expect_ok(&p);
    assert_true(tls_resumed(p.s));
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 34);
    assert_string_equal(id, "spiffe://fnproxy.local/fn/frontend");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_mtls_identity_tls13(void **state)
{
    mtls_good(13);
}

static void test_mtls_identity_tls12(void **state)
{
    mtls_good(12);
}

static void test_mtls_identity_from_cn(void **state)
{
    struct tls_ctx *sctx = server_ctx(cert("ca.crt"), 12, false);
    struct tls_ctx *cctx = client_ctx("cn", 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char id[128];

    pair_handshake(&p);
    expect_ok(&p);
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 13);
    assert_string_equal(id, "legacy-caller");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void mtls_refused(const char *client, int max_version, enum tls_failure want,
                         const char *why)
{
    struct tls_ctx *sctx = server_ctx(cert("ca.crt"), 12, false);
    struct tls_ctx *cctx = client_ctx(client, max_version);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char id[128];

    pair_handshake(&p);
    assert_int_equal(p.rc_s, TLS_E_PROTO);
    assert_int_equal(tls_failure(p.s), want);
    assert_string_equal(tls_error(p.s), why);
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 0);
    /* The client hears of it through the alert. */
    assert_true(p.rc_c < 0);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_PEER_ALERT);
    assert_contains(tls_error(p.c), "peer sent alert: ");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_mtls_no_client_cert(void **state)
{
    mtls_refused(NULL, 13, TLS_FAIL_NO_CERT, "client certificate required, none was sent");
    mtls_refused(NULL, 12, TLS_FAIL_NO_CERT, "client certificate required, none was sent");
}

static void test_mtls_expired_client_cert(void **state)
{
    mtls_refused("expired", 13, TLS_FAIL_VERIFY,
                 "certificate verify failed: certificate has expired");
    mtls_refused("expired", 12, TLS_FAIL_VERIFY,
                 "certificate verify failed: certificate has expired");
}

static void test_mtls_wrong_ca_client_cert(void **state)
{
    mtls_refused("rogue", 13, TLS_FAIL_VERIFY,
                 "certificate verify failed: unable to get local issuer certificate");
}

static void test_client_cert_not_asked_without_client_ca(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx("frontend", 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char id[128];

    pair_handshake(&p);
    expect_ok(&p);
    assert_int_equal(tls_peer_identity(p.s, id, sizeof(id)), 0);
    assert_string_equal(id, "");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

/* ---- the client verifies the server ------------------------------------ */

static void test_client_rejects_wrong_hostname(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p;

    served_cert(sctx, cctx, "wrong.example", &p);
    assert_int_equal(p.rc_c, TLS_E_PROTO);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERIFY);
    assert_string_equal(tls_error(p.c),
                        "certificate verify failed: hostname mismatch (wanted wrong.example)");
    assert_string_equal(tls_failure_name(tls_failure(p.c)), "verify");
    assert_false(tls_handshake_done(p.c));
    pair_free(&p);

    served_cert(sctx, cctx, "10.1.2.3", &p);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERIFY);
    assert_string_equal(tls_error(p.c),
                        "certificate verify failed: IP address mismatch (wanted 10.1.2.3)");
    pair_free(&p);

    /* A partial wildcard match is no match. */
    served_cert(sctx, cctx, "fn.test", &p);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERIFY);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_client_rejects_unknown_ca(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    char ca[160];
    struct tls_client_opts o = {0};
    struct tls_ctx *cctx;
    struct pair p;

    snprintf(ca, sizeof(ca), "%s", cert("rogue-ca.crt"));
    o.ca_file = ca;
    cctx = client_ctx_opts(&o);
    served_cert(sctx, cctx, "localhost", &p);
    assert_int_equal(tls_failure(p.c), TLS_FAIL_VERIFY);
    assert_string_equal(tls_error(p.c),
                        "certificate verify failed: unable to get local issuer certificate");
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_client_needs_a_name(void **state)
{
    struct tls_ctx *cctx = client_ctx(NULL, 0);

    assert_null(tls_conn_new(cctx, NULL));
    assert_null(tls_conn_new(cctx, ""));
    tls_ctx_unref(cctx);
}

/* ---- bad input ---------------------------------------------------------- */

static void bad_bytes(const char *bytes, size_t len, enum tls_failure want, const char *why)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct tls_conn *s = tls_conn_new(sctx, NULL);
    char buf[64];

    assert_int_equal(tls_feed(s, bytes, len), (int)len);
    assert_int_equal(tls_handshake(s), TLS_E_PROTO);
    assert_int_equal(tls_failure(s), want);
    assert_string_equal(tls_error(s), why);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_int_equal(tls_feed(s, "x", 1), TLS_E_PROTO);
    tls_conn_free(s);
    tls_ctx_unref(sctx);
}

static void test_plain_http_on_tls_port(void **state)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const char post[] = "POST /x HTTP/1.1\r\n";
    static const char connect[] = "CONNECT example.com:443 HTTP/1.1\r\n\r\n";

    bad_bytes(get, sizeof(get) - 1, TLS_FAIL_PLAIN_HTTP, "plain HTTP request on a TLS port");
    bad_bytes(post, sizeof(post) - 1, TLS_FAIL_PLAIN_HTTP, "plain HTTP request on a TLS port");
    bad_bytes(connect, sizeof(connect) - 1, TLS_FAIL_PLAIN_HTTP,
              "plain HTTP request on a TLS port");
}

static void test_garbage_on_tls_port(void **state)
{
    static const char ssh[] = "SSH-2.0-OpenSSH_9.2\r\n";
    /* A handshake record header, then a ClientHello that is nonsense. */
    static const char junk[] = "\x16\x03\x01\x00\x10"
                               "\x01\x00\x00\x0c\x03\x03zzzzzzzzzz";
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct tls_conn *s;

    bad_bytes(ssh, sizeof(ssh) - 1, TLS_FAIL_NOT_TLS, "wrong version number (not a TLS peer?)");
    s = tls_conn_new(sctx, NULL);
    assert_int_equal(tls_feed(s, junk, sizeof(junk) - 1), (int)sizeof(junk) - 1);
    assert_int_equal(tls_handshake(s), TLS_E_PROTO);
    assert_int_equal(tls_failure(s), TLS_FAIL_PROTOCOL);
    assert_true(strlen(tls_error(s)) > 0);
    /* The peer is told: a fatal alert waits to be sent. */
    assert_true(tls_pending(s) > 0);
    tls_conn_free(s);
    tls_ctx_unref(sctx);
}

static void test_truncated_handshake_needs_more(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    char hello[4096], buf[16];
    size_t n, i;

    assert_int_equal(tls_handshake(p.c), TLS_E_AGAIN);
    n = tls_take(p.c, hello, sizeof(hello));
    assert_true(n > 100);
    /* The ClientHello a byte at a time: never an error, never an answer. */
    for (i = 0; i + 1 < n; i++) {
        assert_int_equal(tls_feed(p.s, hello + i, 1), 1);
        assert_int_equal(tls_handshake(p.s), TLS_E_AGAIN);
        assert_int_equal(tls_read(p.s, buf, sizeof(buf)), 0);
        assert_int_equal(tls_pending(p.s), 0);
    }
    assert_int_equal(tls_failure(p.s), TLS_FAIL_NONE);
    /* The last byte completes it; the rest goes one byte per feed too. */
    assert_int_equal(tls_feed(p.s, hello + n - 1, 1), 1);
    pair_handshake_chunked(&p, 1);
    expect_ok(&p);
    exchange_small(&p);

    /* A record a byte at a time, reading after each: a partial record
     * never yields data, and the whole one does. */
    assert_int_equal(tls_write(p.c, "hello, world", 12), 12);
    n = tls_take(p.c, hello, sizeof(hello));
    assert_true(n > 12);
    for (i = 0; i + 1 < n; i++) {
        assert_int_equal(tls_feed(p.s, hello + i, 1), 1);
        assert_int_equal(tls_read(p.s, buf, sizeof(buf)), 0);
    }
    assert_int_equal(tls_feed(p.s, hello + n - 1, 1), 1);
    assert_int_equal(tls_read(p.s, buf, sizeof(buf)), 12);
    assert_memory_equal(buf, "hello, world", 12);
    pair_free(&p);

    /* A connection abandoned mid-handshake is freed cleanly. */
    p = pair_new(sctx, cctx, "localhost");
    assert_int_equal(tls_handshake(p.c), TLS_E_AGAIN);
    n = tls_take(p.c, hello, sizeof(hello));
    assert_int_equal(tls_feed(p.s, hello, n / 2), (int)(n / 2));
    assert_int_equal(tls_handshake(p.s), TLS_E_AGAIN);
    assert_int_equal(tls_shutdown(p.s), 0);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

static void test_buffers_are_capped(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");
    size_t big = 1 << 20;
    char *junk = calloc(1, big);
    int r;

    assert_non_null(junk);
    /* Input: no more than TLS_IN_MAX waits unread. */
    assert_int_equal(tls_feed(p.s, junk, big), TLS_IN_MAX);
    assert_int_equal(tls_feed(p.s, junk, big), 0);
    pair_free(&p);

    /* Output: tls_write takes less while TLS_OUT_MAX waits to be sent. */
    p = pair_new(sctx, cctx, "localhost");
    pair_handshake(&p);
    expect_ok(&p);
    r = tls_write(p.c, junk, big);
    assert_int_equal(r, TLS_OUT_MAX);
    assert_true(tls_pending(p.c) > TLS_OUT_MAX);
    assert_true(tls_pending(p.c) < TLS_OUT_MAX + 1024);
    assert_int_equal(tls_write(p.c, junk, big), 0);
    free(junk);
    pair_free(&p);
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
}

/* ---- contexts ----------------------------------------------------------- */

static void server_ctx_fails(const char *crt, const char *key, const char *client_ca,
                             int min_version, const char *why)
{
    char c[160], k[160], ca[160], err[512] = "";
    struct tls_cert_file certs[1] = {{c, k}};
    struct tls_server_opts o = {.certificates = certs, .n_certificates = 1};
    struct tls_ctx *ctx;

    snprintf(c, sizeof(c), "%s", crt[0] == '/' ? crt : cert(crt));
    snprintf(k, sizeof(k), "%s", key[0] == '/' ? key : cert(key));
    if (client_ca != NULL) {
        snprintf(ca, sizeof(ca), "%s", cert(client_ca));
        o.client_ca = ca;
    }
    o.min_version = min_version;
    ctx = tls_server_ctx_new(&o, err, sizeof(err));
    assert_null(ctx);
    assert_contains(err, why);
}

static void test_server_ctx_errors(void **state)
{
    char why[512];
    char err[256] = "";
    struct tls_server_opts none = {0};

    snprintf(why, sizeof(why), "%s: key does not match certificate %s", cert("wildcard.key"),
             cert("server.crt"));
    server_ctx_fails("server.crt", "wildcard.key", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: cannot open certificate: No such file or directory",
             cert("missing.crt"));
    server_ctx_fails("missing.crt", "server.key", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: cannot open key: No such file or directory",
             cert("missing.key"));
    server_ctx_fails("server.crt", "missing.key", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: no PEM certificate in the file", cert("server.key"));
    server_ctx_fails("server.key", "server.key", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: no PEM private key in the file", cert("server.crt"));
    server_ctx_fails("server.crt", "server.crt", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: the key is passphrase-protected", cert("enc.key"));
    server_ctx_fails("server.crt", "enc.key", NULL, 12, why);
    snprintf(why, sizeof(why), "%s: cannot open client CA: No such file or directory",
             cert("nope-ca.crt"));
    server_ctx_fails("server.crt", "server.key", "nope-ca.crt", 12, why);
    snprintf(why, sizeof(why), "%s: no CA certificate in the file", cert("server.key"));
    server_ctx_fails("server.crt", "server.key", "server.key", 12, why);
    server_ctx_fails("server.crt", "server.key", NULL, 11, "TLS versions must be 12 or 13");
    assert_null(tls_server_ctx_new(&none, err, sizeof(err)));
    assert_string_equal(err, "a TLS listener needs at least one certificate");
}

static void test_client_ctx_errors(void **state)
{
    char err[512] = "", ca[160], want[512];
    struct tls_client_opts o = {0};

    snprintf(ca, sizeof(ca), "%s", cert("no-such-ca.crt"));
    o.ca_file = ca;
    assert_null(tls_client_ctx_new(&o, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s: cannot open CA: No such file or directory", ca);
    assert_string_equal(err, want);

    o.ca_file = NULL; /* the system store */
    o.cert_file = cert("client-frontend.crt");
    o.key_file = NULL;
    assert_null(tls_client_ctx_new(&o, err, sizeof(err)));
    assert_string_equal(err, "a certificate needs both a cert and a key file");

    o.cert_file = NULL;
    o.min_version = 13;
    o.max_version = 12;
    assert_null(tls_client_ctx_new(&o, err, sizeof(err)));
    assert_string_equal(err, "the highest TLS version is below the lowest");
}

/* A reload: connections keep the context they started with after the last
 * other reference is dropped. */
static void test_ctx_outlives_its_owner(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false), *cctx = client_ctx(NULL, 0);
    struct pair p = pair_new(sctx, cctx, "localhost");

    assert_ptr_equal(tls_ctx_ref(sctx), sctx);
    tls_ctx_unref(sctx);
    tls_ctx_unref(sctx); /* only the connection holds it now */
    tls_ctx_unref(cctx);
    pair_handshake(&p);
    expect_ok(&p);
    exchange_small(&p);
    pair_free(&p); /* frees both contexts; ASan sees to the rest */
}

static void test_handshake_timeout_is_kept(void **state)
{
    struct tls_cert_file certs[1];
    struct tls_server_opts o = {.certificates = certs, .n_certificates = 1};
    char c[160], k[160];
    struct tls_ctx *ctx;

    snprintf(c, sizeof(c), "%s", cert("server.crt"));
    snprintf(k, sizeof(k), "%s", cert("server.key"));
    certs[0].cert_file = c;
    certs[0].key_file = k;
    o.handshake_timeout_ms = 5000;
    ctx = server_ctx_opts(&o);
    assert_int_equal(tls_ctx_handshake_timeout_ms(ctx), 5000);
    tls_ctx_unref(ctx);
}

/* ---- certs/make-certs.sh ------------------------------------------------ */

static void test_make_certs_idempotent(void **state)
{
    const char *files[] = {"ca.crt",
                           "server.crt",
                           "wildcard.crt",
                           "client-frontend.crt",
                           "client-expired.crt",
                           "client-rogue.crt"};
    char *before[6], *after;
    struct stat st;
    size_t i;

    for (i = 0; i < 6; i++) {
        before[i] = slurp(cert(files[i]));
        assert_non_null(before[i]);
    }
    assert_int_equal(sh("sh certs/make-certs.sh '%s' 2>&1 | grep -q made", cert_dir) == 0, false);
    for (i = 0; i < 6; i++) {
        after = slurp(cert(files[i]));
        assert_non_null(after);
        assert_string_equal(before[i], after);
        free(after);
        free(before[i]);
    }
    assert_int_equal(stat(cert("server.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(cert("client-hello.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* A file that went missing is made again, and only that one. */
    assert_int_equal(unlink(cert("client-hello.crt")), 0);
    assert_int_equal(sh("sh certs/make-certs.sh '%s' 2>&1 | grep -c made | grep -qx 1", cert_dir),
                     0);
    assert_int_equal(access(cert("client-hello.crt"), R_OK), 0);
}

/* ---- tests: TLS 1.3 records after the hand-over to tlsrec ---------------- */

/* The raw client's ciphertext, as it would go on the wire. */
static size_t raw_out(struct raw *r, char *buf, size_t cap)
{
    int n = BIO_read(r->wbio, buf, (int)cap);

    return n > 0 ? (size_t)n : 0;
}

/* Sends plaintext from the raw client to server s. */
static void raw_send(struct raw *r, struct tls_conn *s, const char *data, size_t len)
{
    char buf[65536];
    size_t n;

    assert_int_equal(SSL_write(r->ssl, data, (int)len), (int)len);
    while ((n = raw_out(r, buf, sizeof(buf))) > 0)
        assert_int_equal(tls_feed(s, buf, n), (int)n);
}

/* Moves what server s has to send into the raw client's input. */
static void raw_take(struct raw *r, struct tls_conn *s)
{
    char buf[16384];
    size_t n;

    while ((n = tls_take(s, buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(r->rbio, buf, (int)n), (int)n);
}

/* A raw TLS 1.3 client with suite (NULL: any) against a TLS 1.3 server. */
static void raw_tls13(struct raw *r, struct tls_ctx *sctx, struct tls_conn **s, const char *suite)
{
    int rc_s;

    raw_new(r, NULL, 0, 0, NULL);
    if (suite != NULL)
        assert_int_equal(SSL_set_ciphersuites(r->ssl, suite), 1);
    *s = tls_conn_new(sctx, NULL);
    assert_non_null(*s);
    assert_int_equal(raw_handshake(r, *s, &rc_s), 1);
    assert_int_equal(rc_s, 0);
    assert_string_equal(tls_version(*s), "TLSv1.3");
}

static void test_tls13_records_every_suite(void **state)
{
    static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                         "TLS_CHACHA20_POLY1305_SHA256"};
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    size_t len = 100000, i, n, got;
    char *big = malloc(len), *back = malloc(len), buf[256];

    assert_non_null(big);
    assert_non_null(back);
    for (i = 0; i < len; i++)
        big[i] = (char)(i * 13 + i / 7);
    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        struct raw r;
        struct tls_conn *s;
        int k;

        raw_tls13(&r, sctx, &s, suites[i]);
        assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(r.ssl)), suites[i]);
        /* The client's records arrive whole, padded ones too. */
        raw_send(&r, s, "ping", 4);
        assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
        assert_string_equal(buf, "ping");
        assert_int_equal(SSL_set_block_padding(r.ssl, 512), 1);
        raw_send(&r, s, "padded", 6);
        assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
        assert_string_equal(buf, "padded");
        /* The server's: several full records, after the ticket OpenSSL sent
         * (so the sequence numbers carried over). */
        for (n = 0; n < len; n += (size_t)k) {
            k = tls_write(s, big + n, len - n);
            assert_true(k > 0);
            raw_take(&r, s);
        }
        for (got = 0; got < len; got += (size_t)k) {
            k = SSL_read(r.ssl, back + got, (int)(len - got));
            assert_true(k > 0);
        }
        assert_memory_equal(big, back, len);
        tls_conn_free(s);
        raw_free(&r);
    }
    free(big);
    free(back);
    tls_ctx_unref(sctx);
}

/* RFC 8446 §4.6.3: the server follows the client's key updates, and answers
 * update_requested with an update of its own. */
static void test_tls13_key_update(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct raw r;
    struct tls_conn *s;
    char buf[64], want[64];
    size_t n;
    int i;

    raw_tls13(&r, sctx, &s, NULL);
    for (i = 0; i < 4; i++) {
        assert_int_equal(SSL_key_update(r.ssl, i % 2 == 0 ? SSL_KEY_UPDATE_REQUESTED
                                                          : SSL_KEY_UPDATE_NOT_REQUESTED),
                         1);
        snprintf(want, sizeof(want), "request %d", i);
        raw_send(&r, s, want, strlen(want));
        assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
        assert_string_equal(buf, want);
        snprintf(want, sizeof(want), "response %d", i);
        assert_int_equal(tls_write(s, want, strlen(want)), (int)strlen(want));
        raw_take(&r, s);
        assert_int_equal(SSL_read(r.ssl, buf, sizeof(buf)), (int)strlen(want));
        assert_memory_equal(buf, want, strlen(want));
    }
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* A record that is not what it should be fails the connection with the
 * alert RFC 8446 names, queued for the peer; nothing of it is returned. */
static void expect_record_refused(const char *wire, size_t len, const char *why)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct raw r;
    struct tls_conn *s;
    char buf[64];
    unsigned long e;

    raw_tls13(&r, sctx, &s, NULL);
    assert_int_equal(tls_feed(s, wire, len), (int)len);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_int_equal(tls_failure(s), TLS_FAIL_PROTOCOL);
    assert_string_equal(tls_error(s), why);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO); /* it stays failed */
    assert_int_equal(tls_write(s, "x", 1), TLS_E_PROTO);
    /* The client gets the alert. */
    raw_take(&r, s);
    assert_true(SSL_read(r.ssl, buf, sizeof(buf)) <= 0);
    e = ERR_peek_error();
    assert_int_equal(ERR_GET_LIB(e), ERR_LIB_SSL);
    assert_non_null(strstr(ERR_reason_error_string(e), why));
    ERR_clear_error();
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

static void test_tls13_bad_records(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct raw r;
    struct tls_conn *s;
    char wire[512], buf[64];
    size_t n, i;

    /* One flipped bit in a record from a real client. */
    raw_tls13(&r, sctx, &s, NULL);
    assert_int_equal(SSL_write(r.ssl, "hello", 5), 5);
    n = raw_out(&r, wire, sizeof(wire));
    assert_true(n > 10);
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
    wire[7] ^= 1;
    expect_record_refused(wire, n, "bad record mac");

    /* Protected with keys of another connection: the same. */
    wire[7] ^= 1;
    expect_record_refused(wire, n, "bad record mac");

    /* An unprotected alert after the handshake. */
    expect_record_refused("\x15\x03\x03\x00\x02\x01\x00", 7, "unexpected message");
    /* A record longer than TLS allows, refused from its header alone. */
    expect_record_refused("\x17\x03\x03\x41\x01", 5, "record overflow");
    /* Too short to hold a tag. */
    memcpy(wire, "\x17\x03\x03\x00\x10", 5);
    memset(wire + 5, 0, 16);
    expect_record_refused(wire, 21, "bad record mac");

    /* A record fed a byte at a time is read once it is whole. */
    sctx = server_ctx(NULL, 12, false);
    raw_tls13(&r, sctx, &s, NULL);
    assert_int_equal(SSL_write(r.ssl, "slow", 4), 4);
    n = raw_out(&r, wire, sizeof(wire));
    for (i = 0; i < n; i++) {
        assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
        assert_int_equal(tls_feed(s, wire + i, 1), 1);
    }
    assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, "slow");
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* A client's first request often travels in the same segment as its
 * Finished: the server reads it after handing the connection over. */
static void test_tls13_request_with_client_finished(void **state)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct raw r;
    struct tls_conn *s;
    char wire[16384], buf[128];
    size_t n;

    raw_new(&r, NULL, 0, 0, NULL);
    s = tls_conn_new(sctx, NULL);
    assert_non_null(s);
    assert_true(SSL_do_handshake(r.ssl) <= 0); /* ClientHello */
    n = raw_out(&r, wire, sizeof(wire));
    assert_int_equal(tls_feed(s, wire, n), (int)n);
    assert_int_equal(tls_handshake(s), TLS_E_AGAIN);
    raw_take(&r, s);
    assert_int_equal(SSL_do_handshake(r.ssl), 1); /* Finished, then at once: */
    assert_int_equal(SSL_write(r.ssl, req, (int)strlen(req)), (int)strlen(req));
    n = raw_out(&r, wire, sizeof(wire));
    assert_int_equal(tls_feed(s, wire, n), (int)n); /* both in one piece */
    assert_int_equal(tls_handshake(s), 0);
    assert_string_equal(tls_version(s), "TLSv1.3");
    assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, req);
    /* and the answer, after the ticket OpenSSL sealed */
    assert_int_equal(tls_write(s, "HTTP/1.1 204 \r\n\r\n", 17), 17);
    raw_take(&r, s);
    assert_int_equal(SSL_read(r.ssl, buf, sizeof(buf)), 17);
    assert_memory_equal(buf, "HTTP/1.1 204 \r\n\r\n", 17);
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* The application traffic secrets of the last raw client handshake, from
 * its key log, so that a test can seal what no OpenSSL client sends. */
static uint8_t raw_secret[2][TLSREC_MAX_SECRET]; /* [0] client, [1] server */
static size_t raw_secret_len;

static void raw_keylog(const SSL *ssl, const char *line)
{
    int which = strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0   ? 0
                : strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0 ? 1
                                                                     : -1;
    const char *hex = strrchr(line, ' ') + 1;
    size_t n = 0;

    (void)ssl;
    if (which < 0)
        return;
    for (; hex[0] != '\0' && hex[1] != '\0' && n < TLSREC_MAX_SECRET; hex += 2)
        raw_secret[which][n++] = (uint8_t)(OPENSSL_hexchar2int((unsigned char)hex[0]) << 4 |
                                           OPENSSL_hexchar2int((unsigned char)hex[1]));
    raw_secret_len = n;
}

/* Seals one record with inner content `inner` (its last byte the content
 * type) as the raw client would, and feeds it to server s. */
static void feed_sealed(struct tlsrec *cli, struct tls_conn *s, const uint8_t *inner, size_t n)
{
    uint8_t rec[256];
    int k = tlsrec_seal(cli, inner[n - 1], inner, n - 1, rec);

    assert_true(k > 0);
    assert_int_equal(tls_feed(s, (const char *)rec, (size_t)k), k);
}

/* A raw TLS 1.3 client (AES-128-GCM) handshaken with a new server *s, and
 * cli keyed as that client's record layer from its key log: cli seals what
 * the client sends (wr) and opens what the server sends (rd), past the
 * session tickets, which the raw client has read. */
static void keyed_tls13(struct raw *r, struct tls_ctx *sctx, struct tls_conn **s,
                        struct tlsrec *cli)
{
    char buf[64];

    raw_new(r, NULL, 0, 0, NULL);
    SSL_CTX_set_keylog_callback(r->ctx, raw_keylog);
    assert_int_equal(SSL_set_ciphersuites(r->ssl, "TLS_AES_128_GCM_SHA256"), 1);
    *s = tls_conn_new(sctx, NULL);
    assert_non_null(*s);
    raw_secret_len = 0;
    assert_int_equal(raw_handshake(r, *s, &(int){0}), 1);
    assert_int_equal(raw_secret_len, 32);
    assert_int_equal(tlsrec_init(cli, 0x1301, raw_secret[1], raw_secret[0], raw_secret_len, 0), 0);
    /* The tickets: the raw client reads them, and cli's read sequence
     * number continues after them. */
    assert_true(SSL_read(r->ssl, buf, sizeof(buf)) <= 0);
    ERR_clear_error();
    cli->rd.seq = tls_rec(*s)->wr.seq;
}

/* Seals a record whose inner plaintext is content || type || pad zeros. */
static void feed_padded(struct tlsrec *cli, struct tls_conn *s, uint8_t type, const void *content,
                        size_t len, size_t pad)
{
    uint8_t *inner = calloc(1, len + 1 + pad), *rec = malloc(len + 1 + pad + TLSREC_OVERHEAD);
    int k;

    assert_non_null(inner);
    assert_non_null(rec);
    if (len > 0)
        memcpy(inner, content, len);
    inner[len] = type;
    /* tlsrec_seal appends its type byte: a zero one is padding too. */
    k = tlsrec_seal(cli, 0, inner, len + 1 + pad, rec);
    assert_true(k > 0);
    assert_int_equal(tls_feed(s, (const char *)rec, (size_t)k), k);
    free(inner);
    free(rec);
}

/* What the server sent, opened record by record as the client: the type
 * and content of each, up to max records (KeyUpdates move cli's read key,
 * as a client's would). Returns how many there were. */
struct opened {
    uint8_t type;
    size_t len;
    uint8_t data[64];
};

static size_t open_server_records(struct tlsrec *cli, struct tls_conn *s, struct opened *out,
                                  size_t max)
{
    static const uint8_t key_update[5] = {24, 0, 0, 1, 0};
    uint8_t wire[4096];
    size_t n = tls_take(s, (char *)wire, sizeof(wire)), off = 0, k = 0;

    while (off < n) {
        uint8_t type;
        size_t len;
        int r = tlsrec_open(cli, wire + off, n - off, &type, &len);

        assert_true(r > 0);
        assert_true(k < max);
        out[k].type = type;
        out[k].len = len;
        memcpy(out[k].data, wire + off + TLSREC_HEADER, len < 64 ? len : 64);
        if (type == TLSREC_HANDSHAKE) {
            assert_int_equal(len, sizeof(key_update));
            assert_memory_equal(wire + off + TLSREC_HEADER, key_update, sizeof(key_update));
            assert_int_equal(tlsrec_update(cli, &cli->rd), 0);
        }
        off += (size_t)r;
        k++;
    }
    return k;
}

/* The client asks for a key update: its KeyUpdate sealed under its current
 * key, then it moves to the next one. */
static void client_key_update(struct tlsrec *cli, struct tls_conn *s, bool request)
{
    const uint8_t ku[6] = {24, 0, 0, 1, request ? 1 : 0, TLSREC_HANDSHAKE};

    feed_sealed(cli, s, ku, sizeof(ku));
    assert_int_equal(tlsrec_update(cli, &cli->wr), 0);
}

/* Handshake messages a client may not send after the handshake. */
static void test_tls13_bad_handshake_messages(void **state)
{
    static const struct {
        uint8_t inner[8];
        size_t len;
        const char *why;
    } cases[] = {
        {{24, 0, 0, 1, 2, 22}, 6, "illegal parameter"},      /* KeyUpdate asking neither way */
        {{24, 0, 0, 2, 0, 0, 22}, 7, "decode error"},        /* KeyUpdate of the wrong length */
        {{4, 0, 0, 0, 22}, 5, "unexpected message"},         /* a NewSessionTicket from a client */
        {{24, 0, 0, 1, 0, 23, 22}, 7, "unexpected message"}, /* more after a KeyUpdate */
    };
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct raw r;
        struct tls_conn *s;
        struct tlsrec cli;
        char buf[64];

        keyed_tls13(&r, sctx, &s, &cli);
        /* A good record first: the keys are right. */
        feed_sealed(&cli, s, (const uint8_t *)"ok\x17", 3);
        assert_int_equal(tls_read(s, buf, sizeof(buf)), 2);
        feed_sealed(&cli, s, cases[i].inner, cases[i].len);
        assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
        assert_string_equal(tls_error(s), cases[i].why);
        tls_conn_free(s);
        raw_free(&r);
    }
    tls_ctx_unref(sctx);
}

/* A client's fatal alert ends the connection without an answer; its
 * close_notify is a clean end. */
static void test_tls13_peer_alerts(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct raw r;
    struct tls_conn *s;
    char wire[512], buf[64];
    size_t n;

    raw_tls13(&r, sctx, &s, NULL);
    raw_send(&r, s, "last", 4);
    assert_int_equal(SSL_shutdown(r.ssl), 0);
    n = raw_out(&r, wire, sizeof(wire));
    assert_int_equal(tls_feed(s, wire, n), (int)n);
    assert_int_equal(read_all(s, buf, sizeof(buf), &n), TLS_E_CLOSED);
    assert_string_equal(buf, "last");
    assert_int_equal(tls_failure(s), TLS_FAIL_NONE);
    assert_int_equal(tls_shutdown(s), 0);
    raw_take(&r, s);
    assert_int_equal(SSL_shutdown(r.ssl), 1); /* our close_notify arrived */
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* RFC 8446 §4.6.3: update_requested is answered before the server's next
 * application data; a client that floods requests and never reads makes at
 * most one answer wait (27 bytes), not one per request. */
static void test_tls13_key_update_flood(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct opened rec[4];
    struct tlsrec cli;
    struct raw r;
    struct tls_conn *s;
    char buf[64];
    size_t most = 0, n;
    int i;

    keyed_tls13(&r, sctx, &s, &cli);
    for (i = 0; i < 100000; i++) {
        client_key_update(&cli, s, true);
        assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
        if (tls_pending(s) > most)
            most = tls_pending(s);
    }
    assert_int_equal(most, TLSREC_OVERHEAD + 5); /* one sealed KeyUpdate */
    /* The first request was answered at once, and that answer, still
     * unsent while the others arrived, answers them all (§4.6.3). */
    assert_int_equal(open_server_records(&cli, s, rec, 4), 1);
    assert_int_equal(rec[0].type, TLSREC_HANDSHAKE);
    assert_int_equal(tls_pending(s), 0);
    /* A request after the answer went out gets an answer of its own. */
    client_key_update(&cli, s, true);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
    assert_int_equal(open_server_records(&cli, s, rec, 4), 1);
    assert_int_equal(rec[0].type, TLSREC_HANDSHAKE);
    assert_int_equal(tls_pending(s), 0);
    /* Both sides are on their new keys. */
    feed_sealed(&cli, s, (const uint8_t *)"ping\x17", 5);
    assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
    assert_string_equal(buf, "ping");
    assert_int_equal(tls_write(s, "pong", 4), 4);
    assert_int_equal(open_server_records(&cli, s, rec, 4), 1);
    assert_int_equal(rec[0].type, TLSREC_APPDATA);
    assert_memory_equal(rec[0].data, "pong", 4);

    /* An answer owed while output waits goes before the next data. */
    assert_int_equal(tls_write(s, "one", 3), 3);
    client_key_update(&cli, s, true);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
    assert_int_equal(tls_write(s, "two", 3), 3);
    /* ... and a request while that answer waits unsent needs no other. */
    client_key_update(&cli, s, true);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
    assert_int_equal(tls_write(s, "three", 5), 5);
    assert_int_equal(open_server_records(&cli, s, rec, 4), 4);
    assert_int_equal(rec[0].type, TLSREC_APPDATA);
    assert_int_equal(rec[1].type, TLSREC_HANDSHAKE);
    assert_int_equal(rec[2].type, TLSREC_APPDATA);
    assert_memory_equal(rec[2].data, "two", 3);
    assert_int_equal(rec[3].type, TLSREC_APPDATA);
    assert_memory_equal(rec[3].data, "three", 5);
    /* update_not_requested is followed, not answered. */
    client_key_update(&cli, s, false);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
    assert_int_equal(tls_pending(s), 0);
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* RFC 8446 §5.5: the server moves to a new write key of its own before the
 * AEAD's usage limit (set close to it through the test hook). */
static void test_tls13_rekeys_on_its_own(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct opened rec[8];
    struct tlsrec cli;
    struct raw r;
    struct tls_conn *s;
    uint64_t limit;

    keyed_tls13(&r, sctx, &s, &cli);
    limit = tlsrec_rekey_after(tls_rec(s));
    assert_true(limit <= 1ull << 24); /* AES-GCM: below 2^24.5 records */
    tls_rec(s)->wr.seq = cli.rd.seq = limit - 3;
    assert_int_equal(tls_write(s, "a", 1), 1);
    assert_int_equal(tls_write(s, "b", 1), 1);
    assert_int_equal(tls_write(s, "c", 1), 1);
    assert_int_equal(open_server_records(&cli, s, rec, 8), 4);
    assert_int_equal(rec[0].type, TLSREC_APPDATA);
    assert_int_equal(rec[1].type, TLSREC_APPDATA);
    assert_int_equal(rec[2].type, TLSREC_HANDSHAKE); /* the last record under the old key */
    assert_int_equal(rec[3].type, TLSREC_APPDATA);
    assert_memory_equal(rec[3].data, "c", 1);
    assert_int_equal(tls_rec(s)->wr.seq, 1);
    assert_int_equal(cli.rd.seq, 1);
    tls_conn_free(s);
    raw_free(&r);
    tls_ctx_unref(sctx);
}

/* The alert a failed server sent, as the client opens it. */
static void expect_alert(struct tlsrec *cli, struct tls_conn *s, uint8_t description)
{
    struct opened rec[2];

    assert_int_equal(open_server_records(cli, s, rec, 2), 1);
    assert_int_equal(rec[0].type, TLSREC_ALERT);
    assert_int_equal(rec[0].len, 2);
    assert_int_equal(rec[0].data[0], 2);
    assert_int_equal(rec[0].data[1], description);
}

/* Records without content are bounded: TLS_MAX_EMPTY_RECORDS in a row,
 * padded or not, and TLS_MAX_WARNING_ALERTS user_canceled alerts; a record
 * with content starts the count again. */
static void test_tls13_caps_on_empty_records_and_alerts(void **state)
{
    static const struct {
        int limit;
        uint8_t type;
        size_t pad;
        const char *why;
        enum tls_record_error e;
    } cases[] = {
        {TLS_MAX_EMPTY_RECORDS, TLSREC_APPDATA, 0, "too many empty records", TLS_REC_EMPTY_RECORDS},
        {TLS_MAX_EMPTY_RECORDS, TLSREC_APPDATA, 16000, "too many empty records",
         TLS_REC_EMPTY_RECORDS},
        {TLS_MAX_WARNING_ALERTS, TLSREC_ALERT, 0, "too many warning alerts",
         TLS_REC_WARNING_ALERTS},
    };
    static const uint8_t user_canceled[2] = {1, 90};
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    size_t k;

    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct tlsrec cli;
        struct raw r;
        struct tls_conn *s;
        char buf[64];
        int round, i;

        keyed_tls13(&r, sctx, &s, &cli);
        for (round = 0; round < 2; round++) {
            for (i = 0; i < cases[k].limit; i++) {
                if (cases[k].type == TLSREC_ALERT)
                    feed_padded(&cli, s, TLSREC_ALERT, user_canceled, 2, cases[k].pad);
                else
                    feed_padded(&cli, s, TLSREC_APPDATA, NULL, 0, cases[k].pad);
                assert_int_equal(tls_read(s, buf, sizeof(buf)), 0);
            }
            if (round == 0) { /* content resets the count */
                feed_padded(&cli, s, TLSREC_APPDATA, "x", 1, 0);
                assert_int_equal(tls_read(s, buf, sizeof(buf)), 1);
            }
        }
        if (cases[k].type == TLSREC_ALERT)
            feed_padded(&cli, s, TLSREC_ALERT, user_canceled, 2, 0);
        else
            feed_padded(&cli, s, TLSREC_APPDATA, NULL, 0, cases[k].pad);
        assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
        assert_string_equal(tls_error(s), cases[k].why);
        assert_int_equal(tls_record_error(s), cases[k].e);
        expect_alert(&cli, s, TLSREC_AD_UNEXPECTED_MESSAGE);
        tls_conn_free(s);
        raw_free(&r);
    }
    tls_ctx_unref(sctx);
}

/* RFC 8446 §5.1: a handshake message may span records; a KeyUpdate split
 * is taken, and the rules on what may come between are kept. */
static void test_tls13_split_key_update(void **state)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 1};
    static const struct {
        size_t cut[4];   /* fragment lengths, 0-terminated */
        uint8_t between; /* a record type fed after the first fragment, or 0 */
        const char *why; /* NULL: accepted */
        enum tls_record_error e;
    } cases[] = {
        {{2, 3}, 0, NULL, TLS_REC_NONE},
        {{1, 1, 1, 2}, 0, NULL, TLS_REC_NONE},
        {{4, 1}, 0, NULL, TLS_REC_NONE},
        {{2, 3}, TLSREC_APPDATA, "unexpected message", TLS_REC_UNEXPECTED_MESSAGE},
        {{2, 3}, TLSREC_ALERT, "unexpected message", TLS_REC_UNEXPECTED_MESSAGE},
        {{0}, TLSREC_HANDSHAKE, "unexpected message", TLS_REC_UNEXPECTED_MESSAGE}, /* empty */
    };
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    size_t k;

    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct opened rec[2];
        struct tlsrec cli;
        struct raw r;
        struct tls_conn *s;
        char buf[64];
        size_t off = 0, i, n;
        int rc = 0;

        keyed_tls13(&r, sctx, &s, &cli);
        for (i = 0; i < 4 && cases[k].cut[i] != 0; i++) {
            feed_padded(&cli, s, TLSREC_HANDSHAKE, ku + off, cases[k].cut[i], 0);
            off += cases[k].cut[i];
            if (i == 0 && cases[k].between == TLSREC_APPDATA)
                feed_padded(&cli, s, TLSREC_APPDATA, "x", 1, 0);
            if (i == 0 && cases[k].between == TLSREC_ALERT)
                feed_padded(&cli, s, TLSREC_ALERT, "\x01\x5a", 2, 0);
            rc = tls_read(s, buf, sizeof(buf));
            if (rc < 0)
                break;
            assert_int_equal(rc, 0);
        }
        if (cases[k].cut[0] == 0) {
            feed_padded(&cli, s, TLSREC_HANDSHAKE, NULL, 0, 0);
            rc = tls_read(s, buf, sizeof(buf));
        }
        if (cases[k].why != NULL) {
            assert_int_equal(rc, TLS_E_PROTO);
            assert_string_equal(tls_error(s), cases[k].why);
            assert_int_equal(tls_record_error(s), cases[k].e);
            expect_alert(&cli, s, TLSREC_AD_UNEXPECTED_MESSAGE);
        } else {
            /* Followed and answered; the client's next record is under its
             * new key. */
            assert_int_equal(open_server_records(&cli, s, rec, 2), 1);
            assert_int_equal(rec[0].type, TLSREC_HANDSHAKE);
            assert_int_equal(tlsrec_update(&cli, &cli.wr), 0);
            feed_sealed(&cli, s, (const uint8_t *)"new\x17", 4);
            assert_int_equal(read_all(s, buf, sizeof(buf), &n), 0);
            assert_string_equal(buf, "new");
        }
        tls_conn_free(s);
        raw_free(&r);
    }
    tls_ctx_unref(sctx);
}

/* What a failed connection reports: the reason for the metric, the alert
 * for the client. A client's own fatal alert gets no alert back. */
static void test_tls13_record_error_reasons(void **state)
{
    static const uint8_t zeros[12];
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    struct tlsrec cli;
    struct raw r;
    struct tls_conn *s;
    char buf[64];

    /* Plaintext ChangeCipherSpec after the handshake. */
    keyed_tls13(&r, sctx, &s, &cli);
    assert_int_equal(tls_record_error(s), TLS_REC_NONE);
    assert_int_equal(tls_feed(s, "\x14\x03\x03\x00\x01\x01", 6), 6);
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_int_equal(tls_record_error(s), TLS_REC_UNEXPECTED_MESSAGE);
    expect_alert(&cli, s, TLSREC_AD_UNEXPECTED_MESSAGE);
    tls_conn_free(s);
    raw_free(&r);

    /* An inner plaintext of zeros only: no content type. */
    keyed_tls13(&r, sctx, &s, &cli);
    feed_padded(&cli, s, 0, zeros, 0, sizeof(zeros));
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_string_equal(tls_error(s), "unexpected message");
    assert_int_equal(tls_record_error(s), TLS_REC_UNEXPECTED_MESSAGE);
    expect_alert(&cli, s, TLSREC_AD_UNEXPECTED_MESSAGE);
    tls_conn_free(s);
    raw_free(&r);

    /* A tampered record. */
    keyed_tls13(&r, sctx, &s, &cli);
    {
        uint8_t rec[64];
        int k = tlsrec_seal(&cli, TLSREC_APPDATA, "hello", 5, rec);
        rec[8] ^= 0x40;
        assert_int_equal(tls_feed(s, (const char *)rec, (size_t)k), k);
    }
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_int_equal(tls_record_error(s), TLS_REC_BAD_RECORD_MAC);
    assert_string_equal(tls_record_error_name(tls_record_error(s)), "bad_record_mac");
    expect_alert(&cli, s, TLSREC_AD_BAD_RECORD_MAC);
    tls_conn_free(s);
    raw_free(&r);

    /* The client's fatal alert. */
    keyed_tls13(&r, sctx, &s, &cli);
    feed_padded(&cli, s, TLSREC_ALERT, "\x02\x28", 2, 0); /* handshake_failure */
    assert_int_equal(tls_read(s, buf, sizeof(buf)), TLS_E_PROTO);
    assert_int_equal(tls_failure(s), TLS_FAIL_PEER_ALERT);
    assert_int_equal(tls_record_error(s), TLS_REC_PEER_ALERT);
    assert_int_equal(tls_pending(s), 0);
    tls_conn_free(s);
    raw_free(&r);

    /* A handshake failure is not a record error. */
    s = tls_conn_new(sctx, NULL);
    assert_non_null(s);
    assert_int_equal(tls_feed(s, "\x16\x03\x01\x00\x05hello", 10), 10);
    assert_true(tls_handshake(s) < 0 && tls_handshake(s) != TLS_E_AGAIN);
    assert_int_equal(tls_record_error(s), TLS_REC_NONE);
    tls_conn_free(s);
    tls_ctx_unref(sctx);
}

/* A client that asked for max_fragment_length 512 (RFC 6066) gets records
 * it can take, on the tlsrec path and on OpenSSL's alike. */
static void test_max_fragment_length_honoured(void **state)
{
    struct tls_ctx *sctx = server_ctx(NULL, 12, false);
    size_t len = 5000, got, n;
    char *big = malloc(len), *back = malloc(len);
    int version;

    assert_non_null(big);
    assert_non_null(back);
    for (n = 0; n < len; n++)
        big[n] = (char)('a' + n % 26);
    for (version = 0; version < 2; version++) {
        struct raw r;
        struct tls_conn *s;
        int rc_s, k;

        raw_new(&r, NULL, 0, version == 0 ? 0 : TLS1_2_VERSION, NULL);
        assert_int_equal(SSL_set_tlsext_max_fragment_length(r.ssl, TLSEXT_max_fragment_length_512),
                         1);
        s = tls_conn_new(sctx, NULL);
        assert_non_null(s);
        assert_int_equal(raw_handshake(&r, s, &rc_s), 1);
        assert_int_equal(rc_s, 0);
        assert_string_equal(tls_version(s), version == 0 ? "TLSv1.3" : "TLSv1.2");
        if (version == 0)
            assert_int_equal(tls_rec(s)->max_plain, 512);
        for (n = 0; n < len; n += (size_t)k) {
            k = tls_write(s, big + n, len - n);
            assert_true(k > 0);
        }
        raw_take(&r, s);
        for (got = 0; got < len; got += (size_t)k) {
            k = SSL_read(r.ssl, back + got, (int)(len - got));
            assert_true(k > 0);
            assert_true(k <= 512);
        }
        assert_memory_equal(big, back, len);
        tls_conn_free(s);
        raw_free(&r);
    }
    free(big);
    free(back);
    tls_ctx_unref(sctx);
}

/* The thread's cipher contexts do not keep a released connection's keys. */
static void test_tlsrec_release_wipes_thread_contexts(void **state)
{
    uint8_t a[32], b[32], rec[64], type;
    struct tlsrec srv, peer, copy;
    size_t len;
    int k;

    memset(a, 0xa5, sizeof(a));
    memset(b, 0x5a, sizeof(b));
    assert_int_equal(tlsrec_init(&srv, 0x1301, a, b, sizeof(a), 0), 0);
    assert_int_equal(tlsrec_init(&peer, 0x1301, b, a, sizeof(a), 0), 0);
    /* srv opens one of peer's records and seals one of its own. */
    k = tlsrec_seal(&peer, TLSREC_APPDATA, "in", 2, rec);
    assert_int_equal(tlsrec_open(&srv, rec, (size_t)k, &type, &len), k);
    k = tlsrec_seal(&srv, TLSREC_APPDATA, "out", 3, rec);
    assert_true(k > 0);
    assert_true(tlsrec_thread_holds(&srv));
    copy = srv;
    tlsrec_release(&srv);
    assert_false(tlsrec_thread_holds(&copy));
    /* The contexts still work for the next connection. */
    assert_int_equal(tlsrec_open(&peer, rec, (size_t)k, &type, &len), k);
    assert_memory_equal(rec + TLSREC_HEADER, "out", 3);
    tlsrec_release(&peer);
    OPENSSL_cleanse(&copy, sizeof(copy));
}

/* ---- footprint ---------------------------------------------------------- */

/* Bytes the measured engine holds while idle after a handshake (with the
 * client's ticket delivered) and after 1 MiB each way. */
static void footprint(const char *label, struct tls_ctx *sctx, struct tls_ctx *cctx,
                      bool measure_server, size_t *idle, size_t *after_data)
{
    struct pair p;
    size_t base;

    base = mem_live[1];
    mem_owner = !measure_server;
    p.c = tls_conn_new(cctx, "localhost");
    mem_owner = measure_server;
    p.s = tls_conn_new(sctx, NULL);
    mem_owner = 0;
    assert_non_null(p.c);
    assert_non_null(p.s);
    measured = measure_server ? p.s : p.c;
    pair_handshake(&p);
    expect_ok(&p);
    *idle = mem_live[1] - base;
    transfer(p.c, p.s, 1 << 20);
    transfer(p.s, p.c, 1 << 20);
    *after_data = mem_live[1] - base;
    measured = NULL;
    pair_free(&p);
    print_message("  %-38s %6zu bytes idle, %6zu after 1 MiB each way\n", label, *idle,
                  *after_data);
}

static void test_memory_per_connection(void **state)
{
    struct tls_ctx *sctx, *mctx, *cctx13, *cctx12, *fctx;
    size_t idle, data;

    if (!mem_counting) {
        print_message("  (allocation counting unavailable: skipped)\n");
        skip();
    }
    sctx = server_ctx(NULL, 12, false);
    mctx = server_ctx(cert("ca.crt"), 12, false);
    cctx13 = client_ctx(NULL, 0);
    cctx12 = client_ctx(NULL, 12);
    fctx = client_ctx("frontend", 0);

    /* The first records sealed and opened make this thread's cipher
     * contexts (tlsrec.c): they are the thread's, not a connection's. */
    footprint("(warm-up)", sctx, cctx13, true, &idle, &data);

    /* What matters is that nothing grows with the traffic a connection has
     * seen. A TLS 1.3 server connection is handed over to tlsrec after its
     * handshake: keys and sequence numbers only. TLS 1.2 and clients stay
     * in OpenSSL (struct ssl_st alone is 7.6 KiB; without
     * SSL_MODE_RELEASE_BUFFERS an idle one holds ~46 KiB). */
    footprint("server, TLS 1.3", sctx, cctx13, true, &idle, &data);
    assert_true(idle < 1024);
    assert_true(data <= idle);
    footprint("server, TLS 1.2", sctx, cctx12, true, &idle, &data);
    assert_true(idle < 16384);
    assert_true(data <= idle);
    footprint("server, TLS 1.3, mTLS", mctx, fctx, true, &idle, &data);
    assert_true(idle < 1024);
    assert_true(data <= idle);
    footprint("client, TLS 1.3 (+ its cached session)", sctx, cctx13, false, &idle, &data);
    assert_true(idle < 24576);
    assert_true(data <= idle);
    tls_ctx_unref(sctx);
    tls_ctx_unref(mctx);
    tls_ctx_unref(cctx13);
    tls_ctx_unref(cctx12);
    tls_ctx_unref(fctx);
}

int main(void)
{
    /* Before OpenSSL allocates anything; refused once it has. */
    mem_counting = CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free) == 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_handshake_and_data),
        cmocka_unit_test(test_tls12_handshake_and_data),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_peek_and_consume),
        cmocka_unit_test(test_min_version_13_refuses_tls12_client),
        cmocka_unit_test(test_tls11_refused),
        cmocka_unit_test(test_resumption_tls13),
        cmocka_unit_test(test_resumption_tls12),
        cmocka_unit_test(test_sni_selects_certificate),
        cmocka_unit_test(test_sni_unknown_name_gets_default),
        cmocka_unit_test(test_sni_strict_refuses_unknown_name),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_mtls_identity_tls13),
        cmocka_unit_test(test_mtls_identity_tls12),
        cmocka_unit_test(test_mtls_identity_from_cn),
        cmocka_unit_test(test_mtls_no_client_cert),
        cmocka_unit_test(test_mtls_expired_client_cert),
        cmocka_unit_test(test_mtls_wrong_ca_client_cert),
        cmocka_unit_test(test_client_cert_not_asked_without_client_ca),
        cmocka_unit_test(test_client_rejects_wrong_hostname),
        cmocka_unit_test(test_client_rejects_unknown_ca),
        cmocka_unit_test(test_client_needs_a_name),
        cmocka_unit_test(test_plain_http_on_tls_port),
        cmocka_unit_test(test_garbage_on_tls_port),
        cmocka_unit_test(test_truncated_handshake_needs_more),
        cmocka_unit_test(test_buffers_are_capped),
        cmocka_unit_test(test_server_ctx_errors),
        cmocka_unit_test(test_client_ctx_errors),
        cmocka_unit_test(test_ctx_outlives_its_owner),
        cmocka_unit_test(test_handshake_timeout_is_kept),
        cmocka_unit_test(test_make_certs_idempotent),
        cmocka_unit_test(test_tls13_records_every_suite),
        cmocka_unit_test(test_tls13_key_update),
        cmocka_unit_test(test_tls13_bad_records),
        cmocka_unit_test(test_tls13_peer_alerts),
        cmocka_unit_test(test_tls13_bad_handshake_messages),
        cmocka_unit_test(test_tls13_request_with_client_finished),
        cmocka_unit_test(test_tls13_key_update_flood),
        cmocka_unit_test(test_tls13_rekeys_on_its_own),
        cmocka_unit_test(test_tls13_caps_on_empty_records_and_alerts),
        cmocka_unit_test(test_tls13_split_key_update),
        cmocka_unit_test(test_tls13_record_error_reasons),
        cmocka_unit_test(test_max_fragment_length_honoured),
        cmocka_unit_test(test_tlsrec_release_wipes_thread_contexts),
        cmocka_unit_test(test_memory_per_connection),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
