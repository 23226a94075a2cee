/*
 * test_quantizer_util.h — helpers shared by tests/test_quantizer.c and
 * tests/test_quantize_run.c: scratch directories, a writer of small unquantised MoE
 * checkpoints (Mixtral, Qwen2-MoE, DeepSeek-V3, Llama-4 with fused experts; bf16, f16, f32;
 * optionally sharded, or broken on purpose), and a reader of quantised outputs (sharded or
 * not, the index checked). Tensor names are spelled out here, independently of
 * src/loader/names.c, so a naming bug there cannot cancel out.
 */
#ifndef W4A8MOE_TEST_QUANTIZER_UTIL_H
#define W4A8MOE_TEST_QUANTIZER_UTIL_H

#include "test_util.h"

#define TQ_UNUSED __attribute__((unused))

#include "common/quant.h"
#include "loader/hf_config.h"
#include "loader/quantizer.h"
#include "loader/safetensors.h"
#include "w4a8moe.h"

#include <jansson.h>

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static TQ_UNUSED const char *data_dir(void)
{
    const char *d = getenv("W4A8MOE_TEST_DATA");
    return d && d[0] ? d : "tests/data";
}

/* ---- scratch directories ------------------------------------------------------------------- */

static char tmp_root[256];

static TQ_UNUSED void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[2048];
            snprintf(p, sizeof p, "%.1000s/%.1000s", path, e->d_name);
            rm_tree(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Creates this run's scratch directory under /tmp; 0 on success. */
static TQ_UNUSED int tq_tmp_init(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/w4a8moe-test-quantizer-XXXXXX");
    if (mkdtemp(tmp_root)) return 0;
    printf("FAIL cannot create a temporary directory\n");
    return -1;
}

static TQ_UNUSED void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%.200s", tmp_root, name);
}

static TQ_UNUSED void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}
/* ---- 3. checkpoints written here ---------------------------------------------------------- */

typedef enum arch_kind { A_MIXTRAL, A_QWEN2, A_DEEPSEEK, A_LLAMA4 } arch_kind;

typedef struct spec {
    arch_kind arch;
    int64_t H, I, Is, E;      /* Is: shared expert I (0: none) */
    int32_t k, layers, g;
    w4a8moe_st_dtype dt;
    int src_shards;           /* 1: model.safetensors; n: an index over n files */
    const char *drop;         /* a tensor name to leave out (error tests) */
    int64_t bad_shape_I;      /* != 0: write experts with this I instead (error tests) */
    int nan_at;               /* 1: a NaN in expert 0's first weight */
} spec;

typedef struct tensor {
    char name[160];
    w4a8moe_st_dtype dt;
    int32_t ndim;
    int64_t shape[3];
    void *data;
    size_t bytes;
    int shard;
} tensor;

typedef struct model {
    tensor *t;
    int n, cap;
} model;

static TQ_UNUSED const char *prefix_of(arch_kind a) { return a == A_LLAMA4 ? "language_model.model." : "model."; }
static TQ_UNUSED const char *block_of(arch_kind a)
{
    return a == A_MIXTRAL ? "block_sparse_moe" : a == A_LLAMA4 ? "feed_forward" : "mlp";
}
static TQ_UNUSED int is_moe(const spec *s, int L) { return s->arch == A_MIXTRAL ? 1 : L >= 1; }

static TQ_UNUSED float rand_w(test_rng *r) { return test_rng_uniform(r, -0.08f, 0.08f); }

