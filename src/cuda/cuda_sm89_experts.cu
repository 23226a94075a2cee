/*
 * cuda_sm89_experts.cu — `cuda_sm89`, the mma.sync e4m3 experts backend (Ada sm_89 and Hopper):
 * contract steps 3-6 for the rows of the contiguous dispatch, on the device.
 *
 *   pack_weights (once): upload each expert's logical int4 words and scales, convert them on
 *       the device into the fragment-major layout of kernels/sm89_grouped_gemm.cuh.
 *   run (per forward, no host synchronisation, capturable):
 *       schedule (M tiles per expert from expert_offsets) → GEMM1 with the gate/up pair, SiLU·up
 *       (or gelu_tanh) and the row amax fused in its epilogue → requantisation to e4m3 → GEMM2.
 *       On Hopper with g = 32 the decode tiles (few rows per expert) run the same GEMMs with
 *       the weights streamed by the copy engine (kernels/sm90_decode_gemm.cuh), bit-identical.
 *
 * Workspace (for R = max_tokens * k rows): tiles [ceil(R/8) + E_local] int2, a tile count,
 * y [R, I] f32, row amax [R], b [R, I] e4m3, r [R] f32.
 */
#include "configs/sm89_tiles.h"
#include "cuda_util.h"
#include "kernels/sm90_decode_gemm.cuh"

#include <stdio.h>
#include <stdlib.h>

typedef struct sm89_state {
    uint2 *w13q, *w2q;   /* [nl, 2I/16, H/32, 32], [nl, H/16, I/32, 32] */
    float *w13s, *w2s;   /* group scales, tile-major */
    float *w13c, *w2c;   /* channel scales [nl, 2I], [nl, H] */
    int bulk;            /* Hopper: the decode tiles stream weights with bulk copies
                            (kernels/sm90_decode_gemm.cuh); shared memory was granted at pack */
} sm89_state;

static int sm89_supports_device(const w4a8moe_device_info *dev, char *why, size_t cap)
{
    if (dev->cuda_sm == 0) {
        snprintf(why, cap, "%s", dev->name);
        return 0;
    }
    if (dev->cuda_sm < 89) {
        snprintf(why, cap, "needs FP8 mma (sm_89 or newer); %s is sm_%d", dev->name, dev->cuda_sm);
        return 0;
    }
    return w4a8moe_cuda_has_code(dev, (const void *)sm89_gemm_kernel<1, 4, true>, why, cap);
}

static int sm89_supports_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap)
{
    if (w == W4A8MOE_WEIGHT_INT4_GROUP &&
        (a == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC || a == W4A8MOE_ACT_FP8_TENSOR_STATIC))
        return 1;
    snprintf(why, cap, "runs int4-group weights with fp8 activations only");
    return 0;
}

static int sm89_supports_activation(w4a8moe_activation act, char *why, size_t cap)
{
    if (act == W4A8MOE_ACTIVATION_SILU || act == W4A8MOE_ACTIVATION_GELU_TANH) return 1;
    snprintf(why, cap, "activation %d is not implemented", (int)act);
    return 0;
}

static int sm89_supports_parallel(int32_t rank, int32_t size, char *why, size_t cap)
{
    (void)rank;
    (void)why;
    (void)cap;
    return size >= 1; /* experts run on the local slice; the prepare/finalize decides EP */
}

static int sm89_supports_shape(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    /* K steps of 32 and 16-channel tiles: H and I are multiples of g >= 32, so always true */
    if (d->hidden % 32 || d->inter % 32) {
        snprintf(why, cap, "needs H and I multiples of 32 (k32 mma steps); H = %lld, I = %lld",
                 (long long)d->hidden, (long long)d->inter);
        return 0;
    }
    if (d->hidden / 16 > 65535 || d->inter / 16 > 65535) {
        snprintf(why, cap, "H and I must be below 2^20 (grid limit)");
        return 0;
    }
    if (!w4a8moe_cuda_topk_fits(d, why, cap)) return 0;
    return 1;
}

