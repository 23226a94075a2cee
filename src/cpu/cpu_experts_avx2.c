/*
 * cpu_experts_avx2.c — the `cpu` backend's x86 tile kernels (contract steps 3 and 6 up to the
 * channel and row scales): AVX2, and the same code with AVX-512 VNNI's vpdpwssd on 256-bit
 * registers. Compiled into every x86-64 build through target attributes (vpdpwssd through
 * inline asm, so no -mavx512 flag is needed) and called only where the CPU has the ISA
 * (runtime detection in cpu_experts.c).
 *
 * Layout and row format: cpu_experts_impl.h. One ymm register holds 8 output channels as
 * 8 int32 lanes. A weight dword holds a channel's nibbles for inputs k0..k0+7; shifting it by
 * 4m and masking with 0x000F000F leaves nibble m in the low int16 and nibble m+4 in the high
 * one, so one vpmaddwd against the broadcast activation pair (A[k0+m], A[k0+m+4]) adds two
 * products per channel: per 64 weights and row 8 vpmaddwd + 8 vpaddd (or 8 vpdpwssd) for the
 * big and small halves of the activations, plus 6 shift/mask uops shared by the rows. All
 * integer, so exact: |nib * big| <= 15 * 7168 and a group of 128 inputs sums to < 2^24 per
 * half. At the group end 512 P_b = 32 * big + small - corr[b] (|.| < 2^30 on the way) is
 * widened to f64 and acc += S * 512 P_b with FMA (the product is exact, so FMA rounds like the
 * reference's separate multiply and add).
 *
 * Register tiles: MR rows x NB blocks of 8 channels, 2*MR*NB int32 accumulators (8 here;
 * integer adds have 1-cycle latency, so 8 chains are plenty). Decode (1 row) runs 1x4, ~88
 * FP-pipe uops per 256 weights (AVX2): measured on the 2-core Zen 4 host with hot caches,
 * ~37 G weights/s/core for the kernel alone, against ~21 G/s/core needed to stream 20 GB/s at
 * 0.52 bytes per weight, so decode is memory bound: software prefetch 1 KB ahead on each panel
 * stream took a cold single-thread decode layer from ~2.4 to ~2.0 ms, prefetching each stream's
 * first 1 KB at the call's start saved another ~4% (2 threads; 2 KB ahead measured no better).
 * Short panels (GEMM2, K = I = 768: 6 KB a stream) paid that cold start on every call: running
 * the prefetch on into the next call's stream heads instead (only a tile's first call
 * prefetches heads) took the qwen3-30b-a3b T = 1 layer from ~790 to ~730 us, together with
 * 8-panel GEMM2 decode tiles (cpu_experts.c); a single stream per call (1x2 tiles, panels in
 * turn) measured slower than two side by side.
 * Prefill runs 4x1 (4 rows share each unpacked weight vector): ~28 G MACs/s/core with AVX2,
 * ~34 with VNNI.
 */
#include "cpu_experts_impl.h"

#if defined(W4A8MOE_CPU_HAVE_AVX2)

#include <immintrin.h>
#define PREFETCH_BYTES 1024 /* ahead on each panel stream, decode tiles only (see above) */

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

/* acc += madd(e, x). The empty asm keeps the accumulation a linear chain: left alone, GCC 12
 * reassociates the four adds of a chunk into a tree whose temporaries spilled every
 * accumulator of the 4x1 tile to the stack. */
AVX2_INLINE __m256i madd_acc(__m256i acc, __m256i e, __m256i x, const int vnni)
{
    if (vnni) {
        __asm__("vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(e), "x"(x));
        return acc;
    }
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(e, x));
    __asm__("" : "+x"(acc));
    return acc;
}

/* Nibbles m and m+4 of every dword as the low and high int16 of the lane: a mask (m = 0), a
 * 16-bit shift that drops everything else (m = 3), or both. */
AVX2_INLINE __m256i nibble_pair(__m256i w, int m)
{
    const __m256i mask = _mm256_set1_epi32(0x000F000F);
    if (m == 3) return _mm256_srli_epi16(w, 12);
    return _mm256_and_si256(m ? _mm256_srli_epi32(w, 4 * m) : w, mask);
}

