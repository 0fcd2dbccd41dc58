/* cuda_emu.h — a CPU emulation of the small part of CUDA, cuBLAS and cuDNN that
 * kernels/cuda/*.cu use, so the kcu_ kernels can be checked against the CPU ops on a machine
 * without a GPU (tests/gpu/emu/run_emu.sh). Not a simulator of timing or memory spaces:
 * blocks run one after another on the calling thread, their CUDA threads as fibers (see
 * emu_launch), so __shared__ (mapped to static) is per block; __syncthreads is a barrier;
 * warp shuffles exchange through a per-block buffer between two barrier phases. cuBLAS SGEMM
 * and cuDNN convolutions are naive reference loops with the libraries' documented semantics
 * (column-major GEMM; NCHW cross-correlation with groups; beta = 0 never reads the output).
 * Device memory is host memory filled with NaN on allocation, so a kernel that reads what
 * nobody wrote shows up as a NaN in the comparison. */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <cblas.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <ucontext.h>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
    unsigned x, y, z;
};

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

/* A block with barriers runs its CUDA threads as fibers (ucontext) on the calling thread,
 * round robin: a fiber runs until its next barrier (or its end), then the next fiber; so a
 * fiber passes barrier k only after every live fiber of the block reached it. Blocks without
 * barriers first run their threads one after another (fast path); the first barrier in that
 * mode throws emu_need_threads and the block reruns as fibers, as does every later block of
 * that kernel. (Sound for kernels that write global memory only after their first barrier —
 * true for every kernel in kernels/cuda.) Shuffles are two barrier phases through a
 * per-block buffer (lanes of a warp reach them together). */
struct emu_need_threads {};

struct emu_fiber {
    ucontext_t uc;
    bool done;
    uint3 tid;
};
struct emu_block {
    std::vector<emu_fiber> fib;
    std::vector<char> stacks;
    ucontext_t main;
    int cur;
    std::function<void()> body;
    std::vector<float> buf;
};
extern thread_local emu_block *emu_cur;

static inline void emu_yield()
{
    if (!emu_cur) throw emu_need_threads();
    emu_block *b = emu_cur;
    emu_fiber &f = b->fib[b->cur];
    swapcontext(&f.uc, &b->main);
    threadIdx = b->fib[b->cur].tid; /* resumed: restore this fiber's index */
}

static inline void __syncthreads() { emu_yield(); }

static inline float __shfl_xor_sync(unsigned, float v, int o)
{
    if (!emu_cur) throw emu_need_threads();
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned w = t / 32, lane = t % 32;
    emu_cur->buf[t] = v;
    emu_yield();
    float r = emu_cur->buf[w * 32 + (lane ^ (unsigned)o)];
    emu_yield();
    return r;
}

static inline float atomicAdd(float *p, float v)
{
    return std::atomic_ref<float>(*p).fetch_add(v);
}
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    return std::atomic_ref<unsigned>(*p).fetch_add(v);
}
static inline unsigned __float_as_uint(float x)
{
    unsigned u;
    memcpy(&u, &x, sizeof u);
    return u;
}
/* IEEE round-to-nearest ops that CUDA never contracts into an FMA (the host build of the
 * emulation has no FMA contraction at all) */
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }

static void emu_fiber_entry()
{
    emu_block *b = emu_cur;
    b->body();
    b->fib[b->cur].done = true; /* returning resumes uc_link = the scheduler */
}

#define EMU_STACK (256 * 1024)

