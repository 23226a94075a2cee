/*
 * local_dispatch.cuh — device code of the `local` prepare/finalize (src/cuda/cuda_prepfin_local.cu):
 * the counting sort of routed pairs by local expert, the per-token FP8 quantisation fused with
 * the gather into the pairs' rows, and the deterministic combine. No host synchronisation; the
 * only atomics are integer counters (order-independent results), never in a float reduction.
 *
 * The pair sort (stable in (t, j) order, like the host's):
 *   1. count:  pairs are cut in chunks of DISPATCH_CHUNK; chunk c counts its pairs per local
 *              expert into counts[c][e] (integer atomics: the counts do not depend on order).
 *   2. scan:   one block: expert_offsets = exclusive scan of the per-expert totals, and
 *              counts[c][e] becomes the first row chunk c writes for expert e.
 *   3. assign: chunk c ranks its pairs warp by warp (match_any inside a warp, warps in order),
 *              so the rows of an expert follow the pairs' order.
 * Invalid ids (outside [-1, E), or an expert repeated in a token: the later slot) are treated
 * as -1 and counted in err[0]; err[1] keeps the lowest such token. The one-block kernel after
 * the count adds them to the layer's report words (see cuda_prepfin_local.cu).
 */
#ifndef W4A8MOE_LOCAL_DISPATCH_CUH
#define W4A8MOE_LOCAL_DISPATCH_CUH

#include "../../common/quant.h"
#include "block_scan.cuh"

#include <stdint.h>
#include "pdl.cuh"

#define DISPATCH_CHUNK 1024 /* pairs a count/assign block handles (one thread each) */

struct pair_map {
    const int32_t *ids; /* [T, k] global ids */
    int64_t T;
    int k, E, e0, nl; /* top-k, global experts, first local expert, local experts */
    int64_t token_base; /* token of the caller's batch that this forward's token 0 is */
};

/* Local expert of pair p, or -1; *bad = 1 when the id is invalid. */
__device__ __forceinline__ int pair_local_expert(const pair_map &m, int64_t p, int *bad)
{
    int id = m.ids[p];
    *bad = 0;
    if (id < -1 || id >= m.E) { *bad = 1; return -1; }
    if (id < 0) return -1;
    int64_t t0 = p - p % m.k;
    for (int64_t q = t0; q < p; q++)
        if (m.ids[q] == id) { *bad = 1; return -1; }
    int e = id - m.e0;
    return e >= 0 && e < m.nl ? e : -1;
}

/* One thread, once this forward's err [2] is final: adds its bad slots to the layer's report
 * [2] (mapped host memory: bad slots so far, first bad token of the latest faulty forward).
 * Only the device writes report, and one forward of a layer runs at a time, so a plain
 * read-modify-write suffices; the token is written before the count (the host reads the count
 * first). Nothing is written on the clean path. */
__device__ __forceinline__ void dispatch_report_bad(const int32_t *err, int32_t *report)
{
    int32_t n = err[0];
    if (n <= 0) return;
    volatile int32_t *r = report;
    r[1] = err[1];
    __threadfence_system();
    r[0] = r[0] + n;
}

/* counts [chunks, nl] (zeroed) += pairs per chunk and local expert; err [2] */
__global__ void dispatch_count_kernel(pair_map m, int32_t *__restrict__ counts, int32_t *err)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int64_t p = (int64_t)blockIdx.x * DISPATCH_CHUNK + threadIdx.x;
    if (p >= m.T * m.k) return;
    int bad;
    int e = pair_local_expert(m, p, &bad);
    if (bad) {
        atomicAdd(&err[0], 1);
        atomicMin(&err[1], (int32_t)(m.token_base + p / m.k));
    }
    if (e >= 0) atomicAdd(&counts[(int64_t)blockIdx.x * m.nl + e], 1);
}

/* One block of 1024 threads. counts [chunks, nl] → first row per (chunk, expert);
 * offsets [nl + 1]. Thread i owns experts [i*per, (i+1)*per). err [2]: the count's error
 * words, reported into report [2] (dispatch_report_bad). */
