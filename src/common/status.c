/*
 * status.c — the one status string table, error recording and the per-thread error sink.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[W4A8MOE_STATUS_COUNT_] = {
    [W4A8MOE_STATUS_OK] = "ok",
    [W4A8MOE_STATUS_INVALID_ARGUMENT] = "invalid argument",
    [W4A8MOE_STATUS_UNSUPPORTED] = "unsupported",
    [W4A8MOE_STATUS_OUT_OF_MEMORY] = "out of memory",
    [W4A8MOE_STATUS_IO_ERROR] = "i/o error",
    [W4A8MOE_STATUS_FORMAT_ERROR] = "format error",
    [W4A8MOE_STATUS_NOT_FOUND] = "not found",
    [W4A8MOE_STATUS_DEVICE_ERROR] = "device error",
    [W4A8MOE_STATUS_INTERNAL] = "internal error",
};

const char *w4a8moe_status_str(w4a8moe_status status)
{
    if ((int)status < 0 || status >= W4A8MOE_STATUS_COUNT_) return "unknown status";
    return status_names[status];
}

const char *w4a8moe_version(void) { return W4A8MOE_VERSION_STRING; }

static _Thread_local w4a8moe_err thread_err;

w4a8moe_err *w4a8moe_thread_err(void) { return &thread_err; }

const char *w4a8moe_last_error(void) { return thread_err.msg; }

/* Keeps only the path from "src/" on, so messages do not carry the build machine's layout. */
static const char *short_path(const char *file)
{
    const char *p = strstr(file, "src/");
    return p ? p : file;
}

w4a8moe_status w4a8moe_err_set(w4a8moe_err *err, w4a8moe_status status, const char *file, int line,
                               const char *fmt, ...)
{
    if (!err) return status;
    char what[W4A8MOE_ERR_CAP - 128]; /* leaves room for the status and file:line */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(err->msg, sizeof err->msg, "%s: %s [%s:%d]", w4a8moe_status_str(status), what,
             short_path(file), line);
    return status;
}