template <class F, class... A> void emu_launch(dim3 g, dim3 b, F kern, A... args)
{
    static int threaded = 0; /* per kernel type; same-signature kernels share it (harmless) */
    unsigned T = b.x * b.y * b.z;
    emu_block blk;
    for (unsigned bz = 0; bz < g.z; bz++)
        for (unsigned by = 0; by < g.y; by++)
            for (unsigned bx = 0; bx < g.x; bx++) {
                blockIdx = {bx, by, bz};
                blockDim = b;
                gridDim = g;
                if (!threaded) {
                    try {
                        emu_cur = nullptr;
                        for (unsigned t = 0; t < T; t++) {
                            threadIdx = {t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
                            kern(args...);
                        }
                        continue;
                    } catch (emu_need_threads &) {
                        threaded = 1;
                    }
                }
                if (blk.fib.size() != T) {
                    blk.fib.assign(T, emu_fiber());
                    blk.stacks.assign((size_t)T * EMU_STACK, 0);
                    blk.buf.assign(((T + 31) / 32) * 32, 0.0f);
                }
                blk.body = [&]() { kern(args...); };
                for (unsigned t = 0; t < T; t++) {
                    emu_fiber &f = blk.fib[t];
                    f.done = false;
                    f.tid = {t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
                    getcontext(&f.uc);
                    f.uc.uc_stack.ss_sp = blk.stacks.data() + (size_t)t * EMU_STACK;
                    f.uc.uc_stack.ss_size = EMU_STACK;
                    f.uc.uc_link = &blk.main;
                    makecontext(&f.uc, emu_fiber_entry, 0);
                }
                emu_cur = &blk;
                for (bool live = true; live;) {
                    live = false;
                    for (unsigned t = 0; t < T; t++) {
                        if (blk.fib[t].done) continue;
                        blk.cur = (int)t;
                        threadIdx = blk.fib[t].tid;
                        swapcontext(&blk.main, &blk.fib[t].uc);
                        live = live || !blk.fib[t].done;
                    }
                }
                emu_cur = nullptr;
            }
}

/* ---- runtime ---- */
typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 } cudaError_t;
typedef void *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
#define cudaStreamNonBlocking 1
static inline const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }
static inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
static inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = (void *)1; return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    float nan = NAN;
    for (size_t i = 0; i + 4 <= n; i += 4) memcpy((char *)*p + i, &nan, 4);
    return cudaSuccess;
}
static inline cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memmove(d, s, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w,
                                            size_t h, cudaMemcpyKind, cudaStream_t)
{
    for (size_t r = 0; r < h; r++) memmove((char *)d + r * dp, (const char *)s + r * sp, w);
    return cudaSuccess;
}
static inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t)
{
    memset(d, v, n);
    return cudaSuccess;
}

/* ---- cuBLAS ---- */
typedef struct emu_blas *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 } cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
static inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)1; return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
static inline const char *cublasGetStatusString(cublasStatus_t) { return "emulated cuBLAS status"; }

static inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t ta,
                                                       cublasOperation_t tb, int m, int n, int k,
                                                       const float *alpha, const float *A, int lda,
                                                       long long sA, const float *B, int ldb,
                                                       long long sB, const float *beta, float *C,
                                                       int ldc, long long sC, int batch)
{
    /* column-major: C[i + j ldc] = alpha Σ_l op(A)[i,l] op(B)[l,j] + beta C */
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    for (int b = 0; b < batch; b++) {
        float *Cb = C + b * sC;
        if (*beta == 0.0f) /* cuBLAS does not read C when beta is 0 (it may hold NaN) */
            for (int j = 0; j < n; j++) memset(Cb + (size_t)j * ldc, 0, sizeof(float) * m);
        cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                    n, k, *alpha, A + b * sA, lda, B + b * sB, ldb, *beta, Cb, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
}

static inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                         int m, int n, int k, const float *alpha, const float *A,
                                         int lda, const float *B, int ldb, const float *beta,
                                         float *C, int ldc)
{
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc,
                                     0, 1);
}

