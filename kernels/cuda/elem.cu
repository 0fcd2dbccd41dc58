/* elem.cu — element-wise ops, LayerNorm/LayerNorm2d (fwd+bwd and the decoder's fused
 * variants), softmax (rows and dim 0), transpose, the decoder's GELU-linear, point sampling,
 * BCE+Dice and cross-entropy losses and the Adam step. CPU references: kernels/cpu/act.c,
 * bwd_elem.c, norm.c, bwd_norm.c, softmax_fast.c, transpose.c, gelu_linear.c,
 * layernorm_add_fast.c, layernorm_gelu_fast.c, loss.c, bwd_optim.c. */
#include "kcu_internal.cuh"

#include <math.h>

#define GRID_LOOP(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                     \
         i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float gelu_exact(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ---- element-wise ------------------------------------------------------------------------- */

enum { E_GELU, E_GELU_B, E_RELU, E_RELU_B, E_SIG, E_SIG_B, E_ADD, E_MUL, E_AXPBY, E_SCALE };

__global__ void k_elem(int kind, float *y, const float *a, const float *b, float alpha,
                       float beta, size_t n)
{
    GRID_LOOP(i, n)
    {
        float x = a[i], r;
        switch (kind) {
        case E_GELU: r = gelu_exact(x); break;
        case E_GELU_B: { /* a = dy, b = x */
            float xv = b[i];
            float cdf = 0.5f * (1.0f + erff(xv * 0.70710678118654752f));
            float pdf = 0.39894228040143268f * expf(-0.5f * xv * xv);
            r = x * (cdf + xv * pdf);
            break;
        }
        case E_RELU: r = x > 0.0f ? x : 0.0f; break;
        case E_RELU_B: r = b[i] > 0.0f ? x : 0.0f; break;
        case E_SIG: {
            float e = expf(-fabsf(x));
            r = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            break;
        }
        case E_SIG_B: r = x * b[i] * (1.0f - b[i]); break;
        case E_ADD: r = x + b[i]; break;
        case E_MUL: r = x * b[i]; break;
        case E_AXPBY: r = alpha * x + beta * b[i]; break;
        default: r = alpha * x; break;
        }
        y[i] = r;
    }
}

static int elem(kcu_ctx_t *ctx, int kind, float *y, const float *a, const float *b, float alpha,
                float beta, size_t n, const char *op)
{
    if (!n) return 0;
    KCU_ARG(ctx, y && a, op);
    k_elem<<<kcu_blocks(n, 256), 256, 0, ctx->stream>>>(kind, y, a, b, alpha, beta, n);
    return kcu_check_launch(ctx, op);
}

#define NEED_B(op)                                                                               \
    do {                                                                                         \
        if (n) KCU_ARG(ctx, b, op);                                                             \
    } while (0)

extern "C" int kcu_gelu_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n)
{
    return elem(ctx, E_GELU, y, x, NULL, 0, 0, n, "kcu_gelu_fwd");
}
extern "C" int kcu_gelu_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *x, size_t n)
{
    const float *b = x;
    NEED_B("kcu_gelu_bwd");
    return elem(ctx, E_GELU_B, dx, dy, x, 0, 0, n, "kcu_gelu_bwd");
}
extern "C" int kcu_relu_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n)
{
    return elem(ctx, E_RELU, y, x, NULL, 0, 0, n, "kcu_relu_fwd");
}
extern "C" int kcu_relu_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *x, size_t n)
{
    const float *b = x;
    NEED_B("kcu_relu_bwd");
    return elem(ctx, E_RELU_B, dx, dy, x, 0, 0, n, "kcu_relu_bwd");
}
extern "C" int kcu_sigmoid_fwd(kcu_ctx_t *ctx, float *y, const float *x, size_t n)
{
    return elem(ctx, E_SIG, y, x, NULL, 0, 0, n, "kcu_sigmoid_fwd");
}
extern "C" int kcu_sigmoid_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *y, size_t n)
{
    const float *b = y;
    NEED_B("kcu_sigmoid_bwd");
    return elem(ctx, E_SIG_B, dx, dy, y, 0, 0, n, "kcu_sigmoid_bwd");
}
extern "C" int kcu_add(kcu_ctx_t *ctx, float *y, const float *a, const float *b, size_t n)
{
    NEED_B("kcu_add");
    return elem(ctx, E_ADD, y, a, b, 0, 0, n, "kcu_add");
}
extern "C" int kcu_mul(kcu_ctx_t *ctx, float *y, const float *a, const float *b, size_t n)
{
    NEED_B("kcu_mul");
    return elem(ctx, E_MUL, y, a, b, 0, 0, n, "kcu_mul");
}
extern "C" int kcu_axpby(kcu_ctx_t *ctx, float *y, float alpha, const float *a, float beta,
                         const float *b, size_t n)
{
    return elem(ctx, b ? E_AXPBY : E_SCALE, y, a, b, alpha, beta, n, "kcu_axpby");
}

