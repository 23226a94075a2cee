/*
 * cmd_quantize.c — `w4a8moe quantize SRC DST`: a bf16/f16/f32 Hugging Face MoE checkpoint →
 * a compressed-tensors W4AFP8 checkpoint (src/loader/quantizer.h does the work; docs/quantize.md
 * is the user's page). Draws a progress bar on stderr when stderr is a terminal.
 */
#include "cli.h"

#include "../src/loader/quantizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LAYERS_CAP 4096

typedef struct layer_list {
    int32_t v[LAYERS_CAP];
    int32_t n;
} layer_list;

/* "3", "1,3,5", "1-4,7" → layer numbers. */
static int parse_layers(const char *value, void *dst, char *why, size_t cap)
{
    layer_list *l = dst;
    l->n = 0;
    const char *p = value;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p || a < 0 || a > 1000000) break;
        b = a;
        if (*end == '-') {
            p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p || b < a || b > 1000000) break;
        }
        for (long x = a; x <= b; x++) {
            if (l->n == LAYERS_CAP) {
                snprintf(why, cap, "lists more than %d layers", LAYERS_CAP);
                return -1;
            }
            l->v[l->n++] = (int32_t)x;
        }
        if (*end == '\0') return 0;
        if (*end != ',') break;
        p = end + 1;
    }
    snprintf(why, cap, "must be layer numbers and ranges, e.g. 1,3,5-7");
    return -1;
}

static int parse_act(const char *value, void *dst, char *why, size_t cap)
{
    w4a8moe_act_scheme *a = dst;
    if (strcmp(value, "dynamic") == 0) *a = W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
    else if (strcmp(value, "static") == 0) *a = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    else return snprintf(why, cap, "must be dynamic or static"), -1;
    return 0;
}

static int parse_format(const char *value, void *dst, char *why, size_t cap)
{
    w4a8moe_ckpt_format *f = dst;
    if (strcmp(value, "pack-quantized") == 0) *f = W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
    else if (strcmp(value, "int-quantized") == 0) *f = W4A8MOE_CKPT_FORMAT_INT_QUANTIZED;
    else return snprintf(why, cap, "must be pack-quantized or int-quantized"), -1;
    return 0;
}

/* "5GB", "500MB", "123456" (bytes; decimal units as Hugging Face uses them). */
static int parse_size(const char *value, void *dst, char *why, size_t cap)
{
    char *end;
    double v = strtod(value, &end);
    double mul = 1;
    if (strcasecmp(end, "kb") == 0 || strcasecmp(end, "k") == 0) mul = 1e3;
    else if (strcasecmp(end, "mb") == 0 || strcasecmp(end, "m") == 0) mul = 1e6;
    else if (strcasecmp(end, "gb") == 0 || strcasecmp(end, "g") == 0) mul = 1e9;
    else if (*end) mul = -1;
    if (end == value || mul < 0 || !(v * mul >= 1) || v * mul > 1e15)
        return snprintf(why, cap, "must be a size such as 5GB, 500MB or a byte count"), -1;
    *(uint64_t *)dst = (uint64_t)llround(v * mul);
    return 0;
}

typedef struct bar_state {
    double last;
    int drawn;
} bar_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "[#########...........]  45%  1.23/2.70 GB  model.layers.3.mlp.experts.5.down_proj" */
static void draw_bar(void *ctx, uint64_t done, uint64_t total, const char *what)
{
    bar_state *b = ctx;
    double t = now_s();
    if (done < total && t - b->last < 0.1) return; /* at most 10 redraws a second */
    b->last = t;
    b->drawn = 1;
    int width = 30, fill = total ? (int)((double)width * (double)done / (double)total) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r\033[K[%s] %3d%%  %.2f/%.2f GB  %.60s", bar,
            total ? (int)(100.0 * (double)done / (double)total) : 100, (double)done / 1e9,
            (double)total / 1e9, what);
    fflush(stderr);
}

