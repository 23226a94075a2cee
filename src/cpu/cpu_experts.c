/*
 * cpu_experts.c — `cpu`, the fast host experts backend (contract steps 3-6), threaded across
 * experts, rows and output channels, with x86 tile kernels chosen at run time (AVX2 + FMA, or
 * AVX-512 VNNI on 512-bit registers) and a generic C fallback (cpu_experts_avx2.c,
 * cpu_experts_avx512.c, cpu_experts_generic.c; layout in cpu_experts_impl.h).
 *
 * pack_weights repacks every local expert once into 16-channel panels (gate and up interleaved
 * so one tile yields both halves of the activation), keeping int4 in memory: decode streams
 * 0.5 + scale bytes per weight and unpacks in registers.
 *
 * run, per chunk of at most `rc` routed rows (rows are grouped by expert), four parallel phases
 * on the layer's thread pool:
 *   1. prepare input rows: e4m3 -> exact integer pairs + per-group corrections;
 *   2. GEMM1 + activation: task = (row group of one expert, tile of 4 panels), y = act(h_gate,
 *      h_up) with h = s_t * (C[n] * sum_b S[n,b] P_b);
 *   3. requantise per row: r = max(amax(y)/448, 1/(448*512)) (static: act_scale_mid),
 *      b = e4m3(y / r) exactly as the reference, then prepared like phase 1, in place;
 *   4. GEMM2: task = (row group, tile of 4 panels), y_rows = r * (C2[m] * sum_b S2 P_b).
 * Chunks of at most FUSED_ROWS rows (decode, T * k <= 256) run 2-4 as one pool run instead
 * (run_decode): each thread walks whole row groups, GEMM1 tiles then GEMM2 tiles, so it reads
 * one linear stream of weights (an expert's w13 then w2), requantises the group itself and
 * never waits at a barrier; threads share tiles only at the tail (see "decode" below).
 * Numerics: P_b is an exact integer and the group sum runs in f64 in the reference's order
 * (cpu_experts_impl.h), so h, y, r, b and y_rows are bit-identical to `cpu_ref`'s: no e4m3
 * rounding of y / r can flip between the two (one flip moves a row by ~1e-3 relative).
 * Determinism: every output element belongs to exactly one task and is summed in a fixed
 * order, so results do not depend on the thread count or on which thread ran what.
 * Decode balance: T = 1, k = 8 gives 8 row groups of 24 GEMM1 tiles (4 panels, ~68 KB) and 16
 * GEMM2 tiles (8 panels, ~50 KB) at qwen3-30b-a3b's shape: four whole experts per thread, and
 * at the tail the two threads split the last group's tiles, ~3 us apiece, so they finish
 * within a tile of each other (measured: ~5 us of waiting per thread and forward).
 *
 * Unquantised shared experts (scheme pair BF16 x BF16) take their own path on the same pool
 * and ISA choice: cpu_experts_dense.c (bf16/f32 panels, f32 FMA blocks summed in f64).
 */
#include "../common/threadpool.h"
#include "../core/backend.h"
#include "cpu_experts_impl.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define TILE_PANELS 4         /* panels per task: 64 channels (GEMM2) or 32 i values (GEMM1) */
#define TILE_PANELS2_FUSED 8  /* panels per GEMM2 task in decode (run_decode), see the top */
#define ROW_BYTES_L2 (256u << 10) /* prepared rows one task may keep hot in L2 */
#define CHUNK_BYTES (32u << 20)   /* workspace budget for the per-chunk row buffers */
#define PREP_ROWS 4           /* rows per phase-1/3 task */
#define FUSED_ROWS 256        /* chunks of at most this many rows run the decode streams */

typedef struct cpu_expert {
    const uint8_t *w13, *w2; /* panels */
    const float *c13;        /* [2I]: gate channel scales, then up */
    const float *c2;         /* [H] */
} cpu_expert;

typedef struct cpu_state {
    w4a8moe_threadpool *pool;
    int use_avx2, use_vnni, scale_bf16;
    cpu_dense_state *dense;  /* weight scheme BF16: the unquantised path, else NULL */
    int64_t H, I;
    int32_t g, num_local;
    size_t group13, panel13, group2, panel2, expert_bytes;
    cpu_expert *experts;
    uint8_t *blob;
    int32_t lut_a512[256];    /* e4m3 code -> A = v * 512 (0 for NaN) */
} cpu_state;

/* Where each array lives in the workspace; rc = rows per chunk. */
typedef struct cpu_ws_layout {
    int64_t rc, rb1, rb2, max_groups1, max_groups2;
    size_t ain, corr1, alias1, ymid, corr2, rmid, groups1, groups2, sync, scratch, total;
} cpu_ws_layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Rows per GEMM task: their prepared inputs (4K bytes each) fit ROW_BYTES_L2; 4..64, mult. of 4. */
static int64_t rows_per_task(int64_t K)
{
    int64_t rb = ((int64_t)ROW_BYTES_L2 / (K * 4)) & ~(int64_t)3;
    return rb < 4 ? 4 : (rb > 64 ? 64 : rb);
}

