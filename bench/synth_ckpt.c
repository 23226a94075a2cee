/*
 * synth_ckpt.c — `w4a8moe-synth-ckpt DIR [--layers N] [--hidden H --inter I --experts E --topk k
 * --group g] [--seed S]`: writes a synthetic Qwen3-MoE checkpoint in compressed-tensors
 * pack-quantized W4AFP8 form (docs/formats.md), every expert of every layer distinct, for
 * whole-model memory runs (bench/whole_model.sh) that need a real model's size on disk but no
 * real model. Defaults: qwen3-30b-a3b (H 2048, I 768, E 128, k 8, g 128), 48 MoE layers,
 * about 15 GB.
 *
 * Layout: config.json (qwen3_moe, norm_topk_prob, quantization_config for group-wise int4 ×
 * dynamic per-token fp8, the routers on the ignore list), one shard per layer
 * (model-000LL-of-000NN.safetensors: every expert's gate/up/down weight_packed I32 [N, K/8],
 * weight_scale BF16 [N, K/g], weight_shape I64 [2], and mlp.gate.weight BF16 [E, H]) and
 * model.safetensors.index.json. Only the MoE blocks are written: no attention, embeddings or
 * norms (w4a8moe reads none of them). Values: int4 uniform over [-8, 7], scales uniform in
 * [0.004, 0.02), router weights uniform in [-0.05, 0.05); one layer (~320 MB at the default
 * shape) is in memory at a time. Developer tool: it uses the library's internal safetensors
 * writer, so it is built beside the CLI, not installed.
 */
#include "../src/common/quant.h"
#include "../src/common/synth.h"
#include "../src/loader/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct synth_args {
    const char *dir;
    long long layers, H, I, E, k, g;
    unsigned long long seed;
} synth_args;

static int usage(const char *why)
{
    fprintf(stderr, "w4a8moe-synth-ckpt: %s\nusage: w4a8moe-synth-ckpt DIR [--layers N] [--hidden H] "
                    "[--inter I] [--experts E] [--topk k] [--group g] [--seed S]\n", why);
    return 2;
}

static int parse(int argc, char **argv, synth_args *a)
{
    *a = (synth_args){NULL, 48, 2048, 768, 128, 8, 128, 1};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (f[0] != '-') {
            if (a->dir) return usage("one directory only");
            a->dir = f;
            continue;
        }
        if (i + 1 >= argc) return usage("a flag without its value");
        char *end;
        long long v = strtoll(argv[++i], &end, 10);
        if (*end || v < 1) return usage("values must be positive integers");
        if (!strcmp(f, "--layers")) a->layers = v;
        else if (!strcmp(f, "--hidden")) a->H = v;
        else if (!strcmp(f, "--inter")) a->I = v;
        else if (!strcmp(f, "--experts")) a->E = v;
        else if (!strcmp(f, "--topk")) a->k = v;
        else if (!strcmp(f, "--group")) a->g = v;
        else if (!strcmp(f, "--seed")) a->seed = (unsigned long long)v;
        else return usage("unknown flag");
    }
    if (!a->dir) return usage("needs the output directory");
    if ((a->g != 32 && a->g != 64 && a->g != 128) || a->H % a->g || a->I % a->g || a->k > a->E ||
        a->layers > 9999)
        return usage("g must be 32, 64 or 128 and divide H and I; k <= E; at most 9999 layers");
    return 0;
}

static int write_config(const synth_args *a)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", a->dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\n  \"architectures\": [\"Qwen3MoeForCausalLM\"],\n  \"model_type\": \"qwen3_moe\",\n"
               "  \"hidden_size\": %lld,\n  \"num_hidden_layers\": %lld,\n  \"hidden_act\": \"silu\",\n"
               "  \"torch_dtype\": \"bfloat16\",\n  \"num_experts\": %lld,\n  \"num_experts_per_tok\": %lld,\n"
               "  \"moe_intermediate_size\": %lld,\n  \"intermediate_size\": %lld,\n  \"norm_topk_prob\": true,\n"
               "  \"decoder_sparse_step\": 1,\n  \"mlp_only_layers\": [],\n",
            a->H, a->layers, a->E, a->k, a->I, 4 * a->I);
    fprintf(f, "  \"quantization_config\": {\n    \"quant_method\": \"compressed-tensors\",\n"
               "    \"format\": \"pack-quantized\",\n    \"quantization_status\": \"compressed\",\n"
               "    \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"format\": \"pack-quantized\",\n"
               "      \"weights\": {\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"group\", "
               "\"group_size\": %lld, \"dynamic\": false},\n"
               "      \"input_activations\": {\"num_bits\": 8, \"type\": \"float\", \"symmetric\": true, "
               "\"strategy\": \"token\", \"group_size\": null, \"dynamic\": true},\n"
               "      \"output_activations\": null}},\n    \"ignore\": [\"lm_head\"",
            a->g);
    for (long long L = 0; L < a->layers; L++) fprintf(f, ", \"model.layers.%lld.mlp.gate\"", L);
    fprintf(f, "]\n  }\n}\n");
    return fclose(f) ? -1 : 0;
}

