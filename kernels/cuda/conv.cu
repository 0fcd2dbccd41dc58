/* conv.cu — convolutions on the device: dense/grouped conv2d fwd+bwd by cuDNN (NCHW),
 * transposed 2×2 conv fwd+bwd (GEMM + scatter/gather), depthwise 3×3 and dense 3×3 on
 * channel-last maps (TinyViT). CPU references: kernels/cpu/conv.c (kn_conv2d_fwd,
 * kn_convt2x2_fwd), bwd_conv.c (kn_conv2d_bwd, kn_convt2x2_bwd), dwconv.c, gemm_pk.c
 * (kn_conv3_pk_fwd). Weights are in PyTorch layout. */
#include "kcu_internal.cuh"

#define WS_LIMIT ((size_t)1 << 30) /* largest cuDNN workspace we accept */

__device__ __forceinline__ float gelu_exact(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* y[b, c, p] += bias[c] (NCHW, P pixels per channel) */
__global__ void k_bias_nchw(float *y, const float *bias, int B, int C, size_t P)
{
    size_t total = (size_t)B * C * P;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[(i / P) % C];
}

/* db[c] += Σ_{b, p} dy[b, c, p]: one block per channel, fixed reduction order. */
__global__ void k_bias_grad(float *db, const float *dy, int B, int C, size_t P)
{
    int c = blockIdx.x;
    double s = 0;
    for (int b = 0; b < B; b++) {
        const float *d = dy + ((size_t)b * C + c) * P;
        for (size_t p = threadIdx.x; p < P; p += blockDim.x) s += d[p];
    }
    __shared__ double red[256];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[c] += (float)red[0];
}

/* ---- cuDNN conv2d -------------------------------------------------------------------------- */

typedef struct {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t c;
} convd_t;

static void convd_free(convd_t *d)
{
    if (d->x) cudnnDestroyTensorDescriptor(d->x);
    if (d->y) cudnnDestroyTensorDescriptor(d->y);
    if (d->w) cudnnDestroyFilterDescriptor(d->w);
    if (d->c) cudnnDestroyConvolutionDescriptor(d->c);
}

static int convd_init(kcu_ctx_t *ctx, convd_t *d, int B, int Cin, int H, int W, int Cout, int k,
                      int stride, int pad, int groups, const char *op)
{
    memset(d, 0, sizeof *d);
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    cudnnStatus_t s = cudnnCreateTensorDescriptor(&d->x);
    if (!s) s = cudnnCreateTensorDescriptor(&d->y);
    if (!s) s = cudnnCreateFilterDescriptor(&d->w);
    if (!s) s = cudnnCreateConvolutionDescriptor(&d->c);
    if (!s) s = cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, Cin, H, W);
    if (!s) s = cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, Cout, Ho, Wo);
    if (!s) s = cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, Cout,
                                           Cin / groups, k, k);
    if (!s) s = cudnnSetConvolution2dDescriptor(d->c, pad, pad, stride, stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    if (!s) s = cudnnSetConvolutionGroupCount(d->c, groups);
    if (!s) s = cudnnSetConvolutionMathType(d->c, ctx->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
    if (s) {
        convd_free(d);
        return kcu_check_dnn(ctx, s, op);
    }
    return 0;
}

static int conv_args_ok(int B, int Cin, int H, int W, int Cout, int k, int stride, int pad,
                        int groups)
{
    return B >= 1 && Cin >= 1 && H >= 1 && W >= 1 && Cout >= 1 && k >= 1 && stride >= 1 &&
           pad >= 0 && groups >= 1 && Cin % groups == 0 && Cout % groups == 0 &&
           H + 2 * pad >= k && W + 2 * pad >= k;
}

extern "C" int kcu_conv2d_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                              const float *b, int B, int Cin, int H, int W, int Cout, int k,
                              int stride, int pad, int groups)
{
    KCU_ARG(ctx, y && x && w, "kcu_conv2d_fwd");
    KCU_ARG(ctx, conv_args_ok(B, Cin, H, W, Cout, k, stride, pad, groups), "kcu_conv2d_fwd");
    convd_t d;
    int rc = convd_init(ctx, &d, B, Cin, H, W, Cout, k, stride, pad, groups, "kcu_conv2d_fwd");
    if (rc) return rc;
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int got = 0;
    cudnnStatus_t s = cudnnGetConvolutionForwardAlgorithm_v7(ctx->dnn, d.x, d.w, d.c, d.y, 8, &got,
                                                             perf);
    int pick = -1;
    for (int i = 0; !s && i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WS_LIMIT) {
            pick = i;
            break;
        }
    if (!s && pick < 0) s = CUDNN_STATUS_NOT_SUPPORTED;
    void *ws = NULL;
    if (!s && perf[pick].memory) {
        ws = kcu_workspace(ctx, perf[pick].memory);
        if (!ws) {
            convd_free(&d);
            return ERR_NOMEM;
        }
    }
    float one = 1.0f, zero = 0.0f;
    if (!s) s = cudnnConvolutionForward(ctx->dnn, &one, d.x, x, d.w, w, d.c, perf[pick].algo, ws,
                                        perf[pick].memory, &zero, d.y, y);
    convd_free(&d);
    if (s) return kcu_check_dnn(ctx, s, "kcu_conv2d_fwd");
    if (b) {
        int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
        size_t P = (size_t)Ho * Wo;
        k_bias_nchw<<<kcu_blocks((size_t)B * Cout * P, 256), 256, 0, ctx->stream>>>(y, b, B, Cout, P);
        return kcu_check_launch(ctx, "kcu_conv2d_fwd");
    }
    return 0;
}

