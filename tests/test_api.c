/*
 * test_api.c — the public C API's contract (include/w4a8moe.h): stable status numbers and
 * strings, NULL handling, description and weight validation with messages that name the field
 * or tensor, routing checks that name the token, T = 0 and T > max_tokens, NaN/Inf inputs,
 * stacked vs per-expert weights, weight copies vs borrowed weights, router bias copies, and
 * the error strings.
 */
#include "common/quant.h"
#include "common/synth.h"
#include "core/backend.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <math.h>
#include <string.h>

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

_Static_assert(W4A8MOE_STATUS_OK == 0 && W4A8MOE_STATUS_INVALID_ARGUMENT == 1 &&
                   W4A8MOE_STATUS_UNSUPPORTED == 2 && W4A8MOE_STATUS_OUT_OF_MEMORY == 3 &&
                   W4A8MOE_STATUS_IO_ERROR == 4 && W4A8MOE_STATUS_FORMAT_ERROR == 5 &&
                   W4A8MOE_STATUS_NOT_FOUND == 6 && W4A8MOE_STATUS_DEVICE_ERROR == 7 &&
                   W4A8MOE_STATUS_INTERNAL == 8,
               "status numbers are stable: never renumber");
_Static_assert(W4A8MOE_DTYPE_BF16 == 0 && W4A8MOE_DTYPE_F16 == 1 && W4A8MOE_DTYPE_F32 == 2 &&
                   W4A8MOE_ACTIVATION_SILU == 0 && W4A8MOE_ACTIVATION_GELU_TANH == 1 &&
                   W4A8MOE_ACT_FP8_TOKEN_DYNAMIC == 0 && W4A8MOE_ACT_FP8_TENSOR_STATIC == 1 &&
                   W4A8MOE_ROUTING_SOFTMAX_TOPK == 0 && W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK == 1 &&
                   W4A8MOE_ROUTING_SIGMOID_TOP1 == 2 && W4A8MOE_DEVICE_CPU == 0 &&
                   W4A8MOE_DEVICE_CUDA == 1 && W4A8MOE_WEIGHT_INT4_GROUP == 0,
               "enum numbers are stable");

static void test_status(void)
{
    CHECK(W4A8MOE_STATUS_COUNT_ >= 9, "status count");
    for (int s = 0; s < W4A8MOE_STATUS_COUNT_; s++) {
        const char *a = w4a8moe_status_str((w4a8moe_status)s);
        CHECK(a && a[0], "status %d has no string", s);
        for (int t = 0; t < s; t++)
            CHECK(strcmp(a, w4a8moe_status_str((w4a8moe_status)t)) != 0, "status %d and %d share '%s'",
                  s, t, a);
    }
    CHECK(strcmp(w4a8moe_status_str(W4A8MOE_STATUS_OK), "ok") == 0, "OK is 'ok'");
    CHECK(strcmp(w4a8moe_status_str(W4A8MOE_STATUS_INVALID_ARGUMENT), "invalid argument") == 0,
          "invalid argument string");
    const char *u = w4a8moe_status_str(W4A8MOE_STATUS_COUNT_);
    const char *neg = w4a8moe_status_str((w4a8moe_status)-1);
    CHECK(u && u[0] && neg && neg[0], "out-of-range statuses still get a string");
    CHECK(strcmp(w4a8moe_version(), W4A8MOE_VERSION_STRING) == 0, "version string");
}

static void small_desc(w4a8moe_layer_desc *d)
{
    w4a8moe_layer_desc_init(d);
    d->max_tokens = 8;
    d->hidden = 128;
    d->inter = 64;
    d->num_experts = 6;
    d->top_k = 2;
    d->group_size = 32;
}

static void test_desc_init(void)
{
    w4a8moe_layer_desc d;
    memset(&d, 0x5a, sizeof d);
    w4a8moe_layer_desc_init(&d);
    CHECK(d.activation == W4A8MOE_ACTIVATION_SILU && d.weight_scheme == W4A8MOE_WEIGHT_INT4_GROUP &&
              d.act_scheme == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC && d.io_dtype == W4A8MOE_DTYPE_BF16 &&
              d.routing.kind == W4A8MOE_ROUTING_SOFTMAX_TOPK && !d.routing.renormalize &&
              d.routing.routed_scaling_factor == 1.0f && d.routing.score_bias == NULL &&
              d.ep_rank == 0 && d.ep_size == 1 && d.max_tokens == 0 && d.hidden == 0 &&
              d.router_weight_on_input == 0,
          "layer_desc_init defaults");
}

