/* wts.c — safetensors-layout weight files: validation at open, lookup, atomic writing
 * (see wts.h and docs/weights.md).
 *
 * Invariants after a successful open: every tensor has a known dtype, 0..WTS_MAX_DIMS
 * non-negative dims, nbytes = prod(shape) * dtype size, its byte range lies inside the
 * data area, ranges do not overlap and cover the data area without holes (the
 * safetensors rule). Each tensor's data is copied to its own 64-byte aligned slot of one
 * block; tensors are listed in the order of their data offsets ("file order").
 */
#include "wts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "sha256.h"

#define WTS_MAX_HEADER ((uint64_t)100 << 20) /* 100 MiB, as the safetensors reference */
#define WTS_ALIGN 64

struct wts {
    int n;
    wts_tensor_t *t;        /* file order */
    const wts_tensor_t **by_name; /* sorted by name */
    char *names;            /* all names, NUL-separated */
    int nmeta;
    char **meta_k, **meta_v;
    void *block;            /* aligned tensor data */
};

static const struct {
    const char *name;
    size_t size;
} g_dtypes[WTS_DTYPE_COUNT] = {
    [WTS_F32] = {"F32", 4}, [WTS_F16] = {"F16", 2}, [WTS_BF16] = {"BF16", 2},
    [WTS_I64] = {"I64", 8}, [WTS_I32] = {"I32", 4}, [WTS_U8] = {"U8", 1},
};

const char *wts_dtype_name(wts_dtype_t d)
{
    return ((unsigned)d < WTS_DTYPE_COUNT) ? g_dtypes[d].name : "?";
}

size_t wts_dtype_size(wts_dtype_t d) { return ((unsigned)d < WTS_DTYPE_COUNT) ? g_dtypes[d].size : 0; }

static int dtype_parse(const char *s, wts_dtype_t *out)
{
    for (int i = 0; i < WTS_DTYPE_COUNT; i++)
        if (s && !strcmp(s, g_dtypes[i].name)) {
            *out = (wts_dtype_t)i;
            return 0;
        }
    return -1;
}

/* nbytes for a shape, or -1 on overflow (limit 2^62 bytes). */
static int64_t shape_bytes(int ndim, const int64_t *shape, size_t esize)
{
    uint64_t n = esize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] && n > ((uint64_t)1 << 62) / (uint64_t)shape[i]) return -1;
        n *= (uint64_t)shape[i];
    }
    return (int64_t)n;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

void wts_destroy(wts_t **w)
{
    if (!w || !*w) return;
    wts_t *x = *w;
    for (int i = 0; i < x->nmeta; i++) {
        free(x->meta_k[i]);
        free(x->meta_v[i]);
    }
    free(x->meta_k);
    free(x->meta_v);
    free(x->t);
    free(x->by_name);
    free(x->names);
    free(x->block);
    free(x);
    *w = NULL;
}

/* An allocation count of at least 1 (malloc(0) may return NULL). */
static size_t cnt1(int n) { return n > 0 ? (size_t)n : 1; }

typedef struct {
    uint64_t begin, end;
    int idx; /* index into the header's tensor list */
} range_t;

