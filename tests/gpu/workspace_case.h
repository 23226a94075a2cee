/*
 * workspace_case.h — the layer of test_gpu_workspace's cases (H 512, I 256, E 32, k 4, g 128,
 * renormalised), shared with the tools that replay a failure of them (dev/kernels/tol_replay.c,
 * dev/kernels/flip_probe.c) so that a replay builds the very layer the test built.
 */
#ifndef W4A8MOE_WORKSPACE_CASE_H
#define W4A8MOE_WORKSPACE_CASE_H

#include "w4a8moe.h"

static inline w4a8moe_layer_desc workspace_case_shape(void)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.hidden = 512; d.inter = 256; d.num_experts = 32; d.top_k = 4; d.group_size = 128;
    d.max_tokens = 300;
    d.routing.renormalize = 1;
    return d;
}

#endif /* W4A8MOE_WORKSPACE_CASE_H */
