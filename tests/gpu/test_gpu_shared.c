/*
 * test_gpu_shared.c — shared experts on CUDA layers (src/core/shared_expert.c, the CUDA gate in
 * src/cuda/cuda_shared_gate.cu, the unquantised backend cuda_dense), against the cpu_ref layer
 * built from the same weights:
 *   1. int4 shared experts: DeepSeek-style (weight 1), Qwen2-MoE-style (weight
 *      sigmoid(x . gate)), one with its own static activation scales beside dynamic routed
 *      experts, and Llama-4-style (top-1, router weight on the input, which the shared expert
 *      must not see); on cuda_sm89 and cuda_sm90 forced (each pipeline then runs it) and on the
 *      oracle's choice;
 *   2. unquantised shared experts on cuda_dense: bf16, f16 and f32 weights (f32 is what a
 *      block-FP8 checkpoint's dequantised shared expert is), shared I not a multiple of 16 or
 *      of 128, silu and gelu_tanh, with and without the gate;
 *   3. per case: random routing at T = max_tokens and T = 1, the shared expert alone (every id
 *      -1), and a NaN in one token's x (exactly the rows cpu_ref makes non-finite are);
 *      distinct random weights for every routed expert and for the shared one; outputs
 *      poisoned (all-ones bytes, NaN in every dtype) before every forward. Every run meets the
 *      GPU tolerance (docs/numerics.md: every row <= 1e-2 rel-L2, mean <= 1e-3); the
 *      unquantised shared expert alone with f32 I/O within 1e-5 (its GEMMs are the CPU dense
 *      path's sums, kernels/dense_gemm.cuh: a dropped input or a wrong padded channel would
 *      hide under 1e-2, not under 1e-5);
 *   4. a shared-expert forward (gated int4, gated bf16) captured in a CUDA graph on a
 *      non-blocking stream replays bit-identically to the eager forward, twice (the second time
 *      on new x and ids in the same buffers);
 *   5. tests/data/golden-deepseek-tiny (made apart from this project: grouped sigmoid routing with
 *      score bias, one int4 shared expert), indep-llama4-tiny (top-1, weight on the input, int4
 *      shared expert) and indep-sglang-w4afp8-tiny (static scales, block-FP8 shared expert on
 *      cuda_dense), both from tests/fixtures/make_indep_fixtures.py: layer 1 on CUDA, routed by
 *      the CUDA router on the checkpoint's logits, against the checkpoint's expected output;
 *   6. w4a8moe_explain on the CUDA device names the shared pipeline's backends.
 * W4A8MOE_TEST_QUICK=1 (the sanitizer runs) keeps the small cases.
 */
#include "gpu_harness.h"
#include "golden_io.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef TEST_DATA
#define TEST_DATA "tests/data"
#endif

static uint64_t g_seed;

typedef struct scase {
    const char *name;
    int64_t H, I;         /* routed */
    int E, k, g;
    int64_t Is;           /* the shared expert's I */
    int gs;               /* its g (int4) */
    int dense;            /* 1: unquantised shared expert (cuda_dense) */
    w4a8moe_dtype wdt;    /* dense: its weights' dtype; int4: its scales' dtype */
    int gated;            /* Qwen2-MoE sigmoid(x . gate) */
    int shared_static;    /* int4: its own static activation scales */
    int on_input;         /* Llama-4: k = 1, the router weight applied on the input */
    w4a8moe_dtype io;
    w4a8moe_activation act;
    int64_t T;            /* max_tokens, >= 64 rows for the mean bound */
    int big;              /* left out under W4A8MOE_TEST_QUICK */
} scase;

#define BF16 W4A8MOE_DTYPE_BF16
#define F16 W4A8MOE_DTYPE_F16
#define F32 W4A8MOE_DTYPE_F32
#define SILU W4A8MOE_ACTIVATION_SILU
#define GELU W4A8MOE_ACTIVATION_GELU_TANH

