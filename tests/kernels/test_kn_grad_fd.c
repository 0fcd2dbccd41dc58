/* test_kn_grad_fd.c — every backward op of kn.h against central finite differences of its
 * forward op, on small odd shapes (C=5, H=7, W=9, heads=3, Nq=5, Nk=11 ...).
 *
 * For an op y = f(θ) the scalar L = Σ r·y (fixed random r, summed in double) has
 * dL/dθ = bwd(dy = r). Each gradient is compared with (L(θ+h) − L(θ−h)) / (actual step)
 * at two step sizes h and h/2 ("double-checked": both must agree within the op's
 * tolerance), error = max |analytic − numeric| / max(max |numeric|, 1e-2).
 * Also: NULL gradient pointers, accumulate-vs-overwrite semantics, repeatability, and
 * the RNG / point selection helpers. Pure C, label `unit`.
 */
#include "kn_test.h"

#include <string.h>

typedef void (*run_fn)(float *y);

static uint64_t g_rng = 20240611;
static const float *g_r; /* the dy used for L = Σ r·y */
static size_t g_ny;
static float *g_y;

static double lossv(run_fn run)
{
    run(g_y);
    double s = 0;
    for (size_t i = 0; i < g_ny; i++)
        s += (double)g_y[i] * g_r[i];
    return s;
}

/* compare ana[n] with finite differences of L w.r.t. param[n] at steps h and h/2 */
static void fd(const char *what, float *param, size_t n, const float *ana, run_fn run, float h,
               double tol)
{
    float *num = kt_alloc(n);
    for (int pass = 0; pass < 2; pass++) {
        float hh = pass ? h * 0.5f : h;
        for (size_t i = 0; i < n; i++) {
            float s = param[i];
            float up = s + hh, dn = s - hh;
            param[i] = up;
            double lp = lossv(run);
            param[i] = dn;
            double lm = lossv(run);
            param[i] = s;
            num[i] = (float)((lp - lm) / ((double)up - (double)dn));
        }
        char name[96];
        snprintf(name, sizeof name, "%s (h=%g)", what, (double)hh);
        kt_check(name, kt_relerr(ana, num, n, 1e-2), tol);
    }
    free(num);
}

static void setup_out(size_t ny)
{
    static float *r;
    free(g_y);
    free(r);
    g_ny = ny;
    g_y = kt_alloc(ny);
    r = kt_alloc(ny);
    kt_fill(r, ny, &g_rng, -1, 1);
    g_r = r;
}

/* ---- attention ---- */
enum { AH = 3, AD = 4, ANQ = 5, ANK = 11, AC = AH * AD, LDQ = AC + 3, LDK = AC + 1, LDV = 2 * AC };
static float *a_q, *a_k, *a_v, *a_bias, *a_scr;
static void run_attn(float *y)
{
    kn_attention_fwd(y, a_q, LDQ, a_k, LDK, a_v, LDV, a_bias, AH, ANQ, ANK, AD, 0.5f, a_scr);
}

