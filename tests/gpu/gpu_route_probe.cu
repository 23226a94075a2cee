/*
 * gpu_route_probe.cu — see gpu_route_probe.h. Launches route_kernel exactly as
 * cuda_prepfin_local.cu does (128 threads, 4 tokens a block).
 */
#include "gpu_route_probe.h"

#include "../../src/cuda/kernels/local_route.cuh"

#include <cuda_runtime.h>

#define PROBE_TRY(x)                                                                           \
    do {                                                                                       \
        if ((x) != cudaSuccess) { rc = -1; goto done; }                                        \
    } while (0)

extern "C" int gpu_route_probe(const w4a8moe_layer_desc *d, int64_t T, const float *logits,
                               int32_t *ids, float *weights)
{
    int rc = 0;
    int64_t E = d->num_experts, k = d->top_k;
    float *dl = NULL, *dw = NULL, *db = NULL;
    int32_t *di = NULL;
    route_params p;
    if (T <= 0) return 0;
    PROBE_TRY(cudaMalloc((void **)&dl, (size_t)(T * E) * 4));
    PROBE_TRY(cudaMalloc((void **)&dw, (size_t)(T * k) * 4));
    PROBE_TRY(cudaMalloc((void **)&di, (size_t)(T * k) * 4));
    PROBE_TRY(cudaMemcpy(dl, logits, (size_t)(T * E) * 4, cudaMemcpyHostToDevice));
    if (d->routing.score_bias) {
        PROBE_TRY(cudaMalloc((void **)&db, (size_t)E * 4));
        PROBE_TRY(cudaMemcpy(db, d->routing.score_bias, (size_t)E * 4, cudaMemcpyHostToDevice));
    }
    p.kind = (int)d->routing.kind;
    p.E = (int)E;
    p.k = (int)k;
    p.renormalize = d->routing.renormalize;
    p.n_group = d->routing.n_group;
    p.topk_group = d->routing.topk_group;
    p.scale = d->routing.routed_scaling_factor;
    p.bias = db;
    route_kernel<<<(unsigned)((T + 3) / 4), 128>>>(p, T, dl, di, dw);
    PROBE_TRY(cudaGetLastError());
    PROBE_TRY(cudaMemcpy(ids, di, (size_t)(T * k) * 4, cudaMemcpyDeviceToHost));
    PROBE_TRY(cudaMemcpy(weights, dw, (size_t)(T * k) * 4, cudaMemcpyDeviceToHost));
done:
    cudaFree(dl);
    cudaFree(dw);
    cudaFree(di);
    cudaFree(db);
    return rc;
}
