/* pth.c — torch.save checkpoint reader: zip directory (stored entries, zip64), a minimal
 * pickle VM for state dicts, tensor materialisation (offset + strides, dtype conversion)
 * and the SAM/MobileSAM conversion to the native weights file.
 *
 * Invariants: the file bytes are never trusted — every read goes through rd_*() helpers
 * that check the remaining length; pickle values live in one arena freed at the end of
 * parsing (no recursion over values, so cyclic or deep pickles cannot blow the C stack);
 * tensors keep (storage entry, offset, shape, strides) checked against the entry size
 * before pth_open returns, so pth_read_* cannot read out of bounds.
 */
#include "pth.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- little-endian readers ----------------------------------------------------------- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* ---- zip directory ------------------------------------------------------------------- */

typedef struct zentry {
    char *name;
    uint64_t data_off; /* absolute offset of the entry bytes */
    uint64_t size;     /* bytes at data_off (compressed size for non-stored entries) */
    int method;        /* 0 stored; anything else is refused on use */
    int storage;       /* index into pth.st once a persistent id named it, else -1 */
} zentry_t;

static int stored_entry(const zentry_t *z, err_t *err)
{
    if (z->method == 0) return 0;
    return err_set(err, ERR_UNSUPPORTED,
                   "pth: zip entry '%s' is compressed (method %d); only stored entries as written "
                   "by torch.save are supported — re-save with torch.save", z->name, z->method);
}

typedef struct storage {
    char *key;
    pth_dtype_t dtype;
    int64_t numel;
    const uint8_t *data; /* inside the file buffer, numel * elsize bytes available */
} storage_t;

typedef struct ptensor {
    pth_tensor_t pub;    /* name unset: names live in pth.named */
    int storage;         /* index into storages */
    int64_t offset;      /* in elements */
    int64_t stride[WTS_MAX_DIMS];
} ptensor_t;

struct pth {
    const uint8_t *buf;
    size_t len;
    bool mapped;
    zentry_t *ent;
    int nent;
    char *root; /* "<root>/" prefix of data.pkl */
    storage_t *st;
    int nst, cst;
    ptensor_t *t;        /* every tensor the pickle rebuilt */
    int nt, ct;
    pth_tensor_t *named; /* the state dict: pub copies with names */
    int *named_t;        /* index into t */
    int nnamed;
};

static size_t elsize(pth_dtype_t d)
{
    switch (d) {
    case PTH_F32: case PTH_I32: return 4;
    case PTH_F16: case PTH_BF16: return 2;
    case PTH_F64: case PTH_I64: return 8;
    }
    return 0;
}

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const zentry_t *)a)->name, ((const zentry_t *)b)->name);
}

static int zip_parse(pth_t *p, err_t *err)
{
    const uint8_t *b = p->buf;
    size_t n = p->len;
    if (n >= 2 && b[0] == 0x80 && b[1] <= 5)
        return err_set(err, ERR_UNSUPPORTED,
                       "pth: legacy (non-zip) torch.save format; re-save with torch >= 1.6 "
                       "(_use_new_zipfile_serialization=True)");
    if (n < 22 || le32(b) != 0x04034b50u)
        return err_set(err, ERR_FORMAT, "pth: not a zip file (no local header signature)");
    /* end of central directory: scan back over at most a 64 KiB comment */
    size_t eocd = (size_t)-1;
    size_t lo = n > 22 + 65535 ? n - 22 - 65535 : 0;
    for (size_t i = n - 22 + 1; i-- > lo;) {
        if (le32(b + i) == 0x06054b50u) { eocd = i; break; }
    }
    if (eocd == (size_t)-1) return err_set(err, ERR_FORMAT, "pth: zip end-of-directory record not found (truncated file?)");
    uint64_t count = le16(b + eocd + 10), cd_size = le32(b + eocd + 12), cd_off = le32(b + eocd + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || le32(b + eocd - 20) != 0x07064b50u)
            return err_set(err, ERR_FORMAT, "pth: zip64 locator missing");
        uint64_t z = le64(b + eocd - 20 + 8);
        if (z > n || n - z < 56 || le32(b + z) != 0x06064b50u)
            return err_set(err, ERR_FORMAT, "pth: zip64 end-of-directory record out of range");
        count = le64(b + z + 32);
        cd_size = le64(b + z + 40);
        cd_off = le64(b + z + 48);
    }
    if (cd_off > n || cd_size > n - cd_off)
        return err_set(err, ERR_FORMAT, "pth: zip central directory out of range (truncated file?)");
    if (count > PTH_MAX_ENTRIES || count > cd_size / 46)
        return err_set(err, ERR_RANGE, "pth: zip entry count %llu is implausible", (unsigned long long)count);
    p->ent = calloc(count ? count : 1, sizeof(zentry_t));
    if (!p->ent) return err_set(err, ERR_NOMEM, "pth: out of memory");
    size_t at = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
    for (uint64_t e = 0; e < count; e++) {
        if (end - at < 46 || le32(b + at) != 0x02014b50u)
            return err_set(err, ERR_FORMAT, "pth: zip central directory entry %llu malformed", (unsigned long long)e);
        uint16_t flags = le16(b + at + 8), method = le16(b + at + 10);
        uint64_t csize = le32(b + at + 20), usize = le32(b + at + 24);
        size_t nl = le16(b + at + 28), xl = le16(b + at + 30), cl = le16(b + at + 32);
        uint64_t loff = le32(b + at + 42);
        if (end - at - 46 < nl + xl + cl)
            return err_set(err, ERR_FORMAT, "pth: zip central directory entry %llu overruns the directory", (unsigned long long)e);
        const uint8_t *nm = b + at + 46, *x = nm + nl;
        /* zip64 extra: the fields whose 32-bit value is all ones, in order usize, csize, off */
        for (size_t xo = 0; xo + 4 <= xl;) {
            uint16_t id = le16(x + xo), sz = le16(x + xo + 2);
            if (xo + 4 + sz > xl) return err_set(err, ERR_FORMAT, "pth: zip extra field overruns entry %llu", (unsigned long long)e);
            if (id == 1) {
                size_t f = xo + 4, fe = xo + 4 + sz;
                if (usize == 0xFFFFFFFFu) { if (f + 8 > fe) goto bad64; usize = le64(x + f); f += 8; }
                if (csize == 0xFFFFFFFFu) { if (f + 8 > fe) goto bad64; csize = le64(x + f); f += 8; }
                if (loff == 0xFFFFFFFFu) { if (f + 8 > fe) goto bad64; loff = le64(x + f); f += 8; }
            }
            xo += 4 + (size_t)sz;
        }
        zentry_t *z = &p->ent[p->nent];
        z->storage = -1;
        z->name = malloc(nl + 1);
        if (!z->name) return err_set(err, ERR_NOMEM, "pth: out of memory");
        memcpy(z->name, nm, nl);
        z->name[nl] = 0;
        p->nent++;
        if (memchr(nm, 0, nl)) return err_set(err, ERR_FORMAT, "pth: zip entry name contains NUL");
        if (flags & 1) return err_set(err, ERR_UNSUPPORTED, "pth: zip entry '%s' is encrypted", z->name);
        z->method = method; /* compressed entries are refused when read (stored_entry) */
        if (method == 0 && csize != usize) return err_set(err, ERR_FORMAT, "pth: stored zip entry '%s' has csize != usize", z->name);
        if (method != 0) usize = csize;
        if (loff > n || n - loff < 30 || le32(b + loff) != 0x04034b50u)
            return err_set(err, ERR_FORMAT, "pth: zip local header of '%s' out of range or bad", z->name);
        uint64_t doff = loff + 30 + le16(b + loff + 26) + le16(b + loff + 28);
        if (doff > n || usize > n - doff)
            return err_set(err, ERR_FORMAT, "pth: zip entry '%s' data out of range (truncated file?)", z->name);
        z->data_off = doff;
        z->size = usize;
        at += 46 + nl + xl + cl;
    }
    qsort(p->ent, (size_t)p->nent, sizeof *p->ent, ent_cmp);
    return 0;
