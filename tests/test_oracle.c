/*
 * test_oracle.c — the oracle's decision table, no GPU needed: hand-made device descriptions
 * (CPU with and without AVX2, CUDA sm_80/89/90) × scheme pairs × activations × parallel
 * configs × shapes → every registered backend gets a verdict (ok with a partner, or a first
 * failing axis and a reason); fake backends check the axis order; forced backends (option and
 * W4A8MOE_BACKEND) fail loudly; the explain report has one line per backend.
 *
 * CUDA backends may or may not be in this build: they are looked up by name and only asserted
 * on when present.
 */
#include "core/oracle.h"
#include "common/synth.h"
#include "test_util.h"

#include <string.h>

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static w4a8moe_device_info cpu_dev(int avx2)
{
    w4a8moe_device_info d;
    memset(&d, 0, sizeof d);
    d.kind = W4A8MOE_DEVICE_CPU;
    d.cpu_x86_64 = 1;
    d.cpu_avx2 = d.cpu_fma = avx2;
    d.cpu_threads = 2;
    snprintf(d.name, sizeof d.name, "test cpu%s", avx2 ? " avx2" : "");
    return d;
}

static w4a8moe_device_info cuda_dev(int sm)
{
    w4a8moe_device_info d;
    memset(&d, 0, sizeof d);
    d.kind = W4A8MOE_DEVICE_CUDA;
    d.cuda_sm = sm;
    d.cuda_sm_count = 132;
    d.cuda_mem_bytes = (int64_t)80 << 30;
    snprintf(d.name, sizeof d.name, "test sm_%d", sm);
    return d;
}

static void base_desc(w4a8moe_layer_desc *d, int64_t H, int64_t I, int E, int k, int g, int64_t T)
{
    w4a8moe_layer_desc_init(d);
    d->max_tokens = T;
    d->hidden = H;
    d->inter = I;
    d->num_experts = E;
    d->top_k = k;
    d->group_size = g;
    d->act_scale_in = d->act_scale_mid = 0.01f;
}

/* ---- the decision table over real backends ---- */

typedef struct shape_case {
    int64_t H, I;
    int E, k, g;
    int64_t T;
} shape_case;

static const shape_case shapes[] = {
    {256, 128, 8, 2, 64, 16},       /* tiny */
    {320, 160, 8, 2, 32, 4},        /* H, I multiples of g but not of 256 */
    {2048, 768, 128, 8, 128, 1},    /* qwen3-30b-a3b decode */
    {4096, 14336, 8, 2, 128, 4096}, /* mixtral prefill */
    {7168, 2048, 256, 8, 128, 64},  /* deepseek-v3 */
    {96, 96, 4, 4, 32, 3},          /* k = E */
};

static void check_one_verdict(const w4a8moe_experts_ops *ops, const w4a8moe_device_info *dev,
                              const w4a8moe_layer_desc *d, const char *ctx)
{
    w4a8moe_verdict v;
    memset(&v, 0x5a, sizeof v); /* judge must fill every field */
    w4a8moe_oracle_judge(ops, dev, d, &v);
    if (v.ok) {
        CHECK(v.prepfin != NULL, "%s: %s ok without a prepare/finalize partner", ctx, ops->name);
        if (v.prepfin)
            CHECK(v.prepfin->device_kind == ops->device_kind && v.prepfin->layout == ops->layout,
                  "%s: %s paired with %s of another device or layout", ctx, ops->name, v.prepfin->name);
        CHECK(ops->device_kind == dev->kind, "%s: %s accepted on a device of another kind", ctx,
              ops->name);
        CHECK(d->ep_size == 1 || ops->device_kind != W4A8MOE_DEVICE_CPU,
              "%s: CPU backend %s accepted ep_size %d, but no CPU prepare/finalize does EP", ctx,
              ops->name, d->ep_size);
    } else {
        CHECK((unsigned)v.axis < W4A8MOE_AXIS_COUNT_, "%s: %s rejected at axis %d", ctx, ops->name,
              (int)v.axis);
        CHECK(memchr(v.why, '\0', sizeof v.why) && v.why[0] != '\0' && !strchr(v.why, '\n'),
              "%s: %s rejected without a one-line reason", ctx, ops->name);
        if (ops->device_kind != dev->kind)
            CHECK(v.axis == W4A8MOE_AXIS_DEVICE && has(v.why, "runs on"),
                  "%s: %s on a device of another kind must fail at the device axis, got %s: %s",
                  ctx, ops->name, w4a8moe_axis_name(v.axis), v.why);
        if (ops->device_kind == W4A8MOE_DEVICE_CPU && dev->kind == W4A8MOE_DEVICE_CPU &&
            d->ep_size > 1 && v.axis == W4A8MOE_AXIS_PARALLEL && !ops->supports_parallel)
            CHECK(has(v.why, "ep_size"), "%s: %s: the parallel reason must mention ep_size: %s",
                  ctx, ops->name, v.why);
    }
    if (strcmp(ops->name, "cpu_ref") == 0 && dev->kind == W4A8MOE_DEVICE_CPU)
        CHECK(v.ok == (d->ep_size == 1), "%s: cpu_ref must accept every CPU layer with ep_size 1 and "
              "no other (ok %d, %s: %s)", ctx, v.ok, w4a8moe_axis_name(v.axis), v.why);
    if (dev->kind == W4A8MOE_DEVICE_CUDA && !v.ok && ops->device_kind == W4A8MOE_DEVICE_CUDA &&
        v.axis == W4A8MOE_AXIS_DEVICE)
        CHECK(has(v.why, "sm") || has(v.why, "API"), "%s: %s device reason should name the "
              "architecture: %s", ctx, ops->name, v.why);
}

