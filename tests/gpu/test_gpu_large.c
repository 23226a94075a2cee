/*
 * test_gpu_large.c — the CUDA layer at large T, and its CUDA-graph capture.
 *
 * 1. The GPU reference (tests/gpu/gpu_reference.cu: naive, cpu_ref's arithmetic, one thread per
 *    output value) against
 *    cpu_ref at small T: it must be within the contract's tolerance, so it can stand in for
 *    cpu_ref where cpu_ref would take minutes.
 * 2. The CUDA layer against the GPU reference at T = 4096 and 8192 (random and skewed routing:
 *    three tokens in four on one expert, so one expert spans many row tiles), and on the
 *    qwen3-30b-a3b hidden/intermediate sizes. Rows within the GPU tolerance (gpu_harness.h).
 * 3. The whole forward captured in a CUDA graph (ids and logits paths) on a non-default stream:
 *    a replay is bit-identical to the eager forward, and a replay after new inputs are copied
 *    into the same buffers matches a fresh eager forward on them (nothing baked in).
 * W4A8MOE_TEST_QUICK=1 (the compute-sanitizer runs) shrinks T to 256 and drops the qwen3 case.
 */
#include "gpu_harness.h"
#include "gpu_reference.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t g_seed;
static const char *g_backend; /* experts backend forced on the CUDA layer (NULL: the oracle's) */

static w4a8moe_layer_desc shape(int64_t H, int64_t I, int E, int k, int g, int64_t maxT)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = H; d.inter = I; d.num_experts = E; d.top_k = k; d.group_size = g;
    d.max_tokens = maxT;
    d.io_dtype = W4A8MOE_DTYPE_F32;
    d.routing.renormalize = 1;
    return d;
}

static w4a8moe_layer *cuda_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w)
{
    w4a8moe_status st;
    w4a8moe_layer *L = gh_layer(d, w, W4A8MOE_DEVICE_CUDA, g_backend, &st);
    CHECK(st == W4A8MOE_STATUS_OK, "cuda create: %s", w4a8moe_last_error());
    return L;
}

/* cuda layer (or cpu_ref when vs_cpu) vs the GPU reference on one case. */
static void run_vs_ref(const char *name, w4a8moe_layer_desc d, int64_t T, int mode, int vs_cpu)
{
    d.max_tokens = T;
    w4a8moe_synth_rng rng = {g_seed ^ (uint64_t)T ^ (uint64_t)mode << 20 ^ (uint64_t)d.hidden << 32};
    w4a8moe_synth_weights sw;
    gh_inputs in;
    gh_dev dv;
    gpuref_layer R;
    memset(&R, 0, sizeof R);
    w4a8moe_layer *L = NULL;
    int64_t H = d.hidden;
    float *ref = malloc((size_t)(T * H) * 4), *got = malloc((size_t)(T * H) * 4), *rdev = NULL;
    if (!ref || !got || w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 1, 0, rng.s) ||
        gh_inputs_make(&in, &d, T, mode, &rng) || gh_dev_make(&dv, &d, &in) ||
        gpuref_create(&R, &d, &sw.weights) || cudaMalloc((void **)&rdev, (size_t)(T * H) * 4)) {
        CHECK(0, "%s: setup", name);
        goto done;
    }
    CHECK(gpuref_forward(&R, T, dv.x, dv.ids, dv.weights, rdev) == 0, "%s: reference forward", name);
    CHECK(cudaMemcpy(ref, rdev, (size_t)(T * H) * 4, cudaMemcpyDeviceToHost) == cudaSuccess, "%s: copy", name);
    w4a8moe_routing_input r;
    if (vs_cpu) {
        w4a8moe_layer_options o;
        memset(&o, 0, sizeof o);
        o.backend = "cpu_ref";
        CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_OK, "%s: cpu_ref: %s",
              name, w4a8moe_last_error());
        r = gh_routing(in.ids, in.weights, NULL);
        if (L) CHECK(w4a8moe_layer_forward(L, T, in.x, &r, got, NULL) == W4A8MOE_STATUS_OK,
                     "%s: cpu_ref forward", name);
    } else {
        L = cuda_layer(&d, &sw.weights);
        r = gh_routing(dv.ids, dv.weights, NULL);
        if (L) {
            CHECK(w4a8moe_layer_forward(L, T, dv.x, &r, dv.out, NULL) == W4A8MOE_STATUS_OK,
                  "%s: cuda forward: %s", name, w4a8moe_layer_error(L));
            CHECK(gh_fetch(&d, T, dv.out, got) == 0, "%s: fetch", name);
        }
    }
    if (L) {
        gh_stats s = gh_compare_stats(ref, got, T, H);
        CHECK(gh_within_tol(&s, w4a8moe_layer_backend(L)), "%s (%s): rows vs the GPU reference: worst rel-L2 %.3g, mean "
              "%.3g, %lld NaN rows (GPU tolerance: row %.0e, mean %.0e)", name,
              w4a8moe_layer_backend(L), s.worst, s.mean, (long long)s.nan_bad, GH_TOL_ROW, GH_TOL_MEAN);
        printf("ok %-40s %-9s T=%-5lld rel-L2 worst %.2e mean %.2e, rows > 2e-3: %lld of %lld\n", name,
               w4a8moe_layer_backend(L), (long long)T, s.worst, s.mean, (long long)s.above_cpu_tol,
               (long long)s.rows);
    }
done:
    w4a8moe_layer_free(L);
    gpuref_free(&R);
    cudaFree(rdev);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
    free(ref);
    free(got);
}

