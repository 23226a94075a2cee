/*
 * sm90_tiles.h — tile choices of the cuda_sm90 grouped GEMMs, as data (one comment per rule).
 *
 * A CTA is one producer warpgroup and two consumer warpgroups: 128 weight rows (64 each, the
 * wgmma M) against BN routed rows of one expert (the wgmma N), K in stages of 64. The first
 * entry whose max_rows_per_expert is at least the average rows per active expert
 * (T*k / min(E_local, T*k)) is used, per GEMM; entries with BN > 128 only for a matrix on the
 * scaled kernel (the promoting one keeps a second BN/2 of f32 sums per thread and stops at 128).
 *
 * Napkin math (lab dev/kernels/sm90_w4a8_gemm.cu): per k32 step a consumer thread converts 16
 * int4 to f16 (~32 instructions with the scale) while its two m64nBNk16 wgmmas take BN/2 tensor
 * clocks each of the SM it shares with the other consumer: BN = 128 leaves the conversion ~25 %
 * of the issue slots, BN = 256 half that and halves the weight loads per MMA, but a wide tile
 * wastes most of its MMA when an expert has few rows. Stages: as many as shared memory holds
 * (activation box BN x 128 bytes + 2 x 2304 bytes of weights and scales a stage).
 * dev/kernels/tune_sm90_tiles.py measures the thresholds (each BN's largest winning rows per
 * expert, per GEMM); the 384 below is round 6's estimate, not yet its output.
 */
#ifndef W4A8MOE_SM90_TILES_H
#define W4A8MOE_SM90_TILES_H

typedef struct sm90_tile_config {
    int max_rows_per_expert; /* use this entry up to this average */
    int bn;                  /* routed rows per CTA tile (wgmma N) */
} sm90_tile_config;

static const sm90_tile_config sm90_tiles[] = {
    {32, 32},       /* small batches: three CTAs an SM (kernels/sm90_grouped_gemm.cuh) */
    {64, 64},       /* less padding per expert than 128, two CTAs an SM */
    {384, 128},     /* twice the MMA per converted weight */
    {1 << 30, 256}, /* prefill: twice again, tiles mostly full */
};

/* Ring depth of the scaled kernel (227 KB of shared memory) and of the promoting one. BN = 64:
 * rings of at most 113 KB, two CTAs an SM; BN = 32: at most 74 KB, three
 * (kernels/sm90_grouped_gemm.cuh, sm90_ctas_per_sm). */
#define SM90_TILE_STAGES(bn) ((bn) == 256 ? 6 : (bn) == 128 ? 10 : 8)
#define SM90_PROMOTE_STAGES(bn) ((bn) == 128 ? 8 : (bn) == 64 ? 9 : 8)

#define SM90_TILE_COUNT (sizeof sm90_tiles / sizeof sm90_tiles[0])

/* Small batches: below the wgmma table, the mma.sync kernel (kernels/sm90_mma_decode.cuh) on the
 * same weight blocks. A block is 4 warps: 4 / ksplit weight slices of 16 rows, each K split
 * ksplit ways (GEMM2 at decode: SM90_MMA_KS8_GROUPS below); nt n8 fragments of routed rows a
 * tile. The first entry whose max_rows_per_expert is at least the average rows per active
 * expert is used; above the last, the wgmma kernels. Every entry splits K four ways (cuda_sm89's
 * decode split, sm89_tiles.h): with one split the sums of a token do not depend on its batch
 * inside this path (the sums of the wgmma kernels differ: a batch that crosses the last entry's
 * bound changes a token's last bits — docs/numerics.md, batch invariance).
 * Bound measured against the 32-row wgmma tiles (docs/PERFORMANCE.md, rounds 32-33, H100): at 4
 * rows an expert these tiles take 11-20 % less time on every model (Mixtral T = 16, qwen3-30b,
 * qwen3-235b and llama4-scout T = 64, deepseek-v3 T = 128); at 6 it is even (Mixtral T = 24 and
 * llama4-scout T = 96 within 2 %, qwen3-30b T = 96 4 % slower); at 8 they take 17-21 % more
 * time than the wgmma tiles, and at 9-15 rows (the two-fragment entry this table had until
 * then) 10-30 % more. */
typedef struct sm90_mma_config {
    int max_rows_per_expert;
    int nt;     /* n8 fragments of routed rows: tiles of 8 * nt rows */
    int ksplit; /* warps splitting K for one 16-row slice */
} sm90_mma_config;

static const sm90_mma_config sm90_mma_tiles[] = {
    {6, 1, 4}, /* decode: one fragment, K split four ways for the bytes in flight */
};
#define SM90_MMA_COUNT (sizeof sm90_mma_tiles / sizeof sm90_mma_tiles[0])

/* GEMM2 of these tiles splits K eight ways (blocks of 8 warps) where K, the layer's I, has at
 * least SM90_MMA_KS8_GROUPS groups (Mixtral's 14,336 and Llama-4's 8,192 at g = 128) and the
 * forward has at most SM90_MMA_KS8_MAX_ROWS routed rows: at T = 1 such a GEMM2 has 1-2 experts
 * of 4,096-5,120 rows, 320-512 blocks of 4 warps, too few warps on a row's K to keep the copy
 * rate's bytes in flight. Round 20b (docs/PERFORMANCE.md): T = 1 −7 to −8 µs on the three
 * models, but at T = 16-256, with enough blocks, up to 3 % slower, hence the row bound — which
 * makes a token's last bits depend on its batch (docs/numerics.md, batch invariance). */
#define SM90_MMA_KS8_GROUPS 64
#define SM90_MMA_KS8_MAX_ROWS 8

#endif /* W4A8MOE_SM90_TILES_H */
