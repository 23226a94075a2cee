/*
 * test_gpu_distinct.c — the GPU accuracy contract on shapes where every expert has its own
 * weights (an indexing bug hides when experts share weights), against cpu_ref, for every GPU
 * experts backend this card supports:
 *   1. synthetic layers at E = 128 and 256 and small E, >= 64 rows, odd H and I (multiples of g
 *      but not of 128/256), g = 32/64/128, two seeds each;
 *   2. tests/data/gpu-row-mixtral-h1024 (a checkpoint made apart from the project: Mixtral
 *      style, H=1024 I=512 E=8 k=2 g=128, 64 tokens, with the expected output of layer 1), its
 *      own router on the host; cuda_sm89 at 62433f5 put row 60 at 7.9e-3 there.
 * Each run must meet the GPU tolerance (every row <= 1e-2 rel-L2, mean <= 1e-3, no NaN/Inf where
 * cpu_ref has none); the fraction of rows above the CPU bound 2e-3 is printed.
 * Rows per expert decide cuda_sm90's kernel (src/cuda/configs/sm90_tiles.h): most shapes here
 * have few and run its small-batch mma.sync kernel; the 192- and 640-token shapes run its wgmma
 * kernels, the 112- and 96-token ones its 32-row wgmma tiles, and so does the 320-token one
 * over 256 experts (10 rows an expert); two have I =
 * 4096 and 8192 at decode (4 rows an expert), three more at most 8 rows and I >= 64 groups
 * (cuda_sm90's GEMM2 with K split eight ways) at g = 128, 64 and 32, one 24 rows an expert
 * (wgmma tiles, half empty); three are decode steps of 1, 2 and 8 tokens; two have I >= 3H and
 * small grids, where cuda_sm90's GEMM2 on the wgmma tiles sums K in parts.
 * Every GPU forward is run twice and must give the same bits, and cuda_sm90's the same bits
 * again with its small-batch PDL prologues set otherwise, with the prepare's two-kernel form
 * in place of its one-launch decode kernel and with its tile list from the schedule kernel or
 * the prepare (same_other_early).
 * W4A8MOE_TEST_QUICK=1 (the sanitizer runs) keeps one seed of the shapes marked quick (one of
 * each path). W4A8MOE_TEST_MAX_T=N keeps the synthetic shapes of at most N tokens (the
 * checkpoint's case always runs): a racecheck of the decode paths alone fits a lent GPU's call.
 */
#include "flip_explain.h"
#include "gpu_harness.h"
#include "loader/safetensors.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef TEST_DATA
#define TEST_DATA "tests/data"
#endif

static uint64_t g_seed;
static const char *const backends[] = {"cuda_sm90", "cuda_sm89"};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

static void report(const char *what, const char *backend, const gh_stats *s)
{
    CHECK(gh_within_tol(s, backend), "%s on %s: worst row rel-L2 %.3g, mean %.3g, %lld NaN rows (GPU "
          "tolerance: row %.0e, mean %.0e)", what, backend, s->worst, s->mean, (long long)s->nan_bad,
          GH_TOL_ROW, GH_TOL_MEAN);
    printf("ok %-46s %-9s worst %.2e mean %.2e, rows > 2e-3: %lld of %lld (%.1f%%)\n", what, backend,
           s->worst, s->mean, (long long)s->above_cpu_tol, (long long)s->rows,
           s->rows ? 100.0 * (double)s->above_cpu_tol / (double)s->rows : 0.0);
}

/* The same forward again gives the same bits (docs/numerics.md: no sum may depend on timing). */
static void same_again(w4a8moe_layer *L, const w4a8moe_layer_desc *d, gh_dev *dv, int64_t T,
                       const float *got, const char *what, const char *backend)
{
    const int64_t n = T * d->hidden;
    float *again = malloc((size_t)n * 4);
    CHECK(again, "%s: host buffer", what);
    if (!again) return;
    cudaMemset(dv->out, 0xff, (size_t)n * 4); /* poison */
    w4a8moe_routing_input rd = gh_routing(dv->ids, dv->weights, NULL);
    CHECK(w4a8moe_layer_forward(L, T, dv->x, &rd, dv->out, NULL) == W4A8MOE_STATUS_OK,
          "%s: %s second forward: %s", what, backend, w4a8moe_layer_error(L));
    CHECK(gh_fetch(d, T, dv->out, again) == 0, "%s: fetch", what);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += memcmp(&again[i], &got[i], 4) != 0;
    CHECK(diff == 0, "%s: %s: a second forward differs in %lld of %lld values", what, backend,
          (long long)diff, (long long)n);
    free(again);
}

