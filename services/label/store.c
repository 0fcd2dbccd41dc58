/* store.c — moda-label's LMDB store (see store.h for the layout and the invariants).
 *
 * Write functions follow one pattern: an argument struct, a txn function that only reads
 * its inputs and writes its outputs (it may run again after the map grew), and write_txn()
 * that hands it to lenv_write (common/lmdb_env.h: begin, run, commit, grow the map on
 * MDB_MAP_FULL). Values read from LMDB are unpacked or copied before their transaction ends.
 */
#include "store.h"

#include <lmdb.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmdb_env.h"
#include "rle.h"
#include "sha256.h"

#define FORMAT "1"
#define DOMAIN_REC 32

struct lstore {
    lenv_t *env;
    MDB_dbi samples, images, keys, queue, labels, domains, meta;
    double holdout_share;
};

/* ---- helpers ------------------------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void be64(unsigned char *o, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) o[i] = (unsigned char)v;
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* Big-endian key that sorts highest score first. */
static void score_key(unsigned char o[4], float f)
{
    if (isnan(f)) f = 0;
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending order of floats */
    u = ~u;                                           /* descending */
    for (int i = 3; i >= 0; i--, u >>= 8) o[i] = (unsigned char)u;
}

double lstore_holdout_hash(const char *camera_id, uint64_t seq)
{
    sha256_t h;
    unsigned char b[8], d[32];
    sha256_init(&h);
    sha256_update(&h, camera_id, strlen(camera_id) + 1);
    be64(b, seq);
    sha256_update(&h, b, 8);
    sha256_final(&h, d);
    return (double)(rd64(d) >> 11) / 9007199254740992.0; /* 53 bits / 2^53 */
}

int lstore_name_check(const char *name, const char *what, err_t *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0) return err_set(err, ERR_INVALID, "%s is empty", what);
    if (n > LSTORE_NAME_MAX) return err_set(err, ERR_INVALID, "%s is longer than %d bytes", what, LSTORE_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return err_set(err, ERR_INVALID, "%s '%.64s' has character 0x%02x (allowed: A-Z a-z 0-9 . _ -)", what,
                           name, c);
    }
    return 0;
}

static int text_check(const char *s, const char *what, err_t *err)
{
    if (s && strlen(s) > LSTORE_TEXT_MAX)
        return err_set(err, ERR_INVALID, "%s is longer than %d bytes", what, LSTORE_TEXT_MAX);
    return 0;
}

static int mask_check(const char *counts, uint32_t h, uint32_t w, const char *what, err_t *err)
{
    rle_t r;
    int rc = rle_from_string(counts ? counts : "", counts ? strlen(counts) : 0, h, w, &r, err);
    rle_free(&r);
    if (!rc) return 0;
    err_wrap(err, "%s", what);
    if (err) err->code = ERR_INVALID; /* a request field that does not fit the sample */
    return ERR_INVALID;
}

/* ---- transactions -------------------------------------------------------------------- */

static int db_put(lstore_t *s, MDB_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v, const char *what, err_t *err)
{
    return lenv_put(s->env, t, dbi, k, v, 0, what, err);
}

static int db_del(MDB_txn *t, MDB_dbi dbi, MDB_val *k, const char *what, err_t *err)
{
    int rc = mdb_del(t, dbi, k, NULL);
    return rc && rc != MDB_NOTFOUND ? lenv_err(err, rc, what) : 0;
}

typedef int (*txn_fn)(lstore_t *s, MDB_txn *t, void *arg, err_t *err);

typedef struct txn_call {
    lstore_t *s;
    txn_fn fn;
    void *arg;
} txn_call_t;

static int txn_call(MDB_txn *t, void *p, err_t *err)
{
    txn_call_t *c = p;
    return c->fn(c->s, t, c->arg, err);
}

/* Runs fn in a write transaction, rerun after the map grew (lenv_write). */
static int write_txn(lstore_t *s, txn_fn fn, void *arg, err_t *err)
{
    txn_call_t c = {s, fn, arg};
    return lenv_write(s->env, txn_call, &c, err);
}

