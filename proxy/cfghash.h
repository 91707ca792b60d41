/*
 * cfghash.h - the identity of a config on disk: SHA-256 over the config
 * file's bytes and the bytes of every file it names (certificates, keys,
 * CA bundles), so that two instances serving the same hash serve the same
 * thing, and a file event that changed nothing (touch, identical rewrite)
 * is told apart from a real change.
 */
#ifndef FNPROXY_CFGHASH_H
#define FNPROXY_CFGHASH_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define CFGHASH_LEN 32 /* SHA-256 */
#define CFGHASH_HEX 16 /* hex digits shown (fnproxy_config_info, GET /config) */

struct cfghash {
    unsigned char d[CFGHASH_LEN];
};

/* The files c names besides itself, in config order, each once: pointers
 * into c, in a malloc'd array (*out NULL when there are none). 0 or
 * -ENOMEM. */
int cfghash_files(const struct config *c, const char ***out, size_t *n);

/* The hash of the config file's bytes buf and, when c is not NULL (the
 * bytes parsed), of every file c names. The hash is always defined: a file
 * that cannot be read is hashed as its name and error, and then -errno is
 * returned with "cannot read FILE: why" in err. */
int cfghash_compute(const char *buf, size_t len, const struct config *c, struct cfghash *out,
                    char *err, size_t errlen);

/* The first CFGHASH_HEX hex digits and a NUL. */
void cfghash_hex(const struct cfghash *h, char out[CFGHASH_HEX + 1]);

bool cfghash_eq(const struct cfghash *a, const struct cfghash *b);

#endif
