/*
 * tls.c - the TLS engine: OpenSSL over a pair of in-memory buffers.
 *
 * Each connection's SSL reads and writes through one custom BIO whose two
 * sides are plain buffers owned by the connection: `in` holds ciphertext the
 * caller fed and OpenSSL has not read yet, `out` ciphertext OpenSSL wrote and
 * the caller has not taken yet. A custom BIO rather than BIO_s_mem or a BIO
 * pair because both of those keep their largest buffer for the life of the
 * connection, while ours are freed as soon as they are empty: an idle
 * keep-alive connection holds no buffer at all (with SSL_MODE_RELEASE_BUFFERS
 * for OpenSSL's own record buffers). Both are capped (TLS_IN_MAX,
 * TLS_OUT_MAX), so a peer cannot make a connection buffer without bound.
 *
 * Server contexts hold every certificate of a listener and choose one by SNI
 * in the servername callback (exact names first, then "*." wildcards, then
 * the first certificate, or a refusal with sni_strict); they seal session
 * tickets with keys of their own that rotate (ticket_key_cb). Client
 * contexts keep the last session per server name so that the next
 * connection to that destination resumes.
 *
 * A TLS 1.3 server connection leaves OpenSSL when its handshake is done
 * (rec_take_over): its application traffic secrets, taken from the key log
 * callback, key a tlsrec (tlsrec.h), the SSL is freed, and tls_read,
 * tls_write and tls_shutdown seal and open records through tlsrec in the
 * same buffers. What the accessors report is kept from the handshake.
 *
 * OpenSSL's error queue is per thread: every call into OpenSSL starts from an
 * empty queue and leaves it empty, so one connection's error never shows up
 * as another's. All allocations go through OPENSSL_malloc so that a test can
 * account for a connection's whole footprint with CRYPTO_set_mem_functions.
 */
#include "tls.h"
#include "tlsrec.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* TLS 1.2: forward secrecy and AEAD only, AES-GCM first (AES-NI is the common
 * case; SSL_OP_PRIORITIZE_CHACHA lets clients without it have ChaCha20).
 * TLS 1.3 suites are all AEAD; listed so that the set does not depend on the
 * system's openssl.cnf. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char tls_groups[] = "X25519:P-256:P-384";

/* ALPN in wire format: we only speak HTTP/1.1. */
static const unsigned char alpn_wire[] = "\x08http/1.1";
#define ALPN_WIRE_LEN (sizeof(alpn_wire) - 1)

/* Server-side session cache for TLS 1.2 clients that do not take tickets
 * (ticket sessions and TLS 1.3 are stateless and never enter it). */
#define TLS_SERVER_SESSIONS 1024
/* Client-side: last session per destination name, least recently used out. */
#define TLS_CLIENT_SESSIONS 64

static const unsigned char sid_ctx[] = "fnproxy";

struct tls_cert {
    X509 *x509;
    EVP_PKEY *pkey;
    struct stack_st_X509 *chain; /* STACK_OF(X509): intermediates after the leaf in cert_file */
    char **names;                /* lower-case SAN DNS names (else the CN): SNI candidates */
    size_t n_names;
};

struct tls_ticket_key {
    unsigned char name[16]; /* sent in the ticket; finds the key again */
    unsigned char aes[32];  /* AES-256-CBC */
    unsigned char hmac[32]; /* HMAC-SHA256 */
};

struct tls_cached_session {
    char *name; /* destination, as given to tls_conn_new */
    SSL_SESSION *sess;
    uint64_t used; /* ctx->clock when last stored or used: LRU */
};

struct tls_ctx {
    SSL_CTX *ssl_ctx;
    int refs; /* atomic */
    bool server;
    bool sni_strict;
    uint32_t handshake_timeout_ms;
    struct tls_cert *certs; /* server: [0] is the default */
    size_t n_certs;
    pthread_mutex_t lock;                        /* ticket keys (server), sessions (client) */
    struct tls_ticket_key keys[TLS_TICKET_KEYS]; /* [0] the newest; seals new tickets */
    unsigned n_keys;
    uint64_t rotated_ms; /* monotonic time of the last rotation */
    struct tls_cached_session sessions[TLS_CLIENT_SESSIONS];
    uint64_t clock;
};

/* Ciphertext waiting in one direction: data[off, len) is unread. */
struct tls_buf {
    char *data;
    uint32_t off, len, cap;
};

enum tls_conn_flags {
    TLS_CF_SERVER = 1u << 0,
    TLS_CF_DONE = 1u << 1,     /* handshake complete */
    TLS_CF_FAILED = 1u << 2,   /* c->rc says how; every later call returns it */
    TLS_CF_CLOSED = 1u << 3,   /* close_notify received */
    TLS_CF_SHUTDOWN = 1u << 4, /* close_notify queued */
    TLS_CF_OOM = 1u << 5,      /* the BIO could not grow a buffer */
    TLS_CF_SNI = 1u << 6,      /* client: name was sent as SNI */
    TLS_CF_REC = 1u << 7,      /* TLS 1.3 server after the handshake: tlsrec, no SSL */
    TLS_CF_ALPN = 1u << 8,     /* (REC) http/1.1 was negotiated */
    TLS_CF_RESUMED = 1u << 9,  /* (REC) the handshake resumed a session */
    TLS_CF_KU_OWED = 1u << 10, /* (REC) the peer asked for a KeyUpdate not yet sealed */
};

/* What a TLS 1.3 server handshake learns for the hand-over to tlsrec: the
 * application traffic secrets (from the key log callback), and how many
 * records OpenSSL sealed under the server's one (its session tickets),
 * counted by walking record headers in what it writes. */
struct tls_hs13 {
    uint8_t client_secret[TLSREC_MAX_SECRET];
    uint8_t server_secret[TLSREC_MAX_SECRET];
    uint8_t client_len, server_len;
    uint8_t hdr_len; /* bytes of the current record header seen */
    uint8_t hdr[TLSREC_HEADER];
    uint32_t body_left; /* bytes of the current record body still to come */
    uint64_t records;   /* written since the server secret took over */
};

struct tls_conn {
    SSL *ssl;            /* NULL once tlsrec took over (TLS_CF_REC) */
    struct tls_ctx *ctx; /* referenced until tls_conn_free */
    struct tls_buf in;   /* from the peer, for OpenSSL (or tlsrec) to read */
    struct tls_buf out;  /* from OpenSSL (or tlsrec), for the caller to send */
    char *name;          /* client: destination (SNI, host check, session key);
                          * REC server: the SNI received */
    char *err;           /* tls_error(); NULL until something failed */
    struct tls_hs13 *hs; /* TLS 1.3 server handshake: secrets for tlsrec */
    struct tlsrec *rec;  /* REC: the record layer */
    char *peer_id;       /* REC: tls_peer_identity() kept from the handshake */
    uint32_t rec_size;   /* REC: size of the opened record at in.off, */
    uint32_t plain_off;  /* ... where its unread plaintext starts (from in.off) */
    uint32_t plain_left; /* ... and how much of it is left */
    uint32_t ku_unsent;  /* REC: bytes of out up to the end of our last KeyUpdate not taken */
    int rc;              /* the code a failed connection keeps returning */
    uint16_t flags;      /* TLS_CF_* */
    uint8_t failure;     /* enum tls_failure */
    uint8_t n_first;     /* bytes in first */
    char first[8];       /* the peer's first bytes: plain HTTP shows there */
    uint8_t rec_error;   /* enum tls_record_error: why it failed after the handshake */
    uint8_t hs_len;      /* REC: bytes of a handshake message split over records ... */
    uint8_t hs_msg[5];   /* ... so far (a KeyUpdate is 5 bytes, the only one allowed) */
    uint8_t empty_run;   /* REC: records without content in a row */
    uint8_t alert_run;   /* REC: warning alerts in a row */
};

static bool first_bytes_are_http(const struct tls_conn *c);

/* clang-format off */
static const char *const failure_names[TLS_FAIL__N] = {
    [TLS_FAIL_NONE] = "none",
    [TLS_FAIL_PLAIN_HTTP] = "plain_http",
    [TLS_FAIL_NOT_TLS] = "not_tls",
    [TLS_FAIL_VERSION] = "version",
    [TLS_FAIL_CIPHER] = "cipher",
    [TLS_FAIL_SNI] = "sni",
    [TLS_FAIL_ALPN] = "alpn",
    [TLS_FAIL_NO_CERT] = "no_cert",
    [TLS_FAIL_VERIFY] = "verify",
    [TLS_FAIL_PEER_ALERT] = "peer_alert",
    [TLS_FAIL_CLOSED] = "closed",
    [TLS_FAIL_PROTOCOL] = "protocol",
    [TLS_FAIL_INTERNAL] = "internal",
};

