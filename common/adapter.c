/* adapter.c — MoDA adapter parameters, zero-shot init, head forward/backward (adapter.h).
 *
 * The head works on channel-last maps (layouts at struct adp_work) so that every layer is a
 * packed AVX-512 GEMM on the kn_parallel_for pool: conv3×3 forward and input gradient by
 * kn_conv3_pk_fwd (implicit GEMM; the input gradient with the transposed, flipped weight),
 * its weight gradient by kn_conv3_pk_wgrad; each transposed conv 2×2 s2 as one
 * kn_linear_pk_fwd over the input pixels (output columns = 4 phases × channels), its
 * weight gradient as one GEMM; LayerNorm2d + GELU as the row ops kn_layernorm_gelu_fast_fwd
 * / kn_layernorm_gelu_bwd. Gradients nobody needs are skipped (the inputs of the first layer
 * of each branch are constants). Weights are repacked at every call (they change every
 * step; packing costs well under 1% of the head); the convT weight gradients are
 * kn_gemm_nn_pk on the unpacked maps. All these ops reduce in a fixed order, so the head's
 * gradient does not depend on the thread count (the decoder's OpenBLAS GEMMs are
 * deterministic for a fixed count). Activations of one sample live in an adp_work_t.
 */
#include "adapter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

#define C SAM_EMB_C
#define LR SAM_LOWRES
#define LRN (LR * LR)          /* 65536 */
#define MID (LR / 2)           /* 128 */
#define MIDN (MID * MID)       /* 16384 */
#define EN (SAM_EMB * SAM_EMB) /* 4096 */

static float *falloc(size_t n)
{
    return (float *)aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
}

static void set_param(adapter_t *a, int i, const char *name, int ndim, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3, size_t *off)
{
    adp_param_t *p = &a->params[i];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    p->n = 1;
    for (int k = 0; k < 4; k++) {
        p->shape[k] = k < ndim ? d[k] : 0;
        if (k < ndim) p->n *= (size_t)d[k];
    }
    p->off = *off;
    *off += (p->n + 15) / 16 * 16; /* keep every parameter 64-byte aligned */
}

