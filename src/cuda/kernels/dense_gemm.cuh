/*
 * dense_gemm.cuh — device code of `cuda_dense` (src/cuda/cuda_dense_experts.cu): unquantised
 * shared experts, contract steps 3, 4 and 6 without the fp8 quantisations of steps 2 and 5
 * (docs/formats.md, "Shared experts"): h = W13 · x on the caller's x widened to f32,
 * y = act(h), o = W2 · y.
 *
 * Numerics, chosen to be the CPU dense path's (src/cpu/cpu_experts_dense.c) operation for
 * operation: per (row, channel) the products w * x are summed with f32 FMAs over blocks of
 * DENSE_KB consecutive inputs in ascending k, each block sum is widened and added to an f64
 * total in ascending block order, and the total is rounded once to f32. So both GEMMs give the
 * `cpu` backend's bits; only the activation's expf may differ from glibc's in the last bit
 * (docs/numerics.md).
 *
 * Tiling (simple on purpose; speed is secondary for a path that runs one small expert): a block
 * of 256 threads owns DENSE_BM = 32 rows of one expert by DENSE_BW = 32 weight rows, and walks
 * K in blocks of DENSE_KB = 128 inputs staged in shared memory (2 x 32 x 129 f32 = 33 KB; the
 * +1 column keeps the 16 channels a warp reads in distinct banks). Thread (c, slot) computes
 * rows 2*slot and 2*slot+1 against tile weight rows c and 16 + c:
 *   gated (GEMM1): tile rows 0..15 are gate channels ch0..ch0+15, rows 16..31 the matching up
 *                  channels, so each thread holds a gate and its up value and applies the
 *                  activation itself; 16 output channels a block;
 *   plain (GEMM2): tile rows are channels ch0..ch0+31; 32 output channels a block.
 * Grid (ceil(R / 32), channel tiles, E_local): R = T * k bounds the rows without a host
 * synchronisation; a block whose rows start past its expert's last row returns at once.
 */
#ifndef W4A8MOE_DENSE_GEMM_CUH
#define W4A8MOE_DENSE_GEMM_CUH

#include "../../common/quant.h"
#include "contract_math.cuh"

#include <stdint.h>
#include "pdl.cuh"

#define DENSE_KB 128 /* inputs per f32 block sum: the CPU dense path's DENSE_KB */
#define DENSE_BM 32  /* rows per block */
#define DENSE_BW 32  /* weight rows per block */
#define DENSE_LD (DENSE_KB + 1)
#define DENSE_THREADS 256

struct dense_gemm_args {
    const void *w;             /* [nl, n_wrows, K] bf16 or f32; n_wrows = 2 * n_out (gated:
                                  gate rows then up rows) or n_out */
    int64_t n_out;             /* output channels: I (gated) or H (plain) */
    int64_t K;                 /* H (gated) or I (plain) */
    const int32_t *offsets;    /* [nl + 1]: rows of local expert e are [off[e], off[e+1]) */
    const void *x;             /* gated: the caller's x [T, H] in io dtype x_dt */
    int x_dt;
    const int32_t *row_token;  /* gated: token of each row [R] */
    const float *in;           /* plain: input rows [R, K] f32 */
    float *out;                /* [R, n_out] f32 */
    int act;                   /* w4a8moe_activation */
};

