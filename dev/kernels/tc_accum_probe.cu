/*
 * tc_accum_probe.cu — how many bits does the FP8 tensor core keep when it sums the 32 products
 * of one k32 step? (docs/numerics.md, "GPU backends": why a GPU row can differ from cpu_ref.)
 *
 * One mma.sync m16n8k32 e4m3 (the instruction cuda_sm89 uses) with A row 0 holding two
 * non-zero values, a big one 2^hi (times b = +-1 or -8 in B) and a small one 2^lo, all other
 * products zero; and a second case with the big one plus 31 small ones. The exact sums are
 * representable in f32 here (at most 21 significant bits), so any difference is the tensor
 * core's alignment/truncation of products before it adds them.
 *
 * Build: nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a \
 *            dev/kernels/tc_accum_probe.cu -o build-lab/tc_probe
 */
#include "../../src/common/quant.h"
#include "../../src/cuda/kernels/sm89_grouped_gemm.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* a [32] e4m3 (row 0 of A; other rows zero), b [32] e4m3 (column 0 of B) → d[0,0]. */
__global__ void probe_kernel(const uint8_t *a, const uint8_t *b, float *out)
{
    const int lane = threadIdx.x, gid = lane >> 2, tig = lane & 3;
    uint32_t af[4] = {0, 0, 0, 0}, b0 = 0, b1 = 0;
    if (gid == 0) {
        for (int i = 0; i < 4; i++) {
            af[0] |= (uint32_t)a[4 * tig + i] << (8 * i);
            af[2] |= (uint32_t)a[16 + 4 * tig + i] << (8 * i);
            b0 |= (uint32_t)b[4 * tig + i] << (8 * i);
            b1 |= (uint32_t)b[16 + 4 * tig + i] << (8 * i);
        }
    } else {
        /* B column gid */
        for (int i = 0; i < 4; i++) {
            b0 |= (uint32_t)b[4 * tig + i] << (8 * i);
            b1 |= (uint32_t)b[16 + 4 * tig + i] << (8 * i);
        }
        b0 = gid == 0 ? b0 : 0;
        b1 = gid == 0 ? b1 : 0;
    }
    float d[4];
    sm89_mma_e4m3(d, af, b0, b1);
    if (lane == 0) *out = d[0];
}

static uint8_t e4m3_pow2(int e) /* 2^e, e in [-9, 8] */
{
    if (e >= -6) return (uint8_t)((e + 7) << 3);
    return (uint8_t)(1 << (e + 9)); /* subnormals: 2^-9 = 0x01, 2^-8 = 0x02, 2^-7 = 0x04 */
}

/* Second probe: the gated activation on the device (contract_activate, CUDA's expf) against the
 * host's (glibc expf, the formula of w4a8moe_activate) on the same f32 inputs. */
__global__ void act_kernel(const float *g, const float *u, float *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = contract_activate(0, g[i], u[i]);
}

static void act_probe(void)
{
    const int n = 1 << 22;
    float *g = (float *)malloc(n * 4), *u = (float *)malloc(n * 4), *y = (float *)malloc(n * 4);
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        g[i] = ((float)(s & 0xffffff) / 16777216.0f - 0.5f) * 16.0f;
        u[i] = ((float)((s >> 24) & 0xffffff) / 16777216.0f - 0.5f) * 16.0f;
    }
    float *dg, *du, *dy;
    cudaMalloc((void **)&dg, n * 4);
    cudaMalloc((void **)&du, n * 4);
    cudaMalloc((void **)&dy, n * 4);
    cudaMemcpy(dg, g, n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(du, u, n * 4, cudaMemcpyHostToDevice);
    act_kernel<<<n / 256, 256>>>(dg, du, dy, n);
    cudaMemcpy(y, dy, n * 4, cudaMemcpyDeviceToHost);
    int diff = 0, flips = 0;
    for (int i = 0; i < n; i++) {
        float h = g[i] / (1.0f + expf(-g[i])) * u[i];
        if (h != y[i]) {
            diff++;
            /* would e4m3(y / r) differ? r from a typical row amax of 8 */
            float r = w4a8moe_act_scale(8.0f);
            flips += w4a8moe_f32_to_e4m3(h / r) != w4a8moe_f32_to_e4m3(y[i] / r);
        }
    }
    printf("activation probe: %d of %d device SiLU*up values differ from the host's (%.2e); "
           "%d of them change the e4m3 code\n", diff, n, (double)diff / n, flips);
}

int main(void)
{
    act_probe();
    uint8_t *da, *db;
    float *dout;
    cudaMalloc((void **)&da, 32);
    cudaMalloc((void **)&db, 32);
    cudaMalloc((void **)&dout, 4);
    printf("tc_accum_probe: one m16n8k32 e4m3 mma, big product 2^hi * b0 plus small products 2^lo\n");
    printf("%5s %5s %6s %14s %14s %s\n", "d", "hi", "smalls", "exact", "tensor core", "kept?");
    for (int many = 0; many < 2; many++)
        for (int d = 4; d <= 20; d++) {
            int lo = -9, hi = lo + d, bbig = 1;
            if (hi > 8) { bbig = -8; hi -= 3; } /* -8 * 2^hi */
            uint8_t a[32], b[32];
            memset(a, 0, 32);
            memset(b, 0, 32);
            a[0] = e4m3_pow2(hi);
            b[0] = bbig == 1 ? 0x38 : 0xD0; /* +1.0 or -8.0 */
            int nsmall = many ? 31 : 1;
            for (int i = 1; i <= nsmall; i++) { a[i] = e4m3_pow2(lo); b[i] = 0x38; }
            double exact = (double)bbig * ldexp(1.0, hi) + nsmall * ldexp(1.0, lo);
            cudaMemcpy(da, a, 32, cudaMemcpyHostToDevice);
            cudaMemcpy(db, b, 32, cudaMemcpyHostToDevice);
            probe_kernel<<<1, 32>>>(da, db, dout);
            float got;
            if (cudaMemcpy(&got, dout, 4, cudaMemcpyDeviceToHost) != cudaSuccess) {
                printf("CUDA error\n");
                return 1;
            }
            printf("%5d %5d %6d %14.9g %14.9g %s\n", d + (bbig == -8 ? 3 : 0), hi, nsmall, exact,
                   (double)got, (double)got == exact ? "exact" : "TRUNCATED");
        }
    return 0;
}
