/* train.c — adapter training loop, evaluation and the timed step (train.h).
 *
 * Per optimiser step: for each sample of the batch (in order) draw a prompt, run the frozen
 * decoder with the hq token and the adapter head (adapter_forward, train=1), pick the
 * uncertain points, take BCE + Dice on them, scatter the point gradients back to the
 * 256×256 map and back-propagate into one flat gradient; then one Adam step over all
 * adapter parameters. Every random draw comes from one splitmix64 stream seeded by
 * cfg.seed, in a fixed order, so a run is reproducible for a fixed thread count.
 *
 * One recipe loop for both devices: the seam is the trainer (sample_step, trainer_zero_grad,
 * trainer_adam, trainer_fetch_losses). On the CPU it is the code below; with cfg.device
 * KN_DEV_CUDA the per-sample forward + loss + backward and the Adam update run on the GPU
 * (train_cuda.h) while prompts and candidate points are still drawn here from the same
 * host stream, so both devices see the same prompts and points. The GPU keeps the losses
 * on the device until the epoch ends (per-sample loss slots, one download per epoch).
 */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kn.h"
#include "postprocess.h"
#include "train_cuda.h"

#define LR SAM_LOWRES
#define LRN (LR * LR)
#define EMBN (SAM_EMB_C * SAM_EMB * SAM_EMB)
#define EN (SAM_EMB * SAM_EMB)
/* Adam constants of the recipe (train.h) */
#define ADAM_B1 0.9f
#define ADAM_B2 0.999f
#define ADAM_EPS 1e-8f

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- samples --------------------------------------------------------------------------- */

train_set_t *train_set_new(int early_c, err_t *err)
{
    train_set_t *t = calloc(1, sizeof *t);
    if (!t) err_set(err, ERR_NOMEM, "train_set_new: out of memory");
    else t->early_c = early_c;
    return t;
}

void train_set_destroy(train_set_t **tp)
{
    if (!tp || !*tp) return;
    train_set_t *t = *tp;
    for (int i = 0; i < t->n; i++) {
        free(t->s[i].emb);
        free(t->s[i].early);
        free(t->s[i].gt);
        free(t->s[i].mask);
        free(t->s[i].taps);
    }
    free(t->s);
    free(t);
    *tp = NULL;
}

/* Soft GT map in the padded frame (train.h). */
static void gt_map(const uint8_t *mask, const prep_info_t *in, float *gt)
{
    int w = in->w, h = in->h, nw = in->new_w, nh = in->new_h;
    for (int i = 0; i < LR; i++)
        for (int j = 0; j < LR; j++) {
            int cnt = 0;
            for (int a = 0; a < 4; a++) {
                int Y = 4 * i + a;
                if (Y >= nh) break;
                int y = (int)floor((Y + 0.5) * h / nh);
                if (y >= h) y = h - 1;
                for (int b = 0; b < 4; b++) {
                    int X = 4 * j + b;
                    if (X >= nw) break;
                    int x = (int)floor((X + 0.5) * w / nw);
                    if (x >= w) x = w - 1;
                    cnt += mask[(size_t)y * w + x] != 0;
                }
            }
            gt[i * LR + j] = cnt / 16.0f;
        }
}

