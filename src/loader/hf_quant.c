/*
 * hf_quant.c — the quantisation side of a checkpoint's configuration: compressed-tensors'
 * quantization_config (config groups, storage format, ignore list), the SGLang / TensorRT-LLM
 * w4afp8 files (hf_quant_config.json, quant_cfg.json), and module-name matching with "re:"
 * patterns (Python `re.match` translated to POSIX ERE).
 *
 * A config group that w4a8moe cannot run is not an error by itself (a checkpoint may quantise
 * attention with FP8); it is when that group covers the routed experts.
 */
#include "hf_json.h"
#include "names.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const format_names[W4A8MOE_CKPT_FORMAT_COUNT_] = {
    "dense", "pack-quantized", "int-quantized", "sglang-w4afp8"};

const char *w4a8moe_ckpt_format_name(w4a8moe_ckpt_format f)
{
    return (unsigned)f < W4A8MOE_CKPT_FORMAT_COUNT_ ? format_names[f] : "unknown";
}

/* ---- "re:" patterns ---------------------------------------------------------------------- */

/* Python escape class → POSIX; inside a bracket expression without the brackets. */
static const char *class_for(char c, int in_bracket)
{
    switch (c) {
    case 'd': return in_bracket ? "0-9" : "[0-9]";
    case 'w': return in_bracket ? "A-Za-z0-9_" : "[A-Za-z0-9_]";
    case 's': return in_bracket ? "[:space:]" : "[[:space:]]";
    case 'D': return in_bracket ? NULL : "[^0-9]";
    case 'W': return in_bracket ? NULL : "[^A-Za-z0-9_]";
    case 'S': return in_bracket ? NULL : "[^[:space:]]";
    default: return NULL;
    }
}

typedef struct re_out {
    char *buf;
    size_t cap, n;
    int bad;
} re_out;

static void put(re_out *o, const char *s)
{
    size_t l = strlen(s);
    if (o->n + l + 1 > o->cap) {
        o->bad = 1;
        return;
    }
    memcpy(o->buf + o->n, s, l + 1);
    o->n += l;
}

static void put_char(re_out *o, char c)
{
    char s[2] = {c, 0};
    put(o, s);
}

/* Copies a bracket expression starting at p ('['); returns the char after its ']'. */
static const char *copy_bracket(const char *p, re_out *o)
{
    put_char(o, *p++);
    if (*p == '^') put_char(o, *p++);
    if (*p == ']') put_char(o, *p++);
    while (*p && *p != ']') {
        if (*p == '\\' && p[1]) {
            const char *cls = class_for(p[1], 1);
            if (cls) put(o, cls);
            else if (strchr("dwsDWS", p[1])) o->bad = 1;
            else put_char(o, p[1]);
            p += 2;
            continue;
        }
        put_char(o, *p++);
    }
    if (*p != ']') o->bad = 1;
    else put_char(o, *p++);
    return p;
}

/* A quantifier (* + ? {m,n}) at p given the state of what precedes it (0 an atom, 1 a
 * quantifier, 2 a lazy quantifier); returns the characters consumed, -1 to refuse. glibc
 * compiles x+ and x{m,n} by copying x, so stacked or nested repetitions grow the compiled
 * pattern exponentially (a fuzzer found `_+++++...` taking gigabytes): repeated quantifiers
 * are refused (Python calls them "multiple repeat" too) and the copies are bounded. */
static int quantifier(const char *p, int *state, long *reps, re_out *o)
{
    if (*p == '?' && *state == 1) { /* lazy: whether a match exists does not depend on it */
        *state = 2;
        return 1;
    }
    if (*state) return -1;
    *state = 1;
    if (*p == '*' || *p == '?') {
        put_char(o, *p);
        return 1;
    }
    long lo = 1, hi = 1;
    const char *end = p;
    if (*p == '{') {
        char *e;
        lo = strtol(p + 1, &e, 10);
        hi = *e == ',' ? strtol(e + 1, &e, 10) : lo;
        if (*e != '}' || lo < 0 || hi < 0 || lo > 4096 || hi > 4096) return -1;
        end = e;
    }
    *reps *= (hi > lo ? hi : lo) + 1;
    if (*reps > 4096) return -1;
    for (const char *q = p; q <= end; q++) put_char(o, *q);
    return (int)(end - p) + 1;
}

