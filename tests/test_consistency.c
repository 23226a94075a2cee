/*
 * test_consistency.c — every experts backend against the reference, and the reference against
 * an independent one.
 *
 * 1. For every registered experts backend that the oracle accepts on this machine, each case's
 *    output must match `cpu_ref` on the same inputs: relative L2 error of every output row
 *    <= 2e-3 (docs/numerics.md), no NaN/Inf where the reference has none, rows that must be
 *    zero exactly zero, nothing written past row T, and a second forward bit-identical.
 *    `cpu` claims more (docs/numerics.md: its group sums are exact integers summed in f64 in
 *    the reference's order): its output bytes must equal cpu_ref's (memcmp).
 * 2. `cpu_ref` itself is checked against a slow reference written here straight from the
 *    contract (docs/numerics.md): weights dequantised as w = C*S*q in double, the quantisation steps
 *    with quant.h's e4m3 rounding, e4m3 decoded from the format definition. Both compute the
 *    same f32 roundings, so they must agree to 1e-5 (in practice bit for bit).
 *
 * Cases: every built-in model shape at T = 2 (a pool of 2 distinct weight sets keeps memory
 * small; E shrinks to fit W4A8MOE_TEST_MEM_MB for backends that repack), T = 1, every token to
 * one expert, experts with zero tokens, -1 slots, a zero token, H and I multiples of g but not
 * of 256, g in {32, 64, 128}, bf16/f16/f32 I/O and scales, static scales, gelu_tanh, channel
 * scales, router weight on the input, routing from logits. W4A8MOE_TEST_QUICK=1 keeps only the
 * tiny and qwen3-30b-a3b built-in shapes and shrinks T.
 */
#include "common/synth.h"
#include "core/models.h"
#include "core/oracle.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

#define TOL_BACKEND 2e-3 /* the contract's tolerance */
#define TOL_INDEP 1e-5   /* cpu_ref vs the independent reference: same roundings */

typedef enum route_mode {
    ROUTE_RANDOM,     /* k distinct random experts per token */
    ROUTE_ONE_EXPERT, /* every token's slot 0 is the same expert */
    ROUTE_FEW,        /* only 3 experts ever used: the others (first and last included) get none */
    ROUTE_NEG,        /* random -1 slots, one token with every slot -1 */
    ROUTE_LOGITS,     /* router logits through the layer's router */
} route_mode;

typedef struct tcase {
    char name[112];
    w4a8moe_layer_desc d;
    int64_t T;
    w4a8moe_dtype scale_dtype;
    int with_channel;
    route_mode route;
    int zero_token;  /* token 0 all zeros */
    int indep;       /* check cpu_ref against the independent reference */
    int ref_twice;   /* run cpu_ref twice (bit-identical) */
} tcase;

static float bias_store[256];

/* ---- the independent reference (contract §1, written apart from src/) ---- */

static double e4m3_value_def(uint8_t c)
{
    int exp = (c >> 3) & 15, man = c & 7;
    double v = exp == 0 ? ldexp(man, -9) : ldexp(8 + man, exp - 10);
    return (c & 0x80) ? -v : v;
}

static float scale_of(float amax) /* step 2 / 5: max(amax / 448, 1 / (448 * 512)) */
{
    float s = amax / 448.0f, lo = 1.0f / (448.0f * 512.0f);
    return amax != amax ? amax : (s > lo ? s : lo);
}

/* One dequantised row n of an int4 matrix: w[k] = C[n] * S[n, k/g] * q[n, k], in double. */
static void dequant_row(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g, int64_t n, double *w)
{
    int64_t K = m->cols;
    double c = m->channel_scale ? (double)m->channel_scale[n] : 1.0;
    for (int64_t k = 0; k < K; k++) {
        uint32_t word = (uint32_t)m->packed[n * (K / 8) + k / 8];
        int q = (int)((word >> (4 * (k % 8))) & 15u) - 8;
        double s = (double)w4a8moe_scale_get(m->scale, sdt, n * (K / g) + k / g);
        w[k] = c * s * q;
    }
}

static float act_fn(w4a8moe_activation act, float v, float up)
{
    if (act == W4A8MOE_ACTIVATION_GELU_TANH) /* 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))) */
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))) * up;
    return v / (1.0f + expf(-v)) * up;
}

