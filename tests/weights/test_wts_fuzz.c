/* test_wts_fuzz.c — feeds mutated and truncated copies of a small valid weights file to
 * wts_from_memory: every input must give either a clean error (negative code, message)
 * or a file that satisfies the open-time invariants. Deterministic (fixed seed); runs
 * under ASan+UBSan with the unit label. Optional argv[1]: iterations. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wts.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static unsigned char *seed_file(size_t *len)
{
    wts_writer_t *wr = wts_writer_new();
    err_t e = {0};
    float a[12];
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    int64_t s1[2] = {3, 4}, s2[1] = {2}, s3[3] = {1, 2, 2};
    wts_writer_add(wr, "image_encoder.x.weight", WTS_F32, 2, s1, a, &e);
    wts_writer_add(wr, "image_encoder.x.bias", WTS_F32, 1, s2, a, &e);
    wts_writer_add(wr, "h", WTS_F16, 3, s3, a, &e);
    wts_writer_set_meta(wr, "moda.kind", "sam-weights", &e);
    void *b = NULL;
    if (wts_writer_to_memory(wr, &b, len, &e)) {
        fprintf(stderr, "seed: %s\n", e.msg);
        exit(1);
    }
    wts_writer_destroy(&wr);
    return b;
}

static const char *g_tokens[] = {"{", "}", "[", "]", ",", ":", "\"", "0", "-1", "1e9", "99999999999999999999",
                                 "\"F32\"", "\"U8\"", "null", "\\u", " ", "\"data_offsets\"", "\"shape\""};

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    size_t slen;
    unsigned char *seed = seed_file(&slen);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | seed[i];
    int accepted = 0, rejected = 0, bad = 0;
    unsigned char *buf = malloc(slen + 64);
    for (int it = 0; it < iters; it++) {
        size_t len = slen;
        memcpy(buf, seed, slen);
        int kind = (int)(rnd() % 6);
        int nmut = 1 + (int)(rnd() % 4);
        for (int m = 0; m < nmut; m++) {
            switch (kind) {
            case 0: /* truncate */
                len = rnd() % (len + 1);
                break;
            case 1: /* flip a bit anywhere */
                if (len) buf[rnd() % len] ^= (unsigned char)(1u << (rnd() % 8));
                break;
            case 2: /* random byte in the header */
                buf[8 + rnd() % hlen] = (unsigned char)rnd();
                break;
            case 3: { /* overwrite with a JSON-ish token inside the header */
                const char *t = g_tokens[rnd() % (sizeof g_tokens / sizeof *g_tokens)];
                size_t tl = strlen(t), at = 8 + rnd() % hlen;
                if (at + tl <= 8 + hlen) memcpy(buf + at, t, tl);
                break;
            }
            case 4: /* change the declared header length */
                buf[rnd() % 8] = (unsigned char)rnd();
                break;
            default: /* change a digit in the header (offsets and shapes) */
                for (size_t k = 8 + rnd() % hlen; k < 8 + hlen; k++)
                    if (buf[k] >= '0' && buf[k] <= '9') {
                        buf[k] = (unsigned char)('0' + rnd() % 10);
                        break;
                    }
                break;
            }
        }
        err_t e = {0};
        wts_t *w = wts_from_memory(buf, len, &e);
        if (!w) {
            rejected++;
            if (e.code >= 0 || !e.msg[0]) {
                fprintf(stderr, "FAIL iteration %d: rejected without code/message\n", it);
                bad++;
            }
            continue;
        }
        accepted++;
        size_t total = 0;
        for (int i = 0; i < wts_count(w); i++) {
            const wts_tensor_t *t = wts_at(w, i);
            size_t n = wts_dtype_size(t->dtype);
            for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
            if (n != t->nbytes || ((uintptr_t)t->data & 63) || wts_find(w, t->name) != t) {
                fprintf(stderr, "FAIL iteration %d: tensor '%s' breaks an invariant\n", it, t->name);
                bad++;
            }
            volatile unsigned char sink = 0;
            for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const unsigned char *)t->data)[k];
            (void)sink;
            total += t->nbytes;
        }
        if (total + 8 > len) {
            fprintf(stderr, "FAIL iteration %d: more tensor bytes than input\n", it);
            bad++;
        }
        char h[65];
        wts_content_hash(w, h);
        wts_destroy(&w);
    }
    free(buf);
    free(seed);
    printf("test_wts_fuzz: %d inputs, %d accepted, %d rejected cleanly, %d bad\n", iters, accepted, rejected, bad);
    return bad ? 1 : 0;
}
