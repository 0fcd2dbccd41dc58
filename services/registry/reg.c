/* reg.c — registry request handler (see reg.h; protocol in docs/registry.md).
 *
 * Reply memory: every protobuf struct, string and buffer a reply points at is allocated
 * through ar_*() and recorded in the reply, so reg_reply_clear frees it all at once after the
 * service has sent it. Validation of a put happens completely (bank layout, digest, base
 * model, shape signatures) before the single store transaction that makes it visible.
 */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bank.h"
#include "sha256.h"

#define DEFAULT_MAX_BANK ((size_t)1 << 30)
#define LIST_MAX 100000
#define ALIAS_DEFAULT "active"

struct reg {
    store_t *store;
    size_t max_bank;
};

/* ---- reply arena ------------------------------------------------------------------------ */

static void *ar_keep(reg_reply_t *rep, void *p)
{
    if (!p) return NULL;
    if (rep->nowned == rep->capowned) {
        int nc = rep->capowned ? rep->capowned * 2 : 32;
        void **o = realloc(rep->owned, (size_t)nc * sizeof *o);
        if (!o) {
            free(p);
            return NULL;
        }
        rep->owned = o;
        rep->capowned = nc;
    }
    rep->owned[rep->nowned++] = p;
    return p;
}

/* Zeroed memory living until reg_reply_clear. Small requests are carved from 64 KiB blocks
 * (a list of 1,000 versions makes ~20,000 of them); big ones get their own allocation. */
static void *ar(reg_reply_t *rep, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > 4096) return ar_keep(rep, calloc(1, n));
    if (n > rep->bump_left) {
        unsigned char *b = ar_keep(rep, calloc(1, 65536));
        if (!b) return NULL;
        rep->bump = b;
        rep->bump_left = 65536;
    }
    void *p = rep->bump;
    rep->bump += n;
    rep->bump_left -= n;
    return p;
}

static char *ar_str(reg_reply_t *rep, const char *s)
{
    char *d = ar(rep, strlen(s) + 1);
    if (d) memcpy(d, s, strlen(s) + 1);
    return d;
}

void reg_reply_clear(reg_reply_t *rep)
{
    if (!rep) return;
    for (int i = 0; i < rep->nowned; i++) free(rep->owned[i]);
    free(rep->owned);
    free(rep->parts);
    memset(rep, 0, sizeof *rep);
}

static Moda__Status *mk_status(reg_reply_t *rep, int code, const char *msg)
{
    Moda__Status *st = ar(rep, sizeof *st);
    if (!st) return NULL;
    moda__status__init(st);
    st->code = msg_status_code(code);
    st->message = ar_str(rep, code ? msg : "");
    if (!st->message) st->message = "";
    rep->status = code;
    return st;
}

/* ErrorReply for requests that cannot be dispatched. */
static int reply_error(reg_reply_t *rep, int code, const char *msg)
{
    Moda__ErrorReply *e = ar(rep, sizeof *e);
    moda__envelope__init(&rep->env);
    if (!e) return ERR_NOMEM;
    moda__error_reply__init(e);
    e->status = mk_status(rep, code, msg);
    rep->env.body_case = MODA__ENVELOPE__BODY_ERROR;
    rep->env.error = e;
    return code;
}

static int add_part(reg_reply_t *rep, const void *data, size_t size)
{
    if (rep->nparts >= MSG_MAX_PARTS) return ERR_RANGE;
    msg_part_t *p = realloc(rep->parts, (size_t)(rep->nparts + 1) * sizeof *p);
    if (!p) return ERR_NOMEM;
    /* parts is tracked separately from the arena because it is reallocated */
    rep->parts = p;
    rep->parts[rep->nparts].data = data;
    rep->parts[rep->nparts].size = size;
    rep->nparts++;
    return 0;
}

static void add_pub(reg_reply_t *rep, const char *alias, uint64_t version, const char *base)
{
    if (rep->n_pub >= REG_MAX_PUB) return;
    reg_pub_t *p = &rep->pub[rep->n_pub++];
    snprintf(p->alias, sizeof p->alias, "%s", alias);
    p->version = version;
    snprintf(p->base_hash, sizeof p->base_hash, "%s", base ? base : "");
}

/* ---- conversions ------------------------------------------------------------------------ */