/* ---- LayerNorm over rows (one warp per row) ----------------------------------------------- */

enum { LN_PLAIN = 0, LN_ADD = 1, LN_GELU = 2 };

__global__ void k_layernorm(float *y, float *y2, const float *a, float *mean, float *rstd,
                            const float *x, const float *w, const float *b, int N, int C,
                            float eps, int mode)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *xr = x + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    float m = warp_sum(s) / (float)C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = xr[c] - m;
        ss += d * d;
    }
    float r = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);
    float *yr = y + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float v = (xr[c] - m) * r * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
        if (mode == LN_GELU) v = gelu_exact(v);
        yr[c] = v;
        if (mode == LN_ADD && y2) y2[(size_t)row * C + c] = v + a[(size_t)row * C + c];
    }
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

static int layernorm(kcu_ctx_t *ctx, float *y, float *y2, const float *a, float *mean, float *rstd,
                     const float *x, const float *w, const float *b, int N, int C, float eps,
                     int mode, const char *op)
{
    KCU_ARG(ctx, y && x && N >= 0 && C >= 1 && (!y2 || a), op);
    if (!N) return 0;
    k_layernorm<<<(N + 7) / 8, 256, 0, ctx->stream>>>(y, y2, a, mean, rstd, x, w, b, N, C, eps,
                                                      mode);
    return kcu_check_launch(ctx, op);
}

extern "C" int kcu_layernorm_fwd(kcu_ctx_t *ctx, float *y, float *mean, float *rstd,
                                 const float *x, const float *w, const float *b, int N, int C,
                                 float eps)
{
    return layernorm(ctx, y, NULL, NULL, mean, rstd, x, w, b, N, C, eps, LN_PLAIN,
                     "kcu_layernorm_fwd");
}

extern "C" int kcu_layernorm_add_fwd(kcu_ctx_t *ctx, float *y, float *y2, const float *a,
                                     const float *x, const float *w, const float *b, int N, int C,
                                     float eps)
{
    return layernorm(ctx, y, y2, a, NULL, NULL, x, w, b, N, C, eps, LN_ADD,
                     "kcu_layernorm_add_fwd");
}

extern "C" int kcu_layernorm_gelu_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                                      const float *b, int N, int C, float eps)
{
    return layernorm(ctx, y, NULL, NULL, NULL, NULL, x, w, b, N, C, eps, LN_GELU,
                     "kcu_layernorm_gelu_fwd");
}

__global__ void k_layernorm_bwd_dx(float *dx, const float *dy, const float *x, const float *mean,
                                   const float *rstd, const float *w, int N, int C)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *xr = x + (size_t)row * C, *dyr = dy + (size_t)row * C;
    float m = mean[row], r = rstd[row], sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xh = (xr[c] - m) * r, g = dyr[c] * (w ? w[c] : 1.0f);
        sg += g;
        sgx += g * xh;
    }
    float mg = warp_sum(sg) / (float)C, mgx = warp_sum(sgx) / (float)C;
    for (int c = lane; c < C; c += 32) {
        float xh = (xr[c] - m) * r, g = dyr[c] * (w ? w[c] : 1.0f);
        dx[(size_t)row * C + c] = r * (g - mg - xh * mgx);
    }
}