static const scase cases[] = {
    /* name                           H     I   E  k   g   Is   gs dense wdt gated stat inp io  act    T  big */
    {"int4 w1 (deepseek-like)",      512,  256, 32, 4, 128, 384, 128, 0, BF16, 0, 0, 0, BF16, SILU, 80, 0},
    {"int4 gated (qwen2-moe-like)",  544,  352, 16, 4, 32,  640, 32,  0, F32,  1, 0, 0, F32,  SILU, 72, 0},
    {"bf16 dense w1, Is=200",        512,  256, 8,  2, 64,  200, 0,   1, BF16, 0, 0, 0, F32,  SILU, 70, 0},
    {"bf16 dense gated gelu",        1056, 352, 8,  2, 32,  352, 0,   1, BF16, 1, 0, 0, BF16, GELU, 100, 0},
    {"int4 static shared, gelu",     576,  320, 8,  2, 64,  192, 64,  0, BF16, 0, 1, 0, F16,  GELU, 64, 1},
    {"int4 top-1 on input (llama4)", 640,  512, 16, 1, 128, 512, 128, 0, F16,  0, 0, 1, BF16, SILU, 96, 1},
    {"f32 dense (block-fp8), Is=44", 416,  64,  4,  1, 32,  44,  0,   1, F32,  0, 0, 0, F32,  SILU, 65, 1},
    {"f16 dense gated",              192,  96,  6,  3, 32,  288, 0,   1, F16,  1, 0, 0, BF16, SILU, 64, 1},
    {"int4 gated, T*k > 1024",       256,  128, 8,  2, 64,  256, 64,  0, BF16, 1, 0, 0, BF16, SILU, 1100, 1},
};

static const char *const backends[] = {NULL, "cuda_sm89", "cuda_sm90"}; /* NULL: the oracle */
#define N_BACKENDS (sizeof backends / sizeof backends[0])

/* Everything a case needs on the host and the device. */
typedef struct sdata {
    w4a8moe_layer_desc d;
    w4a8moe_synth_weights sw, ssw; /* routed experts; the int4 shared expert (E = 1) */
    void *dense[3];                /* the unquantised shared expert: gate, up, down */
    uint16_t *gate;                /* [H] bf16 */
    w4a8moe_shared_expert se;
    w4a8moe_weights w;
    gh_inputs in, in2;             /* in2: the graph test's second inputs */
    void *xnan;                    /* x with a NaN in token 5 */
    int32_t *none;                 /* [T, k] all -1: the shared expert alone */
    gh_dev dv;
    void *d_xnan;
    int32_t *d_none;
    float *ref, *got;              /* [T, H] f32 */
} sdata;

static void put(void *p, w4a8moe_dtype dt, int64_t i, float v)
{
    if (dt == BF16) ((uint16_t *)p)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == F16) ((uint16_t *)p)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)p)[i] = v;
}

static void *dense_make(int64_t rows, int64_t cols, w4a8moe_dtype dt, float amp, w4a8moe_synth_rng *r)
{
    void *p = malloc((size_t)(rows * cols) * gh_io_size(dt));
    for (int64_t i = 0; p && i < rows * cols; i++) put(p, dt, i, w4a8moe_synth_uniform(r, -amp, amp));
    return p;
}

static void sdata_free(sdata *s)
{
    w4a8moe_synth_weights_free(&s->sw);
    w4a8moe_synth_weights_free(&s->ssw);
    for (int i = 0; i < 3; i++) free(s->dense[i]);
    free(s->gate);
    gh_inputs_free(&s->in);
    gh_inputs_free(&s->in2);
    free(s->xnan);
    free(s->none);
    gh_dev_free(&s->dv);
    cudaFree(s->d_xnan);
    cudaFree(s->d_none);
    free(s->ref);
    free(s->got);
    memset(s, 0, sizeof *s);
}

