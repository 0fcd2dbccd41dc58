/* test_selector_ref.c — the domain selector (common/selector.c) end to end against PyTorch.
 *
 *   test_selector_ref PY SCRIPT WORKDIR
 * A small odd configuration (37 patches, 3 tokens, head_dim 4, dims 8/12, depths 2/1,
 * 3 domains) with random frozen blocks, taps and parameters (all biases non-zero) from a
 * fixed seed is written as raw float32 files into WORKDIR; SCRIPT (ref_selector.py, an
 * independent torch model, float64 autograd) writes loss, probabilities and every parameter
 * gradient for each (label, weight) case. Checks: probabilities and loss within 1e-5
 * relative; per gradient block (tokens, merge.weight, merge.bias, keys.weight, keys.bias)
 * max |C - torch| / max |torch| <= 1e-4.
 * Exit 0 pass, 1 fail, 77 skip (python or torch missing).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kn.h"
#include "selector.h"
#include "expect.h"

enum { NPATCH = 37, NTOK = 3, HD = 4, DIM0 = 8, DIM1 = 12, DEP0 = 2, DEP1 = 1, NDOM = 3 };
enum { NBLK = DEP0 + DEP1, NCASE = 3 };
static const int case_label[NCASE] = {0, 2, 1};
static const float case_weight[NCASE] = {1.0f, 0.5f, 1.75f};

static float gauss(uint64_t *r)
{
    float u1 = kn_rng_uniform(r), u2 = kn_rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static float *fill(float **cur, size_t n, float mean, float sd, uint64_t *r)
{
    float *p = *cur;
    for (size_t i = 0; i < n; i++) p[i] = mean + sd * gauss(r);
    *cur += n;
    return p;
}

static int write_raw(const char *dir, const char *name, const float *x, size_t n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = fwrite(x, sizeof(float), n, f);
    return (fclose(f) || k != n) ? -1 : 0;
}

/* max |a - b| / max |b| over n floats (b = torch). */
static double rel_block(const float *a, const float *b, size_t n, double *bmax)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    *bmax = m;
    return d / fmax(m, 1e-30);
}

