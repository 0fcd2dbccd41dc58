/* store.c — LMDB storage of the registry (see store.h for the data model and invariants).
 *
 * Records are a small private binary encoding (little-endian integers, u32-length strings,
 * a leading record-format byte) decoded with bounds checks: a damaged record is ERR_FORMAT,
 * never a crash. Every write goes through write_txn() -> lenv_write (common/lmdb_env.h), which
 * retries the whole transaction after growing the map on MDB_MAP_FULL and after adopting a map
 * grown by someone else (MDB_MAP_RESIZED); a growth guard refuses growth while a backup runs.
 * LMDB codes are translated by lenv_err with mdb_strerror's text kept.
 */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lmdb_env.h"

#define STORE_FORMAT "1"
#define REC_VERSION 1
#define REC_HIST 1

struct store {
    lenv_t *env;
    MDB_dbi versions, blobs, aliases, history, meta;
    atomic_int backups;   /* store_backup calls running (possibly in another thread) */
};

/* ---- small helpers ------------------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void be64(unsigned char out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) out[i] = (unsigned char)v;
}

static uint64_t rd_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int store_name_check(const char *name, const char *what, err_t *err)
{
    if (!name || !*name) return err_set(err, ERR_INVALID, "%s: empty name", what);
    size_t n = strlen(name);
    if (n > STORE_NAME_MAX)
        return err_set(err, ERR_INVALID, "%s: name longer than %d bytes", what, STORE_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return err_set(err, ERR_INVALID, "%s: name '%.64s' has a character outside [a-z0-9_-]",
                           what, name);
    }
    return 0;
}

int store_hash_check(const char *hash, const char *what, err_t *err)
{
    if (!hash || strlen(hash) != STORE_HASH_HEX)
        return err_set(err, ERR_INVALID, "%s: not a 64-character sha256 hex string", what);
    for (int i = 0; i < STORE_HASH_HEX; i++)
        if (hexval((unsigned char)hash[i]) < 0)
            return err_set(err, ERR_INVALID, "%s: not lowercase hex", what);
    return 0;
}

static void hash_key(const char *hex, unsigned char out[32])
{
    for (int i = 0; i < 32; i++)
        out[i] = (unsigned char)(hexval((unsigned char)hex[2 * i]) << 4 | hexval((unsigned char)hex[2 * i + 1]));
}

static int text_check(const char *s, const char *what, err_t *err)
{
    if (s && strlen(s) > STORE_TEXT_MAX)
        return err_set(err, ERR_RANGE, "%s longer than %d bytes", what, STORE_TEXT_MAX);
    return 0;
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* ---- record encoding ----------------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t len, cap;
    int oom;
} wbuf_t;

static void w_bytes(wbuf_t *b, const void *d, size_t n)
{
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void w_u64(wbuf_t *b, uint64_t v)
{
    unsigned char t[8];
    for (int i = 0; i < 8; i++, v >>= 8) t[i] = (unsigned char)v;
    w_bytes(b, t, 8);
}

static void w_str(wbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    unsigned char t[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    w_bytes(b, t, 4);
    w_bytes(b, s, n);
}

typedef struct rbuf {
    const unsigned char *p;
    size_t len, off;
    int bad;
} rbuf_t;

static uint64_t r_u64(rbuf_t *r)
{
    if (r->bad || r->len - r->off < 8) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | r->p[r->off + (size_t)i];
    r->off += 8;
    return v;
}

static void r_str(rbuf_t *r, char *dst, size_t cap)
{
    dst[0] = 0;
    if (r->bad || r->len - r->off < 4) {
        r->bad = 1;
        return;
    }
    const unsigned char *q = r->p + r->off;
    size_t n = (size_t)q[0] | (size_t)q[1] << 8 | (size_t)q[2] << 16 | (size_t)q[3] << 24;
    r->off += 4;
    if (n >= cap || r->len - r->off < n) {
        r->bad = 1;
        return;
    }
    memcpy(dst, r->p + r->off, n);
    dst[n] = 0;
    r->off += n;
}

static int encode_version(const store_version_t *v, wbuf_t *b)
{
    unsigned char fmt = REC_VERSION;
    w_bytes(b, &fmt, 1);
    w_u64(b, v->version);
    w_u64(b, v->parent);
    w_str(b, v->base_hash);
    w_str(b, v->selector_hash);
    w_u64(b, v->selector_size);
    w_str(b, v->meta_hash);
    w_u64(b, v->meta_size);
    w_u64(b, v->bank_size);
    w_str(b, v->bank_digest);
    w_u64(b, (uint64_t)v->n_domains);
    for (int i = 0; i < v->n_domains; i++) {
        w_str(b, v->domains[i].name);
        w_str(b, v->domains[i].hash);
        w_u64(b, v->domains[i].size);
    }
    w_u64(b, (uint64_t)v->n_metrics);
    for (int i = 0; i < v->n_metrics; i++) {
        uint64_t bits;
        memcpy(&bits, &v->metrics[i].value, 8);
        w_str(b, v->metrics[i].name);
        w_u64(b, bits);
    }
    w_str(b, v->actor);
    w_str(b, v->reason);
    w_u64(b, (uint64_t)v->created_us);
    return b->oom ? ERR_NOMEM : 0;
}

static int decode_version(const void *data, size_t len, store_version_t *v, err_t *err)
{
    memset(v, 0, sizeof *v);
    rbuf_t r = {data, len, 1, 0};
    if (len < 1 || ((const unsigned char *)data)[0] != REC_VERSION)
        return err_set(err, ERR_FORMAT, "version record: unknown record format");
    v->version = r_u64(&r);
    v->parent = r_u64(&r);
    r_str(&r, v->base_hash, sizeof v->base_hash);
    r_str(&r, v->selector_hash, sizeof v->selector_hash);
    v->selector_size = r_u64(&r);
    r_str(&r, v->meta_hash, sizeof v->meta_hash);
    v->meta_size = r_u64(&r);
    v->bank_size = r_u64(&r);
    r_str(&r, v->bank_digest, sizeof v->bank_digest);
    uint64_t nd = r_u64(&r);
    if (r.bad || nd > STORE_MAX_DOMAINS) goto bad;
    v->n_domains = (int)nd;
    v->domains = calloc(nd ? nd : 1, sizeof *v->domains);
    if (!v->domains) return err_set(err, ERR_NOMEM, "version record: out of memory");
    for (uint64_t i = 0; i < nd; i++) {
        r_str(&r, v->domains[i].name, sizeof v->domains[i].name);
        r_str(&r, v->domains[i].hash, sizeof v->domains[i].hash);
        v->domains[i].size = r_u64(&r);
    }
    uint64_t nm = r_u64(&r);
    if (r.bad || nm > STORE_MAX_METRICS) goto bad;
    v->n_metrics = (int)nm;
    v->metrics = calloc(nm ? nm : 1, sizeof *v->metrics);
    if (!v->metrics) {
        store_version_clear(v);
        return err_set(err, ERR_NOMEM, "version record: out of memory");
    }
    for (uint64_t i = 0; i < nm; i++) {
        r_str(&r, v->metrics[i].name, sizeof v->metrics[i].name);
        uint64_t bits = r_u64(&r);
        memcpy(&v->metrics[i].value, &bits, 8);
    }
    r_str(&r, v->actor, sizeof v->actor);
    r_str(&r, v->reason, sizeof v->reason);
    v->created_us = (int64_t)r_u64(&r);
    if (r.bad || r.off != r.len) goto bad;
    return 0;
bad:
    store_version_clear(v);
    return err_set(err, ERR_FORMAT, "version record: truncated or damaged");
}

static int encode_hist(const store_hist_t *h, wbuf_t *b)
{
    unsigned char fmt = REC_HIST;
    w_bytes(b, &fmt, 1);
    w_str(b, h->alias);
    w_u64(b, h->from);
    w_u64(b, h->to);
    w_str(b, h->action);
    w_str(b, h->actor);
    w_str(b, h->reason);
    w_u64(b, (uint64_t)h->time_us);
    return b->oom ? ERR_NOMEM : 0;
}

static int decode_hist(const void *data, size_t len, uint64_t seq, store_hist_t *h, err_t *err)
{
    memset(h, 0, sizeof *h);
    rbuf_t r = {data, len, 1, 0};
    if (len < 1 || ((const unsigned char *)data)[0] != REC_HIST)
        return err_set(err, ERR_FORMAT, "history record %llu: unknown record format",
                       (unsigned long long)seq);
    h->seq = seq;
    r_str(&r, h->alias, sizeof h->alias);
    h->from = r_u64(&r);
    h->to = r_u64(&r);
    r_str(&r, h->action, sizeof h->action);
    r_str(&r, h->actor, sizeof h->actor);
    r_str(&r, h->reason, sizeof h->reason);
    h->time_us = (int64_t)r_u64(&r);
    if (r.bad || r.off != r.len)
        return err_set(err, ERR_FORMAT, "history record %llu: truncated or damaged",
                       (unsigned long long)seq);
    return 0;
}

/* Alias record: u64 current, u64 n, n x u64 earlier values (oldest first). */
typedef struct alias_rec {
    uint64_t cur;
    int n;
    uint64_t stack[STORE_ALIAS_STACK];
} alias_rec_t;