#define SCRATCH_DOUBLES (64 * TILE_PANELS2_FUSED * CPU_PANEL) /* one task's tile sums, 64 KB */

static void ws_layout(const w4a8moe_layer_desc *d, int32_t num_local, int32_t threads,
                      cpu_ws_layout *L)
{
    int64_t H = d->hidden, I = d->inter, g = d->group_size;
    int64_t R = d->max_tokens * d->top_k, cap = (int64_t)CHUNK_BYTES / ((H + I) * 4);
    if (cap < 64) cap = 64;
    L->rc = R < cap ? R : cap;
    L->rb1 = rows_per_task(H);
    L->rb2 = rows_per_task(I);
    L->max_groups1 = num_local + L->rc / L->rb1 + 1;
    L->max_groups2 = num_local + L->rc / L->rb2 + 1;
    size_t rc = (size_t)L->rc, off = 0;
    L->ain = off;     off += align64(rc * (size_t)H * 4);
    L->corr1 = off;   off += align64(rc * (size_t)(H / g + 1) * 4);
    L->ymid = off;    off += align64(rc * (size_t)I * 4);
    L->corr2 = off;   off += align64(rc * (size_t)(I / g + 1) * 4);
    L->rmid = off;    off += align64(rc * 4);
    L->alias1 = off;  off += align64(rc * 4);
    L->groups1 = off; off += align64((size_t)L->max_groups1 * sizeof(cpu_rowgroup));
    L->groups2 = off; off += align64((size_t)L->max_groups2 * sizeof(cpu_rowgroup));
    L->sync = off;    off += align64(((size_t)L->max_groups1 * 3 + 1) * sizeof(atomic_int));
    L->scratch = off; off += (size_t)(threads > 0 ? threads : 1) * SCRATCH_DOUBLES * 8;
    L->total = off;
}

/* ---- predicates -------------------------------------------------------------------------- */

static int cpu_supports_device(const w4a8moe_device_info *dev, char *why, size_t cap)
{
    if (dev->kind == W4A8MOE_DEVICE_CPU) return 1;
    snprintf(why, cap, "runs on the host; the layer's device is not the CPU");
    return 0;
}

static int cpu_supports_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why,
                              size_t cap)
{
    if (w == W4A8MOE_WEIGHT_INT4_GROUP &&
        (a == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC || a == W4A8MOE_ACT_FP8_TENSOR_STATIC))
        return 1;
    if (w == W4A8MOE_WEIGHT_BF16 && a == W4A8MOE_ACT_BF16) return 1; /* cpu_experts_dense.c */
    snprintf(why, cap, "weight scheme %d with activation scheme %d is not a pair it runs (int4 "
             "takes fp8 activations, bf16 weights unquantised ones)", (int)w, (int)a);
    return 0;
}

static int cpu_supports_shape(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    /* panels of 16 channels: H % 16 for w2, I % 8 for w13 (g >= 32 divides both already);
     * the unquantised path pads its panels with zero channels, so any H and I */
    if (d->weight_scheme == W4A8MOE_WEIGHT_BF16) return 1;
    if (d->hidden % CPU_PANEL == 0 && d->inter % 8 == 0) return 1;
    snprintf(why, cap, "needs H %% 16 == 0 and I %% 8 == 0 (H = %lld, I = %lld)",
             (long long)d->hidden, (long long)d->inter);
    return 0;
}

static size_t cpu_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    if (ctx->desc->weight_scheme == W4A8MOE_WEIGHT_BF16) return w4a8moe_cpu_dense_workspace_size(ctx);
    cpu_ws_layout L;
    ws_layout(ctx->desc, ctx->num_local, ctx->num_threads, &L);
    return L.total;
}

/* ---- packing ----------------------------------------------------------------------------- */

