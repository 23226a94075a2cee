/*
 * cpu_experts_dense.c — the `cpu` backend's unquantised path: weight scheme BF16 × activation
 * scheme BF16, i.e. shared experts kept in bf16/f16/f32 (docs/formats.md "Shared experts"):
 * h = W13 · x on the caller's x widened to f32, y = act(h), out = W2 · y, no fp8 anywhere
 * (contract steps 3, 4 and 6 without the quantisations of steps 2 and 5). cpu_experts.c calls
 * it when pack_weights receives dense weights; it runs on that backend's thread pool and takes
 * its run-time ISA choice (AVX2 + FMA through target attributes, else generic C).
 *
 * Packed layout (written once by pack). A matrix of N output channels by K inputs is cut into
 * panels of 16 channels; a panel is one stream of K steps, step k = the 16 channels' weights
 * of input k:
 *   w13: panel p = gate channels [8p, 8p+8) then up channels [8p, 8p+8) (ceil(I/8) panels),
 *        so one tile yields matching gate and up values for the activation;
 *   w2:  panel p = channels [16p, 16p+16) (ceil(H/16) panels).
 * Channels past N are zeros (any I works). Panels start on 64-byte boundaries. Weights keep the
 * checkpoint's precision: bf16 stays bf16 (decode reads every weight once per step and is
 * memory bound, so 2 bytes per weight and a 16-bit shift in registers), f16 and f32 are stored
 * as f32 (f16 widened exactly; rounding them to bf16 would move outputs by ~1e-3 relative).
 *
 * Numerics: per (row, channel) the products w * x are summed with f32 FMAs over blocks of
 * DENSE_KB consecutive inputs in ascending k; each block sum is widened and added to an f64
 * total in ascending block order, which is rounded once to f32. The reference sums the exact
 * products in f64; the f32 block sums leave < 1e-6 between the two (worst row rel-L2 ~5e-7
 * with f32 I/O in tests/test_cpu_dense.c, against the contract's 2e-3). The generic kernel
 * does the same operations (fmaf) in the same order, so generic and AVX2 agree bit for bit,
 * and a row's result does not depend on the batch it came in, the tile it fell in or the
 * thread count.
 *
 * run, per chunk of at most `rc` routed rows, three phases on the pool:
 *   1. widen the rows' x to f32;
 *   2. GEMM1 + activation: task = (row group of one expert, DENSE_TILE panels);
 *   3. GEMM2: task = (row group, DENSE_TILE panels) -> y_rows.
 * Decode balance: DeepSeek-V3's shared expert (H = 7168, I = 2048, bf16) at T = 1 gives 128
 * GEMM1 tasks of 460 KB of weights and 224 GEMM2 tasks of 130 KB: ~13 us and ~4 us apiece at
 * ~35 GB/s, so two threads end within a task of each other.
 * Measured on the 2-core Zen 4 host (AVX2 kernels, 2 threads, weights cold: two copies of the
 * layer in turn, 176 MB): that shared expert alone takes 2.5 ms at T = 1 (35 GB/s of bf16
 * weights; the machine's copy loop moves 30.6 GB/s read+write) and 37 ms at T = 64
 * (150 GFLOP/s).
 */
#include "cpu_experts_impl.h"

#include "../core/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DENSE_KB 128              /* inputs per f32 block sum: error ~sqrt(128) * 2^-24 */
#define DENSE_TILE 2              /* panels per task: 32 channels */
#define DENSE_ROW_BYTES (2048u << 10) /* f32 input rows of one task (L3), see rows_per_task */
#define DENSE_CHUNK_BYTES (32u << 20) /* workspace budget for the per-chunk row buffers */
#define DENSE_PREP_ROWS 4         /* rows per phase-1 task */
#define DENSE_MAX_ROWS 64         /* rows per GEMM task, at most */
#define DENSE_SCRATCH (DENSE_MAX_ROWS * DENSE_TILE * CPU_PANEL) /* doubles per thread */

