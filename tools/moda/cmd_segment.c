/* moda segment — segment one image from point/box prompts with the SAM model.
 *
 *   moda segment --image IMG [--model M] [--point X,Y,LABEL]... [--box X0,Y0,X1,Y1]
 *                [--multimask] --out MASK.png [--overlay OVERLAY.png] [--dump DIR]
 *                [--mask-in LOWRES.f32] [--threads T] [--device cpu|cuda|auto]
 *
 * Coordinates are original image pixels. Exit 0 ok, 2 bad arguments or prompts, 1 other
 * failures (unreadable image, bad weights file).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bankrun.h"
#include "client.h"
#include "cmds.h"
#include "image.h"
#include "json.h"
#include "kn.h"
#include "device.h"
#include "paths.h"
#include "sam.h"
#include "enc_cuda.h"

static const char *HELP =
    "usage: moda segment --image IMG [--model M] [--point X,Y,LABEL]... [--box X0,Y0,X1,Y1]\n"
    "                    [--multimask] --out MASK.png [--overlay OVERLAY.png] [--dump DIR]\n"
    "                    [--mask-in LOWRES.f32] [--threads T] [--device cpu|cuda|auto]\n\n"
    "Segment one image with SAM from point and/or box prompts (original image pixels).\n\n"
    "  --image IMG        PNG or JPEG (gray or RGB)\n"
    "  --model M          weights file (default: $MODA_MODEL, else .deps/models/mobile_sam.safetensors)\n"
    "  --point X,Y,LABEL  a click; LABEL 1 = foreground, 0 = background; repeatable\n"
    "  --box X0,Y0,X1,Y1  a box (top-left, bottom-right)\n"
    "  --multimask        decode masks 1..3; --out gets the one with the best predicted IoU,\n"
    "                     and MASK_m1.png, MASK_m2.png, MASK_m3.png get all three\n"
    "  --out MASK.png     the mask at the image size, 0 / 255\n"
    "  --overlay F.png    the image with the mask drawn over it\n"
    "  --dump DIR         write input.f32 (1x3x1024x1024), embedding.f32 (1x256x64x64),\n"
    "                     lowres.f32 (1x1x256x256, the chosen mask's logits; float32 LE NCHW)\n"
    "                     and result.json (iou, stability, encoder_ms, decoder_ms, mask_index,\n"
    "                     h, w, new_h, new_w, decoder_points)\n"
    "  --mask-in F.f32    a previous prediction's low-res logits (256x256 float32 LE, e.g.\n"
    "                     lowres.f32 from --dump) as the mask prompt, to refine it\n"
    "  --threads T        CPU threads (default: all cores)\n"
    "  --device D         cpu, cuda or auto (default auto: the GPU encoder when a CUDA device\n"
    "                     is present (TinyViT or ViT-B/L/H encoder, and then the decoder on\n"
    "                     the GPU too, and with --bank the adapter; a bank's selector and\n"
    "                     the encoder pass for its taps stay on the CPU); one log line says\n"
    "                     which)\n"
    "  --bank B           segment with a MoDA adapter from adapter bank B (docs/moda.md)\n"
    "  --domain NAME      with --bank: use this domain's adapter (default: the bank's only\n"
    "                     domain, or the one the bank's selector picks; prints the domain\n"
    "                     and the selector probability)\n"
    "  --prompt auto      with --bank: no point or box (the promptless production mode)\n\n"
    "Without a prompt this is an error, except with --bank B --prompt auto.\n"
    "Exit status: 0 ok; 2 bad arguments or a prompt outside the image; 1 unreadable image,\n"
    "bad weights file or other failure.\n";

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Parses exactly n comma-separated finite numbers. */
static int parse_nums(const char *s, float *out, int n)
{
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v)) return -1;
        out[i] = (float)v;
        p = end;
        if (i < n - 1) {
            if (*p != ',') return -1;
            p++;
        }
    }
    return *p ? -1 : 0;
}

