/* bankrun.c — domain choice and adapter run for one image with a MoDA bank (bankrun.h). */
#include "bankrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bankrun_cuda.h"
#include "samdec_cuda.h"
#include "selector.h"

struct bankrun {
    sam_t *sam;          /* borrowed */
    selector_t *sel;     /* built on the first bank with >= 2 domains */
    int sel_rc;          /* result of the last selector load (0 ok) */
    err_t sel_err;       /* its message */
    const abank_t *bank; /* last bankrun_set_bank (borrowed) */
    uint64_t key;
    int n_domains;
    int have_key;
    samdec_t *dec;    /* created on the first adapter run */
    adp_work_t *work; /* idem */
    bankrun_cuda_t *gpu;      /* the GPU backend (bankrun_use_cuda), else NULL */
    const adapter_t *gpu_ad;  /* the adapter whose parameters are on the device, or NULL */
    const abank_t *gpu_bank;  /* ... of this bank (borrowed), */
    uint64_t gpu_key;         /* with this key, */
    int gpu_dom;              /* domain index */
};

bankrun_t *bankrun_new(sam_t *sam, err_t *err)
{
    if (!sam) {
        err_set(err, ERR_INVALID, "bankrun: NULL model");
        return NULL;
    }
    bankrun_t *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(err, ERR_NOMEM, "bankrun: out of memory");
        return NULL;
    }
    r->sam = sam;
    return r;
}

void bankrun_destroy(bankrun_t **rp)
{
    if (!rp || !*rp) return;
    bankrun_t *r = *rp;
    selector_destroy(&r->sel);
    adp_work_destroy(&r->work);
    samdec_destroy(&r->dec);
    bankrun_cuda_destroy(&r->gpu);
    free(r);
    *rp = NULL;
}

int bankrun_needs_taps(const abank_t *b, const char *forced)
{
    return b && !forced && b->n_domains >= 2;
}

int bankrun_set_bank(bankrun_t *r, const abank_t *b, uint64_t key, err_t *err)
{
    if (!r || !b) return err_set(err, ERR_INVALID, "bankrun_set_bank: NULL argument");
    int same = r->have_key && r->key == key && r->n_domains == b->n_domains;
    r->bank = b;
    if (same) return 0;
    r->key = key;
    r->have_key = 1;
    r->n_domains = b->n_domains;
    r->sel_rc = 0;
    err_clear(&r->sel_err);
    if (b->n_domains < 2) return 0;
    if (!sam_taps_floats(r->sam)) {
        r->sel_rc = err_set(&r->sel_err, ERR_UNSUPPORTED,
                            "the %s encoder has no MoDA selector support: pass --domain NAME",
                            sam_encoder_name(r->sam));
        return 0;
    }
    if (!r->sel && !(r->sel = selector_new(sam_weights(r->sam), &r->sel_err))) {
        r->sel_rc = r->sel_err.code ? r->sel_err.code : ERR_NOMEM;
        return r->sel_rc == ERR_NOMEM ? err_set(err, ERR_NOMEM, "%s", r->sel_err.msg) : 0;
    }
    r->sel_rc = selector_load_from_bank(r->sel, b, &r->sel_err);
    if (r->sel_rc == ERR_NOTFOUND)
        err_set(&r->sel_err, ERR_NOTFOUND,
                "the bank has %d domains but no selector (selector.* tensors): pass --domain "
                "NAME, or retrain the selector (moda train-domain)",
                b->n_domains);
    else if (!r->sel_rc && selector_n_domains(r->sel) != b->n_domains)
        r->sel_rc = err_set(&r->sel_err, ERR_FORMAT,
                            "the bank's selector knows %d domains but the bank has %d: retrain it "
                            "(moda train-domain) or pass --domain NAME",
                            selector_n_domains(r->sel), b->n_domains);
    else if (r->sel_rc)
        err_wrap(&r->sel_err, "the bank's selector is unusable (pass --domain NAME)");
    return 0;
}

int bankrun_can_choose(const bankrun_t *r, err_t *err)
{
    if (!r) return err_set(err, ERR_INVALID, "bankrun_can_choose: NULL argument");
    if (r->sel_rc && err) *err = r->sel_err;
    return r->sel_rc;
}

