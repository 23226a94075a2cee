/*
 * contract_math.cuh — contract arithmetic every CUDA kernel shares (docs/numerics.md): reading
 * a bf16 / f16 / f32 array element widened exactly, and step 4's activation with the host's
 * rounding order.
 */
#ifndef W4A8MOE_CONTRACT_MATH_CUH
#define W4A8MOE_CONTRACT_MATH_CUH

#include "../../common/quant.h"

#include <stdint.h>

/* Element i of an array of dtype dt (0 bf16, 1 f16, 2 f32), widened exactly to f32. */
__host__ __device__ __forceinline__ float contract_widen_at(const void *x, int dt, int64_t i)
{
    if (dt == 0) return w4a8moe_bf16_to_f32(((const uint16_t *)x)[i]);
    if (dt == 1) return w4a8moe_f16_to_f32(((const uint16_t *)x)[i]);
    return ((const float *)x)[i];
}

/* Contract step 4, as w4a8moe_activate computes it (no contraction, same rounding order);
 * act 1: gelu_tanh, else SiLU. */
__device__ __forceinline__ float contract_activate(int act, float gate, float up)
{
    if (act == 1) {
        const float c = 0.7978845608028654f;
        float g3 = __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, gate), gate), gate);
        float t = tanhf(__fmul_rn(c, __fadd_rn(gate, g3)));
        return __fmul_rn(__fmul_rn(__fmul_rn(0.5f, gate), __fadd_rn(1.0f, t)), up);
    }
    return __fmul_rn(__fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate))), up);
}

#endif /* W4A8MOE_CONTRACT_MATH_CUH */
