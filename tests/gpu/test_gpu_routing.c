/*
 * test_gpu_routing.c — the same routing answers on host and device (issue 9, part 5).
 *
 * 1. The device router (local_route.cuh, through gpu_route_probe) against the host router
 *    (w4a8moe_route) on the same logits: softmax top-k, grouped sigmoid top-k with bias and
 *    sigmoid top-1, E = 8..256, with many exact ties (logits on a 1/8 grid), NaN and ±inf
 *    logits, rows of NaN, of -inf and with two +inf. Ids must be identical; weights bit for bit
 *    for the sigmoid routings (one exp for both sides, route_rule.h) and to a few ulp for
 *    softmax (its f64 sum of the numerators runs in another order on the device), NaN where the
 *    host has NaN.
 * 2. Whole layers given NaN logits: the CUDA layer against cpu_ref (the CUDA softmax used to
 *    make every such token NaN); a token whose logits are all NaN is NaN on both.
 * 3. Bad caller-given ids on the device (outside [-1, E), or repeated in a token): the forward
 *    runs them as -1; w4a8moe_layer_check reports INVALID_ARGUMENT naming the token, once; the
 *    next forward reports it instead (and does not run) when the faulty one has finished; the
 *    many-chunk dispatch path (T*k > 1024), replays of a captured CUDA graph, and
 *    W4A8MOE_CHECK_ROUTING=1 (the forward itself fails, and the next one is clean).
 * Without a CUDA device it checks only the host side of w4a8moe_layer_check and passes.
 */
#include "gpu_harness.h"
#include "gpu_route_probe.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t g_seed;

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* A case's seed from the run's seed and its name (FNV-1a), so W4A8MOE_TEST_SEED replays it. */
static uint64_t case_seed(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211ull;
    return g_seed ^ h;
}

/* ---- 1. the two routers on the same logits ---- */

/* Logits on a 1/8 grid in [-4, 4] (ties everywhere) with NaN / ±inf sprinkled; the last rows
 * are all NaN, all -inf, and two +inf among finite values. */
static void special_logits(float *l, int64_t T, int E, w4a8moe_synth_rng *rng)
{
    for (int64_t i = 0; i < T * E; i++) {
        uint64_t r = w4a8moe_synth_next(rng);
        float v = (float)((int)(r % 65) - 32) / 8.0f;
        switch ((r >> 8) % 32) {
        case 0: case 1: case 2: case 3: v = NAN; break;
        case 4: v = INFINITY; break;
        case 5: v = -INFINITY; break;
        default: break;
        }
        l[i] = v;
    }
    if (T < 4) return;
    for (int e = 0; e < E; e++) {
        l[(T - 1) * E + e] = NAN;
        l[(T - 2) * E + e] = -INFINITY;
        l[(T - 3) * E + e] = (float)(e % 7) / 8.0f;
    }
    l[(T - 3) * E + E / 3] = INFINITY;
    l[(T - 3) * E + E - 1] = INFINITY;
}

static int same_weight(float a, float b, int exact)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (exact) return a == b;
    return fabsf(a - b) <= 1e-6f * fmaxf(fabsf(a), fabsf(b)) + 1e-30f;
}

static void compare_routers(const char *what, const w4a8moe_layer_desc *d, int64_t T, const float *logits)
{
    int64_t k = d->top_k;
    int32_t *hi = malloc((size_t)(T * k) * 4), *di = malloc((size_t)(T * k) * 4);
    float *hw = malloc((size_t)(T * k) * 4), *dw = malloc((size_t)(T * k) * 4);
    if (!hi || !di || !hw || !dw) { CHECK(0, "%s: out of memory", what); goto done; }
    w4a8moe_status st = w4a8moe_route(d, T, logits, hi, hw);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: host route: %s", what, w4a8moe_last_error());
    CHECK(gpu_route_probe(d, T, logits, di, dw) == 0, "%s: device route failed", what);
    if (st != W4A8MOE_STATUS_OK) goto done;
    int id_bad = 0, w_bad = 0;
    for (int64_t i = 0; i < T * k; i++) {
        if (hi[i] != di[i]) {
            if (id_bad++ < 3)
                printf("  %s: token %lld slot %lld: host id %d, device id %d\n", what,
                       (long long)(i / k), (long long)(i % k), hi[i], di[i]);
        } else if (!same_weight(hw[i], dw[i], d->routing.kind != W4A8MOE_ROUTING_SOFTMAX_TOPK)) {
            if (w_bad++ < 3)
                printf("  %s: token %lld slot %lld: host weight %.9g, device %.9g\n", what,
                       (long long)(i / k), (long long)(i % k), (double)hw[i], (double)dw[i]);
        }
    }
    CHECK(id_bad == 0 && w_bad == 0, "%s: %d ids and %d weights differ between host and device",
          what, id_bad, w_bad);
    printf("ok router %-40s T=%lld\n", what, (long long)T);
done:
    free(hi);
    free(di);
    free(hw);
    free(dw);
}

