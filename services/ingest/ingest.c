/* ingest.c — moda-ingest's cameras at run time (see ingest.h): one thread per camera that
 * paces, reads its source, reopens it with capped exponential backoff, and sends through the
 * SDK's drop-oldest queue; a service timer that mirrors the per-camera counters into Health.
 * Threads share only `mu`/`cv` (stop flag, last error); every wait is a timed wait on `cv`,
 * so a stop request ends every camera within one read or one FFmpeg stall check. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ingest.h"
#include "log.h"
#include "moda_ingest.h"

typedef struct cam {
    struct ingest *ing;
    ingest_cam_cfg_t cfg;
    moda_ingest_t *sdk;
    pthread_t thread;
    int started;
    atomic_uint_fast64_t reopens;
    atomic_int failing; /* in backoff after an error */
    char last_error[ERR_MSG_MAX];
    int new_error;      /* under ing->mu */
    char names[4][48];  /* counter names */
} cam_t;

struct ingest {
    svc_t *svc;
    ingest_cfg_t cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    volatile int stop;
    int ncams;
    cam_t cams[INGEST_MAX_CAMS];
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleep until monotonic time t_ns or a stop request. Returns nonzero when stopping. */
static int wait_until(struct ingest *g, int64_t t_ns)
{
    struct timespec ts = {(time_t)(t_ns / 1000000000LL), (long)(t_ns % 1000000000LL)};
    pthread_mutex_lock(&g->mu);
    while (!g->stop && mono_ns() < t_ns)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts)) break;
    int s = g->stop;
    pthread_mutex_unlock(&g->mu);
    return s;
}

static void cam_fail(cam_t *c, const err_t *e, const char *what)
{
    log_warn("event=source_error camera=%s what=%s code=%d msg=\"%s\"", c->cfg.id, what, e->code,
             e->msg);
    pthread_mutex_lock(&c->ing->mu);
    snprintf(c->last_error, sizeof c->last_error, "camera %s: %s: %s", c->cfg.id, what, e->msg);
    c->new_error = 1;
    pthread_mutex_unlock(&c->ing->mu);
}

static void *cam_main(void *arg)
{
    cam_t *c = arg;
    struct ingest *g = c->ing;
    const int64_t ms = 1000000;
    int64_t backoff = g->cfg.backoff_ms * ms, period = c->cfg.fps > 0 ? (int64_t)(1e9 / c->cfg.fps) : 0;
    int first = 1;
    int64_t next_live = 0;
    while (!g->stop) {
        err_t e = {0};
        if (!first) {
            atomic_store(&c->failing, 1);
            atomic_fetch_add(&c->reopens, 1);
            if (wait_until(g, mono_ns() + backoff)) break;
            backoff = backoff * 2 > g->cfg.backoff_max_ms * ms ? g->cfg.backoff_max_ms * ms : backoff * 2;
        }
        first = 0;
        source_t *src = source_open(&c->cfg.src, &g->stop, &e);
        if (!src) {
            if (!g->stop) cam_fail(c, &e, "open");
            continue;
        }
        log_info("event=source_open camera=%s source=%s", c->cfg.id, c->cfg.src.path);
        int64_t next = mono_ns();
        int bad = 0, end = 0, live = c->cfg.src.kind == SOURCE_STREAM;
        while (!g->stop) {
            /* a live stream is read as fast as it delivers (else its frames pile up in
             * buffers and go stale) and thinned to fps below; other sources are paced here */
            if (period && !live) {
                if (wait_until(g, next)) break;
                next += period;
                if (mono_ns() > next + period) next = mono_ns(); /* late: do not burst */
            }
            source_frame_t fr;
            int rc = source_read(src, &fr, &e);
            if (rc == SOURCE_END) {
                end = 1;
                break;
            }
            if (rc) {
                if (g->stop) break;
                cam_fail(c, &e, "read");
                /* a folder skips an undecodable file; anything else (or many in a row) reopens */
                if (c->cfg.src.kind == SOURCE_FOLDER && ++bad < 16) continue;
                break;
            }
            bad = 0;
            backoff = g->cfg.backoff_ms * ms;
            atomic_store(&c->failing, 0);
            if (period && live) { /* thinning a live stream to fps, across reopens too */
                int64_t t = mono_ns();
                if (t < next_live) continue;
                next_live += period;
                if (next_live <= t) next_live = t + period; /* late: restart the cadence */
            }
            if (moda_ingest_send(c->sdk, fr.data, fr.w, fr.h, fr.fmt, 0, &e)) cam_fail(c, &e, "send");
        }
        source_close(&src);
        if (end && c->cfg.src.kind != SOURCE_STREAM) {
            log_info("event=source_end camera=%s", c->cfg.id);
            break; /* a non-looping folder/video is done; a stream's EOF is reopened */
        }
        if (end) {
            e.code = ERR_IO;
            snprintf(e.msg, sizeof e.msg, "'%s': end of stream", c->cfg.src.path);
            cam_fail(c, &e, "read");
        }
    }
    return NULL;
}

