/*
 * ckpt_layer.c — one MoE layer of a checkpoint decoded into the logical form (see
 * checkpoint.h for the formats). Every tensor is checked for dtype and shape before its bytes
 * are read; a tensor that breaks the format is FORMAT_ERROR naming it and what was expected.
 */
#include "ckpt_internal.h"
#include "names.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_CAP 320

static w4a8moe_status own(w4a8moe_ckpt_layer *l, size_t bytes, void **p, w4a8moe_err *err)
{
    if (l->nbufs == l->capbufs) {
        size_t cap = l->capbufs ? 2 * l->capbufs : 64;
        void **b = realloc(l->bufs, cap * sizeof *b);
        RETURN_IF(err, !b, W4A8MOE_STATUS_OUT_OF_MEMORY, "buffer table");
        l->bufs = b;
        l->capbufs = cap;
    }
    *p = malloc(bytes ? bytes : 1);
    RETURN_IF(err, !*p, W4A8MOE_STATUS_OUT_OF_MEMORY, "decoded buffer of %zu bytes", bytes);
    l->bufs[l->nbufs++] = *p;
    return W4A8MOE_STATUS_OK;
}

static void fmt_name(char *buf, const char *module, const char *suffix)
{
    snprintf(buf, NAME_CAP, "%.280s.%.24s", module, suffix); /* names are far shorter */
}

static w4a8moe_status expect(const w4a8moe_st_tensor *t, w4a8moe_st_dtype dt, int64_t d0, int64_t d1,
                             w4a8moe_err *err)
{
    RETURN_IF(err, t->dtype != dt, W4A8MOE_STATUS_FORMAT_ERROR, "tensor '%s': dtype %s, expected %s",
              t->name, w4a8moe_st_dtype_name(t->dtype), w4a8moe_st_dtype_name(dt));
    RETURN_IF(err, t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': shape %s[%lld, %lld], expected [%lld, %lld]", t->name,
              t->ndim != 2 ? "of rank != 2, " : "", (long long)(t->ndim > 0 ? t->shape[0] : -1),
              (long long)(t->ndim > 1 ? t->shape[1] : -1), (long long)d0, (long long)d1);
    return W4A8MOE_STATUS_OK;
}

/* The tensor's data where it lies when aligned for its element size, else an owned copy. */
static w4a8moe_status view(w4a8moe_ckpt_layer *l, const w4a8moe_st_tensor *t, const void **out,
                           int *copied, w4a8moe_err *err)
{
    size_t a = w4a8moe_st_dtype_size(t->dtype);
    if ((uintptr_t)t->data % a == 0) {
        *out = t->data;
        return W4A8MOE_STATUS_OK;
    }
    void *p;
    FORWARD(own(l, t->nbytes, &p, err));
    memcpy(p, t->data, t->nbytes);
    *out = p;
    if (copied) *copied = 1;
    return W4A8MOE_STATUS_OK;
}

/* weight_shape (I64 or I32 [2]) must say [N, K]. */
static w4a8moe_status check_weight_shape(const w4a8moe_ckpt *c, const char *module, int64_t N,
                                         int64_t K, w4a8moe_err *err)
{
    char name[NAME_CAP];
    fmt_name(name, module, "weight_shape");
    const w4a8moe_st_tensor *t = w4a8moe_ckpt_find(c, name);
    if (!t) return W4A8MOE_STATUS_OK;
    RETURN_IF(err, (t->dtype != W4A8MOE_ST_I64 && t->dtype != W4A8MOE_ST_I32) || t->numel != 2,
              W4A8MOE_STATUS_FORMAT_ERROR, "tensor '%s': must be 2 integers (I64 or I32), is %s with %lld elements",
              name, w4a8moe_st_dtype_name(t->dtype), (long long)t->numel);
    int64_t v[2];
    for (int i = 0; i < 2; i++) {
        if (t->dtype == W4A8MOE_ST_I64) memcpy(&v[i], (const char *)t->data + 8 * i, 8);
        else {
            int32_t x;
            memcpy(&x, (const char *)t->data + 4 * i, 4);
            v[i] = x;
        }
    }
    RETURN_IF(err, v[0] != N || v[1] != K, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s' = [%lld, %lld], but the configuration gives this weight the shape [%lld, %lld]",
              name, (long long)v[0], (long long)v[1], (long long)N, (long long)K);
    return W4A8MOE_STATUS_OK;
}