static int range_cmp(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

static int name_cmp(const void *a, const void *b)
{
    const wts_tensor_t *x = *(const wts_tensor_t *const *)a, *y = *(const wts_tensor_t *const *)b;
    return strcmp(x->name, y->name);
}

static int parse_meta(wts_t *w, const json_t *m, err_t *err)
{
    if (m->type != JSON_OBJECT) return err_set(err, ERR_FORMAT, "__metadata__ is not an object");
    w->meta_k = calloc(m->len ? m->len : 1, sizeof *w->meta_k);
    w->meta_v = calloc(m->len ? m->len : 1, sizeof *w->meta_v);
    if (!w->meta_k || !w->meta_v) return err_set(err, ERR_NOMEM, "out of memory for metadata");
    for (size_t i = 0; i < m->len; i++) {
        if (m->items[i].type != JSON_STRING)
            return err_set(err, ERR_FORMAT, "__metadata__ value of '%.100s' is not a string", m->keys[i]);
        w->meta_k[w->nmeta] = strdup(m->keys[i]);
        w->meta_v[w->nmeta] = strdup(m->items[i].str);
        w->nmeta++;
        if (!w->meta_k[w->nmeta - 1] || !w->meta_v[w->nmeta - 1])
            return err_set(err, ERR_NOMEM, "out of memory for metadata");
    }
    return 0;
}

/* Parses and validates the header; fills w->t (names, dtype, shape, nbytes), w->names,
 * and for each tensor its data range (ranges[i], in header order). */
static int parse_header(wts_t *w, const char *hdr, size_t hlen, uint64_t data_len, range_t **ranges_out,
                        err_t *err)
{
    err_t jerr = {0};
    json_t *j = json_parse(hdr, hlen, &jerr);
    if (!j) return err_set(err, ERR_FORMAT, "header: %s", jerr.msg);
    int rc = 0;
    range_t *ranges = NULL;
    if (j->type != JSON_OBJECT) {
        rc = err_set(err, ERR_FORMAT, "header is a JSON %s, not an object", json_type_name(j->type));
        goto out;
    }
    size_t names_len = 0;
    int nt = 0;
    for (size_t i = 0; i < j->len; i++) {
        if (!strcmp(j->keys[i], "__metadata__")) continue;
        names_len += strlen(j->keys[i]) + 1;
        nt++;
    }
    w->t = calloc(nt ? (size_t)nt : 1, sizeof *w->t);
    w->names = malloc(names_len ? names_len : 1);
    ranges = calloc(nt ? (size_t)nt : 1, sizeof *ranges);
    if (!w->t || !w->names || !ranges) {
        rc = err_set(err, ERR_NOMEM, "out of memory for %d tensor entries", nt);
        goto out;
    }
    size_t no = 0;
    for (size_t i = 0; i < j->len; i++) {
        const char *name = j->keys[i];
        const json_t *e = &j->items[i];
        if (!strcmp(name, "__metadata__")) {
            if ((rc = parse_meta(w, e, err))) goto out;
            continue;
        }
        if (!*name) {
            rc = err_set(err, ERR_FORMAT, "a tensor has an empty name");
            goto out;
        }
        if (e->type != JSON_OBJECT) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': entry is a JSON %s, not an object", name,
                         json_type_name(e->type));
            goto out;
        }
        for (size_t k = 0; k < e->len; k++)
            if (strcmp(e->keys[k], "dtype") && strcmp(e->keys[k], "shape") && strcmp(e->keys[k], "data_offsets")) {
                rc = err_set(err, ERR_FORMAT, "tensor '%.200s': unknown field '%.50s'", name, e->keys[k]);
                goto out;
            }
        wts_tensor_t *t = &w->t[w->n];
        const char *ds = json_str(json_get(e, "dtype"));
        if (!ds) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': missing or non-string dtype", name);
            goto out;
        }
        if (dtype_parse(ds, &t->dtype)) {
            rc = err_set(err, ERR_UNSUPPORTED, "tensor '%.200s': unsupported dtype '%.20s'", name, ds);
            goto out;
        }
        const json_t *sh = json_get(e, "shape");
        if (!sh || sh->type != JSON_ARRAY) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': missing or non-array shape", name);
            goto out;
        }
        if (sh->len > WTS_MAX_DIMS) {
            rc = err_set(err, ERR_RANGE, "tensor '%.200s': %zu dims, at most %d supported", name, sh->len,
                         WTS_MAX_DIMS);
            goto out;
        }
        t->ndim = (int)sh->len;
        for (size_t d = 0; d < sh->len; d++) {
            const json_t *v = &sh->items[d];
            if (v->type != JSON_NUMBER || !v->is_int || v->i < 0) {
                rc = err_set(err, ERR_FORMAT, "tensor '%.200s': shape[%zu] is not a non-negative integer", name, d);
                goto out;
            }
            t->shape[d] = v->i;
        }
        int64_t nb = shape_bytes(t->ndim, t->shape, g_dtypes[t->dtype].size);
        if (nb < 0) {
            rc = err_set(err, ERR_RANGE, "tensor '%.200s': shape is too large", name);
            goto out;
        }
        t->nbytes = (size_t)nb;
        const json_t *off = json_get(e, "data_offsets");
        int64_t b = -1, en = -1;
        if (!off || off->type != JSON_ARRAY || off->len != 2 || json_get_int64(&off->items[0], &b, "", NULL) ||
            json_get_int64(&off->items[1], &en, "", NULL) || b < 0 || en < b) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': data_offsets must be [begin, end] with 0 <= begin <= end",
                         name);
            goto out;
        }
        if ((uint64_t)en > data_len) {
            rc = err_set(err, ERR_FORMAT,
                         "tensor '%.200s': data_offsets [%lld, %lld] run past the data area of %llu bytes "
                         "(truncated file?)",
                         name, (long long)b, (long long)en, (unsigned long long)data_len);
            goto out;
        }
        if ((uint64_t)(en - b) != t->nbytes) {
            char s[128];
            shape_str(s, sizeof s, t->ndim, t->shape);
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': %lld data bytes, but %s %s needs %zu", name,
                         (long long)(en - b), g_dtypes[t->dtype].name, s, t->nbytes);
            goto out;
        }
        size_t nl = strlen(name) + 1;
        memcpy(w->names + no, name, nl);
        t->name = w->names + no;
        no += nl;
        ranges[w->n] = (range_t){(uint64_t)b, (uint64_t)en, w->n};
        w->n++;
    }
    /* no overlaps, no holes, nothing after the last tensor */
    range_t *sorted = malloc(cnt1(w->n) * sizeof *sorted);
    if (!sorted) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(sorted, ranges, (size_t)w->n * sizeof *sorted);
    qsort(sorted, (size_t)w->n, sizeof *sorted, range_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < w->n; i++) {
        if (sorted[i].begin < pos) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': data_offsets [%llu, %llu] overlap another tensor",
                         w->t[sorted[i].idx].name, (unsigned long long)sorted[i].begin,
                         (unsigned long long)sorted[i].end);
            break;
        }
        if (sorted[i].begin > pos) {
            rc = err_set(err, ERR_FORMAT, "tensor '%.200s': %llu unused bytes before its data (hole in the data area)",
                         w->t[sorted[i].idx].name, (unsigned long long)(sorted[i].begin - pos));
            break;
        }
        pos = sorted[i].end;
    }
    if (!rc && pos != data_len)
        rc = err_set(err, ERR_FORMAT, "%llu bytes after the last tensor's data (file length does not match header)",
                     (unsigned long long)(data_len - pos));
    if (!rc) { /* reorder tensors to file order */
        wts_tensor_t *t2 = malloc(cnt1(w->n) * sizeof *t2);
        range_t *r2 = malloc(cnt1(w->n) * sizeof *r2);
        if (!t2 || !r2) {
            free(t2);
            free(r2);
            rc = err_set(err, ERR_NOMEM, "out of memory");
        } else {
            for (int i = 0; i < w->n; i++) {
                t2[i] = w->t[sorted[i].idx];
                r2[i] = sorted[i];
            }
            free(w->t);
            w->t = t2;
            free(ranges);
            ranges = r2;
        }
    }
    free(sorted);
