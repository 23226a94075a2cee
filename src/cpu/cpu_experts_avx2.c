/*
 * cpu_experts_avx2.c — the `cpu` backend's AVX2 kernels (contract steps 3 and 6 up to the
 * channel and row scales) and row preparation. Compiled into every x86-64 build through target
 * attributes and called only where the CPU has AVX2 + FMA (runtime detection in
 * cpu_experts.c). Where it also has AVX-512 VNNI, cpu_experts_avx512.c runs the same algorithm
 * on 512-bit registers with vpdpbusd; the comments here hold for both.
 *
 * Layout and row format: cpu_experts_impl.h. One ymm register holds 8 output channels as
 * 8 int32 lanes. A weight dword holds a channel's nibbles for inputs k0..k0+7 (nibble i at
 * bits 4i), so masking it with 0x0F0F0F0F leaves the even inputs' nibbles as 4 unsigned bytes
 * and a 4-bit shift first the odd ones'. vpdpbusd multiplies those bytes with 4 signed digit
 * bytes of the activations and adds the 4 products to the lane: per 8 inputs, row and block,
 * 6 vpdpbusd (3 digits x even/odd) and 3 mask/shift uops shared by the rows. The former format
 * (activations as two int16 halves by magnitude, vpdpwssd) took 8 + 6; measured on the 2-core
 * Zen 4 host with hot caches, one row: ~22.5 -> ~27.5 GB/s of weights per core; four rows: ~6.9
 * -> ~8.7 (2026-12-04, vpdpbusd on ymm; this file now emulates it, see below).
 * All integer, so exact: a lane gains at most 4 * 15 * 128 per instruction, a group of 128
 * inputs stays below 2^18 per digit; at the group end 512 P_b = S0 + 2^8 S1 + 2^16 S2 - corr[b]
 * in wrapping int32 (the true value is below 2^31, so the wrap-around cancels), widened to f64,
 * and acc += S * 512 P_b with FMA (the product is exact, so FMA rounds like the reference's
 * separate multiply and add). Without VNNI, vpdpbusd is vpmaddubsw (pairs: at most 2 * 15 *
 * 128, no saturation) + vpmaddwd by ones + vpaddd.
 *
 * One kernel for decode and prefill: a tile is read once, in address order (panel by panel,
 * group by group), and every row of the call passes over each group in register blocks of up
 * to 4 rows, re-reading the group's 1 KB from L1 per block; the f64 sums live in out (read,
 * FMA, write once per group and row: 16 doubles per 2048 weights). A thread that runs
 * consecutive tiles (the decode path in cpu_experts.c) thus reads one linear stream: on the
 * 2-core host a pure read of 17 KB blocks handed out round-robin tops at ~23 GB/s, one linear
 * stream per thread whose prefetch runs on into its next block at ~29-31 GB/s (2026-12-04).
 */
#include "cpu_experts_impl.h"

#if defined(W4A8MOE_CPU_HAVE_AVX2)

#include <immintrin.h>
#include <string.h>

#define STREAM_PREFETCH 2048 /* bytes ahead of the read position (1-8 KB measured alike) */

#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* Block h's 8 group scales of a panel as two f64 halves (bf16 -> f32 is a 16-bit shift). */
AVX2_INLINE void load_scales(const uint8_t *sp, int bf16, int h, __m256d *lo, __m256d *hi)
{
    __m256 s;
    if (bf16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(sp + 16 * h));
        s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
    } else {
        s = _mm256_loadu_ps((const float *)(const void *)sp + 8 * h);
    }
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
}

/* Chunk c of a group (gp its first): both blocks' weight dwords as the even inputs' nibbles (ev)
 * and the odd inputs' (od), one unsigned byte each; pf: where to prefetch its line, or NULL. */
