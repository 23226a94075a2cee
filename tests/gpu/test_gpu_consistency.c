/*
 * test_gpu_consistency.c — the CUDA backends (cuda_sm90 and cuda_sm89 experts, each with the
 * CUDA `local` prepare/finalize) against cpu_ref, over the shapes and edge cases of the
 * foundation issue.
 *
 * Each case builds two layers from the same synthetic weights: cpu_ref on the host (forced) and
 * each GPU experts backend this card supports (forced). Both run the same x and routing; the
 * rows must meet the contract's GPU tolerance (gpu_harness.h; no NaN/Inf where cpu_ref has
 * none), the device output is poisoned before the run, and a second device forward must be
 * bit-identical. The oracle's own choice must be cuda_sm90 on sm_90 cards, cuda_sm89 elsewhere.
 *
 * Cases: every built-in model at T = 2; T = 1; every token to one expert; experts with zero
 * tokens; -1 slots (one token with none); router logits (softmax renormalised, DeepSeek grouped
 * with bias, Llama-4 top-1 with the weight on the input); H and I multiples of g but not of 256;
 * g = 32/64/128; bf16/f16/f32 I/O and scales; channel scales; gelu_tanh; static scales; each
 * row-tile configuration of the GEMMs; a NaN token; invalid ids (treated as -1, or reported
 * with W4A8MOE_CHECK_ROUTING=1); T = 0 and T > max_tokens. Without a CUDA device it checks that
 * the oracle rejects the CUDA backends on the device axis and passes.
 */
#include "core/models.h"
#include "gpu_harness.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t g_seed;

typedef struct gcase {
    const char *name;
    w4a8moe_layer_desc d;
    int64_t T;
    w4a8moe_dtype sdt;
    int channel, mode, pool, nan_token;
} gcase;

static w4a8moe_layer_desc shape(int64_t H, int64_t I, int E, int k, int g, int64_t maxT)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = H; d.inter = I; d.num_experts = E; d.top_k = k; d.group_size = g;
    d.max_tokens = maxT;
    d.routing.renormalize = 1;
    return d;
}

static w4a8moe_status make_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                 w4a8moe_device_kind dev, const char *backend, w4a8moe_layer **L)
{
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.device_kind = dev;
    o.backend = backend;
    return w4a8moe_layer_create(d, w, &o, L);
}

/* The GPU experts backends a case runs on: every one the oracle accepts on this device. */
static const char *const gpu_backends[] = {"cuda_sm90", "cuda_sm89"};
#define N_GPU_BACKENDS (sizeof gpu_backends / sizeof gpu_backends[0])

/* FNV-1a of a case's name: its data depends on the seed and the name only, so that the printed
 * seed replays a failure (the name's address would change with every run). */
static uint64_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return h;
}

