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
 * Two operand types (sm90_op): e4m3 wgmma (k32) on the e4m3 activations, and f16 wgmma (k16)
 * on the activations widened to f16 with the weights widened in registers (both exact: at most
 * 4 significant bits). The library runs f16 (cuda_sm90_experts.cu): only its sums are exact
 * enough for the requantisation of step 5; the e4m3 variant stays for the lab's comparison
 * (docs/numerics.md, "Tolerance"). The f16 kernel with the group scales folded into the weights
 * (no promotion) is in sm90_scaled_gemm.cuh; this one promotes each group and is its fallback.
 *
 * CTA: warpgroup 0 is the producer (one thread issues the copies; setmaxnreg gives its registers
 * to the others), warpgroups 1 and 2 the consumers (64 weight rows each, BN routed rows).
 * A STAGES-deep ring of (activation box BN x 128 bytes, 2 x 4 KB of packed weights) with a
 * full and an empty mbarrier per stage (released by every consumer thread).
 *
 * Packed weight layout (sm90_pack_kernel, once at create), for a matrix of N rows and K columns:
 *   wq [E, NRB, KB, 128 threads, 4 k32 steps] uint2, NRB = 64-row blocks rounded up to even,
 *      (f16: 2 k32 steps, KB = ceil(K / 64); each (row block, KB) block may be followed by
 *      padding, kb_stride, where the scaled kernel keeps its scales)
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
#include "pdl.cuh"

#define SM90_BK 128          /* K per stage: one 128-byte swizzled row of e4m3 */
#define SM90_WG_ROWS 64      /* weight rows per consumer warpgroup (wgmma M) */
#define SM90_CONSUMERS 2     /* consumer warpgroups per CTA */
#define SM90_BM (SM90_WG_ROWS * SM90_CONSUMERS)
#define SM90_W_STAGE_BYTES (SM90_WG_ROWS * SM90_BK / 2) /* 4 KB of int4 per warpgroup a stage */
#define SM90_THREADS (128 * (SM90_CONSUMERS + 1))
/* Arrivals that release a stage of this kernel's ring: every consumer thread arrives after
 * fencing its own reads of the stage (a fence in one lane after __syncwarp orders the same on
 * paper, but compute-sanitizer's racecheck reported the other lanes' reads against the refill;
 * each thread arriving for itself is the form it follows) */
#define SM90_PROMOTE_ARRIVALS (SM90_CONSUMERS * 128)

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

/* packed [rows, K/8] int32 logical words → wq (see the header): uint2 number i (a thread of
 * sm90_pack_kernel each; host-callable for tests/test_sm90_layout.cu). rows_pad = NRB*64,
 * n_out = I (gated) or rows (plain); f16: the f16 kernels' layout (64 K a stage, nibble pairs
 * of an f16x2 register in bits i and i + 4, sm90_consume_f16); kb_stride: uint2 from one
 * (row block, K block) to the next (0: packed, 128 x steps). */
__host__ __device__ inline void sm90_pack_one(int64_t i, const int32_t *packed, int64_t n_out, int gated,
                                              int64_t K, int64_t rows_pad, int f16, int64_t kb_stride,
                                              uint2 *wq)
{
    const int steps = f16 ? 2 : 4, bk = 32 * steps;
    if (kb_stride == 0) kb_stride = 128 * steps;
    const int64_t KB = (K + bk - 1) / bk;
    if (i >= rows_pad / 64 * KB * 128 * steps) return;
    int s = (int)(i % steps), t = (int)((i / steps) & 127);
    int64_t kb = (i / steps / 128) % KB, rb = (i / steps / 128) / KB;
    int w = t >> 5, gid = (t & 31) >> 2, tig = t & 3;
    int64_t ks = kb * steps + s, wpr = K / 8;
    uint32_t v[2] = {0x88888888u, 0x88888888u};
    for (int h = 0; h < 2; h++) {
        int64_t row = sm90_logical_row(rb * 64 + w * 16 + gid + 8 * h, n_out, gated);
        if (row < 0 || ks >= K / 32) continue;
        const int32_t *src = packed + row * wpr + ks * 4;
        uint32_t out = 0;
        for (int nib = 0; nib < 8; nib++) {
            /* column within the k32 step that nibble `nib` of the register word holds */
            int col = f16 ? (nib < 4 ? 8 * nib + 2 * tig : 8 * (nib - 4) + 2 * tig + 1)
                           : (nib < 4 ? 4 * tig + nib : 16 + 4 * tig + nib - 4);
            uint32_t q = ((uint32_t)src[col >> 3] >> (4 * (col & 7))) & 15u;
            out |= q << (4 * nib);
        }
        v[h] = out;
    }
    wq[(rb * KB + kb) * kb_stride + t * steps + s] = make_uint2(v[0], v[1]);
}