static int meta_u64(lstore_t *s, MDB_txn *t, const char *key, uint64_t *v, err_t *err)
{
    MDB_val k = {strlen(key), (void *)key}, d;
    int rc = mdb_get(t, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND) {
        *v = 0;
        return 0;
    }
    if (rc) return lenv_err(err, rc, key);
    if (d.mv_size != 8) return err_set(err, ERR_DB, "lmdb: meta %s has %zu bytes", key, d.mv_size);
    *v = rd64(d.mv_data);
    return 0;
}

static int meta_put_u64(lstore_t *s, MDB_txn *t, const char *key, uint64_t v, err_t *err)
{
    unsigned char b[8];
    be64(b, v);
    MDB_val k = {strlen(key), (void *)key}, d = {8, b};
    return db_put(s, t, s->meta, &k, &d, key, err);
}

/* Runs in lstore_open's first write transaction, after the databases are open. */
static int format_check(MDB_txn *t, void *arg, err_t *err)
{
    lstore_t *s = arg;
    MDB_val k = {6, "format"}, v;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        MDB_val f = {1, FORMAT};
        return db_put(s, t, s->meta, &k, &f, "meta format", err);
    }
    if (rc) return lenv_err(err, rc, "meta format");
    if (v.mv_size != 1 || memcmp(v.mv_data, FORMAT, 1))
        return err_set(err, ERR_VERSION, "label store format '%.*s' is not %s", (int)(v.mv_size > 16 ? 16 : v.mv_size),
                       (const char *)v.mv_data, FORMAT);
    return 0;
}

lstore_t *lstore_open(const char *dir, const lstore_opts_t *o, err_t *err)
{
    lstore_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, ERR_NOMEM, "label store: out of memory");
        return NULL;
    }
    s->holdout_share = o && o->holdout_share >= 0 ? o->holdout_share : 0.2;
    if (s->holdout_share > 1) s->holdout_share = 1;
    const lenv_dbi_t dbs[] = {{"samples", &s->samples}, {"images", &s->images},   {"keys", &s->keys},
                              {"queue", &s->queue},     {"labels", &s->labels},   {"domains", &s->domains},
                              {"meta", &s->meta}};
    lenv_opts_t lo = {.map_size = o ? o->map_size : 0, .no_sync = o ? o->no_sync : 0, .name = "label store"};
    s->env = lenv_open(dir, dbs, sizeof dbs / sizeof dbs[0], &lo, format_check, s, err);
    if (!s->env) {
        free(s);
        return NULL;
    }
    return s;
}

void lstore_close(lstore_t **s)
{
    if (!s || !*s) return;
    lenv_close(&(*s)->env);
    free(*s);
    *s = NULL;
}

/* ---- records ------------------------------------------------------------------------- */

void lstore_info_free(Moda__SampleInfo **info)
{
    if (!info || !*info) return;
    moda__sample_info__free_unpacked(*info, NULL);
    *info = NULL;
}

void lstore_infos_free(Moda__SampleInfo **items, size_t n)
{
    if (!items) return;
    for (size_t i = 0; i < n; i++) lstore_info_free(&items[i]);
    free(items);
}

void lstore_items_free(lstore_item_t *items, size_t n)
{
    if (!items) return;
    for (size_t i = 0; i < n; i++) {
        lstore_info_free(&items[i].info);
        free(items[i].img);
    }
    free(items);
}

static int get_info(lstore_t *s, MDB_txn *t, uint64_t id, Moda__SampleInfo **out, err_t *err)
{
    unsigned char kb[8];
    be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t, s->samples, &k, &v);
    if (rc == MDB_NOTFOUND) return err_set(err, ERR_NOTFOUND, "no sample %llu", (unsigned long long)id);
    if (rc) return lenv_err(err, rc, "samples");
    *out = moda__sample_info__unpack(NULL, v.mv_size, v.mv_data);
    if (!*out) return err_set(err, ERR_DB, "sample %llu: stored record does not decode", (unsigned long long)id);
    return 0;
}

static int put_info(lstore_t *s, MDB_txn *t, const Moda__SampleInfo *info, err_t *err)
{
    size_t n = moda__sample_info__get_packed_size(info);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return err_set(err, ERR_NOMEM, "label store: out of memory");
    moda__sample_info__pack(info, buf);
    unsigned char kb[8];
    be64(kb, info->sample_id);
    MDB_val k = {8, kb}, v = {n, buf};
    int rc = db_put(s, t, s->samples, &k, &v, "samples", err);
    free(buf);
    return rc;
}