bad64:
    return err_set(err, ERR_FORMAT, "pth: zip64 extra field too short");
}

/* Entry "<root><rest>" by binary search (entries are sorted by name after parsing). */
static zentry_t *zfind(const pth_t *p, const char *root, const char *rest)
{
    char name[600];
    if (strlen(root) + strlen(rest) >= sizeof name) return NULL;
    snprintf(name, sizeof name, "%s%s", root, rest);
    zentry_t key = {.name = name};
    return bsearch(&key, p->ent, (size_t)p->nent, sizeof *p->ent, ent_cmp);
}

/* ---- pickle values ------------------------------------------------------------------- */

typedef enum { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR, V_MARK } vtype_t;

typedef struct val val_t;
struct val {
    vtype_t type;
    int64_t i;        /* INT, BOOL; STORAGE/TENSOR: index */
    double f;
    char *s;          /* STR; GLOBAL "module name" */
    val_t **items;    /* TUPLE, LIST; DICT as key,value,key,value */
    int n, cap;
    val_t *next;      /* arena list */
};

typedef struct vm {
    pth_t *p;
    val_t *all;
    long nobj;
    val_t **stack;
    int sp, scap;
    int *marks;
    int nm, mcap;
    val_t **memo;
    int nmemo;      /* allocated slots */
    int memo_count; /* slots set (MEMOIZE's next index, as in Python's pickle) */
    err_t *err;
} vm_t;

static val_t *vnew(vm_t *m, vtype_t t)
{
    if (m->nobj >= PTH_MAX_OBJECTS) {
        err_set(m->err, ERR_RANGE, "pth: pickle creates more than %d objects", PTH_MAX_OBJECTS);
        return NULL;
    }
    val_t *v = calloc(1, sizeof *v);
    if (!v) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    v->type = t;
    v->next = m->all;
    m->all = v;
    m->nobj++;
    return v;
}

static int vappend(vm_t *m, val_t *c, val_t *x)
{
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 4;
        if (nc > PTH_MAX_STACK * 2) return err_set(m->err, ERR_RANGE, "pth: pickle container too large");
        val_t **ni = realloc(c->items, (size_t)nc * sizeof *ni);
        if (!ni) return err_set(m->err, ERR_NOMEM, "pth: out of memory");
        c->items = ni;
        c->cap = nc;
    }
    c->items[c->n++] = x;
    return 0;
}

