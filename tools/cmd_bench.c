/*
 * cmd_bench.c — `w4a8moe bench`: times whole layers (quantise + dispatch + both GEMMs +
 * activation + combine) on synthetic weights for each T, against the floor of docs/PERFORMANCE.md with
 * the memory bandwidth and FMA rate measured in the same run, and checks sampled tokens of
 * every T against cpu_ref.
 *
 * Cold cache: each timed forward uses the next of several copies of the layer (different
 * seeds), so that together they exceed 2 x the last-level cache, as a model streaming through
 * its layers does; a single copy when a layer alone exceeds 2 GB (larger than any cache).
 *
 * --checkpoint CKPT [--layer L]: the layers are the checkpoint's own (its MoE layers from L on,
 * wrapping around, as the rotation's copies; the shared expert included), checked against a
 * cpu_ref layer made from layer L; inputs and routing stay synthetic (uniform, given as ids).
 * --device (default auto) picks the host or tools/bench_gpu.c.
 */
#include "bench.h"
#include "bench_gpu.h"
#include "cli.h"

#include "../src/common/synth.h"
#include "../src/core/backend.h"
#include "../src/core/models.h"
#include "../src/loader/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_TIME_S 0.5          /* adaptive iterations: at least this long... */
#define MIN_ITERS 3             /* ...and this many, */
#define MAX_TIME_S 2.0          /* unless one iteration alone is this slow */
#define MAX_ITERS 100000
#define CHECK_TOKENS 4          /* tokens of each T compared with cpu_ref */
#define MAX_COPIES 64
#define BIG_LAYER ((size_t)2 << 30)
/* cpu_ref (plain scalar f64, ~2-4 ns per multiply-add on the 2-core CI machine) above this
 * many MACs per forward takes many seconds per iteration: skipped unless --allow-slow. */
#define REF_MAC_BUDGET 1.5e9

typedef struct bench_args {
    const w4a8moe_model *model;
    cli_int_list tokens;
    const char *backend;
    int64_t iters, warmup, threads, layers;
    uint64_t seed;
    int json, allow_slow;
    cli_device device;
    const char *ckpt_dir; /* --checkpoint */
    int64_t layer;        /* --layer, -1: the first MoE layer */
    bench_env_sets env;   /* --env-sets (n 0: none) */
} bench_args;

typedef struct bench_result {
    int64_t T;
    int skipped;
    char skip_why[200];
    int iters;
    double seconds; /* median per forward */
    bench_floor fl;
    bench_cmp cmp;
} bench_result;

typedef struct bench_ctx {
    bench_args a;
    w4a8moe_layer_desc d;
    bench_machine m;
    size_t layer_bytes;
    int ncopies;
    w4a8moe_synth_weights *sw;   /* [ncopies] */
    w4a8moe_layer **layers;      /* [ncopies] */
    w4a8moe_layer *ref;          /* cpu_ref on copy 0's weights, CHECK_TOKENS tokens */
    w4a8moe_checkpoint *ck;      /* --checkpoint: the layers come from here */
    char name[256];              /* the model's name, or "CKPT layer L" */
    void *x, *out, *xs, *outs, *refout;
    int32_t *ids, *ids_s;
    float *wts, *wts_s;
    const char *backend;
    int progress;                /* stderr is a terminal and the layers are big */
} bench_ctx;