typedef struct sm89_ws {
    int2 *tiles;
    int32_t *ntiles;
    float *y;
    uint32_t *rowmax;
    uint8_t *b;
    float *r;
} sm89_ws;

static size_t sm89_ws_layout(const w4a8moe_stage_ctx *ctx, char *base, sm89_ws *w)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    size_t R = (size_t)d->max_tokens * (size_t)d->top_k, I = (size_t)d->inter;
    size_t max_tiles = (R + 7) / 8 + (size_t)ctx->num_local;
    size_t off = 0;
    if (w) w->tiles = (int2 *)(base + off);
    off += w4a8moe_align256(max_tiles * sizeof(int2));
    if (w) w->ntiles = (int32_t *)(base + off);
    off += 256;
    if (w) w->y = (float *)(base + off);
    off += w4a8moe_align256(R * I * 4);
    if (w) w->rowmax = (uint32_t *)(base + off);
    off += w4a8moe_align256(R * 4);
    if (w) w->b = (uint8_t *)(base + off);
    off += w4a8moe_align256(R * I);
    if (w) w->r = (float *)(base + off);
    off += w4a8moe_align256(R * 4);
    return off;
}

static size_t sm89_workspace_size(const w4a8moe_stage_ctx *ctx) { return sm89_ws_layout(ctx, NULL, NULL); }

static void sm89_free(void *state)
{
    sm89_state *s = (sm89_state *)state;
    if (!s) return;
    void *bufs[] = {s->w13q, s->w2q, s->w13s, s->w2s, s->w13c, s->w2c};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    free(s);
}

/* Uploads one logical matrix [rows, K] into the staging buffer and converts it into its place:
 * wq/ws/wc point at the matrix's first tile / scale / channel entry. */
static w4a8moe_status pack_matrix(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g,
                                  char *staging, uint2 *wq, float *ws, float *wc, w4a8moe_err *err)
{
    int64_t rows = m->rows, K = m->cols, groups = K / g;
    size_t np = (size_t)(rows * K / 8) * 4, ns = (size_t)(rows * groups) * w4a8moe_dtype_size(sdt);
    size_t nc = m->channel_scale ? (size_t)rows * 4 : 0;
    char *sp = staging, *ss = staging + w4a8moe_align256(np), *sc = ss + w4a8moe_align256(ns);
    CUDA_TRY(err, cudaMemcpy(sp, m->packed, np, cudaMemcpyHostToDevice));
    CUDA_TRY(err, cudaMemcpy(ss, m->scale, ns, cudaMemcpyHostToDevice));
    if (nc) CUDA_TRY(err, cudaMemcpy(sc, m->channel_scale, nc, cudaMemcpyHostToDevice));
    int64_t n1 = rows / 16 * (K / 32) * 32;
    sm89_pack_kernel<<<(unsigned)w4a8moe_cdiv(n1, 256), 256>>>((const int32_t *)sp, rows, K, wq);
    CUDA_LAUNCHED(err, "sm89_pack_kernel");
    int64_t n2 = rows * groups > rows ? rows * groups : rows;
    sm89_pack_scales_kernel<<<(unsigned)w4a8moe_cdiv(n2, 256), 256>>>(
        ss, (int)sdt, rows, groups, nc ? (const float *)sc : NULL, ws, wc);
    CUDA_LAUNCHED(err, "sm89_pack_scales_kernel");
    /* the next matrix reuses the staging buffer */
    CUDA_TRY(err, cudaDeviceSynchronize());
    return W4A8MOE_STATUS_OK;
}

/* On sm_90 with g = 32, lets the bulk decode kernels (kernels/sm90_decode_gemm.cuh) have the
 * shared memory their stages need for this layer's K, when the device has that much; otherwise
 * s->bulk stays 0 and the decode tiles run sm89_gemm_kernel. Why only g = 32: in the decode lab
 * (docs/PERFORMANCE.md, "GPU decode") the bulk kernel is 1.3-1.4x faster at g = 32, where
 * sm89_gemm_kernel waits for scales every k32 step, but at g = 128 it is 5-20% slower on the
 * gate/up GEMMs (fewer resident warps: its stages take the shared memory) and within +-9% on
 * the down GEMMs. g = 64 is not measured. */
