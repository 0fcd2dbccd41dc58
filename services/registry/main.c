/* moda-registry — versioned adapter banks (LMDB): put/get versions, aliases, rollback,
 * revert-domain, history, backup (protocol and operation: docs/registry.md).
 *
 *   moda-registry --data DIR [--bind ENDPOINT] [--pub ENDPOINT] [--config FILE]
 *
 * The only process that opens DIR's LMDB environment. Requests arrive on the control socket
 * (ROUTER at --bind; Health is answered by the service loop, everything else by reg.c).
 * Every alias change is published on --pub as BankChanged on topic "bank.<alias>", and
 * every alias is re-announced every --republish-ms so a subscriber that missed one catches
 * up (GetAlias gives the current value on request).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "cfg.h"
#include "log.h"
#include "reg.h"
#include "svc.h"

static const char summary[] =
    "Versioned adapter banks (LMDB): put/get versions, aliases, rollback, revert-domain,\n"
    "history, backup. The only process that opens the LMDB environment in --data.";

static const cfg_key_t keys[] = {
    SVC_CFG_KEYS(REG_DEFAULT_BIND),
    {"data", CFG_STRING, "moda-registry-data", 0, 1000, "LMDB environment folder (created if missing)"},
    {"pub", CFG_ENDPOINT, REG_DEFAULT_PUB, 0, 0, "PUB socket for BankChanged (bound)"},
    {"map_size_kb", CFG_INT, "65536", 32, 1073741824.0, "initial LMDB map size in KiB; grows when full"},
    {"max_bank_mb", CFG_INT, "1024", 1, 65536, "largest bank a put accepts"},
    {"republish_ms", CFG_INT, "10000", 0, 86400000, "re-announce every alias this often (0: never)"},
    {"no_sync", CFG_BOOL, "false", 0, 0, "skip fsync on commit (tests only: a crash may lose commits)"},
    CFG_END,
};

#define BACKUP_DONE_EP "inproc://registry-backup-done"

/* A backup runs in its own thread so requests keep being served; its reply is sent from the
 * loop when the thread signals completion on an inproc PUSH/PULL pair. */
typedef struct backup_job {
    int running;
    pthread_t th;
    void *ctx;
    char dir[4096];
    msg_t req;            /* route and request id of the BackupRequest (no payload) */
    int rc;
    err_t err;
    uint64_t bytes;
    double seconds;
} backup_job_t;

typedef struct app {
    reg_t *reg;
    void *pub;
    void *ctl;            /* the control socket (set on the first request) */
    void *done;           /* PULL: backup thread (PUSH) -> loop */
    backup_job_t job;
} app_t;

static void publish(svc_t *s, app_t *a, const reg_pub_t *p)
{
    Moda__BankChanged bc = MODA__BANK_CHANGED__INIT;
    bc.alias = (char *)p->alias;
    bc.version = p->version;
    bc.base_hash = (char *)p->base_hash;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_BANK_CHANGED;
    env.bank_changed = &bc;
    msg_route_t topic = {{0}, 0, 0};
    topic.id_len = (size_t)snprintf((char *)topic.id, sizeof topic.id, "bank.%s", p->alias);
    err_t err = {0};
    if (msg_send_to(a->pub, &topic, &env, NULL, 0, MSG_DONTWAIT, &err))
        log_warn("event=publish_failed alias=%s version=%llu msg=\"%s\"", p->alias,
                 (unsigned long long)p->version, err.msg);
    else
        svc_count(s, "bank_changed_sent", 1);
}

/* Storage figures for Health, so dedup and map growth are visible to operators. */
static void update_counters(svc_t *s, app_t *a)
{
    store_stats_t st;
    if (store_stats(reg_store(a->reg), &st, NULL)) return;
    *svc_counter(s, "store_versions") = st.versions;
    *svc_counter(s, "store_blobs") = st.blobs;
    *svc_counter(s, "store_blob_bytes") = st.blob_bytes;
    *svc_counter(s, "store_history") = st.history;
    *svc_counter(s, "store_map_bytes") = st.map_size;
    *svc_counter(s, "store_map_grows") = st.map_grows;
}