struct cpu_dense_state {
    w4a8moe_threadpool *pool; /* cpu_experts.c's */
    int use_avx2;
    int bf16_13, bf16_2;      /* storage of w13 / w2: bf16, else f32 */
    int64_t H, I, P13, P2;    /* P13 = ceil(I/8), P2 = ceil(H/16) panels */
    int32_t num_local;
    size_t panel13, panel2, off2, expert_bytes;
    uint8_t *blob;            /* [E_local] experts: w13 panels then w2 panels */
};

/* Where each array lives in the workspace; rc = rows per chunk. */
typedef struct dense_ws {
    int64_t rc, rb1, rb2, max_groups1, max_groups2;
    size_t xin, ymid, groups1, groups2, scratch, total;
} dense_ws;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Rows per GEMM task: their f32 inputs (4K bytes each) within DENSE_ROW_BYTES; 4..64. Each
 * row group streams the task's panels from memory once (they then stay in L2 while 6-row
 * blocks pass, the rows coming from L3), so groups are made as large as L3 allows: with 8-row
 * groups (inputs in L2), DeepSeek-V3's shared expert (88 MB of bf16) at T = 64 was read 8
 * times and took 55 ms on 2 Zen 4 cores; with one group, 40 ms (4-row tiles then). */
static int64_t rows_per_task(int64_t K)
{
    int64_t rb = ((int64_t)DENSE_ROW_BYTES / (K * 4)) & ~(int64_t)3;
    return rb < 4 ? 4 : (rb > DENSE_MAX_ROWS ? DENSE_MAX_ROWS : rb);
}

static void ws_layout(const w4a8moe_layer_desc *d, int32_t num_local, int32_t threads, dense_ws *L)
{
    int64_t H = d->hidden, I = d->inter;
    int64_t R = d->max_tokens * d->top_k, cap = (int64_t)DENSE_CHUNK_BYTES / ((H + I) * 4);
    if (cap < 64) cap = 64;
    L->rc = R < cap ? R : cap;
    L->rb1 = rows_per_task(H);
    L->rb2 = rows_per_task(I);
    L->max_groups1 = num_local + L->rc / L->rb1 + 1;
    L->max_groups2 = num_local + L->rc / L->rb2 + 1;
    size_t rc = (size_t)L->rc, off = 0;
    L->xin = off;     off += align64(rc * (size_t)H * 4);
    L->ymid = off;    off += align64(rc * (size_t)I * 4);
    L->groups1 = off; off += align64((size_t)L->max_groups1 * sizeof(cpu_rowgroup));
    L->groups2 = off; off += align64((size_t)L->max_groups2 * sizeof(cpu_rowgroup));
    L->scratch = off; off += (size_t)(threads > 0 ? threads : 1) * DENSE_SCRATCH * 8;
    L->total = off;
}

size_t w4a8moe_cpu_dense_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    dense_ws L;
    ws_layout(ctx->desc, ctx->num_local, ctx->num_threads, &L);
    return L.total;
}

/* ---- tile kernels ------------------------------------------------------------------------ */

/* One kernel call: nr rows against np consecutive panels of one matrix. */
typedef struct dense_tile {
    const uint8_t *w;       /* first panel */
    size_t panel_bytes;
    int64_t K;
    int bf16;               /* storage: bf16, else f32 */
    int np, nr;
    const float *const *x;  /* [nr] input rows, f32 [K] */
    double *out;            /* [nr][np*16] */
} dense_tile;

