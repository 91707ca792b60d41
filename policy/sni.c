/*
 * sni.c - the server name of a ClientHello (sni.h). A reader walks the
 * handshake message through the record layer, so a ClientHello split over
 * several records reads like one in a single record; every field is taken
 * through it, bounded by the handshake length and by the vector that
 * encloses it.
 */
#include "sni.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define REC_HANDSHAKE 22
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define NAME_HOST 0
#define REC_MAX 16384 /* a TLSPlaintext fragment (RFC 8446 section 5.1) */

struct rd {
    const unsigned char *p;
    size_t len, pos;
    size_t rec_left; /* bytes of the current record not yet taken */
    size_t hs_left;  /* bytes of the handshake message not yet taken */
    enum sni_result stop;
};

/* Takes n bytes of the handshake message (into out unless NULL), across
 * records. false: stopped, with r->stop saying why. */
static bool take(struct rd *r, size_t n, unsigned char *out)
{
    if (n > r->hs_left) {
        r->stop = SNI_BAD;
        return false;
    }
    r->hs_left -= n;
    while (n > 0) {
        if (r->rec_left == 0) {
            const unsigned char *h = r->p + r->pos;
            size_t rl;

            size_t have = r->len - r->pos;

            if ((have >= 1 && h[0] != REC_HANDSHAKE) || (have >= 2 && h[1] != 3)) {
                r->stop = SNI_BAD; /* said early: the caller need not wait to know */
                return false;
            }
            if (have < 5) {
                r->stop = SNI_MORE;
                return false;
            }
            rl = (size_t)h[3] << 8 | h[4];
            if (h[0] != REC_HANDSHAKE || h[1] != 3 || rl == 0 || rl > REC_MAX) {
                r->stop = SNI_BAD;
                return false;
            }
            r->pos += 5;
            r->rec_left = rl;
        }
        size_t k = n < r->rec_left ? n : r->rec_left;
        if (k > r->len - r->pos)
            k = r->len - r->pos;
        if (k == 0) {
            r->stop = SNI_MORE;
            return false;
        }
        if (out != NULL) {
            memcpy(out, r->p + r->pos, k);
            out += k;
        }
        r->pos += k;
        r->rec_left -= k;
        n -= k;
    }
    return true;
}

static bool take_u8(struct rd *r, size_t *v)
{
    unsigned char b[1];

    if (!take(r, 1, b))
        return false;
    *v = b[0];
    return true;
}

static bool take_u16(struct rd *r, size_t *v)
{
    unsigned char b[2];

    if (!take(r, 2, b))
        return false;
    *v = (size_t)b[0] << 8 | b[1];
    return true;
}

static bool name_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return n > 0;
}

/* The server_name extension's body (elen bytes): one host_name at most. */
static bool server_name(struct rd *r, size_t elen, char *name, bool *have)
{
    size_t list, type, n;

    if (elen < 2) {
        r->stop = SNI_BAD;
        return false;
    }
    if (!take_u16(r, &list))
        return false;
    if (list != elen - 2) {
        r->stop = SNI_BAD;
        return false;
    }
    while (list > 0) {
        if (list < 3) {
            r->stop = SNI_BAD;
            return false;
        }
        if (!take_u8(r, &type) || !take_u16(r, &n))
            return false;
        if (n > list - 3) {
            r->stop = SNI_BAD;
            return false;
        }
        list -= 3 + n;
        if (type != NAME_HOST) {
            if (!take(r, n, NULL))
                return false;
            continue;
        }
        if (*have || n == 0 || n > SNI_NAME_MAX) {
            r->stop = SNI_BAD;
            return false;
        }
        if (!take(r, n, (unsigned char *)name))
            return false;
        name[n] = '\0';
        if (!name_ok(name, n)) {
            r->stop = SNI_BAD;
            return false;
        }
        *have = true;
    }
    return true;
}

static enum sni_result hello(struct rd *r, char *name)
{
    unsigned char hs[4], ver[2];
    size_t n, exts, type, elen;
    bool have = false, seen_sn = false;

    r->hs_left = 4;
    if (!take(r, 4, hs))
        return r->stop;
    if (hs[0] != HS_CLIENT_HELLO)
        return SNI_BAD;
    r->hs_left = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
    if (!take(r, 2, ver) || !take(r, 32, NULL))
        return r->stop;
    if (ver[0] != 3)
        return SNI_BAD;
    if (!take_u8(r, &n))
        return r->stop;
    if (n > 32)
        return SNI_BAD;
    if (!take(r, n, NULL) || !take_u16(r, &n))
        return r->stop;
    if (n < 2 || n % 2 != 0)
        return SNI_BAD;
    if (!take(r, n, NULL) || !take_u8(r, &n))
        return r->stop;
    if (n < 1)
        return SNI_BAD;
    if (!take(r, n, NULL))
        return r->stop;
    if (r->hs_left == 0)
        return SNI_NONE; /* no extensions at all */
    if (!take_u16(r, &exts))
        return r->stop;
    if (exts != r->hs_left)
        return SNI_BAD;
    while (exts > 0) {
        if (exts < 4)
            return SNI_BAD;
        if (!take_u16(r, &type) || !take_u16(r, &elen))
            return r->stop;
        if (elen > exts - 4)
            return SNI_BAD;
        exts -= 4 + elen;
        if (type != EXT_SERVER_NAME) {
            if (!take(r, elen, NULL))
                return r->stop;
            continue;
        }
        if (seen_sn)
            return SNI_BAD; /* a server would refuse it; two names are one too many */
        seen_sn = true;
        if (!server_name(r, elen, name, &have))
            return r->stop;
    }
    return have ? SNI_OK : SNI_NONE;
}

enum sni_result sni_parse(const unsigned char *p, size_t len, char name[SNI_NAME_MAX + 1])
{
    struct rd r = {.p = p, .len = len};
    enum sni_result res;

    name[0] = '\0';
    res = hello(&r, name);
    if (res != SNI_OK)
        name[0] = '\0';
    return res;
}

const char *sni_result_name(enum sni_result r)
{
    static const char *const names[] = {"ok", "none", "more", "bad"};

    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}
