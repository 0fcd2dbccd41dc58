/* test_service — the real moda-ingest process against a PULL receiver standing in for infer.
 *
 *   cameras: a synthetic camera keeps streaming while a camera on a missing folder and one on
 *            an unreachable RTSP URL are retried with capped backoff (reopen counts bounded
 *            both ways), Health shows the counters and DEGRADED, SIGTERM -> exit 0, and the
 *            final accounting line satisfies captured == received + dropped exactly;
 *   folder:  the magtile images arrive once each, in sorted name order, pixel-identical to
 *            image_load of the file, seq 1..N;
 *   video:   a video encoded here with libavcodec (FFV1, lossless) decodes to exactly its frame
 *            count, in order, with the encoded gray levels.
 * Usage: test_ingest_service MODA_INGEST_BIN DATA_DIR OUT_DIR. alarm() ends any hang. */
#include <dirent.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "http_stub.h"
#include "image.h"
#include "msg.h"
#include "../unit/t_check.h"

static const char *bin, *data_dir, *out_dir;
static void *ctx;
static char frames_ep[256], ctl_ep[256];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Start moda-ingest with the common flags plus `extra` (NULL-terminated); stderr to `log`. */
static pid_t start(const char *log, const char **extra)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--bind";
    argv[n++] = ctl_ep;
    argv[n++] = "--connect";
    argv[n++] = frames_ep;
    argv[n++] = "--stats-ms";
    argv[n++] = "50";
    while (*extra && n < 62) argv[n++] = *extra++;
    argv[n] = NULL;
    pid_t p = fork();
    if (p == 0) {
        if (!freopen(log, "w", stderr)) _exit(126);
        execv(bin, (char **)argv);
        _exit(127);
    }
    return p;
}

/* SIGTERM and wait up to 10 s; returns the exit status (-1 signal, -2 did not exit). */
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

static void *pull_new(void)
{
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.rcvhwm = 2;
    void *s = msg_socket_new(ctx, ZMQ_PULL, &so, NULL);
    if (s && msg_bind(s, frames_ep, NULL)) msg_socket_close(&s);
    return s;
}

/* One frame within timeout_ms (0 = none); caller frees. */
static msg_t *recv_frame(void *pull, int timeout_ms)
{
    zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
    msg_t *m = NULL;
    int rc = msg_recv(pull, 0, NULL, 0, &m, NULL);
    T(rc == 0 && m && m->env->body_case == MODA__ENVELOPE__BODY_FRAME && m->nparts == 1);
    if (rc || !m || m->env->body_case != MODA__ENVELOPE__BODY_FRAME || m->nparts != 1) msg_free(&m);
    return m;
}

static Moda__HealthReply *health(msg_t **keep)
{
    Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &h;
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    void *s = msg_socket_new(ctx, ZMQ_REQ, &so, NULL);
    msg_t *r = NULL;
    int rc = s ? msg_connect(s, ctl_ep, NULL) : -1;
    if (!rc) rc = msg_request(s, &env, NULL, 0, 2000, NULL, &r, NULL);
    msg_socket_close(&s);
    if (rc || r->env->body_case != MODA__ENVELOPE__BODY_HEALTH_REPLY) {
        msg_free(&r);
        return NULL;
    }
    *keep = r;
    return r->env->health_reply;
}

static uint64_t counter(const Moda__HealthReply *h, const char *name)
{
    for (size_t i = 0; h && i < h->n_counters; i++)
        if (!strcmp(h->counters[i]->name, name)) return h->counters[i]->value;
    return UINT64_MAX;
}

/* From the log: "event=camera_done camera=ID captured=A sent=B dropped=C". */
static int final_counts(const char *log, const char *cam, unsigned long long v[3])
{
    FILE *f = fopen(log, "r");
    char line[1024], key[96];
    int found = 0;
    snprintf(key, sizeof key, "event=camera_done camera=%s ", cam);
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, key);
        if (p && sscanf(p + strlen(key), "captured=%llu sent=%llu dropped=%llu", &v[0], &v[1], &v[2]) == 3)
            found = 1;
    }
    if (f) fclose(f);
    return found;
}

