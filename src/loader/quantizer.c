/*
 * quantizer.c — round-to-nearest int4 quantisation (compressed-tensors' min-max convention,
 * quantizer.h) and the checkpoint pass behind `w4a8moe quantize`: plan every output tensor from
 * the source headers, split the plan into shards, then stream shard by shard (inputs mapped,
 * a shard's quantised tensors in RAM or a mapped scratch file until the writer copies them).
 * Files, config.json and the index are in quantizer_files.c.
 */
#include "quantizer.h"

#include "../common/quant.h"
#include "names.h"
#include "quantizer_impl.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- one matrix ---------------------------------------------------------------------------- */

/* Rows gathered to f32 at a time: a [64, K] tile, so a transposed (input-major) view is read
 * along its contiguous axis. 64 rows x 16384 cols x 4 B = 4 MB at most. */
#define RTN_TILE_ROWS 64

/* PyTorch's CPU arithmetic on bf16/f16 tensors: compute in f32, round the result to the dtype
 * (round to nearest even). bf16 is done branch-free on the bits (no NaN or inf reaches here:
 * inputs are checked finite and scales are > 0), so the loops below vectorise. */
static inline float round_bf16(float x)
{
    uint32_t u = w4a8moe_f32_bits(x);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return w4a8moe_bits_f32(u);
}

static float round_to_dtype(float x, w4a8moe_st_dtype dt)
{
    if (dt == W4A8MOE_ST_BF16) return round_bf16(x);
    if (dt == W4A8MOE_ST_F16) return w4a8moe_f16_to_f32(w4a8moe_f32_to_f16(x));
    return x;
}

/* torch.finfo(dtype).eps: what calculate_qparams puts in place of a zero scale. */
static float dtype_eps(w4a8moe_st_dtype dt)
{
    if (dt == W4A8MOE_ST_BF16) return 0.0078125f;     /* 2^-7 */
    if (dt == W4A8MOE_ST_F16) return 0.0009765625f;   /* 2^-10 */
    return FLT_EPSILON;                                /* 2^-23 */
}

static void store_scale(void *scale, w4a8moe_st_dtype dt, int64_t i, float v)
{
    if (dt == W4A8MOE_ST_BF16) ((uint16_t *)scale)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == W4A8MOE_ST_F16) ((uint16_t *)scale)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)scale)[i] = v;
}

/* n elements from src (stride elements apart) widened to f32 (exactly) into dst. */
static void widen(const void *src, w4a8moe_st_dtype dt, int64_t at, int64_t stride, int64_t n,
                  float *dst)
{
    if (dt == W4A8MOE_ST_BF16 && stride == 1) {
        const uint16_t *p = (const uint16_t *)src + at;
        for (int64_t i = 0; i < n; i++) dst[i] = w4a8moe_bits_f32((uint32_t)p[i] << 16);
    } else if (dt == W4A8MOE_ST_BF16) {
        const uint16_t *p = (const uint16_t *)src + at;
        for (int64_t i = 0; i < n; i++) dst[i] = w4a8moe_bits_f32((uint32_t)p[i * stride] << 16);
    } else if (dt == W4A8MOE_ST_F16) {
        const uint16_t *p = (const uint16_t *)src + at;
        for (int64_t i = 0; i < n; i++) dst[i] = w4a8moe_f16_to_f32(p[i * stride]);
    } else {
        const float *p = (const float *)src + at;
        for (int64_t i = 0; i < n; i++) dst[i] = p[i * stride];
    }
}

static void gather_tile(const w4a8moe_weight_view *w, int64_t r0, int64_t nr, float *tile,
                        float *col)
{
    int64_t K = w->cols;
    if (w->col_stride == 1) {
        for (int64_t r = 0; r < nr; r++)
            widen(w->data, w->dtype, w->offset + (r0 + r) * w->row_stride, 1, K, tile + r * K);
        return;
    }
    /* input-major view: read along the contiguous axis (rows of W), then scatter */
    for (int64_t k = 0; k < K; k++) {
        widen(w->data, w->dtype, w->offset + k * w->col_stride + r0 * w->row_stride,
              w->row_stride, nr, col);
        for (int64_t r = 0; r < nr; r++) tile[r * K + k] = col[r];
    }
}

