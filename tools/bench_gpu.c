/*
 * bench_gpu.c — see bench_gpu.h.
 *
 * Ceilings, measured in the same run (docs/PERFORMANCE.md, how we measure): the copy bandwidth is the best of 10
 * device-to-device copies of 1 GiB (bytes read + written); the FP8 rate is the best of 10
 * cuBLASLt e4m3 GEMMs of 8192^3 (bf16 out, f32 accumulate) on random finite bytes. cuBLASLt is
 * loaded with dlopen("libcublasLt.so.13"), so neither the library nor the CLI links cuBLAS;
 * without it the FP8 rate is reported as unknown and the floor is the memory term alone.
 *
 * Cold L2: the layer is created `copies` times (same host weights, distinct device buffers)
 * and each timed forward runs on the next copy; the copies' weights touched at T = 1 together
 * exceed 2 x the L2, as a model streaming through its layers does. Each forward is timed by a
 * pair of CUDA events on one stream (median); a second column replays the forward captured in
 * a CUDA graph (launch gaps gone).
 */
#include "bench_gpu.h"

#include "bench.h"
#include "cli.h"

#include "../src/common/synth.h"
#include "../src/core/backend.h"
#include "../src/core/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef W4A8MOE_WITH_CUDA

int bench_gpu_main(const bench_gpu_args *a)
{
    (void)a;
    return cli_usage_error("bench", "this build of w4a8moe has no CUDA support; hint: rebuild "
                                    "where nvcc is installed");
}

w4a8moe_status bench_gpu_forward_staged(w4a8moe_layer *L, w4a8moe_device_kind kind,
                                        const w4a8moe_layer_desc *d, int64_t T, const void *x,
                                        const w4a8moe_routing_input *r, void *out)
{
    (void)kind;
    (void)d;
    return w4a8moe_layer_forward(L, T, x, r, out, NULL);
}

#else

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cublasLt.h>
#pragma GCC diagnostic pop
#include <cuda_runtime.h>
#include <dlfcn.h>

#define GPU_MAX_COPIES 32
#define GPU_MIN_TIME_S 0.3
#define GPU_MAX_ITERS 200
#define GPU_CHECK_TOKENS 2

static double copy_bandwidth(void)
{
    size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    double best = 0.0;
    cudaEvent_t e0, e1;
    if (cudaMalloc(&a, n) || cudaMalloc(&b, n)) goto out;
    cudaMemset(a, 1, n);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 11; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        double gbs = 2.0 * (double)n / (ms * 1e-3) / 1e9;
        if (i > 0 && gbs > best) best = gbs;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    cudaFree(a);
    cudaFree(b);
    cudaGetLastError();
    return best;
}

/* cuBLASLt entry points, resolved at run time */
typedef struct lt_api {
    void *lib;
    cublasStatus_t (*create)(cublasLtHandle_t *);
    cublasStatus_t (*destroy)(cublasLtHandle_t);
    cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t *, cublasComputeType_t, cudaDataType_t);
    cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void *, size_t);
    cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t);
    cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t *, cudaDataType, uint64_t, uint64_t, int64_t);
    cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t);
    cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t *);
    cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void *, size_t);
    cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t);
    cublasStatus_t (*heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *, int *);
    cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *,
                             cublasLtMatrixLayout_t, const void *, cublasLtMatrixLayout_t, const void *,
                             const void *, cublasLtMatrixLayout_t, void *, cublasLtMatrixLayout_t,
                             const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t);
} lt_api;

static int lt_load(lt_api *api, char *why, size_t cap)
{
    memset(api, 0, sizeof *api);
    api->lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) api->lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) {
        snprintf(why, cap, "libcublasLt.so.13 not found (%s)", dlerror());
        return -1;
    }