static void test_cameras(void)
{
    char conf[512], log[512];
    snprintf(conf, sizeof conf, "%s/cams.conf", out_dir);
    snprintf(log, sizeof log, "%s/cams.log", out_dir);
    FILE *f = fopen(conf, "w");
    T(f != NULL);
    if (!f) return;
    fprintf(f, "backoff_ms = 50\nbackoff_max_ms = 400\nstall_ms = 1000\n"
               "[camera.good]\nsource = synthetic:64x48\nfps = 40\n"
               "[camera.nofolder]\nsource = folder:%s/does-not-exist\n"
               "[camera.badurl]\nsource = rtsp://127.0.0.1:9/none\n", out_dir);
    fclose(f);
    void *pull = pull_new();
    T(pull != NULL);
    const char *extra[] = {"--config", conf, NULL};
    pid_t p = start(log, extra);
    uint64_t good = 0, prev = 0, other = 0;
    int increasing = 1;
    double t0 = now_s(), last = 0, maxgap = 0; /* gaps between frames, not start-up time */
    while (now_s() - t0 < 3.0) {
        msg_t *m = recv_frame(pull, 1000);
        double t = now_s();
        if (!m) {
            if (last > 0 && t - last > maxgap) maxgap = t - last;
            continue;
        }
        if (!strcmp(m->env->frame->camera_id, "good")) {
            if (m->env->frame->seq <= prev) increasing = 0;
            prev = m->env->frame->seq;
            good++;
            if (last > 0 && t - last > maxgap) maxgap = t - last;
            last = t;
            /* synthetic frames carry their index in row 0: it equals the seq */
            uint64_t k = 0;
            const uint8_t *px = m->parts[0].data;
            for (int i = 0; i < 8; i++) k |= (uint64_t)px[3 * i] << (8 * i);
            T(k == m->env->frame->seq);
        } else {
            other++;
        }
        msg_free(&m);
    }
    msg_t *keep = NULL;
    Moda__HealthReply *h = health(&keep);
    T(h != NULL);
    uint64_t r_nf = counter(h, "source_reopens_nofolder"), r_bu = counter(h, "source_reopens_badurl");
    printf("cameras: good %llu frames in 3 s (max gap %.2f s), reopens nofolder %llu badurl %llu\n",
           (unsigned long long)good, maxgap, (unsigned long long)r_nf, (unsigned long long)r_bu);
    T(good >= 45 && increasing && maxgap < 0.5); /* the good camera never stopped */
    T(other == 0);
    /* backoff 50, 100, 200, 400, 400, ... ms: ~9 tries in 3 s; without backoff thousands */
    T(r_nf >= 4 && r_nf <= 14);
    T(r_bu >= 2 && r_bu <= 14);
    T(counter(h, "frames_captured_good") + 3 >= good); /* Health lags by <= stats_ms (50 ms) */
    T(counter(h, "frames_captured_nofolder") == 0);
    T(h && h->state == MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED);
    T_HAS(h ? h->last_error : NULL, "camera ");
    msg_free(&keep);
    /* stop; keep receiving what is still queued, then check the books */
    kill(p, SIGTERM);
    msg_t *m;
    while ((m = recv_frame(pull, 700))) {
        if (!strcmp(m->env->frame->camera_id, "good")) good++;
        msg_free(&m);
    }
    int st = 0;
    for (int i = 0; i < 500 && waitpid(p, &st, WNOHANG) != p; i++) usleep(10000);
    T(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!WIFEXITED(st)) stop(p);
    unsigned long long v[3] = {0};
    T(final_counts(log, "good", v));
    printf("cameras: good captured %llu = received %llu + dropped %llu\n", v[0], (unsigned long long)good, v[2]);
    T(v[0] == good + v[2] && v[1] == good);
    msg_socket_close(&pull);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_folder(void)
{
    char dir[512], log[512];
    snprintf(dir, sizeof dir, "%s/cl/magtile/images", data_dir);
    snprintf(log, sizeof log, "%s/folder.log", out_dir);
    char *names[512];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && n < 512 && (e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] != '.' && dot && (!strcmp(dot, ".jpg") || !strcmp(dot, ".png")))
            names[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    T(n > 10);
    if (n <= 10) return;
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    void *pull = pull_new();
    char src[600];
    snprintf(src, sizeof src, "folder:%s", dir);
    const char *extra[] = {"--camera-id", "tiles", "--source", src, "--fps", "0", "--loop=false",
                           "--queue-len", "1024", NULL};
    pid_t p = start(log, extra);
    int got = 0, ok_order = 1, ok_px = 1;
    msg_t *m;
    while ((m = recv_frame(pull, 3000))) {
        Moda__Frame *fr = m->env->frame;
        got++;
        if (fr->seq != (uint64_t)got) ok_order = 0;
        if (got <= n && (got == 1 || got == n / 2 || got == n || got % 7 == 0)) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, names[got - 1]);
            image_t *im = image_load(path, NULL);
            if (!im || (int)fr->width != im->w || (int)fr->height != im->h ||
                m->parts[0].size != (size_t)im->w * im->h * im->c ||
                memcmp(m->parts[0].data, im->data, m->parts[0].size))
                ok_px = 0;
            image_destroy(&im);
        }
        msg_free(&m);
    }
    printf("folder: %d of %d images received\n", got, n);
    T(got == n && ok_order && ok_px);
    msg_t *keep = NULL;
    Moda__HealthReply *h = health(&keep);
    T(counter(h, "frames_captured_tiles") == (uint64_t)n && counter(h, "frames_dropped_tiles") == 0);
    msg_free(&keep);
    T(stop(p) == 0);
    for (int i = 0; i < n; i++) free(names[i]);
    msg_socket_close(&pull);
}

