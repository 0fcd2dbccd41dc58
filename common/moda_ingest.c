/* moda_ingest.c — the camera SDK (moda_ingest.h): a bounded drop-oldest queue per camera and a
 * sender thread that moves frames from it to a ZeroMQ PUSH socket.
 *
 * Invariants (under `mu`): the ring holds `count` frames starting at `head`; `inflight` is 1
 * while the sender thread owns a popped frame; captured == sent + dropped + count + inflight.
 * The producer never waits for the network: it copies the pixels into its spare slot outside
 * `mu` and takes `mu` only to swap slots; the sender also holds `mu` only for swaps, never
 * across a ZeroMQ call or a copy (a camera faster than the network must not starve it). The sender pops a frame only when the socket is
 * writable (zmq_poll POLLOUT), so frames wait in our ring — where the oldest can still be
 * dropped — and not in ZeroMQ's pipe, where nothing can be dropped.
 */
#include "moda_ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "msg.h"

typedef struct slot {
    uint8_t *buf;
    size_t cap, size;
    int w, h;
    moda_ingest_fmt_t fmt;
    uint64_t seq;
    int64_t t_us;
} slot_t;

struct moda_ingest {
    char id[64];
    uint64_t instance;
    size_t max_bytes;
    int linger_ms;
    void *ctx;
    int own_ctx;
    void *sock; /* used by the sender thread only after connect returns */

    pthread_mutex_t pmu; /* producers: serialises use of `spare` (held while copying) */
    slot_t spare;        /* the producer copies into this outside `mu`, then swaps it in */
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* producer -> sender: a frame is queued / stop */
    pthread_cond_t drained; /* sender -> flush: queue state changed */
    slot_t *ring;
    int cap, head, count, inflight;
    int closing, stop;
    moda_ingest_stats_t st;
    pthread_t thread;
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static uint64_t g_instance;

static void draw_instance(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    g_instance = x ? x : 1;
}

uint64_t moda_ingest_instance_id(void)
{
    pthread_once(&g_once, draw_instance);
    return g_instance;
}

void moda_ingest_opts_default(moda_ingest_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->queue_len = 2;
    o->sndhwm = 1;
    o->linger_ms = 0;
    o->reconnect_ivl_ms = 100;
    o->reconnect_ivl_max_ms = 2000;
    o->max_frame_bytes = 64u << 20;
}

static int id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > MODA_INGEST_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static Moda__PixelFormat pb_fmt(moda_ingest_fmt_t f)
{
    switch (f) {
    case MODA_INGEST_GRAY8: return MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    case MODA_INGEST_RGB8: return MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    case MODA_INGEST_JPEG: return MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG;
    case MODA_INGEST_PNG: return MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG;
    }
    return MODA__PIXEL_FORMAT__PIXEL_FORMAT_UNSPECIFIED;
}

/* Send the frame in `cur` without blocking. 0 sent, ERR_TIMEOUT not writable, else error. */
static int send_slot(moda_ingest_t *c, const slot_t *cur)
{
    Moda__Frame f = MODA__FRAME__INIT;
    f.camera_id = c->id;
    f.seq = cur->seq;
    f.capture_time_us = cur->t_us;
    f.width = (uint32_t)cur->w;
    f.height = (uint32_t)cur->h;
    f.format = pb_fmt(cur->fmt);
    f.instance_id = c->instance;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &f;
    msg_part_t part = {cur->buf, cur->size};
    return msg_send_to(c->sock, NULL, &env, &part, 1, MSG_DONTWAIT, NULL);
}

static void *sender_main(void *arg)
{
    moda_ingest_t *c = arg;
    slot_t cur = {0};
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->count && !c->stop) pthread_cond_wait(&c->wake, &c->mu);
        if (c->stop) break;
        pthread_mutex_unlock(&c->mu);
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLOUT, 0};
        int n = zmq_poll(&it, 1, 50);
        pthread_mutex_lock(&c->mu);
        if (n <= 0 || !(it.revents & ZMQ_POLLOUT) || !c->count) continue;
        slot_t t = c->ring[c->head]; /* pop the oldest: swap buffers with `cur` */
        c->ring[c->head] = cur;
        cur = t;
        c->head = (c->head + 1) % c->cap;
        c->count--;
        c->inflight = 1;
        pthread_mutex_unlock(&c->mu);
        int rc = send_slot(c, &cur);
        pthread_mutex_lock(&c->mu);
        c->inflight = 0;
        if (!rc) {
            c->st.sent++;
        } else if (rc == ERR_TIMEOUT && c->count < c->cap) {
            /* lost the race for the pipe: put it back at the front, it is still the oldest */
            c->head = (c->head + c->cap - 1) % c->cap;
            slot_t t2 = c->ring[c->head];
            c->ring[c->head] = cur;
            cur = t2;
            c->count++;
        } else {
            c->st.dropped++; /* the queue filled meanwhile: this is its oldest frame */
            if (rc != ERR_TIMEOUT) c->st.send_errors++;
        }
        pthread_cond_broadcast(&c->drained);
    }
    pthread_mutex_unlock(&c->mu);
    free(cur.buf);
    msg_socket_close(&c->sock);
    return NULL;
}

