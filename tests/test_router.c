/*
 * test_router.c — the router (logits → expert ids and weights) through the public
 * w4a8moe_route: hand-computed cases for softmax top-k, DeepSeek-V3 grouped sigmoid top-k and
 * Llama-4 sigmoid top-1, validation errors naming the field, NaN logits, the scalar rules
 * the host and CUDA routers share (src/common/route_rule.h; tests/gpu/test_gpu_routing.c runs
 * the device router against this one), and random cases against a straightforward
 * re-implementation of docs/numerics.md "Routing".
 */
#include "common/route_rule.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <math.h>
#include <string.h>

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static void desc_for(w4a8moe_layer_desc *d, w4a8moe_routing kind, int E, int k)
{
    w4a8moe_layer_desc_init(d);
    d->max_tokens = 16;
    d->hidden = 64;
    d->inter = 64;
    d->group_size = 32;
    d->num_experts = E;
    d->top_k = k;
    d->routing.kind = kind;
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

static int close_to(float got, double want) { return fabs((double)got - want) <= 1e-6 * fmax(1.0, fabs(want)); }

/* Runs one token and checks ids exactly and weights to 1e-6. */
static void expect_route(const char *what, const w4a8moe_layer_desc *d, const float *logits,
                         const int32_t *want_ids, const double *want_w)
{
    int32_t ids[16];
    float w[16];
    memset(ids, 0x5a, sizeof ids);
    for (int j = 0; j < 16; j++) w[j] = NAN;
    w4a8moe_status st = w4a8moe_route(d, 1, logits, ids, w);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: route failed: %s", what, w4a8moe_last_error());
    if (st != W4A8MOE_STATUS_OK) return;
    for (int j = 0; j < d->top_k; j++) {
        CHECK(ids[j] == want_ids[j], "%s: slot %d id %d, expected %d", what, j, ids[j], want_ids[j]);
        CHECK(close_to(w[j], want_w[j]), "%s: slot %d weight %.9g, expected %.9g", what, j,
              (double)w[j], want_w[j]);
    }
}

static void test_softmax(void)
{
    w4a8moe_layer_desc d;
    desc_for(&d, W4A8MOE_ROUTING_SOFTMAX_TOPK, 4, 2);
    /* ties between experts 1 and 3 go to the lower index first */
    const float l[4] = {1.0f, 3.0f, 2.0f, 3.0f};
    double z = exp(-2.0) + 1.0 + exp(-1.0) + 1.0;
    expect_route("softmax tie", &d, l, (const int32_t[]){1, 3}, (const double[]){1.0 / z, 1.0 / z});
    d.routing.renormalize = 1;
    expect_route("softmax tie renormalised", &d, l, (const int32_t[]){1, 3},
                 (const double[]){0.5, 0.5});

    const float l2[4] = {0.5f, -1.0f, 2.0f, 1.0f};
    double e[4], s = 0;
    for (int i = 0; i < 4; i++) s += (e[i] = exp((double)l2[i]));
    d.routing.renormalize = 0;
    expect_route("softmax", &d, l2, (const int32_t[]){2, 3}, (const double[]){e[2] / s, e[3] / s});
    d.routing.renormalize = 1;
    expect_route("softmax renormalised", &d, l2, (const int32_t[]){2, 3},
                 (const double[]){e[2] / (e[2] + e[3]), e[3] / (e[2] + e[3])});

    desc_for(&d, W4A8MOE_ROUTING_SOFTMAX_TOPK, 4, 3);
    const float flat[4] = {0, 0, 0, 0};
    expect_route("softmax all equal", &d, flat, (const int32_t[]){0, 1, 2},
                 (const double[]){0.25, 0.25, 0.25});
    d.routing.renormalize = 1;
    expect_route("softmax all equal renormalised", &d, flat, (const int32_t[]){0, 1, 2},
                 (const double[]){1.0 / 3, 1.0 / 3, 1.0 / 3});
    /* routed_scaling_factor is a grouped-routing parameter: softmax ignores it */
    d.routing.routed_scaling_factor = 2.0f;
    expect_route("softmax ignores the scaling factor", &d, flat, (const int32_t[]){0, 1, 2},
                 (const double[]){1.0 / 3, 1.0 / 3, 1.0 / 3});
}

static void test_grouped(void)
{
    w4a8moe_layer_desc d;
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 2);
    d.routing.n_group = 4; /* groups {0,1} {2,3} {4,5} {6,7} */
    d.routing.topk_group = 2;
    d.routing.routed_scaling_factor = 2.5f;
    d.routing.renormalize = 1;
    /* expert 0 scores best alone, but its group (0.982 + 0.018) loses to groups 1 (1.462) and
     * 2 (1.245): the winners come from groups 1 and 2 only; 2 and 3 tie → lower index first */
    const float l[8] = {4.0f, -4.0f, 1.0f, 1.0f, 0.5f, 0.5f, -1.0f, 0.0f};
    expect_route("grouped: group mask", &d, l, (const int32_t[]){2, 3},
                 (const double[]){1.25, 1.25});
    d.routing.renormalize = 0;
    expect_route("grouped: no renormalisation", &d, l, (const int32_t[]){2, 3},
                 (const double[]){2.5 * sigmoid(1), 2.5 * sigmoid(1)});

    /* a bias selects, but the weights stay unbiased sigmoid scores: expert 5 (0.622 + 0.5) wins
     * the first slot though its weight is below expert 2's */
    float bias[8] = {0, 0, 0, 0, 0, 0.5f, 0, 0};
    d.routing.score_bias = bias;
    d.routing.renormalize = 1;
    double s5 = sigmoid(0.5), s2 = sigmoid(1.0);
    expect_route("grouped: bias selects, weights unbiased", &d, l, (const int32_t[]){5, 2},
                 (const double[]){2.5 * s5 / (s5 + s2), 2.5 * s2 / (s5 + s2)});
    /* a bias that lifts group 3 above the rest: 6 (0.269 + 1) and 7 (0.5 + 1) → group 3 wins */
    float bias2[8] = {0, 0, 0, 0, 0, 0, 1.0f, 1.0f};
    d.routing.score_bias = bias2;
    d.routing.topk_group = 1;
    double s6 = sigmoid(-1), s7 = sigmoid(0);
    expect_route("grouped: bias moves the group", &d, l, (const int32_t[]){7, 6},
                 (const double[]){2.5 * s7 / (s6 + s7), 2.5 * s6 / (s6 + s7)});

    /* group score = the sum of the TWO best of a group, not the best one: with 4 per group,
     * group 0 has one star (3.0) and weak rest; group 1 has two good (1.0, 1.0) */
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 1);
    d.routing.n_group = 2;
    d.routing.topk_group = 1;
    d.routing.routed_scaling_factor = 1.0f;
    const float l3[8] = {3.0f, -5.0f, -5.0f, -5.0f, 1.0f, 1.0f, -5.0f, -5.0f};
    /* group 0: 0.953 + 0.0067 = 0.959; group 1: 0.731 + 0.731 = 1.462 → expert 4 */
    expect_route("grouped: two best per group", &d, l3, (const int32_t[]){4},
                 (const double[]){sigmoid(1)});
}

