/*
 * ckpt_fixture.h — tiny synthetic checkpoints for the loader tests (test_checkpoint.c,
 * test_malformed.c), written with our safetensors writer: config.json for one architecture,
 * routed experts in one storage format (pack-quantized, int-quantized, SGLang w4afp8), dynamic
 * or static activations, and optionally a shared expert (int4, bf16, or DeepSeek block-FP8),
 * in one file or two shards with an index. The fixture keeps the logical weights it wrote so a
 * test can build the same layer with w4a8moe_layer_create and compare bit for bit.
 * Header-only (static functions): include it from one test file each.
 */
#ifndef W4A8MOE_CKPT_FIXTURE_H
#define W4A8MOE_CKPT_FIXTURE_H

#include "loader/names.h"
#include "loader/safetensors.h"
#include "test_util.h"
#include "w4a8moe.h"
#include "common/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { FX_PACK = 0, FX_INT = 1, FX_SGLANG = 2 };
enum { FX_SHARED_NONE = 0, FX_SHARED_INT4 = 1, FX_SHARED_BF16 = 2, FX_SHARED_FP8 = 3 };

typedef struct fx_matrix {
    int64_t N, K;
    int8_t *q;       /* [N, K] int4 values, or e4m3 codes for FP8 */
    float *s;        /* [N, K/g] group scales (bf16-exact) or FP8 block scales */
    uint16_t *dense; /* bf16 [N, K] for dense shared experts */
} fx_matrix;

typedef struct fx {
    /* what to write */
    const char *arch; /* "qwen3_moe", "qwen2_moe", "deepseek_v3", "mixtral", "llama4" */
    int format, act_static, shared, sharded;
    int64_t H, I, Is;
    int E, k, g;
    /* generated */
    fx_matrix m[2][64][3]; /* [layer][expert][proj]; E <= 64 */
    fx_matrix sh[2][3];
    float in_scale[2][64][3];
    float sh_in_scale[3];
    uint16_t *router[2]; /* bf16 [E, H] */
    float *bias[2];      /* [E] */
    uint16_t *sgate[2];  /* bf16 [H] (qwen2) */
} fx;

static float fx_bf16_round(float v) { return w4a8moe_bf16_to_f32(w4a8moe_f32_to_bf16(v)); }

static void fx_matrix_make(fx_matrix *m, int64_t N, int64_t K, int g, int kind, test_rng *r)
{
    m->N = N;
    m->K = K;
    if (kind == FX_SHARED_BF16) {
        m->dense = malloc((size_t)(N * K) * 2);
        for (int64_t i = 0; i < N * K; i++) m->dense[i] = w4a8moe_f32_to_bf16(test_rng_uniform(r, -0.1f, 0.1f));
        return;
    }
    m->q = malloc((size_t)(N * K));
    if (kind == FX_SHARED_FP8) {
        int64_t bn = (N + 127) / 128, bk = (K + 127) / 128;
        for (int64_t i = 0; i < N * K; i++)
            m->q[i] = (int8_t)w4a8moe_f32_to_e4m3(test_rng_uniform(r, -200.0f, 200.0f));
        m->s = malloc((size_t)(bn * bk) * sizeof(float));
        for (int64_t i = 0; i < bn * bk; i++) m->s[i] = test_rng_uniform(r, 1e-4f, 5e-4f);
        return;
    }
    for (int64_t i = 0; i < N * K; i++) m->q[i] = (int8_t)((test_rng_next(r) >> 40) % 16) - 8;
    m->s = malloc((size_t)(N * (K / g)) * sizeof(float));
    for (int64_t i = 0; i < N * (K / g); i++) m->s[i] = fx_bf16_round(test_rng_uniform(r, 0.004f, 0.02f));
}

static void fx_matrix_free(fx_matrix *m)
{
    free(m->q);
    free(m->s);
    free(m->dense);
    memset(m, 0, sizeof *m);
}

