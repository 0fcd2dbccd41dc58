/* ctx.cu — kcu context (stream, cuBLAS, cuDNN, arena, workspace), host↔device copies,
 * and the cuBLAS ops: GEMM, linear fwd/bwd and the linear with bias/residual/GELU epilogue.
 * Row-major GEMMs are issued to column-major cuBLAS as Cᵀ = op(B)ᵀ op(A)ᵀ, so no data moves.
 * CPU references: kernels/cpu/gemm.c (kn_gemm, kn_linear_fwd/bwd), gemm_pk.c. */
#include "kcu_internal.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void set_err(err_t *err, int code, const char *msg)
{
    if (!err) return;
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "%s", msg);
}

int kcu_fail(kcu_ctx_t *ctx, int code, const char *fmt, ...)
{
    if (!ctx) return code;
    char buf[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (!ctx->code) {
        ctx->code = code;
        memcpy(ctx->msg, buf, sizeof buf);
    }
    return code;
}

int kcu_check_launch(kcu_ctx_t *ctx, const char *op)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return 0;
    return kcu_fail(ctx, ERR_DEVICE, "%s: CUDA error %d (%s)", op, (int)e, cudaGetErrorString(e));
}

int kcu_check_blas(kcu_ctx_t *ctx, cublasStatus_t st, const char *op)
{
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    return kcu_fail(ctx, ERR_DEVICE, "%s: cuBLAS status %d (%s)", op, (int)st,
                    cublasGetStatusString(st));
}

int kcu_check_dnn(kcu_ctx_t *ctx, cudnnStatus_t st, const char *op)
{
    if (st == CUDNN_STATUS_SUCCESS) return 0;
    return kcu_fail(ctx, ERR_DEVICE, "%s: cuDNN status %d (%s)", op, (int)st,
                    cudnnGetErrorString(st));
}

void *kcu_workspace(kcu_ctx_t *ctx, size_t bytes)
{
    if (bytes <= ctx->ws_size && ctx->ws) return ctx->ws;
    size_t want = bytes + bytes / 2 + 4096;
    cudaStreamSynchronize(ctx->stream);
    if (ctx->ws) cudaFree(ctx->ws);
    ctx->ws = NULL;
    ctx->ws_size = 0;
    cudaError_t e = cudaMalloc(&ctx->ws, want);
    if (e != cudaSuccess) {
        cudaGetLastError();
        ctx->ws = NULL;
        kcu_fail(ctx, ERR_NOMEM, "kcu workspace: cudaMalloc of %zu bytes failed (%s)", want,
                 cudaGetErrorString(e));
        return NULL;
    }
    ctx->ws_size = want;
    return ctx->ws;
}

/* ---- context ---------------------------------------------------------------------------- */

extern "C" kcu_ctx_t *kcu_ctx_new(int device, size_t arena_bytes, int flags, err_t *err)
{
    char why[256] = "";
    int n = kcu_device_probe(why, sizeof why);
    char msg[ERR_MSG_MAX];
    if (n <= 0) {
        snprintf(msg, sizeof msg, "kcu_ctx_new: no CUDA device (%s)", why);
        set_err(err, ERR_DEVICE, msg);
        return NULL;
    }
    if (device < 0 || device >= n) {
        snprintf(msg, sizeof msg, "kcu_ctx_new: device %d out of range (%d devices)", device, n);
        set_err(err, ERR_INVALID, msg);
        return NULL;
    }
    kcu_ctx_t *c = (kcu_ctx_t *)calloc(1, sizeof *c);
    if (!c) {
        set_err(err, ERR_NOMEM, "kcu_ctx_new: out of host memory");
        return NULL;
    }
    c->device = device;
    c->tf32 = (flags & KCU_TF32) != 0;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        snprintf(msg, sizeof msg, "kcu_ctx_new: CUDA error %d (%s)", (int)e, cudaGetErrorString(e));
        cudaGetLastError();
        free(c);
        set_err(err, ERR_DEVICE, msg);
        return NULL;
    }
    cublasStatus_t bs = cublasCreate(&c->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(c->blas, c->stream);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, sizeof msg, "kcu_ctx_new: cuBLAS status %d (%s)", (int)bs,
                 cublasGetStatusString(bs));
        kcu_ctx_destroy(&c);
        set_err(err, ERR_DEVICE, msg);
        return NULL;
    }
    cudnnStatus_t ds = cudnnCreate(&c->dnn);
    if (ds == CUDNN_STATUS_SUCCESS) ds = cudnnSetStream(c->dnn, c->stream);
    if (ds != CUDNN_STATUS_SUCCESS) {
        snprintf(msg, sizeof msg, "kcu_ctx_new: cuDNN status %d (%s)", (int)ds,
                 cudnnGetErrorString(ds));
        c->dnn = NULL;
        kcu_ctx_destroy(&c);
        set_err(err, ERR_DEVICE, msg);
        return NULL;
    }
    kcu_set_tf32(c, c->tf32);
    if (arena_bytes) {
        e = cudaMalloc((void **)&c->arena, arena_bytes);
        if (e != cudaSuccess) {
            snprintf(msg, sizeof msg, "kcu_ctx_new: arena of %zu bytes: %s", arena_bytes,
                     cudaGetErrorString(e));
            cudaGetLastError();
            c->arena = NULL;
            kcu_ctx_destroy(&c);
            set_err(err, ERR_NOMEM, msg);
            return NULL;
        }
        c->arena_size = arena_bytes;
    }
    return c;
}

