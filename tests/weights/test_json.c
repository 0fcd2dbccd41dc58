/* test_json.c — json parser edge cases and writer round trips (unit). Exits 1 on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "expect.h"

static json_t *P(const char *s, err_t *e) { return json_parse(s, strlen(s), e); }

static void expect_bad(const char *s, const char *msg_part)
{
    err_t e = {0};
    json_t *j = P(s, &e);
    if (j) {
        fprintf(stderr, "FAIL: accepted bad JSON: %s\n", s);
        expect_failures++;
        json_free(&j);
        return;
    }
    if (msg_part && !strstr(e.msg, msg_part)) {
        fprintf(stderr, "FAIL: for %s: message '%s' lacks '%s'\n", s, e.msg, msg_part);
        expect_failures++;
    }
    if (!strstr(e.msg, "byte ") && !strstr(e.msg, "limit")) {
        fprintf(stderr, "FAIL: for %s: message '%s' has no byte offset\n", s, e.msg);
        expect_failures++;
    }
}

static void test_parse_ok(void)
{
    err_t e = {0};
    json_t *j = P(" {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"], \"b\": {}, \"c\": []} ", &e);
    EXPECT(j);
    if (!j) { fprintf(stderr, "%s\n", e.msg); return; }
    const json_t *a = json_get(j, "a");
    EXPECT(json_len(a) == 6);
    EXPECT(json_at(a, 0)->is_int && json_at(a, 0)->i == 1);
    EXPECT(!json_at(a, 1)->is_int && json_at(a, 1)->num == -2500.0);
    EXPECT(json_at(a, 2)->type == JSON_BOOL && json_at(a, 2)->boolean == 1);
    EXPECT(json_at(a, 4)->type == JSON_NULL);
    EXPECT(!strcmp(json_str(json_at(a, 5)), "x\xc3\xa9\xf0\x9f\x98\x80\n"));
    EXPECT(json_get(j, "b")->type == JSON_OBJECT && json_len(json_get(j, "b")) == 0);
    EXPECT(json_get(j, "zz") == NULL);
    EXPECT(json_at(a, 6) == NULL);
    json_free(&j);
    EXPECT(j == NULL);

    /* int64 extremes and a value past int64 (kept as double only) */
    j = P("[9223372036854775807, -9223372036854775808, 9223372036854775808, 0, -0]", &e);
    EXPECT(j && json_at(j, 0)->is_int && json_at(j, 0)->i == INT64_MAX);
    EXPECT(j && json_at(j, 1)->is_int && json_at(j, 1)->i == INT64_MIN);
    EXPECT(j && !json_at(j, 2)->is_int && json_at(j, 2)->num == 9223372036854775808.0);
    json_free(&j);

    /* lookups in a large object hit every key */
    char *big = malloc(200000);
    size_t n = 0;
    n += (size_t)sprintf(big + n, "{");
    for (int i = 0; i < 5000; i++) n += (size_t)sprintf(big + n, "%s\"k%d\":%d", i ? "," : "", 4999 - i, i);
    n += (size_t)sprintf(big + n, "}");
    j = json_parse(big, n, &e);
    EXPECT(j && json_len(j) == 5000);
    int ok = 1;
    for (int i = 0; j && i < 5000; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        const json_t *v = json_get(j, k);
        if (!v || v->i != 4999 - i) ok = 0;
    }
    EXPECT(ok);
    json_free(&j);
    free(big);

    /* not NUL-terminated: parse a prefix */
    j = json_parse("[1,2]xxxx", 5, &e);
    EXPECT(j && json_len(j) == 2);
    json_free(&j);
}

static void test_parse_bad(void)
{
    expect_bad("", "end of input");
    expect_bad("   ", "end of input");
    expect_bad("[1,]", "unexpected");
    expect_bad("{\"a\":1,}", "string key");
    expect_bad("{\"a\" 1}", "':'");
    expect_bad("[01]", "leading zero");
    expect_bad("[1.]", "after '.'");
    expect_bad("[1e]", "exponent");
    expect_bad("[-]", "digit");
    expect_bad("[NaN]", "unexpected");
    expect_bad("[Infinity]", "unexpected");
    expect_bad("[1e999]", "range");
    expect_bad("\"abc", "unterminated");
    expect_bad("\"a\tb\"", "control");
    expect_bad("\"\\x\"", "escape");
    expect_bad("\"\\u12g4\"", "hex");
    expect_bad("\"\\ud800\"", "surrogate");
    expect_bad("\"\\udc00\"", "surrogate");
    expect_bad("\"\\u0000\"", "\\u0000");
    expect_bad("\"\xff\"", "UTF-8");
    expect_bad("\"\xc0\xaf\"", "UTF-8");      /* overlong */
    expect_bad("\"\xed\xa0\x80\"", "UTF-8");  /* encoded surrogate */
    expect_bad("{\"a\":1,\"a\":2}", "duplicate");
    expect_bad("[1] 2", "trailing");
    expect_bad("[tru]", "unexpected");
    expect_bad("{\"a\":[1,2}", "expected ',' or ']'");
    expect_bad("[1", "unterminated");
    expect_bad("/* c */ 1", "unexpected");

    /* depth limit */
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    err_t e = {0};
    json_t *j = json_parse(deep, 400, &e);
    EXPECT(!j && e.code == ERR_RANGE && strstr(e.msg, "deep"));
    j = json_parse_ex(deep, 400, 200, 1000, &e);
    EXPECT(j != NULL);
    json_free(&j);
    j = json_parse_ex(deep, 400, 200, 100, &e);
    EXPECT(!j && e.code == ERR_RANGE);

    /* byte offset points at the problem */
    j = P("[1, 2, x]", &e);
    EXPECT(!j && strstr(e.msg, "byte 7"));
}

