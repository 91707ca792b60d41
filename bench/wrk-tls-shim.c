/*
 * wrk-tls-shim.c - LD_PRELOAD'ed into wrk for the TLS scenarios; built by
 * bench/bench.py into build/bench/wrk-tls-shim.so.
 *
 * wrk reuses one SSL object per connection slot: on reconnect it calls
 * SSL_shutdown() and SSL_clear(), and SSL_clear() keeps the last session, so
 * with `Connection: close` wrk offers that session on the next handshake
 * and the server resumes it whenever it issued a ticket (or cached the
 * session). That measures resumption, not full handshakes.
 *
 * This shim wraps SSL_connect():
 *   - with BENCH_TLS_NO_RESUME=1, it drops the session before a handshake
 *     starts, so every handshake is a full one (ECDHE + certificate +
 *     signature), as a client seen for the first time would do;
 *   - always, it counts the completed handshakes, full and resumed, and
 *     notes the version, suite and key-exchange group of the first one, and
 *     prints them at exit on stdout as one line that bench.py parses:
 *         TLSSTAT full=N resumed=N offered=N version=... cipher=... group=...
 *     (offered: handshakes that started with a session to resume).
 *
 * wrk -t1 runs one thread, but the counters are atomic all the same.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/objects.h>
#include <openssl/ssl.h>

static int (*real_connect)(SSL *);
static int no_resume;
static unsigned long n_full, n_resumed, n_offered;
static char first[160];
static int have_first;

__attribute__((constructor)) static void shim_init(void)
{
    const char *e = getenv("BENCH_TLS_NO_RESUME");

    real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    no_resume = e != NULL && e[0] == '1';
}

int SSL_connect(SSL *s)
{
    int r;

    if (real_connect == NULL)
        return -1;
    if (SSL_in_before(s)) { /* a handshake starts (not a retry after WANT_READ) */
        if (no_resume)
            SSL_set_session(s, NULL);
        else if (SSL_get0_session(s) != NULL)
            __atomic_fetch_add(&n_offered, 1, __ATOMIC_RELAXED);
    }
    r = real_connect(s);
    if (r == 1) {
        if (SSL_session_reused(s))
            __atomic_fetch_add(&n_resumed, 1, __ATOMIC_RELAXED);
        else
            __atomic_fetch_add(&n_full, 1, __ATOMIC_RELAXED);
        if (!__atomic_exchange_n(&have_first, 1, __ATOMIC_ACQ_REL)) {
            int nid = SSL_get_negotiated_group(s);
            const char *g = nid > 0 ? OBJ_nid2sn(nid) : NULL;

            snprintf(first, sizeof(first), "version=%s cipher=%s group=%s", SSL_get_version(s),
                     SSL_CIPHER_get_name(SSL_get_current_cipher(s)), g != NULL ? g : "?");
        }
    }
    return r;
}

__attribute__((destructor)) static void shim_fini(void)
{
    char line[320];
    int n = snprintf(line, sizeof(line), "TLSSTAT full=%lu resumed=%lu offered=%lu %s\n",
                     __atomic_load_n(&n_full, __ATOMIC_RELAXED),
                     __atomic_load_n(&n_resumed, __ATOMIC_RELAXED),
                     __atomic_load_n(&n_offered, __ATOMIC_RELAXED),
                     have_first ? first : "version=? cipher=? group=?");

    if (n > 0 && write(1, line, (size_t)n) < 0) {
        /* nothing to do: stdout is gone */
    }
}
