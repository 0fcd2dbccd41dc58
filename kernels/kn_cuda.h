/* kn_cuda.h — the CUDA backend of kn.h: the same ops on DEVICE pointers (prefix kcu_).
 *
 * Every kcu_<op> computes what kn_<op> in kernels/cpu/ computes (named in each comment),
 * with the same argument order and shapes; the differences are:
 *   - the first argument is a context (kcu_ctx_t: CUDA stream, cuBLAS and cuDNN handles,
 *     a device memory arena and an internal workspace); ops are asynchronous on its stream;
 *   - every float pointer is DEVICE memory (from kcu_alloc or any cudaMalloc'd block);
 *   - ops take no scratch argument: scratch comes from the context's workspace, which grows
 *     on demand (growing synchronises the stream once);
 *   - where the CPU op takes a packed layout (kn_pack_w, w9c) the CUDA op takes the plain
 *     PyTorch layout, written in its comment;
 *   - ops return int: 0, ERR_INVALID (bad argument; nothing launched) or ERR_DEVICE (a
 *     launch, cuBLAS or cuDNN failure). The message is kept in the context (kcu_errmsg) and
 *     the first failure is sticky: kcu_sync reports it.
 * Losses return their value in DEVICE memory (so no op synchronises); kcu_sync + kcu_download
 * to read them.
 *
 * Accuracy against the CPU op (tests/gpu, tolerances in kernels/README.md): element-wise ops
 * 1e-5, reductions 1e-5 relative, GEMM-based ops 2e-3 relative with TF32 (KCU_TF32, the
 * default) and 1e-5 without.
 *
 * Builds without CUDA (WITH_CUDA=OFF or no nvcc) link kernels/cuda_stub.c, which provides
 * kcu_device_probe (0 devices), kcu_ctx_new (NULL, "built without CUDA"), kcu_ctx_destroy
 * and kcu_errmsg; code calling other kcu_ ops must be compiled under MODA_HAVE_CUDA.
 */
#ifndef MODA_KN_CUDA_H
#define MODA_KN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices and contexts ------------------------------------------------------------- */

/* Number of CUDA devices (0 on failure or in a build without CUDA). When it is 0 and `why`
 * is not NULL, why[why_len] receives the reason in one line, e.g.
 * "cudaGetDeviceCount: code 35 (CUDA driver version is insufficient ...)" or
 * "built without CUDA". Never fails. */
int kcu_device_probe(char *why, size_t why_len);

typedef struct kcu_ctx kcu_ctx_t;

enum {
    KCU_TF32 = 1, /* GEMMs and convolutions may use TF32 tensor cores (fp32 accumulation) */
};

/* A context on device `device` with a device arena of arena_bytes (0 = none; kcu_alloc
 * then fails) and flags (KCU_TF32 or 0). Creates a non-blocking stream, a cuBLAS and a
 * cuDNN handle bound to it. Returns NULL and fills err (ERR_DEVICE: no device, driver or
 * library failure; ERR_NOMEM: the arena does not fit). Caller owns result. */
kcu_ctx_t *kcu_ctx_new(int device, size_t arena_bytes, int flags, err_t *err);
/* Waits for the stream, frees everything the context owns (arena, workspace, handles) and
 * sets *ctx to NULL. NULL or *ctx == NULL is a no-op. */
void kcu_ctx_destroy(kcu_ctx_t **ctx);
/* The context's cudaStream_t (as void * so C code needs no CUDA headers). Borrowed. */
void *kcu_stream(kcu_ctx_t *ctx);
/* Turns TF32 math on or off for later ops. */
void kcu_set_tf32(kcu_ctx_t *ctx, int on);
/* 1 when TF32 math is on (so a module that needs plain fp32 can restore the setting). */
int kcu_get_tf32(const kcu_ctx_t *ctx);
/* Waits for every op queued on the stream. Returns 0, or the first (sticky) error of the
 * context or of the wait (ERR_DEVICE), with its message in err. Clears the sticky error. */
int kcu_sync(kcu_ctx_t *ctx, err_t *err);
/* The message of the last failure ("" when none). Valid until the next call on ctx. */
const char *kcu_errmsg(const kcu_ctx_t *ctx);

