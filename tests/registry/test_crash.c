/* test_crash.c — crash safety of moda-registry: SIGKILL at random moments during puts and
 * alias changes, restart, check.
 *
 * Each cycle starts the real binary (full sync), runs random operations (puts of generated
 * banks, some moving "active"; promotes; rollbacks) while a thread kills the process after a
 * random 2..150 ms, then restarts it and checks: the environment opens; every acknowledged
 * put is present with its digest; at most the one unacknowledged put became visible and
 * then completely (its bytes equal the generated bank); "active" is the last acknowledged
 * value or the in-flight one; the history is contiguous, chained (from = previous to) and
 * ends at the alias's current value. At least MIN_KILLS kills, bounded by ~40 s.
 * Usage: test_crash MODA_REGISTRY_BIN WORKDIR [KILLS]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bank.h"
#include "msg.h"

#define MAX_VERSIONS 4096
static const char *BASE = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

static int failures;
#define EXPECT(c)                                                                          \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d (cycle %d): %s\n", __FILE__, __LINE__, cycle, #c); \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static int cycle;
static char ep[600], dir[600];
static void *ctx, *sock;

typedef struct known {
    uint32_t gen[3];
    char digest[65];
    int acked;
} known_t;
static known_t ver[MAX_VERSIONS + 1]; /* by version number, acked puts */
static uint64_t max_acked;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void reconnect(void)
{
    msg_socket_close(&sock);
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.reconnect_ivl_ms = 10;
    sock = msg_socket_new(ctx, ZMQ_REQ, &so, NULL);
    msg_connect(sock, ep, NULL);
}

/* 0 and *out: a reply; -1: none in time (the socket is replaced). */
static int request(Moda__Envelope *env, const msg_part_t *parts, int n, int timeout, msg_t **out)
{
    err_t err = {0};
    msg_t *r = NULL;
    if (msg_request(sock, env, parts, n, timeout, NULL, &r, &err) || !r || !r->env) {
        msg_free(&r);
        reconnect();
        return -1;
    }
    *out = r;
    return 0;
}

static pid_t start(const char *bin)
{
    pid_t p = fork();
    if (p == 0) {
        execl(bin, bin, "--data", dir, "--bind", ep, "--pub", "inproc://unused", "--log-level", "error",
              "--map-size-kb", "256", (char *)NULL);
        _exit(127);
    }
    return p;
}

typedef struct killer {
    pid_t pid;
    int delay_ms;
} killer_t;

static void *kill_later(void *arg)
{
    killer_t *k = arg;
    usleep((useconds_t)k->delay_ms * 1000);
    kill(k->pid, SIGKILL);
    return NULL;
}

static int make_bank(const uint32_t gen[3], void **b, size_t *n, char digest[65])
{
    if (bank_synth(3, 4096, 5, gen, BASE, b, n, NULL)) return -1;
    bank_split_t s;
    if (bank_split(*b, *n, &s, NULL)) return -1;
    snprintf(digest, 65, "%s", s.digest);
    bank_split_clear(&s);
    return 0;
}

/* State of "active" as the client knows it. */
static uint64_t active_acked;       /* last acknowledged value (0: never set) */
static uint64_t inflight_alias = 0; /* target of an unacknowledged alias change, if any */
static int inflight_alias_set;
static known_t inflight_put;
static int inflight_put_set;