static TQ_UNUSED void add_tensor(model *m, const spec *s, const char *name, int32_t ndim, const int64_t *shape,
                       int shard, test_rng *r)
{
    if (s->drop && strcmp(s->drop, name) == 0) return;
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->t = realloc(m->t, (size_t)m->cap * sizeof *m->t);
    }
    tensor *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = s->dt;
    t->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (t->shape[i] = shape[i]);
    t->bytes = (size_t)numel * w4a8moe_st_dtype_size(s->dt);
    t->data = malloc(t->bytes);
    t->shard = shard;
    for (int64_t i = 0; i < numel; i++) {
        float v = rand_w(r);
        if (s->dt == W4A8MOE_ST_BF16) ((uint16_t *)t->data)[i] = w4a8moe_f32_to_bf16(v);
        else if (s->dt == W4A8MOE_ST_F16) ((uint16_t *)t->data)[i] = w4a8moe_f32_to_f16(v);
        else if (s->dt == W4A8MOE_ST_F32) ((float *)t->data)[i] = v;
        else ((uint8_t *)t->data)[i] = w4a8moe_f32_to_e4m3(v);
    }
}

static TQ_UNUSED void add2(model *m, const spec *s, int shard, test_rng *r, int64_t a, int64_t b,
                 const char *fmt, ...) W4A8MOE_PRINTF(7, 8);
static TQ_UNUSED void add2(model *m, const spec *s, int shard, test_rng *r, int64_t a, int64_t b,
                 const char *fmt, ...)
{
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {a, b};
    add_tensor(m, s, name, b ? 2 : 1, shape, shard, r);
}

static TQ_UNUSED void add_layer(model *m, const spec *s, int L, test_rng *r)
{
    const char *P = prefix_of(s->arch), *B = block_of(s->arch);
    int64_t H = s->H, I = s->bad_shape_I ? s->bad_shape_I : s->I;
    int sh = L % s->src_shards;
    add2(m, s, sh, r, H, 0, "%slayers.%d.input_layernorm.weight", P, L);
    add2(m, s, sh, r, 32, H, "%slayers.%d.self_attn.q_proj.weight", P, L);
    add2(m, s, sh, r, H, 32, "%slayers.%d.self_attn.o_proj.weight", P, L);
    if (!is_moe(s, L)) {
        add2(m, s, sh, r, 64, H, "%slayers.%d.%s.gate_proj.weight", P, L, B);
        add2(m, s, sh, r, 64, H, "%slayers.%d.%s.up_proj.weight", P, L, B);
        add2(m, s, sh, r, H, 64, "%slayers.%d.%s.down_proj.weight", P, L, B);
        return;
    }
    add2(m, s, sh, r, s->E, H, "%slayers.%d.%s.%s.weight", P, L, B,
         s->arch == A_LLAMA4 ? "router" : "gate");
    if (s->arch == A_DEEPSEEK) add2(m, s, sh, r, s->E, 0, "%slayers.%d.mlp.gate.e_score_correction_bias", P, L);
    if (s->arch == A_LLAMA4) {
        char name[160];
        int64_t gu[3] = {s->E, H, 2 * I}, dn[3] = {s->E, I, H};
        snprintf(name, sizeof name, "%slayers.%d.feed_forward.experts.gate_up_proj", P, L);
        add_tensor(m, s, name, 3, gu, sh, r);
        snprintf(name, sizeof name, "%slayers.%d.feed_forward.experts.down_proj", P, L);
        add_tensor(m, s, name, 3, dn, sh, r);
    } else {
        const char *pn[3] = {"gate_proj", "up_proj", "down_proj"}, *mx[3] = {"w1", "w3", "w2"};
        for (int e = 0; e < s->E; e++)
            for (int p = 0; p < 3; p++)
                add2(m, s, (sh + e) % s->src_shards, r, p == 2 ? H : I, p == 2 ? I : H,
                     "%slayers.%d.%s.experts.%d.%s.weight", P, L, B, e,
                     s->arch == A_MIXTRAL ? mx[p] : pn[p]);
    }
    if (!s->Is) return;
    const char *sn = s->arch == A_DEEPSEEK ? "shared_experts" : "shared_expert";
    add2(m, s, sh, r, s->Is, H, "%slayers.%d.%s.%s.gate_proj.weight", P, L, B, sn);
    add2(m, s, sh, r, s->Is, H, "%slayers.%d.%s.%s.up_proj.weight", P, L, B, sn);
    add2(m, s, sh, r, H, s->Is, "%slayers.%d.%s.%s.down_proj.weight", P, L, B, sn);
    if (s->arch == A_QWEN2) add2(m, s, sh, r, 1, H, "%slayers.%d.mlp.shared_expert_gate.weight", P, L);
}

