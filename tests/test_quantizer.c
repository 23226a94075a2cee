/*
 * test_quantizer.c — the quantizer (src/loader/quantizer.h) against the real compressed-tensors
 * package, and its errors.
 *
 *   1. rtn-cases: single matrices quantised by compressed-tensors 0.20.0 in bf16, f16 and f32
 *      (tests/data/ct-fixture, made by tests/fixtures/make_ct_fixture.py) → ours bit for bit.
 *   2. The fixture's bf16 Qwen3-MoE checkpoint → quantize → every tensor equal to the package's
 *      pack-quantized and int-quantized output, and the same quantization_config.
 *   3. Errors: unknown architecture, missing tensor, bad group size, H not a multiple of g,
 *      already quantised source, non-empty destination, dense layer in --layers, static
 *      activations, NaN weight, wrong shape, fp8 source, no weights — each its status and the
 *      words of its message.
 * tests/test_quantize_run.c runs what the quantizer writes. No Python at test time. Fixture
 * path: tests/data (or W4A8MOE_TEST_DATA).
 */
#include "test_quantizer_util.h"

/* ---- 1. rtn-cases against compressed-tensors -------------------------------------------- */

/* One dtype and group size of rtn-cases: ours against the package's codes and scales. */
static void rtn_case(const w4a8moe_st_file *f, const char *label, int32_t g)
{
    char n[32];
    snprintf(n, sizeof n, "%s.w", label);
    const w4a8moe_st_tensor *w = w4a8moe_st_find(f, n);
    snprintf(n, sizeof n, "%s.g%d.q", label, g);
    const w4a8moe_st_tensor *q = w4a8moe_st_find(f, n);
    snprintf(n, sizeof n, "%s.g%d.scale", label, g);
    const w4a8moe_st_tensor *s = w4a8moe_st_find(f, n);
    CHECK(w && q && s && w->ndim == 2 && q->dtype == W4A8MOE_ST_I8, "%s g%d: tensors", label, g);
    if (!w || !q || !s) return;
    int64_t N = w->shape[0], K = w->shape[1];
    w4a8moe_weight_view v = {w->data, w->dtype, N, K, 0, K, 1};
    int8_t *q8 = malloc((size_t)(N * K));
    int32_t *packed = malloc((size_t)(N * K / 8) * 4);
    void *scale = malloc(s->nbytes);
    memset(q8, 0x55, (size_t)(N * K));
    memset(scale, 0xff, s->nbytes);
    memset(packed, 0xff, (size_t)(N * K / 8) * 4);
    w4a8moe_err err = {{0}};
    w4a8moe_status st = w4a8moe_rtn_quantize(&v, g, packed, q8, scale, label, &err);
    CHECK(st == W4A8MOE_STATUS_OK, "%s g%d: %s", label, g, err.msg);
    int64_t bad_q = 0, bad_p = 0;
    for (int64_t i = 0; i < N * K; i++) {
        bad_q += q8[i] != ((const int8_t *)q->data)[i];
        bad_p += w4a8moe_int4_get(packed + (i / K) * (K / 8), i % K) != q8[i];
    }
    CHECK(bad_q == 0, "%s g%d: %lld of %lld codes differ from compressed-tensors", label, g,
          (long long)bad_q, (long long)(N * K));
    CHECK(bad_p == 0, "%s g%d: packed and int8 codes disagree at %lld places", label, g,
          (long long)bad_p);
    CHECK(memcmp(scale, s->data, s->nbytes) == 0, "%s g%d: scales differ from compressed-tensors",
          label, g);
    free(q8);
    free(packed);
    free(scale);
}

static void test_rtn_cases(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%.900s/ct-fixture/rtn-cases.safetensors", data_dir());
    w4a8moe_st_file *f = NULL;
    w4a8moe_err err = {{0}};
    CHECK(w4a8moe_st_open(path, &f, &err) == W4A8MOE_STATUS_OK, "open %s: %s", path, err.msg);
    if (!f) return;
    const char *labels[3] = {"bf16", "f16", "f32"};
    for (int d = 0; d < 3; d++)
        for (int32_t g = 32; g <= 128; g *= 2) rtn_case(f, labels[d], g);
    w4a8moe_st_close(f);
}

/* ---- 2. the fixture checkpoint against compressed-tensors ------------------------------- */