static int sdata_make(const scase *c, uint64_t seed, sdata *s)
{
    memset(s, 0, sizeof *s);
    w4a8moe_layer_desc *d = &s->d;
    w4a8moe_layer_desc_init(d);
    d->hidden = c->H;
    d->inter = c->I;
    d->num_experts = c->E;
    d->top_k = c->k;
    d->group_size = c->g;
    d->max_tokens = c->T;
    d->io_dtype = c->io;
    d->activation = c->act;
    d->routing.renormalize = c->k > 1;
    d->router_weight_on_input = c->on_input;
    w4a8moe_synth_rng rng = {seed};
    int64_t H = c->H, Is = c->Is, T = c->T;
    if (w4a8moe_synth_weights_make(&s->sw, d, BF16, 1, 0, w4a8moe_synth_next(&rng))) return -1;
    w4a8moe_shared_expert *se = &s->se;
    se->inter = Is;
    if (c->dense) {
        se->weight_scheme = W4A8MOE_WEIGHT_BF16;
        se->act_scheme = W4A8MOE_ACT_BF16;
        /* |h| ~ 0.7 with |x| ~ 1: silu and gelu away from their linear parts */
        s->dense[0] = dense_make(Is, H, c->wdt, 2.0f / sqrtf((float)H), &rng);
        s->dense[1] = dense_make(Is, H, c->wdt, 2.0f / sqrtf((float)H), &rng);
        s->dense[2] = dense_make(H, Is, c->wdt, 2.0f / sqrtf((float)Is), &rng);
        if (!s->dense[0] || !s->dense[1] || !s->dense[2]) return -1;
        se->gate = (w4a8moe_dense_matrix){s->dense[0], c->wdt, Is, H};
        se->up = (w4a8moe_dense_matrix){s->dense[1], c->wdt, Is, H};
        se->down = (w4a8moe_dense_matrix){s->dense[2], c->wdt, H, Is};
    } else {
        w4a8moe_layer_desc ds = *d;
        ds.num_experts = 1;
        ds.top_k = 1;
        ds.inter = Is;
        ds.group_size = c->gs;
        if (w4a8moe_synth_weights_make(&s->ssw, &ds, c->wdt, 1, 0, w4a8moe_synth_next(&rng))) return -1;
        se->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
        se->act_scheme = c->shared_static ? W4A8MOE_ACT_FP8_TENSOR_STATIC : W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
        se->group_size = c->gs;
        se->scale_dtype = c->wdt;
        se->int4 = s->ssw.experts[0];
        /* |x| < 2; |y| of these weights reaches ~6 (a few codes saturate: both sides alike) */
        se->act_scale_in = 2.0f / 448.0f;
        se->act_scale_mid = 6.0f / 448.0f;
    }
    s->gate = malloc((size_t)H * 2);
    if (!s->gate) return -1;
    for (int64_t h = 0; h < H; h++) s->gate[h] = w4a8moe_f32_to_bf16(w4a8moe_synth_uniform(&rng, -0.1f, 0.1f));
    se->gate_weight = c->gated ? s->gate : NULL;
    se->gate_weight_dtype = BF16;
    s->w = s->sw.weights;
    s->w.shared = se;

    if (gh_inputs_make(&s->in, d, T, GH_RANDOM, &rng) || gh_inputs_make(&s->in2, d, T, GH_RANDOM, &rng) ||
        gh_dev_make(&s->dv, d, &s->in))
        return -1;
    size_t xb = (size_t)(T * H) * gh_io_size(c->io), ib = (size_t)(T * c->k) * 4;
    s->xnan = malloc(xb);
    s->none = malloc(ib);
    s->ref = malloc((size_t)(T * H) * 4);
    s->got = malloc((size_t)(T * H) * 4);
    if (!s->xnan || !s->none || !s->ref || !s->got) return -1;
    memcpy(s->xnan, s->in.x, xb);
    put(s->xnan, c->io, 5 * H + H / 3, NAN);
    for (int64_t i = 0; i < T * c->k; i++) s->none[i] = -1;
    if (cudaMalloc(&s->d_xnan, xb) || cudaMalloc((void **)&s->d_none, ib) ||
        cudaMemcpy(s->d_xnan, s->xnan, xb, cudaMemcpyHostToDevice) ||
        cudaMemcpy(s->d_none, s->none, ib, cudaMemcpyHostToDevice))
        return -1;
    return 0;
}

/* cpu_ref on the host inputs (x, ids) and the CUDA layer on their device copies, T tokens; the
 * GPU tolerance, plus `tight` (> 0) on the worst row. nan_run: exactly the rows cpu_ref makes
 * non-finite must be non-finite. */