/* Adding then subtracting 1.5 * 2^23 rounds an f32 of magnitude < 2^22 to an integer, half to
 * even (the default rounding mode), exactly like torch.round / rintf, and vectorises. */
#define RNE_MAGIC 12582912.0f

/* One group of g weights (already f32, exact): scale and the int4 codes, as compressed-tensors
 * computes them (quantizer.h). Returns the scale as rounded to the dtype. Always inlined with a
 * constant g (see rtn_group), so GCC vectorises the loops even at -O2: about 4x faster. */
static inline __attribute__((always_inline)) float rtn_group_g(const float *restrict x, int32_t g,
                                                               w4a8moe_st_dtype dt,
                                                               int8_t *restrict q)
{
    /* max |x| on the bits: for finite non-negative floats the order of the bits is the order of
     * the values (and integer max vectorises where fmaxf does not) */
    uint32_t amax_bits = 0;
    for (int32_t i = 0; i < g; i++) {
        uint32_t a = w4a8moe_f32_bits(x[i]) & 0x7fffffffu;
        amax_bits = a > amax_bits ? a : amax_bits;
    }
    float absmax = w4a8moe_bits_f32(amax_bits);
    /* calculate_qparams: max_val_pos / (bit_range / 2) with bit_range = 7 - (-8) = 15, in the
     * weight dtype; then zeros become finfo(dtype).eps */
    float scale = round_to_dtype(absmax / 7.5f, dt);
    if (scale == 0.0f) scale = dtype_eps(dt);
    /* _quantize: x / scale in the dtype, clamp to [q_min, q_max], torch.round (half even).
     * Rounding before clamping gives the same integers (the bounds are integers and rounding is
     * monotonic), and lets the clamp be an integer one. |x / scale| stays far below 2^22. */
    int32_t qi[128];
    if (dt == W4A8MOE_ST_BF16)
        for (int32_t i = 0; i < g; i++) qi[i] = (int32_t)((round_bf16(x[i] / scale) + RNE_MAGIC) - RNE_MAGIC);
    else if (dt == W4A8MOE_ST_F32)
        for (int32_t i = 0; i < g; i++) qi[i] = (int32_t)((x[i] / scale + RNE_MAGIC) - RNE_MAGIC);
    else
        for (int32_t i = 0; i < g; i++)
            qi[i] = (int32_t)((round_to_dtype(x[i] / scale, dt) + RNE_MAGIC) - RNE_MAGIC);
    for (int32_t i = 0; i < g; i++) {
        int32_t v = qi[i] < -8 ? -8 : qi[i];
        q[i] = (int8_t)(v > 7 ? 7 : v);
    }
    return scale;
}

static float rtn_group(const float *x, int32_t g, w4a8moe_st_dtype dt, int8_t *q)
{
    if (g == 32) return rtn_group_g(x, 32, dt, q);
    if (g == 64) return rtn_group_g(x, 64, dt, q);
    return rtn_group_g(x, 128, dt, q);
}

/* First non-finite element of a row, or -1. */
static int64_t first_nonfinite(const float *row, int64_t K)
{
    uint32_t bad = 0;
    for (int64_t k = 0; k < K; k++) bad |= (w4a8moe_f32_bits(row[k]) & 0x7f800000u) == 0x7f800000u;
    if (!bad) return -1;
    for (int64_t k = 0; k < K; k++)
        if (!isfinite(row[k])) return k;
    return -1;
}

/* Quantises one row of K (finite) weights. */
static void rtn_row(const float *row, int64_t K, int32_t g, w4a8moe_st_dtype dt, int32_t *packed,
                    int8_t *q8, void *scale, int64_t scale_at)
{
    int8_t q[128];
    for (int64_t b = 0; b < K / g; b++) {
        store_scale(scale, dt, scale_at + b, rtn_group(row + b * g, g, dt, q));
        if (q8) memcpy(q8 + b * g, q, (size_t)g);
        for (int32_t w = 0; packed && w < g / 8; w++) {
            uint32_t word = 0;
            for (int j = 0; j < 8; j++) word |= (uint32_t)(q[8 * w + j] + 8) << (4 * j);
            packed[b * (g / 8) + w] = (int32_t)word;
        }
    }
}

