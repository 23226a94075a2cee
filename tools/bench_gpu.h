/*
 * bench_gpu.h — the CUDA side of the CLI: `bench --device cuda` (the device's copy bandwidth
 * and cuBLASLt FP8 GEMM rate measured in the same run, whole-layer times with a cold L2 by CUDA
 * events) and the staging that lets `verify` run layers whose data lives on the device.
 * Everything here is a stub that reports "no CUDA support" in builds without nvcc.
 */
#ifndef W4A8MOE_BENCH_GPU_H
#define W4A8MOE_BENCH_GPU_H

#include "w4a8moe.h"

#include <stdint.h>

struct w4a8moe_model;

typedef struct bench_gpu_args {
    const struct w4a8moe_model *model;
    const int64_t *tokens;
    int ntokens;
    const char *backend; /* NULL: the oracle's choice */
    int64_t iters;       /* 0: adaptive */
    int64_t layers;      /* 0: auto (total > 2 x L2) */
    uint64_t seed;
    int json;
    int ordinal;
} bench_gpu_args;

/* `w4a8moe bench --device cuda`: prints the table (or JSON lines); returns a CLI exit code. */
int bench_gpu_main(const bench_gpu_args *a);

/* One forward of a layer whose device is CUDA, with host x / routing / out: copies in, runs on
 * a stream, waits, copies out. On a CPU layer it simply forwards. Returns the status. */
w4a8moe_status bench_gpu_forward_staged(w4a8moe_layer *L, w4a8moe_device_kind kind,
                                        const w4a8moe_layer_desc *d, int64_t T, const void *x,
                                        const w4a8moe_routing_input *r, void *out);

#endif /* W4A8MOE_BENCH_GPU_H */