static void test_nulls(test_rng *r)
{
    w4a8moe_layer_free(NULL);
    CHECK(strcmp(w4a8moe_layer_backend(NULL), "") == 0 && strcmp(w4a8moe_layer_prepfin(NULL), "") == 0 &&
              strcmp(w4a8moe_layer_error(NULL), "") == 0,
          "NULL layer accessors give empty strings");
    w4a8moe_layer_desc d;
    small_desc(&d);
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0, "weights");
    w4a8moe_layer *L = (w4a8moe_layer *)&d;
    CHECK(w4a8moe_layer_create(NULL, &sw.weights, NULL, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              L == NULL && has(w4a8moe_last_error(), "description"),
          "NULL description: '%s'", w4a8moe_last_error());
    CHECK(w4a8moe_layer_create(&d, &sw.weights, NULL, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "out"),
          "NULL out: '%s'", w4a8moe_last_error());
    CHECK(w4a8moe_layer_create(&d, NULL, NULL, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "weights"),
          "NULL weights: '%s'", w4a8moe_last_error());
    int32_t ids[2] = {0, 1};
    float wts[2] = {0.5f, 0.5f};
    uint16_t x[128], out[128];
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    CHECK(w4a8moe_layer_forward(NULL, 1, x, &ri, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "layer"),
          "forward on a NULL layer");
    CHECK(w4a8moe_layer_create(&d, &sw.weights, NULL, &L) == W4A8MOE_STATUS_OK, "create: %s",
          w4a8moe_last_error());
    CHECK(w4a8moe_last_error()[0] == '\0', "a successful create clears the error: '%s'", w4a8moe_last_error());
    memset(x, 0x3c, sizeof x);
    CHECK(w4a8moe_layer_forward(L, 1, NULL, &ri, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "x"),
          "NULL x: '%s'", w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_forward(L, 1, x, NULL, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "NULL routing");
    CHECK(w4a8moe_layer_forward(L, 1, x, &ri, NULL, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT, "NULL out");
    w4a8moe_routing_input none = {0}, half = {.topk_ids = ids, .topk_weights = NULL};
    CHECK(w4a8moe_layer_forward(L, 1, x, &none, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "routing"),
          "routing without ids or logits: '%s'", w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_forward(L, 1, x, &half, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "ids without weights");
    CHECK(w4a8moe_layer_forward(L, 1, x, &ri, out, NULL) == W4A8MOE_STATUS_OK &&
              w4a8moe_layer_error(L)[0] == '\0',
          "a successful forward clears the layer error: '%s'", w4a8moe_layer_error(L));
    /* layer_check: CPU layers refuse bad ids at once, so there is never anything deferred */
    int32_t bad[2] = {0, 0};
    w4a8moe_routing_input rb = {.topk_ids = bad, .topk_weights = wts};
    CHECK(w4a8moe_layer_forward(L, 1, x, &rb, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "token 0"),
          "CPU forward with a repeated id: '%s'", w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_check(L, NULL) == W4A8MOE_STATUS_OK && w4a8moe_layer_error(L)[0] == '\0',
          "layer_check on a CPU layer: '%s'", w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_check(NULL, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "layer"),
          "layer_check on a NULL layer");
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
}

/* ---- invalid descriptions: INVALID_ARGUMENT naming the field ---- */

typedef void (*desc_edit)(w4a8moe_layer_desc *d);
static void e_max_tokens(w4a8moe_layer_desc *d) { d->max_tokens = 0; }
static void e_max_tokens_neg(w4a8moe_layer_desc *d) { d->max_tokens = -5; }
static void e_group(w4a8moe_layer_desc *d) { d->group_size = 48; }
static void e_group0(w4a8moe_layer_desc *d) { d->group_size = 0; }
static void e_hidden(w4a8moe_layer_desc *d) { d->hidden = 100; }
static void e_hidden0(w4a8moe_layer_desc *d) { d->hidden = 0; }
static void e_inter(w4a8moe_layer_desc *d) { d->inter = 80; }
static void e_inter_neg(w4a8moe_layer_desc *d) { d->inter = -64; }
static void e_experts(w4a8moe_layer_desc *d) { d->num_experts = 0; }
static void e_topk0(w4a8moe_layer_desc *d) { d->top_k = 0; }
static void e_topk_big(w4a8moe_layer_desc *d) { d->top_k = 7; }
static void e_act(w4a8moe_layer_desc *d) { d->activation = (w4a8moe_activation)9; }
static void e_wscheme(w4a8moe_layer_desc *d) { d->weight_scheme = (w4a8moe_weight_scheme)3; }
static void e_ascheme(w4a8moe_layer_desc *d) { d->act_scheme = (w4a8moe_act_scheme)4; }
static void e_static_in(w4a8moe_layer_desc *d) { d->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC, d->act_scale_in = 0, d->act_scale_mid = 1; }
static void e_static_mid(w4a8moe_layer_desc *d) { d->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC, d->act_scale_in = 1, d->act_scale_mid = NAN; }
static void e_static_inf(w4a8moe_layer_desc *d) { d->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC, d->act_scale_in = INFINITY, d->act_scale_mid = 1; }
static void e_io(w4a8moe_layer_desc *d) { d->io_dtype = (w4a8moe_dtype)5; }
static void e_rwoi(w4a8moe_layer_desc *d) { d->router_weight_on_input = 1; }
static void e_ep_rank(w4a8moe_layer_desc *d) { d->ep_rank = 2, d->ep_size = 2; }
static void e_ep_size(w4a8moe_layer_desc *d) { d->ep_size = 0; }
static void e_ep_split(w4a8moe_layer_desc *d) { d->ep_size = 4; }
static void e_route_kind(w4a8moe_layer_desc *d) { d->routing.kind = (w4a8moe_routing)6; }
static void e_route_group(w4a8moe_layer_desc *d) { d->routing.kind = W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, d->routing.n_group = 4, d->routing.topk_group = 1; }
static void e_route_scale(w4a8moe_layer_desc *d) { d->routing.routed_scaling_factor = -1.0f; }
static void e_top1_k(w4a8moe_layer_desc *d) { d->routing.kind = W4A8MOE_ROUTING_SIGMOID_TOP1; }
/* 2^24 tokens x 200 slots = 3.4e9 routed rows: past the int32 row indices */
static void e_rows(w4a8moe_layer_desc *d) { d->max_tokens = 1 << 24, d->num_experts = 256, d->top_k = 200; }

static void test_invalid_desc(test_rng *r)
{
    static const struct { desc_edit edit; const char *needle; } cases[] = {
        {e_max_tokens, "max_tokens"}, {e_max_tokens_neg, "max_tokens"}, {e_group, "group size"},
        {e_group0, "group size"}, {e_hidden, "hidden size H"}, {e_hidden0, "hidden size H"},
        {e_inter, "intermediate size I"}, {e_inter_neg, "intermediate size I"},
        {e_experts, "num_experts"}, {e_topk0, "top_k"}, {e_topk_big, "top_k"},
        {e_act, "activation"}, {e_wscheme, "weight_scheme"}, {e_ascheme, "act_scheme"},
        {e_static_in, "act_scale_in"}, {e_static_mid, "act_scale_mid"}, {e_static_inf, "act_scale_in"},
        {e_io, "io_dtype"}, {e_rwoi, "router_weight_on_input"}, {e_ep_rank, "rank"},
        {e_ep_size, "size"}, {e_ep_split, "ep_size"}, {e_route_kind, "routing.kind"},
        {e_route_group, "n_group"}, {e_route_scale, "routed_scaling_factor"}, {e_top1_k, "k = 1"},
        {e_rows, "int32"},
    };
    w4a8moe_layer_desc ok;
    small_desc(&ok);
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &ok, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0, "weights");
    char buf[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        w4a8moe_layer_desc d = ok;
        cases[i].edit(&d);
        w4a8moe_layer *L = (w4a8moe_layer *)&d;
        w4a8moe_status st = w4a8moe_layer_create(&d, &sw.weights, NULL, &L);
        const char *msg = w4a8moe_last_error();
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && L == NULL,
              "case %zu (%s): create gave %s", i, cases[i].needle, w4a8moe_status_str(st));
        CHECK(has(msg, cases[i].needle) && has(msg, "invalid argument"),
              "case %zu: message '%s' should name '%s'", i, msg, cases[i].needle);
        CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
                  has(w4a8moe_last_error(), cases[i].needle),
              "case %zu: explain must reject it too: '%s'", i, w4a8moe_last_error());
    }
    CHECK(w4a8moe_explain(NULL, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "explain with a NULL description");
    w4a8moe_layer_options o = {0};
    o.device_kind = (w4a8moe_device_kind)7;
    w4a8moe_layer *L;
    CHECK(w4a8moe_layer_create(&ok, &sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "device_kind"),
          "bad device_kind: '%s'", w4a8moe_last_error());
    w4a8moe_synth_weights_free(&sw);
}

/* ---- weights that disagree with the description: the message names the tensor ---- */

static void expect_weight_error(const char *what, const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                const char *needle)
{
    w4a8moe_layer *L = (w4a8moe_layer *)w;
    w4a8moe_status st = w4a8moe_layer_create(d, w, NULL, &L);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && L == NULL && has(w4a8moe_last_error(), needle),
          "%s: status %s, message '%s' should name '%s'", what, w4a8moe_status_str(st),
          w4a8moe_last_error(), needle);
}

