/*
 * cmd_run_model.c — `w4a8moe run CKPT --all-layers --tokens T [--workspace-mb M]`: every MoE
 * layer of a checkpoint loaded at once on one device, sharing one w4a8moe_workspace, then T
 * tokens run through them in sequence, as a model's forward pass walks its layers (attention
 * and the dense layers between them are not ours). What it shows is memory: the weights of
 * every layer plus one workspace, instead of a workspace per layer (docs/design.md, "Memory").
 *
 * Every layer gets the same input x (synthetic, uniform in [-1, 1), bf16, from --seed), so no
 * layer's output can drift into Inf for the next; routing is uniform random ids (k distinct
 * experts per token, from the seed) unless --router asks for the checkpoint's router, whose
 * logits are computed on the host (x . Wg^T, scalar f32: seconds per layer at T = 16384).
 *
 * Memory: on a CUDA device the device's used bytes (cudaMemGetInfo) before anything is
 * allocated, after each layer's creation and after each forward; the peak of these samples
 * over the start is compared with the library's estimate of the weights plus the workspace and
 * the I/O buffers (the check allows 5% over the weights for the backends' padding and the CUDA
 * allocator's granularity). On the host the process's peak resident set is printed instead.
 * Each layer's line has an FNV-1a checksum of its output, so two runs (e.g. a small and a
 * large workspace) can be compared for identical outputs.
 */
#include "cli.h"
#include "run_device.h"

#include "../src/common/error.h"
#include "../src/common/synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

typedef struct model_run {
    cli_run_model_args *a;
    w4a8moe_checkpoint *ck;
    w4a8moe_checkpoint_info info;
    w4a8moe_layer_options o;
    w4a8moe_workspace *ws;
    w4a8moe_layer **layers;
    int32_t n;
    uint64_t weights, own_ws, min_ws; /* library estimates: sum, largest layer's own, 1 token */
    size_t ws_bytes, io_bytes;
    uint64_t used0, peak, total;
    int have_mem;
    /* host and device buffers */
    uint16_t *x, *out;
    int32_t *ids;
    float *wts, *logits;
    void *dx, *dout, *dids, *dwts, *dlogits;
} model_run;