/* Graph capture of a whole forward vs eager, twice (second time on new inputs). */
static void run_graph(const char *name, w4a8moe_layer_desc d, int64_t T, int mode)
{
    d.max_tokens = T;
    w4a8moe_synth_rng rng = {g_seed ^ 0x9e3779b9u ^ (uint64_t)mode};
    w4a8moe_synth_weights sw;
    gh_inputs in, in2;
    gh_dev dv;
    memset(&in2, 0, sizeof in2);
    w4a8moe_layer *L = NULL;
    cudaStream_t s = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    size_t ob = (size_t)(T * d.hidden) * 4;
    char *eager = malloc(ob), *replay = malloc(ob);
    if (!eager || !replay || w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, rng.s) ||
        gh_inputs_make(&in, &d, T, mode, &rng) || gh_inputs_make(&in2, &d, T, mode, &rng) ||
        gh_dev_make(&dv, &d, &in) || cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) {
        CHECK(0, "%s: setup", name);
        goto done;
    }
    L = cuda_layer(&d, &sw.weights);
    if (!L) goto done;
    w4a8moe_routing_input r = gh_routing(dv.ids, dv.weights, dv.logits);
    CHECK(w4a8moe_layer_forward(L, T, dv.x, &r, dv.out, s) == W4A8MOE_STATUS_OK, "%s: eager", name);
    CHECK(cudaMemcpyAsync(eager, dv.out, ob, cudaMemcpyDeviceToHost, s) == cudaSuccess &&
          cudaStreamSynchronize(s) == cudaSuccess, "%s: eager copy", name);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess, "%s: begin capture", name);
    w4a8moe_status st = w4a8moe_layer_forward(L, T, dv.x, &r, dv.out, s);
    cudaError_t ce = cudaStreamEndCapture(s, &graph);
    CHECK(st == W4A8MOE_STATUS_OK && ce == cudaSuccess, "%s: capture: %s / %s", name,
          w4a8moe_layer_error(L), cudaGetErrorString(ce));
    if (ce != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        CHECK(0, "%s: instantiate", name);
        goto done;
    }
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* new inputs into the same buffers; the eager result on them */
            CHECK(cudaMemcpy(dv.x, in2.x, ob, cudaMemcpyHostToDevice) == cudaSuccess, "%s: new x", name);
            if (dv.logits)
                cudaMemcpy(dv.logits, in2.logits, (size_t)(T * d.num_experts) * 4, cudaMemcpyHostToDevice);
            else
                cudaMemcpy(dv.ids, in2.ids, (size_t)(T * d.top_k) * 4, cudaMemcpyHostToDevice);
            CHECK(w4a8moe_layer_forward(L, T, dv.x, &r, dv.out, s) == W4A8MOE_STATUS_OK, "%s: eager 2", name);
            cudaMemcpyAsync(eager, dv.out, ob, cudaMemcpyDeviceToHost, s);
            cudaStreamSynchronize(s);
        }
        cudaMemsetAsync(dv.out, 0xff, ob, s);
        CHECK(cudaGraphLaunch(exec, s) == cudaSuccess, "%s: launch", name);
        CHECK(cudaMemcpyAsync(replay, dv.out, ob, cudaMemcpyDeviceToHost, s) == cudaSuccess &&
              cudaStreamSynchronize(s) == cudaSuccess, "%s: replay copy", name);
        CHECK(memcmp(eager, replay, ob) == 0, "%s: graph replay %d differs from eager", name, round);
    }
    printf("ok %-48s T=%-5lld graph replay bit-identical to eager\n", name, (long long)T);
done:
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (s) cudaStreamDestroy(s);
    w4a8moe_layer_free(L);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    gh_inputs_free(&in2);
    w4a8moe_synth_weights_free(&sw);
    free(eager);
    free(replay);
}

int main(void)
{
    g_seed = test_seed();
    if (gh_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        CHECK(1, "nothing to run without a device");
        TEST_MAIN_END();
    }
    int quick = test_quick();
    int64_t big = quick ? 256 : 4096;
    w4a8moe_layer_desc a = shape(512, 256, 16, 4, 64, 16);
    run_vs_ref("GPU reference vs cpu_ref", a, 16, GH_RANDOM, 1);
    w4a8moe_layer_desc ag = a;
    ag.activation = W4A8MOE_ACTIVATION_GELU_TANH;
    ag.group_size = 32;
    run_vs_ref("GPU reference vs cpu_ref (gelu, g=32)", ag, 12, GH_NEG, 1);
    /* the oracle's choice, then cuda_sm90 forced where the card is sm_90 */
    const char *forced[] = {NULL, gh_device_sm() == 90 ? "cuda_sm90" : NULL};
    for (int b = 0; b < 2; b++) {
        if (b > 0 && !forced[b]) break;
        g_backend = forced[b];
        run_vs_ref("cuda vs GPU reference", a, big, GH_RANDOM, 0);
        run_vs_ref("cuda vs GPU reference, skewed", a, 2 * big, GH_SKEW, 0);
        run_vs_ref("cuda vs GPU reference (gelu, g=32, -1 slots)", ag, big, GH_NEG, 0);
        w4a8moe_layer_desc q = shape(2048, 768, 16, 2, 128, 16);
        if (!quick) run_vs_ref("cuda vs GPU reference, qwen3 H/I", q, 2048, GH_RANDOM, 0);
        run_graph("graph capture, ids", shape(512, 256, 16, 4, 64, 0), 64, GH_RANDOM);
        w4a8moe_layer_desc lg = shape(512, 256, 16, 4, 64, 0);
        run_graph("graph capture, logits", lg, 33, GH_LOGITS);
    }
    TEST_MAIN_END();
}