/* Encode `nframes` flat gray frames (Y = 16 + 6*i) of w x h with FFV1 into a Matroska file. */
static int make_video(const char *path, int w, int h, int nframes)
{
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_FFV1);
    AVFormatContext *oc = NULL;
    if (!codec || avformat_alloc_output_context2(&oc, NULL, "matroska", path) < 0) return -1;
    AVStream *st = avformat_new_stream(oc, NULL);
    AVCodecContext *cc = avcodec_alloc_context3(codec);
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    int rc = -1;
    if (!st || !cc || !fr || !pkt) goto out;
    cc->width = w;
    cc->height = h;
    cc->pix_fmt = AV_PIX_FMT_YUV420P;
    cc->time_base = (AVRational){1, 25};
    st->time_base = cc->time_base;
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (avcodec_open2(cc, codec, NULL) < 0 || avcodec_parameters_from_context(st->codecpar, cc) < 0)
        goto out;
    if (avio_open(&oc->pb, path, AVIO_FLAG_WRITE) < 0 || avformat_write_header(oc, NULL) < 0) goto out;
    fr->format = cc->pix_fmt;
    fr->width = w;
    fr->height = h;
    if (av_frame_get_buffer(fr, 0) < 0) goto out;
    for (int i = 0; i <= nframes; i++) {
        AVFrame *in = NULL;
        if (i < nframes) {
            if (av_frame_make_writable(fr) < 0) goto out;
            for (int y = 0; y < h; y++) memset(fr->data[0] + y * fr->linesize[0], 16 + 6 * i, (size_t)w);
            for (int y = 0; y < h / 2; y++) {
                memset(fr->data[1] + y * fr->linesize[1], 128, (size_t)w / 2);
                memset(fr->data[2] + y * fr->linesize[2], 128, (size_t)w / 2);
            }
            fr->pts = i;
            in = fr;
        }
        if (avcodec_send_frame(cc, in) < 0) goto out;
        while (avcodec_receive_packet(cc, pkt) == 0) {
            av_packet_rescale_ts(pkt, cc->time_base, st->time_base);
            pkt->stream_index = st->index;
            if (av_interleaved_write_frame(oc, pkt) < 0) goto out;
        }
    }
    rc = av_write_trailer(oc) < 0 ? -1 : 0;
out:
    av_packet_free(&pkt);
    av_frame_free(&fr);
    avcodec_free_context(&cc);
    if (oc && oc->pb) avio_closep(&oc->pb);
    avformat_free_context(oc);
    return rc;
}

static void test_video(void)
{
    char path[512], log[512], src[600];
    snprintf(path, sizeof path, "%s/gray.mkv", out_dir);
    snprintf(log, sizeof log, "%s/video.log", out_dir);
    const int N = 30;
    T(make_video(path, 96, 64, N) == 0);
    void *pull = pull_new();
    snprintf(src, sizeof src, "video:%s", path);
    const char *extra[] = {"--camera-id", "vid", "--source", src, "--fps", "0", "--loop=false",
                           "--queue-len", "1024", NULL};
    pid_t p = start(log, extra);
    int got = 0, ok = 1;
    msg_t *m;
    while ((m = recv_frame(pull, 3000))) {
        Moda__Frame *fr = m->env->frame;
        got++;
        const uint8_t *px = m->parts[0].data;
        /* Y = 16 + 6k (limited range) -> RGB gray (Y - 16) * 255 / 219 */
        int want = (int)((6.0 * (got - 1)) * 255.0 / 219.0 + 0.5);
        size_t c = (size_t)(32 * 96 + 48) * 3;
        if (fr->seq != (uint64_t)got || fr->width != 96 || fr->height != 64 ||
            fr->format != MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8 || abs(px[c] - want) > 3 ||
            abs(px[c + 1] - want) > 3 || abs(px[c + 2] - want) > 3) {
            if (ok) fprintf(stderr, "video frame %d: seq %llu %ux%u px %d (want %d)\n", got,
                            (unsigned long long)fr->seq, fr->width, fr->height, px[c], want);
            ok = 0;
        }
        msg_free(&m);
    }
    printf("video: %d of %d frames decoded\n", got, N);
    T(got == N && ok);
    T(stop(p) == 0);
    msg_socket_close(&pull);
}