/* Counts report lines that start with name followed by a space. */
static int count_lines_for(const char *report, const char *name, const char *needle, int *with_needle)
{
    int n = 0;
    size_t len = strlen(name);
    *with_needle = 0;
    for (const char *p = report; *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > len && strncmp(p, name, len) == 0 && p[len] == ' ') {
            n++;
            char line[512];
            snprintf(line, sizeof line, "%.*s", (int)ll, p);
            *with_needle += has(line, needle);
        }
        p += ll + (eol ? 1 : 0);
    }
    return n;
}

/* select and report must agree with the judge: the first ok backend in priority order. */
static void check_select_and_report(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                                    const char *ctx)
{
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    const w4a8moe_experts_ops *first = NULL;
    for (size_t i = 0; i < n && !first; i++) {
        w4a8moe_verdict v;
        w4a8moe_oracle_judge(ex[i], dev, d, &v);
        if (v.ok) first = ex[i];
    }
    const w4a8moe_experts_ops *got = NULL;
    const w4a8moe_prepfin_ops *pf = NULL;
    w4a8moe_err err = {{0}};
    w4a8moe_status st = w4a8moe_oracle_select(dev, d, NULL, &got, &pf, &err);
    if (first) {
        CHECK(st == W4A8MOE_STATUS_OK && got == first && pf != NULL,
              "%s: select gave %s (status %d), the first accepted backend is %s", ctx,
              got ? got->name : "nothing", (int)st, first->name);
    } else {
        CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && has(err.msg, "no backend runs this layer") &&
                  has(err.msg, "hint:"),
              "%s: nothing fits, select must say so: status %d, '%s'", ctx, (int)st, err.msg);
    }
    char report[4096];
    size_t need = w4a8moe_oracle_report(dev, d, NULL, report, sizeof report);
    CHECK(need == strlen(report), "%s: report length %zu, string %zu", ctx, need, strlen(report));
    int selected_total = 0;
    for (size_t i = 0; i < n; i++) {
        int sel;
        int lines = count_lines_for(report, ex[i]->name, "selected", &sel);
        CHECK(lines == 1, "%s: report has %d lines for %s:\n%s", ctx, lines, ex[i]->name, report);
        selected_total += sel;
        if (first == ex[i]) CHECK(sel == 1, "%s: %s should be the selected line", ctx, first->name);
    }
    CHECK(selected_total == (first ? 1 : 0), "%s: %d backends marked selected:\n%s", ctx,
          selected_total, report);
    if (!first) CHECK(has(report, "no backend selected"), "%s: report must say nothing fits", ctx);
}

static void test_table(void)
{
    w4a8moe_device_info devs[5] = {cpu_dev(1), cpu_dev(0), cuda_dev(80), cuda_dev(89), cuda_dev(90)};
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    CHECK(n >= 1 && strcmp(ex[n - 1]->name, "cpu_ref") == 0,
          "the registry must end with cpu_ref (the reference is the lowest priority)");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(ex[i]->name, ex[j]->name) != 0, "backend name %s registered twice", ex[i]->name);
    /* the scheme pairs layers are made of: int4 routed experts with fp8 activations, and the
     * unquantised pair of shared-expert pipelines */
    static const int pairs[3][2] = {{W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_ACT_FP8_TOKEN_DYNAMIC},
                                    {W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_ACT_FP8_TENSOR_STATIC},
                                    {W4A8MOE_WEIGHT_BF16, W4A8MOE_ACT_BF16}};
    int combos = 0;
    for (int di = 0; di < 5; di++)
        for (int pi = 0; pi < 3; pi++)
            for (int act = 0; act < W4A8MOE_ACTIVATION_COUNT_; act++)
                for (int ep = 1; ep <= 2; ep++)
                    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                        const shape_case *s = &shapes[si];
                        w4a8moe_layer_desc d;
                        base_desc(&d, s->H, s->I, s->E, s->k, s->g, s->T);
                        d.weight_scheme = (w4a8moe_weight_scheme)pairs[pi][0];
                        d.act_scheme = (w4a8moe_act_scheme)pairs[pi][1];
                        d.activation = (w4a8moe_activation)act;
                        d.ep_size = ep;
                        d.ep_rank = ep - 1;
                        for (int io = 0; io < W4A8MOE_DTYPE_COUNT_; io += 2) {
                            d.io_dtype = (w4a8moe_dtype)io;
                            char ctx[320];
                            snprintf(ctx, sizeof ctx, "[%s, schemes %d x %d, act %d, ep %d, H %lld I %lld E %d k %d g %d T %lld, io %d]",
                                     devs[di].name, pairs[pi][0], pairs[pi][1], act, ep, (long long)s->H,
                                     (long long)s->I, s->E, s->k, s->g, (long long)s->T, io);
                            for (size_t b = 0; b < n; b++) check_one_verdict(ex[b], &devs[di], &d, ctx);
                            check_select_and_report(&devs[di], &d, ctx);
                            combos++;
                        }
                    }
    printf("decision table: %d combinations x %zu backends\n", combos, n);

    /* architecture rules of the planned CUDA backends, when this build has them */
    w4a8moe_layer_desc d;
    base_desc(&d, 2048, 768, 128, 8, 128, 64);
    const w4a8moe_experts_ops *sm89 = w4a8moe_registry_find_experts("cuda_sm89");
    const w4a8moe_experts_ops *sm90 = w4a8moe_registry_find_experts("cuda_sm90");
    w4a8moe_verdict v;
    /* on sm_89/90 a backend may still refuse at the device axis when this binary has no code
     * for the card (its predicate asks the CUDA runtime), but at no later axis */
    if (sm89) {
        w4a8moe_oracle_judge(sm89, &devs[2], &d, &v);
        CHECK(!v.ok && v.axis == W4A8MOE_AXIS_DEVICE, "cuda_sm89 must reject sm_80 at the device axis");
        w4a8moe_oracle_judge(sm89, &devs[3], &d, &v);
        CHECK(v.ok || v.axis == W4A8MOE_AXIS_DEVICE, "cuda_sm89 on sm_89, qwen3 layer: %s: %s",
              w4a8moe_axis_name(v.axis), v.why);
    }
    if (sm90) {
        w4a8moe_oracle_judge(sm90, &devs[3], &d, &v);
        CHECK(!v.ok && v.axis == W4A8MOE_AXIS_DEVICE, "cuda_sm90 must reject sm_89 at the device axis");
        w4a8moe_oracle_judge(sm90, &devs[4], &d, &v);
        CHECK(v.ok || v.axis == W4A8MOE_AXIS_DEVICE, "cuda_sm90 on sm_90, qwen3 layer: %s: %s",
              w4a8moe_axis_name(v.axis), v.why);
    }
    printf("cuda backends in this build: %s%s%s\n", sm89 ? "cuda_sm89 " : "", sm90 ? "cuda_sm90" : "",
           sm89 || sm90 ? "" : "none");
}

