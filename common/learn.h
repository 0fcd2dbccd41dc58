/* learn.h — the MoDA engine: what "learn a domain" and "evaluate a bank" mean, in one place.
 *
 * Used by `moda train-domain`, `moda cl-bench` and the moda-train service, so all three
 * learn and measure exactly the same way (../shared/design/MODA.md, docs/moda.md):
 *
 *   learn_cfg_t c; learn_cfg_default(&c);
 *   train_set_t *ts = train_set_new(sam_early_channels(sam), &err);   // + train_set_add ...
 *   learn_replay_from_dataset(ds, c.replay, &rp, &nrp, &err);
 *   learn_add_domain(sam, bank, "magtile", ts, rp, nrp, metrics, nm, &c, &res, &err);
 *   learn_eval_bank(sam, bank, "magtile", test_set, TRAIN_PROMPT_BOX, &ev, &err);
 *
 * learn_add_domain = a fresh adapter (zero-shot start, MODA.md point 3) trained on the
 * domain's samples only; put into the bank (other domains' tensors stay bit-identical);
 * then the selector is retrained from scratch on every domain's replay buffer
 * (learn_retrain_selector). A bank with one domain carries no selector (nothing to choose).
 *
 * Selection needs the selector taps of an image (selector.h): test sets used with
 * learn_eval_bank on a bank of ≥ 2 domains must be built with train_set_keep_taps.
 */
#ifndef MODA_LEARN_H
#define MODA_LEARN_H

#include "adapter_bank.h"
#include "dataset.h"
#include "err.h"
#include "sam.h"
#include "selector.h"
#include "train.h"

typedef struct learn_cfg {
    train_cfg_t train; /* adapter recipe (train_cfg_default) */
    int replay;        /* replay samples kept per domain (ABANK_DEFAULT_REPLAY = 10) */
    int sel_epochs;    /* selector: 10 epochs */
    int sel_batch;     /* 4 */
    float sel_lr;      /* 1e-3 */
    uint64_t sel_seed; /* 0 */
    int sel_keys_only; /* 0; 1 = only the linear keys learn (the public code's behaviour) */
    /* progress lines of the selector stage ("selector: ..."), or NULL (library code never
     * prints: the caller decides) */
    void (*note)(const char *line, void *ctx);
    void *ctx;
} learn_cfg_t;

void learn_cfg_default(learn_cfg_t *c);

/* Result of learn_add_domain. */
typedef struct learn_result {
    train_stats_t train;
    selector_stats_t sel; /* zeroed when no selector was trained (one domain) */
    int sel_trained;
} learn_result_t;

/* k replay samples from ds's train split, spread evenly (index i·n/k): the original image
 * and mask file bytes. *out caller owns (learn_replay_free). k > n takes all; k = 0 none. */
int learn_replay_from_dataset(const dataset_t *ds, int k, abank_replay_t **out, int *n,
                              err_t *err);
void learn_replay_free(abank_replay_t **r, int n);

/* Adds split `which` (DS_TRAIN / DS_TEST) of ds to ts, one encoder pass per image (with the
 * selector taps when ts keeps them). max_n > 0: only max_n images, spread evenly over the
 * split (index i·n/max_n), so a short run still sees every kind of image. note (may be
 * NULL) gets a progress line every 10 images. Errors name the sample. */
int learn_load_split(sam_t *sam, const dataset_t *ds, int which, int max_n, train_set_t *ts,
                     void (*note)(const char *line, void *ctx), void *ctx, err_t *err);

/* Trains a fresh adapter for `name` on every sample of ts (cfg->train; seed included),
 * puts it into bank with the replay blobs (copied) and metrics (copied; the training
 * statistics are appended as train_* metrics), then retrains the selector when the bank has
 * ≥ 2 domains. res may be NULL. On failure the bank may hold the new domain without a fresh
 * selector: callers that must not publish such a bank discard it. */
int learn_add_domain(sam_t *sam, abank_t *bank, const char *name, const train_set_t *ts,
                     const abank_replay_t *replay, int n_replay, const abank_metric_t *metrics,
                     int n_metrics, const learn_cfg_t *cfg, learn_result_t *res, err_t *err);

/* A fresh selector for the bank's current domains, trained on their replay buffers
 * (decoded and encoded here: one encoder pass per image), saved into the bank. With fewer
 * than 2 domains any selector is removed and *st zeroed. ERR_UNSUPPORTED for a model
 * without selector support (ViT encoders). st may be NULL. */
int learn_retrain_selector(sam_t *sam, abank_t *bank, const learn_cfg_t *cfg,
                           selector_stats_t *st, err_t *err);

/* Evaluation of a bank on one domain's labelled set (per-image IoU at the original
 * resolution, logits > 0, as train_eval; prompt TRAIN_PROMPT_BOX or TRAIN_PROMPT_AUTO). */
typedef struct learn_eval {
    double iou;        /* mean IoU, each image segmented by the adapter the selector picks */
    double oracle_iou; /* mean IoU with `domain`'s own adapter; -1 when not in the bank */
    double sel_acc;    /* share of images for which the selector picked `domain`; -1 when
                        * `domain` is not in the bank */
    int n;             /* images */
} learn_eval_t;

/* domain: the true domain of ts (may be NULL or absent from the bank: then only iou is
 * meaningful). A one-domain bank uses its adapter for every image (sel_acc 1 when it is
 * `domain`). A bank without any domain: ERR_STATE. per_image (may be NULL) receives ts->n
 * selected-adapter IoUs; picked (may be NULL) ts->n chosen domain indices. */
int learn_eval_bank(sam_t *sam, const abank_t *bank, const char *domain, const train_set_t *ts,
                    int prompt, learn_eval_t *out, double *per_image, int *picked, err_t *err);

#endif
