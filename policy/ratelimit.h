/*
 * ratelimit.h - functions[].ingress.rate_limit: a token bucket of `burst`
 * tokens refilled at `rps`, per function and global across workers, or one
 * per client (per: client_id | client_ip) in a fixed-size table.
 *
 * A bucket is GCRA (the generic cell rate algorithm, ATM's and Redis
 * Cell's): one 64-bit theoretical arrival time (TAT) on the caller's
 * monotonic clock, in nanoseconds. With T = 1/rps the emission interval
 * and C = burst * T, a request at `now` passes iff
 *
 *     max(TAT, now) + T - now <= C,        then TAT = max(TAT, now) + T
 *
 * which is a token bucket seen from the other end: TAT - now is the time
 * the bucket needs to be full again, so (C - (TAT - now)) / T tokens are
 * left. Starting full, a window of W seconds admits at most burst + rps * W.
 * A TAT of 0 (or any TAT <= now) is a full bucket, so a zeroed bucket is a
 * fresh one whatever the clock reads.
 *
 * Workers take from the same bucket at once: the TAT is updated with a
 * compare-and-swap loop, no lock. The rate and burst are not in the
 * bucket: every take is passed the params of the caller's config snapshot,
 * so a bucket kept across a reload (by function name, outside the
 * snapshot) goes on with the new rate from the next take. Its debt carries
 * over as time, not tokens: a burst lowered below the debt denies until
 * the debt falls under the new capacity.
 *
 * Pure: no I/O, no clock; callers pass the time (now_ns < 2^63).
 */
#ifndef FNPROXY_RATELIMIT_H
#define FNPROXY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* burst * interval_ns is clamped to this (146 years) so that TAT arithmetic
 * stays far from 2^64 whatever burst and rps are. */
#define RATELIMIT_CAPACITY_MAX_NS (UINT64_C(1) << 62)

/* One rate limit, derived once per config snapshot. */
struct ratelimit_params {
    uint64_t interval_ns; /* T = 1e12 / rate_milli, at least 1 */
    uint64_t burst;       /* tokens when full, at least 1 */
    uint64_t capacity_ns; /* burst * T, at most RATELIMIT_CAPACITY_MAX_NS */
};

/* From rate_limit.rps in thousandths (2.5 rps: 2500) and rate_limit.burst.
 * A rate of 0 is taken as 1 (one request every 1000 s) and a burst of 0 as
 * 1: config.c never passes either. T is rounded down to whole ns, so the
 * rate is at most 1 ns per interval fast. */
void ratelimit_params_init(struct ratelimit_params *p, uint64_t rate_milli, unsigned burst);

/* What a take decided. */
struct ratelimit_result {
    bool allowed;
    uint32_t remaining;      /* whole tokens left after this request, 0..burst-1 */
    uint64_t retry_after_ns; /* denied: until one token is there; allowed: 0 */
    uint64_t reset_ns;       /* until the bucket is full again */
};

/* One bucket; zeroed is full. Shared by threads: only through
 * ratelimit_take(). */
struct ratelimit_bucket {
    uint64_t tat; /* theoretical arrival time, ns */
};

/* Takes one token if there is one. Safe from any number of threads at once
 * (lock-free); a denied take leaves the bucket as it was. */
void ratelimit_take(struct ratelimit_bucket *b, const struct ratelimit_params *p, uint64_t now_ns,
                    struct ratelimit_result *r);

/* Per-client buckets: a fixed table of at least `capacity` slots, in
 * stripes of their own mutex, keyed by a SipHash-2-4 of the client key
 * under a random seed (so that nobody can choose keys that crowd one
 * stripe). A key probes RATELIMIT_TABLE_WINDOW slots of its stripe and
 * takes, in this order: its own slot; a slot whose bucket is full again
 * (free slots are: a fresh bucket is the same as a forgotten one, so
 * reusing it loses nothing); else the slot of the bucket closest to full,
 * whose client starts again from a full bucket. That last case forgives a
 * debt, so it can only favour a client, never deny one more, and only
 * while every slot of a window is in debt: in practice, with more clients
 * in debt at once than the table holds. Two keys of the same 64-bit hash
 * share a bucket. Nothing is allocated after ratelimit_table_new(). */
#define RATELIMIT_TABLE_WINDOW 8
#define RATELIMIT_TABLE_STRIPES 64

struct ratelimit_table;

/* NULL when out of memory or when no random seed can be had (errno set). */
struct ratelimit_table *ratelimit_table_new(size_t capacity);

void ratelimit_table_free(struct ratelimit_table *t);

/* ratelimit_take() on the bucket of this client key (a verified identity,
 * an address's bytes; len 0 is a key like any other). Safe from any number
 * of threads at once. */
void ratelimit_table_take(struct ratelimit_table *t, const void *key, size_t len,
                          const struct ratelimit_params *p, uint64_t now_ns,
                          struct ratelimit_result *r);

/* SipHash-2-4 (Aumasson and Bernstein) of data under a 128-bit key, as the
 * reference implementation reads it (little-endian). Exposed for tests. */
uint64_t ratelimit_siphash24(const uint8_t key[16], const void *data, size_t len);

/* Writes the RateLimit header fields of draft-ietf-httpapi-ratelimit-headers
 * (-08 and later) for a result, then a NUL:
 *
 *   RateLimit-Policy: "NAME";q=BURST;w=W     W: s to refill the whole burst
 *   RateLimit: "NAME";r=REMAINING;t=S        S: s until a request can pass
 *                                               (0 while tokens are left)
 *   Retry-After: S                           only when denied
 *
 * each line ending in CRLF, seconds rounded up and at least 1 (but t=0).
 * NAME is the policy's name, a function name of [A-Za-z0-9_.-]; anything
 * else (or NULL, or "") is written as "default". Returns the length without
 * the NUL, or 0 when it does not fit in cap bytes. */
size_t ratelimit_headers(char *buf, size_t cap, const char *name, const struct ratelimit_params *p,
                         const struct ratelimit_result *r);

#endif