/* An HTTP stream that ends (EOF) is reopened and frames keep coming with increasing seqs;
 * a server that accepts but never answers stalls the open: ERR_TIMEOUT after stall_ms, and
 * reopen with backoff; SIGTERM during a stall still exits 0 at once. Needs gray.mkv. */
static void test_streams(void)
{
    int port = 0, stall_port = 0;
    char file[600];
    snprintf(file, sizeof file, "%s/gray.mkv", out_dir);
    int srv = http_stub_start(file, &port);
    int stall_fd = stub_listen(&stall_port); /* listens, never accepts: connect works, no data */
    T(srv == 0 && stall_fd >= 0);
    if (srv || stall_fd < 0) return;
    char conf[512], log[512];
    snprintf(conf, sizeof conf, "%s/streams.conf", out_dir);
    snprintf(log, sizeof log, "%s/streams.log", out_dir);
    FILE *f = fopen(conf, "w");
    if (f) {
        fprintf(f, "backoff_ms = 100\nbackoff_max_ms = 200\nstall_ms = 300\nfps = 0\nqueue_len = 1024\n"
                   "drain_ms = 200\n"
                   "[camera.net]\nsource = http://127.0.0.1:%d/gray.mkv\n"
                   "[camera.stuck]\nsource = http://127.0.0.1:%d/live\n"
                   "[camera.thin]\nsource = http://127.0.0.1:%d/gray.mkv\nfps = 5\n",
                port, stall_port, port);
        fclose(f);
    }
    void *pull = pull_new();
    const char *extra[] = {"--config", conf, NULL};
    pid_t p = start(log, extra);
    uint64_t n = 0, prev = 0, thin = 0;
    int increasing = 1, cycled = 0;
    double t0 = now_s();
    msg_t *m;
    while (now_s() - t0 < 4.0 && (m = recv_frame(pull, 2000))) {
        Moda__Frame *fr = m->env->frame;
        if (!strcmp(fr->camera_id, "thin")) {
            thin++;
            msg_free(&m);
            continue;
        }
        T(!strcmp(fr->camera_id, "net"));
        if (fr->seq <= prev) increasing = 0;
        prev = fr->seq;
        n++;
        const uint8_t *px = m->parts[0].data;
        if (fr->seq == 31 && px[(32 * 96 + 48) * 3] < 4) cycled = 1; /* frame 1 of pass 2 */
        msg_free(&m);
    }
    msg_t *keep = NULL;
    Moda__HealthReply *h = health(&keep);
    uint64_t r_net = counter(h, "source_reopens_net"), r_stuck = counter(h, "source_reopens_stuck");
    printf("streams: %llu frames over http (reopens %llu), stalled server reopens %llu\n",
           (unsigned long long)n, (unsigned long long)r_net, (unsigned long long)r_stuck);
    T(n >= 60 && increasing && cycled); /* at least two passes through the 30-frame file */
    T(r_net >= 1 && r_net != UINT64_MAX);
    T(r_stuck >= 3 && r_stuck <= 12); /* 300 ms stall + 100..200 ms backoff in ~4 s */
    /* the same stream thinned to 5 fps: at most ~20 in 4 s (1000 unthinned) */
    printf("streams: thinned to 5 fps: %llu frames in 4 s\n", (unsigned long long)thin);
    T(thin >= 5 && thin <= 24);
    msg_free(&keep);
    FILE *lf = fopen(log, "r");
    char line[1024];
    int saw_stall = 0;
    while (lf && fgets(line, sizeof line, lf))
        if (strstr(line, "camera=stuck") && strstr(line, "no data for 300 ms")) saw_stall = 1;
    if (lf) fclose(lf);
    T(saw_stall);
    double ts = now_s();
    T(stop(p) == 0);
    T(now_s() - ts < 2.0); /* a camera stuck in FFmpeg does not hold up shutdown */
    http_stub_stop();
    close(stall_fd);
    msg_socket_close(&pull);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODA_INGEST DATA_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    t_watchdog(150);
    bin = argv[1];
    data_dir = argv[2];
    out_dir = argv[3];
    mkdir(out_dir, 0755);
    snprintf(frames_ep, sizeof frames_ep, "ipc:///tmp/moda-ingest-test-%d-f.sock", (int)getpid());
    snprintf(ctl_ep, sizeof ctl_ep, "ipc:///tmp/moda-ingest-test-%d-c.sock", (int)getpid());
    ctx = zmq_ctx_new();
    test_folder();
    test_video();
    test_streams();
    test_cameras();
    zmq_ctx_term(ctx);
    unlink(frames_ep + 6); /* the ipc file of our PULL socket (libzmq leaves it behind) */
    return t_done("ingest_service");
}