static void tile_generic(const dense_tile *t)
{
    int ldo = t->np * CPU_PANEL;
    for (int p = 0; p < t->np; p++) {
        const uint8_t *panel = t->w + (size_t)p * t->panel_bytes;
        const uint16_t *wb = (const uint16_t *)(const void *)panel;
        const float *wf = (const float *)(const void *)panel;
        for (int r = 0; r < t->nr; r++) {
            const float *x = t->x[r];
            double *o = t->out + (size_t)r * ldo + (size_t)p * CPU_PANEL;
            for (int ch = 0; ch < CPU_PANEL; ch++) o[ch] = 0.0;
            for (int64_t k0 = 0; k0 < t->K; k0 += DENSE_KB) {
                int64_t k1 = k0 + DENSE_KB < t->K ? k0 + DENSE_KB : t->K;
                float acc[CPU_PANEL] = {0};
                for (int64_t k = k0; k < k1; k++)
                    for (int ch = 0; ch < CPU_PANEL; ch++) {
                        float w = t->bf16 ? w4a8moe_bf16_to_f32(wb[k * CPU_PANEL + ch])
                                          : wf[k * CPU_PANEL + ch];
                        acc[ch] = fmaf(w, x[k], acc[ch]); /* fused, as the AVX2 kernel's */
                    }
                for (int ch = 0; ch < CPU_PANEL; ch++) o[ch] += (double)acc[ch];
            }
        }
    }
}

#if defined(W4A8MOE_CPU_HAVE_AVX2)
#include <immintrin.h>

#define DENSE_PREFETCH 1024 /* bytes ahead on each panel stream, decode tiles only */
#define DENSE_AVX2 static inline __attribute__((always_inline, target("avx2,fma")))

/* Eight weights widened to f32 (bf16 -> f32 is a 16-bit shift). */
DENSE_AVX2 __m256 load8(const uint8_t *p, const int bf16)
{
    if (bf16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)), 16));
    return _mm256_loadu_ps((const float *)(const void *)p);
}

/* out rows [r0, r0+MR) x blocks [q0, q0+NB) of 8 channels (block q = panel q/2, half q%2;
 * q0 and NB even). MR*NB f32 accumulators stay in registers for a block of DENSE_KB inputs,
 * then are added to the f64 sums in out (L1). Decode (MR = 1) streams two panels with four
 * independent FMA chains, far above the memory rate; prefill (MR = 6: 12 accumulators, 2
 * weight vectors and a broadcast, 15 of the 16 ymm registers) widens each weight vector once
 * for six rows, 12 FMAs per 2 widenings (6 rows: 37 ms against 40 with 4 at T = 64 above). */
DENSE_AVX2 void tile_kernel(const dense_tile *t, int r0, int q0, int ldo, const int MR,
                            const int NB, const int bf16)
{
    const size_t esz = bf16 ? 2 : 4, step = CPU_PANEL * esz;
    const uint8_t *wq[4];
    const float *x[6];
#pragma GCC unroll 4
    for (int q = 0; q < NB; q++)
        wq[q] = t->w + (size_t)((q0 + q) >> 1) * t->panel_bytes + (size_t)((q0 + q) & 1) * 8 * esz;
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) x[r] = t->x[r0 + r];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NB; q++) {
            double *o = t->out + (size_t)(r0 + r) * ldo + (size_t)(q0 + q) * 8;
            _mm256_storeu_pd(o, _mm256_setzero_pd());
            _mm256_storeu_pd(o + 4, _mm256_setzero_pd());
        }
    for (int64_t k0 = 0; k0 < t->K; k0 += DENSE_KB) {
        int64_t k1 = k0 + DENSE_KB < t->K ? k0 + DENSE_KB : t->K;
        __m256 acc[6][4];
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NB; q++) acc[r][q] = _mm256_setzero_ps();
        for (int64_t k = k0; k < k1; k++) {
            __m256 W[4];
#pragma GCC unroll 4
            for (int q = 0; q < NB; q++) W[q] = load8(wq[q] + (size_t)k * step, bf16);
            if (MR == 1) /* memory bound: keep each panel stream's lines coming */
#pragma GCC unroll 4
                for (int q = 0; q < NB; q += 2)
                    _mm_prefetch((const char *)(wq[q] + (size_t)k * step + DENSE_PREFETCH),
                                 _MM_HINT_T0);
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                __m256 xb = _mm256_broadcast_ss(x[r] + k);
#pragma GCC unroll 4
                for (int q = 0; q < NB; q++) acc[r][q] = _mm256_fmadd_ps(W[q], xb, acc[r][q]);
            }
        }
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NB; q++) {
                double *o = t->out + (size_t)(r0 + r) * ldo + (size_t)(q0 + q) * 8;
                __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(acc[r][q]));
                __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(acc[r][q], 1));
                _mm256_storeu_pd(o, _mm256_add_pd(_mm256_loadu_pd(o), lo));
                _mm256_storeu_pd(o + 4, _mm256_add_pd(_mm256_loadu_pd(o + 4), hi));
            }
    }
}