/* Runs operations until the registry stops answering. */
static void run_ops(unsigned *seed)
{
    for (;;) {
        int op = (int)(rand_r(seed) % 4);
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        msg_t *r = NULL;
        if (op <= 1 || max_acked == 0) {
            known_t k = {{rand_r(seed) % 50, rand_r(seed) % 50, rand_r(seed) % 50}, "", 0};
            void *b;
            size_t n;
            if (make_bank(k.gen, &b, &n, k.digest)) {
                fprintf(stderr, "bank generation failed\n");
                failures++;
                return;
            }
            int with_alias = op == 1;
            Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
            q.whole_bank = 1;
            q.bank_digest = k.digest;
            q.actor = "crash";
            if (with_alias) q.set_alias = "active";
            env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
            env.put_version_request = &q;
            msg_part_t part = {b, n};
            inflight_put = k;
            inflight_put_set = 1;
            inflight_alias_set = with_alias; /* target unknown until the reply: any new version */
            inflight_alias = 0;
            int rc = request(&env, &part, 1, 200, &r);
            free(b);
            if (rc) return;
            const Moda__PutVersionReply *p = r->env->put_version_reply;
            if (r->env->body_case != MODA__ENVELOPE__BODY_PUT_VERSION_REPLY || p->status->code || !p->info ||
                p->info->version > MAX_VERSIONS) {
                fprintf(stderr, "put refused: %s\n", p && p->status ? p->status->message : "?");
                failures++;
                msg_free(&r);
                return;
            }
            uint64_t v = p->info->version;
            ver[v] = k;
            ver[v].acked = 1;
            if (v > max_acked) max_acked = v;
            if (with_alias) active_acked = v;
            inflight_put_set = inflight_alias_set = 0;
        } else {
            uint64_t target = 1 + rand_r(seed) % max_acked;
            while (target > 1 && !ver[target].acked) target--;
            Moda__SetAliasRequest sq = MODA__SET_ALIAS_REQUEST__INIT;
            Moda__RollbackRequest rq = MODA__ROLLBACK_REQUEST__INIT;
            if (op == 2 || active_acked == 0) {
                sq.alias = "active";
                sq.version = target;
                env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
                env.set_alias_request = &sq;
                inflight_alias = target;
            } else {
                rq.alias = "active";
                env.body_case = MODA__ENVELOPE__BODY_ROLLBACK_REQUEST;
                env.rollback_request = &rq;
                inflight_alias = 0; /* previous value: unknown to the client */
            }
            inflight_alias_set = 1;
            if (request(&env, NULL, 0, 200, &r)) return;
            const Moda__HistoryEntry *e = NULL;
            int code = 0;
            if (r->env->body_case == MODA__ENVELOPE__BODY_SET_ALIAS_REPLY) {
                code = (int)r->env->set_alias_reply->status->code;
                e = r->env->set_alias_reply->entry;
            } else if (r->env->body_case == MODA__ENVELOPE__BODY_ROLLBACK_REPLY) {
                code = (int)r->env->rollback_reply->status->code;
                e = r->env->rollback_reply->entry;
            }
            if (code == 0 && e) active_acked = e->to;
            else if (code != MODA__STATUS_CODE__STATUS_STATE) {
                fprintf(stderr, "alias change refused with %d\n", code);
                failures++;
            }
            inflight_alias_set = 0;
        }
        msg_free(&r);
    }
}

