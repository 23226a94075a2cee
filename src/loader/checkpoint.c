/*
 * checkpoint.c — opening a checkpoint directory: configuration, safetensors files (single,
 * sharded through model.safetensors.index.json, or every *.safetensors file), one sorted
 * name → file table, reference counting, and router logits. Layer decoding is in
 * ckpt_layer.c.
 */
#include "checkpoint.h"
#include "ckpt_internal.h"
#include "hf_json.h"
#include "names.h"

#include <jansson.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const ckpt_entry *)a)->name, ((const ckpt_entry *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static w4a8moe_status open_file(w4a8moe_ckpt *c, const char *file, w4a8moe_err *err)
{
    char *path = join(c->dir, file);
    RETURN_IF(err, !path, W4A8MOE_STATUS_OUT_OF_MEMORY, "path");
    w4a8moe_st_file *f;
    w4a8moe_status st = w4a8moe_st_open(path, &f, err);
    free(path);
    FORWARD(st);
    c->files[c->nfiles++] = f;
    return W4A8MOE_STATUS_OK;
}

/* The name → file table over every tensor of every file; a name in two files is an error. */
static w4a8moe_status map_all(w4a8moe_ckpt *c, w4a8moe_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nfiles; i++) n += w4a8moe_st_count(c->files[i]);
    c->map = malloc((n ? n : 1) * sizeof *c->map);
    RETURN_IF(err, !c->map, W4A8MOE_STATUS_OUT_OF_MEMORY, "tensor table of %zu entries", n);
    for (size_t i = 0; i < c->nfiles; i++)
        for (size_t j = 0; j < w4a8moe_st_count(c->files[i]); j++) {
            c->map[c->nmap].name = w4a8moe_st_at(c->files[i], j)->name;
            c->map[c->nmap++].file = (uint32_t)i;
        }
    qsort(c->map, c->nmap, sizeof *c->map, cmp_entry);
    for (size_t i = 1; i < c->nmap; i++)
        RETURN_IF(err, strcmp(c->map[i].name, c->map[i - 1].name) == 0, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: tensor '%s' is in both %s and %s", c->dir, c->map[i].name,
                  w4a8moe_st_path(c->files[c->map[i - 1].file]), w4a8moe_st_path(c->files[c->map[i].file]));
    return W4A8MOE_STATUS_OK;
}

/* A shard name from the index must be a plain file name inside the directory. */
static int safe_file_name(const char *f)
{
    return f[0] && f[0] != '.' && !strchr(f, '/') && !strchr(f, '\\');
}

/* model.safetensors.index.json: open every shard it names, then check each tensor it lists
 * is in the shard it says. */
static w4a8moe_status open_index(w4a8moe_ckpt *c, const char *path, const char *text, size_t len,
                                 w4a8moe_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    RETURN_IF(err, !root, W4A8MOE_STATUS_FORMAT_ERROR, "%s: not valid JSON: %s (line %d, column %d)",
              path, je.text, je.line, je.column);
    c->index_json = root;
    json_t *wm = json_object_get(root, "weight_map");
    RETURN_IF(err, !json_is_object(wm) || json_object_size(wm) == 0, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"weight_map\" is missing, empty or not an object", path);
    size_t n = json_object_size(wm), nf = 0;
    const char **names = malloc(n * sizeof *names);
    RETURN_IF(err, !names, W4A8MOE_STATUS_OUT_OF_MEMORY, "shard list");
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v)
    {
        if (!json_is_string(v) || !safe_file_name(json_string_value(v))) {
            free(names);
            RETURN_ERR(err, W4A8MOE_STATUS_FORMAT_ERROR,
                       "%s: weight_map entry '%.100s' is not a plain file name inside the directory",
                       path, key);
        }
        names[nf++] = json_string_value(v);
    }
    qsort(names, nf, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < nf; i++)
        if (i == 0 || strcmp(names[i], names[u - 1]) != 0) names[u++] = names[i];
    c->files = calloc(u, sizeof *c->files);
    w4a8moe_status st = c->files ? W4A8MOE_STATUS_OK
                                 : w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "files");
    for (size_t i = 0; i < u && st == W4A8MOE_STATUS_OK; i++) st = open_file(c, names[i], err);
    free(names);
    FORWARD(st);
    FORWARD(map_all(c, err));
    json_object_foreach(wm, key, v)
    {
        const w4a8moe_st_tensor *t = w4a8moe_ckpt_find(c, key);
        RETURN_IF(err, !t, W4A8MOE_STATUS_NOT_FOUND,
                  "%s: weight_map puts tensor '%.120s' in %s, which does not hold it", path, key,
                  json_string_value(v));
    }
    return W4A8MOE_STATUS_OK;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a > b && strcmp(s + a - b, suf) == 0;
}

