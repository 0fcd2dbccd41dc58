/* test_encoder_ops.c — the TinyViT / encoder ops of kn.h against plain double-precision
 * loops written from the op definitions, on odd shapes (tails in every dimension).
 *
 *   kn_linear_pk_fwd      all epilogues (bias, residual, in-place residual, GELU), strides
 *   kn_linear_pk_ln_fwd   the LayerNorm prologue vs double LN + GEMM
 *   kn_mlp_pk_fwd         LN → fc1 → GELU → fc2 + residual, in place and not
 *   kn_dwconv3_nhwc_fwd   strides 1 and 2, channel tails, GELU
 *   kn_im2col3_*, kn_conv3_pk_fwd  = the dense 3×3 conv (vs kn_conv2d_fwd too)
 *   kn_parallel_for       every item once, tids in range, nested calls inline (repeated)
 *   kn_winattn_fwd        maps not a multiple of the window, pad row, bias, d 32 / 8 / 96,
 *                         and with the fused output projection + residual
 * Exit status 1 on any failed check (each failure is printed).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

static int g_fail, g_checks;
static uint64_t g_rng = 12345;

static float urand(void) /* uniform [-1, 1) */
{
    return 2.0f * kn_rng_uniform(&g_rng) - 1.0f;
}

static float *rnd(size_t n, float scale)
{
    float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    for (size_t i = 0; i < n; i++) p[i] = scale * urand();
    return p;
}

static double gelu_d(double x)
{
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

/* max |a-b| / (atol + rtol |b|) must stay ≤ 1. */
static void check(const char *what, const float *got, const double *want, size_t n, double atol,
                  double rtol)
{
    double worst = 0;
    size_t wi = 0;
    g_checks++;
    for (size_t i = 0; i < n; i++) {
        double r = fabs(got[i] - want[i]) / (atol + rtol * fabs(want[i]));
        if (!(r <= worst)) {
            worst = r;
            wi = i;
        }
    }
    if (!(worst <= 1.0)) {
        printf("FAIL %s: element %zu got %.8g want %.8g\n", what, wi, got[wi], want[wi]);
        g_fail = 1;
    }
}

static void test_linear(int M, int N, int K, int act, int use_b, int res_mode, int pad_x)
{
    int ldx = K + pad_x, ldy = N + 3;
    float *x = rnd((size_t)M * ldx, 1.0f), *W = rnd((size_t)N * K, 0.3f), *b = rnd(N, 0.5f);
    float *res = rnd((size_t)M * ldy, 1.0f), *y = rnd((size_t)M * ldy, 1.0f);
    float *Wp = aligned_alloc(64, kn_pack_size(N, K) * sizeof(float));
    double *want = malloc(sizeof(double) * (size_t)M * ldy);
    for (size_t i = 0; i < (size_t)M * ldy; i++) want[i] = y[i]; /* untouched columns */
    if (res_mode == 2) memcpy(y, res, sizeof(float) * (size_t)M * ldy); /* in place */
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = use_b ? b[n] : 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * ldx + k] * W[(size_t)n * K + k];
            if (res_mode) s += res[(size_t)m * ldy + n];
            want[(size_t)m * ldy + n] = act == KN_ACT_GELU ? gelu_d(s) : s;
        }
    if (res_mode == 2)
        for (int m = 0; m < M; m++)
            for (int n = N; n < ldy; n++) want[(size_t)m * ldy + n] = res[(size_t)m * ldy + n];
    kn_pack_w(Wp, W, N, K);
    kn_linear_pk_fwd(y, ldy, x, ldx, Wp, use_b ? b : NULL,
                     res_mode == 1 ? res : res_mode == 2 ? y : NULL, ldy, M, N, K, act);
    char what[128];
    snprintf(what, sizeof what, "linear_pk M=%d N=%d K=%d act=%d b=%d res=%d", M, N, K, act,
             use_b, res_mode);
    check(what, y, want, (size_t)M * ldy, 1e-5, 1e-5);
    free(x), free(W), free(b), free(res), free(y), free(Wp), free(want);
}

/* kn_linear_pk_ln_fwd = kn_layernorm_fwd then kn_linear_pk_fwd (same LN code), and the
 * LayerNorm itself vs a double loop. */