/* Stacked copies of per-expert synthetic weights (the layout w4a8moe_weights documents). */
typedef struct stacked {
    int32_t *p13, *p2;
    void *s13, *s2;
    float *c13, *c2;
} stacked;

static void stack_weights(const w4a8moe_layer_desc *d, const w4a8moe_synth_weights *sw, int channel,
                          stacked *st, w4a8moe_weights *w)
{
    int64_t H = d->hidden, I = d->inter, g = d->group_size, E = d->num_experts;
    size_t ssz = sw->weights.scale_dtype == W4A8MOE_DTYPE_F32 ? 4 : 2;
    st->p13 = malloc((size_t)(E * 2 * I * H / 8) * 4);
    st->p2 = malloc((size_t)(E * H * I / 8) * 4);
    st->s13 = malloc((size_t)(E * 2 * I * H / g) * ssz);
    st->s2 = malloc((size_t)(E * H * I / g) * ssz);
    st->c13 = channel ? malloc((size_t)(E * 2 * I) * 4) : NULL;
    st->c2 = channel ? malloc((size_t)(E * H) * 4) : NULL;
    for (int64_t e = 0; e < E; e++) {
        const w4a8moe_expert_weights *x = &sw->experts[e];
        const w4a8moe_int4_matrix *m13[2] = {&x->gate, &x->up};
        for (int h = 0; h < 2; h++) {
            int64_t row0 = e * 2 * I + h * I;
            memcpy(st->p13 + row0 * H / 8, m13[h]->packed, (size_t)(I * H / 8) * 4);
            memcpy((char *)st->s13 + (size_t)(row0 * H / g) * ssz, m13[h]->scale, (size_t)(I * H / g) * ssz);
            if (channel) memcpy(st->c13 + row0, m13[h]->channel_scale, (size_t)I * 4);
        }
        memcpy(st->p2 + e * H * I / 8, x->down.packed, (size_t)(H * I / 8) * 4);
        memcpy((char *)st->s2 + (size_t)(e * H * I / g) * ssz, x->down.scale, (size_t)(H * I / g) * ssz);
        if (channel) memcpy(st->c2 + e * H, x->down.channel_scale, (size_t)H * 4);
    }
    memset(w, 0, sizeof *w);
    w->scale_dtype = sw->weights.scale_dtype;
    w->w13_stacked = (w4a8moe_int4_matrix){st->p13, st->s13, st->c13, E * 2 * I, H};
    w->w2_stacked = (w4a8moe_int4_matrix){st->p2, st->s2, st->c2, E * H, I};
}