static void fx_generate(fx *f, uint64_t seed)
{
    test_rng r = {seed};
    int shk = f->shared == FX_SHARED_INT4 ? 0 : f->shared;
    for (int L = 0; L < 2; L++) {
        for (int e = 0; e < f->E; e++)
            for (int p = 0; p < 3; p++) {
                fx_matrix_make(&f->m[L][e][p], p == 2 ? f->H : f->I, p == 2 ? f->I : f->H, f->g, 0, &r);
                f->in_scale[L][e][p] = test_rng_uniform(&r, 0.005f, 0.02f);
            }
        if (f->shared)
            for (int p = 0; p < 3; p++)
                fx_matrix_make(&f->sh[L][p], p == 2 ? f->H : f->Is, p == 2 ? f->Is : f->H, f->g, shk, &r);
        f->router[L] = malloc((size_t)(f->E * f->H) * 2);
        for (int64_t i = 0; i < f->E * f->H; i++) f->router[L][i] = w4a8moe_f32_to_bf16(test_rng_uniform(&r, -0.5f, 0.5f));
        f->bias[L] = malloc((size_t)f->E * sizeof(float));
        for (int e = 0; e < f->E; e++) f->bias[L][e] = test_rng_uniform(&r, -0.05f, 0.05f);
        f->sgate[L] = malloc((size_t)f->H * 2);
        for (int64_t h = 0; h < f->H; h++) f->sgate[L][h] = w4a8moe_f32_to_bf16(test_rng_uniform(&r, -0.1f, 0.1f));
    }
    for (int p = 0; p < 3; p++) f->sh_in_scale[p] = test_rng_uniform(&r, 0.005f, 0.02f);
}

static void fx_free(fx *f)
{
    for (int L = 0; L < 2; L++) {
        for (int e = 0; e < f->E; e++)
            for (int p = 0; p < 3; p++) fx_matrix_free(&f->m[L][e][p]);
        for (int p = 0; p < 3; p++) fx_matrix_free(&f->sh[L][p]);
        free(f->router[L]);
        free(f->bias[L]);
        free(f->sgate[L]);
    }
}

static int fx_is_qwen2(const fx *f) { return strcmp(f->arch, "qwen2_moe") == 0; }
static int fx_is_ds(const fx *f) { return strcmp(f->arch, "deepseek_v3") == 0; }
static int fx_is_llama4(const fx *f) { return strcmp(f->arch, "llama4") == 0; }

/* ---- config.json ----------------------------------------------------------------------- */

static void fx_quant_config(const fx *f, char *buf, size_t cap)
{
    if (f->format == FX_SGLANG) {
        buf[0] = '\0';
        return;
    }
    const char *act = f->act_static ? "\"strategy\": \"tensor\", \"dynamic\": false"
                                    : "\"strategy\": \"token\", \"dynamic\": true";
    snprintf(buf, cap,
             ",\n\"quantization_config\": {\"quant_method\": \"compressed-tensors\", \"format\": \"%s\","
             " \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\": {\"num_bits\": 4,"
             " \"type\": \"int\", \"symmetric\": true, \"strategy\": \"group\", \"group_size\": %d,"
             " \"actorder\": null}, \"input_activations\": {\"num_bits\": 8, \"type\": \"float\","
             " \"symmetric\": true, %s}, \"output_activations\": null}},"
             " \"ignore\": [\"lm_head\", \"re:.*mlp\\\\.gate$\", \"re:.*router$\", \"re:.*shared_expert_gate$\"%s]}",
             f->format == FX_PACK ? "pack-quantized" : "int-quantized", f->g, act,
             f->shared >= FX_SHARED_BF16 ? ", \"re:.*shared_experts?\\\\.\"" : "");
}

