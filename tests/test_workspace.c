/*
 * test_workspace.c — shared workspaces (include/w4a8moe.h, "Workspaces") on the CPU backends:
 *   - a layer on a workspace smaller than its max_tokens runs T in chunks, and its output is
 *     bit-identical (memcmp) to the same layer with a workspace of its own, for every routing
 *     kind (ids given, softmax top-k, DeepSeek grouped sigmoid with a score bias, Llama-4
 *     sigmoid top-1 with the weight on the input), with int4 (gated) and bf16 shared experts,
 *     on `cpu` and `cpu_ref`;
 *   - several layers of different shapes take turns in one workspace, before and after the
 *     caller frees its handle (the layers keep it alive);
 *   - errors: a workspace too small for one token, one on another device, NULL arguments, bad
 *     ids named by their token in the whole batch, T above max_tokens;
 *   - the memory reports (estimate, layer, chunk size) and the options struct of API version 3.
 */
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <stddef.h>
#include <string.h>

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static void base_desc(w4a8moe_layer_desc *d, int64_t H, int64_t I, int E, int k, int g)
{
    w4a8moe_layer_desc_init(d);
    d->hidden = H;
    d->inter = I;
    d->num_experts = E;
    d->top_k = k;
    d->group_size = g;
}

/* What one case builds: weights, an optional shared expert, inputs and routing for T tokens. */
typedef struct wcase {
    w4a8moe_layer_desc d;
    w4a8moe_synth_weights sw, ssw; /* routed, shared int4 (E = 1) */
    w4a8moe_shared_expert se;
    uint16_t *dense[3], *sgate;    /* bf16 shared expert, gate weight */
    float *bias;
    int64_t T;
    uint16_t *x;
    int32_t *ids;
    float *wts, *logits;
} wcase;

enum { SH_NONE, SH_INT4_GATED, SH_BF16 };
enum { RT_IDS, RT_SOFTMAX, RT_GROUPED, RT_TOP1 };

static uint16_t *bf16_random(int64_t n, float amp, w4a8moe_synth_rng *r)
{
    uint16_t *p = malloc((size_t)n * 2);
    w4a8moe_synth_input(p, W4A8MOE_DTYPE_BF16, 1, n, amp, r);
    return p;
}

static void case_make(wcase *c, int routing, int shared, int64_t T, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    w4a8moe_synth_rng r = {seed};
    int E = routing == RT_TOP1 ? 4 : 8, k = routing == RT_TOP1 ? 1 : 3;
    base_desc(&c->d, 128, 64, E, k, 32);
    c->d.max_tokens = T;
    if (routing == RT_SOFTMAX) c->d.routing.renormalize = 1;
    if (routing == RT_GROUPED) {
        c->d.routing.kind = W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK;
        c->d.routing.n_group = 4;
        c->d.routing.topk_group = 2;
        c->d.routing.renormalize = 1;
        c->d.routing.routed_scaling_factor = 2.5f;
        c->bias = malloc((size_t)E * sizeof(float));
        for (int e = 0; e < E; e++) c->bias[e] = w4a8moe_synth_uniform(&r, -0.1f, 0.1f);
        c->d.routing.score_bias = c->bias;
    }
    if (routing == RT_TOP1) {
        c->d.routing.kind = W4A8MOE_ROUTING_SIGMOID_TOP1;
        c->d.router_weight_on_input = 1;
    }
    if (w4a8moe_synth_weights_make(&c->sw, &c->d, W4A8MOE_DTYPE_BF16, 1, 0, w4a8moe_synth_next(&r)))
        abort();
    int64_t H = c->d.hidden, Is = 96;
    c->se.struct_size = sizeof c->se;
    c->se.inter = Is;
    if (shared == SH_INT4_GATED) {
        w4a8moe_layer_desc sd;
        base_desc(&sd, H, Is, 1, 1, 32);
        sd.max_tokens = 1;
        if (w4a8moe_synth_weights_make(&c->ssw, &sd, W4A8MOE_DTYPE_BF16, 0, 0, w4a8moe_synth_next(&r)))
            abort();
        c->se.weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
        c->se.act_scheme = W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
        c->se.group_size = 32;
        c->se.scale_dtype = W4A8MOE_DTYPE_BF16;
        c->se.int4 = c->ssw.experts[0];
        c->sgate = bf16_random(H, 0.1f, &r);
        c->se.gate_weight = c->sgate;
        c->se.gate_weight_dtype = W4A8MOE_DTYPE_BF16;
    } else if (shared == SH_BF16) {
        c->se.weight_scheme = W4A8MOE_WEIGHT_BF16;
        c->se.act_scheme = W4A8MOE_ACT_BF16;
        int64_t rows[3] = {Is, Is, H}, cols[3] = {H, H, Is};
        w4a8moe_dense_matrix *m[3] = {&c->se.gate, &c->se.up, &c->se.down};
        for (int i = 0; i < 3; i++) {
            c->dense[i] = bf16_random(rows[i] * cols[i], 0.05f, &r);
            *m[i] = (w4a8moe_dense_matrix){c->dense[i], W4A8MOE_DTYPE_BF16, rows[i], cols[i]};
        }
    }
    if (shared != SH_NONE) c->sw.weights.shared = &c->se;
    c->T = T;
    c->x = malloc((size_t)(T * H) * 2);
    w4a8moe_synth_input(c->x, W4A8MOE_DTYPE_BF16, T, H, 1.0f, &r);
    if (routing == RT_IDS) {
        c->ids = malloc((size_t)(T * k) * 4);
        c->wts = malloc((size_t)(T * k) * 4);
        w4a8moe_synth_routing(c->ids, c->wts, T, E, k, &r);
        for (int64_t t = 0; t < T; t += 7) c->ids[t * k + k - 1] = -1; /* some empty slots */
    } else {
        c->logits = malloc((size_t)(T * E) * 4);
        for (int64_t i = 0; i < T * E; i++) c->logits[i] = w4a8moe_synth_uniform(&r, -3.0f, 3.0f);
    }
}

