/*
 * hf_config.h — a Hugging Face checkpoint's config.json (and, for SGLang / TensorRT-LLM
 * "w4afp8" checkpoints, hf_quant_config.json + quant_cfg.json) parsed into what w4a8moe needs:
 * the architecture, the MoE dimensions and routing, which decoder layers are MoE, the shared
 * expert, and the (weight, activation) quantisation scheme pair with its storage format.
 *
 * Where it sits: src/loader, below the core. checkpoint.c reads a directory with it; the
 * quantizer reads an unquantised config with it (format W4A8MOE_CKPT_FORMAT_DENSE) and
 * matches module names against the ignore list. Anything we cannot run is UNSUPPORTED with a
 * message naming the field and its value; malformed JSON or a field of the wrong type is
 * FORMAT_ERROR naming the file and the field.
 *
 * Accepted architectures (docs/formats.md lists the fields read):
 *   Mixtral      model.layers.L.block_sparse_moe.{gate, experts.e.w1|w2|w3}; softmax top-k,
 *                renormalised.
 *   Qwen2-MoE    model.layers.L.mlp.{gate, experts.e.gate_proj|up_proj|down_proj,
 *                shared_expert.*, shared_expert_gate}; MoE where L is not in mlp_only_layers
 *                and (L+1) % decoder_sparse_step == 0.
 *   Qwen3-MoE    as Qwen2-MoE without a shared expert.
 *   DeepSeek-V2/V3  model.layers.L.mlp.{gate (+ e_score_correction_bias), experts.e.*,
 *                shared_experts.*}; MoE where L >= first_k_dense_replace and
 *                L % moe_layer_freq == 0.
 *   Llama-4      (text_config) language_model.model.layers.L.feed_forward.{router,
 *                experts.e.*, shared_expert.*}; MoE where L is in moe_layers, or
 *                (L+1) % interleave_moe_layer_step == 0; sigmoid top-1 applied on the input.
 */
#ifndef W4A8MOE_HF_CONFIG_H
#define W4A8MOE_HF_CONFIG_H

#include "../common/error.h"

#include <stddef.h>
#include <stdint.h>

typedef enum w4a8moe_arch {
    W4A8MOE_ARCH_UNKNOWN = 0,
    W4A8MOE_ARCH_MIXTRAL,
    W4A8MOE_ARCH_QWEN2_MOE,
    W4A8MOE_ARCH_QWEN3_MOE,
    W4A8MOE_ARCH_DEEPSEEK_V2,
    W4A8MOE_ARCH_DEEPSEEK_V3,
    W4A8MOE_ARCH_LLAMA4,
    W4A8MOE_ARCH_COUNT_
} w4a8moe_arch;

/* How the routed experts' weights are stored. */
typedef enum w4a8moe_ckpt_format {
    W4A8MOE_CKPT_FORMAT_DENSE = 0,       /* unquantised bf16/f16/f32 `weight` (quantize's input) */
    W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED,  /* compressed-tensors: weight_packed I32 [N, K/8] */
    W4A8MOE_CKPT_FORMAT_INT_QUANTIZED,   /* compressed-tensors: weight I8 [N, K] (also
                                            "naive-quantized") */
    W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8,   /* weight I8 [N, K/2] two's complement, two per byte,
                                            weight_scale_inv F32 [N, K/128], input_scale */
    W4A8MOE_CKPT_FORMAT_COUNT_
} w4a8moe_ckpt_format;

/* "mixtral", "qwen2_moe", ... / "pack-quantized", ... (static strings, never NULL). */
const char *w4a8moe_arch_name(w4a8moe_arch a);
const char *w4a8moe_ckpt_format_name(w4a8moe_ckpt_format f);

/* One compressed-tensors config group (or the single SGLang scheme). */
typedef struct w4a8moe_hf_qgroup {
    char name[64];                     /* "group_0" */
    char **targets;                    /* "Linear", module names or "re:" patterns */
    int32_t n_targets;
    w4a8moe_ckpt_format format;
    int32_t weight_bits;               /* 4 */
    int32_t group_size;                /* g */
    w4a8moe_weight_scheme weight_scheme;
    w4a8moe_act_scheme act_scheme;     /* token dynamic, or tensor static (input_scale) */
    int32_t supported;                 /* 0: why says which field we cannot run (the group
                                          matters only when it covers the MoE experts) */
    char why[320];
} w4a8moe_hf_qgroup;