/* Steps 3-6 for one routed pair: o[H] from quantised a[H] with scale s. Returns amax(y) in
 * *ymax (used to pick static scales). */
static void indep_pair(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *x,
                       w4a8moe_dtype sdt, const uint8_t *a, float s, float *o, float *ymax,
                       double *wrow, float *h, uint8_t *b)
{
    int64_t H = d->hidden, I = d->inter;
    for (int64_t n = 0; n < 2 * I; n++) {
        dequant_row(n < I ? &x->gate : &x->up, sdt, d->group_size, n < I ? n : n - I, wrow);
        double acc = 0;
        for (int64_t k = 0; k < H; k++) acc += wrow[k] * e4m3_value_def(a[k]);
        h[n] = (float)((double)s * acc);
    }
    float amax = 0;
    for (int64_t i = 0; i < I; i++) {
        h[i] = act_fn(d->activation, h[i], h[I + i]); /* y overwrites the gate half */
        amax = fabsf(h[i]) > amax ? fabsf(h[i]) : amax;
    }
    *ymax = amax;
    float r = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_mid : scale_of(amax);
    for (int64_t i = 0; i < I; i++) b[i] = w4a8moe_f32_to_e4m3(h[i] / r);
    for (int64_t m = 0; m < H; m++) {
        dequant_row(&x->down, sdt, d->group_size, m, wrow);
        double acc = 0;
        for (int64_t i = 0; i < I; i++) acc += wrow[i] * e4m3_value_def(b[i]);
        o[m] = (float)((double)r * acc);
    }
}

/* The whole layer: out [T, H] as f32 values of the I/O dtype. Returns max amax(y) seen. */
static float indep_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w, int64_t T,
                         const void *x, const int32_t *ids, const float *wts, float *out)
{
    int64_t H = d->hidden, I = d->inter;
    int k = d->top_k;
    float *xi = malloc((size_t)H * 4), *o = malloc((size_t)H * 4), *acc = malloc((size_t)H * 4);
    float *h = malloc((size_t)(2 * I) * 4);
    double *wrow = malloc((size_t)(H > I ? H : I) * 8);
    uint8_t *a = malloc((size_t)H), *b = malloc((size_t)I);
    float ymax_all = 0;
    for (int64_t t = 0; t < T; t++) {
        float w_in = d->router_weight_on_input ? wts[t * k] : 1.0f; /* step 1 */
        float amax = 0;
        for (int64_t i = 0; i < H; i++) {
            xi[i] = w4a8moe_io_get(x, d->io_dtype, t * H + i) * w_in;
            amax = fabsf(xi[i]) > amax ? fabsf(xi[i]) : amax;
        }
        float s = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_in : scale_of(amax);
        for (int64_t i = 0; i < H; i++) a[i] = w4a8moe_f32_to_e4m3(xi[i] / s); /* step 2 */
        for (int64_t i = 0; i < H; i++) acc[i] = 0.0f;
        for (int j = 0; j < k; j++) { /* step 7, j ascending, f32 */
            int32_t e = ids[t * k + j];
            if (e < 0) continue;
            float ymax;
            indep_pair(d, &w->experts[e], w->scale_dtype, a, s, o, &ymax, wrow, h, b);
            ymax_all = ymax > ymax_all ? ymax : ymax_all;
            float cw = d->router_weight_on_input ? 1.0f : wts[t * k + j];
            for (int64_t i = 0; i < H; i++) acc[i] += cw * o[i];
        }
        for (int64_t i = 0; i < H; i++) { /* one rounding to the I/O dtype */
            uint16_t u16;
            switch (d->io_dtype) {
            case W4A8MOE_DTYPE_BF16: u16 = w4a8moe_f32_to_bf16(acc[i]); out[t * H + i] = w4a8moe_bf16_to_f32(u16); break;
            case W4A8MOE_DTYPE_F16: u16 = w4a8moe_f32_to_f16(acc[i]); out[t * H + i] = w4a8moe_f16_to_f32(u16); break;
            default: out[t * H + i] = acc[i];
            }
        }
    }
    free(xi), free(o), free(acc), free(h), free(wrow), free(a), free(b);
    return ymax_all;
}

