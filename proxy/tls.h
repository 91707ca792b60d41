/*
 * tls.h - the TLS engine: OpenSSL driven over memory, never over a socket.
 *
 * A tls_conn takes ciphertext the caller received (tls_feed), gives back
 * plaintext (tls_read) and ciphertext to send (tls_pending/tls_take), and
 * encrypts what the caller wants to send (tls_write). It never reads or
 * writes a file descriptor and knows nothing of libuv, so the transport glue
 * decides when to read, write and time out, and two engines can handshake in
 * memory in a unit test (STYLE.md, evt-tls's and h2o's shape).
 *
 * The caller's loop, on either side:
 *
 *     on bytes from the socket:  tls_feed() them (it may take fewer: feed the
 *                                rest after reading), then tls_read() until
 *                                it returns 0 or less;
 *     to send plaintext:         tls_write();
 *     after ANY call:            while tls_pending(), tls_take() and send it
 *                                (handshake messages, alerts, tickets and
 *                                close_notify appear there too);
 *     on a negative return:      send what is pending (the fatal alert tells
 *                                the peer why), then close; tls_error() and
 *                                tls_failure() say why, for logs and metrics.
 *
 * A TLS 1.3 server connection is handed from OpenSSL to fnproxy's own
 * record layer (tlsrec.h) once its handshake is done; nothing here changes
 * for the caller, except that an idle one then holds a few hundred bytes.
 *
 * Contexts (struct tls_ctx) hold certificates, verification settings,
 * session-ticket keys and the client session cache. They are immutable once
 * made, except for those internal caches, are shared by all worker threads,
 * and are reference-counted: a reload builds a new context for new
 * connections while open ones keep the context they started with.
 *
 * Return codes reuse errno values so that they read like libuv's UV_E* codes
 * (on Linux UV_EAGAIN == -EAGAIN, UV_EOF == -4095, UV_EPROTO == -EPROTO).
 */
#ifndef FNPROXY_TLS_H
#define FNPROXY_TLS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_E_AGAIN (-EAGAIN)   /* handshake in progress: feed more, send what is pending */
#define TLS_E_CLOSED (-4095)    /* the peer sent close_notify (== UV_EOF) */
#define TLS_E_PROTO (-EPROTO)   /* handshake or record failure; tls_error() says why */
#define TLS_E_NOMEM (-ENOMEM)   /* out of memory */
#define TLS_E_INVAL (-EINVAL)   /* a call that makes no sense in this state */
#define TLS_E_SHUTDOWN (-EPIPE) /* tls_write after tls_shutdown */

/* How much ciphertext a connection buffers at most, each way: tls_feed takes
 * no more than TLS_IN_MAX unread bytes and tls_write stops taking plaintext
 * while TLS_OUT_MAX bytes wait for tls_take. What a peer makes the engine
 * send without being asked (KeyUpdate answers, OpenSSL's alerts) is bounded
 * by the caller: it stops feeding while more than TLS_OUT_MAX bytes wait
 * (xprt.c does), so a peer that sends and never reads holds at most
 * TLS_IN_MAX + 2 * TLS_OUT_MAX bytes of a connection's buffers. */
#define TLS_IN_MAX (64 * 1024)
#define TLS_OUT_MAX (64 * 1024)

/* Records a TLS 1.3 peer may send in a row that carry nothing (RFC 8446
 * leaves them unbounded): application data records with no content, padded
 * or not (OpenSSL's limit too), and user_canceled warning alerts. One more
 * is refused with unexpected_message. A record with content resets both. */
#define TLS_MAX_EMPTY_RECORDS 32
#define TLS_MAX_WARNING_ALERTS 5

/* Session lifetime and ticket-key rotation (server). New tickets are sealed
 * with the newest of TLS_TICKET_KEYS keys; a key is made every
 * TLS_TICKET_ROTATE_S and the oldest dropped, so a ticket stays usable for
 * its whole TLS_SESSION_LIFETIME_S and no key lives longer than
 * TLS_TICKET_KEYS * TLS_TICKET_ROTATE_S. */
#define TLS_SESSION_LIFETIME_S 7200
#define TLS_TICKET_ROTATE_S 3600
#define TLS_TICKET_KEYS 3