template <int NT, bool GATED>
static w4a8moe_status grant_one(int64_t K, int g, int optin, int *ok, w4a8moe_err *err)
{
    cudaFuncAttributes fa;
    CUDA_TRY(err, cudaFuncGetAttributes(&fa, sm90_decode_kernel<NT, 4, GATED>));
    /* the most the device allows (not this layer's need: layers share the attribute) */
    size_t most = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
    if (sm90_decode_smem(K, g, 4, GATED) > most) {
        *ok = 0;
        return W4A8MOE_STATUS_OK;
    }
    CUDA_TRY(err, cudaFuncSetAttribute(sm90_decode_kernel<NT, 4, GATED>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)most));
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status grant_decode_smem(const w4a8moe_stage_ctx *ctx, sm89_state *s,
                                        w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    s->bulk = 0;
    if (ctx->dev->cuda_sm < 90 || d->group_size != 32) return W4A8MOE_STATUS_OK;
    int optin = 0, ok = 1;
    CUDA_TRY(err, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                         ctx->dev->ordinal));
    FORWARD((grant_one<1, true>(d->hidden, d->group_size, optin, &ok, err)));
    FORWARD((grant_one<2, true>(d->hidden, d->group_size, optin, &ok, err)));
    FORWARD((grant_one<1, false>(d->inter, d->group_size, optin, &ok, err)));
    FORWARD((grant_one<2, false>(d->inter, d->group_size, optin, &ok, err)));
    s->bulk = ok;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status sm89_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                void **state, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    int64_t H = d->hidden, I = d->inter, nl = w->num_local;
    int g = d->group_size;
    sm89_state *s = (sm89_state *)calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cuda_sm89 state");
    *state = s;
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    size_t q13 = (size_t)(2 * I * H / 8) * 4, q2 = (size_t)(H * I / 8) * 4;
    size_t s13 = (size_t)(2 * I * (H / g)) * 4, s2 = (size_t)(H * (I / g)) * 4;
    CUDA_TRY(err, cudaMalloc((void **)&s->w13q, nl * q13));
    CUDA_TRY(err, cudaMalloc((void **)&s->w2q, nl * q2));
    CUDA_TRY(err, cudaMalloc((void **)&s->w13s, nl * s13));
    CUDA_TRY(err, cudaMalloc((void **)&s->w2s, nl * s2));
    CUDA_TRY(err, cudaMalloc((void **)&s->w13c, (size_t)(nl * 2 * I) * 4));
    CUDA_TRY(err, cudaMalloc((void **)&s->w2c, (size_t)(nl * H) * 4));
    /* staging: the largest matrix's packed words, scales (up to f32) and channel scales */
    size_t stage = w4a8moe_align256(q2 > q13 / 2 ? q2 : q13 / 2) + w4a8moe_align256(s2 > s13 / 2 ? s2 : s13 / 2) +
                   w4a8moe_align256((size_t)(H > I ? H : I) * 4);
    char *staging = NULL;
    CUDA_TRY(err, cudaMalloc((void **)&staging, stage));
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    for (int64_t e = 0; e < nl && st == W4A8MOE_STATUS_OK; e++) {
        const w4a8moe_expert_weights *x = &w->experts[e];
        uint2 *q = s->w13q + e * (q13 / 8);
        float *sc = s->w13s + e * (s13 / 4), *ch = s->w13c + e * 2 * I;
        int64_t half_q = I / 16 * (H / 32) * 32, half_s = I / 16 * (H / g) * 16;
        st = pack_matrix(&x->gate, w->scale_dtype, g, staging, q, sc, ch, err);
        if (st == W4A8MOE_STATUS_OK)
            st = pack_matrix(&x->up, w->scale_dtype, g, staging, q + half_q, sc + half_s, ch + I, err);
        if (st == W4A8MOE_STATUS_OK)
            st = pack_matrix(&x->down, w->scale_dtype, g, staging, s->w2q + e * (q2 / 8),
                             s->w2s + e * (s2 / 4), s->w2c + e * H, err);
    }
    cudaFree(staging);
    if (st == W4A8MOE_STATUS_OK) st = grant_decode_smem(ctx, s, err);
    return st;
}

