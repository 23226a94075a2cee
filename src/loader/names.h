/*
 * names.h — Hugging Face module names of an MoE block, per architecture (docs/formats.md).
 *
 * Module names carry no suffix ("model.layers.3.mlp.experts.5.gate_proj"); a tensor name is
 * the module name plus ".weight", ".weight_packed", ".weight_scale", ".weight_shape",
 * ".weight_scale_inv" or ".input_scale". Every function writes a NUL-terminated name into
 * buf and returns 0, or -1 when it does not fit in cap (or the architecture has no such
 * module, e.g. a shared-expert gate outside Qwen2-MoE).
 *
 *   arch        block                         router   experts.e.<proj>      shared
 *   Mixtral     P layers.L.block_sparse_moe   gate     w1 / w3 / w2           -
 *   Qwen2-MoE   P layers.L.mlp                gate     gate/up/down_proj      shared_expert (+ _gate)
 *   Qwen3-MoE   P layers.L.mlp                gate     gate/up/down_proj      -
 *   DeepSeek    P layers.L.mlp                gate     gate/up/down_proj      shared_experts
 *   Llama-4     P layers.L.feed_forward       router   gate/up/down_proj      shared_expert
 * with P = cfg->prefix ("model." or "language_model.model.").
 */
#ifndef W4A8MOE_NAMES_H
#define W4A8MOE_NAMES_H

#include "hf_config.h"

typedef enum w4a8moe_proj {
    W4A8MOE_PROJ_GATE = 0, /* w1: [I, H] */
    W4A8MOE_PROJ_UP = 1,   /* w3: [I, H] */
    W4A8MOE_PROJ_DOWN = 2, /* w2: [H, I] */
    W4A8MOE_PROJ_COUNT_
} w4a8moe_proj;

/* The MoE block of layer L: "model.layers.L.mlp". */
int w4a8moe_name_block(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
/* The router linear: "model.layers.L.mlp.gate" (its tensor is ".weight", [E, H]). */
int w4a8moe_name_router(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
/* The router's score-correction bias tensor (a full tensor name, [E] f32), DeepSeek-V3. */
int w4a8moe_name_score_bias(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
/* Routed expert e's projection: "model.layers.L.mlp.experts.e.gate_proj". */
int w4a8moe_name_expert(const w4a8moe_hf_config *cfg, int32_t layer, int32_t expert,
                        w4a8moe_proj proj, char *buf, size_t cap);
/* The shared expert's projection: "model.layers.L.mlp.shared_experts.gate_proj". */
int w4a8moe_name_shared(const w4a8moe_hf_config *cfg, int32_t layer, w4a8moe_proj proj,
                        char *buf, size_t cap);
/* Qwen2-MoE's shared-expert gate linear ("...mlp.shared_expert_gate", tensor .weight [1, H]). */
int w4a8moe_name_shared_gate(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
/* Llama-4 bf16 originals fuse experts: ".experts.gate_up_proj" [E, H, 2I] and
 * ".experts.down_proj" [E, I, H] (input-major) — full tensor names. */
int w4a8moe_name_fused_gate_up(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
int w4a8moe_name_fused_down(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap);
/* SGLang w4afp8 per-expert activation scale: "...experts.e.w1.input_scale" (w1 gate, w3 up,
 * w2 down) — a full tensor name. */
int w4a8moe_name_sglang_input_scale(const w4a8moe_hf_config *cfg, int32_t layer, int32_t expert,
                                    w4a8moe_proj proj, char *buf, size_t cap);
/* "gate" / "up" / "down" (for messages). */
const char *w4a8moe_proj_label(w4a8moe_proj proj);

#endif /* W4A8MOE_NAMES_H */
