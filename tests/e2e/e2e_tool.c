/* e2e_tool.c — test helper for tests/e2e/test_e2e.py (the end-to-end run of all five services).
 *
 *   e2e_tool sub RESULTS_EP SECONDS OUTFILE
 *       SUB "result." on moda-infer's Result PUB for SECONDS (or until SIGTERM/SIGINT) and
 *       append one JSON line per Result to OUTFILE (flushed each line):
 *       {"cam","seq","ver","dom","p","iou","stab","cap","done","recv","h","w","counts"}
 *       (times in µs since the epoch; counts = the COCO RLE string). The SUB socket
 *       reconnects by itself when infer restarts. Exit 0; 2 on bad arguments/socket errors.
 *
 *   e2e_tool bad FRAMES_EP CAMERA
 *       PUSH four malformed frames to moda-infer's frame endpoint, for camera CAMERA:
 *       RGB8 with a byte count that is not w*h*3 (wrong size), pixel format 99 (bad format),
 *       a JPEG-declared payload of garbage bytes (undecodable), and one message that is not
 *       protobuf at all (garbage envelope, no camera: only frames_bad/msgs_bad count it).
 *       Exit 0 when all were sent.
 *
 * Invariant: the tool never judges; the Python driver checks the output and the counters.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "msg.h"

static volatile sig_atomic_t g_stop;
static void on_sig(int s)
{
    (void)s;
    g_stop = 1;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static int sub(const char *ep, int seconds, const char *path)
{
    FILE *f = fopen(path, "a");
    if (!f) {
        perror(path);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    err_t err = {0};
    void *s = msg_socket_new(ctx, ZMQ_SUB, NULL, &err);
    if (!s || msg_connect(s, ep, &err)) {
        fprintf(stderr, "e2e_tool sub: %s\n", err.msg);
        return 2;
    }
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, "result.", 7);
    int64_t end = msg_now_us() + (int64_t)seconds * 1000000;
    long n = 0;
    while (!g_stop && msg_now_us() < end) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        msg_t *m = NULL;
        int rc = msg_recv(s, 0, NULL, MSG_TOPIC, &m, NULL);
        int64_t recv = msg_now_us();
        if (!rc && m && m->env->body_case == MODA__ENVELOPE__BODY_RESULT) {
            const Moda__Result *r = m->env->result;
            fprintf(f, "{\"cam\":");
            json_str(f, r->camera_id);
            fprintf(f, ",\"seq\":%llu,\"ver\":%llu,\"dom\":", (unsigned long long)r->seq,
                    (unsigned long long)r->bank_version);
            json_str(f, r->domain);
            fprintf(f, ",\"p\":%.5f,\"iou\":%.5f,\"stab\":%.5f,\"cap\":%lld,\"done\":%lld,\"recv\":%lld,",
                    r->selector_prob, r->iou_pred, r->stability, (long long)r->capture_time_us,
                    (long long)r->done_time_us, (long long)recv);
            fprintf(f, "\"h\":%u,\"w\":%u,\"counts\":", r->mask ? r->mask->height : 0,
                    r->mask ? r->mask->width : 0);
            json_str(f, r->mask ? r->mask->counts : "");
            fprintf(f, "}\n");
            fflush(f);
            n++;
        }
        msg_free(&m);
    }
    msg_socket_close(&s);
    zmq_ctx_term(ctx);
    fclose(f);
    fprintf(stderr, "e2e_tool sub: %ld results\n", n);
    return 0;
}

static int send_frame(void *push, const char *cam, uint64_t seq, uint32_t w, uint32_t h, int fmt,
                      const void *data, size_t len)
{
    Moda__Frame fr = MODA__FRAME__INIT;
    fr.camera_id = (char *)cam;
    fr.seq = seq;
    fr.capture_time_us = msg_now_us();
    fr.width = w;
    fr.height = h;
    fr.format = (Moda__PixelFormat)fmt;
    fr.instance_id = 0xe2e;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &fr;
    msg_part_t part = {data, len};
    return msg_send(push, &env, &part, 1, NULL);
}

static int bad(const char *ep, const char *cam)
{
    void *ctx = zmq_ctx_new();
    err_t err = {0};
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.sndtimeo_ms = 5000;
    so.linger_ms = 5000; /* the default 0 would discard what is not yet on the wire at close */
    void *p = msg_socket_new(ctx, ZMQ_PUSH, &so, &err);
    if (!p || msg_connect(p, ep, &err)) {
        fprintf(stderr, "e2e_tool bad: %s\n", err.msg);
        return 2;
    }
    static uint8_t junk[16 * 16 * 3];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
    int ok = 0;
    ok += send_frame(p, cam, 1, 16, 16, MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8, junk, sizeof junk - 5) == 0;
    ok += send_frame(p, cam, 2, 16, 16, 99, junk, sizeof junk) == 0;
    ok += send_frame(p, cam, 3, 16, 16, MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG, junk, sizeof junk) == 0;
    ok += zmq_send(p, "\xff\xfe not a protobuf envelope", 27, 0) == 27;
    msg_socket_close(&p); /* linger: delivered before the context ends */
    zmq_ctx_term(ctx);
    printf("bad: %d/4 malformed frames sent\n", ok);
    return ok == 4 ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    msg_set_sender("e2e-test");
    if (argc == 5 && !strcmp(argv[1], "sub")) return sub(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 4 && !strcmp(argv[1], "bad")) return bad(argv[2], argv[3]);
    fprintf(stderr, "usage: e2e_tool sub RESULTS_EP SECONDS OUTFILE | bad FRAMES_EP CAMERA\n");
    return 2;
}
