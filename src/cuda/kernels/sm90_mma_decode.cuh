/*
 * sm90_mma_decode.cuh — the small-batch kernel of the cuda_sm90 experts: the same weight blocks
 * as the wgmma kernels (sm90_grouped_gemm.cuh, sm90_scaled_gemm.cuh), multiplied with mma.sync
 * m16n8k16 f16 against 8 routed rows a fragment, for tiles where an expert has few rows (a
 * wgmma tile is at least 64 rows: at decode it would be 1/64 full) and K is split across the
 * warps of a block so that enough weight bytes are in flight.
 *
 * Why one layout serves both: a 64-row weight block's thread t = 32 w + lane holds, per k32
 * step, the wgmma A fragment of rows 16 w + gid and 16 w + gid + 8 — and the wgmma A fragment of
 * a warp's 16 rows is the mma.sync m16n8k16 A fragment. So warp w of a block here reads exactly
 * the uint2 the wgmma consumer's warp w reads, and the accumulators come out in the wgmma
 * layout (acc[4 f + i]: rows gid (i < 2) and gid + 8, routed rows 8 f + 2 tig + (i & 1)), which
 * lets the wgmma kernels' epilogue finish the tile.
 *
 * Sums, as the promoting kernel's: each K group's f16 products (exact) accumulate in the tensor
 * core, then the group is added into an f32 sum — with its f32 scale (fmaf, promoting matrices)
 * or as is (scaled matrices: the f16 weight already carries S·2^k, and the channel scale 2^-k).
 * The split-K partials are added in warp order (deterministic), then the epilogue as the wgmma
 * kernels' (h = s_t · (C · acc); gated: act(gate) · up and the row amax).
 *
 * Inputs (F16IN): f16 rows in fragment order (kernels/frag_order.cuh), one 16-byte load per
 * 8-row fragment a k32 step — GEMM2's, from the requantisation; or (GEMM1: no widening kernel to
 * wait for) the dispatch's e4m3 rows, four 2-byte loads widened here (cvt.rn.f16x2.e4m3x2,
 * exact), which suits one-fragment tiles (configs/sm90_tiles.h; round 17: where rows, not
 * weights, dominate, those per-fragment loads and widenings held the kernel to ~50 TFLOP/s).
 * With SM90M_STAGE (a one-token forward) either row is first staged in shared memory as f16 in
 * fragment order, once a block.
 *
 * Grid: (tiles bound) x (NRB x BPR): a row block's four 16-row warp slices are covered by BPR =
 * 4 KS / W blocks of W = SM90M_WARPS(KS) warps, block y covering row block y / BPR and its WN =
 * W / KS slices from (y % BPR) x WN; the KS warps of a slice split the K groups evenly. Up to
 * KS = 4 a block is 4 warps; KS = 8 is one slice a block of 8 warps (GEMM2 of a long K at
 * decode, whose one or two experts are too few blocks of 4 warps for the copy rate's bytes in
 * flight: configs/sm90_tiles.h).
 */
#ifndef W4A8MOE_SM90_MMA_DECODE_CUH
#define W4A8MOE_SM90_MMA_DECODE_CUH

#include "frag_order.cuh"
#include "pdl.cuh"
#include "sm90_scaled_gemm.cuh"

/* d += A(16x16 f16) · B(16x8 f16), f32 accumulation. */
__device__ __forceinline__ void sm90m_mma(float *d, const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
#if SM90_ENABLED
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* A thread's B fragments of one k32 step of a row: bx[h] = (b0, b1) of half h. e4m3 rows (at:
 * the row's element 32 ks + 2 tig): four pairs loaded and widened exactly; f16 rows in fragment
 * order (kernels/frag_order.cuh; at: the row's element 32 ks + 8 tig): one 16-byte load. */
template <bool F16IN>
__device__ __forceinline__ void sm90m_b_frags(const char *at, uint32_t (&bx)[2][2])
{
    if constexpr (F16IN) {
        const uint4 v = __ldg((const uint4 *)at);
        bx[0][0] = v.x;
        bx[0][1] = v.y;
        bx[1][0] = v.z;
        bx[1][1] = v.w;
    } else {
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const uint16_t raw = __ldg((const uint16_t *)(at + h * 16 + c * 8));
                bx[h][c] = 0;
#if SM90_ENABLED
                asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(bx[h][c]) : "h"(raw));
#endif
            }
    }
}

