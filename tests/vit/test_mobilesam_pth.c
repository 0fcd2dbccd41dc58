/* test_mobilesam_pth.c — the .pth path on real MobileSAM weights.
 *
 *   test_mobilesam_pth MOBILE_SAM.safetensors MOBILE_SAM_LIKE.pth
 *
 * The .pth is written by `ref_vit.py mobilesam` from the converted weights file: every
 * folded conv split back into Conv2d_BN with random statistics, TinyViT buffers added.
 * Converting it must give back the same key set (bn.*, attention_bias_idxs and
 * num_batches_tracked gone), values within 1e-5 relative per tensor, encoder tinyvit_5m,
 * and the TinyViT encoder (tinyvit_new) must accept it and give the same embedding
 * (1e-4 relative) as the original file. Exit 77 (skip) when the weights file is absent.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pth.h"
#include "sam_parts.h"

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: test_mobilesam_pth WEIGHTS.safetensors MOBILE_SAM_LIKE.pth\n"); return 2; }
    err_t e = {0};
    wts_t *ref = wts_open(argv[1], &e);
    if (!ref) { printf("skip: %s\n", e.msg); return 77; }
    int fails = 0;
    pth_t *p = pth_open(argv[2], &e);
    if (!p) { fprintf(stderr, "FAIL %s\n", e.msg); return 1; }
    wts_writer_t *wr = wts_writer_new();
    pth_sam_info_t si;
    void *mem = NULL;
    size_t len = 0;
    wts_t *w = NULL;
    if (pth_convert_sam(p, wr, "mobile_sam_like.pth", &si, &e) == 0 && wts_writer_to_memory(wr, &mem, &len, &e) == 0)
        w = wts_from_memory(mem, len, &e);
    free(mem);
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    if (!w) { fprintf(stderr, "FAIL convert: %s\n", e.msg); return 1; }
    printf("converted: %d tensors, %d BN folded, %d buffers dropped, encoder %s\n", si.n_tensors, si.n_bn_folded,
           si.n_dropped, si.encoder);
    if (strcmp(si.encoder, "tinyvit_5m") || si.n_bn_folded != 27 || wts_count(w) != wts_count(ref)) {
        fprintf(stderr, "FAIL summary (ref has %d tensors)\n", wts_count(ref));
        fails++;
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < wts_count(ref); i++) {
        const wts_tensor_t *a = wts_at(ref, i), *b = wts_find(w, a->name);
        if (!b || b->nbytes != a->nbytes || b->ndim != a->ndim) { fprintf(stderr, "FAIL %s missing or reshaped\n", a->name); fails++; continue; }
        const float *x = a->data, *y = b->data;
        size_t n = a->nbytes / 4;
        double mx = 0, mref = 0;
        for (size_t k = 0; k < n; k++) {
            mx = fmax(mx, fabs((double)x[k] - y[k]));
            mref = fmax(mref, fabs(x[k]));
        }
        double rel = mx / (mref > 0 ? mref : 1);
        if (rel > worst) { worst = rel; worst_name = a->name; }
    }
    printf("tensors vs the original file: worst rel %.3g (%s)\n", worst, worst_name);
    if (worst > 1e-5) fails++;

    tinyvit_t *e1 = tinyvit_new(ref, &e), *e2 = e1 ? tinyvit_new(w, &e) : NULL;
    if (!e1 || !e2) { fprintf(stderr, "FAIL tinyvit_new: %s\n", e.msg); return 1; }
    size_t nimg = (size_t)3 * SAM_IMG * SAM_IMG, nemb = (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB;
    float *img = malloc(nimg * sizeof(float)), *o1 = malloc(nemb * sizeof(float)), *o2 = malloc(nemb * sizeof(float));
    unsigned s = 7;
    for (size_t i = 0; i < nimg; i++) { s = s * 1664525u + 1013904223u; img[i] = (float)((s >> 8) & 0xFFFF) / 16384.0f - 2.0f; }
    if (tinyvit_forward(e1, img, o1, NULL, &e) < 0 || tinyvit_forward(e2, img, o2, NULL, &e) < 0) {
        fprintf(stderr, "FAIL forward: %s\n", e.msg);
        return 1;
    }
    double mx = 0, mref = 0;
    for (size_t k = 0; k < nemb; k++) {
        mx = fmax(mx, fabs((double)o1[k] - o2[k]));
        mref = fmax(mref, fabs(o1[k]));
    }
    printf("TinyViT embedding from .pth vs original: max|err| %.3g max|ref| %.3g rel %.3g\n", mx, mref, mx / mref);
    if (!(mx / mref <= 1e-4)) fails++;
    tinyvit_destroy(&e1);
    tinyvit_destroy(&e2);
    wts_destroy(&w);
    wts_destroy(&ref);
    free(img); free(o1); free(o2);
    if (fails) { fprintf(stderr, "%d failures\n", fails); return 1; }
    printf("test_mobilesam_pth: ok\n");
    return 0;
}
