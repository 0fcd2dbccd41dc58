/* test_moda.c — MoDA adapter, bank and dataset tests (tests/moda/CMakeLists.txt).
 *
 *   test_moda bank                    unit: save→load→save byte-identical; wrong base model,
 *                                     corrupt file, missing/misshapen tensor -> clear errors
 *   test_moda dataset WORKDIR         unit: missing mask, size mismatch, empty split,
 *                                     non-binary mask, bad split line -> errors naming the file
 *   test_moda zeroshot MODEL DATA     a fresh adapter reproduces SAM's mask-0 logits (≤ 1e-5)
 *                                     and leaves SAM's outputs unchanged, on real images
 *   test_moda fd MODEL                adapter + hq token gradients vs central differences
 *   test_moda grad MODEL PY SCRIPT WORK   gradients vs the PyTorch model (ref_adapter.py)
 *
 * Exit 1 on any failed check, 77 when the model file is missing.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter.h"
#include "adapter_bank.h"
#include "bank.h"
#include "dataset.h"
#include "image.h"
#include "kn.h"
#include "sam.h"
#include "expect.h"

#define LRN (SAM_LOWRES * SAM_LOWRES)
#define EMBN (SAM_EMB_C * SAM_EMB * SAM_EMB)

static void fill(float *x, size_t n, uint64_t *rng, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = (2.0f * kn_rng_uniform(rng) - 1.0f) * scale;
}

static int model_ok(const char *p)
{
    struct stat st;
    if (stat(p, &st) == 0) return 1;
    printf("SKIP: no model at %s\n", p);
    return 0;
}

/* ---- bank ------------------------------------------------------------------------------ */

static const char *HASH_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *HASH_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static abank_t *make_bank(uint64_t seed)
{
    err_t e = {0};
    abank_t *b = abank_new(HASH_A, &e);
    uint64_t rng = seed;
    const char *names[2] = {"line-2", "bsdata"};
    for (int d = 0; d < 2; d++) {
        adapter_t *a = adapter_new(16, &e);
        fill(a->data, a->size, &rng, 1.0f);
        abank_replay_t rp[3];
        uint8_t bytes[3][40];
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 40; k++) bytes[r][k] = (uint8_t)(kn_rng_next(&rng) & 255);
            rp[r].image = (abank_blob_t){bytes[r], 40 - r};
            rp[r].mask = (abank_blob_t){bytes[r] + 3, 20};
        }
        abank_metric_t m[2] = {{"test_iou_box", 0.1 * (d + 1) + 1e-17}, {"epochs", 24}};
        int rc = abank_put_domain(b, names[d], &a, rp, 3, m, 2, "2026-11-29T09:00:00Z", &e);
        EXPECTF(rc == 0 && !a, "put_domain: %s", e.msg);
    }
    float sel[10 * 16];
    fill(sel, 160, &rng, 1.0f);
    int64_t sh[2] = {10, 16};
    EXPECTF(abank_put_selector(b, "tokens", 2, sh, sel, &e) == 0, "put_selector: %s", e.msg);
    return b;
}