static int write_f32(const char *dir, const char *name, const float *x, size_t n, err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    size_t put = fwrite(x, sizeof(float), n, f);
    if (fclose(f) != 0 || put != n) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    return 0;
}

/* Exactly 256x256 float32 little-endian, all finite. */
static int read_lowres(const char *path, float *out, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot open --mask-in '%s'", path);
    size_t n = (size_t)SAM_LOWRES * SAM_LOWRES;
    size_t got = fread(out, sizeof(float), n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra)
        return err_set(err, ERR_INVALID, "--mask-in '%s': need exactly %zu bytes (256x256 float32)",
                       path, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return err_set(err, ERR_INVALID, "--mask-in '%s': value %zu is not finite", path, i);
    return 0;
}

static int write_text(const char *path, const char *s, err_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    fputs(s, f);
    if (fclose(f) != 0) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    return 0;
}

/* "dir/mask.png" + 2 → "dir/mask_m2.png" */
static void variant_name(char *buf, size_t n, const char *out, int idx)
{
    const char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    size_t stem = (dot && (!slash || dot > slash)) ? (size_t)(dot - out) : strlen(out);
    snprintf(buf, n, "%.*s_m%d%s", (int)stem, out, idx, out + stem);
}

static int save_mask(const uint8_t *m, int w, int h, const char *path, err_t *err)
{
    image_t im = {.w = w, .h = h, .c = 1, .data = (uint8_t *)m};
    return image_save_png(&im, path, err);
}

/* --device cuda: the decoder on the GPU through bankrun (bankrun_predict: samdec_cuda_predict,
 * or the CPU decoder for a prompt of more than SAMDEC_CUDA_MAX_PTS decoder points), reading
 * the encoder's device embedding emb_dev; res as sam_predict gives it, *ms the decode time
 * (not the weight upload). */
static int gpu_decode(sam_t *sam, const sam_embedding_t *emb, const float *emb_dev,
                      const sam_prompt_t *p, sam_result_t *res, double *ms, err_t *e)
{
    bankrun_t *br = bankrun_new(sam, e);
    int rc = br ? bankrun_use_cuda(br, 0, e) : e->code;
    double t = now_ms();
    if (!rc) rc = bankrun_predict(br, emb, emb_dev, p, res, e);
    *ms = now_ms() - t;
    bankrun_destroy(&br);
    return rc;
}

static int fail(int code, const err_t *e)
{
    fprintf(stderr, "moda segment: %s\n", e->msg);
    return err_exit_status(code);
}

int cmd_segment(int argc, char **argv)
{
    const char *image = NULL, *model = NULL, *out = NULL, *overlay = NULL, *dump = NULL,
               *mask_in = NULL, *bank = NULL, *domain = NULL, *pmode = NULL, *device = NULL;
    float points[3 * SAM_MAX_POINTS], box[4];
    int npts = 0, has_box = 0, multimask = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--multimask")) {
            multimask = 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int known = !strcmp(a, "--image") || !strcmp(a, "--model") || !strcmp(a, "--point") ||
                    !strcmp(a, "--box") || !strcmp(a, "--out") || !strcmp(a, "--overlay") ||
                    !strcmp(a, "--dump") || !strcmp(a, "--threads") || !strcmp(a, "--mask-in") ||
                    !strcmp(a, "--bank") || !strcmp(a, "--domain") || !strcmp(a, "--prompt") ||
                    !strcmp(a, "--device");
        if (!known) {
            fprintf(stderr, "moda segment: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "moda segment: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--image")) image = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--overlay")) overlay = v;
        else if (!strcmp(a, "--dump")) dump = v;
        else if (!strcmp(a, "--mask-in")) mask_in = v;
        else if (!strcmp(a, "--bank")) bank = v;
        else if (!strcmp(a, "--domain")) domain = v;
        else if (!strcmp(a, "--prompt")) pmode = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--threads")) {
            if (client_int_opt("segment", a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--point")) {
            if (npts == SAM_MAX_POINTS) {
                fprintf(stderr, "moda segment: at most %d --point prompts\n", SAM_MAX_POINTS);
                return 2;
            }
            float *p = points + 3 * npts;
            if (parse_nums(v, p, 3) || (p[2] != 0 && p[2] != 1)) {
                fprintf(stderr,
                        "moda segment: --point '%s': expected X,Y,LABEL with LABEL 1 (foreground) "
                        "or 0 (background)\n", v);
                return 2;
            }
            npts++;
        } else if (!strcmp(a, "--box")) {
            if (parse_nums(v, box, 4)) {
                fprintf(stderr, "moda segment: --box '%s': expected X0,Y0,X1,Y1\n", v);
                return 2;
            }
            has_box = 1;
        }
    }
    if (!image || !out) {
        fprintf(stderr, "moda segment: %s is required (see --help)\n", !image ? "--image" : "--out");
        return 2;
    }
    int auto_mode = pmode != NULL;
    if ((pmode && (strcmp(pmode, "auto") || npts || has_box)) || ((pmode || domain) && !bank)) {
        fprintf(stderr, "moda segment: --prompt auto and --domain need --bank, and --prompt auto "
                        "takes no --point/--box\n");
        return 2;
    }
    if (!npts && !has_box && !auto_mode) {
        fprintf(stderr, "moda segment: no prompt: give --point X,Y,LABEL and/or --box X0,Y0,X1,Y1 "
                        "(automatic mode is not available yet)\n");
        return 2;
    }
    err_t e = {0};
    device_choice_t dc;
    if (device_select(device, 1, &dc, &e)) {
        fprintf(stderr, "moda segment: %s\n", e.msg);
        return 2;
    }
    char model_buf[4096];
    if (!model) {
        if (paths_default_model(model_buf, sizeof model_buf)) {
            fprintf(stderr, "moda segment: default model path too long\n");
            return 1;
        }
        model = model_buf;
    }
    if (threads) kn_set_threads(threads);
    if (dump && mkdir(dump, 0755) != 0 && errno != EEXIST) {
        err_errno(&e, ERR_IO, errno, "cannot create --dump folder '%s'", dump);
        return fail(e.code, &e);
    }

    int rc = 0;
    image_t *img = image_load(image, &e);
    if (!img) return fail(e.code, &e);
    /* validate prompts against the image before the (slow) model load */
    sam_prompt_t prompt = {.points = points, .n_points = npts, .has_box = has_box,
                           .multimask = multimask};
    if (has_box) memcpy(prompt.box, box, sizeof box);
    prep_info_t info = {.h = img->h, .w = img->w};
    prep_target_size(img->h, img->w, PREP_SIDE, &info.new_h, &info.new_w);
    if (info.new_h < 1 || info.new_w < 1) {
        err_set(&e, ERR_RANGE, "%s: image %dx%d is too elongated (a side would resize to 0)",
                image, img->w, img->h);
        image_destroy(&img);
        return fail(e.code, &e);
    }
    sam_point_t dpts[SAM_MAX_POINTS + 2];
    int ndp = auto_mode ? 0 : sam_prompt_points(&info, &prompt, dpts, &e);
    if (ndp < 0) {
        image_destroy(&img);
        return fail(ndp, &e);
    }

    float *mask_logits = NULL;
    if (mask_in) {
        mask_logits = malloc(sizeof(float) * SAM_LOWRES * SAM_LOWRES);
        if (!mask_logits || read_lowres(mask_in, mask_logits, &e)) {
            if (!mask_logits) err_set(&e, ERR_NOMEM, "out of memory");
            free(mask_logits);
            image_destroy(&img);
            return fail(e.code, &e);
        }
        prompt.mask_in = mask_logits;
    }
    sam_t *sam = sam_load(model, &e);
    if (!sam) {
        free(mask_logits);
        image_destroy(&img);
        return fail(e.code, &e);
    }
    if (device_require_path(&dc, enc_cuda_supported(sam), sam_encoder_name(sam), &e)) {
        fprintf(stderr, "moda segment: %s\n", e.msg);
        sam_destroy(&sam);
        free(mask_logits);
        image_destroy(&img);
        return 2;
    }
    device_log(&dc);
    float *x = malloc(sizeof(float) * 3 * SAM_IMG * SAM_IMG);
    sam_embedding_t emb = {0};
    sam_result_t res = {0};
    image_t *ov = NULL;
    char *json = NULL;
    if (!x) {
        rc = err_set(&e, ERR_NOMEM, "out of memory");
        goto done;
    }
    double t0 = now_ms();
    if (bank) { /* MoDA adapter: encoder, domain choice, adapter (tools/moda/seg_bank.c) */
        uint8_t *bm = malloc((size_t)img->w * img->h);
        char chosen[80];
        float prob = 0;
        int how = 0;
        rc = bm ? seg_bank_predict(sam, img, auto_mode ? NULL : &prompt, bank, domain,
                                   dc.device == KN_DEV_CUDA, bm, chosen, sizeof chosen, &prob,
                                   &how, &e)
                : err_set(&e, ERR_NOMEM, "out of memory");
        if (!rc) rc = save_mask(bm, img->w, img->h, out, &e);
        static const uint8_t bcolor[3] = {40, 230, 90};
        if (!rc && overlay && !(ov = image_overlay(img, bm, bcolor, 0.5f, &e))) rc = e.code;
        if (!rc && overlay) rc = image_save_png(ov, overlay, &e);
        if (!rc) {
            long long fg = 0;
            for (size_t i = 0; i < (size_t)img->w * img->h; i++) fg += bm[i] != 0;
            if (how == BANKRUN_SELECTED)
                printf("domain %s (selector probability %.3f)\n", chosen, prob);
            else
                printf("domain %s (%s)\n", chosen,
                       how == BANKRUN_FORCED ? "forced by --domain" : "the bank's only domain");
            printf("mask: %s (%dx%d, %lld foreground px, domain %s, %.0f ms)\n", out, img->w,
                   img->h, fg, chosen, now_ms() - t0);
        }
        free(bm);
        goto done;
    }
    double t1, t2;
    if (dc.device == KN_DEV_CUDA) { /* GPU encoder and decoder (weights uploaded here) */
        enc_cuda_t *gpu = enc_cuda_new(sam, 0, 1, &e);
        t0 = now_ms();
        rc = gpu ? enc_cuda_encode(gpu, img, &emb, x, 0, &e) : e.code;
        t1 = now_ms();
        double dec_ms = 0;
        if (!rc) rc = gpu_decode(sam, &emb, enc_cuda_emb_dev(gpu, 0), &prompt, &res, &dec_ms, &e);
        t2 = t1 + dec_ms;
        enc_cuda_destroy(&gpu);
    } else {
        rc = sam_encode(sam, img, &emb, x, 0, &e);
        t1 = now_ms();
        if (!rc) rc = sam_predict(sam, &emb, &prompt, &res, &e);
        t2 = now_ms();
    }
    if (rc) goto done;
    int b = res.best;
    size_t hw = (size_t)res.h * res.w;
    if ((rc = save_mask(res.mask + b * hw, res.w, res.h, out, &e))) goto done;
    if (multimask)
        for (int i = 0; i < res.n; i++) {
            char name[4200];
            variant_name(name, sizeof name, out, res.index[i]);
            if ((rc = save_mask(res.mask + i * hw, res.w, res.h, name, &e))) goto done;
        }
    if (overlay) {
        static const uint8_t color[3] = {40, 230, 90};
        ov = image_overlay(img, res.mask + b * hw, color, 0.5f, &e);
        if (!ov) {
            rc = e.code;
            goto done;
        }
        if ((rc = image_save_png(ov, overlay, &e))) goto done;
    }
    long long fg = 0;
    for (size_t i = 0; i < hw; i++) fg += res.mask[b * hw + i] != 0;
    if (dump) {
        if ((rc = write_f32(dump, "input.f32", x, (size_t)3 * SAM_IMG * SAM_IMG, &e)) ||
            (rc = write_f32(dump, "embedding.f32", emb.emb, (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB, &e)) ||
            (rc = write_f32(dump, "lowres.f32", res.lowres + (size_t)b * SAM_LOWRES * SAM_LOWRES,
                            (size_t)SAM_LOWRES * SAM_LOWRES, &e)))
            goto done;
        json_writer_t jw;
        json_w_init(&jw);
        json_w_begin_obj(&jw);
        json_w_key(&jw, "iou"); json_w_float(&jw, res.iou[b]);
        json_w_key(&jw, "stability"); json_w_float(&jw, res.stability[b]);
        json_w_key(&jw, "mask_index"); json_w_int(&jw, res.index[b]);
        json_w_key(&jw, "encoder_ms"); json_w_double(&jw, t1 - t0);
        json_w_key(&jw, "decoder_ms"); json_w_double(&jw, t2 - t1);
        json_w_key(&jw, "h"); json_w_int(&jw, res.h);
        json_w_key(&jw, "w"); json_w_int(&jw, res.w);
        json_w_key(&jw, "new_h"); json_w_int(&jw, emb.info.new_h);
        json_w_key(&jw, "new_w"); json_w_int(&jw, emb.info.new_w);
        json_w_key(&jw, "foreground_px"); json_w_int(&jw, fg);
        json_w_key(&jw, "iou_all");
        json_w_begin_arr(&jw);
        for (int i = 0; i < SAM_NMASK; i++) json_w_float(&jw, res.iou_all[i]);
        json_w_end_arr(&jw);
        json_w_key(&jw, "masks");
        json_w_begin_arr(&jw);
        for (int i = 0; i < res.n; i++) {
            json_w_begin_obj(&jw);
            json_w_key(&jw, "mask_index"); json_w_int(&jw, res.index[i]);
            json_w_key(&jw, "iou"); json_w_float(&jw, res.iou[i]);
            json_w_key(&jw, "stability"); json_w_float(&jw, res.stability[i]);
            json_w_end_obj(&jw);
        }
        json_w_end_arr(&jw);
        json_w_key(&jw, "decoder_points");
        json_w_begin_arr(&jw);
        for (int i = 0; i < ndp; i++) {
            json_w_begin_arr(&jw);
            json_w_float(&jw, dpts[i].x);
            json_w_float(&jw, dpts[i].y);
            json_w_float(&jw, dpts[i].label);
            json_w_end_arr(&jw);
        }
        json_w_end_arr(&jw);
        json_w_key(&jw, "model"); json_w_string(&jw, model);
        json_w_key(&jw, "encoder"); json_w_string(&jw, sam_encoder_name(sam));
        json_w_end_obj(&jw);
        size_t len;
        json = json_w_finish(&jw, &len, &e);
        if (!json) {
            rc = e.code;
            goto done;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/result.json", dump);
        if ((rc = write_text(path, json, &e))) goto done;
    }
    printf("mask: %s (%dx%d, %lld foreground px, mask %d, iou %.3f, stability %.3f)\n", out, res.w,
           res.h, fg, res.index[b], res.iou[b], res.stability[b]);
    if (multimask)
        for (int i = 0; i < res.n; i++) {
            char name[4200];
            variant_name(name, sizeof name, out, res.index[i]);
            printf("  mask %d: %s (iou %.3f, stability %.3f)\n", res.index[i], name, res.iou[i],
                   res.stability[i]);
        }
    if (overlay) printf("overlay: %s\n", overlay);
    if (dump) printf("dump: %s\n", dump);
    printf("encoder %.0f ms, decoder %.1f ms (%s, %d threads)\n", t1 - t0, t2 - t1,
           sam_encoder_name(sam), kn_get_threads());
done:
    free(mask_logits);
    free(json);
    image_destroy(&ov);
    sam_result_free(&res);
    sam_embedding_free(&emb);
    free(x);
    sam_destroy(&sam);
    image_destroy(&img);
    return rc ? fail(rc, &e) : 0;
}
