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
/* Threads used by CPU ops (OpenMP and OpenBLAS). n <= 0 means all cores. Process-wide:
 * call it once at start-up, not around individual calls from concurrent threads. */
void kn_set_threads(int n);
/* The count CPU ops called from THIS thread use: its override when set, else the global. */
int kn_get_threads(void);
/* Per-thread budget: n >= 1 makes the ops called from the calling thread use at most n
 * threads (kn_parallel_for and this thread's OpenMP regions); other threads and the global
 * count are untouched. n <= 0 removes the override. Returns the previous override (0 =
 * none) so calls nest:
 *   int old = kn_set_thread_local_threads(1); ...; kn_set_thread_local_threads(old);
 * OpenBLAS has only a process-wide count: with n == 1, kn_gemm products of at most 64 rows
 * run on the calling thread (own loop; rounding differs from OpenBLAS within float
 * accuracy), larger ones still use OpenBLAS's count. Pool and OpenMP ops give the same
 * bits for any count (tests/bankrun/test_threads.c). */
int kn_set_thread_local_threads(int n);
int kn_get_thread_local_threads(void); /* 0 when the calling thread has no override */

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

/* ==== backward ops (training: MoDA adapter and selector) =============================
 * Gradients of the forward ops above, losses, point sampling and the optimiser step.
 * Convention: dx (gradient of an op's input activation) is OVERWRITTEN; gradients of
 * parameters (dw, db) are ACCUMULATED (+=) so a batch can sum into one buffer; any
 * gradient pointer may be NULL when that gradient is not wanted. All ops are
 * deterministic for a fixed thread count. Tests: tests/kernels (finite differences and
 * PyTorch autograd goldens); tolerances in kernels/README.md. */

/* Gradients of kn_attention_fwd (same q, k, v, bias, heads, Nq, Nk, d, scale).
 * dout[Nq, heads*d] (row stride heads*d). dq, dk, dv are OVERWRITTEN and use the row
 * strides of q, k, v (ldq, ldk, ldv), so a packed qkv buffer gets a packed dqkv; each may
 * be NULL. The softmax is recomputed per head (nothing saved by the forward). `scratch`
 * holds at least kn_attention_bwd_scratch(Nq, Nk) floats. dq/dk/dv must not alias
 * q/k/v/dout. */
size_t kn_attention_bwd_scratch(int Nq, int Nk);
void kn_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                      int ldq, const float *k, int ldk, const float *v, int ldv,
                      const float *bias, int heads, int Nq, int Nk, int d, float scale,
                      float *scratch);

/* Gradients of kn_layernorm2d_fwd on x[C, HW] (per-pixel statistics are recomputed with
 * the same eps). w[C] may be NULL (weight 1). dx[C, HW] overwritten; dw[C], db[C]
 * accumulated; any may be NULL. `scratch` holds 2*HW floats (per-pixel mean and rstd);
 * it may be NULL only when dw and db are both NULL (else they are left untouched). */
void kn_layernorm2d_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int C, int HW, float eps, float *scratch);

/* Gradients of kn_conv2d_fwd (same shapes and arguments). dy[Cout, Ho, Wo];
 * dx[Cin, H, W] overwritten; dw[Cout, Cin/groups, k, k] and db[Cout] accumulated; any may
 * be NULL. `scratch` holds at least kn_conv2d_scratch(Cin, H, W, k, stride, pad, groups)
 * floats (the same buffer size as the forward). */
void kn_conv2d_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                   const float *w, int Cin, int H, int W, int Cout, int k, int stride,
                   int pad, int groups, float *scratch);

/* Gradients of kn_convt2x2_fwd. dy[Cout, 2H, 2W]; dx[Cin, H, W] overwritten;
 * dw[Cin, Cout, 2, 2] and db[Cout] accumulated; any may be NULL. `scratch` holds at least
 * kn_convt2x2_bwd_scratch(H, W, Cout) floats (dy regrouped as [Cout*4, H*W]). */
size_t kn_convt2x2_bwd_scratch(int H, int W, int Cout);
void kn_convt2x2_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int Cin, int H, int W, int Cout, float *scratch);

/* ---- element-wise (in place allowed) ---- */
/* y = 1 / (1 + exp(-x)), computed without overflow for any finite x. */
void kn_sigmoid_fwd(float *y, const float *x, size_t n);
/* dx = dy * y * (1 - y), where y is the forward OUTPUT. */
void kn_sigmoid_bwd(float *dx, const float *dy, const float *y, size_t n);
/* y = a * b element-wise (its gradient is itself: da = dy*b, db = dy*a). */
void kn_mul(float *y, const float *a, const float *b, size_t n);
/* y = alpha * a + beta * b (scaled sum; b may be NULL, meaning y = alpha * a). */
void kn_axpby(float *y, float alpha, const float *a, float beta, const float *b, size_t n);

