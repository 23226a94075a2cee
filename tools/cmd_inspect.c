/*
 * cmd_inspect.c — `w4a8moe inspect CKPT`: what a checkpoint directory holds (architecture,
 * format, scheme pair, MoE layers, experts, shapes, bytes) and every problem found, checked
 * tensor by tensor. A checkpoint that cannot be opened gets its problem explained (the
 * loader's message names the file, the field or tensor, and what was expected). Exit 1 when
 * there is any problem.
 */
#include "cli.h"

#include "../src/loader/checkpoint.h"
#include "../src/loader/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *scheme_text(w4a8moe_weight_scheme w, w4a8moe_act_scheme a)
{
    if (w == W4A8MOE_WEIGHT_BF16) return "bf16 x unquantised";
    return a == W4A8MOE_ACT_FP8_TENSOR_STATIC ? "int4-group x fp8-tensor-static"
                                              : "int4-group x fp8-token-dynamic";
}

static void human_bytes(uint64_t b, char *buf, size_t cap)
{
    if (b >= (1ull << 30)) snprintf(buf, cap, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20)) snprintf(buf, cap, "%.2f MiB", (double)b / (1ull << 20));
    else snprintf(buf, cap, "%.1f KiB", (double)b / 1024.0);
}

/* Bytes of the tensors whose names start with prefix. */
static uint64_t bytes_under(const w4a8moe_ckpt *c, const char *prefix)
{
    uint64_t n = 0;
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < w4a8moe_ckpt_num_files(c); i++) {
        const w4a8moe_st_file *f = w4a8moe_ckpt_file(c, i);
        for (size_t j = 0; j < w4a8moe_st_count(f); j++)
            if (strncmp(w4a8moe_st_at(f, j)->name, prefix, pl) == 0) n += w4a8moe_st_at(f, j)->nbytes;
    }
    return n;
}

static void print_config(const w4a8moe_ckpt *c)
{
    const w4a8moe_hf_config *cfg = w4a8moe_ckpt_config(c);
    char b[64];
    human_bytes(w4a8moe_ckpt_bytes(c), b, sizeof b);
    printf("checkpoint    %s\n", w4a8moe_ckpt_dir(c));
    printf("files         %zu safetensors file%s, %s of tensors\n", w4a8moe_ckpt_num_files(c),
           w4a8moe_ckpt_num_files(c) == 1 ? "" : "s", b);
    printf("architecture  %s (%s)\n", w4a8moe_arch_name(cfg->arch),
           cfg->arch_class[0] ? cfg->arch_class : cfg->model_type);
    if (cfg->quantized)
        printf("format        %s (%s), scheme %s, g = %d\n", w4a8moe_ckpt_format_name(cfg->format),
               cfg->quant_method, scheme_text(cfg->weight_scheme, cfg->act_scheme), cfg->group_size);
    else
        printf("format        dense (not quantised: `w4a8moe quantize` makes a W4AFP8 checkpoint)\n");
    printf("experts       E = %d, k = %d, H = %lld, I = %lld, activation %s\n", cfg->num_experts,
           cfg->top_k, (long long)cfg->hidden, (long long)cfg->moe_inter,
           cli_activation_name(cfg->activation));
    const w4a8moe_routing_desc *r = &cfg->routing;
    printf("routing       %s", cli_routing_name(r->kind));
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK)
        printf(", n_group %d, topk_group %d, scaling %g, score bias", r->n_group, r->topk_group,
               (double)r->routed_scaling_factor);
    if (r->kind != W4A8MOE_ROUTING_SIGMOID_TOP1) printf(", renormalise %s", r->renormalize ? "yes" : "no");
    printf("%s\n", cfg->router_weight_on_input ? ", weight on the input" : "");
    if (cfg->has_shared)
        printf("shared expert I = %lld%s\n", (long long)cfg->shared_inter,
               cfg->shared_gated ? ", weighted by sigmoid(x . shared_expert_gate)" : ", weight 1");
    else
        printf("shared expert none\n");
    printf("layers        %d decoder layers, %d MoE:", cfg->num_layers, cfg->n_moe_layers);
    for (int32_t i = 0; i < cfg->n_moe_layers && i < 64; i++) printf(" %d", cfg->moe_layers[i]);
    printf("%s\n", cfg->n_moe_layers > 64 ? " ..." : "");
    if (cfg->n_ignore) {
        printf("ignore       ");
        for (int32_t i = 0; i < cfg->n_ignore && i < 8; i++) printf(" %s", cfg->ignore[i]);
        printf("%s\n", cfg->n_ignore > 8 ? " ..." : "");
    }
}

/* What the checkpoint's MoE layers need on a device for T tokens per forward (the library's
 * w4a8moe_memory_estimate, summed over the layers by print_layers). */
typedef struct inspect_mem {
    int64_t tokens;
    w4a8moe_layer_options o;
    uint64_t weights, ws, ws_min;
    int layers, failed;
    char why[W4A8MOE_ERR_CAP];
} inspect_mem;

static void add_memory(inspect_mem *m, const w4a8moe_ckpt_layer *l)
{
    w4a8moe_memory_info mi;
    if (w4a8moe_memory_estimate(&l->desc, l->has_shared ? &l->shared : NULL, &m->o, m->tokens, &mi) !=
        W4A8MOE_STATUS_OK) {
        if (!m->failed) snprintf(m->why, sizeof m->why, "%s", w4a8moe_last_error());
        m->failed = 1;
        return;
    }
    m->weights += mi.weight_bytes;
    m->ws = mi.workspace_bytes > m->ws ? mi.workspace_bytes : m->ws;
    m->ws_min = mi.workspace_min_bytes > m->ws_min ? mi.workspace_min_bytes : m->ws_min;
    m->layers++;
}

