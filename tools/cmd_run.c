/*
 * cmd_run.c — `w4a8moe run CKPT --layer L --input IN --output OUT`: one MoE layer of a
 * checkpoint on the tokens of a safetensors file.
 *
 * IN holds `hidden_states` [T, H] (BF16, F16 or F32) and optionally `topk_ids` I32 [T, k] +
 * `topk_weights` F32 [T, k], which bypass the router; without them the router runs from the
 * checkpoint's gate weights (logits x . Wg^T in f32) and its configuration. OUT gets `output`
 * [T, H] in the input's dtype. The shared expert runs unless --routed-only says to leave it
 * out.
 *
 * --device (default auto: cuda:0 when visible, else the host): on a CUDA device the tokens,
 * routing (or the checkpoint router's logits, computed on the host) and output are staged
 * through device memory (tools/bench_gpu.h), and bad topk_ids are reported as on the host.
 * auto falls back to the host, saying so, when the device refuses the layer (UNSUPPORTED).
 */
#include "bench_gpu.h"
#include "cli.h"

#include "../src/core/backend.h"
#include "../src/loader/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run_args {
    const char *input, *output, *backend;
    int64_t layer, threads, tokens, workspace_mb;
    int routed_only, all_layers, router;
    uint64_t seed;
    cli_device device;
} run_args;

typedef struct run_input {
    w4a8moe_st_file *f;
    const w4a8moe_st_tensor *x, *ids, *wts;
    w4a8moe_dtype dtype;
    int64_t T;
} run_input;

static int read_input(const run_args *a, const w4a8moe_checkpoint_info *info, run_input *in)
{
    w4a8moe_err err;
    if (w4a8moe_st_open(a->input, &in->f, &err) != W4A8MOE_STATUS_OK)
        return cli_fail("run", "--input: %s", err.msg);
    in->x = w4a8moe_st_find(in->f, "hidden_states");
    in->ids = w4a8moe_st_find(in->f, "topk_ids");
    in->wts = w4a8moe_st_find(in->f, "topk_weights");
    if (!in->x) return cli_fail("run", "%s: no tensor 'hidden_states' [T, H]", a->input);
    int dt = w4a8moe_st_to_dtype(in->x->dtype);
    if (dt < 0 || in->x->ndim != 2 || in->x->shape[1] != info->hidden)
        return cli_fail("run", "%s: 'hidden_states' must be BF16, F16 or F32 [T, H = %lld]",
                        a->input, (long long)info->hidden);
    in->dtype = (w4a8moe_dtype)dt;
    in->T = in->x->shape[0];
    if (!in->ids != !in->wts)
        return cli_fail("run", "%s: 'topk_ids' and 'topk_weights' come together (or neither)", a->input);
    if (in->ids) {
        const w4a8moe_st_tensor *i = in->ids, *w = in->wts;
        if (i->dtype != W4A8MOE_ST_I32 || i->ndim != 2 || i->shape[0] != in->T || i->shape[1] != info->top_k ||
            w->dtype != W4A8MOE_ST_F32 || w->ndim != 2 || w->shape[0] != in->T || w->shape[1] != info->top_k)
            return cli_fail("run", "%s: 'topk_ids' must be I32 and 'topk_weights' F32, both [T = %lld, "
                                   "k = %d]", a->input, (long long)in->T, info->top_k);
    }
    return 0;
}

