/*
 * cpu_experts_avx512.c — the `cpu` backend's AVX-512 VNNI stream kernel (contract steps 3 and 6
 * up to the channel and row scales) on 512-bit registers. Compiled into every x86-64 build
 * through target attributes and called only where the CPU has AVX512F + AVX512VL + AVX512VNNI
 * (runtime detection in cpu_experts.c); the AVX2 kernel (cpu_experts_avx2.c) is the same
 * algorithm on 256-bit registers, and the comments there hold for this one.
 *
 * One zmm register holds a whole 64-byte chunk of a panel (both blocks: 16 channels by 8
 * inputs), so per chunk, row and digit plane there are 2 vpdpbusd (even and odd inputs) with
 * the row's digit dword as an embedded broadcast, where the ymm code takes 4 vpdpbusd and 2
 * broadcasts: half the instructions for the same multiplies, and a 4-row block's 12
 * accumulators fit the 32 registers with room to spare. Measured on the 2-core Zen 4 VM
 * (2026-12-06), one 4-panel tile of K = 2048 called in a loop (hot caches, one core), GB/s of
 * weights, ymm vpdpbusd -> this file: 1 row 35 -> 47, 2 rows 19.7 -> 28.5, 3 rows 13.4 -> 21.3,
 * 4 rows 10.0 -> 14.9. Multi-row blocks then run at ~5.5 G vpdpbusd/s per core, the multiply
 * rate of the core, so their cost is the number of digit planes (cpu_experts_impl.h).
 */
#include "cpu_experts_impl.h"

#if defined(W4A8MOE_CPU_HAVE_AVX2)

#include <immintrin.h>

/* Bytes ahead of the read position. At ~18-26 GB/s per core, 2 KB (the AVX2 kernel's) is only
 * ~80-110 ns ahead, about one DRAM latency; 8 KB measured better on the 2-core Zen 4 VM
 * (2026-12-06, qwen3-30b-a3b bench, 8 paired runs against 2 KB: median time ratio 0.91 at
 * T = 1, 0.96 at T = 4, 0.95 at T = 8, 0.93 at T = 16); 12 and 16 KB no better than 8. */
#define STREAM_PREFETCH 8192

#define Z_TARGET "avx2,fma,avx512f,avx512vl,avx512vnni"
#define Z_INLINE static inline __attribute__((always_inline, target(Z_TARGET)))

/* A panel's 16 group scales (block 0's 8, then block 1's) as two f64 vectors. */
Z_INLINE void load_scales16(const uint8_t *sp, int bf16, __m512d *lo, __m512d *hi)
{
    __m512 s;
    if (bf16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)sp);
        s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    } else {
        s = _mm512_loadu_ps((const void *)sp);
    }
    *lo = _mm512_cvtps_pd(_mm512_castps512_ps256(s));
    *hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
}

/* acc += the 4 products of unsigned bytes u and the signed bytes of the dword *x, per int32
 * lane: vpdpbusd with *x as an embedded broadcast (inline asm: the compiler would otherwise
 * emit a separate vpbroadcastd and shuffle the accumulators between registers). */
Z_INLINE __m512i zdot(__m512i acc, __m512i u, const int32_t *x)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*x));
    return acc;
}

/* Group b of one panel (gp = its first chunk) for rows [r0, r0+MR), ND digit planes:
 * out[r][0..16) += S * 512 P. SP = 2 splits each accumulator by input parity where there are
 * too few independent chains to cover vpdpbusd's latency. pf: where to prefetch this group's
 * lines ahead, or NULL. */