/* "2.434 GB", "54.4 kB" (decimal units, as file sizes are usually given) */
static void human_bytes(uint64_t b, char *buf, size_t cap)
{
    if (b >= 1000000000ull) snprintf(buf, cap, "%.3f GB", (double)b / 1e9);
    else if (b >= 1000000ull) snprintf(buf, cap, "%.1f MB", (double)b / 1e6);
    else snprintf(buf, cap, "%.1f kB", (double)b / 1e3);
}

int cli_cmd_quantize(int argc, char **argv)
{
    w4a8moe_quantize_opts q;
    w4a8moe_quantize_opts_init(&q);
    int64_t group = 128;
    static layer_list layers;
    const char *calib = NULL;
    int quiet = 0;
    cli_opt opts[] = {
        CLI_INT("--group-size", "G", "int4 group size g: 32, 64 or 128 (default 128)", &group, 32,
                128),
        CLI_CUSTOM("--act", "MODE", "activation scales: dynamic (per token, default) or static",
                   &q.act_scheme, parse_act),
        CLI_CUSTOM("--layers", "LIST", "MoE layers to quantise, e.g. 1,3,5-7 (default: all)",
                   &layers, parse_layers),
        CLI_CUSTOM("--format", "FMT", "pack-quantized (default, what vLLM loads) or int-quantized",
                   &q.format, parse_format),
        CLI_CUSTOM("--shard-size", "SIZE", "largest output file, e.g. 5GB (default 5GB)",
                   &q.max_shard_bytes, parse_size),
        CLI_STR("--calib", "FILE", "calibration data for --act static (not supported yet)", &calib),
        CLI_FLAG("--quiet", "no progress bar", &quiet),
    };
    static const cli_spec spec = {
        "quantize", "[options] SRC DST",
        "Quantise a bf16/f16/f32 Hugging Face MoE checkpoint into compressed-tensors W4AFP8.",
        "Routed and shared expert weights become int4 with one scale per g inputs, rounded as\n"
        "compressed-tensors rounds (scale = absmax/7.5 in the weight dtype, round half to even);\n"
        "every other tensor is copied unchanged and listed in the config's ignore list if it is a\n"
        "Linear. Architectures: Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3, Llama-4.\n"
        "DST must be new or empty. See docs/quantize.md.\n",
        2};
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, pos, &npos);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (npos != 2) return cli_usage_error("quantize", "needs SRC and DST directories (see --help)");
    if (group != 32 && group != 64 && group != 128)
        return cli_usage_error("quantize", "--group-size must be 32, 64 or 128, got %lld",
                               (long long)group);
    q.src_dir = pos[0];
    q.dst_dir = pos[1];
    q.group_size = (int32_t)group;
    q.calib_path = calib;
    if (opts[2].given) {
        q.layers = layers.v;
        q.n_layers = layers.n;
    }
    bar_state bar = {0, 0};
    if (!quiet && isatty(STDERR_FILENO)) {
        q.progress = draw_bar;
        q.progress_ctx = &bar;
    }
    w4a8moe_err err = {{0}};
    w4a8moe_quantize_report r;
    w4a8moe_status st = w4a8moe_quantize_checkpoint(&q, &r, &err);
    if (bar.drawn) fprintf(stderr, "\n");
    if (st != W4A8MOE_STATUS_OK) return cli_fail("quantize", "%s", err.msg);
    printf("%s: quantised %lld expert matrices in %d MoE layer(s) to int4 g=%d (%s), copied "
           "%lld tensors, %lld Linear modules on the ignore list\n",
           w4a8moe_arch_name(r.arch), (long long)r.matrices_quantized, r.layers_quantized,
           q.group_size, w4a8moe_ckpt_format_name(q.format), (long long)r.tensors_copied,
           (long long)r.ignored_linears);
    char in[32], out[32];
    human_bytes(r.bytes_in, in, sizeof in);
    human_bytes(r.bytes_out, out, sizeof out);
    printf("%s -> %s in %d file(s) under %s\n", in, out, r.shards, q.dst_dir);
    return CLI_EXIT_OK;
}
