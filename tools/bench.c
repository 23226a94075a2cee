/*
 * bench.c — see bench.h. The machine's rates are measured in the run that uses them, so a
 * floor is never a number from another day or another load.
 */
#include "bench.h"

#include "../src/common/cpu_features.h"
#include "../src/core/backend.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    if (n <= 0) return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- cache and memory sizes ---------------------------------------------------------------- */

/* "32768K" / "32M" / "1048576" → bytes */
static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k') v <<= 10;
    else if (*end == 'M' || *end == 'm') v <<= 20;
    return (size_t)v;
}

size_t bench_llc_bytes(int *assumed)
{
    *assumed = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0) return (size_t)l3;
#endif
    /* highest cache level /sys lists for cpu0 */
    size_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 8; i++) {
        char path[96], buf[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        int level = fgets(buf, sizeof buf, f) ? atoi(buf) : 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        if (!f) continue;
        size_t size = fgets(buf, sizeof buf, f) ? parse_size(buf) : 0;
        fclose(f);
        if (level > best_level && size) {
            best_level = level;
            best = size;
        }
    }
    if (best) return best;
    *assumed = 1;
    return (size_t)32 << 20;
}

size_t bench_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (size_t)kb << 10;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

/* ---- threads ------------------------------------------------------------------------------- */

typedef struct par_job {
    void (*fn)(void *arg, int tid, int nthreads);
    void *arg;
    int tid, nthreads;
} par_job;

static void *par_main(void *p)
{
    par_job *j = p;
    j->fn(j->arg, j->tid, j->nthreads);
    return NULL;
}

/* Runs fn on `threads` threads (the caller is thread 0) and waits for all. */
static void run_parallel(int threads, void (*fn)(void *, int, int), void *arg)
{
    pthread_t th[256];
    par_job jobs[256];
    int started = 1;
    if (threads > 256) threads = 256;
    for (int t = 1; t < threads; t++) {
        jobs[t] = (par_job){fn, arg, t, threads};
        if (pthread_create(&th[t], NULL, par_main, &jobs[t]) != 0) break;
        started++;
    }
    fn(arg, 0, threads);
    for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
    /* a thread that could not start leaves its share undone: do it here */
    for (int t = started; t < threads; t++) fn(arg, t, threads);
}

/* ---- memory bandwidth ---------------------------------------------------------------------- */

typedef struct copy_job {
    char *src, *dst;
    size_t bytes;
    int mode; /* COPY_FILL, COPY_MEMCPY, COPY_STREAM */
} copy_job;

enum { COPY_FILL, COPY_MEMCPY, COPY_STREAM };

#if defined(__x86_64__) && defined(__GNUC__)
/* 32-byte loads and non-temporal stores: the destination skips the read-for-ownership, so this
 * often beats memcpy; the larger of the two is the machine's copy rate. len % 32 == 0. */
__attribute__((target("avx2"))) static void copy_stream(char *dst, const char *src, size_t len)
{
    for (size_t i = 0; i < len; i += 32)
        _mm256_stream_si256((__m256i *)(dst + i), _mm256_load_si256((const __m256i *)(src + i)));
    _mm_sfence();
}
#endif

static void copy_part(void *arg, int tid, int n)
{
    copy_job *j = arg;
    size_t chunk = (j->bytes / (size_t)n) & ~(size_t)4095;
    size_t begin = chunk * (size_t)tid, len = tid == n - 1 ? j->bytes - begin : chunk;
    if (j->mode == COPY_FILL) { /* first touch by the thread that copies: pages land near it */
        memset(j->src + begin, 1 + tid, len);
        memset(j->dst + begin, 0, len);
    }
#if defined(__x86_64__) && defined(__GNUC__)
    else if (j->mode == COPY_STREAM)
        copy_stream(j->dst + begin, j->src + begin, len);
#endif
    else
        memcpy(j->dst + begin, j->src + begin, len);
}