int train_set_add_features(train_set_t *ts, const prep_info_t *info, const float *emb,
                           const float *early, const uint8_t *mask, err_t *err)
{
    size_t hw = (size_t)info->h * info->w;
    int x0 = info->w, y0 = info->h, x1 = -1, y1 = -1;
    for (int y = 0; y < info->h; y++)
        for (int x = 0; x < info->w; x++)
            if (mask[(size_t)y * info->w + x]) {
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                if (y > y1) y1 = y;
            }
    if (x1 < 0) return err_set(err, ERR_INVALID, "training sample %d has an empty mask", ts->n);
    if (ts->n == ts->cap) {
        int cap = ts->cap ? ts->cap * 2 : 16;
        train_sample_t *ns = realloc(ts->s, sizeof *ns * (size_t)cap);
        if (!ns) return err_set(err, ERR_NOMEM, "train_set: out of memory");
        ts->s = ns;
        ts->cap = cap;
    }
    train_sample_t *s = &ts->s[ts->n];
    memset(s, 0, sizeof *s);
    s->info = *info;
    s->emb = malloc(sizeof(float) * EMBN);
    s->early = malloc(sizeof(float) * (size_t)ts->early_c * EN);
    s->gt = malloc(sizeof(float) * LRN);
    s->mask = malloc(hw);
    if (!s->emb || !s->early || !s->gt || !s->mask) {
        free(s->emb);
        free(s->early);
        free(s->gt);
        free(s->mask);
        return err_set(err, ERR_NOMEM, "train_set: out of memory for a sample");
    }
    memcpy(s->emb, emb, sizeof(float) * EMBN);
    memcpy(s->early, early, sizeof(float) * (size_t)ts->early_c * EN);
    memcpy(s->mask, mask, hw);
    gt_map(mask, info, s->gt);
    s->box[0] = (float)x0;
    s->box[1] = (float)y0;
    s->box[2] = (float)(x1 + 1);
    s->box[3] = (float)(y1 + 1);
    ts->n++;
    return 0;
}

int train_set_add(train_set_t *ts, sam_t *sam, const image_t *img, const uint8_t *mask,
                  err_t *err)
{
    if (sam_early_channels(sam) != ts->early_c)
        return err_set(err, ERR_INVALID, "train_set_add: model has %d early channels, set %d",
                       sam_early_channels(sam), ts->early_c);
    sam_embedding_t e = {0};
    float *taps = NULL;
    int rc;
    if (ts->keep_taps) {
        size_t nt = sam_taps_floats(sam);
        taps = nt ? malloc(sizeof(float) * nt) : NULL;
        rc = !nt ? err_set(err, ERR_UNSUPPORTED, "train_set_add: the %s encoder has no selector",
                           sam_encoder_name(sam))
             : !taps ? err_set(err, ERR_NOMEM, "train_set_add: out of memory for the taps")
                     : sam_encode_taps(sam, img, &e, taps, err);
    } else {
        rc = sam_encode(sam, img, &e, NULL, 1, err);
    }
    if (!rc) rc = train_set_add_features(ts, &e.info, e.emb, e.early, mask, err);
    if (!rc && taps) {
        ts->s[ts->n - 1].taps = taps;
        taps = NULL;
    }
    free(taps);
    sam_embedding_free(&e);
    return rc;
}

void train_set_keep_taps(train_set_t *ts) { ts->keep_taps = 1; }

/* ---- prompts ---------------------------------------------------------------------------- */

enum { PR_BOX, PR_POINTS, PR_MASK, PR_NONE };

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* GT box of s in the 1024 frame (2 corner points). */
static int box_points(const train_sample_t *s, sam_point_t *pts, const float jit[4])
{
    const prep_info_t *in = &s->info;
    float sx = (float)in->new_w / in->w, sy = (float)in->new_h / in->h;
    float b[4] = {s->box[0] * sx, s->box[1] * sy, s->box[2] * sx, s->box[3] * sy};
    if (jit) {
        float bw = b[2] - b[0], bh = b[3] - b[1];
        for (int k = 0; k < 4; k++) {
            float side = (k % 2) ? bh : bw;
            float m = fminf(0.1f * side, 20.0f);
            b[k] += jit[k] * m;
        }
    }
    b[0] = clampf(b[0], 0, (float)in->new_w);
    b[2] = clampf(b[2], 0, (float)in->new_w);
    b[1] = clampf(b[1], 0, (float)in->new_h);
    b[3] = clampf(b[3], 0, (float)in->new_h);
    if (b[0] > b[2]) { float t = b[0]; b[0] = b[2]; b[2] = t; }
    if (b[1] > b[3]) { float t = b[1]; b[1] = b[3]; b[3] = t; }
    pts[0] = (sam_point_t){b[0], b[1], 2.0f};
    pts[1] = (sam_point_t){b[2], b[3], 3.0f};
    return 2;
}

