/*
 * struct_abi.h — reading and writing the public structs that carry struct_size (the header's
 * "ABI" paragraph): every public entry point copies a caller's growable struct into the
 * library's own layout before anything else reads it, so the rest of the library only ever
 * sees full, current structs.
 */
#ifndef W4A8MOE_STRUCT_ABI_H
#define W4A8MOE_STRUCT_ABI_H

#include "../common/error.h"

#include <stddef.h>

/* The end of member m of T: a layout's size without its tail padding. */
#define W4A8MOE_END_OF(T, m) (offsetof(T, m) + sizeof(((T *)0)->m))

/* What struct_size 0 means: the layouts of API version 3, the first with struct_size. FROZEN:
 * a member appended later must not move these. */
#define W4A8MOE_V3_LAYER_DESC W4A8MOE_END_OF(w4a8moe_layer_desc, ep_size)
#define W4A8MOE_V3_WEIGHTS W4A8MOE_END_OF(w4a8moe_weights, shared)
#define W4A8MOE_V3_SHARED_EXPERT W4A8MOE_END_OF(w4a8moe_shared_expert, gate_weight_dtype)
#define W4A8MOE_V3_LAYER_OPTIONS W4A8MOE_END_OF(w4a8moe_layer_options, borrow_weights)
#define W4A8MOE_V3_ROUTING_INPUT W4A8MOE_END_OF(w4a8moe_routing_input, router_logits)
#define W4A8MOE_V3_CHECKPOINT_INFO W4A8MOE_END_OF(w4a8moe_checkpoint_info, shared_gated)
/* Structs that came later: struct_size 0 means their first layout. */
#define W4A8MOE_V4_MEMORY_INFO W4A8MOE_END_OF(w4a8moe_memory_info, workspace_min_bytes)

/* Copies the caller's struct src (struct_size first) into dst, the library's of cur bytes:
 * the caller's bytes up to cur, zeros after them, dst's struct_size = cur. A caller's struct
 * longer than cur is accepted when its extra bytes are all 0 (UNSUPPORTED otherwise); a
 * struct_size that cannot be one (below sizeof(size_t), above 64 KiB) is INVALID_ARGUMENT.
 * `type` names the struct in messages. */
w4a8moe_status w4a8moe_struct_in(void *dst, size_t cur, const void *src, size_t v3,
                                 const char *type, w4a8moe_err *err);

/* Writes the library's struct src (cur bytes) into the caller's dst of `size` bytes (the
 * caller's sizeof; 0 = v3): never more than size bytes, and dst's struct_size = size. */
void w4a8moe_struct_out(void *dst, size_t size, const void *src, size_t cur, size_t v3);

#define STRUCT_IN(err, dst, src, T, V3)                                                        \
    w4a8moe_struct_in((dst), sizeof(T), (src), (V3), #T, (err))

#endif /* W4A8MOE_STRUCT_ABI_H */