static const char *const record_error_names[TLS_REC__N] = {
    [TLS_REC_NONE] = "none",
    [TLS_REC_BAD_RECORD_MAC] = "bad_record_mac",
    [TLS_REC_RECORD_OVERFLOW] = "record_overflow",
    [TLS_REC_UNEXPECTED_MESSAGE] = "unexpected_message",
    [TLS_REC_DECODE_ERROR] = "decode_error",
    [TLS_REC_ILLEGAL_PARAMETER] = "illegal_parameter",
    [TLS_REC_EMPTY_RECORDS] = "empty_records",
    [TLS_REC_WARNING_ALERTS] = "warning_alerts",
    [TLS_REC_PEER_ALERT] = "peer_alert",
    [TLS_REC_PROTOCOL] = "protocol",
    [TLS_REC_INTERNAL] = "internal",
};
/* clang-format on */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The reason OpenSSL gave for the oldest error in the queue, for messages
 * about local files; empties the queue. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    return r ? r : "unknown OpenSSL error";
}

/* ---- the BIO ------------------------------------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* Makes room for n more bytes in b, up to max in all. */
static bool buf_reserve(struct tls_buf *b, size_t n, size_t max)
{
    size_t want, cap;
    char *p;

    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if ((size_t)b->len + n <= b->cap)
        return true;
    if (b->off > 0) { /* slide the unread bytes down first */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if ((size_t)b->len + n <= b->cap)
            return true;
    }
    want = (size_t)b->len + n;
    if (want > max)
        return false;
    cap = b->cap ? b->cap : 4096;
    while (cap < want)
        cap *= 2;
    if (cap > max)
        cap = max;
    p = OPENSSL_realloc(b->data, cap);
    if (p == NULL)
        return false;
    b->data = p;
    b->cap = (uint32_t)cap;
    return true;
}

/* Frees b's memory once everything in it was consumed: idle connections keep
 * no buffers. */
static void buf_trim(struct tls_buf *b)
{
    if (b->off == b->len && b->data != NULL) {
        OPENSSL_free(b->data);
        b->data = NULL;
        b->off = b->len = b->cap = 0;
    }
}

static void buf_release(struct tls_buf *b)
{
    OPENSSL_free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

/* Counts the records in bytes OpenSSL writes once the server's application
 * traffic secret is in use: tlsrec's write sequence number continues from
 * there. */
static void hs13_count(struct tls_hs13 *hs, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (hs->body_left > 0) {
            size_t k = n < hs->body_left ? n : hs->body_left;

            hs->body_left -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        hs->hdr[hs->hdr_len++] = *p++;
        n--;
        if (hs->hdr_len == TLSREC_HEADER) {
            hs->records++;
            hs->body_left = (uint32_t)hs->hdr[3] << 8 | hs->hdr[4];
            hs->hdr_len = 0;
        }
    }
}

static int bio_write(BIO *bio, const char *data, int len)
{
    struct tls_conn *c = BIO_get_data(bio);

    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    /* Not capped here: OpenSSL cannot take a record back. tls_write keeps
     * the total near TLS_OUT_MAX by taking less plaintext. */
    if (!buf_reserve(&c->out, (size_t)len, UINT32_MAX / 2)) {
        c->flags |= TLS_CF_OOM;
        return -1;
    }
    memcpy(c->out.data + c->out.len, data, (size_t)len);
    c->out.len += (uint32_t)len;
    if (c->hs != NULL && c->hs->server_len > 0)
        hs13_count(c->hs, (const uint8_t *)data, (size_t)len);
    return len;
}

static int bio_read(BIO *bio, char *data, int len)
{
    struct tls_conn *c = BIO_get_data(bio);
    size_t n = c->in.len - c->in.off;

    BIO_clear_retry_flags(bio);
    if (n == 0) {
        BIO_set_retry_read(bio); /* not EOF: the caller will feed more */
        return -1;
    }
    if (len <= 0)
        return 0;
    if (n > (size_t)len)
        n = (size_t)len;
    memcpy(data, c->in.data + c->in.off, n);
    c->in.off += (uint32_t)n;
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    return (int)n;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    struct tls_conn *c = BIO_get_data(bio);

    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return c ? (long)(c->in.len - c->in.off) : 0;
    case BIO_CTRL_WPENDING:
        return c ? (long)(c->out.len - c->out.off) : 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static int bio_destroy(BIO *bio)
{
    BIO_set_data(bio, NULL);
    return 1;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fnproxy tls");

    if (m == NULL)
        return;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
        !BIO_meth_set_destroy(m, bio_destroy)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ---- certificates ------------------------------------------------------- */

/* PEM passphrase callback: never prompt on a terminal; note that a key
 * wanted one. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    *(bool *)u = true;
    return -1;
}

static BIO *open_pem(const char *path, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    BIO *b;

    if (f == NULL) {
        errf(err, errlen, "%s: cannot open %s: %s", path, what, strerror(errno));
        return NULL;
    }
    b = BIO_new_fp(f, BIO_CLOSE);
    if (b == NULL) {
        fclose(f);
        errf(err, errlen, "%s: out of memory", path);
    }
    return b;
}

static bool cert_add_name(struct tls_cert *cert, const unsigned char *s, int len)
{
    char **names, *n;
    int i;

    if (len <= 0 || len > 253 || memchr(s, '\0', (size_t)len) != NULL)
        return true; /* not a usable host name: skip it */
    names = OPENSSL_realloc(cert->names, (cert->n_names + 1) * sizeof(*names));
    if (names == NULL)
        return false;
    cert->names = names;
    n = OPENSSL_strndup((const char *)s, (size_t)len);
    if (n == NULL)
        return false;
    for (i = 0; i < len; i++)
        n[i] = (char)tolower((unsigned char)n[i]);
    if (len > 1 && n[len - 1] == '.')
        n[len - 1] = '\0';
    cert->names[cert->n_names++] = n;
    return true;
}

/* The names a client may ask for by SNI: the SAN DNS names, or the subject CN
 * when there are none (as browsers did before SANs were required). */
static bool cert_collect_names(struct tls_cert *cert)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert->x509, NID_subject_alt_name, NULL, NULL);
    X509_NAME *subj;
    bool ok = true;
    int i;

    for (i = 0; ok && gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

        if (g->type == GEN_DNS)
            ok = cert_add_name(cert, ASN1_STRING_get0_data(g->d.dNSName),
                               ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(gens);
    if (!ok || cert->n_names > 0)
        return ok;
    subj = X509_get_subject_name(cert->x509);
    i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        unsigned char *cn = NULL;
        int len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));

        if (len > 0)
            ok = cert_add_name(cert, cn, len);
        OPENSSL_free(cn);
    }
    return ok;
}

static void cert_release(struct tls_cert *cert)
{
    size_t i;

    X509_free(cert->x509);
    EVP_PKEY_free(cert->pkey);
    sk_X509_pop_free(cert->chain, X509_free);
    for (i = 0; i < cert->n_names; i++)
        OPENSSL_free(cert->names[i]);
    OPENSSL_free(cert->names);
    memset(cert, 0, sizeof(*cert));
}

/* Loads a certificate (with its chain) and its key, and checks that they
 * belong together. */
static int cert_load(struct tls_cert *cert, const char *cert_file, const char *key_file, char *err,
                     size_t errlen)
{
    bool wanted_pass = false;
    X509 *x;
    BIO *b;

    memset(cert, 0, sizeof(*cert));
    if (cert_file == NULL || key_file == NULL) {
        errf(err, errlen, "a certificate needs both a cert and a key file");
        return -EINVAL;
    }
    b = open_pem(cert_file, "certificate", err, errlen);
    if (b == NULL)
        return -EINVAL;
    cert->x509 = PEM_read_bio_X509(b, NULL, no_passphrase, &wanted_pass);
    if (cert->x509 == NULL) {
        BIO_free(b);
        ERR_clear_error();
        errf(err, errlen, "%s: no PEM certificate in the file", cert_file);
        return -EINVAL;
    }
    cert->chain = sk_X509_new_null();
    if (cert->chain == NULL)
        goto out_nomem;
    while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, &wanted_pass)) != NULL) {
        if (!sk_X509_push(cert->chain, x)) {
            X509_free(x);
            goto out_nomem;
        }
    }
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    BIO_free(b);

    b = open_pem(key_file, "key", err, errlen);
    if (b == NULL)
        goto out_release;
    cert->pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, &wanted_pass);
    BIO_free(b);
    b = NULL;
    if (cert->pkey == NULL) {
        if (wanted_pass)
            errf(err, errlen, "%s: the key is passphrase-protected, which is not supported",
                 key_file);
        else
            errf(err, errlen, "%s: no PEM private key in the file (%s)", key_file, ssl_reason());
        ERR_clear_error();
        goto out_release;
    }
    if (!X509_check_private_key(cert->x509, cert->pkey)) {
        ERR_clear_error();
        errf(err, errlen, "%s: key does not match certificate %s", key_file, cert_file);
        goto out_release;
    }
    if (!cert_collect_names(cert))
        goto out_nomem;
    return 0;

