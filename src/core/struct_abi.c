/*
 * struct_abi.c — see struct_abi.h.
 */
#include "struct_abi.h"

#include <string.h>

/* Larger than any struct this header will grow to; a value beyond it is not a size but, most
 * likely, a program built against a header from before struct_size (API version 2 or older)
 * whose first member is something else. */
#define STRUCT_SIZE_MAX ((size_t)65536)

w4a8moe_status w4a8moe_struct_in(void *dst, size_t cur, const void *src, size_t v3,
                                 const char *type, w4a8moe_err *err)
{
    size_t n;
    memcpy(&n, src, sizeof n);
    if (n == 0) n = v3;
    RETURN_IF(err, n < sizeof(size_t) || n > STRUCT_SIZE_MAX, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "%s.struct_size = %zu is not the size of a %s; hint: set it to sizeof(%s) (or 0), "
              "and rebuild programs compiled against a w4a8moe.h older than API version 3",
              type, n, type, type);
    if (n > cur) {
        const unsigned char *extra = (const unsigned char *)src + cur;
        for (size_t i = 0; i < n - cur; i++)
            RETURN_IF(err, extra[i] != 0, W4A8MOE_STATUS_UNSUPPORTED,
                      "%s: the caller's struct (%zu bytes) sets members this library (%zu "
                      "bytes, API version %d) does not know (byte %zu is not 0); hint: use a "
                      "newer libw4a8moe, or leave those members 0",
                      type, n, cur, W4A8MOE_API_VERSION, cur + i);
        n = cur;
    }
    memcpy(dst, src, n);
    memset((unsigned char *)dst + n, 0, cur - n);
    memcpy(dst, &cur, sizeof cur);
    return W4A8MOE_STATUS_OK;
}

void w4a8moe_struct_out(void *dst, size_t size, const void *src, size_t cur, size_t v3)
{
    if (size == 0) size = v3;
    if (size < sizeof(size_t)) return;
    size_t n = size < cur ? size : cur;
    memcpy(dst, src, n);
    if (size > cur) memset((unsigned char *)dst + cur, 0, size - cur);
    memcpy(dst, &size, sizeof size);
}
