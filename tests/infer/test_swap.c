/* test_swap.c — moda-infer's bank hot swap end to end with the real moda-registry (integration).
 *
 *   test_infer_swap MODA_INFER MODA_REGISTRY MODEL IMAGE OUT_DIR
 *
 * Banks are made here (abank.h) for the default model: v1 and v2 each with one domain whose
 * adapter starts from SAM (different seeds). BankChanged comes from the test's own PUB (so it
 * can also announce a version the registry does not have); GetAlias/GetVersion go to the
 * real registry. Steps:
 * 1. v1 is put as `active` before infer starts: infer's GetAlias catch-up loads it; a frame's
 *    Result carries version v1, domain "magtile", selector probability 1.
 * 2. Two frames are pushed, and while the first is being encoded v2 is made active: both
 *    frames get a Result (nothing dropped by the swap); versions never go back; a third frame
 *    sent after the swap reports v2. Swap times come from Health (bank_load_us,
 *    bank_switch_us) and are printed.
 * 3. An announced version the registry does not have: not used (bank_load_failed,
 *    last_error names it), the next frame is still served by v2.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "../unit/t_check.h"
#include "adapter.h"
#include "adapter_bank.h"
#include "image.h"
#include "msg.h"
#include "wts.h"

static void *ctx;
static char dir[1000], reg_ep[200], pub_ep[200], ctl_ep[200], frames_ep[200], results_ep[200];

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

static int request(const char *ep, Moda__Envelope *env, const msg_part_t *parts, int n, msg_t **r)
{
    void *s = msg_socket_new(ctx, ZMQ_REQ, NULL, NULL);
    int rc = s ? msg_connect(s, ep, NULL) : -1;
    if (!rc) rc = msg_request(s, env, parts, n, 5000, NULL, r, NULL);
    msg_socket_close(&s);
    return rc;
}

/* Health: counter value (UINT64_MAX: no answer); last_error copied into err (may be NULL). */
static uint64_t counter(const char *name, char *err, size_t errn)
{
    Moda__HealthRequest h = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &h;
    msg_t *r = NULL;
    uint64_t v = UINT64_MAX;
    if (!request(ctl_ep, &env, NULL, 0, &r) && r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY) {
        const Moda__HealthReply *hr = r->env->health_reply;
        v = 0;
        for (size_t i = 0; i < hr->n_counters; i++)
            if (!strcmp(hr->counters[i]->name, name)) v = hr->counters[i]->value;
        if (err) snprintf(err, errn, "%s", hr->last_error ? hr->last_error : "");
    }
    msg_free(&r);
    return v;
}

static uint64_t wait_counter(const char *name, uint64_t want, int ms)
{
    uint64_t v = 0;
    for (int t = 0; t < ms; t += 50) {
        v = counter(name, NULL, 0);
        if (v != UINT64_MAX && v >= want) return v;
        usleep(50000);
    }
    return v;
}

static uint64_t put(const abank_t *b, const char *alias)
{
    void *mem = NULL;
    size_t len = 0;
    if (abank_to_memory(b, &mem, &len, NULL)) return 0;
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.actor = "test";
    q.reason = "infer swap test";
    if (alias) q.set_alias = (char *)alias;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &q;
    msg_part_t part = {mem, len};
    msg_t *r = NULL;
    uint64_t v = 0;
    if (!request(reg_ep, &env, &part, 1, &r) && r->env->body_case == MODA__ENVELOPE__BODY_PUT_VERSION_REPLY &&
        r->env->put_version_reply->status->code == 0)
        v = r->env->put_version_reply->info->version;
    else if (r && r->env->body_case == MODA__ENVELOPE__BODY_PUT_VERSION_REPLY)
        fprintf(stderr, "put refused: %s\n", r->env->put_version_reply->status->message);
    msg_free(&r);
    free(mem);
    return v;
}

static void *bank_pub; /* the test's stand-in for the registry's BankChanged PUB */

static int announce(uint64_t v)
{
    Moda__BankChanged b = MODA__BANK_CHANGED__INIT;
    b.alias = "active";
    b.version = v;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_BANK_CHANGED;
    env.bank_changed = &b;
    return msg_publish(bank_pub, "bank.active", &env, NULL, 0, NULL);
}

