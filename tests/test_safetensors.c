/*
 * test_safetensors.c — the safetensors writer and reader: dtype table, round trips of random
 * tensors of every dtype (scalars and empty tensors included) with metadata, the header
 * padding, lookup, open from memory, and the writer's and opener's argument errors. The
 * malformed-file rules are in test_malformed.c.
 */
#include "loader/safetensors.h"
#include "test_util.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check_dtypes(void)
{
    static const size_t sizes[W4A8MOE_ST_DTYPE_COUNT_] = {1, 1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8, 1, 1};
    for (int i = 0; i < W4A8MOE_ST_DTYPE_COUNT_; i++) {
        const char *n = w4a8moe_st_dtype_name((w4a8moe_st_dtype)i);
        CHECK(w4a8moe_st_dtype_parse(n) == i, "dtype %s does not parse back", n);
        CHECK(w4a8moe_st_dtype_size((w4a8moe_st_dtype)i) == sizes[i], "size of %s", n);
    }
    CHECK(w4a8moe_st_dtype_parse("F8_E8M0") == -1 && w4a8moe_st_dtype_parse("bf16") == -1 &&
              w4a8moe_st_dtype_parse(NULL) == -1,
          "unknown dtype names must give -1");
}

typedef struct spec {
    char name[32];
    w4a8moe_st_dtype dt;
    int32_t nd;
    int64_t shape[3];
    unsigned char *data;
    size_t bytes;
} spec;

static void round_trip(const char *path, test_rng *r)
{
    spec s[20];
    int n = 0;
    for (int i = 0; i < W4A8MOE_ST_DTYPE_COUNT_; i++, n++) {
        spec *t = &s[n];
        snprintf(t->name, sizeof t->name, "t%02d.%s", (int)(test_rng_next(r) % 100), w4a8moe_st_dtype_name((w4a8moe_st_dtype)i));
        t->dt = (w4a8moe_st_dtype)i;
        t->nd = (int32_t)(test_rng_next(r) % 4); /* 0..3 dims; 0 = scalar */
        int64_t numel = 1;
        for (int d = 0; d < t->nd; d++) numel *= (t->shape[d] = (int64_t)(test_rng_next(r) % 7));
        t->bytes = (size_t)numel * w4a8moe_st_dtype_size(t->dt);
        t->data = malloc(t->bytes + 1);
        for (size_t b = 0; b < t->bytes; b++) t->data[b] = (unsigned char)(test_rng_next(r) | 1);
    }
    w4a8moe_err err;
    w4a8moe_st_writer *w;
    CHECK(w4a8moe_st_writer_open(path, &w, &err) == W4A8MOE_STATUS_OK, "writer open: %s", err.msg);
    for (int i = 0; i < n; i++)
        CHECK(w4a8moe_st_writer_add(w, s[i].name, s[i].dt, s[i].nd, s[i].shape, s[i].data, &err) == W4A8MOE_STATUS_OK,
              "add %s: %s", s[i].name, err.msg);
    CHECK(w4a8moe_st_writer_add(w, s[0].name, s[0].dt, s[0].nd, s[0].shape, s[0].data, &err) ==
              W4A8MOE_STATUS_INVALID_ARGUMENT && strstr(err.msg, "added twice"),
          "a duplicate name must be refused: %s", err.msg);
    int64_t neg[1] = {-1};
    CHECK(w4a8moe_st_writer_add(w, "neg", W4A8MOE_ST_F32, 1, neg, s[0].data, &err) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "a negative shape must be refused");
    CHECK(w4a8moe_st_writer_add(w, "__metadata__", W4A8MOE_ST_F32, 0, NULL, s[0].data, &err) ==
              W4A8MOE_STATUS_INVALID_ARGUMENT, "'__metadata__' must not name a tensor");
    int64_t two[1] = {2};
    CHECK(w4a8moe_st_writer_add(w, "nodata", W4A8MOE_ST_F32, 1, two, NULL, &err) == W4A8MOE_STATUS_INVALID_ARGUMENT,
          "NULL data for a non-empty tensor must be refused");
    CHECK(w4a8moe_st_writer_metadata(w, "format", "pt", &err) == W4A8MOE_STATUS_OK, "metadata");
    CHECK(w4a8moe_st_writer_close(w, &err) == W4A8MOE_STATUS_OK, "close: %s", err.msg);

    w4a8moe_st_file *f;
    CHECK(w4a8moe_st_open(path, &f, &err) == W4A8MOE_STATUS_OK, "reopen: %s", err.msg);
    if (!f) return;
    CHECK(w4a8moe_st_count(f) == (size_t)n, "count %zu, want %d", w4a8moe_st_count(f), n);
    CHECK(strcmp(w4a8moe_st_metadata(f, "format"), "pt") == 0 && !w4a8moe_st_metadata(f, "x"), "metadata lookup");
    for (int i = 0; i < n; i++) {
        const w4a8moe_st_tensor *t = w4a8moe_st_find(f, s[i].name);
        CHECK(t && t->dtype == s[i].dt && t->ndim == s[i].nd && t->nbytes == s[i].bytes &&
                  memcmp(t->data, s[i].data, s[i].bytes) == 0,
              "tensor %s did not round-trip", s[i].name);
        for (int d = 0; t && d < s[i].nd; d++) CHECK(t->shape[d] == s[i].shape[d], "%s dim %d", s[i].name, d);
        free(s[i].data);
    }
    for (size_t i = 1; i < w4a8moe_st_count(f); i++)
        CHECK(strcmp(w4a8moe_st_at(f, i - 1)->name, w4a8moe_st_at(f, i)->name) < 0, "st_at is sorted by name");
    CHECK(!w4a8moe_st_find(f, "absent") && !w4a8moe_st_at(f, (size_t)n), "absent names and indices");
    w4a8moe_st_close(f);

    /* the header length is a multiple of 8 and the padding is spaces */
    FILE *fp = fopen(path, "rb");
    unsigned char buf[8];
    CHECK(fp && fread(buf, 1, 8, fp) == 8, "read back");
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    CHECK(hl % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)hl);
    char *hdr = malloc(hl + 1);
    CHECK(fread(hdr, 1, hl, fp) == hl, "header read");
    hdr[hl] = 0;
    size_t end = strlen(hdr);
    while (end > 0 && hdr[end - 1] == ' ') end--;
    CHECK(hdr[end - 1] == '}', "the header is JSON followed only by spaces");
    free(hdr);
    if (fp) fclose(fp);
}