/* ---- running layers ---- */

typedef struct case_data {
    w4a8moe_synth_weights sw;
    void *x;
    int32_t *ids;
    float *wts;
    float *logits;
    w4a8moe_routing_input routing;
} case_data;

static void make_inputs(const tcase *c, case_data *cd, test_rng *r)
{
    const w4a8moe_layer_desc *d = &c->d;
    int64_t T = c->T, H = d->hidden;
    int E = d->num_experts, k = d->top_k;
    cd->x = malloc((size_t)(T * H) * w4a8moe_dtype_size(d->io_dtype));
    for (int64_t t = 0; t < T; t++) {
        /* tokens of very different magnitudes, some with one outlier, token 0 maybe zero */
        float mag = c->d.act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? 1.0f
                                                                      : ldexpf(1.0f, (int)(test_rng_next(r) % 13) - 6);
        int64_t outlier = test_rng_next(r) % 3 == 0 ? (int64_t)(test_rng_next(r) % (uint64_t)H) : -1;
        for (int64_t i = 0; i < H; i++) {
            float v = test_rng_uniform(r, -1.0f, 1.0f) * mag * (i == outlier ? 30.0f : 1.0f);
            if (c->zero_token && t == 0) v = 0.0f;
            w4a8moe_io_put(cd->x, d->io_dtype, t * H + i, v);
        }
    }
    cd->ids = malloc((size_t)(T * k) * 4);
    cd->wts = malloc((size_t)(T * k) * 4);
    w4a8moe_synth_rng sr = {test_rng_next(r)};
    w4a8moe_synth_routing(cd->ids, cd->wts, T, E, k, &sr);
    int32_t few[3] = {1, E / 2, E - 2 > 1 ? E - 2 : 1};
    for (int64_t t = 0; t < T; t++) {
        int32_t *id = cd->ids + t * k;
        if (c->route == ROUTE_ONE_EXPERT) {
            int32_t star = E > 3 ? 3 : 0;
            for (int j = 1; j < k; j++)
                if (id[j] == star) id[j] = id[0]; /* keep the token's ids distinct */
            id[0] = star;
        } else if (c->route == ROUTE_FEW) {
            for (int j = 0; j < k; j++) id[j] = j < 3 ? few[(t + j) % 3] : -1;
        } else if (c->route == ROUTE_NEG) {
            for (int j = 0; j < k; j++)
                if (t == T - 1 || test_rng_next(r) % 3 == 0) id[j] = -1;
        }
    }
    cd->routing = (w4a8moe_routing_input){.topk_ids = cd->ids, .topk_weights = cd->wts};
    cd->logits = NULL;
    if (c->route == ROUTE_LOGITS) {
        cd->logits = malloc((size_t)(T * E) * 4);
        for (int64_t i = 0; i < T * E; i++) cd->logits[i] = test_rng_uniform(r, -4.0f, 4.0f);
        cd->routing = (w4a8moe_routing_input){.router_logits = cd->logits};
        /* the ids and weights the layer's router will produce, for the independent reference */
        w4a8moe_status st = w4a8moe_route(d, T, cd->logits, cd->ids, cd->wts);
        CHECK(st == W4A8MOE_STATUS_OK, "%s: route: %s", c->name, w4a8moe_last_error());
    }
}

static void free_inputs(case_data *cd)
{
    w4a8moe_synth_weights_free(&cd->sw);
    free(cd->x), free(cd->ids), free(cd->wts), free(cd->logits);
}

/* Creates a layer forced to backend, runs one forward into a poisoned out of T+1 rows, and
 * widens the T rows to f32. Returns 0 on success. */