out_nomem:
    errf(err, errlen, "%s: out of memory", cert_file);
    BIO_free(b); /* NULL once the files are read */
out_release:
    cert_release(cert);
    return -EINVAL;
}

/* Index of the certificate for an SNI name, or -1: an exact name on any
 * certificate beats a wildcard, and earlier certificates win ties. A
 * wildcard "*.fn.test" stands for exactly one label: "a.fn.test", not
 * "fn.test" nor "a.b.fn.test" (RFC 6125 6.4.3). */
static int cert_for_name(const struct tls_ctx *ctx, const char *sni)
{
    char name[256];
    const char *dot;
    size_t i, j, len = strlen(sni);

    if (len == 0 || len >= sizeof(name))
        return -1;
    for (i = 0; i < len; i++)
        name[i] = (char)tolower((unsigned char)sni[i]);
    name[len] = '\0';
    if (len > 1 && name[len - 1] == '.')
        name[len - 1] = '\0';
    for (i = 0; i < ctx->n_certs; i++)
        for (j = 0; j < ctx->certs[i].n_names; j++)
            if (strcmp(ctx->certs[i].names[j], name) == 0)
                return (int)i;
    dot = strchr(name, '.');
    if (dot == NULL || dot == name || dot[1] == '\0')
        return -1;
    for (i = 0; i < ctx->n_certs; i++)
        for (j = 0; j < ctx->certs[i].n_names; j++) {
            const char *n = ctx->certs[i].names[j];

            if (n[0] == '*' && n[1] == '.' && strcmp(n + 1, dot) == 0)
                return (int)i;
        }
    return -1;
}

/* ---- connection failures ------------------------------------------------ */

/* Records the first failure of c; later ones are consequences. */
static int tc_fail(struct tls_conn *c, enum tls_failure f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int tc_fail(struct tls_conn *c, enum tls_failure f, int rc, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    c->flags |= TLS_CF_FAILED;
    c->rc = rc;
    c->failure = (uint8_t)f;
    /* After the handshake a failure is a record error; callers that know
     * which one set it before calling. */
    if ((c->flags & TLS_CF_DONE) && c->rec_error == TLS_REC_NONE)
        c->rec_error = f == TLS_FAIL_PEER_ALERT ? TLS_REC_PEER_ALERT
                       : f == TLS_FAIL_INTERNAL ? TLS_REC_INTERNAL
                                                : TLS_REC_PROTOCOL;
    if (c->err == NULL) { /* a callback may have said it already */
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        c->err = OPENSSL_strdup(msg);
    }
    return rc;
}

/* Notes a failure a callback decided, before OpenSSL reports it as a mere
 * "callback failed". */
static void tc_note(struct tls_conn *c, enum tls_failure f, const char *msg)
{
    if (c->err != NULL)
        return;
    c->failure = (uint8_t)f;
    c->err = OPENSSL_strdup(msg);
}

/* Forgets the cached session of a client whose handshake failed: it may be
 * what the server objected to. */
static void session_forget(struct tls_ctx *ctx, const char *name);

/* What an OpenSSL record-layer error after the handshake counts as. */
static enum tls_record_error record_error_of(int reason)
{
    switch (reason) {
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
        return TLS_REC_BAD_RECORD_MAC;
    case SSL_R_DATA_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
        return TLS_REC_RECORD_OVERFLOW;
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_NOT_ON_RECORD_BOUNDARY:
    case SSL_R_TOO_MANY_KEY_UPDATES:
        return TLS_REC_UNEXPECTED_MESSAGE;
    case SSL_R_BAD_LENGTH:
    case SSL_R_LENGTH_MISMATCH:
        return TLS_REC_DECODE_ERROR;
    case SSL_R_INVALID_KEY_UPDATE_TYPE:
    case SSL_R_BAD_KEY_UPDATE:
        return TLS_REC_ILLEGAL_PARAMETER;
    case SSL_R_RECORD_TOO_SMALL:
        return TLS_REC_EMPTY_RECORDS;
    case SSL_R_TOO_MANY_WARN_ALERTS:
        return TLS_REC_WARNING_ALERTS;
    default:
        return TLS_REC_PROTOCOL;
    }
}

/* Turns OpenSSL's verdict on a failed call into a failure with a reason.
 * During the handshake the oldest error says why; after it, OpenSSL 3.0
 * queues the cipher's own failure ("cipher operation failed") before the
 * record layer's verdict (bad record mac), so the newest one says why. */
static int tc_fail_ssl(struct tls_conn *c, int ssl_err)
{
    unsigned long e = (c->flags & TLS_CF_DONE) ? ERR_peek_last_error() : ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    bool ssl_lib = e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL;
    enum tls_failure f = TLS_FAIL_PROTOCOL;
    const char *what = e ? ERR_reason_error_string(e) : NULL;
    char msg[200];
    long v;

    if (what == NULL)
        what = "TLS protocol error";
    if (!(c->flags & TLS_CF_SERVER) && !(c->flags & TLS_CF_DONE) && c->name != NULL)
        session_forget(c->ctx, c->name);
    if (c->failure != TLS_FAIL_NONE) { /* decided by our callback */
        ERR_clear_error();
        return tc_fail(c, (enum tls_failure)c->failure, TLS_E_PROTO, "%s", "");
    }
    if (c->flags & TLS_CF_OOM) {
        ERR_clear_error();
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_NOMEM, "out of memory");
    }
    if (e == 0) {
        ERR_clear_error();
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_PROTO, "TLS failure (SSL error %d)", ssl_err);
    }
    snprintf(msg, sizeof(msg), "%s", what);
    if (ssl_lib && reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        int alert = reason - SSL_AD_REASON_OFFSET;

        f = alert == SSL_AD_PROTOCOL_VERSION ? TLS_FAIL_VERSION : TLS_FAIL_PEER_ALERT;
        snprintf(msg, sizeof(msg), "peer sent alert: %s", SSL_alert_desc_string_long(alert));
    } else if (ssl_lib && (c->flags & TLS_CF_DONE)) {
        c->rec_error = record_error_of(reason);
    } else if (ssl_lib) {
        switch (reason) {
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            f = TLS_FAIL_VERIFY;
            v = SSL_get_verify_result(c->ssl);
            if ((v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
                c->name != NULL)
                snprintf(msg, sizeof(msg), "certificate verify failed: %s (wanted %s)",
                         X509_verify_cert_error_string(v), c->name);
            else
                snprintf(msg, sizeof(msg), "certificate verify failed: %s",
                         X509_verify_cert_error_string(v));
            break;
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            f = TLS_FAIL_NO_CERT;
            snprintf(msg, sizeof(msg), "client certificate required, none was sent");
            break;
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
            f = TLS_FAIL_PLAIN_HTTP;
            snprintf(msg, sizeof(msg), "plain HTTP request on a TLS port");
            break;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
        case SSL_R_BAD_PACKET_LENGTH:
            /* During the handshake: a peer that does not speak TLS at
             * all. Afterwards: a broken peer, a protocol error. */
            if (!(c->flags & TLS_CF_DONE) && first_bytes_are_http(c)) {
                f = TLS_FAIL_PLAIN_HTTP;
                snprintf(msg, sizeof(msg), "plain HTTP request on a TLS port");
            } else if (!(c->flags & TLS_CF_DONE)) {
                f = TLS_FAIL_NOT_TLS;
                snprintf(msg, sizeof(msg), "%s (not a TLS peer?)", what);
            }
            break;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
        case SSL_R_VERSION_TOO_LOW:
            f = TLS_FAIL_VERSION;
            snprintf(msg, sizeof(msg), "no TLS version in common (%s)", what);
            break;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SUITABLE_KEY_SHARE:
            f = TLS_FAIL_CIPHER;
            break;
        case SSL_R_NO_APPLICATION_PROTOCOL:
            f = TLS_FAIL_ALPN;
            break;
        default:
            break;
        }
    }
    ERR_clear_error();
    return tc_fail(c, f, TLS_E_PROTO, "%s", msg);
}

/* The result of an SSL_* I/O call that returned ok (<= 0 on failure). */
static int tc_settle(struct tls_conn *c, int ok)
{
    int e = SSL_get_error(c->ssl, ok);

    switch (e) {
    case SSL_ERROR_NONE:
        return 0;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return TLS_E_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        c->flags |= TLS_CF_CLOSED;
        if (!(c->flags & TLS_CF_DONE))
            return tc_fail(c, TLS_FAIL_CLOSED, TLS_E_CLOSED,
                           "peer closed the connection during the handshake");
        return TLS_E_CLOSED;
    default:
        return tc_fail_ssl(c, e);
    }
}

