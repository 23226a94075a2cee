/*
 * cuda_sm90_experts.cu — `cuda_sm90`, the Hopper experts backend: contract steps 3-6 for the
 * rows of the contiguous dispatch on wgmma, with the activation tiles brought in by the tensor
 * copy engine. It runs f16 wgmma on the exactly widened int4 and e4m3 values: the e4m3 wgmma's
 * sums are not exact and flip requantised codes (docs/numerics.md, "Tolerance"); the f16
 * products are exact. Two kernels:
 *   promoting (kernels/sm90_grouped_gemm.cuh): each K group's sum promoted with its f32 scale;
 *       GEMM1 always (its sums feed the requantisation and must stay f32-accurate), and GEMM2
 *       when its scales are not exact in the scaled kernel's f16 weights (f32, f16 scales);
 *   scaled (kernels/sm90_scaled_gemm.cuh): the group scales folded into the f16 weights, one
 *       tensor-core accumulator over all of K and up to 256 routed rows a tile; GEMM2 when its
 *       scales have at most 8 significant bits (bf16, e4m3), found while packing;
 *   small-batch (kernels/sm90_mma_decode.cuh, launched by cuda_sm90_small_batch.cu; the two
 *       files share cuda_sm90_internal.h): mma.sync m16n8k16 f16 on the same weight blocks
 *       when an expert has few rows (configs/sm90_tiles.h: up to 32 on average), K split across
 *       the warps of a block; it sums like the promoting kernel and reads the f16 codes (GEMM2)
 *       in fragment order (kernels/frag_order.cuh), and for GEMM1 the e4m3 rows directly
 *       (one-fragment tiles, no widening kernel) or their f16 widening in that order.
 *
 *   pack_weights (once): upload each expert's logical int4 words and scales and convert them on
 *       the device into the fragment-major weight blocks of the wgmma kernels (GEMM1's gate and
 *       up rows interleaved so the SiLU·up epilogue is per thread), each with room for its f16
 *       scales; a matrix on the promoting kernel gets f32 scales beside them instead (GEMM1's
 *       blocks keep that room unused, 6-12 % of its bytes, for one layout for both kernels).
 *   run (per forward, no host synchronisation, capturable): schedule (BN-row tiles per expert)
 *       → widen the e4m3 rows to f16 → GEMM1 with SiLU·up (or gelu_tanh) and the row amax in
 *       its epilogue → requantisation to e4m3 codes stored widened to f16 → GEMM2 (the
 *       small-batch path: schedule → GEMM1 → requantisation → GEMM2, the schedule's tile list
 *       written by the prepare instead where it can: sm90_plan_tiles). The schedule and
 *       requantisation kernels are cuda_sm89's.
 *
 * Tensor maps (the copy engine's view of the [R, H] and [R, I] e4m3 inputs) are encoded on the
 * host when run() first sees an input buffer and kept; the dispatch and workspace buffers of a
 * layer do not move, so a captured graph replays with the maps it was captured with.
 *
 * Workspace (for R = max_tokens * k rows): for each GEMM tiles [ceil(R/64) + E_local] int2 and
 * a tile count; y [R, I] f32, row amax [R], a_wide [R, H] f16, b_wide [R, I] f16, r [R] f32.
 */
#include "cuda_sm90_internal.h"
#include "kernels/sm90_scaled_gemm.cuh"

#include <stdio.h>
#include <stdlib.h>

static int sm90_supports_device(const w4a8moe_device_info *dev, char *why, size_t cap)
{
    if (dev->cuda_sm == 0) {
        snprintf(why, cap, "%s", dev->name);
        return 0;
    }
    if (dev->cuda_sm != 90) {
        snprintf(why, cap, "needs Hopper (sm_90: wgmma, the tensor copy engine); %s is sm_%d",
                 dev->name, dev->cuda_sm);
        return 0;
    }
    cudaFuncAttributes attr;
    cudaError_t e = w4a8moe_cuda_probe_kernel(dev, (const void *)sm90_gemm_kernel<128, 8, 4, true, true>,
                                              &attr);
    if (e != cudaSuccess || attr.binaryVersion < 90) {
        snprintf(why, cap, "this build has no sm_90a code (%s); hint: build with "
                 "-gencode=arch=compute_90a,code=sm_90a in CUDA_ARCHS",
                 e != cudaSuccess ? cudaGetErrorString(e) : "older binary");
        return 0;
    }
    if (!sm90_encode_fn()) {
        snprintf(why, cap, "the CUDA driver has no cuTensorMapEncodeTiled (needs driver >= 525)");
        return 0;
    }
    return 1;
}

static int sm90_supports_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap)
{
    if (w == W4A8MOE_WEIGHT_INT4_GROUP &&
        (a == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC || a == W4A8MOE_ACT_FP8_TENSOR_STATIC))
        return 1;
    snprintf(why, cap, "runs int4-group weights with fp8 activations only");
    return 0;
}

static int sm90_supports_activation(w4a8moe_activation act, char *why, size_t cap)
{
    if (act == W4A8MOE_ACTIVATION_SILU || act == W4A8MOE_ACTIVATION_GELU_TANH) return 1;
    snprintf(why, cap, "activation %d is not implemented", (int)act);
    return 0;
}

static int sm90_supports_parallel(int32_t rank, int32_t size, char *why, size_t cap)
{
    (void)rank;
    (void)why;
    (void)cap;
    return size >= 1; /* experts run on the local slice; the prepare/finalize decides EP */
}

