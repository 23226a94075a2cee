/*
 * f16_decode_gemm.cuh — lab version (dev/kernels/decode_w4a8_gemm.cu; not in the library yet) of
 * the decode form of the cuda_sm89 grouped GEMM with a cheap conversion: int4 weights widened
 * to f16 (exact) by the magic-number trick, the e4m3 activations widened to f16 (exact), f16
 * mma.sync m16n8k16 with f32 accumulation. Same weights (sm89 layout), grid, scales and
 * epilogue as sm89_gemm_kernel (src/cuda/kernels/sm89_grouped_gemm.cuh).
 *
 * Why (docs/PERFORMANCE.md, "GPU decode"): at decode sm89_gemm_kernel is bound by Hopper's ALU
 * pipe, not by memory: its int4 → e4m3 lookup (prmt) costs ~22 ALU instructions per 32-bit word
 * of weights. Here a word of 8 nibbles (q + 8) becomes four f16x2 pairs with one shift, four
 * LOP3 (nibble | 0x6400: the f16 1024 + n, or 1024 + 16n for the odd nibbles) and four f16
 * subtractions/FMAs on the FMA pipe: ~5 ALU instructions a word. Logical K order inside a k32
 * step: the mma's pairs are nibbles (0,4), (1,5) (first k16 mma) and (2,6), (3,7) (second), so the
 * activation bytes are paired the same way (one prmt a pair of pairs) before their widening.
 *
 * Sums: each group's k16 products (exact in f16 × f16) accumulate in the tensor core's f32
 * accumulator (not exact, unlike sm89_gemm_kernel's per-step e4m3 sums added in f32: differences
 * of an f32 rounding in P_b), then promoted with the group scale into f64 as sm89_gemm_kernel
 * does. Within the GPU tolerance of docs/numerics.md; not bit-identical to sm89_gemm_kernel.
 * Scales are loaded with the group's weights (no second round trip).
 */
#ifndef W4A8MOE_F16_DECODE_GEMM_CUH
#define W4A8MOE_F16_DECODE_GEMM_CUH

#include "../../src/cuda/kernels/sm89_grouped_gemm.cuh"

/* 8 nibbles (q + 8) of w → f16x2 pairs (q0,q4), (q1,q5), (q2,q6), (q3,q7), exact. */
__device__ __forceinline__ void sm89_int4x8_to_f16(uint32_t w, uint32_t (&h)[4])
{
    const uint32_t lo = 0x000f000fu, hi = 0x00f000f0u, ex = 0x64006400u;
    const uint32_t sub = 0x64086408u;  /* f16x2 (1032, 1032): 1024 + 8 */
    const uint32_t mul = 0x2c002c00u;  /* f16x2 (1/16, 1/16) */
    const uint32_t add = 0xd480d480u;  /* f16x2 (-72, -72): -(1024/16 + 8) */
    uint32_t w8 = w >> 8, t0, t1, t2, t3;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(t0) : "r"(w), "r"(lo), "r"(ex));
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(t1) : "r"(w), "r"(hi), "r"(ex));
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(t2) : "r"(w8), "r"(lo), "r"(ex));
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(t3) : "r"(w8), "r"(hi), "r"(ex));
    asm("sub.f16x2 %0, %1, %2;" : "=r"(h[0]) : "r"(t0), "r"(sub));
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(h[1]) : "r"(t1), "r"(mul), "r"(add));
    asm("sub.f16x2 %0, %1, %2;" : "=r"(h[2]) : "r"(t2), "r"(sub));
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(h[3]) : "r"(t3), "r"(mul), "r"(add));
}

