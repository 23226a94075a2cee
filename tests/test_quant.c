/*
 * test_quant.c — bit-exact tests of src/common/quant.h: e4m3, bf16 and f16 conversions, int4
 * packing and the activation scale of contract step 2.
 *
 * Independent references: PyTorch's float32 → float8_e4m3fn vectors (tests/data, 5,009 of
 * them), a table-driven nearest-value e4m3 encoder written here, a two-candidate bf16 rounder
 * written here, and the compiler's own _Float16 conversion for f16.
 */
#include "common/quant.h"
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Like CHECK, but prints only the first few failures of a bulk loop. */
static int quiet_prints;
#define CHECK_QUIET(cond, ...)                                                                 \
    do {                                                                                       \
        if (cond) {                                                                            \
            test_passed++;                                                                     \
        } else {                                                                               \
            test_failed++;                                                                     \
            if (quiet_prints++ < 20) {                                                         \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                                    \
                printf(__VA_ARGS__);                                                           \
                printf("\n");                                                                  \
            }                                                                                  \
        }                                                                                      \
    } while (0)

static float f32_of(uint32_t u) { return w4a8moe_bits_f32(u); }
static uint32_t bits_of(float x) { return w4a8moe_f32_bits(x); }

/* A random float with a random bit pattern (every exponent, sign, NaN and inf included). */
static float random_bits_float(test_rng *r) { return f32_of((uint32_t)test_rng_next(r)); }

/* A random float whose magnitude spreads over [2^lo, 2^hi). */
static float random_float_in_exp(test_rng *r, int lo, int hi)
{
    int e = lo + (int)(test_rng_next(r) % (uint64_t)(hi - lo));
    float m = test_rng_uniform(r, 1.0f, 2.0f);
    float v = ldexpf(m, e);
    return (test_rng_next(r) & 1) ? -v : v;
}

/* ---- e4m3 ------------------------------------------------------------------------------- */

static const char *data_dir(void)
{
    const char *d = getenv("W4A8MOE_TEST_DATA");
    return d && d[0] ? d : "tests/data";
}

static void test_e4m3_pytorch_vectors(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/e4m3_rne_vectors.csv", data_dir());
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s (run from the repository root or set W4A8MOE_TEST_DATA)", path);
    if (!f) return;
    char line[256];
    int n = 0, header = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (!header) { /* "f32_bits,e4m3_code,value" */
            header = 1;
            CHECK(strncmp(line, "f32_bits,", 9) == 0, "unexpected CSV header: %s", line);
            continue;
        }
        char *p = line, *end;
        uint32_t in = (uint32_t)strtoul(p, &end, 16);
        CHECK_QUIET(*end == ',', "bad CSV line %d: %s", n, line);
        if (*end != ',') continue;
        unsigned code = (unsigned)strtoul(end + 1, &end, 16);
        CHECK_QUIET(*end == ',', "bad CSV line %d: %s", n, line);
        if (*end != ',') continue;
        double value = strtod(end + 1, NULL);
        n++;
        uint8_t got = w4a8moe_f32_to_e4m3(f32_of(in));
        CHECK_QUIET(got == code, "e4m3(%a = 0x%08x) = 0x%02x, PyTorch says 0x%02x", (double)f32_of(in),
                    in, got, code);
        float dec = w4a8moe_e4m3_to_f32((uint8_t)code);
        CHECK_QUIET(dec == (float)value && !!signbit(dec) == !!signbit(value),
                    "decode(0x%02x) = %a, PyTorch says %a", code, (double)dec, value);
    }
    fclose(f);
    CHECK(n == 5009, "read %d PyTorch vectors from %s, expected 5009", n, path);
}

/* Value of every e4m3 code, computed from the format definition (not from quant.h). */
static double e4m3_value_def(unsigned c)
{
    int sign = (c & 0x80) ? -1 : 1;
    int exp = (c >> 3) & 15, man = c & 7;
    double v = exp == 0 ? ldexp(man, -9) : ldexp(8 + man, exp - 10);
    return sign * v;
}

