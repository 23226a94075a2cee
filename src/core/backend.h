/*
 * backend.h — THE two backend vtables, and the data that flows between the stages.
 *
 * A layer is a modular kernel: prepare/finalize × experts.
 *
 *   forward:  x, routing ──prepare──► dispatch (a_q rows grouped by expert, scales, maps)
 *                        ──experts──► y_rows (one f32 output row per routed pair)
 *                        ──finalize─► out (weighted combine, one rounding to the I/O dtype)
 *
 * Backends plug in by filling a w4a8moe_experts_ops or w4a8moe_prepfin_ops and adding it to
 * registry.c (the only file that names them). Optional members may be NULL: a NULL predicate
 * means "supports everything on this axis". ops->api_version must equal W4A8MOE_BACKEND_API.
 *
 * Memory: everything a stage receives lives on the layer's device (host for CPU layers). The
 * modular kernel allocates each stage's declared workspace once, at create, through the
 * device's w4a8moe_device_ops, or (ctx.external_workspace) the layer carves it from a
 * w4a8moe_workspace shared with other layers; nothing is allocated per forward. A stage sizes
 * its workspace and lays it out from ctx->desc->max_tokens alone, always the same way, so
 * that size is all a shared workspace needs to know (it is the chunk size there).
 */
#ifndef W4A8MOE_BACKEND_H
#define W4A8MOE_BACKEND_H

#include "../common/error.h"
#include "w4a8moe.h"

#include <stddef.h>
#include <stdint.h>

#define W4A8MOE_BACKEND_API 1
#define W4A8MOE_WHY_CAP 256

/* What the device predicates look at. Filled by the device's query(), or by hand in tests. */
typedef struct w4a8moe_device_info {
    w4a8moe_device_kind kind;
    int32_t ordinal;
    /* CPU */
    int32_t cpu_x86_64, cpu_avx2, cpu_fma, cpu_avx512f, cpu_avx512bw;
    int32_t cpu_threads;
    /* CUDA */
    int32_t cuda_sm;       /* 10*major + minor, e.g. 89, 90; 0 when unknown */
    int32_t cuda_sm_count;
    int64_t cuda_mem_bytes;
    char name[64];
    int32_t cpu_avx512vnni; /* CPU: AVX512_VNNI + AVX512VL (vpdpwssd on 256-bit registers) */
} w4a8moe_device_info;

/* Per-device services the modular kernel needs (the core never calls CUDA itself). */
typedef struct w4a8moe_device_ops {
    w4a8moe_device_kind kind;
    w4a8moe_status (*query)(int32_t ordinal, w4a8moe_device_info *info, w4a8moe_err *err);
    w4a8moe_status (*alloc)(const w4a8moe_device_info *dev, size_t bytes, void **ptr,
                            w4a8moe_err *err);
    void (*release)(const w4a8moe_device_info *dev, void *ptr);
    /* Optional (NULL on devices without a per-thread current device): the calling thread's
     * current device (-1 when unknown), and making one current again. The public entry points
     * (src/core/layer.c) save it before and restore it after every call that may switch
     * devices, so the backends may switch freely and the caller's current CUDA device never
     * changes under it. */
    int (*current)(void);
    void (*make_current)(int ordinal);
} w4a8moe_device_ops;

/* Activation layouts between prepare and experts. */
typedef enum w4a8moe_layout {
    W4A8MOE_LAYOUT_CONTIGUOUS = 0, /* rows grouped by expert, offsets per expert (prefill) */
    W4A8MOE_LAYOUT_BATCHED = 1,    /* [E_local, max_tokens, H] + counts (decode, graphs) */
} w4a8moe_layout;

/* The predicate axes, in the order the oracle asks them. */
typedef enum w4a8moe_axis {
    W4A8MOE_AXIS_DEVICE = 0,
    W4A8MOE_AXIS_QUANT = 1,
    W4A8MOE_AXIS_ACTIVATION = 2,
    W4A8MOE_AXIS_PARALLEL = 3,
    W4A8MOE_AXIS_SHAPE = 4,
    W4A8MOE_AXIS_COUNT_
} w4a8moe_axis;

