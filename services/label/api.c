/* api.c — moda-label request handler (see api.h; protocol in docs/label.md).
 *
 * Reply memory: small structs and strings come from an arena recorded in the reply; sample
 * records unpacked by the store are kept in the reply (infos/items) and freed with it, so
 * api_reply_clear releases everything after main.c sent the reply.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "rle.h"

/* ---- reply arena ------------------------------------------------------------------------ */

static void *keep(api_reply_t *r, void *p)
{
    if (!p) return NULL;
    if (r->nowned == r->capowned) {
        int nc = r->capowned ? r->capowned * 2 : 16;
        void **o = realloc(r->owned, (size_t)nc * sizeof *o);
        if (!o) {
            free(p);
            return NULL;
        }
        r->owned = o;
        r->capowned = nc;
    }
    r->owned[r->nowned++] = p;
    return p;
}

static void *ar(api_reply_t *r, size_t n) { return keep(r, calloc(1, n ? n : 1)); }

static char *ar_str(api_reply_t *r, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ar(r, n);
    if (d) memcpy(d, s, n);
    return d ? d : "";
}

void api_reply_clear(api_reply_t *r)
{
    if (!r) return;
    for (int i = 0; i < r->nowned; i++) free(r->owned[i]);
    free(r->owned);
    lstore_items_free(r->items, r->nitems);
    lstore_infos_free(r->infos, r->ninfos);
    memset(r, 0, sizeof *r);
}

static Moda__Status *mk_status(api_reply_t *r, int code, const err_t *err)
{
    static Moda__Status oom = MODA__STATUS__INIT;
    Moda__Status *st = ar(r, sizeof *st);
    r->status = code;
    if (!st) return &oom;
    moda__status__init(st);
    st->code = msg_status_code(code);
    st->message = code ? ar_str(r, err && err->msg[0] ? err->msg : err_str(code)) : "";
    return st;
}

static int reply_error(api_reply_t *r, int code, const err_t *err)
{
    Moda__ErrorReply *e = ar(r, sizeof *e);
    moda__envelope__init(&r->env);
    if (!e) return r->status = ERR_NOMEM;
    moda__error_reply__init(e);
    e->status = mk_status(r, code, err);
    r->env.body_case = MODA__ENVELOPE__BODY_ERROR;
    r->env.error = e;
    r->event = "requests_failed";
    return code;
}

/* ---- validation ------------------------------------------------------------------------- */

int api_image_check(Moda__PixelFormat fmt, uint32_t w, uint32_t h, const void *data, size_t len, err_t *err)
{
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (uint64_t)w * h > (uint64_t)IMAGE_MAX_PIXELS)
        return err_set(err, ERR_INVALID, "image size %ux%u is out of range", w, h);
    if (!data || !len) return err_set(err, ERR_INVALID, "no image bytes (binary part 0)");
    switch (fmt) {
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8:
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8: {
        uint64_t want = (uint64_t)w * h * (fmt == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8 ? 3 : 1);
        if (len != want)
            return err_set(err, ERR_INVALID, "raw %s image %ux%u needs %llu bytes, got %zu",
                           fmt == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8 ? "RGB8" : "GRAY8", w, h,
                           (unsigned long long)want, len);
        return 0;
    }
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG:
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG: {
        image_t *im = image_decode(data, len, "image", err);
        if (!im) return err->code ? err->code : ERR_FORMAT;
        int ok = (uint32_t)im->w == w && (uint32_t)im->h == h;
        int iw = im->w, ih = im->h;
        image_destroy(&im);
        if (!ok) return err_set(err, ERR_INVALID, "image is %dx%d, the request says %ux%u", iw, ih, w, h);
        return 0;
    }
    default: return err_set(err, ERR_INVALID, "image format %d is not supported", (int)fmt);
    }
}

/* ---- handlers --------------------------------------------------------------------------- */

