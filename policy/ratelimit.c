/*
 * ratelimit.c - GCRA token buckets, the per-client table and the RateLimit
 * header fields (see ratelimit.h).
 */
#include "ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#define NS_PER_S UINT64_C(1000000000)

void ratelimit_params_init(struct ratelimit_params *p, uint64_t rate_milli, unsigned burst)
{
    uint64_t t;

    if (rate_milli == 0)
        rate_milli = 1;
    if (burst == 0)
        burst = 1;
    t = UINT64_C(1000000000000) / rate_milli; /* 1e9 ns * 1000 / rate_milli */
    if (t == 0)
        t = 1; /* over 1e9 rps: one per ns is as fast as the clock counts */
    p->interval_ns = t;
    p->burst = burst;
    /* T <= 1e12 < the clamp, so the capacity always holds one token. */
    p->capacity_ns = burst > RATELIMIT_CAPACITY_MAX_NS / t ? RATELIMIT_CAPACITY_MAX_NS : burst * t;
}

/* The decision for a bucket at tat: fills r and returns the TAT after it
 * (tat itself when denied). The one place the algorithm is written. */
static uint64_t gcra(uint64_t tat, const struct ratelimit_params *p, uint64_t now,
                     struct ratelimit_result *r)
{
    uint64_t base = tat > now ? tat : now; /* a bucket is never fuller than full */
    uint64_t next = base + p->interval_ns;
    uint64_t need = next - now; /* time to refill, this request taken */

    if (need > p->capacity_ns) {
        r->allowed = false;
        r->remaining = 0;
        r->retry_after_ns = need - p->capacity_ns;
        r->reset_ns = base - now;
        return tat;
    }
    uint64_t left = (p->capacity_ns - need) / p->interval_ns;
    r->allowed = true;
    r->remaining = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
    r->retry_after_ns = 0;
    r->reset_ns = need;
    return next;
}

void ratelimit_take(struct ratelimit_bucket *b, const struct ratelimit_params *p, uint64_t now_ns,
                    struct ratelimit_result *r)
{
    /* Relaxed is enough: the TAT is the whole state, nothing else is
     * published with it. A failed CAS reloads old and decides again. */
    uint64_t old = __atomic_load_n(&b->tat, __ATOMIC_RELAXED);
    uint64_t next;