/* ---- cuDNN ---- */
typedef enum {
    CUDNN_STATUS_SUCCESS = 0,
    CUDNN_STATUS_BAD_PARAM = 3,
    CUDNN_STATUS_NOT_SUPPORTED = 9
} cudnnStatus_t;
typedef enum { CUDNN_TENSOR_NCHW = 0 } cudnnTensorFormat_t;
typedef enum { CUDNN_DATA_FLOAT = 0 } cudnnDataType_t;
typedef enum { CUDNN_CROSS_CORRELATION = 1 } cudnnConvolutionMode_t;
typedef enum { CUDNN_DEFAULT_MATH = 0, CUDNN_TENSOR_OP_MATH = 1, CUDNN_FMA_MATH = 3 } cudnnMathType_t;
typedef int cudnnConvolutionFwdAlgo_t, cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t;
struct emu_t4 { int n, c, h, w; };
struct emu_conv { int pad_h, pad_w, u, v, groups; };
typedef struct emu_dnn *cudnnHandle_t;
typedef emu_t4 *cudnnTensorDescriptor_t;
typedef emu_t4 *cudnnFilterDescriptor_t;
typedef emu_conv *cudnnConvolutionDescriptor_t;
struct emu_perf { int algo; cudnnStatus_t status; float time; size_t memory; };
typedef emu_perf cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionBwdDataAlgoPerf_t,
    cudnnConvolutionBwdFilterAlgoPerf_t;