static int set_active(uint64_t v)
{
    Moda__SetAliasRequest q = MODA__SET_ALIAS_REQUEST__INIT;
    q.alias = "active";
    q.version = v;
    q.actor = "test";
    q.reason = "swap";
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &q;
    msg_t *r = NULL;
    int ok = !request(reg_ep, &env, NULL, 0, &r) &&
             r->env->body_case == MODA__ENVELOPE__BODY_SET_ALIAS_REPLY &&
             r->env->set_alias_reply->status->code == 0;
    msg_free(&r);
    return ok && announce(v) == 0;
}

static abank_t *make_bank(const char *base, const wts_t *w, int early_c, uint64_t seed)
{
    err_t err = {0};
    abank_t *b = abank_new(base, &err);
    adapter_t *a = adapter_new(early_c, &err);
    T(b && a && adapter_init_from_sam(a, w, seed, &err) == 0);
    T(abank_put_domain(b, "magtile", &a, NULL, 0, NULL, 0, "", &err) == 0);
    if (err.code) fprintf(stderr, "bank: %s\n", err.msg);
    adapter_destroy(&a);
    return b;
}

static int send_frame(void *push, uint64_t seq, const void *data, size_t len, int w, int h)
{
    Moda__Frame f = MODA__FRAME__INIT;
    f.camera_id = "cam-s";
    f.seq = seq;
    f.capture_time_us = msg_now_us();
    f.width = (uint32_t)w;
    f.height = (uint32_t)h;
    f.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG;
    f.instance_id = 7;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &f;
    msg_part_t part = {data, len};
    return msg_send(push, &env, &part, 1, NULL);
}

