/* moda bench pipeline — the live pipeline's cost over the bare model loop (issue 7).
 *
 *   moda bench pipeline [--images DIR] [--frames N] [--rounds R] [--latency-frames L]
 *                       [--model M] [--bank B] [--threads T] [--workers W] [--json]
 *
 * In one invocation, on the same model, bank, images and thread count:
 * Steps 1 and 2 alternate R times (bare block, pipeline block) so that both see the same
 * load when the machine is shared; the rates are totals over the R blocks.
 * 1. bare: this process decodes each image's file bytes and segments it exactly as a
 *    moda-infer worker does (bankrun.h: encoder with the selector taps when the bank has
 *    >= 2 domains, domain choice, adapter, upscale, threshold, stability, COCO RLE) — the
 *    `moda segment --bank B --prompt auto` work without its file output. frames/s.
 * 2. pipeline: moda-registry (bank put as `active`) and moda-infer (next to this binary)
 *    on loopback TCP; frames stream through the ingest SDK (moda_ingest.h, queues sized so
 *    nothing drops) at full speed; a SUB sink here receives the Results. frames/s = N /
 *    (first send -> last Result). overhead = bare fps / pipeline fps - 1.
 * 3. latency: L frames one at a time (each sent when the previous Result arrived):
 *    capture time -> Result received, p50/p99.
 * 4. swap: while frames keep coming, a new bank version is put and promoted to `active`
 *    (the registry publishes BankChanged); swap time = promote -> first Result carrying the
 *    new version; results still carrying the old version after the promote are counted, and
 *    infer's own fetch+validate and switch times (Health bank_load_us, bank_switch_us) are
 *    reported beside it. A frame already running finishes on the old bank, so the swap time
 *    is at least one frame.
 * Without --bank a one-domain bank is made here from the model (a fresh adapter: the
 * zero-shot start). The services' logs go to stderr at level warn.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>
#include <zmq.h>

#include "adapter_bank.h"
#include "bankrun.h"
#include "client.h"
#include "cmds.h"
#include "image.h"
#include "json.h"
#include "kn.h"
#include "moda_ingest.h"
#include "msg.h"
#include "paths.h"
#include "postprocess.h"
#include "rle.h"
#include "sam.h"

static const char *HELP =
    "usage: moda bench pipeline [--images DIR] [--frames N] [--rounds R] [--latency-frames L]\n"
    "                           [--model M] [--bank B] [--threads T] [--workers W] [--json]\n\n"
    "Frames/s through ingest -> moda-infer -> Result versus the bare segmentation loop in this\n"
    "process (same model, bank, images, threads; overhead target <= 5%), end-to-end latency\n"
    "p50/p99 (capture -> Result received, one frame in flight) and the bank swap time\n"
    "(registry promote -> first Result with the new version). Starts moda-registry and\n"
    "moda-infer from this executable's directory on loopback TCP (temporary registry data).\n\n"
    "  --images DIR        PNG/JPEG files, first N by name (default: ../shared/data/cl/magtile/images\n"
    "                      relative to the repository)\n"
    "  --frames N          frames per throughput block (default 4)\n"
    "  --rounds R          blocks of bare loop then pipeline, interleaved so both see the same\n"
    "                      load on a shared machine (default 3)\n"
    "  --latency-frames L  frames of the latency run (default 5)\n"
    "  --model M           weights (default: $MODA_MODEL, else .deps/models/mobile_sam.safetensors)\n"
    "  --bank B            adapter bank (default: a one-domain bank made from the model)\n"
    "  --threads T         CPU threads of the bare loop and of infer's worker (default: all cores)\n"
    "  --workers W         infer workers (default 1); W > 1 splits the T threads among them\n"
    "                      (worker_threads = T/W), so W frames run at once on the same cores\n"
    "  --json              one JSON object on stdout instead of the table\n"
    "Exit status: 0 ok, 2 bad arguments, 1 failure (a service did not start, timeouts).\n";

#define MAX_FRAMES 1000
#define RESULT_TIMEOUT_MS 180000

typedef struct frame {
    char path[1024];
    uint8_t *data;
    size_t len;
    int w, h, fmt;
} frame_t;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
    if (n < 1) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* The first n images (by name) of dir, file bytes in memory. */
