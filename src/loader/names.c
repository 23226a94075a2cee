/*
 * names.c — Hugging Face module names per architecture; the table is in names.h.
 */
#include "names.h"

#include <stdarg.h>
#include <stdio.h>

static int fmt(char *buf, size_t cap, const char *f, ...) W4A8MOE_PRINTF(3, 4);
static int fmt(char *buf, size_t cap, const char *f, ...)
{
    if (!buf || cap == 0) return -1;
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static const char *block_part(const w4a8moe_hf_config *cfg)
{
    switch (cfg->arch) {
    case W4A8MOE_ARCH_MIXTRAL: return "block_sparse_moe";
    case W4A8MOE_ARCH_LLAMA4: return "feed_forward";
    default: return "mlp";
    }
}

int w4a8moe_name_block(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s", cfg->prefix, layer, block_part(cfg));
}

int w4a8moe_name_router(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s.%s", cfg->prefix, layer, block_part(cfg),
               cfg->arch == W4A8MOE_ARCH_LLAMA4 ? "router" : "gate");
}

int w4a8moe_name_score_bias(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s.gate.e_score_correction_bias", cfg->prefix, layer,
               block_part(cfg));
}

static const char *proj_part(const w4a8moe_hf_config *cfg, w4a8moe_proj proj)
{
    static const char *const hf[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const mixtral[3] = {"w1", "w3", "w2"};
    if ((unsigned)proj >= W4A8MOE_PROJ_COUNT_) return "?";
    return cfg->arch == W4A8MOE_ARCH_MIXTRAL ? mixtral[proj] : hf[proj];
}

int w4a8moe_name_expert(const w4a8moe_hf_config *cfg, int32_t layer, int32_t expert,
                        w4a8moe_proj proj, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s.experts.%d.%s", cfg->prefix, layer, block_part(cfg),
               expert, proj_part(cfg, proj));
}

int w4a8moe_name_shared(const w4a8moe_hf_config *cfg, int32_t layer, w4a8moe_proj proj,
                        char *buf, size_t cap)
{
    const char *s;
    switch (cfg->arch) {
    case W4A8MOE_ARCH_QWEN2_MOE:
    case W4A8MOE_ARCH_LLAMA4: s = "shared_expert"; break;
    case W4A8MOE_ARCH_DEEPSEEK_V2:
    case W4A8MOE_ARCH_DEEPSEEK_V3: s = "shared_experts"; break;
    default: return -1;
    }
    static const char *const hf[3] = {"gate_proj", "up_proj", "down_proj"};
    if ((unsigned)proj >= W4A8MOE_PROJ_COUNT_) return -1;
    return fmt(buf, cap, "%slayers.%d.%s.%s.%s", cfg->prefix, layer, block_part(cfg), s, hf[proj]);
}

int w4a8moe_name_shared_gate(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    if (cfg->arch != W4A8MOE_ARCH_QWEN2_MOE) return -1;
    return fmt(buf, cap, "%slayers.%d.mlp.shared_expert_gate", cfg->prefix, layer);
}

int w4a8moe_name_fused_gate_up(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s.experts.gate_up_proj", cfg->prefix, layer, block_part(cfg));
}

int w4a8moe_name_fused_down(const w4a8moe_hf_config *cfg, int32_t layer, char *buf, size_t cap)
{
    return fmt(buf, cap, "%slayers.%d.%s.experts.down_proj", cfg->prefix, layer, block_part(cfg));
}

int w4a8moe_name_sglang_input_scale(const w4a8moe_hf_config *cfg, int32_t layer, int32_t expert,
                                    w4a8moe_proj proj, char *buf, size_t cap)
{
    static const char *const w[3] = {"w1", "w3", "w2"};
    if ((unsigned)proj >= W4A8MOE_PROJ_COUNT_) return -1;
    return fmt(buf, cap, "%slayers.%d.%s.experts.%d.%s.input_scale", cfg->prefix, layer,
               block_part(cfg), expert, w[proj]);
}

const char *w4a8moe_proj_label(w4a8moe_proj proj)
{
    static const char *const l[3] = {"gate (w1)", "up (w3)", "down (w2)"};
    return (unsigned)proj < W4A8MOE_PROJ_COUNT_ ? l[proj] : "?";
}
