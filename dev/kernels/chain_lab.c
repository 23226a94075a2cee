/*
 * chain_lab.c — where a forward's graph time goes, kernel by kernel (issue 8's breakdown).
 *
 * ncu times kernels one at a time at locked clocks, so its per-kernel sum (~55 µs at qwen3-30b
 * T = 1) says little about the CUDA graph of a forward (~35 µs), where kernels overlap through
 * programmatic dependent launch. This lab captures one forward of a built-in model shape into a
 * graph per layer copy (copies as in `w4a8moe bench`: enough to overflow L2, so weights come from
 * HBM), then replays, per prefix length j, the graph cut after its j-th node (in the chain's
 * order), and each node alone:
 *   prefix j: the graph time of the first j nodes; its step from j - 1 is what node j adds to
 *             the chain (its own time less what it overlaps with the nodes before it);
 *   alone:    node j as a one-node graph (its inputs are whatever the last full forward left).
 * Outputs of cut graphs are garbage; only their times are read. Usage:
 *   chain_lab MODEL T [copies]      e.g. chain_lab qwen3-30b-a3b 1
 * (W4A8MOE_BACKEND picks the experts backend as for any layer.)
 */
#include "common/synth.h"
#include "core/models.h"
#include "w4a8moe.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COPIES 16
#define MAX_NODES 64

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "chain_lab: %s: %s\n", #x, cudaGetErrorString(e_));                \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* The nodes of g in dependency order (the forward is a chain; any topological order will do). */
static int chain_order(cudaGraph_t g, cudaGraphNode_t *out)
{
    size_t n = 0;
    CK(cudaGraphGetNodes(g, NULL, &n));
    if (n > MAX_NODES) {
        fprintf(stderr, "chain_lab: %zu nodes, at most %d\n", n, MAX_NODES);
        exit(1);
    }
    cudaGraphNode_t all[MAX_NODES];
    CK(cudaGraphGetNodes(g, all, &n));
    int placed[MAX_NODES] = {0}, count = 0;
    while (count < (int)n) {
        int progress = 0;
        for (size_t i = 0; i < n; i++) {
            if (placed[i]) continue;
            size_t nd = 0;
            CK(cudaGraphNodeGetDependencies(all[i], NULL, NULL, &nd));
            cudaGraphNode_t deps[MAX_NODES];
            cudaGraphEdgeData edges[MAX_NODES]; /* PDL edges are programmatic: ask for their data */
            if (nd) CK(cudaGraphNodeGetDependencies(all[i], deps, edges, &nd));
            int ready = 1;
            for (size_t d = 0; d < nd && ready; d++) {
                int found = 0;
                for (int q = 0; q < count; q++) found |= out[q] == deps[d];
                ready = found;
            }
            if (ready) {
                out[count++] = all[i];
                placed[i] = 1;
                progress = 1;
            }
        }
        if (!progress) {
            fprintf(stderr, "chain_lab: the graph has a cycle?\n");
            exit(1);
        }
    }
    return count;
}

static const char *node_name(cudaGraphNode_t node)
{
    enum cudaGraphNodeType t;
    CK(cudaGraphNodeGetType(node, &t));
    if (t == cudaGraphNodeTypeMemset) return "(memset)";
    if (t == cudaGraphNodeTypeMemcpy) return "(memcpy)";
    if (t != cudaGraphNodeTypeKernel) return "(other node)";
    struct cudaKernelNodeParams p;
    CK(cudaGraphKernelNodeGetParams(node, &p));
    const char *name = NULL;
    if (cudaFuncGetName(&name, p.func) != cudaSuccess || !name) {
        cudaGetLastError();
        return "(kernel)";
    }
    return name;
}

/* An executable copy of g keeping the order's nodes in [lo, hi). */
static cudaGraphExec_t cut(cudaGraph_t g, cudaGraphNode_t *order, int n, int lo, int hi)
{
    cudaGraph_t c;
    CK(cudaGraphClone(&c, g));
    for (int i = 0; i < n; i++) {
        if (i >= lo && i < hi) continue;
        cudaGraphNode_t cn;
        CK(cudaGraphNodeFindInClone(&cn, order[i], c));
        CK(cudaGraphDestroyNode(cn));
    }
    cudaGraphExec_t x;
    CK(cudaGraphInstantiate(&x, c, 0));
    CK(cudaGraphDestroy(c));
    return x;
}

