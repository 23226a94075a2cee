/*
 * test_checkpoint.c — checkpoints written by the tests (tests/ckpt_fixture.h) in every format
 * we load: compressed-tensors pack-quantized and int-quantized (dynamic and static
 * activations), SGLang w4afp8, single file and sharded, Qwen3/Qwen2/DeepSeek/Mixtral/Llama-4
 * naming, shared experts int4 / bf16 (sigmoid-gated) / block-FP8. Each checkpoint layer must
 * equal, bit for bit on cpu_ref, the layer built with w4a8moe_layer_create from the logical
 * weights the fixture wrote; the fast backend must be within 2e-3; the bf16 shared expert is
 * checked against a plain double-precision computation; the router logits against our own
 * sum; expert subsets and zero-copy loading are checked too.
 */
#include "ckpt_fixture.h"
#include "core/backend.h"
#include "loader/checkpoint.h"

#include <math.h>
#include <unistd.h>

static char tmp_root[256];

/* Logical int4 matrix of a fixture matrix (f32 scales: the fixture's are bf16-exact). */
static void to_int4(const fx_matrix *m, int g, w4a8moe_int4_matrix *out)
{
    int32_t *pk = calloc((size_t)(m->N * m->K / 8), 4);
    for (int64_t n = 0; n < m->N; n++)
        for (int64_t k = 0; k < m->K; k++) w4a8moe_int4_set(pk + n * (m->K / 8), k, m->q[n * m->K + k]);
    out->packed = pk;
    out->scale = m->s;
    out->channel_scale = NULL;
    out->rows = m->N;
    out->cols = m->K;
    (void)g;
}

typedef struct ref_weights {
    w4a8moe_expert_weights ex[64];
    w4a8moe_shared_expert sh;
    w4a8moe_weights w;
    float *dense[3];
} ref_weights;

static void ref_build(const fx *f, int L, ref_weights *r)
{
    memset(r, 0, sizeof *r);
    for (int e = 0; e < f->E; e++) {
        to_int4(&f->m[L][e][0], f->g, &r->ex[e].gate);
        to_int4(&f->m[L][e][1], f->g, &r->ex[e].up);
        to_int4(&f->m[L][e][2], f->g, &r->ex[e].down);
    }
    r->w.scale_dtype = W4A8MOE_DTYPE_F32;
    r->w.experts = r->ex;
    if (!f->shared) return;
    w4a8moe_shared_expert *s = &r->sh;
    s->inter = f->Is;
    s->group_size = f->g;
    if (f->shared == FX_SHARED_INT4) {
        s->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
        s->act_scheme = f->act_static ? W4A8MOE_ACT_FP8_TENSOR_STATIC : W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
        s->scale_dtype = W4A8MOE_DTYPE_F32;
        s->act_scale_in = f->sh_in_scale[0] > f->sh_in_scale[1] ? f->sh_in_scale[0] : f->sh_in_scale[1];
        s->act_scale_mid = f->sh_in_scale[2];
        to_int4(&f->sh[L][0], f->g, &s->int4.gate);
        to_int4(&f->sh[L][1], f->g, &s->int4.up);
        to_int4(&f->sh[L][2], f->g, &s->int4.down);
    } else {
        s->weight_scheme = W4A8MOE_WEIGHT_BF16;
        s->act_scheme = W4A8MOE_ACT_BF16;
        w4a8moe_dense_matrix *d[3] = {&s->gate, &s->up, &s->down};
        for (int p = 0; p < 3; p++) {
            const fx_matrix *m = &f->sh[L][p];
            d[p]->rows = m->N;
            d[p]->cols = m->K;
            if (f->shared == FX_SHARED_BF16) {
                d[p]->data = m->dense;
                d[p]->dtype = W4A8MOE_DTYPE_BF16;
                continue;
            }
            int64_t bk = (m->K + 127) / 128;
            r->dense[p] = malloc((size_t)(m->N * m->K) * sizeof(float));
            for (int64_t n = 0; n < m->N; n++)
                for (int64_t k = 0; k < m->K; k++)
                    r->dense[p][n * m->K + k] = w4a8moe_e4m3_to_f32((uint8_t)m->q[n * m->K + k]) * m->s[(n / 128) * bk + k / 128];
            d[p]->data = r->dense[p];
            d[p]->dtype = W4A8MOE_DTYPE_F32;
        }
    }
    if (fx_is_qwen2(f)) {
        s->gate_weight = f->sgate[L];
        s->gate_weight_dtype = W4A8MOE_DTYPE_BF16;
    }
    r->w.shared = s;
}