static void test_top1(void)
{
    w4a8moe_layer_desc d;
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_TOP1, 4, 1);
    const float l[4] = {0.5f, 2.0f, -1.0f, 2.0f};
    expect_route("top1 tie", &d, l, (const int32_t[]){1}, (const double[]){sigmoid(2)});
    const float l2[4] = {-3.0f, -2.0f, -2.5f, -4.0f};
    expect_route("top1 negative", &d, l2, (const int32_t[]){1}, (const double[]){sigmoid(-2)});
    const float l3[4] = {NAN, 1.0f, NAN, 0.0f};
    expect_route("top1 NaN ranks lowest", &d, l3, (const int32_t[]){1}, (const double[]){sigmoid(1)});
}

static void expect_invalid(const char *what, const w4a8moe_layer_desc *d, const char *needle)
{
    float logits[64] = {0};
    int32_t ids[64];
    float w[64];
    w4a8moe_status st = w4a8moe_route(d, 1, logits, ids, w);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT, "%s: status %d (%s), expected invalid argument", what,
          (int)st, w4a8moe_status_str(st));
    CHECK(has(w4a8moe_last_error(), needle), "%s: message '%s' should mention '%s'", what,
          w4a8moe_last_error(), needle);
}

static void test_validation(void)
{
    w4a8moe_layer_desc d;
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_TOP1, 8, 2);
    expect_invalid("top1 with k = 2", &d, "k = 1");
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 2);
    d.routing.n_group = 3;
    d.routing.topk_group = 1;
    expect_invalid("n_group not dividing E", &d, "n_group");
    d.routing.n_group = 0;
    expect_invalid("n_group = 0", &d, "n_group");
    d.routing.n_group = 4;
    d.routing.topk_group = 5;
    expect_invalid("topk_group > n_group", &d, "topk_group");
    d.routing.topk_group = 0;
    expect_invalid("topk_group = 0", &d, "topk_group");
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 3);
    d.routing.n_group = 4;
    d.routing.topk_group = 1; /* keeps 2 experts < k = 3 */
    expect_invalid("kept experts fewer than k", &d, "fewer than k");
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 1);
    d.routing.n_group = 8;
    d.routing.topk_group = 2;
    expect_invalid("one expert per group", &d, "E / n_group");
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 8, 2);
    d.routing.n_group = 4;
    d.routing.topk_group = 2;
    d.routing.routed_scaling_factor = 0.0f;
    expect_invalid("scaling factor 0", &d, "routed_scaling_factor");
    d.routing.routed_scaling_factor = NAN;
    expect_invalid("scaling factor NaN", &d, "routed_scaling_factor");
    d.routing.routed_scaling_factor = INFINITY;
    expect_invalid("scaling factor inf", &d, "routed_scaling_factor");
    desc_for(&d, (w4a8moe_routing)7, 8, 2);
    expect_invalid("unknown routing kind", &d, "routing.kind");
    desc_for(&d, (w4a8moe_routing)-1, 8, 2);
    expect_invalid("negative routing kind", &d, "routing.kind");

    desc_for(&d, W4A8MOE_ROUTING_SOFTMAX_TOPK, 8, 2);
    int32_t ids[2];
    float w[2], l[8] = {0};
    CHECK(w4a8moe_route(&d, -1, l, ids, w) == W4A8MOE_STATUS_INVALID_ARGUMENT, "T < 0 is invalid");
    CHECK(w4a8moe_route(&d, 1, NULL, ids, w) == W4A8MOE_STATUS_INVALID_ARGUMENT, "NULL logits");
    CHECK(w4a8moe_route(&d, 1, l, NULL, w) == W4A8MOE_STATUS_INVALID_ARGUMENT, "NULL ids");
    CHECK(w4a8moe_route(&d, 1, l, ids, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT, "NULL weights");
    CHECK(w4a8moe_route(&d, 0, NULL, NULL, NULL) == W4A8MOE_STATUS_OK, "T = 0 is a no-op");
    CHECK(w4a8moe_route(NULL, 1, l, ids, w) == W4A8MOE_STATUS_INVALID_ARGUMENT, "NULL description");
}