/* ---- axis order, with fake backends ---- */

static char call_log[64];
static int fail_mask; /* bit per axis: that predicate rejects */

static void logc(char c)
{
    size_t l = strlen(call_log);
    if (l + 1 < sizeof call_log) call_log[l] = c, call_log[l + 1] = '\0';
}

static int fake_device(const w4a8moe_device_info *dev, char *why, size_t cap)
{
    logc('D');
    if (fail_mask & 1) snprintf(why, cap, "fake device reason");
    return !(fail_mask & 1);
}
static int fake_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap)
{
    logc('Q');
    if (fail_mask & 2) snprintf(why, cap, "fake quant reason");
    return !(fail_mask & 2);
}
static int fake_act(w4a8moe_activation act, char *why, size_t cap)
{
    logc('A');
    if (fail_mask & 4) snprintf(why, cap, "fake activation reason");
    return !(fail_mask & 4);
}
static int fake_parallel(int32_t rank, int32_t size, char *why, size_t cap)
{
    logc('P');
    if (fail_mask & 8) snprintf(why, cap, "fake parallel reason");
    return !(fail_mask & 8);
}
static int fake_shape(const w4a8moe_layer_desc *d, char *why, size_t cap)
{
    logc('S');
    if (fail_mask & 16) snprintf(why, cap, "fake shape reason");
    return !(fail_mask & 16);
}

static const w4a8moe_experts_ops fake_ops = {
    .name = "fake",
    .api_version = W4A8MOE_BACKEND_API,
    .device_kind = W4A8MOE_DEVICE_CPU,
    .layout = W4A8MOE_LAYOUT_CONTIGUOUS,
    .supports_device = fake_device,
    .supports_quant = fake_quant,
    .supports_activation = fake_act,
    .supports_parallel = fake_parallel,
    .supports_shape = fake_shape,
};