/* The scaled block's f16 scales of a thread's rows r (low half) and r + 8 (high) for step j of
 * the block (0 for the promoting layout, which keeps its f32 scales apart). */
template <bool SCALED>
__device__ __forceinline__ uint32_t sm90m_scales(const char *blk, int g, int j, int r)
{
    if constexpr (SCALED) {
        const uint16_t *sc = (const uint16_t *)(blk + SM90S_INT4_BYTES);
        return (uint32_t)__ldg(sc + sm90s_scale_index(g, j, r)) | (uint32_t)__ldg(sc + sm90s_scale_index(g, j, r + 8)) << 16;
    } else {
        return 0u;
    }
}

/* One k32 step's A fragments from the layout thread's word v (promoting: q; scaled: q·S·2^k,
 * with sc from sm90m_scales). */
template <bool SCALED>
__device__ __forceinline__ void sm90m_weights(uint2 v, uint32_t sc, uint32_t (&a)[2][4])
{
    if constexpr (SCALED) {
        const uint32_t lo = sc & 0xffffu, hi = sc >> 16;
        sm90s_convert(v, lo | lo << 16, hi | hi << 16, a);
    } else {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            a[h][0] = sm90_int4x2_to_f16x2(v.x, 2 * h);
            a[h][1] = sm90_int4x2_to_f16x2(v.y, 2 * h);
            a[h][2] = sm90_int4x2_to_f16x2(v.x, 2 * h + 1);
            a[h][3] = sm90_int4x2_to_f16x2(v.y, 2 * h + 1);
        }
    }
}

/* Most local experts sm90m_find_tile handles: 32 lanes × SM90M_FIND_PER each. */
#define SM90M_FIND_PER 8
#define SM90M_FIND_MAX_EXPERTS (32 * SM90M_FIND_PER)

/* Tile b of the schedule's order — experts ascending, ceil(rows / BT) tiles of BT rows each,
 * as sm89_schedule_kernel lists them — found by each warp from the offsets [nl + 1] alone (nl
 * <= SM90M_FIND_MAX_EXPERTS): one round of loads and a warp scan. False when the forward has
 * at most b tiles. The offsets are read through L2 (ld.global.cg): the caller reads them
 * before its PDL wait, where only kernels two launches back are known to be done
 * (kernels/pdl.cuh) and this SM's L1 may hold an earlier forward's lines. */
template <int BT>
__device__ __forceinline__ bool sm90m_find_tile(const int32_t *offsets, int nl, int b, int *e_out, int *row0_out,
                                                int *row_end_out)
{
    const int lane = threadIdx.x & 31, per = (nl + 31) / 32, lo = lane * per;
    const int n = max(0, min(per, nl - lo)); /* this lane's experts: [lo, lo + n) */
    int32_t off[SM90M_FIND_PER + 1];
#pragma unroll
    for (int j = 0; j <= SM90M_FIND_PER; j++) off[j] = (n > 0 && j <= n) ? __ldcg(offsets + lo + j) : 0;
    int mine = 0;
#pragma unroll
    for (int j = 0; j < SM90M_FIND_PER; j++)
        if (j < n) mine += (off[j + 1] - off[j] + BT - 1) / BT;
    int incl = mine;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += v;
    }
    const int excl = incl - mine;
    if (b >= __shfl_sync(0xffffffffu, incl, 31)) return false;
    const unsigned hit = __ballot_sync(0xffffffffu, b >= excl && b < incl);
    const int src = __ffs(hit) - 1;
    int e = 0, row0 = 0, row_end = 0, at = excl;
    if (lane == src) {
#pragma unroll
        for (int j = 0; j < SM90M_FIND_PER; j++) {
            const int c = j < n ? (off[j + 1] - off[j] + BT - 1) / BT : 0;
            if (c > 0 && b >= at && b < at + c) {
                e = lo + j;
                row0 = off[j] + (b - at) * BT;
                row_end = off[j + 1];
            }
            at += c;
        }
    }
    *e_out = __shfl_sync(0xffffffffu, e, src);
    *row0_out = __shfl_sync(0xffffffffu, row0, src);
    *row_end_out = __shfl_sync(0xffffffffu, row_end, src);
    return true;
}

