/*
 * sm89_grouped_gemm.cuh — device code of the cuda_sm89 experts (src/cuda/cuda_sm89_experts.cu):
 * grouped W4A8 GEMMs on mma.sync m16n8k32 e4m3 (sm_89+), the weight packing kernels, the tile
 * schedule and the intermediate requantisation.
 *
 * Orientation ("swap AB"): the weights are the mma's A operand (16 output channels a tile), the
 * routed rows its B operand (8 rows a fragment), so a decode step with one row per expert
 * wastes nothing in M. C[channel, row] accumulates in f32.
 *
 * Packed weight layout (made on the device by sm89_pack_kernel from the logical form):
 *   wq [E_local, N/16, K/32, 32 lanes] uint2: lane l = (gid = l/4, tig = l%4) holds the logical
 *      int32 words (row gid, word 4*ks + tig) and (row gid + 8, same word) of its 16-row tile,
 *      nibbles unchanged (q + 8). Element i of a word is physical column 32*ks + 8*tig + i; the
 *      mma's logical K index of byte i of register a0/a1 is 4*tig + i and of a2/a3 is
 *      16 + 4*tig + i, so nibbles 0-3 feed a0 (a1 for row gid + 8) and nibbles 4-7 feed a2 (a3).
 *      The B fragment of a row is then the 8 contiguous bytes at column 32*ks + 8*tig.
 *   ws [E_local, N/16, K/g, 16] f32 group scales, tile-major; wc [E_local, N] f32 channel scales.
 * Each k32 step is an mma from a zero accumulator (a sum of 32 exact products); the steps of a
 * group add up to P_b in f32, and each group is promoted with its own scale into an f64
 * accumulator (acc += S[n, b] * P_b), for any g: the same sums cpu_ref makes, so the f32 h
 * rounds the same way and the fp8 requantisation of y does not flip codes against cpu_ref.
 */
#ifndef W4A8MOE_SM89_GROUPED_GEMM_CUH
#define W4A8MOE_SM89_GROUPED_GEMM_CUH

#include "../../common/quant.h"
#include "block_scan.cuh"
#include "contract_math.cuh"
#include "frag_order.cuh"

#include <stdint.h>
#include "pdl.cuh"

/* Four int4 nibbles (q + 8, selector order) → four e4m3 bytes, exact: two 8-entry byte lookups
 * (prmt) and a per-byte choice by the nibble's top bit (q >= 0). */
__device__ __forceinline__ uint32_t sm89_int4x4_to_e4m3(uint32_t w16)
{
    const uint32_t neg0 = 0xCACCCED0u, neg1 = 0xB8C0C4C8u; /* q = -8..-1 */
    const uint32_t pos0 = 0x44403800u, pos1 = 0x4E4C4A48u; /* q =  0.. 7 */
    uint32_t idx = w16 & 0x7777u;
    uint32_t lo = __byte_perm(neg0, neg1, idx);
    uint32_t hi = __byte_perm(pos0, pos1, idx);
    uint32_t sel = ((w16 & 0x8888u) >> 1) | 0x3210u;
    return __byte_perm(lo, hi, sel);
}

__device__ __forceinline__ void sm89_mma_e4m3(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
#else
    d[0] = d[1] = d[2] = d[3] = 0.0f; /* never launched below sm_89 (device predicate) */
#endif
}

/* One k32 step of a decode/grouped tile: the NA weight tiles' packed words wv converted to
 * e4m3, multiplied by the NT activation fragments bq, each product added into P (f32: the
 * step's sum is exact in the tensor core, the steps of a group add in f32). */