#define DENSE_INSTANCE(MR, NB, B)                                                               \
    static __attribute__((noinline, target("avx2,fma"))) void dtile_##MR##x##NB##_##B(          \
        const dense_tile *t, int r0, int q0, int ldo)                                           \
    {                                                                                           \
        tile_kernel(t, r0, q0, ldo, MR, NB, B);                                                 \
    }

/* Panels outer, 6-row blocks inner: a panel (32 bytes per input in bf16, 64 in f32: 224 KB
 * for K = 7168 in bf16) stays in L2 while the row blocks pass over it; one row (decode) takes
 * two panels at a time. */
#define DENSE_DRIVER(B)                                                                         \
    DENSE_INSTANCE(6, 2, B)                                                                     \
    DENSE_INSTANCE(4, 2, B)                                                                     \
    DENSE_INSTANCE(3, 2, B)                                                                     \
    DENSE_INSTANCE(2, 2, B)                                                                     \
    DENSE_INSTANCE(1, 4, B)                                                                     \
    DENSE_INSTANCE(1, 2, B)                                                                     \
    static void dense_driver_##B(const dense_tile *t)                                           \
    {                                                                                           \
        int nr = t->nr, nb = 2 * t->np, ldo = nb * 8, q = 0;                                    \
        if (nr == 1) {                                                                          \
            for (q = 0; q + 4 <= nb; q += 4) dtile_1x4_##B(t, 0, q, ldo);                       \
            if (q < nb) dtile_1x2_##B(t, 0, q, ldo);                                            \
            return;                                                                             \
        }                                                                                       \
        for (q = 0; q < nb; q += 2) {                                                           \
            int r = 0;                                                                          \
            for (; r + 6 <= nr; r += 6) dtile_6x2_##B(t, r, q, ldo);                            \
            if (nr - r >= 4) dtile_4x2_##B(t, r, q, ldo), r += 4;                               \
            if (nr - r == 3) dtile_3x2_##B(t, r, q, ldo);                                       \
            if (nr - r == 2) dtile_2x2_##B(t, r, q, ldo);                                       \
            if (nr - r == 1) dtile_1x2_##B(t, r, q, ldo);                                       \
        }                                                                                       \
    }

DENSE_DRIVER(0)
DENSE_DRIVER(1)

static void tile_avx2(const dense_tile *t)
{
    if (t->bf16)
        dense_driver_1(t);
    else
        dense_driver_0(t);
}
#endif /* W4A8MOE_CPU_HAVE_AVX2 */

/* ---- packing ----------------------------------------------------------------------------- */

