/*
 * cuda_prepfin_local.cu — the `local` prepare/finalize on a CUDA device (single device, EP 1).
 * Mirrors src/cpu/cpu_prepfin_local.c; device code in kernels/local_route.cuh and
 * kernels/local_dispatch.cuh.
 *
 * prepare (all on `stream`, no host synchronisation, capturable in a CUDA graph):
 *   [router on logits] → count pairs per (chunk, expert) → scan → stable assign of rows
 *   → per-token quantisation written into each of its rows; when T*k <= 1024 all of it after
 *   the router is one kernel (dispatch_decode_kernel: a block a token, each block sorting the
 *   few pairs itself), which also writes the experts' tile list when they ask for one
 *   (w4a8moe_tile_plan, src/core/backend.h); a one-token forward whose experts ask for it is
 *   quantised first by a kernel of its own (dispatch_quant_first_kernel), so that their first
 *   kernel may read its rows while the decode kernel sorts the pairs.
 * finalize: the deterministic combine (j ascending, f32, one rounding), shared expert included:
 *   the shared row's weighted value is added after the routed pairs, in the same f32 sum and with
 *   the host finalize's operations in its order (products and sums rounded apart, no FMA), so a
 *   layer's combine is the CPU one (docs/numerics.md, step 7).
 *
 * Caller-given routing lives on the device, so it cannot be checked without a sync: invalid ids
 * (outside [-1, E), or repeated within a token — the later slot) are treated as -1 (no expert)
 * in that forward and counted in the forward's error words (workspace: bad slots, first bad
 * token). When there are any, the one-block kernel after the count (small or scan) adds them to
 * the layer's report words, two int32 in mapped pinned host memory that only the device writes
 * (bad slots so far, token of the latest faulty forward) — no copy and no sync on the clean path,
 * and graph replays report too. The host remembers how many slots it has reported; the next
 * prepare (without waiting) and cuda_local_check (w4a8moe_layer_check, after a stream sync)
 * turn new ones into INVALID_ARGUMENT naming the token. With W4A8MOE_CHECK_ROUTING=1 in the
 * environment, prepare synchronises the stream after the count (outside graph capture) and fails
 * the forward itself. A NaN weight gives that token a NaN output.
 *
 * Workspace: the dispatch arrays (w4a8moe_dispatch_carve), then routed ids [R] and weights [R]
 * for the logits path, the chunk counts [ceil(R / 1024), E_local], and 2 error words.
 */
#include "cuda_util.h"
#include "kernels/local_dispatch.cuh"
#include "kernels/local_route.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_MAX_K 64 /* the quantise kernel keeps a token's rows in shared memory */
/* dispatch_decode_kernel keeps a cursor per local expert in (default-sized) shared memory */
#define LOCAL_DECODE_MAX_EXPERTS 8192

typedef struct local_state {
    float *bias;     /* device copy of routing.score_bias [E], or NULL */
    int check_routing;
    int decode_kernel; /* dispatch_decode_kernel for T*k <= 1024 (W4A8MOE_DECODE_PREPARE=0: off) */
    volatile int32_t *report; /* mapped pinned [2]: bad slots so far, latest first bad token */
    int32_t *report_dev;      /* the same words as the device addresses them */
    int32_t reported;         /* report[0] when the host last reported */
} local_state;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

typedef struct local_extra {
    int32_t *ids;
    float *wts;
    int32_t *counts;
    int32_t *err;
} local_extra;

static int64_t local_chunks(int64_t pairs) { return w4a8moe_cdiv(pairs > 0 ? pairs : 1, DISPATCH_CHUNK); }

static size_t local_extra_layout(const w4a8moe_stage_ctx *ctx, char *base, local_extra *x)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    size_t R = (size_t)d->max_tokens * (size_t)d->top_k;
    size_t chunks = (size_t)local_chunks((int64_t)R);
    size_t off = 0;
    if (x) x->ids = (int32_t *)(base + off);
    off += align64(R * 4);
    if (x) x->wts = (float *)(base + off);
    off += align64(R * 4);
    if (x) x->counts = (int32_t *)(base + off);
    off += align64(chunks * (size_t)ctx->num_local * 4);
    if (x) x->err = (int32_t *)(base + off);
    off += 64;
    return off;
}

static size_t cuda_local_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    return w4a8moe_dispatch_bytes(ctx->desc, ctx->num_local) + local_extra_layout(ctx, NULL, NULL);
}

