/*
 * sm89_tiles.h — tile choices of the cuda_sm89 grouped GEMMs, as data (one comment per rule).
 *
 * A block is 4 warps. Each warp computes a 16-channel weight tile (GEMM1: the gate tile and its
 * up tile) against nt*8 routed rows, over 1/ksplit of K; the block's warps are
 * (4/ksplit channel tiles) × ksplit. The first entry whose max_rows_per_expert is at least the
 * average rows per active expert (T*k / min(E_local, T*k)) is used.
 *
 * Napkin math (H100, 132 SMs): decode is weight-bandwidth bound; a 16×2048 int4 tile is 16 KB,
 * and qwen3-30b at T=1 has 8 experts × 48 tiles = 384 tiles per GEMM1: too few warps to keep
 * ~40 KB in flight per SM, hence split-K by 4 (1536 warps). Prefill is issue bound (int4→e4m3
 * conversion, 24 instructions per 16×32 tile, amortised over nt mma's): nt = 4 reuses each
 * converted A fragment 4 times (8 would need more registers than the f64 accumulators leave).
 */
#ifndef W4A8MOE_SM89_TILES_H
#define W4A8MOE_SM89_TILES_H

typedef struct sm89_tile_config {
    int max_rows_per_expert; /* use this entry up to this average */
    int nt;                  /* n8 row fragments per warp: rows per M tile = 8 * nt */
    int ksplit;              /* warps sharing one channel tile, each a slice of K */
} sm89_tile_config;

static const sm89_tile_config sm89_tiles[] = {
    {8, 1, 4},       /* decode: one fragment of rows, K split four ways for bandwidth */
    {16, 2, 4},      /* small batches: two fragments, still split-K */
    {48, 4, 2},      /* mid: half split */
    {1 << 30, 4, 1}, /* prefill: 32 rows × 4 channel tiles a block, no split (f64 accumulators:
                        nt = 8 would spill) */
};

#define SM89_TILE_COUNT (sizeof sm89_tiles / sizeof sm89_tiles[0])

#endif /* W4A8MOE_SM89_TILES_H */