/* int-quantized: I8 [N, K] in [-8, 7] → packed (q + 8) 8 per word. */
static w4a8moe_status decode_int8(w4a8moe_ckpt_layer *l, const w4a8moe_st_tensor *t, int64_t N,
                                  int64_t K, const int32_t **out, w4a8moe_err *err)
{
    void *p;
    FORWARD(own(l, (size_t)(N * K / 2), &p, err));
    uint32_t *w = p;
    const int8_t *q = t->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k0 = 0; k0 < K; k0 += 8) {
            uint32_t word = 0;
            for (int i = 0; i < 8; i++) {
                int v = q[n * K + k0 + i];
                RETURN_IF(err, v < -8 || v > 7, W4A8MOE_STATUS_FORMAT_ERROR,
                          "tensor '%s' holds %d at [%lld, %lld], outside int4 [-8, 7]", t->name, v,
                          (long long)n, (long long)(k0 + i));
                word |= (uint32_t)(v + 8) << (4 * i);
            }
            w[(n * K + k0) / 8] = word;
        }
    *out = p;
    return W4A8MOE_STATUS_OK;
}

/* SGLang: I8 [N, K/2], two's-complement nibbles, low nibble = even element. A nibble's
 * two's-complement code x and our stored q + 8 differ only in the top bit (x XOR 8), and the
 * byte order puts element i at bits 4*(i%8) of a little-endian word: one XOR per 4 bytes. */