static __global__ void sm90_pack_kernel(const int32_t *__restrict__ packed, int64_t n_out, int gated,
                                        int64_t K, int64_t rows_pad, int f16, int64_t kb_stride,
                                        uint2 *__restrict__ wq)
{
    sm90_pack_one((int64_t)blockIdx.x * blockDim.x + threadIdx.x, packed, n_out, gated, K, rows_pad, f16,
                  kb_stride, wq);
}

/* e4m3 [R, K] → f16 [R, K], exact (4 significant bits), the wgmma kernels' input (TMA); rows at
 * or past *total exit. Grid row_slice_grid(R bound, K), block 256 (kernels/sm89_grouped_gemm.cuh). */
static __global__ void sm90_widen_kernel(const uint8_t *__restrict__ a, const int32_t *__restrict__ total,
                                         int64_t K, uint16_t *__restrict__ out)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int64_t row = blockIdx.x;
    if (row >= *total) return;
    for (int64_t i = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * 4; i < K;
         i += (int64_t)gridDim.y * blockDim.x * 4) {
        uint32_t q = *(const uint32_t *)(a + row * K + i);
        uint2 o;
        o.x = (uint32_t)w4a8moe_f32_to_f16(w4a8moe_e4m3_to_f32((uint8_t)q)) |
              (uint32_t)w4a8moe_f32_to_f16(w4a8moe_e4m3_to_f32((uint8_t)(q >> 8))) << 16;
        o.y = (uint32_t)w4a8moe_f32_to_f16(w4a8moe_e4m3_to_f32((uint8_t)(q >> 16))) |
              (uint32_t)w4a8moe_f32_to_f16(w4a8moe_e4m3_to_f32((uint8_t)(q >> 24))) << 16;
        *(uint2 *)(out + row * K + i) = o;
    }
}

/* scales [rows, K/g] (dt: 0 bf16, 1 f16, 2 f32) and channel [rows] (NULL: ones) →
 * ws [NRB, K/g, 64], wc [NRB*64] in physical row order; element i (one thread each). */
__host__ __device__ inline void sm90_pack_scales_one(int64_t i, const void *scale, int dt, int64_t n_out,
                                                     int gated, int64_t groups, int64_t rows_pad,
                                                     const float *channel, float *ws, float *wc)
{
    if (i < rows_pad) {
        int64_t row = sm90_logical_row(i, n_out, gated);
        wc[i] = row < 0 ? 0.0f : channel ? channel[row] : 1.0f;
    }
    if (i >= rows_pad * groups) return;
    int64_t r = i & 63, b = (i >> 6) % groups, rb = (i >> 6) / groups;
    int64_t row = sm90_logical_row(rb * 64 + r, n_out, gated);
    float v = 0.0f;
    if (row >= 0) v = contract_widen_at(scale, dt, row * groups + b);
    ws[i] = v;
}