/* Why a connection failed: a bounded set, fit for a metric label
 * (tls_failure_name()); tls_error() has the human details. */
enum tls_failure {
    TLS_FAIL_NONE = 0,
    TLS_FAIL_PLAIN_HTTP, /* the peer spoke plain HTTP to a TLS port */
    TLS_FAIL_NOT_TLS,    /* the bytes were not TLS at all */
    TLS_FAIL_VERSION,    /* no TLS version both sides accept */
    TLS_FAIL_CIPHER,     /* no cipher suite or group both sides accept */
    TLS_FAIL_SNI,        /* unknown server name (sni_strict) */
    TLS_FAIL_ALPN,       /* the client offered ALPN protocols, none of them http/1.1 */
    TLS_FAIL_NO_CERT,    /* client certificate required, none sent */
    TLS_FAIL_VERIFY,     /* we rejected the peer's certificate */
    TLS_FAIL_PEER_ALERT, /* the peer aborted with an alert (it rejected us, say) */
    TLS_FAIL_CLOSED,     /* close_notify in the middle of the handshake */
    TLS_FAIL_PROTOCOL,   /* any other protocol error */
    TLS_FAIL_INTERNAL,   /* out of memory, or an OpenSSL failure not caused by the peer */
    TLS_FAIL__N
};

/* Why a connection failed after its handshake: a bounded set, fit for a
 * metric label (tls_record_error_name()). The first five are the alert
 * fnproxy sent; the caps above send unexpected_message but are told apart. */
enum tls_record_error {
    TLS_REC_NONE = 0,
    TLS_REC_BAD_RECORD_MAC,     /* a record did not authenticate */
    TLS_REC_RECORD_OVERFLOW,    /* a record longer than TLS allows */
    TLS_REC_UNEXPECTED_MESSAGE, /* a record or message not allowed here */
    TLS_REC_DECODE_ERROR,       /* a malformed message */
    TLS_REC_ILLEGAL_PARAMETER,  /* a field with a value not allowed */
    TLS_REC_EMPTY_RECORDS,      /* more than TLS_MAX_EMPTY_RECORDS in a row */
    TLS_REC_WARNING_ALERTS,     /* more than TLS_MAX_WARNING_ALERTS in a row */
    TLS_REC_PEER_ALERT,         /* the peer sent a fatal alert */
    TLS_REC_PROTOCOL,           /* any other protocol error (OpenSSL's record layer) */
    TLS_REC_INTERNAL,           /* out of memory, or a crypto failure */
    TLS_REC__N
};

struct tls_ctx;
struct tls_conn;
struct tlsrec;

struct tls_cert_file {
    const char *cert_file; /* PEM: the certificate, then its chain (no root needed) */
    const char *key_file;  /* PEM private key, not passphrase-protected */
};

struct tls_server_opts {
    const struct tls_cert_file *certificates; /* [0] is the default certificate */
    size_t n_certificates;
    const char *client_ca;         /* PEM CA bundle; NULL: no client certificates asked */
    int min_version;               /* 12 or 13 (TLS 1.2 / 1.3); 0 means 12 */
    bool sni_strict;               /* refuse a server name no certificate has */
    uint32_t handshake_timeout_ms; /* kept for the transport (tls_ctx_handshake_timeout_ms) */
};

struct tls_client_opts {
    const char *ca_file;   /* PEM CA bundle to verify servers; NULL: the system store */
    const char *cert_file; /* optional client certificate (mTLS to the peer) ... */
    const char *key_file;  /* ... and its key */
    int min_version;       /* 12 or 13; 0 means 12 */
    int max_version;       /* 12 or 13; 0 means 13 */
};

/* Contexts. NULL on failure, with a one-line reason naming the file in err,
 * e.g. "certs/out/server.key: key does not match certificate
 * certs/out/server.crt". The new context holds one reference. */
struct tls_ctx *tls_server_ctx_new(const struct tls_server_opts *opts, char *err, size_t errlen);
struct tls_ctx *tls_client_ctx_new(const struct tls_client_opts *opts, char *err, size_t errlen);
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);
void tls_ctx_unref(struct tls_ctx *ctx);
uint32_t tls_ctx_handshake_timeout_ms(const struct tls_ctx *ctx);