/* Python re syntax (the common subset) → POSIX ERE; -1 for what has no translation. */
static int translate_re(const char *py, char *buf, size_t cap)
{
    re_out o = {buf, cap, 0, 0};
    buf[0] = '\0';
    if (strlen(py) > 1024) return -1; /* a module-name pattern; anything longer is not one */
    put(&o, "^(");
    int state = 0;
    long reps = 1;
    for (const char *p = py; *p && !o.bad;) {
        if (*p == '\\') {
            char c = p[1];
            const char *cls = class_for(c, 0);
            if (!c || strchr("bBAZ0123456789", c)) return -1;
            if (cls) put(&o, cls);
            else if (strchr(".[](){}*+?|^$\\", c)) {
                put_char(&o, '\\');
                put_char(&o, c);
            } else put_char(&o, c);
            p += 2;
            state = 0;
        } else if (*p == '[') {
            p = copy_bracket(p, &o);
            state = 0;
        } else if (p[0] == '(' && p[1] == '?') {
            if (p[2] != ':') return -1; /* lookarounds, named groups, flags */
            put_char(&o, '(');
            p += 3;
            state = 0;
        } else if (strchr("*+?{", *p)) {
            int n = quantifier(p, &state, &reps, &o);
            if (n < 0) return -1;
            p += n;
        } else {
            put_char(&o, *p++);
            state = 0;
        }
    }
    put(&o, ")");
    return o.bad ? -1 : 0;
}

/* 1 match, 0 no match, -1 a pattern we cannot translate or compile. */
static int re_match3(const char *pattern, const char *name)
{
    size_t cap = 4 * strlen(pattern) + 64;
    char *ere = malloc(cap);
    if (!ere) return -1;
    regex_t re;
    int rc = translate_re(pattern, ere, cap) == 0 && regcomp(&re, ere, REG_EXTENDED | REG_NOSUB) == 0;
    free(ere);
    if (!rc) return -1;
    int m = regexec(&re, name, 0, NULL, 0) == 0;
    regfree(&re);
    return m;
}

int w4a8moe_re_match(const char *pattern, const char *name)
{
    return pattern && name && re_match3(pattern, name) == 1;
}

static int target_matches(const char *target, const char *name)
{
    if (strncmp(target, "re:", 3) == 0) return w4a8moe_re_match(target + 3, name);
    return strcmp(target, name) == 0;
}

int w4a8moe_ignore_matches(const w4a8moe_hf_config *cfg, const char *module_name)
{
    for (int32_t i = 0; cfg && module_name && i < cfg->n_ignore; i++)
        if (target_matches(cfg->ignore[i], module_name)) return 1;
    return 0;
}

const w4a8moe_hf_qgroup *w4a8moe_hf_config_group_for(const w4a8moe_hf_config *cfg,
                                                     const char *module_name)
{
    if (!cfg || !module_name || !cfg->quantized || w4a8moe_ignore_matches(cfg, module_name))
        return NULL;
    if (cfg->format == W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8)
        return strstr(module_name, ".experts.") && !strstr(module_name, "shared") ? &cfg->groups[0]
                                                                                 : NULL;
    /* compressed-tensors' precedence: exact name, then regex, then the class name */
    for (int pass = 0; pass < 3; pass++)
        for (int32_t g = 0; g < cfg->n_groups; g++)
            for (int32_t t = 0; t < cfg->groups[g].n_targets; t++) {
                const char *tg = cfg->groups[g].targets[t];
                int is_re = strncmp(tg, "re:", 3) == 0;
                if ((pass == 0 && !is_re && strcmp(tg, module_name) == 0) ||
                    (pass == 1 && is_re && w4a8moe_re_match(tg + 3, module_name)) ||
                    (pass == 2 && strcmp(tg, "Linear") == 0))
                    return &cfg->groups[g];
            }
    return NULL;
}

/* ---- compressed-tensors ------------------------------------------------------------------ */

