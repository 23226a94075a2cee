/*
 * test_sm90_layout.cu — the cuda_sm90 weight layout, checked on the host (no GPU needed; built
 * by nvcc wherever the CUDA backends are, so CI runs it).
 *
 * The packing functions of src/cuda/kernels/sm90_grouped_gemm.cuh and sm90_scaled_gemm.cuh are
 * host-callable; this test runs them over every element, then reads the result the way the
 * kernels do (the producer's block offset, a consumer thread's word and scale indices, the
 * int4 → f16 arithmetic) and checks that each value lands where wgmma's A fragment expects it
 * (PTX ISA, "Register fragments" of wgmma .f16 with A in registers: thread (warp w, gid, tig)
 * holds rows 16w + gid (+8) at k = 2tig, 2tig+1 (+8) of each k16 half), equal to
 * q·S·2^k exactly (scaled layout) or q with the f32 scales beside it (promoting layout).
 * Shapes: plain and gated (gate/up interleaved), K with a half stage at the end, g = 32/64/128,
 * two experts, bf16 scales (exact: the scaled kernel) and f16 / f32 ones (refused by the
 * exactness check: the promoting kernel). Also the small-batch kernel's input "fragment order"
 * (kernels/frag_order.cuh) against the mma m16n8k16 B fragment.
 */
#include "../src/common/quant.h"
#include "../src/cuda/kernels/frag_order.cuh"
#include "../src/cuda/kernels/sm90_scaled_gemm.cuh"
#include "test_util.h"

#include <math.h>
#include <string.h>
#include <vector>

struct shape {
    int64_t n_out, K;
    int gated, g, dt; /* dt: 0 bf16, 1 f16, 2 f32 scales */
};

/* One matrix (E experts): logical int4 words, scales in dt, channel scales. */
struct matrix {
    int64_t rows, groups;
    std::vector<int32_t> packed;  /* [E, rows, K/8] */
    std::vector<uint16_t> s16;    /* [E, rows, groups] (dt 0, 1) */
    std::vector<float> s32, chan; /* [E, rows, groups] (dt 2), [E, rows] */
};

static float scale_value(const shape &sh, const matrix &m, int64_t e, int64_t row, int64_t b)
{
    int64_t i = (e * m.rows + row) * m.groups + b;
    if (sh.dt == 0) return w4a8moe_bf16_to_f32(m.s16[i]);
    if (sh.dt == 1) return w4a8moe_f16_to_f32(m.s16[i]);
    return m.s32[i];
}

static int q_at(const matrix &m, const shape &sh, int64_t e, int64_t row, int64_t k)
{
    uint32_t w = (uint32_t)m.packed[(e * m.rows + row) * (sh.K / 8) + k / 8];
    return (int)((w >> (4 * (k % 8))) & 15u) - 8;
}

static void make(const shape &sh, int64_t E, test_rng *r, matrix *m)
{
    m->rows = sh.gated ? 2 * sh.n_out : sh.n_out;
    m->groups = sh.K / sh.g;
    m->packed.resize((size_t)(E * m->rows * (sh.K / 8)));
    for (auto &w : m->packed) w = (int32_t)test_rng_next(r);
    size_t ns = (size_t)(E * m->rows * m->groups);
    m->s16.resize(ns);
    m->s32.resize(ns);
    for (size_t i = 0; i < ns; i++) {
        /* scales spanning 2^-12 .. 2^-4 so the per-row shifts differ */
        float v = ldexpf(test_rng_uniform(r, 1.0f, 2.0f), -4 - (int)(test_rng_next(r) % 9));
        m->s16[i] = sh.dt == 0 ? w4a8moe_f32_to_bf16(v) : w4a8moe_f32_to_f16(v);
        m->s32[i] = v;
    }
    m->chan.resize((size_t)(E * m->rows));
    for (auto &c : m->chan) c = test_rng_uniform(r, 0.5f, 1.5f);
}

/* f16 of x, as the kernel's mul.rn.f16x2 makes it from exact operands. */
static float f16_round(float x) { return w4a8moe_f16_to_f32(w4a8moe_f32_to_f16(x)); }

