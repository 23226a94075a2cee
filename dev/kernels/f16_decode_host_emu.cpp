/*
 * f16_decode_host_emu.cpp — host check of the fragment bookkeeping in f16_decode_gemm.cuh (run
 * here, no GPU): for one 16-row tile and one k32 step of the sm89 packed layout, it rebuilds
 * each lane's registers as the kernel does (the magic-number int4 → f16 pairs, the byte pairing
 * and widening of the e4m3 activations) and multiplies them with m16n8k16's documented fragment
 * layout (PTX ISA, "Matrix fragments for mma.m16n8k16" with .f16), then compares every C element
 * with the direct sum over the 32 physical columns. A wrong pairing of nibbles and activation
 * bytes, or a wrong magic constant, makes it fail.
 * Build and run: g++ -O1 -std=c++17 -Iinclude dev/kernels/f16_decode_host_emu.cpp -o /tmp/emu && /tmp/emu
 */
#include "../../src/common/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t next32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* IEEE binary16 → float (the values here are normal or zero). */
static float f16_to_f32(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf(1.0f + m / 1024.0f, e - 15);
    return s ? -v : v;
}
static uint16_t lo16(uint32_t x) { return (uint16_t)(x & 0xffffu); }
static uint16_t hi16(uint32_t x) { return (uint16_t)(x >> 16); }

/* sm89_int4x8_to_f16, on the host: lop3 0xea is (a & b) | c; the f16 arithmetic is exact here. */
static void int4x8_to_f16(uint32_t w, float (&h)[4][2])
{
    uint32_t w8 = w >> 8;
    uint32_t t[4] = {(w & 0x000f000fu) | 0x64006400u, (w & 0x00f000f0u) | 0x64006400u,
                     (w8 & 0x000f000fu) | 0x64006400u, (w8 & 0x00f000f0u) | 0x64006400u};
    for (int i = 0; i < 4; i++)
        for (int half = 0; half < 2; half++) {
            float v = f16_to_f32(half ? hi16(t[i]) : lo16(t[i]));
            h[i][half] = (i % 2 == 0) ? v - 1032.0f : v * (1.0f / 16.0f) - 72.0f;
        }
}

/* sm89_e4m3x8_to_f16: prmt 0x5140 / 0x7362, then each 16-bit half widened (low byte → low half). */
static void e4m3x8_to_f16(uint32_t x, uint32_t y, float (&h)[4][2])
{
    uint8_t b[8];
    for (int i = 0; i < 4; i++) { b[i] = (uint8_t)(x >> (8 * i)); b[4 + i] = (uint8_t)(y >> (8 * i)); }
    const int pair[4][2] = {{0, 4}, {1, 5}, {2, 6}, {3, 7}};
    for (int i = 0; i < 4; i++)
        for (int half = 0; half < 2; half++) h[i][half] = w4a8moe_e4m3_to_f32(b[pair[i][half]]);
}

int main(void)
{
    int bad = 0;
    for (int trial = 0; trial < 200; trial++) {
        /* one k32 step of a 16-row tile: logical words [16 rows] of 8 nibbles (q + 8) per tig */
        uint32_t word[16][4]; /* [row][tig]: physical columns 8*tig .. 8*tig + 7 */
        uint8_t act[8][32];   /* [token n][column] e4m3 */
        for (int r = 0; r < 16; r++)
            for (int t = 0; t < 4; t++) word[r][t] = next32() ^ (next32() << 16);
        for (int n = 0; n < 8; n++)
            for (int c = 0; c < 32; c++) { uint8_t v = (uint8_t)next32(); act[n][c] = (v & 0x7f) == 0x7f ? 0x38 : v; }
        /* the kernel: lane (gid, tig) holds uint2 {word[gid][tig], word[gid + 8][tig]} and the
         * activation bytes of token gid at columns 8*tig .. 8*tig + 7 */
        float A[32][2][4][2], B[32][4][2]; /* [lane][row half][pair][half], [lane][pair][half] */
        for (int lane = 0; lane < 32; lane++) {
            int gid = lane >> 2, tig = lane & 3;
            int4x8_to_f16(word[gid][tig], A[lane][0]);
            int4x8_to_f16(word[gid + 8][tig], A[lane][1]);
            uint32_t x = 0, y = 0;
            for (int i = 0; i < 4; i++) { x |= (uint32_t)act[gid][8 * tig + i] << (8 * i); y |= (uint32_t)act[gid][8 * tig + 4 + i] << (8 * i); }
            e4m3x8_to_f16(x, y, B[lane]);
        }
        /* two m16n8k16 mmas: first (a0 = r0[0], a1 = r8[0], a2 = r0[1], a3 = r8[1]; b0 = bf[0],
         * b1 = bf[1]), second with pairs 2 and 3. Fragment layout (PTX ISA): A element (row, k):
         * lane = 4*(row % 8) + (k % 8) / 2, register a0 (row < 8, k < 8), a1 (row >= 8, k < 8),
         * a2 (row < 8, k >= 8), a3 (row >= 8, k >= 8), half = k % 2; B element (k, n): lane =
         * 4*n + (k % 8) / 2, b0 (k < 8) / b1 (k >= 8), half = k % 2. */
        double C[16][8] = {{0}};
        for (int mma = 0; mma < 2; mma++)
            for (int row = 0; row < 16; row++)
                for (int n = 0; n < 8; n++)
                    for (int k = 0; k < 16; k++) {
                        int la = 4 * (row % 8) + (k % 8) / 2, lb = 4 * n + (k % 8) / 2, half = k % 2;
                        int pa = 2 * mma + (k >= 8 ? 1 : 0); /* a0/a1 → pair 2*mma, a2/a3 → +1 */
                        double a = A[la][row >= 8][pa][half], b = B[lb][pa][half];
                        C[row][n] += a * b;
                    }
        /* direct: sum over the 32 physical columns of q * a */
        for (int row = 0; row < 16; row++)
            for (int n = 0; n < 8; n++) {
                double ref = 0;
                for (int c = 0; c < 32; c++) {
                    int q = (int)((word[row][c / 8] >> (4 * (c % 8))) & 15u) - 8;
                    ref += q * (double)w4a8moe_e4m3_to_f32(act[n][c]);
                }
                if (!(C[row][n] == ref)) {
                    if (bad++ < 5) printf("trial %d row %d n %d: fragments %.6g, direct %.6g\n", trial, row, n, C[row][n], ref);
                }
            }
    }
    printf("%s: %d mismatches in 200 random k32 steps (16 x 8 outputs each)\n", bad ? "FAIL" : "ok", bad);
    return bad != 0;
}
