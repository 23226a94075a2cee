/*
 * sm90_decode_gemm.cuh — the decode form of the grouped W4A8 GEMM on Hopper (few rows per
 * expert, the weights are the whole cost): the weights, grid, arithmetic and epilogue of
 * sm89_gemm_kernel (sm89_grouped_gemm.cuh), with the weights streamed by the copy engine.
 *
 * Why: at decode a warp's work is one 16-channel tile (GEMM1: its gate/up pair) over a slice of
 * K, and the time is the bytes over what the SM keeps in flight. sm89_gemm_kernel holds one
 * group of weights in registers and then waits for its scales: two round trips a group and ~2 KB
 * in flight a warp, 1.0-1.5 TB/s on an H200 (docs/PERFORMANCE.md, decode lab). A register ring
 * (D steps always in flight) was slower still: more registers, fewer warps. Here each warp owns a
 * ring of STAGES shared-memory stages of S k32 steps; its lane 0 refills a stage with one bulk
 * copy per tile (cp.async.bulk, completing on the stage's mbarrier) as soon as the warp has read
 * it, so STAGES·S steps of weights stay in flight without costing registers (16 KB a warp for a
 * gate/up pair, ~190 KB an SM). The scales of the warp's K range come in once, with the first
 * stage; the activation fragments of a stage are loaded into registers before waiting for it.
 *
 * The sums are sm89_gemm_kernel's (each k32 mma from zero, a group's steps added in f32 in
 * order, promoted with its scale into f64, split-K partials in kq order), so the outputs are
 * bit-identical to it (dev/kernels/decode_w4a8_gemm.cu checks that).
 *
 * Dynamic shared memory: sm90_decode_smem(K, g, KS, GATED) bytes. sm_90 only (bulk copies).
 */
#ifndef W4A8MOE_SM90_DECODE_GEMM_CUH
#define W4A8MOE_SM90_DECODE_GEMM_CUH

#include "sm89_grouped_gemm.cuh"
#include "sm90_ptx.cuh"
#include "pdl.cuh"

#define SM90_DEC_S 8      /* k32 steps a stage: 2 KB of one 16-row tile */
#define SM90_DEC_STAGES 4 /* stages in flight a warp */

/* Scale groups one warp's K range can touch (it starts anywhere inside a group). */
static __host__ __device__ __forceinline__ int64_t sm90_decode_groups(int64_t K, int g, int KS)
{
    int64_t nks = K / 32, spg = g / 32, per_warp = (nks + KS - 1) / KS;
    return (per_warp + spg - 1) / spg + 1;
}

/* Bytes of one warp's slice: its stages, then its scales (16-byte multiples throughout). */
static __host__ __device__ __forceinline__ size_t sm90_decode_warp_bytes(int64_t K, int g, int KS,
                                                                         bool gated)
{
    size_t na = gated ? 2 : 1;
    return (size_t)SM90_DEC_STAGES * na * SM90_DEC_S * 256 +
           na * (size_t)sm90_decode_groups(K, g, KS) * 64;
}

static __host__ __device__ __forceinline__ size_t sm90_decode_smem(int64_t K, int g, int KS,
                                                                   bool gated)
{
    return 4 * sm90_decode_warp_bytes(K, g, KS, gated);
}

/* Grid (M tiles bound, ceil(n_out/16 / (4/KS))), block 128, dynamic shared memory
 * sm90_decode_smem(p.K, p.g, KS, GATED) (16-byte aligned). */