/* Ids of one token: each in [0, E) and no repeats. */
static int ids_valid(const int32_t *ids, int k, int E)
{
    for (int j = 0; j < k; j++) {
        if (ids[j] < 0 || ids[j] >= E) return 0;
        for (int i = 0; i < j; i++)
            if (ids[i] == ids[j]) return 0;
    }
    return 1;
}

static void ref_softmax(const float *l, int E, int k, int renorm, int32_t *ids, double *w);

static void test_nan_logits(test_rng *r)
{
    enum { T = 64, E = 16 };
    static const w4a8moe_routing kinds[3] = {W4A8MOE_ROUTING_SOFTMAX_TOPK,
                                             W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK,
                                             W4A8MOE_ROUTING_SIGMOID_TOP1};
    static const float specials[4] = {NAN, INFINITY, -INFINITY, -NAN};
    float logits[T * E];
    int32_t ids[T * 4];
    float w[T * 4];
    for (int kind = 0; kind < 3; kind++) {
        w4a8moe_layer_desc d;
        int k = kinds[kind] == W4A8MOE_ROUTING_SIGMOID_TOP1 ? 1 : 4;
        desc_for(&d, kinds[kind], E, k);
        d.routing.n_group = 4;
        d.routing.topk_group = 2;
        d.routing.renormalize = 1;
        for (int t = 0; t < T; t++) {
            /* token t: a random share of special values, all of them in the last tokens */
            int share = t < T - 2 ? (int)(test_rng_next(r) % 5) : 4;
            for (int e = 0; e < E; e++) {
                int special = (int)(test_rng_next(r) % 4) < share;
                logits[t * E + e] = special ? (t == T - 1 ? NAN : specials[test_rng_next(r) % 4])
                                            : test_rng_uniform(r, -4, 4);
            }
        }
        w4a8moe_status st = w4a8moe_route(&d, T, logits, ids, w);
        CHECK(st == W4A8MOE_STATUS_OK, "kind %d with NaN/inf logits: %s", kind, w4a8moe_last_error());
        int bad = 0;
        for (int t = 0; t < T; t++) bad += !ids_valid(ids + t * k, k, E);
        CHECK(bad == 0, "kind %d: %d tokens with NaN/inf logits got invalid or repeated ids", kind, bad);
    }
    /* a NaN logit ranks lowest, as if it were -inf: the finite logits route as without it */
    for (int kind = 0; kind < 3; kind += 2) {
        w4a8moe_layer_desc d;
        int k = kind == 2 ? 1 : 4;
        desc_for(&d, kinds[kind], E, k);
        d.routing.renormalize = 0;
        int mismatch = 0, nan_weight = 0;
        for (int t = 0; t < T; t++) {
            int finite = 0;
            for (int e = 0; e < E; e++) {
                int nan = test_rng_next(r) % 3 == 0 && E - e > k - finite;
                logits[t * E + e] = nan ? NAN : test_rng_uniform(r, -4, 4);
                finite += !nan;
            }
        }
        CHECK(w4a8moe_route(&d, T, logits, ids, w) == W4A8MOE_STATUS_OK, "route: %s", w4a8moe_last_error());
        for (int t = 0; t < T; t++) {
            float l[E];
            int32_t rid[4];
            double rw[4];
            for (int e = 0; e < E; e++) l[e] = isnan(logits[t * E + e]) ? -INFINITY : logits[t * E + e];
            if (kind == 0) {
                ref_softmax(l, E, k, 0, rid, rw);
            } else {
                rid[0] = 0;
                for (int e = 1; e < E; e++)
                    if (l[e] > l[rid[0]]) rid[0] = e;
                rw[0] = sigmoid(l[rid[0]]);
            }
            for (int j = 0; j < k; j++) {
                mismatch += ids[t * k + j] != rid[j];
                nan_weight += !(fabs(w[t * k + j] - rw[j]) <= 1e-5 * fabs(rw[j]));
            }
        }
        CHECK(mismatch == 0, "kind %d: %d slots differ from routing with NaN logits as -inf", kind,
              mismatch);
        CHECK(nan_weight == 0, "kind %d: %d weights differ from routing with NaN logits as -inf "
              "(NaN weights?)", kind, nan_weight);
    }
}