static void compare(const scase *c, sdata *s, w4a8moe_layer *R, w4a8moe_layer *L, const char *bname,
                    const char *what, int64_t T, const void *hx, const int32_t *hids, const void *dx,
                    const int32_t *dids, double tight, int nan_run)
{
    int64_t H = c->H;
    size_t ob = (size_t)(T * H) * gh_io_size(c->io);
    void *hout = malloc(ob + 1);
    CHECK(hout != NULL, "%s: host buffer", c->name);
    if (!hout) return;
    memset(hout, 0xff, ob);
    w4a8moe_routing_input rh = gh_routing(hids, s->in.weights, NULL);
    CHECK(w4a8moe_layer_forward(R, T, hx, &rh, hout, NULL) == W4A8MOE_STATUS_OK,
          "%s, %s: cpu_ref forward: %s", c->name, what, w4a8moe_layer_error(R));
    for (int64_t i = 0; i < T * H; i++) s->ref[i] = gh_io_get(hout, c->io, i);
    free(hout);
    CHECK(cudaMemset(s->dv.out, 0xff, ob) == cudaSuccess, "%s: poison", c->name);
    w4a8moe_routing_input rd = gh_routing(dids, s->dv.weights, NULL);
    w4a8moe_status st = w4a8moe_layer_forward(L, T, dx, &rd, s->dv.out, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s, %s on %s: forward: %s", c->name, what, bname,
          w4a8moe_layer_error(L));
    CHECK(w4a8moe_layer_check(L, NULL) == W4A8MOE_STATUS_OK, "%s, %s on %s: check: %s", c->name,
          what, bname, w4a8moe_layer_error(L));
    CHECK(gh_fetch(&s->d, T, s->dv.out, s->got) == 0, "%s: fetch", c->name);
    if (nan_run) {
        int64_t bad = 0, nonfinite = 0;
        for (int64_t t = 0; t < T; t++) {
            int rf = 1, gf = 1;
            for (int64_t h = 0; h < H; h++) {
                rf &= isfinite(s->ref[t * H + h]) != 0;
                gf &= isfinite(s->got[t * H + h]) != 0;
            }
            bad += rf != gf;
            nonfinite += !rf;
        }
        CHECK(bad == 0 && nonfinite >= 1, "%s, %s on %s: %lld rows disagree on being finite "
              "(cpu_ref has %lld non-finite rows)", c->name, what, bname, (long long)bad,
              (long long)nonfinite);
    }
    gh_stats st2 = gh_compare_stats(s->ref, s->got, T, H);
    CHECK(gh_within_tol(&st2, bname), "%s, %s on %s: worst row rel-L2 %.3g, mean %.3g, %lld NaN rows "
          "(GPU tolerance: row %.0e, mean %.0e)", c->name, what, bname, st2.worst, st2.mean,
          (long long)st2.nan_bad, GH_TOL_ROW, GH_TOL_MEAN);
    if (tight > 0)
        CHECK(st2.worst <= tight, "%s, %s on %s: worst row %.3g > %.0e", c->name, what, bname,
              st2.worst, tight);
    printf("ok %-30s %-22s %-10s T=%-5lld worst %.2e mean %.2e, rows > 2e-3: %lld of %lld\n",
           c->name, what, bname, (long long)T, st2.worst, st2.mean, (long long)st2.above_cpu_tol,
           (long long)st2.rows);
}

