/* bench_encoder.c — times the TinyViT-5M encoder against onnxruntime-node on one input.
 *
 *   bench_encoder WEIGHTS INPUT.f32 [--iters N] [--threads T] [--ort-script PATH] [--no-ort]
 *
 * Runs N forward passes (after one warm-up) with T threads (default 2) and, in the same
 * invocation, `node PATH encoder INPUT OUT --iters K --threads T` twice, before and after
 * ours (N runs in all; each node call drops its first run as warm-up), then prints the
 * medians, the ratio C/ORT, peak RSS and, with MODA_PROFILE=1, the per-op time shares. Exits 1 on any failure. Not a ctest test: timing
 * depends on machine load (check `uptime`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kn.h"
#include "sam_parts.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Runs ORT (iters+1 runs, the first dropped as warm-up) and appends its per-iteration
 * times to v[*n] (capacity cap). Returns 0, or -1 when node fails. */
static int run_ort(const char *script, const char *input, int iters, int threads, double *v,
                   int *n, int cap)
{
    char cmd[4096], out[64];
    snprintf(out, sizeof out, "/tmp/bench_encoder_ort.%d.f32", (int)getpid());
    snprintf(cmd, sizeof cmd, "node '%s' encoder '%s' %s --iters %d --threads %d", script, input,
             out, iters + 1, threads);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[65536];
    size_t got = fread(line, 1, sizeof line - 1, p);
    line[got] = 0;
    int rc = pclose(p);
    remove(out);
    char *s = strchr(line, '[');
    if (rc != 0 || !s) return -1;
    int k = 0;
    for (s++; *n < cap;) {
        char *end;
        double d = strtod(s, &end);
        if (end == s) break;
        if (k++ > 0) v[(*n)++] = d; /* drop the warm-up run */
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return k >= 2 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: %s WEIGHTS INPUT.f32 [--iters N] [--threads T] [--ort-script PATH] [--no-ort]\n",
                argv[0]);
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    int iters = 5, threads = 2, ort = 1;
    const char *script = "tests/ref/ort_run.js";
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ort-script") && i + 1 < argc) script = argv[++i];
        else if (!strcmp(argv[i], "--no-ort")) ort = 0;
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (iters < 1 || iters > 1000) iters = 5;
    kn_set_threads(threads);
    size_t nin = (size_t)3 * SAM_IMG * SAM_IMG;
    float *x = malloc(nin * sizeof(float)), *emb = malloc((size_t)SAM_EMB_C * 64 * 64 * sizeof(float));
    float *early = malloc((size_t)160 * 64 * 64 * sizeof(float));
    FILE *f = fopen(argv[2], "rb");
    if (!x || !emb || !early || !f || fread(x, sizeof(float), nin, f) != nin) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    err_t err = {0};
    wts_t *w = wts_open(argv[1], &err);
    tinyvit_t *e = w ? tinyvit_new(w, &err) : NULL;
    if (!e) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    if (tinyvit_forward(e, x, emb, early, &err)) { /* warm-up */
        fprintf(stderr, "forward: %s\n", err.msg);
        return 1;
    }
    /* ORT runs half before and half after ours, so a change of machine load during the
     * invocation hits both sides alike. */
    double ov[2048];
    int on = 0, ort_ok = 1;
    if (ort && run_ort(script, argv[2], (iters + 1) / 2, threads, ov, &on, 2048)) ort_ok = 0;
    double *ms = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < iters; i++) {
        double t = now_ms();
        if (tinyvit_forward(e, x, emb, early, &err)) return 1;
        ms[i] = now_ms() - t;
    }
    double c_med = median(ms, iters);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("tinyvit threads=%d iters=%d median_ms=%.1f min_ms=%.1f peak_rss_mib=%.0f\n", threads,
           iters, c_med, ms[0], ru.ru_maxrss / 1024.0);
    char prof[1024];
    if (tinyvit_profile_text(e, prof, sizeof prof) == 0) printf("profile %s\n", prof);
    fflush(stdout);
    int rc = 0;
    if (ort) {
        if (ort_ok && run_ort(script, argv[2], iters - (iters + 1) / 2 > 0 ? iters - (iters + 1) / 2 : 1,
                              threads, ov, &on, 2048))
            ort_ok = 0;
        if (!ort_ok || on < 1) {
            fprintf(stderr, "onnxruntime run failed (%s)\n", script);
            rc = 1;
        } else {
            double o = median(ov, on);
            printf("ort threads=%d runs=%d median_ms=%.1f ratio_c_over_ort=%.3f\n", threads, on, o,
                   c_med / o);
        }
    }
    tinyvit_destroy(&e);
    wts_destroy(&w);
    free(x);
    free(emb);
    free(early);
    free(ms);
    return rc;
}