/* dw[c] += Σ_n dy·x̂, db[c] += Σ_n dy (thread per column, rows in order) */
__global__ void k_layernorm_bwd_w(float *dw, float *db, const float *dy, const float *x,
                                  const float *mean, const float *rstd, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; n++) {
        float d = dy[(size_t)n * C + c];
        sw += d * (x[(size_t)n * C + c] - mean[n]) * rstd[n];
        sb += d;
    }
    if (dw) dw[c] += sw;
    if (db) db[c] += sb;
}

extern "C" int kcu_layernorm_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *w, int N, int C)
{
    KCU_ARG(ctx, dy && x && mean && rstd && N >= 0 && C >= 1, "kcu_layernorm_bwd");
    if (!N) return 0;
    if (dx) k_layernorm_bwd_dx<<<(N + 7) / 8, 256, 0, ctx->stream>>>(dx, dy, x, mean, rstd, w, N, C);
    if (dw || db)
        k_layernorm_bwd_w<<<(C + 127) / 128, 128, 0, ctx->stream>>>(dw, db, dy, x, mean, rstd, N, C);
    return kcu_check_launch(ctx, "kcu_layernorm_bwd");
}

/* ---- LayerNorm2d over channels of [C, HW] (thread per pixel) ------------------------------ */

__global__ void k_layernorm2d(float *y, const float *x, const float *w, const float *b, int C,
                              int HW, float eps)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= HW) return;
    float s = 0.0f;
    for (int c = 0; c < C; c++) s += x[(size_t)c * HW + p];
    float m = s / (float)C, ss = 0.0f;
    for (int c = 0; c < C; c++) {
        float d = x[(size_t)c * HW + p] - m;
        ss += d * d;
    }
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int c = 0; c < C; c++) {
        size_t i = (size_t)c * HW + p;
        y[i] = (x[i] - m) * r * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
}

extern "C" int kcu_layernorm2d_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                                   const float *b, int C, int HW, float eps)
{
    KCU_ARG(ctx, y && x && C >= 1 && HW >= 0, "kcu_layernorm2d_fwd");
    if (!HW) return 0;
    k_layernorm2d<<<(HW + 127) / 128, 128, 0, ctx->stream>>>(y, x, w, b, C, HW, eps);
    return kcu_check_launch(ctx, "kcu_layernorm2d_fwd");
}

__global__ void k_layernorm2d_bwd(float *dx, float *mu_out, float *rs_out, const float *dy,
                                  const float *x, const float *w, int C, int HW, float eps)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= HW) return;
    float s = 0.0f;
    for (int c = 0; c < C; c++) s += x[(size_t)c * HW + p];
    float m = s / (float)C, ss = 0.0f;
    for (int c = 0; c < C; c++) {
        float d = x[(size_t)c * HW + p] - m;
        ss += d * d;
    }
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (mu_out) {
        mu_out[p] = m;
        rs_out[p] = r;
    }
    if (!dx) return;
    float sg = 0.0f, sgx = 0.0f;
    for (int c = 0; c < C; c++) {
        size_t i = (size_t)c * HW + p;
        float g = dy[i] * (w ? w[c] : 1.0f);
        sg += g;
        sgx += g * ((x[i] - m) * r);
    }
    sg /= (float)C;
    sgx /= (float)C;
    for (int c = 0; c < C; c++) {
        size_t i = (size_t)c * HW + p;
        float g = dy[i] * (w ? w[c] : 1.0f);
        dx[i] = r * (g - sg - (x[i] - m) * r * sgx);
    }
}

/* dw[c] += Σ_p dy x̂, db[c] += Σ_p dy: one block per channel */
__global__ void k_layernorm2d_bwd_w(float *dw, float *db, const float *dy, const float *x,
                                    const float *mu, const float *rs, int HW)
{
    int c = blockIdx.x;
    const float *xc = x + (size_t)c * HW, *dyc = dy + (size_t)c * HW;
    float sw = 0.0f, sb = 0.0f;
    for (int p = threadIdx.x; p < HW; p += blockDim.x) {
        sw += dyc[p] * ((xc[p] - mu[p]) * rs[p]);
        sb += dyc[p];
    }
    __shared__ float rw[256], rb[256];
    rw[threadIdx.x] = sw;
    rb[threadIdx.x] = sb;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) {
            rw[threadIdx.x] += rw[threadIdx.x + o];
            rb[threadIdx.x] += rb[threadIdx.x + o];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (dw) dw[c] += rw[0];
        if (db) db[c] += rb[0];
    }
}