/* Next Result within ms: its seq and bank version (0 when none came). */
static int next_result(void *sub, uint64_t *seq, uint64_t *ver, char *domain, float *prob, int ms)
{
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0) return 0;
    msg_t *m = NULL;
    int ok = !msg_recv(sub, 0, NULL, MSG_TOPIC, &m, NULL) && m->env->body_case == MODA__ENVELOPE__BODY_RESULT;
    if (ok) {
        *seq = m->env->result->seq;
        *ver = m->env->result->bank_version;
        snprintf(domain, 65, "%s", m->env->result->domain);
        *prob = m->env->result->selector_prob;
        printf("result seq=%llu bank=%llu domain=%s prob=%.2f iou=%.3f\n", (unsigned long long)*seq,
               (unsigned long long)*ver, domain, *prob, m->env->result->iou_pred);
    }
    msg_free(&m);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODA_INFER MODA_REGISTRY MODEL IMAGE OUT_DIR\n", argv[0]);
        return 2;
    }
    t_watchdog(220);
    const char *infer = argv[1], *registry = argv[2], *model = argv[3], *image = argv[4];
    snprintf(dir, sizeof dir, "%s", argv[5]);
    mkdir(dir, 0755);
    char data[1100];
    snprintf(data, sizeof data, "%s/reg", dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data);
    T(system(cmd) == 0);
    snprintf(reg_ep, sizeof reg_ep, "ipc://%s/reg.sock", dir);
    snprintf(pub_ep, sizeof pub_ep, "ipc://%s/regpub.sock", dir);
    snprintf(ctl_ep, sizeof ctl_ep, "ipc://%s/sctl.sock", dir);
    snprintf(frames_ep, sizeof frames_ep, "ipc://%s/sframes.sock", dir);
    snprintf(results_ep, sizeof results_ep, "ipc://%s/sresults.sock", dir);
    ctx = zmq_ctx_new();

    err_t err = {0};
    wts_t *w = wts_open(model, &err);
    T(w != NULL);
    if (!w) return t_done("infer_swap");
    char base[65];
    wts_content_hash(w, base);
    abank_t *b1 = make_bank(base, w, 160, 1), *b2 = make_bank(base, w, 160, 2);

    bank_pub = msg_socket_new(ctx, ZMQ_PUB, NULL, NULL);
    T(bank_pub && msg_bind(bank_pub, pub_ep, NULL) == 0);
    pid_t reg = fork();
    if (reg == 0) {
        char own_pub[300];
        snprintf(own_pub, sizeof own_pub, "ipc://%s/regpub-unused.sock", dir);
        execl(registry, registry, "--data", data, "--bind", reg_ep, "--pub", own_pub, "--no-sync",
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    uint64_t v1 = 0;
    for (int i = 0; i < 100 && !v1; i++) {
        v1 = put(b1, "active");
        if (!v1) usleep(100000);
    }
    T(v1 > 0);
    uint64_t v2 = put(b2, NULL);
    T(v2 > v1);

    pid_t inf = fork();
    if (inf == 0) {
        execl(infer, infer, "--bind", ctl_ep, "--frames", frames_ep, "--results", results_ep,
              "--model", model, "--registry", reg_ep, "--registry_pub", pub_ep, "--health_ms", "50",
              "--queue", "16", (char *)NULL);
        _exit(127);
    }
    /* 1. catch-up at start */
    T(wait_counter("bank_version", v1, 30000) == v1);
    void *sub = msg_socket_new(ctx, ZMQ_SUB, NULL, NULL);
    T(sub && msg_connect(sub, results_ep, NULL) == 0);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "result.", 7);
    void *push = msg_socket_new(ctx, ZMQ_PUSH, NULL, NULL);
    T(push && msg_connect(push, frames_ep, NULL) == 0);
    usleep(300000);
    FILE *f = fopen(image, "rb");
    T(f != NULL);
    static uint8_t jpg[1 << 20];
    size_t len = f ? fread(jpg, 1, sizeof jpg, f) : 0;
    if (f) fclose(f);
    image_t *im = image_decode(jpg, len, image, NULL);
    T(im != NULL);
    if (!im) return t_done("infer_swap");

    uint64_t seq = 0, ver = 0;
    char domain[65] = "";
    float prob = 0;
    T(send_frame(push, 1, jpg, len, im->w, im->h) == 0);
    T(next_result(sub, &seq, &ver, domain, &prob, 60000));
    T(seq == 1 && ver == v1 && !strcmp(domain, "magtile") && prob == 1.0f);

    /* 2. swap while frames are in flight */
    T(send_frame(push, 2, jpg, len, im->w, im->h) == 0);
    T(send_frame(push, 3, jpg, len, im->w, im->h) == 0);
    usleep(200000); /* frame 2 is being encoded */
    T(set_active(v2));
    T(wait_counter("bank_version", v2, 20000) == v2);
    T(send_frame(push, 4, jpg, len, im->w, im->h) == 0);
    uint64_t last_ver = v1;
    int got = 0;
    for (int i = 0; i < 3; i++) {
        if (!next_result(sub, &seq, &ver, domain, &prob, 60000)) break;
        got++;
        T(seq == (uint64_t)(2 + i));
        T(ver == v1 || ver == v2);
        T(ver >= last_ver); /* never back to the old bank */
        last_ver = ver;
        if (seq == 4) T(ver == v2);
    }
    T(got == 3);
    T(counter("frames_dropped", NULL, 0) == 0);
    printf("swap: load (fetch + validate) %.1f ms, pointer switch %llu us\n",
           counter("bank_load_us", NULL, 0) / 1e3, (unsigned long long)counter("bank_switch_us", NULL, 0));

    /* 3. a version infer cannot fetch (announced, not in the registry) is not used; v2 keeps
     *    serving */
    T(announce(9999) == 0);
    T(wait_counter("bank_load_failed", 1, 20000) == 1);
    char last[600] = "";
    counter("bank_version", last, sizeof last);
    T_HAS(last, "not used");
    T(counter("bank_version", NULL, 0) == v2);
    T(send_frame(push, 5, jpg, len, im->w, im->h) == 0);
    T(next_result(sub, &seq, &ver, domain, &prob, 60000));
    T(seq == 5 && ver == v2);

    T(stop(inf) == 0);
    T(stop(reg) == 0);
    image_destroy(&im);
    abank_destroy(&b1);
    abank_destroy(&b2);
    wts_destroy(&w);
    msg_socket_close(&push);
    msg_socket_close(&sub);
    msg_socket_close(&bank_pub);
    zmq_ctx_term(ctx);
    return t_done("infer_swap");
}