template <int NA, int NT>
__device__ __forceinline__ void sm89_mma_step(float (&P)[NA][NT][4], const uint2 (&wv)[NA], const uint2 (&bq)[NT])
{
    uint32_t af[NA][4];
#pragma unroll
    for (int a = 0; a < NA; a++) {
        af[a][0] = sm89_int4x4_to_e4m3(wv[a].x & 0xffffu);
        af[a][1] = sm89_int4x4_to_e4m3(wv[a].y & 0xffffu);
        af[a][2] = sm89_int4x4_to_e4m3(wv[a].x >> 16);
        af[a][3] = sm89_int4x4_to_e4m3(wv[a].y >> 16);
    }
#pragma unroll
    for (int f = 0; f < NT; f++) {
#pragma unroll
        for (int a = 0; a < NA; a++) {
            float d[4];
            sm89_mma_e4m3(d, af[a], bq[f].x, bq[f].y);
#pragma unroll
            for (int i = 0; i < 4; i++) P[a][f][i] += d[i];
        }
    }
}

/* The max of m over the 8 lanes of a warp that share tig (one column of an mma tile, i.e. one
 * routed row), into rowmax[row] by the gid-0 lane (0 changes nothing: rowmax starts zeroed). */
__device__ __forceinline__ void sm89_rowmax_add(uint32_t m, int gid, int row, int row_end, uint32_t *rowmax)
{
    m = max(m, __shfl_xor_sync(0xffffffffu, m, 4));
    m = max(m, __shfl_xor_sync(0xffffffffu, m, 8));
    m = max(m, __shfl_xor_sync(0xffffffffu, m, 16));
    if (gid == 0 && row < row_end && m) atomicMax(&rowmax[row], m);
}

/* ---- packing (once, at create) ---------------------------------------------------------- */

/* packed int32 [rows, K/8] → wq tiles [rows/16, K/32, 32] uint2 (see the header). */
static __global__ void sm89_pack_kernel(const int32_t *__restrict__ packed, int64_t rows, int64_t K,
                                 uint2 *__restrict__ wq)
{
    int64_t nks = K / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows / 16 * nks * 32) return;
    int lane = (int)(i & 31), gid = lane >> 2, tig = lane & 3;
    int64_t ks = (i >> 5) % nks, tile = (i >> 5) / nks;
    int64_t word = ks * 4 + tig, wpr = K / 8;
    uint2 v;
    v.x = (uint32_t)packed[(tile * 16 + gid) * wpr + word];
    v.y = (uint32_t)packed[(tile * 16 + gid + 8) * wpr + word];
    wq[i] = v;
}

/* scales [rows, K/g] (dt: 0 bf16, 1 f16, 2 f32) → ws [rows/16, K/g, 16] f32; channel [rows]
 * (NULL: ones) → wc [rows]. */
static __global__ void sm89_pack_scales_kernel(const void *__restrict__ scale, int dt, int64_t rows,
                                        int64_t groups, const float *__restrict__ channel,
                                        float *__restrict__ ws, float *__restrict__ wc)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows) wc[i] = channel ? channel[i] : 1.0f;
    if (i >= rows * groups) return;
    int64_t r16 = i & 15, b = (i >> 4) % groups, tile = (i >> 4) / groups;
    ws[i] = contract_widen_at(scale, dt, (tile * 16 + r16) * groups + b);
}

/* ---- per forward --------------------------------------------------------------------------- */

/* One block of 1024 threads: M tiles of `bt` rows per local expert → tiles[i] = (expert, row0),
 * *ntiles = their count. offsets [nl + 1]. Also zeroes GEMM1's row amax [R] (saves a memset). */
static __global__ void sm89_schedule_kernel(const int32_t *__restrict__ offsets, int nl, int bt,
                                     int2 *__restrict__ tiles, int32_t *__restrict__ ntiles,
                                     uint32_t *__restrict__ rowmax, int64_t R)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) rowmax[r] = 0u; /* GEMM1's amax */
    __shared__ int32_t part[1024];
    int per = (nl + 1023) / 1024;
    int lo = threadIdx.x * per, hi = min(lo + per, nl);
    int32_t mine = 0;
    for (int e = lo; e < hi; e++) mine += (offsets[e + 1] - offsets[e] + bt - 1) / bt;
    int32_t at = block_exclusive_scan_1024(part, mine);
    for (int e = lo; e < hi; e++)
        for (int32_t r = offsets[e]; r < offsets[e + 1]; r += bt) tiles[at++] = make_int2(e, r);
    if (threadIdx.x == 1023) *ntiles = part[1023];
}