static int sm90_supports_shape(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    /* H, I are multiples of g >= 32: the k32 steps and the 16-byte row pitch of the tensor
     * maps always fit; what can fail is the prepare's top-k limit and the int32 coordinates */
    if (d->hidden % 32 || d->inter % 32) {
        snprintf(why, cap, "needs H and I multiples of 32 (k32 wgmma steps); H = %lld, I = %lld",
                 (long long)d->hidden, (long long)d->inter);
        return 0;
    }
    if (!w4a8moe_cuda_topk_fits(d, why, cap)) return 0;
    if ((int64_t)d->max_tokens * d->top_k >= (1ll << 31) - 256) {
        snprintf(why, cap, "max_tokens * top_k must stay below 2^31 (tensor-map row coordinates)");
        return 0;
    }
    return 1;
}

static size_t sm90_ws_layout(const w4a8moe_stage_ctx *ctx, char *base, sm90_ws *w)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    size_t R = (size_t)d->max_tokens * (size_t)d->top_k, I = (size_t)d->inter;
    /* tiles: the wgmma kernels' (at least the table's first width each), or the small-batch
     * kernel's (at least 8 rows, and only while the average is at most the mma table's last
     * entry, so at most that many rows per local expert in all) */
    size_t nl = (size_t)ctx->num_local, mma_rows = (size_t)sm90_mma_tiles[SM90_MMA_COUNT - 1].max_rows_per_expert;
    size_t R_mma = R < mma_rows * nl ? R : mma_rows * nl, bt = (size_t)sm90_tiles[0].bn;
    size_t max_tiles = (R + bt - 1) / bt + nl, mma_tiles = (R_mma + 7) / 8 + nl;
    if (mma_tiles > max_tiles) max_tiles = mma_tiles;
    char *p = base;
    size_t off = 0;
#define SM90_CARVE(field, type, bytes)                                                         \
    do {                                                                                       \
        if (w) w->field = (type)(p + off);                                                     \
        off += w4a8moe_align256(bytes);                                                                \
    } while (0)
    SM90_CARVE(tiles, int2 *, max_tiles * sizeof(int2));
    SM90_CARVE(ntiles, int32_t *, 4);
    SM90_CARVE(tiles2, int2 *, max_tiles * sizeof(int2));
    SM90_CARVE(ntiles2, int32_t *, 4);
    SM90_CARVE(y, float *, R * I * 4);
    SM90_CARVE(rowmax, uint32_t *, R * 4);
    SM90_CARVE(a_wide, uint16_t *, R * (size_t)d->hidden * 2);
    SM90_CARVE(b_wide, uint16_t *, R * I * 2);
    SM90_CARVE(r, float *, R * 4);
#undef SM90_CARVE
    return off;
}

static size_t sm90_workspace_size(const w4a8moe_stage_ctx *ctx) { return sm90_ws_layout(ctx, NULL, NULL); }

static void sm90_matrix_free(sm90_matrix *m)
{
    cudaFree(m->wq);
    cudaFree(m->ws);
    cudaFree(m->wc);
}

static void sm90_free(void *state)
{
    sm90_state *s = (sm90_state *)state;
    if (!s) return;
    sm90_matrix_free(&s->w13);
    sm90_matrix_free(&s->w2);
    sm90_fused_free(&s->fused);
    free(s);
}

/* 64-row blocks of a matrix with n_out output channels, rounded up to the CTA's pair. */
static int64_t sm90_nrb(int64_t n_out, int gated)
{
    int64_t nrb = gated ? w4a8moe_cdiv(n_out, 32) : w4a8moe_cdiv(n_out, 64);
    return (nrb + 1) & ~(int64_t)1;
}

static w4a8moe_status sm90_matrix_alloc(sm90_matrix *m, int64_t nl, int64_t n_out, int gated,
                                        int64_t K, int g, w4a8moe_err *err)
{
    m->nrb = sm90_nrb(n_out, gated);
    int64_t KB = w4a8moe_cdiv(K, 64), rows_pad = m->nrb * 64;
    CUDA_TRY(err, cudaMalloc((void **)&m->wq, (size_t)(nl * m->nrb * KB) * (size_t)sm90s_block_bytes(g)));
    CUDA_TRY(err, cudaMalloc((void **)&m->wc, (size_t)(nl * rows_pad) * 4));
    m->scaled = !gated; /* GEMM1 promotes (see the header); GEMM2 until its scales say otherwise */
    if (!m->scaled) CUDA_TRY(err, cudaMalloc((void **)&m->ws, (size_t)(nl * rows_pad * (K / g)) * 4));
    return W4A8MOE_STATUS_OK;
}

/* Uploads one expert's logical matrix m into rows [row0, row0 + m->rows) of the staging
 * matrix (gate and up go to rows 0 and I of GEMM1's [2I, H]); its channel scales, or ones
 * when it has none (ones: a host buffer of at least m->rows ones). sq NULL: scales only. */
static w4a8moe_status stage_rows(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g, int64_t row0,
                                 const float *ones, char *sq, char *ss, float *sc, w4a8moe_err *err)
{
    int64_t rows = m->rows, K = m->cols, groups = K / g;
    size_t wpr = (size_t)(K / 8) * 4, spr = (size_t)groups * w4a8moe_dtype_size(sdt);
    if (sq) CUDA_TRY(err, cudaMemcpy(sq + row0 * wpr, m->packed, rows * wpr, cudaMemcpyHostToDevice));
    CUDA_TRY(err, cudaMemcpy(ss + row0 * spr, m->scale, rows * spr, cudaMemcpyHostToDevice));
    CUDA_TRY(err, cudaMemcpy(sc + row0, m->channel_scale ? m->channel_scale : ones, rows * 4,
                             cudaMemcpyHostToDevice));
    return W4A8MOE_STATUS_OK;
}

