/* runtime.c — CPU thread settings shared by OpenMP loops, the kn_parallel_for pool and
 * OpenBLAS: the process-wide count (kn_set_threads) and a per-thread override
 * (kn_set_thread_local_threads) that wins over it for calls made from that thread. */
#include "kn.h"

#include <omp.h>

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

static int g_threads;
static _Thread_local int tl_threads;   /* 0: no override on this thread */
static _Thread_local int tl_omp_saved; /* this thread's OpenMP count before the override */

void kn_set_threads(int n)
{
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kn_get_threads(void)
{
    if (tl_threads > 0) return tl_threads;
    return g_threads > 0 ? g_threads : omp_get_max_threads();
}

int kn_set_thread_local_threads(int n)
{
    int old = tl_threads;
    if (n > 0 && old <= 0) tl_omp_saved = omp_get_max_threads();
    if (n > 0) {
        tl_threads = n;
        omp_set_num_threads(n); /* nthreads-var is per thread: only this thread's regions */
    } else {
        tl_threads = 0;
        if (old > 0) omp_set_num_threads(tl_omp_saved);
    }
    return old;
}

int kn_get_thread_local_threads(void) { return tl_threads; }