static int test_bank(void)
{
    err_t e = {0};
    abank_t *b = make_bank(7);
    void *m1, *m2;
    size_t l1, l2;
    EXPECTF(abank_to_memory(b, &m1, &l1, &e) == 0, "to_memory: %s", e.msg);
    abank_t *c = abank_from_memory(m1, l1, "m1", HASH_A, 16, &e);
    EXPECTF(c, "from_memory: %s", e.msg);
    if (!c) return 1;
    EXPECTF(c->n_domains == 2 && !strcmp(c->domains[0].name, "bsdata"), "domains after load");
    EXPECTF(c->domains[1].n_replay == 3 && c->domains[1].replay[1].image.size == 39, "replay kept");
    EXPECTF(abank_to_memory(c, &m2, &l2, &e) == 0, "to_memory 2: %s", e.msg);
    EXPECTF(l1 == l2 && !memcmp(m1, m2, l1), "save -> load -> save is not byte-identical");
    EXPECTF(!memcmp(abank_find(b, "bsdata")->adapter->data, abank_find(c, "bsdata")->adapter->data,
                    sizeof(float) * b->domains[0].adapter->size),
            "adapter tensors differ after load");
    /* file round trip */
    char path[] = "/tmp/test_moda_bankXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    EXPECTF(abank_save(c, path, &e) == 0, "save: %s", e.msg);
    abank_t *d = abank_load(path, HASH_A, 0, &e);
    EXPECTF(d, "load: %s", e.msg);
    abank_destroy(&d);
    /* wrong base model */
    err_clear(&e);
    d = abank_load(path, HASH_B, 0, &e);
    EXPECTF(!d && e.code == ERR_VERSION && strstr(e.msg, "base model"), "wrong base model: %d %s",
            e.code, e.msg);
    abank_destroy(&d);
    /* wrong early channels */
    err_clear(&e);
    d = abank_from_memory(m1, l1, "m1", HASH_A, 160, &e);
    EXPECTF(!d && e.code == ERR_VERSION && strstr(e.msg, "early"), "early channels: %s", e.msg);
    /* corrupt: truncated, and a broken header */
    err_clear(&e);
    d = abank_from_memory(m1, l1 - 7, "cut", HASH_A, 0, &e);
    EXPECTF(!d && e.code != 0 && strstr(e.msg, "cut"), "truncated: %s", e.msg);
    printf("truncated bank -> %s\n", e.msg);
    uint8_t *bad = malloc(l1);
    memcpy(bad, m1, l1);
    bad[12] = '#';
    err_clear(&e);
    d = abank_from_memory(bad, l1, "bad", HASH_A, 0, &e);
    EXPECTF(!d && e.code == ERR_FORMAT, "corrupt header: %d %s", e.code, e.msg);
    printf("corrupt bank -> %s\n", e.msg);
    free(bad);
    /* missing tensor: rebuild a bank without domain.bsdata.compress.3.bias */
    wts_t *w = wts_from_memory(m1, l1, &e);
    wts_writer_t *wr = wts_writer_new();
    for (int i = 0; i < wts_count(w); i++) {
        const wts_tensor_t *t = wts_at(w, i);
        if (!strcmp(t->name, "domain.bsdata.compress.3.bias")) continue;
        wts_writer_add(wr, t->name, t->dtype, t->ndim, t->shape, t->data, &e);
    }
    const char *keys[4] = {"moda.kind", "moda.bank_format", "moda.base_model", "moda.domains"};
    for (int k = 0; k < 4; k++) wts_writer_set_meta(wr, keys[k], wts_meta(w, keys[k]), &e);
    void *m3;
    size_t l3;
    wts_writer_to_memory(wr, &m3, &l3, &e);
    err_clear(&e);
    d = abank_from_memory(m3, l3, "m3", HASH_A, 0, &e);
    EXPECTF(!d && e.code == ERR_FORMAT && strstr(e.msg, "domain.bsdata.compress.3.bias") &&
                strstr(e.msg, "missing"),
            "missing tensor: %s", e.msg);
    printf("missing tensor -> %s\n", e.msg);
    free(m3);
    wts_writer_destroy(&wr);
    wts_destroy(&w);
    /* bad domain name */
    adapter_t *a = adapter_new(16, &e);
    EXPECTF(abank_put_domain(c, "Bad Name", &a, NULL, 0, NULL, 0, NULL, &e) == ERR_INVALID,
            "bad name accepted");
    adapter_destroy(&a);
    unlink(path);
    free(m1);
    free(m2);
    abank_destroy(&b);
    abank_destroy(&c);
    return 0;
}

/* ---- dataset ---------------------------------------------------------------------------- */