extern "C" void kcu_ctx_destroy(kcu_ctx_t **pc)
{
    if (!pc || !*pc) return;
    kcu_ctx_t *c = *pc;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->arena) cudaFree(c->arena);
    if (c->ws) cudaFree(c->ws);
    if (c->ibuf) cudaFree(c->ibuf);
    if (c->blas) cublasDestroy(c->blas);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
    *pc = NULL;
}

extern "C" void *kcu_stream(kcu_ctx_t *ctx)
{
    return (void *)ctx->stream;
}

extern "C" void kcu_set_tf32(kcu_ctx_t *ctx, int on)
{
    ctx->tf32 = on != 0;
    cublasSetMathMode(ctx->blas, ctx->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
}

extern "C" int kcu_get_tf32(const kcu_ctx_t *ctx)
{
    return ctx->tf32;
}

extern "C" int kcu_sync(kcu_ctx_t *ctx, err_t *err)
{
    cudaError_t e = cudaStreamSynchronize(ctx->stream);
    if (e != cudaSuccess) kcu_fail(ctx, ERR_DEVICE, "kcu_sync: CUDA error %d (%s)", (int)e,
                                   cudaGetErrorString(e));
    int code = ctx->code;
    if (code) set_err(err, code, ctx->msg);
    ctx->code = 0;
    return code;
}

extern "C" const char *kcu_errmsg(const kcu_ctx_t *ctx)
{
    return ctx ? ctx->msg : "no context";
}

/* ---- arena ------------------------------------------------------------------------------- */

extern "C" void *kcu_alloc(kcu_ctx_t *ctx, size_t bytes)
{
    size_t at = (ctx->arena_used + 255) & ~(size_t)255;
    if (!ctx->arena || at > ctx->arena_size || bytes > ctx->arena_size - at) {
        kcu_fail(ctx, ERR_NOMEM, "kcu_alloc: arena full (%zu of %zu bytes used, %zu wanted)",
                 ctx->arena_used, ctx->arena_size, bytes);
        return NULL;
    }
    ctx->arena_used = at + bytes;
    return ctx->arena + at;
}

extern "C" float *kcu_allocf(kcu_ctx_t *ctx, size_t n)
{
    return (float *)kcu_alloc(ctx, n * sizeof(float));
}

extern "C" size_t kcu_mark(const kcu_ctx_t *ctx)
{
    return ctx->arena_used;
}

extern "C" void kcu_reset(kcu_ctx_t *ctx, size_t mark)
{
    if (mark <= ctx->arena_used) ctx->arena_used = mark;
}

extern "C" size_t kcu_arena_used(const kcu_ctx_t *ctx)
{
    return ctx->arena_used;
}

extern "C" size_t kcu_arena_size(const kcu_ctx_t *ctx)
{
    return ctx->arena_size;
}

/* ---- copies ------------------------------------------------------------------------------ */

static int copy_err(kcu_ctx_t *ctx, cudaError_t e, const char *op)
{
    if (e == cudaSuccess) return 0;
    cudaGetLastError();
    return kcu_fail(ctx, ERR_DEVICE, "%s: CUDA error %d (%s)", op, (int)e, cudaGetErrorString(e));
}

extern "C" int kcu_upload(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return 0;
    KCU_ARG(ctx, dst && src, "kcu_upload");
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream); /* src reusable on return */
    return copy_err(ctx, e, "kcu_upload");
}

extern "C" int kcu_download(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return 0;
    KCU_ARG(ctx, dst && src, "kcu_download");
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream);
    return copy_err(ctx, e, "kcu_download");
}

extern "C" int kcu_zero(kcu_ctx_t *ctx, void *dst, size_t bytes)
{
    if (!bytes) return 0;
    KCU_ARG(ctx, dst, "kcu_zero");
    return copy_err(ctx, cudaMemsetAsync(dst, 0, bytes, ctx->stream), "kcu_zero");
}

extern "C" int kcu_copy(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return 0;
    KCU_ARG(ctx, dst && src, "kcu_copy");
    return copy_err(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream),
                    "kcu_copy");
}

extern "C" float *kcu_upload_new(kcu_ctx_t *ctx, const float *src, size_t n)
{
    float *d = kcu_allocf(ctx, n);
    if (!d) return NULL;
    if (kcu_upload(ctx, d, src, n * sizeof(float))) return NULL;
    return d;
}

/* ---- GEMM -------------------------------------------------------------------------------- */

