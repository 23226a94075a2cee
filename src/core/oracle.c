/*
 * oracle.c — see oracle.h.
 */
#include "oracle.h"

#include "../common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const axis_names[W4A8MOE_AXIS_COUNT_] = {"device", "quant", "activation",
                                                            "parallel", "shape"};
static const char *const device_names[W4A8MOE_DEVICE_KIND_COUNT_] = {"cpu", "cuda"};

const char *w4a8moe_axis_name(w4a8moe_axis axis)
{
    return (unsigned)axis < W4A8MOE_AXIS_COUNT_ ? axis_names[axis] : "?";
}

static const w4a8moe_prepfin_ops *find_partner(const w4a8moe_experts_ops *ops,
                                               const w4a8moe_layer_desc *d, char *why,
                                               size_t cap)
{
    size_t n;
    const w4a8moe_prepfin_ops *const *pf = w4a8moe_registry_prepfin(&n);
    snprintf(why, cap, "no prepare/finalize runs %s layout on %s with ep_size %d",
             ops->layout == W4A8MOE_LAYOUT_BATCHED ? "the batched" : "the contiguous",
             device_names[ops->device_kind], d->ep_size);
    for (size_t i = 0; i < n; i++) {
        if (pf[i]->device_kind != ops->device_kind || pf[i]->layout != ops->layout) continue;
        char tmp[W4A8MOE_WHY_CAP];
        if (pf[i]->supports_parallel && !pf[i]->supports_parallel(d->ep_rank, d->ep_size, tmp, sizeof tmp))
            continue;
        return pf[i];
    }
    return NULL;
}

void w4a8moe_oracle_judge(const w4a8moe_experts_ops *ops, const w4a8moe_device_info *dev,
                          const w4a8moe_layer_desc *d, w4a8moe_verdict *v)
{
    memset(v, 0, sizeof *v);
    char *why = v->why;
    size_t cap = sizeof v->why;
    v->axis = W4A8MOE_AXIS_DEVICE;
    if (ops->api_version != W4A8MOE_BACKEND_API) {
        snprintf(why, cap, "built for backend API %d, the core speaks %d", ops->api_version,
                 W4A8MOE_BACKEND_API);
        return;
    }
    if (ops->device_kind != dev->kind) {
        snprintf(why, cap, "runs on %s, the layer is on %s", device_names[ops->device_kind],
                 (unsigned)dev->kind < W4A8MOE_DEVICE_KIND_COUNT_ ? device_names[dev->kind] : "?");
        return;
    }
    if (ops->supports_device && !ops->supports_device(dev, why, cap)) return;
    v->axis = W4A8MOE_AXIS_QUANT;
    if (!ops->supports_quant &&
        (d->weight_scheme != W4A8MOE_WEIGHT_INT4_GROUP || d->act_scheme == W4A8MOE_ACT_BF16)) {
        /* a backend written before other schemes existed claims only the W4A8 pairs */
        snprintf(why, cap, "no path for scheme pair (weight %d, activation %d): the backend "
                 "declares no quant predicate, so it runs int4 x fp8 only",
                 (int)d->weight_scheme, (int)d->act_scheme);
        return;
    }
    if (ops->supports_quant && !ops->supports_quant(d->weight_scheme, d->act_scheme, why, cap)) return;
    v->axis = W4A8MOE_AXIS_ACTIVATION;
    if (ops->supports_activation && !ops->supports_activation(d->activation, why, cap)) return;
    v->axis = W4A8MOE_AXIS_PARALLEL;
    if (ops->supports_parallel && !ops->supports_parallel(d->ep_rank, d->ep_size, why, cap)) return;
    v->prepfin = find_partner(ops, d, why, cap);
    if (!v->prepfin) return;
    v->axis = W4A8MOE_AXIS_SHAPE;
    if (ops->supports_shape && !ops->supports_shape(d, why, cap)) return;
    v->ok = 1;
    why[0] = '\0';
}

static void list_names(char *buf, size_t cap)
{
    size_t n, used = 0;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", ex[i]->name);
}

