/* workers.c — moda-infer's worker pool: a bounded drop-oldest job queue, n threads each with
 * its own sam_t (a sam_t is used by one thread at a time, sam.h), auto-mode segmentation.
 *
 * Segmentation of one frame (segment_auto):
 *   bank loaded:  encoder (+ early feature; + the selector taps of the same pass when the
 *                 bank has >= 2 domains) -> domain choice -> that domain's adapter on the
 *                 frozen decoder with only SAM's padding point (the promptless mode the
 *                 adapters are trained for) -> logits -> mask.
 *                 Domain choice is pick_domain() = bankrun_choose (common/bankrun.h, the
 *                 same rule as `moda segment --bank`): one domain -> it, probability 1;
 *                 several -> the bank's selector (loaded per worker when the bank version
 *                 changes), probability = its softmax top. A multi-domain bank without a
 *                 usable selector serves domain 0 with probability 0 (so every frame is an
 *                 UNKNOWN_DOMAIN hard case) and logs the reason once per version.
 * Thread budget: `worker_threads` > 0 gives each worker that many CPU threads for its own
 * ops (kn_set_thread_local_threads), so several workers do not oversubscribe the cores.
 *   interactive (JOB_SEGMENT): the image embedding from the cache (keyed by the sha256 of
 *                 the image bytes, LRU) or encoded and cached, then the request's points/box.
 *   no bank:      zero-shot SAM with a box prompt over the whole image (inset 2%): the best
 *                 predicted-IoU mask; domain "", selector probability 0.
 * Device (`device` key, device.h): with CUDA each worker has its own GPU encoder (enc_cuda.h:
 * embedding, and the early feature when a bank is loaded) and its bankrun runs on the GPU
 * (bankrun_use_cuda: the decoder, the domain's adapter head, and the zero-shot and
 * interactive SAM decodes), reading the encoder's device embedding (enc_cuda_emb_dev) instead
 * of uploading it again. The selector stays on the CPU: a frame whose bank needs the
 * selector taps is encoded on the CPU (sam_encode_taps: the taps are not on the GPU), and its
 * embedding is uploaded for the GPU decoder. Cached embeddings (interactive) are uploaded.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "adapter.h"
#include "adapter_bank.h"
#include "bankrun.h"
#include "infer.h"
#include "kn.h"
#include "log.h"
#include "msg.h"
#include "postprocess.h"
#include "rle.h"
#include "enc_cuda.h"
#include "sam.h"
#include "wts.h"

typedef struct cache_entry {
    char id[65];
    prep_info_t info;
    float *emb; /* [256,64,64], owned */
    uint64_t used;
} cache_entry_t;

typedef struct worker {
    pool_t *pool;
    int id;
    pthread_t th;
    int started;
    sam_t *sam;
    enc_cuda_t *gpu;     /* the GPU encoder (device cuda), else NULL */
    float *x;            /* its preprocessed input [3, 1024, 1024] */
    bankrun_t *br;    /* domain choice + adapter run (selector loaded per bank version) */
    float *taps;      /* selector taps of one frame, allocated on the first multi-domain bank */
    uint64_t warned;  /* bank version whose selector problem was logged */
    void *done;       /* inproc PUSH (this thread only) */
} worker_t;

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    job_t *head, *tail;
    int depth, cap;
    job_t *done_head, *done_tail;
    int n;
    int threads; /* per-worker CPU budget, 0 = the process-wide count */
    worker_t *w;
    swap_t *banks;
    char base_hash[65];
    int early_c;
    pthread_mutex_t cmu; /* guards the embedding cache */
    int cache_n;
    cache_entry_t *cache;
    uint64_t cache_clock;
};

#define EMB_FLOATS ((size_t)SAM_EMB_C * SAM_EMB * SAM_EMB)