/* One case: cpu_ref vs the CUDA layer with experts backend `backend`. */
static void run_case(const gcase *c, const char *backend)
{
    const w4a8moe_layer_desc *d = &c->d;
    int64_t T = c->T, H = d->hidden;
    w4a8moe_synth_rng rng = {g_seed ^ name_hash(c->name) ^ (uint64_t)T * 7919u};
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, d, c->sdt, c->channel, c->pool, rng.s)) {
        CHECK(0, "%s: synthetic weights", c->name);
        return;
    }
    gh_inputs in;
    gh_dev dv;
    w4a8moe_layer *ref = NULL, *gpu = NULL;
    float *ref_out = malloc((size_t)(T * H) * 4 + 4), *got = malloc((size_t)(T * H) * 4 + 4);
    void *ref_io = malloc((size_t)(T * H) * 4 + 4);
    int ok = ref_out && got && ref_io && gh_inputs_make(&in, d, T, c->mode, &rng) == 0;
    if (ok && c->nan_token >= 0 && c->nan_token < T) {
        if (d->io_dtype == W4A8MOE_DTYPE_F32) ((float *)in.x)[c->nan_token * H + 3] = NAN;
        else ((uint16_t *)in.x)[c->nan_token * H + 3] = 0x7fc0 | (d->io_dtype == W4A8MOE_DTYPE_F16 ? 0x7e00 : 0);
    }
    ok = ok && gh_dev_make(&dv, d, &in) == 0;
    CHECK(ok, "%s: inputs", c->name);
    if (!ok) goto done;
    w4a8moe_status st = make_layer(d, &sw.weights, W4A8MOE_DEVICE_CPU, "cpu_ref", &ref);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: cpu_ref create: %s", c->name, w4a8moe_last_error());
    st = make_layer(d, &sw.weights, W4A8MOE_DEVICE_CUDA, backend, &gpu);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: %s create: %s", c->name, backend, w4a8moe_last_error());
    if (!ref || !gpu) goto done;
    CHECK(strcmp(w4a8moe_layer_prepfin(gpu), "local") == 0, "%s: prepare/finalize %s", c->name,
          w4a8moe_layer_prepfin(gpu));
    w4a8moe_routing_input rh = gh_routing(in.ids, in.weights, in.logits);
    st = w4a8moe_layer_forward(ref, T, in.x, &rh, ref_io, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: cpu_ref forward: %s", c->name, w4a8moe_layer_error(ref));
    for (int64_t i = 0; i < T * H; i++) ref_out[i] = gh_io_get(ref_io, d->io_dtype, i);
    w4a8moe_routing_input rd = gh_routing(dv.ids, dv.weights, dv.logits);
    st = w4a8moe_layer_forward(gpu, T, dv.x, &rd, dv.out, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: cuda forward: %s", c->name, w4a8moe_layer_error(gpu));
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "%s: device sync after forward", c->name);
    if (gh_fetch(d, T, dv.out, got)) { CHECK(0, "%s: fetch", c->name); goto done; }
    gh_stats s = gh_compare_stats(ref_out, got, T, H);
    CHECK(gh_within_tol(&s, backend), "%s (%s): worst row rel-L2 %.3g, mean %.3g (GPU tolerance: row "
          "%.0e, mean %.0e), %lld rows NaN/Inf where cpu_ref is finite", c->name, backend, s.worst,
          s.mean, GH_TOL_ROW, GH_TOL_MEAN, (long long)s.nan_bad);
    printf("ok %-40s %-9s T=%-5lld worst row rel-L2 %.2e, rows > 2e-3: %lld\n", c->name, backend,
           (long long)T, s.worst, (long long)s.above_cpu_tol);
    if (c->nan_token >= 0 && c->nan_token < T) {
        int all_nan = 1;
        for (int64_t h = 0; h < H; h++) all_nan &= isnan(got[c->nan_token * H + h]);
        CHECK(all_nan, "%s: the NaN token's output row must be NaN", c->name);
    }
    /* determinism: a second forward, bit for bit */
    size_t ob = (size_t)(T * H) * gh_io_size(d->io_dtype);
    void *first = malloc(ob + 1), *second = malloc(ob + 1);
    if (first && second && cudaMemcpy(first, dv.out, ob, cudaMemcpyDeviceToHost) == cudaSuccess &&
        cudaMemset(dv.out, 0xff, ob) == cudaSuccess &&
        w4a8moe_layer_forward(gpu, T, dv.x, &rd, dv.out, NULL) == W4A8MOE_STATUS_OK &&
        cudaMemcpy(second, dv.out, ob, cudaMemcpyDeviceToHost) == cudaSuccess)
        CHECK(memcmp(first, second, ob) == 0, "%s: second forward differs", c->name);
    else
        CHECK(0, "%s: second forward failed", c->name);
    free(first);
    free(second);
done:
    w4a8moe_layer_free(ref);
    w4a8moe_layer_free(gpu);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    free(ref_out);
    free(got);
    free(ref_io);
    w4a8moe_synth_weights_free(&sw);
}