static void free_stacked(stacked *st)
{
    free(st->p13), free(st->p2), free(st->s13), free(st->s2), free(st->c13), free(st->c2);
}

static void test_weight_errors(test_rng *r)
{
    w4a8moe_layer_desc d;
    small_desc(&d);
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0, "weights");
    w4a8moe_weights w = sw.weights;
    w4a8moe_expert_weights ex[6];
    memcpy(ex, sw.experts, sizeof ex);
    w.experts = ex;
    ex[3].up.cols = d.hidden + 8;
    expect_weight_error("expert 3 up cols", &d, &w, "expert 3 up");
    ex[3] = sw.experts[3];
    ex[0].gate.rows = d.inter * 2;
    expect_weight_error("expert 0 gate rows", &d, &w, "expert 0 gate");
    ex[0] = sw.experts[0];
    ex[5].down.rows = d.inter;
    ex[5].down.cols = d.hidden; /* transposed */
    expect_weight_error("expert 5 down transposed", &d, &w, "expert 5 down");
    ex[5] = sw.experts[5];
    ex[2].down.scale = NULL;
    expect_weight_error("expert 2 down scale NULL", &d, &w, "expert 2 down");
    ex[2] = sw.experts[2];
    ex[1].gate.packed = NULL;
    expect_weight_error("expert 1 gate packed NULL", &d, &w, "expert 1 gate");
    ex[1] = sw.experts[1];
    w.scale_dtype = (w4a8moe_dtype)9;
    expect_weight_error("scale dtype", &d, &w, "scale_dtype");
    w.scale_dtype = sw.weights.scale_dtype;
    /* the same checks hold under expert parallelism for the experts a rank owns... */
    ex[4].up.rows = 1;
    expect_weight_error("expert 4 up rows", &d, &w, "expert 4 up");
    ex[4] = sw.experts[4];

    stacked st;
    w4a8moe_weights ws;
    stack_weights(&d, &sw, 0, &st, &ws);
    ws.w13_stacked.rows -= 1;
    expect_weight_error("stacked w13 rows", &d, &ws, "stacked w13");
    ws.w13_stacked.rows += 1;
    ws.w2_stacked.cols = d.hidden;
    expect_weight_error("stacked w2 cols", &d, &ws, "stacked w2");
    ws.w2_stacked.cols = d.inter;
    ws.w2_stacked.scale = NULL;
    expect_weight_error("stacked w2 scale NULL", &d, &ws, "stacked");
    free_stacked(&st);
    w4a8moe_synth_weights_free(&sw);
}

