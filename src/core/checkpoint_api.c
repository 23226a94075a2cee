/*
 * checkpoint_api.c — the public w4a8moe_checkpoint_* functions (include/w4a8moe.h,
 * "Checkpoints"): a thin layer over src/loader/checkpoint.h that turns a decoded checkpoint
 * layer into a w4a8moe_layer. The layer owns the decoded layer (and through it a reference on
 * the file mappings), so CPU backends may borrow the weights straight from the mapping.
 */
#include "../loader/checkpoint.h"
#include "../loader/names.h"
#include "layer_internal.h"
#include "struct_abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct w4a8moe_checkpoint {
    w4a8moe_ckpt *c;
    int routed_only;
};

void w4a8moe_checkpoint_set_routed_only(w4a8moe_checkpoint *ckpt, int routed_only)
{
    if (ckpt) ckpt->routed_only = routed_only != 0;
}

static w4a8moe_err *fresh_err(void)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    return err;
}

w4a8moe_status w4a8moe_checkpoint_open(const char *dir, w4a8moe_checkpoint **out)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !dir || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "dir or out is NULL");
    *out = NULL;
    w4a8moe_checkpoint *h = calloc(1, sizeof *h);
    RETURN_IF(err, !h, W4A8MOE_STATUS_OUT_OF_MEMORY, "checkpoint handle");
    w4a8moe_status st = w4a8moe_ckpt_open(dir, &h->c, err);
    if (st != W4A8MOE_STATUS_OK) {
        free(h);
        return st;
    }
    *out = h;
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_checkpoint_close(w4a8moe_checkpoint *ckpt)
{
    if (!ckpt) return;
    w4a8moe_ckpt_release(ckpt->c);
    free(ckpt);
}

w4a8moe_status w4a8moe_checkpoint_get_info_sized(const w4a8moe_checkpoint *ckpt,
                                                 w4a8moe_checkpoint_info *caller, size_t size)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !ckpt || !caller, W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt or info is NULL");
    const w4a8moe_hf_config *cfg = w4a8moe_ckpt_config(ckpt->c);
    w4a8moe_checkpoint_info ii, *info = &ii;
    memset(info, 0, sizeof *info);
    info->architecture = w4a8moe_arch_name(cfg->arch);
    info->format = w4a8moe_ckpt_format_name(cfg->quantized ? cfg->format : W4A8MOE_CKPT_FORMAT_DENSE);
    info->quant_method = cfg->quant_method;
    info->weight_scheme = cfg->weight_scheme;
    info->act_scheme = cfg->act_scheme;
    info->num_layers = cfg->num_layers;
    info->num_moe_layers = cfg->n_moe_layers;
    info->moe_layers = cfg->moe_layers;
    info->hidden = cfg->hidden;
    info->inter = cfg->moe_inter;
    info->num_experts = cfg->num_experts;
    info->top_k = cfg->top_k;
    info->group_size = cfg->group_size;
    info->activation = cfg->activation;
    info->routing = cfg->routing;
    info->router_weight_on_input = cfg->router_weight_on_input;
    info->has_shared_expert = cfg->has_shared;
    info->shared_inter = cfg->shared_inter;
    info->shared_gated = cfg->shared_gated;
    w4a8moe_struct_out(caller, size, info, sizeof *info, W4A8MOE_V3_CHECKPOINT_INFO);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_checkpoint_layer_desc_sized(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                   int64_t max_tokens, w4a8moe_layer_desc *d,
                                                   size_t size)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !ckpt || !d, W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt or d is NULL");
    const w4a8moe_hf_config *cfg = w4a8moe_ckpt_config(ckpt->c);
    uint8_t *none = calloc((size_t)cfg->num_experts, 1); /* no expert's weights: just the desc */
    RETURN_IF(err, !none, W4A8MOE_STATUS_OUT_OF_MEMORY, "expert flags");
    w4a8moe_ckpt_layer *l;
    w4a8moe_status st = w4a8moe_ckpt_layer_load(ckpt->c, layer, none, 0, &l, err);
    free(none);
    FORWARD(st);
    w4a8moe_layer_desc out = l->desc; /* score_bias points into the checkpoint's cache */
    out.max_tokens = max_tokens;
    w4a8moe_ckpt_layer_free(l);
    w4a8moe_struct_out(d, size, &out, sizeof out, W4A8MOE_V3_LAYER_DESC);
    return W4A8MOE_STATUS_OK;
}