static void test_attention(void)
{
    a_q = kt_alloc((size_t)ANQ * LDQ);
    a_k = kt_alloc((size_t)ANK * LDK);
    a_v = kt_alloc((size_t)ANK * LDV);
    a_bias = kt_alloc((size_t)AH * ANQ * ANK);
    kt_fill(a_q, (size_t)ANQ * LDQ, &g_rng, -1.5f, 1.5f);
    kt_fill(a_k, (size_t)ANK * LDK, &g_rng, -1.5f, 1.5f);
    kt_fill(a_v, (size_t)ANK * LDV, &g_rng, -1, 1);
    kt_fill(a_bias, (size_t)AH * ANQ * ANK, &g_rng, -1, 1);
    a_scr = kt_alloc(kn_attention_bwd_scratch(ANQ, ANK));
    setup_out((size_t)ANQ * AC);
    /* gradients land in buffers with the input strides; padding must stay untouched */
    float *dq = kt_alloc((size_t)ANQ * LDQ), *dk = kt_alloc((size_t)ANK * LDK);
    float *dv = kt_alloc((size_t)ANK * LDV);
    for (size_t i = 0; i < (size_t)ANQ * LDQ; i++)
        dq[i] = 7.0f;
    for (int pass = 0; pass < 2; pass++) {
        const float *bias = pass ? NULL : a_bias;
        float *saved = a_bias;
        a_bias = (float *)bias;
        kn_attention_bwd(dq, dk, dv, g_r, a_q, LDQ, a_k, LDK, a_v, LDV, bias, AH, ANQ, ANK, AD,
                         0.5f, a_scr);
        const char *tag = pass ? "attention (no bias)" : "attention (bias)";
        char nm[64];
        /* FD over the whole strided buffers: padding columns have numeric gradient 0, so
         * dk/dv (calloc'ed) must keep 0 there; dq padding was preset to 7 and must keep it */
        float *dq0 = kt_alloc((size_t)ANQ * LDQ);
        memcpy(dq0, dq, sizeof(float) * (size_t)ANQ * LDQ);
        int pad_ok = 1;
        for (int i = 0; i < ANQ; i++)
            for (int c = AC; c < LDQ; c++) {
                pad_ok &= dq0[i * LDQ + c] == 7.0f;
                dq0[i * LDQ + c] = 0.0f;
            }
        snprintf(nm, sizeof nm, "%s dq padding untouched", tag);
        kt_check(nm, pad_ok ? 0.0 : 1.0, 0.0);
        snprintf(nm, sizeof nm, "%s dq", tag);
        fd(nm, a_q, (size_t)ANQ * LDQ, dq0, run_attn, 1e-2f, 2e-3);
        snprintf(nm, sizeof nm, "%s dk", tag);
        fd(nm, a_k, (size_t)ANK * LDK, dk, run_attn, 1e-2f, 2e-3);
        snprintf(nm, sizeof nm, "%s dv", tag);
        fd(nm, a_v, (size_t)ANK * LDV, dv, run_attn, 1e-2f, 2e-3);
        free(dq0);
        a_bias = saved;
    }
    /* NULL pointers: dq only must equal the dq of the full call */
    float *dq2 = kt_alloc((size_t)ANQ * LDQ);
    kn_attention_bwd(dq, dk, dv, g_r, a_q, LDQ, a_k, LDK, a_v, LDV, a_bias, AH, ANQ, ANK, AD, 0.5f,
                     a_scr);
    kn_attention_bwd(dq2, NULL, NULL, g_r, a_q, LDQ, a_k, LDK, a_v, LDV, a_bias, AH, ANQ, ANK, AD,
                     0.5f, a_scr);
    double e = 0;
    for (int i = 0; i < ANQ; i++)
        for (int c = 0; c < AC; c++)
            e = fmax(e, fabs(dq[i * LDQ + c] - dq2[i * LDQ + c]));
    kt_check("attention dq with dk=dv=NULL identical", e, 0.0);
    free(dq);
    free(dk);
    free(dv);
    free(dq2);
    free(a_q);
    free(a_k);
    free(a_v);
    free(a_bias);
    free(a_scr);
}

/* ---- layernorm2d and row layernorm ---- */
enum { LC = 5, LHW = 7 * 29 }; /* 4 pixel blocks of kn_layernorm2d, the last partial */
static float *l_x, *l_w, *l_b;
static void run_ln2d(float *y)
{
    kn_layernorm2d_fwd(y, l_x, l_w, l_b, LC, LHW, 1e-6f);
}
static void run_ln(float *y)
{
    kn_layernorm_fwd(y, NULL, NULL, l_x, l_w, l_b, LHW, LC, 1e-5f); /* rows: N=203, C=5 */
}

static void test_layernorm(void)
{
    l_x = kt_alloc(LC * LHW);
    l_w = kt_alloc(LC);
    l_b = kt_alloc(LC);
    kt_fill(l_x, LC * LHW, &g_rng, -2, 2);
    kt_fill(l_w, LC, &g_rng, 0.5f, 1.5f);
    kt_fill(l_b, LC, &g_rng, -0.5f, 0.5f);
    setup_out(LC * LHW);
    float *dx = kt_alloc(LC * LHW), *dw = kt_alloc(LC), *db = kt_alloc(LC);
    float *scr = kt_alloc(2 * LHW);
    kn_layernorm2d_bwd(dx, dw, db, g_r, l_x, l_w, LC, LHW, 1e-6f, scr);
    fd("layernorm2d dx", l_x, LC * LHW, dx, run_ln2d, 1e-2f, 3e-3);
    fd("layernorm2d dw", l_w, LC, dw, run_ln2d, 1e-2f, 1e-3);
    fd("layernorm2d db", l_b, LC, db, run_ln2d, 1e-2f, 1e-3);
    /* accumulate semantics: a second call adds the same dw again */
    float *dw2 = kt_alloc(LC);
    memcpy(dw2, dw, sizeof(float) * LC);
    kn_layernorm2d_bwd(NULL, dw2, NULL, g_r, l_x, l_w, LC, LHW, 1e-6f, scr);
    double e = 0;
    for (int c = 0; c < LC; c++)
        e = fmax(e, fabs(dw2[c] - 2 * dw[c]) / (fabs(dw[c]) + 1e-3));
    kt_check("layernorm2d dw accumulates (+=)", e, 1e-5);

    /* the existing row LayerNorm backward (kn_layernorm_bwd), same data as [203, 5] rows */
    float *mean = kt_alloc(LHW), *rstd = kt_alloc(LHW);
    kn_layernorm_fwd(g_y, mean, rstd, l_x, l_w, l_b, LHW, LC, 1e-5f);
    memset(dw, 0, sizeof(float) * LC);
    memset(db, 0, sizeof(float) * LC);
    kn_layernorm_bwd(dx, dw, db, g_r, l_x, mean, rstd, l_w, LHW, LC);
    fd("layernorm (rows) dx", l_x, LC * LHW, dx, run_ln, 1e-2f, 3e-3);
    fd("layernorm (rows) dw", l_w, LC, dw, run_ln, 1e-2f, 1e-3);
    fd("layernorm (rows) db", l_b, LC, db, run_ln, 1e-2f, 1e-3);
    free(mean);
    free(rstd);
    free(dw2);
    free(scr);
    free(dx);
    free(dw);
    free(db);
    free(l_x);
    free(l_w);
    free(l_b);
}

