/*
 * ring_decode_gemm.cuh — lab version (not in the library: it lost, docs/PERFORMANCE.md): a decode
 * form of the cuda_sm89 grouped GEMM (few rows per expert):
 * the same weights, grid, arithmetic and epilogue as sm89_gemm_kernel (sm89_grouped_gemm.cuh),
 * with a main loop built to stream the weights at the memory's rate.
 *
 * At decode a block's work is one 16-channel tile against one fragment or two of rows, and the
 * time is the weights' bytes over the bandwidth a warp can keep in flight. sm89_gemm_kernel
 * loads one group (4 k32 steps at g = 128, 2 KB a warp for a gate/up pair), waits for it, then
 * waits again for the group's scales: two memory round trips per group, ~2 KB in flight a warp.
 * Here each warp
 *   - keeps a ring of D k32 steps of weights and activation fragments in registers, refilling a
 *     slot with step ks + D as soon as step ks is converted (D steps always in flight);
 *   - loads the group scales of its whole K range into shared memory once, before the loop
 *     (scales are 1/16 of the weight bytes at g = 128), so a promotion never waits on memory.
 * The sums are the same as sm89_gemm_kernel's (each k32 mma from zero, the group's steps added
 * in f32 in order, promoted with its scale into f64, split-K partials in kq order), so the two
 * kernels give bit-identical outputs (checked by dev/kernels/decode_w4a8_gemm.cu).
 *
 * Dynamic shared memory: sm89_ring_smem(K, g, KS) bytes (scales of 4 warps × NA tiles).
 */
#ifndef W4A8MOE_RING_DECODE_GEMM_CUH
#define W4A8MOE_RING_DECODE_GEMM_CUH

#include "../../src/cuda/kernels/sm89_grouped_gemm.cuh"

/* Scale groups one warp's K range can touch: its steps span at most ceil(nks / KS) steps, which
 * start anywhere inside a group. */
static __host__ __device__ __forceinline__ int64_t sm89_ring_groups(int64_t K, int g, int KS)
{
    int64_t nks = K / 32, spg = g / 32, per_warp = (nks + KS - 1) / KS;
    return (per_warp + spg - 1) / spg + 1;
}

static __host__ __device__ __forceinline__ size_t sm89_ring_smem(int64_t K, int g, int KS, bool gated)
{
    return (size_t)4 * (gated ? 2 : 1) * (size_t)sm89_ring_groups(K, g, KS) * 16 * sizeof(float);
}

/* Ring depth in k32 steps: registers hold D × (NA weight + NT activation) uint2 per lane. */
template <int NT> struct sm89_ring_depth { static constexpr int D = NT == 1 ? 8 : NT == 2 ? 6 : 4; };

