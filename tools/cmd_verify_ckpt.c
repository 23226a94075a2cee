/*
 * cmd_verify_ckpt.c — `w4a8moe verify --checkpoint CKPT [--layer L] [--device DEV]`: every
 * experts backend of the device on a checkpoint's MoE layer (its shared expert included)
 * against cpu_ref (always on the host), on fresh random tokens routed by the checkpoint's own
 * router (on a CUDA device: its logits, computed on the host, go through the device's router).
 * Each backend runs twice (bit-identical outputs required) and its rows must be within the
 * contract's tolerance of cpu_ref (docs/numerics.md; bench_within_tolerance): CPU backends every
 * row <= 2e-3; GPU backends (fp32 accumulators: an fp8 code of step 5 may land one step away)
 * every row <= 1e-2 and, over 64 rows or more, the mean <= 1e-3, with the rows above 2e-3
 * counted. A backend that does not accept the layer is a SKIP with its reason; with --device
 * auto, when every CUDA backend refuses it as UNSUPPORTED, the host's backends are checked
 * instead (said on a line). cmd_verify.c hands over to cli_verify_checkpoint when --checkpoint
 * is given.
 */
#include "bench.h"
#include "bench_gpu.h"
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
    cli_device device;
} vck_args;

/* Runs backend `name` twice on x (cpu_ref on the host, the others on a->device); 0 OK,
 * 1 skipped (reason printed), -1 failed. */
static int run_twice(w4a8moe_checkpoint *ck, const vck_args *a, int32_t layer, const char *name,
                     const uint16_t *x, const float *logits, size_t bytes, uint16_t *out,
                     uint16_t *out2)
{
    w4a8moe_layer_options o = {.backend = name, .num_threads = (int32_t)a->threads};
    w4a8moe_device_kind kind = strcmp(name, "cpu_ref") == 0 ? W4A8MOE_DEVICE_CPU : a->device.kind;
    if (kind != W4A8MOE_DEVICE_CPU) cli_device_apply(&a->device, &o);
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
    w4a8moe_layer_desc d;
    w4a8moe_checkpoint_layer_desc(ck, layer, a->tokens, &d);
    memset(out, 0xff, bytes);
    memset(out2, 0x7f, bytes);
    int rc = 0;
    if (bench_gpu_forward_staged(L, kind, &d, a->tokens, x, &r, out) != W4A8MOE_STATUS_OK ||
        bench_gpu_forward_staged(L, kind, &d, a->tokens, x, &r, out2) != W4A8MOE_STATUS_OK) {
        printf("%-10s layer %-4d FAIL  forward: %s\n", name, layer, w4a8moe_layer_error(L));
        rc = -1;
    } else if (memcmp(out, out2, bytes) != 0) {
        printf("%-10s layer %-4d FAIL  two forwards differ (not deterministic)\n", name, layer);
        rc = -1;
    }
    w4a8moe_layer_free(L);
    return rc;
}

/* Every experts backend of a->device but cpu_ref, against ref; returns how many ran. */
static int verify_backends(w4a8moe_checkpoint *ck, const vck_args *a, int32_t layer,
                           const uint16_t *x, const float *logits, const uint16_t *ref,
                           uint16_t *out, uint16_t *out2, int *failed)
{
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    int64_t T = a->tokens, H = info.hidden;
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = ex[i]->name;
        if (ex[i]->device_kind != a->device.kind || strcmp(name, "cpu_ref") == 0) continue;
        if (a->backend && strcmp(a->backend, name) != 0) continue;
        int r = run_twice(ck, a, layer, name, x, logits, (size_t)(T * H) * 2, out, out2);
        if (r) {
            *failed += r < 0;
            continue;
        }
        ran++;
        int gpu = ex[i]->device_kind != W4A8MOE_DEVICE_CPU;
        bench_cmp cmp;
        bench_compare_rows(out, ref, W4A8MOE_DTYPE_BF16, T, H, &cmp);
        char why[128];
        int bad = !bench_within_tolerance(&cmp, gpu, why, sizeof why);
        printf("%-10s layer %-4d %s  worst row rel-L2 %.3e against cpu_ref (T = %lld)", name, layer,
               bad ? "FAIL" : "ok  ", cmp.max_rel_l2, (long long)T);
        if (gpu)
            printf(", mean %.1e, %lld rows above 2e-3 (GPU tolerance: rows 1e-2, mean 1e-3 over >= 64 rows)",
                   cmp.mean_rel_l2, (long long)cmp.above_cpu_tol);
        if (bad) printf(": %s", why);
        printf("\n");
        *failed += bad;
    }
    return ran;
}