/* ---- conv2d (dense, strided, 1x1, grouped, depthwise) and convT 2x2 ---- */
static int c_cin, c_h, c_w, c_cout, c_k, c_s, c_p, c_g;
static float *c_x, *c_wt, *c_b, *c_scr;
static void run_conv(float *y)
{
    kn_conv2d_fwd(y, c_x, c_wt, c_b, c_cin, c_h, c_w, c_cout, c_k, c_s, c_p, c_g, c_scr);
}

static void conv_case(const char *tag, int cin, int h, int w, int cout, int k, int s, int p, int g)
{
    c_cin = cin, c_h = h, c_w = w, c_cout = cout, c_k = k, c_s = s, c_p = p, c_g = g;
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    size_t nx = (size_t)cin * h * w, nw = (size_t)cout * (cin / g) * k * k;
    c_x = kt_alloc(nx);
    c_wt = kt_alloc(nw);
    c_b = kt_alloc(cout);
    kt_fill(c_x, nx, &g_rng, -1, 1);
    kt_fill(c_wt, nw, &g_rng, -1, 1);
    kt_fill(c_b, cout, &g_rng, -1, 1);
    size_t ns = kn_conv2d_scratch(cin, h, w, k, s, p, g);
    c_scr = kt_alloc(ns);
    setup_out((size_t)cout * ho * wo);
    float *dx = kt_alloc(nx), *dw = kt_alloc(nw), *db = kt_alloc(cout);
    for (size_t i = 0; i < nx; i++)
        dx[i] = 99.0f; /* overwritten, not accumulated */
    kn_conv2d_bwd(dx, dw, db, g_r, c_x, c_wt, cin, h, w, cout, k, s, p, g, c_scr);
    char nm[80];
    snprintf(nm, sizeof nm, "conv2d %s dx", tag);
    fd(nm, c_x, nx, dx, run_conv, 1e-1f, 1e-3);
    snprintf(nm, sizeof nm, "conv2d %s dw", tag);
    fd(nm, c_wt, nw, dw, run_conv, 1e-1f, 1e-3);
    snprintf(nm, sizeof nm, "conv2d %s db", tag);
    fd(nm, c_b, cout, db, run_conv, 1e-1f, 1e-3);
    /* repeatable bit for bit, and dw/db accumulate */
    float *dx2 = kt_alloc(nx), *dw2 = kt_alloc(nw), *db2 = kt_alloc(cout);
    kn_conv2d_bwd(dx2, dw2, db2, g_r, c_x, c_wt, cin, h, w, cout, k, s, p, g, c_scr);
    kn_conv2d_bwd(NULL, dw2, db2, g_r, c_x, c_wt, cin, h, w, cout, k, s, p, g, c_scr);
    int same = memcmp(dx, dx2, sizeof(float) * nx) == 0;
    snprintf(nm, sizeof nm, "conv2d %s dx repeatable", tag);
    kt_check(nm, same ? 0.0 : 1.0, 0.0);
    double e = 0;
    for (size_t i = 0; i < nw; i++)
        e = fmax(e, fabs(dw2[i] - 2 * dw[i]) / (fabs(dw[i]) + 1e-3));
    for (int i = 0; i < cout; i++)
        e = fmax(e, fabs(db2[i] - 2 * db[i]) / (fabs(db[i]) + 1e-3));
    snprintf(nm, sizeof nm, "conv2d %s dw,db accumulate", tag);
    kt_check(nm, e, 1e-5);
    free(dx2);
    free(dw2);
    free(db2);
    free(dx);
    free(dw);
    free(db);
    free(c_x);
    free(c_wt);
    free(c_b);
    free(c_scr);
}

/* ---- packed channel-last 3×3 conv (kn_conv3_pk_fwd): weight gradient kn_conv3_pk_wgrad,
 * input gradient = the same conv on dy with the weight transposed and flipped ---- */
static int p_h, p_w, p_c, p_n;
static float *p_x, *p_wt, *p_b, *p_pk, *p_r;

/* packs w[N, Cc, 3, 3] for kn_conv3_pk_fwd; flip: the input-gradient weight [Cc][tap'][N] */
static void pk_conv3(float *pk, float *r, const float *w, int N, int Cc, int flip)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < Cc; c++)
            for (int t = 0; t < 9; t++) {
                float v = w[((size_t)n * Cc + c) * 9 + t];
                if (flip) r[(size_t)c * 9 * N + (8 - t) * N + n] = v;
                else r[(size_t)n * 9 * Cc + t * Cc + c] = v;
            }
    if (flip) kn_pack_w(pk, r, Cc, 9 * N);
    else kn_pack_w(pk, r, N, 9 * Cc);
}

