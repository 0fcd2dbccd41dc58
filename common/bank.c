/* bank.c — adapter bank files: validation, split into parts, canonical reassembly (bank.h,
 * docs/bank-format.md).
 *
 * The layout itself (offsets, dtypes, sizes) is validated by wts_from_memory; this module
 * adds the bank rules (metadata keys, tensor name grammar, domain list) and owns the
 * canonical writer, so that split and join agree byte for byte. Part hashes use the x86 SHA
 * extensions when present because hashing dominates a put of a large bank.
 */
#include "bank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "sha256.h"
#include "wts.h"

typedef struct tref {
    char *name;          /* owned */
    wts_dtype_t dtype;
    int ndim;
    int64_t shape[WTS_MAX_DIMS];
    size_t nbytes;
    const void *data;    /* borrowed */
} tref_t;

typedef struct kv {
    char *k, *v;         /* owned */
} kv_t;

static int tref_cmp(const void *a, const void *b)
{
    return strcmp(((const tref_t *)a)->name, ((const tref_t *)b)->name);
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const kv_t *)a)->k, ((const kv_t *)b)->k);
}

static void trefs_free(tref_t *t, int n)
{
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
}

static void kvs_free(kv_t *m, int n)
{
    for (int i = 0; i < n; i++) {
        free(m[i].k);
        free(m[i].v);
    }
    free(m);
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > BANK_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static void hex_sha(const void *d, size_t n, char out[65])
{
    uint8_t dg[32];
    sha256_buf(d, n, dg);
    sha256_hex(dg, out);
}

/* ---- canonical writer ---------------------------------------------------------------- */

/* Header of a canonical file: metadata (sorted, may be empty) and tensors (sorted), padded
 * with spaces to a multiple of 8 bytes. Caller owns result. */
static char *canon_header(const kv_t *meta, int nmeta, const tref_t *t, int n, size_t *hlen, err_t *err)
{
    json_writer_t jw;
    json_w_init(&jw);
    json_w_begin_obj(&jw);
    if (nmeta) {
        json_w_key(&jw, "__metadata__");
        json_w_begin_obj(&jw);
        for (int i = 0; i < nmeta; i++) {
            json_w_key(&jw, meta[i].k);
            json_w_string(&jw, meta[i].v);
        }
        json_w_end_obj(&jw);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        json_w_key(&jw, t[i].name);
        json_w_begin_obj(&jw);
        json_w_key(&jw, "dtype");
        json_w_string(&jw, wts_dtype_name(t[i].dtype));
        json_w_key(&jw, "shape");
        json_w_begin_arr(&jw);
        for (int d = 0; d < t[i].ndim; d++) json_w_int(&jw, t[i].shape[d]);
        json_w_end_arr(&jw);
        json_w_key(&jw, "data_offsets");
        json_w_begin_arr(&jw);
        json_w_int(&jw, (int64_t)off);
        json_w_int(&jw, (int64_t)(off + t[i].nbytes));
        json_w_end_arr(&jw);
        json_w_end_obj(&jw);
        off += t[i].nbytes;
    }
    json_w_end_obj(&jw);
    size_t len;
    char *h = json_w_finish(&jw, &len, err);
    if (!h) return NULL;
    size_t padded = (len + 7) / 8 * 8;
    char *hp = realloc(h, padded + 1);
    if (!hp) {
        free(h);
        err_set(err, ERR_NOMEM, "bank: out of memory for the header");
        return NULL;
    }
    memset(hp + len, ' ', padded - len);
    hp[padded] = 0;
    *hlen = padded;
    return hp;
}

/* Writes the canonical file (t must be sorted). out NULL: only *len is computed. */
static int canon_write(const kv_t *meta, int nmeta, const tref_t *t, int n, void **out, size_t *len,
                       err_t *err)
{
    size_t hlen;
    char *h = canon_header(meta, nmeta, t, n, &hlen, err);
    if (!h) return err ? err->code : ERR_NOMEM;
    size_t total = 8 + hlen;
    for (int i = 0; i < n; i++) total += t[i].nbytes;
    *len = total;
    if (!out) {
        free(h);
        return 0;
    }
    unsigned char *b = malloc(total);
    if (!b) {
        free(h);
        return err_set(err, ERR_NOMEM, "bank: out of memory for %zu bytes", total);
    }
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, h, hlen);
    size_t o = 8 + hlen;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes) memcpy(b + o, t[i].data, t[i].nbytes);
        o += t[i].nbytes;
    }
    free(h);
    *out = b;
    return 0;
}

static int tref_set(tref_t *r, const char *name, const wts_tensor_t *t, err_t *err)
{
    r->name = strdup(name);
    if (!r->name) return err_set(err, ERR_NOMEM, "bank: out of memory");
    r->dtype = t->dtype;
    r->ndim = t->ndim;
    memcpy(r->shape, t->shape, sizeof r->shape);
    r->nbytes = t->nbytes;
    r->data = t->data;
    return 0;
}