static size_t dedup_key(unsigned char *kb, const char *camera, uint64_t seq)
{
    size_t n = strlen(camera);
    memcpy(kb, camera, n + 1);
    be64(kb + n + 1, seq);
    return n + 9;
}

static void queue_key(unsigned char kb[12], float score, uint64_t id)
{
    score_key(kb, score);
    be64(kb + 4, id);
}

static size_t label_key(unsigned char *kb, const char *domain, uint64_t seq)
{
    size_t n = strlen(domain);
    memcpy(kb, domain, n + 1);
    be64(kb + n + 1, seq);
    return n + 9;
}

static int get_domain(lstore_t *s, MDB_txn *t, const char *name, lstore_domain_t *d, err_t *err)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(t, s->domains, &k, &v);
    if (rc == MDB_NOTFOUND) return ERR_NOTFOUND;
    if (rc) return lenv_err(err, rc, "domains");
    if (v.mv_size != DOMAIN_REC) return err_set(err, ERR_DB, "domain %s: record of %zu bytes", name, v.mv_size);
    const unsigned char *p = v.mv_data;
    d->last_seq = rd64(p);
    d->labels = rd64(p + 8);
    d->holdout = rd64(p + 16);
    d->created_us = (int64_t)rd64(p + 24);
    return 0;
}

static int put_domain(lstore_t *s, MDB_txn *t, const lstore_domain_t *d, err_t *err)
{
    unsigned char b[DOMAIN_REC];
    be64(b, d->last_seq);
    be64(b + 8, d->labels);
    be64(b + 16, d->holdout);
    be64(b + 24, (uint64_t)d->created_us);
    MDB_val k = {strlen(d->name), (void *)d->name}, v = {DOMAIN_REC, b};
    return db_put(s, t, s->domains, &k, &v, "domains", err);
}

/* Removes the sample's current label entry (state LABELED) from labels and its domain. */
static int unlabel(lstore_t *s, MDB_txn *t, const Moda__SampleInfo *info, err_t *err)
{
    unsigned char kb[LSTORE_NAME_MAX + 9];
    if (strlen(info->domain) > LSTORE_NAME_MAX) return err_set(err, ERR_DB, "stored domain name too long");
    MDB_val k = {label_key(kb, info->domain, info->label_seq), kb};
    int rc = db_del(t, s->labels, &k, "labels", err);
    if (rc) return rc;
    lstore_domain_t d;
    rc = get_domain(s, t, info->domain, &d, err);
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    if (d.labels) d.labels--;
    if (info->split == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT && d.holdout) d.holdout--;
    return put_domain(s, t, &d, err);
}

static int unqueue(lstore_t *s, MDB_txn *t, const Moda__SampleInfo *info, err_t *err)
{
    unsigned char kb[12];
    queue_key(kb, info->score, info->sample_id);
    MDB_val k = {12, kb};
    return db_del(t, s->queue, &k, "queue", err);
}

/* Sets the sample LABELED in `domain` with a new label_seq and its split (fixed once set). */
static int label_into(lstore_t *s, MDB_txn *t, Moda__SampleInfo *info, const char *domain, err_t *err)
{
    lstore_domain_t d;
    int rc = get_domain(s, t, domain, &d, err);
    if (rc == ERR_NOTFOUND) d.created_us = now_us();
    else if (rc) return rc;
    if (info->split != MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN && info->split != MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT)
        info->split = lstore_holdout_hash(info->camera_id, info->seq) < s->holdout_share
                          ? MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT
                          : MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN;
    d.last_seq++;
    d.labels++;
    if (info->split == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT) d.holdout++;
    info->label_seq = d.last_seq;
    info->state = MODA__SAMPLE_STATE__SAMPLE_STATE_LABELED;
    unsigned char kb[LSTORE_NAME_MAX + 9], ib[8];
    be64(ib, info->sample_id);
    MDB_val k = {label_key(kb, domain, d.last_seq), kb}, v = {8, ib};
    if ((rc = db_put(s, t, s->labels, &k, &v, "labels", err))) return rc;
    return put_domain(s, t, &d, err);
}

/* ---- add ----------------------------------------------------------------------------- */

typedef struct add_arg {
    const Moda__SampleInfo *in;
    const void *img;
    size_t img_len;
    int labeled;
    uint64_t id;
    int dup;
    Moda__SampleSplit split;
} add_arg_t;