static int load_frames(const char *dir, int n, frame_t *fr, int *got, err_t *err)
{
    DIR *d = opendir(dir);
    if (!d) return err_errno(err, ERR_IO, errno, "cannot open --images '%s'", dir);
    char **names = NULL;
    int nn = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || (strcasecmp(dot, ".png") && strcasecmp(dot, ".jpg") && strcasecmp(dot, ".jpeg")))
            continue;
        if (nn == cap) {
            cap = cap ? 2 * cap : 64;
            char **nx = realloc(names, sizeof *names * (size_t)cap);
            if (!nx) break;
            names = nx;
        }
        names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int rc = nn ? 0 : err_set(err, ERR_NOTFOUND, "--images '%s': no PNG or JPEG files", dir);
    *got = 0;
    for (int i = 0; i < nn && *got < n && !rc; i++) {
        frame_t *f = &fr[*got];
        snprintf(f->path, sizeof f->path, "%s/%s", dir, names[i]);
        if ((rc = paths_read_file(f->path, &f->data, &f->len, err))) break;
        image_t *im = image_decode(f->data, f->len, f->path, err);
        if (!im) {
            rc = err->code ? err->code : ERR_FORMAT;
            break;
        }
        f->w = im->w;
        f->h = im->h;
        f->fmt = strcasecmp(strrchr(names[i], '.'), ".png") ? MODA_INGEST_JPEG : MODA_INGEST_PNG;
        image_destroy(&im);
        (*got)++;
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    /* fewer images than frames: cycle through them */
    for (int i = *got; !rc && *got > 0 && i < n; i++) {
        fr[i] = fr[i % *got];
        fr[i].data = malloc(fr[i].len);
        if (!fr[i].data) return err_set(err, ERR_NOMEM, "out of memory");
        memcpy(fr[i].data, fr[i % *got].data, fr[i].len);
    }
    if (!rc) *got = n;
    return rc;
}

/* One frame exactly as a moda-infer worker segments it with a bank (workers.c). */
static int bare_frame(sam_t *sam, bankrun_t *br, const abank_t *b, float *taps, const frame_t *f,
                      err_t *err)
{
    image_t *img = image_decode(f->data, f->len, f->path, err);
    if (!img) return err->code ? err->code : ERR_FORMAT;
    sam_embedding_t emb = {0};
    size_t hw = (size_t)img->w * img->h;
    uint8_t *mask = malloc(hw);
    float *logits = malloc(sizeof(float) * SAM_LOWRES * SAM_LOWRES), *full = malloc(sizeof(float) * hw);
    char *rle = NULL;
    int rc = (!mask || !logits || !full) ? err_set(err, ERR_NOMEM, "out of memory") : 0;
    int want_taps = bankrun_needs_taps(b, NULL) && !bankrun_can_choose(br, NULL);
    if (!rc) rc = want_taps ? sam_encode_taps(sam, img, &emb, taps, err) : sam_encode(sam, img, &emb, NULL, 1, err);
    bankrun_choice_t c = {0};
    float iou = 0;
    if (!rc && (b->n_domains < 2 || want_taps)) rc = bankrun_choose(br, b, NULL, want_taps ? taps : NULL, &c, err);
    if (!rc) rc = bankrun_adapter(br, b, c.domain, &emb, NULL, NULL, 0, logits, &iou, err);
    if (!rc)
        rc = post_upscale(logits, SAM_LOWRES, emb.info.new_h, emb.info.new_w, emb.info.h, emb.info.w,
                          full, err);
    if (!rc) {
        post_threshold(full, (long long)hw, 0.0f, mask);
        size_t hi = 0, lo = 0; /* stability, as the worker computes it */
        for (size_t i = 0; i < hw; i++) hi += full[i] > 1.0f, lo += full[i] > -1.0f;
        volatile float stability = lo ? (float)hi / (float)lo : 1.0f;
        (void)stability;
        rc = rle_encode_string(mask, (uint32_t)img->h, (uint32_t)img->w, &rle, err);
    }
    free(rle);
    free(mask);
    free(logits);
    free(full);
    sam_embedding_free(&emb);
    image_destroy(&img);
    return rc;
}

/* ---- services ------------------------------------------------------------------------------ */

static void *g_ctx;

