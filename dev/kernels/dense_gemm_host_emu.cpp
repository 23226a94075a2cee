/*
 * dense_gemm_host_emu.cpp — runs the device code of `cuda_dense` (src/cuda/kernels/dense_gemm.cuh)
 * on the host, to check its index arithmetic where there is no GPU: each block runs as 256
 * std::threads meeting at a std::barrier for __syncthreads (blocks one after another, so
 * __shared__ arrays can be statics), the _rn intrinsics as plain IEEE operations. It builds a
 * `cpu` layer with an unquantised shared expert, runs the shared expert alone (every routed id
 * -1, f32 I/O: the output is the expert's f32 row) and compares it bit for bit with the
 * emulated kernels' rows, which may start at an offset (rows of another expert must stay
 * untouched). Expected: every case bit-identical (the kernel does the `cpu` dense path's
 * operations in its order; glibc's expf on both sides here). A mutation of the kernel's K loop
 * makes every case differ.
 *
 *   make BUILD=build-cuda all
 *   g++ -std=c++20 -O1 -ffp-contract=off -Iinclude -Isrc dev/kernels/dense_gemm_host_emu.cpp \
 *     build-cuda/libw4a8moe.a -l:libjansson.a -lm -ldl -pthread \
 *     -L/usr/local/cuda/lib64 -lcudart_static -lrt -o build-cuda/dense_gemm_host_emu
 *   build-cuda/dense_gemm_host_emu     # (drop the CUDA libraries for a CPU-only build)
 */
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <functional>

struct emu_dim3 { unsigned x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx;
static std::barrier<> *g_bar;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
static inline void __syncthreads() { g_bar->arrive_and_wait(); }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
#include "cuda/kernels/dense_gemm.cuh"

template <bool B, bool G>
static void launch(dense_gemm_args a, unsigned gx, unsigned gy, unsigned gz)
{
    std::barrier<> bar(DENSE_THREADS);
    g_bar = &bar;
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                std::vector<std::thread> th;
                for (unsigned t = 0; t < DENSE_THREADS; t++)
                    th.emplace_back([=] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {x, y, z};
                        dense_gemm_kernel<B, G>(a);
                    });
                for (auto &t : th) t.join();
            }
}

extern "C" {
#include "w4a8moe.h"
#include "common/quant.h"
#include "common/synth.h"
}

