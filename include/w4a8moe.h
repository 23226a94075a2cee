/*
 * w4a8moe.h — the public C API of w4a8moe.
 *
 * w4a8moe runs the Mixture-of-Experts layer of a large language model with 4-bit integer
 * weights (group-wise scales) and FP8 e4m3 activations (per-token dynamic or per-tensor
 * static scales): "W4A8". The numerics are fixed by the contract in docs/numerics.md; every
 * backend honours it.
 *
 * Letters used everywhere: T tokens, H hidden size, I intermediate size per expert (gate+up is
 * 2I), E routed experts (global), k top-k, g group size along the reduction dimension.
 *
 * Simple use:
 *
 *     w4a8moe_layer_desc d;
 *     w4a8moe_layer_desc_init(&d);              // defaults: silu, dynamic per-token, bf16 I/O
 *     d.max_tokens = 128; d.hidden = 2048; d.inter = 768;
 *     d.num_experts = 128; d.top_k = 8; d.group_size = 128;
 *     w4a8moe_weights w = { ... };              // checkpoint-form host pointers, see below
 *     w4a8moe_layer *layer;
 *     if (w4a8moe_layer_create(&d, &w, NULL, &layer) != W4A8MOE_STATUS_OK)
 *         fprintf(stderr, "%s\n", w4a8moe_last_error());
 *     w4a8moe_routing_input r = { .topk_ids = ids, .topk_weights = wts };
 *     w4a8moe_layer_forward(layer, T, x, &r, out, NULL);
 *     w4a8moe_layer_free(layer);
 *
 * Thread safety: distinct layers may be used from distinct threads. One layer must not run two
 * forwards at once (it owns one workspace). Layers that share a w4a8moe_workspace (see
 * "Workspaces" below) must run one forward at a time among them all: from one thread and, on
 * a CUDA device, on one stream (or with the caller ordering the streams). CPU layers share one set of worker threads, so the
 * experts stages of CPU forwards from different threads take turns (each already uses every
 * core it was given). Error messages are per layer, and per thread for calls that have no layer
 * (create, explain, loader).
 *
 * ABI: structs passed in are read at the call and never kept (create copies what it needs, the
 * weights included, unless a function says otherwise). New members are only ever appended, and
 * W4A8MOE_API_VERSION grows when they are. So that a program and a library built from different
 * versions of this header agree, every struct that can grow (w4a8moe_layer_desc,
 * w4a8moe_weights, w4a8moe_shared_expert, w4a8moe_layer_options, w4a8moe_routing_input,
 * w4a8moe_checkpoint_info, w4a8moe_memory_info) begins with `size_t struct_size`, the sizeof the caller compiled:
 *   - struct_size 0 means the layout of API version 3 (the first with this member), so `= {0}`
 *     and designated initialisers keep working; set it (sizeof, or W4A8MOE_INIT) to use a
 *     member added later;
 *   - a library newer than the caller reads only the caller's bytes; the members it has beyond
 *     them read as 0, and a member's 0 always means the behaviour from before it existed;
 *   - a library older than the caller accepts members it does not know only when they are 0,
 *     and returns UNSUPPORTED naming the struct otherwise.
 * Functions that fill a struct (w4a8moe_layer_desc_init, w4a8moe_model_layer_desc,
 * w4a8moe_checkpoint_get_info, w4a8moe_checkpoint_layer_desc, the w4a8moe_*_memory ones) are inline wrappers here that
 * pass the caller's sizeof to a *_sized entry point, which writes no more than that and sets
 * struct_size. Structs held by value or in
 * arrays (w4a8moe_routing_desc, w4a8moe_int4_matrix, w4a8moe_expert_weights,
 * w4a8moe_dense_matrix) never change; what they would need goes into the struct holding them.
 */
#ifndef W4A8MOE_H
#define W4A8MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only what this header declares leaves libw4a8moe.so: the library is compiled with
 * -fvisibility=hidden and linked with an export list (src/exports.map), so internal functions
 * can change freely; this pragma marks the declarations below as the visible ones. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The one place versions live: the Makefile (library file names, w4a8moe.pc) and the Python
 * package (pyproject.toml, through setup.py) read them from here. W4A8MOE_SOVERSION, the
 * shared library's soname number (libw4a8moe.so.N), grows when a change breaks programs built
 * against an earlier header: 1 since API version 3 put struct_size in front of the structs. */
#define W4A8MOE_API_VERSION 4
#define W4A8MOE_SOVERSION 1
#define W4A8MOE_VERSION_STRING "0.2.0"