extern "C" int kcu_conv2d_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                              const float *x, const float *w, int B, int Cin, int H, int W,
                              int Cout, int k, int stride, int pad, int groups)
{
    KCU_ARG(ctx, dy && (!dx || w) && (!dw || x), "kcu_conv2d_bwd");
    KCU_ARG(ctx, conv_args_ok(B, Cin, H, W, Cout, k, stride, pad, groups), "kcu_conv2d_bwd");
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    if (db) {
        k_bias_grad<<<Cout, 256, 0, ctx->stream>>>(db, dy, B, Cout, (size_t)Ho * Wo);
        int rc = kcu_check_launch(ctx, "kcu_conv2d_bwd");
        if (rc) return rc;
    }
    if (!dx && !dw) return 0;
    convd_t d;
    int rc = convd_init(ctx, &d, B, Cin, H, W, Cout, k, stride, pad, groups, "kcu_conv2d_bwd");
    if (rc) return rc;
    float one = 1.0f, zero = 0.0f;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    if (dx) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[8];
        int got = 0, pick = -1;
        s = cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx->dnn, d.w, d.y, d.c, d.x, 8, &got, perf);
        for (int i = 0; !s && i < got; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WS_LIMIT) {
                pick = i;
                break;
            }
        if (!s && pick < 0) s = CUDNN_STATUS_NOT_SUPPORTED;
        void *ws = NULL;
        if (!s && perf[pick].memory && !(ws = kcu_workspace(ctx, perf[pick].memory))) {
            convd_free(&d);
            return ERR_NOMEM;
        }
        if (!s) s = cudnnConvolutionBackwardData(ctx->dnn, &one, d.w, w, d.y, dy, d.c,
                                                 perf[pick].algo, ws, perf[pick].memory, &zero,
                                                 d.x, dx);
    }
    if (!s && dw) {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[8];
        int got = 0, pick = -1;
        s = cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx->dnn, d.x, d.y, d.c, d.w, 8, &got,
                                                          perf);
        for (int i = 0; !s && i < got; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WS_LIMIT) {
                pick = i;
                break;
            }
        if (!s && pick < 0) s = CUDNN_STATUS_NOT_SUPPORTED;
        void *ws = NULL;
        if (!s && perf[pick].memory && !(ws = kcu_workspace(ctx, perf[pick].memory))) {
            convd_free(&d);
            return ERR_NOMEM;
        }
        if (!s) s = cudnnConvolutionBackwardFilter(ctx->dnn, &one, d.x, x, d.y, dy, d.c,
                                                   perf[pick].algo, ws, perf[pick].memory, &one,
                                                   d.w, dw); /* beta 1: accumulate */
    }
    convd_free(&d);
    return s ? kcu_check_dnn(ctx, s, "kcu_conv2d_bwd") : 0;
}

/* ---- transposed 2×2 stride-2 conv --------------------------------------------------------- */

