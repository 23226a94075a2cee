/*
 * registry.c — the static backend tables, in priority order (fastest first, cpu_ref last).
 * The only file that names backend instances. A backend is added by declaring its ops here and
 * putting it in the table at its priority; CUDA backends exist only in builds with nvcc.
 */
#include "backend.h"
#include "shared_expert.h"

#include <string.h>

extern const w4a8moe_experts_ops w4a8moe_cpu_experts;
extern const w4a8moe_experts_ops w4a8moe_cpu_ref_experts;
extern const w4a8moe_prepfin_ops w4a8moe_cpu_local_prepfin;
extern const w4a8moe_device_ops w4a8moe_cpu_device;
#ifdef W4A8MOE_WITH_CUDA
extern const w4a8moe_experts_ops w4a8moe_cuda_sm90_experts;
extern const w4a8moe_experts_ops w4a8moe_cuda_sm89_experts;
extern const w4a8moe_experts_ops w4a8moe_cuda_dense_experts;
extern const w4a8moe_prepfin_ops w4a8moe_cuda_local_prepfin;
extern const w4a8moe_device_ops w4a8moe_cuda_device;
extern const w4a8moe_shared_device_ops w4a8moe_cuda_shared_device;
#endif

static const w4a8moe_experts_ops *const experts_table[] = {
#ifdef W4A8MOE_WITH_CUDA
    /* cuda_sm90 before cuda_sm89 (sm_90 cards; elsewhere it rejects the device): faster at
     * every point measured, T = 1-1024 on six models (docs/PERFORMANCE.md, round 19: with
     * tiles of 17-32 rows an expert on its wgmma kernels) */
    &w4a8moe_cuda_sm90_experts,
    &w4a8moe_cuda_sm89_experts,
    /* unquantised (bf16 x bf16) shared experts only: no W4A8 layer reaches it */
    &w4a8moe_cuda_dense_experts,
#endif
    &w4a8moe_cpu_experts,
    &w4a8moe_cpu_ref_experts,
};

static const w4a8moe_prepfin_ops *const prepfin_table[] = {
#ifdef W4A8MOE_WITH_CUDA
    &w4a8moe_cuda_local_prepfin,
#endif
    &w4a8moe_cpu_local_prepfin,
};

const w4a8moe_experts_ops *const *w4a8moe_registry_experts(size_t *count)
{
    *count = sizeof experts_table / sizeof experts_table[0];
    return experts_table;
}

const w4a8moe_prepfin_ops *const *w4a8moe_registry_prepfin(size_t *count)
{
    *count = sizeof prepfin_table / sizeof prepfin_table[0];
    return prepfin_table;
}

const w4a8moe_device_ops *w4a8moe_registry_device(w4a8moe_device_kind kind)
{
    if (kind == W4A8MOE_DEVICE_CPU) return &w4a8moe_cpu_device;
#ifdef W4A8MOE_WITH_CUDA
    if (kind == W4A8MOE_DEVICE_CUDA) return &w4a8moe_cuda_device;
#endif
    return NULL;
}

const w4a8moe_shared_device_ops *w4a8moe_registry_shared_device(w4a8moe_device_kind kind)
{
#ifdef W4A8MOE_WITH_CUDA
    if (kind == W4A8MOE_DEVICE_CUDA) return &w4a8moe_cuda_shared_device;
#endif
    (void)kind;
    return NULL;
}

const w4a8moe_experts_ops *w4a8moe_registry_find_experts(const char *name)
{
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(ex[i]->name, name) == 0) return ex[i];
    return NULL;
}