/* ---- metadata -------------------------------------------------------------------------- */

/* The metadata pairs of a safetensors header (values are strings; wts checked that). */
static int read_meta(const void *buf, size_t len, kv_t **out, int *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    const unsigned char *p = buf;
    uint64_t hlen = 0;
    if (len < 8) return err_set(err, ERR_FORMAT, "bank: %zu bytes is too short", len);
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > len - 8) return err_set(err, ERR_FORMAT, "bank: header runs past the end");
    json_t *j = json_parse((const char *)p + 8, (size_t)hlen, err);
    if (!j) return err_wrap(err, "bank header");
    const json_t *m = json_get(j, "__metadata__");
    int rc = 0;
    kv_t *kv = calloc(json_len(m) + 1, sizeof *kv);
    if (!kv) rc = err_set(err, ERR_NOMEM, "bank: out of memory");
    for (size_t i = 0; !rc && i < json_len(m); i++) {
        kv[i].k = strdup(m->keys[i]);
        kv[i].v = strdup(json_str(&m->items[i]) ? json_str(&m->items[i]) : "");
        *n = (int)i + 1;
        if (!kv[i].k || !kv[i].v) rc = err_set(err, ERR_NOMEM, "bank: out of memory");
    }
    json_free(&j);
    *out = kv;
    return rc;
}

static const char *kv_find(const kv_t *m, int n, const char *k)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(m[i].k, k)) return m[i].v;
    return NULL;
}

typedef struct dom_entry {
    char name[BANK_NAME_MAX + 1];
    const json_t *j;  /* borrowed from the parsed list */
} dom_entry_t;

static int dom_cmp(const void *a, const void *b)
{
    return strcmp(((const dom_entry_t *)a)->name, ((const dom_entry_t *)b)->name);
}

/* Writes one domain entry canonically: name, created, metrics (keys sorted). */
static void write_dom_entry(json_writer_t *w, const dom_entry_t *d)
{
    json_w_begin_obj(w);
    json_w_key(w, "name");
    json_w_string(w, d->name);
    const json_t *c = json_get(d->j, "created");
    if (c) {
        json_w_key(w, "created");
        json_w_value(w, c);
    }
    const json_t *m = json_get(d->j, "metrics");
    if (m) {
        json_w_key(w, "metrics");
        json_w_begin_obj(w);
        for (size_t i = 0; i < m->len; i++) {
            size_t k = m->sorted[i];
            json_w_key(w, m->keys[k]);
            json_w_value(w, &m->items[k]);
        }
        json_w_end_obj(w);
    }
    json_w_end_obj(w);
}

/* Parses and checks "moda.domains"; returns the entries sorted by name and the canonical
 * text. *root must be json_free'd by the caller (entries point into it). */
static int parse_domains(const char *text, json_t **root, dom_entry_t **out, int *n, char **canon,
                         err_t *err)
{
    *root = NULL;
    *out = NULL;
    *n = 0;
    *canon = NULL;
    err_t jerr = {0};
    json_t *j = json_parse(text, strlen(text), &jerr);
    if (!j) return err_set(err, ERR_FORMAT, "metadata moda.domains: %s", jerr.msg);
    *root = j;
    if (j->type != JSON_ARRAY) return err_set(err, ERR_FORMAT, "metadata moda.domains is not a JSON array");
    if (j->len > BANK_MAX_DOMAINS)
        return err_set(err, ERR_RANGE, "metadata moda.domains: %zu domains (max %d)", j->len, BANK_MAX_DOMAINS);
    dom_entry_t *d = calloc(j->len + 1, sizeof *d);
    if (!d) return err_set(err, ERR_NOMEM, "bank: out of memory");
    *out = d;
    for (size_t i = 0; i < j->len; i++) {
        const json_t *e = &j->items[i];
        if (e->type != JSON_OBJECT) return err_set(err, ERR_FORMAT, "moda.domains[%zu] is not an object", i);
        for (size_t k = 0; k < e->len; k++)
            if (strcmp(e->keys[k], "name") && strcmp(e->keys[k], "created") && strcmp(e->keys[k], "metrics"))
                return err_set(err, ERR_FORMAT, "moda.domains[%zu]: unknown key '%.40s'", i, e->keys[k]);
        const char *nm = json_str(json_get(e, "name"));
        if (!nm || !name_ok(nm, strlen(nm)))
            return err_set(err, ERR_INVALID, "moda.domains[%zu]: name missing or not [a-z0-9_-]{1,64}", i);
        const json_t *c = json_get(e, "created");
        if (c && c->type != JSON_STRING && c->type != JSON_NUMBER)
            return err_set(err, ERR_FORMAT, "domain '%s': created is neither a string nor a number", nm);
        const json_t *m = json_get(e, "metrics");
        if (m && m->type != JSON_OBJECT)
            return err_set(err, ERR_FORMAT, "domain '%s': metrics is not an object", nm);
        for (size_t k = 0; m && k < m->len; k++)
            if (m->items[k].type != JSON_NUMBER)
                return err_set(err, ERR_FORMAT, "domain '%s': metric '%.40s' is not a number", nm, m->keys[k]);
        snprintf(d[i].name, sizeof d[i].name, "%s", nm);
        d[i].j = e;
    }
    qsort(d, j->len, sizeof *d, dom_cmp);
    for (size_t i = 1; i < j->len; i++)
        if (!strcmp(d[i - 1].name, d[i].name))
            return err_set(err, ERR_INVALID, "moda.domains lists '%s' twice", d[i].name);
    *n = (int)j->len;
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_arr(&w);
    for (int i = 0; i < *n; i++) write_dom_entry(&w, &d[i]);
    json_w_end_arr(&w);
    size_t len;
    *canon = json_w_finish(&w, &len, err);
    return *canon ? 0 : (err ? err->code : ERR_NOMEM);
}

