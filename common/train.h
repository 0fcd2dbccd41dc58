/* train.h — training one MoDA adapter on one domain's labelled samples (CPU or GPU step).
 *
 *   train_set_t *ts = train_set_new(sam, &err);
 *   train_set_add(ts, img, mask, &err);              // encoder runs once per sample (cached)
 *   train_cfg_t cfg; train_cfg_default(&cfg);
 *   train_adapter(sam, ts, adapter, &cfg, &stats, &err);
 *   train_eval(sam, ts_test, adapter, TRAIN_PROMPT_BOX, &iou, &err);
 *
 * Recipe (docs/moda.md): Adam lr 1e-5 (the paper's 1e-3 diverges with our zero-shot start), betas (0.9, 0.999), eps 1e-8, no weight decay,
 * batch 4 (gradients summed with weight 1/batch), step decay ×0.1 from epoch
 * floor(2·epochs/3) on; loss = sigmoid BCE + Dice (kn_bce_dice_loss) on 12,544 points chosen
 * by kn_uncertain_points (oversample 3, importance 0.75) on the 256×256 logits, targets
 * point-sampled (bilinear) from the soft GT map below.
 *
 * GT map: the mask is placed in the padded 1024 frame exactly as the image is (resized to
 * new_h × new_w, top-left, zero padding); frame pixel (X, Y) inside the image takes the
 * original pixel (floor((X + 0.5)·w/new_w), floor((Y + 0.5)·h/new_h)); target cell (i, j)
 * of the 256×256 map = mean of its 4×4 frame pixels (in [0, 1]).
 *
 * Prompt per sample and step (from the run's RNG): box 40 % (GT box in the 1024 frame, each
 * side moved by up to ±10 % of the box size, at most 20 px, clamped to the image), points
 * 30 % (1–10 positive points at foreground cells + the padding point), noisy mask 10 % (GT
 * map shifted by up to ±4 cells, as logits ±8 plus uniform noise ±2, with the padding
 * point), none 20 % (padding point only: the promptless "auto" mode).
 *
 * Deterministic given cfg.seed and the thread count (kn_set_threads).
 *
 * Devices (cfg.device): KN_DEV_CPU runs everything here; KN_DEV_CUDA runs each sample's
 * decoder + head forward, point loss, backward and the Adam update on CUDA device 0
 * (train_cuda.h; the training set is uploaded once) while the loop, the prompts and the
 * random candidate points stay on the host, drawn from the same stream: a GPU run sees the
 * same prompts and candidates as a CPU run, and its losses and parameters differ only by
 * float rounding (reduction order, TF32 in the head's convolutions, atomic adds in the point
 * gradient), so it is not bit-reproducible run to run. train_fixed_loss and train_eval run on
 * the CPU on either device.
 */
#ifndef MODA_TRAIN_H
#define MODA_TRAIN_H

#include <stdint.h>

#include "adapter.h"
#include "err.h"
#include "image.h"
#include "kn.h"
#include "sam.h"

/* One cached labelled sample. */
typedef struct train_sample {
    prep_info_t info;
    float *emb;     /* [256,64,64] owned */
    float *early;   /* [Ce,64,64] owned */
    float *gt;      /* [256,256] soft GT in the padded frame, owned */
    uint8_t *mask;  /* [h,w] 0/1 original-resolution GT, owned */
    float box[4];   /* GT box in ORIGINAL pixels (x0, y0, x1, y1) */
    float *taps;    /* selector taps (sam_taps_floats) when the set keeps them, else NULL */
} train_sample_t;

typedef struct train_set {
    int n, cap;
    int early_c;
    int keep_taps; /* train_set_keep_taps: train_set_add also stores the selector taps */
    train_sample_t *s;
} train_set_t;

train_set_t *train_set_new(int early_c, err_t *err);
void train_set_destroy(train_set_t **ts);
/* Encodes img (borrowed) with sam and caches emb, early, GT map, mask (h·w bytes, 0/1,
 * borrowed; copied). ERR_INVALID for an empty mask. */
int train_set_add(train_set_t *ts, sam_t *sam, const image_t *img, const uint8_t *mask,
                  err_t *err);
