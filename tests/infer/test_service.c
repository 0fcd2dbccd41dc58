/* test_service.c — the real moda-infer over ipc with the default model (integration).
 *
 *   test_infer_service MODA_INFER MODEL IMAGE_DIR OUT_DIR
 *
 * 1. Real magtile frames pushed as JPEG bytes and as raw GRAY8/RGB8 pixels: every Result
 *    arrives on result.<camera>, echoes seq and capture time, its RLE decodes (rle.h) to the
 *    frame's size, IoU/stability are in (0, 1], done_time >= capture time.
 * 2. Malformed frames (raw size mismatch, unknown pixel format, garbage JPEG, missing pixel
 *    part, bad camera id): each counted in Health, no Result, the service still answers.
 * 3. Hard cases (min_iou = min_stability = 1 make every frame one) to a stand-in label ROUTER: first it never
 *    acks — resends after the ack timeout and the bounded queue (hc_queue 2) drops the oldest;
 *    then it acks everything it gets — the queue drains to 0.
 * 4. Interactive segmentation (SegmentRequest on --segment): image + point -> mask of the
 *    image's size; the same point on the returned embedding id -> cached, identical mask,
 *    faster; unknown id NOT_FOUND, point outside INVALID/RANGE, no prompt INVALID, garbage
 *    image FORMAT.
 * 5. SIGTERM -> exit 0. Every wait has a deadline; alarm() guards the whole test.
 * 0. Runtime selection first (a few seconds): `--device tpu` exits 2 naming the value;
 *    without a GPU `--device cuda` exits 2 naming the reason (no CUDA device) before the
 *    model loads, and `--set device=auto` serves after logging event=device device=cpu with
 *    that reason (with a GPU: device=cuda). The main run above uses `--device cpu`.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "../unit/t_check.h"
#include "image.h"
#include "kn_cuda.h"
#include "msg.h"
#include "rle.h"

static void *ctx;
static char ctl_ep[200], frames_ep[200], results_ep[200], label_ep[200], seg_ep[200];

static pid_t start(const char *bin, const char *model)
{
    pid_t p = fork();
    if (p == 0) {
        execl(bin, bin, "--bind", ctl_ep, "--frames", frames_ep, "--results", results_ep,
              "--model", model, "--label", label_ep, "--segment", seg_ep, "--min_iou", "1", "--min_stability", "1", "--hc_queue", "2",
              "--hc_burst", "100", "--hc_rate", "100", "--hc_ack_timeout_ms", "300",
              "--health_ms", "50", "--queue", "16", "--device", "cpu", (char *)NULL);
        _exit(127);
    }
    return p;
}

static int stop(pid_t p)
{
    kill(p, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        int st = 0;
        if (waitpid(p, &st, WNOHANG) == p) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    return -2;
}

/* Health counter `name` (UINT64_MAX when Health does not answer or lacks it). */
static uint64_t counter(const char *name)
{
    Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &h;
    void *s = msg_socket_new(ctx, ZMQ_REQ, NULL, NULL);
    msg_t *r = NULL;
    uint64_t v = UINT64_MAX;
    if (s && !msg_connect(s, ctl_ep, NULL) && !msg_request(s, &env, NULL, 0, 3000, NULL, &r, NULL) &&
        r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY) {
        const Moda__HealthReply *hr = r->env->health_reply;
        for (size_t i = 0; i < hr->n_counters; i++)
            if (!strcmp(hr->counters[i]->name, name)) v = hr->counters[i]->value;
        if (v == UINT64_MAX) v = 0; /* answered; counter not created yet */
    }
    msg_free(&r);
    msg_socket_close(&s);
    return v;
}

/* Waits up to ms for counter(name) >= want. */
static uint64_t wait_counter(const char *name, uint64_t want, int ms)
{
    uint64_t v = 0;
    for (int t = 0; t < ms; t += 50) {
        v = counter(name);
        if (v != UINT64_MAX && v >= want) return v;
        usleep(50000);
    }
    return v;
}