static void fx_config(const fx *f, char *buf, size_t cap)
{
    char q[2048];
    fx_quant_config(f, q, sizeof q);
    long long H = f->H, I = f->I;
    if (strcmp(f->arch, "qwen3_moe") == 0 || fx_is_qwen2(f))
        snprintf(buf, cap,
                 "{\"model_type\": \"%s\", \"architectures\": [\"%s\"], \"hidden_size\": %lld,"
                 " \"num_hidden_layers\": 2, \"num_experts\": %d, \"num_experts_per_tok\": %d,"
                 " \"moe_intermediate_size\": %lld, \"norm_topk_prob\": %s, \"hidden_act\": \"silu\","
                 " \"decoder_sparse_step\": 1, \"mlp_only_layers\": [0], \"shared_expert_intermediate_size\": %lld%s}",
                 f->arch, fx_is_qwen2(f) ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM", H, f->E, f->k,
                 I, fx_is_qwen2(f) ? "false" : "true", (long long)(f->shared ? f->Is : 0), q);
    else if (fx_is_ds(f))
        snprintf(buf, cap,
                 "{\"model_type\": \"deepseek_v3\", \"hidden_size\": %lld, \"num_hidden_layers\": 2,"
                 " \"n_routed_experts\": %d, \"num_experts_per_tok\": %d, \"moe_intermediate_size\": %lld,"
                 " \"n_group\": 2, \"topk_group\": 1, \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,"
                 " \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\", \"n_shared_experts\": %lld,"
                 " \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"hidden_act\": \"silu\"%s}",
                 H, f->E, f->k, I, (long long)(f->shared ? f->Is / f->I : 0), q);
    else if (fx_is_llama4(f))
        snprintf(buf, cap,
                 "{\"model_type\": \"llama4\", \"architectures\": [\"Llama4ForConditionalGeneration\"],"
                 " \"text_config\": {\"model_type\": \"llama4_text\", \"hidden_size\": %lld,"
                 " \"num_hidden_layers\": 2, \"num_local_experts\": %d, \"num_experts_per_tok\": 1,"
                 " \"intermediate_size\": %lld, \"interleave_moe_layer_step\": 2, \"hidden_act\": \"silu\"}%s}",
                 H, f->E, I, q);
    else
        snprintf(buf, cap,
                 "{\"model_type\": \"mixtral\", \"hidden_size\": %lld, \"num_hidden_layers\": 2,"
                 " \"num_local_experts\": %d, \"num_experts_per_tok\": %d, \"intermediate_size\": %lld,"
                 " \"hidden_act\": \"silu\"%s}",
                 H, f->E, f->k, I, q);
}

static int fx_write_text(const char *dir, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    fputs(text, fp);
    return fclose(fp);
}

/* ---- tensors --------------------------------------------------------------------------- */

/* Everything the writer needs kept alive until close. */
typedef struct fx_pool {
    void *p[4096];
    int n;
} fx_pool;

static void *fx_keep(fx_pool *pl, size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (pl->n < 4096) pl->p[pl->n++] = p;
    return p;
}

static void fx_add(w4a8moe_st_writer *w, const char *module, const char *suffix, w4a8moe_st_dtype dt,
                   int nd, int64_t d0, int64_t d1, const void *data)
{
    char name[400];
    int64_t shape[2] = {d0, d1};
    w4a8moe_err err;
    snprintf(name, sizeof name, "%s%s%s", module, suffix[0] ? "." : "", suffix);
    if (w4a8moe_st_writer_add(w, name, dt, nd, shape, data, &err) != W4A8MOE_STATUS_OK)
        printf("fixture: %s\n", err.msg);
}

