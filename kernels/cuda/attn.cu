/* attn.cu — fused attention on the device, flash style: one thread per query row keeps its
 * q, a running max/sum and the output accumulator in registers while key/value tiles stream
 * through shared memory, so no Nq×Nk matrix is ever stored. One kernel template serves three
 * row layouts:
 *   Dense   — kn_attention_fwd/bwd (cpu/attn.c, bwd_attn.c): q/k/v with row strides, heads
 *             interleaved in channels, optional dense bias [heads, Nq, Nk]; one-way rows
 *             (Nq ≠ Nk, q and k from different row sets) are just different pointers.
 *   Window  — kn_winattn_fwd (cpu/winattn.c): TinyViT ws×ws windows gathered from an image-
 *             ordered qkv map (per head [q|k|v] at h*3d), pad positions use padrow as keys and
 *             are not written, bias table [heads, ws², ws²].
 *   RelPos  — kn_relpos_attention_fwd (cpu/relpos_attn.c): SAM ViT windows, [q|k|v] rows,
 *             decomposed rel-pos bias precomputed per (window, head, query) as two N×S
 *             tables (Rh, Rw) from the unscaled q, added as Rh[i, jh] + Rw[i, jw].
 * Backward (Dense only): a statistics pass (log-sum-exp and D_i = dout_i·out_i per query
 * row), a dq pass over keys per query row and a dk/dv pass over queries per key row.
 * Head dims up to 128 (templates for d ≤ 32, 64, 128). */
#include "kcu_internal.cuh"

#include <math.h>

#define QT 64 /* query rows (threads) per block */
#define KT 32 /* key rows per shared-memory tile */

/* ---- row layouts ---------------------------------------------------------------------------- */

struct Dense {
    const float *q, *k, *v, *bias;
    float *out;
    int ldq, ldk, ldv, ldo, Nq, Nk, d;
    __device__ int nq(int) const { return Nq; }
    __device__ int nk(int) const { return Nk; }
    __device__ const float *qrow(int, int h, int i) const { return q + (size_t)i * ldq + h * d; }
    __device__ const float *krow(int, int h, int j) const { return k + (size_t)j * ldk + h * d; }
    __device__ const float *vrow(int, int h, int j) const { return v + (size_t)j * ldv + h * d; }
    __device__ float b(int, int h, int i, int j) const
    {
        return bias ? bias[((size_t)h * Nq + i) * Nk + j] : 0.0f;
    }
    __device__ float *orow(int, int h, int i) const { return out + (size_t)i * ldo + h * d; }
};

struct Window {
    const float *qkv, *padrow, *bias;
    float *out;
    int ldo, H, W, ws, nwx, nwin, d, heads;
    __device__ int nq(int) const { return ws * ws; }
    __device__ int nk(int) const { return ws * ws; }
    __device__ const float *row(int g, int t) const
    {
        int b = g / nwin, wi = g % nwin;
        int iy = (wi / nwx) * ws + t / ws, ix = (wi % nwx) * ws + t % ws;
        if (iy >= H || ix >= W) return padrow;
        return qkv + (((size_t)b * H + iy) * W + ix) * (size_t)(3 * heads * d);
    }
    __device__ const float *qrow(int g, int h, int i) const { return row(g, i) + h * 3 * d; }
    __device__ const float *krow(int g, int h, int j) const { return row(g, j) + h * 3 * d + d; }
    __device__ const float *vrow(int g, int h, int j) const { return row(g, j) + h * 3 * d + 2 * d; }
    __device__ float b(int, int h, int i, int j) const
    {
        int n = ws * ws;
        return bias ? bias[((size_t)h * n + i) * n + j] : 0.0f;
    }
    __device__ float *orow(int g, int h, int t) const
    {
        int b = g / nwin, wi = g % nwin;
        int iy = (wi / nwx) * ws + t / ws, ix = (wi % nwx) * ws + t % ws;
        if (iy >= H || ix >= W) return NULL;
        return out + (((size_t)b * H + iy) * W + ix) * ldo + h * d;
    }
};

