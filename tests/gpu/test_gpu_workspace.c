/*
 * test_gpu_workspace.c — shared workspaces on a CUDA device (include/w4a8moe.h, "Workspaces"):
 *   - for each GPU experts backend this card runs, a layer in a workspace holding a few tokens
 *     runs T in chunks; its output must be within the GPU tolerance of cpu_ref (gpu_harness.h)
 *     and is compared with the same layer in a workspace of its own (bit-identical is expected,
 *     since every step is per token; a difference is reported with its rows);
 *   - ids routing and router logits; three layers take turns in one workspace;
 *   - cudaMemGetInfo: creating layers in a shared workspace allocates no workspace per layer
 *     (the device's used memory grows by less than one own workspace per layer);
 *   - errors: a host workspace for a CUDA layer, a CUDA workspace too small for one token, and
 *     a bad expert id in a later chunk of a chunked forward, whose message must name the token
 *     of the caller's batch (not of its chunk).
 * Without a CUDA device it checks that a CUDA workspace is refused with a reason, and passes.
 */
#include "flip_explain.h"
#include "gpu_harness.h"
#include "workspace_case.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static w4a8moe_layer *make(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                           w4a8moe_device_kind dev, const char *be, w4a8moe_workspace *ws)
{
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.device_kind = dev;
    o.backend = be;
    o.workspace = ws;
    w4a8moe_layer *L = NULL;
    w4a8moe_status st = w4a8moe_layer_create(d, w, &o, &L);
    CHECK(st == W4A8MOE_STATUS_OK, "create %s (%s): %s", be, ws ? "shared workspace" : "own", w4a8moe_last_error());
    return L;
}

/* Whether row t of a forward out of tolerance (ref, got: [T, H]) is one flipped requantised
 * code (flip_explain.h); the ids and weights are the host router's when it ran from logits. */
static void explain_row(const w4a8moe_layer_desc *d, const w4a8moe_synth_weights *sw, const gh_inputs *in,
                        int64_t T, int64_t t, const float *ref, const float *got)
{
    const size_t nk = (size_t)(T * d->top_k);
    int32_t *ids = malloc(nk * 4);
    float *wts = malloc(nk * 4);
    int ok = ids && wts;
    if (ok && in->logits) {
        ok = w4a8moe_route(d, T, in->logits, ids, wts) == W4A8MOE_STATUS_OK;
    } else if (ok) {
        memcpy(ids, in->ids, nk * 4);
        memcpy(wts, in->weights, nk * 4);
    }
    if (ok) {
        flip_explain fe;
        flip_explain_row(d, sw->experts, sw->weights.scale_dtype, in->x, t, ids, wts, ref + t * d->hidden,
                         got + t * d->hidden, FLIP_NEAR, &fe);
        flip_explain_print(stdout, t, &fe);
    }
    free(ids);
    free(wts);
}

/* A CUDA workspace that holds `chunk` tokens of layer d on backend be (NULL: the oracle's). */
static w4a8moe_workspace *chunk_workspace(const w4a8moe_layer_desc *d, const char *be, int64_t chunk)
{
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    o.backend = be;
    w4a8moe_memory_info mi;
    w4a8moe_workspace *ws = NULL;
    CHECK(w4a8moe_memory_estimate(d, NULL, &o, chunk, &mi) == W4A8MOE_STATUS_OK, "estimate: %s",
          w4a8moe_last_error());
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CUDA, 0, mi.workspace_bytes, &ws) == W4A8MOE_STATUS_OK,
          "workspace: %s", w4a8moe_last_error());
    return ws;
}

