/*
 * run_device.c — see run_device.h.
 */
#include "run_device.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef W4A8MOE_WITH_CUDA
#include <cuda_runtime.h>
#define IS_CUDA(dev) ((dev)->kind == W4A8MOE_DEVICE_CUDA)
#else
#define IS_CUDA(dev) 0
#endif

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void *run_dev_alloc(const cli_device *dev, size_t bytes)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) {
        void *p = NULL;
        if (cudaSetDevice(dev->ordinal) != cudaSuccess || cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
            cudaGetLastError();
            return NULL;
        }
        return p;
    }
#endif
    (void)dev;
    return malloc(bytes ? bytes : 1);
}

void run_dev_free(const cli_device *dev, void *p)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) {
        cudaFree(p);
        return;
    }
#endif
    (void)dev;
    free(p);
}

int run_dev_upload(const cli_device *dev, void *dst, const void *src, size_t bytes)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess ? 0 : -1;
#endif
    (void)dev;
    memcpy(dst, src, bytes);
    return 0;
}

int run_dev_download(const cli_device *dev, void *dst, const void *src, size_t bytes)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
#endif
    (void)dev;
    memcpy(dst, src, bytes);
    return 0;
}

w4a8moe_status run_dev_forward(const cli_device *dev, w4a8moe_layer *L, int64_t T, const void *x,
                               const w4a8moe_routing_input *r, void *out, double *ms)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) {
        cudaEvent_t e0, e1;
        if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
            cudaGetLastError();
            return W4A8MOE_STATUS_DEVICE_ERROR;
        }
        cudaEventRecord(e0, 0);
        w4a8moe_status st = w4a8moe_layer_forward(L, T, x, r, out, NULL);
        cudaEventRecord(e1, 0);
        if (st == W4A8MOE_STATUS_OK) st = w4a8moe_layer_check(L, NULL); /* waits for the stream */
        float f = 0.0f;
        if (st == W4A8MOE_STATUS_OK &&
            (cudaEventSynchronize(e1) != cudaSuccess || cudaEventElapsedTime(&f, e0, e1) != cudaSuccess))
            st = W4A8MOE_STATUS_DEVICE_ERROR;
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaGetLastError();
        *ms = f;
        return st;
    }
#endif
    (void)dev;
    double t0 = now_ms();
    w4a8moe_status st = w4a8moe_layer_forward(L, T, x, r, out, NULL);
    *ms = now_ms() - t0;
    return st;
}

int run_dev_mem(const cli_device *dev, uint64_t *used, uint64_t *total)
{
#ifdef W4A8MOE_WITH_CUDA
    if (IS_CUDA(dev)) {
        size_t f = 0, t = 0;
        if (cudaSetDevice(dev->ordinal) != cudaSuccess || cudaMemGetInfo(&f, &t) != cudaSuccess) {
            cudaGetLastError();
            return -1;
        }
        *used = (uint64_t)(t - f);
        *total = (uint64_t)t;
        return 0;
    }
#endif
    (void)dev;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    *used = (uint64_t)ru.ru_maxrss * 1024; /* KiB on Linux */
    *total = 0;
    return 0;
}