static void run_case(const scase *c, uint64_t seed)
{
    sdata s;
    if (sdata_make(c, seed, &s)) {
        CHECK(0, "%s: setup (memory or device buffers)", c->name);
        sdata_free(&s);
        return;
    }
    w4a8moe_status st;
    w4a8moe_layer *R = gh_layer(&s.d, &s.w, W4A8MOE_DEVICE_CPU, "cpu_ref", &st);
    CHECK(R != NULL, "%s: cpu_ref create: %s", c->name, w4a8moe_last_error());
    for (size_t b = 0; R && b < N_BACKENDS; b++) {
        const char *bname = backends[b] ? backends[b] : "auto";
        w4a8moe_layer *L = gh_layer(&s.d, &s.w, W4A8MOE_DEVICE_CUDA, backends[b], &st);
        if (!L) {
            CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && backends[b], "%s on %s: create: %s", c->name,
                  bname, w4a8moe_last_error());
            printf("SKIP %s on %s: %s\n", c->name, bname, w4a8moe_last_error());
            continue;
        }
        const char *want = c->dense ? "cuda_dense" : w4a8moe_layer_backend(L);
        CHECK(strcmp(w4a8moe_layer_shared_backend(L), want) == 0,
              "%s on %s: the shared pipeline runs on '%s', want %s", c->name, bname,
              w4a8moe_layer_shared_backend(L), want);
        if (backends[b] && !c->dense)
            CHECK(strcmp(w4a8moe_layer_backend(L), backends[b]) == 0, "%s: forced %s, got %s",
                  c->name, backends[b], w4a8moe_layer_backend(L));
        int64_t T = c->T;
        compare(c, &s, R, L, bname, "routed + shared", T, s.in.x, s.in.ids, s.dv.x, s.dv.ids, 0, 0);
        compare(c, &s, R, L, bname, "routed + shared, T=1", 1, s.in.x, s.in.ids, s.dv.x, s.dv.ids, 0, 0);
        double tight = c->dense && c->io == F32 ? 1e-5 : 0;
        compare(c, &s, R, L, bname, "shared alone", T, s.in.x, s.none, s.dv.x, s.d_none, tight, 0);
        compare(c, &s, R, L, bname, "NaN in token 5", T, s.xnan, s.in.ids, s.d_xnan, s.dv.ids, 0, 1);
        w4a8moe_layer_free(L);
    }
    w4a8moe_layer_free(R);
    sdata_free(&s);
}

/* A whole shared-expert forward captured in a CUDA graph on a non-blocking stream replays
 * bit-identically to the eager forward, on the capture's inputs and on new ones. */
static void run_graph(const scase *c, uint64_t seed)
{
    sdata s;
    memset(&s, 0, sizeof s); /* sdata_free below is safe whatever setup reached */
    cudaStream_t stream = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    w4a8moe_layer *L = NULL;
    int64_t T = c->T, H = c->H;
    size_t ob = (size_t)(T * H) * gh_io_size(c->io), xb = ob, ib = (size_t)(T * c->k) * 4;
    char *eager = malloc(ob), *replay = malloc(ob);
    if (!eager || !replay || sdata_make(c, seed, &s) ||
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
        CHECK(0, "graph %s: setup", c->name);
        goto done;
    }
    w4a8moe_status st;
    L = gh_layer(&s.d, &s.w, W4A8MOE_DEVICE_CUDA, NULL, &st);
    CHECK(L != NULL, "graph %s: create: %s", c->name, w4a8moe_last_error());
    if (!L) goto done;
    w4a8moe_routing_input r = gh_routing(s.dv.ids, s.dv.weights, NULL);
    CHECK(w4a8moe_layer_forward(L, T, s.dv.x, &r, s.dv.out, stream) == W4A8MOE_STATUS_OK,
          "graph %s: eager: %s", c->name, w4a8moe_layer_error(L));
    CHECK(cudaMemcpyAsync(eager, s.dv.out, ob, cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
              cudaStreamSynchronize(stream) == cudaSuccess,
          "graph %s: eager copy", c->name);
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess,
          "graph %s: begin capture", c->name);
    st = w4a8moe_layer_forward(L, T, s.dv.x, &r, s.dv.out, stream);
    cudaError_t ce = cudaStreamEndCapture(stream, &graph);
    CHECK(st == W4A8MOE_STATUS_OK && ce == cudaSuccess, "graph %s: capture: %s / %s", c->name,
          w4a8moe_layer_error(L), cudaGetErrorString(ce));
    if (ce != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        CHECK(0, "graph %s: instantiate", c->name);
        goto done;
    }
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* new inputs in the same buffers, and the eager result on them */
            CHECK(cudaMemcpy(s.dv.x, s.in2.x, xb, cudaMemcpyHostToDevice) == cudaSuccess &&
                      cudaMemcpy(s.dv.ids, s.in2.ids, ib, cudaMemcpyHostToDevice) == cudaSuccess,
                  "graph %s: new inputs", c->name);
            CHECK(w4a8moe_layer_forward(L, T, s.dv.x, &r, s.dv.out, stream) == W4A8MOE_STATUS_OK,
                  "graph %s: eager 2: %s", c->name, w4a8moe_layer_error(L));
            CHECK(cudaMemcpyAsync(eager, s.dv.out, ob, cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
                      cudaStreamSynchronize(stream) == cudaSuccess,
                  "graph %s: eager 2 copy", c->name);
        }
        CHECK(cudaMemsetAsync(s.dv.out, 0xff, ob, stream) == cudaSuccess, "graph %s: poison", c->name);
        CHECK(cudaGraphLaunch(exec, stream) == cudaSuccess, "graph %s: launch", c->name);
        CHECK(cudaMemcpyAsync(replay, s.dv.out, ob, cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
                  cudaStreamSynchronize(stream) == cudaSuccess,
              "graph %s: replay copy", c->name);
        CHECK(memcmp(eager, replay, ob) == 0, "graph %s: replay %d differs from the eager forward",
              c->name, round);
    }
    printf("ok graph %-30s shared on %-10s T=%-5lld replays bit-identical to eager\n", c->name,
           w4a8moe_layer_shared_backend(L), (long long)T);
done:
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (stream) cudaStreamDestroy(stream);
    w4a8moe_layer_free(L);
    sdata_free(&s);
    free(eager);
    free(replay);
}