/* `T x = W4A8MOE_INIT(T);` for a growable struct: zero but for struct_size = sizeof(T)
 * (designated in C, which -Wmissing-field-initializers accepts; positional in C++ < 20). */
#ifdef __cplusplus
#define W4A8MOE_INIT(T) {sizeof(T)}
#else
#define W4A8MOE_INIT(T) {.struct_size = sizeof(T)}
#endif

/* ---------------------------------------------------------------------------------------------
 * Status codes. The numbers are stable: never renumber, only append.
 * ------------------------------------------------------------------------------------------- */
typedef enum w4a8moe_status {
    W4A8MOE_STATUS_OK = 0,
    W4A8MOE_STATUS_INVALID_ARGUMENT = 1, /* a caller's value is out of range or inconsistent */
    W4A8MOE_STATUS_UNSUPPORTED = 2,      /* valid, but no backend (or the forced one) runs it */
    W4A8MOE_STATUS_OUT_OF_MEMORY = 3,    /* host or device allocation failed */
    W4A8MOE_STATUS_IO_ERROR = 4,         /* a file could not be opened, read, mapped or written */
    W4A8MOE_STATUS_FORMAT_ERROR = 5,     /* a file's content breaks its format's rules */
    W4A8MOE_STATUS_NOT_FOUND = 6,        /* a named tensor, layer, backend or file is absent */
    W4A8MOE_STATUS_DEVICE_ERROR = 7,     /* the CUDA runtime reported an error */
    W4A8MOE_STATUS_INTERNAL = 8,         /* a bug in w4a8moe: please report it */
    W4A8MOE_STATUS_COUNT_
} w4a8moe_status;

/* A static English name for a status ("invalid argument"); never NULL. */
const char *w4a8moe_status_str(w4a8moe_status status);

/* The last error of this thread for calls without a layer (create, explain, loader functions):
 * "what: where (file:line): hint: ...". Empty string when none. Valid until the thread's next
 * call into w4a8moe. */
const char *w4a8moe_last_error(void);

/* The library's version string, e.g. "0.2.0". */
const char *w4a8moe_version(void);

/* ---------------------------------------------------------------------------------------------
 * Enumerations. Numbers are stable.
 * ------------------------------------------------------------------------------------------- */
typedef enum w4a8moe_dtype {
    W4A8MOE_DTYPE_BF16 = 0,
    W4A8MOE_DTYPE_F16 = 1,
    W4A8MOE_DTYPE_F32 = 2,
    W4A8MOE_DTYPE_COUNT_
} w4a8moe_dtype;

/* Gated activation applied between the two GEMMs: y[i] = act(gate[i]) * up[i]. */
typedef enum w4a8moe_activation {
    W4A8MOE_ACTIVATION_SILU = 0,      /* v / (1 + exp(-v)) */
    W4A8MOE_ACTIVATION_GELU_TANH = 1, /* 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))) */
    W4A8MOE_ACTIVATION_COUNT_
} w4a8moe_activation;

/* The weight key of the quantisation scheme pair. */
typedef enum w4a8moe_weight_scheme {
    W4A8MOE_WEIGHT_INT4_GROUP = 0, /* symmetric int4, one scale per g inputs (+ channel scale) */
    W4A8MOE_WEIGHT_BF16 = 1,       /* unquantised (bf16/f16/f32 widened to f32): shared experts
                                      only, paired with W4A8MOE_ACT_BF16 */
    W4A8MOE_WEIGHT_SCHEME_COUNT_
} w4a8moe_weight_scheme;

/* The activation key of the quantisation scheme pair. */
typedef enum w4a8moe_act_scheme {
    W4A8MOE_ACT_FP8_TOKEN_DYNAMIC = 0, /* e4m3, s_t = max(amax(x[t]) / 448, 1/(448*512)) */
    W4A8MOE_ACT_FP8_TENSOR_STATIC = 1, /* e4m3, one fixed scale per GEMM input (act_scale_*) */
    W4A8MOE_ACT_BF16 = 2,              /* not quantised: x as given widened to f32, y kept in f32
                                          (pairs with W4A8MOE_WEIGHT_BF16) */
    W4A8MOE_ACT_SCHEME_COUNT_
} w4a8moe_act_scheme;

/* How router logits become (expert id, weight) pairs; see docs/numerics.md "Routing". */
typedef enum w4a8moe_routing {
    W4A8MOE_ROUTING_SOFTMAX_TOPK = 0,         /* softmax over E, top-k, optional renormalise */
    W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK = 1, /* DeepSeek-V3 noaux_tc */
    W4A8MOE_ROUTING_SIGMOID_TOP1 = 2,         /* Llama-4: top-1 by logit, sigmoid weight */
    W4A8MOE_ROUTING_COUNT_
} w4a8moe_routing;

