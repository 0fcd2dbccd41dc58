/* test_dec_unit.c — samdec_* on synthetic weights (no model file needed; runs under ASan).
 *
 * Checks: every missing or mis-shaped tensor is rejected naming the tensor; bad prompts are
 * rejected with the right code; the first prompt on an embedding (re-associated layer 0)
 * agrees with later ones (layer 0 as plain attention on cached projections); results are
 * deterministic; a new embedding invalidates the cache (bit-identical to a fresh decoder);
 * the mask-prompt path agrees with the no-mask paths when the mask embedding is made equal
 * to no_mask_embed; padding points ignore their coordinates; token buffers grow and shrink;
 * samdec_pick_single follows the export's rule.
 * Exit 1 on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sam_parts.h"
#include "wts.h"
#include "expect.h"

#define NLR (SAM_LOWRES * SAM_LOWRES)
#define NEMB (SAM_EMB_C * SAM_EMB * SAM_EMB)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

typedef struct spec {
    char name[160];
    int ndim;
    int64_t shape[4];
    int kind; /* 0 weight (scaled by 1/sqrt(fan-in)), 1 bias, 2 LN weight (≈1), 3 embedding */
} spec_t;

static spec_t specs[256];
static int nspecs;

static void add(const char *name, int kind, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    spec_t *s = &specs[nspecs++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = a, s->shape[1] = b, s->shape[2] = c, s->shape[3] = d;
    s->kind = kind;
}

static void attn(const char *p, int inner)
{
    char n[160];
    const char *pr[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.%s.weight", p, pr[i]);
        if (i < 3) add(n, 0, 2, inner, 256, 0, 0);
        else add(n, 0, 2, 256, inner, 0, 0);
        snprintf(n, sizeof n, "%s.%s.bias", p, pr[i]);
        add(n, 1, 1, i < 3 ? inner : 256, 0, 0, 0);
    }
}

static void ln(const char *p, int c)
{
    char n[160];
    snprintf(n, sizeof n, "%s.weight", p);
    add(n, 2, 1, c, 0, 0, 0);
    snprintf(n, sizeof n, "%s.bias", p);
    add(n, 1, 1, c, 0, 0, 0);
}

static void build_specs(void)
{
    char n[160];
    add("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 3, 2, 2, 128, 0, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "prompt_encoder.point_embeddings.%d.weight", i);
        add(n, 3, 2, 1, 256, 0, 0);
    }
    add("prompt_encoder.not_a_point_embed.weight", 3, 2, 1, 256, 0, 0);
    add("prompt_encoder.no_mask_embed.weight", 3, 2, 1, 256, 0, 0);
    add("prompt_encoder.mask_downscaling.0.weight", 0, 4, 4, 1, 2, 2);
    add("prompt_encoder.mask_downscaling.0.bias", 1, 1, 4, 0, 0, 0);
    ln("prompt_encoder.mask_downscaling.1", 4);
    add("prompt_encoder.mask_downscaling.3.weight", 0, 4, 16, 4, 2, 2);
    add("prompt_encoder.mask_downscaling.3.bias", 1, 1, 16, 0, 0, 0);
    ln("prompt_encoder.mask_downscaling.4", 16);
    add("prompt_encoder.mask_downscaling.6.weight", 0, 4, 256, 16, 1, 1);
    add("prompt_encoder.mask_downscaling.6.bias", 1, 1, 256, 0, 0, 0);
    add("mask_decoder.iou_token.weight", 3, 2, 1, 256, 0, 0);
    add("mask_decoder.mask_tokens.weight", 3, 2, 4, 256, 0, 0);
    for (int l = 0; l < 2; l++) {
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.self_attn", l);
        attn(n, 256);
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.cross_attn_token_to_image", l);
        attn(n, 128);
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.cross_attn_image_to_token", l);
        attn(n, 128);
        for (int k = 1; k <= 4; k++) {
            snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.norm%d", l, k);
            ln(n, 256);
        }
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.mlp.lin1.weight", l);
        add(n, 0, 2, 2048, 256, 0, 0);
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.mlp.lin1.bias", l);
        add(n, 1, 1, 2048, 0, 0, 0);
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.mlp.lin2.weight", l);
        add(n, 0, 2, 256, 2048, 0, 0);
        snprintf(n, sizeof n, "mask_decoder.transformer.layers.%d.mlp.lin2.bias", l);
        add(n, 1, 1, 256, 0, 0, 0);
    }
    attn("mask_decoder.transformer.final_attn_token_to_image", 128);
    ln("mask_decoder.transformer.norm_final_attn", 256);
    add("mask_decoder.output_upscaling.0.weight", 0, 4, 256, 64, 2, 2);
    add("mask_decoder.output_upscaling.0.bias", 1, 1, 64, 0, 0, 0);
    ln("mask_decoder.output_upscaling.1", 64);
    add("mask_decoder.output_upscaling.3.weight", 0, 4, 64, 32, 2, 2);
    add("mask_decoder.output_upscaling.3.bias", 1, 1, 32, 0, 0, 0);
    for (int m = 0; m < 5; m++)
        for (int i = 0; i < 3; i++) {
            int out = i < 2 ? 256 : (m < 4 ? 32 : 4);
            const char *p = m < 4 ? "mask_decoder.output_hypernetworks_mlps" : NULL;
            if (p) snprintf(n, sizeof n, "%s.%d.layers.%d.weight", p, m, i);
            else snprintf(n, sizeof n, "mask_decoder.iou_prediction_head.layers.%d.weight", i);
            add(n, 0, 2, out, 256, 0, 0);
            size_t l = strlen(n);
            snprintf(n + l - 6, sizeof n - (l - 6), "bias");
            add(n, 1, 1, out, 0, 0, 0);
        }
}

static int64_t numel(const spec_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

/* Weights file in memory. skip: name left out; bad_shape: name written with a wrong shape;
 * zero_mask_conv: mask_downscaling.6 = (0, no_mask_embed) so a mask prompt embeds like none. */
static wts_t *make_wts(const char *skip, const char *bad_shape, int zero_mask_conv)
{
    rng = 0x9E3779B97F4A7C15ull;
    wts_writer_t *wr = wts_writer_new();
    float *nomask = NULL;
    for (int i = 0; i < nspecs; i++) {
        const spec_t *s = &specs[i];
        int64_t n = numel(s);
        float *v = malloc(sizeof(float) * (size_t)n);
        float fan = s->ndim >= 2 ? (float)(n / s->shape[0]) : 1.0f;
        if (s->ndim == 4 && strstr(s->name, "output_upscaling")) fan = (float)s->shape[0];
        for (int64_t k = 0; k < n; k++) {
            float u = urand();
            v[k] = s->kind == 0 ? u * 1.7f / sqrtf(fan)
                 : s->kind == 1 ? 0.1f * u
                 : s->kind == 2 ? 1.0f + 0.2f * u
                                : u;
        }
        if (!strcmp(s->name, "prompt_encoder.no_mask_embed.weight")) {
            nomask = malloc(sizeof(float) * 256);
            memcpy(nomask, v, sizeof(float) * 256);
        }
        if (zero_mask_conv && !strcmp(s->name, "prompt_encoder.mask_downscaling.6.weight"))
            memset(v, 0, sizeof(float) * (size_t)n);
        if (zero_mask_conv && !strcmp(s->name, "prompt_encoder.mask_downscaling.6.bias"))
            memcpy(v, nomask, sizeof(float) * 256);
        int64_t shape[4] = {s->shape[0], s->shape[1], s->shape[2], s->shape[3]};
        if (bad_shape && !strcmp(s->name, bad_shape)) { /* one more row, zero-filled */
            shape[0] += 1;
            free(v);
            v = calloc((size_t)(n / s->shape[0] * shape[0]), sizeof(float));
        }
        if (!(skip && !strcmp(s->name, skip)))
            wts_writer_add(wr, s->name, WTS_F32, s->ndim, shape, v, NULL);
        free(v);
    }
    free(nomask);
    void *buf = NULL;
    size_t len = 0;
    err_t err = {0};
    wts_t *w = NULL;
    if (wts_writer_to_memory(wr, &buf, &len, &err) == 0) w = wts_from_memory(buf, len, &err);
    if (!w) fprintf(stderr, "FAIL: cannot build synthetic weights: %s\n", err.msg), exit(1);
    free(buf);
    wts_writer_destroy(&wr);
    return w;
}

static float maxdiff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        if (!(e <= m)) m = e;
    }
    return m;
}

