/*
 * fuzz_config.c — libFuzzer target for the configuration parsers: config.json
 * (w4a8moe_hf_config_parse, with its compressed-tensors quantization_config, ignore patterns
 * and MoE layer rules) and the SGLang files (hf_quant_config.json, quant_cfg.json). The first
 * byte picks the parser; on acceptance the name helpers and the ignore / group matchers run
 * on the config's own module names. `make fuzz` runs it.
 */
#include "loader/hf_config.h"
#include "loader/names.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char base_config[] =
    "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 256, \"num_hidden_layers\": 3,"
    " \"n_routed_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 128,"
    " \"n_group\": 4, \"topk_group\": 2, \"n_shared_experts\": 1, \"first_k_dense_replace\": 1}";

static const char mixed[] = "{\"quantization\": {\"quant_algo\": \"MIXED_PRECISION\"}}";

static void exercise(const w4a8moe_hf_config *cfg)
{
    char name[256];
    for (int32_t i = 0; i < cfg->n_moe_layers && i < 4; i++) {
        int32_t L = cfg->moe_layers[i];
        if (!w4a8moe_hf_config_is_moe(cfg, L)) __builtin_trap();
        for (int p = 0; p < W4A8MOE_PROJ_COUNT_; p++) {
            if (w4a8moe_name_expert(cfg, L, cfg->num_experts - 1, (w4a8moe_proj)p, name, sizeof name) == 0) {
                (void)w4a8moe_hf_config_group_for(cfg, name);
                (void)w4a8moe_ignore_matches(cfg, name);
            }
            if (w4a8moe_name_shared(cfg, L, (w4a8moe_proj)p, name, sizeof name) == 0)
                (void)w4a8moe_hf_config_group_for(cfg, name);
        }
        if (w4a8moe_name_router(cfg, L, name, sizeof name) == 0) (void)w4a8moe_ignore_matches(cfg, name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    w4a8moe_err err;
    w4a8moe_hf_config cfg;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] % 3 == 0) {
        if (w4a8moe_hf_config_parse(text, len, "fuzz", &cfg, &err) != W4A8MOE_STATUS_OK) return 0;
    } else {
        if (w4a8moe_hf_config_parse(base_config, strlen(base_config), "base", &cfg, &err) != W4A8MOE_STATUS_OK)
            __builtin_trap();
        w4a8moe_status st = data[0] % 3 == 1
                                ? w4a8moe_hf_config_apply_sglang(&cfg, text, len, NULL, 0, "fuzz", &err)
                                : w4a8moe_hf_config_apply_sglang(&cfg, mixed, strlen(mixed), text, len,
                                                                 "fuzz", &err);
        if (st != W4A8MOE_STATUS_OK) {
            w4a8moe_hf_config_free(&cfg);
            return 0;
        }
    }
    exercise(&cfg);
    w4a8moe_hf_config_free(&cfg);
    return 0;
}
