/* test_kcu_ops.c — every kcu_ op (kernels/kn_cuda.h) against its CPU reference kn_ op on
 * random inputs with odd shapes, forward and backward.
 *
 * Usage: test_kcu_ops [group]   group: core, norm, conv, attn, train (default: all).
 * Exit 77 (ctest SKIP_RETURN_CODE) when no CUDA device is present; 1 on any failed check.
 * Error measure as in kernels/README.md: max |gpu − cpu| / max |cpu| over the tensor.
 * Tolerances: TF32 GEMM-based ops 2e-3, fp32 attention 1e-4, element-wise and reductions 1e-5
 * (looser where the CPU op itself has a documented approximation, noted at the check).
 * Parameter gradients are checked in accumulate mode (both sides start from the same
 * random values).
 */
#include "kn.h"
#include "kn_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_GEMM 2e-3
#define TOL_ATT 1e-4
#define TOL_EL 1e-5

static kcu_ctx_t *ctx;
static int failures, checks;
static uint64_t rng = 0x5eed1234abcdULL;

static float *hrand(size_t n, float lo, float hi)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * kn_rng_uniform(&rng);
    return p;
}

static float *hzero(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* 64-byte aligned zeroed block (the CPU attention ops want aligned scratch) */
static float *halign(size_t n)
{
    size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

static float *hcopy(const float *src, size_t n)
{
    float *p = hzero(n);
    memcpy(p, src, n * sizeof *p);
    return p;
}

/* device copy of host data (arena) */
static float *dup_(const float *h, size_t n)
{
    float *d = kcu_upload_new(ctx, h, n ? n : 1);
    if (!d) {
        fprintf(stderr, "upload failed: %s\n", kcu_errmsg(ctx));
        exit(1);
    }
    return d;
}

static float *dalloc(size_t n)
{
    float *d = kcu_allocf(ctx, n ? n : 1);
    if (!d) {
        fprintf(stderr, "arena: %s\n", kcu_errmsg(ctx));
        exit(1);
    }
    return d;
}

/* downloads d[n] and compares with ref[n] */
static void check(const char *name, const float *d, const float *ref, size_t n, double tol)
{
    err_t e = {0};
    checks++;
    if (kcu_sync(ctx, &e)) {
        printf("FAIL %-40s device error: %s\n", name, e.msg);
        failures++;
        return;
    }
    float *got = hzero(n);
    if (kcu_download(ctx, got, d, n * sizeof(float))) {
        printf("FAIL %-40s download: %s\n", name, kcu_errmsg(ctx));
        failures++;
        free(got);
        return;
    }
    double md = 0, mr = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) bad = 1;
        double df = fabs((double)got[i] - ref[i]);
        md = df > md ? df : md;
        mr = fabs(ref[i]) > mr ? fabs(ref[i]) : mr;
    }
    double rel = mr > 0 ? md / mr : md;
    int ok = !bad && rel <= tol;
    printf("%s %-40s rel %.3g (tol %.1g, n %zu)\n", ok ? "ok  " : "FAIL", name, rel, tol, n);
    if (!ok) failures++;
    free(got);
}

static void expect_rc(const char *name, int rc, int want)
{
    checks++;
    if (rc != want) {
        printf("FAIL %-40s rc %d, want %d (%s)\n", name, rc, want, kcu_errmsg(ctx));
        failures++;
    } else
        printf("ok   %-40s rc %d\n", name, rc);
}

/* ---- core: GEMM, linear, element-wise, softmax, transpose ----------------------------------- */

static void t_gemm(void)
{
    int M = 37, N = 29, K = 53;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb,
                   nc = (size_t)M * ldc;
            float *A = hrand(na, -1, 1), *B = hrand(nb, -1, 1), *C = hrand(nc, -1, 1);
            float *dA = dup_(A, na), *dB = dup_(B, nb), *dC = dup_(C, nc);
            kn_gemm(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.3f, C, ldc);
            kcu_gemm(ctx, ta, tb, M, N, K, 0.7f, dA, lda, dB, ldb, 0.3f, dC, ldc);
            char name[64];
            snprintf(name, sizeof name, "gemm ta=%d tb=%d (TF32)", ta, tb);
            check(name, dC, C, nc, TOL_GEMM);
            free(A);
            free(B);
            free(C);
        }
    /* batched: 3 problems, compare with 3 CPU GEMMs */
    int bt = 3;
    float *A = hrand((size_t)bt * M * K, -1, 1), *B = hrand((size_t)bt * N * K, -1, 1);
    float *C = hzero((size_t)bt * M * N);
    float *dA = dup_(A, (size_t)bt * M * K), *dB = dup_(B, (size_t)bt * N * K);
    float *dC = dup_(C, (size_t)bt * M * N);
    for (int i = 0; i < bt; i++)
        kn_gemm(0, 1, M, N, K, 1.0f, A + (size_t)i * M * K, K, B + (size_t)i * N * K, K, 0.0f,
                C + (size_t)i * M * N, N);
    kcu_gemm_batched(ctx, 0, 1, M, N, K, 1.0f, dA, K, (long long)M * K, dB, K, (long long)N * K,
                     0.0f, dC, N, (long long)M * N, bt);
    check("gemm batched x3", dC, C, (size_t)bt * M * N, TOL_GEMM);
    /* exact fp32 (TF32 off) is much closer */
    float *C2 = hzero((size_t)M * N);
    float *dC2 = dup_(C2, (size_t)M * N);
    kcu_set_tf32(ctx, 0);
    kcu_gemm(ctx, 0, 1, M, N, K, 1.0f, dA, K, dB, K, 0.0f, dC2, N);
    kcu_set_tf32(ctx, 1);
    check("gemm fp32 (TF32 off)", dC2, C, (size_t)M * N, 1e-5);
    free(A);
    free(B);
    free(C);
    free(C2);
}

