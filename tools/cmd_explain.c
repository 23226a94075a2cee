/*
 * cmd_explain.c — `w4a8moe explain`: describes a layer (a built-in model, shape flags, or
 * both: flags override the model) and prints the oracle's verdict for every backend of the
 * registry, through the public w4a8moe_explain. Exit 1 when no backend is selected.
 */
#include "cli.h"

#include "../src/core/backend.h"
#include "../src/core/models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct explain_args {
    const w4a8moe_model *model;
    int64_t hidden, inter, experts, topk, group, ep_size, ep_rank, max_tokens;
    w4a8moe_activation act;
    w4a8moe_dtype dtype;
    float static_scales[2];
    const char *backend;
    cli_device device;
} explain_args;

enum { OPT_MODEL, OPT_HIDDEN, OPT_INTER, OPT_EXPERTS, OPT_TOPK, OPT_GROUP, OPT_ACT, OPT_DTYPE,
       OPT_STATIC, OPT_EP_SIZE, OPT_EP_RANK, OPT_MAX_TOKENS, OPT_BACKEND, OPT_DEVICE, OPT_COUNT };

#define DIM_MAX (1 << 24)

/* The layer description from the model (if any) and the flags given, which override it. */
static int build_desc(const explain_args *a, const cli_opt *opts, w4a8moe_layer_desc *d)
{
    if (a->model) {
        w4a8moe_model_desc(a->model, a->max_tokens, d);
    } else {
        static const int required[] = {OPT_HIDDEN, OPT_INTER, OPT_EXPERTS, OPT_TOPK};
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
            if (!opts[required[i]].given)
                return cli_usage_error("explain", "%s is needed without --model (or give --model NAME)",
                                       opts[required[i]].name);
        w4a8moe_layer_desc_init(d);
        d->max_tokens = a->max_tokens;
        d->group_size = 128;
    }
    if (opts[OPT_HIDDEN].given) d->hidden = a->hidden;
    if (opts[OPT_INTER].given) d->inter = a->inter;
    if (opts[OPT_EXPERTS].given) d->num_experts = (int32_t)a->experts;
    if (opts[OPT_TOPK].given) d->top_k = (int32_t)a->topk;
    if (opts[OPT_GROUP].given) d->group_size = (int32_t)a->group;
    if (opts[OPT_ACT].given) d->activation = a->act;
    if (opts[OPT_DTYPE].given) d->io_dtype = a->dtype;
    if (opts[OPT_STATIC].given) {
        d->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
        d->act_scale_in = a->static_scales[0];
        d->act_scale_mid = a->static_scales[1];
    }
    if (opts[OPT_EP_SIZE].given) d->ep_size = (int32_t)a->ep_size;
    if (opts[OPT_EP_RANK].given) d->ep_rank = (int32_t)a->ep_rank;
    /* the router's own fields only matter with logits; keep them consistent with E and k */
    if (!a->model && d->top_k != 1) d->routing.renormalize = 1;
    return 0;
}

static void print_desc(const explain_args *a, const w4a8moe_layer_desc *d)
{
    if (a->model)
        printf("layer: %s (%s)\n", a->model->name, a->model->description);
    else
        printf("layer: custom shape\n");
    printf("  shape       H=%lld I=%lld E=%d k=%d g=%d, max_tokens %lld\n", (long long)d->hidden,
           (long long)d->inter, d->num_experts, d->top_k, d->group_size, (long long)d->max_tokens);
    if (d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC)
        printf("  quant       int4 group-wise weights x fp8 e4m3 static per-tensor activations "
               "(scales %g, %g)\n",
               (double)d->act_scale_in, (double)d->act_scale_mid);
    else
        printf("  quant       int4 group-wise weights x fp8 e4m3 dynamic per-token activations\n");
    printf("  activation  %s (gated)\n", cli_activation_name(d->activation));
    printf("  I/O dtype   %s\n", cli_dtype_name(d->io_dtype));
    const w4a8moe_routing_desc *r = &d->routing;
    printf("  routing     %s", cli_routing_name(r->kind));
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK)
        printf(" (n_group %d, topk_group %d)", r->n_group, r->topk_group);
    if (r->renormalize) printf(", renormalised");
    if (r->routed_scaling_factor != 1.0f) printf(", scaling %g", (double)r->routed_scaling_factor);
    if (d->router_weight_on_input) printf(", weight applied on the input");
    printf("\n  parallel    expert-parallel rank %d of %d\n", d->ep_rank, d->ep_size);
}

/* Prints the library's report indented; returns whether a backend was selected. */
static int print_report(const char *report)
{
    int selected = 0;
    printf("backends, in priority order:\n");
    for (const char *line = report; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *hit = strstr(line, " selected");
        if (hit && hit < line + len && strncmp(line, "no backend", 10) != 0) selected = 1;
        printf("  %.*s\n", (int)len, line);
        line += len + (nl ? 1 : 0);
    }
    return selected;
}