w4a8moe_status w4a8moe_oracle_select(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                                     const char *forced, const w4a8moe_experts_ops **experts,
                                     const w4a8moe_prepfin_ops **prepfin, w4a8moe_err *err)
{
    w4a8moe_verdict v;
    if (forced && forced[0]) {
        const w4a8moe_experts_ops *ops = w4a8moe_registry_find_experts(forced);
        if (!ops) {
            char names[256];
            list_names(names, sizeof names);
            RETURN_ERR(err, W4A8MOE_STATUS_NOT_FOUND,
                       "no backend named '%s' in this build; hint: one of %s", forced, names);
        }
        w4a8moe_oracle_judge(ops, dev, d, &v);
        RETURN_IF(err, !v.ok, W4A8MOE_STATUS_UNSUPPORTED,
                  "forced backend '%s' does not fit this layer: rejected at %s: %s; hint: drop "
                  "the forced backend (option or W4A8MOE_BACKEND) to let the oracle choose",
                  forced, w4a8moe_axis_name(v.axis), v.why);
        *experts = ops;
        *prepfin = v.prepfin;
        w4a8moe_log(W4A8MOE_LOG_INFO, "backend %s (forced) with prepare/finalize %s", ops->name,
                    v.prepfin->name);
        return W4A8MOE_STATUS_OK;
    }
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++) {
        w4a8moe_oracle_judge(ex[i], dev, d, &v);
        if (!v.ok) continue;
        *experts = ex[i];
        *prepfin = v.prepfin;
        w4a8moe_log(W4A8MOE_LOG_INFO, "backend %s with prepare/finalize %s", ex[i]->name,
                    v.prepfin->name);
        return W4A8MOE_STATUS_OK;
    }
    RETURN_ERR(err, W4A8MOE_STATUS_UNSUPPORTED,
               "no backend runs this layer; hint: w4a8moe_explain (or `w4a8moe explain`) gives "
               "each backend's reason");
}

void w4a8moe_report_appendf(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*used < cap ? buf + *used : NULL, *used < cap ? cap - *used : 0, fmt, ap);
    va_end(ap);
    if (n > 0) *used += (size_t)n;
}

/* Most batch sizes a report walks (explain) where the backend does not say its path has settled. */
#define REPORT_MAX_T (1 << 20)

static void report_range(char *buf, size_t cap, size_t *used, int64_t a, int64_t b, const char *path)
{
    char label[64];
    if (a == b) snprintf(label, sizeof label, "T = %lld", (long long)a);
    else snprintf(label, sizeof label, "T = %lld-%lld", (long long)a, (long long)b);
    w4a8moe_report_appendf(buf, cap, used, "    %-16s %s\n", label, path);
}

void w4a8moe_oracle_report_batches(const w4a8moe_experts_ops *ex, const w4a8moe_device_info *dev,
                                   const w4a8moe_layer_desc *d, char *buf, size_t cap, size_t *used)
{
    w4a8moe_stage_ctx ctx = {0};
    ctx.desc = d;
    ctx.dev = dev;
    w4a8moe_stage_ctx_set_local(&ctx, d);
    w4a8moe_report_appendf(buf, cap, used, "  by batch of T tokens (rows an expert: T*k over min(T*k, %d local "
                           "experts)):\n", ctx.num_local);
    char cur[512], next[512]; /* a path line with every switch named fits */
    int64_t first = 1, last = d->max_tokens;
    int settled = ex->describe_batch(&ctx, 1, cur, sizeof cur) == 2;
    for (int64_t T = 2; T <= last && !settled; T++) {
        if (T > REPORT_MAX_T) { /* not settled: say where the walk stopped */
            report_range(buf, cap, used, first, T - 1, cur);
            w4a8moe_report_appendf(buf, cap, used, "    T > %lld: not walked\n", (long long)(T - 1));
            return;
        }
        settled = ex->describe_batch(&ctx, T, next, sizeof next) == 2;
        if (strcmp(next, cur) == 0) continue;
        report_range(buf, cap, used, first, T - 1, cur);
        first = T;
        memcpy(cur, next, sizeof cur);
    }
    report_range(buf, cap, used, first, last, cur);
}

size_t w4a8moe_oracle_report(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                             const char *forced, char *buf, size_t cap)
{
    size_t n, used = 0;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    int chosen = 0;
    if (cap) buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        w4a8moe_verdict v;
        w4a8moe_oracle_judge(ex[i], dev, d, &v);
        int is_forced = forced && forced[0] && strcmp(forced, ex[i]->name) == 0;
        if (v.ok && !chosen && (!forced || !forced[0] || is_forced)) {
            chosen = 1;
            w4a8moe_report_appendf(buf, cap, &used, "%-10s selected%s (prepare/finalize: %s)\n", ex[i]->name,
                    is_forced ? ", forced" : "", v.prepfin->name);
            if (ex[i]->describe_batch) w4a8moe_oracle_report_batches(ex[i], dev, d, buf, cap, &used);
        } else if (v.ok) {
            w4a8moe_report_appendf(buf, cap, &used, "%-10s accepted (not chosen: %s)\n", ex[i]->name,
                    forced && forced[0] ? "another backend is forced" : "lower priority");
        } else {
            w4a8moe_report_appendf(buf, cap, &used, "%-10s rejected (%s): %s\n", ex[i]->name,
                    w4a8moe_axis_name(v.axis), v.why);
        }
    }
    if (!chosen)
        w4a8moe_report_appendf(buf, cap, &used, "no backend selected%s\n",
                forced && forced[0] ? ": the forced backend does not fit" : "");
    return used;
}