AVX2_INLINE void load_chunk(const uint8_t *gp, const uint8_t *pf, int c, __m256i ev[2], __m256i od[2])
{
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const uint8_t *cp = gp + (size_t)c * CPU_CHUNK;
    __m256i W0 = _mm256_loadu_si256((const __m256i *)(const void *)cp);
    __m256i W1 = _mm256_loadu_si256((const __m256i *)(const void *)(cp + 32));
    if (pf) _mm_prefetch((const char *)(pf + (size_t)c * CPU_CHUNK), _MM_HINT_T0);
    ev[0] = _mm256_and_si256(W0, mask);
    ev[1] = _mm256_and_si256(W1, mask);
    od[0] = _mm256_and_si256(_mm256_srli_epi32(W0, 4), mask);
    od[1] = _mm256_and_si256(_mm256_srli_epi32(W1, 4), mask);
}

/* Row r's 8 channels of a group from p = S0 + 2^8 S1 + 2^16 S2: 512 P = (p << t) - corr, then
 * o[0..8) += S * 512 P in f64 (slo, shi: the 8 channels' group scales). */
AVX2_INLINE void group_epilogue(const cpu_gemm_args *ga, int64_t b, int r, __m256i p, __m256d slo, __m256d shi,
                                double *o)
{
    p = _mm256_sll_epi32(p, _mm_cvtsi32_si128(cpu_group_word(ga, r, b) & 0xff));
    p = _mm256_sub_epi32(p, _mm256_set1_epi32(ga->corr[r][b]));
    __m256d plo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(p));
    __m256d phi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(p, 1));
    _mm256_storeu_pd(o, _mm256_fmadd_pd(slo, plo, _mm256_loadu_pd(o)));
    _mm256_storeu_pd(o + 4, _mm256_fmadd_pd(shi, phi, _mm256_loadu_pd(o + 4)));
}

/* acc += the 4 products of unsigned bytes u and signed bytes x, per int32 lane (vpdpbusd's
 * arithmetic: vpmaddubsw pairs, at most 2 * 15 * 128, cannot saturate). */
AVX2_INLINE __m256i dot4(__m256i acc, __m256i u, __m256i x)
{
    __m256i pairs = _mm256_maddubs_epi16(u, x);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

/* Group b of one panel (gp = its first chunk) for rows [r0, r0+MR), ND digit planes (those above
 * are zero in every row of the block): out[r][0..16) += S * 512 P. One row splits each
 * accumulator by input parity: 6 chains of 2 dependent vpdpbusd per chunk
 * would leave the multiply ports idle half the time. pf: where to prefetch this group's lines
 * ahead, or NULL. */
AVX2_INLINE void stream_group(const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, int r0,
                              double *out, int ldo, const uint8_t *pf, const int MR,
                              const int ND)
{
    const int nchunk = ga->g / 8, SP = MR == 1 ? 2 : 1;
    const int32_t *a[4];
    __m256i acc[4][2][3][2]; /* [row][block][digit][parity split] */
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int32_t *)(const void *)ga->a[r0 + r] + (size_t)b * nchunk * 8;
        for (int h = 0; h < 2; h++)
            for (int d = 0; d < ND; d++)
                for (int sp = 0; sp < SP; sp++) acc[r][h][d][sp] = _mm256_setzero_si256();
    }
    for (int c = 0; c < nchunk; c++) {
        __m256i ev[2], od[2];
        load_chunk(gp, pf, c, ev, od);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
            for (int d = 0; d < ND; d++) {
                __m256i xe = _mm256_set1_epi32(a[r][c * 8 + 2 * d]);
                __m256i xo = _mm256_set1_epi32(a[r][c * 8 + 2 * d + 1]);
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    acc[r][h][d][0] = dot4(acc[r][h][d][0], ev[h], xe);
                    acc[r][h][d][SP - 1] = dot4(acc[r][h][d][SP - 1], od[h], xo);
                }
            }
    }
    if (pf) _mm_prefetch((const char *)(pf + (size_t)nchunk * CPU_CHUNK), _MM_HINT_T0); /* scales */
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256d slo, shi;
        load_scales(gp + (size_t)nchunk * CPU_CHUNK, ga->scale_bf16, h, &slo, &shi);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m256i s[3];
            for (int d = 0; d < ND; d++)
                s[d] = SP == 2 ? _mm256_add_epi32(acc[r][h][d][0], acc[r][h][d][1]) : acc[r][h][d][0];
            __m256i p = s[0];
            if (ND > 1) p = _mm256_add_epi32(p, _mm256_slli_epi32(s[1], 8));
            if (ND > 2) p = _mm256_add_epi32(p, _mm256_slli_epi32(s[2], 16));
            group_epilogue(ga, b, r0 + r, p, slo, shi, out + (size_t)(r0 + r) * ldo + 8 * h);
        }
    }
}

