/*
 * cuda_dense_experts.cu — `cuda_dense`, the CUDA experts backend of unquantised shared experts:
 * weight scheme BF16 × activation scheme BF16 (bf16/f16/f32 checkpoints, and DeepSeek block-FP8
 * ones, which the loader dequantises to f32; docs/formats.md, "Shared experts"). It runs the
 * rows of the contiguous dispatch on the device from the caller's x (dispatch.x), as the CPU
 * dense path (src/cpu/cpu_experts_dense.c) does on the host, with the same sums
 * (kernels/dense_gemm.cuh, docs/numerics.md).
 *
 *   pack_weights (once): each expert's gate, up and down copied to the device; bf16 stays bf16
 *       (decode reads every weight once: 2 bytes a weight), f16 and f32 are stored as f32 (f16
 *       widened exactly), as the CPU path keeps them.
 *   run (per forward, no host synchronisation, capturable): GEMM1 with the activation in its
 *       epilogue → mid [R, I] f32 → GEMM2 → y_rows.
 *
 * Workspace (for R = max_tokens * k rows): mid [R, I] f32.
 */
#include "cuda_util.h"
#include "kernels/dense_gemm.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dense_state {
    void *w13;          /* [nl, 2I, H]: gate rows then up rows; bf16 when bf16_13, else f32 */
    void *w2;           /* [nl, H, I]; bf16 when bf16_2, else f32 */
    int bf16_13, bf16_2;
} dense_state;

static int dense_supports_device(const w4a8moe_device_info *dev, char *why, size_t cap)
{
    if (dev->cuda_sm == 0) {
        snprintf(why, cap, "%s", dev->name);
        return 0;
    }
    return w4a8moe_cuda_has_code(dev, (const void *)dense_gemm_kernel<true, true>, why, cap);
}

static int dense_supports_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap)
{
    if (w == W4A8MOE_WEIGHT_BF16 && a == W4A8MOE_ACT_BF16) return 1;
    snprintf(why, cap, "runs unquantised (bf16) shared experts only; int4 x fp8 runs on cuda_sm89/90");
    return 0;
}

static int dense_supports_activation(w4a8moe_activation act, char *why, size_t cap)
{
    if (act == W4A8MOE_ACTIVATION_SILU || act == W4A8MOE_ACTIVATION_GELU_TANH) return 1;
    snprintf(why, cap, "activation %d is not implemented", (int)act);
    return 0;
}

static int dense_supports_shape(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    int64_t nl = d->num_experts / (d->ep_size > 0 ? d->ep_size : 1);
    if (w4a8moe_cdiv(d->inter, DENSE_BW / 2) > 65535 || w4a8moe_cdiv(d->hidden, DENSE_BW) > 65535) {
        snprintf(why, cap, "I = %lld or H = %lld exceeds the grid's channel tiles (I <= 1048560, "
                 "H <= 2097120)", (long long)d->inter, (long long)d->hidden);
        return 0;
    }
    if (nl > 65535) {
        snprintf(why, cap, "%lld local experts exceed the grid's 65535", (long long)nl);
        return 0;
    }
    if (!w4a8moe_cuda_topk_fits(d, why, cap)) return 0;
    return 1;
}

static size_t dense_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    return w4a8moe_align256((size_t)d->max_tokens * (size_t)d->top_k * (size_t)d->inter * 4);
}

static void dense_free(void *state)
{
    dense_state *s = (dense_state *)state;
    if (!s) return;
    if (s->w13) cudaFree(s->w13);
    if (s->w2) cudaFree(s->w2);
    free(s);
}

/* Copies matrix m [rows, cols] to dst on the device: as is when it is bf16 and bf16 is the
 * storage, else widened to f32 (exact) through the host buffer tmp [rows * cols]. */
