/* moda bench — measurements of the model on this machine.
 *
 *   moda bench infer [--model M] [--image IMG] [--iters N] [--threads T] [--vs-ort] [--json]
 *                    [--device cpu|cuda|auto] [--batch B]
 *   moda bench example --out FILE.png
 *
 * `infer` times the image encoder and the mask decoder (median/min/max over N runs after
 * one warm-up), reports peak RSS, and with --vs-ort runs onnxruntime-node on the same
 * preprocessed input (tests/ref/ort_run.js) and prints our/ORT time ratios and the
 * embedding / logits differences. `example` writes the generated example image (shaded
 * shapes on a textured background; no third-party pixels), which `infer` uses by default.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "cmds.h"
#include "image.h"
#include "json.h"
#include "kn.h"
#include "device.h"
#include "paths.h"
#include "sam.h"
#include "enc_cuda.h"
#include "samdec_cuda.h"

static const char *HELP =
    "usage: moda bench infer [--model M] [--image IMG] [--iters N] [--threads T] [--vs-ort] [--json]\n"
    "       moda bench example --out FILE.png\n"
    "       moda bench train --help   (adapter training step, where built)\n"
    "       moda bench pipeline --help   (ingest -> infer -> Result vs the bare loop, swap)\n\n"
    "infer: time the image encoder and the mask decoder on one image (default: the generated\n"
    "example image; prompt: one foreground click at the example's disk, else the image\n"
    "centre). Prints median/min/max ms per part over N runs after one warm-up run, and the\n"
    "peak RSS. --vs-ort also runs onnxruntime-node on the same preprocessed input\n"
    "(tests/ref/ort_run.js, needs node and .deps/npm) and prints time ratios and the\n"
    "embedding relative L2 / low-res logits max abs difference.\n"
    "  --iters N (default 3)  --threads T (default: all cores)  --json: one JSON object\n"
    "  --device D  cpu, cuda or auto (default auto: the GPU encoder (TinyViT or ViT-B/L/H)\n"
    "              when a CUDA device is present; one log line says which). With the GPU the\n"
    "              GPU decoder is also timed per box prompt on the device-resident embedding\n"
    "  --batch B   with the GPU encoder: also time batches of B images (device-resident input;\n"
    "              images/s), and the batch-1 pass without host copies\n\n"
    "example: write the generated example image (800x600 RGB PNG) used by the demo.\n"
    "Exit status: 0 ok, 2 bad arguments, 1 failure (model, image, onnxruntime run).\n";

/* ---- the example image --------------------------------------------------------------- */

#define EX_W 800
#define EX_H 600
#define EX_DISK_X 270 /* centre of the shaded disk: the demo's click */
#define EX_DISK_Y 300
#define EX_DISK_R 130

static float hash01(int x, int y)
{
    unsigned h = (unsigned)x * 374761393u + (unsigned)y * 668265263u;
    h = (h ^ (h >> 13)) * 1274126177u;
    return (float)((h ^ (h >> 16)) & 0xffff) / 65535.0f;
}

static float smooth_noise(float x, float y)
{
    int ix = (int)floorf(x), iy = (int)floorf(y);
    float fx = x - ix, fy = y - iy;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    float a = hash01(ix, iy), b = hash01(ix + 1, iy), c = hash01(ix, iy + 1), d = hash01(ix + 1, iy + 1);
    return (a + (b - a) * fx) + ((c + (d - c) * fx) - (a + (b - a) * fx)) * fy;
}

static uint8_t clampu8(float v) { return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)(v + 0.5f); }

/* Deterministic: a brushed-metal-like background, a lit sphere-shaded disk, a rounded
 * rectangle with a vertical gradient and a dark triangle with soft edges. */