/* One SegmentRequest; returns the status code (-1: no reply) and fills *rep (caller frees). */
static int segment(const void *img, size_t len, const char *emb_id, const float *pts, int npts,
                   msg_t **rep, double *ms)
{
    Moda__SegmentRequest q = MODA__SEGMENT_REQUEST__INIT;
    if (emb_id) q.embedding_id = (char *)emb_id;
    q.points = (float *)pts;
    q.n_points = (size_t)npts * 3;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SEGMENT_REQUEST;
    env.segment_request = &q;
    msg_part_t part = {img, len};
    void *s = msg_socket_new(ctx, ZMQ_REQ, NULL, NULL);
    int code = -1;
    *rep = NULL;
    int64_t t0 = msg_now_us();
    if (s && !msg_connect(s, seg_ep, NULL) &&
        !msg_request(s, &env, &part, img ? 1 : 0, 60000, NULL, rep, NULL) &&
        (*rep)->env->body_case == MODA__ENVELOPE__BODY_SEGMENT_REPLY)
        code = (int)(*rep)->env->segment_reply->status->code;
    *ms = (msg_now_us() - t0) / 1e3;
    msg_socket_close(&s);
    return code;
}

static int send_frame(void *push, const char *cam, uint64_t seq, int64_t cap, uint32_t w,
                      uint32_t h, int fmt, const void *data, size_t len, int nparts)
{
    Moda__Frame f = MODA__FRAME__INIT;
    f.camera_id = (char *)cam;
    f.seq = seq;
    f.capture_time_us = cap;
    f.width = w;
    f.height = h;
    f.format = (Moda__PixelFormat)fmt;
    f.instance_id = 0x1234;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &f;
    msg_part_t part = {data, len};
    return msg_send(push, &env, &part, nparts, NULL);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1); /* NUL-terminated: logs are searched as text */
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b) b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* moda-infer with `--model model` plus extra (two arguments), stdout and stderr to log. */
static pid_t start_logged(const char *bin, const char *model, const char *opt, const char *val,
                          const char *log)
{
    pid_t p = fork();
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execl(bin, bin, "--bind", ctl_ep, "--frames", frames_ep, "--results", results_ep,
              "--segment", seg_ep, "--model", model, opt, val, (char *)NULL);
        _exit(127);
    }
    return p;
}

/* Exit status of p within ms (-2: still running, killed). */
static int wait_exit(pid_t p, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        int st = 0;
        if (waitpid(p, &st, WNOHANG) == p) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    return -2;
}

/* ---- 0. --device cpu|cuda|auto ---- */
static void device_checks(const char *bin, const char *model, const char *out)
{
    char why[256] = "", log[1200];
    size_t len = 0;
    int gpu = kcu_device_probe(why, sizeof why) > 0;
    snprintf(log, sizeof log, "%s/device.log", out);
    T(wait_exit(start_logged(bin, model, "--device", "tpu", log), 30000) == 2);
    char *text = (char *)read_file(log, &len);
    T_HAS(text, "--device 'tpu': use cpu, cuda or auto");
    free(text);
    if (!gpu) {
        T(wait_exit(start_logged(bin, model, "--device", "cuda", log), 30000) == 2);
        text = (char *)read_file(log, &len);
        T_HAS(text, "--device cuda: no CUDA device (");
        free(text);
    }
    pid_t p = start_logged(bin, model, "--set", "device=auto", log);
    T(wait_counter("msgs_in", 0, 60000) != UINT64_MAX); /* serving */
    T(stop(p) == 0);
    text = (char *)read_file(log, &len);
    T_HAS(text, gpu ? "event=device device=cuda requested=auto"
                    : "event=device device=cpu requested=auto reason=\"no CUDA device (");
    if (!gpu) T_HAS(text, why);
    free(text);
}

typedef struct expect {
    uint64_t seq;
    int64_t cap;
    int w, h;
    int got;
} expect_t;

