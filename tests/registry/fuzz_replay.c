/* fuzz_replay.c — runs the registry fuzz target (fuzz_registry.c) as an ordinary test:
 * well-formed seeds of every request type, deterministic mutations of them (bit flips,
 * truncations, inserted and duplicated bytes), and every file of a corpus folder. Afterwards
 * the handler must still answer a plain ListVersions with OK.
 *
 *   fuzz_replay [--mutations N] [--corpus DIR] [--write-seeds DIR]
 * --write-seeds stores the seeds as files (a starting corpus for libFuzzer).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "fuzz_registry.h"

#define MAX_SEEDS 32
#define FUZZ_MAX_INPUT (1 << 20)

typedef struct seed {
    unsigned char *d;
    size_t n;
} seed_t;

static seed_t seeds[MAX_SEEDS];
static int nseeds;

static void add_seed(Moda__Envelope *env, const msg_part_t *parts, int nparts)
{
    Moda__Header h = MODA__HEADER__INIT;
    uint64_t sizes[8];
    for (int i = 0; i < nparts; i++) sizes[i] = parts[i].size;
    h.schema_version = MSG_SCHEMA_VERSION;
    h.message_id = 7;
    h.sender = "fuzz";
    h.part_sizes = sizes;
    h.n_part_sizes = (size_t)nparts;
    env->header = &h;
    size_t en = moda__envelope__get_packed_size(env);
    unsigned char *eb = malloc(en + 1);
    moda__envelope__pack(env, eb);
    env->header = NULL;
    msg_part_t frames[8] = {{eb, en}};
    for (int i = 0; i < nparts; i++) frames[i + 1] = parts[i];
    unsigned char *out = malloc(FUZZ_MAX_INPUT);
    size_t n = fuzz_frames_encode(frames, nparts + 1, out, FUZZ_MAX_INPUT);
    free(eb);
    if (!n || nseeds == MAX_SEEDS) {
        free(out);
        return;
    }
    seeds[nseeds].d = out;
    seeds[nseeds++].n = n;
}

static void make_seeds(void)
{
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    uint32_t gen[2] = {4, 5};
    void *b;
    size_t bn;
    bank_synth(2, 2048, 3, gen, FUZZ_BASE, &b, &bn, NULL);
    Moda__PutVersionRequest put = MODA__PUT_VERSION_REQUEST__INIT;
    put.whole_bank = 1;
    put.set_alias = "canary";
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &put;
    msg_part_t parts[2] = {{b, bn / 2}, {(char *)b + bn / 2, bn - bn / 2}};
    add_seed(&env, parts, 2);
    /* per-part put: the metadata part of the same bank, everything else from version 1 */
    bank_split_t s;
    bank_split(b, bn, &s, NULL);
    Moda__PutVersionRequest pp = MODA__PUT_VERSION_REQUEST__INIT;
    Moda__BlobRef r0 = MODA__BLOB_REF__INIT, *refs[1] = {&r0};
    r0.name = "@meta";
    r0.content_hash = s.meta.hash;
    pp.parent = 1;
    pp.blobs = refs;
    pp.n_blobs = 1;
    char *unch[2] = {"d000", "d001"};
    pp.unchanged_domains = unch;
    pp.n_unchanged_domains = 2;
    env.put_version_request = &pp;
    msg_part_t mp = {s.meta.data, s.meta.size};
    add_seed(&env, &mp, 1);
    bank_split_clear(&s);
    free(b);

    Moda__GetVersionRequest get = MODA__GET_VERSION_REQUEST__INIT;
    get.version = 1;
    get.whole_bank = 1;
    get.chunk_bytes = 5000;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &get;
    add_seed(&env, NULL, 0);
    get.whole_bank = 0;
    get.include_blobs = 1;
    get.version = 0;
    get.alias = "active";
    add_seed(&env, NULL, 0);

    Moda__ListVersionsRequest list = MODA__LIST_VERSIONS_REQUEST__INIT;
    list.limit = 10;
    list.before = 3;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &list;
    add_seed(&env, NULL, 0);

    Moda__SetAliasRequest sa = MODA__SET_ALIAS_REQUEST__INIT;
    sa.alias = "active";
    sa.version = 1;
    sa.expect_from = 2;
    sa.reason = "fuzz";
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &sa;
    add_seed(&env, NULL, 0);

    Moda__RollbackRequest rb = MODA__ROLLBACK_REQUEST__INIT;
    rb.alias = "active";
    env.body_case = MODA__ENVELOPE__BODY_ROLLBACK_REQUEST;
    env.rollback_request = &rb;
    add_seed(&env, NULL, 0);

    Moda__RevertDomainRequest rd = MODA__REVERT_DOMAIN_REQUEST__INIT;
    rd.alias = "active";
    rd.domain = "d000";
    rd.to_version = 1;
    rd.set_alias = "active";
    env.body_case = MODA__ENVELOPE__BODY_REVERT_DOMAIN_REQUEST;
    env.revert_domain_request = &rd;
    add_seed(&env, NULL, 0);

    Moda__HistoryRequest hi = MODA__HISTORY_REQUEST__INIT;
    hi.alias = "active";
    hi.limit = 5;
    env.body_case = MODA__ENVELOPE__BODY_HISTORY_REQUEST;
    env.history_request = &hi;
    add_seed(&env, NULL, 0);

    Moda__GetAliasRequest ga = MODA__GET_ALIAS_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
    env.get_alias_request = &ga;
    add_seed(&env, NULL, 0);

    Moda__HealthRequest he = MODA__HEALTH_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &he;
    add_seed(&env, NULL, 0);
}

