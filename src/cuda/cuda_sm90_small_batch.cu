/*
 * cuda_sm90_small_batch.cu — cuda_sm90's small-batch path (cuda_sm90_internal.h): the mma.sync
 * GEMMs of kernels/sm90_mma_decode.cuh for few rows an expert, with their PDL prologues, and the
 * schedule and requantisation between them (cuda_sm89's kernels).
 */
#include "cuda_sm90_internal.h"

const sm90_mma_config *sm90_pick_mma(int64_t rows, int32_t nl, int mma_max)
{
    int64_t active = rows < nl ? rows : nl;
    int64_t avg = active > 0 ? w4a8moe_cdiv(rows, active) : 1;
    if (avg > mma_max) return NULL;
    for (size_t i = 0; i < SM90_MMA_COUNT; i++)
        if (avg <= sm90_mma_tiles[i].max_rows_per_expert) return &sm90_mma_tiles[i];
    return NULL;
}

void sm90_mma_ksplits(const sm90_mma_config *mc, int64_t I, int g, int64_t R, int ks[2])
{
    ks[0] = mc->ksplit;
    ks[1] = I / g >= SM90_MMA_KS8_GROUPS && R <= SM90_MMA_KS8_MAX_ROWS ? 8 : mc->ksplit; /* a long K at decode */
}

/* One GEMM on the mma.sync kernel: grid (tiles bound, NRB x KS), g picks the steps a group;
 * EARLY: how it finds its tile and what it does before its PDL wait (SM90M_*,
 * kernels/sm90_mma_decode.cuh); nl: the local experts. */
template <int NT, int KS, bool GATED, bool F16IN, bool SCALED, int EARLY>
static cudaError_t mma_launch(const sm90_gemm_args &p, const void *act, unsigned tiles_bound, int nl,
                              const sm90m_ids &rt, cudaStream_t st, int pdl)
{
    constexpr int W = SM90M_WARPS(KS); /* warps a block, 4 KS / W blocks a row block */
    dim3 grid(tiles_bound, (unsigned)(p.nrb * (4 * KS / W))), block(32 * W);
    if (p.w_block != sm90s_block_bytes(p.g)) return cudaErrorInvalidValue; /* the kernel's block stride */
    const size_t smem = (EARLY & SM90M_STAGE) ? (size_t)sm90m_stage_bytes(p.K) : 0;
    if (p.g == 32)
        return w4a8moe_launch(sm90_mma_kernel<NT, KS, 1, GATED, F16IN, SCALED, EARLY>, grid, block, smem, st, pdl, p,
                              act, nl, rt);
    if (p.g == 64)
        return w4a8moe_launch(sm90_mma_kernel<NT, KS, 2, GATED, F16IN, SCALED, EARLY>, grid, block, smem, st, pdl, p,
                              act, nl, rt);
    if (p.g == 128)
        return w4a8moe_launch(sm90_mma_kernel<NT, KS, 4, GATED, F16IN, SCALED, EARLY>, grid, block, smem, st, pdl, p,
                              act, nl, rt);
    return cudaErrorInvalidValue;
}

/* GEMM1 or GEMM2 with the bits `early`: GEMM1 takes 0, RELEASE, FIND | PRE_WEIGHTS or FIND_IDS |
 * PRE_WEIGHTS, GEMM2 0 or PRE_WEIGHTS; the last of each (the one-token forward's) also with
 * STAGE, GEMM1's also with STAGE | PRE_ROWS. */
