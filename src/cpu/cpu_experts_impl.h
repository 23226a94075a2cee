/*
 * cpu_experts_impl.h — what the `cpu` experts backend's files share: the packed weight layout
 * and the tile kernels' interface (cpu_experts.c drives them; cpu_experts_avx512.c,
 * cpu_experts_avx2.c and cpu_experts_generic.c implement them), and the entry points of the
 * unquantised path (cpu_experts_dense.c, which documents its own layout).
 *
 * Packed layout (written once by pack_weights). A matrix of N output channels by K inputs is
 * cut into panels of 16 channels, two blocks of 8:
 *   w13: panel p = block 0: gate channels [8p, 8p+8), block 1: up channels [8p, 8p+8)
 *        (I/8 panels), so one tile yields matching gate and up values for the activation;
 *   w2:  panel p = block 0: channels [16p, 16p+8), block 1: [16p+8, 16p+16) (H/16 panels).
 * A panel is K/g groups back to back, one stream; a group is
 *   g/8 chunks of 64 bytes: chunk c holds inputs k0 = b*g + 8c .. k0+7 as
 *       bytes [0, 32): block 0, 8 dwords, dword j = channel j's 8 nibbles,
 *       bytes [32, 64): block 1 alike;
 *     nibble i (bits 4i..4i+3) of a dword is q[ch][k0 + i] + 8 (the checkpoint's own word, so
 *     packing is a transpose of dwords);
 *   then the 16 group scales S[ch][b] (block 0's 8, then block 1's 8): bf16 when the checkpoint's
 *     are bf16 (16-bit streams 3% fewer bytes than f32 at g = 128), else f32 (f16 widened
 *     exactly).
 * Panels start on 64-byte boundaries. Channel scales are f32 arrays beside the panels (ones when
 * the checkpoint has none). Memory: 0.5 + (2 or 4)/g bytes per weight.
 *
 * Prepared input rows (one per routed row; exact integers, so P_b is exact and the group sums
 * below reproduce the reference's f64 arithmetic bit for bit):
 *   every e4m3 value v is A = v * 512, an integer with |A| <= 229376. Per group b, t_b = the
 *   trailing zero bits common to all the group's A (0 when all are 0), and A' = A >> t_b (exact)
 *   is written as balanced base-256 digits A' = d0 + 256 d1 + 65536 d2, d0 and d1 in [-128,
 *   127], |d2| <= 4 (signed bytes, the operand vpdpbusd multiplies with the weights' unsigned
 *   nibbles). e4m3 has 4 significant bits, so a group whose values span fewer than ~2^11 has
 *   d2 = 0 throughout after the shift, and the kernels skip that plane (one multiply in three);
 *   int8 [K/8][32]: chunk c (inputs k0 = 8c .. 8c+7) = for digit p = 0, 1, 2 the 8 bytes
 *   d_p[k0], d_p[k0+2], d_p[k0+4], d_p[k0+6], d_p[k0+1], d_p[k0+3], d_p[k0+5], d_p[k0+7]
 *   (even inputs, then odd: the nibble bytes a mask, or a shift and a mask, pull out of a
 *   weight dword, see cpu_experts_avx2.c), then 8 bytes of padding: 4 bytes per input, so
 *   GEMM2's rows are prepared in place of the f32 activations they come from. The padding of a
 *   group's first chunk holds the group's word at byte CPU_GROUP_WORD: int32 t_b | nd_b << 8,
 *   nd_b = the digit planes that are not all zero (1 + the highest such p);
 *   corr int32 [K/g + 1]: corr[b] = 8 * sum_{k in group b} A (undoes the +8 of the stored
 *   nibbles), corr[K/g] = 1 when the row holds an e4m3 NaN (its whole output is then NaN, as
 *   in the reference, where 0 * NaN poisons every channel).
 * Kernels compute 512 P_b = ((S0 + 2^8 S1 + 2^16 S2) << t_b) - corr[b], S_p = the sum of the
 * nibbles times digit p (planes from nd_b up are zero and not multiplied); the true value is
 * below 2^29 in magnitude, so int32 holds every step.
 * Kernels return, per row and channel, acc = sum_b S[ch][b] * (512 * P_b) in f64, summed over b
 * in order: 512 P_b (|.| < 2^28) times S (<= 24 significant bits) is exact in f64, so acc is
 * exactly 512 times the reference's f64 sum, and the driver's h = s * (C * acc * 2^-9) rounded
 * once to f32 is the reference's value.
 */
#ifndef W4A8MOE_CPU_EXPERTS_IMPL_H
#define W4A8MOE_CPU_EXPERTS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define CPU_PANEL 16    /* channels per panel */
#define CPU_CHUNK 64    /* bytes per 8 inputs of a panel */
#define CPU_GROUP_WORD 24 /* byte of a prepared group's first chunk holding t | nd << 8 */

/* One call of a tile kernel: nr rows of one expert against np consecutive panels. */
typedef struct cpu_gemm_args {
    const uint8_t *w;        /* first panel of the tile */
    size_t panel_bytes;      /* stride between panels */
    size_t group_bytes;      /* stride between groups inside a panel */
    int64_t K;               /* inputs (multiple of g) */
    int32_t g;               /* group size: 32, 64 or 128 */
    int32_t scale_bf16;      /* group scales stored as bf16 (else f32) */
    int32_t np;              /* panels in this tile, >= 1 */
    int32_t nr;              /* rows, >= 1 */
    const int8_t *const *a;    /* [nr] prepared rows, int8 [K/8][32] */
    const int32_t *const *corr; /* [nr] corrections, int32 [K/g + 1] */
    double *out;               /* [nr][np*16]: acc (above), no channel or row scale */
    const uint8_t *pf_next;    /* stream kernels: where the caller's next tile starts (its
                                * prefetch runs on into it past this tile's end), or NULL */
} cpu_gemm_args;