/* Best read+write rate over 5 copies with memcpy and, on AVX2, 5 with streaming stores. */
static double measure_copy(int threads, size_t bytes, int avx2)
{
    copy_job j = {aligned_alloc(4096, bytes), aligned_alloc(4096, bytes), bytes, COPY_FILL};
    double best = 0.0;
    if (j.src && j.dst) {
        run_parallel(threads, copy_part, &j);
        for (int rep = 0; rep < 10; rep++) {
            j.mode = avx2 && rep % 2 ? COPY_STREAM : COPY_MEMCPY;
            double t0 = bench_now();
            run_parallel(threads, copy_part, &j);
            double dt = bench_now() - t0;
            if (dt > 0 && 2.0 * (double)bytes / dt > best) best = 2.0 * (double)bytes / dt;
        }
    }
    free(j.src);
    free(j.dst);
    return best / 1e9;
}

/* ---- FMA rate ------------------------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
#define FMA_ITERS 15000000L /* ~25 ms per run at 2 FMA/cycle, 3 GHz */
/* 10 independent chains of 8-wide FMAs: enough in flight to cover 2 ports x 4-5 cycles. */
__attribute__((target("avx2,fma"))) static void fma_part(void *arg, int tid, int n)
{
    (void)n;
    float *sink = arg;
    __m256 a0 = _mm256_set1_ps(1.0f + 1e-7f * (float)tid), a1 = a0, a2 = a0, a3 = a0, a4 = a0;
    __m256 a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    for (long i = 0; i < FMA_ITERS; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
    float out[8];
    _mm256_storeu_ps(out, s);
    sink[tid] = out[0]; /* keeps the loop alive */
}

/* Best of 3 runs: a neighbour's burst on a shared machine only slows a run down. */
static double measure_fma(int threads)
{
    static float sink[256];
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now();
        run_parallel(threads, fma_part, sink);
        double dt = bench_now() - t0;
        /* flops = threads x iterations x 10 chains x 8 lanes x 2 */
        double rate = dt > 0 ? (double)threads * FMA_ITERS * 160.0 / dt / 1e9 : 0.0;
        best = rate > best ? rate : best;
    }
    return best;
}
#endif

int bench_machine_measure(bench_machine *m, int threads)
{
    memset(m, 0, sizeof *m);
    m->threads = threads;
    m->llc_bytes = bench_llc_bytes(&m->llc_assumed);
    /* much larger than any cache: 2 x LLC, at least 256 MB, per buffer */
    size_t bytes = 2 * m->llc_bytes;
    if (bytes < ((size_t)256 << 20)) bytes = (size_t)256 << 20;
    size_t avail = bench_mem_available();
    if (avail && 2 * bytes > avail / 2) bytes = avail / 4;
    bytes &= ~(size_t)4095; /* whole pages: every thread's chunk stays 32-byte aligned */
    m->copy_bytes = bytes;
    w4a8moe_cpu_features f;
    w4a8moe_cpu_features_detect(&f);
    m->copy_gbs = measure_copy(threads, bytes, f.avx2);
#if defined(__x86_64__) && defined(__GNUC__)
    if (f.avx2 && f.fma) {
        m->fma_gflops = measure_fma(threads);
        m->fma_isa = "avx2+fma";
    }
#endif
    return m->copy_gbs > 0 ? 0 : -1;
}

/* ---- floor --------------------------------------------------------------------------------- */

