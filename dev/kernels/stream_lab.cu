/*
 * stream_lab.cu — how fast can a kernel read a decode layer's weights from HBM, by each way of
 * reading them (issue 8)? Nothing is multiplied: every variant only reads B bytes (the k experts'
 * weights of one token) and folds them into a checksum, so its time is the speed of light of that
 * way of streaming.
 *
 * Why: the one-launch decode (kernels/sm90_fused_decode.cuh) and its lab's version 3 read at
 * ~2.2 TB/s on the H100 even with nothing multiplied ("the stream alone", docs/PERFORMANCE.md,
 * round 39), as do the staged GEMMs (1.8-2.2 TB/s); the card copies at 3.0. Is the ring of bulk
 * copies (stage size, producer lanes, blocks an SM) the limit, or any one-pass read of B bytes
 * at this size with a launch around it?
 *
 * Variants (each a CUDA graph of launches on disjoint buffers, at least 4 and 200 MB in all, so L2
 * is cold; µs a launch; TB/s on the bytes the variant read, B rounded down to its own unit):
 *   ldg  bps u   sms * bps blocks of 512 threads, each block a contiguous slice, u 16-byte
 *                streaming loads (ld.global.cs) in flight a thread
 *   bulk bps l s sms * bps blocks: l producer lanes, lane j streaming its part of the block's slice
 *                through ring j of s-byte stages (ring room 192 KB / bps, shared by the lanes);
 *                one consumer warp a ring waits for each stage, reads 16 bytes a lane of it and
 *                releases it (the fused kernel's ring, without its sums)
 *   tile c d [pf] the staged small-batch kernel's shape (sm90_mma_decode.cuh): bytes / c short
 *                blocks of 4 warps, warp w reading quarter w of the block's c bytes with d 8-byte
 *                loads a lane in flight (d = 8: its two groups of g = 128 in flight); pf: thread 0
 *                first asks L2 for the block's whole c bytes (cp.async.bulk.prefetch.L2), so the
 *                block's bytes are in flight from its start whatever d is
 *   phased bps u [pf2]  the one-launch layer's shape (sm90_fused_decode.cuh) with ldg's loads: a
 *                block of 512 threads an SM reads its slice of the first 2/3 of the bytes (GEMM1's
 *                share), waits at a grid barrier, reads its slice of the last 1/3 (GEMM2's), waits
 *                at a second barrier; pf2: thread 0 first asks L2 for its phase-2 slice
 *                (cp.async.bulk.prefetch.L2), as the ring streams GEMM2's weights past the barrier
 *   barriers     the same kernel reading nothing: a launch and two grid barriers
 *   empty        a launch that does nothing: what every row's µs include
 * Build: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a dev/kernels/stream_lab.cu \
 *            -o build-lab/stream_lab
 * Run:   build-lab/stream_lab [MB ...]   (default 198 and 21: Mixtral's and qwen3-30b-a3b's T = 1)
 */
#include "../../src/cuda/kernels/sm90_ptx.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define MIN_SETS 4
#define MIN_SET_BYTES 200000000LL /* all buffers together: 4x the H100's / H200's L2 */
#define LDG_THREADS 512
#define RING_ROOM (192 * 1024)
#define MAX_LANES 8

/* Folds a value into the sink only when it is impossible, so the loads cannot be dropped. */
__device__ __forceinline__ void sink_if(uint32_t x, uint32_t *sink)
{
    if (x == 0x9e3779b9u) *sink = x;
}

/* A block's per uint4 at p folded into x, U 16-byte streaming loads a thread in flight. */
template <int U>
__device__ __forceinline__ void read_slice(const uint4 *p, int64_t per, uint32_t &x)
{
    for (int64_t i = threadIdx.x; i < per; i += (int64_t)U * LDG_THREADS) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t j = i + (int64_t)u * LDG_THREADS;
            v[u] = j < per ? __ldcs(p + j) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
}

