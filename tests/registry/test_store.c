/* test_store.c — the registry's LMDB layer (services/registry/store.c) on its own.
 *
 * Checks: versions numbered 1,2,3 and read back field by field; blobs stored once per hash
 * (dedup) and byte-exact; a put naming a missing blob writes nothing; the map grows from a
 * tiny initial size; alias set / compare-and-set / rollback stack / rollback --to; history
 * complete, ordered, filtered; list with limit/before; reopen; backup opens as a copy; a
 * reader slot left by a killed process is cleared at the next open.
 * Usage: test_store WORKDIR   (exit 0 = all checks passed)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#include "store.h"
#include "expect.h"

#define OK(call)                                                                                   \
    do {                                                                                           \
        err_t e_ = {0};                                                                            \
        (void)e_;                                                                                  \
        int r_ = (call);                                                                           \
        if (r_) {                                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s -> %d\n", __FILE__, __LINE__, #call, r_);              \
            expect_failures++;                                                                     \
        }                                                                                          \
    } while (0)

static void fake_hash(int seed, char out[65])
{
    for (int i = 0; i < 64; i++) out[i] = "0123456789abcdef"[(seed * 7 + i * 13 + (seed >> 4)) & 15];
    snprintf(out, 9, "%08x", (unsigned)seed);
    out[8] = 'a';
    out[64] = 0;
}

static void rm_rf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* A version with domains named d0..d(n-1) whose blobs are hash seeds seeds[i]. */
static void make_version(store_version_t *v, int n, const int *seeds, uint64_t parent)
{
    memset(v, 0, sizeof *v);
    v->parent = parent;
    memset(v->base_hash, 'b', 64);
    v->n_domains = n;
    v->domains = calloc((size_t)n + 1, sizeof *v->domains);
    for (int i = 0; i < n; i++) {
        snprintf(v->domains[i].name, sizeof v->domains[i].name, "d%d", i);
        fake_hash(seeds[i], v->domains[i].hash);
        v->domains[i].size = 100000;
    }
    v->n_metrics = 1;
    v->metrics = calloc(1, sizeof *v->metrics);
    snprintf(v->metrics[0].name, sizeof v->metrics[0].name, "iou");
    v->metrics[0].value = 0.25 * (double)n;
    snprintf(v->actor, sizeof v->actor, "tester");
    snprintf(v->reason, sizeof v->reason, "version with %d domains", n);
}

static unsigned char *blob_bytes(int seed, size_t n)
{
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed * 31 + i * 7);
    return b;
}

