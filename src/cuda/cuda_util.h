/*
 * cuda_util.h — what the CUDA backends' host code shares: the CUDA_TRY / CUDA_LAUNCHED status
 * macros (every runtime call and every launch is checked and becomes a w4a8moe_status with the
 * call's text and CUDA's own message), the forward kernels' launcher (programmatic dependent
 * launch on sm_90+, kernels/pdl.cuh), device selection, the probe of whether this build has
 * code for a device (the backends' supports_device), the prepare's top-k limit, ceil division
 * and the workspaces' 256-byte alignment.
 *
 * Host-side only (the launchers); device code lives in the kernels/ headers.
 */
#ifndef W4A8MOE_CUDA_UTIL_H
#define W4A8MOE_CUDA_UTIL_H

/* the core headers are C: give their declarations C linkage */
extern "C" {
#include "../core/backend.h"
}

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <utility>

#define CUDA_TRY(err, expr)                                                                    \
    do {                                                                                       \
        cudaError_t cuda_try_e_ = (expr);                                                      \
        if (cuda_try_e_ != cudaSuccess)                                                        \
            return w4a8moe_err_set((err), W4A8MOE_STATUS_DEVICE_ERROR, __FILE__, __LINE__,     \
                                   "%s failed: %s (%s)", #expr, cudaGetErrorString(cuda_try_e_), \
                                   cudaGetErrorName(cuda_try_e_));                             \
    } while (0)

/* After a <<<>>> launch: a bad configuration or an earlier asynchronous fault. */
#define CUDA_LAUNCHED(err, what)                                                               \
    do {                                                                                       \
        cudaError_t cuda_launch_e_ = cudaGetLastError();                                       \
        if (cuda_launch_e_ != cudaSuccess)                                                     \
            return w4a8moe_err_set((err), W4A8MOE_STATUS_DEVICE_ERROR, __FILE__, __LINE__,     \
                                   "launching %s failed: %s", (what),                          \
                                   cudaGetErrorString(cuda_launch_e_));                        \
    } while (0)

/* Whether forwards on dev launch their kernels with programmatic dependent launch: sm_90 and
 * later, unless W4A8MOE_PDL=0 (for comparing the two in a benchmark). */
static inline int w4a8moe_cuda_pdl(const w4a8moe_device_info *dev)
{
    static int off = -1; /* read once; a race between threads writes the same value */
    if (off < 0) {
        const char *v = getenv("W4A8MOE_PDL");
        off = v && v[0] == '0';
    }
    return !off && dev->cuda_sm >= 90;
}

/* kernel<<<grid, block, smem, st>>>(args...), with programmatic dependent launch when pdl is
 * set: the kernel may then be scheduled before the one before it on st has finished, so it
 * must begin with pdl_enter() (kernels/pdl.cuh). Returns the launch's error. */
template <typename... Params, typename... Args>
static inline cudaError_t w4a8moe_launch(void (*kernel)(Params...), dim3 grid, dim3 block,
                                         size_t smem, cudaStream_t st, int pdl, Args &&...args)
{
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

/* A w4a8moe_launch's error as a status naming the kernel. */
#define CUDA_LAUNCH(err, what, expr)                                                           \
    do {                                                                                       \
        cudaError_t cuda_l_e_ = (expr);                                                        \
        if (cuda_l_e_ != cudaSuccess)                                                          \
            return w4a8moe_err_set((err), W4A8MOE_STATUS_DEVICE_ERROR, __FILE__, __LINE__,     \
                                   "launching %s failed: %s", (what),                          \
                                   cudaGetErrorString(cuda_l_e_));                             \
    } while (0)

static inline int64_t w4a8moe_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* n rounded up to 256 bytes: how the backends carve their workspaces. */
static inline size_t w4a8moe_align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The CUDA prepare's top-k limit, as a supports_shape verdict (1 fits; else 0 and why). */
static inline int w4a8moe_cuda_topk_fits(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    if (d->top_k <= 64) return 1;
    snprintf(why, cap, "top_k = %d exceeds the CUDA prepare's limit of 64", d->top_k);
    return 0;
}

/* Makes dev the calling thread's current device (cheap when it already is). */
static inline w4a8moe_status w4a8moe_cuda_use(const w4a8moe_device_info *dev, w4a8moe_err *err)
{
    int cur = -1;
    CUDA_TRY(err, cudaGetDevice(&cur));
    if (cur != dev->ordinal) CUDA_TRY(err, cudaSetDevice(dev->ordinal));
    return W4A8MOE_STATUS_OK;
}

/* Whether this build has device code for dev that the runtime can load: cudaFuncGetAttributes
 * of one of the backend's kernels on dev's ordinal (its error is cleared), leaving the calling
 * thread's current device as it was. For the backends' supports_device predicates. */
static inline cudaError_t w4a8moe_cuda_probe_kernel(const w4a8moe_device_info *dev,
                                                    const void *kernel, cudaFuncAttributes *attr)
{
    int cur = -1;
    cudaGetDevice(&cur);
    if (cur != dev->ordinal) cudaSetDevice(dev->ordinal);
    cudaError_t e = cudaFuncGetAttributes(attr, kernel);
    if (e != cudaSuccess) cudaGetLastError();
    if (cur >= 0 && cur != dev->ordinal) cudaSetDevice(cur);
    return e;
}

/* supports_device's common verdict when the probe of `kernel` fails: no code for this device. */
static inline int w4a8moe_cuda_has_code(const w4a8moe_device_info *dev, const void *kernel,
                                        char *why, size_t cap)
{
    cudaFuncAttributes attr;
    cudaError_t e = w4a8moe_cuda_probe_kernel(dev, kernel, &attr);
    if (e == cudaSuccess) return 1;
    snprintf(why, cap, "this build has no code for sm_%d (%s); hint: add it to CUDA_ARCHS and "
             "rebuild", dev->cuda_sm, cudaGetErrorString(e));
    return 0;
}

#endif /* W4A8MOE_CUDA_UTIL_H */
