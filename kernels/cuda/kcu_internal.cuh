/* kcu_internal.cuh — what the kernels/cuda/*.cu files share: the context struct, error
 * recording, the workspace and launch helpers. Not a public header (kn_cuda.h is). */
#ifndef MODA_KCU_INTERNAL_CUH
#define MODA_KCU_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kn_cuda.h"

struct kcu_ctx {
    int device, tf32;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    char *arena;
    size_t arena_size, arena_used;
    void *ws; /* workspace: scratch of one op at a time (stream-ordered) */
    size_t ws_size;
    int *ibuf; /* small device int buffer (labels) */
    size_t ibuf_n;
    int code; /* first error since the last kcu_sync (sticky) */
    char msg[ERR_MSG_MAX];
};

/* Records a failure (the first one stays sticky) and returns code. */
int kcu_fail(kcu_ctx_t *ctx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* After a launch: ERR_DEVICE with the CUDA text when the launch failed, else 0. */
int kcu_check_launch(kcu_ctx_t *ctx, const char *op);
/* cuBLAS / cuDNN status translation. */
int kcu_check_blas(kcu_ctx_t *ctx, cublasStatus_t st, const char *op);
int kcu_check_dnn(kcu_ctx_t *ctx, cudnnStatus_t st, const char *op);
/* Workspace of at least `bytes` (grows by reallocation, which waits for the stream).
 * NULL on failure (recorded). Valid until the next kcu_workspace call. */
void *kcu_workspace(kcu_ctx_t *ctx, size_t bytes);

#define KCU_ARG(ctx, cond, op)                                                                \
    do {                                                                                      \
        if (!(cond)) return kcu_fail((ctx), ERR_INVALID, "%s: invalid argument (%s)", (op),   \
                                     #cond);                                                  \
    } while (0)

static inline unsigned kcu_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return b > 65535u * 16u ? 65535u * 16u : (unsigned)b; /* kernels use grid-stride loops */
}

#endif