static int h_hard_case(lstore_t *st, const Moda__HardCase *hc, const msg_part_t *parts, int nparts, api_reply_t *r)
{
    err_t err = {0};
    Moda__HardCaseAck *a = ar(r, sizeof *a);
    if (!a) return reply_error(r, ERR_NOMEM, NULL);
    moda__hard_case_ack__init(a);
    r->env.body_case = MODA__ENVELOPE__BODY_HARD_CASE_ACK;
    r->env.hard_case_ack = a;
    a->camera_id = ar_str(r, hc->camera_id);
    a->seq = hc->seq;
    int rc = nparts != 1 ? err_set(&err, ERR_INVALID, "hard case needs exactly one binary part (the image), got %d",
                                   nparts)
                         : api_image_check(hc->format, hc->width, hc->height, parts[0].data, parts[0].size, &err);
    if (!rc) {
        Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
        si.camera_id = hc->camera_id;
        si.seq = hc->seq;
        si.capture_time_us = hc->capture_time_us;
        si.width = hc->width;
        si.height = hc->height;
        si.format = hc->format;
        si.source = "hard_case";
        si.reason = hc->reason;
        si.score = hc->score;
        si.predicted_mask = hc->mask;
        si.predicted_domain = hc->domain;
        si.bank_version = hc->bank_version;
        si.selector_prob = hc->selector_prob;
        si.iou_pred = hc->iou_pred;
        si.stability = hc->stability;
        int dup = 0;
        rc = lstore_add(st, &si, parts[0].data, parts[0].size, 0, &a->sample_id, &dup, NULL, &err);
        a->duplicate = dup;
        if (!rc) r->event = dup ? "hard_cases_duplicate" : "hard_cases_stored";
    }
    if (rc) {
        err_wrap(&err, "hard case %s/%llu", hc->camera_id, (unsigned long long)hc->seq);
        r->event = "hard_cases_refused";
    }
    a->status = mk_status(r, rc, &err);
    return rc;
}

static int h_list_queue(lstore_t *st, const Moda__ListQueueRequest *q, api_reply_t *r)
{
    err_t err = {0};
    Moda__ListQueueReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__list_queue_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY;
    r->env.list_queue_reply = rep;
    uint32_t limit = q->limit ? q->limit : API_QUEUE_LIMIT;
    if (limit > API_QUEUE_MAX) limit = API_QUEUE_MAX;
    int rc = lstore_queue(st, q->domain, q->offset, limit, &r->infos, &r->ninfos, &rep->total, &err);
    if (!rc) {
        rep->items = r->infos;
        rep->n_items = r->ninfos;
    }
    rep->status = mk_status(r, rc, &err);
    return rc;
}

static int h_get_sample(lstore_t *st, const Moda__GetSampleRequest *q, api_reply_t *r)
{
    err_t err = {0};
    Moda__GetSampleReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__get_sample_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_GET_SAMPLE_REPLY;
    r->env.get_sample_reply = rep;
    r->infos = calloc(1, sizeof *r->infos);
    if (!r->infos) return reply_error(r, ERR_NOMEM, NULL);
    void *img = NULL;
    size_t len = 0;
    int rc = lstore_get(st, q->sample_id, &r->infos[0], q->include_image ? &img : NULL, &len, &err);
    if (!rc) {
        r->ninfos = 1;
        rep->sample = r->infos[0];
        if (img) {
            keep(r, img);
            r->parts[0].data = img;
            r->parts[0].size = len;
            r->nparts = 1;
        }
    }
    rep->status = mk_status(r, rc, &err);
    return rc;
}

