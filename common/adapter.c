/* adapter.c — MoDA adapter parameters, zero-shot init, head forward/backward (adapter.h).
 *
 * The head works on [C, H, W] maps: conv3×3 through kn_conv2d_fwd/bwd, LayerNorm2d through
 * kn_layernorm2d_fwd/bwd; GELU forward by kn_gelu_fast_fwd (≤ 2e-7·max(1,|x|) from the erf
 * form), backward by its exact derivative (kn_gelu_bwd, split over threads). The forward transposed convs run as
 * one GEMM each (y'[Cout·4, HW] = wᵀ·x, then scattered with the bias) — the same sum as
 * kn_convt2x2_fwd, whose direct loop is too slow for 256-channel maps; the backward uses
 * kn_convt2x2_bwd. Activations of one sample live in an adp_work_t.
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

enum {
    P_TOK = 0,
    P_M0W, P_M0B, P_M1W, P_M1B, P_M2W, P_M2B,
    P_F0W, P_F0B, P_F1W, P_F1B, P_F3W, P_F3B,
    P_E0W, P_E0B, P_E1W, P_E1B, P_E3W, P_E3B,
    P_C0W, P_C0B, P_C1W, P_C1B, P_C3W, P_C3B,
};

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
    set_param(a, P_TOK, "hq_token", 2, 1, C, 0, 0, &off);
    set_param(a, P_M0W, "hq_mlp.layers.0.weight", 2, C, C, 0, 0, &off);
    set_param(a, P_M0B, "hq_mlp.layers.0.bias", 1, C, 0, 0, 0, &off);
    set_param(a, P_M1W, "hq_mlp.layers.1.weight", 2, C, C, 0, 0, &off);
    set_param(a, P_M1B, "hq_mlp.layers.1.bias", 1, C, 0, 0, 0, &off);
    set_param(a, P_M2W, "hq_mlp.layers.2.weight", 2, ADP_HYP, C, 0, 0, &off);
    set_param(a, P_M2B, "hq_mlp.layers.2.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, P_F0W, "mask_feature.0.weight", 4, 64, ADP_HYP, 3, 3, &off);
    set_param(a, P_F0B, "mask_feature.0.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, P_F1W, "mask_feature.1.weight", 1, 64, 0, 0, 0, &off);
    set_param(a, P_F1B, "mask_feature.1.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, P_F3W, "mask_feature.3.weight", 4, ADP_HYP, 64, 3, 3, &off);
    set_param(a, P_F3B, "mask_feature.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, P_E0W, "embedding_encoder.0.weight", 4, C, 64, 2, 2, &off);
    set_param(a, P_E0B, "embedding_encoder.0.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, P_E1W, "embedding_encoder.1.weight", 1, 64, 0, 0, 0, &off);
    set_param(a, P_E1B, "embedding_encoder.1.bias", 1, 64, 0, 0, 0, &off);
    set_param(a, P_E3W, "embedding_encoder.3.weight", 4, 64, ADP_HYP, 2, 2, &off);
    set_param(a, P_E3B, "embedding_encoder.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
    set_param(a, P_C0W, "compress.0.weight", 4, E, C, 2, 2, &off);
    set_param(a, P_C0B, "compress.0.bias", 1, C, 0, 0, 0, &off);
    set_param(a, P_C1W, "compress.1.weight", 1, C, 0, 0, 0, &off);
    set_param(a, P_C1B, "compress.1.bias", 1, C, 0, 0, 0, &off);
    set_param(a, P_C3W, "compress.3.weight", 4, C, ADP_HYP, 2, 2, &off);
    set_param(a, P_C3B, "compress.3.bias", 1, ADP_HYP, 0, 0, 0, &off);
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
    memcpy(PW(a, P_TOK), tok, sizeof(float) * C); /* mask token 0 */
    for (int l = 0; l < 3; l++) {
        char n[96];
        int o = l == 2 ? ADP_HYP : C;
        snprintf(n, sizeof n, "mask_decoder.output_hypernetworks_mlps.0.layers.%d.weight", l);
        const float *W = wts_f32(w, n, err, 2, o, C);
        snprintf(n, sizeof n, "mask_decoder.output_hypernetworks_mlps.0.layers.%d.bias", l);
        const float *B = wts_f32(w, n, err, 1, o);
        if (!W || !B) return err_wrap(err, "adapter init");
        memcpy(PW(a, P_M0W + 2 * l), W, sizeof(float) * (size_t)o * C);
        memcpy(PW(a, P_M0B + 2 * l), B, sizeof(float) * (size_t)o);
    }
    uint64_t rng = seed ^ 0x6d6f64612d616470ULL; /* "moda-adp" */
    /* first layers: PyTorch default init, bound 1/sqrt(fan_in) (convT: fan_in = Cout·4) */
    float bf = 1.0f / sqrtf((float)(ADP_HYP * 9));
    uniform(PW(a, P_F0W), a->params[P_F0W].n, bf, &rng);
    uniform(PW(a, P_F0B), 64, bf, &rng);
    float be = 1.0f / sqrtf(64.0f * 4);
    uniform(PW(a, P_E0W), a->params[P_E0W].n, be, &rng);
    uniform(PW(a, P_E0B), 64, be, &rng);
    float bc = 1.0f / sqrtf((float)C * 4);
    uniform(PW(a, P_C0W), a->params[P_C0W].n, bc, &rng);
    uniform(PW(a, P_C0B), C, bc, &rng);
    for (int i = 0; i < 64; i++) PW(a, P_F1W)[i] = PW(a, P_E1W)[i] = 1.0f;
    for (int i = 0; i < C; i++) PW(a, P_C1W)[i] = 1.0f;
    /* last layers (P_F3*, P_E3*, P_C3*) stay zero: the branches start silent */
    return 0;
}