struct sm89_gemm_args {
    const uint2 *wq;          /* [nl, N_rows/16, K/32, 32] */
    const float *ws;          /* [nl, N_rows/16, K/g, 16] */
    const float *wc;          /* [nl, N_rows] */
    int64_t n_rows;           /* weight rows: 2I (GEMM1) or H (GEMM2) */
    int64_t n_out;            /* output channels: I (GEMM1, gated) or H */
    int64_t K;                /* H or I */
    int g;
    const uint8_t *act;       /* [R, K] e4m3 */
    const float *act_scale;   /* [R] */
    const int32_t *offsets;   /* [nl + 1] */
    const int2 *tiles;        /* [*ntiles] (expert, row0) */
    const int32_t *ntiles;
    float *out;               /* GEMM1: y [R, I]; GEMM2: y_rows [R, H] */
    uint32_t *rowmax;         /* GEMM1: [R] bits of amax |y| (zeroed before) */
    int act_fn;
};

/*
 * The end of a block of the grouped GEMMs (sm89_gemm_kernel, sm89_decode_kernel): split-K
 * partials summed in kq order through `red`, then the epilogue. GATED: y = act(h_gate)·h_up and
 * the row amax; otherwise out = h. h = s * (C * acc) rounded once to f32, the order cpu_ref uses.
 */
template <int NT, int KS, bool GATED>
__device__ __forceinline__ void sm89_finish(const sm89_gemm_args &p, double (&acc)[GATED ? 2 : 1][NT][4],
                                            double *red, int e, int row0, int row_end, int64_t ct,
                                            bool valid)
{
    constexpr int WN = 4 / KS, NA = GATED ? 2 : 1, ACC = NT * 4 * NA;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int wn = warp / KS, kq = warp % KS;
    if (KS > 1) { /* split-K: warps kq > 0 hand their partials to kq = 0, summed in kq order */
        double *mine = red + ((kq - 1) * WN + wn) * 32 * ACC + lane;
        if (kq > 0) {
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int f = 0; f < NT; f++)
#pragma unroll
                    for (int i = 0; i < 4; i++) mine[((a * NT + f) * 4 + i) * 32] = acc[a][f][i];
        }
        __syncthreads();
        if (kq > 0) return;
        for (int q = 1; q < KS; q++) {
            const double *src = red + ((q - 1) * WN + wn) * 32 * ACC + lane;
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int f = 0; f < NT; f++)
#pragma unroll
                    for (int i = 0; i < 4; i++) acc[a][f][i] += src[((a * NT + f) * 4 + i) * 32];
        }
    }
    if (!valid) return;

    const float *wc = p.wc + (int64_t)e * p.n_rows;
#pragma unroll
    for (int f = 0; f < NT; f++) {
        uint32_t colmax[2] = {0u, 0u};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = row0 + f * 8 + tig * 2 + (i & 1);
            int64_t n = ct * 16 + gid + (i >= 2 ? 8 : 0);
            if (row >= row_end) continue;
            double sa = (double)p.act_scale[row];
            if (GATED) {
                float hg = (float)(sa * ((double)wc[n] * acc[0][f][i]));
                float hu = (float)(sa * ((double)wc[p.n_out + n] * acc[NA - 1][f][i]));
                float y = contract_activate(p.act_fn, hg, hu);
                p.out[(int64_t)row * p.n_out + n] = y;
                uint32_t bits = w4a8moe_f32_bits(fabsf(y));
                colmax[i & 1] = max(colmax[i & 1], bits);
            } else {
                p.out[(int64_t)row * p.n_out + n] = (float)(sa * ((double)wc[n] * acc[0][f][i]));
            }
        }
        if (GATED) {
#pragma unroll
            for (int c = 0; c < 2; c++) {
                sm89_rowmax_add(colmax[c], gid, row0 + f * 8 + tig * 2 + c, row_end, p.rowmax);
            }
        }
    }
}