static void write_png(const char *path, int w, int h, int c, uint8_t v, uint8_t odd)
{
    err_t e = {0};
    image_t *im = image_new(w, h, c, &e);
    memset(im->data, v, (size_t)w * h * c);
    if (odd) im->data[(size_t)w * h * c / 2] = odd;
    image_save_png(im, path, &e);
    image_destroy(&im);
}

static void write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

static int test_dataset(const char *work)
{
    char d[4096], p[4200];
    snprintf(d, sizeof d, "%s/ds", work);
    mkdir(work, 0755);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/images", d), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/masks", d), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/images/a.png", d), write_png(p, 20, 10, 3, 100, 0);
    snprintf(p, sizeof p, "%s/images/b.png", d), write_png(p, 20, 10, 3, 100, 0);
    snprintf(p, sizeof p, "%s/masks/a.png", d), write_png(p, 20, 10, 1, 0, 255);
    snprintf(p, sizeof p, "%s/masks/b.png", d), unlink(p); /* left by an earlier run */
    snprintf(p, sizeof p, "%s/split.txt", d);
    err_t e = {0};
    /* missing mask for b */
    write_text(p, "a train\nb test\n");
    dataset_t *ds = dataset_open(d, &e);
    EXPECTF(!ds && e.code == ERR_NOTFOUND && strstr(e.msg, "masks/b.png"), "missing mask: %s",
            e.msg);
    printf("missing mask -> %s\n", e.msg);
    /* size mismatch */
    snprintf(p, sizeof p, "%s/masks/b.png", d), write_png(p, 21, 10, 1, 0, 255);
    snprintf(p, sizeof p, "%s/split.txt", d);
    ds = dataset_open(d, &e);
    EXPECTF(ds && ds->n == 2 && ds->n_train == 1, "open: %s", e.msg);
    image_t *im;
    uint8_t *m;
    EXPECTF(ds && dataset_load(ds, 0, &im, &m, &e) == 0 && m[100] == 1 && m[0] == 0, "load a: %s",
            e.msg);
    image_destroy(&im);
    free(m);
    err_clear(&e);
    EXPECTF(ds && dataset_load(ds, 1, &im, &m, &e) == ERR_FORMAT && strstr(e.msg, "masks/b.png") &&
                strstr(e.msg, "21x10"),
            "size mismatch: %s", e.msg);
    printf("size mismatch -> %s\n", e.msg);
    dataset_close(&ds);
    /* non-binary */
    snprintf(p, sizeof p, "%s/masks/b.png", d), write_png(p, 20, 10, 1, 0, 128);
    snprintf(p, sizeof p, "%s/split.txt", d);
    ds = dataset_open(d, &e);
    err_clear(&e);
    EXPECTF(ds && dataset_load(ds, 1, &im, &m, &e) == ERR_FORMAT && strstr(e.msg, "not binary") &&
                strstr(e.msg, "masks/b.png"),
            "non-binary: %s", e.msg);
    printf("non-binary mask -> %s\n", e.msg);
    dataset_close(&ds);
    /* empty split, bad line */
    write_text(p, "a train\nb train\n");
    err_clear(&e);
    ds = dataset_open(d, &e);
    EXPECTF(!ds && e.code == ERR_INVALID && strstr(e.msg, "split.txt") && strstr(e.msg, "0 test"),
            "empty split: %s", e.msg);
    printf("empty split -> %s\n", e.msg);
    write_text(p, "\n");
    err_clear(&e);
    ds = dataset_open(d, &e);
    EXPECTF(!ds && e.code == ERR_INVALID, "empty file: %s", e.msg);
    write_text(p, "a train\nb validation\n");
    err_clear(&e);
    ds = dataset_open(d, &e);
    EXPECTF(!ds && e.code == ERR_FORMAT && strstr(e.msg, "line 2"), "bad line: %s", e.msg);
    printf("bad split line -> %s\n", e.msg);
    err_clear(&e);
    ds = dataset_open("/nonexistent/dir", &e);
    EXPECTF(!ds && e.code == ERR_NOTFOUND, "missing dir");
    return 0;
}

