// emu_globals.cpp — the thread-local state of cuda_emu.h.
#include "cuda_emu.h"
thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;
thread_local emu_block *emu_cur;