/* ---- the shared scalar rules (route_rule.h), and the cases they settle ---- */

static void test_rule(void)
{
    /* the order: larger first, NaN after everything, ties to the lower index */
    CHECK(w4a8moe_route_above(1.0f, 0.5f) && !w4a8moe_route_above(0.5f, 1.0f), "order: values");
    CHECK(w4a8moe_route_above(-INFINITY, NAN) && !w4a8moe_route_above(NAN, -INFINITY) &&
              !w4a8moe_route_above(NAN, NAN),
          "order: NaN ranks below -inf and is not above NaN");
    CHECK(w4a8moe_route_before(2.0f, 7, 2.0f, 3) == 0 && w4a8moe_route_before(2.0f, 3, 2.0f, 7) == 1,
          "order: equal values go to the lower index");
    CHECK(w4a8moe_route_before(NAN, 0, NAN, 1) == 1 && w4a8moe_route_before(-1.0f, 9, NAN, 0) == 1,
          "order: NaN against NaN by index; any number before NaN");
    /* softmax numerators */
    CHECK(w4a8moe_route_softmax_num(NAN, 1.0f) == 0.0f, "softmax: NaN numerator 0");
    CHECK(w4a8moe_route_softmax_num(INFINITY, INFINITY) == 1.0f &&
              w4a8moe_route_softmax_num(-INFINITY, -INFINITY) == 1.0f &&
              w4a8moe_route_softmax_num(3.0f, 3.0f) == 1.0f,
          "softmax: the max's numerator is exactly 1 (also at ±inf)");
    CHECK(w4a8moe_route_softmax_num(2.0f, INFINITY) == 0.0f, "softmax: finite next to +inf is 0");
    CHECK(w4a8moe_route_softmax_num(1.0f, 2.0f) == w4a8moe_route_exp(-1.0f), "softmax: exp(l - max)");
    CHECK(isnan(w4a8moe_route_softmax_prob(0.0f, 0.0)), "softmax: a row of NaN has NaN weights");
    /* group scores keep the two best, NaN never enters */
    float a = -INFINITY, b = -INFINITY;
    const float v[5] = {0.3f, NAN, 0.9f, 0.5f, 0.1f};
    for (int i = 0; i < 5; i++) w4a8moe_route_top2_push(v[i], &a, &b);
    CHECK(a == 0.9f && b == 0.5f, "top2: %g %g", (double)a, (double)b);
    /* final weights */
    CHECK(w4a8moe_route_weight(W4A8MOE_ROUTING_SOFTMAX_TOPK, 0.25f, 0.5f, 1, 3.0f) == 0.5f,
          "softmax weights renormalise and ignore the scaling factor");
    CHECK(w4a8moe_route_weight(W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 0.25f, 0.5f, 1, 3.0f) == 1.5f,
          "grouped weights renormalise, then scale");
    CHECK(w4a8moe_route_weight(W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, 0.25f, 0.0f, 1, 2.0f) == 0.5f,
          "a zero total does not renormalise");
    CHECK(w4a8moe_route_weight(W4A8MOE_ROUTING_SIGMOID_TOP1, 0.75f, 0.75f, 1, 2.0f) == 0.75f,
          "top1 never renormalises nor scales");
}

