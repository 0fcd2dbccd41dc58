/* test_samdec_cuda.c — the GPU decoder (common/samdec_cuda.h) against the CPU decoder
 * (samdec_forward_ex / samdec_hq_backward, common/sam_parts.h) on the real MobileSAM weights
 * and the CPU embedding of a real image. Prompts: a box, points (fg + bg + padding), no
 * prompt (the padding point only), and a mask prompt (points + the CPU's own low-res
 * logits). Checks per prompt: low-res logits relative L2 ≤ 2e-3 and per-mask IoU of
 * logits > 0 ≥ 0.99, the 4 IoU predictions within 2e-3. With the hq token (mask token 0,
 * and a perturbed copy): hq_out and the upscaled feature relative L2 ≤ 2e-3, the SAM
 * outputs unchanged by it, and the hq backward for a random d_hq_out relative L2 ≤ 2e-3.
 * Last, samdec_cuda_predict (the GPU decoder's sam_predict) against sam_predict: the final
 * mask at the image's size, IoU ≥ 0.99, and the same mask index.
 * Usage: test_samdec_cuda MODEL IMAGE ; exit 77 without a CUDA device or when the model or
 * the image is missing. */
#include "kn_cuda.h"
#include "sam.h"
#include "sam_parts.h"
#include "samdec_cuda.h"
#include "gpu_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LR_N ((size_t)SAM_LOWRES * SAM_LOWRES)
#define NE ((size_t)SAM_EMB_C * SAM_EMB * SAM_EMB)
#define UP_N ((size_t)32 * LR_N)
#define TOL 2e-3

static int fails;

static double mask_iou(const float *a, const float *b, size_t n)
{
    size_t in = 0, un = 0;
    for (size_t i = 0; i < n; i++) {
        int x = a[i] > 0, y = b[i] > 0;
        in += x && y;
        un += x || y;
    }
    return un ? (double)in / un : 1.0;
}