/* ---- forward semantics ---- */

static w4a8moe_layer *make_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w, int borrow)
{
    w4a8moe_layer_options o = {0};
    o.borrow_weights = borrow;
    w4a8moe_layer *L = NULL;
    w4a8moe_status st = w4a8moe_layer_create(d, w, &o, &L);
    CHECK(st == W4A8MOE_STATUS_OK, "create: %s", w4a8moe_last_error());
    return L;
}

static void fill_x(float *x, int64_t n, test_rng *r)
{
    for (int64_t i = 0; i < n; i++) x[i] = test_rng_uniform(r, -2.0f, 2.0f);
}

static void test_routing_errors(test_rng *r)
{
    w4a8moe_layer_desc d;
    small_desc(&d);
    d.io_dtype = W4A8MOE_DTYPE_F32;
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0, "weights");
    w4a8moe_layer *L = make_layer(&d, &sw.weights, 0);
    if (!L) return;
    enum { T = 4 };
    float x[T * 128], out[T * 128], wts[T * 2];
    fill_x(x, T * 128, r);
    for (int i = 0; i < T * 2; i++) wts[i] = 0.5f;
    static const struct { int32_t ids[T * 2]; const char *needle; } cases[] = {
        {{0, 1, 2, 3, 4, 6, 0, 1}, "token 2"},   /* id == E */
        {{0, 1, -2, 3, 4, 5, 0, 1}, "token 1"},  /* id < -1 */
        {{0, 1, 2, 3, 4, 5, 5, 5}, "token 3"},   /* repeated */
        {{0, 0, 2, 3, 4, 5, 1, 2}, "token 0"},   /* repeated in the first token */
        {{0, 1, 2, 3, 99, 5, 1, 2}, "token 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        w4a8moe_routing_input ri = {.topk_ids = cases[i].ids, .topk_weights = wts};
        w4a8moe_status st = w4a8moe_layer_forward(L, T, x, &ri, out, NULL);
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(w4a8moe_layer_error(L), cases[i].needle),
              "bad ids case %zu: status %s, '%s' should name '%s'", i, w4a8moe_status_str(st),
              w4a8moe_layer_error(L), cases[i].needle);
    }
    /* -1 twice in a token is fine (no expert, twice), and a NaN weight on a -1 slot is unused */
    int32_t ids_ok[T * 2] = {-1, -1, 2, -1, 4, 5, 0, 1};
    wts[0] = NAN;
    w4a8moe_routing_input ri = {.topk_ids = ids_ok, .topk_weights = wts};
    memset(out, 0xff, sizeof out);
    CHECK(w4a8moe_layer_forward(L, T, x, &ri, out, NULL) == W4A8MOE_STATUS_OK, "-1 slots: %s",
          w4a8moe_layer_error(L));
    int zero = 1;
    for (int i = 0; i < 128; i++) zero &= out[i] == 0.0f;
    CHECK(zero, "a token whose slots are all -1 gets a zero output row");
    wts[0] = 0.5f;
    wts[5] = NAN;
    CHECK(w4a8moe_layer_forward(L, T, x, &ri, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "token 2") && has(w4a8moe_layer_error(L), "NaN"),
          "a NaN weight on a used slot: '%s'", w4a8moe_layer_error(L));
    wts[5] = 0.5f;

    /* T = 0 is a no-op, even with NULL pointers; T > max_tokens and T < 0 are errors */
    memset(out, 0x77, sizeof out);
    CHECK(w4a8moe_layer_forward(L, 0, x, &ri, out, NULL) == W4A8MOE_STATUS_OK, "T = 0");
    CHECK(w4a8moe_layer_forward(L, 0, NULL, NULL, NULL, NULL) == W4A8MOE_STATUS_OK, "T = 0, NULLs");
    int untouched = 1;
    for (size_t i = 0; i < sizeof out; i++) untouched &= ((unsigned char *)out)[i] == 0x77;
    CHECK(untouched, "T = 0 must not touch the output");
    CHECK(w4a8moe_layer_forward(L, d.max_tokens + 1, x, &ri, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "max_tokens") && has(w4a8moe_layer_error(L), "hint:"),
          "T > max_tokens: '%s'", w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_forward(L, -1, x, &ri, out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT, "T < 0");
    /* the error lives on the layer: the thread's last error is not the layer's */
    CHECK(!has(w4a8moe_last_error(), "max_tokens = 8"), "layer errors do not leak into last_error");
    CHECK(has(w4a8moe_layer_error(L), "invalid argument: ") && has(w4a8moe_layer_error(L), "[src/"),
          "layer error format 'status: message [src/file:line]': '%s'", w4a8moe_layer_error(L));
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
}