static int decode_alias(const MDB_val *val, alias_rec_t *a, err_t *err)
{
    rbuf_t r = {val->mv_data, val->mv_size, 0, 0};
    a->cur = r_u64(&r);
    uint64_t n = r_u64(&r);
    if (r.bad || n > STORE_ALIAS_STACK) return err_set(err, ERR_FORMAT, "alias record damaged");
    a->n = (int)n;
    for (int i = 0; i < a->n; i++) a->stack[i] = r_u64(&r);
    if (r.bad || r.off != r.len) return err_set(err, ERR_FORMAT, "alias record damaged");
    return 0;
}

/* ---- environment --------------------------------------------------------------------- */

/* lenv growth guard: remapping under a running copy's read transaction would pull the map
 * from under it, so growth is refused while store_backup runs (the caller retries later). */
static int backup_guard(void *ctx, err_t *err)
{
    store_t *s = ctx;
    if (atomic_load(&s->backups))
        return err_set(err, ERR_STATE, "the LMDB map is full and cannot grow while a backup runs; retry after it");
    return 0;
}

typedef int (*txn_fn)(store_t *s, MDB_txn *t, void *arg, err_t *err);

typedef struct txn_call {
    store_t *s;
    txn_fn fn;
    void *arg;
} txn_call_t;

