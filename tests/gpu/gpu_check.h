/* gpu_check.h — the measures the GPU test programs of tests/gpu compare GPU and CPU results
 * with (they are also compiled by tests/gpu/emu/run_emu.sh --test): relative L2 error
 * against the CPU reference, and a wall clock for the timings they print. */
#ifndef MODA_TEST_GPU_CHECK_H
#define MODA_TEST_GPU_CHECK_H

#include <math.h>
#include <stddef.h>
#include <time.h>

/* ||a − ref|| / ||ref|| in double (||a − ref|| when ref is all zero). */
static inline double rel_l2(const float *a, const float *ref, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double t = (double)a[i] - ref[i];
        d += t * t;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* Monotonic wall clock in milliseconds. */
static inline double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

#endif