static Moda__VersionInfo *mk_info(reg_reply_t *rep, const store_version_t *v, const store_alias_t *as, int nas)
{
    Moda__VersionInfo *vi = ar(rep, sizeof *vi);
    if (!vi) return NULL;
    moda__version_info__init(vi);
    vi->version = v->version;
    vi->parent = v->parent;
    vi->base_hash = ar_str(rep, v->base_hash);
    vi->selector_hash = ar_str(rep, v->selector_hash);
    vi->meta_hash = ar_str(rep, v->meta_hash);
    vi->bank_digest = ar_str(rep, v->bank_digest);
    vi->bank_size = v->bank_size;
    vi->actor = ar_str(rep, v->actor);
    vi->reason = ar_str(rep, v->reason);
    vi->created_us = v->created_us;
    vi->domains = ar(rep, (size_t)v->n_domains * sizeof *vi->domains);
    Moda__DomainInfo *ds = ar(rep, (size_t)v->n_domains * sizeof *ds);
    vi->metrics = ar(rep, (size_t)v->n_metrics * sizeof *vi->metrics);
    Moda__Metric *ms = ar(rep, (size_t)v->n_metrics * sizeof *ms);
    vi->aliases = ar(rep, (size_t)(nas + 1) * sizeof *vi->aliases);
    if (!vi->base_hash || !vi->selector_hash || !vi->meta_hash || !vi->bank_digest || !vi->actor || !vi->reason ||
        !vi->domains || !ds || !vi->metrics || !ms || !vi->aliases)
        return NULL;
    for (int i = 0; i < v->n_domains; i++) {
        moda__domain_info__init(&ds[i]);
        ds[i].name = ar_str(rep, v->domains[i].name);
        ds[i].content_hash = ar_str(rep, v->domains[i].hash);
        ds[i].size = v->domains[i].size;
        if (!ds[i].name || !ds[i].content_hash) return NULL;
        vi->domains[i] = &ds[i];
    }
    vi->n_domains = (size_t)v->n_domains;
    for (int i = 0; i < v->n_metrics; i++) {
        moda__metric__init(&ms[i]);
        ms[i].name = ar_str(rep, v->metrics[i].name);
        ms[i].value = v->metrics[i].value;
        if (!ms[i].name) return NULL;
        vi->metrics[i] = &ms[i];
    }
    vi->n_metrics = (size_t)v->n_metrics;
    for (int i = 0; i < nas; i++)
        if (as[i].version == v->version) vi->aliases[vi->n_aliases++] = (char *)as[i].name;
    return vi;
}

static Moda__HistoryEntry *mk_entry(reg_reply_t *rep, const store_hist_t *h)
{
    Moda__HistoryEntry *e = ar(rep, sizeof *e);
    if (!e) return NULL;
    moda__history_entry__init(e);
    e->alias = ar_str(rep, h->alias);
    e->from = h->from;
    e->to = h->to;
    e->actor = ar_str(rep, h->actor);
    e->reason = ar_str(rep, h->reason);
    e->action = ar_str(rep, h->action);
    e->time_us = h->time_us;
    e->seq = h->seq;
    if (!e->alias || !e->actor || !e->reason || !e->action) return NULL;
    return e;
}

/* Resolves "version, else alias (default active)". */
static int resolve(reg_t *r, uint64_t version, const char *alias, uint64_t *out, err_t *err)
{
    if (version) {
        *out = version;
        return 0;
    }
    return store_get_alias(r->store, alias && *alias ? alias : ALIAS_DEFAULT, out, err);
}

/* ---- setup ------------------------------------------------------------------------------ */

reg_t *reg_new(const reg_opts_t *o, err_t *err)
{
    reg_t *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(err, ERR_NOMEM, "registry: out of memory");
        return NULL;
    }
    store_opts_t so = {o->map_size, o->no_sync};
    r->store = store_open(o->data_dir, &so, err);
    if (!r->store) {
        free(r);
        return NULL;
    }
    r->max_bank = o->max_bank_bytes ? o->max_bank_bytes : DEFAULT_MAX_BANK;
    return r;
}

void reg_destroy(reg_t **r)
{
    if (!r || !*r) return;
    store_close(&(*r)->store);
    free(*r);
    *r = NULL;
}

store_t *reg_store(reg_t *r) { return r->store; }

int reg_alias_value(reg_t *r, const char *alias, reg_pub_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    uint64_t v;
    int rc = store_get_alias(r->store, alias, &v, err);
    if (rc) return rc;
    snprintf(out->alias, sizeof out->alias, "%s", alias);
    out->version = v;
    store_meta_get(r->store, "base_hash", out->base_hash, sizeof out->base_hash, NULL);
    return 0;
}

/* ---- put ---------------------------------------------------------------------------------- */

/* A bank without selector tensors (one domain: nothing to choose, learn.h) fixes no selector
 * layout: it is neither checked nor recorded, so the first bank with a selector sets it. */
static int selector_empty(const char *sig)
{
    uint8_t d[32];
    char e[65];
    sha256_buf("", 0, d);
    sha256_hex(d, e);
    return !strcmp(sig, e);
}

/* Checks a split bank against what the registry already holds and returns the meta pairs
 * to record on first use (base model, shape signatures). */
static int check_against_store(reg_t *r, const bank_split_t *b, err_t *err)
{
    char have[80];
    int rc = store_meta_get(r->store, "base_hash", have, sizeof have, NULL);
    if (rc == 0 && strcmp(have, b->base_model))
        return err_set(err, ERR_VERSION,
                       "bank was trained on base model %.12s…, this registry holds banks of base model %.12s…",
                       b->base_model, have);
    rc = store_meta_get(r->store, "adapter_shapes", have, sizeof have, NULL);
    const char *want = rc == 0 ? have : (b->n_domains ? b->domains[0].shape_sig : NULL);
    for (int i = 0; want && i < b->n_domains; i++)
        if (strcmp(b->domains[i].shape_sig, want))
            return err_set(err, ERR_INVALID,
                           "domain '%s': adapter tensor names/dtypes/shapes differ from the %s adapter layout",
                           b->domains[i].name, rc == 0 ? "registry's" : "bank's first domain's");
    rc = store_meta_get(r->store, "selector_shapes", have, sizeof have, NULL);
    if (rc == 0 && !selector_empty(have) && !selector_empty(b->selector.shape_sig) && strcmp(have, b->selector.shape_sig))
        return err_set(err, ERR_INVALID, "selector tensor names/dtypes/ranks differ from the registry's selector layout");
    return 0;
}