/* The mask of a SubmitLabel as a counts string (arena-owned) for the sample's size. */
static int submit_mask(lstore_t *st, const Moda__SubmitLabelRequest *q, const msg_part_t *parts, int nparts,
                       api_reply_t *r, const char **counts, err_t *err)
{
    Moda__SampleInfo *info = NULL;
    int rc = lstore_get(st, q->sample_id, &info, NULL, NULL, err);
    if (rc) return rc;
    uint32_t w = info->width, h = info->height;
    lstore_info_free(&info);
    if (!q->mask_png) {
        if (nparts != 0) return err_set(err, ERR_INVALID, "label with an RLE mask carries %d binary parts", nparts);
        if (!q->mask || !q->mask->counts || !*q->mask->counts)
            return err_set(err, ERR_INVALID, "label without a mask (set mask or mask_png)");
        if (q->mask->width != w || q->mask->height != h)
            return err_set(err, ERR_INVALID, "mask is %ux%u, sample %llu is %ux%u", q->mask->width, q->mask->height,
                           (unsigned long long)q->sample_id, w, h);
        *counts = q->mask->counts;
        return 0;
    }
    if (nparts != 1) return err_set(err, ERR_INVALID, "mask_png needs exactly one binary part, got %d", nparts);
    image_t *im = image_decode(parts[0].data, parts[0].size, "mask PNG", err);
    if (!im) return err->code ? err->code : ERR_FORMAT;
    if ((uint32_t)im->w != w || (uint32_t)im->h != h) {
        rc = err_set(err, ERR_INVALID, "mask is %dx%d, sample %llu is %ux%u", im->w, im->h,
                     (unsigned long long)q->sample_id, w, h);
        image_destroy(&im);
        return rc;
    }
    uint8_t *m = malloc((size_t)w * h);
    if (!m) {
        image_destroy(&im);
        return err_set(err, ERR_NOMEM, "out of memory for a %ux%u mask", w, h);
    }
    for (size_t i = 0; i < (size_t)w * h; i++) m[i] = im->data[i * (size_t)im->c] != 0;
    image_destroy(&im);
    char *s = NULL;
    rc = rle_encode_string(m, h, w, &s, err);
    free(m);
    if (rc) return rc;
    *counts = keep(r, s);
    return *counts ? 0 : err_set(err, ERR_NOMEM, "out of memory");
}

static int h_submit(lstore_t *st, const Moda__SubmitLabelRequest *q, const msg_part_t *parts, int nparts,
                    api_reply_t *r)
{
    err_t err = {0};
    Moda__SubmitLabelReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__submit_label_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_SUBMIT_LABEL_REPLY;
    r->env.submit_label_reply = rep;
    rep->sample_id = q->sample_id;
    const char *counts = NULL;
    int rc = lstore_name_check(q->domain, "domain", &err);
    if (!rc) rc = submit_mask(st, q, parts, nparts, r, &counts, &err);
    if (!rc) rc = lstore_label(st, q->sample_id, q->domain, counts, q->actor, 0, &rep->split, NULL, &err);
    if (rc) err_wrap(&err, "label for sample %llu", (unsigned long long)q->sample_id);
    r->event = rc ? "labels_refused" : "labels_stored";
    rep->status = mk_status(r, rc, &err);
    return rc;
}

static int h_reject(lstore_t *st, const Moda__RejectSampleRequest *q, api_reply_t *r)
{
    err_t err = {0};
    Moda__RejectSampleReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__reject_sample_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_REJECT_SAMPLE_REPLY;
    r->env.reject_sample_reply = rep;
    int rc = lstore_reject(st, q->sample_id, q->actor, q->reason, &err);
    if (!rc) r->event = "samples_rejected";
    rep->status = mk_status(r, rc, &err);
    return rc;
}

static int h_labels_since(lstore_t *st, const Moda__LabelsSinceRequest *q, api_reply_t *r)
{
    err_t err = {0};
    Moda__LabelsSinceReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__labels_since_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_LABELS_SINCE_REPLY;
    r->env.labels_since_reply = rep;
    uint32_t limit = q->limit ? q->limit : API_LABELS_LIMIT;
    if (limit > API_LABELS_MAX) limit = API_LABELS_MAX;
    if (limit > MSG_MAX_PARTS) limit = MSG_MAX_PARTS;
    int more = 0;
    int rc = lstore_labels_since(st, q->domain, q->cursor, limit, q->include_holdout, API_LABELS_BYTES, &r->items,
                                 &r->nitems, &rep->next_cursor, &more, &err);
    if (!rc) {
        rep->more = more;
        rep->samples = ar(r, r->nitems * sizeof *rep->samples);
        if (!rep->samples && r->nitems) return reply_error(r, ERR_NOMEM, NULL);
        for (size_t i = 0; i < r->nitems; i++) {
            rep->samples[i] = r->items[i].info;
            r->parts[i].data = r->items[i].img;
            r->parts[i].size = r->items[i].img_len;
        }
        rep->n_samples = r->nitems;
        r->nparts = (int)r->nitems;
    }
    rep->status = mk_status(r, rc, &err);
    return rc;
}

