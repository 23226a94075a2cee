/*
 * fused_decode_lab.cu — kernel lab for a one-kernel MoE layer at T = 1 (issue 8): quantise the
 * token, GEMM1 with SiLU·up, requantise, GEMM2 and the combine for its k routed experts, in one
 * persistent launch, against a host f64 reference of the contract (docs/numerics.md).
 *
 * Why: rounds 11-12 (docs/PERFORMANCE.md) measured qwen3-30b-a3b's decode step at 31 µs on an
 * H100 with every weight already in L2 — the six kernels' chain of dependent steps, not HBM, is
 * its time (the floor is ~6.4 µs). Here the chain is one launch:
 *   every block: read the k ids and the token, quantise it into shared memory (redundantly: a
 *      few hundred ns, no grid-wide step);
 *   GEMM1 items (pair j, 64-row block, 16-row slice; 4 warps split K, all of a warp's groups
 *      loaded at once): the small-batch kernel's sums (sm90_mma_decode.cuh: mma.sync f16, f32
 *      per group, fmaf with the group scale, warps added in order), its epilogue (y, row amax);
 *      then a release-count on the pair;
 *   GEMM2 items (same split over H): load the weights first, then wait for the pair's count,
 *      requantise y on the fly (e4m3(y / r) widened to f16, as sm89_requant_kernel's codes),
 *      multiply, write the pair's output rows; the last of the k pairs of a 16-row slice to
 *      count adds w_j · o_j in j order (deterministic) into out;
 *   the last block to finish resets the counters and row maxima for the next launch.
 * Every block takes its GEMM1 items before its GEMM2 items and the grid is what fits on the
 * card at once, so a waiting block never holds work another waits for.
 * Weights: the library's cuda_sm90 layout (sm90_pack_kernel's f16 blocks of 64 rows x 64 K at
 * sm90s_block_bytes(g), promoting f32 scales), so a kernel found here can move into the library.
 *
 * That is version 1 (fused_decode_kernel, rounds 13-14: latency-bound, slower than the staged
 * kernels). Round 37: version 2 (fused_bulk_decode.cuh) — every block asks the copy engine for
 * all of its items' weights first, one block an SM, two grid barriers — where the k experts fit
 * the SMs' shared memory; version 3 (fused_ring_decode.cuh) — the same items through a ring of
 * one-group stages filled by a producer warp, for any layer size, and its stream alone.
 * Versions 2 and 3 take the items the host placed on the SMs, bytes balanced.
 *
 * Build: nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a \
 *            dev/kernels/fused_decode_lab.cu -o build-lab/fused_lab
 * Run:   build-lab/fused_lab H I E k [g]   e.g. 2048 768 128 8 (qwen3-30b-a3b). Prints, for each
 *        version, the worst rel-L2 of out against the reference over several id sets, then µs
 *        per layer replayed in a CUDA graph: cold (16 launches on disjoint expert sets) and warm
 *        (one set), against the floor (the bytes of the k experts' weights / the measured copy
 *        rate). Shapes of more than 32 K groups run versions 2-3 only. LAB_CHECK_ONLY=1: the
 *        checks alone (for compute-sanitizer).
 */
#include "../../src/common/quant.h"
#include "../../src/cuda/kernels/sm90_fused_decode.cuh"
#include "../../src/cuda/kernels/sm90_mma_decode.cuh"

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
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define FD_MAXK 16

struct fd_args {
    const char *w13, *w2;     /* sm90 blocks [E, nrb, K/64] of blk bytes */
    const float *ws13, *ws2;  /* [E, nrb, K/g, 64] */
    const float *wc13, *wc2;  /* [E, nrb * 64] */
    int64_t nrb1, nrb2, H, I;
    int g, k, blk;
    const float *x;           /* [H] */
    const int32_t *ids;       /* [k] */
    const float *wts;         /* [k] */
    float *y;                 /* [k, I] */
    uint32_t *rowmax;         /* [k], zero between launches */
    float *o;                 /* [k, H] */
    float *out;               /* [H] */
    int32_t *done1;           /* [k] GEMM1 items finished per pair */
    int32_t *done2;           /* [nrb2 * 4] pairs finished per GEMM2 slice */
    int32_t *fin;             /* blocks finished */
};

__device__ __forceinline__ int ld_acquire(const int32_t *p)
{
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* Two e4m3 codes as f16x2 (exact). */
__device__ __forceinline__ uint32_t fd_e4m3x2_f16x2(uint32_t two)
{
    uint32_t out = 0;
#if SM90_ENABLED
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(out) : "h"((uint16_t)two));
#endif
    return out;
}

