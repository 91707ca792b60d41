/*
 * fuzz_tls.c - libFuzzer target for the TLS 1.3 record layer that a server
 * connection switches to after its handshake (tls.c's rec_* over tlsrec).
 *
 * Random bytes would all fail the AEAD and explore nothing, so every input
 * starts with a real handshake, in memory, between a bare OpenSSL client and
 * a server tls_conn. The client's key log gives the application traffic
 * secrets, which key a client-side tlsrec: from then on the input is a
 * script of records that the client seals (any inner content type, padding,
 * alerts, key updates, records longer than TLS allows), corrupts (tampered,
 * replayed, dropped) or sends unsealed, fed to the server in pieces; the
 * server echoes some of what it reads and may write or close on its own.
 *
 * A model predicts, record by record, what the server must do (RFC 8446
 * §5.1-5.4, §6, §4.6.3, with the alerts tls.c documents), so that findings
 * are not only crashes, sanitizer reports and leaks: the target abort()s
 * when the plaintext tls_read returns is not exactly the application data
 * sealed before the first bad record, when the server closes or fails at the
 * wrong record, with the wrong alert or failure, or stops failing, and when
 * anything it sends does not open under the client's keys or was not asked
 * for (only application data it was given, alerts and KeyUpdate answers).
 * `make fuzz`; run from the repository root (certificates go to
 * build/fuzz/certs).
 *
 * Input: byte 0 picks the suite, the tls_read and tls_take buffer sizes and
 * the echo; the rest is ops, [op][arguments], listed at OP_* below. A
 * missing byte reads as 0, a missing payload byte as a fixed pattern, so a
 * short input can still ask for a long record.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "tls.h"
#include "tlsrec.h"

#define CERT_DIR "build/fuzz/certs"

#define RECORD_MAX 17000       /* the longest record an op makes, header included */
#define FEED_MAX (64 * 1024)   /* held records are fed beyond this */
#define TOTAL_MAX (256 * 1024) /* client bytes per input: keeps an input fast */
#define SENT_MAX (512 * 1024)  /* server plaintext written per input */
#define FX_MAX 8192            /* ops per input */
#define ECHO_MAX (128 * 1024)

/* Ops: the low four bits pick one (13-15 repeat 0-2), the flags are for ops
 * that add to the wire. Lengths are one byte, two (big-endian) with BIG. */
enum {
    OP_DATA,      /* [len][payload]: sealed application data */
    OP_RECORD,    /* [type][len][payload][pad]: sealed payload || type || pad zeros */
    OP_ALERT,     /* [level][description]: sealed alert */
    OP_KEYUPDATE, /* [request]: sealed KeyUpdate, update_requested when odd */
    OP_CLOSE,     /* sealed close_notify */
    OP_LONG,      /* [extra][type][pad]: 16376 + extra % 16 bytes of content, padded past
                   * what tlsrec_seal takes */
    OP_RAW,       /* [len][bytes]: unsealed bytes (header checks) */
    OP_REPLAY,    /* the last sealed record again */
    OP_DROP,      /* [len][payload]: sealed application data the server never gets */
    OP_TAMPER,    /* [len][payload][pos][xor]: sealed application data, one byte changed */
    OP_WRITE,     /* [len]: the server writes len * 257 bytes */
    OP_SHUTDOWN,  /* the server sends close_notify */
    OP_HANDSHAKE, /* [len][payload]: sealed handshake message(s), any bytes */
    OP__N
};
#define F_HOLD 0x10  /* keep the record: feed it with the next one */
#define F_SPLIT 0x20 /* [split]: feed what is held in two pieces, cut at split/256 */
#define F_BIG 0x40   /* two-byte lengths */
#define F_LAZY 0x80  /* call tls_read once only: feed more with plaintext unread */

static const struct suite {
    const char *name;
    uint16_t id;
    const char *cipher;
} suites[3] = {
    {"TLS_AES_128_GCM_SHA256", 0x1301, "AES-128-GCM"},
    {"TLS_AES_256_GCM_SHA384", 0x1302, "AES-256-GCM"},
    {"TLS_CHACHA20_POLY1305_SHA256", 0x1303, "ChaCha20-Poly1305"},
};

/* What the server must do once it has a record whole (or, for a header it
 * must refuse, its first five bytes). */
