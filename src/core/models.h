/*
 * models.h — the built-in model shapes (`w4a8moe models`, docs/cli.md) used by the CLI (`models`, `bench`,
 * `explain`, `verify`) and the tests. Routed experts only: shared experts come with real
 * checkpoints (src/loader).
 */
#ifndef W4A8MOE_MODELS_H
#define W4A8MOE_MODELS_H

#include "w4a8moe.h"

typedef struct w4a8moe_model {
    const char *name;
    const char *description;
    int64_t hidden, inter;
    int32_t num_experts, top_k, group_size;
    w4a8moe_routing_desc routing; /* score_bias NULL */
    int32_t router_weight_on_input;
} w4a8moe_model;

/* The table, terminated by an entry whose name is NULL. */
const w4a8moe_model *w4a8moe_models(void);
/* The model of that name, or NULL. */
const w4a8moe_model *w4a8moe_model_find(const char *name);
/* A layer description for the model (defaults from w4a8moe_layer_desc_init) and max_tokens. */
void w4a8moe_model_desc(const w4a8moe_model *m, int64_t max_tokens, w4a8moe_layer_desc *d);

#endif /* W4A8MOE_MODELS_H */
