/*
 * workspace.h — the shared scratch buffer behind the public w4a8moe_workspace (include/w4a8moe.h,
 * "Workspaces"): one allocation on one device, reference counted so the caller may free it
 * before the layers that work in it (each layer holds a reference).
 */
#ifndef W4A8MOE_WORKSPACE_H
#define W4A8MOE_WORKSPACE_H

#include "backend.h"

#include <stdatomic.h>

struct w4a8moe_workspace {
    const w4a8moe_device_ops *devops;
    w4a8moe_device_info dev;
    void *base;  /* 64-byte aligned on the host, 256 on CUDA (cudaMalloc) */
    size_t bytes;
    atomic_int refs;
};

void w4a8moe_workspace_retain(w4a8moe_workspace *ws);
/* Drops one reference; the last one releases the memory (and the caller's current device is
 * left as it was). NULL is a no-op. */
void w4a8moe_workspace_release(w4a8moe_workspace *ws);

#endif /* W4A8MOE_WORKSPACE_H */