/* Logical weights after create's validation: one entry per local expert, stacked input split. */
typedef struct w4a8moe_logical_weights {
    w4a8moe_dtype scale_dtype;                /* of every .scale below */
    int32_t expert_begin;                     /* first global expert id owned */
    int32_t num_local;                        /* E_local */
    const w4a8moe_expert_weights *experts;    /* [E_local], each matrix shape-checked */
    /* weight_scheme BF16 (shared experts): [3 * E_local] gate, up, down per expert, shape-
     * checked; experts is NULL then. Backends without a supports_quant predicate never see
     * a scheme other than INT4_GROUP (the oracle rejects them). */
    const w4a8moe_dense_matrix *dense;
} w4a8moe_logical_weights;

/* A scale element widened to f32 (exact for bf16/f16). */
static inline float w4a8moe_scale_get(const void *scale, w4a8moe_dtype dt, int64_t i);

/* What a stage knows about the layer it serves. */
typedef struct w4a8moe_stage_ctx {
    const w4a8moe_layer_desc *desc;
    const w4a8moe_device_info *dev;
    int32_t expert_begin; /* local experts are [expert_begin, expert_begin + num_local) */
    int32_t num_local;
    int32_t num_threads;  /* CPU stages: worker threads to use (>= 1) */
    int32_t borrow_weights; /* pack_weights may keep pointers into the caller's weights */
    /* 1: the layer works in a shared w4a8moe_workspace and carves both stages' workspaces
     * from it (src/core/layer_memory.c); the modular kernel allocates none of its own */
    int32_t external_workspace;
    /* the caller's token that this forward's token 0 is (a chunk's offset when the layer splits
     * a batch; 0 otherwise): device-side routing errors name the token of the caller's batch */
    int64_t token_base;
} w4a8moe_stage_ctx;

/* The routed experts this rank owns: E / ep_size of them from ep_rank's share on (the
 * description is validated: ep_size divides E). */
static inline void w4a8moe_stage_ctx_set_local(w4a8moe_stage_ctx *ctx, const w4a8moe_layer_desc *d)
{
    ctx->num_local = d->num_experts / d->ep_size;
    ctx->expert_begin = d->ep_rank * ctx->num_local;
}

/*
 * A tile list the experts may ask the prepare to write beside the dispatch (experts op
 * plan_tiles, before the prepare), so that their first kernel needs no schedule kernel of its
 * own: tiles[i] = (local expert, first row) for ceil(rows / rows_a_tile) tiles per expert, experts
 * ascending; *ntiles their count; zero[0, nzero) set to 0 (the experts' accumulators). rows_a_tile
 * 0: nothing asked. `written` is set by a prepare that wrote them (the CUDA local prepare's
 * one-launch decode kernel); a prepare that did not leaves it 0 and the experts schedule as
 * before. Device pointers into the experts' workspace.
 * quant_first (asked, one-token forwards): the token quantised into a_q and a_scale by a kernel
 * of its own before the one that sorts the pairs, so that the experts' first kernel, two launches
 * after it, may read them before its PDL wait (src/cuda/kernels/pdl.cuh); `quantised_first` is
 * set by a prepare that did so.
 */
typedef struct w4a8moe_tile_plan {
    int32_t rows_a_tile;
    int32_t written;
    int32_t *tiles; /* [2 * bound] int32 pairs */
    int32_t *ntiles;
    uint32_t *zero;
    int64_t nzero;
    int32_t quant_first;
    int32_t quantised_first;
} w4a8moe_tile_plan;

/*
 * Contiguous dispatch: what prepare fills and experts and finalize read. Sizes use R = T*k (an
 * upper bound on the routed rows that needs no host synchronisation to know).
 *   a_q            [R, H] e4m3   quantised input rows, grouped by local expert
 *   a_scale        [R] f32       the row's activation scale s_t (static: act_scale_in)
 *   expert_offsets [E_local+1]   int32, rows of local expert e are [off[e], off[e+1])
 *   row_token      [R] int32     token of each row
 *   pair_row       [T, k] int32  row of pair (t, j), or -1 (no expert / not local)
 *   pair_weight    [T, k] f32    combine weight of pair (t, j) (1 when applied on the input)
 *   y_rows         [R, H] f32    experts' output rows (before the combine weight)
 * The pointers point into the prepare/finalize workspace; a_q rows are 16-byte aligned when H
 * is a multiple of 16. expert_offsets lives on the layer's device; CPU stages read it directly.
 */