static int txn_call(MDB_txn *t, void *p, err_t *err)
{
    txn_call_t *c = p;
    return c->fn(c->s, t, c->arg, err);
}

/* Runs fn inside a write transaction and commits; on MDB_MAP_FULL lenv_write grows the map and
 * reruns the whole transaction (fn must only produce outputs, never depend on them). */
static int write_txn(store_t *s, txn_fn fn, void *arg, err_t *err)
{
    txn_call_t c = {s, fn, arg};
    return lenv_write(s->env, txn_call, &c, err);
}

static int meta_get_txn(MDB_txn *t, MDB_dbi dbi, const char *key, MDB_val *out)
{
    MDB_val k = {strlen(key), (void *)key};
    return mdb_get(t, dbi, &k, out);
}

/* Runs in store_open's first write transaction, after the databases are open. */
static int format_check(MDB_txn *t, void *arg, err_t *err)
{
    store_t *s = arg;
    MDB_val v;
    int rc = meta_get_txn(t, s->meta, "format", &v);
    if (rc == MDB_NOTFOUND) {
        MDB_val k = {6, "format"}, val = {1, STORE_FORMAT};
        return lenv_put(s->env, t, s->meta, &k, &val, 0, "meta format", err);
    }
    if (rc) return lenv_err(err, rc, "meta format");
    if (v.mv_size != 1 || memcmp(v.mv_data, STORE_FORMAT, 1))
        return err_set(err, ERR_VERSION, "store format %.*s is not %s", (int)(v.mv_size > 16 ? 16 : v.mv_size),
                       (const char *)v.mv_data, STORE_FORMAT);
    return 0;
}

store_t *store_open(const char *dir, const store_opts_t *opts, err_t *err)
{
    store_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, ERR_NOMEM, "store: out of memory");
        return NULL;
    }
    const lenv_dbi_t dbs[] = {{"versions", &s->versions}, {"blobs", &s->blobs}, {"aliases", &s->aliases},
                              {"history", &s->history},   {"meta", &s->meta}};
    lenv_opts_t lo = {.map_size = opts ? opts->map_size : 0, .no_sync = opts ? opts->no_sync : 0, .name = "store"};
    s->env = lenv_open(dir, dbs, sizeof dbs / sizeof dbs[0], &lo, format_check, s, err);
    if (!s->env) {
        free(s);
        return NULL;
    }
    lenv_set_grow_guard(s->env, backup_guard, s);
    return s;
}

void store_close(store_t **s)
{
    if (!s || !*s) return;
    lenv_close(&(*s)->env);
    free(*s);
    *s = NULL;
}

/* ---- versions ------------------------------------------------------------------------ */

void store_version_clear(store_version_t *v)
{
    if (!v) return;
    free(v->domains);
    free(v->metrics);
    memset(v, 0, sizeof *v);
}

