/* test_dec_ops.c — unit tests of the decoder ops against double-precision references:
 * kn_gelu_fast_fwd (dense sweep over [-30, 30], special values, in place), the two fast
 * softmaxes (random and extreme logits, short and long rows, in place), the fused
 * LayerNorm+GELU, LayerNorm+add and GELU+linear ops (odd sizes that leave partial blocks),
 * and kn_transpose
 * against plain loops on awkward shapes. Exit 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kn.h"
#include "expect.h"

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
    EXPECTF(worst <= 2e-7, "gelu_fast: error %.3g at x=%g (bound 2e-7·max(1,|x|))", worst,
            (double)x[wi]);
    EXPECTF(y[n - 6] == 0.0f && y[n - 2] == 1e4f && y[n - 1] == 0.0f,
            "gelu_fast special values: %g %g %g", (double)y[n - 6], (double)y[n - 2],
            (double)y[n - 1]);
    /* in place gives the same bits */
    kn_gelu_fast_fwd(x, x, n);
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += x[i] != y[i];
    EXPECTF(diff == 0, "gelu_fast in place differs in %zu elements", diff);
    float nan = NAN, out;
    kn_gelu_fast_fwd(&out, &nan, 1);
    EXPECTF(isnan(out), "gelu_fast(NaN) = %g", (double)out);
    printf("gelu_fast: max error %.3g (relative to max(1,|x|))\n", worst);
    free(x);
    free(y);
}

static uint64_t rs = 88172645463325252ull;
static float urand(void) /* uniform in [-1, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static double gelu_d(double v)
{
    return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
}

static void test_softmax(void)
{
    int shapes[][2] = {{1, 1}, {3, 7}, {56, 4096}, {32768, 7}, {5, 1000}, {7, 257}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int R = shapes[t][0], Cc = shapes[t][1];
        size_t n = (size_t)R * Cc;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        for (size_t i = 0; i < n; i++) x[i] = 12.0f * urand() + (i % 11 == 0 ? 80.0f : 0.0f);
        for (int dim0 = 0; dim0 < 2; dim0++) {
            if (dim0) kn_softmax_dim0_fast_fwd(y, x, R, Cc);
            else kn_softmax_fast_fwd(y, x, R, Cc);
            /* reference along rows (dim0 = 0) or columns (dim0 = 1) */
            int outer = dim0 ? Cc : R, inner = dim0 ? R : Cc;
            double worst = 0;
            for (int o = 0; o < outer; o++) {
                double m = -INFINITY, s = 0;
                for (int i = 0; i < inner; i++) {
                    size_t k = dim0 ? (size_t)i * Cc + o : (size_t)o * Cc + i;
                    m = fmax(m, x[k]);
                }
                /* x - max rounded to float as every float softmax does (inputs near 90
                 * lose up to 4e-6 there); exp and sums in double */
                for (int i = 0; i < inner; i++) {
                    size_t k = dim0 ? (size_t)i * Cc + o : (size_t)o * Cc + i;
                    s += exp((double)(x[k] - (float)m));
                }
                for (int i = 0; i < inner; i++) {
                    size_t k = dim0 ? (size_t)i * Cc + o : (size_t)o * Cc + i;
                    double r = exp((double)(x[k] - (float)m)) / s;
                    double e = fabs(y[k] - r) / fmax(r, 1e-30);
                    if (r > 1e-30 && !(e <= worst)) worst = e;
                }
            }
            /* float sums: the bound grows with the reduction length */
            double tol = 1e-6 + 1e-10 * inner;
            EXPECTF(worst <= tol, "softmax%s %dx%d: relative error %.3g (bound %.3g)",
                    dim0 ? "_dim0" : "", R, Cc, worst, tol);
        }
        /* in place gives the same bits */
        kn_softmax_fast_fwd(y, x, R, Cc);
        float *z = malloc(n * sizeof *z);
        for (size_t i = 0; i < n; i++) z[i] = x[i];
        kn_softmax_fast_fwd(z, z, R, Cc);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) diff += z[i] != y[i];
        EXPECTF(diff == 0, "softmax in place differs (%dx%d)", R, Cc);
        free(x), free(y), free(z);
    }
}