/* ---- work -------------------------------------------------------------------------------- */

struct adp_work {
    int early_c;
    samdec_trace_t *trace;
    int have_train; /* a training forward is recorded */
    const float *up_in, *emb, *early; /* borrowed inputs of the last head forward */
    float *up;        /* [32, LRN] owned, filled by the decoder */
    float *lowres;    /* [4, LRN] SAM outputs when the caller wants none */
    float hq_out[C], h1[C], h2[C], hyper[ADP_HYP];
    float *f1, *f1n, *f1g;  /* [64, LRN] */
    float *e1, *e1n, *e1g;  /* [64, MIDN] */
    float *c1, *c1n, *c1g;  /* [256, MIDN] */
    float *fused, *tmp;     /* [32, LRN] */
    float *dA, *dB;         /* [64, LRN] (= [256, MIDN]) */
    float *scratch;         /* conv im2col / convT regroup */
    float *lnscratch;       /* 2 * LRN */
};

static size_t scratch_floats(int early_c)
{
    size_t s = kn_conv2d_scratch(64, LR, LR, 3, 1, 1, 1);
    size_t t = kn_conv2d_scratch(ADP_HYP, LR, LR, 3, 1, 1, 1);
    if (t > s) s = t;
    t = kn_convt2x2_bwd_scratch(SAM_EMB, SAM_EMB, C);
    if (t > s) s = t;
    t = kn_convt2x2_bwd_scratch(MID, MID, ADP_HYP);
    if (t > s) s = t;
    (void)early_c;
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
    w->f1 = falloc((size_t)64 * LRN);
    w->f1n = falloc((size_t)64 * LRN);
    w->f1g = falloc((size_t)64 * LRN);
    w->e1 = falloc((size_t)64 * MIDN);
    w->e1n = falloc((size_t)64 * MIDN);
    w->e1g = falloc((size_t)64 * MIDN);
    w->c1 = falloc((size_t)C * MIDN);
    w->c1n = falloc((size_t)C * MIDN);
    w->c1g = falloc((size_t)C * MIDN);
    w->fused = falloc((size_t)ADP_HYP * LRN);
    w->tmp = falloc((size_t)ADP_HYP * LRN);
    w->dA = falloc((size_t)64 * LRN);
    w->dB = falloc((size_t)64 * LRN);
    w->scratch = falloc(scratch_floats(early_c));
    w->lnscratch = falloc((size_t)2 * LRN);
    if (!w->trace || !w->up || !w->lowres || !w->f1 || !w->f1n || !w->f1g || !w->e1 ||
        !w->e1n || !w->e1g || !w->c1 || !w->c1n || !w->c1g || !w->fused || !w->tmp || !w->dA ||
        !w->dB || !w->scratch || !w->lnscratch) {
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
    float *b[] = {w->up, w->lowres, w->f1, w->f1n, w->f1g, w->e1, w->e1n, w->e1g, w->c1,
                  w->c1n, w->c1g, w->fused, w->tmp, w->dA, w->dB, w->scratch, w->lnscratch};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) free(b[i]);
    free(w);
    *wp = NULL;
}

/* ---- head ---------------------------------------------------------------------------------- */

/* Transposed conv 2×2 s2 as one GEMM: s[(co*4 + dy*2 + dx), p] = Σci w[ci, co, dy, dx] x[ci, p],
 * then y[co, 2i+dy, 2j+dx] = s[..., i*W+j] + b[co]. scratch: 4·Cout·H·W floats. */