/* One panel: block 0 = rows [row0, row0+8) of m0, block 1 = rows [row1, row1+8) of m1. */
static void pack_panel(const cpu_state *s, const w4a8moe_int4_matrix *m0, int64_t row0,
                       const w4a8moe_int4_matrix *m1, int64_t row1, w4a8moe_dtype sdt,
                       size_t group_bytes, uint8_t *dst)
{
    int64_t K = m0->cols, g = s->g, kw = K / 8, ng = K / g;
    const w4a8moe_int4_matrix *m[2] = {m0, m1};
    int64_t row[2] = {row0, row1};
    for (int64_t b = 0; b < ng; b++) {
        uint8_t *gp = dst + (size_t)b * group_bytes;
        for (int64_t c = 0; c < g / 8; c++)
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 8; j++)
                    memcpy(gp + c * CPU_CHUNK + 32 * h + 4 * j,
                           m[h]->packed + (row[h] + j) * kw + b * (g / 8) + c, 4);
        uint8_t *sp = gp + (size_t)(g / 8) * CPU_CHUNK;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 8; j++) {
                int64_t i = (row[h] + j) * ng + b;
                if (s->scale_bf16)
                    memcpy(sp + 2 * (8 * h + j), (const uint16_t *)m[h]->scale + i, 2);
                else {
                    float v = w4a8moe_scale_get(m[h]->scale, sdt, i);
                    memcpy(sp + 4 * (8 * h + j), &v, 4);
                }
            }
    }
}

typedef struct pack_job {
    cpu_state *s;
    const w4a8moe_logical_weights *w;
} pack_job;

static void pack_expert_task(void *arg, int64_t e, int32_t thread)
{
    (void)thread;
    const pack_job *job = arg;
    cpu_state *s = job->s;
    const w4a8moe_expert_weights *x = &job->w->experts[e];
    w4a8moe_dtype sdt = job->w->scale_dtype;
    int64_t H = s->H, I = s->I;
    uint8_t *base = s->blob + (size_t)e * s->expert_bytes;
    uint8_t *w13 = base, *w2 = w13 + align64(s->panel13 * (size_t)(I / 8));
    float *c13 = (float *)(void *)(w2 + align64(s->panel2 * (size_t)(H / CPU_PANEL)));
    float *c2 = (float *)(void *)((uint8_t *)c13 + align64((size_t)I * 8));
    for (int64_t p = 0; p < I / 8; p++)
        pack_panel(s, &x->gate, 8 * p, &x->up, 8 * p, sdt, s->group13, w13 + p * s->panel13);
    for (int64_t p = 0; p < H / CPU_PANEL; p++)
        pack_panel(s, &x->down, 16 * p, &x->down, 16 * p + 8, sdt, s->group2, w2 + p * s->panel2);
    for (int64_t i = 0; i < I; i++) {
        c13[i] = x->gate.channel_scale ? x->gate.channel_scale[i] : 1.0f;
        c13[I + i] = x->up.channel_scale ? x->up.channel_scale[i] : 1.0f;
    }
    for (int64_t m = 0; m < H; m++) c2[m] = x->down.channel_scale ? x->down.channel_scale[m] : 1.0f;
    s->experts[e] = (cpu_expert){w13, w2, c13, c2};
}

/* The packed weights on 2 MB boundaries, asking for transparent huge pages before the first
 * touch: decode streams ~20 MB of randomly chosen experts per layer, ~5000 4 KB pages whose
 * TLB misses and prefetch-stopping page crossings cost ~10% of a decode step. */
uint8_t *w4a8moe_cpu_alloc_huge(size_t bytes)
{
    size_t huge = (size_t)2 << 20, rounded = (bytes + huge - 1) & ~(huge - 1);
    if (rounded < bytes) return NULL;
    uint8_t *p = aligned_alloc(huge, rounded);
#if defined(MADV_HUGEPAGE)
    if (p) madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure just keeps 4 KB pages */
#endif
    return p;
}

static void init_luts(cpu_state *s)
{
    for (int c = 0; c < 256; c++) {
        float v = w4a8moe_e4m3_to_f32((uint8_t)c);
        int32_t a512 = v == v ? (int32_t)(v * 512.0f) : 0; /* exact: v is a multiple of 2^-9 */
        s->lut_a512[c] = a512;
    }
}

static w4a8moe_status cpu_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                               void **state, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    cpu_state *s = calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu backend state");
    *state = s;
    s->H = d->hidden;
    s->I = d->inter;
    s->g = d->group_size;
    s->num_local = w->num_local;
    s->scale_bf16 = w->scale_dtype == W4A8MOE_DTYPE_BF16;
    /* the device info's ISA bits are capped by W4A8MOE_CPU_GENERIC (cpu_features.h), so tests
     * reach the generic, AVX2 and VNNI kernels on one machine */
#if defined(W4A8MOE_CPU_HAVE_AVX2)
    s->use_avx2 = ctx->dev->cpu_avx2 && ctx->dev->cpu_fma;
    s->use_vnni = s->use_avx2 && ctx->dev->cpu_avx512vnni;
