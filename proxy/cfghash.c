/*
 * cfghash.c - SHA-256 (OpenSSL EVP) over a config and the files it names.
 *
 * Each part is framed as its name, a NUL, its length in 8 bytes and its
 * bytes, so that moving bytes from one file to the next changes the hash.
 */
#include "cfghash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

static int add_path(const char ***v, size_t *n, size_t *cap, const char *p)
{
    const char **bigger;

    if (p == NULL)
        return 0;
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i], p) == 0)
            return 0;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        bigger = realloc(*v, *cap * sizeof(**v));
        if (bigger == NULL)
            return -ENOMEM;
        *v = bigger;
    }
    (*v)[(*n)++] = p;
    return 0;
}

int cfghash_files(const struct config *c, const char ***out, size_t *n)
{
    const char **v = NULL;
    size_t cap = 0;
    int rc = 0;

    *n = 0;
    for (size_t i = 0; i < c->n_listeners && rc == 0; i++) {
        const struct cfg_listener_tls *t = c->listeners[i].tls;

        for (size_t j = 0; t != NULL && j < t->n_certificates && rc == 0; j++) {
            rc = add_path(&v, n, &cap, t->certificates[j].cert);
            if (rc == 0)
                rc = add_path(&v, n, &cap, t->certificates[j].key);
        }
        if (t != NULL && rc == 0)
            rc = add_path(&v, n, &cap, t->client_ca);
    }
    for (size_t i = 0; i < c->n_functions && rc == 0; i++) {
        const struct cfg_function *f = &c->functions[i];

        if (f->upstream_tls != NULL)
            rc = add_path(&v, n, &cap, f->upstream_tls->ca);
        for (size_t j = 0; f->egress != NULL && j < f->egress->n_allow && rc == 0; j++)
            rc = add_path(&v, n, &cap, f->egress->allow[j].ca);
    }
    if (rc < 0) {
        free(v);
        v = NULL;
        *n = 0;
    }
    *out = v;
    return rc;
}

static bool part(EVP_MD_CTX *md, const char *name, const void *buf, size_t len)
{
    uint64_t n = len;
    unsigned char be[8];

    for (int i = 7; i >= 0; i--, n >>= 8)
        be[i] = (unsigned char)(n & 0xff);
    return EVP_DigestUpdate(md, name, strlen(name) + 1) == 1 &&
           EVP_DigestUpdate(md, be, sizeof(be)) == 1 && EVP_DigestUpdate(md, buf, len) == 1;
}

int cfghash_compute(const char *buf, size_t len, const struct config *c, struct cfghash *out,
                    char *err, size_t errlen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const char **files = NULL;
    size_t n_files = 0;
    unsigned int dlen = 0;
    int rc = 0;
    bool ok;

    memset(out, 0, sizeof(*out));
    if (md == NULL)
        goto out_oom;
    if (c != NULL && cfghash_files(c, &files, &n_files) < 0)
        goto out_oom;
    ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && part(md, "", buf, len);
    for (size_t i = 0; ok && i < n_files; i++) {
        char *fbuf;
        size_t flen;
        int frc = config_read(files[i], &fbuf, &flen, rc < 0 ? NULL : err, errlen);

        if (frc < 0) {
            /* Hashed as the error, so that a later good file differs. */
            int e = -frc;
            ok = part(md, files[i], &e, sizeof(e));
            if (rc == 0)
                rc = frc;
            continue;
        }
        ok = part(md, files[i], fbuf, flen);
        free(fbuf);
    }
    ok = ok && EVP_DigestFinal_ex(md, out->d, &dlen) == 1 && dlen == CFGHASH_LEN;
    free(files);
    EVP_MD_CTX_free(md);
    if (!ok) {
        snprintf(err, errlen, "cannot hash the config: SHA-256 failed");
        return -EIO;
    }
    return rc;

out_oom:
    EVP_MD_CTX_free(md);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

void cfghash_hex(const struct cfghash *h, char out[CFGHASH_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < CFGHASH_HEX / 2; i++) {
        out[2 * i] = hex[h->d[i] >> 4];
        out[2 * i + 1] = hex[h->d[i] & 15];
    }
    out[CFGHASH_HEX] = '\0';
}

bool cfghash_eq(const struct cfghash *a, const struct cfghash *b)
{
    return memcmp(a->d, b->d, sizeof(a->d)) == 0;
}