static void convt(float *y, const float *x, const float *wt, const float *b, int Cin, int H,
                  int W, int Cout, float *scratch)
{
    int HW = H * W, K4 = 4 * Cout;
    kn_gemm(1, 0, K4, HW, Cin, 1.0f, wt, K4, x, HW, 0.0f, scratch, HW);
    int Wo = 2 * W;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Cout; co++) {
        float *yc = y + (size_t)co * 4 * HW;
        const float *s = scratch + (size_t)co * 4 * HW;
        float bb = b ? b[co] : 0.0f;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                size_t p = (size_t)i * W + j;
                float *o = yc + (size_t)(2 * i) * Wo + 2 * j;
                o[0] = s[p] + bb;
                o[1] = s[HW + p] + bb;
                o[Wo] = s[2 * (size_t)HW + p] + bb;
                o[Wo + 1] = s[3 * (size_t)HW + p] + bb;
            }
    }
}

/* kn_gelu_bwd (single-threaded) over thread-sized slices. */
static void gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    const size_t B = 16384;
    long nb = (long)((n + B - 1) / B);
#pragma omp parallel for schedule(static)
    for (long b = 0; b < nb; b++) {
        size_t o = (size_t)b * B, m = n - o < B ? n - o : B;
        kn_gelu_bwd(dx + o, dy + o, x + o, m);
    }
}

void adapter_head_fwd(const adapter_t *a, adp_work_t *w, const float *hq_out, const float *up,
                      const float *emb, const float *early, float *logits)
{
    if (hq_out != w->hq_out) memcpy(w->hq_out, hq_out, sizeof w->hq_out);
    w->up_in = up;
    w->emb = emb;
    w->early = early;
    /* hq_mlp -> hyper */
    kn_linear_fwd(w->h1, w->hq_out, PW(a, P_M0W), PW(a, P_M0B), 1, C, C);
    kn_relu_fwd(w->h1, w->h1, C);
    kn_linear_fwd(w->h2, w->h1, PW(a, P_M1W), PW(a, P_M1B), 1, C, C);
    kn_relu_fwd(w->h2, w->h2, C);
    kn_linear_fwd(w->hyper, w->h2, PW(a, P_M2W), PW(a, P_M2B), 1, C, ADP_HYP);
    /* mask_feature(up) -> fused */
    kn_conv2d_fwd(w->f1, up, PW(a, P_F0W), PW(a, P_F0B), ADP_HYP, LR, LR, 64, 3, 1, 1, 1,
                  w->scratch);
    kn_layernorm2d_fwd(w->f1n, w->f1, PW(a, P_F1W), PW(a, P_F1B), 64, LRN, ADP_LN_EPS);
    kn_gelu_fast_fwd(w->f1g, w->f1n, (size_t)64 * LRN);
    kn_conv2d_fwd(w->fused, w->f1g, PW(a, P_F3W), PW(a, P_F3B), 64, LR, LR, ADP_HYP, 3, 1, 1,
                  1, w->scratch);
    /* embedding_encoder(emb) */
    convt(w->e1, emb, PW(a, P_E0W), PW(a, P_E0B), C, SAM_EMB, SAM_EMB, 64, w->scratch);
    kn_layernorm2d_fwd(w->e1n, w->e1, PW(a, P_E1W), PW(a, P_E1B), 64, MIDN, ADP_LN_EPS);
    kn_gelu_fast_fwd(w->e1g, w->e1n, (size_t)64 * MIDN);
    convt(w->tmp, w->e1g, PW(a, P_E3W), PW(a, P_E3B), 64, MID, MID, ADP_HYP, w->scratch);
    kn_add(w->fused, w->fused, w->tmp, (size_t)ADP_HYP * LRN);
    /* compress(early) */
    convt(w->c1, early, PW(a, P_C0W), PW(a, P_C0B), a->early_c, SAM_EMB, SAM_EMB, C,
          w->scratch);
    kn_layernorm2d_fwd(w->c1n, w->c1, PW(a, P_C1W), PW(a, P_C1B), C, MIDN, ADP_LN_EPS);
    kn_gelu_fast_fwd(w->c1g, w->c1n, (size_t)C * MIDN);
    convt(w->tmp, w->c1g, PW(a, P_C3W), PW(a, P_C3B), C, MID, MID, ADP_HYP, w->scratch);
    kn_add(w->fused, w->fused, w->tmp, (size_t)ADP_HYP * LRN);
    /* + up, then logits = hyper · fused */
    kn_add(w->fused, w->fused, up, (size_t)ADP_HYP * LRN);
    /* summed over channels in order 0..31 from 0, as kn_gelu_linear_fwd sums SAM's masks */
#pragma omp parallel for schedule(static)
    for (int p0 = 0; p0 < LRN; p0 += 4096) {
        float *o = logits + p0;
        for (int p = 0; p < 4096; p++) o[p] = 0.0f;
        for (int k = 0; k < ADP_HYP; k++) {
            const float *f = w->fused + (size_t)k * LRN + p0;
            float hk = w->hyper[k];
            for (int p = 0; p < 4096; p++) o[p] += hk * f[p];
        }
    }
}