static void test_linear_ln(int M, int N, int K, int act, int ldx)
{
    float *x = rnd((size_t)M * ldx, 2.0f), *W = rnd((size_t)N * K, 0.3f), *b = rnd(N, 0.5f);
    float *lw = rnd(K, 1.0f), *lb = rnd(K, 1.0f), *xn = malloc(sizeof(float) * (size_t)M * K);
    float *y = malloc(sizeof(float) * (size_t)M * N), *Wp = aligned_alloc(64, kn_pack_size(N, K) * sizeof(float));
    double *want = malloc(sizeof(double) * (size_t)M * N), *lnd = malloc(sizeof(double) * K);
    for (int m = 0; m < M; m++) {
        double mu = 0, var = 0;
        for (int k = 0; k < K; k++) mu += x[(size_t)m * ldx + k];
        mu /= K;
        for (int k = 0; k < K; k++) var += (x[(size_t)m * ldx + k] - mu) * (x[(size_t)m * ldx + k] - mu);
        var /= K;
        for (int k = 0; k < K; k++)
            lnd[k] = (x[(size_t)m * ldx + k] - mu) / sqrt(var + 1e-5) * lw[k] + lb[k];
        for (int n = 0; n < N; n++) {
            double s = b[n];
            for (int k = 0; k < K; k++) s += lnd[k] * W[(size_t)n * K + k];
            want[(size_t)m * N + n] = act == KN_ACT_GELU ? gelu_d(s) : s;
        }
    }
    kn_pack_w(Wp, W, N, K);
    char what[96];
    snprintf(what, sizeof what, "linear_pk_ln M=%d N=%d K=%d act=%d ldx=%d", M, N, K, act, ldx);
    if (kn_linear_pk_ln_fwd(y, N, x, ldx, lw, lb, 1e-5f, Wp, b, NULL, 0, M, N, K, act) != 0) {
        printf("FAIL %s: returned an error\n", what);
        g_fail = 1;
    }
    check(what, y, want, (size_t)M * N, 1e-4, 1e-4);
    if (kn_linear_pk_ln_fwd(y, N, x, ldx, lw, lb, 1e-5f, Wp, b, NULL, 0, M, N, KN_PK_LN_MAXK + 1, act) != -1) {
        printf("FAIL %s: accepted K > KN_PK_LN_MAXK\n", what);
        g_fail = 1;
    }
    free(x), free(W), free(b), free(lw), free(lb), free(xn), free(y), free(Wp), free(want), free(lnd);
}

/* kn_mlp_pk_fwd vs double LN → fc1 → GELU → fc2 + res, in place (y == res) and not. */
static void test_mlp(int M, int C, int Hd, int inplace)
{
    float *x = rnd((size_t)M * C, 2.0f), *W1 = rnd((size_t)Hd * C, 0.3f), *b1 = rnd(Hd, 0.5f);
    float *W2 = rnd((size_t)C * Hd, 0.2f), *b2 = rnd(C, 0.5f), *lw = rnd(C, 1.0f), *lb = rnd(C, 1.0f);
    float *res = rnd((size_t)M * C, 1.0f), *y = malloc(sizeof(float) * (size_t)M * C);
    float *P1 = aligned_alloc(64, kn_pack_size(Hd, C) * sizeof(float));
    float *P2 = aligned_alloc(64, kn_pack_size(C, Hd) * sizeof(float));
    double *want = malloc(sizeof(double) * (size_t)M * C), *ln = malloc(sizeof(double) * C);
    double *h = malloc(sizeof(double) * Hd);
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * C;
        double mu = 0, var = 0;
        for (int k = 0; k < C; k++) mu += xr[k];
        mu /= C;
        for (int k = 0; k < C; k++) var += (xr[k] - mu) * (xr[k] - mu);
        var /= C;
        for (int k = 0; k < C; k++) ln[k] = (xr[k] - mu) / sqrt(var + 1e-5) * lw[k] + lb[k];
        for (int j = 0; j < Hd; j++) {
            double sj = b1[j];
            for (int k = 0; k < C; k++) sj += ln[k] * W1[(size_t)j * C + k];
            h[j] = gelu_d(sj);
        }
        for (int n = 0; n < C; n++) {
            double sn = b2[n] + res[(size_t)m * C + n];
            for (int j = 0; j < Hd; j++) sn += h[j] * W2[(size_t)n * Hd + j];
            want[(size_t)m * C + n] = sn;
        }
    }
    kn_pack_w(P1, W1, Hd, C);
    kn_pack_w(P2, W2, C, Hd);
    size_t per = kn_mlp_pk_scratch(C, Hd);
    float *scr = malloc(sizeof(float) * per * 2);
    if (inplace) memcpy(y, res, sizeof(float) * (size_t)M * C);
    int rc = kn_mlp_pk_fwd(y, x, lw, lb, 1e-5f, P1, b1, P2, b2, inplace ? y : res, M, C, Hd, scr, 2);
    char what[96];
    snprintf(what, sizeof what, "mlp_pk M=%d C=%d Hd=%d inplace=%d", M, C, Hd, inplace);
    if (rc) {
        printf("FAIL %s: returned %d\n", what, rc);
        g_fail = 1;
    }
    check(what, y, want, (size_t)M * C, 1e-4, 1e-4);
    free(x), free(W1), free(b1), free(W2), free(b2), free(lw), free(lb), free(res), free(y);
    free(P1), free(P2), free(want), free(ln), free(h), free(scr);
}

