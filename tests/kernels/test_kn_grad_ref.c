/* test_kn_grad_ref.c — kn_* forward and backward ops against PyTorch autograd goldens.
 *
 * Usage: test_kn_grad_ref GOLDEN.bin   (made by ref_grads.py at test time, label `ref`)
 * Covers conv2d (dense, stride 2, 1x1, grouped, depthwise), convT 2x2, LayerNorm2d, row
 * LayerNorm, linear, gelu, relu, sigmoid, softmax, attention with bias (and row strides),
 * point_sample vs grid_sample(align_corners=False), BCE + Dice, cross-entropy, uncertainty point
 * selection (same splitmix64 stream, torch.topk), 5 steps of torch.optim.Adam, and the
 * adapter's mask_feature branch + point loss composed end to end ("chain").
 * error = max |ours − torch| / max(max |torch|, 1e-3); per-op tolerances below.
 */
#include "kn_test.h"

#include <string.h>

typedef struct {
    char name[64];
    uint32_t n;
    float *v;
} rec_t;

static rec_t *g_rec;
static int g_nrec;

static int load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open golden file %s (run ref_grads.py first)\n", path);
        return -1;
    }
    char magic[4];
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "KNG1", 4) != 0) {
        fprintf(stderr, "%s: not a KNG1 golden file\n", path);
        fclose(f);
        return -1;
    }
    uint32_t len;
    while (fread(&len, 4, 1, f) == 1) {
        rec_t r = {{0}, 0, NULL};
        if (len >= sizeof r.name || fread(r.name, 1, len, f) != len || fread(&r.n, 4, 1, f) != 1 ||
            r.n > (1u << 26)) {
            fprintf(stderr, "%s: corrupt record %d\n", path, g_nrec);
            fclose(f);
            return -1;
        }
        r.v = kt_alloc(r.n);
        if (fread(r.v, 4, r.n, f) != r.n) {
            fprintf(stderr, "%s: short data in %s\n", path, r.name);
            fclose(f);
            return -1;
        }
        rec_t *nr = realloc(g_rec, sizeof(rec_t) * (size_t)(g_nrec + 1));
        if (!nr) exit(2);
        g_rec = nr;
        g_rec[g_nrec++] = r;
    }
    fclose(f);
    return 0;
}

/* the tensor `name`, which must hold n floats (a mismatch is a test failure) */
static float *get(const char *name, size_t n)
{
    for (int i = 0; i < g_nrec; i++)
        if (strcmp(g_rec[i].name, name) == 0) {
            if (g_rec[i].n != n) {
                fprintf(stderr, "golden %s has %u floats, expected %zu\n", name, g_rec[i].n, n);
                exit(1);
            }
            return g_rec[i].v;
        }
    fprintf(stderr, "golden %s missing\n", name);
    exit(1);
}

static float *getf(const char *tag, const char *field, size_t n)
{
    char nm[64];
    snprintf(nm, sizeof nm, "%s.%s", tag, field);
    return get(nm, n);
}

static void cmp(const char *tag, const char *what, const float *ours, const float *ref, size_t n,
                double tol)
{
    char nm[80];
    snprintf(nm, sizeof nm, "%s %s", tag, what);
    kt_check(nm, kt_relerr(ours, ref, n, 1e-3), tol);
}

#define FWD_TOL 1e-5
#define BWD_TOL 1e-5

static void conv_case(const char *tag, int cin, int h, int w, int cout, int k, int s, int p, int g)
{
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    size_t nx = (size_t)cin * h * w, nw = (size_t)cout * (cin / g) * k * k;
    size_t ny = (size_t)cout * ho * wo;
    float *x = getf(tag, "x", nx), *wt = getf(tag, "w", nw), *b = getf(tag, "b", cout);
    float *dy = getf(tag, "dy", ny);
    float *y = kt_alloc(ny), *dx = kt_alloc(nx), *dw = kt_alloc(nw), *db = kt_alloc(cout);
    float *scr = kt_alloc(kn_conv2d_scratch(cin, h, w, k, s, p, g));
    kn_conv2d_fwd(y, x, wt, b, cin, h, w, cout, k, s, p, g, scr);
    kn_conv2d_bwd(dx, dw, db, dy, x, wt, cin, h, w, cout, k, s, p, g, scr);
    cmp(tag, "y", y, getf(tag, "y", ny), ny, FWD_TOL);
    cmp(tag, "dx", dx, getf(tag, "dx", nx), nx, BWD_TOL);
    cmp(tag, "dw", dw, getf(tag, "dw", nw), nw, BWD_TOL);
    cmp(tag, "db", db, getf(tag, "db", cout), cout, BWD_TOL);
    free(y);
    free(dx);
    free(dw);
    free(db);
    free(scr);
}

