/*
 * bench_gpu.h — the CUDA side of the CLI: `bench --device cuda` (the device's copy bandwidth
 * and cuBLASLt FP8 GEMM rate measured in the same run, whole-layer times with a cold L2 by CUDA
 * events) and the staging that lets `verify` run layers whose data lives on the device.
 * Everything here is a stub that reports "no CUDA support" in builds without nvcc.
 */
#ifndef W4A8MOE_BENCH_GPU_H
#define W4A8MOE_BENCH_GPU_H

#include "bench.h"
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
    /* --checkpoint: time its MoE layers from ckpt_layer on (model is then unused) */
    const w4a8moe_checkpoint *ckpt;
    int32_t ckpt_layer;
    const char *name;          /* printed instead of the model's name, or NULL */
    const char *device_label;  /* "cuda:0 (...)" as the CLI prints it, or NULL */
    /* when not NULL: a first layer the device refuses is not printed but left here (status and
     * the library's message), for --device auto to fall back to the host */
    w4a8moe_status *create_status;
    char *create_why;
    size_t create_why_cap;
    const bench_env_sets *env; /* --env-sets: the tokens once per set, or NULL */
} bench_gpu_args;

/* `w4a8moe bench --device cuda`: prints the table (or JSON lines); returns a CLI exit code. */
int bench_gpu_main(const bench_gpu_args *a);

/* One forward of a layer whose device is CUDA, with host x / routing / out: copies in, runs on
 * a stream, waits, copies out, then w4a8moe_layer_check (bad topk_ids are INVALID_ARGUMENT
 * naming the token, as on the CPU). On a CPU layer it simply forwards. Returns the status. */
w4a8moe_status bench_gpu_forward_staged(w4a8moe_layer *L, w4a8moe_device_kind kind,
                                        const w4a8moe_layer_desc *d, int64_t T, const void *x,
                                        const w4a8moe_routing_input *r, void *out);

#endif /* W4A8MOE_BENCH_GPU_H */