extern "C" int kcu_gemm_batched(kcu_ctx_t *ctx, int ta, int tb, int M, int N, int K, float alpha,
                                const float *A, int lda, long long sA, const float *B, int ldb,
                                long long sB, float beta, float *C, int ldc, long long sC,
                                int batch)
{
    KCU_ARG(ctx, M >= 0 && N >= 0 && K > 0 && batch >= 0, "kcu_gemm");
    if (!M || !N || !batch) return 0;
    KCU_ARG(ctx, A && B && C, "kcu_gemm");
    KCU_ARG(ctx, lda >= (ta ? M : K) && lda >= 1, "kcu_gemm");
    KCU_ARG(ctx, ldb >= (tb ? K : N) && ldb >= 1, "kcu_gemm");
    KCU_ARG(ctx, ldc >= N, "kcu_gemm");
    cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (batch == 1)
        st = cublasSgemm(ctx->blas, opB, opA, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc);
    else
        st = cublasSgemmStridedBatched(ctx->blas, opB, opA, N, M, K, &alpha, B, ldb, sB, A, lda,
                                       sA, &beta, C, ldc, sC, batch);
    return kcu_check_blas(ctx, st, "kcu_gemm");
}

extern "C" int kcu_gemm(kcu_ctx_t *ctx, int ta, int tb, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C,
                        int ldc)
{
    return kcu_gemm_batched(ctx, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

/* ---- linear ------------------------------------------------------------------------------ */

__device__ __forceinline__ float gelu_exact(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* y = act(y + b) in place on the [M, N] block with row stride ldy */
__global__ void k_epilogue(float *y, int ldy, const float *b, int M, int N, int act)
{
    size_t total = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int m = (int)(i / N), n = (int)(i % N);
        float *p = y + (size_t)m * ldy + n;
        float v = *p;
        if (b) v += b[n];
        if (act == KCU_ACT_GELU) v = gelu_exact(v);
        *p = v;
    }
}

/* db[o] += Σ_n dy[n, o] (one thread per column, rows in order: deterministic). */
__global__ void k_colsum_acc(float *db, const float *dy, int N, int O)
{
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= O) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += dy[(size_t)n * O + o];
    db[o] += s;
}

/* The residual goes in through the GEMM's beta (copied into y first unless it is y), then
 * bias and activation in place: act(x Wᵀ + res + b). No workspace. */
extern "C" int kcu_linear_ex(kcu_ctx_t *ctx, float *y, int ldy, const float *x, int ldx,
                             const float *W, const float *b, const float *res, int ldr, int M,
                             int N, int K, int act)
{
    KCU_ARG(ctx, y && x && W && M >= 0 && N > 0 && K > 0 && ldy >= N && ldx >= K,
            "kcu_linear_ex");
    KCU_ARG(ctx, !res || ldr >= N, "kcu_linear_ex");
    KCU_ARG(ctx, !res || res != y || ldr == ldy, "kcu_linear_ex");
    KCU_ARG(ctx, act == KCU_ACT_NONE || act == KCU_ACT_GELU, "kcu_linear_ex");
    if (!M) return 0;
    if (res && res != y) {
        cudaError_t e = cudaMemcpy2DAsync(y, (size_t)ldy * sizeof(float), res,
                                          (size_t)ldr * sizeof(float), (size_t)N * sizeof(float),
                                          (size_t)M, cudaMemcpyDeviceToDevice, ctx->stream);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return kcu_fail(ctx, ERR_DEVICE, "kcu_linear_ex: residual copy: %s",
                            cudaGetErrorString(e));
        }
    }
    int rc = kcu_gemm(ctx, 0, 1, M, N, K, 1.0f, x, ldx, W, K, res ? 1.0f : 0.0f, y, ldy);
    if (rc || (!b && act == KCU_ACT_NONE)) return rc;
    k_epilogue<<<kcu_blocks((size_t)M * N, 256), 256, 0, ctx->stream>>>(y, ldy, b, M, N, act);
    return kcu_check_launch(ctx, "kcu_linear_ex");
}

extern "C" int kcu_linear_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *W,
                              const float *b, int N, int K, int O)
{
    return kcu_linear_ex(ctx, y, O, x, K, W, b, NULL, 0, N, O, K, KCU_ACT_NONE);
}

extern "C" int kcu_linear_bwd(kcu_ctx_t *ctx, float *dx, float *dW, float *db, const float *dy,
                              const float *x, const float *W, int N, int K, int O)
{
    KCU_ARG(ctx, N >= 0 && K > 0 && O > 0, "kcu_linear_bwd");
    int rc = 0;
    if (dx) rc = kcu_gemm(ctx, 0, 0, N, K, O, 1.0f, dy, O, W, K, 0.0f, dx, K);
    if (!rc && dW && N) rc = kcu_gemm(ctx, 1, 0, O, K, N, 1.0f, dy, O, x, K, 1.0f, dW, K);
    if (!rc && db && N) {
        k_colsum_acc<<<(O + 127) / 128, 128, 0, ctx->stream>>>(db, dy, N, O);
        rc = kcu_check_launch(ctx, "kcu_linear_bwd");
    }
    return rc;
}
