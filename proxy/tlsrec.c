/*
 * tlsrec.c - TLS 1.3 record protection and key updates (see tlsrec.h).
 *
 * A record (RFC 8446 §5.2) is a 5-byte header {23, 3, 3, length} followed
 * by AEAD(plaintext || content type || zero padding), with the header as
 * additional data and the nonce the per-direction IV xor'd with the 64-bit
 * sequence number. Keys come from traffic secrets by HKDF-Expand-Label
 * (§7.1, §7.3); every output here is no longer than the hash, so HKDF-Expand
 * is a single HMAC.
 */
#include "tlsrec.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

struct tlsrec_suite {
    uint16_t id;
    uint8_t key_len;
    uint8_t secret_len;
    uint64_t rekey_after; /* records per write key (tlsrec_rekey_after) */
    const char *cipher;   /* fetched once: an implicit fetch per record would take a lock */
    const char *digest;
};

static const struct tlsrec_suite suites[] = {
    {0x1301, 16, 32, 1ull << 23, "AES-128-GCM", "SHA256"},
    {0x1302, 32, 48, 1ull << 23, "AES-256-GCM", "SHA384"},
    {0x1303, 32, 32, 1ull << 60, "ChaCha20-Poly1305", "SHA256"},
};
#define N_SUITES (sizeof(suites) / sizeof(suites[0]))

static EVP_CIPHER *ciphers[N_SUITES];
static EVP_MD *digests[N_SUITES];
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static uint64_t next_key_id; /* atomic */

/* A thread's cipher context for one operation, and whose key it holds. */
struct aead_slot {
    EVP_CIPHER_CTX *ctx;
    uint64_t key_id;
};

static __thread struct aead_slot seal_slot, open_slot;

static void fetch_algorithms(void)
{
    size_t i;

    for (i = 0; i < N_SUITES; i++) {
        ciphers[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
        digests[i] = EVP_MD_fetch(NULL, suites[i].digest, NULL);
    }
}

static int suite_index(uint16_t id)
{
    size_t i;

    pthread_once(&fetch_once, fetch_algorithms);
    for (i = 0; i < N_SUITES; i++)
        if (suites[i].id == id && ciphers[i] != NULL && digests[i] != NULL)
            return (int)i;
    return -1;
}

size_t tlsrec_secret_len(uint16_t suite_id)
{
    int s = suite_index(suite_id);

    return s < 0 ? 0 : suites[s].secret_len;
}

/* HKDF-Expand-Label(secret, label, "", out_len) for out_len <= hash length. */
static int expand_label(int s, const uint8_t *secret, const char *label, uint8_t *out,
                        size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1 + 1], t[EVP_MAX_MD_SIZE];
    size_t label_len = strlen(label), n = 0;
    unsigned int t_len = 0;

    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + label_len);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_len);
    n += label_len;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* HKDF-Expand's block counter */
    if (HMAC(digests[s], secret, suites[s].secret_len, info, n, t, &t_len) == NULL ||
        t_len < out_len)
        return -EPROTO;
    memcpy(out, t, out_len);
    OPENSSL_cleanse(t, sizeof(t));
    return 0;
}

/* Derives d's key and IV from d->secret. */
static int dir_key(int s, struct tlsrec_dir *d)
{
    if (expand_label(s, d->secret, "key", d->key, suites[s].key_len) != 0 ||
        expand_label(s, d->secret, "iv", d->iv, sizeof(d->iv)) != 0)
        return -EPROTO;
    d->key_id = __atomic_add_fetch(&next_key_id, 1, __ATOMIC_RELAXED);
    return 0;
}

int tlsrec_init(struct tlsrec *r, uint16_t suite_id, const uint8_t *read_secret,
                const uint8_t *write_secret, size_t secret_len, uint64_t write_seq)
{
    int s = suite_index(suite_id);

    memset(r, 0, sizeof(*r));
    if (s < 0 || secret_len != suites[s].secret_len)
        return -EINVAL;
    r->suite = (uint8_t)s;
    r->max_plain = TLSREC_MAX_PLAIN;
    memcpy(r->rd.secret, read_secret, secret_len);
    memcpy(r->wr.secret, write_secret, secret_len);
    r->wr.seq = write_seq;
    if (dir_key(s, &r->rd) != 0 || dir_key(s, &r->wr) != 0) {
        tlsrec_release(r);
        return -EPROTO;
    }
    return 0;
}

/* Forgets the key a thread's context holds by keying it with zeros, which
 * overwrites the key schedule (and GCM's hash key) in place: cheaper than
 * freeing the context and making it again for the next connection. */
static void slot_forget(struct aead_slot *slot, uint64_t key_id)
{
    static const uint8_t zeros[32];

    if (slot->ctx == NULL || slot->key_id != key_id || key_id == 0)
        return;
    if (!EVP_CipherInit_ex(slot->ctx, NULL, NULL, zeros, zeros, -1))
        EVP_CIPHER_CTX_reset(slot->ctx); /* frees it with a cleanse instead */
    slot->key_id = 0;
}

void tlsrec_release(struct tlsrec *r)
{
    /* Only this thread's contexts: a connection lives on one worker, and
     * another thread's copy is overwritten by its next record. */
    slot_forget(&seal_slot, r->wr.key_id);
    slot_forget(&open_slot, r->rd.key_id);
    OPENSSL_cleanse(r, sizeof(*r));
}

uint64_t tlsrec_rekey_after(const struct tlsrec *r)
{
    return suites[r->suite].rekey_after;
}

bool tlsrec_thread_holds(const struct tlsrec *r)
{
    return (seal_slot.key_id != 0 && seal_slot.key_id == r->wr.key_id) ||
           (open_slot.key_id != 0 && open_slot.key_id == r->rd.key_id);
}