static int parse_args(int argc, char **argv, bench_args *a)
{
    cli_opt opts[] = {
        CLI_CUSTOM("--model", "NAME", "built-in shape (default qwen3-30b-a3b; see 'w4a8moe models')",
                   &a->model, cli_parse_model),
        CLI_CUSTOM("--tokens", "LIST", "token counts T to time (default 1,16,128)", &a->tokens,
                   cli_parse_tokens),
        CLI_STR("--backend", "NAME", "force an experts backend (default: the oracle's choice)",
                &a->backend),
        CLI_INT("--iters", "N", "timed forwards per T (default: adaptive, >= 0.5 s, median)",
                &a->iters, 1, MAX_ITERS),
        CLI_INT("--warmup", "N", "untimed forwards per T first (default 1)", &a->warmup, 0, 1000),
        CLI_U64("--seed", "S", "seed of the synthetic weights, inputs and routing (default 1)",
                &a->seed),
        CLI_INT("--threads", "N", "CPU threads, also for the bandwidth test (default: all cores)",
                &a->threads, 1, 256),
        CLI_INT("--layers", "N", "layer copies rotated for a cold cache (default: auto)", &a->layers,
                1, MAX_COPIES),
        CLI_FLAG("--json", "one JSON object per T on stdout instead of the table", &a->json),
        CLI_FLAG("--allow-slow", "time cpu_ref even where one forward takes many seconds",
                 &a->allow_slow),
        CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &a->device, cli_parse_device),
        CLI_STR("--checkpoint", "CKPT", "time a checkpoint's MoE layer instead of --model",
                &a->ckpt_dir),
        CLI_INT("--layer", "L", "with --checkpoint: the MoE layer (default: the first)", &a->layer, 0,
                1 << 20),
        CLI_CUSTOM("--env-sets", "SETS", "with --device cuda: time each set of W4A8MOE_ switches in turn",
                   &a->env, bench_parse_env_sets),
    };
    static const cli_spec spec = {
        "bench", "[options] | --checkpoint CKPT [--layer L] [options]",
        "Time a whole MoE layer (synthetic int4 weights from a seed, or a checkpoint's) for each T.",
        "Per T: backend, microseconds per layer (median), tokens/s, GB/s and FLOP/s achieved,\n"
        "the floor max(bytes / copy bandwidth, flops / FMA rate) with both rates measured in\n"
        "this run (bytes = unique weight bytes of the experts hit + activations in and out;\n"
        "flops = 2 x routed pairs x 3 x H x I), time / floor, and the rel-L2 error of up to 4\n"
        "sampled tokens against cpu_ref. Forwards rotate over copies of the layer whose total\n"
        "exceeds 2 x the last-level cache (cold cache). Exit status 1 when the check fails.\n"
        "With --checkpoint the copies are the checkpoint's MoE layers from --layer on (shared\n"
        "expert included), the check runs cpu_ref on that layer; inputs and routing stay random.\n"
        "--device auto (the default) runs on cuda:0 when a CUDA device is visible, else on the\n"
        "host; the first line says which.\n"
        "--env-sets 'A=1 B=2;A=0;-' times the tokens once per set (';' between sets, ' ' between\n"
        "W4A8MOE_NAME=VALUE assignments, '-' none: the library's path switches, docs/cli.md), on\n"
        "layers made under that set, the weights, inputs and check made once; each set's rows\n"
        "follow a line '== MODEL SET'.\n",
        0};
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? -1 : CLI_EXIT_USAGE;
    return 0;
}

static int64_t max_tokens(const cli_int_list *l)
{
    int64_t m = 1;
    for (int i = 0; i < l->n; i++) m = l->v[i] > m ? l->v[i] : m;
    return m;
}

/* How many layer copies to rotate over: their total must exceed 2 x LLC, within memory. */
static int choose_copies(bench_ctx *c)
{
    size_t need = 2 * c->m.llc_bytes, avail = bench_mem_available();
    int n = (int)((need + c->layer_bytes - 1) / c->layer_bytes);
    if (n < 2) n = 2;
    if (n > MAX_COPIES) n = MAX_COPIES;
    if (c->layer_bytes > BIG_LAYER) n = 1;
    if (c->ck) { /* host layers of a checkpoint borrow its file mapping: copies would not be cold */
        w4a8moe_checkpoint_info info;
        w4a8moe_checkpoint_get_info(c->ck, &info);
        if (n > info.num_moe_layers) n = info.num_moe_layers;
    }
    if (c->a.layers) n = (int)c->a.layers;
    /* room for each copy twice (a backend that packs its own layout) in 60% of free memory */
    while (avail && n > 1 && (double)n * 2.0 * (double)c->layer_bytes > 0.6 * (double)avail) n--;
    if (avail && (double)c->layer_bytes > 0.9 * (double)avail)
        return cli_fail("bench", "one %s layer needs %.1f GB of weights, %.1f GB of memory is "
                                 "available; hint: choose a smaller --model",
                        c->a.model->name, (double)c->layer_bytes / 1e9, (double)avail / 1e9);
    c->ncopies = n;
    return 0;
}

