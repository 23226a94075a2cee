/*
 * block_scan.cuh — the one block-wide prefix sum the CUDA kernels share (expert offsets, tile
 * counts). A block of exactly 1024 threads, one partial each, Hillis-Steele over shared memory;
 * integer sums, so the order of additions does not change the result.
 */
#ifndef W4A8MOE_BLOCK_SCAN_CUH
#define W4A8MOE_BLOCK_SCAN_CUH

#include <stdint.h>

/* part: __shared__ int32_t [1024]. Returns the sum of `mine` over the threads below this one;
 * on return part[t] holds the inclusive sum up to thread t (part[1023] is the total). */
__device__ __forceinline__ int32_t block_exclusive_scan_1024(int32_t *part, int32_t mine)
{
    part[threadIdx.x] = mine;
    __syncthreads();
    for (int off = 1; off < 1024; off <<= 1) {
        int32_t v = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
        __syncthreads();
        part[threadIdx.x] += v;
        __syncthreads();
    }
    return part[threadIdx.x] - mine;
}

#endif /* W4A8MOE_BLOCK_SCAN_CUH */