enum fx_kind {
    FX_DATA,    /* deliver its plaintext: stream[..stream_end) */
    FX_NOTHING, /* empty application data, user_canceled */
    FX_UPDATE,  /* KeyUpdate, update_not_requested */
    FX_UPDATE_REQ,
    FX_CLOSE,     /* close_notify */
    FX_FAIL,      /* fatal, with our alert `alert` */
    FX_PEER_FAIL, /* the client's fatal alert: no alert back */
    FX_POISON,    /* unsealed bytes: from here on, no plaintext, no close */
};

struct effect {
    uint64_t pos; /* wire offset at which it happens */
    size_t stream_end;
    uint8_t kind, alert;
};

enum { ST_ALIVE, ST_CLOSED, ST_FAILED, ST_POISONED };

struct run {
    struct tls_conn *s;
    struct tlsrec cli; /* the client's keys: rd opens the server's records */
    const struct suite *suite;
    size_t read_cap, take_cap;
    int echo;
    bool handshaking;

    /* client -> server */
    size_t wire_len, woff; /* wire[woff, wire_len) is held, not fed yet */
    uint64_t fed;          /* bytes fed (or skipped after the server ended) */
    uint64_t total;        /* bytes put on the wire */
    size_t last_len;       /* the last sealed record, for OP_REPLAY */
    bool last_header_bad;
    bool desync;       /* a sealed record was dropped */
    size_t stream_len; /* application data of every sealed record fed, in order */

    /* the model */
    struct effect fx[FX_MAX];
    size_t n_fx, fx_next;
    int state;
    uint8_t want_alert;
    bool peer_failed;
    size_t accepted;           /* plaintext the server must have returned */
    unsigned updates_expected; /* KeyUpdates the server owes */
    bool shutdown;             /* tls_shutdown succeeded */

    /* what the server did */
    size_t rx; /* plaintext tls_read returned */
    int rc;    /* the last tls_read at a full drain */
    bool failed, closed, lazy;
    size_t echo_len;
    size_t back_len; /* ciphertext taken, not opened yet */
    size_t sent_len; /* plaintext tls_write took */
    size_t got;      /* of which the client opened */
    unsigned updates_seen;
    bool fatal_seen, close_seen;
    uint8_t fatal_desc;
};

static struct tls_ctx *sctx;
static SSL_CTX *cctx;
static EVP_CIPHER *long_cipher[3];
static struct run run;
static uint8_t wire[FEED_MAX + 2 * RECORD_MAX], last[RECORD_MAX], inner[RECORD_MAX];
static uint8_t stream[TOTAL_MAX + RECORD_MAX], sent[SENT_MAX], back[2 * 65536 + RECORD_MAX];
static uint8_t echo_buf[ECHO_MAX], pattern[RECORD_MAX], wbuf[65536];
static char rbuf[65536];

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void violation(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "fuzz_tls: oracle violation: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " [suite %s, tls_error \"%s\"]\n", run.suite ? run.suite->name : "-",
            run.s ? tls_error(run.s) : "");
    abort();
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            violation(__VA_ARGS__);                                                                \
    } while (0)

/* ---- input -------------------------------------------------------------- */

struct input {
    const uint8_t *p;
    size_t n;
};

static unsigned next_byte(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static size_t next_len(struct input *in, unsigned op)
{
    size_t len = next_byte(in);

    return (op & F_BIG) ? len << 8 | next_byte(in) : len;
}

static void next_bytes(struct input *in, uint8_t *dst, size_t len)
{
    size_t k = len < in->n ? len : in->n;

    memcpy(dst, in->p, k);
    in->p += k;
    in->n -= k;
    memcpy(dst + k, pattern, len - k);
}

/* ---- the client's key log ----------------------------------------------- */

struct secrets {
    uint8_t client[TLSREC_MAX_SECRET], server[TLSREC_MAX_SECRET];
    size_t client_len, server_len;
};

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;

    for (; hex[0] != '\0' && hex[1] != '\0' && n < TLSREC_MAX_SECRET; hex += 2) {
        unsigned v;

        if (sscanf(hex, "%2x", &v) != 1)
            return 0;
        out[n++] = (uint8_t)v;
    }
    return hex[0] == '\0' ? n : 0;
}

/* NSS key log lines: LABEL <client random> <secret>. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    struct secrets *k = SSL_get_app_data(ssl);
    const char *secret = strrchr(line, ' ');

    if (k == NULL || secret == NULL)
        return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
        k->client_len = unhex(secret + 1, k->client);
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
        k->server_len = unhex(secret + 1, k->server);
}

/* ---- what the server sends ---------------------------------------------- */