static void t_linear(void)
{
    int N = 45, K = 67, O = 33;
    float *x = hrand((size_t)N * K, -1, 1), *W = hrand((size_t)O * K, -1, 1), *b = hrand(O, -1, 1);
    float *y = hzero((size_t)N * O);
    float *dx_ = dup_(x, (size_t)N * K), *dW_ = dup_(W, (size_t)O * K), *db_ = dup_(b, O);
    float *dy_out = dalloc((size_t)N * O);
    kn_linear_fwd(y, x, W, b, N, K, O);
    kcu_linear_fwd(ctx, dy_out, dx_, dW_, db_, N, K, O);
    check("linear_fwd", dy_out, y, (size_t)N * O, TOL_GEMM);
    /* backward, parameter grads accumulated onto random values */
    float *gy = hrand((size_t)N * O, -1, 1), *gx = hzero((size_t)N * K);
    float *gW = hrand((size_t)O * K, -1, 1), *gb = hrand(O, -1, 1);
    float *dgy = dup_(gy, (size_t)N * O), *dgx = dalloc((size_t)N * K);
    float *dgW = dup_(gW, (size_t)O * K), *dgb = dup_(gb, O);
    kn_linear_bwd(gx, gW, gb, gy, x, W, N, K, O);
    kcu_linear_bwd(ctx, dgx, dgW, dgb, dgy, dx_, dW_, N, K, O);
    check("linear_bwd dx", dgx, gx, (size_t)N * K, TOL_GEMM);
    check("linear_bwd dW (accumulated)", dgW, gW, (size_t)O * K, TOL_GEMM);
    check("linear_bwd db (accumulated)", dgb, gb, O, TOL_EL);
    /* linear_ex: act(x Wᵀ + b + res) with strides, then in place on the residual */
    int ldy = O + 3, ldr = O + 3;
    float *res = hrand((size_t)N * ldr, -1, 1), *ref = hzero((size_t)N * ldy);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            float v = y[(size_t)n * O + o] + res[(size_t)n * ldr + o];
            ref[(size_t)n * ldy + o] = 0.5f * v * (1.0f + erff(v * 0.70710678f));
        }
    float *dres = dup_(res, (size_t)N * ldr), *dyo = dup_(ref, (size_t)N * ldy);
    kcu_zero(ctx, dyo, (size_t)N * ldy * sizeof(float));
    kcu_linear_ex(ctx, dyo, ldy, dx_, K, dW_, db_, dres, ldr, N, O, K, KCU_ACT_GELU);
    /* the pad columns are 0 in the device output; mirror that in the reference */
    for (int n = 0; n < N; n++)
        for (int o = O; o < ldy; o++) ref[(size_t)n * ldy + o] = 0.0f;
    check("linear_ex bias+res+gelu, strides", dyo, ref, (size_t)N * ldy, TOL_GEMM);
    kcu_linear_ex(ctx, dres, ldr, dx_, K, dW_, db_, dres, ldr, N, O, K, KCU_ACT_NONE);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) res[(size_t)n * ldr + o] += y[(size_t)n * O + o];
    check("linear_ex residual in place", dres, res, (size_t)N * ldr, TOL_GEMM);
    free(x);
    free(W);
    free(b);
    free(y);
    free(gy);
    free(gx);
    free(gW);
    free(gb);
    free(res);
    free(ref);
}

static void t_elem(void)
{
    size_t n = 1001;
    float *x = hrand(n, -4, 4), *a = hrand(n, -2, 2), *y = hzero(n), *dx = hzero(n);
    float *dxd = dup_(x, n), *dad = dup_(a, n), *dyd = dalloc(n);
    kn_gelu_fwd(y, x, n);
    kcu_gelu_fwd(ctx, dyd, dxd, n);
    check("gelu_fwd", dyd, y, n, TOL_EL);
    kn_gelu_bwd(dx, a, x, n);
    kcu_gelu_bwd(ctx, dyd, dad, dxd, n);
    check("gelu_bwd", dyd, dx, n, TOL_EL);
    kn_relu_fwd(y, x, n);
    kcu_relu_fwd(ctx, dyd, dxd, n);
    check("relu_fwd", dyd, y, n, 0);
    kn_relu_bwd(dx, a, x, n);
    kcu_relu_bwd(ctx, dyd, dad, dxd, n);
    check("relu_bwd", dyd, dx, n, 0);
    float *xs = hrand(n, -40, 40), *xsd = dup_(xs, n), *sy = hzero(n), *sdy = dalloc(n);
    kn_sigmoid_fwd(sy, xs, n);
    kcu_sigmoid_fwd(ctx, sdy, xsd, n);
    check("sigmoid_fwd (|x| up to 40)", sdy, sy, n, TOL_EL);
    kn_sigmoid_bwd(dx, a, sy, n);
    kcu_sigmoid_bwd(ctx, dyd, dad, sdy, n);
    check("sigmoid_bwd", dyd, dx, n, TOL_EL);
    kn_add(y, x, a, n);
    kcu_add(ctx, dyd, dxd, dad, n);
    check("add", dyd, y, n, TOL_EL);
    kn_mul(y, x, a, n);
    kcu_mul(ctx, dyd, dxd, dad, n);
    check("mul", dyd, y, n, TOL_EL);
    kn_axpby(y, 0.3f, x, -1.7f, a, n);
    kcu_axpby(ctx, dyd, 0.3f, dxd, -1.7f, dad, n);
    check("axpby", dyd, y, n, TOL_EL);
    kn_axpby(y, -2.5f, x, 0.0f, NULL, n);
    kcu_axpby(ctx, dyd, -2.5f, dxd, 0.0f, NULL, n);
    check("axpby b=NULL", dyd, y, n, TOL_EL);
    /* in place */
    float *xi = hcopy(x, n), *xid = dup_(x, n);
    kn_gelu_fwd(xi, xi, n);
    kcu_gelu_fwd(ctx, xid, xid, n);
    check("gelu_fwd in place", xid, xi, n, TOL_EL);
    free(x);
    free(a);
    free(y);
    free(dx);
    free(xs);
    free(sy);
    free(xi);
}