static void check_shape(const shape &sh, test_rng *rng)
{
    const int64_t E = 2, K = sh.K, nks = K / 32, KB = (K + 63) / 64;
    const int g = sh.g, blk = sm90s_block_bytes(g);
    int64_t nrb = sh.gated ? (sh.n_out + 31) / 32 : (sh.n_out + 63) / 64;
    nrb = (nrb + 1) & ~(int64_t)1;
    const int64_t rows_pad = nrb * 64;
    matrix m;
    make(sh, E, rng, &m);
    const void *scales = sh.dt == 2 ? (const void *)m.s32.data() : (const void *)m.s16.data();
    char what[160];
    snprintf(what, sizeof what, "n_out %lld K %lld %s g %d %s scales", (long long)sh.n_out, (long long)K,
             sh.gated ? "gated" : "plain", g, sh.dt == 0 ? "bf16" : sh.dt == 1 ? "f16" : "f32");

    std::vector<char> wq((size_t)(E * nrb * KB * blk), 0);
    std::vector<int32_t> shift((size_t)(E * rows_pad));
    std::vector<float> wc((size_t)(E * rows_pad)), ws((size_t)(E * rows_pad * m.groups)), wc_plain(wc.size());
    int inexact = 0;
    for (int64_t e = 0; e < E; e++) {
        const int32_t *qe = m.packed.data() + e * m.rows * (K / 8);
        const char *se = (const char *)scales + e * m.rows * m.groups * (sh.dt == 2 ? 4 : 2);
        const float *ce = m.chan.data() + e * m.rows;
        char *we = wq.data() + sm90s_block_offset(e, nrb, 0, KB, 0, g);
        for (int64_t i = 0; i < nrb * KB * 256; i++)
            sm90_pack_one(i, qe, sh.n_out, sh.gated, K, rows_pad, 1, blk / 8, (uint2 *)we);
        for (int64_t p = 0; p < rows_pad; p++)
            inexact |= sm90s_row_shift_one(p, se, sh.dt, sh.n_out, sh.gated, m.groups, ce,
                                           shift.data() + e * rows_pad, wc.data() + e * rows_pad);
        for (int64_t i = 0; i < nrb * KB * (g == 32 ? 128 : 64); i++)
            sm90s_pack_scales_one(i, se, sh.dt, sh.n_out, sh.gated, K, g, rows_pad, shift.data() + e * rows_pad, we);
        for (int64_t i = 0; i < rows_pad * (m.groups > 1 ? m.groups : 1); i++)
            sm90_pack_scales_one(i, se, sh.dt, sh.n_out, sh.gated, m.groups, rows_pad, ce,
                                 ws.data() + e * rows_pad * m.groups, wc_plain.data() + e * rows_pad);
    }
    const int scaled = !inexact;
    CHECK(scaled == (sh.dt == 0), "%s: exactness check says %s", what, scaled ? "scaled" : "promoting");

    /* every element of every block, read as a consumer thread does */
    int64_t bad_pos = 0, bad_scaled = 0, bad_promote = 0, seen = 0;
    for (int64_t e = 0; e < E; e++)
        for (int64_t rb = 0; rb < nrb; rb++)
            for (int64_t kb = 0; kb < KB; kb++) {
                const char *slot = wq.data() + sm90s_block_offset(e, nrb, rb, KB, kb, g);
                for (int t = 0; t < 128; t++)
                    for (int j = 0; j < 2; j++) {
                        const int64_t ks = kb * 2 + j;
                        if (ks >= nks) continue;
                        const int warp = t >> 5, gid = (t & 31) >> 2, tig = t & 3;
                        const uint2 v = ((const uint2 *)slot)[sm90s_word_index(t, j)];
                        for (int half = 0; half < 2; half++) { /* .x: row gid, .y: row gid + 8 */
                            const int r = warp * 16 + gid + 8 * half;
                            const int64_t p = rb * 64 + r, row = sm90_logical_row(p, sh.n_out, sh.gated);
                            const uint16_t s16 = ((const uint16_t *)(slot + SM90S_INT4_BYTES))[sm90s_scale_index(g, j, r)];
                            const uint32_t w = half ? v.y : v.x;
                            for (int nib = 0; nib < 8; nib++) {
                                /* register i = nib % 4 of the pair (nib, nib + 4): k16 half h = i / 2,
                                 * a0/a1 (i even) at 2tig, a2/a3 (i odd) at 8 + 2tig; nib >= 4: + 1 */
                                const int i = nib % 4, h = i / 2;
                                const int64_t k = ks * 32 + 16 * h + (i & 1) * 8 + 2 * tig + (nib >= 4);
                                const int n = (int)((w >> (4 * nib)) & 15u);
                                const int want_q = row < 0 ? 0 : q_at(m, sh, e, row, k);
                                seen++;
                                if (n - 8 != want_q) { bad_pos++; continue; }
                                const int64_t b = k / g;
                                const float S = row < 0 ? 0.0f : scale_value(sh, m, e, row, b);
                                if (scaled) {
                                    const float s = w4a8moe_f16_to_f32(s16);
                                    const float got = f16_round((float)(n - 8) * s);
                                    const float want = ldexpf((float)want_q * S, shift[e * rows_pad + p]);
                                    bad_scaled += got != want;
                                }
                                const float wsv = ws[(size_t)(((e * nrb + rb) * m.groups + b) * 64 + r)];
                                bad_promote += wsv != S;
                            }
                        }
                    }
            }
    CHECK(bad_pos == 0, "%s: %lld of %lld int4 values not where the wgmma fragment expects them", what,
          (long long)bad_pos, (long long)seen);
    CHECK(bad_scaled == 0, "%s: %lld f16 weights differ from q*S*2^k", what, (long long)bad_scaled);
    CHECK(bad_promote == 0, "%s: %lld f32 group scales out of place", what, (long long)bad_promote);
    /* channel scales: C·2^-k (scaled) and C (promoting), 0 on padding rows */
    int64_t bad_c = 0;
    for (int64_t e = 0; e < E; e++)
        for (int64_t p = 0; p < rows_pad; p++) {
            const int64_t row = sm90_logical_row(p, sh.n_out, sh.gated);
            const float C = row < 0 ? 0.0f : m.chan[e * m.rows + row];
            bad_c += wc_plain[e * rows_pad + p] != C;
            if (scaled) bad_c += ldexpf(wc[e * rows_pad + p], shift[e * rows_pad + p]) != C;
        }
    CHECK(bad_c == 0, "%s: %lld channel scales wrong", what, (long long)bad_c);
    printf("ok %-48s %lld values\n", what, (long long)seen);
}