/* 8 e4m3 bytes (x: bytes 0-3, y: 4-7) → f16x2 pairs (b0,b4), (b1,b5), (b2,b6), (b3,b7), exact. */
__device__ __forceinline__ void sm89_e4m3x8_to_f16(uint2 v, uint32_t (&h)[4])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t p01 = __byte_perm(v.x, v.y, 0x5140), p23 = __byte_perm(v.x, v.y, 0x7362);
    asm("{\n.reg .b16 l, u;\nmov.b32 {l, u}, %4;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, u;\n"
        "mov.b32 {l, u}, %5;\ncvt.rn.f16x2.e4m3x2 %2, l;\ncvt.rn.f16x2.e4m3x2 %3, u;\n}"
        : "=r"(h[0]), "=r"(h[1]), "=r"(h[2]), "=r"(h[3]) : "r"(p01), "r"(p23));
#else
    h[0] = h[1] = h[2] = h[3] = 0u; /* never launched below sm_89 (device predicate) */
#endif
}

/* d += A(16x16 f16) · B(16x8 f16), f32 accumulation. */
__device__ __forceinline__ void sm89_mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Grid and block as sm89_gemm_kernel (no dynamic shared memory). */
template <int NT, int KS, bool GATED>
static __global__ void __launch_bounds__(128) sm89_decode_f16_kernel(sm89_gemm_args p)
{
    constexpr int WN = 4 / KS, NA = GATED ? 2 : 1, ACC = NT * 4 * NA;
    __shared__ double red[KS > 1 ? (KS - 1) * WN * 32 * ACC : 1];
    if ((int)blockIdx.x >= *p.ntiles) return;
    const int2 tile = p.tiles[blockIdx.x];
    const int e = tile.x, row0 = tile.y, row_end = p.offsets[e + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2;
    const int wn = warp / KS, kq = warp % KS;
    const int64_t ct = (int64_t)blockIdx.y * WN + wn, ntiles_out = p.n_out / 16;
    const bool valid = ct < ntiles_out;
    const int64_t nks = p.K / 32, groups = p.K / p.g, tiles_rows = p.n_rows / 16;
    const int64_t ks0 = kq * nks / KS, ks1 = (kq + 1) * nks / KS;

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
            ap[f] = p.act + (int64_t)r * p.K + (lane & 3) * 8;
        }
        const int64_t spg = p.g / 32; /* k32 steps per group */
        for (int64_t ks = ks0; ks < ks1;) {
            const int64_t b = ks / spg, gend = min((b + 1) * spg, ks1);
            float s[NA][2]; /* the group's scales, loaded with its first weights */
#pragma unroll
            for (int a = 0; a < NA; a++) {
                s[a][0] = __ldg(ws[a] + b * 16);
                s[a][1] = __ldg(ws[a] + b * 16 + 8);
            }
            float P[NA][NT][4];
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int f = 0; f < NT; f++) P[a][f][0] = P[a][f][1] = P[a][f][2] = P[a][f][3] = 0.0f;
            for (; ks < gend; ks += 4) { /* up to 4 k32 steps a round, every load issued first */
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
                    uint32_t bf[NT][4];
#pragma unroll
                    for (int f = 0; f < NT; f++) sm89_e4m3x8_to_f16(bq[j][f], bf[f]);
#pragma unroll
                    for (int a = 0; a < NA; a++) {
                        uint32_t r0[4], r8[4]; /* rows gid and gid + 8 */
                        sm89_int4x8_to_f16(wv[j][a].x, r0);
                        sm89_int4x8_to_f16(wv[j][a].y, r8);
#pragma unroll
                        for (int f = 0; f < NT; f++) {
                            sm89_mma_f16(P[a][f], r0[0], r8[0], r0[1], r8[1], bf[f][0], bf[f][1]);
                            sm89_mma_f16(P[a][f], r0[2], r8[2], r0[3], r8[3], bf[f][2], bf[f][3]);
                        }
                    }
                }
            }
#pragma unroll
            for (int a = 0; a < NA; a++) {
                double s0 = (double)s[a][0], s1 = (double)s[a][1];
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

#endif /* W4A8MOE_F16_DECODE_GEMM_CUH */