typedef struct w4a8moe_dispatch {
    int64_t T;
    uint8_t *a_q;
    float *a_scale;
    int32_t *expert_offsets;
    int32_t *row_token;
    int32_t *pair_row;
    float *pair_weight;
    float *y_rows;
    const void *x; /* the caller's x [T, H] in io_dtype (what ACT_BF16 experts read) */
    w4a8moe_tile_plan plan; /* set before the prepare (plan_tiles); the prepare sets .written */
    /* the routing ids [T, k] the pairs came from (the caller's or the router's), where the
     * prepare lets the experts read them, in the prepare's memory space; else NULL */
    const int32_t *topk_ids;
} w4a8moe_dispatch;

typedef struct w4a8moe_experts_ops {
    const char *name;
    int32_t api_version;
    w4a8moe_device_kind device_kind;
    w4a8moe_layout layout;
    /* Predicates: return 1 when supported; otherwise write a one-line reason into why. */
    int (*supports_device)(const w4a8moe_device_info *dev, char *why, size_t cap);
    int (*supports_quant)(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap);
    int (*supports_activation)(w4a8moe_activation act, char *why, size_t cap);
    int (*supports_parallel)(int32_t ep_rank, int32_t ep_size, char *why, size_t cap);
    int (*supports_shape)(const w4a8moe_layer_desc *d, char *why, size_t cap);
    /* Bytes of scratch that run() needs for d->max_tokens tokens (may be 0). */
    size_t (*workspace_size)(const w4a8moe_stage_ctx *ctx);
    /* Converts the logical weights into the backend's layout, once; *state owns the result. */
    w4a8moe_status (*pack_weights)(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                   void **state, w4a8moe_err *err);
    void (*free_state)(void *state);
    /* y_rows = experts(a_q) for every row of every local expert (contract steps 3-6). */
    w4a8moe_status (*run)(const w4a8moe_stage_ctx *ctx, void *state,
                          const w4a8moe_dispatch *dispatch, void *workspace, void *stream,
                          w4a8moe_err *err);
    /* Optional (NULL: none): the tile list a forward of T tokens asks the prepare for (see
     * w4a8moe_tile_plan); called before each prepare with plan zeroed. */
    void (*plan_tiles)(const w4a8moe_stage_ctx *ctx, void *state, int64_t T, void *workspace,
                       w4a8moe_tile_plan *plan);
    /* Optional (NULL: one path for every batch): one line, for explain, on the kernels a forward
     * of T tokens runs and why, from the layer's shape alone (no weights, no device). Returns 1,
     * or 2 when every larger T takes the same path. */
    int (*describe_batch)(const w4a8moe_stage_ctx *ctx, int64_t T, char *buf, size_t cap);
} w4a8moe_experts_ops;