/* ---- model helpers ------------------------------------------------------------------------ */

/* A non-trivial adapter: zero-shot init, then every parameter nudged (so the fusion
 * branches and their first layers carry gradient). */
static adapter_t *random_adapter(const sam_t *sam, int early_c, uint64_t seed)
{
    err_t e = {0};
    adapter_t *a = adapter_new(early_c, &e);
    adapter_init_from_sam(a, sam_weights(sam), seed, &e);
    uint64_t rng = seed + 99;
    for (int p = 0; p < ADP_NPARAM; p++) {
        float *x = a->data + a->params[p].off;
        float s = strstr(a->params[p].name, ".3.") ? 0.02f : 0.05f;
        for (size_t i = 0; i < a->params[p].n; i++) x[i] += (2.0f * kn_rng_uniform(&rng) - 1.0f) * s;
    }
    return a;
}

static double wsum(const float *x, const float *g, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * g[i];
    return s;
}

/* ---- zero-shot ------------------------------------------------------------------------------ */

static int test_zeroshot(const char *model, const char *data)
{
    if (!model_ok(model)) return 77;
    err_t e = {0};
    sam_t *sam = sam_load(model, &e);
    EXPECTF(sam, "load: %s", e.msg);
    if (!sam) return 1;
    int ec = sam_early_channels(sam);
    adapter_t *a = adapter_new(ec, &e);
    EXPECTF(adapter_init_from_sam(a, sam_weights(sam), 1, &e) == 0, "init: %s", e.msg);
    adp_work_t *w = adp_work_new(ec, &e);
    samdec_t *dec = samdec_new(sam_weights(sam), &e);
    float *lr_a = malloc(sizeof(float) * 4 * LRN), *lr_b = malloc(sizeof(float) * 4 * LRN);
    float *logits = malloc(sizeof(float) * LRN), *mask_in = malloc(sizeof(float) * LRN);
    const char *doms[2] = {"nuclei", "magtile"};
    double worst = 0, worst_sam = 0;
    for (int di = 0; di < 2; di++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/cl/%s", data, doms[di]);
        dataset_t *ds = dataset_open(dir, &e);
        EXPECTF(ds, "dataset: %s", e.msg);
        if (!ds) continue;
        image_t *im;
        uint8_t *m;
        dataset_load(ds, 0, &im, &m, &e);
        sam_embedding_t emb = {0};
        EXPECTF(sam_encode(sam, im, &emb, NULL, 1, &e) == 0, "encode: %s", e.msg);
        float sx = (float)emb.info.new_w / im->w, sy = (float)emb.info.new_h / im->h;
        sam_point_t box[2] = {{10 * sx, 12 * sy, 2}, {(im->w - 5) * sx, (im->h - 9) * sy, 3}};
        sam_point_t pts[3] = {{im->w * 0.5f * sx, im->h * 0.4f * sy, 1},
                              {im->w * 0.2f * sx, im->h * 0.7f * sy, 0}, {0, 0, -1}};
        sam_point_t pad[1] = {{0, 0, -1}};
        for (int i = 0; i < LRN; i++) mask_in[i] = (float)((i * 7919) % 17) - 8.0f;
        struct { const char *what; const sam_point_t *p; int n; const float *mi; } cs[4] = {
            {"box", box, 2, NULL}, {"points", pts, 3, NULL}, {"none", pad, 1, NULL},
            {"mask", pad, 1, mask_in}};
        for (int c = 0; c < 4; c++) {
            float iou_a[4], iou_b[4];
            int rc = adapter_forward(a, dec, w, emb.emb, emb.early, cs[c].p, cs[c].n, cs[c].mi,
                                     logits, lr_a, iou_a, 1, &e);
            EXPECTF(rc == 0, "forward: %s", e.msg);
            rc = samdec_forward(dec, emb.emb, cs[c].p, cs[c].n, cs[c].mi, lr_b, iou_b, &e);
            double d = 0, ds_ = 0, mx = 0;
            for (int i = 0; i < LRN; i++) { /* same run: the hq row vs the mask-0 row */
                d = fmax(d, fabs(logits[i] - lr_a[i]));
                mx = fmax(mx, fabs(lr_b[i]));
            }
            for (int i = 0; i < 4 * LRN; i++) ds_ = fmax(ds_, fabs(lr_a[i] - lr_b[i]));
            for (int i = 0; i < 4; i++) ds_ = fmax(ds_, fabs(iou_a[i] - iou_b[i]));
            printf("%-8s %-7s fresh adapter vs SAM mask 0: max abs %.3g (|logits| ≤ %.1f); "
                   "SAM outputs with/without hq token: max abs %.3g\n", doms[di], cs[c].what, d,
                   mx, ds_);
            worst = fmax(worst, d);
            worst_sam = fmax(worst_sam, ds_);
        }
        sam_embedding_free(&emb);
        image_destroy(&im);
        free(m);
        dataset_close(&ds);
    }
    /* the SAM rows go through GEMMs with one more row when the hq token is present, so
     * OpenBLAS may block them differently: equal up to float rounding, not bit for bit */
    EXPECTF(worst <= 1e-5, "fresh adapter differs from SAM mask 0 by %.3g (tol 1e-5)", worst);
    EXPECTF(worst_sam <= 1e-4, "SAM outputs changed by the hq token (%.3g, tol 1e-4)", worst_sam);
    free(lr_a), free(lr_b), free(logits), free(mask_in);
    samdec_destroy(&dec);
    adp_work_destroy(&w);
    adapter_destroy(&a);
    sam_destroy(&sam);
    return 0;
}

