/*
 * quantizer_impl.h — what quantizer.c (planning, quantising, streaming) and quantizer_files.c
 * (source shards, destination directory, scratch file, config.json and the index) share.
 * Internal to the quantizer.
 */
#ifndef W4A8MOE_QUANTIZER_IMPL_H
#define W4A8MOE_QUANTIZER_IMPL_H

#include "quantizer.h"

#include <stddef.h>
#include <stdint.h>

#define QZ_NAME_CAP 512

/* The source checkpoint: its safetensors files and which tensors a quantised matrix took. */
typedef struct qz_src {
    w4a8moe_st_file **files;
    size_t n_files;
    unsigned char **consumed; /* [n_files][count] */
} qz_src;

typedef enum qz_item_kind {
    QZ_ITEM_COPY = 0,  /* a source tensor written unchanged */
    QZ_ITEM_QUANT = 1, /* one Linear weight → weight_packed|weight, weight_scale(, weight_shape) */
} qz_item_kind;

/* One planned output: a copied tensor or a quantised matrix (2 or 3 tensors). */
typedef struct qz_item {
    qz_item_kind kind;
    const w4a8moe_st_tensor *src;
    w4a8moe_weight_view view;  /* QUANT */
    char module[QZ_NAME_CAP];  /* QUANT: module name, no suffix */
    uint64_t bytes;            /* output bytes */
    int32_t shard;
} qz_item;

typedef struct qz_plan {
    const char *src_dir, *dst_dir;
    int32_t g;
    w4a8moe_ckpt_format format;
    uint64_t max_shard;
    uint64_t max_ram;
    w4a8moe_hf_config cfg;
    int have_cfg;
    qz_src src;
    int32_t *layers, n_layers;
    qz_item *items;
    size_t n_items, cap_items;
    int32_t n_shards;
    uint64_t total_bytes;
    char **ignore; /* module names of unquantised Linears */
    size_t n_ignore, cap_ignore;
    void *index_map; /* json_t object: tensor name → shard file (more than one shard) */
    w4a8moe_quantize_progress_fn progress;
    void *progress_ctx;
    w4a8moe_quantize_report report;
} qz_plan;

/* Where one shard's quantised tensors wait for the writer: malloc'ed up to max_ram bytes, else
 * a mapped scratch file in the destination (unlinked at once). */
typedef struct qz_scratch {
    int fd;            /* -1: malloc'ed (or empty) */
    unsigned char *base;
    size_t len;
} qz_scratch;

w4a8moe_status qz_src_open(qz_src *s, const char *dir, w4a8moe_err *err);
void qz_src_close(qz_src *s);
/* The file holding a tensor of that name (and the tensor), or NULL. */
const w4a8moe_st_file *qz_src_find(const qz_src *s, const char *name, const w4a8moe_st_tensor **t);
w4a8moe_status qz_mark_consumed(qz_src *s, const w4a8moe_st_tensor *t, w4a8moe_err *err);
int qz_is_consumed(const qz_src *s, const w4a8moe_st_tensor *t);

/* Adds t's module to the ignore list when t is an unquantised Linear weight. */
w4a8moe_status qz_ignore_consider(qz_plan *p, const w4a8moe_st_tensor *t, w4a8moe_err *err);

w4a8moe_status qz_dst_prepare(qz_plan *p, w4a8moe_err *err);
void qz_shard_path(const qz_plan *p, int32_t shard, char *buf, size_t cap);
w4a8moe_status qz_scratch_open(qz_scratch *sc, const char *dir, uint64_t bytes, uint64_t max_ram,
                               w4a8moe_err *err);
/* Drops the pages of a range of a source mapping (they are re-read if touched again): keeps the
 * resident set bounded while streaming through a large checkpoint. */
void qz_forget_range(const void *begin, size_t bytes);
void qz_scratch_close(qz_scratch *sc);

/* Records the output tensor names of an item in the index (no-op for a single shard). */
w4a8moe_status qz_index_add(qz_plan *p, const qz_item *it, int32_t shard, w4a8moe_err *err);
w4a8moe_status qz_write_index(qz_plan *p, w4a8moe_err *err);
w4a8moe_status qz_write_config(qz_plan *p, w4a8moe_err *err);
w4a8moe_status qz_copy_other_files(qz_plan *p, w4a8moe_err *err);
/* Frees the ignore list and the index. */
void qz_files_free(qz_plan *p);

#endif /* W4A8MOE_QUANTIZER_IMPL_H */