static void progress(const bench_ctx *c, const char *what, int i, int n)
{
    if (!c->progress) return;
    if (i < n)
        fprintf(stderr, "\r%s %d/%d (%.0f MB)...", what, i + 1, n, (double)c->layer_bytes / 1e6);
    else
        fprintf(stderr, "\r%79s\r", "");
    fflush(stderr);
}

/* --checkpoint: the rotation's layers are the checkpoint's MoE layers from --layer on. */
static int make_ckpt_layers(bench_ctx *c, const w4a8moe_layer_options *lo)
{
    for (int i = 0; i < c->ncopies; i++) {
        progress(c, "loading checkpoint layer", i, c->ncopies);
        int32_t L = bench_ckpt_layer(c->ck, (int32_t)c->a.layer, i);
        w4a8moe_status st =
            w4a8moe_checkpoint_layer_create(c->ck, L, lo, NULL, 0, c->d.max_tokens, &c->layers[i]);
        if (st != W4A8MOE_STATUS_OK) {
            progress(c, "", 1, 1);
            return cli_fail("bench", "%s", w4a8moe_last_error());
        }
    }
    progress(c, "", 1, 1);
    c->backend = w4a8moe_layer_backend(c->layers[0]);
    w4a8moe_layer_options ro = {.backend = "cpu_ref", .num_threads = 1};
    if (w4a8moe_checkpoint_layer_create(c->ck, (int32_t)c->a.layer, &ro, NULL, 0, CHECK_TOKENS,
                                        &c->ref) != W4A8MOE_STATUS_OK)
        return cli_fail("bench", "cpu_ref check layer: %s", w4a8moe_last_error());
    return 0;
}

static int make_layers(bench_ctx *c)
{
    c->sw = calloc((size_t)c->ncopies, sizeof *c->sw);
    c->layers = calloc((size_t)c->ncopies, sizeof *c->layers);
    if (!c->sw || !c->layers) return cli_fail("bench", "out of memory");
    w4a8moe_layer_options lo = {0};
    lo.backend = c->a.backend;
    lo.num_threads = (int32_t)c->a.threads;
    lo.borrow_weights = 1; /* the synthetic weights live as long as the layers */
    cli_device_apply(&c->a.device, &lo);
    if (c->ck) return make_ckpt_layers(c, &lo);
    for (int i = 0; i < c->ncopies; i++) {
        progress(c, "generating synthetic weights for layer", i, c->ncopies);
        /* pool = E: every expert's bytes are distinct, as in a real checkpoint */
        if (w4a8moe_synth_weights_make(&c->sw[i], &c->d, W4A8MOE_DTYPE_BF16, 0, 0,
                                       c->a.seed * 1000003u + (uint64_t)i))
            return cli_fail("bench", "out of memory for synthetic weights (%.1f GB per layer); "
                                     "hint: --layers 1 or a smaller --model",
                            (double)c->layer_bytes / 1e9);
        progress(c, "creating layer", i, c->ncopies);
        w4a8moe_status st = w4a8moe_layer_create(&c->d, &c->sw[i].weights, &lo, &c->layers[i]);
        if (st != W4A8MOE_STATUS_OK) {
            progress(c, "", 1, 1);
            return st == W4A8MOE_STATUS_NOT_FOUND || st == W4A8MOE_STATUS_UNSUPPORTED
                       ? cli_usage_error("bench", "%s", w4a8moe_last_error())
                       : cli_fail("bench", "%s", w4a8moe_last_error());
        }
    }
    progress(c, "", 1, 1);
    c->backend = w4a8moe_layer_backend(c->layers[0]);
    w4a8moe_layer_desc rd = c->d;
    rd.max_tokens = CHECK_TOKENS;
    w4a8moe_layer_options ro = {.backend = "cpu_ref", .num_threads = 1, .borrow_weights = 1};
    if (w4a8moe_layer_create(&rd, &c->sw[0].weights, &ro, &c->ref) != W4A8MOE_STATUS_OK)
        return cli_fail("bench", "cpu_ref check layer: %s", w4a8moe_last_error());
    return 0;
}

