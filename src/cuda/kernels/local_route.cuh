/*
 * local_route.cuh — the router on the device (contract "Routing"): router logits f32 [T, E]
 * → ids int32 [T, k], weights f32 [T, k], one warp per token. The scalar rules (order with NaN
 * lowest and ties to the lower index, softmax numerators, sigmoid scores, group scores, final
 * weights) are src/common/route_rule.h, the same code the host router (src/core/router.c)
 * compiles; this file only arranges the loops as warp reductions.
 *
 * Selection without scratch: the experts are totally ordered by (value descending, NaN last,
 * index ascending), and pick j is the best expert strictly after pick j-1 in that order, so no
 * per-expert "taken" flags are needed. Each pick is a warp argmax over E/32 candidates a lane.
 * Cost: O(k * E / 32) per lane; E = 256, k = 8 → 64 candidate tests a lane, a few µs at most.
 * The softmax sum is f64 in a fixed shuffle tree (the host sums in index order: the two may
 * differ in the last bit of the f64 sum, which the f32 probabilities almost never see).
 *
 * The kernel is `static` so that a test (tests/gpu/gpu_route_probe.cu) can compile its own copy.
 */
#ifndef W4A8MOE_LOCAL_ROUTE_CUH
#define W4A8MOE_LOCAL_ROUTE_CUH

#include "../../common/route_rule.h"

#include <stdint.h>
#include "pdl.cuh"

#define ROUTE_MAX_GROUPS 64 /* grouped routing keeps its group set in a 64-bit mask */

__device__ __forceinline__ bool route_before(float a, int ia, float b, int ib)
{
    return w4a8moe_route_before(a, ia, b, ib) != 0;
}

/* Warp argmax in the selection order; idx < 0 means "no candidate". Every lane gets it. */
__device__ __forceinline__ void route_warp_best(float &v, int &idx)
{
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, off);
        int oi = __shfl_xor_sync(0xffffffffu, idx, off);
        if (oi >= 0 && (idx < 0 || route_before(ov, oi, v, idx))) {
            v = ov;
            idx = oi;
        }
    }
}

/* The layer's routing description, as the kernel reads it. */
struct route_params {
    int kind; /* w4a8moe_routing */
    int E, k, renormalize, n_group, topk_group;
    float scale; /* routed_scaling_factor */
    const float *bias; /* [E] or NULL */
};

/* logits [T, E] → ids [T, k], weights [T, k]; blockDim.x = 128 (4 tokens a block). */
static __global__ void route_kernel(route_params p, int64_t T, const float *__restrict__ logits,
                                    int32_t *__restrict__ ids, float *__restrict__ weights)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int lane = threadIdx.x & 31;
    int64_t t = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= T) return;
    const float *l = logits + t * p.E;
    int32_t *id = ids + t * p.k;
    float *w = weights + t * p.k;
    int E = p.E;

    if (p.kind == 2) { /* sigmoid_top1: best raw logit, weight sigmoid(logit) */
        float bv = 0.0f;
        int bi = -1;
        for (int e = lane; e < E; e += 32)
            if (bi < 0 || route_before(l[e], e, bv, bi)) { bv = l[e]; bi = e; }
        route_warp_best(bv, bi);
        if (lane == 0) {
            id[0] = bi;
            w[0] = w4a8moe_route_weight(p.kind, w4a8moe_route_sigmoid(bv), 0.0f, p.renormalize, p.scale);
        }
        return;
    }

    /* softmax: max (NaN lowest), then exp and an f64 sum (fixed shuffle tree) */
    float mx = 0.0f;
    double sum = 0.0;
    uint64_t allowed = ~0ull;
    int per = 1;
    if (p.kind == 0) {
        int mi = -1;
        for (int e = lane; e < E; e += 32)
            if (mi < 0 || route_before(l[e], e, mx, mi)) { mx = l[e]; mi = e; }
        route_warp_best(mx, mi);
        for (int e = lane; e < E; e += 32) sum += (double)w4a8moe_route_softmax_num(l[e], mx);
        for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    } else { /* grouped: group score = two best biased scores; keep topk_group groups */
        per = E / p.n_group;
        float gs = 0.0f; /* lane g < n_group holds group g's score (n_group <= 64: two rounds) */
        float gs2 = 0.0f;
        for (int g = 0; g < p.n_group; g++) {
            float a = -INFINITY, b = -INFINITY;
            for (int e = g * per; e < (g + 1) * per; e++)
                w4a8moe_route_top2_push(w4a8moe_route_biased(l[e], p.bias ? p.bias[e] : 0.0f), &a, &b);
            if (g == lane) gs = __fadd_rn(a, b);
            if (g == lane + 32) gs2 = __fadd_rn(a, b);
        }
        allowed = 0;
        for (int i = 0; i < p.topk_group; i++) {
            float bv = 0.0f;
            int bi = -1;
            if (lane < p.n_group && !((allowed >> lane) & 1)) { bv = gs; bi = lane; }
            if (lane + 32 < p.n_group && !((allowed >> (lane + 32)) & 1) &&
                (bi < 0 || route_before(gs2, lane + 32, bv, bi))) { bv = gs2; bi = lane + 32; }
            route_warp_best(bv, bi);
            allowed |= 1ull << bi;
        }
    }

    float prev_v = 0.0f, total = 0.0f;
    int prev_i = -1;
    for (int j = 0; j < p.k; j++) {
        float bv = 0.0f;
        int bi = -1;
        for (int e = lane; e < E; e += 32) {
            if (p.kind == 1 && !((allowed >> (e / per)) & 1)) continue;
            float v;
            if (p.kind == 0) v = w4a8moe_route_softmax_prob(w4a8moe_route_softmax_num(l[e], mx), sum);
            else v = w4a8moe_route_biased(l[e], p.bias ? p.bias[e] : 0.0f);
            if (prev_i >= 0 && !route_before(prev_v, prev_i, v, e)) continue; /* picked already */
            if (bi < 0 || route_before(v, e, bv, bi)) { bv = v; bi = e; }
        }
        route_warp_best(bv, bi);
        prev_v = bv;
        prev_i = bi;
        float wj = p.kind == 0 ? bv : w4a8moe_route_sigmoid(l[bi]); /* grouped: the unbiased score */
        total = __fadd_rn(total, wj);
        if (lane == 0) { id[j] = bi; w[j] = wj; }
    }
    __syncwarp();
    if (lane == 0)
        for (int j = 0; j < p.k; j++) w[j] = w4a8moe_route_weight(p.kind, w[j], total, p.renormalize, p.scale);
}

#endif /* W4A8MOE_LOCAL_ROUTE_CUH */