static void test_routers(void)
{
    static const struct { int E, k, n_group, topk_group; } shapes[] = {
        {8, 2, 4, 2}, {16, 4, 4, 2}, {64, 6, 8, 3}, {128, 8, 8, 4}, {256, 8, 8, 4}, {60, 3, 6, 2},
    };
    static float bias[256];
    const int64_t T = 67; /* not a multiple of the 4 tokens a block */
    float *logits = malloc((size_t)T * 256 * 4);
    if (!logits) { CHECK(0, "routers: out of memory"); return; }
    w4a8moe_synth_rng rng = {g_seed ^ 0x5eedu};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int kind = 0; kind < 3; kind++) {
            w4a8moe_layer_desc d;
            w4a8moe_layer_desc_init(&d);
            d.hidden = 64; d.inter = 64; d.group_size = 32; d.max_tokens = T;
            d.num_experts = shapes[s].E;
            d.top_k = kind == 2 ? 1 : shapes[s].k;
            d.routing.kind = (w4a8moe_routing)kind;
            for (int renorm = 0; renorm < 2; renorm++) {
                d.routing.renormalize = renorm; /* top1: must be ignored on both sides */
                if (kind == 1) {
                    d.routing.n_group = shapes[s].n_group;
                    d.routing.topk_group = shapes[s].topk_group;
                    d.routing.routed_scaling_factor = 2.5f;
                    for (int e = 0; e < d.num_experts; e++)
                        bias[e] = (float)((int)(w4a8moe_synth_next(&rng) % 17) - 8) / 64.0f;
                    d.routing.score_bias = renorm ? bias : NULL;
                }
                special_logits(logits, T, d.num_experts, &rng);
                char what[96];
                snprintf(what, sizeof what, "%s E=%d k=%d%s",
                         kind == 0 ? "softmax" : kind == 1 ? "grouped" : "top1", d.num_experts,
                         d.top_k, renorm ? (kind == 1 ? " renorm+bias" : " renorm") : "");
                compare_routers(what, &d, T, logits);
            }
        }
    }
    free(logits);
}

/* ---- helpers for whole layers ---- */

static w4a8moe_layer_desc small_desc(int E, int k, int64_t maxT)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = 256; d.inter = 128; d.num_experts = E; d.top_k = k; d.group_size = 64;
    d.max_tokens = maxT;
    d.routing.renormalize = 1;
    return d;
}

static w4a8moe_status make_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                 w4a8moe_device_kind dev, w4a8moe_layer **L)
{
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.device_kind = dev;
    o.backend = dev == W4A8MOE_DEVICE_CPU ? "cpu_ref" : NULL;
    return w4a8moe_layer_create(d, w, &o, L);
}

/* cpu_ref's output for host routing r, widened to f32 [T, H]. */
static int ref_forward(w4a8moe_layer *ref, const w4a8moe_layer_desc *d, int64_t T, const void *x,
                       const w4a8moe_routing_input *r, float *out)
{
    size_t n = (size_t)(T * d->hidden);
    void *io = malloc(n * 4 + 4);
    if (!io) return -1;
    int rc = w4a8moe_layer_forward(ref, T, x, r, io, NULL) != W4A8MOE_STATUS_OK;
    for (size_t i = 0; i < n && !rc; i++) out[i] = gh_io_get(io, d->io_dtype, (int64_t)i);
    free(io);
    return rc ? -1 : 0;
}

/* The CUDA layer's current output (dv->out) against ref [T, H]: worst row rel-L2 within the
 * harness tolerance, no NaN/Inf where ref is finite, and NaN rows exactly where ref has them;
 * *nan_rows (may be NULL) gets the count of NaN rows. */