/* Draws a prompt; returns the point count, fills pts and (for PR_MASK) mask_in, *kind. */
static int draw_prompt(const train_sample_t *s, const train_cfg_t *c, uint64_t *rng,
                       sam_point_t *pts, float *mask_in, int *kind, int *fg_idx)
{
    float u = kn_rng_uniform(rng);
    if (u < c->share_box) {
        *kind = PR_BOX;
        float jit[4];
        for (int k = 0; k < 4; k++) jit[k] = 2.0f * kn_rng_uniform(rng) - 1.0f;
        return box_points(s, pts, jit);
    }
    if (u < c->share_box + c->share_points) {
        *kind = PR_POINTS;
        int nfg = 0;
        float thr = 0.5f;
        for (int p = 0; p < LRN; p++) nfg += s->gt[p] >= thr;
        if (!nfg) {
            thr = 1e-6f;
            for (int p = 0; p < LRN; p++) nfg += s->gt[p] >= thr;
        }
        int k = 1 + (int)(kn_rng_uniform(rng) * 10);
        if (k > 10) k = 10;
        int m = 0;
        for (int p = 0; p < LRN; p++)
            if (s->gt[p] >= thr) fg_idx[m++] = p;
        for (int i = 0; i < k; i++) {
            int q = fg_idx[(int)(kn_rng_uniform(rng) * nfg) % nfg];
            float ox = kn_rng_uniform(rng), oy = kn_rng_uniform(rng);
            float x = 4.0f * (q % LR) + 4.0f * ox, y = 4.0f * (q / LR) + 4.0f * oy;
            pts[i] = (sam_point_t){clampf(x, 0, (float)s->info.new_w),
                                   clampf(y, 0, (float)s->info.new_h), 1.0f};
        }
        pts[k] = (sam_point_t){0, 0, -1.0f};
        return k + 1;
    }
    if (u < c->share_box + c->share_points + c->share_mask) {
        *kind = PR_MASK;
        int sx = (int)(kn_rng_uniform(rng) * 9) - 4, sy = (int)(kn_rng_uniform(rng) * 9) - 4;
        for (int i = 0; i < LR; i++)
            for (int j = 0; j < LR; j++) {
                int si = i - sy, sj = j - sx;
                float g = (si >= 0 && si < LR && sj >= 0 && sj < LR) ? s->gt[si * LR + sj] : 0.0f;
                mask_in[i * LR + j] = (g >= 0.5f ? 8.0f : -8.0f) + 2.0f * (2.0f * kn_rng_uniform(rng) - 1.0f);
            }
        pts[0] = (sam_point_t){0, 0, -1.0f};
        return 1;
    }
    *kind = PR_NONE;
    pts[0] = (sam_point_t){0, 0, -1.0f};
    return 1;
}

/* ---- training ----------------------------------------------------------------------------- */

void train_cfg_default(train_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 8;
    c->batch = 4;
    c->lr = 1e-5f;
    c->decay_epoch = -1;
    c->points = 12544;
    c->oversample = 3;
    c->importance = 0.75f;
    c->share_box = 0.4f;
    c->share_points = 0.3f;
    c->share_mask = 0.1f;
    c->fixed_loss = 1;
    c->tf32 = 1;
}

/* The backend seam: gpu != NULL runs the step on the GPU (train_cuda.h), else on the CPU
 * (dec, w, grad, m, v and the point buffers). mask_in, fg_idx (prompt drawing) and loss
 * (per-sample weighted losses of the epoch, by slot) serve both. */
typedef struct trainer {
    train_cuda_t *gpu;
    samdec_t *dec;
    adp_work_t *w;
    float *grad, *m, *v;
    float *logits, *dmap, *mask_in, *pts, *lp, *tp, *dlp, *scr, *loss;
    int *fg_idx;
    int P, slots;
} trainer_t;

