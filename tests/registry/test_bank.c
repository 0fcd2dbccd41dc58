/* test_bank.c — bank files (common/bank.c): split/join round trip, canonical form, dedup
 * of unchanged domains, metadata edits, and refusal of malformed banks.
 *
 * References are independent of bank.c: non-canonical banks are written with wts_writer in
 * shuffled order and compared tensor by tensor (wts_from_memory) after canonicalisation;
 * canonical files are checked for sorted, contiguous offsets by parsing the header with
 * json.h. Usage: test_bank   (exit 0 = all checks passed)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "json.h"
#include "sha256.h"
#include "wts.h"
#include "expect.h"

static const char *BASE = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* Checks the canonical rules on a file: tensor names ascending, offsets contiguous in that
 * order, metadata keys ascending, header length a multiple of 8. */
static int is_canonical(const unsigned char *b, size_t len)
{
    if (len < 8) return 0;
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    if (h % 8 || h > len - 8) return 0;
    json_t *j = json_parse((const char *)b + 8, h, NULL);
    if (!j) return 0;
    int ok = 1;
    const char *prev = "";
    int64_t off = 0;
    for (size_t i = 0; i < j->len; i++) {
        if (!strcmp(j->keys[i], "__metadata__")) {
            const json_t *m = &j->items[i];
            for (size_t k = 1; k < m->len; k++)
                if (strcmp(m->keys[k - 1], m->keys[k]) >= 0) ok = 0;
            if (i != 0) ok = 0;
            continue;
        }
        if (strcmp(prev, j->keys[i]) >= 0) ok = 0;
        prev = j->keys[i];
        const json_t *o = json_get(&j->items[i], "data_offsets");
        if (!o || json_at(o, 0)->i != off) ok = 0;
        else off = json_at(o, 1)->i;
    }
    if ((uint64_t)off != len - 8 - h) ok = 0;
    json_free(&j);
    return ok;
}

/* Same tensors (names, dtypes, shapes, bytes) and same metadata for the given keys. */
static int same_content(const void *a, size_t na, const void *b, size_t nb)
{
    wts_t *x = wts_from_memory(a, na, NULL), *y = wts_from_memory(b, nb, NULL);
    int ok = x && y && wts_count(x) == wts_count(y);
    for (int i = 0; ok && i < wts_count(x); i++) {
        const wts_tensor_t *t = wts_at(x, i), *u = wts_find(y, t->name);
        if (!u || u->dtype != t->dtype || u->ndim != t->ndim || u->nbytes != t->nbytes ||
            memcmp(u->shape, t->shape, sizeof t->shape) || memcmp(u->data, t->data, t->nbytes))
            ok = 0;
    }
    const char *keys[] = {"moda.kind", "moda.bank_format", "moda.base_model", "x.note"};
    for (int i = 0; ok && i < 4; i++) {
        const char *p = wts_meta(x, keys[i]), *q = wts_meta(y, keys[i]);
        if ((p == NULL) != (q == NULL) || (p && strcmp(p, q))) ok = 0;
    }
    wts_destroy(&x);
    wts_destroy(&y);
    return ok;
}

/* A small bank written by hand, tensors added in reverse order, metadata unsorted, domains
 * listed unsorted with spaces: valid but not canonical. */
static int hand_bank(const char *domains_json, const char **names, int n, const char *kind,
                     const char *fmt, const char *base, void **out, size_t *len)
{
    wts_writer_t *w = wts_writer_new();
    float data[12];
    for (int i = 0; i < 12; i++) data[i] = (float)i * 0.5f;
    int64_t shape[2] = {3, 4};
    for (int i = n - 1; i >= 0; i--) {
        int is_u8 = strstr(names[i], "replay") != NULL;
        wts_writer_add(w, names[i], is_u8 ? WTS_U8 : WTS_F32, 2, shape, data, NULL);
    }
    wts_writer_set_meta(w, "x.note", "hand made", NULL);
    if (domains_json) wts_writer_set_meta(w, "moda.domains", domains_json, NULL);
    if (base) wts_writer_set_meta(w, "moda.base_model", base, NULL);
    if (fmt) wts_writer_set_meta(w, "moda.bank_format", fmt, NULL);
    if (kind) wts_writer_set_meta(w, "moda.kind", kind, NULL);
    int rc = wts_writer_to_memory(w, out, len, NULL);
    wts_writer_destroy(&w);
    return rc;
}