static void test_axis_order(void)
{
    static const char *const reasons[5] = {"fake device reason", "fake quant reason",
                                           "fake activation reason", "fake parallel reason",
                                           "fake shape reason"};
    static const char order[6] = "DQAPS";
    w4a8moe_device_info dev = cpu_dev(1);
    w4a8moe_layer_desc d;
    base_desc(&d, 256, 128, 8, 2, 64, 16);
    w4a8moe_verdict v;
    /* every subset of failing axes: the verdict is the earliest, and no later axis is asked */
    for (int mask = 0; mask < 32; mask++) {
        fail_mask = mask;
        call_log[0] = '\0';
        w4a8moe_oracle_judge(&fake_ops, &dev, &d, &v);
        if (!mask) {
            CHECK(v.ok && v.why[0] == '\0' && v.prepfin && strcmp(v.prepfin->name, "local") == 0,
                  "fake backend passing every axis must be ok with 'local'");
            CHECK(strcmp(call_log, "DQAPS") == 0, "axes asked in order DQAPS, got %s", call_log);
            continue;
        }
        int first = __builtin_ctz((unsigned)mask);
        CHECK(!v.ok && (int)v.axis == first && strcmp(v.why, reasons[first]) == 0,
              "failing mask 0x%02x: verdict %s '%s', expected %s '%s'", mask,
              w4a8moe_axis_name(v.axis), v.why, w4a8moe_axis_name((w4a8moe_axis)first), reasons[first]);
        CHECK(strlen(call_log) == (size_t)first + 1 && strncmp(call_log, order, (size_t)first + 1) == 0,
              "failing mask 0x%02x: asked '%s', expected '%.*s' (stop at the first failure)", mask,
              call_log, first + 1, order);
    }
    /* a backend of another device kind fails at the device axis before its predicates run */
    w4a8moe_experts_ops other = fake_ops;
    other.device_kind = W4A8MOE_DEVICE_CUDA;
    fail_mask = 2 | 16;
    call_log[0] = '\0';
    w4a8moe_oracle_judge(&other, &dev, &d, &v);
    CHECK(!v.ok && v.axis == W4A8MOE_AXIS_DEVICE && has(v.why, "cuda") && call_log[0] == '\0',
          "cuda backend on a cpu layer: %s '%s' (asked '%s')", w4a8moe_axis_name(v.axis), v.why,
          call_log);
    /* a backend built for another API version is refused first */
    other = fake_ops;
    other.api_version = W4A8MOE_BACKEND_API + 1;
    fail_mask = 0;
    call_log[0] = '\0';
    w4a8moe_oracle_judge(&other, &dev, &d, &v);
    CHECK(!v.ok && v.axis == W4A8MOE_AXIS_DEVICE && has(v.why, "API") && call_log[0] == '\0',
          "API mismatch: %s '%s'", w4a8moe_axis_name(v.axis), v.why);
    /* no prepare/finalize for the batched layout on the CPU: rejected with that reason, before
     * the shape axis */
    other = fake_ops;
    other.layout = W4A8MOE_LAYOUT_BATCHED;
    fail_mask = 16;
    call_log[0] = '\0';
    w4a8moe_oracle_judge(&other, &dev, &d, &v);
    CHECK(!v.ok && v.axis == W4A8MOE_AXIS_PARALLEL && has(v.why, "batched") &&
              has(v.why, "prepare/finalize") && strchr(call_log, 'S') == NULL,
          "batched layout without a partner: %s '%s' (asked '%s')", w4a8moe_axis_name(v.axis), v.why,
          call_log);
    /* ep_size 2: the backend says yes, but the local prepare/finalize does not */
    d.ep_size = 2;
    fail_mask = 0;
    w4a8moe_oracle_judge(&fake_ops, &dev, &d, &v);
    CHECK(!v.ok && v.axis == W4A8MOE_AXIS_PARALLEL && has(v.why, "ep_size 2"),
          "ep_size 2 on the CPU: %s '%s'", w4a8moe_axis_name(v.axis), v.why);
    CHECK(strcmp(w4a8moe_axis_name(W4A8MOE_AXIS_SHAPE), "shape") == 0 &&
              strcmp(w4a8moe_axis_name(W4A8MOE_AXIS_DEVICE), "device") == 0 &&
              strcmp(w4a8moe_axis_name((w4a8moe_axis)99), "?") == 0,
          "axis names");
}

/* ---- forced backends ---- */

static void test_forced(void)
{
    w4a8moe_device_info cpu = cpu_dev(1), gpu = cuda_dev(90);
    w4a8moe_layer_desc d;
    base_desc(&d, 256, 128, 8, 2, 64, 16);
    const w4a8moe_experts_ops *ex = NULL;
    const w4a8moe_prepfin_ops *pf = NULL;
    w4a8moe_err err = {{0}};
    w4a8moe_status st = w4a8moe_oracle_select(&gpu, &d, "cpu_ref", &ex, &pf, &err);
    CHECK(st == W4A8MOE_STATUS_UNSUPPORTED, "forced cpu_ref on a CUDA layer: status %d", (int)st);
    CHECK(has(err.msg, "cpu_ref") && has(err.msg, "device") && has(err.msg, "runs on cpu") &&
              has(err.msg, "hint:"),
          "forced misfit message must carry the reason: '%s'", err.msg);

    st = w4a8moe_oracle_select(&cpu, &d, "no_such_backend", &ex, &pf, &err);
    CHECK(st == W4A8MOE_STATUS_NOT_FOUND, "unknown forced name: status %d", (int)st);
    size_t n;
    const w4a8moe_experts_ops *const *all = w4a8moe_registry_experts(&n);
    CHECK(has(err.msg, "no_such_backend"), "NOT_FOUND names the wrong name: '%s'", err.msg);
    for (size_t i = 0; i < n; i++)
        CHECK(has(err.msg, all[i]->name), "NOT_FOUND must list %s: '%s'", all[i]->name, err.msg);

    ex = NULL;
    st = w4a8moe_oracle_select(&cpu, &d, "cpu_ref", &ex, &pf, &err);
    CHECK(st == W4A8MOE_STATUS_OK && ex && strcmp(ex->name, "cpu_ref") == 0 && pf &&
              strcmp(pf->name, "local") == 0,
          "forced cpu_ref on the CPU must be chosen with local");

    d.ep_size = 2;
    st = w4a8moe_oracle_select(&cpu, &d, "cpu_ref", &ex, &pf, &err);
    CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && has(err.msg, "parallel") && has(err.msg, "ep_size"),
          "forced cpu_ref with ep_size 2: %d '%s'", (int)st, err.msg);

    char report[4096];
    d.ep_size = 1;
    w4a8moe_oracle_report(&cpu, &d, "cpu_ref", report, sizeof report);
    int sel;
    CHECK(count_lines_for(report, "cpu_ref", "selected, forced", &sel) == 1 && sel == 1,
          "report with cpu_ref forced:\n%s", report);
    w4a8moe_oracle_report(&cpu, &d, "no_such_backend", report, sizeof report);
    CHECK(has(report, "no backend selected: the forced backend does not fit"),
          "report with an unknown forced backend:\n%s", report);
}

/* ---- the public face: explain, W4A8MOE_BACKEND ---- */

static int count_selected_lines(const char *report)
{
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    int total = 0, sel;
    for (size_t i = 0; i < n; i++) {
        int lines = count_lines_for(report, ex[i]->name, "selected", &sel);
        CHECK(lines == 1, "explain has %d lines for %s:\n%s", lines, ex[i]->name, report);
        total += sel;
    }
    return total;
}