/* cuda_sm90 with its small-batch PDL prologues set otherwise gives the same bits as the
 * default: W4A8MOE_SM90_EARLY=0 (none: the schedule's tile list, nothing before a kernel's
 * wait) and W4A8MOE_SM90_FIND_MAX=256 (GEMM1 finds its tile for up to 256 local experts, not
 * 32); both are read when a layer is made. Prologues change when loads are issued, never a sum.
 * So does W4A8MOE_DECODE_PREPARE=0 (the prepare's count, scan, assign and quantise kernels
 * where T·k <= 1024 takes dispatch_decode_kernel): the same codes, scales and rows; and
 * W4A8MOE_SM90_PREPARE_TILES=0 and =2 (the small-batch tile list from cuda_sm90's schedule
 * kernel always, or from the prepare's decode kernel always, against the default's rule), and
 * W4A8MOE_SM90_FIND_IDS=0 and =1 (GEMM1 of at most 8 routed rows finding its tile's expert
 * from the routing ids before its wait, never or where the prepare wrote the tile list).
 * GEMM2's K parts on the wgmma tiles (W4A8MOE_SM90_SPLIT_K: 1 none, 2 at most two, 0 by its
 * grid) change its sums, so those runs meet the tolerance against cpu_ref instead; with none, on both sides,
 * W4A8MOE_SM90_BN32_MAX_ROWS=0 and W4A8MOE_SM90_BN64_MAX_ROWS=32 (7-32 rows an expert on the
 * 64-row wgmma tiles instead of the 32-row ones, 33-64 on the 128-row ones) give the same bits:
 * a wgmma's N does not change an element's sum (docs/numerics.md, batch invariance).
 * W4A8MOE_SM90_FUSED=1 (a one-token forward's experts in one launch: GEMM2's sums as the
 * small-batch kernel's at K split 4, not 8), with 1, 2 or 4 K groups a ring stage
 * (W4A8MOE_SM90_FUSED_GPS; a quarter's last stage often partly filled), meets the tolerance,
 * and a second forward of that layer (its grid barrier's next generation) gives the same bits.
 * W4A8MOE_SM90_STAGE=1 and =3 (a one-token forward's row read from shared memory: the same f16
 * values in the same registers) give the default's bits, and so do W4A8MOE_SM90_QUANT_FIRST=0,
 * alone and with STAGE=0 (the path before round 39: the token quantised in the prepare's sort
 * kernel, GEMM1's product after its wait), and QUANT_FIRST=1 alone and with STAGE=2. */