    do {
        next = gcra(old, p, now_ns, r);
        if (!r->allowed)
            return; /* nothing to write */
    } while (!__atomic_compare_exchange_n(&b->tat, &old, next, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
}

/* SipHash-2-4, after the reference implementation (CC0). */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint64_t ratelimit_siphash24(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    uint64_t m, b = (uint64_t)len << 56;
    size_t i;

    for (i = 0; i + 8 <= len; i += 8) {
        m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

struct slot {
    uint64_t key; /* hash of the client key; an all-zero slot is a full bucket */
    uint64_t tat;
};

/* A stripe's lock on a cache line of its own: workers hitting two stripes
 * do not share a line. */
struct stripe {
    _Alignas(64) pthread_mutex_t lock;
    struct slot *slots; /* per_stripe of them, in the table's one array */
};

struct ratelimit_table {
    struct stripe *stripes;
    struct slot *slots;
    size_t n_stripes;
    size_t per_stripe;
    size_t window; /* slots probed: RATELIMIT_TABLE_WINDOW, or fewer in a tiny table */
    uint8_t seed[16];
};

static int seed_get(uint8_t seed[16])
{
    ssize_t n;

    do
        n = getrandom(seed, 16, 0);
    while (n < 0 && errno == EINTR);
    if (n == 16)
        return 0;
    if (n >= 0)
        errno = EIO;
    return -1;
}

struct ratelimit_table *ratelimit_table_new(size_t capacity)
{
    struct ratelimit_table *t;
    size_t i;

    if (capacity == 0)
        capacity = 1;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (seed_get(t->seed) < 0)
        goto out_free_table;
    /* As many stripes as fill a window each, up to the maximum; then
     * every stripe holds at least a window's worth of slots. */
    t->n_stripes = capacity / RATELIMIT_TABLE_WINDOW;
    if (t->n_stripes > RATELIMIT_TABLE_STRIPES)
        t->n_stripes = RATELIMIT_TABLE_STRIPES;
    if (t->n_stripes == 0)
        t->n_stripes = 1;
    t->per_stripe = capacity / t->n_stripes + (capacity % t->n_stripes != 0);
    t->window = t->per_stripe < RATELIMIT_TABLE_WINDOW ? t->per_stripe : RATELIMIT_TABLE_WINDOW;
    t->slots = calloc(t->n_stripes * t->per_stripe, sizeof(*t->slots));
    if (t->slots == NULL)
        goto out_free_table;
    /* sizeof(struct stripe) is a multiple of its alignment, as
     * aligned_alloc wants. */
    t->stripes = aligned_alloc(_Alignof(struct stripe), t->n_stripes * sizeof(*t->stripes));
    if (t->stripes == NULL)
        goto out_free_slots;
    for (i = 0; i < t->n_stripes; i++) {
        int err = pthread_mutex_init(&t->stripes[i].lock, NULL);
        if (err != 0) {
            errno = err;
            goto out_destroy_locks;
        }
        t->stripes[i].slots = t->slots + i * t->per_stripe;
    }
    return t;

out_destroy_locks:
    while (i-- > 0)
        pthread_mutex_destroy(&t->stripes[i].lock);
    free(t->stripes);
out_free_slots:
    free(t->slots);
out_free_table:
    free(t);
    return NULL;
}

void ratelimit_table_free(struct ratelimit_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_stripes; i++)
        pthread_mutex_destroy(&t->stripes[i].lock);
    free(t->stripes);
    t->stripes = NULL;
    free(t->slots);
    t->slots = NULL;
    free(t);
}

/* The slot of key h in its window: its own, else one full again, else the
 * one closest to full, forgotten. Under the stripe's lock. */
static struct slot *slot_find(const struct ratelimit_table *t, struct slot *slots, uint64_t h,
                              uint64_t now)
{
    size_t start = (size_t)(h % t->per_stripe);
    struct slot *full = NULL, *closest = NULL;

    for (size_t i = 0; i < t->window; i++) {
        struct slot *s = &slots[(start + i) % t->per_stripe];
        if (s->key == h)
            return s; /* a zero hash also matches a free slot: a full bucket all the same */
        if (full == NULL && s->tat <= now)
            full = s;
        if (closest == NULL || s->tat < closest->tat)
            closest = s;
    }
    if (full == NULL)
        full = closest;
    full->key = h;
    full->tat = 0;
    return full;
}

void ratelimit_table_take(struct ratelimit_table *t, const void *key, size_t len,
                          const struct ratelimit_params *p, uint64_t now_ns,
                          struct ratelimit_result *r)
{
    uint64_t h = ratelimit_siphash24(t->seed, key, len);
    /* The high half picks the stripe, the low half the slot in it. */
    struct stripe *st = &t->stripes[(h >> 32) % t->n_stripes];
    struct slot *s;

    pthread_mutex_lock(&st->lock);
    s = slot_find(t, st->slots, h, now_ns);
    s->tat = gcra(s->tat, p, now_ns, r);
    pthread_mutex_unlock(&st->lock);
}

static bool name_ok(const char *name)
{
    if (name == NULL || *name == '\0')
        return false;
    for (const char *c = name; *c != '\0'; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '.' || *c == '-'))
            return false;
    return true;
}

/* ns in whole seconds, rounded up, at least 1. */
static uint64_t secs_up(uint64_t ns)
{
    uint64_t s = ns / NS_PER_S + (ns % NS_PER_S != 0);

    return s > 0 ? s : 1;
}

size_t ratelimit_headers(char *buf, size_t cap, const char *name, const struct ratelimit_params *p,
                         const struct ratelimit_result *r)
{
    uint64_t t = 0; /* s until a request can pass */
    int n;

    if (!r->allowed)
        t = secs_up(r->retry_after_ns);
    else if (r->remaining == 0 && r->reset_ns + p->interval_ns > p->capacity_ns)
        t = secs_up(r->reset_ns + p->interval_ns - p->capacity_ns); /* the last token went */

    if (!name_ok(name))
        name = "default";
    if (r->allowed)
        n = snprintf(buf, cap,
                     "RateLimit-Policy: \"%s\";q=%llu;w=%llu\r\n"
                     "RateLimit: \"%s\";r=%u;t=%llu\r\n",
                     name, (unsigned long long)p->burst,
                     (unsigned long long)secs_up(p->capacity_ns), name, (unsigned)r->remaining,
                     (unsigned long long)t);
    else
        n = snprintf(buf, cap,
                     "RateLimit-Policy: \"%s\";q=%llu;w=%llu\r\n"
                     "RateLimit: \"%s\";r=0;t=%llu\r\n"
                     "Retry-After: %llu\r\n",
                     name, (unsigned long long)p->burst,
                     (unsigned long long)secs_up(p->capacity_ns), name, (unsigned long long)t,
                     (unsigned long long)t);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}