adapter_t *adapter_new(int early_c, err_t *err)
{
    if (early_c < 1 || early_c > 4096) {
        err_set(err, ERR_RANGE, "adapter_new: early feature channels %d (allowed 1..4096)",
                early_c);
        return NULL;
    }
    adapter_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_NOMEM, "adapter_new: out of memory");
        return NULL;
    }
    a->early_c = early_c;
    size_t off = 0;
    int E = early_c;
    set_param(a, ADP_P_TOK, "hq_token", 2, 1, C, 0, 0, &off);
    set_param(a, ADP_P_M0W, "hq_mlp.layers.0.weight", 2, C, C, 0, 0, &off);
    set_param(a, ADP_P_M0B, "hq_mlp.layers.0.bias", 1, C, 0, 0, 0, &off);
    set_param(a, ADP_P_M1W, "hq_mlp.layers.1.weight", 2, C, C, 0, 0, &off);
    set_param(a, ADP_P_M1B, "hq_mlp.layers.1.bias", 1, C, 0, 0, 0, &off);
    set_param(a, ADP_P_M2W, "hq_mlp.layers.2.weight", 2, ADP_HYP, C, 0, 0, &off);
    set_param(a, ADP_P_M2B, "hq_mlp.layers.2.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, ADP_P_F0W, "mask_feature.0.weight", 4, 64, ADP_HYP, 3, 3, &off);
    set_param(a, ADP_P_F0B, "mask_feature.0.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_F1W, "mask_feature.1.weight", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_F1B, "mask_feature.1.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_F3W, "mask_feature.3.weight", 4, ADP_HYP, 64, 3, 3, &off);
    set_param(a, ADP_P_F3B, "mask_feature.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, ADP_P_E0W, "embedding_encoder.0.weight", 4, C, 64, 2, 2, &off);
    set_param(a, ADP_P_E0B, "embedding_encoder.0.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_E1W, "embedding_encoder.1.weight", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_E1B, "embedding_encoder.1.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, ADP_P_E3W, "embedding_encoder.3.weight", 4, 64, ADP_HYP, 2, 2, &off);
    set_param(a, ADP_P_E3B, "embedding_encoder.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, ADP_P_C0W, "compress.0.weight", 4, E, C, 2, 2, &off);
    set_param(a, ADP_P_C0B, "compress.0.bias", 1, C, 0, 0, 0, &off);
    set_param(a, ADP_P_C1W, "compress.1.weight", 1, C, 0, 0, 0, &off);
    set_param(a, ADP_P_C1B, "compress.1.bias", 1, C, 0, 0, 0, &off);
    set_param(a, ADP_P_C3W, "compress.3.weight", 4, C, ADP_HYP, 2, 2, &off);
    set_param(a, ADP_P_C3B, "compress.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
    a->size = off;
    a->data = falloc(off);
    if (!a->data) {
        free(a);
        err_set(err, ERR_NOMEM, "adapter_new: out of memory for %zu parameters", off);
        return NULL;
    }
    memset(a->data, 0, sizeof(float) * off);
    return a;
}

void adapter_destroy(adapter_t **ap)
{
    if (!ap || !*ap) return;
    free((*ap)->data);
    free(*ap);
    *ap = NULL;
}

adapter_t *adapter_clone(const adapter_t *a, err_t *err)
{
    adapter_t *b = adapter_new(a->early_c, err);
    if (b) memcpy(b->data, a->data, sizeof(float) * a->size);
    return b;
}

float *adapter_param(const adapter_t *a, const char *name)
{
    for (int i = 0; i < ADP_NPARAM; i++)
        if (!strcmp(a->params[i].name, name)) return a->data + a->params[i].off;
    return NULL;
}

#define PW(a, i) ((a)->data + (a)->params[i].off)

static void uniform(float *p, size_t n, float bound, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) p[i] = (2.0f * kn_rng_uniform(rng) - 1.0f) * bound;
}

int adapter_init_from_sam(adapter_t *a, const wts_t *w, uint64_t seed, err_t *err)
{
    const float *tok = wts_f32(w, "mask_decoder.mask_tokens.weight", err, 2, SAM_NMASK, C);
    if (!tok) return err_wrap(err, "adapter init");
    memset(a->data, 0, sizeof(float) * a->size);
    memcpy(PW(a, ADP_P_TOK), tok, sizeof(float) * C); /* mask token 0 */
    for (int l = 0; l < 3; l++) {
        char n[96];
        int o = l == 2 ? ADP_HYP : C;
        snprintf(n, sizeof n, "mask_decoder.output_hypernetworks_mlps.0.layers.%d.weight", l);
        const float *W = wts_f32(w, n, err, 2, o, C);
        snprintf(n, sizeof n, "mask_decoder.output_hypernetworks_mlps.0.layers.%d.bias", l);
        const float *B = wts_f32(w, n, err, 1, o);
        if (!W || !B) return err_wrap(err, "adapter init");
        memcpy(PW(a, ADP_P_M0W + 2 * l), W, sizeof(float) * (size_t)o * C);
        memcpy(PW(a, ADP_P_M0B + 2 * l), B, sizeof(float) * (size_t)o);
    }
    uint64_t rng = seed ^ 0x6d6f64612d616470ULL; /* "moda-adp" */
    /* first layers: PyTorch default init, bound 1/sqrt(fan_in) (convT: fan_in = Cout·4) */
    float bf = 1.0f / sqrtf((float)(ADP_HYP * 9));
    uniform(PW(a, ADP_P_F0W), a->params[ADP_P_F0W].n, bf, &rng);
    uniform(PW(a, ADP_P_F0B), 64, bf, &rng);
    float be = 1.0f / sqrtf(64.0f * 4);
    uniform(PW(a, ADP_P_E0W), a->params[ADP_P_E0W].n, be, &rng);
    uniform(PW(a, ADP_P_E0B), 64, be, &rng);
    float bc = 1.0f / sqrtf((float)C * 4);
    uniform(PW(a, ADP_P_C0W), a->params[ADP_P_C0W].n, bc, &rng);
    uniform(PW(a, ADP_P_C0B), C, bc, &rng);
    for (int i = 0; i < 64; i++) PW(a, ADP_P_F1W)[i] = PW(a, ADP_P_E1W)[i] = 1.0f;
    for (int i = 0; i < C; i++) PW(a, ADP_P_C1W)[i] = 1.0f;
    /* last layers (P_F3*, P_E3*, P_C3*) stay zero: the branches start silent */
    return 0;
}

/* ---- work -------------------------------------------------------------------------------- */

/* Channel-last layouts (pixel-major, channels contiguous), so that the convolutions are the
 * packed AVX-512 GEMMs of kernels/cpu/gemm_pk.c and LayerNorm2d is a row LayerNorm:
 *   upT, fusedT, dfT          [LRN, 32]    pixel y*256+x
 *   f1, f1g                   [LRN, 64]    mask_feature conv1 output, then LN+GELU
 *   e1, e1g / c1, c1g         [MIDN, 64] / [MIDN, 256]  first convT output in phase order:
 *                             row (i*64 + j)*4 + dy*2 + dx is the 128×128 pixel (2i+dy, 2j+dx)
 *   ph                        [MIDN, 128]  second convT output / dfused gathered to the same
 *                             order: row r = (p, ph1), column (dy2*2 + dx2)*32 + k
 * so the second convT of row r writes the 256×256 pixel (4i + 2dy1 + dy2, 4j + 2dx1 + dx2). */
struct adp_work {
    int early_c;
    samdec_trace_t *trace;
    int have_train; /* a training forward is recorded */
    const float *up_in, *emb, *early; /* borrowed inputs of the last head forward */
    float *up;        /* [32, LRN] owned, filled by the decoder */
    float *lowres;    /* [4, LRN] SAM outputs when the caller wants none */
    float hq_out[C], h1[C], h2[C], hyper[ADP_HYP];
    float *upT, *fusedT, *dfT;  /* [LRN, 32] */
    float *f1, *f1g;            /* [LRN, 64] */
    float *e1, *e1g;            /* [MIDN, 64] */
    float *c1, *c1g;            /* [MIDN, 256] */
    float *ph;                  /* [MIDN, 128] */
    float *inT;                 /* [EN, max(256, Ce)] emb / early channel-last */
    float *dA, *dB;             /* [LRN, 64] = [MIDN, 256] */
    float *wp;                  /* packed weights (the largest pack) */
    float *wr;                  /* weight reorder / weight-gradient GEMM output */
    float *bias4;               /* [4 * max(256, ...)] per-phase bias */
    float *scratch;             /* conv weight-gradient / LN+GELU backward scratch */
};

static size_t maxz(size_t a, size_t b)
{
    return a > b ? a : b;
}

static size_t scratch_floats(void)
{
    size_t s = kn_conv3_pk_wgrad_scratch(LR, LR, 64, ADP_HYP);
    s = maxz(s, kn_conv3_pk_wgrad_scratch(LR, LR, ADP_HYP, 64));
    s = maxz(s, kn_layernorm_gelu_bwd_scratch(LRN, 64));
    s = maxz(s, kn_layernorm_gelu_bwd_scratch(MIDN, C));
    return s;
}

/* floats of the largest packed weight / reorder buffer */
static size_t pack_floats(int early_c)
{
    size_t s = kn_pack_size(64, 9 * ADP_HYP);      /* conv1, conv2 dx */
    s = maxz(s, kn_pack_size(ADP_HYP, 9 * 64));    /* conv2 */
    s = maxz(s, kn_pack_size(4 * 64, C));           /* emb convT 1 */
    s = maxz(s, kn_pack_size(4 * C, early_c));      /* compress convT 1 */
    s = maxz(s, kn_pack_size(4 * ADP_HYP, C));      /* second convTs (K ≤ 256) */
    s = maxz(s, kn_pack_size(C, 4 * ADP_HYP));      /* their dx */
    s = maxz(s, (size_t)early_c * 4 * C);           /* reorder / dw of compress convT 1 */
    s = maxz(s, (size_t)C * 4 * 64);                /* emb convT 1 */
    return s;
}

adp_work_t *adp_work_new(int early_c, err_t *err)
{
    adp_work_t *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(err, ERR_NOMEM, "adp_work_new: out of memory");
        return NULL;
    }
    w->early_c = early_c;
    w->trace = samdec_trace_new(err);
    w->up = falloc((size_t)ADP_HYP * LRN);
    w->lowres = falloc((size_t)SAM_NMASK * LRN);
    w->upT = falloc((size_t)ADP_HYP * LRN);
    w->fusedT = falloc((size_t)ADP_HYP * LRN);
    w->dfT = falloc((size_t)ADP_HYP * LRN);
    w->f1 = falloc((size_t)64 * LRN);
    w->f1g = falloc((size_t)64 * LRN);
    w->e1 = falloc((size_t)64 * MIDN);
    w->e1g = falloc((size_t)64 * MIDN);
    w->c1 = falloc((size_t)C * MIDN);
    w->c1g = falloc((size_t)C * MIDN);
    w->ph = falloc((size_t)4 * ADP_HYP * MIDN);
    w->inT = falloc((size_t)(early_c > C ? early_c : C) * EN);
    w->dA = falloc((size_t)64 * LRN);
    w->dB = falloc((size_t)64 * LRN);
    w->wp = falloc(pack_floats(early_c));
    w->wr = falloc(pack_floats(early_c));
    w->bias4 = falloc((size_t)4 * C);
    w->scratch = falloc(scratch_floats());
    if (!w->trace || !w->up || !w->lowres || !w->upT || !w->fusedT || !w->dfT || !w->f1 ||
        !w->f1g || !w->e1 || !w->e1g || !w->c1 || !w->c1g || !w->ph || !w->inT || !w->dA ||
        !w->dB || !w->wp || !w->wr || !w->bias4 || !w->scratch) {
        adp_work_destroy(&w);
        err_set(err, ERR_NOMEM, "adp_work_new: out of memory for adapter activations");
        return NULL;
    }
    return w;
}

void adp_work_destroy(adp_work_t **wp)
{
    if (!wp || !*wp) return;
    adp_work_t *w = *wp;
    samdec_trace_destroy(&w->trace);
    float *b[] = {w->up, w->lowres, w->upT, w->fusedT, w->dfT, w->f1, w->f1g, w->e1, w->e1g,
                  w->c1, w->c1g, w->ph, w->inT, w->dA, w->dB, w->wp, w->wr, w->bias4,
                  w->scratch};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) free(b[i]);
    free(w);
    *wp = NULL;
}