static void run_conv3pk(float *y)
{
    pk_conv3(p_pk, p_r, p_wt, p_n, p_c, 0);
    kn_conv3_pk_fwd(y, p_n, p_x, p_h, p_w, p_c, 1, 0, p_h, p_pk, p_b, p_n, KN_ACT_NONE);
}

static void conv3pk_case(int h, int w, int c, int n)
{
    p_h = h, p_w = w, p_c = c, p_n = n;
    size_t nx = (size_t)h * w * c, nw = (size_t)n * c * 9;
    p_x = kt_alloc(nx);
    p_wt = kt_alloc(nw);
    p_b = kt_alloc(n);
    size_t npk = kn_pack_size(n, 9 * c) > kn_pack_size(c, 9 * n) ? kn_pack_size(n, 9 * c)
                                                                   : kn_pack_size(c, 9 * n);
    p_pk = aligned_alloc(64, (npk * sizeof(float) + 63) / 64 * 64);
    p_r = kt_alloc(nw);
    kt_fill(p_x, nx, &g_rng, -1, 1);
    kt_fill(p_wt, nw, &g_rng, -1, 1);
    kt_fill(p_b, n, &g_rng, -1, 1);
    setup_out((size_t)h * w * n);
    float *dx = kt_alloc(nx), *dw = kt_alloc(nw), *db = kt_alloc(n);
    float *scr = kt_alloc(kn_conv3_pk_wgrad_scratch(h, w, c, n));
    kn_conv3_pk_wgrad(dw, db, g_r, p_x, h, w, c, n, scr);
    pk_conv3(p_pk, p_r, p_wt, n, c, 1);
    kn_conv3_pk_fwd(dx, c, g_r, h, w, n, 1, 0, h, p_pk, NULL, c, KN_ACT_NONE);
    char nm[80];
    snprintf(nm, sizeof nm, "conv3_pk %dx%d C%d N%d dx (flipped)", h, w, c, n);
    fd(nm, p_x, nx, dx, run_conv3pk, 1e-1f, 1e-3);
    snprintf(nm, sizeof nm, "conv3_pk %dx%d C%d N%d wgrad dw", h, w, c, n);
    fd(nm, p_wt, nw, dw, run_conv3pk, 1e-1f, 1e-3);
    snprintf(nm, sizeof nm, "conv3_pk %dx%d C%d N%d wgrad db", h, w, c, n);
    fd(nm, p_b, n, db, run_conv3pk, 1e-1f, 1e-3);
    /* accumulates, and the same bits on 2 threads as on 1 */
    float *dw2 = kt_alloc(nw), *db2 = kt_alloc(n);
    memcpy(dw2, dw, sizeof(float) * nw);
    memcpy(db2, db, sizeof(float) * n);
    kn_set_threads(2);
    kn_conv3_pk_wgrad(dw2, db2, g_r, p_x, h, w, c, n, scr);
    kn_set_threads(1);
    double e = 0;
    for (size_t i = 0; i < nw; i++) e = fmax(e, fabs(dw2[i] - 2 * dw[i]) / (fabs(dw[i]) + 1e-3));
    for (int i = 0; i < n; i++) e = fmax(e, fabs(db2[i] - 2 * db[i]) / (fabs(db[i]) + 1e-3));
    snprintf(nm, sizeof nm, "conv3_pk C%d N%d wgrad accumulates", c, n);
    kt_check(nm, e, 1e-6);
    memset(dw2, 0, sizeof(float) * nw);
    memset(db2, 0, sizeof(float) * n);
    kn_set_threads(2);
    kn_conv3_pk_wgrad(dw2, db2, g_r, p_x, h, w, c, n, scr);
    kn_set_threads(1);
    int same = !memcmp(dw2, dw, sizeof(float) * nw) && !memcmp(db2, db, sizeof(float) * n);
    snprintf(nm, sizeof nm, "conv3_pk C%d N%d wgrad 2 threads == 1", c, n);
    kt_check(nm, same ? 0.0 : 1.0, 0.0);
    free(dw2), free(db2), free(scr), free(dx), free(dw), free(db);
    free(p_x), free(p_wt), free(p_b), free(p_pk), free(p_r);
}

/* ---- fused row LayerNorm + GELU (kn_layernorm_gelu_fast_fwd / kn_layernorm_gelu_bwd) ---- */
enum { GN = 150, GC = 24 }; /* 3 row blocks, the last partial */
static float *g_lx, *g_lw, *g_lb;
static void run_lngelu(float *y)
{
    kn_layernorm_gelu_fast_fwd(y, g_lx, g_lw, g_lb, GN, GC, 1e-6f);
}