static int make_inputs(bench_ctx *c)
{
    int64_t T = c->d.max_tokens, H = c->d.hidden, k = c->d.top_k;
    size_t io = w4a8moe_dtype_size(c->d.io_dtype);
    c->x = malloc((size_t)(T * H) * io);
    c->out = malloc((size_t)(T * H) * io);
    c->xs = malloc((size_t)(CHECK_TOKENS * H) * io);
    c->outs = malloc((size_t)(CHECK_TOKENS * H) * io);
    c->refout = malloc((size_t)(CHECK_TOKENS * H) * io);
    c->ids = malloc((size_t)(T * k) * 4);
    c->wts = malloc((size_t)(T * k) * 4);
    c->ids_s = malloc((size_t)(CHECK_TOKENS * k) * 4);
    c->wts_s = malloc((size_t)(CHECK_TOKENS * k) * 4);
    if (!c->x || !c->out || !c->xs || !c->outs || !c->refout || !c->ids || !c->wts || !c->ids_s ||
        !c->wts_s)
        return cli_fail("bench", "out of memory for inputs of %lld tokens", (long long)T);
    w4a8moe_synth_rng r = {c->a.seed ^ 0x5eed5eed5eedull};
    w4a8moe_synth_input(c->x, c->d.io_dtype, T, H, 1.0f, &r);
    /* uniform random routing: the decode case, where T*k draws hit up to min(E, T*k) experts */
    w4a8moe_synth_routing(c->ids, c->wts, T, c->d.num_experts, c->d.top_k, &r);
    return 0;
}

static int forward(w4a8moe_layer *L, int64_t T, const void *x, const int32_t *ids,
                   const float *wts, void *out)
{
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    if (w4a8moe_layer_forward(L, T, x, &ri, out, NULL) == W4A8MOE_STATUS_OK) return 0;
    return cli_fail("bench", "%s forward of %lld tokens: %s", w4a8moe_layer_backend(L), (long long)T,
                    w4a8moe_layer_error(L));
}

/* Median seconds per forward over rotating layer copies; adaptive unless --iters. */
static int time_forwards(bench_ctx *c, int64_t T, bench_result *res)
{
    int copy = 0;
    for (int64_t i = 0; i < c->a.warmup; i++, copy = (copy + 1) % c->ncopies)
        if (forward(c->layers[copy], T, c->x, c->ids, c->wts, c->out)) return -1;
    int cap = c->a.iters ? (int)c->a.iters : MAX_ITERS;
    double *times = malloc((size_t)cap * sizeof *times), total = 0.0;
    if (!times) return cli_fail("bench", "out of memory");
    int n = 0;
    while (n < cap) {
        double t0 = bench_now();
        if (forward(c->layers[copy], T, c->x, c->ids, c->wts, c->out)) {
            free(times);
            return -1;
        }
        times[n] = bench_now() - t0;
        total += times[n++];
        copy = (copy + 1) % c->ncopies;
        if (!c->a.iters && ((total >= MIN_TIME_S && n >= MIN_ITERS) || total >= MAX_TIME_S)) break;
    }
    res->iters = n;
    res->seconds = bench_median(times, n);
    free(times);
    return 0;
}