static void run_backend(const char *be, int mode, uint64_t seed)
{
    w4a8moe_layer_desc d = workspace_case_shape();
    /* k 4 over 32 experts, chunks of 7 tokens (28 rows: one-fragment tiles on both backends).
     * cuda_sm89's whole forward of 200 tokens (25 rows an expert) changes its tile (split-K 2
     * for the whole, 4 for the chunks) and must still give the same bits; cuda_sm90's of 48
     * (6 rows an expert) stays on its small-batch kernel (above 6 rows an expert its wgmma
     * kernels sum differently: docs/numerics.md, batch invariance) */
    const int64_t T = strcmp(be, "cuda_sm90") == 0 ? 48 : 200;
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) abort();
    w4a8moe_synth_rng rng = {seed ^ 0x5eed};
    gh_inputs in;
    gh_dev g;
    if (gh_inputs_make(&in, &d, T, mode, &rng) || gh_dev_make(&g, &d, &in)) abort();
    w4a8moe_workspace *ws = chunk_workspace(&d, be, 7);
    w4a8moe_layer *own = make(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, be, NULL);
    w4a8moe_layer *shd = make(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, be, ws);
    w4a8moe_layer *ref = make(&d, &sw.weights, W4A8MOE_DEVICE_CPU, "cpu_ref", NULL);
    w4a8moe_workspace_free(ws);
    if (own && shd && ref) {
        w4a8moe_memory_info lm;
        w4a8moe_layer_memory(shd, 0, &lm);
        CHECK(lm.chunk_tokens == 7, "%s: chunk %lld, want 7", be, (long long)lm.chunk_tokens);
        size_t n = (size_t)(T * d.hidden);
        float *a = malloc(n * 4), *b = malloc(n * 4), *r = malloc(n * 4);
        void *hout = malloc(n * 2);
        w4a8moe_routing_input dr = gh_routing(g.ids, g.weights, g.logits);
        w4a8moe_routing_input hr = gh_routing(in.ids, in.weights, in.logits);
        int ok = w4a8moe_layer_forward(own, T, g.x, &dr, g.out, NULL) == W4A8MOE_STATUS_OK &&
                 w4a8moe_layer_check(own, NULL) == W4A8MOE_STATUS_OK && gh_fetch(&d, T, g.out, a) == 0;
        cudaMemset(g.out, 0xff, n * 2);
        ok = ok && w4a8moe_layer_forward(shd, T, g.x, &dr, g.out, NULL) == W4A8MOE_STATUS_OK &&
             w4a8moe_layer_check(shd, NULL) == W4A8MOE_STATUS_OK && gh_fetch(&d, T, g.out, b) == 0;
        ok = ok && w4a8moe_layer_forward(ref, T, in.x, &hr, hout, NULL) == W4A8MOE_STATUS_OK;
        CHECK(ok, "%s: forwards: %s / %s / %s", be, w4a8moe_layer_error(own), w4a8moe_layer_error(shd),
              w4a8moe_layer_error(ref));
        if (ok) {
            for (size_t i = 0; i < n; i++) r[i] = gh_io_get(hout, d.io_dtype, (int64_t)i);
            gh_stats st = gh_compare_stats(r, b, T, d.hidden);
            if (!gh_within_tol(&st, be) && st.worst_row >= 0) explain_row(&d, &sw, &in, T, st.worst_row, r, b);
            CHECK(gh_within_tol(&st, be), "%s mode %d: chunked forward vs cpu_ref out of tolerance: worst row "
                  "rel-L2 %.3g, mean %.3g, %lld NaN rows (GPU tolerance: row %.0e, mean %.0e; "
                  "the line above says whether one flipped code explains it; dev/kernels/tol_replay.c "
                  "replays the case)", be, mode, st.worst, st.mean,
                  (long long)st.nan_bad, GH_TOL_ROW, GH_TOL_MEAN);
            int64_t diff = 0;
            for (int64_t t = 0; t < T; t++)
                diff += memcmp(a + t * d.hidden, b + t * d.hidden, (size_t)d.hidden * 4) != 0;
            printf("%s mode %d: chunks of 7 vs one forward of %lld: %lld rows differ%s\n", be, mode,
                   (long long)T, (long long)diff, diff ? " (within tolerance, see above)" : " (bit-identical)");
            CHECK(diff == 0, "%s mode %d: %lld rows of the chunked forward differ from one forward", be, mode,
                  (long long)diff);
        }
        free(a); free(b); free(r); free(hout);
    }
    w4a8moe_layer_free(own);
    w4a8moe_layer_free(shd);
    w4a8moe_layer_free(ref);
    gh_dev_free(&g);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
}

/* Layers in one workspace allocate no workspace each. */
static void memory_shared(uint64_t seed)
{
    enum { NL = 4 };
    w4a8moe_layer_desc d = workspace_case_shape();
    d.max_tokens = 16384;
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) abort();
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    w4a8moe_memory_info mi;
    CHECK(w4a8moe_memory_estimate(&d, NULL, &o, 16384, &mi) == W4A8MOE_STATUS_OK, "estimate");
    w4a8moe_workspace *ws = NULL;
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CUDA, 0, 64u << 20, &ws) == W4A8MOE_STATUS_OK, "workspace");
    size_t f0, f1, tot;
    cudaMemGetInfo(&f0, &tot);
    w4a8moe_layer *L[NL];
    for (int i = 0; i < NL; i++) L[i] = make(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, NULL, ws);
    cudaMemGetInfo(&f1, &tot);
    double grew = (double)(f0 - f1), bound = NL * ((double)mi.weight_bytes * 1.05 + (4 << 20));
    printf("memory: %d layers in a 64 MiB workspace: device used +%.1f MiB (weights %.1f MiB each; "
           "their own workspaces would be %.1f MiB each)\n", NL, grew / (1 << 20),
           (double)mi.weight_bytes / (1 << 20), (double)mi.workspace_bytes / (1 << 20));
    CHECK(grew <= bound, "layers in a shared workspace grew the device's use by %.1f MiB > %.1f", grew / (1 << 20),
          bound / (1 << 20));
    for (int i = 0; i < NL; i++) w4a8moe_layer_free(L[i]);
    w4a8moe_workspace_free(ws);
    w4a8moe_synth_weights_free(&sw);
}

