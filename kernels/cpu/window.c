/* window.c — window partition of a token map and its inverse (SAM ViT windowed blocks):
 * kn_window_partition pads the map bottom/right with zero tokens to whole S×S windows and
 * orders the tokens window by window; kn_window_unpartition_add adds the real tokens back
 * to the map, dropping the pad. Pure data movement (the add is one float add per element):
 * bit-exact and independent of the thread count. These are the CPU references of
 * kcu_window_partition / kcu_window_unpartition_add. */
#include "kn.h"

#include <string.h>

/* Window slot of token (r, c): windows row-major, tokens row-major inside a window. */
static inline size_t slot(int r, int c, int S, int nwx)
{
    return ((size_t)(r / S) * nwx + c / S) * S * S + (size_t)(r % S) * S + c % S;
}

void kn_window_partition(float *win, const float *x, int H, int W, int C, int S)
{
    int nwy = (H + S - 1) / S, nwx = (W + S - 1) / S;
    if (nwy * S != H || nwx * S != W) /* pad tokens are zeros */
        memset(win, 0, (size_t)nwy * nwx * S * S * C * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int t = 0; t < H * W; t++)
        memcpy(win + slot(t / W, t % W, S, nwx) * C, x + (size_t)t * C, (size_t)C * sizeof(float));
}

void kn_window_unpartition_add(float *x, const float *win, int H, int W, int C, int S)
{
    int nwx = (W + S - 1) / S;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < H * W; t++) {
        const float *src = win + slot(t / W, t % W, S, nwx) * C;
        float *dst = x + (size_t)t * C;
        for (int c = 0; c < C; c++) dst[c] += src[c];
    }
}