static TQ_UNUSED void config_json(const spec *s, char *buf, size_t cap)
{
    int n = 0;
    switch (s->arch) {
    case A_MIXTRAL:
        n = snprintf(buf, cap, "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": "
                     "\"mixtral\", \"intermediate_size\": %lld, \"num_local_experts\": %lld",
                     (long long)s->I, (long long)s->E);
        break;
    case A_QWEN2:
        n = snprintf(buf, cap, "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"model_type\": "
                     "\"qwen2_moe\", \"moe_intermediate_size\": %lld, \"num_experts\": %lld, "
                     "\"shared_expert_intermediate_size\": %lld, \"mlp_only_layers\": [0], "
                     "\"decoder_sparse_step\": 1, \"norm_topk_prob\": false",
                     (long long)s->I, (long long)s->E, (long long)s->Is);
        break;
    case A_DEEPSEEK:
        n = snprintf(buf, cap, "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": "
                     "\"deepseek_v3\", \"moe_intermediate_size\": %lld, \"n_routed_experts\": %lld, "
                     "\"n_shared_experts\": %lld, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, "
                     "\"n_group\": 2, \"topk_group\": 2, \"scoring_func\": \"sigmoid\", "
                     "\"topk_method\": \"noaux_tc\", \"routed_scaling_factor\": 2.5, "
                     "\"norm_topk_prob\": true",
                     (long long)s->I, (long long)s->E, (long long)(s->Is / s->I));
        break;
    case A_LLAMA4:
        n = snprintf(buf, cap, "{\"architectures\": [\"Llama4ForConditionalGeneration\"], "
                     "\"model_type\": \"llama4\", \"text_config\": {\"model_type\": \"llama4_text\", "
                     "\"intermediate_size\": %lld, \"intermediate_size_mlp\": 64, "
                     "\"num_local_experts\": %lld, \"interleave_moe_layer_step\": 1, "
                     "\"moe_layers\": [1]",
                     (long long)s->I, (long long)s->E);
        break;
    }
    n += snprintf(buf + n, cap - (size_t)n, ", \"hidden_size\": %lld, \"num_experts_per_tok\": %d, "
                  "\"num_hidden_layers\": %d, \"hidden_act\": \"silu\", \"vocab_size\": 16}%s\n",
                  (long long)s->H, s->k, s->layers, s->arch == A_LLAMA4 ? "}" : "");
}

/* Writes the checkpoint into dir: config.json, tokenizer.json (to be copied), and the
 * safetensors file(s) with an index when sharded. */