/* y[b, co, 2i+a, 2j+e] = T[b, co*4 + a*2 + e, i*W + j] + bias[co] */
__global__ void k_convt_scatter(float *y, const float *T, const float *bias, int B, int Cout,
                                int H, int W)
{
    size_t HW = (size_t)H * W, total = (size_t)B * Cout * 4 * HW;
    int Wo = 2 * W;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o;
        int ox = (int)(r % Wo);
        r /= Wo;
        int oy = (int)(r % (2 * H));
        r /= 2 * H;
        int co = (int)(r % Cout);
        int b = (int)(r / Cout);
        int i = oy >> 1, a = oy & 1, j = ox >> 1, e = ox & 1;
        float v = T[((size_t)b * Cout * 4 + co * 4 + a * 2 + e) * HW + (size_t)i * W + j];
        y[o] = v + (bias ? bias[co] : 0.0f);
    }
}

/* S[co*4 + a*2 + e, i*W + j] = dy[co, 2i+a, 2j+e] */
__global__ void k_convt_gather(float *S, const float *dy, int Cout, int H, int W)
{
    size_t HW = (size_t)H * W, total = (size_t)Cout * 4 * HW;
    int Wo = 2 * W;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        int ox = (int)(o % Wo);
        int oy = (int)((o / Wo) % (2 * H));
        int co = (int)(o / (4 * HW));
        int i = oy >> 1, a = oy & 1, j = ox >> 1, e = ox & 1;
        S[((size_t)co * 4 + a * 2 + e) * HW + (size_t)i * W + j] = dy[o];
    }
}

extern "C" int kcu_convt2x2_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                                const float *b, int B, int Cin, int H, int W, int Cout)
{
    KCU_ARG(ctx, y && x && w && B >= 1 && Cin >= 1 && H >= 1 && W >= 1 && Cout >= 1,
            "kcu_convt2x2_fwd");
    size_t HW = (size_t)H * W;
    float *T = (float *)kcu_workspace(ctx, (size_t)B * 4 * Cout * HW * sizeof(float));
    if (!T) return ERR_NOMEM;
    /* T_b[4Cout, HW] = w[Cin, 4Cout]ᵀ · x_b[Cin, HW] */
    int rc = kcu_gemm_batched(ctx, 1, 0, 4 * Cout, (int)HW, Cin, 1.0f, w, 4 * Cout, 0, x, (int)HW,
                              (long long)Cin * HW, 0.0f, T, (int)HW, (long long)4 * Cout * HW, B);
    if (rc) return rc;
    k_convt_scatter<<<kcu_blocks((size_t)B * Cout * 4 * HW, 256), 256, 0, ctx->stream>>>(
        y, T, b, B, Cout, H, W);
    return kcu_check_launch(ctx, "kcu_convt2x2_fwd");
}

extern "C" int kcu_convt2x2_bwd(kcu_ctx_t *ctx, float *dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w, int Cin, int H, int W, int Cout)
{
    KCU_ARG(ctx, dy && (!dx || w) && (!dw || x), "kcu_convt2x2_bwd");
    KCU_ARG(ctx, Cin >= 1 && H >= 1 && W >= 1 && Cout >= 1, "kcu_convt2x2_bwd");
    size_t HW = (size_t)H * W;
    int rc = 0;
    if (db) {
        k_bias_grad<<<Cout, 256, 0, ctx->stream>>>(db, dy, 1, Cout, 4 * HW);
        if ((rc = kcu_check_launch(ctx, "kcu_convt2x2_bwd"))) return rc;
    }
    if (!dx && !dw) return 0;
    float *S = (float *)kcu_workspace(ctx, 4 * (size_t)Cout * HW * sizeof(float));
    if (!S) return ERR_NOMEM;
    k_convt_gather<<<kcu_blocks(4 * (size_t)Cout * HW, 256), 256, 0, ctx->stream>>>(S, dy, Cout,
                                                                                   H, W);
    if ((rc = kcu_check_launch(ctx, "kcu_convt2x2_bwd"))) return rc;
    int K4 = 4 * Cout;
    if (dx) rc = kcu_gemm(ctx, 0, 0, Cin, (int)HW, K4, 1.0f, w, K4, S, (int)HW, 0.0f, dx, (int)HW);
    if (!rc && dw) rc = kcu_gemm(ctx, 0, 1, Cin, K4, (int)HW, 1.0f, x, (int)HW, S, (int)HW, 1.0f,
                                 dw, K4);
    return rc;
}

/* ---- channel-last 3×3 convolutions (TinyViT) --------------------------------------------- */

