/* runtime.c — CPU thread settings shared by OpenMP loops and OpenBLAS. */
#include "kn.h"

#include <omp.h>

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

static int g_threads;

void kn_set_threads(int n)
{
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kn_get_threads(void)
{
    return g_threads > 0 ? g_threads : omp_get_max_threads();
}
