/* test_threads.c — per-thread CPU thread budgets (kn_set_thread_local_threads, kn.h) (unit).
 *
 * 1. API: the override nests (returns the previous one), 0 removes it, the global count is
 *    untouched.
 * 2. Two threads run CONCURRENTLY with budgets 2 and 1, many rounds: each sees its own
 *    kn_get_threads(); kn_parallel_for items of the budget-1 thread all run on that thread
 *    with tid 0, those of the budget-2 thread use tids < 2; an OpenMP region in each has
 *    exactly its budget of threads; kn_linear_pk_fwd (pool) results are bit-identical to
 *    the reference computed on the main thread with the global count; kn_gemm (own small
 *    path under budget 1, OpenBLAS otherwise) matches a double reference; a selector
 *    forward (whose token passes take a budget of 1) gives bit-identical probabilities.
 * 3. Regression for the old global toggle: while a thread runs selector forwards in a loop,
 *    the main thread's kn_get_threads() never changes.
 */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/t_check.h"
#include "kn.h"
#include "selector.h"

#define ROUNDS 30
#define PM 200 /* rows of the packed linear */
#define PK 80
#define PN 96
#define GM 10 /* small GEMM */
#define GK 70
#define GN 50

static float *x_, *w_, *wp_, *b_, *ref_pk, *ga, *gb, *gbt;
static double gref[GM * GN];
static selector_cfg_t scfg = {.n_patch = 9, .n_tok = 3, .head_dim = 4, .dim = {8, 12}, .depth = {2, 1}};
static selector_block_w_t sbw[3];
static float *staps;
static float sref[2];
static pthread_barrier_t bar;

static float *rnd(size_t n, uint64_t *r, float sd)
{
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = sd * (kn_rng_uniform(r) - 0.5f);
    return p;
}

static void make_selector_weights(uint64_t *r)
{
    size_t nt = 0;
    for (int b = 0; b < 3; b++) {
        int C = scfg.dim[b < 2 ? 0 : 1];
        selector_block_w_t *w = &sbw[b];
        float *ln = rnd((size_t)4 * C, r, 0.2f);
        for (int i = 0; i < C; i++) ln[i] += 1.0f, ln[2 * C + i] += 1.0f;
        w->ln1_w = ln, w->ln1_b = ln + C, w->ln2_w = ln + 2 * C, w->ln2_b = ln + 3 * C;
        w->qkv_w = rnd((size_t)3 * C * C, r, 0.5f), w->qkv_b = rnd((size_t)3 * C, r, 0.1f);
        w->proj_w = rnd((size_t)C * C, r, 0.5f), w->proj_b = rnd(C, r, 0.1f);
        w->fc1_w = rnd((size_t)4 * C * C, r, 0.5f), w->fc1_b = rnd((size_t)4 * C, r, 0.1f);
        w->fc2_w = rnd((size_t)4 * C * C, r, 0.3f), w->fc2_b = rnd(C, r, 0.1f);
        nt += (size_t)scfg.n_patch * 2 * C;
    }
    staps = rnd(nt, r, 2.0f);
}

static selector_t *new_selector(void)
{
    err_t e = {0};
    selector_t *s = selector_new_custom(&scfg, sbw, &e);
    if (s && selector_init(s, 7, 2, &e)) selector_destroy(&s);
    if (!s) fprintf(stderr, "selector: %s\n", e.msg);
    return s;
}

typedef struct rec {
    pthread_t self;
    int tid[64];
    pthread_t th[64];
} rec_t;

static void item(void *ctx, int i, int tid)
{
    rec_t *r = ctx;
    r->tid[i] = tid;
    r->th[i] = pthread_self();
    volatile double s = 0; /* a little work so several threads can take part */
    for (int k = 0; k < 20000; k++) s += k * 1e-9;
}

typedef struct arg {
    int budget;
    int bad_get, bad_tid, bad_thread, bad_omp, bad_pk, bad_gemm, bad_sel, rounds;
} arg_t;

static void *runner(void *p)
{
    arg_t *a = p;
    kn_set_thread_local_threads(a->budget);
    selector_t *sel = new_selector();
    float *y = malloc(sizeof(float) * PM * PN), *c = malloc(sizeof(float) * GM * GN);
    pthread_barrier_wait(&bar);
    for (int round = 0; round < ROUNDS; round++) {
        a->rounds++;
        if (kn_get_threads() != a->budget) a->bad_get++;
        rec_t r;
        r.self = pthread_self();
        kn_parallel_for(64, KN_POOL_ANY, item, &r);
        for (int i = 0; i < 64; i++) {
            if (r.tid[i] < 0 || r.tid[i] >= a->budget) a->bad_tid++;
            if (a->budget == 1 && !pthread_equal(r.th[i], r.self)) a->bad_thread++;
        }
        int team = 0;
#pragma omp parallel
        {
#pragma omp single
            team = omp_get_num_threads();
        }
        if (team != a->budget) a->bad_omp++;
        kn_linear_pk_fwd(y, PN, x_, PK, wp_, b_, NULL, 0, PM, PN, PK, KN_ACT_NONE);
        if (memcmp(y, ref_pk, sizeof(float) * PM * PN)) a->bad_pk++;
        for (int tb = 0; tb < 2; tb++) {
            kn_gemm(0, tb, GM, GN, GK, 1.0f, ga, GK, tb ? gbt : gb, tb ? GK : GN, 0.0f, c, GN);
            for (int i = 0; i < GM * GN; i++)
                if (fabs(c[i] - gref[i]) > 1e-5 * (1 + fabs(gref[i]))) {
                    a->bad_gemm++;
                    break;
                }
        }
        float pr[2] = {0};
        err_t e = {0};
        if (!sel || selector_forward(sel, staps, pr, &e) || memcmp(pr, sref, sizeof pr)) a->bad_sel++;
        if (kn_get_threads() != a->budget) a->bad_get++; /* the selector restored ours */
    }
    selector_destroy(&sel);
    free(y);
    free(c);
    kn_set_thread_local_threads(0);
    return NULL;
}