/* ---- point sampling and losses (kernels/cpu/loss.c) ---- */
/* Bilinear sampling of x[C, H, W] at P normalised points pts[P, 2] = (px, py) in [0, 1]
 * (px along W, py along H), exactly detectron2's point_sample, i.e.
 * grid_sample(x, 2*pts - 1, mode=bilinear, padding_mode=zeros, align_corners=False):
 * the sample position in pixels is (px*W - 0.5, py*H - 0.5) with pixel centres at
 * integers; corners outside the map contribute 0. out[C, P] overwritten. */
void kn_point_sample_fwd(float *out, const float *x, const float *pts, int C, int H, int W,
                         int P);
/* Gradient w.r.t. x only (points are not learned): dx[C, H, W] is ACCUMULATED (+=) from
 * dout[C, P] (a scatter, so the caller zeroes dx once per map). */
void kn_point_sample_bwd(float *dx, const float *dout, const float *pts, int C, int H,
                         int W, int P);

/* Sigmoid BCE (with logits, mean over the P points) plus Dice (smooth 1) of one mask,
 * as HQ-SAM/Mask2Former's sigmoid_ce_loss + dice_loss with num_masks folded into
 * `weight` (pass 1/num_masks):
 *   bce  = mean_i [ max(x,0) - x t + log(1 + exp(-|x|)) ]
 *   dice = 1 - (2 Σ s t + 1) / (Σ s + Σ t + 1),  s = sigmoid(x)
 * logits[P], targets[P] in [0, 1] (point-sampled ground truth). Returns
 * weight * (bce + dice). dlogits[P] (d loss / d logits, weight included) is OVERWRITTEN
 * when not NULL; parts[2] receives the unweighted (bce, dice) when not NULL. P >= 1. */
float kn_bce_dice_loss(float *dlogits, float parts[2], const float *logits,
                       const float *targets, int P, float weight);

/* Softmax cross-entropy of one sample (the selector's domain classifier):
 * loss = weight * (logsumexp(logits) - logits[label]); logits[K], 0 <= label < K.
 * dlogits[K] = weight * (softmax(logits) - onehot(label)), OVERWRITTEN when not NULL.
 * Pass weight = 1/batch for torch's F.cross_entropy (mean reduction). */
float kn_cross_entropy_loss(float *dlogits, const float *logits, int K, int label,
                            float weight);

/* Deterministic RNG for training: splitmix64 (Steele, Lea, Flood 2014). The state is
 * any uint64 (seed it with the run's seed); every call advances it by 0x9E3779B97F4A7C15
 * and returns the mixed value. kn_rng_uniform returns the top 24 bits / 2^24, a float in
 * [0, 1). Same seed, same sequence on every platform. */
uint64_t kn_rng_next(uint64_t *state);
float kn_rng_uniform(uint64_t *state);

/* Uncertainty point selection (detectron2's get_uncertain_point_coords_with_randomness
 * with uncertainty = -|logit|), on one logit map logits[H, W]:
 *   M = P * oversample candidate points, uniform in [0,1)^2 from the RNG (x then y per
 *   point); their logits by kn_point_sample_fwd; the n_imp = (int)(importance * P) most
 *   uncertain candidates (ties: lower candidate index first), kept in candidate order;
 *   then P - n_imp fresh uniform points from the RNG.
 * pts[P, 2] overwritten (layout of kn_point_sample_fwd). `scratch` holds at least
 * kn_uncertain_points_scratch(P, oversample) floats. Returns 0, or -1 when an argument
 * is out of range (P < 1, oversample < 1, importance outside [0, 1]). */
size_t kn_uncertain_points_scratch(int P, int oversample);
int kn_uncertain_points(float *pts, const float *logits, int H, int W, int P, int oversample,
                        float importance, uint64_t *rng, float *scratch);

/* ---- optimiser (kernels/cpu/bwd_optim.c) ---- */
/* One Adam step on n parameters, exactly torch.optim.Adam (amsgrad off):
 *   g' = g + weight_decay * p;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2;
 *   p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).
 * step is 1 for the first update. p, m, v updated in place (m, v start at 0); g borrowed.
 * Element-wise, so deterministic under any threading. */
void kn_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step);

