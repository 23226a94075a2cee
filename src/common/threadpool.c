/*
 * threadpool.c — see threadpool.h.
 *
 * Hand-off: run() publishes (fn, arg, n_tasks), resets the task counter and the count of busy
 * workers, then bumps the generation under the mutex and broadcasts. Workers that are spinning
 * see the new generation at once; sleeping ones wake from the condition variable (bumping under
 * the mutex means no wake-up is lost). Each worker claims tasks with one atomic add until they
 * run out, then decrements `busy`; run() returns when `busy` reaches zero, so the next run
 * never overlaps a late worker.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Idle spin before sleeping: long enough to bridge the gaps between a forward's phases and
 * between the layers of a decode step (tens of microseconds), short enough not to burn a core
 * while the caller does something else. */
#define SPIN_NS 200000

typedef struct pool_worker {
    struct w4a8moe_threadpool *pool;
    int32_t id;
} pool_worker;

struct w4a8moe_threadpool {
    int32_t n_threads; /* the caller included */
    int32_t n_started; /* workers running */
    pthread_t *threads;
    pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t gen;
    atomic_int_fast64_t next;
    atomic_int busy;
    atomic_int stop;
    /* the job, written by run() before the generation is bumped */
    w4a8moe_task_fn fn;
    void *arg;
    int64_t n_tasks;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void run_tasks(w4a8moe_threadpool *tp, int32_t id)
{
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&tp->next, 1, memory_order_relaxed);
        if (t >= tp->n_tasks) return;
        tp->fn(tp->arg, t, id);
    }
}

/* Waits until the generation differs from seen (returns it) or the pool stops (returns seen). */
static uint64_t wait_job(w4a8moe_threadpool *tp, uint64_t seen)
{
    int64_t start = 0;
    for (unsigned spins = 0;; spins++) {
        uint64_t g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&tp->stop, memory_order_acquire)) return g;
        cpu_relax();
        if ((spins & 63) != 63) continue;
        if (!start) start = now_ns();
        if (now_ns() - start < SPIN_NS) continue;
        pthread_mutex_lock(&tp->mu);
        while (atomic_load_explicit(&tp->gen, memory_order_acquire) == seen &&
               !atomic_load_explicit(&tp->stop, memory_order_acquire))
            pthread_cond_wait(&tp->cv, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
        start = 0;
    }
}

static void *worker_main(void *p)
{
    pool_worker *w = p;
    w4a8moe_threadpool *tp = w->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = wait_job(tp, seen);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) return NULL;
        seen = g;
        run_tasks(tp, w->id);
        atomic_fetch_sub_explicit(&tp->busy, 1, memory_order_release);
    }
}

w4a8moe_status w4a8moe_threadpool_create(int32_t n_threads, w4a8moe_threadpool **out,
                                         w4a8moe_err *err)
{
    *out = NULL;
    RETURN_IF(err, n_threads < 1, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "thread pool of %d threads; hint: ask for at least 1", n_threads);
    w4a8moe_threadpool *tp = calloc(1, sizeof *tp);
    RETURN_IF(err, !tp, W4A8MOE_STATUS_OUT_OF_MEMORY, "thread pool");
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->next, 0);
    atomic_init(&tp->busy, 0);
    atomic_init(&tp->stop, 0);
    if (n_threads > 1) {
        tp->threads = calloc((size_t)n_threads - 1, sizeof *tp->threads);
        tp->workers = calloc((size_t)n_threads - 1, sizeof *tp->workers);
        if (!tp->threads || !tp->workers) {
            w4a8moe_threadpool_destroy(tp);
            RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "thread pool of %d threads", n_threads);
        }
    }
    for (int32_t i = 0; i < n_threads - 1; i++) {
        tp->workers[i].pool = tp;
        tp->workers[i].id = i + 1;
        int rc = pthread_create(&tp->threads[i], NULL, worker_main, &tp->workers[i]);
        if (rc != 0) {
            w4a8moe_threadpool_destroy(tp);
            RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY,
                       "starting worker thread %d of %d failed (%s); hint: ask for fewer threads",
                       i + 1, n_threads - 1, strerror(rc));
        }
        tp->n_started++;
    }
    *out = tp;
    return W4A8MOE_STATUS_OK;
}

int32_t w4a8moe_threadpool_size(const w4a8moe_threadpool *pool) { return pool->n_threads; }

void w4a8moe_threadpool_run(w4a8moe_threadpool *tp, w4a8moe_task_fn fn, void *arg,
                            int64_t n_tasks)
{
    if (n_tasks <= 0) return;
    if (tp->n_started == 0 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    tp->n_tasks = n_tasks;
    atomic_store_explicit(&tp->next, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->busy, tp->n_started, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    run_tasks(tp, 0);
    for (unsigned spins = 0; atomic_load_explicit(&tp->busy, memory_order_acquire) != 0; spins++) {
        cpu_relax();
        if (spins > 4096) sched_yield(); /* a worker was descheduled: let it run */
    }
}

void w4a8moe_threadpool_destroy(w4a8moe_threadpool *tp)
{
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store_explicit(&tp->stop, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int32_t i = 0; i < tp->n_started; i++) pthread_join(tp->threads[i], NULL);
    pthread_cond_destroy(&tp->cv);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp->workers);
    free(tp);
}