/* Commits a validated split bank as a new version. */
static int commit_split(reg_t *r, const bank_split_t *b, uint64_t parent, const Moda__Metric *const *metrics,
                        size_t n_metrics, const char *actor, const char *reason, const char *set_alias,
                        const char *action, store_version_t *v, store_hist_t *hist, err_t *err)
{
    memset(v, 0, sizeof *v);
    if (n_metrics > STORE_MAX_METRICS) return err_set(err, ERR_RANGE, "%zu metrics (max %d)", n_metrics, STORE_MAX_METRICS);
    v->parent = parent;
    snprintf(v->base_hash, sizeof v->base_hash, "%s", b->base_model);
    snprintf(v->selector_hash, sizeof v->selector_hash, "%s", b->selector.hash);
    v->selector_size = b->selector.size;
    snprintf(v->meta_hash, sizeof v->meta_hash, "%s", b->meta.hash);
    v->meta_size = b->meta.size;
    v->bank_size = b->bank_size;
    snprintf(v->bank_digest, sizeof v->bank_digest, "%s", b->digest);
    v->n_domains = b->n_domains;
    v->domains = calloc((size_t)b->n_domains + 1, sizeof *v->domains);
    v->metrics = calloc(n_metrics + 1, sizeof *v->metrics);
    store_blob_t *blobs = calloc((size_t)b->n_domains + 2, sizeof *blobs);
    if (!v->domains || !v->metrics || !blobs) {
        free(blobs);
        store_version_clear(v);
        return err_set(err, ERR_NOMEM, "registry: out of memory");
    }
    int nb = 0;
    for (int i = 0; i < b->n_domains; i++) {
        snprintf(v->domains[i].name, sizeof v->domains[i].name, "%s", b->domains[i].name);
        snprintf(v->domains[i].hash, sizeof v->domains[i].hash, "%s", b->domains[i].hash);
        v->domains[i].size = b->domains[i].size;
        if (b->domains[i].data) {
            snprintf(blobs[nb].hash, sizeof blobs[nb].hash, "%s", b->domains[i].hash);
            blobs[nb].data = b->domains[i].data;
            blobs[nb++].size = b->domains[i].size;
        }
    }
    const bank_part_t *extra[2] = {&b->selector, &b->meta};
    for (int i = 0; i < 2; i++)
        if (extra[i]->data) {
            snprintf(blobs[nb].hash, sizeof blobs[nb].hash, "%s", extra[i]->hash);
            blobs[nb].data = extra[i]->data;
            blobs[nb++].size = extra[i]->size;
        }
    for (size_t i = 0; i < n_metrics; i++) {
        const char *nm = metrics[i] && metrics[i]->name ? metrics[i]->name : "";
        if (strlen(nm) > STORE_NAME_MAX || !*nm) {
            free(blobs);
            store_version_clear(v);
            return err_set(err, ERR_INVALID, "metric name empty or longer than %d bytes", STORE_NAME_MAX);
        }
        snprintf(v->metrics[i].name, sizeof v->metrics[i].name, "%s", nm);
        v->metrics[i].value = metrics[i]->value;
    }
    v->n_metrics = (int)n_metrics;
    if (strlen(actor) > STORE_TEXT_MAX || strlen(reason) > STORE_TEXT_MAX) {
        free(blobs);
        store_version_clear(v);
        return err_set(err, ERR_RANGE, "actor or reason longer than %d bytes", STORE_TEXT_MAX);
    }
    snprintf(v->actor, sizeof v->actor, "%s", actor);
    snprintf(v->reason, sizeof v->reason, "%s", reason);
    store_kv_t meta[3] = {{"base_hash", b->base_model},
                          {"adapter_shapes", b->n_domains ? b->domains[0].shape_sig : ""},
                          {"selector_shapes", b->selector.shape_sig}};
    int nmeta = b->n_domains ? 3 : 2;
    if (!b->n_domains) meta[1] = meta[2];
    if (selector_empty(b->selector.shape_sig)) nmeta--; /* the selector pair is the last one */
    int rc = store_put_version(r->store, v, blobs, nb, meta, nmeta, set_alias && *set_alias ? set_alias : NULL,
                               action, hist, err);
    free(blobs);
    if (rc) store_version_clear(v);
    return rc;
}