static void expect_close(const char *what, const w4a8moe_layer_desc *d, int64_t T, const gh_dev *dv,
                         const float *ref, int64_t *nan_rows)
{
    int64_t H = d->hidden;
    float *got = malloc((size_t)(T * H) * 4 + 4);
    if (!got || cudaDeviceSynchronize() != cudaSuccess || gh_fetch(d, T, dv->out, got)) {
        CHECK(0, "%s: fetching the device output", what);
        free(got);
        return;
    }
    gh_stats s = gh_compare_stats(ref, got, T, H);
    CHECK(gh_within_tol(&s, NULL), "%s: worst row rel-L2 %.3g, mean %.3g (GPU tolerance), %lld rows "
          "NaN/Inf where cpu_ref is finite", what, s.worst, s.mean, (long long)s.nan_bad);
    int64_t n_nan = 0, differ = 0;
    for (int64_t t = 0; t < T; t++) {
        int g = isnan(got[t * H]) != 0, r = isnan(ref[t * H]) != 0;
        n_nan += g;
        differ += g != r;
    }
    CHECK(differ == 0, "%s: %lld rows are NaN on one side only", what, (long long)differ);
    if (nan_rows) *nan_rows = n_nan;
    printf("ok %-48s T=%-4lld worst row rel-L2 %.2e\n", what, (long long)T, s.worst);
    free(got);
}

/* ---- 2. NaN logits through whole layers ---- */

/* nan_rows_want: the NaN output rows expected (1: only the all-NaN token), or -1 for "any"
 * (grouped routing may have to pick a NaN expert when its kept groups hold fewer than k
 * numbers; both sides then agree on a NaN row). */
static void nan_logits_case(const char *what, w4a8moe_layer_desc d, int64_t T, int nan_rows_want)
{
    w4a8moe_synth_rng rng = {case_seed(what)};
    w4a8moe_synth_weights sw;
    gh_inputs in;
    gh_dev dv;
    memset(&in, 0, sizeof in);
    memset(&dv, 0, sizeof dv);
    w4a8moe_layer *ref = NULL, *gpu = NULL;
    float *want = malloc((size_t)(T * d.hidden) * 4 + 4);
    int64_t E = d.num_experts;
    if (!want || w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, rng.s)) {
        CHECK(0, "%s: setup", what);
        free(want);
        return;
    }
    int ok = gh_inputs_make(&in, &d, T, GH_LOGITS, &rng) == 0;
    if (ok) {
        /* a quarter of the logits NaN (each token keeps at least k numbers), the last token
         * all NaN */
        for (int64_t t = 0; t < T; t++) {
            int kept = 0;
            for (int64_t e = 0; e < E; e++) {
                int nan = t == T - 1 || ((w4a8moe_synth_next(&rng) & 3) == 0 && E - e > d.top_k - kept);
                if (nan) in.logits[t * E + e] = NAN;
                else kept++;
            }
        }
    }
    ok = ok && gh_dev_make(&dv, &d, &in) == 0;
    ok = ok && make_layer(&d, &sw.weights, W4A8MOE_DEVICE_CPU, &ref) == W4A8MOE_STATUS_OK;
    ok = ok && make_layer(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, &gpu) == W4A8MOE_STATUS_OK;
    CHECK(ok, "%s: setup: %s", what, w4a8moe_last_error());
    if (!ok) goto done;
    w4a8moe_routing_input rh = gh_routing(NULL, NULL, in.logits);
    w4a8moe_routing_input rd = gh_routing(NULL, NULL, dv.logits);
    CHECK(ref_forward(ref, &d, T, in.x, &rh, want) == 0, "%s: cpu_ref: %s", what, w4a8moe_layer_error(ref));
    CHECK(w4a8moe_layer_forward(gpu, T, dv.x, &rd, dv.out, NULL) == W4A8MOE_STATUS_OK,
          "%s: cuda forward: %s", what, w4a8moe_layer_error(gpu));
    int64_t nan_rows = -1;
    expect_close(what, &d, T, &dv, want, &nan_rows);
    CHECK(nan_rows_want < 0 || nan_rows == nan_rows_want,
          "%s: %lld NaN output rows; only the all-NaN token's row should be NaN", what,
          (long long)nan_rows);
    CHECK(isnan(want[(T - 1) * d.hidden]), "%s: cpu_ref's all-NaN token must be NaN", what);