/* The promoting kernel's f32 scales and plain channel scales of expert e. */
static w4a8moe_status pack_staged_fallback(sm90_matrix *m, int64_t e, int64_t n_out, int gated,
                                           int64_t K, int g, w4a8moe_dtype sdt, const char *ss,
                                           const float *sc, w4a8moe_err *err)
{
    int64_t rows_pad = m->nrb * 64, groups = K / g, n2 = rows_pad * groups;
    int64_t n3 = n2 > rows_pad ? n2 : rows_pad;
    sm90_pack_scales_kernel<<<(unsigned)w4a8moe_cdiv(n3, 256), 256>>>(
        ss, (int)sdt, n_out, gated, groups, rows_pad, sc, m->ws + e * n2, m->wc + e * rows_pad);
    CUDA_LAUNCHED(err, "sm90_pack_scales_kernel");
    CUDA_TRY(err, cudaDeviceSynchronize());
    return W4A8MOE_STATUS_OK;
}

/* Converts the staged logical matrix of expert e into its weight blocks in m: int4, then (scaled)
 * the f16 scales and C·2^-k, setting *inexact when a scale is not exact that way, or the f32
 * scales and C. shift: rows_pad int32. */
static w4a8moe_status pack_staged(sm90_matrix *m, int64_t e, int64_t n_out, int gated, int64_t K,
                                  int g, w4a8moe_dtype sdt, const char *sq, const char *ss,
                                  const float *sc, int32_t *shift, int32_t *inexact, w4a8moe_err *err)
{
    const int blk = sm90s_block_bytes(g);
    int64_t KB = w4a8moe_cdiv(K, 64), rows_pad = m->nrb * 64, groups = K / g;
    char *wq = m->wq + e * m->nrb * KB * blk;
    int64_t n1 = m->nrb * KB * 256, n3 = m->nrb * KB * (g == 32 ? 128 : 64);
    sm90_pack_kernel<<<(unsigned)w4a8moe_cdiv(n1, 256), 256>>>((const int32_t *)sq, n_out, gated, K,
                                                                rows_pad, 1, blk / 8, (uint2 *)wq);
    CUDA_LAUNCHED(err, "sm90_pack_kernel");
    if (!m->scaled) return pack_staged_fallback(m, e, n_out, gated, K, g, sdt, ss, sc, err);
    sm90s_row_shift_kernel<<<(unsigned)w4a8moe_cdiv(rows_pad, 256), 256>>>(
        ss, (int)sdt, n_out, gated, groups, rows_pad, sc, shift, m->wc + e * rows_pad, inexact);
    CUDA_LAUNCHED(err, "sm90s_row_shift_kernel");
    sm90s_pack_scales_kernel<<<(unsigned)w4a8moe_cdiv(n3, 256), 256>>>(ss, (int)sdt, n_out, gated, K, g,
                                                                        rows_pad, shift, wq);
    CUDA_LAUNCHED(err, "sm90s_pack_scales_kernel");
    CUDA_TRY(err, cudaDeviceSynchronize()); /* the next expert reuses the staging buffer */
    return W4A8MOE_STATUS_OK;
}

/* Packs every expert of the layer into s (staging: see sm90_pack); when a down-projection
 * scale is not exact in the scaled kernel's f16 weights, GEMM2 gets f32 scales and promotes. */
static w4a8moe_status pack_layer(sm90_state *s, const w4a8moe_logical_weights *w, int64_t H, int64_t I,
                                 int g, const float *ones, char *sq, char *ss, float *sc, int32_t *shift,
                                 int32_t *inexact, w4a8moe_err *err)
{
    const w4a8moe_dtype sdt = w->scale_dtype;
    const int64_t nl = w->num_local;
    int32_t flags[2] = {0, 0};
    CUDA_TRY(err, cudaMemset(inexact, 0, 8));
    for (int64_t e = 0; e < nl; e++) {
        const w4a8moe_expert_weights *x = &w->experts[e];
        FORWARD(stage_rows(&x->gate, sdt, g, 0, ones, sq, ss, sc, err));
        FORWARD(stage_rows(&x->up, sdt, g, I, ones, sq, ss, sc, err));
        FORWARD(pack_staged(&s->w13, e, I, 1, H, g, sdt, sq, ss, sc, shift, inexact, err));
        FORWARD(stage_rows(&x->down, sdt, g, 0, ones, sq, ss, sc, err));
        FORWARD(pack_staged(&s->w2, e, H, 0, I, g, sdt, sq, ss, sc, shift, inexact + 1, err));
    }
    CUDA_TRY(err, cudaMemcpy(flags, inexact, 8, cudaMemcpyDeviceToHost));
    if (!s->w2.scaled || !flags[1]) return W4A8MOE_STATUS_OK;
    /* a down-projection scale the f16 weights cannot carry exactly: GEMM2 promotes too */
    sm90_matrix *m = &s->w2;
    m->scaled = 0;
    CUDA_TRY(err, cudaMalloc((void **)&m->ws, (size_t)(nl * m->nrb * 64 * (I / g)) * 4));
    for (int64_t e = 0; e < nl; e++) {
        FORWARD(stage_rows(&w->experts[e].down, sdt, g, 0, ones, NULL, ss, sc, err));
        FORWARD(pack_staged_fallback(m, e, H, 0, I, g, sdt, ss, sc, err));
    }
    return W4A8MOE_STATUS_OK;
}

