/*
 * gpu_harness.h — what the GPU test drivers share: a layer pair (cpu_ref on the host, a CUDA
 * backend on the device) built from the same synthetic weights, inputs and routing copied to
 * the device, a forward on either side, and the per-row relative L2 comparison of the contract.
 * Header-only (static functions) so each test binary stays one C file.
 */
#ifndef W4A8MOE_GPU_HARNESS_H
#define W4A8MOE_GPU_HARNESS_H

#include "common/quant.h"
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

/* The contract's GPU tolerance (docs/numerics.md, "Tolerance"): every row within GH_TOL_ROW
 * relative L2 of cpu_ref and, over at least 64 rows, the mean within GH_TOL_MEAN; rows above
 * GH_TOL_CPU (the CPU backends' bound) are counted and reported. */
#define GH_TOL_ROW 1e-2
#define GH_TOL_MEAN 1e-3
#define GH_TOL_CPU 2e-3

static int gh_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* Compute capability of the current device as 10 * major + minor (e.g. 90), 0 on failure. */
static inline int gh_device_sm(void)
{
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major * 10 + minor;
}

static size_t gh_io_size(w4a8moe_dtype dt) { return dt == W4A8MOE_DTYPE_F32 ? 4 : 2; }

static float gh_io_get(const void *x, w4a8moe_dtype dt, int64_t i)
{
    if (dt == W4A8MOE_DTYPE_BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)x)[i]);
    if (dt == W4A8MOE_DTYPE_F16) return w4a8moe_f16_to_f32(((const uint16_t *)x)[i]);
    return ((const float *)x)[i];
}

/* Host inputs of one case: x [T, H] in the I/O dtype, ids/weights [T, k] or logits [T, E]. */
typedef struct gh_inputs {
    int64_t T;
    void *x;
    int32_t *ids;
    float *weights;
    float *logits;
} gh_inputs;

static void gh_inputs_free(gh_inputs *in)
{
    free(in->x);
    free(in->ids);
    free(in->weights);
    free(in->logits);
    memset(in, 0, sizeof *in);
}

/* Routing modes shared by the drivers. */
enum { GH_RANDOM, GH_ONE_EXPERT, GH_FEW, GH_NEG, GH_LOGITS, GH_SKEW };

static int gh_inputs_make(gh_inputs *in, const w4a8moe_layer_desc *d, int64_t T, int mode,
                          w4a8moe_synth_rng *rng)
{
    memset(in, 0, sizeof *in);
    int64_t H = d->hidden, k = d->top_k, E = d->num_experts;
    in->T = T;
    in->x = malloc((size_t)(T * H) * gh_io_size(d->io_dtype));
    in->ids = malloc((size_t)(T * k) * 4);
    in->weights = malloc((size_t)(T * k) * 4);
    if (!in->x || !in->ids || !in->weights) return -1;
    w4a8moe_synth_input(in->x, d->io_dtype, T, H, 2.0f, rng);
    w4a8moe_synth_routing(in->ids, in->weights, T, (int32_t)E, (int32_t)k, rng);
    for (int64_t t = 0; t < T; t++) {
        int32_t *id = in->ids + t * k;
        if (mode == GH_ONE_EXPERT || (mode == GH_SKEW && t % 4 != 3)) {
            /* slot 0 becomes expert 1 (or 0); drop a clash */
            int32_t target = E > 1 ? 1 : 0;
            for (int64_t j = 1; j < k; j++)
                if (id[j] == target) id[j] = id[0];
            id[0] = target;
        } else if (mode == GH_FEW) {
            for (int64_t j = 0; j < k; j++) id[j] = j < 3 && j < E ? (int32_t)(E / 2 - 1 + j) : -1;
            if (E < 4) for (int64_t j = 0; j < k; j++) id[j] = j == 0 ? 0 : -1;
        } else if (mode == GH_NEG) {
            for (int64_t j = 0; j < k; j++)
                if (t == 0 || (w4a8moe_synth_next(rng) & 3) == 0) id[j] = -1;
        }
    }
    if (mode == GH_LOGITS) {
        in->logits = malloc((size_t)(T * E) * 4);
        if (!in->logits) return -1;
        for (int64_t i = 0; i < T * E; i++) in->logits[i] = w4a8moe_synth_uniform(rng, -4.0f, 4.0f);
    }
    return 0;
}

/* Device copies of the inputs. */
typedef struct gh_dev {
    void *x;
    int32_t *ids;
    float *weights, *logits;
    void *out;
} gh_dev;