/* stream_group for the small blocks that make most of a decode (one row of one or two planes:
 * a per-token quantised row's groups need two planes, three rarely; blocks of MR * ND <=
 * SMALL16): the products are summed in int16 before they are widened. A vpmaddubsw lane holds
 * two products, at most 2 * 15 * 128 = 3840 in magnitude, so SPAN16 chunks (2 * SPAN16 = 8 such
 * terms, <= 30720) fit an int16 lane; then one vpmaddwd by ones widens to int32. Per chunk, row
 * and plane 4 vpmaddubsw + 4 vpaddw, and 2 vpmaddwd + 2 vpaddd every SPAN16 chunks, against
 * dot4's 4 + 4 + 4. Measured (dev/kernels/cpu_stream_lab.c, one thread, the AVX2-only EPYC host,
 * 2026-12-08): one row of two planes 15.2 -> 19.6 GB/s with the tile in cache, 13.6 -> 17.0
 * streamed; two rows of one plane 16.9 -> 18.9; the other small blocks alike. Larger blocks keep
 * dot4: their int16 sums spill out of the 16 registers (three planes of three or four rows lost
 * 15-25 % this way). */
#define SPAN16 4
#define SMALL16 3
AVX2_INLINE void stream_group16(const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, int r0,
                                double *out, int ldo, const uint8_t *pf, const int MR,
                                const int ND)
{
    const int nchunk = ga->g / 8;
    const __m256i ones = _mm256_set1_epi16(1);
    const int32_t *a[4];
    __m256i acc[4][2][3]; /* [row][block][digit]: int32 sums */
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int32_t *)(const void *)ga->a[r0 + r] + (size_t)b * nchunk * 8;
        for (int h = 0; h < 2; h++)
            for (int d = 0; d < ND; d++) acc[r][h][d] = _mm256_setzero_si256();
    }
    for (int c0 = 0; c0 < nchunk; c0 += SPAN16) {
        __m256i s16[4][2][3]; /* int16 sums of up to SPAN16 chunks */
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < 2; h++)
                for (int d = 0; d < ND; d++) s16[r][h][d] = _mm256_setzero_si256();
        const int c1 = c0 + SPAN16 < nchunk ? c0 + SPAN16 : nchunk;
        for (int c = c0; c < c1; c++) {
            __m256i ev[2], od[2];
            load_chunk(gp, pf, c, ev, od);
#pragma GCC unroll 4
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
                for (int d = 0; d < ND; d++) {
                    __m256i xe = _mm256_set1_epi32(a[r][c * 8 + 2 * d]);
                    __m256i xo = _mm256_set1_epi32(a[r][c * 8 + 2 * d + 1]);
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++)
                        s16[r][h][d] = _mm256_add_epi16(
                            s16[r][h][d], _mm256_add_epi16(_mm256_maddubs_epi16(ev[h], xe),
                                                           _mm256_maddubs_epi16(od[h], xo)));
                }
        }
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < 2; h++)
                for (int d = 0; d < ND; d++)
                    acc[r][h][d] = _mm256_add_epi32(acc[r][h][d], _mm256_madd_epi16(s16[r][h][d], ones));
    }
    if (pf) _mm_prefetch((const char *)(pf + (size_t)nchunk * CPU_CHUNK), _MM_HINT_T0); /* scales */
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256d slo, shi;
        load_scales(gp + (size_t)nchunk * CPU_CHUNK, ga->scale_bf16, h, &slo, &shi);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m256i p = acc[r][h][0];
            if (ND > 1) p = _mm256_add_epi32(p, _mm256_slli_epi32(acc[r][h][1], 8));
            if (ND > 2) p = _mm256_add_epi32(p, _mm256_slli_epi32(acc[r][h][2], 16));
            group_epilogue(ga, b, r0 + r, p, slo, shi, out + (size_t)(r0 + r) * ldo + 8 * h);
        }
    }
}