static void t_softmax(void)
{
    int rows = 13, cols = 301;
    size_t n = (size_t)rows * cols;
    float *x = hrand(n, -6, 6), *y = hzero(n), *dy = hrand(n, -1, 1), *dx = hzero(n);
    float *xd = dup_(x, n), *yd = dalloc(n), *dyd = dup_(dy, n), *dxd = dalloc(n);
    kn_softmax_fwd(y, x, rows, cols);
    kcu_softmax_fwd(ctx, yd, xd, rows, cols);
    check("softmax_fwd 13x301", yd, y, n, TOL_EL);
    kn_softmax_bwd(dx, dy, y, rows, cols);
    kcu_softmax_bwd(ctx, dxd, dyd, yd, rows, cols);
    check("softmax_bwd", dxd, dx, n, TOL_EL);
    kn_softmax_dim0_fast_fwd(y, x, rows, cols);
    kcu_softmax_dim0_fwd(ctx, yd, xd, rows, cols);
    check("softmax_dim0 (cpu fast exp: 2e-6)", yd, y, n, 1e-5);
    kn_transpose(y, x, rows, cols);
    kcu_transpose(ctx, yd, xd, rows, cols, 1);
    check("transpose 13x301 (exact)", yd, y, n, 0);
    /* batched transpose: second matrix */
    float *x2 = hrand(2 * n, -1, 1), *y2 = hzero(2 * n), *x2d = dup_(x2, 2 * n), *y2d = dalloc(2 * n);
    kn_transpose(y2, x2, rows, cols);
    kn_transpose(y2 + n, x2 + n, rows, cols);
    kcu_transpose(ctx, y2d, x2d, rows, cols, 2);
    check("transpose batch 2", y2d, y2, 2 * n, 0);
    /* decoder GELU-linear */
    int G = 2, K = 7, N = 45, O = 5;
    float *gx = hrand((size_t)G * K * N, -2, 2), *gb = hrand(K, -1, 1), *gW = hrand((size_t)O * K, -1, 1);
    float *gy = hzero((size_t)G * O * N);
    float *gyd = dalloc((size_t)G * O * N);
    kn_gelu_linear_fwd(gy, gx, gb, gW, G, K, N, O);
    kcu_gelu_linear_fwd(ctx, gyd, dup_(gx, (size_t)G * K * N), dup_(gb, K), dup_(gW, (size_t)O * K),
                        G, K, N, O);
    check("gelu_linear_fwd", gyd, gy, (size_t)G * O * N, TOL_EL);
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(x2);
    free(y2);
    free(gx);
    free(gb);
    free(gW);
    free(gy);
}

static void t_errors(void)
{
    float *d = dalloc(16);
    expect_rc("invalid gemm (K = 0)", kcu_gemm(ctx, 0, 0, 4, 4, 0, 1, d, 4, d, 4, 0, d, 4),
              ERR_INVALID);
    err_t e = {0};
    expect_rc("sticky error reported by kcu_sync", kcu_sync(ctx, &e), ERR_INVALID);
    expect_rc("kcu_sync clears the error", kcu_sync(ctx, &e), 0);
    size_t m = kcu_mark(ctx);
    void *p1 = kcu_alloc(ctx, 1000);
    kcu_reset(ctx, m);
    void *p2 = kcu_alloc(ctx, 1000);
    checks++;
    if (!p1 || p1 != p2) {
        printf("FAIL arena mark/reset reuses the address\n");
        failures++;
    } else
        printf("ok   arena mark/reset reuses the address\n");
    checks++;
    if (kcu_alloc(ctx, kcu_arena_size(ctx) + 1)) {
        printf("FAIL arena overflow returns NULL\n");
        failures++;
    } else
        printf("ok   arena overflow returns NULL\n");
    kcu_sync(ctx, &e);
}

/* ---- norm ------------------------------------------------------------------------------------ */

