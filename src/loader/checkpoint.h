/*
 * checkpoint.h — a Hugging Face checkpoint directory (loader side): its configuration, its
 * safetensors files (one, or shards through model.safetensors.index.json), tensor lookup by
 * name, and one MoE layer decoded into the logical form of include/w4a8moe.h.
 *
 * Where it sits: below the core. src/core/checkpoint_api.c builds the public w4a8moe_checkpoint_*
 * functions on it; `inspect`, `run` and `verify --checkpoint` use those.
 *
 * Formats decoded (docs/formats.md):
 *   pack-quantized  weight_packed I32 [N, K/8] + weight_scale [N, K/g] (+ weight_shape) — our
 *                   logical form already: used straight from the mapping when aligned;
 *   int-quantized   weight I8 [N, K] in [-8, 7] → repacked (q + 8, 8 per word);
 *   sglang-w4afp8   weight I8 [N, K/2], two's complement, low nibble = even element →
 *                   repacked (each nibble XOR 8); weight_scale_inv F32 [N, K/128];
 *   static activations: input_scale per projection, reduced by max over the layer's experts
 *                   (gate and up → GEMM1, down → GEMM2);
 *   shared experts: int4 under a config group, else dense bf16/f16/f32 `weight`, or DeepSeek
 *                   block-FP8 (F8_E4M3 `weight` + 128x128 `weight_scale_inv`) dequantised to f32.
 */
#ifndef W4A8MOE_CHECKPOINT_H
#define W4A8MOE_CHECKPOINT_H

#include "hf_config.h"
#include "safetensors.h"

typedef struct w4a8moe_ckpt w4a8moe_ckpt;

/* Reads the configuration and maps + validates every safetensors file. */
w4a8moe_status w4a8moe_ckpt_open(const char *dir, w4a8moe_ckpt **out, w4a8moe_err *err);
/* Reference counting: open gives one reference; the last release frees. */
void w4a8moe_ckpt_retain(w4a8moe_ckpt *c);
void w4a8moe_ckpt_release(w4a8moe_ckpt *c);

const w4a8moe_hf_config *w4a8moe_ckpt_config(const w4a8moe_ckpt *c);
const char *w4a8moe_ckpt_dir(const w4a8moe_ckpt *c);
size_t w4a8moe_ckpt_num_files(const w4a8moe_ckpt *c);
const w4a8moe_st_file *w4a8moe_ckpt_file(const w4a8moe_ckpt *c, size_t i);
/* Total bytes of tensor data over all files. */
uint64_t w4a8moe_ckpt_bytes(const w4a8moe_ckpt *c);

/* The tensor of that name (any file), or NULL. */
const w4a8moe_st_tensor *w4a8moe_ckpt_find(const w4a8moe_ckpt *c, const char *name);
/* The same, NOT_FOUND naming the tensor and the directory when absent. */
w4a8moe_status w4a8moe_ckpt_get(const w4a8moe_ckpt *c, const char *name,
                                const w4a8moe_st_tensor **t, w4a8moe_err *err);

/* One MoE layer in logical form. Everything it points to stays valid until it is freed (it
 * holds a reference on the checkpoint's mappings and owns every decoded buffer). */
typedef struct w4a8moe_ckpt_layer {
    int32_t layer;
    w4a8moe_layer_desc desc;            /* max_tokens 0: the caller sets it */
    w4a8moe_weights weights;            /* per-expert form; weights.shared set when loaded */
    w4a8moe_expert_weights *experts;    /* [E]; zeroed for experts not loaded */
    int32_t n_loaded;                   /* experts loaded */
    int32_t has_shared;                 /* shared expert loaded into `shared` */
    w4a8moe_shared_expert shared;
    const char *shared_format;          /* "int4 pack-quantized", "bf16", "block-fp8 → f32", ... */
    float *score_bias;                  /* [E] or NULL (desc.routing.score_bias points here) */
    int32_t zero_copy;                  /* routed weights point straight into the mapping */
    w4a8moe_ckpt *ckpt;
    void **bufs;                        /* owned decoded buffers */
    size_t nbufs, capbufs;
} w4a8moe_ckpt_layer;

/* Loads decoder layer `layer` (must be MoE). want: [E] flags of the experts to load, or NULL
 * for all; static scales are reduced over all E experts regardless. with_shared: also load
 * the shared expert (when the architecture has one). */
w4a8moe_status w4a8moe_ckpt_layer_load(w4a8moe_ckpt *c, int32_t layer, const uint8_t *want,
                                       int with_shared, w4a8moe_ckpt_layer **out,
                                       w4a8moe_err *err);
void w4a8moe_ckpt_layer_free(w4a8moe_ckpt_layer *l);

/* logits[T, E] = x[T, H] . Wg^T (f32 accumulation, ascending h) with layer's router weight. */
w4a8moe_status w4a8moe_ckpt_router_logits(const w4a8moe_ckpt *c, int32_t layer, int64_t T,
                                          const void *x, w4a8moe_dtype x_dtype, float *logits,
                                          w4a8moe_err *err);

/* safetensors dtype → w4a8moe_dtype for BF16/F16/F32; -1 otherwise. */
int w4a8moe_st_to_dtype(w4a8moe_st_dtype dt);

#endif /* W4A8MOE_CHECKPOINT_H */