static __global__ void sm90_pack_scales_kernel(const void *__restrict__ scale, int dt, int64_t n_out,
                                               int gated, int64_t groups, int64_t rows_pad,
                                               const float *__restrict__ channel, float *__restrict__ ws,
                                               float *__restrict__ wc)
{
    sm90_pack_scales_one((int64_t)blockIdx.x * blockDim.x + threadIdx.x, scale, dt, n_out, gated, groups,
                         rows_pad, channel, ws, wc);
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
    int w_block;             /* bytes from one (row block, K block) of wq to the next; 0: dense */
    /* the scaled kernel's K split (0 or 1: none): CTA i sums K part i % ksplit of its tile and
     * writes it unscaled to plane i % ksplit — plane 0 is out, plane j > 0 part + (j - 1) * plane
     * — for sm90s_split_reduce_kernel (sm90_scaled_gemm.cuh) to sum in plane order */
    int ksplit;
    float *part;
    int64_t plane;           /* floats a plane: rows of this forward x n_out */
};

/* The two operand types of the kernel: e4m3 wgmma (k32 steps, 128 K a stage) and f16 wgmma on
 * the exactly widened values (k16 steps, 64 K a stage). A stage's activation row is 128 bytes
 * either way (the swizzle span); a stage's packed int4 is 64 rows x BK / 2 bytes a warpgroup. */
template <bool F16>
struct sm90_op {
    static constexpr int bk = F16 ? 64 : SM90_BK;           /* K per stage */
    static constexpr int w_stage = SM90_WG_ROWS * bk / 2;    /* int4 bytes a warpgroup a stage */
    static constexpr int steps = bk / 32;                    /* k32 steps a stage */
};

/* CTAs an SM for tiles of BN rows and a ring of `bytes` of shared memory: three when three fit
 * (228 KB an SM, 1 KB of it reserved a CTA) and BN <= 32, two when two fit and BN <= 64 (the
 * consumers' registers below), so that one CTA's ring fill, polls and epilogue overlap the
 * others' K loops (round 25: the 64-row tiles, one CTA an SM, kept the tensor pipe 30 % busy and
 * DRAM at 20 %; round 28: two CTAs, 21-25 % faster). The registers follow: a CTA launches with
 * 65,536 / (384 CTAs) a thread, 168, 80 or 56, and its producer gives back what its consumers
 * take (setmaxnreg): 40 → 232, 32 → 104, or 24 → 72. */
__host__ __device__ constexpr int sm90_ctas_per_sm(int bn, int bytes)
{
    return bn <= 32 && bytes <= 74 * 1024 ? 3 : bn <= 64 && bytes <= 113 * 1024 ? 2 : 1;
}
__host__ __device__ constexpr int sm90_producer_regs(int ctas) { return ctas == 3 ? 24 : ctas == 2 ? 32 : 40; }
__host__ __device__ constexpr int sm90_consumer_regs(int ctas) { return ctas == 3 ? 72 : ctas == 2 ? 104 : 232; }

/* Dynamic shared memory: STAGES x (activation box, 2 weight blocks), then the barriers. */
template <int BN, int STAGES, bool F16 = false>
struct sm90_smem_plan {
    static constexpr int act_bytes = BN * 128;
    static constexpr int stage_bytes = act_bytes + SM90_CONSUMERS * sm90_op<F16>::w_stage;
    static constexpr int bar_offset = STAGES * stage_bytes;
    static constexpr int bytes = bar_offset + 2 * STAGES * 8 + 1024; /* + alignment slack */
    static constexpr int ctas = sm90_ctas_per_sm(BN, bytes);
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
    const int t = threadIdx.x & 127, warp = t >> 5, gid = (t & 31) >> 2;
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
        sm90_fence_proxy_async(); /* this thread's ld.shared of the stage before its refill */
        sm90_bar_arrive(&empty[s]); /* every consumer thread (SM90_PROMOTE_ARRIVALS) */
    }
}

/* int4 (q + 8) nibbles i and i + 4 of w → f16x2, one lop3 (and, or) each: i even: (1024 + n_i,
 * 1024 + n_{i+4}) — 0x6400 | n is the f16 of 1024 + n (its last significand bits are n); i odd:
 * the nibbles are left where they are (bits 4-7 of each half), giving 1024 + 16 n, which saves
 * the shift that would bring them down (the bias removal undoes the 16, exactly). Nibbles 2, 3
 * come from w >> 8: one shift for four nibbles. */