/* Canonical metadata part: a JSON object of the (sorted) pairs. */
static int meta_part(const kv_t *m, int n, bank_part_t *p, err_t *err)
{
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    for (int i = 0; i < n; i++) {
        json_w_key(&w, m[i].k);
        json_w_string(&w, m[i].v);
    }
    json_w_end_obj(&w);
    char *s = json_w_finish(&w, &p->size, err);
    if (!s) return err ? err->code : ERR_NOMEM;
    p->data = s;
    return 0;
}

/* Parses a metadata part back into sorted pairs. */
static int meta_parse(const void *data, size_t len, kv_t **out, int *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    err_t jerr = {0};
    json_t *j = json_parse(data, len, &jerr);
    if (!j) return err_set(err, ERR_FORMAT, "bank metadata part: %s", jerr.msg);
    if (j->type != JSON_OBJECT) {
        json_free(&j);
        return err_set(err, ERR_FORMAT, "bank metadata part is not a JSON object");
    }
    kv_t *kv = calloc(j->len + 1, sizeof *kv);
    int rc = kv ? 0 : err_set(err, ERR_NOMEM, "bank: out of memory");
    for (size_t i = 0; !rc && i < j->len; i++) {
        const char *v = json_str(&j->items[i]);
        if (!v) {
            rc = err_set(err, ERR_FORMAT, "bank metadata part: value of '%.60s' is not a string", j->keys[i]);
            break;
        }
        kv[i].k = strdup(j->keys[i]);
        kv[i].v = strdup(v);
        *n = (int)i + 1;
        if (!kv[i].k || !kv[i].v) rc = err_set(err, ERR_NOMEM, "bank: out of memory");
    }
    json_free(&j);
    if (!rc) qsort(kv, (size_t)*n, sizeof *kv, kv_cmp);
    *out = kv;
    return rc;
}

/* ---- split ----------------------------------------------------------------------------- */

void bank_split_clear(bank_split_t *s)
{
    if (!s) return;
    free(s->meta.data);
    free(s->selector.data);
    for (int i = 0; i < s->n_domains; i++) free(s->domains[i].data);
    free(s->domains);
    memset(s, 0, sizeof *s);
}

static int hex64_ok(const char *h)
{
    if (!h || strlen(h) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) return 0;
    return 1;
}

/* Replay tensor names: "replay.<i>.image" / "replay.<i>.mask", i decimal without leading
 * zeros. Returns 1 image, 2 mask, 0 not replay, -1 malformed; *idx gets i. */
static int replay_kind(const char *path, long *idx)
{
    if (strncmp(path, "replay.", 7)) return 0;
    const char *p = path + 7;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return -1;
    char *end;
    long i = strtol(p, &end, 10);
    if (i < 0 || i > 1000000) return -1;
    *idx = i;
    if (!strcmp(end, ".image")) return 1;
    if (!strcmp(end, ".mask")) return 2;
    return -1;
}