static void check(int ok, const char *what, double v, double tol)
{
    printf("%s %-44s %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, v, tol);
    fails += !ok;
}

typedef struct {
    sam_t *sam;
    samdec_t *cpu;
    samdec_cuda_t *gpu;
    kcu_ctx_t *ctx;
    const float *emb;     /* host */
    float *emb_d, *mask_d, *lr_d, *iou_d, *tok_d, *hq_d, *up_d, *g_d, *gt_d; /* device */
    float *lr_c, *lr_g, *up_c, *up_g;                                       /* host */
} fx_t;

static int dl(fx_t *f, float *dst, const float *src, size_t n)
{
    err_t e = {0};
    if (kcu_sync(f->ctx, &e) || kcu_download(f->ctx, dst, src, sizeof(float) * n)) {
        printf("FAIL device: %s %s\n", e.msg, kcu_errmsg(f->ctx));
        return -1;
    }
    return 0;
}

/* One prompt on both decoders; compares lowres and iou. mask_in: host or NULL. */
static int run_case(fx_t *f, const char *name, const sam_point_t *pts, int n, const float *mask_in)
{
    err_t e = {0};
    float iou_c[SAM_NMASK], iou_g[SAM_NMASK];
    if (samdec_forward(f->cpu, f->emb, pts, n, mask_in, f->lr_c, iou_c, &e)) {
        printf("FAIL %s: CPU decoder: %s\n", name, e.msg);
        return -1;
    }
    if (mask_in && kcu_upload(f->ctx, f->mask_d, mask_in, sizeof(float) * LR_N)) return -1;
    double t0 = now_ms();
    if (samdec_cuda_forward(f->gpu, f->emb_d, pts, n, mask_in ? f->mask_d : NULL, f->lr_d, f->iou_d,
                            NULL, &e)) {
        printf("FAIL %s: samdec_cuda_forward: %s\n", name, e.msg);
        return -1;
    }
    if (dl(f, f->lr_g, f->lr_d, SAM_NMASK * LR_N) || dl(f, iou_g, f->iou_d, SAM_NMASK)) return -1;
    printf("---- %s (%d points): GPU forward %.1f ms incl. sync\n", name, n, now_ms() - t0);
    char w[96];
    snprintf(w, sizeof w, "%s lowres rel L2", name);
    double r = rel_l2(f->lr_g, f->lr_c, SAM_NMASK * LR_N);
    check(r <= TOL, w, r, TOL);
    double worst = 1, di = 0;
    for (int m = 0; m < SAM_NMASK; m++) {
        double iou = mask_iou(f->lr_g + m * LR_N, f->lr_c + m * LR_N, LR_N);
        worst = iou < worst ? iou : worst;
        double a = fabs((double)iou_g[m] - iou_c[m]);
        di = a > di ? a : di;
    }
    snprintf(w, sizeof w, "%s min mask IoU (logits > 0), 1 - IoU", name);
    check(worst >= 0.99, w, 1 - worst, 0.01);
    snprintf(w, sizeof w, "%s iou[4] max abs diff", name);
    check(di <= TOL, w, di, TOL);
    return 0;
}

/* hq token tok (host [256]): forward with the extras on both, compare, then the backward */
static int run_hq(fx_t *f, const char *name, const sam_point_t *pts, int n, const float *tok,
                  unsigned seed)
{
    err_t e = {0};
    float iou_c[SAM_NMASK], hq_c[256], hq_g[256], g[256], gt_c[256], gt_g[256];
    samdec_trace_t *tr = samdec_trace_new(&e);
    if (!tr) return -1;
    samdec_extra_t xc = {.hq_token = tok, .hq_out = hq_c, .up = f->up_c, .trace = tr};
    samdec_cuda_extra_t xg = {.hq_token = f->tok_d, .hq_out = f->hq_d, .up = f->up_d, .trace = 1};
    int rc = -1;
    if (samdec_forward_ex(f->cpu, f->emb, pts, n, NULL, f->lr_c, iou_c, &xc, &e)) {
        printf("FAIL %s: CPU decoder: %s\n", name, e.msg);
        goto done;
    }
    if (kcu_upload(f->ctx, f->tok_d, tok, sizeof(float) * 256) ||
        samdec_cuda_forward(f->gpu, f->emb_d, pts, n, NULL, f->lr_d, NULL, &xg, &e)) {
        printf("FAIL %s: samdec_cuda_forward: %s\n", name, e.msg);
        goto done;
    }
    if (dl(f, hq_g, f->hq_d, 256) || dl(f, f->up_g, f->up_d, UP_N) ||
        dl(f, f->lr_g, f->lr_d, SAM_NMASK * LR_N))
        goto done;
    printf("---- %s\n", name);
    char w[96];
    double r = rel_l2(hq_g, hq_c, 256);
    snprintf(w, sizeof w, "%s hq_out rel L2", name);
    check(r <= TOL, w, r, TOL);
    r = rel_l2(f->up_g, f->up_c, UP_N);
    snprintf(w, sizeof w, "%s up rel L2", name);
    check(r <= TOL, w, r, TOL);
    r = rel_l2(f->lr_g, f->lr_c, SAM_NMASK * LR_N);
    snprintf(w, sizeof w, "%s lowres with the hq token rel L2", name);
    check(r <= TOL, w, r, TOL);
    srand(seed);
    for (int i = 0; i < 256; i++) g[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    if (samdec_hq_backward(f->cpu, tr, g, gt_c, &e)) {
        printf("FAIL %s: samdec_hq_backward: %s\n", name, e.msg);
        goto done;
    }
    if (kcu_upload(f->ctx, f->g_d, g, sizeof g) ||
        samdec_cuda_hq_backward(f->gpu, f->g_d, f->gt_d, &e) || dl(f, gt_g, f->gt_d, 256)) {
        printf("FAIL %s: samdec_cuda_hq_backward: %s\n", name, e.msg);
        goto done;
    }
    r = rel_l2(gt_g, gt_c, 256);
    snprintf(w, sizeof w, "%s d_hq_token rel L2", name);
    check(r <= TOL, w, r, TOL);
    rc = 0;
done:
    samdec_trace_destroy(&tr);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_samdec_cuda MODEL IMAGE\n");
        return 2;
    }
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    for (int i = 1; i < argc; i++)
        if (access(argv[i], R_OK) != 0) {
            printf("SKIP: %s is not readable (model: ./moda.sh setup; images: ../shared/data)\n",
                   argv[i]);
            return 77;
        }
    err_t e = {0};
    fx_t f = {0};
    sam_embedding_t emb = {0};
    image_t *img = NULL;
    if (!(f.sam = sam_load(argv[1], &e)) || !(img = image_load(argv[2], &e)) ||
        sam_encode(f.sam, img, &emb, NULL, 0, &e) ||
        !(f.cpu = samdec_new(sam_weights(f.sam), &e))) {
        printf("FAIL setup: %s\n", e.msg);
        return 1;
    }
    f.emb = emb.emb;
    /* TF32 on, as in production: the decoder must still run its GEMMs in fp32 */
    if (!(f.ctx = kcu_ctx_new(0, (size_t)256 << 20, KCU_TF32, &e)) ||
        !(f.gpu = samdec_cuda_new(sam_weights(f.sam), f.ctx, &e))) {
        printf("FAIL GPU setup: %s\n", e.msg);
        return 1;
    }
    printf("decoder arena: %.1f MB\n", kcu_arena_used(f.ctx) / 1048576.0);
    f.emb_d = kcu_upload_new(f.ctx, emb.emb, NE);
    f.mask_d = kcu_allocf(f.ctx, LR_N);
    f.lr_d = kcu_allocf(f.ctx, SAM_NMASK * LR_N);
    f.iou_d = kcu_allocf(f.ctx, SAM_NMASK);
    f.tok_d = kcu_allocf(f.ctx, 256);
    f.hq_d = kcu_allocf(f.ctx, 256);
    f.up_d = kcu_allocf(f.ctx, UP_N);
    f.g_d = kcu_allocf(f.ctx, 256);
    f.gt_d = kcu_allocf(f.ctx, 256);
    f.lr_c = malloc(sizeof(float) * SAM_NMASK * LR_N);
    f.lr_g = malloc(sizeof(float) * SAM_NMASK * LR_N);
    f.up_c = malloc(sizeof(float) * UP_N);
    f.up_g = malloc(sizeof(float) * UP_N);
    float *mask_in = malloc(sizeof(float) * LR_N);
    if (!f.emb_d || !f.gt_d || !f.lr_c || !f.lr_g || !f.up_c || !f.up_g || !mask_in) {
        printf("FAIL out of memory: %s\n", kcu_errmsg(f.ctx));
        return 1;
    }
    /* prompts in original pixels through the predictor's own mapping (sam_prompt_points) */
    float W = (float)img->w, H = (float)img->h;
    sam_point_t pts[SAM_MAX_POINTS + 2];
    sam_prompt_t box = {.has_box = 1, .box = {0.25f * W, 0.3f * H, 0.7f * W, 0.8f * H}};
    float pp[6] = {0.5f * W, 0.5f * H, 1, 0.2f * W, 0.15f * H, 0};
    sam_prompt_t points = {.points = pp, .n_points = 2};
    int n;
    if ((n = sam_prompt_points(&emb.info, &box, pts, &e)) < 0 || run_case(&f, "box", pts, n, NULL))
        return 1;
    if ((n = sam_prompt_points(&emb.info, &points, pts, &e)) < 0 ||
        run_case(&f, "points fg+bg+pad", pts, n, NULL))
        return 1;
    sam_point_t pad = {0, 0, -1};
    if (run_case(&f, "no prompt", &pad, 1, NULL)) return 1;
    /* mask prompt: the points prompt again with the CPU's single-mask pick of that prompt */
    float iou_c[SAM_NMASK];
    if (samdec_forward(f.cpu, f.emb, pts, n, NULL, f.lr_c, iou_c, &e)) return 1;
    memcpy(mask_in, f.lr_c + (size_t)samdec_pick_single(iou_c, n) * LR_N, sizeof(float) * LR_N);
    if (run_case(&f, "points + mask_in", pts, n, mask_in)) return 1;
    /* hq token: mask token 0, and a perturbed copy */
    const float *mt = wts_f32(sam_weights(f.sam), "mask_decoder.mask_tokens.weight", &e, 2, 4, 256);
    if (!mt) return 1;
    float tok[256];
    memcpy(tok, mt, sizeof tok);
    if (run_hq(&f, "hq=mask token 0, points", pts, n, tok, 1)) return 1;
    srand(7);
    for (int i = 0; i < 256; i++) tok[i] += 0.5f * ((float)rand() / RAND_MAX - 0.5f);
    if ((n = sam_prompt_points(&emb.info, &box, pts, &e)) < 0 ||
        run_hq(&f, "hq=perturbed, box", pts, n, tok, 2))
        return 1;
    /* samdec_cuda_predict vs sam_predict: final masks (box prompt) */
    sam_result_t rc_ = {0}, rg_ = {0};
    if (sam_predict(f.sam, &emb, &box, &rc_, &e) ||
        samdec_cuda_predict(f.gpu, f.emb_d, &emb.info, &box, &rg_, &e)) {
        printf("FAIL predict: %s\n", e.msg);
        return 1;
    }
    size_t hw = (size_t)rc_.h * rc_.w, in = 0, un = 0;
    for (size_t i = 0; i < hw; i++) {
        in += rc_.mask[i] && rg_.mask[i];
        un += rc_.mask[i] || rg_.mask[i];
    }
    double fi = un ? (double)in / un : 1.0;
    check(fi >= 0.99 && rc_.index[0] == rg_.index[0], "samdec_cuda_predict final mask, 1 - IoU",
          1 - fi, 0.01);
    sam_result_free(&rc_);
    sam_result_free(&rg_);
    /* the backward refuses without a traced forward */
    if (samdec_cuda_forward(f.gpu, f.emb_d, pts, n, NULL, f.lr_d, NULL, NULL, &e) ||
        samdec_cuda_hq_backward(f.gpu, f.g_d, f.gt_d, &e) != ERR_STATE) {
        printf("FAIL hq backward after an untraced forward is not ERR_STATE\n");
        fails++;
    } else {
        printf("ok   hq backward after an untraced forward: ERR_STATE (%s)\n", e.msg);
    }
    samdec_cuda_destroy(&f.gpu);
    kcu_ctx_destroy(&f.ctx);
    samdec_destroy(&f.cpu);
    sam_embedding_free(&emb);
    image_destroy(&img);
    sam_destroy(&f.sam);
    free(f.lr_c);
    free(f.lr_g);
    free(f.up_c);
    free(f.up_g);
    free(mask_in);
    printf("%d checks failed\n", fails);
    return fails ? 1 : 0;
}