static image_t *bench_make_example(err_t *err)
{
    image_t *im = image_new(EX_W, EX_H, 3, err);
    if (!im) return NULL;
    for (int y = 0; y < EX_H; y++)
        for (int x = 0; x < EX_W; x++) {
            float n = 0.55f * smooth_noise(x / 23.0f, y / 3.0f) + 0.3f * smooth_noise(x / 7.0f, y / 61.0f) +
                      0.15f * hash01(x, y);
            float r = 150 + 60 * n, g = 145 + 55 * n, b = 135 + 50 * n;
            /* disk: shaded like a ball lit from the top-left */
            float dx = (float)(x - EX_DISK_X) / EX_DISK_R, dy = (float)(y - EX_DISK_Y) / EX_DISK_R;
            float d2 = dx * dx + dy * dy;
            if (d2 < 1.0f) {
                float z = sqrtf(1.0f - d2), lit = 0.25f + 0.75f * fmaxf(0.0f, (-0.5f * dx - 0.5f * dy + 0.7f * z));
                float spec = powf(fmaxf(0.0f, -0.4f * dx - 0.4f * dy + 0.82f * z), 40.0f);
                float a = fminf(1.0f, (1.0f - sqrtf(d2)) * EX_DISK_R / 1.5f);
                r = r * (1 - a) + a * (200 * lit + 255 * spec);
                g = g * (1 - a) + a * (60 * lit + 255 * spec);
                b = b * (1 - a) + a * (40 * lit + 255 * spec);
            }
            /* rounded rectangle */
            float qx = fabsf(x - 590.0f) - 110.0f, qy = fabsf(y - 200.0f) - 70.0f;
            float sd = hypotf(fmaxf(qx, 0), fmaxf(qy, 0)) + fminf(fmaxf(qx, qy), 0) - 25.0f;
            if (sd < 1.0f) {
                float a = fminf(1.0f, 1.0f - sd), t = (y - 105.0f) / 190.0f;
                r = r * (1 - a) + a * (40 + 40 * t);
                g = g * (1 - a) + a * (110 + 80 * t + 10 * smooth_noise(x / 5.0f, y / 5.0f));
                b = b * (1 - a) + a * (170 + 60 * t);
            }
            /* triangle (edge functions) */
            float e0 = (x - 520.0f) * (560 - 420) - (y - 420.0f) * (680 - 520);
            float e1 = (x - 680.0f) * (560 - 560) - (y - 560.0f) * (500 - 680);
            float e2 = (x - 500.0f) * (420 - 560) - (y - 560.0f) * (520 - 500);
            if (e0 <= 0 && e1 <= 0 && e2 <= 0) {
                float t = (y - 420.0f) / 140.0f;
                r = 50 + 30 * t;
                g = 50 + 25 * t;
                b = 45 + 20 * t;
            }
            uint8_t *p = im->data + 3 * ((size_t)y * EX_W + x);
            p[0] = clampu8(r);
            p[1] = clampu8(g);
            p[2] = clampu8(b);
        }
    return im;
}

/* ---- timing helpers ------------------------------------------------------------------ */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double med, min, max;
} stats_t;

