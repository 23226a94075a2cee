/*
 * safetensors.c — the safetensors reader (mmap + validation) and writer; format and rules in
 * safetensors.h. Every rule a file can break is a FORMAT_ERROR (UNSUPPORTED for a dtype or
 * rank we do not read) whose message names the file, the tensor and the numbers at fault.
 */
#include "safetensors.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const dtype_names[W4A8MOE_ST_DTYPE_COUNT_] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
    "F16",  "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2",
};
static const unsigned char dtype_sizes[W4A8MOE_ST_DTYPE_COUNT_] = {1, 1, 1, 2, 2, 4, 4, 8, 8,
                                                                   2, 2, 4, 8, 1, 1};

const char *w4a8moe_st_dtype_name(w4a8moe_st_dtype dt)
{
    return (unsigned)dt < W4A8MOE_ST_DTYPE_COUNT_ ? dtype_names[dt] : "?";
}

int w4a8moe_st_dtype_parse(const char *name)
{
    for (int i = 0; name && i < W4A8MOE_ST_DTYPE_COUNT_; i++)
        if (strcmp(name, dtype_names[i]) == 0) return i;
    return -1;
}

size_t w4a8moe_st_dtype_size(w4a8moe_st_dtype dt)
{
    return (unsigned)dt < W4A8MOE_ST_DTYPE_COUNT_ ? dtype_sizes[dt] : 0;
}

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct w4a8moe_st_file {
    char *path;
    void *map;          /* mmap'ed file, or NULL for open_memory */
    size_t map_len;
    const unsigned char *bytes;
    size_t len;
    w4a8moe_st_tensor *tensors; /* sorted by name */
    size_t count;
    st_meta *meta;
    size_t n_meta;
    /* scratch for validation: begin, end and index of each tensor */
    uint64_t (*spans)[3];
};

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Reads a non-negative JSON integer; -1 when it is not one. */
static int64_t json_nonneg(const json_t *v)
{
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 ? -1 : (int64_t)x;
}

/* Product of the shape's entries into *numel, 0 on overflow past 2^62 elements. */
static int shape_product(const int64_t *shape, int32_t ndim, int64_t *numel)
{
    int64_t n = 1;
    const int64_t lim = (int64_t)1 << 62;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > lim / shape[i]) return 0;
        n *= shape[i];
    }
    *numel = n;
    return 1;
}