/* Receives Results until every expected one came (or deadline); checks each. */
static int collect(void *sub, expect_t *ex, int n, int ms)
{
    int got = 0;
    for (int t = 0; t < ms && got < n;) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) {
            t += 100;
            continue;
        }
        msg_t *m = NULL;
        int rc = msg_recv(sub, 0, NULL, MSG_TOPIC, &m, NULL);
        T(rc == 0 && m && m->env->body_case == MODA__ENVELOPE__BODY_RESULT);
        if (rc || !m || m->env->body_case != MODA__ENVELOPE__BODY_RESULT) {
            msg_free(&m);
            continue;
        }
        const Moda__Result *r = m->env->result;
        T_HAS(m->topic, "result.cam-");
        T(!strcmp(m->topic + 7, r->camera_id));
        expect_t *e = NULL;
        for (int i = 0; i < n; i++)
            if (ex[i].seq == r->seq && !ex[i].got) e = &ex[i];
        T(e != NULL);
        if (e) {
            e->got = 1;
            got++;
            T(r->capture_time_us == e->cap);
            T(r->done_time_us >= e->cap);
            T(r->iou_pred > 0.0f && r->iou_pred <= 1.5f);
            T(r->stability >= 0.0f && r->stability <= 1.0f);
            T(r->bank_version == 0); /* no registry: zero-shot */
            T(r->mask && (int)r->mask->width == e->w && (int)r->mask->height == e->h);
            uint8_t *mask = NULL;
            T(r->mask && rle_decode_string(r->mask->counts, r->mask->height, r->mask->width,
                                           &mask, NULL) == 0);
            size_t fg = 0;
            for (size_t i = 0; mask && i < (size_t)e->w * e->h; i++) fg += mask[i] != 0;
            printf("result %s seq=%llu iou=%.3f stab=%.3f fg=%zu/%d\n", r->camera_id,
                   (unsigned long long)r->seq, r->iou_pred, r->stability, fg, e->w * e->h);
            free(mask);
        }
        msg_free(&m);
    }
    return got;
}

/* Stand-in label: receives hard cases on a ROUTER; acks them when `ack`. Returns how many
 * hard cases arrived within ms. */