/* The switches of the path choices (docs/cli.md), read when a layer is made (and by explain). */
static void sm90_read_switches(sm90_state *s)
{
    const char *early = getenv("W4A8MOE_SM90_EARLY");
    s->early = !(early && early[0] == '0');
    /* round 15: a tile found from 8 or 16 experts' offsets cost nothing, from 128 or 256 it took
     * GEMM1 from 13 to 20 µs (qwen3-30b-a3b T = 1; docs/PERFORMANCE.md); W4A8MOE_SM90_FIND_MAX
     * overrides the bound, for measuring */
    const char *fm = getenv("W4A8MOE_SM90_FIND_MAX");
    s->find_max = fm ? atoi(fm) : 32;
    if (s->find_max > SM90M_FIND_MAX_EXPERTS) s->find_max = SM90M_FIND_MAX_EXPERTS;
    const char *fi = getenv("W4A8MOE_SM90_FIND_IDS");
    s->find_ids = !(fi && fi[0] == '0');
    const char *pt = getenv("W4A8MOE_SM90_PREPARE_TILES");
    s->prepare_tiles = pt ? atoi(pt) : 1;
    const char *mm = getenv("W4A8MOE_SM90_MMA_MAX_ROWS");
    s->mma_max = sm90_mma_tiles[SM90_MMA_COUNT - 1].max_rows_per_expert;
    if (mm && atoi(mm) < s->mma_max) s->mma_max = atoi(mm);
    const char *sk = getenv("W4A8MOE_SM90_SPLIT_K");
    s->split_k = sk ? atoi(sk) : SM90_SPLIT_K_DEFAULT;
    const char *fu = getenv("W4A8MOE_SM90_FUSED");
    s->fused_on = fu && fu[0] == '1';
    const char *fg = getenv("W4A8MOE_SM90_FUSED_GPS");
    s->fused_gps = fg ? atoi(fg) : 1;
    const char *sg = getenv("W4A8MOE_SM90_STAGE");
    s->stage = sg ? atoi(sg) & 3 : SM90_STAGE_DEFAULT;
    const char *qf = getenv("W4A8MOE_SM90_QUANT_FIRST");
    s->quant_first = qf ? qf[0] == '1' : SM90_QUANT_FIRST_DEFAULT;
    for (size_t i = 0; i < SM90_TILE_COUNT; i++) {
        const char *v = sm90_tiles[i].bn == 32   ? getenv("W4A8MOE_SM90_BN32_MAX_ROWS")
                        : sm90_tiles[i].bn == 64 ? getenv("W4A8MOE_SM90_BN64_MAX_ROWS")
                                                 : NULL;
        s->tile_max[i] = v ? atoi(v) : sm90_tiles[i].max_rows_per_expert;
    }
}

static w4a8moe_status sm90_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                void **state, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    int64_t H = d->hidden, I = d->inter, nl = w->num_local;
    int g = d->group_size;
    sm90_state *s = (sm90_state *)calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cuda_sm90 state");
    *state = s;
    sm90_read_switches(s);
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    FORWARD(sm90_matrix_alloc(&s->w13, nl, I, 1, H, g, err));
    FORWARD(sm90_matrix_alloc(&s->w2, nl, H, 0, I, g, err));
    /* staging: the larger of [2I, H] and [H, I] logical words, scales (up to f32), channels,
     * the row shifts and the two matrices' inexact flags */
    int64_t elems = 2 * I * H, rows = 2 * I > H ? 2 * I : H;
    int64_t rows_pad = (s->w13.nrb > s->w2.nrb ? s->w13.nrb : s->w2.nrb) * 64;
    size_t bq = w4a8moe_align256((size_t)elems / 2), bs = w4a8moe_align256((size_t)(elems / g) * 4);
    size_t bc = w4a8moe_align256((size_t)rows * 4), bsh = w4a8moe_align256((size_t)rows_pad * 4);
    char *staging = NULL;
    CUDA_TRY(err, cudaMalloc((void **)&staging, bq + bs + bc + bsh + 8));
    char *sq = staging, *ss = staging + bq;
    float *sc = (float *)(ss + bs);
    int32_t *shift = (int32_t *)(ss + bs + bc), *inexact = (int32_t *)(ss + bs + bc + bsh);
    float *ones = (float *)malloc((size_t)rows * 4);
    if (!ones) {
        cudaFree(staging);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "cuda_sm90 staging (%lld floats)", (long long)rows);
    }
    for (int64_t i = 0; i < rows; i++) ones[i] = 1.0f;
    w4a8moe_status st = pack_layer(s, w, H, I, g, ones, sq, ss, sc, shift, inexact, err);
    free(ones);
    cudaFree(staging);
    if (st == W4A8MOE_STATUS_OK && s->fused_on && !s->w13.scaled)
        st = sm90_fused_setup(&s->fused, H, I, d->top_k, g, s->fused_gps, s->w13.nrb, s->w2.nrb, s->w2.scaled,
                              ctx->dev->cuda_sm_count, err);
    return st;
}

/* The tensor map of input a [rows, K] for tiles of bn rows, encoded once per buffer. */
static w4a8moe_status tmap_for(const void **src, CUtensorMap *map, const void *a, int64_t rows,
                               int64_t K, int bn, w4a8moe_err *err)
{
    if (*src == a) return W4A8MOE_STATUS_OK;
    RETURN_IF(err, sm90_tmap_act(map, a, rows, K, bn, true) != 0, W4A8MOE_STATUS_DEVICE_ERROR,
              "cuTensorMapEncodeTiled failed for a [%lld, %lld] f16 input at %p",
              (long long)rows, (long long)K, a);
    *src = a;
    return W4A8MOE_STATUS_OK;
}