/* Up to CHECK_TOKENS tokens spread over T, through copy 0 and through cpu_ref. */
static int check_tokens(bench_ctx *c, int64_t T, bench_result *res)
{
    int64_t H = c->d.hidden, k = c->d.top_k;
    size_t io = w4a8moe_dtype_size(c->d.io_dtype), row = (size_t)H * io;
    memset(c->out, 0xff, (size_t)T * row); /* NaN in every I/O dtype: unwritten rows show */
    if (forward(c->layers[0], T, c->x, c->ids, c->wts, c->out)) return -1;
    int n = T < CHECK_TOKENS ? (int)T : CHECK_TOKENS;
    for (int i = 0; i < n; i++) {
        int64_t t = n > 1 ? i * (T - 1) / (n - 1) : 0;
        memcpy((char *)c->xs + (size_t)i * row, (char *)c->x + (size_t)t * row, row);
        memcpy((char *)c->outs + (size_t)i * row, (char *)c->out + (size_t)t * row, row);
        memcpy(c->ids_s + i * k, c->ids + t * k, (size_t)k * 4);
        memcpy(c->wts_s + i * k, c->wts + t * k, (size_t)k * 4);
    }
    memset(c->refout, 0xff, (size_t)n * row);
    if (forward(c->ref, n, c->xs, c->ids_s, c->wts_s, c->refout)) return -1;
    bench_compare_rows(c->outs, c->refout, c->d.io_dtype, n, H, &res->cmp);
    return 0;
}

static int check_ok(const bench_cmp *cmp)
{
    return bench_within_tolerance(cmp, 0, NULL, 0); /* the host's backends: the CPU bound */
}

/* One T: skip (cpu_ref too slow), or time, check and compute the floor. */
static int bench_one(bench_ctx *c, int64_t T, bench_result *res)
{
    memset(res, 0, sizeof *res);
    res->T = T;
    double macs = (double)T * c->d.top_k * 3.0 * (double)c->d.hidden * (double)c->d.inter;
    if (strcmp(c->backend, "cpu_ref") == 0 && macs > REF_MAC_BUDGET && !c->a.allow_slow) {
        res->skipped = 1;
        snprintf(res->skip_why, sizeof res->skip_why,
                 "cpu_ref is the scalar reference: %.1e multiply-adds per forward take many "
                 "seconds; --allow-slow times it anyway",
                 macs);
        return 0;
    }
    if (time_forwards(c, T, res) || check_tokens(c, T, res)) return -1;
    bench_floor_compute(&c->d, T, c->ids, 2, &c->m, &res->fl);
    return 0;
}

/* "48.3G" below a TFLOP/s, "1.32T" above */
static void flops_text(double per_s, char *buf, size_t cap)
{
    if (per_s >= 1e12) snprintf(buf, cap, "%.2fT", per_s / 1e12);
    else snprintf(buf, cap, "%.1fG", per_s / 1e9);
}

/* "408 KB", "311 MB", "5.81 GB" */
static void size_text(double bytes, char *buf, size_t cap)
{
    if (bytes >= 1e9) snprintf(buf, cap, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6) snprintf(buf, cap, "%.0f MB", bytes / 1e6);
    else snprintf(buf, cap, "%.0f KB", bytes / 1e3);
}