/* Invalid ids: treated as -1 by default, INVALID_ARGUMENT naming the token when checked. */
static void run_invalid_ids(void)
{
    w4a8moe_layer_desc d = shape(256, 128, 8, 2, 64, 8);
    w4a8moe_synth_rng rng = {g_seed + 17};
    w4a8moe_synth_weights sw;
    gh_inputs in;
    gh_dev dv;
    w4a8moe_layer *a = NULL, *b = NULL;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, rng.s) ||
        gh_inputs_make(&in, &d, 4, GH_RANDOM, &rng)) { CHECK(0, "invalid ids: setup"); return; }
    in.ids[2 * 2 + 1] = 99; /* token 2, slot 1 */
    if (gh_dev_make(&dv, &d, &in)) { CHECK(0, "invalid ids: device inputs"); goto done; }
    CHECK(make_layer(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, NULL, &a) == W4A8MOE_STATUS_OK,
          "invalid ids: create: %s", w4a8moe_last_error());
    setenv("W4A8MOE_CHECK_ROUTING", "1", 1);
    CHECK(make_layer(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, NULL, &b) == W4A8MOE_STATUS_OK,
          "invalid ids: create (checked): %s", w4a8moe_last_error());
    unsetenv("W4A8MOE_CHECK_ROUTING");
    if (!a || !b) goto done;
    w4a8moe_routing_input r = gh_routing(dv.ids, dv.weights, NULL);
    CHECK(w4a8moe_layer_forward(a, 4, dv.x, &r, dv.out, NULL) == W4A8MOE_STATUS_OK,
          "invalid ids: unchecked forward must run: %s", w4a8moe_layer_error(a));
    w4a8moe_status st = w4a8moe_layer_forward(b, 4, dv.x, &r, dv.out, NULL);
    CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && strstr(w4a8moe_layer_error(b), "token 2"),
          "invalid ids: checked forward gave %d '%s'", (int)st, w4a8moe_layer_error(b));
    /* T = 0 is a no-op; T > max_tokens an error */
    CHECK(w4a8moe_layer_forward(a, 0, dv.x, &r, dv.out, NULL) == W4A8MOE_STATUS_OK, "T = 0");
    CHECK(w4a8moe_layer_forward(a, 9, dv.x, &r, dv.out, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "T > max_tokens must be rejected");
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "invalid ids: device sync");
done:
    w4a8moe_layer_free(a);
    w4a8moe_layer_free(b);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
}

static int add(gcase *cs, int n, const char *name, w4a8moe_layer_desc d, int64_t T, int mode)
{
    gcase c;
    memset(&c, 0, sizeof c);
    c.name = name; c.d = d; c.T = T; c.mode = mode; c.sdt = W4A8MOE_DTYPE_BF16; c.nan_token = -1;
    if (d.max_tokens < T) c.d.max_tokens = T;
    cs[n] = c;
    return n + 1;
}

static void no_device_checks(void)
{
    w4a8moe_layer_desc d = shape(256, 128, 8, 2, 64, 4);
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    char buf[2048];
    w4a8moe_status st = w4a8moe_explain(&d, &o, buf, sizeof buf, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "explain without a device: %s", w4a8moe_last_error());
    CHECK(strstr(buf, "cuda_sm89") && strstr(buf, "rejected (device)"),
          "explain without a device must reject cuda_sm89 on the device axis:\n%s", buf);
    w4a8moe_layer *L = NULL;
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, 1)) return;
    st = w4a8moe_layer_create(&d, &sw.weights, &o, &L);
    CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && !L, "create on a missing device: status %d", (int)st);
    w4a8moe_synth_weights_free(&sw);
}