/* ---- paths by batch size (describe_batch) ---- */

/* A fake backend's paths: "small" up to 4 tokens, "mid" up to 10, then "big", settled. */
static int fake_describe(const w4a8moe_stage_ctx *ctx, int64_t T, char *buf, size_t cap)
{
    (void)ctx;
    snprintf(buf, cap, "%s", T <= 4 ? "small" : T <= 10 ? "mid" : "big");
    return T > 10 ? 2 : 1;
}

/* The report's ranges: each T from 1 to max_tokens in exactly one, in order, with its path. */
static void test_batch_ranges(void)
{
    w4a8moe_experts_ops fake = {0};
    fake.name = "fake";
    fake.describe_batch = fake_describe;
    w4a8moe_device_info dev = cuda_dev(90);
    static const struct { int64_t max_tokens; const char *want; } cases[] = {
        {128, "    T = 1-4          small\n    T = 5-10         mid\n    T = 11-128       big\n"},
        {10, "    T = 1-4          small\n    T = 5-10         mid\n"},
        {5, "    T = 1-4          small\n    T = 5            mid\n"},
        {1, "    T = 1            small\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        w4a8moe_layer_desc d;
        base_desc(&d, 256, 128, 8, 2, 64, cases[i].max_tokens);
        char buf[1024];
        size_t used = 0;
        buf[0] = '\0';
        w4a8moe_oracle_report_batches(&fake, &dev, &d, buf, sizeof buf, &used);
        const char *ranges = strchr(buf, '\n');
        CHECK(ranges && strcmp(ranges + 1, cases[i].want) == 0 && used == strlen(buf),
              "max_tokens %lld: batch ranges\n%s\nwant\n%s", (long long)cases[i].max_tokens, buf,
              cases[i].want);
    }
}

/* The experts backend `name` when this build has it and it describes its batch paths (checked),
 * else NULL (a build without it says so). */
static const w4a8moe_experts_ops *batch_describer(const char *name)
{
    const w4a8moe_experts_ops *ops = w4a8moe_registry_find_experts(name);
    if (!ops) {
        printf("%s not in this build: its batch paths not checked\n", name);
        return NULL;
    }
    CHECK(ops->describe_batch, "%s describes its batch paths", name);
    return ops->describe_batch ? ops : NULL;
}

/* cuda_sm90's paths (when in this build) follow configs/sm90_tiles.h: Mixtral's shape (E 8, k 2,
 * I = 112 groups) takes the mma tiles up to 6 rows an expert (T <= 24), GEMM2 in K eighths and
 * the PDL prologues up to 8 routed rows (T <= 4), then the 32-row wgmma tiles up to 32 rows
 * (T <= 128), 64-row up to 64, 128-row up to 384, then 256 (128 with f32 scales); GEMM2's K in
 * parts where its grid is short of a wave on 132 SMs (T = 25-80 on the 32-row tiles: 8 tiles of
 * 32 CTAs for 396 slots), settled once its grid is six waves (T = 4,096: 36 tiles, 1,152 CTAs). */
static void test_sm90_paths(void)
{
    const w4a8moe_experts_ops *sm90 = batch_describer("cuda_sm90");
    if (!sm90) return;
    setenv("W4A8MOE_SM90_SPLIT_K", "0", 1); /* GEMM2's K parts by its grid (not the default yet) */
    w4a8moe_layer_desc d;
    base_desc(&d, 4096, 14336, 8, 2, 128, 4096);
    w4a8moe_device_info dev = cuda_dev(90);
    w4a8moe_stage_ctx ctx = {0};
    ctx.desc = &d;
    ctx.dev = &dev;
    ctx.num_local = 8;
    static const struct { int64_t T; int ret; const char *has1, *has2; } want[] = {
        {1, 1, "1-6 rows an expert: mma.sync tiles of 8 rows", "GEMM2's 8 ways (a long K"},
        {4, 1, "mma.sync", "PDL prologues"},
        {5, 1, "1-6 rows an expert: mma.sync tiles of 8 rows, K split 4 ways", ""},
        {24, 1, "mma.sync", ""},
        {25, 1, "7-32 rows an expert: wgmma tiles, GEMM1 32 rows, GEMM2 32", ""},
        {128, 1, "GEMM1 32 rows", ""},
        {129, 1, "33-64 rows an expert: wgmma tiles, GEMM1 64 rows, GEMM2 64", ""},
        {257, 1, "65-384 rows an expert: wgmma tiles, GEMM1 128 rows, GEMM2 128", ""},
        {1537, 1, "385+ rows an expert: wgmma tiles, GEMM1 128 rows, GEMM2 256 (128 with f32 scales)", ""},
        {4096, 2, "385+ rows an expert: wgmma tiles, GEMM1 128 rows, GEMM2 256 (128 with f32 scales)", ""},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char buf[256];
        int r = sm90->describe_batch(&ctx, want[i].T, buf, sizeof buf);
        CHECK(r == want[i].ret && has(buf, want[i].has1) && has(buf, want[i].has2),
              "cuda_sm90 T = %lld: %d '%s', want %d with '%s' and '%s'", (long long)want[i].T, r, buf,
              want[i].ret, want[i].has1, want[i].has2);
        /* at most 8 routed rows (T <= 4): the prologues, and GEMM2's K in eighths (I = 112 groups) */
        CHECK((want[i].T <= 4) == has(buf, "PDL prologues"), "cuda_sm90 T = %lld: PDL prologues? '%s'",
              (long long)want[i].T, buf);
        CHECK((want[i].T <= 4) == has(buf, "GEMM2's 8 ways"), "cuda_sm90 T = %lld: GEMM2's K split? '%s'",
              (long long)want[i].T, buf);
    }
    /* the switches move the paths as they move the forwards (read when asked) */
    setenv("W4A8MOE_SM90_MMA_MAX_ROWS", "0", 1);
    char buf[512];
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    unsetenv("W4A8MOE_SM90_MMA_MAX_ROWS");
    CHECK(has(buf, "wgmma tiles, GEMM1 32 rows"), "cuda_sm90, no mma tiles, T = 1: '%s'", buf);
    /* a one-token forward's defaults (round 39): the token quantised first, GEMM1 staging its row
     * with it, GEMM2 staging its row (W4A8MOE_SM90_STAGE's bit 2); =0 turns either off */
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "both GEMMs read the token's row from shared memory (W4A8MOE_SM90_STAGE)") &&
              has(buf, "the token quantised first, GEMM1's product before its wait (W4A8MOE_SM90_QUANT_FIRST)"),
          "cuda_sm90, defaults, T = 1: '%s'", buf);
    setenv("W4A8MOE_SM90_QUANT_FIRST", "0", 1);
    setenv("W4A8MOE_SM90_STAGE", "0", 1);
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "mma.sync tiles") && !has(buf, "STAGE") && !has(buf, "QUANT_FIRST"),
          "cuda_sm90, QUANT_FIRST=0 STAGE=0, T = 1: '%s'", buf);
    /* STAGE by GEMM, named per GEMM, T = 1 only (QUANT_FIRST=0: it would stage GEMM1 anyway) */
    static const struct { const char *v, *says; } stages[] = {
        {"1", "GEMM1 reads the token's row from shared memory (W4A8MOE_SM90_STAGE)"},
        {"2", "GEMM2 reads the token's row from shared memory"},
        {"3", "both GEMMs read the token's row from shared memory"},
    };
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        setenv("W4A8MOE_SM90_STAGE", stages[i].v, 1);
        sm90->describe_batch(&ctx, 1, buf, sizeof buf);
        CHECK(has(buf, "mma.sync tiles") && has(buf, stages[i].says), "cuda_sm90, STAGE=%s, T = 1: '%s'",
              stages[i].v, buf);
        sm90->describe_batch(&ctx, 2, buf, sizeof buf);
        CHECK(has(buf, "mma.sync tiles") && !has(buf, "STAGE"), "cuda_sm90, STAGE=%s, T = 2: '%s'", stages[i].v,
              buf);
    }
    setenv("W4A8MOE_SM90_FIND_IDS", "0", 1); /* GEMM1 stages only where it finds its expert from the ids */
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "GEMM2 reads the token's row") && !has(buf, "GEMM1") && !has(buf, "both"),
          "cuda_sm90, STAGE=3 FIND_IDS=0, T = 1: '%s'", buf);
    unsetenv("W4A8MOE_SM90_FIND_IDS");
    unsetenv("W4A8MOE_SM90_STAGE");
    unsetenv("W4A8MOE_SM90_QUANT_FIRST");
    /* the token quantised first and GEMM1's product before its wait (W4A8MOE_SM90_QUANT_FIRST):
     * T = 1 only, GEMM1 staging its row with it, not without GEMM1 finding its expert from the ids */
    char qbuf[512];
    setenv("W4A8MOE_SM90_QUANT_FIRST", "1", 1);
    sm90->describe_batch(&ctx, 1, qbuf, sizeof qbuf);
    CHECK(has(qbuf, "both GEMMs read the token's row from shared memory") &&
              has(qbuf, "the token quantised first, GEMM1's product before its wait (W4A8MOE_SM90_QUANT_FIRST)"),
          "cuda_sm90, QUANT_FIRST=1, T = 1: '%s'", qbuf);
    sm90->describe_batch(&ctx, 2, qbuf, sizeof qbuf);
    CHECK(!has(qbuf, "QUANT_FIRST"), "cuda_sm90, QUANT_FIRST=1, T = 2: '%s'", qbuf);
    setenv("W4A8MOE_SM90_FIND_IDS", "0", 1);
    sm90->describe_batch(&ctx, 1, qbuf, sizeof qbuf);
    CHECK(!has(qbuf, "QUANT_FIRST") && has(qbuf, "GEMM2 reads the token's row") && !has(qbuf, "both"),
          "cuda_sm90, QUANT_FIRST=1 FIND_IDS=0, T = 1: '%s'", qbuf);
    unsetenv("W4A8MOE_SM90_FIND_IDS");
    unsetenv("W4A8MOE_SM90_QUANT_FIRST");
    /* GEMM2 in K eighths for a long K (this shape's I = 14,336: 112 groups) at <= 8 routed rows
     * (configs/sm90_tiles.h), named; GEMM1 in quarters */
    sm90->describe_batch(&ctx, 1, qbuf, sizeof qbuf);
    CHECK(has(qbuf, "K split 4 ways, GEMM2's 8 ways (a long K, <= 8 routed rows)") && !has(qbuf, "GEMM1's 8"),
          "cuda_sm90, T = 1: '%s'", qbuf);
    sm90->describe_batch(&ctx, 16, qbuf, sizeof qbuf);
    CHECK(has(qbuf, "mma.sync tiles") && !has(qbuf, "8 ways"), "cuda_sm90, T = 16: '%s'", qbuf);
    /* the one-launch experts of one token (W4A8MOE_SM90_FUSED=1): T = 1 only, g = 64 or 128 */
    setenv("W4A8MOE_SM90_FUSED", "1", 1);
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "one token: its experts in one launch"), "cuda_sm90, FUSED=1, T = 1: '%s'", buf);
    sm90->describe_batch(&ctx, 2, buf, sizeof buf);
    CHECK(has(buf, "mma.sync tiles") && !has(buf, "one launch"), "cuda_sm90, FUSED=1, T = 2: '%s'", buf);
    d.group_size = 32;
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "mma.sync tiles") && has(buf, "not in one launch: group size 32"),
          "cuda_sm90, FUSED=1, g = 32, T = 1: '%s'", buf);
    d.group_size = 128;
    setenv("W4A8MOE_SM90_FUSED_GPS", "3", 1);
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(has(buf, "not in one launch: W4A8MOE_SM90_FUSED_GPS = 3"), "cuda_sm90, FUSED_GPS=3, T = 1: '%s'", buf);
    unsetenv("W4A8MOE_SM90_FUSED_GPS");
    unsetenv("W4A8MOE_SM90_FUSED");
    sm90->describe_batch(&ctx, 1, buf, sizeof buf);
    CHECK(!has(buf, "one launch"), "cuda_sm90, FUSED unset, T = 1: '%s'", buf);
    /* the whole walk: one line a range, the last from 1,537 tokens to max_tokens */
    char rep[2048];
    size_t used = 0;
    rep[0] = '\0';
    w4a8moe_oracle_report_batches(sm90, &dev, &d, rep, sizeof rep, &used);
    CHECK(has(rep, "T = 1 ") && has(rep, "T = 2-4 ") && has(rep, "T = 5-24 ") && has(rep, "T = 25-64 ") &&
              has(rep, "GEMM2 32, its K in 3 parts") && has(rep, "T = 81-128 ") && has(rep, "T = 1537-4096 "),
          "cuda_sm90 batch ranges for Mixtral's shape:\n%s", rep);
    unsetenv("W4A8MOE_SM90_SPLIT_K");
    sm90->describe_batch(&ctx, 64, buf, sizeof buf); /* the default: one part */
    CHECK(!has(buf, "parts"), "cuda_sm90 T = 64, W4A8MOE_SM90_SPLIT_K unset: '%s'", buf);
}

