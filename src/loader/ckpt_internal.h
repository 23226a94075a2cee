/*
 * ckpt_internal.h — the checkpoint handle's fields, shared by checkpoint.c (opening, lookup)
 * and ckpt_layer.c (layer decoding). Not for use outside src/loader.
 */
#ifndef W4A8MOE_CKPT_INTERNAL_H
#define W4A8MOE_CKPT_INTERNAL_H

#include "../common/quant.h"
#include "checkpoint.h"

#include <jansson.h>
#include <string.h>

typedef struct ckpt_entry {
    const char *name; /* points into its file's tensor table */
    uint32_t file;
} ckpt_entry;

struct w4a8moe_ckpt {
    char *dir;
    w4a8moe_hf_config cfg;
    int cfg_loaded;
    w4a8moe_st_file **files;
    size_t nfiles;
    ckpt_entry *map; /* sorted by name */
    size_t nmap;
    json_t *index_json;
    int refs;
    float **bias_cache; /* [num_layers]: f32 score bias per layer, filled on demand */
};

/* Element i of a bf16/f16/f32 array that may sit unaligned in a mapping, widened to f32. */
static inline float w4a8moe_ckpt_elem(const void *p, int dt, int64_t i)
{
    const char *b = (const char *)p;
    if (dt == W4A8MOE_DTYPE_F32) {
        float v;
        memcpy(&v, b + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, b + 2 * i, 2);
    return dt == W4A8MOE_DTYPE_BF16 ? w4a8moe_bf16_to_f32(h) : w4a8moe_f16_to_f32(h);
}

#endif /* W4A8MOE_CKPT_INTERNAL_H */