static void server_record(struct run *r, uint8_t type, const uint8_t *p, size_t len)
{
    static const uint8_t key_update[5] = {24, 0, 0, 1, 0};

    CHECK(!r->fatal_seen, "the server sent a record (type %u) after its fatal alert", type);
    switch (type) {
    case TLSREC_APPDATA:
        CHECK(!r->close_seen, "application data after the server's close_notify");
        CHECK(r->got + len <= r->sent_len && memcmp(sent + r->got, p, len) == 0,
              "the client opened %zu bytes of application data at %zu that the server was not "
              "given (%zu written)",
              len, r->got, r->sent_len);
        r->got += len;
        break;
    case TLSREC_ALERT:
        CHECK(len == 2, "an alert of %zu bytes from the server", len);
        if (p[0] == 1 && p[1] == 0) {
            CHECK(r->shutdown && !r->close_seen, "close_notify the server was not asked for");
            r->close_seen = true;
        } else {
            CHECK(p[0] == 2, "a non-fatal alert (%u, %u) from the server", p[0], p[1]);
            r->fatal_seen = true;
            r->fatal_desc = p[1];
        }
        break;
    case TLSREC_HANDSHAKE:
        if (r->handshaking) { /* the session ticket OpenSSL sent */
            CHECK(len >= 4 && p[0] == 4 && ((size_t)p[1] << 16 | p[2] << 8 | p[3]) == len - 4,
                  "a handshake record other than NewSessionTicket after the handshake");
            break;
        }
        CHECK(len == sizeof(key_update) && memcmp(p, key_update, len) == 0,
              "a handshake record of %zu bytes (type %u) other than KeyUpdate", len,
              len > 0 ? p[0] : 0);
        CHECK(!r->close_seen, "KeyUpdate after the server's close_notify");
        CHECK(r->updates_seen < r->updates_expected, "a KeyUpdate nobody asked for");
        r->updates_seen++;
        /* Its later records are under the next server secret. */
        CHECK(tlsrec_update(&r->cli, &r->cli.rd) == 0, "tlsrec_update");
        break;
    default:
        violation("a record of content type %u from the server", type);
    }
}

/* Takes what the server has to send, in take_cap pieces, and opens it as
 * the client would: all of it must open, in whole records. */
static void take(struct run *r)
{
    size_t n, off;
    uint8_t type;
    int k;

    for (;;) {
        size_t cap = sizeof(back) - r->back_len;

        n = tls_take(r->s, (char *)back + r->back_len, cap < r->take_cap ? cap : r->take_cap);
        if (n == 0)
            break;
        r->back_len += n;
        for (off = 0;; off += (size_t)k) {
            size_t len;

            k = tlsrec_open(&r->cli, back + off, r->back_len - off, &type, &len);
            if (k == 0)
                break;
            CHECK(k > 0, "a record from the server does not open (alert %d)", -k);
            server_record(r, type, back + off + TLSREC_HEADER, len);
        }
        memmove(back, back + off, r->back_len - off);
        r->back_len -= off;
    }
    CHECK(r->back_len == 0, "the server's output ends in %zu bytes of a partial record",
          r->back_len);
}

/* tls_write until all of p is taken, or the failure the model expects. */
static void server_write(struct run *r, const uint8_t *p, size_t len)
{
    int n;

    if (len > SENT_MAX - r->sent_len)
        len = SENT_MAX - r->sent_len;
    while (len > 0) {
        n = tls_write(r->s, (const char *)p, len);
        if (r->failed) {
            CHECK(n == TLS_E_PROTO, "tls_write after a failure: %d", n);
            return;
        }
        if (r->shutdown) {
            CHECK(n == TLS_E_SHUTDOWN, "tls_write after tls_shutdown: %d", n);
            return;
        }
        /* take() empties the output after each call: there is room. */
        CHECK(n > 0 && (size_t)n <= len, "tls_write(%zu) = %d", len, n);
        memcpy(sent + r->sent_len, p, (size_t)n);
        r->sent_len += (size_t)n;
        p += n;
        len -= (size_t)n;
        take(r);
    }
}

/* ---- the model ---------------------------------------------------------- */

/* What a server must make of a record whose decrypted TLSInnerPlaintext is
 * in[0, n): the content type is its last non-zero byte (§5.4). */
static struct effect predict(const uint8_t *in, size_t n)
{
    struct effect e = {.kind = FX_FAIL, .alert = TLSREC_AD_UNEXPECTED_MESSAGE};
    size_t len;

