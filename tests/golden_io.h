/*
 * golden_io.h — reading the golden checkpoints' tensors (tests/data, input.safetensors and
 * expected.safetensors) for the tests that compare with them: tests/test_golden.c on the CPU
 * backends and tests/gpu/test_gpu_shared.c on CUDA.
 */
#ifndef W4A8MOE_TESTS_GOLDEN_IO_H
#define W4A8MOE_TESTS_GOLDEN_IO_H

#include "loader/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bf16 [T, H] tensor `name` of a safetensors file, copied raw into a fresh buffer (the caller
 * frees it); NULL, with the reason printed, when the file or a 2-D bf16 tensor of that name is
 * missing. */
static inline uint16_t *golden_read_bf16(const char *path, const char *name, int64_t *T, int64_t *H)
{
    w4a8moe_err err;
    w4a8moe_st_file *f;
    if (w4a8moe_st_open(path, &f, &err) != W4A8MOE_STATUS_OK) {
        printf("cannot open %s: %s\n", path, err.msg);
        return NULL;
    }
    const w4a8moe_st_tensor *t = w4a8moe_st_find(f, name);
    uint16_t *out = NULL;
    if (t && t->dtype == W4A8MOE_ST_BF16 && t->ndim == 2) {
        *T = t->shape[0];
        *H = t->shape[1];
        out = malloc(t->nbytes);
        if (out) memcpy(out, t->data, t->nbytes);
    } else {
        printf("%s: no 2-D bf16 tensor '%s'\n", path, name);
    }
    w4a8moe_st_close(f);
    return out;
}

#endif /* W4A8MOE_TESTS_GOLDEN_IO_H */