/* ---- decoder ops (SAM mask decoder; kernels/cpu/transpose.c, gelu_fast.c, softmax_fast.c,
 *      layernorm_gelu_fast.c, gelu_linear.c, layernorm_add_fast.c) */
/* y[cols, rows] = x[rows, cols]ᵀ. Bit-exact data movement. No aliasing. */
void kn_transpose(float *y, const float *x, int rows, int cols);
/* GELU, erf form like kn_gelu_fwd, with a vectorisable erf: absolute error
 * ≤ 2e-7 · max(1, |x|) against the exact value. In place allowed. */
void kn_gelu_fast_fwd(float *y, const float *x, size_t n);
/* Row softmax like kn_softmax_fwd with a vectorised exp: relative error per element
 * ≤ 1e-6 + 1e-10·cols beyond the float rounding of x − max. y[rows, cols]; in place allowed. */
void kn_softmax_fast_fwd(float *y, const float *x, int rows, int cols);
/* Softmax over dim 0: for every column c, y[:, c] = softmax(x[:, c]) over the rows of
 * x[rows, cols]; same accuracy (with rows as the length); in place allowed. */
void kn_softmax_dim0_fast_fwd(float *y, const float *x, int rows, int cols);
/* Row LayerNorm (as kn_layernorm_fwd but float accumulation: error grows with |mean|/std)
 * then GELU (as kn_gelu_fast_fwd): y[N,C] = gelu((x - mean) * rstd * w + b). In place
 * allowed. */
void kn_layernorm_gelu_fast_fwd(float *y, const float *x, const float *w, const float *b, int N,
                                int C, float eps);
/* Gradient of kn_layernorm_gelu_fast_fwd (same x = the LayerNorm INPUT, w, b, N, C, eps; the
 * statistics and the GELU input are recomputed; GELU' from the same erf/exp, ≤ 3e-7·max(1,u²)
 * absolute). dx[N,C] overwritten (may alias dy); dw[C], db[C] accumulated, either may be
 * NULL. scratch holds kn_layernorm_gelu_bwd_scratch(N, C) floats. Same result for any
 * thread count. */
size_t kn_layernorm_gelu_bwd_scratch(int N, int C);
void kn_layernorm_gelu_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *b, int N, int C, float eps,
                           float *scratch);
/* Channel-major, G groups: y[g, O, N] = W[O, K] · gelu(x[g, K, N] + b[K]) for g < G (b may be
 * NULL; GELU as kn_gelu_fast_fwd; activations never stored). For small K and 1 ≤ O ≤ 16.
 * No aliasing. */
void kn_gelu_linear_fwd(float *y, const float *x, const float *b, const float *W, int G, int K,
                        int N, int O);
/* Row LayerNorm y[N,C] = (x - mean) * rstd * w + b (float accumulation) and, when y2 is not
 * NULL, y2 = y + a[N,C] in the same pass. In place allowed for y == x; y2 aliases nothing. */
void kn_layernorm_add_fast_fwd(float *y, float *y2, const float *a, const float *x,
                               const float *w, const float *b, int N, int C, float eps);

/* ---- TinyViT / encoder ops (kernels/cpu/gemm_pk.c, dwconv.c, winattn.c) -------------
 * Inference-only fast paths for the image encoders. Maps are channel-last ([H, W, C] =
 * token-major [H*W, C]) unless an op says otherwise. */

/* Runs fn(ctx, i, tid) for every i in [0, n) on up to min(max_threads, kn_get_threads())
 * threads (kernels/cpu/pool.c); tid in [0, that count) indexes per-thread scratch, the
 * caller is tid 0. Items are claimed dynamically and the caller never waits for a worker
 * that has not started (robust on a machine shared with other busy processes). Calls made
 * from inside fn run serially on that thread; calls from inside an OpenMP parallel region
 * run serially with tid = omp_get_thread_num() (must then be < max_threads when tid
 * indexes scratch). Returns when every item is done. */
#define KN_POOL_ANY 64
void kn_parallel_for(int n, int max_threads, void (*fn)(void *ctx, int i, int tid), void *ctx);

#define KN_PK_NR 32 /* output columns per packed weight panel */
enum { KN_ACT_NONE = 0, KN_ACT_GELU = 1 /* erf GELU, vectorised: ≤ 4e-7·max(1,|x|) abs */ };

