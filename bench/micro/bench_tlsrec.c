/*
 * bench_tlsrec.c - what protecting a TLS 1.3 record costs in tlsrec.c:
 * sealing then opening a 200-byte record (a small request or response),
 * when consecutive records share a key and when each belongs to another
 * connection (the thread's cipher context is re-keyed: the worst case of
 * the per-thread context, the price of connections holding none).
 */
#include <string.h>

#include "micro.h"
#include "tlsrec.h"

#define N 200000
#define CONNS 64
#define LEN 200

static struct tlsrec tx[CONNS], rx[CONNS];

static void keys(uint16_t suite, size_t secret_len)
{
    uint8_t a[TLSREC_MAX_SECRET], b[TLSREC_MAX_SECRET];

    for (int i = 0; i < CONNS; i++) {
        memset(a, i + 1, sizeof(a));
        memset(b, i + 101, sizeof(b));
        /* tx seals what rx opens: rx reads with tx's write secret */
        if (tlsrec_init(&tx[i], suite, b, a, secret_len, 0) != 0 ||
            tlsrec_init(&rx[i], suite, a, b, secret_len, 0) != 0) {
            fprintf(stderr, "tlsrec_init failed\n");
            exit(1);
        }
    }
}

static void round_trip(int conn, uint8_t *rec, const uint8_t *plain)
{
    uint8_t type;
    size_t len;
    int n = tlsrec_seal(&tx[conn], TLSREC_APPDATA, plain, LEN, rec);

    if (n < 0 || tlsrec_open(&rx[conn], rec, (size_t)n, &type, &len) != n || len != LEN) {
        fprintf(stderr, "round trip failed\n");
        exit(1);
    }
}

int main(void)
{
    static const struct {
        uint16_t id;
        size_t secret_len;
        const char *name;
    } suites[] = {{0x1301, 32, "AES-128-GCM"}, {0x1303, 32, "ChaCha20-Poly1305"}};
    uint8_t rec[LEN + TLSREC_OVERHEAD], plain[LEN];
    char label[80];

    memset(plain, 'x', sizeof(plain));
    for (size_t s = 0; s < sizeof(suites) / sizeof(suites[0]); s++) {
        keys(suites[s].id, suites[s].secret_len);
        snprintf(label, sizeof(label), "%s seal+open, one connection", suites[s].name);
        MICRO_MEASURE(label, "record", 1, N, for (int i = 0; i < N; i++) round_trip(0, rec, plain));
        snprintf(label, sizeof(label), "%s seal+open, %d connections", suites[s].name, CONNS);
        MICRO_MEASURE(label, "record", 1, N,
                      for (int i = 0; i < N; i++) round_trip(i % CONNS, rec, plain));
    }
    tlsrec_thread_done();
    return 0;
}
