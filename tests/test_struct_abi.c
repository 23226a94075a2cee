/*
 * test_struct_abi.c — the header's "ABI" rules for the structs that carry struct_size, tried
 * the way programs built against other versions of w4a8moe.h would call the library:
 *   - an older program: its struct ends before members this library has (cut at a member,
 *     in a heap block of exactly that size, so the sanitizer run catches any read past it);
 *     whatever lies where the missing members would be must not be read;
 *   - a newer program: its struct is longer than this library's; zero extra bytes are
 *     accepted, non-zero ones refused with UNSUPPORTED naming the struct;
 *   - a program from before struct_size (a struct_size that is no size): INVALID_ARGUMENT;
 *   - the fill functions (*_sized) write no byte past the caller's size.
 */
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <stddef.h>
#include <string.h>

#ifndef TEST_DATA
#define TEST_DATA "tests/data"
#endif

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* A heap copy of the first n bytes of src with struct_size = n: the struct as a header that
 * ended there would have it. */
static void *older(const void *src, size_t n)
{
    unsigned char *p = malloc(n);
    if (!p) abort();
    memcpy(p, src, n);
    memcpy(p, &n, sizeof n);
    return p;
}

static void tiny_desc(w4a8moe_layer_desc *d)
{
    w4a8moe_layer_desc_init(d);
    d->max_tokens = 4;
    d->hidden = 128;
    d->inter = 64;
    d->num_experts = 4;
    d->top_k = 2;
    d->group_size = 32;
}

static void test_init_sizes(void)
{
    w4a8moe_layer_desc d;
    memset(&d, 0xab, sizeof d);
    w4a8moe_layer_desc_init(&d);
    CHECK(d.struct_size == sizeof d && d.ep_size == 1 && d.max_tokens == 0,
          "desc_init sets struct_size = sizeof and the defaults");
    /* an older program's desc, ending before ep_rank: the library writes only that much */
    size_t cut = offsetof(w4a8moe_layer_desc, ep_rank);
    unsigned char buf[sizeof(w4a8moe_layer_desc) + 16];
    memset(buf, 0xab, sizeof buf);
    w4a8moe_layer_desc_init_sized((w4a8moe_layer_desc *)buf, cut);
    size_t got;
    memcpy(&got, buf, sizeof got);
    int clean = 1;
    for (size_t i = cut; i < sizeof buf; i++) clean &= buf[i] == 0xab;
    CHECK(got == cut && clean, "desc_init_sized(%zu) wrote past the caller's struct", cut);
    /* a newer program's desc: the members this library lacks are zeroed */
    memset(buf, 0xab, sizeof buf);
    w4a8moe_layer_desc_init_sized((w4a8moe_layer_desc *)buf, sizeof buf);
    clean = 1;
    for (size_t i = sizeof(w4a8moe_layer_desc); i < sizeof buf; i++) clean &= buf[i] == 0;
    memcpy(&got, buf, sizeof got);
    CHECK(got == sizeof buf && clean, "a newer caller's unknown members read back as 0");
    memset(buf, 0xab, sizeof buf);
    CHECK(w4a8moe_model_layer_desc_sized("tiny", 8, (w4a8moe_layer_desc *)buf, cut) ==
              W4A8MOE_STATUS_OK,
          "model desc: %s", w4a8moe_last_error());
    clean = 1;
    for (size_t i = cut; i < sizeof buf; i++) clean &= buf[i] == 0xab;
    CHECK(clean, "model_layer_desc_sized wrote past the caller's struct");
}

/* Runs one forward of L on fixed inputs into out (bf16 [4, 128]). */
static w4a8moe_status forward(w4a8moe_layer *L, const w4a8moe_routing_input *ri, uint16_t *out)
{
    uint16_t x[4 * 128];
    for (int i = 0; i < 4 * 128; i++) x[i] = (uint16_t)(0x3c00 + (i * 37) % 512);
    return w4a8moe_layer_forward(L, 4, x, ri, out, NULL);
}