/* ---- server callbacks --------------------------------------------------- */

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_ctx *ctx = arg;
    struct tls_conn *c = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_cert *cert;
    int i;

    if (name == NULL) /* no SNI (an IP-literal URL, say): the default */
        return SSL_TLSEXT_ERR_NOACK;
    i = cert_for_name(ctx, name);
    if (i < 0 && ctx->sni_strict) {
        tc_note(c, TLS_FAIL_SNI, "unknown server name");
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (i < 0) /* not ours: the default, without acknowledging the name */
        return SSL_TLSEXT_ERR_NOACK;
    if (i > 0) {
        cert = &ctx->certs[i];
        if (!SSL_use_cert_and_key(ssl, cert->x509, cert->pkey, cert->chain, 1)) {
            tc_note(c, TLS_FAIL_INTERNAL, "could not use the certificate chosen by SNI");
            *alert = SSL_AD_INTERNAL_ERROR;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* RFC 7301 3.2: a client that offers protocols, none of which we speak, gets
 * a fatal no_application_protocol alert rather than a connection where each
 * side believes something different. A client that offers no ALPN at all is
 * served (this callback is not even called). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    unsigned char *sel = NULL;

    if (SSL_select_next_proto(&sel, outlen, alpn_wire, ALPN_WIRE_LEN, in, inlen) ==
            OPENSSL_NPN_NEGOTIATED &&
        sel != NULL) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    tc_note(c, TLS_FAIL_ALPN,
            "no application protocol in common (the client does not offer "
            "http/1.1)");
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Decodes the hex secret ending a key log line; its length, 0 if malformed. */
static size_t keylog_secret(const char *line, uint8_t *out)
{
    const char *hex = strrchr(line, ' ');
    size_t n = 0;

    if (hex == NULL)
        return 0;
    for (hex++; isxdigit((unsigned char)hex[0]) && isxdigit((unsigned char)hex[1]); hex += 2) {
        if (n == TLSREC_MAX_SECRET)
            return 0;
        out[n++] = (uint8_t)OPENSSL_hexchar2int((unsigned char)hex[0]) << 4 |
                   (uint8_t)OPENSSL_hexchar2int((unsigned char)hex[1]);
    }
    return hex[0] == '\0' ? n : 0;
}

/* OpenSSL 3.0 has no call that returns the TLS 1.3 traffic secrets; the key
 * log callback (NSS key log format) is the one place it hands them out. Only
 * the two application secrets are kept, for tlsrec. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ", server[] = "SERVER_TRAFFIC_SECRET_0 ";
    struct tls_conn *c = SSL_get_app_data(ssl);
    bool is_client = strncmp(line, client, sizeof(client) - 1) == 0;

    if (c == NULL || (!is_client && strncmp(line, server, sizeof(server) - 1) != 0))
        return;
    if (c->hs == NULL) {
        c->hs = OPENSSL_zalloc(sizeof(*c->hs));
        if (c->hs == NULL)
            return; /* no hand-over: OpenSSL keeps the connection */
    }
    if (is_client)
        c->hs->client_len = (uint8_t)keylog_secret(line, c->hs->client_secret);
    else
        c->hs->server_len = (uint8_t)keylog_secret(line, c->hs->server_secret);
}

/* Starts a new ticket key; the oldest beyond TLS_TICKET_KEYS is erased.
 * Called with ctx->lock held. */
static void ticket_keys_rotate(struct tls_ctx *ctx, uint64_t now)
{
    struct tls_ticket_key k;

    if (RAND_bytes(k.name, sizeof(k.name)) <= 0 || RAND_bytes(k.aes, sizeof(k.aes)) <= 0 ||
        RAND_bytes(k.hmac, sizeof(k.hmac)) <= 0) {
        ERR_clear_error();
        OPENSSL_cleanse(&k, sizeof(k));
        return; /* keep the current key; try again at the next ticket */
    }
    OPENSSL_cleanse(&ctx->keys[TLS_TICKET_KEYS - 1], sizeof(ctx->keys[0]));
    memmove(&ctx->keys[1], &ctx->keys[0], (TLS_TICKET_KEYS - 1) * sizeof(ctx->keys[0]));
    ctx->keys[0] = k;
    OPENSSL_cleanse(&k, sizeof(k));
    if (ctx->n_keys < TLS_TICKET_KEYS)
        ctx->n_keys++;
    ctx->rotated_ms = now;
}

/* Seals (enc = 1) or opens a session ticket. OpenSSL's built-in ticket keys
 * are made once per SSL_CTX and never change, which would make one key
 * decrypt every session of a long-lived process; here a new key starts every
 * TLS_TICKET_ROTATE_S, older ones still open tickets (and such tickets are
 * renewed: return 2) until they drop off the ring. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct tls_ticket_key k;
    OSSL_PARAM params[3];
    uint64_t now = now_ms();
    int ret = 1;
    unsigned i;

    pthread_mutex_lock(&ctx->lock);
    if (ctx->n_keys == 0 || now - ctx->rotated_ms >= (uint64_t)TLS_TICKET_ROTATE_S * 1000)
        ticket_keys_rotate(ctx, now);
    if (ctx->n_keys == 0) {
        pthread_mutex_unlock(&ctx->lock);
        return -1;
    }
    if (enc) {
        k = ctx->keys[0];
    } else {
        for (i = 0; i < ctx->n_keys; i++)
            if (CRYPTO_memcmp(ctx->keys[i].name, key_name, sizeof(k.name)) == 0)
                break;
        if (i == ctx->n_keys) { /* expired or foreign: a full handshake */
            pthread_mutex_unlock(&ctx->lock);
            return 0;
        }
        k = ctx->keys[i];
        /* 2 renews the ticket: when it was sealed with an older key, and
         * always in TLS 1.3, whose clients (OpenSSL's among them) use a
         * ticket once (RFC 8446 C.4), so a resumed connection must leave a
         * new one behind or the next connection is a full handshake. */
        ret = (i == 0 && SSL_version(ssl) != TLS1_3_VERSION) ? 1 : 2;
    }
    pthread_mutex_unlock(&ctx->lock);

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(key_name, k.name, sizeof(k.name));
        if (RAND_bytes(iv, 16) <= 0 ||
            !EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) ||
            !EVP_MAC_CTX_set_params(hctx, params))
            ret = -1;
    } else {
        if (!EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) ||
            !EVP_MAC_CTX_set_params(hctx, params))
            ret = -1;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    return ret;
}

void tls_ctx_rotate_ticket_keys(struct tls_ctx *ctx)
{
    if (!ctx->server)
        return;
    pthread_mutex_lock(&ctx->lock);
    ticket_keys_rotate(ctx, now_ms());
    pthread_mutex_unlock(&ctx->lock);
}

/* ---- client session cache ----------------------------------------------- */