static int run_layer(const tcase *c, const case_data *cd, const char *backend, int borrow,
                     w4a8moe_layer **keep, float *out_f32, void *out_raw)
{
    const w4a8moe_layer_desc *d = &c->d;
    int64_t T = c->T, H = d->hidden;
    size_t esz = w4a8moe_dtype_size(d->io_dtype), bytes = (size_t)(T * H) * esz;
    w4a8moe_layer *L = *keep;
    if (!L) {
        w4a8moe_layer_options o = {0};
        o.backend = backend;
        o.borrow_weights = borrow;
        w4a8moe_status st = w4a8moe_layer_create(d, &cd->sw.weights, &o, &L);
        CHECK(st == W4A8MOE_STATUS_OK, "%s: create %s: %s", c->name, backend, w4a8moe_last_error());
        if (st != W4A8MOE_STATUS_OK) return -1;
        CHECK(strcmp(w4a8moe_layer_backend(L), backend) == 0, "%s: layer runs %s, forced %s", c->name,
              w4a8moe_layer_backend(L), backend);
        *keep = L;
    }
    memset(out_raw, 0xff, bytes + (size_t)H * esz); /* NaN in every dtype, one extra row */
    w4a8moe_status st = w4a8moe_layer_forward(L, T, cd->x, &cd->routing, out_raw, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: forward %s: %s", c->name, backend, w4a8moe_layer_error(L));
    if (st != W4A8MOE_STATUS_OK) return -1;
    const unsigned char *tail = (const unsigned char *)out_raw + bytes;
    int untouched = 1;
    for (size_t i = 0; i < (size_t)H * esz; i++) untouched &= tail[i] == 0xff;
    CHECK(untouched, "%s: %s wrote past row T", c->name, backend);
    for (int64_t i = 0; i < T * H; i++) out_f32[i] = w4a8moe_io_get(out_raw, d->io_dtype, i);
    return 0;
}

/* Per-row comparison of got against want; returns the worst relative L2 error. */
static double compare_rows(const tcase *c, const char *who, const float *got, const float *want,
                           double tol)
{
    int64_t T = c->T, H = c->d.hidden;
    double worst = 0;
    int bad = 0;
    for (int64_t t = 0; t < T; t++) {
        double num = 0, den = 0;
        int nonfinite = 0, ref_nonfinite = 0;
        for (int64_t i = 0; i < H; i++) {
            float g = got[t * H + i], w = want[t * H + i];
            ref_nonfinite |= !isfinite(w);
            nonfinite |= !isfinite(g);
            num += ((double)g - w) * ((double)g - w);
            den += (double)w * w;
        }
        double rel = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
        if (ref_nonfinite) {
            bad++;
            printf("%s: %s: reference row %lld is not finite (test bug)\n", c->name, who, (long long)t);
            continue;
        }
        if (nonfinite) rel = INFINITY;
        worst = rel > worst ? rel : worst;
        if (!(rel <= tol) && bad++ < 3)
            printf("%s: %s: row %lld rel-L2 %.3g > %.1g%s\n", c->name, who, (long long)t, rel, tol,
                   nonfinite ? " (NaN/Inf where the reference has none)" : den == 0 ? " (must be 0)" : "");
    }
    CHECK(bad == 0, "%s: %s: %d rows outside tolerance %.1g (worst %.3g)", c->name, who, bad, tol, worst);
    return worst;
}

static size_t raw_bytes(const tcase *c)
{
    return (size_t)((c->T + 1) * c->d.hidden) * w4a8moe_dtype_size(c->d.io_dtype);
}

/* Runs backend b on the case and compares with ref (ref_raw: cpu_ref's output bytes); checks
 * a second forward is identical. */
static void check_backend(const tcase *c, const case_data *cd, const w4a8moe_experts_ops *b,
                          const float *ref, const void *ref_raw)
{
    int64_t n = c->T * c->d.hidden;
    float *got = malloc((size_t)n * 4);
    void *raw = malloc(raw_bytes(c)), *raw2 = malloc(raw_bytes(c));
    w4a8moe_layer *L = NULL;
    if (run_layer(c, cd, b->name, 0, &L, got, raw) == 0) {
        double worst = compare_rows(c, b->name, got, ref, TOL_BACKEND);
        printf("ok %s: %s vs cpu_ref worst row rel-L2 %.3g\n", c->name, b->name, worst);
        if (strcmp(b->name, "cpu") == 0)
            CHECK(memcmp(raw, ref_raw, (size_t)n * w4a8moe_dtype_size(c->d.io_dtype)) == 0,
                  "%s: cpu is not bit-identical to cpu_ref (worst row rel-L2 %.3g)", c->name,
                  worst);
        float *again = malloc((size_t)n * 4);
        if (run_layer(c, cd, b->name, 0, &L, again, raw2) == 0)
            CHECK(memcmp(raw, raw2, (size_t)n * w4a8moe_dtype_size(c->d.io_dtype)) == 0,
                  "%s: %s: a second forward is not bit-identical", c->name, b->name);
        free(again);
    }
    w4a8moe_layer_free(L);
    free(got), free(raw), free(raw2);
}

static void run_case(tcase *c, test_rng *r, const w4a8moe_device_info *dev)
{
    case_data cd;
    memset(&cd, 0, sizeof cd);
    int pool = c->d.num_experts < 2 ? c->d.num_experts : 2;
    if (c->route == ROUTE_RANDOM || c->route == ROUTE_NEG || c->d.num_experts <= 16) pool = c->d.num_experts;
    if ((int64_t)c->d.hidden * c->d.inter > 1 << 20) pool = 2; /* built-in shapes: memory */
    if (w4a8moe_synth_weights_make(&cd.sw, &c->d, c->scale_dtype, c->with_channel, pool,
                                   test_rng_next(r)) != 0) {
        CHECK(0, "%s: out of memory for synthetic weights", c->name);
        return;
    }
    make_inputs(c, &cd, r);
    int64_t n = c->T * c->d.hidden;
    float *ref = malloc((size_t)n * 4), *indep = malloc((size_t)n * 4);
    void *raw = malloc(raw_bytes(c)), *raw2 = malloc(raw_bytes(c));
    if (c->d.act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
        /* static scales that make some values saturate: 0.7 of the dynamic scales' range */
        float amax = 0;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(w4a8moe_io_get(cd.x, c->d.io_dtype, i)));
        c->d.act_scale_in = 0.7f * amax / 448.0f;
        c->d.act_scale_mid = 1.0f;
        float ymax = indep_layer(&c->d, &cd.sw.weights, c->T, cd.x, cd.ids, cd.wts, indep);
        c->d.act_scale_mid = 0.7f * ymax / 448.0f;
    }
    w4a8moe_layer *L = NULL;
    if (run_layer(c, &cd, "cpu_ref", 1, &L, ref, raw) == 0) {
        int nonzero = 0;
        for (int64_t i = 0; i < n; i++) nonzero += ref[i] != 0.0f;
        CHECK(nonzero > n / 4, "%s: reference output is mostly zero (%d of %lld): a dead case", c->name,
              nonzero, (long long)n);
        if (c->indep) {
            indep_layer(&c->d, &cd.sw.weights, c->T, cd.x, cd.ids, cd.wts, indep);
            double worst = compare_rows(c, "cpu_ref vs independent", ref, indep, TOL_INDEP);
            printf("ok %s: cpu_ref vs independent reference worst row rel-L2 %.3g\n", c->name, worst);
        }
        if (c->ref_twice && run_layer(c, &cd, "cpu_ref", 1, &L, indep, raw2) == 0)
            CHECK(memcmp(raw, raw2, (size_t)n * w4a8moe_dtype_size(c->d.io_dtype)) == 0,
                  "%s: cpu_ref: a second forward is not bit-identical", c->name);
        w4a8moe_layer_free(L);
        size_t nb;
        const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&nb);
        for (size_t i = 0; i < nb; i++) {
            if (strcmp(ex[i]->name, "cpu_ref") == 0 || ex[i]->device_kind != dev->kind) continue;
            w4a8moe_verdict v;
            w4a8moe_oracle_judge(ex[i], dev, &c->d, &v);
            if (!v.ok) {
                printf("skip %s: %s rejected (%s): %s\n", c->name, ex[i]->name, w4a8moe_axis_name(v.axis), v.why);
                continue;
            }
            check_backend(c, &cd, ex[i], ref, raw);
        }
    } else {
        w4a8moe_layer_free(L);
    }
    free(ref), free(indep), free(raw), free(raw2);
    free_inputs(&cd);
}


