/* test_bankrun_cuda.c — bankrun on the GPU (bankrun_use_cuda: common/bankrun_cuda.c, the
 * path of `moda segment --bank --device cuda` and of moda-infer's CUDA workers) against
 * bankrun on the CPU (adapter_forward, sam_predict: the reference), on the real MobileSAM
 * weights, the CPU embedding (with the early feature) of a real image and a real bank of two
 * domains: adapters from adapter_init_from_sam (seeds 1 and 2) with every parameter perturbed
 * (the zero-initialised last convs too, so each fusion branch reaches the logits and the two
 * domains give different masks). The encoder is the CPU's in both runs: this checks the
 * decoder, the adapter head and bankrun's bookkeeping, not the GPU encoder.
 *   1. domain 0, promptless (SAM's padding point), the embedding given on the device
 *      (emb_dev, as the workers pass the GPU encoder's);
 *   2. domain 1, a box prompt, the embedding uploaded by bankrun (emb_dev NULL): the
 *      parameters on the device must be domain 1's now (they are uploaded on a change);
 *   3. bankrun_predict (no bank, box) against sam_predict.
 * Checks: low-res logits relative L2 ≤ 2e-3, the IoU prediction within 2e-3, the final mask
 * (logits upscaled to the image and thresholded, as the callers do) IoU ≥ 0.99; for 3 the
 * final best mask IoU ≥ 0.99 and the same mask index. The two domains' CPU logits for case 2
 * must differ by far more than the tolerance (else case 2 could not catch stale parameters).
 * Usage: test_bankrun_cuda MODEL IMAGE ; exit 77 without a CUDA device or when the model or
 * the image is missing. */
#include "adapter_bank.h"
#include "bankrun.h"
#include "kn.h"
#include "kn_cuda.h"
#include "postprocess.h"
#include "sam.h"
#include "gpu_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LR_N ((size_t)SAM_LOWRES * SAM_LOWRES)
#define NE ((size_t)SAM_EMB_C * SAM_EMB * SAM_EMB)
#define TOL 2e-3

static int fails;

static double iou_u8(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t in = 0, un = 0;
    for (size_t i = 0; i < n; i++) {
        in += a[i] && b[i];
        un += a[i] || b[i];
    }
    return un ? (double)in / un : 1.0;
}