struct RelPos {
    const float *qkv, *Rh, *Rw;
    float *out;
    int S, heads, d;
    __device__ int nq(int) const { return S * S; }
    __device__ int nk(int) const { return S * S; }
    __device__ const float *row(int g, int t) const
    {
        return qkv + ((size_t)g * S * S + t) * (size_t)(3 * heads * d);
    }
    __device__ const float *qrow(int g, int h, int i) const { return row(g, i) + h * d; }
    __device__ const float *krow(int g, int h, int j) const { return row(g, j) + heads * d + h * d; }
    __device__ const float *vrow(int g, int h, int j) const
    {
        return row(g, j) + 2 * heads * d + h * d;
    }
    __device__ float b(int g, int h, int i, int j) const
    {
        size_t base = (((size_t)g * heads + h) * S * S + i) * S;
        return Rh[base + j / S] + Rw[base + j % S];
    }
    __device__ float *orow(int g, int h, int i) const
    {
        return out + ((size_t)g * S * S + i) * (size_t)(heads * d) + h * d;
    }
};

/* ---- forward ------------------------------------------------------------------------------- */

/* grid (ceil(nq/QT), heads, groups). With lse != NULL (Dense backward statistics) the output
 * is not written; instead lse[h*Nq + i] and D[h*Nq + i] = dout_i · out_i are. */
template <class L, int DM>
__global__ void __launch_bounds__(QT) k_flash_fwd(L lay, float scale, float *lse, float *Dd,
                                                  const float *dout, int ldd)
{
    __shared__ float Ks[KT][DM], Vs[KT][DM], Ss[KT][QT];
    int g = blockIdx.z, h = blockIdx.y, i = blockIdx.x * QT + threadIdx.x;
    int nq = lay.nq(g), nk = lay.nk(g), d = lay.d;
    bool active = i < nq;
    float q[DM], acc[DM];
    const float *qr = active ? lay.qrow(g, h, i) : NULL;
#pragma unroll
    for (int c = 0; c < DM; c++) {
        q[c] = active && c < d ? qr[c] * scale : 0.0f;
        acc[c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 < nk; j0 += KT) {
        int nt = nk - j0 < KT ? nk - j0 : KT;
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DM; e += QT) {
            int jj = e / DM, c = e % DM;
            float kv = 0.0f, vv = 0.0f;
            if (jj < nt && c < d) {
                kv = lay.krow(g, h, j0 + jj)[c];
                vv = lay.vrow(g, h, j0 + jj)[c];
            }
            Ks[jj][c] = kv;
            Vs[jj][c] = vv;
        }
        __syncthreads();
        if (!active) continue;
        float tmax = -INFINITY;
        for (int jj = 0; jj < nt; jj++) {
            float t = 0.0f;
#pragma unroll
            for (int c = 0; c < DM; c++) t += q[c] * Ks[jj][c];
            t += lay.b(g, h, i, j0 + jj);
            Ss[jj][threadIdx.x] = t;
            tmax = fmaxf(tmax, t);
        }
        float mn = fmaxf(m, tmax), corr = expf(m - mn);
        l *= corr;
#pragma unroll
        for (int c = 0; c < DM; c++) acc[c] *= corr;
        for (int jj = 0; jj < nt; jj++) {
            float p = expf(Ss[jj][threadIdx.x] - mn);
            l += p;
#pragma unroll
            for (int c = 0; c < DM; c++) acc[c] += p * Vs[jj][c];
        }
        m = mn;
    }
    if (!active) return;
    float inv = 1.0f / l;
    if (lse) {
        const float *dr = dout + (size_t)i * ldd + h * d;
        float dd = 0.0f;
#pragma unroll
        for (int c = 0; c < DM; c++)
            if (c < d) dd += dr[c] * acc[c] * inv;
        lse[(size_t)h * nq + i] = m + logf(l);
        Dd[(size_t)h * nq + i] = dd;
        return;
    }
    float *o = lay.orow(g, h, i);
    if (!o) return;
#pragma unroll
    for (int c = 0; c < DM; c++)
        if (c < d) o[c] = acc[c] * inv;
}

template <class L>
static int launch_fwd(kcu_ctx_t *ctx, const L &lay, int nq, int heads, int groups, float scale,
                      float *lse, float *Dd, const float *dout, int ldd, const char *op)
{
    KCU_ARG(ctx, lay.d >= 1 && lay.d <= 128 && heads >= 1 && heads <= 65535 && groups >= 1 &&
                     groups <= 65535 && nq >= 1,
            op);
    dim3 grid((nq + QT - 1) / QT, heads, groups);
    if (lay.d <= 32)
        k_flash_fwd<L, 32><<<grid, QT, 0, ctx->stream>>>(lay, scale, lse, Dd, dout, ldd);
    else if (lay.d <= 64)
        k_flash_fwd<L, 64><<<grid, QT, 0, ctx->stream>>>(lay, scale, lse, Dd, dout, ldd);
    else
        k_flash_fwd<L, 128><<<grid, QT, 0, ctx->stream>>>(lay, scale, lse, Dd, dout, ldd);
    return kcu_check_launch(ctx, op);
}