static w4a8moe_status decode_sglang(w4a8moe_ckpt_layer *l, const w4a8moe_st_tensor *t, int64_t N,
                                    int64_t K, const int32_t **out, w4a8moe_err *err)
{
    void *p;
    FORWARD(own(l, (size_t)(N * K / 2), &p, err));
    uint32_t *w = p;
    const uint8_t *b = t->data;
    for (int64_t i = 0; i < N * K / 8; i++)
        w[i] = ((uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
                (uint32_t)b[4 * i + 3] << 24) ^ 0x88888888u;
    *out = p;
    return W4A8MOE_STATUS_OK;
}

typedef struct int4_ctx {
    w4a8moe_ckpt_layer *l;
    const w4a8moe_ckpt *c;
    w4a8moe_ckpt_format format;
    int32_t g;
    int scale_dt;   /* -1 until the first scale; then every scale must agree */
    int copied;     /* some tensor was decoded or copied (not zero-copy) */
} int4_ctx;

static w4a8moe_status load_scale(int4_ctx *x, const char *module, int64_t N, int64_t K,
                                 const void **out, w4a8moe_err *err)
{
    char name[NAME_CAP];
    int sg = x->format == W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8;
    fmt_name(name, module, sg ? "weight_scale_inv" : "weight_scale");
    const w4a8moe_st_tensor *t;
    FORWARD(w4a8moe_ckpt_get(x->c, name, &t, err));
    int dt = w4a8moe_st_to_dtype(t->dtype);
    RETURN_IF(err, dt < 0 || (sg && dt != W4A8MOE_DTYPE_F32), W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': dtype %s; expected %s", name, w4a8moe_st_dtype_name(t->dtype),
              sg ? "F32" : "BF16, F16 or F32");
    FORWARD(expect(t, t->dtype, N, K / x->g, err));
    if (x->scale_dt < 0) x->scale_dt = dt;
    RETURN_IF(err, dt != x->scale_dt, W4A8MOE_STATUS_UNSUPPORTED,
              "tensor '%s': dtype %s differs from the layer's other scales; hint: w4a8moe needs "
              "one scale dtype per layer",
              name, w4a8moe_st_dtype_name(t->dtype));
    return view(x->l, t, out, &x->copied, err);
}

static w4a8moe_status load_int4(int4_ctx *x, const char *module, int64_t N, int64_t K,
                                w4a8moe_int4_matrix *m, w4a8moe_err *err)
{
    char name[NAME_CAP];
    const w4a8moe_st_tensor *t;
    memset(m, 0, sizeof *m);
    m->rows = N;
    m->cols = K;
    switch (x->format) {
    case W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED: {
        fmt_name(name, module, "weight_packed");
        FORWARD(w4a8moe_ckpt_get(x->c, name, &t, err));
        FORWARD(expect(t, W4A8MOE_ST_I32, N, K / 8, err));
        FORWARD(check_weight_shape(x->c, module, N, K, err));
        const void *p;
        FORWARD(view(x->l, t, &p, &x->copied, err));
        m->packed = p;
        break;
    }
    case W4A8MOE_CKPT_FORMAT_INT_QUANTIZED:
        fmt_name(name, module, "weight");
        FORWARD(w4a8moe_ckpt_get(x->c, name, &t, err));
        FORWARD(expect(t, W4A8MOE_ST_I8, N, K, err));
        FORWARD(decode_int8(x->l, t, N, K, &m->packed, err));
        x->copied = 1;
        break;
    case W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8:
        fmt_name(name, module, "weight");
        FORWARD(w4a8moe_ckpt_get(x->c, name, &t, err));
        FORWARD(expect(t, W4A8MOE_ST_I8, N, K / 2, err));
        FORWARD(decode_sglang(x->l, t, N, K, &m->packed, err));
        x->copied = 1;
        break;
    default:
        RETURN_ERR(err, W4A8MOE_STATUS_UNSUPPORTED,
                   "%s: the weights are not quantised (format %s); hint: `w4a8moe quantize` makes a "
                   "W4AFP8 checkpoint from it",
                   module, w4a8moe_ckpt_format_name(x->format));
    }
    return load_scale(x, module, N, K, &m->scale, err);
}

/* A one-element static scale (F32/BF16/F16), finite and > 0. */
static w4a8moe_status read_scalar(const w4a8moe_ckpt *c, const char *name, float *v, w4a8moe_err *err)
{
    const w4a8moe_st_tensor *t;
    FORWARD(w4a8moe_ckpt_get(c, name, &t, err));
    int dt = w4a8moe_st_to_dtype(t->dtype);
    RETURN_IF(err, dt < 0 || t->numel != 1, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': a static scale must be one F32/BF16/F16 value (is %s with %lld elements)",
              name, w4a8moe_st_dtype_name(t->dtype), (long long)t->numel);
    *v = w4a8moe_ckpt_elem(t->data, dt, 0);
    RETURN_IF(err, !(*v > 0.0f) || isinf(*v), W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s' = %g; a static activation scale must be finite and > 0", name, (double)*v);
    return W4A8MOE_STATUS_OK;
}

/* Static scale of one projection: SGLang's experts.e.w1|w3|w2.input_scale, else
 * <module>.input_scale. */
static w4a8moe_status proj_input_scale(const w4a8moe_ckpt *c, int32_t layer, int32_t e,
                                       w4a8moe_proj p, const char *module, float *v, w4a8moe_err *err)
{
    char name[NAME_CAP];
    if (e >= 0 && c->cfg.format == W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8) {
        w4a8moe_name_sglang_input_scale(&c->cfg, layer, e, p, name, sizeof name);
        if (w4a8moe_ckpt_find(c, name)) return read_scalar(c, name, v, err);
    }
    fmt_name(name, module, "input_scale");
    return read_scalar(c, name, v, err);
}

/* docs/numerics.md step 2 (static): GEMM1 scale = max over every expert's gate and up scales, GEMM2
 * scale = max over their down scales. */
static w4a8moe_status static_scales(const w4a8moe_ckpt *c, int32_t layer, float *in, float *mid,
                                    w4a8moe_err *err)
{
    char module[NAME_CAP];
    *in = *mid = 0.0f;
    for (int32_t e = 0; e < c->cfg.num_experts; e++)
        for (int p = 0; p < W4A8MOE_PROJ_COUNT_; p++) {
            float v;
            w4a8moe_name_expert(&c->cfg, layer, e, (w4a8moe_proj)p, module, sizeof module);
            FORWARD(proj_input_scale(c, layer, e, (w4a8moe_proj)p, module, &v, err));
            float *dst = p == W4A8MOE_PROJ_DOWN ? mid : in;
            if (v > *dst) *dst = v;
        }
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status load_expert(int4_ctx *x, int32_t layer, int32_t e, w4a8moe_expert_weights *w,
                                  w4a8moe_err *err)
{
    const w4a8moe_hf_config *cfg = &x->c->cfg;
    int64_t H = cfg->hidden, I = cfg->moe_inter;
    char module[NAME_CAP];
    w4a8moe_name_expert(cfg, layer, e, W4A8MOE_PROJ_GATE, module, sizeof module);
    FORWARD(load_int4(x, module, I, H, &w->gate, err));
    w4a8moe_name_expert(cfg, layer, e, W4A8MOE_PROJ_UP, module, sizeof module);
    FORWARD(load_int4(x, module, I, H, &w->up, err));
    w4a8moe_name_expert(cfg, layer, e, W4A8MOE_PROJ_DOWN, module, sizeof module);
    return load_int4(x, module, H, I, &w->down, err);
}

/* The router's e_score_correction_bias as f32, cached in the checkpoint per layer. */
static w4a8moe_status score_bias(w4a8moe_ckpt *c, int32_t layer, float **out, w4a8moe_err *err)
{
    *out = NULL;
    if (!c->cfg.has_score_bias) return W4A8MOE_STATUS_OK;
    if (c->bias_cache[layer]) {
        *out = c->bias_cache[layer];
        return W4A8MOE_STATUS_OK;
    }
    char name[NAME_CAP];
    const w4a8moe_st_tensor *t;
    w4a8moe_name_score_bias(&c->cfg, layer, name, sizeof name);
    FORWARD(w4a8moe_ckpt_get(c, name, &t, err));
    int dt = w4a8moe_st_to_dtype(t->dtype);
    int64_t E = c->cfg.num_experts;
    RETURN_IF(err, dt < 0 || t->ndim != 1 || t->shape[0] != E, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': must be F32/BF16/F16 [E = %lld], is %s with %lld elements", name,
              (long long)E, w4a8moe_st_dtype_name(t->dtype), (long long)t->numel);
    float *b = malloc((size_t)E * sizeof *b);
    RETURN_IF(err, !b, W4A8MOE_STATUS_OUT_OF_MEMORY, "score bias");
    for (int64_t e = 0; e < E; e++) b[e] = w4a8moe_ckpt_elem(t->data, dt, e);
    c->bias_cache[layer] = b;
    *out = b;
    return W4A8MOE_STATUS_OK;
}

static void fill_desc(const w4a8moe_hf_config *cfg, w4a8moe_layer_desc *d)
{
    memset(d, 0, sizeof *d);
    d->hidden = cfg->hidden;
    d->inter = cfg->moe_inter;
    d->num_experts = cfg->num_experts;
    d->top_k = cfg->top_k;
    d->group_size = cfg->group_size;
    d->activation = cfg->activation;
    d->weight_scheme = cfg->weight_scheme;
    d->act_scheme = cfg->act_scheme;
    d->io_dtype = W4A8MOE_DTYPE_BF16;
    d->routing = cfg->routing;
    d->router_weight_on_input = cfg->router_weight_on_input;
    d->ep_size = 1;
}

w4a8moe_status w4a8moe_ckpt_load_shared(w4a8moe_ckpt_layer *l, w4a8moe_ckpt *c, int32_t layer,
                                        w4a8moe_err *err);

static w4a8moe_status layer_build(w4a8moe_ckpt_layer *l, w4a8moe_ckpt *c, int32_t layer,
                                  const uint8_t *want, int with_shared, w4a8moe_err *err)
{
    const w4a8moe_hf_config *cfg = &c->cfg;
    RETURN_IF(err, !w4a8moe_hf_config_is_moe(cfg, layer), W4A8MOE_STATUS_NOT_FOUND,
              "%s: layer %d is not an MoE layer (the configuration has %d layers, %d of them MoE)",
              c->dir, layer, cfg->num_layers, cfg->n_moe_layers);
    RETURN_IF(err, !cfg->quantized, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: the checkpoint is not quantised; hint: `w4a8moe quantize` makes a W4AFP8 "
              "checkpoint from it",
              c->dir);
    fill_desc(cfg, &l->desc);
    if (cfg->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC)
        FORWARD(static_scales(c, layer, &l->desc.act_scale_in, &l->desc.act_scale_mid, err));
    FORWARD(score_bias(c, layer, &l->score_bias, err));
    l->desc.routing.score_bias = l->score_bias;
    int32_t E = cfg->num_experts;
    l->experts = calloc((size_t)E, sizeof *l->experts);
    RETURN_IF(err, !l->experts, W4A8MOE_STATUS_OUT_OF_MEMORY, "expert table");
    int4_ctx x = {l, c, cfg->format, cfg->group_size, -1, 0};
    for (int32_t e = 0; e < E; e++) {
        if (want && !want[e]) continue;
        FORWARD(load_expert(&x, layer, e, &l->experts[e], err));
        l->n_loaded++;
    }
    l->zero_copy = !x.copied;
    l->weights.scale_dtype = x.scale_dt < 0 ? W4A8MOE_DTYPE_BF16 : (w4a8moe_dtype)x.scale_dt;
    l->weights.experts = l->experts;
    if (with_shared && cfg->has_shared) {
        FORWARD(w4a8moe_ckpt_load_shared(l, c, layer, err));
        l->has_shared = 1;
        l->weights.shared = &l->shared;
    }
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_ckpt_layer_load(w4a8moe_ckpt *c, int32_t layer, const uint8_t *want,
                                       int with_shared, w4a8moe_ckpt_layer **out, w4a8moe_err *err)
{
    RETURN_IF(err, !c || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "checkpoint layer: NULL argument");
    *out = NULL;
    w4a8moe_ckpt_layer *l = calloc(1, sizeof *l);
    RETURN_IF(err, !l, W4A8MOE_STATUS_OUT_OF_MEMORY, "checkpoint layer");
    l->layer = layer;
    l->ckpt = c;
    w4a8moe_ckpt_retain(c);
    w4a8moe_status st = layer_build(l, c, layer, want, with_shared, err);
    if (st != W4A8MOE_STATUS_OK) {
        w4a8moe_ckpt_layer_free(l);
        return st;
    }
    *out = l;
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_ckpt_layer_free(w4a8moe_ckpt_layer *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->nbufs; i++) free(l->bufs[i]);
    free(l->bufs);
    free(l->experts);
    w4a8moe_ckpt_release(l->ckpt);
    free(l);
}

/* ---- shared experts ---------------------------------------------------------------------- */

/* DeepSeek block FP8: F8_E4M3 [N, K] with weight_scale_inv F32 [ceil(N/128), ceil(K/128)]
 * (a multiply scale), dequantised to f32. */
static w4a8moe_status dequant_block_fp8(w4a8moe_ckpt_layer *l, const w4a8moe_ckpt *c,
                                        const w4a8moe_st_tensor *t, const char *module, int64_t N,
                                        int64_t K, w4a8moe_dense_matrix *m, w4a8moe_err *err)
{
    char name[NAME_CAP];
    fmt_name(name, module, "weight_scale_inv");
    const w4a8moe_st_tensor *s;
    FORWARD(w4a8moe_ckpt_get(c, name, &s, err));
    int64_t bn = (N + 127) / 128, bk = (K + 127) / 128;
    FORWARD(expect(s, W4A8MOE_ST_F32, bn, bk, err));
    void *p;
    FORWARD(own(l, (size_t)(N * K) * sizeof(float), &p, err));
    float *w = p;
    const uint8_t *q = t->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            w[n * K + k] = w4a8moe_e4m3_to_f32(q[n * K + k]) *
                           w4a8moe_ckpt_elem(s->data, W4A8MOE_DTYPE_F32, (n / 128) * bk + k / 128);
    m->data = w;
    m->dtype = W4A8MOE_DTYPE_F32;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status load_dense(w4a8moe_ckpt_layer *l, const w4a8moe_ckpt *c, const char *module,
                                 int64_t N, int64_t K, w4a8moe_dense_matrix *m, const char **fmt,
                                 w4a8moe_err *err)
{
    char name[NAME_CAP];
    fmt_name(name, module, "weight");
    const w4a8moe_st_tensor *t = w4a8moe_ckpt_find(c, name);
    if (!t) {
        fmt_name(name, module, "weight_packed");
        RETURN_IF(err, w4a8moe_ckpt_find(c, name), W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: the shared expert is quantised (weight_packed) but no config group covers "
                  "it; hint: its config group or ignore entry is wrong",
                  module);
        fmt_name(name, module, "weight");
        FORWARD(w4a8moe_ckpt_get(c, name, &t, err));
    }
    m->rows = N;
    m->cols = K;
    if (t->dtype == W4A8MOE_ST_F8_E4M3) {
        FORWARD(expect(t, W4A8MOE_ST_F8_E4M3, N, K, err));
        *fmt = "block-fp8 (dequantised to f32)";
        return dequant_block_fp8(l, c, t, module, N, K, m, err);
    }
    int dt = w4a8moe_st_to_dtype(t->dtype);
    RETURN_IF(err, dt < 0, W4A8MOE_STATUS_UNSUPPORTED,
              "tensor '%s': an unquantised shared expert of dtype %s; hint: w4a8moe runs bf16, f16, "
              "f32 or DeepSeek block-FP8 ones",
              name, w4a8moe_st_dtype_name(t->dtype));
    FORWARD(expect(t, t->dtype, N, K, err));
    m->dtype = (w4a8moe_dtype)dt;
    *fmt = dt == W4A8MOE_DTYPE_BF16 ? "bf16" : dt == W4A8MOE_DTYPE_F16 ? "f16" : "f32";
    return view(l, t, &m->data, NULL, err);
}

static w4a8moe_status load_shared_gate(w4a8moe_ckpt_layer *l, const w4a8moe_ckpt *c, int32_t layer,
                                       w4a8moe_err *err)
{
    char module[NAME_CAP], name[NAME_CAP];
    if (w4a8moe_name_shared_gate(&c->cfg, layer, module, sizeof module) != 0) return W4A8MOE_STATUS_OK;
    fmt_name(name, module, "weight");
    const w4a8moe_st_tensor *t;
    FORWARD(w4a8moe_ckpt_get(c, name, &t, err));
    int dt = w4a8moe_st_to_dtype(t->dtype);
    RETURN_IF(err, dt < 0 || t->numel != c->cfg.hidden, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': must be F32/BF16/F16 [1, H = %lld], is %s with %lld elements", name,
              (long long)c->cfg.hidden, w4a8moe_st_dtype_name(t->dtype), (long long)t->numel);
    l->shared.gate_weight_dtype = (w4a8moe_dtype)dt;
    return view(l, t, &l->shared.gate_weight, NULL, err);
}

w4a8moe_status w4a8moe_ckpt_load_shared(w4a8moe_ckpt_layer *l, w4a8moe_ckpt *c, int32_t layer,
                                        w4a8moe_err *err)
{
    const w4a8moe_hf_config *cfg = &c->cfg;
    int64_t H = cfg->hidden, I = cfg->shared_inter;
    char mod[3][NAME_CAP];
    for (int p = 0; p < 3; p++) w4a8moe_name_shared(cfg, layer, (w4a8moe_proj)p, mod[p], NAME_CAP);
    w4a8moe_shared_expert *s = &l->shared;
    s->inter = I;
    const w4a8moe_hf_qgroup *g = w4a8moe_hf_config_group_for(cfg, mod[0]);
    if (g) {
        RETURN_IF(err, !g->supported, W4A8MOE_STATUS_UNSUPPORTED, "shared expert %s: %s", mod[0], g->why);
        RETURN_IF(err, H % g->group_size || I % g->group_size, W4A8MOE_STATUS_FORMAT_ERROR,
                  "shared expert %s: its group size %d does not divide H = %lld and I = %lld", mod[0],
                  g->group_size, (long long)H, (long long)I);
        int4_ctx x = {l, c, g->format, g->group_size, -1, 0};
        FORWARD(load_int4(&x, mod[0], I, H, &s->int4.gate, err));
        FORWARD(load_int4(&x, mod[1], I, H, &s->int4.up, err));
        FORWARD(load_int4(&x, mod[2], H, I, &s->int4.down, err));
        s->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
        s->act_scheme = g->act_scheme;
        s->group_size = g->group_size;
        s->scale_dtype = (w4a8moe_dtype)x.scale_dt;
        l->shared_format = g->format == W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED ? "int4 pack-quantized"
                                                                          : "int4 int-quantized";
        if (g->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
            float a, b, d;
            FORWARD(proj_input_scale(c, layer, -1, W4A8MOE_PROJ_GATE, mod[0], &a, err));
            FORWARD(proj_input_scale(c, layer, -1, W4A8MOE_PROJ_UP, mod[1], &b, err));
            FORWARD(proj_input_scale(c, layer, -1, W4A8MOE_PROJ_DOWN, mod[2], &d, err));
            s->act_scale_in = a > b ? a : b;
            s->act_scale_mid = d;
        }
    } else {
        FORWARD(load_dense(l, c, mod[0], I, H, &s->gate, &l->shared_format, err));
        FORWARD(load_dense(l, c, mod[1], I, H, &s->up, &l->shared_format, err));
        FORWARD(load_dense(l, c, mod[2], H, I, &s->down, &l->shared_format, err));
        s->weight_scheme = W4A8MOE_WEIGHT_BF16;
        s->act_scheme = W4A8MOE_ACT_BF16;
        s->group_size = cfg->group_size;
    }
    return load_shared_gate(l, c, layer, err);
}