static void *backup_thread(void *arg)
{
    app_t *a = arg;
    backup_job_t *j = &a->job;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    j->rc = store_backup(reg_store(a->reg), j->dir, &j->err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", j->dir);
    struct stat st;
    j->bytes = !j->rc && stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    void *p = zmq_socket(j->ctx, ZMQ_PUSH);
    if (p) {
        int linger = 5000, sndtimeo = 5000; /* never hang the shutdown on a lost wake-up */
        zmq_setsockopt(p, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(p, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
        if (zmq_connect(p, BACKUP_DONE_EP) == 0) zmq_send(p, "d", 1, 0);
        zmq_close(p);
    }
    return NULL;
}

static void reply_backup(app_t *a, void *sock, const msg_t *req, int rc, const char *msg, uint64_t bytes,
                         double seconds)
{
    Moda__Status st = MODA__STATUS__INIT;
    st.code = msg_status_code(rc);
    st.message = (char *)(rc ? msg : "");
    Moda__BackupReply br = MODA__BACKUP_REPLY__INIT;
    br.status = &st;
    br.bytes = bytes;
    br.seconds = seconds;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_BACKUP_REPLY;
    env.backup_reply = &br;
    err_t err = {0};
    if (msg_reply(sock, req, &env, NULL, 0, &err)) log_warn("event=reply_failed req=backup msg=\"%s\"", err.msg);
    (void)a;
}

static int on_backup_done(svc_t *s, void *sock, void *user)
{
    app_t *a = user;
    char b;
    zmq_recv(sock, &b, 1, ZMQ_DONTWAIT);
    if (!a->job.running) return 0;
    pthread_join(a->job.th, NULL);
    a->job.running = 0;
    if (a->job.rc) {
        svc_error(s, "backup to %s failed: %s", a->job.dir, a->job.err.msg);
        svc_count(s, "requests_failed", 1);
    } else {
        log_info("event=backup dir=%s bytes=%llu seconds=%.3f", a->job.dir, (unsigned long long)a->job.bytes,
                 a->job.seconds);
        svc_count(s, "requests_ok", 1);
    }
    reply_backup(a, a->ctl, &a->job.req, a->job.rc, a->job.err.msg, a->job.bytes, a->job.seconds);
    return 0;
}

static void start_backup(svc_t *s, app_t *a, void *sock, const msg_t *req)
{
    const Moda__BackupRequest *q = req->env->backup_request;
    const char *dir = q && q->dir ? q->dir : "";
    if (a->job.running) {
        reply_backup(a, sock, req, ERR_STATE, "a backup is already running", 0, 0);
        return;
    }
    if (!*dir || strlen(dir) >= sizeof a->job.dir) {
        reply_backup(a, sock, req, ERR_INVALID, "backup: folder name empty or too long", 0, 0);
        return;
    }
    backup_job_t *j = &a->job;
    memset(&j->err, 0, sizeof j->err);
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    memset(&j->req, 0, sizeof j->req);
    j->req.has_route = req->has_route;
    j->req.route = req->route;
    j->req.request_id = req->request_id;
    j->ctx = svc_ctx(s);
    j->running = 1;
    if (pthread_create(&j->th, NULL, backup_thread, a)) {
        j->running = 0;
        reply_backup(a, sock, req, ERR_STATE, "backup: cannot start a thread", 0, 0);
    }
}

static int on_request(svc_t *s, void *sock, const msg_t *req, void *user)
{
    app_t *a = user;
    a->ctl = sock;
    if (req->env->body_case == MODA__ENVELOPE__BODY_BACKUP_REQUEST && req->nparts == 0) {
        start_backup(s, a, sock, req);
        return 0;
    }
    reg_reply_t rep;
    int code = reg_handle(a->reg, req->env, req->parts, req->nparts, &rep);
    const char *what = msg_body_name(req->env->body_case);
    err_t err = {0};
    if (msg_reply(sock, req, &rep.env, rep.parts, rep.nparts, &err))
        log_warn("event=reply_failed req=%s msg=\"%s\"", what, err.msg);
    if (code) {
        svc_count(s, "requests_failed", 1);
        log_info("event=request_refused req=%s code=%d", what, code);
    } else {
        svc_count(s, "requests_ok", 1);
    }
    update_counters(s, a);
    for (int i = 0; i < rep.n_pub; i++) {
        log_info("event=alias_changed alias=%s version=%llu", rep.pub[i].alias,
                 (unsigned long long)rep.pub[i].version);
        publish(s, a, &rep.pub[i]);
    }
    reg_reply_clear(&rep);
    return 0;
}

static int on_timer(svc_t *s, void *user)
{
    app_t *a = user;
    store_alias_t *as = NULL;
    int n = 0;
    if (store_list_aliases(reg_store(a->reg), &as, &n, NULL)) return 0;
    for (int i = 0; i < n; i++) {
        reg_pub_t p;
        if (reg_alias_value(a->reg, as[i].name, &p, NULL) == 0) publish(s, a, &p);
    }
    free(as);
    return 0;
}

int main(int argc, char **argv)
{
    /* Keep big working buffers (a bank is copied a few times per put) in the heap instead of
     * fresh mmaps: first-touch page faults cost ~35 us per 4 KiB page on a busy VM, ~90 ms
     * for a 10 MB bank, more than the rest of the put. */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    err_t err = {0};
    cfg_t *cfg = cfg_new("moda-registry", "--data DIR [--bind ENDPOINT] [--pub ENDPOINT] [options]", summary,
                         keys, 0, &err);
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-registry %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        return 0;
    }
    svc_opts_t opts;
    svc_t *svc = NULL;
    app_t app = {0};
    if (!rc) rc = svc_opts_from_cfg(&opts, "registry", cfg, &err);
    if (!rc) {
        /* a put carries a whole bank (in frames of a few MiB): let messages that large in */
        size_t want = ((size_t)cfg_int(cfg, "max_bank_mb") << 20) + ((size_t)1 << 20);
        if (opts.limits.max_total_bytes < want) opts.limits.max_total_bytes = want;
    }
    if (!rc) {
        reg_opts_t ro = {cfg_str(cfg, "data"), (size_t)cfg_int(cfg, "map_size_kb") << 10, cfg_bool(cfg, "no_sync"),
                         (size_t)cfg_int(cfg, "max_bank_mb") << 20};
        if (!(app.reg = reg_new(&ro, &err))) rc = err.code;
    }
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc && !(app.pub = svc_socket(svc, ZMQ_PUB, &err))) rc = err.code;
    if (!rc) rc = msg_bind(app.pub, cfg_str(cfg, "pub"), &err);
    if (!rc && !(app.done = svc_socket(svc, ZMQ_PULL, &err))) rc = err.code;
    if (!rc) rc = msg_bind(app.done, BACKUP_DONE_EP, &err);
    if (!rc) rc = svc_add_socket(svc, app.done, "backup_done", on_backup_done, &app, &err);
    if (!rc && cfg_int(cfg, "republish_ms") > 0)
        rc = svc_add_timer(svc, (int)cfg_int(cfg, "republish_ms"), on_timer, &app, &err);
    if (!rc) {
        svc_set_control_handler(svc, on_request, &app);
        update_counters(svc, &app);
        store_stats_t st;
        store_stats(reg_store(app.reg), &st, NULL);
        log_info("event=start data=%s bind=%s pub=%s versions=%llu blobs=%llu map_mb=%llu stale_readers_cleared=%llu",
                 cfg_str(cfg, "data"), svc_control_endpoint(svc), cfg_str(cfg, "pub"), (unsigned long long)st.versions,
                 (unsigned long long)st.blobs, (unsigned long long)(st.map_size >> 20),
                 (unsigned long long)st.stale_readers);
        rc = svc_run(svc, &err);
    }
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    if (app.job.running) pthread_join(app.job.th, NULL); /* never leave a half-written copy behind */
    msg_socket_close(&app.pub);
    svc_destroy(&svc);
    reg_destroy(&app.reg);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