static void fx_add_int4(const fx *f, w4a8moe_st_writer *w, fx_pool *pl, const char *mod, const fx_matrix *m)
{
    int64_t N = m->N, K = m->K;
    if (f->format == FX_PACK) {
        int32_t *pk = fx_keep(pl, (size_t)(N * K / 2));
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) w4a8moe_int4_set(pk + n * (K / 8), k, m->q[n * K + k]);
        int64_t *shape = fx_keep(pl, 16);
        shape[0] = N;
        shape[1] = K;
        fx_add(w, mod, "weight_packed", W4A8MOE_ST_I32, 2, N, K / 8, pk);
        fx_add(w, mod, "weight_shape", W4A8MOE_ST_I64, 1, 2, 0, shape);
    } else if (f->format == FX_INT) {
        fx_add(w, mod, "weight", W4A8MOE_ST_I8, 2, N, K, m->q);
    } else {
        uint8_t *b = fx_keep(pl, (size_t)(N * K / 2));
        for (int64_t i = 0; i < N * K / 2; i++)
            b[i] = (uint8_t)((m->q[2 * i] & 0xf) | ((m->q[2 * i + 1] & 0xf) << 4));
        fx_add(w, mod, "weight", W4A8MOE_ST_I8, 2, N, K / 2, b);
    }
    int64_t ns = N * (K / f->g);
    if (f->format == FX_SGLANG) {
        fx_add(w, mod, "weight_scale_inv", W4A8MOE_ST_F32, 2, N, K / f->g, m->s);
        return;
    }
    uint16_t *s = fx_keep(pl, (size_t)ns * 2);
    for (int64_t i = 0; i < ns; i++) s[i] = w4a8moe_f32_to_bf16(m->s[i]);
    fx_add(w, mod, "weight_scale", W4A8MOE_ST_BF16, 2, N, K / f->g, s);
}

static void fx_add_shared(const fx *f, w4a8moe_st_writer *w, fx_pool *pl, int L, const w4a8moe_hf_config *cfg)
{
    char mod[300];
    for (int p = 0; p < 3; p++) {
        const fx_matrix *m = &f->sh[L][p];
        w4a8moe_name_shared(cfg, L, (w4a8moe_proj)p, mod, sizeof mod);
        if (f->shared == FX_SHARED_INT4) {
            fx_add_int4(f, w, pl, mod, m);
            if (f->act_static) fx_add(w, mod, "input_scale", W4A8MOE_ST_F32, 1, 1, 0, &f->sh_in_scale[p]);
        } else if (f->shared == FX_SHARED_BF16) {
            fx_add(w, mod, "weight", W4A8MOE_ST_BF16, 2, m->N, m->K, m->dense);
        } else {
            fx_add(w, mod, "weight", W4A8MOE_ST_F8_E4M3, 2, m->N, m->K, m->q);
            fx_add(w, mod, "weight_scale_inv", W4A8MOE_ST_F32, 2, (m->N + 127) / 128, (m->K + 127) / 128, m->s);
        }
    }
    if (fx_is_qwen2(f)) {
        w4a8moe_name_shared_gate(cfg, L, mod, sizeof mod);
        fx_add(w, mod, "weight", W4A8MOE_ST_BF16, 2, 1, f->H, f->sgate[L]);
    }
}

static void fx_add_layer(const fx *f, w4a8moe_st_writer *w, fx_pool *pl, int L, const w4a8moe_hf_config *cfg)
{
    char mod[300];
    for (int e = 0; e < f->E; e++)
        for (int p = 0; p < 3; p++) {
            w4a8moe_name_expert(cfg, L, e, (w4a8moe_proj)p, mod, sizeof mod);
            fx_add_int4(f, w, pl, mod, &f->m[L][e][p]);
            if (f->format == FX_SGLANG) {
                w4a8moe_name_sglang_input_scale(cfg, L, e, (w4a8moe_proj)p, mod, sizeof mod);
                fx_add(w, mod, "", W4A8MOE_ST_F32, 1, 1, 0, &f->in_scale[L][e][p]);
            } else if (f->act_static) {
                fx_add(w, mod, "input_scale", W4A8MOE_ST_F32, 1, 1, 0, &f->in_scale[L][e][p]);
            }
        }
    w4a8moe_name_router(cfg, L, mod, sizeof mod);
    fx_add(w, mod, "weight", W4A8MOE_ST_BF16, 2, f->E, f->H, f->router[L]);
    if (fx_is_ds(f)) {
        w4a8moe_name_score_bias(cfg, L, mod, sizeof mod);
        fx_add(w, mod, "", W4A8MOE_ST_F32, 1, f->E, 0, f->bias[L]);
    }
    if (f->shared) fx_add_shared(f, w, pl, L, cfg);
}

