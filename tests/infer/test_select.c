/* test_select.c — moda-infer chooses the domain with the bank's selector (integration).
 *
 *   test_infer_select MODA_INFER MODA_REGISTRY MODEL DATA_CL BANK_DIR OUT_DIR
 *
 * BANK_DIR holds the tests/bankrun fixture: bank2.safetensors (domains magtile + nuclei with
 * a trained selector) and bank2_nosel.safetensors (the same without selector). Both are put
 * into the real moda-registry; infer follows alias `active` (GetAlias + BankChanged on the
 * registry's PUB) and sends hard cases to a stand-in label ROUTER (min_iou = min_stability
 * = 0, so only the selector probability, threshold min_selector_prob = 0.6, can make one).
 * 1. active = bank2: two magtile TEST frames -> Results with domain "magtile" and selector
 *    probability > 0.6; a nuclei TEST frame -> "nuclei", > 0.6; no hard case.
 * 2. active = bank2_nosel (a multi-domain bank whose selector is missing): the next magtile
 *    frame is still served (domain 0, probability 0) and reaches the label stand-in as an
 *    UNKNOWN_DOMAIN hard case.
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
#include "adapter_bank.h"
#include "image.h"
#include "msg.h"
#include "paths.h"

#define THRESHOLD "0.6"

static void *ctx;
static char dir[1000], reg_ep[200], pub_ep[200], ctl_ep[200], frames_ep[200], results_ep[200],
    label_ep[200];

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

static uint64_t counter(const char *name)
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
    }
    msg_free(&r);
    return v;
}

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

/* Puts the bank file into the registry (alias `active` when set_active): its version or 0. */
static uint64_t put_file(const char *path, int set_active)
{
    uint8_t *mem = NULL;
    size_t len = 0;
    if (paths_read_file(path, &mem, &len, NULL)) return 0;
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.actor = "test";
    q.reason = "infer selector test";
    if (set_active) q.set_alias = "active";
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

static __attribute__((unused)) int set_active(uint64_t v)
{
    Moda__SetAliasRequest q = MODA__SET_ALIAS_REQUEST__INIT;
    q.alias = "active";
    q.version = v;
    q.actor = "test";
    q.reason = "selector test";
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &q;
    msg_t *r = NULL;
    int ok = !request(reg_ep, &env, NULL, 0, &r) &&
             r->env->body_case == MODA__ENVELOPE__BODY_SET_ALIAS_REPLY &&
             r->env->set_alias_reply->status->code == 0;
    msg_free(&r);
    return ok;
}

/* Sends the first TEST image of a domain as an encoded frame. */
static int send_test_image(void *push, const char *cl, const char *domain, int k, uint64_t seq)
{
    char split[1200], line[300], name[256] = "";
    snprintf(split, sizeof split, "%s/%s/split.txt", cl, domain);
    FILE *f = fopen(split, "r");
    if (!f) return -1;
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        char n[256], s[32];
        if (sscanf(line, "%255s %31s", n, s) == 2 && !strcmp(s, "test") && seen++ == k) {
            snprintf(name, sizeof name, "%s", n);
            break;
        }
    }
    fclose(f);
    if (!name[0]) return -1;
    static const char *exts[] = {".jpg", ".png", ".jpeg", ".bmp"};
    uint8_t *data = NULL;
    size_t len = 0;
    char path[1600];
    for (int e = 0; e < 4 && !data; e++) {
        snprintf(path, sizeof path, "%s/%s/images/%s%s", cl, domain, name, exts[e]);
        if (paths_read_file(path, &data, &len, NULL)) data = NULL;
    }
    if (!data) return -1;
    image_t *im = image_decode(data, len, path, NULL);
    int rc = -1;
    if (im) {
        Moda__Frame fr = MODA__FRAME__INIT;
        fr.camera_id = "cam-sel";
        fr.seq = seq;
        fr.capture_time_us = msg_now_us();
        fr.width = (uint32_t)im->w;
        fr.height = (uint32_t)im->h;
        fr.format = strstr(path, ".png") ? MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG
                                         : MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG;
        fr.instance_id = 11;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_FRAME;
        env.frame = &fr;
        msg_part_t part = {data, len};
        rc = msg_send(push, &env, &part, 1, NULL);
        printf("sent %s (%s, %dx%d) as seq %llu\n", path, domain, im->w, im->h, (unsigned long long)seq);
    }
    image_destroy(&im);
    free(data);
    return rc;
}

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
        printf("result seq=%llu bank=%llu domain=%s selector_prob=%.3f iou=%.3f\n",
               (unsigned long long)*seq, (unsigned long long)*ver, domain, *prob,
               m->env->result->iou_pred);
    }
    msg_free(&m);
    return ok;
}