extern "C" int kcu_layernorm2d_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db,
                                   const float *dy, const float *x, const float *w, int C, int HW,
                                   float eps)
{
    KCU_ARG(ctx, dy && x && C >= 1 && HW >= 0, "kcu_layernorm2d_bwd");
    if (!HW) return 0;
    float *mu = NULL, *rs = NULL;
    if (dw || db) {
        mu = (float *)kcu_workspace(ctx, 2 * (size_t)HW * sizeof(float));
        if (!mu) return ERR_NOMEM;
        rs = mu + HW;
    }
    k_layernorm2d_bwd<<<(HW + 127) / 128, 128, 0, ctx->stream>>>(dx, mu, rs, dy, x, w, C, HW, eps);
    if (mu) k_layernorm2d_bwd_w<<<C, 256, 0, ctx->stream>>>(dw, db, dy, x, mu, rs, HW);
    return kcu_check_launch(ctx, "kcu_layernorm2d_bwd");
}

/* ---- softmax ------------------------------------------------------------------------------ */

__global__ void k_softmax(float *y, const float *x, int rows, int cols)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * cols;
    float *yr = y + (size_t)row * cols;
    float m = -INFINITY;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
    m = warp_max(m);
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += expf(xr[c] - m);
    float inv = 1.0f / warp_sum(s);
    for (int c = lane; c < cols; c += 32) yr[c] = expf(xr[c] - m) * inv;
}

__global__ void k_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *dyr = dy + (size_t)row * cols, *yr = y + (size_t)row * cols;
    float dot = 0.0f;
    for (int c = lane; c < cols; c += 32) dot += dyr[c] * yr[c];
    dot = warp_sum(dot);
    for (int c = lane; c < cols; c += 32) dx[(size_t)row * cols + c] = yr[c] * (dyr[c] - dot);
}

__global__ void k_softmax_dim0(float *y, const float *x, int rows, int cols)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float m = -INFINITY;
    for (int r = 0; r < rows; r++) m = fmaxf(m, x[(size_t)r * cols + c]);
    float s = 0.0f;
    for (int r = 0; r < rows; r++) s += expf(x[(size_t)r * cols + c] - m);
    float inv = 1.0f / s;
    for (int r = 0; r < rows; r++) y[(size_t)r * cols + c] = expf(x[(size_t)r * cols + c] - m) * inv;
}

extern "C" int kcu_softmax_fwd(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols)
{
    KCU_ARG(ctx, y && x && rows >= 0 && cols >= 1, "kcu_softmax_fwd");
    if (!rows) return 0;
    k_softmax<<<(rows + 7) / 8, 256, 0, ctx->stream>>>(y, x, rows, cols);
    return kcu_check_launch(ctx, "kcu_softmax_fwd");
}

extern "C" int kcu_softmax_bwd(kcu_ctx_t *ctx, float *dx, const float *dy, const float *y,
                               int rows, int cols)
{
    KCU_ARG(ctx, dx && dy && y && rows >= 0 && cols >= 1, "kcu_softmax_bwd");
    if (!rows) return 0;
    k_softmax_bwd<<<(rows + 7) / 8, 256, 0, ctx->stream>>>(dx, dy, y, rows, cols);
    return kcu_check_launch(ctx, "kcu_softmax_bwd");
}

extern "C" int kcu_softmax_dim0_fwd(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols)
{
    KCU_ARG(ctx, y && x && rows >= 1 && cols >= 0, "kcu_softmax_dim0_fwd");
    if (!cols) return 0;
    k_softmax_dim0<<<(cols + 127) / 128, 128, 0, ctx->stream>>>(y, x, rows, cols);
    return kcu_check_launch(ctx, "kcu_softmax_dim0_fwd");
}

/* ---- transpose (32×32 tiles through shared memory) ---------------------------------------- */

__global__ void k_transpose(float *y, const float *x, int rows, int cols)
{
    __shared__ float t[32][33];
    size_t off = (size_t)blockIdx.z * rows * cols;
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) t[i][threadIdx.x] = x[off + (size_t)r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) y[off + (size_t)c * rows + r] = t[threadIdx.x][i];
    }
}