#endif
    FORWARD(w4a8moe_threadpool_create(ctx->num_threads > 0 ? ctx->num_threads : 1, &s->pool, err));
    if (w->dense) return w4a8moe_cpu_dense_pack(ctx, w, s->pool, s->use_avx2, &s->dense, err);
    init_luts(s);
    size_t sb = s->scale_bf16 ? 2 : 4, chunks = (size_t)s->g / 8;
    s->group13 = s->group2 = chunks * CPU_CHUNK + CPU_PANEL * sb;
    s->panel13 = align64(s->group13 * (size_t)(s->H / s->g));
    s->panel2 = align64(s->group2 * (size_t)(s->I / s->g));
    s->expert_bytes = align64(s->panel13 * (size_t)(s->I / 8)) +
                      align64(s->panel2 * (size_t)(s->H / CPU_PANEL)) +
                      align64((size_t)s->I * 8) + align64((size_t)s->H * 4);
    size_t n = (size_t)(w->num_local > 0 ? w->num_local : 1);
    RETURN_IF(err, s->expert_bytes > SIZE_MAX / n, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "cpu packed weights: %d experts of %zu bytes overflow", w->num_local,
              s->expert_bytes);
    s->blob = w4a8moe_cpu_alloc_huge(n * s->expert_bytes);
    RETURN_IF(err, !s->blob, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "cpu packed weights: %zu bytes; hint: use expert parallelism or a smaller model",
              n * s->expert_bytes);
    s->experts = calloc(n, sizeof *s->experts);
    RETURN_IF(err, !s->experts, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu expert table");
    pack_job job = {s, w};
    w4a8moe_threadpool_run(s->pool, pack_expert_task, &job, w->num_local);
    return W4A8MOE_STATUS_OK;
}

static void cpu_free(void *state)
{
    cpu_state *s = state;
    if (!s) return;
    w4a8moe_threadpool_destroy(s->pool);
    w4a8moe_cpu_dense_free(s->dense);
    free(s->experts);
    free(s->blob);
    free(s);
}

/* ---- the forward ------------------------------------------------------------------------- */

typedef struct cpu_job {
    const cpu_state *s;
    const w4a8moe_layer_desc *d;
    const w4a8moe_dispatch *dp;
    int64_t c0, c1;                /* the chunk's rows */
    int8_t *ain;                   /* prepared GEMM1 rows [rc][4H], indexed by row - c0 */
    int32_t *corr1, *corr2;        /* [rc][H/g + 1], [rc][I/g + 1] */
    int32_t *alias1;               /* [rc]: the row whose prepared GEMM1 input a row uses */
    float *ymid, *rmid;            /* y [rc][I] then prepared GEMM2 rows in place; r [rc] */
    const cpu_rowgroup *groups;    /* of the phase running */
    int64_t n_groups, tiles;
    double *scratch;               /* [threads][SCRATCH_DOUBLES] tile sums (off the stack) */
    int64_t tiles2;                /* decode: GEMM2 tiles per group */
    int64_t panels2;               /* panels per GEMM2 tile */
    atomic_int *pending, *ready;   /* decode: [groups] GEMM1 tiles left; requantised */
    atomic_int *next_tile;         /* decode: [groups] the next tile to claim of each group */
    atomic_int *next_group;        /* decode: the next group nobody owns yet */
} cpu_job;

/* Prepared row (cpu_experts_impl.h) from e4m3 codes: exact integer pairs + corrections.
 * Writes corr[0, K/g) and ORs a NaN found into *nan. */
static void prep_codes(const cpu_state *s, const uint8_t *q, int64_t K, int8_t *a, int32_t *corr,
                       int32_t *nan)
{
    int g = s->g;
#if defined(W4A8MOE_CPU_HAVE_AVX2)
    if (s->use_avx2) {
        w4a8moe_cpu_prep_codes_avx2(q, K, g, a, corr, nan);
        return;
    }
#endif
    for (int64_t b = 0; b < K / g; b++) {
        int32_t sum = 0, A[128]; /* |sum| <= 128 * 229376 */
        uint32_t any = 0;
        for (int64_t i = 0; i < g; i++) {
            uint8_t c = q[b * g + i];
            A[i] = s->lut_a512[c];
            any |= (uint32_t)A[i];
            sum += A[i];
            *nan |= (c & 0x7f) == 0x7f;
        }
        corr[b] = 8 * sum;
        /* the group's digits of A >> t, t = the trailing zeros all A share (exact division) */
        int t = any ? __builtin_ctz(any) : 0, nd = 1;
        int8_t *grp = a + b * g * 4;
        for (int64_t i = 0; i < g; i++) {
            int at = 4 * (int)(i & 1) + (int)((i & 7) >> 1); /* even inputs, then odd */
            int8_t *chunk = grp + (i >> 3) * 32;
            if ((i & 7) == 0) memset(chunk + 24, 0, 8);
            int32_t rest = A[i] / (1 << t);
            for (int p = 0; p < 3; p++) {
                int32_t d = (int32_t)(int8_t)(uint8_t)(rest & 0xff);
                chunk[8 * p + at] = (int8_t)d;
                if (d && p + 1 > nd) nd = p + 1;
                rest = (rest - d) / 256;
            }
        }
        int32_t word = t | nd << 8;
        memcpy(grp + CPU_GROUP_WORD, &word, 4);
    }
}

