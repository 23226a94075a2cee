/*
 * cmd_verify_ckpt.c — `w4a8moe verify --checkpoint CKPT [--layer L]`: every CPU experts
 * backend on a checkpoint's MoE layer (its shared expert included) against cpu_ref, on fresh
 * random tokens routed by the checkpoint's own router. Each backend runs twice (bit-identical
 * outputs required) and each output row must be within rel-L2 2e-3 of cpu_ref. A backend that
 * does not accept the layer is a SKIP with its reason. cmd_verify.c hands over to
 * cli_verify_checkpoint when --checkpoint is given.
 */
#include "cli.h"

#include "../src/common/synth.h"
#include "../src/core/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct vck_args {
    const char *ckpt, *backend;
    int64_t layer, tokens, threads;
    uint64_t seed;
} vck_args;

static double rel_l2(const uint16_t *a, const uint16_t *ref, int64_t H)
{
    double num = 0, den = 0;
    for (int64_t h = 0; h < H; h++) {
        double x = w4a8moe_bf16_to_f32(a[h]), r = w4a8moe_bf16_to_f32(ref[h]);
        num += (x - r) * (x - r);
        den += r * r;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Runs backend `name` twice on x; 0 OK, 1 skipped (reason printed), -1 failed. */
static int run_twice(w4a8moe_checkpoint *ck, const vck_args *a, int32_t layer, const char *name,
                     const uint16_t *x, const float *logits, size_t bytes, uint16_t *out,
                     uint16_t *out2)
{
    w4a8moe_layer_options o = {.backend = name, .num_threads = (int32_t)a->threads};
    w4a8moe_layer *L;
    w4a8moe_status st = w4a8moe_checkpoint_layer_create(ck, layer, &o, NULL, 0, a->tokens, &L);
    if (st == W4A8MOE_STATUS_UNSUPPORTED) {
        printf("%-10s layer %-4d SKIP  %s\n", name, layer, w4a8moe_last_error());
        return 1;
    }
    if (st != W4A8MOE_STATUS_OK) {
        printf("%-10s layer %-4d FAIL  create: %s\n", name, layer, w4a8moe_last_error());
        return -1;
    }
    w4a8moe_routing_input r = {.router_logits = logits};
    memset(out, 0xff, bytes);
    memset(out2, 0x7f, bytes);
    int rc = 0;
    if (w4a8moe_layer_forward(L, a->tokens, x, &r, out, NULL) != W4A8MOE_STATUS_OK ||
        w4a8moe_layer_forward(L, a->tokens, x, &r, out2, NULL) != W4A8MOE_STATUS_OK) {
        printf("%-10s layer %-4d FAIL  forward: %s\n", name, layer, w4a8moe_layer_error(L));
        rc = -1;
    } else if (memcmp(out, out2, bytes) != 0) {
        printf("%-10s layer %-4d FAIL  two forwards differ (not deterministic)\n", name, layer);
        rc = -1;
    }
    w4a8moe_layer_free(L);
    return rc;
}

static int verify_layer(w4a8moe_checkpoint *ck, const vck_args *a, int32_t layer, int *failed)
{
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    int64_t T = a->tokens, H = info.hidden;
    uint16_t *x = malloc((size_t)(T * H) * 2), *ref = malloc((size_t)(T * H) * 2);
    uint16_t *out = malloc((size_t)(T * H) * 2), *out2 = malloc((size_t)(T * H) * 2);
    float *logits = malloc((size_t)(T * info.num_experts) * sizeof(float));
    if (!x || !ref || !out || !out2 || !logits) return cli_fail("verify", "out of memory");
    w4a8moe_synth_rng rng = {a->seed ^ (uint64_t)layer * 0x9e3779b97f4a7c15ull};
    w4a8moe_synth_input(x, W4A8MOE_DTYPE_BF16, T, H, 2.0f, &rng);
    int rc = 0;
    if (w4a8moe_checkpoint_router_logits(ck, layer, T, x, W4A8MOE_DTYPE_BF16, logits) != W4A8MOE_STATUS_OK)
        rc = cli_fail("verify", "%s", w4a8moe_last_error());
    if (!rc && run_twice(ck, a, layer, "cpu_ref", x, logits, (size_t)(T * H) * 2, ref, out2) != 0) rc = CLI_EXIT_FAIL;
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n && !rc; i++) {
        const char *name = ex[i]->name;
        if (ex[i]->device_kind != W4A8MOE_DEVICE_CPU || strcmp(name, "cpu_ref") == 0) continue;
        if (a->backend && strcmp(a->backend, name) != 0) continue;
        int r = run_twice(ck, a, layer, name, x, logits, (size_t)(T * H) * 2, out, out2);
        if (r) {
            *failed += r < 0;
            continue;
        }
        double worst = 0;
        int bad = 0;
        for (int64_t t = 0; t < T; t++) {
            double e = rel_l2(out + t * H, ref + t * H, H);
            bad |= !(e <= 2e-3);
            if (!(e <= worst)) worst = e;
        }
        printf("%-10s layer %-4d %s  worst row rel-L2 %.3e against cpu_ref (T = %lld)\n", name, layer,
               bad ? "FAIL" : "ok  ", worst, (long long)T);
        *failed += bad;
    }
    free(x);
    free(ref);
    free(out);
    free(out2);
    free(logits);
    return rc;
}

int cli_verify_checkpoint(int argc, char **argv)
{
    vck_args a = {.layer = -1, .tokens = 16};
    a.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    cli_opt opts[] = {
        CLI_STR("--checkpoint", "CKPT", "the checkpoint directory", &a.ckpt),
        CLI_INT("--layer", "L", "the MoE layer (default: the first MoE layer)", &a.layer, 0, 1 << 20),
        CLI_INT("--tokens", "T", "random tokens per run (default 16)", &a.tokens, 1, 4096),
        CLI_STR("--backend", "NAME", "only this experts backend (default: every CPU one)", &a.backend),
        CLI_U64("--seed", "S", "replay a run (default: fresh, printed)", &a.seed),
        CLI_INT("--threads", "N", "CPU threads per layer (default: all cores)", &a.threads, 1, 256),
    };
    static const cli_spec spec = {
        "verify", "--checkpoint CKPT [--layer L] [options]",
        "Check every CPU backend against cpu_ref on a checkpoint's MoE layer.",
        "Random bf16 tokens are routed by the checkpoint's router; the layer (shared expert\n"
        "included) runs on cpu_ref and on every other backend twice. Each row must be within\n"
        "rel-L2 2e-3 of cpu_ref and the two runs bit-identical. Exit status 1 on any failure.\n",
        0};
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (!a.ckpt) return cli_usage_error("verify", "--checkpoint needs a directory");
    w4a8moe_checkpoint *ck;
    if (w4a8moe_checkpoint_open(a.ckpt, &ck) != W4A8MOE_STATUS_OK)
        return cli_fail("verify", "%s", w4a8moe_last_error());
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    int32_t layer = a.layer >= 0 ? (int32_t)a.layer : info.moe_layers[0];
    printf("verify: %s layer %d, every CPU backend against cpu_ref, seed %llu (replay: --seed %llu)\n",
           a.ckpt, layer, (unsigned long long)a.seed, (unsigned long long)a.seed);
    int failed = 0;
    int rc = verify_layer(ck, &a, layer, &failed);
    w4a8moe_checkpoint_close(ck);
    if (rc) return rc;
    printf("verify: %d failed\n", failed);
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
