/* learn.c — the MoDA engine: add a domain, retrain the selector, evaluate a bank (learn.h). */
#include "learn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "paths.h"

void learn_cfg_default(learn_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    train_cfg_default(&c->train);
    c->replay = ABANK_DEFAULT_REPLAY;
    c->sel_epochs = 10;
    c->sel_batch = 4;
    c->sel_lr = 1e-3f;
}

static void note(const learn_cfg_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const learn_cfg_t *c, const char *fmt, ...)
{
    if (!c->note) return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->note(buf, c->ctx);
}

/* ---- replay buffers ---------------------------------------------------------------------- */

void learn_replay_free(abank_replay_t **rp, int n)
{
    if (!rp || !*rp) return;
    for (int i = 0; i < n; i++) {
        free((*rp)[i].image.data);
        free((*rp)[i].mask.data);
    }
    free(*rp);
    *rp = NULL;
}

int learn_replay_from_dataset(const dataset_t *ds, int k, abank_replay_t **out, int *n,
                              err_t *err)
{
    *out = NULL;
    *n = 0;
    int *idx = malloc(sizeof(int) * (size_t)(ds->n > 0 ? ds->n : 1));
    if (!idx) return err_set(err, ERR_NOMEM, "replay: out of memory");
    int ntr = dataset_indices(ds, DS_TRAIN, idx);
    if (k > ntr) k = ntr;
    if (k <= 0) {
        free(idx);
        return 0;
    }
    abank_replay_t *rp = calloc((size_t)k, sizeof *rp);
    int rc = rp ? 0 : err_set(err, ERR_NOMEM, "replay: out of memory");
    for (int i = 0; i < k && !rc; i++) {
        const ds_sample_t *s = &ds->s[idx[(long)i * ntr / k]];
        rc = paths_read_file(s->image, &rp[i].image.data, &rp[i].image.size, err);
        if (!rc) rc = paths_read_file(s->mask, &rp[i].mask.data, &rp[i].mask.size, err);
    }
    free(idx);
    if (rc) {
        learn_replay_free(&rp, k);
        return rc;
    }
    *out = rp;
    *n = k;
    return 0;
}

/* ---- data ---------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int learn_load_split(sam_t *sam, const dataset_t *ds, int which, int max_n, train_set_t *ts,
                     void (*note_fn)(const char *line, void *ctx), void *ctx, err_t *err)
{
    int *idx = malloc(sizeof(int) * (size_t)(ds->n > 0 ? ds->n : 1));
    if (!idx) return err_set(err, ERR_NOMEM, "out of memory");
    int n = dataset_indices(ds, which, idx);
    int k = max_n > 0 && max_n < n ? max_n : n;
    int rc = 0;
    double t0 = now_s();
    for (int i = 0; i < k && !rc; i++) {
        int j = idx[(long)i * n / k];
        image_t *img;
        uint8_t *mask;
        if (!(rc = dataset_load(ds, j, &img, &mask, err))) {
            if ((rc = train_set_add(ts, sam, img, mask, err)))
                err_wrap(err, "sample '%s'", ds->s[j].id);
            image_destroy(&img);
            free(mask);
        }
        if (!rc && note_fn && (i + 1 == k || (i + 1) % 10 == 0)) {
            char line[128];
            snprintf(line, sizeof line, "encoded %d/%d %s images (%.1f s)", i + 1, k,
                     which == DS_TRAIN ? "train" : "test", now_s() - t0);
            note_fn(line, ctx);
        }
    }
    free(idx);
    return rc;
}

/* ---- selector ------------------------------------------------------------------------------ */

