/*
 * sm90_scaled_gemm.cuh — the fast kernel of the cuda_sm90 experts: f16 wgmma with each weight's
 * group scale folded into its f16 value, so the whole K loop accumulates in the tensor core and
 * a warpgroup converts the next k32 step while its wgmmas on the current one run.
 *
 * The products are exact: q·S[n, b]·2^k is exact in f16 when S has at most 8 significant bits
 * (bf16 or e4m3 scales: q has at most 3 significant bits besides its sign, f16 has 11) and the
 * per-row power of two 2^k puts every scale of the row in f16's normal range; 2^-k goes into
 * the channel scale. The sum is not: the tensor core's f32 accumulator truncates each addition,
 * and over all of K (no promotion) that drifts to 2e-6..2e-5 relative (lab, K = 1024..14336),
 * against 2e-7 for the promoting kernel (sm90_grouped_gemm.cuh). That is harmless for GEMM2,
 * whose output is the layer's, but flips too many requantised codes after GEMM1 for the GPU
 * tolerance's mean, so the backend runs GEMM1 on the promoting kernel and GEMM2 here, when the
 * down projection's scales pass sm90s_row_shift_kernel's check (docs/numerics.md, "Tolerance").
 *
 * CTA: as sm90_gemm_kernel (one producer warpgroup, two consumer warpgroups of 64 weight rows,
 * BN routed rows, sm90_raster), with a ring of STAGES stages of 64 K: the f16 activation box
 * (BN x 128 bytes, 128-byte swizzle, all boxes first so each stays 1024-aligned) and per
 * consumer one weight block: 2 KB of int4 in the f16 kernels' layout followed by the stage's
 * scales.
 *
 * Weight block (e, row block rb, K block kb) of sm90s_block_bytes(g) bytes:
 *   [0, 2048)     packed int4, sm90_pack_kernel's f16 layout (128 threads x 2 k32 steps, uint2)
 *   [2048, ...)   f16 scales S[n, b]·2^k[n], [groups in the stage][64 physical rows]: one group
 *                 (g >= 64) or two (g = 32, one a k32 step); padding rows and steps hold 0.
 */
#ifndef W4A8MOE_SM90_SCALED_GEMM_CUH
#define W4A8MOE_SM90_SCALED_GEMM_CUH

#include "sm90_grouped_gemm.cuh"

#define SM90S_BK 64            /* K per stage */
#define SM90S_INT4_BYTES 2048  /* 64 rows x 64 K / 2 */
#define SM90S_SLOT_BYTES 2304  /* int4 + at most two groups' scales */

__host__ __device__ __forceinline__ int sm90s_block_bytes(int g)
{
    return SM90S_INT4_BYTES + (g == 32 ? 256 : 128);
}

/* Byte offset of weight block (expert e, row block rb, K block kb) in a matrix's blocks. */
__host__ __device__ __forceinline__ int64_t sm90s_block_offset(int64_t e, int64_t nrb, int64_t rb, int64_t KB,
                                                               int64_t kb, int g)
{
    return ((e * nrb + rb) * KB + kb) * sm90s_block_bytes(g);
}

/* Within a block: the uint2 of thread t for k32 step j (0, 1) and the f16 scale of that step
 * for physical row r (0..63) of the block. */
__host__ __device__ __forceinline__ int sm90s_word_index(int t, int j) { return t * 2 + j; }
__host__ __device__ __forceinline__ int sm90s_scale_index(int g, int j, int r) { return (g == 32 ? j * 64 : 0) + r; }

/* ---- packing (once, at create) ---------------------------------------------------------- */

/* For physical row p: the power of two 2^k that puts the row's largest scale in [2^11, 2^12),
 * written as shift[p] = k, and wc[p] = C[row]·2^-k; returns 1 when some S·2^k has more than 8
 * significant bits (f16 or f32 scales) or falls below f16's normal range: then q·S·2^k would
 * round, and the matrix must run the promoting kernel. scales [rows, groups] (dt: 0 bf16,
 * 1 f16, 2 f32), channel NULL: ones. Host-callable for tests/test_sm90_layout.cu. */