static void session_forget(struct tls_ctx *ctx, const char *name)
{
    size_t i;

    pthread_mutex_lock(&ctx->lock);
    for (i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        struct tls_cached_session *s = &ctx->sessions[i];

        if (s->name != NULL && strcmp(s->name, name) == 0) {
            SSL_SESSION_free(s->sess);
            OPENSSL_free(s->name);
            memset(s, 0, sizeof(*s));
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* OpenSSL hands over a session it can resume (after the handshake in TLS 1.2,
 * with each NewSessionTicket in TLS 1.3): keep it as the one for this name.
 * Returning 1 keeps OpenSSL's reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    struct tls_ctx *ctx = c->ctx;
    struct tls_cached_session *slot = NULL;
    char *name = NULL;
    size_t i;

    if (c->name == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    pthread_mutex_lock(&ctx->lock);
    for (i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        struct tls_cached_session *s = &ctx->sessions[i];

        if (s->name != NULL && strcmp(s->name, c->name) == 0) {
            slot = s;
            break;
        }
        if (slot == NULL || s->name == NULL || (slot->name != NULL && s->used < slot->used))
            slot = s;
    }
    if (slot->name == NULL || strcmp(slot->name, c->name) != 0) {
        name = OPENSSL_strdup(c->name);
        if (name == NULL) {
            pthread_mutex_unlock(&ctx->lock);
            return 0;
        }
        OPENSSL_free(slot->name);
        slot->name = name;
    }
    SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    slot->used = ++ctx->clock;
    pthread_mutex_unlock(&ctx->lock);
    return 1;
}

/* Offers the cached session for c's destination, if it is still fresh. */
static void session_offer(struct tls_conn *c)
{
    struct tls_ctx *ctx = c->ctx;
    time_t now = time(NULL);
    size_t i;

    pthread_mutex_lock(&ctx->lock);
    for (i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        struct tls_cached_session *s = &ctx->sessions[i];

        if (s->name == NULL || strcmp(s->name, c->name) != 0)
            continue;
        if ((time_t)(SSL_SESSION_get_time(s->sess) + SSL_SESSION_get_timeout(s->sess)) <= now) {
            SSL_SESSION_free(s->sess);
            OPENSSL_free(s->name);
            memset(s, 0, sizeof(*s));
        } else if (SSL_set_session(c->ssl, s->sess)) {
            s->used = ++ctx->clock;
        }
        break;
    }
    pthread_mutex_unlock(&ctx->lock);
    ERR_clear_error();
}

/* ---- contexts ----------------------------------------------------------- */

static int tls_version_const(int v)
{
    return v == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

static struct tls_ctx *ctx_alloc(bool server, char *err, size_t errlen)
{
    struct tls_ctx *ctx;

    pthread_once(&bio_once, bio_method_init);
    if (bio_method == NULL) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    ctx = OPENSSL_zalloc(sizeof(*ctx));
    if (ctx == NULL) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->refs = 1;
    ctx->server = server;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx->ssl_ctx == NULL) {
        errf(err, errlen, "cannot make an SSL_CTX: %s", ssl_reason());
        pthread_mutex_destroy(&ctx->lock);
        OPENSSL_free(ctx);
        return NULL;
    }
    SSL_CTX_set_app_data(ctx->ssl_ctx, ctx);
    return ctx;
}

static void ctx_free(struct tls_ctx *ctx)
{
    size_t i;

    SSL_CTX_free(ctx->ssl_ctx);
    for (i = 0; i < ctx->n_certs; i++)
        cert_release(&ctx->certs[i]);
    OPENSSL_free(ctx->certs);
    for (i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        SSL_SESSION_free(ctx->sessions[i].sess);
        OPENSSL_free(ctx->sessions[i].name);
    }
    OPENSSL_cleanse(ctx->keys, sizeof(ctx->keys));
    pthread_mutex_destroy(&ctx->lock);
    OPENSSL_free(ctx);
}

/* What both ends share: versions, suites, groups, no renegotiation or
 * compression, and buffers released while idle. */
static int ctx_common(struct tls_ctx *ctx, int min_version, int max_version, char *err,
                      size_t errlen)
{
    SSL_CTX *s = ctx->ssl_ctx;

    if ((min_version != 0 && min_version != 12 && min_version != 13) ||
        (max_version != 0 && max_version != 12 && max_version != 13)) {
        errf(err, errlen, "TLS versions must be 12 or 13 (TLS 1.2, TLS 1.3)");
        return -EINVAL;
    }
    if (min_version == 0)
        min_version = 12;
    if (max_version == 0)
        max_version = 13;
    if (max_version < min_version) {
        errf(err, errlen, "the highest TLS version is below the lowest");
        return -EINVAL;
    }
    if (!SSL_CTX_set_min_proto_version(s, tls_version_const(min_version)) ||
        !SSL_CTX_set_max_proto_version(s, tls_version_const(max_version)) ||
        !SSL_CTX_set_cipher_list(s, tls12_ciphers) || !SSL_CTX_set_ciphersuites(s, tls13_suites) ||
        !SSL_CTX_set1_groups_list(s, tls_groups)) {
        errf(err, errlen, "cannot configure TLS versions and ciphers: %s", ssl_reason());
        return -EINVAL;
    }
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    SSL_CTX_clear_options(s, SSL_OP_LEGACY_SERVER_CONNECT | SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

struct tls_ctx *tls_server_ctx_new(const struct tls_server_opts *opts, char *err, size_t errlen)
{
    struct tls_ctx *ctx;
    struct stack_st_X509_NAME *ca_names; /* STACK_OF(X509_NAME) */
    BIO *probe;
    size_t i;

    if (opts->n_certificates == 0 || opts->certificates == NULL) {
        errf(err, errlen, "a TLS listener needs at least one certificate");
        return NULL;
    }
    ERR_clear_error();
    ctx = ctx_alloc(true, err, errlen);
    if (ctx == NULL)
        return NULL;
    ctx->sni_strict = opts->sni_strict;
    ctx->handshake_timeout_ms = opts->handshake_timeout_ms;
    if (ctx_common(ctx, opts->min_version, 13, err, errlen) != 0)
        goto out_free_ctx;

    ctx->certs = OPENSSL_zalloc(opts->n_certificates * sizeof(*ctx->certs));
    if (ctx->certs == NULL) {
        errf(err, errlen, "out of memory");
        goto out_free_ctx;
    }
    for (i = 0; i < opts->n_certificates; i++) {
        if (cert_load(&ctx->certs[i], opts->certificates[i].cert_file,
                      opts->certificates[i].key_file, err, errlen) != 0)
            goto out_free_ctx;
        ctx->n_certs++;
    }
    /* The default certificate lives on the SSL_CTX; the servername callback
     * swaps in another one per connection. */
    if (!SSL_CTX_use_cert_and_key(ctx->ssl_ctx, ctx->certs[0].x509, ctx->certs[0].pkey,
                                  ctx->certs[0].chain, 1)) {
        errf(err, errlen, "%s: cannot use this certificate: %s", opts->certificates[0].cert_file,
             ssl_reason());
        goto out_free_ctx;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx->ssl_ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx->ssl_ctx, ctx);
    SSL_CTX_set_alpn_select_cb(ctx->ssl_ctx, alpn_select_cb, ctx);
    SSL_CTX_set_keylog_callback(ctx->ssl_ctx, keylog_cb);

    if (opts->client_ca != NULL) {
        probe = open_pem(opts->client_ca, "client CA", err, errlen);
        if (probe == NULL)
            goto out_free_ctx;
        BIO_free(probe);
        /* Tell clients which CAs we accept, so that one holding several
         * certificates picks the right one. */
        ca_names = SSL_load_client_CA_file(opts->client_ca);
        if (ca_names == NULL) {
            ERR_clear_error();
            errf(err, errlen, "%s: no CA certificate in the file", opts->client_ca);
            goto out_free_ctx;
        }
        SSL_CTX_set_client_CA_list(ctx->ssl_ctx, ca_names);
        if (!SSL_CTX_load_verify_locations(ctx->ssl_ctx, opts->client_ca, NULL)) {
            errf(err, errlen, "%s: cannot load the client CA: %s", opts->client_ca, ssl_reason());
            goto out_free_ctx;
        }
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }

    /* Resumption: stateless tickets (TLS 1.2 and 1.3) sealed by
     * ticket_key_cb, one per connection since a client keeps only the last,
     * and the stateful cache for TLS 1.2 clients that take no tickets. The
     * session id context is required for resumption with client
     * certificates; tickets never cross contexts because each context has
     * its own keys. */
    SSL_CTX_set_session_id_context(ctx->ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx->ssl_ctx, TLS_SERVER_SESSIONS);
    SSL_CTX_set_timeout(ctx->ssl_ctx, TLS_SESSION_LIFETIME_S);
    SSL_CTX_set_num_tickets(ctx->ssl_ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl_ctx, ticket_key_cb);
    pthread_mutex_lock(&ctx->lock);
    ticket_keys_rotate(ctx, now_ms());
    pthread_mutex_unlock(&ctx->lock);
    if (ctx->n_keys == 0) {
        errf(err, errlen, "cannot make session ticket keys: no randomness");
        goto out_free_ctx;
    }
    ERR_clear_error();
    return ctx;

out_free_ctx:
    ctx_free(ctx);
    ERR_clear_error();
    return NULL;
}

struct tls_ctx *tls_client_ctx_new(const struct tls_client_opts *opts, char *err, size_t errlen)
{
    struct tls_ctx *ctx;
    struct tls_cert cert;
    BIO *probe;

    ERR_clear_error();
    ctx = ctx_alloc(false, err, errlen);
    if (ctx == NULL)
        return NULL;
    if (ctx_common(ctx, opts->min_version, opts->max_version, err, errlen) != 0)
        goto out_free_ctx;
    if (opts->ca_file != NULL) {
        probe = open_pem(opts->ca_file, "CA", err, errlen);
        if (probe == NULL)
            goto out_free_ctx;
        BIO_free(probe);
        if (!SSL_CTX_load_verify_locations(ctx->ssl_ctx, opts->ca_file, NULL)) {
            errf(err, errlen, "%s: cannot load the CA: %s", opts->ca_file, ssl_reason());
            goto out_free_ctx;
        }
    } else if (!SSL_CTX_set_default_verify_paths(ctx->ssl_ctx)) {
        errf(err, errlen, "cannot load the system CA store: %s", ssl_reason());
        goto out_free_ctx;
    }
    SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
    if (opts->cert_file != NULL || opts->key_file != NULL) {
        if (cert_load(&cert, opts->cert_file, opts->key_file, err, errlen) != 0)
            goto out_free_ctx;
        if (!SSL_CTX_use_cert_and_key(ctx->ssl_ctx, cert.x509, cert.pkey, cert.chain, 1)) {
            errf(err, errlen, "%s: cannot use this certificate: %s", opts->cert_file, ssl_reason());
            cert_release(&cert);
            goto out_free_ctx;
        }
        cert_release(&cert); /* the SSL_CTX holds its own references */
    }
    if (SSL_CTX_set_alpn_protos(ctx->ssl_ctx, alpn_wire, ALPN_WIRE_LEN) != 0) {
        errf(err, errlen, "cannot set ALPN: %s", ssl_reason());
        goto out_free_ctx;
    }
    /* Sessions are kept by new_session_cb in our per-name table, not in
     * OpenSSL's cache, which is keyed by session id and not by destination. */
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, new_session_cb);
    ERR_clear_error();
    return ctx;

out_free_ctx:
    ctx_free(ctx);
    ERR_clear_error();
    return NULL;
}

struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx)
{
    __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
    return ctx;
}

void tls_ctx_unref(struct tls_ctx *ctx)
{
    if (ctx != NULL && __atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) == 0)
        ctx_free(ctx);
}

uint32_t tls_ctx_handshake_timeout_ms(const struct tls_ctx *ctx)
{
    return ctx->handshake_timeout_ms;
}

/* ---- TLS 1.3 server connections after the handshake: tlsrec ------------- */

/* Hands a TLS 1.3 server connection whose handshake just finished over to
 * tlsrec and frees its SSL, keeping what the accessors report. Anything
 * unexpected (no secrets, buffered plaintext, out of memory) leaves the
 * connection with OpenSSL, which is always correct, only heavier. */
static void rec_take_over(struct tls_conn *c)
{
    struct tls_hs13 *hs = c->hs;
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    char id[1024];
    int id_len;
    uint8_t mfl;

    c->hs = NULL;
    if (hs == NULL || SSL_version(c->ssl) != TLS1_3_VERSION || cipher == NULL ||
        hs->client_len == 0 || hs->client_len != hs->server_len || hs->hdr_len != 0 ||
        hs->body_left != 0 || SSL_has_pending(c->ssl))
        goto out;
    id_len = tls_peer_identity(c, id, sizeof(id));
    c->rec = OPENSSL_malloc(sizeof(*c->rec));
    c->name = sni != NULL ? OPENSSL_strdup(sni) : NULL;
    c->peer_id = id_len > 0 ? OPENSSL_strdup(id) : NULL;
    if (c->rec == NULL || (sni != NULL && c->name == NULL) || (id_len > 0 && c->peer_id == NULL) ||
        tlsrec_init(c->rec, (uint16_t)SSL_CIPHER_get_protocol_id(cipher), hs->client_secret,
                    hs->server_secret, hs->server_len, hs->records) != 0) {
        OPENSSL_free(c->rec);
        OPENSSL_free(c->name);
        OPENSSL_free(c->peer_id);
        c->rec = NULL;
        c->name = c->peer_id = NULL;
        goto out;
    }
    /* A client that asked for max_fragment_length (RFC 6066) gets records
     * of no more content than that; OpenSSL 3.0 negotiates no
     * record_size_limit (RFC 8449), so there is none to honour. */
    mfl = SSL_SESSION_get_max_fragment_length(SSL_get_session(c->ssl));
    if (mfl >= TLSEXT_max_fragment_length_512 && mfl <= TLSEXT_max_fragment_length_4096)
        c->rec->max_plain = (uint16_t)(512u << (mfl - TLSEXT_max_fragment_length_512));
    if (tls_alpn(c) != NULL)
        c->flags |= TLS_CF_ALPN;
    if (SSL_session_reused(c->ssl))
        c->flags |= TLS_CF_RESUMED;
    /* A connection freed without close_notify would lose its session. */
    SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->flags |= TLS_CF_REC;
out:
    OPENSSL_clear_free(hs, sizeof(*hs));
    ERR_clear_error();
}

/* Seals one record into c->out. */
static int rec_seal(struct tls_conn *c, uint8_t type, const void *data, size_t len)
{
    int n;

    if (!buf_reserve(&c->out, len + TLSREC_OVERHEAD, UINT32_MAX / 2))
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_NOMEM, "out of memory");
    n = tlsrec_seal(c->rec, type, data, len, (uint8_t *)c->out.data + c->out.len);
    if (n < 0)
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_PROTO, "cannot seal a TLS record");
    c->out.len += (uint32_t)n;
    return 0;
}

