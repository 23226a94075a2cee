/*
 * sm90_convert_ss_gemm.cuh — lab version (dev/kernels/sm90_w4a8_gemm.cu, version 'a' and 'b';
 * not in the library) of the promoting f16 kernel with the int4 → f16 conversion taken out of
 * the consumer warpgroups: a converter warpgroup widens each stage's int4 weights into an f16 A
 * tile in shared memory (the 128-byte swizzled K-major layout the tensor copy writes for the
 * activations), and the consumers run wgmma with both operands from shared memory.
 *
 * Why (docs/PERFORMANCE.md, rounds 6-8): GEMM1 must promote each K group in f32 (the tensor
 * core's truncating sum over all of K flips requantised codes), which costs a second BN/2 of
 * accumulator registers; with the A fragments and the conversion in the same threads that caps
 * the promoting kernel at BN = 128 (353-366 TFLOP/s on Mixtral's gate/up), and the scaled kernel
 * that reaches BN = 256 (459-470) is not accurate enough for GEMM1. Here a consumer thread holds
 * only the two accumulators (BN = 192: 96 + 96 of its 216 registers; the converter warpgroup
 * keeps 72, which its unrolled stores need without spilling) and never converts; the conversion
 * (8 f16x2 a k32 step a thread, for 2 x 64 rows) runs beside the wgmmas in its own warpgroup.
 * Accuracy: the promoting kernel's (same group sums, same promotion).
 *
 * CTA: warpgroup 0 converts (its thread 0 also issues the copies, refilling the slot of stage
 * kb - 2 while converting stage kb, so it never waits on the consumers of the stage just
 * converted), warpgroups 1 and 2 consume 64 weight rows each against BN routed rows. Per stage
 * (64 K): the activation box (BN x 128 B), two f16 A tiles (64 x 128 B), two raw int4 blocks
 * (2 KB, the f16 fragment layout of sm90_pack_kernel), and three barriers: full (the copies),
 * conv (128 converter arrivals, after each thread's proxy fence), empty (one arrival a consumer
 * warp, after its wgmmas have finished reading the stage).
 */
#ifndef W4A8MOE_SM90_CONVERT_SS_GEMM_CUH
#define W4A8MOE_SM90_CONVERT_SS_GEMM_CUH

#include "../../src/cuda/kernels/sm90_grouped_gemm.cuh"

/* d[64 x N] (+)= A[64 x 16] (shared, f16, K-major) * B[N x 16]^T (shared, f16), f32. */
__device__ __forceinline__ void sm90x_wgmma_ss_n128(float (&d)[64], uint64_t da, uint64_t db, int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40), SM90_R8(48), SM90_R8(56)
                 : "l"(da), "l"(db), "r"(scale_d));
#endif
}
__device__ __forceinline__ void sm90x_wgmma_ss_n192(float (&d)[96], uint64_t da, uint64_t db, int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
                 "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
                 "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95}, "
                 "%96, %97, p, 1, 1, 0, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40), SM90_R8(48), SM90_R8(56), SM90_R8(64), SM90_R8(72), SM90_R8(80), SM90_R8(88)
                 : "l"(da), "l"(db), "r"(scale_d));
#endif
}
template <int BN>
__device__ __forceinline__ void sm90x_wgmma_ss(float (&d)[BN / 2], uint64_t da, uint64_t db, int scale_d)
{
    if constexpr (BN == 128) sm90x_wgmma_ss_n128(d, da, db, scale_d);
    else sm90x_wgmma_ss_n192(d, da, db, scale_d);
}

/* Shared memory: STAGES activation boxes, STAGES x 2 A tiles, STAGES x 2 raw int4 blocks, then
 * full, conv, empty [STAGES] each. Boxes and tiles stay 1024-aligned (the swizzle atom). */
template <int BN, int STAGES>
struct sm90x_plan {
    static constexpr int act_bytes = BN * 128, a_bytes = 64 * 128, raw_bytes = 2048;
    static constexpr int a_offset = STAGES * act_bytes;
    static constexpr int raw_offset = a_offset + STAGES * 2 * a_bytes;
    static constexpr int bar_offset = raw_offset + STAGES * 2 * raw_bytes;
    static constexpr int bytes = bar_offset + 3 * STAGES * 8 + 1024;
};