/* Where a layer's inputs and outputs live. */
typedef enum w4a8moe_device_kind {
    W4A8MOE_DEVICE_CPU = 0,  /* host pointers; stream ignored */
    W4A8MOE_DEVICE_CUDA = 1, /* device pointers on device_ordinal; stream is a cudaStream_t */
    W4A8MOE_DEVICE_KIND_COUNT_
} w4a8moe_device_kind;

/* ---------------------------------------------------------------------------------------------
 * Layer description.
 * ------------------------------------------------------------------------------------------- */
typedef struct w4a8moe_routing_desc {
    w4a8moe_routing kind;
    int32_t renormalize;          /* softmax_topk / grouped: renormalise the k weights to sum 1 */
    int32_t n_group;              /* grouped: number of expert groups (divides E) */
    int32_t topk_group;           /* grouped: groups kept */
    float routed_scaling_factor;  /* grouped: multiplies the final weights (1 = none) */
    const float *score_bias;      /* grouped: [E] e_score_correction_bias, or NULL (copied) */
} w4a8moe_routing_desc;

typedef struct w4a8moe_layer_desc {
    size_t struct_size;                /* sizeof(w4a8moe_layer_desc), or 0 (see "ABI" above) */
    int64_t max_tokens;                /* T max per forward (sizes the workspace) */
    int64_t hidden;                    /* H: multiple of g */
    int64_t inter;                     /* I: multiple of g */
    int32_t num_experts;               /* E: routed experts, global */
    int32_t top_k;                     /* k */
    int32_t group_size;                /* g: 32, 64 or 128 */
    w4a8moe_activation activation;
    w4a8moe_weight_scheme weight_scheme;
    w4a8moe_act_scheme act_scheme;
    float act_scale_in;                /* static scheme: GEMM1 input scale (max over experts) */
    float act_scale_mid;               /* static scheme: GEMM2 input scale (max over experts) */
    w4a8moe_dtype io_dtype;            /* dtype of x and out */
    w4a8moe_routing_desc routing;      /* used when forward is given router logits */
    int32_t router_weight_on_input;    /* k == 1 only: x *= w_0 before quantising (Llama-4) */
    int32_t ep_rank;                   /* expert parallelism: this rank, 0 <= rank < size */
    int32_t ep_size;                   /* ranks; experts [rank*E/size, (rank+1)*E/size) owned.
                                          No backend of this version runs ep_size > 1 (the
                                          expert-parallel prepare/finalize is not built yet):
                                          create says UNSUPPORTED, explain says why. */
} w4a8moe_layer_desc;

/* Fills d with defaults: silu, int4-group × fp8-token-dynamic, bf16 I/O, softmax top-k without
 * renormalisation, routed_scaling_factor 1, ep 0/1; all sizes 0 (the caller must set them);
 * struct_size = sizeof. The library writes size bytes of d (the caller's sizeof). */
void w4a8moe_layer_desc_init_sized(w4a8moe_layer_desc *d, size_t size);
static inline void w4a8moe_layer_desc_init(w4a8moe_layer_desc *d)
{
    w4a8moe_layer_desc_init_sized(d, sizeof *d);
}

/* ---------------------------------------------------------------------------------------------
 * Weights, in checkpoint form (host pointers; create copies or repacks them).
 *
 * One int4 matrix of logical shape [rows, cols] (rows = output channels N, cols = reduction K):
 *   packed        int32 [rows, cols/8]: element (n, i) is the nibble at bits 4*(i%8) of word
 *                 packed[n*cols/8 + i/8], stored as q + 8 (so q = nibble - 8, q in [-8, 7]);
 *   scale         [rows, cols/g] in w4a8moe_weights.scale_dtype (bf16/f16/f32 widened exactly);
 *   channel_scale f32 [rows], or NULL for all ones.
 * rows and cols state the shape the caller holds; create checks them against the description
 * and names the tensor when they disagree.
 * ------------------------------------------------------------------------------------------- */
typedef struct w4a8moe_int4_matrix {
    const int32_t *packed;
    const void *scale;
    const float *channel_scale;
    int64_t rows;
    int64_t cols;
} w4a8moe_int4_matrix;

/* One expert: gate (w1) [I, H], up (w3) [I, H], down (w2) [H, I]. */
typedef struct w4a8moe_expert_weights {
    w4a8moe_int4_matrix gate;
    w4a8moe_int4_matrix up;
    w4a8moe_int4_matrix down;
} w4a8moe_expert_weights;