int store_version_copy(store_version_t *dst, const store_version_t *src, err_t *err)
{
    *dst = *src;
    dst->domains = calloc((size_t)src->n_domains + 1, sizeof *dst->domains);
    dst->metrics = calloc((size_t)src->n_metrics + 1, sizeof *dst->metrics);
    if (!dst->domains || !dst->metrics) {
        store_version_clear(dst);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    if (src->n_domains) memcpy(dst->domains, src->domains, (size_t)src->n_domains * sizeof *dst->domains);
    if (src->n_metrics) memcpy(dst->metrics, src->metrics, (size_t)src->n_metrics * sizeof *dst->metrics);
    return 0;
}

static int blob_exists(MDB_txn *t, MDB_dbi dbi, const char *hash, err_t *err)
{
    unsigned char key[32];
    hash_key(hash, key);
    MDB_val k = {32, key}, v;
    int rc = mdb_get(t, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    return rc ? lenv_err(err, rc, "blob lookup") : 1;
}

static int meta_add_u64(store_t *s, MDB_txn *t, const char *key, uint64_t add, err_t *err)
{
    MDB_val v;
    uint64_t cur = 0;
    int rc = meta_get_txn(t, s->meta, key, &v);
    if (rc == 0 && v.mv_size == 8) memcpy(&cur, v.mv_data, 8);
    else if (rc && rc != MDB_NOTFOUND) return lenv_err(err, rc, key);
    cur += add;
    MDB_val k = {strlen(key), (void *)key}, nv = {8, &cur};
    return lenv_put(s->env, t, s->meta, &k, &nv, 0, key, err);
}

static int alias_move(store_t *s, MDB_txn *t, const char *alias, uint64_t to, uint64_t expect_from,
                      int pop, const char *action, const char *actor, const char *reason,
                      store_hist_t *hist, err_t *err);

typedef struct put_arg {
    store_version_t *v;
    const store_blob_t *blobs;
    int n_blobs;
    const store_kv_t *meta;
    int n_meta;
    const char *set_alias, *action;
    store_hist_t *hist;
} put_arg_t;

static int put_fn(store_t *s, MDB_txn *t, void *argp, err_t *err)
{
    put_arg_t *a = argp;
    store_version_t *v = a->v;
    uint64_t new_blobs = 0, new_bytes = 0;
    for (int i = 0; i < a->n_blobs; i++) {
        const store_blob_t *b = &a->blobs[i];
        int ex = blob_exists(t, s->blobs, b->hash, err);
        if (ex < 0) return ex;
        if (ex) continue;
        unsigned char key[32];
        hash_key(b->hash, key);
        MDB_val k = {32, key}, val = {b->size, (void *)b->data};
        int r = lenv_put(s->env, t, s->blobs, &k, &val, MDB_NOOVERWRITE, "blob write", err);
        if (r == ERR_EXISTS) continue;  /* the same hash twice in one request */
        if (r) return r;
        new_blobs++;
        new_bytes += b->size;
    }
    /* Every blob the version names must exist now. */
    const char *need[3] = {v->selector_hash, v->meta_hash, NULL};
    for (int i = 0; i < 2; i++) {
        if (!need[i][0]) continue;
        int ex = blob_exists(t, s->blobs, need[i], err);
        if (ex < 0) return ex;
        if (!ex) return err_set(err, ERR_NOTFOUND, "blob %s is neither stored nor sent", need[i]);
    }
    for (int i = 0; i < v->n_domains; i++) {
        int ex = blob_exists(t, s->blobs, v->domains[i].hash, err);
        if (ex < 0) return ex;
        if (!ex)
            return err_set(err, ERR_NOTFOUND, "domain '%s': blob %s is neither stored nor sent",
                           v->domains[i].name, v->domains[i].hash);
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->versions, &c);
    if (rc) return lenv_err(err, rc, "versions cursor");
    MDB_val k, val;
    rc = mdb_cursor_get(c, &k, &val, MDB_LAST);
    mdb_cursor_close(c);
    uint64_t last = 0;
    if (rc == 0 && k.mv_size == 8) last = rd_be64(k.mv_data);
    else if (rc && rc != MDB_NOTFOUND) return lenv_err(err, rc, "last version");
    if (v->parent) {
        if (v->parent > last)
            return err_set(err, ERR_NOTFOUND, "parent version %llu does not exist",
                           (unsigned long long)v->parent);
    }
    v->version = last + 1;
    if (!v->created_us) v->created_us = now_us();
    wbuf_t wb = {0};
    if (encode_version(v, &wb)) {
        free(wb.p);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    unsigned char kb[8];
    be64(kb, v->version);
    MDB_val vk = {8, kb}, vv = {wb.len, wb.p};
    int r = lenv_put(s->env, t, s->versions, &vk, &vv, MDB_NOOVERWRITE | MDB_APPEND, "version write", err);
    free(wb.p);
    if (r) return r;
    for (int i = 0; i < a->n_meta; i++) {
        MDB_val mk = {strlen(a->meta[i].key), (void *)a->meta[i].key},
                mv = {strlen(a->meta[i].value), (void *)a->meta[i].value};
        r = lenv_put(s->env, t, s->meta, &mk, &mv, MDB_NOOVERWRITE, "meta write", err);
        if (r && r != ERR_EXISTS) return r;
    }
    if ((r = meta_add_u64(s, t, "stat.blobs", new_blobs, err)) ||
        (r = meta_add_u64(s, t, "stat.blob_bytes", new_bytes, err)))
        return r;
    if (a->set_alias)
        return alias_move(s, t, a->set_alias, v->version, 0, 0, a->action ? a->action : "put",
                          v->actor, v->reason, a->hist, err);
    return 0;
}

int store_put_version(store_t *s, store_version_t *v, const store_blob_t *blobs, int n_blobs,
                      const store_kv_t *meta, int n_meta, const char *set_alias,
                      const char *action, store_hist_t *hist, err_t *err)
{
    int r;
    if (v->n_domains < 0 || v->n_domains > STORE_MAX_DOMAINS)
        return err_set(err, ERR_RANGE, "version: %d domains (max %d)", v->n_domains, STORE_MAX_DOMAINS);
    if (v->n_metrics < 0 || v->n_metrics > STORE_MAX_METRICS)
        return err_set(err, ERR_RANGE, "version: %d metrics (max %d)", v->n_metrics, STORE_MAX_METRICS);
    for (int i = 0; i < v->n_domains; i++) {
        if ((r = store_name_check(v->domains[i].name, "domain", err)) ||
            (r = store_hash_check(v->domains[i].hash, "domain hash", err)))
            return r;
        if (i && strcmp(v->domains[i - 1].name, v->domains[i].name) >= 0)
            return err_set(err, ERR_INVALID, "version: domains not sorted/unique at '%s'", v->domains[i].name);
    }
    if (v->selector_hash[0] && (r = store_hash_check(v->selector_hash, "selector hash", err))) return r;
    if (v->meta_hash[0] && (r = store_hash_check(v->meta_hash, "meta hash", err))) return r;
    if ((r = text_check(v->actor, "actor", err)) || (r = text_check(v->reason, "reason", err))) return r;
    if (set_alias && (r = store_name_check(set_alias, "alias", err))) return r;
    size_t pending = 4096;
    for (int i = 0; i < n_blobs; i++) {
        if ((r = store_hash_check(blobs[i].hash, "blob hash", err))) return r;
        pending += blobs[i].size + 64;
    }
    lenv_set_pending(s->env, pending);
    put_arg_t a = {v, blobs, n_blobs, meta, n_meta, set_alias, action, hist};
    uint64_t saved_created = (uint64_t)v->created_us;
    r = write_txn(s, put_fn, &a, err);
    if (r) {
        v->version = 0;
        v->created_us = (int64_t)saved_created;
    }
    return r;
}

int store_get_version(store_t *s, uint64_t version, store_version_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    unsigned char kb[8];
    be64(kb, version);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t, s->versions, &k, &v);
    if (rc == MDB_NOTFOUND) r = err_set(err, ERR_NOTFOUND, "version %llu does not exist", (unsigned long long)version);
    else if (rc) r = lenv_err(err, rc, "version read");
    else r = decode_version(v.mv_data, v.mv_size, out, err);
    mdb_txn_abort(t);
    return r;
}

int store_last_version(store_t *s, uint64_t *out, err_t *err)
{
    *out = 0;
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->versions, &c);
    if (rc == 0) {
        MDB_val k, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
        if (rc == 0 && k.mv_size == 8) *out = rd_be64(k.mv_data);
        if (rc == MDB_NOTFOUND) rc = 0;
        mdb_cursor_close(c);
    }
    mdb_txn_abort(t);
    return rc ? lenv_err(err, rc, "last version") : 0;
}

void store_versions_free(store_version_t **v, int n)
{
    if (!v || !*v) return;
    for (int i = 0; i < n; i++) store_version_clear(&(*v)[i]);
    free(*v);
    *v = NULL;
}

int store_list_versions(store_t *s, uint64_t before, int limit, store_version_t **out, int *n,
                        err_t *err)
{
    *out = NULL;
    *n = 0;
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_stat st;
    mdb_stat(t, s->versions, &st);
    size_t cap = st.ms_entries;
    if (limit > 0 && (size_t)limit < cap) cap = (size_t)limit;
    store_version_t *vs = calloc(cap + 1, sizeof *vs);
    if (!vs) {
        mdb_txn_abort(t);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->versions, &c);
    if (rc) {
        free(vs);
        mdb_txn_abort(t);
        return lenv_err(err, rc, "versions cursor");
    }
    MDB_val k, v;
    unsigned char kb[8];
    if (before) {
        be64(kb, before);
        k.mv_size = 8;
        k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        rc = rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST) : mdb_cursor_get(c, &k, &v, MDB_PREV);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    }
    int cnt = 0;
    while (rc == 0 && (size_t)cnt < cap) {
        if (before && k.mv_size == 8 && rd_be64(k.mv_data) >= before) {
            rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
            continue;
        }
        if ((r = decode_version(v.mv_data, v.mv_size, &vs[cnt], err))) break;
        cnt++;
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(t);
    if (!r && rc && rc != MDB_NOTFOUND) r = lenv_err(err, rc, "versions scan");
    if (r) {
        store_versions_free(&vs, cnt);
        return r;
    }
    *out = vs;
    *n = cnt;
    return 0;
}

/* ---- blobs --------------------------------------------------------------------------- */

int store_get_blob(store_t *s, const char *hash, void **data, size_t *size, err_t *err)
{
    *data = NULL;
    *size = 0;
    int r = store_hash_check(hash, "blob hash", err);
    if (r) return r;
    MDB_txn *t;
    if ((r = lenv_read_begin(s->env, &t, err))) return r;
    unsigned char key[32];
    hash_key(hash, key);
    MDB_val k = {32, key}, v;
    int rc = mdb_get(t, s->blobs, &k, &v);
    if (rc == MDB_NOTFOUND) r = err_set(err, ERR_NOTFOUND, "blob %s not stored", hash);
    else if (rc) r = lenv_err(err, rc, "blob read");
    else {
        *data = malloc(v.mv_size ? v.mv_size : 1);
        if (!*data) r = err_set(err, ERR_NOMEM, "blob %s: out of memory (%zu bytes)", hash, v.mv_size);
        else {
            memcpy(*data, v.mv_data, v.mv_size);
            *size = v.mv_size;
        }
    }
    mdb_txn_abort(t);
    return r;
}

int store_has_blob(store_t *s, const char *hash, err_t *err)
{
    int r = store_hash_check(hash, "blob hash", err);
    if (r) return r;
    MDB_txn *t;
    if ((r = lenv_read_begin(s->env, &t, err))) return r;
    r = blob_exists(t, s->blobs, hash, err);
    mdb_txn_abort(t);
    return r;
}

/* ---- aliases and history ------------------------------------------------------------- */

static int get_alias_txn(store_t *s, MDB_txn *t, const char *alias, alias_rec_t *a, err_t *err)
{
    MDB_val k = {strlen(alias), (void *)alias}, v;
    int rc = mdb_get(t, s->aliases, &k, &v);
    if (rc == MDB_NOTFOUND) return err_set(err, ERR_NOTFOUND, "alias '%s' does not exist", alias);
    if (rc) return lenv_err(err, rc, "alias read");
    return decode_alias(&v, a, err);
}

static int version_exists(store_t *s, MDB_txn *t, uint64_t version, err_t *err)
{
    unsigned char kb[8];
    be64(kb, version);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t, s->versions, &k, &v);
    if (rc == MDB_NOTFOUND)
        return err_set(err, ERR_NOTFOUND, "version %llu does not exist", (unsigned long long)version);
    return rc ? lenv_err(err, rc, "version lookup") : 0;
}