/* A copy of a mapped tensor with natural alignment (mappings may place it unaligned). */
static void *aligned_copy(const w4a8moe_st_tensor *t)
{
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

static int write_output(const char *path, w4a8moe_dtype dt, int64_t T, int64_t H, const void *out)
{
    static const w4a8moe_st_dtype map[3] = {W4A8MOE_ST_BF16, W4A8MOE_ST_F16, W4A8MOE_ST_F32};
    w4a8moe_err err;
    w4a8moe_st_writer *w;
    int64_t shape[2] = {T, H};
    if (w4a8moe_st_writer_open(path, &w, &err) != W4A8MOE_STATUS_OK) return cli_fail("run", "%s", err.msg);
    if (w4a8moe_st_writer_add(w, "output", map[dt], 2, shape, out, &err) != W4A8MOE_STATUS_OK) {
        w4a8moe_st_writer_abort(w);
        return cli_fail("run", "%s", err.msg);
    }
    if (w4a8moe_st_writer_close(w, &err) != W4A8MOE_STATUS_OK) return cli_fail("run", "%s", err.msg);
    return 0;
}

/* The layer on a->device; auto falls back to the host when the device refuses it. */
static int create_layer(run_args *a, w4a8moe_checkpoint *ck, const w4a8moe_layer_desc *d,
                        w4a8moe_layer **L)
{
    for (;;) {
        w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
        o.backend = a->backend;
        o.num_threads = (int32_t)a->threads;
        cli_device_apply(&a->device, &o);
        /* --workspace-mb: the layer works in a workspace of that size, in chunks if need be */
        w4a8moe_workspace *ws = NULL;
        if (a->workspace_mb &&
            w4a8moe_workspace_create(a->device.kind, a->device.ordinal, (size_t)a->workspace_mb << 20, &ws) !=
                W4A8MOE_STATUS_OK)
            return cli_fail("run", "workspace: %s", w4a8moe_last_error());
        o.workspace = ws;
        w4a8moe_status st = w4a8moe_checkpoint_layer_create_desc(ck, (int32_t)a->layer, d, &o, NULL, 0, L);
        w4a8moe_workspace_free(ws); /* the layer keeps it while it lives */
        if (st == W4A8MOE_STATUS_OK) return 0;
        if (!cli_device_fallback(&a->device, st, w4a8moe_last_error()))
            return cli_fail("run", "%s", w4a8moe_last_error());
    }
}

static int run_layer(run_args *a, w4a8moe_checkpoint *ck, const run_input *in)
{
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    w4a8moe_layer_desc d;
    int64_t T = in->T, H = info.hidden;
    if (w4a8moe_checkpoint_layer_desc(ck, (int32_t)a->layer, T > 0 ? T : 1, &d) != W4A8MOE_STATUS_OK)
        return cli_fail("run", "%s", w4a8moe_last_error());
    d.io_dtype = in->dtype;
    w4a8moe_layer *L;
    if (create_layer(a, ck, &d, &L)) return CLI_EXIT_FAIL;
    void *x = aligned_copy(in->x), *out = calloc((size_t)(T * H) + 1, w4a8moe_dtype_size(in->dtype));
    int32_t *ids = in->ids ? aligned_copy(in->ids) : NULL;
    float *wts = in->wts ? aligned_copy(in->wts) : NULL;
    float *logits = in->ids ? NULL : malloc((size_t)(T * info.num_experts + 1) * sizeof(float));
    int rc = !x || !out || (in->ids ? !ids || !wts : !logits) ? cli_fail("run", "out of memory") : 0;
    if (!rc && !in->ids &&
        w4a8moe_checkpoint_router_logits(ck, (int32_t)a->layer, T, x, in->dtype, logits) != W4A8MOE_STATUS_OK)
        rc = cli_fail("run", "%s", w4a8moe_last_error());
    w4a8moe_routing_input r = {.topk_ids = ids, .topk_weights = wts, .router_logits = logits};
    w4a8moe_status st = rc ? W4A8MOE_STATUS_OK : bench_gpu_forward_staged(L, a->device.kind, &d, T, x, &r, out);
    if (st != W4A8MOE_STATUS_OK) /* the layer's message, or a staging copy that failed */
        rc = cli_fail("run", "%s", w4a8moe_layer_error(L)[0] ? w4a8moe_layer_error(L)
                                                              : "staging the data through the device failed");
    if (!rc) rc = write_output(a->output, in->dtype, T, H, out);
    char label[W4A8MOE_ERR_CAP + 64];
    cli_device_label(&a->device, label, sizeof label);
    if (!rc)
        printf("run: layer %lld, %lld tokens (%s), routing %s, backend %s, shared expert %s -> %s\n"
               "device: %s\n",
               (long long)a->layer, (long long)T, cli_dtype_name(in->dtype),
               in->ids ? "given (topk_ids)" : "checkpoint router", w4a8moe_layer_backend(L),
               info.has_shared_expert ? (a->routed_only ? "left out (--routed-only)" : w4a8moe_layer_shared_backend(L))
                                      : "none",
               a->output, label);
    free(x);
    free(out);
    free(ids);
    free(wts);
    free(logits);
    w4a8moe_layer_free(L);
    return rc;
}

int cli_cmd_run(int argc, char **argv)
{
    run_args a = {.layer = -1, .tokens = 1024, .seed = 1, .device = CLI_DEVICE_DEFAULT};
    cli_opt opts[] = {
        CLI_INT("--layer", "L", "decoder layer to run (must be an MoE layer; required)", &a.layer, 0, 1 << 20),
        CLI_STR("--input", "IN", "safetensors with hidden_states [T, H] (+ topk_ids, topk_weights)", &a.input),
        CLI_STR("--output", "OUT", "safetensors to write: output [T, H] in the input's dtype", &a.output),
        CLI_STR("--backend", "NAME", "force an experts backend (default: the oracle's choice)", &a.backend),
        CLI_FLAG("--routed-only", "leave the shared expert out (explicitly)", &a.routed_only),
        CLI_INT("--threads", "N", "CPU threads (default: all cores)", &a.threads, 1, 256),
        CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &a.device, cli_parse_device),
        CLI_INT("--workspace-mb", "M", "one shared workspace of M MiB; larger batches run in chunks", &a.workspace_mb, 1, 1 << 24),
        CLI_FLAG("--all-layers", "every MoE layer loaded at once, T synthetic tokens through each", &a.all_layers),
        CLI_INT("--tokens", "T", "--all-layers: tokens per forward (default 1024)", &a.tokens, 1, 1 << 24),
        CLI_U64("--seed", "S", "--all-layers: seed of the tokens and the routing (default 1)", &a.seed),
        CLI_FLAG("--router", "--all-layers: route by the checkpoint's router (default random ids)", &a.router),
    };
    static const cli_spec spec = {
        "run", "CKPT (--layer L --input IN --output OUT | --all-layers [--tokens T]) [options]",
        "Run one MoE layer of a checkpoint on the tokens of a safetensors file, or all of them.",
        "Without topk_ids/topk_weights in IN the router runs from the checkpoint's gate weights\n"
        "(logits = x . Wg^T accumulated in f32) and its configuration (softmax top-k, DeepSeek\n"
        "grouped sigmoid, Llama-4 sigmoid top-1). The shared expert, if the model has one, is part\n"
        "of the layer unless --routed-only. --device auto (the default) runs on cuda:0 when a CUDA\n"
        "device is visible (on the host, saying so, when the device cannot run the layer), else\n"
        "on the host; the last line says which.\n"
        "--all-layers loads every MoE layer at once on the device, in one shared workspace\n"
        "(--workspace-mb, default: enough for all T tokens at once), runs T synthetic tokens\n"
        "through each in turn and prints per layer the chunk size, weights, time and an output\n"
        "checksum, then the device memory used against the weights + workspace (docs/cli.md).\n",
        1};
    const char *pos[1];
    int npos = 0;
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, pos, &npos);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (npos != 1) return cli_usage_error("run", "needs one checkpoint directory; see --help");
    if (a.all_layers && (a.layer >= 0 || a.input || a.output))
        return cli_usage_error("run", "--all-layers runs synthetic tokens through every MoE layer: "
                                      "it takes no --layer, --input or --output");
    if (!a.all_layers && (a.layer < 0 || !a.input || !a.output))
        return cli_usage_error("run", "--layer, --input and --output are required; see --help");
    cli_device_resolve(&a.device);
    w4a8moe_checkpoint *ck;
    if (w4a8moe_checkpoint_open(pos[0], &ck) != W4A8MOE_STATUS_OK)
        return cli_fail("run", "%s", w4a8moe_last_error());
    w4a8moe_checkpoint_set_routed_only(ck, a.routed_only);
    if (a.all_layers) {
        cli_run_model_args m = {pos[0], a.backend, a.tokens, a.threads, a.workspace_mb, a.seed,
                                a.router, 0, a.device};
        int mrc = cli_run_model(&m, ck);
        w4a8moe_checkpoint_close(ck);
        return mrc;
    }
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    run_input in = {0};
    int rc = read_input(&a, &info, &in);
    if (!rc) rc = run_layer(&a, ck, &in);
    w4a8moe_st_close(in.f);
    w4a8moe_checkpoint_close(ck);
    return rc;
}