static void test_layernorm_gelu(void)
{
    int N = 1003, Cc = 64;
    float *x = malloc(sizeof(float) * N * Cc), *y = malloc(sizeof(float) * N * Cc);
    float w[64], b[64];
    for (int c = 0; c < Cc; c++) w[c] = 1.0f + 0.5f * urand(), b[c] = 0.3f * urand();
    for (int i = 0; i < N * Cc; i++) x[i] = 3.0f * urand() + (float)(i / Cc % 5) * 40.0f;
    /* rows with mean 0, 40, ..., 160 and std ~1.7 */
    kn_layernorm_gelu_fast_fwd(y, x, w, b, N, Cc, 1e-6f);
    double worst = 0;
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < Cc; c++) m += x[n * Cc + c];
        m /= Cc;
        for (int c = 0; c < Cc; c++) v += (x[n * Cc + c] - m) * (x[n * Cc + c] - m);
        double r = 1.0 / sqrt(v / Cc + 1e-6);
        for (int c = 0; c < Cc; c++) {
            double ref = gelu_d((x[n * Cc + c] - m) * r * w[c] + b[c]);
            double e = fabs(ref - y[n * Cc + c]);
            if (!(e <= worst)) worst = e;
        }
    }
    /* float accumulation: the error grows with |mean| / std, here up to ~100 */
    EXPECTF(worst <= 5e-5, "layernorm_gelu: max abs error %.3g", worst);
    kn_layernorm_gelu_fast_fwd(x, x, w, b, N, Cc, 1e-6f); /* in place */
    size_t diff = 0;
    for (int i = 0; i < N * Cc; i++) diff += x[i] != y[i];
    EXPECTF(diff == 0, "layernorm_gelu in place differs in %zu elements", diff);
    free(x), free(y);
}

static void test_layernorm_add(void)
{
    int N = 4099, Cc = 256; /* N leaves a partial item */
    size_t n = (size_t)N * Cc;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    float *y2 = malloc(sizeof(float) * n), *a = malloc(sizeof(float) * n);
    float *w = malloc(sizeof(float) * Cc), *b = malloc(sizeof(float) * Cc);
    for (int c = 0; c < Cc; c++) w[c] = 1.0f + 0.5f * urand(), b[c] = 0.3f * urand();
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * urand() + (float)(i / Cc % 3), a[i] = urand();
    kn_layernorm_add_fast_fwd(y, y2, a, x, w, b, N, Cc, 1e-5f);
    double worst = 0, worst2 = 0;
    for (int r = 0; r < N; r++) {
        double m = 0, v = 0;
        for (int c = 0; c < Cc; c++) m += x[(size_t)r * Cc + c];
        m /= Cc;
        for (int c = 0; c < Cc; c++) v += (x[(size_t)r * Cc + c] - m) * (x[(size_t)r * Cc + c] - m);
        double rs = 1.0 / sqrt(v / Cc + 1e-5);
        for (int c = 0; c < Cc; c++) {
            size_t k = (size_t)r * Cc + c;
            double ref = (x[k] - m) * rs * w[c] + b[c];
            worst = fmax(worst, fabs(ref - y[k]));
            worst2 = fmax(worst2, fabs((double)y[k] + a[k] - y2[k]));
        }
    }
    EXPECTF(worst <= 5e-6, "layernorm_add: max abs error %.3g", worst);
    EXPECTF(worst2 <= 1e-6, "layernorm_add: y2 != y + a (%.3g)", worst2);
    kn_layernorm_add_fast_fwd(x, NULL, NULL, x, w, b, N, Cc, 1e-5f); /* in place, no y2 */
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += x[i] != y[i];
    EXPECTF(diff == 0, "layernorm_add in place differs in %zu elements", diff);
    free(x), free(y), free(y2), free(a), free(w), free(b);
}

static void test_gelu_linear(void)
{
    int G = 3, K = 32, N = 1537, O = 4; /* N leaves a partial block */
    float *x = malloc(sizeof(float) * G * K * N), *y = malloc(sizeof(float) * G * O * N);
    float W[4 * 32], b[32];
    for (int i = 0; i < G * K * N; i++) x[i] = 4.0f * urand();
    for (int i = 0; i < O * K; i++) W[i] = urand();
    for (int k = 0; k < K; k++) b[k] = 0.5f * urand();
    for (int withb = 0; withb < 2; withb++) {
        kn_gelu_linear_fwd(y, x, withb ? b : NULL, W, G, K, N, O);
        double worst = 0;
        for (int g = 0; g < G; g++)
            for (int o = 0; o < O; o++)
                for (int c = 0; c < N; c++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += W[o * K + k] *
                               gelu_d((double)x[((size_t)g * K + k) * N + c] + (withb ? b[k] : 0.0));
                    double e = fabs(acc - y[((size_t)g * O + o) * N + c]);
                    if (!(e <= worst)) worst = e;
                }
        EXPECTF(worst <= 1e-5, "gelu_linear (bias %d): max abs error %.3g", withb, worst);
    }
    float one = 0.7f, w1 = 2.0f, out = 0; /* G = K = N = O = 1 */
    kn_gelu_linear_fwd(&out, &one, NULL, &w1, 1, 1, 1, 1);
    EXPECTF(fabs(out - 2.0 * gelu_d(0.7)) <= 1e-6, "gelu_linear 1x1x1: %g", (double)out);
    free(x), free(y);
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
        EXPECTF(bad == 0, "transpose %dx%d: %d wrong elements", r, c, bad);
        free(x);
        free(y);
    }
}

int main(void)
{
    test_gelu();
    test_softmax();
    test_layernorm_gelu();
    test_gelu_linear();
    test_layernorm_add();
    test_transpose();
    if (expect_failures)
        fprintf(stderr, "%d failure(s)\n", expect_failures);
    else printf("all decoder op tests passed\n");
    return expect_failures ? 1 : 0;
}