moda_ingest_t *moda_ingest_connect(const char *endpoint, const char *camera_id,
                                   const moda_ingest_opts_t *opts, err_t *err)
{
    moda_ingest_opts_t o;
    if (opts) o = *opts;
    else moda_ingest_opts_default(&o);
    if (!id_ok(camera_id)) {
        err_set(err, ERR_INVALID, "camera id '%s': need 1..%d chars of A-Z a-z 0-9 _ . -",
                camera_id ? camera_id : "(null)", MODA_INGEST_ID_MAX);
        return NULL;
    }
    if (o.queue_len < 1 || o.queue_len > 1024 || o.sndhwm < 1 || o.linger_ms < 0 ||
        o.max_frame_bytes < 1) {
        err_set(err, ERR_INVALID, "camera '%s': bad options (queue_len %d of 1..1024, sndhwm %d "
                "of >= 1, linger_ms %d of >= 0)", camera_id, o.queue_len, o.sndhwm, o.linger_ms);
        return NULL;
    }
    if (msg_endpoint_check(endpoint, err)) return NULL;
    moda_ingest_t *c = calloc(1, sizeof *c);
    slot_t *ring = calloc((size_t)o.queue_len, sizeof *ring);
    if (!c || !ring) {
        free(c);
        free(ring);
        err_set(err, ERR_NOMEM, "camera '%s': allocating the queue", camera_id);
        return NULL;
    }
    snprintf(c->id, sizeof c->id, "%s", camera_id);
    c->instance = o.instance_id ? o.instance_id : moda_ingest_instance_id();
    c->max_bytes = o.max_frame_bytes;
    c->linger_ms = o.linger_ms;
    c->ring = ring;
    c->cap = o.queue_len;
    c->ctx = o.zmq_ctx;
    if (!c->ctx) {
        c->ctx = zmq_ctx_new();
        c->own_ctx = 1;
        if (!c->ctx) {
            err_set(err, ERR_MSG, "camera '%s': zmq_ctx_new: %s", camera_id, zmq_strerror(errno));
            free(ring);
            free(c);
            return NULL;
        }
    }
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.sndhwm = o.sndhwm;
    so.linger_ms = o.linger_ms;
    so.reconnect_ivl_ms = o.reconnect_ivl_ms;
    so.reconnect_ivl_max_ms = o.reconnect_ivl_max_ms;
    c->sock = msg_socket_new(c->ctx, ZMQ_PUSH, &so, err);
    /* queue only to completed connections: with no infer there, frames wait (and the oldest
     * drop) in our ring instead of in a pipe to a peer that may never come */
    int one = 1;
    if (c->sock && zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one)) {
        err_set(err, ERR_MSG, "camera '%s': ZMQ_IMMEDIATE: %s", camera_id, zmq_strerror(errno));
        msg_socket_close(&c->sock);
    }
    if (c->sock && msg_connect(c->sock, endpoint, err)) msg_socket_close(&c->sock);
    int ok = c->sock != NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->pmu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->drained, &ca);
    pthread_condattr_destroy(&ca);
    if (ok && pthread_create(&c->thread, NULL, sender_main, c) != 0) {
        err_set(err, ERR_NOMEM, "camera '%s': cannot start the sender thread", camera_id);
        msg_socket_close(&c->sock);
        ok = 0;
    }
    if (!ok) {
        pthread_mutex_destroy(&c->pmu);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->wake);
        pthread_cond_destroy(&c->drained);
        if (c->own_ctx) zmq_ctx_term(c->ctx);
        free(ring);
        free(c);
        return NULL;
    }
    return c;
}

