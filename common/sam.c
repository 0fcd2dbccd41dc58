/* sam.c — SAM model glue: weights → encoder + decoder; image → embedding; prompt → masks.
 *
 * Invariants: the wts_t outlives both parts (they borrow it); every buffer handed to the
 * caller is owned by the embedding/result struct; prompts are validated here, before any
 * part runs, so a bad click is an error message and never a wrong mask.
 */
#include "sam.h"

#include <stdlib.h>
#include <string.h>

#include "postprocess.h"

#define LR_N (SAM_LOWRES * SAM_LOWRES)
#define EMB_N (SAM_EMB_C * SAM_EMB * SAM_EMB)

struct sam {
    wts_t *w;
    char encoder[32];
    tinyvit_t *tinyvit;
    vit_t *vit;
    samdec_t *dec;
    int early_c;
};

sam_t *sam_load(const char *path, err_t *err)
{
    sam_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, ERR_NOMEM, "sam: out of memory");
        return NULL;
    }
    s->w = wts_open(path, err);
    if (!s->w) goto fail;
    const char *enc = wts_meta(s->w, "moda.encoder");
    if (!enc) {
        err_set(err, ERR_FORMAT,
                "%s: no 'moda.encoder' metadata (not a SAM weights file written by `moda convert`)",
                path);
        goto fail;
    }
    snprintf(s->encoder, sizeof s->encoder, "%s", enc);
    if (!strcmp(enc, "tinyvit_5m")) {
        s->tinyvit = tinyvit_new(s->w, err);
        if (!s->tinyvit) goto fail_wrap;
        s->early_c = 160;
    } else if (!strcmp(enc, "vit_b") || !strcmp(enc, "vit_l") || !strcmp(enc, "vit_h") ||
               !strcmp(enc, "vit_custom")) {
        s->vit = vit_new(s->w, err);
        if (!s->vit) goto fail_wrap;
        s->early_c = vit_early_channels(s->vit);
    } else {
        err_set(err, ERR_UNSUPPORTED, "%s: encoder '%s' is not supported by this build", path,
                enc);
        goto fail;
    }
    s->dec = samdec_new(s->w, err);
    if (!s->dec) goto fail_wrap;
    return s;
fail_wrap:
    err_wrap(err, "loading model '%s'", path);
fail:
    sam_destroy(&s);
    return NULL;
}

void sam_destroy(sam_t **sp)
{
    if (!sp || !*sp) return;
    sam_t *s = *sp;
    tinyvit_destroy(&s->tinyvit);
    vit_destroy(&s->vit);
    samdec_destroy(&s->dec);
    wts_destroy(&s->w);
    free(s);
    *sp = NULL;
}

const char *sam_encoder_name(const sam_t *s) { return s->encoder; }
int sam_early_channels(const sam_t *s) { return s->early_c; }
const wts_t *sam_weights(const sam_t *s) { return s->w; }

void sam_embedding_free(sam_embedding_t *e)
{
    if (!e) return;
    free(e->emb);
    free(e->early);
    memset(e, 0, sizeof *e);
}

/* The one encoder call: buffers for out, then the encoder (with the selector taps when taps
 * is not NULL: same pass, bit-identical emb/early). */
static int encode(sam_t *s, const float *x, const prep_info_t *info, sam_embedding_t *out,
                  int want_early, float *taps, err_t *err)
{
    memset(out, 0, sizeof *out);
    out->info = *info;
    out->emb = malloc(sizeof(float) * EMB_N);
    if (want_early) {
        out->early_c = s->early_c;
        out->early = malloc(sizeof(float) * (size_t)s->early_c * SAM_EMB * SAM_EMB);
    }
    if (!out->emb || (want_early && !out->early)) {
        sam_embedding_free(out);
        return err_set(err, ERR_NOMEM, "sam: out of memory for the embedding");
    }
    int rc = ERR_UNSUPPORTED;
    if (s->tinyvit && taps)
        rc = tinyvit_forward_taps(s->tinyvit, x, out->emb, out->early, taps, err);
    else if (s->tinyvit) rc = tinyvit_forward(s->tinyvit, x, out->emb, out->early, err);
    else if (s->vit) rc = vit_forward(s->vit, x, out->emb, out->early, err);
    if (rc) {
        sam_embedding_free(out);
        return err_wrap(err, "image encoder");
    }
    return 0;
}

int sam_encode_input(sam_t *s, const float *x, const prep_info_t *info, sam_embedding_t *out,
                     int want_early, err_t *err)
{
    return encode(s, x, info, out, want_early, NULL, err);
}

size_t sam_taps_floats(const sam_t *s) { return s->tinyvit ? (size_t)TINYVIT_TAPS_FLOATS : 0; }

int sam_encode_taps(sam_t *s, const image_t *img, sam_embedding_t *out, float *taps,
                    err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!s->tinyvit)
        return err_set(err, ERR_UNSUPPORTED, "sam: the %s encoder has no MoDA selector support",
                       s->encoder);
    float *x = malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG);
    prep_info_t info;
    int rc = !x ? err_set(err, ERR_NOMEM, "sam: out of memory for the encoder input")
                : prep_sam_input(img, x, NULL, &info, err);
    if (!rc) rc = encode(s, x, &info, out, 1, taps, err);
    free(x);
    return rc;
}

