/*
 * test_cpu_dense.c — the `cpu` backend's unquantised path (src/cpu/cpu_experts_dense.c):
 * shared experts with bf16, f16 or f32 weights, scheme pair W4A8MOE_WEIGHT_BF16 ×
 * W4A8MOE_ACT_BF16, on layers of random int4 routed experts.
 *
 * Per case (H, I multiples of 32 but not of 256, one shared I that is not a multiple of 8;
 * bf16/f16/f32 I/O, bf16 only where H >= 192: one bf16 rounding flip of a large value in a
 * 96-wide row alone moves it by ~1e-3; silu and gelu; with and without the Qwen2-MoE sigmoid
 * gate):
 *   - `cpu` serves the shared pipeline when forced and when the oracle picks; `cpu_ref` when
 *     forced;
 *   - T = 1, 37 and 100, with no routed expert (the shared expert alone) and with random
 *     routing: every row within the contract's 2e-3 of the forced cpu_ref layer; the shared
 *     expert alone with f32 I/O within 1e-5 (the f32 block sums leave ~5e-7: a dropped input
 *     or a wrong padded channel can hide under 2e-3, not under 1e-5);
 *   - the generic and AVX2 kernels (W4A8MOE_CPU_GENERIC=1 / =avx2 before the layer is created,
 *     which is when the device is queried: checked on the device info) give bit-identical
 *     outputs to the native choice, as do 1 and 2 threads, and rows of a T = 100 batch equal
 *     the same tokens run in batches of 1..5 (every tile shape of the AVX2 driver);
 *   - a NaN in one token's x makes exactly that output row NaN.
 * Outputs are poisoned (all-ones bytes: NaN in every dtype) before every forward.
 */
#include "common/quant.h"
#include "common/synth.h"
#include "core/backend.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

#define TMAX 100 /* two row groups of the GEMM tasks (64 rows each at most) */

typedef struct dcase {
    const char *name;
    int64_t H, I, Is; /* Is: the shared expert's I */
    int E, k, g;
    w4a8moe_dtype wdt; /* the shared expert's weights */
    w4a8moe_dtype io;
    w4a8moe_activation act;
    int gated;
    int big; /* left out under W4A8MOE_TEST_QUICK */
} dcase;

static const dcase cases[] = {
    {"h96-is160-f32io", 96, 64, 160, 4, 2, 32, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_F32,
     W4A8MOE_ACTIVATION_SILU, 0, 0},
    {"h320-is224-f16io-gelu", 320, 128, 224, 8, 2, 64, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_F16,
     W4A8MOE_ACTIVATION_GELU_TANH, 1, 0},
    {"h544-is96-f32io-gated", 544, 96, 96, 8, 2, 32, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_F32,
     W4A8MOE_ACTIVATION_SILU, 1, 0},
    {"h416-is44-f32w", 416, 64, 44, 4, 1, 32, W4A8MOE_DTYPE_F32, W4A8MOE_DTYPE_F32,
     W4A8MOE_ACTIVATION_SILU, 0, 0},
    {"h192-is288-f16w", 192, 96, 288, 6, 3, 32, W4A8MOE_DTYPE_F16, W4A8MOE_DTYPE_BF16,
     W4A8MOE_ACTIVATION_SILU, 1, 0},
    {"h1056-is352-bf16io", 1056, 352, 352, 8, 2, 32, W4A8MOE_DTYPE_BF16, W4A8MOE_DTYPE_BF16,
     W4A8MOE_ACTIVATION_SILU, 1, 1},
};

typedef struct cdata {
    w4a8moe_layer_desc d;
    w4a8moe_synth_weights sw;
    w4a8moe_shared_expert se;
    w4a8moe_weights w;
    void *dense[3];
    uint16_t *gate;                       /* [H] bf16 */
    void *x, *xnan;                       /* [TMAX, H] io */
    int32_t *ids, *none;                  /* [TMAX, k] */
    float *wts;
} cdata;

static size_t dsize(w4a8moe_dtype dt) { return dt == W4A8MOE_DTYPE_F32 ? 4 : 2; }