/* Copies a cached embedding into out (caller frees with sam_embedding_free): 1 hit, 0 miss. */
static int cache_get(pool_t *p, const char *id, sam_embedding_t *out)
{
    int hit = 0;
    pthread_mutex_lock(&p->cmu);
    for (int i = 0; i < p->cache_n && !hit; i++) {
        cache_entry_t *c = &p->cache[i];
        if (!c->emb || strcmp(c->id, id)) continue;
        memset(out, 0, sizeof *out);
        if ((out->emb = malloc(sizeof(float) * EMB_FLOATS))) {
            memcpy(out->emb, c->emb, sizeof(float) * EMB_FLOATS);
            out->info = c->info;
            c->used = ++p->cache_clock;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&p->cmu);
    return hit;
}

/* Keeps a copy of emb under id, replacing the least recently used entry. */
static void cache_put(pool_t *p, const char *id, const sam_embedding_t *emb)
{
    float *copy = malloc(sizeof(float) * EMB_FLOATS);
    if (!copy) return;
    memcpy(copy, emb->emb, sizeof(float) * EMB_FLOATS);
    pthread_mutex_lock(&p->cmu);
    cache_entry_t *v = &p->cache[0];
    for (int i = 0; i < p->cache_n; i++) {
        if (p->cache[i].emb && !strcmp(p->cache[i].id, id)) { v = &p->cache[i]; break; }
        if (p->cache[i].used < v->used) v = &p->cache[i];
    }
    free(v->emb);
    snprintf(v->id, sizeof v->id, "%s", id);
    v->emb = copy;
    v->info = emb->info;
    v->used = ++p->cache_clock;
    pthread_mutex_unlock(&p->cmu);
}

void job_free(job_t *j)
{
    if (!j) return;
    free(j->raw);
    image_destroy(&j->img);
    free(j->rle);
    msg_free(&j->req);
    free(j);
}

/* Domain choice from the bank (bankrun.h); taps NULL when the bank cannot use them. */
static int pick_domain(worker_t *w, const abank_t *b, uint64_t version, const float *taps,
                       int *d, float *prob, err_t *err)
{
    bankrun_choice_t c;
    err_t e = {0};
    if (b->n_domains >= 2 && bankrun_can_choose(w->br, &e)) {
        if (w->warned != version)
            log_warn("event=selector_unusable worker=%d bank_version=%llu msg=\"%s\"", w->id,
                     (unsigned long long)version, e.msg);
        w->warned = version;
        *d = 0;
        *prob = 0.0f;
        return 0;
    }
    int rc = bankrun_choose(w->br, b, NULL, taps, &c, err);
    if (!rc) {
        *d = c.domain;
        *prob = c.prob;
    }
    return rc;
}

static float stability_of(const float *logits, size_t n)
{
    size_t hi = 0, lo = 0;
    for (size_t i = 0; i < n; i++) {
        hi += logits[i] > 1.0f;
        lo += logits[i] > -1.0f;
    }
    return lo ? (float)hi / (float)lo : 1.0f;
}

static int segment_bank(worker_t *w, job_t *j, const abank_t *b, uint64_t version,
                        const float *taps, const sam_embedding_t *emb, const float *emb_dev,
                        uint8_t *mask, err_t *err)
{
    float prob = 0;
    int d = 0;
    if (b->n_domains < 1) return err_set(err, ERR_STATE, "bank has no domain");
    int rc = pick_domain(w, b, version, taps, &d, &prob, err);
    if (rc) return rc;
    size_t hw = (size_t)emb->info.h * emb->info.w;
    float *logits = malloc(sizeof(float) * SAM_LOWRES * SAM_LOWRES);
    float *full = malloc(sizeof(float) * hw);
    rc = (!logits || !full) ? err_set(err, ERR_NOMEM, "out of memory") : 0;
    float iou = 0;
    if (!rc) rc = bankrun_adapter(w->br, b, d, emb, emb_dev, NULL, 0, logits, &iou, err);
    if (!rc)
        rc = post_upscale(logits, SAM_LOWRES, emb->info.new_h, emb->info.new_w, emb->info.h,
                          emb->info.w, full, err);
    if (!rc) {
        post_threshold(full, (long long)hw, 0.0f, mask);
        j->stability = stability_of(full, hw);
        j->iou = iou;
        j->prob = prob;
        snprintf(j->domain, sizeof j->domain, "%s", b->domains[d].name);
    }
    free(logits);
    free(full);
    return rc;
}

static int segment_zero_shot(worker_t *w, job_t *j, const sam_embedding_t *emb,
                             const float *emb_dev, uint8_t *mask, err_t *err)
{
    const image_t *im = j->img;
    float mx = 0.02f * (float)im->w, my = 0.02f * (float)im->h;
    sam_prompt_t p = {.has_box = 1, .box = {mx, my, (float)im->w - mx, (float)im->h - my}};
    sam_result_t r = {0};
    int rc = bankrun_predict(w->br, emb, emb_dev, &p, &r, err);
    if (!rc) {
        memcpy(mask, r.mask + (size_t)r.best * r.h * r.w, (size_t)r.h * r.w);
        j->iou = r.iou[r.best];
        j->stability = r.stability[r.best];
        j->prob = 0;
        j->domain[0] = 0;
    }
    sam_result_free(&r);
    return rc;
}

/* The encoder pass of one image (no taps): on the worker's GPU encoder when it has one, and
 * then *emb_dev = its device embedding (valid until the next encode), else NULL. */
static int encode(worker_t *w, const image_t *img, sam_embedding_t *emb, int want_early,
                  const float **emb_dev, err_t *err)
{
    *emb_dev = NULL;
    if (!w->gpu) return sam_encode(w->sam, img, emb, NULL, want_early, err);
    int rc = enc_cuda_encode(w->gpu, img, emb, w->x, want_early, err);
    if (!rc) *emb_dev = enc_cuda_emb_dev(w->gpu, 0);
    return rc;
}

static void process(worker_t *w, job_t *j)
{
    err_t err = {0};
    swap_ref_t *ref = swap_acquire(w->pool->banks); /* this frame's bank, whatever swaps */
    const abank_t *bank = ref ? ref->obj : NULL;
    j->bank_version = ref ? ref->version : 0;
    sam_embedding_t emb = {0};
    const float *emb_dev = NULL;
    uint8_t *mask = malloc((size_t)j->img->w * j->img->h);
    int rc = mask ? 0 : err_set(&err, ERR_NOMEM, "out of memory");
    /* taps only when the selector will choose: a bank with >= 2 domains and a usable selector */
    int want_taps = 0;
    if (!rc && bank && !(rc = bankrun_set_bank(w->br, bank, j->bank_version, &err)))
        want_taps = bankrun_needs_taps(bank, NULL) && !bankrun_can_choose(w->br, NULL);
    if (!rc && want_taps && !w->taps && !(w->taps = malloc(sizeof(float) * sam_taps_floats(w->sam))))
        rc = err_set(&err, ERR_NOMEM, "out of memory for the selector taps");
    if (!rc) rc = want_taps ? sam_encode_taps(w->sam, j->img, &emb, w->taps, &err)
                            : encode(w, j->img, &emb, bank != NULL, &emb_dev, &err);
    if (!rc) rc = bank ? segment_bank(w, j, bank, j->bank_version, want_taps ? w->taps : NULL,
                                      &emb, emb_dev, mask, &err)
                       : segment_zero_shot(w, j, &emb, emb_dev, mask, &err);
    if (!rc) rc = rle_encode_string(mask, (uint32_t)j->img->h, (uint32_t)j->img->w, &j->rle, &err);
    swap_release(w->pool->banks, ref);
    j->rc = rc;
    j->mh = j->img->h;
    j->mw = j->img->w;
    if (rc) snprintf(j->errmsg, sizeof j->errmsg, "%s", err.msg);
    sam_embedding_free(&emb);
    free(mask);
    j->done_us = msg_now_us();
}

/* Interactive request: cached embedding (or encode + cache), then the prompt. */
static void process_segment(worker_t *w, job_t *j)
{
    err_t err = {0};
    sam_embedding_t emb = {0};
    sam_result_t r = {0};
    const float *emb_dev = NULL; /* a cached embedding is uploaded by the GPU decoder */
    int rc = 0;
    j->cached = cache_get(w->pool, j->emb_id, &emb);
    if (!j->cached) {
        if (!j->img)
            rc = err_set(&err, ERR_NOTFOUND, "embedding %s is not cached (send the image)", j->emb_id);
        else if (!(rc = encode(w, j->img, &emb, 0, &emb_dev, &err)))
            cache_put(w->pool, j->emb_id, &emb);
    }
    sam_prompt_t pr = {.points = j->points, .n_points = j->n_points, .has_box = j->has_box};
    memcpy(pr.box, j->box, sizeof pr.box);
    if (!rc) rc = bankrun_predict(w->br, &emb, emb_dev, &pr, &r, &err);
    if (!rc) {
        j->iou = r.iou[r.best];
        j->stability = r.stability[r.best];
        j->mh = r.h;
        j->mw = r.w;
        rc = rle_encode_string(r.mask + (size_t)r.best * r.h * r.w, (uint32_t)r.h, (uint32_t)r.w,
                               &j->rle, &err);
    }
    j->rc = rc;
    if (rc) snprintf(j->errmsg, sizeof j->errmsg, "%s", err.msg);
    sam_result_free(&r);
    sam_embedding_free(&emb);
    j->done_us = msg_now_us();
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    pool_t *p = w->pool;
    if (p->threads > 0) kn_set_thread_local_threads(p->threads);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && !p->head) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        job_t *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->depth--;
        pthread_mutex_unlock(&p->mu);
        j->next = NULL;
        if (j->kind == JOB_SEGMENT) process_segment(w, j);
        else process(w, j);
        pthread_mutex_lock(&p->mu);
        if (p->done_tail) p->done_tail->next = j;
        else p->done_head = j;
        p->done_tail = j;
        pthread_mutex_unlock(&p->mu);
        zmq_send(w->done, "d", 1, ZMQ_DONTWAIT);
    }
    return NULL;
}

