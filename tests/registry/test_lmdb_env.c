/* test_lmdb_env.c — unit test of common/lmdb_env (the LMDB environment shared by the label
 * and registry stores): a 64 KiB map grown by many writes with every value read back, the
 * growth guard refusing growth, errors passed through unchanged, MDB_KEYEXIST -> ERR_EXISTS,
 * and the stale-reader check at open clearing the slot of a child killed mid-read.
 * Usage: test_lmdb_env WORKDIR   (exits non-zero on any failed check)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmdb_env.h"
#include "expect.h"

#define VAL_LEN 1500

static void fill(unsigned char *b, unsigned i)
{
    for (unsigned j = 0; j < VAL_LEN; j++) b[j] = (unsigned char)(i * 131u + j * 7u + (j >> 8));
}

typedef struct put_arg {
    lenv_t *e;
    MDB_dbi dbi;
    unsigned first, n;
    unsigned flags;
    int calls;
} put_arg_t;

static int put_fn(MDB_txn *t, void *p, err_t *err)
{
    put_arg_t *a = p;
    a->calls++;
    unsigned char buf[VAL_LEN];
    for (unsigned i = a->first; i < a->first + a->n; i++) {
        unsigned key = i;
        fill(buf, i);
        MDB_val k = {sizeof key, &key}, v = {VAL_LEN, buf};
        int rc = lenv_put(a->e, t, a->dbi, &k, &v, a->flags, "test put", err);
        if (rc) return rc;
    }
    return 0;
}

static int fail_fn(MDB_txn *t, void *p, err_t *err)
{
    (void)t;
    (*(int *)p)++;
    return err_set(err, ERR_RANGE, "body refused");
}

static int refuse_guard(void *ctx, err_t *err)
{
    (*(int *)ctx)++;
    return err_set(err, ERR_STATE, "growth refused by guard");
}

static lenv_t *open_env(const char *dir, MDB_dbi *a, MDB_dbi *b, err_t *err)
{
    lenv_dbi_t dbs[] = {{"alpha", a}, {"beta", b}};
    lenv_opts_t o = {.map_size = 64 << 10, .no_sync = 1};
    return lenv_open(dir, dbs, 2, &o, NULL, NULL, err);
}

int main(int argc, char **argv)
{
    if (argc != 2 || !strcmp(argv[1], "--help")) {
        printf("usage: test_lmdb_env WORKDIR\n");
        return argc == 2 ? 0 : 2;
    }
    char dir[1024];
    mkdir(argv[1], 0755);
    snprintf(dir, sizeof dir, "%s/env", argv[1]);
    mkdir(dir, 0755);
    char f[1100];
    snprintf(f, sizeof f, "%s/data.mdb", dir); /* start from an empty environment */
    unlink(f);
    snprintf(f, sizeof f, "%s/lock.mdb", dir);
    unlink(f);

    err_t err = {0};
    MDB_dbi da, db;
    lenv_t *e = open_env(dir, &da, &db, &err);
    EXPECTF(e, "open: %s", err.msg);
    if (!e) return 1;
    lenv_stats_t st;
    lenv_stats(e, &st);
    EXPECTF(st.map_size == 64 << 10, "initial map %llu", (unsigned long long)st.map_size);
    EXPECTF(st.map_grows == 0, "grows %llu", (unsigned long long)st.map_grows);

    /* many writes through a 64 KiB map: ~600 KiB of values */
    int total_calls = 0;
    const unsigned N = 400, BATCH = 20;
    for (unsigned i = 0; i < N; i += BATCH) {
        put_arg_t a = {e, da, i, BATCH, 0, 0};
        lenv_set_pending(e, BATCH * VAL_LEN);
        int rc = lenv_write(e, put_fn, &a, &err);
        EXPECTF(rc == 0, "write %u: %s", i, err.msg);
        total_calls += a.calls;
    }
    lenv_stats(e, &st);
    EXPECTF(st.map_grows > 0, "no growth");
    EXPECTF(st.map_size > (64u << 10) + N * VAL_LEN / 2, "map %llu too small",
            (unsigned long long)st.map_size);
    EXPECTF(total_calls == (int)(N / BATCH + st.map_grows),
            "bodies run %d, expected %u + grows %llu", total_calls, N / BATCH,
            (unsigned long long)st.map_grows);
    MDB_envinfo info;
    mdb_env_info(lenv_mdb(e), &info);
    EXPECTF(info.me_mapsize == st.map_size, "lmdb map %zu vs stats %llu", info.me_mapsize,
            (unsigned long long)st.map_size);

    /* everything reads back */
    MDB_txn *t;
    EXPECTF(lenv_read_begin(e, &t, &err) == 0, "read begin: %s", err.msg);
    unsigned char ref[VAL_LEN];
    MDB_stat ms;
    mdb_stat(t, da, &ms);
    EXPECTF(ms.ms_entries == N, "entries %zu", ms.ms_entries);
    for (unsigned i = 0; i < N; i++) {
        unsigned key = i;
        MDB_val k = {sizeof key, &key}, v;
        int rc = mdb_get(t, da, &k, &v);
        fill(ref, i);
        EXPECTF(rc == 0 && v.mv_size == VAL_LEN && !memcmp(v.mv_data, ref, VAL_LEN),
                "value %u differs (rc %d)", i, rc);
    }
    mdb_txn_abort(t);

    /* a body's own error comes back unchanged, run once */
    int calls = 0;
    EXPECTF(lenv_write(e, fail_fn, &calls, &err) == ERR_RANGE && calls == 1, "fail body: calls %d",
            calls);
    EXPECTF(strstr(err.msg, "body refused"), "msg '%s'", err.msg);

    /* MDB_KEYEXIST -> ERR_EXISTS */
    put_arg_t dup = {e, da, 3, 1, MDB_NOOVERWRITE, 0};
    EXPECTF(lenv_write(e, put_fn, &dup, &err) == ERR_EXISTS, "dup put");

    /* guard refuses growth: the write fails with the guard's code, map unchanged */
    int guard_calls = 0;
    lenv_set_grow_guard(e, refuse_guard, &guard_calls);
    lenv_stats(e, &st);
    uint64_t before = st.map_size, grows_before = st.map_grows;
    unsigned big = (unsigned)(st.map_size / VAL_LEN) + 10; /* cannot fit in the current map */
    put_arg_t g = {e, db, 0, big, 0, 0};
    EXPECTF(lenv_write(e, put_fn, &g, &err) == ERR_STATE && guard_calls == 1, "guard: calls %d",
            guard_calls);
    EXPECTF(strstr(err.msg, "growth refused"), "msg '%s'", err.msg);
    lenv_stats(e, &st);
    EXPECTF(st.map_size == before && st.map_grows == grows_before,
            "map changed under a refusing guard");
    lenv_set_grow_guard(e, NULL, NULL);
    g.calls = 0;
    EXPECTF(lenv_write(e, put_fn, &g, &err) == 0 && g.calls > 1, "after guard removed: %s",
            err.msg);

    /* lenv_err keeps LMDB's text */
    EXPECTF(lenv_err(&err, MDB_NOTFOUND, "thing") == ERR_DB && strstr(err.msg, "thing") &&
                strstr(err.msg, mdb_strerror(MDB_NOTFOUND)),
            "lenv_err '%s'", err.msg);
    lenv_close(&e);
    EXPECTF(e == NULL, "close leaves pointer");
    lenv_close(&e); /* NULL-safe */

    /* stale reader: a child killed while holding a read transaction. LMDB resets the reader
     * table when the first process opens the environment, so a holder child keeps it open
     * meanwhile (as the other moda services do for a crashed one). */
    int ready[2], hold[2];
    if (pipe(ready) || pipe(hold)) return 1;
    pid_t holder = fork();
    if (holder == 0) {
        close(ready[0]);
        close(hold[1]);
        MDB_dbi a, b;
        lenv_t *he = open_env(dir, &a, &b, NULL);
        char c = he ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(5);
        while (read(hold[0], &c, 1) > 0) {
        }
        lenv_close(&he);
        _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    char hc = 0;
    EXPECTF(read(ready[0], &hc, 1) == 1 && hc == 'y', "holder did not open the environment");
    pid_t pid = fork();
    if (pid == 0) {
        MDB_dbi a, b;
        lenv_t *ce = open_env(dir, &a, &b, NULL);
        MDB_txn *ct;
        if (!ce || lenv_read_begin(ce, &ct, NULL)) _exit(3);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    EXPECTF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child status %d", ws);
    e = open_env(dir, &da, &db, &err);
    EXPECTF(e, "reopen: %s", err.msg);
    if (e) {
        lenv_stats(e, &st);
        EXPECTF(st.stale_readers >= 1, "stale readers %llu", (unsigned long long)st.stale_readers);
        EXPECTF(st.map_size > (64u << 10), "reopen did not adopt the grown map: %llu",
                (unsigned long long)st.map_size);
        EXPECTF(st.map_grows == 0, "grows on reopen %llu", (unsigned long long)st.map_grows);
        lenv_close(&e);
    }
    close(hold[1]); /* lets the holder go */
    close(ready[0]);
    waitpid(holder, &ws, 0);
    EXPECTF(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "holder status %d", ws);

    /* open errors */
    EXPECTF(!lenv_open("", NULL, 0, NULL, NULL, NULL, &err) && err.code == ERR_INVALID,
            "empty dir");
    EXPECTF(!lenv_open("/nonexistent/h16/x", NULL, 0, NULL, NULL, NULL, &err) && err.code == ERR_IO,
            "missing dir: %d %s", err.code, err.msg);

    if (expect_failures)
        fprintf(stderr, "test_lmdb_env: %d check(s) failed\n", expect_failures);
    else printf("test_lmdb_env: ok\n");
    return expect_failures ? 1 : 0;
}
