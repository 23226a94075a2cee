/*
 * cmd_verify.c — `w4a8moe verify`: every experts backend of the registry that the oracle
 * accepts for a case, forced in turn, against cpu_ref on fresh random inputs (seed printed,
 * --seed replays), over the built-in shapes at small T and a list of edge cases. Each backend
 * runs each case twice and must give bit-identical outputs and meet the contract's tolerance
 * (bench.h: every row within rel-L2 2e-3 on the host; on a CUDA device every row within 1e-2
 * and, from 64 rows, their mean within 1e-3) with no NaN/Inf where cpu_ref has none. cpu_ref's
 * own line ("reference") checks that a second cpu_ref layer (copying the weights instead of
 * borrowing them, when they are small) reproduces the reference bit for bit; big shapes at
 * T=5 are not rerun (seconds of scalar code for a check T=1 already makes).
 *
 * Big built-in shapes keep their full E but draw expert weights from a pool of 8 distinct sets
 * (expert e uses set e % 8), so deepseek-v3 fits in memory and generates in a blink.
 */
#include "bench.h"
#include "bench_gpu.h"
#include "cli.h"

#include "../src/common/synth.h"
#include "../src/core/models.h"
#include "../src/core/oracle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL 8

typedef enum route_kind {
    ROUTE_RANDOM,     /* k distinct random experts per token */
    ROUTE_LOGITS,     /* random router logits through the model's router */
    ROUTE_ONE_EXPERT, /* every token to expert E/2 (k = 1 shapes) */
    ROUTE_FEW,        /* experts drawn from [E/4, E/2) only: the others get zero tokens */
    ROUTE_HOLES,      /* about 40% of the slots -1, and token 1 has no expert at all */
} route_kind;

/* One forward through a case's layer: T tokens routed one way. */
typedef struct verify_run {
    int64_t T;
    route_kind route;
    char label[64]; /* "qwen3-30b-a3b T=5 logits", "edge: g=32": what --case matches */
} verify_run;

/* One layer description and one weight set. Each backend's layer is created once per case and
 * serves all its runs: packing a pooled deepseek-v3 or llama4-maverick out to full E takes a
 * fast backend seconds. */
typedef struct verify_case {
    char name[48];
    w4a8moe_layer_desc d; /* max_tokens = the largest T of the runs */
    w4a8moe_dtype scale_dtype;
    int channel;
    int32_t pool;
    int nruns;
    verify_run runs[2];
} verify_case;

typedef struct edge_spec {
    const char *name;
    int64_t H, I;
    int32_t E, k, g;
    int64_t T;
    route_kind route;
    w4a8moe_dtype io, scale;
    w4a8moe_activation act;
    int static_act, channel;
} edge_spec;

