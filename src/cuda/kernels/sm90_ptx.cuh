/*
 * sm90_ptx.cuh — the Hopper instructions the cuda_sm90 kernels use, one thin wrapper each:
 * mbarrier (init, expect-tx, arrive, parity wait), the bulk copy engine (1-D bulk copy and 2-D
 * tensor copy, both completing on an mbarrier), wgmma (fence / commit / wait, the e4m3 and f16 MMAs
 * with A in registers and B from shared memory), its shared-memory descriptor, and setmaxnreg.
 *
 * Everything here compiles to nothing outside sm_90a (the build also makes sm_89 code, where
 * the cuda_sm90 kernels are never launched: the device predicate asks for sm_90).
 */
#ifndef W4A8MOE_SM90_PTX_CUH
#define W4A8MOE_SM90_PTX_CUH

#include <stdint.h>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SM90_ENABLED 1
#else
#define SM90_ENABLED 0
#endif

__device__ __forceinline__ uint32_t sm90_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* ---- mbarrier ---------------------------------------------------------------------------- */

__device__ __forceinline__ void sm90_bar_init(uint64_t *bar, uint32_t count)
{
#if SM90_ENABLED
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sm90_smem_addr(bar)), "r"(count));
#endif
}

/* Makes the barrier inits visible to the copy engine (the async proxy). */
__device__ __forceinline__ void sm90_bar_init_fence(void)
{
#if SM90_ENABLED
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

__device__ __forceinline__ void sm90_bar_expect_tx(uint64_t *bar, uint32_t bytes)
{
#if SM90_ENABLED
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sm90_smem_addr(bar)),
                 "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void sm90_bar_arrive(uint64_t *bar)
{
#if SM90_ENABLED
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sm90_smem_addr(bar)) : "memory");
#endif
}

/* Waits until the phase of the given parity has completed. */
__device__ __forceinline__ void sm90_bar_wait(uint64_t *bar, uint32_t parity)
{
#if SM90_ENABLED
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "W4A8_WAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra W4A8_WAIT_%=;\n"
                 "}\n" ::"r"(sm90_smem_addr(bar)),
                 "r"(parity) : "memory");
#endif
}

/* ---- bulk copies (the copy engine) -------------------------------------------------------- */

/* bytes (multiple of 16) from global src (16-byte aligned) to shared dst; completes on bar. */
__device__ __forceinline__ void sm90_bulk_load(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
#if SM90_ENABLED
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(sm90_smem_addr(dst)), "l"(src), "r"(bytes), "r"(sm90_smem_addr(bar)) : "memory");
#endif
}

/* Orders this thread's earlier generic-proxy accesses of shared memory before later copy-engine
 * (async proxy) accesses: a stage read with ld.shared may then be refilled by a bulk copy. */
__device__ __forceinline__ void sm90_fence_proxy_async(void)
{
#if SM90_ENABLED
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/* One box of a 2-D tensor map at (c0 inner, c1 outer) to shared dst; completes on bar. */
__device__ __forceinline__ void sm90_tma_load_2d(void *dst, const void *tmap, int32_t c0, int32_t c1,
                                                 uint64_t *bar)
{
#if SM90_ENABLED
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3}], [%4];"
                 ::"r"(sm90_smem_addr(dst)), "l"(tmap), "r"(c0), "r"(c1), "r"(sm90_smem_addr(bar))
                 : "memory");
#endif
}

__device__ __forceinline__ void sm90_prefetch_tmap(const void *tmap)
{
#if SM90_ENABLED
    asm volatile("prefetch.tensormap [%0];" ::"l"(tmap) : "memory");
#endif
}

/* ---- wgmma -------------------------------------------------------------------------------- */

