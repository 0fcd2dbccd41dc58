/* test_vit_cuda.c — the GPU ViT encoder (common/vit_cuda.h) against the CPU encoder
 * (vit_forward, sam_vit.c) on random weights with the official key names, generated here
 * (no PyTorch needed; the CPU encoder itself is checked against PyTorch by tests/vit):
 *   small  C 128, depth 4, 2 heads of 64, blocks {0,2} windowed (14×14, 64→70 with zero pad
 *          tokens), {1,3} global — the configuration of tests/vit's small fixture;
 *   vitb   the full ViT-B shape: C 768, depth 12, 12 heads, global {2,5,8,11}.
 * B random images (different per batch slot) are encoded together as one batch; images 0
 * and B−1 are compared with vit_forward: embedding and early feature (tokens after the
 * first global block) relative L2 ≤ 2e-3 (TF32). Then REPS device-resident forwards are
 * timed at batch 1 and at batch B (best of REPS).
 * Usage: test_vit_cuda small|vitb [B [REPS]]  (B default 2, 1..16; REPS default 3, 0 = no
 * timing, for the CPU emulation). Exit 77 without a CUDA device, 1 on any failed check. */
#include "kn_cuda.h"
#include "sam_vit.h"
#include "vit_cuda.h"
#include "gpu_check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float urand(void) /* uniform [-1, 1) */
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static int add(wts_writer_t *wr, const char *name, float scale, float base, int nd, int64_t d0,
               int64_t d1, int64_t d2, int64_t d3)
{
    int64_t sh[4] = {d0, d1, d2, d3};
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    float *b = malloc(n * sizeof(float));
    if (!b) return -1;
    for (size_t i = 0; i < n; i++) b[i] = base + scale * urand();
    err_t e = {0};
    int rc = wts_writer_add(wr, name, WTS_F32, nd, sh, b, &e);
    if (rc) printf("FAIL add %s: %s\n", name, e.msg);
    free(b);
    return rc;
}

/* Random encoder weights: C channels, depth blocks, head dim 64, MLP 4C, every block whose
 * bit is set in gmask global, the others 14×14 windows. Linear weights ~U(±sqrt(3/K)) so
 * activations keep their scale; LayerNorm weights 1 ± 0.1. */
