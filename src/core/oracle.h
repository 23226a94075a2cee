/*
 * oracle.h — picks the experts backend and its prepare/finalize partner for a layer.
 *
 * Each experts backend is asked its predicates one axis at a time, in a fixed order:
 * device → quant scheme pair → activation → parallel config → shape. The first failing axis
 * and its one-line reason are the verdict. The first backend of the registry (priority order)
 * that passes every axis wins, paired with the first prepare/finalize whose device, layout and
 * parallel config fit. A forced backend that does not fit is an error carrying its reason.
 */
#ifndef W4A8MOE_ORACLE_H
#define W4A8MOE_ORACLE_H

#include "backend.h"

typedef struct w4a8moe_verdict {
    int ok;                     /* passes every axis (and has a prepare/finalize partner) */
    w4a8moe_axis axis;          /* first failing axis when !ok */
    char why[W4A8MOE_WHY_CAP];  /* its reason when !ok */
    const w4a8moe_prepfin_ops *prepfin; /* partner when ok */
} w4a8moe_verdict;

const char *w4a8moe_axis_name(w4a8moe_axis axis);

/* The verdict of one experts backend for a layer on a device. */
void w4a8moe_oracle_judge(const w4a8moe_experts_ops *ops, const w4a8moe_device_info *dev,
                          const w4a8moe_layer_desc *d, w4a8moe_verdict *v);

/* Chooses the backend: forced (by name, may be NULL) or the best that fits. */
w4a8moe_status w4a8moe_oracle_select(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                                     const char *forced, const w4a8moe_experts_ops **experts,
                                     const w4a8moe_prepfin_ops **prepfin, w4a8moe_err *err);

/* Appends printf-style text to a report buffer of cap bytes at *used, which always grows by the
 * text's full length (so the caller learns the length needed); the text is truncated, and buf
 * stays NUL-terminated, where it does not fit. */
void w4a8moe_report_appendf(char *buf, size_t cap, size_t *used, const char *fmt, ...)
    W4A8MOE_PRINTF(4, 5);

/* One line per backend ("selected", "accepted", or "rejected (axis): reason") into buf, and the
 * selected backend's paths by batch size where it describes them; returns the length the full
 * report needs, excluding the NUL. */
size_t w4a8moe_oracle_report(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                             const char *forced, char *buf, size_t cap);

/* The paths of backend ex by batch size (its describe_batch, which must be set) under the
 * selected backend's line of the report: ranges of T, 1 to d->max_tokens, that run one path. */
void w4a8moe_oracle_report_batches(const w4a8moe_experts_ops *ex, const w4a8moe_device_info *dev,
                                   const w4a8moe_layer_desc *d, char *buf, size_t cap, size_t *used);

#endif /* W4A8MOE_ORACLE_H */