__host__ __device__ inline int sm90s_row_shift_one(int64_t p, const void *scale, int dt, int64_t n_out,
                                                   int gated, int64_t groups, const float *channel,
                                                   int32_t *shift, float *wc)
{
    int64_t row = sm90_logical_row(p, n_out, gated);
    if (row < 0) {
        shift[p] = 0;
        wc[p] = 0.0f;
        return 0;
    }
    float mx = 0.0f;
    for (int64_t b = 0; b < groups; b++) mx = fmaxf(mx, fabsf(contract_widen_at(scale, dt, row * groups + b)));
    int e = 0;
    if (mx > 0.0f) frexpf(mx, &e); /* mx in [2^(e-1), 2^e) */
    const int k = mx > 0.0f ? 12 - e : 0;
    int bad = !isfinite(mx);
    for (int64_t b = 0; b < groups && !bad; b++) {
        float v = ldexpf(contract_widen_at(scale, dt, row * groups + b), k);
        if (v != 0.0f && (fabsf(v) < 0x1p-14f || (w4a8moe_f32_bits(v) & 0xffffu) != 0u)) bad = 1;
    }
    shift[p] = k;
    wc[p] = ldexpf(channel ? channel[row] : 1.0f, -k);
    return bad;
}

/* One thread per physical row; *inexact |= the rows' verdicts. */
static __global__ void sm90s_row_shift_kernel(const void *__restrict__ scale, int dt, int64_t n_out,
                                              int gated, int64_t groups, int64_t rows_pad,
                                              const float *__restrict__ channel, int32_t *__restrict__ shift,
                                              float *__restrict__ wc, int32_t *__restrict__ inexact)
{
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p < rows_pad && sm90s_row_shift_one(p, scale, dt, n_out, gated, groups, channel, shift, wc))
        atomicOr(inexact, 1);
}

/* The scales of every weight block (see the header): f16 number i (one thread each). wq: the
 * matrix's blocks [NRB, KB, sm90s_block_bytes(g)] (the int4 part written by sm90_pack_kernel). */
__host__ __device__ inline void sm90s_pack_scales_one(int64_t i, const void *scale, int dt, int64_t n_out,
                                                      int gated, int64_t K, int g, int64_t rows_pad,
                                                      const int32_t *shift, char *wq)
{
    const int per = g == 32 ? 128 : 64;
    const int64_t KB = (K + SM90S_BK - 1) / SM90S_BK, groups = K / g;
    if (i >= rows_pad / 64 * KB * per) return;
    const int slot = (int)(i % per), gi = slot / 64, r = slot % 64;
    const int64_t kb = (i / per) % KB, rb = (i / per) / KB, p = rb * 64 + r;
    const int64_t ks = kb * 2 + gi, b = g == 32 ? ks : kb * SM90S_BK / g;
    const int64_t row = sm90_logical_row(p, n_out, gated);
    float v = 0.0f;
    if (row >= 0 && b < groups && ks < K / 32) v = ldexpf(contract_widen_at(scale, dt, row * groups + b), shift[p]);
    ((uint16_t *)(wq + sm90s_block_offset(0, 0, rb, KB, kb, g) + SM90S_INT4_BYTES))[slot] = w4a8moe_f32_to_f16(v);
}

static __global__ void sm90s_pack_scales_kernel(const void *__restrict__ scale, int dt, int64_t n_out,
                                                int gated, int64_t K, int g, int64_t rows_pad,
                                                const int32_t *__restrict__ shift, char *__restrict__ wq)
{
    sm90s_pack_scales_one((int64_t)blockIdx.x * blockDim.x + threadIdx.x, scale, dt, n_out, gated, K, g,
                          rows_pad, shift, wq);
}

/* ---- per forward --------------------------------------------------------------------------- */

/* Shared memory: STAGES activation boxes, then STAGES x 2 weight slots, then the barriers. */
template <int BN, int STAGES>
struct sm90s_smem_plan {
    static constexpr int act_bytes = BN * 128;
    static constexpr int w_offset = STAGES * act_bytes;
    static constexpr int bar_offset = w_offset + STAGES * SM90_CONSUMERS * SM90S_SLOT_BYTES;
    static constexpr int bytes = bar_offset + 2 * STAGES * 8 + 1024; /* + alignment slack */
    static constexpr int ctas = sm90_ctas_per_sm(BN, bytes); /* sm90_grouped_gemm.cuh */
};

/* The int4 (q + 8) nibbles i, i + 4 of w → f16x2 (q·s), exact under the header's condition:
 * q exactly (sm90_int4x2_to_f16x2) → q·s (exact). */
