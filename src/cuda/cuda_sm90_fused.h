/*
 * cuda_sm90_fused.h — cuda_sm90's one-launch experts of a one-token forward
 * (kernels/sm90_fused_decode.cuh; opt-in, W4A8MOE_SM90_FUSED=1): the layer's static schedule of
 * items over the SMs, its ring's shared-memory plan and grid barrier, made when the layer is
 * packed, and the launch. Used by cuda_sm90_experts.cu only.
 */
#ifndef W4A8MOE_CUDA_SM90_FUSED_H
#define W4A8MOE_CUDA_SM90_FUSED_H

#include "cuda_util.h"
#include "kernels/sm90_fused_decode.cuh"

typedef struct sm90_fused {
    int ready;             /* set up: the path may run (sm90_fused_setup) */
    int32_t *sched, *items; /* device: the blocks' item ranges and the items (sm90f_args) */
    unsigned *bar;          /* device: the grid barrier's count and generation */
    int grid, threads, smem, g;
    int codes_at, data_at, stages, stage_bytes, gps;
} sm90_fused;

/* Whether a layer of this shape can take the path (1), else 0 and why: g = 64 or 128, at most
 * SM90F_MAX_PAIRS routed experts a token, and the token's codes and a ring of at least
 * SM90F_MIN_STAGES stages of gps groups (1, 2 or 4) in an SM's shared memory (optin bytes a
 * block; 0: the sm_90 figure). */
#define SM90F_MIN_STAGES 8
int sm90_fused_fits(int64_t H, int64_t I, int k, int g, int gps, int optin, char *why, size_t cap);

/* Plans the path for a layer already packed (gps: groups a stage; nrb1, nrb2: its matrices'
 * 64-row blocks; scaled2: GEMM2's blocks carry their scales) on sms SMs: the items placed, the
 * barrier zeroed. A shape sm90_fused_fits refuses leaves f->ready 0 and returns OK. */
w4a8moe_status sm90_fused_setup(sm90_fused *f, int64_t H, int64_t I, int k, int g, int gps, int64_t nrb1,
                                int64_t nrb2, int scaled2, int sms, w4a8moe_err *err);

/* Launches the kernel with a's pointers (its schedule and ring fields filled from f). */
cudaError_t sm90_fused_launch(const sm90_fused *f, sm90f_args a, cudaStream_t st, int pdl);

void sm90_fused_free(sm90_fused *f);

#endif /* W4A8MOE_CUDA_SM90_FUSED_H */