/* The first row of row r's token inside the chunk when it holds the same e4m3 bytes (a token
 * routed to k experts is quantised once and copied into k rows: preparing it once saves k - 1
 * conversions), else r itself. Checked, not assumed: the token's rows come from pair_row, the
 * candidate must belong to the same token, and the bytes must match. */
static int64_t canonical_row(const cpu_job *job, int64_t r)
{
    const w4a8moe_dispatch *dp = job->dp;
    int64_t t = dp->row_token[r], k = job->d->top_k, H = job->s->H, best = r;
    if (t < 0 || t >= dp->T) return r;
    for (int64_t j = 0; j < k; j++) {
        int64_t c = dp->pair_row[t * k + j];
        if (c >= job->c0 && c < best) best = c;
    }
    if (best == r || dp->row_token[best] != t) return r;
    return memcmp(dp->a_q + best * H, dp->a_q + r * H, (size_t)H) == 0 ? best : r;
}

static void prep_in_task(void *arg, int64_t t, int32_t thread)
{
    (void)thread;
    const cpu_job *job = arg;
    int64_t H = job->s->H, ng = H / job->s->g;
    int64_t r0 = job->c0 + t * PREP_ROWS, r1 = r0 + PREP_ROWS < job->c1 ? r0 + PREP_ROWS : job->c1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = canonical_row(job, r);
        job->alias1[r - job->c0] = (int32_t)(c - job->c0);
        if (c != r) continue;
        int32_t *corr = job->corr1 + (r - job->c0) * (ng + 1);
        corr[ng] = 0;
        prep_codes(job->s, job->dp->a_q + r * H, H, job->ain + (r - job->c0) * 4 * H, corr,
                   &corr[ng]);
    }
}

/* Contract step 5 for rows [r0, r1), in place: y -> prepared e4m3 values of y / r. */
static void requant_rows(const cpu_job *job, int64_t r0, int64_t r1)
{
    const cpu_state *s = job->s;
    int64_t I = s->I, ng = I / s->g;
    uint8_t codes[256];
    for (int64_t row = r0; row < r1; row++) {
        float *y = job->ymid + (row - job->c0) * I, r;
        if (job->d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
            r = job->d->act_scale_mid;
        } else {
            float amax = 0.0f;
#if defined(W4A8MOE_CPU_HAVE_AVX2)
            if (s->use_avx2) amax = w4a8moe_cpu_amax_avx2(y, I);
            else
#endif
            for (int64_t i = 0; i < I; i++) {
                float v = fabsf(y[i]);
                if (amax == amax && !(v <= amax)) amax = v; /* a NaN sticks */
            }
            r = w4a8moe_act_scale(amax);
        }
        job->rmid[row - job->c0] = r;
        int32_t *corr = job->corr2 + (row - job->c0) * (ng + 1);
        corr[ng] = 0;
#if defined(W4A8MOE_CPU_HAVE_AVX2)
        if (s->use_avx2) {
            w4a8moe_cpu_requant_avx2(y, I, s->g, r, corr, &corr[ng]);
            continue;
        }
#endif
        for (int64_t b = 0; b < ng; b++) {
            /* group b's prepared values take exactly the bytes of its g floats of y */
            int g = s->g;
            for (int k = 0; k < g; k++) codes[k] = w4a8moe_f32_to_e4m3(y[b * g + k] / r);
            prep_codes(s, codes, g, (int8_t *)(void *)(y + b * g), corr + b, &corr[ng]);
        }
    }
}

static void prep_mid_task(void *arg, int64_t t, int32_t thread)
{
    (void)thread;
    const cpu_job *job = arg;
    int64_t r0 = job->c0 + t * PREP_ROWS, r1 = r0 + PREP_ROWS < job->c1 ? r0 + PREP_ROWS : job->c1;
    requant_rows(job, r0, r1);
}

/* Splits the chunk's rows of each expert into groups of at most rb rows. */
static int64_t build_groups(const cpu_job *job, int64_t rb, cpu_rowgroup *out)
{
    return w4a8moe_cpu_build_groups(job->dp->expert_offsets, job->s->num_local, job->c0, job->c1,
                                    rb, out);
}

