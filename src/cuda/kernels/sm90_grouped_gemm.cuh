/*
 * sm90_grouped_gemm.cuh — device code of the cuda_sm90 experts (src/cuda/cuda_sm90_experts.cu):
 * a grouped W4A8 GEMM on Hopper's wgmma, the weight packing it reads, and the CTA raster.
 *
 * Orientation ("swap AB", as cuda_sm89): weights are wgmma's A operand (64 weight rows per
 * warpgroup, converted int4 → e4m3 in registers), the routed rows of one expert its B operand
 * (BN rows, e4m3, K-major in shared memory, loaded by the tensor copy engine with the 128-byte
 * swizzle). C[weight row, routed row] accumulates per k32 step in the tensor core and each K
 * group is promoted into f32 registers with its own scale (acc += S[n, b] * P_b): the
 * contract's arithmetic, with P_b in the tensor core's FP8 accumulator (not exact) and the sum
 * over groups in f32 instead of f64 (docs/numerics.md, "Tolerance").
 *
 * CTA: warpgroup 0 is the producer (one thread issues the copies; setmaxnreg gives its registers
 * to the others), warpgroups 1 and 2 the consumers (64 weight rows each, BN routed rows).
 * A STAGES-deep ring of (activation box BN x 128 bytes, 2 x 4 KB of packed weights) with a
 * full and an empty mbarrier per stage.
 *
 * Packed weight layout (sm90_pack_kernel, once at create), for a matrix of N rows and K columns:
 *   wq [E, NRB, KB, 128 threads, 4 k32 steps] uint2, NRB = 64-row blocks rounded up to even,
 *      KB = ceil(K / 128). Thread t (warp w = t/32, gid, tig) of step s holds .x = row
 *      16w + gid, .y = row 16w + gid + 8 of the block, each as 8 nibbles (q + 8): columns
 *      32s + 4tig + 0..3 in bits 0-15 and 32s + 16 + 4tig + 0..3 in bits 16-31, i.e. exactly
 *      a0/a2 (a1/a3) of the wgmma fragment after conversion. Padding (rows past N, steps past
 *      K/32) holds q = 0.
 *   Row order: GEMM2 (plain): physical row p of block rb is logical row 64rb + p. GEMM1 (gated):
 *      block rb holds channels c0 = 32rb .. c0+31; warp w's rows 0-7 are gate rows c0+8w+0..7
 *      and rows 8-15 the up rows (I + same channels), so each thread's accumulator holds the
 *      gate and the up value of one channel: the SiLU·up epilogue needs no data exchange.
 *   ws [E, NRB, K/g, 64] f32 group scales and wc [E, NRB*64] f32 channel scales, in the same
 *      physical row order (0 for padding rows).
 */
#ifndef W4A8MOE_SM90_GROUPED_GEMM_CUH
#define W4A8MOE_SM90_GROUPED_GEMM_CUH

#include "../../common/quant.h"
#include "sm89_grouped_gemm.cuh" /* int4 → e4m3 conversion, activation, schedule, requant */
#include "sm90_ptx.cuh"

#include <cuda.h> /* CUtensorMap (a plain struct; no driver library is linked) */
#include <stdint.h>

#define SM90_BK 128          /* K per stage: one 128-byte swizzled row of e4m3 */
#define SM90_WG_ROWS 64      /* weight rows per consumer warpgroup (wgmma M) */
#define SM90_CONSUMERS 2     /* consumer warpgroups per CTA */
#define SM90_BM (SM90_WG_ROWS * SM90_CONSUMERS)
#define SM90_W_STAGE_BYTES (SM90_WG_ROWS * SM90_BK / 2) /* 4 KB of int4 per warpgroup a stage */
#define SM90_THREADS (128 * (SM90_CONSUMERS + 1))

/* ---- packing (once, at create) ---------------------------------------------------------- */

/* Logical row of physical row p (0..NRB*64-1), or -1 for padding. */
__host__ __device__ __forceinline__ int64_t sm90_logical_row(int64_t p, int64_t n_out, int gated)
{
    int64_t rb = p / 64, r = p % 64, w = r / 16, i = r % 16;
    if (!gated) return p < n_out ? p : -1;
    int64_t ch = rb * 32 + w * 8 + (i & 7);
    if (ch >= n_out) return -1;
    return i < 8 ? ch : n_out + ch; /* gate rows, then up rows (n_out = I) */
}

