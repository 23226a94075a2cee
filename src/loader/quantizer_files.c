/*
 * quantizer_files.c — the quantizer's file side: the source shards (model.safetensors or
 * model.safetensors.index.json), the destination directory, the mapped scratch file, the
 * output index, config.json's quantization_config with its ignore list, and the copy of the
 * checkpoint's other files (tokenizer, generation config). quantizer.c plans and quantises.
 */
#include "quantizer_impl.h"

#include <jansson.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"

/* ---- source -------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shard file names of an index's weight_map, sorted and unique (caller frees). */
static w4a8moe_status index_files(const char *path, char ***out, size_t *n, w4a8moe_err *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    RETURN_IF(err, !root, W4A8MOE_STATUS_FORMAT_ERROR, "%s: invalid JSON at line %d: %s", path,
              je.line, je.text);
    json_t *map = json_object_get(root, "weight_map");
    size_t cap = map ? json_object_size(map) : 0;
    char **names = json_is_object(map) && cap ? calloc(cap, sizeof *names) : NULL;
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    if (!json_is_object(map) || !cap)
        st = w4a8moe_err_set(err, W4A8MOE_STATUS_FORMAT_ERROR, __FILE__, __LINE__,
                             "%s: 'weight_map' is missing, empty or not an object", path);
    else if (!names)
        st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "index");
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v)
    {
        if (st != W4A8MOE_STATUS_OK) break;
        const char *f = json_string_value(v);
        if (!f || !f[0] || strchr(f, '/') || strcmp(f, "..") == 0)
            st = w4a8moe_err_set(err, W4A8MOE_STATUS_FORMAT_ERROR, __FILE__, __LINE__,
                                 "%s: weight_map['%s'] must be a file name in the checkpoint "
                                 "directory", path, key);
        else if (!(names[k++] = strdup(f)))
            st = w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__, __LINE__, "index");
    }
    json_decref(root);
    if (st != W4A8MOE_STATUS_OK) {
        for (size_t i = 0; i < k; i++) free(names[i]);
        free(names);
        return st;
    }
    qsort(names, k, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        if (u && strcmp(names[u - 1], names[i]) == 0) free(names[i]);
        else names[u++] = names[i];
    }
    *out = names;
    *n = u;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status src_add(qz_src *s, const char *path, w4a8moe_err *err)
{
    w4a8moe_st_file *f = NULL;
    FORWARD(w4a8moe_st_open(path, &f, err));
    s->files[s->n_files] = f;
    s->consumed[s->n_files] = calloc(w4a8moe_st_count(f) + 1, 1);
    s->n_files++;
    RETURN_IF(err, !s->consumed[s->n_files - 1], W4A8MOE_STATUS_OUT_OF_MEMORY, "%s", path);
    return W4A8MOE_STATUS_OK;
}

/* Without an index or model.safetensors: every *.safetensors of the directory, sorted (as the
 * loader reads such a directory). */
static w4a8moe_status glob_files(const char *dir, char ***out, size_t *n, w4a8moe_err *err)
{
    DIR *d = opendir(dir);
    RETURN_IF(err, !d, W4A8MOE_STATUS_IO_ERROR, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t k = 0, cap = 0;
    int oom = 0;
    for (struct dirent *e; !oom && (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 12 || strcmp(e->d_name + len - 12, ".safetensors")) continue;
        if (k == cap) {
            char **t = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *t);
            if (!t) {
                oom = 1;
                break;
            }
            names = t;
        }
        oom = !(names[k++] = strdup(e->d_name));
    }
    closedir(d);
    if (oom || !k) {
        for (size_t i = 0; i < k; i++) free(names[i]);
        free(names);
        RETURN_IF(err, oom, W4A8MOE_STATUS_OUT_OF_MEMORY, "file list of %s", dir);
        RETURN_ERR(err, W4A8MOE_STATUS_NOT_FOUND,
                   "%s has neither model.safetensors nor " INDEX_NAME " nor any *.safetensors; "
                   "hint: point quantize at a Hugging Face checkpoint directory", dir);
    }
    qsort(names, k, sizeof *names, cmp_str);
    *out = names;
    *n = k;
    return W4A8MOE_STATUS_OK;
}