__device__ __forceinline__ uint32_t sm90_int4x2_biased_f16x2(uint32_t w, int i)
{
    const uint32_t x = (i & 2) ? w >> 8 : w;
    uint32_t r;
    if (i & 1) /* lop3 0xEA: (x & b) | c */
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(x), "n"(0x00F000F0), "n"(0x64006400));
    else
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(x), "n"(0x000F000F), "n"(0x64006400));
    return r;
}

/* ... → f16x2 (q_i, q_{i+4}), exact: one f16x2 fma removes the bias, (1024 + n) · 1 - 1032 or
 * (1024 + 16 n) · 1/16 - 72 (every value and product an f16 integer). */
__device__ __forceinline__ uint32_t sm90_int4x2_to_f16x2(uint32_t w, int i)
{
    uint32_t r = sm90_int4x2_biased_f16x2(w, i), out = r;
#if SM90_ENABLED
    if (i & 1)
        asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(out) : "r"(r), "r"(0x2C002C00u), "r"(0xD480D480u));
    else
        asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(out) : "r"(r), "r"(0x3C003C00u), "r"(0xE408E408u));
#endif
    return out;
}

/* The f16 consumer: GSTEPS = g/32 k32 steps a K group. The tensor core's f16 products are exact
 * and its f32 accumulation adds them like an f32 sum, so a group's wgmmas accumulate into tmp
 * before the promotion acc += S[n, b] * tmp. Packed layout: as the e4m3 one with 64 K a stage
 * and, per k32 step, the nibbles of columns 2tig + {0, 8, 16, 24} in bits 0-15 and 2tig + 1 +
 * {0, 8, 16, 24} in bits 16-31, so nibble pairs (i, i + 4) are the f16x2 halves of one register.
 *
 * Pipelined as the scaled kernel's loop (sm90_scaled_gemm.cuh): step ks's two wgmmas are
 * issued, then wait<1> (step ks-1 done: its A registers and, at a stage boundary, its stage
 * are free) and step ks+1 is converted while they run; only a group's last step waits for all
 * (wait<0>) before the promotion, after the next step's conversion. A second tmp, so that the
 * promotion of one group overlaps the next group's wgmmas, serialises every wgmma (ptxas: its
 * reads of a finished accumulator sit inside a later wgmma's pipeline stage). The order of
 * every sum is the earlier loop's (a drain every two k32 steps, nothing converted while the
 * wgmmas ran): same bits. */
template <int BN, int STAGES, int GSTEPS>
__device__ __forceinline__ void sm90_consume_f16(const sm90_gemm_args &p, char *smem, uint64_t *full,
                                                  uint64_t *empty, int wg, int64_t e, int64_t rb,
                                                  float (&acc)[BN / 2])
{
    using plan = sm90_smem_plan<BN, STAGES, true>;
    using op = sm90_op<true>;
    static_assert(op::steps == 2, "two k32 steps a stage");
    const int t = threadIdx.x & 127, warp = t >> 5, gid = (t & 31) >> 2;
    const int64_t nks = p.K / 32, groups = p.K / p.g;
    const float *ws = p.ws + ((e * p.nrb + rb) * groups) * 64 + warp * 16 + gid;
    float tmp[BN / 2];
    float2 sc = make_float2(0.0f, 0.0f); /* the group's scales, rows r and r + 8 */
    uint32_t a[2][2][4];
    /* step ks's A fragments from its stage's slot (ks & 1 static where called) */
    auto convert = [&](int64_t ks, uint32_t(&dst)[2][4]) {
        const char *stage = smem + (int)((ks >> 1) % STAGES) * plan::stage_bytes;
        const uint2 *slot = (const uint2 *)(stage + plan::act_bytes + wg * op::w_stage);
        const uint2 v = slot[t * op::steps + (int)(ks & 1)];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            dst[h][0] = sm90_int4x2_to_f16x2(v.x, 2 * h);
            dst[h][1] = sm90_int4x2_to_f16x2(v.y, 2 * h);
            dst[h][2] = sm90_int4x2_to_f16x2(v.x, 2 * h + 1);
            dst[h][3] = sm90_int4x2_to_f16x2(v.y, 2 * h + 1);
        }
    };
