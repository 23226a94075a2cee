/*
 * gpu_reference.cu — see gpu_reference.h. Deliberately naive: one thread per output value,
 * weights read in their logical form, no tiling, no tensor cores.
 */
#include "gpu_reference.h"

extern "C" {
#include "../../src/common/quant.h"
}

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#define REF_TRY(x)                                                                             \
    do {                                                                                       \
        if ((x) != cudaSuccess) return -1;                                                     \
    } while (0)

static float host_scale(const void *s, w4a8moe_dtype dt, int64_t i)
{
    if (dt == W4A8MOE_DTYPE_BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)s)[i]);
    if (dt == W4A8MOE_DTYPE_F16) return w4a8moe_f16_to_f32(((const uint16_t *)s)[i]);
    return ((const float *)s)[i];
}

/* one matrix [rows, K] of expert e into the stacked device arrays at row offset r0 */
static int upload(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g, int32_t *wq, float *ws,
                  float *wc, int64_t r0, int64_t K)
{
    int64_t rows = m->rows, G = K / g;
    REF_TRY(cudaMemcpy(wq + r0 * (K / 8), m->packed, (size_t)(rows * K / 8) * 4, cudaMemcpyHostToDevice));
    float *tmp = (float *)malloc((size_t)(rows * G > rows ? rows * G : rows) * 4);
    if (!tmp) return -1;
    for (int64_t i = 0; i < rows * G; i++) tmp[i] = host_scale(m->scale, sdt, i);
    int rc = cudaMemcpy(ws + r0 * G, tmp, (size_t)(rows * G) * 4, cudaMemcpyHostToDevice) != cudaSuccess;
    for (int64_t i = 0; i < rows; i++) tmp[i] = m->channel_scale ? m->channel_scale[i] : 1.0f;
    rc |= cudaMemcpy(wc + r0, tmp, (size_t)rows * 4, cudaMemcpyHostToDevice) != cudaSuccess;
    free(tmp);
    return rc ? -1 : 0;
}

extern "C" int gpuref_create(gpuref_layer *L, const w4a8moe_layer_desc *d, const w4a8moe_weights *w)
{
    memset(L, 0, sizeof *L);
    L->d = *d;
    int64_t E = d->num_experts, H = d->hidden, I = d->inter, g = d->group_size;
    REF_TRY(cudaMalloc((void **)&L->w13, (size_t)(E * 2 * I * H / 8) * 4));
    REF_TRY(cudaMalloc((void **)&L->s13, (size_t)(E * 2 * I * (H / g)) * 4));
    REF_TRY(cudaMalloc((void **)&L->c13, (size_t)(E * 2 * I) * 4));
    REF_TRY(cudaMalloc((void **)&L->w2, (size_t)(E * H * I / 8) * 4));
    REF_TRY(cudaMalloc((void **)&L->s2, (size_t)(E * H * (I / g)) * 4));
    REF_TRY(cudaMalloc((void **)&L->c2, (size_t)(E * H) * 4));
    for (int64_t e = 0; e < E; e++) {
        const w4a8moe_expert_weights *x = &w->experts[e];
        if (upload(&x->gate, w->scale_dtype, (int)g, L->w13, L->s13, L->c13, e * 2 * I, H) ||
            upload(&x->up, w->scale_dtype, (int)g, L->w13, L->s13, L->c13, e * 2 * I + I, H) ||
            upload(&x->down, w->scale_dtype, (int)g, L->w2, L->s2, L->c2, e * H, I))
            return -1;
    }
    return 0;
}

extern "C" void gpuref_free(gpuref_layer *L)
{
    cudaFree(L->w13); cudaFree(L->s13); cudaFree(L->c13);
    cudaFree(L->w2); cudaFree(L->s2); cudaFree(L->c2);
    memset(L, 0, sizeof *L);
}

/* steps 1-2, one thread per token */
__global__ void ref_quant(const float *x, int64_t T, int64_t H, int k, const float *w, int on_input,
                          float static_scale, uint8_t *a, float *s)
{
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    float win = on_input ? w[t * k] : 1.0f, amax = 0.0f;
    for (int64_t h = 0; h < H; h++) {
        float v = fabsf(__fmul_rn(x[t * H + h], win));
        if (amax == amax && !(v <= amax)) amax = v;
    }
    float sc = static_scale > 0 ? static_scale : w4a8moe_act_scale(amax);
    for (int64_t h = 0; h < H; h++) a[t * H + h] = w4a8moe_f32_to_e4m3(__fdiv_rn(__fmul_rn(x[t * H + h], win), sc));
    s[t] = sc;
}

/* one output channel n of a logical int4 matrix against e4m3 input v[K]: C-free sum over groups
 * of S * P_b in f64, as cpu_ref (each product and P_b exact) */
__device__ double ref_dot(const int32_t *wq, const float *ws, int64_t n, int64_t K, int g, const uint8_t *v)
{
    double acc = 0.0;
    for (int64_t b = 0; b < K / g; b++) {
        double P = 0.0;
        for (int64_t k = b * g; k < (b + 1) * g; k++)
            P += (double)w4a8moe_int4_get(wq + n * (K / 8), k) * (double)w4a8moe_e4m3_to_f32(v[k]);
        acc += (double)ws[n * (K / g) + b] * P;
    }
    return acc;
}

