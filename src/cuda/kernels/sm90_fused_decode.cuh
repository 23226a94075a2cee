/*
 * sm90_fused_decode.cuh — cuda_sm90's experts of one token in one launch (issue 8, opt-in:
 * W4A8MOE_SM90_FUSED=1, docs/cli.md): GEMM1 with its activation and row amax, the
 * requantisation and GEMM2 of the token's routed experts in one persistent kernel whose weights
 * stream through every SM's shared memory from its first microsecond.
 *
 * Why: at T = 1 the staged small-batch path (sm90_mma_decode.cuh: GEMM1, requantisation, GEMM2)
 * reads its weights at 1.3-2.2 TB/s of the card's 3.0 (docs/PERFORMANCE.md, rounds 35-36): each
 * warp has one or two groups (1-2 KB) in flight, and GEMM2's weights wait for GEMM1's tail and
 * two launch boundaries. Here each SM keeps ~200 KB in flight for the whole layer (the lab's
 * version 3, dev/kernels/fused_decode_lab.cu).
 *
 * One block an SM (the grid is the SM count; the one grid-wide barrier needs every block
 * resident: see "Residency"), 17 warps:
 *   producer (warp 16): the experts of the token's tiles from the routing ids, before the PDL
 *     wait (the ids are two launches back: kernels/pdl.cuh), then lane q (q < 4) streams K
 *     quarter q of every item — gps K groups of a 64-row block a stage (1, 2 or 4;
 *     W4A8MOE_SM90_FUSED_GPS, for measuring): their g/64 weight blocks each, then (promoting
 *     matrices) their 64 f32 scales each, one bulk copy for each part, the groups contiguous in
 *     both — into quarter q's ring of stages / 4 stages, each stage refilled once its four
 *     readers have released it. Four lanes and several groups a copy, not one thread and one
 *     group: with one thread issuing every one-group stage, its waits, barrier updates and
 *     copies took ~340 ns a stage (docs/PERFORMANCE.md, round 38), 13 GB/s an SM. It never
 *     waits for the prepare, and runs ahead across the grid barrier, so GEMM2's first weights
 *     land while GEMM1's last items finish.
 *   consumers (warps 0-15; warp w: 16-row slice w % 4, K quarter w / 4, as the small-batch
 *     kernel's KS = 4): the PDL wait, the token's e4m3 codes into shared memory, GEMM1's items
 *     (y and the row amax, through sm90_epilogue_slice), the grid barrier, GEMM2's items (a
 *     row's requantised codes made once into shared memory, as sm89_requant_kernel makes them;
 *     the rows of y_rows), all on named barrier 1 (the producer is in none of them).
 * Items (the host's static schedule, src/cuda/cuda_sm90_fused.cu): (gemm, tile q, row block),
 * GEMM1's first in a block; tile q is the q-th distinct local expert of the token, as the
 * prepare lists it. An item whose tile the ids say is not hit streams nothing; the consumers
 * check the prepare's list after the wait and, where it names another expert (never, by the rule
 * both follow), multiply that expert's weights from global memory instead, still releasing the
 * stages streamed.
 *
 * Sums: the small-batch kernel's at KS = 4 (each group's f16 products in the tensor core, added
 * into f32 with the group's scale (promoting) or as is (scaled); the quarters added in order),
 * so GEMM1 gives its bits and GEMM2 differs only where that kernel splits K eight ways.
 *
 * Residency: a block waiting at the grid barrier needs every other block to arrive, so all must
 * be resident at once. One block an SM fits (its shared memory is most of an SM's); the kernel
 * before it (the prepare) finishes without waiting for this one, and the combine after it is
 * released only when this kernel ends (it never calls launch_dependents), so no block of either
 * can hold an SM this kernel needs for ever. The path is for a GPU this layer has to itself.
 */
#ifndef W4A8MOE_SM90_FUSED_DECODE_CUH
#define W4A8MOE_SM90_FUSED_DECODE_CUH

#include "sm90_mma_decode.cuh"

#define SM90F_CONSUMERS 512
#define SM90F_THREADS (SM90F_CONSUMERS + 32)
#define SM90F_MAX_PAIRS 16 /* tiles a token: its k routed experts */

