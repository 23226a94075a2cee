/*
 * models.c — see models.h. Shapes from the models' Hugging Face config.json files.
 */
#include "models.h"

#include "../common/error.h"
#include "struct_abi.h"

#include <stdio.h>
#include <string.h>

#define SOFTMAX_RENORM {W4A8MOE_ROUTING_SOFTMAX_TOPK, 1, 0, 0, 1.0f, NULL}

static const w4a8moe_model models[] = {
    {"tiny", "tiny test shape", 256, 128, 8, 2, 64, SOFTMAX_RENORM, 0},
    {"mixtral-8x7b", "Mixtral 8x7B", 4096, 14336, 8, 2, 128, SOFTMAX_RENORM, 0},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", 2048, 768, 128, 8, 128, SOFTMAX_RENORM, 0},
    {"qwen3-235b-a22b", "Qwen3-235B-A22B", 4096, 1536, 128, 8, 128, SOFTMAX_RENORM, 0},
    {"deepseek-v3", "DeepSeek-V3 / R1 (routed experts)", 7168, 2048, 256, 8, 128,
     {W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 1, 8, 4, 2.5f, NULL}, 0},
    {"llama4-scout", "Llama-4 Scout 17B-16E (routed experts)", 5120, 8192, 16, 1, 128,
     {W4A8MOE_ROUTING_SIGMOID_TOP1, 0, 0, 0, 1.0f, NULL}, 1},
    {"llama4-maverick", "Llama-4 Maverick 17B-128E (routed experts)", 5120, 8192, 128, 1, 128,
     {W4A8MOE_ROUTING_SIGMOID_TOP1, 0, 0, 0, 1.0f, NULL}, 1},
    {NULL, NULL, 0, 0, 0, 0, 0, SOFTMAX_RENORM, 0},
};

const w4a8moe_model *w4a8moe_models(void) { return models; }

const w4a8moe_model *w4a8moe_model_find(const char *name)
{
    for (const w4a8moe_model *m = models; m->name; m++)
        if (strcmp(m->name, name) == 0) return m;
    return NULL;
}

void w4a8moe_model_desc(const w4a8moe_model *m, int64_t max_tokens, w4a8moe_layer_desc *d)
{
    w4a8moe_layer_desc_init(d);
    d->max_tokens = max_tokens;
    d->hidden = m->hidden;
    d->inter = m->inter;
    d->num_experts = m->num_experts;
    d->top_k = m->top_k;
    d->group_size = m->group_size;
    d->routing = m->routing;
    d->router_weight_on_input = m->router_weight_on_input;
}

/* ---- the public face of the table (include/w4a8moe.h) ---------------------------------- */

const char *w4a8moe_model_name(int32_t i)
{
    if (i < 0) return NULL;
    for (int32_t j = 0; models[j].name; j++)
        if (j == i) return models[j].name;
    return NULL;
}

w4a8moe_status w4a8moe_model_layer_desc_sized(const char *name, int64_t max_tokens,
                                              w4a8moe_layer_desc *d, size_t size)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !name || !d, W4A8MOE_STATUS_INVALID_ARGUMENT, "name and d must not be NULL");
    const w4a8moe_model *m = w4a8moe_model_find(name);
    if (!m) {
        char known[256] = "";
        size_t n = 0;
        for (const w4a8moe_model *k = models; k->name && n < sizeof known; k++)
            n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", k->name);
        RETURN_ERR(err, W4A8MOE_STATUS_NOT_FOUND, "no built-in model \"%s\"; hint: one of %s",
                   name, known);
    }
    w4a8moe_layer_desc out;
    w4a8moe_model_desc(m, max_tokens, &out);
    w4a8moe_struct_out(d, size, &out, sizeof out, W4A8MOE_V3_LAYER_DESC);
    return W4A8MOE_STATUS_OK;
}
