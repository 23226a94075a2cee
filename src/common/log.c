/*
 * log.c — see log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static int current_level(void)
{
    static int level = -1; /* benign race: every thread computes the same value */
    if (level < 0) {
        int l = W4A8MOE_LOG_WARN;
        const char *env = getenv("W4A8MOE_LOG");
        if (env)
            for (int i = 0; i < 4; i++)
                if (strcmp(env, level_names[i]) == 0) l = i;
        level = l;
    }
    return level;
}

int w4a8moe_log_enabled(w4a8moe_log_level level) { return (int)level <= current_level(); }

void w4a8moe_log(w4a8moe_log_level level, const char *fmt, ...)
{
    if (!w4a8moe_log_enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "w4a8moe [%s] ", level_names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