static int push(vm_t *m, val_t *v)
{
    if (!v) return m->err && m->err->code ? m->err->code : ERR_NOMEM;
    if (m->sp == m->scap) {
        if (m->scap >= PTH_MAX_STACK) return err_set(m->err, ERR_RANGE, "pth: pickle stack overflow");
        int nc = m->scap ? m->scap * 2 : 64;
        val_t **ns = realloc(m->stack, (size_t)nc * sizeof *ns);
        if (!ns) return err_set(m->err, ERR_NOMEM, "pth: out of memory");
        m->stack = ns;
        m->scap = nc;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static val_t *pop(vm_t *m)
{
    if (m->sp <= 0 || (m->nm > 0 && m->sp <= m->marks[m->nm - 1])) {
        err_set(m->err, ERR_FORMAT, "pth: pickle stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

static val_t *top(vm_t *m)
{
    if (m->sp <= 0 || (m->nm > 0 && m->sp <= m->marks[m->nm - 1])) {
        err_set(m->err, ERR_FORMAT, "pth: pickle stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Pops to the last mark: items are stack[*from .. sp). */
static int pop_mark(vm_t *m, int *from)
{
    if (m->nm <= 0) return err_set(m->err, ERR_FORMAT, "pth: pickle MARK missing");
    *from = m->marks[--m->nm];
    return 0;
}

static int memo_put(vm_t *m, uint64_t idx, val_t *v)
{
    if (!v) return err_set(m->err, ERR_FORMAT, "pth: pickle PUT on empty stack");
    if (idx >= PTH_MAX_STACK) return err_set(m->err, ERR_RANGE, "pth: pickle memo index %llu too large", (unsigned long long)idx);
    if ((int)idx >= m->nmemo) {
        int nn = (int)idx + 1 > m->nmemo * 2 ? (int)idx + 1 : m->nmemo * 2;
        val_t **nw = realloc(m->memo, (size_t)nn * sizeof *nw);
        if (!nw) return err_set(m->err, ERR_NOMEM, "pth: out of memory");
        memset(nw + m->nmemo, 0, (size_t)(nn - m->nmemo) * sizeof *nw);
        m->memo = nw;
        m->nmemo = nn;
    }
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return 0;
}

static int is_global(const val_t *v, const char *mod_name)
{
    return v && v->type == V_GLOBAL && strcmp(v->s, mod_name) == 0;
}

static int storage_dtype(const char *g, pth_dtype_t *d)
{
    static const struct { const char *n; pth_dtype_t d; } tab[] = {
        {"torch FloatStorage", PTH_F32}, {"torch HalfStorage", PTH_F16},
        {"torch BFloat16Storage", PTH_BF16}, {"torch DoubleStorage", PTH_F64},
        {"torch LongStorage", PTH_I64}, {"torch IntStorage", PTH_I32},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(g, tab[i].n) == 0) { *d = tab[i].d; return 1; }
    return 0;
}

/* BINPERSID: ('storage', <torch XStorage>, key, location, numel) -> storage value. */
static val_t *persistent_load(vm_t *m, val_t *pid)
{
    pth_t *p = m->p;
    if (!pid || pid->type != V_TUPLE || pid->n < 5 || pid->items[0]->type != V_STR ||
        strcmp(pid->items[0]->s, "storage") != 0 || pid->items[1]->type != V_GLOBAL ||
        pid->items[2]->type != V_STR || pid->items[4]->type != V_INT) {
        err_set(m->err, ERR_FORMAT, "pth: persistent id is not a ('storage', type, key, location, numel) tuple");
        return NULL;
    }
    pth_dtype_t dt;
    if (!storage_dtype(pid->items[1]->s, &dt)) {
        err_set(m->err, ERR_UNSUPPORTED, "pth: storage type '%s' not supported (float32/16, bfloat16, float64, int64, int32)", pid->items[1]->s);
        return NULL;
    }
    const char *key = pid->items[2]->s;
    int64_t numel = pid->items[4]->i;
    char rest[300];
    if (strlen(key) > 200 || strchr(key, '/')) {
        err_set(m->err, ERR_FORMAT, "pth: bad storage key");
        return NULL;
    }
    snprintf(rest, sizeof rest, "data/%s", key);
    zentry_t *z = zfind(p, p->root, rest);
    if (!z) {
        err_set(m->err, ERR_FORMAT, "pth: storage '%s' has no zip entry '%s%s'", key, p->root, rest);
        return NULL;
    }
    if (z->storage >= 0) { /* a storage shared by several tensors */
        const storage_t *st = &p->st[z->storage];
        if (st->dtype != dt || st->numel != numel) {
            err_set(m->err, ERR_FORMAT, "pth: storage '%s' referenced with two types/sizes", key);
            return NULL;
        }
        val_t *v = vnew(m, V_STORAGE);
        if (v) v->i = z->storage;
        return v;
    }
    if (numel < 0 || numel > PTH_MAX_NUMEL) {
        err_set(m->err, ERR_RANGE, "pth: storage '%s' numel %lld out of range", key, (long long)numel);
        return NULL;
    }
    if (stored_entry(z, m->err) < 0) return NULL;
    if (z->size / elsize(dt) < (uint64_t)numel) {
        err_set(m->err, ERR_FORMAT, "pth: storage '%s' entry holds %llu bytes, needs %lld elements of %zu bytes",
                key, (unsigned long long)z->size, (long long)numel, elsize(dt));
        return NULL;
    }
    if (p->nst == p->cst) {
        int nc = p->cst ? p->cst * 2 : 64;
        if (p->nst >= PTH_MAX_TENSORS) { err_set(m->err, ERR_RANGE, "pth: more than %d storages", PTH_MAX_TENSORS); return NULL; }
        storage_t *ns = realloc(p->st, (size_t)nc * sizeof *ns);
        if (!ns) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
        p->st = ns;
        p->cst = nc;
    }
    storage_t *s = &p->st[p->nst];
    s->key = strdup(key);
    if (!s->key) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    s->dtype = dt;
    s->numel = numel;
    s->data = p->buf + z->data_off;
    val_t *v = vnew(m, V_STORAGE);
    if (v) v->i = p->nst;
    z->storage = p->nst;
    p->nst++;
    return v;
}

static int int_tuple(const val_t *v, int64_t *out, int *n)
{
    if (!v || v->type != V_TUPLE || v->n > WTS_MAX_DIMS) return 0;
    for (int i = 0; i < v->n; i++) {
        if (v->items[i]->type != V_INT) return 0;
        out[i] = v->items[i]->i;
    }
    *n = v->n;
    return 1;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta]) */
static val_t *rebuild_tensor(vm_t *m, val_t *args)
{
    pth_t *p = m->p;
    if (!args || args->type != V_TUPLE || args->n < 4 || args->items[0]->type != V_STORAGE ||
        args->items[1]->type != V_INT) {
        err_set(m->err, ERR_FORMAT, "pth: _rebuild_tensor_v2 arguments malformed");
        return NULL;
    }
    ptensor_t t;
    memset(&t, 0, sizeof t);
    int nd = 0, ns = 0;
    if (!int_tuple(args->items[2], t.pub.shape, &nd) || !int_tuple(args->items[3], t.stride, &ns) || nd != ns) {
        err_set(m->err, ERR_FORMAT, "pth: tensor size/stride must be int tuples of equal length <= %d", WTS_MAX_DIMS);
        return NULL;
    }
    t.storage = (int)args->items[0]->i;
    t.offset = args->items[1]->i;
    t.pub.ndim = nd;
    const storage_t *s = &p->st[t.storage];
    t.pub.dtype = s->dtype;
    int64_t numel = 1, maxi = 0;
    for (int d = 0; d < nd; d++) {
        if (t.pub.shape[d] < 0 || t.stride[d] < 0 || t.pub.shape[d] > PTH_MAX_NUMEL || t.stride[d] > PTH_MAX_NUMEL) {
            err_set(m->err, ERR_FORMAT, "pth: tensor on storage '%s' has a negative or huge size/stride", s->key);
            return NULL;
        }
        if (t.pub.shape[d] == 0) numel = 0;
        else if (numel) {
            if (numel > PTH_MAX_NUMEL / t.pub.shape[d]) {
                err_set(m->err, ERR_RANGE, "pth: tensor on storage '%s' has too many elements", s->key);
                return NULL;
            }
            numel *= t.pub.shape[d];
        }
        if (t.pub.shape[d] > 0) maxi += (t.pub.shape[d] - 1) * t.stride[d];
    }
    if (numel > 0 && (t.offset < 0 || t.offset > s->numel || maxi >= s->numel - t.offset)) {
        err_set(m->err, ERR_FORMAT, "pth: tensor view (offset %lld) exceeds storage '%s' of %lld elements",
                (long long)t.offset, s->key, (long long)s->numel);
        return NULL;
    }
    t.pub.numel = numel;
    if (p->nt == p->ct) {
        int nc = p->ct ? p->ct * 2 : 64;
        if (p->nt >= PTH_MAX_TENSORS) { err_set(m->err, ERR_RANGE, "pth: more than %d tensors", PTH_MAX_TENSORS); return NULL; }
        ptensor_t *nt = realloc(p->t, (size_t)nc * sizeof *nt);
        if (!nt) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
        p->t = nt;
        p->ct = nc;
    }
    p->t[p->nt] = t;
    val_t *v = vnew(m, V_TENSOR);
    if (v) v->i = p->nt;
    p->nt++;
    return v;
}

static val_t *reduce(vm_t *m, val_t *fn, val_t *args)
{
    if (!fn || !args) return NULL;
    if (fn->type != V_GLOBAL) {
        err_set(m->err, ERR_FORMAT, "pth: REDUCE on a non-callable");
        return NULL;
    }
    if (args->type != V_TUPLE) {
        err_set(m->err, ERR_FORMAT, "pth: REDUCE arguments are not a tuple");
        return NULL;
    }
    if (is_global(fn, "collections OrderedDict")) {
        if (args->n != 0) {
            err_set(m->err, ERR_UNSUPPORTED, "pth: OrderedDict built from arguments");
            return NULL;
        }
        return vnew(m, V_DICT);
    }
    if (is_global(fn, "torch._utils _rebuild_tensor_v2")) return rebuild_tensor(m, args);
    if (is_global(fn, "torch._utils _rebuild_parameter")) {
        if (args->n < 1 || args->items[0]->type != V_TENSOR) {
            err_set(m->err, ERR_FORMAT, "pth: _rebuild_parameter without a tensor");
            return NULL;
        }
        return args->items[0];
    }
    err_set(m->err, ERR_UNSUPPORTED, "pth: pickle calls '%s', which a state dict does not need (refused)", fn->s);
    return NULL;
}

typedef struct rd {
    const uint8_t *b;
    size_t n, at;
} rd_t;

static int need(vm_t *m, rd_t *r, size_t k, const char *what)
{
    if (r->n - r->at < k) return err_set(m->err, ERR_FORMAT, "pth: pickle truncated in %s at byte %zu", what, r->at);
    return 0;
}

static val_t *str_val(vm_t *m, const uint8_t *s, size_t len)
{
    val_t *v = vnew(m, V_STR);
    if (!v) return NULL;
    v->s = malloc(len + 1);
    if (!v->s) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    memcpy(v->s, s, len);
    v->s[len] = 0;
    return v;
}

/* GLOBAL's text argument: bytes up to '\n'. */
static int read_line(vm_t *m, rd_t *r, const uint8_t **s, size_t *len)
{
    const uint8_t *nl = memchr(r->b + r->at, '\n', r->n - r->at);
    if (!nl) return err_set(m->err, ERR_FORMAT, "pth: pickle GLOBAL line not terminated");
    *s = r->b + r->at;
    *len = (size_t)(nl - *s);
    if (*len > 200) return err_set(m->err, ERR_FORMAT, "pth: pickle GLOBAL name too long");
    r->at += *len + 1;
    return 0;
}

static val_t *global_val(vm_t *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    val_t *v = vnew(m, V_GLOBAL);
    if (!v) return NULL;
    v->s = malloc(ml + nl + 2);
    if (!v->s) { err_set(m->err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    memcpy(v->s, mod, ml);
    v->s[ml] = ' ';
    memcpy(v->s + ml + 1, name, nl);
    v->s[ml + nl + 1] = 0;
    if (strlen(v->s) != ml + nl + 1) {
        err_set(m->err, ERR_FORMAT, "pth: pickle GLOBAL name contains NUL");
        return NULL;
    }
    return v;
}

#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)
#define POPV(v) do { if (!((v) = pop(m))) return m->err ? m->err->code : ERR_FORMAT; } while (0)

static int run_pickle(vm_t *m, rd_t *r, val_t **result)
{
    for (;;) {
        TRY(need(m, r, 1, "opcode"));
        size_t opat = r->at;
        uint8_t op = r->b[r->at++];
        const uint8_t *a = r->b + r->at;
        val_t *v = NULL, *x = NULL, *y = NULL;
        switch (op) {
        case 0x80: /* PROTO */
            TRY(need(m, r, 1, "PROTO"));
            if (a[0] < 2 || a[0] > 5) return err_set(m->err, ERR_UNSUPPORTED, "pth: pickle protocol %u not supported", a[0]);
            r->at += 1;
            break;
        case 0x95: /* FRAME */
            TRY(need(m, r, 8, "FRAME"));
            r->at += 8;
            break;
        case '}': TRY(push(m, vnew(m, V_DICT))); break;
        case ']': TRY(push(m, vnew(m, V_LIST))); break;
        case ')': TRY(push(m, vnew(m, V_TUPLE))); break;
        case '(': /* MARK */
            if (m->nm == m->mcap) {
                if (m->mcap >= 100000) return err_set(m->err, ERR_RANGE, "pth: pickle MARK nesting too deep");
                int nc = m->mcap ? m->mcap * 2 : 16;
                int *nmk = realloc(m->marks, (size_t)nc * sizeof *nmk);
                if (!nmk) return err_set(m->err, ERR_NOMEM, "pth: out of memory");
                m->marks = nmk;
                m->mcap = nc;
            }
            m->marks[m->nm++] = m->sp;
            break;
        case 'X': { /* BINUNICODE */
            TRY(need(m, r, 4, "BINUNICODE"));
            size_t len = le32(a);
            r->at += 4;
            TRY(need(m, r, len, "BINUNICODE"));
            TRY(push(m, str_val(m, r->b + r->at, len)));
            r->at += len;
            break;
        }
        case 0x8c: { /* SHORT_BINUNICODE */
            TRY(need(m, r, 1, "SHORT_BINUNICODE"));
            size_t len = a[0];
            r->at += 1;
            TRY(need(m, r, len, "SHORT_BINUNICODE"));
            TRY(push(m, str_val(m, r->b + r->at, len)));
            r->at += len;
            break;
        }
        case 'J': case 'K': case 'M': { /* BININT, BININT1, BININT2 */
            size_t k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            TRY(need(m, r, k, "BININT"));
            v = vnew(m, V_INT);
            if (v) v->i = op == 'J' ? (int64_t)(int32_t)le32(a) : op == 'K' ? a[0] : le16(a);
            r->at += k;
            TRY(push(m, v));
            break;
        }
        case 0x8a: { /* LONG1: little-endian two's complement */
            TRY(need(m, r, 1, "LONG1"));
            size_t k = a[0];
            r->at += 1;
            TRY(need(m, r, k, "LONG1"));
            if (k > 8) return err_set(m->err, ERR_RANGE, "pth: pickle integer wider than 64 bits");
            uint64_t u = 0;
            for (size_t i = 0; i < k; i++) u |= (uint64_t)r->b[r->at + i] << (8 * i);
            if (k > 0 && k < 8 && (r->b[r->at + k - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * k);
            v = vnew(m, V_INT);
            if (v) memcpy(&v->i, &u, 8);
            r->at += k;
            TRY(push(m, v));
            break;
        }
        case 'G': { /* BINFLOAT big-endian double */
            TRY(need(m, r, 8, "BINFLOAT"));
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | a[i];
            v = vnew(m, V_FLOAT);
            if (v) memcpy(&v->f, &u, 8);
            r->at += 8;
            TRY(push(m, v));
            break;
        }
        case 'N': TRY(push(m, vnew(m, V_NONE))); break;
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            v = vnew(m, V_BOOL);
            if (v) v->i = op == 0x88;
            TRY(push(m, v));
            break;
        case 't': case 0x85: case 0x86: case 0x87: { /* TUPLE, TUPLE1..3 */
            int from = 0;
            if (op == 't') TRY(pop_mark(m, &from));
            else {
                from = m->sp - (op - 0x84);
                if (from < 0 || (m->nm > 0 && from < m->marks[m->nm - 1]))
                    return err_set(m->err, ERR_FORMAT, "pth: pickle stack underflow in TUPLE");
            }
            v = vnew(m, V_TUPLE);
            if (!v) return m->err ? m->err->code : ERR_NOMEM;
            for (int i = from; i < m->sp; i++) TRY(vappend(m, v, m->stack[i]));
            m->sp = from;
            TRY(push(m, v));
            break;
        }
        case 'c': { /* GLOBAL */
            const uint8_t *mod, *nm;
            size_t ml, nl;
            TRY(read_line(m, r, &mod, &ml));
            TRY(read_line(m, r, &nm, &nl));
            TRY(push(m, global_val(m, (const char *)mod, ml, (const char *)nm, nl)));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            POPV(y);
            POPV(x);
            if (x->type != V_STR || y->type != V_STR) return err_set(m->err, ERR_FORMAT, "pth: STACK_GLOBAL needs two strings");
            TRY(push(m, global_val(m, x->s, strlen(x->s), y->s, strlen(y->s))));
            break;
        case 'Q': /* BINPERSID */
            POPV(x);
            TRY(push(m, persistent_load(m, x)));
            break;
        case 'R': /* REDUCE */
            POPV(y);
            POPV(x);
            TRY(push(m, reduce(m, x, y)));
            break;
        case 'b': /* BUILD: state dicts only carry attributes (_metadata) — ignored */
            POPV(x);
            if (!top(m)) return m->err ? m->err->code : ERR_FORMAT;
            break;
        case 's': /* SETITEM */
            POPV(y);
            POPV(x);
            if (!(v = top(m))) return m->err ? m->err->code : ERR_FORMAT;
            if (v->type != V_DICT) return err_set(m->err, ERR_FORMAT, "pth: SETITEM on a non-dict");
            TRY(vappend(m, v, x));
            TRY(vappend(m, v, y));
            break;
        case 'u': { /* SETITEMS */
            int from = 0;
            TRY(pop_mark(m, &from));
            if ((m->sp - from) % 2) return err_set(m->err, ERR_FORMAT, "pth: SETITEMS with odd item count");
            if (from <= 0 || (m->nm > 0 && from <= m->marks[m->nm - 1])) return err_set(m->err, ERR_FORMAT, "pth: SETITEMS without a dict");
            v = m->stack[from - 1];
            if (v->type != V_DICT) return err_set(m->err, ERR_FORMAT, "pth: SETITEMS on a non-dict");
            for (int i = from; i < m->sp; i++) TRY(vappend(m, v, m->stack[i]));
            m->sp = from;
            break;
        }
        case 'a': /* APPEND */
            POPV(x);
            if (!(v = top(m))) return m->err ? m->err->code : ERR_FORMAT;
            if (v->type != V_LIST) return err_set(m->err, ERR_FORMAT, "pth: APPEND on a non-list");
            TRY(vappend(m, v, x));
            break;
        case 'e': { /* APPENDS */
            int from = 0;
            TRY(pop_mark(m, &from));
            if (from <= 0 || (m->nm > 0 && from <= m->marks[m->nm - 1])) return err_set(m->err, ERR_FORMAT, "pth: APPENDS without a list");
            v = m->stack[from - 1];
            if (v->type != V_LIST) return err_set(m->err, ERR_FORMAT, "pth: APPENDS on a non-list");
            for (int i = from; i < m->sp; i++) TRY(vappend(m, v, m->stack[i]));
            m->sp = from;
            break;
        }
        case 'q': case 'r': { /* BINPUT, LONG_BINPUT */
            size_t k = op == 'q' ? 1 : 4;
            TRY(need(m, r, k, "BINPUT"));
            uint64_t idx = op == 'q' ? a[0] : le32(a);
            r->at += k;
            TRY(memo_put(m, idx, m->sp > 0 ? m->stack[m->sp - 1] : NULL));
            break;
        }
        case 0x94: /* MEMOIZE */
            TRY(memo_put(m, (uint64_t)m->memo_count, m->sp > 0 ? m->stack[m->sp - 1] : NULL));
            break;
        case 'h': case 'j': { /* BINGET, LONG_BINGET */
            size_t k = op == 'h' ? 1 : 4;
            TRY(need(m, r, k, "BINGET"));
            uint64_t idx = op == 'h' ? a[0] : le32(a);
            r->at += k;
            if (idx >= (uint64_t)m->nmemo || !m->memo[idx])
                return err_set(m->err, ERR_FORMAT, "pth: pickle GET of unset memo %llu", (unsigned long long)idx);
            TRY(push(m, m->memo[idx]));
            break;
        }
        case '.': /* STOP */
            if (m->sp != 1 || m->nm != 0) return err_set(m->err, ERR_FORMAT, "pth: pickle STOP with %d values on the stack", m->sp);
            *result = m->stack[0];
            return 0;
        default:
            return err_set(m->err, ERR_UNSUPPORTED, "pth: pickle opcode 0x%02x at byte %zu not supported", op, opat);
        }
    }
}

static void vm_free(vm_t *m)
{
    for (val_t *v = m->all; v;) {
        val_t *nx = v->next;
        free(v->s);
        free(v->items);
        free(v);
        v = nx;
    }
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

/* Picks the state dict out of the unpickled object and names its tensors. */
static int collect_state_dict(pth_t *p, val_t *root, err_t *err)
{
    if (!root || root->type != V_DICT) return err_set(err, ERR_FORMAT, "pth: checkpoint is not a dict");
    val_t *sd = root;
    for (int i = 0; i + 1 < root->n; i += 2) {
        val_t *k = root->items[i], *v = root->items[i + 1];
        if (k->type == V_STR && v->type == V_DICT && (!strcmp(k->s, "model") || !strcmp(k->s, "state_dict"))) {
            sd = v;
            break;
        }
    }
    int cap = sd->n / 2 + 1;
    p->named = calloc((size_t)cap, sizeof *p->named);
    p->named_t = calloc((size_t)cap, sizeof *p->named_t);
    if (!p->named || !p->named_t) return err_set(err, ERR_NOMEM, "pth: out of memory");
    for (int i = 0; i + 1 < sd->n; i += 2) {
        val_t *k = sd->items[i], *v = sd->items[i + 1];
        if (v->type != V_TENSOR) continue; /* e.g. counters or config kept next to tensors */
        if (k->type != V_STR) return err_set(err, ERR_FORMAT, "pth: state-dict key is not a string");
        if (k->s[0] == 0 || strlen(k->s) > 1000) return err_set(err, ERR_FORMAT, "pth: state-dict key empty or longer than 1000 bytes");
        if (p->nnamed >= PTH_MAX_TENSORS) return err_set(err, ERR_RANGE, "pth: state dict has more than %d tensors", PTH_MAX_TENSORS);
        for (int j = 0; j < p->nnamed; j++)
            if (!strcmp(p->named[j].name, k->s)) return err_set(err, ERR_FORMAT, "pth: duplicate state-dict key '%s'", k->s);
        pth_tensor_t *t = &p->named[p->nnamed];
        *t = p->t[v->i].pub;
        t->name = strdup(k->s);
        if (!t->name) return err_set(err, ERR_NOMEM, "pth: out of memory");
        p->named_t[p->nnamed++] = (int)v->i;
    }
    if (p->nnamed == 0) return err_set(err, ERR_FORMAT, "pth: checkpoint holds no tensors (no state dict found)");
    return 0;
}

static int parse(pth_t *p, err_t *err)
{
    TRY(zip_parse(p, err));
    for (int i = 0; i < p->nent; i++)
        if (strstr(p->ent[i].name, "/constants.pkl") || strstr(p->ent[i].name, "/code/"))
            return err_set(err, ERR_UNSUPPORTED, "pth: this is a TorchScript archive (torch.jit.save); save the state_dict with torch.save");
    const zentry_t *pk = NULL;
    for (int i = 0; i < p->nent; i++) {
        const char *nm = p->ent[i].name, *sl = strchr(nm, '/');
        if (sl && strcmp(sl + 1, "data.pkl") == 0) {
            if (pk) return err_set(err, ERR_FORMAT, "pth: more than one data.pkl in the archive");
            pk = &p->ent[i];
        }
    }
    if (!pk) return err_set(err, ERR_FORMAT, "pth: zip has no '<root>/data.pkl' (not a torch.save checkpoint)");
    TRY(stored_entry(pk, err));
    size_t rl = (size_t)(strchr(pk->name, '/') - pk->name) + 1;
    p->root = strndup(pk->name, rl);
    if (!p->root) return err_set(err, ERR_NOMEM, "pth: out of memory");
    const zentry_t *bo = zfind(p, p->root, "byteorder");
    if (bo && !(bo->size == 6 && memcmp(p->buf + bo->data_off, "little", 6) == 0))
        return err_set(err, ERR_UNSUPPORTED, "pth: checkpoint byte order is not little-endian");
    if (pk->size > PTH_MAX_PICKLE) return err_set(err, ERR_RANGE, "pth: data.pkl larger than %zu bytes", PTH_MAX_PICKLE);
    vm_t m;
    memset(&m, 0, sizeof m);
    m.p = p;
    m.err = err;
    rd_t r = {p->buf + pk->data_off, (size_t)pk->size, 0};
    val_t *root = NULL;
    int rc = run_pickle(&m, &r, &root);
    if (rc == 0) rc = collect_state_dict(p, root, err);
    vm_free(&m);
    return rc;
}

void pth_destroy(pth_t **pp)
{
    if (!pp || !*pp) return;
    pth_t *p = *pp;
    if (p->mapped) munmap((void *)p->buf, p->len);
    else free((void *)p->buf);
    for (int i = 0; i < p->nent; i++) free(p->ent[i].name);
    free(p->ent);
    free(p->root);
    for (int i = 0; i < p->nst; i++) free(p->st[i].key);
    free(p->st);
    free(p->t);
    for (int i = 0; i < p->nnamed; i++) free((char *)p->named[i].name);
    free(p->named);
    free(p->named_t);
    free(p);
    *pp = NULL;
}

static pth_t *finish(pth_t *p, err_t *err)
{
    err_t local = {0}; /* the VM reads codes back from err: never let it be NULL */
    if (!err) err = &local;
    if (parse(p, err) < 0) {
        pth_destroy(&p);
        return NULL;
    }
    return p;
}

pth_t *pth_open(const char *path, err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { err_errno(err, ERR_IO, errno, "pth: cannot open '%s'", path); return NULL; }
    struct stat stt;
    if (fstat(fd, &stt) < 0) { err_errno(err, ERR_IO, errno, "pth: cannot stat '%s'", path); close(fd); return NULL; }
    if (!S_ISREG(stt.st_mode) || stt.st_size <= 0) {
        err_set(err, ERR_FORMAT, "pth: '%s' is empty or not a regular file", path);
        close(fd);
        return NULL;
    }
    void *b = mmap(NULL, (size_t)stt.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (b == MAP_FAILED) { err_errno(err, ERR_IO, e, "pth: cannot map '%s'", path); return NULL; }
    pth_t *p = calloc(1, sizeof *p);
    if (!p) { munmap(b, (size_t)stt.st_size); err_set(err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    p->buf = b;
    p->len = (size_t)stt.st_size;
    p->mapped = true;
    p = finish(p, err);
    if (!p) err_wrap(err, "%s", path);
    return p;
}

pth_t *pth_from_memory(const void *buf, size_t len, err_t *err)
{
    pth_t *p = calloc(1, sizeof *p);
    void *copy = malloc(len ? len : 1);
    if (!p || !copy) { free(p); free(copy); err_set(err, ERR_NOMEM, "pth: out of memory"); return NULL; }
    if (len) memcpy(copy, buf, len);
    p->buf = copy;
    p->len = len;
    return finish(p, err);
}

int pth_count(const pth_t *p) { return p ? p->nnamed : 0; }

const pth_tensor_t *pth_at(const pth_t *p, int i)
{
    return p && i >= 0 && i < p->nnamed ? &p->named[i] : NULL;
}

int pth_find(const pth_t *p, const char *name)
{
    for (int i = 0; p && i < p->nnamed; i++)
        if (!strcmp(p->named[i].name, name)) return i;
    return -1;
}

/* ---- materialisation ----------------------------------------------------------------- */

static float h2f(uint16_t h)
{
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (e == 0) {
        float f = ldexpf((float)mant, -24);
        return s ? -f : f;
    }
    if (e == 31) u = s | 0x7f800000u | (mant << 13);
    else u = s | ((e + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double load_elem(const uint8_t *d, pth_dtype_t dt, int64_t i, int64_t *iv)
{
    switch (dt) {
    case PTH_F32: { float f; memcpy(&f, d + 4 * i, 4); return f; }
    case PTH_F16: return h2f(le16(d + 2 * i));
    case PTH_BF16: { uint32_t u = (uint32_t)le16(d + 2 * i) << 16; float f; memcpy(&f, &u, 4); return f; }
    case PTH_F64: { double f; memcpy(&f, d + 8 * i, 8); return f; }
    case PTH_I64: { int64_t v; memcpy(&v, d + 8 * i, 8); *iv = v; return 0; }
    case PTH_I32: { int32_t v; memcpy(&v, d + 4 * i, 4); *iv = v; return 0; }
    }
    return 0;
}

/* Walks the strided view in row-major order, writing element j to dst. */
static void gather(const pth_t *p, int i, float *fdst, int64_t *idst)
{
    const ptensor_t *t = &p->t[p->named_t[i]];
    const storage_t *s = &p->st[t->storage];
    int nd = t->pub.ndim;
    int64_t idx[WTS_MAX_DIMS] = {0}, off = t->offset;
    if (t->pub.numel == 0) return;
    if (s->dtype == PTH_F32 && fdst) {
        int contig = 1;
        int64_t want = 1;
        for (int d = nd - 1; d >= 0; d--) {
            if (t->pub.shape[d] != 1 && t->stride[d] != want) contig = 0;
            want *= t->pub.shape[d];
        }
        if (contig) {
            memcpy(fdst, s->data + 4 * off, (size_t)t->pub.numel * 4);
            return;
        }
    }
    for (int64_t j = 0; j < t->pub.numel; j++) {
        int64_t iv = 0;
        double v = load_elem(s->data, s->dtype, off, &iv);
        if (fdst) fdst[j] = (float)v;
        else idst[j] = iv;
        for (int d = nd - 1; d >= 0; d--) {
            off += t->stride[d];
            if (++idx[d] < t->pub.shape[d]) break;
            off -= t->stride[d] * idx[d];
            idx[d] = 0;
        }
    }
}

static int is_float(pth_dtype_t d) { return d == PTH_F32 || d == PTH_F16 || d == PTH_BF16 || d == PTH_F64; }

int pth_read_f32(const pth_t *p, int i, float *dst, err_t *err)
{
    if (!p || i < 0 || i >= p->nnamed) return err_set(err, ERR_RANGE, "pth: tensor index %d out of range", i);
    if (!is_float(p->named[i].dtype)) return err_set(err, ERR_UNSUPPORTED, "pth: tensor '%s' is an integer tensor", p->named[i].name);
    gather(p, i, dst, NULL);
    return 0;
}

int pth_read_i64(const pth_t *p, int i, int64_t *dst, err_t *err)
{
    if (!p || i < 0 || i >= p->nnamed) return err_set(err, ERR_RANGE, "pth: tensor index %d out of range", i);
    if (is_float(p->named[i].dtype)) return err_set(err, ERR_UNSUPPORTED, "pth: tensor '%s' is a float tensor", p->named[i].name);
    gather(p, i, NULL, dst);
    return 0;
}

/* Adds tensor i under `name` (F32 or I64). */
static int add_tensor(const pth_t *p, int i, const char *name, wts_writer_t *out, err_t *err)
{
    const pth_tensor_t *t = &p->named[i];
    int fl = is_float(t->dtype);
    void *buf = malloc((size_t)(t->numel ? t->numel : 1) * (fl ? 4 : 8));
    if (!buf) return err_set(err, ERR_NOMEM, "pth: out of memory for '%s'", t->name);
    int rc = fl ? pth_read_f32(p, i, buf, err) : pth_read_i64(p, i, buf, err);
    if (rc == 0) rc = wts_writer_add(out, name, fl ? WTS_F32 : WTS_I64, t->ndim, t->shape, buf, err);
    free(buf);
    return rc;
}

int pth_add_to_writer(const pth_t *p, wts_writer_t *out, const char *prefix_filter, err_t *err)
{
    size_t pl = prefix_filter ? strlen(prefix_filter) : 0;
    int n = 0;
    for (int i = 0; i < p->nnamed; i++) {
        if (pl && strncmp(p->named[i].name, prefix_filter, pl) != 0) continue;
        TRY(add_tensor(p, i, p->named[i].name, out, err));
        n++;
    }
    return n;
}

int pth_load(const char *path, wts_writer_t *out, const char *prefix_filter, err_t *err)
{
    pth_t *p = pth_open(path, err);
    if (!p) return err ? err->code : ERR_FORMAT;
    int rc = pth_add_to_writer(p, out, prefix_filter, err);
    pth_destroy(&p);
    return rc;
}

/* ---- SAM conversion ------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* For "<x>.bn.<part>" returns the index of "<x>.c.weight", else -1. */
static int bn_owner(const pth_t *p, const char *name)
{
    static const char *parts[] = {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var", ".bn.num_batches_tracked"};
    for (size_t k = 0; k < 5; k++) {
        if (!ends_with(name, parts[k])) continue;
        char buf[1100];
        size_t stem = strlen(name) - strlen(parts[k]);
        snprintf(buf, sizeof buf, "%.*s.c.weight", (int)stem, name);
        return pth_find(p, buf);
    }
    return -1;
}

static int find_part(const pth_t *p, const char *stem, size_t sl, const char *suffix)
{
    char buf[1100];
    snprintf(buf, sizeof buf, "%.*s%s", (int)sl, stem, suffix);
    return pth_find(p, buf);
}

/* Folds BN into conv i ("<x>.c.weight"); writes "<x>.c.weight" and "<x>.c.bias". */
static int fold_bn(const pth_t *p, int ci, wts_writer_t *out, err_t *err)
{
    const pth_tensor_t *cw = &p->named[ci];
    size_t sl = strlen(cw->name) - strlen(".c.weight");
    const char *sfx[4] = {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"};
    int idx[4];
    if (cw->ndim < 1 || !is_float(cw->dtype)) return err_set(err, ERR_FORMAT, "pth: conv '%s' is not a float tensor with an output dim", cw->name);
    int64_t O = cw->shape[0];
    for (int k = 0; k < 4; k++) {
        idx[k] = find_part(p, cw->name, sl, sfx[k]);
        if (idx[k] < 0) return err_set(err, ERR_FORMAT, "pth: Conv2d_BN '%.*s' lacks '%s'", (int)sl, cw->name, sfx[k] + 1);
        const pth_tensor_t *t = &p->named[idx[k]];
        if (t->ndim != 1 || t->shape[0] != O || !is_float(t->dtype))
            return err_set(err, ERR_FORMAT, "pth: '%s' should be a float [%lld] tensor", t->name, (long long)O);
    }
    int bi = find_part(p, cw->name, sl, ".c.bias");
    if (bi >= 0 && (p->named[bi].ndim != 1 || p->named[bi].shape[0] != O || !is_float(p->named[bi].dtype)))
        return err_set(err, ERR_FORMAT, "pth: '%s' should be a float [%lld] tensor", p->named[bi].name, (long long)O);
    float *w = malloc((size_t)(cw->numel ? cw->numel : 1) * 4), *bn = malloc((size_t)(5 * O + 1) * 4);
    int rc = 0;
    if (!w || !bn) { rc = err_set(err, ERR_NOMEM, "pth: out of memory folding '%s'", cw->name); goto done; }
    rc = pth_read_f32(p, ci, w, err);
    for (int k = 0; k < 4 && rc == 0; k++) rc = pth_read_f32(p, idx[k], bn + k * O, err);
    if (rc == 0 && bi >= 0) rc = pth_read_f32(p, bi, bn + 4 * O, err);
    else if (rc == 0) memset(bn + 4 * O, 0, (size_t)O * 4);
    if (rc) goto done;
    int64_t per = O ? cw->numel / O : 0;
    for (int64_t o = 0; o < O; o++) {
        double sc = (double)bn[o] / sqrt((double)bn[3 * O + o] + 1e-5);
        for (int64_t j = 0; j < per; j++) w[o * per + j] = (float)(w[o * per + j] * sc);
        bn[4 * O + o] = (float)(((double)bn[4 * O + o] - bn[2 * O + o]) * sc + bn[O + o]);
    }
    rc = wts_writer_add(out, cw->name, WTS_F32, cw->ndim, cw->shape, w, err);
    if (rc == 0) {
        char bname[1100];
        snprintf(bname, sizeof bname, "%.*s.c.bias", (int)sl, cw->name);
        int64_t bs[1] = {O};
        rc = wts_writer_add(out, bname, WTS_F32, 1, bs, bn + 4 * O, err);
    }
done:
    free(w);
    free(bn);
    return rc;
}

int pth_convert_sam(const pth_t *p, wts_writer_t *out, const char *source, pth_sam_info_t *info,
                    err_t *err)
{
    pth_sam_info_t inf;
    memset(&inf, 0, sizeof inf);
    int pe = pth_find(p, "image_encoder.patch_embed.proj.weight");
    if (pe >= 0) {
        const pth_tensor_t *t = &p->named[pe];
        if (t->ndim != 4 || t->shape[1] != 3 || t->shape[2] != 16 || t->shape[3] != 16 || t->shape[0] <= 0 || t->shape[0] > 65536)
            return err_set(err, ERR_FORMAT, "pth: image_encoder.patch_embed.proj.weight should be [C,3,16,16]");
        inf.embed_dim = (int)t->shape[0];
        char nm[64];
        while (inf.depth < 100000) {
            snprintf(nm, sizeof nm, "image_encoder.blocks.%d.norm1.weight", inf.depth);
            if (pth_find(p, nm) < 0) break;
            inf.depth++;
        }
        const char *e = "vit_custom";
        if (inf.embed_dim == 768 && inf.depth == 12) e = "vit_b";
        else if (inf.embed_dim == 1024 && inf.depth == 24) e = "vit_l";
        else if (inf.embed_dim == 1280 && inf.depth == 32) e = "vit_h";
        snprintf(inf.encoder, sizeof inf.encoder, "%s", e);
    } else if (pth_find(p, "image_encoder.patch_embed.seq.0.c.weight") >= 0) {
        snprintf(inf.encoder, sizeof inf.encoder, "tinyvit_5m");
    } else {
        return err_set(err, ERR_FORMAT, "pth: no SAM image encoder found (neither image_encoder.patch_embed.proj.weight "
                                        "(ViT) nor image_encoder.patch_embed.seq.0.c.weight (TinyViT))");
    }
    for (int i = 0; i < p->nnamed; i++) {
        const char *nm = p->named[i].name;
        if (ends_with(nm, ".attention_bias_idxs") || ends_with(nm, ".num_batches_tracked")) {
            inf.n_dropped++;
            continue;
        }
        if (bn_owner(p, nm) >= 0) continue; /* written folded with its conv */
        if (ends_with(nm, ".c.bias")) {
            size_t sl = strlen(nm) - strlen(".c.bias");
            if (find_part(p, nm, sl, ".bn.weight") >= 0 && find_part(p, nm, sl, ".c.weight") >= 0) continue;
        }
        if (ends_with(nm, ".c.weight") && find_part(p, nm, strlen(nm) - strlen(".c.weight"), ".bn.weight") >= 0) {
            TRY(fold_bn(p, i, out, err));
            inf.n_bn_folded++;
            inf.n_tensors += 2;
            continue;
        }
        TRY(add_tensor(p, i, nm, out, err));
        inf.n_tensors++;
    }
    TRY(wts_writer_set_meta(out, "moda.kind", "sam-weights", err));
    TRY(wts_writer_set_meta(out, "moda.encoder", inf.encoder, err));
    if (source) TRY(wts_writer_set_meta(out, "moda.source", source, err));
    if (info) *info = inf;
    return 0;
}