/* Runs the tile kernel for (row group, tile) of one GEMM; out gets [nr][np*16]. */
static void run_tile(const cpu_job *job, const cpu_rowgroup *rg, const uint8_t *panels,
                     size_t panel_bytes, size_t group_bytes, int64_t K, int64_t p0, int np,
                     const int8_t *a, const int32_t *corr, const int32_t *alias, double *out,
                     const uint8_t *pf_next)
{
    const cpu_state *s = job->s;
    const int8_t *ap[64];
    const int32_t *cp[64];
    int nr = rg->r1 - rg->r0;
    int64_t ng = K / s->g;
    for (int r = 0; r < nr; r++) {
        int64_t i = rg->r0 + r - job->c0;
        if (alias) i = alias[i];
        ap[r] = a + i * 4 * K; /* 4 bytes per input */
        cp[r] = corr + i * (ng + 1);
    }
    cpu_gemm_args ga = {panels + (size_t)p0 * panel_bytes, panel_bytes, group_bytes, K, s->g,
                        s->scale_bf16, np, nr, ap, cp, out, pf_next};
#if defined(W4A8MOE_CPU_HAVE_AVX2)
    if (s->use_vnni) {
        w4a8moe_cpu_stream_avx512vnni(&ga);
        return;
    }
    if (s->use_avx2) {
        w4a8moe_cpu_stream_avx2(&ga);
        return;
    }
#endif
    w4a8moe_cpu_tile_generic(&ga);
}

/* The reference's rounding: (float)(scale * (C * acc)) in f64, acc = out * 2^-9 (exact). */
static inline float finish(float scale, float c, double out)
{
    return (float)((double)scale * ((double)c * (out * 0x1p-9)));
}

/* GEMM1 + activation of row group rg, tile `tile` (TILE_PANELS panels). */
static void gemm1_tile(const cpu_job *job, const cpu_rowgroup *rg, int64_t tile, int32_t thread,
                       const uint8_t *pf_next)
{
    const cpu_state *s = job->s;
    const cpu_expert *x = &s->experts[rg->e];
    int64_t I = s->I, p0 = tile * TILE_PANELS, npan = I / 8;
    int np = (int)(npan - p0 < TILE_PANELS ? npan - p0 : TILE_PANELS);
    double *out = job->scratch + (size_t)thread * SCRATCH_DOUBLES;
    run_tile(job, rg, x->w13, s->panel13, s->group13, s->H, p0, np, job->ain, job->corr1,
             job->alias1, out, pf_next);
    int ldo = np * CPU_PANEL;
    int64_t ng = s->H / s->g;
    for (int r = 0; r < rg->r1 - rg->r0; r++) {
        int64_t row = rg->r0 + r;
        float st = job->dp->a_scale[row], *y = job->ymid + (row - job->c0) * I;
        int nan = job->corr1[job->alias1[row - job->c0] * (ng + 1) + ng];
        for (int p = 0; p < np; p++)
            for (int j = 0; j < 8; j++) {
                int64_t i = (p0 + p) * 8 + j;
                float hg = finish(st, x->c13[i], out[r * ldo + p * CPU_PANEL + j]);
                float hu = finish(st, x->c13[I + i], out[r * ldo + p * CPU_PANEL + 8 + j]);
                y[i] = nan ? NAN : w4a8moe_activate(job->d->activation, hg, hu);
            }
    }
}

static void gemm1_task(void *arg, int64_t t, int32_t thread)
{
    const cpu_job *job = arg;
    gemm1_tile(job, &job->groups[t / job->tiles], t % job->tiles, thread, NULL);
}

/* GEMM2 of row group rg, tile `tile`, into y_rows. */
static void gemm2_tile(const cpu_job *job, const cpu_rowgroup *rg, int64_t tile, int32_t thread,
                       const uint8_t *pf_next)
{
    const cpu_state *s = job->s;
    const cpu_expert *x = &s->experts[rg->e];
    int64_t H = s->H, tp = job->panels2, p0 = tile * tp, npan = H / CPU_PANEL;
    int np = (int)(npan - p0 < tp ? npan - p0 : tp);
    double *out = job->scratch + (size_t)thread * SCRATCH_DOUBLES;
    run_tile(job, rg, x->w2, s->panel2, s->group2, s->I, p0, np,
             (const int8_t *)(const void *)job->ymid, job->corr2, NULL, out, pf_next);
    int ldo = np * CPU_PANEL;
    int64_t ng = s->I / s->g;
    for (int r = 0; r < rg->r1 - rg->r0; r++) {
        int64_t row = rg->r0 + r;
        float rr = job->rmid[row - job->c0], *o = job->dp->y_rows + row * H + p0 * CPU_PANEL;
        int nan = job->corr2[(row - job->c0) * (ng + 1) + ng];
        for (int c = 0; c < ldo; c++)
            o[c] = nan ? NAN : finish(rr, x->c2[p0 * CPU_PANEL + c], out[r * ldo + c]);
    }
}

static void gemm2_task(void *arg, int64_t t, int32_t thread)
{
    const cpu_job *job = arg;
    gemm2_tile(job, &job->groups[t / job->tiles], t % job->tiles, thread, NULL);
}