static void put(void *p, w4a8moe_dtype dt, int64_t i, float v)
{
    if (dt == W4A8MOE_DTYPE_BF16) ((uint16_t *)p)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == W4A8MOE_DTYPE_F16) ((uint16_t *)p)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)p)[i] = v;
}
static size_t dsz(w4a8moe_dtype d) { return d == W4A8MOE_DTYPE_F32 ? 4 : 2; }
static float getf(const void *p, w4a8moe_dtype dt, int64_t i)
{
    if (dt == W4A8MOE_DTYPE_BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == W4A8MOE_DTYPE_F16) return w4a8moe_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static int run_case(int64_t H, int64_t Is, int64_t T, w4a8moe_dtype wdt, w4a8moe_dtype io, int act, int eoff)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = H; d.inter = 64; d.num_experts = 4; d.top_k = 2; d.group_size = 32;
    d.max_tokens = T; d.io_dtype = io; d.activation = (w4a8moe_activation)act;
    w4a8moe_synth_weights sw;
    w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, 42);
    w4a8moe_synth_rng r = {1234 + (uint64_t)H};
    std::vector<char> g(Is * H * dsz(wdt)), u(Is * H * dsz(wdt)), dn(H * Is * dsz(wdt));
    for (int64_t i = 0; i < Is * H; i++) put(g.data(), wdt, i, w4a8moe_synth_uniform(&r, -2.f, 2.f) / sqrtf(H));
    for (int64_t i = 0; i < Is * H; i++) put(u.data(), wdt, i, w4a8moe_synth_uniform(&r, -2.f, 2.f) / sqrtf(H));
    for (int64_t i = 0; i < Is * H; i++) put(dn.data(), wdt, i, w4a8moe_synth_uniform(&r, -2.f, 2.f) / sqrtf(Is));
    std::vector<char> x(T * H * dsz(io));
    for (int64_t i = 0; i < T * H; i++) put(x.data(), io, i, w4a8moe_synth_uniform(&r, -1.f, 1.f));
    w4a8moe_shared_expert se;
    memset(&se, 0, sizeof se);
    se.inter = Is; se.weight_scheme = W4A8MOE_WEIGHT_BF16; se.act_scheme = W4A8MOE_ACT_BF16;
    se.gate = {g.data(), wdt, Is, H}; se.up = {u.data(), wdt, Is, H}; se.down = {dn.data(), wdt, H, Is};
    w4a8moe_weights w = sw.weights;
    w.shared = &se;
    w4a8moe_layer_options o;
    memset(&o, 0, sizeof o);
    o.backend = "cpu";
    w4a8moe_layer *L = nullptr;
    if (w4a8moe_layer_create(&d, &w, &o, &L)) { printf("create: %s\n", w4a8moe_last_error()); return 1; }
    std::vector<int32_t> ids(T * 2, -1);
    std::vector<float> wts(T * 2, 0.5f), out(T * H);
    w4a8moe_routing_input ri;
    memset(&ri, 0, sizeof ri);
    ri.topk_ids = ids.data(); ri.topk_weights = wts.data();
    if (w4a8moe_layer_forward(L, T, x.data(), &ri, io == W4A8MOE_DTYPE_F32 ? (void *)out.data() : nullptr, nullptr)) {
        printf("forward: %s\n", w4a8moe_layer_error(L)); return 1;
    }
    // the emulated backend: weights in its storage (bf16 kept, else f32), rows at offset eoff
    bool b16 = wdt == W4A8MOE_DTYPE_BF16;
    size_t es = b16 ? 2 : 4;
    std::vector<char> w13(2 * Is * H * es), w2(H * Is * es);
    for (int64_t i = 0; i < Is * H; i++) {
        if (b16) {
            memcpy(&w13[i * 2], &g[i * 2], 2); memcpy(&w13[(Is * H + i) * 2], &u[i * 2], 2); memcpy(&w2[i * 2], &dn[i * 2], 2);
        } else {
            float a = getf(g.data(), wdt, i), b = getf(u.data(), wdt, i), c = getf(dn.data(), wdt, i);
            memcpy(&w13[i * 4], &a, 4); memcpy(&w13[(Is * H + i) * 4], &b, 4); memcpy(&w2[i * 4], &c, 4);
        }
    }
    int64_t R = T + eoff;  // rows [eoff, eoff + T) belong to expert 0 of nl = 1 ... emulate offsets
    std::vector<int32_t> offs = {(int32_t)eoff, (int32_t)(eoff + T)}, row_token(R, 0);
    for (int64_t t = 0; t < T; t++) row_token[eoff + t] = (int32_t)t;
    std::vector<float> mid(R * Is, -7.f), y(R * H, -7.f);
    dense_gemm_args a1 = {w13.data(), Is, H, offs.data(), x.data(), (int)io, row_token.data(), nullptr, mid.data(), act};
    dense_gemm_args a2 = {w2.data(), H, Is, offs.data(), nullptr, 0, nullptr, mid.data(), y.data(), 0};
    unsigned gx = (unsigned)((R + 31) / 32);
    if (b16) {
        launch<true, true>(a1, gx, (unsigned)((Is + 15) / 16), 1);
        launch<true, false>(a2, gx, (unsigned)((H + 31) / 32), 1);
    } else {
        launch<false, true>(a1, gx, (unsigned)((Is + 15) / 16), 1);
        launch<false, false>(a2, gx, (unsigned)((H + 31) / 32), 1);
    }
    int64_t diff = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            float want = out[t * H + h], got = y[(eoff + t) * H + h];
            if (memcmp(&want, &got, 4)) { if (diff < 3) printf("  t %ld h %ld: cpu %a emu %a\n", (long)t, (long)h, want, got); diff++; }
        }
    // rows outside the expert untouched
    int64_t touched = 0;
    for (int64_t i = 0; i < eoff * H; i++) touched += y[i] != -7.f;
    printf("H=%ld Is=%ld T=%ld wdt=%d io=%d act=%d eoff=%ld: %ld of %ld differ from cpu, %ld foreign rows touched\n",
           (long)H, (long)Is, (long)T, (int)wdt, (int)io, act, (long)eoff, (long)diff, (long)(T * H), (long)touched);
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
    return diff != 0 || touched != 0;
}

int main()
{
    int bad = 0;
    bad += run_case(96, 160, 37, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_F32, 0, 0);
    bad += run_case(416, 44, 33, W4A8MOE_DTYPE_F32, W4A8MOE_DTYPE_F32, 0, 5);
    bad += run_case(320, 200, 70, W4A8MOE_DTYPE_F16, W4A8MOE_DTYPE_F32, 1, 3);
    bad += run_case(288, 129, 1, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_F32, 0, 40);
    printf("%s\n", bad ? "MISMATCH" : "all bit-identical to cpu");
    return bad;
}