static void trainer_free(trainer_t *t)
{
    train_cuda_destroy(&t->gpu);
    samdec_destroy(&t->dec);
    adp_work_destroy(&t->w);
    float *b[] = {t->grad, t->m, t->v, t->logits, t->dmap, t->mask_in, t->pts, t->lp, t->tp,
                  t->dlp, t->scr, t->loss};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) free(b[i]);
    free(t->fg_idx);
    memset(t, 0, sizeof *t);
}

/* A trainer on `device` for P points; slots = loss slots per epoch. The GPU trainer copies
 * ts (every sample) and a's parameters to the device. */
static int trainer_init(trainer_t *t, sam_t *sam, const train_set_t *ts, const adapter_t *a,
                        int P, int oversample, int slots, kn_device_t device, int tf32,
                        err_t *err)
{
    memset(t, 0, sizeof *t);
    t->P = P;
    t->slots = slots;
    t->mask_in = malloc(sizeof(float) * LRN);
    t->fg_idx = malloc(sizeof(int) * LRN);
    t->loss = malloc(sizeof(float) * (size_t)slots);
    if (!t->mask_in || !t->fg_idx || !t->loss) {
        trainer_free(t);
        return err_set(err, ERR_NOMEM, "train: out of memory");
    }
    if (device == KN_DEV_CUDA) {
        t->gpu = train_cuda_new(sam, ts, a, P, slots, tf32, err);
        if (!t->gpu) {
            trainer_free(t);
            return err ? err->code : ERR_DEVICE;
        }
        return 0;
    }
    t->dec = samdec_new(sam_weights(sam), err);
    if (!t->dec) return err ? err->code : ERR_NOMEM;
    t->w = adp_work_new(a->early_c, err);
    if (!t->w) {
        trainer_free(t);
        return err ? err->code : ERR_NOMEM;
    }
    t->grad = calloc(a->size, sizeof(float));
    t->m = calloc(a->size, sizeof(float));
    t->v = calloc(a->size, sizeof(float));
    t->logits = malloc(sizeof(float) * LRN);
    t->dmap = malloc(sizeof(float) * LRN);
    t->pts = malloc(sizeof(float) * 2 * (size_t)P);
    t->lp = malloc(sizeof(float) * (size_t)P);
    t->tp = malloc(sizeof(float) * (size_t)P);
    t->dlp = malloc(sizeof(float) * (size_t)P);
    t->scr = malloc(sizeof(float) * kn_uncertain_points_scratch(P, oversample));
    if (!t->grad || !t->m || !t->v || !t->logits || !t->dmap || !t->pts || !t->lp || !t->tp ||
        !t->dlp || !t->scr) {
        trainer_free(t);
        return err_set(err, ERR_NOMEM, "train: out of memory");
    }
    return 0;
}

/* Forward + loss + backward of sample i of ts into the gradient; the weighted loss goes to
 * t->loss[slot] (on the GPU: to the device slot, see trainer_fetch_losses). */
static int sample_step(trainer_t *t, const adapter_t *a, const train_set_t *ts, int i,
                       const train_cfg_t *c, uint64_t *rng, float weight, int slot, err_t *err)
{
    const train_sample_t *s = &ts->s[i];
    sam_point_t pts[16];
    int kind;
    int n = draw_prompt(s, c, rng, pts, t->mask_in, &kind, t->fg_idx);
    if (t->gpu)
        return train_cuda_sample(t->gpu, i, pts, n, kind == PR_MASK ? t->mask_in : NULL,
                                 c->oversample, c->importance, rng, weight, slot, err);
    int rc = adapter_forward(a, t->dec, t->w, s->emb, s->early, pts, n,
                             kind == PR_MASK ? t->mask_in : NULL, t->logits, NULL, NULL, 1, err);
    if (rc) return rc;
    if (kn_uncertain_points(t->pts, t->logits, LR, LR, t->P, c->oversample, c->importance, rng,
                            t->scr))
        return err_set(err, ERR_INVALID, "train: bad point sampling settings");
    kn_point_sample_fwd(t->lp, t->logits, t->pts, 1, LR, LR, t->P);
    kn_point_sample_fwd(t->tp, s->gt, t->pts, 1, LR, LR, t->P);
    t->loss[slot] = kn_bce_dice_loss(t->dlp, NULL, t->lp, t->tp, t->P, weight);
    memset(t->dmap, 0, sizeof(float) * LRN);
    kn_point_sample_bwd(t->dmap, t->dlp, t->pts, 1, LR, LR, t->P);
    return adapter_backward(a, t->dec, t->w, t->dmap, t->grad, err);
}

