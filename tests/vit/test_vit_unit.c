/* test_vit_unit.c — ViT encoder on synthetic weights (no reference runtime needed, runs
 * under ASan): configuration derived from the weights (C 64, depth 2, windowed + global),
 * forward on 1 and 2 threads, the final
 * LayerNorm2d with unit weight / zero bias leaves every pixel with channel mean 0 and
 * variance 1, and bad weights are refused with a message naming the tensor: missing
 * rel_pos_w, an even-length or too-long rel-pos table (interpolation is not supported),
 * a wrong qkv shape, no patch embedding. The fused attention op alone is bit-identical on
 * 1 and 2 threads; the whole forward agrees to 1e-5 (OpenBLAS GEMMs in the convs may
 * split work differently by thread count).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"
#include "sam_vit.h"
#include "expect.h"

/* embed dim and head dim of the synthetic model (64/64 = one head; 160/80 = ViT-H-like) */
static int C = 64, HD = 64;
static unsigned rng = 12345;
static float urand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xFFFFFF) / 16777216.0f - 0.5f;
}

/* Adds a tensor of random values (scale s) or of the constant c when s == 0. */
static void add(wts_writer_t *wr, const char *name, float s, float c, int nd, int64_t d0, int64_t d1,
                int64_t d2, int64_t d3)
{
    int64_t sh[4] = {d0, d1, d2, d3};
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    float *b = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) b[i] = s != 0 ? s * urand() : c;
    err_t e = {0};
    if (wts_writer_add(wr, name, WTS_F32, nd, sh, b, &e) < 0) {
        fprintf(stderr, "FAIL add %s: %s\n", name, e.msg);
        expect_failures++;
    }
    free(b);
}

