/*
 * threadpool.h — a small persistent pthread pool for the CPU backends.
 *
 * w4a8moe_threadpool_run(pool, fn, arg, n) calls fn(arg, task, thread) once for every task in
 * [0, n) and returns when all are done. The calling thread works too, so a pool of n_threads
 * starts n_threads - 1 workers (a pool of 1 thread runs everything inline). Tasks are handed
 * out in increasing order from a shared counter; which thread runs which task varies from run
 * to run, so callers that want deterministic results make every output element belong to
 * exactly one task.
 *
 * Idle workers spin briefly (a forward runs several phases back to back, and a futex wake-up
 * costs tens of microseconds), then sleep on a condition variable.
 *
 * All pools of the process share one team of workers (threadpool.c says why), so runs of
 * different pools, even from different threads, take turns; run must not be called from
 * inside a task.
 */
#ifndef W4A8MOE_THREADPOOL_H
#define W4A8MOE_THREADPOOL_H

#include "error.h"

#include <stdint.h>

typedef struct w4a8moe_threadpool w4a8moe_threadpool;

/* fn(arg, task, thread): thread is in [0, n_threads), 0 being the caller of run. */
typedef void (*w4a8moe_task_fn)(void *arg, int64_t task, int32_t thread);

/* Creates a pool of n_threads >= 1 (the caller included). *out is NULL on failure. */
w4a8moe_status w4a8moe_threadpool_create(int32_t n_threads, w4a8moe_threadpool **out,
                                         w4a8moe_err *err);

/* Threads of the pool, the caller included. */
int32_t w4a8moe_threadpool_size(const w4a8moe_threadpool *pool);

/* Runs fn for tasks [0, n_tasks) on every thread of the pool; returns when all are done. */
void w4a8moe_threadpool_run(w4a8moe_threadpool *pool, w4a8moe_task_fn fn, void *arg,
                            int64_t n_tasks);

/* Stops and joins the workers. NULL is a no-op. */
void w4a8moe_threadpool_destroy(w4a8moe_threadpool *pool);

#endif /* W4A8MOE_THREADPOOL_H */
