/* job.h — one moda-train job: learn one label domain into a copy of the active bank and gate it.
 *
 *   active bank (registry alias "active", or an empty bank) ──copy──► candidate
 *   the domain's TRAIN labels (label store) ──► train set ──► learn_add_domain(candidate)
 *   every candidate domain's HOLDOUT labels ──► learn_eval_bank(candidate) vs (active |
 *   zero-shot SAM) ──► gate_decide ──► job_out_t (passed? bank bytes, metrics, explanation)
 *
 * The MoDA engine (common/learn.h) does all training and evaluation; this file only moves
 * data between the services and it. Publishing (registry put) and the job state file are the
 * caller's (trainer.c). Runs on the training thread; `stop` is polled between samples and
 * stages (an epoch in progress finishes first): a stopped job returns ERR_INTERRUPTED and
 * has published nothing.
 */
#ifndef MODA_TRAIN_JOB_H
#define MODA_TRAIN_JOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "msg.h"
#include "rpc.h"
#include "sam.h"
#include "train.h"

enum {
    JOB_STAGE_IDLE = 0,
    JOB_STAGE_FETCH = 1,    /* active bank and labels */
    JOB_STAGE_ENCODE = 2,   /* encoder over the train samples */
    JOB_STAGE_TRAIN = 3,    /* adapter epochs */
    JOB_STAGE_SELECTOR = 4, /* selector retraining (banks of >= 2 domains) */
    JOB_STAGE_GATE = 5,     /* holdout evaluation */
    JOB_STAGE_PUT = 6,      /* registry put (trainer.c) */
    JOB_STAGE_LOADING = 7,  /* loading the model (trainer.c, before the first job) */
};
const char *job_stage_name(int stage);

typedef struct job_cfg {
    int epochs;           /* adapter epochs */
    uint64_t seed;
    int replay;           /* replay samples kept per domain */
    int sel_epochs;       /* selector epochs */
    int max_train;        /* newest train labels used (<= 0: all) */
    int max_holdout;      /* newest holdout labels per domain used in the gate (<= 0: all) */
    double margin_pts;    /* gate: allowed IoU drop of other domains, points */
    double min_gain_pts;  /* gate: the trained domain must beat its reference by more */
    int prompt;           /* TRAIN_PROMPT_BOX or TRAIN_PROMPT_AUTO for the gate */
    int fixed_loss;       /* 1: measure the box-prompt train loss before/after (metrics) */
    kn_device_t device;   /* the adapter training step's device (train_cfg_t.device) */
} job_cfg_t;

/* Progress sink (called on the training thread). */
typedef struct job_hooks {
    void (*stage)(int stage, void *ctx);
    void (*progress)(const train_progress_t *p, void *ctx);
    void (*note)(const char *line, void *ctx);
    void *ctx;
} job_hooks_t;

typedef struct job_env {
    sam_t *sam;            /* borrowed, loaded model */
    const char *base_hash; /* wts_content_hash of the model */
    const rpc_t *rpc;
    const job_cfg_t *cfg;
    const atomic_int *stop;
    job_hooks_t hooks;
} job_env_t;

#define JOB_MAX_METRICS 64

typedef struct job_out {
    int passed;
    char why[2048];         /* the gate's explanation with every number */
    uint64_t active_version; /* 0: there was no active bank */
    uint64_t cursor;        /* newest label_seq of the domain the job saw */
    int n_train, n_holdout; /* of the trained domain */
    double seconds;
    double train_seconds;
    uint8_t *bank;          /* passed: canonical candidate bank bytes (caller frees) */
    size_t bank_len;
    int n_metrics;          /* version metrics for the registry */
    char metric_names[JOB_MAX_METRICS][65];
    double metric_values[JOB_MAX_METRICS];
} job_out_t;

/* Runs the job for label domain `domain`. 0 with *out filled (passed or refused); else an
 * error (ERR_INTERRUPTED when stopped; ERR_INVALID / ERR_STATE for data that cannot be
 * trained: bad domain name, no train labels; transport and model errors as they come).
 * out->bank is freed by job_out_clear. */
int job_run(const job_env_t *e, const char *domain, job_out_t *out, err_t *err);
void job_out_clear(job_out_t *out);

/* Bank domain names are [a-z0-9_-]{1,64}; label domains may be wider. */
int job_domain_name_ok(const char *name);

#endif