/* The warps' partials added in warp order into warp 0's acc (red: shared [3 * 32 * 4]). */
__device__ __forceinline__ void fd_reduce(float (&acc)[4], float *red, int warp, int lane)
{
    if (warp > 0)
        for (int i = 0; i < 4; i++) red[((warp - 1) * 32 + lane) * 4 + i] = acc[i];
    __syncthreads();
    if (warp == 0)
        for (int q = 1; q < 4; q++)
            for (int i = 0; i < 4; i++) acc[i] += red[((q - 1) * 32 + lane) * 4 + i];
}

/* GSTEPS = g / 32; MAXG: the most K groups a warp holds at once (ceil(K / g / 4)). */
template <int GSTEPS, int MAXG>
static __global__ void __launch_bounds__(128) fused_decode_kernel(fd_args p)
{
#if SM90_ENABLED
    extern __shared__ uint8_t s_a[];     /* [H] the token's e4m3 codes */
    __shared__ int32_t s_e[FD_MAXK];
    __shared__ float s_w[FD_MAXK], s_sa[FD_MAXK], s_r[FD_MAXK];
    __shared__ float red[3 * 32 * 4];
    __shared__ uint32_t s_max[4];
    __shared__ int32_t s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int k = p.k;

    /* the token: amax, scale, codes (every block) */
    if (threadIdx.x < k) {
        s_e[threadIdx.x] = p.ids[threadIdx.x];
        s_w[threadIdx.x] = p.wts[threadIdx.x];
    }
    uint32_t m = 0;
    for (int64_t h = threadIdx.x; h < p.H; h += 128) m = max(m, w4a8moe_f32_bits(fabsf(p.x[h])));
    for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) s_max[warp] = m;
    __syncthreads();
    const float s_t = w4a8moe_act_scale(w4a8moe_bits_f32(max(max(s_max[0], s_max[1]), max(s_max[2], s_max[3]))));
    for (int64_t h = threadIdx.x; h < p.H; h += 128) s_a[h] = w4a8moe_f32_to_e4m3(__fdiv_rn(p.x[h], s_t));
    if (threadIdx.x < k) s_sa[threadIdx.x] = s_t;
    __syncthreads();

    const int64_t n1 = (int64_t)k * p.nrb1 * 4, n2 = (int64_t)k * p.nrb2 * 4;
    const int64_t KB1 = p.H / 64, KB2 = p.I / 64, G1 = p.H / p.g, G2 = p.I / p.g;
    for (int64_t item = blockIdx.x; item < n1 + n2; item += gridDim.x) {
        const bool first = item < n1;
        const int64_t it = first ? item : item - n1;
        int j, slice;
        int64_t rb;
        if (first) {
            j = (int)(it / (p.nrb1 * 4));
            rb = (it / 4) % p.nrb1;
            slice = (int)(it % 4);
        } else {
            j = (int)(it % k);
            rb = it / k / 4;
            slice = (int)((it / k) % 4);
        }
        const int64_t e = s_e[j], nrb = first ? p.nrb1 : p.nrb2, KB = first ? KB1 : KB2, G = first ? G1 : G2;
        const int t = slice * 32 + lane, r = slice * 16 + gid;
        const char *wb = (first ? p.w13 : p.w2) + (e * nrb + rb) * KB * p.blk;
        const float *wsp = (first ? p.ws13 : p.ws2) + (e * nrb + rb) * G * 64 + r;
        const int64_t b0 = warp * G / 4, b1 = (warp + 1) * G / 4;
        /* all of this warp's groups in flight at once */
        uint2 w[MAXG][GSTEPS];
        float2 sc[MAXG];
#pragma unroll
        for (int q = 0; q < MAXG; q++) {
            if (b0 + q >= b1) break;
#pragma unroll
            for (int s = 0; s < GSTEPS; s++) {
                const int64_t ks = (b0 + q) * GSTEPS + s;
                w[q][s] = __ldg((const uint2 *)(wb + (ks >> 1) * p.blk) + sm90s_word_index(t, (int)(ks & 1)));
            }
            sc[q] = make_float2(__ldg(wsp + (b0 + q) * 64), __ldg(wsp + (b0 + q) * 64 + 8));
        }
        float r_j = 0.0f;
        if (!first) { /* the pair's y complete: its GEMM1 items all counted */
            if (threadIdx.x == 0) {
                const int need = (int)(p.nrb1 * 4);
                while (ld_acquire(&p.done1[j]) < need) __nanosleep(64);
                s_r[j] = w4a8moe_act_scale(w4a8moe_bits_f32(__ldcg(&p.rowmax[j])));
            }
            __syncthreads();
            r_j = s_r[j];
        }
        const float *yj = p.y + (int64_t)j * p.I;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int q = 0; q < MAXG; q++) {
            if (b0 + q >= b1) break;
            float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int s = 0; s < GSTEPS; s++) {
                const int64_t ks = (b0 + q) * GSTEPS + s;
                uint32_t a[2][4];
                sm90m_weights<false>(w[q][s], 0u, a);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int64_t kk = ks * 32 + h * 16 + 2 * tig;
                    uint32_t bl, bh;
                    if (first) {
                        bl = fd_e4m3x2_f16x2(*(const uint16_t *)(s_a + kk));
                        bh = fd_e4m3x2_f16x2(*(const uint16_t *)(s_a + kk + 8));
                    } else { /* the requantised codes, as sm89_requant_kernel makes them */
                        const float2 v0 = __ldcg((const float2 *)(yj + kk)), v1 = __ldcg((const float2 *)(yj + kk + 8));
                        bl = fd_e4m3x2_f16x2(w4a8moe_f32_to_e4m3(__fdiv_rn(v0.x, r_j)) |
                                             (uint32_t)w4a8moe_f32_to_e4m3(__fdiv_rn(v0.y, r_j)) << 8);
                        bh = fd_e4m3x2_f16x2(w4a8moe_f32_to_e4m3(__fdiv_rn(v1.x, r_j)) |
                                             (uint32_t)w4a8moe_f32_to_e4m3(__fdiv_rn(v1.y, r_j)) << 8);
                    }
                    sm90m_mma(tmp, a[h], bl, bh);
                }
            }
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sc[q].y : sc[q].x, tmp[i], acc[i]);
        }
        fd_reduce(acc, red, warp, lane);
        if (warp == 0) {
            sm90_gemm_args a = {};
            a.nrb = nrb;
            a.g = p.g;
            a.act_scale = first ? s_sa : s_r; /* indexed by the pair j (the row) */
            if (first) {
                a.wc = p.wc13, a.n_out = p.I, a.out = p.y, a.rowmax = p.rowmax, a.act_fn = 0;
                sm90_epilogue_slice<8, true>(a, e, rb, slice, lane, j, j + 1, acc);
            } else {
                a.wc = p.wc2, a.n_out = p.H, a.out = p.o;
                sm90_epilogue_slice<8, false>(a, e, rb, slice, lane, j, j + 1, acc);
            }
            __threadfence(); /* this warp's y / o before the count that publishes them */
            __syncwarp();
            if (lane == 0) {
                if (first) {
                    atomicAdd(&p.done1[j], 1);
                } else {
                    const int64_t cs = rb * 4 + slice;
                    s_last = atomicAdd(&p.done2[cs], 1) == k - 1;
                }
            }
            __syncwarp();
            if (!first && s_last) { /* the combine of this slice's 16 channels, j ascending */
                __threadfence();
                const int64_t ch = rb * 64 + slice * 16 + lane;
                if (lane < 16 && ch < p.H) {
                    float v = 0.0f;
                    for (int q = 0; q < k; q++) v = __fadd_rn(v, __fmul_rn(s_w[q], __ldcg(&p.o[(int64_t)q * p.H + ch])));
                    p.out[ch] = v;
                }
            }
        }
        __syncthreads(); /* red, s_r, s_last reused by the next item */
    }
    if (threadIdx.x == 0) { /* the last block out resets the counters for the next launch */
        __threadfence();
        if (atomicAdd(p.fin, 1) == (int)gridDim.x - 1) {
            __threadfence();
            for (int j = 0; j < k; j++) p.done1[j] = 0, p.rowmax[j] = 0u;
            for (int64_t i = 0; i < p.nrb2 * 4; i++) p.done2[i] = 0;
            *p.fin = 0;
        }
    }