int learn_retrain_selector(sam_t *sam, abank_t *bank, const learn_cfg_t *cfg,
                           selector_stats_t *st, err_t *err)
{
    if (st) memset(st, 0, sizeof *st);
    if (bank->n_domains < 2) {
        abank_clear_selector(bank);
        return 0;
    }
    size_t nt = sam_taps_floats(sam);
    if (!nt)
        return err_set(err, ERR_UNSUPPORTED,
                       "selector: the %s encoder has no MoDA selector support; use --domain",
                       sam_encoder_name(sam));
    int n = 0;
    for (int d = 0; d < bank->n_domains; d++) n += bank->domains[d].n_replay;
    for (int d = 0; d < bank->n_domains; d++)
        if (bank->domains[d].n_replay == 0)
            return err_set(err, ERR_STATE,
                           "selector: domain '%s' has no replay images to train the selector on",
                           bank->domains[d].name);
    float **taps = calloc((size_t)n, sizeof *taps);
    int *labels = malloc(sizeof(int) * (size_t)n);
    selector_t *sel = NULL;
    int rc = (!taps || !labels) ? err_set(err, ERR_NOMEM, "selector: out of memory") : 0;
    int k = 0;
    for (int d = 0; d < bank->n_domains && !rc; d++) {
        const abank_domain_t *dm = &bank->domains[d];
        for (int r = 0; r < dm->n_replay && !rc; r++, k++) {
            char what[128];
            snprintf(what, sizeof what, "domain '%s' replay image %d", dm->name, r);
            image_t *img = image_decode(dm->replay[r].image.data, dm->replay[r].image.size, what,
                                        err);
            sam_embedding_t e = {0};
            labels[k] = d;
            if (!img) rc = err->code ? err->code : ERR_FORMAT;
            else if (!(taps[k] = malloc(sizeof(float) * nt)))
                rc = err_set(err, ERR_NOMEM, "selector: out of memory for the taps");
            else rc = sam_encode_taps(sam, img, &e, taps[k], err);
            sam_embedding_free(&e);
            image_destroy(&img);
        }
        note(cfg, "selector: encoded %d/%d replay images", k, n);
    }
    if (!rc && !(sel = selector_new(sam_weights(sam), err))) rc = err->code ? err->code : ERR_FORMAT;
    if (!rc) rc = selector_init(sel, cfg->sel_seed, bank->n_domains, err);
    if (!rc) {
        selector_set_keys_only(sel, cfg->sel_keys_only);
        selector_stats_t s;
        rc = selector_train(sel, (const float *const *)taps, labels, n, cfg->sel_epochs,
                            cfg->sel_batch, cfg->sel_lr, cfg->sel_seed, &s, err);
        if (!rc) {
            note(cfg, "selector: %d domains, %d images, %d epochs: cross-entropy %.3f -> %.3f, "
                      "train accuracy %.1f%% (%.0f s)",
                 bank->n_domains, n, cfg->sel_epochs, s.ce_first, s.ce_last, 100 * s.train_acc,
                 s.seconds);
            if (st) *st = s;
        }
    }
    if (!rc) {
        abank_clear_selector(bank);
        rc = selector_save_to_bank(sel, bank, err);
    }
    selector_destroy(&sel);
    for (int i = 0; i < n && taps; i++) free(taps[i]);
    free(taps);
    free(labels);
    return rc;
}

/* ---- adding a domain ------------------------------------------------------------------------ */