/* ---- finite differences ------------------------------------------------------------------------ */

static int test_fd(const char *model)
{
    if (!model_ok(model)) return 77;
    err_t e = {0};
    sam_t *sam = sam_load(model, &e);
    if (!sam) return 1;
    int ec = sam_early_channels(sam);
    adapter_t *a = random_adapter(sam, ec, 5);
    adp_work_t *w = adp_work_new(ec, &e);
    samdec_t *dec = samdec_new(sam_weights(sam), &e);
    uint64_t rng = 3;
    float *emb = malloc(sizeof(float) * EMBN), *early = malloc(sizeof(float) * ec * 4096);
    float *G = malloc(sizeof(float) * LRN), *logits = malloc(sizeof(float) * LRN);
    float *grad = calloc(a->size, sizeof(float));
    fill(emb, EMBN, &rng, 0.5f);
    fill(early, (size_t)ec * 4096, &rng, 1.0f);
    fill(G, LRN, &rng, 1.0f / 256);
    sam_point_t pts[3] = {{300, 410, 1}, {620, 200, 0}, {0, 0, -1}};
    adapter_forward(a, dec, w, emb, early, pts, 3, NULL, logits, NULL, NULL, 1, &e);
    EXPECTF(adapter_backward(a, dec, w, G, grad, &e) == 0, "backward: %s", e.msg);
    struct { const char *p; size_t i; } probes[] = {
        {"hq_token", 3}, {"hq_token", 200}, {"hq_mlp.layers.1.weight", 4321},
        {"hq_mlp.layers.2.bias", 5}, {"mask_feature.0.weight", 77}, {"mask_feature.1.bias", 9},
        {"mask_feature.3.weight", 500}, {"embedding_encoder.0.weight", 4000},
        {"embedding_encoder.3.bias", 1}, {"compress.0.weight", 12345}, {"compress.1.weight", 30},
        {"compress.3.weight", 999}};
    int np = (int)(sizeof probes / sizeof probes[0]);
    double worst = 0;
    for (int k = 0; k < np; k++) {
        float *x = adapter_param(a, probes[k].p) + probes[k].i;
        float g = grad[(size_t)(x - a->data)];
        float h = 1e-2f * fmaxf(1.0f, fabsf(*x));
        float x0 = *x;
        *x = x0 + h;
        adapter_forward(a, dec, w, emb, early, pts, 3, NULL, logits, NULL, NULL, 0, &e);
        double lp = wsum(logits, G, LRN);
        *x = x0 - h;
        adapter_forward(a, dec, w, emb, early, pts, 3, NULL, logits, NULL, NULL, 0, &e);
        double lm = wsum(logits, G, LRN);
        *x = x0;
        double fd = (lp - lm) / (2.0 * h);
        double rel = fabs(fd - g) / fmax(fabs(fd), 1e-3);
        printf("%-28s[%5zu] analytic %+.6e  fd %+.6e  rel %.2e\n", probes[k].p, probes[k].i, g,
               fd, rel);
        worst = fmax(worst, rel);
    }
    EXPECTF(worst <= 2e-2, "finite differences: worst relative error %.3g (tol 2e-2)", worst);
    free(emb), free(early), free(G), free(logits), free(grad);
    samdec_destroy(&dec);
    adp_work_destroy(&w);
    adapter_destroy(&a);
    sam_destroy(&sam);
    return 0;
}

