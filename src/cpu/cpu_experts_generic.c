/*
 * cpu_experts_generic.c — the `cpu` backend's portable tile kernel: plain C on the packed
 * layout and prepared rows of cpu_experts_impl.h, used where AVX2 + FMA are missing or
 * W4A8MOE_CPU_GENERIC=1.
 *
 * Per group, 512 P_b = (sum q * A') << t in int32 (A' = d0 + 256 d1 + 65536 d2 from the
 * prepared digits, t from the group's word; exact: |.| < 2^28), then acc += S * 512 P_b in f64
 * (exact product, one rounding), so
 * the results are bit-identical to the AVX2 kernel's. The 16 channels of a panel sit in the innermost loop so a compiler can
 * vectorise it with whatever the baseline ISA offers.
 */
#include "cpu_experts_impl.h"

#include "../common/quant.h"

#include <string.h>

static double group_scale(const uint8_t *sp, int bf16, int ch)
{
    if (bf16) {
        uint16_t u;
        memcpy(&u, sp + 2 * ch, 2);
        return (double)w4a8moe_bf16_to_f32(u);
    }
    float s;
    memcpy(&s, sp + 4 * ch, 4);
    return (double)s;
}

static void panel_row(const cpu_gemm_args *ga, const int8_t *a, const uint8_t *panel, double *out)
{
    int64_t ngroups = ga->K / ga->g;
    int nchunk = ga->g / 8;
    double acc[CPU_PANEL] = {0};
    for (int64_t b = 0; b < ngroups; b++) {
        const uint8_t *gp = panel + (size_t)b * ga->group_bytes;
        int32_t P[CPU_PANEL] = {0}, word;
        memcpy(&word, a + b * nchunk * 32 + CPU_GROUP_WORD, 4);
        for (int c = 0; c < nchunk; c++) {
            uint32_t w[CPU_PANEL];
            const int8_t *ac = a + (b * nchunk + c) * 32;
            memcpy(w, gp + (size_t)c * CPU_CHUNK, sizeof w);
            for (int i = 0; i < 8; i++) {
                int at = 4 * (i & 1) + (i >> 1); /* input k0 + i: even inputs, then odd */
                int32_t A = ac[at] + 256 * ac[8 + at] + 65536 * ac[16 + at];
                for (int ch = 0; ch < CPU_PANEL; ch++)
                    P[ch] += ((int32_t)((w[ch] >> (4 * i)) & 0xFu) - 8) * A;
            }
        }
        const uint8_t *sp = gp + (size_t)nchunk * CPU_CHUNK;
        for (int ch = 0; ch < CPU_PANEL; ch++)
            acc[ch] += group_scale(sp, ga->scale_bf16, ch) * (double)(P[ch] * (1 << (word & 0xff)));
    }
    memcpy(out, acc, sizeof acc);
}

void w4a8moe_cpu_tile_generic(const cpu_gemm_args *ga)
{
    int ldo = ga->np * CPU_PANEL;
    for (int p = 0; p < ga->np; p++)
        for (int r = 0; r < ga->nr; r++)
            panel_row(ga, ga->a[r], ga->w + (size_t)p * ga->panel_bytes,
                      ga->out + (size_t)r * ldo + (size_t)p * CPU_PANEL);
}