void adapter_head_bwd(const adapter_t *a, adp_work_t *w, const float *dlogits, float *grad,
                      float *d_hq_out)
{
#define G(i) (grad + a->params[i].off)
    float dhyper[ADP_HYP], dh2[C], dh1[C];
    /* logits = hyper · fused */
    kn_gemm(0, 1, 1, ADP_HYP, LRN, 1.0f, dlogits, LRN, w->fused, LRN, 0.0f, dhyper, ADP_HYP);
    float *dfused = w->tmp; /* [32, LRN] = hyper ⊗ dlogits */
    kn_gemm(0, 0, ADP_HYP, LRN, 1, 1.0f, w->hyper, 1, dlogits, LRN, 0.0f, dfused, LRN);
    /* mask_feature */
    kn_conv2d_bwd(w->dA, G(P_F3W), G(P_F3B), dfused, w->f1g, PW(a, P_F3W), 64, LR, LR, ADP_HYP,
                  3, 1, 1, 1, w->scratch);
    gelu_bwd(w->dB, w->dA, w->f1n, (size_t)64 * LRN);
    kn_layernorm2d_bwd(w->dA, G(P_F1W), G(P_F1B), w->dB, w->f1, PW(a, P_F1W), 64, LRN,
                       ADP_LN_EPS, w->lnscratch);
    kn_conv2d_bwd(NULL, G(P_F0W), G(P_F0B), w->dA, w->up_in, PW(a, P_F0W), ADP_HYP, LR, LR, 64,
                  3, 1, 1, 1, w->scratch);
    /* embedding_encoder */
    kn_convt2x2_bwd(w->dA, G(P_E3W), G(P_E3B), dfused, w->e1g, PW(a, P_E3W), 64, MID, MID,
                    ADP_HYP, w->scratch);
    gelu_bwd(w->dB, w->dA, w->e1n, (size_t)64 * MIDN);
    kn_layernorm2d_bwd(w->dA, G(P_E1W), G(P_E1B), w->dB, w->e1, PW(a, P_E1W), 64, MIDN,
                       ADP_LN_EPS, w->lnscratch);
    kn_convt2x2_bwd(NULL, G(P_E0W), G(P_E0B), w->dA, w->emb, PW(a, P_E0W), C, SAM_EMB, SAM_EMB,
                    64, w->scratch);
    /* compress */
    kn_convt2x2_bwd(w->dA, G(P_C3W), G(P_C3B), dfused, w->c1g, PW(a, P_C3W), C, MID, MID,
                    ADP_HYP, w->scratch);
    gelu_bwd(w->dB, w->dA, w->c1n, (size_t)C * MIDN);
    kn_layernorm2d_bwd(w->dA, G(P_C1W), G(P_C1B), w->dB, w->c1, PW(a, P_C1W), C, MIDN,
                       ADP_LN_EPS, w->lnscratch);
    kn_convt2x2_bwd(NULL, G(P_C0W), G(P_C0B), w->dA, w->early, PW(a, P_C0W), a->early_c,
                    SAM_EMB, SAM_EMB, C, w->scratch);
    /* hq_mlp */
    kn_linear_bwd(dh2, G(P_M2W), G(P_M2B), dhyper, w->h2, PW(a, P_M2W), 1, C, ADP_HYP);
    kn_relu_bwd(dh2, dh2, w->h2, C);
    kn_linear_bwd(dh1, G(P_M1W), G(P_M1B), dh2, w->h1, PW(a, P_M1W), 1, C, C);
    kn_relu_bwd(dh1, dh1, w->h1, C);
    kn_linear_bwd(d_hq_out, G(P_M0W), G(P_M0B), dh1, w->hq_out, PW(a, P_M0W), 1, C, C);
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
    samdec_extra_t x = {.hq_token = PW(a, P_TOK), .hq_out = w->hq_out, .up = w->up,
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
    int rc = samdec_hq_backward(dec, w->trace, d_out, d_tok, err);
    if (rc) return rc;
    float *g = grad + a->params[P_TOK].off;
    for (int c = 0; c < C; c++) g[c] += d_tok[c];
    return 0;
}
