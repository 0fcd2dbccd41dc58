/* test_adapter_cuda.c — the GPU adapter head (common/adapter_cuda.h) against the CPU head
 * (adapter_head_fwd / adapter_head_bwd) on random inputs of the real shapes (hq_out[256],
 * up[32,256,256], emb[256,64,64], early[160,64,64], TinyViT's early_c) and random parameters
 * (every layer non-zero, so every gradient is exercised). Checked: logits, d hq_out and the
 * gradient INCREMENT of each of the 25 parameters (both sides start from the same non-zero
 * gradient, so accumulation is checked too; hq_token's slot must stay untouched), relative
 * L2 per tensor; then one Adam step on the device against kn_adam_step.
 * Runs twice: FP32 math (tolerance 1e-4) and TF32 (tolerance 1e-2, real GPUs only differ).
 * Usage: test_adapter_cuda [early_c]  (default 160); exit 77 without a CUDA device. */
#include "adapter.h"
#include "adapter_cuda.h"
#include "kn.h"
#include "kn_cuda.h"
#include "gpu_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LRN (SAM_LOWRES * SAM_LOWRES)
#define EN (SAM_EMB * SAM_EMB)

static void fill(float *x, size_t n, float scale, float shift, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) x[i] = shift + scale * (2.0f * kn_rng_uniform(rng) - 1.0f);
}

static int fails;

