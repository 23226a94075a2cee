/*
 * test_flip_explain.c — the host side of the GPU tests' failure reports (tests/gpu/flip_explain.h),
 * on test_gpu_workspace's layer with fresh random weights, inputs and routing:
 *   - its replica of cpu_ref's steps 2-6 gives cpu_ref's output bit for bit (every token);
 *   - cpu_ref's row itself has nothing to explain;
 *   - a row with one requantised code moved to its other neighbour (made by summing GEMM2 over
 *     the changed codes, not by the header's column formula) is explained, by that code;
 *   - a row with noise of the same size is not.
 */
#include "common/synth.h"
#include "gpu/flip_explain.h"
#include "gpu/workspace_case.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

/* o[H] = r * GEMM2(b), as cpu_ref's step 6. */
static void gemm2(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *xw, w4a8moe_dtype sdt,
                  const uint8_t *b, float r, float *o)
{
    for (int64_t m = 0; m < d->hidden; m++)
        o[m] = (float)((double)r * w4a8moe_ref_dot(&xw->down, sdt, d->group_size, m, b));
}

int main(void)
{
    uint64_t seed = test_seed();
    w4a8moe_layer_desc d = workspace_case_shape();
    const int64_t T = 6, H = d.hidden, I = d.inter, k = d.top_k;
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) abort();
    const w4a8moe_dtype sdt = sw.weights.scale_dtype;
    w4a8moe_synth_rng rng = {seed ^ 0xf11e};
    uint16_t *x = malloc((size_t)(T * H) * 2), *out = malloc((size_t)(T * H) * 2), *mine = malloc((size_t)H * 2);
    int32_t *ids = malloc((size_t)(T * k) * 4);
    float *wts = malloc((size_t)(T * k) * 4), *ref = malloc((size_t)H * 4), *got = malloc((size_t)H * 4);
    float *o = malloc((size_t)(H * k) * 4), *o2 = malloc((size_t)H * 4), *h = malloc((size_t)(2 * I) * 4);
    float *y = malloc((size_t)(I * k) * 4), r[8];
    uint8_t *a = malloc((size_t)H), *b = malloc((size_t)(I * k));
    if (!x || !out || !mine || !ids || !wts || !ref || !got || !o || !o2 || !h || !y || !a || !b) abort();
    w4a8moe_synth_input(x, W4A8MOE_DTYPE_BF16, T, H, 2.0f, &rng);
    w4a8moe_synth_routing(ids, wts, T, (int32_t)d.num_experts, (int32_t)k, &rng);
    w4a8moe_layer_options opt = W4A8MOE_INIT(w4a8moe_layer_options);
    opt.backend = "cpu_ref";
    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &opt, &L) == W4A8MOE_STATUS_OK, "create: %s", w4a8moe_last_error());
    w4a8moe_routing_input ri = {.topk_ids = ids, .topk_weights = wts};
    CHECK(L && w4a8moe_layer_forward(L, T, x, &ri, out, NULL) == W4A8MOE_STATUS_OK, "forward");
    int matched = 0;
    for (int64_t t = 0; t < T; t++) {
        /* the replica against cpu_ref, bit for bit */
        const float s = flip_quantise_token(&d, x, t, a);
        memset(ref, 0, (size_t)H * 4);
        for (int64_t j = 0; j < k; j++) {
            const w4a8moe_expert_weights *xw = &sw.experts[ids[t * k + j]];
            r[j] = flip_pair_codes(&d, xw, sdt, a, s, h, y + j * I, b + j * I);
            gemm2(&d, xw, sdt, b + j * I, r[j], o + j * H);
            for (int64_t m = 0; m < H; m++) ref[m] += wts[t * k + j] * o[j * H + m];
        }
        for (int64_t m = 0; m < H; m++) mine[m] = w4a8moe_f32_to_bf16(ref[m]);
        matched += memcmp(mine, out + t * H, (size_t)H * 2) == 0;
        for (int64_t m = 0; m < H; m++) ref[m] = w4a8moe_bf16_to_f32(out[t * H + m]);

        flip_explain fe;
        flip_explain_row(&d, sw.experts, sdt, x, t, ids, wts, ref, ref, FLIP_NEAR, &fe);
        CHECK(fe.can_tell && fe.observed == 0.0 && !fe.explained, "token %lld: cpu_ref's own row: observed %.3g",
              (long long)t, fe.observed);

        /* one code of pair j moved to its other neighbour: the largest code not at 448 */
        const int64_t j = t % k;
        int64_t i = -1;
        for (int64_t q = 0; q < I; q++) {
            const uint8_t mag = b[j * I + q] & 0x7f;
            if (mag < 0x7e && (i < 0 || mag > (b[j * I + i] & 0x7f))) i = q;
        }
        double margin;
        const uint8_t keep = b[j * I + i];
        b[j * I + i] = flip_other_code(y[j * I + i] / r[j], &margin);
        gemm2(&d, &sw.experts[ids[t * k + j]], sdt, b + j * I, r[j], o2);
        b[j * I + i] = keep;
        for (int64_t m = 0; m < H; m++) got[m] = ref[m] + wts[t * k + j] * (o2[m] - o[j * H + m]);
        flip_explain_row(&d, sw.experts, sdt, x, t, ids, wts, ref, got, 1.0, &fe);
        CHECK(fe.explained && fe.pair == (int)j && fe.i == i && fe.residual < 1e-5 * fe.observed + 1e-7,
              "token %lld: code %lld of pair %lld flipped (row moved %.3e): explained %d by pair %d code %lld, "
              "residual %.3g", (long long)t, (long long)i, (long long)j, fe.observed, fe.explained, fe.pair,
              (long long)fe.i, fe.residual);

        /* noise of the same size: no single flip lands on it */
        const double size = fe.observed;
        double nn = 0, rn = 0;
        for (int64_t m = 0; m < H; m++) {
            got[m] = (float)w4a8moe_synth_uniform(&rng, -1.0f, 1.0f);
            nn += (double)got[m] * got[m];
            rn += (double)ref[m] * ref[m];
        }
        const double scale = size * sqrt(rn / nn);
        for (int64_t m = 0; m < H; m++) got[m] = ref[m] + (float)(scale * got[m]);
        flip_explain_row(&d, sw.experts, sdt, x, t, ids, wts, ref, got, 1.0, &fe);
        CHECK(!fe.explained && fe.candidates > 0, "token %lld: noise of rel-L2 %.3e explained by pair %d code %lld "
              "(residual %.3g)", (long long)t, fe.observed, fe.pair, (long long)fe.i, fe.residual);
    }
    CHECK(matched == T, "the replica of cpu_ref's steps gave cpu_ref's bits for %d of %lld tokens", matched,
          (long long)T);
    printf("flip_explain: %lld tokens, replica bit-identical to cpu_ref for %d\n", (long long)T, matched);
    w4a8moe_layer_free(L);
    free(x); free(out); free(mine); free(ids); free(wts); free(ref); free(got); free(o); free(o2); free(h);
    free(y); free(a); free(b);
    w4a8moe_synth_weights_free(&sw);
    TEST_MAIN_END();
}
