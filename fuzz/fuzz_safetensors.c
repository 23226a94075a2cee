/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors header parser and validator
 * (w4a8moe_st_open_memory). On acceptance every tensor's bytes are read (so ASan sees an
 * out-of-bounds view) and looked up by name, and the metadata too. `make fuzz` runs it.
 */
#include "loader/safetensors.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    w4a8moe_err err;
    w4a8moe_st_file *f = NULL;
    if (w4a8moe_st_open_memory(data, size, "fuzz", &f, &err) != W4A8MOE_STATUS_OK) return 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < w4a8moe_st_count(f); i++) {
        const w4a8moe_st_tensor *t = w4a8moe_st_at(f, i);
        const uint8_t *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
        if (w4a8moe_st_find(f, t->name) != t) __builtin_trap(); /* lookup must find it */
        if (t->nbytes != (size_t)t->numel * w4a8moe_st_dtype_size(t->dtype)) __builtin_trap();
    }
    (void)w4a8moe_st_metadata(f, "format");
    (void)sink;
    w4a8moe_st_close(f);
    return 0;
}