__device__ __forceinline__ uint32_t sm90s_scaled_f16x2(uint32_t w, int i, uint32_t s2)
{
    uint32_t r = sm90_int4x2_to_f16x2(w, i);
#if SM90_ENABLED
    asm("mul.rn.f16x2 %0, %0, %1;" : "+r"(r) : "r"(s2));
#endif
    return r;
}

/* One k32 step's A fragments (two k16 halves) from its packed words v and the scales of the
 * thread's two rows (f16, duplicated into both halves). */
__device__ __forceinline__ void sm90s_convert(uint2 v, uint32_t s_lo, uint32_t s_hi, uint32_t (&a)[2][4])
{
#pragma unroll
    for (int h = 0; h < 2; h++) {
        a[h][0] = sm90s_scaled_f16x2(v.x, 2 * h, s_lo);
        a[h][1] = sm90s_scaled_f16x2(v.y, 2 * h, s_hi);
        a[h][2] = sm90s_scaled_f16x2(v.x, 2 * h + 1, s_lo);
        a[h][3] = sm90s_scaled_f16x2(v.y, 2 * h + 1, s_hi);
    }
}

/* Reads k32 step j of a weight slot for this thread and converts it. */
__device__ __forceinline__ void sm90s_load_step(const char *slot, int j, int g, int t, uint32_t (&a)[2][4])
{
    const int r = (t >> 5) * 16 + ((t & 31) >> 2); /* the thread's first row: 16 warp + gid */
    const uint2 v = ((const uint2 *)slot)[sm90s_word_index(t, j)];
    const uint16_t *sc = (const uint16_t *)(slot + SM90S_INT4_BYTES);
    const uint32_t lo = sc[sm90s_scale_index(g, j, r)], hi = sc[sm90s_scale_index(g, j, r + 8)];
    sm90s_convert(v, lo | lo << 16, hi | hi << 16, a);
}

/* The consumer's K loop over K blocks [kb0, kb1) (a K part: sm90s_gemm_kernel): step ks's two
 * wgmmas are issued, then (wait<1>: step ks-1's are done, its A registers and, at a stage
 * boundary, its stage are free) step ks+1 is converted into the other register buffer while they
 * run. The ring counts from the part's first block. PSTEPS > 0: the wgmmas accumulate into tmp,
 * which is added into acc in f32 (rounding) every PSTEPS k32 steps, bounding how many truncating
 * tensor-core additions a sum sees (lab: GEMM1's accuracy); 0: straight into acc. */
template <int BN, int STAGES, int PSTEPS = 0>
__device__ __forceinline__ void sm90s_consume(const sm90_gemm_args &p, char *smem, uint64_t *full,
                                              uint64_t *empty, int wg, int64_t kb0, int64_t kb1,
                                              float (&acc)[BN / 2])
{
    using plan = sm90s_smem_plan<BN, STAGES>;
    const int t = threadIdx.x & 127, lane = t & 31;
    const int64_t KB = kb1 - kb0, nks = min(2 * KB, p.K / 32 - 2 * kb0); /* k32 steps of the part */
    char *wslots = smem + plan::w_offset + wg * SM90S_SLOT_BYTES;
    uint32_t a[2][2][4];
    float tmp[PSTEPS ? BN / 2 : 1];
    float(&dst)[BN / 2] = *reinterpret_cast<float(*)[BN / 2]>(PSTEPS ? tmp : acc);
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
    sm90_bar_wait(&full[0], 0);
    sm90s_load_step(wslots, 0, p.g, t, a[0]);
    for (int64_t kb = 0; kb < KB; kb++) {
        const int s = (int)(kb % STAGES);
        const uint64_t desc = sm90_desc_k128(smem + s * plan::act_bytes);
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int64_t ks = kb * 2 + j;
            if (ks >= nks) break;
            const bool first = PSTEPS && ks % PSTEPS == 0, last = PSTEPS && (ks % PSTEPS == PSTEPS - 1 || ks + 1 == nks);
            sm90_wgmma_fence();
            sm90_wgmma_f16<BN>(dst, a[j][0], desc + (uint64_t)((j * 64) >> 4), first ? 0 : 1);
            sm90_wgmma_f16<BN>(dst, a[j][1], desc + (uint64_t)((j * 64 + 32) >> 4), 1);
            sm90_wgmma_commit();
            if (last) {
                sm90_wgmma_wait<0>();
#pragma unroll
                for (int i = 0; i < BN / 2; i++) sm90_fence_reg(dst[i]);
#pragma unroll
                for (int i = 0; i < BN / 2; i++) acc[i] += dst[i];
            } else {
                sm90_wgmma_wait<1>();
            }
            if (j == 0 && kb > 0) { /* step ks - 1 was the last of stage kb - 1 */
                sm90_fence_proxy_async(); /* each lane's ld.shared of the slot before its refill */
                __syncwarp();
                if (lane == 0) sm90_bar_arrive(&empty[(kb - 1) % STAGES]);
            }
            if (ks + 1 < nks) {
                const int64_t nkb = (ks + 1) / 2;
                const int ns = (int)(nkb % STAGES);
                if (j == 1) sm90_bar_wait(&full[ns], (uint32_t)((nkb / STAGES) & 1));
                sm90s_load_step(wslots + ns * SM90_CONSUMERS * SM90S_SLOT_BYTES, j ^ 1, p.g, t, a[j ^ 1]);
            }
        }
    }
    sm90_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < BN / 2; i++) sm90_fence_reg(acc[i]);
}

