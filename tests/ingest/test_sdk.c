/* test_sdk — the camera SDK (common/moda_ingest.h) against a PULL receiver in this process.
 *
 * Checks: argument errors; with no receiver the queue keeps only the newest queue_len frames
 * (captured == sent + dropped + queued at every step); with a receiver that reads slowly the
 * received seqs increase, each frame's pixels carry its own seq, the newest frame arrives, and
 * at the end captured == received + dropped and sent == received exactly; after a stall the
 * frames that survive are the newest ones (oldest-first dropping). Then frames/s at 1024x768
 * RGB over ipc and tcp (printed). Every receive has a timeout; alarm() ends a hang. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "moda_ingest.h"
#include "msg.h"
#include "../unit/t_check.h"

static void *ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ipc socket files this test bound, removed at exit (libzmq leaves them behind) */
static char bound[8][128];
static int nbound;

static void unlink_bound(void)
{
    for (int i = 0; i < nbound; i++) unlink(bound[i]);
}

static void *pull_new(const char *ep, int rcvhwm)
{
    if (!strncmp(ep, "ipc://", 6) && nbound < 8) snprintf(bound[nbound++], sizeof bound[0], "%s", ep + 6);
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.rcvhwm = rcvhwm;
    so.rcvtimeo_ms = 2000;
    void *s = msg_socket_new(ctx, ZMQ_PULL, &so, NULL);
    if (s && msg_bind(s, ep, NULL)) msg_socket_close(&s);
    return s;
}

static void fill(uint8_t *px, size_t n, uint64_t seq)
{
    memset(px, (int)(seq * 7 & 0xff), n);
    memcpy(px, &seq, sizeof seq);
}

