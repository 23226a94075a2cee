/*
 * sm89_w4a8_gemm.cu — kernel lab (llm.c dev/cuda style) for the cuda_sm89 grouped W4A8 GEMM of
 * src/cuda/kernels/sm89_grouped_gemm.cuh, one expert, the GEMM2 form (no gate/up pair):
 *   out[m, n] = r[m] * C[n] * sum_b S[n, b] * sum_{k in b} q[n, k] * a[m, k]
 *   a: [M, K] e4m3 rows, q: [N, K] int4 (logical packed words), S: [N, K/g], C: [N], out f32.
 *
 * CPU reference (f64 sums, as cpu_ref) → versions → validation → benchmark with an L2 flush:
 *   v1  naive: one thread per output, logical weights, f64 sums (obviously right)
 *   v2  the library kernel, nt=1 ksplit=4 (decode tile)
 *   v3  the library kernel, nt=2 ksplit=4
 *   v4  the library kernel, nt=4 ksplit=2
 *   v5  the library kernel, nt=4 ksplit=1 (prefill tile)
 * Build: nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a \
 *            dev/kernels/sm89_w4a8_gemm.cu -o /tmp/sm89_lab
 * Run:   /tmp/sm89_lab [M] [N] [K] [g]      (default 64 7168 2048 128: one DeepSeek-V3 expert's
 *        down projection over 64 rows). Prints each version's max rel-L2 per row vs the CPU
 *        reference (on up to 16 rows spread over M), µs (median of 20, L2 flushed by a 128 MB memset before each run), TFLOP/s and
 *        GB/s of the weights.
 */
#include "../../src/common/quant.h"
#include "../../src/cuda/kernels/sm89_grouped_gemm.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

static uint64_t rng = 0x1234567;
static uint32_t next32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Rows checked against the CPU: at most 16, spread over M (the CPU reference is O(N*K) a row,
 * single-threaded: all 4096 rows of a prefill case would take minutes). */
static int check_row(int m, int M) { return M <= 16 || m % (M / 16) == 0; }

static void cpu_ref(int M, int N, int K, int g, const uint8_t *a, const float *r, const int32_t *q,
                    const float *S, const float *C, float *out)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N && check_row(m, M); n++) {
            double acc = 0;
            for (int b = 0; b < K / g; b++) {
                double P = 0;
                for (int k = b * g; k < (b + 1) * g; k++)
                    P += (double)w4a8moe_int4_get(q + (size_t)n * (K / 8), k) * w4a8moe_e4m3_to_f32(a[(size_t)m * K + k]);
                acc += (double)S[(size_t)n * (K / g) + b] * P;
            }
            out[(size_t)m * N + n] = (float)((double)r[m] * ((double)C[n] * acc));
        }
}

__global__ void v1_naive(int M, int N, int K, int g, const uint8_t *a, const float *r, const int32_t *q,
                         const float *S, const float *C, float *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)M * N) return;
    int m = (int)(i / N), n = (int)(i % N);
    double acc = 0;
    for (int b = 0; b < K / g; b++) {
        double P = 0;
        for (int k = b * g; k < (b + 1) * g; k++)
            P += (double)w4a8moe_int4_get(q + (size_t)n * (K / 8), k) * w4a8moe_e4m3_to_f32(a[(size_t)m * K + k]);
        acc += (double)S[(size_t)n * (K / g) + b] * P;
    }
    out[i] = (float)((double)r[m] * ((double)C[n] * acc));
}

template <int NT, int KS>
static void launch_lib(const sm89_gemm_args &p, int ntiles, int N, cudaStream_t s)
{
    dim3 grid(ntiles, (unsigned)((N / 16 + 4 / KS - 1) / (4 / KS)));
    sm89_gemm_kernel<NT, KS, false><<<grid, 128, 0, s>>>(p);
}

