/* test_tinyvit_cuda.c — the GPU TinyViT encoder (common/sam_cuda.h) against the CPU encoder
 * (sam_encode) on real images from ../shared/data, encoded together as one batch:
 * embedding and early feature relative L2 ≤ 2e-3 (TF32), and the decoder's mask from the
 * GPU embedding vs from the CPU embedding (same centre-click prompt) IoU ≥ 0.99. Then the
 * full GPU pipeline: the GPU decoder (samdec_cuda.h) on the device embedding
 * (tinyvit_cuda_emb_dev), its final mask against the all-CPU pipeline's, IoU ≥ 0.99.
 * Usage: test_tinyvit_cuda MODEL IMAGE... ; exit 77 without a CUDA device or when the model
 * or an image is missing. */
#include "kn_cuda.h"
#include "preprocess.h"
#include "sam.h"
#include "sam_cuda.h"
#include "samdec_cuda.h"
#include "gpu_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_tinyvit_cuda MODEL IMAGE...\n");
        return 2;
    }
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    for (int i = 1; i < argc; i++)
        if (access(argv[i], R_OK) != 0) { /* a machine without the model or shared data */
            printf("SKIP: %s is not readable (model: ./moda.sh setup; images: ../shared/data)\n",
                   argv[i]);
            return 77;
        }
    int B = argc - 2, fails = 0;
    err_t e = {0};
    sam_t *sam = sam_load(argv[1], &e);
    if (!sam) {
        printf("FAIL load %s: %s\n", argv[1], e.msg);
        return 1;
    }
    size_t nx = (size_t)3 * SAM_IMG * SAM_IMG, ne = (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB,
           nr = (size_t)160 * SAM_EMB * SAM_EMB;
    float *x = malloc(sizeof(float) * nx * B), *emb = malloc(sizeof(float) * ne * B);
    float *early = malloc(sizeof(float) * nr * B);
    sam_embedding_t *cpu = calloc(B, sizeof *cpu);
    image_t **img = calloc(B, sizeof *img);
    tinyvit_cuda_t *gpu = NULL;
    kcu_ctx_t *dctx = NULL;
    samdec_cuda_t *dec = NULL;
    float *lr_d = NULL, *iou_d = NULL;
    float *lr = malloc(sizeof(float) * SAM_NMASK * SAM_LOWRES * SAM_LOWRES);
    if (!x || !emb || !early || !cpu || !img || !lr) {
        printf("FAIL out of memory\n");
        return 1;
    }
    for (int b = 0; b < B; b++) {
        if (!(img[b] = image_load(argv[2 + b], &e)) ||
            sam_encode(sam, img[b], &cpu[b], x + b * nx, 1, &e)) {
            printf("FAIL %s: %s\n", argv[2 + b], e.msg);
            return 1;
        }
    }
    gpu = tinyvit_cuda_new(sam_weights(sam), 0, B, &e);
    if (!gpu) {
        printf("FAIL tinyvit_cuda_new: %s\n", e.msg);
        return 1;
    }
    /* the GPU decoder on its own context (it reads the encoder's device embedding) */
    if (!(dctx = kcu_ctx_new(0, (size_t)256 << 20, KCU_TF32, &e)) ||
        !(dec = samdec_cuda_new(sam_weights(sam), dctx, &e)) ||
        !(lr_d = kcu_allocf(dctx, SAM_NMASK * SAM_LOWRES * SAM_LOWRES)) ||
        !(iou_d = kcu_allocf(dctx, SAM_NMASK))) {
        printf("FAIL GPU decoder: %s %s\n", e.msg, dctx ? kcu_errmsg(dctx) : "");
        return 1;
    }
    double t0 = now_ms();
    if (tinyvit_cuda_forward(gpu, x, B, emb, early, &e)) {
        printf("FAIL tinyvit_cuda_forward: %s\n", e.msg);
        return 1;
    }
    printf("GPU encoder batch %d: %.1f ms (first call, incl. copies)\n", B, now_ms() - t0);
    for (int b = 0; b < B; b++) {
        double re = rel_l2(emb + b * ne, cpu[b].emb, ne);
        double rr = rel_l2(early + b * nr, cpu[b].early, nr);
        int ok = re <= 2e-3 && rr <= 2e-3;
        /* decoder on the CPU from both embeddings: mask IoU */
        sam_embedding_t g = cpu[b];
        g.emb = emb + b * ne;
        g.early = NULL;
        float pt[3] = {img[b]->w / 2.0f, img[b]->h / 2.0f, 1};
        sam_prompt_t p = {.points = pt, .n_points = 1};
        sam_result_t rc = {0}, rg = {0};
        double iou = -1;
        if (!sam_predict(sam, &cpu[b], &p, &rc, &e) && !sam_predict(sam, &g, &p, &rg, &e)) {
            size_t hw = (size_t)rc.h * rc.w, in = 0, un = 0;
            const uint8_t *mc = rc.mask + rc.best * hw, *mg = rg.mask + rg.best * hw;
            for (size_t i = 0; i < hw; i++) {
                in += mc[i] && mg[i];
                un += mc[i] || mg[i];
            }
            iou = un ? (double)in / un : 1.0;
        }
        /* full GPU pipeline: GPU decoder on the device embedding, final mask vs all-CPU */
        double iou_full = -1;
        sam_point_t pts[SAM_MAX_POINTS + 2];
        float iou4[SAM_NMASK];
        sam_result_t rf = {0};
        int n = sam_prompt_points(&cpu[b].info, &p, pts, &e);
        if (n > 0 &&
            !samdec_cuda_forward(dec, tinyvit_cuda_emb_dev(gpu, b), pts, n, NULL, lr_d, iou_d,
                                 NULL, &e) &&
            !kcu_sync(dctx, &e) &&
            !kcu_download(dctx, lr, lr_d, sizeof(float) * SAM_NMASK * SAM_LOWRES * SAM_LOWRES) &&
            !kcu_download(dctx, iou4, iou_d, sizeof iou4) &&
            !sam_result_from_lowres(&cpu[b].info, &p, n, lr, iou4, &rf, &e) && rc.mask) {
            size_t hw = (size_t)rc.h * rc.w, in = 0, un = 0;
            const uint8_t *mc = rc.mask + rc.best * hw, *mg = rf.mask + rf.best * hw;
            for (size_t i = 0; i < hw; i++) {
                in += mc[i] && mg[i];
                un += mc[i] || mg[i];
            }
            iou_full = un ? (double)in / un : 1.0;
        } else {
            printf("     GPU decoder failed: %s\n", e.msg);
        }
        sam_result_free(&rf);
        ok = ok && iou >= 0.99 && iou_full >= 0.99;
        printf("%s %s: embedding rel L2 %.2e, early rel L2 %.2e (tol 2e-3), mask IoU %.4f, "
               "GPU encoder+decoder mask IoU %.4f (min 0.99)\n", ok ? "ok  " : "FAIL",
               argv[2 + b], re, rr, iou, iou_full);
        fails += !ok;
        sam_result_free(&rc);
        sam_result_free(&rg);
    }
    /* device-resident timing, batch 1 and batch B */
    for (int bb = 1; bb <= B; bb += B > 1 ? B - 1 : 1) {
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            t0 = now_ms();
            if (tinyvit_cuda_forward_resident(gpu, bb, &e)) {
                printf("FAIL resident forward: %s\n", e.msg);
                return 1;
            }
            double t = now_ms() - t0;
            best = t < best ? t : best;
        }
        printf("GPU encoder resident batch %d: best %.2f ms (%.0f images/s)\n", bb, best,
               bb * 1e3 / best);
    }
    /* decoder time per prompt, device-resident embedding, box prompt */
    {
        sam_prompt_t bp = {.has_box = 1, .box = {img[0]->w * 0.25f, img[0]->h * 0.25f,
                                                 img[0]->w * 0.75f, img[0]->h * 0.75f}};
        sam_point_t pts[SAM_MAX_POINTS + 2];
        int n = sam_prompt_points(&cpu[0].info, &bp, pts, &e);
        double best = 1e30;
        for (int r = 0; r < 5 && n > 0; r++) {
            t0 = now_ms();
            if (samdec_cuda_forward(dec, tinyvit_cuda_emb_dev(gpu, 0), pts, n, NULL, lr_d, iou_d,
                                    NULL, &e) || kcu_sync(dctx, &e)) {
                printf("FAIL GPU decoder: %s\n", e.msg);
                return 1;
            }
            double t = now_ms() - t0;
            best = t < best ? t : best;
        }
        printf("GPU decoder per box prompt: best %.3f ms\n", best);
    }
    samdec_cuda_destroy(&dec);
    kcu_ctx_destroy(&dctx);
    free(lr);
    tinyvit_cuda_destroy(&gpu);
    for (int b = 0; b < B; b++) {
        sam_embedding_free(&cpu[b]);
        image_destroy(&img[b]);
    }
    free(cpu);
    free(img);
    free(x);
    free(emb);
    free(early);
    sam_destroy(&sam);
    printf("%d of %d images failed\n", fails, B);
    return fails ? 1 : 0;
}