/* Builds one tensor-group part (sorted, stripped names) and its shape signature. */
static int group_part(const char *what, tref_t *t, int n, int is_domain, bank_part_t *p, err_t *err)
{
    qsort(t, (size_t)n, sizeof *t, tref_cmp);
    sha256_t sh;
    sha256_init(&sh);
    long maxi = -1;
    for (int i = 0; i < n; i++) {
        long idx = 0;
        int rk = is_domain ? replay_kind(t[i].name, &idx) : 0;
        if (rk < 0)
            return err_set(err, ERR_FORMAT, "%s: tensor '%.120s' is not replay.<i>.image|mask", what, t[i].name);
        if (rk) {
            /* each image must be followed by its mask: names sort "<i>.image" < "<i>.mask" */
            const char *want = rk == 1 ? ".mask" : ".image";
            char other[96];
            snprintf(other, sizeof other, "replay.%ld%s", idx, want);
            int found = 0;
            for (int k = (i > 0 ? i - 1 : 0); k < n && k <= i + 1; k++)
                if (!strcmp(t[k].name, other)) found = 1;
            if (!found) return err_set(err, ERR_FORMAT, "%s: '%.120s' has no matching %s", what, t[i].name, other);
            if (idx > maxi) maxi = idx;
            if (rk == 1) p->n_replay++;
            continue;
        }
        sha256_update(&sh, t[i].name, strlen(t[i].name) + 1);
        const char *dn = wts_dtype_name(t[i].dtype);
        sha256_update(&sh, dn, strlen(dn) + 1);
        /* the selector's leading dims grow with the domain count: keep only ndim there */
        int nd = is_domain ? t[i].ndim : 0;
        unsigned char nb = (unsigned char)t[i].ndim;
        sha256_update(&sh, &nb, 1);
        for (int d = 0; d < nd; d++) {
            unsigned char b[8];
            for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)t[i].shape[d] >> (8 * k));
            sha256_update(&sh, b, 8);
        }
    }
    uint8_t dg[32];
    sha256_final(&sh, dg);
    sha256_hex(dg, p->shape_sig);
    return canon_write(NULL, 0, t, n, &p->data, &p->size, err);
}