#define LT_SYM(field, name)                                                                    \
    if (!(*(void **)&api->field = dlsym(api->lib, name))) {                                    \
        snprintf(why, cap, "libcublasLt lacks %s", name);                                      \
        return -1;                                                                             \
    }
    LT_SYM(create, "cublasLtCreate");
    LT_SYM(destroy, "cublasLtDestroy");
    LT_SYM(desc_create, "cublasLtMatmulDescCreate");
    LT_SYM(desc_set, "cublasLtMatmulDescSetAttribute");
    LT_SYM(desc_destroy, "cublasLtMatmulDescDestroy");
    LT_SYM(layout_create, "cublasLtMatrixLayoutCreate");
    LT_SYM(layout_destroy, "cublasLtMatrixLayoutDestroy");
    LT_SYM(pref_create, "cublasLtMatmulPreferenceCreate");
    LT_SYM(pref_set, "cublasLtMatmulPreferenceSetAttribute");
    LT_SYM(pref_destroy, "cublasLtMatmulPreferenceDestroy");
    LT_SYM(heuristic, "cublasLtMatmulAlgoGetHeuristic");
    LT_SYM(matmul, "cublasLtMatmul");
#undef LT_SYM
    return 0;
}

/* TFLOP/s of an 8192^3 e4m3 GEMM (TN, bf16 out), or 0 with the reason in why. */
static double fp8_rate(char *why, size_t cap)
{
    const int64_t n = 8192;
    lt_api api;
    double best = 0.0;
    if (lt_load(&api, why, cap)) return 0.0;
    size_t bytes = (size_t)(n * n), ws_bytes = (size_t)64 << 20;
    uint8_t *host = malloc(bytes);
    void *A = NULL, *B = NULL, *D = NULL, *ws = NULL;
    cublasLtHandle_t h = NULL;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    if (!host || cudaMalloc(&A, bytes) || cudaMalloc(&B, bytes) || cudaMalloc(&D, bytes * 2) ||
        cudaMalloc(&ws, ws_bytes)) {
        snprintf(why, cap, "out of device memory for the FP8 GEMM probe");
        goto out;
    }
    w4a8moe_synth_rng r = {12345};
    for (size_t i = 0; i < bytes; i++) {
        uint8_t c = (uint8_t)w4a8moe_synth_next(&r);
        host[i] = (c & 0x7f) == 0x7f ? 0x38 : c; /* random finite e4m3, no NaN codes */
    }
    cudaMemcpy(A, host, bytes, cudaMemcpyHostToDevice);
    cudaMemcpy(B, host, bytes, cudaMemcpyHostToDevice);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (api.create(&h) || api.desc_create(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        api.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        api.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        api.layout_create(&la, CUDA_R_8F_E4M3, n, n, n) || api.layout_create(&lb, CUDA_R_8F_E4M3, n, n, n) ||
        api.layout_create(&ld, CUDA_R_16BF, n, n, n) || api.pref_create(&pref) ||
        api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes) ||
        api.heuristic(h, desc, la, lb, ld, ld, pref, 1, &heur, &found) || !found) {
        snprintf(why, cap, "cuBLASLt found no FP8 e4m3 GEMM algorithm on this device");
        goto out;
    }
    float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 13; i++) {
        cudaEventRecord(e0, 0);
        cublasStatus_t s = api.matmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo,
                                      ws, ws_bytes, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        if (s != CUBLAS_STATUS_SUCCESS) {
            snprintf(why, cap, "cublasLtMatmul failed with status %d", (int)s);
            best = 0.0;
            break;
        }
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        double tf = 2.0 * (double)n * n * n / (ms * 1e-3) / 1e12;
        if (i >= 3 && tf > best) best = tf;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    if (pref) api.pref_destroy(pref);
    if (la) api.layout_destroy(la);
    if (lb) api.layout_destroy(lb);
    if (ld) api.layout_destroy(ld);
    if (desc) api.desc_destroy(desc);
    if (h) api.destroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(ws);
    cudaGetLastError();
    free(host);
    return best;
}

