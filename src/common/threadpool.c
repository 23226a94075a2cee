/*
 * threadpool.c — see threadpool.h.
 *
 * Every pool of the process shares one team of workers (created with the first pool, grown to
 * the largest pool, joined with the last): a model runs its layers one after another, each
 * layer with its own pool, and per-pool workers meant that the workers of the layer just run
 * spun on a core the next layer needed, then slept, and each layer's first phase waited for a
 * sleeping worker's wake-up (50-140 us measured in a 2-core VM; a decode layer is ~0.9 ms).
 * One team keeps the same workers spinning from layer to layer. Runs of different pools are
 * serialised (run_mu); a run's workers are the team's first n_threads - 1.
 *
 * Hand-off: run() publishes (fn, arg, n_tasks, threads), resets the task counter and the count
 * of busy workers, then bumps the generation under the mutex and broadcasts. Workers that are
 * spinning see the new generation at once; sleeping ones wake from the condition variable
 * (bumping under the mutex means no wake-up is lost). Each worker of the run claims tasks with
 * one atomic add until they run out, then decrements `busy`; run() returns when `busy` reaches
 * zero, so the next run never overlaps a late worker.
 *
 * fork(): the child inherits the pools but not the workers (only the forking thread is copied),
 * and could inherit a mutex held by a thread that is gone. pthread_atfork handlers take every
 * lock of the team before the fork (so no run or membership change is in flight) and release
 * them on both sides; in the child the team is emptied, and the first run there starts the
 * workers again (or, if that fails, runs every task on the caller).
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

struct w4a8moe_threadpool {
    int32_t n_threads; /* the caller included */
};

/* The process's team; every field but the atomics is guarded by team_mu (membership) or
 * run_mu (the job, written by run() before the generation is bumped). */
typedef struct pool_team {
    int32_t n_workers; /* started */
    int32_t cap;       /* of threads[] */
    int32_t users;     /* pools alive */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t gen;
    atomic_int_fast64_t next;
    atomic_int busy;
    atomic_int stop;
    w4a8moe_task_fn fn;
    void *arg;
    int64_t n_tasks;
} pool_team;

/* gen = run count * GEN_ONE + the run's workers (1..run_workers take part): a worker learns
 * both from one load, so it never mistakes whether a run it sees is its own. */
#define GEN_ONE ((uint64_t)1 << 16)
#define MAX_THREADS ((int32_t)GEN_ONE)

/* Lock order: team_mu, then run_mu, then team.mu. */
static pthread_mutex_t team_mu = PTHREAD_MUTEX_INITIALIZER; /* create/destroy */
static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER;  /* one run at a time */
static pool_team team = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
/* Set in a forked child: its pools may expect workers the team no longer has. */
static atomic_int team_forked;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

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

static void run_tasks(pool_team *tp, int32_t id)
{
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&tp->next, 1, memory_order_relaxed);
        if (t >= tp->n_tasks) return;
        tp->fn(tp->arg, t, id);
    }
}

/* Waits until the generation differs from seen (returns it) or the team stops (returns seen). */
static uint64_t wait_job(pool_team *tp, uint64_t seen)
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

/* A starting worker's id and the generation when it was created: a run published before the
 * thread first gets a core is still its to take part in. */
typedef struct worker_start {
    int32_t id;
    uint64_t gen;
} worker_start;

static void *worker_main(void *p)
{
    worker_start start = *(worker_start *)p;
    free(p);
    int32_t id = start.id;
    pool_team *tp = &team;
    uint64_t seen = start.gen;
    for (;;) {
        uint64_t g = wait_job(tp, seen);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) return NULL;
        seen = g;
        if ((uint64_t)id > g % GEN_ONE) continue; /* a smaller pool's run */
        run_tasks(tp, id);
        atomic_fetch_sub_explicit(&tp->busy, 1, memory_order_release);
    }
}

/* Stops and joins every worker; team_mu held, no run in flight. */
static void team_stop(pool_team *tp)
{
    pthread_mutex_lock(&tp->mu);
    atomic_store_explicit(&tp->stop, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int32_t i = 0; i < tp->n_workers; i++) pthread_join(tp->threads[i], NULL);
    free(tp->threads);
    tp->threads = NULL;
    tp->n_workers = tp->cap = 0;
    atomic_store_explicit(&tp->stop, 0, memory_order_release);
}