/* The rule's exp: within 2 ulp of exp over the whole f32 range it returns numbers for (one in
 * every 64 floats of [-104, 89], every exponent), exact at 0, and the special values. Host and
 * device give the same bits by construction (IEEE operations each rounded once); the device
 * half of that claim is tests/gpu/test_gpu_routing.c's bit-identical weights. */
static void test_exp(void)
{
    CHECK(w4a8moe_route_exp(0.0f) == 1.0f && w4a8moe_route_exp(-0.0f) == 1.0f, "exp(0) = 1");
    CHECK(w4a8moe_route_exp(-INFINITY) == 0.0f && w4a8moe_route_exp(-200.0f) == 0.0f, "exp(-inf) = 0");
    CHECK(isinf(w4a8moe_route_exp(INFINITY)) && isinf(w4a8moe_route_exp(100.0f)), "exp(+inf) = inf");
    CHECK(isnan(w4a8moe_route_exp(NAN)), "exp(NaN) is NaN");
    double worst = 0.0;
    float at = 0.0f;
    long n = 0;
    for (int sign = 0; sign < 2; sign++) {
        for (uint32_t u = 0x00800000u; u < 0x7f800000u; u += 64) {
            float x = w4a8moe_bits_f32(u | (uint32_t)sign << 31);
            if (x > 88.72f || x < -87.33f) continue; /* the normal results */
            double want = exp((double)x), got = w4a8moe_route_exp(x);
            double ulp = ldexp(1.0, ilogb(want) - 23);
            double err = fabs(got - want) / ulp;
            if (err > worst) { worst = err; at = x; }
            n++;
        }
    }
    CHECK(worst <= 2.0, "exp: worst %.2f ulp at x = %.9g over %ld values", worst, (double)at, n);
    printf("ok exp: worst %.2f ulp over %ld values (at x = %.9g)\n", worst, n, (double)at);
}

