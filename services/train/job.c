/* job.c — one training job: learn a domain into a copy of the active bank, then gate (job.h). */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapter_bank.h"
#include "gate.h"
#include "learn.h"
#include "replay.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

const char *job_stage_name(int stage)
{
    static const char *names[] = {"idle", "fetch", "encode", "train", "selector", "gate", "put", "loading"};
    return stage >= 0 && stage < (int)(sizeof names / sizeof names[0]) ? names[stage] : "unknown";
}

int job_domain_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

void job_out_clear(job_out_t *out)
{
    free(out->bank);
    memset(out, 0, sizeof *out);
}

static void stage(const job_env_t *e, int s)
{
    if (e->hooks.stage) e->hooks.stage(s, e->hooks.ctx);
}

static int stopped(const job_env_t *e, err_t *err)
{
    if (e->stop && atomic_load(e->stop)) return err_set(err, ERR_INTERRUPTED, "job stopped");
    return 0;
}

static void metric(job_out_t *o, const char *name, double v)
{
    if (o->n_metrics >= JOB_MAX_METRICS || strlen(name) > 64) return;
    snprintf(o->metric_names[o->n_metrics], sizeof o->metric_names[0], "%s", name);
    o->metric_values[o->n_metrics++] = v;
}

static void metric2(job_out_t *o, const char *prefix, const char *domain, double v)
{
    char n[160];
    snprintf(n, sizeof n, "%s.%s", prefix, domain);
    metric(o, n, v);
}

/* The stored image bytes of a sample, decoded. Caller owns result. */
static image_t *sample_image(const rpc_sample_t *s, err_t *err)
{
    char what[64];
    snprintf(what, sizeof what, "sample %llu", (unsigned long long)s->sample_id);
    image_t *im = NULL;
    if (s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG || s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG) {
        im = image_decode(s->bytes, s->nbytes, what, err);
    } else if (s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8 || s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8) {
        int c = s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8 ? 1 : 3;
        if (s->nbytes != (size_t)s->w * (size_t)s->h * (size_t)c)
            err_set(err, ERR_FORMAT, "%s: %zu bytes for a %dx%d raw image", what, s->nbytes, s->w, s->h);
        else if ((im = image_new(s->w, s->h, c, err)))
            memcpy(im->data, s->bytes, s->nbytes);
    } else {
        err_set(err, ERR_UNSUPPORTED, "%s: pixel format %d", what, s->format);
    }
    if (im && (im->w != s->w || im->h != s->h)) {
        err_set(err, ERR_FORMAT, "%s: image is %dx%d but its mask %dx%d", what, im->w, im->h, s->w, s->h);
        image_destroy(&im);
    }
    return im;
}

/* Encodes the samples of one kind (holdout or not) into a new train set; replay entries for
 * up to k of them (evenly spread) when rp is not NULL. */
static train_set_t *build_set(const job_env_t *e, const rpc_sample_t *s, int n, int holdout,
                              int keep_taps, int k, abank_replay_t **rp, int *nrp, err_t *err)
{
    train_set_t *ts = train_set_new(sam_early_channels(e->sam), err);
    if (!ts) return NULL;
    if (keep_taps) train_set_keep_taps(ts);
    int total = 0;
    for (int i = 0; i < n; i++) total += s[i].holdout == holdout;
    if (rp) {
        *rp = NULL;
        *nrp = 0;
        if (k > total) k = total;
        if (k > 0 && !(*rp = calloc((size_t)k, sizeof **rp))) {
            err_set(err, ERR_NOMEM, "out of memory");
            train_set_destroy(&ts);
            return NULL;
        }
    }
    int rc = 0, j = 0, next = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (s[i].holdout != holdout) continue;
        if ((rc = stopped(e, err))) break;
        /* one bad sample (undecodable image, empty mask) is skipped with a note, not fatal */
        size_t np = (size_t)s[i].w * (size_t)s[i].h, fg = 0;
        for (size_t p = 0; p < np && !fg; p++) fg = s[i].mask[p];
        err_t se = {0};
        image_t *im = fg ? sample_image(&s[i], &se) : NULL;
        if (!im) {
            char line[ERR_MSG_MAX + 64];
            snprintf(line, sizeof line, "skipped sample %llu: %s", (unsigned long long)s[i].sample_id,
                     fg ? se.msg : "empty mask");
            if (e->hooks.note) e->hooks.note(line, e->hooks.ctx);
            j++;
            continue;
        }
        if ((rc = train_set_add(ts, e->sam, im, s[i].mask, err)))
            err_wrap(err, "sample %llu", (unsigned long long)s[i].sample_id);
        /* replay entry r takes the first usable sample at or after position floor(r·total/k) */
        if (!rc && rp && next < k && j >= (int)((long)next * total / k)) {
            rc = replay_make(s[i].bytes, s[i].nbytes, s[i].format, im, s[i].mask, &(*rp)[next], err);
            if (!rc) *nrp = ++next;
        }
        image_destroy(&im);
        j++;
    }
    if (rc) {
        if (rp) learn_replay_free(rp, k);
        if (rp) *nrp = 0;
        train_set_destroy(&ts);
    }
    return ts;
}

