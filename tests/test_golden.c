/*
 * test_golden.c — the external check of the whole pipeline: tiny checkpoints with the output
 * of layer 1 for a given input, computed by implementations of the contract (docs/numerics.md)
 * written apart from ours. We load the checkpoint, run its router on the input (logits
 * x . Wg^T in f32), run the layer on every CPU backend, and compare every output row within
 * 2e-3 relative L2.
 *   golden-* (copied from the team's shared test data, checked against PyTorch): qwen3 softmax
 *     top-2 renormalised, g = 64; deepseek sigmoid grouped top-2 with score bias and scaling
 *     2.5, g = 128, one int4 shared expert.
 *   indep-* (tests/fixtures/make_indep_fixtures.py: numpy, no code of ours): llama4 as
 *     llm-compressor saves it (pack-quantized, g = 64, top-1 with the weight on the input, int4
 *     shared expert, a dense layer 0, two shards); sglang w4afp8 as TensorRT-LLM's
 *     mixed-precision script writes it (DeepSeek-V3, I8 nibbles, f32 weight_scale_inv, static
 *     input scales in their own file, block-FP8 shared expert run unquantised).
 */
#include "core/backend.h"
#include "golden_io.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

#ifndef TEST_DATA
#define TEST_DATA "tests/data"
#endif

static double row_rel_l2(const uint16_t *a, const uint16_t *ref, int64_t H)
{
    double num = 0, den = 0;
    for (int64_t h = 0; h < H; h++) {
        double x = w4a8moe_bf16_to_f32(a[h]), r = w4a8moe_bf16_to_f32(ref[h]);
        num += (x - r) * (x - r);
        den += r * r;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void golden_case(const char *name, int want_moe_layers, const char *want_shared)
{
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "%s/%s", TEST_DATA, name);
    int64_t T = 0, H = 0, T2 = 0, H2 = 0;
    snprintf(path, sizeof path, "%s/input.safetensors", dir);
    uint16_t *x = golden_read_bf16(path, "hidden_states", &T, &H);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    uint16_t *want = golden_read_bf16(path, "output", &T2, &H2);
    CHECK(x && want && T == T2 && H == H2, "%s: input/expected tensors missing or mismatched", name);
    w4a8moe_checkpoint *ck = NULL;
    w4a8moe_status st = w4a8moe_checkpoint_open(dir, &ck);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: open: %s", name, w4a8moe_last_error());
    if (!x || !want || st != W4A8MOE_STATUS_OK) goto done;
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    CHECK(info.hidden == H && info.num_moe_layers == want_moe_layers, "%s: H %lld, %d MoE layers", name,
          (long long)info.hidden, info.num_moe_layers);
    CHECK((info.has_shared_expert != 0) == (want_shared != NULL), "%s: shared expert presence", name);
    float *logits = malloc((size_t)(T * info.num_experts) * sizeof *logits);
    st = w4a8moe_checkpoint_router_logits(ck, 1, T, x, W4A8MOE_DTYPE_BF16, logits);
    CHECK(st == W4A8MOE_STATUS_OK, "%s: router logits: %s", name, w4a8moe_last_error());
    size_t nb;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&nb);
    for (size_t b = 0; b < nb; b++) {
        if (ex[b]->device_kind != W4A8MOE_DEVICE_CPU) continue;
        w4a8moe_layer_options o = {.backend = ex[b]->name};
        w4a8moe_layer *L = NULL;
        st = w4a8moe_checkpoint_layer_create(ck, 1, &o, NULL, 0, T, &L);
        CHECK(st == W4A8MOE_STATUS_OK, "%s/%s: create: %s", name, ex[b]->name, w4a8moe_last_error());
        if (st != W4A8MOE_STATUS_OK) continue;
        if (want_shared)
            CHECK(strcmp(w4a8moe_layer_shared_backend(L), "") != 0, "%s/%s: no shared pipeline",
                  name, ex[b]->name);
        uint16_t *out = malloc((size_t)(T * H) * 2);
        memset(out, 0xff, (size_t)(T * H) * 2); /* poison: NaN bf16 */
        w4a8moe_routing_input r = {.router_logits = logits};
        st = w4a8moe_layer_forward(L, T, x, &r, out, NULL);
        CHECK(st == W4A8MOE_STATUS_OK, "%s/%s: forward: %s", name, ex[b]->name, w4a8moe_layer_error(L));
        double worst = 0;
        for (int64_t t = 0; t < T; t++) {
            double e = row_rel_l2(out + t * H, want + t * H, H);
            CHECK(e <= 2e-3, "%s/%s: row %lld rel-L2 %.3e > 2e-3", name, ex[b]->name, (long long)t, e);
            if (!(e <= worst)) worst = e;
        }
        printf("ok golden %s backend %s (shared: %s): worst row rel-L2 %.3e\n", name, ex[b]->name,
               want_shared ? w4a8moe_layer_shared_backend(L) : "none", worst);
        free(out);
        w4a8moe_layer_free(L);
    }
    free(logits);
done:
    w4a8moe_checkpoint_close(ck);
    free(x);
    free(want);
}

int main(void)
{
    golden_case("golden-qwen3-tiny", 2, NULL);
    golden_case("golden-deepseek-tiny", 2, "int4");
    golden_case("indep-llama4-tiny", 1, "int4");
    golden_case("indep-sglang-w4afp8-tiny", 1, "block-fp8");
    TEST_MAIN_END();
}