static int cuda_local_supports_parallel(int32_t rank, int32_t size, char *why, size_t cap)
{
    (void)rank;
    if (size == 1) return 1;
    snprintf(why, cap, "local prepare/finalize serves one device; ep_size is %d", size);
    return 0;
}

static w4a8moe_status cuda_local_create(const w4a8moe_stage_ctx *ctx, void **state, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    RETURN_IF(err, d->top_k > LOCAL_MAX_K, W4A8MOE_STATUS_UNSUPPORTED,
              "the CUDA local prepare handles top_k <= %d, the layer has k = %d", LOCAL_MAX_K,
              d->top_k);
    RETURN_IF(err, d->routing.kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK &&
                       d->routing.n_group > ROUTE_MAX_GROUPS,
              W4A8MOE_STATUS_UNSUPPORTED,
              "the CUDA router handles n_group <= %d expert groups, the layer has %d",
              ROUTE_MAX_GROUPS, d->routing.n_group);
    local_state *s = (local_state *)calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "CUDA local prepare/finalize state");
    *state = s;
    const char *chk = getenv("W4A8MOE_CHECK_ROUTING");
    s->check_routing = chk && chk[0] == '1';
    const char *dk = getenv("W4A8MOE_DECODE_PREPARE");
    s->decode_kernel = !(dk && dk[0] == '0');
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    if (d->routing.score_bias) {
        size_t bytes = (size_t)d->num_experts * sizeof(float);
        CUDA_TRY(err, cudaMalloc((void **)&s->bias, bytes));
        CUDA_TRY(err, cudaMemcpy(s->bias, d->routing.score_bias, bytes, cudaMemcpyHostToDevice));
    }
    void *rep = NULL;
    CUDA_TRY(err, cudaHostAlloc(&rep, 2 * sizeof(int32_t), cudaHostAllocMapped | cudaHostAllocPortable));
    s->report = (volatile int32_t *)rep;
    s->report[0] = 0;
    s->report[1] = 0;
    CUDA_TRY(err, cudaHostGetDevicePointer((void **)&s->report_dev, rep, 0));
    return W4A8MOE_STATUS_OK;
}

static void cuda_local_free(void *state)
{
    local_state *s = (local_state *)state;
    if (!s) return;
    if (s->bias) cudaFree(s->bias);
    if (s->report) cudaFreeHost((void *)s->report);
    free(s);
}

/* Reports bad slots the device recorded since the last report, once; `when` says which call
 * finds them. Reads the mapped report words without waiting: the count first, then the token
 * (the device writes the token first, then fences, then the count). */
static w4a8moe_status report_routing(local_state *s, const w4a8moe_layer_desc *d, const char *when,
                                     w4a8moe_err *err)
{
    int32_t n = s->report[0];
    if (n == s->reported) return W4A8MOE_STATUS_OK;
    int32_t token = s->report[1];
    int32_t slots = n - s->reported;
    s->reported = n;
    RETURN_ERR(err, W4A8MOE_STATUS_INVALID_ARGUMENT,
               "token %d: topk_ids held an id outside [-1, E = %d) or an expert twice in %s (%d "
               "bad slots since the last report, run as -1); hint: pass ids in [-1, E) without "
               "repeats; w4a8moe_layer_check after a forward (or W4A8MOE_CHECK_ROUTING=1) "
               "reports them at once",
               token, d->num_experts, when, slots);
}

/* Whether st is capturing a CUDA graph (then nothing may wait on it). */
static w4a8moe_status stream_capturing(cudaStream_t st, int *capturing, w4a8moe_err *err)
{
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CUDA_TRY(err, cudaStreamIsCapturing(st, &cs));
    *capturing = cs != cudaStreamCaptureStatusNone;
    return W4A8MOE_STATUS_OK;
}

/* W4A8MOE_CHECK_ROUTING=1: wait for this forward's count (a sync) and fail it if it had bad ids. */
static w4a8moe_status check_routing(local_state *s, const w4a8moe_layer_desc *d, cudaStream_t st,
                                    w4a8moe_err *err)
{
    int capturing = 0;
    FORWARD(stream_capturing(st, &capturing, err));
    if (capturing) return W4A8MOE_STATUS_OK; /* no sync inside a graph */
    CUDA_TRY(err, cudaStreamSynchronize(st));
    return report_routing(s, d, "this forward (it stopped after routing)", err);
}