/* ---- head ---------------------------------------------------------------------------------- */

/* Packs conv weight w[N, Cc, 3, 3] for kn_conv3_pk_fwd: as is (rows n, K = tap*Cc + c), or
 * for the input gradient (flip != 0: rows c, K = tap*N + n, taps mirrored). */
static void pack_conv3(float *wp, float *wr, const float *w, int N, int Cc, int flip)
{
    if (!flip) {
        for (int n = 0; n < N; n++)
            for (int c = 0; c < Cc; c++)
                for (int t = 0; t < 9; t++)
                    wr[(size_t)n * 9 * Cc + t * Cc + c] = w[((size_t)n * Cc + c) * 9 + t];
        kn_pack_w(wp, wr, N, 9 * Cc);
    } else {
        for (int n = 0; n < N; n++)
            for (int c = 0; c < Cc; c++)
                for (int t = 0; t < 9; t++)
                    wr[(size_t)c * 9 * N + (8 - t) * N + n] = w[((size_t)n * Cc + c) * 9 + t];
        kn_pack_w(wp, wr, Cc, 9 * N);
    }
}

/* Packs convT weight w[Cin, Cout, 2, 2] as the linear layer y[(s, co)] = Σci x[ci] w[ci, co, s]
 * (rows s*Cout + co, K = Cin) and its bias per row. */