/* Rows the rule settles that plain code gets wrong: +inf logits, all -inf, all NaN, and top1
 * with renormalize set (the CUDA router used to renormalise it to 1). */
static void test_special_rows(void)
{
    w4a8moe_layer_desc d;
    desc_for(&d, W4A8MOE_ROUTING_SOFTMAX_TOPK, 4, 2);
    const float inf2[4] = {1.0f, INFINITY, NAN, INFINITY};
    expect_route("softmax two +inf logits share the mass", &d, inf2, (const int32_t[]){1, 3},
                 (const double[]){0.5, 0.5});
    const float ninf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    expect_route("softmax all -inf is uniform", &d, ninf, (const int32_t[]){0, 1},
                 (const double[]){0.25, 0.25});
    const float nan4[4] = {NAN, NAN, NAN, NAN};
    int32_t ids[2];
    float w[2];
    CHECK(w4a8moe_route(&d, 1, nan4, ids, w) == W4A8MOE_STATUS_OK && ids[0] == 0 && ids[1] == 1 &&
              isnan(w[0]) && isnan(w[1]),
          "softmax all NaN: experts 0, 1 with NaN weights (got %d %d %g %g)", ids[0], ids[1],
          (double)w[0], (double)w[1]);
    desc_for(&d, W4A8MOE_ROUTING_SIGMOID_TOP1, 4, 1);
    d.routing.renormalize = 1;
    const float l[4] = {0.5f, NAN, 2.0f, -1.0f};
    expect_route("top1 ignores renormalize", &d, l, (const int32_t[]){2}, (const double[]){sigmoid(2.0)});
}

/* ---- random cases against a plain re-implementation ---- */

static int better(float a, float b) { return a > b; } /* no NaN here */

static void ref_softmax(const float *l, int E, int k, int renorm, int32_t *ids, double *w)
{
    double mx = l[0], s = 0;
    for (int e = 1; e < E; e++) mx = fmax(mx, l[e]);
    for (int e = 0; e < E; e++) s += exp(l[e] - mx);
    unsigned char taken[256] = {0};
    double tot = 0;
    for (int j = 0; j < k; j++) {
        int b = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (b < 0 || better(l[e], l[b]))) b = e;
        taken[b] = 1;
        ids[j] = b;
        tot += w[j] = exp(l[b] - mx) / s;
    }
    if (renorm)
        for (int j = 0; j < k; j++) w[j] /= tot;
}

static void ref_grouped(const float *l, const float *bias, int E, int k, int G, int TG, int renorm,
                        float scale, int32_t *ids, double *w)
{
    float s[256], sb[256];
    double gs[64];
    int per = E / G;
    for (int e = 0; e < E; e++) {
        s[e] = 1.0f / (1.0f + w4a8moe_route_exp(-l[e])); /* the rule's exp (route_rule.h) */
        sb[e] = s[e] + bias[e];
    }
    for (int g = 0; g < G; g++) { /* sort-free: the best two by a double scan */
        int a = -1, b = -1;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (a < 0 || sb[e] > sb[a]) { b = a; a = e; }
            else if (b < 0 || sb[e] > sb[b]) b = e;
        }
        gs[g] = (float)(sb[a] + sb[b]);
    }
    unsigned char keep[64] = {0}, taken[256] = {0};
    for (int i = 0; i < TG; i++) {
        int b = -1;
        for (int g = 0; g < G; g++)
            if (!keep[g] && (b < 0 || gs[g] > gs[b])) b = g;
        keep[b] = 1;
    }
    double tot = 0;
    for (int j = 0; j < k; j++) {
        int b = -1;
        for (int e = 0; e < E; e++)
            if (keep[e / per] && !taken[e] && (b < 0 || better(sb[e], sb[b]))) b = e;
        taken[b] = 1;
        ids[j] = b;
        tot += w[j] = s[b];
    }
    for (int j = 0; j < k; j++) w[j] = (renorm ? w[j] / tot : w[j]) * scale;
}

