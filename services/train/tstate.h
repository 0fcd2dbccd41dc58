/* tstate.h — moda-train's job state on disk (<state_dir>/state.json).
 *
 * What survives a crash: per label domain the label cursor (label_seq) the last published
 * version was trained for and the cursor of the last attempt (refused or failed), and the
 * job in progress, if any. The file is replaced atomically (temp file, fsync, rename, fsync
 * of the folder), so a reader sees the old or the new state, never a part.
 *
 * Job phases: RUNNING (nothing published: a restart reruns the job from scratch) and PUTTING
 * (the put may have reached the registry: a restart first looks for the job's tag in the
 * registry's version reasons and only reruns when it is not there). No job: idle.
 */
#ifndef MODA_TRAIN_TSTATE_H
#define MODA_TRAIN_TSTATE_H

#include <stdint.h>

#include "err.h"

#define TSTATE_MAX_DOMAINS 256

enum { TSTATE_IDLE = 0, TSTATE_RUNNING = 1, TSTATE_PUTTING = 2 };

typedef struct tstate_domain {
    char name[65];
    uint64_t cursor;  /* label_seq the newest published version was trained up to */
    uint64_t tried;   /* label_seq of the newest attempt (passed, refused or failed) */
    uint64_t version; /* registry version of the newest put for this domain (0: none) */
    char result[16];  /* "passed", "refused", "failed" or "" */
} tstate_domain_t;

typedef struct tstate_job {
    int phase;         /* TSTATE_* */
    char id[33];       /* hex; the registry reason carries "job=<id>" */
    char domain[65];
    uint64_t cursor;   /* label_seq of the newest label the job uses */
    int64_t started_us;
    int restarts;      /* times this job was restarted after an interruption */
} tstate_job_t;

typedef struct tstate {
    int n;
    tstate_domain_t d[TSTATE_MAX_DOMAINS];
    tstate_job_t job;
} tstate_t;

/* Reads path; a missing file is an empty state (0). ERR_FORMAT naming the file for a file
 * that does not parse, ERR_IO when it cannot be read. */
int tstate_load(tstate_t *s, const char *path, err_t *err);
/* Atomic replace of path with s. ERR_IO naming the file. */
int tstate_save(const tstate_t *s, const char *path, err_t *err);
/* Domain record by name (borrowed, valid until s changes); create = 1 adds a zeroed one.
 * NULL when absent (create 0), the table is full or the name is longer than 64 chars. */
tstate_domain_t *tstate_domain(tstate_t *s, const char *name, int create);

#endif
