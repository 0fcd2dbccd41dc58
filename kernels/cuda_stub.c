/* cuda_stub.c — the device API of kn.h and kn_cuda.h for builds without CUDA (WITH_CUDA=OFF
 * or no nvcc): no devices, so every caller takes the CPU path. Only the entry points that
 * non-CUDA code calls exist here (device probe, context constructor/destructor, message);
 * code using kcu_ ops is compiled under MODA_HAVE_CUDA. */
#include "kn.h"
#include "kn_cuda.h"

#include <stdio.h>

int kn_cuda_device_count(void)
{
    return 0;
}

int kn_have_cuda_build(void)
{
    return 0;
}

int kcu_device_probe(char *why, size_t why_len)
{
    if (why && why_len) snprintf(why, why_len, "built without CUDA");
    return 0;
}

kcu_ctx_t *kcu_ctx_new(int device, size_t arena_bytes, int flags, err_t *err)
{
    (void)device;
    (void)arena_bytes;
    (void)flags;
    if (err) {
        err->code = ERR_UNSUPPORTED;
        snprintf(err->msg, sizeof err->msg, "kcu_ctx_new: this build has no CUDA kernels");
    }
    return NULL;
}

void kcu_ctx_destroy(kcu_ctx_t **ctx)
{
    if (ctx) *ctx = NULL;
}

const char *kcu_errmsg(const kcu_ctx_t *ctx)
{
    (void)ctx;
    return "built without CUDA";
}