static void test_layernorm_gelu(void)
{
    g_lx = kt_alloc(GN * GC);
    g_lw = kt_alloc(GC);
    g_lb = kt_alloc(GC);
    kt_fill(g_lx, GN * GC, &g_rng, -2, 2);
    kt_fill(g_lw, GC, &g_rng, 0.5f, 1.5f);
    kt_fill(g_lb, GC, &g_rng, -0.5f, 0.5f);
    setup_out(GN * GC);
    float *dx = kt_alloc(GN * GC), *dw = kt_alloc(GC), *db = kt_alloc(GC);
    float *scr = kt_alloc(kn_layernorm_gelu_bwd_scratch(GN, GC));
    kn_layernorm_gelu_bwd(dx, dw, db, g_r, g_lx, g_lw, g_lb, GN, GC, 1e-6f, scr);
    fd("layernorm+gelu (rows) dx", g_lx, GN * GC, dx, run_lngelu, 1e-2f, 3e-3);
    fd("layernorm+gelu (rows) dw", g_lw, GC, dw, run_lngelu, 1e-2f, 1e-3);
    fd("layernorm+gelu (rows) db", g_lb, GC, db, run_lngelu, 1e-2f, 1e-3);
    /* dx may alias dy; dw/db accumulate; 2 threads give the same bits */
    float *dy = kt_alloc(GN * GC), *dw2 = kt_alloc(GC), *db2 = kt_alloc(GC);
    memcpy(dy, g_r, sizeof(float) * GN * GC);
    memcpy(dw2, dw, sizeof(float) * GC);
    memcpy(db2, db, sizeof(float) * GC);
    kn_set_threads(2);
    kn_layernorm_gelu_bwd(dy, dw2, db2, dy, g_lx, g_lw, g_lb, GN, GC, 1e-6f, scr);
    kn_set_threads(1);
    kt_check("layernorm+gelu dx in place (== dy)",
             memcmp(dy, dx, sizeof(float) * GN * GC) ? 1.0 : 0.0, 0.0);
    double e = 0;
    for (int c = 0; c < GC; c++) {
        e = fmax(e, fabs(dw2[c] - 2 * dw[c]) / (fabs(dw[c]) + 1e-3));
        e = fmax(e, fabs(db2[c] - 2 * db[c]) / (fabs(db[c]) + 1e-3));
    }
    kt_check("layernorm+gelu dw,db accumulate", e, 1e-6);
    free(dy), free(dw2), free(db2), free(scr), free(dx), free(dw), free(db);
    free(g_lx), free(g_lw), free(g_lb);
}

/* ---- kn_gemm_nn_pk (the weight-gradient GEMM): against a double loop, odd sizes and
 * strides, K over several blocks, overwrite and accumulate, 2 threads == 1 ---- */
static void test_gemm_nn_pk(void)
{
    enum { M = 101, N = 70, K = 600, LDA = K + 3, LDB = N + 5, LDC = N + 2 };
    float *a = kt_alloc((size_t)M * LDA), *b = kt_alloc((size_t)K * LDB);
    float *c = kt_alloc((size_t)M * LDC), *c2 = kt_alloc((size_t)M * LDC), *ref = kt_alloc((size_t)M * LDC);
    kt_fill(a, (size_t)M * LDA, &g_rng, -1, 1);
    kt_fill(b, (size_t)K * LDB, &g_rng, -1, 1);
    for (size_t i = 0; i < (size_t)M * LDC; i++) c[i] = c2[i] = 7.0f;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int k = 0; k < K; k++) acc += (double)a[(size_t)m * LDA + k] * b[(size_t)k * LDB + n];
            ref[(size_t)m * LDC + n] = (float)acc;
        }
    kn_gemm_nn_pk(c, LDC, a, LDA, b, LDB, M, N, K, 0);
    double e = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) e = fmax(e, fabs(c[(size_t)m * LDC + n] - ref[(size_t)m * LDC + n]));
    kt_check("gemm_nn_pk vs double loop (abs, |C|~25)", e, 2e-4);
    int pad_kept = c[N] == 7.0f && c[(size_t)(M - 1) * LDC + N + 1] == 7.0f;
    kt_check("gemm_nn_pk leaves the row padding", pad_kept ? 0.0 : 1.0, 0.0);
    kn_gemm_nn_pk(c, LDC, a, LDA, b, LDB, M, N, K, 1);
    e = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            e = fmax(e, fabs(c[(size_t)m * LDC + n] - 2 * ref[(size_t)m * LDC + n]));
    kt_check("gemm_nn_pk acc=1 adds", e, 4e-4);
    kn_set_threads(2);
    kn_gemm_nn_pk(c2, LDC, a, LDA, b, LDB, M, N, K, 0);
    kn_set_threads(1);
    kn_gemm_nn_pk(ref, LDC, a, LDA, b, LDB, M, N, K, 0);
    int same = 1;
    for (int m = 0; m < M; m++)
        same &= !memcmp(c2 + (size_t)m * LDC, ref + (size_t)m * LDC, sizeof(float) * N);
    kt_check("gemm_nn_pk 2 threads == 1", same ? 0.0 : 1.0, 0.0);
    free(a), free(b), free(c), free(c2), free(ref);
}