static void print_memory(const inspect_mem *m, const char *device)
{
    char w[64], ws[64], one[64], all[64], per[64];
    if (m->failed) {
        printf("memory        on %s: not estimated: %s\n", device, m->why);
        return;
    }
    human_bytes(m->weights, w, sizeof w);
    human_bytes(m->ws, ws, sizeof ws);
    human_bytes(m->ws_min, one, sizeof one);
    human_bytes(m->weights + m->ws, all, sizeof all);
    human_bytes(m->ws * (uint64_t)m->layers, per, sizeof per);
    printf("memory        on %s, %lld tokens per forward: weights %s (%d MoE layers) + one shared "
           "workspace %s = %s (a workspace per layer: %s; one token: %s)\n",
           device, (long long)m->tokens, w, m->layers, ws, all, per, one);
}

/* One line per MoE layer: shapes, bytes, the shared expert's storage; problems collected. */
static int print_layers(w4a8moe_ckpt *c, int verbose, inspect_mem *mem)
{
    const w4a8moe_hf_config *cfg = w4a8moe_ckpt_config(c);
    int problems = 0;
    long long H = cfg->hidden, I = cfg->moe_inter;
    for (int32_t i = 0; i < cfg->n_moe_layers; i++) {
        int32_t L = cfg->moe_layers[i];
        char block[256], b[64];
        w4a8moe_name_block(cfg, L, block, sizeof block);
        strncat(block, ".", sizeof block - strlen(block) - 1);
        human_bytes(bytes_under(c, block), b, sizeof b);
        w4a8moe_err err = {{0}};
        w4a8moe_ckpt_layer *l = NULL;
        w4a8moe_status st = w4a8moe_ckpt_router_logits(c, L, 0, NULL, W4A8MOE_DTYPE_F32, NULL, &err);
        if (st == W4A8MOE_STATUS_OK) st = w4a8moe_ckpt_layer_load(c, L, NULL, 1, &l, &err);
        if (verbose || i < 4 || st != W4A8MOE_STATUS_OK || i == cfg->n_moe_layers - 1)
            printf("  layer %-4d %d experts x gate/up [%lld, %lld] down [%lld, %lld], %s%s%s%s\n", L,
                   cfg->num_experts, I, H, H, I, b, l && l->has_shared ? "; shared: " : "",
                   l && l->has_shared ? l->shared_format : "",
                   l && l->zero_copy ? "; zero-copy" : "");
        else if (i == 4)
            printf("  ...\n");
        if (st != W4A8MOE_STATUS_OK) {
            printf("  problem: layer %d: %s\n", L, err.msg);
            problems++;
        } else {
            add_memory(mem, l);
        }
        w4a8moe_ckpt_layer_free(l);
    }
    return problems;
}

int cli_cmd_inspect(int argc, char **argv)
{
    int verbose = 0;
    inspect_mem mem;
    memset(&mem, 0, sizeof mem);
    mem.tokens = 1024;
    cli_device dev = CLI_DEVICE_DEFAULT;
    cli_opt opts[] = {CLI_FLAG("--all-layers", "one line for every MoE layer (default: the first "
                                               "four, the last, and any with a problem)", &verbose),
                      CLI_INT("--tokens", "T", "tokens per forward for the memory line (default 1024)",
                              &mem.tokens, 1, 1 << 24),
                      CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &dev, cli_parse_device)};
    static const cli_spec spec = {
        "inspect", "[options] CKPT",
        "Describe a checkpoint directory and check every MoE layer's tensors.",
        "CKPT holds config.json (+ hf_quant_config.json / quant_cfg.json for SGLang w4afp8) and\n"
        "model.safetensors or a sharded model.safetensors.index.json. Every rule of the formats is\n"
        "checked (safetensors header, configuration fields, tensor names, dtypes and shapes,\n"
        "int4 value ranges, static scales); each problem is one 'problem:' line. Exit status 1\n"
        "when there is any problem. The 'memory' line is what the MoE layers need on --device\n"
        "for --tokens per forward: their weights and one workspace shared by them all (the\n"
        "library's w4a8moe_memory_estimate; 'run --all-layers' measures it).\n",
        1};
    const char *pos[1];
    int npos = 0;
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, pos, &npos);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (npos != 1) return cli_usage_error("inspect", "needs one checkpoint directory; see --help");
    w4a8moe_err err = {{0}};
    w4a8moe_ckpt *c;
    w4a8moe_status st = w4a8moe_ckpt_open(pos[0], &c, &err);
    if (st != W4A8MOE_STATUS_OK) {
        printf("checkpoint    %s\nproblem: %s\n", pos[0], err.msg);
        return CLI_EXIT_FAIL;
    }
    print_config(c);
    int problems = 0;
    if (w4a8moe_ckpt_config(c)->quantized) {
        cli_device_resolve(&dev);
        mem.o = (w4a8moe_layer_options)W4A8MOE_INIT(w4a8moe_layer_options);
        cli_device_apply(&dev, &mem.o);
        printf("MoE layers:\n");
        problems = print_layers(c, verbose, &mem);
        char label[W4A8MOE_ERR_CAP + 64];
        cli_device_label(&dev, label, sizeof label);
        print_memory(&mem, label);
    }
    printf("%d problem%s\n", problems, problems == 1 ? "" : "s");
    w4a8moe_ckpt_release(c);
    return problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