static void t_norm(void)
{
    int N = 37, C = 77;
    size_t n = (size_t)N * C;
    float *x = hrand(n, -3, 5), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -1, 1);
    float *y = hzero(n), *mean = hzero(N), *rstd = hzero(N);
    float *xd = dup_(x, n), *wd = dup_(w, C), *bd = dup_(b, C), *yd = dalloc(n);
    float *md = dalloc(N), *rd = dalloc(N);
    kn_layernorm_fwd(y, mean, rstd, x, w, b, N, C, 1e-5f);
    kcu_layernorm_fwd(ctx, yd, md, rd, xd, wd, bd, N, C, 1e-5f);
    check("layernorm_fwd 37x77", yd, y, n, TOL_EL);
    check("layernorm_fwd mean", md, mean, N, TOL_EL);
    check("layernorm_fwd rstd", rd, rstd, N, TOL_EL);
    float *dy = hrand(n, -1, 1), *dx = hzero(n), *dw = hrand(C, -1, 1), *db = hrand(C, -1, 1);
    float *dyd = dup_(dy, n), *dxd = dalloc(n), *dwd = dup_(dw, C), *dbd = dup_(db, C);
    kn_layernorm_bwd(dx, dw, db, dy, x, mean, rstd, w, N, C);
    kcu_layernorm_bwd(ctx, dxd, dwd, dbd, dyd, xd, md, rd, wd, N, C);
    check("layernorm_bwd dx", dxd, dx, n, TOL_EL);
    check("layernorm_bwd dw (accumulated)", dwd, dw, C, TOL_EL);
    check("layernorm_bwd db (accumulated)", dbd, db, C, TOL_EL);
    /* fused decoder variants */
    float *a = hrand(n, -1, 1), *y2 = hzero(n), *y2d = dalloc(n);
    kn_layernorm_add_fast_fwd(y, y2, a, x, w, b, N, C, 1e-5f);
    kcu_layernorm_add_fwd(ctx, yd, y2d, dup_(a, n), xd, wd, bd, N, C, 1e-5f);
    check("layernorm_add_fwd y", yd, y, n, TOL_EL);
    check("layernorm_add_fwd y2", y2d, y2, n, TOL_EL);
    kn_layernorm_gelu_fast_fwd(y, x, w, b, N, C, 1e-5f);
    kcu_layernorm_gelu_fwd(ctx, yd, xd, wd, bd, N, C, 1e-5f);
    check("layernorm_gelu_fwd", yd, y, n, TOL_EL);
    /* LayerNorm2d on [C, HW] */
    int C2 = 19, HW = 133;
    size_t n2 = (size_t)C2 * HW;
    float *x2 = hrand(n2, -2, 3), *w2 = hrand(C2, 0.5f, 1.5f), *b2 = hrand(C2, -1, 1);
    float *o2 = hzero(n2), *x2d = dup_(x2, n2), *w2d = dup_(w2, C2), *b2d = dup_(b2, C2);
    float *o2d = dalloc(n2);
    kn_layernorm2d_fwd(o2, x2, w2, b2, C2, HW, 1e-6f);
    kcu_layernorm2d_fwd(ctx, o2d, x2d, w2d, b2d, C2, HW, 1e-6f);
    check("layernorm2d_fwd 19x133", o2d, o2, n2, TOL_EL);
    float *g2 = hrand(n2, -1, 1), *gx2 = hzero(n2), *gw2 = hrand(C2, -1, 1), *gb2 = hrand(C2, -1, 1);
    float *sc = hzero(2 * (size_t)HW);
    float *g2d = dup_(g2, n2), *gx2d = dalloc(n2), *gw2d = dup_(gw2, C2), *gb2d = dup_(gb2, C2);
    kn_layernorm2d_bwd(gx2, gw2, gb2, g2, x2, w2, C2, HW, 1e-6f, sc);
    kcu_layernorm2d_bwd(ctx, gx2d, gw2d, gb2d, g2d, x2d, w2d, C2, HW, 1e-6f);
    check("layernorm2d_bwd dx", gx2d, gx2, n2, TOL_EL);
    check("layernorm2d_bwd dw (accumulated)", gw2d, gw2, C2, TOL_EL);
    check("layernorm2d_bwd db (accumulated)", gb2d, gb2, C2, TOL_EL);
    free(x);
    free(w);
    free(b);
    free(y);
    free(mean);
    free(rstd);
    free(dy);
    free(dx);
    free(dw);
    free(db);
    free(a);
    free(y2);
    free(x2);
    free(w2);
    free(b2);
    free(o2);
    free(g2);
    free(gx2);
    free(gw2);
    free(gb2);
    free(sc);
}

/* ---- conv -------------------------------------------------------------------------------------- */