static void test_dwconv(int H, int W, int C, int stride, int act)
{
    float *x = rnd((size_t)H * W * C, 1.0f), *w = rnd((size_t)9 * C, 0.5f), *b = rnd(C, 0.5f);
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    float *y = rnd((size_t)Ho * Wo * C, 1.0f);
    double *want = malloc(sizeof(double) * (size_t)Ho * Wo * C);
    for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++)
            for (int c = 0; c < C; c++) {
                double s = b[c];
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int iy = oy * stride - 1 + ky, ix = ox * stride - 1 + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            s += (double)x[((size_t)iy * W + ix) * C + c] * w[(ky * 3 + kx) * C + c];
                    }
                want[((size_t)oy * Wo + ox) * C + c] = act ? gelu_d(s) : s;
            }
    kn_dwconv3_nhwc_fwd(y, x, w, b, H, W, C, stride, act);
    char what[96];
    snprintf(what, sizeof what, "dwconv3 H=%d W=%d C=%d s=%d act=%d", H, W, C, stride, act);
    check(what, y, want, (size_t)Ho * Wo * C, 1e-5, 1e-5);
    free(x), free(w), free(b), free(y), free(want);
}

/* Dense 3×3 conv two ways: im2col (NHWC or CHW input) + packed GEMM vs double loops, and
 * the CHW path vs the reference kn_conv2d_fwd. */