#endif
}

#include "fused_bulk_decode.cuh" /* version 2 */
#include "fused_ring_decode.cuh" /* version 3 */

/* ---- host ------------------------------------------------------------------------------------ */

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t next32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float unif(float lo, float hi) { return lo + (hi - lo) * (float)(next32() & 0xffffff) / 16777216.0f; }

static int q_at(const std::vector<int32_t> &w, int64_t row, int64_t K, int64_t col)
{
    return (int)(((uint32_t)w[row * (K / 8) + col / 8] >> (4 * (col % 8))) & 15u) - 8;
}

/* Contract steps 2-7 for one token on the host (f64 group sums, f32 elsewhere). */
static void reference(int64_t H, int64_t I, int g, int k, const std::vector<float> &x, const int32_t *ids,
                      const float *wts, const std::vector<int32_t> &q13, const std::vector<float> &s13,
                      const std::vector<int32_t> &q2, const std::vector<float> &s2, std::vector<float> &out)
{
    uint32_t m = 0;
    for (int64_t h = 0; h < H; h++) m = std::max(m, w4a8moe_f32_bits(fabsf(x[h])));
    const float s = w4a8moe_act_scale(w4a8moe_bits_f32(m));
    std::vector<float> a(H), y(I), b(I);
    for (int64_t h = 0; h < H; h++) a[h] = w4a8moe_e4m3_to_f32(w4a8moe_f32_to_e4m3(x[h] / s));
    out.assign(H, 0.0f);
    const int64_t G1 = H / g, G2 = I / g;
    for (int j = 0; j < k; j++) {
        const int64_t e = ids[j];
        auto h_of = [&](int64_t row) {
            const int64_t R = e * 2 * I + row;
            double acc = 0.0;
            for (int64_t bb = 0; bb < G1; bb++) {
                double P = 0.0;
                for (int64_t c = bb * g; c < (bb + 1) * g; c++) P += (double)q_at(q13, R, H, c) * a[c];
                acc += (double)s13[R * G1 + bb] * P;
            }
            return (float)((double)s * acc);
        };
        uint32_t ym = 0;
        for (int64_t i = 0; i < I; i++) {
            const float gt = h_of(i), up = h_of(I + i);
            y[i] = gt / (1.0f + expf(-gt)) * up;
            ym = std::max(ym, w4a8moe_f32_bits(fabsf(y[i])));
        }
        const float r = w4a8moe_act_scale(w4a8moe_bits_f32(ym));
        for (int64_t i = 0; i < I; i++) b[i] = w4a8moe_e4m3_to_f32(w4a8moe_f32_to_e4m3(y[i] / r));
        for (int64_t mm = 0; mm < H; mm++) {
            const int64_t R = e * H + mm;
            double acc = 0.0;
            for (int64_t bb = 0; bb < G2; bb++) {
                double P = 0.0;
                for (int64_t c = bb * g; c < (bb + 1) * g; c++) P += (double)q_at(q2, R, I, c) * b[c];
                acc += (double)s2[R * G2 + bb] * P;
            }
            out[mm] += wts[j] * (float)((double)r * acc);
        }
    }
}