/* Evaluates cand and active on one domain's holdout set: fills g. */
static int eval_domain(const job_env_t *e, const abank_t *cand, const abank_t *active,
                       const char *name, int trained, const train_set_t *hs, gate_domain_t *g,
                       err_t *err)
{
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->trained = trained;
    g->ref_iou = -1;
    g->n = hs ? hs->n : 0;
    if (g->n < 1) return 0;
    learn_eval_t ev;
    int rc = learn_eval_bank(e->sam, cand, name, hs, e->cfg->prompt, &ev, NULL, NULL, err);
    if (rc) return err_wrap(err, "evaluating the candidate on '%s'", name);
    g->cand_iou = ev.iou;
    if (active->n_domains > 0 && abank_find(active, name)) {
        rc = learn_eval_bank(e->sam, active, name, hs, e->cfg->prompt, &ev, NULL, NULL, err);
        if (rc) return err_wrap(err, "evaluating the active bank on '%s'", name);
        g->ref_iou = ev.iou;
    } else if (trained) {
        rc = train_eval(e->sam, hs, NULL, e->cfg->prompt, &g->ref_iou, NULL, err);
        if (rc) return err_wrap(err, "evaluating zero-shot SAM on '%s'", name);
        g->ref_zeroshot = 1;
    }
    return 0;
}