template <int U>
static __global__ void __launch_bounds__(LDG_THREADS) ldg_kernel(const uint4 *src, int64_t per_block, uint32_t *sink)
{
    uint32_t x = 0;
    read_slice<U>(src + blockIdx.x * per_block, per_block, x);
    sink_if(x, sink);
}

/* A grid-wide barrier of co-resident blocks (one an SM here), reusable across barriers and
 * launches: bar[0] counts arrivals, bar[1] is the generation the last arrival advances. */
__device__ __forceinline__ void grid_barrier(unsigned *bar)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned *gen = bar + 1;
        const unsigned g = *gen;
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            bar[0] = 0;
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (*gen == g) {}
        }
    }
    __syncthreads();
}

/* Reads per1 uint4 of the first part and per2 of the second, a block's slices, with a grid
 * barrier after each (the one-launch layer's GEMM1, requantisation, GEMM2 and combine steps). */
template <int U, bool PF2>
static __global__ void __launch_bounds__(LDG_THREADS) phased_kernel(const uint4 *src, int64_t per1, int64_t per2,
                                                                    unsigned *bar, uint32_t *sink)
{
    const uint4 *p1 = src + blockIdx.x * per1, *p2 = src + gridDim.x * per1 + blockIdx.x * per2;
#if SM90_ENABLED
    if (PF2 && threadIdx.x == 0 && per2 > 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p2), "r"((uint32_t)(per2 * 16)) : "memory");
#endif
    uint32_t x = 0;
    read_slice<U>(p1, per1, x);
    grid_barrier(bar);
    read_slice<U>(p2, per2, x);
    grid_barrier(bar);
    sink_if(x, sink);
}

static __global__ void empty_kernel(uint32_t *sink) { sink_if(threadIdx.x + 1, sink); }

/* Block b reads bytes [b c, (b + 1) c), warp w the w-th quarter, D uint2 a lane in flight. */
template <int D, bool PF>
static __global__ void __launch_bounds__(128) tile_kernel(const char *src, int c, uint32_t *sink)
{
    const char *blk = src + (int64_t)blockIdx.x * c;
#if SM90_ENABLED
    if (PF && threadIdx.x == 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(blk), "r"((uint32_t)c) : "memory");
#endif
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q = c / 4;
    const uint2 *p = (const uint2 *)(blk + warp * q) + lane;
    uint32_t x = 0;
    for (int i = 0; i < q / 8; i += 32 * D) {
        uint2 v[D];
#pragma unroll
        for (int u = 0; u < D; u++) v[u] = __ldg(p + i + u * 32);
#pragma unroll
        for (int u = 0; u < D; u++) x ^= v[u].x ^ v[u].y;
    }
    sink_if(x, sink);
}

/* Block b streams bytes [b per_block, (b + 1) per_block); lane j the j-th of its l parts. */
static __global__ void bulk_kernel(const char *src, int64_t per_block, int lanes, int stage, int per_ring,
                                   uint32_t *sink)
{
#if SM90_ENABLED
    extern __shared__ __align__(128) char sm[];
    uint64_t *full = (uint64_t *)sm, *empty = full + MAX_LANES * 64;
    char *ring = sm + 2 * MAX_LANES * 64 * 8;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (threadIdx.x == 0) {
        for (int s = 0; s < lanes * per_ring; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&empty[s], 1);
        }
        sm90_bar_init_fence();
    }
    __syncthreads();
    const int64_t part = per_block / lanes, n = part / stage;
    if (warp == lanes) { /* the producer warp */
        if (lane < lanes) {
            const char *p = src + blockIdx.x * per_block + lane * part;
            int st = 0;
            uint32_t ph = 0;
            for (int64_t c = 0; c < n; c++) {
                const int x = lane * per_ring + st;
                sm90_bar_wait(&empty[x], ph ^ 1u);
                sm90_bar_expect_tx(&full[x], (uint32_t)stage);
                sm90_bulk_load(ring + (int64_t)x * stage, p + c * stage, (uint32_t)stage, &full[x]);
                if (++st == per_ring) st = 0, ph ^= 1u;
            }
        }
        return;
    }
    uint32_t x = 0, ph = 0; /* consumer warp `warp`: ring `warp` */
    int st = 0;
    for (int64_t c = 0; c < n; c++) {
        const int s = warp * per_ring + st;
        sm90_bar_wait(&full[s], ph);
        const uint4 v = ((const uint4 *)(ring + (int64_t)s * stage))[lane];
        x ^= v.x ^ v.y ^ v.z ^ v.w;
        __syncwarp();
        if (lane == 0) sm90_bar_arrive(&empty[s]);
        if (++st == per_ring) st = 0, ph ^= 1u;
    }
    sink_if(x, sink);