/* A golden checkpoint's layer 1 (with a shared expert) on CUDA vs its expected output. The
 * shared pipeline runs on the routed backend (int4) or on cuda_dense (unquantised/block-FP8). */
static void golden_case(const char *name, int dense_shared)
{
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "%s/%s", TEST_DATA, name);
    int64_t T = 0, H = 0, T2 = 0, H2 = 0;
    snprintf(path, sizeof path, "%s/input.safetensors", dir);
    uint16_t *x = golden_read_bf16(path, "hidden_states", &T, &H);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    uint16_t *want = golden_read_bf16(path, "output", &T2, &H2);
    w4a8moe_checkpoint *ck = NULL;
    int ok = x && want && T == T2 && H == H2 && w4a8moe_checkpoint_open(dir, &ck) == W4A8MOE_STATUS_OK;
    CHECK(ok, "%s: input, expected output or checkpoint missing: %s", dir, w4a8moe_last_error());
    w4a8moe_checkpoint_info info;
    float *logits = NULL, *ref = malloc((size_t)(T * H) * 4 + 4), *got = malloc((size_t)(T * H) * 4 + 4);
    void *dx = NULL, *dlog = NULL, *dout = NULL;
    if (ok) {
        w4a8moe_checkpoint_get_info(ck, &info);
        CHECK(info.has_shared_expert, "%s: the checkpoint has a shared expert", dir);
        logits = malloc((size_t)(T * info.num_experts) * 4);
        ok = ref && got && logits &&
             w4a8moe_checkpoint_router_logits(ck, 1, T, x, W4A8MOE_DTYPE_BF16, logits) == W4A8MOE_STATUS_OK;
        ok = ok && cudaMalloc(&dx, (size_t)(T * H) * 2) == cudaSuccess &&
             cudaMalloc(&dlog, (size_t)(T * info.num_experts) * 4) == cudaSuccess &&
             cudaMalloc(&dout, (size_t)(T * H) * 2) == cudaSuccess &&
             cudaMemcpy(dx, x, (size_t)(T * H) * 2, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dlog, logits, (size_t)(T * info.num_experts) * 4, cudaMemcpyHostToDevice) == cudaSuccess;
        CHECK(ok, "%s: router logits / device buffers: %s", dir, w4a8moe_last_error());
        for (int64_t i = 0; ok && i < T * H; i++) ref[i] = w4a8moe_bf16_to_f32(want[i]);
    }
    for (size_t b = 0; ok && b < N_BACKENDS; b++) {
        const char *bname = backends[b] ? backends[b] : "auto";
        w4a8moe_layer_options o;
        memset(&o, 0, sizeof o);
        o.device_kind = W4A8MOE_DEVICE_CUDA;
        o.backend = backends[b];
        w4a8moe_layer *L = NULL;
        w4a8moe_status st = w4a8moe_checkpoint_layer_create(ck, 1, &o, NULL, 0, T, &L);
        if (st != W4A8MOE_STATUS_OK) {
            CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && backends[b], "%s: %s create: %s", dir, bname,
                  w4a8moe_last_error());
            printf("SKIP %s on %s: %s\n", name, bname, w4a8moe_last_error());
            continue;
        }
        const char *want_sb = dense_shared ? "cuda_dense" : w4a8moe_layer_backend(L);
        CHECK(strcmp(w4a8moe_layer_shared_backend(L), want_sb) == 0,
              "%s on %s: shared pipeline on '%s', expected '%s'", dir, bname,
              w4a8moe_layer_shared_backend(L), want_sb);
        cudaMemset(dout, 0xff, (size_t)(T * H) * 2);
        w4a8moe_routing_input r;
        memset(&r, 0, sizeof r);
        r.router_logits = dlog;
        CHECK(w4a8moe_layer_forward(L, T, dx, &r, dout, NULL) == W4A8MOE_STATUS_OK, "%s: %s forward: %s",
              dir, bname, w4a8moe_layer_error(L));
        w4a8moe_layer_desc d;
        memset(&d, 0, sizeof d);
        d.hidden = H;
        d.io_dtype = W4A8MOE_DTYPE_BF16;
        CHECK(gh_fetch(&d, T, dout, got) == 0, "%s: fetch", dir);
        gh_stats st2 = gh_compare_stats(ref, got, T, H);
        CHECK(gh_within_tol(&st2, bname), "%s layer 1 on %s: worst row rel-L2 %.3g, mean %.3g, %lld NaN "
              "rows against the expected output", dir, bname, st2.worst, st2.mean, (long long)st2.nan_bad);
        printf("ok %s layer 1 (shared on %s) %-10s worst %.2e, mean %.2e over %lld rows\n", name,
               w4a8moe_layer_shared_backend(L), bname, st2.worst, st2.mean, (long long)st2.rows);
        w4a8moe_layer_free(L);
    }
    w4a8moe_checkpoint_close(ck);
    cudaFree(dx);
    cudaFree(dlog);
    cudaFree(dout);
    free(x);
    free(want);
    free(logits);
    free(ref);
    free(got);
}