static int gh_dev_make(gh_dev *g, const w4a8moe_layer_desc *d, const gh_inputs *in)
{
    memset(g, 0, sizeof *g);
    int64_t T = in->T, H = d->hidden, k = d->top_k, E = d->num_experts;
    size_t xb = (size_t)(T * H) * gh_io_size(d->io_dtype);
    if (cudaMalloc(&g->x, xb ? xb : 1) || cudaMalloc((void **)&g->ids, (size_t)(T * k) * 4 + 4) ||
        cudaMalloc((void **)&g->weights, (size_t)(T * k) * 4 + 4) || cudaMalloc(&g->out, xb ? xb : 1))
        return -1;
    if (cudaMemcpy(g->x, in->x, xb, cudaMemcpyHostToDevice) ||
        cudaMemcpy(g->ids, in->ids, (size_t)(T * k) * 4, cudaMemcpyHostToDevice) ||
        cudaMemcpy(g->weights, in->weights, (size_t)(T * k) * 4, cudaMemcpyHostToDevice))
        return -1;
    if (in->logits) {
        if (cudaMalloc((void **)&g->logits, (size_t)(T * E) * 4) ||
            cudaMemcpy(g->logits, in->logits, (size_t)(T * E) * 4, cudaMemcpyHostToDevice))
            return -1;
    }
    /* poison: NaN bit patterns in every dtype */
    return cudaMemset(g->out, 0xff, xb) == cudaSuccess ? 0 : -1;
}

static void gh_dev_free(gh_dev *g)
{
    cudaFree(g->x);
    cudaFree(g->ids);
    cudaFree(g->weights);
    cudaFree(g->logits);
    cudaFree(g->out);
    memset(g, 0, sizeof *g);
}

static w4a8moe_routing_input gh_routing(const int32_t *ids, const float *w, const float *logits)
{
    w4a8moe_routing_input r;
    memset(&r, 0, sizeof r);
    if (logits) r.router_logits = logits;
    else { r.topk_ids = ids; r.topk_weights = w; }
    return r;
}

/* Output of the device layer copied back into host f32 [T, H]. */
static int gh_fetch(const w4a8moe_layer_desc *d, int64_t T, const void *dev_out, float *host)
{
    size_t n = (size_t)(T * d->hidden), es = gh_io_size(d->io_dtype);
    void *tmp = malloc(n * es + 1);
    if (!tmp) return -1;
    int rc = cudaMemcpy(tmp, dev_out, n * es, cudaMemcpyDeviceToHost) != cudaSuccess;
    for (size_t i = 0; i < n; i++) host[i] = gh_io_get(tmp, d->io_dtype, (int64_t)i);
    free(tmp);
    return rc ? -1 : 0;
}

/* Per-row rel-L2 statistics of got vs ref [T, H]. */
typedef struct gh_stats {
    double worst, mean;
    int64_t rows, above_cpu_tol, nan_bad; /* nan_bad: NaN/Inf where ref is finite */
    int64_t worst_row;                    /* -1: none */
} gh_stats;

/* 1 when the statistics meet the contract's GPU tolerance; the mean bound applies from 64 rows
 * on. (backend: for messages and future per-backend bounds; every GPU backend meets this one.) */
static inline int gh_within_tol(const gh_stats *s, const char *backend)
{
    (void)backend;
    return s->nan_bad == 0 && s->worst <= GH_TOL_ROW && (s->rows < 64 || s->mean <= GH_TOL_MEAN);
}

/* A layer of d on device kind dev with the named backend (NULL: the oracle's choice); NULL when
 * creation fails, with its status in *st (st may be NULL). */
static inline w4a8moe_layer *gh_layer(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                      w4a8moe_device_kind dev, const char *backend, w4a8moe_status *st)
{
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.device_kind = dev;
    o.backend = backend;
    w4a8moe_layer *L = NULL;
    w4a8moe_status s = w4a8moe_layer_create(d, w, &o, &L);
    if (st) *st = s;
    return L;
}

static inline gh_stats gh_compare_stats(const float *ref, const float *got, int64_t T, int64_t H)
{
    gh_stats st;
    memset(&st, 0, sizeof st);
    st.worst_row = -1;
    double sum = 0.0;
    for (int64_t t = 0; t < T; t++) {
        double num = 0.0, den = 0.0;
        int ref_finite = 1, got_finite = 1;
        for (int64_t h = 0; h < H; h++) {
            double r = ref[t * H + h], g = got[t * H + h];
            if (!isfinite(r)) ref_finite = 0;
            if (!isfinite(g)) got_finite = 0;
            num += (g - r) * (g - r);
            den += r * r;
        }
        if (ref_finite && !got_finite) { st.nan_bad++; continue; }
        if (!ref_finite) continue;
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > st.worst) {
            st.worst = rel;
            st.worst_row = t;
        }
        st.above_cpu_tol += rel > GH_TOL_CPU;
        sum += rel;
        st.rows++;
    }
    st.mean = st.rows ? sum / (double)st.rows : 0.0;
    return st;
}

#endif /* W4A8MOE_GPU_HARNESS_H */