/* Moves an alias inside transaction t. pop: take the target from the rollback stack. */
static int alias_move(store_t *s, MDB_txn *t, const char *alias, uint64_t to, uint64_t expect_from,
                      int pop, const char *action, const char *actor, const char *reason,
                      store_hist_t *hist, err_t *err)
{
    alias_rec_t a = {0};
    int r = get_alias_txn(s, t, alias, &a, err);
    int exists = r == 0;
    if (r && r != ERR_NOTFOUND) return r;
    if (pop) {
        if (!exists) return r;
        if (a.n == 0)
            return err_set(err, ERR_STATE, "alias '%s' has no earlier version to roll back to", alias);
        to = a.stack[--a.n];
    }
    if (expect_from && (!exists || a.cur != expect_from))
        return err_set(err, ERR_EXISTS, "alias '%s' is at %llu, not %llu", alias,
                       (unsigned long long)(exists ? a.cur : 0), (unsigned long long)expect_from);
    if ((r = version_exists(s, t, to, err))) return r;
    uint64_t from = exists ? a.cur : 0;
    if (hist) memset(hist, 0, sizeof *hist);
    if (exists && from == to && !pop) {
        if (hist) {
            copy_text(hist->alias, sizeof hist->alias, alias);
            hist->from = hist->to = to;
        }
        return 0;
    }
    if (!pop && exists) {
        if (a.n == STORE_ALIAS_STACK) {
            memmove(a.stack, a.stack + 1, (STORE_ALIAS_STACK - 1) * sizeof a.stack[0]);
            a.n--;
        }
        a.stack[a.n++] = a.cur;
    }
    a.cur = to;
    wbuf_t wb = {0};
    w_u64(&wb, a.cur);
    w_u64(&wb, (uint64_t)a.n);
    for (int i = 0; i < a.n; i++) w_u64(&wb, a.stack[i]);
    if (wb.oom) {
        free(wb.p);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    MDB_val k = {strlen(alias), (void *)alias}, v = {wb.len, wb.p};
    r = lenv_put(s->env, t, s->aliases, &k, &v, 0, "alias write", err);
    free(wb.p);
    if (r) return r;
    /* history: next sequence number after the last entry */
    store_hist_t h = {0};
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->history, &c);
    if (rc) return lenv_err(err, rc, "history cursor");
    MDB_val hk, hv;
    rc = mdb_cursor_get(c, &hk, &hv, MDB_LAST);
    mdb_cursor_close(c);
    if (rc == 0 && hk.mv_size == 8) h.seq = rd_be64(hk.mv_data) + 1;
    else if (rc == MDB_NOTFOUND) h.seq = 1;
    else return lenv_err(err, rc, "history last");
    copy_text(h.alias, sizeof h.alias, alias);
    h.from = from;
    h.to = to;
    copy_text(h.action, sizeof h.action, action);
    copy_text(h.actor, sizeof h.actor, actor);
    copy_text(h.reason, sizeof h.reason, reason);
    h.time_us = now_us();
    wbuf_t hb = {0};
    if (encode_hist(&h, &hb)) {
        free(hb.p);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    unsigned char kb[8];
    be64(kb, h.seq);
    MDB_val k2 = {8, kb}, v2 = {hb.len, hb.p};
    r = lenv_put(s->env, t, s->history, &k2, &v2, MDB_NOOVERWRITE | MDB_APPEND, "history write", err);
    free(hb.p);
    if (r) return r;
    if (hist) *hist = h;
    return 0;
}

typedef struct alias_arg {
    const char *alias, *action, *actor, *reason;
    uint64_t to, expect_from;
    int pop;
    store_hist_t *hist;
} alias_arg_t;

static int alias_fn(store_t *s, MDB_txn *t, void *argp, err_t *err)
{
    alias_arg_t *a = argp;
    return alias_move(s, t, a->alias, a->to, a->expect_from, a->pop, a->action, a->actor,
                      a->reason, a->hist, err);
}

static int alias_args_check(const char *alias, const char *actor, const char *reason, err_t *err)
{
    int r;
    if ((r = store_name_check(alias, "alias", err)) || (r = text_check(actor, "actor", err)) ||
        (r = text_check(reason, "reason", err)))
        return r;
    return 0;
}

int store_set_alias(store_t *s, const char *alias, uint64_t version, uint64_t expect_from,
                    const char *action, const char *actor, const char *reason,
                    store_hist_t *hist, err_t *err)
{
    int r = alias_args_check(alias, actor, reason, err);
    if (r) return r;
    if (version == 0) return err_set(err, ERR_INVALID, "alias '%s': version 0 does not exist", alias);
    lenv_set_pending(s->env, 4096);
    alias_arg_t a = {alias, action ? action : "set", actor, reason, version, expect_from, 0, hist};
    return write_txn(s, alias_fn, &a, err);
}

int store_rollback(store_t *s, const char *alias, uint64_t to, const char *actor,
                   const char *reason, store_hist_t *hist, err_t *err)
{
    int r = alias_args_check(alias, actor, reason, err);
    if (r) return r;
    lenv_set_pending(s->env, 4096);
    alias_arg_t a = {alias, "rollback", actor, reason, to, 0, to == 0, hist};
    if (to) {
        /* an explicit target must be an existing alias too (rollback never creates one) */
        uint64_t cur;
        if ((r = store_get_alias(s, alias, &cur, err))) return r;
    }
    return write_txn(s, alias_fn, &a, err);
}

int store_get_alias(store_t *s, const char *alias, uint64_t *version, err_t *err)
{
    *version = 0;
    int r = store_name_check(alias, "alias", err);
    if (r) return r;
    MDB_txn *t;
    if ((r = lenv_read_begin(s->env, &t, err))) return r;
    alias_rec_t a;
    r = get_alias_txn(s, t, alias, &a, err);
    mdb_txn_abort(t);
    if (!r) *version = a.cur;
    return r;
}

int store_list_aliases(store_t *s, store_alias_t **out, int *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_stat st;
    mdb_stat(t, s->aliases, &st);
    store_alias_t *as = calloc(st.ms_entries + 1, sizeof *as);
    MDB_cursor *c = NULL;
    int rc = as ? mdb_cursor_open(t, s->aliases, &c) : 0;
    if (!as) r = err_set(err, ERR_NOMEM, "store: out of memory");
    else if (rc) r = lenv_err(err, rc, "aliases cursor");
    int cnt = 0;
    if (!r) {
        MDB_val k, v;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && (size_t)cnt < st.ms_entries;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            alias_rec_t a;
            if (k.mv_size > STORE_NAME_MAX) continue;
            if ((r = decode_alias(&v, &a, err))) break;
            memcpy(as[cnt].name, k.mv_data, k.mv_size);
            as[cnt].name[k.mv_size] = 0;
            as[cnt].version = a.cur;
            cnt++;
        }
        mdb_cursor_close(c);
    }
    mdb_txn_abort(t);
    if (r) {
        free(as);
        return r;
    }
    *out = as;
    *n = cnt;
    return 0;
}