/* packed [rows, K/8] int32 logical words → wq (see the header); one thread per uint2.
 * rows_pad = NRB*64, n_out = I (gated) or rows (plain). */
static __global__ void sm90_pack_kernel(const int32_t *__restrict__ packed, int64_t n_out, int gated,
                                 int64_t K, int64_t rows_pad, uint2 *__restrict__ wq)
{
    const int64_t KB = (K + SM90_BK - 1) / SM90_BK;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows_pad / 64 * KB * 512) return;
    int s = (int)(i & 3), t = (int)((i >> 2) & 127);
    int64_t kb = (i >> 9) % KB, rb = (i >> 9) / KB;
    int w = t >> 5, gid = (t & 31) >> 2, tig = t & 3;
    int64_t ks = kb * 4 + s, wpr = K / 8;
    uint32_t v[2] = {0x88888888u, 0x88888888u};
    for (int h = 0; h < 2; h++) {
        int64_t row = sm90_logical_row(rb * 64 + w * 16 + gid + 8 * h, n_out, gated);
        if (row < 0 || ks >= K / 32) continue;
        const int32_t *src = packed + row * wpr + ks * 4;
        uint32_t lo = (uint32_t)src[tig >> 1] >> (16 * (tig & 1));
        uint32_t hi = (uint32_t)src[2 + (tig >> 1)] >> (16 * (tig & 1));
        v[h] = (lo & 0xffffu) | (hi << 16);
    }
    wq[i] = make_uint2(v[0], v[1]);
}

/* scales [rows, K/g] (dt: 0 bf16, 1 f16, 2 f32) and channel [rows] (NULL: ones) →
 * ws [NRB, K/g, 64], wc [NRB*64] in physical row order. */
static __global__ void sm90_pack_scales_kernel(const void *__restrict__ scale, int dt, int64_t n_out,
                                        int gated, int64_t groups, int64_t rows_pad,
                                        const float *__restrict__ channel, float *__restrict__ ws,
                                        float *__restrict__ wc)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows_pad) {
        int64_t row = sm90_logical_row(i, n_out, gated);
        wc[i] = row < 0 ? 0.0f : channel ? channel[row] : 1.0f;
    }
    if (i >= rows_pad * groups) return;
    int64_t r = i & 63, b = (i >> 6) % groups, rb = (i >> 6) / groups;
    int64_t row = sm90_logical_row(rb * 64 + r, n_out, gated);
    float v = 0.0f;
    if (row >= 0) {
        int64_t src = row * groups + b;
        if (dt == 0) v = w4a8moe_bf16_to_f32(((const uint16_t *)scale)[src]);
        else if (dt == 1) v = w4a8moe_f16_to_f32(((const uint16_t *)scale)[src]);
        else v = ((const float *)scale)[src];
    }
    ws[i] = v;
}

/* ---- per forward --------------------------------------------------------------------------- */

struct sm90_gemm_args {
    const uint2 *wq;         /* [nl, NRB, KB, 128, 4] */
    const float *ws;         /* [nl, NRB, K/g, 64] */
    const float *wc;         /* [nl, NRB*64] */
    int64_t nrb;             /* NRB: 64-row blocks (even) */
    int64_t n_out;           /* output channels: I (gated) or H */
    int64_t K;
    int g;
    const float *act_scale;  /* [R] */
    const int32_t *offsets;  /* [nl + 1] */
    const int2 *tiles;       /* [*ntiles] (expert, row0), BN rows each */
    const int32_t *ntiles;
    float *out;              /* gated: y [R, I]; plain: y_rows [R, H] */
    uint32_t *rowmax;        /* gated: [R] bits of amax |y| (zeroed before) */
    int act_fn;
};

/* Dynamic shared memory: STAGES x (activation box, 2 weight blocks), then the barriers. */
template <int BN, int STAGES>
struct sm90_smem_plan {
    static constexpr int act_bytes = BN * SM90_BK;
    static constexpr int stage_bytes = act_bytes + SM90_CONSUMERS * SM90_W_STAGE_BYTES;
    static constexpr int bar_offset = STAGES * stage_bytes;
    static constexpr int bytes = bar_offset + 2 * STAGES * 8 + 1024; /* + alignment slack */
};