/* cuda_sm89's (when in this build): configs/sm89_tiles.h's four entries on qwen3-30b's shape
 * (128 experts, k 8): up to 8 rows an expert T <= 128, 16: T <= 256, 48: T <= 768, then settled. */
static void test_sm89_paths(void)
{
    const w4a8moe_experts_ops *sm89 = batch_describer("cuda_sm89");
    if (!sm89) return;
    w4a8moe_layer_desc d;
    base_desc(&d, 2048, 768, 128, 8, 128, 1024);
    w4a8moe_device_info dev = cuda_dev(89);
    char rep[2048];
    size_t used = 0;
    rep[0] = '\0';
    w4a8moe_oracle_report_batches(sm89, &dev, &d, rep, sizeof rep, &used);
    CHECK(has(rep, "T = 1-128        1-8 rows an expert: mma.sync tiles of 8 rows, K split 4 ways\n") &&
              has(rep, "T = 129-256      9-16 rows an expert: mma.sync tiles of 16 rows, K split 4 ways\n") &&
              has(rep, "T = 257-768      17-48 rows an expert: mma.sync tiles of 32 rows, K split 2 ways\n") &&
              has(rep, "T = 769-1024     49+ rows an expert: mma.sync tiles of 32 rows, K split 1 way\n"),
          "cuda_sm89 batch ranges for qwen3-30b's shape:\n%s", rep);
}

