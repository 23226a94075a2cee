/*
 * log.h — leveled logging to stderr, level from W4A8MOE_LOG (error|warn|info|debug; default
 * warn). Read once, on first use.
 */
#ifndef W4A8MOE_LOG_H
#define W4A8MOE_LOG_H

#include "error.h"

typedef enum w4a8moe_log_level {
    W4A8MOE_LOG_ERROR = 0,
    W4A8MOE_LOG_WARN = 1,
    W4A8MOE_LOG_INFO = 2,
    W4A8MOE_LOG_DEBUG = 3,
} w4a8moe_log_level;

int w4a8moe_log_enabled(w4a8moe_log_level level);
void w4a8moe_log(w4a8moe_log_level level, const char *fmt, ...) W4A8MOE_PRINTF(2, 3);

#endif /* W4A8MOE_LOG_H */