static void ref_free(ref_weights *r)
{
    for (int e = 0; e < 64; e++) {
        free((void *)r->ex[e].gate.packed);
        free((void *)r->ex[e].up.packed);
        free((void *)r->ex[e].down.packed);
    }
    free((void *)r->sh.int4.gate.packed);
    free((void *)r->sh.int4.up.packed);
    free((void *)r->sh.int4.down.packed);
    for (int p = 0; p < 3; p++) free(r->dense[p]);
}

static double max_rel_l2(const float *a, const float *b, int64_t T, int64_t H)
{
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        double num = 0, den = 0;
        for (int64_t h = 0; h < H; h++) {
            double d = (double)a[t * H + h] - b[t * H + h];
            num += d * d;
            den += (double)b[t * H + h] * b[t * H + h];
        }
        double e = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* Runs a layer on f32 x with logits into out (poisoned first). */
static int forward(w4a8moe_layer *L, int64_t T, const float *x, const float *logits, float *out, int64_t H)
{
    for (int64_t i = 0; i < T * H; i++) out[i] = NAN;
    w4a8moe_routing_input r = {.router_logits = logits};
    return w4a8moe_layer_forward(L, T, x, &r, out, NULL) == W4A8MOE_STATUS_OK ? 0 : -1;
}

static void check_logits(const fx *f, w4a8moe_checkpoint *ck, int L, int64_t T, const float *x, float *logits)
{
    w4a8moe_status st = w4a8moe_checkpoint_router_logits(ck, L, T, x, W4A8MOE_DTYPE_F32, logits);
    CHECK(st == W4A8MOE_STATUS_OK, "router logits: %s", w4a8moe_last_error());
    int same = 1;
    for (int64_t t = 0; t < T; t++)
        for (int e = 0; e < f->E; e++) {
            float acc = 0;
            for (int64_t h = 0; h < f->H; h++) acc += x[t * f->H + h] * w4a8moe_bf16_to_f32(f->router[L][e * f->H + h]);
            same &= acc == logits[t * f->E + e];
        }
    CHECK(same, "router logits differ from x . Wg^T in f32");
}

/* The bf16 shared expert alone, in double: weight(x) * down(act(gate x) * up x). */
static void shared_plain(const fx *f, int L, const float *x, double *out)
{
    int64_t H = f->H, I = f->Is;
    double *y = malloc((size_t)I * sizeof *y);
    double wgt = 1.0;
    if (fx_is_qwen2(f)) {
        float acc = 0;
        for (int64_t h = 0; h < H; h++) acc += x[h] * w4a8moe_bf16_to_f32(f->sgate[L][h]);
        wgt = 1.0 / (1.0 + exp(-(double)acc));
    }
    for (int64_t i = 0; i < I; i++) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; h++) {
            g += (double)w4a8moe_bf16_to_f32(f->sh[L][0].dense[i * H + h]) * x[h];
            u += (double)w4a8moe_bf16_to_f32(f->sh[L][1].dense[i * H + h]) * x[h];
        }
        y[i] = g / (1.0 + exp(-g)) * u;
    }
    for (int64_t m = 0; m < H; m++) {
        double acc = 0;
        for (int64_t i = 0; i < I; i++) acc += (double)w4a8moe_bf16_to_f32(f->sh[L][2].dense[m * I + i]) * y[i];
        out[m] = wgt * acc;
    }
    free(y);
}