int tlsrec_update(struct tlsrec *r, struct tlsrec_dir *d)
{
    uint8_t next[TLSREC_MAX_SECRET];
    int s = r->suite;

    if (expand_label(s, d->secret, "traffic upd", next, suites[s].secret_len) != 0)
        return -EPROTO;
    memcpy(d->secret, next, suites[s].secret_len);
    OPENSSL_cleanse(next, sizeof(next));
    d->seq = 0;
    return dir_key(s, d);
}

/* Readies this thread's context for d's next record: the key only when the
 * context last served another one, the nonce always. */
static EVP_CIPHER_CTX *slot_ready(struct aead_slot *slot, const struct tlsrec *r,
                                  const struct tlsrec_dir *d, int enc)
{
    uint8_t nonce[12];
    int i, ok;

    if (slot->ctx == NULL) {
        slot->ctx = EVP_CIPHER_CTX_new();
        if (slot->ctx == NULL)
            return NULL;
        slot->key_id = 0;
    }
    memcpy(nonce, d->iv, sizeof(nonce));
    for (i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
    if (slot->key_id == d->key_id)
        ok = EVP_CipherInit_ex(slot->ctx, NULL, NULL, NULL, nonce, enc);
    else
        ok = EVP_CipherInit_ex(slot->ctx, ciphers[r->suite], NULL, d->key, nonce, enc);
    if (!ok) {
        slot->key_id = 0;
        return NULL;
    }
    slot->key_id = d->key_id;
    return slot->ctx;
}

int tlsrec_seal(struct tlsrec *r, uint8_t type, const void *plain, size_t len, uint8_t *out)
{
    size_t clen = len + 1 + TLSREC_TAG;
    EVP_CIPHER_CTX *ctx;
    int n;

    if (len > TLSREC_MAX_PLAIN)
        return -EINVAL;
    if (r->wr.seq == UINT64_MAX)
        return -EOVERFLOW;
    ctx = slot_ready(&seal_slot, r, &r->wr, 1);
    if (ctx == NULL)
        return -EPROTO;
    out[0] = TLSREC_APPDATA; /* the outer type of every protected record */
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(clen >> 8);
    out[4] = (uint8_t)clen;
    if (!EVP_EncryptUpdate(ctx, NULL, &n, out, TLSREC_HEADER) ||
        (len > 0 && !EVP_EncryptUpdate(ctx, out + TLSREC_HEADER, &n, plain, (int)len)) ||
        !EVP_EncryptUpdate(ctx, out + TLSREC_HEADER + len, &n, &type, 1) ||
        !EVP_EncryptFinal_ex(ctx, out + TLSREC_HEADER + len + 1, &n) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TLSREC_TAG,
                             out + TLSREC_HEADER + len + 1)) {
        seal_slot.key_id = 0;
        return -EPROTO;
    }
    r->wr.seq++;
    return (int)(TLSREC_HEADER + clen);
}

int tlsrec_open(struct tlsrec *r, uint8_t *buf, size_t avail, uint8_t *type, size_t *plain_len)
{
    uint8_t *body = buf + TLSREC_HEADER;
    EVP_CIPHER_CTX *ctx;
    size_t clen, n;
    int out;

    if (avail < TLSREC_HEADER)
        return 0;
    /* After the handshake every record is protected; a plaintext one (an
     * alert or a ChangeCipherSpec) is a protocol error (§5). */
    if (buf[0] != TLSREC_APPDATA)
        return -TLSREC_AD_UNEXPECTED_MESSAGE;
    if (buf[1] != 3)
        return -TLSREC_AD_DECODE_ERROR;
    clen = (size_t)buf[3] << 8 | buf[4];
    if (clen > TLSREC_MAX_CIPHER)
        return -TLSREC_AD_RECORD_OVERFLOW;
    if (clen < 1 + TLSREC_TAG) /* no room for a tag and a content type */
        return -TLSREC_AD_BAD_RECORD_MAC;
    if (avail < TLSREC_HEADER + clen)
        return 0;
    if (r->rd.seq == UINT64_MAX)
        return -TLSREC_AD_INTERNAL_ERROR;
    ctx = slot_ready(&open_slot, r, &r->rd, 0);
    if (ctx == NULL)
        return -TLSREC_AD_INTERNAL_ERROR;
    n = clen - TLSREC_TAG;
    if (!EVP_DecryptUpdate(ctx, NULL, &out, buf, TLSREC_HEADER) ||
        !EVP_DecryptUpdate(ctx, body, &out, body, (int)n) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TLSREC_TAG, body + n) ||
        EVP_DecryptFinal_ex(ctx, body + n, &out) <= 0)
        return -TLSREC_AD_BAD_RECORD_MAC;
    r->rd.seq++;
    /* Content, type and padding together fit in 2^14 + 1 bytes (§5.4). */
    if (n > TLSREC_MAX_PLAIN + 1)
        return -TLSREC_AD_RECORD_OVERFLOW;
    /* The content type is the last non-zero byte; zeros after it are
     * padding. A record of zeros only has no type. */
    while (n > 0 && body[n - 1] == 0)
        n--;
    if (n == 0)
        return -TLSREC_AD_UNEXPECTED_MESSAGE;
    *type = body[n - 1];
    *plain_len = n - 1;
    return (int)(TLSREC_HEADER + clen);
}

void tlsrec_thread_done(void)
{
    EVP_CIPHER_CTX_free(seal_slot.ctx);
    EVP_CIPHER_CTX_free(open_slot.ctx);
    seal_slot.ctx = open_slot.ctx = NULL;
}