out:
    json_free(&j);
    if (rc) free(ranges);
    else *ranges_out = ranges;
    return rc;
}

/* Allocates the aligned block and the name index; tensor i gets slot offs[i]. */
static int layout(wts_t *w, size_t **offs_out, err_t *err)
{
    size_t total = 0;
    size_t *offs = malloc(cnt1(w->n) * sizeof *offs);
    if (!offs) return err_set(err, ERR_NOMEM, "out of memory");
    for (int i = 0; i < w->n; i++) {
        offs[i] = total;
        total += (w->t[i].nbytes + WTS_ALIGN - 1) / WTS_ALIGN * WTS_ALIGN;
    }
    if (posix_memalign(&w->block, WTS_ALIGN, total ? total : WTS_ALIGN)) {
        w->block = NULL;
        free(offs);
        return err_set(err, ERR_NOMEM, "out of memory for %zu bytes of tensor data", total);
    }
    for (int i = 0; i < w->n; i++) w->t[i].data = (char *)w->block + offs[i];
    w->by_name = malloc(cnt1(w->n) * sizeof *w->by_name);
    if (!w->by_name) {
        free(offs);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < w->n; i++) w->by_name[i] = &w->t[i];
    qsort(w->by_name, (size_t)w->n, sizeof *w->by_name, name_cmp);
    *offs_out = offs;
    return 0;
}

