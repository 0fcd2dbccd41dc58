/* moda-label — hard cases and operator labels (LMDB), the label queue, labels for train
 * (protocol and operation: docs/label.md).
 *
 *   moda-label --data DIR [--bind ENDPOINT] [--hard-case-bind ENDPOINT] [--config FILE]
 *
 * The only process that opens DIR's LMDB environment. --bind (ROUTER) answers Health (service
 * loop) and the labeling API (api.c); --hard-case-bind (ROUTER; infer connects a DEALER) takes
 * HardCase messages and acks each one only after the store committed it. Both sockets accept
 * every request api.c handles.
 */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "api.h"
#include "cfg.h"
#include "log.h"
#include "svc.h"

static const char summary[] =
    "Stores hard cases and operator labels (LMDB), serves the label queue and the labels train\n"
    "pulls. The only process that opens the LMDB environment in --data.";

static const cfg_key_t keys[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-label.sock"),
    {"hard_case_bind", CFG_ENDPOINT, "ipc:///tmp/moda-label-hc.sock", 0, 0, "HardCase intake (ROUTER, bound)"},
    {"data", CFG_STRING, "moda-label-data", 0, 1000, "LMDB environment folder (created if missing)"},
    {"map_size_kb", CFG_INT, "65536", 32, 1073741824.0, "initial LMDB map size in KiB; grows when full"},
    {"holdout_share", CFG_DOUBLE, "0.2", 0, 1, "share of labeled samples kept for holdout (by hash)"},
    {"no_sync", CFG_BOOL, "false", 0, 0, "skip fsync on commit (tests only: a crash may lose acked data)"},
    CFG_END,
};

static void update_counters(svc_t *s, lstore_t *st)
{
    lstore_stats_t x;
    if (lstore_stats(st, &x, NULL)) return;
    *svc_counter(s, "store_samples") = x.samples;
    *svc_counter(s, "queue_depth") = x.queued;
    *svc_counter(s, "store_labels") = x.labels;
    *svc_counter(s, "store_domains") = x.domains;
    *svc_counter(s, "store_image_bytes") = x.image_bytes;
    *svc_counter(s, "store_map_bytes") = x.map_size;
    *svc_counter(s, "store_map_grows") = x.map_grows;
}

static int serve(svc_t *s, void *sock, const msg_t *req, lstore_t *st)
{
    api_reply_t rep;
    int code = api_handle(st, req->env, req->parts, req->nparts, &rep);
    const char *what = msg_body_name(req->env->body_case);
    err_t err = {0};
    if (msg_reply(sock, req, &rep.env, rep.parts, rep.nparts, &err))
        log_warn("event=reply_failed req=%s msg=\"%s\"", what, err.msg);
    svc_count(s, code ? "requests_failed" : "requests_ok", 1);
    if (rep.event && strcmp(rep.event, "requests_failed")) svc_count(s, rep.event, 1);
    if (code) log_info("event=request_refused req=%s code=%d", what, code);
    api_reply_clear(&rep);
    update_counters(s, st);
    return 0;
}

static int on_control(svc_t *s, void *sock, const msg_t *req, void *user) { return serve(s, sock, req, user); }

static int on_hard_case(svc_t *s, void *sock, void *user)
{
    msg_t *m = NULL;
    if (svc_recv(s, sock, "hard_case", &m) == 0) serve(s, sock, m, user);
    msg_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    err_t err = {0};
    cfg_t *cfg = cfg_new("moda-label", "--data DIR [--bind ENDPOINT] [--hard-case-bind ENDPOINT] [options]",
                         summary, keys, 0, &err);
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-label %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        return 0;
    }
    svc_opts_t opts;
    svc_t *svc = NULL;
    lstore_t *st = NULL;
    void *hc = NULL;
    if (!rc) rc = svc_opts_from_cfg(&opts, "label", cfg, &err);
    if (!rc) {
        lstore_opts_t so = {(size_t)cfg_int(cfg, "map_size_kb") << 10, cfg_bool(cfg, "no_sync"),
                            cfg_double(cfg, "holdout_share")};
        if (!(st = lstore_open(cfg_str(cfg, "data"), &so, &err))) rc = err.code;
    }
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc && !(hc = svc_socket(svc, ZMQ_ROUTER, &err))) rc = err.code;
    if (!rc) rc = svc_bind(svc, hc, cfg_str(cfg, "hard_case_bind"), &err);
    if (!rc) {
        rc = svc_add_socket(svc, hc, "hard_case", on_hard_case, st, &err);
        if (!rc) hc = NULL; /* owned by svc now */
    }
    if (!rc) {
        svc_set_control_handler(svc, on_control, st);
        update_counters(svc, st);
        log_info("event=start data=%s bind=%s hard_case_bind=%s samples=%llu queued=%llu labels=%llu",
                 cfg_str(cfg, "data"), svc_control_endpoint(svc), cfg_str(cfg, "hard_case_bind"),
                 (unsigned long long)svc_counter_get(svc, "store_samples"),
                 (unsigned long long)svc_counter_get(svc, "queue_depth"),
                 (unsigned long long)svc_counter_get(svc, "store_labels"));
        rc = svc_run(svc, &err);
    }
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    msg_socket_close(&hc);
    svc_destroy(&svc);
    lstore_close(&st);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