static int trainer_zero_grad(trainer_t *t, const adapter_t *a, err_t *err)
{
    if (t->gpu) return train_cuda_zero_grad(t->gpu, err);
    memset(t->grad, 0, sizeof(float) * a->size);
    return 0;
}

/* One Adam step (1-based) over all parameters; the GPU updates its own copy (trainer_sync_to
 * brings it back into a). */
static int trainer_adam(trainer_t *t, adapter_t *a, float lr, int step, err_t *err)
{
    if (t->gpu) return train_cuda_adam(t->gpu, lr, ADAM_B1, ADAM_B2, ADAM_EPS, 0.0f, step, err);
    kn_adam_step(a->data, t->grad, t->m, t->v, a->size, lr, ADAM_B1, ADAM_B2, ADAM_EPS, 0.0f,
                 step);
    return 0;
}

/* t->loss[0..n-1] valid on return (the GPU's one wait + download per epoch). */
static int trainer_fetch_losses(trainer_t *t, int n, err_t *err)
{
    return t->gpu ? train_cuda_losses(t->gpu, t->loss, n, err) : 0;
}

/* Waits for the queued step (the GPU's work is asynchronous; the CPU's is done). */
static int trainer_wait(trainer_t *t, err_t *err)
{
    return t->gpu ? train_cuda_sync(t->gpu, err) : 0;
}

/* The trained parameters into a (the CPU trains a in place). */
static int trainer_sync_to(trainer_t *t, adapter_t *a, err_t *err)
{
    return t->gpu ? train_cuda_download(t->gpu, a, err) : 0;
}