/* No index: model.safetensors if present, else every *.safetensors file of the directory. */
static w4a8moe_status open_plain(w4a8moe_ckpt *c, w4a8moe_err *err)
{
    char *single = join(c->dir, "model.safetensors");
    RETURN_IF(err, !single, W4A8MOE_STATUS_OUT_OF_MEMORY, "path");
    FILE *fp = fopen(single, "rb");
    free(single);
    c->files = calloc(1, sizeof *c->files);
    RETURN_IF(err, !c->files, W4A8MOE_STATUS_OUT_OF_MEMORY, "files");
    if (fp) {
        fclose(fp);
        FORWARD(open_file(c, "model.safetensors", err));
        return map_all(c, err);
    }
    DIR *d = opendir(c->dir);
    RETURN_IF(err, !d, W4A8MOE_STATUS_IO_ERROR, "%s: cannot list the directory", c->dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    while (st == W4A8MOE_STATUS_OK && (de = readdir(d))) {
        if (!has_suffix(de->d_name, ".safetensors") || de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(names, cap * sizeof *names);
            if (!p) st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "names");
            else names = p;
        }
        if (st == W4A8MOE_STATUS_OK && !(names[n++] = strdup(de->d_name)))
            st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "name");
    }
    closedir(d);
    if (st == W4A8MOE_STATUS_OK && n == 0)
        st = w4a8moe_err_set(err, W4A8MOE_STATUS_NOT_FOUND, __FILE__, __LINE__,
                             "%s: no model.safetensors, model.safetensors.index.json or other "
                             "*.safetensors file",
                             c->dir);
    if (st == W4A8MOE_STATUS_OK) {
        qsort(names, n, sizeof *names, cmp_str);
        free(c->files);
        c->files = calloc(n, sizeof *c->files);
        if (!c->files) st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "files");
    }
    for (size_t i = 0; i < n && st == W4A8MOE_STATUS_OK; i++) st = open_file(c, names[i], err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    FORWARD(st);
    return map_all(c, err);
}

static w4a8moe_status ckpt_build(w4a8moe_ckpt *c, const char *dir, w4a8moe_err *err)
{
    c->dir = strdup(dir);
    RETURN_IF(err, !c->dir, W4A8MOE_STATUS_OUT_OF_MEMORY, "dir");
    FORWARD(w4a8moe_hf_config_load(dir, &c->cfg, err));
    c->cfg_loaded = 1;
    char *ipath = join(dir, "model.safetensors.index.json"), *text = NULL;
    size_t len = 0;
    RETURN_IF(err, !ipath, W4A8MOE_STATUS_OUT_OF_MEMORY, "path");
    w4a8moe_status st = w4a8moe_read_text(ipath, 0, &text, &len, err);
    if (st == W4A8MOE_STATUS_OK) st = text ? open_index(c, ipath, text, len, err) : open_plain(c, err);
    free(text);
    free(ipath);
    FORWARD(st);
    c->bias_cache = calloc((size_t)c->cfg.num_layers, sizeof *c->bias_cache);
    RETURN_IF(err, !c->bias_cache, W4A8MOE_STATUS_OUT_OF_MEMORY, "bias cache");
    return W4A8MOE_STATUS_OK;
}

static void ckpt_destroy(w4a8moe_ckpt *c)
{
    for (size_t i = 0; i < c->nfiles; i++) w4a8moe_st_close(c->files[i]);
    free(c->files);
    free(c->map);
    if (c->index_json) json_decref(c->index_json);
    if (c->bias_cache)
        for (int32_t i = 0; i < c->cfg.num_layers; i++) free(c->bias_cache[i]);
    free(c->bias_cache);
    if (c->cfg_loaded) w4a8moe_hf_config_free(&c->cfg);
    free(c->dir);
    free(c);
}