int sam_encode(sam_t *s, const image_t *img, sam_embedding_t *out, float *x, int want_early,
               err_t *err)
{
    float *buf = x ? x : malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG);
    if (!buf) return err_set(err, ERR_NOMEM, "sam: out of memory for the encoder input");
    prep_info_t info;
    int rc = prep_sam_input(img, buf, NULL, &info, err);
    if (rc == 0) rc = sam_encode_input(s, buf, &info, out, want_early, err);
    if (!x) free(buf);
    return rc;
}

int sam_prompt_points(const prep_info_t *info, const sam_prompt_t *p,
                      sam_point_t out[SAM_MAX_POINTS + 2], err_t *err)
{
    if (p->n_points < 0 || p->n_points > SAM_MAX_POINTS)
        return err_set(err, ERR_RANGE, "prompt: %d points (at most %d)", p->n_points,
                       SAM_MAX_POINTS);
    if (p->n_points == 0 && !p->has_box)
        return err_set(err, ERR_INVALID, "prompt: give at least one point or a box");
    int n = 0;
    for (int i = 0; i < p->n_points; i++) {
        float x = p->points[3 * i], y = p->points[3 * i + 1], l = p->points[3 * i + 2];
        if (!(x >= 0 && y >= 0 && x <= info->w && y <= info->h))
            return err_set(err, ERR_RANGE, "point %d (%g,%g) is outside the %dx%d image", i + 1,
                           x, y, info->w, info->h);
        if (l != 0 && l != 1)
            return err_set(err, ERR_INVALID, "point %d: label %g (use 1 foreground, 0 background)",
                           i + 1, l);
        prep_map_point(info, x, y, &out[n].x, &out[n].y);
        out[n++].label = l;
    }
    if (p->has_box) {
        const float *b = p->box;
        for (int k = 0; k < 4; k++)
            if (!(b[k] >= 0 && b[k] <= (k % 2 ? info->h : info->w)))
                return err_set(err, ERR_RANGE, "box (%g,%g,%g,%g) is outside the %dx%d image",
                               b[0], b[1], b[2], b[3], info->w, info->h);
        if (b[0] > b[2] || b[1] > b[3])
            return err_set(err, ERR_INVALID, "box (%g,%g,%g,%g): need x0 <= x1 and y0 <= y1", b[0],
                           b[1], b[2], b[3]);
        prep_map_point(info, b[0], b[1], &out[n].x, &out[n].y);
        out[n++].label = 2;
        prep_map_point(info, b[2], b[3], &out[n].x, &out[n].y);
        out[n++].label = 3;
    } else {
        out[n].x = out[n].y = 0;
        out[n++].label = -1;
    }
    return n;
}

void sam_result_free(sam_result_t *r)
{
    if (!r) return;
    free(r->lowres);
    free(r->mask);
    memset(r, 0, sizeof *r);
}

int sam_result_from_lowres(const prep_info_t *info, const sam_prompt_t *p, int n,
                           const float *all, const float iou_all[SAM_NMASK], sam_result_t *out,
                           err_t *err)
{
    memset(out, 0, sizeof *out);
    int h = info->h, w = info->w;
    float *logits = malloc(sizeof(float) * (size_t)h * w);
    int nm = p->multimask ? 3 : 1;
    out->lowres = malloc(sizeof(float) * nm * LR_N);
    out->mask = malloc((size_t)nm * h * w);
    int rc = 0;
    if (!logits || !out->lowres || !out->mask) {
        rc = err_set(err, ERR_NOMEM, "sam: out of memory for %d masks of %dx%d", nm, w, h);
        goto done;
    }
    memcpy(out->iou_all, iou_all, sizeof out->iou_all);
    out->n = nm;
    out->h = h;
    out->w = w;
    for (int i = 0; i < nm; i++) {
        int idx = p->multimask ? i + 1 : samdec_pick_single(out->iou_all, n);
        out->index[i] = idx;
        out->iou[i] = out->iou_all[idx];
        memcpy(out->lowres + (size_t)i * LR_N, all + (size_t)idx * LR_N, sizeof(float) * LR_N);
        rc = post_upscale(all + (size_t)idx * LR_N, SAM_LOWRES, info->new_h, info->new_w, h, w,
                          logits, err);
        if (rc) goto done;
        out->stability[i] = post_stability(logits, (long long)h * w, 0.0f, 1.0f);
        post_threshold(logits, (long long)h * w, 0.0f, out->mask + (size_t)i * h * w);
        if (out->iou[i] > out->iou[out->best]) out->best = i;
    }
done:
    free(logits);
    if (rc) sam_result_free(out);
    return rc;
}

int sam_predict(sam_t *s, const sam_embedding_t *emb, const sam_prompt_t *p, sam_result_t *out,
                err_t *err)
{
    memset(out, 0, sizeof *out);
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n = sam_prompt_points(&emb->info, p, pts, err);
    if (n < 0) return n;
    float *all = malloc(sizeof(float) * SAM_NMASK * LR_N);
    float iou_all[SAM_NMASK];
    if (!all) return err_set(err, ERR_NOMEM, "sam: out of memory for the low-res masks");
    int rc = samdec_forward(s->dec, emb->emb, pts, n, p->mask_in, all, iou_all, err);
    if (rc) err_wrap(err, "mask decoder");
    else rc = sam_result_from_lowres(&emb->info, p, n, all, iou_all, out, err);
    free(all);
    return rc;
}