/* ---- decode: one linear weight stream per thread ------------------------------------------
 * A group's tasks are its GEMM1 tiles then its GEMM2 tiles (job->tiles + job->tiles2): in that
 * order they walk the expert's w13 then w2, which pack_expert lays out back to back, so a
 * thread that runs a whole group reads one 2.4 MB stream (qwen3-30b-a3b) in address order.
 * A thread owns the groups it claims from next_group and runs their tiles in order; only when
 * no group is left unowned does it help others, taking their next tiles (the tail, where both
 * threads must stay busy to the end). It claims each task before running the one in hand, so
 * the kernel's prefetch runs on into the memory the thread reads next, across tiles and
 * experts. The thread finishing a group's last GEMM1 tile requantises the group (the owner,
 * unless helped), so GEMM2 tiles rarely wait, and there is no barrier between the phases.
 * No deadlock: a GEMM2 task waits only for GEMM1 tiles claimed before it; a thread blocked in
 * its task holds only a task it claimed later, so a cycle of waits would need claim times to
 * decrease all the way round. Same arithmetic per element as the phased path. */

typedef struct stream_task {
    int64_t gi, t; /* group, tile (-1: none left) */
} stream_task;

/* The next task of group gi for this thread, or t = -1 when its tiles are all claimed. */
static stream_task claim_in(const cpu_job *job, int64_t gi)
{
    int t = atomic_fetch_add_explicit(&job->next_tile[gi], 1, memory_order_relaxed);
    return (stream_task){gi, t < job->tiles + job->tiles2 ? t : -1};
}

/* The thread's next task: its group's next tile, else a group nobody owns, else a tile of
 * anybody's group (help). *own is the group the thread walks. */
static stream_task claim_next(const cpu_job *job, int64_t *own)
{
    stream_task k = {0, -1};
    if (*own >= 0) k = claim_in(job, *own);
    while (k.t < 0) {
        int gi = atomic_fetch_add_explicit(job->next_group, 1, memory_order_relaxed);
        if (gi >= job->n_groups) break;
        *own = gi;
        k = claim_in(job, gi);
    }
    for (int64_t gi = 0; k.t < 0 && gi < job->n_groups; gi++)
        if (atomic_load_explicit(&job->next_tile[gi], memory_order_relaxed) < job->tiles + job->tiles2) {
            k = claim_in(job, gi);
            if (k.t >= 0) *own = gi;
        }
    return k;
}

/* The first byte task k reads (its tile's first panel), NULL for no task. */
static const uint8_t *task_bytes(const cpu_job *job, stream_task k)
{
    if (k.t < 0) return NULL;
    const cpu_state *s = job->s;
    const cpu_expert *x = &s->experts[job->groups[k.gi].e];
    if (k.t < job->tiles) return x->w13 + (size_t)(k.t * TILE_PANELS) * s->panel13;
    return x->w2 + (size_t)((k.t - job->tiles) * job->panels2) * s->panel2;
}

static void stream_run(const cpu_job *job, stream_task k, const uint8_t *pf_next, int32_t thread)
{
    const cpu_rowgroup *rg = &job->groups[k.gi];
    if (k.t < job->tiles) {
        gemm1_tile(job, rg, k.t, thread, pf_next);
        if (atomic_fetch_sub_explicit(&job->pending[k.gi], 1, memory_order_acq_rel) == 1) {
            requant_rows(job, rg->r0, rg->r1);
            atomic_store_explicit(&job->ready[k.gi], 1, memory_order_release);
        }
        return;
    }
    for (unsigned spins = 0; !atomic_load_explicit(&job->ready[k.gi], memory_order_acquire);
         spins++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (spins > 4096) sched_yield(); /* the group's last GEMM1 tile was descheduled */
    }
    gemm2_tile(job, rg, k.t - job->tiles, thread, pf_next);
}

/* One pool task per thread; a thread that gets two just finds the second one's work gone. */
static void stream_task_fn(void *arg, int64_t task, int32_t thread)
{
    (void)task;
    const cpu_job *job = arg;
    int64_t own = -1;
    stream_task cur = claim_next(job, &own);
    while (cur.t >= 0) {
        stream_task nxt = claim_next(job, &own);
        stream_run(job, cur, task_bytes(job, nxt), thread);
        cur = nxt;
    }
}

/* A decode-sized chunk: phase 1 (on the caller when it is a couple of tasks: a token's k rows
 * share one prepared row, so that is one row's work per token, less than a pool hand-off),
 * then the streams. */