int main(int argc, char **argv)
{
    int M = argc > 1 ? atoi(argv[1]) : 64, N = argc > 2 ? atoi(argv[2]) : 7168;
    int K = argc > 3 ? atoi(argv[3]) : 2048, g = argc > 4 ? atoi(argv[4]) : 128;
    if (M < 1 || N % 16 || K % g || g % 32) { fprintf(stderr, "need N %% 16 == 0, K %% g == 0, g %% 32 == 0\n"); return 2; }
    size_t nq = (size_t)N * K / 8, ns = (size_t)N * (K / g);
    std::vector<uint8_t> a((size_t)M * K);
    std::vector<int32_t> q(nq);
    std::vector<float> S(ns), C(N), r(M), ref((size_t)M * N), got((size_t)M * N);
    for (auto &v : a) { uint8_t c = (uint8_t)next32(); v = (c & 0x7f) == 0x7f ? 0x38 : c; }
    for (auto &v : q) v = (int32_t)next32() ^ (int32_t)(next32() << 16);
    for (auto &v : S) v = 0.004f + 0.016f * (next32() & 0xffff) / 65536.0f;
    for (auto &v : C) v = 0.5f + (next32() & 0xffff) / 65536.0f;
    for (auto &v : r) v = 0.01f + 0.01f * (next32() & 0xff) / 256.0f;
    cpu_ref(M, N, K, g, a.data(), r.data(), q.data(), S.data(), C.data(), ref.data());

    uint8_t *da; int32_t *dq; float *dS, *dC, *dr, *dout, *dws, *dwc; uint2 *dwq; void *flush;
    int32_t *doff, *dnt; int2 *dtiles;
    size_t flush_bytes = (size_t)128 << 20;
    CK(cudaMalloc(&da, a.size())); CK(cudaMalloc(&dq, nq * 4)); CK(cudaMalloc(&dS, ns * 4));
    CK(cudaMalloc(&dC, N * 4)); CK(cudaMalloc(&dr, M * 4)); CK(cudaMalloc(&dout, got.size() * 4));
    CK(cudaMalloc(&dwq, nq * 4)); CK(cudaMalloc(&dws, ns * 4)); CK(cudaMalloc(&dwc, N * 4));
    CK(cudaMalloc(&flush, flush_bytes)); CK(cudaMalloc(&doff, 8)); CK(cudaMalloc(&dnt, 4));
    CK(cudaMalloc(&dtiles, sizeof(int2) * (M / 8 + 2)));
    CK(cudaMemcpy(da, a.data(), a.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dq, q.data(), nq * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dS, S.data(), ns * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dC, C.data(), N * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dr, r.data(), M * 4, cudaMemcpyHostToDevice));
    /* the library's packing (the lab's expert is expert 0 of one) */
    sm89_pack_kernel<<<(unsigned)((nq + 255) / 256), 256>>>(dq, N, K, dwq);
    sm89_pack_scales_kernel<<<(unsigned)((std::max(ns, (size_t)N) + 255) / 256), 256>>>(dS, 2, N, K / g, dC, dws, dwc);
    int32_t off[2] = {0, M};
    CK(cudaMemcpy(doff, off, 8, cudaMemcpyHostToDevice));
    CK(cudaGetLastError());

    double flops = 2.0 * M * N * K, wbytes = N * (K / 2.0 + 4.0 * K / g);
    printf("M=%d N=%d K=%d g=%d: %.1f MFLOP, %.2f MB of weights\n", M, N, K, g, flops / 1e6, wbytes / 1e6);
    printf("%-22s %12s %10s %9s %9s\n", "version", "max rel-L2", "us", "TFLOP/s", "GB/s");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int v = 1; v <= 5; v++) {
        static const int nts[] = {0, 0, 1, 2, 4, 4};
        int bt = v == 1 ? 8 : 8 * nts[v];
        sm89_schedule_kernel<<<1, 1024>>>(doff, 1, bt, dtiles, dnt, (uint32_t *)flush, 0);
        int ntiles = (M + bt - 1) / bt;
        sm89_gemm_args p = {dwq, dws, dwc, N, N, K, g, da, dr, doff, dtiles, dnt, dout, NULL, 0};
        auto run = [&]() {
            if (v == 1) v1_naive<<<(unsigned)(((size_t)M * N + 255) / 256), 256>>>(M, N, K, g, da, dr, dq, dS, dC, dout);
            else if (v == 2) launch_lib<1, 4>(p, ntiles, N, 0);
            else if (v == 3) launch_lib<2, 4>(p, ntiles, N, 0);
            else if (v == 4) launch_lib<4, 2>(p, ntiles, N, 0);
            else launch_lib<4, 1>(p, ntiles, N, 0);
        };
        CK(cudaMemset(dout, 0xff, got.size() * 4)); /* poison */
        run();
        CK(cudaGetLastError());
        CK(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
        double worst = 0;
        for (int m = 0; m < M; m++) {
            if (!check_row(m, M)) continue;
            double num = 0, den = 0;
            for (int n = 0; n < N; n++) {
                double d = (double)got[(size_t)m * N + n] - ref[(size_t)m * N + n];
                num += d * d;
                den += (double)ref[(size_t)m * N + n] * ref[(size_t)m * N + n];
            }
            double rel = sqrt(num / (den > 0 ? den : 1));
            if (!(rel <= worst)) worst = rel; /* NaN sticks */
        }
        std::vector<float> ts;
        for (int i = 0; i < 20; i++) {
            cudaMemsetAsync(flush, i, flush_bytes); /* evict the weights from the 50 MB L2 */
            cudaEventRecord(e0);
            run();
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            ts.push_back(ms);
        }
        std::sort(ts.begin(), ts.end());
        double us = ts[ts.size() / 2] * 1e3;
        static const char *names[] = {"", "v1 naive f64", "v2 nt=1 ksplit=4", "v3 nt=2 ksplit=4",
                                      "v4 nt=4 ksplit=2", "v5 nt=4 ksplit=1"};
        printf("%-22s %12.2e %10.1f %9.2f %9.0f%s\n", names[v], worst, us, flops / us / 1e6,
               wbytes / us / 1e3, worst <= 2e-3 ? "" : "  FAIL");
    }
    return 0;
}