/* Grows the team to `want` workers; team_mu held. Returns 0 or the pthread error. */
static int team_grow(pool_team *tp, int32_t want)
{
    if (want <= tp->n_workers) return 0;
    if (want > tp->cap) {
        pthread_t *t = realloc(tp->threads, (size_t)want * sizeof *t);
        if (!t) return -1;
        tp->threads = t;
        tp->cap = want;
    }
    /* a worker started now must not take part in a run already in flight */
    pthread_mutex_lock(&run_mu);
    int rc = 0;
    while (tp->n_workers < want && rc == 0) {
        worker_start *ws = malloc(sizeof *ws);
        if (!ws) {
            rc = -1;
            break;
        }
        *ws = (worker_start){tp->n_workers + 1,
                             atomic_load_explicit(&tp->gen, memory_order_relaxed)};
        rc = pthread_create(&tp->threads[tp->n_workers], NULL, worker_main, ws);
        if (rc == 0) tp->n_workers++;
        else free(ws);
    }
    pthread_mutex_unlock(&run_mu);
    return rc;
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&team_mu);
    pthread_mutex_lock(&run_mu);
    pthread_mutex_lock(&team.mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&team.mu);
    pthread_mutex_unlock(&run_mu);
    pthread_mutex_unlock(&team_mu);
}

static void fork_child(void)
{
    /* the workers do not exist here: forget them (never join), keep the array for regrowth */
    team.n_workers = 0;
    atomic_store_explicit(&team.busy, 0, memory_order_relaxed);
    atomic_store_explicit(&team.stop, 0, memory_order_relaxed);
    pthread_cond_init(&team.cv, NULL); /* its waiters were the workers */
    atomic_store_explicit(&team_forked, 1, memory_order_release);
    pthread_mutex_unlock(&team.mu);
    pthread_mutex_unlock(&run_mu);
    pthread_mutex_unlock(&team_mu);
}

static void atfork_register(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* In a forked child: starts the workers this pool's runs need; 0 when the team has them. */
static int team_respawn(int32_t want)
{
    pthread_mutex_lock(&team_mu);
    int rc = team_grow(&team, want);
    pthread_mutex_unlock(&team_mu);
    return rc;
}

w4a8moe_status w4a8moe_threadpool_create(int32_t n_threads, w4a8moe_threadpool **out,
                                         w4a8moe_err *err)
{
    pthread_once(&atfork_once, atfork_register);
    *out = NULL;
    RETURN_IF(err, n_threads < 1 || n_threads > MAX_THREADS, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "thread pool of %d threads; hint: ask for 1 to %d", n_threads, MAX_THREADS);
    w4a8moe_threadpool *tp = calloc(1, sizeof *tp);
    RETURN_IF(err, !tp, W4A8MOE_STATUS_OUT_OF_MEMORY, "thread pool");
    tp->n_threads = n_threads;
    pthread_mutex_lock(&team_mu);
    int rc = team_grow(&team, n_threads - 1);
    if (rc == 0) team.users++;
    else if (team.users == 0) team_stop(&team);
    pthread_mutex_unlock(&team_mu);
    if (rc != 0) {
        free(tp);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY,
                   "starting %d worker threads failed (%s); hint: ask for fewer threads",
                   n_threads - 1, rc > 0 ? strerror(rc) : "out of memory");
    }
    *out = tp;
    return W4A8MOE_STATUS_OK;
}

int32_t w4a8moe_threadpool_size(const w4a8moe_threadpool *pool) { return pool->n_threads; }

void w4a8moe_threadpool_run(w4a8moe_threadpool *pool, w4a8moe_task_fn fn, void *arg,
                            int64_t n_tasks)
{
    if (n_tasks <= 0) return;
    if (pool->n_threads == 1 || n_tasks == 1 ||
        (atomic_load_explicit(&team_forked, memory_order_acquire) &&
         team_respawn(pool->n_threads - 1) != 0)) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pool_team *tp = &team;
    pthread_mutex_lock(&run_mu);
    tp->fn = fn;
    tp->arg = arg;
    tp->n_tasks = n_tasks;
    uint64_t workers = (uint64_t)pool->n_threads - 1; /* the team has these (create) */
    atomic_store_explicit(&tp->next, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->busy, (int)workers, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    uint64_t g = atomic_load_explicit(&tp->gen, memory_order_relaxed);
    atomic_store_explicit(&tp->gen, (g / GEN_ONE + 1) * GEN_ONE + workers, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    run_tasks(tp, 0);
    for (unsigned spins = 0; atomic_load_explicit(&tp->busy, memory_order_acquire) != 0; spins++) {
        cpu_relax();
        if (spins > 4096) sched_yield(); /* a worker was descheduled: let it run */
    }
    pthread_mutex_unlock(&run_mu);
}

void w4a8moe_threadpool_destroy(w4a8moe_threadpool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&team_mu);
    if (--team.users == 0) team_stop(&team);
    pthread_mutex_unlock(&team_mu);
    free(pool);
}