__global__ void dispatch_scan_kernel(int32_t *__restrict__ counts, int chunks, int nl,
                                     int32_t *__restrict__ offsets, const int32_t *err,
                                     int32_t *report)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    if (threadIdx.x == 0) dispatch_report_bad(err, report);
    __shared__ int32_t part[1024];
    int per = (nl + 1023) / 1024;
    int lo = threadIdx.x * per, hi = min(lo + per, nl);
    int32_t mine = 0;
    for (int e = lo; e < hi; e++)
        for (int c = 0; c < chunks; c++) mine += counts[(int64_t)c * nl + e];
    int32_t run = block_exclusive_scan_1024(part, mine);
    for (int e = lo; e < hi; e++) {
        offsets[e] = run;
        for (int c = 0; c < chunks; c++) {
            int32_t v = counts[(int64_t)c * nl + e];
            counts[(int64_t)c * nl + e] = run;
            run += v;
        }
    }
    if (threadIdx.x == 1023) offsets[nl] = part[1023];
}

/* The experts' tile list that the decode kernel's block 0 writes (w4a8moe_tile_plan in
 * src/core/backend.h): bt rows a tile (0: none), tiles [(expert, row0)], *ntiles, zero[0,
 * nzero) zeroed. */
struct dispatch_tiles {
    int bt;
    int2 *tiles;
    int32_t *ntiles;
    uint32_t *zero;
    int64_t nzero;
};

/* The exclusive scan of a block's per-expert counts (cursor [nl], shared or global): cursor[e]
 * becomes expert e's first row, and offsets [nl + 1] (unless NULL) the same and the total;
 * with tl (bt > 0) and offsets, also the tile list tl->tiles and *tl->ntiles, in the order
 * sm89_schedule_kernel writes them. Thread i owns experts [i·per, (i+1)·per). A block of
 * exactly 1024; part: shared [1024]. */
__device__ __forceinline__ void dispatch_scan_counts(int32_t *part, int32_t *cursor, int nl, int32_t *offsets,
                                                     const dispatch_tiles *tl = nullptr)
{
    const int per = (nl + 1023) / 1024, lo = threadIdx.x * per, hi = min(lo + per, nl);
    /* with a tile list: each expert's tiles summed in the same scan, in the high 16 bits (a
     * decode batch has at most DISPATCH_CHUNK = 1,024 pairs, so both sums fit 16 bits) */
    const int bt = tl ? tl->bt : 0, shift = bt ? 16 : 0, mask = bt ? 0xffff : -1;
    int32_t mine = 0;
    for (int x = lo; x < hi; x++) mine += cursor[x] + (bt ? (cursor[x] + bt - 1) / bt << 16 : 0);
    const int32_t both = block_exclusive_scan_1024(part, mine);
    int32_t run = both & mask, tile = both >> shift;
    for (int x = lo; x < hi; x++) {
        const int32_t v = cursor[x];
        if (offsets) offsets[x] = run;
        if (offsets && bt)
            for (int32_t r = 0; r < v; r += bt) tl->tiles[tile++] = make_int2(x, run + r);
        cursor[x] = run;
        run += v;
    }
    if (offsets && threadIdx.x == 1023) {
        offsets[nl] = part[1023] & mask;
        if (bt) *tl->ntiles = part[1023] >> 16;
    }
}

/* The stable assignment of a block's pairs to rows: warp by warp in thread order (warps [0,
 * warps), a bound uniform over the block), each pair of expert e >= 0 takes the next row of
 * cursor[e], the lower lanes of a warp first; returns the pair's row (-1 where e < 0). cursor
 * (shared or global) holds each expert's next row and is advanced. Every thread calls it. */
__device__ __forceinline__ int32_t dispatch_assign_rows(int32_t *cursor, int e, int warps)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    int32_t row = -1;
    for (int w = 0; w < warps; w++) {
        if (w == warp && e >= 0) {
            const int32_t b = cursor[e];
            row = b + __popc(peers & ((1u << lane) - 1u));
            __syncwarp(peers);
            if (lane == __ffs(peers) - 1) cursor[e] = b + __popc(peers);
        }
        __syncthreads(); /* the next warp sees this one's cursor updates */
    }
    return row;
}

/* What the dispatch keeps of pair p (row from dispatch_assign_rows): its row, its weight in the
 * combine (1 when the router weight went on the input) and the row's token. */