static void check_bf16_shared(const fx *f, w4a8moe_checkpoint *ck, const w4a8moe_layer_desc *d, int64_t T,
                              const float *x, const float *logits, const float *full)
{
    int64_t H = f->H;
    w4a8moe_checkpoint_set_routed_only(ck, 1);
    w4a8moe_layer_options o = {.backend = "cpu_ref"};
    w4a8moe_layer *R = NULL;
    CHECK(w4a8moe_checkpoint_layer_create_desc(ck, 1, d, &o, NULL, 0, &R) == W4A8MOE_STATUS_OK,
          "routed-only create: %s", w4a8moe_last_error());
    w4a8moe_checkpoint_set_routed_only(ck, 0);
    CHECK(strcmp(w4a8moe_layer_shared_backend(R), "") == 0, "routed-only layer has a shared pipeline");
    float *routed = malloc((size_t)(T * H) * sizeof(float));
    double *sh = malloc((size_t)H * sizeof(double));
    CHECK(forward(R, T, x, logits, routed, H) == 0, "routed-only forward");
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        shared_plain(f, 1, x + t * H, sh);
        double num = 0, den = 0;
        for (int64_t h = 0; h < H; h++) {
            double got = (double)full[t * H + h] - routed[t * H + h];
            num += (got - sh[h]) * (got - sh[h]);
            den += sh[h] * sh[h];
        }
        double e = sqrt(num / den);
        if (!(e <= worst)) worst = e;
    }
    CHECK(worst < 1e-5, "bf16 shared expert differs from the plain computation: rel-L2 %.3e", worst);
    printf("ok   bf16 shared expert vs plain double computation: worst rel-L2 %.2e\n", worst);
    free(routed);
    free(sh);
    w4a8moe_layer_free(R);
}

static void run_case(const char *label, fx *f, uint64_t seed)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, label);
    fx_generate(f, seed);
    CHECK(fx_write(f, dir) == 0, "%s: writing the fixture", label);
    w4a8moe_checkpoint *ck = NULL;
    w4a8moe_status st = w4a8moe_checkpoint_open(dir, &ck);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: open: %s", label, w4a8moe_last_error());
    if (st != W4A8MOE_STATUS_OK) return;
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    CHECK(info.num_experts == f->E && info.hidden == f->H && info.inter == f->I && info.group_size == f->g,
          "%s: info E %d H %lld I %lld g %d", label, info.num_experts, (long long)info.hidden,
          (long long)info.inter, info.group_size);
    CHECK(info.has_shared_expert == (f->shared != 0), "%s: shared expert presence", label);
    CHECK(info.num_moe_layers >= 1 && info.moe_layers[info.num_moe_layers - 1] == 1, "%s: layer 1 is MoE", label);
    int64_t T = 7, H = f->H;
    w4a8moe_layer_desc d;
    CHECK(w4a8moe_checkpoint_layer_desc(ck, 1, T, &d) == W4A8MOE_STATUS_OK, "%s: desc: %s", label, w4a8moe_last_error());
    d.io_dtype = W4A8MOE_DTYPE_F32;
    if (f->act_static || f->format == FX_SGLANG) {
        float in = 0, mid = 0;
        for (int e = 0; e < f->E; e++) {
            for (int p = 0; p < 2; p++) in = f->in_scale[1][e][p] > in ? f->in_scale[1][e][p] : in;
            mid = f->in_scale[1][e][2] > mid ? f->in_scale[1][e][2] : mid;
        }
        CHECK(d.act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC && d.act_scale_in == in && d.act_scale_mid == mid,
              "%s: static scales %g %g, want the max %g %g", label, (double)d.act_scale_in,
              (double)d.act_scale_mid, (double)in, (double)mid);
    }
    float *x = malloc((size_t)(T * H) * sizeof(float)), *logits = malloc((size_t)(T * f->E) * sizeof(float));
    float *got = malloc((size_t)(T * H) * sizeof(float)), *want = malloc((size_t)(T * H) * sizeof(float));
    test_rng r = {seed + 1};
    for (int64_t i = 0; i < T * H; i++) x[i] = fx_bf16_round(test_rng_uniform(&r, -2.0f, 2.0f));
    check_logits(f, ck, 1, T, x, logits);
    w4a8moe_layer_options o = {.backend = "cpu_ref"};
    w4a8moe_layer *A = NULL, *B = NULL, *C = NULL;
    st = w4a8moe_checkpoint_layer_create_desc(ck, 1, &d, &o, NULL, 0, &A);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: checkpoint layer: %s", label, w4a8moe_last_error());
    ref_weights rw;
    ref_build(f, 1, &rw);
    st = w4a8moe_layer_create(&d, &rw.w, &o, &B);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: reference layer: %s", label, w4a8moe_last_error());
    if (A && B) {
        CHECK(forward(A, T, x, logits, got, H) == 0 && forward(B, T, x, logits, want, H) == 0,
              "%s: forward: %s %s", label, w4a8moe_layer_error(A), w4a8moe_layer_error(B));
        CHECK(memcmp(got, want, (size_t)(T * H) * sizeof(float)) == 0,
              "%s: checkpoint layer differs from the reference layer (rel-L2 %.3e)", label,
              max_rel_l2(got, want, T, H));
        if (f->shared == FX_SHARED_BF16) check_bf16_shared(f, ck, &d, T, x, logits, got);
    }
    st = w4a8moe_checkpoint_layer_create_desc(ck, 1, &d, NULL, NULL, 0, &C); /* the oracle's pick */
    CHECK(st == W4A8MOE_STATUS_OK, "%s: default backend: %s", label, w4a8moe_last_error());
    if (C && A) {
        float *fast = malloc((size_t)(T * H) * sizeof(float));
        CHECK(forward(C, T, x, logits, fast, H) == 0, "%s: forward", label);
        double e = max_rel_l2(fast, got, T, H);
        CHECK(e <= 2e-3, "%s: backend %s vs cpu_ref rel-L2 %.3e", label, w4a8moe_layer_backend(C), e);
        printf("ok   %-22s cpu_ref == reference bit for bit; %s (shared: %s) rel-L2 %.2e\n", label,
               w4a8moe_layer_backend(C), f->shared ? w4a8moe_layer_shared_backend(C) : "-", e);
        free(fast);
    }
    w4a8moe_layer_free(A);
    w4a8moe_layer_free(B);
    w4a8moe_layer_free(C);
    ref_free(&rw);
    free(x);
    free(logits);
    free(got);
    free(want);
    w4a8moe_checkpoint_close(ck);
    fx_free(f);
}