/*
 * Grid (M tiles bound, ceil(n_out/16 / (4/KS))), block 128. GATED: each warp pairs gate tile
 * ct with up tile ct + I/16, and the epilogue writes y = act(gate)·up and the row amax.
 * Otherwise out = r · C · acc. a: [R, K] e4m3 rows grouped by expert.
 */
template <int NT, int KS, bool GATED>
static __global__ void __launch_bounds__(128) sm89_gemm_kernel(sm89_gemm_args p)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    constexpr int WN = 4 / KS, NA = GATED ? 2 : 1, ACC = NT * 4 * NA;
    __shared__ double red[KS > 1 ? (KS - 1) * WN * 32 * ACC : 1];
    if ((int)blockIdx.x >= *p.ntiles) return;
    const int2 tile = p.tiles[blockIdx.x];
    const int e = tile.x, row0 = tile.y, row_end = p.offsets[e + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int wn = warp / KS, kq = warp % KS;
    const int64_t ct = (int64_t)blockIdx.y * WN + wn, ntiles_out = p.n_out / 16;
    const bool valid = ct < ntiles_out;
    const int64_t nks = p.K / 32, groups = p.K / p.g, tiles_rows = p.n_rows / 16;
    const int64_t ks0 = kq * nks / KS, ks1 = (kq + 1) * nks / KS;

    /* acc: sum over groups of S[n, b] * P_b in f64, as cpu_ref sums: P_b (the k32 mma sums
     * of the group, exact integers times e4m3 steps) and S*P_b are exact, so h rounds to f32
     * like cpu_ref's and the fp8 requantisation of y sees the same values. */
    double acc[NA][NT][4];
#pragma unroll
    for (int a = 0; a < NA; a++)
#pragma unroll
        for (int f = 0; f < NT; f++) acc[a][f][0] = acc[a][f][1] = acc[a][f][2] = acc[a][f][3] = 0.0;

    if (valid) {
        const uint2 *wq[NA];
        const float *ws[NA];
#pragma unroll
        for (int a = 0; a < NA; a++) {
            int64_t t = (int64_t)e * tiles_rows + ct + a * ntiles_out;
            wq[a] = p.wq + t * nks * 32 + lane;
            ws[a] = p.ws + t * groups * 16 + gid;
        }
        const uint8_t *ap[NT];
#pragma unroll
        for (int f = 0; f < NT; f++) {
            int r = min(row0 + f * 8 + gid, row_end - 1);
            ap[f] = p.act + (int64_t)r * p.K + tig * 8;
        }
        const int64_t spg = p.g / 32; /* k32 steps per group */
        for (int64_t ks = ks0; ks < ks1;) {
            const int64_t b = ks / spg, gend = min((b + 1) * spg, ks1);
            float P[NA][NT][4];
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int f = 0; f < NT; f++) P[a][f][0] = P[a][f][1] = P[a][f][2] = P[a][f][3] = 0.0f;
            /* up to 4 k32 steps a round: every load of the round is issued before the first
             * mma, so each warp keeps ~4x the bytes in flight (latency, not issue, limits) */
            for (; ks < gend; ks += 4) {
                uint2 wv[4][NA], bq[4][NT];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (ks + j < gend) {
#pragma unroll
                        for (int a = 0; a < NA; a++) wv[j][a] = __ldg(wq[a] + (ks + j) * 32);
#pragma unroll
                        for (int f = 0; f < NT; f++) bq[j][f] = __ldg((const uint2 *)(ap[f] + (ks + j) * 32));
                    }
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (ks + j >= gend) break;
                    sm89_mma_step<NA, NT>(P, wv[j], bq[j]);
                }
            }
            ks = gend;
#pragma unroll
            for (int a = 0; a < NA; a++) {
                double s0 = (double)__ldg(ws[a] + b * 16), s1 = (double)__ldg(ws[a] + b * 16 + 8);
#pragma unroll
                for (int f = 0; f < NT; f++) {
                    acc[a][f][0] = fma(s0, (double)P[a][f][0], acc[a][f][0]);
                    acc[a][f][1] = fma(s0, (double)P[a][f][1], acc[a][f][1]);
                    acc[a][f][2] = fma(s1, (double)P[a][f][2], acc[a][f][2]);
                    acc[a][f][3] = fma(s1, (double)P[a][f][3], acc[a][f][3]);
                }
            }
        }
    }

    sm89_finish<NT, KS, GATED>(p, acc, red, e, row0, row_end, ct, valid);
}