/* Where to prefetch for the group at byte offset pos of the tile: pos + STREAM_PREFETCH, or
 * past the tile's end the same distance into the caller's next tile (NULL when unknown). */
static inline const uint8_t *stream_pf(const cpu_gemm_args *ga, size_t pos, size_t tile_bytes)
{
    size_t t = pos + STREAM_PREFETCH;
    if (t < tile_bytes) return ga->w + t;
    return ga->pf_next ? ga->pf_next + (t - tile_bytes) : NULL;
}

/* Rows [r, r + MR) over one group with the planes they need. */
#define STREAM_GROUP(MR, ND)                                                                    \
    ((MR) * (ND) <= SMALL16 ? stream_group16(ga, gp, b, r, out, ldo, pf, MR, ND)                 \
                            : stream_group(ga, gp, b, r, out, ldo, pf, MR, ND))
#define STREAM_BLOCK(MR)                                                                        \
    switch (cpu_block_planes(ga, r, MR, b)) {                                                   \
    case 1: STREAM_GROUP(MR, 1); break;                                                         \
    case 2: STREAM_GROUP(MR, 2); break;                                                         \
    default: STREAM_GROUP(MR, 3); break;                                                        \
    }

/* stream_rows: every row of the call over one group, 4-row blocks then the rest (the prefetch
 * goes with the first block only). stream_driver: the tile in address order. */
#define STREAM_DRIVER(V, TARGET)                                                                \
    static __attribute__((noinline, target(TARGET))) void stream_rows_##V(                      \
        const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, double *out, int ldo,           \
        const uint8_t *pf)                                                                      \
    {                                                                                           \
        int r = 0, nr = ga->nr;                                                                 \
        for (; r + 4 <= nr; r += 4, pf = NULL) { STREAM_BLOCK(4) }                              \
        if (nr - r == 3) { STREAM_BLOCK(3) }                                                    \
        if (nr - r == 2) { STREAM_BLOCK(2) }                                                    \
        if (nr - r == 1) { STREAM_BLOCK(1) }                                                    \
    }                                                                                           \
    static void stream_driver_##V(const cpu_gemm_args *ga)                                      \
    {                                                                                           \
        int ldo = ga->np * CPU_PANEL;                                                           \
        int64_t ngroups = ga->K / ga->g;                                                        \
        size_t tile_bytes = (size_t)ga->np * ga->panel_bytes;                                   \
        for (int r = 0; r < ga->nr; r++)                                                        \
            for (int c = 0; c < ldo; c++) ga->out[(size_t)r * ldo + c] = 0.0;                   \
        for (int p = 0; p < ga->np; p++)                                                        \
            for (int64_t b = 0; b < ngroups; b++) {                                             \
                size_t pos = (size_t)p * ga->panel_bytes + (size_t)b * ga->group_bytes;          \
                stream_rows_##V(ga, ga->w + pos, b, ga->out + (size_t)p * CPU_PANEL, ldo,       \
                                stream_pf(ga, pos, tile_bytes));                                \
            }                                                                                   \
    }

STREAM_DRIVER(0, "avx2,fma")

void w4a8moe_cpu_stream_avx2(const cpu_gemm_args *ga) { stream_driver_0(ga); }

/* ---- row preparation (cpu_experts_impl.h's format), 8 inputs per step ----------------------
 * The scalar path (cpu_experts.c) takes ~8 us per 768-value row for requantisation, time in
 * which the thread streams no weights (5-7% of a decode layer); these do the same integer
 * arithmetic 8 lanes at a time. */

