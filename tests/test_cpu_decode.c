/*
 * test_cpu_decode.c — the `cpu` backend's decode path (few tokens per expert) bit for bit
 * against `cpu_ref`.
 *
 * DESIGN §1: `cpu` is bit-identical to `cpu_ref` (its group sums are exact integers). The
 * consistency test checks every backend within the contract's 2e-3; this one holds `cpu` to
 * memcmp at every T = 2..32 (and T = 1 and 33..40, where the decode streams give way to the
 * phased path), on layers whose experts all have distinct weights (an indexing bug hides when
 * experts share them), with
 *   - routings: random distinct experts; skewed (half of all slots on one expert, so one expert
 *     has many rows while others have one); -1 slots;
 *   - inputs with outliers (a few elements 100x the rest), so rows hold e4m3 values on both
 *     sides of 1/2; and rows shaped so that their groups need one, two or three digit planes
 *     after the per-group shift (shape_row), mixed within the row blocks of one expert;
 *   - 1, 2 and 3 threads (the decode streams hand tiles between threads at the tail);
 *   - the VNNI, AVX2 and generic kernels (W4A8MOE_CPU_GENERIC, read when a layer is created;
 *     the k = 8 shape, the slowest for cpu_ref, with the native kernels only).
 */
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <stdlib.h>
#include <string.h>

#define TMAX 40

typedef struct shape {
    int64_t H, I;
    int32_t E, k, g;
} shape;

typedef enum route_kind { ROUTE_RANDOM, ROUTE_SKEWED, ROUTE_HOLES, ROUTE_KINDS } route_kind;

static const char *route_name[ROUTE_KINDS] = {"random", "skewed", "-1 slots"};

/* ids/wts [T, k] of the given kind; random ones are k distinct experts per token. */
static void make_routing(route_kind kind, int32_t *ids, float *wts, int64_t T, const shape *s,
                         w4a8moe_synth_rng *rng)
{
    w4a8moe_synth_routing(ids, wts, T, s->E, s->k, rng);
    for (int64_t t = 0; t < T; t++) {
        int32_t *id = ids + t * s->k;
        if (kind == ROUTE_SKEWED && t % 2 == 0) {
            /* slot 0 to expert 3 (swap to keep the token's ids distinct) */
            for (int32_t j = 1; j < s->k; j++)
                if (id[j] == 3) id[j] = id[0];
            id[0] = 3;
        }
        if (kind == ROUTE_HOLES && (t % 3 == 1)) id[(t / 3) % s->k] = -1;
        if (kind == ROUTE_HOLES && t == 2)
            for (int32_t j = 0; j < s->k; j++) id[j] = -1;
    }
}

/* Rows whose prepared groups take every digit-plane count (cpu_experts_impl.h): t % 4 == 1:
 * +-c, +-2c, +-4c only (e4m3 112, 224, 448: A = 7, 14, 28 times 2^13, so one plane after the
 * shift); t % 4 == 3: the first half zero (all-zero groups: one plane, no shift), the rest as
 * drawn (two or three planes). Odd rows only: even rows keep the outliers (three planes). */
static void shape_row(float *x, int64_t H, int64_t t)
{
    for (int64_t h = 0; h < H; h++) {
        if (t % 4 == 1) x[h] = (float)((h * 7 + t) % 2 ? 1 : -1) * (float)(1 << (h % 3)) * 0.37f;
        else if (h < H / 2) x[h] = 0.0f;
    }
}

typedef struct layers {
    w4a8moe_layer *cpu[3], *ref; /* cpu with 1, 2, 3 threads */
} layers;

static int make_layers(const w4a8moe_layer_desc *d, const w4a8moe_weights *w, layers *L)
{
    memset(L, 0, sizeof *L);
    w4a8moe_layer_options o = {.backend = "cpu_ref", .num_threads = 1};
    int ok = w4a8moe_layer_create(d, w, &o, &L->ref) == W4A8MOE_STATUS_OK;
    for (int i = 0; i < 3 && ok; i++) {
        o = (w4a8moe_layer_options){.backend = "cpu", .num_threads = i + 1};
        ok = w4a8moe_layer_create(d, w, &o, &L->cpu[i]) == W4A8MOE_STATUS_OK;
    }
    CHECK(ok, "layer create: %s", w4a8moe_last_error());
    return ok;
}

static void free_layers(layers *L)
{
    for (int i = 0; i < 3; i++) w4a8moe_layer_free(L->cpu[i]);
    w4a8moe_layer_free(L->ref);
}

