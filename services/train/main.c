/* moda-train — trains domain adapters from labels and publishes bank versions to the registry.
 *
 * The service loop (svc.h) answers Health on --bind; the training thread (trainer.h) watches
 * moda-label, runs jobs (job.h: MoDA engine + no-forgetting gate) and puts passing banks into
 * moda-registry. A timer copies the thread's progress into the Health counters every 200 ms.
 * SIGTERM/SIGINT: the loop stops, the thread is asked to stop; a job inside an epoch is
 * abandoned (the state file keeps it RUNNING, so the next start reruns it) and the process
 * exits 0. Docs: docs/train.md.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "device.h"
#include "log.h"
#include "paths.h"
#include "svc.h"
#include "trainer.h"

static const char summary[] =
    "trains domain adapters from labels and publishes bank versions to the registry.\n"
    "Watches moda-label; when a label domain has at least min_new new labels it trains that\n"
    "domain's adapter into a copy of the active bank (MoDA engine), evaluates every domain on its\n"
    "holdout labels (no-forgetting gate) and puts a passing bank into moda-registry, promoted to\n"
    "`active` when policy = auto. Progress: Health counters (`moda status`). Docs: docs/train.md.";

static const cfg_key_t keys[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-train.sock"),
    {"label", CFG_ENDPOINT, "ipc:///tmp/moda-label.sock", 0, 0, "moda-label request endpoint (its --bind)"},
    {"registry", CFG_ENDPOINT, "ipc:///tmp/moda-registry.sock", 0, 0, "moda-registry request endpoint"},
    {"model", CFG_STRING, "", 0, 4000,
     "SAM weights (default: $MODA_MODEL, else <repo>/.deps/models/mobile_sam.safetensors)"},
    {"state_dir", CFG_STRING, "moda-train-state", 0, 3000, "job state folder (state.json), created if missing"},
    {"min_new", CFG_INT, "20", 1, 1e9, "new labels of a domain (train + holdout) that start a job"},
    {"epochs", CFG_INT, "8", 1, 10000, "adapter training epochs per job"},
    {"seed", CFG_INT, "0", 0, 2147483647.0,
     "training seed (on the CPU same seed + threads = same bank; the GPU step is not bit-reproducible)"},
    {"replay", CFG_INT, "10", 0, 1000, "labelled samples kept in the bank per domain (selector replay)"},
    {"selector_epochs", CFG_INT, "10", 1, 10000, "selector retraining epochs (banks of >= 2 domains)"},
    {"max_train", CFG_INT, "200", 0, 1e6, "newest train labels used per job (0: all)"},
    {"max_holdout", CFG_INT, "10", 0, 1e6, "newest holdout labels per domain in the gate (0: all)"},
    {"gate_margin", CFG_DOUBLE, "1.0", -100, 100,
     "no-forgetting gate: largest IoU drop (points) allowed on any other domain's holdout"},
    {"gate_min_gain", CFG_DOUBLE, "0.0", -100, 100,
     "the trained domain must beat the active bank (or zero-shot SAM) by more than this (IoU points)"},
    {"fixed_loss", CFG_BOOL, "true", 0, 0,
     "measure the box-prompt train loss before and after training (two extra passes; metrics)"},
    {"gate_prompt", CFG_STRING, "auto", 0, 8, "prompt of the holdout evaluation: box (GT box) | auto (none)"},
    {"policy", CFG_STRING, "auto", 0, 8, "auto: promote a passing version to `active`; manual: only put it"},
    {"poll_ms", CFG_INT, "2000", 50, 3600000, "how often the label store is asked for new labels"},
    {"retry_ms", CFG_INT, "10000", 50, 3600000, "first retry delay after a failed job (doubles, at most 16x)"},
    {"timeout_ms", CFG_INT, "30000", 100, 3600000, "deadline of each label/registry request"},
    {"stop_wait_ms", CFG_INT, "2000", 0, 600000, "at SIGTERM, wait this long for the job thread"},
    {"threads", CFG_INT, "0", 0, 1024, "kernel threads for training (0: all cores)"},
    {"actor", CFG_STRING, "moda-train", 0, 100, "actor recorded with every registry put"},
    {"device", CFG_STRING, "auto", 0, 16,
     "cpu | cuda | auto: where the adapter training step runs (auto: CUDA when a device is "
     "present; the choice and its reason are logged as event=device)"},
    CFG_END,
};

/* --device → *dev (logged) at startup, so a bad value or `cuda` without a device is a
 * configuration error (exit 2) and not a failure of every job. */