/* explain on the CUDA device: the shared pipeline's lines, with cuda_dense for unquantised. */
static void test_explain(void)
{
    w4a8moe_layer_desc d;
    CHECK(w4a8moe_model_layer_desc("deepseek-v3", 64, &d) == W4A8MOE_STATUS_OK, "deepseek-v3 desc");
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    char buf[8192];
    CHECK(w4a8moe_explain(&d, &o, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK, "explain: %s",
          w4a8moe_last_error());
    const char *sh = strstr(buf, "shared expert");
    const char *i4 = sh ? strstr(sh, "int4 x fp8") : NULL;
    const char *dn = sh ? strstr(sh, "unquantised") : NULL;
    CHECK(sh && i4 && dn && strstr(dn, "cuda_dense") && (strstr(i4, "cuda_sm89") || strstr(i4, "cuda_sm90")),
          "explain on CUDA must name the shared pipeline's backends:\n%s", buf);
    printf("ok explain on CUDA names the shared pipeline's backends\n");
}

int main(void)
{
    g_seed = test_seed();
    unsetenv("W4A8MOE_BACKEND");
    if (gh_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        TEST_MAIN_END();
    }
    int quick = test_quick();
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        if (quick && cases[i].big) continue;
        run_case(&cases[i], g_seed ^ (0x9e3779b97f4a7c15ull * (i + 1)));
    }
    run_graph(&cases[1], g_seed ^ 0x51ed270b27a9c1d3ull); /* int4, gated */
    run_graph(&cases[3], g_seed ^ 0x2545f4914f6cdd1dull); /* bf16 dense, gated */
    golden_case("golden-deepseek-tiny", 0);
    golden_case("indep-llama4-tiny", 0);
    golden_case("indep-sglang-w4afp8-tiny", 1);
    test_explain();
    TEST_MAIN_END();
}