static void test_conv3(int H, int W, int Cin, int Cout, int stride)
{
    float *xc = rnd((size_t)Cin * H * W, 1.0f), *wt = rnd((size_t)Cout * Cin * 9, 0.3f);
    float *b = rnd(Cout, 0.5f), *xn = malloc(sizeof(float) * (size_t)H * W * Cin);
    for (int c = 0; c < Cin; c++)
        for (int p = 0; p < H * W; p++) xn[(size_t)p * Cin + c] = xc[(size_t)c * H * W + p];
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1, K = 9 * Cin, P = Ho * Wo;
    float *wr = malloc(sizeof(float) * (size_t)Cout * K);
    for (int o = 0; o < Cout; o++)
        for (int c = 0; c < Cin; c++)
            for (int t = 0; t < 9; t++) wr[(size_t)o * K + t * Cin + c] = wt[((size_t)o * Cin + c) * 9 + t];
    float *Wp = aligned_alloc(64, kn_pack_size(Cout, K) * sizeof(float));
    kn_pack_w(Wp, wr, Cout, K);
    float *col = malloc(sizeof(float) * (size_t)P * K), *y = malloc(sizeof(float) * (size_t)P * Cout);
    double *want = malloc(sizeof(double) * (size_t)P * Cout);
    for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++)
            for (int o = 0; o < Cout; o++) {
                double s = b[o];
                for (int c = 0; c < Cin; c++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = oy * stride - 1 + ky, ix = ox * stride - 1 + kx;
                            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                s += (double)xc[((size_t)c * H + iy) * W + ix] *
                                     wt[(((size_t)o * Cin + c) * 3 + ky) * 3 + kx];
                        }
                want[((size_t)oy * Wo + ox) * Cout + o] = s;
            }
    char what[96];
    kn_im2col3_nhwc(col, xn, H, W, Cin, stride, 0, Ho);
    kn_linear_pk_fwd(y, Cout, col, K, Wp, b, NULL, 0, P, Cout, K, KN_ACT_NONE);
    snprintf(what, sizeof what, "im2col3_nhwc conv H=%d W=%d %d->%d s=%d", H, W, Cin, Cout, stride);
    check(what, y, want, (size_t)P * Cout, 1e-5, 1e-5);
    kn_conv3_pk_fwd(y, Cout, xn, H, W, Cin, stride, 0, Ho / 2, Wp, b, Cout, KN_ACT_NONE);
    kn_conv3_pk_fwd(y + (size_t)(Ho / 2) * Wo * Cout, Cout, xn, H, W, Cin, stride, Ho / 2,
                    Ho - Ho / 2, Wp, b, Cout, KN_ACT_NONE);
    snprintf(what, sizeof what, "conv3_pk (implicit) H=%d W=%d %d->%d s=%d", H, W, Cin, Cout, stride);
    check(what, y, want, (size_t)P * Cout, 1e-5, 1e-5);
    int band = Ho / 2; /* two row bands: exercises oy0 > 0 */
    kn_im2col3_chw(col, xc, Cin, H, W, stride, 0, band);
    kn_im2col3_chw(col + (size_t)band * Wo * K, xc, Cin, H, W, stride, band, Ho - band);
    kn_linear_pk_fwd(y, Cout, col, K, Wp, b, NULL, 0, P, Cout, K, KN_ACT_NONE);
    snprintf(what, sizeof what, "im2col3_chw conv H=%d W=%d %d->%d s=%d", H, W, Cin, Cout, stride);
    check(what, y, want, (size_t)P * Cout, 1e-5, 1e-5);
    /* The project's reference conv (CHW output) agrees with the same numbers. */
    float *yr = malloc(sizeof(float) * (size_t)P * Cout);
    float *scr = malloc(sizeof(float) * (kn_conv2d_scratch(Cin, H, W, 3, stride, 1, 1) + 1));
    kn_conv2d_fwd(yr, xc, wt, b, Cin, H, W, Cout, 3, stride, 1, 1, scr);
    double *wr2 = malloc(sizeof(double) * (size_t)P * Cout);
    for (int o = 0; o < Cout; o++)
        for (int p = 0; p < P; p++) wr2[(size_t)p * Cout + o] = yr[(size_t)o * P + p];
    snprintf(what, sizeof what, "im2col3 conv vs kn_conv2d_fwd H=%d W=%d", H, W);
    check(what, y, wr2, (size_t)P * Cout, 1e-4, 1e-4);
    free(xc), free(wt), free(b), free(xn), free(wr), free(Wp), free(col), free(y), free(want);
    free(yr), free(scr), free(wr2);
}