static int run(const char *py, const char *script, const char *work)
{
    if (access(py, X_OK)) {
        printf("skip: %s not executable\n", py);
        return 77;
    }
    selector_cfg_t cfg = {.n_patch = NPATCH, .n_tok = NTOK, .head_dim = HD, .dim = {DIM0, DIM1},
                          .depth = {DEP0, DEP1}};
    /* frozen blocks, one contiguous buffer in the order ref_selector.py reads */
    size_t nw = 0, ntaps = 0;
    for (int b = 0; b < NBLK; b++) {
        size_t C = (size_t)(b < DEP0 ? DIM0 : DIM1);
        nw += 12 * C * C + 13 * C; /* LNs 4C, qkv 3C²+3C, proj C²+C, fc1 4C²+4C, fc2 4C²+C */
        ntaps += (size_t)NPATCH * 2 * C;
    }
    float *wmem = malloc(sizeof(float) * nw), *taps = malloc(sizeof(float) * ntaps);
    if (!wmem || !taps) return 1;
    selector_block_w_t bw[NBLK];
    float *cur = wmem;
    uint64_t r = 20261129;
    for (int b = 0; b < NBLK; b++) {
        int C = b < DEP0 ? DIM0 : DIM1;
        float a = 1.0f / sqrtf((float)C);
        selector_block_w_t *w = &bw[b];
        w->ln1_w = fill(&cur, C, 1, 0.3f, &r);
        w->ln1_b = fill(&cur, C, 0, 0.2f, &r);
        w->qkv_w = fill(&cur, (size_t)3 * C * C, 0, 1.5f * a, &r);
        w->qkv_b = fill(&cur, (size_t)3 * C, 0, 0.2f, &r);
        w->proj_w = fill(&cur, (size_t)C * C, 0, a, &r);
        w->proj_b = fill(&cur, C, 0, 0.1f, &r);
        w->ln2_w = fill(&cur, C, 1, 0.3f, &r);
        w->ln2_b = fill(&cur, C, 0, 0.2f, &r);
        w->fc1_w = fill(&cur, (size_t)4 * C * C, 0, a, &r);
        w->fc1_b = fill(&cur, (size_t)4 * C, 0, 0.2f, &r);
        w->fc2_w = fill(&cur, (size_t)4 * C * C, 0, 0.5f * a, &r);
        w->fc2_b = fill(&cur, C, 0, 0.1f, &r);
    }
    cur = taps;
    fill(&cur, ntaps, 0, 1.0f, &r);

    err_t e = {0};
    selector_t *s = selector_new_custom(&cfg, bw, &e);
    EXPECTF(s, "new: %s", e.msg);
    if (!s) return 1;
    EXPECTF(selector_taps_floats(s) == ntaps, "taps floats %zu vs %zu", selector_taps_floats(s),
            ntaps);
    EXPECTF(selector_init(s, 3, NDOM, &e) == 0, "init: %s", e.msg);
    size_t np;
    float *p = selector_params(s, &np);
    size_t o_mw = (size_t)NTOK * DIM0, o_mb = o_mw + (size_t)DIM1 * DIM0, o_kw = o_mb + DIM1,
           o_kb = o_kw + (size_t)NDOM * DIM1;
    EXPECTF(np == o_kb + NDOM, "parameter count %zu vs %zu", np, o_kb + NDOM);
    /* non-zero biases and larger keys so the probabilities are not all near 1/3 */
    for (size_t i = o_mb; i < o_kw; i++) p[i] = 0.3f * gauss(&r);
    for (size_t i = o_kw; i < o_kb; i++) p[i] *= 3.0f;
    for (size_t i = o_kb; i < np; i++) p[i] = 0.5f * gauss(&r);

    /* inputs */
    mkdir(work, 0755);
    char path[4200], cmd[13000];
    snprintf(path, sizeof path, "%s/cfg.txt", work);
    FILE *f = fopen(path, "w");
    EXPECTF(f, "cannot write %s", path);
    if (!f) return 1;
    fprintf(f, "%d %d %d %d %d %d %d %d %d\n", NPATCH, NTOK, HD, DIM0, DIM1, DEP0, DEP1, NDOM,
            NCASE);
    for (int c = 0; c < NCASE; c++) fprintf(f, "%d %.9g\n", case_label[c], case_weight[c]);
    fclose(f);
    EXPECTF(write_raw(work, "blocks.bin", wmem, nw) == 0 &&
                write_raw(work, "taps.bin", taps, ntaps) == 0 &&
                write_raw(work, "params.bin", p, np) == 0,
            "cannot write inputs into %s", work);
    snprintf(path, sizeof path, "%s/out.bin", work);
    unlink(path);
    snprintf(cmd, sizeof cmd, "%s %s %s", py, script, work);
    int st = system(cmd);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        printf("skip: torch missing for %s\n", py);
        selector_destroy(&s);
        free(wmem), free(taps);
        return 77;
    }
    EXPECTF(st == 0, "python failed (status %d): %s", st, cmd);

    size_t per = 1 + NDOM + np, nout = per * NCASE;
    float *ref = malloc(sizeof(float) * (nout + 1));
    f = fopen(path, "rb");
    size_t got = f ? fread(ref, sizeof(float), nout + 1, f) : 0;
    if (f) fclose(f);
    EXPECTF(got == nout, "torch output %s: %zu floats, expected %zu", path, got, nout);
    if (got != nout) {
        free(ref);
        selector_destroy(&s);
        free(wmem), free(taps);
        return 1;
    }

    static const char *bname[5] = {"tokens", "merge.weight", "merge.bias", "keys.weight",
                                   "keys.bias"};
    size_t boff[6] = {0, o_mw, o_mb, o_kw, o_kb, np};
    double worst_p = 0, worst_l = 0, worst_g[5] = {0};
    for (int c = 0; c < NCASE; c++) {
        const float *tr = ref + per * (size_t)c;
        float probs[NDOM], loss = 0;
        EXPECTF(selector_forward(s, taps, probs, &e) == 0, "forward: %s", e.msg);
        selector_zero_grad(s);
        EXPECTF(selector_grad(s, taps, case_label[c], case_weight[c], &loss, &e) == 0, "grad: %s",
                e.msg);
        const float *g = selector_grads(s, NULL);
        double dl = fabs((double)loss - tr[0]) / fmax(fabs((double)tr[0]), 1e-30);
        worst_l = fmax(worst_l, dl);
        printf("case %d label %d weight %.2f: loss C %.7f torch %.7f (rel %.2e); probs", c,
               case_label[c], case_weight[c], loss, tr[0], dl);
        for (int k = 0; k < NDOM; k++) {
            double dp = fabs((double)probs[k] - tr[1 + k]) / fmax(fabs((double)tr[1 + k]), 1e-30);
            worst_p = fmax(worst_p, dp);
            printf(" %.5f", tr[1 + k]);
        }
        printf("\n");
        EXPECTF(dl <= 1e-5, "case %d: loss %.8g vs torch %.8g", c, loss, tr[0]);
        for (int b = 0; b < 5; b++) {
            double m;
            double d = rel_block(g + boff[b], tr + 1 + NDOM + boff[b], boff[b + 1] - boff[b], &m);
            worst_g[b] = fmax(worst_g[b], d);
            printf("  grad %-12s (%3zu) max |torch| %.3e  rel err %.2e\n", bname[b],
                   boff[b + 1] - boff[b], m, d);
            EXPECTF(m > 1e-6, "case %d: torch gradient of %s vanishes (%g)", c, bname[b], m);
            EXPECTF(d <= 1e-4, "case %d: gradient of %s differs from torch: %.3g", c, bname[b], d);
        }
    }
    printf("summary: worst rel err probs %.2e loss %.2e grads tokens %.2e merge.w %.2e "
           "merge.b %.2e keys.w %.2e keys.b %.2e\n",
           worst_p, worst_l, worst_g[0], worst_g[1], worst_g[2], worst_g[3], worst_g[4]);
    EXPECTF(worst_p <= 1e-5, "probabilities differ from torch: %.3g", worst_p);
    free(ref);
    selector_destroy(&s);
    free(wmem), free(taps);
    return expect_failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--help")) {
        printf("usage: test_selector_ref PY SCRIPT WORKDIR\n"
               "  selector probabilities, loss and parameter gradients vs the torch model\n"
               "  SCRIPT (ref_selector.py); exit 0 pass, 1 fail, 77 skip (no torch)\n");
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: test_selector_ref PY SCRIPT WORKDIR\n");
        return 2;
    }
    int rc = run(argv[1], argv[2], argv[3]);
    if (rc == 0 && expect_failures) rc = 1;
    printf("selector_grad_ref: %s\n", rc == 0 ? "ok" : rc == 77 ? "skip" : "FAIL");
    return rc;
}
