/*
 * cuda_sm90_internal.h — what cuda_sm90's two translation units share: the layer's state (its
 * packed matrices and path switches), the workspace's pointers, and the small-batch path
 * (cuda_sm90_small_batch.cu: the mma.sync GEMMs of few rows an expert, kernels/sm90_mma_decode.cuh),
 * which cuda_sm90_experts.cu's run, tile plan and explain call. Split so that the small-batch
 * kernels' instantiations compile beside the wgmma ones.
 */
#ifndef W4A8MOE_CUDA_SM90_INTERNAL_H
#define W4A8MOE_CUDA_SM90_INTERNAL_H

#include "configs/sm90_tiles.h"
#include "cuda_sm90_fused.h"
#include "cuda_util.h"
#include "kernels/sm90_mma_decode.cuh"

typedef struct sm90_matrix {
    char *wq;     /* [nl, NRB, ceil(K/64)] weight blocks of sm90s_block_bytes(g) */
    float *ws;    /* promoting kernel only: [nl, NRB, K/g, 64] f32 scales; else NULL */
    float *wc;    /* [nl, NRB*64]: C·2^-k (scaled) or C (promoting) */
    int64_t nrb;  /* even */
    int scaled;   /* the scaled kernel runs this matrix (else ws holds its f32 scales) */
} sm90_matrix;

/* GEMM2's K parts on the wgmma tiles (sm90_gemm2_parts) when W4A8MOE_SM90_SPLIT_K is unset: 1,
 * none — round 36's ncu saw 3 parts gain 3 % on Mixtral T = 64's GEMM2 (docs/PERFORMANCE.md), not
 * worth a kernel more; 0 takes them by the grid */
#define SM90_SPLIT_K_DEFAULT 1

typedef struct sm90_state {
    sm90_matrix w13, w2;
    /* tensor maps of the last inputs seen, per tile width (index: bn_index) */
    const void *a_src[SM90_TILE_COUNT], *b_src[SM90_TILE_COUNT];
    CUtensorMap a_map[SM90_TILE_COUNT], b_map[SM90_TILE_COUNT];
    int early;    /* the small-batch GEMMs' PDL prologues (mma_layer); W4A8MOE_SM90_EARLY=0: off */
    int find_max; /* local experts up to which GEMM1 finds its own tile (mma_layer) */
    int find_ids; /* GEMM1 finds its tile's expert from the routing ids where the prepare wrote
                   * the tile list (mma_layer; W4A8MOE_SM90_FIND_IDS=0: off) */
    int prepare_tiles; /* the small-batch tile list written by the prepare (sm90_plan_tiles): 0
                        * never, 1 where GEMM1 does not find its own tile, 2 always
                        * (W4A8MOE_SM90_PREPARE_TILES) */
    int mma_max;  /* average rows an expert up to which the small-batch kernel runs (the mma
                   * table's last bound; W4A8MOE_SM90_MMA_MAX_ROWS lowers it, for measuring) */
    int tile_max[SM90_TILE_COUNT]; /* the wgmma tile table's bounds (configs/sm90_tiles.h);
                                    * W4A8MOE_SM90_BN32_MAX_ROWS and _BN64_ set the first two,
                                    * for measuring */
    int split_k;  /* GEMM2's K parts on the wgmma tiles: 0 by its grid (sm90_gemm2_parts), N at
                   * most N (W4A8MOE_SM90_SPLIT_K; 1: never, SM90_SPLIT_K_DEFAULT unset) */
    int fused_on;  /* a one-token forward's experts in one launch (W4A8MOE_SM90_FUSED=1; off by
                    * default until measured: docs/PERFORMANCE.md, round 38) */
    int fused_gps; /* its K groups a ring stage (W4A8MOE_SM90_FUSED_GPS, 1 by default) */
    int stage;     /* a one-token forward's row staged in shared memory (SM90M_STAGE): bit 0 GEMM1,
                    * bit 1 GEMM2 (W4A8MOE_SM90_STAGE; 0, the default, until measured) */
    int quant_first; /* a one-token forward quantised by a kernel of its own first, GEMM1's product
                      * before its wait (SM90M_PRE_ROWS; W4A8MOE_SM90_QUANT_FIRST=1; off until
                      * measured) */
    sm90_fused fused; /* its schedule, where the layer's shape takes it (cuda_sm90_fused.h) */
} sm90_state;