static void put(void *p, w4a8moe_dtype dt, int64_t i, float v)
{
    if (dt == W4A8MOE_DTYPE_BF16) ((uint16_t *)p)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == W4A8MOE_DTYPE_F16) ((uint16_t *)p)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)p)[i] = v;
}

static float get(const void *p, w4a8moe_dtype dt, int64_t i)
{
    if (dt == W4A8MOE_DTYPE_BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == W4A8MOE_DTYPE_F16) return w4a8moe_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* A random dense matrix [rows, cols] in dt, uniform in [-amp, amp). */
static void *dense_make(int64_t rows, int64_t cols, w4a8moe_dtype dt, float amp, test_rng *r)
{
    void *p = malloc((size_t)(rows * cols) * dsize(dt));
    for (int64_t i = 0; p && i < rows * cols; i++) put(p, dt, i, test_rng_uniform(r, -amp, amp));
    return p;
}

static int cdata_make(const dcase *c, cdata *cd, test_rng *r)
{
    memset(cd, 0, sizeof *cd);
    w4a8moe_layer_desc *d = &cd->d;
    w4a8moe_layer_desc_init(d);
    d->max_tokens = TMAX;
    d->hidden = c->H;
    d->inter = c->I;
    d->num_experts = c->E;
    d->top_k = c->k;
    d->group_size = c->g;
    d->activation = c->act;
    d->io_dtype = c->io;
    if (w4a8moe_synth_weights_make(&cd->sw, d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) != 0)
        return -1;
    int64_t H = c->H, Is = c->Is;
    /* |h| ~ 0.7 and |out| ~ |y|: silu and gelu away from their linear parts */
    cd->dense[0] = dense_make(Is, H, c->wdt, 2.0f / sqrtf((float)H), r);
    cd->dense[1] = dense_make(Is, H, c->wdt, 2.0f / sqrtf((float)H), r);
    cd->dense[2] = dense_make(H, Is, c->wdt, 2.0f / sqrtf((float)Is), r);
    cd->gate = malloc((size_t)H * 2);
    cd->x = malloc((size_t)(TMAX * H) * dsize(c->io));
    cd->xnan = malloc((size_t)(TMAX * H) * dsize(c->io));
    cd->ids = malloc((size_t)(TMAX * c->k) * 4);
    cd->none = malloc((size_t)(TMAX * c->k) * 4);
    cd->wts = malloc((size_t)(TMAX * c->k) * 4);
    if (!cd->dense[0] || !cd->dense[1] || !cd->dense[2] || !cd->gate || !cd->x || !cd->xnan ||
        !cd->ids || !cd->none || !cd->wts)
        return -1;
    for (int64_t h = 0; h < H; h++) cd->gate[h] = w4a8moe_f32_to_bf16(test_rng_uniform(r, -0.1f, 0.1f));
    for (int64_t i = 0; i < TMAX * H; i++) put(cd->x, c->io, i, test_rng_uniform(r, -1.0f, 1.0f));
    memcpy(cd->xnan, cd->x, (size_t)(TMAX * H) * dsize(c->io));
    put(cd->xnan, c->io, 5 * H + H / 3, NAN);
    w4a8moe_synth_rng sr = {test_rng_next(r)};
    w4a8moe_synth_routing(cd->ids, cd->wts, TMAX, c->E, c->k, &sr);
    for (int64_t i = 0; i < TMAX * c->k; i++) cd->none[i] = -1;

    w4a8moe_shared_expert *se = &cd->se;
    se->inter = Is;
    se->weight_scheme = W4A8MOE_WEIGHT_BF16;
    se->act_scheme = W4A8MOE_ACT_BF16;
    se->gate = (w4a8moe_dense_matrix){cd->dense[0], c->wdt, Is, H};
    se->up = (w4a8moe_dense_matrix){cd->dense[1], c->wdt, Is, H};
    se->down = (w4a8moe_dense_matrix){cd->dense[2], c->wdt, H, Is};
    se->gate_weight = c->gated ? cd->gate : NULL;
    se->gate_weight_dtype = W4A8MOE_DTYPE_BF16;
    cd->w = cd->sw.weights;
    cd->w.shared = se;
    return 0;
}

static void cdata_free(cdata *cd)
{
    w4a8moe_synth_weights_free(&cd->sw);
    for (int p = 0; p < 3; p++) free(cd->dense[p]);
    free(cd->gate), free(cd->x), free(cd->xnan), free(cd->ids), free(cd->none), free(cd->wts);
}

/* backend NULL: the oracle chooses. */
static w4a8moe_layer *make_layer(const dcase *c, const cdata *cd, const char *backend, int threads,
                                 const char *want_shared)
{
    w4a8moe_layer_options o = {0};
    o.backend = backend;
    o.num_threads = threads;
    w4a8moe_layer *L = NULL;
    w4a8moe_status st = w4a8moe_layer_create(&cd->d, &cd->w, &o, &L);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: create (backend %s): %s", c->name, backend ? backend : "auto",
          w4a8moe_last_error());
    if (st != W4A8MOE_STATUS_OK) return NULL;
    const char *got = w4a8moe_layer_shared_backend(L);
    CHECK(strcmp(got, want_shared) == 0, "%s: backend %s: the shared pipeline runs on '%s', want %s",
          c->name, backend ? backend : "auto", got, want_shared);
    return L;
}