Z_INLINE void zgroup(const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, int r0, double *out,
                     int ldo, const uint8_t *pf, const int MR, const int ND)
{
    const int nchunk = ga->g / 8, SP = MR * ND < 6 ? 2 : 1;
    const __m512i mask = _mm512_set1_epi8(0x0f);
    const int32_t *a[4];
    __m512i acc[4][3][2]; /* [row][digit][parity split] */
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int32_t *)(const void *)ga->a[r0 + r] + (size_t)b * nchunk * 8;
        for (int d = 0; d < ND; d++)
            for (int sp = 0; sp < SP; sp++) acc[r][d][sp] = _mm512_setzero_si512();
    }
    for (int c = 0; c < nchunk; c++) {
        const uint8_t *cp = gp + (size_t)c * CPU_CHUNK;
        /* two 32-byte halves: a group is 1056 bytes at g = 128 with bf16 scales, so every
         * other group's chunks straddle two cache lines, which one 64-byte load would pay */
        __m512i W = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)cp)),
            _mm256_loadu_si256((const __m256i *)(const void *)(cp + 32)), 1);
        if (pf) _mm_prefetch((const char *)(pf + (size_t)c * CPU_CHUNK), _MM_HINT_T0);
        __m512i ev = _mm512_and_si512(W, mask);
        __m512i od = _mm512_and_si512(_mm512_srli_epi32(W, 4), mask);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
            for (int d = 0; d < ND; d++) {
                acc[r][d][0] = zdot(acc[r][d][0], ev, &a[r][c * 8 + 2 * d]);
                acc[r][d][SP - 1] = zdot(acc[r][d][SP - 1], od, &a[r][c * 8 + 2 * d + 1]);
            }
    }
    if (pf) _mm_prefetch((const char *)(pf + (size_t)nchunk * CPU_CHUNK), _MM_HINT_T0); /* scales */
    __m512d slo, shi;
    load_scales16(gp + (size_t)nchunk * CPU_CHUNK, ga->scale_bf16, &slo, &shi);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        __m512i s[3];
        for (int d = 0; d < ND; d++)
            s[d] = SP == 2 ? _mm512_add_epi32(acc[r][d][0], acc[r][d][1]) : acc[r][d][0];
        __m512i p = s[0];
        if (ND > 1) p = _mm512_add_epi32(p, _mm512_slli_epi32(s[1], 8));
        if (ND > 2) p = _mm512_add_epi32(p, _mm512_slli_epi32(s[2], 16));
        p = _mm512_sll_epi32(p, _mm_cvtsi32_si128(cpu_group_word(ga, r0 + r, b) & 0xff));
        p = _mm512_sub_epi32(p, _mm512_set1_epi32(ga->corr[r0 + r][b]));
        double *o = out + (size_t)(r0 + r) * ldo;
        __m512d plo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(p));
        __m512d phi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(p, 1));
        _mm512_storeu_pd(o, _mm512_fmadd_pd(slo, plo, _mm512_loadu_pd(o)));
        _mm512_storeu_pd(o + 8, _mm512_fmadd_pd(shi, phi, _mm512_loadu_pd(o + 8)));
    }
}

/* One row, ND digit planes, the same sums as zgroup(.., 1, ND): each plane's accumulator split
 * by input parity (6 chains of one vpdpbusd per chunk) in named variables (an accumulator array
 * here made GCC 12 store all six to the stack every chunk, ~12 cycles of stores per 6 cycles of
 * multiplies: 28 against 35 GB/s hot). */
Z_INLINE void zgroup1(const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, int r0,
                      double *out, const uint8_t *pf, const int ND)
{
    const int nchunk = ga->g / 8;
    const __m512i mask = _mm512_set1_epi8(0x0f);
    const int32_t *a = (const int32_t *)(const void *)ga->a[r0] + (size_t)b * nchunk * 8;
    __m512i e0 = _mm512_setzero_si512(), e1 = e0, e2 = e0, o0 = e0, o1 = e0, o2 = e0;
    for (int c = 0; c < nchunk; c++, a += 8) {
        const uint8_t *cp = gp + (size_t)c * CPU_CHUNK;
        __m512i W = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)cp)),
            _mm256_loadu_si256((const __m256i *)(const void *)(cp + 32)), 1);
        if (pf) _mm_prefetch((const char *)(pf + (size_t)c * CPU_CHUNK), _MM_HINT_T0);
        __m512i ev = _mm512_and_si512(W, mask);
        __m512i od = _mm512_and_si512(_mm512_srli_epi32(W, 4), mask);
        e0 = zdot(e0, ev, a + 0);
        o0 = zdot(o0, od, a + 1);
        if (ND > 1) e1 = zdot(e1, ev, a + 2);
        if (ND > 1) o1 = zdot(o1, od, a + 3);
        if (ND > 2) e2 = zdot(e2, ev, a + 4);
        if (ND > 2) o2 = zdot(o2, od, a + 5);
    }
    if (pf) _mm_prefetch((const char *)(pf + (size_t)nchunk * CPU_CHUNK), _MM_HINT_T0); /* scales */
    __m512d slo, shi;
    load_scales16(gp + (size_t)nchunk * CPU_CHUNK, ga->scale_bf16, &slo, &shi);
    __m512i p = _mm512_add_epi32(e0, o0);
    if (ND > 1) p = _mm512_add_epi32(p, _mm512_slli_epi32(_mm512_add_epi32(e1, o1), 8));
    if (ND > 2) p = _mm512_add_epi32(p, _mm512_slli_epi32(_mm512_add_epi32(e2, o2), 16));
    p = _mm512_sll_epi32(p, _mm_cvtsi32_si128(cpu_group_word(ga, r0, b) & 0xff));
    p = _mm512_sub_epi32(p, _mm512_set1_epi32(ga->corr[r0][b]));
    double *o = out + (size_t)r0 * ga->np * CPU_PANEL;
    __m512d plo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(p));
    __m512d phi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(p, 1));
    _mm512_storeu_pd(o, _mm512_fmadd_pd(slo, plo, _mm512_loadu_pd(o)));
    _mm512_storeu_pd(o + 8, _mm512_fmadd_pd(shi, phi, _mm512_loadu_pd(o + 8)));
}

