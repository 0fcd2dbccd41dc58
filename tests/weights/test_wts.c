/* test_wts.c — weights files: write→read bit-exact, atomic save, content hash, and every
 * kind of bad file rejected with a message naming the tensor (unit). Exits 1 on failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wts.h"
#include "expect.h"

/* Builds u64 length + header + data. Caller frees. */
static unsigned char *mk(const char *hdr, const void *data, size_t dlen, size_t *len)
{
    size_t h = strlen(hdr);
    unsigned char *b = malloc(8 + h + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    *len = 8 + h + dlen;
    return b;
}

static void expect_reject(const char *label, const unsigned char *b, size_t len, const char *part1, const char *part2)
{
    err_t e = {0};
    wts_t *w = wts_from_memory(b, len, &e);
    if (w) {
        fprintf(stderr, "FAIL %s: accepted\n", label);
        expect_failures++;
        wts_destroy(&w);
        return;
    }
    if ((part1 && !strstr(e.msg, part1)) || (part2 && !strstr(e.msg, part2)) || e.code >= 0) {
        fprintf(stderr, "FAIL %s: message '%s' (code %d) lacks '%s' / '%s'\n", label, e.msg, e.code,
                part1 ? part1 : "", part2 ? part2 : "");
        expect_failures++;
    } else {
        printf("  rejected %-22s %s\n", label, e.msg);
    }
}

static void expect_reject_hdr(const char *label, const char *hdr, size_t dlen, const char *p1, const char *p2)
{
    unsigned char data[256] = {0};
    size_t len;
    unsigned char *b = mk(hdr, data, dlen, &len);
    expect_reject(label, b, len, p1, p2);
    free(b);
}

static wts_writer_t *sample(void)
{
    wts_writer_t *wr = wts_writer_new();
    err_t e = {0};
    float a[2 * 3];
    for (int i = 0; i < 6; i++) a[i] = (float)i * 0.1f - 0.25f;
    a[5] = -0.0f;
    int64_t sa[2] = {2, 3};
    EXPECT(!wts_writer_add(wr, "mask_decoder.iou_token.weight", WTS_F32, 2, sa, a, &e));
    uint16_t h[3] = {0x3c00, 0xffff, 1};
    int64_t sh[1] = {3};
    EXPECT(!wts_writer_add(wr, "b.half", WTS_F16, 1, sh, h, &e));
    int64_t i64 = -5;
    EXPECT(!wts_writer_add(wr, "c.scalar", WTS_I64, 0, NULL, &i64, &e));
    int64_t sz[2] = {0, 4};
    EXPECT(!wts_writer_add(wr, "d.empty", WTS_F32, 2, sz, NULL, &e));
    unsigned char u[5] = {1, 2, 3, 4, 255};
    int64_t su[3] = {1, 5, 1};
    EXPECT(!wts_writer_add(wr, "e.u8", WTS_U8, 3, su, u, &e));
    EXPECT(wts_writer_add(wr, "b.half", WTS_F16, 1, sh, h, &e) == ERR_EXISTS);
    EXPECT(!wts_writer_set_meta(wr, "moda.kind", "sam-weights", &e));
    EXPECT(!wts_writer_set_meta(wr, "moda.source", "t\"est\n", &e));
    return wr;
}

static void test_roundtrip(const char *dir)
{
    err_t e = {0};
    wts_writer_t *wr = sample();
    void *buf;
    size_t len;
    EXPECT(!wts_writer_to_memory(wr, &buf, &len, &e));
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | ((unsigned char *)buf)[i];
    EXPECT((8 + hl) % 8 == 0);
    char path[512];
    snprintf(path, sizeof path, "%s/test_wts_roundtrip.safetensors", dir);
    EXPECT(!wts_writer_save(wr, path, &e));
    wts_writer_destroy(&wr);
    EXPECT(wr == NULL);

    /* the saved file is the same bytes as the memory form; no temp file left behind */
    FILE *f = fopen(path, "rb");
    EXPECT(f);
    unsigned char *fb = malloc(len + 16);
    size_t got = f ? fread(fb, 1, len + 16, f) : 0;
    if (f) fclose(f);
    EXPECT(got == len && !memcmp(fb, buf, len));
    free(fb);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    EXPECT(access(tmp, F_OK) != 0);

    wts_t *w = wts_open(path, &e);
    EXPECT(w);
    if (!w) {
        fprintf(stderr, "%s\n", e.msg);
        free(buf);
        return;
    }
    EXPECT(wts_count(w) == 5);
    EXPECT(!strcmp(wts_meta(w, "moda.kind"), "sam-weights"));
    EXPECT(!strcmp(wts_meta(w, "moda.source"), "t\"est\n"));
    EXPECT(wts_meta(w, "nope") == NULL);
    EXPECT(!strcmp(wts_at(w, 0)->name, "mask_decoder.iou_token.weight")); /* file order */
    for (int i = 0; i < wts_count(w); i++) EXPECT(((uintptr_t)wts_at(w, i)->data & 63) == 0);
    const float *a = wts_f32(w, "mask_decoder.iou_token.weight", &e, 2, 2, 3);
    EXPECT(a);
    float ref[6];
    for (int i = 0; i < 6; i++) ref[i] = (float)i * 0.1f - 0.25f;
    ref[5] = -0.0f;
    EXPECT(a && !memcmp(a, ref, sizeof ref));
    const wts_tensor_t *t = wts_find(w, "b.half");
    EXPECT(t && t->dtype == WTS_F16 && t->nbytes == 6 && ((const uint16_t *)t->data)[1] == 0xffff);
    t = wts_find(w, "c.scalar");
    EXPECT(t && t->ndim == 0 && *(const int64_t *)t->data == -5);
    t = wts_find(w, "d.empty");
    EXPECT(t && t->nbytes == 0 && t->shape[1] == 4);
    t = wts_find(w, "e.u8");
    EXPECT(t && ((const unsigned char *)t->data)[4] == 255);
    EXPECT(wts_find(w, "zzz") == NULL);

    /* wts_f32 messages name the tensor */
    EXPECT(!wts_f32(w, "mask_decoder.iou_token.weight", &e, 2, 2, 4));
    EXPECT(e.code == ERR_FORMAT &&
           !strcmp(e.msg, "tensor 'mask_decoder.iou_token.weight': expected shape [2,4], file has [2,3]"));
    EXPECT(!wts_f32(w, "mask_decoder.iou_token.weight", &e, 1, 6));
    EXPECT(strstr(e.msg, "expected shape [6], file has [2,3]"));
    EXPECT(!wts_f32(w, "mask_decoder.missing", &e, 1, 6));
    EXPECT(e.code == ERR_NOTFOUND && strstr(e.msg, "'mask_decoder.missing'"));
    EXPECT(!wts_f32(w, "b.half", &e, 1, 3));
    EXPECT(strstr(e.msg, "'b.half'") && strstr(e.msg, "F16"));

    /* memory and file forms agree, hash is stable and ignores metadata */
    wts_t *w2 = wts_from_memory(buf, len, &e);
    EXPECT(w2);
    char h1[65], h2[65], h3[65];
    wts_content_hash(w, h1);
    wts_content_hash(w2, h2);
    EXPECT(!strcmp(h1, h2) && strlen(h1) == 64);
    wts_destroy(&w2);
    wr = sample();
    wts_writer_set_meta(wr, "moda.source", "other", &e);
    void *b3;
    size_t l3;
    wts_writer_to_memory(wr, &b3, &l3, &e);
    w2 = wts_from_memory(b3, l3, &e);
    wts_content_hash(w2, h3);
    EXPECT(!strcmp(h1, h3));
    wts_destroy(&w2);
    free(b3);
    wts_writer_destroy(&wr);
    /* ... but changes with one bit of data */
    ((unsigned char *)buf)[len - 1] ^= 1;
    w2 = wts_from_memory(buf, len, &e);
    wts_content_hash(w2, h3);
    EXPECT(strcmp(h1, h3));
    wts_destroy(&w2);

    wts_destroy(&w);
    EXPECT(w == NULL);
    free(buf);
    unlink(path);

    /* missing file / directory */
    EXPECT(!wts_open("/nonexistent/x.safetensors", &e) && e.code == ERR_NOTFOUND && strstr(e.msg, "/nonexistent"));
    EXPECT(!wts_open(dir, &e) && strstr(e.msg, "regular"));
    /* save into a missing folder fails cleanly */
    wr = sample();
    EXPECT(wts_writer_save(wr, "/nonexistent/dir/x.safetensors", &e) == ERR_IO);
    wts_writer_destroy(&wr);
}

static void test_rejects(const char *dir)
{
    size_t len;
    unsigned char *b;
    printf("rejections:\n");
    expect_reject("empty", (const unsigned char *)"", 0, "too short", NULL);
    expect_reject("5 bytes", (const unsigned char *)"abcde", 5, "too short", NULL);
    unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    expect_reject("huge header length", huge, 16, "exceeds", NULL);
    unsigned char past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_reject("header past end", past, 10, "past the end", NULL);
    expect_reject_hdr("garbage JSON", "{\"a\": [1, 2", 0, "header: json", NULL);
    expect_reject_hdr("not an object", "[1,2]", 0, "not an object", NULL);
    expect_reject_hdr("wrong dtype", "{\"w.x\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, "'w.x'",
                      "F64");
    expect_reject_hdr("negative dim", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'w.x'",
                      "shape");
    expect_reject_hdr("bad size", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "'w.x'",
                      "needs 12");
    expect_reject_hdr("overlap",
                      "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "'w.b'", "overlap");
    expect_reject_hdr("hole",
                      "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"w.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                      12, "'w.b'", "hole");
    expect_reject_hdr("offsets past data", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
                      "'w.x'", "truncated");
    expect_reject_hdr("trailing bytes", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12,
                      "after the last tensor", NULL);
    expect_reject_hdr("shape overflow",
                      "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                      "'w.x'", "too large");
    expect_reject_hdr("missing dtype", "{\"w.x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w.x'", "dtype");
    expect_reject_hdr("extra field", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"q\":1}}", 4,
                      "'w.x'", "unknown field");
    expect_reject_hdr("bad offsets", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "'w.x'",
                      "data_offsets");
    expect_reject_hdr("float offsets", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
                      "'w.x'", "data_offsets");
    expect_reject_hdr("meta not string", "{\"__metadata__\":{\"k\":1}}", 0, "'k'", "not a string");
    expect_reject_hdr("9 dims", "{\"w.x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                      1, "'w.x'", "dims");
    expect_reject_hdr("duplicate name",
                      "{\"w.a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"w.a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                      2, "duplicate", "w.a");

    /* a truncated real file, through wts_open: the message names the file and a tensor */
    wts_writer_t *wr = sample();
    err_t e = {0};
    void *buf;
    wts_writer_to_memory(wr, &buf, &len, &e);
    wts_writer_destroy(&wr);
    char path[512];
    snprintf(path, sizeof path, "%s/test_wts_truncated.safetensors", dir);
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len - 3, f);
    fclose(f);
    wts_t *w = wts_open(path, &e);
    EXPECT(!w && strstr(e.msg, path) && strstr(e.msg, "'e.u8'") && strstr(e.msg, "truncated"));
    printf("  rejected %-22s %s\n", "truncated file", e.msg);
    unlink(path);
    b = (unsigned char *)buf;
    expect_reject("truncated in header", b, 20, "past the end", NULL);
    free(buf);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    test_roundtrip(dir);
    test_rejects(dir);
    if (expect_failures) {
        fprintf(stderr, "test_wts: %d failure(s)\n", expect_failures);
        return 1;
    }
    printf("test_wts: ok\n");
    return 0;
}