static int reply_version(reg_t *r, reg_reply_t *rep, Moda__Envelope__BodyCase bc, const store_version_t *v,
                         int code, const char *msg)
{
    store_alias_t *as = NULL;
    int nas = 0;
    if (!code) store_list_aliases(r->store, &as, &nas, NULL);
    Moda__VersionInfo *vi = code ? NULL : mk_info(rep, v, as, nas);
    /* alias names are copied: the list is freed below */
    if (vi)
        for (size_t i = 0; i < vi->n_aliases; i++) vi->aliases[i] = ar_str(rep, vi->aliases[i]);
    free(as);
    if (!code && !vi) return reply_error(rep, ERR_NOMEM, "registry: out of memory building the reply");
    Moda__Status *st = mk_status(rep, code, msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = bc;
    if (bc == MODA__ENVELOPE__BODY_PUT_VERSION_REPLY) {
        Moda__PutVersionReply *p = ar(rep, sizeof *p);
        if (!p) return ERR_NOMEM;
        moda__put_version_reply__init(p);
        p->status = st;
        p->info = vi;
        rep->env.put_version_reply = p;
    } else {
        Moda__RevertDomainReply *p = ar(rep, sizeof *p);
        if (!p) return ERR_NOMEM;
        moda__revert_domain_reply__init(p);
        p->status = st;
        p->info = vi;
        rep->env.revert_domain_reply = p;
    }
    return code;
}

/* Per-part put: BlobRef "@meta", "@selector" or a domain name; unchanged domains come from
 * the parent. Reassembled into a bank so one validation path serves both forms. */
static int assemble_parts(reg_t *r, const Moda__PutVersionRequest *q, const msg_part_t *parts, int nparts,
                          void **bank, size_t *len, err_t *err)
{
    int rc = 0;
    size_t nd = q->n_blobs + q->n_unchanged_domains;
    bank_part_t meta = {0}, sel = {0}, *doms = calloc(nd + 1, sizeof *doms);
    void **fetched = calloc(nd + 3, sizeof *fetched);
    int nfetched = 0, ndoms = 0;
    store_version_t pv = {0};
    if (!doms || !fetched) {
        rc = err_set(err, ERR_NOMEM, "registry: out of memory");
        goto out;
    }
    for (size_t i = 0; i < q->n_blobs && !rc; i++) {
        const Moda__BlobRef *b = q->blobs[i];
        if (!b || b->part >= (uint32_t)nparts) {
            rc = err_set(err, ERR_INVALID, "blob %zu names part %u, the message has %d", i, b ? b->part : 0, nparts);
            break;
        }
        char h[65];
        uint8_t dg[32];
        sha256_buf(parts[b->part].data, parts[b->part].size, dg);
        sha256_hex(dg, h);
        if (strcmp(h, b->content_hash ? b->content_hash : "")) {
            rc = err_set(err, ERR_INVALID, "blob '%.64s': content hash does not match its bytes", b->name ? b->name : "");
            break;
        }
        bank_part_t *p = !strcmp(b->name, "@meta") ? &meta : !strcmp(b->name, "@selector") ? &sel : &doms[ndoms];
        if (p->data) {
            rc = err_set(err, ERR_INVALID, "blob '%.64s' given twice", b->name);
            break;
        }
        if (p == &doms[ndoms]) {
            if ((rc = store_name_check(b->name, "blob name", err))) break;
            ndoms++;
        }
        snprintf(p->name, sizeof p->name, "%s", p == &meta || p == &sel ? "" : b->name);
        p->data = (void *)parts[b->part].data;
        p->size = parts[b->part].size;
    }
    if (!rc && q->n_unchanged_domains) {
        if (!q->parent) rc = err_set(err, ERR_INVALID, "unchanged_domains needs a parent version");
        else rc = store_get_version(r->store, q->parent, &pv, err);
    }
    for (size_t i = 0; !rc && i < q->n_unchanged_domains; i++) {
        const char *nm = q->unchanged_domains[i];
        int k = 0;
        while (k < pv.n_domains && strcmp(pv.domains[k].name, nm)) k++;
        if (k == pv.n_domains) {
            rc = err_set(err, ERR_NOTFOUND, "unchanged domain '%.64s' is not in parent version %llu", nm,
                         (unsigned long long)q->parent);
            break;
        }
        bank_part_t *p = &doms[ndoms++];
        snprintf(p->name, sizeof p->name, "%s", nm);
        if ((rc = store_get_blob(r->store, pv.domains[k].hash, &p->data, &p->size, err))) break;
        fetched[nfetched++] = p->data;
    }
    if (!rc && !meta.data) rc = err_set(err, ERR_INVALID, "no @meta blob");
    if (!rc && !sel.data) {
        if (!pv.version && q->parent) rc = store_get_version(r->store, q->parent, &pv, err);
        if (!rc && pv.version) {
            rc = store_get_blob(r->store, pv.selector_hash, &sel.data, &sel.size, err);
            if (!rc) fetched[nfetched++] = sel.data;
        } else if (!rc) {
            rc = err_set(err, ERR_INVALID, "no @selector blob and no parent to take it from");
        }
    }
    if (!rc) rc = bank_join(&meta, &sel, doms, ndoms, bank, len, err);
out:
    for (int i = 0; i < nfetched; i++) free(fetched[i]);
    free(fetched);
    free(doms);
    store_version_clear(&pv);
    return rc;
}

static int on_put(reg_t *r, const Moda__PutVersionRequest *q, const msg_part_t *parts, int nparts,
                  reg_reply_t *rep)
{
    err_t err = {0};
    unsigned char *bank = NULL;
    const void *data = NULL;
    size_t len = 0;
    int rc = 0;
    if (q->whole_bank) {
        if (q->n_blobs || q->n_unchanged_domains || (q->base_hash && *q->base_hash))
            rc = err_set(&err, ERR_INVALID, "whole_bank put must not carry blobs, unchanged_domains or base_hash");
        for (int i = 0; !rc && i < nparts; i++) {
            if (parts[i].size > r->max_bank - len)
                rc = err_set(&err, ERR_RANGE, "bank larger than the limit of %zu bytes", r->max_bank);
            len += parts[i].size;
        }
        if (!rc && nparts == 0) rc = err_set(&err, ERR_INVALID, "whole_bank put without bank bytes");
        if (!rc && nparts == 1) data = parts[0].data;
        else if (!rc) {
            bank = malloc(len);
            if (!bank) rc = err_set(&err, ERR_NOMEM, "registry: out of memory for a %zu-byte bank", len);
            size_t o = 0;
            for (int i = 0; !rc && i < nparts; i++) {
                memcpy(bank + o, parts[i].data, parts[i].size);
                o += parts[i].size;
            }
            data = bank;
        }
    } else {
        void *b = NULL;
        rc = assemble_parts(r, q, parts, nparts, &b, &len, &err);
        bank = b;
        data = b;
    }
    bank_split_t b = {0};
    store_version_t v = {0};
    store_hist_t hist = {0};
    uint64_t parent = q->parent;
    if (!rc) {
        rc = bank_split(data, len, &b, &err);
        if (rc) err_wrap(&err, "bank refused");
    }
    if (!rc && q->bank_digest && *q->bank_digest && strcmp(q->bank_digest, b.digest))
        rc = err_set(&err, ERR_INVALID, "bank digest mismatch: sent %.16s…, received bytes give %.16s…", q->bank_digest,
                     b.digest);
    if (!rc) rc = check_against_store(r, &b, &err);
    if (!rc && !parent) rc = store_last_version(r->store, &parent, &err);
    if (!rc)
        rc = commit_split(r, &b, parent, (const Moda__Metric *const *)q->metrics, q->n_metrics, q->actor ? q->actor : "",
                          q->reason ? q->reason : "", q->set_alias, "put", &v, &hist, &err);
    if (!rc && q->set_alias && *q->set_alias && hist.seq) add_pub(rep, hist.alias, hist.to, v.base_hash);
    free(bank);
    bank_split_clear(&b);
    int out = reply_version(r, rep, MODA__ENVELOPE__BODY_PUT_VERSION_REPLY, &v, rc, err.msg);
    store_version_clear(&v);
    return out;
}

/* ---- get / list ----------------------------------------------------------------------------- */

static int fetch_parts(reg_t *r, const store_version_t *v, bank_part_t *meta, bank_part_t *sel, bank_part_t *doms,
                       err_t *err)
{
    int rc = store_get_blob(r->store, v->meta_hash, &meta->data, &meta->size, err);
    if (!rc) rc = store_get_blob(r->store, v->selector_hash, &sel->data, &sel->size, err);
    for (int i = 0; !rc && i < v->n_domains; i++) {
        snprintf(doms[i].name, sizeof doms[i].name, "%s", v->domains[i].name);
        snprintf(doms[i].hash, sizeof doms[i].hash, "%s", v->domains[i].hash);
        rc = store_get_blob(r->store, v->domains[i].hash, &doms[i].data, &doms[i].size, err);
    }
    return rc;
}

static void free_parts(bank_part_t *meta, bank_part_t *sel, bank_part_t *doms, int n)
{
    free(meta->data);
    free(sel->data);
    for (int i = 0; doms && i < n; i++) free(doms[i].data);
    free(doms);
}

static int on_get(reg_t *r, const Moda__GetVersionRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    uint64_t ver = 0;
    store_version_t v = {0};
    int rc = resolve(r, q->version, q->alias, &ver, &err);
    if (!rc) rc = store_get_version(r->store, ver, &v, &err);
    Moda__GetVersionReply *g = ar(rep, sizeof *g);
    if (!g) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    moda__get_version_reply__init(g);
    if (!rc && (q->whole_bank || q->include_blobs)) {
        bank_part_t meta = {0}, sel = {0}, *doms = calloc((size_t)v.n_domains + 1, sizeof *doms);
        if (!doms) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
        if (!rc) rc = fetch_parts(r, &v, &meta, &sel, doms, &err);
        if (!rc && q->whole_bank) {
            void *bank = NULL;
            size_t len = 0;
            rc = bank_join(&meta, &sel, doms, v.n_domains, &bank, &len, &err);
            if (!rc && !ar_keep(rep, bank)) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
            if (!rc && len != v.bank_size)
                rc = err_set(&err, ERR_DB, "version %llu: reassembled %zu bytes, recorded %llu",
                             (unsigned long long)ver, len, (unsigned long long)v.bank_size);
            size_t chunk = q->chunk_bytes ? q->chunk_bytes : REG_CHUNK_BYTES;
            if (chunk < 4096) chunk = 4096;
            if (!rc && (len + chunk - 1) / chunk > MSG_MAX_PARTS) chunk = (len + MSG_MAX_PARTS - 1) / MSG_MAX_PARTS;
            for (size_t o = 0; !rc && o < len; o += chunk)
                if (add_part(rep, (char *)bank + o, len - o < chunk ? len - o : chunk))
                    rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
            g->bank_size = len;
            free_parts(&meta, &sel, doms, v.n_domains);
        } else if (!rc) {
            /* per-part form: @meta, @selector, then the domains */
            int n = v.n_domains + 2;
            g->blobs = ar(rep, (size_t)n * sizeof *g->blobs);
            Moda__BlobRef *br = ar(rep, (size_t)n * sizeof *br);
            if (!g->blobs || !br) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
            for (int i = 0; !rc && i < n; i++) {
                bank_part_t *p = i == 0 ? &meta : i == 1 ? &sel : &doms[i - 2];
                moda__blob_ref__init(&br[i]);
                br[i].name = ar_str(rep, i == 0 ? "@meta" : i == 1 ? "@selector" : p->name);
                br[i].content_hash = ar_str(rep, i == 0 ? v.meta_hash : i == 1 ? v.selector_hash : p->hash);
                br[i].part = (uint32_t)i;
                if (!ar_keep(rep, p->data) || add_part(rep, p->data, p->size))
                    rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
                p->data = NULL;
                g->blobs[i] = &br[i];
                g->n_blobs = (size_t)i + 1;
            }
            free_parts(&meta, &sel, doms, v.n_domains);
        } else {
            free_parts(&meta, &sel, doms, v.n_domains);
        }
        if (rc) {
            free(rep->parts);
            rep->parts = NULL;
            rep->nparts = 0;
            g->n_blobs = 0;
            g->bank_size = 0;
        }
    }
    store_alias_t *as = NULL;
    int nas = 0;
    if (!rc) store_list_aliases(r->store, &as, &nas, NULL);
    if (!rc) {
        g->info = mk_info(rep, &v, as, nas);
        if (g->info)
            for (size_t i = 0; i < g->info->n_aliases; i++) g->info->aliases[i] = ar_str(rep, g->info->aliases[i]);
    }
    free(as);
    store_version_clear(&v);
    g->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REPLY;
    rep->env.get_version_reply = g;
    return rc;
}

static int on_list(reg_t *r, const Moda__ListVersionsRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    store_version_t *vs = NULL;
    int n = 0;
    int limit = q->limit == 0 || q->limit > LIST_MAX ? LIST_MAX : (int)q->limit;
    int rc = store_list_versions(r->store, q->before, limit, &vs, &n, &err);
    store_alias_t *as = NULL;
    int nas = 0;
    if (!rc) rc = store_list_aliases(r->store, &as, &nas, &err);
    Moda__ListVersionsReply *l = ar(rep, sizeof *l);
    if (!l) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
    else moda__list_versions_reply__init(l);
    char **anames = NULL;
    if (!rc) {
        anames = ar(rep, (size_t)(nas + 1) * sizeof *anames);
        if (!anames) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
        for (int i = 0; !rc && i < nas; i++) anames[i] = ar_str(rep, as[i].name);
    }
    if (!rc) {
        l->versions = ar(rep, (size_t)n * sizeof *l->versions);
        if (!l->versions) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
    }
    for (int i = 0; !rc && i < n; i++) {
        Moda__VersionInfo *vi = mk_info(rep, &vs[i], as, nas);
        if (!vi) {
            rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
            break;
        }
        /* point alias names at the reply's own copies */
        for (size_t k = 0; k < vi->n_aliases; k++)
            for (int a = 0; a < nas; a++)
                if (vi->aliases[k] == as[a].name) vi->aliases[k] = anames[a];
        l->versions[i] = vi;
        l->n_versions = (size_t)i + 1;
    }
    store_versions_free(&vs, n);
    free(as);
    if (!l) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    if (rc) l->n_versions = 0;
    l->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY;
    rep->env.list_versions_reply = l;
    return rc;
}

/* ---- aliases -------------------------------------------------------------------------------- */

static void base_of(reg_t *r, char out[65])
{
    out[0] = 0;
    store_meta_get(r->store, "base_hash", out, 65, NULL);
}

static int on_set_alias(reg_t *r, const Moda__SetAliasRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    store_hist_t h = {0};
    int rc = store_set_alias(r->store, q->alias, q->version, q->expect_from, "set", q->actor, q->reason, &h, &err);
    char base[65];
    base_of(r, base);
    if (!rc && h.seq) add_pub(rep, h.alias, h.to, base);
    Moda__SetAliasReply *s = ar(rep, sizeof *s);
    if (!s) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    moda__set_alias_reply__init(s);
    if (!rc) s->entry = mk_entry(rep, &h);
    s->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REPLY;
    rep->env.set_alias_reply = s;
    return rc;
}

static int on_rollback(reg_t *r, const Moda__RollbackRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    store_hist_t h = {0};
    const char *alias = q->alias && *q->alias ? q->alias : ALIAS_DEFAULT;
    int rc = store_rollback(r->store, alias, q->to_version, q->actor, q->reason, &h, &err);
    char base[65];
    base_of(r, base);
    if (!rc && h.seq) add_pub(rep, h.alias, h.to, base);
    Moda__RollbackReply *s = ar(rep, sizeof *s);
    if (!s) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    moda__rollback_reply__init(s);
    if (!rc) s->entry = mk_entry(rep, &h);
    s->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_ROLLBACK_REPLY;
    rep->env.rollback_reply = s;
    return rc;
}

static int on_revert_domain(reg_t *r, const Moda__RevertDomainRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    uint64_t ver = 0;
    store_version_t cur = {0}, old = {0}, nv = {0};
    store_hist_t hist = {0};
    void *cur_meta = NULL, *old_meta = NULL, *new_meta = NULL, *joined = NULL;
    size_t cm = 0, om = 0, nm = 0, jl = 0;
    bank_part_t meta = {0}, sel = {0}, *doms = NULL;
    int rc = store_name_check(q->domain, "domain", &err);
    if (!rc && !q->to_version) rc = err_set(&err, ERR_INVALID, "revert-domain needs the version to take the domain from");
    if (!rc) rc = resolve(r, q->version, q->alias, &ver, &err);
    if (!rc) rc = store_get_version(r->store, ver, &cur, &err);
    if (!rc) rc = store_get_version(r->store, q->to_version, &old, &err);
    int oi = -1;
    for (int i = 0; !rc && i < old.n_domains; i++)
        if (!strcmp(old.domains[i].name, q->domain)) oi = i;
    if (!rc && oi < 0)
        rc = err_set(&err, ERR_NOTFOUND, "domain '%s' is not in version %llu", q->domain,
                     (unsigned long long)q->to_version);
    if (!rc) rc = store_get_blob(r->store, cur.meta_hash, &cur_meta, &cm, &err);
    if (!rc) rc = store_get_blob(r->store, old.meta_hash, &old_meta, &om, &err);
    if (!rc) rc = bank_meta_replace_domain(cur_meta, cm, old_meta, om, q->domain, &new_meta, &nm, &err);
    /* the new version's parts: current ones with the domain's blob taken from the old version */
    int nd = 0;
    if (!rc) {
        doms = calloc((size_t)cur.n_domains + 2, sizeof *doms);
        if (!doms) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
    }
    int placed = 0;
    for (int i = 0; !rc && i <= cur.n_domains; i++) {
        const store_domain_t *d = i < cur.n_domains ? &cur.domains[i] : NULL;
        if (!placed && (!d || strcmp(d->name, q->domain) >= 0)) {
            snprintf(doms[nd].name, sizeof doms[nd].name, "%s", old.domains[oi].name);
            snprintf(doms[nd].hash, sizeof doms[nd].hash, "%s", old.domains[oi].hash);
            doms[nd].size = old.domains[oi].size;
            nd++;
            placed = 1;
            if (d && !strcmp(d->name, q->domain)) continue;
        }
        if (!d) break;
        snprintf(doms[nd].name, sizeof doms[nd].name, "%s", d->name);
        snprintf(doms[nd].hash, sizeof doms[nd].hash, "%s", d->hash);
        doms[nd].size = d->size;
        nd++;
    }
    /* reassemble once: proves the parts fit together and gives the bank size */
    if (!rc) {
        meta.data = new_meta;
        meta.size = nm;
        rc = store_get_blob(r->store, cur.selector_hash, &sel.data, &sel.size, &err);
        for (int i = 0; !rc && i < nd; i++) rc = store_get_blob(r->store, doms[i].hash, &doms[i].data, &doms[i].size, &err);
        if (!rc) rc = bank_join(&meta, &sel, doms, nd, &joined, &jl, &err);
    }
    bank_split_t b = {0};
    if (!rc) {
        rc = bank_split(joined, jl, &b, &err);
        if (!rc && strcmp(b.selector.hash, cur.selector_hash))
            rc = err_set(&err, ERR_DB, "revert-domain: selector changed on reassembly");
    }
    if (!rc) {
        char reason[STORE_TEXT_MAX + 1];
        snprintf(reason, sizeof reason, "%s", q->reason && *q->reason ? q->reason : "");
        if (!*reason)
            snprintf(reason, sizeof reason, "revert domain %s to version %llu", q->domain,
                     (unsigned long long)q->to_version);
        /* only the metadata part is new; the domain blobs already exist */
        free(b.selector.data);
        b.selector.data = NULL;
        for (int i = 0; i < b.n_domains; i++) {
            free(b.domains[i].data);
            b.domains[i].data = NULL;
        }
        rc = commit_split(r, &b, ver, NULL, 0, q->actor ? q->actor : "",
                          reason, q->set_alias, "revert-domain", &nv, &hist, &err);
    }
    if (!rc && q->set_alias && *q->set_alias && hist.seq) add_pub(rep, hist.alias, hist.to, nv.base_hash);
    bank_split_clear(&b);
    free(joined);
    free(sel.data);
    for (int i = 0; doms && i < nd; i++) free(doms[i].data);
    free(doms);
    free(cur_meta);
    free(old_meta);
    free(new_meta);
    store_version_clear(&cur);
    store_version_clear(&old);
    int out = reply_version(r, rep, MODA__ENVELOPE__BODY_REVERT_DOMAIN_REPLY, &nv, rc, err.msg);
    store_version_clear(&nv);
    return out;
}

/* ---- history, last value, backup ------------------------------------------------------------ */

static int on_history(reg_t *r, const Moda__HistoryRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    store_hist_t *hs = NULL;
    int n = 0, rc = 0;
    if (q->alias && *q->alias) rc = store_name_check(q->alias, "alias", &err);
    if (!rc) rc = store_history(r->store, q->alias, q->limit > LIST_MAX ? LIST_MAX : (int)q->limit, &hs, &n, &err);
    Moda__HistoryReply *h = ar(rep, sizeof *h);
    if (!h) {
        free(hs);
        return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    }
    moda__history_reply__init(h);
    if (!rc) {
        h->entries = ar(rep, (size_t)n * sizeof *h->entries);
        if (!h->entries) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
    }
    for (int i = 0; !rc && i < n; i++) {
        h->entries[i] = mk_entry(rep, &hs[i]);
        if (!h->entries[i]) rc = err_set(&err, ERR_NOMEM, "registry: out of memory");
        else h->n_entries = (size_t)i + 1;
    }
    if (rc) h->n_entries = 0;
    free(hs);
    h->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_HISTORY_REPLY;
    rep->env.history_reply = h;
    return rc;
}

static int on_get_alias(reg_t *r, const Moda__GetAliasRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    reg_pub_t p;
    const char *alias = q->alias && *q->alias ? q->alias : ALIAS_DEFAULT;
    int rc = store_name_check(alias, "alias", &err);
    if (!rc) rc = reg_alias_value(r, alias, &p, &err);
    Moda__GetAliasReply *g = ar(rep, sizeof *g);
    Moda__BankChanged *bc = ar(rep, sizeof *bc);
    if (!g || !bc) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    moda__get_alias_reply__init(g);
    moda__bank_changed__init(bc);
    if (!rc) {
        bc->alias = ar_str(rep, p.alias);
        bc->version = p.version;
        bc->base_hash = ar_str(rep, p.base_hash);
        if (!bc->alias || !bc->base_hash) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
        g->current = bc;
    }
    g->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REPLY;
    rep->env.get_alias_reply = g;
    return rc;
}

static int on_backup(reg_t *r, const Moda__BackupRequest *q, reg_reply_t *rep)
{
    err_t err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = q->dir && *q->dir ? store_backup(r->store, q->dir, &err) : err_set(&err, ERR_INVALID, "backup: no folder");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    Moda__BackupReply *b = ar(rep, sizeof *b);
    if (!b) return reply_error(rep, ERR_NOMEM, "registry: out of memory");
    moda__backup_reply__init(b);
    if (!rc) {
        char path[4200];
        snprintf(path, sizeof path, "%s/data.mdb", q->dir);
        struct stat st;
        if (stat(path, &st) == 0) b->bytes = (uint64_t)st.st_size;
        b->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    }
    b->status = mk_status(rep, rc, err.msg);
    moda__envelope__init(&rep->env);
    rep->env.body_case = MODA__ENVELOPE__BODY_BACKUP_REPLY;
    rep->env.backup_reply = b;
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

int reg_handle(reg_t *r, const Moda__Envelope *env, const msg_part_t *parts, int nparts, reg_reply_t *out)
{
    memset(out, 0, sizeof *out);
    moda__envelope__init(&out->env);
    if (!env) return reply_error(out, ERR_FORMAT, "no envelope");
    /* requests other than put carry no binary parts */
    if (nparts && env->body_case != MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST)
        return reply_error(out, ERR_INVALID, "this request takes no binary parts");
    switch (env->body_case) {
    case MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST:
        if (env->put_version_request) return on_put(r, env->put_version_request, parts, nparts, out);
        break;
    case MODA__ENVELOPE__BODY_GET_VERSION_REQUEST:
        if (env->get_version_request) return on_get(r, env->get_version_request, out);
        break;
    case MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST:
        if (env->list_versions_request) return on_list(r, env->list_versions_request, out);
        break;
    case MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST:
        if (env->set_alias_request) return on_set_alias(r, env->set_alias_request, out);
        break;
    case MODA__ENVELOPE__BODY_ROLLBACK_REQUEST:
        if (env->rollback_request) return on_rollback(r, env->rollback_request, out);
        break;
    case MODA__ENVELOPE__BODY_REVERT_DOMAIN_REQUEST:
        if (env->revert_domain_request) return on_revert_domain(r, env->revert_domain_request, out);
        break;
    case MODA__ENVELOPE__BODY_HISTORY_REQUEST:
        if (env->history_request) return on_history(r, env->history_request, out);
        break;
    case MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST:
        if (env->get_alias_request) return on_get_alias(r, env->get_alias_request, out);
        break;
    case MODA__ENVELOPE__BODY_BACKUP_REQUEST:
        if (env->backup_request) return on_backup(r, env->backup_request, out);
        break;
    default: {
        char m[96];
        snprintf(m, sizeof m, "the registry does not handle %s", msg_body_name(env->body_case));
        return reply_error(out, ERR_UNSUPPORTED, m);
    }
    }
    return reply_error(out, ERR_FORMAT, "request body is missing");
}

int reg_handle_frames(reg_t *r, const msg_part_t *frames, int nframes, reg_reply_t *out)
{
    memset(out, 0, sizeof *out);
    if (nframes < 1) return reply_error(out, ERR_FORMAT, "empty message");
    if (nframes - 1 > MSG_MAX_PARTS) return reply_error(out, ERR_RANGE, "too many binary parts");
    Moda__Envelope *env = moda__envelope__unpack(NULL, frames[0].size, frames[0].data);
    if (!env) return reply_error(out, ERR_FORMAT, "envelope is not valid protobuf");
    int rc;
    const Moda__Header *h = env->header;
    if (!h) rc = reply_error(out, ERR_FORMAT, "envelope has no header");
    else if (h->schema_version < MSG_SCHEMA_MIN || h->schema_version > MSG_SCHEMA_VERSION)
        rc = reply_error(out, ERR_VERSION, "unknown schema version");
    else if (h->n_part_sizes != (size_t)(nframes - 1))
        rc = reply_error(out, ERR_FORMAT, "header declares another number of binary parts");
    else {
        rc = 0;
        for (int i = 1; i < nframes; i++)
            if (h->part_sizes[i - 1] != frames[i].size) rc = ERR_FORMAT;
        if (rc) rc = reply_error(out, ERR_FORMAT, "binary part sizes differ from header.part_sizes");
        else if (env->body_case == MODA__ENVELOPE__BODY__NOT_SET)
            rc = reply_error(out, ERR_UNSUPPORTED, "no request body");
        else rc = reg_handle(r, env, frames + 1, nframes - 1, out);
    }
    /* the reply never points into env: every string was copied into the reply's arena */
    moda__envelope__free_unpacked(env, NULL);
    return rc;
}
