/* store.h — the registry's LMDB storage: immutable bank versions, content-addressed blobs,
 * aliases and the append-only alias history. The only module that touches LMDB.
 *
 * One environment (a folder holding data.mdb/lock.mdb) per registry, one bank lineage per
 * environment. Named databases:
 *   versions  u64 big-endian version -> version record; numbered 1, 2, 3, ... never changed
 *             or deleted once committed.
 *   blobs     32-byte sha256 (raw) -> blob bytes. A blob is written once per content hash and
 *             never deleted (versions are immutable and permanent, so every blob stays
 *             referenced: no refcount or garbage collection is needed).
 *   aliases   name -> current version + stack of earlier values (for rollback).
 *   history   u64 big-endian sequence -> alias change (alias, from, to, action, actor,
 *             reason, time); append-only.
 *   meta      string -> string: format, the bank's base-model hash, shape signatures,
 *             blob statistics.
 * Invariants: every write is one LMDB write transaction (a version and the blobs it names
 * become visible together or not at all; an alias change and its history entry likewise);
 * an alias only ever names a committed version; MDB_MAP_FULL grows the map and retries the
 * transaction; stale reader slots are cleared at open. Values are copied out before their
 * read transaction ends, so nothing returned here points into the map.
 * Not thread-safe: one store_t is used by one thread — except store_backup, which may run in
 * a second thread while the first keeps reading and writing (the map cannot grow meanwhile:
 * a write that needs a bigger map fails with ERR_STATE until the backup ends).
 */
#ifndef MODA_REG_STORE_H
#define MODA_REG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define STORE_NAME_MAX 64     /* alias and domain names: [a-z0-9_-]{1,64} */
#define STORE_HASH_HEX 64     /* lowercase hex sha256 */
#define STORE_TEXT_MAX 512    /* actor and reason, bytes */
#define STORE_MAX_DOMAINS 4096
#define STORE_MAX_METRICS 256
#define STORE_ALIAS_STACK 256 /* earlier values kept per alias for rollback */

typedef struct store store_t;

typedef struct store_opts {
    size_t map_size;  /* initial map size in bytes (0: 64 MiB); grows on demand */
    int no_sync;      /* 1: MDB_NOSYNC (tests only; a crash may lose recent commits) */
} store_opts_t;

typedef struct store_domain {
    char name[STORE_NAME_MAX + 1];
    char hash[STORE_HASH_HEX + 1];  /* blob holding the domain's tensors */
    uint64_t size;                  /* blob bytes */
} store_domain_t;

typedef struct store_metric {
    char name[STORE_NAME_MAX + 1];
    double value;
} store_metric_t;

typedef struct store_version {
    uint64_t version;               /* assigned by store_put_version */
    uint64_t parent;                /* 0: none */
    char base_hash[STORE_HASH_HEX + 1];
    char selector_hash[STORE_HASH_HEX + 1];
    uint64_t selector_size;
    char meta_hash[STORE_HASH_HEX + 1];  /* blob holding the bank's metadata */
    uint64_t meta_size;
    uint64_t bank_size;             /* bytes of the reassembled bank file */
    char bank_digest[STORE_HASH_HEX + 1]; /* bank_digest() of the parts (bank.h) */
    int n_domains;                  /* domains sorted by name, unique */
    store_domain_t *domains;        /* owned (store_version_clear) */
    int n_metrics;
    store_metric_t *metrics;        /* owned */
    char actor[STORE_TEXT_MAX + 1];
    char reason[STORE_TEXT_MAX + 1];
    int64_t created_us;             /* assigned by store_put_version when 0 */
} store_version_t;

typedef struct store_blob {
    char hash[STORE_HASH_HEX + 1];  /* sha256 of data, computed by the caller */
    const void *data;               /* borrowed */
    size_t size;
} store_blob_t;

typedef struct store_hist {
    uint64_t seq;                   /* position in the history, from 1 */
    char alias[STORE_NAME_MAX + 1];
    uint64_t from, to;              /* from 0: the alias did not exist */
    char action[16];                /* "set", "rollback", "put", "revert-domain" */
    char actor[STORE_TEXT_MAX + 1];
    char reason[STORE_TEXT_MAX + 1];
    int64_t time_us;
} store_hist_t;

typedef struct store_alias {
    char name[STORE_NAME_MAX + 1];
    uint64_t version;
} store_alias_t;

typedef struct store_kv {
    const char *key;    /* borrowed */
    const char *value;  /* borrowed */
} store_kv_t;

typedef struct store_stats {
    uint64_t versions, blobs, blob_bytes, aliases, history;
    uint64_t map_size, map_used;    /* bytes */
    uint64_t map_grows;             /* times this process grew the map */
    uint64_t stale_readers;         /* reader slots of dead processes cleared at open */
} store_stats_t;