static void test_winattn(int H, int W, int heads, int d, int ws, int use_bias)
{
    int C = heads * d, ld = 3 * C, n = ws * ws;
    float *qkv = rnd((size_t)H * W * ld, 1.0f), *pad = rnd(ld, 1.0f);
    float *bias = rnd((size_t)heads * n * n, 2.0f), *out = rnd((size_t)H * W * (C + 5), 1.0f);
    double *want = malloc(sizeof(double) * (size_t)H * W * (C + 5));
    for (size_t i = 0; i < (size_t)H * W * (C + 5); i++) want[i] = out[i];
    float scale = 1.0f / sqrtf((float)d);
    int nwy = (H + ws - 1) / ws, nwx = (W + ws - 1) / ws;
    double *s = malloc(sizeof(double) * n);
    for (int wy = 0; wy < nwy; wy++)
        for (int wx = 0; wx < nwx; wx++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < n; i++) {
                    int iy = wy * ws + i / ws, ix = wx * ws + i % ws;
                    if (iy >= H || ix >= W) continue;
                    const float *q = qkv + ((size_t)iy * W + ix) * ld + h * 3 * d;
                    double mx = -1e300, sum = 0;
                    for (int j = 0; j < n; j++) {
                        int jy = wy * ws + j / ws, jx = wx * ws + j % ws;
                        const float *r = (jy < H && jx < W) ? qkv + ((size_t)jy * W + jx) * ld : pad;
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += (double)q[c] * r[h * 3 * d + d + c];
                        s[j] = dot * scale + (use_bias ? bias[((size_t)h * n + i) * n + j] : 0.0);
                        mx = s[j] > mx ? s[j] : mx;
                    }
                    for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
                    for (int c = 0; c < d; c++) {
                        double o = 0;
                        for (int j = 0; j < n; j++) {
                            int jy = wy * ws + j / ws, jx = wx * ws + j % ws;
                            const float *r = (jy < H && jx < W) ? qkv + ((size_t)jy * W + jx) * ld : pad;
                            o += s[j] * r[h * 3 * d + 2 * d + c];
                        }
                        want[((size_t)iy * W + ix) * (C + 5) + h * d + c] = o / sum;
                    }
                }
    size_t per = kn_winattn_scratch(heads, d, ws);
    float *scr = malloc(sizeof(float) * per * 3);
    int rc = kn_winattn_fwd(out, C + 5, qkv, pad, use_bias ? bias : NULL, H, W, heads, d, ws, scale,
                            NULL, NULL, scr, 3);
    /* Fused projection: out2 = base + attention · Wpᵀ + bp, from the map just checked. */
    float *Wpj = rnd((size_t)C * C, 0.2f), *bpj = rnd(C, 0.5f), *base = rnd((size_t)H * W * C, 1.0f);
    float *Pk = aligned_alloc(64, kn_pack_size(C, C) * sizeof(float)), *out2 = malloc(sizeof(float) * (size_t)H * W * C);
    double *want2 = malloc(sizeof(double) * (size_t)H * W * C);
    kn_pack_w(Pk, Wpj, C, C);
    memcpy(out2, base, sizeof(float) * (size_t)H * W * C);
    for (int p = 0; p < H * W; p++)
        for (int o = 0; o < C; o++) {
            double acc = (double)base[(size_t)p * C + o] + bpj[o];
            for (int c = 0; c < C; c++) acc += want[(size_t)p * (C + 5) + c] * Wpj[(size_t)o * C + c];
            want2[(size_t)p * C + o] = acc;
        }
    rc |= kn_winattn_fwd(out2, C, qkv, pad, use_bias ? bias : NULL, H, W, heads, d, ws, scale, Pk, bpj,
                         scr, 3);
    char what2[112];
    snprintf(what2, sizeof what2, "winattn+proj H=%d W=%d heads=%d d=%d ws=%d", H, W, heads, d, ws);
    check(what2, out2, want2, (size_t)H * W * C, 1e-4, 1e-4);
    free(Wpj), free(bpj), free(base), free(Pk), free(out2), free(want2);
    free(scr);
    char what[96];
    snprintf(what, sizeof what, "winattn H=%d W=%d heads=%d d=%d ws=%d bias=%d", H, W, heads, d, ws,
             use_bias);
    if (rc) {
        printf("FAIL %s: returned %d\n", what, rc);
        g_fail = 1;
    }
    check(what, out, want, (size_t)H * W * (C + 5), 1e-5, 1e-4);
    free(qkv), free(pad), free(bias), free(out), free(want), free(s);
}

/* kn_parallel_for: every item exactly once, tids in range, nested calls run inline. */
typedef struct pf_ctx {
    int *hits, *tids, max_threads;
    int *nested_hits;
} pf_ctx_t;

static void pf_inner(void *c, int i, int tid)
{
    pf_ctx_t *p = c;
    (void)tid;
    __atomic_fetch_add(&p->nested_hits[i], 1, __ATOMIC_RELAXED);
}