template <int NT, int KS, bool GATED, bool F16IN, bool SCALED>
static cudaError_t mma_launch_early(int early, const sm90_gemm_args &p, const void *act, unsigned tiles_bound,
                                    int nl, const sm90m_ids &rt, cudaStream_t st, int pdl)
{
    constexpr int a = GATED ? SM90M_RELEASE : SM90M_PRE_WEIGHTS;
    constexpr int b = GATED ? SM90M_FIND | SM90M_PRE_WEIGHTS : SM90M_PRE_WEIGHTS;
    constexpr int c = GATED ? SM90M_FIND_IDS | SM90M_PRE_WEIGHTS : SM90M_PRE_WEIGHTS;
    constexpr int d = c | SM90M_STAGE;
    if constexpr (GATED) { /* GEMM1 of a one-token forward quantised first (SM90M_PRE_ROWS) */
        constexpr int f = d | SM90M_PRE_ROWS;
        if (early == f) return mma_launch<NT, KS, GATED, F16IN, SCALED, f>(p, act, tiles_bound, nl, rt, st, pdl);
    }
    if (early == d) return mma_launch<NT, KS, GATED, F16IN, SCALED, d>(p, act, tiles_bound, nl, rt, st, pdl);
    if (early == a) return mma_launch<NT, KS, GATED, F16IN, SCALED, a>(p, act, tiles_bound, nl, rt, st, pdl);
    if (early == b) return mma_launch<NT, KS, GATED, F16IN, SCALED, b>(p, act, tiles_bound, nl, rt, st, pdl);
    if (early == c) return mma_launch<NT, KS, GATED, F16IN, SCALED, c>(p, act, tiles_bound, nl, rt, st, pdl);
    if (early == 0) return mma_launch<NT, KS, GATED, F16IN, SCALED, 0>(p, act, tiles_bound, nl, rt, st, pdl);
    return cudaErrorInvalidValue;
}

/* Whether a staged row (SM90M_STAGE) of K values leaves room for the blocks an SM the
 * one-fragment kernel of K split ks is bound to (SM90M_MIN_BLOCKS: 8 of 4 warps, 4 of 8), each
 * with up to 4 KB of static shared memory (the K parts' sums: 3.5 KB at ks = 8), in an SM's
 * 227 KB: K <= ~12,000 at ks = 4; and static + dynamic within the 48 KB a launch takes without
 * an opt-in (mma_launch asks for none): K <= ~22,000 at 8. */
bool sm90_stage_fits(int64_t K, int ks)
{
    const int64_t b = sm90m_stage_bytes(K) + 4096;
    return b <= 48 * 1024 && SM90M_MIN_BLOCKS(1, ks) * b <= 220 * 1024;
}

/* The small-batch forward: the schedule (unless the prepare wrote its tile list: tiles_ready),
 * GEMM1 on the dispatch's e4m3 rows (one-fragment tiles: the table's only entry since round 33,
 * configs/sm90_tiles.h), the requantisation into f16 codes in fragment order
 * (kernels/frag_order.cuh), GEMM2 on them. With s->early
 * (W4A8MOE_SM90_EARLY=0 turns it off) and at most SM90_EARLY_MAX_ROWS rows (PDL prologues:
 * kernels/sm90_mma_decode.cuh):
 * GEMM1 releases the requantisation first and, with s->find_ids where the prepare wrote the tile
 * list, finds its tile's expert from the routing ids (rt) and loads its first weights beside the
 * prepare, or else, with at most s->find_max local experts, finds its tile from the offsets and
 * loads its first weights beside the schedule kernel; GEMM2 loads its first weights beside the
 * requantisation. With s->stage and one token (one_row: every tile one row), the prologues on,
 * either GEMM stages its row in shared memory (SM90M_STAGE), GEMM1 where it finds its expert
 * from the ids; where the prepare quantised the token first (quantised_first), GEMM1 stages it
 * and multiplies it before its wait (SM90M_PRE_ROWS). KS, KS2: GEMM1's and GEMM2's K splits. */
