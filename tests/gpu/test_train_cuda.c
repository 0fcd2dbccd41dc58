/* test_train_cuda.c — the GPU adapter training step (train_adapter with cfg.device =
 * KN_DEV_CUDA) against the CPU step on real samples: MobileSAM, a few training images of one
 * domain of ../shared/data/cl (learn_load_split, spread over the split), the default recipe
 * for one epoch (seed 0), all runs from the same zero-shot adapter. The GPU epoch runs twice:
 *   FP32 (cfg.tf32 = 0), the exact check: epoch mean loss within 1e-3 relative of the CPU's,
 *     parameter update (trained − initial) within 1e-2 relative L2 of the CPU's update, not
 *     zero, and the hq token's update (through the decoder's hq backward) within 1e-2;
 *   TF32 (the default), the criterion: loss within 1 %; the update within 25 %
 *     relative L2 (TF32 perturbs the gradients by ~1e-3 relative, and Adam's first steps turn
 *     that into sign flips of the near-zero components, each worth a full lr step).
 * All runs draw prompts and candidate points from the same host stream (train.c); what is
 * left is float rounding (GPU reduction order, atomic adds, TF32).
 * Usage: test_train_cuda MODEL DOMAIN_DIR [n_samples=8] [batch=4] [points=12544]
 * Exit 77 without a CUDA device or when the model / data are missing. */
#include "adapter.h"
#include "dataset.h"
#include "kn.h"
#include "kn_cuda.h"
#include "learn.h"
#include "sam.h"
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ||(b - a0) - (c - a0)|| / ||c - a0|| over n floats (b: GPU, c: CPU reference) */
static double update_rel(const float *b, const float *c, const float *a0, size_t n, double *norm)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double ub = (double)b[i] - a0[i], uc = (double)c[i] - a0[i];
        d += (ub - uc) * (ub - uc);
        r += uc * uc;
    }
    *norm = sqrt(r);
    return r > 0 ? sqrt(d / r) : INFINITY;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_train_cuda MODEL DOMAIN_DIR [n] [batch] [points]\n");
        return 2;
    }
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    if (access(argv[1], R_OK) || access(argv[2], R_OK)) {
        printf("SKIP: %s or %s is not readable (model: ./moda.sh setup; data: ../shared/data)\n",
               argv[1], argv[2]);
        return 77;
    }
    int n = argc > 3 ? atoi(argv[3]) : 8, batch = argc > 4 ? atoi(argv[4]) : 4;
    int points = argc > 5 ? atoi(argv[5]) : 12544;
    err_t e = {0};
    sam_t *sam = sam_load(argv[1], &e);
    dataset_t *ds = sam ? dataset_open(argv[2], &e) : NULL;
    train_set_t *ts = ds ? train_set_new(sam_early_channels(sam), &e) : NULL;
    if (!ts || learn_load_split(sam, ds, DS_TRAIN, n, ts, NULL, NULL, &e)) {
        printf("FAIL setup: %s\n", e.msg);
        return 1;
    }
    adapter_t *a0 = adapter_new(sam_early_channels(sam), &e);
    if (!a0 || adapter_init_from_sam(a0, sam_weights(sam), 0, &e)) {
        printf("FAIL adapter: %s\n", e.msg);
        return 1;
    }
    adapter_t *ac = adapter_clone(a0, &e), *ag = adapter_clone(a0, &e);
    train_cfg_t cfg;
    train_cfg_default(&cfg);
    cfg.epochs = 1;
    cfg.batch = batch;
    cfg.points = points;
    cfg.fixed_loss = 0; /* CPU-only measure (train.h); not what this test compares */
    train_stats_t sc = {0}, sg = {0};
    double t0 = now_s();
    int rc = train_adapter(sam, ts, ac, &cfg, &sc, &e);
    double tc = now_s() - t0;
    if (rc) {
        printf("FAIL CPU training: %s\n", e.msg);
        return 1;
    }
    int fails = 0;
    cfg.device = KN_DEV_CUDA;
    for (int tf32 = 0; tf32 < 2; tf32++) {
        double tol_loss = tf32 ? 1e-2 : 1e-3, tol_upd = tf32 ? 0.25 : 1e-2;
        memcpy(ag->data, a0->data, sizeof(float) * a0->size);
        cfg.tf32 = tf32;
        t0 = now_s();
        rc = train_adapter(sam, ts, ag, &cfg, &sg, &e);
        double tg = now_s() - t0;
        if (rc) {
            printf("FAIL GPU training (%s): %s\n", tf32 ? "TF32" : "FP32", e.msg);
            return 1;
        }
        printf("-- GPU %s: %d samples of %s, batch %d, %d points, %d steps: CPU %.1f s (%.1f "
               "ms/step), GPU %.1f s (%.1f ms/step)\n", tf32 ? "TF32" : "FP32", ts->n, argv[2],
               batch, points, sg.steps, tc, sc.step_ms, tg, sg.step_ms);
        double dl = fabs(sg.first_loss - sc.first_loss) / fabs(sc.first_loss);
        int ok = dl <= tol_loss && sg.steps == sc.steps;
        printf("%s epoch mean loss: CPU %.6f GPU %.6f (rel diff %.2e, tol %.0e)\n",
               ok ? "ok  " : "FAIL", sc.first_loss, sg.first_loss, dl, tol_loss);
        fails += !ok;
        double norm, ru = update_rel(ag->data, ac->data, a0->data, a0->size, &norm);
        ok = ru <= tol_upd && norm > 0;
        printf("%s parameter update: |CPU update| %.3e, GPU vs CPU rel L2 %.2e (tol %.2g)\n",
               ok ? "ok  " : "FAIL", norm, ru, tol_upd);
        fails += !ok;
        for (int i = 0; i < ADP_NPARAM; i++) { /* per parameter, for the record */
            const adp_param_t *p = &a0->params[i];
            double pn, pr = update_rel(ag->data + p->off, ac->data + p->off, a0->data + p->off,
                                       p->n, &pn);
            printf("     %-30s |update| %.3e rel %.2e\n", p->name, pn, pr);
            if (i == ADP_P_TOK && !(pn > 0 && pr <= tol_upd)) {
                printf("FAIL hq_token update (decoder hq backward on the GPU)\n");
                fails++;
            }
        }
    }
    adapter_destroy(&a0);
    adapter_destroy(&ac);
    adapter_destroy(&ag);
    train_set_destroy(&ts);
    dataset_close(&ds);
    sam_destroy(&sam);
    printf("%d checks failed\n", fails);
    return fails ? 1 : 0;
}