typedef struct w4a8moe_hf_config {
    w4a8moe_arch arch;
    char model_type[64];               /* config's model_type ("qwen3_moe") */
    char arch_class[96];               /* architectures[0] ("Qwen3MoeForCausalLM"), or "" */
    char prefix[64];                   /* tensor name prefix: "model." or
                                          "language_model.model." (Llama-4) */

    /* dimensions */
    int32_t num_layers;                /* num_hidden_layers */
    int64_t hidden;                    /* H */
    int64_t moe_inter;                 /* I of one routed expert */
    int32_t num_experts;               /* E */
    int32_t top_k;                     /* k */
    w4a8moe_activation activation;     /* from hidden_act */

    /* routing (score_bias stays NULL here: it is a tensor, the checkpoint loads it) */
    w4a8moe_routing_desc routing;
    int32_t has_score_bias;            /* DeepSeek-V3 noaux_tc: gate.e_score_correction_bias */
    int32_t router_weight_on_input;    /* Llama-4 */

    /* which decoder layers are MoE, ascending */
    int32_t *moe_layers;
    int32_t n_moe_layers;

    /* shared expert: 0 = none; its I and whether a sigmoid gate weighs it (Qwen2-MoE) */
    int32_t has_shared;
    int64_t shared_inter;              /* DeepSeek: n_shared_experts * moe_inter; Qwen2:
                                          shared_expert_intermediate_size; Llama-4: moe_inter */
    int32_t shared_gated;              /* 1: weight sigmoid(x . shared_expert_gate) */

    /* quantisation: quantized == 0 for a dense checkpoint (format DENSE) */
    int32_t quantized;
    char quant_method[48];             /* "compressed-tensors", "w4afp8 (sglang)", "" */
    w4a8moe_ckpt_format format;        /* of the routed experts */
    w4a8moe_weight_scheme weight_scheme;
    w4a8moe_act_scheme act_scheme;
    int32_t group_size;                /* g of the routed experts */
    w4a8moe_hf_qgroup *groups;         /* every config group, parsed and checked */
    int32_t n_groups;
    char **ignore;                     /* module names and "re:" patterns, as written */
    int32_t n_ignore;
} w4a8moe_hf_config;

/* Parses config.json text (len bytes; need not be NUL-terminated). label names the source in
 * messages (a path). On failure cfg holds nothing that needs freeing; on success free it with
 * w4a8moe_hf_config_free. Does not look at other files: a config without
 * quantization_config comes back as DENSE (see w4a8moe_hf_config_apply_sglang). What the
 * fuzzer drives. */
w4a8moe_status w4a8moe_hf_config_parse(const char *json, size_t len, const char *label,
                                       w4a8moe_hf_config *cfg, w4a8moe_err *err);

/* SGLang / TensorRT-LLM: hf_quant_config.json (quant_algo MIXED_PRECISION) and quant_cfg.json
 * (quantized_layers: module → W4A8_AWQ), texts may be NULL when the file is absent. Turns a
 * DENSE config into SGLANG_W4AFP8 (g = 128, fp8 tensor-static activations) when they say so;
 * anything else they say is UNSUPPORTED naming the value. */
w4a8moe_status w4a8moe_hf_config_apply_sglang(w4a8moe_hf_config *cfg, const char *hf_quant_json,
                                              size_t hf_quant_len, const char *quant_cfg_json,
                                              size_t quant_cfg_len, const char *label,
                                              w4a8moe_err *err);

/* Reads DIR/config.json, and DIR/hf_quant_config.json + DIR/quant_cfg.json when present. */
w4a8moe_status w4a8moe_hf_config_load(const char *dir, w4a8moe_hf_config *cfg, w4a8moe_err *err);

void w4a8moe_hf_config_free(w4a8moe_hf_config *cfg);

/* Is decoder layer L an MoE layer? */
int w4a8moe_hf_config_is_moe(const w4a8moe_hf_config *cfg, int32_t layer);

/* 1 when module_name (no ".weight" suffix, e.g. "model.layers.1.mlp.gate") is on the ignore
 * list: an exact name, or a "re:" pattern matching from the start of the name (Python
 * re.match, as compressed-tensors does; \d \w \s and (?: are translated to POSIX ERE). */
int w4a8moe_ignore_matches(const w4a8moe_hf_config *cfg, const char *module_name);

/* The config group whose targets cover a Linear module of that name (exact name first, then
 * "re:" patterns, then "Linear"), or NULL when none does or the module is ignored. */
const w4a8moe_hf_qgroup *w4a8moe_hf_config_group_for(const w4a8moe_hf_config *cfg,
                                                     const char *module_name);

/* A "re:" pattern (without the prefix) matched Python-re.match style; 0 for a pattern POSIX
 * cannot compile. Exposed for the quantizer and tests. */
int w4a8moe_re_match(const char *pattern, const char *name);

#endif /* W4A8MOE_HF_CONFIG_H */