static void pack_convt(float *wp, float *wr, float *b4, const float *w, const float *b, int Cin,
                       int Cout)
{
    for (int ci = 0; ci < Cin; ci++)
        for (int co = 0; co < Cout; co++)
            for (int s = 0; s < 4; s++)
                wr[((size_t)s * Cout + co) * Cin + ci] = w[((size_t)ci * Cout + co) * 4 + s];
    kn_pack_w(wp, wr, 4 * Cout, Cin);
    for (int s = 0; s < 4; s++)
        for (int co = 0; co < Cout; co++) b4[s * Cout + co] = b[co];
}

/* The input gradient of the second convT (Cin → 32): rows ci, K = s*32 + k. */
static void pack_convt_dx(float *wp, float *wr, const float *w, int Cin)
{
    for (int ci = 0; ci < Cin; ci++)
        for (int k = 0; k < ADP_HYP; k++)
            for (int s = 0; s < 4; s++)
                wr[(size_t)ci * 4 * ADP_HYP + s * ADP_HYP + k] = w[((size_t)ci * ADP_HYP + k) * 4 + s];
    kn_pack_w(wp, wr, Cin, 4 * ADP_HYP);
}

typedef struct head_job {
    adp_work_t *w;
    const float *src, *dlogits;
    float *dst;
    int add_up;
} head_job_t;

