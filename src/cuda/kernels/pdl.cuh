/*
 * pdl.cuh — programmatic dependent launch (PDL, sm_90+), the device side.
 *
 * A forward is a chain of small kernels on one stream; at decode part of its time is the gaps
 * between them (launch, block scheduling, the drain of a one-wave grid: ~0.6 µs a boundary on
 * the H100, docs/PERFORMANCE.md, "GPU decode"). A kernel launched with
 * w4a8moe_launch(..., pdl = 1) (cuda_util.h) may be scheduled while the kernel before it still
 * runs. pdl_enter(), the first statement of every kernel launched that way but the few with a
 * prologue (below), makes the thread wait until the kernels before it have finished and their
 * writes are visible (griddepcontrol.wait), then lets the next kernel of the stream be scheduled
 * (griddepcontrol.launch_dependents). So PDL changes when a kernel's blocks start, never what
 * they read or write: every global access outside a prologue, reads and writes alike, follows
 * the wait, and the chain stays ordered transitively (a kernel is released only by one that
 * has passed its own wait, or, for a kernel with no prologue, by one whose wait is still ahead
 * of its every access: below). Below sm_90, or when launched without the attribute, both
 * instructions are no-ops.
 *
 * What a kernel may do before its wait (a prologue): because a kernel releases the next only
 * after its own wait, a kernel is scheduled only once the kernel two launches back has finished
 * and its writes are in L2. So a prologue may read what kernels two or more launches back wrote
 * — through L2 (ld.global.cg: this SM's L1 may hold an earlier forward's lines) — and the
 * layer's constant weights, and may write nothing the kernel just before reads or writes. A
 * kernel with a prologue may release the next one first, before its own wait, when that next
 * kernel has no prologue (pdl_enter() first): its wait still covers this kernel's whole run,
 * and the kernel after it is released only after that wait. cuda_sm90's small-batch GEMMs do
 * both (kernels/sm90_mma_decode.cuh, SM90M_PRE_WEIGHTS; the requantisation and the combine
 * after them have no prologue); every other kernel calls pdl_enter() first.
 */
#ifndef W4A8MOE_PDL_CUH
#define W4A8MOE_PDL_CUH

/* Waits until the kernels before this one have finished and their writes are visible. */
__device__ __forceinline__ void pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Lets the next kernel of the stream be scheduled once every block of this one has called it
 * (or exited). */
__device__ __forceinline__ void pdl_release(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_enter(void)
{
    pdl_wait();
    pdl_release();
}

#endif /* W4A8MOE_PDL_CUH */
