/* moda status — health and counters of the services `moda up` started.
 *
 *   moda status [--json] [--watch SEC] [--run-dir DIR] [--timeout-ms N]
 *
 * Where: reads <run-dir>/up.json (written by `moda up`; default run dir /tmp/moda-<uid>); without
 * it, the services' own default endpoints (ipc:///tmp/moda-<svc>.sock) are asked.
 * Each service gets one Health request (deadline --timeout-ms); the registry also GetAlias
 * "active" (the active bank version). Per camera frame counters and latency come from infer's
 * Health (`in.<cam>`, `processed.<cam>`, `dropped.<cam>`, `latency_p50_us`, ...), training
 * progress from train's. Exit 0 when all five answered, 1 when any is DOWN, 2 on bad arguments.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cfg.h"
#include "client.h"
#include "cmds.h"
#include "json.h"
#include "msg.h"

enum { ST_NSVC = 5 };

static const cfg_key_t keys[] = {
    {"json", CFG_BOOL, "false", 0, 0, "print one JSON object"},
    {"watch", CFG_DOUBLE, "0", 0, 3600, "repeat every SEC seconds until Ctrl-C (0: once)"},
    {"run_dir", CFG_STRING, "", 0, 200, "where `moda up` keeps up.json (default /tmp/moda-<uid>)"},
    {"timeout_ms", CFG_INT, "1000", 1, 600000, "deadline of each request"},
    CFG_END,
};

static const char *svc_names[ST_NSVC] = {"registry", "label", "train", "infer", "ingest"};

typedef struct st_svc {
    char endpoint[256];
    long long pid;
    long long restarts;
    msg_t *health; /* NULL: DOWN */
    char error[256];
} st_svc_t;

static const char *state_name(Moda__ServiceState s)
{
    switch (s) {
    case MODA__SERVICE_STATE__SERVICE_STATE_STARTING: return "starting";
    case MODA__SERVICE_STATE__SERVICE_STATE_SERVING: return "serving";
    case MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED: return "degraded";
    case MODA__SERVICE_STATE__SERVICE_STATE_STOPPING: return "stopping";
    default: return "unspecified";
    }
}

static const Moda__HealthReply *hr_of(const st_svc_t *s)
{
    return s->health ? s->health->env->health_reply : NULL;
}

/* Counter value by name; -1 when absent. */
static long long counter(const Moda__HealthReply *r, const char *name)
{
    if (!r) return -1;
    for (size_t i = 0; i < r->n_counters; i++)
        if (!strcmp(r->counters[i]->name, name)) return (long long)r->counters[i]->value;
    return -1;
}

static void load_state(const char *run_dir, st_svc_t *svc, char *state_path, size_t n, int *have)
{
    snprintf(state_path, n, "%s/up.json", run_dir);
    *have = 0;
    for (int i = 0; i < ST_NSVC; i++) {
        snprintf(svc[i].endpoint, sizeof svc[i].endpoint, "ipc:///tmp/moda-%s.sock", svc_names[i]);
        svc[i].pid = 0;
        svc[i].restarts = 0;
    }
    FILE *f = fopen(state_path, "rb");
    if (!f) return;
    static char buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    err_t err = {0};
    json_t *j = json_parse(buf, len, &err);
    const json_t *arr = json_get(j, "services");
    for (size_t k = 0; k < json_len(arr); k++) {
        const json_t *o = json_at(arr, k);
        const char *name = json_str(json_get(o, "name")), *ep = json_str(json_get(o, "endpoint"));
        for (int i = 0; name && ep && i < ST_NSVC; i++) {
            if (strcmp(name, svc_names[i])) continue;
            snprintf(svc[i].endpoint, sizeof svc[i].endpoint, "%s", ep);
            int64_t v = 0;
            if (!json_get_int64(json_get(o, "pid"), &v, "pid", &err)) svc[i].pid = v;
            if (!json_get_int64(json_get(o, "restarts"), &v, "restarts", &err)) svc[i].restarts = v;
        }
    }
    *have = j != NULL;
    json_free(&j);
}