static uint64_t rd_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int check_hlen(uint64_t hlen, uint64_t file_len, err_t *err)
{
    if (file_len < 8) return err_set(err, ERR_FORMAT, "file of %llu bytes is too short for a header", (unsigned long long)file_len);
    if (hlen > WTS_MAX_HEADER)
        return err_set(err, ERR_FORMAT, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
                       (unsigned long long)WTS_MAX_HEADER);
    if (hlen > file_len - 8)
        return err_set(err, ERR_FORMAT, "header length %llu runs past the end of the %llu-byte file",
                       (unsigned long long)hlen, (unsigned long long)file_len);
    if (hlen < 2) return err_set(err, ERR_FORMAT, "header length %llu is too short", (unsigned long long)hlen);
    return 0;
}

wts_t *wts_from_memory(const void *buf, size_t len, err_t *err)
{
    const unsigned char *p = buf;
    if (!buf && len) {
        err_set(err, ERR_INVALID, "wts_from_memory: NULL buffer");
        return NULL;
    }
    if (check_hlen(len >= 8 ? rd_u64le(p) : 0, len, err)) return NULL;
    uint64_t hlen = rd_u64le(p);
    wts_t *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    range_t *ranges = NULL;
    size_t *offs = NULL;
    if (parse_header(w, (const char *)p + 8, (size_t)hlen, len - 8 - hlen, &ranges, err) || layout(w, &offs, err)) {
        free(ranges);
        wts_destroy(&w);
        return NULL;
    }
    const unsigned char *data = p + 8 + hlen;
    for (int i = 0; i < w->n; i++) memcpy((char *)w->block + offs[i], data + ranges[i].begin, w->t[i].nbytes);
    free(ranges);
    free(offs);
    return w;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -errno : -EIO;
        p += r, n -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

wts_t *wts_open(const char *path, err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_errno(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, errno, "cannot open weights file '%s'", path);
        return NULL;
    }
    struct stat st;
    wts_t *w = NULL;
    char *hdr = NULL;
    range_t *ranges = NULL;
    size_t *offs = NULL;
    unsigned char lenb[8];
    int rc;
    if (fstat(fd, &st)) {
        err_errno(err, ERR_IO, errno, "cannot stat '%s'", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, ERR_FORMAT, "'%s' is not a regular file", path);
        goto fail;
    }
    uint64_t flen = (uint64_t)st.st_size;
    if (flen >= 8 && (rc = read_full(fd, lenb, 8, 0))) {
        err_errno(err, ERR_IO, -rc, "reading '%s'", path);
        goto fail;
    }
    if (check_hlen(flen >= 8 ? rd_u64le(lenb) : 0, flen, err)) goto fail;
    uint64_t hlen = rd_u64le(lenb);
    hdr = malloc((size_t)hlen);
    w = calloc(1, sizeof *w);
    if (!hdr || !w) {
        err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = read_full(fd, hdr, (size_t)hlen, 8))) {
        err_errno(err, ERR_IO, -rc, "reading the header of '%s'", path);
        goto fail;
    }
    if (parse_header(w, hdr, (size_t)hlen, flen - 8 - hlen, &ranges, err) || layout(w, &offs, err)) goto fail;
    for (int i = 0; i < w->n; i++) {
        if ((rc = read_full(fd, (char *)w->block + offs[i], w->t[i].nbytes, 8 + hlen + ranges[i].begin))) {
            err_errno(err, ERR_IO, -rc, "reading tensor '%s' of '%s'", w->t[i].name, path);
            goto fail;
        }
    }
    free(hdr);
    free(ranges);
    free(offs);
    close(fd);
    return w;