done:
    w4a8moe_layer_free(ref);
    w4a8moe_layer_free(gpu);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
    free(want);
}

static void test_nan_logits_layers(void)
{
    nan_logits_case("softmax, NaN logits", small_desc(16, 4, 32), 24, 1);
    w4a8moe_layer_desc ds = small_desc(16, 4, 32);
    static float bias[16];
    for (int e = 0; e < 16; e++) bias[e] = 0.05f * (float)(e % 5) - 0.1f;
    ds.routing.kind = W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK;
    ds.routing.n_group = 4; ds.routing.topk_group = 2; ds.routing.routed_scaling_factor = 2.5f;
    ds.routing.score_bias = bias;
    nan_logits_case("grouped sigmoid with bias, NaN logits", ds, 24, -1);
    w4a8moe_layer_desc l4 = small_desc(8, 1, 32);
    l4.routing.kind = W4A8MOE_ROUTING_SIGMOID_TOP1;
    l4.router_weight_on_input = 1;
    nan_logits_case("top1 weight on input, NaN logits", l4, 24, 1);
}

/* ---- 3. bad ids on the device ---- */

typedef struct bad_ctx {
    w4a8moe_layer_desc d;
    w4a8moe_synth_weights sw;
    gh_inputs in;
    gh_dev dv;
    w4a8moe_layer *ref, *gpu;
    float *want; /* cpu_ref with the bad slots as -1 */
} bad_ctx;

static void bad_free(bad_ctx *c)
{
    w4a8moe_layer_free(c->ref);
    w4a8moe_layer_free(c->gpu);
    gh_dev_free(&c->dv);
    gh_inputs_free(&c->in);
    w4a8moe_synth_weights_free(&c->sw);
    free(c->want);
}

/* Layers and inputs; the n bad slots (token, slot, id) are put into the device ids, and the
 * reference runs with them as -1. */
static int bad_make(bad_ctx *c, w4a8moe_layer_desc d, int64_t T, const int64_t (*bad)[3], int n)
{
    memset(c, 0, sizeof *c);
    c->d = d;
    w4a8moe_synth_rng rng = {g_seed + (uint64_t)T * 31u + (uint64_t)n};
    if (w4a8moe_synth_weights_make(&c->sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, rng.s)) return -1;
    if (gh_inputs_make(&c->in, &d, T, GH_RANDOM, &rng)) return -1;
    int64_t k = d.top_k;
    c->want = malloc((size_t)(T * d.hidden) * 4 + 4);
    if (!c->want) return -1;
    int32_t *good = c->in.ids;
    for (int i = 0; i < n; i++) good[bad[i][0] * k + bad[i][1]] = -1;
    if (make_layer(&d, &c->sw.weights, W4A8MOE_DEVICE_CPU, &c->ref) != W4A8MOE_STATUS_OK ||
        make_layer(&d, &c->sw.weights, W4A8MOE_DEVICE_CUDA, &c->gpu) != W4A8MOE_STATUS_OK)
        return -1;
    w4a8moe_routing_input rh = gh_routing(good, c->in.weights, NULL);
    if (ref_forward(c->ref, &d, T, c->in.x, &rh, c->want)) return -1;
    for (int i = 0; i < n; i++) {
        int64_t t = bad[i][0], j = bad[i][1];
        /* -1 marks "repeat the token's slot 0" (a valid id twice) */
        good[t * k + j] = bad[i][2] == -1 ? good[t * k] : (int32_t)bad[i][2];
    }
    return gh_dev_make(&c->dv, &d, &c->in);
}

/* Small dispatch path (T*k <= 1024): check after the forward, then the next-forward report; the
 * repeated id's output against cpu_ref with its later slot as -1. find_ids: W4A8MOE_SM90_FIND_IDS
 * while the layers are made ("0": cuda_sm90's GEMM1 does not find its tile's expert from these
 * ids, 8 pairs, before its PDL wait, as it does by default), or NULL. */