/* Row n of m (or zeros when n >= rows) into slot `slot` (0..15) of every step of a panel. */
static void put_row(const w4a8moe_dense_matrix *m, int64_t n, int bf16, int slot, int64_t K,
                    uint8_t *panel)
{
    if (bf16) {
        uint16_t *d = (uint16_t *)(void *)panel + slot;
        const uint16_t *src = n < m->rows ? (const uint16_t *)m->data + n * K : NULL;
        for (int64_t k = 0; k < K; k++) d[k * CPU_PANEL] = src ? src[k] : 0;
        return;
    }
    float *d = (float *)(void *)panel + slot;
    if (n >= m->rows) {
        for (int64_t k = 0; k < K; k++) d[k * CPU_PANEL] = 0.0f;
    } else if (m->dtype == W4A8MOE_DTYPE_F32) {
        const float *src = (const float *)m->data + n * K;
        for (int64_t k = 0; k < K; k++) d[k * CPU_PANEL] = src[k];
    } else {
        for (int64_t k = 0; k < K; k++)
            d[k * CPU_PANEL] = w4a8moe_scale_get(m->data, m->dtype, n * K + k); /* exact */
    }
}

typedef struct dense_pack_job {
    cpu_dense_state *s;
    const w4a8moe_dense_matrix *m; /* [3 * E_local]: gate, up, down */
} dense_pack_job;

/* Task = one panel of one expert: w13 panels first, then w2 panels. */
static void pack_task(void *arg, int64_t task, int32_t thread)
{
    (void)thread;
    const dense_pack_job *job = arg;
    cpu_dense_state *s = job->s;
    int64_t per = s->P13 + s->P2, e = task / per, p = task % per;
    const w4a8moe_dense_matrix *m = job->m + 3 * e;
    uint8_t *base = s->blob + (size_t)e * s->expert_bytes;
    if (p < s->P13) {
        uint8_t *panel = base + (size_t)p * s->panel13;
        for (int j = 0; j < 8; j++) {
            put_row(&m[0], 8 * p + j, s->bf16_13, j, s->H, panel);
            put_row(&m[1], 8 * p + j, s->bf16_13, 8 + j, s->H, panel);
        }
        return;
    }
    p -= s->P13;
    uint8_t *panel = base + s->off2 + (size_t)p * s->panel2;
    for (int j = 0; j < CPU_PANEL; j++) put_row(&m[2], CPU_PANEL * p + j, s->bf16_2, j, s->I, panel);
}

w4a8moe_status w4a8moe_cpu_dense_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                      w4a8moe_threadpool *pool, int use_avx2,
                                      cpu_dense_state **out, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    cpu_dense_state *s = calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu dense state");
    *out = s;
    s->pool = pool;
    s->use_avx2 = use_avx2;
    s->H = d->hidden;
    s->I = d->inter;
    s->num_local = w->num_local;
    s->P13 = (s->I + 7) / 8;
    s->P2 = (s->H + CPU_PANEL - 1) / CPU_PANEL;
    s->bf16_13 = 1;
    s->bf16_2 = 1;
    for (int32_t e = 0; e < w->num_local; e++) {
        s->bf16_13 &= w->dense[3 * e].dtype == W4A8MOE_DTYPE_BF16 &&
                      w->dense[3 * e + 1].dtype == W4A8MOE_DTYPE_BF16;
        s->bf16_2 &= w->dense[3 * e + 2].dtype == W4A8MOE_DTYPE_BF16;
    }
    s->panel13 = align64((size_t)s->H * CPU_PANEL * (s->bf16_13 ? 2 : 4));
    s->panel2 = align64((size_t)s->I * CPU_PANEL * (s->bf16_2 ? 2 : 4));
    s->off2 = s->panel13 * (size_t)s->P13;
    s->expert_bytes = s->off2 + s->panel2 * (size_t)s->P2;
    size_t n = (size_t)(w->num_local > 0 ? w->num_local : 1);
    RETURN_IF(err, s->expert_bytes > SIZE_MAX / n, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "cpu dense weights: %d experts of %zu bytes overflow", w->num_local, s->expert_bytes);
    s->blob = w4a8moe_cpu_alloc_huge(n * s->expert_bytes);
    RETURN_IF(err, !s->blob, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "cpu dense (unquantised) weights: %zu bytes; hint: quantise the shared expert or "
              "leave it out (run --routed-only)", n * s->expert_bytes);
    dense_pack_job job = {s, w->dense};
    w4a8moe_threadpool_run(pool, pack_task, &job, (int64_t)w->num_local * (s->P13 + s->P2));
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_cpu_dense_free(cpu_dense_state *s)
{
    if (!s) return;
    free(s->blob);
    free(s);
}