/* A graph of nset launches (launch(i, stream) records launch i), or null where capture or a
 * launch fails (the error cleared). */
template <typename F>
static cudaGraphExec_t capture_graph(cudaStream_t st, int nset, F launch)
{
    cudaGraph_t gr = nullptr;
    cudaGraphExec_t ex = nullptr;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    bool ok = true;
    for (int i = 0; i < nset; i++) ok = ok && launch(i, st) == cudaSuccess;
    const cudaError_t ee = cudaStreamEndCapture(st, &gr);
    if (!ok || ee != cudaSuccess || cudaGraphInstantiate(&ex, gr, 0) != cudaSuccess) {
        ex = nullptr;
        (void)cudaGetLastError();
    }
    if (gr) cudaGraphDestroy(gr);
    return ex;
}

/* ms a launch of graph ex (nset launches), replayed 20 times after 3 warm-up replays. */
static float graph_ms(cudaGraphExec_t ex, cudaStream_t st, int nset)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ex, st));
    const int reps = 20;
    CK(cudaEventRecord(a, st));
    for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(ex, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms / (reps * nset);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s H I E k [g]\n", argv[0]);
        return 2;
    }
    const int64_t H = atoll(argv[1]), I = atoll(argv[2]);
    const int E = atoi(argv[3]), k = atoi(argv[4]), g = argc > 5 ? atoi(argv[5]) : 128;
    const int64_t most = std::max((H / g + 3) / 4, (I / g + 3) / 4); /* groups a warp holds */
    if (k > FD_MAXK || H % 64 || I % 64 || (g != 64 && g != 128)) {
        fprintf(stderr, "unsupported shape (k <= %d; H, I multiples of 64; g 64 or 128)\n", FD_MAXK);
        return 2;
    }
    const bool v1 = most <= 8; /* version 1 holds a warp's groups in registers: at most 32 g */
    const int blk = sm90s_block_bytes(g);
    const int64_t nrb1 = ((I + 31) / 32 + 1) & ~1ll, nrb2 = ((H + 63) / 64 + 1) & ~1ll;
    const int64_t KB1 = H / 64, KB2 = I / 64, G1 = H / g, G2 = I / g;
    printf("H=%lld I=%lld E=%d k=%d g=%d: nrb %lld / %lld\n", (long long)H, (long long)I, E, k, g,
           (long long)nrb1, (long long)nrb2);

    /* logical weights: q13 [E, 2I, H] (gate rows, then up), q2 [E, H, I]; f32 scales */
    std::vector<int32_t> q13((size_t)E * 2 * I * H / 8), q2((size_t)E * H * I / 8);
    for (auto &v : q13) v = (int32_t)next32() ^ (int32_t)(next32() << 21);
    for (auto &v : q2) v = (int32_t)next32() ^ (int32_t)(next32() << 21);
    std::vector<float> s13((size_t)E * 2 * I * G1), s2((size_t)E * H * G2), x(H);
    for (auto &v : s13) v = unif(0.5f, 1.5f) / 64.0f;
    for (auto &v : s2) v = unif(0.5f, 1.5f) / 64.0f;
    for (auto &v : x) v = unif(-2.0f, 2.0f);

    int32_t *dq;
    float *ds;
    char *w13, *w2;
    float *ws13, *ws2, *wc13, *wc2;
    const size_t q13e = (size_t)2 * I * H / 8, q2e = (size_t)H * I / 8;
    CK(cudaMalloc(&dq, std::max(q13.size(), q2.size()) * 4));
    CK(cudaMalloc(&ds, std::max(s13.size(), s2.size()) * 4));
    CK(cudaMalloc(&w13, (size_t)E * nrb1 * KB1 * blk));
    CK(cudaMalloc(&w2, (size_t)E * nrb2 * KB2 * blk));
    CK(cudaMalloc(&ws13, (size_t)E * nrb1 * 64 * G1 * 4));
    CK(cudaMalloc(&ws2, (size_t)E * nrb2 * 64 * G2 * 4));
    CK(cudaMalloc(&wc13, (size_t)E * nrb1 * 64 * 4));
    CK(cudaMalloc(&wc2, (size_t)E * nrb2 * 64 * 4));
    for (int pass = 0; pass < 2; pass++) { /* GEMM1, then GEMM2 */
        const bool one = pass == 0;
        const std::vector<int32_t> &q = one ? q13 : q2;
        const std::vector<float> &sv = one ? s13 : s2;
        CK(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(ds, sv.data(), sv.size() * 4, cudaMemcpyHostToDevice));
        const int64_t n_out = one ? I : H, K = one ? H : I, nrb = one ? nrb1 : nrb2, KB = one ? KB1 : KB2;
        const int64_t G = K / g, rows = one ? 2 * I : H, rows_pad = nrb * 64;
        for (int e = 0; e < E; e++) {
            const int64_t n1 = nrb * KB * 256, n3 = std::max(rows_pad * G, rows_pad);
            sm90_pack_kernel<<<(unsigned)((n1 + 255) / 256), 256>>>(
                dq + (size_t)e * (one ? q13e : q2e), n_out, one, K, rows_pad, 1, blk / 8,
                (uint2 *)((one ? w13 : w2) + (size_t)e * nrb * KB * blk));
            sm90_pack_scales_kernel<<<(unsigned)((n3 + 255) / 256), 256>>>(
                ds + (size_t)e * rows * G, 2, n_out, one, G, rows_pad, nullptr,
                (one ? ws13 : ws2) + (size_t)e * rows_pad * G, (one ? wc13 : wc2) + (size_t)e * rows_pad);
        }
        CK(cudaDeviceSynchronize());
    }
    CK(cudaFree(dq));
    CK(cudaFree(ds));

    /* 16 id sets over disjoint experts (cold L2 across launches), weights renormalised */
    const int NSET = 16;
    std::vector<int32_t> ids((size_t)NSET * k);
    std::vector<float> wts((size_t)NSET * k);
    for (int s = 0; s < NSET; s++) {
        float sum = 0.0f;
        for (int j = 0; j < k; j++) {
            ids[s * k + j] = (int32_t)(((int64_t)s * k + j * 7 + (j ? 3 : 0)) % E);
            for (int q = 0; q < j; q++)
                if (ids[s * k + q] == ids[s * k + j]) ids[s * k + j] = (ids[s * k + j] + 1) % E;
            wts[s * k + j] = unif(0.1f, 1.0f);
            sum += wts[s * k + j];
        }
        for (int j = 0; j < k; j++) wts[s * k + j] /= sum;
    }
    fd_args p = {};
    p.w13 = w13, p.w2 = w2, p.ws13 = ws13, p.ws2 = ws2, p.wc13 = wc13, p.wc2 = wc2;
    p.nrb1 = nrb1, p.nrb2 = nrb2, p.H = H, p.I = I, p.g = g, p.k = k, p.blk = blk;
    float *dx, *dwts, *dy, *dout, *dobuf;
    int32_t *dids, *cnt;
    uint32_t *drm;
    CK(cudaMalloc(&dx, H * 4));
    CK(cudaMalloc(&dids, ids.size() * 4));
    CK(cudaMalloc(&dwts, wts.size() * 4));
    CK(cudaMalloc(&dy, (size_t)k * I * 4));
    CK(cudaMalloc(&dobuf, (size_t)k * H * 4));
    CK(cudaMalloc(&dout, H * 4));
    CK(cudaMalloc(&drm, FD_MAXK * 4));
    const int64_t ncnt = FD_MAXK + nrb2 * 4 + 1;
    CK(cudaMalloc(&cnt, ncnt * 4));
    CK(cudaMemset(cnt, 0, ncnt * 4));
    CK(cudaMemset(drm, 0, FD_MAXK * 4));
    CK(cudaMemcpy(dx, x.data(), H * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dwts, wts.data(), wts.size() * 4, cudaMemcpyHostToDevice));
    p.x = dx, p.y = dy, p.rowmax = drm, p.o = dobuf, p.out = dout;
    p.done1 = cnt, p.done2 = cnt + FD_MAXK, p.fin = cnt + FD_MAXK + nrb2 * 4;

    auto kern = g == 128 ? (most <= 4 ? fused_decode_kernel<4, 4> : fused_decode_kernel<4, 8>)
                         : (most <= 4 ? fused_decode_kernel<2, 4> : fused_decode_kernel<2, 8>);
    int dev = 0, sms = 0, per_sm = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 128, (size_t)H));
    cudaFuncAttributes fa;
    CK(cudaFuncGetAttributes(&fa, kern));
    const int grid = sms * per_sm;
    printf("grid %d (%d SMs x %d), %d registers, items %lld + %lld\n", grid, sms, per_sm, fa.numRegs,
           (long long)(k * nrb1 * 4), (long long)(k * nrb2 * 4));

    /* correctness: three sets, out poisoned before each launch */
    double worst = 0.0;
    std::vector<float> got(H);
    std::vector<std::vector<float>> refs(3);
    auto check_out = [&](int set) { /* rel-L2 of out against set's reference (computed once) */
        CK(cudaMemcpy(got.data(), dout, H * 4, cudaMemcpyDeviceToHost));
        if (refs[set].empty()) reference(H, I, g, k, x, &ids[set * k], &wts[set * k], q13, s13, q2, s2, refs[set]);
        double num = 0.0, den = 0.0;
        for (int64_t h = 0; h < H; h++) {
            num += ((double)got[h] - refs[set][h]) * ((double)got[h] - refs[set][h]);
            den += (double)refs[set][h] * refs[set][h];
        }
        return sqrt(num / (den > 0 ? den : 1.0));
    };
    for (int s = 0; v1 && s < 3; s++) {
        p.ids = dids + s * k, p.wts = dwts + s * k;
        CK(cudaMemset(dout, 0xff, H * 4));
        kern<<<grid, 128, (size_t)H>>>(p);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        const double rel = check_out(s);
        printf("v1 set %d: rel-L2 %.3e (out[0] %.6g ref %.6g)\n", s, rel, got[0], refs[s][0]);
        if (!(rel <= worst)) worst = rel;
    }
    int32_t left[2];
    CK(cudaMemcpy(left, cnt, 8, cudaMemcpyDeviceToHost));
    if (v1)
        printf("v1 worst rel-L2 %.3e %s; counters after: %d %d\n", worst, worst <= 1e-3 ? "ok" : "FAIL", left[0],
               left[1]);
    else printf("v1: more than 32 groups of K; not run\n");

    /* time: graphs of NSET launches (cold: a set each) and of NSET launches of set 0 (warm) */
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    float per_ms[2] = {0, 0};
    const bool timing = !getenv("LAB_CHECK_ONLY");
    for (int warm = 0; v1 && timing && warm < 2; warm++) {
        cudaGraphExec_t ex = capture_graph(st, NSET, [&](int set, cudaStream_t str) {
            p.ids = dids + (warm ? 0 : set) * k, p.wts = dwts + (warm ? 0 : set) * k;
            kern<<<grid, 128, (size_t)H, str>>>(p);
            return cudaGetLastError();
        });
        if (!ex) {
            fprintf(stderr, "v1: no graph could be made\n");
            return 1;
        }
        per_ms[warm] = graph_ms(ex, st, NSET);
    }
    /* ---- versions 2 and 3: the items placed on the SMs (bytes balanced, larger first) ---- */
    const int64_t ib1 = fb_item_bytes(KB1, blk, G1), ib2 = fb_item_bytes(KB2, blk, G2);
    const int ch1 = (int)((KB1 + FB_CHUNK - 1) / FB_CHUNK) + 1, ch2 = (int)((KB2 + FB_CHUNK - 1) / FB_CHUNK) + 1;
    std::vector<std::vector<int32_t>> per(sms);
    std::vector<int64_t> load(sms, 0);
    std::vector<int> chunks(sms, 0);
    auto place = [&](int gemm, int j, int64_t rb) { /* to the least-loaded block */
        int best = 0;
        for (int b = 1; b < sms; b++)
            if (load[b] < load[best]) best = b;
        per[best].push_back(gemm << 24 | j << 16 | (int)rb);
        load[best] += gemm ? ib2 : ib1;
        chunks[best] += gemm ? ch2 : ch1;
    };
    for (int pass = 0; pass < 2; pass++) { /* the larger items first */
        const int gemm = (pass == 0) == (ib2 > ib1);
        for (int j = 0; j < k; j++)
            for (int64_t rb = 0; rb < (gemm ? nrb2 : nrb1); rb++) place(gemm, j, rb);
    }
    std::vector<int32_t> sched(1, 0), items;
    int64_t most_bytes = 0;
    int most_ch = 0;
    for (int b = 0; b < sms; b++) { /* in a block: GEMM1's items first, then GEMM2's by pair */
        std::stable_sort(per[b].begin(), per[b].end(), [](int32_t u, int32_t v) { return (u >> 16) < (v >> 16); });
        items.insert(items.end(), per[b].begin(), per[b].end());
        sched.push_back((int32_t)items.size());
        most_bytes = std::max(most_bytes, load[b]);
        most_ch = std::max(most_ch, chunks[b]);
    }
    int optin = 0;
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    int32_t *dsched, *ditems;
    unsigned *dbar;
    CK(cudaMalloc(&dsched, sched.size() * 4));
    CK(cudaMalloc(&ditems, items.size() * 4));
    CK(cudaMalloc(&dbar, 8));
    CK(cudaMemset(dbar, 0, 8));
    CK(cudaMemcpy(dsched, sched.data(), sched.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(ditems, items.data(), items.size() * 4, cudaMemcpyHostToDevice));
    fb_args fa2 = {};
    fa2.f = p;
    fa2.sched = dsched, fa2.items = ditems, fa2.bar_count = dbar, fa2.bar_gen = dbar + 1;

    /* One version: its checks (out, y and o poisoned; three id sets against the reference; the
     * row maxima left zero), then graph µs cold and warm into ms. False when it does not fit. */
    auto run_version = [&](const char *name, void (*kern)(fb_args), int threads, fb_args fa, size_t smem,
                           double *worst_v, float *ms, bool check = true) -> bool {
        cudaFuncAttributes attr;
        CK(cudaFuncGetAttributes(&attr, kern));
        if (smem + attr.sharedSizeBytes > (size_t)optin) {
            printf("%s: %.1f KB of shared memory a block does not fit (%d KB); not run\n", name, smem / 1024.0,
                   optin / 1024);
            return false;
        }
        CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        printf("%s: %d blocks x %d threads, %.1f KB shared a block, %d registers\n", name, sms, threads,
               (smem + attr.sharedSizeBytes) / 1024.0, attr.numRegs);
        auto launch = [&](int set, bool coop, cudaStream_t str) {
            fa.f.ids = dids + set * k, fa.f.wts = dwts + set * k;
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = dim3(sms), cfg.blockDim = dim3(threads), cfg.dynamicSmemBytes = smem;
            cfg.stream = str;
            cudaLaunchAttribute at[1];
            at[0].id = cudaLaunchAttributeCooperative;
            at[0].val.cooperative = 1;
            cfg.attrs = at, cfg.numAttrs = coop ? 1 : 0;
            return cudaLaunchKernelEx(&cfg, kern, fa);
        };
        *worst_v = 0.0;
        for (int set = 0; set < (check ? 3 : 0); set++) { /* out, y and o poisoned before each launch */
            CK(cudaMemset(dout, 0xff, H * 4));
            CK(cudaMemset(dy, 0xff, (size_t)k * I * 4));
            CK(cudaMemset(dobuf, 0xff, (size_t)k * H * 4));
            CK(launch(set, true, 0));
            CK(cudaDeviceSynchronize());
            const double rel = check_out(set);
            printf("%s set %d: rel-L2 %.3e\n", name, set, rel);
            if (!(rel <= *worst_v)) *worst_v = rel;
        }
        uint32_t rm[FD_MAXK];
        CK(cudaMemcpy(rm, drm, sizeof rm, cudaMemcpyDeviceToHost));
        int dirty = 0;
        for (int j = 0; j < k; j++) dirty += rm[j] != 0u;
        if (check) {
            printf("%s worst rel-L2 %.3e %s; row maxima left non-zero: %d\n", name, *worst_v,
                   *worst_v <= 1e-3 ? "ok" : "FAIL", dirty);
            if (dirty) *worst_v = 1.0;
        }
        for (int warm = 0; timing && warm < 2; warm++) {
            cudaGraphExec_t ex = nullptr;
            for (int coop = 1; coop >= 0 && !ex; coop--) { /* a cooperative node where capture takes one */
                ex = capture_graph(st, NSET,
                                   [&](int set, cudaStream_t str) { return launch(warm ? 0 : set, coop, str); });
                if (ex && !warm) printf("%s graph: %s launches\n", name, coop ? "cooperative" : "plain");
            }
            if (!ex) {
                printf("%s: no graph could be made\n", name);
                break;
            }
            ms[warm] = graph_ms(ex, st, NSET);
        }
        return true;
    };
    float v2_ms[2] = {0, 0}, v3_ms[2] = {0, 0}, v3s_ms[2] = {0, 0};
    double worst2 = 0.0, worst3 = 0.0;
    bool v2_ran = false, v3_ran = false;
    { /* version 2: every item's bytes at once */
        fb_args fa = fa2;
        fa.codes_at = FB_BARS * 8, fa.data_at = (int)((fa.codes_at + H + I + 127) / 128 * 128);
        if (most_ch > FB_BARS)
            printf("v2: %d copies a block, more than its %d barriers; not run\n", most_ch, FB_BARS);
        else
            v2_ran = run_version("v2", g == 128 ? fused_bulk_kernel<4> : fused_bulk_kernel<2>, FB_THREADS, fa,
                                 (size_t)(fa.data_at + most_bytes), &worst2, v2_ms);
    }
    { /* version 3: a ring of one-group stages, as many as fit */
        auto kern3 = g == 128 ? fused_ring_kernel<4> : fused_ring_kernel<2>;
        cudaFuncAttributes attr;
        CK(cudaFuncGetAttributes(&attr, kern3));
        fb_args fa = fa2;
        fa.stage_bytes = (g / 64) * blk + 256;
        const int64_t fixed = H + I + 128, room = optin - (int64_t)attr.sharedSizeBytes - fixed;
        fa.stages = (int)std::min<int64_t>(64, room / (fa.stage_bytes + 16)) & ~3; /* a ring a K quarter */
        fa.codes_at = 16 * fa.stages;
        fa.data_at = (int)((fa.codes_at + H + I + 127) / 128 * 128);
        v3_ran = fa.stages >= 4 && run_version("v3", kern3, FR_THREADS, fa,
                                              (size_t)fa.data_at + (size_t)fa.stages * fa.stage_bytes, &worst3, v3_ms);
        if (v3_ran) printf("v3: a ring of %d stages of %d bytes\n", fa.stages, fa.stage_bytes);
        double unused;
        if (v3_ran) /* the ring's stream alone, nothing multiplied: its speed of light */
            run_version("v3-stream", g == 128 ? fused_ring_kernel<4, false> : fused_ring_kernel<2, false>,
                        FR_THREADS, fa, (size_t)fa.data_at + (size_t)fa.stages * fa.stage_bytes, &unused, v3s_ms,
                        false);
    }
    const bool all_ok = worst <= 1e-3 && worst2 <= 1e-3 && worst3 <= 1e-3;
    if (!timing) return all_ok ? 0 : 1;
    /* the floor: the k experts' weight bytes at the measured copy rate */
    char *c0, *c1;
    const size_t cb = (size_t)1 << 30;
    CK(cudaMalloc(&c0, cb));
    CK(cudaMalloc(&c1, cb));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice, st));
    CK(cudaEventRecord(a, st));
    for (int i = 0; i < 5; i++) CK(cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float cms = 0;
    CK(cudaEventElapsedTime(&cms, a, b));
    const double copy_tbs = 2.0 * cb * 5 / (cms * 1e-3) / 1e12;
    const double bytes = (double)k * ((double)nrb1 * KB1 * blk + (double)nrb2 * KB2 * blk +
                                      4.0 * (nrb1 * 64 * G1 + nrb2 * 64 * G2));
    const double floor_us = bytes / (copy_tbs * 1e12) * 1e6;
    printf("floor %.2f us (%.1f MB at %.2f TB/s copy)\n", floor_us, bytes / 1e6, copy_tbs);
    if (v1)
        printf("v1: cold %.2f us, warm %.2f us per layer: cold %.2fx floor\n", per_ms[0] * 1e3, per_ms[1] * 1e3,
               per_ms[0] * 1e3 / floor_us);
    if (v2_ran)
        printf("v2: cold %.2f us, warm %.2f us per layer: cold %.2fx floor\n", v2_ms[0] * 1e3, v2_ms[1] * 1e3,
               v2_ms[0] * 1e3 / floor_us);
    if (v3_ran)
        printf("v3: cold %.2f us, warm %.2f us per layer: cold %.2fx floor; the stream alone cold %.2f us\n",
               v3_ms[0] * 1e3, v3_ms[1] * 1e3, v3_ms[0] * 1e3 / floor_us, v3s_ms[0] * 1e3);
    return all_ok ? 0 : 1;
}