/* NaN or Inf in a token's x: that token's row is all NaN; the others are as without it. Every
 * backend that runs on this machine, dynamic scales; under static scales only NaN is checked
 * (an Inf input saturates to ±448 there: its scale is fixed, not NaN). */
static void nonfinite_case(const char *backend, w4a8moe_dtype io, int static_scales, test_rng *r)
{
    enum { T = 5, H = 128 };
    w4a8moe_layer_desc d;
    small_desc(&d);
    d.io_dtype = io;
    if (static_scales) {
        d.act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
        d.act_scale_in = 2.0f / 448;
        d.act_scale_mid = 0.05f;
    }
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_F16, 1, 0, test_rng_next(r)) == 0, "weights");
    w4a8moe_layer_options o = {0};
    o.backend = backend;
    w4a8moe_layer *L = NULL;
    w4a8moe_status st = w4a8moe_layer_create(&d, &sw.weights, &o, &L);
    if (st == W4A8MOE_STATUS_UNSUPPORTED) {
        printf("skip nonfinite inputs on %s: %s\n", backend, w4a8moe_last_error());
        w4a8moe_synth_weights_free(&sw);
        return;
    }
    CHECK(st == W4A8MOE_STATUS_OK, "create %s: %s", backend, w4a8moe_last_error());
    if (st != W4A8MOE_STATUS_OK) return;
    float xf[T * H];
    fill_x(xf, T * H, r);
    xf[1 * H + 17] = NAN;
    xf[3 * H + 100] = static_scales ? -NAN : INFINITY;
    xf[4 * H + 0] = static_scales ? NAN : -INFINITY;
    size_t esz = io == W4A8MOE_DTYPE_F32 ? 4 : 2;
    unsigned char x[T * H * 4], out[T * H * 4], x2[2 * H * 4], out2[2 * H * 4];
    for (int i = 0; i < T * H; i++) {
        if (esz == 4) memcpy(x + 4 * i, &xf[i], 4);
        else if (io == W4A8MOE_DTYPE_F16) ((uint16_t *)x)[i] = w4a8moe_f32_to_f16(xf[i]);
        else ((uint16_t *)x)[i] = w4a8moe_f32_to_bf16(xf[i]);
    }
    int32_t ids[T * 2] = {0, 1, 0, 1, 2, 3, 2, 3, 5, 4};
    float wts[T * 2] = {0.6f, 0.4f, 0.6f, 0.4f, 0.3f, 0.7f, 0.3f, 0.7f, 0.5f, 0.5f};
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    memset(out, 0, sizeof out);
    st = w4a8moe_layer_forward(L, T, x, &ri, out, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: forward with NaN/Inf: %s", backend, w4a8moe_layer_error(L));
    static const int nan_rows[T] = {0, 1, 0, 1, 1};
    for (int t = 0; t < T; t++) {
        int all_nan = 1, all_finite = 1;
        for (int i = 0; i < H; i++) {
            float v = w4a8moe_io_get(out, io, t * H + i);
            all_nan &= isnan(v);
            all_finite &= isfinite(v);
        }
        if (nan_rows[t])
            CHECK(all_nan, "%s io %d static %d: token %d has NaN/Inf input: its row must be all NaN",
                  backend, (int)io, static_scales, t);
        else
            CHECK(all_finite, "%s io %d static %d: token %d is finite: its row must be finite", backend,
                  (int)io, static_scales, t);
    }
    /* the finite tokens 0 and 2 alone, same routing: bit-identical rows */
    memcpy(x2, x, H * esz);
    memcpy(x2 + H * esz, x + 2 * H * esz, H * esz);
    int32_t ids2[4] = {0, 1, 2, 3};
    float wts2[4] = {0.6f, 0.4f, 0.3f, 0.7f};
    w4a8moe_routing_input ri2 = {.topk_ids = ids2, .topk_weights = wts2};
    CHECK(w4a8moe_layer_forward(L, 2, x2, &ri2, out2, NULL) == W4A8MOE_STATUS_OK, "forward");
    CHECK(memcmp(out2, out, H * esz) == 0 && memcmp(out2 + H * esz, out + 2 * H * esz, H * esz) == 0,
          "%s io %d: finite tokens must not be affected by a NaN/Inf token", backend, (int)io);
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
}