/* From now on train_set_add also keeps each sample's selector taps (same encoder pass;
 * about 52 MB per TinyViT sample), for learn_eval_bank's domain selection. */
void train_set_keep_taps(train_set_t *ts);
/* Adds a sample from already computed features (tests): emb/early copied. */
int train_set_add_features(train_set_t *ts, const prep_info_t *info, const float *emb,
                           const float *early, const uint8_t *mask, err_t *err);

typedef struct train_progress {
    int epoch, epochs;   /* 1-based epoch that just finished */
    int step, steps;     /* optimiser steps done / total */
    double loss;         /* mean loss over the epoch's samples */
    double samples_per_s;
    double eta_s;
    float lr;
} train_progress_t;

typedef struct train_cfg {
    int epochs;        /* 8 */
    int batch;         /* 4 */
    uint64_t seed;     /* 0 */
    float lr;          /* 1e-5 */
    int decay_epoch;   /* -1: floor(2·epochs/3) */
    int warmup_steps;  /* 0: off; else lr ramps linearly over the first warmup_steps steps */
    int points;        /* 12544 */
    int oversample;    /* 3 */
    float importance;  /* 0.75 */
    float share_box, share_points, share_mask; /* 0.4, 0.3, 0.1; the rest: no prompt */
    int fixed_loss;    /* 1: measure train_fixed_loss before and after (stats) */
    kn_device_t device; /* KN_DEV_CPU; KN_DEV_CUDA: the step runs on CUDA device 0
                         * (ERR_UNSUPPORTED in a build without CUDA, ERR_DEVICE without a
                         * device) */
    int tf32;          /* CUDA only. 1: the head's GEMMs and convolutions may use TF32 tensor
                        * cores (fast; gradients ~1e-3 relative off fp32); 0: plain fp32. The
                        * decoder runs fp32 either way */
    void (*progress)(const train_progress_t *p, void *ctx); /* after every epoch, or NULL */
    void *ctx;
} train_cfg_t;

void train_cfg_default(train_cfg_t *c);

typedef struct train_stats {
    int steps;
    double first_loss, last_loss; /* mean loss of the first and last epoch (random prompts) */
    double fixed_before, fixed_after; /* train_fixed_loss before / after (cfg.fixed_loss) */
    double seconds;
    double step_ms;                /* mean wall time of one optimiser step */
} train_stats_t;

/* Trains adapter a (updated in place; initialise it first) on every sample of ts.
 * The frozen decoder is built from sam_weights(sam). stats may be NULL. On CUDA, a receives
 * the trained parameters at the end (and is unchanged when training fails). */
int train_adapter(sam_t *sam, const train_set_t *ts, adapter_t *a, const train_cfg_t *cfg,
                  train_stats_t *stats, err_t *err);

/* Mean loss over ts (forward only) with the exact GT box as prompt and the point sampling
 * seeded per sample by its index: a deterministic before/after measure (the training loss
 * of an epoch mixes random prompt kinds and is noisy). */
int train_fixed_loss(sam_t *sam, const train_set_t *ts, const adapter_t *a, double *loss,
                     err_t *err);

enum { TRAIN_PROMPT_BOX = 0, TRAIN_PROMPT_AUTO = 1 };

/* Mean IoU (0..1) over ts of the adapter's mask (a = NULL: zero-shot SAM's mask token 0,
 * which is what a fresh adapter reproduces) at the original resolution, logits > 0 vs the
 * GT. prompt: TRAIN_PROMPT_BOX (exact GT box) or TRAIN_PROMPT_AUTO (no prompt).
 * per_sample (may be NULL) receives ts->n IoUs. */
int train_eval(sam_t *sam, const train_set_t *ts, const adapter_t *a, int prompt, double *miou,
               double *per_sample, err_t *err);

/* One timed training step for the benchmark: batch `batch` of samples (cycled from ts)
 * with box prompts, forward + backward + Adam on a (updated), on `device` (KN_DEV_CUDA: the
 * GPU step of train_adapter, samples device-resident, the time includes waiting for the
 * device). The best of reps steps after one warm-up step, wall ms, in *ms. */
int train_bench_step(sam_t *sam, const train_set_t *ts, adapter_t *a, int batch, int reps,
                     kn_device_t device, double *ms, err_t *err);

#endif