/* Grid and block as sm89_gemm_kernel; dynamic shared memory sm89_ring_smem(p.K, p.g, KS, GATED). */
template <int NT, int KS, bool GATED>
static __global__ void __launch_bounds__(128) sm89_ring_kernel(sm89_gemm_args p)
{
    constexpr int WN = 4 / KS, NA = GATED ? 2 : 1, ACC = NT * 4 * NA, D = sm89_ring_depth<NT>::D;
    __shared__ double red[KS > 1 ? (KS - 1) * WN * 32 * ACC : 1];
    extern __shared__ float4 sm89_ring_scales[];
    if ((int)blockIdx.x >= *p.ntiles) return;
    const int2 tile = p.tiles[blockIdx.x];
    const int e = tile.x, row0 = tile.y, row_end = p.offsets[e + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int wn = warp / KS, kq = warp % KS;
    const int64_t ct = (int64_t)blockIdx.y * WN + wn, ntiles_out = p.n_out / 16;
    const bool valid = ct < ntiles_out;
    const int64_t nks = p.K / 32, groups = p.K / p.g, tiles_rows = p.n_rows / 16, spg = p.g / 32;
    const int64_t ks0 = kq * nks / KS, ks1 = (kq + 1) * nks / KS;
    const int64_t maxg = sm89_ring_groups(p.K, p.g, KS);

    double acc[NA][NT][4];
#pragma unroll
    for (int a = 0; a < NA; a++)
#pragma unroll
        for (int f = 0; f < NT; f++) acc[a][f][0] = acc[a][f][1] = acc[a][f][2] = acc[a][f][3] = 0.0;

    if (valid && ks0 < ks1) {
        const uint2 *wq[NA];
        int64_t trow[NA];
#pragma unroll
        for (int a = 0; a < NA; a++) {
            trow[a] = (int64_t)e * tiles_rows + ct + a * ntiles_out;
            wq[a] = p.wq + trow[a] * nks * 32 + lane;
        }
        const uint8_t *ap[NT];
#pragma unroll
        for (int f = 0; f < NT; f++) {
            int r = min(row0 + f * 8 + gid, row_end - 1);
            ap[f] = p.act + (int64_t)r * p.K + tig * 8;
        }
        /* the ring's first D steps go out before anything waits */
        uint2 wv[D][NA], bq[D][NT];
#pragma unroll
        for (int j = 0; j < D; j++) {
            if (ks0 + j < ks1) {
#pragma unroll
                for (int a = 0; a < NA; a++) wv[j][a] = __ldg(wq[a] + (ks0 + j) * 32);
#pragma unroll
                for (int f = 0; f < NT; f++) bq[j][f] = __ldg((const uint2 *)(ap[f] + (ks0 + j) * 32));
            }
        }
        /* this warp's scales, groups [b0, b1) of each tile, into its slice of shared memory */
        const int64_t b0 = ks0 / spg, b1 = (ks1 + spg - 1) / spg;
        float *sc = (float *)sm89_ring_scales + (int64_t)warp * NA * maxg * 16;
#pragma unroll
        for (int a = 0; a < NA; a++) {
            const float4 *src = (const float4 *)(p.ws + (trow[a] * groups + b0) * 16);
            float4 *dst = (float4 *)(sc + a * maxg * 16);
            for (int64_t i = lane; i < (b1 - b0) * 4; i += 32) dst[i] = __ldg(src + i);
        }
        __syncwarp();

        float P[NA][NT][4];
#pragma unroll
        for (int a = 0; a < NA; a++)
#pragma unroll
            for (int f = 0; f < NT; f++) P[a][f][0] = P[a][f][1] = P[a][f][2] = P[a][f][3] = 0.0f;
        int64_t gend = min((b0 + 1) * spg, ks1); /* end of the group being summed */
        for (int64_t base = ks0; base < ks1; base += D) {
#pragma unroll
            for (int j = 0; j < D; j++) {
                const int64_t ks = base + j;
                if (ks >= ks1) break;
                uint2 w[NA], bf[NT]; /* the slot's step, kept while the slot refills */
#pragma unroll
                for (int a = 0; a < NA; a++) w[a] = wv[j][a];
#pragma unroll
                for (int f = 0; f < NT; f++) bf[f] = bq[j][f];
                if (ks + D < ks1) { /* refill the slot: step ks + D */
#pragma unroll
                    for (int a = 0; a < NA; a++) wv[j][a] = __ldg(wq[a] + (ks + D) * 32);
#pragma unroll
                    for (int f = 0; f < NT; f++) bq[j][f] = __ldg((const uint2 *)(ap[f] + (ks + D) * 32));
                }
                sm89_mma_step<NA, NT>(P, w, bf);
                if (ks + 1 == gend) { /* the group is complete: promote it with its scale */
                    const int64_t gb = ks / spg - b0;
#pragma unroll
                    for (int a = 0; a < NA; a++) {
                        const float *s = sc + a * maxg * 16 + gb * 16;
                        double s0 = (double)s[gid], s1 = (double)s[gid + 8];
#pragma unroll
                        for (int f = 0; f < NT; f++) {
                            acc[a][f][0] = fma(s0, (double)P[a][f][0], acc[a][f][0]);
                            acc[a][f][1] = fma(s0, (double)P[a][f][1], acc[a][f][1]);
                            acc[a][f][2] = fma(s1, (double)P[a][f][2], acc[a][f][2]);
                            acc[a][f][3] = fma(s1, (double)P[a][f][3], acc[a][f][3]);
                            P[a][f][0] = P[a][f][1] = P[a][f][2] = P[a][f][3] = 0.0f;
                        }
                    }
                    gend = min(gend + spg, ks1);
                }
            }
        }
    }

    sm89_finish<NT, KS, GATED>(p, acc, red, e, row0, row_end, ct, valid);
}

#endif /* W4A8MOE_RING_DECODE_GEMM_CUH */