/* The routing ids a forward's pairs came from, for SM90M_FIND_IDS: ids [pairs] (global expert
 * ids; pairs <= 32), E the layer's experts, e0 the first local one. */
struct sm90m_ids {
    const int32_t *ids;
    int pairs, E, e0;
};

/* Lane q's pair (q < pairs) by the rule sm90m_find_tile_ids below follows, for the one-launch
 * path (kernels/sm90_fused_decode.cuh), which needs every tile's expert at once (that function
 * keeps its own copy: sharing this one cost its kernel a register spill): the pair's local
 * expert (*le; 0x7fffffff: none), whether it is that expert's first pair (*first), and the
 * distinct local experts below it (returned: its tile, when first). The ids are two or more
 * launches back: read through L2 (ld.global.cg), as sm90m_find_tile_ids reads them. */
__device__ __forceinline__ int sm90m_ids_rank(const sm90m_ids &rt, int nl, int *le_out, int *first_out)
{
    const int lane = threadIdx.x & 31, none = 0x7fffffff;
    int le = none;
    if (lane < rt.pairs) {
        const int id = __ldcg(rt.ids + lane), x = id - rt.e0;
        if (id >= 0 && id < rt.E && x >= 0 && x < nl) le = x;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, le);
    const int first = le != none && lane == __ffs(peers) - 1; /* an expert's first pair */
    int rank = 0; /* distinct experts below this lane's */
    for (int q = 0; q < rt.pairs; q++) {
        const int v = __shfl_sync(0xffffffffu, le, q), f = __shfl_sync(0xffffffffu, first, q);
        rank += f && v < le;
    }
    *le_out = le;
    *first_out = first;
    return rank;
}

/* The expert of tile b when every local expert has at most BT rows (pairs <= BT): the b-th
 * smallest distinct local expert among the ids, as the prepare lists its tiles (experts
 * ascending, an id outside [0, E) or off this rank none, an expert repeated in a token counted
 * once, as the prepare's rows are). Each warp, from the ids alone: false when fewer than b + 1
 * experts are hit. The ids are two or more launches back (the caller's, or the router's before
 * the prepare): read through L2 (ld.global.cg) before the wait, as sm90m_find_tile's offsets. */
template <int BT>
__device__ __forceinline__ bool sm90m_find_tile_ids(const sm90m_ids &rt, int nl, int b, int *e_out)
{
    const int lane = threadIdx.x & 31, none = 0x7fffffff;
    if (rt.pairs > BT) return false; /* an expert may have two tiles: the list's, after the wait */
    int le = none;
    if (lane < rt.pairs) {
        const int id = __ldcg(rt.ids + lane), x = id - rt.e0;
        if (id >= 0 && id < rt.E && x >= 0 && x < nl) le = x;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, le);
    const int first = le != none && lane == __ffs(peers) - 1; /* an expert's first pair */
    int rank = 0; /* distinct experts below this lane's */
    for (int q = 0; q < rt.pairs; q++) {
        const int v = __shfl_sync(0xffffffffu, le, q), f = __shfl_sync(0xffffffffu, first, q);
        rank += f && v < le;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, first && rank == b);
    if (!hit) return false;
    *e_out = __shfl_sync(0xffffffffu, le, __ffs(hit) - 1);
    return true;
}