/* Hard cases reaching the stand-in within ms (acked); the last one's reason and seq. */
static int label_pump(void *router, int ms, int *reason, uint64_t *seq)
{
    int n = 0;
    for (int t = 0; t < ms;) {
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) <= 0) {
            t += 50;
            continue;
        }
        msg_t *m = NULL;
        if (!msg_recv(router, 1, NULL, 0, &m, NULL) && m->env->body_case == MODA__ENVELOPE__BODY_HARD_CASE) {
            const Moda__HardCase *hc = m->env->hard_case;
            n++;
            *reason = hc->reason;
            *seq = hc->seq;
            printf("hard case seq=%llu reason=%d domain=%s selector_prob=%.3f\n",
                   (unsigned long long)hc->seq, hc->reason, hc->domain, hc->selector_prob);
            Moda__Status st = MODA__STATUS__INIT;
            Moda__HardCaseAck k = MODA__HARD_CASE_ACK__INIT;
            k.status = &st;
            k.camera_id = hc->camera_id;
            k.seq = hc->seq;
            Moda__Envelope env = MODA__ENVELOPE__INIT;
            env.body_case = MODA__ENVELOPE__BODY_HARD_CASE_ACK;
            env.hard_case_ack = &k;
            msg_reply(router, m, &env, NULL, 0, NULL);
        }
        msg_free(&m);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODA_INFER MODA_REGISTRY MODEL DATA_CL BANK_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    t_watchdog(580);
    const char *infer = argv[1], *registry = argv[2], *model = argv[3], *cl = argv[4], *banks = argv[5];
    snprintf(dir, sizeof dir, "%s", argv[6]);
    mkdir(dir, 0755);
    char data[1100], cmd[1200], bank2[1100], nosel[1100];
    snprintf(data, sizeof data, "%s/reg", dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data);
    T(system(cmd) == 0);
    snprintf(bank2, sizeof bank2, "%s/bank2.safetensors", banks);
    snprintf(nosel, sizeof nosel, "%s/bank2_nosel.safetensors", banks);
    snprintf(reg_ep, sizeof reg_ep, "ipc://%s/reg.sock", dir);
    snprintf(pub_ep, sizeof pub_ep, "ipc://%s/regpub.sock", dir);
    snprintf(ctl_ep, sizeof ctl_ep, "ipc://%s/ctl.sock", dir);
    snprintf(frames_ep, sizeof frames_ep, "ipc://%s/frames.sock", dir);
    snprintf(results_ep, sizeof results_ep, "ipc://%s/results.sock", dir);
    snprintf(label_ep, sizeof label_ep, "ipc://%s/label.sock", dir);
    ctx = zmq_ctx_new();
    void *router = msg_socket_new(ctx, ZMQ_ROUTER, NULL, NULL);
    T(router && msg_bind(router, label_ep, NULL) == 0);

    pid_t reg = fork();
    if (reg == 0) {
        execl(registry, registry, "--data", data, "--bind", reg_ep, "--pub", pub_ep, "--no-sync",
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    uint64_t v2 = 0;
    for (int i = 0; i < 100 && !v2; i++) {
        v2 = put_file(bank2, 1);
        if (!v2) usleep(100000);
    }
    T(v2 > 0);

    pid_t inf = fork();
    if (inf == 0) {
        execl(infer, infer, "--bind", ctl_ep, "--frames", frames_ep, "--results", results_ep,
              "--model", model, "--registry", reg_ep, "--registry_pub", pub_ep, "--label",
              label_ep, "--min_selector_prob", THRESHOLD, "--min_iou", "0", "--min_stability", "0",
              "--hc_rate", "100", "--hc_burst", "100", "--health_ms", "50", "--queue", "16",
              (char *)NULL);
        _exit(127);
    }
    T(wait_counter("bank_version", v2, 60000) == v2);
    void *sub = msg_socket_new(ctx, ZMQ_SUB, NULL, NULL);
    T(sub && msg_connect(sub, results_ep, NULL) == 0);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "result.", 7);
    void *push = msg_socket_new(ctx, ZMQ_PUSH, NULL, NULL);
    T(push && msg_connect(push, frames_ep, NULL) == 0);
    usleep(300000);

    /* 1. the selector picks the domain */
    const char *want[3] = {"magtile", "magtile", "nuclei"};
    const int k[3] = {0, 1, 0};
    for (int i = 0; i < 3; i++) T(send_test_image(push, cl, want[i], k[i], (uint64_t)(i + 1)) == 0);
    for (int i = 0; i < 3; i++) {
        uint64_t seq = 0, ver = 0;
        char domain[65] = "";
        float prob = 0;
        T(next_result(sub, &seq, &ver, domain, &prob, 120000));
        T(seq == (uint64_t)(i + 1) && ver == v2);
        T(!strcmp(domain, want[i]));
        T(prob > (float)atof(THRESHOLD) && prob <= 1.0f);
    }
    int reason = 0;
    uint64_t hseq = 0;
    T(label_pump(router, 300, &reason, &hseq) == 0); /* confident frames: no hard case */

    /* 2. a multi-domain bank without selector: served, every frame an unknown-domain case.
     * The registry keeps one selector layout per store, so this bank goes to a fresh
     * registry on the same endpoints (after bank1, a one-domain bank without selector, so
     * the version differs from the one infer holds). */
    T(stop(reg) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s2'", data);
    T(system(cmd) == 0);
    strcat(data, "2");
    reg = fork();
    if (reg == 0) {
        execl(registry, registry, "--data", data, "--bind", reg_ep, "--pub", pub_ep, "--no-sync",
              "--log-level", "warn", "--republish_ms", "500", (char *)NULL);
        _exit(127);
    }
    char bank1[1100];
    snprintf(bank1, sizeof bank1, "%s/bank1.safetensors", banks);
    uint64_t v1 = 0;
    for (int i = 0; i < 100 && !v1; i++) {
        v1 = put_file(bank1, 0);
        if (!v1) usleep(100000);
    }
    uint64_t v3 = put_file(nosel, 1);
    T(v1 > 0 && v3 > v1 && v3 != v2);
    T(wait_counter("bank_version", v3, 30000) == v3);
    T(send_test_image(push, cl, "magtile", 0, 4) == 0);
    uint64_t seq = 0, ver = 0;
    char domain[65] = "";
    float prob = 1;
    T(next_result(sub, &seq, &ver, domain, &prob, 120000));
    T(seq == 4 && ver == v3 && !strcmp(domain, "magtile") && prob == 0.0f);
    T(label_pump(router, 3000, &reason, &hseq) == 1);
    T(reason == MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNKNOWN_DOMAIN && hseq == 4);
    T(counter("frames_processed") == 4);

    msg_socket_close(&sub);
    msg_socket_close(&push);
    msg_socket_close(&router);
    T(stop(inf) == 0);
    T(stop(reg) == 0);
    zmq_ctx_term(ctx);
    return t_done("infer_select");
}