/* 256×256 pixel of phase-ordered row r, second-convT phase s2 */
static size_t ph_pixel(int r, int s2)
{
    int p = r >> 2, s1 = r & 3, i = p / SAM_EMB, j = p % SAM_EMB;
    int Y = 4 * i + 2 * (s1 >> 1) + (s2 >> 1), X = 4 * j + 2 * (s1 & 1) + (s2 & 1);
    return (size_t)Y * LR + X;
}

/* fusedT += ph (scattered) [+ upT]; item = one 64×64 input row i (rows 4i..4i+3 of the map) */
static void scatter_item(void *ctx, int i, int tid)
{
    (void)tid;
    const head_job_t *j = ctx;
    adp_work_t *w = j->w;
    for (int r = i * SAM_EMB * 4; r < (i + 1) * SAM_EMB * 4; r++)
        for (int s2 = 0; s2 < 4; s2++) {
            size_t px = ph_pixel(r, s2) * ADP_HYP;
            float *o = w->fusedT + px;
            const float *s = w->ph + (size_t)r * 4 * ADP_HYP + s2 * ADP_HYP;
            if (j->add_up) {
                const float *u = w->upT + px;
                for (int k = 0; k < ADP_HYP; k++) o[k] += s[k] + u[k];
            } else {
                for (int k = 0; k < ADP_HYP; k++) o[k] += s[k];
            }
        }
}

/* ph = dfT gathered to phase order (the inverse map of scatter_item) */
static void gather_item(void *ctx, int i, int tid)
{
    (void)tid;
    const head_job_t *j = ctx;
    adp_work_t *w = j->w;
    for (int r = i * SAM_EMB * 4; r < (i + 1) * SAM_EMB * 4; r++)
        for (int s2 = 0; s2 < 4; s2++)
            memcpy(w->ph + (size_t)r * 4 * ADP_HYP + s2 * ADP_HYP,
                   w->dfT + ph_pixel(r, s2) * ADP_HYP, sizeof(float) * ADP_HYP);
}

#define PIXB 4096 /* pixels per item of the per-pixel loops */

/* logits[p] = hyper · fusedT[p], summed over channels in order 0..31 from 0 */
static void logits_item(void *ctx, int it, int tid)
{
    (void)tid;
    const head_job_t *j = ctx;
    const float *hy = j->w->hyper;
    for (int p = it * PIXB; p < (it + 1) * PIXB; p++) {
        const float *f = j->w->fusedT + (size_t)p * ADP_HYP;
        float s = 0.0f;
        for (int k = 0; k < ADP_HYP; k++) s += hy[k] * f[k];
        j->dst[p] = s;
    }
}

/* dfT[p] = dlogits[p] · hyper */
static void dfused_item(void *ctx, int it, int tid)
{
    (void)tid;
    const head_job_t *j = ctx;
    const float *hy = j->w->hyper;
    for (int p = it * PIXB; p < (it + 1) * PIXB; p++) {
        float d = j->dlogits[p];
        float *o = j->w->dfT + (size_t)p * ADP_HYP;
        for (int k = 0; k < ADP_HYP; k++) o[k] = d * hy[k];
    }
}

/* One fusion branch: convT(Cin → Cmid) from x[Cin, 64, 64], LayerNorm2d + GELU, convT(Cmid →
 * 32) into w->ph (phase order). a1, a1g: [MIDN, Cmid]. */