static void test_older_weights_options_routing(test_rng *r)
{
    w4a8moe_layer_desc d;
    tiny_desc(&d);
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0,
          "weights");
    int32_t ids[8] = {0, 1, 2, 3, 1, 3, 0, 2};
    float wts[8] = {0.5f, 0.25f, 0.75f, 0.125f, 1.0f, 0.5f, 0.25f, 0.5f};
    w4a8moe_routing_input ri = W4A8MOE_INIT(w4a8moe_routing_input);
    ri.topk_ids = ids;
    ri.topk_weights = wts;
    uint16_t want[4 * 128], got[4 * 128];

    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, NULL, &L) == W4A8MOE_STATUS_OK, "create: %s",
          w4a8moe_last_error());
    CHECK(L && forward(L, &ri, want) == W4A8MOE_STATUS_OK, "forward");
    w4a8moe_layer_free(L);

    /* weights from a header without `shared`; where it would be lies a pointer that must not
     * be followed (and the block ends there: the sanitizer run checks no byte past is read) */
    w4a8moe_weights full = sw.weights;
    full.shared = (const w4a8moe_shared_expert *)(uintptr_t)0x10;
    w4a8moe_weights *old_w = older(&full, offsetof(w4a8moe_weights, shared));
    w4a8moe_layer_desc *old_d = older(&d, offsetof(w4a8moe_layer_desc, ep_size) + sizeof(int32_t));
    /* options from a header without device_kind and after: a bogus kind there is never read */
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.backend = "cpu_ref";
    o.device_kind = (w4a8moe_device_kind)77;
    w4a8moe_layer_options *old_o = older(&o, offsetof(w4a8moe_layer_options, device_kind));
    L = NULL;
    CHECK(w4a8moe_layer_create(old_d, old_w, old_o, &L) == W4A8MOE_STATUS_OK,
          "create from older structs: %s", w4a8moe_last_error());
    CHECK(L && strcmp(w4a8moe_layer_backend(L), "cpu_ref") == 0 &&
              strcmp(w4a8moe_layer_shared_backend(L), "") == 0,
          "older structs: backend %s, no shared expert", L ? w4a8moe_layer_backend(L) : "-");
    /* routing from a header without router_logits: a logits pointer there is never read */
    float logits[16];
    w4a8moe_routing_input ri_full = ri;
    ri_full.router_logits = logits;
    w4a8moe_routing_input *old_ri =
        older(&ri_full, offsetof(w4a8moe_routing_input, router_logits));
    CHECK(L && forward(L, old_ri, got) == W4A8MOE_STATUS_OK, "forward with older routing");
    CHECK(memcmp(got, want, sizeof got) == 0,
          "cpu_ref on older structs = the default layer's output, bit for bit");
    /* the same older routing without ids: nothing routes it, the logits are not seen */
    w4a8moe_routing_input only_logits = W4A8MOE_INIT(w4a8moe_routing_input);
    only_logits.router_logits = logits;
    free(old_ri);
    old_ri = older(&only_logits, offsetof(w4a8moe_routing_input, router_logits));
    CHECK(L && forward(L, old_ri, got) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_layer_error(L), "router_logits"),
          "older routing without ids: '%s'", L ? w4a8moe_layer_error(L) : "");
    w4a8moe_layer_free(L);
    /* the full options with that bogus kind are refused: the cut above is what hid it */
    L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
              has(w4a8moe_last_error(), "device_kind"),
          "full options with device_kind 77: '%s'", w4a8moe_last_error());
    free(old_ri);
    free(old_o);
    free(old_d);
    free(old_w);
    w4a8moe_synth_weights_free(&sw);
}

/* A program built against a newer header: struct_size covers members this library lacks. */
typedef struct newer_options {
    w4a8moe_layer_options o;
    uint64_t future_member;
} newer_options;

