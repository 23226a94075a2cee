/*
 * cuda_device.cu — device services for CUDA layers (w4a8moe_device_ops): what the oracle's
 * device axis looks at (compute capability, SM count, memory) and the workspace allocations
 * the modular kernel makes once at create, and the caller's current device (saved and restored
 * around every public call by src/core/layer.c).
 *
 * No CUDA device (no driver, no card, a bad ordinal) is not an error here: query reports
 * cuda_sm = 0 and the reason in the name, and the CUDA backends' device predicates reject the
 * layer with that reason, so `explain` and the oracle work on machines without a GPU.
 */
#include "cuda_util.h"

#include <stdio.h>

static w4a8moe_status cuda_query(int32_t ordinal, w4a8moe_device_info *info, w4a8moe_err *err)
{
    (void)err;
    info->kind = W4A8MOE_DEVICE_CUDA;
    info->ordinal = ordinal;
    info->cuda_sm = 0;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError(); /* clear it: later calls must not see a stale error */
        snprintf(info->name, sizeof info->name, "no CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorName(e) : "device count is 0");
        return W4A8MOE_STATUS_OK;
    }
    if (ordinal < 0 || ordinal >= count) {
        snprintf(info->name, sizeof info->name, "no CUDA device %d (this machine has %d)",
                 ordinal, count);
        return W4A8MOE_STATUS_OK;
    }
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, ordinal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(info->name, sizeof info->name, "CUDA device %d unusable (%s)", ordinal,
                 cudaGetErrorString(e));
        return W4A8MOE_STATUS_OK;
    }
    info->cuda_sm = 10 * p.major + p.minor;
    info->cuda_sm_count = p.multiProcessorCount;
    info->cuda_mem_bytes = (int64_t)p.totalGlobalMem;
    snprintf(info->name, sizeof info->name, "%.63s", p.name);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status cuda_alloc(const w4a8moe_device_info *dev, size_t bytes, void **ptr,
                                 w4a8moe_err *err)
{
    *ptr = NULL;
    FORWARD(w4a8moe_cuda_use(dev, err));
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY,
                   "cudaMalloc of %zu bytes on device %d failed: %s; hint: lower max_tokens",
                   bytes, dev->ordinal, cudaGetErrorString(e));
    }
    return W4A8MOE_STATUS_OK;
}

static void cuda_release(const w4a8moe_device_info *dev, void *ptr)
{
    (void)dev;
    cudaFree(ptr);
}

static int cuda_current(void)
{
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return d;
}

static void cuda_make_current(int ordinal)
{
    if (ordinal >= 0 && cuda_current() != ordinal && cudaSetDevice(ordinal) != cudaSuccess)
        cudaGetLastError();
}

extern "C" const w4a8moe_device_ops w4a8moe_cuda_device = {
    W4A8MOE_DEVICE_CUDA, cuda_query, cuda_alloc, cuda_release, cuda_current, cuda_make_current,
};
