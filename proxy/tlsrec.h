/*
 * tlsrec.h - TLS 1.3 record protection (RFC 8446 §5.2) and key updates
 * (§7.2), for a server connection whose handshake OpenSSL has finished.
 *
 * Why: an idle TLS 1.3 connection kept in OpenSSL costs about 13 KiB (the
 * SSL object alone is 7.6 KiB), which makes TLS connections ten times
 * heavier than plain ones. Once the handshake is done, all a TLS 1.3
 * connection needs is two traffic secrets, the AEAD keys and nonces derived
 * from them and two sequence numbers: struct tlsrec, a few hundred bytes.
 * tls.c hands a finished TLS 1.3 server connection over to it and frees the
 * SSL (TLS 1.2 connections and clients stay in OpenSSL).
 *
 * This module only seals and opens records and updates keys; what the
 * records mean (alerts, KeyUpdate messages) is tls.c's business. The AEAD
 * work uses one pair of cipher contexts per thread, re-keyed only when the
 * next record belongs to another connection, so no connection holds one.
 */
#ifndef FNPROXY_TLSREC_H
#define FNPROXY_TLSREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSREC_HEADER 5
#define TLSREC_TAG 16
#define TLSREC_MAX_PLAIN 16384
/* What sealing adds to the plaintext: header, inner content type, tag. */
#define TLSREC_OVERHEAD (TLSREC_HEADER + 1 + TLSREC_TAG)
/* The largest ciphertext length a record header may announce (§5.2). */
#define TLSREC_MAX_CIPHER (TLSREC_MAX_PLAIN + 256)
#define TLSREC_MAX_SECRET 48

/* Content types (§5.1). */
#define TLSREC_ALERT 21
#define TLSREC_HANDSHAKE 22
#define TLSREC_APPDATA 23

/* Alert descriptions (§6) that tlsrec_open returns negated. */
#define TLSREC_AD_UNEXPECTED_MESSAGE 10
#define TLSREC_AD_BAD_RECORD_MAC 20
#define TLSREC_AD_RECORD_OVERFLOW 22
#define TLSREC_AD_ILLEGAL_PARAMETER 47
#define TLSREC_AD_DECODE_ERROR 50
#define TLSREC_AD_INTERNAL_ERROR 80

/* One direction's keys. */
struct tlsrec_dir {
    uint64_t seq;
    uint64_t key_id; /* unique per keying: tells a thread's cipher context whose key it holds */
    uint8_t secret[TLSREC_MAX_SECRET];
    uint8_t key[32];
    uint8_t iv[12];
};

struct tlsrec {
    uint8_t suite;      /* index into tlsrec.c's table of the three TLS 1.3 suites */
    uint16_t max_plain; /* the most content one sealed record may carry: TLSREC_MAX_PLAIN,
                         * or less when the peer asked for max_fragment_length */
    struct tlsrec_dir rd, wr;
};

/* The length of the traffic secrets of the TLS 1.3 suite with this IANA id
 * (0x1301 TLS_AES_128_GCM_SHA256, 0x1302, 0x1303); 0 if it is not one. */
size_t tlsrec_secret_len(uint16_t suite_id);

/* Keys r from the current traffic secrets (secret_len bytes each). write_seq
 * counts the records already sent under write_secret (session tickets).
 * 0, or -EINVAL (unknown suite, wrong length) or -EPROTO (crypto failure). */
int tlsrec_init(struct tlsrec *r, uint16_t suite_id, const uint8_t *read_secret,
                const uint8_t *write_secret, size_t secret_len, uint64_t write_seq);

/* Wipes the keys, the calling thread's cipher contexts' copies included. */
void tlsrec_release(struct tlsrec *r);

/* How many records one write key may seal before it must be updated
 * (RFC 8446 §5.5): 2^23 for AES-GCM, well below its limit of about 2^24.5
 * full records; 2^60 for ChaCha20-Poly1305, whose limit is beyond what a
 * sequence number reaches. */
uint64_t tlsrec_rekey_after(const struct tlsrec *r);

/* Whether the calling thread's cipher contexts still hold r's keys (tests:
 * after tlsrec_release, of a copy taken before it, they must not). */
bool tlsrec_thread_holds(const struct tlsrec *r);

/* Seals len (<= TLSREC_MAX_PLAIN) bytes of content type `type` into out,
 * which has room for len + TLSREC_OVERHEAD bytes. Returns the record's size,
 * or <0 (-EPROTO: crypto failure; -EOVERFLOW: the sequence number ran out). */
int tlsrec_seal(struct tlsrec *r, uint8_t type, const void *plain, size_t len, uint8_t *out);

/* Opens the record at the start of buf (avail bytes), decrypting it in
 * place. Returns 0 when the record is not complete yet; the record's whole
 * size when it was opened, with its content type in *type and its plaintext
 * at buf + TLSREC_HEADER, *plain_len bytes; or the negated alert to send. */
int tlsrec_open(struct tlsrec *r, uint8_t *buf, size_t avail, uint8_t *type, size_t *plain_len);

/* Moves one direction to its next traffic secret (KeyUpdate, §7.2). */
int tlsrec_update(struct tlsrec *r, struct tlsrec_dir *d);

/* Frees the calling thread's cipher contexts (at thread exit). */
void tlsrec_thread_done(void);

#endif