/* Nearest finite e4m3 value by table search, ties to the even code; saturates to ±448. */
static uint8_t e4m3_encode_table(float x)
{
    if (isnan(x)) return signbit(x) ? 0xff : 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    double a = fabs((double)x);
    if (a >= 448.0) return sign | 0x7e;
    unsigned best = 0;
    double bestd = a;
    for (unsigned c = 1; c <= 0x7e; c++) {
        double d = fabs(e4m3_value_def(c) - a);
        if (d < bestd || (d == bestd && (c & 1) == 0 && (best & 1))) {
            best = c;
            bestd = d;
        }
    }
    return (uint8_t)(sign | best);
}

static void test_e4m3_all_codes(void)
{
    for (unsigned c = 0; c < 256; c++) {
        float v = w4a8moe_e4m3_to_f32((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {
            CHECK(isnan(v), "code 0x%02x must decode to NaN, got %a", c, (double)v);
            CHECK((w4a8moe_f32_to_e4m3(v) & 0x7f) == 0x7f, "NaN from code 0x%02x must encode to NaN",
                  c);
            continue;
        }
        CHECK((double)v == e4m3_value_def(c) && !!signbit(v) == !!(c & 0x80),
              "decode(0x%02x) = %a, the format says %a", c, (double)v, e4m3_value_def(c));
        CHECK(w4a8moe_f32_to_e4m3(v) == c, "encode(decode(0x%02x)) = 0x%02x", c,
              w4a8moe_f32_to_e4m3(v));
        if (c > 0 && c < 0x7f)
            CHECK(v > w4a8moe_e4m3_to_f32((uint8_t)(c - 1)), "codes not increasing at 0x%02x", c);
    }
    CHECK(w4a8moe_e4m3_to_f32(0x7e) == 448.0f, "0x7e is 448");
    CHECK(w4a8moe_e4m3_to_f32(0x01) == 0x1p-9f, "0x01 is 2^-9");
    CHECK(w4a8moe_e4m3_to_f32(0x07) == 7 * 0x1p-9f, "0x07 is 7*2^-9");
    CHECK(w4a8moe_e4m3_to_f32(0x08) == 0x1p-6f, "0x08 is 2^-6");
    CHECK(w4a8moe_e4m3_to_f32(0x38) == 1.0f, "0x38 is 1");
}

static void test_e4m3_cases(void)
{
    static const struct { float x; uint8_t code; } cases[] = {
        {0.0f, 0x00}, {-0.0f, 0x80},
        /* saturation: 448 is the largest finite; 464 is the tie with the (absent) 480 */
        {448.0f, 0x7e}, {-448.0f, 0xfe}, {449.0f, 0x7e}, {464.0f, 0x7e}, {-464.0f, 0xfe},
        {464.00003f, 0x7e}, {463.99997f, 0x7e}, {-464.00003f, 0xfe}, {448.00003f, 0x7e},
        {480.0f, 0x7e}, {1e6f, 0x7e}, {FLT_MAX, 0x7e}, {-FLT_MAX, 0xfe},
        {INFINITY, 0x7e}, {-INFINITY, 0xfe},
        /* just below 448: 432 is the tie between 416 (0x7d) and 448 (0x7e) → even 0x7e */
        {432.0f, 0x7e}, {431.99997f, 0x7d}, {424.0f, 0x7d},
        /* ties to even among normals */
        {1.0625f, 0x38}, {1.1875f, 0x3a}, {17.0f, 0x58}, {19.0f, 0x5a}, {-17.0f, 0xd8},
        {1.0625001f, 0x39}, {1.0624999f, 0x38},
        /* subnormals (units of 2^-9) and their ties */
        {0x1p-9f, 0x01}, {0x1p-10f, 0x00}, {-0x1p-10f, 0x80}, {0x1.000002p-10f, 0x01},
        {3 * 0x1p-10f, 0x02}, {5 * 0x1p-10f, 0x02}, {7 * 0x1p-10f, 0x04}, {9 * 0x1p-10f, 0x04},
        {13 * 0x1p-10f, 0x06}, {15 * 0x1p-10f, 0x08}, {0x1.fffffep-7f, 0x08}, {0x1p-6f, 0x08},
        {0x1p-7f, 0x04}, {6 * 0x1p-9f, 0x06},
        /* the smallest normal's tie with the next: 2^-6 * (1 + 1/16) → even 0x08 */
        {0x1.1p-6f, 0x08}, {0x1.3p-6f, 0x0a},
        /* far below half the smallest subnormal, and f32 subnormals */
        {0x1p-20f, 0x00}, {1e-40f, 0x00}, {-1e-40f, 0x80}, {FLT_MIN, 0x00}, {-FLT_MIN, 0x80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t got = w4a8moe_f32_to_e4m3(cases[i].x);
        CHECK(got == cases[i].code, "e4m3(%a) = 0x%02x, expected 0x%02x", (double)cases[i].x, got,
              cases[i].code);
    }
    CHECK(w4a8moe_f32_to_e4m3(NAN) == 0x7f, "e4m3(+NaN) = 0x%02x, expected 0x7f",
          w4a8moe_f32_to_e4m3(NAN));
    CHECK(w4a8moe_f32_to_e4m3(-NAN) == 0xff, "e4m3(-NaN) = 0x%02x, expected 0xff",
          w4a8moe_f32_to_e4m3(-NAN));
    CHECK(w4a8moe_f32_to_e4m3(f32_of(0x7f800001u)) == 0x7f, "signalling NaN must encode to 0x7f");
    /* values above 448 by one ulp, and every midpoint bit pattern above it, saturate */
    for (uint32_t u = 0x43e00000u; u < 0x43e00000u + 4096; u += 7)
        CHECK_QUIET(w4a8moe_f32_to_e4m3(f32_of(u)) == 0x7e, "e4m3(0x%08x) must saturate", u);
}

static void test_e4m3_random(test_rng *r, int n)
{
    for (int i = 0; i < n; i++) {
        float x;
        switch (i % 4) {
        case 0: x = random_bits_float(r); break;
        case 1: x = test_rng_uniform(r, -500.0f, 500.0f); break;
        case 2: x = random_float_in_exp(r, -12, 9); break;
        default: { /* exact midpoints between neighbouring codes, and one ulp either side */
            unsigned c = (unsigned)(test_rng_next(r) % 0x7e);
            float mid = (float)((e4m3_value_def(c) + e4m3_value_def(c + 1)) / 2);
            int side = (int)(test_rng_next(r) % 3) - 1;
            x = side ? nextafterf(mid, side * INFINITY) : mid;
            if (test_rng_next(r) & 1) x = -x;
        }
        }
        uint8_t got = w4a8moe_f32_to_e4m3(x), want = e4m3_encode_table(x);
        if (isnan(x))
            CHECK_QUIET((got & 0x7f) == 0x7f && (got & 0x80) == (want & 0x80),
                        "e4m3(NaN 0x%08x) = 0x%02x", bits_of(x), got);
        else
            CHECK_QUIET(got == want, "e4m3(%a = 0x%08x) = 0x%02x, table search says 0x%02x",
                        (double)x, bits_of(x), got, want);
    }
}

/* ---- bf16 ------------------------------------------------------------------------------- */

/* RNE to bf16 by comparing the two bf16 neighbours in double; ties to the even one. */
static uint16_t bf16_reference(float x)
{
    uint32_t u = bits_of(x);
    uint16_t lo = (uint16_t)(u >> 16); /* truncation: toward zero */
    if ((u & 0xffffu) == 0) return lo;
    uint16_t hi = (uint16_t)(lo + 1); /* next away from zero (may become inf) */
    double a = fabs((double)x);
    double vlo = fabs((double)w4a8moe_bf16_to_f32(lo));
    double vhi = (hi & 0x7fff) == 0x7f80 ? ldexp(1.0, 128) : fabs((double)w4a8moe_bf16_to_f32(hi));
    double dlo = a - vlo, dhi = vhi - a;
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16(test_rng *r, int n)
{
    static const struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie, even stays */
        {0x3f818000u, 0x3f82}, /* tie, odd rounds up */
        {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80},
        {0xbf818000u, 0xbf82}, {0x80000000u, 0x8000}, {0x00000000u, 0x0000},
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* inf */
        {0x7f7fffffu, 0x7f80}, {0xff7fffffu, 0xff80}, /* FLT_MAX overflows to inf */
        {0x7f7f8000u, 0x7f80}, /* tie at the top, odd → inf */
        {0x7f7f7fffu, 0x7f7f}, {0x7f7e8000u, 0x7f7e},
        {0x00008000u, 0x0000}, {0x00018000u, 0x0002}, /* f32 subnormals, ties */
        {0x00000001u, 0x0000}, {0x007fffffu, 0x0080},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = w4a8moe_f32_to_bf16(f32_of(cases[i].in));
        CHECK(got == cases[i].out, "bf16(0x%08x) = 0x%04x, expected 0x%04x", cases[i].in, got,
              cases[i].out);
    }
    static const uint32_t nans[] = {0x7f800001u, 0x7fc00000u, 0xff800001u, 0x7fffffffu, 0xffc00001u,
                                    0x7f810000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = w4a8moe_f32_to_bf16(f32_of(nans[i]));
        CHECK((h & 0x7f80) == 0x7f80 && (h & 0x007f) && (h & 0x0040) &&
                  (h & 0x8000) == ((nans[i] >> 16) & 0x8000),
              "bf16(NaN 0x%08x) = 0x%04x must be a quiet NaN of the same sign", nans[i], h);
    }
    /* every bf16 value widens exactly and comes back unchanged */
    for (uint32_t h = 0; h < 65536; h++) {
        float v = w4a8moe_bf16_to_f32((uint16_t)h);
        CHECK_QUIET(bits_of(v) == h << 16, "bf16_to_f32(0x%04x) = 0x%08x", h, bits_of(v));
        int is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (!is_nan)
            CHECK_QUIET(w4a8moe_f32_to_bf16(v) == h, "bf16 round trip of 0x%04x gives 0x%04x", h,
                        w4a8moe_f32_to_bf16(v));
        else
            CHECK_QUIET(isnan(w4a8moe_bf16_to_f32(w4a8moe_f32_to_bf16(v))), "bf16 NaN 0x%04x lost", h);
    }
    for (int i = 0; i < n; i++) {
        float x = (i & 1) ? random_bits_float(r) : random_float_in_exp(r, -30, 30);
        if (isnan(x)) continue;
        uint16_t got = w4a8moe_f32_to_bf16(x), want = bf16_reference(x);
        CHECK_QUIET(got == want, "bf16(0x%08x) = 0x%04x, reference 0x%04x", bits_of(x), got, want);
    }
}

/* ---- f16 -------------------------------------------------------------------------------- */

static void test_f16_cases(void)
{
    static const struct { float x; uint16_t out; } cases[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.0f, 0x0000}, {-0.0f, 0x8000},
        {65504.0f, 0x7bff}, {65519.996f, 0x7bff}, {65520.0f, 0x7c00}, /* top tie → inf */
        {65536.0f, 0x7c00}, {FLT_MAX, 0x7c00}, {-FLT_MAX, 0xfc00},
        {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x1.000002p-25f, 0x0001}, /* subnormal tie */
        {3 * 0x1p-25f, 0x0002}, {5 * 0x1p-25f, 0x0002}, {0x1p-14f, 0x0400},
        {0x1.ffcp-15f, 0x0400}, /* largest subnormal's tie with 2^-14 (0x3ff odd) → 0x0400 */
        {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 3 * 0x1p-11f, 0x3c02}, /* normal ties */
        {0x1p-26f, 0x0000}, {1e-40f, 0x0000}, {-1e-40f, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = w4a8moe_f32_to_f16(cases[i].x);
        CHECK(got == cases[i].out, "f16(%a) = 0x%04x, expected 0x%04x", (double)cases[i].x, got,
              cases[i].out);
    }
    static const uint32_t nans[] = {0x7f800001u, 0x7fc00000u, 0xff800001u, 0x7fffffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = w4a8moe_f32_to_f16(f32_of(nans[i]));
        CHECK((h & 0x7c00) == 0x7c00 && (h & 0x03ff) && (h & 0x0200) &&
                  (h & 0x8000) == ((nans[i] >> 16) & 0x8000),
              "f16(NaN 0x%08x) = 0x%04x must be a quiet NaN of the same sign", nans[i], h);
    }
}

#if defined(__FLT16_MAX__)
static uint16_t f16_compiler(float x)
{
    volatile _Float16 h = (_Float16)x;
    _Float16 hh = h;
    uint16_t u;
    memcpy(&u, &hh, 2);
    return u;
}

static float f16_widen_compiler(uint16_t u)
{
    _Float16 h;
    memcpy(&h, &u, 2);
    volatile float f = (float)h;
    return f;
}
#endif

static void test_f16_compiler(test_rng *r, int n)
{
#if defined(__FLT16_MAX__)
    for (uint32_t h = 0; h < 65536; h++) {
        float mine = w4a8moe_f16_to_f32((uint16_t)h), cc = f16_widen_compiler((uint16_t)h);
        if (isnan(cc)) {
            CHECK_QUIET(isnan(mine), "f16_to_f32(0x%04x) must be NaN", h);
            continue;
        }
        CHECK_QUIET(bits_of(mine) == bits_of(cc), "f16_to_f32(0x%04x) = %a, compiler %a", h,
                    (double)mine, (double)cc);
        CHECK_QUIET(w4a8moe_f32_to_f16(mine) == h, "f16 round trip of 0x%04x", h);
    }
    for (int i = 0; i < n; i++) {
        float x;
        switch (i % 3) {
        case 0: x = random_bits_float(r); break;
        case 1: x = random_float_in_exp(r, -27, 17); break;
        default: { /* midpoints of f16 neighbours and one ulp either side */
            uint16_t h = (uint16_t)(test_rng_next(r) % 0x7c00);
            double mid = ((double)w4a8moe_f16_to_f32(h) +
                          (h == 0x7bff ? 65536.0 : (double)w4a8moe_f16_to_f32((uint16_t)(h + 1)))) / 2;
            x = (float)mid;
            int side = (int)(test_rng_next(r) % 3) - 1;
            if (side) x = nextafterf(x, side * INFINITY);
        }
        }
        uint16_t got = w4a8moe_f32_to_f16(x), cc = f16_compiler(x);
        if (isnan(x))
            CHECK_QUIET((got & 0x7c00) == 0x7c00 && (got & 0x3ff), "f16(NaN 0x%08x) = 0x%04x",
                        bits_of(x), got);
        else
            CHECK_QUIET(got == cc, "f16(%a = 0x%08x) = 0x%04x, compiler says 0x%04x", (double)x,
                        bits_of(x), got, cc);
    }
#else
    (void)r;
    (void)n;
    printf("note: this compiler has no _Float16; f16 checked by hand-made cases only\n");
#endif
}

/* ---- int4 ------------------------------------------------------------------------------- */

static void test_int4(test_rng *r)
{
    int32_t row[2] = {0x76543210, (int32_t)0xfedcba98u};
    for (int i = 0; i < 8; i++) {
        CHECK(w4a8moe_int4_get(row, i) == i - 8, "word 0x76543210 element %d = %d, expected %d", i,
              w4a8moe_int4_get(row, i), i - 8);
        CHECK(w4a8moe_int4_get(row, 8 + i) == i, "word 0xfedcba98 element %d = %d, expected %d", i,
              w4a8moe_int4_get(row, 8 + i), i);
    }
    int32_t zero[1] = {0};
    w4a8moe_int4_set(zero, 0, 0);
    CHECK((uint32_t)zero[0] == 0x8u, "q = 0 is stored as nibble 8, word 0x%08x", (uint32_t)zero[0]);
    w4a8moe_int4_set(zero, 7, -8);
    w4a8moe_int4_set(zero, 6, 7);
    CHECK((uint32_t)zero[0] == 0x0f000008u, "word after sets = 0x%08x, expected 0x0f000008",
          (uint32_t)zero[0]);
    /* every value at every position, over random surroundings that must stay untouched */
    for (int pos = 0; pos < 16; pos++) {
        for (int q = -8; q <= 7; q++) {
            int32_t w[3];
            for (int i = 0; i < 3; i++) w[i] = (int32_t)(uint32_t)test_rng_next(r);
            int32_t before[3];
            memcpy(before, w, sizeof w);
            w4a8moe_int4_set(w, pos, q);
            int ok = w4a8moe_int4_get(w, pos) == q;
            int64_t word = pos / 8;
            uint32_t mask = 0xfu << (4 * (pos % 8));
            ok &= (((uint32_t)w[word] ^ (uint32_t)before[word]) & ~mask) == 0;
            ok &= (((uint32_t)w[word] & mask) >> (4 * (pos % 8))) == (uint32_t)(q + 8);
            for (int i = 0; i < 3; i++)
                if (i != word) ok &= w[i] == before[i];
            CHECK(ok, "int4 set/get of %d at position %d", q, pos);
        }
    }
}

/* ---- activation scale -------------------------------------------------------------------- */

static void test_act_scale(test_rng *r)
{
    CHECK(w4a8moe_act_scale(0.0f) == W4A8MOE_MIN_SCALE, "amax 0 → the minimum scale");
    CHECK(W4A8MOE_MIN_SCALE == 1.0f / 229376.0f, "minimum scale is 1/(448*512)");
    CHECK(w4a8moe_act_scale(1e-30f) == W4A8MOE_MIN_SCALE, "tiny amax → the minimum scale");
    CHECK(w4a8moe_act_scale(1.0f / 512) == W4A8MOE_MIN_SCALE, "amax 1/512 → exactly the minimum");
    CHECK(w4a8moe_act_scale(1.0f / 256) == 2 * W4A8MOE_MIN_SCALE, "amax 1/256 → twice the minimum");
    CHECK(w4a8moe_act_scale(448.0f) == 1.0f, "amax 448 → scale 1");
    CHECK(w4a8moe_act_scale(896.0f) == 2.0f, "amax 896 → scale 2");
    CHECK(isnan(w4a8moe_act_scale(NAN)), "NaN amax → NaN scale");
    CHECK(isnan(w4a8moe_act_scale(INFINITY)), "inf amax → NaN scale");
    float big = w4a8moe_act_scale(FLT_MAX);
    CHECK(isfinite(big) && big == FLT_MAX / 448.0f, "FLT_MAX amax → finite scale, got %a", (double)big);
    for (int i = 0; i < 20000; i++) {
        float amax = fabsf(random_float_in_exp(r, -12, 20));
        float s = w4a8moe_act_scale(amax);
        float want = amax / 448.0f;
        if (want < W4A8MOE_MIN_SCALE) want = W4A8MOE_MIN_SCALE;
        CHECK_QUIET(s == want, "act_scale(%a) = %a, expected %a", (double)amax, (double)s, (double)want);
        /* the token's largest element lands on ±448 (the scale is chosen so) */
        if (amax / 448.0f >= W4A8MOE_MIN_SCALE)
            CHECK_QUIET(w4a8moe_f32_to_e4m3(amax / s) == 0x7e, "amax %a / its scale must give 0x7e",
                        (double)amax);
    }
}

int main(void)
{
    test_rng r = {test_seed()};
    int n = test_quick() ? 200000 : 2000000;
    test_e4m3_pytorch_vectors();
    test_e4m3_all_codes();
    test_e4m3_cases();
    test_e4m3_random(&r, n / 10); /* the table search costs ~126 steps per value */
    test_bf16(&r, n);
    test_f16_cases();
    test_f16_compiler(&r, n);
    test_int4(&r);
    test_act_scale(&r);
    TEST_MAIN_END();
}