static void case_free(wcase *c)
{
    w4a8moe_synth_weights_free(&c->sw);
    if (c->ssw.pool) w4a8moe_synth_weights_free(&c->ssw);
    for (int i = 0; i < 3; i++) free(c->dense[i]);
    free(c->sgate);
    free(c->bias);
    free(c->x);
    free(c->ids);
    free(c->wts);
    free(c->logits);
}

static w4a8moe_status case_forward(const wcase *c, w4a8moe_layer *L, int64_t T, uint16_t *out)
{
    w4a8moe_routing_input ri = {sizeof ri, c->ids, c->wts, c->logits};
    memset(out, 0xff, (size_t)(T * c->d.hidden) * 2); /* NaN: an unwritten row shows */
    return w4a8moe_layer_forward(L, T, c->x, &ri, out, NULL);
}

/* The case's layer on backend `be`, with its own workspace or in ws. */
static w4a8moe_layer *case_layer(const wcase *c, const char *be, w4a8moe_workspace *ws)
{
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.backend = be;
    o.num_threads = 2;
    o.workspace = ws;
    w4a8moe_layer *L = NULL;
    w4a8moe_status st = w4a8moe_layer_create(&c->d, &c->sw.weights, &o, &L);
    CHECK(st == W4A8MOE_STATUS_OK, "create (%s, %s workspace): %s", be, ws ? "shared" : "own",
          w4a8moe_last_error());
    return L;
}

/* ---- chunked forwards are bit-identical to one forward ---- */