static void roundtrip_synth(void)
{
    void *b;
    size_t n;
    err_t err = {0};
    EXPECT(bank_synth(4, 20000, 7, NULL, BASE, &b, &n, &err) == 0);
    EXPECT(is_canonical(b, n));
    bank_split_t s;
    EXPECT(bank_split(b, n, &s, &err) == 0);
    EXPECT(s.n_domains == 4 && !strcmp(s.domains[0].name, "d000") && !strcmp(s.domains[3].name, "d003"));
    EXPECT(s.bank_size == n);
    EXPECT(!strcmp(s.base_model, BASE));
    EXPECT(s.domains[0].n_replay == 2);
    for (int i = 1; i < 4; i++) EXPECT(!strcmp(s.domains[i].shape_sig, s.domains[0].shape_sig));
    void *j;
    size_t jn;
    /* join with the domain parts in reverse order: the result must not depend on it */
    bank_part_t rev[4];
    for (int i = 0; i < 4; i++) rev[i] = s.domains[3 - i];
    EXPECT(bank_join(&s.meta, &s.selector, rev, 4, &j, &jn, &err) == 0);
    EXPECT(jn == n && !memcmp(j, b, n));
    free(j);
    /* a missing domain part is refused */
    EXPECT(bank_join(&s.meta, &s.selector, s.domains, 3, &j, &jn, &err) == ERR_INVALID);

    /* one domain changed: only its hash changes */
    uint32_t gen[4] = {0, 0, 5, 0};
    void *b2;
    size_t n2;
    EXPECT(bank_synth(4, 20000, 7, gen, BASE, &b2, &n2, &err) == 0);
    bank_split_t s2;
    EXPECT(bank_split(b2, n2, &s2, &err) == 0);
    for (int i = 0; i < 4; i++)
        EXPECT((strcmp(s.domains[i].hash, s2.domains[i].hash) == 0) == (i != 2));
    EXPECT(!strcmp(s.selector.hash, s2.selector.hash));
    EXPECT(strcmp(s.meta.hash, s2.meta.hash) != 0);  /* metrics of d002 changed */
    EXPECT(strcmp(s.digest, s2.digest) != 0);

    /* revert d002's metadata entry to the first bank's: meta equals the first bank's */
    void *m;
    size_t mn;
    EXPECT(bank_meta_replace_domain(s2.meta.data, s2.meta.size, s.meta.data, s.meta.size, "d002", &m, &mn,
                                    &err) == 0);
    EXPECT(mn == s.meta.size && !memcmp(m, s.meta.data, mn));
    free(m);
    EXPECT(bank_meta_replace_domain(s2.meta.data, s2.meta.size, s.meta.data, s.meta.size, "zzz", &m, &mn,
                                    &err) == ERR_NOTFOUND);
    char bm[65];
    EXPECT(bank_meta_base_model(s.meta.data, s.meta.size, bm, &err) == 0 && !strcmp(bm, BASE));
    bank_split_clear(&s);
    bank_split_clear(&s2);
    free(b);
    free(b2);
}

static void canonical_form(void)
{
    const char *names[] = {"domain.beta.adapter.w", "domain.alpha.adapter.w", "selector.tokens",
                           "domain.alpha.replay.0.image", "domain.alpha.replay.0.mask"};
    const char *doms = "[ {\"metrics\": {\"z\": 1, \"a\": 0.25}, \"name\": \"beta\", \"created\": 5},"
                       " {\"name\": \"alpha\"} ]";
    void *b;
    size_t n;
    err_t err = {0};
    EXPECT(hand_bank(doms, names, 5, BANK_KIND, BANK_FORMAT, BASE, &b, &n) == 0);
    EXPECT(!is_canonical(b, n));
    void *c;
    size_t cn;
    EXPECT(bank_canonicalise(b, n, &c, &cn, &err) == 0);
    EXPECT(is_canonical(c, cn));
    EXPECT(same_content(b, n, c, cn));
    wts_t *w = wts_from_memory(c, cn, NULL);
    EXPECT(w && !strcmp(wts_meta(w, "moda.domains"),
                        "[{\"name\":\"alpha\"},{\"name\":\"beta\",\"created\":5,\"metrics\":{\"a\":0.25,\"z\":1}}]"));
    wts_destroy(&w);
    void *c2;
    size_t cn2;
    EXPECT(bank_canonicalise(c, cn, &c2, &cn2, &err) == 0);
    EXPECT(cn2 == cn && !memcmp(c, c2, cn));
    bank_split_t s;
    EXPECT(bank_split(b, n, &s, &err) == 0);
    EXPECT(s.bank_size == cn);
    EXPECT(s.domains[0].n_replay == 1 && s.domains[1].n_replay == 0);
    EXPECT(strcmp(s.domains[0].shape_sig, s.domains[1].shape_sig) == 0);  /* replay excluded */
    bank_split_clear(&s);
    free(b);
    free(c);
    free(c2);
}