/* ---- the cases ---- */

static tcase base_case(const char *name, int64_t H, int64_t I, int E, int k, int g, int64_t T)
{
    tcase c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    w4a8moe_layer_desc_init(&c.d);
    c.d.max_tokens = T + 3; /* T below max_tokens, as in real use */
    c.d.hidden = H;
    c.d.inter = I;
    c.d.num_experts = E;
    c.d.top_k = k;
    c.d.group_size = g;
    c.T = T;
    c.scale_dtype = W4A8MOE_DTYPE_BF16;
    c.route = ROUTE_RANDOM;
    c.indep = 1;
    c.ref_twice = 1;
    return c;
}

/* Bytes per expert a repacking backend may hold: int4 + f32 scales + channel scales. */
static double expert_bytes(const w4a8moe_layer_desc *d)
{
    double hi = 3.0 * (double)d->hidden * (double)d->inter;
    return hi / 2 + hi / d->group_size * 4 + 3.0 * (double)(d->hidden + d->inter) * 4;
}

static int other_backend_accepts(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d)
{
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++) {
        w4a8moe_verdict v;
        w4a8moe_oracle_judge(ex[i], dev, d, &v);
        if (v.ok && strcmp(ex[i]->name, "cpu_ref") != 0) return 1;
    }
    return 0;
}

