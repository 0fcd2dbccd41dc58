/* test_selector.c — tests of common/selector.c and tinyvit_forward_taps (see CMakeLists.txt).
 *
 *   test_selector fd                          finite differences, small random config
 *   test_selector bank                        abank round trip
 *   test_selector real MODEL CL_DIR D1 D2...  real taps: invariance + tiny training run
 * Exit 0 pass, 1 fail, 77 skip (model or data missing).
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "adapter_bank.h"
#include "image.h"
#include "kn.h"
#include "preprocess.h"
#include "sam.h"
#include "sam_parts.h"
#include "selector.h"
#include "wts.h"
#include "expect.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float gauss(uint64_t *r)
{
    float u1 = kn_rng_uniform(r), u2 = kn_rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* ---- small random configuration ---- */
typedef struct small {
    selector_cfg_t cfg;
    selector_block_w_t bw[8];
    float *mem;
    float *taps;
    size_t ntaps;
} small_t;

static float *fill(float **cur, size_t n, float mean, float sd, uint64_t *r)
{
    float *p = *cur;
    for (size_t i = 0; i < n; i++) p[i] = mean + sd * gauss(r);
    *cur += n;
    return p;
}

static void small_make(small_t *s, uint64_t seed)
{
    selector_cfg_t c = {.n_patch = 7, .n_tok = 3, .head_dim = 4, .dim = {8, 12}, .depth = {2, 1}};
    s->cfg = c;
    s->mem = malloc(sizeof(float) * 200000);
    float *cur = s->mem;
    uint64_t r = seed;
    int nb = c.depth[0] + c.depth[1];
    s->ntaps = 0;
    for (int b = 0; b < nb; b++) {
        int C = c.dim[b < c.depth[0] ? 0 : 1];
        float a = 1.0f / sqrtf((float)C);
        selector_block_w_t *w = &s->bw[b];
        w->ln1_w = fill(&cur, C, 1, 0.2f, &r);
        w->ln1_b = fill(&cur, C, 0, 0.2f, &r);
        w->qkv_w = fill(&cur, (size_t)3 * C * C, 0, a, &r);
        w->qkv_b = fill(&cur, (size_t)3 * C, 0, 0.1f, &r);
        w->proj_w = fill(&cur, (size_t)C * C, 0, a, &r);
        w->proj_b = fill(&cur, C, 0, 0.1f, &r);
        w->ln2_w = fill(&cur, C, 1, 0.2f, &r);
        w->ln2_b = fill(&cur, C, 0, 0.2f, &r);
        w->fc1_w = fill(&cur, (size_t)4 * C * C, 0, a, &r);
        w->fc1_b = fill(&cur, (size_t)4 * C, 0, 0.1f, &r);
        w->fc2_w = fill(&cur, (size_t)4 * C * C, 0, 0.5f * a, &r);
        w->fc2_b = fill(&cur, C, 0, 0.1f, &r);
        s->ntaps += (size_t)c.n_patch * 2 * C;
    }
    s->taps = fill(&cur, s->ntaps, 0, 1, &r);
}