/* Every T and routing kind on one set of layers; returns the number of comparisons. */
static int run_all(const char *isa, const shape *s, const layers *L, w4a8moe_synth_rng *rng)
{
    int64_t H = s->H, n = 0;
    float *x = malloc((size_t)(TMAX * H) * sizeof(float));
    float *want = malloc((size_t)(TMAX * H) * sizeof(float));
    float *got = malloc((size_t)(TMAX * H) * sizeof(float));
    int32_t *ids = malloc((size_t)(TMAX * s->k) * sizeof(int32_t));
    float *wts = malloc((size_t)(TMAX * s->k) * sizeof(float));
    for (int64_t T = 1; T <= TMAX; T++)
        for (int kind = 0; kind < ROUTE_KINDS; kind++) {
            w4a8moe_synth_input(x, W4A8MOE_DTYPE_F32, T, H, 2.0f, rng);
            for (int64_t i = 0; i < T * H; i += 97) x[i] *= 100.0f; /* outliers */
            for (int64_t t = 1; t < T; t += 2) shape_row(x + t * H, H, t);
            make_routing((route_kind)kind, ids, wts, T, s, rng);
            w4a8moe_routing_input r = {.topk_ids = ids, .topk_weights = wts};
            CHECK(w4a8moe_layer_forward(L->ref, T, x, &r, want, NULL) == W4A8MOE_STATUS_OK,
                  "cpu_ref forward T = %lld", (long long)T);
            for (int th = 0; th < 3; th++) {
                memset(got, 0xff, (size_t)(T * H) * sizeof(float)); /* poison: NaN */
                CHECK(w4a8moe_layer_forward(L->cpu[th], T, x, &r, got, NULL) == W4A8MOE_STATUS_OK,
                      "cpu forward T = %lld", (long long)T);
                CHECK(memcmp(got, want, (size_t)(T * H) * sizeof(float)) == 0,
                      "%s kernels, H=%lld I=%lld E=%d k=%d g=%d, T = %lld, %s routing, %d "
                      "threads: cpu differs from cpu_ref", isa, (long long)H, (long long)s->I,
                      s->E, s->k, s->g, (long long)T, route_name[kind], th + 1);
                n++;
            }
        }
    free(x), free(want), free(got), free(ids), free(wts);
    return (int)n;
}

int main(void)
{
    uint64_t seed = test_seed();
    w4a8moe_synth_rng rng = {seed};
    /* k = 8 at T = 32 gives 256 rows, the decode path's limit; g = 32, 64 and 128 */
    const shape shapes[] = {{256, 128, 32, 4, 64}, {384, 256, 24, 8, 128}, {320, 96, 16, 2, 32}};
    const char *isas[] = {NULL, "avx2", "1"}; /* native (VNNI here), AVX2, generic */
    int nshapes = test_quick() ? 1 : 3, nisa = test_quick() ? 1 : 3, compared = 0;
    for (int si = 0; si < nshapes; si++) {
        const shape *s = &shapes[si];
        w4a8moe_layer_desc d;
        w4a8moe_layer_desc_init(&d);
        d.max_tokens = TMAX;
        d.hidden = s->H;
        d.inter = s->I;
        d.num_experts = s->E;
        d.top_k = s->k;
        d.group_size = s->g;
        d.io_dtype = W4A8MOE_DTYPE_F32;
        w4a8moe_synth_weights sw;
        /* pool 0: every expert its own weights */
        int made = w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, si == 1, 0,
                                              w4a8moe_synth_next(&rng)) == 0;
        CHECK(made, "synthetic weights, shape %d", si);
        if (!made) continue;
        for (int ii = 0; ii < (si == 1 ? 1 : nisa); ii++) { /* the k = 8 shape: native only */
            if (isas[ii]) setenv("W4A8MOE_CPU_GENERIC", isas[ii], 1);
            layers L;
            if (make_layers(&d, &sw.weights, &L))
                compared += run_all(isas[ii] ? (ii == 1 ? "avx2" : "generic") : "native", s, &L, &rng);
            free_layers(&L);
            unsetenv("W4A8MOE_CPU_GENERIC");
        }
        w4a8moe_synth_weights_free(&sw);
    }
    printf("%d forwards of cpu compared with cpu_ref bit for bit (T = 1..%d, seed %llu)\n",
           compared, TMAX, (unsigned long long)seed);
    TEST_MAIN_END();
}