static wts_t *make(int C, int depth, unsigned gmask)
{
    wts_writer_t *wr = wts_writer_new();
    char n[128];
    int rc = !wr;
    float sc = sqrtf(3.0f / C), s4 = sqrtf(3.0f / (4 * C));
#define ADD(nm, ...) (rc = rc ? rc : add(wr, nm, __VA_ARGS__))
    ADD("image_encoder.patch_embed.proj.weight", sqrtf(3.0f / 768), 0, 4, C, 3, 16, 16);
    ADD("image_encoder.patch_embed.proj.bias", 0.1f, 0, 1, C, 0, 0, 0);
    ADD("image_encoder.pos_embed", 0.5f, 0, 4, 1, 64, 64, C);
    for (int i = 0; i < depth; i++) {
        int S = (gmask >> i) & 1 ? 64 : 14;
#define BLK(suffix, ...) (snprintf(n, sizeof n, "image_encoder.blocks.%d.%s", i, suffix), ADD(n, __VA_ARGS__))
        BLK("norm1.weight", 0.1f, 1, 1, C, 0, 0, 0);
        BLK("norm1.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("attn.qkv.weight", sc, 0, 2, 3 * C, C, 0, 0);
        BLK("attn.qkv.bias", 0.1f, 0, 1, 3 * C, 0, 0, 0);
        BLK("attn.proj.weight", sc, 0, 2, C, C, 0, 0);
        BLK("attn.proj.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("attn.rel_pos_h", 0.2f, 0, 2, 2 * S - 1, 64, 0, 0);
        BLK("attn.rel_pos_w", 0.2f, 0, 2, 2 * S - 1, 64, 0, 0);
        BLK("norm2.weight", 0.1f, 1, 1, C, 0, 0, 0);
        BLK("norm2.bias", 0.1f, 0, 1, C, 0, 0, 0);
        BLK("mlp.lin1.weight", sc, 0, 2, 4 * C, C, 0, 0);
        BLK("mlp.lin1.bias", 0.1f, 0, 1, 4 * C, 0, 0, 0);
        BLK("mlp.lin2.weight", s4, 0, 2, C, 4 * C, 0, 0);
        BLK("mlp.lin2.bias", 0.1f, 0, 1, C, 0, 0, 0);
#undef BLK
    }
    ADD("image_encoder.neck.0.weight", sc, 0, 4, 256, C, 1, 1);
    ADD("image_encoder.neck.1.weight", 0.1f, 1, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.1.bias", 0.1f, 0, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.2.weight", sqrtf(3.0f / 2304), 0, 4, 256, 256, 3, 3);
    ADD("image_encoder.neck.3.weight", 0.1f, 1, 1, 256, 0, 0, 0);
    ADD("image_encoder.neck.3.bias", 0.1f, 0, 1, 256, 0, 0, 0);
#undef ADD
    void *mem = NULL;
    size_t len = 0;
    err_t e = {0};
    wts_t *w = NULL;
    if (!rc && wts_writer_to_memory(wr, &mem, &len, &e) == 0) w = wts_from_memory(mem, len, &e);
    if (!w) printf("FAIL making weights: %s\n", e.msg);
    free(mem);
    wts_writer_destroy(&wr);
    return w;
}

int main(int argc, char **argv)
{
    int small = argc > 1 && !strcmp(argv[1], "small"), vitb = argc > 1 && !strcmp(argv[1], "vitb");
    int B = argc > 2 ? atoi(argv[2]) : 2, reps = argc > 3 ? atoi(argv[3]) : 3;
    if ((!small && !vitb) || B < 1 || B > 16 || reps < 0) {
        fprintf(stderr, "usage: test_vit_cuda small|vitb [B (1..16) [REPS (>= 0)]]\n");
        return 2;
    }
    char why[256] = "";
    if (kcu_device_probe(why, sizeof why) <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        return 77;
    }
    double t0 = now_ms();
    wts_t *w = small ? make(128, 4, 0xA) : make(768, 12, 0x924);
    err_t e = {0};
    vit_t *cpu = w ? vit_new(w, &e) : NULL;
    if (!cpu) {
        printf("FAIL loading the %s ViT: %s\n", argv[1], e.msg);
        return 1;
    }
    printf("%s weights made and loaded on the CPU in %.0f ms\n", argv[1], now_ms() - t0);
    size_t nx = (size_t)3 * SAM_IMG * SAM_IMG, ne = (size_t)SAM_EMB_C * VIT_TOKENS;
    float *x = malloc(sizeof(float) * nx * B);
    if (!x) {
        printf("FAIL out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < nx * B; i++) x[i] = 2.0f * urand();
    int C = vit_early_channels(cpu), fails = 0;
    size_t nr = (size_t)C * VIT_TOKENS;
    float *emb = malloc(sizeof(float) * ne * B), *early = malloc(sizeof(float) * nr * B);
    float *cemb = malloc(sizeof(float) * ne), *cearly = malloc(sizeof(float) * nr);
    if (!emb || !early || !cemb || !cearly) {
        printf("FAIL out of memory\n");
        return 1;
    }
    vit_cuda_t *gpu = vit_cuda_new(w, 0, B, &e);
    if (!gpu) {
        printf("FAIL vit_cuda_new: %s\n", e.msg);
        return 1;
    }
    if (vit_cuda_early_channels(gpu) != C) {
        printf("FAIL early channels %d, CPU %d\n", vit_cuda_early_channels(gpu), C);
        fails++;
    }
    t0 = now_ms();
    if (vit_cuda_forward(gpu, x, B, emb, early, &e)) {
        printf("FAIL vit_cuda_forward: %s\n", e.msg);
        return 1;
    }
    printf("GPU ViT encoder batch %d: %.1f ms (first call, incl. copies)\n", B, now_ms() - t0);
    for (int b = 0; b < B; b += B > 2 ? B - 1 : 1) { /* images 0 and B−1 */
        t0 = now_ms();
        if (vit_forward(cpu, x + b * nx, cemb, cearly, &e)) {
            printf("FAIL vit_forward: %s\n", e.msg);
            return 1;
        }
        double tc = now_ms() - t0;
        double re = rel_l2(emb + b * ne, cemb, ne), rr = rel_l2(early + b * nr, cearly, nr);
        int ok = re <= 2e-3 && rr <= 2e-3; /* NaN fails */
        printf("%s image %d: embedding rel L2 %.2e, early rel L2 %.2e (tol 2e-3; CPU %.0f ms)\n",
               ok ? "ok  " : "FAIL", b, re, rr, tc);
        fails += !ok;
    }
    if (vit_cuda_forward(gpu, x, B + 1, emb, NULL, &e) != ERR_INVALID) {
        printf("FAIL a batch above max_batch was accepted\n");
        fails++;
    }
    for (int bb = 1; reps > 0 && bb <= B; bb += B > 1 ? B - 1 : 1) {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            t0 = now_ms();
            if (vit_cuda_forward_resident(gpu, bb, &e)) {
                printf("FAIL resident forward: %s\n", e.msg);
                return 1;
            }
            double t = now_ms() - t0;
            best = t < best ? t : best;
        }
        printf("GPU ViT encoder resident batch %d: best %.2f ms (%.0f images/s)\n", bb, best,
               bb * 1e3 / best);
    }
    vit_cuda_destroy(&gpu);
    vit_destroy(&cpu);
    wts_destroy(&w);
    free(x);
    free(emb);
    free(early);
    free(cemb);
    free(cearly);
    printf("test_vit_cuda %s: %d failed checks\n", argv[1], fails);
    return fails ? 1 : 0;
}