static int t_cin, t_h, t_w, t_cout;
static void run_convt(float *y)
{
    kn_convt2x2_fwd(y, c_x, c_wt, c_b, t_cin, t_h, t_w, t_cout);
}

static void test_convt(void)
{
    t_cin = 5, t_h = 7, t_w = 9, t_cout = 3;
    size_t nx = 5 * 7 * 9, nw = 5 * 3 * 4;
    c_x = kt_alloc(nx);
    c_wt = kt_alloc(nw);
    c_b = kt_alloc(3);
    kt_fill(c_x, nx, &g_rng, -1, 1);
    kt_fill(c_wt, nw, &g_rng, -1, 1);
    kt_fill(c_b, 3, &g_rng, -1, 1);
    setup_out(3 * 14 * 18);
    float *dx = kt_alloc(nx), *dw = kt_alloc(nw), *db = kt_alloc(3);
    float *scr = kt_alloc(kn_convt2x2_bwd_scratch(7, 9, 3));
    kn_convt2x2_bwd(dx, dw, db, g_r, c_x, c_wt, 5, 7, 9, 3, scr);
    fd("convt2x2 dx", c_x, nx, dx, run_convt, 1e-1f, 1e-3);
    fd("convt2x2 dw", c_wt, nw, dw, run_convt, 1e-1f, 1e-3);
    fd("convt2x2 db", c_b, 3, db, run_convt, 1e-1f, 1e-3);
    free(scr);
    free(dx);
    free(dw);
    free(db);
    free(c_x);
    free(c_wt);
    free(c_b);
}

/* ---- linear (existing kn_linear_bwd) ---- */
static float *li_x, *li_w, *li_b;
static void run_linear(float *y)
{
    kn_linear_fwd(y, li_x, li_w, li_b, 5, 7, 3);
}

static void test_linear(void)
{
    li_x = kt_alloc(35);
    li_w = kt_alloc(21);
    li_b = kt_alloc(3);
    kt_fill(li_x, 35, &g_rng, -1, 1);
    kt_fill(li_w, 21, &g_rng, -1, 1);
    kt_fill(li_b, 3, &g_rng, -1, 1);
    setup_out(15);
    float *dx = kt_alloc(35), *dw = kt_alloc(21), *db = kt_alloc(3);
    kn_linear_bwd(dx, dw, db, g_r, li_x, li_w, 5, 7, 3);
    fd("linear dx", li_x, 35, dx, run_linear, 1e-1f, 1e-3);
    fd("linear dW", li_w, 21, dw, run_linear, 1e-1f, 1e-3);
    fd("linear db", li_b, 3, db, run_linear, 1e-1f, 1e-3);
    free(dx);
    free(dw);
    free(db);
    free(li_x);
    free(li_w);
    free(li_b);
}

/* ---- element-wise: gelu, relu, sigmoid, softmax ---- */
enum { EN = 45 };
static float *e_x;
static void run_gelu(float *y)
{
    kn_gelu_fwd(y, e_x, EN);
}
static void run_relu(float *y)
{
    kn_relu_fwd(y, e_x, EN);
}
static void run_sigmoid(float *y)
{
    kn_sigmoid_fwd(y, e_x, EN);
}
static void run_softmax(float *y)
{
    kn_softmax_fwd(y, e_x, 5, 9);
}

static void test_elementwise(void)
{
    e_x = kt_alloc(EN);
    kt_fill(e_x, EN, &g_rng, -4, 4);
    for (int i = 0; i < EN; i++) /* keep relu's kink away from the FD stencil */
        if (fabsf(e_x[i]) < 0.1f) e_x[i] = 0.5f;
    setup_out(EN);
    float *dx = kt_alloc(EN), *y = kt_alloc(EN);
    kn_gelu_bwd(dx, g_r, e_x, EN);
    fd("gelu dx", e_x, EN, dx, run_gelu, 1e-2f, 1e-3);
    kn_relu_bwd(dx, g_r, e_x, EN);
    fd("relu dx", e_x, EN, dx, run_relu, 1e-2f, 1e-4);
    kn_sigmoid_fwd(y, e_x, EN);
    kn_sigmoid_bwd(dx, g_r, y, EN);
    fd("sigmoid dx", e_x, EN, dx, run_sigmoid, 1e-2f, 1e-3);
    kn_softmax_fwd(y, e_x, 5, 9);
    kn_softmax_bwd(dx, g_r, y, 5, 9);
    fd("softmax dx", e_x, EN, dx, run_softmax, 1e-2f, 1e-3);
    /* sigmoid saturates without NaN/inf */
    float big[4] = {-1000.0f, -88.0f, 88.0f, 1000.0f}, sb[4];
    kn_sigmoid_fwd(sb, big, 4);
    kt_check("sigmoid finite at +-1000",
             (sb[0] == 0.0f && sb[3] == 1.0f && sb[1] >= 0 && sb[2] <= 1) ? 0.0 : 1.0, 0.0);
    /* mul and axpby against the obvious loop */
    float a[EN], b[EN], m[EN];
    kt_fill(a, EN, &g_rng, -1, 1);
    kt_fill(b, EN, &g_rng, -1, 1);
    kn_mul(m, a, b, EN);
    double e = 0;
    for (int i = 0; i < EN; i++)
        e = fmax(e, fabs(m[i] - a[i] * b[i]));
    kn_axpby(m, 0.5f, a, -2.0f, b, EN);
    for (int i = 0; i < EN; i++)
        e = fmax(e, fabs(m[i] - (0.5f * a[i] - 2.0f * b[i])));
    kn_axpby(m, 3.0f, a, 0.0f, NULL, EN);
    for (int i = 0; i < EN; i++)
        e = fmax(e, fabs(m[i] - 3.0f * a[i]));
    kn_axpby(a, 1.0f, a, 1.0f, b, EN); /* in place */
    for (int i = 0; i < EN; i++)
        e = fmax(e, fabs(a[i] - (m[i] / 3.0f + b[i])));
    kt_check("mul / axpby", e, 1e-6);
    free(dx);
    free(y);
    free(e_x);
}