typedef struct w4a8moe_prepfin_ops {
    const char *name;
    int32_t api_version;
    w4a8moe_device_kind device_kind;
    w4a8moe_layout layout;
    int (*supports_parallel)(int32_t ep_rank, int32_t ep_size, char *why, size_t cap);
    size_t (*workspace_size)(const w4a8moe_stage_ctx *ctx);
    /* Optional per-layer state (router bias copies, communicators...). */
    w4a8moe_status (*create)(const w4a8moe_stage_ctx *ctx, void **state, w4a8moe_err *err);
    void (*free_state)(void *state);
    /* Steps 1-2 and dispatch: routing (ids or logits) → quantised, grouped rows. */
    w4a8moe_status (*prepare)(const w4a8moe_stage_ctx *ctx, void *state, int64_t T,
                              const void *x, const w4a8moe_routing_input *routing,
                              void *workspace, w4a8moe_dispatch *dispatch, void *stream,
                              w4a8moe_err *err);
    /* Step 7: out[t] = sum_j pair_weight * y_rows[pair_row] (j ascending) + the shared
     * expert's term, all in f32, one rounding to the I/O dtype. shared (may be NULL) is the
     * dispatch of a shared-expert pipeline run with k = 1: its pair_row [T] / pair_weight [T]
     * (the gate, or 1) select its y_rows. */
    w4a8moe_status (*finalize)(const w4a8moe_stage_ctx *ctx, void *state,
                               const w4a8moe_dispatch *dispatch, const w4a8moe_dispatch *shared,
                               void *out, void *stream, w4a8moe_err *err);
    /* Optional (NULL: nothing deferred): w4a8moe_layer_check. Waits for the work queued on
     * stream, then reports, once, an error the device recorded in earlier forwards (CUDA: bad
     * caller-given ids, which a device cannot refuse without a host synchronisation). */
    w4a8moe_status (*check)(const w4a8moe_stage_ctx *ctx, void *state, void *stream,
                            w4a8moe_err *err);
} w4a8moe_prepfin_ops;

/* registry.c: the static tables, in priority order (fastest first, cpu_ref last). */
const w4a8moe_experts_ops *const *w4a8moe_registry_experts(size_t *count);
const w4a8moe_prepfin_ops *const *w4a8moe_registry_prepfin(size_t *count);
const w4a8moe_device_ops *w4a8moe_registry_device(w4a8moe_device_kind kind);
const w4a8moe_experts_ops *w4a8moe_registry_find_experts(const char *name);

/* ---- inline helpers shared by backends ---- */
#include "../common/quant.h"

static inline float w4a8moe_scale_get(const void *scale, w4a8moe_dtype dt, int64_t i)
{
    switch (dt) {
    case W4A8MOE_DTYPE_BF16: return w4a8moe_bf16_to_f32(((const uint16_t *)scale)[i]);
    case W4A8MOE_DTYPE_F16: return w4a8moe_f16_to_f32(((const uint16_t *)scale)[i]);
    default: return ((const float *)scale)[i];
    }
}

/* Element i of an I/O tensor widened to f32. */
static inline float w4a8moe_io_get(const void *x, w4a8moe_dtype dt, int64_t i)
{
    return w4a8moe_scale_get(x, dt, i);
}

/* Stores v into element i of an I/O tensor with one rounding (nearest even). */
static inline void w4a8moe_io_put(void *x, w4a8moe_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case W4A8MOE_DTYPE_BF16: ((uint16_t *)x)[i] = w4a8moe_f32_to_bf16(v); break;
    case W4A8MOE_DTYPE_F16: ((uint16_t *)x)[i] = w4a8moe_f32_to_f16(v); break;
    default: ((float *)x)[i] = v; break;
    }
}

static inline size_t w4a8moe_dtype_size(w4a8moe_dtype dt) { return dt == W4A8MOE_DTYPE_F32 ? 4 : 2; }

/* Bytes of each dispatch array for T = max_tokens, rounded up to 64-byte alignment, in the
 * order the local prepare/finalize lays them out; shared so every prepare agrees. */
size_t w4a8moe_dispatch_bytes(const w4a8moe_layer_desc *d, int32_t num_local);
void w4a8moe_dispatch_carve(const w4a8moe_layer_desc *d, int32_t num_local, void *base,
                            w4a8moe_dispatch *out);

/* The gated activation of contract step 4, in f32. */
float w4a8moe_activate(w4a8moe_activation act, float gate, float up);

/* cpu_ref's dot of contract steps 3 and 6 (src/cpu/cpu_ref_experts.c): output channel n of an
 * int4 matrix against e4m3 input a[K], C[n] * sum_b S[n,b] * sum_{k in b} q[n,k] * a[k] in f64,
 * without the input scale. Also the GPU tests' host replica of the reference
 * (tests/gpu/flip_explain.h). */
double w4a8moe_ref_dot(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g, int64_t n,
                       const uint8_t *a);

#endif /* W4A8MOE_BACKEND_H */