/* A K part's epilogue (p.ksplit > 1, plain GEMMs only): the warp's 16 rows of block rb, the
 * sums unscaled into plane `split` (p.out, or p.part + (split - 1) * p.plane), in the layout of
 * sm90_epilogue_slice's plain output. */
template <int BN>
__device__ __forceinline__ void sm90s_epilogue_part(const sm90_gemm_args &p, int64_t rb, int split, int row0,
                                                    int row_end, const float (&acc)[BN / 2])
{
    const int t = threadIdx.x & 127, warp = t >> 5, gid = (t & 31) >> 2, tig = t & 3;
    float *dst = split == 0 ? p.out : p.part + (int64_t)(split - 1) * p.plane;
    const int64_t ch_lo = rb * 64 + warp * 16 + gid;
#pragma unroll
    for (int j = 0; j < BN / 8; j++)
#pragma unroll
        for (int c = 0; c < 2; c++) {
            const int row = row0 + j * 8 + tig * 2 + c;
            if (row >= row_end) continue;
            if (ch_lo < p.n_out) dst[(int64_t)row * p.n_out + ch_lo] = acc[4 * j + c];
            if (ch_lo + 8 < p.n_out) dst[(int64_t)row * p.n_out + ch_lo + 8] = acc[4 * j + 2 + c];
        }
}

/* The K parts summed (plain GEMM2 with ksplit > 1): out[r, h] = s_r * (C[e, h] * sum), the sum
 * over the planes in order (plane 0 is out itself, rewritten in place) and the scales as
 * sm90_epilogue_slice applies them; e is row r's expert (offsets). Grid (ceil(n_out / 1024),
 * rows bound), block 256, four channels a thread (n_out % 4 == 0); rows at or past offsets[nl]
 * exit. */
static __global__ void sm90s_split_reduce_kernel(sm90_gemm_args p, int nl)
{
    pdl_enter(); /* kernels/pdl.cuh: before any global access */
    const int64_t row = blockIdx.y, h = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (row >= p.offsets[nl] || h >= p.n_out) return;
    int lo = 0, hi = nl; /* the last expert whose first row is at or before row */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (p.offsets[mid] <= row) lo = mid;
        else hi = mid;
    }
    const int64_t i = row * p.n_out + h;
    float4 sum = *(const float4 *)(p.out + i);
    for (int s = 1; s < p.ksplit; s++) {
        const float4 v = *(const float4 *)(p.part + (int64_t)(s - 1) * p.plane + i);
        sum.x += v.x;
        sum.y += v.y;
        sum.z += v.z;
        sum.w += v.w;
    }
    const float sa = p.act_scale[row];
    const float4 c = *(const float4 *)(p.wc + (int64_t)lo * p.nrb * 64 + h);
    *(float4 *)(p.out + i) = make_float4(sa * (c.x * sum.x), sa * (c.y * sum.y), sa * (c.z * sum.z),
                                         sa * (c.w * sum.w));
}

/*
 * Grid: (M tiles bound x NRB/2 x K parts) CTAs, rastered by sm90_raster (a tile's K parts
 * neighbours; plain GEMMs only: p.ksplit, then sm90s_split_reduce_kernel); block SM90_THREADS;
 * dynamic shared memory sm90s_smem_plan::bytes. tmap_act: the [R, K] f16 input with a (64, BN) box and
 * the 128-byte swizzle (sm90_tmap_act(..., true)). p.wq: the weight blocks; p.ws unused; p.wc:
 * C·2^-k per physical row.
 */
