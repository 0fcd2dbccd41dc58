/* test_dec_ops.c — unit tests of the decoder ops: kn_gelu_fast_fwd against GELU computed
 * with double-precision erf (dense sweep over [-30, 30] plus special values, in place too),
 * kn_transpose against plain loops on awkward shapes. Exit 1 on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kn.h"

static int fails;

#define EXPECT(cond, ...)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            fails++;                                                                       \
        }                                                                                  \
    } while (0)

static void test_gelu(void)
{
    size_t n = 600001 + 6;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n - 6; i++) x[i] = -30.0f + 60.0f * (float)i / (float)(n - 7);
    float sp[6] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e4f, -1e4f};
    for (int i = 0; i < 6; i++) x[n - 6 + i] = sp[i];
    kn_gelu_fast_fwd(y, x, n);
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i], g = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
        double e = fabs(g - y[i]) / fmax(1.0, fabs(v));
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
    }
    EXPECT(worst <= 2e-7, "gelu_fast: error %.3g at x=%g (bound 2e-7·max(1,|x|))", worst,
           (double)x[wi]);
    EXPECT(y[n - 6] == 0.0f && y[n - 2] == 1e4f && y[n - 1] == 0.0f,
           "gelu_fast special values: %g %g %g", (double)y[n - 6], (double)y[n - 2],
           (double)y[n - 1]);
    /* in place gives the same bits */
    kn_gelu_fast_fwd(x, x, n);
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += x[i] != y[i];
    EXPECT(diff == 0, "gelu_fast in place differs in %zu elements", diff);
    float nan = NAN, out;
    kn_gelu_fast_fwd(&out, &nan, 1);
    EXPECT(isnan(out), "gelu_fast(NaN) = %g", (double)out);
    printf("gelu_fast: max error %.3g (relative to max(1,|x|))\n", worst);
    free(x);
    free(y);
}

static void test_transpose(void)
{
    int shapes[][2] = {{1, 1}, {1, 37}, {37, 1}, {31, 33}, {64, 64}, {256, 4096}, {70, 129}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int r = shapes[s][0], c = shapes[s][1];
        float *x = malloc(sizeof(float) * r * c), *y = malloc(sizeof(float) * r * c);
        for (int i = 0; i < r * c; i++) x[i] = (float)i * 0.5f - 3.0f;
        kn_transpose(y, x, r, c);
        int bad = 0;
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++) bad += y[(size_t)j * r + i] != x[(size_t)i * c + j];
        EXPECT(bad == 0, "transpose %dx%d: %d wrong elements", r, c, bad);
        free(x);
        free(y);
    }
}

int main(void)
{
    test_gelu();
    test_transpose();
    if (fails) fprintf(stderr, "%d failure(s)\n", fails);
    else printf("all decoder op tests passed\n");
    return fails ? 1 : 0;
}