static void check(int ok, const char *what, double v, double tol)
{
    printf("%s %-48s %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, v, tol);
    fails += !ok;
}

/* The final mask at the image size from low-res logits, as seg_bank.c / workers.c make it. */
static int final_mask(const float *logits, const prep_info_t *in, uint8_t *mask)
{
    err_t e = {0};
    float *full = malloc(sizeof(float) * (size_t)in->h * in->w);
    int rc = full ? post_upscale(logits, SAM_LOWRES, in->new_h, in->new_w, in->h, in->w, full, &e)
                  : -1;
    if (!rc) post_threshold(full, (long long)in->h * in->w, 0.0f, mask);
    free(full);
    return rc;
}

/* A domain adapter: SAM's zero-shot start (seed), then every parameter moved by noise of
 * `scale` times its own RMS (or `scale` · 0.05 where it is all zero). Caller owns result. */
static adapter_t *make_adapter(const sam_t *sam, uint64_t seed, float scale)
{
    err_t e = {0};
    adapter_t *a = adapter_new(sam_early_channels(sam), &e);
    if (!a || adapter_init_from_sam(a, sam_weights(sam), seed, &e)) {
        printf("FAIL adapter: %s\n", e.msg);
        adapter_destroy(&a);
        return NULL;
    }
    uint64_t rng = seed * 7919 + 1;
    for (int p = 0; p < ADP_NPARAM; p++) {
        float *x = a->data + a->params[p].off;
        size_t n = a->params[p].n;
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float rms = (float)sqrt(ss / (double)n);
        float s = scale * (rms > 0 ? rms : 0.05f);
        for (size_t i = 0; i < n; i++) x[i] += s * 2.0f * (kn_rng_uniform(&rng) - 0.5f);
    }
    return a;
}

/* Domain d on both bankruns; compares logits, iou and the final mask. emb_dev: device or NULL.
 * other (may be NULL): another domain's CPU logits for the same prompt, which must differ. */
static int run_adapter(bankrun_t *cpu, bankrun_t *gpu, const abank_t *b, int d, const char *name,
                       const sam_embedding_t *emb, const float *emb_dev, const sam_point_t *pts,
                       int n, float *lc, const float *other)
{
    err_t e = {0};
    float *lg = malloc(sizeof(float) * LR_N), ic = 0, ig = 0;
    size_t hw = (size_t)emb->info.h * emb->info.w;
    uint8_t *mc = malloc(hw), *mg = malloc(hw);
    int rc = -1;
    if (!lg || !mc || !mg) goto done;
    if (bankrun_adapter(cpu, b, d, emb, NULL, pts, n, lc, &ic, &e)) {
        printf("FAIL %s: CPU bankrun_adapter: %s\n", name, e.msg);
        goto done;
    }
    double t0 = now_ms();
    if (bankrun_adapter(gpu, b, d, emb, emb_dev, pts, n, lg, &ig, &e)) {
        printf("FAIL %s: GPU bankrun_adapter: %s\n", name, e.msg);
        goto done;
    }
    printf("---- %s (domain %s, %d points, emb %s): GPU %.1f ms\n", name, b->domains[d].name,
           n ? n : 1, emb_dev ? "on the device" : "uploaded", now_ms() - t0);
    char w[128];
    snprintf(w, sizeof w, "%s logits rel L2", name);
    double r = rel_l2(lg, lc, LR_N);
    check(r <= TOL, w, r, TOL);
    snprintf(w, sizeof w, "%s iou prediction abs diff", name);
    check(fabs((double)ig - ic) <= TOL, w, fabs((double)ig - ic), TOL);
    if (final_mask(lc, &emb->info, mc) || final_mask(lg, &emb->info, mg)) goto done;
    double iou = iou_u8(mg, mc, hw);
    size_t fg = 0;
    for (size_t i = 0; i < hw; i++) fg += mc[i] != 0;
    printf("     CPU final mask: %zu of %zu px foreground\n", fg, hw);
    snprintf(w, sizeof w, "%s final mask 1 - IoU", name);
    check(iou >= 0.99, w, 1 - iou, 0.01);
    if (other) {
        double dd = rel_l2(other, lc, LR_N);
        snprintf(w, sizeof w, "%s: other domain's logits differ (rel L2)", name);
        check(dd > 50 * TOL, w, dd, 50 * TOL);
    }
    rc = 0;
done:
    free(lg);
    free(mc);
    free(mg);
    return rc;
}

int main(int argc, char **argv)
{
    if (kcu_device_probe(NULL, 0) == 0) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    if (argc != 3 || access(argv[1], R_OK) || access(argv[2], R_OK)) {
        printf("skip: usage test_bankrun_cuda MODEL IMAGE (both readable)\n");
        return 77;
    }
    err_t e = {0};
    sam_t *sam = sam_load(argv[1], &e);
    image_t *img = sam ? image_load(argv[2], &e) : NULL;
    if (!img) {
        printf("FAIL load: %s\n", e.msg);
        return 1;
    }
    sam_embedding_t emb = {0};
    double t0 = now_ms();
    if (sam_encode(sam, img, &emb, NULL, 1, &e)) {
        printf("FAIL sam_encode: %s\n", e.msg);
        return 1;
    }
    printf("CPU encoder %.0f ms (%dx%d image)\n", now_ms() - t0, img->w, img->h);

    char hash[65];
    wts_content_hash(sam_weights(sam), hash);
    abank_t *b = abank_new(hash, &e);
    adapter_t *a0 = make_adapter(sam, 1, 0.05f), *a1 = make_adapter(sam, 2, 0.05f);
    if (!b || !a0 || !a1 || abank_put_domain(b, "alpha", &a0, NULL, 0, NULL, 0, "", &e) ||
        abank_put_domain(b, "beta", &a1, NULL, 0, NULL, 0, "", &e)) {
        printf("FAIL bank: %s\n", e.msg);
        return 1;
    }
    bankrun_t *cpu = bankrun_new(sam, &e), *gpu = cpu ? bankrun_new(sam, &e) : NULL;
    t0 = now_ms();
    if (!gpu || bankrun_use_cuda(gpu, 0, &e) || bankrun_set_bank(cpu, b, 7, &e) ||
        bankrun_set_bank(gpu, b, 7, &e)) {
        printf("FAIL bankrun: %s\n", e.msg);
        return 1;
    }
    printf("bankrun_use_cuda %.0f ms; on cuda: %d\n", now_ms() - t0, bankrun_on_cuda(gpu));
    check(bankrun_on_cuda(gpu) == 1 && bankrun_on_cuda(cpu) == 0, "bankrun_on_cuda", 0, 0);

    /* the embedding on the device, as a GPU encoder would hand it over */
    kcu_ctx_t *ctx = kcu_ctx_new(0, sizeof(float) * NE + 4096, 0, &e);
    float *emb_d = ctx ? kcu_upload_new(ctx, emb.emb, NE) : NULL;
    if (!emb_d || kcu_sync(ctx, &e)) {
        printf("FAIL embedding upload: %s %s\n", e.msg, ctx ? kcu_errmsg(ctx) : "");
        return 1;
    }
    float *l0 = malloc(sizeof(float) * LR_N), *l1 = malloc(sizeof(float) * LR_N);
    float *lx = malloc(sizeof(float) * LR_N);
    int rc = 0;
    /* 1. domain alpha, promptless, embedding on the device */
    rc |= run_adapter(cpu, gpu, b, 0, "promptless", &emb, emb_d, NULL, 0, l0, NULL);

    /* 2. domain beta, a box, embedding uploaded; first the CPU logits of alpha for it */
    float w = (float)img->w, h = (float)img->h;
    sam_prompt_t box = {.has_box = 1, .box = {0.1f * w, 0.1f * h, 0.9f * w, 0.9f * h}};
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n = sam_prompt_points(&emb.info, &box, pts, &e);
    if (n < 0 || bankrun_adapter(cpu, b, 0, &emb, NULL, pts, n, lx, NULL, &e)) {
        printf("FAIL box prompt: %s\n", e.msg);
        return 1;
    }
    rc |= run_adapter(cpu, gpu, b, 1, "box", &emb, NULL, pts, n, l1, lx);

    /* 3. no bank: bankrun_predict on both */
    sam_result_t rc_ = {0}, rg = {0};
    t0 = now_ms();
    if (bankrun_predict(gpu, &emb, emb_d, &box, &rg, &e)) {
        printf("FAIL bankrun_predict (GPU): %s\n", e.msg);
        rc = -1;
    } else if (bankrun_predict(cpu, &emb, NULL, &box, &rc_, &e)) {
        printf("FAIL bankrun_predict (CPU): %s\n", e.msg);
        rc = -1;
    } else {
        printf("---- bankrun_predict (box, no bank): GPU %.1f ms\n", now_ms() - t0);
        size_t hw = (size_t)rc_.h * rc_.w;
        double iou = iou_u8(rg.mask + (size_t)rg.best * hw, rc_.mask + (size_t)rc_.best * hw, hw);
        check(iou >= 0.99, "predict final best mask 1 - IoU", 1 - iou, 0.01);
        check(rg.index[rg.best] == rc_.index[rc_.best], "predict same best mask index",
              fabs((double)rg.index[rg.best] - rc_.index[rc_.best]), 0);
        double di = fabs((double)rg.iou[rg.best] - rc_.iou[rc_.best]);
        check(di <= TOL, "predict best iou abs diff", di, TOL);
    }
    sam_result_free(&rc_);
    sam_result_free(&rg);
    if (rc) fails++;
    printf("%s: %d failure(s)\n", fails ? "FAIL" : "PASS", fails);
    free(l0);
    free(l1);
    free(lx);
    kcu_ctx_destroy(&ctx);
    bankrun_destroy(&gpu);
    bankrun_destroy(&cpu);
    abank_destroy(&b);
    sam_embedding_free(&emb);
    image_destroy(&img);
    sam_destroy(&sam);
    return fails ? 1 : 0;
}
