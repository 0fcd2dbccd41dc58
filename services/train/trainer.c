/* trainer.c — moda-train's training thread (trainer.h). */
#include "trainer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kn.h"
#include "log.h"
#include "rpc.h"
#include "sam.h"
#include "tstate.h"
#include "wts.h"

enum { MAX_RETRY = 256 };

typedef struct retry {
    char name[65];
    int64_t at_ms;
    int delay_ms;
} retry_t;

struct trainer {
    trainer_cfg_t cfg;
    char state_path[4200];
    tstate_t st; /* training thread only */
    void *ctx;   /* zmq context of the training thread */
    rpc_t rpc;
    sam_t *sam;
    char base_hash[65];
    pthread_t thread;
    int started;
    atomic_int stop, done;
    pthread_mutex_t mu;
    trainer_status_t status; /* under mu */
    retry_t retry[MAX_RETRY];
    int nretry;
    double job_t0;
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static double now_s(void) { return (double)now_ms() / 1000.0; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- status (shared with the service loop) ---------------------------------------------- */

#define LOCKED(t, stmt)                 \
    do {                                \
        pthread_mutex_lock(&(t)->mu);   \
        stmt;                           \
        pthread_mutex_unlock(&(t)->mu); \
    } while (0)

static void set_error(trainer_t *t, const char *what, const err_t *e)
{
    log_error("event=%s code=%d msg=\"%s\"", what, e->code, e->msg);
    LOCKED(t, {
        snprintf(t->status.last_error, sizeof t->status.last_error, "%s: %s", what, e->msg);
        t->status.error_seq++;
    });
}

static void hook_stage(int stage, void *ctx)
{
    trainer_t *t = ctx;
    LOCKED(t, t->status.stage = stage);
    log_info("event=job_stage domain=%s stage=%s elapsed_s=%.1f", t->st.job.domain, job_stage_name(stage),
             now_s() - t->job_t0);
}

static void hook_progress(const train_progress_t *p, void *ctx)
{
    trainer_t *t = ctx;
    LOCKED(t, {
        t->status.epoch = p->epoch;
        t->status.epochs = p->epochs;
        t->status.loss = p->loss;
        t->status.eta_s = p->eta_s;
    });
    log_info("event=epoch domain=%s epoch=%d/%d loss=%.4f lr=%.1e samples_per_s=%.2f eta_s=%.0f",
             t->st.job.domain, p->epoch, p->epochs, p->loss, (double)p->lr, p->samples_per_s, p->eta_s);
}

static void hook_note(const char *line, void *ctx)
{
    trainer_t *t = ctx;
    if (!strncmp(line, "selector:", 9)) LOCKED(t, t->status.stage = JOB_STAGE_SELECTOR);
    log_info("event=note domain=%s msg=\"%s\"", t->st.job.domain, line);
}

void trainer_snapshot(trainer_t *t, trainer_status_t *out) { LOCKED(t, *out = t->status); }

/* ---- retries ------------------------------------------------------------------------------ */

static retry_t *retry_of(trainer_t *t, const char *name, int create)
{
    for (int i = 0; i < t->nretry; i++)
        if (!strcmp(t->retry[i].name, name)) return &t->retry[i];
    if (!create || t->nretry >= MAX_RETRY) return NULL;
    retry_t *r = &t->retry[t->nretry++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

static void retry_later(trainer_t *t, const char *name)
{
    retry_t *r = retry_of(t, name, 1);
    if (!r) return;
    int base = t->cfg.retry_ms;
    r->delay_ms = r->delay_ms ? r->delay_ms * 2 : base;
    if (r->delay_ms > 16 * base) r->delay_ms = 16 * base;
    r->at_ms = now_ms() + r->delay_ms;
}

static int may_try(trainer_t *t, const char *name)
{
    retry_t *r = retry_of(t, name, 0);
    return !r || now_ms() >= r->at_ms;
}

static void retry_clear(trainer_t *t, const char *name)
{
    retry_t *r = retry_of(t, name, 0);
    if (r) r->delay_ms = 0, r->at_ms = 0;
}

/* ---- jobs --------------------------------------------------------------------------------- */

static int save_state(trainer_t *t)
{
    err_t e = {0};
    int rc = tstate_save(&t->st, t->state_path, &e);
    if (rc) set_error(t, "state_save", &e);
    return rc;
}

static void job_idle(trainer_t *t)
{
    memset(&t->st.job, 0, sizeof t->st.job);
    LOCKED(t, {
        t->status.running = 0;
        t->status.stage = JOB_STAGE_IDLE;
        t->status.epoch = t->status.epochs = 0;
        t->status.eta_s = 0;
    });
}

/* The put of the current job is in the registry as `version`: record it, job done. */
static void finish_put(trainer_t *t, uint64_t version)
{
    tstate_domain_t *d = tstate_domain(&t->st, t->st.job.domain, 1);
    if (d) {
        d->cursor = d->tried = t->st.job.cursor;
        d->version = version;
        snprintf(d->result, sizeof d->result, "passed");
    }
    retry_clear(t, t->st.job.domain);
    job_idle(t);
    save_state(t);
}

static int permanent(int code)
{
    return code == ERR_INVALID || code == ERR_STATE || code == ERR_FORMAT || code == ERR_UNSUPPORTED ||
           code == ERR_VERSION || code == ERR_RANGE;
}

/* Runs the job recorded in t->st.job (phase set to RUNNING here) to its end. */
static void run_job(trainer_t *t)
{
    tstate_job_t *j = &t->st.job;
    j->phase = TSTATE_RUNNING;
    if (!j->started_us) j->started_us = msg_now_us();
    if (save_state(t)) {
        job_idle(t);
        return;
    }
    t->job_t0 = now_s();
    LOCKED(t, {
        t->status.jobs_started++;
        t->status.running = 1;
        t->status.stage = JOB_STAGE_FETCH;
        snprintf(t->status.domain, sizeof t->status.domain, "%s", j->domain);
        t->status.epoch = t->status.epochs = 0;
        t->status.loss = t->status.eta_s = 0;
        t->status.job_started_us = msg_now_us();
    });
    log_info("event=job_start job=%s domain=%s label_seq=%llu restarts=%d epochs=%d policy=%s", j->id, j->domain,
             (unsigned long long)j->cursor, j->restarts, t->cfg.job.epochs, t->cfg.policy_auto ? "auto" : "manual");
    job_env_t env = {.sam = t->sam, .base_hash = t->base_hash, .rpc = &t->rpc, .cfg = &t->cfg.job,
                     .stop = &t->stop,
                     .hooks = {.stage = hook_stage, .progress = hook_progress, .note = hook_note, .ctx = t}};
    job_out_t out;
    err_t e = {0};
    int rc = job_run(&env, j->domain, &out, &e);
    if (rc == ERR_INTERRUPTED) {
        log_warn("event=job_abandoned job=%s domain=%s state=running msg=\"restarts from scratch at the next start\"",
                 j->id, j->domain);
        job_out_clear(&out);
        return; /* the state file still says RUNNING */
    }
    tstate_domain_t *d = tstate_domain(&t->st, j->domain, 1);
    if (rc) {
        LOCKED(t, t->status.jobs_failed++);
        char what[128];
        snprintf(what, sizeof what, "job_failed domain=%s job=%s after_s=%.1f", j->domain, j->id, now_s() - t->job_t0);
        set_error(t, what, &e);
        if (permanent(rc) && d) {
            d->tried = out.cursor > j->cursor ? out.cursor : j->cursor;
            snprintf(d->result, sizeof d->result, "failed");
        } else {
            retry_later(t, j->domain);
        }
        job_idle(t);
        save_state(t);
        job_out_clear(&out);
        return;
    }
    if (out.cursor > j->cursor) j->cursor = out.cursor;
    LOCKED(t, t->status.last_job_seconds = out.seconds);
    if (!out.passed) {
        LOCKED(t, t->status.jobs_refused++);
        log_warn("event=job_refused job=%s domain=%s active_version=%llu train=%d holdout=%d job_s=%.1f train_s=%.1f "
                 "margin_pts=%.2f min_gain_pts=%.2f gate=\"%s\"",
                 j->id, j->domain, (unsigned long long)out.active_version, out.n_train, out.n_holdout, out.seconds,
                 out.train_seconds, t->cfg.job.margin_pts, t->cfg.job.min_gain_pts, out.why);
        if (d) {
            d->tried = j->cursor;
            snprintf(d->result, sizeof d->result, "refused");
        }
        retry_clear(t, j->domain);
        job_idle(t);
        save_state(t);
        job_out_clear(&out);
        return;
    }
    log_info("event=job_passed job=%s domain=%s active_version=%llu train=%d holdout=%d job_s=%.1f train_s=%.1f "
             "gate=\"%s\"",
             j->id, j->domain, (unsigned long long)out.active_version, out.n_train, out.n_holdout, out.seconds,
             out.train_seconds, out.why);
    /* publish: PUTTING first, so a crash after the registry acknowledged is not rerun */
    j->phase = TSTATE_PUTTING;
    if (save_state(t)) {
        job_idle(t);
        job_out_clear(&out);
        return;
    }
    LOCKED(t, { t->status.jobs_passed++; t->status.stage = JOB_STAGE_PUT; });
    Moda__Metric ms[JOB_MAX_METRICS], *mp[JOB_MAX_METRICS];
    for (int i = 0; i < out.n_metrics; i++) {
        moda__metric__init(&ms[i]);
        ms[i].name = out.metric_names[i];
        ms[i].value = out.metric_values[i];
        mp[i] = &ms[i];
    }
    char reason[400];
    snprintf(reason, sizeof reason, "moda-train job=%s domain=%s label_seq=%llu parent_active=%llu: gate passed",
             j->id, j->domain, (unsigned long long)j->cursor, (unsigned long long)out.active_version);
    uint64_t v = 0;
    double tp = now_s();
    rc = rpc_put_bank(&t->rpc, out.bank, out.bank_len, (const Moda__Metric *const *)mp, out.n_metrics, t->cfg.actor,
                      reason, t->cfg.policy_auto ? "active" : NULL, &v, &e);
    if (rc && rc != ERR_STATE && permanent(rc)) { /* STATE: registry busy (backup), retry */
        /* the registry answered and refused the bank: nothing stored, do not retry these labels */
        LOCKED(t, t->status.jobs_failed++);
        set_error(t, "put_refused", &e);
        if (d) {
            d->tried = j->cursor;
            snprintf(d->result, sizeof d->result, "failed");
        }
        job_idle(t);
        save_state(t);
        job_out_clear(&out);
        return;
    }
    if (rc) {
        /* maybe stored, maybe not: stay PUTTING; the next round looks the job up first */
        LOCKED(t, t->status.jobs_failed++);
        set_error(t, "put_failed", &e);
        retry_later(t, j->domain);
        LOCKED(t, { t->status.running = 0; t->status.stage = JOB_STAGE_IDLE; });
        job_out_clear(&out);
        return;
    }
    log_info("event=version_put job=%s domain=%s version=%llu promoted=%d bank_bytes=%zu put_ms=%.0f job_s=%.1f",
             j->id, j->domain, (unsigned long long)v, t->cfg.policy_auto, out.bank_len, 1000 * (now_s() - tp),
             now_s() - t->job_t0);
    const char *fault = getenv("MODA_TRAIN_FAULT"); /* tests only: die between ack and state */
    if (fault && !strcmp(fault, "kill_after_put")) {
        log_warn("event=fault_injection what=kill_after_put version=%llu", (unsigned long long)v);
        raise(SIGKILL);
    }
    LOCKED(t, {
        t->status.versions_put++;
        if (t->cfg.policy_auto) t->status.versions_promoted++;
        t->status.last_version = v;
    });
    finish_put(t, v);
    job_out_clear(&out);
}

/* A job left in the state file by an earlier process (or a failed put): finish it. */
static void resume(trainer_t *t)
{
    tstate_job_t *j = &t->st.job;
    if (!may_try(t, j->domain)) return;
    if (j->phase == TSTATE_PUTTING) {
        char tag[64];
        snprintf(tag, sizeof tag, "job=%s ", j->id);
        uint64_t v = 0;
        err_t e = {0};
        if (rpc_find_version(&t->rpc, tag, 1000, &v, &e)) {
            set_error(t, "resume_lookup", &e);
            retry_later(t, j->domain);
            return;
        }
        if (v) {
            log_info("event=job_recovered job=%s domain=%s version=%llu msg=\"the put was acknowledged before the "
                     "interruption; not rerun\"",
                     j->id, j->domain, (unsigned long long)v);
            LOCKED(t, { t->status.jobs_recovered++; t->status.last_version = v; });
            finish_put(t, v);
            return;
        }
    }
    j->restarts++;
    LOCKED(t, t->status.jobs_restarted++);
    log_warn("event=job_restart job=%s domain=%s phase=%s restarts=%d msg=\"interrupted job rerun from scratch\"", j->id,
             j->domain, j->phase == TSTATE_PUTTING ? "putting" : "running", j->restarts);
    run_job(t);
}

static void new_job_id(char out[33])
{
    unsigned char b[8];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        uint64_t x = (uint64_t)msg_now_us() ^ ((uint64_t)getpid() << 32);
        memcpy(b, &x, sizeof b);
    }
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* One look at the label store; starts at most one job. */
static void poll_labels(trainer_t *t)
{
    rpc_domain_t *doms = NULL;
    int n = 0;
    err_t e = {0};
    LOCKED(t, t->status.polls++);
    if (rpc_list_domains(&t->rpc, &doms, &n, &e)) {
        uint64_t failed;
        pthread_mutex_lock(&t->mu);
        failed = t->status.polls_failed++;
        pthread_mutex_unlock(&t->mu);
        if ((failed & (failed - 1)) == 0) set_error(t, "poll_failed", &e); /* 1st, 2nd, 4th, 8th, ... */
        return;
    }
    for (int i = 0; i < n && !atomic_load(&t->stop); i++) {
        tstate_domain_t *d = tstate_domain(&t->st, doms[i].name, 0);
        uint64_t base = d ? (d->cursor > d->tried ? d->cursor : d->tried) : 0;
        uint64_t fresh = doms[i].last_seq > base ? doms[i].last_seq - base : 0;
        if (fresh < (uint64_t)t->cfg.min_new || !may_try(t, doms[i].name)) continue;
        log_info("event=job_due domain=%s new_labels=%llu labels=%llu holdout=%llu cursor=%llu min_new=%d", doms[i].name,
                 (unsigned long long)fresh, (unsigned long long)doms[i].labels, (unsigned long long)doms[i].holdout,
                 (unsigned long long)base, t->cfg.min_new);
        memset(&t->st.job, 0, sizeof t->st.job);
        new_job_id(t->st.job.id);
        snprintf(t->st.job.domain, sizeof t->st.job.domain, "%s", doms[i].name);
        t->st.job.cursor = doms[i].last_seq;
        run_job(t);
        break;
    }
    free(doms);
}

static void *thread_main(void *arg)
{
    trainer_t *t = arg;
    if (t->cfg.threads > 0) kn_set_threads(t->cfg.threads);
    LOCKED(t, t->status.stage = JOB_STAGE_LOADING);
    while (!t->sam && !atomic_load(&t->stop)) {
        err_t e = {0};
        double t0 = now_s();
        t->sam = sam_load(t->cfg.model, &e);
        if (t->sam) {
            wts_content_hash(sam_weights(t->sam), t->base_hash);
            log_info("event=model_loaded path=%s base=%.12s load_s=%.1f threads=%d", t->cfg.model, t->base_hash,
                     now_s() - t0, kn_get_threads());
            LOCKED(t, { t->status.model_ready = 1; t->status.stage = JOB_STAGE_IDLE; });
            break;
        }
        set_error(t, "model_load", &e);
        for (int w = 0; w < t->cfg.retry_ms && !atomic_load(&t->stop); w += 50) sleep_ms(50);
    }
    while (!atomic_load(&t->stop)) {
        if (t->st.job.phase != TSTATE_IDLE) resume(t);
        else poll_labels(t);
        if (t->st.job.phase != TSTATE_IDLE && atomic_load(&t->stop)) break;
        for (int w = 0; w < t->cfg.poll_ms && !atomic_load(&t->stop); w += 50) sleep_ms(50);
    }
    atomic_store(&t->done, 1);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int mkdir_p(const char *path, err_t *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return err_set(err, ERR_RANGE, "state_dir too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return err_errno(err, ERR_IO, errno, "creating %s", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return err_errno(err, ERR_IO, errno, "creating %s", buf);
    return 0;
}

trainer_t *trainer_new(const trainer_cfg_t *cfg, err_t *err)
{
    if (mkdir_p(cfg->state_dir, err)) return NULL;
    trainer_t *t = calloc(1, sizeof *t);
    if (!t) {
        err_set(err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    snprintf(t->state_path, sizeof t->state_path, "%s/state.json", cfg->state_dir);
    pthread_mutex_init(&t->mu, NULL);
    if (tstate_load(&t->st, t->state_path, err)) {
        trainer_destroy(&t);
        return NULL;
    }
    if (!(t->ctx = zmq_ctx_new())) {
        err_set(err, ERR_MSG, "zmq_ctx_new: %s", zmq_strerror(errno));
        trainer_destroy(&t);
        return NULL;
    }
    t->rpc = (rpc_t){.ctx = t->ctx, .label = cfg->label, .registry = cfg->registry, .timeout_ms = cfg->timeout_ms};
    if (t->st.job.phase != TSTATE_IDLE)
        log_info("event=state_loaded job=%s domain=%s phase=%s msg=\"an interrupted job will be finished first\"",
                 t->st.job.id, t->st.job.domain, t->st.job.phase == TSTATE_PUTTING ? "putting" : "running");
    return t;
}

int trainer_start(trainer_t *t, err_t *err)
{
    int rc = pthread_create(&t->thread, NULL, thread_main, t);
    if (rc) return err_errno(err, ERR_INVALID, rc, "starting the training thread");
    t->started = 1;
    return 0;
}

int trainer_stop(trainer_t *t, int wait_ms)
{
    if (!t || !t->started) return 1;
    atomic_store(&t->stop, 1);
    int64_t end = now_ms() + wait_ms;
    for (;;) {
        if (atomic_load(&t->done)) {
            pthread_join(t->thread, NULL);
            t->started = 0;
            return 1;
        }
        int stage;
        LOCKED(t, stage = t->status.stage);
        int64_t limit = stage == JOB_STAGE_PUT ? end + t->cfg.timeout_ms : end;
        if (now_ms() >= limit) return 0;
        sleep_ms(10);
    }
}

void trainer_destroy(trainer_t **tp)
{
    trainer_t *t = tp ? *tp : NULL;
    if (!t) return;
    *tp = NULL;
    if (t->started) return; /* still inside an epoch: the process exits around it */
    sam_destroy(&t->sam);
    if (t->ctx) zmq_ctx_term(t->ctx);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