static void test_random(test_rng *r, int rounds)
{
    enum { T = 8 };
    float logits[T * 256], bias[256], w[T * 8];
    int32_t ids[T * 8], rid[8];
    double rw[8];
    int id_mismatch = 0, w_mismatch = 0, cases = 0;
    for (int round = 0; round < rounds; round++) {
        int grouped = round & 1;
        int E = grouped ? 16 * (1 + (int)(test_rng_next(r) % 16)) : 1 + (int)(test_rng_next(r) % 256);
        int k = 1 + (int)(test_rng_next(r) % (uint64_t)(E < 8 ? E : 8));
        w4a8moe_layer_desc d;
        desc_for(&d, grouped ? W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK : W4A8MOE_ROUTING_SOFTMAX_TOPK, E, k);
        d.routing.renormalize = (int)(test_rng_next(r) & 1);
        if (grouped) {
            d.routing.n_group = 8;
            d.routing.topk_group = 1 + (int)(test_rng_next(r) % 8);
            while (d.routing.topk_group * (E / 8) < k) d.routing.topk_group++;
            d.routing.routed_scaling_factor = test_rng_uniform(r, 0.5f, 3.0f);
            for (int e = 0; e < E; e++) bias[e] = test_rng_uniform(r, -0.2f, 0.2f);
            d.routing.score_bias = bias;
        }
        for (int i = 0; i < T * E; i++) logits[i] = test_rng_uniform(r, -6, 6);
        w4a8moe_status st = w4a8moe_route(&d, T, logits, ids, w);
        CHECK(st == W4A8MOE_STATUS_OK, "random round %d: %s", round, w4a8moe_last_error());
        if (st != W4A8MOE_STATUS_OK) continue;
        for (int t = 0; t < T; t++) {
            const float *l = logits + t * E;
            if (grouped)
                ref_grouped(l, bias, E, k, 8, d.routing.topk_group, d.routing.renormalize,
                            d.routing.routed_scaling_factor, rid, rw);
            else
                ref_softmax(l, E, k, d.routing.renormalize, rid, rw);
            cases++;
            for (int j = 0; j < k; j++) {
                if (ids[t * k + j] != rid[j]) {
                    if (id_mismatch++ < 5)
                        printf("round %d (E %d k %d %s) token %d slot %d: id %d, reference %d\n", round,
                               E, k, grouped ? "grouped" : "softmax", t, j, ids[t * k + j], rid[j]);
                } else if (fabs(w[t * k + j] - rw[j]) > 1e-5 * fmax(1e-3, fabs(rw[j]))) {
                    if (w_mismatch++ < 5)
                        printf("round %d token %d slot %d: weight %.9g, reference %.9g\n", round, t,
                               j, (double)w[t * k + j], rw[j]);
                }
            }
        }
    }
    CHECK(id_mismatch == 0, "%d of %d random tokens routed differently from the reference", id_mismatch,
          cases);
    CHECK(w_mismatch == 0, "%d random weights differ from the reference by more than 1e-5", w_mismatch);
}

int main(void)
{
    test_rng r = {test_seed()};
    test_softmax();
    test_grouped();
    test_top1();
    test_validation();
    test_nan_logits(&r);
    test_rule();
    test_exp();
    test_special_rows();
    test_random(&r, test_quick() ? 200 : 2000);
    TEST_MAIN_END();
}