/* Floats needed to pack a weight W[N, K] for kn_linear_pk_fwd. */
size_t kn_pack_size(int N, int K);
/* Packs W[N, K] (PyTorch [out, in]) into dst (kn_pack_size floats, 64-byte aligned). */
void kn_pack_w(float *dst, const float *W, int N, int K);
/* y[M, N] = act(x[M, K] · Wᵀ + b[N] + res[M, N]) with Wp = kn_pack_w(W). Row strides
 * ldy, ldx, ldr (floats). b and res may be NULL. res may alias y when ldr == ldy (in-place
 * residual); otherwise outputs never alias inputs. */
void kn_linear_pk_fwd(float *y, int ldy, const float *x, int ldx, const float *Wp,
                      const float *b, const float *res, int ldr, int M, int N, int K, int act);

/* kn_linear_pk_fwd on LayerNorm(x) (per row over K, as kn_layernorm_fwd with ln_w, ln_b,
 * eps), computed per row block inside the GEMM: x is not modified and no LN map is
 * written. Returns 0, or -1 when ln_w/ln_b is NULL or K > KN_PK_LN_MAXK. */
#define KN_PK_LN_MAXK 1024
int kn_linear_pk_ln_fwd(float *y, int ldy, const float *x, int ldx, const float *ln_w,
                        const float *ln_b, float eps, const float *Wp, const float *b,
                        const float *res, int ldr, int M, int N, int K, int act);
/* Transformer MLP with pre-LayerNorm, one 96-row block at a time so the hidden rows stay
 * in the thread's cache: y[M, C] = res + fc2(GELU(fc1(LN(x)))), fc1 W1p = kn_pack_w of
 * [Hd, C], fc2 W2p of [C, Hd]; x, res, y row stride C; y may alias x and/or res (each
 * row block is read before it is written). scratch holds scratch_threads slices of
 * kn_mlp_pk_scratch(C, Hd) floats; the op uses at most that many threads. Returns 0, or
 * -1 on a NULL LayerNorm / scratch or bad sizes. */
size_t kn_mlp_pk_scratch(int C, int Hd);
int kn_mlp_pk_fwd(float *y, const float *x, const float *ln_w, const float *ln_b, float eps,
                  const float *W1p, const float *b1, const float *W2p, const float *b2,
                  const float *res, int M, int C, int Hd, float *scratch, int scratch_threads);
/* Dense 3×3 conv, pad 1, on x[H, W, C] as an implicit GEMM, output rows [oy0, oy0+noy):
 * y[noy*Wo, N] (row stride ldy) = act(conv + b). Wp = kn_pack_w of the weight reordered to
 * [N][ky][kx][C] (K = 9*C). Wo as for kn_dwconv3_nhwc_fwd; C ≤ 4096 for the fast path. */
void kn_conv3_pk_fwd(float *y, int ldy, const float *x, int H, int W, int C, int stride,
                     int oy0, int noy, const float *Wp, const float *b, int N, int act);
/* Weight gradient of kn_conv3_pk_fwd with stride 1 on the whole map (oy0 = 0, noy = H):
 * dw[N, C, 3, 3] (PyTorch conv layout) += Σ_p dy[p, n] · x[p + tap offset, c] and db[N] +=
 * Σ_p dy[p, n]; either may be NULL. x[H, W, C], dy[H*W, N], both channel-last. scratch
 * holds kn_conv3_pk_wgrad_scratch(H, W, C, N) floats (a zero-padded channel-major copy of x
 * and per-band partial sums). Same result for any thread count. The input gradient is
 * kn_conv3_pk_fwd itself on dy with the weight transposed and flipped
 * (w'[c][ky][kx][n] = w[n][c][2-ky][2-kx]). */
size_t kn_conv3_pk_wgrad_scratch(int H, int W, int C, int N);
void kn_conv3_pk_wgrad(float *dw, float *db, const float *dy, const float *x, int H, int W,
                       int C, int N, float *scratch);
/* C[M, N] = A[M, K] · B[K, N] (acc == 0) or C += A · B (acc != 0); A, B, C row-major with
 * row strides lda, ldb, ldc, read in place (no packing; for long K, e.g. weight gradients
 * over all pixels). Every C element is summed over K in the same order on any thread
 * count. No aliasing of C with A or B. */
void kn_gemm_nn_pk(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int M,
                   int N, int K, int acc);
/* Depthwise 3×3 conv, pad 1: y[Ho, Wo, C] = act(b[c] + Σ w9c[ky*3+kx, c] · x[...]),
 * Ho = (H-1)/stride + 1 (same for W). w9c is [9, C] (tap-major); b may be NULL. */
void kn_dwconv3_nhwc_fwd(float *y, const float *x, const float *w9c, const float *b, int H,
                         int W, int C, int stride, int act);