int bank_split(const void *buf, size_t len, bank_split_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    err_t werr = {0};
    wts_t *w = wts_from_memory(buf, len, &werr);
    if (!w) return err_set(err, werr.code ? werr.code : ERR_FORMAT, "bank layout: %s", werr.msg);
    kv_t *meta = NULL;
    int nmeta = 0, rc;
    json_t *droot = NULL;
    dom_entry_t *dl = NULL;
    int nd = 0;
    char *dcanon = NULL;
    tref_t **groups = NULL;
    int *gcount = NULL;
    tref_t *sel = NULL;
    int nsel = 0;
    if ((rc = read_meta(buf, len, &meta, &nmeta, err))) goto out;
    const char *kind = kv_find(meta, nmeta, "moda.kind"), *fmt = kv_find(meta, nmeta, "moda.bank_format"),
               *base = kv_find(meta, nmeta, "moda.base_model"), *doms = kv_find(meta, nmeta, "moda.domains");
    if (!kind || strcmp(kind, BANK_KIND)) {
        rc = err_set(err, ERR_FORMAT, "metadata moda.kind is '%.40s', not '%s'", kind ? kind : "(missing)", BANK_KIND);
        goto out;
    }
    if (!fmt || strcmp(fmt, BANK_FORMAT)) {
        rc = err_set(err, ERR_VERSION, "metadata moda.bank_format is '%.20s', this build reads '%s'",
                     fmt ? fmt : "(missing)", BANK_FORMAT);
        goto out;
    }
    if (!hex64_ok(base)) {
        rc = err_set(err, ERR_FORMAT, "metadata moda.base_model is missing or not 64 lowercase hex digits");
        goto out;
    }
    snprintf(out->base_model, sizeof out->base_model, "%s", base);
    if (!doms) {
        rc = err_set(err, ERR_FORMAT, "metadata moda.domains is missing");
        goto out;
    }
    if ((rc = parse_domains(doms, &droot, &dl, &nd, &dcanon, err))) goto out;
    for (int i = 0; i < nmeta; i++)
        if (!strcmp(meta[i].k, "moda.domains")) {
            free(meta[i].v);
            meta[i].v = dcanon;
            dcanon = NULL;
        }
    qsort(meta, (size_t)nmeta, sizeof *meta, kv_cmp);
    if ((rc = meta_part(meta, nmeta, &out->meta, err))) goto out;

    /* classify tensors */
    int nt = wts_count(w);
    groups = calloc((size_t)nd + 1, sizeof *groups);
    gcount = calloc((size_t)nd + 1, sizeof *gcount);
    sel = calloc((size_t)nt + 1, sizeof *sel);
    out->domains = calloc((size_t)nd + 1, sizeof *out->domains);
    if (!groups || !gcount || !sel || !out->domains) {
        rc = err_set(err, ERR_NOMEM, "bank: out of memory");
        goto out;
    }
    out->n_domains = nd;
    for (int i = 0; i < nd; i++) {
        groups[i] = calloc((size_t)nt + 1, sizeof **groups);
        if (!groups[i]) {
            rc = err_set(err, ERR_NOMEM, "bank: out of memory");
            goto out;
        }
        snprintf(out->domains[i].name, sizeof out->domains[i].name, "%s", dl[i].name);
    }
    for (int i = 0; i < nt; i++) {
        const wts_tensor_t *t = wts_at(w, i);
        if (!strncmp(t->name, "selector.", 9)) {
            if (!t->name[9]) {
                rc = err_set(err, ERR_FORMAT, "tensor 'selector.' has no parameter path");
                goto out;
            }
            if ((rc = tref_set(&sel[nsel], t->name + 9, t, err))) goto out;
            nsel++;
            continue;
        }
        if (strncmp(t->name, "domain.", 7)) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.120s' is neither domain.<name>.* nor selector.*", t->name);
            goto out;
        }
        const char *nm = t->name + 7, *dot = strchr(nm, '.');
        if (!dot || !dot[1] || !name_ok(nm, (size_t)(dot - nm))) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.120s': expected domain.<name>.<param path> with name [a-z0-9_-]{1,64}",
                         t->name);
            goto out;
        }
        dom_entry_t key;
        memset(&key, 0, sizeof key);
        memcpy(key.name, nm, (size_t)(dot - nm));
        dom_entry_t *hit = bsearch(&key, dl, (size_t)nd, sizeof *dl, dom_cmp);
        if (!hit) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.120s': domain '%s' is not listed in moda.domains", t->name, key.name);
            goto out;
        }
        int di = (int)(hit - dl);
        if ((rc = tref_set(&groups[di][gcount[di]], dot + 1, t, err))) goto out;
        gcount[di]++;
    }
    for (int i = 0; i < nd; i++) {
        if (gcount[i] == 0) {
            rc = err_set(err, ERR_FORMAT, "domain '%s' is listed in moda.domains but has no tensors", dl[i].name);
            goto out;
        }
        char what[96];
        snprintf(what, sizeof what, "domain '%s'", dl[i].name);
        if ((rc = group_part(what, groups[i], gcount[i], 1, &out->domains[i], err))) goto out;
    }
    if ((rc = group_part("selector", sel, nsel, 0, &out->selector, err))) goto out;

    /* hash the parts (one thread: with the SHA extensions this is ~1 GB/s, and an OpenMP
     * team on a busy machine cost more in waiting than it saved) */
    int np = nd + 2;
    for (int i = 0; i < np; i++) {
        bank_part_t *p = i < nd ? &out->domains[i] : (i == nd ? &out->selector : &out->meta);
        hex_sha(p->data, p->size, p->hash);
    }
    bank_digest(out->meta.hash, out->selector.hash, out->domains, nd, out->digest);

    /* size of the canonical file without writing it: header + all tensor bytes */
    {
        tref_t *all = calloc((size_t)nt + 1, sizeof *all);
        if (!all) {
            rc = err_set(err, ERR_NOMEM, "bank: out of memory");
            goto out;
        }
        for (int i = 0; i < nt; i++) {
            const wts_tensor_t *t = wts_at(w, i);
            all[i].name = (char *)t->name;
            all[i].dtype = t->dtype;
            all[i].ndim = t->ndim;
            memcpy(all[i].shape, t->shape, sizeof all[i].shape);
            all[i].nbytes = t->nbytes;
        }
        qsort(all, (size_t)nt, sizeof *all, tref_cmp);
        rc = canon_write(meta, nmeta, all, nt, NULL, &out->bank_size, err);
        free(all);
    }
out:
    if (groups)
        for (int i = 0; i < nd; i++) trefs_free(groups[i], gcount[i]);
    free(groups);
    free(gcount);
    trefs_free(sel, nsel);
    free(dl);
    free(dcanon);
    json_free(&droot);
    kvs_free(meta, nmeta);
    wts_destroy(&w);
    return rc;
}

void bank_digest(const char *meta_hash, const char *selector_hash, const bank_part_t *domains,
                 int n_domains, char out[65])
{
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, "moda-bank-v1\n", 13);
    sha256_update(&s, meta_hash, strlen(meta_hash));
    sha256_update(&s, "\n", 1);
    sha256_update(&s, selector_hash, strlen(selector_hash));
    sha256_update(&s, "\n", 1);
    for (int i = 0; i < n_domains; i++) {
        sha256_update(&s, domains[i].name, strlen(domains[i].name));
        sha256_update(&s, " ", 1);
        sha256_update(&s, domains[i].hash, strlen(domains[i].hash));
        sha256_update(&s, "\n", 1);
    }
    uint8_t dg[32];
    sha256_final(&s, dg);
    sha256_hex(dg, out);
}

/* ---- join ------------------------------------------------------------------------------ */