static int add_fn(lstore_t *s, MDB_txn *t, void *argp, err_t *err)
{
    add_arg_t *a = argp;
    const Moda__SampleInfo *in = a->in;
    unsigned char kb[LSTORE_CAMERA_MAX + 9], ib[8];
    MDB_val k = {dedup_key(kb, in->camera_id, in->seq), kb}, v;
    int rc = mdb_get(t, s->keys, &k, &v);
    if (rc == 0 && v.mv_size == 8) {
        a->id = rd64(v.mv_data);
        a->dup = 1;
        Moda__SampleInfo *old = NULL;
        if (!get_info(s, t, a->id, &old, NULL)) a->split = old->split;
        lstore_info_free(&old);
        return 0;
    }
    if (rc && rc != MDB_NOTFOUND) return lenv_err(err, rc, "keys");
    a->dup = 0;
    uint64_t next;
    if ((rc = meta_u64(s, t, "next_id", &next, err))) return rc;
    a->id = next ? next : 1;
    if ((rc = meta_put_u64(s, t, "next_id", a->id + 1, err))) return rc;
    be64(ib, a->id);
    v.mv_size = 8;
    v.mv_data = ib;
    if ((rc = db_put(s, t, s->keys, &k, &v, "keys", err))) return rc;
    MDB_val ik = {8, ib}, iv = {a->img_len, (void *)a->img};
    if ((rc = db_put(s, t, s->images, &ik, &iv, "images", err))) return rc;
    uint64_t ib_total;
    if ((rc = meta_u64(s, t, "image_bytes", &ib_total, err))) return rc;
    if ((rc = meta_put_u64(s, t, "image_bytes", ib_total + a->img_len, err))) return rc;

    /* the record: a copy of the input with the store's fields set */
    Moda__SampleInfo info = *in;
    info.sample_id = a->id;
    info.received_time_us = now_us();
    info.label_seq = 0;
    info.reject_reason = "";
    if (isnan(info.score)) info.score = 0;
    if (!a->labeled) {
        info.state = MODA__SAMPLE_STATE__SAMPLE_STATE_QUEUED;
        info.split = MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_UNSPECIFIED;
        info.mask = NULL;
        info.domain = "";
        info.actor = "";
        info.labeled_time_us = 0;
        unsigned char qb[12];
        queue_key(qb, info.score, a->id);
        MDB_val qk = {12, qb}, qv = {0, ""};
        if ((rc = db_put(s, t, s->queue, &qk, &qv, "queue", err))) return rc;
    } else {
        if (!info.labeled_time_us) info.labeled_time_us = info.received_time_us;
        if ((rc = label_into(s, t, &info, in->domain, err))) return rc;
    }
    a->split = info.split;
    return put_info(s, t, &info, err);
}

int lstore_add(lstore_t *s, const Moda__SampleInfo *info, const void *img, size_t img_len, int labeled,
               uint64_t *id, int *dup, Moda__SampleSplit *split, err_t *err)
{
    if (!info->camera_id || !*info->camera_id) return err_set(err, ERR_INVALID, "sample: empty camera_id");
    if (strlen(info->camera_id) > LSTORE_CAMERA_MAX)
        return err_set(err, ERR_INVALID, "camera_id is longer than %d bytes", LSTORE_CAMERA_MAX);
    int rc = 0;
    if (!rc) rc = text_check(info->source, "source", err);
    if (!rc) rc = text_check(info->file_name, "file_name", err);
    if (!rc) rc = text_check(info->actor, "actor", err);
    if (!rc) rc = text_check(info->predicted_domain, "predicted_domain", err);
    if (rc) return rc;
    if (!img || !img_len) return err_set(err, ERR_INVALID, "sample %s/%llu: no image bytes", info->camera_id,
                                         (unsigned long long)info->seq);
    if (info->width < 1 || info->height < 1)
        return err_set(err, ERR_INVALID, "sample %s/%llu: size %ux%u", info->camera_id, (unsigned long long)info->seq,
                       info->width, info->height);
    if (info->predicted_mask && info->predicted_mask->counts && *info->predicted_mask->counts) {
        if (info->predicted_mask->height != info->height || info->predicted_mask->width != info->width)
            return err_set(err, ERR_INVALID, "predicted mask %ux%u does not match the image %ux%u",
                           info->predicted_mask->width, info->predicted_mask->height, info->width, info->height);
        if ((rc = mask_check(info->predicted_mask->counts, info->height, info->width, "predicted mask", err)))
            return rc;
    }
    if (labeled) {
        if ((rc = lstore_name_check(info->domain, "domain", err))) return rc;
        if (!info->mask) return err_set(err, ERR_INVALID, "labeled sample without a mask");
        if (info->mask->height != info->height || info->mask->width != info->width)
            return err_set(err, ERR_INVALID, "mask %ux%u does not match the image %ux%u", info->mask->width,
                           info->mask->height, info->width, info->height);
        if ((rc = mask_check(info->mask->counts, info->height, info->width, "mask", err))) return rc;
    }
    add_arg_t a = {info, img, img_len, labeled, 0, 0, MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_UNSPECIFIED};
    lenv_set_pending(s->env, img_len + 4096);
    rc = write_txn(s, add_fn, &a, err);
    if (rc) return rc;
    if (id) *id = a.id;
    if (dup) *dup = a.dup;
    if (split) *split = a.split;
    return 0;
}