static Dense make_dense(float *out, const float *q, int ldq, const float *k, int ldk,
                        const float *v, int ldv, const float *bias, int heads, int Nq, int Nk, int d)
{
    Dense L;
    L.q = q;
    L.k = k;
    L.v = v;
    L.bias = bias;
    L.out = out;
    L.ldq = ldq;
    L.ldk = ldk;
    L.ldv = ldv;
    L.ldo = heads * d;
    L.Nq = Nq;
    L.Nk = Nk;
    L.d = d;
    return L;
}

static int dense_args(kcu_ctx_t *ctx, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, int heads, int Nq, int Nk, int d, const char *op)
{
    KCU_ARG(ctx, q && k && v && heads >= 1 && Nq >= 1 && Nk >= 1 && d >= 1 && d <= 128, op);
    KCU_ARG(ctx, ldq >= heads * d && ldk >= heads * d && ldv >= heads * d, op);
    return 0;
}

extern "C" int kcu_attention_fwd(kcu_ctx_t *ctx, float *out, const float *q, int ldq,
                                 const float *k, int ldk, const float *v, int ldv,
                                 const float *bias, int heads, int Nq, int Nk, int d, float scale)
{
    int rc = dense_args(ctx, q, ldq, k, ldk, v, ldv, heads, Nq, Nk, d, "kcu_attention_fwd");
    if (rc) return rc;
    KCU_ARG(ctx, out, "kcu_attention_fwd");
    Dense L = make_dense(out, q, ldq, k, ldk, v, ldv, bias, heads, Nq, Nk, d);
    return launch_fwd(ctx, L, Nq, heads, 1, scale, NULL, NULL, NULL, 0, "kcu_attention_fwd");
}

/* ---- backward (Dense) ---------------------------------------------------------------------- */

/* dq_i = scale Σ_j P_ij (dout_i·v_j − D_i) k_j; one thread per query row. */
template <int DM>
__global__ void __launch_bounds__(QT) k_flash_dq(Dense lay, float scale, const float *lse,
                                                 const float *Dd, const float *dout, float *dq)
{
    __shared__ float Ks[KT][DM], Vs[KT][DM];
    int h = blockIdx.y, i = blockIdx.x * QT + threadIdx.x, d = lay.d, C = lay.ldo;
    bool active = i < lay.Nq;
    float q[DM], go[DM], acc[DM];
#pragma unroll
    for (int c = 0; c < DM; c++) {
        q[c] = active && c < d ? lay.qrow(0, h, i)[c] * scale : 0.0f;
        go[c] = active && c < d ? dout[(size_t)i * C + h * d + c] : 0.0f;
        acc[c] = 0.0f;
    }
    float li = active ? lse[(size_t)h * lay.Nq + i] : 0.0f, Di = active ? Dd[(size_t)h * lay.Nq + i] : 0.0f;
    for (int j0 = 0; j0 < lay.Nk; j0 += KT) {
        int nt = lay.Nk - j0 < KT ? lay.Nk - j0 : KT;
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DM; e += QT) {
            int jj = e / DM, c = e % DM;
            bool in = jj < nt && c < d;
            Ks[jj][c] = in ? lay.krow(0, h, j0 + jj)[c] : 0.0f;
            Vs[jj][c] = in ? lay.vrow(0, h, j0 + jj)[c] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < nt; jj++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < DM; c++) {
                s += q[c] * Ks[jj][c];
                dp += go[c] * Vs[jj][c];
            }
            float p = expf(s + lay.b(0, h, i, j0 + jj) - li);
            float ds = p * (dp - Di);
#pragma unroll
            for (int c = 0; c < DM; c++) acc[c] += ds * Ks[jj][c];
        }
    }
    if (!active) return;
    float *o = dq + (size_t)i * lay.ldq + h * d;
#pragma unroll
    for (int c = 0; c < DM; c++)
        if (c < d) o[c] = acc[c] * scale;
}

/* dv_j = Σ_i P_ij dout_i; dk_j = scale Σ_i P_ij (dout_i·v_j − D_i) q_i; one thread per key row,
 * query tiles (q, dout, lse, D) through shared memory. */