/* out rows [r0, r0+MR) x blocks [q0, q0+NB) (block q = panel q/2, half q%2); ldo = doubles per
 * out row. */
AVX2_INLINE void tile_kernel(const cpu_gemm_args *ga, int r0, int q0, int ldo, const int MR,
                             const int NB, const int vnni)
{
    const int64_t ngroups = ga->K / ga->g;
    const int nchunk = ga->g / 8, bf16 = ga->scale_bf16;
    const int32_t *a[4];
    const int32_t *corr[4];
    const uint8_t *wq[4];
    __m256d acc[4][4][2];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int32_t *)(const void *)ga->a[r0 + r];
        corr[r] = ga->corr[r0 + r];
#pragma GCC unroll 4
        for (int q = 0; q < NB; q++) acc[r][q][0] = acc[r][q][1] = _mm256_setzero_pd();
    }
#pragma GCC unroll 4
    for (int q = 0; q < NB; q++)
        wq[q] = ga->w + (size_t)((q0 + q) >> 1) * ga->panel_bytes + 32 * ((q0 + q) & 1);
    /* decode: a call streams NB/2 panels side by side and the tile's next call the NB/2 after
     * them, so past its streams' ends the in-loop prefetch moves on to the next call's streams
     * (skip the other NB/2 - 1 panels; panel padding, if any, just shifts it a few lines) and
     * only the tile's first call starts cold */
    const size_t stream_len = (size_t)ngroups * ga->group_bytes;
    const size_t skip = q0 + NB < 2 * ga->np ? (size_t)(NB / 2 - 1) * ga->panel_bytes : 0;
    if (MR == 1 && q0 == 0) /* the tile's head, which the in-loop prefetch never covers */
#pragma GCC unroll 4
        for (int q = 0; q < NB; q += 2)
            for (int o = 0; o < PREFETCH_BYTES; o += CPU_CHUNK)
                _mm_prefetch((const char *)(wq[q] + o), _MM_HINT_T0);
    for (int64_t b = 0; b < ngroups; b++) {
        __m256i big[4][4], small[4][4];
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NB; q++) big[r][q] = small[r][q] = _mm256_setzero_si256();
        for (int c = 0; c < nchunk; c++) {
            __m256i W[4];
            const int32_t *ac[4];
#pragma GCC unroll 4
            for (int q = 0; q < NB; q++)
                W[q] = _mm256_loadu_si256((const __m256i *)(const void *)(
                    wq[q] + (size_t)b * ga->group_bytes + (size_t)c * CPU_CHUNK));
#pragma GCC unroll 4
            for (int r = 0; r < MR; r++) ac[r] = a[r] + (b * nchunk + c) * 8;
            if (MR == 1) { /* memory bound: one 64-byte chunk per panel and step */
                size_t pf = (size_t)b * ga->group_bytes + (size_t)c * CPU_CHUNK + PREFETCH_BYTES;
                if (pf >= stream_len) pf += skip;
#pragma GCC unroll 4
                for (int q = 0; q < NB; q += 2)
                    _mm_prefetch((const char *)(wq[q] + pf), _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                __m256i E[4];
#pragma GCC unroll 4
                for (int q = 0; q < NB; q++) E[q] = nibble_pair(W[q], m);
#pragma GCC unroll 4
                for (int r = 0; r < MR; r++) {
                    __m256i xb = _mm256_set1_epi32(ac[r][m]), xs = _mm256_set1_epi32(ac[r][4 + m]);
#pragma GCC unroll 4
                    for (int q = 0; q < NB; q++) {
                        big[r][q] = madd_acc(big[r][q], E[q], xb, vnni);
                        small[r][q] = madd_acc(small[r][q], E[q], xs, vnni);
                    }
                }
            }
        }
        /* group end: 512 P_b = 32 big + small - corr[b]; acc += S * 512 P_b in f64 */
#pragma GCC unroll 4
        for (int q = 0; q < NB; q++) {
            __m256d slo, shi;
            load_scales(wq[q] - 32 * ((q0 + q) & 1) + (size_t)b * ga->group_bytes +
                            (size_t)nchunk * CPU_CHUNK,
                        bf16, (q0 + q) & 1, &slo, &shi);
#pragma GCC unroll 4
            for (int r = 0; r < MR; r++) {
                __m256i p = _mm256_add_epi32(_mm256_slli_epi32(big[r][q], 5), small[r][q]);
                p = _mm256_sub_epi32(p, _mm256_set1_epi32(corr[r][b]));
                __m256d plo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(p));
                __m256d phi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(p, 1));
                acc[r][q][0] = _mm256_fmadd_pd(slo, plo, acc[r][q][0]);
                acc[r][q][1] = _mm256_fmadd_pd(shi, phi, acc[r][q][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NB; q++) {
            double *o = ga->out + (size_t)(r0 + r) * ldo + (size_t)(q0 + q) * 8;
            _mm256_storeu_pd(o, acc[r][q][0]);
            _mm256_storeu_pd(o + 4, acc[r][q][1]);
        }
}

#define TILE_INSTANCE(MR, NB, V)                                                                \
    static __attribute__((noinline, target("avx2,fma"))) void tile_##MR##x##NB##_##V(           \
        const cpu_gemm_args *ga, int r0, int q0, int ldo)                                       \
    {                                                                                           \
        tile_kernel(ga, r0, q0, ldo, MR, NB, V);                                                \
    }