static int test_fd(void)
{
    small_t sm;
    small_make(&sm, 42);
    err_t e = {0};
    selector_t *s = selector_new_custom(&sm.cfg, sm.bw, &e);
    EXPECTF(s, "new: %s", e.msg);
    if (!s) return 1;
    EXPECTF(selector_taps_floats(s) == sm.ntaps, "taps floats %zu vs %zu", selector_taps_floats(s),
            sm.ntaps);
    float pr[3];
    EXPECTF(selector_forward(s, sm.taps, pr, &e) == ERR_STATE, "forward before init must fail");
    EXPECTF(selector_init(s, 7, 3, &e) == 0, "init: %s", e.msg);
    EXPECTF(selector_grad(s, sm.taps, 3, 1, NULL, &e) == ERR_RANGE, "label 3 must be refused");
    size_t np;
    float *p = selector_params(s, &np);
    selector_zero_grad(s);
    float loss;
    EXPECTF(selector_grad(s, sm.taps, 1, 1.0f, &loss, &e) == 0, "grad: %s", e.msg);
    float *g = malloc(sizeof(float) * np);
    memcpy(g, selector_grads(s, NULL), sizeof(float) * np);
    /* accumulation: a second call with weight 0.5 adds half */
    EXPECTF(selector_grad(s, sm.taps, 1, 0.5f, NULL, &e) == 0, "grad2: %s", e.msg);
    const float *g2 = selector_grads(s, NULL);
    double accerr = 0;
    for (size_t i = 0; i < np; i++) accerr = fmax(accerr, fabs(g2[i] - 1.5 * g[i]));
    EXPECTF(accerr < 1e-5, "accumulation error %g", accerr);
    /* central differences on every parameter */
    const double eps = 1e-2;
    double worst = 0, gmax = 0, tokmax = 0;
    size_t worst_i = 0;
    int T = sm.cfg.n_tok, C0 = sm.cfg.dim[0];
    for (size_t i = 0; i < np; i++) {
        float keep = p[i];
        float lp, lm;
        p[i] = keep + (float)eps;
        selector_forward(s, sm.taps, pr, &e);
        lp = -logf(pr[1]);
        p[i] = keep - (float)eps;
        selector_forward(s, sm.taps, pr, &e);
        lm = -logf(pr[1]);
        p[i] = keep;
        double fd = ((double)lp - lm) / (2 * eps);
        double d = fabs(fd - g[i]) / (1e-3 + 0.02 * fabs(fd));
        if (d > worst) {
            worst = d;
            worst_i = i;
        }
        gmax = fmax(gmax, fabs(g[i]));
        if (i < (size_t)T * C0) tokmax = fmax(tokmax, fabs(g[i]));
    }
    printf("fd: params %zu loss %.5f max|grad| %.4g max|grad tokens| %.4g worst scaled err %.3f "
           "(param %zu)\n",
           np, loss, gmax, tokmax, worst, worst_i);
    EXPECTF(worst <= 1.0, "gradient mismatch at param %zu (scaled err %.3f)", worst_i, worst);
    EXPECTF(tokmax > 1e-4, "token gradients vanish (%g)", tokmax);
    free(g);
    selector_destroy(&s);
    free(sm.mem);
    return expect_failures ? 1 : 0;
}

static int test_bank(void)
{
    small_t sm;
    small_make(&sm, 5);
    err_t e = {0};
    selector_t *a = selector_new_custom(&sm.cfg, sm.bw, &e), *b = selector_new_custom(&sm.cfg, sm.bw, &e);
    char hash[65];
    memset(hash, 'a', 64);
    hash[64] = 0;
    abank_t *bank = abank_new(hash, &e);
    EXPECTF(a && b && bank, "setup: %s", e.msg);
    if (!a || !b || !bank) return 1;
    EXPECTF(selector_load_from_bank(b, bank, &e) == ERR_NOTFOUND, "empty bank must be NOTFOUND");
    EXPECTF(selector_init(a, 99, 4, &e) == 0, "init: %s", e.msg);
    EXPECTF(selector_save_to_bank(a, bank, &e) == 0, "save: %s", e.msg);
    adapter_t *ad = adapter_new(160, &e); /* a bank file needs one domain */
    EXPECTF(ad && abank_put_domain(bank, "d0", &ad, NULL, 0, NULL, 0, "", &e) == 0, "domain: %s",
            e.msg);
    adapter_destroy(&ad);
    void *buf = NULL;
    size_t len = 0;
    EXPECTF(abank_to_memory(bank, &buf, &len, &e) == 0, "to_memory: %s", e.msg);
    abank_t *back = buf ? abank_from_memory(buf, len, "test", NULL, 0, &e) : NULL;
    EXPECTF(back, "from_memory: %s", e.msg);
    if (back) {
        EXPECTF(selector_load_from_bank(b, back, &e) == 0, "load: %s", e.msg);
        size_t na, nb;
        float *pa = selector_params(a, &na), *pb = selector_params(b, &nb);
        EXPECTF(na == nb && selector_n_domains(b) == 4 && memcmp(pa, pb, sizeof(float) * na) == 0,
                "parameters differ after round trip");
        float qa[4], qb[4];
        selector_forward(a, sm.taps, qa, &e);
        selector_forward(b, sm.taps, qb, &e);
        EXPECTF(memcmp(qa, qb, sizeof qa) == 0, "probabilities differ after round trip");
        abank_clear_selector(back);
        int64_t sh[2] = {2, 3};
        float junk[6] = {0};
        abank_put_selector(back, "keys.weight", 2, sh, junk, &e);
        EXPECTF(selector_load_from_bank(b, back, &e) == ERR_FORMAT && strstr(e.msg, "keys.weight"),
                "misshapen keys.weight must be ERR_FORMAT naming it (%s)", e.msg);
        abank_destroy(&back);
    }
    free(buf);
    abank_destroy(&bank);
    selector_destroy(&a);
    selector_destroy(&b);
    free(sm.mem);
    printf("bank: %s\n", expect_failures ? "FAIL" : "ok");
    return expect_failures ? 1 : 0;
}