static void same_other_early(const w4a8moe_layer_desc *d, const w4a8moe_weights *w, gh_dev *dv, int64_t T,
                             const float *got, const float *ref, const char *what)
{
    enum { SAME_AS_DEFAULT, TOLERANCE, NO_PARTS_REF, SAME_AS_NO_PARTS, TOLERANCE_TWICE };
    static const struct {
        const char *env[2][2];
        int check;
    } runs[] = {
        {{{"W4A8MOE_SM90_EARLY", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_FIND_MAX", "256"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_DECODE_PREPARE", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_PREPARE_TILES", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_PREPARE_TILES", "2"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_FIND_IDS", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_FIND_IDS", "1"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_STAGE", "1"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_STAGE", "3"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_QUANT_FIRST", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_QUANT_FIRST", "0"}, {"W4A8MOE_SM90_STAGE", "0"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_QUANT_FIRST", "1"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_QUANT_FIRST", "1"}, {"W4A8MOE_SM90_STAGE", "2"}}, SAME_AS_DEFAULT},
        {{{"W4A8MOE_SM90_SPLIT_K", "1"}}, NO_PARTS_REF}, /* SAME_AS_NO_PARTS's reference */
        {{{"W4A8MOE_SM90_SPLIT_K", "2"}}, TOLERANCE},
        {{{"W4A8MOE_SM90_SPLIT_K", "0"}}, TOLERANCE}, /* by the grid: 2-4 parts at the small grids */
        {{{"W4A8MOE_SM90_BN32_MAX_ROWS", "0"}, {"W4A8MOE_SM90_SPLIT_K", "1"}}, SAME_AS_NO_PARTS},
        {{{"W4A8MOE_SM90_BN64_MAX_ROWS", "32"}, {"W4A8MOE_SM90_SPLIT_K", "1"}}, SAME_AS_NO_PARTS},
        {{{"W4A8MOE_SM90_FUSED", "1"}}, TOLERANCE_TWICE},
        {{{"W4A8MOE_SM90_FUSED", "1"}, {"W4A8MOE_SM90_FUSED_GPS", "2"}}, TOLERANCE_TWICE},
        {{{"W4A8MOE_SM90_FUSED", "1"}, {"W4A8MOE_SM90_FUSED_GPS", "4"}}, TOLERANCE_TWICE},
    };
    const int64_t n = T * d->hidden;
    float *other = malloc((size_t)n * 4), *no_parts = malloc((size_t)n * 4);
    CHECK(other && no_parts, "%s: host buffers", what);
    int have_no_parts = 0;
    for (size_t m = 0; other && no_parts && m < sizeof runs / sizeof runs[0]; m++) {
        char sw[128];
        snprintf(sw, sizeof sw, "%s=%s%s%s%s%s", runs[m].env[0][0], runs[m].env[0][1], runs[m].env[1][0] ? " " : "",
                 runs[m].env[1][0] ? runs[m].env[1][0] : "", runs[m].env[1][0] ? "=" : "",
                 runs[m].env[1][0] ? runs[m].env[1][1] : "");
        for (int i = 0; i < 2 && runs[m].env[i][0]; i++) setenv(runs[m].env[i][0], runs[m].env[i][1], 1);
        w4a8moe_status st;
        w4a8moe_layer *L = gh_layer(d, w, W4A8MOE_DEVICE_CUDA, "cuda_sm90", &st);
        for (int i = 0; i < 2 && runs[m].env[i][0]; i++) unsetenv(runs[m].env[i][0]);
        CHECK(L, "%s: cuda_sm90 (%s) create: %s", what, sw, w4a8moe_last_error());
        if (!L) continue;
        cudaMemset(dv->out, 0xff, (size_t)n * 4); /* poison */
        w4a8moe_routing_input rd = gh_routing(dv->ids, dv->weights, NULL);
        CHECK(w4a8moe_layer_forward(L, T, dv->x, &rd, dv->out, NULL) == W4A8MOE_STATUS_OK,
              "%s: cuda_sm90 (%s) forward: %s", what, sw, w4a8moe_layer_error(L));
        CHECK(gh_fetch(d, T, dv->out, other) == 0, "%s: fetch", what);
        if (runs[m].check == TOLERANCE || runs[m].check == NO_PARTS_REF || runs[m].check == TOLERANCE_TWICE) {
            gh_stats s = gh_compare_stats(ref, other, T, d->hidden);
            char label[320];
            snprintf(label, sizeof label, "%s, %s", what, sw);
            report(label, "cuda_sm90", &s);
            if (runs[m].check == TOLERANCE_TWICE) same_again(L, d, dv, T, other, label, "cuda_sm90");
            if (runs[m].check == NO_PARTS_REF) {
                memcpy(no_parts, other, (size_t)n * 4);
                have_no_parts = 1;
            }
            w4a8moe_layer_free(L);
            continue;
        }
        w4a8moe_layer_free(L);
        CHECK(runs[m].check == SAME_AS_DEFAULT || have_no_parts, "%s: %s runs before its reference (SPLIT_K=1)",
              what, sw);
        if (runs[m].check != SAME_AS_DEFAULT && !have_no_parts) continue;
        const float *base = runs[m].check == SAME_AS_DEFAULT ? got : no_parts;
        int64_t diff = 0;
        for (int64_t i = 0; i < n; i++) diff += memcmp(&other[i], &base[i], 4) != 0;
        CHECK(diff == 0, "%s: cuda_sm90 with %s differs from %s in %lld of %lld values", what, sw,
              runs[m].check == SAME_AS_DEFAULT ? "the default" : "no K parts", (long long)diff, (long long)n);
    }
    free(other);
    free(no_parts);
}