/* Receive one frame within timeout_ms; returns its seq (0 = nothing) and checks it. */
static uint64_t recv_frame(void *pull, int timeout_ms, const char *cam, int w, int h)
{
    zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return 0;
    msg_t *m = NULL;
    err_t e = {0};
    int rc = msg_recv(pull, 0, NULL, 0, &m, &e);
    uint64_t seq = 0;
    T(rc == 0);
    if (!rc && m->env->body_case == MODA__ENVELOPE__BODY_FRAME) {
        Moda__Frame *f = m->env->frame;
        seq = f->seq;
        T(!strcmp(f->camera_id, cam));
        T(f->instance_id == moda_ingest_instance_id() && f->instance_id != 0);
        T((int)f->width == w && (int)f->height == h);
        T(f->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
        T(m->nparts == 1 && m->parts[0].size == (size_t)w * h * 3);
        uint64_t px_seq = 0;
        if (m->nparts == 1 && m->parts[0].size >= 8) memcpy(&px_seq, m->parts[0].data, 8);
        T(px_seq == seq); /* the pixels that travel are this frame's own */
        T(f->capture_time_us > 0);
    } else {
        T(!"not a frame");
    }
    msg_free(&m);
    return seq;
}

static void test_args(void)
{
    err_t e = {0};
    T(!moda_ingest_connect("ipc:///tmp/x", "bad id", NULL, &e) && e.code == ERR_INVALID);
    T_HAS(e.msg, "bad id");
    T(!moda_ingest_connect("nonsense", "cam", NULL, &e) && e.code == ERR_INVALID);
    char longid[MODA_INGEST_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    T(!moda_ingest_connect("ipc:///tmp/x", longid, NULL, &e) && e.code == ERR_INVALID);
    longid[MODA_INGEST_ID_MAX] = 0;
    moda_ingest_t *ok = moda_ingest_connect("ipc:///tmp/x", longid, NULL, &e);
    T(ok != NULL);
    moda_ingest_close(&ok, NULL);
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.queue_len = 0;
    T(!moda_ingest_connect("ipc:///tmp/x", "cam", &o, &e) && e.code == ERR_INVALID);
    moda_ingest_opts_default(&o);
    o.max_frame_bytes = 1000;
    moda_ingest_t *c = moda_ingest_connect("ipc:///tmp/moda-sdk-nobody.sock", "cam", &o, &e);
    T(c != NULL);
    uint8_t px[48 * 3] = {0};
    T(moda_ingest_send(c, px, 0, 4, MODA_INGEST_RGB8, 0, &e) == ERR_INVALID);
    T(moda_ingest_send(c, px, 4, 4, (moda_ingest_fmt_t)9, 0, &e) == ERR_INVALID);
    T(moda_ingest_send(c, NULL, 4, 4, MODA_INGEST_RGB8, 0, &e) == ERR_INVALID);
    T(moda_ingest_send_encoded(c, px, 10, 4, 4, MODA_INGEST_RGB8, 0, &e) == ERR_INVALID);
    T(moda_ingest_send(c, px, 40, 40, MODA_INGEST_GRAY8, 0, &e) == ERR_RANGE); /* 1600 > 1000 */
    moda_ingest_stats_t st;
    moda_ingest_stats(c, &st);
    T(st.captured == 0 && st.last_seq == 0); /* refused frames get no seq */
    moda_ingest_close(&c, NULL);
    T(c == NULL);
    moda_ingest_close(&c, NULL); /* NULL-safe */
}

/* Encoded frames travel as they are, with their format and size. */
static void test_encoded(void)
{
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/moda-sdk-enc-%d.sock", (int)getpid());
    void *pull = pull_new(ep, 4);
    err_t e = {0};
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.zmq_ctx = ctx;
    moda_ingest_t *c = moda_ingest_connect(ep, "enc", &o, &e);
    T(c && pull);
    if (!c || !pull) return;
    static const uint8_t fake_png[] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10, 1, 2, 3};
    T(moda_ingest_send_encoded(c, fake_png, sizeof fake_png, 640, 480, MODA_INGEST_PNG, 1234, &e) == 0);
    zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
    msg_t *m = NULL;
    T(zmq_poll(&it, 1, 3000) == 1 && msg_recv(pull, 0, NULL, 0, &m, NULL) == 0);
    if (m) {
        Moda__Frame *f = m->env->frame;
        T(f && f->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG && f->width == 640 && f->height == 480);
        T(f && f->seq == 1 && f->capture_time_us == 1234 && !strcmp(f->camera_id, "enc"));
        T(m->nparts == 1 && m->parts[0].size == sizeof fake_png &&
          !memcmp(m->parts[0].data, fake_png, sizeof fake_png));
    }
    msg_free(&m);
    moda_ingest_close(&c, NULL);
    msg_socket_close(&pull);
}

/* No receiver: nothing can be sent; only the newest queue_len frames stay queued. */
static void test_no_receiver(void)
{
    err_t e = {0};
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.queue_len = 3;
    moda_ingest_t *c = moda_ingest_connect("ipc:///tmp/moda-sdk-nobody.sock", "cam-a", &o, &e);
    T(c != NULL);
    if (!c) return;
    uint8_t px[8 * 8 * 3];
    double t0 = now_s();
    for (uint64_t i = 1; i <= 200; i++) {
        fill(px, sizeof px, i);
        T(moda_ingest_send(c, px, 8, 8, MODA_INGEST_RGB8, 0, &e) == 0);
        moda_ingest_stats_t st;
        moda_ingest_stats(c, &st);
        T(st.captured == i && st.last_seq == i);
        T(st.captured == st.sent + st.dropped + st.queued);
        T(st.queued <= 3);
    }
    T(now_s() - t0 < 1.0); /* never blocked */
    moda_ingest_stats_t st;
    moda_ingest_stats(c, &st);
    T(st.sent == 0 && st.dropped == 197 && st.queued == 3);
    T(moda_ingest_flush(c, 100, &e) == ERR_TIMEOUT);
    moda_ingest_close(&c, &st);
    T(st.captured == 200 && st.dropped == 200 && st.sent == 0);
}

typedef struct {
    moda_ingest_t *cam;
    int n, w, h;
    double fps; /* 0 = as fast as possible */
} prod_t;

static void *producer(void *arg)
{
    prod_t *p = arg;
    size_t sz = (size_t)p->w * p->h * 3;
    uint8_t *px = malloc(sz);
    for (int i = 1; px && i <= p->n; i++) {
        fill(px, sz, (uint64_t)i);
        err_t e = {0};
        T(moda_ingest_send(p->cam, px, p->w, p->h, MODA_INGEST_RGB8, 0, &e) == 0);
        if (p->fps > 0) usleep((useconds_t)(1e6 / p->fps));
    }
    free(px);
    return NULL;
}

/* A slow receiver: drops happen, oldest first; the accounting is exact at the end. */
static void test_slow_receiver(void)
{
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/moda-sdk-slow-%d.sock", (int)getpid());
    void *pull = pull_new(ep, 1);
    T(pull != NULL);
    err_t e = {0};
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.queue_len = 2;
    o.zmq_ctx = ctx;
    moda_ingest_t *c = moda_ingest_connect(ep, "slow-cam", &o, &e);
    T(c != NULL);
    if (!c || !pull) return;
    prod_t p = {c, 400, 64, 48, 1000};
    pthread_t th;
    pthread_create(&th, NULL, producer, &p);
    uint64_t prev = 0, n = 0, last = 0;
    int increasing = 1;
    double t0 = now_s();
    for (;;) {
        uint64_t s = recv_frame(pull, 1000, "slow-cam", 64, 48);
        if (!s) break;
        if (s <= prev) increasing = 0;
        prev = last = s;
        n++;
        usleep(8000); /* ~125 frames/s against 1000 produced */
        if (now_s() - t0 > 20) break;
    }
    pthread_join(th, NULL);
    T(increasing);
    T(last == 400); /* the newest frame arrives */
    moda_ingest_stats_t st;
    moda_ingest_close(&c, &st);
    printf("slow receiver: captured %llu received %llu dropped %llu\n",
           (unsigned long long)st.captured, (unsigned long long)n, (unsigned long long)st.dropped);
    T(st.captured == 400);
    T(st.sent == n);
    T(st.captured == n + st.dropped);
    T(st.dropped > 100); /* it was really slow */
    msg_socket_close(&pull);
}

/* A receiver that stalls completely, then resumes: the queued survivors are the newest. */
static void test_oldest_first(void)
{
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/moda-sdk-oldest-%d.sock", (int)getpid());
    void *pull = pull_new(ep, 1);
    err_t e = {0};
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.queue_len = 4;
    o.zmq_ctx = ctx;
    moda_ingest_t *c = moda_ingest_connect(ep, "cam-b", &o, &e);
    T(c && pull);
    if (!c || !pull) return;
    prod_t p = {c, 50, 32, 32, 0};
    usleep(100000); /* connected */
    producer(&p);   /* 50 frames while nobody reads */
    usleep(200000);
    uint64_t got[64], n = 0, s;
    while (n < 64 && (s = recv_frame(pull, 500, "cam-b", 32, 32))) got[n++] = s;
    moda_ingest_stats_t st;
    moda_ingest_close(&c, &st);
    T(n >= 4 && st.captured == n + st.dropped);
    /* whatever ZeroMQ had already accepted comes first; then the 4 newest, nothing between */
    if (n >= 4) T(got[n - 4] == 47 && got[n - 3] == 48 && got[n - 2] == 49 && got[n - 1] == 50);
    printf("stalled receiver: received %llu of 50 (last four %llu..%llu)\n", (unsigned long long)n,
           (unsigned long long)(n >= 4 ? got[n - 4] : 0), (unsigned long long)(n ? got[n - 1] : 0));
    msg_socket_close(&pull);
}

/* Frames/s at 1024x768 RGB: a camera producing as fast as it can for 1 s, a receiver that
 * reads as fast as it can; what arrives per second is the SDK's throughput. */
static atomic_int bench_stop;

static void *bench_producer(void *arg)
{
    prod_t *p = arg;
    size_t sz = (size_t)p->w * p->h * 3;
    uint8_t *px = malloc(sz);
    for (uint64_t i = 1; px && !atomic_load(&bench_stop); i++) {
        memcpy(px, &i, sizeof i); /* recv_frame checks the seq in the pixels */
        err_t e = {0};
        T(moda_ingest_send(p->cam, px, p->w, p->h, MODA_INGEST_RGB8, 0, &e) == 0);
        p->n = (int)i;
        if (p->fps > 0) usleep((useconds_t)(1e6 / p->fps));
        for (moda_ingest_stats_t st; p->fps < 0 && !atomic_load(&bench_stop);) {
            moda_ingest_stats(p->cam, &st); /* capacity mode: offer a frame when one left */
            if (!st.queued) break;
            usleep(100);
        }
    }
    free(px);
    return NULL;
}

static void bench(const char *ep_in, const char *label, double fps)
{
    void *pull = pull_new(ep_in, 4);
    char ep[256] = ""; /* the bound address: a tcp port "*" resolved */
    size_t epn = sizeof ep;
    if (pull) zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, ep, &epn);
    err_t e = {0};
    moda_ingest_opts_t o;
    moda_ingest_opts_default(&o);
    o.zmq_ctx = ctx;
    moda_ingest_t *c = moda_ingest_connect(ep, "bench", &o, &e);
    T(c && pull);
    if (!c || !pull) return;
    usleep(100000); /* connected */
    prod_t p = {c, 0, 1024, 768, fps};
    pthread_t th;
    atomic_store(&bench_stop, 0);
    pthread_create(&th, NULL, bench_producer, &p);
    uint64_t n = 0;
    double t0 = now_s();
    while (now_s() - t0 < 1.0 && recv_frame(pull, 1000, "bench", 1024, 768)) n++;
    double dt = now_s() - t0;
    atomic_store(&bench_stop, 1);
    pthread_join(th, NULL);
    while (recv_frame(pull, 300, "bench", 1024, 768)) n++;
    moda_ingest_stats_t st;
    moda_ingest_close(&c, &st);
    printf("bench %s 1024x768 RGB, camera at %s: %.0f frames/s received (%.2f GB/s); "
           "captured %llu = received %llu + dropped %llu\n", label, fps > 0 ? "30 fps" : fps < 0 ? "one frame queued at a time" : "full speed",
           n / dt, n * 1024.0 * 768 * 3 / dt / 1e9, (unsigned long long)st.captured,
           (unsigned long long)n, (unsigned long long)st.dropped);
    T(st.captured == n + st.dropped);
    T(n > 10);
    msg_socket_close(&pull);
}

int main(void)
{
    t_watchdog(120);
    ctx = zmq_ctx_new();
    test_args();
    test_encoded();
    test_no_receiver();
    test_slow_receiver();
    test_oldest_first();
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/moda-sdk-bench-%d.sock", (int)getpid());
    bench(ep, "ipc", 0);
    bench("tcp://127.0.0.1:*", "tcp", 0);
    bench(ep, "ipc", 30);
    bench(ep, "ipc", -1);
    bench("tcp://127.0.0.1:*", "tcp", -1);
    zmq_ctx_term(ctx);
    unlink_bound();
    return t_done("ingest_sdk");
}