static void test_chunks_identical(test_rng *r)
{
    static const char *const rname[] = {"ids", "softmax", "grouped", "top1"};
    static const char *const sname[] = {"none", "int4 gated", "bf16"};
    static const char *const backends[] = {"cpu", "cpu_ref"};
    for (int rt = RT_IDS; rt <= RT_TOP1; rt++)
        for (int sh = SH_NONE; sh <= SH_BF16; sh++)
            for (int b = 0; b < 2; b++) {
                const int64_t T = 37, chunk = 5;
                wcase c;
                case_make(&c, rt, sh, T, test_rng_next(r));
                w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
                o.backend = backends[b];
                o.num_threads = 2;
                w4a8moe_memory_info mi;
                CHECK(w4a8moe_memory_estimate(&c.d, sh ? &c.se : NULL, &o, chunk, &mi) ==
                          W4A8MOE_STATUS_OK,
                      "estimate: %s", w4a8moe_last_error());
                w4a8moe_workspace *ws = NULL;
                CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, mi.workspace_bytes, &ws) ==
                          W4A8MOE_STATUS_OK,
                      "workspace: %s", w4a8moe_last_error());
                w4a8moe_layer *own = case_layer(&c, backends[b], NULL);
                w4a8moe_layer *shd = case_layer(&c, backends[b], ws);
                w4a8moe_workspace_free(ws); /* the layer keeps it */
                if (!own || !shd) {
                    w4a8moe_layer_free(own);
                    w4a8moe_layer_free(shd);
                    case_free(&c);
                    continue;
                }
                w4a8moe_memory_info lm;
                CHECK(w4a8moe_layer_memory(shd, 0, &lm) == W4A8MOE_STATUS_OK && lm.chunk_tokens == chunk &&
                          lm.workspace_bytes == mi.workspace_bytes && lm.weight_bytes == mi.weight_bytes,
                      "routing %s, shared %s, %s: chunk %lld (want %lld), workspace %llu vs estimate "
                      "%llu, weights %llu vs %llu",
                      rname[rt], sname[sh], backends[b], (long long)lm.chunk_tokens, (long long)chunk,
                      (unsigned long long)lm.workspace_bytes, (unsigned long long)mi.workspace_bytes,
                      (unsigned long long)lm.weight_bytes, (unsigned long long)mi.weight_bytes);
                size_t bytes = (size_t)(T * c.d.hidden) * 2;
                uint16_t *a = malloc(bytes), *bb = malloc(bytes);
                w4a8moe_status s1 = case_forward(&c, own, T, a), s2 = case_forward(&c, shd, T, bb);
                CHECK(s1 == W4A8MOE_STATUS_OK && s2 == W4A8MOE_STATUS_OK && memcmp(a, bb, bytes) == 0,
                      "routing %s, shared %s, %s: T = %lld in chunks of %lld differs from one "
                      "forward (%s / %s)",
                      rname[rt], sname[sh], backends[b], (long long)T, (long long)chunk,
                      w4a8moe_layer_error(own), w4a8moe_layer_error(shd));
                /* T within one chunk, and exactly a multiple of it */
                CHECK(case_forward(&c, own, 10, a) == W4A8MOE_STATUS_OK &&
                          case_forward(&c, shd, 10, bb) == W4A8MOE_STATUS_OK &&
                          memcmp(a, bb, (size_t)(10 * c.d.hidden) * 2) == 0,
                      "routing %s, shared %s, %s: T = 10 (two whole chunks)", rname[rt], sname[sh],
                      backends[b]);
                free(a);
                free(bb);
                w4a8moe_layer_free(own);
                w4a8moe_layer_free(shd);
                case_free(&c);
            }
}

/* ---- one workspace, several layers of different shapes ---- */

static void test_many_layers(test_rng *r)
{
    enum { NL = 3 };
    wcase c[NL];
    case_make(&c[0], RT_IDS, SH_NONE, 29, test_rng_next(r));
    case_make(&c[1], RT_SOFTMAX, SH_INT4_GATED, 29, test_rng_next(r));
    case_make(&c[2], RT_GROUPED, SH_NONE, 29, test_rng_next(r));
    /* a different shape for the last: rebuild its weights at H = 256, I = 128 */
    w4a8moe_synth_weights_free(&c[2].sw);
    c[2].d.hidden = 256;
    c[2].d.inter = 128;
    free(c[2].x);
    c[2].x = malloc((size_t)(29 * 256) * 2);
    w4a8moe_synth_rng sr = {test_rng_next(r)};
    w4a8moe_synth_input(c[2].x, W4A8MOE_DTYPE_BF16, 29, 256, 1.0f, &sr);
    if (w4a8moe_synth_weights_make(&c[2].sw, &c[2].d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r))) abort();
    /* sized for 4 tokens of the largest layer: the smaller ones get larger chunks */
    size_t bytes = 0;
    w4a8moe_layer_options eo = W4A8MOE_INIT(w4a8moe_layer_options);
    eo.backend = "cpu";
    eo.num_threads = 2; /* as case_layer: the CPU scratch grows with the threads */
    for (int i = 0; i < NL; i++) {
        w4a8moe_memory_info mi;
        CHECK(w4a8moe_memory_estimate(&c[i].d, c[i].sw.weights.shared, &eo, 4, &mi) == W4A8MOE_STATUS_OK,
              "estimate %d: %s", i, w4a8moe_last_error());
        if (mi.workspace_bytes > bytes) bytes = mi.workspace_bytes;
    }
    w4a8moe_workspace *ws = NULL;
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, bytes, &ws) == W4A8MOE_STATUS_OK &&
              w4a8moe_workspace_size(ws) == bytes,
          "workspace: %s", w4a8moe_last_error());
    w4a8moe_layer *own[NL], *shd[NL];
    int64_t chunks[NL];
    for (int i = 0; i < NL; i++) {
        own[i] = case_layer(&c[i], "cpu", NULL);
        shd[i] = case_layer(&c[i], "cpu", ws);
        w4a8moe_memory_info lm = {0};
        w4a8moe_layer_memory(shd[i], 0, &lm);
        chunks[i] = lm.chunk_tokens;
        CHECK(lm.chunk_tokens >= 4 && lm.workspace_bytes <= bytes,
              "layer %d: chunk %lld of a workspace for 4 tokens of the largest", i,
              (long long)lm.chunk_tokens);
    }
    int64_t lo = chunks[0], hi = chunks[0];
    for (int i = 1; i < NL; i++) {
        lo = chunks[i] < lo ? chunks[i] : lo;
        hi = chunks[i] > hi ? chunks[i] : hi;
    }
    CHECK(lo == 4 && hi > lo, "the largest layer runs in chunks of 4 (%lld), smaller ones in larger "
          "chunks (up to %lld)", (long long)lo, (long long)hi);
    w4a8moe_workspace_free(ws);
    /* interleaved, twice: each forward overwrites what the previous one left in the workspace */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < NL; i++) {
            size_t n = (size_t)(29 * c[i].d.hidden) * 2;
            uint16_t *a = malloc(n), *b = malloc(n);
            CHECK(case_forward(&c[i], own[i], 29, a) == W4A8MOE_STATUS_OK &&
                      case_forward(&c[i], shd[i], 29, b) == W4A8MOE_STATUS_OK &&
                      memcmp(a, b, n) == 0,
                  "pass %d layer %d: shared-workspace output differs (%s)", pass, i,
                  w4a8moe_layer_error(shd[i]));
            free(a);
            free(b);
        }
    for (int i = 0; i < NL; i++) {
        w4a8moe_layer_free(own[i]);
        w4a8moe_layer_free(shd[i]);
        case_free(&c[i]);
    }
}