static void run_decode(cpu_job *job, int64_t rb, int64_t tiles1, int64_t prep_tasks,
                       cpu_rowgroup *groups)
{
    int64_t tiles2 = (job->s->H / CPU_PANEL + TILE_PANELS2_FUSED - 1) / TILE_PANELS2_FUSED;
    if (prep_tasks <= 2)
        for (int64_t t = 0; t < prep_tasks; t++) prep_in_task(job, t, 0);
    else
        w4a8moe_threadpool_run(job->s->pool, prep_in_task, job, prep_tasks);
    job->groups = groups;
    job->n_groups = build_groups(job, rb, groups);
    job->tiles = tiles1;
    job->tiles2 = tiles2;
    job->panels2 = TILE_PANELS2_FUSED;
    for (int64_t i = 0; i < job->n_groups; i++) {
        atomic_store_explicit(&job->pending[i], (int)tiles1, memory_order_relaxed);
        atomic_store_explicit(&job->ready[i], 0, memory_order_relaxed);
        atomic_store_explicit(&job->next_tile[i], 0, memory_order_relaxed);
    }
    atomic_store_explicit(job->next_group, 0, memory_order_relaxed);
    int32_t n = w4a8moe_threadpool_size(job->s->pool);
    w4a8moe_threadpool_run(job->s->pool, stream_task_fn, job, n);
}

static w4a8moe_status cpu_run(const w4a8moe_stage_ctx *ctx, void *state,
                              const w4a8moe_dispatch *dp, void *workspace, void *stream,
                              w4a8moe_err *err)
{
    (void)stream;
    (void)err;
    const cpu_state *s = state;
    if (s->dense) {
        w4a8moe_cpu_dense_run(ctx, s->dense, dp, workspace);
        return W4A8MOE_STATUS_OK;
    }
    cpu_ws_layout L;
    ws_layout(ctx->desc, ctx->num_local, ctx->num_threads, &L);
    char *ws = workspace;
    cpu_job job = {s, ctx->desc, dp, 0, 0, (int8_t *)(void *)(ws + L.ain),
                   (int32_t *)(void *)(ws + L.corr1), (int32_t *)(void *)(ws + L.corr2),
                   (int32_t *)(void *)(ws + L.alias1),
                   (float *)(void *)(ws + L.ymid), (float *)(void *)(ws + L.rmid), NULL, 0, 0,
                   (double *)(void *)(ws + L.scratch), 0, 0, NULL, NULL, NULL, NULL};
    job.pending = (atomic_int *)(void *)(ws + L.sync);
    job.ready = job.pending + L.max_groups1;
    job.next_tile = job.ready + L.max_groups1;
    job.next_group = job.next_tile + L.max_groups1;
    cpu_rowgroup *g1 = (cpu_rowgroup *)(void *)(ws + L.groups1);
    cpu_rowgroup *g2 = (cpu_rowgroup *)(void *)(ws + L.groups2);
    int64_t begin = dp->expert_offsets[0], end = dp->expert_offsets[s->num_local];
    int64_t tiles1 = (s->I / 8 + TILE_PANELS - 1) / TILE_PANELS;
    int64_t tiles2 = (s->H / CPU_PANEL + TILE_PANELS - 1) / TILE_PANELS;
    for (int64_t c0 = begin; c0 < end; c0 += L.rc) {
        job.c0 = c0;
        job.c1 = c0 + L.rc < end ? c0 + L.rc : end;
        int64_t prep_tasks = (job.c1 - c0 + PREP_ROWS - 1) / PREP_ROWS;
        if (job.c1 - c0 <= FUSED_ROWS) {
            run_decode(&job, L.rb1, tiles1, prep_tasks, g1);
            continue;
        }
        w4a8moe_threadpool_run(s->pool, prep_in_task, &job, prep_tasks);
        job.groups = g1;
        job.n_groups = build_groups(&job, L.rb1, g1);
        job.tiles = tiles1;
        w4a8moe_threadpool_run(s->pool, gemm1_task, &job, job.n_groups * tiles1);
        w4a8moe_threadpool_run(s->pool, prep_mid_task, &job, prep_tasks);
        job.groups = g2;
        job.n_groups = build_groups(&job, L.rb2, g2);
        job.tiles = tiles2;
        job.panels2 = TILE_PANELS;
        w4a8moe_threadpool_run(s->pool, gemm2_task, &job, job.n_groups * tiles2);
    }
    return W4A8MOE_STATUS_OK;
}

const w4a8moe_experts_ops w4a8moe_cpu_experts = {
    .name = "cpu",
    .api_version = W4A8MOE_BACKEND_API,
    .device_kind = W4A8MOE_DEVICE_CPU,
    .layout = W4A8MOE_LAYOUT_CONTIGUOUS,
    .supports_device = cpu_supports_device,
    .supports_quant = cpu_supports_quant,
    .supports_shape = cpu_supports_shape,
    .workspace_size = cpu_workspace_size,
    .pack_weights = cpu_pack,
    .free_state = cpu_free,
    .run = cpu_run,
};