struct sm90f_args {
    sm90_gemm_args g1, g2; /* as the small-batch kernel's: g1.out = y, g1.rowmax; g2.out = y_rows */
    int scaled2;           /* GEMM2's blocks carry its f16 scales (no f32 scales streamed) */
    sm90m_ids rt;          /* the token's routing ids */
    int nl;
    const uint8_t *a_q;    /* [R, H] the dispatch's e4m3 rows */
    const int2 *tiles;     /* the prepare's tile list: (local expert, row) */
    const int32_t *ntiles;
    float r_static;        /* > 0: GEMM2's static activation scale */
    const int32_t *sched;  /* [grid + 1]: block b's items are items[sched[b], sched[b + 1]) */
    const int32_t *items;  /* gemm << 24 | q << 16 | row block */
    unsigned *bar;         /* the grid barrier: count, generation (zero at create) */
    int codes_at, data_at; /* shared offsets: token codes [H] then GEMM2's [I]; the ring */
    int stages, stage_bytes;
    int gps;               /* K groups a stage (1, 2 or 4): their weight blocks, then their scales */
};

/* Named barrier 1 over the N consumer threads. */
template <int N>
__device__ __forceinline__ void sm90f_sync(void)
{
    asm volatile("bar.sync 1, %0;" ::"n"(N) : "memory");
}

/* Every block's consumers wait until all blocks have arrived; their writes before it are visible
 * after it. The last to arrive resets the count and opens the next generation. */
template <int N>
__device__ __forceinline__ void sm90f_grid_barrier(unsigned *count, unsigned *gen)
{
    sm90f_sync<N>();
    if (threadIdx.x == 0) {
        unsigned g;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(g) : "l"(gen) : "memory");
        __threadfence(); /* the block's writes (ordered by the barrier above) before the arrival */
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            *count = 0u;
            __threadfence();
            asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(gen), "r"(g + 1u) : "memory");
        } else {
            unsigned now;
            do {
                __nanosleep(32);
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(gen) : "memory");
            } while (now == g);
        }
    }
    sm90f_sync<N>();
}

/* Groups of quarter q of G (the small-batch kernel's split: [q G / 4, (q + 1) G / 4)). */
__host__ __device__ __forceinline__ int64_t sm90f_quarter(int64_t G, int q)
{
    return (q + 1) * G / 4 - q * G / 4;
}

/* One group's products for the thread's slice (t = 32 slice + lane, rows r and r + 8 of the
 * block): w, the group's first weight block (shared or global: generic loads), blk bytes a block;
 * codes, the row's e4m3 values from element 0; b, the group. */
template <int GSTEPS, bool SCALED>
__device__ __forceinline__ void sm90f_group(const char *w, int blk, const uint8_t *codes, int64_t b, int t,
                                            int tig, int r, float (&tmp)[4])
{
    uint32_t hs = 0;
    if constexpr (SCALED) { /* the group's f16 scales, in its first block (g >= 64) */
        const uint16_t *sc = (const uint16_t *)(w + SM90S_INT4_BYTES);
        hs = (uint32_t)sc[r] | (uint32_t)sc[r + 8] << 16;
    }
#pragma unroll
    for (int s = 0; s < GSTEPS; s++) {
        const int64_t ks = b * GSTEPS + s;
        const uint2 v = *((const uint2 *)(w + (s >> 1) * blk) + sm90s_word_index(t, s & 1));
        uint32_t a[2][4];
        sm90m_weights<SCALED>(v, hs, a);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t kk = ks * 32 + h * 16 + 2 * tig;
            uint32_t bl = 0, bh = 0;
#if SM90_ENABLED
            asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(bl) : "h"(*(const uint16_t *)(codes + kk)));
            asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(bh) : "h"(*(const uint16_t *)(codes + kk + 8)));
#endif
            sm90m_mma(tmp, a[h], bl, bh);
        }
    }
}