/* ---- errors ---- */

static void test_errors(test_rng *r)
{
    wcase c;
    case_make(&c, RT_IDS, SH_INT4_GATED, 20, test_rng_next(r));
    w4a8moe_workspace *ws = (w4a8moe_workspace *)&c;
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, 1024, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "NULL out");
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, 0, &ws) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              ws == NULL && has(w4a8moe_last_error(), "0 bytes"),
          "0 bytes: '%s'", w4a8moe_last_error());
    CHECK(w4a8moe_workspace_create((w4a8moe_device_kind)7, 0, 64, &ws) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "bad device kind");
    w4a8moe_workspace_free(NULL);
    CHECK(w4a8moe_workspace_size(NULL) == 0, "size of NULL");
    w4a8moe_memory_info mi;
    CHECK(w4a8moe_memory_estimate(NULL, NULL, NULL, 4, &mi) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              w4a8moe_memory_estimate(&c.d, NULL, NULL, 4, NULL) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              w4a8moe_memory_estimate(&c.d, NULL, NULL, 0, &mi) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "estimate: NULL arguments and 0 tokens");
    CHECK(w4a8moe_layer_memory(NULL, 0, &mi) == W4A8MOE_STATUS_INVALID_ARGUMENT, "layer_memory(NULL)");

    /* too small for one token: refused, saying how much one token needs */
    CHECK(w4a8moe_memory_estimate(&c.d, &c.se, NULL, 1, &mi) == W4A8MOE_STATUS_OK, "estimate");
    CHECK(mi.workspace_min_bytes == mi.workspace_bytes && mi.tokens == 1, "min = one token's bytes");
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, mi.workspace_bytes - 1, &ws) == W4A8MOE_STATUS_OK,
          "workspace");
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.workspace = ws;
    w4a8moe_layer *L = (w4a8moe_layer *)&c;
    char need[32];
    snprintf(need, sizeof need, "needs %llu bytes", (unsigned long long)mi.workspace_bytes);
    CHECK(w4a8moe_layer_create(&c.d, &c.sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              L == NULL && has(w4a8moe_last_error(), "too small for one token") &&
              has(w4a8moe_last_error(), need),
          "a workspace 1 byte short of one token (with the shared expert): '%s'", w4a8moe_last_error());
    w4a8moe_workspace_free(ws);
    /* exactly one token: runs, in chunks of 1 */
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, mi.workspace_bytes, &ws) == W4A8MOE_STATUS_OK,
          "workspace");
    o.workspace = ws;
    CHECK(w4a8moe_layer_create(&c.d, &c.sw.weights, &o, &L) == W4A8MOE_STATUS_OK, "one-token workspace: %s",
          w4a8moe_last_error());
    w4a8moe_workspace_free(ws);
    if (L) {
        w4a8moe_memory_info lm;
        CHECK(w4a8moe_layer_memory(L, 0, &lm) == W4A8MOE_STATUS_OK && lm.chunk_tokens == 1, "chunk of 1");
        uint16_t *out = malloc((size_t)(21 * c.d.hidden) * 2);
        CHECK(case_forward(&c, L, 20, out) == W4A8MOE_STATUS_OK, "T = 20 in chunks of 1: %s",
              w4a8moe_layer_error(L));
        /* a bad id in token 13 is named as token 13 of the batch, not token 0 of its chunk */
        int32_t keep = c.ids[13 * c.d.top_k];
        c.ids[13 * c.d.top_k] = c.d.num_experts;
        CHECK(case_forward(&c, L, 20, out) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
                  has(w4a8moe_layer_error(L), "token 13"),
              "bad id across chunks: '%s'", w4a8moe_layer_error(L));
        c.ids[13 * c.d.top_k] = keep;
        CHECK(case_forward(&c, L, 21, out) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
                  has(w4a8moe_layer_error(L), "max_tokens = 20"),
              "T above max_tokens is still refused: '%s'", w4a8moe_layer_error(L));
        free(out);
        w4a8moe_layer_free(L);
    }

    /* a workspace on another device */
    w4a8moe_workspace *cws = NULL;
    w4a8moe_status cst = w4a8moe_workspace_create(W4A8MOE_DEVICE_CUDA, 0, 1 << 20, &cws);
    CHECK(cst == W4A8MOE_STATUS_OK || cst == W4A8MOE_STATUS_UNSUPPORTED ||
              cst == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "a CUDA workspace: created, or refused with a reason: %d '%s'", (int)cst, w4a8moe_last_error());
    if (cst == W4A8MOE_STATUS_OK) {
        o.workspace = cws;
        CHECK(w4a8moe_layer_create(&c.d, &c.sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
                  has(w4a8moe_last_error(), "workspace lives on cuda:0, the layer on cpu"),
              "CPU layer, CUDA workspace: '%s'", w4a8moe_last_error());
        w4a8moe_workspace_free(cws);
    }
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, 1 << 20, &ws) == W4A8MOE_STATUS_OK, "workspace");
    o.workspace = ws;
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    w4a8moe_status st = w4a8moe_layer_create(&c.d, &c.sw.weights, &o, &L);
    CHECK((st == W4A8MOE_STATUS_INVALID_ARGUMENT && has(w4a8moe_last_error(), "workspace lives on cpu, the layer on cuda:0")) ||
              (st == W4A8MOE_STATUS_UNSUPPORTED && has(w4a8moe_last_error(), "no CUDA support")),
          "CUDA layer, CPU workspace: %d '%s'", (int)st, w4a8moe_last_error());
    w4a8moe_workspace_free(ws);
    case_free(&c);
}