    if (n > TLSREC_MAX_PLAIN + 1) { /* content, type and padding: 2^14 + 1 at most */
        e.alert = TLSREC_AD_RECORD_OVERFLOW;
        return e;
    }
    while (n > 0 && in[n - 1] == 0)
        n--;
    if (n == 0)
        return e; /* no content type at all */
    len = n - 1;
    switch (in[len]) {
    case TLSREC_APPDATA:
        e.kind = len > 0 ? FX_DATA : FX_NOTHING;
        break;
    case TLSREC_ALERT:
        if (len != 2)
            e.alert = TLSREC_AD_DECODE_ERROR;
        else if (in[1] == 0)
            e.kind = FX_CLOSE;
        else if (in[1] == 90)
            e.kind = FX_NOTHING; /* user_canceled */
        else
            e.kind = FX_PEER_FAIL;
        break;
    case TLSREC_HANDSHAKE:
        /* Only a whole KeyUpdate, alone in its record (anything else gets
         * unexpected_message), asking for update or not (else
         * illegal_parameter, §4.6.3). */
        if (len == 5 && in[0] == 24 && in[1] == 0 && in[2] == 0 && in[3] == 1) {
            if (in[4] > 1)
                e.alert = TLSREC_AD_ILLEGAL_PARAMETER;
            else
                e.kind = in[4] ? FX_UPDATE_REQ : FX_UPDATE;
        }
        break;
    default:
        break;
    }
    return e;
}

/* Applies the effects of everything fed so far, in wire order. */
static void model_apply(struct run *r)
{
    for (; r->fx_next < r->n_fx && r->fx[r->fx_next].pos <= r->fed; r->fx_next++) {
        const struct effect *e = &r->fx[r->fx_next];

        if (r->state != ST_ALIVE)
            continue;
        switch (e->kind) {
        case FX_DATA:
            r->accepted = e->stream_end;
            break;
        case FX_UPDATE_REQ:
            if (!r->shutdown)
                r->updates_expected++;
            break;
        case FX_CLOSE:
            r->state = ST_CLOSED;
            break;
        case FX_FAIL:
            r->state = ST_FAILED;
            r->want_alert = e->alert;
            break;
        case FX_PEER_FAIL:
            r->state = ST_FAILED;
            r->peer_failed = true;
            break;
        case FX_POISON:
            r->state = ST_POISONED;
            break;
        default:
            break;
        }
    }
}

/* The server's state and output against the model, after a full drain. */
static void compare(struct run *r)
{
    enum tls_failure f = tls_failure(r->s);

    switch (r->state) {
    case ST_ALIVE:
        CHECK(r->rc == 0, "tls_read = %d on good records", r->rc);
        break;
    case ST_CLOSED:
        CHECK(r->rc == TLS_E_CLOSED && f == TLS_FAIL_NONE,
              "tls_read = %d (failure %d) after close_notify", r->rc, f);
        break;
    case ST_FAILED:
        CHECK(r->rc == TLS_E_PROTO &&
                  f == (r->peer_failed ? TLS_FAIL_PEER_ALERT : TLS_FAIL_PROTOCOL),
              "tls_read = %d (failure %d) after a bad record (alert %u expected)", r->rc, f,
              r->want_alert);
        break;
    case ST_POISONED: /* unsealed bytes: it may wait for more or fail */
        CHECK(r->rc == 0 || (r->rc == TLS_E_PROTO && f == TLS_FAIL_PROTOCOL),
              "tls_read = %d (failure %d) after unsealed bytes", r->rc, f);
        break;
    }
    CHECK(r->rx == r->accepted, "the server returned %zu bytes of plaintext, %zu expected", r->rx,
          r->accepted);
    CHECK(r->updates_seen == r->updates_expected, "the server answered %u of %u KeyUpdate requests",
          r->updates_seen, r->updates_expected);
    CHECK(r->got == r->sent_len, "the client opened %zu of the %zu bytes the server wrote", r->got,
          r->sent_len);
    CHECK(r->close_seen == r->shutdown, "close_notify %s after tls_shutdown",
          r->close_seen ? "sent without" : "missing");
    if (r->failed && !r->peer_failed) {
        CHECK(r->fatal_seen, "the server failed without telling the client");
        CHECK(r->state != ST_FAILED || r->fatal_desc == r->want_alert,
              "alert %u from the server, %u expected", r->fatal_desc, r->want_alert);
    } else {
        CHECK(!r->fatal_seen, "a fatal alert (%u) from a server that did not fail", r->fatal_desc);
    }
}