/* First k images of split `which` of domain dir (paths to out[k][512]); returns count. */
static int split_images(const char *dir, const char *which, int k, char out[][512])
{
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s/split.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (n < k && fgets(line, sizeof line, f)) {
        char name[256], sp[32];
        if (sscanf(line, "%255s %31s", name, sp) != 2 || strcmp(sp, which)) continue;
        snprintf(path, sizeof path, "%s/images", dir);
        DIR *d = opendir(path);
        if (!d) break;
        struct dirent *de;
        size_t L = strlen(name);
        while ((de = readdir(d)))
            if (!strncmp(de->d_name, name, L) && de->d_name[L] == '.') {
                snprintf(out[n], 512, "%s/images/%s", dir, de->d_name);
                n++;
                break;
            }
        closedir(d);
    }
    fclose(f);
    return n;
}

static int test_real(const char *model, const char *cl, int ndom, char **doms)
{
    if (access(model, R_OK) || access(cl, R_OK)) {
        printf("skip: model or data missing\n");
        return 77;
    }
    err_t e = {0};
    wts_t *w = wts_open(model, &e);
    tinyvit_t *enc = w ? tinyvit_new(w, &e) : NULL;
    selector_t *s = w ? selector_new(w, &e) : NULL;
    sam_t *sam = sam_load(model, &e);
    EXPECTF(enc && s && sam, "setup: %s", e.msg);
    if (!enc || !s) return 1;
    EXPECTF(selector_taps_floats(s) == TINYVIT_TAPS_FLOATS, "taps size");
    enum { PER = 2 };
    int n = 0, labels[64];
    float *taps[64];
    float *x = malloc(sizeof(float) * 3 * 1024 * 1024);
    float *emb = malloc(sizeof(float) * 256 * 4096), *emb2 = malloc(sizeof(float) * 256 * 4096);
    float *early = malloc(sizeof(float) * 160 * 4096), *early2 = malloc(sizeof(float) * 160 * 4096);
    double t_enc = 0, t_enc_taps = 0;
    for (int d = 0; d < ndom && d < 8; d++) {
        char dir[1024], paths[PER][512];
        snprintf(dir, sizeof dir, "%s/%s", cl, doms[d]);
        int k = split_images(dir, "train", PER, paths);
        EXPECTF(k == PER, "domain %s: %d train images found", doms[d], k);
        for (int i = 0; i < k; i++) {
            image_t *im = image_load(paths[i], &e);
            EXPECTF(im, "load %s: %s", paths[i], e.msg);
            if (!im) continue;
            EXPECTF(prep_sam_input(im, x, NULL, NULL, &e) == 0, "prep: %s", e.msg);
            image_destroy(&im);
            taps[n] = malloc(sizeof(float) * TINYVIT_TAPS_FLOATS);
            labels[n] = d;
            double t0 = now_s();
            EXPECTF(tinyvit_forward_taps(enc, x, emb, early, taps[n], &e) == 0, "enc: %s", e.msg);
            t_enc_taps += now_s() - t0;
            if (n == 1) { /* the model-level call gives the same taps */
                float *t2 = malloc(sizeof(float) * TINYVIT_TAPS_FLOATS);
                image_t *im2 = image_load(paths[i], &e);
                sam_embedding_t se = {0};
                EXPECTF(sam && sam_taps_floats(sam) == TINYVIT_TAPS_FLOATS, "sam_taps_floats");
                EXPECTF(im2 && sam && sam_encode_taps(sam, im2, &se, t2, &e) == 0, "encode: %s",
                        e.msg);
                EXPECTF(!memcmp(t2, taps[n], sizeof(float) * TINYVIT_TAPS_FLOATS),
                        "sam_encode_taps taps differ");
                sam_embedding_free(&se);
                image_destroy(&im2);
                free(t2);
            }
            if (n == 0) {
                t0 = now_s();
                EXPECTF(tinyvit_forward(enc, x, emb2, early2, &e) == 0, "enc: %s", e.msg);
                t_enc = now_s() - t0;
                EXPECTF(!memcmp(emb, emb2, sizeof(float) * 256 * 4096) &&
                            !memcmp(early, early2, sizeof(float) * 160 * 4096),
                        "embedding with taps differs from plain forward");
                printf("real: taps invariance: embedding and early bit-identical\n");
            }
            n++;
        }
    }
    printf("real: %d images, encoder with taps %.2f s/img, plain %.2f s\n", n, t_enc_taps / n,
           t_enc);
    EXPECTF(selector_init(s, 1, ndom, &e) == 0, "init: %s", e.msg);
    float pr[8];
    double t0 = now_s();
    for (int r = 0; r < 5; r++) selector_forward(s, taps[0], pr, &e);
    double t_fwd = (now_s() - t0) / 5;
    t0 = now_s();
    selector_zero_grad(s);
    selector_grad(s, taps[0], 0, 1.0f, NULL, &e);
    double t_grad = now_s() - t0;
    selector_stats_t st = {0};
    EXPECTF(selector_train(s, (const float *const *)taps, labels, n, 10, 4, 1e-3f, 3, &st, &e) == 0,
            "train: %s", e.msg);
    printf("real: selector forward %.1f ms, forward+backward %.1f ms; train 10 epochs: %d steps "
           "%.2f s, CE %.4f -> %.4f, train acc %.0f%%\n",
           1e3 * t_fwd, 1e3 * t_grad, st.steps, st.seconds, st.ce_first, st.ce_last,
           100 * st.train_acc);
    for (int i = 0; i < n; i++) {
        selector_forward(s, taps[i], pr, &e);
        printf("real:   sample %d label %d probs", i, labels[i]);
        for (int d = 0; d < ndom; d++) printf(" %.3f", pr[d]);
        printf("\n");
    }
    EXPECTF(st.ce_last < st.ce_first, "CE did not fall (%g -> %g)", st.ce_first, st.ce_last);
    EXPECTF(st.train_acc == 1.0, "training accuracy %.2f < 1", st.train_acc);
    for (int i = 0; i < n; i++) free(taps[i]);
    free(x);
    free(emb);
    free(emb2);
    free(early);
    free(early2);
    selector_destroy(&s);
    tinyvit_destroy(&enc);
    wts_destroy(&w);
    sam_destroy(&sam);
    return expect_failures ? 1 : 0;
}