static void test_convt(void)
{
    const char *t = "convt";
    size_t nx = 5 * 7 * 9, nw = 5 * 3 * 4, ny = 3 * 14 * 18;
    float *x = getf(t, "x", nx), *w = getf(t, "w", nw), *b = getf(t, "b", 3);
    float *dy = getf(t, "dy", ny);
    float *y = kt_alloc(ny), *dx = kt_alloc(nx), *dw = kt_alloc(nw), *db = kt_alloc(3);
    float *scr = kt_alloc(kn_convt2x2_bwd_scratch(7, 9, 3));
    kn_convt2x2_fwd(y, x, w, b, 5, 7, 9, 3);
    kn_convt2x2_bwd(dx, dw, db, dy, x, w, 5, 7, 9, 3, scr);
    cmp(t, "y", y, getf(t, "y", ny), ny, FWD_TOL);
    cmp(t, "dx", dx, getf(t, "dx", nx), nx, BWD_TOL);
    cmp(t, "dw", dw, getf(t, "dw", nw), nw, BWD_TOL);
    cmp(t, "db", db, getf(t, "db", 3), 3, BWD_TOL);
    free(y);
    free(dx);
    free(dw);
    free(db);
    free(scr);
}

static void test_norms(void)
{
    const char *t = "ln2d";
    enum { N2 = 5 * 203 };
    float *x = getf(t, "x", N2), *w = getf(t, "w", 5), *b = getf(t, "b", 5);
    float *dy = getf(t, "dy", N2);
    float y[N2], dx[N2], dw[5] = {0}, db[5] = {0}, scr[2 * 203];
    kn_layernorm2d_fwd(y, x, w, b, 5, 203, 1e-6f);
    kn_layernorm2d_bwd(dx, dw, db, dy, x, w, 5, 203, 1e-6f, scr);
    cmp(t, "y", y, getf(t, "y", N2), N2, FWD_TOL);
    cmp(t, "dx", dx, getf(t, "dx", N2), N2, BWD_TOL);
    cmp(t, "dw", dw, getf(t, "dw", 5), 5, BWD_TOL);
    cmp(t, "db", db, getf(t, "db", 5), 5, BWD_TOL);
    t = "ln";
    x = getf(t, "x", 315), w = getf(t, "w", 5), b = getf(t, "b", 5), dy = getf(t, "dy", 315);
    float mean[63], rstd[63];
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    kn_layernorm_fwd(y, mean, rstd, x, w, b, 63, 5, 1e-5f);
    kn_layernorm_bwd(dx, dw, db, dy, x, mean, rstd, w, 63, 5);
    cmp(t, "y", y, getf(t, "y", 315), 315, FWD_TOL);
    cmp(t, "dx", dx, getf(t, "dx", 315), 315, BWD_TOL);
    cmp(t, "dw", dw, getf(t, "dw", 5), 5, BWD_TOL);
    cmp(t, "db", db, getf(t, "db", 5), 5, BWD_TOL);
    t = "ln32";
    x = getf(t, "x", 288), w = getf(t, "w", 32), b = getf(t, "b", 32), dy = getf(t, "dy", 288);
    float dw32[32] = {0}, db32[32] = {0};
    kn_layernorm_fwd(y, mean, rstd, x, w, b, 9, 32, 1e-5f);
    kn_layernorm_bwd(dx, dw32, db32, dy, x, mean, rstd, w, 9, 32);
    cmp(t, "y", y, getf(t, "y", 288), 288, FWD_TOL);
    cmp(t, "dx", dx, getf(t, "dx", 288), 288, BWD_TOL);
    cmp(t, "dw", dw32, getf(t, "dw", 32), 32, BWD_TOL);
    cmp(t, "db", db32, getf(t, "db", 32), 32, BWD_TOL);
}