/* Open (creating the folder and databases if needed) the environment in `dir`. Clears stale
 * reader slots. Caller owns result (store_close). NULL + err (ERR_IO, ERR_DB, ERR_VERSION
 * when the folder holds a store of another format). */
store_t *store_open(const char *dir, const store_opts_t *opts, err_t *err);
/* Closes and NULLs *s. NULL-safe. */
void store_close(store_t **s);

/* Checks a name against [a-z0-9_-]{1,64}. 0 or ERR_INVALID naming `what`. */
int store_name_check(const char *name, const char *what, err_t *err);
/* Checks a 64-char lowercase hex hash. 0 or ERR_INVALID naming `what`. */
int store_hash_check(const char *hash, const char *what, err_t *err);

/* Commits a new version in one write transaction: writes the blobs not yet stored, checks
 * that the parent (when non-zero) and every blob the version names (domains, selector,
 * meta) exist, assigns v->version = last + 1 (and v->created_us when 0), writes every
 * meta pair whose key is absent, and — when set_alias is not NULL — moves that alias to the
 * new version with a history entry (action "put", returned in *hist when not NULL).
 * Returns 0, ERR_INVALID (bad names/hashes/sizes), ERR_NOTFOUND (parent or blob missing),
 * ERR_DB. On error nothing is written. */
int store_put_version(store_t *s, store_version_t *v, const store_blob_t *blobs, int n_blobs,
                      const store_kv_t *meta, int n_meta, const char *set_alias,
                      const char *action, store_hist_t *hist, err_t *err);

/* Reads version `version` into *out (caller clears with store_version_clear).
 * ERR_NOTFOUND when absent. */
int store_get_version(store_t *s, uint64_t version, store_version_t *out, err_t *err);
/* Frees what a version owns and zeroes it. NULL-safe. */
void store_version_clear(store_version_t *v);
/* Deep copy (dst is overwritten; clear it with store_version_clear). */
int store_version_copy(store_version_t *dst, const store_version_t *src, err_t *err);
/* Highest version number, 0 when the store is empty. */
int store_last_version(store_t *s, uint64_t *out, err_t *err);
/* Up to `limit` versions (0: all) with number < before (0: no bound), newest first.
 * Caller owns *out (store_versions_free). */
int store_list_versions(store_t *s, uint64_t before, int limit, store_version_t **out, int *n,
                        err_t *err);
void store_versions_free(store_version_t **v, int n);

/* Copy of a blob: *data caller owns (free). ERR_NOTFOUND when absent. */
int store_get_blob(store_t *s, const char *hash, void **data, size_t *size, err_t *err);
/* 1 when present, 0 when absent, negative on error. */
int store_has_blob(store_t *s, const char *hash, err_t *err);

/* Current version of an alias. ERR_NOTFOUND when the alias does not exist. */
int store_get_alias(store_t *s, const char *alias, uint64_t *version, err_t *err);
/* All aliases sorted by name. Caller owns *out (free). */
int store_list_aliases(store_t *s, store_alias_t **out, int *n, err_t *err);

/* Moves `alias` to `version` (which must exist) in one write transaction and appends a
 * history entry with `action` (NULL: "set"). expect_from non-zero: compare-and-set, fails
 * with ERR_EXISTS when the alias's current version differs. The old value is pushed on the
 * alias's rollback stack. Setting an alias to its current value is a no-op that still
 * succeeds (no history entry; hist->seq = 0). */
int store_set_alias(store_t *s, const char *alias, uint64_t version, uint64_t expect_from,
                    const char *action, const char *actor, const char *reason,
                    store_hist_t *hist, err_t *err);

/* Rollback in one write transaction. to == 0: pop the alias's rollback stack (its value
 * before the current value was set; repeated rollbacks walk further back), ERR_STATE when
 * there is none. to != 0: move to that version (must exist) like store_set_alias. Appends a
 * history entry with action "rollback". ERR_NOTFOUND when the alias does not exist. */
int store_rollback(store_t *s, const char *alias, uint64_t to, const char *actor,
                   const char *reason, store_hist_t *hist, err_t *err);

/* History entries, newest first, of `alias` (NULL or "": all), at most `limit` (0: all).
 * Caller owns *out (free). */
int store_history(store_t *s, const char *alias, int limit, store_hist_t **out, int *n,
                  err_t *err);

/* Meta value copied into buf (cap bytes incl. NUL). ERR_NOTFOUND when absent, ERR_RANGE
 * when it does not fit. */
int store_meta_get(store_t *s, const char *key, char *buf, size_t cap, err_t *err);

/* A consistent, compacted copy of the environment into folder `dir` (created if missing;
 * must not already hold data.mdb: ERR_EXISTS) while the store stays usable (mdb_env_copy2
 * with MDB_CP_COMPACT inside one read transaction). May be called from another thread. */
int store_backup(store_t *s, const char *dir, err_t *err);

int store_stats(store_t *s, store_stats_t *st, err_t *err);

#endif