/* Byte offset of the f16 pair (row r, k .. k+1) of a 64 x 64 A tile, 128-byte swizzle. */
__device__ __forceinline__ int sm90x_a_offset(int r, int k)
{
    const int byte = 2 * k;
    return r * 128 + ((((byte >> 4) ^ (r & 7)) & 7) << 4) + (byte & 15);
}

template <int BN, int STAGES, int GSTEPS, bool GATED>
static __global__ void __launch_bounds__(SM90_THREADS, 1)
    sm90x_gemm_kernel(const __grid_constant__ CUtensorMap tmap_act, sm90_gemm_args p)
{
#if SM90_ENABLED
    using plan = sm90x_plan<BN, STAGES>;
    extern __shared__ __align__(1024) char smem_raw[];
    char *smem = (char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    uint64_t *full = (uint64_t *)(smem + plan::bar_offset), *conv = full + STAGES, *empty = conv + STAGES;
    int64_t m, n;
    if (!sm90_raster(blockIdx.x, *p.ntiles, p.nrb / 2, &m, &n)) return;
    const int2 tile = p.tiles[m];
    const int64_t e = tile.x;
    const int row0 = tile.y, row_end = p.offsets[e + 1];
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&conv[s], 128);
            sm90_bar_init(&empty[s], SM90_CONSUMERS * 4);
        }
        sm90_bar_init_fence();
    }
    __syncthreads();
    const int wg = threadIdx.x / 128, t = threadIdx.x & 127;
    const int64_t KB = (p.K + 63) / 64, nks = p.K / 32;
    if (wg == 0) { /* converter, and thread 0 the copies */
        sm90_reg_dealloc<72>();
        const int64_t blk = p.w_block ? p.w_block : 2048;
        const char *wbase = (const char *)p.wq + ((e * p.nrb + 2 * n) * KB) * blk;
        const int64_t wstride = KB * blk;
        auto issue = [&](int64_t kb) {
            const int s = (int)(kb % STAGES);
            sm90_bar_expect_tx(&full[s], plan::act_bytes + 2 * plan::raw_bytes);
            sm90_tma_load_2d(smem + s * plan::act_bytes, &tmap_act, (int32_t)(kb * 64), row0, &full[s]);
            for (int c = 0; c < 2; c++)
                sm90_bulk_load(smem + plan::raw_offset + (s * 2 + c) * plan::raw_bytes,
                               wbase + c * wstride + kb * blk, plan::raw_bytes, &full[s]);
        };
        if (t == 0) {
            sm90_prefetch_tmap(&tmap_act);
            for (int64_t kb = 0; kb < KB && kb < STAGES; kb++) issue(kb);
        }
        const int warp = t >> 5, lane = t & 31, gid = lane >> 2, tig = lane & 3;
        for (int64_t kb = 0; kb < KB; kb++) {
            const int s = (int)(kb % STAGES);
            if (t == 0 && kb >= 2 && kb - 2 + STAGES < KB) { /* refill the slot of stage kb - 2 */
                const int64_t kr = kb - 2 + STAGES;
                sm90_bar_wait(&empty[kr % STAGES], (uint32_t)(((kb - 2) / STAGES) & 1));
                issue(kr);
            }
            sm90_bar_wait(&full[s], (uint32_t)((kb / STAGES) & 1));
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const uint2 *raw = (const uint2 *)(smem + plan::raw_offset + (s * 2 + c) * plan::raw_bytes) + t * 2;
                char *a = smem + plan::a_offset + (s * 2 + c) * plan::a_bytes;
                const int r_lo = warp * 16 + gid, r_hi = r_lo + 8;
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const uint2 v = raw[j];
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int k = 32 * j + 16 * h + 2 * tig;
                        *(uint32_t *)(a + sm90x_a_offset(r_lo, k)) = sm90_int4x2_to_f16x2(v.x, 2 * h);
                        *(uint32_t *)(a + sm90x_a_offset(r_hi, k)) = sm90_int4x2_to_f16x2(v.y, 2 * h);
                        *(uint32_t *)(a + sm90x_a_offset(r_lo, k + 8)) = sm90_int4x2_to_f16x2(v.x, 2 * h + 1);
                        *(uint32_t *)(a + sm90x_a_offset(r_hi, k + 8)) = sm90_int4x2_to_f16x2(v.y, 2 * h + 1);
                    }
                }
            }
            sm90_fence_proxy_async(); /* the A stores (and raw reads) before the async proxy's use */
            sm90_bar_arrive(&conv[s]);
        }
    } else { /* consumers */
        sm90_reg_alloc<216>();
        const int c = wg - 1, warp = t >> 5, lane = t & 31, gid = lane >> 2;
        const int64_t rb = 2 * n + c, groups = p.K / p.g;
        constexpr int CH = GSTEPS < 2 ? GSTEPS : 2;
        const float *ws = p.ws + ((e * p.nrb + rb) * groups) * 64 + warp * 16 + gid;
        float acc[BN / 2], tmp[BN / 2];
#pragma unroll
        for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
        for (int64_t kb = 0; kb < KB; kb++) {
            const int s = (int)(kb % STAGES);
            sm90_bar_wait(&full[s], (uint32_t)((kb / STAGES) & 1));
            sm90_bar_wait(&conv[s], (uint32_t)((kb / STAGES) & 1));
            const uint64_t da = sm90_desc_k128(smem + plan::a_offset + (s * 2 + c) * plan::a_bytes);
            const uint64_t db = sm90_desc_k128(smem + s * plan::act_bytes);
#pragma unroll
            for (int ch = 0; ch < 2 / CH; ch++) {
                const int64_t ks0 = kb * 2 + ch * CH;
                if (ks0 >= nks) break;
                const bool group_start = ks0 % GSTEPS == 0, group_end = (ks0 + CH) % GSTEPS == 0;
                const int64_t b = ks0 / GSTEPS;
                float s_lo = 0.0f, s_hi = 0.0f;
                if (group_end) {
                    s_lo = __ldg(ws + b * 64);
                    s_hi = __ldg(ws + b * 64 + 8);
                }
#pragma unroll
                for (int i = 0; i < BN / 2; i++) sm90_fence_reg(tmp[i]);
                sm90_wgmma_fence();
#pragma unroll
                for (int q = 0; q < 2 * CH; q++) { /* k16 steps of the chunk: +32 bytes each */
                    const uint64_t adv = (uint64_t)(((ch * CH * 2 + q) * 32) >> 4);
                    sm90x_wgmma_ss<BN>(tmp, da + adv, db + adv, !(group_start && q == 0));
                }
                sm90_wgmma_commit();
                sm90_wgmma_wait<0>();
#pragma unroll
                for (int i = 0; i < BN / 2; i++) sm90_fence_reg(tmp[i]);
                if (group_end) {
#pragma unroll
                    for (int i = 0; i < BN / 2; i++) acc[i] = fmaf((i & 2) ? s_hi : s_lo, tmp[i], acc[i]);
                }
            }
            __syncwarp();
            if (lane == 0) sm90_bar_arrive(&empty[s]); /* the stage was read by wgmma only */
        }
        sm90_epilogue<BN, GATED>(p, e, rb, row0, row_end, acc);
    }
#endif
}

template <int BN, int STAGES, bool GATED>
static cudaError_t sm90x_gemm_launch(const CUtensorMap &tm, const sm90_gemm_args &p, unsigned tiles_bound,
                                     cudaStream_t st)
{
    using plan = sm90x_plan<BN, STAGES>;
    const int gs = p.g / 32;
    auto kern = gs == 1 ? sm90x_gemm_kernel<BN, STAGES, 1, GATED>
              : gs == 2 ? sm90x_gemm_kernel<BN, STAGES, 2, GATED> : sm90x_gemm_kernel<BN, STAGES, 4, GATED>;
    if (gs != 1 && gs != 2 && gs != 4) return cudaErrorInvalidValue;
    cudaError_t err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, plan::bytes);
    if (err != cudaSuccess) return err;
    kern<<<tiles_bound * (unsigned)(p.nrb / 2), SM90_THREADS, plan::bytes, st>>>(tm, p);
    return cudaGetLastError();
}

#endif /* W4A8MOE_SM90_CONVERT_SS_GEMM_CUH */