static int select_device(const cfg_t *cfg, device_choice_t *dev, err_t *err)
{
    err_t e = {0};
    if (device_select(cfg_str(cfg, "device"), 1, dev, &e))
        return err_set(err, ERR_CONFIG, "%s (device from %s)", e.msg, cfg_origin(cfg, "device"));
    if (dev->device == KN_DEV_CUDA) {
        size_t l = strlen(dev->reason);
        snprintf(dev->reason + l, sizeof dev->reason - l,
                 "; the adapter training step only: encoding, the gate and the selector on the CPU");
    }
    device_log(dev);
    return 0;
}

typedef struct app {
    trainer_t *tr;
    uint64_t error_seq;
    char domain_counter[80];
} app_t;

static void set(svc_t *s, const char *name, uint64_t v) { *svc_counter(s, name) = v; }

/* Progress of the training thread -> Health counters (loop thread). */
static int sync_status(svc_t *s, void *user)
{
    app_t *a = user;
    trainer_status_t st;
    trainer_snapshot(a->tr, &st);
    set(s, "jobs_started", st.jobs_started);
    set(s, "jobs_passed", st.jobs_passed);
    set(s, "jobs_refused", st.jobs_refused);
    set(s, "jobs_failed", st.jobs_failed);
    set(s, "jobs_restarted", st.jobs_restarted);
    set(s, "jobs_recovered", st.jobs_recovered);
    set(s, "versions_put", st.versions_put);
    set(s, "versions_promoted", st.versions_promoted);
    set(s, "label_polls", st.polls);
    set(s, "label_polls_failed", st.polls_failed);
    set(s, "model_ready", (uint64_t)st.model_ready);
    set(s, "job_running", (uint64_t)st.running);
    set(s, "job_stage", (uint64_t)st.stage);
    set(s, "job_epoch", (uint64_t)st.epoch);
    set(s, "job_epochs", (uint64_t)st.epochs);
    set(s, "job_loss_x1000", st.loss > 0 ? (uint64_t)(st.loss * 1000 + 0.5) : 0);
    set(s, "job_eta_s", st.running && st.eta_s > 0 ? (uint64_t)(st.eta_s + 0.5) : 0);
    set(s, "job_elapsed_s", st.running ? (uint64_t)((msg_now_us() - st.job_started_us) / 1000000) : 0);
    set(s, "last_job_ms", (uint64_t)(st.last_job_seconds * 1000));
    set(s, "last_version", st.last_version);
    /* the running job's domain as a counter name (Health has no free-text field for it) */
    char name[80];
    snprintf(name, sizeof name, "job_domain.%.40s", st.domain);
    if (a->domain_counter[0] && (strcmp(a->domain_counter, name) || !st.running)) set(s, a->domain_counter, 0);
    if (st.running && st.domain[0]) {
        set(s, name, 1);
        snprintf(a->domain_counter, sizeof a->domain_counter, "%s", name);
    }
    if (st.error_seq != a->error_seq) {
        a->error_seq = st.error_seq;
        svc_error(s, "%s", st.last_error);
    }
    /* a model that does not load leaves the service up but unable to train: DEGRADED */
    svc_set_state(s, st.model_ready      ? MODA__SERVICE_STATE__SERVICE_STATE_SERVING
                     : st.error_seq > 0 ? MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED
                                        : MODA__SERVICE_STATE__SERVICE_STATE_STARTING);
    return 0;
}

