/*
 * pdl.cuh — programmatic dependent launch (PDL, sm_90+), the device side.
 *
 * A forward is a chain of small kernels on one stream; at decode part of its time is the gaps
 * between them (launch, block scheduling, the drain of a one-wave grid: ~0.6 µs a boundary on
 * the H100, docs/PERFORMANCE.md, "GPU decode"). A kernel launched with
 * w4a8moe_launch(..., pdl = 1) (cuda_util.h) may be scheduled while the kernel before it still
 * runs. pdl_enter(), the first statement of every kernel launched that way, makes the thread
 * wait until the kernels before it have finished and their writes are visible
 * (griddepcontrol.wait), then lets the next kernel of the stream be scheduled
 * (griddepcontrol.launch_dependents). So PDL changes when a kernel's blocks start, never what
 * they read or write: every global access, reads and writes alike, follows the wait, and the
 * chain stays ordered transitively (a kernel is released only by one that has passed its own
 * wait). Below sm_90, or when launched without the attribute, both instructions are no-ops.
 */
#ifndef W4A8MOE_PDL_CUH
#define W4A8MOE_PDL_CUH

__device__ __forceinline__ void pdl_enter(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#endif /* W4A8MOE_PDL_CUH */