/* Every tensor of a equals the one of the same name in b (dtype, shape, bytes), and the sets
 * of names are equal. */
static void compare_st(const char *pa, const char *pb, const char *what)
{
    w4a8moe_st_file *a = NULL, *b = NULL;
    w4a8moe_err err = {{0}};
    CHECK(w4a8moe_st_open(pa, &a, &err) == W4A8MOE_STATUS_OK, "%s: %s", what, err.msg);
    CHECK(w4a8moe_st_open(pb, &b, &err) == W4A8MOE_STATUS_OK, "%s: %s", what, err.msg);
    if (a && b) {
        CHECK(w4a8moe_st_count(a) == w4a8moe_st_count(b), "%s: %zu tensors, package wrote %zu",
              what, w4a8moe_st_count(a), w4a8moe_st_count(b));
        int64_t bad = 0;
        for (size_t i = 0; i < w4a8moe_st_count(a); i++) {
            const w4a8moe_st_tensor *x = w4a8moe_st_at(a, i), *y = w4a8moe_st_find(b, x->name);
            int same = y && x->dtype == y->dtype && x->ndim == y->ndim && x->nbytes == y->nbytes &&
                       memcmp(x->shape, y->shape, sizeof x->shape) == 0 &&
                       memcmp(x->data, y->data, x->nbytes) == 0;
            if (!same && bad < 5) printf("  %s: tensor %s differs or is missing\n", what, x->name);
            bad += !same;
        }
        CHECK(bad == 0, "%s: %lld tensors differ from the package's", what, (long long)bad);
    }
    w4a8moe_st_close(a);
    w4a8moe_st_close(b);
}

static int ignore_sets_equal(const json_t *a, const json_t *b)
{
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b))
        return 0;
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(a, i, x)
    {
        int found = 0;
        json_array_foreach(b, j, y) found |= json_equal(x, y);
        if (!found) return 0;
    }
    return 1;
}

