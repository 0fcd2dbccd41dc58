/* lmdb_env.h — one LMDB environment with growing map, shared by the LMDB-backed stores
 * (services/label/store.c, services/registry/store.c).
 *
 * What it does: opens an environment folder (MDB_NOTLS, 8 named databases at most, mode 0644),
 * clears reader slots left by killed processes (mdb_reader_check), adopts the file's map size
 * when it is bigger than the requested one, opens/creates the named databases, and runs write
 * transactions that are retried after growing the map when LMDB reports MDB_MAP_FULL (and after
 * adopting a map grown by another process, MDB_MAP_RESIZED).
 *
 * Ownership: lenv_open returns an environment the caller owns (lenv_close). MDB_dbi handles
 * written into the caller's lenv_dbi_t slots stay valid until lenv_close. lenv_mdb returns the
 * borrowed MDB_env for read-only queries (mdb_env_info, mdb_env_copy2); never close it.
 *
 * Transaction-lifetime rules:
 *  - Values (MDB_val.mv_data) read inside a transaction point into the map and are valid only
 *    until that transaction ends (commit or abort); copy or unpack them before it ends.
 *  - A lenv_write function may run more than once (the whole transaction is redone after the
 *    map grew): it must only read its inputs and write its outputs, never accumulate state
 *    across runs. It must not commit or abort the transaction it was given.
 *  - Inside a lenv_write function, write with lenv_put (or call lenv_note after other mdb_*
 *    writes) so a full map is noticed and the transaction retried.
 *  - A read transaction from lenv_read_begin is ended by the caller with mdb_txn_abort.
 * One write transaction at a time per environment (LMDB's rule); lenv_write is not meant to be
 * called from several threads at once. lenv_mdb may be used from another thread (backup copy).
 *
 * Errors: 0 or negative ERR_*; LMDB codes become ERR_DB with "lmdb: <what>: <mdb_strerror>".
 */
#ifndef MODA_LMDB_ENV_H
#define MODA_LMDB_ENV_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LENV_DEFAULT_MAP ((size_t)64 << 20) /* 64 MiB when lenv_opts_t.map_size is 0 */
#define LENV_MAX_ATTEMPTS 40                /* map growths one lenv_write may try */

typedef struct lenv lenv_t;

typedef struct lenv_dbi {
    const char *name; /* named database, created if absent */
    MDB_dbi *dbi;     /* where its handle is written (borrowed; must outlive lenv_open) */
} lenv_dbi_t;

typedef struct lenv_opts {
    size_t map_size; /* initial map size in bytes (0: LENV_DEFAULT_MAP) */
    int no_sync;     /* MDB_NOSYNC (tests) */
    const char *name; /* prefix of folder errors ("label store"; NULL: "lmdb") */
} lenv_opts_t;

typedef struct lenv_stats {
    uint64_t map_size;      /* map size this handle last set or adopted at open, bytes */
    uint64_t map_grows;     /* times this handle grew the map */
    uint64_t stale_readers; /* reader slots of dead processes cleared at open */
} lenv_stats_t;

/* A write-transaction body; see the lifetime rules above. Returns 0 or negative ERR_*. */
typedef int (*lenv_txn_fn)(MDB_txn *t, void *arg, err_t *err);

/* Consulted before each map growth: return 0 to allow it, or a negative ERR_* (with err
 * filled) to refuse; lenv_write then returns that code without retrying. */
typedef int (*lenv_grow_guard_fn)(void *ctx, err_t *err);

/* Opens (creating the folder, mode 0755, if needed) the environment in `dir` and the `n_dbis` named
 * databases in one write transaction; `init` (may be NULL) runs in that same transaction
 * after the databases are open (format checks, first records). Returns NULL on error
 * (ERR_INVALID "<name>: empty data folder", ERR_IO "<name>: creating <dir>" or permissions,
 * ERR_NOMEM, ERR_DB, or what init returned). */
lenv_t *lenv_open(const char *dir, const lenv_dbi_t *dbis, size_t n_dbis, const lenv_opts_t *o,
                  lenv_txn_fn init, void *init_arg, err_t *err);
void lenv_close(lenv_t **e); /* NULL-safe; sets *e to NULL */

MDB_env *lenv_mdb(lenv_t *e); /* borrowed */

/* Runs fn in a write transaction and commits. On MDB_MAP_FULL (from lenv_put, lenv_note or
 * the commit) the transaction is aborted, the map grown (to at least twice its size, and by
 * 2 * pending + 1 MiB) and fn run again, up to LENV_MAX_ATTEMPTS times. Returns fn's error
 * when fn failed for another reason, the guard's error when it refused growth. */
int lenv_write(lenv_t *e, lenv_txn_fn fn, void *arg, err_t *err);

/* Rough bytes the next lenv_write adds (sizes the growth step). */
void lenv_set_pending(lenv_t *e, size_t bytes);

/* Installs (or, with NULL, removes) the growth guard; ctx is borrowed. */
void lenv_set_grow_guard(lenv_t *e, lenv_grow_guard_fn guard, void *ctx);

/* Begins a read-only transaction (adopting a map grown elsewhere). Caller aborts *t. */
int lenv_read_begin(lenv_t *e, MDB_txn **t, err_t *err);

/* mdb_put that marks the map full on MDB_MAP_FULL / MDB_TXN_FULL; MDB_KEYEXIST becomes
 * ERR_EXISTS, other codes ERR_DB naming `what`. */
int lenv_put(lenv_t *e, MDB_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags, const char *what,
             err_t *err);

/* Records an LMDB code seen inside a lenv_write body (MDB_MAP_FULL / MDB_TXN_FULL mark the
 * map full); returns rc unchanged. */
int lenv_note(lenv_t *e, int rc);

/* Fills err with ERR_DB "lmdb: <what>: <LMDB text for rc>" and returns ERR_DB. */
int lenv_err(err_t *err, int rc, const char *what);

void lenv_stats(const lenv_t *e, lenv_stats_t *st);

#endif
