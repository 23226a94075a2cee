/*
 * hf_config.c — config.json → w4a8moe_hf_config (see hf_config.h). The quantisation part
 * (compressed-tensors groups, SGLang w4afp8 files, the ignore matcher) is in hf_quant.c.
 */
#include "hf_config.h"
#include "hf_json.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const arch_names[W4A8MOE_ARCH_COUNT_] = {
    "unknown", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "llama4",
};

const char *w4a8moe_arch_name(w4a8moe_arch a)
{
    return (unsigned)a < W4A8MOE_ARCH_COUNT_ ? arch_names[a] : "unknown";
}

/* ---- typed field access ------------------------------------------------------------------ */

w4a8moe_status w4a8moe_json_int(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                int required, int64_t lo, int64_t hi, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        RETURN_IF(c->err, required, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: required field \"%s%s\" is missing", c->label, c->path, key);
        return W4A8MOE_STATUS_OK;
    }
    RETURN_IF(c->err, !json_is_integer(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s%s\" must be an integer", c->label, c->path, key);
    json_int_t x = json_integer_value(v);
    RETURN_IF(c->err, x < lo || x > hi, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s%s\" = %lld is outside [%lld, %lld]", c->label, c->path, key,
              (long long)x, (long long)lo, (long long)hi);
    *out = (int64_t)x;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_json_real(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                 double *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_number(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s%s\" must be a number", c->label, c->path, key);
    *out = json_number_value(v);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_json_bool(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                 int *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_boolean(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s%s\" must be true or false", c->label, c->path, key);
    *out = json_is_true(v);
    return W4A8MOE_STATUS_OK;
}

/* A string field, or NULL when absent/null. */
w4a8moe_status w4a8moe_json_str(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                const char **out)
{
    const json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_string(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s%s\" must be a string", c->label, c->path, key);
    *out = json_string_value(v);
    return W4A8MOE_STATUS_OK;
}

/* ---- architecture ------------------------------------------------------------------------ */

static w4a8moe_arch arch_from(const char *model_type, const char *arch_class)
{
    static const struct {
        const char *key;
        w4a8moe_arch a;
    } types[] = {
        {"mixtral", W4A8MOE_ARCH_MIXTRAL},         {"qwen2_moe", W4A8MOE_ARCH_QWEN2_MOE},
        {"qwen3_moe", W4A8MOE_ARCH_QWEN3_MOE},     {"deepseek_v2", W4A8MOE_ARCH_DEEPSEEK_V2},
        {"deepseek_v3", W4A8MOE_ARCH_DEEPSEEK_V3}, {"kimi_k2", W4A8MOE_ARCH_DEEPSEEK_V3},
        {"llama4", W4A8MOE_ARCH_LLAMA4},           {"llama4_text", W4A8MOE_ARCH_LLAMA4},
    }, classes[] = {
        {"MixtralForCausalLM", W4A8MOE_ARCH_MIXTRAL},
        {"Qwen2MoeForCausalLM", W4A8MOE_ARCH_QWEN2_MOE},
        {"Qwen3MoeForCausalLM", W4A8MOE_ARCH_QWEN3_MOE},
        {"DeepseekV2ForCausalLM", W4A8MOE_ARCH_DEEPSEEK_V2},
        {"DeepseekV3ForCausalLM", W4A8MOE_ARCH_DEEPSEEK_V3},
        {"Llama4ForConditionalGeneration", W4A8MOE_ARCH_LLAMA4},
        {"Llama4ForCausalLM", W4A8MOE_ARCH_LLAMA4},
    };
    for (size_t i = 0; model_type && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(model_type, types[i].key) == 0) return types[i].a;
    if (model_type) return W4A8MOE_ARCH_UNKNOWN; /* the class name only when model_type is absent */
    for (size_t i = 0; arch_class && i < sizeof classes / sizeof classes[0]; i++)
        if (strcmp(arch_class, classes[i].key) == 0) return classes[i].a;
    return W4A8MOE_ARCH_UNKNOWN;
}

static w4a8moe_status parse_activation(const w4a8moe_json_ctx *c, const json_t *o,
                                       w4a8moe_hf_config *cfg)
{
    const char *act;
    FORWARD(w4a8moe_json_str(c, o, "hidden_act", &act));
    if (!act || strcmp(act, "silu") == 0 || strcmp(act, "swish") == 0) {
        cfg->activation = W4A8MOE_ACTIVATION_SILU;
        return W4A8MOE_STATUS_OK;
    }
    if (strcmp(act, "gelu_pytorch_tanh") == 0 || strcmp(act, "gelu_tanh") == 0 ||
        strcmp(act, "gelu_new") == 0) {
        cfg->activation = W4A8MOE_ACTIVATION_GELU_TANH;
        return W4A8MOE_STATUS_OK;
    }
    RETURN_ERR(c->err, W4A8MOE_STATUS_UNSUPPORTED,
               "%s: \"hidden_act\" = \"%.40s\" is not an activation w4a8moe runs; hint: silu and "
               "gelu_pytorch_tanh are",
               c->label, act);
}

/* Expert count, top-k and expert I under each architecture's key names. */
static w4a8moe_status parse_dims(const w4a8moe_json_ctx *c, const json_t *o, w4a8moe_hf_config *cfg)
{
    const char *ekey = "num_experts", *ikey = "moe_intermediate_size";
    switch (cfg->arch) {
    case W4A8MOE_ARCH_MIXTRAL: ekey = "num_local_experts"; ikey = "intermediate_size"; break;
    case W4A8MOE_ARCH_LLAMA4: ekey = "num_local_experts"; ikey = "intermediate_size"; break;
    case W4A8MOE_ARCH_DEEPSEEK_V2:
    case W4A8MOE_ARCH_DEEPSEEK_V3: ekey = "n_routed_experts"; break;
    default: break;
    }
    int64_t v = 0;
    FORWARD(w4a8moe_json_int(c, o, "num_hidden_layers", 1, 1, 100000, &v));
    cfg->num_layers = (int32_t)v;
    FORWARD(w4a8moe_json_int(c, o, "hidden_size", 1, 1, 1 << 20, &cfg->hidden));
    FORWARD(w4a8moe_json_int(c, o, ikey, 1, 1, 1 << 20, &cfg->moe_inter));
    FORWARD(w4a8moe_json_int(c, o, ekey, 1, 1, 1 << 16, &v));
    cfg->num_experts = (int32_t)v;
    FORWARD(w4a8moe_json_int(c, o, "num_experts_per_tok", 1, 1, 1 << 16, &v));
    cfg->top_k = (int32_t)v;
    RETURN_IF(c->err, cfg->top_k > cfg->num_experts, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"num_experts_per_tok\" = %d exceeds \"%s\" = %d", c->label, cfg->top_k, ekey,
              cfg->num_experts);
    return parse_activation(c, o, cfg);
}

static w4a8moe_status parse_routing_deepseek(const w4a8moe_json_ctx *c, const json_t *o,
                                             w4a8moe_hf_config *cfg)
{
    w4a8moe_routing_desc *r = &cfg->routing;
    const char *scoring, *method;
    double rsf = 1.0;
    int norm = 0;
    FORWARD(w4a8moe_json_str(c, o, "scoring_func", &scoring));
    FORWARD(w4a8moe_json_str(c, o, "topk_method", &method));
    FORWARD(w4a8moe_json_real(c, o, "routed_scaling_factor", &rsf));
    FORWARD(w4a8moe_json_bool(c, o, "norm_topk_prob", &norm));
    if (!scoring) scoring = cfg->arch == W4A8MOE_ARCH_DEEPSEEK_V3 ? "sigmoid" : "softmax";
    if (!method) method = cfg->arch == W4A8MOE_ARCH_DEEPSEEK_V3 ? "noaux_tc" : "greedy";
    RETURN_IF(c->err, !(rsf > 0) || rsf > 1e6, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"routed_scaling_factor\" = %g must be > 0", c->label, rsf);
    r->renormalize = norm;
    r->routed_scaling_factor = (float)rsf;
    if (strcmp(scoring, "sigmoid") == 0 && strcmp(method, "noaux_tc") == 0) {
        int64_t ng = 1, tg = 1;
        FORWARD(w4a8moe_json_int(c, o, "n_group", 0, 1, 1 << 16, &ng));
        FORWARD(w4a8moe_json_int(c, o, "topk_group", 0, 1, 1 << 16, &tg));
        RETURN_IF(c->err, cfg->num_experts % ng || tg > ng || cfg->num_experts / ng < 2 ||
                              tg * (cfg->num_experts / ng) < cfg->top_k,
                  W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: \"n_group\" = %lld, \"topk_group\" = %lld are inconsistent with %d experts "
                  "and top-%d (n_group must divide E with >= 2 experts per group, topk_group <= "
                  "n_group, and the kept groups must hold k experts)",
                  c->label, (long long)ng, (long long)tg, cfg->num_experts, cfg->top_k);
        r->kind = W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK;
        r->n_group = (int32_t)ng;
        r->topk_group = (int32_t)tg;
        cfg->has_score_bias = 1;
        return W4A8MOE_STATUS_OK;
    }
    if (strcmp(scoring, "softmax") == 0 && strcmp(method, "greedy") == 0) {
        RETURN_IF(c->err, rsf != 1.0, W4A8MOE_STATUS_UNSUPPORTED,
                  "%s: \"routed_scaling_factor\" = %g with softmax greedy routing; hint: w4a8moe "
                  "applies the scaling factor only in sigmoid grouped (noaux_tc) routing",
                  c->label, rsf);
        r->kind = W4A8MOE_ROUTING_SOFTMAX_TOPK;
        return W4A8MOE_STATUS_OK;
    }
    RETURN_ERR(c->err, W4A8MOE_STATUS_UNSUPPORTED,
               "%s: routing \"scoring_func\" = \"%.32s\" with \"topk_method\" = \"%.32s\" is not one "
               "w4a8moe runs; hint: sigmoid + noaux_tc (DeepSeek-V3) and softmax + greedy are",
               c->label, scoring, method);
}

static w4a8moe_status parse_routing(const w4a8moe_json_ctx *c, const json_t *o, w4a8moe_hf_config *cfg)
{
    w4a8moe_routing_desc *r = &cfg->routing;
    memset(r, 0, sizeof *r);
    r->routed_scaling_factor = 1.0f;
    r->kind = W4A8MOE_ROUTING_SOFTMAX_TOPK;
    int norm = 0;
    switch (cfg->arch) {
    case W4A8MOE_ARCH_MIXTRAL: r->renormalize = 1; return W4A8MOE_STATUS_OK;
    case W4A8MOE_ARCH_QWEN2_MOE:
    case W4A8MOE_ARCH_QWEN3_MOE:
        FORWARD(w4a8moe_json_bool(c, o, "norm_topk_prob", &norm));
        r->renormalize = norm;
        return W4A8MOE_STATUS_OK;
    case W4A8MOE_ARCH_LLAMA4:
        RETURN_IF(c->err, cfg->top_k != 1, W4A8MOE_STATUS_UNSUPPORTED,
                  "%s: Llama-4 with \"num_experts_per_tok\" = %d; hint: its routing (sigmoid on "
                  "the input) is defined for top-1 only",
                  c->label, cfg->top_k);
        r->kind = W4A8MOE_ROUTING_SIGMOID_TOP1;
        cfg->router_weight_on_input = 1;
        return W4A8MOE_STATUS_OK;
    default: return parse_routing_deepseek(c, o, cfg);
    }
}

/* ---- which layers are MoE ---------------------------------------------------------------- */

/* Checks a list of layer numbers and marks its entries in flags[num_layers] (one pass: a long
 * list never costs num_layers x its length). */
static w4a8moe_status mark_list(const w4a8moe_json_ctx *c, const json_t *list, const char *key,
                                unsigned char *flags, int32_t num_layers)
{
    if (!list || json_is_null(list)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_array(list), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: field \"%s\" must be a list of layer numbers", c->label, key);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        RETURN_IF(c->err, !json_is_integer(v), W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: field \"%s\" entry %zu is not an integer", c->label, key, i);
        json_int_t L = json_integer_value(v);
        if (L >= 0 && L < num_layers) flags[L] = 1;
    }
    return W4A8MOE_STATUS_OK;
}

static int layer_is_moe(const w4a8moe_hf_config *cfg, int32_t L, const unsigned char *mlp_only,
                        const unsigned char *moe_list, int has_moe_list, int64_t step,
                        int64_t first_dense, int64_t freq, int64_t inter)
{
    switch (cfg->arch) {
    case W4A8MOE_ARCH_QWEN2_MOE:
    case W4A8MOE_ARCH_QWEN3_MOE: return !mlp_only[L] && (L + 1) % step == 0;
    case W4A8MOE_ARCH_DEEPSEEK_V2:
    case W4A8MOE_ARCH_DEEPSEEK_V3: return L >= first_dense && L % freq == 0;
    case W4A8MOE_ARCH_LLAMA4: return has_moe_list ? moe_list[L] : (L + 1) % inter == 0;
    default: return 1;
    }
}

static w4a8moe_status parse_moe_layers(const w4a8moe_json_ctx *c, const json_t *o, w4a8moe_hf_config *cfg)
{
    int64_t step = 1, first_dense = 0, freq = 1, inter = 1;
    int32_t n = cfg->num_layers;
    FORWARD(w4a8moe_json_int(c, o, "decoder_sparse_step", 0, 1, 1 << 20, &step));
    FORWARD(w4a8moe_json_int(c, o, "first_k_dense_replace", 0, 0, 1 << 20, &first_dense));
    FORWARD(w4a8moe_json_int(c, o, "moe_layer_freq", 0, 1, 1 << 20, &freq));
    FORWARD(w4a8moe_json_int(c, o, "interleave_moe_layer_step", 0, 1, 1 << 20, &inter));
    cfg->moe_layers = malloc((size_t)n * sizeof *cfg->moe_layers);
    unsigned char *flags = calloc(2 * (size_t)n, 1);
    w4a8moe_status st = cfg->moe_layers && flags ? W4A8MOE_STATUS_OK
                                                 : w4a8moe_err_set(c->err, W4A8MOE_STATUS_OUT_OF_MEMORY,
                                                                   __FILE__, __LINE__, "MoE layer list");
    const json_t *moe_list = json_object_get(o, "moe_layers");
    if (st == W4A8MOE_STATUS_OK) st = mark_list(c, json_object_get(o, "mlp_only_layers"), "mlp_only_layers", flags, n);
    if (st == W4A8MOE_STATUS_OK) st = mark_list(c, moe_list, "moe_layers", flags + n, n);
    for (int32_t L = 0; st == W4A8MOE_STATUS_OK && L < n; L++)
        if (layer_is_moe(cfg, L, flags, flags + n, json_is_array(moe_list), step, first_dense, freq, inter))
            cfg->moe_layers[cfg->n_moe_layers++] = L;
    free(flags);
    FORWARD(st);
    RETURN_IF(c->err, cfg->n_moe_layers == 0, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: none of the %d layers is an MoE layer (see first_k_dense_replace, "
              "decoder_sparse_step, mlp_only_layers, moe_layer_freq, moe_layers)",
              c->label, cfg->num_layers);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status parse_shared(const w4a8moe_json_ctx *c, const json_t *o, w4a8moe_hf_config *cfg)
{
    int64_t n = 0;
    switch (cfg->arch) {
    case W4A8MOE_ARCH_QWEN2_MOE:
        FORWARD(w4a8moe_json_int(c, o, "shared_expert_intermediate_size", 0, 0, 1 << 22, &n));
        cfg->has_shared = n > 0;
        cfg->shared_inter = n;
        cfg->shared_gated = n > 0;
        break;
    case W4A8MOE_ARCH_DEEPSEEK_V2:
    case W4A8MOE_ARCH_DEEPSEEK_V3:
        FORWARD(w4a8moe_json_int(c, o, "n_shared_experts", 0, 0, 1024, &n));
        cfg->has_shared = n > 0;
        cfg->shared_inter = n * cfg->moe_inter;
        break;
    case W4A8MOE_ARCH_LLAMA4:
        cfg->has_shared = 1;
        cfg->shared_inter = cfg->moe_inter;
        break;
    default: break;
    }
    return W4A8MOE_STATUS_OK;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static w4a8moe_status parse_model(const char *label, json_t *root, w4a8moe_hf_config *cfg,
                                  w4a8moe_err *err)
{
    w4a8moe_json_ctx c = {label, "", err};
    RETURN_IF(err, !json_is_object(root), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the top level is not a JSON object", label);
    const char *mt, *cls = NULL;
    FORWARD(w4a8moe_json_str(&c, root, "model_type", &mt));
    const json_t *archs = json_object_get(root, "architectures");
    if (json_is_array(archs) && json_is_string(json_array_get(archs, 0)))
        cls = json_string_value(json_array_get(archs, 0));
    copy_str(cfg->model_type, sizeof cfg->model_type, mt);
    copy_str(cfg->arch_class, sizeof cfg->arch_class, cls);
    cfg->arch = arch_from(mt, cls);
    RETURN_IF(err, cfg->arch == W4A8MOE_ARCH_UNKNOWN, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: \"model_type\" = \"%.40s\" (architecture \"%.60s\") is not an MoE model "
              "w4a8moe knows; hint: mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3 and "
              "llama4 are",
              label, mt ? mt : "", cls ? cls : "");
    const json_t *model = root;
    copy_str(cfg->prefix, sizeof cfg->prefix, "model.");
    if (cfg->arch == W4A8MOE_ARCH_LLAMA4 && json_object_get(root, "text_config")) {
        model = json_object_get(root, "text_config");
        RETURN_IF(err, !json_is_object(model), W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: \"text_config\" is not a JSON object", label);
        copy_str(cfg->prefix, sizeof cfg->prefix, "language_model.model.");
        c.path = "text_config.";
    }
    FORWARD(parse_dims(&c, model, cfg));
    FORWARD(parse_routing(&c, model, cfg));
    FORWARD(parse_moe_layers(&c, model, cfg));
    FORWARD(parse_shared(&c, model, cfg));
    c.path = "";
    return w4a8moe_hf_quant_parse(&c, json_object_get(root, "quantization_config"), cfg);
}

w4a8moe_status w4a8moe_hf_config_parse(const char *json, size_t len, const char *label,
                                       w4a8moe_hf_config *cfg, w4a8moe_err *err)
{
    RETURN_IF(err, !cfg || (!json && len), W4A8MOE_STATUS_INVALID_ARGUMENT, "config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    if (!label) label = "config.json";
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    RETURN_IF(err, !root, W4A8MOE_STATUS_FORMAT_ERROR, "%s: not valid JSON: %s (line %d, column %d)",
              label, je.text, je.line, je.column);
    w4a8moe_status st = parse_model(label, root, cfg, err);
    json_decref(root);
    if (st != W4A8MOE_STATUS_OK) w4a8moe_hf_config_free(cfg);
    return st;
}

void w4a8moe_hf_config_free(w4a8moe_hf_config *cfg)
{
    if (!cfg) return;
    free(cfg->moe_layers);
    for (int32_t i = 0; i < cfg->n_groups; i++) {
        for (int32_t j = 0; j < cfg->groups[i].n_targets; j++) free(cfg->groups[i].targets[j]);
        free(cfg->groups[i].targets);
    }
    free(cfg->groups);
    for (int32_t i = 0; i < cfg->n_ignore; i++) free(cfg->ignore[i]);
    free(cfg->ignore);
    memset(cfg, 0, sizeof *cfg);
}

int w4a8moe_hf_config_is_moe(const w4a8moe_hf_config *cfg, int32_t layer)
{
    for (int32_t i = 0; cfg && i < cfg->n_moe_layers; i++)
        if (cfg->moe_layers[i] == layer) return 1;
    return 0;
}

/* Reads a whole (small) file; *text NULL when absent. */
w4a8moe_status w4a8moe_read_text(const char *path, int required, char **text, size_t *len,
                                 w4a8moe_err *err)
{
    *text = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        RETURN_IF(err, required, W4A8MOE_STATUS_NOT_FOUND,
                  "%s: cannot open; hint: a checkpoint directory holds config.json and "
                  "model.safetensors (or model.safetensors.index.json with its shards)",
                  path);
        return W4A8MOE_STATUS_OK;
    }
    const size_t cap = 64u << 20; /* configs are KBs; anything this large is not one */
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, fp) : 0;
    int bad = buf && ferror(fp);
    fclose(fp);
    if (!buf) RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s: read buffer", path);
    if (bad || n > cap) {
        free(buf);
        RETURN_ERR(err, bad ? W4A8MOE_STATUS_IO_ERROR : W4A8MOE_STATUS_FORMAT_ERROR,
                   "%s: %s", path, bad ? "read failed" : "larger than 64 MiB: not a config file");
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_hf_config_load(const char *dir, w4a8moe_hf_config *cfg, w4a8moe_err *err)
{
    RETURN_IF(err, !dir || !cfg, W4A8MOE_STATUS_INVALID_ARGUMENT, "config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    size_t cap = strlen(dir) + 64;
    char *path = malloc(cap);
    RETURN_IF(err, !path, W4A8MOE_STATUS_OUT_OF_MEMORY, "path");
    char *texts[3] = {NULL, NULL, NULL};
    size_t lens[3] = {0, 0, 0};
    static const char *const files[3] = {"config.json", "hf_quant_config.json", "quant_cfg.json"};
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    for (int i = 0; i < 3 && st == W4A8MOE_STATUS_OK; i++) {
        snprintf(path, cap, "%s/%s", dir, files[i]);
        st = w4a8moe_read_text(path, i == 0, &texts[i], &lens[i], err);
    }
    if (st == W4A8MOE_STATUS_OK) {
        snprintf(path, cap, "%s/config.json", dir);
        st = w4a8moe_hf_config_parse(texts[0], lens[0], path, cfg, err);
    }
    if (st == W4A8MOE_STATUS_OK && (texts[1] || texts[2])) {
        snprintf(path, cap, "%s/%s", dir, texts[1] ? files[1] : files[2]);
        st = w4a8moe_hf_config_apply_sglang(cfg, texts[1], lens[1], texts[2], lens[2], path, err);
        if (st != W4A8MOE_STATUS_OK) w4a8moe_hf_config_free(cfg);
    }
    for (int i = 0; i < 3; i++) free(texts[i]);
    free(path);
    return st;
}