fail:
    if (err && err->code != ERR_IO && err->code != ERR_NOMEM) err_wrap(err, "weights file '%s'", path);
    free(hdr);
    free(ranges);
    free(offs);
    wts_destroy(&w);
    close(fd);
    return NULL;
}

int wts_count(const wts_t *w) { return w ? w->n : 0; }

const wts_tensor_t *wts_at(const wts_t *w, int i) { return (w && i >= 0 && i < w->n) ? &w->t[i] : NULL; }

const wts_tensor_t *wts_find(const wts_t *w, const char *name)
{
    if (!w || !name) return NULL;
    int lo = 0, hi = w->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(w->by_name[mid]->name, name);
        if (!c) return w->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *wts_meta(const wts_t *w, const char *key)
{
    if (!w || !key) return NULL;
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta_k[i], key)) return w->meta_v[i];
    return NULL;
}

const float *wts_f32(const wts_t *w, const char *name, err_t *err, int ndim, ...)
{
    int64_t want[WTS_MAX_DIMS];
    if (ndim < 0 || ndim > WTS_MAX_DIMS) {
        err_set(err, ERR_INVALID, "tensor '%s': bad expected ndim %d", name, ndim);
        return NULL;
    }
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int);
    va_end(ap);
    const wts_tensor_t *t = wts_find(w, name);
    if (!t) {
        err_set(err, ERR_NOTFOUND, "tensor '%s': not in the weights file", name);
        return NULL;
    }
    if (t->dtype != WTS_F32) {
        err_set(err, ERR_FORMAT, "tensor '%s': expected dtype F32, file has %s", name, wts_dtype_name(t->dtype));
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == want[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, ndim, want);
        shape_str(b, sizeof b, t->ndim, t->shape);
        err_set(err, ERR_FORMAT, "tensor '%s': expected shape %s, file has %s", name, a, b);
        return NULL;
    }
    return t->data;
}

static void put_u64le(sha256_t *s, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    sha256_update(s, b, 8);
}

void wts_content_hash(const wts_t *w, char out[65])
{
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, "moda-wts-content-v1", 20); /* includes the NUL: a domain separator */
    for (int i = 0; w && i < w->n; i++) {
        const wts_tensor_t *t = w->by_name[i];
        sha256_update(&s, t->name, strlen(t->name) + 1);
        const char *dn = wts_dtype_name(t->dtype);
        sha256_update(&s, dn, strlen(dn) + 1);
        put_u64le(&s, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) put_u64le(&s, (uint64_t)t->shape[d]);
        put_u64le(&s, (uint64_t)t->nbytes);
        sha256_update(&s, t->data, t->nbytes);
    }
    uint8_t dg[32];
    sha256_final(&s, dg);
    sha256_hex(dg, out);
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct {
    char *name;
    wts_dtype_t dtype;
    int ndim;
    int64_t shape[WTS_MAX_DIMS];
    size_t nbytes;
    void *data;
} wentry_t;

struct wts_writer {
    wentry_t *e;
    int n, cap;
    char **mk, **mv;
    int nm, mcap;
};

wts_writer_t *wts_writer_new(void) { return calloc(1, sizeof(wts_writer_t)); }