/* Active bank version from the registry: >0 version, 0 none, -1 registry unreachable. */
static long long active_version(void *ctx, const char *ep, int timeout_ms, char *why, size_t n)
{
    Moda__GetAliasRequest q = MODA__GET_ALIAS_REQUEST__INIT;
    q.alias = (char *)"active";
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
    env.get_alias_request = &q;
    msg_t *reply = NULL;
    err_t err = {0};
    long long v = -1;
    client_t c;
    int rc = client_open(&c, ctx, ep, "registry", timeout_ms, &err);
    if (!rc) rc = client_request(&c, &env, NULL, 0, &reply, &err);
    client_close(&c);
    if (rc) {
        snprintf(why, n, "%s", err.msg);
    } else if (reply->env->body_case == MODA__ENVELOPE__BODY_GET_ALIAS_REPLY && reply->env->get_alias_reply) {
        const Moda__GetAliasReply *r = reply->env->get_alias_reply;
        if (r->status && r->status->code != MODA__STATUS_CODE__STATUS_OK) {
            v = 0;
            snprintf(why, n, "%s", r->status->message ? r->status->message : "none");
        } else {
            v = r->current ? (long long)r->current->version : 0;
        }
    } else {
        snprintf(why, n, "unexpected reply %s", msg_body_name(reply->env->body_case));
    }
    msg_free(&reply);
    return v;
}

/* Health of all five at once (a DOWN one costs timeout_ms once, not per service): fills
 * svc[i].health or svc[i].error. */
static void ask_health(void *ctx, st_svc_t *svc, int timeout_ms)
{
    void *sock[ST_NSVC] = {0};
    int pending[ST_NSVC] = {0};
    for (int i = 0; i < ST_NSVC; i++) {
        err_t e = {0};
        msg_sockopt_t so;
        msg_sockopt_default(&so);
        so.sndtimeo_ms = 0;
        so.reconnect_ivl_ms = 20;
        Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
        env.health_request = &hr;
        sock[i] = msg_socket_new(ctx, ZMQ_REQ, &so, &e);
        if (!sock[i] || msg_connect(sock[i], svc[i].endpoint, &e) || msg_send(sock[i], &env, NULL, 0, &e))
            snprintf(svc[i].error, sizeof svc[i].error, "%s", e.msg);
        else
            pending[i] = 1;
    }
    int64_t deadline = msg_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        zmq_pollitem_t it[ST_NSVC];
        int idx[ST_NSVC], n = 0;
        for (int i = 0; i < ST_NSVC; i++)
            if (pending[i]) {
                it[n] = (zmq_pollitem_t){sock[i], 0, ZMQ_POLLIN, 0};
                idx[n++] = i;
            }
        int64_t left = (deadline - msg_now_us()) / 1000;
        if (!n || left <= 0) break;
        if (zmq_poll(it, n, (long)left) <= 0) continue;
        for (int k = 0; k < n; k++) {
            if (!(it[k].revents & ZMQ_POLLIN)) continue;
            int i = idx[k];
            err_t e = {0};
            msg_t *reply = NULL;
            pending[i] = 0;
            if (msg_recv(sock[i], 0, NULL, MSG_DONTWAIT, &reply, &e))
                snprintf(svc[i].error, sizeof svc[i].error, "%s", e.msg);
            else if (reply->env->body_case != MODA__ENVELOPE__BODY_HEALTH_REPLY || !reply->env->health_reply)
                snprintf(svc[i].error, sizeof svc[i].error, "answered %s, not health_reply",
                         msg_body_name(reply->env->body_case));
            else {
                svc[i].health = reply;
                reply = NULL;
            }
            msg_free(&reply);
        }
    }
    for (int i = 0; i < ST_NSVC; i++) {
        if (pending[i]) snprintf(svc[i].error, sizeof svc[i].error, "no Health reply within %d ms", timeout_ms);
        msg_socket_close(&sock[i]);
    }
}

static void print_json(const char *state_path, int have_state, st_svc_t *svc, long long active, const char *why)
{
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_key(&w, "state_file");
    if (have_state)
        json_w_string(&w, state_path);
    else
        json_w_null(&w);
    int all = 1;
    json_w_key(&w, "services");
    json_w_begin_obj(&w);
    for (int i = 0; i < ST_NSVC; i++) {
        const Moda__HealthReply *r = hr_of(&svc[i]);
        all &= r != NULL;
        json_w_key(&w, svc_names[i]);
        json_w_begin_obj(&w);
        json_w_key(&w, "up");
        json_w_bool(&w, r != NULL);
        json_w_key(&w, "endpoint");
        json_w_string(&w, svc[i].endpoint);
        json_w_key(&w, "pid");
        json_w_int(&w, svc[i].pid);
        json_w_key(&w, "restarts");
        json_w_int(&w, svc[i].restarts);
        if (!r) {
            json_w_key(&w, "error");
            json_w_string(&w, svc[i].error);
        } else {
            json_w_key(&w, "state");
            json_w_string(&w, state_name(r->state));
            json_w_key(&w, "version");
            json_w_string(&w, r->version);
            json_w_key(&w, "uptime_us");
            json_w_int(&w, (int64_t)r->uptime_us);
            json_w_key(&w, "last_error");
            json_w_string(&w, r->last_error);
            json_w_key(&w, "counters");
            json_w_begin_obj(&w);
            for (size_t k = 0; k < r->n_counters; k++) {
                json_w_key(&w, r->counters[k]->name);
                json_w_int(&w, (int64_t)r->counters[k]->value);
            }
            json_w_end_obj(&w);
        }
        json_w_end_obj(&w);
    }
    json_w_end_obj(&w);
    json_w_key(&w, "active_version");
    if (active >= 0)
        json_w_int(&w, active);
    else
        json_w_null(&w);
    json_w_key(&w, "active_error");
    json_w_string(&w, active > 0 ? "" : why);
    json_w_key(&w, "all_up");
    json_w_bool(&w, all);
    json_w_end_obj(&w);
    err_t err = {0};
    size_t len = 0;
    char *text = json_w_finish(&w, &len, &err);
    if (text) printf("%s\n", text);
    free(text);
}