static void print_preamble(const bench_ctx *c)
{
    const w4a8moe_layer_desc *d = &c->d;
    const bench_machine *m = &c->m;
    char dev[128], label[W4A8MOE_ERR_CAP + 64];
    cli_device_describe(&c->a.device, dev, sizeof dev);
    cli_device_label(&c->a.device, label, sizeof label);
    printf("device: %s\n", label);
    printf("model: %s (H=%lld I=%lld E=%d k=%d g=%d), %s I/O, %s, seed %llu\n", c->name,
           (long long)d->hidden, (long long)d->inter, d->num_experts, d->top_k, d->group_size,
           cli_dtype_name(d->io_dtype), c->ck ? "the checkpoint's weights" : "bf16 group scales",
           (unsigned long long)c->a.seed);
    char buf[32];
    size_text((double)m->copy_bytes, buf, sizeof buf);
    printf("machine: %s, %d threads; copy %.1f GB/s (read+write, 2 x %s); ", dev, m->threads,
           m->copy_gbs, buf);
    if (m->fma_isa)
        printf("f32 FMA %.1f GFLOP/s (%s); ", m->fma_gflops, m->fma_isa);
    else
        printf("FMA rate not measured (no AVX2/FMA): the floor is the memory floor only; ");
    size_text((double)m->llc_bytes, buf, sizeof buf);
    printf("LLC %s%s\n", buf, m->llc_assumed ? " (assumed)" : "");
    double total = (double)c->ncopies * (double)c->layer_bytes;
    int cold = total >= 2.0 * (double)m->llc_bytes;
    char one[32], all[32];
    size_text((double)c->layer_bytes, one, sizeof one);
    size_text(total, all, sizeof all);
    printf("weights: %d %s x %s rotated (%s %s 2 x LLC: %s cache); uniform random routing\n",
           c->ncopies, c->ck ? (c->ncopies == 1 ? "checkpoint layer" : "checkpoint layers")
                             : (c->ncopies == 1 ? "layer copy" : "layer copies"),
           one, all, cold ? ">=" : "<", cold ? "cold" : "warm");
    printf("%7s  %-10s %10s %10s %8s %8s %10s %7s  %-5s %6s %8s\n", "T", "backend", "us/layer",
           "tokens/s", "GB/s", "FLOP/s", "floor us", "x floor", "bound", "iters", "rel-L2");
}

static void print_row(const bench_ctx *c, const bench_result *r)
{
    if (r->skipped) {
        printf("%7lld  %-10s skipped: %s\n", (long long)r->T, c->backend, r->skip_why);
        return;
    }
    char fl[32];
    flops_text(r->fl.flops / r->seconds, fl, sizeof fl);
    printf("%7lld  %-10s %10.1f %10.1f %8.2f %8s %10.1f %7.2f  %-5s %6d %8.1e%s\n", (long long)r->T,
           c->backend, r->seconds * 1e6, (double)r->T / r->seconds, r->fl.bytes / r->seconds / 1e9,
           fl, r->fl.floor_s * 1e6, r->seconds / r->fl.floor_s,
           r->fl.mem_s >= r->fl.fma_s ? "mem" : "fma", r->iters, r->cmp.max_rel_l2,
           check_ok(&r->cmp) ? "" : (r->cmp.nonfinite ? " NaN!" : " FAIL"));
}

static void print_json(const bench_ctx *c, const bench_result *r)
{
    const bench_machine *m = &c->m;
    printf("{\"model\": \"%s\", \"backend\": \"%s\", \"prepfin\": \"%s\", \"T\": %lld, "
           "\"hidden\": %lld, \"inter\": %lld, \"experts\": %d, \"top_k\": %d, \"group\": %d, "
           "\"threads\": %d, \"seed\": %llu, \"copy_gb_per_s\": %.3f, \"fma_gflop_per_s\": ",
           c->name, c->backend, w4a8moe_layer_prepfin(c->layers[0]), (long long)r->T,
           (long long)c->d.hidden, (long long)c->d.inter, c->d.num_experts, c->d.top_k,
           c->d.group_size, m->threads, (unsigned long long)c->a.seed, m->copy_gbs);
    if (m->fma_isa) printf("%.3f", m->fma_gflops);
    else printf("null");
    printf(", \"llc_bytes\": %zu, \"layer_copies\": %d, \"layer_bytes\": %zu, ", m->llc_bytes,
           c->ncopies, c->layer_bytes);
    if (r->skipped) {
        printf("\"skipped\": \"%s\"}\n", r->skip_why);
        return;
    }
    const bench_floor *f = &r->fl;
    printf("\"iters\": %d, \"us\": %.3f, \"tokens_per_s\": %.3f, \"gb_per_s\": %.4f, "
           "\"gflop_per_s\": %.4f, \"bytes\": %.0f, \"flops\": %.0f, \"experts_hit\": %d, "
           "\"floor_us\": %.3f, \"floor_bound\": \"%s\", \"time_over_floor\": %.4f, "
           "\"check_tokens\": %d, \"rel_l2_max\": %.3e, \"check_ok\": %s}\n",
           r->iters, r->seconds * 1e6, (double)r->T / r->seconds, f->bytes / r->seconds / 1e9,
           f->flops / r->seconds / 1e9, f->bytes, f->flops, f->experts_hit, f->floor_s * 1e6,
           f->mem_s >= f->fma_s ? "memory" : "compute", r->seconds / f->floor_s,
           r->T < CHECK_TOKENS ? (int)r->T : CHECK_TOKENS, r->cmp.max_rel_l2,
           check_ok(&r->cmp) ? "true" : "false");
}

