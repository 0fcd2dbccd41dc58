/* cuda_stub.c — the device API of kn.h for builds without CUDA (WITH_CUDA=OFF or no nvcc):
 * no devices, so every caller takes the CPU path. */
#include "kn.h"

int kn_cuda_device_count(void)
{
    return 0;
}

int kn_have_cuda_build(void)
{
    return 0;
}
