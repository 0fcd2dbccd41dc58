/* window.cu — window partition of B token maps and its accumulated inverse (SAM ViT windowed
 * blocks). CPU reference: kernels/cpu/window.c (kn_window_partition,
 * kn_window_unpartition_add), one map at a time; here the B maps are contiguous and the
 * windows of map b follow those of map b−1, which is the layout kcu_relpos_attention_fwd
 * takes as B·nwy·nwx windows. One thread per element (grid-stride, coalesced over the
 * channels); pure data movement (the inverse adds one float per element): bit-exact
 * against the CPU op. */
#include "kcu_internal.cuh"

#define GRID_LOOP(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                     \
         i += (size_t)gridDim.x * blockDim.x)

/* Source token of window slot s of map b, or -1 for a pad slot (token index within map). */
__device__ __forceinline__ long long win_src(size_t s, int H, int W, int S, int nwx)
{
    size_t SS = (size_t)S * S;
    int w = (int)(s / SS), i = (int)(s % SS);
    int r = (w / nwx) * S + i / S, c = (w % nwx) * S + i % S;
    return (r < H && c < W) ? (long long)r * W + c : -1;
}

__global__ void k_win_part(float *win, const float *x, int B, int H, int W, int C, int S,
                           int nwx, size_t slots)
{
    size_t total = (size_t)B * slots * C;
    GRID_LOOP(o, total)
    {
        int c = (int)(o % C);
        size_t s = o / C, b = s / slots;
        long long t = win_src(s % slots, H, W, S, nwx);
        win[o] = t >= 0 ? x[(b * H * W + (size_t)t) * C + c] : 0.0f;
    }
}

__global__ void k_win_unpart_add(float *x, const float *win, int B, int H, int W, int C, int S,
                                 int nwx, size_t slots)
{
    size_t HW = (size_t)H * W, total = (size_t)B * HW * C;
    GRID_LOOP(o, total)
    {
        int c = (int)(o % C);
        size_t t = o / C, b = t / HW, p = t % HW;
        int r = (int)(p / W), cc = (int)(p % W);
        size_t s = ((size_t)(r / S) * nwx + cc / S) * S * S + (size_t)(r % S) * S + cc % S;
        x[o] += win[(b * slots + s) * C + c];
    }
}

static int win_args(kcu_ctx_t *ctx, const void *a, const void *b, int B, int H, int W, int C,
                    int S, const char *op)
{
    KCU_ARG(ctx, a && b && B >= 1 && H >= 1 && W >= 1 && C >= 1 && S >= 1, op);
    return 0;
}

extern "C" int kcu_window_partition(kcu_ctx_t *ctx, float *win, const float *x, int B, int H,
                                    int W, int C, int S)
{
    int rc = win_args(ctx, win, x, B, H, W, C, S, "kcu_window_partition");
    if (rc) return rc;
    int nwy = (H + S - 1) / S, nwx = (W + S - 1) / S;
    size_t slots = (size_t)nwy * nwx * S * S;
    size_t n = (size_t)B * slots * C;
    k_win_part<<<kcu_blocks(n, 256), 256, 0, ctx->stream>>>(win, x, B, H, W, C, S, nwx, slots);
    return kcu_check_launch(ctx, "kcu_window_partition");
}

extern "C" int kcu_window_unpartition_add(kcu_ctx_t *ctx, float *x, const float *win, int B,
                                          int H, int W, int C, int S)
{
    int rc = win_args(ctx, x, win, B, H, W, C, S, "kcu_window_unpartition_add");
    if (rc) return rc;
    int nwy = (H + S - 1) / S, nwx = (W + S - 1) / S;
    size_t slots = (size_t)nwy * nwx * S * S;
    size_t n = (size_t)B * H * W * C;
    k_win_unpart_add<<<kcu_blocks(n, 256), 256, 0, ctx->stream>>>(x, win, B, H, W, C, S, nwx,
                                                                  slots);
    return kcu_check_launch(ctx, "kcu_window_unpartition_add");
}