int main(void)
{
    g_seed = test_seed();
    if (gh_device_count() == 0) {
        printf("SKIP: no CUDA device: checking that the oracle rejects the CUDA backends\n");
        no_device_checks();
        TEST_MAIN_END();
    }
    static gcase cs[64];
    int n = 0, quick = test_quick();
    /* every built-in model at T = 2 (a pool of 2 weight sets keeps host memory small) */
    for (const w4a8moe_model *m = w4a8moe_models(); m->name; m++) {
        if (quick && strcmp(m->name, "tiny") && strcmp(m->name, "qwen3-30b-a3b")) continue;
        w4a8moe_layer_desc d;
        w4a8moe_model_desc(m, 4, &d);
        n = add(cs, n, m->name, d, 2, GH_RANDOM);
        cs[n - 1].pool = 2;
        if (m->routing.kind != W4A8MOE_ROUTING_SOFTMAX_TOPK || m->router_weight_on_input) {
            n = add(cs, n, m->name, d, 3, GH_LOGITS); /* its own router on the device */
            cs[n - 1].pool = 2;
        }
    }
    w4a8moe_layer_desc t = shape(256, 128, 8, 2, 64, 64);
    n = add(cs, n, "T=1", t, 1, GH_RANDOM);
    n = add(cs, n, "every token to one expert", t, 37, GH_ONE_EXPERT);
    n = add(cs, n, "experts with zero tokens", t, 9, GH_FEW);
    n = add(cs, n, "-1 slots, one token with none", t, 11, GH_NEG);
    n = add(cs, n, "softmax logits renormalised", t, 13, GH_LOGITS);
    n = add(cs, n, "H=96 I=160 (not multiples of 256)", shape(96, 160, 6, 3, 32, 8), 7, GH_RANDOM);
    n = add(cs, n, "g=32", shape(384, 256, 8, 2, 32, 8), 6, GH_RANDOM);
    n = add(cs, n, "g=64", shape(384, 256, 8, 2, 64, 8), 6, GH_RANDOM);
    n = add(cs, n, "g=128", shape(384, 256, 8, 2, 128, 8), 6, GH_RANDOM);
    w4a8moe_layer_desc io = t;
    io.io_dtype = W4A8MOE_DTYPE_F16;
    n = add(cs, n, "f16 I/O, f16 scales", io, 5, GH_RANDOM);
    cs[n - 1].sdt = W4A8MOE_DTYPE_F16;
    io.io_dtype = W4A8MOE_DTYPE_F32;
    n = add(cs, n, "f32 I/O, f32 scales, channel scales", io, 5, GH_RANDOM);
    cs[n - 1].sdt = W4A8MOE_DTYPE_F32;
    cs[n - 1].channel = 1;
    w4a8moe_layer_desc ge = t;
    ge.activation = W4A8MOE_ACTIVATION_GELU_TANH;
    n = add(cs, n, "gelu_tanh, channel scales", ge, 6, GH_RANDOM);
    cs[n - 1].channel = 1;
    w4a8moe_layer_desc sc = t;
    sc.act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    sc.act_scale_in = 2.0f / 448.0f;
    sc.act_scale_mid = 0.05f;
    n = add(cs, n, "static activation scales", sc, 6, GH_RANDOM);
    w4a8moe_layer_desc ds = shape(256, 128, 16, 4, 64, 8);
    static float bias[16];
    for (int e = 0; e < 16; e++) bias[e] = 0.05f * (float)(e % 5) - 0.1f;
    ds.routing.kind = W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK;
    ds.routing.n_group = 4; ds.routing.topk_group = 2; ds.routing.routed_scaling_factor = 2.5f;
    ds.routing.score_bias = bias;
    n = add(cs, n, "grouped sigmoid logits with bias", ds, 9, GH_LOGITS);
    w4a8moe_layer_desc l4 = shape(256, 128, 8, 1, 64, 8);
    l4.routing.kind = W4A8MOE_ROUTING_SIGMOID_TOP1;
    l4.routing.renormalize = 0;
    l4.router_weight_on_input = 1;
    n = add(cs, n, "top1 weight on input (ids)", l4, 7, GH_RANDOM);
    n = add(cs, n, "top1 weight on input (logits)", l4, 7, GH_LOGITS);
    n = add(cs, n, "a NaN token", t, 4, GH_RANDOM);
    cs[n - 1].nan_token = 1;
    /* the four row-tile configurations (avg rows per expert 1, 12, 32, 75) */
    w4a8moe_layer_desc mid = shape(512, 384, 8, 2, 128, 300);
    n = add(cs, n, "tiles nt=1 ksplit=4", mid, 4, GH_RANDOM);
    n = add(cs, n, "tiles nt=2 ksplit=4", mid, 48, GH_RANDOM);
    n = add(cs, n, "tiles nt=4 ksplit=2", mid, 128, GH_RANDOM);
    n = add(cs, n, "tiles nt=8 ksplit=1", mid, quick ? 160 : 300, GH_SKEW);
    /* the oracle's own choice on this card */
    const int sm = gh_device_sm();
    {
        w4a8moe_synth_weights sw;
        w4a8moe_layer *L = NULL;
        if (w4a8moe_synth_weights_make(&sw, &t, W4A8MOE_DTYPE_BF16, 0, 0, 3) == 0 &&
            make_layer(&t, &sw.weights, W4A8MOE_DEVICE_CUDA, NULL, &L) == W4A8MOE_STATUS_OK) {
            const char *want = sm == 90 ? "cuda_sm90" : "cuda_sm89"; /* registry.c's order */
            CHECK(strcmp(w4a8moe_layer_backend(L), want) == 0, "oracle chose %s on sm_%d, expected %s",
                  w4a8moe_layer_backend(L), sm, want);
        } else
            CHECK(0, "default CUDA layer: %s", w4a8moe_last_error());
        w4a8moe_layer_free(L);
        w4a8moe_synth_weights_free(&sw);
    }
    for (size_t b = 0; b < N_GPU_BACKENDS; b++) {
        if (strcmp(gpu_backends[b], "cuda_sm90") == 0 && sm != 90) {
            printf("SKIP cuda_sm90: needs sm_90, this card is sm_%d\n", sm);
            continue;
        }
        for (int i = 0; i < n; i++) run_case(&cs[i], gpu_backends[b]);
    }
    run_invalid_ids();
    TEST_MAIN_END();
}
