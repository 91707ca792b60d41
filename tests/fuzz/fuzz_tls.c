/*
 * fuzz_tls.c - libFuzzer target for the TLS 1.3 record layer that a server
 * connection switches to after its handshake (tls.c's rec_* over tlsrec).
 *
 * Random bytes would all fail the AEAD and explore nothing, so every input
 * starts with a real handshake, in memory, between a bare OpenSSL client and
 * a server tls_conn. The client's key log gives the application traffic
 * secrets, which key a client-side tlsrec: from then on the input is a
 * script of records that the client seals (any inner content type, padding,
 * alerts, key updates whole or split over records, runs of records that
 * carry nothing, records longer than TLS allows), corrupts (tampered,
 * replayed, dropped) or sends unsealed, fed to the server in pieces; the
 * server echoes some of what it reads, may write or close on its own, and
 * its caller may stop taking its output for a while.
 *
 * A model predicts what the server must do (RFC 8446 §5.1-5.5, §6, §4.6.3,
 * with the alerts and limits tls.c documents), so that findings are not only
 * crashes, sanitizer reports and leaks. Its rules:
 *
 *   - Records are judged in wire order by a view of the client's stream
 *     that keeps what the server must remember between records: a KeyUpdate
 *     may be split over handshake records (a zero-length one, a first byte
 *     other than 24, or any other record type while a message is partial:
 *     unexpected_message; a length other than 1 once the 4-byte header is
 *     whole: decode_error; bytes after the 5-byte message in its record:
 *     unexpected_message; request_update > 1: illegal_parameter); at most
 *     TLS_MAX_EMPTY_RECORDS application data records without content and
 *     TLS_MAX_WARNING_ALERTS user_canceled alerts in a row (one more:
 *     unexpected_message), both counts reset only by a record with content.
 *   - The server's output is predicted record by record, in order, and
 *     every record it sends must be the next one predicted: application data
 *     in records of at most max_plain bytes (16384; 512 when the client asked
 *     for max_fragment_length), alerts, close_notify, and KeyUpdates. Those
 *     follow tls.c's rules: a client's update_requested makes the server owe
 *     one KeyUpdate(update_not_requested); it is sealed at once when nothing
 *     waits in the server's output, else when a tls_take/tls_consume empties
 *     it or before the next application data record, whichever is first;
 *     requests that arrive while one is owed are covered by it, as are
 *     those that arrive while a KeyUpdate of the server's waits untaken in
 *     its output; none is sealed after the server's own close_notify or its
 *     failure. The server also rekeys on its own: before an application data
 *     record, when its write sequence number + 1 reaches 2^23 (AES-GCM) or
 *     2^60 (ChaCha20). So at most one answer waits at a time: a client that
 *     floods requests and never reads makes one answer wait, not one per
 *     request. Independently of that prediction, the KeyUpdates the client
 *     opens (those not at the rekey limit) are never more than the requests
 *     the server read, and after a request no application data sealed later
 *     comes before a KeyUpdate the caller had not taken when the request was
 *     read (§4.6.3).
 *   - Since answers depend on when the server reads a request, the model
 *     applies a record when the server has read it: after a tls_read that
 *     returned 0 or less, every record fed; after one that returned
 *     plaintext, the records up to the one that plaintext came from.
 *
 * The target abort()s when the plaintext tls_read returns is not exactly the
 * application data sealed before the first bad record, when the server
 * closes or fails at the wrong record, with the wrong alert, tls_failure,
 * tls_record_error or tls_error, or stops failing, when anything it sends
 * does not open under the client's keys or is not the record predicted,
 * when tls_pending or tls_write's count differs from the prediction, and
 * when its write sequence number (tls_rec) drifts from the model's.
 * `make fuzz`, and a short run in `make test`; run from the repository root
 * (certificates go to build/fuzz/certs).
 *
 * Input: byte 0 picks the suite (3: AES-128-GCM with max_fragment_length
 * 512), the tls_read and tls_take buffer sizes and the echo; the rest is
 * ops, [op][arguments], listed at OP_* below. A missing byte reads as 0, a
 * missing payload byte as a fixed pattern, so a short input can still ask
 * for a long record.
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
#define FX_MAX 8192            /* effects per input (an op makes at most RUN_MAX) */
#define ECHO_MAX (128 * 1024)
#define OUT_QUEUE 4096 /* server records predicted, not opened: TLS_OUT_MAX / 23, and some */
#define RUN_MAX 63     /* records an OP_RUN makes */