/* One grouped GEMM: where grant_decode_smem allowed it, the decode tiles (nt <= 2, ksplit 4)
 * stream the weights with bulk copies (kernels/sm90_decode_gemm.cuh); everything else runs
 * sm89_gemm_kernel. Both compute the same sums in the same order (bit-identical outputs). */
template <int NT, int KS, bool GATED>
static w4a8moe_status launch_gemm(const sm89_gemm_args &a, unsigned tiles_bound, int bulk,
                                  cudaStream_t st, int pdl, w4a8moe_err *err)
{
    dim3 grid(tiles_bound, (unsigned)w4a8moe_cdiv(a.n_out / 16, 4 / KS));
    if constexpr (KS == 4 && NT <= 2) {
        if (bulk) {
            size_t smem = sm90_decode_smem(a.K, a.g, KS, GATED);
            CUDA_LAUNCH(err, GATED ? "sm90_decode_kernel (GEMM1)" : "sm90_decode_kernel (GEMM2)",
                        w4a8moe_launch(sm90_decode_kernel<NT, KS, GATED>, grid, dim3(128), smem, st,
                                       pdl, a));
            return W4A8MOE_STATUS_OK;
        }
    }
    CUDA_LAUNCH(err, GATED ? "sm89_gemm_kernel (GEMM1)" : "sm89_gemm_kernel (GEMM2)",
                w4a8moe_launch(sm89_gemm_kernel<NT, KS, GATED>, grid, dim3(128), 0, st, pdl, a));
    return W4A8MOE_STATUS_OK;
}

template <int NT, int KS>
static w4a8moe_status launch_pair(const sm89_gemm_args &a1, const sm89_gemm_args &a2,
                                  unsigned tiles_bound, int bulk, const sm89_ws &ws, int64_t I,
                                  int32_t *total, float r_static, int64_t R, cudaStream_t st,
                                  int pdl, w4a8moe_err *err)
{
    FORWARD((launch_gemm<NT, KS, true>(a1, tiles_bound, bulk, st, pdl, err)));
    CUDA_LAUNCH(err, "sm89_requant_kernel",
                w4a8moe_launch(sm89_requant_kernel<false>, row_slice_grid(R, I), dim3(256), 0, st, pdl,
                               ws.y, ws.rowmax, total, I, r_static, ws.b, ws.r));
    return launch_gemm<NT, KS, false>(a2, tiles_bound, bulk, st, pdl, err);
}

static const sm89_tile_config *pick_tiles(int64_t rows, int32_t nl)
{
    int64_t active = rows < nl ? rows : nl;
    int64_t avg = active > 0 ? w4a8moe_cdiv(rows, active) : 1;
    for (size_t i = 0; i < SM89_TILE_COUNT; i++)
        if (avg <= sm89_tiles[i].max_rows_per_expert) return &sm89_tiles[i];
    return &sm89_tiles[SM89_TILE_COUNT - 1];
}