static void test_public_explain(void)
{
    unsetenv("W4A8MOE_BACKEND");
    w4a8moe_layer_desc d;
    base_desc(&d, 256, 128, 8, 2, 64, 16);
    char buf[4096];
    size_t need = 0;
    CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, &need) == W4A8MOE_STATUS_OK, "explain: %s",
          w4a8moe_last_error());
    CHECK(need == strlen(buf) + 1, "explain needed %zu for %zu chars", need, strlen(buf));
    CHECK(count_selected_lines(buf) == 1, "explain must select exactly one backend:\n%s", buf);

    char small[12];
    memset(small, 'x', sizeof small);
    size_t need2 = 0;
    CHECK(w4a8moe_explain(&d, NULL, small, sizeof small, &need2) == W4A8MOE_STATUS_OK &&
              need2 == need && memchr(small, '\0', sizeof small) &&
              strncmp(small, buf, sizeof small - 1) == 0,
          "explain truncates to cap with a NUL and still reports the full length");
    CHECK(w4a8moe_explain(&d, NULL, NULL, 0, &need2) == W4A8MOE_STATUS_OK && need2 == need,
          "explain with no buffer reports the length");
    CHECK(w4a8moe_explain(&d, NULL, NULL, 10, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "explain with NULL buf and cap > 0 is invalid");

    w4a8moe_layer_options o = {0};
    o.backend = "no_such_backend";
    CHECK(w4a8moe_explain(&d, &o, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              count_selected_lines(buf) == 0 && has(buf, "the forced backend does not fit"),
          "explain with an unknown forced backend:\n%s", buf);

    d.ep_size = 2;
    CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              count_selected_lines(buf) == 0 && has(buf, "cpu_ref") && has(buf, "ep_size 2") &&
              has(buf, "no backend selected"),
          "explain with ep_size 2 on the CPU:\n%s", buf);
    d.ep_size = 1;

    /* the shared pipeline's lines: on the CPU `cpu` runs int4 and unquantised shared experts
     * (cpu_ref when forced); with ep_size 2 none runs */
    o.backend = NULL;
    CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK, "explain: %s",
          w4a8moe_last_error());
    const char *sh = strstr(buf, "\nshared expert, if the layer has one");
    CHECK(sh && has(sh, "  int4 x fp8 (I and g as the routed experts'): cpu (prepare/finalize: local)") &&
              has(sh, "  unquantised (bf16/f16/f32 weights, block-FP8 dequantised): cpu (prepare"),
          "explain names the shared pipeline's backends on the CPU:\n%s", buf);
    o.backend = "cpu_ref";
    CHECK(w4a8moe_explain(&d, &o, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              has(buf, "routed experts'): cpu_ref (") && has(buf, "dequantised): cpu_ref ("),
          "explain with cpu_ref forced: the shared pipeline on cpu_ref too:\n%s", buf);
    o.backend = NULL;
    d.ep_size = 2;
    CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              has(buf, "not run with ep_size 2"),
          "explain with ep_size 2: the shared expert line:\n%s", buf);
    d.ep_size = 1;

    if (!w4a8moe_registry_device(W4A8MOE_DEVICE_CUDA)) {
        o.backend = NULL;
        o.device_kind = W4A8MOE_DEVICE_CUDA;
        CHECK(w4a8moe_explain(&d, &o, buf, sizeof buf, NULL) == W4A8MOE_STATUS_UNSUPPORTED &&
                  has(w4a8moe_last_error(), "CUDA"),
              "explain for CUDA in a CPU-only build: '%s'", w4a8moe_last_error());
    }

}