void bench_floor_compute(const w4a8moe_layer_desc *d, int64_t T, const int32_t *ids,
                         size_t scale_bytes, const bench_machine *m, bench_floor *f)
{
    int32_t E = d->num_experts, k = d->top_k;
    unsigned char *hit = calloc((size_t)E, 1);
    int64_t pairs = 0;
    f->experts_hit = 0;
    for (int64_t p = 0; p < T * k; p++) {
        if (ids[p] < 0 || ids[p] >= E) continue;
        pairs++;
        if (hit && !hit[ids[p]]) {
            hit[ids[p]] = 1;
            f->experts_hit++;
        }
    }
    free(hit);
    double HI = (double)d->hidden * (double)d->inter;
    double per_expert = 3.0 * HI * (0.5 + (double)scale_bytes / d->group_size);
    double io = (double)w4a8moe_dtype_size(d->io_dtype);
    f->bytes = f->experts_hit * per_expert + 2.0 * (double)T * (double)d->hidden * io;
    f->flops = 2.0 * (double)pairs * 3.0 * HI;
    f->mem_s = m->copy_gbs > 0 ? f->bytes / (m->copy_gbs * 1e9) : 0.0;
    f->fma_s = m->fma_gflops > 0 ? f->flops / (m->fma_gflops * 1e9) : 0.0;
    f->floor_s = f->mem_s > f->fma_s ? f->mem_s : f->fma_s;
}

/* ---- comparison ---------------------------------------------------------------------------- */

void bench_compare_rows(const void *out, const void *ref, w4a8moe_dtype dt, int64_t rows,
                        int64_t H, bench_cmp *c)
{
    c->max_rel_l2 = 0.0;
    c->worst_row = -1;
    c->nonfinite = 0;
    c->mean_rel_l2 = 0.0;
    c->rows = c->above_cpu_tol = 0;
    double sum = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        double diff = 0.0, norm = 0.0;
        int ref_finite = 1;
        for (int64_t h = 0; h < H; h++) {
            double a = w4a8moe_io_get(out, dt, r * H + h), b = w4a8moe_io_get(ref, dt, r * H + h);
            if (!isfinite(b)) {
                ref_finite = 0;
                continue;
            }
            if (!isfinite(a)) c->nonfinite = 1;
            diff += (a - b) * (a - b);
            norm += b * b;
        }
        if (!ref_finite) continue;
        double rel = norm > 0 ? sqrt(diff / norm) : (diff > 0 ? INFINITY : 0.0);
        if (!(rel <= c->max_rel_l2)) { /* NaN counts as the worst */
            c->max_rel_l2 = isnan(rel) ? INFINITY : rel;
            c->worst_row = r;
        }
        sum += isnan(rel) ? INFINITY : rel;
        c->above_cpu_tol += !(rel <= BENCH_TOLERANCE);
        c->rows++;
    }
    c->mean_rel_l2 = c->rows ? sum / (double)c->rows : 0.0;
}

int bench_within_tolerance(const bench_cmp *c, int gpu, char *why, size_t cap)
{
    const double row_tol = gpu ? BENCH_TOL_GPU_ROW : BENCH_TOLERANCE;
    char buf[128];
    if (c->nonfinite)
        snprintf(buf, sizeof buf, "NaN/Inf where cpu_ref has none");
    else if (!(c->max_rel_l2 <= row_tol))
        snprintf(buf, sizeof buf, "rel-L2 %.1e above %.0e at token %lld", c->max_rel_l2, row_tol,
                 (long long)c->worst_row);
    else if (gpu && c->rows >= BENCH_TOL_GPU_MIN_ROWS && !(c->mean_rel_l2 <= BENCH_TOL_GPU_MEAN))
        snprintf(buf, sizeof buf, "mean rel-L2 %.1e over %lld rows above %.0e", c->mean_rel_l2,
                 (long long)c->rows, BENCH_TOL_GPU_MEAN);
    else
        return 1;
    if (why && cap) snprintf(why, cap, "%s", buf);
    return 0;
}

int32_t bench_ckpt_layer(const w4a8moe_checkpoint *ck, int32_t first, int i)
{
    w4a8moe_checkpoint_info info;
    if (w4a8moe_checkpoint_get_info(ck, &info) != W4A8MOE_STATUS_OK || info.num_moe_layers <= 0) return first;
    int at = 0;
    for (int j = 0; j < info.num_moe_layers; j++)
        if (info.moe_layers[j] == first) at = j;
    return info.moe_layers[(at + i) % info.num_moe_layers];
}