/* One output row of kn_dwconv3_nhwc_fwd: y[Wo, C] from the input rows r0, r1, r2 ([W, C]
 * each; the rows oy*stride-1 .. oy*stride+1), any of which may be NULL (zero padding). */
void kn_dwconv3_row_nhwc(float *y, const float *r0, const float *r1, const float *r2,
                         const float *w9c, const float *b, int W, int C, int stride, int act);
/* 3×3 pad-1 im2col of the output rows [oy0, oy0+noy): col[noy*Wo, 9*C], column
 * (ky*3+kx)*C + c; zeros outside the map. _nhwc reads x[H, W, C]; _chw reads x[C, H, W].
 * Wo as for kn_dwconv3_nhwc_fwd. */
void kn_im2col3_nhwc(float *col, const float *x, int H, int W, int C, int stride, int oy0,
                     int noy);
void kn_im2col3_chw(float *col, const float *x, int C, int H, int W, int stride, int oy0,
                    int noy);

/* TinyViT windowed attention. qkv[H*W, 3*heads*d] in image order, per head h the columns
 * [h*3d, h*3d+d) = q, then k, then v. The map is padded bottom/right to multiples of ws;
 * a pad position uses the row padrow[3*heads*d] and is a key like any other (not masked).
 * logits[h,i,j] = scale · q_i·k_j + bias[h, i, j] (bias [heads, ws², ws²] or NULL), i, j
 * window positions in row-major order; out[p, h*d + c] (row stride ldo) = softmax · v for
 * every real position p (pad outputs are dropped). With proj_wp (kn_pack_w of the output
 * projection [C, C], C = heads*d) instead out[p] += attention(p) · Wᵀ + proj_b (residual
 * form, in place; proj_b may be NULL). scratch holds scratch_threads slices of
 * kn_winattn_scratch(heads, d, ws) floats; the op uses at most that many threads.
 * Returns 0, or -1 when ws² > KN_WINATTN_MAXN or an argument is invalid. */
#define KN_WINATTN_MAXN 256
size_t kn_winattn_scratch(int heads, int d, int ws);
int kn_winattn_fwd(float *out, int ldo, const float *qkv, const float *padrow,
                   const float *bias, int H, int W, int heads, int d, int ws, float scale,
                   const float *proj_wp, const float *proj_b, float *scratch,
                   int scratch_threads);

/* ---- ViT ops (SAM ViT-B/L/H encoder; kernels/cpu/relpos_attn.c) ---------------------- */

/* Query rows per task of kn_relpos_attention_fwd (bounds one logits block). */
#define KN_RELPOS_ROWS 256
/* Floats of scratch kn_relpos_attention_fwd needs for these sizes on `threads` threads:
 * packed K and Vᵀ of every window×head plus one logits block per thread (ViT-B windowed:
 * ~8.6 M floats; global: ~8.4 M). */
size_t kn_relpos_attention_scratch(int nwin, int S, int heads, int d, int threads);
/* Attention with decomposed relative position (official SAM ViT), per window and head.
 * qkv[nwin, S*S, 3*C], C = heads*d, each token row [q | k | v], head h at columns h*d of
 * each part; tokens row-major in the S×S window. rel_h, rel_w [2S−1, d].
 * logits[i, j] = scale·q_i·k_j + q_i·rel_h[ih−jh+S−1] + q_i·rel_w[iw−jw+S−1] (the rel-pos
 * terms use the UNSCALED q), i = ih*S+iw, j = jh*S+jw; no masking.
 * out[nwin, S*S, C] (head h at columns h*d) = softmax_j(logits) · v. Runs on `threads`
 * OpenMP threads (the count the scratch was sized for); result independent of it. */
void kn_relpos_attention_fwd(float *out, const float *qkv, const float *rel_h,
                             const float *rel_w, int nwin, int S, int heads, int d, float scale,
                             float *scratch, int threads);
/* Window partition (kernels/cpu/window.c): x[H*W, C] (token t = r*W + c) -> win[nwy*nwx,
 * S*S, C], nwy = ceil(H/S), nwx = ceil(W/S), windows row-major and tokens row-major inside;
 * tokens of the bottom/right pad are zeros. */
void kn_window_partition(float *win, const float *x, int H, int W, int C, int S);
/* Inverse of kn_window_partition, accumulated: x[t] += win[slot(t)] for every real token
 * (pad tokens dropped). */
void kn_window_unpartition_add(float *x, const float *win, int H, int W, int C, int S);

#endif