int job_run(const job_env_t *e, const char *domain, job_out_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    double t0 = now_s();
    const job_cfg_t *c = e->cfg;
    if (!job_domain_name_ok(domain))
        return err_set(err, ERR_INVALID,
                       "label domain '%s' cannot be a bank domain (names are [a-z0-9_-]{1,64})", domain);
    int early_c = sam_early_channels(e->sam);
    abank_t *active = NULL, *cand = NULL;
    rpc_sample_t *smp = NULL;
    int ns = 0, nrp = 0;
    abank_replay_t *rp = NULL;
    train_set_t *tr = NULL, *hs = NULL;
    gate_domain_t *g = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;

    /* 1. the active bank (or an empty one) and a copy of it: the candidate */
    stage(e, JOB_STAGE_FETCH);
    int rc = rpc_get_alias_bank(e->rpc, "active", &buf, &len, &out->active_version, err);
    if (rc == ERR_NOTFOUND) {
        err_clear(err);
        rc = 0;
        out->active_version = 0;
        if (!(active = abank_new(e->base_hash, err)) || !(cand = abank_new(e->base_hash, err)))
            rc = err->code ? err->code : ERR_NOMEM;
    } else if (!rc) {
        char what[64];
        snprintf(what, sizeof what, "active bank (version %llu)", (unsigned long long)out->active_version);
        if (!(active = abank_from_memory(buf, len, what, e->base_hash, early_c, err)) ||
            !(cand = abank_from_memory(buf, len, what, e->base_hash, early_c, err)))
            rc = err->code ? err->code : ERR_FORMAT;
    }
    free(buf);
    buf = NULL;

    /* 2. the domain's labels */
    if (!rc) rc = rpc_fetch_labels(e->rpc, domain, c->max_train, c->max_holdout, &smp, &ns, &out->cursor, err);
    for (int i = 0; i < ns; i++) {
        if (smp[i].holdout) out->n_holdout++;
        else out->n_train++;
    }
    if (!rc && out->n_train < 1)
        rc = err_set(err, ERR_STATE, "domain '%s' has no train labels (%d holdout)", domain, out->n_holdout);

    /* 3. encode the train samples (+ replay blobs), train, retrain the selector */
    if (!rc) {
        stage(e, JOB_STAGE_ENCODE);
        if (!(tr = build_set(e, smp, ns, 0, 0, c->replay, &rp, &nrp, err))) rc = err->code ? err->code : ERR_NOMEM;
    }
    learn_result_t res;
    memset(&res, 0, sizeof res);
    if (!rc && !(rc = stopped(e, err))) {
        stage(e, JOB_STAGE_TRAIN);
        learn_cfg_t lc;
        learn_cfg_default(&lc);
        lc.train.epochs = c->epochs;
        lc.train.seed = c->seed;
        lc.train.fixed_loss = c->fixed_loss;
        lc.train.device = c->device;
        lc.train.progress = e->hooks.progress;
        lc.train.ctx = e->hooks.ctx;
        lc.replay = c->replay;
        lc.sel_epochs = c->sel_epochs;
        lc.sel_seed = c->seed;
        lc.note = e->hooks.note;
        lc.ctx = e->hooks.ctx;
        abank_metric_t m = {.value = (double)out->cursor};
        snprintf(m.name, sizeof m.name, "label_seq");
        rc = learn_add_domain(e->sam, cand, domain, tr, rp, nrp, &m, 1, &lc, &res, err);
        out->train_seconds = res.train.seconds;
    }
    train_set_destroy(&tr);
    learn_replay_free(&rp, nrp);

    /* 4. the gate: every candidate domain on its holdout labels */
    int nd = cand ? cand->n_domains : 0;
    if (!rc && !(rc = stopped(e, err))) {
        stage(e, JOB_STAGE_GATE);
        if (!(g = calloc((size_t)nd + 1, sizeof *g))) rc = err_set(err, ERR_NOMEM, "out of memory");
    }
    int keep_taps = nd >= 2 || (active && active->n_domains >= 2);
    for (int d = 0; d < nd && !rc; d++) {
        const char *name = cand->domains[d].name;
        int trained = !strcmp(name, domain);
        rpc_sample_t *hsmp = NULL;
        int nh = 0;
        uint64_t seq = 0;
        if (!trained) {
            rc = rpc_fetch_labels(e->rpc, name, 0, c->max_holdout, &hsmp, &nh, &seq, err);
            if (rc == ERR_NOTFOUND) {
                err_clear(err);
                rc = 0;
            }
        }
        const rpc_sample_t *hv = trained ? smp : hsmp;
        int nv = trained ? ns : nh;
        if (!rc && !(hs = build_set(e, hv, nv, 1, keep_taps, 0, NULL, NULL, err))) rc = err->code ? err->code : ERR_NOMEM;
        if (!rc) rc = eval_domain(e, cand, active, name, trained, hs, &g[d], err);
        train_set_destroy(&hs);
        rpc_samples_free(&hsmp, nh);
    }
    if (!rc) {
        out->passed = gate_decide(g, nd, c->margin_pts, c->min_gain_pts, out->why, sizeof out->why);
        metric(out, "gate_passed", out->passed);
        metric(out, "gate_margin_pts", c->margin_pts);
        metric(out, "gate_min_gain_pts", c->min_gain_pts);
        metric(out, "gate_prompt_auto", c->prompt == TRAIN_PROMPT_AUTO);
        for (int d = 0; d < nd; d++) {
            if (g[d].n < 1) continue;
            metric2(out, "holdout_iou", g[d].name, g[d].cand_iou);
            if (g[d].ref_iou >= 0)
                metric2(out, g[d].ref_zeroshot ? "zeroshot_iou" : "active_iou", g[d].name, g[d].ref_iou);
            metric2(out, "holdout_n", g[d].name, g[d].n);
        }
        metric(out, "active_version", (double)out->active_version);
        metric(out, "label_seq", (double)out->cursor);
        metric(out, "train_samples", out->n_train);
        metric(out, "train_epochs", c->epochs);
        metric(out, "train_loss_first", res.train.first_loss);
        metric(out, "train_loss_last", res.train.last_loss);
        metric(out, "train_seconds", res.train.seconds);
        if (c->fixed_loss) {
            metric(out, "train_box_loss_before", res.train.fixed_before);
            metric(out, "train_box_loss_after", res.train.fixed_after);
        }
        if (res.sel_trained) metric(out, "selector_train_acc", res.sel.train_acc);
        /* the trained domain's own bank metrics also carry its holdout numbers */
        abank_domain_t *dm = abank_find(cand, domain);
        for (int d = 0; d < nd && dm; d++) {
            if (strcmp(g[d].name, domain) || g[d].n < 1) continue;
            const struct { const char *k; double v; } add[] = {
                {"holdout_iou", g[d].cand_iou}, {"holdout_ref_iou", g[d].ref_iou}, {"holdout_n", g[d].n}};
            for (size_t i = 0; i < 3 && dm->n_metrics < ABANK_MAX_METRICS; i++) {
                snprintf(dm->metrics[dm->n_metrics].name, sizeof dm->metrics[0].name, "%s", add[i].k);
                dm->metrics[dm->n_metrics++].value = add[i].v;
            }
        }
        if (out->passed) {
            void *b = NULL;
            rc = abank_to_memory(cand, &b, &out->bank_len, err);
            out->bank = b;
        }
    }
    out->seconds = now_s() - t0;
    metric(out, "job_seconds", out->seconds);
    free(g);
    rpc_samples_free(&smp, ns);
    abank_destroy(&active);
    abank_destroy(&cand);
    if (rc) {
        free(out->bank);
        out->bank = NULL;
        out->bank_len = 0;
    }
    return rc;
}