static TQ_UNUSED void write_model(const spec *s, const char *dir, model *m, test_rng *r)
{
    mkdir(dir, 0755);
    char path[2048], cfg[2048];
    config_json(s, cfg, sizeof cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, cfg);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_text(path, "{\"tiny\": true}\n");
    memset(m, 0, sizeof *m);
    const char *P = prefix_of(s->arch);
    char name[160];
    snprintf(name, sizeof name, "%sembed_tokens.weight", P);
    int64_t emb[2] = {16, s->H};
    add_tensor(m, s, name, 2, emb, 0, r);
    for (int L = 0; L < s->layers; L++) add_layer(m, s, L, r);
    snprintf(name, sizeof name, "%snorm.weight", P);
    add_tensor(m, s, name, 1, &s->H, s->src_shards - 1, r);
    snprintf(name, sizeof name, "%slm_head.weight", s->arch == A_LLAMA4 ? "language_model." : "");
    add_tensor(m, s, name, 2, emb, s->src_shards - 1, r);
    if (s->nan_at) {
        for (int i = 0; i < m->n; i++)
            if (strstr(m->t[i].name, "experts.0.") || strstr(m->t[i].name, "gate_up_proj")) {
                if (s->dt == W4A8MOE_ST_F32) ((float *)m->t[i].data)[5] = NAN;
                else ((uint16_t *)m->t[i].data)[5] = s->dt == W4A8MOE_ST_BF16 ? 0x7fc0 : 0x7e00;
                break;
            }
    }
    json_t *map = json_object();
    for (int sh = 0; sh < s->src_shards; sh++) {
        char file[64];
        if (s->src_shards == 1) snprintf(file, sizeof file, "model.safetensors");
        else snprintf(file, sizeof file, "part-%d.safetensors", sh);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        w4a8moe_st_writer *w = NULL;
        w4a8moe_err err = {{0}};
        if (w4a8moe_st_writer_open(path, &w, &err) != W4A8MOE_STATUS_OK) continue;
        for (int i = 0; i < m->n; i++)
            if (m->t[i].shard == sh) {
                w4a8moe_st_writer_add(w, m->t[i].name, m->t[i].dt, m->t[i].ndim, m->t[i].shape,
                                      m->t[i].data, &err);
                json_object_set_new(map, m->t[i].name, json_string(file));
            }
        CHECK(w4a8moe_st_writer_close(w, &err) == W4A8MOE_STATUS_OK, "write %s: %s", path, err.msg);
    }
    if (s->src_shards > 1) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        json_t *root = json_pack("{s:{}, s:o}", "metadata", "weight_map", map);
        json_dump_file(root, path, JSON_INDENT(2));
        json_decref(root);
    } else {
        json_decref(map);
    }
}

static TQ_UNUSED void model_free(model *m)
{
    for (int i = 0; i < m->n; i++) free(m->t[i].data);
    free(m->t);
}

static TQ_UNUSED const tensor *model_find(const model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0) return &m->t[i];
    return NULL;
}


/* ---- 3b. verifying a quantised output ------------------------------------------------------ */

typedef struct out_ckpt {
    w4a8moe_st_file *f[16];
    int n;
    json_t *config;
} out_ckpt;

static TQ_UNUSED int out_open(out_ckpt *o, const char *dir)
{
    memset(o, 0, sizeof *o);
    char path[2048];
    w4a8moe_err err = {{0}};
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_t *idx = json_load_file(path, 0, NULL);
    if (!idx) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        CHECK(w4a8moe_st_open(path, &o->f[0], &err) == W4A8MOE_STATUS_OK, "%s: %s", path, err.msg);
        o->n = o->f[0] ? 1 : 0;
    } else {
        /* every index entry names a file that holds that tensor; total_size adds up */
        json_t *map = json_object_get(idx, "weight_map");
        const char *key;
        json_t *v;
        uint64_t total = 0;
        int bad = 0;
        json_object_foreach(map, key, v)
        {
            int fi = -1;
            snprintf(path, sizeof path, "%s/%s", dir, json_string_value(v));
            for (int i = 0; i < o->n; i++)
                if (strcmp(w4a8moe_st_path(o->f[i]), path) == 0) fi = i;
            if (fi < 0 && o->n < 16 && w4a8moe_st_open(path, &o->f[o->n], &err) == W4A8MOE_STATUS_OK)
                fi = o->n++;
            const w4a8moe_st_tensor *t = fi >= 0 ? w4a8moe_st_find(o->f[fi], key) : NULL;
            bad += !t;
            total += t ? t->nbytes : 0;
        }
        size_t count = 0;
        for (int i = 0; i < o->n; i++) count += w4a8moe_st_count(o->f[i]);
        CHECK(!bad && count == json_object_size(map), "index: %d entries unresolved, %zu tensors "
              "in files vs %zu entries", bad, count, json_object_size(map));
        json_t *ts = json_object_get(json_object_get(idx, "metadata"), "total_size");
        CHECK((uint64_t)json_integer_value(ts) == total, "index total_size %lld != %llu",
              (long long)json_integer_value(ts), (unsigned long long)total);
        json_decref(idx);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    o->config = json_load_file(path, 0, NULL);
    return o->n > 0 && o->config;
}