/* After worker 0's model loaded: a GPU encoder exists for TinyViT and ViT-B/L/H
 * (enc_cuda_supported; otherwise `auto` falls back, `cuda` is a configuration error); logs
 * the choice once, saying what runs where. */
static int settle_device(device_choice_t *dev, const sam_t *sam, err_t *err)
{
    err_t e = {0};
    const char *enc = sam_encoder_name(sam);
    if (device_require_path(dev, enc_cuda_supported(sam), enc, &e))
        return err_set(err, ERR_CONFIG, "%s", e.msg);
    if (dev->device == KN_DEV_CUDA) {
        size_t l = strlen(dev->reason);
        snprintf(dev->reason + l, sizeof dev->reason - l,
                 "; encoder, decoder and adapters on the GPU; the selector on the CPU (a bank "
                 "with >= 2 domains is encoded on the CPU for its taps)");
    }
    device_log(dev);
    return 0;
}

pool_t *pool_new(void *zctx, const char *model_path, int n, int threads, int cap,
                 const char *done_ep, swap_t *banks, int cache_n, device_choice_t *dev,
                 err_t *err)
{
    pool_t *p = calloc(1, sizeof *p);
    if (!p || !(p->w = calloc((size_t)n, sizeof *p->w)) ||
        !(p->cache = calloc((size_t)(cache_n > 0 ? cache_n : 1), sizeof *p->cache))) {
        if (p) free(p->w);
        free(p);
        err_set(err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->cmu, NULL);
    p->cache_n = cache_n > 0 ? cache_n : 1;
    p->cap = cap;
    p->n = n;
    p->threads = threads;
    p->banks = banks;
    for (int i = 0; i < n; i++) {
        worker_t *w = &p->w[i];
        w->pool = p;
        w->id = i;
        if (!(w->sam = sam_load(model_path, err))) goto fail;
        if (i == 0 && settle_device(dev, w->sam, err)) goto fail;
        if (dev->device == KN_DEV_CUDA) {
            if (!(w->gpu = enc_cuda_new(w->sam, 0, 1, err))) goto fail;
            if (!(w->x = malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG))) {
                err_set(err, ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
        if (!(w->br = bankrun_new(w->sam, err))) goto fail;
        if (dev->device == KN_DEV_CUDA && bankrun_use_cuda(w->br, 0, err)) goto fail;
        int hwm = 100000, linger = 0;
        w->done = zmq_socket(zctx, ZMQ_PUSH);
        if (!w->done || zmq_setsockopt(w->done, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
            zmq_setsockopt(w->done, ZMQ_LINGER, &linger, sizeof linger) ||
            zmq_connect(w->done, done_ep)) {
            err_set(err, ERR_MSG, "worker done socket %s: %s", done_ep, zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    wts_content_hash(sam_weights(p->w[0].sam), p->base_hash);
    p->early_c = sam_early_channels(p->w[0].sam);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i])) {
            err_set(err, ERR_STATE, "cannot start worker thread %d", i);
            goto fail;
        }
        p->w[i].started = 1;
    }
    return p;
fail:
    pool_destroy(&p);
    return NULL;
}

void pool_destroy(pool_t **pp)
{
    if (!pp || !*pp) return;
    pool_t *p = *pp;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) {
        worker_t *w = &p->w[i];
        if (w->started) pthread_join(w->th, NULL);
        if (w->done) zmq_close(w->done);
        bankrun_destroy(&w->br);
        free(w->taps);
        enc_cuda_destroy(&w->gpu);
        free(w->x);
        sam_destroy(&w->sam);
    }
    for (job_t *j = p->head, *nx; j; j = nx) nx = j->next, job_free(j);
    for (job_t *j = p->done_head, *nx; j; j = nx) nx = j->next, job_free(j);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    for (int i = 0; i < p->cache_n; i++) free(p->cache[i].emb);
    free(p->cache);
    pthread_mutex_destroy(&p->cmu);
    free(p->w);
    free(p);
    *pp = NULL;
}

void pool_push(pool_t *p, job_t *j, job_t **dropped)
{
    *dropped = NULL;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->depth >= p->cap && p->head) { /* real time: the oldest waiting frame goes */
        *dropped = p->head;
        p->head = p->head->next;
        if (!p->head) p->tail = NULL;
        p->depth--;
        (*dropped)->next = NULL;
    }
    if (p->tail) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->depth++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

job_t *pool_take_done(pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    job_t *j = p->done_head;
    if (j) {
        p->done_head = j->next;
        if (!p->done_head) p->done_tail = NULL;
        j->next = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return j;
}

int pool_queue_depth(pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

const char *pool_base_hash(pool_t *p) { return p->base_hash; }
int pool_early_channels(pool_t *p) { return p->early_c; }
