/*
 * safetensors.h — reading (mmap) and writing safetensors files.
 *
 * Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
 * N, then N bytes of JSON: {"name": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [b, e]},
 * ..., "__metadata__": {"key": "value"}} where [b, e) is relative to the byte buffer that
 * follows the header. Rules we enforce on read, each with its own message: N <= 100,000,000
 * and within the file; valid UTF-8 JSON object; known dtype; shape entries non-negative and
 * their product not overflowing; e - b == product(shape) * dtype size; offsets inside the
 * buffer; tensors neither overlapping nor leaving holes (together they cover the buffer);
 * __metadata__ values are strings. The writer pads the header with spaces to a multiple of 8.
 */
#ifndef W4A8MOE_SAFETENSORS_H
#define W4A8MOE_SAFETENSORS_H

#include "../common/error.h"

#include <stddef.h>
#include <stdint.h>

#define W4A8MOE_ST_MAX_HEADER 100000000ull
#define W4A8MOE_ST_MAX_DIMS 8

typedef enum w4a8moe_st_dtype {
    W4A8MOE_ST_BOOL = 0,
    W4A8MOE_ST_U8,
    W4A8MOE_ST_I8,
    W4A8MOE_ST_I16,
    W4A8MOE_ST_U16,
    W4A8MOE_ST_I32,
    W4A8MOE_ST_U32,
    W4A8MOE_ST_I64,
    W4A8MOE_ST_U64,
    W4A8MOE_ST_F16,
    W4A8MOE_ST_BF16,
    W4A8MOE_ST_F32,
    W4A8MOE_ST_F64,
    W4A8MOE_ST_F8_E4M3,
    W4A8MOE_ST_F8_E5M2,
    W4A8MOE_ST_DTYPE_COUNT_
} w4a8moe_st_dtype;

/* "BF16" etc.; and back (returns -1 for an unknown name). Size in bytes of one element. */
const char *w4a8moe_st_dtype_name(w4a8moe_st_dtype dt);
int w4a8moe_st_dtype_parse(const char *name);
size_t w4a8moe_st_dtype_size(w4a8moe_st_dtype dt);

typedef struct w4a8moe_st_tensor {
    const char *name;
    w4a8moe_st_dtype dtype;
    int32_t ndim;
    int64_t shape[W4A8MOE_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* into the mapping (read) */
    size_t nbytes;
} w4a8moe_st_tensor;

typedef struct w4a8moe_st_file w4a8moe_st_file;

/* Maps and validates a file. */
w4a8moe_status w4a8moe_st_open(const char *path, w4a8moe_st_file **out, w4a8moe_err *err);
/* Validates a whole file image held in memory (not copied: buf must outlive the handle).
 * What the fuzzer drives. */
w4a8moe_status w4a8moe_st_open_memory(const void *buf, size_t len, const char *label,
                                      w4a8moe_st_file **out, w4a8moe_err *err);
void w4a8moe_st_close(w4a8moe_st_file *f);

size_t w4a8moe_st_count(const w4a8moe_st_file *f);
const w4a8moe_st_tensor *w4a8moe_st_at(const w4a8moe_st_file *f, size_t i);
/* The tensor of that name, or NULL. */
const w4a8moe_st_tensor *w4a8moe_st_find(const w4a8moe_st_file *f, const char *name);
/* A __metadata__ value, or NULL. */
const char *w4a8moe_st_metadata(const w4a8moe_st_file *f, const char *key);
const char *w4a8moe_st_path(const w4a8moe_st_file *f);

/* Writer: declare tensors (their data must stay valid until close), then close writes the
 * header and the data in declaration order. */
typedef struct w4a8moe_st_writer w4a8moe_st_writer;

w4a8moe_status w4a8moe_st_writer_open(const char *path, w4a8moe_st_writer **out, w4a8moe_err *err);
w4a8moe_status w4a8moe_st_writer_add(w4a8moe_st_writer *w, const char *name, w4a8moe_st_dtype dt,
                                     int32_t ndim, const int64_t *shape, const void *data,
                                     w4a8moe_err *err);
w4a8moe_status w4a8moe_st_writer_metadata(w4a8moe_st_writer *w, const char *key, const char *value,
                                          w4a8moe_err *err);
/* Writes everything and frees the writer (also on failure). */
w4a8moe_status w4a8moe_st_writer_close(w4a8moe_st_writer *w, w4a8moe_err *err);
/* Frees a writer without writing (removes the partial file). NULL is a no-op. */
void w4a8moe_st_writer_abort(w4a8moe_st_writer *w);

#endif /* W4A8MOE_SAFETENSORS_H */