/* Loader-level checks: zero-copy of pack-quantized weights, expert subsets. */
static void check_zero_copy_and_subsets(void)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/qwen3-pack", tmp_root);
    w4a8moe_err err;
    w4a8moe_ckpt *c;
    CHECK(w4a8moe_ckpt_open(dir, &c, &err) == W4A8MOE_STATUS_OK, "reopen: %s", err.msg);
    w4a8moe_ckpt_layer *l = NULL;
    CHECK(w4a8moe_ckpt_layer_load(c, 1, NULL, 1, &l, &err) == W4A8MOE_STATUS_OK, "load: %s", err.msg);
    if (l) {
        const w4a8moe_st_tensor *t = w4a8moe_ckpt_find(c, "model.layers.1.mlp.experts.2.up_proj.weight_packed");
        CHECK(l->zero_copy && t && (const void *)l->experts[2].up.packed == t->data,
              "pack-quantized weights are not used straight from the mapping");
    }
    w4a8moe_ckpt_layer_free(l);
    uint8_t want[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    CHECK(w4a8moe_ckpt_layer_load(c, 1, want, 0, &l, &err) == W4A8MOE_STATUS_OK && l->n_loaded == 1 &&
              l->experts[0].gate.packed == NULL && l->experts[1].gate.packed != NULL,
          "subset load of expert 1 only");
    w4a8moe_ckpt_layer_free(l);
    w4a8moe_ckpt_release(c);

    w4a8moe_checkpoint *ck;
    CHECK(w4a8moe_checkpoint_open(dir, &ck) == W4A8MOE_STATUS_OK, "open");
    w4a8moe_layer *L = NULL;
    int32_t bad[2] = {0, 2}, half[4] = {4, 5, 6, 7}, all[8] = {7, 6, 5, 4, 3, 2, 1, 0};
    CHECK(w4a8moe_checkpoint_layer_create(ck, 1, NULL, bad, 2, 4, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "a non-contiguous subset must be refused");
    CHECK(strstr(w4a8moe_last_error(), "contiguous") != NULL, "message: %s", w4a8moe_last_error());
    /* rank 1 of 2 needs an expert-parallel prepare/finalize: the oracle decides whether this
     * build has one (none does today: NCCL is not built), and create must agree with it */
    w4a8moe_layer_desc ep;
    CHECK(w4a8moe_checkpoint_layer_desc(ck, 1, 4, &ep) == W4A8MOE_STATUS_OK, "desc: %s",
          w4a8moe_last_error());
    ep.ep_rank = 1;
    ep.ep_size = 2;
    char report[4096] = "";
    CHECK(w4a8moe_explain(&ep, NULL, report, sizeof report, NULL) == W4A8MOE_STATUS_OK,
          "explain rank 1 of 2: %s", w4a8moe_last_error());
    int runnable = strstr(report, " selected") != NULL && !strstr(report, "no backend selected");
    w4a8moe_status st = w4a8moe_checkpoint_layer_create(ck, 1, NULL, half, 4, 4, &L);
    if (runnable)
        CHECK(st == W4A8MOE_STATUS_OK, "half subset: the oracle selects a backend, create "
              "fails: %s", w4a8moe_last_error());
    else
        CHECK(st == W4A8MOE_STATUS_UNSUPPORTED && L == NULL &&
                  strstr(report, "rejected (parallel)") != NULL,
              "half subset: no backend runs rank 1 of 2 (explain names the parallel axis), so "
              "UNSUPPORTED; got %s: %s", w4a8moe_status_str(st), w4a8moe_last_error());
    w4a8moe_layer_free(L);
    L = NULL;
    CHECK(w4a8moe_checkpoint_layer_create(ck, 1, NULL, all, 8, 4, &L) == W4A8MOE_STATUS_OK,
          "the full subset in any order: %s", w4a8moe_last_error());
    w4a8moe_layer_free(L);
    L = NULL;
    CHECK(w4a8moe_checkpoint_layer_create(ck, 0, NULL, NULL, 0, 4, &L) == W4A8MOE_STATUS_NOT_FOUND,
          "layer 0 is dense (mlp_only_layers): NOT_FOUND");
    w4a8moe_checkpoint_close(ck);
}

/* "re:" patterns (Python re.match semantics through POSIX) and the MoE layer rules. */
static void check_config_rules(void)
{
    static const struct {
        const char *pattern, *name;
        int want;
    } re[] = {
        {".*mlp\\.gate$", "model.layers.1.mlp.gate", 1},
        {".*mlp\\.gate$", "model.layers.1.mlp.gate_proj", 0},
        {"model\\.layers\\.\\d+\\.self_attn.*", "model.layers.12.self_attn.q_proj", 1},
        {"(?:.*)shared_experts?\\.", "model.layers.1.mlp.shared_experts.up_proj", 1},
        {".*experts\\.\\d{1,3}\\.down.*?", "model.layers.1.mlp.experts.7.down_proj", 1},
        {"lm_head", "xlm_head", 0},           /* anchored at the start, like re.match */
        {"lm_head", "lm_head_extra", 1},      /* ... but not at the end */
        {"[\\d.]+x", "1.2x", 1},
        {"(a{100}){100}", "a", 0},            /* refused: too costly to compile */
        {"(?=x)x", "x", 0},                   /* lookaheads have no translation */
    };
    for (size_t i = 0; i < sizeof re / sizeof re[0]; i++)
        CHECK(w4a8moe_re_match(re[i].pattern, re[i].name) == re[i].want, "re.match('%s', '%s') should be %d",
              re[i].pattern, re[i].name, re[i].want);
    static const struct {
        const char *json;
        const char *layers;
    } moe[] = {
        {"{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"num_hidden_layers\": 9, \"n_routed_experts\": 4,"
         " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"first_k_dense_replace\": 3, \"moe_layer_freq\": 2}",
         "4 6 8"},
        {"{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 8, \"num_experts\": 4,"
         " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 99]}",
         "1 5 7"},
        {"{\"model_type\": \"llama4\", \"text_config\": {\"hidden_size\": 64, \"num_hidden_layers\": 6,"
         " \"num_local_experts\": 4, \"num_experts_per_tok\": 1, \"intermediate_size\": 32, \"interleave_moe_layer_step\": 2}}",
         "1 3 5"},
        {"{\"model_type\": \"llama4\", \"text_config\": {\"hidden_size\": 64, \"num_hidden_layers\": 6,"
         " \"num_local_experts\": 4, \"num_experts_per_tok\": 1, \"intermediate_size\": 32, \"moe_layers\": [0, 4]}}",
         "0 4"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"num_hidden_layers\": 3, \"num_local_experts\": 4,"
         " \"num_experts_per_tok\": 2, \"intermediate_size\": 32}",
         "0 1 2"},
    };
    for (size_t i = 0; i < sizeof moe / sizeof moe[0]; i++) {
        w4a8moe_hf_config cfg;
        w4a8moe_err err;
        char got[128] = "";
        w4a8moe_status st = w4a8moe_hf_config_parse(moe[i].json, strlen(moe[i].json), "t", &cfg, &err);
        CHECK(st == W4A8MOE_STATUS_OK, "config %zu: %s", i, err.msg);
        if (st != W4A8MOE_STATUS_OK) continue;
        for (int32_t j = 0; j < cfg.n_moe_layers; j++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%d", j ? " " : "", cfg.moe_layers[j]);
        CHECK(strcmp(got, moe[i].layers) == 0, "config %zu: MoE layers '%s', want '%s'", i, got, moe[i].layers);
        CHECK(cfg.quantized == 0, "config %zu: no quantization_config means dense", i);
        w4a8moe_hf_config_free(&cfg);
    }
}

int main(void)
{
    uint64_t seed = test_seed();
    snprintf(tmp_root, sizeof tmp_root, "/tmp/w4a8moe-test-ckpt-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    check_config_rules();
    fx a = {.arch = "qwen3_moe", .format = FX_PACK, .H = 128, .I = 64, .E = 8, .k = 2, .g = 32};
    run_case("qwen3-pack", &a, seed);
    check_zero_copy_and_subsets();
    fx b = {.arch = "qwen3_moe", .format = FX_INT, .act_static = 1, .H = 128, .I = 64, .E = 4, .k = 2, .g = 64};
    run_case("qwen3-int-static", &b, seed + 10);
    fx c = {.arch = "deepseek_v3", .format = FX_PACK, .shared = FX_SHARED_INT4, .sharded = 1,
            .H = 128, .I = 64, .Is = 128, .E = 8, .k = 2, .g = 64};
    run_case("deepseek-pack-sharded", &c, seed + 20);
    fx d = {.arch = "deepseek_v3", .format = FX_SGLANG, .shared = FX_SHARED_FP8, .H = 256, .I = 128,
            .Is = 256, .E = 4, .k = 2, .g = 128};
    run_case("deepseek-sglang", &d, seed + 30);
    fx e = {.arch = "qwen2_moe", .format = FX_INT, .shared = FX_SHARED_BF16, .H = 64, .I = 32, .Is = 96,
            .E = 4, .k = 2, .g = 32};
    run_case("qwen2-int-bf16shared", &e, seed + 40);
    fx g = {.arch = "mixtral", .format = FX_PACK, .act_static = 1, .H = 64, .I = 128, .E = 4, .k = 2, .g = 64};
    run_case("mixtral-pack-static", &g, seed + 50);
    fx h = {.arch = "llama4", .format = FX_PACK, .shared = FX_SHARED_INT4, .H = 128, .I = 64, .Is = 64,
            .E = 4, .k = 1, .g = 32};
    run_case("llama4-pack", &h, seed + 60);
    fx i = {.arch = "qwen2_moe", .format = FX_PACK, .shared = FX_SHARED_INT4, .act_static = 1, .H = 64,
            .I = 32, .Is = 64, .E = 4, .k = 2, .g = 32};
    run_case("qwen2-pack-static-int4", &i, seed + 70);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmp_root);
    TEST_MAIN_END();
}
