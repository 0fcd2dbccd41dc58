/* device.cu — CUDA device discovery for kn.h. Without a GPU (or driver) at run time,
 * cudaGetDeviceCount fails (e.g. code 35, insufficient driver); that counts as 0 devices
 * and callers take the CPU path. */
#include <cuda_runtime.h>

extern "C" {
#include "kn.h"
}

extern "C" int kn_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky error */
        return 0;
    }
    return n;
}

extern "C" int kn_have_cuda_build(void)
{
    return 1;
}
