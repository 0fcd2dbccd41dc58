/* infer.c — moda-infer's service logic on the svc loop thread (see infer.h, docs/infer.md):
 * frame intake + validation, camera collision detection, Result publishing, latency
 * histogram, hard cases (token bucket, ack, bounded retry), bank hot swap from the registry.
 *
 * Accounting per camera (Health counters "in.<cam>", "processed.<cam>", "dropped.<cam>",
 * "bad.<cam>", "failed.<cam>"): every well-formed Frame message is counted in; it then ends
 * as exactly one of bad (rejected by validation), dropped (oldest in a full queue),
 * processed (Result published) or failed (model error). Totals: frames_*.
 */
#include "infer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "adapter_bank.h"
#include "hardcase.h"
#include "log.h"
#include "msg.h"
#include "paths.h"
#include "sha256.h"

#define DONE_EP "inproc://moda-infer-done"
#define MAX_CAMERAS 256
#define LAT_BUCKETS 96
#define COLLISION_WINDOW_US 5000000 /* another instance within this: collision, else restart */

typedef struct camera {
    char id[64];
    uint64_t instance, last_seq;
    int64_t last_us;
    int seen;
    uint64_t collisions;
} camera_t;

struct infer {
    svc_t *svc;
    const cfg_t *cfg;
    pool_t *pool;
    swap_t *banks;
    void *pull, *pub, *done, *sub, *dealer, *seg;
    int max_side;
    double min_prob, min_iou, min_stab;
    int64_t hc_timeout_us;
    hc_limiter_t lim;
    hc_queue_t hcq;
    camera_t cams[MAX_CAMERAS];
    int ncams;
    uint64_t lat[LAT_BUCKETS];
    uint64_t lat_n;
    char registry[300];
    int reg_timeout_ms;
    char alias[65];
    int caught_up; /* GetAlias done (first timer tick, so svc_run's state changes come first) */
};

/* ---- small helpers ----------------------------------------------------------------------- */

static void count_cam(svc_t *s, const char *what, const char *cam)
{
    char name[48];
    snprintf(name, sizeof name, "%s.%s", what, cam);
    svc_count(s, name, 1);
    snprintf(name, sizeof name, "frames_%s", what);
    svc_count(s, name, 1);
}

static int camera_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 40) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("._-", id[i])) return 0;
    return 1;
}