template <int BN, int STAGES, bool GATED, int PSTEPS = 0>
static __global__ void __launch_bounds__(SM90_THREADS, (sm90s_smem_plan<BN, STAGES>::ctas))
    sm90s_gemm_kernel(const __grid_constant__ CUtensorMap tmap_act, sm90_gemm_args p)
{
#if SM90_ENABLED
    using plan = sm90s_smem_plan<BN, STAGES>;
    extern __shared__ __align__(1024) char smem_raw[];
    char *smem = (char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    uint64_t *full = (uint64_t *)(smem + plan::bar_offset), *empty = full + STAGES;

    sm90_cta cta;
    if (!sm90_cta_setup<STAGES, SM90_CONSUMERS * 4>(p, full, empty, &cta)) return;
    const int64_t e = cta.e, n = cta.n;
    const int row0 = cta.row0, row_end = cta.row_end;
    const int wg = threadIdx.x / 128;

    const int64_t KB = (p.K + SM90S_BK - 1) / SM90S_BK;
    const int ks = !GATED && p.ksplit > 1 ? p.ksplit : 1; /* K parts [kb0, kb1) of the tile */
    const int64_t kb0 = cta.split * KB / ks, kb1 = (cta.split + 1) * KB / ks;
    if (wg == 0) { /* producer */
        sm90_reg_dealloc<sm90_producer_regs(plan::ctas)>();
        if (threadIdx.x == 0) {
            sm90_prefetch_tmap(&tmap_act);
            const int blk = sm90s_block_bytes(p.g);
            for (int64_t kb = kb0; kb < kb1; kb++) {
                const int64_t i = kb - kb0; /* the ring counts from the part's first block */
                const int s = (int)(i % STAGES);
                sm90_bar_wait(&empty[s], (uint32_t)(((i / STAGES) & 1) ^ 1));
                sm90_bar_expect_tx(&full[s], (uint32_t)(plan::act_bytes + SM90_CONSUMERS * blk));
                sm90_tma_load_2d(smem + s * plan::act_bytes, &tmap_act, (int32_t)(kb * SM90S_BK), row0, &full[s]);
                for (int c = 0; c < SM90_CONSUMERS; c++)
                    sm90_bulk_load(smem + plan::w_offset + (s * SM90_CONSUMERS + c) * SM90S_SLOT_BYTES,
                                   (const char *)p.wq + sm90s_block_offset(e, p.nrb, 2 * n + c, KB, kb, p.g),
                                   (uint32_t)blk, &full[s]);
            }
        }
    } else { /* consumers */
        sm90_reg_alloc<sm90_consumer_regs(plan::ctas)>();
        const int c = wg - 1;
        const int64_t rb = 2 * n + c;
        float acc[BN / 2];
        sm90s_consume<BN, STAGES, PSTEPS>(p, smem, full, empty, c, kb0, kb1, acc);
        if (ks > 1) sm90s_epilogue_part<BN>(p, rb, cta.split, row0, row_end, acc);
        else sm90_epilogue<BN, GATED>(p, e, rb, row0, row_end, acc);
    }
#endif
}

template <int BN, int STAGES, bool GATED, int PSTEPS = 0>
static cudaError_t sm90s_gemm_launch(const CUtensorMap &tm, const sm90_gemm_args &p, unsigned tiles_bound,
                                     cudaStream_t st)
{
    using plan = sm90s_smem_plan<BN, STAGES>;
    if (p.g != 32 && p.g % 64) return cudaErrorInvalidValue;
    auto kern = sm90s_gemm_kernel<BN, STAGES, GATED, PSTEPS>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, plan::bytes);
    if (e == cudaSuccess && plan::ctas > 1) /* room for two or three rings an SM */
        e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    const unsigned ks = !GATED && p.ksplit > 1 ? (unsigned)p.ksplit : 1u;
    unsigned grid = tiles_bound * (unsigned)(p.nrb / 2) * ks;
    kern<<<grid, SM90_THREADS, plan::bytes, st>>>(tm, p);
    return cudaGetLastError();
}

#endif /* W4A8MOE_SM90_SCALED_GEMM_CUH */