/* CTA raster: groups of 8 M tiles sweep the weight blocks together, so a wave of CTAs reads
 * ~8 activation tiles and ~16 weight block pairs (a few MB, L2-resident) instead of every
 * activation tile once per weight block. */
__device__ __forceinline__ bool sm90_raster(int64_t pid, int64_t mt, int64_t nbp, int64_t *m, int64_t *n)
{
    const int64_t GM = 8;
    if (pid >= mt * nbp) return false;
    int64_t per_group = GM * nbp, grp = pid / per_group, first = grp * GM;
    int64_t size = min(mt - first, GM), in = pid % per_group;
    *m = first + in % size;
    *n = in / size;
    return true;
}

/* The consumer's K loop: for each stage, for each run of SPG k32 steps inside it (SPG divides
 * g/32, so a run lies inside one K group b): convert A, SPG wgmmas into tmp, wait, promote
 * acc += S[n, b] * tmp. SPG = 1 promotes every k32 step (GEMM-level error 1-2e-4 in the lab,
 * against 2-4e-4 promoting once per group of 128): wgmma's FP8 path does not sum even one
 * step's products exactly, unlike mma.sync (dev/kernels/tc_accum_probe.cu), which is why this
 * backend misses the GPU tolerance (docs/numerics.md, "cuda_sm90"). */
template <int BN, int STAGES, int SPG>
__device__ __forceinline__ void sm90_consume(const sm90_gemm_args &p, char *smem, uint64_t *full,
                                             uint64_t *empty, int wg, int64_t e, int64_t rb,
                                             float (&acc)[BN / 2])
{
    using plan = sm90_smem_plan<BN, STAGES>;
    const int t = threadIdx.x & 127, warp = t >> 5, lane = t & 31, gid = lane >> 2;
    const int64_t nks = p.K / 32, KB = (p.K + SM90_BK - 1) / SM90_BK, groups = p.K / p.g;
    const int steps_per_group = p.g / 32;
    const float *ws = p.ws + ((e * p.nrb + rb) * groups) * 64 + warp * 16 + gid;
    float tmp[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
    for (int64_t kb = 0; kb < KB; kb++) {
        const int s = (int)(kb % STAGES);
        sm90_bar_wait(&full[s], (uint32_t)((kb / STAGES) & 1));
        char *stage = smem + s * plan::stage_bytes;
        const uint2 *wsm = (const uint2 *)(stage + plan::act_bytes + wg * SM90_W_STAGE_BYTES) + t * 4;
        const uint64_t desc = sm90_desc_k128(stage);
#pragma unroll
        for (int gi = 0; gi < 4 / SPG; gi++) {
            const int64_t ks0 = kb * 4 + gi * SPG;
            if (ks0 >= nks) break;
            const int64_t b = ks0 / steps_per_group;
            const float s_lo = __ldg(ws + b * 64), s_hi = __ldg(ws + b * 64 + 8);
            uint32_t a[SPG][4];
#pragma unroll
            for (int j = 0; j < SPG; j++) {
                uint2 v = wsm[gi * SPG + j];
                a[j][0] = sm89_int4x4_to_e4m3(v.x & 0xffffu);
                a[j][1] = sm89_int4x4_to_e4m3(v.y & 0xffffu);
                a[j][2] = sm89_int4x4_to_e4m3(v.x >> 16);
                a[j][3] = sm89_int4x4_to_e4m3(v.y >> 16);
            }
#pragma unroll
            for (int i = 0; i < BN / 2; i++) sm90_fence_reg(tmp[i]);
            sm90_wgmma_fence();
#pragma unroll
            for (int j = 0; j < SPG; j++)
                sm90_wgmma<BN>(tmp, a[j], desc + (uint64_t)(((gi * SPG + j) * 32) >> 4), j > 0);
            sm90_wgmma_commit();
            sm90_wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < BN / 2; i++) sm90_fence_reg(tmp[i]);
#pragma unroll
            for (int i = 0; i < BN / 2; i++) acc[i] = fmaf((i & 2) ? s_hi : s_lo, tmp[i], acc[i]);
        }
        if (lane == 0) sm90_bar_arrive(&empty[s]);
    }
}