int train_adapter(sam_t *sam, const train_set_t *ts, adapter_t *a, const train_cfg_t *c,
                  train_stats_t *stats, err_t *err)
{
    if (!ts || ts->n < 1) return err_set(err, ERR_INVALID, "train: no training samples");
    if (c->epochs < 1 || c->batch < 1 || c->points < 1)
        return err_set(err, ERR_RANGE, "train: epochs, batch and points must be >= 1");
    if (ts->early_c != a->early_c)
        return err_set(err, ERR_INVALID, "train: samples have %d early channels, adapter %d",
                       ts->early_c, a->early_c);
    if (c->device != KN_DEV_CPU && c->device != KN_DEV_CUDA)
        return err_set(err, ERR_INVALID, "train: unknown device %d", (int)c->device);
    trainer_t t;
    int rc = trainer_init(&t, sam, ts, a, c->points, c->oversample, ts->n, c->device, c->tf32,
                          err);
    if (rc) return rc;
    int *order = malloc(sizeof(int) * (size_t)ts->n);
    if (!order) {
        trainer_free(&t);
        return err_set(err, ERR_NOMEM, "train: out of memory");
    }
    train_stats_t st = {0};
    if (c->fixed_loss && (rc = train_fixed_loss(sam, ts, a, &st.fixed_before, err))) {
        trainer_free(&t);
        free(order);
        return rc;
    }
    uint64_t rng = c->seed * 0x9E3779B97F4A7C15ULL + 0x747261696eULL;
    int decay = c->decay_epoch >= 0 ? c->decay_epoch : (2 * c->epochs) / 3;
    int per_epoch = (ts->n + c->batch - 1) / c->batch;
    int total = per_epoch * c->epochs, step = 0;
    double t0 = now_s(), step_time = 0;
    for (int ep = 0; ep < c->epochs && !rc; ep++) {
        float lr = ep >= decay ? c->lr * 0.1f : c->lr;
        for (int i = 0; i < ts->n; i++) order[i] = i;
        for (int i = ts->n - 1; i > 0; i--) { /* Fisher–Yates */
            int j = (int)(kn_rng_uniform(&rng) * (i + 1));
            if (j > i) j = i;
            int x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        double ep_loss = 0;
        for (int b0 = 0; b0 < ts->n && !rc; b0 += c->batch) {
            double ts0 = now_s();
            int nb = ts->n - b0 < c->batch ? ts->n - b0 : c->batch;
            rc = trainer_zero_grad(&t, a, err);
            for (int k = 0; k < nb && !rc; k++)
                rc = sample_step(&t, a, ts, order[b0 + k], c, &rng, 1.0f / nb, b0 + k, err);
            if (rc) break;
            step++;
            float lr_s = c->warmup_steps > 0 && step < c->warmup_steps
                             ? lr * (float)step / (float)c->warmup_steps
                             : lr;
            rc = trainer_adam(&t, a, lr_s, step, err);
            if (!rc) rc = trainer_wait(&t, err); /* step_time is the device's, too */
            step_time += now_s() - ts0;
        }
        if (!rc) rc = trainer_fetch_losses(&t, ts->n, err);
        if (rc) break;
        for (int b0 = 0; b0 < ts->n; b0 += c->batch) { /* sample order, as the steps ran */
            int nb = ts->n - b0 < c->batch ? ts->n - b0 : c->batch;
            for (int k = 0; k < nb; k++) ep_loss += t.loss[b0 + k] * nb;
        }
        ep_loss /= ts->n;
        if (ep == 0) st.first_loss = ep_loss;
        st.last_loss = ep_loss;
        if (c->progress) {
            double el = now_s() - t0;
            train_progress_t p = {.epoch = ep + 1, .epochs = c->epochs, .step = step,
                                  .steps = total, .loss = ep_loss,
                                  .samples_per_s = (double)(ep + 1) * ts->n / el,
                                  .eta_s = el / step * (total - step), .lr = lr};
            c->progress(&p, c->ctx);
        }
    }
    st.steps = step;
    st.seconds = now_s() - t0;
    if (!rc) rc = trainer_sync_to(&t, a, err);
    if (!rc && c->fixed_loss) rc = train_fixed_loss(sam, ts, a, &st.fixed_after, err);
    st.step_ms = step ? step_time / step * 1e3 : 0;
    if (stats) *stats = st;
    free(order);
    trainer_free(&t);
    return rc;
}

int train_bench_step(sam_t *sam, const train_set_t *ts, adapter_t *a, int batch, int reps,
                     kn_device_t device, double *ms, err_t *err)
{
    if (!ts || ts->n < 1 || batch < 1 || reps < 1)
        return err_set(err, ERR_INVALID, "train_bench_step: no samples, batch or reps < 1");
    trainer_t t;
    train_cfg_t c;
    train_cfg_default(&c);
    c.share_box = 1.0f; /* box prompts: the paper protocol */
    int rc = trainer_init(&t, sam, ts, a, c.points, c.oversample, batch, device, c.tf32, err);
    if (rc) return rc;
    uint64_t rng = 1;
    double best = 1e30;
    for (int r = 0; r < reps + 1 && !rc; r++) { /* the first rep warms up */
        double t0 = now_s();
        rc = trainer_zero_grad(&t, a, err);
        for (int k = 0; k < batch && !rc; k++)
            rc = sample_step(&t, a, ts, k % ts->n, &c, &rng, 1.0f / batch, k, err);
        if (!rc) rc = trainer_adam(&t, a, 1e-3f, r + 1, err);
        if (!rc) rc = trainer_wait(&t, err);
        double dt = (now_s() - t0) * 1e3;
        if (r > 0 && dt < best) best = dt;
    }
    if (!rc) rc = trainer_sync_to(&t, a, err);
    *ms = best;
    trainer_free(&t);
    return rc;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

int train_fixed_loss(sam_t *sam, const train_set_t *ts, const adapter_t *a, double *loss,
                     err_t *err)
{
    trainer_t t;
    train_cfg_t c;
    train_cfg_default(&c);
    int rc = trainer_init(&t, sam, ts, a, c.points, c.oversample, 1, KN_DEV_CPU, 0, err);
    if (rc) return rc;
    double sum = 0;
    for (int i = 0; i < ts->n && !rc; i++) {
        const train_sample_t *s = &ts->s[i];
        sam_point_t pts[2];
        int n = box_points(s, pts, NULL);
        rc = adapter_forward(a, t.dec, t.w, s->emb, s->early, pts, n, NULL, t.logits, NULL, NULL,
                             0, err);
        if (rc) break;
        uint64_t rng = 0x66697865646c6fULL + (uint64_t)i;
        kn_uncertain_points(t.pts, t.logits, LR, LR, t.P, c.oversample, c.importance, &rng, t.scr);
        kn_point_sample_fwd(t.lp, t.logits, t.pts, 1, LR, LR, t.P);
        kn_point_sample_fwd(t.tp, s->gt, t.pts, 1, LR, LR, t.P);
        sum += kn_bce_dice_loss(NULL, NULL, t.lp, t.tp, t.P, 1.0f);
    }
    if (!rc) *loss = ts->n ? sum / ts->n : 0;
    trainer_free(&t);
    return rc;
}

int train_eval(sam_t *sam, const train_set_t *ts, const adapter_t *a, int prompt, double *miou,
               double *per_sample, err_t *err)
{
    samdec_t *dec = samdec_new(sam_weights(sam), err);
    if (!dec) return err ? err->code : ERR_NOMEM;
    adp_work_t *w = a ? adp_work_new(a->early_c, err) : NULL;
    float *lowres = malloc(sizeof(float) * SAM_NMASK * LRN);
    float *logits = malloc(sizeof(float) * LRN);
    int rc = 0;
    if ((a && !w) || !lowres || !logits) rc = err_set(err, ERR_NOMEM, "eval: out of memory");
    double sum = 0;
    for (int i = 0; i < ts->n && !rc; i++) {
        const train_sample_t *s = &ts->s[i];
        sam_point_t pts[2];
        int n = prompt == TRAIN_PROMPT_BOX ? box_points(s, pts, NULL) : 1;
        if (prompt != TRAIN_PROMPT_BOX) pts[0] = (sam_point_t){0, 0, -1.0f};
        float iou[SAM_NMASK];
        const float *lr_map;
        if (a) {
            rc = adapter_forward(a, dec, w, s->emb, s->early, pts, n, NULL, logits, lowres, iou,
                                 0, err);
            lr_map = logits;
        } else {
            rc = samdec_forward(dec, s->emb, pts, n, NULL, lowres, iou, err);
            lr_map = lowres + (size_t)samdec_pick_single(iou, n) * LRN;
        }
        if (rc) break;
        int h = s->info.h, wd = s->info.w;
        float *full = malloc(sizeof(float) * (size_t)h * wd);
        if (!full) {
            rc = err_set(err, ERR_NOMEM, "eval: out of memory");
            break;
        }
        rc = post_upscale(lr_map, LR, s->info.new_h, s->info.new_w, h, wd, full, err);
        long long inter = 0, uni = 0;
        for (size_t p = 0; p < (size_t)h * wd; p++) {
            int pr = full[p] > 0, g = s->mask[p] != 0;
            inter += pr && g;
            uni += pr || g;
        }
        free(full);
        double v = uni ? (double)inter / uni : 1.0;
        if (per_sample) per_sample[i] = v;
        sum += v;
    }
    if (!rc) *miou = ts->n ? sum / ts->n : 0;
    free(lowres);
    free(logits);
    adp_work_destroy(&w);
    samdec_destroy(&dec);
    return rc;
}