static void branch_fwd(const adapter_t *a, adp_work_t *w, int p0, const float *x, int Cin,
                       int Cmid, float *a1, float *a1g)
{
    kn_transpose(w->inT, x, Cin, EN);
    pack_convt(w->wp, w->wr, w->bias4, PW(a, p0), PW(a, p0 + 1), Cin, Cmid);
    kn_linear_pk_fwd(a1, 4 * Cmid, w->inT, Cin, w->wp, w->bias4, NULL, 0, EN, 4 * Cmid, Cin,
                     KN_ACT_NONE);
    kn_layernorm_gelu_fast_fwd(a1g, a1, PW(a, p0 + 2), PW(a, p0 + 3), MIDN, Cmid, ADP_LN_EPS);
    pack_convt(w->wp, w->wr, w->bias4, PW(a, p0 + 4), PW(a, p0 + 5), Cmid, ADP_HYP);
    kn_linear_pk_fwd(w->ph, 4 * ADP_HYP, a1g, Cmid, w->wp, w->bias4, NULL, 0, MIDN,
                     4 * ADP_HYP, Cmid, KN_ACT_NONE);
}

void adapter_head_fwd(const adapter_t *a, adp_work_t *w, const float *hq_out, const float *up,
                      const float *emb, const float *early, float *logits)
{
    if (hq_out != w->hq_out) memcpy(w->hq_out, hq_out, sizeof w->hq_out);
    w->up_in = up;
    w->emb = emb;
    w->early = early;
    /* hq_mlp -> hyper */
    kn_linear_fwd(w->h1, w->hq_out, PW(a, ADP_P_M0W), PW(a, ADP_P_M0B), 1, C, C);
    kn_relu_fwd(w->h1, w->h1, C);
    kn_linear_fwd(w->h2, w->h1, PW(a, ADP_P_M1W), PW(a, ADP_P_M1B), 1, C, C);
    kn_relu_fwd(w->h2, w->h2, C);
    kn_linear_fwd(w->hyper, w->h2, PW(a, ADP_P_M2W), PW(a, ADP_P_M2B), 1, C, ADP_HYP);
    /* mask_feature(up) -> fusedT */
    kn_transpose(w->upT, up, ADP_HYP, LRN);
    pack_conv3(w->wp, w->wr, PW(a, ADP_P_F0W), 64, ADP_HYP, 0);
    kn_conv3_pk_fwd(w->f1, 64, w->upT, LR, LR, ADP_HYP, 1, 0, LR, w->wp, PW(a, ADP_P_F0B), 64,
                    KN_ACT_NONE);
    kn_layernorm_gelu_fast_fwd(w->f1g, w->f1, PW(a, ADP_P_F1W), PW(a, ADP_P_F1B), LRN, 64,
                               ADP_LN_EPS);
    pack_conv3(w->wp, w->wr, PW(a, ADP_P_F3W), ADP_HYP, 64, 0);
    kn_conv3_pk_fwd(w->fusedT, ADP_HYP, w->f1g, LR, LR, 64, 1, 0, LR, w->wp, PW(a, ADP_P_F3B),
                    ADP_HYP, KN_ACT_NONE);
    /* + embedding_encoder(emb) + compress(early) + up */
    head_job_t j = {.w = w};
    branch_fwd(a, w, ADP_P_E0W, emb, C, 64, w->e1, w->e1g);
    kn_parallel_for(SAM_EMB, KN_POOL_ANY, scatter_item, &j);
    branch_fwd(a, w, ADP_P_C0W, early, a->early_c, C, w->c1, w->c1g);
    j.add_up = 1;
    kn_parallel_for(SAM_EMB, KN_POOL_ANY, scatter_item, &j);
    /* logits = hyper · fused */
    j.dst = logits;
    kn_parallel_for(LRN / PIXB, KN_POOL_ANY, logits_item, &j);
}

/* db[k] += Σ_rows Σ_s x[row, s*32 + k] over x[rows, 128] (double, row order) */
static void bias_grad_ph(float *db, const float *x, int rows)
{
    double s[ADP_HYP] = {0};
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < 4 * ADP_HYP; c++) s[c % ADP_HYP] += x[(size_t)r * 4 * ADP_HYP + c];
    for (int k = 0; k < ADP_HYP; k++) db[k] += (float)s[k];
}

/* Backward of one branch from w->ph (= dfused in phase order): grads of both convTs and
 * the LayerNorm; the input gradient of the first convT is not needed (x is a constant). */