__device__ __forceinline__ void sm90_wgmma_fence(void)
{
#if SM90_ENABLED
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ void sm90_wgmma_commit(void)
{
#if SM90_ENABLED
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void sm90_wgmma_wait(void)
{
#if SM90_ENABLED
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}

/* Keeps the compiler from moving accesses of an accumulator register across a wgmma fence. */
__device__ __forceinline__ void sm90_fence_reg(float &r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void sm90_fence_reg(uint32_t &r) { asm volatile("" : "+r"(r)::"memory"); }

/*
 * Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle layout the
 * tensor copy writes with CU_TENSOR_MAP_SWIZZLE_128B: rows of 128 bytes (128 e4m3 K values),
 * 8-row atoms of 1024 bytes (the stride byte offset), the atom 1024-byte aligned. A k32 step
 * inside the row is +32 bytes on the start address (the swizzle applies to the full address).
 */
__device__ __forceinline__ uint64_t sm90_desc_k128(const void *smem)
{
    uint64_t a = sm90_smem_addr(smem);
    return ((a & 0x3FFFFull) >> 4) | (1ull << 16) /* LBO: unused for swizzled K-major */
           | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62) /* 128-byte swizzle */;
}

/* d[64 x N] (+)= A[64 x 32] (registers, e4m3) * B[N x 32]^T (shared, e4m3), f32 accumulate.
 * scale_d = 0 overwrites d. A fragment: warp w of the warpgroup holds rows 16w..16w+15;
 * lane (gid = lane/4, tig = lane%4): a0 (row gid, k 4tig..+3), a1 (row gid+8, same k),
 * a2 (row gid, k 16+4tig..+3), a3 (row gid+8, same). d: d[4j + 0/1] (row gid, col 8j + 2tig
 * + 0/1), d[4j + 2/3] (row gid + 8, same cols). */
#define SM90_R8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
                   "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

__device__ __forceinline__ void sm90_wgmma_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t desc,
                                               int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
                 "{%32,%33,%34,%35}, %36, p, 1, 1;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "n"(0), "r"(scale_d));
#endif
}

__device__ __forceinline__ void sm90_wgmma_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc,
                                                int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
                 "{%64,%65,%66,%67}, %68, p, 1, 1;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40),
                   SM90_R8(48), SM90_R8(56)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "n"(0), "r"(scale_d));
#endif
}

/* The same with f16 operands and k16 (A fragment: a0 (row gid, k 2tig..+1), a1 (row gid+8),
 * a2 (row gid, k 8+2tig..+1), a3 (row gid+8, same), two f16 a register, lower k low). */
__device__ __forceinline__ void sm90_wgmma_f16_n32(float (&d)[16], const uint32_t (&a)[4], uint64_t desc,
                                                    int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
                 "{%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
#endif
}
__device__ __forceinline__ void sm90_wgmma_f16_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t desc,
                                                    int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
                 "{%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
#endif
}
__device__ __forceinline__ void sm90_wgmma_f16_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc,
                                                    int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
                 "{%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40), SM90_R8(48), SM90_R8(56)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
#endif
}
__device__ __forceinline__ void sm90_wgmma_f16_n192(float (&d)[96], const uint32_t (&a)[4], uint64_t desc,
                                                    int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %101, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
                 "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
                 "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95}, "
                 "{%96,%97,%98,%99}, %100, p, 1, 1, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40), SM90_R8(48), SM90_R8(56), SM90_R8(64), SM90_R8(72), SM90_R8(80), SM90_R8(88)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
#endif
}
__device__ __forceinline__ void sm90_wgmma_f16_n256(float (&d)[128], const uint32_t (&a)[4], uint64_t desc,
                                                    int scale_d)
{
#if SM90_ENABLED
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
                 "{"
                 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
                 "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
                 "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
                 "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
                 "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
                 "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
                 "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, "
                 "{%128,%129,%130,%131}, %132, p, 1, 1, 0;\n}\n"
                 : SM90_R8(0), SM90_R8(8), SM90_R8(16), SM90_R8(24), SM90_R8(32), SM90_R8(40), SM90_R8(48), SM90_R8(56), SM90_R8(64), SM90_R8(72), SM90_R8(80), SM90_R8(88), SM90_R8(96), SM90_R8(104), SM90_R8(112), SM90_R8(120)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
#endif
}
template <int BN>
__device__ __forceinline__ void sm90_wgmma_f16(float (&d)[BN / 2], const uint32_t (&a)[4], uint64_t desc,
                                               int scale_d)
{
    if constexpr (BN == 32) sm90_wgmma_f16_n32(d, a, desc, scale_d);
    else if constexpr (BN == 64) sm90_wgmma_f16_n64(d, a, desc, scale_d);
    else if constexpr (BN == 128) sm90_wgmma_f16_n128(d, a, desc, scale_d);
    else if constexpr (BN == 192) sm90_wgmma_f16_n192(d, a, desc, scale_d);
    else sm90_wgmma_f16_n256(d, a, desc, scale_d);
}
template <int BN>
__device__ __forceinline__ void sm90_wgmma(float (&d)[BN / 2], const uint32_t (&a)[4], uint64_t desc,
                                           int scale_d)
{
    if constexpr (BN == 64) sm90_wgmma_n64(d, a, desc, scale_d);
    else sm90_wgmma_n128(d, a, desc, scale_d);
}

/* ---- registers ---------------------------------------------------------------------------- */

template <int R>
__device__ __forceinline__ void sm90_reg_alloc(void)
{
#if SM90_ENABLED
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R));
#endif
}

template <int R>
__device__ __forceinline__ void sm90_reg_dealloc(void)
{
#if SM90_ENABLED
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R));
#endif
}

#endif /* W4A8MOE_SM90_PTX_CUH */