/* How a block finds its tile and what it does before its PDL wait (kernels/pdl.cuh), as bits:
 *   none                the tile from the schedule's list, everything after the wait;
 *   SM90M_FIND          the tile found from the offsets (sm90m_find_tile) instead: GEMM1, whose
 *                       kernel before is the schedule, reads them before its wait;
 *   SM90M_PRE_WEIGHTS   the tile and its first two groups of weights before the wait (the
 *                       offsets and the list were written two or more launches back, the
 *                       weights are the layer's), so the weight stream starts while the kernel
 *                       before runs (GEMM1: the schedule; GEMM2: the requantisation); the block
 *                       also releases the next kernel first. The activations are read after
 *                       the wait, through L1 (round 15: reading GEMM1's rows before it, through
 *                       L2 only, took Mixtral's GEMM1 at T = 1 from 59 to 99 µs);
 *   SM90M_RELEASE       no prologue, the next kernel released before the wait;
 *   SM90M_FIND_IDS      (with PRE_WEIGHTS; GEMM1 of at most 8 routed rows, the prepare just
 *                       before it having written the tile list) the tile's expert found from the
 *                       routing ids (sm90m_find_tile_ids), so its first weights stream while the
 *                       prepare runs; after the wait the list's entry gives the tile's rows, and
 *                       an expert other than the one found (never, by the rule both follow) is
 *                       loaded then.
 * Reads before the wait of what other kernels wrote go through L2 (ld.global.cg): this SM's L1
 * may hold an earlier forward's lines. Finding a tile costs every block of the grid a scan, so
 * the prologues are for the smallest batches (cuda_sm90_small_batch.cu, mma_layer). */
#define SM90M_FIND 1
#define SM90M_PRE_WEIGHTS 2
#define SM90M_RELEASE 4 /* no prologue, but the next kernel released before the wait */
#define SM90M_FIND_IDS 8
/* 16 was SM90M_L2_AHEAD (each warp asking L2 for groups ahead): it lost in round 39, removed. */
/* SM90M_STAGE: the tile's one routed row (a one-token forward: every expert has at most one row)
 * staged once a block in shared memory as f16 in fragment order (kernels/frag_order.cuh; dynamic
 * shared memory, K x 2 bytes: sm90m_stage_bytes), after the wait; a k32 step's B fragments are
 * then one ld.shared.v4, where they were four 2-byte loads and widenings (GEMM1's e4m3 rows) or
 * one 16-byte L1 load (GEMM2's f16 rows), and no L1 prefetch a group. Why: round 17's GEMM1 group
 * was 185 warp instructions, 16 of them loads of activation bytes and 16 their widenings, its
 * hottest stall a widening waiting for those bytes; a block's four warps all read the same row.
 * Same values in the same registers: the same bits. Off by default (W4A8MOE_SM90_STAGE). */
#define SM90M_STAGE 32
/* SM90M_PRE_ROWS (with FIND_IDS and STAGE, GEMM1 of a one-token forward whose row the prepare's
 * first kernel quantised, two launches back: w4a8moe_tile_plan's quant_first): the whole product
 * before the PDL wait — tile b's row is row b (the token's rows are its distinct experts, in the
 * order FIND_IDS finds them), staged through L2 — so the weights stream while the prepare sorts
 * the pairs; after the wait the tile list is checked against it (the same rule: it always
 * agrees) and, were it to differ, the tile is multiplied again from the list; then the epilogue
 * (its row amax was zeroed by the prepare). */
#define SM90M_PRE_ROWS 64

/* Warps a block (the grid above). */
#define SM90M_WARPS(ks) ((ks) > 4 ? (ks) : 4)

/* Dynamic shared memory of a block with SM90M_STAGE: one row of K f16 values. */
__host__ __device__ __forceinline__ int64_t sm90m_stage_bytes(int64_t K) { return 2 * K; }

/* Blocks an SM must hold, which bounds the registers a thread (round 17): at NT = 1, 32 warps
 * (64 registers: 8 blocks of 4 warps, 4 of 8 at KS = 8; llama4-scout's 1,024 GEMM1 blocks and
 * qwen3-30b-a3b's 1,024 GEMM2 blocks at T = 1 stay one wave, where 7 took two; the gated GEMM1
 * spills one word, two or three local accesses in its SASS), 3 at NT = 4 (168); NT = 2 spills
 * below the compiler's own 102. (Round 37: a ring of four groups a warp, 24 warps an SM at 80
 * registers, was 4-28 % slower at T = 1-16 than these two groups at 32 warps: removed.) */