static void fx_sglang_files(const fx *f, const char *dir, const w4a8moe_hf_config *cfg)
{
    char b0[256], b1[256], text[1024];
    w4a8moe_name_block(cfg, 0, b0, sizeof b0);
    w4a8moe_name_block(cfg, 1, b1, sizeof b1);
    fx_write_text(dir, "hf_quant_config.json",
                  "{\"producer\": {\"name\": \"modelopt\"}, \"quantization\": {\"quant_algo\": \"MIXED_PRECISION\"}}");
    snprintf(text, sizeof text,
             "{\"quant_algo\": \"MIXED_PRECISION\", \"quantized_layers\": {\"%s.experts\": {\"quant_algo\": "
             "\"W4A8_AWQ\"}, \"%s.experts\": {\"quant_algo\": \"W4A8_AWQ\"}}}",
             b0, b1);
    fx_write_text(dir, "quant_cfg.json", text);
    (void)f;
}

/* Writes the checkpoint into dir (created). Returns 0 on success. */
static int fx_write(fx *f, const char *dir)
{
    char cfgtext[8192];
    mkdir(dir, 0755);
    fx_config(f, cfgtext, sizeof cfgtext);
    if (fx_write_text(dir, "config.json", cfgtext)) return -1;
    /* parse our own config to name tensors the way the loader will look for them */
    w4a8moe_hf_config cfg;
    w4a8moe_err err;
    if (f->format == FX_SGLANG) {
        char fake[8192];
        fx_config(f, fake, sizeof fake);
        if (w4a8moe_hf_config_parse(fake, strlen(fake), "fixture", &cfg, &err)) {
            printf("fixture config: %s\n", err.msg);
            return -1;
        }
        fx_sglang_files(f, dir, &cfg);
    } else if (w4a8moe_hf_config_parse(cfgtext, strlen(cfgtext), "fixture", &cfg, &err)) {
        printf("fixture config: %s\n", err.msg);
        return -1;
    }
    fx_pool *pl = calloc(1, sizeof *pl);
    char path[512];
    w4a8moe_st_writer *w[2];
    int nfiles = f->sharded ? 2 : 1;
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/model%s.safetensors", dir,
                 f->sharded ? (i ? "-00002-of-00002" : "-00001-of-00002") : "");
        if (w4a8moe_st_writer_open(path, &w[i], &err)) return -1;
    }
    for (int L = 0; L < 2; L++) fx_add_layer(f, w[f->sharded ? L : 0], pl, L, &cfg);
    int rc = 0;
    for (int i = 0; i < nfiles; i++) rc |= w4a8moe_st_writer_close(w[i], &err) != W4A8MOE_STATUS_OK;
    if (f->sharded) {
        /* the index: every tensor of shard i → its file */
        char *idx = malloc(1 << 20);
        size_t used = (size_t)snprintf(idx, 1 << 20, "{\"metadata\": {}, \"weight_map\": {");
        for (int i = 0; i < 2; i++) {
            w4a8moe_st_file *sf;
            snprintf(path, sizeof path, "%s/model-0000%d-of-00002.safetensors", dir, i + 1);
            if (w4a8moe_st_open(path, &sf, &err)) return -1;
            for (size_t j = 0; j < w4a8moe_st_count(sf); j++)
                used += (size_t)snprintf(idx + used, (1 << 20) - used, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                                         used > 40 ? ", " : "", w4a8moe_st_at(sf, j)->name, i + 1);
            w4a8moe_st_close(sf);
        }
        snprintf(idx + used, (1 << 20) - used, "}}");
        rc |= fx_write_text(dir, "model.safetensors.index.json", idx);
        free(idx);
    }
    for (int i = 0; i < pl->n; i++) free(pl->p[i]);
    free(pl);
    w4a8moe_hf_config_free(&cfg);
    return rc;
}

#endif /* W4A8MOE_CKPT_FIXTURE_H */