static w4a8moe_status str_list(const w4a8moe_json_ctx *c, const json_t *v, const char *what,
                               char ***out, int32_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_array(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"%s\" must be a list of strings", c->label, what);
    size_t cnt = json_array_size(v);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    RETURN_IF(c->err, !*out, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s list", what);
    for (size_t i = 0; i < cnt; i++) {
        const json_t *s = json_array_get(v, i);
        RETURN_IF(c->err, !json_is_string(s), W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: \"%s\" entry %zu is not a string", c->label, what, i);
        const char *txt = json_string_value(s);
        RETURN_IF(c->err, strncmp(txt, "re:", 3) == 0 && re_match3(txt + 3, "") < 0,
                  W4A8MOE_STATUS_UNSUPPORTED,
                  "%s: \"%s\" pattern '%.80s' uses regular-expression syntax w4a8moe cannot "
                  "translate (lookarounds, backreferences, \\b)",
                  c->label, what, txt);
        (*out)[i] = strdup(txt);
        RETURN_IF(c->err, !(*out)[i], W4A8MOE_STATUS_OUT_OF_MEMORY, "%s entry", what);
        (*n)++;
    }
    return W4A8MOE_STATUS_OK;
}

static int streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* Fields we read from weights / input_activations; wrong types are FORMAT_ERROR. */
typedef struct qargs {
    int64_t num_bits, group_size;
    const char *type, *strategy;
    int symmetric, dynamic, present;
    const json_t *actorder;
} qargs;

static w4a8moe_status read_args(const w4a8moe_json_ctx *c, const json_t *o, qargs *a)
{
    memset(a, 0, sizeof *a);
    a->symmetric = 1;
    if (!o || json_is_null(o)) return W4A8MOE_STATUS_OK;
    RETURN_IF(c->err, !json_is_object(o), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"%s\" must be an object or null", c->label, c->path);
    a->present = 1;
    w4a8moe_json_ctx cc = *c;
    FORWARD(w4a8moe_json_int(&cc, o, "num_bits", 1, 1, 64, &a->num_bits));
    FORWARD(w4a8moe_json_int(&cc, o, "group_size", 0, 1, 1 << 20, &a->group_size));
    FORWARD(w4a8moe_json_str(&cc, o, "type", &a->type));
    FORWARD(w4a8moe_json_str(&cc, o, "strategy", &a->strategy));
    FORWARD(w4a8moe_json_bool(&cc, o, "symmetric", &a->symmetric));
    FORWARD(w4a8moe_json_bool(&cc, o, "dynamic", &a->dynamic));
    a->actorder = json_object_get(o, "actorder");
    return W4A8MOE_STATUS_OK;
}

static void why(w4a8moe_hf_qgroup *g, const char *fmt, const char *field, const char *value)
{
    if (!g->supported) return; /* keep the first reason */
    g->supported = 0;
    snprintf(g->why, sizeof g->why, fmt, g->name, field, value);
}

static void judge_weights(w4a8moe_hf_qgroup *g, const qargs *w)
{
    char num[32];
    if (!w->present) return why(g, "config group %s: \"%s\" is %s (no weight quantisation)", "weights", "null");
    snprintf(num, sizeof num, "%lld", (long long)w->num_bits);
    if (w->num_bits != 4) why(g, "config group %s: \"weights.%s\" = %s; hint: w4a8moe runs int4 weights", "num_bits", num);
    if (!streq(w->type, "int")) why(g, "config group %s: \"weights.%s\" = \"%s\"; hint: w4a8moe runs int weights", "type", w->type ? w->type : "");
    if (!w->symmetric) why(g, "config group %s: \"weights.%s\" = %s; hint: w4a8moe runs symmetric int4 (no zero points)", "symmetric", "false");
    if (!streq(w->strategy, "group")) why(g, "config group %s: \"weights.%s\" = \"%s\"; hint: w4a8moe runs group-wise scales", "strategy", w->strategy ? w->strategy : "");
    snprintf(num, sizeof num, "%lld", (long long)w->group_size);
    if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128)
        why(g, "config group %s: \"weights.%s\" = %s; hint: g must be 32, 64 or 128", "group_size", num);
    if (w->dynamic) why(g, "config group %s: \"weights.%s\" = %s", "dynamic", "true");
    const json_t *ao = w->actorder;
    if (ao && !json_is_null(ao) && !json_is_false(ao) &&
        !(json_is_string(ao) && (streq(json_string_value(ao), "weight") || streq(json_string_value(ao), "static"))))
        why(g, "config group %s: \"weights.%s\" = %s; hint: group activation ordering (g_idx) is not supported", "actorder",
            json_is_string(ao) ? json_string_value(ao) : "true");
    g->weight_bits = (int32_t)w->num_bits;
    g->group_size = (int32_t)w->group_size;
    g->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
}