/* ---- get ----------------------------------------------------------------------------- */

static int copy_image(lstore_t *s, MDB_txn *t, uint64_t id, void **img, size_t *len, err_t *err)
{
    unsigned char kb[8];
    be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t, s->images, &k, &v);
    if (rc) return lenv_err(err, rc, "images");
    *img = malloc(v.mv_size ? v.mv_size : 1);
    if (!*img) return err_set(err, ERR_NOMEM, "label store: out of memory for an image of %zu bytes", v.mv_size);
    memcpy(*img, v.mv_data, v.mv_size);
    *len = v.mv_size;
    return 0;
}

int lstore_get(lstore_t *s, uint64_t id, Moda__SampleInfo **info, void **img, size_t *img_len, err_t *err)
{
    *info = NULL;
    if (img) *img = NULL;
    MDB_txn *t;
    int rc = lenv_read_begin(s->env, &t, err);
    if (rc) return rc;
    rc = get_info(s, t, id, info, err);
    if (!rc && img) rc = copy_image(s, t, id, img, img_len, err);
    mdb_txn_abort(t);
    if (rc) {
        lstore_info_free(info);
        if (img) {
            free(*img);
            *img = NULL;
        }
    }
    return rc;
}

/* ---- label / reject ------------------------------------------------------------------ */

typedef struct label_arg {
    uint64_t id;
    const char *domain, *counts, *actor, *reason;
    int64_t time_us;
    int reject;
    Moda__SampleSplit split;
    uint64_t seq;
} label_arg_t;

static int label_fn(lstore_t *s, MDB_txn *t, void *argp, err_t *err)
{
    label_arg_t *a = argp;
    Moda__SampleInfo *info = NULL;
    int rc = get_info(s, t, a->id, &info, err);
    if (rc) return rc;
    if (!a->reject && (rc = mask_check(a->counts, info->height, info->width, "mask", err))) goto out;
    if (info->state == MODA__SAMPLE_STATE__SAMPLE_STATE_QUEUED) rc = unqueue(s, t, info, err);
    else if (info->state == MODA__SAMPLE_STATE__SAMPLE_STATE_LABELED) rc = unlabel(s, t, info, err);
    if (rc) goto out;
    /* the record's strings point into the unpacked message or into `a`: nothing is freed
     * twice because the unpacked struct is freed with its own allocator's pointers restored */
    char *od = info->domain, *oa = info->actor, *orr = info->reject_reason;
    Moda__RleMask *om = info->mask, m = MODA__RLE_MASK__INIT;
    info->actor = (char *)(a->actor ? a->actor : "");
    info->labeled_time_us = a->time_us ? a->time_us : now_us();
    if (a->reject) {
        info->state = MODA__SAMPLE_STATE__SAMPLE_STATE_REJECTED;
        info->reject_reason = (char *)(a->reason ? a->reason : "");
        info->label_seq = 0;
        info->mask = NULL;
        info->domain = "";
    } else {
        m.height = info->height;
        m.width = info->width;
        m.counts = (char *)a->counts;
        info->mask = &m;
        info->domain = (char *)a->domain;
        info->reject_reason = "";
        rc = label_into(s, t, info, a->domain, err);
        a->split = info->split;
        a->seq = info->label_seq;
    }
    if (!rc) rc = put_info(s, t, info, err);
    info->domain = od;
    info->actor = oa;
    info->reject_reason = orr;
    info->mask = om;
out:
    lstore_info_free(&info);
    return rc;
}