static int label_pump(void *router, int ack, int ms, int *acked)
{
    int n = 0;
    for (int t = 0; t < ms;) {
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) <= 0) {
            t += 50;
            continue;
        }
        msg_t *m = NULL;
        int rc = msg_recv(router, 1, NULL, 0, &m, NULL);
        if (!rc && m->env->body_case == MODA__ENVELOPE__BODY_HARD_CASE) {
            const Moda__HardCase *hc = m->env->hard_case;
            n++;
            T(hc->reason == MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNSURE_MASK);
            T(m->nparts == 1 && m->parts[0].size > 0);
            T(hc->mask && hc->mask->width == hc->width);
            if (ack) {
                Moda__Status st = MODA__STATUS__INIT;
                Moda__HardCaseAck k = MODA__HARD_CASE_ACK__INIT;
                k.status = &st;
                k.camera_id = hc->camera_id;
                k.seq = hc->seq;
                Moda__Envelope env = MODA__ENVELOPE__INIT;
                env.body_case = MODA__ENVELOPE__BODY_HARD_CASE_ACK;
                env.hard_case_ack = &k;
                T(msg_reply(router, m, &env, NULL, 0, NULL) == 0);
                (*acked)++;
            }
        } else {
            T(!"label stand-in got something else");
        }
        msg_free(&m);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODA_INFER MODEL IMAGE_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    t_watchdog(220);
    const char *bin = argv[1], *model = argv[2], *imgdir = argv[3], *out = argv[4];
    mkdir(out, 0755);
    snprintf(ctl_ep, sizeof ctl_ep, "ipc://%s/ctl.sock", out);
    snprintf(frames_ep, sizeof frames_ep, "ipc://%s/frames.sock", out);
    snprintf(results_ep, sizeof results_ep, "ipc://%s/results.sock", out);
    snprintf(label_ep, sizeof label_ep, "ipc://%s/label.sock", out);
    snprintf(seg_ep, sizeof seg_ep, "ipc://%s/segment.sock", out);
    ctx = zmq_ctx_new();
    void *router = msg_socket_new(ctx, ZMQ_ROUTER, NULL, NULL);
    T(router && msg_bind(router, label_ep, NULL) == 0);

    double t_dev = msg_now_us();
    device_checks(bin, model, out);
    printf("--device checks: %.1f s\n", (msg_now_us() - t_dev) / 1e6);
    pid_t pid = start(bin, model);
    T(wait_counter("msgs_in", 0, 30000) != UINT64_MAX); /* Health answers: loaded and serving */

    void *sub = msg_socket_new(ctx, ZMQ_SUB, NULL, NULL);
    T(sub && msg_connect(sub, results_ep, NULL) == 0);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "result.", 7);
    void *push = msg_socket_new(ctx, ZMQ_PUSH, NULL, NULL);
    T(push && msg_connect(push, frames_ep, NULL) == 0);
    usleep(300000); /* SUB subscription reaches the PUB */

    /* ---- 2. malformed frames first (cheap) ---- */
    uint8_t junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37);
    T(send_frame(push, "cam-bad", 1, 1, 10, 10, MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8, junk, 299, 1) == 0);
    T(send_frame(push, "cam-bad", 2, 1, 10, 10, 99, junk, 300, 1) == 0);
    T(send_frame(push, "cam-bad", 3, 1, 10, 10, MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG, junk, 300, 1) == 0);
    T(send_frame(push, "cam-bad", 4, 1, 10, 10, MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8, junk, 100, 0) == 0);
    T(send_frame(push, "cam-bad", 5, 1, 0, 10, MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8, junk, 0, 1) == 0);
    T(send_frame(push, "bad camera/id", 6, 1, 10, 10, MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8, junk, 100, 1) == 0);
    T(wait_counter("bad.cam-bad", 5, 5000) == 5);
    T(counter("frames_bad") == 6);
    T(counter("in.cam-bad") == 5);
    T(counter("processed.cam-bad") == 0);

    /* ---- 1. real frames ---- */
    const char *names[] = {"Blowhole_exp1_num_290998.jpg", "Blowhole_exp1_num_4944.jpg"};
    expect_t ex[4];
    int nex = 0;
    int64_t t_send = msg_now_us();
    for (int i = 0; i < 2; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", imgdir, names[i]);
        size_t len = 0;
        uint8_t *b = read_file(path, &len);
        T(b != NULL);
        image_t *im = b ? image_decode(b, len, path, NULL) : NULL;
        T(im != NULL);
        if (!im) {
            free(b);
            continue;
        }
        int64_t cap = 1700000000000000LL + i;
        T(send_frame(push, "cam-a", 10 + (uint64_t)i, cap, (uint32_t)im->w, (uint32_t)im->h,
                     MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG, b, len, 1) == 0);
        ex[nex++] = (expect_t){10 + (uint64_t)i, cap, im->w, im->h, 0};
        /* the same pixels raw, on another camera (gray file: GRAY8; RGB: RGB8) */
        int fmt = im->c == 1 ? MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8 : MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
        T(send_frame(push, "cam-b", 20 + (uint64_t)i, cap + 5, (uint32_t)im->w, (uint32_t)im->h, fmt,
                     im->data, (size_t)im->w * im->h * im->c, 1) == 0);
        ex[nex++] = (expect_t){20 + (uint64_t)i, cap + 5, im->w, im->h, 0};
        image_destroy(&im);
        free(b);
    }
    /* ---- 3a. meanwhile the label stand-in never acks ---- */
    int acked = 0;
    int got = collect(sub, ex, nex, 120000);
    double secs = (msg_now_us() - t_send) / 1e6;
    T(got == nex);
    printf("%d frames in %.2f s: %.2f frames/s (zero-shot, 1 worker)\n", got, secs, got / secs);
    T(counter("frames_processed") == (uint64_t)nex);
    T(counter("processed.cam-a") == 2 && counter("processed.cam-b") == 2);
    T(counter("frames_dropped") == 0);
    uint64_t p50 = counter("latency_p50_us"), p99 = counter("latency_p99_us");
    printf("latency p50 %.0f ms p99 %.0f ms (histogram bucket edges)\n", p50 / 1e3, p99 / 1e3);
    T(p50 > 0 && p99 >= p50);
    int seen = label_pump(router, 0, 1200, &acked);
    T(seen >= 3); /* 2 queued items (bounded) sent at least once and resent after 300 ms */
    T(wait_counter("hard_cases_resent", 1, 3000) >= 1);
    T(counter("hard_cases_found") == (uint64_t)nex);
    T(counter("hard_cases_dropped") == (uint64_t)nex - 2); /* hc_queue 2: oldest dropped */
    T(counter("hc_queue_depth") == 2);
    T(counter("hard_cases_acked") == 0);
    /* ---- 3b. now it acks: the queue drains ---- */
    label_pump(router, 1, 1500, &acked);
    T(acked >= 2);
    T(wait_counter("hard_cases_acked", 2, 3000) == 2);
    T(wait_counter("hc_queue_depth", 0, 1) == 0 || counter("hc_queue_depth") == 0);
    printf("hard cases: found %llu sent %llu resent %llu dropped %llu acked %llu\n",
           (unsigned long long)counter("hard_cases_found"), (unsigned long long)counter("hard_cases_sent"),
           (unsigned long long)counter("hard_cases_resent"), (unsigned long long)counter("hard_cases_dropped"),
           (unsigned long long)counter("hard_cases_acked"));

    /* ---- 4. interactive segmentation: image, then the cached embedding ---- */
    {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", imgdir, names[1]);
        size_t len = 0;
        uint8_t *b = read_file(path, &len);
        image_t *im = b ? image_decode(b, len, path, NULL) : NULL;
        T(im != NULL);
        float pt[3] = {im ? im->w / 2.0f : 1, im ? im->h / 2.0f : 1, 1};
        msg_t *r1 = NULL, *r2 = NULL, *r3 = NULL;
        double ms1 = 0, ms2 = 0, ms3 = 0;
        T(segment(b, len, NULL, pt, 1, &r1, &ms1) == 0);
        const Moda__SegmentReply *s1 = r1 ? r1->env->segment_reply : NULL;
        T(s1 && !s1->cached && strlen(s1->embedding_id) == 64 && s1->mask && im &&
          (int)s1->mask->width == im->w && (int)s1->mask->height == im->h && s1->iou_pred > 0);
        uint8_t *mk = NULL;
        T(s1 && s1->mask && rle_decode_string(s1->mask->counts, s1->mask->height, s1->mask->width, &mk, NULL) == 0);
        free(mk);
        T(segment(NULL, 0, s1 ? s1->embedding_id : "", pt, 1, &r2, &ms2) == 0);
        const Moda__SegmentReply *s2 = r2 ? r2->env->segment_reply : NULL;
        T(s2 && s2->cached && s1 && !strcmp(s2->mask->counts, s1->mask->counts) &&
          s2->iou_pred == s1->iou_pred);
        printf("segment: image %.0f ms (encoder), cached embedding %.0f ms\n", ms1, ms2);
        T(ms2 < ms1);
        msg_free(&r2);
        T(segment(NULL, 0, "00000000000000000000000000000000000000000000000000000000000000ff", pt, 1,
                  &r2, &ms3) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
        msg_free(&r2);
        float out_pt[3] = {1e6f, 1, 1};
        int c = segment(NULL, 0, s1 ? s1->embedding_id : "", out_pt, 1, &r3, &ms3);
        T(c == MODA__STATUS_CODE__STATUS_INVALID || c == MODA__STATUS_CODE__STATUS_RANGE);
        msg_free(&r3);
        T(segment(b, len, NULL, NULL, 0, &r3, &ms3) == MODA__STATUS_CODE__STATUS_INVALID);
        msg_free(&r3);
        T(segment(junk, sizeof junk, NULL, pt, 1, &r3, &ms3) == MODA__STATUS_CODE__STATUS_FORMAT);
        msg_free(&r3);
        msg_free(&r1);
        image_destroy(&im);
        free(b);
    }

    /* ---- 2b. a camera id collision: same camera id, seq going back (seq 5 after 11) ---- */
    uint8_t small[256];
    memset(small, 128, sizeof small);
    T(send_frame(push, "cam-a", 5, 1, 16, 16, MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8, small, 256, 1) == 0);
    T(wait_counter("camera_collisions", 1, 3000) == 1);
    T(wait_counter("processed.cam-a", 3, 30000) == 3); /* counted, still served */
    T(counter("frames_in") == 5 + 1 + 4 + 1 - 1); /* bad camera id is not a camera: not "in" */

    T(stop(pid) == 0);
    msg_socket_close(&push);
    msg_socket_close(&sub);
    msg_socket_close(&router);
    zmq_ctx_term(ctx);
    return t_done("infer_service");
}