/* An unquantised matrix [rows, cols], row-major (rows = output channels N). */
typedef struct w4a8moe_dense_matrix {
    const void *data;
    w4a8moe_dtype dtype;
    int64_t rows;
    int64_t cols;
} w4a8moe_dense_matrix;

/* The shared expert of an MoE block (DeepSeek `shared_experts`, Qwen2-MoE `shared_expert`,
 * Llama-4 `shared_expert`): every token runs it beside its routed experts, contract steps 2-6
 * with its own weights, scales and I, and step 7 adds its output with weight 1, or
 * sigmoid(x . gate_weight) (Qwen2-MoE; dot product accumulated in f32). The routed and shared
 * outputs are summed in f32 and rounded once. Layers with ep_size 1, on the CPU and on CUDA
 * devices (int4 ones on cuda_sm89 / cuda_sm90, unquantised ones on cuda_dense; on CUDA the gate
 * and everything per forward run on the device, so a forward stays capturable in a graph). */
typedef struct w4a8moe_shared_expert {
    size_t struct_size;                  /* sizeof(w4a8moe_shared_expert), or 0 (see "ABI") */
    int64_t inter;                       /* its I */
    w4a8moe_weight_scheme weight_scheme; /* INT4_GROUP, or BF16 (unquantised) */
    w4a8moe_act_scheme act_scheme;       /* INT4_GROUP: FP8_TOKEN_DYNAMIC or FP8_TENSOR_STATIC;
                                            BF16: W4A8MOE_ACT_BF16 */
    int32_t group_size;                  /* INT4_GROUP: its g (32, 64, 128) */
    float act_scale_in, act_scale_mid;   /* FP8_TENSOR_STATIC: its own input scales */
    w4a8moe_dtype scale_dtype;           /* INT4_GROUP: of int4's scales */
    w4a8moe_expert_weights int4;         /* INT4_GROUP: gate [I, H], up [I, H], down [H, I] */
    w4a8moe_dense_matrix gate, up, down; /* BF16: gate [I, H], up [I, H], down [H, I] */
    const void *gate_weight;             /* [H] in gate_weight_dtype, or NULL for weight 1 */
    w4a8moe_dtype gate_weight_dtype;
} w4a8moe_shared_expert;

typedef struct w4a8moe_weights {
    size_t struct_size; /* sizeof(w4a8moe_weights), or 0 (see "ABI" above) */
    w4a8moe_dtype scale_dtype;
    /* Per expert: [E] entries (global ids). Under expert parallelism the entries of experts this
     * rank does not own are ignored and may be zeroed. NULL: use the stacked form below. */
    const w4a8moe_expert_weights *experts;
    /* Stacked: w13 rows [E*2I] (per expert gate rows then up rows) by cols H, i.e. packed
     * [E, 2I, H/8], scale [E, 2I, H/g], channel [E, 2I]; w2 packed [E, H, I/8] etc.
     * rows/cols give the full stacked shape ([E*2I, H] and [E*H, I]). */
    w4a8moe_int4_matrix w13_stacked;
    w4a8moe_int4_matrix w2_stacked;
    /* API version 2: the block's shared expert, or NULL for none. */
    const w4a8moe_shared_expert *shared;
} w4a8moe_weights;

/* ---------------------------------------------------------------------------------------------
 * Layers.
 * ------------------------------------------------------------------------------------------- */
typedef struct w4a8moe_layer w4a8moe_layer;
typedef struct w4a8moe_workspace w4a8moe_workspace; /* see "Workspaces" below */

typedef struct w4a8moe_layer_options {
    size_t struct_size;              /* sizeof(w4a8moe_layer_options), or 0 (see "ABI" above) */
    const char *backend;             /* force an experts backend by name; NULL: the oracle picks,
                                        or the W4A8MOE_BACKEND environment variable forces */
    w4a8moe_device_kind device_kind; /* where x/out/routing live (default CPU) */
    int32_t device_ordinal;          /* CUDA device number */
    int32_t num_threads;             /* CPU backends: 0 = one per online core */
    int32_t borrow_weights;          /* 1: CPU backends may keep pointers into the caller's
                                        weights instead of copying (e.g. an mmap'ed
                                        checkpoint); they must then outlive the layer */
    /* API version 4: a workspace shared with other layers (see "Workspaces" below), or NULL
     * for a workspace of the layer's own, sized for max_tokens (the behaviour before). With
     * one, forwards of more tokens than it holds run in chunks. */
    w4a8moe_workspace *workspace;
} w4a8moe_layer_options;