int main(int argc, char **argv)
{
    err_t err = {0};
    log_set_name("train");
    cfg_t *cfg = cfg_new("moda-train", "[options]", summary, keys, 0, &err);
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-train %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        return 0;
    }
    svc_opts_t opts;
    svc_t *svc = NULL;
    app_t app = {0};
    char model[4096];
    trainer_cfg_t tc;
    memset(&tc, 0, sizeof tc);
    if (!rc) rc = svc_opts_from_cfg(&opts, "train", cfg, &err);
    if (!rc) {
        const char *pol = cfg_str(cfg, "policy"), *pr = cfg_str(cfg, "gate_prompt");
        if (strcmp(pol, "auto") && strcmp(pol, "manual"))
            rc = err_set(&err, ERR_CONFIG, "policy '%s': use auto or manual", pol);
        else if (strcmp(pr, "box") && strcmp(pr, "auto"))
            rc = err_set(&err, ERR_CONFIG, "gate_prompt '%s': use box or auto", pr);
        if (*cfg_str(cfg, "model")) snprintf(model, sizeof model, "%s", cfg_str(cfg, "model"));
        else if (paths_default_model(model, sizeof model)) rc = err_set(&err, ERR_CONFIG, "default model path too long");
        tc.label = cfg_str(cfg, "label");
        tc.registry = cfg_str(cfg, "registry");
        tc.model = model;
        tc.state_dir = cfg_str(cfg, "state_dir");
        tc.actor = cfg_str(cfg, "actor");
        tc.min_new = (int)cfg_int(cfg, "min_new");
        tc.poll_ms = (int)cfg_int(cfg, "poll_ms");
        tc.retry_ms = (int)cfg_int(cfg, "retry_ms");
        tc.timeout_ms = (int)cfg_int(cfg, "timeout_ms");
        tc.threads = (int)cfg_int(cfg, "threads");
        tc.policy_auto = !strcmp(pol, "auto");
        tc.job.epochs = (int)cfg_int(cfg, "epochs");
        tc.job.seed = (uint64_t)cfg_int(cfg, "seed");
        tc.job.replay = (int)cfg_int(cfg, "replay");
        tc.job.sel_epochs = (int)cfg_int(cfg, "selector_epochs");
        tc.job.max_train = cfg_int(cfg, "max_train") ? (int)cfg_int(cfg, "max_train") : -1;
        tc.job.max_holdout = cfg_int(cfg, "max_holdout") ? (int)cfg_int(cfg, "max_holdout") : -1;
        tc.job.margin_pts = cfg_double(cfg, "gate_margin");
        tc.job.min_gain_pts = cfg_double(cfg, "gate_min_gain");
        tc.job.fixed_loss = cfg_bool(cfg, "fixed_loss");
        tc.job.prompt = !strcmp(pr, "auto") ? TRAIN_PROMPT_AUTO : TRAIN_PROMPT_BOX;
    }
    device_choice_t dev;
    if (!rc) rc = select_device(cfg, &dev, &err);
    if (!rc) tc.job.device = dev.device;
    if (!rc && !(app.tr = trainer_new(&tc, &err))) rc = err.code ? err.code : ERR_INVALID;
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc) rc = svc_add_timer(svc, 200, sync_status, &app, &err);
    if (!rc) {
        log_info("event=config label=%s registry=%s model=%s state_dir=%s min_new=%d epochs=%d policy=%s "
                 "gate_margin=%.2f gate_min_gain=%.2f gate_prompt=%s poll_ms=%d device=%s",
                 tc.label, tc.registry, tc.model, tc.state_dir, tc.min_new, tc.job.epochs,
                 tc.policy_auto ? "auto" : "manual", tc.job.margin_pts, tc.job.min_gain_pts,
                 cfg_str(cfg, "gate_prompt"), tc.poll_ms, device_name(tc.job.device));
        rc = trainer_start(app.tr, &err);
    }
    if (!rc) rc = svc_run(svc, &err);
    int ended = trainer_stop(app.tr, cfg ? (int)cfg_int(cfg, "stop_wait_ms") : 0);
    if (!ended) log_warn("event=stop job=abandoned msg=\"training thread inside an epoch; the job reruns at the next start\"");
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    else log_info("event=exit code=0");
    svc_destroy(&svc);
    if (!ended) {
        cfg_destroy(&cfg);
        fflush(stderr);
        _exit(err_exit_status(rc)); /* the thread is mid-epoch; nothing it holds needs closing */
    }
    trainer_destroy(&app.tr);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