__device__ __forceinline__ void dispatch_write_pair(const pair_map &m, int64_t p, int32_t row,
                                                    const float *weights, int on_input, int32_t *pair_row,
                                                    int32_t *row_token, float *pair_weight)
{
    pair_row[p] = row;
    pair_weight[p] = on_input ? 1.0f : weights[p];
    if (row >= 0) row_token[row] = (int32_t)(p / m.k);
}

/* Stable rows: pair_row [T, k], row_token [R], pair_weight [T, k]. base [chunks, nl] from the
 * scan (advanced in place). weights: caller's or the router's; on_input: 1 → pair weight 1. */
__global__ void dispatch_assign_kernel(pair_map m, int32_t *__restrict__ base,
                                       const float *__restrict__ weights, int on_input,
                                       int32_t *__restrict__ pair_row, int32_t *__restrict__ row_token,
                                       float *__restrict__ pair_weight)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int64_t p = (int64_t)blockIdx.x * DISPATCH_CHUNK + threadIdx.x;
    bool live = p < m.T * m.k;
    int bad, e = live ? pair_local_expert(m, p, &bad) : -1;
    const int32_t row = dispatch_assign_rows(base + (int64_t)blockIdx.x * m.nl, e, DISPATCH_CHUNK / 32);
    if (live) dispatch_write_pair(m, p, row, weights, on_input, pair_row, row_token, pair_weight);
}

/* Decode-sized batches (T*k <= DISPATCH_CHUNK): count, scan and assign in one block, no memsets
 * (a graph of a decode step is mostly launch latency). counts: one row [nl] of scratch;
 * err [2] is reset here and reported into report [2]. Same results as the three kernels above. */
__global__ void dispatch_small_kernel(pair_map m, int32_t *__restrict__ counts, int32_t *err,
                                      int32_t *report, int32_t *__restrict__ offsets,
                                      const float *__restrict__ weights,
                                      int on_input, int32_t *__restrict__ pair_row,
                                      int32_t *__restrict__ row_token, float *__restrict__ pair_weight)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    __shared__ int32_t part[1024];
    int64_t p = threadIdx.x;
    for (int e = threadIdx.x; e < m.nl; e += blockDim.x) counts[e] = 0;
    if (threadIdx.x == 0) { err[0] = 0; err[1] = 0x7f7f7f7f; }
    __syncthreads();
    bool live = p < m.T * m.k;
    int bad = 0, e = live ? pair_local_expert(m, p, &bad) : -1;
    if (bad) { atomicAdd(&err[0], 1); atomicMin(&err[1], (int32_t)(m.token_base + p / m.k)); }
    if (e >= 0) atomicAdd(&counts[e], 1);
    __syncthreads();
    if (threadIdx.x == 0) dispatch_report_bad(err, report);
    dispatch_scan_counts(part, counts, m.nl, offsets); /* counts become the cursors */
    __syncthreads();
    /* stable assign, warp by warp (as dispatch_assign_kernel) */
    const int32_t row = dispatch_assign_rows(counts, e, DISPATCH_CHUNK / 32);
    if (live) dispatch_write_pair(m, p, row, weights, on_input, pair_row, row_token, pair_weight);
}

/* I/O element i of x widened to f32 (bf16 / f16 / f32). */
__device__ __forceinline__ float io_load(const void *x, int dt, int64_t i)
{
    if (dt == 0) return w4a8moe_bf16_to_f32(((const uint16_t *)x)[i]);
    if (dt == 1) return w4a8moe_f16_to_f32(((const uint16_t *)x)[i]);
    return ((const float *)x)[i];
}

__device__ __forceinline__ void io_store(void *x, int dt, int64_t i, float v)
{
    if (dt == 0) ((uint16_t *)x)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == 1) ((uint16_t *)x)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)x)[i] = v;
}

/* The block quantises token t (steps 1-2: router weight on input, scale, e4m3) straight into
 * each of its nrows rows (rows: shared). red: shared [32]. Any block size that is a multiple
 * of 32; 4 elements a thread-iteration (H % 32 == 0). static_scale > 0: the static scheme. */