extern "C" int kcu_transpose(kcu_ctx_t *ctx, float *y, const float *x, int rows, int cols,
                             int batch)
{
    KCU_ARG(ctx, y && x && rows >= 0 && cols >= 0 && batch >= 1 && batch <= 65535,
            "kcu_transpose");
    if (!rows || !cols) return 0;
    dim3 grid((cols + 31) / 32, (rows + 31) / 32, batch), blk(32, 8);
    KCU_ARG(ctx, grid.y <= 65535, "kcu_transpose");
    k_transpose<<<grid, blk, 0, ctx->stream>>>(y, x, rows, cols);
    return kcu_check_launch(ctx, "kcu_transpose");
}

/* ---- decoder GELU-linear: y[g, o, n] = Σ_k W[o, k] gelu(x[g, k, n] + b[k]) ------------------ */

__global__ void k_gelu_linear(float *y, const float *x, const float *b, const float *W, int G,
                              int K, int N, int O)
{
    size_t total = (size_t)G * N;
    GRID_LOOP(i, total)
    {
        int g = (int)(i / N), n = (int)(i % N);
        float acc[16];
#pragma unroll
        for (int o = 0; o < 16; o++) acc[o] = 0.0f;
        for (int k = 0; k < K; k++) {
            float v = gelu_exact(x[((size_t)g * K + k) * N + n] + (b ? b[k] : 0.0f));
#pragma unroll
            for (int o = 0; o < 16; o++)
                if (o < O) acc[o] += W[(size_t)o * K + k] * v;
        }
#pragma unroll
        for (int o = 0; o < 16; o++)
            if (o < O) y[((size_t)g * O + o) * N + n] = acc[o];
    }
}

extern "C" int kcu_gelu_linear_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *b,
                                   const float *W, int G, int K, int N, int O)
{
    KCU_ARG(ctx, y && x && W && G >= 0 && K >= 1 && N >= 0 && O >= 1 && O <= 16,
            "kcu_gelu_linear_fwd");
    if (!G || !N) return 0;
    k_gelu_linear<<<kcu_blocks((size_t)G * N, 128), 128, 0, ctx->stream>>>(y, x, b, W, G, K, N, O);
    return kcu_check_launch(ctx, "kcu_gelu_linear_fwd");
}

/* ---- point sampling (detectron2 point_sample, align_corners=False, zero padding) ----------- */
/* Written with __fmul_rn/__fadd_rn so nvcc forms no FMA: the sampled values are then bit-equal
 * to kn_point_sample_fwd's (built without contraction), which kcu_uncertain_points needs to
 * pick the CPU's points (points.cu). */

struct bilin {
    int idx[4];
    float w[4];
};

__device__ bilin make_bilin(float px, float py, int H, int W)
{
    bilin b;
    float fx = __fsub_rn(__fmul_rn(px, (float)W), 0.5f);
    float fy = __fsub_rn(__fmul_rn(py, (float)H), 0.5f);
    float flx = floorf(fx), fly = floorf(fy), ax = fx - flx, ay = fy - fly;
    int x0 = (int)flx, y0 = (int)fly;
    int vx0 = x0 >= 0 && x0 < W, vx1 = x0 + 1 >= 0 && x0 + 1 < W;
    int vy0 = y0 >= 0 && y0 < H, vy1 = y0 + 1 >= 0 && y0 + 1 < H;
    b.w[0] = vy0 && vx0 ? (1 - ay) * (1 - ax) : 0.0f;
    b.w[1] = vy0 && vx1 ? (1 - ay) * ax : 0.0f;
    b.w[2] = vy1 && vx0 ? ay * (1 - ax) : 0.0f;
    b.w[3] = vy1 && vx1 ? ay * ax : 0.0f;
    for (int j = 0; j < 4; j++) {
        int xx = x0 + (j & 1), yy = y0 + (j >> 1);
        xx = xx < 0 ? 0 : xx >= W ? W - 1 : xx;
        yy = yy < 0 ? 0 : yy >= H ? H - 1 : yy;
        b.idx[j] = yy * W + xx;
    }
    return b;
}