static void from_memory(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *buf = malloc(1 << 16);
    size_t len = fp ? fread(buf, 1, 1 << 16, fp) : 0;
    if (fp) fclose(fp);
    w4a8moe_err err;
    w4a8moe_st_file *f;
    CHECK(w4a8moe_st_open_memory(buf, len, "mem", &f, &err) == W4A8MOE_STATUS_OK, "open_memory: %s", err.msg);
    CHECK(f && strcmp(w4a8moe_st_path(f), "mem") == 0, "label");
    w4a8moe_st_close(f);
    free(buf);
}

static void open_errors(const char *dir)
{
    w4a8moe_err err;
    w4a8moe_st_file *f;
    char path[300];
    snprintf(path, sizeof path, "%s/absent.safetensors", dir);
    CHECK(w4a8moe_st_open(path, &f, &err) == W4A8MOE_STATUS_NOT_FOUND && strstr(err.msg, "absent.safetensors"),
          "a missing file is NOT_FOUND naming it: %s", err.msg);
    CHECK(w4a8moe_st_open(dir, &f, &err) == W4A8MOE_STATUS_IO_ERROR && strstr(err.msg, "directory"),
          "a directory is IO_ERROR: %s", err.msg);
    snprintf(path, sizeof path, "%s/no-such-dir/x.safetensors", dir);
    w4a8moe_st_writer *w;
    CHECK(w4a8moe_st_writer_open(path, &w, &err) == W4A8MOE_STATUS_IO_ERROR, "writer to a missing dir: IO_ERROR");
    snprintf(path, sizeof path, "%s/aborted.safetensors", dir);
    CHECK(w4a8moe_st_writer_open(path, &w, &err) == W4A8MOE_STATUS_OK, "writer open");
    w4a8moe_st_writer_abort(w);
    struct stat sb;
    CHECK(stat(path, &sb) != 0, "abort removes the partial file");
    w4a8moe_st_writer_abort(NULL);
    w4a8moe_st_close(NULL);
}

int main(void)
{
    uint64_t seed = test_seed();
    test_rng r = {seed};
    char dir[] = "/tmp/w4a8moe-test-st-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[300];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    check_dtypes();
    for (int i = 0; i < 5; i++) round_trip(path, &r);
    from_memory(path);
    open_errors(dir);
    unlink(path);
    rmdir(dir);
    TEST_MAIN_END();
}
