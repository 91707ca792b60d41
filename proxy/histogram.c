/*
 * histogram.c - the bucket map, merging, percentiles and `le` counts of the
 * histograms in histogram.h. Only the recording path is inline; everything
 * here runs on scrape.
 *
 * hist_map[] is computed by the compiler: HIST_LO(i) is the lower edge of
 * fine bucket i, a bucket is split when a bound's successor falls strictly
 * inside it, and a bucket's first slot is its index plus the number of
 * splits below it. This assumes that no bound + 1 is itself a fine edge
 * (then it would need no split and HIST_BUCKETS would be one too many);
 * test_metrics checks that, and the whole map, by brute force.
 */
#include "histogram.h"

#include <stddef.h>

/* Lower edge of fine bucket i: i itself below 2 * HIST_SUB, then
 * (HIST_SUB + i % HIST_SUB) << (i / HIST_SUB - 1). The shift is written so
 * that it is never negative, even in the branch not taken. */
#define HIST_LO(i)                                                                                 \
    ((i) < 2 * HIST_SUB ? (uint64_t)(i)                                                            \
                        : (uint64_t)(HIST_SUB + (i) % HIST_SUB)                                    \
                              << ((i) / HIST_SUB - ((i) >= 2 * HIST_SUB ? 1 : 0)))

/* Bound b splits fine bucket i at b + 1. */
#define HIST_SPLIT_TERM(i, b) (HIST_LO(i) < (b) + 1ull && (b) + 1ull < HIST_LO((i) + 1)) ? (b) + 1u:
#define HIST_BELOW_TERM(i, b) +((b) + 1ull < HIST_LO(i))
#define HIST_SLOT(i)                                                                               \
    {(uint32_t)(HIST_LE_APPLY(HIST_SPLIT_TERM, i) UINT32_MAX),                                     \
     (uint32_t)((i)HIST_LE_APPLY(HIST_BELOW_TERM, i))},
/* clang-format off */
#define HIST_SLOTS8(k)                                                                             \
    HIST_SLOT(8 * (k)) HIST_SLOT(8 * (k) + 1) HIST_SLOT(8 * (k) + 2) HIST_SLOT(8 * (k) + 3)        \
    HIST_SLOT(8 * (k) + 4) HIST_SLOT(8 * (k) + 5) HIST_SLOT(8 * (k) + 6) HIST_SLOT(8 * (k) + 7)

/* Unsized, so that a list that does not match HIST_FINE conflicts with the
 * declaration in histogram.h instead of being zero-filled silently. */
const struct hist_slot hist_map[] = {
    HIST_SLOTS8(0)  HIST_SLOTS8(1)  HIST_SLOTS8(2)  HIST_SLOTS8(3)  HIST_SLOTS8(4)
    HIST_SLOTS8(5)  HIST_SLOTS8(6)  HIST_SLOTS8(7)  HIST_SLOTS8(8)  HIST_SLOTS8(9)
    HIST_SLOTS8(10) HIST_SLOTS8(11) HIST_SLOTS8(12) HIST_SLOTS8(13) HIST_SLOTS8(14)
    HIST_SLOTS8(15) HIST_SLOTS8(16) HIST_SLOTS8(17) HIST_SLOTS8(18) HIST_SLOTS8(19)
    HIST_SLOTS8(20) HIST_SLOTS8(21) HIST_SLOTS8(22) HIST_SLOTS8(23) HIST_SLOTS8(24)
};
/* clang-format on */
_Static_assert(HIST_SUB == 8, "HIST_SLOTS8 lists eight buckets per power of two");
_Static_assert(HIST_LO(HIST_FINE) == HIST_LIMIT_US, "the fine buckets end at HIST_LIMIT_US");
/* Each bound must add exactly one slot, and the overflow slot must be last:
 * the last fine bucket starts after every split. */
#define HIST_LAST_BASE (HIST_FINE - 1 HIST_LE_APPLY(HIST_BELOW_TERM, HIST_FINE - 1))
_Static_assert(HIST_LAST_BASE == HIST_FINE - 1 + HIST_N_LE, "one split per `le` bound");

#define HIST_LE_VALUE(a, b) b,
const uint64_t hist_le_us[HIST_N_LE] = {HIST_LE_APPLY(HIST_LE_VALUE, 0)};

const char *const hist_le_text[HIST_N_LE] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

void histogram_merge(struct histogram *dst, const struct histogram *src)
{
    for (unsigned k = 0; k < HIST_BUCKETS; k++)
        dst->b[k] += __atomic_load_n(&src->b[k], __ATOMIC_RELAXED);
    dst->sum += __atomic_load_n(&src->sum, __ATOMIC_RELAXED);
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

void histogram_diff(struct histogram *dst, const struct histogram *now,
                    const struct histogram *before)
{
    for (unsigned k = 0; k < HIST_BUCKETS; k++)
        dst->b[k] = sub_sat(__atomic_load_n(&now->b[k], __ATOMIC_RELAXED), before->b[k]);
    dst->sum = sub_sat(__atomic_load_n(&now->sum, __ATOMIC_RELAXED), before->sum);
}

uint64_t histogram_count(const struct histogram *h)
{
    uint64_t n = 0;

    for (unsigned k = 0; k < HIST_BUCKETS; k++)
        n += __atomic_load_n(&h->b[k], __ATOMIC_RELAXED);
    return n;
}

void histogram_bounds(unsigned k, uint64_t *lo, uint64_t *hi)
{
    if (k >= HIST_BUCKETS - 1) {
        *lo = HIST_LIMIT_US;
        *hi = UINT64_MAX;
        return;
    }
    /* Slots only ever run ahead of fine indexes, by the splits below: the
     * fine bucket holding slot k is at most k, at least k - HIST_N_LE. */
    unsigned i = k < HIST_FINE ? k : HIST_FINE - 1;
    while (hist_map[i].base > k)
        i--;
    *lo = hist_map[i].base == k ? HIST_LO(i) : hist_map[i].split;
    *hi = hist_map[i].base == k && hist_map[i].split != UINT32_MAX ? hist_map[i].split
                                                                   : HIST_LO(i + 1);
}

uint64_t histogram_percentile(const struct histogram *h, unsigned permille)
{
    uint64_t n = histogram_count(h), rank, seen = 0, lo, hi;

    if (n == 0)
        return 0;
    if (permille > 1000)
        permille = 1000;
    /* The smallest value with at least permille/1000 of all at or below it. */
    rank = (n * permille + 999) / 1000;
    if (rank == 0)
        rank = 1;
    for (unsigned k = 0; k < HIST_BUCKETS; k++) {
        seen += __atomic_load_n(&h->b[k], __ATOMIC_RELAXED);
        if (seen < rank)
            continue;
        histogram_bounds(k, &lo, &hi);
        if (hi == UINT64_MAX)
            return lo;
        return lo + (hi - lo) / 2;
    }
    /* Counts grew while we walked: the rank is in the last bucket seen. */
    return HIST_LIMIT_US;
}

uint64_t histogram_le_count(const struct histogram *h, unsigned k)
{
    unsigned end = histogram_index(hist_le_us[k] + 1); /* first slot above the bound */
    uint64_t n = 0;

    for (unsigned j = 0; j < end; j++)
        n += __atomic_load_n(&h->b[j], __ATOMIC_RELAXED);
    return n;
}