template <int NT, int KS, int KS2>
static w4a8moe_status mma_layer(const sm90_state *s, const sm90_gemm_args &a1, const sm90_gemm_args &a2,
                                const void *a_q, const sm90_ws &ws, int64_t I, const int32_t *total,
                                float r_static, int64_t R, unsigned tb, int nl, bool tiles_ready, bool one_row,
                                bool quantised_first, const sm90m_ids &rt, cudaStream_t st, int pdl,
                                w4a8moe_err *err)
{
    RETURN_IF(err, s->w13.scaled, W4A8MOE_STATUS_INTERNAL,
              "cuda_sm90: GEMM1 is packed for the scaled kernel, which the small-batch path lacks");
    const bool early = s->early && R <= SM90_EARLY_MAX_ROWS;
    /* the ids are two launches back (the caller's, or the router's before the prepare); a tile
     * found from the offsets needs them two launches back: not when the prepare, the kernel
     * just before, wrote them with the tile list */
    const bool ids = s->find_ids && tiles_ready && rt.ids;
    const bool finds = nl <= s->find_max && !tiles_ready;
    const bool stage1 = early && ids && one_row && ((s->stage & 1) || quantised_first) && sm90_stage_fits(a1.K, KS);
    const int e1 = (!early ? 0
                    : ids  ? SM90M_FIND_IDS | SM90M_PRE_WEIGHTS
                    : finds ? SM90M_FIND | SM90M_PRE_WEIGHTS
                            : SM90M_RELEASE) |
                   (stage1 ? SM90M_STAGE : 0) | (stage1 && quantised_first ? SM90M_PRE_ROWS : 0);
    const int e2 = (early ? SM90M_PRE_WEIGHTS : 0) |
                   (early && one_row && (s->stage & 2) && sm90_stage_fits(a2.K, KS2) ? SM90M_STAGE : 0);
    if (!tiles_ready)
        CUDA_LAUNCH(err, "sm89_schedule_kernel",
                    w4a8moe_launch(sm89_schedule_kernel, dim3(1), dim3(1024), 0, st, pdl,
                                   a1.offsets, nl, 8 * NT, ws.tiles, ws.ntiles, ws.rowmax, R));
    static_assert(NT == 1, "GEMM1 reads the e4m3 rows, four loads and widenings a fragment: one-fragment tiles");
    CUDA_LAUNCH(err, "sm90_mma_kernel (GEMM1)",
                (mma_launch_early<NT, KS, true, false, false>(e1, a1, a_q, tb, nl, rt, st, pdl)));
    CUDA_LAUNCH(err, "sm89_requant_kernel (f16 codes, fragment order)",
                w4a8moe_launch(sm89_requant_kernel<true, true>, row_slice_grid(R, I), dim3(256), 0, st, pdl,
                               ws.y, ws.rowmax, total, I, r_static,
                               (void *)ws.b_wide, ws.r));
    if (s->w2.scaled)
        CUDA_LAUNCH(err, "sm90_mma_kernel (GEMM2)",
                    (mma_launch_early<NT, KS2, false, true, true>(e2, a2, ws.b_wide, tb, nl, rt, st, pdl)));
    else
        CUDA_LAUNCH(err, "sm90_mma_kernel (GEMM2)",
                    (mma_launch_early<NT, KS2, false, true, false>(e2, a2, ws.b_wide, tb, nl, rt, st, pdl)));
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status sm90_small_batch_forward(const sm90_state *s, const sm90_mma_config *mc, const int ks[2],
                                        const sm90_gemm_args &a1, const sm90_gemm_args &a2, const void *a_q,
                                        const sm90_ws &ws, int64_t I, const int32_t *total, float r_static,
                                        int64_t R, unsigned tb, int nl, bool tiles_ready, bool one_row,
                                        bool quantised_first, const sm90m_ids &rt, cudaStream_t st, int pdl,
                                        w4a8moe_err *err)
{
    switch (mc->nt * 100 + ks[0] * 10 + ks[1]) {
    case 144:
        return mma_layer<1, 4, 4>(s, a1, a2, a_q, ws, I, total, r_static, R, tb, nl, tiles_ready, one_row,
                                  quantised_first, rt, st, pdl, err);
    case 148:
        return mma_layer<1, 4, 8>(s, a1, a2, a_q, ws, I, total, r_static, R, tb, nl, tiles_ready, one_row,
                                  quantised_first, rt, st, pdl, err);
    default: break;
    }
    RETURN_ERR(err, W4A8MOE_STATUS_INTERNAL, "sm90 mma table entry nt=%d: K splits %d and %d have no kernel", mc->nt,
               ks[0], ks[1]);
}
