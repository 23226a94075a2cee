/*
 * frag_order.cuh — the "fragment order" of an f16 row that cuda_sm90's small-batch kernel reads
 * (kernels/sm90_mma_decode.cuh): K in chunks of 32, each chunk permuted so that the 8 values a
 * thread feeds its two m16n8k16 B fragments in one k32 step lie together.
 *
 * In a k32 step, thread tig (lane % 4) of a warp multiplies, for its row, the elements
 * h·16 + r·8 + 2·tig + b of the chunk (half h, B register r, element b of the f16x2). Stored at
 * position tig·8 + h·4 + r·2 + b, they are one 16-byte load: (b0, b1) of half 0, then of half 1.
 * Writer: sm89_requant_kernel<true, true> (GEMM2's input). The values are the same; only where
 * they sit changes.
 */
#ifndef W4A8MOE_FRAG_ORDER_CUH
#define W4A8MOE_FRAG_ORDER_CUH

#include <stdint.h>

/* Position of element k of a row in fragment order (k and the result within the same chunk). */
__host__ __device__ __forceinline__ int64_t frag_order_pos(int64_t k)
{
    const int64_t c = k & 31, h = c >> 4, r = (c >> 3) & 1, tig = (c >> 1) & 3, b = c & 1;
    return (k & ~(int64_t)31) | (tig * 8 + h * 4 + r * 2 + b);
}

/* Stores four f16 values of elements k..k+3 (k % 4 == 0) of a row in fragment order: pairs
 * (k, k + 1) and (k + 2, k + 3) stay pairs, at two places. */
__device__ __forceinline__ void frag_order_store4(uint16_t *row, int64_t k, uint32_t lo_pair,
                                                  uint32_t hi_pair)
{
    *(uint32_t *)(row + frag_order_pos(k)) = lo_pair;
    *(uint32_t *)(row + frag_order_pos(k + 2)) = hi_pair;
}

#endif /* W4A8MOE_FRAG_ORDER_CUH */