static void test_nonfinite(test_rng *r)
{
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++) {
        if (ex[i]->device_kind != W4A8MOE_DEVICE_CPU) {
            printf("skip nonfinite inputs on %s: not a CPU backend\n", ex[i]->name);
            continue;
        }
        nonfinite_case(ex[i]->name, W4A8MOE_DTYPE_F32, 0, r);
        nonfinite_case(ex[i]->name, W4A8MOE_DTYPE_BF16, 0, r);
        nonfinite_case(ex[i]->name, W4A8MOE_DTYPE_F16, 1, r);
    }
}

/* Stacked and per-expert forms, copies and borrowed weights, all give the same bits. */
static void test_weight_forms(test_rng *r)
{
    w4a8moe_layer_desc d;
    small_desc(&d);
    d.io_dtype = W4A8MOE_DTYPE_F32;
    enum { T = 6, H = 128 };
    float x[T * H], o1[T * H], o2[T * H], o3[T * H], wts[T * 2];
    int32_t ids[T * 2];
    fill_x(x, T * H, r);
    w4a8moe_synth_rng sr = {test_rng_next(r)};
    w4a8moe_synth_routing(ids, wts, T, d.num_experts, d.top_k, &sr);
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    for (int channel = 0; channel < 2; channel++) {
        w4a8moe_synth_weights sw;
        CHECK(w4a8moe_synth_weights_make(&sw, &d, channel ? W4A8MOE_DTYPE_F32 : W4A8MOE_DTYPE_BF16,
                                         channel, 0, test_rng_next(r)) == 0, "weights");
        stacked st;
        w4a8moe_weights ws;
        stack_weights(&d, &sw, channel, &st, &ws);
        w4a8moe_layer *a = make_layer(&d, &sw.weights, 0), *b = make_layer(&d, &ws, 0);
        w4a8moe_layer *c = make_layer(&d, &sw.weights, 1);
        if (a && b && c) {
            memset(o1, 0xff, sizeof o1), memset(o2, 0xff, sizeof o2), memset(o3, 0xff, sizeof o3);
            CHECK(w4a8moe_layer_forward(a, T, x, &ri, o1, NULL) == W4A8MOE_STATUS_OK &&
                      w4a8moe_layer_forward(b, T, x, &ri, o2, NULL) == W4A8MOE_STATUS_OK &&
                      w4a8moe_layer_forward(c, T, x, &ri, o3, NULL) == W4A8MOE_STATUS_OK,
                  "forwards");
            CHECK(memcmp(o1, o2, sizeof o1) == 0, "channel %d: stacked weights differ from per-expert", channel);
            CHECK(memcmp(o1, o3, sizeof o1) == 0, "channel %d: borrowed weights differ from copied", channel);
            int finite = 1;
            for (int i = 0; i < T * H; i++) finite &= isfinite(o1[i]) && o1[i] != 0.0f;
            CHECK(finite, "channel %d: outputs are finite and non-zero", channel);
            /* create copied the weights: wiping the caller's copy changes nothing */
            memset(sw.pool, 0, sw.pool_bytes);
            free_stacked(&st);
            memset(o2, 0xff, sizeof o2);
            CHECK(w4a8moe_layer_forward(a, T, x, &ri, o2, NULL) == W4A8MOE_STATUS_OK &&
                      memcmp(o1, o2, sizeof o1) == 0,
                  "channel %d: a layer must not depend on the caller's weights after create", channel);
        } else {
            free_stacked(&st);
        }
        w4a8moe_layer_free(a), w4a8moe_layer_free(b), w4a8moe_layer_free(c);
        w4a8moe_synth_weights_free(&sw);
    }
}