/* Every index entry names a tensor that is in its shard. */
static w4a8moe_status check_index(const qz_src *s, const char *path, w4a8moe_err *err)
{
    json_t *root = json_load_file(path, 0, NULL);
    json_t *map = json_object_get(root, "weight_map");
    const char *key;
    json_t *v;
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    json_object_foreach(map, key, v)
    {
        const char *f = json_string_value(v);
        int found = 0;
        for (size_t i = 0; i < s->n_files && !found; i++) {
            const char *p = w4a8moe_st_path(s->files[i]), *slash = strrchr(p, '/');
            if (strcmp(slash ? slash + 1 : p, f) == 0) found = w4a8moe_st_find(s->files[i], key) != NULL;
        }
        if (!found) {
            st = w4a8moe_err_set(err, W4A8MOE_STATUS_FORMAT_ERROR, __FILE__, __LINE__,
                                 "%s: weight_map says tensor '%s' is in %s, which does not hold "
                                 "it", path, key, f);
            break;
        }
    }
    json_decref(root);
    return st;
}

/* A tensor name in two files would make the copy ambiguous. */
static w4a8moe_status check_unique(const qz_src *s, w4a8moe_err *err)
{
    for (size_t f = 1; f < s->n_files; f++)
        for (size_t i = 0; i < w4a8moe_st_count(s->files[f]); i++) {
            const char *name = w4a8moe_st_at(s->files[f], i)->name;
            for (size_t g = 0; g < f; g++)
                RETURN_IF(err, w4a8moe_st_find(s->files[g], name), W4A8MOE_STATUS_FORMAT_ERROR,
                          "tensor '%s' is in both %s and %s", name, w4a8moe_st_path(s->files[g]),
                          w4a8moe_st_path(s->files[f]));
        }
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status qz_src_open(qz_src *s, const char *dir, w4a8moe_err *err)
{
    char path[4096], index[4096];
    struct stat sb;
    snprintf(index, sizeof index, "%s/" INDEX_NAME, dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char **names = NULL;
    size_t n = 1;
    int have_index = stat(index, &sb) == 0;
    if (have_index) FORWARD(index_files(index, &names, &n, err));
    else if (stat(path, &sb) != 0) FORWARD(glob_files(dir, &names, &n, err));
    s->files = calloc(n, sizeof *s->files);
    s->consumed = calloc(n, sizeof *s->consumed);
    w4a8moe_status st = s->files && s->consumed
                            ? W4A8MOE_STATUS_OK
                            : w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__,
                                              __LINE__, "source file table");
    for (size_t i = 0; i < n && st == W4A8MOE_STATUS_OK; i++) {
        if (names) snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        st = src_add(s, path, err);
    }
    for (size_t i = 0; names && i < n; i++) free(names[i]);
    free(names);
    if (st == W4A8MOE_STATUS_OK && have_index) st = check_index(s, index, err);
    if (st == W4A8MOE_STATUS_OK) st = check_unique(s, err);
    return st;
}

void qz_src_close(qz_src *s)
{
    for (size_t i = 0; i < s->n_files; i++) {
        w4a8moe_st_close(s->files[i]);
        free(s->consumed[i]);
    }
    free(s->files);
    free(s->consumed);
    memset(s, 0, sizeof *s);
}

const w4a8moe_st_file *qz_src_find(const qz_src *s, const char *name, const w4a8moe_st_tensor **t)
{
    for (size_t i = 0; i < s->n_files; i++) {
        const w4a8moe_st_tensor *x = w4a8moe_st_find(s->files[i], name);
        if (x) {
            *t = x;
            return s->files[i];
        }
    }
    return NULL;
}

/* Position of t in its file: (file, index), or 0 when not found. The reader keeps a file's
 * tensors in one array, so pointer arithmetic finds the index; the scan is a fallback. */
static int locate(const qz_src *s, const w4a8moe_st_tensor *t, size_t *fi, size_t *ti)
{
    for (size_t f = 0; f < s->n_files; f++) {
        size_t n = w4a8moe_st_count(s->files[f]);
        const w4a8moe_st_tensor *base = n ? w4a8moe_st_at(s->files[f], 0) : NULL;
        uintptr_t d = (uintptr_t)t - (uintptr_t)base;
        if (base && (uintptr_t)t >= (uintptr_t)base && d % sizeof *t == 0 && d / sizeof *t < n &&
            w4a8moe_st_at(s->files[f], d / sizeof *t) == t) {
            *fi = f;
            *ti = d / sizeof *t;
            return 1;
        }
    }
    for (size_t f = 0; f < s->n_files; f++)
        for (size_t i = 0; i < w4a8moe_st_count(s->files[f]); i++)
            if (w4a8moe_st_at(s->files[f], i) == t) {
                *fi = f;
                *ti = i;
                return 1;
            }
    return 0;
}

w4a8moe_status qz_mark_consumed(qz_src *s, const w4a8moe_st_tensor *t, w4a8moe_err *err)
{
    size_t f, i;
    RETURN_IF(err, !locate(s, t, &f, &i), W4A8MOE_STATUS_INTERNAL, "tensor '%s' not in its source",
              t->name);
    RETURN_IF(err, s->consumed[f][i], W4A8MOE_STATUS_FORMAT_ERROR,
              "tensor '%s' would be quantised twice; hint: config.json and the tensor names "
              "disagree", t->name);
    s->consumed[f][i] = 1;
    return W4A8MOE_STATUS_OK;
}

int qz_is_consumed(const qz_src *s, const w4a8moe_st_tensor *t)
{
    size_t f, i;
    return locate(s, t, &f, &i) && s->consumed[f][i];
}

/* ---- ignore list ----------------------------------------------------------------------------- */

/* Compares names with digit runs as numbers, so layers 2 < 10 (the order of the model). */
static int cmp_natural(const void *pa, const void *pb)
{
    const char *a = *(char *const *)pa, *b = *(char *const *)pb;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

w4a8moe_status qz_ignore_consider(qz_plan *p, const w4a8moe_st_tensor *t, w4a8moe_err *err)
{
    size_t n = strlen(t->name);
    if (t->ndim != 2 || n <= 7 || strcmp(t->name + n - 7, ".weight") != 0) return W4A8MOE_STATUS_OK;
    const char *last = t->name;
    for (const char *c = t->name; c < t->name + n - 7; c++)
        if (*c == '.') last = c + 1;
    /* embeddings are 2-D ".weight"s too, but not Linear modules: compressed-tensors never
     * targets them, so they stay off the list */
    if (memmem(last, (size_t)(t->name + n - 7 - last), "embed", 5)) return W4A8MOE_STATUS_OK;
    if (p->n_ignore == p->cap_ignore) {
        size_t cap = p->cap_ignore ? 2 * p->cap_ignore : 64;
        char **x = realloc(p->ignore, cap * sizeof *x);
        RETURN_IF(err, !x, W4A8MOE_STATUS_OUT_OF_MEMORY, "ignore list");
        p->ignore = x;
        p->cap_ignore = cap;
    }
    p->ignore[p->n_ignore] = strndup(t->name, n - 7);
    RETURN_IF(err, !p->ignore[p->n_ignore], W4A8MOE_STATUS_OUT_OF_MEMORY, "ignore list");
    p->n_ignore++;
    return W4A8MOE_STATUS_OK;
}

/* ---- destination ----------------------------------------------------------------------------- */

w4a8moe_status qz_dst_prepare(qz_plan *p, w4a8moe_err *err)
{
    struct stat sb;
    if (stat(p->dst_dir, &sb) != 0) {
        RETURN_IF(err, mkdir(p->dst_dir, 0755) != 0, W4A8MOE_STATUS_IO_ERROR,
                  "%s: cannot create the output directory: %s", p->dst_dir, strerror(errno));
        return W4A8MOE_STATUS_OK;
    }
    RETURN_IF(err, !S_ISDIR(sb.st_mode), W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s exists and is not a directory", p->dst_dir);
    DIR *d = opendir(p->dst_dir);
    RETURN_IF(err, !d, W4A8MOE_STATUS_IO_ERROR, "%s: %s", p->dst_dir, strerror(errno));
    int busy = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL && !busy;) {
        size_t n = strlen(e->d_name);
        busy = strcmp(e->d_name, "config.json") == 0 ||
               (n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0);
    }
    closedir(d);
    RETURN_IF(err, busy, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s already holds a checkpoint (config.json or *.safetensors); hint: quantize "
              "into a new or empty directory", p->dst_dir);
    return W4A8MOE_STATUS_OK;
}

static const char *shard_name(const qz_plan *p, int32_t shard, char *buf, size_t cap)
{
    if (p->n_shards <= 1) snprintf(buf, cap, "model.safetensors");
    else snprintf(buf, cap, "model-%05d-of-%05d.safetensors", shard + 1, p->n_shards);
    return buf;
}

void qz_shard_path(const qz_plan *p, int32_t shard, char *buf, size_t cap)
{
    char name[64];
    snprintf(buf, cap, "%s/%s", p->dst_dir, shard_name(p, shard, name, sizeof name));
}

w4a8moe_status qz_scratch_open(qz_scratch *sc, const char *dir, uint64_t bytes, uint64_t max_ram,
                               w4a8moe_err *err)
{
    sc->fd = -1;
    sc->base = NULL;
    sc->len = 0;
    if (!bytes) return W4A8MOE_STATUS_OK;
    if (bytes <= max_ram) {
        sc->base = malloc((size_t)bytes);
        RETURN_IF(err, !sc->base, W4A8MOE_STATUS_OUT_OF_MEMORY,
                  "%llu bytes for one shard's quantised tensors; hint: a smaller --shard-size",
                  (unsigned long long)bytes);
        return W4A8MOE_STATUS_OK;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/.w4a8moe-quantize-XXXXXX", dir);
    sc->fd = mkstemp(path);
    RETURN_IF(err, sc->fd < 0, W4A8MOE_STATUS_IO_ERROR, "%s: cannot create a scratch file: %s",
              dir, strerror(errno));
    unlink(path);
    /* reserve the blocks now: a full disk must be an error here, not SIGBUS on a store */
    int e = posix_fallocate(sc->fd, 0, (off_t)bytes);
    if (e == 0) {
        void *m = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, sc->fd, 0);
        if (m != MAP_FAILED) {
            sc->base = m;
            sc->len = (size_t)bytes;
            return W4A8MOE_STATUS_OK;
        }
        e = errno;
    }
    close(sc->fd);
    sc->fd = -1;
    RETURN_ERR(err, W4A8MOE_STATUS_IO_ERROR,
               "%s: cannot reserve a %llu-byte scratch file: %s; hint: free disk space there",
               dir, (unsigned long long)bytes, strerror(e));
}

void qz_scratch_close(qz_scratch *sc)
{
    if (sc->fd >= 0) {
        if (sc->base) munmap(sc->base, sc->len);
        close(sc->fd);
    } else {
        free(sc->base);
    }
    sc->base = NULL;
    sc->fd = -1;
}

void qz_forget_range(const void *begin, size_t bytes)
{
    /* MADV_PAGEOUT (Linux 5.4) reclaims clean file pages and never loses data (MADV_DONTNEED
     * would zero the bytes if the reader ever held them in anonymous memory); an older kernel
     * answers EINVAL, which is harmless: the pages stay until the kernel needs them */
#ifdef MADV_PAGEOUT
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = ((uintptr_t)begin + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)begin + bytes) & ~(page - 1);
    if (e > b) madvise((void *)b, e - b, MADV_PAGEOUT);
#else
    (void)begin;
    (void)bytes;
#endif
}

/* ---- index and config.json -------------------------------------------------------------------- */

static w4a8moe_status index_put(qz_plan *p, const char *name, const char *file, w4a8moe_err *err)
{
    if (!p->index_map) p->index_map = json_object();
    RETURN_IF(err, !p->index_map || json_object_set_new(p->index_map, name, json_string(file)),
              W4A8MOE_STATUS_OUT_OF_MEMORY, "index entry '%s'", name);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status qz_index_add(qz_plan *p, const qz_item *it, int32_t shard, w4a8moe_err *err)
{
    if (p->n_shards <= 1) return W4A8MOE_STATUS_OK;
    char file[64], name[QZ_NAME_CAP + 16];
    shard_name(p, shard, file, sizeof file);
    if (it->kind == QZ_ITEM_COPY) return index_put(p, it->src->name, file, err);
    int pack = p->format == W4A8MOE_CKPT_FORMAT_PACK_QUANTIZED;
    snprintf(name, sizeof name, "%s.%s", it->module, pack ? "weight_packed" : "weight");
    FORWARD(index_put(p, name, file, err));
    snprintf(name, sizeof name, "%s.weight_scale", it->module);
    FORWARD(index_put(p, name, file, err));
    if (!pack) return W4A8MOE_STATUS_OK;
    snprintf(name, sizeof name, "%s.weight_shape", it->module);
    return index_put(p, name, file, err);
}

static w4a8moe_status dump_json(json_t *root, const char *path, w4a8moe_err *err)
{
    int rc = json_dump_file(root, path, JSON_INDENT(2));
    json_decref(root);
    RETURN_IF(err, rc != 0, W4A8MOE_STATUS_IO_ERROR, "%s: cannot write: %s", path, strerror(errno));
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status qz_write_index(qz_plan *p, w4a8moe_err *err)
{
    if (p->n_shards <= 1) return W4A8MOE_STATUS_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/" INDEX_NAME, p->dst_dir);
    json_t *root = json_pack("{s:{s:I}, s:O}", "metadata", "total_size",
                             (json_int_t)p->total_bytes, "weight_map", (json_t *)p->index_map);
    RETURN_IF(err, !root, W4A8MOE_STATUS_OUT_OF_MEMORY, "index");
    return dump_json(root, path, err);
}

/* compressed-tensors' quantization_config for W4AFP8, field for field as the package writes it
 * (ModelCompressor.update_config; see tests/data/ct-fixture). */
static json_t *quant_config_json(qz_plan *p)
{
    const char *fmt = w4a8moe_ckpt_format_name(p->format);
    qsort(p->ignore, p->n_ignore, sizeof *p->ignore, cmp_natural);
    json_t *ignore = json_array();
    for (size_t i = 0; ignore && i < p->n_ignore; i++)
        if (json_array_append_new(ignore, json_string(p->ignore[i]))) {
            json_decref(ignore);
            return NULL;
        }
    if (!ignore) return NULL;
    return json_pack(
        "{s:{s:{s:s, s:{s:b, s:n, s:i, s:s, s:b, s:s}, s:n, s:[s], s:{s:b, s:i, s:i, s:s, s:b, "
        "s:s}}}, s:s, s:n, s:o, s:n, s:s, s:s, s:{}, s:{}}",
        "config_groups", "group_0", "format", fmt, "input_activations", "dynamic", 1,
        "group_size", "num_bits", 8, "strategy", "token", "symmetric", 1, "type", "float",
        "output_activations", "targets", "Linear", "weights", "dynamic", 0, "group_size", p->g,
        "num_bits", 4, "strategy", "group", "symmetric", 1, "type", "int", "format", fmt,
        "global_compression_ratio", "ignore", ignore, "kv_cache_scheme", "quant_method",
        "compressed-tensors", "quantization_status", "compressed", "sparsity_config",
        "transform_config");
}

w4a8moe_status qz_write_config(qz_plan *p, w4a8moe_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", p->src_dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    RETURN_IF(err, !root, W4A8MOE_STATUS_FORMAT_ERROR, "%s: invalid JSON at line %d: %s", path,
              je.line, je.text);
    json_t *q = quant_config_json(p);
    if (!q || json_object_set_new(root, "quantization_config", q) != 0) {
        json_decref(root);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "quantization_config");
    }
    snprintf(path, sizeof path, "%s/config.json", p->dst_dir);
    return dump_json(root, path, err);
}

/* ---- other files ------------------------------------------------------------------------------ */

static w4a8moe_status copy_file(const char *from, const char *to, w4a8moe_err *err)
{
    FILE *in = fopen(from, "rb");
    RETURN_IF(err, !in, W4A8MOE_STATUS_IO_ERROR, "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        int e = errno;
        fclose(in);
        RETURN_ERR(err, W4A8MOE_STATUS_IO_ERROR, "%s: cannot create: %s", to, strerror(e));
    }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    ok = (fclose(out) == 0) && ok;
    RETURN_IF(err, !ok, W4A8MOE_STATUS_IO_ERROR, "copying %s to %s failed", from, to);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status qz_copy_other_files(qz_plan *p, w4a8moe_err *err)
{
    DIR *d = opendir(p->src_dir);
    RETURN_IF(err, !d, W4A8MOE_STATUS_IO_ERROR, "%s: %s", p->src_dir, strerror(errno));
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    char from[4096], to[4096];
    for (struct dirent *e; st == W4A8MOE_STATUS_OK && (e = readdir(d)) != NULL;) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (n[0] == '.' || strcmp(n, "config.json") == 0 || strcmp(n, INDEX_NAME) == 0 ||
            (len > 12 && strcmp(n + len - 12, ".safetensors") == 0))
            continue;
        struct stat sb;
        snprintf(from, sizeof from, "%s/%s", p->src_dir, n);
        if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        snprintf(to, sizeof to, "%s/%s", p->dst_dir, n);
        st = copy_file(from, to, err);
    }
    closedir(d);
    return st;
}

void qz_files_free(qz_plan *p)
{
    for (size_t i = 0; i < p->n_ignore; i++) free(p->ignore[i]);
    free(p->ignore);
    p->ignore = NULL;
    p->n_ignore = 0;
    if (p->index_map) json_decref(p->index_map);
    p->index_map = NULL;
}