static stats_t stats_of(double *v, int n)
{
    stats_t s = {0, 0, 0};
    if (n <= 0) return s;
    qsort(v, n, sizeof *v, cmp_d);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

/* ---- onnxruntime comparison ---------------------------------------------------------- */

static int find_ort_script(char *buf, size_t n)
{
    char dir[4096];
    const char *env = getenv("MODA_REPO");
    if (env && *env) {
        snprintf(buf, n, "%s/tests/ref/ort_run.js", env);
        if (access(buf, R_OK) == 0) return 0;
    }
    if (paths_exe_dir(dir, sizeof dir) == 0) {
        snprintf(buf, n, "%s/../../tests/ref/ort_run.js", dir);
        if (access(buf, R_OK) == 0) return 0;
    }
    snprintf(buf, n, "tests/ref/ort_run.js");
    return access(buf, R_OK) == 0 ? 0 : ERR_NOTFOUND;
}

/* Runs a shell command, parses {"ms":[...]} from its last stdout line into stats. */
static int run_ort(const char *cmd, stats_t *st, err_t *err)
{
    FILE *p = popen(cmd, "r");
    if (!p) return err_errno(err, ERR_IO, errno, "cannot run node");
    char line[65536], last[65536] = "";
    while (fgets(line, sizeof line, p)) snprintf(last, sizeof last, "%s", line);
    int status = pclose(p);
    if (status != 0) return err_set(err, ERR_IO, "onnxruntime run failed (%s)", cmd);
    json_t *j = json_parse(last, strlen(last), err);
    if (!j) return err_wrap(err, "ort_run.js output");
    const json_t *ms = json_get(j, "ms");
    int n = (int)json_len(ms);
    double v[256];
    if (n < 1 || n > 256) {
        json_free(&j);
        return err_set(err, ERR_FORMAT, "ort_run.js output: no timings");
    }
    for (int i = 0; i < n; i++) json_get_double(json_at(ms, i), &v[i], "ms", NULL);
    json_free(&j);
    *st = stats_of(v, n);
    return 0;
}

static int write_file(const char *path, const void *b, size_t n, err_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    size_t put = fwrite(b, 1, n, f);
    if (fclose(f) != 0 || put != n) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    return 0;
}

static int read_file(const char *path, void *b, size_t n, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot read '%s'", path);
    size_t got = fread(b, 1, n, f);
    fclose(f);
    return got == n ? 0 : err_set(err, ERR_FORMAT, "'%s': expected %zu bytes", path, n);
}

typedef struct ort_cmp {
    stats_t enc, dec;
    double emb_rel_l2, lowres_max_abs;
} ort_cmp_t;

static int compare_ort(int threads, int iters, const float *x, const float *emb,
                       const sam_point_t *pts, int npts, const prep_info_t *info,
                       const float *lowres, ort_cmp_t *o, err_t *err)
{
    char script[4096], dir[] = "/tmp/moda-bench-XXXXXX", path[4200], cmd[16384];
    if (find_ort_script(script, sizeof script))
        return err_set(err, ERR_NOTFOUND,
                       "tests/ref/ort_run.js not found (set MODA_REPO to the repository root)");
    if (!mkdtemp(dir)) return err_errno(err, ERR_IO, errno, "mkdtemp");
    const size_t nx = (size_t)3 * SAM_IMG * SAM_IMG, ne = (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB,
                 nl = (size_t)SAM_LOWRES * SAM_LOWRES;
    float *oemb = malloc(sizeof(float) * ne), *olr = malloc(sizeof(float) * nl);
    int rc = 0;
    if (!oemb || !olr) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(path, sizeof path, "%s/input.f32", dir);
    if ((rc = write_file(path, x, sizeof(float) * nx, err))) goto done;
    snprintf(cmd, sizeof cmd, "node '%s' encoder '%s/input.f32' '%s/emb.f32' --threads %d --iters %d",
             script, dir, dir, threads, iters);
    if ((rc = run_ort(cmd, &o->enc, err))) goto done;
    snprintf(path, sizeof path, "%s/emb.f32", dir);
    if ((rc = read_file(path, oemb, sizeof(float) * ne, err))) goto done;
    double num = 0, den = 0;
    for (size_t i = 0; i < ne; i++) {
        double d = (double)emb[i] - oemb[i];
        num += d * d;
        den += (double)oemb[i] * oemb[i];
    }
    o->emb_rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    /* decoder on OUR embedding, so the logits difference is the decoder's alone */
    snprintf(path, sizeof path, "%s/our_emb.f32", dir);
    if ((rc = write_file(path, emb, sizeof(float) * ne, err))) goto done;
    json_writer_t jw;
    json_w_init(&jw);
    json_w_begin_obj(&jw);
    json_w_key(&jw, "points");
    json_w_begin_arr(&jw);
    for (int i = 0; i < npts; i++) {
        json_w_begin_arr(&jw);
        json_w_float(&jw, pts[i].x);
        json_w_float(&jw, pts[i].y);
        json_w_float(&jw, pts[i].label);
        json_w_end_arr(&jw);
    }
    json_w_end_arr(&jw);
    json_w_key(&jw, "orig_size");
    json_w_begin_arr(&jw);
    json_w_int(&jw, info->h);
    json_w_int(&jw, info->w);
    json_w_end_arr(&jw);
    json_w_end_obj(&jw);
    size_t len;
    char *js = json_w_finish(&jw, &len, err);
    if (!js) {
        rc = err->code;
        goto done;
    }
    snprintf(path, sizeof path, "%s/prompt.json", dir);
    rc = write_file(path, js, len, err);
    free(js);
    if (rc) goto done;
    snprintf(cmd, sizeof cmd,
             "node '%s' decoder '%s/our_emb.f32' '%s/prompt.json' '%s/dec' --threads %d --iters %d",
             script, dir, dir, dir, threads, iters);
    if ((rc = run_ort(cmd, &o->dec, err))) goto done;
    snprintf(path, sizeof path, "%s/dec/low_res.f32", dir);
    if ((rc = read_file(path, olr, sizeof(float) * nl, err))) goto done;
    o->lowres_max_abs = 0;
    /* the ONNX graph applies the same single-mask rule as sam_predict */
    for (size_t i = 0; i < nl; i++) {
        double d = fabs((double)lowres[i] - olr[i]);
        if (d > o->lowres_max_abs) o->lowres_max_abs = d;
    }
done:
    free(oemb);
    free(olr);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) { /* a leftover temp folder is harmless */ }
    return rc;
}

/* ---- moda bench infer ---------------------------------------------------------------- */

static void put_stats(json_writer_t *jw, const char *key, stats_t st)
{
    json_w_key(jw, key);
    json_w_begin_obj(jw);
    json_w_key(jw, "median"); json_w_double(jw, st.med);
    json_w_key(jw, "min"); json_w_double(jw, st.min);
    json_w_key(jw, "max"); json_w_double(jw, st.max);
    json_w_end_obj(jw);
}

/* --device cuda: the GPU decoder per box prompt on the encoder's device embedding (image 0
 * of its last forward), each call waiting for the GPU; one warm-up call, t[iters] scratch. */
static int bench_gpu_decoder(const sam_t *sam, const enc_cuda_t *gpu, const prep_info_t *info,
                             int iters, double *t, stats_t *st, err_t *e)
{
    sam_prompt_t bp = {.has_box = 1,
                       .box = {0.25f * info->w, 0.25f * info->h, 0.75f * info->w, 0.75f * info->h}};
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n = sam_prompt_points(info, &bp, pts, e);
    if (n < 0) return n;
    kcu_ctx_t *ctx = kcu_ctx_new(0, (size_t)128 << 20, KCU_TF32, e);
    samdec_cuda_t *dec = ctx ? samdec_cuda_new(sam_weights(sam), ctx, e) : NULL;
    int rc = dec ? 0 : e->code;
    for (int i = -1; i < iters && !rc; i++) {
        double t0 = now_ms();
        rc = samdec_cuda_forward_resident(dec, enc_cuda_emb_dev(gpu, 0), pts, n, e);
        if (i >= 0) t[i] = now_ms() - t0;
    }
    if (!rc) *st = stats_of(t, iters);
    samdec_cuda_destroy(&dec);
    kcu_ctx_destroy(&ctx);
    return rc;
}

static int bench_infer(int argc, char **argv)
{
    const char *model = NULL, *image = NULL, *device = NULL;
    int iters = 3, threads = 0, vs_ort = 0, as_json = 0, batch = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--vs-ort")) vs_ort = 1;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "--model") && v) model = argv[++i];
        else if (!strcmp(a, "--image") && v) image = argv[++i];
        else if (!strcmp(a, "--device") && v) device = argv[++i];
        else if (!strcmp(a, "--batch") && v) {
            if (client_int_opt("bench infer", a, argv[++i], 1, 64, &batch)) return 2;
        } else if ((!strcmp(a, "--iters") || !strcmp(a, "--threads")) && v) {
            if (client_int_opt("bench infer", a, argv[++i], 1, 1000,
                               !strcmp(a, "--iters") ? &iters : &threads))
                return 2;
        } else {
            fprintf(stderr, "moda bench infer: bad argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    err_t e = {0};
    device_choice_t dc;
    if (device_select(device, 1, &dc, &e)) {
        fprintf(stderr, "moda bench infer: %s\n", e.msg);
        return 2;
    }
    char model_buf[4096];
    if (!model) {
        paths_default_model(model_buf, sizeof model_buf);
        model = model_buf;
    }
    if (threads) kn_set_threads(threads);
    image_t *img = image ? image_load(image, &e) : bench_make_example(&e);
    if (!img) {
        fprintf(stderr, "moda bench infer: %s\n", e.msg);
        return err_exit_status(e.code);
    }
    double t0 = now_ms();
    sam_t *sam = sam_load(model, &e);
    double load_ms = now_ms() - t0;
    if (!sam) {
        image_destroy(&img);
        fprintf(stderr, "moda bench infer: %s\n", e.msg);
        return err_exit_status(e.code);
    }
    if (device_require_path(&dc, enc_cuda_supported(sam), sam_encoder_name(sam), &e)) {
        fprintf(stderr, "moda bench infer: %s\n", e.msg);
        sam_destroy(&sam);
        image_destroy(&img);
        return 2;
    }
    device_log(&dc);
    enc_cuda_t *gpu = NULL;
    stats_t sb = {0}, sr = {0}; /* GPU: batch-B and resident batch-1 encoder times */
    stats_t sg = {0};           /* GPU decoder per box prompt */
    float *xb = NULL;
    float *x = malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG);
    double *te = calloc(iters, sizeof(double)), *td = calloc(iters, sizeof(double));
    sam_embedding_t emb = {0};
    sam_result_t res = {0};
    prep_info_t info;
    int rc = 0;
    if (!x || !te || !td) {
        rc = err_set(&e, ERR_NOMEM, "out of memory");
        goto done;
    }
    t0 = now_ms();
    if ((rc = prep_sam_input(img, x, NULL, &info, &e))) goto done;
    double prep_ms = now_ms() - t0;
    float pt[3] = {image ? img->w / 2.0f : EX_DISK_X, image ? img->h / 2.0f : EX_DISK_Y, 1};
    sam_prompt_t prompt = {.points = pt, .n_points = 1};
    if (dc.device == KN_DEV_CUDA && !(gpu = enc_cuda_new(sam, 0, batch, &e))) {
        rc = e.code;
        goto done;
    }
    for (int i = -1; i < iters; i++) { /* i = -1: warm-up */
        sam_embedding_free(&emb);
        t0 = now_ms();
        if (gpu) { /* host copies in and out included, like the CPU path's */
            emb.info = info;
            emb.emb = malloc(sizeof(float) * SAM_EMB_C * SAM_EMB * SAM_EMB);
            rc = emb.emb ? enc_cuda_forward(gpu, x, 1, emb.emb, NULL, &e)
                         : err_set(&e, ERR_NOMEM, "out of memory");
            if (rc) goto done;
        } else if ((rc = sam_encode_input(sam, x, &info, &emb, 0, &e)))
            goto done;
        if (i >= 0) te[i] = now_ms() - t0;
    }
    if (gpu) { /* device-resident timings: batch 1, then batch B */
        for (int i = -1; i < iters; i++) {
            t0 = now_ms();
            if ((rc = enc_cuda_forward_resident(gpu, 1, &e))) goto done;
            if (i >= 0) te[i] = now_ms() - t0;
        }
        sr = stats_of(te, iters);
        size_t nx = (size_t)3 * SAM_IMG * SAM_IMG;
        if (!(xb = malloc(sizeof(float) * nx * batch))) {
            rc = err_set(&e, ERR_NOMEM, "out of memory for the batch");
            goto done;
        }
        float *eb = malloc(sizeof(float) * SAM_EMB_C * SAM_EMB * SAM_EMB * (size_t)batch);
        for (int b = 0; b < batch; b++) memcpy(xb + b * nx, x, sizeof(float) * nx);
        rc = eb ? enc_cuda_forward(gpu, xb, batch, eb, NULL, &e)
                : err_set(&e, ERR_NOMEM, "out of memory for the batch");
        free(eb);
        for (int i = 0; i < iters && !rc; i++) {
            t0 = now_ms();
            rc = enc_cuda_forward_resident(gpu, batch, &e);
            te[i] = now_ms() - t0;
        }
        if (rc) goto done;
        sb = stats_of(te, iters);
        /* te again holds the host-inclusive batch-1 times for the common report */
        for (int i = 0; i < iters; i++) {
            t0 = now_ms();
            if ((rc = enc_cuda_forward(gpu, x, 1, emb.emb, NULL, &e))) goto done;
            te[i] = now_ms() - t0;
        }
        if ((rc = bench_gpu_decoder(sam, gpu, &info, iters, td, &sg, &e))) goto done;
    }
    for (int i = -1; i < iters; i++) {
        sam_result_free(&res);
        t0 = now_ms();
        if ((rc = sam_predict(sam, &emb, &prompt, &res, &e))) goto done;
        if (i >= 0) td[i] = now_ms() - t0;
    }
    stats_t se = stats_of(te, iters), sd = stats_of(td, iters);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = ru.ru_maxrss / 1024.0;
    ort_cmp_t oc = {0};
    if (vs_ort) {
        sam_point_t dp[SAM_MAX_POINTS + 2];
        int n = sam_prompt_points(&info, &prompt, dp, &e);
        if (n < 0 || (rc = compare_ort(kn_get_threads(), iters, x, emb.emb, dp, n, &info,
                                       res.lowres, &oc, &e))) {
            rc = rc ? rc : n;
            goto done;
        }
    }
    if (as_json) {
        json_writer_t jw;
        json_w_init(&jw);
        json_w_begin_obj(&jw);
        json_w_key(&jw, "model"); json_w_string(&jw, model);
        json_w_key(&jw, "encoder"); json_w_string(&jw, sam_encoder_name(sam));
        json_w_key(&jw, "threads"); json_w_int(&jw, kn_get_threads());
        json_w_key(&jw, "device"); json_w_string(&jw, device_name(dc.device));
        if (gpu) {
            put_stats(&jw, "encoder_resident_ms", sr);
            json_w_key(&jw, "batch"); json_w_int(&jw, batch);
            put_stats(&jw, "encoder_batch_ms", sb);
            json_w_key(&jw, "encoder_images_per_s"); json_w_double(&jw, batch * 1e3 / sb.med);
            put_stats(&jw, "decoder_gpu_ms", sg);
        }
        json_w_key(&jw, "iters"); json_w_int(&jw, iters);
        json_w_key(&jw, "image");
        json_w_begin_arr(&jw); json_w_int(&jw, img->w); json_w_int(&jw, img->h); json_w_end_arr(&jw);
        json_w_key(&jw, "load_ms"); json_w_double(&jw, load_ms);
        json_w_key(&jw, "preprocess_ms"); json_w_double(&jw, prep_ms);
        put_stats(&jw, "encoder_ms", se);
        put_stats(&jw, "decoder_ms", sd);
        json_w_key(&jw, "peak_rss_mb"); json_w_double(&jw, rss_mb);
        if (vs_ort) {
            json_w_key(&jw, "ort");
            json_w_begin_obj(&jw);
            put_stats(&jw, "encoder_ms", oc.enc);
            put_stats(&jw, "decoder_ms", oc.dec);
            json_w_key(&jw, "encoder_ratio"); json_w_double(&jw, se.med / oc.enc.med);
            json_w_key(&jw, "decoder_ratio"); json_w_double(&jw, sd.med / oc.dec.med);
            json_w_key(&jw, "embedding_rel_l2"); json_w_double(&jw, oc.emb_rel_l2);
            json_w_key(&jw, "lowres_max_abs"); json_w_double(&jw, oc.lowres_max_abs);
            json_w_end_obj(&jw);
        }
        json_w_end_obj(&jw);
        size_t len;
        char *js = json_w_finish(&jw, &len, &e);
        if (!js) {
            rc = e.code;
            goto done;
        }
        printf("%s\n", js);
        free(js);
    } else {
        printf("model %s (%s), image %dx%d, %d threads, %d iterations\n", model,
               sam_encoder_name(sam), img->w, img->h, kn_get_threads(), iters);
        printf("load %.0f ms, preprocess %.1f ms\n", load_ms, prep_ms);
        printf("encoder ms: median %.1f  min %.1f  max %.1f  (%s)\n", se.med, se.min, se.max,
               gpu ? "cuda, incl. host copies" : "cpu");
        if (gpu) {
            printf("encoder ms on the GPU alone (batch 1): median %.2f  min %.2f  max %.2f\n",
                   sr.med, sr.min, sr.max);
            printf("encoder batch %d: median %.1f ms -> %.0f images/s\n", batch, sb.med,
                   batch * 1e3 / sb.med);
            printf("decoder ms on the GPU (box prompt, device-resident embedding): median %.3f  "
                   "min %.3f  max %.3f\n", sg.med, sg.min, sg.max);
        }
        printf("decoder ms: median %.2f  min %.2f  max %.2f  (incl. upscaling to %dx%d)\n", sd.med,
               sd.min, sd.max, img->w, img->h);
        printf("peak RSS: %.0f MiB\n", rss_mb);
        if (vs_ort) {
            printf("onnxruntime encoder ms: median %.1f  min %.1f  max %.1f  -> ours/ort %.2f\n",
                   oc.enc.med, oc.enc.min, oc.enc.max, se.med / oc.enc.med);
            printf("onnxruntime decoder ms: median %.2f  min %.2f  max %.2f  -> ours/ort %.2f\n",
                   oc.dec.med, oc.dec.min, oc.dec.max, sd.med / oc.dec.med);
            printf("embedding rel L2 vs ort %.2e, low-res logits max abs vs ort %.2e\n",
                   oc.emb_rel_l2, oc.lowres_max_abs);
        }
    }
done:
    if (rc) fprintf(stderr, "moda bench infer: %s\n", e.msg);
    enc_cuda_destroy(&gpu);
    free(xb);
    sam_result_free(&res);
    sam_embedding_free(&emb);
    free(x);
    free(te);
    free(td);
    sam_destroy(&sam);
    image_destroy(&img);
    return rc ? err_exit_status(rc) : 0;
}

static int bench_example(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "moda bench example: bad argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "moda bench example: --out FILE.png is required\n");
        return 2;
    }
    err_t e = {0};
    image_t *im = bench_make_example(&e);
    int rc = im ? image_save_png(im, out, &e) : e.code;
    image_destroy(&im);
    if (rc) {
        fprintf(stderr, "moda bench example: %s\n", e.msg);
        return err_exit_status(rc);
    }
    printf("%s (%dx%d; the disk's centre is at %d,%d)\n", out, EX_W, EX_H, EX_DISK_X, EX_DISK_Y);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(HELP, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "infer")) return bench_infer(argc - 1, argv + 1);
    if (!strcmp(argv[1], "example")) return bench_example(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return cmd_bench_train(argc - 1, argv + 1); /* MoDA */
    if (!strcmp(argv[1], "pipeline")) return cmd_bench_pipeline(argc - 1, argv + 1);
    fprintf(stderr, "moda bench: unknown benchmark '%s' (infer, train, pipeline, example)\n", argv[1]);
    return 2;
}