static void test_weights_rejected(void)
{
    const char *names[] = {"mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
                           "prompt_encoder.mask_downscaling.4.weight"};
    for (int i = 0; i < 2; i++) {
        for (int mode = 0; mode < 2; mode++) {
            wts_t *w = make_wts(mode == 0 ? names[i] : NULL, mode == 1 ? names[i] : NULL, 0);
            err_t err = {0};
            samdec_t *d = samdec_new(w, &err);
            EXPECTF(d == NULL, "samdec_new accepted weights with %s %s", names[i],
                    mode ? "mis-shaped" : "missing");
            EXPECTF(strstr(err.msg, names[i]) != NULL, "error does not name %s: '%s'", names[i],
                    err.msg);
            samdec_destroy(&d);
            wts_destroy(&w);
        }
    }
    err_t err = {0};
    EXPECTF(samdec_new(NULL, &err) == NULL && err.code == ERR_INVALID, "NULL weights accepted");
}

static void test_pick_single(void)
{
    float a[4] = {0.9f, 0.5f, 0.8f, 0.7f};
    EXPECTF(samdec_pick_single(a, 2) == 2, "2 points: mask 0 must be penalised");
    EXPECTF(samdec_pick_single(a, 3) == 0, "3 points: mask 0 must be preferred");
    float b[4] = {0.1f, 0.6f, 0.6f, 0.2f};
    EXPECTF(samdec_pick_single(b, 1) == 1, "ties resolve to the first index");
    float c[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    EXPECTF(samdec_pick_single(c, 4) == 0, "4 points: mask 0");
}

int main(void)
{
    build_specs();
    test_pick_single();
    test_weights_rejected();

    wts_t *w = make_wts(NULL, NULL, 1);
    err_t err = {0};
    samdec_t *d = samdec_new(w, &err);
    EXPECTF(d != NULL, "samdec_new: %s", err.msg);
    if (!d) return 1;

    float *embA = malloc(sizeof(float) * NEMB), *embB = malloc(sizeof(float) * NEMB);
    for (int i = 0; i < NEMB; i++) embA[i] = urand(), embB[i] = 0.5f * urand();
    float *mask = calloc(NLR, sizeof(float));
    for (int i = 0; i < NLR; i++) mask[i] = 8.0f * urand();
    size_t nout = (size_t)SAM_NMASK * NLR;
    float *o1 = malloc(sizeof(float) * nout), *o2 = malloc(sizeof(float) * nout);
    float *o3 = malloc(sizeof(float) * nout);
    float i1[4], i2[4], i3[4];
    sam_point_t pts[2] = {{300.0f, 410.5f, 1.0f}, {0.0f, 0.0f, -1.0f}};

    /* bad prompts */
    sam_point_t bad[2] = {{10, 10, 4.0f}, {0, 0, -1}};
    EXPECTF(samdec_forward(d, embA, bad, 2, NULL, o1, i1, &err) == ERR_INVALID, "label 4");
    bad[0].label = 0.5f;
    EXPECTF(samdec_forward(d, embA, bad, 2, NULL, o1, i1, &err) == ERR_INVALID, "label 0.5");
    bad[0].label = 1.0f, bad[0].x = NAN;
    EXPECTF(samdec_forward(d, embA, bad, 2, NULL, o1, i1, &err) == ERR_INVALID, "NaN x");
    EXPECTF(samdec_forward(d, embA, pts, -1, NULL, o1, i1, &err) == ERR_RANGE, "n = -1");
    EXPECTF(samdec_forward(d, embA, pts, 1 << 20, NULL, o1, i1, &err) == ERR_RANGE, "n huge");
    EXPECTF(samdec_forward(d, NULL, pts, 2, NULL, o1, i1, &err) == ERR_INVALID, "NULL emb");
    EXPECTF(samdec_forward(d, embA, NULL, 2, NULL, o1, i1, &err) == ERR_INVALID, "NULL pts");

    /* first prompt on an embedding runs layer 0 re-associated, the second fills the
     * layer-0 cache and runs plain attention on it: same math, rounding-level apart */
    float *o4 = malloc(sizeof(float) * nout), i4[4];
    EXPECTF(samdec_forward(d, embA, pts, 2, NULL, o1, i1, &err) == 0, "forward: %s", err.msg);
    EXPECTF(samdec_forward(d, embA, pts, 2, NULL, o2, i2, &err) == 0, "forward: %s", err.msg);
    float scale = 0;
    for (size_t k = 0; k < nout; k++) scale = fmaxf(scale, fabsf(o1[k]));
    float e = maxdiff(o1, o2, nout), ie = maxdiff(i1, i2, 4);
    EXPECTF(e <= 1e-4f * fmaxf(1.0f, scale) && ie <= 1e-5f,
            "first (re-associated) vs cached call: max diff %g (logits up to %g), iou %g",
            (double)e, (double)scale, (double)ie);
    printf("re-associated vs cached layer 0: max diff %.3g (logits up to %.3g), iou diff %.3g\n",
           (double)e, (double)scale, (double)ie);
    int finite = 1;
    for (size_t k = 0; k < nout; k++) finite &= isfinite(o1[k]) != 0 && isfinite(o2[k]) != 0;
    EXPECTF(finite, "non-finite logits");
    EXPECTF(maxdiff(o2, o2 + NLR, NLR) > 0, "mask 0 and mask 1 are identical");

    /* determinism on the cached path */
    samdec_forward(d, embA, pts, 2, NULL, o3, i3, &err);
    EXPECTF(memcmp(o2, o3, sizeof(float) * nout) == 0 && memcmp(i2, i3, sizeof i2) == 0,
            "two cached calls differ");

    /* a padding point's coordinates do not matter */
    sam_point_t pts2[2] = {pts[0], {777.0f, 12.0f, -1.0f}};
    samdec_forward(d, embA, pts2, 2, NULL, o3, i3, &err);
    EXPECTF(memcmp(o2, o3, sizeof(float) * nout) == 0, "padding point coordinates changed output");

    /* a new embedding invalidates the cache: B on this decoder equals B on a fresh one,
     * and A afterwards is A's first-call answer again */
    samdec_forward(d, embB, pts, 2, NULL, o3, i3, &err);
    samdec_t *d2 = samdec_new(w, &err);
    samdec_forward(d2, embB, pts, 2, NULL, o4, i4, &err);
    EXPECTF(memcmp(o3, o4, sizeof(float) * nout) == 0, "decoder after A differs from fresh on B");
    EXPECTF(maxdiff(o1, o3, nout) > 1e-3f, "embedding B gave embedding A's answer");
    samdec_forward(d2, embB, pts, 2, NULL, o4, i4, &err); /* cached on B */
    EXPECTF(maxdiff(o3, o4, nout) <= 1e-4f * fmaxf(1.0f, scale), "B: cached vs first call");
    samdec_forward(d, embA, pts, 2, NULL, o3, i3, &err);
    EXPECTF(memcmp(o1, o3, sizeof(float) * nout) == 0, "A after B differs from A's first call");

    /* mask path (re-associated layer 0 on emb + dense(mask)) vs the cached path: the
     * synthetic mask_downscaling.6 makes any mask embed exactly like no mask */
    samdec_forward(d, embA, pts, 2, mask, o3, i3, &err);
    e = maxdiff(o2, o3, nout), ie = maxdiff(i2, i3, 4);
    EXPECTF(e <= 1e-4f * fmaxf(1.0f, scale) && ie <= 1e-5f,
            "mask path vs cached path: max diff %g (logits up to %g), iou diff %g", (double)e,
            (double)scale, (double)ie);
    EXPECTF(maxdiff(o1, o3, nout) <= 1e-6f * fmaxf(1.0f, scale),
            "mask path vs first no-mask call (same code path): %g", (double)maxdiff(o1, o3, nout));

    /* token buffers grow and shrink: 40 points, then 0, then 2 again (cached path) */
    sam_point_t many[40];
    for (int k = 0; k < 40; k++)
        many[k] = (sam_point_t){(float)(k * 25), (float)(1000 - k * 20), (float)(k % 4)};
    EXPECTF(samdec_forward(d, embA, many, 40, NULL, o3, i3, &err) == 0, "40 points: %s", err.msg);
    EXPECTF(samdec_forward(d, embA, NULL, 0, NULL, o3, i3, &err) == 0, "0 points: %s", err.msg);
    samdec_forward(d, embA, pts, 2, NULL, o3, i3, &err);
    EXPECTF(memcmp(o2, o3, sizeof(float) * nout) == 0, "after growing, 2 points differ");
    free(o4);

    samdec_destroy(&d2);
    samdec_destroy(&d);
    EXPECTF(d == NULL, "samdec_destroy does not NULL the handle");
    samdec_destroy(&d); /* NULL-safe */
    wts_destroy(&w);
    free(embA), free(embB), free(mask), free(o1), free(o2), free(o3);
    if (expect_failures)
        fprintf(stderr, "%d failure(s)\n", expect_failures);
    else printf("all decoder unit tests passed\n");
    return expect_failures ? 1 : 0;
}