#define BF W4A8MOE_DTYPE_BF16
#define SILU W4A8MOE_ACTIVATION_SILU
static const edge_spec edges[] = {
    {"T=1", 256, 128, 8, 2, 64, 1, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
    {"every token to one expert", 256, 128, 8, 1, 64, 9, ROUTE_ONE_EXPERT, BF, BF, SILU, 0, 0},
    {"experts with zero tokens", 256, 128, 32, 2, 64, 6, ROUTE_FEW, BF, BF, SILU, 0, 0},
    {"-1 slots", 256, 128, 16, 4, 64, 7, ROUTE_HOLES, BF, BF, SILU, 0, 0},
    {"H, I not multiples of 256", 320, 160, 8, 2, 32, 5, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
    {"g=32", 384, 256, 8, 2, 32, 3, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
    {"g=64", 384, 256, 8, 2, 64, 3, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
    {"g=128", 384, 256, 8, 2, 128, 3, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
    {"f16 I/O, f16 scales", 256, 128, 8, 2, 64, 5, ROUTE_RANDOM, W4A8MOE_DTYPE_F16,
     W4A8MOE_DTYPE_F16, SILU, 0, 0},
    {"f32 I/O, f32 scales", 256, 128, 8, 2, 64, 5, ROUTE_RANDOM, W4A8MOE_DTYPE_F32,
     W4A8MOE_DTYPE_F32, SILU, 0, 0},
    {"static activation scales", 256, 128, 8, 2, 64, 5, ROUTE_RANDOM, BF, BF, SILU, 1, 0},
    {"gelu_tanh", 256, 128, 8, 2, 64, 5, ROUTE_RANDOM, BF, BF, W4A8MOE_ACTIVATION_GELU_TANH, 0, 0},
    {"channel scales", 256, 128, 8, 2, 64, 5, ROUTE_RANDOM, BF, BF, SILU, 0, 1},
    {"T=64, 16 experts", 512, 256, 16, 4, 128, 64, ROUTE_RANDOM, BF, BF, SILU, 0, 0},
};
#define NUM_EDGES (sizeof edges / sizeof edges[0])

typedef struct verify_args {
    const w4a8moe_model *model;
    const char *backend;
    const char *only_case;
    uint64_t seed;
    int64_t threads;
    int quick;
    cli_device device;
} verify_args;

typedef struct verify_tally {
    int ok, failed, skipped;
} verify_tally;

/* The built-in shapes (T=1 with random ids; T=5 through the model's router unless quick),
 * then the edge cases. Returns the count written to out (cap >= models + edges). */
static int build_cases(const verify_args *a, verify_case *out)
{
    int n = 0;
    for (const w4a8moe_model *m = w4a8moe_models(); m->name; m++) {
        if (a->model && a->model != m) continue;
        verify_case *c = &out[n++];
        memset(c, 0, sizeof *c);
        c->nruns = a->quick ? 1 : 2;
        w4a8moe_model_desc(m, a->quick ? 1 : 5, &c->d);
        snprintf(c->name, sizeof c->name, "%s", m->name);
        c->runs[0] = (verify_run){1, ROUTE_RANDOM, ""};
        c->runs[1] = (verify_run){5, ROUTE_LOGITS, ""};
        snprintf(c->runs[0].label, sizeof c->runs[0].label, "%s T=1", m->name);
        snprintf(c->runs[1].label, sizeof c->runs[1].label, "%s T=5 logits", m->name);
        c->scale_dtype = W4A8MOE_DTYPE_BF16;
        c->pool = POOL;
    }
    for (size_t i = 0; i < NUM_EDGES; i++) {
        const edge_spec *e = &edges[i];
        verify_case *c = &out[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "edge: %s", e->name);
        c->nruns = 1;
        c->runs[0] = (verify_run){e->T, e->route, ""};
        snprintf(c->runs[0].label, sizeof c->runs[0].label, "edge: %s", e->name);
        w4a8moe_layer_desc_init(&c->d);
        c->d.max_tokens = e->T;
        c->d.hidden = e->H;
        c->d.inter = e->I;
        c->d.num_experts = e->E;
        c->d.top_k = e->k;
        c->d.group_size = e->g;
        c->d.io_dtype = e->io;
        c->d.activation = e->act;
        if (e->static_act) {
            /* inputs are in [-1, 1): 1/448 maps them onto e4m3's range; the intermediate
             * (|y| mostly < 2 for these weights) gets 2/448, some values saturating */
            c->d.act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
            c->d.act_scale_in = 1.0f / 448.0f;
            c->d.act_scale_mid = 2.0f / 448.0f;
        }
        c->scale_dtype = e->scale;
        c->channel = e->channel;
        c->pool = 0;
    }
    return n;
}

/* Fills ids/weights [T, k] (or logits [T, E]) for the run's routing pattern. */
static void make_routing(const verify_case *c, const verify_run *run, int32_t *ids, float *wts,
                         float *logits, w4a8moe_synth_rng *r)
{
    int64_t T = run->T;
    int32_t E = c->d.num_experts, k = c->d.top_k;
    switch (run->route) {
    case ROUTE_LOGITS:
        for (int64_t i = 0; i < T * E; i++) logits[i] = w4a8moe_synth_uniform(r, -3.0f, 3.0f);
        return;
    case ROUTE_FEW: /* experts E/4 .. E/2-1 only (k <= E/4 for this case) */
        w4a8moe_synth_routing(ids, wts, T, E / 4, k, r);
        for (int64_t i = 0; i < T * k; i++) ids[i] += E / 4;
        return;
    case ROUTE_ONE_EXPERT:
        w4a8moe_synth_routing(ids, wts, T, E, k, r);
        for (int64_t i = 0; i < T * k; i++) ids[i] = i % k == 0 ? E / 2 : -1;
        return;
    case ROUTE_HOLES:
        w4a8moe_synth_routing(ids, wts, T, E, k, r);
        for (int64_t i = 0; i < T * k; i++)
            if (w4a8moe_synth_uniform(r, 0.0f, 1.0f) < 0.4f || i / k == 1) ids[i] = -1;
        return;
    case ROUTE_RANDOM:
        w4a8moe_synth_routing(ids, wts, T, E, k, r);
        return;
    }
}

static void print_line(const char *backend, const verify_case *c, const verify_run *run,
                       const char *rel, const char *result)
{
    char shape[96];
    const w4a8moe_layer_desc *d = &c->d;
    snprintf(shape, sizeof shape, "H=%lld I=%lld E=%d k=%d g=%d %s", (long long)d->hidden,
             (long long)d->inter, d->num_experts, d->top_k, d->group_size,
             cli_dtype_name(d->io_dtype));
    printf("%-10s %-34s %-36s %8s  %s\n", backend, run->label, shape, rel, result);
    fflush(stdout);
}

/* The case's own seeds depend on names, not positions, so --model, --quick and --case replay
 * exactly the data of the full run with the same --seed. */
static uint64_t case_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return seed ^ h;
}

/* One run's inputs and the reference's output. */
typedef struct run_data {
    int active;   /* selected by --case */
    int ref_ok;   /* cpu_ref produced ref */
    void *x, *ref;
    int32_t *ids;
    float *wts, *logits;
    w4a8moe_routing_input ri;
} run_data;

/* Everything one case allocates. */
typedef struct case_data {
    w4a8moe_synth_weights sw;
    run_data runs[2];
    void *out1, *out2; /* [max_tokens, H] */
    size_t row_bytes;
} case_data;

static void case_free(case_data *cd)
{
    w4a8moe_synth_weights_free(&cd->sw);
    for (int i = 0; i < 2; i++) {
        run_data *r = &cd->runs[i];
        free(r->x), free(r->ref), free(r->ids), free(r->wts), free(r->logits);
    }
    free(cd->out1), free(cd->out2);
}

static int case_make(const verify_args *a, const verify_case *c, case_data *cd)
{
    memset(cd, 0, sizeof *cd);
    const w4a8moe_layer_desc *d = &c->d;
    int64_t T = d->max_tokens, k = d->top_k, E = d->num_experts;
    cd->row_bytes = (size_t)d->hidden * w4a8moe_dtype_size(d->io_dtype);
    if (w4a8moe_synth_weights_make(&cd->sw, d, c->scale_dtype, c->channel, c->pool,
                                   case_seed(a->seed, c->name)))
        return -1;
    cd->out1 = malloc((size_t)T * cd->row_bytes);
    cd->out2 = malloc((size_t)T * cd->row_bytes);
    if (!cd->out1 || !cd->out2) return -1;
    for (int i = 0; i < c->nruns; i++) {
        const verify_run *run = &c->runs[i];
        run_data *r = &cd->runs[i];
        r->active = !a->only_case || strstr(run->label, a->only_case);
        if (!r->active) continue;
        r->x = malloc((size_t)run->T * cd->row_bytes);
        r->ref = malloc((size_t)run->T * cd->row_bytes);
        r->ids = malloc((size_t)(run->T * k) * 4);
        r->wts = malloc((size_t)(run->T * k) * 4);
        r->logits = malloc((size_t)(run->T * E) * 4);
        if (!r->x || !r->ref || !r->ids || !r->wts || !r->logits) return -1;
        w4a8moe_synth_rng rng = {case_seed(a->seed, run->label) ^ 0xa5a5a5a5a5a5a5a5ull};
        w4a8moe_synth_input(r->x, d->io_dtype, run->T, d->hidden, 1.0f, &rng);
        make_routing(c, run, r->ids, r->wts, r->logits, &rng);
        if (run->route == ROUTE_LOGITS) r->ri.router_logits = r->logits;
        else r->ri = (w4a8moe_routing_input){.topk_ids = r->ids, .topk_weights = r->wts};
    }
    return 0;
}

/* Creates a layer with that backend forced (cpu_ref always on the host). Returns 0, or -1 with
 * the library's message in why. */
static int make_layer(const verify_args *a, const verify_case *c, case_data *cd, const char *name,
                      int borrow, w4a8moe_layer **L, char *why, size_t cap)
{
    w4a8moe_layer_options lo = {.backend = name, .num_threads = (int32_t)a->threads,
                                .borrow_weights = borrow};
    cli_device_apply(&a->device, &lo);
    if (strcmp(name, "cpu_ref") == 0) lo.device_kind = W4A8MOE_DEVICE_CPU; /* the reference: host */
    if (w4a8moe_layer_create(&c->d, &cd->sw.weights, &lo, L) == W4A8MOE_STATUS_OK) return 0;
    snprintf(why, cap, "create: %s", w4a8moe_last_error());
    return -1;
}

/* One forward of a run into out (poisoned first; staged through the device when the layer
 * lives there). Returns 0, or -1 with the layer's message in why. */
static int run_forward(const verify_args *a, const verify_case *c, const verify_run *run,
                       const run_data *r, w4a8moe_layer *L, void *out, char *why, size_t cap)
{
    w4a8moe_device_kind kind =
        strcmp(w4a8moe_layer_backend(L), "cpu_ref") == 0 ? W4A8MOE_DEVICE_CPU : a->device.kind;
    memset(out, 0xff, (size_t)run->T * c->d.hidden * w4a8moe_dtype_size(c->d.io_dtype));
    /* 0xff bytes are NaN in every I/O dtype: rows a backend leaves unwritten show */
    if (bench_gpu_forward_staged(L, kind, &c->d, run->T, r->x, &r->ri, out) == W4A8MOE_STATUS_OK)
        return 0;
    snprintf(why, cap, "forward: %s", w4a8moe_layer_error(L));
    return -1;
}

static int all_finite(const void *out, const w4a8moe_layer_desc *d, int64_t T)
{
    for (int64_t i = 0; i < T * d->hidden; i++) {
        float v = w4a8moe_io_get(out, d->io_dtype, i);
        if (v - v != 0.0f) return 0;
    }
    return 1;
}

/* Above this, the reference rerun borrows the weights too: a copy would expand a pooled
 * deepseek-v3 (E = 256, 5.8 GB) to full size for nothing. */
#define COPY_RERUN_MAX ((size_t)256 << 20)
/* cpu_ref reruns (its determinism check) only where they cost little: every T=1 built-in and
 * edge case; ~1 s at 2-4 ns per scalar multiply-add. */
#define RERUN_MAX_MACS 4e8

/* cpu_ref's own lines: a second cpu_ref layer (copying the weights when they are small) must
 * reproduce the reference bit for bit. */
static void check_reference(const verify_args *a, const verify_case *c, case_data *cd,
                            w4a8moe_layer *ref, verify_tally *tally)
{
    char why[W4A8MOE_ERR_CAP + 16], result[W4A8MOE_ERR_CAP + 64];
    int pool = c->pool > 0 && c->pool < c->d.num_experts ? c->pool : c->d.num_experts;
    int copy = cd->sw.pool_bytes / (size_t)pool * (size_t)c->d.num_experts <= COPY_RERUN_MAX;
    w4a8moe_layer *L = NULL;
    int made = copy ? !make_layer(a, c, cd, "cpu_ref", 0, &L, why, sizeof why) : 1;
    for (int i = 0; i < c->nruns; i++) {
        const verify_run *run = &c->runs[i];
        run_data *r = &cd->runs[i];
        if (!r->active || !r->ref_ok) continue;
        double macs = (double)run->T * c->d.top_k * 3.0 * (double)c->d.hidden * (double)c->d.inter;
        int ok = 0;
        if (!made)
            snprintf(result, sizeof result, "FAIL (%s)", why);
        else if (!all_finite(r->ref, &c->d, run->T))
            snprintf(result, sizeof result, "FAIL (the reference output has NaN/Inf)");
        else if (!copy && macs > RERUN_MAX_MACS)
            ok = snprintf(result, sizeof result, "ok (reference; not rerun: %.1e multiply-adds)", macs);
        else if (run_forward(a, c, run, r, copy ? L : ref, cd->out1, why, sizeof why))
            snprintf(result, sizeof result, "FAIL (%s)", why);
        else if (memcmp(cd->out1, r->ref, (size_t)run->T * cd->row_bytes))
            snprintf(result, sizeof result, "FAIL (a cpu_ref rerun%s differs)", copy ? " (copied weights)" : "");
        else
            ok = snprintf(result, sizeof result, "ok (reference; %srerun bit-identical)",
                          copy ? "copied-weights " : "");
        print_line("cpu_ref", c, run, ok && (copy || macs <= RERUN_MAX_MACS) ? "0" : "-", result);
        if (ok) tally->ok++;
        else tally->failed++;
    }
    w4a8moe_layer_free(L);
}

/* One run of any other backend: twice, bit-identical, each row within tolerance of cpu_ref. */
static int check_run(const verify_args *a, const verify_case *c, case_data *cd, int i,
                     w4a8moe_layer *L, char *rel, char *result, size_t cap)
{
    const verify_run *run = &c->runs[i];
    const run_data *r = &cd->runs[i];
    char why[W4A8MOE_ERR_CAP + 16];
    if (run_forward(a, c, run, r, L, cd->out1, why, sizeof why) ||
        run_forward(a, c, run, r, L, cd->out2, why, sizeof why)) {
        snprintf(result, cap, "FAIL (%s)", why);
        return 0;
    }
    bench_cmp cmp;
    bench_compare_rows(cd->out1, r->ref, c->d.io_dtype, run->T, c->d.hidden, &cmp);
    snprintf(rel, 32, "%.1e", cmp.max_rel_l2);
    /* a layer on a CUDA device is held to the contract's GPU tolerance (bench.h) */
    if (!bench_within_tolerance(&cmp, a->device.kind != W4A8MOE_DEVICE_CPU, why, sizeof why))
        snprintf(result, cap, "FAIL (%s)", why);
    else if (memcmp(cd->out1, cd->out2, (size_t)run->T * cd->row_bytes))
        snprintf(result, cap, "FAIL (the second forward differs from the first)");
    else
        return snprintf(result, cap, "ok") > 0;
    return 0;
}

static void check_backend(const verify_args *a, const verify_case *c, case_data *cd,
                          const char *name, verify_tally *tally)
{
    char why[W4A8MOE_ERR_CAP + 16], result[W4A8MOE_ERR_CAP + 64];
    w4a8moe_layer *L = NULL;
    int made = !make_layer(a, c, cd, name, 1, &L, why, sizeof why);
    for (int i = 0; i < c->nruns; i++) {
        if (!cd->runs[i].active || !cd->runs[i].ref_ok) continue;
        char rel[32] = "-";
        int ok = 0;
        if (made) ok = check_run(a, c, cd, i, L, rel, result, sizeof result);
        else snprintf(result, sizeof result, "FAIL (%s)", why);
        print_line(name, c, &c->runs[i], rel, result);
        if (ok) tally->ok++;
        else tally->failed++;
    }
    w4a8moe_layer_free(L);
}

/* The reference output of every active run; a failure there is one FAIL line per run. */
static void reference_runs(const verify_args *a, const verify_case *c, case_data *cd,
                           w4a8moe_layer **ref, verify_tally *tally)
{
    char why[W4A8MOE_ERR_CAP + 16], result[W4A8MOE_ERR_CAP + 64];
    int made = !make_layer(a, c, cd, "cpu_ref", 1, ref, why, sizeof why);
    for (int i = 0; i < c->nruns; i++) {
        run_data *r = &cd->runs[i];
        if (!r->active) continue;
        r->ref_ok = made && !run_forward(a, c, &c->runs[i], r, *ref, r->ref, why, sizeof why);
        if (r->ref_ok) continue;
        snprintf(result, sizeof result, "FAIL (reference %s)", why);
        print_line("cpu_ref", c, &c->runs[i], "-", result);
        tally->failed++;
    }
}

static void run_case(const verify_args *a, const verify_case *c, const w4a8moe_device_info *dev,
                     verify_tally *tally)
{
    case_data cd;
    char result[W4A8MOE_ERR_CAP + 64];
    w4a8moe_layer *ref = NULL;
    int active = 0;
    for (int i = 0; i < c->nruns; i++)
        active |= !a->only_case || strstr(c->runs[i].label, a->only_case) != NULL;
    if (!active) return;
    if (case_make(a, c, &cd)) {
        print_line("-", c, &c->runs[0], "-", "FAIL (out of memory for the case's weights and inputs)");
        tally->failed++;
        case_free(&cd);
        return;
    }
    reference_runs(a, c, &cd, &ref, tally);
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t b = 0; b < n; b++) {
        if (a->backend && strcmp(a->backend, ex[b]->name) != 0) continue;
        w4a8moe_verdict v;
        w4a8moe_oracle_judge(ex[b], dev, &c->d, &v);
        if (strcmp(ex[b]->name, "cpu_ref") == 0 && v.ok) {
            check_reference(a, c, &cd, ref, tally);
        } else if (v.ok) {
            check_backend(a, c, &cd, ex[b]->name, tally);
        } else {
            snprintf(result, sizeof result, "SKIP (%s: %s)", w4a8moe_axis_name(v.axis), v.why);
            for (int i = 0; i < c->nruns; i++) {
                if (!cd.runs[i].active) continue;
                print_line(ex[b]->name, c, &c->runs[i], "-", result);
                tally->skipped++;
            }
        }
    }
    w4a8moe_layer_free(ref);
    case_free(&cd);
}

int cli_cmd_verify(int argc, char **argv)
{
    verify_args a = {.device = CLI_DEVICE_DEFAULT};
    a.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    cli_opt opts[] = {
        CLI_CUSTOM("--model", "NAME", "only this built-in shape (the edge cases always run)",
                   &a.model, cli_parse_model),
        CLI_FLAG("--quick", "built-in shapes at T=1 only (no T=5 through the router)", &a.quick),
        CLI_STR("--backend", "NAME", "only this experts backend (default: every one)", &a.backend),
        CLI_STR("--case", "TEXT", "only the cases whose name contains TEXT", &a.only_case),
        CLI_U64("--seed", "S", "replay a run (default: fresh, printed)", &a.seed),
        CLI_INT("--threads", "N", "CPU threads per layer (default: all cores)", &a.threads, 1, 256),
        CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &a.device, cli_parse_device),
    };
    static const cli_spec spec = {
        "verify", "[options]",
        "Check every backend the oracle accepts against cpu_ref on fresh random inputs.",
        "Cases: each built-in shape at T=1 (random expert ids) and T=5 (random router logits\n"
        "through the model's router), then edge cases: T=1, every token to one expert, experts\n"
        "with zero tokens, -1 slots, H and I not multiples of 256, g = 32/64/128, f16 and f32\n"
        "I/O, static activation scales, gelu_tanh, channel scales, T=64. Every backend runs each\n"
        "case twice (outputs must be bit-identical) and each output row must be within rel-L2\n"
        "2e-3 of cpu_ref (on a CUDA device 1e-2, and from 64 rows their mean within 1e-3)\n"
        "with no NaN/Inf where cpu_ref has none. A backend the oracle rejects for a case is a\n"
        "SKIP with its reason. Exit status 1 when any case fails.\n"
        "With --checkpoint CKPT [--layer L] it checks a checkpoint's layer instead\n"
        "('w4a8moe verify --checkpoint CKPT --help').\n",
        0};
    for (int i = 1; i < argc; i++) /* a checkpoint's layer instead: tools/cmd_verify_ckpt.c */
        if (strncmp(argv[i], "--checkpoint", 12) == 0 && (argv[i][12] == '\0' || argv[i][12] == '='))
            return cli_verify_checkpoint(argc, argv);
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (a.backend && !w4a8moe_registry_find_experts(a.backend))
        return cli_usage_error("verify", "--backend '%s': no experts backend of that name in this "
                                         "build; hint: 'w4a8moe --version' lists them", a.backend);
    cli_device_resolve(&a.device);
    w4a8moe_device_info dev;
    char why[W4A8MOE_ERR_CAP];
    if (cli_device_query(&a.device, &dev, why, sizeof why)) return cli_fail("verify", "%s", why);
    char label[W4A8MOE_ERR_CAP + 64];
    cli_device_label(&a.device, label, sizeof label);

    verify_case *cases = malloc((16 + NUM_EDGES) * sizeof *cases);
    if (!cases) return cli_fail("verify", "out of memory");
    int n = build_cases(&a, cases);
    printf("verify: every backend against cpu_ref, seed %llu (replay: --seed %llu)\ndevice: %s\n",
           (unsigned long long)a.seed, (unsigned long long)a.seed, label);
    printf("%-10s %-34s %-36s %8s  %s\n", "backend", "case", "shape", "rel-L2", "result");
    verify_tally tally = {0, 0, 0};
    for (int i = 0; i < n; i++) run_case(&a, &cases[i], &dev, &tally);
    free(cases);
    printf("verify: %d ok, %d failed, %d skipped (seed %llu)\n", tally.ok, tally.failed,
           tally.skipped, (unsigned long long)a.seed);
    return tally.failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