/* skip: a tensor name to leave out; relh_rows: rows of block 0's rel_pos_h (0 = right). */
static wts_t *make(const char *skip, int relh_rows, int qkv_rows)
{
    wts_writer_t *wr = wts_writer_new();
    char n[128];
#define ADD(nm, ...) do { if (!skip || strcmp(skip, nm)) add(wr, nm, __VA_ARGS__); } while (0)
    ADD("image_encoder.patch_embed.proj.weight", 0.05f, 0, 4, C, 3, 16, 16);
    ADD("image_encoder.patch_embed.proj.bias", 0.1f, 0, 1, C, 0, 0, 0);
    ADD("image_encoder.pos_embed", 0.2f, 0, 4, 1, 64, 64, C);
    for (int i = 0; i < 2; i++) {
        int S = i == 0 ? 14 : 64, T = 2 * S - 1;
        if (i == 0 && relh_rows) T = relh_rows;
#define BLK(suffix, ...) do { snprintf(n, sizeof n, "image_encoder.blocks.%d.%s", i, suffix); ADD(n, __VA_ARGS__); } while (0)
        BLK("norm1.weight", 0, 1.0f, 1, C, 0, 0, 0);
        BLK("norm1.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("attn.qkv.weight", 0.2f, 0, 2, i == 0 && qkv_rows ? qkv_rows : 3 * C, C, 0, 0);
        BLK("attn.qkv.bias", 0.1f, 0, 1, 3 * C, 0, 0, 0);
        BLK("attn.proj.weight", 0.2f, 0, 2, C, C, 0, 0);
        BLK("attn.proj.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("attn.rel_pos_h", 0.5f, 0, 2, T, HD, 0, 0);
        BLK("attn.rel_pos_w", 0.5f, 0, 2, 2 * S - 1, HD, 0, 0);
        BLK("norm2.weight", 0, 1.0f, 1, C, 0, 0, 0);
        BLK("norm2.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("mlp.lin1.weight", 0.2f, 0, 2, 4 * C, C, 0, 0);
        BLK("mlp.lin1.bias", 0.1f, 0, 1, 4 * C, 0, 0, 0);
        BLK("mlp.lin2.weight", 0.1f, 0, 2, C, 4 * C, 0, 0);
        BLK("mlp.lin2.bias", 0.1f, 0, 1, C, 0, 0, 0);
    }
    ADD("image_encoder.neck.0.weight", 0.2f, 0, 4, 256, C, 1, 1);
    ADD("image_encoder.neck.1.weight", 0, 1.0f, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.1.bias", 0, 0.0f, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.2.weight", 0.05f, 0, 4, 256, 256, 3, 3);
    ADD("image_encoder.neck.3.weight", 0, 1.0f, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.3.bias", 0, 0.0f, 1, 256, 0, 0, 0);
    void *mem = NULL;
    size_t len = 0;
    err_t e = {0};
    wts_t *w = NULL;
    if (wts_writer_to_memory(wr, &mem, &len, &e) == 0) w = wts_from_memory(mem, len, &e);
    if (!w) {
        fprintf(stderr, "FAIL make weights: %s\n", e.msg);
        expect_failures++;
    }
    free(mem);
    wts_writer_destroy(&wr);
    return w;
}

static void expect_refused(const char *what, wts_t *w, const char *needle)
{
    err_t e = {0};
    vit_t *v = w ? vit_new(w, &e) : NULL;
    int ok = w && !v && e.code < 0 && strstr(e.msg, needle);
    printf("%-28s -> %s: %s\n", what, ok ? "refused" : "FAIL", e.msg);
    if (!ok) expect_failures++;
    vit_destroy(&v);
    wts_destroy(&w);
}

int main(void)
{
    wts_t *w = make(NULL, 0, 0);
    err_t e = {0};
    vit_t *v = w ? vit_new(w, &e) : NULL;
    if (!v) { fprintf(stderr, "FAIL vit_new: %s\n", e.msg); return 1; }
    vit_info_t inf;
    vit_get_info(v, &inf);
    EXPECT(inf.embed_dim == C && inf.depth == 2 && inf.heads == 1 && inf.head_dim == 64 && inf.mlp_dim == 4 * C &&
           inf.first_global == 1 && inf.global_mask == 2);
    size_t nimg = (size_t)3 * SAM_IMG * SAM_IMG, nemb = (size_t)SAM_EMB_C * VIT_TOKENS;
    float *img = malloc(nimg * sizeof(float));
    for (size_t i = 0; i < nimg; i++) img[i] = 2 * urand();
    float *emb1 = malloc(nemb * sizeof(float)), *emb2 = malloc(nemb * sizeof(float));
    float *early = malloc((size_t)VIT_TOKENS * C * sizeof(float));
    int th = kn_get_threads();
    kn_set_threads(1);
    EXPECT(vit_forward(v, img, emb1, NULL, &e) == 0);
    kn_set_threads(2);
    EXPECT(vit_forward(v, img, emb2, early, &e) == 0);
    kn_set_threads(th);
    double dmax = 0;
    for (size_t i = 0; i < nemb; i++) dmax = fmax(dmax, fabs((double)emb1[i] - emb2[i]));
    EXPECT(dmax <= 1e-5);
    double worst_m = 0, worst_v = 0;
    for (int p = 0; p < VIT_TOKENS; p++) {
        double s = 0, ss = 0;
        for (int c = 0; c < SAM_EMB_C; c++) s += emb1[(size_t)c * VIT_TOKENS + p];
        double m = s / SAM_EMB_C;
        for (int c = 0; c < SAM_EMB_C; c++) {
            double d = emb1[(size_t)c * VIT_TOKENS + p] - m;
            ss += d * d;
        }
        if (fabs(m) > worst_m) worst_m = fabs(m);
        if (fabs(ss / SAM_EMB_C - 1) > worst_v) worst_v = fabs(ss / SAM_EMB_C - 1);
    }
    printf("forward threads 1 vs 2: max |diff| %.2g; per-pixel channel mean max %.2g, |var-1| max %.2g\n",
           dmax, worst_m, worst_v);
    EXPECT(worst_m < 1e-5 && worst_v < 1e-3);
    int finite = 1;
    for (size_t i = 0; i < (size_t)VIT_TOKENS * C; i++) finite &= isfinite(early[i]) != 0;
    EXPECT(finite);
    vit_destroy(&v);
    EXPECT(v == NULL);
    wts_destroy(&w);

    /* the attention op alone: bit-identical for any thread count */
    for (int S = 14; S <= 64; S += 50) {
        int nwin = S == 14 ? 4 : 1, heads = 3, d = 32, N = S * S;
        size_t nq = (size_t)nwin * N * 3 * heads * d, no = (size_t)nwin * N * heads * d;
        float *qkv = malloc(nq * sizeof(float)), *rel = malloc((size_t)(2 * S) * d * sizeof(float)); /* rel_h = rel, rel_w = rel + d */
        float *o1 = malloc(no * sizeof(float)), *o2 = malloc(no * sizeof(float));
        for (size_t i = 0; i < nq; i++) qkv[i] = 4 * urand();
        for (int i = 0; i < 2 * S * d; i++) rel[i] = urand();
        float *scr = malloc(kn_relpos_attention_scratch(nwin, S, heads, d, 3) * sizeof(float));
        kn_relpos_attention_fwd(o1, qkv, rel, rel + d, nwin, S, heads, d, 0.17f, scr, 1);
        kn_relpos_attention_fwd(o2, qkv, rel, rel + d, nwin, S, heads, d, 0.17f, scr, 3);
        int same = memcmp(o1, o2, no * sizeof(float)) == 0;
        printf("relpos attention S=%d on 1 vs 3 threads: %s\n", S, same ? "bit-identical" : "FAIL differs");
        if (!same) expect_failures++;
        free(qkv); free(rel); free(o1); free(o2); free(scr);
    }

    expect_refused("missing rel_pos_w", make("image_encoder.blocks.1.attn.rel_pos_w", 0, 0), "blocks.1.attn.rel_pos_w");
    expect_refused("even rel_pos_h", make(NULL, 28, 0), "rel_pos_h");
    expect_refused("rel_pos_h needs interpolation", make(NULL, 129, 0), "interpolate");
    expect_refused("qkv shape", make(NULL, 0, 3 * C + 1), "attn.qkv.weight");
    expect_refused("no patch embedding", make("image_encoder.patch_embed.proj.weight", 0, 0), "patch_embed");
    expect_refused("no neck", make("image_encoder.neck.2.weight", 0, 0), "neck.2.weight");

    /* head dim comes from the rel-pos tables: C 160 with 80-wide tables = 2 heads (as
     * ViT-H: 1280 / 80 = 16 heads, not 1280 / 64) */
    C = 160;
    HD = 80;
    w = make(NULL, 0, 0);
    v = w ? vit_new(w, &e) : NULL;
    if (!v) {
        fprintf(stderr, "FAIL vit_new (C 160): %s\n", e.msg);
        expect_failures++;
    } else {
        vit_get_info(v, &inf);
        printf("C 160, 80-wide tables: %d heads of %d\n", inf.heads, inf.head_dim);
        EXPECT(inf.heads == 2 && inf.head_dim == 80);
        EXPECT(vit_forward(v, img, emb1, NULL, &e) == 0);
        int ok = 1;
        for (size_t i = 0; i < nemb; i++) ok &= isfinite(emb1[i]) != 0;
        EXPECT(ok);
    }
    vit_destroy(&v);
    wts_destroy(&w);
    HD = 48; /* does not divide 160 */
    expect_refused("head dim not dividing C", make(NULL, 0, 0), "does not divide");
    free(img); free(emb1); free(emb2); free(early);
    if (expect_failures) {
        fprintf(stderr, "%d failures\n", expect_failures);
        return 1;
    }
    printf("test_vit_unit: ok\n");
    return 0;
}