w4a8moe_status w4a8moe_rtn_quantize(const w4a8moe_weight_view *w, int32_t g, int32_t *packed,
                                    int8_t *q8, void *scale, const char *what, w4a8moe_err *err)
{
    what = what ? what : "weight";
    RETURN_IF(err, !w || !w->data || !scale, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: weight view or scale output is NULL", what);
    RETURN_IF(err, w->dtype != W4A8MOE_ST_BF16 && w->dtype != W4A8MOE_ST_F16 &&
                       w->dtype != W4A8MOE_ST_F32,
              W4A8MOE_STATUS_UNSUPPORTED, "%s: dtype %s cannot be quantised; hint: quantize "
              "takes bf16, f16 or f32 weights", what, w4a8moe_st_dtype_name(w->dtype));
    RETURN_IF(err, g != 32 && g != 64 && g != 128, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "group size g = %d; hint: g must be 32, 64 or 128", g);
    RETURN_IF(err, w->rows < 1 || w->cols < g || w->cols % g, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: shape [%lld, %lld]: the input dimension must be a positive multiple of "
              "g = %d", what, (long long)w->rows, (long long)w->cols, g);
    int64_t K = w->cols, nrow = RTN_TILE_ROWS < w->rows ? RTN_TILE_ROWS : w->rows;
    float *tile = malloc((size_t)(nrow * K + nrow) * sizeof *tile);
    RETURN_IF(err, !tile, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s: quantisation tile of %lld floats",
              what, (long long)(nrow * K));
    for (int64_t r0 = 0; r0 < w->rows; r0 += nrow) {
        int64_t nr = w->rows - r0 < nrow ? w->rows - r0 : nrow;
        gather_tile(w, r0, nr, tile, tile + nrow * K);
        for (int64_t r = 0; r < nr; r++) {
            int64_t n = r0 + r, k = first_nonfinite(tile + r * K, K);
            if (k >= 0) {
                int is_nan = isnan(tile[r * K + k]);
                free(tile);
                RETURN_ERR(err, W4A8MOE_STATUS_FORMAT_ERROR,
                           "%s: element [%lld, %lld] is %s; hint: a weight must be finite to be "
                           "quantised", what, (long long)n, (long long)k,
                           is_nan ? "NaN" : "infinite");
            }
            rtn_row(tile + r * K, K, g, w->dtype, packed ? packed + n * (K / 8) : NULL,
                    q8 ? q8 + n * K : NULL, scale, n * (K / g));
        }
    }
    free(tile);
    return W4A8MOE_STATUS_OK;
}

/* ---- planning ------------------------------------------------------------------------------ */

void w4a8moe_quantize_opts_init(w4a8moe_quantize_opts *o)
{
    memset(o, 0, sizeof *o);
    o->group_size = 128;
    o->format = W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
    o->act_scheme = W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
}

/* Output bytes of a quantised [N, K] matrix. */
static uint64_t quant_bytes(const qz_plan *p, int64_t N, int64_t K, w4a8moe_st_dtype dt)
{
    uint64_t s = (uint64_t)N * (uint64_t)(K / p->g) * w4a8moe_st_dtype_size(dt);
    if (p->format == W4A8MOE_CKPT_FORMAT_INT_QUANTIZED) return (uint64_t)N * (uint64_t)K + s;
    return (uint64_t)N * (uint64_t)(K / 8) * 4 + s + 16;
}

static w4a8moe_status plan_push(qz_plan *p, const qz_item *it, w4a8moe_err *err)
{
    if (p->n_items == p->cap_items) {
        size_t cap = p->cap_items ? 2 * p->cap_items : 256;
        qz_item *t = realloc(p->items, cap * sizeof *t);
        RETURN_IF(err, !t, W4A8MOE_STATUS_OUT_OF_MEMORY, "quantize plan of %zu tensors", cap);
        p->items = t;
        p->cap_items = cap;
    }
    p->items[p->n_items++] = *it;
    return W4A8MOE_STATUS_OK;
}

/* Checks a source tensor that is to be quantised: float dtype, expected rank and shape. */
static w4a8moe_status check_target(const w4a8moe_st_tensor *t, int32_t ndim, const int64_t *shape,
                                   w4a8moe_err *err)
{
    RETURN_IF(err, t->dtype != W4A8MOE_ST_BF16 && t->dtype != W4A8MOE_ST_F16 &&
                       t->dtype != W4A8MOE_ST_F32,
              W4A8MOE_STATUS_UNSUPPORTED, "tensor '%s' has dtype %s; hint: quantize takes a bf16, "
              "f16 or f32 checkpoint (dequantise an fp8 one first)", t->name,
              w4a8moe_st_dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int32_t i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char have[96] = "", want[96] = "";
        for (int32_t i = 0; i < t->ndim && i < 8; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        for (int32_t i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        RETURN_ERR(err, W4A8MOE_STATUS_FORMAT_ERROR,
                   "tensor '%s' has shape [%s] but config.json implies [%s]; hint: check "
                   "hidden_size, moe_intermediate_size and the expert count", t->name, have, want);
    }
    return W4A8MOE_STATUS_OK;
}

/* A quantised matrix of a plain [N, K] Linear weight. */
static w4a8moe_status plan_linear(qz_plan *p, const char *module, int64_t N, int64_t K,
                                  w4a8moe_err *err)
{
    char name[QZ_NAME_CAP];
    RETURN_IF(err, snprintf(name, sizeof name, "%s.weight", module) >= (int)sizeof name,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "module name '%s' is too long", module);
    const w4a8moe_st_tensor *t = NULL;
    const w4a8moe_st_file *f = qz_src_find(&p->src, name, &t);
    RETURN_IF(err, !f, W4A8MOE_STATUS_NOT_FOUND,
              "tensor '%s' is missing from %s; hint: the checkpoint's tensor names must follow "
              "the %s layout (docs/formats.md)", name, p->src_dir, w4a8moe_arch_name(p->cfg.arch));
    int64_t shape[2] = {N, K};
    FORWARD(check_target(t, 2, shape, err));
    qz_item it = {.kind = QZ_ITEM_QUANT, .src = t};
    snprintf(it.module, sizeof it.module, "%s", module);
    it.view = (w4a8moe_weight_view){t->data, t->dtype, N, K, 0, K, 1};
    it.bytes = quant_bytes(p, N, K, t->dtype);
    FORWARD(qz_mark_consumed(&p->src, t, err));
    return plan_push(p, &it, err);
}

/* Llama-4 bf16 originals: experts.gate_up_proj [E, H, 2I] and experts.down_proj [E, I, H],
 * input-major (the HF module computes x @ gate_up_proj[e]). Expert e's gate weight
 * W[n, k] = gate_up_proj[e, k, n], up W[n, k] = gate_up_proj[e, k, I + n], down
 * W[m, i] = down_proj[e, i, m]: strided views, no copy. */
static w4a8moe_status plan_llama4_fused(qz_plan *p, int32_t L, const w4a8moe_st_tensor *gu,
                                        w4a8moe_err *err)
{
    const w4a8moe_hf_config *c = &p->cfg;
    int64_t H = c->hidden, I = c->moe_inter, E = c->num_experts;
    char name[QZ_NAME_CAP];
    RETURN_IF(err, w4a8moe_name_fused_down(c, L, name, sizeof name) != 0, W4A8MOE_STATUS_INTERNAL,
              "layer %d: fused down_proj name does not fit", L);
    const w4a8moe_st_tensor *dn = NULL;
    RETURN_IF(err, !qz_src_find(&p->src, name, &dn), W4A8MOE_STATUS_NOT_FOUND,
              "tensor '%s' is missing from %s (its gate_up_proj is there); hint: a Llama-4 "
              "checkpoint fuses both or neither", name, p->src_dir);
    int64_t s13[3] = {E, H, 2 * I}, s2[3] = {E, I, H};
    FORWARD(check_target(gu, 3, s13, err));
    FORWARD(check_target(dn, 3, s2, err));
    for (int32_t e = 0; e < E; e++) {
        for (int proj = 0; proj < W4A8MOE_PROJ_COUNT_; proj++) {
            qz_item it = {.kind = QZ_ITEM_QUANT, .src = proj == W4A8MOE_PROJ_DOWN ? dn : gu};
            RETURN_IF(err, w4a8moe_name_expert(c, L, e, (w4a8moe_proj)proj, it.module,
                                               sizeof it.module) != 0,
                      W4A8MOE_STATUS_INTERNAL, "layer %d expert %d: name does not fit", L, e);
            if (proj == W4A8MOE_PROJ_DOWN)
                it.view = (w4a8moe_weight_view){dn->data, dn->dtype, H, I, e * I * H, 1, H};
            else
                it.view = (w4a8moe_weight_view){gu->data, gu->dtype, I, H,
                                                e * H * 2 * I + (proj == W4A8MOE_PROJ_UP ? I : 0),
                                                1, 2 * I};
            it.bytes = quant_bytes(p, it.view.rows, it.view.cols, it.src->dtype);
            FORWARD(plan_push(p, &it, err));
        }
    }
    FORWARD(qz_mark_consumed(&p->src, gu, err));
    return qz_mark_consumed(&p->src, dn, err);
}

/* The quantised matrices of one MoE layer: routed experts (per-expert or Llama-4 fused) and the
 * shared expert. */
static w4a8moe_status plan_layer(qz_plan *p, int32_t L, w4a8moe_err *err)
{
    const w4a8moe_hf_config *c = &p->cfg;
    int64_t H = c->hidden, I = c->moe_inter;
    char name[QZ_NAME_CAP];
    const w4a8moe_st_tensor *gu = NULL;
    if (c->arch == W4A8MOE_ARCH_LLAMA4 && w4a8moe_name_fused_gate_up(c, L, name, sizeof name) == 0 &&
        qz_src_find(&p->src, name, &gu))
        FORWARD(plan_llama4_fused(p, L, gu, err));
    else
        for (int32_t e = 0; e < c->num_experts; e++)
            for (int proj = 0; proj < W4A8MOE_PROJ_COUNT_; proj++) {
                RETURN_IF(err, w4a8moe_name_expert(c, L, e, (w4a8moe_proj)proj, name,
                                                   sizeof name) != 0,
                          W4A8MOE_STATUS_INTERNAL, "layer %d expert %d: name does not fit", L, e);
                int down = proj == W4A8MOE_PROJ_DOWN;
                FORWARD(plan_linear(p, name, down ? H : I, down ? I : H, err));
            }
    if (!c->has_shared) return W4A8MOE_STATUS_OK;
    int64_t Is = c->shared_inter;
    for (int proj = 0; proj < W4A8MOE_PROJ_COUNT_; proj++) {
        RETURN_IF(err, w4a8moe_name_shared(c, L, (w4a8moe_proj)proj, name, sizeof name) != 0,
                  W4A8MOE_STATUS_INTERNAL, "layer %d: shared expert name does not fit", L);
        int down = proj == W4A8MOE_PROJ_DOWN;
        FORWARD(plan_linear(p, name, down ? H : Is, down ? Is : H, err));
    }
    return W4A8MOE_STATUS_OK;
}

/* Which decoder layers to quantise: the caller's list (each checked), or every MoE layer. */
static w4a8moe_status select_layers(qz_plan *p, const w4a8moe_quantize_opts *o, w4a8moe_err *err)
{
    const w4a8moe_hf_config *c = &p->cfg;
    RETURN_IF(err, c->n_moe_layers < 1, W4A8MOE_STATUS_UNSUPPORTED,
              "%s/config.json: no decoder layer is an MoE layer; nothing to quantise",
              p->src_dir);
    if (!o->layers) {
        p->layers = malloc((size_t)c->n_moe_layers * sizeof *p->layers);
        RETURN_IF(err, !p->layers, W4A8MOE_STATUS_OUT_OF_MEMORY, "layer list");
        memcpy(p->layers, c->moe_layers, (size_t)c->n_moe_layers * sizeof *p->layers);
        p->n_layers = c->n_moe_layers;
        return W4A8MOE_STATUS_OK;
    }
    RETURN_IF(err, o->n_layers < 1, W4A8MOE_STATUS_INVALID_ARGUMENT, "--layers: the list is empty");
    p->layers = malloc((size_t)o->n_layers * sizeof *p->layers);
    RETURN_IF(err, !p->layers, W4A8MOE_STATUS_OUT_OF_MEMORY, "layer list");
    for (int32_t i = 0; i < o->n_layers; i++) {
        int32_t L = o->layers[i];
        RETURN_IF(err, L < 0 || L >= c->num_layers, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "--layers: layer %d is outside [0, %d) (num_hidden_layers)", L, c->num_layers);
        RETURN_IF(err, !w4a8moe_hf_config_is_moe(c, L), W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "--layers: layer %d is a dense layer, not an MoE layer; hint: `w4a8moe inspect` "
                  "lists the MoE layers", L);
        int dup = 0;
        for (int32_t j = 0; j < p->n_layers; j++) dup |= p->layers[j] == L;
        if (!dup) p->layers[p->n_layers++] = L;
    }
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status check_dims(const qz_plan *p, w4a8moe_err *err)
{
    const w4a8moe_hf_config *c = &p->cfg;
    int g = p->g;
    RETURN_IF(err, c->hidden < g || c->hidden % g, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "hidden_size H = %lld is not a multiple of the group size g = %d; hint: choose "
              "--group-size 32, 64 or 128 dividing H", (long long)c->hidden, g);
    RETURN_IF(err, c->moe_inter < g || c->moe_inter % g, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "moe_intermediate_size I = %lld is not a multiple of the group size g = %d; hint: "
              "choose --group-size 32, 64 or 128 dividing I", (long long)c->moe_inter, g);
    RETURN_IF(err, c->has_shared && (c->shared_inter < g || c->shared_inter % g),
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "the shared expert's intermediate size %lld is not a multiple of the group size "
              "g = %d; hint: choose a --group-size dividing it", (long long)c->shared_inter, g);
    return W4A8MOE_STATUS_OK;
}

/* Every source tensor not consumed by a quantised matrix is copied unchanged; a 2-D ".weight"
 * that is not an embedding is an unquantised Linear and goes on the ignore list. */
static w4a8moe_status plan_copies(qz_plan *p, w4a8moe_err *err)
{
    for (size_t f = 0; f < p->src.n_files; f++) {
        const w4a8moe_st_file *file = p->src.files[f];
        for (size_t i = 0; i < w4a8moe_st_count(file); i++) {
            const w4a8moe_st_tensor *t = w4a8moe_st_at(file, i);
            if (qz_is_consumed(&p->src, t)) continue;
            qz_item it = {.kind = QZ_ITEM_COPY, .src = t, .bytes = t->nbytes};
            FORWARD(plan_push(p, &it, err));
            FORWARD(qz_ignore_consider(p, t, err));
        }
    }
    return W4A8MOE_STATUS_OK;
}

/* Splits the items into shards of at most max bytes (a larger item gets a shard of its own). */
static void plan_shards(qz_plan *p)
{
    uint64_t cur = 0;
    p->n_shards = p->n_items ? 1 : 0;
    for (size_t i = 0; i < p->n_items; i++) {
        if (cur && cur + p->items[i].bytes > p->max_shard) {
            p->n_shards++;
            cur = 0;
        }
        cur += p->items[i].bytes;
        p->items[i].shard = p->n_shards - 1;
        p->total_bytes += p->items[i].bytes;
    }
}

static w4a8moe_status check_opts(const w4a8moe_quantize_opts *o, w4a8moe_err *err)
{
    RETURN_IF(err, !o || !o->src_dir || !o->dst_dir, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "quantize: options, source or destination directory is NULL");
    int32_t g = o->group_size ? o->group_size : 128;
    RETURN_IF(err, g != 32 && g != 64 && g != 128, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "group size g = %d; hint: --group-size must be 32, 64 or 128", g);
    RETURN_IF(err, o->format != W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED &&
                       o->format != W4A8MOE_CKPT_FORMAT_INT_QUANTIZED,
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "output format %s; hint: --format is pack-quantized or int-quantized",
              w4a8moe_ckpt_format_name(o->format));
    RETURN_IF(err, o->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC, W4A8MOE_STATUS_UNSUPPORTED,
              "--act static: static per-tensor activation scales need calibration, which "
              "quantize does not do; hint: use --act dynamic (per-token scales, no calibration), "
              "or calibrate with llm-compressor (docs/quantize.md)");
    RETURN_IF(err, o->act_scheme != W4A8MOE_ACT_FP8_TOKEN_DYNAMIC, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "activation scheme %d is not a w4a8moe_act_scheme", (int)o->act_scheme);
    RETURN_IF(err, o->calib_path != NULL, W4A8MOE_STATUS_UNSUPPORTED,
              "--calib: calibration is not implemented (only --act dynamic is)");
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status build_plan(qz_plan *p, const w4a8moe_quantize_opts *o, w4a8moe_err *err)
{
    FORWARD(check_opts(o, err));
    p->src_dir = o->src_dir;
    p->dst_dir = o->dst_dir;
    p->g = o->group_size ? o->group_size : 128;
    p->format = o->format;
    p->max_shard = o->max_shard_bytes ? o->max_shard_bytes : W4A8MOE_QUANTIZE_DEFAULT_SHARD;
    p->max_ram = o->max_ram_bytes ? o->max_ram_bytes : W4A8MOE_QUANTIZE_DEFAULT_RAM;
    FORWARD(w4a8moe_hf_config_load(o->src_dir, &p->cfg, err));
    p->have_cfg = 1;
    RETURN_IF(err, p->cfg.quantized, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s is already quantised (%s, %s); hint: quantize takes a bf16, f16 or f32 "
              "checkpoint", o->src_dir, p->cfg.quant_method,
              w4a8moe_ckpt_format_name(p->cfg.format));
    FORWARD(check_dims(p, err));
    FORWARD(select_layers(p, o, err));
    FORWARD(qz_src_open(&p->src, o->src_dir, err));
    for (int32_t i = 0; i < p->n_layers; i++) FORWARD(plan_layer(p, p->layers[i], err));
    FORWARD(plan_copies(p, err));
    plan_shards(p);
    return W4A8MOE_STATUS_OK;
}

static void plan_free(qz_plan *p)
{
    if (p->have_cfg) w4a8moe_hf_config_free(&p->cfg);
    qz_src_close(&p->src);
    qz_files_free(p);
    free(p->items);
    free(p->layers);
}

/* ---- execution ----------------------------------------------------------------------------- */

static w4a8moe_status add_quant_item(qz_plan *p, w4a8moe_st_writer *w, const qz_item *it,
                                     unsigned char **scratch, w4a8moe_err *err)
{
    const w4a8moe_weight_view *v = &it->view;
    int64_t N = v->rows, K = v->cols;
    size_t ssz = w4a8moe_st_dtype_size(v->dtype);
    int pack = p->format == W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
    unsigned char *q = *scratch;
    size_t qbytes = pack ? (size_t)(N * (K / 8)) * 4 : (size_t)(N * K);
    unsigned char *s = q + qbytes;
    unsigned char *shape = s + (size_t)(N * (K / p->g)) * ssz;
    char name[QZ_NAME_CAP + 16];
    FORWARD(w4a8moe_rtn_quantize(v, p->g, pack ? (int32_t *)(void *)q : NULL,
                                 pack ? NULL : (int8_t *)q, s, it->module, err));
    int64_t qs[2] = {N, pack ? K / 8 : K}, ss[2] = {N, K / p->g}, one = 2;
    snprintf(name, sizeof name, "%s.%s", it->module, pack ? "weight_packed" : "weight");
    FORWARD(w4a8moe_st_writer_add(w, name, pack ? W4A8MOE_ST_I32 : W4A8MOE_ST_I8, 2, qs, q, err));
    snprintf(name, sizeof name, "%s.weight_scale", it->module);
    FORWARD(w4a8moe_st_writer_add(w, name, v->dtype, 2, ss, s, err));
    if (pack) {
        int64_t dims[2] = {N, K};
        memcpy(shape, dims, sizeof dims); /* I64 little-endian on every host we build for */
        snprintf(name, sizeof name, "%s.weight_shape", it->module);
        FORWARD(w4a8moe_st_writer_add(w, name, W4A8MOE_ST_I64, 1, &one, shape, err));
    }
    *scratch = q + it->bytes;
    return W4A8MOE_STATUS_OK;
}

/* Byte range of the source a quantised view reads. */
static void view_span(const w4a8moe_weight_view *v, uintptr_t *lo, uintptr_t *hi)
{
    size_t esz = w4a8moe_st_dtype_size(v->dtype);
    int64_t last = v->offset + (v->rows - 1) * v->row_stride + (v->cols - 1) * v->col_stride;
    *lo = (uintptr_t)v->data + (uintptr_t)v->offset * esz;
    *hi = (uintptr_t)v->data + (uintptr_t)(last + 1) * esz;
}

/* Once quantised, a source range is not needed again: drop its pages, but only when the next
 * item reads another tensor (Llama-4's gate and up share a fused slice). */
static void forget_quantised(const qz_plan *p, size_t i, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t a, b;
    view_span(&p->items[i].view, &a, &b);
    *lo = *lo && *lo < a ? *lo : a;
    *hi = *hi > b ? *hi : b;
    size_t j = i + 1;
    while (j < p->n_items && p->items[j].shard != p->items[i].shard) j++;
    if (j < p->n_items && p->items[j].kind == QZ_ITEM_QUANT && p->items[j].src == p->items[i].src)
        return;
    qz_forget_range((const void *)*lo, *hi - *lo);
    *lo = *hi = 0;
}

static w4a8moe_status fill_shard(qz_plan *p, int32_t shard, w4a8moe_st_writer *w,
                                 unsigned char *scratch, uint64_t *done, w4a8moe_err *err)
{
    uintptr_t lo = 0, hi = 0;
    for (size_t i = 0; i < p->n_items; i++) {
        const qz_item *it = &p->items[i];
        if (it->shard != shard) continue;
        if (it->kind == QZ_ITEM_COPY) {
            const w4a8moe_st_tensor *t = it->src;
            FORWARD(w4a8moe_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err));
            p->report.tensors_copied++;
        } else {
            FORWARD(add_quant_item(p, w, it, &scratch, err));
            p->report.matrices_quantized++;
            forget_quantised(p, i, &lo, &hi);
        }
        FORWARD(qz_index_add(p, it, shard, err));
        *done += it->bytes;
        if (p->progress)
            p->progress(p->progress_ctx, *done, p->total_bytes,
                        it->kind == QZ_ITEM_COPY ? it->src->name : it->module);
    }
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status write_shard(qz_plan *p, int32_t shard, uint64_t *done, w4a8moe_err *err)
{
    uint64_t qbytes = 0;
    for (size_t i = 0; i < p->n_items; i++)
        if (p->items[i].shard == shard && p->items[i].kind == QZ_ITEM_QUANT)
            qbytes += p->items[i].bytes;
    qz_scratch sc = {.fd = -1};
    FORWARD(qz_scratch_open(&sc, p->dst_dir, qbytes, p->max_ram, err));
    char path[4096];
    qz_shard_path(p, shard, path, sizeof path);
    w4a8moe_st_writer *w = NULL;
    w4a8moe_status st = w4a8moe_st_writer_open(path, &w, err);
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_st_writer_metadata(w, "format", "pt", err);
    if (st == W4A8MOE_STATUS_OK) st = fill_shard(p, shard, w, sc.base, done, err);
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_st_writer_close(w, err);
    else w4a8moe_st_writer_abort(w);
    qz_scratch_close(&sc);
    for (size_t i = 0; i < p->n_items; i++) /* the copies were read by the writer's close */
        if (p->items[i].shard == shard && p->items[i].kind == QZ_ITEM_COPY)
            qz_forget_range(p->items[i].src->data, p->items[i].src->nbytes);
    return st;
}

w4a8moe_status w4a8moe_quantize_checkpoint(const w4a8moe_quantize_opts *o,
                                           w4a8moe_quantize_report *report, w4a8moe_err *err)
{
    qz_plan p;
    memset(&p, 0, sizeof p);
    w4a8moe_status st = build_plan(&p, o, err);
    if (st == W4A8MOE_STATUS_OK) st = qz_dst_prepare(&p, err);
    if (st == W4A8MOE_STATUS_OK) {
        p.progress = o->progress;
        p.progress_ctx = o->progress_ctx;
        p.report.arch = p.cfg.arch;
        p.report.layers_quantized = p.n_layers;
        p.report.shards = p.n_shards;
        uint64_t done = 0;
        for (int32_t s = 0; s < p.n_shards && st == W4A8MOE_STATUS_OK; s++)
            st = write_shard(&p, s, &done, err);
        p.report.bytes_out = done;
    }
    if (st == W4A8MOE_STATUS_OK) st = qz_write_index(&p, err);
    if (st == W4A8MOE_STATUS_OK) st = qz_write_config(&p, err);
    if (st == W4A8MOE_STATUS_OK) st = qz_copy_other_files(&p, err);
    if (st == W4A8MOE_STATUS_OK && report) {
        for (size_t i = 0; i < p.n_items; i++) {
            const qz_item *it = &p.items[i];
            p.report.bytes_in += it->kind == QZ_ITEM_COPY
                                     ? it->bytes
                                     : (uint64_t)(it->view.rows * it->view.cols) *
                                           w4a8moe_st_dtype_size(it->view.dtype);
        }
        p.report.ignored_linears = (int64_t)p.n_ignore;
        *report = p.report;
    }
    plan_free(&p);
    return st;
}
