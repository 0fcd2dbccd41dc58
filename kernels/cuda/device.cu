/* device.cu — CUDA device discovery for kn.h and kn_cuda.h. Without a GPU (or driver) at
 * run time, cudaGetDeviceCount fails (e.g. code 35, insufficient driver); that counts as 0
 * devices and callers take the CPU path. */
#include <cuda_runtime.h>

#include <stdio.h>

extern "C" {
#include "kn.h"
#include "kn_cuda.h"
}

extern "C" int kcu_device_probe(char *why, size_t why_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky error */
        if (why && why_len)
            snprintf(why, why_len, "cudaGetDeviceCount: code %d (%s)", (int)e,
                     cudaGetErrorString(e));
        return 0;
    }
    if (n == 0 && why && why_len) snprintf(why, why_len, "cudaGetDeviceCount: 0 devices");
    return n;
}

extern "C" int kn_cuda_device_count(void)
{
    return kcu_device_probe(NULL, 0);
}

extern "C" int kn_have_cuda_build(void)
{
    return 1;
}