/* step 3, thread per (pair, channel of 2I) */
__global__ void ref_gemm1(gpuref_layer L, int64_t T, const int32_t *ids, const uint8_t *a, const float *s, float *h)
{
    int64_t I2 = 2 * L.d.inter, H = L.d.hidden;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, P = T * L.d.top_k;
    if (i >= P * I2) return;
    int64_t p = i / I2, n = i % I2, t = p / L.d.top_k;
    int e = ids[p];
    if (e < 0) return;
    const int32_t *wq = L.w13 + (int64_t)e * I2 * (H / 8);
    const float *ws = L.s13 + (int64_t)e * I2 * (H / L.d.group_size);
    h[i] = (float)((double)s[t] * ((double)L.c13[e * I2 + n] * ref_dot(wq, ws, n, H, L.d.group_size, a + t * H)));
}

/* steps 4-5, thread per pair */
__global__ void ref_act(gpuref_layer L, int64_t T, const int32_t *ids, const float *h, uint8_t *b, float *r)
{
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, I = L.d.inter;
    if (p >= T * L.d.top_k || ids[p] < 0) return;
    const float *hp = h + p * 2 * I;
    float amax = 0.0f;
    for (int64_t i = 0; i < I; i++) {
        float g = hp[i], u = hp[I + i], y;
        /* w4a8moe_activate's formula, its roundings in C's order (no contraction) */
        if (L.d.activation == W4A8MOE_ACTIVATION_GELU_TANH) {
            float g3 = __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, g), g), g);
            float th = tanhf(__fmul_rn(0.7978845608028654f, __fadd_rn(g, g3)));
            y = __fmul_rn(__fmul_rn(__fmul_rn(0.5f, g), __fadd_rn(1.0f, th)), u);
        } else {
            y = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
        }
        float v = fabsf(y);
        if (amax == amax && !(v <= amax)) amax = v;
        ((float *)hp)[i] = y; /* y over the gate half */
    }
    float rr = L.d.act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? L.d.act_scale_mid : w4a8moe_act_scale(amax);
    for (int64_t i = 0; i < I; i++) b[p * I + i] = w4a8moe_f32_to_e4m3(__fdiv_rn(hp[i], rr));
    r[p] = rr;
}

/* step 6, thread per (pair, channel of H) */
__global__ void ref_gemm2(gpuref_layer L, int64_t T, const int32_t *ids, const uint8_t *b, const float *r, float *o)
{
    int64_t H = L.d.hidden, I = L.d.inter;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, P = T * L.d.top_k;
    if (i >= P * H) return;
    int64_t p = i / H, m = i % H;
    int e = ids[p];
    if (e < 0) return;
    const int32_t *wq = L.w2 + (int64_t)e * H * (I / 8);
    const float *ws = L.s2 + (int64_t)e * H * (I / L.d.group_size);
    o[i] = (float)((double)r[p] * ((double)L.c2[e * H + m] * ref_dot(wq, ws, m, I, L.d.group_size, b + p * I)));
}

/* step 7, thread per output value */
__global__ void ref_combine(gpuref_layer L, int64_t T, const int32_t *ids, const float *w, const float *o, float *out)
{
    int64_t H = L.d.hidden, k = L.d.top_k;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * H) return;
    int64_t t = i / H, m = i % H;
    float acc = 0.0f;
    for (int64_t j = 0; j < k; j++)
        if (ids[t * k + j] >= 0)
            acc = __fadd_rn(acc, __fmul_rn(L.d.router_weight_on_input ? 1.0f : w[t * k + j], o[(t * k + j) * H + m]));
    out[i] = acc;
}

static unsigned blocks(int64_t n) { return (unsigned)((n + 255) / 256); }

extern "C" int gpuref_forward(const gpuref_layer *L, int64_t T, const float *x, const int32_t *ids,
                              const float *weights, float *out)
{
    const w4a8moe_layer_desc *d = &L->d;
    int64_t H = d->hidden, I = d->inter, P = T * d->top_k;
    uint8_t *a = NULL, *b = NULL;
    float *s = NULL, *h = NULL, *r = NULL, *o = NULL;
    int rc = -1;
    if (cudaMalloc((void **)&a, (size_t)(T * H)) || cudaMalloc((void **)&s, (size_t)T * 4) ||
        cudaMalloc((void **)&h, (size_t)(P * 2 * I) * 4) || cudaMalloc((void **)&b, (size_t)(P * I)) ||
        cudaMalloc((void **)&r, (size_t)P * 4) || cudaMalloc((void **)&o, (size_t)(P * H) * 4))
        goto done;
    ref_quant<<<blocks(T), 256>>>(x, T, H, d->top_k, weights, d->router_weight_on_input,
                                  d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scale_in : 0.0f, a, s);
    ref_gemm1<<<blocks(P * 2 * I), 256>>>(*L, T, ids, a, s, h);
    ref_act<<<blocks(P), 256>>>(*L, T, ids, h, b, r);
    ref_gemm2<<<blocks(P * H), 256>>>(*L, T, ids, b, r, o);
    ref_combine<<<blocks(T * H), 256>>>(*L, T, ids, weights, o, out);
    if (cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess) rc = 0;
done:
    cudaFree(a); cudaFree(s); cudaFree(h); cudaFree(b); cudaFree(r); cudaFree(o);
    return rc;
}