/* One synthetic case: distinct weights for all E experts, random routing, every backend. */
static void synth_case(int64_t H, int64_t I, int E, int k, int g, int64_t T, uint64_t seed)
{
    char what[96];
    snprintf(what, sizeof what, "H=%lld I=%lld E=%d k=%d g=%d T=%lld seed %llu", (long long)H,
             (long long)I, E, k, g, (long long)T, (unsigned long long)(seed & 0xffff));
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = H; d.inter = I; d.num_experts = E; d.top_k = k; d.group_size = g;
    d.max_tokens = T;
    d.io_dtype = W4A8MOE_DTYPE_F32;
    d.routing.renormalize = 1;
    w4a8moe_synth_rng rng = {seed};
    w4a8moe_synth_weights sw;
    gh_inputs in;
    gh_dev dv;
    memset(&in, 0, sizeof in);
    memset(&dv, 0, sizeof dv);
    float *ref = malloc((size_t)(T * H) * 4), *got = malloc((size_t)(T * H) * 4);
    int ok = ref && got && w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed) == 0;
    ok = ok && gh_inputs_make(&in, &d, T, GH_RANDOM, &rng) == 0 && gh_dev_make(&dv, &d, &in) == 0;
    CHECK(ok, "%s: inputs", what);
    w4a8moe_status st;
    w4a8moe_layer *R = ok ? gh_layer(&d, &sw.weights, W4A8MOE_DEVICE_CPU, "cpu_ref", &st) : NULL;
    if (ok) CHECK(R, "%s: cpu_ref create: %s", what, w4a8moe_last_error());
    w4a8moe_routing_input rh = gh_routing(in.ids, in.weights, NULL);
    if (R) CHECK(w4a8moe_layer_forward(R, T, in.x, &rh, ref, NULL) == W4A8MOE_STATUS_OK,
                 "%s: cpu_ref forward: %s", what, w4a8moe_layer_error(R));
    for (size_t b = 0; R && b < N_BACKENDS; b++) {
        w4a8moe_layer *L = gh_layer(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, backends[b], &st);
        if (!L) {
            CHECK(st == W4A8MOE_STATUS_UNSUPPORTED, "%s: %s create: %s", what, backends[b],
                  w4a8moe_last_error());
            printf("SKIP %s on %s: %s\n", what, backends[b], w4a8moe_last_error());
            continue;
        }
        cudaMemset(dv.out, 0xff, (size_t)(T * H) * 4); /* poison */
        w4a8moe_routing_input rd = gh_routing(dv.ids, dv.weights, NULL);
        CHECK(w4a8moe_layer_forward(L, T, dv.x, &rd, dv.out, NULL) == W4A8MOE_STATUS_OK,
              "%s: %s forward: %s", what, backends[b], w4a8moe_layer_error(L));
        CHECK(gh_fetch(&d, T, dv.out, got) == 0, "%s: fetch", what);
        gh_stats s = gh_compare_stats(ref, got, T, H);
        report(what, backends[b], &s);
        if (!gh_within_tol(&s, backends[b]) && s.worst_row >= 0) { /* one flipped code, or a bug? */
            flip_explain fe;
            const int64_t t = s.worst_row;
            flip_explain_row(&d, sw.experts, sw.weights.scale_dtype, in.x, t, in.ids, in.weights, ref + t * H,
                             got + t * H, FLIP_NEAR, &fe);
            flip_explain_print(stdout, t, &fe);
        }
        same_again(L, &d, &dv, T, got, what, backends[b]);
        if (strcmp(backends[b], "cuda_sm90") == 0) same_other_early(&d, &sw.weights, &dv, T, got, ref, what);
        w4a8moe_layer_free(L);
    }
    w4a8moe_layer_free(R);
    gh_dev_free(&dv);
    gh_inputs_free(&in);
    if (ok) w4a8moe_synth_weights_free(&sw);
    free(ref);
    free(got);
}

/* bf16 [T, H] tensor `name` of a safetensors file widened to f32. */
static float *read_bf16(const char *path, const char *name, int64_t *T, int64_t *H, uint16_t **raw)
{
    w4a8moe_err err;
    w4a8moe_st_file *f;
    if (w4a8moe_st_open(path, &f, &err) != W4A8MOE_STATUS_OK) return NULL;
    const w4a8moe_st_tensor *t = w4a8moe_st_find(f, name);
    float *out = NULL;
    if (t && t->dtype == W4A8MOE_ST_BF16 && t->ndim == 2) {
        *T = t->shape[0];
        *H = t->shape[1];
        out = malloc((size_t)(*T * *H) * 4);
        if (raw) *raw = malloc(t->nbytes);
        for (int64_t i = 0; out && i < *T * *H; i++)
            out[i] = w4a8moe_bf16_to_f32(((const uint16_t *)t->data)[i]);
        if (raw && *raw) memcpy(*raw, t->data, t->nbytes);
    }
    w4a8moe_st_close(f);
    return out;
}

