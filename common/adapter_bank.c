/* adapter_bank.c — adapter banks in memory <-> canonical bank files (adapter_bank.h).
 *
 * Loading validates with bank_split (layout, metadata, names, replay pairs) before reading
 * anything, then checks each domain's adapter tensors against the adapter.h table. Saving
 * builds the file with wts_writer and canonicalises it with bank_canonicalise.
 */
#include "adapter_bank.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bank.h"
#include "json.h"
#include "wts.h"

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > BANK_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static int hex64_ok(const char *s)
{
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

abank_t *abank_new(const char *base_model, err_t *err)
{
    if (!hex64_ok(base_model)) {
        err_set(err, ERR_INVALID, "abank_new: base model hash must be 64 lowercase hex digits");
        return NULL;
    }
    abank_t *b = calloc(1, sizeof *b);
    if (!b) {
        err_set(err, ERR_NOMEM, "abank_new: out of memory");
        return NULL;
    }
    snprintf(b->base_model, sizeof b->base_model, "%s", base_model);
    return b;
}

static void blob_free(abank_blob_t *x)
{
    free(x->data);
    x->data = NULL;
    x->size = 0;
}

static void domain_clear(abank_domain_t *d)
{
    adapter_destroy(&d->adapter);
    for (int i = 0; i < d->n_replay; i++) {
        blob_free(&d->replay[i].image);
        blob_free(&d->replay[i].mask);
    }
    free(d->replay);
    memset(d, 0, sizeof *d);
}

void abank_clear_selector(abank_t *b)
{
    for (int i = 0; i < b->n_selector; i++) free(b->selector[i].data);
    free(b->selector);
    b->selector = NULL;
    b->n_selector = 0;
}

void abank_destroy(abank_t **bp)
{
    if (!bp || !*bp) return;
    abank_t *b = *bp;
    for (int i = 0; i < b->n_domains; i++) domain_clear(&b->domains[i]);
    free(b->domains);
    abank_clear_selector(b);
    free(b);
    *bp = NULL;
}

abank_domain_t *abank_find(const abank_t *b, const char *name)
{
    for (int i = 0; i < b->n_domains; i++)
        if (!strcmp(b->domains[i].name, name)) return &b->domains[i];
    return NULL;
}

const abank_tensor_t *abank_selector(const abank_t *b, const char *name)
{
    for (int i = 0; i < b->n_selector; i++)
        if (!strcmp(b->selector[i].name, name)) return &b->selector[i];
    return NULL;
}

static int blob_copy(abank_blob_t *dst, const void *src, size_t n, err_t *err)
{
    dst->data = malloc(n ? n : 1);
    if (!dst->data) return err_set(err, ERR_NOMEM, "bank: out of memory");
    memcpy(dst->data, src, n);
    dst->size = n;
    return 0;
}

static void now_iso(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int dom_cmp(const void *a, const void *b)
{
    return strcmp(((const abank_domain_t *)a)->name, ((const abank_domain_t *)b)->name);
}

int abank_put_domain(abank_t *b, const char *name, adapter_t **adapter,
                     const abank_replay_t *replay, int n_replay, const abank_metric_t *metrics,
                     int n_metrics, const char *created, err_t *err)
{
    if (!name || !name_ok(name))
        return err_set(err, ERR_INVALID, "domain name '%s' must match [a-z0-9_-]{1,64}",
                       name ? name : "(null)");
    if (!adapter || !*adapter) return err_set(err, ERR_INVALID, "abank_put_domain: no adapter");
    if (b->early_c && (*adapter)->early_c != b->early_c)
        return err_set(err, ERR_INVALID, "domain '%s': adapter has %d early channels, bank %d",
                       name, (*adapter)->early_c, b->early_c);
    if (n_metrics < 0 || n_metrics > ABANK_MAX_METRICS || n_replay < 0)
        return err_set(err, ERR_RANGE, "domain '%s': %d metrics (max %d)", name, n_metrics,
                       ABANK_MAX_METRICS);
    abank_domain_t nd = {0};
    snprintf(nd.name, sizeof nd.name, "%s", name);
    if (created && *created) snprintf(nd.created, sizeof nd.created, "%s", created);
    else now_iso(nd.created, sizeof nd.created);
    nd.n_metrics = n_metrics;
    for (int i = 0; i < n_metrics; i++) nd.metrics[i] = metrics[i];
    if (n_replay) {
        nd.replay = calloc((size_t)n_replay, sizeof *nd.replay);
        if (!nd.replay) return err_set(err, ERR_NOMEM, "bank: out of memory");
        nd.n_replay = n_replay;
        for (int i = 0; i < n_replay; i++) {
            int rc = blob_copy(&nd.replay[i].image, replay[i].image.data, replay[i].image.size, err);
            if (!rc) rc = blob_copy(&nd.replay[i].mask, replay[i].mask.data, replay[i].mask.size, err);
            if (rc) {
                domain_clear(&nd);
                return rc;
            }
        }
    }
    nd.adapter = *adapter;
    abank_domain_t *old = abank_find(b, name);
    if (old) {
        domain_clear(old);
        *old = nd;
    } else {
        abank_domain_t *nds = realloc(b->domains, sizeof *nds * (size_t)(b->n_domains + 1));
        if (!nds) {
            nd.adapter = NULL;
            domain_clear(&nd);
            return err_set(err, ERR_NOMEM, "bank: out of memory");
        }
        b->domains = nds;
        b->domains[b->n_domains++] = nd;
        qsort(b->domains, (size_t)b->n_domains, sizeof *b->domains, dom_cmp);
    }
    b->early_c = (*adapter)->early_c;
    *adapter = NULL;
    return 0;
}

int abank_put_selector(abank_t *b, const char *name, int ndim, const int64_t *shape,
                       const float *data, err_t *err)
{
    if (!name || !*name || strlen(name) >= sizeof b->selector[0].name || ndim < 1 || ndim > 4)
        return err_set(err, ERR_INVALID, "selector tensor '%s': bad name or rank",
                       name ? name : "(null)");
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1) return err_set(err, ERR_INVALID, "selector tensor '%s': bad shape", name);
        n *= (size_t)shape[i];
    }
    float *copy = malloc(sizeof(float) * n);
    if (!copy) return err_set(err, ERR_NOMEM, "bank: out of memory");
    memcpy(copy, data, sizeof(float) * n);
    abank_tensor_t *t = (abank_tensor_t *)abank_selector(b, name);
    if (!t) {
        abank_tensor_t *ns = realloc(b->selector, sizeof *ns * (size_t)(b->n_selector + 1));
        if (!ns) {
            free(copy);
            return err_set(err, ERR_NOMEM, "bank: out of memory");
        }
        b->selector = ns;
        t = &b->selector[b->n_selector++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    free(t->data);
    t->data = copy;
    t->ndim = ndim;
    t->n = n;
    for (int i = 0; i < 4; i++) t->shape[i] = i < ndim ? shape[i] : 0;
    return 0;
}

/* ---- save ---------------------------------------------------------------------------------- */

int abank_to_memory(const abank_t *b, void **out, size_t *len, err_t *err)
{
    *out = NULL;
    *len = 0;
    if (!b->n_domains) return err_set(err, ERR_INVALID, "bank has no domain to save");
    wts_writer_t *wr = wts_writer_new();
    if (!wr) return err_set(err, ERR_NOMEM, "bank: out of memory");
    int rc = 0;
    char nm[512];
    json_writer_t jw;
    json_w_init(&jw);
    json_w_begin_arr(&jw);
    for (int i = 0; !rc && i < b->n_domains; i++) {
        const abank_domain_t *d = &b->domains[i];
        json_w_begin_obj(&jw);
        json_w_key(&jw, "name");
        json_w_string(&jw, d->name);
        if (d->created[0]) {
            json_w_key(&jw, "created");
            json_w_string(&jw, d->created);
        }
        json_w_key(&jw, "metrics");
        json_w_begin_obj(&jw);
        for (int m = 0; m < d->n_metrics; m++) {
            json_w_key(&jw, d->metrics[m].name);
            json_w_double(&jw, d->metrics[m].value);
        }
        json_w_end_obj(&jw);
        json_w_end_obj(&jw);
        const adapter_t *a = d->adapter;
        for (int p = 0; !rc && p < ADP_NPARAM; p++) {
            snprintf(nm, sizeof nm, "domain.%s.%s", d->name, a->params[p].name);
            rc = wts_writer_add(wr, nm, WTS_F32, a->params[p].ndim, a->params[p].shape,
                                a->data + a->params[p].off, err);
        }
        for (int r = 0; !rc && r < d->n_replay; r++) {
            int64_t s1 = (int64_t)d->replay[r].image.size, s2 = (int64_t)d->replay[r].mask.size;
            snprintf(nm, sizeof nm, "domain.%s.replay.%d.image", d->name, r);
            rc = wts_writer_add(wr, nm, WTS_U8, 1, &s1, d->replay[r].image.data, err);
            snprintf(nm, sizeof nm, "domain.%s.replay.%d.mask", d->name, r);
            if (!rc) rc = wts_writer_add(wr, nm, WTS_U8, 1, &s2, d->replay[r].mask.data, err);
        }
    }
    json_w_end_arr(&jw);
    for (int i = 0; !rc && i < b->n_selector; i++) {
        snprintf(nm, sizeof nm, "selector.%s", b->selector[i].name);
        rc = wts_writer_add(wr, nm, WTS_F32, b->selector[i].ndim, b->selector[i].shape,
                            b->selector[i].data, err);
    }
    size_t jl;
    char *doms = rc ? NULL : json_w_finish(&jw, &jl, err);
    if (!rc && !doms) rc = err && err->code ? err->code : ERR_NOMEM;
    if (rc) json_w_free(&jw);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.kind", BANK_KIND, err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.bank_format", BANK_FORMAT, err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.base_model", b->base_model, err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.domains", doms, err);
    free(doms);
    void *raw = NULL;
    size_t rl = 0;
    if (!rc) rc = wts_writer_to_memory(wr, &raw, &rl, err);
    wts_writer_destroy(&wr);
    if (!rc) rc = bank_canonicalise(raw, rl, out, len, err);
    free(raw);
    return rc;
}

int abank_save(const abank_t *b, const char *path, err_t *err)
{
    void *buf;
    size_t len;
    int rc = abank_to_memory(b, &buf, &len, err);
    if (rc) return rc;
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 32);
    if (!tmp) {
        free(buf);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = err_errno(err, ERR_IO, errno, "cannot create '%s'", tmp);
    } else {
        size_t put = fwrite(buf, 1, len, f);
        int e = (put != len || fflush(f)) ? errno : 0;
        if (!e && fsync(fileno(f))) e = errno;
        if (fclose(f) && !e) e = errno;
        if (!e && rename(tmp, path)) e = errno;
        if (e) {
            unlink(tmp);
            rc = err_errno(err, ERR_IO, e, "writing bank '%s'", path);
        }
    }
    free(tmp);
    free(buf);
    return rc;
}