__global__ void k_point_sample(float *out, const float *x, const float *pts, int C, int H, int W,
                               int P)
{
    size_t total = (size_t)C * P;
    GRID_LOOP(i, total)
    {
        int c = (int)(i / P), p = (int)(i % P);
        bilin b = make_bilin(pts[2 * p], pts[2 * p + 1], H, W);
        const float *xc = x + (size_t)c * H * W;
        float s = __fadd_rn(__fmul_rn(b.w[0], xc[b.idx[0]]), __fmul_rn(b.w[1], xc[b.idx[1]]));
        s = __fadd_rn(s, __fmul_rn(b.w[2], xc[b.idx[2]]));
        out[i] = __fadd_rn(s, __fmul_rn(b.w[3], xc[b.idx[3]]));
    }
}

__global__ void k_point_sample_bwd(float *dx, const float *dout, const float *pts, int C, int H,
                                   int W, int P)
{
    size_t total = (size_t)C * P;
    GRID_LOOP(i, total)
    {
        int c = (int)(i / P), p = (int)(i % P);
        bilin b = make_bilin(pts[2 * p], pts[2 * p + 1], H, W);
        float g = dout[i];
        float *xc = dx + (size_t)c * H * W;
        for (int j = 0; j < 4; j++)
            if (b.w[j] != 0.0f) atomicAdd(xc + b.idx[j], b.w[j] * g);
    }
}

extern "C" int kcu_point_sample_fwd(kcu_ctx_t *ctx, float *out, const float *x, const float *pts,
                                    int C, int H, int W, int P)
{
    KCU_ARG(ctx, out && x && pts && C >= 1 && H >= 1 && W >= 1 && P >= 0, "kcu_point_sample_fwd");
    if (!P) return 0;
    k_point_sample<<<kcu_blocks((size_t)C * P, 256), 256, 0, ctx->stream>>>(out, x, pts, C, H, W, P);
    return kcu_check_launch(ctx, "kcu_point_sample_fwd");
}

extern "C" int kcu_point_sample_bwd(kcu_ctx_t *ctx, float *dx, const float *dout, const float *pts,
                                    int C, int H, int W, int P)
{
    KCU_ARG(ctx, dx && dout && pts && C >= 1 && H >= 1 && W >= 1 && P >= 0,
            "kcu_point_sample_bwd");
    if (!P) return 0;
    k_point_sample_bwd<<<kcu_blocks((size_t)C * P, 256), 256, 0, ctx->stream>>>(dx, dout, pts, C, H,
                                                                               W, P);
    return kcu_check_launch(ctx, "kcu_point_sample_bwd");
}

/* ---- losses (one block; double sums, fixed order: deterministic) --------------------------- */

#define LT 256