/* The tile width of the first entry of the table that fits the average rows per active expert;
 * the promoting kernel (scaled = 0) skips the entries wider than 128. */
static int pick_bn(int64_t rows, int32_t nl, int scaled, const int *tile_max)
{
    int64_t active = rows < nl ? rows : nl;
    int64_t avg = active > 0 ? w4a8moe_cdiv(rows, active) : 1;
    int bn = sm90_tiles[0].bn;
    for (size_t i = 0; i < SM90_TILE_COUNT; i++) {
        if (sm90_tiles[i].bn > 128 && !scaled) break;
        bn = sm90_tiles[i].bn;
        if (avg <= tile_max[i]) break;
    }
    return bn;
}

/* The table entry of tile width bn (the index of its tensor maps). */
static int bn_index(int bn)
{
    for (size_t i = 0; i < SM90_TILE_COUNT; i++)
        if (sm90_tiles[i].bn == bn) return (int)i;
    return 0;
}

/* One GEMM of the layer on its matrix's kernel, tiles of bn rows. */
template <bool GATED>
static cudaError_t gemm_launch(const sm90_matrix &m, int bn, const CUtensorMap &map, const sm90_gemm_args &a,
                               unsigned tiles_bound, cudaStream_t st)
{
    if (m.scaled) {
        if (bn == 256) return sm90s_gemm_launch<256, SM90_TILE_STAGES(256), GATED>(map, a, tiles_bound, st);
        if (bn == 128) return sm90s_gemm_launch<128, SM90_TILE_STAGES(128), GATED>(map, a, tiles_bound, st);
        if (bn == 64) return sm90s_gemm_launch<64, SM90_TILE_STAGES(64), GATED>(map, a, tiles_bound, st);
        return sm90s_gemm_launch<32, SM90_TILE_STAGES(32), GATED>(map, a, tiles_bound, st);
    }
    if (bn == 128) return sm90_gemm_launch<128, SM90_PROMOTE_STAGES(128), GATED>(map, a, tiles_bound, st, SM90_F16);
    if (bn == 64) return sm90_gemm_launch<64, SM90_PROMOTE_STAGES(64), GATED>(map, a, tiles_bound, st, SM90_F16);
    if (bn == 32) return sm90_gemm_launch<32, SM90_PROMOTE_STAGES(32), GATED>(map, a, tiles_bound, st, SM90_F16);
    return cudaErrorInvalidValue; /* pick_bn gives the promoting kernel at most 128 */
}

/* Whether a one-token forward has the prepare quantise the token in a kernel of its own before its
 * sort, for GEMM1 to multiply it before its wait (W4A8MOE_SM90_QUANT_FIRST; sm90_plan_tiles, and
 * explain's line). GEMM1 stages its row at its K split, the small-batch entry's four ways. */
static bool sm90_quant_first_on(const sm90_state *s, int64_t T, int64_t R, int64_t H)
{
    return s->quant_first && T == 1 && s->early && R <= SM90_EARLY_MAX_ROWS && s->find_ids &&
           sm90_stage_fits(H, 4);
}

/* The small-batch tile list asked of the prepare (w4a8moe_tile_plan, src/core/backend.h): its
 * decode kernel writes it and zeroes GEMM1's row amax, so the forward runs no schedule kernel
 * (a dependent step of ~2.2 µs at decode; docs/PERFORMANCE.md, round 23). Not where GEMM1 finds
 * its own tile before its wait from the offsets (at most s->find_max local experts), which
 * needs the kernel before it to be the schedule (kernels/pdl.cuh), unless prepare_tiles = 2 or
 * GEMM1 finds its tile's expert from the routing ids instead (find_ids). */
static void sm90_plan_tiles(const w4a8moe_stage_ctx *ctx, void *state, int64_t T, void *workspace,
                            w4a8moe_tile_plan *plan)
{
    const sm90_state *s = (const sm90_state *)state;
    const int64_t R = T * ctx->desc->top_k;
    const int32_t nl = ctx->num_local;
    if (!s || !workspace || R <= 0 || s->prepare_tiles <= 0) return;
    const sm90_mma_config *mc = sm90_pick_mma(R, nl, s->mma_max);
    if (!mc || s->w13.scaled) return; /* the wgmma path keeps its schedule kernels */
    const bool finds = s->early && R <= SM90_EARLY_MAX_ROWS && nl <= s->find_max;
    if (finds && s->prepare_tiles < 2 && !s->find_ids) return;
    sm90_ws ws;
    sm90_ws_layout(ctx, (char *)workspace, &ws);
    plan->rows_a_tile = 8 * mc->nt;
    plan->tiles = (int32_t *)ws.tiles;
    plan->ntiles = ws.ntiles;
    plan->zero = ws.rowmax;
    plan->nzero = R;
    /* the token first, where GEMM1 then multiplies it before its wait (sm90_small_batch_forward) */
    plan->quant_first = sm90_quant_first_on(s, T, R, ctx->desc->hidden);
}

/* CTAs an SM of the scaled kernel's tiles of bn rows. */
static int scaled_ctas_per_sm(int bn)
{
    if (bn == 256) return sm90s_smem_plan<256, SM90_TILE_STAGES(256)>::ctas;
    if (bn == 128) return sm90s_smem_plan<128, SM90_TILE_STAGES(128)>::ctas;
    if (bn == 64) return sm90s_smem_plan<64, SM90_TILE_STAGES(64)>::ctas;
    return sm90s_smem_plan<32, SM90_TILE_STAGES(32)>::ctas;
}