int cli_cmd_explain(int argc, char **argv)
{
    explain_args a = {.max_tokens = 128, .act = W4A8MOE_ACTIVATION_SILU,
                      .dtype = W4A8MOE_DTYPE_BF16, .device = CLI_DEVICE_DEFAULT};
    cli_opt opts[OPT_COUNT] = {
        [OPT_MODEL] = CLI_CUSTOM("--model", "NAME", "a built-in shape (see 'w4a8moe models')",
                                 &a.model, cli_parse_model),
        [OPT_HIDDEN] = CLI_INT("--hidden", "H", "hidden size", &a.hidden, 1, DIM_MAX),
        [OPT_INTER] = CLI_INT("--inter", "I", "intermediate size per expert", &a.inter, 1, DIM_MAX),
        [OPT_EXPERTS] = CLI_INT("--experts", "E", "routed experts", &a.experts, 1, 1 << 20),
        [OPT_TOPK] = CLI_INT("--topk", "k", "experts per token", &a.topk, 1, 1 << 20),
        [OPT_GROUP] = CLI_INT("--group", "g", "group size: 32, 64 or 128 (default 128)", &a.group, 1,
                              DIM_MAX),
        [OPT_ACT] = CLI_CUSTOM("--act", "ACT", "silu or gelu_tanh (default silu)", &a.act,
                               cli_parse_activation),
        [OPT_DTYPE] = CLI_CUSTOM("--dtype", "DT", "I/O dtype: bf16, f16 or f32 (default bf16)",
                                 &a.dtype, cli_parse_dtype),
        [OPT_STATIC] = CLI_CUSTOM("--static-scales", "A,B",
                                  "static per-tensor activation scales (GEMM1, GEMM2 input)",
                                  a.static_scales, cli_parse_scale_pair),
        [OPT_EP_SIZE] = CLI_INT("--ep-size", "N", "expert-parallel ranks (default 1)", &a.ep_size, 1,
                                1 << 16),
        [OPT_EP_RANK] = CLI_INT("--ep-rank", "R", "this rank (default 0)", &a.ep_rank, 0, 1 << 16),
        [OPT_MAX_TOKENS] = CLI_INT("--max-tokens", "T", "largest batch per forward (default 128)",
                                   &a.max_tokens, 1, 1 << 24),
        [OPT_BACKEND] = CLI_STR("--backend", "NAME", "explain as if this backend were forced",
                                &a.backend),
        [OPT_DEVICE] = CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &a.device, cli_parse_device),
    };
    static const cli_spec spec = {
        "explain", "[--model NAME | --hidden H --inter I --experts E --topk k] [options]",
        "Describe a layer and show every backend's verdict: \"selected\", or the first axis\n"
        "(device, quant, activation, parallel, shape) that rejects it and why.",
        "Shape flags override the model's values. Exit status 1 when no backend is selected.\n",
        0};
    cli_parse_result pr = cli_parse(&spec, opts, OPT_COUNT, argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    if (a.backend && !w4a8moe_registry_find_experts(a.backend))
        return cli_usage_error("explain", "--backend '%s': no experts backend of that name in this "
                                          "build; hint: 'w4a8moe --version' lists them", a.backend);
    w4a8moe_layer_desc d;
    if (build_desc(&a, opts, &d)) return CLI_EXIT_USAGE;
    cli_device_resolve(&a.device);
    w4a8moe_layer_options lo = {0};
    lo.backend = a.backend;
    cli_device_apply(&a.device, &lo);
    size_t needed = 0;
    w4a8moe_status st = w4a8moe_explain(&d, &lo, NULL, 0, &needed);
    if (st != W4A8MOE_STATUS_OK)
        return st == W4A8MOE_STATUS_INVALID_ARGUMENT ? cli_usage_error("explain", "%s", w4a8moe_last_error())
                                                    : cli_fail("explain", "%s", w4a8moe_last_error());
    char *report = malloc(needed);
    if (!report) return cli_fail("explain", "out of memory for a %zu-byte report", needed);
    st = w4a8moe_explain(&d, &lo, report, needed, NULL);
    if (st != W4A8MOE_STATUS_OK) {
        free(report);
        return cli_fail("explain", "%s", w4a8moe_last_error());
    }
    print_desc(&a, &d);
    char devname[W4A8MOE_ERR_CAP + 64];
    cli_device_label(&a.device, devname, sizeof devname);
    printf("device: %s\n", devname);
    const char *env = getenv("W4A8MOE_BACKEND");
    if (a.backend || (env && env[0]))
        printf("forced backend: %s%s\n", a.backend ? a.backend : env,
               a.backend ? "" : " (from W4A8MOE_BACKEND)");
    int selected = print_report(report);
    free(report);
    w4a8moe_memory_info mi;
    if (selected && w4a8moe_memory_estimate(&d, NULL, &lo, d.max_tokens, &mi) == W4A8MOE_STATUS_OK)
        printf("memory: weights %.1f MiB (routed experts of this rank, as the backends keep them) + "
               "workspace %.1f MiB for %lld tokens per forward (%.3f MiB for one; layers can share "
               "one workspace and run larger batches in chunks)\n",
               (double)mi.weight_bytes / (1 << 20), (double)mi.workspace_bytes / (1 << 20),
               (long long)d.max_tokens, (double)mi.workspace_min_bytes / (1 << 20));
    return selected ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