/* ---- point sampling and BCE + Dice ---- */
enum { PC = 5, PH = 7, PW = 9, PP = 29 };
static float *p_x, *p_pts;
static void run_ps(float *y)
{
    kn_point_sample_fwd(y, p_x, p_pts, PC, PH, PW, PP);
}
static float *b_t;
static void run_bce(float *y)
{
    /* L = loss itself: y[0] = loss, r = (1) */
    y[0] = kn_bce_dice_loss(NULL, NULL, p_x, b_t, PP, 0.5f);
}

static void test_point_loss(void)
{
    p_x = kt_alloc(PC * PH * PW);
    p_pts = kt_alloc(2 * PP);
    kt_fill(p_x, PC * PH * PW, &g_rng, -1, 1);
    kt_fill(p_pts, 2 * PP, &g_rng, -0.08f, 1.08f); /* some samples straddle the border */
    setup_out(PC * PP);
    float *dx = kt_alloc(PC * PH * PW);
    kn_point_sample_bwd(dx, g_r, p_pts, PC, PH, PW, PP);
    fd("point_sample dx", p_x, PC * PH * PW, dx, run_ps, 1e-1f, 1e-4);
    /* samples at pixel centres read the pixel exactly */
    float ctr[4] = {(2 + 0.5f) / PW, (3 + 0.5f) / PH, 0.5f / PW, 0.5f / PH}, o[2 * PC];
    kn_point_sample_fwd(o, p_x, ctr, PC, PH, PW, 2);
    double e = 0;
    for (int c = 0; c < PC; c++) {
        e = fmax(e, fabs(o[c * 2] - p_x[(c * PH + 3) * PW + 2]));
        e = fmax(e, fabs(o[c * 2 + 1] - p_x[c * PH * PW]));
    }
    kt_check("point_sample at pixel centres", e, 1e-6);
    free(dx);

    /* BCE + Dice w.r.t. the logits (reuse p_x[0..PP) as logits) */
    b_t = kt_alloc(PP);
    kt_fill(b_t, PP, &g_rng, 0, 1);
    for (int i = 0; i < PP; i += 3)
        b_t[i] = (float)(i % 2); /* some hard 0/1 targets */
    for (int i = 0; i < PP; i++)
        p_x[i] *= 4.0f;
    float one = 1.0f, dl[PP], parts[2];
    setup_out(1);
    g_r = &one;
    float L = kn_bce_dice_loss(dl, parts, p_x, b_t, PP, 0.5f);
    kt_check("bce+dice = weight*(bce+dice)", fabs(L - 0.5f * (parts[0] + parts[1])), 1e-6);
    fd("bce+dice dlogits", p_x, PP, dl, run_bce, 1e-2f, 1e-3);
    free(b_t);
    free(p_x);
    free(p_pts);
}

/* ---- softmax cross-entropy ---- */
static float *ce_x;
static void run_ce(float *y)
{
    y[0] = kn_cross_entropy_loss(NULL, ce_x, 7, 4, 0.25f);
}

static void test_ce(void)
{
    float x[7], dl[7], one = 1.0f;
    kt_fill(x, 7, &g_rng, -3, 3);
    ce_x = x;
    setup_out(1);
    g_r = &one;
    kn_cross_entropy_loss(dl, x, 7, 4, 0.25f);
    fd("cross_entropy dlogits", x, 7, dl, run_ce, 1e-2f, 1e-3);
    float big[3] = {1000.0f, -1000.0f, 0.0f};
    float L = kn_cross_entropy_loss(NULL, big, 3, 1, 1.0f);
    kt_check("cross_entropy finite at +-1000 (= 2000)", fabs(L - 2000.0f), 1e-3);
}