/* Backends other than cpu_ref copy every expert: shrink E to the memory budget (the kernels
 * see the same H, I, g, k; only the number of weight sets changes). */
static void fit_experts(tcase *c, const w4a8moe_device_info *dev)
{
    if (!other_backend_accepts(dev, &c->d)) return;
    const char *env = getenv("W4A8MOE_TEST_MEM_MB");
    double budget = (env ? atof(env) : 1024.0) * 1048576.0;
    int E = c->d.num_experts, fit = (int)(budget / expert_bytes(&c->d));
    if (fit >= E) return;
    w4a8moe_routing_desc *r = &c->d.routing;
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK) {
        fit -= fit % r->n_group;
        while (fit < 2 * r->n_group || r->topk_group * (fit / r->n_group) < c->d.top_k) fit += r->n_group;
    }
    if (fit < c->d.top_k) fit = c->d.top_k;
    printf("note %s: E %d -> %d so every backend's weight copy fits %.0f MB "
           "(W4A8MOE_TEST_MEM_MB)\n", c->name, E, fit, budget / 1048576.0);
    c->d.num_experts = fit;
}

static int builtin_cases(tcase *cs, int quick, test_rng *r)
{
    int n = 0;
    for (const w4a8moe_model *m = w4a8moe_models(); m->name; m++) {
        int small = (int64_t)m->hidden * m->inter <= 2048 * 768;
        if (quick && !small) continue;
        char name[64];
        snprintf(name, sizeof name, "model %s T=2", m->name);
        tcase c = base_case(name, 0, 0, 0, 0, 0, 2);
        w4a8moe_model_desc(m, 5, &c.d);
        c.route = ROUTE_LOGITS;
        c.indep = small;
        c.ref_twice = m->hidden <= 256;
        if (c.d.routing.kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK) {
            for (int e = 0; e < 256; e++) bias_store[e] = test_rng_uniform(r, -0.1f, 0.1f);
            c.d.routing.score_bias = bias_store;
        }
        cs[n++] = c;
    }
    return n;
}