static void verify(void)
{
    /* versions: every acked one present with its digest; at most one extra, the in-flight put */
    Moda__ListVersionsRequest lq = MODA__LIST_VERSIONS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &lq;
    msg_t *r = NULL;
    EXPECT(request(&env, NULL, 0, 5000, &r) == 0);
    if (!r) return;
    const Moda__ListVersionsReply *l = r->env->list_versions_reply;
    EXPECT(r->env->body_case == MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY && l->status->code == 0);
    uint64_t newest = l->n_versions ? l->versions[0]->version : 0;
    EXPECT(l->n_versions == newest); /* numbered 1..newest, no holes */
    int extra = 0;
    uint64_t extra_v = 0;
    for (size_t i = 0; i < l->n_versions; i++) {
        const Moda__VersionInfo *v = l->versions[i];
        if (v->version <= MAX_VERSIONS && ver[v->version].acked) {
            EXPECT(!strcmp(v->bank_digest, ver[v->version].digest));
        } else {
            extra++;
            extra_v = v->version;
            EXPECT(inflight_put_set && !strcmp(v->bank_digest, inflight_put.digest));
        }
    }
    for (uint64_t v = 1; v <= max_acked; v++)
        if (ver[v].acked) EXPECT(v <= newest);
    EXPECT(extra <= 1);
    msg_free(&r);
    /* the in-flight put became visible: adopt it as known, and check its bytes fully */
    uint64_t check_v = extra_v ? extra_v : max_acked;
    if (extra_v && extra_v <= MAX_VERSIONS) {
        ver[extra_v] = inflight_put;
        ver[extra_v].acked = 1;
        if (extra_v > max_acked) max_acked = extra_v;
    }
    if (check_v) {
        Moda__GetVersionRequest gq = MODA__GET_VERSION_REQUEST__INIT;
        gq.version = check_v;
        gq.whole_bank = 1;
        env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
        env.get_version_request = &gq;
        EXPECT(request(&env, NULL, 0, 5000, &r) == 0);
        if (r) {
            void *b;
            size_t n;
            char d[65];
            make_bank(ver[check_v].gen, &b, &n, d);
            size_t got = 0;
            int same = r->env->get_version_reply->status->code == 0;
            for (int i = 0; same && i < r->nparts; i++) {
                if (got + r->parts[i].size > n || memcmp((char *)b + got, r->parts[i].data, r->parts[i].size)) same = 0;
                got += r->parts[i].size;
            }
            EXPECT(same && got == n);
            free(b);
            msg_free(&r);
        }
    }
    /* alias: last acked value, or the in-flight change's result */
    Moda__GetAliasRequest aq = MODA__GET_ALIAS_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
    env.get_alias_request = &aq;
    uint64_t cur = 0;
    EXPECT(request(&env, NULL, 0, 5000, &r) == 0);
    if (r) {
        const Moda__GetAliasReply *g = r->env->get_alias_reply;
        cur = g->current ? g->current->version : 0;
        int ok = cur == active_acked;
        if (!ok && inflight_alias_set) ok = inflight_alias ? cur == inflight_alias : 1;
        if (!ok) fprintf(stderr, "active is %llu, acked %llu\n", (unsigned long long)cur, (unsigned long long)active_acked);
        EXPECT(ok);
        active_acked = cur;
        msg_free(&r);
    }
    /* history: contiguous, chained, ending at the current value */
    Moda__HistoryRequest hq = MODA__HISTORY_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HISTORY_REQUEST;
    env.history_request = &hq;
    EXPECT(request(&env, NULL, 0, 5000, &r) == 0);
    if (r) {
        const Moda__HistoryReply *h = r->env->history_reply;
        size_t n = h->n_entries;
        for (size_t i = 0; i < n; i++) {
            EXPECT(h->entries[i]->seq == n - i);
            if (i + 1 < n) EXPECT(h->entries[i]->from == h->entries[i + 1]->to);
        }
        if (n) EXPECT(h->entries[0]->to == cur);
        msg_free(&r);
    }
    inflight_put_set = inflight_alias_set = 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_crash MODA_REGISTRY_BIN WORKDIR [KILLS]\n");
        return 2;
    }
    int min_kills = argc > 3 ? atoi(argv[3]) : 50;
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", argv[2], argv[2]);
    if (system(cmd)) return 1;
    snprintf(dir, sizeof dir, "%s/db", argv[2]);
    snprintf(ep, sizeof ep, "ipc://%s/r.sock", argv[2]);
    msg_set_sender("test_crash");
    ctx = zmq_ctx_new();
    reconnect();
    unsigned seed = 12345;
    double t0 = now_ms();
    int kills = 0;
    for (cycle = 0; kills < min_kills && now_ms() - t0 < 40000 && failures < 5; cycle++) {
        pid_t pid = start(argv[1]);
        /* wait until it answers: the environment opened after the previous kill */
        int up = 0;
        for (int i = 0; i < 200 && !up; i++) {
            Moda__GetAliasRequest aq = MODA__GET_ALIAS_REQUEST__INIT;
            Moda__Envelope env = MODA__ENVELOPE__INIT;
            env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
            env.get_alias_request = &aq;
            msg_t *r = NULL;
            up = request(&env, NULL, 0, 50, &r) == 0;
            msg_free(&r);
        }
        EXPECT(up);
        if (!up) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        if (cycle > 0) verify();
        killer_t k = {pid, 2 + (int)(rand_r(&seed) % 149)};
        pthread_t th;
        pthread_create(&th, NULL, kill_later, &k);
        run_ops(&seed);
        pthread_join(th, NULL);
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) kills++;
    }
    /* final restart and check */
    pid_t pid = start(argv[1]);
    usleep(200000);
    verify();
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    msg_socket_close(&sock);
    zmq_ctx_term(ctx);
    printf("test_crash: %d kills in %.1f s, %llu versions acknowledged\n", kills, (now_ms() - t0) / 1e3,
           (unsigned long long)max_acked);
    if (kills < min_kills) {
        fprintf(stderr, "test_crash: only %d kills (wanted %d)\n", kills, min_kills);
        failures++;
    }
    if (failures) {
        fprintf(stderr, "test_crash: %d failures\n", failures);
        return 1;
    }
    printf("test_crash: all checks passed\n");
    return 0;
}