/* Fails c with reason e, the fatal alert queued for the caller to send. */
static int rec_fail_as(struct tls_conn *c, int alert, enum tls_record_error e, const char *why)
{
    const uint8_t a[2] = {2, (uint8_t)alert};

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    (void)rec_seal(c, TLSREC_ALERT, a, sizeof(a));
    c->rec_error = (uint8_t)e;
    return tc_fail(c, e == TLS_REC_INTERNAL ? TLS_FAIL_INTERNAL : TLS_FAIL_PROTOCOL, TLS_E_PROTO,
                   "%s", why);
}

/* Fails c for a protocol error of the peer's, the alert naming it. */
static int rec_fail(struct tls_conn *c, int alert)
{
    switch (alert) {
    case TLSREC_AD_BAD_RECORD_MAC:
        return rec_fail_as(c, alert, TLS_REC_BAD_RECORD_MAC, "bad record mac");
    case TLSREC_AD_RECORD_OVERFLOW:
        return rec_fail_as(c, alert, TLS_REC_RECORD_OVERFLOW, "record overflow");
    case TLSREC_AD_DECODE_ERROR:
        return rec_fail_as(c, alert, TLS_REC_DECODE_ERROR, "decode error");
    case TLSREC_AD_ILLEGAL_PARAMETER:
        return rec_fail_as(c, alert, TLS_REC_ILLEGAL_PARAMETER, "illegal parameter");
    case TLSREC_AD_INTERNAL_ERROR:
        return rec_fail_as(c, alert, TLS_REC_INTERNAL, "internal error");
    default:
        return rec_fail_as(c, TLSREC_AD_UNEXPECTED_MESSAGE, TLS_REC_UNEXPECTED_MESSAGE,
                           "unexpected message");
    }
}

/* Seals our KeyUpdate (update_not_requested) and moves to the next write
 * key: the answer to a peer's request, or our own rekey. */
static int rec_key_update(struct tls_conn *c)
{
    static const uint8_t key_update[5] = {24, 0, 0, 1, 0};
    int r = rec_seal(c, TLSREC_HANDSHAKE, key_update, sizeof(key_update));

    if (r < 0)
        return r;
    c->flags &= ~TLS_CF_KU_OWED;
    c->ku_unsent = (uint32_t)tls_pending(c);
    if (tlsrec_update(c->rec, &c->rec->wr) != 0) {
        c->rec_error = TLS_REC_INTERNAL;
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_PROTO, "cannot update the write key");
    }
    return 0;
}

/* A KeyUpdate the peer asked for is sealed when nothing waits to be sent;
 * otherwise it is owed, and sealed once the output is taken or before the
 * next application data (RFC 8446 §4.6.3), whichever is first. A request
 * that arrives while one of our KeyUpdates still waits unsent is answered
 * by it (§4.6.3: one update for many requests received while silent), and
 * requests that arrive while one is owed by the one owed: a peer that
 * floods requests and never reads makes at most one answer wait. */
static int rec_settle_owed(struct tls_conn *c)
{
    if (!(c->flags & TLS_CF_KU_OWED) || (c->flags & (TLS_CF_FAILED | TLS_CF_SHUTDOWN)) ||
        tls_pending(c) > 0)
        return 0;
    return rec_key_update(c);
}

/* Takes the handshake bytes of one record. A client may only send KeyUpdate
 * after the handshake (we ask for no certificate then); it may come split
 * over records, and since it changes the key it must end its record
 * (RFC 8446 §5.1). */
static int rec_handshake(struct tls_conn *c, const uint8_t *p, size_t len)
{
    if (len == 0) /* no zero-length handshake fragments (§5.1) */
        return rec_fail(c, TLSREC_AD_UNEXPECTED_MESSAGE);
    while (len > 0) {
        c->hs_msg[c->hs_len++] = *p++;
        len--;
        if (c->hs_len == 1 && c->hs_msg[0] != 24)
            return rec_fail(c, TLSREC_AD_UNEXPECTED_MESSAGE);
        if (c->hs_len == 4 && (c->hs_msg[1] != 0 || c->hs_msg[2] != 0 || c->hs_msg[3] != 1))
            return rec_fail(c, TLSREC_AD_DECODE_ERROR); /* a KeyUpdate body is one byte */
        if (c->hs_len < sizeof(c->hs_msg))
            continue;
        c->hs_len = 0;
        if (len > 0)
            return rec_fail(c, TLSREC_AD_UNEXPECTED_MESSAGE);
        if (c->hs_msg[4] > 1) /* neither update_not_requested nor update_requested */
            return rec_fail(c, TLSREC_AD_ILLEGAL_PARAMETER);
        if (tlsrec_update(c->rec, &c->rec->rd) != 0)
            return rec_fail(c, TLSREC_AD_INTERNAL_ERROR);
        if (c->hs_msg[4] == 1 && !(c->flags & TLS_CF_SHUTDOWN) && c->ku_unsent == 0) {
            c->flags |= TLS_CF_KU_OWED;
            return rec_settle_owed(c);
        }
    }
    return 0;
}