static void branch_bwd(const adapter_t *a, adp_work_t *w, float *grad, int p0, const float *x,
                       int Cin, int Cmid, const float *a1, const float *a1g, const float *phT)
{
#define G(i) (grad + a->params[i].off)
    /* second convT: d a1g = ph · w', dw' += phᵀ · a1g (phT = phᵀ [128, MIDN]; the bias
     * gradient once for both branches, by the caller) */
    pack_convt_dx(w->wp, w->wr, PW(a, p0 + 4), Cmid);
    kn_linear_pk_fwd(w->dA, Cmid, w->ph, 4 * ADP_HYP, w->wp, NULL, NULL, 0, MIDN, Cmid,
                     4 * ADP_HYP, KN_ACT_NONE);
    kn_gemm_nn_pk(w->wr, Cmid, phT, MIDN, a1g, Cmid, 4 * ADP_HYP, Cmid, MIDN, 0);
    float *dw = G(p0 + 4);
    for (int ci = 0; ci < Cmid; ci++)
        for (int s = 0; s < 4; s++)
            for (int k = 0; k < ADP_HYP; k++)
                dw[((size_t)ci * ADP_HYP + k) * 4 + s] += w->wr[(size_t)(s * ADP_HYP + k) * Cmid + ci];
    /* LayerNorm2d + GELU */
    kn_layernorm_gelu_bwd(w->dB, G(p0 + 2), G(p0 + 3), w->dA, a1, PW(a, p0 + 2), PW(a, p0 + 3),
                          MIDN, Cmid, ADP_LN_EPS, w->scratch);
    /* first convT: dw[ci, co, s] += Σ_p x[ci, p] · dB[(p, s), co]; db[co] += Σ dB[., co] */
    kn_gemm_nn_pk(w->wr, 4 * Cmid, x, EN, w->dB, 4 * Cmid, Cin, 4 * Cmid, EN, 0);
    dw = G(p0);
    for (int ci = 0; ci < Cin; ci++)
        for (int s = 0; s < 4; s++)
            for (int co = 0; co < Cmid; co++)
                dw[((size_t)ci * Cmid + co) * 4 + s] += w->wr[(size_t)ci * 4 * Cmid + s * Cmid + co];
    double s[C] = {0}; /* db: column sums in row order */
    for (int r = 0; r < MIDN; r++)
        for (int co = 0; co < Cmid; co++) s[co] += w->dB[(size_t)r * Cmid + co];
    float *db = G(p0 + 1);
    for (int co = 0; co < Cmid; co++) db[co] += (float)s[co];
#undef G
}