static inline const char *cudnnGetErrorString(cudnnStatus_t) { return "emulated cuDNN status"; }
static inline cudnnStatus_t cudnnCreate(cudnnHandle_t *h) { *h = (cudnnHandle_t)1; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnDestroy(cudnnHandle_t) { return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnCreateTensorDescriptor(emu_t4 **d) { *d = new emu_t4(); return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnCreateFilterDescriptor(emu_t4 **d) { *d = new emu_t4(); return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnCreateConvolutionDescriptor(emu_conv **d) { *d = new emu_conv(); (*d)->groups = 1; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnDestroyTensorDescriptor(emu_t4 *d) { delete d; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnDestroyFilterDescriptor(emu_t4 *d) { delete d; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnDestroyConvolutionDescriptor(emu_conv *d) { delete d; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnSetTensor4dDescriptor(emu_t4 *d, cudnnTensorFormat_t, cudnnDataType_t, int n, int c, int h, int w)
{
    *d = {n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
static inline cudnnStatus_t cudnnSetFilter4dDescriptor(emu_t4 *d, cudnnDataType_t, cudnnTensorFormat_t, int k, int c, int h, int w)
{
    *d = {k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
static inline cudnnStatus_t cudnnSetConvolution2dDescriptor(emu_conv *d, int ph, int pw, int u, int v, int dh, int dw,
                                                            cudnnConvolutionMode_t, cudnnDataType_t)
{
    if (dh != 1 || dw != 1) return CUDNN_STATUS_NOT_SUPPORTED;
    d->pad_h = ph;
    d->pad_w = pw;
    d->u = u;
    d->v = v;
    return CUDNN_STATUS_SUCCESS;
}
static inline cudnnStatus_t cudnnSetConvolutionGroupCount(emu_conv *d, int g) { d->groups = g; return CUDNN_STATUS_SUCCESS; }
static inline cudnnStatus_t cudnnSetConvolutionMathType(emu_conv *, cudnnMathType_t) { return CUDNN_STATUS_SUCCESS; }

static inline cudnnStatus_t emu_algo(int *got, emu_perf *perf)
{
    *got = 1;
    perf[0] = {0, CUDNN_STATUS_SUCCESS, 0.0f, 0};
    return CUDNN_STATUS_SUCCESS;
}
template <class... A> cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, A... a)
{
    auto t = std::make_tuple(a...);
    return emu_algo(std::get<5>(t), std::get<6>(t));
}
template <class... A> cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, A... a)
{
    auto t = std::make_tuple(a...);
    return emu_algo(std::get<5>(t), std::get<6>(t));
}
template <class... A> cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, A... a)
{
    auto t = std::make_tuple(a...);
    return emu_algo(std::get<5>(t), std::get<6>(t));
}

/* visits every (n, g, co, ci, oy, ox, ky, kx) with in-bounds input: f(xi, wi, yi) */
template <class F> static void emu_conv_walk(const emu_t4 *x, const emu_t4 *w, const emu_conv *c, F f)
{
    int G = c->groups, Cin = x->c, H = x->h, W = x->w, Cout = w->n, k = w->h;
    int Ho = (H + 2 * c->pad_h - k) / c->u + 1, Wo = (W + 2 * c->pad_w - w->w) / c->v + 1;
    int cig = Cin / G, cog = Cout / G;
    for (int n = 0; n < x->n; n++)
        for (int co = 0; co < Cout; co++) {
            int g = co / cog;
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int cl = 0; cl < cig; cl++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < w->w; kx++) {
                                int iy = oy * c->u - c->pad_h + ky, ix = ox * c->v - c->pad_w + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                int ci = g * cig + cl;
                                f((((size_t)n * Cin + ci) * H + iy) * W + ix,
                                  (((size_t)co * cig + cl) * k + ky) * w->w + kx,
                                  (((size_t)n * Cout + co) * Ho + oy) * Wo + ox);
                            }
        }
}

static inline void emu_scale(float *p, size_t n, float beta)
{
    for (size_t i = 0; i < n; i++) p[i] = beta != 0.0f ? beta * p[i] : 0.0f;
}

static inline cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void *alpha, emu_t4 *xd, const void *x,
                                                    emu_t4 *wd, const void *w, emu_conv *cd, int, void *, size_t,
                                                    const void *beta, emu_t4 *yd, void *y)
{
    float a = *(const float *)alpha;
    size_t ny = (size_t)yd->n * yd->c * yd->h * yd->w;
    std::vector<double> acc(ny, 0.0);
    emu_conv_walk(xd, wd, cd, [&](size_t xi, size_t wi, size_t yi) {
        acc[yi] += (double)((const float *)x)[xi] * ((const float *)w)[wi];
    });
    float *yf = (float *)y;
    emu_scale(yf, ny, *(const float *)beta);
    for (size_t i = 0; i < ny; i++) yf[i] += (float)(a * acc[i]);
    return CUDNN_STATUS_SUCCESS;
}

static inline cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void *alpha, emu_t4 *wd, const void *w,
                                                         emu_t4 *dyd, const void *dy, emu_conv *cd, int, void *,
                                                         size_t, const void *beta, emu_t4 *dxd, void *dx)
{
    (void)dyd;
    float a = *(const float *)alpha;
    size_t nx = (size_t)dxd->n * dxd->c * dxd->h * dxd->w;
    std::vector<double> acc(nx, 0.0);
    emu_conv_walk(dxd, wd, cd, [&](size_t xi, size_t wi, size_t yi) {
        acc[xi] += (double)((const float *)dy)[yi] * ((const float *)w)[wi];
    });
    float *xf = (float *)dx;
    emu_scale(xf, nx, *(const float *)beta);
    for (size_t i = 0; i < nx; i++) xf[i] += (float)(a * acc[i]);
    return CUDNN_STATUS_SUCCESS;
}

static inline cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void *alpha, emu_t4 *xd, const void *x,
                                                           emu_t4 *dyd, const void *dy, emu_conv *cd, int, void *,
                                                           size_t, const void *beta, emu_t4 *dwd, void *dw)
{
    (void)dyd;
    float a = *(const float *)alpha;
    size_t nw = (size_t)dwd->n * dwd->c * dwd->h * dwd->w;
    std::vector<double> acc(nw, 0.0);
    emu_conv_walk(xd, dwd, cd, [&](size_t xi, size_t wi, size_t yi) {
        acc[wi] += (double)((const float *)dy)[yi] * ((const float *)x)[xi];
    });
    float *wf = (float *)dw;
    emu_scale(wf, nw, *(const float *)beta);
    for (size_t i = 0; i < nw; i++) wf[i] += (float)(a * acc[i]);
    return CUDNN_STATUS_SUCCESS;
}

#endif