int lstore_label(lstore_t *s, uint64_t id, const char *domain, const char *counts, const char *actor,
                 int64_t time_us, Moda__SampleSplit *split, uint64_t *seq, err_t *err)
{
    int rc = lstore_name_check(domain, "domain", err);
    if (!rc) rc = text_check(actor, "actor", err);
    if (!counts || !*counts) rc = rc ? rc : err_set(err, ERR_INVALID, "mask: empty counts");
    if (rc) return rc;
    label_arg_t a = {id, domain, counts, actor, NULL, time_us, 0, 0, 0};
    lenv_set_pending(s->env, strlen(counts) + 4096);
    rc = write_txn(s, label_fn, &a, err);
    if (rc) return rc;
    if (split) *split = a.split;
    if (seq) *seq = a.seq;
    return 0;
}

int lstore_reject(lstore_t *s, uint64_t id, const char *actor, const char *reason, err_t *err)
{
    int rc = text_check(actor, "actor", err);
    if (!rc) rc = text_check(reason, "reason", err);
    if (rc) return rc;
    label_arg_t a = {id, NULL, NULL, actor, reason, 0, 1, 0, 0};
    lenv_set_pending(s->env, 4096);
    return write_txn(s, label_fn, &a, err);
}

/* ---- reads --------------------------------------------------------------------------- */

int lstore_queue(lstore_t *s, const char *domain, uint32_t offset, uint32_t limit, Moda__SampleInfo ***items,
                 size_t *n, uint64_t *total, err_t *err)
{
    *items = NULL;
    *n = 0;
    *total = 0;
    MDB_txn *t;
    MDB_cursor *c = NULL;
    int rc = lenv_read_begin(s->env, &t, err);
    if (rc) return rc;
    Moda__SampleInfo **out = calloc(limit ? limit : 1, sizeof *out);
    if (!out) {
        rc = err_set(err, ERR_NOMEM, "label store: out of memory");
        goto done;
    }
    if ((rc = mdb_cursor_open(t, s->queue, &c))) {
        rc = lenv_err(err, rc, "queue cursor");
        goto done;
    }
    MDB_val k, v;
    int op = MDB_FIRST;
    if (!domain || !*domain) {
        /* unfiltered: the page is keys [offset, offset+limit); the total is the entry count */
        MDB_stat ms;
        if ((rc = mdb_stat(t, s->queue, &ms))) {
            rc = lenv_err(err, rc, "queue stat");
            goto done;
        }
        *total = ms.ms_entries;
        for (uint64_t i = 0; i < (uint64_t)offset + limit && (rc = mdb_cursor_get(c, &k, &v, op)) == 0;
             i++, op = MDB_NEXT) {
            if (i < offset || k.mv_size != 12) continue;
            if ((rc = get_info(s, t, rd64((unsigned char *)k.mv_data + 4), &out[*n], err))) goto done;
            (*n)++;
        }
    } else {
        /* filtered by predicted domain: every queued record is read to count the matches */
        for (; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
            if (k.mv_size != 12) continue;
            Moda__SampleInfo *info = NULL;
            if ((rc = get_info(s, t, rd64((unsigned char *)k.mv_data + 4), &info, err))) goto done;
            if (strcmp(info->predicted_domain, domain)) {
                lstore_info_free(&info);
                continue;
            }
            if (*n < limit && *total >= offset) out[(*n)++] = info;
            else lstore_info_free(&info);
            (*total)++;
        }
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    else if (rc) rc = lenv_err(err, rc, "queue walk");
done:
    if (c) mdb_cursor_close(c);
    mdb_txn_abort(t);
    if (rc) {
        lstore_infos_free(out, *n);
        *n = 0;
    } else {
        *items = out;
    }
    return rc;
}

int lstore_labels_since(lstore_t *s, const char *domain, uint64_t cursor, uint32_t limit, int include_holdout,
                        size_t max_bytes, lstore_item_t **items, size_t *n, uint64_t *next, int *more,
                        err_t *err)
{
    *items = NULL;
    *n = 0;
    *next = cursor;
    *more = 0;
    int rc = lstore_name_check(domain, "domain", err);
    if (rc) return rc;
    MDB_txn *t;
    MDB_cursor *c = NULL;
    if ((rc = lenv_read_begin(s->env, &t, err))) return rc;
    lstore_item_t *out = calloc(limit ? limit : 1, sizeof *out);
    if (!out) {
        rc = err_set(err, ERR_NOMEM, "label store: out of memory");
        goto done;
    }
    if ((rc = mdb_cursor_open(t, s->labels, &c))) {
        rc = lenv_err(err, rc, "labels cursor");
        goto done;
    }
    unsigned char kb[LSTORE_NAME_MAX + 9];
    size_t plen = strlen(domain) + 1, bytes = 0;
    MDB_val k = {label_key(kb, domain, cursor == UINT64_MAX ? cursor : cursor + 1), kb}, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != plen + 8 || memcmp(k.mv_data, kb, plen)) break; /* next domain */
        uint64_t seq = rd64((unsigned char *)k.mv_data + plen);
        if (*n >= limit || (*n > 0 && bytes >= max_bytes)) {
            *more = 1;
            break;
        }
        if (v.mv_size != 8) {
            rc = err_set(err, ERR_DB, "labels: entry of %zu bytes", v.mv_size);
            goto done;
        }
        uint64_t id = rd64(v.mv_data);
        Moda__SampleInfo *info = NULL;
        if ((rc = get_info(s, t, id, &info, err))) goto done;
        *next = seq;
        if (!include_holdout && info->split == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT) {
            lstore_info_free(&info);
            continue;
        }
        lstore_item_t *it = &out[(*n)++];
        it->info = info;
        if ((rc = copy_image(s, t, id, &it->img, &it->img_len, err))) goto done;
        bytes += it->img_len;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    else if (rc) rc = lenv_err(err, rc, "labels walk");
done:
    if (c) mdb_cursor_close(c);
    mdb_txn_abort(t);
    if (rc) {
        lstore_items_free(out, *n);
        *n = 0;
    } else {
        *items = out;
    }
    return rc;
}