static void test_newer_and_bogus(test_rng *r)
{
    w4a8moe_layer_desc d;
    tiny_desc(&d);
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, test_rng_next(r)) == 0,
          "weights");
    newer_options n;
    memset(&n, 0, sizeof n);
    n.o.struct_size = sizeof n;
    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &n.o, &L) == W4A8MOE_STATUS_OK,
          "a newer struct whose unknown members are 0: %s", w4a8moe_last_error());
    w4a8moe_layer_free(L);
    n.future_member = 1;
    L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &n.o, &L) == W4A8MOE_STATUS_UNSUPPORTED &&
              !L && has(w4a8moe_last_error(), "w4a8moe_layer_options") &&
              has(w4a8moe_last_error(), "newer"),
          "a newer struct setting an unknown member: '%s'", w4a8moe_last_error());
    /* a program built against a header from before struct_size has its first member (a
     * count, an enum, a pointer) where struct_size is: a value no struct has is refused */
    size_t bogus[] = {3, (size_t)1 << 40};
    for (int i = 0; i < 2; i++) {
        w4a8moe_layer_desc b = d;
        b.struct_size = bogus[i];
        CHECK(w4a8moe_layer_create(&b, &sw.weights, NULL, &L) == W4A8MOE_STATUS_INVALID_ARGUMENT &&
                  has(w4a8moe_last_error(), "struct_size"),
              "struct_size %zu: '%s'", bogus[i], w4a8moe_last_error());
    }
    /* struct_size 0 is the version-3 layout: `= {0}` callers keep working */
    w4a8moe_layer_desc z = d;
    z.struct_size = 0;
    w4a8moe_weights wz = sw.weights;
    wz.struct_size = 0;
    L = NULL;
    CHECK(w4a8moe_layer_create(&z, &wz, NULL, &L) == W4A8MOE_STATUS_OK, "struct_size 0: %s",
          w4a8moe_last_error());
    w4a8moe_layer_free(L);
    w4a8moe_synth_weights_free(&sw);
}

static void test_checkpoint_info_sized(void)
{
    w4a8moe_checkpoint *ck = NULL;
    if (w4a8moe_checkpoint_open(TEST_DATA "/golden-qwen3-tiny", &ck) != W4A8MOE_STATUS_OK) {
        CHECK(0, "open %s/golden-qwen3-tiny: %s", TEST_DATA, w4a8moe_last_error());
        return;
    }
    size_t cut = offsetof(w4a8moe_checkpoint_info, has_shared_expert);
    unsigned char buf[sizeof(w4a8moe_checkpoint_info) + 8];
    memset(buf, 0xab, sizeof buf);
    CHECK(w4a8moe_checkpoint_get_info_sized(ck, (w4a8moe_checkpoint_info *)buf, cut) ==
              W4A8MOE_STATUS_OK,
          "info: %s", w4a8moe_last_error());
    int clean = 1;
    for (size_t i = cut; i < sizeof buf; i++) clean &= buf[i] == 0xab;
    w4a8moe_checkpoint_info head;
    memcpy(&head, buf, cut);
    CHECK(clean && head.struct_size == cut && head.hidden == 256 && head.num_experts == 8,
          "get_info_sized(%zu): H %lld E %d, nothing written past", cut, (long long)head.hidden,
          head.num_experts);
    w4a8moe_checkpoint_info info;
    memset(&info, 0xab, sizeof info);
    CHECK(w4a8moe_checkpoint_get_info(ck, &info) == W4A8MOE_STATUS_OK &&
              info.struct_size == sizeof info && info.has_shared_expert == 0,
          "get_info through the inline wrapper");
    w4a8moe_checkpoint_close(ck);
}

int main(void)
{
    test_rng r = {test_seed()};
    test_init_sizes();
    test_older_weights_options_routing(&r);
    test_newer_and_bogus(&r);
    test_checkpoint_info_sized();
    TEST_MAIN_END();
}