typedef struct sm90_ws {
    int2 *tiles, *tiles2;      /* GEMM1's and GEMM2's tiles (their BN may differ) */
    int32_t *ntiles, *ntiles2;
    float *y;
    uint32_t *rowmax;
    uint16_t *a_wide; /* [R, H] f16: the e4m3 input rows widened, exactly (in fragment order for
                       * the small-batch kernel: kernels/frag_order.cuh) */
    uint16_t *b_wide; /* [R, I] f16: the requantised e4m3 codes widened */
    float *r;
} sm90_ws;

/* Routed rows up to which the small-batch GEMMs take their PDL prologues (docs/PERFORMANCE.md,
 * round 15): they gained 1-4 % at T = 1 (8 rows or fewer) and lost 1 % at llama4-scout T = 16;
 * a first version at qwen3-30b-a3b T = 16 (12 thousand GEMM1 blocks, most past the last tile,
 * each finding its tile) lost 60 %. */
#define SM90_EARLY_MAX_ROWS 8

/* The small-batch entry for `rows` routed rows over nl local experts, or NULL: the wgmma
 * kernels (configs/sm90_tiles.h; above an average of mma_max rows an expert too). */
const sm90_mma_config *sm90_pick_mma(int64_t rows, int32_t nl, int mma_max);

/* The share of the slots a grid of `ctas` keeps busy over its waves (slots: CTAs resident at once). */
static inline double wave_fill(int64_t ctas, int64_t slots)
{
    return (double)ctas / (double)(w4a8moe_cdiv(ctas, slots) * slots);
}

/* A one-token forward's defaults (round 39, H100, 2026-12-08: T = 1 3-8 % faster on six models,
 * docs/performance/sm90-rounds-36-39.md): the token quantised first, GEMM1 multiplying it before
 * its wait (W4A8MOE_SM90_QUANT_FIRST, which stages GEMM1's row), and GEMM2's row staged in shared
 * memory (W4A8MOE_SM90_STAGE bit 2). =0 turns either off. */
#define SM90_QUANT_FIRST_DEFAULT 1
#define SM90_STAGE_DEFAULT 2

/* ks[0], ks[1]: GEMM1's and GEMM2's K splits on the small-batch entry mc for R routed rows, I the
 * layer's intermediate size (configs/sm90_tiles.h: the entry's, GEMM2 in eighths for a long K at
 * <= 8 routed rows). (Either GEMM also in eighths where eighths fill the SMs' last wave better,
 * W4A8MOE_SM90_DECODE_KS=0, was no faster in round 39 and was removed.) */
void sm90_mma_ksplits(const sm90_mma_config *mc, int64_t I, int g, int64_t R, int ks[2]);

/* Whether a one-token forward's row of K values staged in shared memory (SM90M_STAGE) fits
 * beside the blocks an SM the one-fragment kernel of K split ks is bound to. */
bool sm90_stage_fits(int64_t K, int ks);

/* The small-batch forward on entry mc with the GEMMs' K splits ks (sm90_mma_ksplits): a1, a2 the
 * GEMMs' arguments, a_q the dispatch's e4m3 rows, total its row count on the device, R the
 * routed rows, tb the tiles' bound, nl the local experts; tiles_ready: the prepare wrote the tile
 * list; one_row: a one-token forward (every tile one row); quantised_first: the prepare
 * quantised that token in a kernel of its own (w4a8moe_tile_plan); rt: the routing ids. */
w4a8moe_status sm90_small_batch_forward(const sm90_state *s, const sm90_mma_config *mc, const int ks[2],
                                        const sm90_gemm_args &a1, const sm90_gemm_args &a2, const void *a_q,
                                        const sm90_ws &ws, int64_t I, const int32_t *total, float r_static,
                                        int64_t R, unsigned tb, int nl, bool tiles_ready, bool one_row,
                                        bool quantised_first, const sm90m_ids &rt, cudaStream_t st, int pdl,
                                        w4a8moe_err *err);

#endif /* W4A8MOE_CUDA_SM90_INTERNAL_H */