template <int DM>
__global__ void __launch_bounds__(QT) k_flash_dkv(Dense lay, float scale, const float *lse,
                                                  const float *Dd, const float *dout, float *dk,
                                                  float *dv)
{
    __shared__ float Qs[KT][DM], Gs[KT][DM], Ls[KT], Ds[KT];
    int h = blockIdx.y, j = blockIdx.x * QT + threadIdx.x, d = lay.d, C = lay.ldo;
    bool active = j < lay.Nk;
    float kr[DM], vr[DM], ak[DM], av[DM];
#pragma unroll
    for (int c = 0; c < DM; c++) {
        kr[c] = active && c < d ? lay.krow(0, h, j)[c] : 0.0f;
        vr[c] = active && c < d ? lay.vrow(0, h, j)[c] : 0.0f;
        ak[c] = av[c] = 0.0f;
    }
    for (int i0 = 0; i0 < lay.Nq; i0 += KT) {
        int nt = lay.Nq - i0 < KT ? lay.Nq - i0 : KT;
        __syncthreads();
        for (int e = threadIdx.x; e < KT * DM; e += QT) {
            int ii = e / DM, c = e % DM;
            bool in = ii < nt && c < d;
            Qs[ii][c] = in ? lay.qrow(0, h, i0 + ii)[c] : 0.0f;
            Gs[ii][c] = in ? dout[(size_t)(i0 + ii) * C + h * d + c] : 0.0f;
        }
        for (int ii = threadIdx.x; ii < KT; ii += QT) {
            Ls[ii] = ii < nt ? lse[(size_t)h * lay.Nq + i0 + ii] : 0.0f;
            Ds[ii] = ii < nt ? Dd[(size_t)h * lay.Nq + i0 + ii] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        for (int ii = 0; ii < nt; ii++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < DM; c++) {
                s += Qs[ii][c] * kr[c];
                dp += Gs[ii][c] * vr[c];
            }
            float p = expf(s * scale + lay.b(0, h, i0 + ii, j) - Ls[ii]);
            float ds = p * (dp - Ds[ii]);
#pragma unroll
            for (int c = 0; c < DM; c++) {
                av[c] += p * Gs[ii][c];
                ak[c] += ds * Qs[ii][c];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int c = 0; c < DM; c++) {
        if (c >= d) continue;
        if (dk) dk[(size_t)j * lay.ldk + h * d + c] = ak[c] * scale;
        if (dv) dv[(size_t)j * lay.ldv + h * d + c] = av[c];
    }
}

extern "C" int kcu_attention_bwd(kcu_ctx_t *ctx, float *dq, float *dk, float *dv,
                                 const float *dout, const float *q, int ldq, const float *k,
                                 int ldk, const float *v, int ldv, const float *bias, int heads,
                                 int Nq, int Nk, int d, float scale)
{
    int rc = dense_args(ctx, q, ldq, k, ldk, v, ldv, heads, Nq, Nk, d, "kcu_attention_bwd");
    if (rc) return rc;
    KCU_ARG(ctx, dout && heads <= 65535, "kcu_attention_bwd");
    if (!dq && !dk && !dv) return 0;
    float *lse = (float *)kcu_workspace(ctx, 2 * (size_t)heads * Nq * sizeof(float));
    if (!lse) return ERR_NOMEM;
    float *Dd = lse + (size_t)heads * Nq;
    Dense L = make_dense(NULL, q, ldq, k, ldk, v, ldv, bias, heads, Nq, Nk, d);
    rc = launch_fwd(ctx, L, Nq, heads, 1, scale, lse, Dd, dout, heads * d, "kcu_attention_bwd");
    if (rc) return rc;
    if (dq) {
        dim3 grid((Nq + QT - 1) / QT, heads);
        if (d <= 32) k_flash_dq<32><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dq);
        else if (d <= 64) k_flash_dq<64><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dq);
        else k_flash_dq<128><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dq);
        if ((rc = kcu_check_launch(ctx, "kcu_attention_bwd"))) return rc;
    }
    if (dk || dv) {
        dim3 grid((Nk + QT - 1) / QT, heads);
        if (d <= 32) k_flash_dkv<32><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dk, dv);
        else if (d <= 64)
            k_flash_dkv<64><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dk, dv);
        else k_flash_dkv<128><<<grid, QT, 0, ctx->stream>>>(L, scale, lse, Dd, dout, dk, dv);
        rc = kcu_check_launch(ctx, "kcu_attention_bwd");
    }
    return rc;
}

/* ---- TinyViT windows ----------------------------------------------------------------------- */