/* µs a replay: the execs round-robin (one per layer copy), median of 5 batches of iters. */
static double replay_us(cudaGraphExec_t *x, int copies, cudaStream_t s, int iters)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    double t[5];
    for (int r = -1; r < 5; r++) {
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < iters; i++) CK(cudaGraphLaunch(x[i % copies], s));
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0) t[r] = 1e3 * ms / iters;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double v = t[i];
                t[i] = t[j];
                t[j] = v;
            }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return t[2];
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: chain_lab MODEL T [copies]\n");
        return 2;
    }
    const w4a8moe_model *m = w4a8moe_model_find(argv[1]);
    if (!m) {
        fprintf(stderr, "chain_lab: no built-in model %s (w4a8moe models lists them)\n", argv[1]);
        return 2;
    }
    const int64_t T = atoll(argv[2]);
    w4a8moe_layer_desc d;
    w4a8moe_model_desc(m, T, &d);
    const int64_t H = d.hidden, k = d.top_k;
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double per_expert = 3.0 * (double)H * (double)d.inter * (0.5 + 4.0 / d.group_size);
    double touched = per_expert * (double)(T * k < d.num_experts ? T * k : d.num_experts);
    int copies = argc > 3 ? atoi(argv[3]) : (int)(2.0 * prop.l2CacheSize / touched) + 2;
    if (copies < 1) copies = 1;
    if (copies > MAX_COPIES) copies = MAX_COPIES;

    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, 12345)) return 1;
    w4a8moe_layer_options lo = {0};
    lo.device_kind = W4A8MOE_DEVICE_CUDA;
    w4a8moe_layer *L[MAX_COPIES];
    for (int c = 0; c < copies; c++)
        if (w4a8moe_layer_create(&d, &sw.weights, &lo, &L[c]) != W4A8MOE_STATUS_OK) {
            fprintf(stderr, "chain_lab: %s\n", w4a8moe_last_error());
            return 1;
        }
    size_t io = d.io_dtype == W4A8MOE_DTYPE_F32 ? 4 : 2, xb = (size_t)(T * H) * io;
    void *x = malloc(xb);
    int32_t *ids = malloc((size_t)(T * k) * 4);
    float *w = malloc((size_t)(T * k) * 4);
    w4a8moe_synth_rng r = {0x5eed5eed5eedull};
    w4a8moe_synth_input(x, d.io_dtype, T, H, 1.0f, &r);
    w4a8moe_synth_routing(ids, w, T, d.num_experts, (int32_t)k, &r);
    void *dx, *dout, *dids, *dw;
    CK(cudaMalloc(&dx, xb));
    CK(cudaMalloc(&dout, xb));
    CK(cudaMalloc(&dids, (size_t)(T * k) * 4));
    CK(cudaMalloc(&dw, (size_t)(T * k) * 4));
    CK(cudaMemcpy(dx, x, xb, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dids, ids, (size_t)(T * k) * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dw, w, (size_t)(T * k) * 4, cudaMemcpyHostToDevice));
    w4a8moe_routing_input ri = {.topk_ids = dids, .topk_weights = dw};
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    cudaGraph_t g[MAX_COPIES];
    for (int c = 0; c < copies; c++) {
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        w4a8moe_status st = w4a8moe_layer_forward(L[c], T, dx, &ri, dout, s);
        CK(cudaStreamEndCapture(s, &g[c]));
        if (st != W4A8MOE_STATUS_OK) {
            fprintf(stderr, "chain_lab: forward: %s\n", w4a8moe_layer_error(L[c]));
            return 1;
        }
    }
    cudaGraphNode_t order[MAX_COPIES][MAX_NODES];
    int n = chain_order(g[0], order[0]);
    for (int c = 1; c < copies; c++)
        if (chain_order(g[c], order[c]) != n) {
            fprintf(stderr, "chain_lab: copies captured different graphs\n");
            return 1;
        }
    const int iters = 200;
    printf("chain_lab %s T=%lld copies=%d %s (backend: %s)\n", m->name, (long long)T, copies, prop.name,
           getenv("W4A8MOE_BACKEND") ? getenv("W4A8MOE_BACKEND") : "oracle");
    printf("%-3s %-58s %10s %10s %10s\n", "j", "node", "prefix_us", "step_us", "alone_us");
    double prev = 0.0;
    for (int j = 1; j <= n; j++) {
        cudaGraphExec_t xp[MAX_COPIES], xa[MAX_COPIES];
        for (int c = 0; c < copies; c++) {
            xp[c] = cut(g[c], order[c], n, 0, j);
            xa[c] = cut(g[c], order[c], n, j - 1, j);
        }
        double tp = replay_us(xp, copies, s, iters), ta = replay_us(xa, copies, s, iters);
        char name[59];
        snprintf(name, sizeof name, "%s", node_name(order[0][j - 1]));
        printf("%-3d %-58s %10.2f %10.2f %10.2f\n", j, name, tp, tp - prev, ta);
        prev = tp;
        for (int c = 0; c < copies; c++) {
            CK(cudaGraphExecDestroy(xp[c]));
            CK(cudaGraphExecDestroy(xa[c]));
        }
    }
    for (int c = 0; c < copies; c++) {
        CK(cudaGraphDestroy(g[c]));
        w4a8moe_layer_free(L[c]);
    }
    w4a8moe_synth_weights_free(&sw);
    return 0;
}