/* ---- RNG and uncertainty point selection ---- */
static void test_points_select(void)
{
    uint64_t s = 0;
    /* splitmix64 reference values for seed 0 (Vigna's splitmix64.c) */
    uint64_t v1 = kn_rng_next(&s), v2 = kn_rng_next(&s);
    kt_check("splitmix64 seed 0 sequence",
             (v1 == 0xE220A8397B1DCDAFull && v2 == 0x6E789E6AA1B965F4ull) ? 0.0 : 1.0, 0.0);
    enum { H = 16, W = 20, P = 40, OV = 3 };
    float logits[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            logits[y * W + x] = 0.4f * (float)(x - 9) + 0.1f * (float)y;
    float *scr = kt_alloc(kn_uncertain_points_scratch(P, OV));
    float pts[2 * P], pts2[2 * P];
    uint64_t r1 = 7, r2 = 7;
    int rc = kn_uncertain_points(pts, logits, H, W, P, OV, 0.75f, &r1, scr);
    rc |= kn_uncertain_points(pts2, logits, H, W, P, OV, 0.75f, &r2, scr);
    kt_check("uncertain points: same seed, same points",
             (rc == 0 && memcmp(pts, pts2, sizeof pts) == 0 && r1 == r2) ? 0.0 : 1.0, 0.0);
    /* the 30 importance points are the 30 smallest |logit| among the 120 candidates */
    uint64_t r3 = 7;
    float cand[2 * P * OV], cl[P * OV], sel[30];
    for (int i = 0; i < 2 * P * OV; i++)
        cand[i] = kn_rng_uniform(&r3);
    kn_point_sample_fwd(cl, logits, cand, 1, H, W, P * OV);
    kn_point_sample_fwd(sel, logits, pts, 1, H, W, 30);
    float maxsel = 0;
    for (int i = 0; i < 30; i++)
        maxsel = fmaxf(maxsel, fabsf(sel[i]));
    int below = 0;
    for (int i = 0; i < P * OV; i++)
        below += fabsf(cl[i]) <= maxsel;
    int inrange = 1;
    for (int i = 0; i < 2 * P; i++)
        inrange &= pts[i] >= 0.0f && pts[i] < 1.0f;
    kt_check("uncertain points: top-30 by -|logit|", (below == 30 && inrange) ? 0.0 : 1.0, 0.0);
    kt_check("uncertain points: bad args -> -1",
             kn_uncertain_points(pts, logits, H, W, 0, OV, 0.75f, &r1, scr) == -1 &&
                     kn_uncertain_points(pts, logits, H, W, P, OV, 1.5f, &r1, scr) == -1
                 ? 0.0
                 : 1.0,
             0.0);
    free(scr);
}

/* ---- Adam: two steps by hand in double ---- */
static void test_adam(void)
{
    float p[3] = {0.5f, -1.0f, 2.0f}, m[3] = {0}, v[3] = {0};
    float g1[3] = {0.1f, -0.2f, 0.3f}, g2[3] = {-0.05f, 0.4f, 0.0f};
    double pd[3] = {0.5, -1.0, 2.0}, md[3] = {0}, vd[3] = {0};
    const float *gs[2] = {g1, g2};
    for (int t = 1; t <= 2; t++) {
        kn_adam_step(p, gs[t - 1], m, v, 3, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, t);
        for (int i = 0; i < 3; i++) {
            double g = gs[t - 1][i];
            md[i] = 0.9 * md[i] + 0.1 * g;
            vd[i] = 0.999 * vd[i] + 0.001 * g * g;
            double mh = md[i] / (1 - pow(0.9, t)), vh = vd[i] / (1 - pow(0.999, t));
            pd[i] -= 1e-3 * mh / (sqrt(vh) + 1e-8);
        }
    }
    double e = 0;
    for (int i = 0; i < 3; i++)
        e = fmax(e, fabs(p[i] - pd[i]));
    kt_check("adam 2 steps vs double formula", e, 1e-6);
}

int main(void)
{
    kn_set_threads(1); /* tiny shapes: one thread avoids fork/join overhead per FD probe */
    test_attention();
    test_layernorm();
    conv_case("dense k3 s1 p1", 5, 7, 9, 4, 3, 1, 1, 1);
    conv_case("dense k3 s2 p1", 5, 7, 9, 4, 3, 2, 1, 1);
    conv_case("dense k1", 5, 7, 9, 4, 1, 1, 0, 1);
    conv_case("grouped g2 k3 s1 p0", 6, 7, 9, 4, 3, 1, 0, 2);
    conv_case("depthwise k3 s2 p1", 5, 7, 9, 5, 3, 2, 1, 5);
    test_convt();
    conv3pk_case(7, 9, 5, 4);    /* one partial tile of rows, one partial column panel */
    conv3pk_case(6, 5, 13, 37);  /* 117 rows (tail tile), two panels (the second partial) */
    test_layernorm_gelu();
    test_gemm_nn_pk();
    test_linear();
    test_elementwise();
    test_point_loss();
    test_ce();
    test_points_select();
    test_adam();
    free(g_y);
    return kt_exit();
}