__device__ double block_sum(double v, double *red)
{
    red[threadIdx.x] = v;
    __syncthreads();
    for (int o = LT / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    double r = red[0];
    __syncthreads();
    return r;
}

__global__ void k_bce_dice(float *out3, float *dlogits, const float *logits, const float *targets,
                           int P, float weight)
{
    __shared__ double red[LT];
    double bce = 0, st = 0, ss = 0, tt = 0;
    for (int i = threadIdx.x; i < P; i += LT) {
        double x = logits[i], t = targets[i];
        double e = exp(-fabs(x));
        double s = x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        bce += (x > 0 ? x : 0) - x * t + log1p(e);
        st += s * t;
        ss += s;
        tt += t;
    }
    bce = block_sum(bce, red) / P;
    st = block_sum(st, red);
    ss = block_sum(ss, red);
    tt = block_sum(tt, red);
    double num = 2 * st + 1, den = ss + tt + 1, dice = 1 - num / den;
    if (dlogits)
        for (int i = threadIdx.x; i < P; i += LT) {
            double x = logits[i], t = targets[i];
            double e = exp(-fabs(x));
            double s = x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
            double d_s = -2 * t / den + num / (den * den);
            dlogits[i] = (float)(weight * ((s - t) / P + d_s * s * (1 - s)));
        }
    if (threadIdx.x == 0 && out3) {
        out3[0] = (float)(weight * (bce + dice));
        out3[1] = (float)bce;
        out3[2] = (float)dice;
    }
}

extern "C" int kcu_bce_dice_loss(kcu_ctx_t *ctx, float *out3, float *dlogits, const float *logits,
                                 const float *targets, int P, float weight)
{
    KCU_ARG(ctx, logits && targets && P >= 1, "kcu_bce_dice_loss");
    k_bce_dice<<<1, LT, 0, ctx->stream>>>(out3, dlogits, logits, targets, P, weight);
    return kcu_check_launch(ctx, "kcu_bce_dice_loss");
}

__global__ void k_cross_entropy(float *out, float *dlogits, const float *logits, int K,
                                const int *labels, float weight)
{
    __shared__ double red[LT];
    int b = blockIdx.x;
    const float *l = logits + (size_t)b * K;
    double m = -INFINITY;
    for (int i = threadIdx.x; i < K; i += LT) m = fmax(m, (double)l[i]);
    red[threadIdx.x] = m;
    __syncthreads();
    for (int o = LT / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) red[threadIdx.x] = fmax(red[threadIdx.x], red[threadIdx.x + o]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    double s = 0;
    for (int i = threadIdx.x; i < K; i += LT) s += exp(l[i] - m);
    s = block_sum(s, red);
    double lse = m + log(s);
    int lab = labels[b];
    if (threadIdx.x == 0 && out) out[b] = (float)(weight * (lse - l[lab]));
    if (dlogits)
        for (int i = threadIdx.x; i < K; i += LT)
            dlogits[(size_t)b * K + i] = (float)(weight * (exp(l[i] - lse) - (i == lab ? 1.0 : 0.0)));
}

extern "C" int kcu_cross_entropy_loss(kcu_ctx_t *ctx, float *out, float *dlogits,
                                      const float *logits, int B, int K, const int *labels,
                                      float weight)
{
    KCU_ARG(ctx, logits && labels && B >= 1 && K >= 1, "kcu_cross_entropy_loss");
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= K)
            return kcu_fail(ctx, ERR_INVALID, "kcu_cross_entropy_loss: label %d of sample %d "
                            "outside [0, %d)", labels[b], b, K);
    if (ctx->ibuf_n < (size_t)B) {
        cudaStreamSynchronize(ctx->stream);
        if (ctx->ibuf) cudaFree(ctx->ibuf);
        ctx->ibuf = NULL;
        ctx->ibuf_n = 0;
        if (cudaMalloc((void **)&ctx->ibuf, (size_t)B * sizeof(int)) != cudaSuccess) {
            cudaGetLastError();
            ctx->ibuf = NULL;
            return kcu_fail(ctx, ERR_NOMEM, "kcu_cross_entropy_loss: no device memory for labels");
        }
        ctx->ibuf_n = (size_t)B;
    }
    int rc = kcu_upload(ctx, ctx->ibuf, labels, (size_t)B * sizeof(int));
    if (rc) return rc;
    k_cross_entropy<<<B, LT, 0, ctx->stream>>>(out, dlogits, logits, K, ctx->ibuf, weight);
    return kcu_check_launch(ctx, "kcu_cross_entropy_loss");
}

/* ---- Adam (torch.optim.Adam; bias corrections in double on the host as the CPU op) -------- */

__global__ void k_adam(float *p, const float *g, float *m, float *v, size_t n, float beta1,
                       float beta2, float c1, float c2, float eps, float wd, float step_size,
                       float bc2_sqrt)
{
    GRID_LOOP(i, n)
    {
        float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
        float mi = m[i] * beta1 + c1 * gi;
        float vi = v[i] * beta2 + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] -= step_size * (mi / denom);
    }
}

extern "C" int kcu_adam_step(kcu_ctx_t *ctx, float *p, const float *g, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int step)
{
    KCU_ARG(ctx, step >= 1, "kcu_adam_step");
    if (!n) return 0;
    KCU_ARG(ctx, p && g && m && v, "kcu_adam_step");
    float step_size = (float)((double)lr / (1.0 - pow((double)beta1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, step));
    float c1 = (float)(1.0 - (double)beta1), c2 = (float)(1.0 - (double)beta2);
    k_adam<<<kcu_blocks(n, 256), 256, 0, ctx->stream>>>(p, g, m, v, n, beta1, beta2, c1, c2, eps,
                                                        weight_decay, step_size, bc2_sqrt);
    return kcu_check_launch(ctx, "kcu_adam_step");
}