/* Starts a new ticket key now, as the timer would (tests, or an operator who
 * wants old tickets gone sooner). */
void tls_ctx_rotate_ticket_keys(struct tls_ctx *ctx);

/* A connection over ctx, which it references until tls_conn_free. On a client
 * context server_name is required: a DNS name is sent as SNI and checked
 * against the certificate; an IP literal (brackets allowed) is checked against
 * the certificate's IP SANs and sends no SNI (RFC 6066). It also keys the
 * session cache, so the next connection to that name resumes. Servers pass
 * NULL. NULL on failure (out of memory, or a client without a name). */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *server_name);
void tls_conn_free(struct tls_conn *c);

/* Ciphertext from the peer. Returns how many bytes were taken (fewer than len
 * when TLS_IN_MAX bytes are already waiting: call tls_read first), or <0. */
int tls_feed(struct tls_conn *c, const char *cipher, size_t len);

/* Advances the handshake: 0 done, TLS_E_AGAIN in progress, <0 failed. In
 * TLS 1.3 a client is done before the server has checked the client's
 * certificate: a refusal arrives as an alert at the next tls_read. */
int tls_handshake(struct tls_conn *c);

/* Plaintext from the peer, driving the handshake first if needed: >0 bytes,
 * 0 when more ciphertext is needed, TLS_E_CLOSED on close_notify, <0 on
 * failure. Call it until it returns <=0: a record can hold more than cap. */
int tls_read(struct tls_conn *c, char *plain, size_t cap);

/* Encrypts plaintext for the peer; returns how many bytes were taken (0 while
 * TLS_OUT_MAX ciphertext waits for tls_take), TLS_E_AGAIN before the
 * handshake is done, or <0. */
int tls_write(struct tls_conn *c, const char *plain, size_t len);

/* Ciphertext waiting to be sent, and taking it (returns bytes copied). */
size_t tls_pending(const struct tls_conn *c);
size_t tls_take(struct tls_conn *c, char *out, size_t cap);

/* The same without the copy: tls_peek points at all the pending ciphertext
 * (valid until the next call on c), tls_consume drops the first n bytes of
 * it once they are sent. */
size_t tls_peek(const struct tls_conn *c, const char **data);
void tls_consume(struct tls_conn *c, size_t n);

/* Queues close_notify (send what is pending afterwards). 0, or <0. A peer's
 * close_notify is not answered by the engine, since the caller may still
 * have an answer to send (RFC 8446 §6.1 allows a half-closed connection):
 * the caller calls this before it closes. */
int tls_shutdown(struct tls_conn *c);

bool tls_handshake_done(const struct tls_conn *c);
bool tls_resumed(const struct tls_conn *c);
const char *tls_version(const struct tls_conn *c); /* "TLSv1.3"; NULL before the handshake */
const char *tls_alpn(const struct tls_conn *c);    /* "http/1.1" or NULL */
const char *tls_sni(const struct tls_conn *c);     /* name sent (client) or received (server) */

/* The identity in the peer's verified certificate: its first URI SAN, else
 * its first DNS SAN, else its subject CN. Only printable ASCII without spaces
 * is accepted, since it goes into a header. Returns its length (written to
 * out with a NUL), 0 when there is none or it was not verified, -ENOSPC when
 * cap is too small, -EINVAL when the name holds other bytes. */
int tls_peer_identity(const struct tls_conn *c, char *out, size_t cap);

/* Why the connection failed: a short sentence, e.g. "certificate verify
 * failed: certificate has expired"; "" while nothing failed. */
const char *tls_error(const struct tls_conn *c);
enum tls_failure tls_failure(const struct tls_conn *c);
const char *tls_failure_name(enum tls_failure f); /* "plain_http", "verify", ... */

/* Why a connection that had finished its handshake failed; TLS_REC_NONE
 * while it has not, or when it failed during the handshake. */
enum tls_record_error tls_record_error(const struct tls_conn *c);
const char *tls_record_error_name(enum tls_record_error e); /* "bad_record_mac", ... */

/* The record layer of a TLS 1.3 server connection after its handshake, NULL
 * while OpenSSL has it: for tests, which set sequence numbers through it. */
struct tlsrec *tls_rec(struct tls_conn *c);

#endif