/* tls_read for REC: opens records in place in c->in and copies their
 * plaintext out. */
static int rec_read(struct tls_conn *c, char *plain, size_t cap)
{
    uint8_t *rec, type;
    size_t len;
    int r;

    for (;;) {
        if (c->plain_left > 0) {
            len = cap < c->plain_left ? cap : c->plain_left;
            memcpy(plain, c->in.data + c->in.off + c->plain_off, len);
            c->plain_off += (uint32_t)len;
            c->plain_left -= (uint32_t)len;
            if (c->plain_left == 0) {
                c->in.off += c->rec_size;
                buf_trim(&c->in);
            }
            return (int)len;
        }
        if (c->in.off == c->in.len) {
            buf_trim(&c->in); /* idle connections hold no buffer */
            return 0;
        }
        rec = (uint8_t *)c->in.data + c->in.off;
        r = tlsrec_open(c->rec, rec, c->in.len - c->in.off, &type, &len);
        if (r == 0)
            return 0; /* the rest of the record is still to come */
        if (r < 0)
            return rec_fail(c, -r);
        rec += TLSREC_HEADER;
        c->in.off += (uint32_t)r; /* application data moves it back below */
        /* A handshake message split over records may not be interleaved
         * with other records (§5.1). */
        if (type != TLSREC_HANDSHAKE && c->hs_len > 0)
            return rec_fail(c, TLSREC_AD_UNEXPECTED_MESSAGE);
        switch (type) {
        case TLSREC_APPDATA:
            if (len == 0) { /* allowed, and means nothing: but not without end */
                if (++c->empty_run > TLS_MAX_EMPTY_RECORDS)
                    return rec_fail_as(c, TLSREC_AD_UNEXPECTED_MESSAGE, TLS_REC_EMPTY_RECORDS,
                                       "too many empty records");
                break;
            }
            c->empty_run = c->alert_run = 0;
            c->in.off -= (uint32_t)r;
            c->rec_size = (uint32_t)r;
            c->plain_off = TLSREC_HEADER;
            c->plain_left = (uint32_t)len;
            break;
        case TLSREC_ALERT:
            if (len != 2)
                return rec_fail(c, TLSREC_AD_DECODE_ERROR);
            if (rec[1] == SSL_AD_CLOSE_NOTIFY) {
                c->flags |= TLS_CF_CLOSED;
                return TLS_E_CLOSED;
            }
            if (rec[1] == SSL_AD_USER_CANCELLED) { /* a close_notify should follow */
                if (++c->alert_run > TLS_MAX_WARNING_ALERTS)
                    return rec_fail_as(c, TLSREC_AD_UNEXPECTED_MESSAGE, TLS_REC_WARNING_ALERTS,
                                       "too many warning alerts");
                break;
            }
            c->rec_error = TLS_REC_PEER_ALERT;
            return tc_fail(c, TLS_FAIL_PEER_ALERT, TLS_E_PROTO, "peer sent alert: %s",
                           SSL_alert_desc_string_long(rec[1]));
        case TLSREC_HANDSHAKE:
            r = rec_handshake(c, rec, len);
            if (r < 0)
                return r;
            break;
        default:
            return rec_fail(c, TLSREC_AD_UNEXPECTED_MESSAGE);
        }
    }
}

/* tls_write for REC: seals up to len bytes (the caller checked the room) in
 * records of at most max_plain bytes, after a KeyUpdate when one is owed or
 * when the write key has sealed as many records as it should (§5.5). */
static int rec_write(struct tls_conn *c, const char *plain, size_t len)
{
    size_t done = 0, n;
    int r;

    while (done < len) {
        if ((c->flags & TLS_CF_KU_OWED) || c->rec->wr.seq + 1 >= tlsrec_rekey_after(c->rec)) {
            r = rec_key_update(c);
            if (r < 0)
                return r;
        }
        n = len - done < c->rec->max_plain ? len - done : c->rec->max_plain;
        r = rec_seal(c, TLSREC_APPDATA, plain + done, n);
        if (r < 0)
            return r;
        done += n;
    }
    return (int)done;
}

/* ---- connections -------------------------------------------------------- */

/* Copies an IP literal (optionally in brackets) into ip; false for names. */
static bool ip_literal(const char *name, char *ip, size_t cap)
{
    unsigned char addr[16];
    size_t len = strlen(name);

    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        name++;
        len -= 2;
    }
    if (len == 0 || len >= cap)
        return false;
    memcpy(ip, name, len);
    ip[len] = '\0';
    return inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *server_name)
{
    struct tls_conn *c;
    char ip[64];
    BIO *bio;

    if (!ctx->server && (server_name == NULL || server_name[0] == '\0'))
        return NULL;
    c = OPENSSL_zalloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    ERR_clear_error();
    c->ctx = tls_ctx_ref(ctx);
    c->ssl = SSL_new(ctx->ssl_ctx);
    bio = BIO_new(bio_method);
    if (c->ssl == NULL || bio == NULL) {
        BIO_free(bio);
        goto out_free_conn;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio); /* the SSL owns our one reference */
    SSL_set_app_data(c->ssl, c);
    if (ctx->server) {
        c->flags |= TLS_CF_SERVER;
        SSL_set_accept_state(c->ssl);
        return c;
    }

    c->name = OPENSSL_strdup(server_name);
    if (c->name == NULL)
        goto out_free_conn;
    if (ip_literal(server_name, ip, sizeof(ip))) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), ip))
            goto out_free_conn;
    } else {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (!SSL_set_tlsext_host_name(c->ssl, server_name) || !SSL_set1_host(c->ssl, server_name))
            goto out_free_conn;
        c->flags |= TLS_CF_SNI;
    }
    SSL_set_connect_state(c->ssl);
    session_offer(c);
    ERR_clear_error();
    return c;

out_free_conn:
    ERR_clear_error();
    tls_conn_free(c);
    return NULL;
}

void tls_conn_free(struct tls_conn *c)
{
    if (c == NULL)
        return;
    /* OpenSSL invalidates the session of a connection freed without
     * close_notify, a guard against truncation from SSLv3 days. A proxy
     * closes idle keep-alive connections abruptly all the time, and TLS 1.2
     * and 1.3 sessions carry no data that truncation could harm, so a
     * connection that completed its handshake and did not fail leaves its
     * session resumable. */
    if (c->ssl != NULL && (c->flags & TLS_CF_DONE) && !(c->flags & TLS_CF_FAILED))
        SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(c->ssl); /* frees the BIO too */
    c->ssl = NULL;
    if (c->rec != NULL)
        tlsrec_release(c->rec);
    OPENSSL_free(c->rec);
    OPENSSL_clear_free(c->hs, sizeof(*c->hs));
    OPENSSL_free(c->peer_id);
    buf_release(&c->in);
    buf_release(&c->out);
    OPENSSL_free(c->name);
    OPENSSL_free(c->err);
    tls_ctx_unref(c->ctx);
    OPENSSL_free(c);
}

int tls_feed(struct tls_conn *c, const char *cipher, size_t len)
{
    size_t unread = c->in.len - c->in.off, n;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    if (unread >= TLS_IN_MAX || len == 0)
        return 0;
    n = len < TLS_IN_MAX - unread ? len : TLS_IN_MAX - unread;
    if (!buf_reserve(&c->in, n, TLS_IN_MAX))
        return tc_fail(c, TLS_FAIL_INTERNAL, TLS_E_NOMEM, "out of memory");
    memcpy(c->in.data + c->in.len, cipher, n);
    c->in.len += (uint32_t)n;
    while (c->n_first < sizeof(c->first) && c->n_first < c->in.len)
        c->first[c->n_first] = (char)c->in.data[c->n_first], c->n_first++;
    return (int)n;
}

/* OpenSSL recognises GET, POST, HEAD, PUT and CONNECT only; any request
 * line ("DELETE /", "OPTIONS *") starts with an upper-case token and a
 * space, which no TLS record does (its first byte is 0x14-0x18). */