/* Creates a layer: validates d and w, runs the oracle once (it logs its choice once at the
 * "info" level), packs the weights for the chosen backend and allocates the workspace for
 * d->max_tokens tokens, or, given opts->workspace, works in that one (in chunks of as many
 * tokens as it holds for this layer, at most max_tokens). opts may be NULL. A forced backend that does not fit is an error whose
 * message carries the reason. *out is NULL on failure; see w4a8moe_last_error(). */
w4a8moe_status w4a8moe_layer_create(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                    const w4a8moe_layer_options *opts, w4a8moe_layer **out);

/* Routing input of one forward: either ids+weights, or logits (then the layer's router runs).
 *   topk_ids     int32 [T, k]: expert ids in [-1, E); -1 = no expert; no repeats in a token;
 *   topk_weights f32   [T, k];
 *   router_logits f32  [T, E]: a NaN logit ranks lowest (as -inf), on every device; a token
 *                whose logits are all NaN gets NaN weights (its output row is NaN).
 * Bad topk_ids (outside [-1, E), or an expert repeated in a token) are INVALID_ARGUMENT naming
 * the token: at once on the CPU; on a CUDA device, whose ids cannot be read without a host
 * synchronisation, see w4a8moe_layer_check. */
typedef struct w4a8moe_routing_input {
    size_t struct_size; /* sizeof(w4a8moe_routing_input), or 0 (see "ABI" above) */
    const int32_t *topk_ids;
    const float *topk_weights;
    const float *router_logits;
} w4a8moe_routing_input;

/* out[T, H] = MoE(x[T, H]) in d.io_dtype. T <= max_tokens; T == 0 is a no-op. A layer on a
 * shared workspace runs T in consecutive chunks of at most its chunk size
 * (w4a8moe_layer_memory's chunk_tokens); every token's output is the same as in one forward
 * (bit for bit on the CPU backends: each token's numerics depend on that token alone). Pointers live on
 * the layer's device; stream is a cudaStream_t for CUDA layers (NULL = default stream), ignored
 * on the CPU. A token with NaN or Inf in x gets NaN in its output row (its scale is NaN); other
 * tokens are unaffected. Deterministic: same inputs, same backend → bit-identical out. */
w4a8moe_status w4a8moe_layer_forward(w4a8moe_layer *layer, int64_t T, const void *x,
                                     const w4a8moe_routing_input *routing, void *out,
                                     void *stream);

/* Reports a routing error that a CUDA layer found on the device, once, and clears it.
 *
 * A CUDA layer checks caller-given topk_ids on the device, without synchronising: a bad slot
 * (an id outside [-1, E), or the later of two equal ids in a token) is skipped, as -1, in that
 * forward, and the layer records it in a device-side error word (the count of bad slots and the
 * first bad token of the latest faulty forward). The error comes back as INVALID_ARGUMENT with
 * a message naming that token ("token 5: topk_ids held ..."):
 *   - from w4a8moe_layer_check(layer, stream), which first waits for the work queued on stream
 *     (it does not wait while stream is capturing a CUDA graph; replays of a captured forward
 *     record their errors the same way);
 *   - from the layer's next w4a8moe_layer_forward that starts once the faulty forward has run
 *     on the device (without waiting for it): that call then returns the error and does not
 *     run; call it again to go on.
 * With W4A8MOE_CHECK_ROUTING=1 in the environment at layer creation, every forward given ids
 * waits for its own check (a synchronisation, skipped during graph capture) and fails at once.
 * CPU layers check ids before running; for them this returns OK. stream: as for forward. */
w4a8moe_status w4a8moe_layer_check(w4a8moe_layer *layer, void *stream);

/* The name of the experts backend the oracle chose ("cpu", "cuda_sm89", ...) and of the
 * prepare/finalize stage ("local", ...). Static strings. */
const char *w4a8moe_layer_backend(const w4a8moe_layer *layer);
const char *w4a8moe_layer_prepfin(const w4a8moe_layer *layer);
/* The experts backend of the layer's shared-expert pipeline, or "" when it has none. It is the
 * forced backend when that one accepts the shared expert's scheme, else the oracle's choice
 * (e.g. `cpu` for an unquantised shared expert when the forced backend has no bf16 path;
 * `cuda_dense` for one on a CUDA layer). w4a8moe_explain reports the same choice beforehand. */
const char *w4a8moe_layer_shared_backend(const w4a8moe_layer *layer);

/* The last error of this layer (empty string when none). */
const char *w4a8moe_layer_error(const w4a8moe_layer *layer);

/* Frees a layer and everything it owns. NULL is a no-op. */
void w4a8moe_layer_free(w4a8moe_layer *layer);