template <bool BF16>
__device__ __forceinline__ float dense_w_load(const void *w, int64_t i)
{
    if (BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

template <bool BF16, bool GATED>
__global__ void __launch_bounds__(DENSE_THREADS) dense_gemm_kernel(dense_gemm_args a)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    static_assert(DENSE_KB == 128 && DENSE_BM == 32 && DENSE_BW == 32 && DENSE_THREADS == 256,
                  "the index arithmetic below assumes these sizes");
    __shared__ float xs[DENSE_BM * DENSE_LD];
    __shared__ float ws[DENSE_BW * DENSE_LD];
    __shared__ int64_t xbase[DENSE_BM]; /* gated: offset of each row's x, -1 past the rows */
    const int e = blockIdx.z;
    const int64_t end = a.offsets[e + 1];
    const int64_t row0 = (int64_t)a.offsets[e] + (int64_t)blockIdx.x * DENSE_BM;
    if (row0 >= end) return; /* uniform over the block, before any barrier */
    const int nrows = (int)(end - row0 < DENSE_BM ? end - row0 : DENSE_BM);
    const int64_t n = a.n_out, K = a.K;
    const int64_t ch0 = (int64_t)blockIdx.y * (GATED ? DENSE_BW / 2 : DENSE_BW);
    const char *wbase = (const char *)a.w + (size_t)e * (size_t)(GATED ? 2 * n : n) * (size_t)K *
                                                (BF16 ? 2 : 4);
    if (GATED && threadIdx.x < DENSE_BM)
        xbase[threadIdx.x] = (int)threadIdx.x < nrows ? (int64_t)a.row_token[row0 + threadIdx.x] * K : -1;
    const int c = threadIdx.x & 15, slot = threadIdx.x >> 4;
    double tot[2][2] = {{0.0, 0.0}, {0.0, 0.0}};
    for (int64_t k0 = 0; k0 < K; k0 += DENSE_KB) {
        const int kn = (int)(K - k0 < DENSE_KB ? K - k0 : DENSE_KB);
        __syncthreads(); /* xbase written; the previous block's tiles read */
        for (int i = threadIdx.x; i < DENSE_BM * DENSE_KB; i += DENSE_THREADS) {
            const int r = i >> 7, kk = i & (DENSE_KB - 1);
            float xv = 0.0f, wv = 0.0f;
            if (kk < kn) {
                if (GATED) {
                    if (xbase[r] >= 0) xv = contract_widen_at(a.x, a.x_dt, xbase[r] + k0 + kk);
                } else if (r < nrows) {
                    xv = a.in[(row0 + r) * K + k0 + kk];
                }
                /* tile weight row r: its output channel, and its row in the expert's matrix */
                const int64_t ch = GATED ? ch0 + (r & 15) : ch0 + r;
                const int64_t wrow = GATED && r >= 16 ? n + ch : ch;
                if (ch < n) wv = dense_w_load<BF16>(wbase, wrow * K + k0 + kk);
            }
            xs[r * DENSE_LD + kk] = xv;
            ws[r * DENSE_LD + kk] = wv;
        }
        __syncthreads();
        const float *x0 = xs + (2 * slot) * DENSE_LD, *x1 = x0 + DENSE_LD;
        const float *w0 = ws + c * DENSE_LD, *w1 = ws + (16 + c) * DENSE_LD;
        float acc00 = 0.0f, acc01 = 0.0f, acc10 = 0.0f, acc11 = 0.0f;
        for (int kk = 0; kk < kn; kk++) { /* ascending k, fused as the CPU kernels' fmaf */
            const float a0 = x0[kk], a1 = x1[kk], b0 = w0[kk], b1 = w1[kk];
            acc00 = __fmaf_rn(b0, a0, acc00);
            acc01 = __fmaf_rn(b1, a0, acc01);
            acc10 = __fmaf_rn(b0, a1, acc10);
            acc11 = __fmaf_rn(b1, a1, acc11);
        }
        tot[0][0] = __dadd_rn(tot[0][0], (double)acc00);
        tot[0][1] = __dadd_rn(tot[0][1], (double)acc01);
        tot[1][0] = __dadd_rn(tot[1][0], (double)acc10);
        tot[1][1] = __dadd_rn(tot[1][1], (double)acc11);
    }
    for (int r = 0; r < 2; r++) {
        const int rr = 2 * slot + r;
        if (rr >= nrows) continue;
        float *o = a.out + (row0 + rr) * n;
        if (GATED) {
            const int64_t ch = ch0 + c;
            if (ch < n) o[ch] = contract_activate(a.act, (float)tot[r][0], (float)tot[r][1]);
        } else {
            if (ch0 + c < n) o[ch0 + c] = (float)tot[r][0];
            if (ch0 + 16 + c < n) o[ch0 + 16 + c] = (float)tot[r][1];
        }
    }
}

#endif /* W4A8MOE_DENSE_GEMM_CUH */