/* GEMM2's K parts on the scaled wgmma kernel (bn-row tiles, R routed rows over nl local experts,
 * sms SMs). Its grid is tiles x H/128 CTAs, each over all of K = I: at Mixtral's shape (8 experts,
 * H = 4,096, I = 14,336) one tile an expert makes 256 CTAs of 224 K blocks for 396 slots, two
 * thirds of a wave and two CTAs an SM where three fit. Cut in S parts, it is S times the CTAs
 * of 1/S the work: its time goes as its waves over S, i.e. as 1 / (the share of the slots its
 * waves fill), and the S whose waves are fullest wins if it fills them SM90_SPLIT_GAIN times as
 * well as one part (sm90s_split_reduce_kernel then sums the parts, a kernel more). The tiles
 * are estimated from the average rows an expert (the routing is on the device): one an expert
 * when it fills at most half a tile, else R / bn and half a tile's spill an expert. At most
 * SM90_SPLIT_MAX parts, each of at least SM90_SPLIT_MIN_BLOCKS K blocks, and as many as GEMM1's
 * y [R, I] holds [R, H] planes of, beside y_rows (it is dead once requantised); split_k > 0 caps
 * the parts instead (1: none). Not on the promoting kernel (f32 scales): 1. *settled (unless NULL): 1 when no
 * larger grid of this layer gets parts either (six waves or more fill at least 6/7 of theirs). */
#define SM90_SPLIT_MAX 4
#define SM90_SPLIT_MIN_BLOCKS 8
#define SM90_SPLIT_GAIN 1.2
static int sm90_gemm2_parts(const sm90_state *s, int64_t R, int32_t nl, int64_t H, int64_t I, int bn, int sms,
                            int *settled = NULL)
{
    const int64_t KB = w4a8moe_cdiv(I, SM90S_BK);
    int64_t most = I / H + 1;
    if (most > SM90_SPLIT_MAX) most = SM90_SPLIT_MAX;
    if (most > KB / SM90_SPLIT_MIN_BLOCKS) most = KB / SM90_SPLIT_MIN_BLOCKS;
    if (settled) *settled = 1;
    if (!s->w2.scaled || most < 2 || sms <= 0) return 1;
    if (s->split_k > 0) return (int)(s->split_k < most ? s->split_k : most);
    const int64_t active = R < nl ? R : nl, avg = w4a8moe_cdiv(R, active);
    const int64_t tiles = 2 * avg <= bn ? active : w4a8moe_cdiv(R, bn) + active / 2;
    const int64_t ctas = tiles * (s->w2.nrb / 2), slots = (int64_t)sms * scaled_ctas_per_sm(bn);
    if (settled) *settled = ctas >= 6 * slots;
    int best = 1;
    double best_fill = wave_fill(ctas, slots);
    for (int parts = 2; parts <= most; parts++) {
        const double f = wave_fill(ctas * parts, slots);
        if (f > best_fill + 1e-9) {
            best_fill = f;
            best = parts;
        }
    }
    return best_fill >= wave_fill(ctas, slots) * SM90_SPLIT_GAIN ? best : 1;
}

/* Tiles of bn rows per local expert and their bound for a grid. */
static unsigned tiles_bound_for(int64_t R, int bn, int32_t nl)
{
    int64_t bound = w4a8moe_cdiv(R, bn) + nl;
    return (unsigned)(bound < R ? bound : R);
}

