/*
 * test_util.h — the tiny test harness every tests/test_*.c binary uses.
 *
 *   CHECK(cond, fmt, ...)   counts a pass, or prints "FAIL file:line: message" and a failure
 *   TEST_MAIN_END()         prints "N passed, N failed" (the line CI reads) and returns 0/1
 *
 * Random data comes from test_rng (splitmix64) seeded by W4A8MOE_TEST_SEED or the clock, and
 * the seed is printed so any failure can be replayed. W4A8MOE_TEST_QUICK=1 (set for the
 * sanitizer run) asks tests to shrink their largest cases.
 */
#ifndef W4A8MOE_TEST_UTIL_H
#define W4A8MOE_TEST_UTIL_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int test_passed, test_failed;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (cond) {                                                                            \
            test_passed++;                                                                     \
        } else {                                                                               \
            test_failed++;                                                                     \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                        \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

#define TEST_MAIN_END()                                                                        \
    do {                                                                                       \
        printf("%d passed, %d failed\n", test_passed, test_failed);                            \
        return test_failed ? 1 : 0;                                                            \
    } while (0)

static inline int test_quick(void)
{
    const char *q = getenv("W4A8MOE_TEST_QUICK");
    return q && q[0] == '1';
}

typedef struct test_rng {
    uint64_t s;
} test_rng;

static inline uint64_t test_rng_next(test_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float test_rng_uniform(test_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((test_rng_next(r) >> 40) * (1.0 / 16777216.0));
}

/* The run's seed: W4A8MOE_TEST_SEED if set, else from the clock; printed once. */
static inline uint64_t test_seed(void)
{
    const char *env = getenv("W4A8MOE_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    printf("seed %" PRIu64 " (replay with W4A8MOE_TEST_SEED=%" PRIu64 ")\n", seed, seed);
    return seed;
}

#endif /* W4A8MOE_TEST_UTIL_H */