/* ---------------------------------------------------------------------------------------------
 * Workspaces (API version 4): one scratch buffer on one device shared by many layers, so a
 * whole model's layers fit one device: each layer alone would hold a workspace for its
 * max_tokens (for DeepSeek-V3 at T = 16384, gigabytes beside its weights). A layer created
 * with options.workspace keeps none of its own; it runs each forward in chunks of the most
 * tokens whose scratch fits the workspace (decided once, at create), and layers of different
 * shapes may share one. Rules:
 *   - the workspace and the layer must be on the same device (INVALID_ARGUMENT otherwise), and
 *     it must hold at least one token's scratch of the layer (INVALID_ARGUMENT saying how many
 *     bytes that is);
 *   - layers sharing it run one forward at a time (one thread; on CUDA one stream, or streams
 *     the caller orders): a forward's scratch is only valid until the next forward of any of
 *     them;
 *   - w4a8moe_workspace_free may come before the layers are freed: the memory goes when the
 *     last of them does.
 * Size it with w4a8moe_memory_estimate (or w4a8moe_checkpoint_memory) for the chunk size
 * wanted: its workspace_bytes for the largest layer.
 * ------------------------------------------------------------------------------------------- */
/* Allocates `bytes` of scratch on device `kind`/`ordinal` (the memory of cudaMalloc, or host
 * memory for W4A8MOE_DEVICE_CPU). *out is NULL on failure; see w4a8moe_last_error(). */
w4a8moe_status w4a8moe_workspace_create(w4a8moe_device_kind kind, int32_t ordinal, size_t bytes,
                                        w4a8moe_workspace **out);

/* Its size in bytes (0 for NULL). */
size_t w4a8moe_workspace_size(const w4a8moe_workspace *ws);

/* Drops the caller's reference; the memory is released once no layer uses it. NULL: no-op. */
void w4a8moe_workspace_free(w4a8moe_workspace *ws);

/* The device memory a layer needs (API version 4). Weights are what its backends keep on the
 * device: int4 codes (half a byte per weight) and scales widened to f32, per-channel scales,
 * the shared expert (unquantised ones in f32); an estimate within a few percent of what the
 * backends allocate, which may pad or lay out differently. Workspace is exact: the scratch one
 * forward of `tokens` tokens needs (both pipelines when there is a shared expert). */
typedef struct w4a8moe_memory_info {
    size_t struct_size;          /* set by the functions that fill it */
    int64_t tokens;              /* the token count asked for (workspace_bytes is for it) */
    int64_t chunk_tokens;        /* w4a8moe_layer_memory: tokens per chunk the layer runs
                                    (its workspace's capacity, at most max_tokens); else tokens */
    uint64_t weight_bytes;       /* routed experts (this rank's) + shared expert */
    uint64_t workspace_bytes;    /* scratch for one forward of `tokens` tokens */
    uint64_t workspace_min_bytes; /* the least workspace the layer runs in (chunks of 1 token) */
} w4a8moe_memory_info;

/* For a description on the device opts selects (may be NULL: the host), with the backend the
 * oracle picks (or opts->backend), before any layer exists: what to size a workspace with.
 * shared (may be NULL) describes the shared expert; only its inter, schemes and group size are
 * read (its pointers may be NULL). tokens >= 1. Writes size bytes of info. */
w4a8moe_status w4a8moe_memory_estimate_sized(const w4a8moe_layer_desc *d,
                                             const w4a8moe_shared_expert *shared,
                                             const w4a8moe_layer_options *opts, int64_t tokens,
                                             w4a8moe_memory_info *info, size_t size);
static inline w4a8moe_status w4a8moe_memory_estimate(const w4a8moe_layer_desc *d,
                                                     const w4a8moe_shared_expert *shared,
                                                     const w4a8moe_layer_options *opts,
                                                     int64_t tokens, w4a8moe_memory_info *info)
{
    return w4a8moe_memory_estimate_sized(d, shared, opts, tokens, info, sizeof *info);
}

/* The same for a created layer, with its backends; tokens 0 means its chunk size. */
w4a8moe_status w4a8moe_layer_memory_sized(const w4a8moe_layer *layer, int64_t tokens,
                                          w4a8moe_memory_info *info, size_t size);
static inline w4a8moe_status w4a8moe_layer_memory(const w4a8moe_layer *layer, int64_t tokens,
                                                  w4a8moe_memory_info *info)
{
    return w4a8moe_layer_memory_sized(layer, tokens, info, sizeof *info);
}