static w4a8moe_status upload_matrix(const w4a8moe_dense_matrix *m, int bf16, float *tmp, void *dst,
                                    w4a8moe_err *err)
{
    size_t n = (size_t)m->rows * (size_t)m->cols;
    if (bf16) {
        CUDA_TRY(err, cudaMemcpy(dst, m->data, n * 2, cudaMemcpyHostToDevice));
        return W4A8MOE_STATUS_OK;
    }
    const void *src = m->data;
    if (m->dtype != W4A8MOE_DTYPE_F32) {
        for (size_t i = 0; i < n; i++) tmp[i] = w4a8moe_scale_get(m->data, m->dtype, (int64_t)i);
        src = tmp;
    }
    CUDA_TRY(err, cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status dense_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                 void **state, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    size_t H = (size_t)d->hidden, I = (size_t)d->inter, nl = (size_t)w->num_local;
    RETURN_IF(err, !w->dense, W4A8MOE_STATUS_INTERNAL, "cuda_dense: no unquantised weights given");
    dense_state *s = (dense_state *)calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cuda_dense state");
    *state = s;
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    s->bf16_13 = s->bf16_2 = 1;
    for (size_t e = 0; e < nl; e++) {
        s->bf16_13 &= w->dense[3 * e].dtype == W4A8MOE_DTYPE_BF16 &&
                      w->dense[3 * e + 1].dtype == W4A8MOE_DTYPE_BF16;
        s->bf16_2 &= w->dense[3 * e + 2].dtype == W4A8MOE_DTYPE_BF16;
    }
    size_t e13 = 2 * I * H * (s->bf16_13 ? 2 : 4), e2 = H * I * (s->bf16_2 ? 2 : 4);
    cudaError_t ce = cudaMalloc(&s->w13, nl * e13);
    if (ce == cudaSuccess) ce = cudaMalloc(&s->w2, nl * e2);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY,
                   "cuda_dense: %zu bytes of unquantised shared-expert weights on device %d: %s; "
                   "hint: quantise the shared expert or leave it out (run --routed-only)",
                   nl * (e13 + e2), ctx->dev->ordinal, cudaGetErrorString(ce));
    }
    float *tmp = (float *)malloc(I * H * 4);
    RETURN_IF(err, !tmp, W4A8MOE_STATUS_OUT_OF_MEMORY, "cuda_dense: staging of %zu bytes", I * H * 4);
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    for (size_t e = 0; e < nl && st == W4A8MOE_STATUS_OK; e++) {
        char *w13 = (char *)s->w13 + e * e13;
        st = upload_matrix(&w->dense[3 * e], s->bf16_13, tmp, w13, err);
        if (st == W4A8MOE_STATUS_OK)
            st = upload_matrix(&w->dense[3 * e + 1], s->bf16_13, tmp, w13 + e13 / 2, err);
        if (st == W4A8MOE_STATUS_OK)
            st = upload_matrix(&w->dense[3 * e + 2], s->bf16_2, tmp, (char *)s->w2 + e * e2, err);
    }
    free(tmp);
    return st;
}

template <bool GATED>
static w4a8moe_status launch(const dense_gemm_args &a, int bf16, unsigned row_tiles, int32_t nl,
                             cudaStream_t st, int pdl, w4a8moe_err *err)
{
    dim3 grid(row_tiles, (unsigned)w4a8moe_cdiv(a.n_out, GATED ? DENSE_BW / 2 : DENSE_BW),
              (unsigned)nl);
    CUDA_LAUNCH(err, GATED ? "dense_gemm_kernel (GEMM1)" : "dense_gemm_kernel (GEMM2)",
                w4a8moe_launch(bf16 ? dense_gemm_kernel<true, GATED> : dense_gemm_kernel<false, GATED>,
                               grid, dim3(DENSE_THREADS), 0, st, pdl, a));
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status dense_run(const w4a8moe_stage_ctx *ctx, void *state, const w4a8moe_dispatch *dp,
                                void *workspace, void *stream, w4a8moe_err *err)
{
    const dense_state *s = (const dense_state *)state;
    const w4a8moe_layer_desc *d = ctx->desc;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t H = d->hidden, I = d->inter, R = dp->T * d->top_k;
    if (R == 0) return W4A8MOE_STATUS_OK;
    RETURN_IF(err, !dp->x, W4A8MOE_STATUS_INTERNAL,
              "cuda_dense: the prepare stage did not pass the caller's x (dispatch.x)");
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    float *mid = (float *)workspace;
    const int pdl = w4a8moe_cuda_pdl(ctx->dev);
    unsigned row_tiles = (unsigned)w4a8moe_cdiv(R, DENSE_BM);
    dense_gemm_args a1 = {s->w13, I, H, dp->expert_offsets, dp->x, (int)d->io_dtype,
                          dp->row_token, NULL, mid, (int)d->activation};
    FORWARD(launch<true>(a1, s->bf16_13, row_tiles, ctx->num_local, st, pdl, err));
    dense_gemm_args a2 = {s->w2, H, I, dp->expert_offsets, NULL, 0, NULL, mid, dp->y_rows, 0};
    return launch<false>(a2, s->bf16_2, row_tiles, ctx->num_local, st, pdl, err);
}

extern "C" const w4a8moe_experts_ops w4a8moe_cuda_dense_experts = {
    "cuda_dense",
    W4A8MOE_BACKEND_API,
    W4A8MOE_DEVICE_CUDA,
    W4A8MOE_LAYOUT_CONTIGUOUS,
    dense_supports_device,
    dense_supports_quant,
    dense_supports_activation,
    NULL, /* any parallel config: the experts run the local slice */
    dense_supports_shape,
    dense_workspace_size,
    dense_pack,
    dense_free,
    dense_run,
    NULL, /* plan_tiles: none */
};