/* w4a8moe_layer_check: wait for the stream's work (unless it is capturing), then report. */
static w4a8moe_status cuda_local_check(const w4a8moe_stage_ctx *ctx, void *state, void *stream,
                                       w4a8moe_err *err)
{
    local_state *s = (local_state *)state;
    cudaStream_t st = (cudaStream_t)stream;
    int capturing = 0;
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    FORWARD(stream_capturing(st, &capturing, err));
    if (!capturing) CUDA_TRY(err, cudaStreamSynchronize(st));
    return report_routing(s, ctx->desc, "a forward on this layer", err);
}

static w4a8moe_status cuda_local_prepare(const w4a8moe_stage_ctx *ctx, void *state, int64_t T,
                                         const void *x, const w4a8moe_routing_input *routing,
                                         void *workspace, w4a8moe_dispatch *dp, void *stream,
                                         w4a8moe_err *err)
{
    local_state *s = (local_state *)state;
    const w4a8moe_layer_desc *d = ctx->desc;
    cudaStream_t st = (cudaStream_t)stream;
    const int pdl = w4a8moe_cuda_pdl(ctx->dev);
    int k = d->top_k, nl = ctx->num_local;
    int64_t H = d->hidden, pairs = T * k, chunks = local_chunks(pairs);
    FORWARD(report_routing(s, d, "an earlier forward on this layer; this forward did not run", err));
    FORWARD(w4a8moe_cuda_use(ctx->dev, err));
    w4a8moe_dispatch_carve(d, nl, workspace, dp);
    dp->T = T;
    dp->plan.written = 0; /* the experts' tile list: only the decode kernel writes it */
    dp->plan.quantised_first = 0;
    dp->x = x; /* unquantised (ACT_BF16) experts read the caller's rows, as on the host */
    local_extra ex;
    local_extra_layout(ctx, (char *)workspace + w4a8moe_dispatch_bytes(d, nl), &ex);

    const int32_t *ids = routing->topk_ids;
    const float *wts = routing->topk_weights;
    if (!ids) {
        route_params rp = {(int)d->routing.kind, d->num_experts, k, d->routing.renormalize,
                           d->routing.n_group, d->routing.topk_group,
                           d->routing.routed_scaling_factor, s->bias};
        CUDA_LAUNCH(err, "route_kernel",
                    w4a8moe_launch(route_kernel, dim3((unsigned)w4a8moe_cdiv(T, 4)), dim3(128), 0, st,
                                   pdl, rp, T, routing->router_logits, ex.ids, ex.wts));
        ids = ex.ids;
        wts = ex.wts;
    }
    dp->topk_ids = ids; /* written before this prepare's own kernels (cuda_sm90's GEMM1 reads them
                         * before its PDL wait at decode: kernels/sm90_mma_decode.cuh) */
    pair_map m = {ids, T, k, d->num_experts, ctx->expert_begin, nl, ctx->token_base};
    float static_scale = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_in : 0.0f;
    if (pairs <= DISPATCH_CHUNK && nl <= LOCAL_DECODE_MAX_EXPERTS && s->decode_kernel) {
        /* decode: sort and quantisation in one launch (one block a token, each sorting all
         * pairs), and the experts' tile list where they asked for one */
        const w4a8moe_tile_plan *pl = &dp->plan;
        dispatch_tiles tl = {0, NULL, NULL, NULL, 0};
        if (pl->rows_a_tile > 0 && pl->tiles && pl->ntiles)
            tl = {pl->rows_a_tile, (int2 *)pl->tiles, pl->ntiles, pl->zero, pl->zero ? pl->nzero : 0};
        /* a one-token forward quantised first, where the experts asked (backend.h) */
        const int qfirst = pl->quant_first && T == 1 && H <= DECODE_TOKEN_MAX;
        if (qfirst)
            CUDA_LAUNCH(err, "dispatch_quant_first_kernel",
                        w4a8moe_launch(dispatch_quant_first_kernel, dim3(1), dim3(DISPATCH_CHUNK), 0, st, pdl, m, wts,
                                       d->router_weight_on_input, x, (int)d->io_dtype, H, static_scale, dp->a_q,
                                       dp->a_scale));
        CUDA_LAUNCH(err, "dispatch_decode_kernel",
                    w4a8moe_launch(dispatch_decode_kernel, dim3((unsigned)T), dim3(DISPATCH_CHUNK),
                                   (size_t)nl * 4, st, pdl, m, ex.err, s->report_dev,
                                   dp->expert_offsets, wts, d->router_weight_on_input, dp->pair_row,
                                   dp->row_token, dp->pair_weight, x, (int)d->io_dtype, H,
                                   static_scale, dp->a_q, dp->a_scale, tl, qfirst));
        dp->plan.written = tl.bt > 0;
        dp->plan.quantised_first = qfirst;
        if (s->check_routing && routing->topk_ids) FORWARD(check_routing(s, d, st, err));
        return W4A8MOE_STATUS_OK;
    }
    if (pairs <= DISPATCH_CHUNK) { /* one kernel instead of three and three memsets */
        CUDA_LAUNCH(err, "dispatch_small_kernel",
                    w4a8moe_launch(dispatch_small_kernel, dim3(1), dim3(DISPATCH_CHUNK), 0, st, pdl,
                                   m, ex.counts, ex.err, s->report_dev, dp->expert_offsets, wts,
                                   d->router_weight_on_input, dp->pair_row, dp->row_token,
                                   dp->pair_weight));
        if (s->check_routing && routing->topk_ids) FORWARD(check_routing(s, d, st, err));
    } else {
        CUDA_TRY(err, cudaMemsetAsync(ex.counts, 0, (size_t)chunks * nl * 4, st));
        CUDA_TRY(err, cudaMemsetAsync(ex.err, 0, 4, st));
        CUDA_TRY(err, cudaMemsetAsync(ex.err + 1, 0x7f, 4, st)); /* 0x7f7f7f7f: "no bad token" */
        CUDA_LAUNCH(err, "dispatch_count_kernel",
                    w4a8moe_launch(dispatch_count_kernel, dim3((unsigned)chunks), dim3(DISPATCH_CHUNK),
                                   0, st, pdl, m, ex.counts, ex.err));
        CUDA_LAUNCH(err, "dispatch_scan_kernel",
                    w4a8moe_launch(dispatch_scan_kernel, dim3(1), dim3(1024), 0, st, pdl, ex.counts,
                                   (int)chunks, nl, dp->expert_offsets, ex.err, s->report_dev));
        if (s->check_routing && routing->topk_ids) FORWARD(check_routing(s, d, st, err));
        CUDA_LAUNCH(err, "dispatch_assign_kernel",
                    w4a8moe_launch(dispatch_assign_kernel, dim3((unsigned)chunks), dim3(DISPATCH_CHUNK),
                                   0, st, pdl, m, ex.counts, wts, d->router_weight_on_input,
                                   dp->pair_row, dp->row_token, dp->pair_weight));
    }
    CUDA_LAUNCH(err, "dispatch_quant_kernel",
                w4a8moe_launch(dispatch_quant_kernel, dim3((unsigned)T), dim3(256), 0, st, pdl, x,
                               (int)d->io_dtype, H, k, dp->pair_row, wts,
                               d->router_weight_on_input, static_scale, dp->a_q, dp->a_scale));
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status cuda_local_finalize(const w4a8moe_stage_ctx *ctx, void *state,
                                          const w4a8moe_dispatch *dp, const w4a8moe_dispatch *shared,
                                          void *out, void *stream, w4a8moe_err *err)
{
    (void)state;
    const w4a8moe_layer_desc *d = ctx->desc;
    int64_t H = d->hidden;
    if (dp->T == 0) return W4A8MOE_STATUS_OK;
    dim3 grid((unsigned)dp->T, (unsigned)w4a8moe_cdiv(H, 256));
    CUDA_LAUNCH(err, "dispatch_combine_kernel",
                w4a8moe_launch(dispatch_combine_kernel, grid, dim3(256), 0, (cudaStream_t)stream,
                               w4a8moe_cuda_pdl(ctx->dev), H, d->top_k, dp->pair_row,
                               dp->pair_weight, dp->y_rows,
                               shared ? shared->pair_row : NULL,
                               shared ? shared->pair_weight : NULL,
                               shared ? shared->y_rows : NULL, (int)d->io_dtype, out));
    return W4A8MOE_STATUS_OK;
}

extern "C" const w4a8moe_prepfin_ops w4a8moe_cuda_local_prepfin = {
    "local",
    W4A8MOE_BACKEND_API,
    W4A8MOE_DEVICE_CUDA,
    W4A8MOE_LAYOUT_CONTIGUOUS,
    cuda_local_supports_parallel,
    cuda_local_workspace_size,
    cuda_local_create,
    cuda_local_free,
    cuda_local_prepare,
    cuda_local_finalize,
    cuda_local_check,
};