/* ---- struct ABI: API version 3 options (without `workspace`), older memory_info ---- */

static void test_abi(test_rng *r)
{
    wcase c;
    case_make(&c, RT_SOFTMAX, SH_NONE, 8, test_rng_next(r));
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.num_threads = 1;
    size_t v3 = offsetof(w4a8moe_layer_options, borrow_weights) + sizeof(int32_t);
    unsigned char *old = malloc(v3);
    memcpy(old, &o, v3);
    memcpy(old, &v3, sizeof v3);
    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&c.d, &c.sw.weights, (w4a8moe_layer_options *)old, &L) == W4A8MOE_STATUS_OK,
          "options of API version 3: %s", w4a8moe_last_error());
    w4a8moe_memory_info mi;
    CHECK(L && w4a8moe_layer_memory(L, 0, &mi) == W4A8MOE_STATUS_OK && mi.chunk_tokens == 8,
          "without a workspace the chunk is max_tokens");
    /* a caller whose memory_info ends after weight_bytes gets no more bytes than that */
    unsigned char buf[sizeof(w4a8moe_memory_info) + 8];
    memset(buf, 0xab, sizeof buf);
    size_t cut = offsetof(w4a8moe_memory_info, workspace_bytes);
    CHECK(w4a8moe_layer_memory_sized(L, 3, (w4a8moe_memory_info *)buf, cut) == W4A8MOE_STATUS_OK, "sized");
    int clean = 1;
    for (size_t i = cut; i < sizeof buf; i++) clean &= buf[i] == 0xab;
    CHECK(clean, "layer_memory_sized wrote past the caller's struct");
    free(old);
    w4a8moe_layer_free(L);
    case_free(&c);
}

int main(void)
{
    test_rng r = {test_seed()};
    test_chunks_identical(&r);
    test_many_layers(&r);
    test_errors(&r);
    test_abi(&r);
    TEST_MAIN_END();
}
