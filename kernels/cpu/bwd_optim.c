/* bwd_optim.c — the Adam optimiser step (CPU reference), matching torch.optim.Adam
 * (amsgrad off, L2 weight decay added to the gradient). The scalar bias corrections are
 * computed in double as PyTorch does in Python, then applied in float per element. */
#include "kn.h"

#include <math.h>

void kn_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int step)
{
    float step_size = (float)((double)lr / (1.0 - pow((double)beta1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, step));
    float c1 = (float)(1.0 - (double)beta1), c2 = (float)(1.0 - (double)beta2);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = weight_decay != 0.0f ? g[i] + weight_decay * p[i] : g[i];
        m[i] = m[i] * beta1 + c1 * gi;
        v[i] = v[i] * beta2 + c2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}
