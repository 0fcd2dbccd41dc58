/* trainer.h — moda-train's training thread: watch the label store, run jobs, publish.
 *
 * One thread (trainer_start) owns the model, its own zmq context and the job state file
 * (tstate.h). It polls moda-label's ListDomains every poll_ms; a domain whose newest label
 * sequence is at least min_new past the cursor of its last attempt gets a job (job.h). A
 * passing candidate is put into the registry (alias `active` moved in the same transaction
 * when policy is auto). The service loop's thread reads progress through trainer_snapshot
 * (mutex-protected copy) and stops the thread with trainer_stop.
 *
 * Crash safety (docs/train.md): the state file says RUNNING before a job starts and PUTTING
 * before the put; the registry reason carries "job=<id>". On start, a RUNNING job is rerun
 * from scratch and a PUTTING one is first looked up in the registry, so an acknowledged put
 * is never repeated and a half-trained bank is never published.
 */
#ifndef MODA_TRAIN_TRAINER_H
#define MODA_TRAIN_TRAINER_H

#include <stdint.h>

#include "err.h"
#include "job.h"

typedef struct trainer_cfg {
    const char *label;     /* moda-label endpoint */
    const char *registry;  /* moda-registry endpoint */
    const char *model;     /* SAM weights file */
    const char *state_dir; /* created if missing; holds state.json */
    const char *actor;     /* registry actor */
    int min_new;           /* new labels that trigger a job */
    int poll_ms;
    int retry_ms;          /* first retry delay after a failed job (doubles, capped 16x) */
    int timeout_ms;        /* per request */
    int threads;           /* kernel threads (0: all cores) */
    int policy_auto;       /* 1: promote a passing candidate to `active` */
    job_cfg_t job;
} trainer_cfg_t;

typedef struct trainer_status {
    uint64_t jobs_started, jobs_passed, jobs_refused, jobs_failed, jobs_restarted,
        jobs_recovered, versions_put, versions_promoted, polls, polls_failed;
    int model_ready;
    int running, stage;
    char domain[65];
    int epoch, epochs;
    double loss, eta_s;
    int64_t job_started_us;
    double last_job_seconds;
    uint64_t last_version;
    uint64_t error_seq; /* bumps with every new last_error */
    char last_error[512];
} trainer_status_t;

typedef struct trainer trainer_t;

/* Creates the state dir and reads the state file (a corrupt one is an error: fix or remove
 * it by hand, so no job is repeated by accident). cfg strings are borrowed and must outlive
 * the trainer. Caller owns result. */
trainer_t *trainer_new(const trainer_cfg_t *cfg, err_t *err);
int trainer_start(trainer_t *t, err_t *err);
/* Asks the thread to stop and waits up to wait_ms (longer while a put is in flight, up to
 * the request timeout). Returns 1 when it ended, 0 when it is still inside an epoch: the
 * job stays RUNNING in the state file and the next start reruns it. */
int trainer_stop(trainer_t *t, int wait_ms);
void trainer_snapshot(trainer_t *t, trainer_status_t *out);
/* Frees everything when the thread has ended; when it has not (trainer_stop returned 0) the
 * process is about to exit and the trainer is left to it. NULLs *t. */
void trainer_destroy(trainer_t **t);

#endif