int main(void)
{
    test_rng rng = {test_seed()};
    static const shape shapes[] = {
        {96, 128, 0, 32, 0},   {200, 1056, 0, 32, 0}, {72, 320, 1, 64, 0},  {40, 1024, 1, 128, 0},
        {130, 384, 0, 128, 0}, {64, 352, 1, 32, 1},   {96, 256, 0, 64, 2},  {48, 640, 1, 128, 1},
    };
    for (const shape &s : shapes) check_shape(s, &rng);

    /* the exactness check at its edges: a bf16 scale 2^26 times smaller than its row's largest
     * leaves f16's normal range (promoting); 2^25 stays in it (scaled) */
    for (int span = 25; span <= 26; span++) {
        uint16_t sc[4] = {w4a8moe_f32_to_bf16(1.0f), w4a8moe_f32_to_bf16(ldexpf(1.0f, -span)),
                          w4a8moe_f32_to_bf16(0.0f), w4a8moe_f32_to_bf16(-0.75f)};
        int32_t sh = 0;
        float wcv = 0;
        int bad = sm90s_row_shift_one(0, sc, 0, 1, 0, 4, NULL, &sh, &wcv);
        CHECK(bad == (span == 26), "scales 2^-%d apart in a row: %s", span, bad ? "promoting" : "scaled");
        CHECK(sh == 11 && wcv == ldexpf(1.0f, -11), "row shift %d, channel %g", sh, wcv);
    }

    /* fragment order: a permutation of each chunk of 32 values, putting at 16-byte slot tig of
     * a chunk what sm90m_b_frags hands the mma as (b0, b1) of half 0 then half 1 — per the PTX
     * ISA's m16n8k16 .f16 B fragment, b0 = k 2tig, 2tig + 1 and b1 = k 2tig + 8, 2tig + 9 of
     * each k16 half */
    int seen[96] = {0}, bad_perm = 0, bad_slot = 0;
    for (int64_t k = 0; k < 96; k++) {
        const int64_t p = frag_order_pos(k);
        if (p < 0 || p >= 96 || p / 32 != k / 32) bad_perm++;
        else seen[p]++;
    }
    for (int i = 0; i < 96; i++) bad_perm += seen[i] != 1;
    CHECK(bad_perm == 0, "fragment order is not a permutation within each chunk of 32");
    for (int tig = 0; tig < 4; tig++)
        for (int h = 0; h < 2; h++)
            for (int reg = 0; reg < 2; reg++)
                for (int half = 0; half < 2; half++) { /* f16 half of the register */
                    const int64_t k = 64 + h * 16 + 2 * tig + reg * 8 + half;
                    const int64_t slot = 64 + tig * 8 + (h * 2 + reg) * 2 + half; /* uint4 word h*2+reg */
                    bad_slot += frag_order_pos(k) != slot;
                }
    CHECK(bad_slot == 0, "%d values of a thread's B fragments not in its 16-byte slot", bad_slot);
    /* pairs stay pairs: the staged row (SM90M_STAGE, kernels/sm90_mma_decode.cuh) stores the
     * f16x2 of elements (k, k + 1), k even, as one 32-bit word at frag_order_pos(k) / 2 */
    int bad_pair = 0;
    for (int64_t k = 0; k < 96; k += 2)
        bad_pair += frag_order_pos(k) % 2 != 0 || frag_order_pos(k + 1) != frag_order_pos(k) + 1;
    CHECK(bad_pair == 0, "%d element pairs split by the fragment order", bad_pair);
    TEST_MAIN_END();
}