static uint32_t rng = 2463534242u;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static int run(const unsigned char *d, size_t n) { return LLVMFuzzerTestOneInput(d, n); }

int main(int argc, char **argv)
{
    long mutations = 3000;
    const char *corpus = NULL, *write_dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mutations")) mutations = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--corpus")) corpus = argv[i + 1];
        else if (!strcmp(argv[i], "--write-seeds")) write_dir = argv[i + 1];
    }
    if (!fuzz_registry()) return 1;
    make_seeds();
    for (int i = 0; i < nseeds; i++) {
        run(seeds[i].d, seeds[i].n);
        if (write_dir) {
            char p[4096];
            snprintf(p, sizeof p, "%s/seed-%02d", write_dir, i);
            FILE *f = fopen(p, "wb");
            if (f) {
                fwrite(seeds[i].d, 1, seeds[i].n, f);
                fclose(f);
            }
        }
    }
    unsigned char *buf = malloc(FUZZ_MAX_INPUT + 64);
    for (long m = 0; m < mutations; m++) {
        const seed_t *s = &seeds[next() % (uint32_t)nseeds];
        size_t n = s->n;
        memcpy(buf, s->d, n);
        int k = 1 + (int)(next() % 4);
        for (int j = 0; j < k && n; j++) {
            switch (next() % 5) {
            case 0: buf[next() % n] ^= (unsigned char)(1u << (next() % 8)); break;
            case 1: buf[next() % n] = (unsigned char)next(); break;
            case 2: n = next() % n + 1; break; /* truncate */
            case 3: /* insert a byte */
                if (n < FUZZ_MAX_INPUT) {
                    size_t at = next() % n;
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (unsigned char)next();
                    n++;
                }
                break;
            default: buf[0] = (unsigned char)next(); break; /* another frame split */
            }
        }
        run(buf, n);
    }
    int replayed = 0;
    if (corpus) {
        DIR *d = opendir(corpus);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", corpus, e->d_name);
            FILE *f = fopen(p, "rb");
            if (!f) continue;
            size_t n = fread(buf, 1, FUZZ_MAX_INPUT, f);
            fclose(f);
            run(buf, n);
            replayed++;
        }
        if (d) closedir(d);
    }
    free(buf);
    /* still serving */
    Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &q;
    reg_reply_t rep;
    int rc = reg_handle(fuzz_registry(), &env, NULL, 0, &rep);
    int ok = rc == 0 && rep.env.list_versions_reply && rep.env.list_versions_reply->n_versions >= 2;
    printf("fuzz_replay: %d seeds, %ld mutations, %d corpus files; registry holds %zu versions\n", nseeds, mutations,
           replayed, ok ? rep.env.list_versions_reply->n_versions : (size_t)0);
    reg_reply_clear(&rep);
    for (int i = 0; i < nseeds; i++) free(seeds[i].d);
    reg_t *r = fuzz_registry();
    reg_destroy(&r);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir());
    if (system(cmd) != 0) fprintf(stderr, "fuzz_replay: could not remove %s\n", fuzz_dir());
    if (!ok) {
        fprintf(stderr, "fuzz_replay: the handler no longer answers ListVersions\n");
        return 1;
    }
    return 0;
}