static void print_counter_if(const Moda__HealthReply *r, const char *label, const char *name)
{
    long long v = counter(r, name);
    if (v >= 0) printf("  %-22s %lld\n", label, v);
}

static void print_text(const char *state_path, int have_state, st_svc_t *svc, long long active, const char *why)
{
    if (!have_state) printf("(no %s: asking the services' default endpoints)\n", state_path);
    printf("%-9s %-10s %-8s %-9s %-8s %-4s %s\n", "SERVICE", "STATE", "PID", "UPTIME", "VERSION", "RST", "ENDPOINT");
    for (int i = 0; i < ST_NSVC; i++) {
        const Moda__HealthReply *r = hr_of(&svc[i]);
        char pid[24], up[24];
        snprintf(pid, sizeof pid, "%lld", svc[i].pid);
        if (r)
            snprintf(up, sizeof up, "%.1fs", (double)r->uptime_us / 1e6);
        else
            snprintf(up, sizeof up, "-");
        printf("%-9s %-10s %-8s %-9s %-8s %-4lld %s\n", svc_names[i], r ? state_name(r->state) : "DOWN",
               svc[i].pid ? pid : "-", up, r ? r->version : "-", svc[i].restarts, svc[i].endpoint);
        if (!r) printf("  ! %s\n", svc[i].error);
        else if (r->last_error && *r->last_error) printf("  last error: %s\n", r->last_error);
    }
    const Moda__HealthReply *inf = hr_of(&svc[3]);
    if (inf) {
        printf("\ncameras (at infer)       in   processed     dropped         bad      failed\n");
        for (size_t k = 0; k < inf->n_counters; k++) {
            const char *n = inf->counters[k]->name;
            if (strncmp(n, "in.", 3)) continue;
            const char *cam = n + 3;
            char b[80];
            long long v[4];
            const char *kinds[4] = {"processed", "dropped", "bad", "failed"};
            for (int q = 0; q < 4; q++) {
                snprintf(b, sizeof b, "%s.%s", kinds[q], cam);
                v[q] = counter(inf, b);
            }
            printf("  %-16s %10llu", cam, (unsigned long long)inf->counters[k]->value);
            for (int q = 0; q < 4; q++) printf("  %10lld", v[q] < 0 ? 0 : v[q]); /* absent = none yet */
            printf("\n");
        }
        const char *tot[5] = {"frames_in", "frames_processed", "frames_dropped", "frames_bad", "frames_failed"};
        printf("  %-16s", "(total)");
        for (int q = 0; q < 5; q++) printf(q ? "  %10lld" : " %10lld", counter(inf, tot[q]) < 0 ? 0 : counter(inf, tot[q]));
        printf("\n");
        long long p50 = counter(inf, "latency_p50_us"), p99 = counter(inf, "latency_p99_us");
        printf("infer: queue %lld, hard-case queue %lld, latency p50 %.1f ms p99 %.1f ms, bank v%lld\n",
               counter(inf, "queue_depth"), counter(inf, "hc_queue_depth"), p50 >= 0 ? p50 / 1000.0 : -1.0,
               p99 >= 0 ? p99 / 1000.0 : -1.0, counter(inf, "bank_version"));
    }
    const Moda__HealthReply *ing = hr_of(&svc[4]);
    if (ing) {
        printf("ingest:\n");
        for (size_t k = 0; k < ing->n_counters; k++)
            if (strstr(ing->counters[k]->name, "frames_") || strstr(ing->counters[k]->name, "reopen"))
                printf("  %-30s %llu\n", ing->counters[k]->name, (unsigned long long)ing->counters[k]->value);
    }
    const Moda__HealthReply *lab = hr_of(&svc[1]);
    if (lab) {
        printf("label:\n");
        print_counter_if(lab, "samples (hard cases)", "store_samples");
        print_counter_if(lab, "label queue depth", "queue_depth");
        print_counter_if(lab, "labels", "store_labels");
        print_counter_if(lab, "domains", "store_domains");
    }
    if (active > 0)
        printf("active bank: version %lld\n", active);
    else if (active == 0)
        printf("active bank: none (%s)\n", why);
    else
        printf("active bank: unknown (registry: %s)\n", why);
    const Moda__HealthReply *tr = hr_of(&svc[2]);
    if (tr) {
        printf("training:\n");
        /* moda-train's job counters (services/train/main.c, docs/train.md) as one line */
        static const char *stages[] = {"idle", "fetch", "encode", "train", "selector", "gate", "put", "loading"};
        long long stage = counter(tr, "job_stage");
        if (counter(tr, "job_running") > 0) {
            const char *dom = "?";
            for (size_t k = 0; k < tr->n_counters; k++)
                if (!strncmp(tr->counters[k]->name, "job_domain.", 11) && tr->counters[k]->value)
                    dom = tr->counters[k]->name + 11;
            printf("  job: domain %s, %s, epoch %lld/%lld, loss %.3f, ETA %lld s, running %lld s\n", dom,
                   stage >= 0 && stage < 8 ? stages[stage] : "?", counter(tr, "job_epoch"), counter(tr, "job_epochs"),
                   counter(tr, "job_loss_x1000") / 1000.0, counter(tr, "job_eta_s"), counter(tr, "job_elapsed_s"));
        } else if (stage >= 0) {
            printf("  job: none (%s); jobs passed %lld, refused %lld, failed %lld; last version %lld\n",
                   stage < 8 ? stages[stage] : "?", counter(tr, "jobs_passed"), counter(tr, "jobs_refused"),
                   counter(tr, "jobs_failed"), counter(tr, "last_version"));
        }
        int any = 0;
        for (size_t k = 0; k < tr->n_counters; k++)
            if (strncmp(tr->counters[k]->name, "msgs_", 5) && strcmp(tr->counters[k]->name, "health_requests")) {
                printf("  %-30s %llu\n", tr->counters[k]->name, (unsigned long long)tr->counters[k]->value);
                any = 1;
            }
        if (!any) printf("  no training jobs reported\n");
    }
}

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