#pragma unroll
    for (int k = 0; k < BN / 2; k++) acc[k] = 0.0f;
    sm90_bar_wait(&full[0], 0);
    convert(0, a[0]);
    /* Units of U k32 steps (whole groups and whole stages), so that a step's place in its group
     * and its stage are static: ptxas then sees every path wait for a group's wgmmas before
     * its promotion and injects no waits of its own (a runtime "last" cost one a stage). */
    constexpr int U = GSTEPS > 2 ? GSTEPS : 2;
    for (int64_t u = 0; u * U < nks; u++) {
#pragma unroll
        for (int s = 0; s < U; s++) {
            const int64_t ks = u * U + s, kb = ks >> 1;
            const int j = s & 1;
            if (GSTEPS == 1 && ks >= nks) break; /* an odd number of g = 32 steps (K is a multiple of g) */
            const bool first = s % GSTEPS == 0, last = s % GSTEPS == GSTEPS - 1;
            if (first) sc = make_float2(__ldg(ws + (ks / GSTEPS) * 64), __ldg(ws + (ks / GSTEPS) * 64 + 8));
            const uint64_t desc = sm90_desc_k128(smem + (int)(kb % STAGES) * plan::stage_bytes);
            sm90_wgmma_fence(); /* no register fence on tmp here: it would read step ks-1's sums */
#pragma unroll
            for (int h = 0; h < 2; h++)
                sm90_wgmma_f16<BN>(tmp, a[j][h], desc + (uint64_t)(((j * 2 + h) * 32) >> 4),
                                    !(first && h == 0));
            sm90_wgmma_commit();
            sm90_wgmma_wait<1>();
            if (j == 0 && kb > 0) { /* step ks - 1, the last of stage kb - 1, is done */
                sm90_fence_proxy_async(); /* this thread's ld.shared of the stage before its refill */
                sm90_bar_arrive(&empty[(kb - 1) % STAGES]); /* every consumer thread (SM90_PROMOTE_ARRIVALS) */
            }
            if (ks + 1 < nks) {
                if (j == 1) sm90_bar_wait(&full[(kb + 1) % STAGES], (uint32_t)(((kb + 1) / STAGES) & 1));
                convert(ks + 1, a[j ^ 1]);
            }
            if (last) {
                sm90_wgmma_wait<0>();
#pragma unroll
                for (int k = 0; k < BN / 2; k++) sm90_fence_reg(tmp[k]);
#pragma unroll
                for (int k = 0; k < BN / 2; k++) acc[k] = fmaf((k & 2) ? sc.y : sc.x, tmp[k], acc[k]);
            }
        }
    }
}

/* A CTA's tile (expert e, weight block pair n, routed rows [row0, row_end)) from the raster,
 * and its ring's barriers initialised; false (for the whole CTA) when it has no tile. */
struct sm90_cta {
    int64_t e, n;
    int row0, row_end;
    int split; /* its part of K, with p.ksplit > 1 (the scaled kernel), else 0 */
};

template <int STAGES, int EMPTY_ARRIVALS>
__device__ __forceinline__ bool sm90_cta_setup(const sm90_gemm_args &p, uint64_t *full, uint64_t *empty,
                                               sm90_cta *c)
{
    int64_t m;
    const int ks = p.ksplit > 1 ? p.ksplit : 1; /* a tile's K parts are neighbours in the grid */
    c->split = (int)(blockIdx.x % ks);
    if (!sm90_raster(blockIdx.x / ks, *p.ntiles, p.nrb / 2, &m, &c->n)) return false;
    const int2 tile = p.tiles[m];
    c->e = tile.x;
    c->row0 = tile.y;
    c->row_end = p.offsets[c->e + 1];
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&empty[s], EMPTY_ARRIVALS);
        }
        sm90_bar_init_fence();
    }
    __syncthreads();
    return true;
}