static void judge_acts(w4a8moe_hf_qgroup *g, const qargs *a)
{
    char num[32];
    if (!a->present)
        return why(g, "config group %s: \"%s\" is %s: weight-only W4A16 is not a W4A8 scheme", "input_activations", "null");
    snprintf(num, sizeof num, "%lld", (long long)a->num_bits);
    if (a->num_bits != 8 || !streq(a->type, "float"))
        why(g, "config group %s: \"input_activations.%s\" = %s; hint: w4a8moe runs 8-bit float (fp8 e4m3) activations", "num_bits/type", num);
    if (!a->symmetric) why(g, "config group %s: \"input_activations.%s\" = %s", "symmetric", "false");
    if (streq(a->strategy, "token") && a->dynamic) g->act_scheme = W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
    else if (streq(a->strategy, "tensor") && !a->dynamic) g->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    else
        why(g, "config group %s: \"input_activations.%s\" = \"%s\" with that dynamic flag; hint: token+dynamic or tensor+static", "strategy",
            a->strategy ? a->strategy : "");
}

static w4a8moe_status parse_format(const char *f, w4a8moe_ckpt_format *out)
{
    if (streq(f, "pack-quantized")) *out = W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
    else if (streq(f, "int-quantized") || streq(f, "naive-quantized")) *out = W4A8MOE_CKPT_FORMAT_INT_QUANTIZED;
    else return W4A8MOE_STATUS_UNSUPPORTED;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status parse_group(const w4a8moe_json_ctx *c, const char *name, const json_t *g,
                                  const char *top_format, w4a8moe_hf_qgroup *out)
{
    snprintf(out->name, sizeof out->name, "%s", name);
    out->supported = 1;
    RETURN_IF(c->err, !json_is_object(g), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: config group \"%s\" is not an object", c->label, name);
    RETURN_IF(c->err, !json_is_array(json_object_get(g, "targets")), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: config group \"%s\" has no \"targets\" list", c->label, name);
    FORWARD(str_list(c, json_object_get(g, "targets"), "targets", &out->targets, &out->n_targets));
    w4a8moe_json_ctx cw = *c;
    qargs w, a, o;
    cw.path = "weights";
    FORWARD(read_args(&cw, json_object_get(g, "weights"), &w));
    cw.path = "input_activations";
    FORWARD(read_args(&cw, json_object_get(g, "input_activations"), &a));
    cw.path = "output_activations";
    FORWARD(read_args(&cw, json_object_get(g, "output_activations"), &o));
    const char *fmt;
    FORWARD(w4a8moe_json_str(c, g, "format", &fmt));
    if (!fmt) fmt = top_format;
    judge_weights(out, &w);
    judge_acts(out, &a);
    if (o.present) why(out, "config group %s: \"%s\" is %s; hint: output quantisation is not supported", "output_activations", "set");
    if (parse_format(fmt, &out->format) != W4A8MOE_STATUS_OK)
        why(out, "config group %s: \"%s\" = \"%s\"; hint: pack-quantized and int-quantized are supported", "format", fmt ? fmt : "");
    return W4A8MOE_STATUS_OK;
}

/* The group of the routed experts decides the checkpoint's scheme pair and format. */
static w4a8moe_status resolve_experts(const w4a8moe_json_ctx *c, w4a8moe_hf_config *cfg)
{
    char name[256];
    w4a8moe_name_expert(cfg, cfg->moe_layers[0], 0, W4A8MOE_PROJ_GATE, name, sizeof name);
    const w4a8moe_hf_qgroup *g = w4a8moe_hf_config_group_for(cfg, name);
    RETURN_IF(c->err, !g, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: the routed experts (%s) are not quantised: no config group targets them or "
              "\"ignore\" names them; hint: w4a8moe runs int4 experts (`w4a8moe quantize` makes them)",
              c->label, name);
    RETURN_IF(c->err, !g->supported, W4A8MOE_STATUS_UNSUPPORTED, "%s: %s", c->label, g->why);
    cfg->format = g->format;
    cfg->weight_scheme = g->weight_scheme;
    cfg->act_scheme = g->act_scheme;
    cfg->group_size = g->group_size;
    RETURN_IF(c->err, cfg->hidden % g->group_size || cfg->moe_inter % g->group_size,
              W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: group_size %d of config group %s does not divide hidden_size %lld and the expert "
              "intermediate size %lld",
              c->label, g->group_size, g->name, (long long)cfg->hidden, (long long)cfg->moe_inter);
    return W4A8MOE_STATUS_OK;
}

static void set_sglang(w4a8moe_hf_config *cfg)
{
    cfg->quantized = 1;
    snprintf(cfg->quant_method, sizeof cfg->quant_method, "w4afp8");
    cfg->format = W4A8MOE_CKPT_FORMAT_SGLANG_W4AFP8;
    cfg->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
    cfg->act_scheme = W4A8MOE_ACT_FP8_TENSOR_STATIC;
    cfg->group_size = 128;
    w4a8moe_hf_qgroup *g = cfg->groups;
    snprintf(g->name, sizeof g->name, "w4afp8");
    g->format = cfg->format;
    g->weight_bits = 4;
    g->group_size = 128;
    g->weight_scheme = cfg->weight_scheme;
    g->act_scheme = cfg->act_scheme;
    g->supported = 1;
    cfg->n_groups = 1;
}

w4a8moe_status w4a8moe_hf_quant_parse(const w4a8moe_json_ctx *c, const json_t *q, w4a8moe_hf_config *cfg)
{
    if (!q || json_is_null(q)) return W4A8MOE_STATUS_OK; /* dense */
    RETURN_IF(c->err, !json_is_object(q), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"quantization_config\" is not an object", c->label);
    const char *method, *fmt;
    FORWARD(w4a8moe_json_str(c, q, "quant_method", &method));
    FORWARD(w4a8moe_json_str(c, q, "format", &fmt));
    if (method && strstr(method, "w4afp8")) {
        cfg->groups = calloc(1, sizeof *cfg->groups);
        RETURN_IF(c->err, !cfg->groups, W4A8MOE_STATUS_OUT_OF_MEMORY, "config groups");
        set_sglang(cfg);
        return W4A8MOE_STATUS_OK;
    }
    RETURN_IF(c->err, !streq(method, "compressed-tensors"), W4A8MOE_STATUS_UNSUPPORTED,
              "%s: \"quantization_config.quant_method\" = \"%.40s\"; hint: w4a8moe loads "
              "compressed-tensors W4AFP8 and SGLang w4afp8 checkpoints",
              c->label, method ? method : "(missing)");
    snprintf(cfg->quant_method, sizeof cfg->quant_method, "%s", method);
    FORWARD(str_list(c, json_object_get(q, "ignore"), "ignore", &cfg->ignore, &cfg->n_ignore));
    const json_t *groups = json_object_get(q, "config_groups");
    RETURN_IF(c->err, !json_is_object(groups) || json_object_size(groups) == 0,
              W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"quantization_config.config_groups\" is missing or empty", c->label);
    cfg->groups = calloc(json_object_size(groups), sizeof *cfg->groups);
    RETURN_IF(c->err, !cfg->groups, W4A8MOE_STATUS_OUT_OF_MEMORY, "config groups");
    const char *key;
    const json_t *g;
    json_object_foreach((json_t *)groups, key, g)
    {
        cfg->n_groups++;
        FORWARD(parse_group(c, key, g, fmt, &cfg->groups[cfg->n_groups - 1]));
    }
    cfg->quantized = 1;
    return resolve_experts(c, cfg);
}

/* ---- SGLang / TensorRT-LLM w4afp8 -------------------------------------------------------- */

static const char *algo_of(const json_t *v)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "quant_algo")))
        return json_string_value(json_object_get(v, "quant_algo"));
    return NULL;
}