static void test_bad_ids_small(const char *find_ids)
{
    bad_ctx c;
    const int64_t bad[1][3] = {{2, 1, 99}};
    if (find_ids) setenv("W4A8MOE_SM90_FIND_IDS", find_ids, 1);
    int ok = bad_make(&c, small_desc(8, 2, 8), 4, bad, 1) == 0;
    if (find_ids) unsetenv("W4A8MOE_SM90_FIND_IDS");
    CHECK(ok, "bad ids (small): setup: %s", w4a8moe_last_error());
    if (!ok) { bad_free(&c); return; }
    w4a8moe_routing_input rd = gh_routing(c.dv.ids, c.dv.weights, NULL);
    CHECK(w4a8moe_layer_forward(c.gpu, 4, c.dv.x, &rd, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
          "bad ids (small): the forward itself runs: %s", w4a8moe_layer_error(c.gpu));
    expect_close("bad id 99 runs as -1", &c.d, 4, &c.dv, c.want, NULL);
    w4a8moe_status st = w4a8moe_layer_check(c.gpu, NULL);
    const char *msg = w4a8moe_layer_error(c.gpu);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(msg, "token 2") && has(msg, "1 bad slot"),
          "bad ids (small): layer_check gave %d '%s'", (int)st, msg);
    CHECK(w4a8moe_layer_check(c.gpu, NULL) == W4A8MOE_STATUS_OK, "bad ids (small): reported once: '%s'",
          w4a8moe_layer_error(c.gpu));

    /* a repeated id in token 3; the next forward (good ids) reports it and does not run */
    int32_t good_ids[8], rep[8];
    memcpy(good_ids, c.in.ids, sizeof good_ids);
    good_ids[2 * 2 + 1] = -1; /* what the reference ran */
    memcpy(rep, good_ids, sizeof rep);
    rep[3 * 2] = rep[3 * 2 + 1] = 5; /* token 3: expert 5 twice */
    int32_t *dgood = NULL;
    ok = cudaMemcpy(c.dv.ids, rep, sizeof rep, cudaMemcpyHostToDevice) == cudaSuccess &&
         cudaMalloc((void **)&dgood, sizeof good_ids) == cudaSuccess &&
         cudaMemcpy(dgood, good_ids, sizeof good_ids, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "bad ids (small): device ids");
    float *want_rep = malloc((size_t)(4 * c.d.hidden) * 4 + 4);
    if (ok && want_rep) { /* what the repeated id runs as: its later slot -1 */
        int32_t as_run[8];
        memcpy(as_run, rep, sizeof as_run);
        as_run[3 * 2 + 1] = -1;
        w4a8moe_routing_input rh = gh_routing(as_run, c.in.weights, NULL);
        ok = ref_forward(c.ref, &c.d, 4, c.in.x, &rh, want_rep) == 0;
        CHECK(ok, "repeated id: reference");
    }
    if (ok && want_rep) {
        CHECK(w4a8moe_layer_forward(c.gpu, 4, c.dv.x, &rd, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
              "repeated id: the forward itself runs: %s", w4a8moe_layer_error(c.gpu));
        CHECK(cudaDeviceSynchronize() == cudaSuccess, "repeated id: sync");
        expect_close("repeated id runs its later slot as -1", &c.d, 4, &c.dv, want_rep, NULL);
        size_t ob = (size_t)(4 * c.d.hidden) * 2;
        uint16_t *before = malloc(ob), *after = malloc(ob);
        w4a8moe_routing_input rg = gh_routing(dgood, c.dv.weights, NULL);
        if (before && after && cudaMemset(c.dv.out, 0xff, ob) == cudaSuccess) {
            st = w4a8moe_layer_forward(c.gpu, 4, c.dv.x, &rg, c.dv.out, NULL);
            msg = w4a8moe_layer_error(c.gpu);
            CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(msg, "token 3") &&
                      has(msg, "did not run"),
                  "repeated id: the next forward gave %d '%s'", (int)st, msg);
            memset(before, 0xff, ob);
            CHECK(cudaMemcpy(after, c.dv.out, ob, cudaMemcpyDeviceToHost) == cudaSuccess &&
                      memcmp(before, after, ob) == 0,
                  "repeated id: the reporting forward must not write out");
            CHECK(w4a8moe_layer_forward(c.gpu, 4, c.dv.x, &rg, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
                  "repeated id: the forward after the report runs: %s", w4a8moe_layer_error(c.gpu));
            expect_close("after the report, good ids", &c.d, 4, &c.dv, c.want, NULL);
            CHECK(w4a8moe_layer_check(c.gpu, NULL) == W4A8MOE_STATUS_OK, "clean after good ids: '%s'",
                  w4a8moe_layer_error(c.gpu));
        } else {
            CHECK(0, "repeated id: buffers");
        }
        free(before);
        free(after);
    }
    free(want_rep);
    cudaFree(dgood);
    bad_free(&c);
}

/* One token whose prepare quantises it in a kernel of its own first and whose cuda_sm90 GEMM1
 * multiplies it before its PDL wait (W4A8MOE_SM90_QUANT_FIRST=1 while the layers are made): an id
 * of 99, then an expert twice, each against cpu_ref with the bad slot as -1 — the token's rows
 * (its valid slots) and the tiles GEMM1 finds from the ids must agree with the prepare's sort. */
static void test_bad_ids_one_token(void)
{
    bad_ctx c;
    const int64_t bad[1][3] = {{0, 2, 99}};
    setenv("W4A8MOE_SM90_QUANT_FIRST", "1", 1);
    int ok = bad_make(&c, small_desc(16, 4, 1), 1, bad, 1) == 0;
    unsetenv("W4A8MOE_SM90_QUANT_FIRST");
    CHECK(ok, "bad ids (one token): setup: %s", w4a8moe_last_error());
    if (!ok) { bad_free(&c); return; }
    w4a8moe_routing_input rd = gh_routing(c.dv.ids, c.dv.weights, NULL);
    CHECK(w4a8moe_layer_forward(c.gpu, 1, c.dv.x, &rd, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
          "bad ids (one token): the forward itself runs: %s", w4a8moe_layer_error(c.gpu));
    expect_close("one token, id 99 runs as -1 (quantised first)", &c.d, 1, &c.dv, c.want, NULL);
    w4a8moe_status st = w4a8moe_layer_check(c.gpu, NULL);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(w4a8moe_layer_error(c.gpu), "token 0"),
          "bad ids (one token): layer_check gave %d '%s'", (int)st, w4a8moe_layer_error(c.gpu));

    int32_t rep[4];
    memcpy(rep, c.in.ids, sizeof rep);
    rep[2] = rep[0]; /* slot 2: slot 0's expert again */
    float *want_rep = malloc((size_t)c.d.hidden * 4);
    int32_t as_run[4];
    memcpy(as_run, rep, sizeof as_run);
    as_run[2] = -1;
    w4a8moe_routing_input rh = gh_routing(as_run, c.in.weights, NULL);
    ok = want_rep && ref_forward(c.ref, &c.d, 1, c.in.x, &rh, want_rep) == 0 &&
         cudaMemcpy(c.dv.ids, rep, sizeof rep, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "repeated id (one token): reference and device ids");
    if (ok) {
        CHECK(w4a8moe_layer_forward(c.gpu, 1, c.dv.x, &rd, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
              "repeated id (one token): the forward itself runs: %s", w4a8moe_layer_error(c.gpu));
        expect_close("one token, an expert twice runs its later slot as -1 (quantised first)", &c.d, 1, &c.dv,
                     want_rep, NULL);
        st = w4a8moe_layer_check(c.gpu, NULL);
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT, "repeated id (one token): layer_check gave %d '%s'", (int)st,
              w4a8moe_layer_error(c.gpu));
    }
    free(want_rep);
    bad_free(&c);
}

/* Many-chunk dispatch (T*k > 1024): two bad slots in different chunks. */
static void test_bad_ids_large(void)
{
    bad_ctx c;
    const int64_t bad[2][3] = {{517, 0, -2}, {550, 1, 8}};
    int ok = bad_make(&c, small_desc(8, 2, 600), 600, bad, 2) == 0;
    CHECK(ok, "bad ids (large): setup: %s", w4a8moe_last_error());
    if (!ok) { bad_free(&c); return; }
    w4a8moe_routing_input rd = gh_routing(c.dv.ids, c.dv.weights, NULL);
    CHECK(w4a8moe_layer_forward(c.gpu, 600, c.dv.x, &rd, c.dv.out, NULL) == W4A8MOE_STATUS_OK,
          "bad ids (large): the forward itself runs: %s", w4a8moe_layer_error(c.gpu));
    expect_close("bad ids -2 and E run as -1 (T*k > 1024)", &c.d, 600, &c.dv, c.want, NULL);
    w4a8moe_status st = w4a8moe_layer_check(c.gpu, NULL);
    const char *msg = w4a8moe_layer_error(c.gpu);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(msg, "token 517") && has(msg, "2 bad slots"),
          "bad ids (large): layer_check gave %d '%s'", (int)st, msg);

    /* W4A8MOE_CHECK_ROUTING=1: the forward itself fails, naming the token; the next is clean */
    setenv("W4A8MOE_CHECK_ROUTING", "1", 1);
    w4a8moe_layer *chk = NULL;
    st = make_layer(&c.d, &c.sw.weights, W4A8MOE_DEVICE_CUDA, &chk);
    unsetenv("W4A8MOE_CHECK_ROUTING");
    CHECK(st == W4A8MOE_STATUS_OK, "checked layer: %s", w4a8moe_last_error());
    if (chk) {
        st = w4a8moe_layer_forward(chk, 600, c.dv.x, &rd, c.dv.out, NULL);
        msg = w4a8moe_layer_error(chk);
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(msg, "token 517") && has(msg, "this forward"),
              "W4A8MOE_CHECK_ROUTING=1: forward gave %d '%s'", (int)st, msg);
        CHECK(w4a8moe_layer_check(chk, NULL) == W4A8MOE_STATUS_OK, "W4A8MOE_CHECK_ROUTING=1: reported "
              "once: '%s'", w4a8moe_layer_error(chk));
        w4a8moe_layer_free(chk);
    }
    bad_free(&c);
}