static camera_t *camera_get(infer_t *a, const char *id)
{
    for (int i = 0; i < a->ncams; i++)
        if (!strcmp(a->cams[i].id, id)) return &a->cams[i];
    if (a->ncams == MAX_CAMERAS) return NULL;
    camera_t *c = &a->cams[a->ncams++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    return c;
}

/* Latency buckets: upper edge of bucket i = 100 us * 1.2^i (about 100 us .. 4000 s). */
static double lat_edge_us(int i)
{
    double e = 100.0;
    for (int k = 0; k < i; k++) e *= 1.2;
    return e;
}

static void lat_add(infer_t *a, int64_t us)
{
    int i = 0;
    while (i < LAT_BUCKETS - 1 && (double)us > lat_edge_us(i)) i++;
    a->lat[i]++;
    a->lat_n++;
}

static uint64_t lat_pct(const infer_t *a, double q)
{
    if (!a->lat_n) return 0;
    uint64_t want = (uint64_t)(q * (double)a->lat_n + 0.999999), c = 0;
    if (want < 1) want = 1;
    for (int i = 0; i < LAT_BUCKETS; i++)
        if ((c += a->lat[i]) >= want) return (uint64_t)lat_edge_us(i);
    return (uint64_t)lat_edge_us(LAT_BUCKETS - 1);
}

/* ---- frames ------------------------------------------------------------------------------ */

/* Validates and decodes a Frame; 0 with *img, or an error naming the problem. */
static int frame_decode(infer_t *a, const Moda__Frame *f, const msg_t *m, image_t **img, err_t *err)
{
    *img = NULL;
    if (m->nparts != 1)
        return err_set(err, ERR_FORMAT, "frame has %d binary parts, expected 1 (the pixels)",
                       m->nparts);
    uint64_t w = f->width, h = f->height, len = m->parts[0].size;
    if (w < 1 || h < 1 || w > (uint64_t)a->max_side || h > (uint64_t)a->max_side)
        return err_set(err, ERR_RANGE, "frame size %llux%llu outside 1..%d", (unsigned long long)w,
                       (unsigned long long)h, a->max_side);
    int c = 0;
    switch (f->format) {
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8: c = 1; break;
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8: c = 3; break;
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG:
    case MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG: {
        image_t *im = image_decode(m->parts[0].data, len, "frame", err);
        if (!im) return err->code ? err->code : ERR_FORMAT;
        if ((uint64_t)im->w != w || (uint64_t)im->h != h) {
            int rc = err_set(err, ERR_INVALID, "frame says %llux%llu but the image is %dx%d",
                             (unsigned long long)w, (unsigned long long)h, im->w, im->h);
            image_destroy(&im);
            return rc;
        }
        *img = im;
        return 0;
    }
    default: return err_set(err, ERR_UNSUPPORTED, "unknown pixel format %d", (int)f->format);
    }
    if (len != w * h * (uint64_t)c)
        return err_set(err, ERR_INVALID, "frame %llux%llu %s needs %llu bytes, got %llu",
                       (unsigned long long)w, (unsigned long long)h, c == 1 ? "GRAY8" : "RGB8",
                       (unsigned long long)(w * h * c), (unsigned long long)len);
    image_t *im = image_new((int)w, (int)h, c, err);
    if (!im) return err->code;
    memcpy(im->data, m->parts[0].data, len);
    *img = im;
    return 0;
}

/* Two senders with one camera id: a second instance id while the first is live, or (old
 * senders without instance ids) a sequence number that does not increase. */
static void check_collision(infer_t *a, camera_t *c, const Moda__Frame *f, int64_t now)
{
    int coll = 0, restart = 0;
    if (c->seen) {
        if (f->instance_id && c->instance && f->instance_id != c->instance) {
            coll = now - c->last_us < COLLISION_WINDOW_US;
            restart = !coll; /* the old instance went quiet: a restarted camera */
        } else if (f->seq <= c->last_seq) {
            coll = 1; /* non-monotonic seq from what looks like one sender */
        }
    }
    if (coll) {
        c->collisions++;
        svc_count(a->svc, "camera_collisions", 1);
        if ((c->collisions & (c->collisions - 1)) == 0) /* 1, 2, 4, ...: never floods */
            log_warn("event=camera_collision camera=%s seq=%llu last_seq=%llu instance=%llx "
                     "known_instance=%llx count=%llu",
                     c->id, (unsigned long long)f->seq, (unsigned long long)c->last_seq,
                     (unsigned long long)f->instance_id, (unsigned long long)c->instance,
                     (unsigned long long)c->collisions);
    }
    if (restart || f->seq > c->last_seq) c->last_seq = f->seq;
    if (!coll) {
        c->instance = f->instance_id;
        c->last_us = now;
    }
    c->seen = 1;
}

static void seg_reply(infer_t *a, job_t *j, int code, const char *text);

/* Queues a job; the oldest waiting one may be pushed out (a frame: counted dropped; an
 * interactive request: answered STATUS_BUSY). */
static void queue_job(infer_t *a, job_t *j)
{
    job_t *old = NULL;
    pool_push(a->pool, j, &old);
    if (!old) return;
    if (old->kind == JOB_SEGMENT) {
        svc_count(a->svc, "segment_busy", 1);
        seg_reply(a, old, ERR_STATE, "infer is busy: request pushed out of the queue, retry");
    } else {
        count_cam(a->svc, "dropped", old->camera);
    }
    job_free(old);
}

static int on_frame(svc_t *s, void *sock, void *user)
{
    infer_t *a = user;
    for (int k = 0; k < 64; k++) { /* drain a burst, but give the loop back regularly */
        msg_t *m = NULL;
        int rc = svc_recv(s, sock, "frames", &m);
        if (rc == ERR_TIMEOUT) return 0;
        if (rc) {
            svc_count(s, "frames_bad", 1);
            msg_free(&m);
            continue;
        }
        if (m->env->body_case != MODA__ENVELOPE__BODY_FRAME) {
            svc_count(s, "frames_bad", 1);
            log_warn("event=bad_frame reason=\"not a Frame but %s\"", msg_body_name(m->env->body_case));
            msg_free(&m);
            continue;
        }
        const Moda__Frame *f = m->env->frame;
        int64_t now = msg_now_us();
        if (!f->camera_id || !camera_id_ok(f->camera_id)) {
            svc_count(s, "frames_bad", 1);
            log_warn("event=bad_frame reason=\"camera id missing, too long or not [A-Za-z0-9._-]\"");
            msg_free(&m);
            continue;
        }
        camera_t *c = camera_get(a, f->camera_id);
        count_cam(s, "in", f->camera_id);
        err_t err = {0};
        image_t *img = NULL;
        if (frame_decode(a, f, m, &img, &err)) {
            count_cam(s, "bad", f->camera_id);
            log_warn("event=bad_frame camera=%s seq=%llu reason=\"%s\"", f->camera_id,
                     (unsigned long long)f->seq, err.msg);
            msg_free(&m);
            continue;
        }
        if (c) check_collision(a, c, f, now);
        job_t *j = calloc(1, sizeof *j);
        uint8_t *raw = j ? malloc(m->parts[0].size ? m->parts[0].size : 1) : NULL;
        if (!j || !raw) {
            free(j);
            free(raw);
            image_destroy(&img);
            count_cam(s, "failed", f->camera_id);
            svc_error(s, "out of memory queueing a frame of camera %s", f->camera_id);
            msg_free(&m);
            continue;
        }
        j->kind = JOB_FRAME;
        snprintf(j->camera, sizeof j->camera, "%s", f->camera_id);
        j->seq = f->seq;
        j->capture_us = f->capture_time_us;
        j->in_us = now;
        j->format = f->format;
        memcpy(raw, m->parts[0].data, m->parts[0].size);
        j->raw = raw;
        j->raw_len = m->parts[0].size;
        j->img = img;
        msg_free(&m);
        queue_job(a, j);
    }
    return 0;
}

/* ---- hard cases -------------------------------------------------------------------------- */

static void hc_send_due(infer_t *a, int64_t now)
{
    if (!a->dealer) return;
    for (int i = 0; i < a->hcq.n; i++) {
        hc_item_t *it = hc_queue_at(&a->hcq, i);
        if (it->due_us > now) continue;
        Moda__HardCase *hc = moda__hard_case__unpack(NULL, it->pb_len, it->pb);
        if (!hc) continue; /* cannot happen: we packed it */
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_HARD_CASE;
        env.hard_case = hc;
        msg_part_t part = {it->img, it->img_len};
        err_t err = {0};
        int rc = msg_send_to(a->dealer, NULL, &env, &part, 1, MSG_DONTWAIT, &err);
        moda__hard_case__free_unpacked(hc, NULL);
        it->due_us = now + a->hc_timeout_us;
        if (rc) {
            svc_count(a->svc, "hard_cases_send_failed", 1);
            continue;
        }
        svc_count(a->svc, it->sends ? "hard_cases_resent" : "hard_cases_sent", 1);
        it->sends++;
    }
}

static void hard_case(infer_t *a, const job_t *j)
{
    if (!a->dealer) return;
    int bank = j->bank_version != 0;
    Moda__HardCaseReason reason = MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNSPECIFIED;
    if (bank && j->prob < a->min_prob) reason = MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNKNOWN_DOMAIN;
    else if (j->iou < a->min_iou || j->stability < a->min_stab)
        reason = MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNSURE_MASK;
    if (reason == MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNSPECIFIED) return;
    svc_count(a->svc, "hard_cases_found", 1);
    int64_t now = msg_now_us();
    if (!hc_limiter_take(&a->lim, j->camera, now)) {
        svc_count(a->svc, "hard_cases_rate_limited", 1);
        return;
    }
    Moda__RleMask rm = MODA__RLE_MASK__INIT;
    rm.height = (uint32_t)j->img->h;
    rm.width = (uint32_t)j->img->w;
    rm.counts = j->rle;
    Moda__HardCase hc = MODA__HARD_CASE__INIT;
    hc.camera_id = (char *)j->camera;
    hc.seq = j->seq;
    hc.capture_time_us = j->capture_us;
    hc.width = (uint32_t)j->img->w;
    hc.height = (uint32_t)j->img->h;
    hc.format = (Moda__PixelFormat)j->format;
    hc.reason = reason;
    hc.bank_version = j->bank_version;
    hc.domain = (char *)j->domain;
    hc.selector_prob = j->prob;
    hc.iou_pred = j->iou;
    hc.stability = j->stability;
    /* uncertainty: how far below 1 the weakest signal is */
    float lo = j->iou < j->stability ? j->iou : j->stability;
    if (bank && j->prob < lo) lo = j->prob;
    hc.score = 1.0f - lo;
    hc.mask = &rm;
    size_t n = moda__hard_case__get_packed_size(&hc);
    uint8_t *pb = malloc(n ? n : 1);
    err_t err = {0};
    if (!pb) {
        svc_error(a->svc, "out of memory packing a hard case");
        return;
    }
    moda__hard_case__pack(&hc, pb);
    int rc = hc_queue_push(&a->hcq, j->camera, j->seq, pb, n, j->raw, j->raw_len, now, &err);
    free(pb);
    if (rc < 0) svc_error(a->svc, "hard case of %s/%llu not queued: %s", j->camera,
                          (unsigned long long)j->seq, err.msg);
    else if (rc == 1) svc_count(a->svc, "hard_cases_dropped", 1);
    hc_send_due(a, now);
}

static int on_dealer(svc_t *s, void *sock, void *user)
{
    infer_t *a = user;
    for (;;) {
        msg_t *m = NULL;
        int rc = svc_recv(s, sock, "label", &m);
        if (rc == ERR_TIMEOUT) return 0;
        if (rc) {
            msg_free(&m);
            continue;
        }
        if (m->env->body_case == MODA__ENVELOPE__BODY_HARD_CASE_ACK) {
            const Moda__HardCaseAck *k = m->env->hard_case_ack;
            int found = hc_queue_ack(&a->hcq, k->camera_id ? k->camera_id : "", k->seq);
            int ok = !k->status || k->status->code == MODA__STATUS_CODE__STATUS_OK;
            if (!ok) /* refused: label says do not retry */
                log_warn("event=hard_case_refused camera=%s seq=%llu msg=\"%s\"", k->camera_id,
                         (unsigned long long)k->seq, k->status->message ? k->status->message : "");
            svc_count(s, !found ? "hard_cases_ack_unknown" : ok ? "hard_cases_acked" : "hard_cases_refused", 1);
        } else {
            svc_count(s, "label_unexpected", 1);
        }
        msg_free(&m);
    }
}

/* ---- interactive segmentation ---------------------------------------------------------- */

/* Answers a segment job: code 0 = the job's mask, else an error status (ERR_*) with text. */
static void seg_reply(infer_t *a, job_t *j, int code, const char *text)
{
    Moda__Status st = MODA__STATUS__INIT;
    st.code = msg_status_code(code);
    st.message = (char *)(code ? text : "");
    Moda__RleMask rm = MODA__RLE_MASK__INIT;
    Moda__SegmentReply r = MODA__SEGMENT_REPLY__INIT;
    r.status = &st;
    r.embedding_id = j->emb_id;
    if (!code) {
        rm.height = (uint32_t)j->mh;
        rm.width = (uint32_t)j->mw;
        rm.counts = j->rle;
        r.mask = &rm;
        r.iou_pred = j->iou;
        r.stability = j->stability;
        r.cached = j->cached;
    }
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SEGMENT_REPLY;
    env.segment_reply = &r;
    err_t err = {0};
    if (msg_reply(a->seg, j->req, &env, NULL, 0, &err))
        log_warn("event=reply_failed req=segment msg=\"%s\"", err.msg);
    svc_count(a->svc, code ? "segment_failed" : "segment_ok", 1);
}

static int is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

static int on_segment(svc_t *s, void *sock, void *user)
{
    infer_t *a = user;
    for (;;) {
        msg_t *m = NULL;
        int rc = svc_recv(s, sock, "segment", &m);
        if (rc == ERR_TIMEOUT) return 0;
        if (rc) { /* already answered with ErrorReply and counted */
            msg_free(&m);
            continue;
        }
        err_t err = {0};
        if (m->env->body_case != MODA__ENVELOPE__BODY_SEGMENT_REQUEST) {
            msg_reply_error(sock, m, ERR_UNSUPPORTED, "this socket takes SegmentRequest only", &err);
            msg_free(&m);
            continue;
        }
        const Moda__SegmentRequest *q = m->env->segment_request;
        job_t *j = calloc(1, sizeof *j);
        if (!j) {
            msg_reply_error(sock, m, ERR_NOMEM, "out of memory", &err);
            msg_free(&m);
            continue;
        }
        j->kind = JOB_SEGMENT;
        j->req = m;
        j->in_us = msg_now_us();
        int code = 0;
        if (q->n_points % 3 || q->n_points / 3 > 64)
            code = err_set(&err, ERR_INVALID, "points: %zu floats, need x,y,label triplets (at most 64)",
                           q->n_points);
        else if (q->has_box && q->n_box != 4)
            code = err_set(&err, ERR_INVALID, "box: %zu floats, need x0,y0,x1,y1", q->n_box);
        else if (!q->n_points && !q->has_box)
            code = err_set(&err, ERR_INVALID, "no prompt: give points and/or a box");
        else if (m->nparts > 1)
            code = err_set(&err, ERR_FORMAT, "%d binary parts: at most one (the image)", m->nparts);
        else if (m->nparts == 1) {
            uint8_t d[32];
            sha256_buf(m->parts[0].data, m->parts[0].size, d);
            sha256_hex(d, j->emb_id);
            if (!(j->img = image_decode(m->parts[0].data, m->parts[0].size, "segment image", &err)))
                code = err.code ? err.code : ERR_FORMAT;
        } else if (!is_hex64(q->embedding_id)) {
            code = err_set(&err, ERR_INVALID, "no image and no valid embedding_id (64 hex)");
        } else {
            snprintf(j->emb_id, sizeof j->emb_id, "%s", q->embedding_id);
        }
        if (!code) {
            for (size_t i = 0; i < q->n_points; i++) j->points[i] = q->points[i];
            j->n_points = (int)(q->n_points / 3);
            j->has_box = q->has_box;
            if (q->has_box) memcpy(j->box, q->box, sizeof j->box);
            queue_job(a, j);
            continue;
        }
        seg_reply(a, j, code, err.msg);
        job_free(j);
    }
}

/* ---- results ----------------------------------------------------------------------------- */

static void publish(infer_t *a, job_t *j)
{
    Moda__RleMask rm = MODA__RLE_MASK__INIT;
    rm.height = (uint32_t)j->img->h;
    rm.width = (uint32_t)j->img->w;
    rm.counts = j->rle;
    Moda__Result r = MODA__RESULT__INIT;
    r.camera_id = j->camera;
    r.seq = j->seq;
    r.capture_time_us = j->capture_us;
    r.bank_version = j->bank_version;
    r.domain = j->domain;
    r.selector_prob = j->prob;
    r.iou_pred = j->iou;
    r.stability = j->stability;
    r.mask = &rm;
    r.done_time_us = j->done_us;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_RESULT;
    env.result = &r;
    char topic[80];
    snprintf(topic, sizeof topic, "result.%s", j->camera);
    err_t err = {0};
    if (msg_publish(a->pub, topic, &env, NULL, 0, &err))
        svc_count(a->svc, "results_not_sent", 1);
}

static int on_done(svc_t *s, void *sock, void *user)
{
    infer_t *a = user;
    char b[16];
    while (zmq_recv(sock, b, sizeof b, ZMQ_DONTWAIT) >= 0) {
    }
    job_t *j;
    while ((j = pool_take_done(a->pool))) {
        if (j->kind == JOB_SEGMENT) {
            seg_reply(a, j, j->rc, j->errmsg);
        } else if (j->rc) {
            count_cam(s, "failed", j->camera);
            svc_error(s, "frame %s/%llu failed: %s", j->camera, (unsigned long long)j->seq, j->errmsg);
        } else {
            publish(a, j);
            count_cam(s, "processed", j->camera);
            lat_add(a, j->done_us - j->in_us);
            hard_case(a, j);
        }
        job_free(j);
    }
    return 0;
}

/* ---- bank hot swap ----------------------------------------------------------------------- */

static void bank_destroy_fn(void *obj)
{
    abank_t *b = obj;
    abank_destroy(&b);
}

static void *reg_socket(infer_t *a, err_t *err)
{
    void *r = svc_socket(a->svc, ZMQ_REQ, err);
    if (r && msg_connect(r, a->registry, err)) msg_socket_close(&r);
    return r;
}

/* Fetches version v (whole bank), validates it against the loaded model and publishes it
 * into the swap. The current bank keeps serving throughout; on any failure it stays. */
static int bank_load(infer_t *a, uint64_t v)
{
    if (v == swap_version(a->banks)) return 0;
    int64_t t0 = msg_now_us();
    err_t err = {0};
    Moda__GetVersionRequest q = MODA__GET_VERSION_REQUEST__INIT;
    q.version = v;
    q.whole_bank = 1;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &q;
    void *r = reg_socket(a, &err);
    msg_t *rep = NULL;
    uint8_t *buf = NULL;
    abank_t *bank = NULL;
    int rc = r ? msg_request(r, &env, NULL, 0, a->reg_timeout_ms, NULL, &rep, &err) : err.code;
    msg_socket_close(&r);
    if (!rc && rep->env->body_case != MODA__ENVELOPE__BODY_GET_VERSION_REPLY)
        rc = err_set(&err, ERR_FORMAT, "registry answered %s", msg_body_name(rep->env->body_case));
    if (!rc) {
        const Moda__GetVersionReply *g = rep->env->get_version_reply;
        if (g->status && g->status->code != MODA__STATUS_CODE__STATUS_OK)
            rc = err_set(&err, msg_err_code(g->status->code), "registry: %s", g->status->message);
    }
    size_t total = 0;
    if (!rc) {
        for (int i = 0; i < rep->nparts; i++) total += rep->parts[i].size;
        if (!(buf = malloc(total ? total : 1))) rc = err_set(&err, ERR_NOMEM, "out of memory");
    }
    if (!rc) {
        size_t off = 0;
        for (int i = 0; i < rep->nparts; i++) {
            memcpy(buf + off, rep->parts[i].data, rep->parts[i].size);
            off += rep->parts[i].size;
        }
        char what[64];
        snprintf(what, sizeof what, "bank version %llu", (unsigned long long)v);
        bank = abank_from_memory(buf, total, what, pool_base_hash(a->pool),
                                 pool_early_channels(a->pool), &err);
        if (!bank) rc = err.code ? err.code : ERR_FORMAT;
        else if (bank->n_domains < 1) rc = err_set(&err, ERR_INVALID, "%s has no domain", what);
    }
    int64_t t1 = msg_now_us();
    if (!rc && !(rc = swap_publish(a->banks, bank, v, bank_destroy_fn, &err))) {
        bank = NULL;
        int64_t t2 = msg_now_us();
        svc_count(a->svc, "bank_swaps", 1);
        svc_set_state(a->svc, MODA__SERVICE_STATE__SERVICE_STATE_SERVING);
        *svc_counter(a->svc, "bank_load_us") = (uint64_t)(t1 - t0);
        *svc_counter(a->svc, "bank_switch_us") = (uint64_t)(t2 - t1);
        log_info("event=bank_swap version=%llu bytes=%zu load_ms=%.1f switch_us=%lld",
                 (unsigned long long)v, total, (t1 - t0) / 1e3, (long long)(t2 - t1));
    }
    if (rc) {
        svc_count(a->svc, "bank_load_failed", 1);
        /* still serving (old bank or zero-shot), but the alias's bank is not the one in use */
        svc_set_state(a->svc, MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED);
        svc_error(a->svc, "bank version %llu not used: %s", (unsigned long long)v, err.msg);
    }
    abank_destroy(&bank);
    free(buf);
    msg_free(&rep);
    return rc;
}

/* Last-value request: the alias's current version (0 when none). */
static void bank_catch_up(infer_t *a)
{
    err_t err = {0};
    Moda__GetAliasRequest q = MODA__GET_ALIAS_REQUEST__INIT;
    q.alias = a->alias;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
    env.get_alias_request = &q;
    void *r = reg_socket(a, &err);
    msg_t *rep = NULL;
    int rc = r ? msg_request(r, &env, NULL, 0, a->reg_timeout_ms, NULL, &rep, &err) : err.code;
    msg_socket_close(&r);
    if (!rc && rep->env->body_case == MODA__ENVELOPE__BODY_GET_ALIAS_REPLY) {
        const Moda__GetAliasReply *g = rep->env->get_alias_reply;
        if ((!g->status || g->status->code == MODA__STATUS_CODE__STATUS_OK) && g->current &&
            g->current->version)
            bank_load(a, g->current->version);
        else
            log_info("event=no_bank alias=%s msg=\"%s\"", a->alias,
                     g->status && g->status->message ? g->status->message : "alias not set");
    } else {
        log_warn("event=registry_unreachable endpoint=%s msg=\"%s\" (BankChanged will catch up)",
                 a->registry, rc ? err.msg : "unexpected reply");
    }
    msg_free(&rep);
}

static int on_bank(svc_t *s, void *sock, void *user)
{
    infer_t *a = user;
    for (;;) {
        msg_t *m = NULL;
        int rc = svc_recv(s, sock, "bank", &m);
        if (rc == ERR_TIMEOUT) return 0;
        if (!rc && m->env->body_case == MODA__ENVELOPE__BODY_BANK_CHANGED) {
            const Moda__BankChanged *b = m->env->bank_changed;
            if (b->alias && !strcmp(b->alias, a->alias) && b->version) bank_load(a, b->version);
        }
        msg_free(&m);
    }
}

/* ---- timers ------------------------------------------------------------------------------ */

static int on_tick(svc_t *s, void *user)
{
    (void)s;
    infer_t *a = user;
    if (!a->caught_up) {
        a->caught_up = 1;
        if (*a->registry) bank_catch_up(a); /* last value: a late start catches up */
    }
    hc_send_due(a, msg_now_us());
    return 0;
}

static int on_health(svc_t *s, void *user)
{
    infer_t *a = user;
    *svc_counter(s, "queue_depth") = (uint64_t)pool_queue_depth(a->pool);
    *svc_counter(s, "hc_queue_depth") = (uint64_t)a->hcq.n;
    *svc_counter(s, "bank_version") = swap_version(a->banks);
    *svc_counter(s, "latency_p50_us") = lat_pct(a, 0.50);
    *svc_counter(s, "latency_p99_us") = lat_pct(a, 0.99);
    return 0;
}

/* ---- setup ------------------------------------------------------------------------------- */

static void *add_sock(infer_t *a, int type, const char *ep, int bind, const char *name,
                      svc_handler_fn fn, err_t *err)
{
    void *k = svc_socket(a->svc, type, err);
    if (!k) return NULL;
    int rc = bind ? svc_bind(a->svc, k, ep, err) : msg_connect(k, ep, err);
    if (!rc) rc = svc_add_socket(a->svc, k, name, fn, a, err);
    if (rc) {
        msg_socket_close(&k);
        return NULL;
    }
    return k;
}

static int pub_handler(svc_t *s, void *sock, void *user)
{
    (void)s, (void)sock, (void)user;
    return 0;
}

infer_t *infer_new(svc_t *svc, const cfg_t *cfg, err_t *err)
{
    infer_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    a->svc = svc;
    a->cfg = cfg;
    /* --device first: a bad value or `cuda` without a device is a configuration error */
    device_choice_t dev;
    err_t de = {0};
    if (device_select(cfg_str(cfg, "device"), 1, &dev, &de)) {
        err_set(err, ERR_CONFIG, "%s (device from %s)", de.msg, cfg_origin(cfg, "device"));
        goto fail;
    }
    a->max_side = (int)cfg_int(cfg, "max_side");
    a->min_prob = cfg_double(cfg, "min_selector_prob");
    a->min_iou = cfg_double(cfg, "min_iou");
    a->min_stab = cfg_double(cfg, "min_stability");
    a->hc_timeout_us = cfg_int(cfg, "hc_ack_timeout_ms") * 1000;
    a->reg_timeout_ms = (int)cfg_int(cfg, "registry_timeout_ms");
    snprintf(a->registry, sizeof a->registry, "%s", cfg_str(cfg, "registry"));
    snprintf(a->alias, sizeof a->alias, "%s", cfg_str(cfg, "alias"));
    if (hc_limiter_init(&a->lim, cfg_double(cfg, "hc_rate"), (double)cfg_int(cfg, "hc_burst"), err) ||
        hc_queue_init(&a->hcq, (int)cfg_int(cfg, "hc_queue"), err) || !(a->banks = swap_new(err)))
        goto fail;
    /* the done socket is bound before the workers connect (inproc) */
    if (!(a->done = add_sock(a, ZMQ_PULL, DONE_EP, 1, "done", on_done, err))) goto fail;
    char model[4096];
    snprintf(model, sizeof model, "%s", cfg_str(cfg, "model"));
    if (!model[0] && paths_default_model(model, sizeof model)) {
        err_set(err, ERR_RANGE, "default model path too long");
        goto fail;
    }
    a->pool = pool_new(svc_ctx(svc), model, (int)cfg_int(cfg, "workers"),
                       (int)cfg_int(cfg, "worker_threads"), (int)cfg_int(cfg, "queue"), DONE_EP, a->banks,
                       (int)cfg_int(cfg, "embed_cache"), &dev, err);
    if (!a->pool) goto fail;
    if (!(a->pub = add_sock(a, ZMQ_PUB, cfg_str(cfg, "results"), 1, "results", pub_handler, err)))
        goto fail;
    const char *lab = cfg_str(cfg, "label");
    if (*lab && !(a->dealer = add_sock(a, ZMQ_DEALER, lab, 0, "label", on_dealer, err))) goto fail;
    const char *rp = cfg_str(cfg, "registry_pub");
    if (*rp) {
        if (!(a->sub = add_sock(a, ZMQ_SUB, rp, 0, "bank", on_bank, err))) goto fail;
        char topic[80];
        snprintf(topic, sizeof topic, "bank.%s", a->alias);
        zmq_setsockopt(a->sub, ZMQ_SUBSCRIBE, topic, strlen(topic));
    }
    if (svc_add_timer(svc, 100, on_tick, a, err) ||
        svc_add_timer(svc, (int)cfg_int(cfg, "health_ms"), on_health, a, err))
        goto fail;
    on_health(svc, a);
    if (!(a->seg = add_sock(a, ZMQ_ROUTER, cfg_str(cfg, "segment"), 1, "segment", on_segment, err)))
        goto fail;
    /* frames last: nothing arrives before everything else is ready */
    if (!(a->pull = add_sock(a, ZMQ_PULL, cfg_str(cfg, "frames"), 1, "frames", on_frame, err)))
        goto fail;
    log_info("event=ready frames=%s results=%s workers=%d model=%s", cfg_str(cfg, "frames"),
             cfg_str(cfg, "results"), (int)cfg_int(cfg, "workers"), model);
    return a;
fail:
    infer_destroy(&a);
    return NULL;
}

void infer_destroy(infer_t **p)
{
    if (!p || !*p) return;
    infer_t *a = *p;
    pool_destroy(&a->pool);
    swap_destroy(&a->banks);
    hc_queue_free(&a->hcq);
    hc_limiter_free(&a->lim);
    free(a);
    *p = NULL;
}