/* Forward into a poisoned buffer, widened to f32 in outf [T, H]. */
static int forward(const dcase *c, w4a8moe_layer *L, int64_t T, const void *x, const int32_t *ids,
                   const float *wts, float *outf)
{
    size_t bytes = (size_t)(T * c->H) * dsize(c->io);
    void *out = malloc(bytes);
    memset(out, 0xff, bytes);
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    w4a8moe_status st = w4a8moe_layer_forward(L, T, x, &ri, out, NULL);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: forward T = %lld: %s", c->name, (long long)T,
          w4a8moe_layer_error(L));
    for (int64_t i = 0; i < T * c->H; i++) outf[i] = get(out, c->io, i);
    free(out);
    return st == W4A8MOE_STATUS_OK ? 0 : -1;
}

/* Worst per-row rel-L2 of got against want; any non-finite value counts as 1. */
static double worst_rel_l2(const float *got, const float *want, int64_t T, int64_t H)
{
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        double num = 0, den = 0;
        for (int64_t h = 0; h < H; h++) {
            if (!isfinite(got[t * H + h]) || !isfinite(want[t * H + h])) return 1.0;
            double e = (double)got[t * H + h] - want[t * H + h];
            num += e * e;
            den += (double)want[t * H + h] * want[t * H + h];
        }
        double e = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static double g_worst_contract, g_worst_alone;

/* cpu against cpu_ref at T = 1 and T = TMAX, shared expert alone and with routed experts. */
static void check_against_ref(const dcase *c, const cdata *cd, w4a8moe_layer *cpu,
                              w4a8moe_layer *ref, float *a, float *b)
{
    int64_t Ts[3] = {1, 37, TMAX};
    for (int ti = 0; ti < 3; ti++)
        for (int routed = 0; routed < 2; routed++) {
            int64_t T = Ts[ti];
            const int32_t *ids = routed ? cd->ids : cd->none;
            if (forward(c, cpu, T, cd->x, ids, cd->wts, a) ||
                forward(c, ref, T, cd->x, ids, cd->wts, b))
                continue;
            double e = worst_rel_l2(a, b, T, c->H);
            CHECK(e <= 2e-3, "%s: T = %lld, %s: worst row rel-L2 %.3e against cpu_ref > 2e-3",
                  c->name, (long long)T, routed ? "routed + shared" : "shared alone", e);
            if (!(e <= g_worst_contract)) g_worst_contract = e;
            if (!routed && c->io == W4A8MOE_DTYPE_F32) {
                CHECK(e <= 1e-5, "%s: T = %lld, shared alone, f32 I/O: rel-L2 %.3e > 1e-5 (the f32 "
                      "block sums should leave ~5e-7)", c->name, (long long)T, e);
                if (!(e <= g_worst_alone)) g_worst_alone = e;
            }
            printf("  %-24s T = %2lld %-16s worst row rel-L2 vs cpu_ref %.3e\n", c->name,
                   (long long)T, routed ? "routed + shared" : "shared alone", e);
        }
}

/* The device query follows W4A8MOE_CPU_GENERIC (the cpu backend reads nothing else). */
static void check_device_caps(const char *cap, const w4a8moe_device_info *native)
{
    const w4a8moe_device_ops *ops = w4a8moe_registry_device(W4A8MOE_DEVICE_CPU);
    w4a8moe_device_info dev;
    w4a8moe_err err = {{0}};
    memset(&dev, 0, sizeof dev);
    CHECK(ops && ops->query(0, &dev, &err) == W4A8MOE_STATUS_OK, "cpu device query (%s)", cap);
    if (strcmp(cap, "1") == 0)
        CHECK(!dev.cpu_avx2 && !dev.cpu_fma && !dev.cpu_avx512f && !dev.cpu_avx512vnni,
              "W4A8MOE_CPU_GENERIC=1 must hide every extension (avx2 %d fma %d avx512f %d vnni %d)",
              dev.cpu_avx2, dev.cpu_fma, dev.cpu_avx512f, dev.cpu_avx512vnni);
    else
        CHECK(dev.cpu_avx2 == native->cpu_avx2 && dev.cpu_fma == native->cpu_fma &&
                  !dev.cpu_avx512f && !dev.cpu_avx512bw && !dev.cpu_avx512vnni,
              "W4A8MOE_CPU_GENERIC=avx2 must keep AVX2/FMA (%d/%d, native %d/%d) and hide AVX-512 "
              "(avx512f %d, vnni %d)", dev.cpu_avx2, dev.cpu_fma, native->cpu_avx2,
              native->cpu_fma, dev.cpu_avx512f, dev.cpu_avx512vnni);
}

/* Generic and AVX2 kernels, and 1 thread, against the native 2-thread run: bit for bit. */
static void check_paths(const dcase *c, const cdata *cd, const w4a8moe_device_info *native,
                        const float *want, float *got)
{
    static const char *const caps[2] = {"1", "avx2"};
    for (int i = 0; i < 2; i++) {
        setenv("W4A8MOE_CPU_GENERIC", caps[i], 1);
        check_device_caps(caps[i], native);
        w4a8moe_layer *L = make_layer(c, cd, "cpu", 1 + i, "cpu");
        unsetenv("W4A8MOE_CPU_GENERIC");
        if (!L) continue;
        if (forward(c, L, TMAX, cd->x, cd->ids, cd->wts, got) == 0)
            CHECK(memcmp(got, want, (size_t)(TMAX * c->H) * 4) == 0,
                  "%s: W4A8MOE_CPU_GENERIC=%s (%d threads) differs from the native kernels "
                  "(rel-L2 %.3e)", c->name, caps[i], 1 + i, worst_rel_l2(got, want, TMAX, c->H));
        w4a8moe_layer_free(L);
    }
}

/* The first T tokens alone = the same tokens inside the batch, for T = 1..5 (so every tile
 * shape of the AVX2 driver, 1..6 rows, meets the 6-row tiles of the batch); NaN in token 5's
 * x stays in row 5. */
static void check_rows(const dcase *c, const cdata *cd, w4a8moe_layer *cpu, const float *batch,
                       float *got)
{
    int64_t H = c->H;
    for (int64_t T = 1; T <= 5; T++)
        if (forward(c, cpu, T, cd->x, cd->none, cd->wts, got) == 0)
            CHECK(memcmp(got, batch, (size_t)(T * H) * 4) == 0, "%s: the first %lld tokens alone "
                  "differ from the same tokens in the batch of %d", c->name, (long long)T, TMAX);
    if (forward(c, cpu, TMAX, cd->xnan, cd->none, cd->wts, got) != 0) return;
    int bad = 0;
    for (int64_t t = 0; t < TMAX; t++)
        for (int64_t h = 0; h < H; h++) {
            float v = got[t * H + h];
            if (t == 5 ? !isnan(v) : memcmp(&v, &batch[t * H + h], 4) != 0) bad++;
        }
    CHECK(bad == 0, "%s: NaN in token 5's x: %d output values wrong (row 5 must be NaN, the "
          "others unchanged)", c->name, bad);
}

static void run_case(const dcase *c, test_rng *r, const w4a8moe_device_info *native)
{
    cdata cd;
    if (cdata_make(c, &cd, r) != 0) {
        CHECK(0, "%s: out of memory", c->name);
        cdata_free(&cd);
        return;
    }
    float *a = malloc((size_t)(TMAX * c->H) * 4), *b = malloc((size_t)(TMAX * c->H) * 4);
    float *want = malloc((size_t)(TMAX * c->H) * 4);
    w4a8moe_layer *cpu = make_layer(c, &cd, "cpu", 2, "cpu");
    w4a8moe_layer *ref = make_layer(c, &cd, "cpu_ref", 1, "cpu_ref");
    w4a8moe_layer *autol = make_layer(c, &cd, NULL, 0, "cpu");
    if (cpu && ref && autol && a && b && want) {
        check_against_ref(c, &cd, cpu, ref, a, b);
        if (forward(c, cpu, TMAX, cd.x, cd.ids, cd.wts, want) == 0 &&
            forward(c, autol, TMAX, cd.x, cd.ids, cd.wts, a) == 0)
            CHECK(memcmp(a, want, (size_t)(TMAX * c->H) * 4) == 0, "%s: the oracle's layer and "
                  "the forced cpu layer differ", c->name);
        check_paths(c, &cd, native, want, a);
        if (forward(c, cpu, TMAX, cd.x, cd.none, cd.wts, want) == 0) check_rows(c, &cd, cpu, want, a);
    }
    w4a8moe_layer_free(cpu);
    w4a8moe_layer_free(ref);
    w4a8moe_layer_free(autol);
    free(a), free(b), free(want);
    cdata_free(&cd);
}

/* The predicate itself: the unquantised pair is accepted, mixed pairs are not. */
static void test_predicate(void)
{
    const w4a8moe_experts_ops *cpu = w4a8moe_registry_find_experts("cpu");
    CHECK(cpu && cpu->supports_quant, "the cpu backend and its quant predicate exist");
    if (!cpu || !cpu->supports_quant) return;
    char why[W4A8MOE_WHY_CAP] = "";
    CHECK(cpu->supports_quant(W4A8MOE_WEIGHT_BF16, W4A8MOE_ACT_BF16, why, sizeof why) == 1,
          "cpu must accept bf16 x unquantised: %s", why);
    CHECK(cpu->supports_quant(W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_ACT_FP8_TOKEN_DYNAMIC, why,
                              sizeof why) == 1,
          "cpu must accept int4 x fp8 dynamic: %s", why);
    why[0] = '\0';
    CHECK(cpu->supports_quant(W4A8MOE_WEIGHT_BF16, W4A8MOE_ACT_FP8_TOKEN_DYNAMIC, why,
                              sizeof why) == 0 &&
              why[0] != '\0',
          "cpu must refuse bf16 weights with fp8 activations, with a reason");
    why[0] = '\0';
    CHECK(cpu->supports_quant(W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_ACT_BF16, why, sizeof why) == 0 &&
              why[0] != '\0',
          "cpu must refuse int4 weights with unquantised activations, with a reason");
}

int main(void)
{
    test_rng r = {test_seed()};
    unsetenv("W4A8MOE_CPU_GENERIC");
    unsetenv("W4A8MOE_BACKEND");
    w4a8moe_device_info native;
    w4a8moe_err err = {{0}};
    memset(&native, 0, sizeof native);
    CHECK(w4a8moe_registry_device(W4A8MOE_DEVICE_CPU)->query(0, &native, &err) == W4A8MOE_STATUS_OK,
          "cpu device query");
    printf("device: %s, avx2 %d fma %d avx512f %d avx512vnni %d\n", native.name, native.cpu_avx2,
           native.cpu_fma, native.cpu_avx512f, native.cpu_avx512vnni);
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    CHECK(native.cpu_avx512vnni == (__builtin_cpu_supports("avx512f") &&
                                    __builtin_cpu_supports("avx512vl") &&
                                    __builtin_cpu_supports("avx512vnni")),
          "avx512vnni bit %d disagrees with the CPU", native.cpu_avx512vnni);
#endif
    test_predicate();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].big && test_quick()) continue;
        run_case(&cases[i], &r, &native);
    }
    printf("worst row rel-L2 against cpu_ref: %.3e (all cases); shared expert alone, f32 I/O: %.3e\n",
           g_worst_contract, g_worst_alone);
    TEST_MAIN_END();
}