static void checkpoint_case(void)
{
    const char *dir = TEST_DATA "/gpu-row-mixtral-h1024";
    int64_t T = 0, H = 0, T2 = 0, H2 = 0;
    uint16_t *x = NULL;
    float *xf = read_bf16(TEST_DATA "/gpu-row-mixtral-h1024/input.safetensors", "hidden_states", &T, &H, &x);
    float *want = read_bf16(TEST_DATA "/gpu-row-mixtral-h1024/expected.safetensors", "output", &T2, &H2, NULL);
    w4a8moe_checkpoint *ck = NULL;
    int ok = xf && want && x && T == T2 && H == H2 && w4a8moe_checkpoint_open(dir, &ck) == W4A8MOE_STATUS_OK;
    CHECK(ok, "%s: input, expected output or checkpoint missing: %s", dir, w4a8moe_last_error());
    w4a8moe_checkpoint_info info;
    float *logits = NULL, *got = malloc((size_t)(T * H) * 4 + 4);
    void *dx = NULL, *dlog = NULL, *dout = NULL;
    if (ok) {
        w4a8moe_checkpoint_get_info(ck, &info);
        logits = malloc((size_t)(T * info.num_experts) * 4);
        ok = logits && w4a8moe_checkpoint_router_logits(ck, 1, T, x, W4A8MOE_DTYPE_BF16, logits) ==
                           W4A8MOE_STATUS_OK;
        ok = ok && cudaMalloc(&dx, (size_t)(T * H) * 2) == cudaSuccess &&
             cudaMalloc(&dlog, (size_t)(T * info.num_experts) * 4) == cudaSuccess &&
             cudaMalloc(&dout, (size_t)(T * H) * 2) == cudaSuccess &&
             cudaMemcpy(dx, x, (size_t)(T * H) * 2, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dlog, logits, (size_t)(T * info.num_experts) * 4, cudaMemcpyHostToDevice) == cudaSuccess;
        CHECK(ok, "%s: router logits / device buffers: %s", dir, w4a8moe_last_error());
    }
    for (size_t b = 0; ok && b < N_BACKENDS; b++) {
        w4a8moe_layer_options o;
        memset(&o, 0, sizeof o);
        o.device_kind = W4A8MOE_DEVICE_CUDA;
        o.backend = backends[b];
        w4a8moe_layer *L = NULL;
        w4a8moe_status st = w4a8moe_checkpoint_layer_create(ck, 1, &o, NULL, 0, T, &L);
        if (st != W4A8MOE_STATUS_OK) {
            CHECK(st == W4A8MOE_STATUS_UNSUPPORTED, "%s: %s create: %s", dir, backends[b], w4a8moe_last_error());
            printf("SKIP checkpoint on %s: %s\n", backends[b], w4a8moe_last_error());
            continue;
        }
        cudaMemset(dout, 0xff, (size_t)(T * H) * 2);
        w4a8moe_routing_input r;
        memset(&r, 0, sizeof r);
        r.router_logits = dlog;
        CHECK(w4a8moe_layer_forward(L, T, dx, &r, dout, NULL) == W4A8MOE_STATUS_OK, "%s: %s forward: %s",
              dir, backends[b], w4a8moe_layer_error(L));
        w4a8moe_layer_desc d;
        memset(&d, 0, sizeof d);
        d.hidden = H;
        d.io_dtype = W4A8MOE_DTYPE_BF16;
        CHECK(gh_fetch(&d, T, dout, got) == 0, "%s: fetch", dir);
        gh_stats s = gh_compare_stats(want, got, T, H);
        report("gpu-row-mixtral-h1024 layer 1 (expected output)", backends[b], &s);
        w4a8moe_layer_free(L);
    }
    w4a8moe_checkpoint_close(ck);
    cudaFree(dx);
    cudaFree(dlog);
    cudaFree(dout);
    free(x);
    free(xf);
    free(want);
    free(logits);
    free(got);
}

