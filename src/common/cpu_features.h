/*
 * cpu_features.h — runtime ISA detection (x86-64: AVX2, FMA, AVX-512, AVX-512 VNNI), so one
 * binary picks the fastest inner loops the machine has, with a generic C fallback elsewhere.
 *
 * W4A8MOE_CPU_GENERIC in the environment hides what the machine has, so tests reach every
 * path on any machine: "1" hides every extension (generic C), "avx2" hides AVX-512 and VNNI
 * (AVX2 + FMA kernels). Read at every detect call, i.e. at layer creation.
 */
#ifndef W4A8MOE_CPU_FEATURES_H
#define W4A8MOE_CPU_FEATURES_H

typedef struct w4a8moe_cpu_features {
    int x86_64, avx2, fma, avx512f, avx512bw;
    int avx512vnni; /* AVX512_VNNI + AVX512VL (+ AVX512F): vpdpbusd, cpu_experts_avx512.c */
} w4a8moe_cpu_features;

void w4a8moe_cpu_features_detect(w4a8moe_cpu_features *f);

#endif /* W4A8MOE_CPU_FEATURES_H */