/* ---- the forward ------------------------------------------------------------------------- */

typedef struct dense_job {
    const cpu_dense_state *s;
    const w4a8moe_layer_desc *d;
    const w4a8moe_dispatch *dp;
    int64_t c0, c1;              /* the chunk's rows */
    float *xin;                  /* [rc][H] f32 inputs, indexed by row - c0 */
    float *ymid;                 /* [rc][I] activations */
    const cpu_rowgroup *groups; /* of the phase running */
    int64_t n_groups, tiles;
    double *scratch;             /* [threads][DENSE_SCRATCH] tile sums */
} dense_job;

/* Contract input for the unquantised scheme: the caller's x row widened to f32. */
static void widen_task(void *arg, int64_t t, int32_t thread)
{
    (void)thread;
    const dense_job *job = arg;
    const w4a8moe_dispatch *dp = job->dp;
    int64_t H = job->s->H;
    w4a8moe_dtype dt = job->d->io_dtype;
    int64_t r0 = job->c0 + t * DENSE_PREP_ROWS;
    int64_t r1 = r0 + DENSE_PREP_ROWS < job->c1 ? r0 + DENSE_PREP_ROWS : job->c1;
    for (int64_t r = r0; r < r1; r++) {
        float *dst = job->xin + (r - job->c0) * H;
        int64_t base = (int64_t)dp->row_token[r] * H;
        if (dt == W4A8MOE_DTYPE_F32)
            memcpy(dst, (const float *)dp->x + base, (size_t)H * 4);
        else
            for (int64_t h = 0; h < H; h++) dst[h] = w4a8moe_io_get(dp->x, dt, base + h);
    }
}

/* Splits the chunk's rows of each expert into groups of at most rb rows. */
static int64_t build_groups(const dense_job *job, int64_t rb, cpu_rowgroup *out)
{
    return w4a8moe_cpu_build_groups(job->dp->expert_offsets, job->s->num_local, job->c0, job->c1,
                                    rb, out);
}

/* The kernel on (row group, np panels from p0); inputs are rows of `in` (ld floats apart,
 * indexed by row - c0); out gets [nr][np*16]. */
static void run_tile(const dense_job *job, const cpu_rowgroup *rg, const uint8_t *panels,
                     size_t panel_bytes, int bf16, int64_t K, int64_t p0, int np,
                     const float *in, int64_t ld, double *out)
{
    const float *xp[DENSE_MAX_ROWS];
    int nr = rg->r1 - rg->r0;
    for (int r = 0; r < nr; r++) xp[r] = in + (rg->r0 + r - job->c0) * ld;
    dense_tile t = {panels + (size_t)p0 * panel_bytes, panel_bytes, K, bf16, np, nr, xp, out};
#if defined(W4A8MOE_CPU_HAVE_AVX2)
    if (job->s->use_avx2) {
        tile_avx2(&t);
        return;
    }
#endif
    tile_generic(&t);
}

