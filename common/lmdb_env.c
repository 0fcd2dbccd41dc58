/* lmdb_env.c — LMDB environment with map growth and retried write transactions (see
 * lmdb_env.h for the rules). Invariant: map_full is reset at the start of every write
 * transaction attempt and set only by lenv_put/lenv_note or a commit that hit MDB_MAP_FULL.
 */
#include "lmdb_env.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

struct lenv {
    MDB_env *env;
    size_t map_size;
    int map_full;    /* the current write attempt hit MDB_MAP_FULL / MDB_TXN_FULL */
    size_t pending;  /* bytes the current write adds (sizes the next growth) */
    uint64_t grows;
    int stale_readers;
    lenv_grow_guard_fn guard;
    void *guard_ctx;
};

int lenv_err(err_t *err, int rc, const char *what)
{
    return err_set(err, ERR_DB, "lmdb: %s: %s", what, mdb_strerror(rc));
}

int lenv_note(lenv_t *e, int rc)
{
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) e->map_full = 1;
    return rc;
}

int lenv_put(lenv_t *e, MDB_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags, const char *what,
             err_t *err)
{
    int rc = lenv_note(e, mdb_put(t, dbi, k, v, flags));
    if (rc == MDB_KEYEXIST) return err_set(err, ERR_EXISTS, "lmdb: %s: key exists", what);
    return rc ? lenv_err(err, rc, what) : 0;
}

static int grow_map(lenv_t *e, err_t *err)
{
    if (e->guard) {
        int g = e->guard(e->guard_ctx, err);
        if (g) return g;
    }
    size_t want = e->map_size * 2;
    if (want < e->map_size + 2 * e->pending + ((size_t)1 << 20)) want = e->map_size + 2 * e->pending + ((size_t)1 << 20);
    int rc = mdb_env_set_mapsize(e->env, want);
    if (rc) return lenv_err(err, rc, "growing the map");
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    e->map_size = info.me_mapsize;
    e->grows++;
    return 0;
}

int lenv_write(lenv_t *e, lenv_txn_fn fn, void *arg, err_t *err)
{
    for (int attempt = 0; attempt < LENV_MAX_ATTEMPTS; attempt++) {
        MDB_txn *t;
        int rc = mdb_txn_begin(e->env, NULL, 0, &t);
        if (rc == MDB_MAP_RESIZED) { /* another process grew the map: adopt it */
            mdb_env_set_mapsize(e->env, 0);
            continue;
        }
        if (rc) return lenv_err(err, rc, "begin write transaction");
        e->map_full = 0;
        int r = fn(t, arg, err);
        if (r == 0) {
            rc = mdb_txn_commit(t);
            if (rc == 0) return 0;
            if (rc != MDB_MAP_FULL) return lenv_err(err, rc, "commit");
            e->map_full = 1;
        } else {
            mdb_txn_abort(t);
        }
        if (!e->map_full) return r;
        int g = grow_map(e, err);
        if (g) return g;
    }
    return err_set(err, ERR_DB, "lmdb: map still full after growing %d times", LENV_MAX_ATTEMPTS);
}

int lenv_read_begin(lenv_t *e, MDB_txn **t, err_t *err)
{
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, t);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(e->env, 0);
        rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, t);
    }
    return rc ? lenv_err(err, rc, "begin read transaction") : 0;
}

void lenv_set_pending(lenv_t *e, size_t bytes) { e->pending = bytes; }

void lenv_set_grow_guard(lenv_t *e, lenv_grow_guard_fn guard, void *ctx)
{
    e->guard = guard;
    e->guard_ctx = ctx;
}

MDB_env *lenv_mdb(lenv_t *e) { return e->env; }

void lenv_stats(const lenv_t *e, lenv_stats_t *st)
{
    st->map_size = e->map_size;
    st->map_grows = e->grows;
    st->stale_readers = e->stale_readers > 0 ? (uint64_t)e->stale_readers : 0;
}

typedef struct open_arg {
    lenv_t *e;
    const lenv_dbi_t *dbis;
    size_t n;
    lenv_txn_fn init;
    void *init_arg;
} open_arg_t;

static int open_fn(MDB_txn *t, void *argp, err_t *err)
{
    open_arg_t *a = argp;
    for (size_t i = 0; i < a->n; i++) {
        int rc = lenv_note(a->e, mdb_dbi_open(t, a->dbis[i].name, MDB_CREATE, a->dbis[i].dbi));
        if (rc) return lenv_err(err, rc, a->dbis[i].name);
    }
    return a->init ? a->init(t, a->init_arg, err) : 0;
}

lenv_t *lenv_open(const char *dir, const lenv_dbi_t *dbis, size_t n_dbis, const lenv_opts_t *o,
                  lenv_txn_fn init, void *init_arg, err_t *err)
{
    const char *name = o && o->name ? o->name : "lmdb";
    if (!dir || !*dir) {
        err_set(err, ERR_INVALID, "%s: empty data folder", name);
        return NULL;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        err_errno(err, ERR_IO, errno, "%s: creating %s", name, dir);
        return NULL;
    }
    lenv_t *e = calloc(1, sizeof *e);
    if (!e) {
        err_set(err, ERR_NOMEM, "lmdb: out of memory");
        return NULL;
    }
    e->map_size = o && o->map_size ? o->map_size : LENV_DEFAULT_MAP;
    int rc = mdb_env_create(&e->env);
    if (rc) {
        lenv_err(err, rc, "create environment");
        free(e);
        return NULL;
    }
    unsigned flags = MDB_NOTLS | (o && o->no_sync ? MDB_NOSYNC : 0);
    if ((rc = mdb_env_set_maxdbs(e->env, 8)) || (rc = mdb_env_set_mapsize(e->env, e->map_size))) {
        lenv_err(err, rc, "configure environment");
        goto fail;
    }
    if ((rc = mdb_env_open(e->env, dir, flags, 0644))) {
        err_set(err, rc == ENOENT || rc == EACCES ? ERR_IO : ERR_DB, "lmdb: opening %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* A process killed while reading leaves its reader slot behind; clear such slots. */
    mdb_reader_check(e->env, &e->stale_readers);
    /* The file may be bigger than the requested map (grown earlier): adopt its size. */
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    e->map_size = info.me_mapsize;
    open_arg_t a = {e, dbis, n_dbis, init, init_arg};
    if (lenv_write(e, open_fn, &a, err)) goto fail;
    return e;
fail:
    mdb_env_close(e->env);
    free(e);
    return NULL;
}

void lenv_close(lenv_t **e)
{
    if (!e || !*e) return;
    mdb_env_close((*e)->env);
    free(*e);
    *e = NULL;
}