/* Writes a report of every backend for this description: "selected", or the first axis that
 * rejected it (device, quant, activation, parallel, shape) and why, one line each, then the
 * backend a shared expert of such a layer would run on (int4 with the layer's g and activation
 * scheme, and unquantised), into buf (NUL-terminated, truncated to cap). *needed (may be NULL)
 * gets the full length + 1. opts may be NULL. Returns OK even when nothing is selected (the
 * report says so). */
w4a8moe_status w4a8moe_explain(const w4a8moe_layer_desc *d, const w4a8moe_layer_options *opts,
                               char *buf, size_t cap, size_t *needed);

/* Standalone router (host memory): logits f32 [T, E] → ids int32 [T, k], weights f32 [T, k],
 * following d->routing (k = d->top_k, E = d->num_experts). */
w4a8moe_status w4a8moe_route(const w4a8moe_layer_desc *d, int64_t T, const float *logits,
                             int32_t *topk_ids, float *topk_weights);

/* Built-in model shapes (the CLI's `models`; routed experts only, synthetic weights): the
 * name of model i (0, 1, ...), a static string, or NULL when i is past the last one. These two
 * are API version 3. */
const char *w4a8moe_model_name(int32_t i);

/* The layer description of built-in model `name` for max_tokens tokens: the defaults of
 * w4a8moe_layer_desc_init with the model's dimensions and routing. NOT_FOUND for an unknown
 * name (the message lists the known ones). Writes size bytes of d (the caller's sizeof). */
w4a8moe_status w4a8moe_model_layer_desc_sized(const char *name, int64_t max_tokens,
                                              w4a8moe_layer_desc *d, size_t size);
static inline w4a8moe_status w4a8moe_model_layer_desc(const char *name, int64_t max_tokens,
                                                      w4a8moe_layer_desc *d)
{
    return w4a8moe_model_layer_desc_sized(name, max_tokens, d, sizeof *d);
}

/* =============================================================================================
 * Checkpoints (API version 2): Hugging Face checkpoint directories on disk.
 *
 * Accepted: config.json of Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3 or Llama-4, with
 * compressed-tensors W4AFP8 weights (pack-quantized or int-quantized; dynamic per-token or
 * static per-tensor activations) or SGLang / TensorRT-LLM "w4afp8" weights
 * (hf_quant_config.json + quant_cfg.json); model.safetensors or a sharded
 * model.safetensors.index.json. docs/formats.md has the byte-level facts. Errors go to
 * w4a8moe_last_error(): FORMAT_ERROR for a file that breaks its format, UNSUPPORTED for a valid
 * one we cannot run (naming the field and value), NOT_FOUND for a missing file or tensor,
 * IO_ERROR when reading fails.
 * ============================================================================================= */
typedef struct w4a8moe_checkpoint w4a8moe_checkpoint;

/* Opens a checkpoint directory: parses its configuration and maps and validates every
 * safetensors file (headers only: tensor data is read when a layer is created). */
w4a8moe_status w4a8moe_checkpoint_open(const char *dir, w4a8moe_checkpoint **out);

/* Closes the handle. Layers created from it stay valid (they keep what they use). NULL is a
 * no-op. */
void w4a8moe_checkpoint_close(w4a8moe_checkpoint *ckpt);

typedef struct w4a8moe_checkpoint_info {
    size_t struct_size;                 /* set by w4a8moe_checkpoint_get_info */
    const char *architecture;           /* "qwen3_moe", "deepseek_v3", ... */
    const char *format;                 /* "pack-quantized", "int-quantized", "sglang-w4afp8" */
    const char *quant_method;           /* "compressed-tensors", "w4afp8" */
    w4a8moe_weight_scheme weight_scheme;
    w4a8moe_act_scheme act_scheme;
    int32_t num_layers;                 /* decoder layers */
    int32_t num_moe_layers;
    const int32_t *moe_layers;          /* [num_moe_layers], ascending; owned by the handle */
    int64_t hidden;                     /* H */
    int64_t inter;                      /* I of a routed expert */
    int32_t num_experts;                /* E */
    int32_t top_k;                      /* k */
    int32_t group_size;                 /* g */
    w4a8moe_activation activation;
    w4a8moe_routing_desc routing;       /* score_bias NULL here (it is a per-layer tensor) */
    int32_t router_weight_on_input;
    int32_t has_shared_expert;
    int64_t shared_inter;               /* its I */
    int32_t shared_gated;               /* 1: weighted by sigmoid(x . shared_expert_gate) */
} w4a8moe_checkpoint_info;

/* What the checkpoint holds; pointers stay valid until the handle is closed. Writes size bytes
 * of info (the caller's sizeof, passed by the inline wrapper). */
