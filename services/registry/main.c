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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

typedef struct app {
    reg_t *reg;
    void *pub;
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

static int on_request(svc_t *s, void *sock, const msg_t *req, void *user)
{
    app_t *a = user;
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
    msg_socket_close(&app.pub);
    svc_destroy(&svc);
    reg_destroy(&app.reg);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