static int free_tcp(char *ep, size_t n)
{
    void *s = zmq_socket(g_ctx, ZMQ_REP);
    size_t len = n;
    int rc = (!s || zmq_bind(s, "tcp://127.0.0.1:*") || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len)) ? -1 : 0;
    if (s) {
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
    }
    return rc;
}

static pid_t spawn(char *const argv[])
{
    pid_t p = fork();
    if (p == 0) {
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        fprintf(stderr, "moda bench pipeline: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return p;
}

static void stop(pid_t p)
{
    if (p <= 0) return;
    kill(p, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(p, NULL, WNOHANG) == p) return;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
}

static int request(const char *ep, Moda__Envelope *env, const msg_part_t *parts, int n, msg_t **r,
                   int timeout_ms)
{
    void *s = msg_socket_new(g_ctx, ZMQ_REQ, NULL, NULL);
    int rc = s ? msg_connect(s, ep, NULL) : -1;
    if (!rc) rc = msg_request(s, env, parts, n, timeout_ms, NULL, r, NULL);
    msg_socket_close(&s);
    return rc;
}

static uint64_t put_bank(const char *reg_ep, const abank_t *b, const char *alias, err_t *err)
{
    void *mem = NULL;
    size_t len = 0;
    if (abank_to_memory(b, &mem, &len, err)) return 0;
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.actor = "bench";
    q.reason = "moda bench pipeline";
    if (alias) q.set_alias = (char *)alias;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &q;
    msg_part_t part = {mem, len};
    msg_t *r = NULL;
    uint64_t v = 0;
    if (!request(reg_ep, &env, &part, 1, &r, 10000) &&
        r->env->body_case == MODA__ENVELOPE__BODY_PUT_VERSION_REPLY) {
        if (r->env->put_version_reply->status->code == 0) v = r->env->put_version_reply->info->version;
        else err_set(err, ERR_STATE, "registry refused the bank: %s", r->env->put_version_reply->status->message);
    } else if (err && !err->code) {
        err_set(err, ERR_TIMEOUT, "registry %s did not answer", reg_ep);
    }
    msg_free(&r);
    free(mem);
    return v;
}

static int promote(const char *reg_ep, uint64_t v)
{
    Moda__SetAliasRequest q = MODA__SET_ALIAS_REQUEST__INIT;
    q.alias = "active";
    q.version = v;
    q.actor = "bench";
    q.reason = "swap timing";
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &q;
    msg_t *r = NULL;
    int ok = !request(reg_ep, &env, NULL, 0, &r, 10000) &&
             r->env->body_case == MODA__ENVELOPE__BODY_SET_ALIAS_REPLY &&
             r->env->set_alias_reply->status->code == 0;
    msg_free(&r);
    return ok ? 0 : -1;
}

static uint64_t health_counter(const char *ep, const char *name)
{
    Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &h;
    msg_t *r = NULL;
    uint64_t v = UINT64_MAX;
    if (!request(ep, &env, NULL, 0, &r, 1000) && r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY) {
        v = 0;
        for (size_t i = 0; i < r->env->health_reply->n_counters; i++)
            if (!strcmp(r->env->health_reply->counters[i]->name, name))
                v = r->env->health_reply->counters[i]->value;
    }
    msg_free(&r);
    return v;
}

typedef struct res {
    uint64_t seq, version;
    int64_t capture_us;
    double t_ms; /* receive time, now_ms clock */
    int64_t recv_us;
} res_t;

/* Next Result within ms: 1, or 0 on timeout. */
static int next_result(void *sub, res_t *out, int ms)
{
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    for (;;) {
        if (zmq_poll(&it, 1, ms) <= 0) return 0;
        msg_t *m = NULL;
        int ok = !msg_recv(sub, 0, NULL, MSG_TOPIC, &m, NULL) &&
                 m->env->body_case == MODA__ENVELOPE__BODY_RESULT;
        if (ok) {
            out->seq = m->env->result->seq;
            out->version = m->env->result->bank_version;
            out->capture_us = m->env->result->capture_time_us;
            out->recv_us = msg_now_us();
            out->t_ms = now_ms();
        }
        msg_free(&m);
        if (ok) return 1;
    }
}

static int send_frame(moda_ingest_t *cam, const frame_t *f, err_t *err)
{
    return moda_ingest_send_encoded(cam, f->data, f->len, f->w, f->h, (moda_ingest_fmt_t)f->fmt,
                                    msg_now_us(), err);
}

/* ---- the command ----------------------------------------------------------------------------- */

int cmd_bench_pipeline(int argc, char **argv)
{
    const char *images = NULL, *model = NULL, *bank_path = NULL;
    int nframes = 4, rounds = 3, nlat = 5, threads = 0, workers = 1, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        int known = !strcmp(a, "--images") || !strcmp(a, "--frames") || !strcmp(a, "--latency-frames") ||
                    !strcmp(a, "--rounds") || !strcmp(a, "--workers") ||
                    !strcmp(a, "--model") || !strcmp(a, "--bank") || !strcmp(a, "--threads");
        if (!known) {
            fprintf(stderr, "moda bench pipeline: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "moda bench pipeline: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--images")) images = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--bank")) bank_path = v;
        else if (!strcmp(a, "--frames") &&
                 client_int_opt("bench pipeline", a, v, 2, MAX_FRAMES, &nframes))
            return 2;
        else if (!strcmp(a, "--latency-frames") &&
                 client_int_opt("bench pipeline", a, v, 1, MAX_FRAMES, &nlat))
            return 2;
        else if (!strcmp(a, "--rounds") && client_int_opt("bench pipeline", a, v, 1, 100, &rounds))
            return 2;
        else if (!strcmp(a, "--workers") && client_int_opt("bench pipeline", a, v, 1, 64, &workers))
            return 2;
        else if (!strcmp(a, "--threads") &&
                 client_int_opt("bench pipeline", a, v, 1, 1024, &threads))
            return 2;
    }
    err_t e = {0};
    char bindir[4096], model_buf[4096], img_buf[4200], infer_bin[4200], reg_bin[4200];
    if (paths_exe_dir(bindir, sizeof bindir)) {
        fprintf(stderr, "moda bench pipeline: cannot find the directory of this executable\n");
        return 1;
    }
    snprintf(infer_bin, sizeof infer_bin, "%s/moda-infer", bindir);
    snprintf(reg_bin, sizeof reg_bin, "%s/moda-registry", bindir);
    if (!images) { /* <repo>/build-x/bin -> <repo>/../shared/data/cl/magtile/images */
        snprintf(img_buf, sizeof img_buf, "%s/../../../shared/data/cl/magtile/images", bindir);
        images = img_buf;
    }
    if (!model) {
        if (paths_default_model(model_buf, sizeof model_buf)) return 1;
        model = model_buf;
    }
    if (access(infer_bin, X_OK) || access(reg_bin, X_OK)) {
        fprintf(stderr, "moda bench pipeline: %s and %s must be built next to moda\n", infer_bin, reg_bin);
        return 1;
    }
    int nall = nframes > nlat ? nframes : nlat;
    frame_t *fr = calloc((size_t)nall, sizeof *fr);
    int got = 0, rc = fr ? load_frames(images, nall, fr, &got, &e) : err_set(&e, ERR_NOMEM, "out of memory");
    if (rc) {
        fprintf(stderr, "moda bench pipeline: %s\n", e.msg);
        free(fr);
        return err_exit_status(rc);
    }
    if (threads) kn_set_threads(threads);
    int nthreads = kn_get_threads();

    /* model and bank (the bare loop's; infer loads its own copy) */
    sam_t *sam = sam_load(model, &e);
    abank_t *bank = NULL, *bank2 = NULL;
    bankrun_t *br = NULL;
    float *taps = NULL;
    pid_t reg = -1, inf = -1;
    void *sub = NULL;
    moda_ingest_t *cam = NULL;
    double *lat = calloc((size_t)nlat, sizeof *lat);
    char tmp[] = "/tmp/moda-bench-pipeline-XXXXXX";
    int have_tmp = 0;
    if (!sam) rc = e.code ? e.code : ERR_FORMAT;
    char hash[65];
    if (!rc) {
        wts_content_hash(sam_weights(sam), hash);
        if (bank_path) {
            if (!(bank = abank_load(bank_path, hash, sam_early_channels(sam), &e))) rc = e.code;
        } else {
            adapter_t *ad = adapter_new(sam_early_channels(sam), &e);
            if (!(bank = abank_new(hash, &e)) || !ad || adapter_init_from_sam(ad, sam_weights(sam), 1, &e) ||
                abank_put_domain(bank, "zeroshot", &ad, NULL, 0, NULL, 0, "", &e))
                rc = e.code ? e.code : ERR_NOMEM;
            adapter_destroy(&ad);
        }
    }
    /* the swap target: the same bank with one more metric (different bytes, new version) */
    if (!rc) {
        void *mem = NULL;
        size_t len = 0;
        if ((rc = abank_to_memory(bank, &mem, &len, &e)) == 0 &&
            !(bank2 = abank_from_memory(mem, len, "bank copy", hash, 0, &e)))
            rc = e.code;
        free(mem);
        if (!rc && bank2->domains[0].n_metrics < ABANK_MAX_METRICS) {
            abank_metric_t *m = &bank2->domains[0].metrics[bank2->domains[0].n_metrics++];
            snprintf(m->name, sizeof m->name, "bench_swap");
            m->value = 1;
        }
    }
    if (!rc && !(br = bankrun_new(sam, &e))) rc = e.code;
    if (!rc) rc = bankrun_set_bank(br, bank, 1, &e);
    if (!rc && bankrun_needs_taps(bank, NULL) && !(taps = malloc(sizeof(float) * sam_taps_floats(sam))))
        rc = err_set(&e, ERR_NOMEM, "out of memory for the selector taps");

    /* services: registry (temporary data) + infer on loopback TCP */
    char reg_ep[256], pub_ep[256], ctl_ep[256], frames_ep[256], results_ep[256], seg_ep[256], data[300];
    g_ctx = zmq_ctx_new();
    if (!rc && !mkdtemp(tmp)) rc = err_errno(&e, ERR_IO, errno, "cannot create a temporary folder");
    have_tmp = !rc;
    if (!rc && (free_tcp(reg_ep, sizeof reg_ep) || free_tcp(pub_ep, sizeof pub_ep) ||
                free_tcp(ctl_ep, sizeof ctl_ep) || free_tcp(frames_ep, sizeof frames_ep) ||
                free_tcp(results_ep, sizeof results_ep) || free_tcp(seg_ep, sizeof seg_ep)))
        rc = err_set(&e, ERR_MSG, "no free loopback port");
    uint64_t v1 = 0, v2 = 0;
    if (!rc) {
        snprintf(data, sizeof data, "%s/registry", tmp);
        char *ra[] = {reg_bin, "--data", data, "--bind", reg_ep, "--pub", pub_ep, "--no-sync",
                      "--log_level", "warn", NULL};
        reg = spawn(ra);
        for (int i = 0; i < 100 && !v1; i++) {
            err_clear(&e);
            if (!(v1 = put_bank(reg_ep, bank, "active", &e)) && e.code != ERR_TIMEOUT) break;
            if (!v1) usleep(100000);
        }
        if (!v1) rc = e.code ? e.code : ERR_TIMEOUT;
        if (!rc && !(v2 = put_bank(reg_ep, bank2, NULL, &e))) rc = e.code ? e.code : ERR_STATE;
    }
    if (!rc) {
        char q[32], wt[32], nw[32];
        snprintf(q, sizeof q, "%d", nall + 8);
        /* the same CPU budget in total: T threads split over the workers */
        int per = workers > 1 ? (nthreads / workers > 0 ? nthreads / workers : 1) : threads;
        snprintf(wt, sizeof wt, "%d", per);
        snprintf(nw, sizeof nw, "%d", workers);
        char *ia[] = {infer_bin, "--bind", ctl_ep, "--frames", frames_ep, "--results", results_ep,
                      "--segment", seg_ep, "--model", (char *)model, "--registry", reg_ep,
                      "--registry_pub", pub_ep, "--queue", q, "--worker_threads", wt, "--workers", nw,
                      "--health_ms", "100", "--log_level", "warn", NULL};
        inf = spawn(ia);
        uint64_t bv = 0;
        for (int i = 0; i < 1200 && bv != v1; i++) { /* model load + bank fetch: up to 2 min */
            bv = health_counter(ctl_ep, "bank_version");
            if (bv != v1) usleep(100000);
        }
        if (bv != v1) rc = err_set(&e, ERR_TIMEOUT, "moda-infer did not load bank version %llu", (unsigned long long)v1);
    }

    /* 1 + 2, interleaved: `rounds` times the bare loop over the N frames, then the same N
     * frames streamed through the pipeline, so both see the same (shared-machine) load.
     * One warm-up frame each, not timed. */
    if (!rc) {
        sub = msg_socket_new(g_ctx, ZMQ_SUB, NULL, &e);
        if (!sub || msg_connect(sub, results_ep, &e)) rc = e.code ? e.code : ERR_MSG;
        else zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "result.", 7);
        moda_ingest_opts_t o;
        moda_ingest_opts_default(&o);
        o.queue_len = nall + 8 > 1024 ? 1024 : nall + 8;
        o.zmq_ctx = g_ctx;
        o.linger_ms = 1000;
        if (!rc && !(cam = moda_ingest_connect(frames_ep, "bench", &o, &e))) rc = e.code;
        usleep(500000); /* SUB and PUSH connected */
    }
    res_t r;
    double bare_s = 0, pipe_s = 0;
    if (!rc) rc = bare_frame(sam, br, bank, taps, &fr[0], &e);
    if (!rc) {
        rc = send_frame(cam, &fr[0], &e);
        if (!rc && !next_result(sub, &r, RESULT_TIMEOUT_MS)) rc = err_set(&e, ERR_TIMEOUT, "no Result for the warm-up frame");
    }
    for (int round = 0; round < rounds && !rc; round++) {
        double t0 = now_ms();
        for (int i = 0; i < nframes && !rc; i++) rc = bare_frame(sam, br, bank, taps, &fr[i], &e);
        bare_s += (now_ms() - t0) / 1e3;
        t0 = now_ms();
        for (int i = 0; i < nframes && !rc; i++) rc = send_frame(cam, &fr[i], &e);
        int n = 0;
        while (!rc && n < nframes) {
            if (!next_result(sub, &r, RESULT_TIMEOUT_MS)) rc = err_set(&e, ERR_TIMEOUT, "Result %d of %d did not come", n + 1, nframes);
            else n++;
        }
        pipe_s += (now_ms() - t0) / 1e3;
    }
    /* free the bare loop's memory before the rest */
    bankrun_destroy(&br);
    free(taps);
    taps = NULL;
    sam_destroy(&sam);
    /* 3. latency, one frame in flight */
    int nl = 0;
    for (int i = 0; i < nlat && !rc; i++) {
        rc = send_frame(cam, &fr[i], &e);
        if (!rc && !next_result(sub, &r, RESULT_TIMEOUT_MS)) rc = err_set(&e, ERR_TIMEOUT, "no Result in the latency run");
        if (!rc) lat[nl++] = (double)(r.recv_us - r.capture_us) / 1e3;
    }
    double p50 = pct(lat, nl, 0.5), p99 = pct(lat, nl, 0.99);
    /* 4. swap: frames keep coming (one in flight), promote v2, first Result with v2 */
    double swap_ms = -1, t_promote = 0;
    int old_after = 0;
    if (!rc) {
        rc = send_frame(cam, &fr[0], &e);
        t_promote = now_ms();
        if (!rc && promote(reg_ep, v2)) rc = err_set(&e, ERR_STATE, "registry promote of version %llu failed", (unsigned long long)v2);
        for (int k = 0; !rc && swap_ms < 0 && k < 50; k++) {
            if (!next_result(sub, &r, RESULT_TIMEOUT_MS)) rc = err_set(&e, ERR_TIMEOUT, "no Result during the swap");
            else if (r.version == v2) swap_ms = r.t_ms - t_promote;
            else {
                old_after++;
                rc = send_frame(cam, &fr[(k + 1) % nall], &e);
            }
        }
        if (!rc && swap_ms < 0) rc = err_set(&e, ERR_TIMEOUT, "no Result with the new bank version");
    }
    moda_ingest_stats_t st = {0};
    if (cam) moda_ingest_stats(cam, &st);
    uint64_t dropped_infer = rc ? 0 : health_counter(ctl_ep, "frames_dropped");
    double load_ms = rc ? 0 : health_counter(ctl_ep, "bank_load_us") / 1e3;
    double switch_ms = rc ? 0 : health_counter(ctl_ep, "bank_switch_us") / 1e3;

    if (!rc) {
        double bare_fps = (double)nframes * rounds / bare_s, pipe_fps = (double)nframes * rounds / pipe_s;
        double overhead = 100.0 * (bare_fps / pipe_fps - 1.0);
        if (json) {
            json_writer_t w;
            json_w_init(&w);
            json_w_begin_obj(&w);
            json_w_key(&w, "frames"); json_w_int(&w, nframes);
            json_w_key(&w, "rounds"); json_w_int(&w, rounds);
            json_w_key(&w, "images"); json_w_string(&w, images);
            json_w_key(&w, "model"); json_w_string(&w, model);
            json_w_key(&w, "bank_domains"); json_w_int(&w, bank->n_domains);
            json_w_key(&w, "threads"); json_w_int(&w, nthreads);
            json_w_key(&w, "workers"); json_w_int(&w, workers);
            json_w_key(&w, "bare_fps"); json_w_double(&w, bare_fps);
            json_w_key(&w, "pipeline_fps"); json_w_double(&w, pipe_fps);
            json_w_key(&w, "overhead_pct"); json_w_double(&w, overhead);
            json_w_key(&w, "latency_ms");
            json_w_begin_obj(&w);
            json_w_key(&w, "p50"); json_w_double(&w, p50);
            json_w_key(&w, "p99"); json_w_double(&w, p99);
            json_w_key(&w, "n"); json_w_int(&w, nl);
            json_w_end_obj(&w);
            json_w_key(&w, "swap_ms"); json_w_double(&w, swap_ms);
            json_w_key(&w, "swap_old_results"); json_w_int(&w, old_after);
            json_w_key(&w, "swap_bank_load_ms"); json_w_double(&w, load_ms);
            json_w_key(&w, "swap_switch_ms"); json_w_double(&w, switch_ms);
            json_w_key(&w, "ingest_dropped"); json_w_int(&w, (long long)st.dropped);
            json_w_key(&w, "infer_dropped"); json_w_int(&w, (long long)dropped_infer);
            json_w_end_obj(&w);
            size_t len;
            char *s = json_w_finish(&w, &len, &e);
            if (s) printf("%s\n", s);
            else rc = e.code;
            free(s);
        } else {
            printf("moda bench pipeline: %d rounds x %d frames of %s, %d-domain bank, %d threads, "
                   "%d infer worker(s)\n", rounds, nframes, images, bank->n_domains, nthreads, workers);
            printf("  bare loop (decode + segment + RLE, in process)  %7.3f frames/s\n", bare_fps);
            printf("  ingest -> moda-infer -> Result (loopback TCP)   %7.3f frames/s\n", pipe_fps);
            printf("  service overhead                                %+6.1f %% (target <= 5 %%)\n", overhead);
            printf("  end-to-end latency (capture -> Result), %d frames: p50 %.0f ms, p99 %.0f ms\n", nl, p50, p99);
            printf("  bank swap (registry promote -> first Result with the new version): %.0f ms"
                   " (%d result(s) with the old version after the promote)\n", swap_ms, old_after);
            printf("    inside moda-infer: fetch + validate %.0f ms, switch %.3f ms; the rest is the frame\n"
                   "    in flight (old bank) and the first frame on the new bank\n", load_ms, switch_ms);
            printf("  dropped: ingest %llu, infer %llu\n", (unsigned long long)st.dropped,
                   (unsigned long long)dropped_infer);
        }
    }
    if (rc) fprintf(stderr, "moda bench pipeline: %s\n", e.msg);
    moda_ingest_close(&cam, NULL);
    msg_socket_close(&sub);
    stop(inf);
    stop(reg);
    if (have_tmp) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "moda bench pipeline: could not remove %s\n", tmp);
    }
    zmq_ctx_term(g_ctx);
    bankrun_destroy(&br);
    free(taps);
    sam_destroy(&sam);
    abank_destroy(&bank);
    abank_destroy(&bank2);
    for (int i = 0; i < nall; i++) free(fr[i].data);
    free(fr);
    free(lat);
    return rc ? err_exit_status(rc) : 0;
}