__device__ __forceinline__ void dispatch_quant_token(const void *__restrict__ x, int dt, int64_t H, int64_t t,
                                                     const int32_t *rows, int nrows, float w_in,
                                                     float static_scale, uint8_t *__restrict__ a_q,
                                                     float *__restrict__ a_scale, uint32_t *red)
{
    const int64_t base = t * H;
    float scale = static_scale;
    if (!(static_scale > 0.0f)) {
        /* amax as the bits of |v|: unsigned order is float order, and NaN sits above inf */
        uint32_t m = 0;
        for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
            uint32_t b = w4a8moe_f32_bits(fabsf(__fmul_rn(io_load(x, dt, base + h), w_in)));
            m = b > m ? b : m;
        }
        for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int i = 1; i < (int)(blockDim.x >> 5); i++) m = max(m, red[i]);
            red[0] = m;
        }
        __syncthreads();
        scale = w4a8moe_act_scale(w4a8moe_bits_f32(red[0]));
    }
    for (int64_t h = (int64_t)threadIdx.x * 4; h < H; h += (int64_t)blockDim.x * 4) {
        uint32_t packed = 0;
        for (int i = 0; i < 4; i++) {
            float v = __fdiv_rn(__fmul_rn(io_load(x, dt, base + h + i), w_in), scale);
            packed |= (uint32_t)w4a8moe_f32_to_e4m3(v) << (8 * i);
        }
        for (int r = 0; r < nrows; r++) *(uint32_t *)(a_q + (int64_t)rows[r] * H + h) = packed;
    }
    if (threadIdx.x < nrows) a_scale[rows[threadIdx.x]] = scale;
}

/* The decode prepare's token in registers (H <= DECODE_TOKEN_MAX, a block of DISPATCH_CHUNK =
 * 1024 threads): thread i holds elements 4i..4i+3 and 4096 + 4i..4096 + 4i + 3 of x[t] times
 * w_in, as dispatch_quant_token's loop visits them with that block. Loaded before the pair
 * sort, whose steps do not touch them, so the loads' latency and the amax run beside it
 * (docs/PERFORMANCE.md, round 21). */
#define DECODE_TOKEN_MAX 8192
struct decode_token {
    float v[8];
};

/* Loads the thread's values of token t and puts its warp's amax (as |v| bits, dispatch_quant_token's
 * order) in red[warp]; the caller's next __syncthreads publishes it. static_scale > 0: no amax. */
__device__ __forceinline__ void decode_token_load(const void *__restrict__ x, int dt, int64_t H, int64_t t,
                                                  float w_in, float static_scale, decode_token &tk,
                                                  uint32_t *red)
{
    uint32_t m = 0;
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int64_t h = (int64_t)threadIdx.x * 4 + j * 4096 + i;
            tk.v[j * 4 + i] = h < H ? __fmul_rn(io_load(x, dt, t * H + h), w_in) : 0.0f;
            const uint32_t b = w4a8moe_f32_bits(fabsf(tk.v[j * 4 + i]));
            m = b > m ? b : m;
        }
    if (static_scale > 0.0f) return;
    for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
}

/* Quantises the loaded token into its nrows rows (rows: shared) once red holds every warp's
 * amax: each warp reduces the 32 words itself (no barrier). Same codes and scale as
 * dispatch_quant_token. */
__device__ __forceinline__ void decode_token_store(const decode_token &tk, int64_t H, const int32_t *rows,
                                                   int nrows, float static_scale, const uint32_t *red,
                                                   uint8_t *__restrict__ a_q, float *__restrict__ a_scale)
{
    float scale = static_scale;
    if (!(static_scale > 0.0f)) {
        uint32_t m = red[threadIdx.x & 31];
        for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
        scale = w4a8moe_act_scale(w4a8moe_bits_f32(m));
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int64_t h = (int64_t)threadIdx.x * 4 + j * 4096;
        if (h >= H) break;
        uint32_t packed = 0;
#pragma unroll
        for (int i = 0; i < 4; i++)
            packed |= (uint32_t)w4a8moe_f32_to_e4m3(__fdiv_rn(tk.v[j * 4 + i], scale)) << (8 * i);
        for (int r = 0; r < nrows; r++) *(uint32_t *)(a_q + (int64_t)rows[r] * H + h) = packed;
    }
    if (threadIdx.x < nrows) a_scale[rows[threadIdx.x]] = scale;
}