/* ---- load ----------------------------------------------------------------------------------- */

abank_t *abank_from_memory(const void *buf, size_t len, const char *what, const char *expect_base,
                           int expect_early_c, err_t *err)
{
    if (!what) what = "bank";
    bank_split_t sp = {0};
    int rc = bank_split(buf, len, &sp, err);
    bank_split_clear(&sp);
    if (rc) {
        err_wrap(err, "bank '%s' is not a valid adapter bank", what);
        return NULL;
    }
    wts_t *w = wts_from_memory(buf, len, err);
    if (!w) {
        err_wrap(err, "bank '%s'", what);
        return NULL;
    }
    abank_t *b = NULL;
    json_t *doms = NULL;
    const char *base = wts_meta(w, "moda.base_model");
    if (expect_base && (!base || strcmp(base, expect_base))) {
        err_set(err, ERR_VERSION,
                "bank '%s' was trained for base model %.12s…, but the loaded model is %.12s… "
                "(use the --model the bank was made with)", what, base ? base : "?", expect_base);
        goto fail;
    }
    b = abank_new(base, err);
    if (!b) goto fail;
    const char *dj = wts_meta(w, "moda.domains");
    doms = json_parse(dj, strlen(dj), err);
    if (!doms) goto fail;
    for (size_t i = 0; i < json_len(doms); i++) {
        const json_t *e = json_at(doms, i);
        const char *name = json_str(json_get(e, "name"));
        char nm[512];
        snprintf(nm, sizeof nm, "domain.%s.compress.0.weight", name);
        const wts_tensor_t *t = wts_find(w, nm);
        if (!t || t->ndim != 4) {
            err_set(err, ERR_FORMAT, "bank '%s': domain '%s' lacks tensor '%s'", what, name, nm);
            goto fail;
        }
        int ec = (int)t->shape[0];
        if (expect_early_c && ec != expect_early_c) {
            err_set(err, ERR_VERSION, "bank '%s': domain '%s' has %d early channels, the model %d",
                    what, name, ec, expect_early_c);
            goto fail;
        }
        adapter_t *a = adapter_new(ec, err);
        if (!a) goto fail;
        for (int p = 0; p < ADP_NPARAM; p++) {
            const adp_param_t *pp = &a->params[p];
            snprintf(nm, sizeof nm, "domain.%s.%s", name, pp->name);
            const wts_tensor_t *tt = wts_find(w, nm);
            int ok = tt && tt->dtype == WTS_F32 && tt->ndim == pp->ndim;
            for (int k = 0; ok && k < pp->ndim; k++) ok = tt->shape[k] == pp->shape[k];
            if (!ok) {
                err_set(err, ERR_FORMAT, "bank '%s': domain '%s': tensor '%s' is %s", what, name, nm,
                        tt ? "not F32 of the adapter's shape" : "missing");
                adapter_destroy(&a);
                goto fail;
            }
            memcpy(a->data + pp->off, tt->data, tt->nbytes);
        }
        int nr = 0;
        for (;; nr++) {
            snprintf(nm, sizeof nm, "domain.%s.replay.%d.image", name, nr);
            if (!wts_find(w, nm)) break;
        }
        abank_replay_t *rp = nr ? calloc((size_t)nr, sizeof *rp) : NULL;
        for (int r = 0; r < nr && rp; r++) {
            snprintf(nm, sizeof nm, "domain.%s.replay.%d.image", name, r);
            const wts_tensor_t *ti = wts_find(w, nm);
            snprintf(nm, sizeof nm, "domain.%s.replay.%d.mask", name, r);
            const wts_tensor_t *tm = wts_find(w, nm);
            rp[r].image.data = (uint8_t *)ti->data; /* borrowed: copied by put_domain */
            rp[r].image.size = ti->nbytes;
            rp[r].mask.data = (uint8_t *)tm->data;
            rp[r].mask.size = tm->nbytes;
        }
        abank_metric_t mets[ABANK_MAX_METRICS];
        int nm_ = 0;
        const json_t *mo = json_get(e, "metrics");
        for (size_t k = 0; k < json_len(mo) && nm_ < ABANK_MAX_METRICS; k++) {
            snprintf(mets[nm_].name, sizeof mets[nm_].name, "%s", mo->keys[k]);
            mets[nm_].value = json_at(mo, k)->num;
            nm_++;
        }
        const json_t *cr = json_get(e, "created");
        char created[40] = "";
        if (cr && cr->type == JSON_STRING) snprintf(created, sizeof created, "%s", cr->str);
        else if (cr) snprintf(created, sizeof created, "%.17g", cr->num);
        rc = (nr && !rp) ? err_set(err, ERR_NOMEM, "bank: out of memory")
                         : abank_put_domain(b, name, &a, rp, nr, mets, nm_, created, err);
        free(rp);
        adapter_destroy(&a);
        if (rc) goto fail;
    }
    for (int i = 0; i < wts_count(w); i++) {
        const wts_tensor_t *t = wts_at(w, i);
        if (strncmp(t->name, "selector.", 9)) continue;
        if (t->dtype != WTS_F32 || t->ndim < 1 || t->ndim > 4) {
            err_set(err, ERR_FORMAT, "bank '%s': tensor '%s' is not an F32 tensor of rank 1..4",
                    what, t->name);
            goto fail;
        }
        if (abank_put_selector(b, t->name + 9, t->ndim, t->shape, (const float *)t->data, err))
            goto fail;
    }
    json_free(&doms);
    wts_destroy(&w);
    return b;
fail:
    json_free(&doms);
    abank_destroy(&b);
    wts_destroy(&w);
    return NULL;
}

abank_t *abank_load(const char *path, const char *expect_base, int expect_early_c, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_errno(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, errno, "cannot open bank '%s'", path);
        return NULL;
    }
    void *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = malloc(n ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        err_set(err, ERR_IO, "cannot read bank '%s'", path);
        return NULL;
    }
    abank_t *b = abank_from_memory(buf, (size_t)n, path, expect_base, expect_early_c, err);
    free(buf);
    return b;
}