static int enqueue(moda_ingest_t *c, const void *data, size_t size, int w, int h,
                   moda_ingest_fmt_t fmt, int64_t t_us, err_t *err)
{
    if (size > c->max_bytes)
        return err_set(err, ERR_RANGE, "camera '%s': frame of %zu bytes exceeds max_frame_bytes %zu",
                       c->id, size, c->max_bytes);
    if (!t_us) t_us = msg_now_us();
    pthread_mutex_lock(&c->pmu);
    slot_t *sp = &c->spare;
    if (sp->cap < size) {
        uint8_t *nb = realloc(sp->buf, size);
        if (!nb) {
            pthread_mutex_unlock(&c->pmu);
            return err_set(err, ERR_NOMEM, "camera '%s': %zu bytes for a frame", c->id, size);
        }
        sp->buf = nb;
        sp->cap = size;
    }
    memcpy(sp->buf, data, size);
    sp->size = size;
    sp->w = w;
    sp->h = h;
    sp->fmt = fmt;
    sp->t_us = t_us;
    pthread_mutex_lock(&c->mu);
    int closing = c->closing;
    if (!closing) {
        if (c->count == c->cap) { /* full: drop the oldest */
            c->head = (c->head + 1) % c->cap;
            c->count--;
            c->st.dropped++;
        }
        slot_t *s = &c->ring[(c->head + c->count) % c->cap];
        slot_t t = *s; /* swap: the slot's old buffer becomes the next spare */
        *s = *sp;
        *sp = t;
        s->seq = ++c->st.last_seq;
        c->st.captured++;
        c->count++;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&c->pmu);
    if (closing) return err_set(err, ERR_STATE, "camera '%s': connection is closing", c->id);
    return 0;
}

int moda_ingest_send(moda_ingest_t *cam, const void *pixels, int w, int h, moda_ingest_fmt_t fmt,
                     int64_t capture_time_us, err_t *err)
{
    if (!cam || !pixels) return err_set(err, ERR_INVALID, "moda_ingest_send: NULL camera or pixels");
    if (fmt != MODA_INGEST_GRAY8 && fmt != MODA_INGEST_RGB8)
        return err_set(err, ERR_INVALID, "camera '%s': raw frames must be GRAY8 or RGB8 (got %d)",
                       cam->id, (int)fmt);
    if (w < 1 || h < 1 || w > 65535 || h > 65535)
        return err_set(err, ERR_INVALID, "camera '%s': bad frame size %dx%d", cam->id, w, h);
    size_t n = (size_t)w * (size_t)h * (fmt == MODA_INGEST_RGB8 ? 3u : 1u);
    return enqueue(cam, pixels, n, w, h, fmt, capture_time_us, err);
}

int moda_ingest_send_encoded(moda_ingest_t *cam, const void *data, size_t size, int w, int h,
                             moda_ingest_fmt_t fmt, int64_t capture_time_us, err_t *err)
{
    if (!cam || !data || !size)
        return err_set(err, ERR_INVALID, "moda_ingest_send_encoded: NULL camera or empty data");
    if (fmt != MODA_INGEST_JPEG && fmt != MODA_INGEST_PNG)
        return err_set(err, ERR_INVALID, "camera '%s': encoded frames must be JPEG or PNG (got %d)",
                       cam->id, (int)fmt);
    if (w < 1 || h < 1 || w > 65535 || h > 65535)
        return err_set(err, ERR_INVALID, "camera '%s': bad frame size %dx%d", cam->id, w, h);
    return enqueue(cam, data, size, w, h, fmt, capture_time_us, err);
}

void moda_ingest_stats(moda_ingest_t *cam, moda_ingest_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!cam) return;
    pthread_mutex_lock(&cam->mu);
    *out = cam->st;
    out->queued = (uint64_t)(cam->count + cam->inflight);
    pthread_mutex_unlock(&cam->mu);
}

const char *moda_ingest_camera_id(const moda_ingest_t *cam)
{
    return cam ? cam->id : "";
}

int moda_ingest_flush(moda_ingest_t *cam, int timeout_ms, err_t *err)
{
    if (!cam) return err_set(err, ERR_INVALID, "moda_ingest_flush: NULL camera");
    struct timespec dl;
    deadline_after(&dl, timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&cam->mu);
    int rc = 0;
    while (cam->count + cam->inflight > 0 && !rc)
        if (pthread_cond_timedwait(&cam->drained, &cam->mu, &dl) == ETIMEDOUT) rc = ERR_TIMEOUT;
    int left = cam->count + cam->inflight;
    pthread_mutex_unlock(&cam->mu);
    if (rc) return err_set(err, rc, "camera '%s': %d frames still queued after %d ms", cam->id,
                           left, timeout_ms);
    return 0;
}

void moda_ingest_close(moda_ingest_t **cam, moda_ingest_stats_t *final)
{
    if (!cam || !*cam) return;
    moda_ingest_t *c = *cam;
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    pthread_mutex_unlock(&c->mu);
    if (c->linger_ms > 0) moda_ingest_flush(c, c->linger_ms, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->st.dropped += (uint64_t)c->count; /* never sent: counted as drops */
    c->count = 0;
    if (final) *final = c->st;
    for (int i = 0; i < c->cap; i++) free(c->ring[i].buf);
    free(c->ring);
    free(c->spare.buf);
    pthread_mutex_destroy(&c->pmu);
    if (c->own_ctx) zmq_ctx_term(c->ctx);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->drained);
    free(c);
    *cam = NULL;
}