w4a8moe_status bench_gpu_forward_staged(w4a8moe_layer *L, w4a8moe_device_kind kind,
                                        const w4a8moe_layer_desc *d, int64_t T, const void *x,
                                        const w4a8moe_routing_input *r, void *out)
{
    if (kind != W4A8MOE_DEVICE_CUDA || T == 0) return w4a8moe_layer_forward(L, T, x, r, out, NULL);
    size_t xb = (size_t)(T * d->hidden) * w4a8moe_dtype_size(d->io_dtype);
    size_t kb = (size_t)(T * d->top_k) * 4, lb = (size_t)(T * d->num_experts) * 4;
    void *dx = NULL, *dout = NULL, *dids = NULL, *dw = NULL, *dl = NULL;
    w4a8moe_status st = W4A8MOE_STATUS_DEVICE_ERROR;
    w4a8moe_routing_input dr = {0};
    if (cudaMalloc(&dx, xb) || cudaMalloc(&dout, xb) || cudaMemcpy(dx, x, xb, cudaMemcpyHostToDevice))
        goto out;
    if (r->router_logits && !r->topk_ids) {
        if (cudaMalloc(&dl, lb) || cudaMemcpy(dl, r->router_logits, lb, cudaMemcpyHostToDevice)) goto out;
        dr.router_logits = dl;
    } else {
        if (cudaMalloc(&dids, kb) || cudaMalloc(&dw, kb) ||
            cudaMemcpy(dids, r->topk_ids, kb, cudaMemcpyHostToDevice) ||
            cudaMemcpy(dw, r->topk_weights, kb, cudaMemcpyHostToDevice))
            goto out;
        dr.topk_ids = dids;
        dr.topk_weights = dw;
    }
    cudaMemset(dout, 0xff, xb); /* poison: unwritten rows show as NaN */
    st = w4a8moe_layer_forward(L, T, dx, &dr, dout, NULL);
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_layer_check(L, NULL); /* bad ids: as on the CPU */
    if (st == W4A8MOE_STATUS_OK &&
        (cudaDeviceSynchronize() || cudaMemcpy(out, dout, xb, cudaMemcpyDeviceToHost)))
        st = W4A8MOE_STATUS_DEVICE_ERROR;
out:
    cudaFree(dx);
    cudaFree(dout);
    cudaFree(dids);
    cudaFree(dw);
    cudaFree(dl);
    cudaGetLastError();
    return st;
}


typedef struct gpu_bench {
    const bench_gpu_args *a;
    w4a8moe_layer_desc d;
    w4a8moe_synth_weights sw;
    w4a8moe_layer *layers[GPU_MAX_COPIES], *ref;
    int ncopies;
    bench_machine m;
    void *x, *dx, *dout, *hout;
    void *refout[CLI_LIST_CAP]; /* cpu_ref's rows for T = tokens[i], made once (every --env-sets set) */
    int32_t *ids, *dids;
    float *wts, *dwts;
    cudaStream_t s;
} gpu_bench;

/* ms per forward: forwards run back to back on one stream, each on the next layer copy (as a
 * model runs its layers), timed by events around batches; the median of 3 batch means.
 * graph = 1 replays each copy's forward captured in a CUDA graph instead. */