/* Epilogue of the tile's rows [row0, row_end) for the 16 weight rows of warp slice `warp` of
 * block rb (the accumulators in the wgmma layout): h = s_t * (C * acc); gated: y = act(gate) *
 * up and the row amax; plain: out = h. The wgmma kernels and the mma.sync kernel
 * (sm90_mma_decode.cuh) end with it. */
template <int BN, bool GATED>
__device__ __forceinline__ void sm90_epilogue_slice(const sm90_gemm_args &p, int64_t e, int64_t rb, int warp,
                                                    int lane, int row0, int row_end,
                                                    const float (&acc)[BN / 2])
{
    const int gid = lane >> 2, tig = lane & 3;
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
                const float y = contract_activate(p.act_fn, h_lo, h_hi);
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
                sm89_rowmax_add(colmax[c], gid, row0 + j * 8 + tig * 2 + c, row_end, p.rowmax);
            }
        }
    }
}

/* The wgmma consumer's epilogue: its warp is the slice. */
template <int BN, bool GATED>
__device__ __forceinline__ void sm90_epilogue(const sm90_gemm_args &p, int64_t e, int64_t rb,
                                              int row0, int row_end, const float (&acc)[BN / 2])
{
    const int t = threadIdx.x & 127;
    sm90_epilogue_slice<BN, GATED>(p, e, rb, t >> 5, t & 31, row0, row_end, acc);
}

/*
 * Grid: (M tiles bound x NRB/2) CTAs in one dimension, rastered by sm90_raster; block
 * SM90_THREADS; dynamic shared memory sm90_smem_plan::bytes. tmap_act: the [R, K] e4m3 input
 * as a 2-D tensor map with a (128, BN) box and the 128-byte swizzle.
 */