/* ---- arena: weights once, activations per frame ---------------------------------------- *
 * kcu_alloc bumps a pointer in the arena (256-byte aligned). Typical use: allocate and
 * upload the weights, m = kcu_mark(); then per frame kcu_reset(ctx, m) and allocate the
 * activations again (same sizes → same addresses). Returns NULL (ERR_NOMEM in the context)
 * when the arena is full. Memory is valid until a kcu_reset below it or kcu_ctx_destroy. */
void *kcu_alloc(kcu_ctx_t *ctx, size_t bytes);
float *kcu_allocf(kcu_ctx_t *ctx, size_t n);
size_t kcu_mark(const kcu_ctx_t *ctx);
/* Frees everything allocated after `mark`. Does not wait for the stream: ops already queued
 * still finish before later ops reuse the memory (one stream). */
void kcu_reset(kcu_ctx_t *ctx, size_t mark);
size_t kcu_arena_used(const kcu_ctx_t *ctx);
size_t kcu_arena_size(const kcu_ctx_t *ctx);

/* Host → device copy of bytes (src is host memory; the call returns when src may be
 * reused). Device → host copy waits for the stream first. kcu_zero sets bytes to 0 (async).
 * kcu_copy is device → device (async). Return 0 or ERR_DEVICE. */
int kcu_upload(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes);
int kcu_download(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes);
int kcu_zero(kcu_ctx_t *ctx, void *dst, size_t bytes);
int kcu_copy(kcu_ctx_t *ctx, void *dst, const void *src, size_t bytes);
/* kcu_allocf(n) + kcu_upload of src[n]. NULL on failure (message in the context). */
float *kcu_upload_new(kcu_ctx_t *ctx, const float *src, size_t n);

/* ---- GEMM and linear (cuBLAS) ------------------------------------------------------------ */

/* kn_gemm: C[M,N] = alpha op(A) op(B) + beta C, row-major with row strides lda, ldb, ldc. */
int kcu_gemm(kcu_ctx_t *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* kn_gemm for `batch` independent problems, each operand `strideX` floats after the last. */
int kcu_gemm_batched(kcu_ctx_t *ctx, int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long strideA, const float *B, int ldb,
                     long long strideB, float beta, float *C, int ldc, long long strideC,
                     int batch);
/* kn_linear_fwd: y[N,O] = x[N,K] · W[O,K]ᵀ + b[O] (b may be NULL). */
int kcu_linear_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *W, const float *b,
                   int N, int K, int O);
/* kn_linear_bwd: dx[N,K] overwritten, dW[O,K] and db[O] accumulated; any may be NULL. */
int kcu_linear_bwd(kcu_ctx_t *ctx, float *dx, float *dW, float *db, const float *dy,
                   const float *x, const float *W, int N, int K, int O);
enum { KCU_ACT_NONE = 0, KCU_ACT_GELU = 1 /* exact erf GELU */ };
/* kn_linear_pk_fwd with the plain weight W[N, K]: y[M, N] = act(x[M, K] Wᵀ + b + res)
 * with row strides ldy, ldx, ldr. b and res may be NULL; res may alias y (ldr == ldy). */
int kcu_linear_ex(kcu_ctx_t *ctx, float *y, int ldy, const float *x, int ldx, const float *W,
                  const float *b, const float *res, int ldr, int M, int N, int K, int act);

/* ---- normalisation ------------------------------------------------------------------------ */

/* kn_layernorm_fwd: rows of x[N,C]; mean[N], rstd[N] written when not NULL; w, b may be
 * NULL (1, 0). In place allowed. */
int kcu_layernorm_fwd(kcu_ctx_t *ctx, float *y, float *mean, float *rstd, const float *x,
                      const float *w, const float *b, int N, int C, float eps);
/* kn_layernorm_bwd (mean, rstd from the forward): dx overwritten, dw, db accumulated. */
int kcu_layernorm_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                      const float *x, const float *mean, const float *rstd, const float *w,
                      int N, int C);
/* kn_layernorm2d_fwd on x[C, HW] (over C per pixel). In place allowed. */
int kcu_layernorm2d_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                        const float *b, int C, int HW, float eps);
/* kn_layernorm2d_bwd: dx overwritten; dw, db accumulated; w may be NULL. */
int kcu_layernorm2d_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                        const float *x, const float *w, int C, int HW, float eps);
/* kn_layernorm_add_fast_fwd: y = LN(x); y2 = y + a when y2 is not NULL. */
int kcu_layernorm_add_fwd(kcu_ctx_t *ctx, float *y, float *y2, const float *a, const float *x,
                          const float *w, const float *b, int N, int C, float eps);
