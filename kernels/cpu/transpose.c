/* transpose.c — kn_transpose: y[cols, rows] = x[rows, cols]ᵀ (CPU reference).
 * Cache-blocked 32×32 tiles; used by the SAM decoder to turn the [C, HW] image embedding
 * into token-major [HW, C]. Pure data movement: bit-exact. Bands run on the kn_parallel_for
 * pool (no OpenMP region: an idle OpenMP team spins for milliseconds after each region and
 * takes a core from the pool on the 2-core machine). */
#include "kn.h"

#define TILE 32

typedef struct {
    float *y;
    const float *x;
    int rows, cols;
} tr_job_t;

/* one band of TILE rows of x */
static void tr_item(void *ctx, int b, int tid)
{
    (void)tid;
    const tr_job_t *j = ctx;
    int rows = j->rows, cols = j->cols, r0 = b * TILE;
    int r1 = r0 + TILE < rows ? r0 + TILE : rows;
    for (int c0 = 0; c0 < cols; c0 += TILE) {
        int c1 = c0 + TILE < cols ? c0 + TILE : cols;
        for (int c = c0; c < c1; c++)
            for (int r = r0; r < r1; r++)
                j->y[(size_t)c * rows + r] = j->x[(size_t)r * cols + c];
    }
}

/* When rows is small (the 32-channel maps of the MoDA head), bands of TILE columns instead
 * so that both threads get work. */
static void tr_item_cols(void *ctx, int b, int tid)
{
    (void)tid;
    const tr_job_t *j = ctx;
    int rows = j->rows, cols = j->cols, c0 = b * 4 * TILE;
    int c1 = c0 + 4 * TILE < cols ? c0 + 4 * TILE : cols;
    for (int r0 = 0; r0 < rows; r0 += TILE) {
        int r1 = r0 + TILE < rows ? r0 + TILE : rows;
        for (int c = c0; c < c1; c++)
            for (int r = r0; r < r1; r++)
                j->y[(size_t)c * rows + r] = j->x[(size_t)r * cols + c];
    }
}

void kn_transpose(float *y, const float *x, int rows, int cols)
{
    tr_job_t j = {y, x, rows, cols};
    if (rows >= 8 * TILE) kn_parallel_for((rows + TILE - 1) / TILE, KN_POOL_ANY, tr_item, &j);
    else kn_parallel_for((cols + 4 * TILE - 1) / (4 * TILE), KN_POOL_ANY, tr_item_cols, &j);
}