static void check(const char *what, double err, double tol)
{
    int ok = err <= tol && err == err;
    printf("%s %-34s rel L2 %.2e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, err, tol);
    fails += !ok;
}

int main(int argc, char **argv)
{
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    int Ce = argc > 1 ? atoi(argv[1]) : 160;
    err_t e = {0};
    adapter_t *a = adapter_new(Ce, &e);
    adp_work_t *w = a ? adp_work_new(Ce, &e) : NULL;
    if (!w) {
        printf("FAIL setup: %s\n", e.msg);
        return 1;
    }
    uint64_t rng = 12345;
    /* parameters: weights ±1/sqrt(fan_in), LayerNorm weight 1 ± 0.2, biases ±0.05 */
    for (int i = 0; i < ADP_NPARAM; i++) {
        adp_param_t *p = &a->params[i];
        float *x = a->data + p->off;
        int is_ln = strstr(p->name, ".1.") && !strstr(p->name, "hq_mlp");
        float shift = is_ln && strstr(p->name, "weight") ? 1.0f : 0.0f;
        if (p->ndim == 1) fill(x, p->n, is_ln ? 0.2f : 0.05f, shift, &rng);
        else fill(x, p->n, 1.0f / sqrtf((float)(p->n / p->shape[0])), 0.0f, &rng);
    }
    size_t nup = (size_t)ADP_HYP * LRN, nemb = (size_t)SAM_EMB_C * EN, ner = (size_t)Ce * EN;
    float *hq = malloc(sizeof(float) * SAM_EMB_C), *up = malloc(sizeof(float) * nup);
    float *emb = malloc(sizeof(float) * nemb), *early = malloc(sizeof(float) * ner);
    float *dl = malloc(sizeof(float) * LRN), *lc = malloc(sizeof(float) * LRN);
    float *lg = malloc(sizeof(float) * LRN);
    float *g0 = malloc(sizeof(float) * a->size), *gc = malloc(sizeof(float) * a->size);
    float *gg = malloc(sizeof(float) * a->size);
    float dhc[SAM_EMB_C], dhg[SAM_EMB_C];
    fill(hq, SAM_EMB_C, 1.0f, 0.0f, &rng);
    fill(up, nup, 1.0f, 0.0f, &rng);
    fill(emb, nemb, 0.5f, 0.0f, &rng);
    fill(early, ner, 1.0f, 0.0f, &rng);
    fill(g0, a->size, 1e-3f, 0.0f, &rng);
    /* dlogits as the point loss makes them: zero except near ~1/8 of the pixels */
    for (int p = 0; p < LRN; p++)
        dl[p] = kn_rng_uniform(&rng) < 0.125f ? 1e-3f * (2.0f * kn_rng_uniform(&rng) - 1.0f) : 0.0f;
    double t0 = now_ms();
    memcpy(gc, g0, sizeof(float) * a->size);
    adapter_head_fwd(a, w, hq, up, emb, early, lc);
    adapter_head_bwd(a, w, dl, gc, dhc);
    printf("CPU head fwd+bwd: %.0f ms\n", now_ms() - t0);

    kcu_ctx_t *ctx = kcu_ctx_new(0, (size_t)512 << 20, 0, &e);
    adapter_cuda_t *d = ctx ? adapter_cuda_new(a, ctx, &e) : NULL;
    float *hq_d = ctx ? kcu_upload_new(ctx, hq, SAM_EMB_C) : NULL;
    float *up_d = ctx ? kcu_upload_new(ctx, up, nup) : NULL;
    float *emb_d = ctx ? kcu_upload_new(ctx, emb, nemb) : NULL;
    float *early_d = ctx ? kcu_upload_new(ctx, early, ner) : NULL;
    float *dl_d = ctx ? kcu_upload_new(ctx, dl, LRN) : NULL;
    float *lg_d = ctx ? kcu_allocf(ctx, LRN) : NULL;
    float *dh_d = ctx ? kcu_allocf(ctx, SAM_EMB_C) : NULL;
    if (!d || !hq_d || !up_d || !emb_d || !early_d || !dl_d || !lg_d || !dh_d) {
        printf("FAIL device setup: %s %s\n", e.msg, ctx ? kcu_errmsg(ctx) : "");
        return 1;
    }
    for (int tf32 = 0; tf32 < 2; tf32++) {
        double tol = tf32 ? 1e-2 : 1e-4;
        printf("-- %s\n", tf32 ? "TF32" : "FP32");
        kcu_set_tf32(ctx, tf32);
        t0 = now_ms();
        int rc = kcu_upload(ctx, adapter_cuda_grad(d), g0, sizeof(float) * a->size);
        if (!rc) rc = adapter_cuda_head_fwd(d, hq_d, up_d, emb_d, early_d, lg_d, &e);
        if (!rc) rc = adapter_cuda_head_bwd(d, dl_d, dh_d, &e);
        if (!rc) rc = kcu_sync(ctx, &e);
        printf("GPU head fwd+bwd: %.1f ms (first calls include cuDNN setup)\n", now_ms() - t0);
        if (!rc) rc = kcu_download(ctx, lg, lg_d, sizeof(float) * LRN);
        if (!rc) rc = kcu_download(ctx, dhg, dh_d, sizeof dhg);
        if (!rc) rc = kcu_download(ctx, gg, adapter_cuda_grad(d), sizeof(float) * a->size);
        if (rc) {
            printf("FAIL GPU head: %s %s\n", e.msg, kcu_errmsg(ctx));
            return 1;
        }
        check("logits", rel_l2(lg, lc, LRN), tol);
        check("d hq_out", rel_l2(dhg, dhc, SAM_EMB_C), tol);
        for (int i = 0; i < ADP_NPARAM; i++) {
            const adp_param_t *p = &a->params[i];
            float *ig = malloc(sizeof(float) * p->n), *ic = malloc(sizeof(float) * p->n);
            for (size_t k = 0; k < p->n; k++) {
                ig[k] = gg[p->off + k] - g0[p->off + k];
                ic[k] = gc[p->off + k] - g0[p->off + k];
            }
            char what[80];
            snprintf(what, sizeof what, "grad %s", p->name);
            if (i == ADP_P_TOK) { /* the head never touches the token's slot */
                double mx = 0;
                for (size_t k = 0; k < p->n; k++) mx = fmax(mx, fabs(ig[k]) + fabs(ic[k]));
                check(what, mx, 0.0);
            } else {
                check(what, rel_l2(ig, ic, p->n), tol);
            }
            free(ig);
            free(ic);
        }
    }
    /* Adam on the device vs kn_adam_step from the same parameters and gradient (the CPU's) */
    float *pc = malloc(sizeof(float) * a->size), *pg = malloc(sizeof(float) * a->size);
    float *m = calloc(a->size, sizeof(float)), *v = calloc(a->size, sizeof(float));
    memcpy(pc, a->data, sizeof(float) * a->size);
    kn_adam_step(pc, gc, m, v, a->size, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1);
    int rc = kcu_upload(ctx, adapter_cuda_grad(d), gc, sizeof(float) * a->size);
    if (!rc) rc = adapter_cuda_adam_step(d, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, &e);
    adapter_t *b = rc ? NULL : adapter_new(Ce, &e);
    if (!b || adapter_cuda_download(d, b, &e)) {
        printf("FAIL adam: %s\n", e.msg);
        return 1;
    }
    memcpy(pg, b->data, sizeof(float) * a->size);
    for (size_t k = 0; k < a->size; k++) { /* compare the updates, not the parameters */
        pg[k] -= a->data[k];
        pc[k] -= a->data[k];
    }
    check("Adam update", rel_l2(pg, pc, a->size), 1e-5);
    adapter_destroy(&b);
    adapter_cuda_destroy(&d);
    kcu_ctx_destroy(&ctx);
    adp_work_destroy(&w);
    adapter_destroy(&a);
    free(hq); free(up); free(emb); free(early); free(dl); free(lc); free(lg);
    free(g0); free(gc); free(gg); free(pc); free(pg); free(m); free(v);
    printf("%d checks failed\n", fails);
    return fails ? 1 : 0;
}