#define TILE_DRIVER(V)                                                                          \
    TILE_INSTANCE(4, 1, V)                                                                      \
    TILE_INSTANCE(3, 1, V)                                                                      \
    TILE_INSTANCE(2, 2, V)                                                                      \
    TILE_INSTANCE(1, 4, V)                                                                      \
    TILE_INSTANCE(1, 2, V)                                                                      \
    static void tile_driver_##V(const cpu_gemm_args *ga)                                        \
    {                                                                                           \
        int nr = ga->nr, nb = 2 * ga->np, ldo = nb * 8, r = 0, q = 0;                            \
        if (nr >= 4)                                                                            \
            for (q = 0; q < nb; q++)                                                            \
                for (r = 0; r + 4 <= nr; r += 4) tile_4x1_##V(ga, r, q, ldo);                   \
        r = nr & ~3;                                                                            \
        if (nr - r == 3)                                                                        \
            for (q = 0; q < nb; q++) tile_3x1_##V(ga, r, q, ldo);                               \
        if (nr - r == 2)                                                                        \
            for (q = 0; q < nb; q += 2) tile_2x2_##V(ga, r, q, ldo);                            \
        if (nr - r == 1) {                                                                      \
            for (q = 0; q + 4 <= nb; q += 4) tile_1x4_##V(ga, r, q, ldo);                       \
            if (q < nb) tile_1x2_##V(ga, r, q, ldo);                                            \
        }                                                                                       \
    }

/* ---- decode stream kernels ---------------------------------------------------------------
 * One pass over the tile in address order: panel p, group b, then every row of the call in
 * register blocks of up to 4 rows, re-reading the group's 1 KB from L1 for each block; the f64
 * sums live in out (read, FMA, write once per group and row: 16 doubles per 2048 weights).
 * Same per-group integer sums and the same FMA order over b as tile_kernel, so the results
 * are bit-identical to it. A thread that runs consecutive tiles (cpu_experts.c) thus reads one
 * linear stream: on the 2-core host a pure read of 17 KB blocks handed out round-robin tops at
 * ~23 GB/s, one linear stream per thread with its prefetch running into the next block at
 * ~29-31 GB/s (/tmp probes, 2026-12-05). */
#define STREAM_PREFETCH 2048 /* bytes ahead of the read position on the thread's one stream */

/* Group b of one panel (gp = its first chunk) for rows [r0, r0+MR): out[r][0..16) += S * 512 P.
 * MR = 1 splits each accumulator by m parity: 4 chains of 4 dependent vpdpwssd per chunk would
 * leave half the multiply ports idle. pf: where to prefetch this group's lines ahead, or NULL. */