int cmd_status(int argc, char **argv)
{
    err_t err = {0};
    cfg_t *cfg = cfg_new("moda status", "[--json] [--watch SEC] [--run-dir DIR]",
                         "Show every moda service's health (state, uptime, version), counters "
                         "(frames per camera,\nqueue depths, latency p50/p99), the active bank "
                         "version and training jobs.\nFinds the services through "
                         "<run-dir>/up.json written by `moda up`. Exit 0 when all\nfive answer, "
                         "1 when any is DOWN, 2 on bad arguments.",
                         keys, 0, &err);
    if (!cfg) {
        fprintf(stderr, "moda status: %s\n", err.msg);
        return 2;
    }
    int rc = cfg_parse(cfg, argc, argv, &err);
    if (client_help_version(cfg, rc)) {
        cfg_destroy(&cfg);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "moda status: %s\n", err.msg);
        cfg_destroy(&cfg);
        return 2;
    }
    char run_dir[256], state_path[300];
    client_run_dir(cfg, run_dir, sizeof run_dir);
    int json = cfg_bool(cfg, "json"), timeout = (int)cfg_int(cfg, "timeout_ms");
    double watch = cfg_double(cfg, "watch");
    if (watch > 0) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    msg_set_sender("moda-status");
    void *ctx = zmq_ctx_new();
    int status = 1;
    do {
        st_svc_t svc[ST_NSVC];
        memset(svc, 0, sizeof svc);
        int have = 0;
        load_state(run_dir, svc, state_path, sizeof state_path, &have);
        int all = 1;
        ask_health(ctx, svc, timeout);
        for (int i = 0; i < ST_NSVC; i++) all &= svc[i].health != NULL;
        char why[256] = "";
        long long active = svc[0].health ? active_version(ctx, svc[0].endpoint, timeout, why, sizeof why) : -1;
        if (!svc[0].health) snprintf(why, sizeof why, "registry DOWN");
        if (watch > 0 && !json) printf("\033[H\033[2J");
        if (json)
            print_json(state_path, have, svc, active, why);
        else
            print_text(state_path, have, svc, active, why);
        fflush(stdout);
        for (int i = 0; i < ST_NSVC; i++) msg_free(&svc[i].health);
        status = all ? 0 : 1;
        for (double t = 0; watch > 0 && t < watch && !g_stop; t += 0.05) {
            struct timespec ts = {0, 50000000L};
            nanosleep(&ts, NULL);
        }
    } while (watch > 0 && !g_stop);
    zmq_ctx_term(ctx);
    cfg_destroy(&cfg);
    return status;
}