static w4a8moe_status sm90_run(const w4a8moe_stage_ctx *ctx, void *state, const w4a8moe_dispatch *dp,
                               void *workspace, void *stream, w4a8moe_err *err)
{
    sm90_state *s = (sm90_state *)state;
    const w4a8moe_layer_desc *d = ctx->desc;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t H = d->hidden, I = d->inter, R = dp->T * d->top_k;
    int64_t R_max = (int64_t)d->max_tokens * d->top_k;
    int32_t nl = ctx->num_local;
    if (R == 0) return W4A8MOE_STATUS_OK;
    sm90_ws ws;
    sm90_ws_layout(ctx, (char *)workspace, &ws);
    const int pdl = w4a8moe_cuda_pdl(ctx->dev);
    float r_static = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_mid : 0.0f;
    const int g = d->group_size, blk = sm90s_block_bytes(g);
    int32_t *total = dp->expert_offsets + nl;
    sm90_gemm_args a1 = {(const uint2 *)s->w13.wq, s->w13.ws, s->w13.wc, s->w13.nrb, I, H, g,
                         dp->a_scale, dp->expert_offsets, ws.tiles, ws.ntiles, ws.y, ws.rowmax,
                         (int)d->activation, blk};
    if (const sm90_mma_config *mc = sm90_pick_mma(R, nl, s->mma_max)) { /* few rows per expert */
        const int bt = 8 * mc->nt;
        sm90_gemm_args a2 = {(const uint2 *)s->w2.wq, s->w2.ws, s->w2.wc, s->w2.nrb, H, I, g, ws.r,
                             dp->expert_offsets, ws.tiles, ws.ntiles, dp->y_rows, NULL, 0, blk};
        const unsigned tb = tiles_bound_for(R, bt, nl);
        const w4a8moe_tile_plan &pl = dp->plan; /* sm90_plan_tiles asked the prepare for it */
        const bool ready = pl.written && pl.rows_a_tile == bt && pl.tiles == (int32_t *)ws.tiles &&
                           pl.ntiles == ws.ntiles && pl.zero == ws.rowmax && pl.nzero >= R;
        int ks[2]; /* the GEMMs' K splits (configs/sm90_tiles.h): GEMM2 eight ways for a long K at decode */
        sm90_mma_ksplits(mc, I, g, R, ks);
        const sm90m_ids rt = {dp->topk_ids, (int)R, d->num_experts, ctx->expert_begin};
        if (s->fused.ready && dp->T == 1 && ready && rt.ids) { /* one launch (cuda_sm90_fused.h) */
            sm90f_args fa = {};
            fa.g1 = a1;
            fa.g2 = a2;
            fa.scaled2 = s->w2.scaled;
            fa.rt = rt;
            fa.nl = nl;
            fa.a_q = dp->a_q;
            fa.tiles = ws.tiles;
            fa.ntiles = ws.ntiles;
            fa.r_static = r_static;
            CUDA_LAUNCH(err, "sm90_fused_decode_kernel", sm90_fused_launch(&s->fused, fa, st, pdl));
            return W4A8MOE_STATUS_OK;
        }
        return sm90_small_batch_forward(s, mc, ks, a1, a2, dp->a_q, ws, I, total, r_static, R, tb, nl, ready,
                                        dp->T == 1, ready && pl.quantised_first && dp->T == 1 && s->quant_first, rt, st,
                                        pdl, err);
    }
    const int bn1 = pick_bn(R, nl, s->w13.scaled, s->tile_max);
    const int bn2 = pick_bn(R, nl, s->w2.scaled, s->tile_max);
    const int i1 = bn_index(bn1), i2 = bn_index(bn2);
    FORWARD(tmap_for(&s->a_src[i1], &s->a_map[i1], ws.a_wide, R_max, H, bn1, err));
    FORWARD(tmap_for(&s->b_src[i2], &s->b_map[i2], ws.b_wide, R_max, I, bn2, err));
    const unsigned tb1 = tiles_bound_for(R, bn1, nl), tb2 = tiles_bound_for(R, bn2, nl);
    /* the small kernels launch with PDL (kernels/pdl.cuh); the wgmma GEMMs plainly: a GEMM's
     * grid waits for the whole kernel before it, and the kernel after it starts at its end */
    CUDA_LAUNCH(err, "sm89_schedule_kernel",
                w4a8moe_launch(sm89_schedule_kernel, dim3(1), dim3(1024), 0, st, pdl,
                               dp->expert_offsets, nl, bn1, ws.tiles, ws.ntiles,
                               ws.rowmax, R));
    int2 *tiles2 = ws.tiles;
    int32_t *ntiles2 = ws.ntiles;
    if (bn2 != bn1) { /* GEMM2's own tiles (R = 0: GEMM1's row amax is zeroed once) */
        CUDA_LAUNCH(err, "sm89_schedule_kernel (GEMM2)",
                    w4a8moe_launch(sm89_schedule_kernel, dim3(1), dim3(1024), 0, st, pdl,
                                   dp->expert_offsets, nl, bn2, ws.tiles2,
                                   ws.ntiles2, ws.rowmax, 0));
        tiles2 = ws.tiles2;
        ntiles2 = ws.ntiles2;
    }
    CUDA_LAUNCH(err, "sm90_widen_kernel",
                w4a8moe_launch(sm90_widen_kernel, row_slice_grid(R, H), dim3(256), 0, st, pdl,
                               dp->a_q, total, H, ws.a_wide));
    /* GEMM2's K parts go to y_rows and GEMM1's y, which the requantisation has read by then */
    const int parts = sm90_gemm2_parts(s, R, nl, H, I, bn2, ctx->dev->cuda_sm_count);
    sm90_gemm_args a2 = {(const uint2 *)s->w2.wq, s->w2.ws, s->w2.wc, s->w2.nrb, H, I, g, ws.r,
                         dp->expert_offsets, tiles2, ntiles2, dp->y_rows, NULL, 0, blk, parts, ws.y, R * H};
    CUDA_TRY(err, gemm_launch<true>(s->w13, bn1, s->a_map[i1], a1, tb1, st));
    CUDA_LAUNCH(err, "sm89_requant_kernel (f16 codes)",
                w4a8moe_launch(sm89_requant_kernel<true>, row_slice_grid(R, I), dim3(256), 0, st, pdl,
                               ws.y, ws.rowmax, total, I, r_static, ws.b_wide, ws.r));
    CUDA_TRY(err, gemm_launch<false>(s->w2, bn2, s->b_map[i2], a2, tb2, st));
    if (parts > 1)
        CUDA_LAUNCH(err, "sm90s_split_reduce_kernel",
                    w4a8moe_launch(sm90s_split_reduce_kernel, dim3((unsigned)w4a8moe_cdiv(H, 1024), (unsigned)R),
                                   dim3(256), 0, st, pdl, a2, (int)nl));
    return W4A8MOE_STATUS_OK;
}

/* explain's line for a forward of T tokens (describe_batch, src/core/backend.h): what sm90_run
 * picks from the shape and the switches alone, and the band of rows an expert that picks it
 * (between two bounds of configs/sm90_tiles.h). GEMM2's wgmma kernel depends on its scales
 * (scaled, up to 256-row tiles, unless they have more than 8 significant bits), known only
 * once packed: both are named where they differ. */