int lstore_domains(lstore_t *s, lstore_domain_t **out, size_t *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    MDB_txn *t;
    MDB_cursor *c = NULL;
    int rc = lenv_read_begin(s->env, &t, err);
    if (rc) return rc;
    MDB_stat st;
    mdb_stat(t, s->domains, &st);
    lstore_domain_t *d = calloc(st.ms_entries ? st.ms_entries : 1, sizeof *d);
    if (!d) {
        rc = err_set(err, ERR_NOMEM, "label store: out of memory");
        goto done;
    }
    if ((rc = mdb_cursor_open(t, s->domains, &c))) {
        rc = lenv_err(err, rc, "domains cursor");
        goto done;
    }
    MDB_val k, v;
    for (int op = MDB_FIRST; *n < st.ms_entries && (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
        char name[LSTORE_NAME_MAX + 1];
        if (k.mv_size > LSTORE_NAME_MAX) continue;
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = 0;
        if ((rc = get_domain(s, t, name, &d[*n], err))) goto done;
        (*n)++;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    else if (rc) rc = lenv_err(err, rc, "domains walk");
done:
    if (c) mdb_cursor_close(c);
    mdb_txn_abort(t);
    if (rc) {
        free(d);
        *n = 0;
    } else {
        *out = d;
    }
    return rc;
}

int lstore_stats(lstore_t *s, lstore_stats_t *st, err_t *err)
{
    memset(st, 0, sizeof *st);
    MDB_txn *t;
    int rc = lenv_read_begin(s->env, &t, err);
    if (rc) return rc;
    MDB_stat ms;
    mdb_stat(t, s->samples, &ms);
    st->samples = ms.ms_entries;
    mdb_stat(t, s->queue, &ms);
    st->queued = ms.ms_entries;
    mdb_stat(t, s->labels, &ms);
    st->labels = ms.ms_entries;
    mdb_stat(t, s->domains, &ms);
    st->domains = ms.ms_entries;
    rc = meta_u64(s, t, "image_bytes", &st->image_bytes, err);
    mdb_txn_abort(t);
    lenv_stats_t ls;
    lenv_stats(s->env, &ls);
    st->map_size = ls.map_size;
    st->map_grows = ls.map_grows;
    return rc;
}