static void compare_qconfig(const char *da, const char *db, const char *what)
{
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/config.json", da);
    snprintf(pb, sizeof pb, "%s/config.json", db);
    json_t *a = json_load_file(pa, 0, NULL), *b = json_load_file(pb, 0, NULL);
    CHECK(a && b, "%s: config.json unreadable", what);
    if (a && b) {
        json_t *qa = json_object_get(a, "quantization_config");
        json_t *qb = json_object_get(b, "quantization_config");
        static const char *keys[] = {"config_groups", "format", "quant_method",
                                     "quantization_status", "kv_cache_scheme",
                                     "global_compression_ratio", "sparsity_config",
                                     "transform_config"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECK(qa && qb && json_equal(json_object_get(qa, keys[i]), json_object_get(qb, keys[i])),
                  "%s: quantization_config.%s differs from the package's", what, keys[i]);
        CHECK(qa && qb && ignore_sets_equal(json_object_get(qa, "ignore"), json_object_get(qb, "ignore")),
              "%s: the ignore list differs from the package's", what);
        /* everything outside quantization_config is the source's, unchanged */
        json_object_del(a, "quantization_config");
        json_object_del(b, "quantization_config");
        CHECK(json_equal(a, b), "%s: config.json outside quantization_config changed", what);
    }
    json_decref(a);
    json_decref(b);
}

static void test_fixture_checkpoint(void)
{
    const char *fmts[2] = {"pack-dynamic", "int-dynamic"};
    for (int f = 0; f < 2; f++) {
        char src[1024], dst[1024], ref[1024], pa[2048], pb[2048];
        snprintf(src, sizeof src, "%s/ct-fixture/src-bf16", data_dir());
        snprintf(ref, sizeof ref, "%s/ct-fixture/%s", data_dir(), fmts[f]);
        tmp_path(dst, sizeof dst, fmts[f]);
        w4a8moe_quantize_opts o;
        w4a8moe_quantize_opts_init(&o);
        o.src_dir = src;
        o.dst_dir = dst;
        o.group_size = 32;
        o.format = f ? W4A8MOE_CKPT_FORMAT_INT_QUANTIZED : W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
        w4a8moe_quantize_report r;
        w4a8moe_err err = {{0}};
        w4a8moe_status st = w4a8moe_quantize_checkpoint(&o, &r, &err);
        CHECK(st == W4A8MOE_STATUS_OK, "quantize fixture (%s): %s", fmts[f], err.msg);
        if (st != W4A8MOE_STATUS_OK) continue;
        CHECK(r.matrices_quantized == 12 && r.layers_quantized == 1 && r.shards == 1 &&
                  r.ignored_linears == 13,
              "%s: report %lld matrices, %d layers, %d shards, %lld ignored", fmts[f],
              (long long)r.matrices_quantized, r.layers_quantized, r.shards,
              (long long)r.ignored_linears);
        snprintf(pa, sizeof pa, "%s/model.safetensors", dst);
        snprintf(pb, sizeof pb, "%s/model.safetensors", ref);
        compare_st(pa, pb, fmts[f]);
        compare_qconfig(dst, ref, fmts[f]);
        /* what we wrote reads back as the package's does */
        w4a8moe_hf_config c;
        st = w4a8moe_hf_config_load(dst, &c, &err);
        CHECK(st == W4A8MOE_STATUS_OK, "%s: config reads back: %s", fmts[f], err.msg);
        if (st == W4A8MOE_STATUS_OK) {
            CHECK(c.quantized && c.group_size == 32 && c.format == o.format &&
                      c.act_scheme == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC,
                  "%s: parsed back as format %d g %d", fmts[f], (int)c.format, c.group_size);
            CHECK(w4a8moe_ignore_matches(&c, "model.layers.1.mlp.gate") &&
                      !w4a8moe_ignore_matches(&c, "model.layers.1.mlp.experts.0.gate_proj"),
                  "%s: ignore list covers the router, not the experts", fmts[f]);
            w4a8moe_hf_config_free(&c);
        }
    }
}

/* ---- 4. errors ---------------------------------------------------------------------------- */

static void expect_error(const char *label, const char *src, const w4a8moe_quantize_opts *base,
                         w4a8moe_status want, const char *needle)
{
    char dst[1024], name[128];
    snprintf(name, sizeof name, "err-dst-%s", label);
    tmp_path(dst, sizeof dst, name);
    w4a8moe_quantize_opts o = *base;
    o.src_dir = src;
    if (!o.dst_dir) o.dst_dir = dst;
    w4a8moe_err err = {{0}};
    w4a8moe_status st = w4a8moe_quantize_checkpoint(&o, NULL, &err);
    CHECK(st == want && strstr(err.msg, needle), "%s: status %s (want %s), message '%s' (want '%s')",
          label, w4a8moe_status_str(st), w4a8moe_status_str(want), err.msg, needle);
}

static void error_case(const spec *s, const char *label, const w4a8moe_quantize_opts *o,
                       w4a8moe_status want, const char *needle, test_rng *r)
{
    char src[1024], name[128];
    snprintf(name, sizeof name, "err-src-%s", label);
    tmp_path(src, sizeof src, name);
    model m;
    write_model(s, src, &m, r);
    expect_error(label, src, o, want, needle);
    model_free(&m);
}

static void test_sharded_source(const spec *base, const w4a8moe_quantize_opts *o, test_rng *r);
static void test_option_errors(const spec *base, const w4a8moe_quantize_opts *o, test_rng *r);

static void test_errors(test_rng *r)
{
    const spec base = {A_QWEN2, 64, 64, 64, 4, 2, 2, 32, W4A8MOE_ST_BF16, 1, NULL, 0, 0};
    w4a8moe_quantize_opts o;
    w4a8moe_quantize_opts_init(&o);
    o.group_size = 32;
    spec s = base;
    s.drop = "model.layers.1.mlp.experts.2.up_proj.weight";
    error_case(&s, "missing", &o, W4A8MOE_STATUS_NOT_FOUND, s.drop, r);
    s = base;
    s.bad_shape_I = 32;
    error_case(&s, "shape", &o, W4A8MOE_STATUS_FORMAT_ERROR, "has shape [32, 64]", r);
    s = base;
    s.nan_at = 1;
    error_case(&s, "nan", &o, W4A8MOE_STATUS_FORMAT_ERROR, "is NaN", r);
    s = base;
    s.dt = W4A8MOE_ST_F8_E4M3;
    error_case(&s, "fp8", &o, W4A8MOE_STATUS_UNSUPPORTED, "dtype F8_E4M3", r);
    s = base;
    s.H = 96;
    w4a8moe_quantize_opts o64 = o;
    o64.group_size = 64;
    error_case(&s, "h-not-multiple", &o64, W4A8MOE_STATUS_INVALID_ARGUMENT, "hidden_size H = 96", r);

    test_sharded_source(&base, &o, r);
    test_option_errors(&base, &o, r);
}

/* A sharded source: an index entry pointing at the wrong shard is an error; without the index
 * every *.safetensors is read. */
static void test_sharded_source(const spec *base, const w4a8moe_quantize_opts *o, test_rng *r)
{
    spec s = *base;
    s.src_shards = 2;
    char sharded[1024], index[1200];
    tmp_path(sharded, sizeof sharded, "err-sharded");
    model ms;
    write_model(&s, sharded, &ms, r);
    model_free(&ms);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", sharded);
    json_t *idx = json_load_file(index, 0, NULL);
    json_t *map = json_object_get(idx, "weight_map");
    json_object_set_new(map, "model.norm.weight", json_string("part-0.safetensors"));
    json_dump_file(idx, index, 0);
    json_decref(idx);
    expect_error("index-wrong-shard", sharded, o, W4A8MOE_STATUS_FORMAT_ERROR,
                 "'model.norm.weight' is in part-0.safetensors, which does not hold it");
    unlink(index);
    {
        char dst[1024];
        tmp_path(dst, sizeof dst, "dst-globbed");
        w4a8moe_quantize_opts g = *o;
        g.src_dir = sharded;
        g.dst_dir = dst;
        w4a8moe_quantize_report rep;
        w4a8moe_err err = {{0}};
        CHECK(w4a8moe_quantize_checkpoint(&g, &rep, &err) == W4A8MOE_STATUS_OK &&
                  rep.matrices_quantized == 4 * 3 + 3,
              "no index: every *.safetensors is read: %s", err.msg);
    }
}

/* Option errors on a good checkpoint, a quantised source, an unknown architecture, no weights. */
static void test_option_errors(const spec *basep, const w4a8moe_quantize_opts *op, test_rng *r)
{
    const spec base = *basep;
    const w4a8moe_quantize_opts o = *op;
    char good[1024];
    tmp_path(good, sizeof good, "err-good");
    model m;
    write_model(&base, good, &m, r);
    model_free(&m);
    w4a8moe_quantize_opts x = o;
    x.group_size = 48;
    expect_error("group-48", good, &x, W4A8MOE_STATUS_INVALID_ARGUMENT, "32, 64 or 128");
    int32_t dense = 0, far = 7;
    x = o;
    x.layers = &dense;
    x.n_layers = 1;
    expect_error("dense-layer", good, &x, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer 0 is a dense layer");
    x.layers = &far;
    expect_error("far-layer", good, &x, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer 7 is outside");
    x = o;
    x.act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    expect_error("static", good, &x, W4A8MOE_STATUS_UNSUPPORTED, "--act static");
    x = o;
    x.format = W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8;
    expect_error("format", good, &x, W4A8MOE_STATUS_INVALID_ARGUMENT, "--format");
    x = o;
    x.dst_dir = good; /* the destination already holds a checkpoint */
    expect_error("dst-busy", good, &x, W4A8MOE_STATUS_INVALID_ARGUMENT, "already holds a checkpoint");

    char path[2048], dir[1024];
    snprintf(path, sizeof path, "%s/ct-fixture/pack-dynamic", data_dir());
    expect_error("quantised", path, &o, W4A8MOE_STATUS_INVALID_ARGUMENT, "already quantised");
    tmp_path(dir, sizeof dir, "err-gpt2");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", "
                     "\"hidden_size\": 64}\n");
    expect_error("unknown-arch", dir, &o, W4A8MOE_STATUS_UNSUPPORTED, "gpt2");
    tmp_path(dir, sizeof dir, "err-noweights");
    mkdir(dir, 0755);
    char cfg[2048];
    config_json(&base, cfg, sizeof cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, cfg);
    expect_error("no-weights", dir, &o, W4A8MOE_STATUS_NOT_FOUND, "nor any *.safetensors");
}

int main(void)
{
    test_rng rng = {test_seed()};
    if (tq_tmp_init() != 0) return 1;
    test_rtn_cases();
    test_fixture_checkpoint();
    test_errors(&rng);
    rm_tree(tmp_root);
    TEST_MAIN_END();
}