static void test_writer(void)
{
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_key(&w, "s\"q");
    json_w_string(&w, "a\\b\"c\n\x01\xc3\xa9");
    json_w_key(&w, "arr");
    json_w_begin_arr(&w);
    json_w_int(&w, -42);
    json_w_int(&w, INT64_MIN);
    json_w_float(&w, 0.1f);
    json_w_double(&w, 0.1);
    json_w_float(&w, NAN);
    json_w_bool(&w, 1);
    json_w_null(&w);
    json_w_begin_obj(&w);
    json_w_end_obj(&w);
    json_w_end_arr(&w);
    json_w_end_obj(&w);
    size_t len;
    err_t e = {0};
    char *s = json_w_finish(&w, &len, &e);
    EXPECT(s);
    if (!s) return;
    EXPECT(len == strlen(s));
    const char *want = "{\"s\\\"q\":\"a\\\\b\\\"c\\n\\u0001\xc3\xa9\",\"arr\":[-42,-9223372036854775808,"
                       "0.100000001,0.10000000000000001,null,true,null,{}]}";
    if (strcmp(s, want)) fprintf(stderr, "got  %s\nwant %s\n", s, want);
    EXPECT(!strcmp(s, want));

    /* parse back, write again: identical */
    json_t *j = json_parse(s, len, &e);
    EXPECT(j);
    EXPECT(j && !strcmp(json_str(json_get(j, "s\"q")), "a\\b\"c\n\x01\xc3\xa9"));
    /* write the DOM (doubles at %.17g), parse, write again: a fixed point */
    json_w_init(&w);
    json_w_value(&w, j);
    size_t l2;
    char *s2 = json_w_finish(&w, &l2, &e);
    json_t *j2 = s2 ? json_parse(s2, l2, &e) : NULL;
    json_w_init(&w);
    json_w_value(&w, j2);
    char *s3 = json_w_finish(&w, NULL, &e);
    EXPECT(s2 && s3 && !strcmp(s2, s3));
    EXPECT(j2 && (float)json_at(json_get(j2, "arr"), 2)->num == 0.1f);
    free(s2);
    free(s3);
    json_free(&j2);
    json_free(&j);
    free(s);

    /* floats round-trip bit-exactly through %.9g */
    unsigned seed = 12345;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned bits = seed ^ (seed << 13);
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f)) continue;
        json_w_init(&w);
        json_w_begin_arr(&w);
        json_w_float(&w, f);
        json_w_end_arr(&w);
        char *t = json_w_finish(&w, &len, &e);
        json_t *p = t ? json_parse(t, len, &e) : NULL;
        float g = p ? (float)json_at(p, 0)->num : NAN;
        if (memcmp(&f, &g, 4)) bad++;
        json_free(&p);
        free(t);
    }
    EXPECT(bad == 0);

    /* misuse is reported, not crashed on */
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_int(&w, 1); /* value without a key */
    EXPECT(json_w_finish(&w, NULL, &e) == NULL && e.code == ERR_STATE);
    json_w_init(&w);
    json_w_begin_arr(&w);
    EXPECT(json_w_finish(&w, NULL, &e) == NULL); /* unclosed */
    json_w_init(&w);
    json_w_begin_arr(&w);
    json_w_end_obj(&w);
    EXPECT(json_w_finish(&w, NULL, &e) == NULL);
}

/* Mutated / truncated copies of a document: the parser either rejects with a message or
 * accepts, and then what it accepted survives write → parse unchanged. */
static void test_fuzz(int iters)
{
    static const char seed[] = "{\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"],"
                               " \"counts\": [0, 12, 7, 99], \"size\": [480, 640], \"b\": {\"c\": {}}}";
    static const char tokens[] = "{}[],:\"\\0123456789-+.eEtrufalsn \x01\xc3\xa9\xff";
    size_t n = strlen(seed);
    char buf[256];
    unsigned r = 2463534242u;
    int accepted = 0, bad = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, seed, n);
        size_t len = n;
        int muts = 1 + (int)(r % 4);
        for (int m = 0; m < muts; m++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            size_t at = r % len;
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            if (r % 7 == 0) len = at; /* truncate */
            else buf[at] = tokens[r % (sizeof tokens - 1)];
            if (!len) break;
        }
        err_t e = {0};
        json_t *j = json_parse(buf, len, &e);
        if (!j) {
            if (e.code >= 0 || !strstr(e.msg, "json: ")) bad++;
            continue;
        }
        accepted++;
        json_writer_t w;
        json_w_init(&w);
        json_w_value(&w, j);
        size_t l1;
        char *s1 = json_w_finish(&w, &l1, &e);
        json_t *j2 = s1 ? json_parse(s1, l1, &e) : NULL;
        json_w_init(&w);
        json_w_value(&w, j2);
        char *s2 = json_w_finish(&w, NULL, &e);
        if (!s1 || !s2 || strcmp(s1, s2)) bad++;
        free(s1);
        free(s2);
        json_free(&j2);
        json_free(&j);
    }
    printf("json fuzz: %d inputs, %d accepted, %d bad\n", iters, accepted, bad);
    EXPECT(bad == 0);
}

int main(void)
{
    test_parse_ok();
    test_parse_bad();
    test_writer();
    test_fuzz(50000);
    if (expect_failures) {
        fprintf(stderr, "test_json: %d failure(s)\n", expect_failures);
        return 1;
    }
    printf("test_json: ok\n");
    return 0;
}