static void test_pointwise(void)
{
    const char *t = "linear";
    float *x = getf(t, "x", 35), *w = getf(t, "w", 21), *b = getf(t, "b", 3);
    float *dy = getf(t, "dy", 15);
    float y[45], dx[45], dw[21] = {0}, db[3] = {0};
    kn_linear_fwd(y, x, w, b, 5, 7, 3);
    kn_linear_bwd(dx, dw, db, dy, x, w, 5, 7, 3);
    cmp(t, "y", y, getf(t, "y", 15), 15, FWD_TOL);
    cmp(t, "dx", dx, getf(t, "dx", 35), 35, BWD_TOL);
    cmp(t, "dw", dw, getf(t, "dw", 21), 21, BWD_TOL);
    cmp(t, "db", db, getf(t, "db", 3), 3, BWD_TOL);

    const char *names[4] = {"gelu", "relu", "sigmoid", "softmax"};
    for (int i = 0; i < 4; i++) {
        t = names[i];
        x = getf(t, "x", 45), dy = getf(t, "dy", 45);
        switch (i) {
        case 0:
            kn_gelu_fwd(y, x, 45);
            kn_gelu_bwd(dx, dy, x, 45);
            break;
        case 1:
            kn_relu_fwd(y, x, 45);
            kn_relu_bwd(dx, dy, x, 45);
            break;
        case 2:
            kn_sigmoid_fwd(y, x, 45);
            kn_sigmoid_bwd(dx, dy, y, 45);
            break;
        default:
            kn_softmax_fwd(y, x, 5, 9);
            kn_softmax_bwd(dx, dy, y, 5, 9);
        }
        cmp(t, "y", y, getf(t, "y", 45), 45, FWD_TOL);
        cmp(t, "dx", dx, getf(t, "dx", 45), 45, BWD_TOL);
    }
}

static void test_attention(void)
{
    enum { H = 3, D = 4, NQ = 5, NK = 11, C = H * D, LQ = C + 3, LK = C + 1, LV = 3 * C };
    const char *t = "attn";
    float *q = getf(t, "q", NQ * C), *k = getf(t, "k", NK * C), *v = getf(t, "v", NK * C);
    float *bias = getf(t, "bias", H * NQ * NK), *dout = getf(t, "dout", NQ * C);
    /* strided copies: q, k, v live inside wider rows, as in a packed qkv buffer */
    float qs[NQ * LQ], ks[NK * LK], vs[NK * LV], dqs[NQ * LQ], dks[NK * LK], dvs[NK * LV];
    for (int i = 0; i < NQ; i++)
        memcpy(qs + i * LQ, q + i * C, sizeof(float) * C);
    for (int j = 0; j < NK; j++) {
        memcpy(ks + j * LK, k + j * C, sizeof(float) * C);
        memcpy(vs + j * LV, v + j * C, sizeof(float) * C);
    }
    float out[NQ * C], dq[NQ * C], dk[NK * C], dv[NK * C];
    float *scr = kt_alloc(kn_attention_bwd_scratch(NQ, NK));
    kn_attention_fwd(out, qs, LQ, ks, LK, vs, LV, bias, H, NQ, NK, D, 0.5f, scr);
    kn_attention_bwd(dqs, dks, dvs, dout, qs, LQ, ks, LK, vs, LV, bias, H, NQ, NK, D, 0.5f, scr);
    for (int i = 0; i < NQ; i++)
        memcpy(dq + i * C, dqs + i * LQ, sizeof(float) * C);
    for (int j = 0; j < NK; j++) {
        memcpy(dk + j * C, dks + j * LK, sizeof(float) * C);
        memcpy(dv + j * C, dvs + j * LV, sizeof(float) * C);
    }
    cmp(t, "out (bias, strided)", out, getf(t, "out", NQ * C), NQ * C, FWD_TOL);
    cmp(t, "dq", dq, getf(t, "dq", NQ * C), NQ * C, BWD_TOL);
    cmp(t, "dk", dk, getf(t, "dk", NK * C), NK * C, BWD_TOL);
    cmp(t, "dv", dv, getf(t, "dv", NK * C), NK * C, BWD_TOL);
    free(scr);
}

static void test_points_loss(void)
{
    const char *t = "ps";
    enum { C = 5, H = 7, W = 9, P = 29 };
    float *x = getf(t, "x", C * H * W), *pts = getf(t, "pts", 2 * P);
    float *dout = getf(t, "dout", C * P);
    float out[C * P], dx[C * H * W] = {0};
    kn_point_sample_fwd(out, x, pts, C, H, W, P);
    kn_point_sample_bwd(dx, dout, pts, C, H, W, P);
    cmp("point_sample", "out", out, getf(t, "out", C * P), C * P, FWD_TOL);
    cmp("point_sample", "dx", dx, getf(t, "dx", C * H * W), C * H * W, BWD_TOL);

    t = "bce";
    float *lg = getf(t, "logits", 74), *tg = getf(t, "tgt", 74), dl[74];
    float loss = 0;
    for (int m = 0; m < 2; m++)
        loss += kn_bce_dice_loss(dl + 37 * m, NULL, lg + 37 * m, tg + 37 * m, 37, 0.5f);
    cmp("bce+dice", "loss", &loss, getf(t, "loss", 1), 1, FWD_TOL);
    cmp("bce+dice", "dlogits", dl, getf(t, "dlogits", 74), 74, BWD_TOL);
}