/* ---- feeding the server ------------------------------------------------- */

/* The caller's loop: tls_read until <= 0 (once only when lazy), then send
 * what is pending; then the echo. */
static void drain(struct run *r, bool lazy)
{
    int n;

    do {
        n = tls_read(r->s, rbuf, r->read_cap);
        if (n <= 0)
            break;
        CHECK(r->rx + (size_t)n <= r->stream_len && memcmp(stream + r->rx, rbuf, (size_t)n) == 0,
              "tls_read returned %d bytes at %zu that the client did not send (%zu sent)", n, r->rx,
              r->stream_len);
        r->rx += (size_t)n;
        if ((size_t)n <= ECHO_MAX - r->echo_len) {
            memcpy(echo_buf + r->echo_len, rbuf, (size_t)n);
            r->echo_len += (size_t)n;
        }
    } while (!lazy);
    if (n > 0) { /* the rest waits in the server; no verdict yet */
        r->lazy = true;
        model_apply(r); /* for the KeyUpdates it may have answered already */
        take(r);
        return;
    }
    r->lazy = false;
    CHECK(n == 0 || n == TLS_E_PROTO || n == TLS_E_CLOSED, "tls_read = %d", n);
    CHECK(!r->failed || n == TLS_E_PROTO, "tls_read = %d after it returned TLS_E_PROTO", n);
    CHECK(!r->closed || n == TLS_E_CLOSED, "tls_read = %d after it returned TLS_E_CLOSED", n);
    r->rc = n;
    if (n == TLS_E_PROTO && !r->failed) { /* and it stays failed */
        r->failed = true;
        CHECK(tls_read(r->s, rbuf, r->read_cap) == TLS_E_PROTO, "tls_read after failing");
        CHECK(tls_feed(r->s, "x", 1) == TLS_E_PROTO, "tls_feed after failing");
        CHECK(tls_write(r->s, "x", 1) == TLS_E_PROTO, "tls_write after failing");
        CHECK(tls_shutdown(r->s) == TLS_E_PROTO, "tls_shutdown after failing");
        CHECK(tls_error(r->s)[0] != '\0', "a failure without tls_error");
    }
    if (n == TLS_E_CLOSED && !r->closed) {
        r->closed = true;
        CHECK(tls_read(r->s, rbuf, r->read_cap) == TLS_E_CLOSED, "tls_read after close_notify");
    }
    model_apply(r);
    take(r);
    if (r->echo_len > 0) {
        switch (r->echo) {
        case 1:
            server_write(r, echo_buf, r->echo_len);
            break;
        case 2:
            server_write(r, echo_buf, r->echo_len / 2);
            break;
        case 3: /* a record per byte */
            for (size_t i = 0; i < r->echo_len && i < 16; i++)
                server_write(r, echo_buf + i, 1);
            break;
        }
        r->echo_len = 0;
    }
    compare(r);
}

/* Feeds the next n held bytes (tls_feed may take fewer: read, then the
 * rest), then drains. */
static void feed(struct run *r, size_t n, bool lazy)
{
    bool stuck = false;
    int k;

    while (n > 0) {
        if (r->failed || r->closed) { /* a real caller stops reading */
            r->woff += n;
            r->fed += n;
            break;
        }
        k = tls_feed(r->s, (const char *)wire + r->woff, n);
        CHECK(k >= 0 && (size_t)k <= n, "tls_feed(%zu) = %d", n, k);
        if (k == 0) {
            CHECK(!stuck, "tls_feed takes nothing after a full tls_read");
            stuck = true;
            drain(r, false);
            continue;
        }
        stuck = false;
        r->woff += (size_t)k;
        r->fed += (size_t)k;
        n -= (size_t)k;
    }
    drain(r, lazy);
}

/* Feeds everything held, in two pieces when split >= 0. */
static void flush(struct run *r, int split, bool lazy)
{
    size_t len = r->wire_len, cut = split < 0 ? len : (size_t)split * len / 256;

    r->woff = 0;
    if (cut > 0 && cut < len)
        feed(r, cut, false);
    feed(r, len - r->woff, lazy);
    r->wire_len = r->woff = 0;
}

/* Puts the record at wire + wire_len (len bytes) on the wire, with what the
 * server must make of it once it has its first `at` bytes. */
static void commit(struct run *r, size_t len, struct effect e, size_t at)
{
    if (e.kind != FX_NOTHING) {
        e.pos = r->total + at;
        r->fx[r->n_fx++] = e;
    }
    r->wire_len += len;
    r->total += len;
}