static int time_layer(gpu_bench *b, int64_t T, int graph, double *ms_out)
{
    w4a8moe_routing_input r = {.topk_ids = b->dids, .topk_weights = b->dwts};
    cudaGraphExec_t exec[GPU_MAX_COPIES] = {0};
    int n = b->ncopies, iters = b->a->iters ? (int)b->a->iters : 0, rc = 0;
    for (int c = 0; c < n && graph; c++) {
        cudaGraph_t g = NULL;
        if (cudaStreamBeginCapture(b->s, cudaStreamCaptureModeThreadLocal)) return -1;
        w4a8moe_status st = w4a8moe_layer_forward(b->layers[c], T, b->dx, &r, b->dout, b->s);
        if (cudaStreamEndCapture(b->s, &g) || st || cudaGraphInstantiate(&exec[c], g, 0)) rc = -1;
        if (g) cudaGraphDestroy(g);
        if (rc) goto out;
    }
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double batch[3];
    for (int round = 0; round < 4 && !rc; round++) {
        int cnt = round == 0 ? n : iters; /* round 0 warms up every copy and sizes the batches */
        cudaEventRecord(e0, b->s);
        for (int i = 0; i < cnt && !rc; i++) {
            int c = i % n;
            if (graph) rc = cudaGraphLaunch(exec[c], b->s) ? -1 : 0;
            else rc = w4a8moe_layer_forward(b->layers[c], T, b->dx, &r, b->dout, b->s) ? -1 : 0;
        }
        cudaEventRecord(e1, b->s);
        float ms = 0;
        if (cudaEventSynchronize(e1) || cudaEventElapsedTime(&ms, e0, e1)) rc = -1;
        if (round == 0) {
            double est = ms / cnt;
            if (!iters) iters = est > 0 ? (int)(GPU_MIN_TIME_S * 1e3 / 3 / est) : GPU_MAX_ITERS;
            if (iters < n) iters = n;
            if (iters > GPU_MAX_ITERS) iters = GPU_MAX_ITERS;
        } else {
            batch[round - 1] = ms / cnt;
        }
    }
    if (!rc) *ms_out = bench_median(batch, 3);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    for (int c = 0; c < n; c++)
        if (exec[c]) cudaGraphExecDestroy(exec[c]);
    if (cudaGetLastError() != cudaSuccess) rc = -1;
    return rc;
}

/* rel-L2 of the first GPU_CHECK_TOKENS tokens against cpu_ref (copy 0); ti: T's index in the
 * token list, whose cpu_ref rows are computed once. */
static int check_layer(gpu_bench *b, int64_t T, int ti, bench_cmp *cmp)
{
    const w4a8moe_layer_desc *d = &b->d;
    int64_t n = T < GPU_CHECK_TOKENS ? T : GPU_CHECK_TOKENS, H = d->hidden;
    size_t row = (size_t)H * w4a8moe_dtype_size(d->io_dtype);
    w4a8moe_routing_input r = {.topk_ids = b->dids, .topk_weights = b->dwts},
                          rh = {.topk_ids = b->ids, .topk_weights = b->wts};
    cudaMemsetAsync(b->dout, 0xff, (size_t)T * row, b->s);
    if (w4a8moe_layer_forward(b->layers[0], T, b->dx, &r, b->dout, b->s) ||
        cudaMemcpyAsync(b->hout, b->dout, (size_t)n * row, cudaMemcpyDeviceToHost, b->s) ||
        cudaStreamSynchronize(b->s))
        return cli_fail("bench", "cuda forward of %lld tokens: %s", (long long)T,
                        w4a8moe_layer_error(b->layers[0]));
    if (!b->refout[ti]) {
        b->refout[ti] = malloc((size_t)n * row);
        if (!b->refout[ti]) return cli_fail("bench", "out of memory");
        if (w4a8moe_layer_forward(b->ref, n, b->x, &rh, b->refout[ti], NULL)) {
            free(b->refout[ti]);
            b->refout[ti] = NULL;
            return cli_fail("bench", "cpu_ref: %s", w4a8moe_layer_error(b->ref));
        }
    }
    bench_compare_rows(b->hout, b->refout[ti], d->io_dtype, n, H, cmp);
    return 0;
}

/* The layer copies the forwards rotate over, made under the current environment (the path
 * switches: docs/cli.md). */
