/* transpose.c — kn_transpose: y[cols, rows] = x[rows, cols]ᵀ (CPU reference).
 * Cache-blocked 32×32 tiles; used by the SAM decoder to turn the [C, HW] image embedding
 * into token-major [HW, C]. Pure data movement: bit-exact. */
#include "kn.h"

#define TILE 32

void kn_transpose(float *y, const float *x, int rows, int cols)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int r0 = 0; r0 < rows; r0 += TILE)
        for (int c0 = 0; c0 < cols; c0 += TILE) {
            int r1 = r0 + TILE < rows ? r0 + TILE : rows;
            int c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++)
                    y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
        }
}