/* One block (256 threads) a token: its rows gathered from pair_row, then dispatch_quant_token.
 * x [T, H] io dtype; a_q [R, H]; a_scale [R]. */
__global__ void dispatch_quant_kernel(const void *__restrict__ x, int dt, int64_t H, int k,
                                      const int32_t *__restrict__ pair_row,
                                      const float *__restrict__ weights, int on_input,
                                      float static_scale, uint8_t *__restrict__ a_q,
                                      float *__restrict__ a_scale)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    __shared__ int32_t rows[64];
    __shared__ uint32_t red[32];
    int64_t t = blockIdx.x;
    int nrows = 0;
    if (threadIdx.x == 0) {
        for (int j = 0; j < k; j++) {
            int32_t r = pair_row[t * k + j];
            if (r >= 0) rows[nrows++] = r;
        }
        red[0] = (uint32_t)nrows;
    }
    __syncthreads();
    nrows = (int)red[0];
    __syncthreads();
    if (nrows == 0) return;
    float w_in = on_input ? weights[t * k] : 1.0f;
    dispatch_quant_token(x, dt, H, t, rows, nrows, w_in, static_scale, a_q, a_scale, red);
}

/* Decode-sized batches (T*k <= DISPATCH_CHUNK): the whole prepare after routing in one launch.
 * Grid T, block DISPATCH_CHUNK, dynamic shared memory nl int32. Every block sorts all the pairs
 * as dispatch_small_kernel does, but in shared memory (a few hundred pairs cost less than a
 * launch) and stepping only through the warps that hold pairs; block 0 writes the dispatch
 * arrays, the error words and the report; block t then quantises token t into its rows, taken
 * from its own sort — for H <= DECODE_TOKEN_MAX with the token loaded and its amax taken before
 * the sort (decode_token_load). Same results as dispatch_small_kernel followed by
 * dispatch_quant_kernel. With tl.bt > 0 block 0 also writes the experts' tile list (the
 * tiles summed in the offsets' own scan) and zeroes tl.zero, so the experts launch no schedule
 * kernel of their own. */
__global__ void dispatch_decode_kernel(pair_map m, int32_t *err, int32_t *report,
                                       int32_t *__restrict__ offsets, const float *__restrict__ weights,
                                       int on_input, int32_t *__restrict__ pair_row,
                                       int32_t *__restrict__ row_token, float *__restrict__ pair_weight,
                                       const void *__restrict__ x, int dt, int64_t H, float static_scale,
                                       uint8_t *__restrict__ a_q, float *__restrict__ a_scale, dispatch_tiles tl,
                                       int quantised)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    extern __shared__ int32_t cursor[]; /* [nl]: counts, then each expert's next row */
    __shared__ int32_t part[1024];
    __shared__ int32_t rows[64], slot_row[64];
    __shared__ uint32_t red[32];
    __shared__ int32_t nbad, badtok, nrows_s;
    const bool writer = blockIdx.x == 0;
    const int64_t t = blockIdx.x, pairs = m.T * m.k, p = threadIdx.x;
    const float w_in = on_input ? weights[t * m.k] : 1.0f;
    const bool early = H <= DECODE_TOKEN_MAX && !quantised; /* uniform over the grid */
    decode_token tk;
    if (early) decode_token_load(x, dt, H, t, w_in, static_scale, tk, red);
    for (int e = threadIdx.x; e < m.nl; e += blockDim.x) cursor[e] = 0;
    if (threadIdx.x == 0) { nbad = 0; badtok = 0x7f7f7f7f; }
    __syncthreads();
    const bool live = p < pairs;
    int bad = 0, e = live ? pair_local_expert(m, p, &bad) : -1;
    if (bad) { atomicAdd(&nbad, 1); atomicMin(&badtok, (int32_t)(m.token_base + p / m.k)); }
    if (e >= 0) atomicAdd(&cursor[e], 1);
    __syncthreads();
    if (writer && threadIdx.x == 0) {
        err[0] = nbad;
        err[1] = badtok;
        dispatch_report_bad(err, report);
    }
    if (writer && tl.bt)
        for (int64_t i = threadIdx.x; i < tl.nzero; i += blockDim.x) tl.zero[i] = 0u;
    dispatch_scan_counts(part, cursor, m.nl, writer ? offsets : nullptr, &tl); /* block 0 writes offsets */
    __syncthreads();
    /* stable assign, warp by warp, only the warps that hold pairs (a uniform bound) */
    const int32_t row = dispatch_assign_rows(cursor, e, (int)((pairs + 31) / 32));
    if (live) {
        if (writer) dispatch_write_pair(m, p, row, weights, on_input, pair_row, row_token, pair_weight);
        if (p / m.k == t) slot_row[p % m.k] = row;
    }
    __syncthreads();
    if (threadIdx.x == 0) { /* this token's rows in slot order, as dispatch_quant_kernel gathers */
        int n = 0;
        for (int j = 0; j < m.k; j++)
            if (slot_row[j] >= 0) rows[n++] = slot_row[j];
        nrows_s = n;
    }
    __syncthreads();
    const int nrows = nrows_s;
    if (nrows == 0 || quantised) return; /* quantised: dispatch_quant_first_kernel wrote the rows */
    if (early)
        decode_token_store(tk, H, rows, nrows, static_scale, red, a_q, a_scale);
    else
        dispatch_quant_token(x, dt, H, t, rows, nrows, w_in, static_scale, a_q, a_scale, red);
}

