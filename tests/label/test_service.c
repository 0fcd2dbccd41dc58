/* test_service — the real moda-label over ipc: hard cases from a DEALER are acked and listed,
 * a duplicate is acked again but not stored twice, SIGKILL after acks (and in the middle of a
 * stream) loses no acked hard case, labels (RLE and PNG) are validated against the sample,
 * LabelsSince returns them with their images, malformed requests get error replies and Health
 * still answers. Prints request latencies (p50/p99).
 * Usage: test_label_service MODA_LABEL_BIN SCRATCH_DIR */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "../unit/t_check.h"
#include "image.h"
#include "msg.h"
#include "rle.h"

#define W 16
#define H 12

static char ctl_ep[600], hc_ep[600], data_dir[600];
static const char *bin;
static void *ctx;

static pid_t start(void)
{
    pid_t p = fork();
    if (p == 0) {
        execl(bin, bin, "--data", data_dir, "--bind", ctl_ep, "--hard-case-bind", hc_ep, "--map-size-kb", "64",
              "--log-level", "error", (char *)NULL);
        _exit(127);
    }
    return p;
}

/* Returns the exit status (-1 when killed by a signal). */
static int stop(pid_t p, int sig)
{
    kill(p, sig);
    int st = 0;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void *sock_new(int type, const char *ep)
{
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.reconnect_ivl_ms = 10;
    so.rcvtimeo_ms = 5000;
    so.sndtimeo_ms = 5000;
    void *s = msg_socket_new(ctx, type, &so, NULL);
    if (s) msg_connect(s, ep, NULL);
    return s;
}

/* One request on a fresh REQ socket to the control endpoint (a REQ that timed out is dead). */
static int call(Moda__Envelope *env, const msg_part_t *parts, int n, msg_t **out)
{
    void *s = sock_new(ZMQ_REQ, ctl_ep);
    err_t err = {0};
    int rc = msg_request(s, env, parts, n, 5000, NULL, out, &err);
    if (rc) fprintf(stderr, "call %s: %s\n", msg_body_name(env->body_case), err.msg);
    msg_socket_close(&s);
    return rc;
}

static int wait_health(void)
{
    for (int i = 0; i < 100; i++) {
        Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
        env.health_request = &h;
        void *s = sock_new(ZMQ_REQ, ctl_ep);
        msg_t *r = NULL;
        int rc = msg_request(s, &env, NULL, 0, 200, NULL, &r, NULL);
        int ok = !rc && r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY;
        msg_free(&r);
        msg_socket_close(&s);
        if (ok) return 1;
        usleep(50000);
    }
    return 0;
}

static uint64_t counter(const char *name)
{
    Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &h;
    msg_t *r = NULL;
    uint64_t v = UINT64_MAX;
    if (!call(&env, NULL, 0, &r) && r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY)
        for (size_t i = 0; i < r->env->health_reply->n_counters; i++)
            if (!strcmp(r->env->health_reply->counters[i]->name, name)) v = r->env->health_reply->counters[i]->value;
    msg_free(&r);
    return v;
}

static uint8_t img[W * H];
static char *pred;

static int send_hc(void *dealer, const char *cam, uint64_t seq, float score, int good)
{
    Moda__RleMask m = MODA__RLE_MASK__INIT;
    m.height = H;
    m.width = W;
    m.counts = pred;
    Moda__HardCase hc = MODA__HARD_CASE__INIT;
    hc.camera_id = (char *)cam;
    hc.seq = seq;
    hc.capture_time_us = 1000 + (int64_t)seq;
    hc.width = W;
    hc.height = good ? H : H + 1; /* a wrong size makes the image check fail */
    hc.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    hc.reason = MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNKNOWN_DOMAIN;
    hc.score = score;
    hc.domain = "guess";
    hc.mask = good ? &m : NULL;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HARD_CASE;
    env.hard_case = &hc;
    img[0] = (uint8_t)seq;
    msg_part_t p = {img, sizeof img};
    return msg_send(dealer, &env, &p, 1, NULL);
}

/* Receives one HardCaseAck (timeout 5 s). */
static Moda__HardCaseAck *recv_ack(void *dealer, msg_t **m)
{
    if (msg_recv(dealer, 0, NULL, 0, m, NULL) || !*m || (*m)->env->body_case != MODA__ENVELOPE__BODY_HARD_CASE_ACK)
        return NULL;
    return (*m)->env->hard_case_ack;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void pct(const char *what, int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    printf("latency %-28s p50 %6.3f ms  p99 %6.3f ms  (n=%d)\n", what, v[n / 2] / 1000.0, v[n * 99 / 100] / 1000.0, n);
}

/* Every acked (camera, seq) -> sample id must be stored with that identity. */
static int check_acked(const uint64_t *ids, int n, const char *cam)
{
    int ok = 1;
    for (int i = 0; i < n; i++) {
        if (!ids[i]) continue;
        Moda__GetSampleRequest q = MODA__GET_SAMPLE_REQUEST__INIT;
        q.sample_id = ids[i];
        q.include_image = 1;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_GET_SAMPLE_REQUEST;
        env.get_sample_request = &q;
        msg_t *r = NULL;
        if (call(&env, NULL, 0, &r) || r->env->body_case != MODA__ENVELOPE__BODY_GET_SAMPLE_REPLY ||
            r->env->get_sample_reply->status->code || strcmp(r->env->get_sample_reply->sample->camera_id, cam) ||
            r->env->get_sample_reply->sample->seq != (uint64_t)i || r->nparts != 1 || r->parts[0].size != W * H ||
            ((const uint8_t *)r->parts[0].data)[0] != (uint8_t)i)
            ok = 0;
        msg_free(&r);
    }
    return ok;
}

int main(int argc, char **argv)
{
    t_watchdog(150);
    if (argc != 3) return 2;
    bin = argv[1];
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", argv[2], argv[2]);
    if (system(cmd)) return 1;
    snprintf(data_dir, sizeof data_dir, "%s/db", argv[2]);
    snprintf(ctl_ep, sizeof ctl_ep, "ipc://%s/c.sock", argv[2]);
    snprintf(hc_ep, sizeof hc_ep, "ipc://%s/hc.sock", argv[2]);
    if (strlen(ctl_ep) > 100) { /* ipc paths are limited: fall back to /tmp */
        snprintf(ctl_ep, sizeof ctl_ep, "ipc:///tmp/moda-label-test-%d-c.sock", (int)getpid());
        snprintf(hc_ep, sizeof hc_ep, "ipc:///tmp/moda-label-test-%d-hc.sock", (int)getpid());
    }
    msg_set_sender("test-label");
    ctx = zmq_ctx_new();
    uint8_t pm[W * H];
    for (int i = 0; i < W * H; i++) pm[i] = (uint8_t)(i % 5 == 0);
    rle_encode_string(pm, H, W, &pred, NULL);

    pid_t pid = start();
    T(wait_health());

    /* 1. 60 hard cases from a DEALER: all acked, not duplicates */
    enum { NHC = 60 };
    uint64_t ids[NHC] = {0};
    void *dealer = sock_new(ZMQ_DEALER, hc_ep);
    int64_t lat[400];
    int nl = 0;
    int acked = 0;
    for (int i = 0; i < NHC; i++) {
        int64_t t0 = now_us();
        T(send_hc(dealer, "cam-A", (uint64_t)i, (float)((i * 37) % 100) / 100.0f, 1) == 0);
        msg_t *m = NULL;
        Moda__HardCaseAck *a = recv_ack(dealer, &m);
        if (a && !a->status->code && !a->duplicate && a->seq == (uint64_t)i && !strcmp(a->camera_id, "cam-A")) {
            ids[i] = a->sample_id;
            acked++;
        }
        lat[nl++] = now_us() - t0;
        msg_free(&m);
    }
    T(acked == NHC);
    pct("hard case -> ack (fsync)", lat, nl);

    /* 2. duplicates: acked again with the stored id, not stored twice */
    int dups = 0;
    for (int i = 0; i < 5; i++) {
        T(send_hc(dealer, "cam-A", (uint64_t)i, 0.5f, 1) == 0);
        msg_t *m = NULL;
        Moda__HardCaseAck *a = recv_ack(dealer, &m);
        dups += a && !a->status->code && a->duplicate && a->sample_id == ids[i];
        msg_free(&m);
    }
    T(dups == 5);
    T(counter("store_samples") == NHC && counter("queue_depth") == NHC && counter("hard_cases_duplicate") == 5);

    /* 3. queue: all of them, highest score first; paging */
    Moda__ListQueueRequest lq = MODA__LIST_QUEUE_REQUEST__INIT;
    lq.limit = 1000;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST;
    env.list_queue_request = &lq;
    msg_t *r = NULL;
    T(!call(&env, NULL, 0, &r) && r->env->body_case == MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY);
    if (r && r->env->list_queue_reply) {
        const Moda__ListQueueReply *q = r->env->list_queue_reply;
        T(q->total == NHC && q->n_items == NHC);
        int ordered = 1;
        for (size_t i = 1; i < q->n_items; i++) ordered &= q->items[i]->score <= q->items[i - 1]->score;
        T(ordered && !strcmp(q->items[0]->predicted_domain, "guess") && q->items[0]->predicted_mask &&
          !strcmp(q->items[0]->predicted_mask->counts, pred));
    }
    msg_free(&r);

    /* 4. bad input on both sockets: error replies, counters, service keeps answering */
    msg_t *m = NULL;
    T(send_hc(dealer, "cam-A", 999, 0.1f, 0) == 0);
    Moda__HardCaseAck *a = recv_ack(dealer, &m);
    T(a && a->status->code == MODA__STATUS_CODE__STATUS_INVALID && a->seq == 999);
    if (a) printf("wrong-size hard case refused: %s\n", a->status->message);
    msg_free(&m);
    T(zmq_send(dealer, "garbage", 7, 0) == 7); /* not protobuf */
    T(msg_recv(dealer, 0, NULL, 0, &m, NULL) == 0 && m->env->body_case == MODA__ENVELOPE__BODY_ERROR &&
      m->env->error->status->code == MODA__STATUS_CODE__STATUS_FORMAT);
    msg_free(&m);
    Moda__HardCase hc0 = MODA__HARD_CASE__INIT; /* no image part */
    hc0.camera_id = "cam-A";
    env.body_case = MODA__ENVELOPE__BODY_HARD_CASE;
    env.hard_case = &hc0;
    T(msg_send(dealer, &env, NULL, 0, NULL) == 0);
    a = recv_ack(dealer, &m);
    T(a && a->status->code != 0);
    msg_free(&m);

    Moda__SubmitLabelRequest sl = MODA__SUBMIT_LABEL_REQUEST__INIT;
    Moda__RleMask lm = MODA__RLE_MASK__INIT;
    lm.height = H;
    lm.width = W;
    lm.counts = pred;
    sl.sample_id = 123456; /* unknown */
    sl.domain = "newdom";
    sl.mask = &lm;
    sl.actor = "op";
    env.body_case = MODA__ENVELOPE__BODY_SUBMIT_LABEL_REQUEST;
    env.submit_label_request = &sl;
    T(!call(&env, NULL, 0, &r) && r->env->submit_label_reply->status->code == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    msg_free(&r);
    sl.sample_id = ids[3];
    lm.height = H + 1; /* wrong size */
    T(!call(&env, NULL, 0, &r) && r->env->submit_label_reply->status->code == MODA__STATUS_CODE__STATUS_INVALID);
    if (r) printf("wrong-size label refused: %s\n", r->env->submit_label_reply->status->message);
    msg_free(&r);
    lm.height = H;
    lm.counts = "zzzz"; /* garbage RLE */
    T(!call(&env, NULL, 0, &r) && r->env->submit_label_reply->status->code != 0);
    msg_free(&r);
    sl.domain = "bad/name";
    lm.counts = pred;
    T(!call(&env, NULL, 0, &r) && r->env->submit_label_reply->status->code == MODA__STATUS_CODE__STATUS_INVALID);
    msg_free(&r);
    void *raw = sock_new(ZMQ_REQ, ctl_ep); /* garbage on the control socket */
    T(zmq_send(raw, "\x08\x01\xff", 3, 0) == 3);
    T(msg_recv(raw, 0, NULL, 0, &m, NULL) == 0 && m->env->body_case == MODA__ENVELOPE__BODY_ERROR);
    msg_free(&m);
    msg_socket_close(&raw);
    T(counter("msgs_bad") >= 2 && counter("requests_failed") >= 5);

    /* 5. labels: RLE for sample 3, PNG for sample 4; LabelsSince returns both with images */
    sl.domain = "newdom";
    sl.sample_id = ids[3];
    T(!call(&env, NULL, 0, &r) && r->env->submit_label_reply->status->code == 0);
    msg_free(&r);
    image_t *pimg = image_new(W, H, 1, NULL);
    for (int i = 0; i < W * H; i++) pimg->data[i] = (uint8_t)(i % 3 == 0 ? 255 : 0);
    char png_path[700];
    snprintf(png_path, sizeof png_path, "%s/mask.png", argv[2]);
    T(!image_save_png(pimg, png_path, NULL));
    FILE *f = fopen(png_path, "rb");
    static unsigned char pngbuf[65536];
    size_t pnglen = f ? fread(pngbuf, 1, sizeof pngbuf, f) : 0;
    if (f) fclose(f);
    sl.sample_id = ids[4];
    sl.mask = NULL;
    sl.mask_png = 1;
    msg_part_t pp = {pngbuf, pnglen};
    T(!call(&env, &pp, 1, &r) && r->env->submit_label_reply->status->code == 0);
    msg_free(&r);
    Moda__LabelsSinceRequest ls = MODA__LABELS_SINCE_REQUEST__INIT;
    ls.domain = "newdom";
    ls.include_holdout = 1;
    env.body_case = MODA__ENVELOPE__BODY_LABELS_SINCE_REQUEST;
    env.labels_since_request = &ls;
    T(!call(&env, NULL, 0, &r) && r->env->labels_since_reply->status->code == 0);
    if (r && r->env->labels_since_reply && r->env->labels_since_reply->n_samples == 2 && r->nparts == 2) {
        const Moda__LabelsSinceReply *q = r->env->labels_since_reply;
        T(q->next_cursor == 2 && !q->more && q->samples[0]->sample_id == ids[3] && q->samples[1]->sample_id == ids[4]);
        T(!strcmp(q->samples[0]->mask->counts, pred));
        uint8_t *dm = NULL;
        T(!rle_decode_string(q->samples[1]->mask->counts, H, W, &dm, NULL));
        int same = dm != NULL;
        for (int i = 0; same && i < W * H; i++) same = dm[i] == (pimg->data[i] != 0);
        T(same);
        free(dm);
        T(r->parts[0].size == W * H && ((const uint8_t *)r->parts[0].data)[0] == 3);
    } else T(0);
    msg_free(&r);
    image_destroy(&pimg);
    T(counter("queue_depth") == NHC - 2 && counter("store_labels") == 2);

    /* latency of small requests */
    nl = 0;
    for (int i = 0; i < 300; i++) {
        Moda__GetSampleRequest gs = MODA__GET_SAMPLE_REQUEST__INIT;
        gs.sample_id = ids[i % NHC];
        gs.include_image = 1;
        env.body_case = MODA__ENVELOPE__BODY_GET_SAMPLE_REQUEST;
        env.get_sample_request = &gs;
        int64_t t0 = now_us();
        int rc = call(&env, NULL, 0, &r);
        lat[nl++] = now_us() - t0;
        T(!rc);
        msg_free(&r);
    }
    pct("GetSample (new REQ socket)", lat, nl);

    /* 6. SIGKILL after the acks: every acked hard case and both labels survive */
    msg_socket_close(&dealer);
    stop(pid, SIGKILL);
    pid = start();
    T(wait_health());
    T(counter("store_samples") == NHC && counter("store_labels") == 2 && counter("queue_depth") == NHC - 2);
    T(check_acked(ids, NHC, "cam-A"));

    /* 7. SIGKILL in the middle of a stream of 200: every acked one is there after restart */
    enum { NS = 200 };
    static uint64_t sids[NS];
    dealer = sock_new(ZMQ_DEALER, hc_ep);
    for (int i = 0; i < NS; i++) T(send_hc(dealer, "cam-B", (uint64_t)i, 0.3f, 1) == 0);
    int got = 0;
    while (got < NS / 2) {
        a = recv_ack(dealer, &m);
        if (!a) break;
        if (!a->status->code && a->seq < NS) sids[a->seq] = a->sample_id, got++;
        msg_free(&m);
    }
    stop(pid, SIGKILL);
    msg_free(&m);
    while ((a = recv_ack(dealer, &m)) != NULL) { /* acks already queued in our socket */
        if (!a->status->code && a->seq < NS) sids[a->seq] = a->sample_id, got++;
        msg_free(&m);
        zmq_setsockopt(dealer, ZMQ_RCVTIMEO, (int[]){100}, sizeof(int));
    }
    msg_free(&m);
    msg_socket_close(&dealer);
    printf("killed after %d of %d acks\n", got, NS);
    pid = start();
    T(wait_health());
    T(check_acked(sids, NS, "cam-B"));
    T(counter("store_samples") >= NHC + (uint64_t)got);
    /* resending everything (what infer's retry queue does) stores each exactly once */
    dealer = sock_new(ZMQ_DEALER, hc_ep);
    int reacked = 0;
    for (int i = 0; i < NS; i++) {
        T(send_hc(dealer, "cam-B", (uint64_t)i, 0.3f, 1) == 0);
        a = recv_ack(dealer, &m);
        if (a && !a->status->code && (!sids[i] || (a->duplicate && a->sample_id == sids[i]))) reacked++;
        msg_free(&m);
    }
    T(reacked == NS);
    T(counter("store_samples") == NHC + NS);
    msg_socket_close(&dealer);

    T(stop(pid, SIGTERM) == 0); /* clean stop (and, in sanitizer builds, no leak reports) */
    free(pred);
    zmq_ctx_term(ctx);
    return t_done("test_label_service");
}
