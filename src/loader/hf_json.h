/*
 * hf_json.h — internal to the config parser (hf_config.c, hf_quant.c): typed access to JSON
 * fields whose messages name the file and the field's path, and small file reading.
 */
#ifndef W4A8MOE_HF_JSON_H
#define W4A8MOE_HF_JSON_H

#include "hf_config.h"

#include <jansson.h>

typedef struct w4a8moe_json_ctx {
    const char *label; /* file name for messages */
    const char *path;  /* prefix of field names in messages ("text_config.", "") */
    w4a8moe_err *err;
} w4a8moe_json_ctx;

/* Each leaves *out untouched when the field is absent or null (int: FORMAT_ERROR when
 * required); a field of the wrong type or out of [lo, hi] is FORMAT_ERROR naming it. */
w4a8moe_status w4a8moe_json_int(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                int required, int64_t lo, int64_t hi, int64_t *out);
w4a8moe_status w4a8moe_json_real(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                 double *out);
w4a8moe_status w4a8moe_json_bool(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                 int *out);
w4a8moe_status w4a8moe_json_str(const w4a8moe_json_ctx *c, const json_t *o, const char *key,
                                const char **out);

/* quantization_config (may be NULL: a dense checkpoint) → cfg's quantisation fields. */
w4a8moe_status w4a8moe_hf_quant_parse(const w4a8moe_json_ctx *c, const json_t *q,
                                      w4a8moe_hf_config *cfg);

/* A whole small file (<= 64 MiB), NUL-terminated; *text NULL when absent and !required. */
w4a8moe_status w4a8moe_read_text(const char *path, int required, char **text, size_t *len,
                                 w4a8moe_err *err);

#endif /* W4A8MOE_HF_JSON_H */
