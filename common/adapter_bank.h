/* adapter_bank.h — MoDA adapter banks in memory: load, edit, save (docs/bank-format.md).
 *
 *   abank_t *b = abank_load("bank.safetensors", base_hash, 160, &err);  // or abank_new(base_hash)
 *   abank_domain_t *d = abank_find(b, "bsdata");  d->adapter ...
 *   abank_put_domain(b, "magtile", &adapter, replay, n_replay, metrics, &err);
 *   abank_save(b, "out.safetensors", &err);  abank_destroy(&b);
 *
 * File layout (bank.h validates it): metadata moda.kind = adapter-bank, moda.bank_format = 1,
 * moda.base_model = wts_content_hash of the frozen SAM weights, moda.domains = [{name,
 * created, metrics}]; tensors "domain.<name>.<adapter param>" (F32, the names of adapter.h),
 * "domain.<name>.replay.<i>.image" and ".mask" (U8, 1-D: the ORIGINAL file bytes of the
 * labelled image (PNG/JPEG) and of its 0/255 mask PNG — compact and decoded exactly as the
 * dataset is), "selector.<param>" (F32; opaque to this module, kept as given).
 * Files are written in bank.h's canonical form, so save -> load -> save is byte-identical.
 *
 * Invariants: domains sorted by name; every domain has a complete adapter of the bank's
 * early channel count; the bank's base model hash is fixed at creation/load.
 */
#ifndef MODA_ADAPTER_BANK_H
#define MODA_ADAPTER_BANK_H

#include <stddef.h>
#include <stdint.h>

#include "adapter.h"
#include "err.h"

#define ABANK_MAX_METRICS 16
#define ABANK_DEFAULT_REPLAY 10

typedef struct abank_blob {
    uint8_t *data; /* owned */
    size_t size;
} abank_blob_t;

typedef struct abank_replay {
    abank_blob_t image; /* PNG/JPEG file bytes */
    abank_blob_t mask;  /* PNG file bytes, 0/255 */
} abank_replay_t;

typedef struct abank_metric {
    char name[48];
    double value;
} abank_metric_t;

typedef struct abank_domain {
    char name[65];
    char created[40]; /* ISO-8601 UTC, "" when unknown */
    int n_metrics;
    abank_metric_t metrics[ABANK_MAX_METRICS];
    adapter_t *adapter; /* owned */
    int n_replay;
    abank_replay_t *replay; /* owned */
} abank_domain_t;

typedef struct abank_tensor {
    char name[128]; /* without the "selector." prefix */
    int ndim;
    int64_t shape[4];
    size_t n;
    float *data; /* owned */
} abank_tensor_t;

typedef struct abank {
    char base_model[65];
    int early_c; /* 0 until the first domain sets it */
    int n_domains;
    abank_domain_t *domains; /* sorted by name */
    int n_selector;
    abank_tensor_t *selector;
} abank_t;

/* An empty bank for the base model with hash base_model (64 hex). Caller owns result. */
abank_t *abank_new(const char *base_model, err_t *err);
void abank_destroy(abank_t **b);

/* Reads and validates a bank file. expect_base (may be NULL): the base model hash of the
 * loaded SAM; a bank for another model is refused with ERR_VERSION naming both hashes.
 * expect_early_c (0 = any): adapters must have that many early channels. Errors: ERR_IO /
 * ERR_NOTFOUND (file), ERR_FORMAT (corrupt file, missing or misshapen adapter tensor — the
 * message names it), ERR_VERSION. Caller owns result. */
abank_t *abank_load(const char *path, const char *expect_base, int expect_early_c, err_t *err);
/* The same from memory (borrowed). `what` names the source in messages. */
abank_t *abank_from_memory(const void *buf, size_t len, const char *what, const char *expect_base,
                           int expect_early_c, err_t *err);

/* Canonical bank bytes. *out caller owns (free). */
int abank_to_memory(const abank_t *b, void **out, size_t *len, err_t *err);
/* Writes the canonical bytes atomically (temp file + rename). */
int abank_save(const abank_t *b, const char *path, err_t *err);

/* Domain by name (borrowed, valid until the bank changes) or NULL. */
abank_domain_t *abank_find(const abank_t *b, const char *name);
/* Adds or replaces domain `name` ([a-z0-9_-]{1,64}): takes ownership of *adapter (set to
 * NULL) and copies the replay blobs and metrics. created: "" = now. Other domains are not
 * touched (their tensors stay bit-identical). */
int abank_put_domain(abank_t *b, const char *name, adapter_t **adapter,
                     const abank_replay_t *replay, int n_replay, const abank_metric_t *metrics,
                     int n_metrics, const char *created, err_t *err);
/* Adds or replaces selector tensor `name` (copied). */
int abank_put_selector(abank_t *b, const char *name, int ndim, const int64_t *shape,
                       const float *data, err_t *err);
/* Selector tensor by name (without prefix) or NULL. */
const abank_tensor_t *abank_selector(const abank_t *b, const char *name);
/* Removes every selector tensor (e.g. when the domain set changed). */
void abank_clear_selector(abank_t *b);

#endif