static int sm90_describe_batch(const w4a8moe_stage_ctx *ctx, int64_t T, char *buf, size_t cap)
{
    sm90_state k;
    memset(&k, 0, sizeof k);
    sm90_read_switches(&k);
    const w4a8moe_layer_desc *d = ctx->desc;
    const int64_t R = T * d->top_k, nl = ctx->num_local, active = R < nl ? R : nl;
    const int64_t avg = active > 0 ? w4a8moe_cdiv(R, active) : 1;
    int64_t lo = 0, hi = -1; /* the band of avg between the bounds around it */
    int bounds[SM90_TILE_COUNT] = {k.mma_max}; /* the mma bound, then the wgmma table's finite ones */
    for (size_t i = 0; i + 1 < SM90_TILE_COUNT; i++) bounds[i + 1] = k.tile_max[i];
    for (size_t i = 0; i < SM90_TILE_COUNT; i++) {
        if (bounds[i] < avg && bounds[i] + 1 > lo) lo = bounds[i] + 1;
        if (bounds[i] >= avg && (hi < 0 || bounds[i] < hi)) hi = bounds[i];
    }
    char band[48];
    if (hi < 0) snprintf(band, sizeof band, "%lld+ rows an expert", (long long)(lo > 0 ? lo : 1));
    else if (lo <= 1) snprintf(band, sizeof band, "1-%lld rows an expert", (long long)hi);
    else snprintf(band, sizeof band, "%lld-%lld rows an expert", (long long)lo, (long long)hi);
    const bool decode = k.early && R <= SM90_EARLY_MAX_ROWS;
    if (const sm90_mma_config *mc = sm90_pick_mma(R, nl, k.mma_max)) {
        char why[W4A8MOE_WHY_CAP] = "";
        if (k.fused_on && T == 1) {
            if (sm90_fused_fits(d->hidden, d->inter, d->top_k, d->group_size, k.fused_gps, 0, why, sizeof why)) {
                snprintf(buf, cap, "one token: its experts in one launch (W4A8MOE_SM90_FUSED=1), their weights "
                         "streamed through every SM's shared memory, where the prepare lists the tiles");
                return 1;
            }
        }
        int ks[2];
        sm90_mma_ksplits(mc, d->inter, d->group_size, R, ks);
        const int ks2 = ks[1];
        char k2[80] = "";
        if (ks2 != mc->ksplit) snprintf(k2, sizeof k2, ", GEMM2's %d ways (a long K, <= 8 routed rows)", ks2);
        char sg[96] = ""; /* mma_layer's rule (GEMM1 where it finds its expert from the ids) */
        const bool qf = sm90_quant_first_on(&k, T, R, d->hidden) && k.prepare_tiles > 0;
        const bool sg1 = qf || (decode && T == 1 && (k.stage & 1) && k.find_ids && sm90_stage_fits(d->hidden, ks[0]));
        const bool sg2 = decode && T == 1 && (k.stage & 2) && sm90_stage_fits(d->inter, ks2);
        if (sg1 || sg2)
            snprintf(sg, sizeof sg, "; %s the token's row from shared memory (W4A8MOE_SM90_STAGE)",
                     sg1 && sg2 ? "both GEMMs read" : sg1 ? "GEMM1 reads" : "GEMM2 reads");
        snprintf(buf, cap, "%s: mma.sync tiles of %d rows, K split %d ways%s%s%s%s%s%s", band, 8 * mc->nt,
                 mc->ksplit, k2, decode ? "; PDL prologues (<= 8 routed rows)" : "", sg,
                 qf ? "; the token quantised first, GEMM1's product before its wait (W4A8MOE_SM90_QUANT_FIRST)" : "",
                 why[0] ? "; not in one launch: " : "", why);
        return 1;
    }
    const int bn1 = pick_bn(R, (int32_t)nl, 0, k.tile_max), bn2 = pick_bn(R, (int32_t)nl, 1, k.tile_max);
    const int bn2f = pick_bn(R, (int32_t)nl, 0, k.tile_max);
    char g2[64], parts[64] = "";
    if (bn2f != bn2) snprintf(g2, sizeof g2, "%d (%d with f32 scales)", bn2, bn2f);
    else snprintf(g2, sizeof g2, "%d", bn2);
    k.w2.scaled = 1; /* GEMM2's K parts, on the scaled kernel (bf16 or e4m3 scales) */
    k.w2.nrb = sm90_nrb(d->hidden, 0);
    int settled = 1;
    const int np = sm90_gemm2_parts(&k, R, (int32_t)nl, d->hidden, d->inter, bn2,
                                    ctx->dev ? ctx->dev->cuda_sm_count : 0, &settled);
    if (np > 1) snprintf(parts, sizeof parts, ", its K in %d parts (a grid short of a wave)", np);
    snprintf(buf, cap, "%s: wgmma tiles, GEMM1 %d rows, GEMM2 %s%s", band, bn1, g2, parts);
    return hi < 0 && settled && R > SM90_EARLY_MAX_ROWS && R > SM90_MMA_KS8_MAX_ROWS ? 2 : 1;
}

extern "C" const w4a8moe_experts_ops w4a8moe_cuda_sm90_experts = {
    "cuda_sm90",
    W4A8MOE_BACKEND_API,
    W4A8MOE_DEVICE_CUDA,
    W4A8MOE_LAYOUT_CONTIGUOUS,
    sm90_supports_device,
    sm90_supports_quant,
    sm90_supports_activation,
    sm90_supports_parallel,
    sm90_supports_shape,
    sm90_workspace_size,
    sm90_pack,
    sm90_free,
    sm90_run,
    sm90_plan_tiles,
    sm90_describe_batch,
};