/* A = v * 512 of 8 e4m3 codes (int32 lanes; 0 for NaN), NaN lanes set in *nan. */
AVX2_INLINE __m256i e4m3_a512(__m256i c, __m256i *nan)
{
    const __m256i seven = _mm256_set1_epi32(7), one = _mm256_set1_epi32(1);
    __m256i e = _mm256_and_si256(_mm256_srli_epi32(c, 3), _mm256_set1_epi32(15));
    __m256i m = _mm256_and_si256(c, seven);
    /* normal: (8 + m) << (e - 1); e = 0 (subnormal): m; the shift by 2^32 - 1 gives 0 */
    __m256i a = _mm256_sllv_epi32(_mm256_or_si256(m, _mm256_set1_epi32(8)), _mm256_sub_epi32(e, one));
    a = _mm256_blendv_epi8(a, m, _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
    __m256i isnan = _mm256_cmpeq_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x7f)), _mm256_set1_epi32(0x7f));
    *nan = _mm256_or_si256(*nan, isnan);
    a = _mm256_andnot_si256(isnan, a);
    __m256i neg = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_srli_epi32(c, 7)); /* -1: sign */
    return _mm256_sub_epi32(_mm256_xor_si256(a, neg), neg);
}

/* The 32-byte chunk of 8 inputs' A' = A >> t (exact: the caller's t divides every A of the
 * group): three digit planes, even inputs then odd, 8 zero bytes; ORs d1 and d2 into *nz1 and
 * *nz2 (which planes the group needs). */
AVX2_INLINE void store_digits(__m256i a, __m128i t, void *dst, __m256i *nz1, __m256i *nz2)
{
    a = _mm256_sra_epi32(a, t);
    a = _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    __m256i d0 = _mm256_srai_epi32(_mm256_slli_epi32(a, 24), 24);
    __m256i r1 = _mm256_srai_epi32(_mm256_sub_epi32(a, d0), 8);
    __m256i d1 = _mm256_srai_epi32(_mm256_slli_epi32(r1, 24), 24);
    __m256i d2 = _mm256_srai_epi32(_mm256_sub_epi32(r1, d1), 8);
    *nz1 = _mm256_or_si256(*nz1, d1);
    *nz2 = _mm256_or_si256(*nz2, d2);
    /* digits fit int8, so the saturating packs are plain narrowing */
    __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(d0, d1), _mm256_packs_epi32(d2, _mm256_setzero_si256()));
    v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, v);
}

/* A group's prepared bytes from its n8 vectors of A (cpu_experts_impl.h): the shift t = the
 * trailing zeros common to every A (the OR's), the digits of A >> t, and the group's word
 * t | nd << 8 in its first chunk's padding. dst may hold the group's own f32 inputs (requant):
 * every A is computed before the first byte is written. */
AVX2_INLINE void store_group(const __m256i *A, int n8, void *dst)
{
    __m256i o = _mm256_setzero_si256(), nz1 = o, nz2 = o;
    for (int c = 0; c < n8; c++) o = _mm256_or_si256(o, A[c]);
    __m128i o4 = _mm_or_si128(_mm256_castsi256_si128(o), _mm256_extracti128_si256(o, 1));
    o4 = _mm_or_si128(o4, _mm_shuffle_epi32(o4, 0x4e));
    o4 = _mm_or_si128(o4, _mm_shuffle_epi32(o4, 0xb1));
    uint32_t ou = (uint32_t)_mm_cvtsi128_si32(o4);
    int t = ou ? __builtin_ctz(ou) : 0;
    __m128i tv = _mm_cvtsi32_si128(t);
    for (int c = 0; c < n8; c++) store_digits(A[c], tv, (uint8_t *)dst + 32 * c, &nz1, &nz2);
    int nd = !_mm256_testz_si256(nz2, nz2) ? 3 : !_mm256_testz_si256(nz1, nz1) ? 2 : 1;
    int32_t word = t | nd << 8;
    memcpy((uint8_t *)dst + CPU_GROUP_WORD, &word, 4);
}