/* ---- PyTorch reference --------------------------------------------------------------------------- */

static int test_grad(const char *model, const char *py, const char *script, const char *work)
{
    if (!model_ok(model)) return 77;
    err_t e = {0};
    sam_t *sam = sam_load(model, &e);
    if (!sam) return 1;
    int ec = sam_early_channels(sam);
    adapter_t *a = random_adapter(sam, ec, 11);
    adp_work_t *w = adp_work_new(ec, &e);
    samdec_t *dec = samdec_new(sam_weights(sam), &e);
    uint64_t rng = 17;
    float *emb = malloc(sizeof(float) * EMBN), *early = malloc(sizeof(float) * ec * 4096);
    float *G = malloc(sizeof(float) * LRN), *logits = malloc(sizeof(float) * LRN);
    float *lr = malloc(sizeof(float) * 4 * LRN);
    float *grad = calloc(a->size, sizeof(float));
    fill(emb, EMBN, &rng, 0.5f);
    fill(early, (size_t)ec * 4096, &rng, 1.0f);
    fill(G, LRN, &rng, 1.0f / 256);
    float ptsf[4][3] = {{250, 300, 2}, {700, 640, 3}, {480, 470, 1}, {0, 0, -1}};
    sam_point_t pts[4];
    for (int i = 0; i < 4; i++) pts[i] = (sam_point_t){ptsf[i][0], ptsf[i][1], ptsf[i][2]};
    float iou[4];
    EXPECTF(adapter_forward(a, dec, w, emb, early, pts, 4, NULL, logits, lr, iou, 1, &e) == 0,
            "forward: %s", e.msg);
    EXPECTF(adapter_backward(a, dec, w, G, grad, &e) == 0, "backward: %s", e.msg);
    mkdir(work, 0755);
    char in[4200], out[4200], cmd[13000];
    snprintf(in, sizeof in, "%s/grad_in.safetensors", work);
    snprintf(out, sizeof out, "%s/grad_out.safetensors", work);
    wts_writer_t *wr = wts_writer_new();
    int64_t s3[3] = {256, 64, 64}, se[3] = {ec, 64, 64}, sp[2] = {4, 3}, sg[2] = {256, 256};
    wts_writer_add(wr, "emb", WTS_F32, 3, s3, emb, &e);
    wts_writer_add(wr, "early", WTS_F32, 3, se, early, &e);
    wts_writer_add(wr, "pts", WTS_F32, 2, sp, ptsf, &e);
    wts_writer_add(wr, "G", WTS_F32, 2, sg, G, &e);
    for (int p = 0; p < ADP_NPARAM; p++) {
        char n[80];
        snprintf(n, sizeof n, "a.%s", a->params[p].name);
        wts_writer_add(wr, n, WTS_F32, a->params[p].ndim, a->params[p].shape,
                       a->data + a->params[p].off, &e);
    }
    EXPECTF(wts_writer_save(wr, in, &e) == 0, "write: %s", e.msg);
    wts_writer_destroy(&wr);
    snprintf(cmd, sizeof cmd, "%s %s grad %s %s %s", py, script, model, in, out);
    EXPECTF(system(cmd) == 0, "python failed: %s", cmd);
    wts_t *r = wts_open(out, &e);
    EXPECTF(r, "read torch output: %s", e.msg);
    if (r) {
        const float *tl = wts_f32(r, "logits", &e, 2, 256, 256);
        const float *t0 = wts_f32(r, "sam0", &e, 2, 256, 256);
        double d = 0, m = 1e-6, d0 = 0;
        for (int i = 0; tl && i < LRN; i++) {
            d = fmax(d, fabs(tl[i] - logits[i]));
            m = fmax(m, fabs(tl[i]));
            d0 = fmax(d0, fabs(t0[i] - lr[i]));
        }
        printf("logits vs torch: max abs %.3g (max |logit| %.2f); SAM mask 0 vs torch %.3g\n", d,
               m, d0);
        EXPECTF(tl && d / m <= 1e-3, "adapter logits differ from torch: %.3g", d / m);
        EXPECTF(t0 && d0 / m <= 1e-3, "SAM mask 0 differs from torch: %.3g", d0);
        for (int p = 0; p < ADP_NPARAM; p++) {
            char n[80];
            const adp_param_t *pp = &a->params[p];
            snprintf(n, sizeof n, "grad.%s", pp->name);
            const wts_tensor_t *t = wts_find(r, n);
            EXPECTF(t && t->nbytes == pp->n * sizeof(float), "no %s in torch output", n);
            if (!t) continue;
            const float *tg = t->data;
            const float *cg = grad + pp->off;
            double dd = 0, mm = 1e-12;
            for (size_t i = 0; i < pp->n; i++) {
                dd = fmax(dd, fabs(tg[i] - cg[i]));
                mm = fmax(mm, fabs(tg[i]));
            }
            printf("grad %-28s max |torch| %.3e  rel err %.2e\n", pp->name, mm, dd / mm);
            EXPECTF(dd / mm <= 2e-3, "gradient of %s differs from torch: %.3g", pp->name, dd / mm);
        }
        wts_destroy(&r);
    }
    free(emb), free(early), free(G), free(logits), free(grad), free(lr);
    samdec_destroy(&dec);
    adp_work_destroy(&w);
    adapter_destroy(&a);
    sam_destroy(&sam);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc >= 2 && !strcmp(argv[1], "bank")) rc = test_bank();
    else if (argc >= 3 && !strcmp(argv[1], "dataset")) rc = test_dataset(argv[2]);
    else if (argc >= 4 && !strcmp(argv[1], "zeroshot")) rc = test_zeroshot(argv[2], argv[3]);
    else if (argc >= 3 && !strcmp(argv[1], "fd")) rc = test_fd(argv[2]);
    else if (argc >= 6 && !strcmp(argv[1], "grad")) rc = test_grad(argv[2], argv[3], argv[4], argv[5]);
    else {
        fprintf(stderr, "usage: test_moda bank|dataset WORK|zeroshot MODEL DATA|fd MODEL|"
                        "grad MODEL PY SCRIPT WORK\n");
        return 2;
    }
    if (rc == 77) return 77;
    if (expect_failures) {
        fprintf(stderr, "%d check(s) failed\n", expect_failures);
        return 1;
    }
    printf("all checks passed\n");
    return rc;
}