#define SM90M_MIN_BLOCKS(nt, ks) ((nt) == 1 ? 32 / SM90M_WARPS(ks) : (nt) == 2 ? 1 : 3)

/* SM90M_STAGE: a row of K values (e4m3, or f16 already in fragment order) into dst as f16 in
 * fragment order, by the whole block, then a barrier (every warp of a block reads all of K's
 * chunks it covers; the block is uniform in reaching this). K is a multiple of 32 (g divides
 * it), the row 16-byte aligned (K e4m3 bytes a row). */
template <bool F16IN>
__device__ __forceinline__ void sm90m_stage_row(const char *row, int64_t K, uint4 *dst, bool via_l2)
{
    /* via_l2: a row written by a kernel still running's predecessor, read before the PDL wait
     * (kernels/pdl.cuh: through L2, not this SM's L1) */
    auto load = [&](int i) { return via_l2 ? __ldcg((const uint4 *)row + i) : __ldg((const uint4 *)row + i); };
    if constexpr (F16IN) {
        for (int i = threadIdx.x; i < K / 8; i += blockDim.x) dst[i] = load(i);
    } else {
        uint32_t *d = (uint32_t *)dst;
        for (int i = threadIdx.x; i < K / 16; i += blockDim.x) {
            const uint4 v = load(i);
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 8; j++) { /* elements 16 i + 2 j and + 1, one f16x2 */
                uint32_t h2 = 0;
#if SM90_ENABLED
                asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"((uint16_t)(w[j >> 1] >> (16 * (j & 1)))));
#endif
                d[frag_order_pos(16 * (int64_t)i + 2 * j) / 2] = h2;
            }
        }
    }
    __syncthreads();
}

/* NT: n8 fragments of routed rows (tiles of 8 NT rows); KS: warps splitting K; GSTEPS = g / 32;
 * F16IN: act is f16 [R, K] (else e4m3); EARLY: the bits above (SM90M_FIND needs nl <=
 * SM90M_FIND_MAX_EXPERTS; nl, the local experts, is read only with it or SM90M_FIND_IDS; rt
 * only with SM90M_FIND_IDS; SM90M_STAGE needs every tile one row and sm90m_stage_bytes(K) of
 * dynamic shared memory). p.w_block, the block stride in bytes, must be sm90s_block_bytes(g). */