/* The router's bias is copied at create; logits routing equals the ids w4a8moe_route gives. */
static void test_logits_and_bias(test_rng *r)
{
    w4a8moe_layer_desc d;
    small_desc(&d);
    d.num_experts = 8;
    d.top_k = 3;
    d.io_dtype = W4A8MOE_DTYPE_F32;
    float bias[8];
    for (int e = 0; e < 8; e++) bias[e] = test_rng_uniform(r, -0.3f, 0.3f);
    d.routing = (w4a8moe_routing_desc){W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 1, 4, 2, 2.5f, bias};
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0, "weights");
    w4a8moe_layer *L = make_layer(&d, &sw.weights, 0);
    if (!L) return;
    CHECK(w4a8moe_layer_backend(L)[0] != '\0' && strcmp(w4a8moe_layer_prepfin(L), "local") == 0,
          "backend '%s', prepare/finalize '%s'", w4a8moe_layer_backend(L), w4a8moe_layer_prepfin(L));
    enum { T = 7, H = 128 };
    float x[T * H], logits[T * 8], o1[T * H], o2[T * H], o3[T * H], wts[T * 3];
    int32_t ids[T * 3];
    fill_x(x, T * H, r);
    for (int i = 0; i < T * 8; i++) logits[i] = test_rng_uniform(r, -3, 3);
    CHECK(w4a8moe_route(&d, T, logits, ids, wts) == W4A8MOE_STATUS_OK, "route");
    w4a8moe_routing_input by_logits = {.router_logits = logits},
                          by_ids = {.topk_ids = ids, .topk_weights = wts};
    CHECK(w4a8moe_layer_forward(L, T, x, &by_logits, o1, NULL) == W4A8MOE_STATUS_OK &&
              w4a8moe_layer_forward(L, T, x, &by_ids, o2, NULL) == W4A8MOE_STATUS_OK,
          "forwards: %s", w4a8moe_layer_error(L));
    CHECK(memcmp(o1, o2, sizeof o1) == 0, "logits routing must equal w4a8moe_route's ids");
    for (int e = 0; e < 8; e++) bias[e] = e == 0 ? 100.0f : -100.0f; /* would force expert 0 */
    CHECK(w4a8moe_layer_forward(L, T, x, &by_logits, o3, NULL) == W4A8MOE_STATUS_OK &&
              memcmp(o1, o3, sizeof o1) == 0,
          "the layer must keep its own copy of routing.score_bias");
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
}

int main(void)
{
    test_rng r = {test_seed()};
    test_status();
    test_desc_init();
    test_nulls(&r);
    test_invalid_desc(&r);
    test_weight_errors(&r);
    test_routing_errors(&r);
    test_nonfinite(&r);
    test_weight_forms(&r);
    test_logits_and_bias(&r);
    TEST_MAIN_END();
}