/* A forward with a bad id captured in a CUDA graph: each replay records it. */
static void test_bad_ids_graph(void)
{
    bad_ctx c;
    const int64_t bad[1][3] = {{1, 0, 1000}};
    int ok = bad_make(&c, small_desc(8, 2, 8), 4, bad, 1) == 0;
    CHECK(ok, "bad ids (graph): setup: %s", w4a8moe_last_error());
    cudaStream_t s = NULL;
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    ok = ok && cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess;
    if (ok) {
        w4a8moe_routing_input rd = gh_routing(c.dv.ids, c.dv.weights, NULL);
        w4a8moe_status st = W4A8MOE_STATUS_INTERNAL;
        if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            st = w4a8moe_layer_forward(c.gpu, 4, c.dv.x, &rd, c.dv.out, s);
            CHECK(w4a8moe_layer_check(c.gpu, s) == W4A8MOE_STATUS_OK,
                  "bad ids (graph): layer_check while capturing neither waits nor reports: '%s'",
                  w4a8moe_layer_error(c.gpu));
            if (cudaStreamEndCapture(s, &g) != cudaSuccess) st = W4A8MOE_STATUS_INTERNAL;
        }
        CHECK(st == W4A8MOE_STATUS_OK, "bad ids (graph): capture: %s", w4a8moe_layer_error(c.gpu));
        ok = st == W4A8MOE_STATUS_OK && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess &&
             cudaGraphLaunch(ge, s) == cudaSuccess && cudaGraphLaunch(ge, s) == cudaSuccess;
        CHECK(ok, "bad ids (graph): instantiate and replay twice");
    }
    if (ok) {
        w4a8moe_status st = w4a8moe_layer_check(c.gpu, s);
        const char *msg = w4a8moe_layer_error(c.gpu);
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(msg, "token 1") && has(msg, "2 bad slots"),
              "bad ids (graph): layer_check after two replays gave %d '%s'", (int)st, msg);
        expect_close("bad id 1000 in a graph runs as -1", &c.d, 4, &c.dv, c.want, NULL);
    }
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    if (s) cudaStreamDestroy(s);
    bad_free(&c);
}

int main(void)
{
    g_seed = test_seed();
    CHECK(w4a8moe_layer_check(NULL, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "layer_check(NULL) must be INVALID_ARGUMENT");
    if (gh_device_count() == 0) {
        printf("SKIP: no CUDA device: the device router and device-side id checks need one\n");
        TEST_MAIN_END();
    }
    test_routers();
    test_nan_logits_layers();
    test_bad_ids_small(NULL); /* GEMM1 finding its tile's expert from the ids (the default) */
    test_bad_ids_small("0");  /* and not */
    test_bad_ids_one_token();
    test_bad_ids_large();
    test_bad_ids_graph();
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "device errors at the end");
    TEST_MAIN_END();
}