void adapter_head_bwd(const adapter_t *a, adp_work_t *w, const float *dlogits, float *grad,
                      float *d_hq_out)
{
#define G(i) (grad + a->params[i].off)
    float dhyper[ADP_HYP], dh2[C], dh1[C];
    /* logits = hyper · fused: dhyper over the points with a gradient (the loss touches only
     * the sampled points' bilinear neighbours), dfused = dlogits ⊗ hyper */
    double dh[ADP_HYP] = {0};
    for (int p = 0; p < LRN; p++) {
        float d = dlogits[p];
        if (d == 0.0f) continue;
        const float *f = w->fusedT + (size_t)p * ADP_HYP;
        for (int k = 0; k < ADP_HYP; k++) dh[k] += (double)d * f[k];
    }
    for (int k = 0; k < ADP_HYP; k++) dhyper[k] = (float)dh[k];
    head_job_t j = {.w = w, .dlogits = dlogits};
    kn_parallel_for(LRN / PIXB, KN_POOL_ANY, dfused_item, &j);
    /* mask_feature: conv2 (dx by the flipped conv, dw), LN + GELU, conv1 (dw only) */
    pack_conv3(w->wp, w->wr, PW(a, ADP_P_F3W), ADP_HYP, 64, 1);
    kn_conv3_pk_fwd(w->dA, 64, w->dfT, LR, LR, ADP_HYP, 1, 0, LR, w->wp, NULL, 64, KN_ACT_NONE);
    kn_conv3_pk_wgrad(G(ADP_P_F3W), G(ADP_P_F3B), w->dfT, w->f1g, LR, LR, 64, ADP_HYP, w->scratch);
    kn_layernorm_gelu_bwd(w->dB, G(ADP_P_F1W), G(ADP_P_F1B), w->dA, w->f1, PW(a, ADP_P_F1W),
                          PW(a, ADP_P_F1B), LRN, 64, ADP_LN_EPS, w->scratch);
    kn_conv3_pk_wgrad(G(ADP_P_F0W), G(ADP_P_F0B), w->dB, w->upT, LR, LR, ADP_HYP, 64, w->scratch);
    /* the two convT branches share dfused in phase order, and the last convT bias grads */
    kn_parallel_for(SAM_EMB, KN_POOL_ANY, gather_item, &j);
    bias_grad_ph(G(ADP_P_E3B), w->ph, MIDN);
    bias_grad_ph(G(ADP_P_C3B), w->ph, MIDN);
    float *phT = w->dfT; /* dfT is consumed: its buffer holds phᵀ for the weight gradients */
    kn_transpose(phT, w->ph, MIDN, 4 * ADP_HYP);
    branch_bwd(a, w, grad, ADP_P_E0W, w->emb, C, 64, w->e1, w->e1g, phT);
    branch_bwd(a, w, grad, ADP_P_C0W, w->early, a->early_c, C, w->c1, w->c1g, phT);
    /* hq_mlp */
    kn_linear_bwd(dh2, G(ADP_P_M2W), G(ADP_P_M2B), dhyper, w->h2, PW(a, ADP_P_M2W), 1, C, ADP_HYP);
    kn_relu_bwd(dh2, dh2, w->h2, C);
    kn_linear_bwd(dh1, G(ADP_P_M1W), G(ADP_P_M1B), dh2, w->h1, PW(a, ADP_P_M1W), 1, C, C);
    kn_relu_bwd(dh1, dh1, w->h1, C);
    kn_linear_bwd(d_hq_out, G(ADP_P_M0W), G(ADP_P_M0B), dh1, w->hq_out, PW(a, ADP_P_M0W), 1, C, C);
#undef G
}

/* ---- full sample ---------------------------------------------------------------------------- */

int adapter_forward(const adapter_t *a, samdec_t *dec, adp_work_t *w, const float *emb,
                    const float *early, const sam_point_t *pts, int n, const float *mask_in,
                    float *logits, float *sam_lowres, float iou[SAM_NMASK], int train,
                    err_t *err)
{
    if (!a || !dec || !w || !emb || !early || !logits)
        return err_set(err, ERR_INVALID, "adapter_forward: NULL argument");
    if (w->early_c != a->early_c)
        return err_set(err, ERR_INVALID, "adapter_forward: work for %d early channels, adapter %d",
                       w->early_c, a->early_c);
    float iou_l[SAM_NMASK];
    samdec_extra_t x = {.hq_token = PW(a, ADP_P_TOK), .hq_out = w->hq_out, .up = w->up,
                        .trace = train ? w->trace : NULL};
    w->have_train = 0;
    int rc = samdec_forward_ex(dec, emb, pts, n, mask_in, sam_lowres ? sam_lowres : w->lowres,
                               iou ? iou : iou_l, &x, err);
    if (rc) return rc;
    adapter_head_fwd(a, w, w->hq_out, w->up, emb, early, logits);
    w->have_train = train != 0;
    return 0;
}

int adapter_backward(const adapter_t *a, const samdec_t *dec, adp_work_t *w,
                     const float *dlogits, float *grad, err_t *err)
{
    if (!w->have_train)
        return err_set(err, ERR_STATE, "adapter_backward: no training forward recorded");
    float d_out[C], d_tok[C];
    adapter_head_bwd(a, w, dlogits, grad, d_out);
    /* token-side work (one row): on this thread only. Its many small OpenMP regions would
     * wake the OpenMP team, which then spins for milliseconds through the pool work of the
     * next sample's head (measured: a fifth of the CPU time with 2 threads). */
    int old = kn_set_thread_local_threads(1);
    int rc = samdec_hq_backward(dec, w->trace, d_out, d_tok, err);
    kn_set_thread_local_threads(old);
    if (rc) return rc;
    float *g = grad + a->params[ADP_P_TOK].off;
    for (int c = 0; c < C; c++) g[c] += d_tok[c];
    return 0;
}