int store_history(store_t *s, const char *alias, int limit, store_hist_t **out, int *n,
                  err_t *err)
{
    *out = NULL;
    *n = 0;
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_stat st;
    mdb_stat(t, s->history, &st);
    size_t cap = st.ms_entries;
    if (limit > 0 && (size_t)limit < cap) cap = (size_t)limit;
    store_hist_t *hs = calloc(cap + 1, sizeof *hs);
    if (!hs) {
        mdb_txn_abort(t);
        return err_set(err, ERR_NOMEM, "store: out of memory");
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->history, &c);
    int cnt = 0;
    if (rc) r = lenv_err(err, rc, "history cursor");
    else {
        MDB_val k, v;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_LAST); rc == 0 && (size_t)cnt < cap;
             rc = mdb_cursor_get(c, &k, &v, MDB_PREV)) {
            if (k.mv_size != 8) continue;
            if ((r = decode_hist(v.mv_data, v.mv_size, rd_be64(k.mv_data), &hs[cnt], err))) break;
            if (alias && *alias && strcmp(hs[cnt].alias, alias)) continue;
            cnt++;
        }
        mdb_cursor_close(c);
    }
    mdb_txn_abort(t);
    if (r) {
        free(hs);
        return r;
    }
    *out = hs;
    *n = cnt;
    return 0;
}

