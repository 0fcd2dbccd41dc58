/* kn.h — the one kernel API shared by inference and training.
 *
 * Every op has a CPU reference in kernels/cpu/ (plain, deterministic C; OpenBLAS for
 * GEMM, OpenMP for the loops) and, where built, a CUDA version in kernels/cuda/ with the
 * same semantics. kernels/README.md keeps the op table (op, fwd/bwd, cpu, cuda, tolerance,
 * test). Pointers are float32 host memory unless an op says otherwise; all shapes are
 * row-major and written in the comment of each op. Outputs never alias inputs unless the
 * op says "in place allowed". Ops do not allocate unless they say so; scratch buffers are
 * passed in by the caller (arena-owned).
 *
 * Layouts: token tensors are [N, C] (token-major); image tensors are [C, H, W] for one
 * image; a batch is a leading dimension the caller loops over unless an op takes B.
 */
#ifndef MODA_KN_H
#define MODA_KN_H

#include <stddef.h>
#include <stdint.h>

/* ---- runtime ------------------------------------------------------------------------ */

typedef enum { KN_DEV_CPU = 0, KN_DEV_CUDA = 1 } kn_device_t;

/* Number of usable CUDA devices: 0 when the build has no CUDA or no GPU is present
 * (cudaGetDeviceCount failing, e.g. code 35, counts as 0). Never fails. */
int kn_cuda_device_count(void);
/* True when this build contains the CUDA kernels. */
int kn_have_cuda_build(void);
/* Threads used by CPU ops (OpenMP and OpenBLAS). n <= 0 means all cores. */
void kn_set_threads(int n);
int kn_get_threads(void);

/* ---- GEMM --------------------------------------------------------------------------- */

/* C[M,N] = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X or Xᵀ (ta/tb != 0).
 * lda/ldb/ldc are row strides of A, B, C as stored. */
void kn_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* y[N,O] = x[N,K] · W[O,K]ᵀ + b[O]. b may be NULL. (PyTorch nn.Linear layout.) */
void kn_linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int K,
                   int O);
/* Gradients of kn_linear_fwd. dx[N,K] is overwritten; dW[O,K] and db[O] are ACCUMULATED
 * (+=). Any of dx, dW, db may be NULL. */
void kn_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                   const float *W, int N, int K, int O);

/* ---- normalisation ------------------------------------------------------------------ */

/* Row LayerNorm over C: y[N,C] = (x - mean) * rstd * w + b. mean[N], rstd[N] are written
 * when not NULL (saved for backward). In place allowed (y == x). */
void kn_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, int N, int C, float eps);
/* dx[N,C] overwritten; dw[C], db[C] accumulated; any may be NULL. */
void kn_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                      const float *mean, const float *rstd, const float *w, int N, int C);
/* LayerNorm2d on a [C, HW] map: normalises over C at every pixel. In place allowed. */
void kn_layernorm2d_fwd(float *y, const float *x, const float *w, const float *b, int C,
                        int HW, float eps);

/* ---- activations (element-wise, in place allowed) ----------------------------------- */

void kn_gelu_fwd(float *y, const float *x, size_t n); /* exact: 0.5 x (1 + erf(x/√2)) */
void kn_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
void kn_relu_fwd(float *y, const float *x, size_t n);
void kn_relu_bwd(float *dx, const float *dy, const float *x, size_t n);
/* y = a + b (in place allowed on either). */
void kn_add(float *y, const float *a, const float *b, size_t n);

/* Row softmax over cols: y[rows, cols]. In place allowed. */
void kn_softmax_fwd(float *y, const float *x, int rows, int cols);
/* dx = y * (dy - sum(dy * y)) per row; y is the forward output. */
void kn_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols);

/* ---- convolutions (one image, [C, H, W]) -------------------------------------------- */

/* y[Cout, Ho, Wo] = conv(x[Cin, H, W], w[Cout, Cin/groups, k, k]) + b[Cout] (b may be
 * NULL). Ho = (H + 2 pad - k) / stride + 1. `scratch` holds at least
 * kn_conv2d_scratch(...) floats (im2col); may be NULL when that is 0. */
size_t kn_conv2d_scratch(int Cin, int H, int W, int k, int stride, int pad, int groups);
void kn_conv2d_fwd(float *y, const float *x, const float *w, const float *b, int Cin, int H,
                   int W, int Cout, int k, int stride, int pad, int groups, float *scratch);

/* Transposed conv, kernel 2 stride 2: y[Cout, 2H, 2W] from x[Cin, H, W];
 * w[Cin, Cout, 2, 2] (PyTorch ConvTranspose2d layout), b[Cout] may be NULL. */
void kn_convt2x2_fwd(float *y, const float *x, const float *w, const float *b, int Cin,
                     int H, int W, int Cout);

/* ---- attention ---------------------------------------------------------------------- */

/* Multi-head attention on token-major tensors, heads interleaved in channels:
 * q[Nq, heads*d], k[Nk, heads*d], v[Nk, heads*d] with row strides ldq, ldk, ldv (floats);
 * out[Nq, heads*d] (row stride heads*d).
 * logits[h,i,j] = scale * q_h[i]·k_h[j] + (bias ? bias[h*Nq*Nk + i*Nk + j] : 0);
 * out_h = softmax(logits) · v_h. scratch holds at least Nq*Nk floats. */
void kn_attention_fwd(float *out, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, const float *bias, int heads, int Nq, int Nk,
                      int d, float scale, float *scratch);

#endif