/* Layers: the option and W4A8MOE_BACKEND force; the option wins over the environment. */
static void test_public_layers(test_rng *r)
{
    w4a8moe_layer_desc d;
    base_desc(&d, 256, 128, 8, 2, 64, 16);
    char buf[4096];
    w4a8moe_layer_options o = {0};
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 2, test_rng_next(r)) == 0,
          "synthetic weights");
    w4a8moe_layer *L = NULL;
    setenv("W4A8MOE_BACKEND", "cpu_ref", 1);
    CHECK(w4a8moe_layer_create(&d, &sw.weights, NULL, &L) == W4A8MOE_STATUS_OK && L &&
              strcmp(w4a8moe_layer_backend(L), "cpu_ref") == 0 &&
              strcmp(w4a8moe_layer_prepfin(L), "local") == 0,
          "W4A8MOE_BACKEND=cpu_ref: %s", w4a8moe_last_error());
    w4a8moe_layer_free(L);
    CHECK(w4a8moe_explain(&d, NULL, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              has(buf, "selected, forced"),
          "explain honours W4A8MOE_BACKEND:\n%s", buf);

    setenv("W4A8MOE_BACKEND", "no_such_backend", 1);
    L = (w4a8moe_layer *)&L;
    w4a8moe_status st = w4a8moe_layer_create(&d, &sw.weights, NULL, &L);
    CHECK(st == W4A8MOE_STATUS_NOT_FOUND && L == NULL && has(w4a8moe_last_error(), "no_such_backend") &&
              has(w4a8moe_last_error(), "cpu_ref"),
          "W4A8MOE_BACKEND=no_such_backend: status %d '%s'", (int)st, w4a8moe_last_error());
    o = (w4a8moe_layer_options){0};
    o.backend = "cpu_ref";
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_OK &&
              strcmp(w4a8moe_layer_backend(L), "cpu_ref") == 0,
          "the option must win over W4A8MOE_BACKEND: %s", w4a8moe_last_error());
    w4a8moe_layer_free(L);
    setenv("W4A8MOE_BACKEND", "", 1);
    CHECK(w4a8moe_layer_create(&d, &sw.weights, NULL, &L) == W4A8MOE_STATUS_OK,
          "an empty W4A8MOE_BACKEND means no forcing: %s", w4a8moe_last_error());
    w4a8moe_layer_free(L);
    unsetenv("W4A8MOE_BACKEND");
    w4a8moe_synth_weights_free(&sw);

    /* a forced backend that does not fit the layer, through the public API */
    d.ep_size = 2;
    d.ep_rank = 1;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_F32, 0, 2, test_rng_next(r)) == 0,
          "synthetic weights");
    o.backend = "cpu_ref";
    st = w4a8moe_layer_create(&d, &sw.weights, &o, &L);
    CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && has(w4a8moe_last_error(), "forced backend 'cpu_ref'") &&
              has(w4a8moe_last_error(), "ep_size"),
          "forced cpu_ref with ep_size 2: status %d '%s'", (int)st, w4a8moe_last_error());
    st = w4a8moe_layer_create(&d, &sw.weights, NULL, &L);
    CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && has(w4a8moe_last_error(), "no backend runs this layer"),
          "ep_size 2 on the CPU, nothing forced: status %d '%s'", (int)st, w4a8moe_last_error());
    w4a8moe_synth_weights_free(&sw);
}

int main(void)
{
    test_rng r = {test_seed()};
    test_table();
    test_axis_order();
    test_forced();
    test_public_explain();
    test_batch_ranges();
    test_sm90_paths();
    test_sm89_paths();
    test_public_layers(&r);
    TEST_MAIN_END();
}