/* Epilogue: h = s_t * (C * acc); gated: y = act(gate) * up and the row amax; plain: out = h. */
template <int BN, bool GATED>
__device__ __forceinline__ void sm90_epilogue(const sm90_gemm_args &p, int64_t e, int64_t rb,
                                              int row0, int row_end, const float (&acc)[BN / 2])
{
    const int t = threadIdx.x & 127, warp = t >> 5, lane = t & 31, gid = lane >> 2, tig = lane & 3;
    const float *wc = p.wc + (e * p.nrb + rb) * 64 + warp * 16 + gid;
    const float c_lo = wc[0], c_hi = wc[8];
    const int64_t ch_lo = GATED ? rb * 32 + warp * 8 + gid : rb * 64 + warp * 16 + gid;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        uint32_t colmax[2] = {0u, 0u};
#pragma unroll
        for (int c = 0; c < 2; c++) {
            const int row = row0 + j * 8 + tig * 2 + c;
            if (row >= row_end) continue;
            const float sa = p.act_scale[row];
            const float h_lo = sa * (c_lo * acc[4 * j + c]), h_hi = sa * (c_hi * acc[4 * j + 2 + c]);
            if (GATED) {
                if (ch_lo >= p.n_out) continue;
                const float y = sm89_activate(p.act_fn, h_lo, h_hi);
                p.out[(int64_t)row * p.n_out + ch_lo] = y;
                colmax[c] = w4a8moe_f32_bits(fabsf(y));
            } else {
                if (ch_lo < p.n_out) p.out[(int64_t)row * p.n_out + ch_lo] = h_lo;
                if (ch_lo + 8 < p.n_out) p.out[(int64_t)row * p.n_out + ch_lo + 8] = h_hi;
            }
        }
        if (GATED) {
#pragma unroll
            for (int c = 0; c < 2; c++) {
                uint32_t m = colmax[c];
                m = max(m, __shfl_xor_sync(0xffffffffu, m, 4));
                m = max(m, __shfl_xor_sync(0xffffffffu, m, 8));
                m = max(m, __shfl_xor_sync(0xffffffffu, m, 16));
                const int row = row0 + j * 8 + tig * 2 + c;
                if (gid == 0 && row < row_end && m) atomicMax(&p.rowmax[row], m);
            }
        }
    }
}

/*
 * Grid: (M tiles bound x NRB/2) CTAs in one dimension, rastered by sm90_raster; block
 * SM90_THREADS; dynamic shared memory sm90_smem_plan::bytes. tmap_act: the [R, K] e4m3 input
 * as a 2-D tensor map with a (128, BN) box and the 128-byte swizzle.
 */
template <int BN, int STAGES, int SPG, bool GATED>
static __global__ void __launch_bounds__(SM90_THREADS, 1)
    sm90_gemm_kernel(const __grid_constant__ CUtensorMap tmap_act, sm90_gemm_args p)
{
#if SM90_ENABLED
    using plan = sm90_smem_plan<BN, STAGES>;
    extern __shared__ __align__(1024) char smem_raw[];
    char *smem = (char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    uint64_t *full = (uint64_t *)(smem + plan::bar_offset), *empty = full + STAGES;

    const int64_t nbp = p.nrb / 2, mt = *p.ntiles;
    int64_t m, n;
    if (!sm90_raster(blockIdx.x, mt, nbp, &m, &n)) return;
    const int2 tile = p.tiles[m];
    const int64_t e = tile.x;
    const int row0 = tile.y, row_end = p.offsets[e + 1];
    const int wg = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&empty[s], SM90_CONSUMERS * 4);
        }
        sm90_bar_init_fence();
    }
    __syncthreads();

    const int64_t KB = (p.K + SM90_BK - 1) / SM90_BK;
    if (wg == 0) { /* producer */
        sm90_reg_dealloc<40>();
        if (threadIdx.x == 0) {
            sm90_prefetch_tmap(&tmap_act);
            const char *wbase = (const char *)p.wq + ((e * p.nrb + 2 * n) * KB) * SM90_W_STAGE_BYTES;
            const int64_t wstride = KB * SM90_W_STAGE_BYTES; /* next 64-row block */
            for (int64_t kb = 0; kb < KB; kb++) {
                const int s = (int)(kb % STAGES);
                sm90_bar_wait(&empty[s], (uint32_t)(((kb / STAGES) & 1) ^ 1));
                char *stage = smem + s * plan::stage_bytes;
                sm90_bar_expect_tx(&full[s], plan::stage_bytes);
                sm90_tma_load_2d(stage, &tmap_act, (int32_t)(kb * SM90_BK), row0, &full[s]);
                for (int c = 0; c < SM90_CONSUMERS; c++)
                    sm90_bulk_load(stage + plan::act_bytes + c * SM90_W_STAGE_BYTES,
                                   wbase + c * wstride + kb * SM90_W_STAGE_BYTES,
                                   SM90_W_STAGE_BYTES, &full[s]);
            }
        }
    } else { /* consumers */
        sm90_reg_alloc<232>();
        const int c = wg - 1;
        const int64_t rb = 2 * n + c;
        float acc[BN / 2];
        sm90_consume<BN, STAGES, SPG>(p, smem, full, empty, c, e, rb, acc);
        sm90_epilogue<BN, GATED>(p, e, rb, row0, row_end, acc);
    }