w4a8moe_status w4a8moe_checkpoint_get_info_sized(const w4a8moe_checkpoint *ckpt,
                                                 w4a8moe_checkpoint_info *info, size_t size);
static inline w4a8moe_status w4a8moe_checkpoint_get_info(const w4a8moe_checkpoint *ckpt,
                                                         w4a8moe_checkpoint_info *info)
{
    return w4a8moe_checkpoint_get_info_sized(ckpt, info, sizeof *info);
}

/* routed_only = 1: layers created from this handle afterwards leave out the shared expert
 * (what `run --routed-only` does: an explicit omission, never a silent one). Default 0. */
void w4a8moe_checkpoint_set_routed_only(w4a8moe_checkpoint *ckpt, int routed_only);

/* The layer description of MoE layer `layer` (a decoder layer index) for max_tokens tokens,
 * e.g. for w4a8moe_explain. Static activation scales are the max over the layer's experts;
 * routing.score_bias points into the handle. Writes size bytes of d (the caller's sizeof). */
w4a8moe_status w4a8moe_checkpoint_layer_desc_sized(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                   int64_t max_tokens, w4a8moe_layer_desc *d,
                                                   size_t size);
static inline w4a8moe_status w4a8moe_checkpoint_layer_desc(const w4a8moe_checkpoint *ckpt,
                                                           int32_t layer, int64_t max_tokens,
                                                           w4a8moe_layer_desc *d)
{
    return w4a8moe_checkpoint_layer_desc_sized(ckpt, layer, max_tokens, d, sizeof *d);
}

/* Creates a layer from decoder layer `layer` (must be an MoE layer), its shared expert
 * included. opts as for w4a8moe_layer_create (may be NULL). experts_subset (nullable) lists
 * the global expert ids to load, n_subset of them: it must be all E experts, or the contiguous
 * block [r*E/s, (r+1)*E/s) of expert-parallel rank r of s, which sets ep_rank and ep_size.
 * On the CPU, pack-quantized weights are used straight from the file mapping; other formats
 * are decoded into buffers the layer owns. */
w4a8moe_status w4a8moe_checkpoint_layer_create(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                               const w4a8moe_layer_options *opts,
                                               const int32_t *experts_subset, int32_t n_subset,
                                               int64_t max_tokens, w4a8moe_layer **out);

/* The same with the caller's description d: take it from w4a8moe_checkpoint_layer_desc and
 * change what is the caller's to choose (max_tokens, io_dtype, and the routing's
 * renormalisation or scaling if wanted); the dimensions, group size and schemes must stay the
 * checkpoint's (INVALID_ARGUMENT naming the field otherwise). */
w4a8moe_status w4a8moe_checkpoint_layer_create_desc(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                    const w4a8moe_layer_desc *d,
                                                    const w4a8moe_layer_options *opts,
                                                    const int32_t *experts_subset,
                                                    int32_t n_subset, w4a8moe_layer **out);

/* w4a8moe_memory_estimate for MoE layer `layer` of the checkpoint (all its experts, its
 * shared expert unless routed_only), without creating it. Writes size bytes of info. */
w4a8moe_status w4a8moe_checkpoint_memory_sized(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                               const w4a8moe_layer_options *opts, int64_t tokens,
                                               w4a8moe_memory_info *info, size_t size);
static inline w4a8moe_status w4a8moe_checkpoint_memory(const w4a8moe_checkpoint *ckpt,
                                                       int32_t layer,
                                                       const w4a8moe_layer_options *opts,
                                                       int64_t tokens, w4a8moe_memory_info *info)
{
    return w4a8moe_checkpoint_memory_sized(ckpt, layer, opts, tokens, info, sizeof *info);
}

/* Router logits of decoder layer `layer` from the checkpoint's gate weights: logits[T, E] =
 * x[T, H] . Wg^T, accumulated in f32 in ascending h (x in x_dtype). Pass them to
 * w4a8moe_layer_forward as router_logits. */
w4a8moe_status w4a8moe_checkpoint_router_logits(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                int64_t T, const void *x, w4a8moe_dtype x_dtype,
                                                float *logits);

/* Checks every MoE layer's tensors (names, dtypes, shapes, values of int-quantized weights)
 * without creating layers, and writes one line per problem into buf (NUL-terminated,
 * truncated to cap; *needed gets the full length + 1). Returns OK when there is no problem,
 * else the status of the first one (its message in w4a8moe_last_error()). */
w4a8moe_status w4a8moe_checkpoint_check(const w4a8moe_checkpoint *ckpt, char *buf, size_t cap,
                                        size_t *needed);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* W4A8MOE_H */