static int h_import(lstore_t *st, const Moda__ImportSampleRequest *q, const msg_part_t *parts, int nparts,
                    api_reply_t *r)
{
    err_t err = {0};
    Moda__ImportSampleReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__import_sample_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REPLY;
    r->env.import_sample_reply = rep;
    const Moda__SampleInfo *s = q->sample;
    int rc = 0;
    if (!s) rc = err_set(&err, ERR_INVALID, "import without a sample");
    else if (nparts != 1) rc = err_set(&err, ERR_INVALID, "import needs exactly one binary part (the image), got %d", nparts);
    else rc = api_image_check(s->format, s->width, s->height, parts[0].data, parts[0].size, &err);
    int dup = 0;
    if (!rc) rc = lstore_add(st, s, parts[0].data, parts[0].size, 1, &rep->sample_id, &dup, &rep->split, &err);
    rep->duplicate = dup;
    if (rc && s) err_wrap(&err, "import %s/%llu", s->camera_id, (unsigned long long)s->seq);
    r->event = rc ? "imports_refused" : dup ? "imports_duplicate" : "imports_stored";
    rep->status = mk_status(r, rc, &err);
    return rc;
}

static int h_domains(lstore_t *st, api_reply_t *r)
{
    err_t err = {0};
    Moda__ListDomainsReply *rep = ar(r, sizeof *rep);
    if (!rep) return reply_error(r, ERR_NOMEM, NULL);
    moda__list_domains_reply__init(rep);
    r->env.body_case = MODA__ENVELOPE__BODY_LIST_DOMAINS_REPLY;
    r->env.list_domains_reply = rep;
    lstore_domain_t *d = NULL;
    size_t n = 0;
    int rc = lstore_domains(st, &d, &n, &err);
    if (!rc) {
        keep(r, d);
        rep->domains = ar(r, n * sizeof *rep->domains);
        Moda__LabelDomain *ld = ar(r, n * sizeof *ld);
        if ((!rep->domains || !ld) && n) return reply_error(r, ERR_NOMEM, NULL);
        for (size_t i = 0; i < n; i++) {
            moda__label_domain__init(&ld[i]);
            ld[i].name = d[i].name;
            ld[i].labels = d[i].labels;
            ld[i].last_seq = d[i].last_seq;
            ld[i].holdout = d[i].holdout;
            rep->domains[i] = &ld[i];
        }
        rep->n_domains = n;
    }
    rep->status = mk_status(r, rc, &err);
    return rc;
}

int api_handle(lstore_t *st, const Moda__Envelope *env, const msg_part_t *parts, int nparts, api_reply_t *out)
{
    memset(out, 0, sizeof *out);
    moda__envelope__init(&out->env);
    int raw = nparts; /* requests that take no binary parts must not carry any */
    switch (env->body_case) {
    case MODA__ENVELOPE__BODY_HARD_CASE: return h_hard_case(st, env->hard_case, parts, nparts, out);
    case MODA__ENVELOPE__BODY_SUBMIT_LABEL_REQUEST: return h_submit(st, env->submit_label_request, parts, nparts, out);
    case MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REQUEST: return h_import(st, env->import_sample_request, parts, nparts, out);
    default: break;
    }
    if (raw) {
        err_t err;
        err_set(&err, ERR_INVALID, "%s carries %d unexpected binary parts", msg_body_name(env->body_case), raw);
        return reply_error(out, ERR_INVALID, &err);
    }
    switch (env->body_case) {
    case MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST: return h_list_queue(st, env->list_queue_request, out);
    case MODA__ENVELOPE__BODY_GET_SAMPLE_REQUEST: return h_get_sample(st, env->get_sample_request, out);
    case MODA__ENVELOPE__BODY_REJECT_SAMPLE_REQUEST: return h_reject(st, env->reject_sample_request, out);
    case MODA__ENVELOPE__BODY_LABELS_SINCE_REQUEST: return h_labels_since(st, env->labels_since_request, out);
    case MODA__ENVELOPE__BODY_LIST_DOMAINS_REQUEST: return h_domains(st, out);
    default: {
        err_t err;
        err_set(&err, ERR_UNSUPPORTED, "moda-label does not handle %s", msg_body_name(env->body_case));
        return reply_error(out, ERR_UNSUPPORTED, &err);
    }
    }
}