template <int NT, int KS, bool GATED>
static __global__ void __launch_bounds__(128) sm90_decode_kernel(sm89_gemm_args p)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    constexpr int WN = 4 / KS, NA = GATED ? 2 : 1, ACC = NT * 4 * NA, S = SM90_DEC_S;
    constexpr int STAGES = SM90_DEC_STAGES;
    __shared__ double red[KS > 1 ? (KS - 1) * WN * 32 * ACC : 1];
    __shared__ uint64_t bars[4][STAGES + 1]; /* per warp: one per stage, one for the scales */
    extern __shared__ __align__(16) unsigned char sm90_decode_buf[];
    if ((int)blockIdx.x >= *p.ntiles) return;
    const int2 tile = p.tiles[blockIdx.x];
    const int e = tile.x, row0 = tile.y, row_end = p.offsets[e + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int wn = warp / KS, kq = warp % KS;
    const int64_t ct = (int64_t)blockIdx.y * WN + wn, ntiles_out = p.n_out / 16;
    const bool valid = ct < ntiles_out;
    const int64_t nks = p.K / 32, groups = p.K / p.g, tiles_rows = p.n_rows / 16, spg = p.g / 32;
    const int64_t ks0 = kq * nks / KS, ks1 = (kq + 1) * nks / KS;
    const int64_t maxg = sm90_decode_groups(p.K, p.g, KS);

    double acc[NA][NT][4];
#pragma unroll
    for (int a = 0; a < NA; a++)
#pragma unroll
        for (int f = 0; f < NT; f++)
            acc[a][f][0] = acc[a][f][1] = acc[a][f][2] = acc[a][f][3] = 0.0;

    if (valid && ks0 < ks1) {
        unsigned char *buf =
            sm90_decode_buf + (size_t)warp * sm90_decode_warp_bytes(p.K, p.g, KS, GATED);
        float *sc = (float *)(buf + (size_t)STAGES * NA * S * 256); /* [NA][maxg][16] */
        uint64_t *bar = bars[warp];
        const uint2 *wq[NA];
        int64_t trow[NA];
#pragma unroll
        for (int a = 0; a < NA; a++) {
            trow[a] = (int64_t)e * tiles_rows + ct + a * ntiles_out;
            wq[a] = p.wq + trow[a] * nks * 32;
        }
        const int64_t b0 = ks0 / spg, b1 = (ks1 + spg - 1) / spg;
        const int64_t nst = (ks1 - ks0 + S - 1) / S; /* stages of this warp's K range */
        /* stage i: steps [ks0 + i*S, min(+S, ks1)), one bulk copy per tile into slot i % STAGES */
        auto issue = [&](int64_t i) {
            const int64_t k = ks0 + i * S, n = min((int64_t)S, ks1 - k);
            unsigned char *slot = buf + (size_t)(i % STAGES) * NA * S * 256;
            sm90_bar_expect_tx(&bar[i % STAGES], (uint32_t)(NA * n * 256));
#pragma unroll
            for (int a = 0; a < NA; a++)
                sm90_bulk_load(slot + a * S * 256, wq[a] + k * 32, (uint32_t)(n * 256),
                               &bar[i % STAGES]);
        };
        if (lane == 0) {
            for (int s = 0; s <= STAGES; s++) sm90_bar_init(&bar[s], 1);
            sm90_bar_init_fence();
            sm90_bar_expect_tx(&bar[STAGES], (uint32_t)(NA * (b1 - b0) * 64));
#pragma unroll
            for (int a = 0; a < NA; a++)
                sm90_bulk_load(sc + a * maxg * 16, p.ws + (trow[a] * groups + b0) * 16,
                               (uint32_t)((b1 - b0) * 64), &bar[STAGES]);
            for (int64_t i = 0; i < nst && i < STAGES; i++) issue(i);
        }
        __syncwarp();
        const uint8_t *ap[NT];
#pragma unroll
        for (int f = 0; f < NT; f++) {
            int r = min(row0 + f * 8 + gid, row_end - 1);
            ap[f] = p.act + (int64_t)r * p.K + tig * 8;
        }

        float P[NA][NT][4];
#pragma unroll
        for (int a = 0; a < NA; a++)
#pragma unroll
            for (int f = 0; f < NT; f++) P[a][f][0] = P[a][f][1] = P[a][f][2] = P[a][f][3] = 0.0f;
        int64_t gend = min((b0 + 1) * spg, ks1); /* end of the group being summed */
        sm90_bar_wait(&bar[STAGES], 0);
        for (int64_t i = 0; i < nst; i++) {
            const int64_t k = ks0 + i * S;
            uint2 bq[S][NT]; /* this stage's activation fragments, loaded before the wait */
#pragma unroll
            for (int j = 0; j < S; j++)
#pragma unroll
                for (int f = 0; f < NT; f++)
                    if (k + j < ks1) bq[j][f] = __ldg((const uint2 *)(ap[f] + (k + j) * 32));
            sm90_bar_wait(&bar[i % STAGES], (uint32_t)((i / STAGES) & 1));
            const unsigned char *slot = buf + (size_t)(i % STAGES) * NA * S * 256 + lane * 8;
#pragma unroll
            for (int j = 0; j < S; j++) {
                const int64_t ks = k + j;
                if (ks >= ks1) break;
                uint2 wv[NA];
#pragma unroll
                for (int a = 0; a < NA; a++) wv[a] = *(const uint2 *)(slot + (a * S + j) * 256);
                sm89_mma_step<NA, NT>(P, wv, bq[j]);
                if (ks + 1 == gend) { /* the group is complete: promote it with its scale */
                    const int64_t gb = ks / spg - b0;
#pragma unroll
                    for (int a = 0; a < NA; a++) {
                        const float *s = sc + (a * maxg + gb) * 16;
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
            /* every lane has read the slot (its values are in registers): refill it. The proxy
             * fence, in every lane, orders its generic-proxy reads before the copy engine's
             * writes (a fence in lane 0 alone leaves the other lanes' reads unordered). */
            sm90_fence_proxy_async();
            __syncwarp();
            if (lane == 0 && i + STAGES < nst) issue(i + STAGES);
        }
    }

    sm89_finish<NT, KS, GATED>(p, acc, red, e, row0, row_end, ct, valid);
}

#endif /* W4A8MOE_SM90_DECODE_GEMM_CUH */
