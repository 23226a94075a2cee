/*
 * cpu_device.c — device services for host layers: feature query and 64-byte aligned memory.
 */
#include "../common/cpu_features.h"
#include "../core/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static w4a8moe_status cpu_query(int32_t ordinal, w4a8moe_device_info *info, w4a8moe_err *err)
{
    (void)err;
    w4a8moe_cpu_features f;
    w4a8moe_cpu_features_detect(&f);
    info->kind = W4A8MOE_DEVICE_CPU;
    info->ordinal = ordinal;
    info->cpu_x86_64 = f.x86_64;
    info->cpu_avx2 = f.avx2;
    info->cpu_fma = f.fma;
    info->cpu_avx512f = f.avx512f;
    info->cpu_avx512bw = f.avx512bw;
    info->cpu_avx512vnni = f.avx512vnni;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    info->cpu_threads = n < 1 ? 1 : (int32_t)n;
    snprintf(info->name, sizeof info->name, "cpu (%s%s%s)", f.x86_64 ? "x86-64" : "generic",
             f.avx2 ? " avx2" : "", f.avx512f ? " avx512" : "");
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status cpu_alloc(const w4a8moe_device_info *dev, size_t bytes, void **ptr,
                                w4a8moe_err *err)
{
    (void)dev;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    *ptr = rounded >= bytes ? aligned_alloc(64, rounded) : NULL;
    RETURN_IF(err, !*ptr, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "host workspace of %zu bytes; hint: lower max_tokens", bytes);
    return W4A8MOE_STATUS_OK;
}

static void cpu_release(const w4a8moe_device_info *dev, void *ptr)
{
    (void)dev;
    free(ptr);
}

const w4a8moe_device_ops w4a8moe_cpu_device = {
    .kind = W4A8MOE_DEVICE_CPU,
    .query = cpu_query,
    .alloc = cpu_alloc,
    .release = cpu_release,
};
