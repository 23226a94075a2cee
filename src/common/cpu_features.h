/*
 * cpu_features.h — runtime ISA detection (x86-64: AVX2, FMA, AVX-512), so one binary picks the
 * fastest inner loops the machine has, with a generic C fallback elsewhere.
 */
#ifndef W4A8MOE_CPU_FEATURES_H
#define W4A8MOE_CPU_FEATURES_H

typedef struct w4a8moe_cpu_features {
    int x86_64, avx2, fma, avx512f, avx512bw;
} w4a8moe_cpu_features;

void w4a8moe_cpu_features_detect(w4a8moe_cpu_features *f);

#endif /* W4A8MOE_CPU_FEATURES_H */
