/*
 * run_device.h — what `run --all-layers` (tools/cmd_run_model.c) needs from the device its
 * layers live on: buffers, copies, a timed forward and the device's memory in use. On the host
 * these are malloc, memcpy and the wall clock; on a CUDA device cudaMalloc, cudaMemcpy, CUDA
 * events and cudaMemGetInfo (a build without nvcc has only the host).
 */
#ifndef W4A8MOE_RUN_DEVICE_H
#define W4A8MOE_RUN_DEVICE_H

#include "cli.h"

#include <stddef.h>
#include <stdint.h>

void *run_dev_alloc(const cli_device *dev, size_t bytes); /* NULL on failure */
void run_dev_free(const cli_device *dev, void *p);
int run_dev_upload(const cli_device *dev, void *dst, const void *src, size_t bytes);   /* 0 ok */
int run_dev_download(const cli_device *dev, void *dst, const void *src, size_t bytes); /* 0 ok */

/* One forward, waited for, then w4a8moe_layer_check (bad ids reported as on the host); *ms is
 * its time (CUDA events on the default stream around the forward; the host's wall clock). */
w4a8moe_status run_dev_forward(const cli_device *dev, w4a8moe_layer *L, int64_t T, const void *x,
                               const w4a8moe_routing_input *r, void *out, double *ms);

/* Bytes of the device's memory in use (total - free, cudaMemGetInfo: every process and the CUDA
 * context included) and its total; on the host the process's peak resident set (getrusage) and
 * 0. Returns 0, or -1 when unknown. */
int run_dev_mem(const cli_device *dev, uint64_t *used, uint64_t *total);

#endif /* W4A8MOE_RUN_DEVICE_H */