/* Ops: the low four bits pick one, the flags are for ops that add to the
 * wire. Lengths are one byte, two (big-endian) with BIG. */
enum {
    OP_DATA,      /* [len][payload]: sealed application data */
    OP_RECORD,    /* [type][len][payload][pad]: sealed payload || type || pad zeros */
    OP_ALERT,     /* [level][description]: sealed alert */
    OP_KEYUPDATE, /* [arg]: sealed KeyUpdate, update_requested when arg & 1, cut into records
                   * after its byte k (1-4) for each bit k of arg; arg & 0x20: the last piece
                   * is not sent (the message stays partial) */
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
    OP_RUN,       /* [count][mode]: count % 64 records that carry nothing: mode & 3 picks empty
                   * application data, user_canceled, both in turn, or empty application data
                   * with a KeyUpdate (not requested) every fourth; mode >> 2 pads them */
    OP_REKEY,     /* [k]: the server's write and the client's read sequence numbers jump to
                   * 1 + k % 8 records short of the suite's rekey limit (when nothing waits) */
    OP_STALL,     /* the caller stops taking the server's output, or takes it again */
};
#define F_HOLD 0x10  /* keep the record: feed it with the next one */
#define F_SPLIT 0x20 /* [split]: feed what is held in two pieces, cut at split/256 */
#define F_BIG 0x40   /* two-byte lengths */
#define F_LAZY 0x80  /* call tls_read once only: feed more with plaintext unread */

static const struct suite {
    const char *name;
    uint16_t id;
    const char *cipher;
    uint64_t rekey_after; /* records per write key (§5.5): the server rekeys at this count */
} suites[3] = {
    {"TLS_AES_128_GCM_SHA256", 0x1301, "AES-128-GCM", 1ull << 23},
    {"TLS_AES_256_GCM_SHA384", 0x1302, "AES-256-GCM", 1ull << 23},
    {"TLS_CHACHA20_POLY1305_SHA256", 0x1303, "ChaCha20-Poly1305", 1ull << 60},
};

/* What the server must do once it has a record whole (or, for a header it
 * must refuse, its first five bytes). */
enum fx_kind {
    FX_DATA,    /* deliver its plaintext: stream[..stream_end) */
    FX_NOTHING, /* a record that carries nothing, or part of a KeyUpdate */
    FX_UPDATE,  /* KeyUpdate, update_not_requested */
    FX_UPDATE_REQ,
    FX_CLOSE,     /* close_notify */
    FX_FAIL,      /* fatal, with our alert `alert` and tls_record_error `rec_err` */
    FX_PEER_FAIL, /* the client's fatal alert: no alert back */
    FX_POISON,    /* unsealed bytes: from here on, no plaintext, no close */
};

struct effect {
    uint64_t pos; /* wire offset at which it happens */
    size_t stream_end;
    uint8_t kind, alert, rec_err;
};

enum { ST_ALIVE, ST_CLOSED, ST_FAILED, ST_POISONED };

/* What the server must remember of the client's records between them, as
 * the model sees it (§5.1: a handshake message may span records). */
struct peer_view {
    uint8_t hs[5];   /* the KeyUpdate message so far */
    uint8_t hs_len;  /* bytes in hs */
    unsigned empty;  /* application data records without content in a row */
    unsigned cancel; /* user_canceled alerts in a row */
};

/* One record the server must send, in order. */
enum { OUT_ANSWER, OUT_REKEY }; /* why a KeyUpdate */
#define OUT_ANY_ALERT 0xff      /* a fatal alert whose description the model cannot know */
struct out_rec {
    uint8_t type; /* TLSREC_APPDATA, _ALERT (fatal), _HANDSHAKE (KeyUpdate), or 0: close_notify */
    uint8_t what; /* the alert, or OUT_ANSWER / OUT_REKEY */
    uint16_t len; /* content bytes */
};

struct run {
    struct tls_conn *s;
    struct tlsrec cli; /* the client's keys: rd opens the server's records */
    const struct suite *suite;
    size_t max_plain; /* the most content a server record may carry */
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
    struct peer_view view;

    /* the model: what the server read */
    struct effect fx[FX_MAX];
    size_t n_fx, fx_next; /* fx[..fx_next) the server has read */
    int state;
    uint8_t want_alert, want_rec;
    bool peer_failed;
    size_t accepted; /* plaintext the server must have returned */
    bool shutdown;   /* tls_shutdown succeeded */
    bool stalled;    /* OP_STALL: the caller takes nothing */

