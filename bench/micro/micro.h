/*
 * micro.h - what the micro benchmarks share: a monotonic clock in ns and
 * MICRO_MEASURE, which runs a body 7 times and prints the median cost per
 * operation with the min and max. They print figures and assert nothing.
 */
#ifndef FNPROXY_MICRO_H
#define FNPROXY_MICRO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* unit names one operation ("op", "entry"); prec is the decimals shown. */
#define MICRO_MEASURE(label, unit, prec, ops, body)                                                \
    do {                                                                                           \
        double runs[7];                                                                            \
        for (int r_ = 0; r_ < 7; r_++) {                                                           \
            uint64_t t0_ = now_ns();                                                               \
            body;                                                                                  \
            runs[r_] = (double)(now_ns() - t0_) / (double)(ops);                                   \
        }                                                                                          \
        qsort(runs, 7, sizeof(runs[0]), cmp_double);                                               \
        printf("%-44s %10.*f ns/%s  (min %.*f, max %.*f)\n", label, prec, runs[3], unit, prec,     \
               runs[0], prec, runs[6]);                                                            \
    } while (0)

#endif