int learn_add_domain(sam_t *sam, abank_t *bank, const char *name, const train_set_t *ts,
                     const abank_replay_t *replay, int n_replay, const abank_metric_t *metrics,
                     int n_metrics, const learn_cfg_t *cfg, learn_result_t *res, err_t *err)
{
    learn_result_t r;
    memset(&r, 0, sizeof r);
    if (ts->n < 1) return err_set(err, ERR_INVALID, "domain '%s': no training samples", name);
    adapter_t *ad = adapter_new(sam_early_channels(sam), err);
    if (!ad) return err->code ? err->code : ERR_NOMEM;
    int rc = adapter_init_from_sam(ad, sam_weights(sam), cfg->train.seed, err);
    if (!rc) rc = train_adapter(sam, ts, ad, &cfg->train, &r.train, err);
    if (rc) {
        adapter_destroy(&ad);
        return err_wrap(err, "training domain '%s'", name);
    }
    abank_metric_t m[ABANK_MAX_METRICS];
    int nm = 0;
    for (int i = 0; i < n_metrics && nm < ABANK_MAX_METRICS; i++) m[nm++] = metrics[i];
#define MET(k, v)                                                                          \
    if (nm < ABANK_MAX_METRICS) {                                                          \
        snprintf(m[nm].name, sizeof m[nm].name, "%s", k);                                  \
        m[nm++].value = (v);                                                               \
    }
    MET("train_epochs", (double)cfg->train.epochs);
    MET("train_samples", (double)ts->n);
    MET("train_loss_first", r.train.first_loss);
    MET("train_loss_last", r.train.last_loss);
    MET("train_box_loss_before", r.train.fixed_before);
    MET("train_box_loss_after", r.train.fixed_after);
    MET("train_seconds", r.train.seconds);
    MET("train_step_ms", r.train.step_ms);
#undef MET
    rc = abank_put_domain(bank, name, &ad, replay, n_replay, m, nm, NULL, err);
    adapter_destroy(&ad);
    if (rc) return rc;
    rc = learn_retrain_selector(sam, bank, cfg, &r.sel, err);
    r.sel_trained = !rc && bank->n_domains >= 2;
    if (res) *res = r;
    return rc;
}

/* ---- evaluation ------------------------------------------------------------------------------ */

int learn_eval_bank(sam_t *sam, const abank_t *bank, const char *domain, const train_set_t *ts,
                    int prompt, learn_eval_t *out, double *per_image, int *picked, err_t *err)
{
    memset(out, 0, sizeof *out);
    out->oracle_iou = out->sel_acc = -1;
    out->n = ts->n;
    int nd = bank->n_domains;
    if (nd < 1) return err_set(err, ERR_STATE, "evaluation: the bank has no domain");
    if (ts->n < 1) return err_set(err, ERR_INVALID, "evaluation: empty test set");
    int truth = -1;
    for (int d = 0; domain && d < nd; d++)
        if (!strcmp(bank->domains[d].name, domain)) truth = d;
    int *pick = malloc(sizeof(int) * (size_t)ts->n);
    double *iou = malloc(sizeof(double) * (size_t)ts->n * (size_t)nd);
    selector_t *sel = NULL;
    int rc = (!pick || !iou) ? err_set(err, ERR_NOMEM, "evaluation: out of memory") : 0;
    if (!rc && nd == 1) {
        for (int i = 0; i < ts->n; i++) pick[i] = 0;
    } else if (!rc) {
        if (!(sel = selector_new(sam_weights(sam), err))) rc = err->code ? err->code : ERR_FORMAT;
        else if ((rc = selector_load_from_bank(sel, bank, err)))
            err_wrap(err, "evaluation: bank with %d domains", nd);
        for (int i = 0; i < ts->n && !rc; i++) {
            if (!ts->s[i].taps)
                rc = err_set(err, ERR_INVALID,
                             "evaluation: sample %d has no selector taps (train_set_keep_taps)", i);
            else rc = selector_predict(sel, ts->s[i].taps, &pick[i], NULL, err);
        }
    }
    /* each adapter that is needed, over the whole set (also gives the oracle) */
    for (int d = 0; d < nd && !rc; d++) {
        int needed = d == truth;
        for (int i = 0; i < ts->n; i++) needed |= pick[i] == d;
        if (!needed) continue;
        double m;
        rc = train_eval(sam, ts, bank->domains[d].adapter, prompt, &m, iou + (size_t)d * ts->n,
                        err);
        if (!rc && d == truth) out->oracle_iou = m;
    }
    if (!rc) {
        double s = 0;
        int ok = 0;
        for (int i = 0; i < ts->n; i++) {
            double v = iou[(size_t)pick[i] * ts->n + i];
            s += v;
            ok += pick[i] == truth;
            if (per_image) per_image[i] = v;
            if (picked) picked[i] = pick[i];
        }
        out->iou = s / ts->n;
        if (truth >= 0) out->sel_acc = (double)ok / ts->n;
    }
    selector_destroy(&sel);
    free(pick);
    free(iou);
    return rc;
}