    /* the model: what the server sends */
    struct out_rec q[OUT_QUEUE];
    size_t q_head, q_tail; /* q[q_head, q_tail): sealed, not opened by the client yet */
    size_t q_bytes;        /* their size on the wire */
    uint64_t out_total;    /* bytes the server sealed since the hand-over */
    uint64_t wseq;         /* the server's write sequence number */
    bool owed;             /* a KeyUpdate answer not sealed yet */
    uint64_t ku_end;       /* out_total at the end of the server's last KeyUpdate */
    bool any_alert;        /* the alert after unsealed bytes is in q */

    /* checks that do not rely on that prediction */
    unsigned requests;  /* update_requested the server read, while it was alive */
    unsigned answers;   /* KeyUpdates opened that were not at the rekey limit */
    int64_t request_at; /* out_total when the server read the last request, -1: none */
    uint64_t request_taken; /* ... and the bytes the caller had taken by then */
    int64_t update_at;  /* where the last KeyUpdate opened started, -1: none */
    uint64_t opened;    /* server bytes the client opened */

    /* what the server did */
    size_t rx; /* plaintext tls_read returned */
    int rc;    /* the last tls_read at a full drain */
    bool failed, closed, lazy;
    size_t echo_len;
    size_t back_len; /* ciphertext taken, not opened yet */
    size_t sent_len; /* plaintext tls_write took */
    size_t got;      /* of which the client opened */
    unsigned pieces; /* tls_take calls and tls_peek/tls_consume pairs, in turn */
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

/* ---- the model of what the server sends --------------------------------- */

static const char *out_name(const struct out_rec *o)
{
    static char buf[64];

    switch (o->type) {
    case TLSREC_APPDATA:
        snprintf(buf, sizeof(buf), "application data (%u bytes)", o->len);
        return buf;
    case TLSREC_HANDSHAKE:
        return o->what == OUT_ANSWER ? "a KeyUpdate answer" : "a KeyUpdate (rekey)";
    case TLSREC_ALERT:
        snprintf(buf, sizeof(buf), "fatal alert %u", o->what);
        return buf;
    default:
        return "close_notify";
    }
}

/* Bytes the server has sealed and the caller not taken, as predicted. */
static size_t srv_pending(const struct run *r)
{
    return r->q_bytes - r->back_len;
}

/* The server seals a record: it joins what the client must open next. */
static void srv_seal(struct run *r, uint8_t type, uint8_t what, size_t len)
{
    struct out_rec *o;

    CHECK(r->q_tail < OUT_QUEUE, "the model predicts more than %d records waiting", OUT_QUEUE);
    o = &r->q[r->q_tail++];
    o->type = type;
    o->what = what;
    o->len = (uint16_t)len;
    r->q_bytes += len + TLSREC_OVERHEAD;
    r->out_total += len + TLSREC_OVERHEAD;
    /* A KeyUpdate is the last record under its key (§4.6.3). */
    r->wseq = type == TLSREC_HANDSHAKE ? 0 : r->wseq + 1;
}

static void srv_key_update(struct run *r, uint8_t why)
{
    srv_seal(r, TLSREC_HANDSHAKE, why, 5);
    r->owed = false;
    r->ku_end = r->out_total;
}

/* Whether the server, which owes an answer, may seal it now: not after its
 * failure or its close_notify. */
static bool srv_may_answer(const struct run *r)
{
    return r->state != ST_FAILED && !(r->state == ST_POISONED && r->failed) && !r->shutdown;
}

/* tls_write took n bytes: the records it seals. */
static void srv_write(struct run *r, size_t n)
{
    size_t off, chunk;

    for (off = 0; off < n; off += chunk) {
        if (r->owed || r->wseq + 1 >= r->suite->rekey_after)
            srv_key_update(r, r->owed ? OUT_ANSWER : OUT_REKEY);
        chunk = n - off < r->max_plain ? n - off : r->max_plain;
        srv_seal(r, TLSREC_APPDATA, 0, chunk);
    }
}

/* ---- what the server sends ---------------------------------------------- */

static void server_record(struct run *r, uint8_t type, const uint8_t *p, size_t len)
{
    static const uint8_t key_update[5] = {24, 0, 0, 1, 0};
    const struct out_rec *o;
    uint64_t at = r->opened;
    size_t size = len + TLSREC_OVERHEAD;

    CHECK(!r->fatal_seen, "the server sent a record (type %u) after its fatal alert", type);
    if (r->handshaking) { /* the session ticket OpenSSL sent */
        CHECK(type == TLSREC_HANDSHAKE && len >= 4 && p[0] == 4 &&
                  ((size_t)p[1] << 16 | p[2] << 8 | p[3]) == len - 4,
              "a record other than NewSessionTicket at the end of the handshake");
        return;
    }
    CHECK(r->q_head < r->q_tail, "the server sent a record (type %u, %zu bytes) not predicted",
          type, len);
    o = &r->q[r->q_head];
    r->q_head++;
    r->q_bytes -= o->len + TLSREC_OVERHEAD;
    r->opened += size;
    switch (type) {
    case TLSREC_APPDATA:
        CHECK(o->type == TLSREC_APPDATA && o->len == len,
              "application data of %zu bytes from the server, %s expected", len, out_name(o));
        CHECK(!r->close_seen, "application data after the server's close_notify");
        CHECK(r->got + len <= r->sent_len && memcmp(sent + r->got, p, len) == 0,
              "the client opened %zu bytes of application data at %zu that the server was not "
              "given (%zu written)",
              len, r->got, r->sent_len);
        CHECK(len <= r->max_plain, "a record of %zu bytes, over the %zu negotiated", len,
              r->max_plain);
        /* §4.6.3: after a request, a KeyUpdate before any application data
         * sealed later: one the caller had not taken when the request was
         * read (the server was silent since). */
        CHECK(r->request_at < 0 || (int64_t)at < r->request_at ||
                  (r->update_at >= 0 &&
                   (uint64_t)r->update_at + TLSREC_OVERHEAD + 5 > r->request_taken),
              "application data at %llu before a KeyUpdate answering the request read at %lld",
              (unsigned long long)at, (long long)r->request_at);
        r->got += len;
        break;
    case TLSREC_ALERT:
        CHECK(len == 2, "an alert of %zu bytes from the server", len);
        if (p[0] == 1 && p[1] == 0) {
            CHECK(o->type == 0, "close_notify from the server, %s expected", out_name(o));
            CHECK(r->shutdown && !r->close_seen, "close_notify the server was not asked for");
            r->close_seen = true;
        } else {
            CHECK(p[0] == 2, "a non-fatal alert (%u, %u) from the server", p[0], p[1]);
            CHECK(o->type == TLSREC_ALERT && (o->what == p[1] || o->what == OUT_ANY_ALERT),
                  "fatal alert %u from the server, %s expected", p[1], out_name(o));
            r->fatal_seen = true;
            r->fatal_desc = p[1];
        }
        break;
    case TLSREC_HANDSHAKE: {
        uint64_t seq = r->cli.rd.seq - 1; /* the one it was sealed under */

        CHECK(len == sizeof(key_update) && memcmp(p, key_update, len) == 0,
              "a handshake record of %zu bytes (type %u) other than KeyUpdate", len,
              len > 0 ? p[0] : 0);
        CHECK(o->type == TLSREC_HANDSHAKE, "a KeyUpdate from the server, %s expected", out_name(o));
        CHECK(!r->close_seen, "KeyUpdate after the server's close_notify");
        if (seq + 1 < r->suite->rekey_after) { /* not its own rekey: an answer */
            r->answers++;
            CHECK(r->answers <= r->requests, "%u KeyUpdates for %u requests", r->answers,
                  r->requests);
        }
        r->update_at = (int64_t)at;
        /* Its later records are under the next server secret. */
        CHECK(tlsrec_update(&r->cli, &r->cli.rd) == 0, "tlsrec_update");
        break;
    }
    default:
        violation("a record of content type %u from the server", type);
    }
}

/* One piece of the server's output: tls_take and tls_peek + tls_consume in
 * turn, as callers use both. */
static size_t take_piece(struct run *r, uint8_t *dst, size_t cap)
{
    const char *p;
    size_t n;

    if (!(r->pieces++ & 1))
        return tls_take(r->s, (char *)dst, cap);
    n = tls_peek(r->s, &p);
    if (n > cap)
        n = cap;
    if (n > 0) {
        memcpy(dst, p, n);
        tls_consume(r->s, n);
    }
    return n;
}

/* Takes what the server has to send, in take_cap pieces, and opens it as
 * the client would: all of it must open, in whole records, and be what the
 * model predicted. */
static void take(struct run *r)
{
    size_t n, off;
    uint8_t type;
    int k;

    if (r->stalled)
        return;
    /* The take that empties the output seals an owed answer after it. */
    if (r->owed && srv_pending(r) > 0 && srv_may_answer(r))
        srv_key_update(r, OUT_ANSWER);
    for (;;) {
        size_t cap = sizeof(back) - r->back_len;

        n = take_piece(r, back + r->back_len, cap < r->take_cap ? cap : r->take_cap);
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
    CHECK(r->q_head == r->q_tail, "the server did not send %s (and %zu more records)",
          out_name(&r->q[r->q_head]), r->q_tail - r->q_head - 1);
    r->q_head = r->q_tail = 0;
}

/* tls_write until all of p is taken, the output is full (stalled), or the
 * failure the model expects. */
static void server_write(struct run *r, const uint8_t *p, size_t len)
{
    size_t pending, room, want;
    int n;

    if (len > SENT_MAX - r->sent_len)
        len = SENT_MAX - r->sent_len;
    while (len > 0) {
        pending = tls_pending(r->s);
        CHECK(pending == srv_pending(r), "%zu bytes wait in the server, %zu predicted", pending,
              srv_pending(r));
        room = pending < TLS_OUT_MAX ? TLS_OUT_MAX - pending : 0;
        want = len < room ? len : room;
        n = tls_write(r->s, (const char *)p, len);
        if (r->failed) {
            CHECK(n == TLS_E_PROTO, "tls_write after a failure: %d", n);
            return;
        }
        if (r->shutdown) {
            CHECK(n == TLS_E_SHUTDOWN, "tls_write after tls_shutdown: %d", n);
            return;
        }
        CHECK(n >= 0 && (size_t)n == want, "tls_write(%zu) = %d with %zu bytes waiting", len, n,
              pending);
        if (n == 0) /* only when stalled: take() empties the output */
            return;
        srv_write(r, (size_t)n);
        memcpy(sent + r->sent_len, p, (size_t)n);
        r->sent_len += (size_t)n;
        p += n;
        len -= (size_t)n;
        take(r);
    }
}

static void server_shutdown(struct run *r)
{
    if (r->failed) {
        CHECK(tls_shutdown(r->s) == TLS_E_PROTO, "tls_shutdown after failing");
        return;
    }
    CHECK(tls_shutdown(r->s) == 0, "tls_shutdown");
    if (!r->shutdown) /* a second one sends nothing */
        srv_seal(r, 0, 0, 2);
    r->shutdown = true;
}

/* ---- the model of what the server reads --------------------------------- */

static struct effect fail_fx(uint8_t alert, uint8_t rec_err)
{
    return (struct effect){.kind = FX_FAIL, .alert = alert, .rec_err = rec_err};
}

static uint8_t rec_error_of(uint8_t alert)
{
    switch (alert) {
    case TLSREC_AD_BAD_RECORD_MAC:
        return TLS_REC_BAD_RECORD_MAC;
    case TLSREC_AD_RECORD_OVERFLOW:
        return TLS_REC_RECORD_OVERFLOW;
    case TLSREC_AD_DECODE_ERROR:
        return TLS_REC_DECODE_ERROR;
    case TLSREC_AD_ILLEGAL_PARAMETER:
        return TLS_REC_ILLEGAL_PARAMETER;
    case TLSREC_AD_UNEXPECTED_MESSAGE:
        return TLS_REC_UNEXPECTED_MESSAGE;
    default:
        return TLS_REC__N; /* matches no record error */
    }
}

static struct effect fail_alert(uint8_t alert)
{
    return fail_fx(alert, rec_error_of(alert));
}

/* A KeyUpdate's handshake bytes, one at a time (§4, §4.6.3): type 24, a
 * 3-byte length of 1, request_update; the message must end its record. */
static struct effect view_handshake(struct peer_view *v, const uint8_t *p, size_t len)
{
    struct effect e = {.kind = FX_NOTHING};
    size_t i;

    if (len == 0) /* no zero-length handshake fragments (§5.1) */
        return fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
    for (i = 0; i < len && e.kind == FX_NOTHING; i++) {
        v->hs[v->hs_len++] = p[i];
        if (v->hs[0] != 24) /* seen at its first byte */
            e = fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
        else if (v->hs_len == 4 && !(v->hs[1] == 0 && v->hs[2] == 0 && v->hs[3] == 1))
            e = fail_alert(TLSREC_AD_DECODE_ERROR);
        else if (v->hs_len < 5)
            continue;
        else if (i + 1 < len) /* a key change ends its record (§5.1) */
            e = fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
        else if (v->hs[4] > 1)
            e = fail_alert(TLSREC_AD_ILLEGAL_PARAMETER);
        else
            e.kind = v->hs[4] ? FX_UPDATE_REQ : FX_UPDATE;
        v->hs_len = 0; /* a whole message, or a fatal error: nothing comes after it */
    }
    return e;
}

/* What a server must make of the next record the client sends, whose
 * decrypted TLSInnerPlaintext is in[0, n): the content type is its last
 * non-zero byte (§5.4). */
static struct effect predict(struct run *r, const uint8_t *in, size_t n)
{
    struct peer_view *v = &r->view;
    struct effect e = {.kind = FX_NOTHING};
    size_t len;

    if (n > TLSREC_MAX_PLAIN + 1) /* content, type and padding: 2^14 + 1 at most */
        return fail_alert(TLSREC_AD_RECORD_OVERFLOW);
    while (n > 0 && in[n - 1] == 0)
        n--;
    if (n == 0) /* no content type at all */
        return fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
    len = n - 1;
    /* A handshake message split over records may not be interleaved with
     * other records (§5.1). */
    if (in[len] != TLSREC_HANDSHAKE && v->hs_len > 0)
        return fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
    switch (in[len]) {
    case TLSREC_APPDATA:
        if (len > 0) {
            v->empty = v->cancel = 0;
            e.kind = FX_DATA;
        } else if (++v->empty > TLS_MAX_EMPTY_RECORDS) {
            e = fail_fx(TLSREC_AD_UNEXPECTED_MESSAGE, TLS_REC_EMPTY_RECORDS);
        }
        break;
    case TLSREC_ALERT:
        if (len != 2)
            e = fail_alert(TLSREC_AD_DECODE_ERROR);
        else if (in[1] == 0)
            e.kind = FX_CLOSE;
        else if (in[1] != 90)
            e.kind = FX_PEER_FAIL;
        else if (++v->cancel > TLS_MAX_WARNING_ALERTS) /* user_canceled */
            e = fail_fx(TLSREC_AD_UNEXPECTED_MESSAGE, TLS_REC_WARNING_ALERTS);
        break;
    case TLSREC_HANDSHAKE:
        e = view_handshake(v, in, len);
        break;
    default:
        e = fail_alert(TLSREC_AD_UNEXPECTED_MESSAGE);
        break;
    }
    return e;
}

static void apply(struct run *r, const struct effect *e)
{
    if (r->state != ST_ALIVE)
        return;
    switch (e->kind) {
    case FX_DATA:
        r->accepted = e->stream_end;
        break;
    case FX_UPDATE_REQ:
        r->requests++;
        if (r->shutdown)
            break;
        r->request_at = (int64_t)r->out_total;
        r->request_taken = r->out_total - srv_pending(r);
        if (r->ku_end > r->request_taken)
            break; /* a KeyUpdate of the server's still waits unsent: it answers this one */
        r->owed = true; /* covers any request still owed */
        if (srv_pending(r) == 0)
            srv_key_update(r, OUT_ANSWER);
        break;
    case FX_CLOSE:
        r->state = ST_CLOSED;
        break;
    case FX_FAIL:
        r->state = ST_FAILED;
        r->want_alert = e->alert;
        r->want_rec = e->rec_err;
        srv_seal(r, TLSREC_ALERT, e->alert, 2);
        break;
    case FX_PEER_FAIL:
        r->state = ST_FAILED;
        r->peer_failed = true;
        r->want_rec = TLS_REC_PEER_ALERT;
        break;
    case FX_POISON:
        r->state = ST_POISONED;
        break;
    default:
        break;
    }
}

/* Applies the effects of the records the server has read, in wire order:
 * after a tls_read that returned 0 or less, every record fed; after one that
 * returned plaintext, those up to the record that plaintext came from. */
static void model_apply(struct run *r, bool all)
{
    while (r->fx_next < r->n_fx && r->fx[r->fx_next].pos <= r->fed && (all || r->accepted < r->rx))
        apply(r, &r->fx[r->fx_next++]);
    CHECK(r->accepted >= r->rx, "the server returned %zu bytes of plaintext, %zu expected", r->rx,
          r->accepted);
    /* Unsealed bytes: it may have failed, with an alert the model cannot
     * know, sealed after what it sent before. */
    if (r->state == ST_POISONED && r->failed && !r->any_alert) {
        srv_seal(r, TLSREC_ALERT, OUT_ANY_ALERT, 2);
        r->any_alert = true;
    }
}

static const char *const rec_error_text[TLS_REC__N] = {
    [TLS_REC_BAD_RECORD_MAC] = "bad record mac",
    [TLS_REC_RECORD_OVERFLOW] = "record overflow",
    [TLS_REC_UNEXPECTED_MESSAGE] = "unexpected message",
    [TLS_REC_DECODE_ERROR] = "decode error",
    [TLS_REC_ILLEGAL_PARAMETER] = "illegal parameter",
    [TLS_REC_EMPTY_RECORDS] = "too many empty records",
    [TLS_REC_WARNING_ALERTS] = "too many warning alerts",
    [TLS_REC_PEER_ALERT] = "peer sent alert: ",
};

/* tls_record_error and tls_error after a failure for reason `want`. */
static void check_failure(struct run *r, unsigned want)
{
    unsigned got = tls_record_error(r->s);
    const char *text = tls_error(r->s);

    CHECK(got == want, "tls_record_error %u (%s), %u expected", got, tls_record_error_name(got),
          want);
    if (want == TLS_REC_PEER_ALERT)
        CHECK(strncmp(text, rec_error_text[want], strlen(rec_error_text[want])) == 0,
              "tls_error \"%s\" after the client's fatal alert", text);
    else
        CHECK(strcmp(text, rec_error_text[want]) == 0, "tls_error \"%s\", \"%s\" expected", text,
              rec_error_text[want]);
}

/* The server's state and output against the model, after a full drain. */
static void compare(struct run *r)
{
    enum tls_failure f = tls_failure(r->s);
    size_t pending = tls_pending(r->s);

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
        check_failure(r, r->want_rec);
        break;
    case ST_POISONED: /* unsealed bytes: it may wait for more or fail */
        CHECK(r->rc == 0 || (r->rc == TLS_E_PROTO && f == TLS_FAIL_PROTOCOL),
              "tls_read = %d (failure %d) after unsealed bytes", r->rc, f);
        if (r->rc == TLS_E_PROTO && r->fatal_seen)
            check_failure(r, rec_error_of(r->fatal_desc));
        break;
    }
    if (!r->failed)
        CHECK(tls_record_error(r->s) == TLS_REC_NONE, "tls_record_error %u without a failure",
              tls_record_error(r->s));
    CHECK(r->rx == r->accepted, "the server returned %zu bytes of plaintext, %zu expected", r->rx,
          r->accepted);
    CHECK(pending == srv_pending(r), "%zu bytes wait in the server, %zu predicted", pending,
          srv_pending(r));
    CHECK(tls_rec(r->s)->wr.seq == r->wseq, "the server's write sequence number is %llu, not %llu",
          (unsigned long long)tls_rec(r->s)->wr.seq, (unsigned long long)r->wseq);
    if (r->stalled) /* the rest is still in the server */
        return;
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
        model_apply(r, false); /* for the KeyUpdates it may have answered already */
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
    model_apply(r, true);
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

static const struct effect bad_mac = {.kind = FX_FAIL,
                                      .alert = TLSREC_AD_BAD_RECORD_MAC,
                                      .rec_err = TLS_REC_BAD_RECORD_MAC},
                           overflow = {.kind = FX_FAIL,
                                       .alert = TLSREC_AD_RECORD_OVERFLOW,
                                       .rec_err = TLS_REC_RECORD_OVERFLOW};

/* Seals in[0, n) (payload || content type || padding) as the client would. */
static void seal(struct run *r, const uint8_t *in, size_t n)
{
    struct effect e = predict(r, in, n);
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
    struct effect e = predict(r, in, n);
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

static void handshake(struct run *r, bool mfl)
{
    struct secrets k = {0};
    SSL *ssl = SSL_new(cctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    const SSL_CIPHER *cipher;
    struct tlsrec *rec;
    char buf[16384];
    int i, n, rc = 0, rs = TLS_E_AGAIN;

    r->s = tls_conn_new(sctx, NULL);
    CHECK(ssl != NULL && rbio != NULL && wbio != NULL && r->s != NULL, "out of memory");
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_app_data(ssl, &k);
    CHECK(SSL_set_ciphersuites(ssl, r->suite->name) == 1, "SSL_set_ciphersuites");
    if (mfl) /* RFC 6066: the server's records carry 512 bytes at most */
        CHECK(SSL_set_tlsext_max_fragment_length(ssl, TLSEXT_max_fragment_length_512) == 1,
              "SSL_set_tlsext_max_fragment_length");
    r->max_plain = mfl ? 512 : TLSREC_MAX_PLAIN;
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
    rec = tls_rec(r->s);
    CHECK(rec != NULL, "no record layer after a TLS 1.3 handshake");
    CHECK(rec->max_plain == r->max_plain, "max_plain %u, %zu negotiated", rec->max_plain,
          r->max_plain);
    CHECK(rec->wr.seq == r->cli.rd.seq, "the server sealed %llu records, the client opened %llu",
          (unsigned long long)rec->wr.seq, (unsigned long long)r->cli.rd.seq);
    r->wseq = rec->wr.seq;
    r->request_at = r->update_at = -1;
}

/* ---- ops ---------------------------------------------------------------- */

/* A KeyUpdate cut into records after byte k (1-4) for each bit k of arg,
 * the last piece left out when arg & 0x20. */
static void key_update(struct run *r, unsigned arg)
{
    uint8_t msg[5] = {24, 0, 0, 1, (uint8_t)(arg & 1)};
    unsigned cuts = (arg >> 1) & 15;
    size_t from = 0, to;

    if ((arg & 0x20) && cuts == 0)
        cuts = 8; /* all but request_update */
    for (to = 1; to <= 5; to++) {
        if (to < 5 && !(cuts & (1u << (to - 1))))
            continue;
        if (to == 5 && (arg & 0x20))
            break;
        memcpy(inner, msg + from, to - from);
        inner[to - from] = TLSREC_HANDSHAKE;
        seal(r, inner, to - from + 1);
        from = to;
    }
}

/* count records that carry nothing (OP_RUN). */
static void nothing_run(struct run *r, unsigned count, unsigned mode)
{
    size_t pad, n;
    unsigned i;

    for (i = 0; i < count; i++) {
        pad = (mode >> 2) ? ((mode >> 2) * 5 + i) % 300 : 0;
        n = 0;
        switch (mode & 3) {
        case 3:
            if (i % 4 == 3) {
                memcpy(inner, "\x18\x00\x00\x01\x00", 5);
                n = 5;
                inner[n++] = TLSREC_HANDSHAKE;
                break;
            }
            /* fall through */
        case 0:
            inner[n++] = TLSREC_APPDATA;
            break;
        case 2:
            if (i & 1) {
                inner[n++] = TLSREC_APPDATA;
                break;
            }
            /* fall through */
        case 1:
            memcpy(inner, "\x01\x5a\x15", 3); /* warning, user_canceled */
            n = 3;
            break;
        }
        memset(inner + n, 0, pad);
        seal(r, inner, n + pad);
    }
}

/* OP_REKEY: the server's write sequence number (and the client's read one,
 * which follows it) to 1 + k records short of the rekey limit. */
static void near_limit(struct run *r, unsigned k)
{
    uint64_t seq = r->suite->rekey_after - 1 - k;

    if (srv_pending(r) > 0) /* records sealed under the old numbers wait */
        return;
    tls_rec(r->s)->wr.seq = seq;
    r->cli.rd.seq = seq;
    r->wseq = seq;
}

static void step(struct run *r, struct input *in, unsigned op)
{
    unsigned kind = op & 0x0f;
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
        key_update(r, next_byte(in));
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
        if (r->lazy) /* compare() needs every record read */
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
        server_shutdown(r);
        take(r);
        compare(r);
        return;
    case OP_RUN:
        len = next_byte(in) % (RUN_MAX + 1);
        nothing_run(r, (unsigned)len, next_byte(in));
        break;
    case OP_REKEY:
        near_limit(r, next_byte(in) % 8);
        return;
    case OP_STALL:
        if (r->lazy)
            drain(r, false);
        r->stalled = !r->stalled;
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
    handshake(r, (b0 & 3) == 3);

    while (in.n > 0 && r->n_fx + RUN_MAX < FX_MAX && r->total < TOTAL_MAX)
        step(r, &in, next_byte(&in));
    flush(r, -1, false);
    drain(r, false);
    r->stalled = false;
    take(r);
    compare(r);
    /* fnproxy closes with close_notify: it must open too. */
    if (!r->failed) {
        server_shutdown(r);
        take(r);
        compare(r);
    }

    tls_conn_free(r->s);
    r->s = NULL;
    tlsrec_release(&r->cli);
    return 0;
}