static void errors(uint64_t seed)
{
    w4a8moe_layer_desc d = workspace_case_shape();
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) abort();
    w4a8moe_workspace *hws = NULL, *cws = NULL;
    w4a8moe_workspace_create(W4A8MOE_DEVICE_CPU, 0, 64u << 20, &hws);
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    o.workspace = hws;
    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              strstr(w4a8moe_last_error(), "workspace lives on cpu, the layer on cuda:0"),
          "host workspace for a CUDA layer: '%s'", w4a8moe_last_error());
    CHECK(w4a8moe_workspace_create(W4A8MOE_DEVICE_CUDA, 0, 256, &cws) == W4A8MOE_STATUS_OK, "tiny workspace");
    o.workspace = cws;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              strstr(w4a8moe_last_error(), "too small for one token"),
          "256-byte CUDA workspace: '%s'", w4a8moe_last_error());
    w4a8moe_workspace_free(hws);
    w4a8moe_workspace_free(cws);
    w4a8moe_synth_weights_free(&sw);
}

/* A bad id at token 23 of a forward of 30 tokens run in chunks of 7 (the fourth chunk, where
 * it is token 2): layer_check names token 23. */
static void chunk_bad_id(uint64_t seed)
{
    w4a8moe_layer_desc d = workspace_case_shape();
    const int64_t T = 30, bad_token = 23;
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) abort();
    w4a8moe_synth_rng rng = {seed ^ 0xbad};
    gh_inputs in;
    gh_dev g;
    if (gh_inputs_make(&in, &d, T, GH_RANDOM, &rng)) abort();
    in.ids[bad_token * d.top_k + 1] = d.num_experts; /* out of range */
    if (gh_dev_make(&g, &d, &in)) abort();
    w4a8moe_workspace *ws = chunk_workspace(&d, NULL, 7);
    w4a8moe_layer *L = make(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, NULL, ws);
    if (L) {
        w4a8moe_routing_input dr = gh_routing(g.ids, g.weights, NULL);
        w4a8moe_status st = w4a8moe_layer_forward(L, T, g.x, &dr, g.out, NULL);
        if (st == W4A8MOE_STATUS_OK) st = w4a8moe_layer_check(L, NULL);
        const char *msg = w4a8moe_layer_error(L);
        printf("bad id at token 23 of a chunked forward: %s\n", msg);
        CHECK(st == W4A8MOE_STATUS_INVALID_ARGUMENT && strstr(msg, "token 23:"),
              "chunked forward with a bad id at token 23: status %d, '%s'", (int)st, msg);
        w4a8moe_layer_free(L);
    }
    w4a8moe_workspace_free(ws);
    gh_dev_free(&g);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
}

int main(void)
{
    uint64_t seed = test_seed();
    if (gh_device_count() < 1) {
        w4a8moe_workspace *ws = NULL;
        w4a8moe_status st = w4a8moe_workspace_create(W4A8MOE_DEVICE_CUDA, 0, 1 << 20, &ws);
        CHECK(st != W4A8MOE_STATUS_OK && ws == NULL && w4a8moe_last_error()[0],
              "no CUDA device: a CUDA workspace is refused with a reason");
        printf("no CUDA device: skipped\n");
        TEST_MAIN_END();
    }
    static const char *const backends[] = {"cuda_sm90", "cuda_sm89"};
    for (size_t b = 0; b < 2; b++) {
        if (strcmp(backends[b], "cuda_sm90") == 0 && gh_device_sm() != 90) continue;
        run_backend(backends[b], GH_RANDOM, seed + b);
        run_backend(backends[b], GH_LOGITS, seed + 10 + b);
    }
    memory_shared(seed + 20);
    errors(seed + 30);
    chunk_bad_id(seed + 40);
    TEST_MAIN_END();
}