static void publish(struct ingest *g)
{
    int failing = 0;
    for (int i = 0; i < g->ncams; i++) {
        cam_t *c = &g->cams[i];
        moda_ingest_stats_t st;
        moda_ingest_stats(c->sdk, &st);
        *svc_counter(g->svc, c->names[0]) = st.captured;
        *svc_counter(g->svc, c->names[1]) = st.sent;
        *svc_counter(g->svc, c->names[2]) = st.dropped;
        *svc_counter(g->svc, c->names[3]) = atomic_load(&c->reopens);
        failing |= atomic_load(&c->failing);
        char msg[ERR_MSG_MAX];
        int fresh = 0;
        pthread_mutex_lock(&g->mu);
        if (c->new_error) {
            memcpy(msg, c->last_error, sizeof msg);
            c->new_error = 0;
            fresh = 1;
        }
        pthread_mutex_unlock(&g->mu);
        if (fresh) svc_error(g->svc, "%s", msg);
    }
    svc_set_state(g->svc, failing ? MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED
                                  : MODA__SERVICE_STATE__SERVICE_STATE_SERVING);
}

static int on_timer(svc_t *s, void *user)
{
    (void)s;
    publish(user);
    return 0;
}

ingest_t *ingest_new(svc_t *svc, const ingest_cfg_t *cfg, err_t *err)
{
    struct ingest *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(err, ERR_NOMEM, "ingest: out of memory");
        return NULL;
    }
    g->svc = svc;
    g->cfg = *cfg;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < cfg->ncams; i++) {
        cam_t *c = &g->cams[i];
        c->ing = g;
        c->cfg = cfg->cams[i];
        static const char *pre[4] = {"frames_captured_", "frames_sent_", "frames_dropped_",
                                     "source_reopens_"};
        for (int q = 0; q < 4; q++) {
            snprintf(c->names[q], sizeof c->names[q], "%s%s", pre[q], cfg->cams[i].id);
            svc_count(svc, c->names[q], 0);
        }
        moda_ingest_opts_t o;
        moda_ingest_opts_default(&o);
        o.queue_len = c->cfg.queue_len;
        o.sndhwm = cfg->sndhwm;
        o.linger_ms = 0; /* ingest_destroy drains all cameras together, for drain_ms */
        o.zmq_ctx = svc_ctx(svc);
        if (!(c->sdk = moda_ingest_connect(cfg->connect, c->cfg.id, &o, err))) break;
        g->ncams++;
    }
    if (g->ncams < cfg->ncams || svc_add_timer(svc, cfg->stats_ms, on_timer, g, err)) {
        ingest_destroy(&g);
        return NULL;
    }
    for (int i = 0; i < g->ncams; i++) {
        cam_t *c = &g->cams[i];
        if (pthread_create(&c->thread, NULL, cam_main, c)) {
            err_set(err, ERR_NOMEM, "camera %s: cannot start its thread", c->cfg.id);
            ingest_destroy(&g);
            return NULL;
        }
        c->started = 1;
        log_info("event=camera camera=%s source=%s fps=%g queue_len=%d connect=%s", c->cfg.id,
                 c->cfg.src.path, c->cfg.fps, c->cfg.queue_len, cfg->connect);
    }
    return g;
}

void ingest_destroy(ingest_t **ing)
{
    if (!ing || !*ing) return;
    struct ingest *g = *ing;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < g->ncams; i++)
        if (g->cams[i].started) pthread_join(g->cams[i].thread, NULL);
    int64_t until = mono_ns() + (int64_t)g->cfg.linger_ms * 1000000;
    for (int i = 0; i < g->ncams; i++) {
        int64_t left_ms = (until - mono_ns()) / 1000000;
        if (g->cams[i].sdk) moda_ingest_flush(g->cams[i].sdk, left_ms > 0 ? (int)left_ms : 0, NULL);
    }
    for (int i = 0; i < g->ncams; i++) {
        cam_t *c = &g->cams[i];
        moda_ingest_stats_t st;
        moda_ingest_close(&c->sdk, &st);
        *svc_counter(g->svc, c->names[0]) = st.captured;
        *svc_counter(g->svc, c->names[1]) = st.sent;
        *svc_counter(g->svc, c->names[2]) = st.dropped;
        log_info("event=camera_done camera=%s captured=%llu sent=%llu dropped=%llu reopens=%llu",
                 c->cfg.id, (unsigned long long)st.captured, (unsigned long long)st.sent,
                 (unsigned long long)st.dropped, (unsigned long long)atomic_load(&c->reopens));
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    *ing = NULL;
}
