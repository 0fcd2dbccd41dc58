/* fuzz_pth.c — fuzz target for the .pth reader and the SAM conversion, plus a deterministic
 * replay driver that runs as a unit test (under ASan+UBSan in CI).
 *
 *   LLVMFuzzerTestOneInput: pth_from_memory, read every tensor, pth_convert_sam into a
 *   writer, serialise it. Any input must end in success or a clean error (code + message).
 *
 *   fuzz_pth DIR [ITERATIONS]   seeds DIR/tiny.pth, tiny_p4.pth, tiny_bn.pth; first checks
 *   the seeds (tiny_bn.pth folds to the exact values), then ITERATIONS (default 20000)
 *   mutated copies: 1..8 in-place byte edits (random, bit flips, 0x00/0xFF/0x7F/0x80, small
 *   ints), biased to the pickle, sometimes a truncation. Fixed seed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int g_bad; /* inputs that failed without a message */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    err_t e = {0};
    pth_t *p = pth_from_memory(data, size, &e);
    if (!p) {
        if (!(e.code < 0 && e.msg[0])) g_bad++;
        return 0;
    }
    for (int i = 0; i < pth_count(p); i++) {
        const pth_tensor_t *t = pth_at(p, i);
        if (t->numel > (1 << 22)) continue;
        void *buf = malloc((size_t)(t->numel + 1) * 8);
        if (buf && pth_read_f32(p, i, buf, &e) < 0) pth_read_i64(p, i, buf, &e);
        free(buf);
    }
    wts_writer_t *wr = wts_writer_new();
    err_t ce = {0};
    if (pth_convert_sam(p, wr, "fuzz", NULL, &ce) == 0) {
        void *mem = NULL;
        size_t len = 0;
        if (wts_writer_to_memory(wr, &mem, &len, &ce) == 0) free(mem);
    } else if (!(ce.code < 0 && ce.msg[0])) {
        g_bad++;
    }
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    return 0;
}

#ifndef MODA_LIBFUZZER
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Checks the Conv2d_BN seed folds exactly as the formula says. */
static int check_bn_seed(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny_bn.pth", dir);
    err_t e = {0};
    pth_t *p = pth_open(path, &e);
    if (!p) { fprintf(stderr, "FAIL %s\n", e.msg); return 1; }
    wts_writer_t *wr = wts_writer_new();
    pth_sam_info_t si;
    void *mem = NULL;
    size_t len = 0;
    wts_t *w = NULL;
    if (pth_convert_sam(p, wr, NULL, &si, &e) == 0 && wts_writer_to_memory(wr, &mem, &len, &e) == 0)
        w = wts_from_memory(mem, len, &e);
    free(mem);
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    if (!w) { fprintf(stderr, "FAIL convert tiny_bn: %s\n", e.msg); return 1; }
    const float *cw = wts_f32(w, "image_encoder.patch_embed.seq.0.c.weight", &e, 4, 2, 1, 1, 1);
    const float *cb = wts_f32(w, "image_encoder.patch_embed.seq.0.c.bias", &e, 1, 2);
    int bad = !cw || !cb || strcmp(si.encoder, "tinyvit_5m") || si.n_bn_folded != 1 || si.n_dropped != 2 ||
              wts_count(w) != 3;
    double s0 = 1.0 / sqrt(3.0 + 1e-5), s1 = 0.5 / sqrt(0.25 + 1e-5);
    double want[4] = {2 * s0, -1 * s1, (0 - 1.0) * s0 + 0.25, (0 + 2.0) * s1};
    for (int i = 0; !bad && i < 2; i++) {
        if (fabs(cw[i] - want[i]) > 1e-6 || fabs(cb[i] - want[2 + i]) > 1e-6) bad = 1;
    }
    printf("tiny_bn.pth folds to w [%g %g] b [%g %g]: %s\n", cw ? cw[0] : 0, cw ? cw[1] : 0, cb ? cb[0] : 0,
           cb ? cb[1] : 0, bad ? "FAIL" : "ok");
    wts_destroy(&w);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: fuzz_pth DIR [ITERATIONS]\n"); return 2; }
    long iters = argc > 2 ? atol(argv[2]) : 20000;
    int fails = check_bn_seed(argv[1]);
    static const char *names[] = {"tiny.pth", "tiny_p4.pth", "tiny_bn.pth"};
    unsigned char *seed[3];
    size_t len[3];
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", argv[1], names[i]);
        seed[i] = slurp(path, &len[i]);
        if (!seed[i]) { fprintf(stderr, "FAIL cannot read %s\n", path); return 1; }
        LLVMFuzzerTestOneInput(seed[i], len[i]);
    }
    static const unsigned char interesting[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0x02, 0x05, 0x08, 0x10, 0x40};
    unsigned char *buf = malloc(4096 * 4);
    long accepted = 0;
    for (long it = 0; it < iters; it++) {
        int s = (int)(rnd() % 3);
        size_t n = len[s];
        memcpy(buf, seed[s], n);
        int edits = 1 + (int)(rnd() % 8);
        for (int k = 0; k < edits; k++) {
            /* data.pkl is the first entry: 3 in 4 edits land in the first 1.2 KB */
            size_t at = (rnd() % 4) ? rnd() % (n < 1200 ? n : 1200) : rnd() % n;
            switch (rnd() % 4) {
            case 0: buf[at] = (unsigned char)rnd(); break;
            case 1: buf[at] ^= (unsigned char)(1u << (rnd() % 8)); break;
            case 2: buf[at] = interesting[rnd() % sizeof interesting]; break;
            default: buf[at] = (unsigned char)(buf[at] + (int)(rnd() % 7) - 3); break;
            }
        }
        if (rnd() % 16 == 0) n = rnd() % n;
        int before = g_bad;
        err_t e = {0};
        pth_t *p = pth_from_memory(buf, n, &e);
        accepted += p != NULL;
        pth_destroy(&p);
        LLVMFuzzerTestOneInput(buf, n);
        if (g_bad != before) fprintf(stderr, "FAIL iteration %ld: error without a message\n", it);
    }
    printf("fuzz_pth: %ld mutated inputs, %ld parsed, %d errors without a message\n", iters, accepted, g_bad);
    for (int i = 0; i < 3; i++) free(seed[i]);
    free(buf);
    return fails || g_bad ? 1 : 0;
}
#endif
