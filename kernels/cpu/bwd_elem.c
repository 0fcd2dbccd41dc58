/* bwd_elem.c — element-wise ops used by training: sigmoid (fwd/bwd), product and scaled
 * sum (CPU reference). All in place allowed; each element is independent. */
#include "kn.h"

#include <math.h>

void kn_sigmoid_fwd(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        /* exp of a non-positive number only: no overflow for large |x| */
        float e = expf(-fabsf(x[i]));
        y[i] = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
}

void kn_sigmoid_bwd(float *dx, const float *dy, const float *y, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

void kn_mul(float *y, const float *a, const float *b, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

void kn_axpby(float *y, float alpha, const float *a, float beta, const float *b, size_t n)
{
    if (!b) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++)
            y[i] = alpha * a[i];
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = alpha * a[i] + beta * b[i];
}