static TQ_UNUSED const w4a8moe_st_tensor *out_find(const out_ckpt *o, const char *fmt, ...) W4A8MOE_PRINTF(2, 3);
static TQ_UNUSED const w4a8moe_st_tensor *out_find(const out_ckpt *o, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    for (int i = 0; i < o->n; i++) {
        const w4a8moe_st_tensor *t = w4a8moe_st_find(o->f[i], name);
        if (t) return t;
    }
    return NULL;
}

static TQ_UNUSED void out_close(out_ckpt *o)
{
    for (int i = 0; i < o->n; i++) w4a8moe_st_close(o->f[i]);
    json_decref(o->config);
}

static TQ_UNUSED float src_elem(const void *d, w4a8moe_st_dtype dt, int64_t i)
{
    if (dt == W4A8MOE_ST_BF16) return w4a8moe_bf16_to_f32(((const uint16_t *)d)[i]);
    if (dt == W4A8MOE_ST_F16) return w4a8moe_f16_to_f32(((const uint16_t *)d)[i]);
    return ((const float *)d)[i];
}

/* The source weight of (L, e, proj) as f32 [N, K], found by the test's own names (Llama-4:
 * transposed out of the fused tensors here). proj 0 gate, 1 up, 2 down; e = -1: shared. */
static TQ_UNUSED float *src_matrix(const spec *s, const model *m, int L, int e, int proj, int64_t *N, int64_t *K)
{
    const char *P = prefix_of(s->arch), *B = block_of(s->arch);
    int64_t H = s->H, I = e < 0 ? s->Is : s->I;
    *N = proj == 2 ? H : I;
    *K = proj == 2 ? I : H;
    float *w = malloc((size_t)(*N * *K) * sizeof *w);
    char name[200];
    if (s->arch == A_LLAMA4 && e >= 0) {
        snprintf(name, sizeof name, "%slayers.%d.feed_forward.experts.%s", P, L,
                 proj == 2 ? "down_proj" : "gate_up_proj");
        const tensor *t = model_find(m, name);
        for (int64_t n = 0; n < *N; n++)
            for (int64_t k = 0; k < *K; k++)
                w[n * *K + k] = proj == 2 ? src_elem(t->data, t->dt, e * I * H + k * H + n)
                                          : src_elem(t->data, t->dt, e * H * 2 * I + k * 2 * I +
                                                                         (proj == 1 ? I : 0) + n);
        return w;
    }
    const char *pn[3] = {"gate_proj", "up_proj", "down_proj"}, *mx[3] = {"w1", "w3", "w2"};
    if (e < 0)
        snprintf(name, sizeof name, "%slayers.%d.%s.%s.%s.weight", P, L, B,
                 s->arch == A_DEEPSEEK ? "shared_experts" : "shared_expert", pn[proj]);
    else
        snprintf(name, sizeof name, "%slayers.%d.%s.experts.%d.%s.weight", P, L, B, e,
                 s->arch == A_MIXTRAL ? mx[proj] : pn[proj]);
    const tensor *t = model_find(m, name);
    for (int64_t i = 0; i < *N * *K; i++) w[i] = src_elem(t->data, t->dt, i);
    return w;
}

static TQ_UNUSED w4a8moe_dtype layer_dtype(w4a8moe_st_dtype dt)
{
    return dt == W4A8MOE_ST_BF16 ? W4A8MOE_DTYPE_BF16
                                 : dt == W4A8MOE_ST_F16 ? W4A8MOE_DTYPE_F16 : W4A8MOE_DTYPE_F32;
}

#endif /* W4A8MOE_TEST_QUANTIZER_UTIL_H */