int store_meta_get(store_t *s, const char *key, char *buf, size_t cap, err_t *err)
{
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_val v;
    int rc = meta_get_txn(t, s->meta, key, &v);
    if (rc == MDB_NOTFOUND) r = err_set(err, ERR_NOTFOUND, "meta '%s' not set", key);
    else if (rc) r = lenv_err(err, rc, "meta read");
    else if (v.mv_size + 1 > cap) r = err_set(err, ERR_RANGE, "meta '%s' longer than %zu bytes", key, cap);
    else {
        memcpy(buf, v.mv_data, v.mv_size);
        buf[v.mv_size] = 0;
    }
    mdb_txn_abort(t);
    return r;
}

/* ---- backup and statistics ----------------------------------------------------------- */

int store_backup(store_t *s, const char *dir, err_t *err)
{
    if (!dir || !*dir) return err_set(err, ERR_INVALID, "backup: empty folder name");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return err_errno(err, ERR_IO, errno, "backup: creating %s", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    if (stat(path, &st) == 0) return err_set(err, ERR_EXISTS, "backup: %s already exists", path);
    atomic_fetch_add(&s->backups, 1);
    int rc = mdb_env_copy2(lenv_mdb(s->env), dir, MDB_CP_COMPACT);
    atomic_fetch_sub(&s->backups, 1);
    if (rc) return err_set(err, ERR_DB, "lmdb: backup to %s: %s", dir, mdb_strerror(rc));
    return 0;
}

static uint64_t meta_u64(store_t *s, MDB_txn *t, const char *key)
{
    MDB_val v;
    uint64_t x = 0;
    if (meta_get_txn(t, s->meta, key, &v) == 0 && v.mv_size == 8) memcpy(&x, v.mv_data, 8);
    return x;
}

int store_stats(store_t *s, store_stats_t *st, err_t *err)
{
    memset(st, 0, sizeof *st);
    MDB_txn *t;
    int r = lenv_read_begin(s->env, &t, err);
    if (r) return r;
    MDB_stat ms;
    mdb_stat(t, s->versions, &ms);
    st->versions = ms.ms_entries;
    mdb_stat(t, s->aliases, &ms);
    st->aliases = ms.ms_entries;
    mdb_stat(t, s->history, &ms);
    st->history = ms.ms_entries;
    st->blobs = meta_u64(s, t, "stat.blobs");
    st->blob_bytes = meta_u64(s, t, "stat.blob_bytes");
    mdb_txn_abort(t);
    MDB_envinfo info;
    MDB_stat es;
    lenv_stats_t ls;
    mdb_env_info(lenv_mdb(s->env), &info);
    mdb_env_stat(lenv_mdb(s->env), &es);
    lenv_stats(s->env, &ls);
    st->map_size = info.me_mapsize;
    st->map_used = (uint64_t)(info.me_last_pgno + 1) * es.ms_psize;
    st->map_grows = ls.map_grows;
    st->stale_readers = ls.stale_readers;
    return 0;
}