/* kn_layernorm_gelu_fast_fwd: y = gelu(LN(x)). In place allowed. */
int kcu_layernorm_gelu_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                           const float *b, int N, int C, float eps);

/* ---- element-wise (in place allowed) ------------------------------------------------------ */

int kcu_gelu_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n);
int kcu_gelu_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *x, size_t n);
int kcu_relu_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n);
int kcu_relu_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *x, size_t n);
int kcu_sigmoid_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n);
/* y is the forward output, as kn_sigmoid_bwd. */
int kcu_sigmoid_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *y, size_t n);
int kcu_add(kcu_ctx_t *ctx, float *y, const float *a, const float *b, size_t n);
int kcu_mul(kcu_ctx_t *ctx, float *y, const float *a, const float *b, size_t n);
/* y = alpha a + beta b; b may be NULL (y = alpha a). */
int kcu_axpby(kcu_ctx_t *ctx, float *y, float alpha, const float *a, float beta,
              const float *b, size_t n);
/* kn_softmax_fwd / kn_softmax_bwd: rows of [rows, cols]. */
int kcu_softmax_fwd(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols);
int kcu_softmax_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *y, int rows,
                    int cols);
/* kn_softmax_dim0_fast_fwd: softmax over the rows of every column. In place allowed. */
int kcu_softmax_dim0_fwd(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols);
/* kn_transpose: y[cols, rows] = x[rows, cols]ᵀ (batch of `batch` matrices, contiguous). */
int kcu_transpose(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols, int batch);
/* kn_gelu_linear_fwd: y[g, O, N] = W[O, K] · gelu(x[g, K, N] + b[K]). */
int kcu_gelu_linear_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *b,
                        const float *W, int G, int K, int N, int O);

/* ---- convolutions (images [B, C, H, W]; B = 1 is the CPU op) ----------------------------- */

/* kn_conv2d_fwd by cuDNN for B images: y[B, Cout, Ho, Wo], w[Cout, Cin/groups, k, k], b
 * may be NULL. */
int kcu_conv2d_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w, const float *b,
                   int B, int Cin, int H, int W, int Cout, int k, int stride, int pad,
                   int groups);
/* kn_conv2d_bwd by cuDNN: dx overwritten; dw, db accumulated; any may be NULL. */
int kcu_conv2d_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                   const float *x, const float *w, int B, int Cin, int H, int W, int Cout,
                   int k, int stride, int pad, int groups);
/* kn_convt2x2_fwd: y[B, Cout, 2H, 2W] from x[B, Cin, H, W], w[Cin, Cout, 2, 2]. */
int kcu_convt2x2_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w, const float *b,
                     int B, int Cin, int H, int W, int Cout);
/* kn_convt2x2_bwd (one image): dx overwritten; dw, db accumulated. */
int kcu_convt2x2_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                     const float *x, const float *w, int Cin, int H, int W, int Cout);
/* kn_dwconv3_nhwc_fwd on B maps: y[B, Ho, Wo, C] = act(b + depthwise 3×3 pad 1 of
 * x[B, H, W, C]); w is PyTorch's [C, 1, 3, 3]; b may be NULL. */
int kcu_dwconv3_nhwc_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                         const float *b, int B, int H, int W, int C, int stride, int act);
/* Dense 3×3 pad-1 conv on channel-last maps (kn_conv3_pk_fwd over all rows, B maps):
 * y[B, Ho*Wo, N] = act(conv(x[B, H, W, C]) + b); w is PyTorch's [N, C, 3, 3]. */
int kcu_conv3_nhwc_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                       const float *b, int B, int H, int W, int C, int N, int stride, int act);

/* ---- attention (flash style: per query row an online softmax; no Nq×Nk matrix) ---------- */

/* kn_attention_fwd: q[Nq, heads*d], k, v [Nk, heads*d] with row strides; bias
 * [heads, Nq, Nk] or NULL; out[Nq, heads*d]. d ≤ 128. */
int kcu_attention_fwd(kcu_ctx_t *ctx, float *out, const float *q, int ldq, const float *k,
                      int ldk, const float *v, int ldv, const float *bias, int heads, int Nq,
                      int Nk, int d, float scale);