#endif
}

/* ---- host side: the tensor map and the launch ---------------------------------------------- */

typedef CUresult (*sm90_encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                         const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                         const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                         CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* cuTensorMapEncodeTiled through the runtime's driver entry point (the library links the static
 * runtime only, never libcuda directly). NULL when the driver lacks it. */
static inline sm90_encode_tiled_fn sm90_encode_fn(void)
{
    static sm90_encode_tiled_fn fn = NULL;
    if (!fn) {
        void *f = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                             &q) == cudaSuccess && q == cudaDriverEntryPointSuccess)
            fn = (sm90_encode_tiled_fn)f;
        else
            cudaGetLastError();
    }
    return fn;
}

/* The [rows, K] e4m3 matrix at a as a 2-D tensor map with a (128, bn) box, 128-byte swizzle;
 * rows past the end read as zeros. K must be a multiple of 16 (the row pitch), a 16-aligned. */
static inline int sm90_tmap_act(CUtensorMap *m, const void *a, int64_t rows, int64_t K, int bn)
{
    sm90_encode_tiled_fn fn = sm90_encode_fn();
    if (!fn || K % 16 || ((uintptr_t)a & 15)) return -1;
    cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)(rows > 0 ? rows : 1)};
    cuuint64_t strides[1] = {(cuuint64_t)K};
    cuuint32_t box[2] = {SM90_BK, (cuuint32_t)bn}, el[2] = {1, 1};
    CUresult r = fn(m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)a, dims, strides, box, el,
                    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : -1;
}

template <int BN, int STAGES, int SPG, bool GATED>
static cudaError_t sm90_gemm_launch_spg(const CUtensorMap &tm, const sm90_gemm_args &p,
                                        unsigned tiles_bound, cudaStream_t st)
{
    using plan = sm90_smem_plan<BN, STAGES>;
    auto kern = sm90_gemm_kernel<BN, STAGES, SPG, GATED>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, plan::bytes);
    if (e != cudaSuccess) return e;
    unsigned grid = tiles_bound * (unsigned)(p.nrb / 2);
    kern<<<grid, SM90_THREADS, plan::bytes, st>>>(tm, p);
    return cudaGetLastError();
}

/* One grouped GEMM over the tiles of p (tiles of BN rows). precise: promote every k32 step
 * (the library's choice); otherwise once per K group (g picks the step, DeepGEMM's way). */
template <int BN, int STAGES, bool GATED>
static cudaError_t sm90_gemm_launch(const CUtensorMap &tm, const sm90_gemm_args &p,
                                    unsigned tiles_bound, cudaStream_t st, bool precise = true)
{
    if (precise) return sm90_gemm_launch_spg<BN, STAGES, 1, GATED>(tm, p, tiles_bound, st);
    switch (p.g) {
    case 32: return sm90_gemm_launch_spg<BN, STAGES, 1, GATED>(tm, p, tiles_bound, st);
    case 64: return sm90_gemm_launch_spg<BN, STAGES, 2, GATED>(tm, p, tiles_bound, st);
    case 128: return sm90_gemm_launch_spg<BN, STAGES, 4, GATED>(tm, p, tiles_bound, st);
    default: return cudaErrorInvalidValue;
    }
}

#endif /* W4A8MOE_SM90_GROUPED_GEMM_CUH */