typedef struct bad {
    const char *why;
    const char *doms;
    const char *names[4];
    int n;
    const char *kind, *fmt, *base;
    int code;
} bad_t;

static void malformed(void)
{
    const char *ok1 = "[{\"name\":\"a\"}]";
    bad_t cases[] = {
        {"wrong kind", ok1, {"domain.a.w"}, 1, "sam-weights", "1", BASE, ERR_FORMAT},
        {"no kind", ok1, {"domain.a.w"}, 1, NULL, "1", BASE, ERR_FORMAT},
        {"future format", ok1, {"domain.a.w"}, 1, BANK_KIND, "2", BASE, ERR_VERSION},
        {"short base", ok1, {"domain.a.w"}, 1, BANK_KIND, "1", "abc", ERR_FORMAT},
        {"upper base", ok1, {"domain.a.w"}, 1, BANK_KIND, "1",
         "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", ERR_FORMAT},
        {"no domains key", NULL, {"domain.a.w"}, 1, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"domains not json", "[{", {"domain.a.w"}, 1, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"domains not array", "{}", {"domain.a.w"}, 1, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"bad domain name", "[{\"name\":\"A\"}]", {"domain.A.w"}, 1, BANK_KIND, "1", BASE, ERR_INVALID},
        {"duplicate domain", "[{\"name\":\"a\"},{\"name\":\"a\"}]", {"domain.a.w"}, 1, BANK_KIND, "1", BASE,
         ERR_INVALID},
        {"unknown entry key", "[{\"name\":\"a\",\"x\":1}]", {"domain.a.w"}, 1, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"metric not number", "[{\"name\":\"a\",\"metrics\":{\"m\":\"x\"}}]", {"domain.a.w"}, 1, BANK_KIND, "1",
         BASE, ERR_FORMAT},
        {"unlisted domain", ok1, {"domain.a.w", "domain.b.w"}, 2, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"listed, no tensors", "[{\"name\":\"a\"},{\"name\":\"b\"}]", {"domain.a.w"}, 1, BANK_KIND, "1", BASE,
         ERR_FORMAT},
        {"stray tensor", ok1, {"domain.a.w", "encoder.w"}, 2, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"no param path", ok1, {"domain.a."}, 1, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"replay without mask", ok1, {"domain.a.w", "domain.a.replay.0.image"}, 2, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"bad replay name", ok1, {"domain.a.w", "domain.a.replay.x"}, 2, BANK_KIND, "1", BASE, ERR_FORMAT},
        {"replay leading zero", ok1, {"domain.a.w", "domain.a.replay.01.image", "domain.a.replay.01.mask"}, 3,
         BANK_KIND, "1", BASE, ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *b;
        size_t n;
        err_t err = {0};
        bad_t *c = &cases[i];
        if (hand_bank(c->doms, c->names, c->n, c->kind, c->fmt, c->base, &b, &n)) {
            fprintf(stderr, "FAIL case '%s': could not build\n", c->why);
            expect_failures++;
            continue;
        }
        bank_split_t s;
        int rc = bank_split(b, n, &s, &err);
        if (rc != c->code || !err.msg[0]) {
            fprintf(stderr, "FAIL case '%s': rc %d (want %d) msg '%s'\n", c->why, rc, c->code, err.msg);
            expect_failures++;
        }
        bank_split_clear(&s);
        /* every truncation of a valid bank is refused without a crash */
        free(b);
    }
    void *b;
    size_t n;
    EXPECT(bank_synth(2, 2000, 1, NULL, BASE, &b, &n, NULL) == 0);
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) {
        bank_split_t s;
        err_t err = {0};
        EXPECT(bank_split(b, cut, &s, &err) != 0);
        bank_split_clear(&s);
    }
    /* a flipped data byte stays a valid bank, but changes exactly one part hash */
    bank_split_t s1, s2;
    EXPECT(bank_split(b, n, &s1, NULL) == 0);
    ((unsigned char *)b)[n - 700] ^= 1;
    EXPECT(bank_split(b, n, &s2, NULL) == 0);
    int diff = 0;
    for (int i = 0; i < s1.n_domains; i++) diff += strcmp(s1.domains[i].hash, s2.domains[i].hash) != 0;
    diff += strcmp(s1.selector.hash, s2.selector.hash) != 0;
    EXPECT(diff == 1 && strcmp(s1.digest, s2.digest));
    bank_split_clear(&s1);
    bank_split_clear(&s2);
    free(b);
}

int main(void)
{
    roundtrip_synth();
    canonical_form();
    malformed();
    if (expect_failures) {
        fprintf(stderr, "test_bank: %d failures\n", expect_failures);
        return 1;
    }
    printf("test_bank: all checks passed\n");
    return 0;
}