template <int BN, int STAGES, int SPG, bool GATED, bool F16 = false>
static __global__ void __launch_bounds__(SM90_THREADS, (sm90_smem_plan<BN, STAGES, F16>::ctas))
    sm90_gemm_kernel(const __grid_constant__ CUtensorMap tmap_act, sm90_gemm_args p)
{
#if SM90_ENABLED
    using plan = sm90_smem_plan<BN, STAGES, F16>;
    using op = sm90_op<F16>;
    extern __shared__ __align__(1024) char smem_raw[];
    char *smem = (char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    uint64_t *full = (uint64_t *)(smem + plan::bar_offset), *empty = full + STAGES;

    sm90_cta cta;
    if (!sm90_cta_setup<STAGES, SM90_PROMOTE_ARRIVALS>(p, full, empty, &cta)) return;
    const int64_t e = cta.e, n = cta.n;
    const int row0 = cta.row0, row_end = cta.row_end;
    const int wg = threadIdx.x / 128;

    const int64_t KB = (p.K + op::bk - 1) / op::bk;
    if (wg == 0) { /* producer */
        sm90_reg_dealloc<sm90_producer_regs(plan::ctas)>();
        if (threadIdx.x == 0) {
            sm90_prefetch_tmap(&tmap_act);
            const int64_t blk = p.w_block ? p.w_block : op::w_stage;
            const char *wbase = (const char *)p.wq + ((e * p.nrb + 2 * n) * KB) * blk;
            const int64_t wstride = KB * blk; /* next 64-row block */
            for (int64_t kb = 0; kb < KB; kb++) {
                const int s = (int)(kb % STAGES);
                sm90_bar_wait(&empty[s], (uint32_t)(((kb / STAGES) & 1) ^ 1));
                char *stage = smem + s * plan::stage_bytes;
                sm90_bar_expect_tx(&full[s], plan::stage_bytes);
                sm90_tma_load_2d(stage, &tmap_act, (int32_t)(kb * op::bk), row0, &full[s]);
                for (int c = 0; c < SM90_CONSUMERS; c++)
                    sm90_bulk_load(stage + plan::act_bytes + c * op::w_stage,
                                   wbase + c * wstride + kb * blk, op::w_stage, &full[s]);
            }
        }
    } else { /* consumers */
        sm90_reg_alloc<sm90_consumer_regs(plan::ctas)>();
        const int c = wg - 1;
        const int64_t rb = 2 * n + c;
        float acc[BN / 2];
        if constexpr (F16) sm90_consume_f16<BN, STAGES, SPG>(p, smem, full, empty, c, e, rb, acc);
        else sm90_consume<BN, STAGES, SPG>(p, smem, full, empty, c, e, rb, acc);
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
static inline int sm90_tmap_act(CUtensorMap *m, const void *a, int64_t rows, int64_t K, int bn,
                                bool f16 = false)
{
    sm90_encode_tiled_fn fn = sm90_encode_fn();
    if (!fn || K % 16 || ((uintptr_t)a & 15)) return -1;
    cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)(rows > 0 ? rows : 1)};
    cuuint64_t strides[1] = {(cuuint64_t)K * (f16 ? 2 : 1)};
    cuuint32_t box[2] = {(cuuint32_t)(f16 ? 64 : SM90_BK), (cuuint32_t)bn}, el[2] = {1, 1};
    CUresult r = fn(m, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8, 2,
                    (void *)a, dims, strides, box, el,
                    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : -1;
}

template <int BN, int STAGES, int SPG, bool GATED, bool F16>
static cudaError_t sm90_gemm_launch_spg(const CUtensorMap &tm, const sm90_gemm_args &p,
                                        unsigned tiles_bound, cudaStream_t st)
{
    using plan = sm90_smem_plan<BN, STAGES, F16>;
    auto kern = sm90_gemm_kernel<BN, STAGES, SPG, GATED, F16>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, plan::bytes);
    if (e == cudaSuccess && plan::ctas > 1) /* room for two or three rings an SM */
        e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    unsigned grid = tiles_bound * (unsigned)(p.nrb / 2);
    kern<<<grid, SM90_THREADS, plan::bytes, st>>>(tm, p);
    return cudaGetLastError();
}

/* How a K group's sums are made: */
enum sm90_mode {
    SM90_F16 = 0,         /* f16 wgmma on the widened values: exact products, f32 sums */
    SM90_FP8_STEP = 1,    /* e4m3 wgmma, promoted after every k32 step */
    SM90_FP8_GROUP = 2,   /* e4m3 wgmma, promoted once per K group (DeepGEMM's way) */
};

/* One grouped GEMM over the tiles of p (tiles of BN rows); the tensor map is f16 for
 * SM90_F16 and e4m3 otherwise; g picks the promotion step. */
template <int BN, int STAGES, bool GATED>
static cudaError_t sm90_gemm_launch(const CUtensorMap &tm, const sm90_gemm_args &p,
                                    unsigned tiles_bound, cudaStream_t st, sm90_mode mode)
{
    const int gs = p.g / 32;
    if (gs != 1 && gs != 2 && gs != 4) return cudaErrorInvalidValue;
    if (mode == SM90_F16) {
        if (gs == 1) return sm90_gemm_launch_spg<BN, STAGES, 1, GATED, true>(tm, p, tiles_bound, st);
        if (gs == 2) return sm90_gemm_launch_spg<BN, STAGES, 2, GATED, true>(tm, p, tiles_bound, st);
        return sm90_gemm_launch_spg<BN, STAGES, 4, GATED, true>(tm, p, tiles_bound, st);
    }
    if constexpr (BN < 64) { /* the e4m3 wgmmas (the lab's, outside the tolerance) stop at N = 64 */
        return cudaErrorInvalidValue;
    } else {
        if (mode == SM90_FP8_STEP || gs == 1)
            return sm90_gemm_launch_spg<BN, STAGES, 1, GATED, false>(tm, p, tiles_bound, st);
        if (gs == 2) return sm90_gemm_launch_spg<BN, STAGES, 2, GATED, false>(tm, p, tiles_bound, st);
        return sm90_gemm_launch_spg<BN, STAGES, 4, GATED, false>(tm, p, tiles_bound, st);
    }
}

#endif /* W4A8MOE_SM90_GROUPED_GEMM_CUH */