static void bench_free(bench_ctx *c)
{
    for (int i = 0; c->layers && i < c->ncopies; i++) w4a8moe_layer_free(c->layers[i]);
    w4a8moe_layer_free(c->ref);
    for (int i = 0; c->sw && i < c->ncopies; i++) w4a8moe_synth_weights_free(&c->sw[i]);
    free(c->layers);
    free(c->sw);
    free(c->x), free(c->out), free(c->xs), free(c->outs), free(c->refout);
    free(c->ids), free(c->wts), free(c->ids_s), free(c->wts_s);
    w4a8moe_checkpoint_close(c->ck);
}

/* Runs every T; returns the exit code. */
static int bench_all(bench_ctx *c)
{
    double worst = 0.0;
    int failed = 0, checked = 0;
    if (!c->a.json) print_preamble(c);
    for (int i = 0; i < c->a.tokens.n; i++) {
        bench_result r;
        if (bench_one(c, c->a.tokens.v[i], &r)) return CLI_EXIT_FAIL;
        if (c->a.json) print_json(c, &r);
        else print_row(c, &r);
        fflush(stdout);
        if (r.skipped) continue;
        checked++;
        failed |= !check_ok(&r.cmp);
        if (!(r.cmp.max_rel_l2 <= worst)) worst = r.cmp.max_rel_l2;
    }
    FILE *f = c->a.json ? stderr : stdout;
    if (!checked) {
        fprintf(f, "check vs cpu_ref: nothing timed, nothing checked\n");
        return CLI_EXIT_OK;
    }
    fprintf(f, "check vs cpu_ref%s: max rel-L2 = %.1e (tolerance %.0e): %s\n",
            strcmp(c->backend, "cpu_ref") == 0 ? " (reference against itself)" : "", worst,
            BENCH_TOLERANCE, failed ? "FAIL" : "ok");
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* --checkpoint: opens it, settles --layer (default: the first MoE layer) and the description. */
static int open_checkpoint(bench_ctx *c)
{
    if (w4a8moe_checkpoint_open(c->a.ckpt_dir, &c->ck) != W4A8MOE_STATUS_OK)
        return cli_fail("bench", "%s", w4a8moe_last_error());
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(c->ck, &info);
    if (info.num_moe_layers <= 0) return cli_fail("bench", "%s has no MoE layer", c->a.ckpt_dir);
    if (c->a.layer < 0) c->a.layer = info.moe_layers[0];
    if (w4a8moe_checkpoint_layer_desc(c->ck, (int32_t)c->a.layer, max_tokens(&c->a.tokens), &c->d) !=
        W4A8MOE_STATUS_OK)
        return cli_usage_error("bench", "--layer %lld: %s", (long long)c->a.layer, w4a8moe_last_error());
    snprintf(c->name, sizeof c->name, "%s layer %lld", c->a.ckpt_dir, (long long)c->a.layer);
    return 0;
}

/* --device cuda (or auto on a machine with one): tools/bench_gpu.c. Returns the exit code, or
 * -2 when auto should fall back to the host (the layer is UNSUPPORTED on the device). */
static int bench_cuda(bench_ctx *c)
{
    char label[W4A8MOE_ERR_CAP + 64], why[W4A8MOE_ERR_CAP];
    cli_device_label(&c->a.device, label, sizeof label);
    w4a8moe_status create_st = W4A8MOE_STATUS_OK;
    bench_gpu_args g = {.model = c->a.model ? c->a.model : w4a8moe_model_find("qwen3-30b-a3b"),
                        .tokens = c->a.tokens.v, .ntokens = c->a.tokens.n, .backend = c->a.backend,
                        .iters = c->a.iters, .layers = c->a.layers, .seed = c->a.seed,
                        .json = c->a.json, .ordinal = c->a.device.ordinal};
    g.ckpt = c->ck;
    g.ckpt_layer = (int32_t)c->a.layer;
    g.name = c->ck ? c->name : NULL;
    g.device_label = label;
    g.create_status = c->a.device.is_auto ? &create_st : NULL;
    g.create_why = why;
    g.create_why_cap = sizeof why;
    g.env = c->a.env.n > 0 ? &c->a.env : NULL;
    int rc = bench_gpu_main(&g);
    if (rc && cli_device_fallback(&c->a.device, create_st, why)) return -2;
    return rc;
}

int cli_cmd_bench(int argc, char **argv)
{
    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.a.warmup = 1;
    c.a.seed = 1;
    c.a.tokens = (cli_int_list){{1, 16, 128}, 3};
    c.a.device = (cli_device)CLI_DEVICE_DEFAULT;
    c.a.layer = -1;
    int rc = parse_args(argc, argv, &c.a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    if (c.a.ckpt_dir && c.a.model)
        return cli_usage_error("bench", "--model and --checkpoint exclude each other");
    if (c.a.layer >= 0 && !c.a.ckpt_dir)
        return cli_usage_error("bench", "--layer needs --checkpoint");
    if (c.a.backend && !w4a8moe_registry_find_experts(c.a.backend))
        return cli_usage_error("bench", "--backend '%s': no experts backend of that name in this "
                                        "build; hint: 'w4a8moe --version' lists them", c.a.backend);
    cli_device_resolve(&c.a.device);
    if (!c.a.model && !c.a.ckpt_dir) c.a.model = w4a8moe_model_find("qwen3-30b-a3b");
    if (c.a.model) snprintf(c.name, sizeof c.name, "%s", c.a.model->name);
    else if ((rc = open_checkpoint(&c))) {
        bench_free(&c);
        return rc;
    }
    if (c.a.device.kind == W4A8MOE_DEVICE_CUDA && (rc = bench_cuda(&c)) != -2) {
        bench_free(&c);
        return rc;
    }
    if (c.a.env.n > 0) {
        bench_free(&c);
        return cli_usage_error("bench", "--env-sets: only with a CUDA device (--device cuda); this run is on the "
                                        "host");
    }
    if (!c.a.threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.a.threads = n < 1 ? 1 : (n > 256 ? 256 : n);
    }
    if (c.a.model) w4a8moe_model_desc(c.a.model, max_tokens(&c.a.tokens), &c.d);
    const w4a8moe_layer_desc *d = &c.d;
    c.layer_bytes = (size_t)((double)d->num_experts * 3.0 * (double)d->hidden * (double)d->inter *
                             (0.5 + 2.0 / d->group_size));
    c.progress = isatty(2) && c.layer_bytes >= ((size_t)256 << 20);
    if (c.progress) fprintf(stderr, "measuring memory bandwidth and FMA rate...");
    if (bench_machine_measure(&c.m, (int)c.a.threads))
        return cli_fail("bench", "could not allocate the bandwidth test's buffers");
    if (c.progress) fprintf(stderr, "\r%79s\r", "");
    rc = choose_copies(&c);
    if (!rc) rc = make_layers(&c);
    if (!rc) rc = make_inputs(&c);
    if (!rc) rc = bench_all(&c);
    bench_free(&c);
    return rc;
}
