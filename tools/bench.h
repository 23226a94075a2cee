/*
 * bench.h — measuring tools shared by `w4a8moe bench` and `w4a8moe verify`: the machine's
 * memory bandwidth and FMA rate measured in the same run, the last-level cache size, a clock,
 * the floor of docs/PERFORMANCE.md, and the row-wise comparison against cpu_ref (rel-L2 per row).
 */
#ifndef W4A8MOE_BENCH_H
#define W4A8MOE_BENCH_H

#include "w4a8moe.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bench_machine {
    int threads;
    double copy_gbs;       /* bytes read + written per second / 1e9 */
    size_t copy_bytes;     /* size of each of the two copy buffers */
    double fma_gflops;     /* peak f32 FMA rate / 1e9; 0 when not measured */
    const char *fma_isa;   /* "avx2+fma", or NULL when not measured (non-x86 or no FMA) */
    size_t llc_bytes;      /* last-level cache */
    int llc_assumed;       /* 1 when the size could not be read and 32 MB is assumed */
} bench_machine;

/* Measures the copy bandwidth (two buffers of max(256 MB, 2 x LLC) each, copied by `threads`
 * threads; the best of 10 copies, by memcpy and, with AVX2, by streaming stores) and the FMA
 * rate (best of 3 runs, ~0.1 s). Returns 0, or -1 when the buffers cannot be allocated (copy_gbs is 0). */
int bench_machine_measure(bench_machine *m, int threads);

/* Last-level cache in bytes (sysconf, then /sys); *assumed = 1 and 32 MB when neither says. */
size_t bench_llc_bytes(int *assumed);
/* MemAvailable from /proc/meminfo (or free physical pages), in bytes; 0 when unknown. */
size_t bench_mem_available(void);

/* Monotonic seconds. */
double bench_now(void);
/* Median of v[0..n-1] (sorts v). */
double bench_median(double *v, int n);

/* The floor (docs/PERFORMANCE.md) for one forward of T tokens with routing ids [T, k] (-1 = none). */
typedef struct bench_floor {
    int32_t experts_hit;
    double bytes;   /* unique weight bytes touched + activations in and out */
    double flops;   /* 2 * routed pairs * 3 * H * I */
    double mem_s;   /* bytes / copy bandwidth */
    double fma_s;   /* flops / FMA rate (0 when the rate is unknown) */
    double floor_s; /* the larger of the two */
} bench_floor;

void bench_floor_compute(const w4a8moe_layer_desc *d, int64_t T, const int32_t *ids,
                         size_t scale_bytes, const bench_machine *m, bench_floor *f);

/* Row-wise comparison of out against ref ([rows, H] in dt): rel-L2 of each row
 * ||out - ref|| / ||ref|| (an all-zero reference row requires an all-zero output row), the
 * worst row, the mean over the rows whose reference is finite, how many of them are above
 * BENCH_TOLERANCE, and whether out has NaN/Inf where ref has none. */
typedef struct bench_cmp {
    double max_rel_l2;
    int64_t worst_row;
    int nonfinite;
    double mean_rel_l2;
    int64_t rows, above_cpu_tol;
} bench_cmp;

void bench_compare_rows(const void *out, const void *ref, w4a8moe_dtype dt, int64_t rows,
                        int64_t H, bench_cmp *c);

/* The contract's tolerance against cpu_ref (docs/numerics.md, "Tolerance"): a CPU backend's
 * every row within BENCH_TOLERANCE rel-L2; a GPU backend's every row within BENCH_TOL_GPU_ROW
 * and, over at least BENCH_TOL_GPU_MIN_ROWS rows, their mean within BENCH_TOL_GPU_MEAN; no
 * NaN/Inf where cpu_ref has none. */
#define BENCH_TOLERANCE 2e-3
#define BENCH_TOL_GPU_ROW 1e-2
#define BENCH_TOL_GPU_MEAN 1e-3
#define BENCH_TOL_GPU_MIN_ROWS 64

/* 1 when c meets the tolerance of a CPU (gpu = 0) or GPU backend; else 0, with what it misses
 * in why ("rel-L2 3.1e-03 above 2e-3 at token 7"; why may be NULL). */
int bench_within_tolerance(const bench_cmp *c, int gpu, char *why, size_t cap);

/* `bench --env-sets`: sets of the library's path switches (W4A8MOE_* environment variables, read
 * when a layer is made), each timed on layers made under it while the weights, inputs and the
 * cpu_ref check are made once: "A=1 B=2;A=0;-" is three sets, '-' none. */
#define BENCH_ENV_SETS_MAX 16
#define BENCH_ENV_VARS_MAX 8
#define BENCH_ENV_LEN 64
typedef struct bench_env_sets {
    int n;
    int nvars[BENCH_ENV_SETS_MAX];
    char var[BENCH_ENV_SETS_MAX][BENCH_ENV_VARS_MAX][BENCH_ENV_LEN];
    char value[BENCH_ENV_SETS_MAX][BENCH_ENV_VARS_MAX][BENCH_ENV_LEN];
} bench_env_sets;

/* cli_value_parser of --env-sets (bench_env_sets): each assignment VAR=VALUE with VAR a W4A8MOE_
 * name of capitals, digits and '_', VALUE of letters, digits and _.,:+- (it is printed in JSON). */
int bench_parse_env_sets(const char *value, void *dst, char *why, size_t cap);

/* Set i as text ("-" for none) into buf. */
void bench_env_set_label(const bench_env_sets *s, int i, char *buf, size_t cap);

/* Applies set i (setenv), saving what each variable held into saved [BENCH_ENV_VARS_MAX][2]
 * strings; bench_env_restore puts them back. Returns 0, or -1 when out of memory. */
int bench_env_apply(const bench_env_sets *s, int i, char *saved[BENCH_ENV_VARS_MAX], int had[BENCH_ENV_VARS_MAX]);
void bench_env_restore(const bench_env_sets *s, int i, char *saved[BENCH_ENV_VARS_MAX], int had[BENCH_ENV_VARS_MAX]);

/* `bench --checkpoint`: the decoder layer that rotation copy i times, i.e. the checkpoint's MoE
 * layers from `first` on, wrapping around (`first` must be an MoE layer). */
int32_t bench_ckpt_layer(const w4a8moe_checkpoint *ck, int32_t first, int i);

#endif /* W4A8MOE_BENCH_H */