/* Keeps the sealed record just put on the wire, for OP_REPLAY. */
static void keep_last(struct run *r, size_t len, bool header_bad)
{
    memcpy(last, wire + r->wire_len - len, len);
    r->last_len = len;
    r->last_header_bad = header_bad;
}

/* The application data of a sealed record the model accepts, in[0, n)
 * being its inner plaintext. */
static size_t to_stream(struct run *r, const uint8_t *in, size_t n)
{
    while (in[n - 1] == 0)
        n--;
    memcpy(stream + r->stream_len, in, n - 1);
    r->stream_len += n - 1;
    return r->stream_len;
}

static const struct effect bad_mac = {.kind = FX_FAIL, .alert = TLSREC_AD_BAD_RECORD_MAC},
                           overflow = {.kind = FX_FAIL, .alert = TLSREC_AD_RECORD_OVERFLOW};

/* Seals in[0, n) (payload || content type || padding) as the client would. */
static void seal(struct run *r, const uint8_t *in, size_t n)
{
    struct effect e = predict(in, n);
    uint8_t *out = wire + r->wire_len;
    int k = tlsrec_seal(&r->cli, in[n - 1], in, n - 1, out);

    CHECK(k == (int)(n - 1 + TLSREC_OVERHEAD), "tlsrec_seal(%zu) = %d", n - 1, k);
    if (r->desync)
        e = bad_mac;
    else if (e.kind == FX_DATA)
        e.stream_end = to_stream(r, in, n);
    else if (e.kind == FX_UPDATE || e.kind == FX_UPDATE_REQ)
        /* A real client switches to its next secret after sending it. */
        CHECK(tlsrec_update(&r->cli, &r->cli.wr) == 0, "tlsrec_update");
    commit(r, (size_t)k, e, (size_t)k);
    keep_last(r, (size_t)k, false);
}

/* Seals in[0, n) with the client's write keys but without tlsrec_seal,
 * which refuses more than TLSREC_MAX_PLAIN + 1 bytes of inner plaintext. */
static void seal_long(struct run *r, const uint8_t *in, size_t n)
{
    struct tlsrec_dir *d = &r->cli.wr;
    size_t clen = n + TLSREC_TAG;
    uint8_t *out = wire + r->wire_len, nonce[12];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    struct effect e = predict(in, n);
    bool early = clen > TLSREC_MAX_CIPHER;
    int len, ok, i;

    memcpy(nonce, d->iv, sizeof(nonce));
    for (i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
    out[0] = TLSREC_APPDATA;
    out[1] = out[2] = 3;
    out[3] = (uint8_t)(clen >> 8);
    out[4] = (uint8_t)clen;
    ok = ctx != NULL &&
         EVP_EncryptInit_ex(ctx, long_cipher[r->suite - suites], NULL, d->key, nonce) &&
         EVP_EncryptUpdate(ctx, NULL, &len, out, TLSREC_HEADER) &&
         EVP_EncryptUpdate(ctx, out + TLSREC_HEADER, &len, in, (int)n) &&
         EVP_EncryptFinal_ex(ctx, out + TLSREC_HEADER + n, &len) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TLSREC_TAG, out + TLSREC_HEADER + n);
    EVP_CIPHER_CTX_free(ctx);
    CHECK(ok, "sealing a long record");
    d->seq++;
    if (early) /* refused from its header alone */
        e = overflow;
    else if (r->desync)
        e = bad_mac;
    else if (e.kind == FX_DATA)
        e.stream_end = to_stream(r, in, n);
    commit(r, TLSREC_HEADER + clen, e, early ? TLSREC_HEADER : TLSREC_HEADER + clen);
    keep_last(r, TLSREC_HEADER + clen, early);
}

/* ---- the handshake ------------------------------------------------------ */