AVX2_INLINE void stream_group(const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, int r0,
                              double *out, int ldo, const uint8_t *pf, const int MR,
                              const int vnni)
{
    const int nchunk = ga->g / 8, SP = MR == 1 ? 2 : 1;
    const int32_t *a[4];
    __m256i big[4][2][2], small[4][2][2];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int32_t *)(const void *)ga->a[r0 + r] + (size_t)b * nchunk * 8;
        for (int h = 0; h < 2; h++)
            for (int sp = 0; sp < SP; sp++) big[r][h][sp] = small[r][h][sp] = _mm256_setzero_si256();
    }
    for (int c = 0; c < nchunk; c++) {
        __m256i W0 = _mm256_loadu_si256((const __m256i *)(const void *)(gp + (size_t)c * CPU_CHUNK));
        __m256i W1 = _mm256_loadu_si256((const __m256i *)(const void *)(gp + (size_t)c * CPU_CHUNK + 32));
        if (pf) _mm_prefetch((const char *)(pf + (size_t)c * CPU_CHUNK), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int m = 0; m < 4; m++) {
            __m256i E0 = nibble_pair(W0, m), E1 = nibble_pair(W1, m);
            const int sp = SP == 2 ? (m & 1) : 0;
#pragma GCC unroll 4
            for (int r = 0; r < MR; r++) {
                __m256i xb = _mm256_set1_epi32(a[r][c * 8 + m]), xs = _mm256_set1_epi32(a[r][c * 8 + 4 + m]);
                big[r][0][sp] = madd_acc(big[r][0][sp], E0, xb, vnni);
                small[r][0][sp] = madd_acc(small[r][0][sp], E0, xs, vnni);
                big[r][1][sp] = madd_acc(big[r][1][sp], E1, xb, vnni);
                small[r][1][sp] = madd_acc(small[r][1][sp], E1, xs, vnni);
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
            __m256i bg = big[r][h][0], sm = small[r][h][0];
            if (SP == 2) {
                bg = _mm256_add_epi32(bg, big[r][h][1]);
                sm = _mm256_add_epi32(sm, small[r][h][1]);
            }
            __m256i p = _mm256_add_epi32(_mm256_slli_epi32(bg, 5), sm);
            p = _mm256_sub_epi32(p, _mm256_set1_epi32(ga->corr[r0 + r][b]));
            double *o = out + (size_t)(r0 + r) * ldo + 8 * h;
            __m256d plo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(p));
            __m256d phi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(p, 1));
            _mm256_storeu_pd(o, _mm256_fmadd_pd(slo, plo, _mm256_loadu_pd(o)));
            _mm256_storeu_pd(o + 4, _mm256_fmadd_pd(shi, phi, _mm256_loadu_pd(o + 4)));
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

#define STREAM_DRIVER(V)                                                                        \
    static __attribute__((noinline, target("avx2,fma"))) void stream_rows_##V(                  \
        const cpu_gemm_args *ga, const uint8_t *gp, int64_t b, double *out, int ldo,           \
        const uint8_t *pf)                                                                      \
    {                                                                                           \
        int r = 0, nr = ga->nr;                                                                 \
        for (; r + 4 <= nr; r += 4, pf = NULL) stream_group(ga, gp, b, r, out, ldo, pf, 4, V);  \
        if (nr - r == 3) stream_group(ga, gp, b, r, out, ldo, pf, 3, V);                        \
        if (nr - r == 2) stream_group(ga, gp, b, r, out, ldo, pf, 2, V);                        \
        if (nr - r == 1) stream_group(ga, gp, b, r, out, ldo, pf, 1, V);                        \
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

STREAM_DRIVER(0)
STREAM_DRIVER(1)

void w4a8moe_cpu_stream_avx2(const cpu_gemm_args *ga) { stream_driver_0(ga); }

void w4a8moe_cpu_stream_avx512vnni(const cpu_gemm_args *ga) { stream_driver_1(ga); }

/* Blocks outer, 4-row blocks inner: a block's weights (4*K bytes) stay in L1 while the row
 * blocks pass over them. */
TILE_DRIVER(0)
TILE_DRIVER(1)

void w4a8moe_cpu_tile_avx2(const cpu_gemm_args *ga) { tile_driver_0(ga); }

void w4a8moe_cpu_tile_avx512vnni(const cpu_gemm_args *ga) { tile_driver_1(ga); }

#endif /* W4A8MOE_CPU_HAVE_AVX2 */