int bankrun_choose(bankrun_t *r, const abank_t *b, const char *forced, const float *taps,
                   bankrun_choice_t *out, err_t *err)
{
    if (!r || !b || !out) return err_set(err, ERR_INVALID, "bankrun_choose: NULL argument");
    if (b->n_domains < 1) return err_set(err, ERR_STATE, "the bank has no domain");
    if (forced) {
        for (int d = 0; d < b->n_domains; d++)
            if (!strcmp(b->domains[d].name, forced)) {
                *out = (bankrun_choice_t){.domain = d, .prob = -1.0f, .how = BANKRUN_FORCED};
                return 0;
            }
        char names[512] = "";
        for (int i = 0; i < b->n_domains; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     b->domains[i].name);
        return err_set(err, ERR_NOTFOUND, "the bank has no domain '%s' (it has: %s)", forced,
                       names);
    }
    if (b->n_domains == 1) {
        *out = (bankrun_choice_t){.domain = 0, .prob = 1.0f, .how = BANKRUN_ONLY};
        return 0;
    }
    if (r->bank != b)
        return err_set(err, ERR_STATE, "bankrun_choose: call bankrun_set_bank with this bank first");
    if (r->sel_rc) {
        if (err) *err = r->sel_err;
        return r->sel_rc;
    }
    if (!taps)
        return err_set(err, ERR_INVALID,
                       "bankrun_choose: a bank with %d domains needs the image's selector taps "
                       "(sam_encode_taps)", b->n_domains);
    int d = 0;
    float p = 0;
    int rc = selector_predict(r->sel, taps, &d, &p, err);
    if (rc) return rc;
    *out = (bankrun_choice_t){.domain = d, .prob = p, .how = BANKRUN_SELECTED};
    return 0;
}

int bankrun_adapter(bankrun_t *r, const abank_t *b, int d, const sam_embedding_t *emb,
                    const float *emb_dev, const sam_point_t *pts, int n, float *logits,
                    float *iou, err_t *err)
{
    if (!r || !b || !emb || !logits) return err_set(err, ERR_INVALID, "bankrun_adapter: NULL argument");
    if (d < 0 || d >= b->n_domains)
        return err_set(err, ERR_RANGE, "bankrun_adapter: domain %d outside [0, %d)", d,
                       b->n_domains);
    const adapter_t *ad = b->domains[d].adapter;
    if (!emb->emb || !emb->early || emb->early_c != ad->early_c)
        return err_set(err, ERR_INVALID,
                       "bankrun_adapter: the embedding has no early feature of %d channels "
                       "(encode with the early feature)", ad->early_c);
    sam_point_t pad = {0, 0, -1.0f};
    if (!pts || n < 1) {
        pts = &pad;
        n = 1;
    }
    if (r->gpu && n <= SAMDEC_CUDA_MAX_PTS) {
        /* the parameters on the device are this adapter's only when set_bank named this bank
         * with the same key and the domain is the same; else upload them again */
        int same = r->gpu_ad == ad && r->gpu_bank == b && r->bank == b && r->have_key &&
                   r->gpu_key == r->key && r->gpu_dom == d;
        r->gpu_ad = NULL; /* unknown until the upload succeeded */
        int rc = bankrun_cuda_adapter(r->gpu, ad, !same, emb, emb_dev, pts, n, logits, iou, err);
        if (rc) return rc;
        r->gpu_ad = ad;
        r->gpu_bank = b;
        r->gpu_key = r->key;
        r->gpu_dom = d;
        return 0;
    }
    if (!r->dec && !(r->dec = samdec_new(sam_weights(r->sam), err)))
        return err->code ? err->code : ERR_NOMEM;
    if (!r->work && !(r->work = adp_work_new(ad->early_c, err)))
        return err->code ? err->code : ERR_NOMEM;
    float io[SAM_NMASK] = {0};
    int rc = adapter_forward(ad, r->dec, r->work, emb->emb, emb->early, pts, n, NULL, logits,
                             NULL, io, 0, err);
    if (!rc && iou) *iou = io[0];
    return rc;
}

int bankrun_predict(bankrun_t *r, const sam_embedding_t *emb, const float *emb_dev,
                    const sam_prompt_t *p, sam_result_t *out, err_t *err)
{
    if (!r || !emb || !p || !out) return err_set(err, ERR_INVALID, "bankrun_predict: NULL argument");
    if (r->gpu) {
        sam_point_t pts[SAM_MAX_POINTS + 2];
        int n = sam_prompt_points(&emb->info, p, pts, err);
        if (n < 0) return n;
        if (n <= SAMDEC_CUDA_MAX_PTS) return bankrun_cuda_predict(r->gpu, emb, emb_dev, p, out, err);
    }
    return sam_predict(r->sam, emb, p, out, err);
}

int bankrun_use_cuda(bankrun_t *r, int device, err_t *err)
{
    if (!r) return err_set(err, ERR_INVALID, "bankrun_use_cuda: NULL argument");
    if (r->gpu) return err_set(err, ERR_STATE, "bankrun_use_cuda: already on CUDA");
    r->gpu = bankrun_cuda_new(r->sam, device, sam_early_channels(r->sam), err);
    r->gpu_ad = NULL;
    return r->gpu ? 0 : (err && err->code ? err->code : ERR_DEVICE);
}

int bankrun_on_cuda(const bankrun_t *r)
{
    return r && r->gpu;
}