template <int NT, int KS, int GSTEPS, bool GATED, bool F16IN, bool SCALED, int EARLY>
static __global__ void __launch_bounds__(32 * SM90M_WARPS(KS), SM90M_MIN_BLOCKS(NT, KS))
    sm90_mma_kernel(sm90_gemm_args p, const void *__restrict__ act, int nl, sm90m_ids rt)
{
    constexpr bool FIND = EARLY & SM90M_FIND, PRE_W = EARLY & SM90M_PRE_WEIGHTS;
    constexpr bool REL = EARLY & SM90M_RELEASE, IDS = EARLY & SM90M_FIND_IDS, STG = EARLY & SM90M_STAGE;
    constexpr bool PRE_ROWS = EARLY & SM90M_PRE_ROWS;
    static_assert(!FIND || PRE_W, "a tile is found before the wait");
    static_assert(!STG || NT == 1, "one staged row: one-fragment tiles");
    static_assert(!PRE_ROWS || (IDS && STG), "the row before the wait: found from the ids, staged through L2");
    static_assert(!IDS || (PRE_W && !FIND && NT == 1), "an expert is found before the wait, one-fragment tiles");
    if constexpr (PRE_W || REL) pdl_release(); /* the next kernel (requantisation, combine) has no prologue */
    if constexpr (!PRE_W) pdl_wait(); /* kernels/pdl.cuh: before any global access */
#if SM90_ENABLED
    constexpr int WN = SM90M_WARPS(KS) / KS, BPR = 4 / WN, ACC = NT * 4;
    __shared__ float red[KS > 1 ? (KS - 1) * WN * 32 * ACC : 1];
    int e = 0; /* 32-bit, as rb: registers held to the epilogue (SM90M_MIN_BLOCKS) */
    int row0 = 0, row_end = 0;
    bool found = true; /* IDS: an expert found before the wait */
    if constexpr (IDS) {
        found = sm90m_find_tile_ids<8 * NT>(rt, nl, (int)blockIdx.x, &e);
    } else if constexpr (FIND) {
        int fe;
        if (!sm90m_find_tile<8 * NT>(p.offsets, nl, (int)blockIdx.x, &fe, &row0, &row_end)) return;
        e = fe;
    } else { /* the count and the entry read together (the list has room for every block of
              * the grid); the tile's end only after its first weights are asked for */
        int ntiles;
        int2 tile;
        if constexpr (PRE_W) { /* the schedule's list, written three launches back: via L2 */
            ntiles = __ldcg(p.ntiles);
            tile = __ldcg(p.tiles + blockIdx.x);
        } else {
            ntiles = *p.ntiles;
            tile = p.tiles[blockIdx.x];
        }
        if ((int)blockIdx.x >= ntiles) return;
        e = tile.x;
        row0 = tile.y;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int wn = warp / KS, kq = warp % KS;
    const int rb = blockIdx.y / BPR;
    const int slice = (int)(blockIdx.y % BPR) * WN + wn, t = slice * 32 + lane, r = slice * 16 + gid;
    const int64_t KB = (p.K + SM90S_BK - 1) / SM90S_BK;
    const int groups = (int)(p.K / (32 * GSTEPS)); /* g = 32 GSTEPS (mma_launch): no runtime division */
    /* Every address a group reads is its base plus a constant, folded into the loads (round
     * 17: computing them a load each cost more instructions than the products): the block
     * stride is sm90s_block_bytes(g), which mma_launch checks against p.w_block; a block holds
     * two k32 steps, the thread's word j of a block is word sm90s_word_index(t, j) = 2 t + j. */
    static_assert(SM90S_BK == 64, "two k32 steps a weight block");
    constexpr int WBLK = SM90S_INT4_BYTES + (GSTEPS == 1 ? 256 : 128);
    const char *wb = (const char *)p.wq + ((int64_t)e * p.nrb + rb) * KB * WBLK;
    const char *wt = (const char *)((const uint2 *)wb + sm90s_word_index(t, 0));
    const float *wsp = SCALED ? nullptr : p.ws + ((int64_t)e * p.nrb + rb) * groups * 64 + r;
    auto set_expert = [&](int x) { /* IDS: the expert the list names after the wait */
        e = x;
        wb = (const char *)p.wq + ((int64_t)e * p.nrb + rb) * KB * WBLK;
        wt = (const char *)((const uint2 *)wb + sm90s_word_index(t, 0));
        if constexpr (!SCALED) wsp = p.ws + ((int64_t)e * p.nrb + rb) * groups * 64 + r;
    };
    const int b0 = kq * groups / KS, b1 = (kq + 1) * groups / KS;
    /* byte offset of group b's first block, and of step s's word from it */
    auto group_off = [&](int b) -> int64_t {
        return GSTEPS >= 2 ? (int64_t)b * (GSTEPS / 2) * WBLK : (int64_t)(b >> 1) * WBLK + (b & 1) * 8;
    };
    auto step_off = [](int s) { return (s >> 1) * WBLK + (s & 1) * 8; };

    /* A group's weights and scales (promoting: its two f32 row scales; scaled: the f16 scales of
     * its rows, the same in each of its steps and in both blocks of a g = 128 group) are loaded
     * one group ahead, so a warp waits for memory once a group, not twice (the scale round
     * trip is what made the sm89 decode tiles latency-bound: docs/PERFORMANCE.md, GPU decode). */
    auto load_group = [&](int b, uint2 (&w)[GSTEPS], uint32_t &hs, float2 &sc) {
        const char *gw = wt + group_off(b);
#pragma unroll
        for (int s = 0; s < GSTEPS; s++) w[s] = __ldg((const uint2 *)(gw + step_off(s)));
        if constexpr (GSTEPS >= 2)
            hs = sm90m_scales<SCALED>(wb + group_off(b), 32 * GSTEPS, 0, r);
        else
            hs = sm90m_scales<SCALED>(wb + (int64_t)(b >> 1) * WBLK, 32, b & 1, r);
        if constexpr (!SCALED) {
            sc.x = __ldg(wsp + b * 64);
            sc.y = __ldg(wsp + b * 64 + 8);
        }
    };
    uint2 cur[GSTEPS], nxt[GSTEPS];
    uint32_t hs_cur = 0, hs_nxt = 0; /* scaled: the group's f16 scales, rows r and r + 8 */
    float2 sc_cur = make_float2(0.0f, 0.0f), sc_nxt = sc_cur; /* promoting: rows r, r + 8 */
    if (found && b0 < b1) load_group(b0, cur, hs_cur, sc_cur);
    if constexpr (PRE_W) { /* group b0 + 1 also before the wait */
        if (found && b0 + 1 < b1) load_group(b0 + 1, nxt, hs_nxt, sc_nxt);
    }
    bool early_rows = PRE_ROWS && found; /* uniform over the block, as found */
    if constexpr (IDS) {
        if (early_rows) {
            row0 = (int)blockIdx.x;
            row_end = row0 + 1;
        } else {
            pdl_wait(); /* the prepare's tile list and rows */
            if ((int)blockIdx.x >= *p.ntiles) return;
            const int2 tile = p.tiles[blockIdx.x];
            row0 = tile.y;
            if (!found || tile.x != e) { /* not the expert found: its weights now */
                set_expert(tile.x);
                if (b0 < b1) load_group(b0, cur, hs_cur, sc_cur);
                if (b0 + 1 < b1) load_group(b0 + 1, nxt, hs_nxt, sc_nxt);
            }
            row_end = p.offsets[e + 1];
        }
    } else {
        if constexpr (!FIND) row_end = PRE_W ? __ldcg(p.offsets + e + 1) : p.offsets[e + 1];
        if constexpr (PRE_W) pdl_wait(); /* the rows (GEMM1: the prepare; GEMM2: the requant) */
    }

    /* The thread's input values of step s: sm90m_b_frags at element 32 s of its group's slice
     * of each row, plus 2 tig (e4m3) or 8 tig (f16, fragment order): arow[f], row f's. */
    constexpr int ESZ = F16IN ? 2 : 1, GB = 32 * GSTEPS * ESZ; /* GB: bytes of a group's row slice */
    extern __shared__ uint4 sm90m_row[]; /* STG: the row in fragment order, 4 uint4 a k32 chunk */
    const char *arow[NT];
#pragma unroll
    for (int f = 0; f < NT; f++) /* rows past the tile's end read its last row; never stored */
        arow[f] = STG ? nullptr
                      : (const char *)act +
                            ((int64_t)min(row0 + f * 8 + gid, row_end - 1) * p.K + (F16IN ? 8 : 2) * tig) * ESZ;
    /* Group b's input lines into this SM's L1, two groups ahead of their loads (round 17: at
     * qwen3-30b-a3b T = 1 a third of GEMM1's stall samples were its widening waiting on its
     * inputs: each warp reads its own K range of a row, so nearly every group's line came from
     * L2 when asked for; registers to load them a group ahead would cost a wave of blocks). */
    auto prefetch_act = [&](int b) {
#pragma unroll
        for (int f = 0; f < NT; f++)
#pragma unroll
            for (int o = 0; o < GB; o += 128)
                asm volatile("prefetch.global.L1 [%0];" ::"l"(arow[f] + (int64_t)b * GB + o));
    };
    float acc[ACC];
    /* one group's products into acc (scaled: as is; promoting: with its row scales) */
    auto mma_group = [&](int b, const uint2 (&w)[GSTEPS], uint32_t hs, float2 sc) {
        float tmp[ACC];
#pragma unroll
        for (int i = 0; i < ACC; i++) tmp[i] = 0.0f;
#pragma unroll
        for (int s = 0; s < GSTEPS; s++) {
            uint32_t a[2][4];
            sm90m_weights<SCALED>(w[s], hs, a);
#pragma unroll
            for (int f = 0; f < NT; f++) {
                uint32_t bx[2][2];
                if constexpr (STG) { /* every row of the fragment the tile's one row (never stored) */
                    const uint4 v = sm90m_row[(b * GSTEPS + s) * 4 + tig];
                    bx[0][0] = v.x;
                    bx[0][1] = v.y;
                    bx[1][0] = v.z;
                    bx[1][1] = v.w;
                } else {
                    sm90m_b_frags<F16IN>(arow[f] + (int64_t)b * GB + s * 32 * ESZ, bx);
                }
#pragma unroll
                for (int h = 0; h < 2; h++) sm90m_mma(&tmp[4 * f], a[h], bx[h][0], bx[h][1]);
            }
        }
        if constexpr (SCALED) {
#pragma unroll
            for (int i = 0; i < ACC; i++) acc[i] += tmp[i];
        } else {
#pragma unroll
            for (int i = 0; i < ACC; i++) acc[i] = fmaf((i & 2) ? sc.y : sc.x, tmp[i], acc[i]);
        }
    };
    for (;;) { /* once; PRE_ROWS: again from the tile list, should it differ from the row found */
        if constexpr (STG)
            sm90m_stage_row<F16IN>((const char *)act + (int64_t)row0 * p.K * ESZ, p.K, sm90m_row, early_rows);
#pragma unroll
        for (int i = 0; i < ACC; i++) acc[i] = 0.0f;
        if (!STG && b0 + 1 < b1) prefetch_act(b0 + 1);
        for (int b = b0; b < b1; b++) {
            if (!STG && b + 2 < b1) prefetch_act(b + 2);
            if (b + 1 < b1 && !(PRE_W && b == b0)) load_group(b + 1, nxt, hs_nxt, sc_nxt); /* next group in flight */
            mma_group(b, cur, hs_cur, sc_cur);
#pragma unroll
            for (int s = 0; s < GSTEPS; s++) cur[s] = nxt[s];
            hs_cur = hs_nxt;
            sc_cur = sc_nxt;
        }
        if (!early_rows) break;
        pdl_wait(); /* the prepare's tile list, and the row amax it zeroed for the epilogue */
        early_rows = false;
        if ((int)blockIdx.x >= *p.ntiles) return;
        const int2 tile = p.tiles[blockIdx.x];
        const int tile_end = p.offsets[tile.x + 1];
        if (tile.x == e && tile.y == row0 && tile_end == row_end) break;
        set_expert(tile.x); /* never, by the rule both follow: the tile from the list */
        row0 = tile.y;
        row_end = tile_end;
        if (b0 < b1) load_group(b0, cur, hs_cur, sc_cur);
        if (b0 + 1 < b1) load_group(b0 + 1, nxt, hs_nxt, sc_nxt);
        __syncthreads(); /* every warp done with the staged row */
    }
    if constexpr (KS > 1) { /* split-K partials, added in warp order */
        if (kq > 0) {
#pragma unroll
            for (int i = 0; i < ACC; i++) red[(((kq - 1) * WN + wn) * 32 + lane) * ACC + i] = acc[i];
        }
        __syncthreads();
        if (kq > 0) return;
#pragma unroll
        for (int q = 1; q < KS; q++)
#pragma unroll
            for (int i = 0; i < ACC; i++) acc[i] += red[(((q - 1) * WN + wn) * 32 + lane) * ACC + i];
    }
    sm90_epilogue_slice<8 * NT, GATED>(p, e, rb, slice, lane, row0, row_end, acc);
#endif
}

#endif /* W4A8MOE_SM90_MMA_DECODE_CUH */