/* One layer's shard: names[] and the buffers stay alive until the writer closes. */
static int write_layer(const synth_args *a, long long L, w4a8moe_synth_rng *r, FILE *index, int first)
{
    const long long H = a->H, I = a->I, E = a->E, g = a->g;
    const long long N[3] = {I, I, H}, K[3] = {H, H, I};
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    size_t words = 0, scales = 0;
    for (int p = 0; p < 3; p++) {
        words += (size_t)(N[p] * K[p] / 8);
        scales += (size_t)(N[p] * (K[p] / g));
    }
    int32_t *packed = malloc(words * (size_t)E * 4);
    uint16_t *scale = malloc(scales * (size_t)E * 2), *router = malloc((size_t)(E * H) * 2);
    int64_t *shapes = malloc((size_t)(3 * E) * 2 * sizeof(int64_t));
    char (*names)[160] = malloc((size_t)(9 * E + 1) * sizeof *names);
    if (!packed || !scale || !router || !shapes || !names) return -1;
    for (size_t i = 0; i < words * (size_t)E; i += 2) { /* any nibble is a valid q + 8 */
        uint64_t v = w4a8moe_synth_next(r);
        packed[i] = (int32_t)(uint32_t)v;
        if (i + 1 < words * (size_t)E) packed[i + 1] = (int32_t)(uint32_t)(v >> 32);
    }
    for (size_t i = 0; i < scales * (size_t)E; i++)
        scale[i] = w4a8moe_f32_to_bf16(w4a8moe_synth_uniform(r, 0.004f, 0.02f));
    for (long long i = 0; i < E * H; i++) router[i] = w4a8moe_f32_to_bf16(w4a8moe_synth_uniform(r, -0.05f, 0.05f));
    char file[64], path[4096];
    snprintf(file, sizeof file, "model-%05lld-of-%05lld.safetensors", L + 1, a->layers);
    snprintf(path, sizeof path, "%s/%s", a->dir, file);
    w4a8moe_err err;
    w4a8moe_st_writer *w;
    if (w4a8moe_st_writer_open(path, &w, &err) != W4A8MOE_STATUS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    size_t pw = 0, ps = 0, n = 0;
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    for (long long e = 0; e < E && st == W4A8MOE_STATUS_OK; e++)
        for (int p = 0; p < 3 && st == W4A8MOE_STATUS_OK; p++) {
            int64_t sp[2] = {N[p], K[p] / 8}, ss[2] = {N[p], K[p] / g}, one[1] = {2};
            int64_t *shape = shapes + 2 * (3 * e + p);
            shape[0] = N[p];
            shape[1] = K[p];
            const char *suffix[3] = {"weight_packed", "weight_scale", "weight_shape"};
            for (int t = 0; t < 3; t++) {
                snprintf(names[n], sizeof names[n], "model.layers.%lld.mlp.experts.%lld.%s.%s", L, e,
                         proj[p], suffix[t]);
                fprintf(index, "%s\n    \"%s\": \"%s\"", first && n == 0 ? "" : ",", names[n], file);
                n++;
            }
            st = w4a8moe_st_writer_add(w, names[n - 3], W4A8MOE_ST_I32, 2, sp, packed + pw, &err);
            if (st == W4A8MOE_STATUS_OK)
                st = w4a8moe_st_writer_add(w, names[n - 2], W4A8MOE_ST_BF16, 2, ss, scale + ps, &err);
            if (st == W4A8MOE_STATUS_OK)
                st = w4a8moe_st_writer_add(w, names[n - 1], W4A8MOE_ST_I64, 1, one, shape, &err);
            pw += (size_t)(N[p] * K[p] / 8);
            ps += (size_t)(N[p] * (K[p] / g));
        }
    snprintf(names[n], sizeof names[n], "model.layers.%lld.mlp.gate.weight", L);
    fprintf(index, ",\n    \"%s\": \"%s\"", names[n], file);
    int64_t rs[2] = {E, H};
    if (st == W4A8MOE_STATUS_OK) st = w4a8moe_st_writer_add(w, names[n], W4A8MOE_ST_BF16, 2, rs, router, &err);
    if (st == W4A8MOE_STATUS_OK)
        st = w4a8moe_st_writer_close(w, &err);
    else
        w4a8moe_st_writer_abort(w);
    if (st != W4A8MOE_STATUS_OK) fprintf(stderr, "%s\n", err.msg);
    free(packed);
    free(scale);
    free(router);
    free(shapes);
    free(names);
    return st == W4A8MOE_STATUS_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    synth_args a;
    int rc = parse(argc, argv, &a);
    if (rc) return rc;
    if (mkdir(a.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "w4a8moe-synth-ckpt: cannot create %s: %s\n", a.dir, strerror(errno));
        return 1;
    }
    if (write_config(&a)) {
        fprintf(stderr, "w4a8moe-synth-ckpt: cannot write %s/config.json\n", a.dir);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", a.dir);
    FILE *index = fopen(path, "w");
    if (!index) return 1;
    fprintf(index, "{\n  \"metadata\": {},\n  \"weight_map\": {");
    w4a8moe_synth_rng r = {a.seed};
    for (long long L = 0; L < a.layers; L++) {
        if (write_layer(&a, L, &r, index, L == 0)) {
            fclose(index);
            fprintf(stderr, "w4a8moe-synth-ckpt: layer %lld failed\n", L);
            return 1;
        }
        fprintf(stderr, "\rw4a8moe-synth-ckpt: layer %lld of %lld written", L + 1, a.layers);
    }
    fprintf(index, "\n  }\n}\n");
    fprintf(stderr, "\n");
    return fclose(index) ? 1 : 0;
}