/* Timing on a TinyViT-sized configuration with random weights and taps. */
static int bench(void)
{
    selector_cfg_t c = {.n_patch = 4096, .n_tok = 10, .head_dim = 32, .dim = {160, 320},
                        .depth = {6, 2}};
    selector_block_w_t bw[8];
    uint64_t r = 1;
    size_t ntaps = 0;
    float *big = malloc(sizeof(float) * 12000000), *cur = big;
    for (int b = 0; b < 8; b++) {
        int C = c.dim[b < 6 ? 0 : 1];
        float a = 1.0f / sqrtf((float)C);
        bw[b].ln1_w = fill(&cur, C, 1, 0.1f, &r);
        bw[b].ln1_b = fill(&cur, C, 0, 0.1f, &r);
        bw[b].qkv_w = fill(&cur, (size_t)3 * C * C, 0, a, &r);
        bw[b].qkv_b = fill(&cur, (size_t)3 * C, 0, 0.1f, &r);
        bw[b].proj_w = fill(&cur, (size_t)C * C, 0, a, &r);
        bw[b].proj_b = fill(&cur, C, 0, 0.1f, &r);
        bw[b].ln2_w = fill(&cur, C, 1, 0.1f, &r);
        bw[b].ln2_b = fill(&cur, C, 0, 0.1f, &r);
        bw[b].fc1_w = fill(&cur, (size_t)4 * C * C, 0, a, &r);
        bw[b].fc1_b = fill(&cur, (size_t)4 * C, 0, 0.1f, &r);
        bw[b].fc2_w = fill(&cur, (size_t)4 * C * C, 0, a, &r);
        bw[b].fc2_b = fill(&cur, C, 0, 0.1f, &r);
        ntaps += (size_t)4096 * 2 * C;
    }
    float *taps = malloc(sizeof(float) * ntaps);
    for (size_t i = 0; i < ntaps; i++) taps[i] = gauss(&r);
    err_t e = {0};
    selector_t *s = selector_new_custom(&c, bw, &e);
    selector_init(s, 1, 3, &e);
    float pr[3];
    double t0 = now_s();
    for (int i = 0; i < 5; i++) selector_forward(s, taps, pr, &e);
    double tf = (now_s() - t0) / 5;
    t0 = now_s();
    for (int i = 0; i < 5; i++) selector_grad(s, taps, 1, 1, NULL, &e);
    double tg = (now_s() - t0) / 5;
    printf("bench: threads %d forward %.1f ms forward+backward %.1f ms\n", kn_get_threads(),
           1e3 * tf, 1e3 * tg);
    selector_destroy(&s);
    free(taps);
    free(big);
    return 0;
}

