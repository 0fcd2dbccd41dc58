/* kn_test.h — tiny helpers shared by the kernel tests in tests/kernels: a seeded random
 * fill (the kn_rng splitmix64 generator), error metrics and a pass/fail tally. A failed
 * check prints one line and makes the program exit non-zero (see kt_exit). */
#ifndef MODA_KN_TEST_H
#define MODA_KN_TEST_H

#include "kn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int kt_fail, kt_pass;

static inline void kt_fill(float *x, size_t n, uint64_t *rng, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * kn_rng_uniform(rng);
}

static inline float *kt_alloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(2);
    }
    return p;
}

/* max |a - b| / max(max |b|, floor): error relative to the size of the reference */
static inline double kt_relerr(const float *a, const float *b, size_t n, double floor_)
{
    double e = 0, m = floor_;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return e / m;
}

/* record one check: err must be <= tol (NaN fails) */
static inline void kt_check(const char *what, double err, double tol)
{
    int ok = err <= tol;
    printf("%-4s %-40s err %.3e  tol %.1e\n", ok ? "ok" : "FAIL", what, err, tol);
    if (ok)
        kt_pass++;
    else
        kt_fail++;
}

static inline int kt_exit(void)
{
    printf("%d passed, %d failed\n", kt_pass, kt_fail);
    return kt_fail ? 1 : 0;
}

#endif