static w4a8moe_status parse_shape(const char *label, const char *name, const json_t *js,
                                  w4a8moe_st_tensor *t, w4a8moe_err *err)
{
    RETURN_IF(err, !json_is_array(js), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': \"shape\" is missing or not an array", label, name);
    size_t nd = json_array_size(js);
    RETURN_IF(err, nd > W4A8MOE_ST_MAX_DIMS, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: tensor '%s' has %zu dimensions; w4a8moe reads at most %d", label, name, nd,
              W4A8MOE_ST_MAX_DIMS);
    t->ndim = (int32_t)nd;
    for (size_t i = 0; i < nd; i++) {
        int64_t d = json_nonneg(json_array_get(js, i));
        RETURN_IF(err, d < 0, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: tensor '%s': shape entry %zu is not a non-negative integer", label, name, i);
        t->shape[i] = d;
    }
    RETURN_IF(err, !shape_product(t->shape, t->ndim, &t->numel), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': the product of its shape overflows", label, name);
    return W4A8MOE_STATUS_OK;
}

/* One header entry → t (name already set); [b, e) into span. */
static w4a8moe_status parse_tensor(const char *label, const char *name, const json_t *v,
                                   w4a8moe_st_tensor *t, uint64_t *b, uint64_t *e,
                                   w4a8moe_err *err)
{
    RETURN_IF(err, !json_is_object(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': entry is not a JSON object", label, name);
    const json_t *jd = json_object_get(v, "dtype");
    RETURN_IF(err, !json_is_string(jd), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': \"dtype\" is missing or not a string", label, name);
    int dt = w4a8moe_st_dtype_parse(json_string_value(jd));
    RETURN_IF(err, dt < 0, W4A8MOE_STATUS_UNSUPPORTED,
              "%s: tensor '%s': unknown dtype '%.40s'; hint: w4a8moe reads BOOL, U8, I8, I16, "
              "U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2",
              label, name, json_string_value(jd));
    t->dtype = (w4a8moe_st_dtype)dt;
    FORWARD(parse_shape(label, name, json_object_get(v, "shape"), t, err));
    const json_t *jo = json_object_get(v, "data_offsets");
    RETURN_IF(err, !json_is_array(jo) || json_array_size(jo) != 2, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': \"data_offsets\" is missing or not a [begin, end] pair", label,
              name);
    int64_t ob = json_nonneg(json_array_get(jo, 0)), oe = json_nonneg(json_array_get(jo, 1));
    RETURN_IF(err, ob < 0 || oe < 0, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': data_offsets are not non-negative integers", label, name);
    RETURN_IF(err, oe < ob, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': data_offsets [%lld, %lld] end before they begin", label, name,
              (long long)ob, (long long)oe);
    uint64_t want = (uint64_t)t->numel * w4a8moe_st_dtype_size(t->dtype);
    RETURN_IF(err, t->numel > (int64_t)1 << 59 || want != (uint64_t)(oe - ob),
              W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: tensor '%s': dtype %s x %lld elements = %llu bytes, but data_offsets [%lld, "
              "%lld] hold %lld",
              label, name, dtype_names[t->dtype], (long long)t->numel, (unsigned long long)want,
              (long long)ob, (long long)oe, (long long)(oe - ob));
    *b = (uint64_t)ob;
    *e = (uint64_t)oe;
    t->nbytes = (size_t)(oe - ob);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status parse_metadata(w4a8moe_st_file *f, const char *label, const json_t *v,
                                     w4a8moe_err *err)
{
    RETURN_IF(err, !json_is_object(v), W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: \"__metadata__\" is not a JSON object", label);
    size_t n = json_object_size(v);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    RETURN_IF(err, !f->meta, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s: metadata table", label);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        RETURN_IF(err, !json_is_string(val), W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: __metadata__ value of '%.64s' is not a string", label, key);
        st_meta *m = &f->meta[f->n_meta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(val));
        f->n_meta++;
        RETURN_IF(err, !m->key || !m->value, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s: metadata", label);
    }
    return W4A8MOE_STATUS_OK;
}

static int cmp_span(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const w4a8moe_st_tensor *)a)->name, ((const w4a8moe_st_tensor *)b)->name);
}

/* The tensors' byte ranges must lie inside the buffer, not overlap and leave no hole. */
static w4a8moe_status check_spans(w4a8moe_st_file *f, const char *label, uint64_t buf_len,
                                  w4a8moe_err *err)
{
    uint64_t(*s)[3] = f->spans;
    qsort(s, f->count, sizeof s[0], cmp_span);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->count; i++) {
        const char *name = f->tensors[s[i][2]].name;
        RETURN_IF(err, s[i][1] > buf_len, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the %llu-byte "
                  "data buffer; hint: the file may be truncated",
                  label, name, (unsigned long long)s[i][0], (unsigned long long)s[i][1],
                  (unsigned long long)buf_len);
        RETURN_IF(err, s[i][0] < pos, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: tensor '%s': data_offsets [%llu, %llu] overlap the tensor '%s' before it",
                  label, name, (unsigned long long)s[i][0], (unsigned long long)s[i][1],
                  f->tensors[s[i - 1][2]].name);
        RETURN_IF(err, s[i][0] > pos, W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: bytes [%llu, %llu) of the data buffer belong to no tensor (a hole before "
                  "'%s')",
                  label, (unsigned long long)pos, (unsigned long long)s[i][0], name);
        pos = s[i][1];
    }
    RETURN_IF(err, pos != buf_len, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: bytes [%llu, %llu) at the end of the data buffer belong to no tensor", label,
              (unsigned long long)pos, (unsigned long long)buf_len);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status parse_entries(w4a8moe_st_file *f, const char *label, json_t *root,
                                    const unsigned char *data, uint64_t buf_len, w4a8moe_err *err)
{
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->spans = calloc(n ? n : 1, sizeof *f->spans);
    RETURN_IF(err, !f->tensors || !f->spans, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "%s: table of %zu tensors", label, n);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            FORWARD(parse_metadata(f, label, val, err));
            continue;
        }
        RETURN_IF(err, key[0] == '\0', W4A8MOE_STATUS_FORMAT_ERROR,
                  "%s: a tensor has an empty name", label);
        w4a8moe_st_tensor *t = &f->tensors[f->count];
        char *name = strdup(key);
        RETURN_IF(err, !name, W4A8MOE_STATUS_OUT_OF_MEMORY, "%s: tensor name", label);
        t->name = name;
        f->count++;
        uint64_t *sp = f->spans[f->count - 1];
        FORWARD(parse_tensor(label, name, val, t, &sp[0], &sp[1], err));
        sp[2] = f->count - 1;
        t->data = data + (sp[1] <= buf_len ? sp[0] : 0);
    }
    FORWARD(check_spans(f, label, buf_len, err));
    qsort(f->tensors, f->count, sizeof *f->tensors, cmp_tensor_name);
    free(f->spans);
    f->spans = NULL;
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status parse_image(w4a8moe_st_file *f, const char *label, w4a8moe_err *err)
{
    const unsigned char *p = f->bytes;
    size_t len = f->len;
    RETURN_IF(err, len == 0, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the file is empty; hint: it is not a safetensors file (or was never written)",
              label);
    RETURN_IF(err, len < 8, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the file is %zu bytes, shorter than the 8-byte header length; hint: the file is "
              "truncated",
              label, len);
    uint64_t n = read_le64(p);
    RETURN_IF(err, n > W4A8MOE_ST_MAX_HEADER, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: header length %llu exceeds the limit of %llu bytes; hint: not a safetensors "
              "file, or a corrupt one",
              label, (unsigned long long)n, W4A8MOE_ST_MAX_HEADER);
    RETURN_IF(err, n > len - 8, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: header length %llu runs past the end of the %zu-byte file; hint: the file is "
              "truncated",
              label, (unsigned long long)n, len);
    RETURN_IF(err, n < 2 || p[8] != '{', W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the header does not start with '{' (a JSON object)", label);
    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    RETURN_IF(err, !root, W4A8MOE_STATUS_FORMAT_ERROR,
              "%s: the header is not valid JSON: %s (line %d, column %d)", label, je.text, je.line,
              je.column);
    w4a8moe_status st = W4A8MOE_STATUS_OK;
    if (!json_is_object(root))
        st = w4a8moe_err_set(err, W4A8MOE_STATUS_FORMAT_ERROR, __FILE__, __LINE__,
                             "%s: the header is not a JSON object", label);
    else
        st = parse_entries(f, label, root, p + 8 + n, len - 8 - n, err);
    json_decref(root);
    return st;
}

static void st_free(w4a8moe_st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) free((char *)f->tensors[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->spans);
    free(f->meta);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

w4a8moe_status w4a8moe_st_open_memory(const void *buf, size_t len, const char *label,
                                      w4a8moe_st_file **out, w4a8moe_err *err)
{
    RETURN_IF(err, !out || (!buf && len), W4A8MOE_STATUS_INVALID_ARGUMENT,
              "safetensors image: out or buf is NULL");
    *out = NULL;
    w4a8moe_st_file *f = calloc(1, sizeof *f);
    RETURN_IF(err, !f, W4A8MOE_STATUS_OUT_OF_MEMORY, "safetensors handle");
    f->path = strdup(label ? label : "<memory>");
    f->bytes = buf;
    f->len = len;
    w4a8moe_status st = f->path ? parse_image(f, f->path, err)
                                : w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__,
                                                  __LINE__, "safetensors label");
    if (st != W4A8MOE_STATUS_OK) {
        st_free(f);
        return st;
    }
    *out = f;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_st_open(const char *path, w4a8moe_st_file **out, w4a8moe_err *err)
{
    RETURN_IF(err, !path || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "safetensors: path or out is NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    RETURN_IF(err, fd < 0, errno == ENOENT ? W4A8MOE_STATUS_NOT_FOUND : W4A8MOE_STATUS_IO_ERROR,
              "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    memset(&sb, 0, sizeof sb);
    errno = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        RETURN_ERR(err, W4A8MOE_STATUS_IO_ERROR, "%s: %s", path,
                   S_ISDIR(sb.st_mode) ? "is a directory, not a safetensors file"
                                       : (e ? strerror(e) : "not a regular file"));
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            RETURN_ERR(err, W4A8MOE_STATUS_IO_ERROR, "%s: cannot map %zu bytes: %s", path, len,
                       strerror(e));
        }
    }
    close(fd);
    w4a8moe_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        if (map) munmap(map, len);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "safetensors handle");
    }
    f->map = map;
    f->map_len = len;
    f->bytes = map;
    f->len = len;
    f->path = strdup(path);
    w4a8moe_status st = f->path ? parse_image(f, path, err)
                                : w4a8moe_err_set(err, W4A8MOE_STATUS_OUT_OF_MEMORY, __FILE__,
                                                  __LINE__, "safetensors path");
    if (st != W4A8MOE_STATUS_OK) {
        st_free(f);
        return st;
    }
    *out = f;
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_st_close(w4a8moe_st_file *f) { st_free(f); }

size_t w4a8moe_st_count(const w4a8moe_st_file *f) { return f ? f->count : 0; }

const w4a8moe_st_tensor *w4a8moe_st_at(const w4a8moe_st_file *f, size_t i)
{
    return f && i < f->count ? &f->tensors[i] : NULL;
}

const w4a8moe_st_tensor *w4a8moe_st_find(const w4a8moe_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *w4a8moe_st_metadata(const w4a8moe_st_file *f, const char *key)
{
    for (size_t i = 0; f && key && i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

const char *w4a8moe_st_path(const w4a8moe_st_file *f) { return f ? f->path : ""; }

/* ---- writer ------------------------------------------------------------------------------ */

typedef struct st_wtensor {
    char *name;
    w4a8moe_st_dtype dtype;
    int32_t ndim;
    int64_t shape[W4A8MOE_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_wtensor;

struct w4a8moe_st_writer {
    char *path;
    FILE *fp;
    st_wtensor *t;
    size_t n, cap;
    json_t *meta; /* object, or NULL */
};

w4a8moe_status w4a8moe_st_writer_open(const char *path, w4a8moe_st_writer **out, w4a8moe_err *err)
{
    RETURN_IF(err, !path || !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "safetensors writer: path or out is NULL");
    *out = NULL;
    w4a8moe_st_writer *w = calloc(1, sizeof *w);
    RETURN_IF(err, !w, W4A8MOE_STATUS_OUT_OF_MEMORY, "safetensors writer");
    w->path = strdup(path);
    w->fp = w->path ? fopen(path, "wb") : NULL;
    if (!w->fp) {
        int e = errno;
        free(w->path);
        free(w);
        RETURN_ERR(err, W4A8MOE_STATUS_IO_ERROR, "%s: cannot create: %s", path, strerror(e));
    }
    *out = w;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_st_writer_add(w4a8moe_st_writer *w, const char *name, w4a8moe_st_dtype dt,
                                     int32_t ndim, const int64_t *shape, const void *data,
                                     w4a8moe_err *err)
{
    RETURN_IF(err, !w || !name || !name[0], W4A8MOE_STATUS_INVALID_ARGUMENT,
              "safetensors writer: writer or tensor name is NULL or empty");
    RETURN_IF(err, strcmp(name, "__metadata__") == 0, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: '__metadata__' cannot name a tensor", w->path);
    RETURN_IF(err, (unsigned)dt >= W4A8MOE_ST_DTYPE_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: tensor '%s': dtype %d is not a w4a8moe_st_dtype", w->path, name, (int)dt);
    RETURN_IF(err, ndim < 0 || ndim > W4A8MOE_ST_MAX_DIMS || (ndim && !shape),
              W4A8MOE_STATUS_INVALID_ARGUMENT, "%s: tensor '%s': ndim %d is outside [0, %d]",
              w->path, name, ndim, W4A8MOE_ST_MAX_DIMS);
    for (size_t i = 0; i < w->n; i++)
        RETURN_IF(err, strcmp(w->t[i].name, name) == 0, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "%s: tensor '%s' added twice", w->path, name);
    int64_t numel;
    for (int32_t i = 0; i < ndim; i++)
        RETURN_IF(err, shape[i] < 0, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "%s: tensor '%s': shape entry %d is negative", w->path, name, i);
    RETURN_IF(err, !shape_product(shape, ndim, &numel) || numel > (int64_t)1 << 59,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "%s: tensor '%s': shape product overflows",
              w->path, name);
    size_t nbytes = (size_t)numel * w4a8moe_st_dtype_size(dt);
    RETURN_IF(err, nbytes && !data, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: tensor '%s': data is NULL", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        st_wtensor *t = realloc(w->t, cap * sizeof *t);
        RETURN_IF(err, !t, W4A8MOE_STATUS_OUT_OF_MEMORY, "safetensors writer table");
        w->t = t;
        w->cap = cap;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    RETURN_IF(err, !t->name, W4A8MOE_STATUS_OUT_OF_MEMORY, "tensor name");
    t->dtype = dt;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_st_writer_metadata(w4a8moe_st_writer *w, const char *key, const char *value,
                                          w4a8moe_err *err)
{
    RETURN_IF(err, !w || !key || !value, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "safetensors writer: metadata key or value is NULL");
    if (!w->meta) w->meta = json_object();
    RETURN_IF(err, !w->meta, W4A8MOE_STATUS_OUT_OF_MEMORY, "metadata object");
    json_t *s = json_string(value);
    RETURN_IF(err, !s || json_object_set_new(w->meta, key, s) != 0, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: metadata '%s' is not valid UTF-8", w->path, key);
    return W4A8MOE_STATUS_OK;
}

static void writer_free(w4a8moe_st_writer *w)
{
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    if (w->meta) json_decref(w->meta);
    free(w->path);
    free(w);
}

void w4a8moe_st_writer_abort(w4a8moe_st_writer *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    remove(w->path);
    writer_free(w);
}

/* The header JSON, padded with spaces to a multiple of 8; malloc'ed into *out. */
static w4a8moe_status build_header(w4a8moe_st_writer *w, char **out, size_t *out_len,
                                   w4a8moe_err *err)
{
    json_t *root = json_object();
    RETURN_IF(err, !root, W4A8MOE_STATUS_OUT_OF_MEMORY, "header object");
    int bad = 0;
    if (w->meta) bad |= json_object_set(root, "__metadata__", w->meta);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n && !bad; i++) {
        const st_wtensor *t = &w->t[i];
        json_t *shape = json_array();
        for (int32_t d = 0; shape && d < t->ndim; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_names[t->dtype], "shape",
                              shape, "data_offsets", (json_int_t)off,
                              (json_int_t)(off + t->nbytes));
        bad |= !e || json_object_set_new(root, t->name, e) != 0;
        off += t->nbytes;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    RETURN_IF(err, !text, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s: cannot build the header (a tensor name that is not valid UTF-8?)", w->path);
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *buf = realloc(text, padded + 1);
    if (!buf) {
        free(text);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "header of %zu bytes", padded);
    }
    memset(buf + n, ' ', padded - n);
    buf[padded] = '\0';
    *out = buf;
    *out_len = padded;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_st_writer_close(w4a8moe_st_writer *w, w4a8moe_err *err)
{
    RETURN_IF(err, !w, W4A8MOE_STATUS_INVALID_ARGUMENT, "safetensors writer is NULL");
    char *hdr = NULL;
    size_t hlen = 0;
    w4a8moe_status st = build_header(w, &hdr, &hlen, err);
    if (st == W4A8MOE_STATUS_OK) {
        unsigned char le[8];
        for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
        int ok = fwrite(le, 1, 8, w->fp) == 8 && fwrite(hdr, 1, hlen, w->fp) == hlen;
        for (size_t i = 0; ok && i < w->n; i++)
            ok = w->t[i].nbytes == 0 || fwrite(w->t[i].data, 1, w->t[i].nbytes, w->fp) == w->t[i].nbytes;
        int e = errno;
        ok = (fclose(w->fp) == 0) && ok;
        w->fp = NULL;
        if (!ok)
            st = w4a8moe_err_set(err, W4A8MOE_STATUS_IO_ERROR, __FILE__, __LINE__,
                                 "%s: write failed: %s", w->path, strerror(e ? e : EIO));
    }
    free(hdr);
    if (st != W4A8MOE_STATUS_OK) {
        w4a8moe_st_writer_abort(w);
        return st;
    }
    writer_free(w);
    return W4A8MOE_STATUS_OK;
}