static int add_group(const char *prefix, const bank_part_t *p, wts_t **wout, tref_t *all, int *n, int cap,
                     err_t *err)
{
    err_t werr = {0};
    wts_t *w = wts_from_memory(p->data, p->size, &werr);
    if (!w) return err_set(err, ERR_FORMAT, "bank part %s: %s", prefix, werr.msg);
    *wout = w;
    for (int i = 0; i < wts_count(w); i++) {
        if (*n >= cap) return err_set(err, ERR_RANGE, "bank parts: too many tensors");
        const wts_tensor_t *t = wts_at(w, i);
        size_t nl = strlen(prefix) + strlen(t->name) + 1;
        char *name = malloc(nl);
        if (!name) return err_set(err, ERR_NOMEM, "bank: out of memory");
        snprintf(name, nl, "%s%s", prefix, t->name);
        int rc = tref_set(&all[*n], name, t, err);
        free(name);
        if (rc) return rc;
        (*n)++;
    }
    return 0;
}

static int count_tensors(const bank_part_t *p, err_t *err)
{
    if (p->size < 8) return err_set(err, ERR_FORMAT, "bank part '%s' is too short", p->name);
    const unsigned char *b = p->data;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > p->size - 8) return err_set(err, ERR_FORMAT, "bank part '%s': bad header length", p->name);
    /* an upper bound: every tensor entry has a "dtype" key */
    int n = 0;
    const char *h = (const char *)b + 8, *e = h + hlen;
    for (const char *q = h; q + 7 <= e; q++)
        if (!memcmp(q, "\"dtype\"", 7)) n++;
    return n;
}

int bank_join(const bank_part_t *meta, const bank_part_t *selector, const bank_part_t *domains,
              int n_domains, void **out, size_t *len, err_t *err)
{
    *out = NULL;
    *len = 0;
    kv_t *m = NULL;
    int nm = 0;
    int rc = meta_parse(meta->data, meta->size, &m, &nm, err);
    json_t *droot = NULL;
    dom_entry_t *dl = NULL;
    int nd = 0;
    char *dcanon = NULL;
    wts_t **ws = NULL;
    tref_t *all = NULL;
    int nall = 0;
    if (rc) goto out;
    const char *doms = kv_find(m, nm, "moda.domains");
    if (!doms) {
        rc = err_set(err, ERR_FORMAT, "bank metadata part has no moda.domains");
        goto out;
    }
    if ((rc = parse_domains(doms, &droot, &dl, &nd, &dcanon, err))) goto out;
    if (nd != n_domains) {
        rc = err_set(err, ERR_INVALID, "bank metadata lists %d domains, %d domain parts given", nd, n_domains);
        goto out;
    }
    int cap = 0;
    for (int i = 0; i < n_domains; i++) {
        int c = count_tensors(&domains[i], err);
        if (c < 0) {
            rc = c;
            goto out;
        }
        cap += c;
        dom_entry_t key;
        memset(&key, 0, sizeof key);
        snprintf(key.name, sizeof key.name, "%s", domains[i].name);
        if (!bsearch(&key, dl, (size_t)nd, sizeof *dl, dom_cmp)) {
            rc = err_set(err, ERR_INVALID, "domain part '%s' is not listed in the bank metadata", domains[i].name);
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(domains[k].name, domains[i].name)) {
                rc = err_set(err, ERR_INVALID, "domain part '%s' given twice", domains[i].name);
                goto out;
            }
    }
    int cs = count_tensors(selector, err);
    if (cs < 0) {
        rc = cs;
        goto out;
    }
    cap += cs;
    ws = calloc((size_t)n_domains + 1, sizeof *ws);
    all = calloc((size_t)cap + 1, sizeof *all);
    if (!ws || !all) {
        rc = err_set(err, ERR_NOMEM, "bank: out of memory");
        goto out;
    }
    for (int i = 0; i < n_domains && !rc; i++) {
        char prefix[BANK_NAME_MAX + 16];
        snprintf(prefix, sizeof prefix, "domain.%s.", domains[i].name);
        rc = add_group(prefix, &domains[i], &ws[i], all, &nall, cap, err);
    }
    wts_t *wsel = NULL;
    if (!rc) rc = add_group("selector.", selector, &wsel, all, &nall, cap, err);
    if (!rc) {
        qsort(all, (size_t)nall, sizeof *all, tref_cmp);
        rc = canon_write(m, nm, all, nall, out, len, err);
    }
    wts_destroy(&wsel);
out:
    if (ws)
        for (int i = 0; i < n_domains; i++) wts_destroy(&ws[i]);
    free(ws);
    trefs_free(all, nall);
    free(dl);
    free(dcanon);
    json_free(&droot);
    kvs_free(m, nm);
    return rc;
}

int bank_canonicalise(const void *buf, size_t len, void **out, size_t *outlen, err_t *err)
{
    bank_split_t s;
    int rc = bank_split(buf, len, &s, err);
    if (!rc) rc = bank_join(&s.meta, &s.selector, s.domains, s.n_domains, out, outlen, err);
    bank_split_clear(&s);
    return rc;
}