static void pf_item(void *c, int i, int tid)
{
    pf_ctx_t *p = c;
    __atomic_fetch_add(&p->hits[i], 1, __ATOMIC_RELAXED);
    p->tids[i] = tid;
    if (i % 97 == 0) kn_parallel_for(5, KN_POOL_ANY, pf_inner, c); /* nested: inline */
}

static void test_pool(int n, int max_threads)
{
    int *hits = calloc((size_t)n + 1, sizeof(int)), *tids = calloc((size_t)n + 1, sizeof(int));
    int nested[5] = {0};
    pf_ctx_t c = {.hits = hits, .tids = tids, .max_threads = max_threads, .nested_hits = nested};
    kn_parallel_for(n, max_threads, pf_item, &c);
    int bad = 0, ncalls = 0;
    for (int i = 0; i < n; i++) {
        if (hits[i] != 1 || tids[i] < 0 || tids[i] >= max_threads) bad++;
        if (i % 97 == 0) ncalls++;
    }
    for (int k = 0; k < 5; k++)
        if (nested[k] != ncalls) bad++;
    if (bad) {
        printf("FAIL parallel_for n=%d max_threads=%d: %d bad items\n", n, max_threads, bad);
        g_fail = 1;
    }
    free(hits), free(tids);
}

int main(void)
{
    kn_set_threads(2);
    for (int r = 0; r < 50; r++) { /* repeated: publish/claim/teardown races */
        test_pool(1000, 2);
        test_pool(3, KN_POOL_ANY);
        test_pool(1, 2);
        test_pool(0, 2);
        test_pool(500, 1);
    }
    static const int Ms[] = {1, 5, 12, 13, 97, 200};
    static const int Ns[] = {1, 16, 17, 32, 33, 70};
    static const int Ks[] = {1, 3, 27, 64, 130};
    for (int a = 0; a < 6; a++)
        for (int bb = 0; bb < 6; bb++)
            for (int c = 0; c < 5; c++) {
                int v = (a + bb + c) % 4;
                test_linear(Ms[a], Ns[bb], Ks[c], v & 1 ? KN_ACT_GELU : KN_ACT_NONE, v != 2, v % 3,
                            (a + c) % 2 ? 3 : 0);
            }
    test_linear(300, 64, 256, KN_ACT_GELU, 1, 2, 0); /* MBConv shortcut form */
    test_linear_ln(203, 70, 160, KN_ACT_GELU, 160);
    test_linear_ln(97, 33, 48, KN_ACT_NONE, 51);
    test_linear_ln(5, 16, 320, KN_ACT_NONE, 320);
    test_mlp(203, 48, 192, 1);
    test_mlp(13, 40, 70, 0);
    for (int C = 1; C <= 40; C += 13)
        for (int s = 1; s <= 2; s++) {
            test_dwconv(9, 7, C, s, KN_ACT_NONE);
            test_dwconv(8, 11, C, s, KN_ACT_GELU);
        }
    test_dwconv(1, 1, 16, 1, KN_ACT_GELU);
    test_conv3(9, 7, 3, 32, 2);
    test_conv3(8, 10, 5, 17, 1);
    test_conv3(6, 6, 32, 64, 2);
    test_conv3(13, 5, 16, 40, 1); /* 40 outputs: a masked second panel */
    test_winattn(9, 12, 2, 32, 7, 1);    /* 2×2 windows, pads on both sides */
    test_winattn(14, 14, 1, 32, 7, 0);   /* exact multiple, no bias */
    test_winattn(15, 13, 3, 32, 14, 1);  /* n = 196, heavy padding */
    test_winattn(5, 9, 2, 8, 4, 1);      /* d = 8: the generic path */
    test_winattn(8, 8, 2, 96, 3, 1);     /* d = 96: wider than 64 */
    float dummy = 0;
    if (kn_winattn_fwd(&dummy, 1, &dummy, &dummy, NULL, 1, 1, 1, 32, 17, 1.0f, NULL, NULL, &dummy, 1) != -1) {
        printf("FAIL winattn accepted ws=17 (n > KN_WINATTN_MAXN)\n");
        g_fail = 1;
    }
    printf("%d checks; %s\n", g_checks, g_fail ? "encoder ops: FAILED" : "encoder ops: all passed");
    return g_fail;
}