int main(void)
{
    g_seed = test_seed();
    if (gh_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        TEST_MAIN_END();
    }
    /* H, I: multiples of g, several not multiples of 128 or 256 */
    static const struct { int64_t H, I; int E, k, g; int64_t T; int quick; } shapes[] = {
        {1024, 512, 8, 2, 128, 24, 1},   /* the checkpoint's shape, synthetic weights, 6 rows an
                                            expert: cuda_sm90's mma tiles at their bound */
        {1024, 512, 8, 2, 128, 28, 1},   /* 7 rows: its 32-row wgmma tiles (mostly empty) */
        {1024, 512, 8, 2, 128, 192, 1},  /* 48 rows an expert: its 64-row wgmma tiles */
        {1024, 512, 8, 2, 128, 112, 1},  /* 28 rows an expert: its 32-row wgmma tiles */
        {544, 352, 16, 4, 32, 96, 0},    /* and 24 at g = 32 */
        {544, 352, 128, 4, 32, 80, 0},   /* odd multiples of 32 */
        {576, 320, 128, 6, 64, 64, 0},   /* odd multiples of 64 */
        {1024, 512, 128, 8, 128, 128, 0},
        {768, 384, 256, 8, 128, 96, 0},  /* DeepSeek-like E and k */
        {768, 384, 256, 8, 128, 320, 0}, /* and 10 rows an expert: cuda_sm90's wgmma tiles */
        {1408, 1152, 16, 1, 128, 72, 0}, /* Llama-4-like top-1, I not a multiple of 256 */
        {544, 352, 16, 4, 32, 640, 0},   /* 160 rows an expert, g = 32: 128-row wgmma tiles */
        {512, 256, 4, 1, 128, 1600, 0},  /* ~400 rows an expert: the widest tiles (256 rows,
                                            or 192 on the converter kernel) */
        {512, 4096, 32, 2, 128, 64, 1},  /* 4 rows an expert at a large I (GEMM2's long K) */
        {256, 8192, 32, 2, 64, 64, 0},   /* and larger */
        {512, 8192, 16, 1, 128, 4, 1},   /* at most 8 rows and I >= 64 groups: cuda_sm90's GEMM2
                                            splits K eight ways; g = 128, */
        {256, 8192, 32, 2, 64, 3, 0},    /* g = 64, */
        {256, 2048, 16, 2, 32, 4, 0},    /* g = 32 (8 rows) */
        {768, 512, 8, 2, 64, 96, 0},     /* 24 rows an expert at g = 64: cuda_sm90's 32-row
                                            wgmma tiles */
        {2048, 768, 128, 8, 128, 1, 1},  /* one token (qwen3-30b-a3b's shape): 8 one-row tiles */
        {1024, 3584, 8, 2, 128, 1, 1},   /* one token, Mixtral-like: GEMM2's K split 8 ways */
        {1408, 1152, 16, 1, 128, 1, 0},  /* one token, top-1, I not a multiple of 256 */
        {576, 320, 128, 6, 64, 1, 1},    /* one token at g = 64, odd multiples of 64 */
        {768, 384, 256, 16, 128, 1, 0},  /* one token of 16 pairs (the one-launch path's most) */
        {1024, 512, 64, 4, 64, 2, 0},    /* 2 tokens of 4 pairs over 64 experts */
        {1024, 512, 16, 1, 128, 8, 1},   /* 8 tokens, top-1 of 16 (Llama-4-like): GEMM1 finds its
                                            own tiles by default */
        {512, 2048, 8, 2, 128, 96, 1},   /* 24 rows an expert, I = 4H (Mixtral-like), a grid of
                                            ~40 CTAs: cuda_sm90's GEMM2 in four K parts */
        {288, 1056, 8, 2, 32, 64, 0},    /* two parts, the second ending in a half K block */
    };
    int quick = test_quick();
    const char *mt = getenv("W4A8MOE_TEST_MAX_T");
    const int64_t max_t = mt ? atoll(mt) : INT64_MAX;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int s = 0; s < (quick ? 1 : 2) && (shapes[i].quick || !quick) && shapes[i].T <= max_t; s++)
            synth_case(shapes[i].H, shapes[i].I, shapes[i].E, shapes[i].k, shapes[i].g, shapes[i].T,
                       g_seed ^ (0x9e3779b97f4a7c15ull * (i * 2 + (size_t)s + 1)));
    checkpoint_case();
    TEST_MAIN_END();
}