/* ---- metadata edits ---------------------------------------------------------------------- */

int bank_meta_base_model(const void *meta, size_t meta_len, char out[65], err_t *err)
{
    kv_t *m;
    int nm;
    int rc = meta_parse(meta, meta_len, &m, &nm, err);
    if (!rc) {
        const char *b = kv_find(m, nm, "moda.base_model");
        if (!hex64_ok(b)) rc = err_set(err, ERR_FORMAT, "bank metadata: moda.base_model missing or malformed");
        else snprintf(out, 65, "%s", b);
    }
    kvs_free(m, nm);
    return rc;
}

int bank_meta_replace_domain(const void *meta, size_t meta_len, const void *from_meta,
                             size_t from_len, const char *name, void **out, size_t *out_len,
                             err_t *err)
{
    *out = NULL;
    *out_len = 0;
    kv_t *m = NULL, *f = NULL;
    int nm = 0, nf = 0;
    json_t *r1 = NULL, *r2 = NULL;
    dom_entry_t *d1 = NULL, *d2 = NULL;
    int n1 = 0, n2 = 0;
    char *c1 = NULL, *c2 = NULL;
    int rc = meta_parse(meta, meta_len, &m, &nm, err);
    if (!rc) rc = meta_parse(from_meta, from_len, &f, &nf, err);
    const char *dm = rc ? NULL : kv_find(m, nm, "moda.domains"), *df = rc ? NULL : kv_find(f, nf, "moda.domains");
    if (!rc && (!dm || !df)) rc = err_set(err, ERR_FORMAT, "bank metadata has no moda.domains");
    if (!rc) rc = parse_domains(dm, &r1, &d1, &n1, &c1, err);
    if (!rc) rc = parse_domains(df, &r2, &d2, &n2, &c2, err);
    if (rc) goto out;
    dom_entry_t key;
    memset(&key, 0, sizeof key);
    snprintf(key.name, sizeof key.name, "%s", name);
    dom_entry_t *src = bsearch(&key, d2, (size_t)n2, sizeof *d2, dom_cmp);
    if (!src) {
        rc = err_set(err, ERR_NOTFOUND, "domain '%s' is not in the version to revert to", name);
        goto out;
    }
    dom_entry_t *merged = calloc((size_t)n1 + 2, sizeof *merged);
    if (!merged) {
        rc = err_set(err, ERR_NOMEM, "bank: out of memory");
        goto out;
    }
    int nmg = 0, placed = 0;
    for (int i = 0; i < n1; i++) {
        if (!placed && strcmp(d1[i].name, name) >= 0) {
            merged[nmg++] = *src;
            placed = 1;
            if (!strcmp(d1[i].name, name)) continue;
        }
        merged[nmg++] = d1[i];
    }
    if (!placed) merged[nmg++] = *src;
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_arr(&w);
    for (int i = 0; i < nmg; i++) write_dom_entry(&w, &merged[i]);
    json_w_end_arr(&w);
    free(merged);
    size_t dl;
    char *txt = json_w_finish(&w, &dl, err);
    if (!txt) {
        rc = err ? err->code : ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < nm; i++)
        if (!strcmp(m[i].k, "moda.domains")) {
            free(m[i].v);
            m[i].v = txt;
            txt = NULL;
        }
    free(txt);
    bank_part_t p = {0};
    rc = meta_part(m, nm, &p, err);
    if (!rc) {
        *out = p.data;
        *out_len = p.size;
    }
out:
    free(d1);
    free(d2);
    free(c1);
    free(c2);
    json_free(&r1);
    json_free(&r2);
    kvs_free(m, nm);
    kvs_free(f, nf);
    return rc;
}

/* ---- synthetic banks ----------------------------------------------------------------------- */