static atomic_int looping;
static void *sel_loop(void *p)
{
    (void)p;
    selector_t *sel = new_selector();
    float pr[2];
    err_t e = {0};
    for (int i = 0; i < 200 && sel; i++) selector_forward(sel, staps, pr, &e);
    selector_destroy(&sel);
    atomic_store(&looping, 0);
    return NULL;
}

int main(void)
{
    t_watchdog(120);
    kn_set_threads(2);
    /* 1. API */
    T(kn_get_thread_local_threads() == 0);
    T(kn_get_threads() == 2);
    T(kn_set_thread_local_threads(1) == 0);
    T(kn_get_threads() == 1);
    T(kn_set_thread_local_threads(3) == 1);
    T(kn_get_threads() == 3);
    T(kn_set_thread_local_threads(1) == 3);
    T(kn_set_thread_local_threads(0) == 1);
    T(kn_get_threads() == 2 && kn_get_thread_local_threads() == 0);
    T(omp_get_max_threads() == 2); /* OpenMP count restored */

    /* references on the main thread (global count, no override) */
    uint64_t rs = 12345;
    x_ = rnd((size_t)PM * PK, &rs, 2), w_ = rnd((size_t)PN * PK, &rs, 1), b_ = rnd(PN, &rs, 1);
    wp_ = aligned_alloc(64, (sizeof(float) * kn_pack_size(PN, PK) + 63) / 64 * 64);
    kn_pack_w(wp_, w_, PN, PK);
    ref_pk = malloc(sizeof(float) * PM * PN);
    kn_linear_pk_fwd(ref_pk, PN, x_, PK, wp_, b_, NULL, 0, PM, PN, PK, KN_ACT_NONE);
    ga = rnd((size_t)GM * GK, &rs, 2), gb = rnd((size_t)GK * GN, &rs, 2);
    gbt = malloc(sizeof(float) * GK * GN);
    for (int k = 0; k < GK; k++)
        for (int n = 0; n < GN; n++) gbt[(size_t)n * GK + k] = gb[(size_t)k * GN + n];
    for (int m = 0; m < GM; m++)
        for (int n = 0; n < GN; n++) {
            double s = 0;
            for (int k = 0; k < GK; k++) s += (double)ga[m * GK + k] * gb[k * GN + n];
            gref[m * GN + n] = s;
        }
    make_selector_weights(&rs);
    selector_t *s0 = new_selector();
    err_t e = {0};
    T(s0 && !selector_forward(s0, staps, sref, &e));
    T(fabsf(sref[0] + sref[1] - 1.0f) < 1e-5f);
    selector_destroy(&s0);

    /* 2. two budgets at once */
    pthread_barrier_init(&bar, NULL, 2);
    arg_t a2 = {.budget = 2}, a1 = {.budget = 1};
    pthread_t t2, t1;
    pthread_create(&t2, NULL, runner, &a2);
    pthread_create(&t1, NULL, runner, &a1);
    pthread_join(t2, NULL);
    pthread_join(t1, NULL);
    pthread_barrier_destroy(&bar);
    arg_t *as[2] = {&a2, &a1};
    for (int i = 0; i < 2; i++) {
        arg_t *a = as[i];
        printf("budget %d: %d rounds, bad get %d tid %d thread %d omp %d pk %d gemm %d sel %d\n",
               a->budget, a->rounds, a->bad_get, a->bad_tid, a->bad_thread, a->bad_omp, a->bad_pk,
               a->bad_gemm, a->bad_sel);
        T(a->rounds == ROUNDS);
        T(a->bad_get == 0 && a->bad_tid == 0 && a->bad_thread == 0 && a->bad_omp == 0);
        T(a->bad_pk == 0 && a->bad_gemm == 0 && a->bad_sel == 0);
    }
    T(kn_get_threads() == 2);

    /* 3. the main thread's count while another thread runs the selector */
    atomic_store(&looping, 1);
    pthread_t tl;
    pthread_create(&tl, NULL, sel_loop, NULL);
    long polls = 0, changed = 0;
    while (atomic_load(&looping)) {
        polls++;
        changed += kn_get_threads() != 2;
    }
    pthread_join(tl, NULL);
    printf("main thread: %ld polls during selector forwards, %ld saw another count\n", polls, changed);
    T(changed == 0);

    for (int b = 0; b < 3; b++) {
        free((void *)sbw[b].ln1_w), free((void *)sbw[b].qkv_w), free((void *)sbw[b].qkv_b);
        free((void *)sbw[b].proj_w), free((void *)sbw[b].proj_b), free((void *)sbw[b].fc1_w);
        free((void *)sbw[b].fc1_b), free((void *)sbw[b].fc2_w), free((void *)sbw[b].fc2_b);
    }
    free(staps), free(x_), free(w_), free(wp_), free(b_), free(ref_pk), free(ga), free(gb), free(gbt);
    return t_done("bankrun_threads");
}