static void sample(model_run *m)
{
    uint64_t used, total;
    if (m->have_mem && run_dev_mem(&m->a->device, &used, &total) == 0 && used > m->peak) m->peak = used;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The library's estimates over every MoE layer, and the workspace to create. */
static int plan(model_run *m)
{
    int64_t T = m->a->tokens;
    for (int32_t i = 0; i < m->n; i++) {
        w4a8moe_memory_info mi;
        if (w4a8moe_checkpoint_memory(m->ck, m->info.moe_layers[i], &m->o, T, &mi) != W4A8MOE_STATUS_OK)
            return cli_fail("run", "layer %d: %s", m->info.moe_layers[i], w4a8moe_last_error());
        m->weights += mi.weight_bytes;
        if (mi.workspace_bytes > m->own_ws) m->own_ws = mi.workspace_bytes;
        if (mi.workspace_min_bytes > m->min_ws) m->min_ws = mi.workspace_min_bytes;
    }
    m->ws_bytes = m->a->workspace_mb ? (size_t)m->a->workspace_mb << 20 : (size_t)m->own_ws;
    if (m->ws_bytes < m->min_ws)
        return cli_fail("run", "--workspace-mb %lld is below one token's scratch of the largest "
                               "layer (%.2f MiB); hint: give at least %lld",
                        (long long)m->a->workspace_mb, (double)m->min_ws / MIB,
                        (long long)((m->min_ws + (1u << 20) - 1) >> 20));
    return 0;
}

static int load(model_run *m)
{
    if (w4a8moe_workspace_create(m->a->device.kind, m->a->device.ordinal, m->ws_bytes, &m->ws) !=
        W4A8MOE_STATUS_OK)
        return cli_fail("run", "workspace: %s", w4a8moe_last_error());
    m->o.workspace = m->ws;
    sample(m);
    m->layers = calloc((size_t)m->n, sizeof *m->layers);
    if (!m->layers) return cli_fail("run", "out of memory");
    for (int32_t i = 0; i < m->n; i++) {
        int32_t L = m->info.moe_layers[i];
        w4a8moe_layer_desc d;
        if (w4a8moe_checkpoint_layer_desc(m->ck, L, m->a->tokens, &d) != W4A8MOE_STATUS_OK)
            return cli_fail("run", "layer %d: %s", L, w4a8moe_last_error());
        d.io_dtype = W4A8MOE_DTYPE_BF16;
        if (w4a8moe_checkpoint_layer_create_desc(m->ck, L, &d, &m->o, NULL, 0, &m->layers[i]) !=
            W4A8MOE_STATUS_OK)
            return cli_fail("run", "layer %d: %s", L, w4a8moe_last_error());
        sample(m);
    }
    return 0;
}

static int buffers(model_run *m)
{
    const cli_device *dev = &m->a->device;
    int64_t T = m->a->tokens, H = m->info.hidden, E = m->info.num_experts, k = m->info.top_k;
    size_t xb = (size_t)(T * H) * 2, kb = (size_t)(T * k) * 4, lb = (size_t)(T * E) * 4;
    w4a8moe_synth_rng r = {m->a->seed};
    m->x = malloc(xb);
    m->out = malloc(xb);
    if (!m->x || !m->out) return cli_fail("run", "out of memory");
    w4a8moe_synth_input(m->x, W4A8MOE_DTYPE_BF16, T, H, 1.0f, &r);
    m->dx = run_dev_alloc(dev, xb);
    m->dout = run_dev_alloc(dev, xb);
    m->io_bytes = 2 * xb;
    if (!m->dx || !m->dout || run_dev_upload(dev, m->dx, m->x, xb))
        return cli_fail("run", "the input and output buffers (2 x %zu bytes) on the device", xb);
    if (m->a->router) {
        m->logits = malloc(lb);
        m->dlogits = run_dev_alloc(dev, lb);
        m->io_bytes += lb;
        if (!m->logits || !m->dlogits) return cli_fail("run", "router logits buffers");
        return 0;
    }
    m->ids = malloc(kb);
    m->wts = malloc(kb);
    m->dids = run_dev_alloc(dev, kb);
    m->dwts = run_dev_alloc(dev, kb);
    m->io_bytes += 2 * kb;
    if (!m->ids || !m->wts || !m->dids || !m->dwts) return cli_fail("run", "routing buffers");
    w4a8moe_synth_routing(m->ids, m->wts, T, (int32_t)E, (int32_t)k, &r);
    if (run_dev_upload(dev, m->dids, m->ids, kb) || run_dev_upload(dev, m->dwts, m->wts, kb))
        return cli_fail("run", "copying the routing to the device");
    return 0;
}

static int run_layers(model_run *m)
{
    const cli_device *dev = &m->a->device;
    int64_t T = m->a->tokens, H = m->info.hidden, E = m->info.num_experts;
    size_t xb = (size_t)(T * H) * 2;
    sample(m);
    printf("%6s  %-10s %7s %12s %10s %12s  %-16s %s\n", "layer", "backend", "chunk", "weights MiB",
           "ms", "tokens/s", "output fnv1a", m->have_mem ? (dev->kind == W4A8MOE_DEVICE_CUDA ? "device used MiB" : "peak RSS MiB") : "");
    double total_ms = 0.0;
    for (int32_t i = 0; i < m->n; i++) {
        int32_t L = m->info.moe_layers[i];
        w4a8moe_routing_input r = W4A8MOE_INIT(w4a8moe_routing_input);
        if (m->a->router) {
            if (w4a8moe_checkpoint_router_logits(m->ck, L, T, m->x, W4A8MOE_DTYPE_BF16, m->logits) != W4A8MOE_STATUS_OK)
                return cli_fail("run", "layer %d router: %s", L, w4a8moe_last_error());
            if (run_dev_upload(dev, m->dlogits, m->logits, (size_t)(T * E) * 4))
                return cli_fail("run", "copying the router logits to the device");
            r.router_logits = m->dlogits;
        } else {
            r.topk_ids = m->dids;
            r.topk_weights = m->dwts;
        }
        double ms = 0.0;
        if (run_dev_forward(dev, m->layers[i], T, m->dx, &r, m->dout, &ms) != W4A8MOE_STATUS_OK)
            return cli_fail("run", "layer %d: %s", L, w4a8moe_layer_error(m->layers[i])[0]
                                                          ? w4a8moe_layer_error(m->layers[i])
                                                          : "the device failed");
        if (run_dev_download(dev, m->out, m->dout, xb)) return cli_fail("run", "copying the output back");
        sample(m);
        total_ms += ms;
        w4a8moe_memory_info lm;
        w4a8moe_layer_memory(m->layers[i], 0, &lm);
        uint64_t used = 0, tot;
        char memtxt[32] = "";
        if (m->have_mem && run_dev_mem(dev, &used, &tot) == 0) snprintf(memtxt, sizeof memtxt, "%.0f", (double)used / MIB);
        printf("%6d  %-10s %7lld %12.1f %10.3f %12.0f  %016llx %s\n", L,
               w4a8moe_layer_backend(m->layers[i]), (long long)lm.chunk_tokens,
               (double)lm.weight_bytes / MIB, ms, ms > 0 ? (double)T / (ms * 1e-3) : 0.0,
               (unsigned long long)fnv1a(m->out, xb), memtxt);
        fflush(stdout);
    }
    printf("total: %d layers in %.1f ms (%.3f ms per layer)\n", m->n, total_ms, total_ms / m->n);
    return 0;
}

static void report_memory(model_run *m)
{
    double w = (double)m->weights / MIB, ws = (double)m->ws_bytes / MIB, io = (double)m->io_bytes / MIB;
    printf("memory: weights %.1f MiB (library estimate, %d layers) + one workspace %.1f MiB + I/O "
           "buffers %.1f MiB; each layer alone would hold a workspace of %.1f MiB for %lld tokens "
           "(%.1f MiB for %d layers)\n",
           w, m->n, ws, io, (double)m->own_ws / MIB, (long long)m->a->tokens,
           (double)m->own_ws * m->n / MIB, m->n);
    if (!m->have_mem) {
        printf("memory check: skipped (the device's memory in use is unknown)\n");
        return;
    }
    if (m->a->device.kind != W4A8MOE_DEVICE_CUDA) {
        printf("memory check: skipped on the host (peak resident set %.1f MiB, mapped checkpoint "
               "pages included)\n", (double)m->peak / MIB);
        return;
    }
    double peak = (double)(m->peak - m->used0) / MIB, bound = w * 1.05 + ws + io;
    printf("device memory: %.1f MiB in use before loading, peak %.1f MiB of %.1f MiB (+%.1f MiB; "
           "the weights as allocated: about %.1f MiB)\n",
           (double)m->used0 / MIB, (double)m->peak / MIB, (double)m->total / MIB, peak, peak - ws - io);
    printf("memory check: peak over the start %.1f MiB <= weights x 1.05 + workspace + I/O = %.1f "
           "MiB: %s\n", peak, bound, peak <= bound ? "ok" : "FAILED");
    if (peak > bound) m->a->failed = 1;
}

static void release(model_run *m)
{
    const cli_device *dev = &m->a->device;
    for (int32_t i = 0; m->layers && i < m->n; i++) w4a8moe_layer_free(m->layers[i]);
    free(m->layers);
    w4a8moe_workspace_free(m->ws);
    void *dbufs[] = {m->dx, m->dout, m->dids, m->dwts, m->dlogits};
    for (size_t i = 0; i < sizeof dbufs / sizeof dbufs[0]; i++)
        if (dbufs[i]) run_dev_free(dev, dbufs[i]);
    free(m->x);
    free(m->out);
    free(m->ids);
    free(m->wts);
    free(m->logits);
}

int cli_run_model(cli_run_model_args *a, w4a8moe_checkpoint *ck)
{
    model_run m;
    memset(&m, 0, sizeof m);
    m.a = a;
    m.ck = ck;
    w4a8moe_checkpoint_get_info(ck, &m.info);
    m.n = m.info.num_moe_layers;
    if (m.n < 1) return cli_fail("run", "%s has no MoE layer", a->ckpt_dir);
    m.o = (w4a8moe_layer_options)W4A8MOE_INIT(w4a8moe_layer_options);
    m.o.backend = a->backend;
    m.o.num_threads = (int32_t)a->threads;
    cli_device_apply(&a->device, &m.o);
    m.have_mem = run_dev_mem(&a->device, &m.used0, &m.total) == 0;
    m.peak = m.used0;
    char label[W4A8MOE_ERR_CAP + 64];
    cli_device_label(&a->device, label, sizeof label);
    int rc = plan(&m);
    if (!rc) {
        printf("run: %s, all %d MoE layers (H=%lld I=%lld E=%d k=%d g=%d), %lld tokens (bf16, "
               "uniform in [-1, 1), seed %llu), routing %s, the same input to every layer\n",
               a->ckpt_dir, m.n, (long long)m.info.hidden, (long long)m.info.inter,
               m.info.num_experts, m.info.top_k, m.info.group_size, (long long)a->tokens,
               (unsigned long long)a->seed,
               a->router ? "by the checkpoint's router (logits on the host)" : "random ids (k distinct per token)");
        printf("device: %s\n", label);
        printf("workspace: %.1f MiB shared by %d layers (%s); one token of the largest layer needs "
               "%.3f MiB\n",
               (double)m.ws_bytes / MIB, m.n, a->workspace_mb ? "--workspace-mb" : "sized for every token at once",
               (double)m.min_ws / MIB);
        fflush(stdout);
        rc = load(&m);
    }
    if (!rc) rc = buffers(&m);
    if (!rc) rc = run_layers(&m);
    if (!rc) report_memory(&m);
    release(&m);
    if (!rc && a->failed) rc = CLI_EXIT_FAIL;
    return rc;
}
