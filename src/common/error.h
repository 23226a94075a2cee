/*
 * error.h — internal status plumbing shared by every layer of the library.
 *
 * Internal functions that can fail return a w4a8moe_status and write a message into a
 * w4a8moe_err they are handed (a layer's, or the calling thread's). RETURN_IF records what went
 * wrong, where (file:line) and, by convention inside the message, "hint: ..." when the user can
 * act. FORWARD passes a failure up unchanged, keeping the first (deepest) message.
 */
#ifndef W4A8MOE_ERROR_H
#define W4A8MOE_ERROR_H

#include "w4a8moe.h"

#include <stddef.h>

#define W4A8MOE_ERR_CAP 1024

typedef struct w4a8moe_err {
    char msg[W4A8MOE_ERR_CAP];
} w4a8moe_err;

#if defined(__GNUC__)
#define W4A8MOE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define W4A8MOE_PRINTF(a, b)
#endif

/* Records "<status>: <message> [file:line]" in err (if non-NULL) and returns status. */
w4a8moe_status w4a8moe_err_set(w4a8moe_err *err, w4a8moe_status status, const char *file, int line,
                               const char *fmt, ...) W4A8MOE_PRINTF(5, 6);

/* The calling thread's error sink for calls that have no layer. */
w4a8moe_err *w4a8moe_thread_err(void);

#define RETURN_IF(err, cond, status, ...)                                                      \
    do {                                                                                       \
        if (cond) return w4a8moe_err_set((err), (status), __FILE__, __LINE__, __VA_ARGS__);    \
    } while (0)

#define RETURN_ERR(err, status, ...) return w4a8moe_err_set((err), (status), __FILE__, __LINE__, __VA_ARGS__)

#define FORWARD(expr)                                                                          \
    do {                                                                                       \
        w4a8moe_status forward_status_ = (expr);                                               \
        if (forward_status_ != W4A8MOE_STATUS_OK) return forward_status_;                      \
    } while (0)

#endif /* W4A8MOE_ERROR_H */
