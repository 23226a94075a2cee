/*
 * quant.h — the quantisation layout and number conversions: one source of truth, included by
 * C and CUDA code alike (every function is W4A8MOE_HD: host and device).
 *
 * int4 packing (the checkpoint's "pack-quantized" form, our logical form too):
 *   8 elements per 32-bit word, element i of a row at bits 4*(i%8) of word i/8, stored as q + 8
 *   (an unsigned nibble 0..15 meaning q = nibble - 8 in [-8, 7]).
 * e4m3 (the "fn" variant: no infinities): sign, 4 exponent bits (bias 7), 3 mantissa bits;
 *   largest finite 448 (0x7e), NaN 0x7f/0xff, smallest subnormal 2^-9. Our conversion rounds to
 *   nearest even and saturates to ±448 (also for ±inf); NaN stays NaN.
 * bf16 / f16: IEEE round to nearest even, NaN kept quiet.
 * Every conversion is integer bit arithmetic, so the host and the GPU give the same bits.
 */
#ifndef W4A8MOE_QUANT_H
#define W4A8MOE_QUANT_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define W4A8MOE_HD __host__ __device__ __forceinline__
#else
#define W4A8MOE_HD static inline
#endif

#define W4A8MOE_E4M3_MAX 448.0f
/* Smallest per-token scale: keeps an all-zero row from dividing by zero (contract step 2). */
#define W4A8MOE_MIN_SCALE (1.0f / (448.0f * 512.0f))
#define W4A8MOE_INT4_PER_WORD 8

#ifdef __cplusplus
static_assert(sizeof(float) == 4, "float must be IEEE binary32"); /* CUDA sources are C++ */
#else
_Static_assert(sizeof(float) == 4, "float must be IEEE binary32");
#endif

W4A8MOE_HD uint32_t w4a8moe_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

W4A8MOE_HD float w4a8moe_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Rounds the integer `v >> shift` to nearest even using the bits shifted out. shift in 1..31. */
W4A8MOE_HD uint32_t w4a8moe_shift_rne(uint32_t v, uint32_t shift)
{
    uint32_t q = v >> shift;
    uint32_t rem = v & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    return q + (rem > half || (rem == half && (q & 1u)));
}

W4A8MOE_HD uint8_t w4a8moe_f32_to_e4m3(float x)
{
    uint32_t u = w4a8moe_f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint8_t)(sign | 0x7fu); /* NaN */
    if (a >= 0x43e00000u) return (uint8_t)(sign | 0x7eu); /* |x| >= 448 (and inf): saturate */
    if (a >= 0x3c800000u) {
        /* normal in e4m3 (|x| >= 2^-6): rebias the exponent (127 → 7), keep 3 mantissa bits */
        uint32_t code = w4a8moe_shift_rne(a - (120u << 23), 20);
        return (uint8_t)(sign | (code > 0x7eu ? 0x7eu : code));
    }
    /* subnormal in e4m3: count units of 2^-9; f32 subnormals and tiny normals round to 0 */
    uint32_t e = a >> 23;
    if (e < 110u) return sign; /* |x| < 2^-17: far below half the smallest subnormal */
    uint32_t full = (a & 0x7fffffu) | 0x800000u;
    return (uint8_t)(sign | w4a8moe_shift_rne(full, 141u - e)); /* may round up to 0x08 */
}

W4A8MOE_HD float w4a8moe_e4m3_to_f32(uint8_t c)
{
    uint32_t sign = (uint32_t)(c & 0x80u) << 24;
    uint32_t exp = (c >> 3) & 0xfu, man = c & 7u;
    if ((c & 0x7fu) == 0x7fu) return w4a8moe_bits_f32(sign | 0x7fc00000u);
    if (exp == 0) {
        float v = (float)man * (1.0f / 512.0f); /* exact: man * 2^-9 */
        return sign ? -v : v;
    }
    return w4a8moe_bits_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

W4A8MOE_HD uint16_t w4a8moe_f32_to_bf16(float x)
{
    uint32_t u = w4a8moe_f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

W4A8MOE_HD float w4a8moe_bf16_to_f32(uint16_t h) { return w4a8moe_bits_f32((uint32_t)h << 16); }

W4A8MOE_HD float w4a8moe_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return w4a8moe_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        float v = (float)man * (1.0f / 16777216.0f); /* exact: man * 2^-24 */
        return sign ? -v : v;
    }
    return w4a8moe_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

W4A8MOE_HD uint16_t w4a8moe_f32_to_f16(float x)
{
    uint32_t u = w4a8moe_f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65536: inf */
    if (a >= 0x38800000u) /* normal in f16 (|x| >= 2^-14) */
        return (uint16_t)(sign | w4a8moe_shift_rne(a - (112u << 23), 13));
    uint32_t e = a >> 23;
    if (e < 101u) return sign; /* |x| < 2^-26: rounds to zero */
    uint32_t full = (a & 0x7fffffu) | 0x800000u;
    return (uint16_t)(sign | w4a8moe_shift_rne(full, 126u - e)); /* units of 2^-24 */
}

/* Element i of a packed int4 row: q in [-8, 7]. */
W4A8MOE_HD int w4a8moe_int4_get(const int32_t *row, int64_t i)
{
    return (int)(((uint32_t)row[i >> 3] >> (4 * (i & 7))) & 0xfu) - 8;
}

/* Sets element i of a packed int4 row to q in [-8, 7]. */
W4A8MOE_HD void w4a8moe_int4_set(int32_t *row, int64_t i, int q)
{
    uint32_t w = (uint32_t)row[i >> 3];
    uint32_t shift = 4u * (uint32_t)(i & 7);
    w = (w & ~(0xfu << shift)) | ((uint32_t)(q + 8) & 0xfu) << shift;
    row[i >> 3] = (int32_t)w;
}

/* Per-token (or per-row) activation scale of the contract: max(amax / 448, 1/(448*512)).
 * A NaN or infinite amax gives a NaN scale, so the whole token's output is NaN (documented). */
W4A8MOE_HD float w4a8moe_act_scale(float amax)
{
    if (!(amax <= 3.4028234663852886e38f)) return amax - amax; /* NaN for NaN and inf */
    float s = amax / W4A8MOE_E4M3_MAX;
    return s > W4A8MOE_MIN_SCALE ? s : W4A8MOE_MIN_SCALE;
}

#endif /* W4A8MOE_QUANT_H */