extern "C" int kcu_winattn_fwd(kcu_ctx_t *ctx, float *out, int ldo, const float *qkv,
                               const float *padrow, const float *bias, int B, int H, int W,
                               int heads, int d, int ws, float scale, const float *proj_w,
                               const float *proj_b)
{
    KCU_ARG(ctx, out && qkv && padrow && B >= 1 && H >= 1 && W >= 1 && heads >= 1 && d >= 1 &&
                     d <= 128 && ws >= 1 && ws * ws <= 1024 && ldo >= heads * d,
            "kcu_winattn_fwd");
    int C = heads * d, nwy = (H + ws - 1) / ws, nwx = (W + ws - 1) / ws;
    KCU_ARG(ctx, (long long)B * nwy * nwx <= 65535, "kcu_winattn_fwd");
    size_t M = (size_t)B * H * W;
    float *att = NULL;
    if (proj_w) { /* attention rows [M, C] before the projection */
        att = (float *)kcu_workspace(ctx, M * C * sizeof(float));
        if (!att) return ERR_NOMEM;
    }
    Window L;
    L.qkv = qkv;
    L.padrow = padrow;
    L.bias = bias;
    L.out = proj_w ? att : out;
    L.ldo = proj_w ? C : ldo;
    L.H = H;
    L.W = W;
    L.ws = ws;
    L.nwx = nwx;
    L.nwin = nwy * nwx;
    L.d = d;
    L.heads = heads;
    int rc = launch_fwd(ctx, L, ws * ws, heads, B * nwy * nwx, scale, NULL, NULL, NULL, 0,
                        "kcu_winattn_fwd");
    if (rc || !proj_w) return rc;
    return kcu_linear_ex(ctx, out, ldo, att, C, proj_w, proj_b, out, ldo, (int)M, C, C,
                         KCU_ACT_NONE);
}

/* ---- SAM ViT decomposed relative position -------------------------------------------------- */

/* Rh[g,h,i,jh] = q_i · rel_h[ih − jh + S − 1], Rw[g,h,i,jw] = q_i · rel_w[iw − jw + S − 1]
 * (unscaled q). One thread per (g, h, i, jx) computing both tables. */
__global__ void k_relpos_tables(float *Rh, float *Rw, const float *qkv, const float *rel_h,
                                const float *rel_w, int nwin, int S, int heads, int d)
{
    size_t N = (size_t)S * S, total = (size_t)nwin * heads * N * S;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        int jx = (int)(o % S);
        size_t r = o / S;
        int i = (int)(r % N);
        r /= N;
        int h = (int)(r % heads), g = (int)(r / heads);
        int ih = i / S, iw = i % S;
        const float *q = qkv + ((size_t)g * N + i) * (size_t)(3 * heads * d) + h * d;
        const float *rh = rel_h + (size_t)(ih - jx + S - 1) * d;
        const float *rw = rel_w + (size_t)(iw - jx + S - 1) * d;
        float sh = 0.0f, sw = 0.0f;
        for (int c = 0; c < d; c++) {
            sh += q[c] * rh[c];
            sw += q[c] * rw[c];
        }
        Rh[o] = sh;
        Rw[o] = sw;
    }
}

extern "C" int kcu_relpos_attention_fwd(kcu_ctx_t *ctx, float *out, const float *qkv,
                                        const float *rel_h, const float *rel_w, int nwin, int S,
                                        int heads, int d, float scale)
{
    KCU_ARG(ctx, out && qkv && rel_h && rel_w && nwin >= 1 && nwin <= 65535 && S >= 1 &&
                     heads >= 1 && d >= 1 && d <= 128,
            "kcu_relpos_attention_fwd");
    size_t tab = (size_t)nwin * heads * S * S * S;
    float *Rh = (float *)kcu_workspace(ctx, 2 * tab * sizeof(float));
    if (!Rh) return ERR_NOMEM;
    float *Rw = Rh + tab;
    k_relpos_tables<<<kcu_blocks(tab, 256), 256, 0, ctx->stream>>>(Rh, Rw, qkv, rel_h, rel_w, nwin,
                                                                   S, heads, d);
    int rc = kcu_check_launch(ctx, "kcu_relpos_attention_fwd");
    if (rc) return rc;
    RelPos L;
    L.qkv = qkv;
    L.Rh = Rh;
    L.Rw = Rw;
    L.out = out;
    L.S = S;
    L.heads = heads;
    L.d = d;
    return launch_fwd(ctx, L, S * S, heads, nwin, scale, NULL, NULL, NULL, 0,
                      "kcu_relpos_attention_fwd");
}
