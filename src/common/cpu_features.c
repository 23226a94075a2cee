/*
 * cpu_features.c — see cpu_features.h (W4A8MOE_CPU_GENERIC caps what is reported).
 */
#include "cpu_features.h"

#include <stdlib.h>
#include <string.h>

void w4a8moe_cpu_features_detect(w4a8moe_cpu_features *f)
{
    memset(f, 0, sizeof *f);
#if defined(__x86_64__) && defined(__GNUC__)
    f->x86_64 = 1;
    const char *generic = getenv("W4A8MOE_CPU_GENERIC");
    if (generic && generic[0] == '1') return;
    __builtin_cpu_init();
    f->avx2 = __builtin_cpu_supports("avx2");
    f->fma = __builtin_cpu_supports("fma");
    if (generic && strcmp(generic, "avx2") == 0) return;
    f->avx512f = __builtin_cpu_supports("avx512f");
    f->avx512bw = __builtin_cpu_supports("avx512bw");
    f->avx512vnni = f->avx512f && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512vnni");
#endif
}