/* The per-row elementwise kernels (the requantisation, cuda_sm90's widening) run a grid of
 * (rows, slices of ROW_SLICE elements), block 256, four elements a thread: a whole row in one
 * block was a chain of dependent load-convert-store rounds, 14 of them for Mixtral's I = 14,336
 * (18.5 µs at T = 1, where a few rows leave the GPU idle; docs/PERFORMANCE.md, rounds 15, 20). */
#define ROW_SLICE 1024 /* 256 threads x 4 elements */
static inline dim3 row_slice_grid(int64_t rows, int64_t n)
{
    return dim3((unsigned)rows, (unsigned)((n + ROW_SLICE - 1) / ROW_SLICE));
}

/* Step 5 for each routed row: r = act_scale(amax) (static: r_static), b = e4m3(y / r).
 * Grid row_slice_grid(R bound, I), block 256; rows at or past offsets[nl] exit.
 * y [R, I] f32 → b [R, I] e4m3 codes, or (WIDE, cuda_sm90's f16 GEMM2 input) the same codes
 * widened to f16, exactly; FRAG (with WIDE): stored in fragment order (kernels/frag_order.cuh),
 * for the small-batch kernel. */
template <bool WIDE, bool FRAG = false>
static __global__ void sm89_requant_kernel(const float *__restrict__ y, const uint32_t *__restrict__ rowmax,
                                           const int32_t *__restrict__ total, int64_t I, float r_static,
                                           void *__restrict__ b, float *__restrict__ r_out)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int64_t row = blockIdx.x;
    if (row >= *total) return;
    float r = r_static > 0.0f ? r_static : w4a8moe_act_scale(w4a8moe_bits_f32(rowmax[row]));
    const float *yr = y + row * I;
    for (int64_t i = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * 4; i < I;
         i += (int64_t)gridDim.y * blockDim.x * 4) {
        float4 v = *(const float4 *)(yr + i);
        uint32_t c[4] = {w4a8moe_f32_to_e4m3(__fdiv_rn(v.x, r)), w4a8moe_f32_to_e4m3(__fdiv_rn(v.y, r)),
                         w4a8moe_f32_to_e4m3(__fdiv_rn(v.z, r)), w4a8moe_f32_to_e4m3(__fdiv_rn(v.w, r))};
        if (WIDE) {
            uint32_t w[4];
            for (int k = 0; k < 4; k++) w[k] = w4a8moe_f32_to_f16(w4a8moe_e4m3_to_f32((uint8_t)c[k]));
            if (FRAG)
                frag_order_store4((uint16_t *)b + row * I, i, w[0] | w[1] << 16, w[2] | w[3] << 16);
            else
                *(uint2 *)((uint16_t *)b + row * I + i) = make_uint2(w[0] | w[1] << 16, w[2] | w[3] << 16);
        } else {
            *(uint32_t *)((uint8_t *)b + row * I + i) = c[0] | c[1] << 8 | c[2] << 16 | c[3] << 24;
        }
    }
    if (blockIdx.y == 0 && threadIdx.x == 0) r_out[row] = r;
}

#endif /* W4A8MOE_SM89_GROUPED_GEMM_CUH */