static int make_copies(gpu_bench *b)
{
    const w4a8moe_layer_desc *d = &b->d;
    int64_t H = d->hidden, k = d->top_k;
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, b->a->ordinal);
    double per_expert = 3.0 * (double)H * (double)d->inter * (0.5 + 4.0 / d->group_size);
    double touched = per_expert * (k < d->num_experts ? k : d->num_experts);
    int want = b->a->layers ? (int)b->a->layers : (int)(2.0 * p.l2CacheSize / touched) + 2;
    if (want > GPU_MAX_COPIES) want = GPU_MAX_COPIES;
    w4a8moe_layer_options lo = {0};
    lo.backend = b->a->backend;
    lo.device_kind = W4A8MOE_DEVICE_CUDA;
    lo.device_ordinal = b->a->ordinal;
    for (int i = 0; i < want; i++) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        if (i >= 2 && (double)fr < 0.25 * (double)tot) break; /* keep room for peers and workspaces */
        w4a8moe_status st =
            b->a->ckpt ? w4a8moe_checkpoint_layer_create(b->a->ckpt, bench_ckpt_layer(b->a->ckpt, b->a->ckpt_layer, i),
                                                         &lo, NULL, 0, d->max_tokens, &b->layers[i])
                       : w4a8moe_layer_create(d, &b->sw.weights, &lo, &b->layers[i]);
        if (st != W4A8MOE_STATUS_OK) {
            if (i == 0 && b->a->create_status) { /* the caller decides (--device auto) */
                *b->a->create_status = st;
                snprintf(b->a->create_why, b->a->create_why_cap, "%s", w4a8moe_last_error());
                return CLI_EXIT_FAIL;
            }
            return cli_fail("bench", "%s", w4a8moe_last_error());
        }
        b->ncopies = i + 1;
    }
    return 0;
}

static void free_copies(gpu_bench *b)
{
    for (int i = 0; i < b->ncopies; i++) w4a8moe_layer_free(b->layers[i]);
    b->ncopies = 0;
}

/* The synthetic weights, the cpu_ref check layer and the inputs: once, whatever the sets. */
static int setup(gpu_bench *b)
{
    const w4a8moe_layer_desc *d = &b->d;
    int64_t T = d->max_tokens, H = d->hidden, k = d->top_k;
    size_t io = w4a8moe_dtype_size(d->io_dtype);
    if (!b->a->ckpt &&
        w4a8moe_synth_weights_make(&b->sw, d, W4A8MOE_DTYPE_BF16, 0, 0, b->a->seed * 1000003u))
        return cli_fail("bench", "out of host memory for synthetic weights");
    w4a8moe_layer_desc rd = *d;
    rd.max_tokens = GPU_CHECK_TOKENS;
    w4a8moe_layer_options ro = {.backend = "cpu_ref", .num_threads = 1, .borrow_weights = 1};
    w4a8moe_status rst = b->a->ckpt ? w4a8moe_checkpoint_layer_create(b->a->ckpt, b->a->ckpt_layer, &ro, NULL,
                                                                      0, GPU_CHECK_TOKENS, &b->ref)
                                    : w4a8moe_layer_create(&rd, &b->sw.weights, &ro, &b->ref);
    if (rst != W4A8MOE_STATUS_OK) return cli_fail("bench", "cpu_ref check layer: %s", w4a8moe_last_error());
    b->x = malloc((size_t)(T * H) * io);
    b->hout = malloc((size_t)(GPU_CHECK_TOKENS * H) * io);
    b->ids = malloc((size_t)(T * k) * 4);
    b->wts = malloc((size_t)(T * k) * 4);
    if (!b->x || !b->hout || !b->ids || !b->wts) return cli_fail("bench", "out of memory");
    w4a8moe_synth_rng r = {b->a->seed ^ 0x5eed5eed5eedull};
    w4a8moe_synth_input(b->x, d->io_dtype, T, H, 1.0f, &r);
    w4a8moe_synth_routing(b->ids, b->wts, T, d->num_experts, d->top_k, &r);
    if (cudaStreamCreateWithFlags(&b->s, cudaStreamNonBlocking) ||
        cudaMalloc(&b->dx, (size_t)(T * H) * io) || cudaMalloc(&b->dout, (size_t)(T * H) * io) ||
        cudaMalloc((void **)&b->dids, (size_t)(T * k) * 4) || cudaMalloc((void **)&b->dwts, (size_t)(T * k) * 4) ||
        cudaMemcpy(b->dx, b->x, (size_t)(T * H) * io, cudaMemcpyHostToDevice) ||
        cudaMemcpy(b->dids, b->ids, (size_t)(T * k) * 4, cudaMemcpyHostToDevice) ||
        cudaMemcpy(b->dwts, b->wts, (size_t)(T * k) * 4, cudaMemcpyHostToDevice))
        return cli_fail("bench", "device inputs for %lld tokens: %s", (long long)T,
                        cudaGetErrorString(cudaGetLastError()));
    return 0;
}

