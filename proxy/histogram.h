/*
 * histogram.h - fixed log-linear latency histograms in microseconds.
 *
 * Layout. Values below 16 µs get one bucket each. Above, every power of two
 * [2^e, 2^(e+1)) is cut into 8 equal sub-buckets of width 2^(e-3), up to
 * 2^27 µs (about 134 s); larger values share one overflow bucket. These are
 * the 200 "fine" buckets of HdrHistogram's shape with 3 significant bits.
 *
 * The Prometheus `le` bounds (0.5 ms ... 10 s) are decimal, so none of them
 * is a fine edge: each falls strictly inside one fine bucket, and that
 * bucket is split in two just above the bound (values are whole µs, so
 * "<= 500" is "< 501"). That adds 14 buckets (215 in all)
 * and makes every `le` count exact: it is the sum of whole buckets, never an
 * estimate. hist_map[] says, per fine bucket, where it starts in the final
 * array and where it is split (UINT32_MAX: not split); it is built by the
 * compiler from the formulas below, and test_metrics checks it against a
 * brute-force computation.
 *
 * Recording is branch-light and loop-free: one clz, a shift, an add, one
 * table load, a compare, then two relaxed stores (the worker owning the
 * histogram is its only writer; readers merge shards on scrape, as in
 * metrics.h). No floating point, no allocation.
 *
 * Percentiles come back as the midpoint of the bucket holding the rank, so
 * the answer is within 1/16 (6.25 %) of the true value of that rank for
 * values of 16 µs and more, and exact below (buckets of width 1). A rank
 * in the overflow bucket reports HIST_LIMIT_US, meaning "at least 134 s".
 *
 * Size: 215 buckets + the sum = 1728 bytes per histogram.
 */
#ifndef FNPROXY_HISTOGRAM_H
#define FNPROXY_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 3
#define HIST_SUB (1u << HIST_SUB_BITS) /* sub-buckets per power of two */
#define HIST_TOP_EXP 27
#define HIST_LIMIT_US (1ull << HIST_TOP_EXP)                      /* first overflowing value */
#define HIST_FINE ((HIST_TOP_EXP - HIST_SUB_BITS + 1) * HIST_SUB) /* 200 */
#define HIST_N_LE 14                                              /* finite `le` bounds */
#define HIST_BUCKETS (HIST_FINE + HIST_N_LE + 1)                  /* + splits + overflow */

/* The `le` bounds in µs, in order, as an X-macro: X(arg, bound). */
/* clang-format off */
#define HIST_LE_APPLY(X, a)                                                                        \
    X(a, 500) X(a, 1000) X(a, 2500) X(a, 5000) X(a, 10000) X(a, 25000) X(a, 50000)                 \
    X(a, 100000) X(a, 250000) X(a, 500000) X(a, 1000000) X(a, 2500000) X(a, 5000000)               \
    X(a, 10000000)
/* clang-format on */

/* Where fine bucket i sits in the final array: its first slot, and the
 * value at which its second slot starts (UINT32_MAX when it has one slot).
 * A bucket is split at bound + 1, so that the slot below holds the values
 * <= bound: Prometheus' `le` is inclusive. */
struct hist_slot {
    uint32_t split;
    uint32_t base;
};

extern const struct hist_slot hist_map[HIST_FINE];
extern const uint64_t hist_le_us[HIST_N_LE];
extern const char *const hist_le_text[HIST_N_LE]; /* "0.0005" ... "10" */

struct histogram {
    uint64_t b[HIST_BUCKETS]; /* observations per bucket */
    uint64_t sum;             /* of the observed values, µs */
};

/* The bucket a value of us microseconds is counted in. */
static inline unsigned histogram_index(uint64_t us)
{
    if (us >= HIST_LIMIT_US)
        return HIST_BUCKETS - 1;
    /* e >= 3: values below 16 land on shift 0, one bucket per value. */
    unsigned e = 63u - (unsigned)__builtin_clzll(us | HIST_SUB);
    unsigned shift = e - HIST_SUB_BITS;
    unsigned i = (shift << HIST_SUB_BITS) + (unsigned)(us >> shift);

    return hist_map[i].base + (us >= hist_map[i].split);
}

/* Counts one value. Only the histogram's owning thread may call this. */
static inline void histogram_record(struct histogram *h, uint64_t us)
{
    unsigned k = histogram_index(us);

    __atomic_store_n(&h->b[k], h->b[k] + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum, h->sum + us, __ATOMIC_RELAXED);
}

/* Adds src (which may be written concurrently by its owner) into dst. */
void histogram_merge(struct histogram *dst, const struct histogram *src);

/* dst = now - before, bucket by bucket (and the sum), never below 0: the
 * observations made between two snapshots of the same growing histogram. */
void histogram_diff(struct histogram *dst, const struct histogram *now,
                    const struct histogram *before);

uint64_t histogram_count(const struct histogram *h);

/* Bucket k covers [*lo, *hi) µs; the overflow bucket has hi = UINT64_MAX. */
void histogram_bounds(unsigned k, uint64_t *lo, uint64_t *hi);

/* The value at quantile permille/1000 (500 = p50, 999 = p99.9), in µs; 0
 * when h is empty. See the error bound above. */
uint64_t histogram_percentile(const struct histogram *h, unsigned permille);

/* Observations <= hist_le_us[k]: exact, bucket edges fall on the bounds. */
uint64_t histogram_le_count(const struct histogram *h, unsigned k);

#endif