/* kn_attention_bwd: dq, dk, dv overwritten with the strides of q, k, v; any may be NULL.
 * The softmax statistics are recomputed (two passes over the keys per query row). */
int kcu_attention_bwd(kcu_ctx_t *ctx, float *dq, float *dk, float *dv, const float *dout,
                      const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                      const float *bias, int heads, int Nq, int Nk, int d, float scale);
/* kn_winattn_fwd for B maps (qkv[B, H*W, 3*heads*d], out[B, H*W, ldo]): windows padded with
 * padrow, TinyViT bias table bias[heads, ws², ws²] (or NULL). With proj_w (PyTorch
 * [C, C]) out += attention · proj_wᵀ + proj_b (in place), else out = attention. d ≤ 128,
 * ws² ≤ 1024. */
int kcu_winattn_fwd(kcu_ctx_t *ctx, float *out, int ldo, const float *qkv, const float *padrow,
                    const float *bias, int B, int H, int W, int heads, int d, int ws,
                    float scale, const float *proj_w, const float *proj_b);
/* kn_relpos_attention_fwd: qkv[nwin, S*S, 3C], rel_h, rel_w [2S−1, d], out[nwin, S*S, C]. */
int kcu_relpos_attention_fwd(kcu_ctx_t *ctx, float *out, const float *qkv, const float *rel_h,
                             const float *rel_w, int nwin, int S, int heads, int d,
                             float scale);
/* kn_window_partition for B maps: x[B, H*W, C] -> win[B*nwy*nwx, S*S, C] (zero pad tokens;
 * the windows of map b after those of map b−1). kernels/cuda/window.cu. */
int kcu_window_partition(kcu_ctx_t *ctx, float *win, const float *x, int B, int H, int W, int C,
                         int S);
/* kn_window_unpartition_add for B maps: x[B, H*W, C] += the real tokens of win. */
int kcu_window_unpartition_add(kcu_ctx_t *ctx, float *x, const float *win, int B, int H, int W,
                               int C, int S);

/* ---- training: point sampling, losses, optimiser ---------------------------------------- */

/* kn_point_sample_fwd: out[C, P] from x[C, H, W] at pts[P, 2] (device). */
int kcu_point_sample_fwd(kcu_ctx_t *ctx, float *out, const float *x, const float *pts, int C,
                         int H, int W, int P);
/* kn_point_sample_bwd: dx[C, H, W] ACCUMULATED (atomic adds: order not fixed). */
int kcu_point_sample_bwd(kcu_ctx_t *ctx, float *dx, const float *dout, const float *pts, int C,
                         int H, int W, int P);
/* kn_bce_dice_loss: out3[3] (device) = (weight·(bce+dice), bce, dice); dlogits[P] written
 * when not NULL. Double accumulation, one block: deterministic. */
int kcu_bce_dice_loss(kcu_ctx_t *ctx, float *out3, float *dlogits, const float *logits,
                      const float *targets, int P, float weight);
/* kn_cross_entropy_loss for B samples: logits[B, K], labels[B] (HOST ints, copied),
 * out[B] (device) losses, dlogits[B, K] written when not NULL. */
int kcu_cross_entropy_loss(kcu_ctx_t *ctx, float *out, float *dlogits, const float *logits,
                           int B, int K, const int *labels, float weight);
/* kn_uncertain_points on the device: logits[H, W] (device) → pts[P, 2] (device, overwritten).
 * The random numbers come from the HOST rng, drawn in exactly kn_uncertain_points's order
 * (2·M candidate coordinates, M = P·oversample, then 2·(P − n_imp) fresh ones) and uploaded,
 * so for the same rng state the GPU picks exactly the CPU's points (its point sampling rounds
 * like the CPU's) and leaves *rng in the same state; on an error *rng is unchanged. Uses the
 * workspace. ERR_INVALID for the arguments kn_uncertain_points refuses (and for P·oversample
 * > INT_MAX/4). kernels/cuda/points.cu. */
int kcu_uncertain_points(kcu_ctx_t *ctx, float *pts, const float *logits, int H, int W, int P,
                         int oversample, float importance, uint64_t *rng);
/* kn_adam_step on device p, g, m, v. */
int kcu_adam_step(kcu_ctx_t *ctx, float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int step);

#ifdef __cplusplus
}
#endif

#endif