void wts_writer_destroy(wts_writer_t **wr)
{
    if (!wr || !*wr) return;
    wts_writer_t *x = *wr;
    for (int i = 0; i < x->n; i++) {
        free(x->e[i].name);
        free(x->e[i].data);
    }
    for (int i = 0; i < x->nm; i++) {
        free(x->mk[i]);
        free(x->mv[i]);
    }
    free(x->e);
    free(x->mk);
    free(x->mv);
    free(x);
    *wr = NULL;
}

int wts_writer_add(wts_writer_t *wr, const char *name, wts_dtype_t dtype, int ndim, const int64_t *shape,
                   const void *data, err_t *err)
{
    if (!wr || !name || !*name || !strcmp(name, "__metadata__"))
        return err_set(err, ERR_INVALID, "wts_writer_add: bad tensor name '%s'", name ? name : "(null)");
    if ((unsigned)dtype >= WTS_DTYPE_COUNT) return err_set(err, ERR_INVALID, "tensor '%s': bad dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > WTS_MAX_DIMS || (ndim && !shape))
        return err_set(err, ERR_INVALID, "tensor '%s': bad ndim %d", name, ndim);
    int64_t nb = shape_bytes(ndim, shape, g_dtypes[dtype].size);
    if (nb < 0) return err_set(err, ERR_INVALID, "tensor '%s': negative or too large shape", name);
    if (nb && !data) return err_set(err, ERR_INVALID, "tensor '%s': NULL data", name);
    for (int i = 0; i < wr->n; i++)
        if (!strcmp(wr->e[i].name, name)) return err_set(err, ERR_EXISTS, "tensor '%s': added twice", name);
    if (wr->n == wr->cap) {
        int nc = wr->cap ? wr->cap * 2 : 64;
        wentry_t *e = realloc(wr->e, (size_t)nc * sizeof *e);
        if (!e) return err_set(err, ERR_NOMEM, "out of memory");
        wr->e = e;
        wr->cap = nc;
    }
    wentry_t *e = &wr->e[wr->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = malloc(nb ? (size_t)nb : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return err_set(err, ERR_NOMEM, "tensor '%s': out of memory for %lld bytes", name, (long long)nb);
    }
    if (nb) memcpy(e->data, data, (size_t)nb);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = (size_t)nb;
    wr->n++;
    return 0;
}

int wts_writer_set_meta(wts_writer_t *wr, const char *key, const char *value, err_t *err)
{
    if (!wr || !key || !value) return err_set(err, ERR_INVALID, "wts_writer_set_meta: NULL argument");
    for (int i = 0; i < wr->nm; i++)
        if (!strcmp(wr->mk[i], key)) {
            char *v = strdup(value);
            if (!v) return err_set(err, ERR_NOMEM, "out of memory");
            free(wr->mv[i]);
            wr->mv[i] = v;
            return 0;
        }
    if (wr->nm == wr->mcap) {
        int nc = wr->mcap ? wr->mcap * 2 : 8;
        char **a = realloc(wr->mk, (size_t)nc * sizeof *a);
        if (!a) return err_set(err, ERR_NOMEM, "out of memory");
        wr->mk = a;
        char **b = realloc(wr->mv, (size_t)nc * sizeof *b);
        if (!b) return err_set(err, ERR_NOMEM, "out of memory");
        wr->mv = b;
        wr->mcap = nc;
    }
    wr->mk[wr->nm] = strdup(key);
    wr->mv[wr->nm] = strdup(value);
    if (!wr->mk[wr->nm] || !wr->mv[wr->nm]) {
        free(wr->mk[wr->nm]);
        free(wr->mv[wr->nm]);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    wr->nm++;
    return 0;
}

/* Header JSON padded with spaces so that 8 + header length is a multiple of 8. */
static char *build_header(wts_writer_t *wr, size_t *hlen, err_t *err)
{
    json_writer_t jw;
    json_w_init(&jw);
    json_w_begin_obj(&jw);
    if (wr->nm) {
        json_w_key(&jw, "__metadata__");
        json_w_begin_obj(&jw);
        for (int i = 0; i < wr->nm; i++) {
            json_w_key(&jw, wr->mk[i]);
            json_w_string(&jw, wr->mv[i]);
        }
        json_w_end_obj(&jw);
    }
    uint64_t off = 0;
    for (int i = 0; i < wr->n; i++) {
        const wentry_t *e = &wr->e[i];
        json_w_key(&jw, e->name);
        json_w_begin_obj(&jw);
        json_w_key(&jw, "dtype");
        json_w_string(&jw, g_dtypes[e->dtype].name);
        json_w_key(&jw, "shape");
        json_w_begin_arr(&jw);
        for (int d = 0; d < e->ndim; d++) json_w_int(&jw, e->shape[d]);
        json_w_end_arr(&jw);
        json_w_key(&jw, "data_offsets");
        json_w_begin_arr(&jw);
        json_w_int(&jw, (int64_t)off);
        json_w_int(&jw, (int64_t)(off + e->nbytes));
        json_w_end_arr(&jw);
        json_w_end_obj(&jw);
        off += e->nbytes;
    }
    json_w_end_obj(&jw);
    size_t n;
    char *h = json_w_finish(&jw, &n, err);
    if (!h) {
        err_wrap(err, "building the weights header");
        return NULL;
    }
    size_t padded = (n + 7) / 8 * 8; /* trailing spaces are whitespace after the JSON value */
    char *hp = realloc(h, padded + 1);
    if (!hp) {
        free(h);
        err_set(err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    memset(hp + n, ' ', padded - n);
    hp[padded] = 0;
    *hlen = padded;
    return hp;
}

int wts_writer_to_memory(wts_writer_t *wr, void **out, size_t *len, err_t *err)
{
    if (!wr || !out || !len) return err_set(err, ERR_INVALID, "wts_writer_to_memory: NULL argument");
    size_t hlen;
    char *h = build_header(wr, &hlen, err);
    if (!h) return err ? err->code : ERR_NOMEM;
    size_t total = 8 + hlen;
    for (int i = 0; i < wr->n; i++) total += wr->e[i].nbytes;
    unsigned char *b = malloc(total);
    if (!b) {
        free(h);
        return err_set(err, ERR_NOMEM, "out of memory for %zu bytes", total);
    }
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, h, hlen);
    size_t o = 8 + hlen;
    for (int i = 0; i < wr->n; i++) {
        memcpy(b + o, wr->e[i].data, wr->e[i].nbytes);
        o += wr->e[i].nbytes;
    }
    free(h);
    *out = b;
    *len = total;
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? errno : EIO;
        p += r, n -= (size_t)r;
    }
    return 0;
}

int wts_writer_save(wts_writer_t *wr, const char *path, err_t *err)
{
    if (!wr || !path) return err_set(err, ERR_INVALID, "wts_writer_save: NULL argument");
    size_t hlen;
    char *h = build_header(wr, &hlen, err);
    if (!h) return err ? err->code : ERR_NOMEM;
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 32);
    if (!tmp) {
        free(h);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = err_errno(err, ERR_IO, errno, "cannot create '%s'", tmp);
        free(h);
        free(tmp);
        return rc;
    }
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int e = write_all(fd, lb, 8);
    if (!e) e = write_all(fd, h, hlen);
    for (int i = 0; !e && i < wr->n; i++) e = write_all(fd, wr->e[i].data, wr->e[i].nbytes);
    if (!e && fsync(fd)) e = errno;
    if (close(fd) && !e) e = errno;
    free(h);
    if (e) {
        unlink(tmp);
        free(tmp);
        return err_errno(err, ERR_IO, e, "writing '%s'", path);
    }
    if (rename(tmp, path)) {
        int rc = err_errno(err, ERR_IO, errno, "renaming '%s' to '%s'", tmp, path);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    /* make the rename durable: fsync the directory (best effort) */
    char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
        int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return 0;
}