static void handshake(struct run *r)
{
    struct secrets k = {0};
    SSL *ssl = SSL_new(cctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    const SSL_CIPHER *cipher;
    char buf[16384];
    int i, n, rc = 0, rs = TLS_E_AGAIN;

    r->s = tls_conn_new(sctx, NULL);
    CHECK(ssl != NULL && rbio != NULL && wbio != NULL && r->s != NULL, "out of memory");
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_app_data(ssl, &k);
    CHECK(SSL_set_ciphersuites(ssl, r->suite->name) == 1, "SSL_set_ciphersuites");
    SSL_set_connect_state(ssl);
    for (i = 0; i < 8; i++) {
        rc = SSL_do_handshake(ssl);
        if (rc != 1 && SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ)
            break;
        while ((n = BIO_read(wbio, buf, sizeof(buf))) > 0)
            CHECK(tls_feed(r->s, buf, (size_t)n) == n, "tls_feed in the handshake");
        rs = tls_handshake(r->s);
        if (rc == 1)
            break; /* what the server sends now is under its application secret */
        while ((n = (int)tls_take(r->s, buf, sizeof(buf))) > 0)
            BIO_write(rbio, buf, n);
    }
    CHECK(rc == 1 && rs == 0, "handshake: client %d, server %d", rc, rs);
    cipher = SSL_get_current_cipher(ssl);
    CHECK(cipher != NULL && SSL_CIPHER_get_protocol_id(cipher) == r->suite->id &&
              strcmp(tls_version(r->s), "TLSv1.3") == 0,
          "not the TLS 1.3 suite asked for");
    CHECK(k.client_len > 0 && k.client_len == k.server_len &&
              k.client_len == tlsrec_secret_len(r->suite->id),
          "no traffic secrets in the key log");
    CHECK(tlsrec_init(&r->cli, r->suite->id, k.server, k.client, k.client_len, 0) == 0,
          "tlsrec_init");
    OPENSSL_cleanse(&k, sizeof(k));
    SSL_free(ssl);
    ERR_clear_error();
    /* The ticket: opening it also moves the client's read sequence number
     * past it, as the server's write one was. */
    r->handshaking = true;
    take(r);
    r->handshaking = false;
}

/* ---- ops ---------------------------------------------------------------- */

static void step(struct run *r, struct input *in, unsigned op)
{
    unsigned kind = (op & 0x0f) < OP__N ? (op & 0x0f) : (op & 0x0f) - OP__N;
    size_t len, pad, pos;
    uint8_t x;

    switch (kind) {
    case OP_DATA:
    case OP_HANDSHAKE:
        len = next_len(in, op);
        len = len < TLSREC_MAX_PLAIN ? len : TLSREC_MAX_PLAIN;
        next_bytes(in, inner, len);
        inner[len] = kind == OP_DATA ? TLSREC_APPDATA : TLSREC_HANDSHAKE;
        seal(r, inner, len + 1);
        break;
    case OP_RECORD:
        x = (uint8_t)next_byte(in);
        len = next_len(in, op);
        len = len < TLSREC_MAX_PLAIN ? len : TLSREC_MAX_PLAIN;
        next_bytes(in, inner, len);
        inner[len] = x;
        pad = next_len(in, op);
        pad = pad < TLSREC_MAX_PLAIN - len ? pad : TLSREC_MAX_PLAIN - len;
        memset(inner + len + 1, 0, pad);
        seal(r, inner, len + 1 + pad);
        break;
    case OP_ALERT:
        inner[0] = (uint8_t)next_byte(in);
        inner[1] = (uint8_t)next_byte(in);
        inner[2] = TLSREC_ALERT;
        seal(r, inner, 3);
        break;
    case OP_KEYUPDATE:
        memcpy(inner, "\x18\x00\x00\x01", 4);
        inner[4] = next_byte(in) & 1;
        inner[5] = TLSREC_HANDSHAKE;
        seal(r, inner, 6);
        break;
    case OP_CLOSE:
        memcpy(inner, "\x01\x00\x15", 3);
        seal(r, inner, 3);
        break;
    case OP_LONG: /* the content is the fixed pattern */
        len = TLSREC_MAX_PLAIN - 8 + next_byte(in) % 16;
        memcpy(inner, pattern, len);
        inner[len] = (uint8_t)next_byte(in);
        pad = next_byte(in);
        memset(inner + len + 1, 0, pad);
        seal_long(r, inner, len + 1 + pad);
        break;
    case OP_RAW:
        len = next_len(in, op);
        len = len < RECORD_MAX ? len : RECORD_MAX;
        next_bytes(in, wire + r->wire_len, len);
        if (len > 0) /* poisons the stream from its first byte */
            commit(r, len, (struct effect){.kind = FX_POISON}, 1);
        break;
    case OP_REPLAY:
        if (r->last_len == 0)
            return;
        memcpy(wire + r->wire_len, last, r->last_len);
        /* The server's sequence number moved on: it must not open again. */
        if (r->last_header_bad)
            commit(r, r->last_len, overflow, TLSREC_HEADER);
        else
            commit(r, r->last_len, bad_mac, r->last_len);
        break;
    case OP_DROP:
        len = next_len(in, op);
        len = len < TLSREC_MAX_PLAIN ? len : TLSREC_MAX_PLAIN;
        next_bytes(in, inner, len);
        CHECK(tlsrec_seal(&r->cli, TLSREC_APPDATA, inner, len, wire + r->wire_len) > 0,
              "tlsrec_seal");
        r->desync = true; /* the client's sequence number is one ahead from here */
        return;
    case OP_TAMPER: {
        uint8_t *rec = wire + r->wire_len;
        int k;

        len = next_len(in, op);
        len = len < TLSREC_MAX_PLAIN ? len : TLSREC_MAX_PLAIN;
        next_bytes(in, inner, len);
        k = tlsrec_seal(&r->cli, TLSREC_APPDATA, inner, len, rec);
        CHECK(k > 0, "tlsrec_seal");
        pos = TLSREC_HEADER + next_byte(in) * ((size_t)k - TLSREC_HEADER) / 256;
        x = (uint8_t)next_byte(in);
        rec[pos] ^= x != 0 ? x : 1; /* the body or the tag, never the header */
        commit(r, (size_t)k, bad_mac, (size_t)k);
        keep_last(r, (size_t)k, false);
        break;
    }
    case OP_WRITE:
        if (r->lazy) /* the model needs every record read before the server acts */
            drain(r, false);
        len = next_byte(in) * (size_t)257;
        for (size_t i = 0; i < len; i++)
            wbuf[i] = (uint8_t)(i * 7 + r->sent_len);
        server_write(r, wbuf, len);
        compare(r);
        return;
    case OP_SHUTDOWN:
        if (r->lazy)
            drain(r, false);
        if (r->failed) {
            CHECK(tls_shutdown(r->s) == TLS_E_PROTO, "tls_shutdown after failing");
        } else {
            CHECK(tls_shutdown(r->s) == 0, "tls_shutdown");
            r->shutdown = true;
        }
        take(r);
        compare(r);
        return;
    }
    if (!(op & F_HOLD) || r->wire_len > FEED_MAX)
        flush(r, (op & F_SPLIT) ? (int)next_byte(in) : -1, (op & F_LAZY) != 0);
}

/* ---- libFuzzer ---------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct tls_cert_file cert = {CERT_DIR "/server.crt", CERT_DIR "/server.key"};
    struct tls_server_opts o = {.certificates = &cert, .n_certificates = 1, .min_version = 13};
    char err[256] = "";
    size_t i;

    if (system("sh certs/make-certs.sh " CERT_DIR) != 0) {
        fprintf(stderr, "fuzz_tls: certs/make-certs.sh failed (run from the repository root)\n");
        exit(1);
    }
    sctx = tls_server_ctx_new(&o, err, sizeof(err));
    cctx = SSL_CTX_new(TLS_client_method());
    if (sctx == NULL || cctx == NULL) {
        fprintf(stderr, "fuzz_tls: %s\n", sctx == NULL ? err : "SSL_CTX_new failed");
        exit(1);
    }
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_keylog_callback(cctx, keylog_cb);
    for (i = 0; i < 3; i++) {
        long_cipher[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
        if (long_cipher[i] == NULL) {
            fprintf(stderr, "fuzz_tls: no %s\n", suites[i].cipher);
            exit(1);
        }
    }
    for (i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 131 + 7);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t read_caps[4] = {sizeof(rbuf), 1, 7, 1000};
    static const size_t take_caps[4] = {sizeof(back), 1, 5, 300};
    struct input in = {data, size};
    struct run *r = &run;
    unsigned b0;

    if (size == 0)
        return 0;
    memset(r, 0, sizeof(*r));
    b0 = next_byte(&in);
    r->suite = &suites[(b0 & 3) % 3];
    r->read_cap = read_caps[(b0 >> 2) & 3];
    r->echo = (b0 >> 4) & 3;
    r->take_cap = take_caps[(b0 >> 6) & 3];
    handshake(r);

    while (in.n > 0 && r->n_fx < FX_MAX && r->total < TOTAL_MAX)
        step(r, &in, next_byte(&in));
    flush(r, -1, false);
    drain(r, false);
    /* fnproxy closes with close_notify: it must open too. */
    if (!r->failed) {
        CHECK(tls_shutdown(r->s) == 0, "tls_shutdown");
        r->shutdown = true;
        take(r);
        compare(r);
    }

    tls_conn_free(r->s);
    r->s = NULL;
    tlsrec_release(&r->cli);
    return 0;
}