static void test_ce(void)
{
    float *lg = getf("ce", "logits", 28), *lab = getf("ce", "labels", 4), dl[28];
    float loss = 0;
    for (int i = 0; i < 4; i++)
        loss += kn_cross_entropy_loss(dl + 7 * i, lg + 7 * i, 7, (int)lab[i], 0.25f);
    cmp("cross_entropy", "loss", &loss, getf("ce", "loss", 1), 1, FWD_TOL);
    cmp("cross_entropy", "dlogits", dl, getf("ce", "dlogits", 28), 28, BWD_TOL);
}

/* The mask_feature branch end to end with the kn ops, forward and backward, the way the
 * adapter trainer composes them (see ref_grads.py "chain"). */
static void test_chain(void)
{
    enum { C = 8, H = 24, W = 20, HW = H * W, M = 16, P = 60 };
    const char *t = "chain";
    float *up = getf(t, "up", C * HW), *w1 = getf(t, "w1", M * C * 9), *b1 = getf(t, "b1", M);
    float *lw = getf(t, "lw", M), *lb = getf(t, "lb", M), *w2 = getf(t, "w2", C * M * 9);
    float *b2 = getf(t, "b2", C), *hyper = getf(t, "hyper", C), *mask = getf(t, "mask", HW);
    float *pts = getf(t, "pts", 2 * P);
    float *scr = kt_alloc(kn_conv2d_scratch(M, H, W, 3, 1, 1, 1));
    float *h1 = kt_alloc(M * HW), *h2 = kt_alloc(M * HW), *h3 = kt_alloc(M * HW);
    float *fused = kt_alloc(C * HW), *logits = kt_alloc(HW);
    /* forward */
    kn_conv2d_fwd(h1, up, w1, b1, C, H, W, M, 3, 1, 1, 1, scr);
    kn_layernorm2d_fwd(h2, h1, lw, lb, M, HW, 1e-6f);
    kn_gelu_fwd(h3, h2, M * HW);
    kn_conv2d_fwd(fused, h3, w2, b2, M, H, W, C, 3, 1, 1, 1, scr);
    kn_add(fused, fused, up, C * HW);
    kn_gemm(0, 0, 1, HW, C, 1.0f, hyper, C, fused, HW, 0.0f, logits, HW);
    float pl[P], tg[P], dpl[P];
    kn_point_sample_fwd(pl, logits, pts, 1, H, W, P);
    kn_point_sample_fwd(tg, mask, pts, 1, H, W, P);
    float loss = kn_bce_dice_loss(dpl, NULL, pl, tg, P, 1.0f);
    /* backward */
    float *dlogits = kt_alloc(HW), *dfused = kt_alloc(C * HW), *dh3 = kt_alloc(M * HW);
    float *dh2 = kt_alloc(M * HW), *dh1 = kt_alloc(M * HW), *lnscr = kt_alloc(2 * HW);
    float *dw1 = kt_alloc(M * C * 9), *db1 = kt_alloc(M), *dlw = kt_alloc(M), *dlb = kt_alloc(M);
    float *dw2 = kt_alloc(C * M * 9), *db2 = kt_alloc(C), *dhyper = kt_alloc(C);
    kn_point_sample_bwd(dlogits, dpl, pts, 1, H, W, P);
    kn_gemm(0, 1, 1, C, HW, 1.0f, dlogits, HW, fused, HW, 0.0f, dhyper, C); /* dhyper */
    kn_gemm(1, 0, C, HW, 1, 1.0f, hyper, C, dlogits, HW, 0.0f, dfused, HW); /* hyperᵀ·dl */
    kn_conv2d_bwd(dh3, dw2, db2, dfused, h3, w2, M, H, W, C, 3, 1, 1, 1, scr);
    kn_gelu_bwd(dh2, dh3, h2, M * HW);
    kn_layernorm2d_bwd(dh1, dlw, dlb, dh2, h1, lw, M, HW, 1e-6f, lnscr);
    kn_conv2d_bwd(NULL, dw1, db1, dh1, up, w1, C, H, W, M, 3, 1, 1, 1, scr);
    cmp(t, "loss", &loss, getf(t, "loss", 1), 1, FWD_TOL);
    cmp(t, "dhyper", dhyper, getf(t, "dhyper", C), C, BWD_TOL);
    cmp(t, "dw2", dw2, getf(t, "dw2", C * M * 9), C * M * 9, BWD_TOL);
    cmp(t, "db2", db2, getf(t, "db2", C), C, BWD_TOL);
    cmp(t, "dlw (ln2d)", dlw, getf(t, "dlw", M), M, BWD_TOL);
    cmp(t, "dlb (ln2d)", dlb, getf(t, "dlb", M), M, BWD_TOL);
    cmp(t, "dw1", dw1, getf(t, "dw1", M * C * 9), M * C * 9, BWD_TOL);
    cmp(t, "db1", db1, getf(t, "db1", M), M, BWD_TOL);
    float *bufs[] = {scr, h1,    h2,  h3,  fused, logits, dlogits, dfused, dh3,   dh2,
                     dh1, lnscr, dw1, db1, dlw,   dlb,    dw2,     db2,    dhyper};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
}