static void t_conv2d_case(int Cin, int H, int W, int Cout, int k, int stride, int pad, int groups)
{
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    size_t nx = (size_t)Cin * H * W, ny = (size_t)Cout * Ho * Wo,
           nw = (size_t)Cout * (Cin / groups) * k * k;
    float *x = hrand(2 * nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(Cout, -1, 1);
    float *y = hzero(2 * ny), *sc = hzero(kn_conv2d_scratch(Cin, H, W, k, stride, pad, groups) + 1);
    kn_conv2d_fwd(y, x, w, b, Cin, H, W, Cout, k, stride, pad, groups, sc);
    kn_conv2d_fwd(y + ny, x + nx, w, b, Cin, H, W, Cout, k, stride, pad, groups, sc);
    float *xd = dup_(x, 2 * nx), *wd = dup_(w, nw), *bd = dup_(b, Cout), *yd = dalloc(2 * ny);
    kcu_conv2d_fwd(ctx, yd, xd, wd, bd, 2, Cin, H, W, Cout, k, stride, pad, groups);
    char name[96];
    snprintf(name, sizeof name, "conv2d_fwd B2 %dx%dx%d->%d k%d s%d p%d g%d", Cin, H, W, Cout, k,
             stride, pad, groups);
    check(name, yd, y, 2 * ny, TOL_GEMM);
    float *dy = hrand(ny, -1, 1), *dx = hzero(nx), *dw = hrand(nw, -1, 1), *db = hrand(Cout, -1, 1);
    float *dyd = dup_(dy, ny), *dxd = dalloc(nx), *dwd = dup_(dw, nw), *dbd = dup_(db, Cout);
    kn_conv2d_bwd(dx, dw, db, dy, x, w, Cin, H, W, Cout, k, stride, pad, groups, sc);
    kcu_conv2d_bwd(ctx, dxd, dwd, dbd, dyd, xd, wd, 1, Cin, H, W, Cout, k, stride, pad, groups);
    snprintf(name, sizeof name, "conv2d_bwd dx k%d s%d g%d", k, stride, groups);
    check(name, dxd, dx, nx, TOL_GEMM);
    snprintf(name, sizeof name, "conv2d_bwd dw k%d s%d g%d (acc)", k, stride, groups);
    check(name, dwd, dw, nw, TOL_GEMM);
    snprintf(name, sizeof name, "conv2d_bwd db k%d s%d g%d (acc)", k, stride, groups);
    check(name, dbd, db, Cout, TOL_EL);
    free(x);
    free(w);
    free(b);
    free(y);
    free(sc);
    free(dy);
    free(dx);
    free(dw);
    free(db);
}

static void t_conv(void)
{
    t_conv2d_case(5, 13, 11, 7, 3, 1, 1, 1);
    t_conv2d_case(5, 13, 11, 7, 3, 2, 1, 1);
    t_conv2d_case(6, 9, 10, 4, 1, 1, 0, 1);
    t_conv2d_case(6, 9, 11, 6, 3, 1, 1, 6); /* depthwise */
    t_conv2d_case(3, 16, 12, 8, 4, 4, 0, 1); /* patch embedding */
    t_conv2d_case(4, 7, 9, 6, 3, 1, 1, 2); /* grouped */

    /* transposed 2×2 */
    int Cin = 6, H = 5, W = 7, Cout = 4;
    size_t nx = (size_t)Cin * H * W, ny = (size_t)Cout * 4 * H * W, nw = (size_t)Cin * Cout * 4;
    float *x = hrand(2 * nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(Cout, -1, 1);
    float *y = hzero(2 * ny);
    kn_convt2x2_fwd(y, x, w, b, Cin, H, W, Cout);
    kn_convt2x2_fwd(y + ny, x + nx, w, b, Cin, H, W, Cout);
    float *xd = dup_(x, 2 * nx), *wd = dup_(w, nw), *yd = dalloc(2 * ny);
    kcu_convt2x2_fwd(ctx, yd, xd, wd, dup_(b, Cout), 2, Cin, H, W, Cout);
    check("convt2x2_fwd B2", yd, y, 2 * ny, TOL_GEMM);
    float *dy = hrand(ny, -1, 1), *dx = hzero(nx), *dw = hrand(nw, -1, 1), *db = hrand(Cout, -1, 1);
    float *sc = hzero(kn_convt2x2_bwd_scratch(H, W, Cout));
    float *dxd = dalloc(nx), *dwd = dup_(dw, nw), *dbd = dup_(db, Cout);
    kn_convt2x2_bwd(dx, dw, db, dy, x, w, Cin, H, W, Cout, sc);
    kcu_convt2x2_bwd(ctx, dxd, dwd, dbd, dup_(dy, ny), xd, wd, Cin, H, W, Cout);
    check("convt2x2_bwd dx", dxd, dx, nx, TOL_GEMM);
    check("convt2x2_bwd dw (acc)", dwd, dw, nw, TOL_GEMM);
    check("convt2x2_bwd db (acc)", dbd, db, Cout, TOL_EL);
    free(x);
    free(w);
    free(b);
    free(y);
    free(dy);
    free(dx);
    free(dw);
    free(db);
    free(sc);

    /* channel-last 3×3: depthwise vs kn_dwconv3_nhwc_fwd (w9c layout), dense vs kn_conv2d_fwd */
    int Hh = 9, Ww = 7, C = 21;
    for (int stride = 1; stride <= 2; stride++)
        for (int act = 0; act < 2; act++) {
            int Ho = (Hh - 1) / stride + 1, Wo = (Ww - 1) / stride + 1;
            size_t nxx = (size_t)Hh * Ww * C, nyy = (size_t)Ho * Wo * C;
            float *xx = hrand(nxx, -2, 2), *wt = hrand((size_t)C * 9, -1, 1), *bb = hrand(C, -1, 1);
            float *w9c = hzero((size_t)9 * C), *yy = hzero(nyy);
            for (int c = 0; c < C; c++)
                for (int t = 0; t < 9; t++) w9c[(size_t)t * C + c] = wt[(size_t)c * 9 + t];
            kn_dwconv3_nhwc_fwd(yy, xx, w9c, bb, Hh, Ww, C, stride, act);
            float *yyd = dalloc(nyy);
            kcu_dwconv3_nhwc_fwd(ctx, yyd, dup_(xx, nxx), dup_(wt, (size_t)C * 9), dup_(bb, C), 1, Hh,
                                 Ww, C, stride, act);
            char name[64];
            snprintf(name, sizeof name, "dwconv3_nhwc s%d act%d (cpu gelu 4e-7)", stride, act);
            check(name, yyd, yy, nyy, TOL_EL);
            free(xx);
            free(wt);
            free(bb);
            free(w9c);
            free(yy);
        }
    int Cc = 5, Nn = 11;
    for (int stride = 1; stride <= 2; stride++) {
        int Ho = (Hh - 1) / stride + 1, Wo = (Ww - 1) / stride + 1;
        size_t nxx = (size_t)Hh * Ww * Cc, nyy = (size_t)Ho * Wo * Nn;
        float *xx = hrand(2 * nxx, -1, 1), *wt = hrand((size_t)Nn * Cc * 9, -1, 1);
        float *bb = hrand(Nn, -1, 1), *xchw = hzero(nxx), *ychw = hzero(nyy), *yy = hzero(2 * nyy);
        float *sc2 = hzero(kn_conv2d_scratch(Cc, Hh, Ww, 3, stride, 1, 1) + 1);
        for (int bi = 0; bi < 2; bi++) {
            for (int p = 0; p < Hh * Ww; p++)
                for (int c = 0; c < Cc; c++)
                    xchw[(size_t)c * Hh * Ww + p] = xx[bi * nxx + (size_t)p * Cc + c];
            kn_conv2d_fwd(ychw, xchw, wt, bb, Cc, Hh, Ww, Nn, 3, stride, 1, 1, sc2);
            for (int p = 0; p < Ho * Wo; p++)
                for (int o = 0; o < Nn; o++) {
                    float v = ychw[(size_t)o * Ho * Wo + p];
                    yy[bi * nyy + (size_t)p * Nn + o] = 0.5f * v * (1.0f + erff(v * 0.70710678f));
                }
        }
        float *yyd = dalloc(2 * nyy);
        kcu_conv3_nhwc_fwd(ctx, yyd, dup_(xx, 2 * nxx), dup_(wt, (size_t)Nn * Cc * 9), dup_(bb, Nn), 2,
                           Hh, Ww, Cc, Nn, stride, KCU_ACT_GELU);
        char name[64];
        snprintf(name, sizeof name, "conv3_nhwc B2 s%d gelu", stride);
        check(name, yyd, yy, 2 * nyy, TOL_GEMM);
        free(xx);
        free(wt);
        free(bb);
        free(xchw);
        free(ychw);
        free(yy);
        free(sc2);
    }
}

/* ---- attention --------------------------------------------------------------------------------- */

static void t_attention_case(int heads, int d, int Nq, int Nk, int with_bias)
{
    int C = heads * d, ldq = 3 * C, ldk = 2 * C, ldv = 2 * C;
    float scale = 1.0f / sqrtf((float)d);
    float *q = hrand((size_t)Nq * ldq, -1, 1), *kv = hrand((size_t)Nk * ldk, -1, 1);
    float *bias = with_bias ? hrand((size_t)heads * Nq * Nk, -1, 1) : NULL;
    float *out = hzero((size_t)Nq * C), *sc = hzero(kn_attention_bwd_scratch(Nq, Nk));
    kn_attention_fwd(out, q, ldq, kv, ldk, kv + C, ldv, bias, heads, Nq, Nk, d, scale, sc);
    float *qd = dup_(q, (size_t)Nq * ldq), *kvd = dup_(kv, (size_t)Nk * ldk);
    float *bd = bias ? dup_(bias, (size_t)heads * Nq * Nk) : NULL, *od = dalloc((size_t)Nq * C);
    kcu_attention_fwd(ctx, od, qd, ldq, kvd, ldk, kvd + C, ldv, bd, heads, Nq, Nk, d, scale);
    char name[96];
    snprintf(name, sizeof name, "attention_fwd h%d d%d %dx%d bias%d", heads, d, Nq, Nk, with_bias);
    check(name, od, out, (size_t)Nq * C, TOL_ATT);
    float *dout = hrand((size_t)Nq * C, -1, 1);
    float *dq = hzero((size_t)Nq * ldq), *dkv = hzero((size_t)Nk * ldk);
    kn_attention_bwd(dq, dkv, dkv + C, dout, q, ldq, kv, ldk, kv + C, ldv, bias, heads, Nq, Nk, d,
                     scale, sc);
    float *dqd = dalloc((size_t)Nq * ldq), *dkvd = dalloc((size_t)Nk * ldk);
    kcu_zero(ctx, dqd, (size_t)Nq * ldq * sizeof(float));
    kcu_zero(ctx, dkvd, (size_t)Nk * ldk * sizeof(float));
    kcu_attention_bwd(ctx, dqd, dkvd, dkvd + C, dup_(dout, (size_t)Nq * C), qd, ldq, kvd, ldk,
                      kvd + C, ldv, bd, heads, Nq, Nk, d, scale);
    snprintf(name, sizeof name, "attention_bwd dq h%d d%d bias%d", heads, d, with_bias);
    check(name, dqd, dq, (size_t)Nq * ldq, TOL_ATT);
    snprintf(name, sizeof name, "attention_bwd dk,dv h%d d%d bias%d", heads, d, with_bias);
    check(name, dkvd, dkv, (size_t)Nk * ldk, TOL_ATT);
    free(q);
    free(kv);
    free(bias);
    free(out);
    free(sc);
    free(dout);
    free(dq);
    free(dkv);
}

static void t_winattn_case(int H, int W, int heads, int d, int ws, int with_proj)
{
    int C = heads * d, n = ws * ws, ldo = C + 5;
    float scale = 1.0f / sqrtf((float)d);
    size_t nq = (size_t)H * W * 3 * C;
    float *qkv = hrand(2 * nq, -1, 1), *pad = hrand((size_t)3 * C, -1, 1);
    float *bias = hrand((size_t)heads * n * n, -1, 1);
    float *pw = with_proj ? hrand((size_t)C * C, -0.2f, 0.2f) : NULL, *pb = hrand(C, -1, 1);
    float *out = hrand(2 * (size_t)H * W * ldo, -1, 1), *outd = dup_(out, 2 * (size_t)H * W * ldo);
    float *pk = with_proj ? halign(kn_pack_size(C, C)) : NULL, *pk_al = pk;
    if (pk) kn_pack_w(pk_al, pw, C, C);
    float *sc = halign(kn_winattn_scratch(heads, d, ws) + 64);
    for (int b = 0; b < 2; b++)
        kn_winattn_fwd(out + (size_t)b * H * W * ldo, ldo, qkv + (size_t)b * nq, pad, bias, H, W,
                       heads, d, ws, scale, pk_al, with_proj ? pb : NULL, sc, 1);
    kcu_winattn_fwd(ctx, outd, ldo, dup_(qkv, 2 * nq), dup_(pad, (size_t)3 * C),
                    dup_(bias, (size_t)heads * n * n), 2, H, W, heads, d, ws, scale,
                    with_proj ? dup_(pw, (size_t)C * C) : NULL, with_proj ? dup_(pb, C) : NULL);
    char name[96];
    snprintf(name, sizeof name, "winattn B2 %dx%d h%d d%d ws%d proj%d", H, W, heads, d, ws,
             with_proj);
    check(name, outd, out, 2 * (size_t)H * W * ldo, with_proj ? TOL_GEMM : TOL_ATT);
    free(qkv);
    free(pad);
    free(bias);
    free(pw);
    free(pb);
    free(out);
    free(pk);
    free(sc);
}

static void t_relpos_case(int nwin, int S, int heads, int d)
{
    int C = heads * d, N = S * S;
    float scale = 1.0f / sqrtf((float)d);
    size_t nq = (size_t)nwin * N * 3 * C;
    float *qkv = hrand(nq, -1, 1), *rh = hrand((size_t)(2 * S - 1) * d, -0.5f, 0.5f);
    float *rw = hrand((size_t)(2 * S - 1) * d, -0.5f, 0.5f), *out = hzero((size_t)nwin * N * C);
    float *sc = halign(kn_relpos_attention_scratch(nwin, S, heads, d, 1) + 64);
    kn_relpos_attention_fwd(out, qkv, rh, rw, nwin, S, heads, d, scale, sc, 1);
    float *od = dalloc((size_t)nwin * N * C);
    kcu_relpos_attention_fwd(ctx, od, dup_(qkv, nq), dup_(rh, (size_t)(2 * S - 1) * d),
                             dup_(rw, (size_t)(2 * S - 1) * d), nwin, S, heads, d, scale);
    char name[96];
    snprintf(name, sizeof name, "relpos_attention nwin%d S%d h%d d%d", nwin, S, heads, d);
    check(name, od, out, (size_t)nwin * N * C, TOL_ATT);
    free(qkv);
    free(rh);
    free(rw);
    free(out);
    free(sc);
}

/* kcu_window_partition / kcu_window_unpartition_add on B maps vs the CPU op per map:
 * bit-exact (pure data movement; the inverse is one add per element). */
static void t_window_case(int B, int H, int W, int C, int S)
{
    int nwin = ((H + S - 1) / S) * ((W + S - 1) / S);
    size_t nx = (size_t)H * W * C, nw = (size_t)nwin * S * S * C;
    float *x = hrand(B * nx, -1, 1), *win = hrand(B * nw, -1, 1), *y = hcopy(x, B * nx);
    float *ref = hzero(B * nw);
    for (int b = 0; b < B; b++) {
        kn_window_partition(ref + b * nw, x + b * nx, H, W, C, S);
        kn_window_unpartition_add(y + b * nx, win + b * nw, H, W, C, S);
    }
    float *xd = dup_(x, B * nx), *wd = dalloc(B * nw);
    kcu_window_partition(ctx, wd, xd, B, H, W, C, S);
    char name[96];
    snprintf(name, sizeof name, "window_partition B%d %dx%d C%d S%d", B, H, W, C, S);
    check(name, wd, ref, B * nw, 0);
    kcu_window_unpartition_add(ctx, xd, dup_(win, B * nw), B, H, W, C, S);
    snprintf(name, sizeof name, "window_unpartition_add B%d %dx%d C%d S%d", B, H, W, C, S);
    check(name, xd, y, B * nx, 0);
    free(x);
    free(win);
    free(y);
    free(ref);
}

static void t_attn(void)
{
    t_attention_case(3, 16, 37, 70, 1);
    t_attention_case(2, 48, 5, 129, 0); /* one-way: few queries, many keys; d in the 64 path */
    t_attention_case(1, 80, 33, 31, 1); /* d in the 128 path */
    t_winattn_case(9, 11, 2, 32, 7, 0);
    t_winattn_case(9, 11, 2, 32, 7, 1);
    t_winattn_case(15, 14, 3, 16, 7, 0);
    t_relpos_case(2, 5, 2, 16);
    t_relpos_case(1, 8, 3, 64);
    t_relpos_case(2, 6, 2, 80); /* ViT-H's head dim (the d <= 128 path) */
    t_window_case(2, 11, 9, 6, 4); /* padded both ways, C not a multiple of 4 */
    t_window_case(1, 8, 8, 5, 8);  /* one global window */
}

/* ---- training: point sampling, losses, Adam ----------------------------------------------------- */

/* kcu_uncertain_points vs kn_uncertain_points from the same rng state: the same points bit for
 * bit and the same rng state after. Maps: 0 random logits; 1 all zero (every candidate ties);
 * 2 8x8 blocks of logits quantised to 0.5 steps (at 256x256 the threshold is −0.5: ~1700 of
 * ~6200 tied candidates taken after ~7700 above it); 3 random with NaN and −inf blocks and
 * pixels (a finite threshold); 4 mostly NaN (the threshold is −inf: ~5200 of ~33000 ties). */
static void t_uncertain_case(int H, int W, int P, int over, float imp, int kind)
{
    size_t n = (size_t)H * W;
    float *lg = hrand(n, -4, 4), *pts = hzero(2 * (size_t)P);
    for (size_t i = 0; i < n; i++) {
        unsigned blk = (unsigned)((i / W / 8) * 977 + (i % W / 8)) * 2654435761u % 10;
        if (kind == 1) lg[i] = 0;
        if (kind == 2) lg[i] = (float)(blk % 5) * 0.5f;
        if (kind >= 3 && (blk < (kind == 3 ? 5u : 8u) || i % 13 == 0))
            lg[i] = blk == 4 ? -INFINITY : NAN;
    }
    float *sc = hzero(kn_uncertain_points_scratch(P, over));
    uint64_t r_cpu = rng, r_gpu = rng;
    kn_uncertain_points(pts, lg, H, W, P, over, imp, &r_cpu, sc);
    float *pd = dalloc(2 * (size_t)P);
    int rc = kcu_uncertain_points(ctx, pd, dup_(lg, n), H, W, P, over, imp, &r_gpu);
    char name[96];
    snprintf(name, sizeof name, "uncertain_points %dx%d P%d x%d imp %.2f map %d", H, W, P, over,
             imp, kind);
    if (rc) printf("FAIL %s: rc %d (%s)\n", name, rc, kcu_errmsg(ctx));
    check(name, pd, pts, 2 * (size_t)P, 0);
    checks++;
    if (rc || r_gpu != r_cpu) {
        printf("FAIL %-40s rng state after the call differs\n", name);
        failures++;
    }
    rng = r_cpu;
    free(lg);
    free(pts);
    free(sc);
}

static void t_train(void)
{
    int C = 3, H = 9, W = 13, P = 50;
    float *x = hrand((size_t)C * H * W, -1, 1), *pts = hrand(2 * (size_t)P, -0.1f, 1.1f);
    float *out = hzero((size_t)C * P), *xd = dup_(x, (size_t)C * H * W), *pd = dup_(pts, 2 * (size_t)P);
    float *od = dalloc((size_t)C * P);
    kn_point_sample_fwd(out, x, pts, C, H, W, P);
    kcu_point_sample_fwd(ctx, od, xd, pd, C, H, W, P);
    check("point_sample_fwd", od, out, (size_t)C * P, TOL_EL);
    float *g = hrand((size_t)C * P, -1, 1), *dx = hrand((size_t)C * H * W, -1, 1);
    float *dxd = dup_(dx, (size_t)C * H * W);
    kn_point_sample_bwd(dx, g, pts, C, H, W, P);
    kcu_point_sample_bwd(ctx, dxd, dup_(g, (size_t)C * P), pd, C, H, W, P);
    check("point_sample_bwd (accumulated)", dxd, dx, (size_t)C * H * W, TOL_EL);

    int Pl = 300;
    float *lg = hrand(Pl, -6, 6), *tg = hrand(Pl, 0, 1), *dl = hzero(Pl), parts[2];
    float ref3[3];
    ref3[0] = kn_bce_dice_loss(dl, parts, lg, tg, Pl, 0.25f);
    ref3[1] = parts[0];
    ref3[2] = parts[1];
    float *o3 = dalloc(3), *dld = dalloc(Pl);
    kcu_bce_dice_loss(ctx, o3, dld, dup_(lg, Pl), dup_(tg, Pl), Pl, 0.25f);
    check("bce_dice_loss (loss, bce, dice)", o3, ref3, 3, TOL_EL);
    check("bce_dice_loss dlogits", dld, dl, Pl, TOL_EL);

    int B = 3, K = 7, labels[3] = {0, 6, 3};
    float *cl = hrand((size_t)B * K, -3, 3), *cdl = hzero((size_t)B * K), closs[3];
    for (int b = 0; b < B; b++)
        closs[b] = kn_cross_entropy_loss(cdl + (size_t)b * K, cl + (size_t)b * K, K, labels[b],
                                         1.0f / B);
    float *cod = dalloc(B), *cdld = dalloc((size_t)B * K);
    kcu_cross_entropy_loss(ctx, cod, cdld, dup_(cl, (size_t)B * K), B, K, labels, 1.0f / B);
    check("cross_entropy loss", cod, closs, B, TOL_EL);
    check("cross_entropy dlogits", cdld, cdl, (size_t)B * K, TOL_EL);
    int badlab[1] = {7};
    expect_rc("cross_entropy label out of range", kcu_cross_entropy_loss(ctx, cod, NULL, cdld, 1,
                                                                         K, badlab, 1.0f),
              ERR_INVALID);
    err_t e;
    kcu_sync(ctx, &e);

    size_t n = 1000;
    float *p = hrand(n, -1, 1), *m = hzero(n), *v = hzero(n);
    float *pd2 = dup_(p, n), *md = dup_(m, n), *vd = dup_(v, n);
    for (int step = 1; step <= 3; step++) {
        float *gr = hrand(n, -1, 1);
        kn_adam_step(p, gr, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
        kcu_adam_step(ctx, pd2, dup_(gr, n), md, vd, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
        free(gr);
    }
    check("adam_step x3 p", pd2, p, n, TOL_EL);
    check("adam_step x3 m", md, m, n, TOL_EL);
    check("adam_step x3 v", vd, v, n, TOL_EL);

    t_uncertain_case(256, 256, 12544, 3, 0.75f, 0); /* the training setting */
    t_uncertain_case(256, 256, 12544, 3, 0.75f, 2);
    t_uncertain_case(256, 256, 12544, 3, 0.75f, 3);
    t_uncertain_case(256, 256, 12544, 3, 0.75f, 4);
    t_uncertain_case(48, 64, 37, 3, 0.75f, 0);
    t_uncertain_case(33, 17, 37, 2, 0.0f, 0);
    t_uncertain_case(33, 17, 101, 3, 1.0f, 2);
    t_uncertain_case(64, 64, 500, 3, 0.75f, 1);
    t_uncertain_case(64, 64, 501, 3, 0.75f, 4);
    t_uncertain_case(1, 1, 5, 1, 1.0f, 0);
    uint64_t r0 = rng;
    expect_rc("uncertain_points importance 1.5",
              kcu_uncertain_points(ctx, pd2, pd2, 8, 8, 4, 3, 1.5f, &rng), ERR_INVALID);
    kcu_sync(ctx, &e);
    checks++;
    if (rng != r0) {
        printf("FAIL uncertain_points: a refused call advanced the rng\n");
        failures++;
    }
    free(x);
    free(pts);
    free(out);
    free(g);
    free(dx);
    free(lg);
    free(tg);
    free(dl);
    free(cl);
    free(cdl);
    free(p);
    free(m);
    free(v);
}

int main(int argc, char **argv)
{
    const char *group = argc > 1 ? argv[1] : "all";
    if (!strcmp(group, "--help") || !strcmp(group, "-h")) {
        printf("usage: test_kcu_ops [core|norm|conv|attn|train|all]\n"
               "Compares every kcu_ op with the CPU kn_ op; exit 77 without a CUDA device.\n");
        return 0;
    }
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    err_t e = {0};
    ctx = kcu_ctx_new(0, (size_t)256 << 20, KCU_TF32, &e);
    if (!ctx) {
        printf("FAIL kcu_ctx_new: %s\n", e.msg);
        return 1;
    }
    kn_set_threads(1);
    int all = !strcmp(group, "all"), any = 0;
    size_t base = kcu_mark(ctx);
#define GROUP(nm, ...)                                                                           \
    if (all || !strcmp(group, nm)) {                                                             \
        any = 1;                                                                                 \
        __VA_ARGS__;                                                                             \
        kcu_reset(ctx, base);                                                                    \
    }
    GROUP("core", t_gemm(); t_linear(); t_elem(); t_softmax(); t_errors())
    GROUP("norm", t_norm())
    GROUP("conv", t_conv())
    GROUP("attn", t_attn())
    GROUP("train", t_train())
    if (!any) {
        fprintf(stderr, "unknown group '%s'\n", group);
        kcu_ctx_destroy(&ctx);
        return 2;
    }
    kcu_ctx_destroy(&ctx);
    printf("%d of %d checks failed\n", failures, checks);
    return failures ? 1 : 0;
}