static void teardown(gpu_bench *b)
{
    free_copies(b);
    w4a8moe_layer_free(b->ref);
    w4a8moe_synth_weights_free(&b->sw);
    if (b->s) cudaStreamDestroy(b->s);
    cudaFree(b->dx);
    cudaFree(b->dout);
    cudaFree(b->dids);
    cudaFree(b->dwts);
    free(b->x);
    free(b->hout);
    for (int i = 0; i < CLI_LIST_CAP; i++) free(b->refout[i]);
    free(b->ids);
    free(b->wts);
}

int bench_gpu_main(const bench_gpu_args *a)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || a->ordinal >= count) {
        cudaGetLastError();
        return cli_usage_error("bench", "--device cuda:%d: this machine has %d CUDA devices", a->ordinal,
                               count);
    }
    cudaSetDevice(a->ordinal);
    static gpu_bench b;
    memset(&b, 0, sizeof b);
    b.a = a;
    int64_t tmax = 1;
    for (int i = 0; i < a->ntokens; i++) tmax = a->tokens[i] > tmax ? a->tokens[i] : tmax;
    if (!a->ckpt) w4a8moe_model_desc(a->model, tmax, &b.d);
    else if (w4a8moe_checkpoint_layer_desc(a->ckpt, a->ckpt_layer, tmax, &b.d) != W4A8MOE_STATUS_OK)
        return cli_fail("bench", "%s", w4a8moe_last_error());
    const char *name = a->name ? a->name : a->model->name;
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, a->ordinal);
    char why[256] = "";
    b.m.copy_gbs = copy_bandwidth();
    double tf = fp8_rate(why, sizeof why);
    b.m.fma_gflops = tf * 1e3;
    FILE *f = a->json ? stderr : stdout;
    fprintf(f, "device: %s, %d SMs, L2 %d MB; copy %.0f GB/s (read+write); FP8 e4m3 GEMM 8192^3 %s%.0f "
               "TFLOP/s%s%s\n", a->device_label ? a->device_label : p.name, p.multiProcessorCount,
            p.l2CacheSize >> 20, b.m.copy_gbs,
            tf > 0 ? "" : "unknown ", tf, tf > 0 ? " (cuBLASLt)" : ": ", tf > 0 ? "" : why);
    int rc = setup(&b);
    if (rc) { teardown(&b); return rc; }
    /* the sets of --env-sets, or one run under the environment as it is */
    const int nsets = a->env ? a->env->n : 1;
    double worst = 0.0;
    int check_failed = 0;
    for (int set = 0; set < nsets && !rc; set++) {
        char label[BENCH_ENV_VARS_MAX * (2 * BENCH_ENV_LEN + 2)] = "";
        if (a->env) {
            char *saved[BENCH_ENV_VARS_MAX];
            int had[BENCH_ENV_VARS_MAX];
            bench_env_set_label(a->env, set, label, sizeof label);
            if (bench_env_apply(a->env, set, saved, had)) {
                rc = cli_fail("bench", "--env-sets: out of memory");
                break;
            }
            rc = make_copies(&b);
            bench_env_restore(a->env, set, saved, had);
            if (!a->json) printf("== %s %s\n", name, label);
        } else {
            rc = make_copies(&b);
        }
        if (rc) break;
        if (set == 0 || a->env)
            fprintf(f, "model %s (H=%lld I=%lld E=%d k=%d g=%d), backend %s/%s, %d %s rotated (cold L2)\n", name,
                    (long long)b.d.hidden, (long long)b.d.inter, b.d.num_experts, b.d.top_k, b.d.group_size,
                    w4a8moe_layer_backend(b.layers[0]), w4a8moe_layer_prepfin(b.layers[0]), b.ncopies,
                    a->ckpt ? "checkpoint layers" : "layer copies");
        if (!a->json)
            printf("%7s %11s %11s %9s %9s %10s %11s %10s %10s\n", "T", "eager us", "graph us", "GB/s", "TFLOP/s",
                   "floor us", "bound", "time/floor", "rel-L2");
        for (int i = 0; i < a->ntokens && !rc; i++) {
            int64_t T = a->tokens[i];
            double ms_e = 0, ms_g = 0;
            bench_floor fl;
            bench_cmp cmp;
            memset(&cmp, 0, sizeof cmp);
            int check = i == 0 || i == a->ntokens - 1;
            if (time_layer(&b, T, 0, &ms_e) || time_layer(&b, T, 1, &ms_g)) {
                rc = cli_fail("bench", "timing T=%lld failed: %s", (long long)T, w4a8moe_layer_error(b.layers[0]));
                break;
            }
            if (check && (rc = check_layer(&b, T, i, &cmp))) break;
            if (check && !(cmp.max_rel_l2 <= worst)) worst = cmp.max_rel_l2;
            if (check && cmp.nonfinite) worst = INFINITY;
            if (check && !bench_within_tolerance(&cmp, 1, NULL, 0)) check_failed = 1;
            bench_floor_compute(&b.d, T, b.ids, 2, &b.m, &fl);
            double sec = ms_g * 1e-3;
            char rel[32];
            snprintf(rel, sizeof rel, check ? "%.1e" : "-", cmp.max_rel_l2);
            if (a->json)
                printf("{\"model\":\"%s\",\"T\":%lld,\"backend\":\"%s\",\"env\":\"%s\",\"eager_us\":%.2f,"
                       "\"graph_us\":%.2f,\"floor_us\":%.2f,\"bound\":\"%s\",\"time_over_floor\":%.3f,\"gbs\":%.1f,"
                       "\"tflops\":%.2f,\"copy_gbs\":%.1f,\"fp8_tflops\":%.1f,\"rel_l2\":%s}\n",
                       name, (long long)T, w4a8moe_layer_backend(b.layers[0]), label, ms_e * 1e3, ms_g * 1e3,
                       fl.floor_s * 1e6, fl.mem_s >= fl.fma_s ? "memory" : "fp8", sec / fl.floor_s,
                       fl.bytes / sec / 1e9, fl.flops / sec / 1e12, b.m.copy_gbs, tf, check ? rel : "null");
            else
                printf("%7lld %11.1f %11.1f %9.0f %9.1f %10.1f %11s %10.2f %10s\n", (long long)T, ms_e * 1e3,
                       ms_g * 1e3, fl.bytes / sec / 1e9, fl.flops / sec / 1e12, fl.floor_s * 1e6,
                       fl.mem_s >= fl.fma_s ? "memory" : "fp8", sec / fl.floor_s, rel);
            fflush(stdout);
        }
        free_copies(&b);
    }
    if (!rc) {
        fprintf(f, "GB/s, TFLOP/s and time/floor use the graph time; check vs cpu_ref (first %d tokens of "
                   "the first and last T): max rel-L2 = %.1e (GPU tolerance %.0e a row): %s\n",
                GPU_CHECK_TOKENS, worst, BENCH_TOL_GPU_ROW, check_failed ? "FAIL" : "ok");
        if (check_failed) rc = CLI_EXIT_FAIL;
    }
    teardown(&b);
    return rc;
}

#endif /* W4A8MOE_WITH_CUDA */