template <int GSTEPS>
static __global__ void __launch_bounds__(SM90F_THREADS, 1) sm90_fused_decode_kernel(sm90f_args a)
{
#if SM90_ENABLED
    extern __shared__ __align__(128) char sm[];
    __shared__ int32_t s_e[SM90F_MAX_PAIRS]; /* tile q's expert from the ids (-1: not hit) */
    __shared__ float s_r[SM90F_MAX_PAIRS];   /* GEMM2's activation scale, by row */
    __shared__ float red[3 * 4 * 32 * 4];    /* K quarters 1-3's sums of each slice */
    const int S = a.stages;
    uint64_t *full = (uint64_t *)sm, *empty = full + S;
    uint8_t *s_a = (uint8_t *)sm + a.codes_at, *s_b = s_a + a.g1.K;
    char *ring = sm + a.data_at;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tig = lane & 3;
    const int i0 = a.sched[blockIdx.x], i1 = a.sched[blockIdx.x + 1];
    constexpr int GK = GSTEPS / 2; /* weight blocks a group */
    const int blk = a.g1.w_block;

    if (warp == SM90F_CONSUMERS / 32) { /* the tiles' experts (sm90m_ids_rank), before the wait */
        if (lane < SM90F_MAX_PAIRS) s_e[lane] = -1;
        __syncwarp();
        int le, first;
        const int rank = sm90m_ids_rank(a.rt, a.nl, &le, &first);
        if (first && rank < SM90F_MAX_PAIRS) s_e[rank] = le;
    }
    if (threadIdx.x == 0) {
        for (int s = 0; s < S; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&empty[s], 4);
        }
        sm90_bar_init_fence();
    }
    __syncthreads(); /* the one whole-block barrier: the ring's barriers and s_e */

    const int SQ = S / 4; /* stages a K quarter's ring */
    if (warp == SM90F_CONSUMERS / 32) { /* the producer */
        if (lane < 4) { /* lane kq: K quarter kq's groups into its ring, 32-bit counters */
            const int kq = lane;
            int st = 0;
            uint32_t ph = 0; /* the ring's stage and its pass's parity */
            for (int it = i0; it < i1; it++) {
                const int code = a.items[it], gemm = code >> 24, q = (code >> 16) & 255, rb = code & 0xffff;
                const int e = s_e[q];
                if (e < 0) continue;
                const sm90_gemm_args &p = gemm ? a.g2 : a.g1;
                const int G = (int)(p.K / p.g), KB = (int)(p.K / SM90S_BK);
                const bool promoting = !(gemm && a.scaled2);
                const char *wsrc = (const char *)p.wq + ((int64_t)e * p.nrb + rb) * KB * blk;
                const float *ssrc = promoting ? p.ws + ((int64_t)e * p.nrb + rb) * G * 64 : nullptr;
                const uint32_t wbytes = (uint32_t)(GK * blk); /* a group's weight blocks */
                const int q0 = kq * G / 4, n = (kq + 1) * G / 4 - q0;
                for (int u = 0; u < n; u += a.gps) { /* groups u .. u + c - 1, contiguous in both */
                    const int x = kq * SQ + st, b = q0 + u, c = min(a.gps, n - u);
                    sm90_bar_wait(&empty[x], ph ^ 1u);
                    char *stage = ring + x * a.stage_bytes;
                    sm90_bar_expect_tx(&full[x], c * wbytes + (promoting ? c * 256u : 0u));
                    sm90_bulk_load(stage, wsrc + (size_t)b * wbytes, c * wbytes, &full[x]);
                    if (promoting) sm90_bulk_load(stage + a.gps * wbytes, ssrc + b * 64, c * 256u, &full[x]);
                    if (++st == SQ) {
                        st = 0;
                        ph ^= 1u;
                    }
                }
            }
        }
        return;
    }

    /* the consumers */
    const int slice = warp & 3, kq = warp >> 2, t = slice * 32 + lane, r = slice * 16 + (lane >> 2);
    pdl_wait(); /* the prepare's rows, scales and tile list */
    const int ntiles = *a.ntiles;
    const int64_t H = a.g1.K, I = a.g2.K;
    if (ntiles > 0) { /* the token's codes: every row of a one-token forward holds them */
        const uint4 *src = (const uint4 *)(a.a_q + (int64_t)a.tiles[0].y * H);
        for (int64_t i = threadIdx.x; i < H / 16; i += SM90F_CONSUMERS) ((uint4 *)s_a)[i] = src[i];
    }
    sm90f_sync<SM90F_CONSUMERS>();
    int cst = 0;
    uint32_t cph = 0; /* this warp's place in its quarter's ring: stage, parity */
    int have_b = -1;
    bool crossed = false;
    for (int it = i0; it < i1; it++) {
        const int code = a.items[it], gemm = code >> 24, q = (code >> 16) & 255, rb = code & 0xffff;
        const int e_ids = s_e[q];
        int e = -1, row = 0; /* the prepare's tile q */
        if (q < ntiles) {
            const int2 tl = a.tiles[q];
            e = tl.x;
            row = tl.y;
        }
        if (gemm && !crossed) {
            sm90f_grid_barrier<SM90F_CONSUMERS>(a.bar, a.bar + 1); /* every y and row amax written */
            crossed = true;
        }
        if (e_ids < 0 && e < 0) continue; /* nothing streamed, nothing to compute */
        if (gemm && e >= 0 && have_b != row) { /* the row's requantised codes (sm89_requant_kernel's) */
            if (threadIdx.x == 0)
                s_r[row] = a.r_static > 0.0f ? a.r_static
                                             : w4a8moe_act_scale(w4a8moe_bits_f32(__ldcg(a.g1.rowmax + row)));
            sm90f_sync<SM90F_CONSUMERS>();
            const float rr = s_r[row];
            for (int64_t i = threadIdx.x; i < I; i += SM90F_CONSUMERS)
                s_b[i] = w4a8moe_f32_to_e4m3(__fdiv_rn(__ldcg(a.g1.out + (int64_t)row * I + i), rr));
            sm90f_sync<SM90F_CONSUMERS>();
            have_b = row;
        }
        const sm90_gemm_args &p = gemm ? a.g2 : a.g1;
        const bool scaled = gemm && a.scaled2, direct = e != e_ids;
        const int64_t G = p.K / p.g, KB = p.K / SM90S_BK;
        const char *wd = e >= 0 ? (const char *)p.wq + ((int64_t)e * p.nrb + rb) * KB * blk : nullptr;
        const float *sd = e >= 0 && !scaled ? p.ws + ((int64_t)e * p.nrb + rb) * G * 64 : nullptr;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const int64_t b0 = kq * G / 4;
        const int nq = (int)sm90f_quarter(G, kq);
        for (int u0 = 0; u0 < nq; u0 += a.gps) {
            const int x = kq * SQ + cst, c = min(a.gps, nq - u0); /* the stage of groups u0 .. u0 + c - 1 */
            const char *stage = nullptr;
            if (e_ids >= 0) {
                sm90_bar_wait(&full[x], cph);
                stage = ring + (int64_t)x * a.stage_bytes;
            }
            for (int j = 0; j < c; j++) {
                const int64_t b = b0 + u0 + j;
                const char *w = stage ? stage + j * GK * blk : nullptr;
                const float *sc = stage ? (const float *)(stage + a.gps * GK * blk) + j * 64 : nullptr;
                if (direct) { /* the list's expert is not the one streamed: its weights from global memory */
                    w = wd ? wd + b * GK * blk : nullptr;
                    sc = sd ? sd + b * 64 : nullptr;
                }
                if (w) {
                    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    if (scaled) {
                        sm90f_group<GSTEPS, true>(w, blk, s_b, b, t, tig, r, tmp);
#pragma unroll
                        for (int i = 0; i < 4; i++) acc[i] += tmp[i];
                    } else {
                        sm90f_group<GSTEPS, false>(w, blk, gemm ? s_b : s_a, b, t, tig, r, tmp);
                        const float sx = sc[r], sy = sc[r + 8];
#pragma unroll
                        for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sy : sx, tmp[i], acc[i]);
                    }
                }
            }
            if (e_ids >= 0) sm90_fence_proxy_async(); /* each lane's ld.shared of the stage before its refill */
            __syncwarp();
            if (e_ids >= 0) {
                if (lane == 0) sm90_bar_arrive(&empty[x]); /* this warp is done with the stage */
                if (++cst == SQ) {
                    cst = 0;
                    cph ^= 1u;
                }
            }
        }
        if (e < 0) continue; /* streamed, but the list has no such tile: nothing to write */
        /* the quarters added in order into quarter 0's, then the small-batch kernel's epilogue */
        if (kq > 0)
#pragma unroll
            for (int i = 0; i < 4; i++) red[(((kq - 1) * 4 + slice) * 32 + lane) * 4 + i] = acc[i];
        sm90f_sync<SM90F_CONSUMERS>();
        if (kq == 0) {
#pragma unroll
            for (int x = 1; x < 4; x++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[i] += red[(((x - 1) * 4 + slice) * 32 + lane) * 4 + i];
            if (!gemm) {
                sm90_epilogue_slice<8, true>(a.g1, e, rb, slice, lane, row, row + 1, acc);
            } else {
                sm90_gemm_args p2 = a.g2;
                p2.act_scale = s_r; /* by row, as the requantisation's r */
                sm90_epilogue_slice<8, false>(p2, e, rb, slice, lane, row, row + 1, acc);
            }
        }
        sm90f_sync<SM90F_CONSUMERS>(); /* red reused */
    }
    if (!crossed) sm90f_grid_barrier<SM90F_CONSUMERS>(a.bar, a.bar + 1); /* a block without GEMM2 items */
#endif
}

#endif /* W4A8MOE_SM90_FUSED_DECODE_CUH */
