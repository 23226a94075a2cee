/*
 * cli_args.c — the CLI's option parser, --help printer, value parsers and device handling
 * (see cli.h). Every command goes through cli_parse, so flags behave the same everywhere: a
 * bad flag or value is one line on stderr and exit code 2, never a crash.
 */
#include "cli.h"

#include "../src/core/backend.h"
#include "../src/core/models.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void vreport(const char *cmd, const char *fmt, va_list ap)
{
    fprintf(stderr, "w4a8moe%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

/* ---- help ---------------------------------------------------------------------------------- */

static void print_help(const cli_spec *spec, const cli_opt *opts, size_t nopts)
{
    printf("usage: w4a8moe %s %s\n\n%s\n\noptions:\n", spec->name, spec->args, spec->summary);
    for (size_t i = 0; i < nopts; i++) {
        char left[64];
        if (opts[i].metavar)
            snprintf(left, sizeof left, "%s %s", opts[i].name, opts[i].metavar);
        else
            snprintf(left, sizeof left, "%s", opts[i].name);
        printf("  %-24s %s\n", left, opts[i].help);
    }
    printf("  %-24s %s\n", "-h, --help", "print this help and exit");
    if (spec->details) printf("\n%s", spec->details);
}

/* ---- parsing ------------------------------------------------------------------------------- */

static int parse_int64(const char *s, int64_t *out)
{
    if (!s[0]) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_value(const cli_spec *spec, cli_opt *o, const char *value)
{
    char why[160] = "";
    switch (o->kind) {
    case CLI_OPT_INT: {
        int64_t v;
        if (parse_int64(value, &v) || v < o->min || v > o->max)
            return cli_usage_error(spec->name, "%s '%s': must be an integer in [%" PRId64 ", %" PRId64 "]",
                                   o->name, value, o->min, o->max);
        *(int64_t *)o->dst = v;
        return 0;
    }
    case CLI_OPT_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 0);
        if (!value[0] || errno || *end || value[0] == '-')
            return cli_usage_error(spec->name, "%s '%s': must be a non-negative integer", o->name, value);
        *(uint64_t *)o->dst = v;
        return 0;
    }
    case CLI_OPT_STR:
        if (!value[0]) return cli_usage_error(spec->name, "%s: the value is empty", o->name);
        *(const char **)o->dst = value;
        return 0;
    case CLI_OPT_CUSTOM:
        if (o->parse(value, o->dst, why, sizeof why))
            return cli_usage_error(spec->name, "%s '%s': %s", o->name, value, why);
        return 0;
    case CLI_OPT_FLAG:
        break;
    }
    return cli_usage_error(spec->name, "%s takes no value", o->name);
}

static cli_opt *find_opt(cli_opt *opts, size_t nopts, const char *name, size_t len)
{
    for (size_t i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

cli_parse_result cli_parse(const cli_spec *spec, cli_opt *opts, size_t nopts, int argc,
                           char **argv, const char **pos, int *npos)
{
    int n = 0, only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (n >= spec->max_positional) {
                cli_usage_error(spec->name, "unexpected argument '%s'; see 'w4a8moe %s --help'", a,
                                spec->name);
                return CLI_PARSE_ERROR;
            }
            pos[n++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(spec, opts, nopts);
            return CLI_PARSE_HELP;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        cli_opt *o = find_opt(opts, nopts, a, len);
        if (!o) {
            cli_usage_error(spec->name, "unknown option '%.*s'; see 'w4a8moe %s --help'", (int)len, a,
                            spec->name);
            return CLI_PARSE_ERROR;
        }
        if (o->given) {
            cli_usage_error(spec->name, "%s is given twice", o->name);
            return CLI_PARSE_ERROR;
        }
        o->given = 1;
        if (o->kind == CLI_OPT_FLAG) {
            if (eq) {
                cli_usage_error(spec->name, "%s takes no value", o->name);
                return CLI_PARSE_ERROR;
            }
            *(int *)o->dst = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) {
            cli_usage_error(spec->name, "%s needs a value (%s)", o->name, o->metavar);
            return CLI_PARSE_ERROR;
        }
        if (parse_value(spec, o, value)) return CLI_PARSE_ERROR;
    }
    if (npos) *npos = n;
    return CLI_PARSE_OK;
}

/* ---- value parsers ------------------------------------------------------------------------- */

/* "1,16,128": positive token counts, at most CLI_LIST_CAP of them */
int cli_parse_tokens(const char *value, void *dst, char *why, size_t cap)
{
    cli_int_list *l = dst;
    l->n = 0;
    const char *p = value;
    for (;;) {
        char item[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item) {
            snprintf(why, cap, "must be a comma-separated list of token counts, e.g. 1,16,128");
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        int64_t v;
        if (parse_int64(item, &v) || v < 1 || v > (1 << 24)) {
            snprintf(why, cap, "'%s' is not a token count in [1, %d]", item, 1 << 24);
            return -1;
        }
        if (l->n == CLI_LIST_CAP) {
            snprintf(why, cap, "at most %d token counts", CLI_LIST_CAP);
            return -1;
        }
        l->v[l->n++] = v;
        if (!p[len]) return 0;
        p += len + 1;
    }
}

int cli_parse_model(const char *value, void *dst, char *why, size_t cap)
{
    const w4a8moe_model *m = w4a8moe_model_find(value);
    if (!m) {
        size_t used = (size_t)snprintf(why, cap, "no built-in model of that name; hint: one of");
        for (const w4a8moe_model *x = w4a8moe_models(); x->name && used < cap; x++)
            used += (size_t)snprintf(why + used, cap - used, "%s %s", x == w4a8moe_models() ? "" : ",",
                                     x->name);
        return -1;
    }
    *(const w4a8moe_model **)dst = m;
    return 0;
}

static const char *const dtype_names[W4A8MOE_DTYPE_COUNT_] = {"bf16", "f16", "f32"};
static const char *const act_names[W4A8MOE_ACTIVATION_COUNT_] = {"silu", "gelu_tanh"};
static const char *const routing_names[W4A8MOE_ROUTING_COUNT_] = {
    "softmax_topk", "sigmoid_grouped_topk", "sigmoid_top1"};

const char *cli_dtype_name(w4a8moe_dtype dt)
{
    return (unsigned)dt < W4A8MOE_DTYPE_COUNT_ ? dtype_names[dt] : "?";
}

const char *cli_activation_name(w4a8moe_activation act)
{
    return (unsigned)act < W4A8MOE_ACTIVATION_COUNT_ ? act_names[act] : "?";
}

const char *cli_routing_name(w4a8moe_routing r)
{
    return (unsigned)r < W4A8MOE_ROUTING_COUNT_ ? routing_names[r] : "?";
}

int cli_parse_activation(const char *value, void *dst, char *why, size_t cap)
{
    for (int i = 0; i < W4A8MOE_ACTIVATION_COUNT_; i++)
        if (strcmp(value, act_names[i]) == 0) {
            *(w4a8moe_activation *)dst = (w4a8moe_activation)i;
            return 0;
        }
    snprintf(why, cap, "must be silu or gelu_tanh");
    return -1;
}

int cli_parse_dtype(const char *value, void *dst, char *why, size_t cap)
{
    for (int i = 0; i < W4A8MOE_DTYPE_COUNT_; i++)
        if (strcmp(value, dtype_names[i]) == 0) {
            *(w4a8moe_dtype *)dst = (w4a8moe_dtype)i;
            return 0;
        }
    snprintf(why, cap, "must be bf16, f16 or f32");
    return -1;
}

/* "A,B": two finite positive floats (static activation scales of GEMM1 and GEMM2) */
int cli_parse_scale_pair(const char *value, void *dst, char *why, size_t cap)
{
    float *s = dst;
    const char *p = value;
    for (int i = 0; i < 2; i++) {
        char *end;
        errno = 0;
        float v = strtof(p, &end);
        if (end == p || errno || !(v > 0.0f) || isinf(v) || *end != (i == 0 ? ',' : '\0')) {
            snprintf(why, cap, "must be two finite positive scales A,B (GEMM1 input, GEMM2 input)");
            return -1;
        }
        s[i] = v;
        p = end + 1;
    }
    return 0;
}

/* ---- device -------------------------------------------------------------------------------- */

int cli_parse_device(const char *value, void *dst, char *why, size_t cap)
{
    cli_device *d = dst;
    d->is_auto = 0;
    if (strcmp(value, "auto") == 0) {
        d->kind = W4A8MOE_DEVICE_CPU;
        d->ordinal = 0;
        d->is_auto = 1;
        return 0;
    }
    if (strcmp(value, "cpu") == 0) {
        d->kind = W4A8MOE_DEVICE_CPU;
        d->ordinal = 0;
        return 0;
    }
    if (strncmp(value, "cuda", 4) == 0 && (value[4] == '\0' || value[4] == ':')) {
        int64_t ord = 0;
        if (value[4] == ':' && (parse_int64(value + 5, &ord) || ord < 0 || ord > 1023)) {
            snprintf(why, cap, "the device number after 'cuda:' must be in [0, 1023]");
            return -1;
        }
#ifndef W4A8MOE_WITH_CUDA
        snprintf(why, cap, "this build of w4a8moe has no CUDA support; hint: rebuild where nvcc "
                           "is installed");
        return -1;
#else
        d->kind = W4A8MOE_DEVICE_CUDA;
        d->ordinal = (int32_t)ord;
        return 0;
#endif
    }
    snprintf(why, cap, "must be auto, cpu, cuda or cuda:N");
    return -1;
}

void cli_device_resolve(cli_device *dev)
{
    if (!dev->is_auto) return;
    cli_device cuda = {W4A8MOE_DEVICE_CUDA, 0, 1}, cpu = {W4A8MOE_DEVICE_CPU, 0, 1};
    w4a8moe_device_info info;
    char why[W4A8MOE_ERR_CAP];
    /* the CUDA query succeeds without a device too, with cuda_sm = 0 and the reason */
    *dev = cli_device_query(&cuda, &info, why, sizeof why) == 0 && info.cuda_sm > 0 ? cuda : cpu;
}

int cli_device_fallback(cli_device *dev, w4a8moe_status st, const char *why)
{
    if (!dev->is_auto || dev->kind != W4A8MOE_DEVICE_CUDA || st != W4A8MOE_STATUS_UNSUPPORTED) return 0;
    printf("device: auto falls back to cpu: cuda:%d cannot run this layer: %s\n", dev->ordinal, why);
    dev->kind = W4A8MOE_DEVICE_CPU;
    dev->ordinal = 0;
    return 1;
}

void cli_device_apply(const cli_device *dev, w4a8moe_layer_options *opts)
{
    opts->device_kind = dev->kind;
    opts->device_ordinal = dev->ordinal;
}

void cli_device_label(const cli_device *dev, char *buf, size_t cap)
{
    char what[W4A8MOE_ERR_CAP];
    cli_device_describe(dev, what, sizeof what);
    if (dev->kind == W4A8MOE_DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d (%s)%s", dev->ordinal, what, dev->is_auto ? ", chosen by --device auto" : "");
    else
        snprintf(buf, cap, "%s%s", what, dev->is_auto ? ", chosen by --device auto" : "");
}

int cli_device_query(const cli_device *dev, w4a8moe_device_info *info, char *why, size_t cap)
{
    const w4a8moe_device_ops *ops = w4a8moe_registry_device(dev->kind);
    memset(info, 0, sizeof *info);
    if (!ops) {
        snprintf(why, cap, "this build of w4a8moe has no %s device support",
                 dev->kind == W4A8MOE_DEVICE_CUDA ? "CUDA" : "such");
        return -1;
    }
    w4a8moe_err err = {{0}};
    if (ops->query(dev->ordinal, info, &err) != W4A8MOE_STATUS_OK) {
        snprintf(why, cap, "%s", err.msg);
        return -1;
    }
    return 0;
}

void cli_device_describe(const cli_device *dev, char *buf, size_t cap)
{
    w4a8moe_device_info info;
    if (cli_device_query(dev, &info, buf, cap) == 0) snprintf(buf, cap, "%s", info.name);
}