static int small_cases(tcase *cs, int quick)
{
    int n = 0;
    tcase c;
    cs[n++] = base_case("T=1", 256, 128, 8, 2, 64, 1);
    c = base_case("every token to one expert", 256, 128, 8, 2, 64, 12);
    c.route = ROUTE_ONE_EXPERT;
    cs[n++] = c;
    c = base_case("every token to one expert, k=1", 128, 64, 8, 1, 32, 9);
    c.route = ROUTE_ONE_EXPERT;
    cs[n++] = c;
    c = base_case("experts with zero tokens", 256, 128, 16, 3, 64, 10);
    c.route = ROUTE_FEW;
    cs[n++] = c;
    c = base_case("-1 slots", 256, 128, 8, 4, 64, 9);
    c.route = ROUTE_NEG;
    cs[n++] = c;
    c = base_case("a zero token", 256, 128, 8, 2, 64, 4);
    c.zero_token = 1;
    cs[n++] = c;
    cs[n++] = base_case("H=320 I=160 g=32 (not multiples of 256)", 320, 160, 8, 2, 32, 5);
    cs[n++] = base_case("g=32", 256, 256, 8, 2, 32, 6);
    cs[n++] = base_case("g=64", 256, 256, 8, 2, 64, 6);
    cs[n++] = base_case("g=128", 256, 384, 8, 2, 128, 6);
    cs[n++] = base_case("smallest: H=96 I=32 g=32 E=3", 96, 32, 3, 2, 32, 5);
    cs[n++] = base_case("k = E", 128, 64, 4, 4, 32, 5);
    c = base_case("f16 I/O, f16 scales", 256, 128, 8, 2, 64, 6);
    c.d.io_dtype = W4A8MOE_DTYPE_F16;
    c.scale_dtype = W4A8MOE_DTYPE_F16;
    cs[n++] = c;
    c = base_case("f32 I/O, f32 scales", 256, 128, 8, 2, 64, 6);
    c.d.io_dtype = W4A8MOE_DTYPE_F32;
    c.scale_dtype = W4A8MOE_DTYPE_F32;
    cs[n++] = c;
    c = base_case("bf16 I/O, f32 scales, channel scales", 256, 128, 8, 2, 64, 6);
    c.scale_dtype = W4A8MOE_DTYPE_F32;
    c.with_channel = 1;
    cs[n++] = c;
    c = base_case("static activation scales", 256, 128, 8, 2, 64, 7);
    c.d.act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    cs[n++] = c;
    c = base_case("gelu_tanh", 256, 128, 8, 2, 64, 6);
    c.d.activation = W4A8MOE_ACTIVATION_GELU_TANH;
    cs[n++] = c;
    c = base_case("router weight on input, k=1", 256, 128, 8, 1, 64, 6);
    c.d.router_weight_on_input = 1;
    cs[n++] = c;
    c = base_case("logits: softmax renormalised", 256, 128, 16, 4, 64, 8);
    c.route = ROUTE_LOGITS;
    c.d.routing.renormalize = 1;
    cs[n++] = c;
    c = base_case("logits: grouped sigmoid with bias", 256, 128, 16, 4, 64, 8);
    c.route = ROUTE_LOGITS;
    c.d.routing = (w4a8moe_routing_desc){W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 1, 4, 2, 2.5f, bias_store};
    cs[n++] = c;
    c = base_case("logits: sigmoid top1 on input", 256, 128, 8, 1, 64, 8);
    c.route = ROUTE_LOGITS;
    c.d.routing.kind = W4A8MOE_ROUTING_SIGMOID_TOP1;
    c.d.router_weight_on_input = 1;
    c.d.io_dtype = W4A8MOE_DTYPE_F32;
    cs[n++] = c;
    c = base_case("many tokens", 256, 128, 8, 2, 64, quick ? 16 : 64);
    c.with_channel = 1;
    cs[n++] = c;
    c = base_case("many tokens, f16 I/O, -1 slots", 320, 160, 8, 3, 32, quick ? 12 : 48);
    c.route = ROUTE_NEG;
    c.d.io_dtype = W4A8MOE_DTYPE_F16;
    cs[n++] = c;
    return n;
}

int main(void)
{
    test_rng r = {test_seed()};
    int quick = test_quick();
    w4a8moe_device_info dev;
    memset(&dev, 0, sizeof dev);
    w4a8moe_err err;
    CHECK(w4a8moe_registry_device(W4A8MOE_DEVICE_CPU)->query(0, &dev, &err) == W4A8MOE_STATUS_OK,
          "cpu device query");
    size_t nb;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&nb);
    printf("device: %s; experts backends:", dev.name);
    for (size_t i = 0; i < nb; i++)
        printf(" %s%s", ex[i]->name, ex[i]->device_kind != dev.kind ? " (not a CPU backend: not run)" : "");
    printf("%s\n", nb == 1 ? " (only the reference: the independent reference checks it)" : "");

    tcase cs[64];
    int n = small_cases(cs, quick);
    n += builtin_cases(cs + n, quick, &r);
    for (int i = 0; i < n; i++) {
        fit_experts(&cs[i], &dev);
        run_case(&cs[i], &r, &dev);
    }
    TEST_MAIN_END();
}
