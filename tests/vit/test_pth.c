/* test_pth.c — unit test of the .pth reader on tiny.pth (written at test time by
 * `ref_vit.py tiny` with torch 1.13): nesting under "model", _metadata BUILD, f32 / f16
 * (incl. subnormal, inf) / bf16 / f64 / int64 / int32, a transposed tensor (strides), a
 * strided view sharing a storage (offset), 0-dim and empty tensors, writer round trip.
 * tiny_p4.pth: the same with pickle protocol 4 under "state_dict".
 * Then every truncation and a byte flip at every position must either parse or fail with
 * an error message — never crash or read out of bounds (run under ASan in CI).
 * Usage: test_pth DIR_WITH_tiny.pth
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pth.h"
#include "expect.h"

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)len);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void check_f32(pth_t *p, const char *name, int ndim, const int64_t *shape, const float *want, int n)
{
    int i = pth_find(p, name);
    EXPECT(i >= 0);
    if (i < 0) return;
    const pth_tensor_t *t = pth_at(p, i);
    EXPECT(t->ndim == ndim && t->numel == n);
    for (int d = 0; d < ndim && d < t->ndim; d++) EXPECT(t->shape[d] == shape[d]);
    float got[16];
    err_t e = {0};
    EXPECT(pth_read_f32(p, i, got, &e) == 0);
    for (int k = 0; k < n; k++)
        if (!(got[k] == want[k] || (isinf(want[k]) && isinf(got[k])))) {
            fprintf(stderr, "FAIL %s[%d] = %g want %g\n", name, k, got[k], want[k]);
            expect_failures++;
        }
}

static void exercise(pth_t *p)
{
    for (int i = 0; i < pth_count(p); i++) {
        const pth_tensor_t *t = pth_at(p, i);
        if (t->numel > 1000000) continue;
        void *buf = malloc((size_t)(t->numel + 1) * 8);
        err_t e = {0};
        if (pth_read_f32(p, i, buf, &e) < 0) pth_read_i64(p, i, buf, &e);
        free(buf);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: test_pth DIR\n"); return 2; }
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny.pth", argv[1]);
    err_t e = {0};
    pth_t *p = pth_open(path, &e);
    if (!p) { fprintf(stderr, "FAIL open: %s\n", e.msg); return 1; }
    EXPECT(pth_count(p) == 11);
    check_f32(p, "a.weight", 2, (int64_t[]){2, 3}, (float[]){0, 1, 2, 3, 4, 5}, 6);
    check_f32(p, "a.t", 2, (int64_t[]){3, 2}, (float[]){0, 3, 1, 4, 2, 5}, 6);
    check_f32(p, "view", 1, (int64_t[]){3}, (float[]){2, 4, 6}, 3);
    check_f32(p, "h", 1, (int64_t[]){5}, (float[]){1.5f, -2.0f, 65504.0f, ldexpf(1, -24), INFINITY}, 5);
    check_f32(p, "bf", 1, (int64_t[]){2}, (float[]){1.0f, -3.5f}, 2);
    check_f32(p, "d", 2, (int64_t[]){1, 1}, (float[]){0.25f}, 1);
    check_f32(p, "scalar", 0, NULL, (float[]){3.0f}, 1);
    int ie = pth_find(p, "empty");
    EXPECT(ie >= 0 && pth_at(p, ie)->numel == 0 && pth_at(p, ie)->shape[1] == 4);
    int64_t iv[2] = {0};
    int ii = pth_find(p, "i");
    EXPECT(ii >= 0 && pth_read_i64(p, ii, iv, &e) == 0 && iv[0] == -1 && iv[1] == ((int64_t)1 << 40));
    ii = pth_find(p, "i32");
    EXPECT(ii >= 0 && pth_read_i64(p, ii, iv, &e) == 0 && iv[0] == 7 && iv[1] == -7);
    float f;
    EXPECT(pth_read_f32(p, ii, &f, &e) == ERR_UNSUPPORTED);
    EXPECT(pth_read_f32(p, 99, &f, &e) == ERR_RANGE);

    /* writer round trip: everything, then a prefix filter */
    wts_writer_t *wr = wts_writer_new();
    EXPECT(pth_add_to_writer(p, wr, NULL, &e) == 11);
    void *mem = NULL;
    size_t len = 0;
    EXPECT(wts_writer_to_memory(wr, &mem, &len, &e) == 0);
    wts_t *w = mem ? wts_from_memory(mem, len, &e) : NULL;
    EXPECT(w != NULL);
    if (w) {
        const wts_tensor_t *t = wts_find(w, "a.t");
        EXPECT(t && t->dtype == WTS_F32 && t->shape[0] == 3 && ((const float *)t->data)[1] == 3.0f);
        t = wts_find(w, "i");
        EXPECT(t && t->dtype == WTS_I64);
        wts_destroy(&w);
    }
    free(mem);
    wts_writer_destroy(&wr);
    wr = wts_writer_new();
    EXPECT(pth_add_to_writer(p, wr, "a.", &e) == 2);
    wts_writer_destroy(&wr);
    /* not a SAM checkpoint */
    wr = wts_writer_new();
    EXPECT(pth_convert_sam(p, wr, NULL, NULL, &e) == ERR_FORMAT && strstr(e.msg, "image encoder"));
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    EXPECT(p == NULL);

    /* the same state dict pickled with protocol 4, under "state_dict" */
    snprintf(path, sizeof path, "%s/tiny_p4.pth", argv[1]);
    p = pth_open(path, &e);
    if (!p) { fprintf(stderr, "FAIL open p4: %s\n", e.msg); return 1; }
    EXPECT(pth_count(p) == 11);
    check_f32(p, "a.t", 2, (int64_t[]){3, 2}, (float[]){0, 3, 1, 4, 2, 5}, 6);
    check_f32(p, "view", 1, (int64_t[]){3}, (float[]){2, 4, 6}, 3);
    check_f32(p, "h", 1, (int64_t[]){5}, (float[]){1.5f, -2.0f, 65504.0f, ldexpf(1, -24), INFINITY}, 5);
    ii = pth_find(p, "i");
    EXPECT(ii >= 0 && pth_read_i64(p, ii, iv, &e) == 0 && iv[0] == -1 && iv[1] == ((int64_t)1 << 40));
    pth_destroy(&p);
    snprintf(path, sizeof path, "%s/tiny.pth", argv[1]);

    /* hostile: truncations and byte flips, on both protocols */
    int parsed = 0, failed = 0;
    static const char *files[] = {"tiny.pth", "tiny_p4.pth"};
    for (int fi = 0; fi < 2; fi++) {
        snprintf(path, sizeof path, "%s/%s", argv[1], files[fi]);
        size_t n = 0;
        unsigned char *raw = slurp(path, &n);
        EXPECT(raw != NULL);
        int failed0 = failed;
        for (size_t cut = 0; raw && cut < n; cut++) {
            err_t ee = {0};
            pth_t *q = pth_from_memory(raw, cut, &ee);
            if (q) { parsed++; exercise(q); pth_destroy(&q); }
            else { failed++; EXPECT(ee.code < 0 && ee.msg[0]); }
        }
        EXPECT(failed - failed0 == (int)n); /* no strict prefix is a valid zip */
        for (size_t at = 0; raw && at < n; at++) {
            for (int pass = 0; pass < 2; pass++) {
                unsigned char old = raw[at];
                raw[at] = pass ? (unsigned char)(old + 1) : (unsigned char)(old ^ 0xFF);
                err_t ee = {0};
                pth_t *q = pth_from_memory(raw, n, &ee);
                if (q) { parsed++; exercise(q); pth_destroy(&q);
                } else {
                    failed++;
                    if (!(ee.code < 0 && ee.msg[0])) {
                        fprintf(stderr, "FAIL no message at %zu\n", at);
                        expect_failures++;
                    }
                }
                raw[at] = old;
            }
        }
        free(raw);
    }
    printf("mutations: %d parsed, %d rejected with a message\n", parsed, failed);
    EXPECT(pth_open("/nonexistent/x.pth", &e) == NULL && e.code == ERR_IO);
    if (expect_failures) {
        fprintf(stderr, "%d failures\n", expect_failures);
        return 1;
    }
    printf("test_pth: ok\n");
    return 0;
}