AVX2_INLINE int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx2,fma"))) void w4a8moe_cpu_prep_codes_avx2(const uint8_t *q, int64_t K,
                                                                    int g, int8_t *a,
                                                                    int32_t *corr, int32_t *nan)
{
    __m256i nanv = _mm256_setzero_si256(), A[16];
    for (int64_t b = 0; b < K / g; b++) {
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < g / 8; c++) {
            const uint8_t *qc = q + b * g + 8 * c;
            __m256i q8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)qc));
            A[c] = e4m3_a512(q8, &nanv);
            sum = _mm256_add_epi32(sum, A[c]);
        }
        store_group(A, g / 8, a + b * g * 4);
        corr[b] = 8 * hsum_epi32(sum);
    }
    *nan |= !_mm256_testz_si256(nanv, nanv);
}

/* shift_rne (common/quant.h) per lane: v >> s rounded to nearest even, 1 <= s <= 31. */
AVX2_INLINE __m256i shift_rne_v(__m256i v, __m256i s)
{
    const __m256i one = _mm256_set1_epi32(1);
    __m256i q = _mm256_srlv_epi32(v, s);
    __m256i half_m1 = _mm256_sub_epi32(_mm256_sllv_epi32(one, _mm256_sub_epi32(s, one)), one);
    return _mm256_srlv_epi32(_mm256_add_epi32(_mm256_add_epi32(v, half_m1), _mm256_and_si256(q, one)), s);
}

/* w4a8moe_f32_to_e4m3 (common/quant.h) on 8 lanes, the same cases and roundings. */
AVX2_INLINE __m256i f32_to_e4m3_v(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
    __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    /* signed compares are safe: a < 2^31 */
    __m256i isnan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
    __m256i sat = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x43e00000 - 1));
    __m256i normal = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x3c800000 - 1));
    __m256i cn = shift_rne_v(_mm256_sub_epi32(a, _mm256_set1_epi32(120 << 23)), _mm256_set1_epi32(20));
    cn = _mm256_min_epu32(cn, _mm256_set1_epi32(0x7e));
    __m256i e = _mm256_srli_epi32(a, 23);
    __m256i full = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(0x800000));
    __m256i sh = _mm256_sub_epi32(_mm256_set1_epi32(141), e);
    sh = _mm256_min_epu32(sh, _mm256_set1_epi32(31)); /* lanes e < 110 are zeroed below */
    __m256i cs = shift_rne_v(full, sh);
    cs = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(110), e), cs);
    __m256i code = _mm256_blendv_epi8(cs, cn, normal);
    code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7e), sat);
    code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7f), isnan);
    return _mm256_or_si256(code, sign);
}

__attribute__((target("avx2,fma"))) float w4a8moe_cpu_amax_avx2(const float *y, int64_t n)
{
    __m256 m = _mm256_setzero_ps(), abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 unord = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_and_ps(_mm256_loadu_ps(y + i), abs);
        unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        m = _mm256_max_ps(m, v);
    }
    if (!_mm256_testz_ps(unord, unord)) return __builtin_nanf("");
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma"))) void w4a8moe_cpu_requant_avx2(float *y, int64_t I, int g,
                                                                  float r, int32_t *corr,
                                                                  int32_t *nan)
{
    __m256i nanv = _mm256_setzero_si256();
    const __m256 rv = _mm256_set1_ps(r);
    __m256i A[16];
    for (int64_t b = 0; b < I / g; b++) {
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < g / 8; c++) {
            __m256i q8 = f32_to_e4m3_v(_mm256_div_ps(_mm256_loadu_ps(y + b * g + 8 * c), rv));
            A[c] = e4m3_a512(q8, &nanv);
            sum = _mm256_add_epi32(sum, A[c]);
        }
        /* the group's prepared bytes take exactly its g floats' place */
        store_group(A, g / 8, y + b * g);
        corr[b] = 8 * hsum_epi32(sum);
    }
    *nan |= !_mm256_testz_si256(nanv, nanv);
}

#endif /* W4A8MOE_CPU_HAVE_AVX2 */
