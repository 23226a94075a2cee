/*
 * bench_env.c — `bench --env-sets` (bench.h): the library's path switches, set by set, so that
 * one process times several configurations of one layer. The switches are environment variables
 * the backends read when a layer is made (docs/cli.md), so each set is applied around making its
 * layers and the earlier values are put back after; only W4A8MOE_* names are accepted, so a typo
 * cannot change something else of the process, and not the few the library reads once.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int env_name_ok(const char *s, size_t n)
{
    static const char prefix[] = "W4A8MOE_";
    if (n <= sizeof prefix - 1 || n >= BENCH_ENV_LEN || strncmp(s, prefix, sizeof prefix - 1) != 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) return 0;
    return 1;
}

/* The variables the library reads once a process, not when a layer is made: a set cannot change
 * them (src/cuda/cuda_util.h, src/common/log.c, src/common/cpu_features.c). */
static int env_read_once(const char *s, size_t n)
{
    static const char *const once[] = {"W4A8MOE_PDL", "W4A8MOE_LOG", "W4A8MOE_CPU_GENERIC"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        if (strlen(once[i]) == n && strncmp(s, once[i], n) == 0) return 1;
    return 0;
}

int bench_parse_env_sets(const char *value, void *dst, char *why, size_t cap)
{
    bench_env_sets *s = (bench_env_sets *)dst;
    memset(s, 0, sizeof *s);
    const char *p = value;
    for (;;) { /* one set: up to ';' or the end */
        if (s->n >= BENCH_ENV_SETS_MAX) {
            snprintf(why, cap, "more than %d sets", BENCH_ENV_SETS_MAX);
            return -1;
        }
        const char *end = strchr(p, ';');
        if (!end) end = p + strlen(p);
        const int set = s->n++;
        int words = 0;
        for (const char *w = p; w < end;) { /* words separated by spaces */
            while (w < end && *w == ' ') w++;
            const char *we = w;
            while (we < end && *we != ' ') we++;
            if (we == w) break;
            words++;
            if (we - w == 1 && *w == '-') { /* the empty set */
                w = we;
                continue;
            }
            const char *eq = memchr(w, '=', (size_t)(we - w));
            if (!eq || !env_name_ok(w, (size_t)(eq - w))) {
                snprintf(why, cap, "set %d: '%.*s' is not W4A8MOE_NAME=VALUE", set + 1, (int)(we - w), w);
                return -1;
            }
            if (env_read_once(w, (size_t)(eq - w))) {
                snprintf(why, cap, "set %d: %.*s is read once a process, not when a layer is made; set it outside "
                         "--env-sets", set + 1, (int)(eq - w), w);
                return -1;
            }
            const size_t vl = (size_t)(we - eq - 1);
            for (size_t c = 0; c < vl; c++) { /* printed in JSON and the set's header: plain characters */
                const char ch = eq[1 + c];
                if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                      strchr("_.,:+-", ch))) {
                    snprintf(why, cap, "set %d: '%.*s': a value of letters, digits and _.,:+- only", set + 1,
                             (int)(we - w), w);
                    return -1;
                }
            }
            if (vl == 0 || vl >= BENCH_ENV_LEN) {
                snprintf(why, cap, "set %d: '%.*s' needs a value of 1-%d characters", set + 1, (int)(we - w), w,
                         BENCH_ENV_LEN - 1);
                return -1;
            }
            if (s->nvars[set] >= BENCH_ENV_VARS_MAX) {
                snprintf(why, cap, "set %d: more than %d assignments", set + 1, BENCH_ENV_VARS_MAX);
                return -1;
            }
            const int v = s->nvars[set]++;
            memcpy(s->var[set][v], w, (size_t)(eq - w));
            memcpy(s->value[set][v], eq + 1, vl);
            w = we;
        }
        if (!words) { /* a stray ';' would time the environment as it is once more, unasked */
            snprintf(why, cap, "set %d is empty: write '-' for a run under the environment as it is", set + 1);
            return -1;
        }
        if (*end == '\0') break;
        p = end + 1;
    }
    return 0;
}

void bench_env_set_label(const bench_env_sets *s, int i, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int v = 0; v < s->nvars[i] && used < cap; v++) {
        int n = snprintf(buf + used, cap - used, "%s%s=%s", v ? " " : "", s->var[i][v], s->value[i][v]);
        if (n < 0) break;
        used += (size_t)n;
    }
    if (s->nvars[i] == 0) snprintf(buf, cap, "-");
}

/* Puts back the first n variables of set i as saved (restore's loop, also for a partial apply). */
static void restore_first(const bench_env_sets *s, int i, int n, char *saved[BENCH_ENV_VARS_MAX],
                          int had[BENCH_ENV_VARS_MAX])
{
    for (int v = n - 1; v >= 0; v--) {
        if (had[v]) setenv(s->var[i][v], saved[v], 1);
        else unsetenv(s->var[i][v]);
        free(saved[v]);
        saved[v] = NULL;
        had[v] = 0;
    }
}

int bench_env_apply(const bench_env_sets *s, int i, char *saved[BENCH_ENV_VARS_MAX], int had[BENCH_ENV_VARS_MAX])
{
    for (int v = 0; v < BENCH_ENV_VARS_MAX; v++) {
        saved[v] = NULL;
        had[v] = 0;
    }
    for (int v = 0; v < s->nvars[i]; v++) {
        const char *old = getenv(s->var[i][v]);
        char *copy = old ? strdup(old) : NULL;
        /* out of memory: variable v is as it was; the ones before it are put back */
        if ((old && !copy) || setenv(s->var[i][v], s->value[i][v], 1) != 0) {
            free(copy);
            restore_first(s, i, v, saved, had);
            return -1;
        }
        had[v] = old != NULL;
        saved[v] = copy;
    }
    return 0;
}

void bench_env_restore(const bench_env_sets *s, int i, char *saved[BENCH_ENV_VARS_MAX], int had[BENCH_ENV_VARS_MAX])
{
    restore_first(s, i, s->nvars[i], saved, had);
}