static bool first_bytes_are_http(const struct tls_conn *c)
{
    unsigned i = 0;

    while (i < c->n_first && c->first[i] >= 'A' && c->first[i] <= 'Z')
        i++;
    return i >= 3 && i < c->n_first && c->first[i] == ' ';
}

int tls_handshake(struct tls_conn *c)
{
    int r;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    if (c->flags & TLS_CF_DONE)
        return 0;
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->flags |= TLS_CF_DONE;
        if (c->flags & TLS_CF_SERVER)
            rec_take_over(c);
        r = 0;
    } else {
        r = tc_settle(c, r);
    }
    buf_trim(&c->in);
    return r;
}

int tls_read(struct tls_conn *c, char *plain, size_t cap)
{
    size_t n = 0;
    int r;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    if (c->flags & TLS_CF_CLOSED)
        return TLS_E_CLOSED;
    if (!(c->flags & TLS_CF_DONE)) {
        r = tls_handshake(c);
        if (r != 0)
            return r == TLS_E_AGAIN ? 0 : r;
    }
    if (cap == 0)
        return 0;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    if (c->flags & TLS_CF_REC)
        return rec_read(c, plain, cap);
    ERR_clear_error();
    r = SSL_read_ex(c->ssl, plain, cap, &n);
    if (r == 1) {
        buf_trim(&c->in);
        return (int)n;
    }
    r = tc_settle(c, r);
    buf_trim(&c->in);
    if (r != TLS_E_AGAIN)
        return r;
    /* Waiting for input with nothing buffered. SSL_MODE_RELEASE_BUFFERS
     * frees OpenSSL's record buffer only after application data; after a
     * post-handshake message (a TLS 1.3 ticket) it would keep 16 KiB. */
    if (c->in.len == 0)
        SSL_free_buffers(c->ssl);
    return 0;
}

int tls_write(struct tls_conn *c, const char *plain, size_t len)
{
    size_t room, n = 0;
    int r;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    if (!(c->flags & TLS_CF_DONE))
        return TLS_E_AGAIN;
    if (c->flags & TLS_CF_SHUTDOWN)
        return TLS_E_SHUTDOWN;
    if (len == 0)
        return 0;
    room = tls_pending(c) < TLS_OUT_MAX ? TLS_OUT_MAX - tls_pending(c) : 0;
    if (room == 0)
        return 0;
    if (len > room)
        len = room;
    if (c->flags & TLS_CF_REC)
        return rec_write(c, plain, len);
    ERR_clear_error();
    r = SSL_write_ex(c->ssl, plain, len, &n);
    if (r == 1)
        return (int)n;
    r = tc_settle(c, r);
    return r == TLS_E_AGAIN ? 0 : r;
}

size_t tls_pending(const struct tls_conn *c)
{
    return c->out.len - c->out.off;
}

size_t tls_take(struct tls_conn *c, char *out, size_t cap)
{
    size_t n = tls_pending(c);

    if (n > cap)
        n = cap;
    if (n == 0)
        return 0;
    memcpy(out, c->out.data + c->out.off, n);
    tls_consume(c, n);
    return n;
}

size_t tls_peek(const struct tls_conn *c, const char **data)
{
    size_t n = tls_pending(c);

    *data = n > 0 ? c->out.data + c->out.off : NULL;
    return n;
}

void tls_consume(struct tls_conn *c, size_t n)
{
    if (n > tls_pending(c))
        n = tls_pending(c);
    c->out.off += (uint32_t)n;
    c->ku_unsent = c->ku_unsent > n ? c->ku_unsent - (uint32_t)n : 0;
    buf_trim(&c->out);
    if (c->flags & TLS_CF_KU_OWED)
        (void)rec_settle_owed(c); /* a failure shows at the next call */
}

int tls_shutdown(struct tls_conn *c)
{
    int r;

    if (c->flags & TLS_CF_FAILED)
        return c->rc;
    /* Mid-handshake there is nothing to close politely: the caller just
     * closes the socket. */
    if (!(c->flags & TLS_CF_DONE) || (c->flags & TLS_CF_SHUTDOWN))
        return 0;
    c->flags |= TLS_CF_SHUTDOWN;
    if (c->flags & TLS_CF_REC) {
        static const uint8_t close_notify[2] = {1, SSL_AD_CLOSE_NOTIFY};

        return rec_seal(c, TLSREC_ALERT, close_notify, sizeof(close_notify));
    }
    ERR_clear_error();
    r = SSL_shutdown(c->ssl);
    if (r >= 0)
        return 0;
    r = tc_settle(c, r);
    return r == TLS_E_AGAIN ? 0 : r;
}

bool tls_handshake_done(const struct tls_conn *c)
{
    return (c->flags & TLS_CF_DONE) != 0;
}

bool tls_resumed(const struct tls_conn *c)
{
    if (c->flags & TLS_CF_REC)
        return (c->flags & TLS_CF_RESUMED) != 0;
    return (c->flags & TLS_CF_DONE) && SSL_session_reused(c->ssl);
}

const char *tls_version(const struct tls_conn *c)
{
    if (c->flags & TLS_CF_REC)
        return "TLSv1.3";
    return (c->flags & TLS_CF_DONE) ? SSL_get_version(c->ssl) : NULL;
}

const char *tls_alpn(const struct tls_conn *c)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;

    if (c->flags & TLS_CF_REC)
        return (c->flags & TLS_CF_ALPN) ? "http/1.1" : NULL;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    if (p != NULL && len == ALPN_WIRE_LEN - 1 && memcmp(p, alpn_wire + 1, len) == 0)
        return "http/1.1";
    return NULL;
}

const char *tls_sni(const struct tls_conn *c)
{
    if (!(c->flags & TLS_CF_SERVER))
        return (c->flags & TLS_CF_SNI) ? c->name : NULL;
    if (c->flags & TLS_CF_REC)
        return c->name;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

/* Copies an identity if every byte is printable ASCII other than space. */
static int identity_copy(const unsigned char *s, int len, char *out, size_t cap)
{
    int i;

    if (len <= 0)
        return 0;
    for (i = 0; i < len; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return -EINVAL;
    if ((size_t)len >= cap)
        return -ENOSPC;
    memcpy(out, s, (size_t)len);
    out[len] = '\0';
    return len;
}

int tls_peer_identity(const struct tls_conn *c, char *out, size_t cap)
{
    X509 *x;
    GENERAL_NAMES *gens;
    const ASN1_IA5STRING *uri = NULL, *dns = NULL;
    X509_NAME *subj;
    int i, r = 0;

    if (cap > 0)
        out[0] = '\0';
    if (!(c->flags & TLS_CF_DONE) || (c->flags & TLS_CF_FAILED))
        return 0;
    if (c->flags & TLS_CF_REC)
        return c->peer_id == NULL ? 0
                                  : identity_copy((const unsigned char *)c->peer_id,
                                                  (int)strlen(c->peer_id), out, cap);
    x = SSL_get0_peer_certificate(c->ssl);
    if (x == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return 0;
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

        if (g->type == GEN_URI && uri == NULL)
            uri = g->d.uniformResourceIdentifier;
        else if (g->type == GEN_DNS && dns == NULL)
            dns = g->d.dNSName;
    }
    if (uri != NULL)
        r = identity_copy(ASN1_STRING_get0_data(uri), ASN1_STRING_length(uri), out, cap);
    else if (dns != NULL)
        r = identity_copy(ASN1_STRING_get0_data(dns), ASN1_STRING_length(dns), out, cap);
    GENERAL_NAMES_free(gens);
    if (uri != NULL || dns != NULL)
        goto out;
    subj = X509_get_subject_name(x);
    i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        unsigned char *cn = NULL;
        int len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));

        r = identity_copy(cn, len, out, cap);
        OPENSSL_free(cn);
    }
out:
    ERR_clear_error();
    if (r < 0 && cap > 0)
        out[0] = '\0';
    return r;
}

const char *tls_error(const struct tls_conn *c)
{
    if (!(c->flags & TLS_CF_FAILED))
        return "";
    return c->err ? c->err : "out of memory";
}

enum tls_record_error tls_record_error(const struct tls_conn *c)
{
    return (c->flags & TLS_CF_FAILED) ? (enum tls_record_error)c->rec_error : TLS_REC_NONE;
}

const char *tls_record_error_name(enum tls_record_error e)
{
    return (unsigned)e < TLS_REC__N ? record_error_names[e] : "unknown";
}

struct tlsrec *tls_rec(struct tls_conn *c)
{
    return c->rec;
}

enum tls_failure tls_failure(const struct tls_conn *c)
{
    return (c->flags & TLS_CF_FAILED) ? (enum tls_failure)c->failure : TLS_FAIL_NONE;
}

const char *tls_failure_name(enum tls_failure f)
{
    return (unsigned)f < TLS_FAIL__N ? failure_names[f] : "unknown";
}