/* The quant_algo quant_cfg.json gives the routed experts of the first MoE layer (the block's
 * ".experts" entry, else any entry naming experts). */
static const char *experts_algo(const w4a8moe_hf_config *cfg, const json_t *layers)
{
    char block[200], key[256];
    w4a8moe_name_block(cfg, cfg->moe_layers[0], block, sizeof block);
    snprintf(key, sizeof key, "%s.experts", block);
    const char *a = algo_of(json_object_get(layers, key));
    if (a) return a;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)layers, k, v) if (strstr(k, ".experts") && !strstr(k, "shared")) return algo_of(v);
    return NULL;
}

static w4a8moe_status load_json(const char *text, size_t len, const char *label, json_t **out,
                                w4a8moe_err *err)
{
    json_error_t je;
    *out = NULL;
    if (!text) return W4A8MOE_STATUS_OK;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    RETURN_IF(err, !*out, W4A8MOE_STATUS_FORMAT_ERROR, "%s: not valid JSON: %s (line %d, column %d)",
              label, je.text, je.line, je.column);
    RETURN_IF(err, !json_is_object(*out), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the top level is not a JSON object", label);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status sglang_decide(w4a8moe_hf_config *cfg, const json_t *hq, const json_t *qc,
                                    const char *label, w4a8moe_err *err)
{
    const json_t *q = hq ? json_object_get(hq, "quantization") : NULL;
    const char *algo = algo_of(q ? q : hq);
    if (!algo && qc) algo = algo_of(qc);
    RETURN_IF(err, !algo, W4A8MOE_STATUS_FORMAT_ERROR, "%s: no \"quant_algo\" found", label);
    if (streq(algo, "W4A8_AWQ")) return W4A8MOE_STATUS_OK;
    RETURN_IF(err, !streq(algo, "MIXED_PRECISION"), W4A8MOE_STATUS_UNSUPPORTED,
              "%s: \"quant_algo\" = \"%.40s\"; hint: w4a8moe loads MIXED_PRECISION checkpoints "
              "whose experts are W4A8_AWQ",
              label, algo);
    RETURN_IF(err, !qc, W4A8MOE_STATUS_NOT_FOUND,
              "%s: quant_algo MIXED_PRECISION but quant_cfg.json is missing; hint: it maps each "
              "layer to its algorithm",
              label);
    const json_t *layers = json_object_get(qc, "quantized_layers");
    RETURN_IF(err, !json_is_object(layers), W4A8MOE_STATUS_FORMAT_ERROR,
              "quant_cfg.json: \"quantized_layers\" is missing or not an object");
    const char *ea = experts_algo(cfg, layers);
    RETURN_IF(err, !streq(ea, "W4A8_AWQ"), W4A8MOE_STATUS_UNSUPPORTED,
              "quant_cfg.json: the routed experts are %s%.40s%s; hint: w4a8moe runs W4A8_AWQ experts",
              ea ? "\"" : "", ea ? ea : "not listed", ea ? "\"" : "");
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_hf_config_apply_sglang(w4a8moe_hf_config *cfg, const char *hf_quant_json,
                                              size_t hf_quant_len, const char *quant_cfg_json,
                                              size_t quant_cfg_len, const char *label,
                                              w4a8moe_err *err)
{
    RETURN_IF(err, !cfg, W4A8MOE_STATUS_INVALID_ARGUMENT, "config is NULL");
    if (cfg->quantized || (!hf_quant_json && !quant_cfg_json)) return W4A8MOE_STATUS_OK;
    if (!label) label = "hf_quant_config.json";
    json_t *hq = NULL, *qc = NULL;
    w4a8moe_status st = load_json(hf_quant_json, hf_quant_len, label, &hq, err);
    if (st == W4A8MOE_STATUS_OK) st = load_json(quant_cfg_json, quant_cfg_len, "quant_cfg.json", &qc, err);
    if (st == W4A8MOE_STATUS_OK) st = sglang_decide(cfg, hq, qc, label, err);
    if (st == W4A8MOE_STATUS_OK) {
        cfg->groups = calloc(1, sizeof *cfg->groups);
        if (!cfg->groups) st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "groups");
        else set_sglang(cfg);
    }
    if (st == W4A8MOE_STATUS_OK && (cfg->hidden % 128 || cfg->moe_inter % 128))
        st = w4a8moe_err_set(err, W4A8MOE_STATUS_FORMAT_ERROR, __FILE__, __LINE__,
                             "%s: w4afp8 uses groups of 128, which do not divide hidden_size %lld "
                             "and the expert intermediate size %lld",
                             label, (long long)cfg->hidden, (long long)cfg->moe_inter);
    if (hq) json_decref(hq);
    if (qc) json_decref(qc);
    return st;
}