/* Selection accuracy on held-out images: train on NTRAIN train images per domain, test on
 * NTEST test images; learned tokens vs keys only (MODA.md point 1). Not a ctest. */
static int heldout(const char *model, const char *cl, int ntr, int nte, int ndom, char **doms)
{
    err_t e = {0};
    sam_t *sam = sam_load(model, &e);
    selector_t *s = sam ? selector_new(sam_weights(sam), &e) : NULL;
    if (!s) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return 1;
    }
    int cap = ndom * (ntr + nte), n[2] = {0, 0};
    float **taps[2] = {calloc((size_t)cap, sizeof(float *)), calloc((size_t)cap, sizeof(float *))};
    int *lab[2] = {calloc((size_t)cap, sizeof(int)), calloc((size_t)cap, sizeof(int))};
    char (*paths)[512] = malloc(512 * (size_t)(ntr > nte ? ntr : nte));
    double t0 = now_s();
    for (int d = 0; d < ndom; d++)
        for (int sp = 0; sp < 2; sp++) {
            char dir[1024];
            snprintf(dir, sizeof dir, "%s/%s", cl, doms[d]);
            int k = split_images(dir, sp ? "test" : "train", sp ? nte : ntr, paths);
            for (int i = 0; i < k; i++) {
                image_t *im = image_load(paths[i], &e);
                if (!im) continue;
                float *t = malloc(sizeof(float) * TINYVIT_TAPS_FLOATS);
                sam_embedding_t se = {0};
                if (sam_encode_taps(sam, im, &se, t, &e)) {
                    fprintf(stderr, "encode: %s\n", e.msg);
                    return 1;
                }
                sam_embedding_free(&se);
                image_destroy(&im);
                taps[sp][n[sp]] = t;
                lab[sp][n[sp]++] = d;
            }
        }
    printf("heldout: %d train, %d test images, %d domains, encode %.1f s\n", n[0], n[1], ndom,
           now_s() - t0);
    for (int ko = 0; ko < 2; ko++) {
        selector_init(s, 1, ndom, &e);
        selector_set_keys_only(s, ko);
        selector_stats_t st = {0};
        selector_train(s, (const float *const *)taps[0], lab[0], n[0], 10, 4, 1e-3f, 3, &st, &e);
        int ok = 0;
        for (int i = 0; i < n[1]; i++) {
            int dd;
            selector_predict(s, taps[1][i], &dd, NULL, &e);
            ok += dd == lab[1][i];
        }
        printf("heldout: %s: CE %.4f -> %.4f, train acc %.1f%%, test acc %.1f%% (%d/%d), "
               "train %.1f s\n",
               ko ? "keys only (tokens frozen)" : "learned tokens", st.ce_first, st.ce_last,
               100 * st.train_acc, n[1] ? 100.0 * ok / n[1] : 0.0, ok, n[1], st.seconds);
    }
    for (int sp = 0; sp < 2; sp++) {
        for (int i = 0; i < n[sp]; i++) free(taps[sp][i]);
        free(taps[sp]);
        free(lab[sp]);
    }
    free(paths);
    selector_destroy(&s);
    sam_destroy(&sam);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 7 && !strcmp(argv[1], "heldout"))
        return heldout(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argc - 6, argv + 6);
    if (argc >= 2 && !strcmp(argv[1], "bench")) return bench();
    if (argc >= 2 && !strcmp(argv[1], "--help")) {
        printf("usage: test_selector fd | bank | real MODEL CL_DIR DOMAIN...\n");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "fd")) return test_fd();
    if (argc >= 2 && !strcmp(argv[1], "bank")) return test_bank();
    if (argc >= 6 && !strcmp(argv[1], "real")) return test_real(argv[2], argv[3], argc - 4, argv + 4);
    fprintf(stderr, "usage: test_selector fd | bank | real MODEL CL_DIR DOMAIN...\n");
    return 2;
}