__global__ void k_dwconv3_nhwc(float *y, const float *x, const float *w, const float *bias, int B,
                               int H, int W, int C, int stride, int act)
{
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    size_t total = (size_t)B * Ho * Wo * C;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(o % C);
        size_t r = o / C;
        int ox = (int)(r % Wo);
        r /= Wo;
        int oy = (int)(r % Ho);
        int b = (int)(r / Ho);
        float acc = bias ? bias[c] : 0.0f;
        const float *wc = w + (size_t)c * 9;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy * stride - 1 + ky;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < 3; kx++) {
                int ix = ox * stride - 1 + kx;
                if (ix < 0 || ix >= W) continue;
                acc += wc[ky * 3 + kx] * x[(((size_t)b * H + iy) * W + ix) * C + c];
            }
        }
        y[o] = act == KCU_ACT_GELU ? gelu_exact(acc) : acc;
    }
}

extern "C" int kcu_dwconv3_nhwc_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                                    const float *b, int B, int H, int W, int C, int stride, int act)
{
    KCU_ARG(ctx, y && x && w && B >= 1 && H >= 1 && W >= 1 && C >= 1 && stride >= 1,
            "kcu_dwconv3_nhwc_fwd");
    KCU_ARG(ctx, act == KCU_ACT_NONE || act == KCU_ACT_GELU, "kcu_dwconv3_nhwc_fwd");
    size_t total = (size_t)B * ((H - 1) / stride + 1) * ((W - 1) / stride + 1) * C;
    k_dwconv3_nhwc<<<kcu_blocks(total, 256), 256, 0, ctx->stream>>>(y, x, w, b, B, H, W, C, stride,
                                                                    act);
    return kcu_check_launch(ctx, "kcu_dwconv3_nhwc_fwd");
}

/* col[(b*Ho + oy)*Wo + ox, c*9 + ky*3 + kx] = x[b, oy*s-1+ky, ox*s-1+kx, c] (0 outside):
 * channel-major columns so PyTorch's [N, C, 3, 3] weight is the GEMM's [N, 9C] as is. */
__global__ void k_im2col3_nhwc(float *col, const float *x, int B, int H, int W, int C, int stride)
{
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    size_t K = (size_t)9 * C, total = (size_t)B * Ho * Wo * K;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        size_t p = o / K;
        int kk = (int)(o % K);
        int c = kk / 9, t = kk % 9, ky = t / 3, kx = t % 3;
        int ox = (int)(p % Wo), oy = (int)((p / Wo) % Ho), b = (int)(p / ((size_t)Wo * Ho));
        int iy = oy * stride - 1 + ky, ix = ox * stride - 1 + kx;
        col[o] = iy >= 0 && iy < H && ix >= 0 && ix < W
                     ? x[(((size_t)b * H + iy) * W + ix) * C + c]
                     : 0.0f;
    }
}

__global__ void k_bias_act_rows(float *y, const float *bias, size_t M, int N, int act)
{
    size_t total = M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i] + (bias ? bias[i % N] : 0.0f);
        y[i] = act == KCU_ACT_GELU ? gelu_exact(v) : v;
    }
}

extern "C" int kcu_conv3_nhwc_fwd(kcu_ctx_t *ctx, float *y, const float *x, const float *w,
                                  const float *b, int B, int H, int W, int C, int N, int stride,
                                  int act)
{
    KCU_ARG(ctx, y && x && w && B >= 1 && H >= 1 && W >= 1 && C >= 1 && N >= 1 && stride >= 1,
            "kcu_conv3_nhwc_fwd");
    KCU_ARG(ctx, act == KCU_ACT_NONE || act == KCU_ACT_GELU, "kcu_conv3_nhwc_fwd");
    int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    size_t M = (size_t)B * Ho * Wo, K = (size_t)9 * C;
    float *col = (float *)kcu_workspace(ctx, M * K * sizeof(float));
    if (!col) return ERR_NOMEM;
    k_im2col3_nhwc<<<kcu_blocks(M * K, 256), 256, 0, ctx->stream>>>(col, x, B, H, W, C, stride);
    int rc = kcu_check_launch(ctx, "kcu_conv3_nhwc_fwd");
    if (!rc) rc = kcu_gemm(ctx, 0, 1, (int)M, N, (int)K, 1.0f, col, (int)K, w, (int)K, 0.0f, y, N);
    if (rc || (!b && act == KCU_ACT_NONE)) return rc;
    k_bias_act_rows<<<kcu_blocks(M * N, 256), 256, 0, ctx->stream>>>(y, b, M, N, act);
    return kcu_check_launch(ctx, "kcu_conv3_nhwc_fwd");
}
