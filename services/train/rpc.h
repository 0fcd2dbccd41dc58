/* rpc.h — moda-train's requests to moda-label and moda-registry (proto/moda.proto).
 *
 * Each call opens a fresh REQ socket on ctx, sends one request, waits up to timeout_ms and
 * closes it, so a lost reply never leaves a REQ socket stuck. Called from the training
 * thread only (sockets belong to the calling thread; the context is thread-safe).
 * Errors name the service and endpoint; a reply with a non-OK Status becomes that code.
 */
#ifndef MODA_TRAIN_RPC_H
#define MODA_TRAIN_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "msg.h"

typedef struct rpc {
    void *ctx;            /* borrowed zmq context */
    const char *label;    /* moda-label endpoint (borrowed) */
    const char *registry; /* moda-registry endpoint (borrowed) */
    int timeout_ms;
} rpc_t;

/* ---- label ---- */

typedef struct rpc_domain {
    char name[65];
    uint64_t labels, last_seq, holdout;
} rpc_domain_t;

/* The label store's domains (ListDomains). *out caller owns (free). Names longer than 64
 * characters are skipped. */
int rpc_list_domains(const rpc_t *r, rpc_domain_t **out, int *n, err_t *err);

/* One labelled sample, decoded: image as stored (gray or RGB) and mask (h·w bytes, 0/1). */
typedef struct rpc_sample {
    uint64_t sample_id, label_seq;
    int holdout;          /* split == HOLDOUT */
    int format;           /* Moda__PixelFormat of the stored bytes */
    uint8_t *bytes;       /* the image bytes as stored (owned) */
    size_t nbytes;
    uint8_t *mask;        /* h·w, 0/1 (owned) */
    int w, h;
} rpc_sample_t;

/* Every label of `domain` (LabelsSince from cursor 0, paged), oldest first, keeping the
 * newest max_train train and the newest max_holdout holdout samples (0 = none of that kind;
 * < 0 = all). *last_seq: the newest label_seq seen (train or holdout). Samples whose mask
 * does not decode are an error naming the sample. *out caller owns (rpc_samples_free). */
int rpc_fetch_labels(const rpc_t *r, const char *domain, int max_train, int max_holdout,
                     rpc_sample_t **out, int *n, uint64_t *last_seq, err_t *err);
void rpc_samples_free(rpc_sample_t **s, int n);

/* ---- registry ---- */

/* The bank that alias `alias` points at: *buf (caller owns, free), *len, *version.
 * ERR_NOTFOUND (nothing set) when the registry has no such alias. */
int rpc_get_alias_bank(const rpc_t *r, const char *alias, uint8_t **buf, size_t *len,
                       uint64_t *version, err_t *err);

/* Puts a whole bank (borrowed) with metrics, actor and reason; set_alias (may be NULL or "")
 * moves that alias in the same transaction. *version: the new version. */
int rpc_put_bank(const rpc_t *r, const uint8_t *buf, size_t len, const Moda__Metric *const *metrics,
                 int n_metrics, const char *actor, const char *reason, const char *set_alias,
                 uint64_t *version, err_t *err);

/* The newest version whose reason contains `tag` among the newest `limit` versions;
 * *version 0 when none. */
int rpc_find_version(const rpc_t *r, const char *tag, int limit, uint64_t *version, err_t *err);

#endif