#endif
}

/* µs a launch: a graph of nset launches, one a buffer, replayed REPS times after one warm-up. */
template <typename F>
static double time_us(cudaStream_t st, int nset, F launch)
{
    enum { REPS = 10 };
    cudaGraph_t g;
    cudaGraphExec_t ex;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int s = 0; s < nset; s++) launch(s, st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ex, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(ex, st));
    CK(cudaEventRecord(a, st));
    for (int r = 0; r < REPS; r++) CK(cudaGraphLaunch(ex, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaGraphExecDestroy(ex));
    CK(cudaGraphDestroy(g));
    return ms * 1e3 / (REPS * nset);
}

int main(int argc, char **argv)
{
    int sms = 0, optin = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    uint32_t *sink;
    CK(cudaMalloc(&sink, 4));
    const int nsizes = argc > 1 ? argc - 1 : 2;
    for (int si = 0; si < nsizes; si++) {
        const double mb = argc > 1 ? atof(argv[1 + si]) : (si ? 21.0 : 198.0);
        const int64_t bytes = ((int64_t)(mb * 1e6) + 4095) / 4096 * 4096;
        const int nset = (int)std::max<int64_t>(MIN_SETS, (MIN_SET_BYTES + bytes - 1) / bytes);
        char *buf;
        CK(cudaMalloc(&buf, bytes * nset));
        CK(cudaMemset(buf, 0x5a, bytes * nset));
        printf("== %.1f MB a launch (%d SMs, %d buffers)\n", bytes / 1e6, sms, nset);
        /* read: the bytes this variant's launch read (B rounded down to its unit) */
        auto report = [&](const char *what, double us, int64_t read) {
            printf("%-22s %8.2f us  %5.2f TB/s  (%.1f MB)\n", what, us, read / (us * 1e-6) / 1e12, read / 1e6);
        };
        const int bpss[3] = {1, 2, 4};
        for (int bi = 0; bi < 3; bi++) {
            const int bps = bpss[bi], grid = sms * bps;
            const int64_t per = bytes / 16 / grid;
            char name[64];
            snprintf(name, sizeof name, "ldg bps %d u 4", bps);
            report(name, time_us(st, nset, [&](int s, cudaStream_t str) {
                       ldg_kernel<4><<<grid, LDG_THREADS, 0, str>>>((const uint4 *)(buf + s * bytes), per, sink);
                   }), per * 16 * grid);
            snprintf(name, sizeof name, "ldg bps %d u 8", bps);
            report(name, time_us(st, nset, [&](int s, cudaStream_t str) {
                       ldg_kernel<8><<<grid, LDG_THREADS, 0, str>>>((const uint4 *)(buf + s * bytes), per, sink);
                   }), per * 16 * grid);
        }
        const int lanes_list[3] = {1, 4, 8}, stage_list[4] = {4096, 8192, 16384, 32768};
        for (int bi = 0; bi < 2; bi++) {
            const int bps = bpss[bi], grid = sms * bps;
            for (int li = 0; li < 3; li++)
                for (int sti = 0; sti < 4; sti++) {
                    const int lanes = lanes_list[li], stage = stage_list[sti];
                    const int64_t per = bytes / grid / ((int64_t)lanes * stage) * lanes * stage;
                    if (per == 0) continue;
                    const int per_ring = RING_ROOM / bps / lanes / stage;
                    if (per_ring < 2 || per_ring > 64) continue;
                    const size_t smem = 2 * MAX_LANES * 64 * 8 + (size_t)lanes * per_ring * stage;
                    if (smem > (size_t)optin) continue;
                    CK(cudaFuncSetAttribute(bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
                    char name[64];
                    snprintf(name, sizeof name, "bulk bps %d l %d s %dK", bps, lanes, stage / 1024);
                    report(name, time_us(st, nset, [&](int s, cudaStream_t str) {
                               bulk_kernel<<<grid, 32 * (lanes + 1), smem, str>>>(buf + s * bytes, per, lanes, stage,
                                                                                  per_ring, sink);
                           }), per * grid);
                }
        }
        const int tile_bytes[3] = {16384, 32768, 131072};
        for (int ci = 0; ci < 3; ci++) {
            const int c = tile_bytes[ci], grid = (int)(bytes / c);
            char name[64];
#define W4_TILE(D, PF)                                                                                  \
    snprintf(name, sizeof name, "tile %dK d %d%s", c / 1024, D, PF ? " pf" : "");                       \
    report(name, time_us(st, nset, [&](int s, cudaStream_t str) {                                       \
               tile_kernel<D, PF><<<grid, 128, 0, str>>>(buf + s * bytes, c, sink);                     \
           }), (int64_t)grid * c);
            W4_TILE(4, false)
            W4_TILE(8, false)
            W4_TILE(4, true)
            W4_TILE(8, true)
#undef W4_TILE
        }
        { /* the one-launch layer's two grid barriers (one block an SM: co-resident), and a launch alone */
            unsigned *bar;
            CK(cudaMalloc(&bar, 8));
            CK(cudaMemset(bar, 0, 8));
            const int grid = sms;
            const int64_t per1 = bytes * 2 / 3 / 16 / grid, per2 = (bytes / 16 - per1 * grid) / grid;
            report("phased bps 1 u 8", time_us(st, nset, [&](int s, cudaStream_t str) {
                       phased_kernel<8, false><<<grid, LDG_THREADS, 0, str>>>((const uint4 *)(buf + s * bytes), per1,
                                                                              per2, bar, sink);
                   }), (per1 + per2) * 16 * grid);
            report("phased bps 1 u 8 pf2", time_us(st, nset, [&](int s, cudaStream_t str) {
                       phased_kernel<8, true><<<grid, LDG_THREADS, 0, str>>>((const uint4 *)(buf + s * bytes), per1,
                                                                             per2, bar, sink);
                   }), (per1 + per2) * 16 * grid);
            report("barriers", time_us(st, nset, [&](int s, cudaStream_t str) {
                       phased_kernel<8, false><<<grid, LDG_THREADS, 0, str>>>((const uint4 *)buf, 0, 0, bar, sink);
                   }), 0);
            report("empty", time_us(st, nset, [&](int, cudaStream_t str) { empty_kernel<<<1, 32, 0, str>>>(sink); }),
                   0);
            CK(cudaFree(bar));
        }
        { /* the copy engine's rate on the same bytes: a device-to-device copy, read + write */
            char *dst;
            CK(cudaMalloc(&dst, bytes));
            const double us = time_us(st, nset, [&](int s, cudaStream_t str) {
                CK(cudaMemcpyAsync(dst, buf + s * bytes, bytes, cudaMemcpyDeviceToDevice, str));
            });
            printf("%-22s %8.2f us  %5.2f TB/s (read + write)\n", "memcpy d2d", us, 2 * bytes / (us * 1e-6) / 1e12);
            CK(cudaFree(dst));
        }
        CK(cudaFree(buf));
    }
    return 0;
}