static int verify_layer(w4a8moe_checkpoint *ck, vck_args *a, int32_t layer, int *failed)
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
    int ran = 0;
    if (!rc) ran = verify_backends(ck, a, layer, x, logits, ref, out, out2, failed);
    /* --device auto: a layer that no CUDA backend runs is checked on the host's backends */
    if (!rc && !ran && !*failed && !a->backend &&
        cli_device_fallback(&a->device, W4A8MOE_STATUS_UNSUPPORTED, "every CUDA backend skipped it"))
        verify_backends(ck, a, layer, x, logits, ref, out, out2, failed);
    free(x);
    free(ref);
    free(out);
    free(out2);
    free(logits);
    return rc;
}

int cli_verify_checkpoint(int argc, char **argv)
{
    vck_args a = {.layer = -1, .tokens = 16, .device = CLI_DEVICE_DEFAULT};
    a.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    cli_opt opts[] = {
        CLI_STR("--checkpoint", "CKPT", "the checkpoint directory", &a.ckpt),
        CLI_INT("--layer", "L", "the MoE layer (default: the first MoE layer)", &a.layer, 0, 1 << 20),
        CLI_INT("--tokens", "T", "random tokens per run (default 16)", &a.tokens, 1, 4096),
        CLI_STR("--backend", "NAME", "only this experts backend (default: every one of the device)",
                &a.backend),
        CLI_U64("--seed", "S", "replay a run (default: fresh, printed)", &a.seed),
        CLI_INT("--threads", "N", "CPU threads per layer (default: all cores)", &a.threads, 1, 256),
        CLI_CUSTOM("--device", "DEV", CLI_DEVICE_HELP, &a.device, cli_parse_device),
    };
    static const cli_spec spec = {
        "verify", "--checkpoint CKPT [--layer L] [options]",
        "Check every backend of the device against cpu_ref on a checkpoint's MoE layer.",
        "Random bf16 tokens are routed by the checkpoint's router; the layer (shared expert\n"
        "included) runs on cpu_ref (on the host) and on every other backend of the device twice.\n"
        "The two runs must be bit-identical and the rows within rel-L2 of cpu_ref: CPU backends\n"
        "every row <= 2e-3; GPU backends every row <= 1e-2 and, over 64 rows or more, the mean\n"
        "<= 1e-3 (the rows above 2e-3 are counted). Exit status 1 on any failure. --device auto\n"
        "(the default) checks the CUDA backends when a CUDA device is visible (the host's when\n"
        "none of them runs the layer), else the host's.\n",
        0};
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (!a.ckpt) return cli_usage_error("verify", "--checkpoint needs a directory");
    if (a.backend && !w4a8moe_registry_find_experts(a.backend))
        return cli_usage_error("verify", "--backend '%s': no experts backend of that name in this "
                                         "build; hint: 'w4a8moe --version' lists them", a.backend);
    cli_device_resolve(&a.device);
    const w4a8moe_experts_ops *bo = a.backend ? w4a8moe_registry_find_experts(a.backend) : NULL;
    if (bo && bo->device_kind != a.device.kind) { /* the backend says where it runs */
        if (!a.device.is_auto)
            return cli_usage_error("verify", "--backend %s does not run on --device %s", a.backend,
                                   a.device.kind == W4A8MOE_DEVICE_CPU ? "cpu" : "cuda");
        a.device.kind = bo->device_kind;
        a.device.ordinal = 0;
    }
    char label[W4A8MOE_ERR_CAP + 64];
    cli_device_label(&a.device, label, sizeof label);
    w4a8moe_checkpoint *ck;
    if (w4a8moe_checkpoint_open(a.ckpt, &ck) != W4A8MOE_STATUS_OK)
        return cli_fail("verify", "%s", w4a8moe_last_error());
    w4a8moe_checkpoint_info info;
    w4a8moe_checkpoint_get_info(ck, &info);
    int32_t layer = a.layer >= 0 ? (int32_t)a.layer : info.moe_layers[0];
    printf("verify: %s layer %d, every backend of the device against cpu_ref, seed %llu (replay: "
           "--seed %llu)\ndevice: %s\n",
           a.ckpt, layer, (unsigned long long)a.seed, (unsigned long long)a.seed, label);
    int failed = 0;
    int rc = verify_layer(ck, &a, layer, &failed);
    w4a8moe_checkpoint_close(ck);
    if (rc) return rc;
    printf("verify: %d failed\n", failed);
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