static void gemm1_task(void *arg, int64_t t, int32_t thread)
{
    const dense_job *job = arg;
    const cpu_dense_state *s = job->s;
    const cpu_rowgroup *rg = &job->groups[t / job->tiles];
    int64_t I = s->I, p0 = (t % job->tiles) * DENSE_TILE;
    int np = (int)(s->P13 - p0 < DENSE_TILE ? s->P13 - p0 : DENSE_TILE);
    double *out = job->scratch + (size_t)thread * DENSE_SCRATCH;
    run_tile(job, rg, s->blob + (size_t)rg->e * s->expert_bytes, s->panel13, s->bf16_13, s->H,
             p0, np, job->xin, s->H, out);
    int ldo = np * CPU_PANEL;
    for (int r = 0; r < rg->r1 - rg->r0; r++) {
        float *y = job->ymid + (rg->r0 + r - job->c0) * I;
        const double *o = out + (size_t)r * ldo;
        for (int p = 0; p < np; p++)
            for (int j = 0; j < 8 && (p0 + p) * 8 + j < I; j++)
                y[(p0 + p) * 8 + j] = w4a8moe_activate(job->d->activation,
                                                       (float)o[p * CPU_PANEL + j],
                                                       (float)o[p * CPU_PANEL + 8 + j]);
    }
}

static void gemm2_task(void *arg, int64_t t, int32_t thread)
{
    const dense_job *job = arg;
    const cpu_dense_state *s = job->s;
    const cpu_rowgroup *rg = &job->groups[t / job->tiles];
    int64_t H = s->H, p0 = (t % job->tiles) * DENSE_TILE;
    int np = (int)(s->P2 - p0 < DENSE_TILE ? s->P2 - p0 : DENSE_TILE);
    double *out = job->scratch + (size_t)thread * DENSE_SCRATCH;
    run_tile(job, rg, s->blob + (size_t)rg->e * s->expert_bytes + s->off2, s->panel2, s->bf16_2,
             s->I, p0, np, job->ymid, s->I, out);
    int ldo = np * CPU_PANEL;
    int64_t m0 = p0 * CPU_PANEL, nm = H - m0 < ldo ? H - m0 : ldo;
    for (int r = 0; r < rg->r1 - rg->r0; r++) {
        float *o = job->dp->y_rows + (int64_t)(rg->r0 + r) * H + m0;
        for (int64_t c = 0; c < nm; c++) o[c] = (float)out[(size_t)r * ldo + c];
    }
}

void w4a8moe_cpu_dense_run(const w4a8moe_stage_ctx *ctx, const cpu_dense_state *s,
                           const w4a8moe_dispatch *dp, void *workspace)
{
    dense_ws L;
    ws_layout(ctx->desc, ctx->num_local, ctx->num_threads, &L);
    char *ws = workspace;
    dense_job job = {s, ctx->desc, dp, 0, 0, (float *)(void *)(ws + L.xin),
                     (float *)(void *)(ws + L.ymid), NULL, 0, 0, (double *)(void *)(ws + L.scratch)};
    cpu_rowgroup *g1 = (cpu_rowgroup *)(void *)(ws + L.groups1);
    cpu_rowgroup *g2 = (cpu_rowgroup *)(void *)(ws + L.groups2);
    int64_t begin = dp->expert_offsets[0], end = dp->expert_offsets[s->num_local];
    int64_t tiles1 = (s->P13 + DENSE_TILE - 1) / DENSE_TILE;
    int64_t tiles2 = (s->P2 + DENSE_TILE - 1) / DENSE_TILE;
    for (int64_t c0 = begin; c0 < end; c0 += L.rc) {
        job.c0 = c0;
        job.c1 = c0 + L.rc < end ? c0 + L.rc : end;
        int64_t prep = (job.c1 - c0 + DENSE_PREP_ROWS - 1) / DENSE_PREP_ROWS;
        w4a8moe_threadpool_run(s->pool, widen_task, &job, prep);
        job.groups = g1;
        job.n_groups = build_groups(&job, L.rb1, g1);
        job.tiles = tiles1;
        w4a8moe_threadpool_run(s->pool, gemm1_task, &job, job.n_groups * tiles1);
        job.groups = g2;
        job.n_groups = build_groups(&job, L.rb2, g2);
        job.tiles = tiles2;
        w4a8moe_threadpool_run(s->pool, gemm2_task, &job, job.n_groups * tiles2);
    }
}
