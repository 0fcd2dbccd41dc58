/* store.h — moda-label's LMDB store (module lstore): samples, images, the hard-case queue,
 * labels and per-domain label sequences. The only code in moda-label that touches LMDB.
 *
 * Named databases in one environment (layout in docs/label.md):
 *   samples  id(be64)                    -> packed SampleInfo (proto/moda.proto)
 *   images   id(be64)                    -> image bytes exactly as received
 *   keys     camera_id '\0' seq(be64)    -> id          dedup of (camera, seq)
 *   queue    ~score(be32) id(be64)       -> ""          cursor order = highest score first
 *   labels   domain '\0' label_seq(be64) -> id          per-domain label sequence
 *   domains  name                        -> last_seq, labels, holdout, created_us (be64 each)
 *   meta     "format", "next_id"
 * Invariants: a sample is in `queue` iff its state is QUEUED; in `labels` iff LABELED, under
 * its current domain and label_seq; label_seq values of a domain only grow (a relabel gets a
 * new one), so "labels of D since cursor C" is a cursor walk and a restarted reader loses
 * nothing. The split of a sample is fixed the first time it is labeled (or given at import):
 * holdout iff lstore_holdout_hash(camera, seq) < holdout_share — deterministic, independent
 * of the store, the order of arrival and the numeric sample id.
 *
 * Every write is one transaction, committed (fsync unless no_sync) before the function
 * returns 0: a caller may acknowledge then. MDB_MAP_FULL grows the map and reruns the
 * transaction; stale reader slots are cleared at open. LMDB codes become ERR_DB with the
 * mdb_strerror text. Single-threaded: one lstore_t, one thread.
 */
#ifndef MODA_LABEL_STORE_H
#define MODA_LABEL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "moda.pb-c.h"

#define LSTORE_NAME_MAX 64    /* domain name: 1..64 of [A-Za-z0-9._-] */
#define LSTORE_CAMERA_MAX 256 /* camera id (part of an LMDB key) */
#define LSTORE_TEXT_MAX 1024  /* actor, reasons, file names */

typedef struct lstore lstore_t;

typedef struct lstore_opts {
    size_t map_size;       /* initial map size in bytes (0: 64 MiB); grows when full */
    int no_sync;           /* tests only: a crash may lose commits */
    double holdout_share;  /* in [0, 1] (negative: default 0.2) */
} lstore_opts_t;

/* Opens (creating) the environment in `dir`. Caller owns result (lstore_close).
 * NULL + err: ERR_IO (folder), ERR_DB, ERR_VERSION (other store format). */
lstore_t *lstore_open(const char *dir, const lstore_opts_t *o, err_t *err);
void lstore_close(lstore_t **s);

/* Deterministic value in [0, 1) from sha256(camera_id '\0' be64(seq)). */
double lstore_holdout_hash(const char *camera_id, uint64_t seq);

/* Checks a domain name (1..64 chars of [A-Za-z0-9._-]). 0 or ERR_INVALID naming `what`. */
int lstore_name_check(const char *name, const char *what, err_t *err);

/* Adds a sample. `info` is borrowed; its camera_id (non-empty), seq, capture time, size,
 * format, reason, scores, predicted mask, source and file_name are kept; sample_id, state,
 * label_seq and received_time are set here. labeled = 0: a hard case, QUEUED by info->score
 * (NaN counts as 0). labeled = 1: an import, LABELED with info->domain, info->mask (counts for
 * width×height), actor, labeled_time_us and info->split (UNSPECIFIED: by hash).
 * A (camera_id, seq) already stored is not changed: *dup = 1 and *id is the stored sample.
 * Outputs may be NULL. ERR_INVALID (bad field, mask not matching the size), ERR_DB. */
int lstore_add(lstore_t *s, const Moda__SampleInfo *info, const void *img, size_t img_len, int labeled,
               uint64_t *id, int *dup, Moda__SampleSplit *split, err_t *err);

/* Sample `id`: *info (caller owns result: lstore_info_free) and, if img is not NULL, a copy of
 * its image bytes (caller owns result: free). ERR_NOTFOUND when there is no such sample. */
int lstore_get(lstore_t *s, uint64_t id, Moda__SampleInfo **info, void **img, size_t *img_len, err_t *err);
void lstore_info_free(Moda__SampleInfo **info);

/* Labels sample `id` (queued, rejected, or already labeled: relabel) with the mask `counts`
 * (COCO string for the sample's height×width) in `domain` (created when new) by `actor` at
 * time_us (0: now). Outputs: its split and its new label_seq (may be NULL).
 * ERR_NOTFOUND (no sample), ERR_INVALID (name, actor, mask size or string). */
int lstore_label(lstore_t *s, uint64_t id, const char *domain, const char *counts, const char *actor,
                 int64_t time_us, Moda__SampleSplit *split, uint64_t *seq, err_t *err);

/* Marks sample `id` REJECTED (out of the queue; a label it had is removed). ERR_NOTFOUND. */
int lstore_reject(lstore_t *s, uint64_t id, const char *actor, const char *reason, err_t *err);

/* The queue, highest score first (ties: older sample first), filtered by predicted domain
 * when `domain` is non-empty: items [offset, offset+limit) of the matching ones into *items
 * (caller owns result: lstore_infos_free), *total = all matching. */
int lstore_queue(lstore_t *s, const char *domain, uint32_t offset, uint32_t limit, Moda__SampleInfo ***items,
                 size_t *n, uint64_t *total, err_t *err);
void lstore_infos_free(Moda__SampleInfo **items, size_t n);

/* One labeled sample with its image (both owned by the array: lstore_items_free). */
typedef struct lstore_item {
    Moda__SampleInfo *info;
    void *img;
    size_t img_len;
} lstore_item_t;

/* Labels of `domain` with label_seq > cursor, oldest first, at most `limit` and (after the
 * first) at most max_bytes of images. Holdout samples are skipped unless include_holdout,
 * but the cursor moves past them. *next = cursor to pass next time; *more = 1 when items
 * were left. ERR_INVALID for a bad domain name; an unknown domain gives 0 items. */
int lstore_labels_since(lstore_t *s, const char *domain, uint64_t cursor, uint32_t limit, int include_holdout,
                        size_t max_bytes, lstore_item_t **items, size_t *n, uint64_t *next, int *more,
                        err_t *err);
void lstore_items_free(lstore_item_t *items, size_t n);

typedef struct lstore_domain {
    char name[LSTORE_NAME_MAX + 1];
    uint64_t last_seq, labels, holdout;
    int64_t created_us;
} lstore_domain_t;

/* Every domain, sorted by name. Caller owns *out (free). */
int lstore_domains(lstore_t *s, lstore_domain_t **out, size_t *n, err_t *err);

typedef struct lstore_stats {
    uint64_t samples, queued, labels, domains, image_bytes;
    uint64_t map_size, map_grows;
} lstore_stats_t;
int lstore_stats(lstore_t *s, lstore_stats_t *st, err_t *err);

#endif