/* Row r's group word for group b (t | nd << 8, see the top). */
static inline int32_t cpu_group_word(const cpu_gemm_args *ga, int r, int64_t b)
{
    const int8_t *p = ga->a[r] + (size_t)b * (size_t)ga->g * 4 + CPU_GROUP_WORD;
    int32_t w;
    __builtin_memcpy(&w, p, 4);
    return w;
}

/* The digit planes rows [r0, r0 + n) need in group b: the most any of them needs. */
static inline int cpu_block_planes(const cpu_gemm_args *ga, int r0, int n, int64_t b)
{
    int nd = 1;
    for (int r = r0; r < r0 + n; r++) {
        int x = cpu_group_word(ga, r, b) >> 8;
        nd = x > nd ? x : nd;
    }
    return nd;
}

/* out = the tile's group-scaled dot products (contract steps 3 and 6 before C and s). */
void w4a8moe_cpu_tile_generic(const cpu_gemm_args *args);

#if defined(__x86_64__) && defined(__GNUC__)
#define W4A8MOE_CPU_HAVE_AVX2 1
/* The same with AVX2 + FMA (call only where the CPU has both; cpu_experts_avx2.c), and with
 * vpdpbusd on 512-bit registers (only where the CPU also has AVX512F, AVX512VL and AVX512VNNI;
 * cpu_experts_avx512.c). One pass
 * over the tile's bytes in address order (panel by panel, every row per group), software
 * prefetch running ahead linearly and on into args->pf_next, so a thread handed consecutive
 * tiles (cpu_experts.c's decode path) reads one linear stream. */
void w4a8moe_cpu_stream_avx2(const cpu_gemm_args *args);
void w4a8moe_cpu_stream_avx512vnni(const cpu_gemm_args *args);
/* Row preparation with AVX2, the same bytes as cpu_experts.c's scalar prep_codes: from e4m3
 * codes q [K]; and requantisation in place (contract step 5 after r is known: y [I] f32 ->
 * the prepared e4m3 values of y / r). Both write corr[0, K/g) and OR a NaN into *nan. */
void w4a8moe_cpu_prep_codes_avx2(const uint8_t *q, int64_t K, int g, int8_t *a, int32_t *corr,
                                 int32_t *nan);
void w4a8moe_cpu_requant_avx2(float *y, int64_t I, int g, float r, int32_t *corr, int32_t *nan);
/* max |y[i]| over n (a multiple of 8), NaN when any element is NaN. */
float w4a8moe_cpu_amax_avx2(const float *y, int64_t n);
#endif

/* ---- the unquantised path (weight scheme BF16), cpu_experts_dense.c ---------------------- */
#include "../common/threadpool.h"
#include "../core/backend.h"

typedef struct cpu_dense_state cpu_dense_state;

/* bytes rounded up to 2 MB, 2 MB-aligned, transparent huge pages asked for (cpu_experts.c);
 * release with free(). NULL when out of memory. */
uint8_t *w4a8moe_cpu_alloc_huge(size_t bytes);

size_t w4a8moe_cpu_dense_workspace_size(const w4a8moe_stage_ctx *ctx);
/* Packs w->dense ([3 * E_local] gate, up, down) on pool, which must outlive the state;
 * use_avx2: the CPU has AVX2 + FMA. *out is set (to be freed) even when packing fails. */
w4a8moe_status w4a8moe_cpu_dense_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                      w4a8moe_threadpool *pool, int use_avx2,
                                      cpu_dense_state **out, w4a8moe_err *err);
/* y_rows = W2 act(W13 x) for every row of every local expert (x: the caller's, dispatch->x). */
void w4a8moe_cpu_dense_run(const w4a8moe_stage_ctx *ctx, const cpu_dense_state *s,
                           const w4a8moe_dispatch *dispatch, void *workspace);
void w4a8moe_cpu_dense_free(cpu_dense_state *s);

/* Rows [r0, r1) of local expert e: the unit of work both cpu paths (int4 and dense) hand to a
 * task, r1 - r0 <= the path's rows per task. */
typedef struct cpu_rowgroup {
    int32_t e, r0, r1;
} cpu_rowgroup;

/* Splits the rows [c0, c1) of a chunk, expert by expert (expert_offsets [E_local+1]), into
 * groups of at most rb rows; returns how many it wrote to out. */
static inline int64_t w4a8moe_cpu_build_groups(const int32_t *expert_offsets, int32_t num_local,
                                               int64_t c0, int64_t c1, int64_t rb,
                                               cpu_rowgroup *out)
{
    int64_t n = 0;
    for (int32_t e = 0; e < num_local; e++) {
        int64_t lo = expert_offsets[e] > c0 ? expert_offsets[e] : c0;
        int64_t hi = expert_offsets[e + 1] < c1 ? expert_offsets[e + 1] : c1;
        for (int64_t r = lo; r < hi; r += rb)
            out[n++] = (cpu_rowgroup){e, (int32_t)r, (int32_t)(r + rb < hi ? r + rb : hi)};
    }
    return n;
}

#endif /* W4A8MOE_CPU_EXPERTS_IMPL_H */