/* A one-token forward's quantisation on its own, before dispatch_decode_kernel (then called with
 * quantised = 1) sorts the pairs (w4a8moe_tile_plan's quant_first): the kernels two launches
 * after it may read a_q and a_scale before their PDL wait. One block of DISPATCH_CHUNK threads,
 * H <= DECODE_TOKEN_MAX. The token's rows are 0 .. n - 1, n its valid local
 * slots (one row each: the pairs of one token have distinct experts, a repeated id counting as
 * none), whichever expert the sort gives each; so the codes and scales are the decode kernel's,
 * row for row. */
__global__ void dispatch_quant_first_kernel(pair_map m, const float *__restrict__ weights, int on_input,
                                            const void *__restrict__ x, int dt, int64_t H, float static_scale,
                                            uint8_t *__restrict__ a_q, float *__restrict__ a_scale)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    __shared__ int32_t rows[64];
    __shared__ uint32_t red[32];
    __shared__ int32_t nrows_s;
    const float w_in = on_input ? weights[0] : 1.0f;
    decode_token tk;
    decode_token_load(x, dt, H, 0, w_in, static_scale, tk, red);
    if (threadIdx.x < 64) rows[threadIdx.x] = threadIdx.x;
    if (threadIdx.x == 0) nrows_s = 0;
    __syncthreads();
    int bad = 0;
    if (threadIdx.x < m.k && pair_local_expert(m, threadIdx.x, &bad) >= 0) atomicAdd(&nrows_s, 1);
    __syncthreads();
    const int nrows = nrows_s;
    if (nrows == 0) return;
    decode_token_store(tk, H, rows, nrows, static_scale, red, a_q, a_scale);
}

/* Step 7: out[t, h] = sum_j w_j * y[row(t, j), h] (j ascending) + the shared expert's term, f32,
 * one rounding. Grid (T, ceil(H / 1024)); one thread an element; no atomics. */
__global__ void dispatch_combine_kernel(int64_t H, int k, const int32_t *__restrict__ pair_row,
                                        const float *__restrict__ pair_weight,
                                        const float *__restrict__ y_rows,
                                        const int32_t *__restrict__ sh_row,
                                        const float *__restrict__ sh_weight,
                                        const float *__restrict__ sh_y, int dt, void *out)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    int64_t t = blockIdx.x;
    int64_t h = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (h >= H) return;
    float acc = 0.0f;
    for (int j = 0; j < k; j++) {
        int32_t r = pair_row[t * k + j];
        if (r >= 0) acc = __fadd_rn(acc, __fmul_rn(pair_weight[t * k + j], y_rows[(int64_t)r * H + h]));
    }
    if (sh_row && sh_row[t] >= 0)
        acc = __fadd_rn(acc, __fmul_rn(sh_weight[t], sh_y[(int64_t)sh_row[t] * H + h]));
    io_store(out, dt, t * H + h, acc);
}

#endif /* W4A8MOE_LOCAL_DISPATCH_CUH */
