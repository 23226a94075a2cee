/*
 * sm90_tiles.h — tile choices of the cuda_sm90 grouped GEMMs, as data (one comment per rule).
 *
 * A CTA is one producer warpgroup and two consumer warpgroups: 128 weight rows (64 each, the
 * wgmma M) against BN routed rows of one expert (the wgmma N), K in stages of 128. The first
 * entry whose max_rows_per_expert is at least the average rows per active expert
 * (T*k / min(E_local, T*k)) is used.
 *
 * Napkin math (H200, lab dev/kernels/sm90_w4a8_gemm.cu, 2026-12-04): per k32 step a consumer
 * converts 16 int4 → e4m3 (~20 instructions) and adds BN/2 products into f32 (promotion);
 * m64nBNk32 is BN/2 tensor-core clocks of one SM. BN = 128 halves the share of conversion and
 * B-tile loads per MMA against BN = 64 (641 vs 359 TFLOP/s on Mixtral's down projection at
 * 2048 rows per expert), but a 128-row tile wastes most of its MMA when an expert has few rows.
 * Registers cap BN at 128: the wgmma accumulator and the promoted f32 sums are BN/2 each.
 */
#ifndef W4A8MOE_SM90_TILES_H
#define W4A8MOE_SM90_TILES_H

typedef struct sm90_tile_config {
    int max_rows_per_expert; /* use this entry up to this average */
    int bn;                  /* routed rows per CTA tile (wgmma N) */
} sm90_tile_config;

static const sm90_tile_config sm90_tiles[] = {
    {64, 64},       /* decode and small batches: less padding per expert */
    {1 << 30, 128}, /* prefill: twice the MMA per converted weight */
};

#define SM90_TILE_COUNT (sizeof sm90_tiles / sizeof sm90_tiles[0])

#endif /* W4A8MOE_SM90_TILES_H */