int main(int argc, char **argv)
{
    const char *work = argc > 1 ? argv[1] : "/tmp/test_store";
    char dir[4096], bdir[4200];
    snprintf(dir, sizeof dir, "%s/db", work);
    snprintf(bdir, sizeof bdir, "%s/backup", work);
    rm_rf(work);
    mkdir(work, 0755);

    err_t err = {0};
    store_opts_t o = {.map_size = 64 * 1024, .no_sync = 1};
    store_t *s = store_open(dir, &o, &err);
    if (!s) {
        fprintf(stderr, "FAIL open: %s\n", err.msg);
        return 1;
    }
    uint64_t last = 99;
    OK(store_last_version(s, &last, &err));
    EXPECT(last == 0);

    /* 5 versions, 3 domains each, blobs of 100 KB: far past the 64 KiB initial map. Version
     * k changes only domain d(k%3); the others keep their blob. */
    const size_t BS = 100000;
    int seeds[3] = {1, 2, 3};
    int next_seed = 4;
    for (int k = 1; k <= 5; k++) {
        if (k > 1) seeds[k % 3] = next_seed++;
        store_version_t v;
        make_version(&v, 3, seeds, (uint64_t)(k - 1));
        store_blob_t blobs[3];
        unsigned char *data[3];
        for (int i = 0; i < 3; i++) {
            data[i] = blob_bytes(seeds[i], BS);
            snprintf(blobs[i].hash, sizeof blobs[i].hash, "%s", v.domains[i].hash);
            blobs[i].data = data[i];
            blobs[i].size = BS;
        }
        store_kv_t meta[1] = {{"base_hash", v.base_hash}};
        store_hist_t h;
        int r = store_put_version(s, &v, blobs, 3, meta, 1, k == 1 ? "active" : NULL, NULL, &h, &err);
        if (r) fprintf(stderr, "put %d: %s\n", k, err.msg);
        EXPECT(r == 0);
        EXPECT(v.version == (uint64_t)k);
        EXPECT(v.created_us > 0);
        if (k == 1) EXPECT(h.to == 1 && h.from == 0 && !strcmp(h.action, "put"));
        for (int i = 0; i < 3; i++) free(data[i]);
        store_version_clear(&v);
    }
    store_stats_t st;
    OK(store_stats(s, &st, &err));
    EXPECT(st.versions == 5);
    EXPECT(st.blobs == 7);  /* 3 + one new per later version: unchanged domains stored once */
    EXPECT(st.blob_bytes == 7 * BS);
    EXPECT(st.map_grows > 0);
    EXPECT(st.map_size > 64 * 1024);
    printf("map grew %llu times to %llu bytes; %llu blobs\n", (unsigned long long)st.map_grows,
           (unsigned long long)st.map_size, (unsigned long long)st.blobs);

    /* read back version 5: seeds {7? ...} — rebuild the expected seeds */
    store_version_t g;
    OK(store_get_version(s, 5, &g, &err));
    EXPECT(g.version == 5 && g.parent == 4 && g.n_domains == 3 && g.n_metrics == 1);
    EXPECT(!strcmp(g.actor, "tester") && !strcmp(g.reason, "version with 3 domains"));
    EXPECT(g.metrics[0].value == 0.75);
    for (int i = 0; i < 3; i++) {
        char hx[65];
        fake_hash(seeds[i], hx);
        EXPECT(!strcmp(g.domains[i].hash, hx));
        void *b;
        size_t n;
        OK(store_get_blob(s, hx, &b, &n, &err));
        unsigned char *want = blob_bytes(seeds[i], BS);
        EXPECT(n == BS && !memcmp(b, want, BS));
        free(want);
        free(b);
    }
    store_version_clear(&g);
    EXPECT(store_get_version(s, 6, &g, &err) == ERR_NOTFOUND);

    /* a put naming a blob neither stored nor sent writes nothing */
    {
        store_version_t v;
        int sd[2] = {1, 999};
        make_version(&v, 2, sd, 5);
        unsigned char *d = blob_bytes(555, 1000);
        store_blob_t b = {{0}, d, 1000};
        fake_hash(555, b.hash);
        EXPECT(store_put_version(s, &v, &b, 1, NULL, 0, "active", NULL, NULL, &err) == ERR_NOTFOUND);
        EXPECT(strstr(err.msg, "d1") != NULL);
        EXPECT(store_has_blob(s, b.hash, &err) == 0);
        OK(store_last_version(s, &last, &err));
        EXPECT(last == 5);
        /* unknown parent */
        sd[1] = 2;
        store_version_clear(&v);
        make_version(&v, 2, sd, 77);
        EXPECT(store_put_version(s, &v, NULL, 0, NULL, 0, NULL, NULL, NULL, &err) == ERR_NOTFOUND);
        /* unsorted / bad names */
        snprintf(v.domains[0].name, sizeof v.domains[0].name, "Bad");
        v.parent = 0;
        EXPECT(store_put_version(s, &v, NULL, 0, NULL, 0, NULL, NULL, NULL, &err) == ERR_INVALID);
        store_version_clear(&v);
        free(d);
    }

    /* aliases */
    uint64_t cur;
    OK(store_get_alias(s, "active", &cur, &err));
    EXPECT(cur == 1);
    store_hist_t h;
    OK(store_set_alias(s, "active", 2, 0, NULL, "ops", "promote 2", &h, &err));
    EXPECT(h.from == 1 && h.to == 2);
    OK(store_set_alias(s, "active", 3, 2, NULL, "ops", "promote 3", &h, &err));
    EXPECT(store_set_alias(s, "active", 4, 2, NULL, "ops", "stale cas", &h, &err) == ERR_EXISTS);
    EXPECT(store_set_alias(s, "active", 42, 0, NULL, "ops", "missing", &h, &err) == ERR_NOTFOUND);
    EXPECT(store_set_alias(s, "Active", 2, 0, NULL, "ops", "bad name", &h, &err) == ERR_INVALID);
    OK(store_set_alias(s, "canary", 5, 0, NULL, "ops", "canary", &h, &err));
    OK(store_get_alias(s, "active", &cur, &err));
    EXPECT(cur == 3);
    OK(store_rollback(s, "active", 0, "ops", "bad 3", &h, &err));
    EXPECT(h.from == 3 && h.to == 2 && !strcmp(h.action, "rollback"));
    OK(store_rollback(s, "active", 0, "ops", "bad 2", &h, &err));
    EXPECT(h.from == 2 && h.to == 1);
    EXPECT(store_rollback(s, "active", 0, "ops", "nothing left", &h, &err) == ERR_STATE);
    OK(store_rollback(s, "active", 5, "ops", "forward", &h, &err));
    EXPECT(h.from == 1 && h.to == 5);
    OK(store_rollback(s, "active", 0, "ops", "undo forward", &h, &err));
    EXPECT(h.to == 1);
    EXPECT(store_rollback(s, "nosuch", 0, "ops", "x", &h, &err) == ERR_NOTFOUND);
    EXPECT(store_rollback(s, "nosuch", 2, "ops", "x", &h, &err) == ERR_NOTFOUND);

    /* history: every change, newest first, sequence strictly decreasing */
    store_hist_t *hs;
    int nh;
    OK(store_history(s, NULL, 0, &hs, &nh, &err));
    /* put(active) + set 2 + set 3 + canary + rb + rb + rb-to 5 + rb = 8 */
    EXPECT(nh == 8);
    static const uint64_t want_to[8] = {1, 5, 1, 2, 5, 3, 2, 1};
    for (int i = 0; i < nh && i < 8; i++) {
        EXPECT(hs[i].to == want_to[i]);
        EXPECT(hs[i].seq == (uint64_t)(nh - i));
        if (i) EXPECT(hs[i].time_us <= hs[i - 1].time_us);
    }
    free(hs);
    OK(store_history(s, "canary", 0, &hs, &nh, &err));
    EXPECT(nh == 1 && hs[0].to == 5 && !strcmp(hs[0].reason, "canary"));
    free(hs);
    OK(store_history(s, "active", 2, &hs, &nh, &err));
    EXPECT(nh == 2 && hs[0].to == 1 && hs[1].to == 5);
    free(hs);

    store_alias_t *as;
    int na;
    OK(store_list_aliases(s, &as, &na, &err));
    EXPECT(na == 2 && !strcmp(as[0].name, "active") && as[0].version == 1 &&
           !strcmp(as[1].name, "canary") && as[1].version == 5);
    free(as);

    /* listing */
    store_version_t *vs;
    int nv;
    OK(store_list_versions(s, 0, 0, &vs, &nv, &err));
    EXPECT(nv == 5 && vs[0].version == 5 && vs[4].version == 1);
    store_versions_free(&vs, nv);
    OK(store_list_versions(s, 4, 2, &vs, &nv, &err));
    EXPECT(nv == 2 && vs[0].version == 3 && vs[1].version == 2);
    store_versions_free(&vs, nv);
    OK(store_list_versions(s, 100, 1, &vs, &nv, &err));
    EXPECT(nv == 1 && vs[0].version == 5);
    store_versions_free(&vs, nv);

    char buf[80];
    OK(store_meta_get(s, "base_hash", buf, sizeof buf, &err));
    EXPECT(buf[0] == 'b' && strlen(buf) == 64);

    /* backup while open, then reopen both and compare */
    OK(store_backup(s, bdir, &err));
    EXPECT(store_backup(s, bdir, &err) == ERR_EXISTS);
    store_close(&s);
    EXPECT(s == NULL);
    for (int pass = 0; pass < 2; pass++) {
        store_t *t = store_open(pass ? bdir : dir, NULL, &err);
        EXPECT(t != NULL);
        if (!t) {
            fprintf(stderr, "reopen: %s\n", err.msg);
            break;
        }
        OK(store_last_version(t, &last, &err));
        EXPECT(last == 5);
        OK(store_get_alias(t, "canary", &cur, &err));
        EXPECT(cur == 5);
        OK(store_history(t, NULL, 0, &hs, &nh, &err));
        EXPECT(nh == 8);
        free(hs);
        OK(store_stats(t, &st, &err));
        EXPECT(st.blobs == 7);
        store_close(&t);
    }
    /* a reader that died inside a read transaction leaves its slot; the next open clears it.
     * (LMDB resets the whole reader table when it is the only user of the lock file, so a
     * second process keeps the environment open meanwhile, as a live service would.) */
    {
        int pfd[2];
        EXPECT(pipe(pfd) == 0);
        pid_t holder = fork();
        if (holder == 0) {
            MDB_env *env;
            if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) || mdb_env_open(env, dir, MDB_NOTLS, 0644)) _exit(1);
            if (write(pfd[1], "r", 1) != 1) _exit(1);
            pause();
            _exit(0);
        }
        char ready;
        EXPECT(read(pfd[0], &ready, 1) == 1);
        pid_t pid = fork();
        if (pid == 0) {
            MDB_env *env;
            MDB_txn *t;
            if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) || mdb_env_open(env, dir, MDB_NOTLS, 0644) ||
                mdb_txn_begin(env, NULL, MDB_RDONLY, &t))
                _exit(1);
            _exit(0); /* no abort, no close: the slot stays taken by a dead pid */
        }
        int wst = 0;
        waitpid(pid, &wst, 0);
        EXPECT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
        store_t *t = store_open(dir, NULL, &err);
        EXPECT(t != NULL);
        if (t) {
            OK(store_stats(t, &st, &err));
            EXPECT(st.stale_readers == 1);
            store_close(&t);
        }
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        close(pfd[0]);
        close(pfd[1]);
    }
    if (expect_failures) {
        fprintf(stderr, "test_store: %d failures\n", expect_failures);
        return 1;
    }
    rm_rf(work);
    printf("test_store: all checks passed\n");
    return 0;
}
