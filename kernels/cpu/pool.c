/* pool.c — kn_parallel_for: a small work-claiming thread pool for the encoder kernels.
 *
 * Why not OpenMP here: an OpenMP region ends in a barrier that waits for every team
 * thread, so on a machine shared with other busy processes each region waits for a
 * descheduled thread (measured: 2 threads 2-3x slower than 1 thread under load). Here the
 * caller publishes a job and claims items itself; workers that wake late find nothing
 * left and go back to sleep, so the caller only ever waits for items that are already
 * being computed.
 *
 * Invariants: one job at a time (calls from different threads are serialised by a
 * mutex); a job struct lives on the caller's stack and is unpublished, then waited for
 * (refs == 0), before the call returns; calls made from inside an item run serially on
 * that thread with its tid; calls made from inside an OpenMP parallel region run serially
 * on the calling thread with tid = omp_get_thread_num() (what a nested OpenMP region
 * would do). Workers are created lazily and live for the process. The thread count of a
 * call is kn_get_threads() of the CALLING thread, so a per-thread budget
 * (kn_set_thread_local_threads) applies: budget 1 runs the items on the caller, without
 * touching the pool or its lock.
 */
#include "kn.h"

#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <sched.h>
#include <stdatomic.h>

#define MAXW 63

typedef struct job {
    void (*fn)(void *ctx, int i, int tid);
    void *ctx;
    int n;
    atomic_int next, done, refs;
} job_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t g_call = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static job_t *g_job;
static unsigned long g_gen;
static int g_nworkers;
static _Thread_local int tl_tid, tl_inside;

static void run_items(job_t *j, int tid)
{
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) break;
        j->fn(j->ctx, i, tid);
        atomic_fetch_add(&j->done, 1);
    }
}

static void *worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    tl_tid = tid;
    tl_inside = 1;
    unsigned long seen = 0;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (g_gen == seen) pthread_cond_wait(&g_cv, &g_mu);
        seen = g_gen;
        job_t *j = g_job;
        /* tid beyond what this job may use: stay out (its scratch has no slice for us) */
        if (!j || tid >= atomic_load(&j->refs) >> 16) continue;
        atomic_fetch_add(&j->refs, 1);
        pthread_mutex_unlock(&g_mu);
        run_items(j, tid);
        atomic_fetch_sub(&j->refs, 1);
        pthread_mutex_lock(&g_mu);
    }
    return NULL;
}

void kn_parallel_for(int n, int max_threads, void (*fn)(void *ctx, int i, int tid), void *ctx)
{
    if (n <= 0) return;
    int T = kn_get_threads();
    if (max_threads < T) T = max_threads;
    if (T > MAXW + 1) T = MAXW + 1;
    if (omp_in_parallel()) { /* inside someone's OpenMP team: serial, like a nested region */
        for (int i = 0; i < n; i++) fn(ctx, i, omp_get_thread_num());
        return;
    }
    if (tl_inside || T <= 1 || n == 1) {
        for (int i = 0; i < n; i++) fn(ctx, i, tl_tid);
        return;
    }
    pthread_mutex_lock(&g_call);
    pthread_mutex_lock(&g_mu);
    while (g_nworkers < T - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, (size_t)8 << 20);
        int rc = pthread_create(&th, &at, worker, (void *)(intptr_t)(g_nworkers + 1));
        pthread_attr_destroy(&at);
        if (rc) break; /* fewer workers: the caller does the rest */
        g_nworkers++;
    }
    job_t j = {.fn = fn, .ctx = ctx, .n = n};
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    atomic_init(&j.refs, T << 16); /* high bits: the tid limit; low bits: workers inside */
    g_job = &j;
    g_gen++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);

    tl_inside = 1;
    run_items(&j, 0);
    tl_inside = 0;
    /* Items still running elsewhere: yield so a descheduled worker can finish them. */
    while (atomic_load(&j.done) < n) sched_yield();
    pthread_mutex_lock(&g_mu);
    g_job = NULL;
    pthread_mutex_unlock(&g_mu);
    while ((atomic_load(&j.refs) & 0xffff) != 0) sched_yield();
    pthread_mutex_unlock(&g_call);
}