/* experts_subset → which experts to load, and the expert-parallel rank it is the block of. */
static w4a8moe_status subset_flags(int32_t E, const int32_t *subset, int32_t n, uint8_t *want,
                                   int32_t *rank, int32_t *size, w4a8moe_err *err)
{
    *rank = 0;
    *size = 1;
    if (!subset) {
        memset(want, 1, (size_t)E);
        return W4A8MOE_STATUS_OK;
    }
    RETURN_IF(err, n < 1 || n > E || E % n, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "experts_subset of %d experts must split E = %d evenly (a rank's block)", n, E);
    memset(want, 0, (size_t)E);
    int32_t lo = E;
    for (int32_t i = 0; i < n; i++) {
        RETURN_IF(err, subset[i] < 0 || subset[i] >= E || want[subset[i]], W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "experts_subset[%d] = %d is outside [0, E = %d) or repeated", i, subset[i], E);
        want[subset[i]] = 1;
        if (subset[i] < lo) lo = subset[i];
    }
    for (int32_t e = lo; e < lo + n; e++)
        RETURN_IF(err, e >= E || !want[e] || lo % n, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "experts_subset must be the contiguous block [r*%d, (r+1)*%d) of one "
                  "expert-parallel rank",
                  n, n);
    *rank = lo / n;
    *size = E / n;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status same_field(int64_t a, int64_t b, const char *what, w4a8moe_err *err)
{
    RETURN_IF(err, a != b, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "layer description: %s = %lld, but the checkpoint's is %lld; hint: start from "
              "w4a8moe_checkpoint_layer_desc",
              what, (long long)a, (long long)b);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status check_desc(const w4a8moe_layer_desc *d, const w4a8moe_layer_desc *c,
                                 w4a8moe_err *err)
{
    FORWARD(same_field(d->hidden, c->hidden, "hidden", err));
    FORWARD(same_field(d->inter, c->inter, "inter", err));
    FORWARD(same_field(d->num_experts, c->num_experts, "num_experts", err));
    FORWARD(same_field(d->group_size, c->group_size, "group_size", err));
    FORWARD(same_field(d->weight_scheme, c->weight_scheme, "weight_scheme", err));
    FORWARD(same_field(d->act_scheme, c->act_scheme, "act_scheme", err));
    return W4A8MOE_STATUS_OK;
}

static void release_layer(void *p) { w4a8moe_ckpt_layer_free(p); }

static w4a8moe_status create(const w4a8moe_checkpoint *ckpt, int32_t layer,
                             const w4a8moe_layer_desc *user, int64_t max_tokens,
                             const w4a8moe_layer_options *opts, const int32_t *subset,
                             int32_t n_subset, w4a8moe_layer **out, w4a8moe_err *err)
{
    RETURN_IF(err, !ckpt || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt or out is NULL");
    *out = NULL;
    w4a8moe_layer_desc user_copy;
    w4a8moe_layer_options o;
    if (user) {
        FORWARD(STRUCT_IN(err, &user_copy, user, w4a8moe_layer_desc, W4A8MOE_V3_LAYER_DESC));
        user = &user_copy;
    }
    memset(&o, 0, sizeof o);
    if (opts) FORWARD(STRUCT_IN(err, &o, opts, w4a8moe_layer_options, W4A8MOE_V3_LAYER_OPTIONS));
    int32_t E = w4a8moe_ckpt_config(ckpt->c)->num_experts, rank, size;
    uint8_t *want = malloc((size_t)E);
    RETURN_IF(err, !want, W4A8MOE_STATUS_OUT_OF_MEMORY, "expert flags");
    w4a8moe_status st = subset_flags(E, subset, n_subset, want, &rank, &size, err);
    w4a8moe_ckpt_layer *l = NULL;
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_ckpt_layer_load(ckpt->c, layer, want, !ckpt->routed_only, &l, err);
    free(want);
    FORWARD(st);
    w4a8moe_layer_desc d = l->desc;
    if (user) {
        st = check_desc(user, &l->desc, err);
        d = *user;
        if (!d.routing.score_bias) d.routing.score_bias = l->score_bias;
    }
    if (!user) d.max_tokens = max_tokens;
    if (subset) {
        d.ep_rank = rank;
        d.ep_size = size;
    }
    /* the layer owns l, so CPU backends may keep pointers into it and into the mapping */
    if (o.device_kind == W4A8MOE_DEVICE_CPU) o.borrow_weights = 1;
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_layer_create(&d, &l->weights, &o, out);
    if (st != W4A8MOE_STATUS_OK) {
        w4a8moe_ckpt_layer_free(l);
        return st;
    }
    w4a8moe_layer_attach_owner(*out, release_layer, l);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_checkpoint_layer_create(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                               const w4a8moe_layer_options *opts,
                                               const int32_t *experts_subset, int32_t n_subset,
                                               int64_t max_tokens, w4a8moe_layer **out)
{
    return create(ckpt, layer, NULL, max_tokens, opts, experts_subset, n_subset, out, fresh_err());
}

w4a8moe_status w4a8moe_checkpoint_layer_create_desc(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                    const w4a8moe_layer_desc *d,
                                                    const w4a8moe_layer_options *opts,
                                                    const int32_t *experts_subset,
                                                    int32_t n_subset, w4a8moe_layer **out)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !d, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer description is NULL");
    return create(ckpt, layer, d, 0, opts, experts_subset, n_subset, out, err);
}

w4a8moe_status w4a8moe_checkpoint_memory_sized(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                               const w4a8moe_layer_options *opts, int64_t tokens,
                                               w4a8moe_memory_info *info, size_t size)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !ckpt, W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt is NULL");
    /* the layer as create would load it (pack-quantized weights stay in the mapping), for its
     * description and its shared expert's scheme and size */
    w4a8moe_ckpt_layer *l = NULL;
    FORWARD(w4a8moe_ckpt_layer_load(ckpt->c, layer, NULL, !ckpt->routed_only, &l, err));
    w4a8moe_status st = w4a8moe_memory_estimate_sized(&l->desc, l->has_shared ? &l->shared : NULL,
                                                      opts, tokens, info, size);
    w4a8moe_ckpt_layer_free(l);
    return st;
}

w4a8moe_status w4a8moe_checkpoint_router_logits(const w4a8moe_checkpoint *ckpt, int32_t layer,
                                                int64_t T, const void *x, w4a8moe_dtype x_dtype,
                                                float *logits)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !ckpt, W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt is NULL");
    return w4a8moe_ckpt_router_logits(ckpt->c, layer, T, x, x_dtype, logits, err);
}

static void append(char *buf, size_t cap, size_t *used, const char *line)
{
    int n = snprintf(*used < cap ? buf + *used : NULL, *used < cap ? cap - *used : 0, "%s\n", line);
    if (n > 0) *used += (size_t)n;
}

w4a8moe_status w4a8moe_checkpoint_check(const w4a8moe_checkpoint *ckpt, char *buf, size_t cap,
                                        size_t *needed)
{
    w4a8moe_err *err = fresh_err();
    RETURN_IF(err, !ckpt || (!buf && cap), W4A8MOE_STATUS_INVALID_ARGUMENT, "ckpt or buf is NULL");
    if (cap) buf[0] = '\0';
    const w4a8moe_hf_config *cfg = w4a8moe_ckpt_config(ckpt->c);
    w4a8moe_status first = W4A8MOE_STATUS_OK;
    w4a8moe_err first_err = {{0}}, e;
    size_t used = 0;
    char line[W4A8MOE_ERR_CAP + 32];
    for (int32_t i = 0; i < cfg->n_moe_layers; i++) {
        int32_t L = cfg->moe_layers[i];
        w4a8moe_ckpt_layer *l = NULL;
        e.msg[0] = '\0';
        w4a8moe_status st = w4a8moe_ckpt_router_logits(ckpt->c, L, 0, NULL, W4A8MOE_DTYPE_F32, NULL, &e);
        if (st == W4A8MOE_STATUS_OK) st = w4a8moe_ckpt_layer_load(ckpt->c, L, NULL, 1, &l, &e);
        w4a8moe_ckpt_layer_free(l);
        if (st == W4A8MOE_STATUS_OK) continue;
        snprintf(line, sizeof line, "layer %d: %s", L, e.msg);
        append(buf, cap, &used, line);
        if (first == W4A8MOE_STATUS_OK) {
            first = st;
            first_err = e;
        }
    }
    if (needed) *needed = used + 1;
    if (first != W4A8MOE_STATUS_OK) *err = first_err;
    return first;
}
