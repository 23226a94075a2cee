/*
 * cuda_shared_gate.cu — what the shared-expert pipeline (src/core/shared_expert.c) needs on a
 * CUDA layer besides its experts backend: copying its routing arrays to the device once at
 * create, and the Qwen2-MoE gate per forward, weights[t] = sigmoid(x[t] . gate), as a kernel on
 * the caller's stream (no host synchronisation, capturable in a CUDA graph).
 *
 * The dot product is summed in f32 (docs/formats.md, "Shared experts") by a fixed tree: each of
 * 256 threads sums h = tid, tid + 256, ... in order, then a butterfly inside each warp (a + b is
 * commutative in IEEE arithmetic, so every lane holds the same bits) and the 8 warp sums in
 * order. Deterministic run to run; its rounding differs from the host's sequential sum by a few
 * ulp of the sum, far below the weight's effect on the GPU tolerance.
 */
#include "cuda_util.h"

extern "C" {
#include "../core/shared_expert.h"
}

#include "../common/quant.h"
#include "kernels/pdl.cuh"

#define GATE_THREADS 256

__device__ __forceinline__ float gate_io_load(const void *x, int dt, int64_t i)
{
    if (dt == 0) return w4a8moe_bf16_to_f32(((const uint16_t *)x)[i]);
    if (dt == 1) return w4a8moe_f16_to_f32(((const uint16_t *)x)[i]);
    return ((const float *)x)[i];
}

/* One block a token. x [T, H] io dtype dt; gate [H] f32; weights [T] f32. */
__global__ void __launch_bounds__(GATE_THREADS)
shared_gate_kernel(const void *__restrict__ x, int dt, int64_t H, const float *__restrict__ gate,
                   float *__restrict__ weights)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    __shared__ float part[GATE_THREADS / 32];
    const int64_t base = (int64_t)blockIdx.x * H;
    float acc = 0.0f;
    for (int64_t h = threadIdx.x; h < H; h += GATE_THREADS)
        acc = __fadd_rn(acc, __fmul_rn(gate_io_load(x, dt, base + h), gate[h]));
    for (int off = 16; off > 0; off >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = part[0];
        for (int i = 1; i < GATE_THREADS / 32; i++) sum = __fadd_rn(sum, part[i]);
        float w = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-sum)));
        /* NaN only when x[t] has NaN/Inf: the row is NaN through the expert anyway, and the
         * host gate writes 1 there too */
        weights[blockIdx.x] = isnan(w) ? 1.0f : w;
    }
}

static w4a8moe_status cuda_shared_upload(const w4a8moe_device_info *dev, void *dst, const void *src,
                                         size_t bytes, w4a8moe_err *err)
{
    FORWARD(w4a8moe_cuda_use(dev, err));
    CUDA_TRY(err, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status cuda_shared_gate(const w4a8moe_device_info *dev, int64_t T, int64_t H,
                                       const void *x, w4a8moe_dtype io_dtype, const float *gate,
                                       float *weights, void *stream, w4a8moe_err *err)
{
    if (T == 0) return W4A8MOE_STATUS_OK;
    FORWARD(w4a8moe_cuda_use(dev, err));
    CUDA_LAUNCH(err, "shared_gate_kernel",
                w4a8moe_launch(shared_gate_kernel, dim3((unsigned)T), dim3(GATE_THREADS), 0,
                               (cudaStream_t)stream, w4a8moe_cuda_pdl(dev), x, (int)io_dtype, H,
                               gate, weights));
    return W4A8MOE_STATUS_OK;
}

extern "C" const w4a8moe_shared_device_ops w4a8moe_cuda_shared_device = {
    W4A8MOE_DEVICE_CUDA,
    cuda_shared_upload,
    cuda_shared_gate,
};