/* Every row of the call over one group: 4-row blocks then the rest (the prefetch goes with the
 * first block only). */
static __attribute__((noinline, target(Z_TARGET))) void zrows(const cpu_gemm_args *ga,
                                                              const uint8_t *gp, int64_t b,
                                                              double *out, int ldo,
                                                              const uint8_t *pf)
{
    int r = 0, nr = ga->nr;
    for (; r + 4 <= nr; r += 4, pf = NULL) {
        int nd = cpu_block_planes(ga, r, 4, b);
        if (nd == 1) zgroup(ga, gp, b, r, out, ldo, pf, 4, 1);
        else if (nd == 2) zgroup(ga, gp, b, r, out, ldo, pf, 4, 2);
        else zgroup(ga, gp, b, r, out, ldo, pf, 4, 3);
    }
    int n = nr - r, nd = n ? cpu_block_planes(ga, r, n, b) : 0;
    if (n == 3 && nd == 1) zgroup(ga, gp, b, r, out, ldo, pf, 3, 1);
    if (n == 3 && nd == 2) zgroup(ga, gp, b, r, out, ldo, pf, 3, 2);
    if (n == 3 && nd == 3) zgroup(ga, gp, b, r, out, ldo, pf, 3, 3);
    if (n == 2 && nd == 1) zgroup(ga, gp, b, r, out, ldo, pf, 2, 1);
    if (n == 2 && nd == 2) zgroup(ga, gp, b, r, out, ldo, pf, 2, 2);
    if (n == 2 && nd == 3) zgroup(ga, gp, b, r, out, ldo, pf, 2, 3);
    if (n == 1 && nd == 1) zgroup1(ga, gp, b, r, out, pf, 1);
    if (n == 1 && nd == 2) zgroup1(ga, gp, b, r, out, pf, 2);
    if (n == 1 && nd == 3) zgroup1(ga, gp, b, r, out, pf, 3);
}

/* The tile in address order, panel by panel, group by group; the prefetch runs STREAM_PREFETCH
 * bytes ahead and past the tile's end on into args->pf_next. */
void w4a8moe_cpu_stream_avx512vnni(const cpu_gemm_args *ga)
{
    int ldo = ga->np * CPU_PANEL;
    int64_t ngroups = ga->K / ga->g;
    size_t tile_bytes = (size_t)ga->np * ga->panel_bytes;
    for (int r = 0; r < ga->nr; r++)
        for (int c = 0; c < ldo; c++) ga->out[(size_t)r * ldo + c] = 0.0;
    for (int p = 0; p < ga->np; p++)
        for (int64_t b = 0; b < ngroups; b++) {
            size_t pos = (size_t)p * ga->panel_bytes + (size_t)b * ga->group_bytes;
            size_t t = pos + STREAM_PREFETCH;
            const uint8_t *pf = t < tile_bytes ? ga->w + t
                                : ga->pf_next ? ga->pf_next + (t - tile_bytes) : NULL;
            zrows(ga, ga->w + pos, b, ga->out + (size_t)p * CPU_PANEL, ldo, pf);
        }
}

#endif /* W4A8MOE_CPU_HAVE_AVX2 */