static int cmp_pt(const void *a, const void *b)
{
    const float *p = a, *q = b;
    if (p[0] != q[0]) return p[0] < q[0] ? -1 : 1;
    return (p[1] > q[1]) - (p[1] < q[1]);
}

static void test_uncertain(void)
{
    enum { H = 16, W = 20, P = 28, OV = 3, NI = 21 };
    float *lg = getf("unc", "logits", H * W), *imp = getf("unc", "imp", 2 * NI);
    float *rnd = getf("unc", "rand", 2 * (P - NI));
    float pts[2 * P], ref[2 * NI];
    float *scr = kt_alloc(kn_uncertain_points_scratch(P, OV));
    uint64_t rng = 42;
    int rc = kn_uncertain_points(pts, lg, H, W, P, OV, 0.75f, &rng, scr);
    kt_check("uncertain points rc", rc, 0);
    /* same set as torch.topk (order differs: ours keeps candidate order) */
    memcpy(ref, imp, sizeof ref);
    qsort(pts, NI, 2 * sizeof(float), cmp_pt);
    qsort(ref, NI, 2 * sizeof(float), cmp_pt);
    cmp("uncertain points", "importance set == torch.topk", pts, ref, 2 * NI, 0.0);
    cmp("uncertain points", "random tail", pts + 2 * NI, rnd, 2 * (P - NI), 0.0);
    free(scr);
}

static void test_adam(void)
{
    const char *tags[2] = {"adam0", "adam1"};
    const float wd[2] = {0.0f, 0.01f};
    for (int c = 0; c < 2; c++) {
        float p[50], m[50] = {0}, v[50] = {0};
        memcpy(p, getf(tags[c], "p0", 50), sizeof p);
        float *g = getf(tags[c], "g", 250), *ref = getf(tags[c], "p", 250);
        double e = 0;
        for (int s = 1; s <= 5; s++) {
            kn_adam_step(p, g + 50 * (s - 1), m, v, 50, 1e-3f, 0.9f, 0.999f, 1e-8f, wd[c], s);
            for (int i = 0; i < 50; i++)
                e = fmax(e, fabs(p[i] - ref[50 * (s - 1) + i]));
        }
        char nm[64];
        snprintf(nm, sizeof nm, "%s 5 steps vs torch.optim.Adam (abs)", tags[c]);
        kt_check(nm, e, 1e-6);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "usage: %s GOLDEN.bin  (written by tests/kernels/ref_grads.py)\n", argv[0]);
        return argc == 2 ? 0 : 2;
    }
    if (load(argv[1]) != 0) return 1;
    kn_set_threads(2);
    conv_case("conv_k3s1", 5, 7, 9, 4, 3, 1, 1, 1);
    conv_case("conv_k3s2", 5, 7, 9, 4, 3, 2, 1, 1);
    conv_case("conv_k1", 5, 7, 9, 4, 1, 1, 0, 1);
    conv_case("conv_g2", 6, 7, 9, 4, 3, 1, 0, 2);
    conv_case("conv_dw", 5, 7, 9, 5, 3, 2, 1, 5);
    conv_case("conv_big", 32, 24, 20, 16, 3, 1, 1, 1);
    test_convt();
    test_norms();
    test_pointwise();
    test_attention();
    test_points_loss();
    test_ce();
    test_chain();
    test_uncertain();
    test_adam();
    for (int i = 0; i < g_nrec; i++)
        free(g_rec[i].v);
    free(g_rec);
    return kt_exit();
}