static w4a8moe_status sm89_run(const w4a8moe_stage_ctx *ctx, void *state, const w4a8moe_dispatch *dp,
                               void *workspace, void *stream, w4a8moe_err *err)
{
    const sm89_state *s = (const sm89_state *)state;
    const w4a8moe_layer_desc *d = ctx->desc;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t H = d->hidden, I = d->inter, R = dp->T * d->top_k;
    int32_t nl = ctx->num_local;
    if (R == 0) return W4A8MOE_STATUS_OK;
    sm89_ws ws;
    sm89_ws_layout(ctx, (char *)workspace, &ws);
    const sm89_tile_config *tc = pick_tiles(R, nl);
    int bt = 8 * tc->nt;
    int64_t bound = w4a8moe_cdiv(R, bt) + nl;
    unsigned tiles_bound = (unsigned)(bound < R ? bound : R);
    const int pdl = w4a8moe_cuda_pdl(ctx->dev);
    CUDA_LAUNCH(err, "sm89_schedule_kernel",
                w4a8moe_launch(sm89_schedule_kernel, dim3(1), dim3(1024), 0, st, pdl,
                               dp->expert_offsets, nl, bt, ws.tiles, ws.ntiles,
                               ws.rowmax, R));
    float r_static = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_mid : 0.0f;

    sm89_gemm_args a1 = {s->w13q, s->w13s, s->w13c, 2 * I, I, H, d->group_size, dp->a_q,
                         dp->a_scale, dp->expert_offsets, ws.tiles, ws.ntiles, ws.y, ws.rowmax,
                         (int)d->activation};
    sm89_gemm_args a2 = {s->w2q, s->w2s, s->w2c, H, H, I, d->group_size, ws.b, ws.r,
                         dp->expert_offsets, ws.tiles, ws.ntiles, dp->y_rows, NULL, 0};
    int32_t *total = dp->expert_offsets + nl;
    switch (tc->nt * 10 + tc->ksplit) {
    case 14: return launch_pair<1, 4>(a1, a2, tiles_bound, s->bulk, ws, I, total, r_static, R, st, pdl, err);
    case 24: return launch_pair<2, 4>(a1, a2, tiles_bound, s->bulk, ws, I, total, r_static, R, st, pdl, err);
    case 42: return launch_pair<4, 2>(a1, a2, tiles_bound, s->bulk, ws, I, total, r_static, R, st, pdl, err);
    case 41: return launch_pair<4, 1>(a1, a2, tiles_bound, s->bulk, ws, I, total, r_static, R, st, pdl, err);
    default: break;
    }
    RETURN_ERR(err, W4A8MOE_STATUS_INTERNAL, "sm89 tile table entry nt=%d ksplit=%d has no kernel",
               tc->nt, tc->ksplit);
}

/* explain's line for a forward of T tokens (describe_batch, src/core/backend.h): the entry of
 * configs/sm89_tiles.h that sm89_run picks and the band of rows an expert that picks it. */
static int sm89_describe_batch(const w4a8moe_stage_ctx *ctx, int64_t T, char *buf, size_t cap)
{
    const int64_t R = T * ctx->desc->top_k;
    const sm89_tile_config *tc = pick_tiles(R, ctx->num_local);
    const size_t i = (size_t)(tc - sm89_tiles);
    const int lo = i > 0 ? sm89_tiles[i - 1].max_rows_per_expert + 1 : 1;
    char band[48];
    if (i + 1 == SM89_TILE_COUNT) snprintf(band, sizeof band, "%d+ rows an expert", lo);
    else snprintf(band, sizeof band, "%d-%d rows an expert", lo, tc->max_rows_per_expert);
    snprintf(buf, cap, "%s: mma.sync tiles of %d rows, K split %d way%s", band, 8 * tc->nt, tc->ksplit,
             tc->ksplit > 1 ? "s" : "");
    return i + 1 == SM89_TILE_COUNT ? 2 : 1;
}

extern "C" const w4a8moe_experts_ops w4a8moe_cuda_sm89_experts = {
    "cuda_sm89",
    W4A8MOE_BACKEND_API,
    W4A8MOE_DEVICE_CUDA,
    W4A8MOE_LAYOUT_CONTIGUOUS,
    sm89_supports_device,
    sm89_supports_quant,
    sm89_supports_activation,
    sm89_supports_parallel,
    sm89_supports_shape,
    sm89_workspace_size,
    sm89_pack,
    sm89_free,
    sm89_run,
    NULL, /* plan_tiles: none */
    sm89_describe_batch,
};