static uint32_t xs32(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

int bank_synth(int n_domains, size_t domain_bytes, uint32_t seed, const uint32_t *gen,
               const char *base_model, void **out, size_t *len, err_t *err)
{
    if (n_domains < 1 || n_domains > 999) return err_set(err, ERR_RANGE, "bank_synth: 1..999 domains");
    size_t rows = domain_bytes / (256 * 4);
    if (rows < 1) rows = 1;
    size_t total = (size_t)n_domains * (rows * 256 + 256) + 10 * 16 + (size_t)n_domains * 16;
    float *vals = malloc(total * sizeof *vals);
    unsigned char *img = calloc(2 * 64, 1);
    int ntr = n_domains * 6 + 2;
    tref_t *t = calloc((size_t)ntr, sizeof *t);
    kv_t meta[4];
    memset(meta, 0, sizeof meta);
    int rc = 0;
    if (!vals || !img || !t) {
        rc = err_set(err, ERR_NOMEM, "bank_synth: out of memory");
        goto out;
    }
    for (int i = 0; i < 2 * 64; i++) img[i] = (unsigned char)(i * 37);
    size_t vo = 0;
    int nt = 0;
    json_writer_t jw;
    json_w_init(&jw);
    json_w_begin_arr(&jw);
    for (int d = 0; d < n_domains; d++) {
        uint32_t g = gen ? gen[d] : 0;
        uint32_t st = seed * 2654435761u ^ (uint32_t)d * 40503u ^ g * 0x85ebca6bu;
        char name[32];
        snprintf(name, sizeof name, "d%03d", d);
        float *w = vals + vo, *b = w + rows * 256;
        for (size_t k = 0; k < rows * 256 + 256; k++) w[k] = (float)(xs32(&st) >> 8) / 16777216.0f - 0.5f;
        vo += rows * 256 + 256;
        const char *suffix[6] = {"adapter.b", "adapter.w", "replay.0.image", "replay.0.mask", "replay.1.image",
                                 "replay.1.mask"};
        for (int k = 0; k < 6; k++) {
            char full[128];
            snprintf(full, sizeof full, "domain.%s.%s", name, suffix[k]);
            t[nt].name = strdup(full);
            if (!t[nt].name) {
                rc = err_set(err, ERR_NOMEM, "bank_synth: out of memory");
                json_w_free(&jw);
                goto out;
            }
            if (k == 0) {
                t[nt].dtype = WTS_F32, t[nt].ndim = 1, t[nt].shape[0] = 256, t[nt].data = b;
            } else if (k == 1) {
                t[nt].dtype = WTS_F32, t[nt].ndim = 2, t[nt].shape[0] = (int64_t)rows, t[nt].shape[1] = 256;
                t[nt].data = w;
            } else {
                t[nt].dtype = WTS_U8, t[nt].ndim = 2, t[nt].shape[0] = 8, t[nt].shape[1] = 8;
                t[nt].data = img + (k % 2) * 64;
            }
            t[nt].nbytes = wts_dtype_size(t[nt].dtype) * (size_t)t[nt].shape[0] * (size_t)(t[nt].ndim > 1 ? t[nt].shape[1] : 1);
            nt++;
        }
        json_w_begin_obj(&jw);
        json_w_key(&jw, "name");
        json_w_string(&jw, name);
        json_w_key(&jw, "created");
        json_w_string(&jw, "2026-11-29T00:00:00Z");
        json_w_key(&jw, "metrics");
        json_w_begin_obj(&jw);
        json_w_key(&jw, "gen");
        json_w_int(&jw, g);
        json_w_key(&jw, "iou");
        json_w_double(&jw, 0.5 + 0.001 * (double)(g % 100));
        json_w_end_obj(&jw);
        json_w_end_obj(&jw);
    }
    json_w_end_arr(&jw);
    size_t dlen;
    char *dtext = json_w_finish(&jw, &dlen, err);
    if (!dtext) {
        rc = err ? err->code : ERR_NOMEM;
        goto out;
    }
    float *keys = vals + vo, *tok = keys + (size_t)n_domains * 16;
    uint32_t st = seed ^ 0x51ed27u;
    for (size_t k = 0; k < (size_t)n_domains * 16 + 160; k++) keys[k] = (float)(xs32(&st) >> 8) / 16777216.0f;
    t[nt] = (tref_t){strdup("selector.keys.weight"), WTS_F32, 2, {n_domains, 16}, (size_t)n_domains * 64, keys};
    nt++;
    t[nt] = (tref_t){strdup("selector.tokens"), WTS_F32, 2, {10, 16}, 640, tok};
    nt++;
    if (!t[nt - 1].name || !t[nt - 2].name) {
        free(dtext);
        rc = err_set(err, ERR_NOMEM, "bank_synth: out of memory");
        goto out;
    }
    meta[0] = (kv_t){strdup("moda.bank_format"), strdup(BANK_FORMAT)};
    meta[1] = (kv_t){strdup("moda.base_model"), strdup(base_model)};
    meta[2] = (kv_t){strdup("moda.domains"), dtext};
    meta[3] = (kv_t){strdup("moda.kind"), strdup(BANK_KIND)};
    for (int i = 0; i < 4; i++)
        if (!meta[i].k || !meta[i].v) rc = err_set(err, ERR_NOMEM, "bank_synth: out of memory");
    if (!rc) {
        qsort(t, (size_t)nt, sizeof *t, tref_cmp);
        rc = canon_write(meta, 4, t, nt, out, len, err);
    }
out:
    for (int i = 0; i < 4; i++) {
        free(meta[i].k);
        free(meta[i].v);
    }
    if (t)
        for (int i = 0; i < ntr; i++) free(t[i].name);
    free(t);
    free(vals);
    free(img);
    return rc;
}