w4a8moe_status w4a8moe_ckpt_open(const char *dir, w4a8moe_ckpt **out, w4a8moe_err *err)
{
    RETURN_IF(err, !dir || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "checkpoint: dir or out is NULL");
    *out = NULL;
    w4a8moe_ckpt *c = calloc(1, sizeof *c);
    RETURN_IF(err, !c, W4A8MOE_STATUS_OUT_OF_MEMORY, "checkpoint handle");
    c->refs = 1;
    w4a8moe_status st = ckpt_build(c, dir, err);
    if (st != W4A8MOE_STATUS_OK) {
        ckpt_destroy(c);
        return st;
    }
    *out = c;
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_ckpt_retain(w4a8moe_ckpt *c)
{
    if (c) __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void w4a8moe_ckpt_release(w4a8moe_ckpt *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) ckpt_destroy(c);
}

const w4a8moe_hf_config *w4a8moe_ckpt_config(const w4a8moe_ckpt *c) { return &c->cfg; }
const char *w4a8moe_ckpt_dir(const w4a8moe_ckpt *c) { return c->dir; }
size_t w4a8moe_ckpt_num_files(const w4a8moe_ckpt *c) { return c->nfiles; }

const w4a8moe_st_file *w4a8moe_ckpt_file(const w4a8moe_ckpt *c, size_t i)
{
    return i < c->nfiles ? c->files[i] : NULL;
}

uint64_t w4a8moe_ckpt_bytes(const w4a8moe_ckpt *c)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->nfiles; i++)
        for (size_t j = 0; j < w4a8moe_st_count(c->files[i]); j++) n += w4a8moe_st_at(c->files[i], j)->nbytes;
    return n;
}

const w4a8moe_st_tensor *w4a8moe_ckpt_find(const w4a8moe_ckpt *c, const char *name)
{
    size_t lo = 0, hi = c->nmap;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(name, c->map[mid].name);
        if (r == 0) return w4a8moe_st_find(c->files[c->map[mid].file], name);
        if (r < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

w4a8moe_status w4a8moe_ckpt_get(const w4a8moe_ckpt *c, const char *name,
                                const w4a8moe_st_tensor **t, w4a8moe_err *err)
{
    *t = w4a8moe_ckpt_find(c, name);
    RETURN_IF(err, !*t, W4A8MOE_STATUS_NOT_FOUND, "%s: tensor '%s' is missing from the checkpoint",
              c->dir, name);
    return W4A8MOE_STATUS_OK;
}

int w4a8moe_st_to_dtype(w4a8moe_st_dtype dt)
{
    switch (dt) {
    case W4A8MOE_ST_BF16: return W4A8MOE_DTYPE_BF16;
    case W4A8MOE_ST_F16: return W4A8MOE_DTYPE_F16;
    case W4A8MOE_ST_F32: return W4A8MOE_DTYPE_F32;
    default: return -1;
    }
}

w4a8moe_status w4a8moe_ckpt_router_logits(const w4a8moe_ckpt *c, int32_t layer, int64_t T,
                                          const void *x, w4a8moe_dtype x_dtype, float *logits,
                                          w4a8moe_err *err)
{
    const w4a8moe_hf_config *cfg = &c->cfg;
    RETURN_IF(err, !w4a8moe_hf_config_is_moe(cfg, layer), W4A8MOE_STATUS_NOT_FOUND,
              "%s: layer %d is not an MoE layer", c->dir, layer);
    RETURN_IF(err, T < 0 || (T > 0 && (!x || !logits)) || (unsigned)x_dtype >= W4A8MOE_DTYPE_COUNT_,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "router logits: bad T, x, logits or dtype");
    char name[256];
    w4a8moe_name_router(cfg, layer, name, sizeof name - 8);
    strcat(name, ".weight");
    const w4a8moe_st_tensor *t;
    FORWARD(w4a8moe_ckpt_get(c, name, &t, err));
    int64_t E = cfg->num_experts, H = cfg->hidden;
    int dt = w4a8moe_st_to_dtype(t->dtype);
    RETURN_IF(err, dt < 0, W4A8MOE_STATUS_UNSUPPORTED,
              "tensor '%s': router weight of dtype %s; hint: w4a8moe reads an unquantised "
              "(bf16/f16/f32) router",
              name, w4a8moe_st_dtype_name(t->dtype));
    RETURN_IF(err, t->ndim != 2 || t->shape[0] != E || t->shape[1] != H, W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s': shape must be [E, H] = [%lld, %lld]", name, (long long)E, (long long)H);
    for (int64_t i = 0; i < T; i++)
        for (int64_t e = 0; e < E; e++) {
            float acc = 0.0f;
            for (int64_t h = 0; h < H; h++)
                acc += w4a8moe_ckpt_elem(x, x_dtype, i * H + h) * w4a8moe_ckpt_elem(t->data, dt, e * H + h);
            logits[i * E + e] = acc;
        }
    return W4A8MOE_STATUS_OK;
}
