/*
 * fused_bulk_decode.cuh — version 2 of dev/kernels/fused_decode_lab.cu's one-launch T = 1 layer,
 * included by it after fd_args and fd_e4m3x2_f16x2: every weight byte of a block's items in
 * flight at once.
 *
 * Round 13's kernel (version 1, in the lab) waits on memory item by item (a warp's groups, then its reduction and
 * epilogue, then the next item's loads): latency-bound at DRAM 8.5 % of peak. Here each block is
 * one an SM (512 threads) and, first thing, asks the copy engine for all of its items' weights
 * and scales — GEMM1's and GEMM2's, the k experts' ~21 MB at qwen3-30b-a3b spread over the
 * SMs' shared memory (≤ ~180 KB each: the lab's host places the items, bytes balanced) — in chunks of
 * FB_CHUNK K blocks, each completing on its own mbarrier, so the DRAM streams the whole layer
 * from the first microsecond while the token is quantised and GEMM1 multiplies the chunks as
 * they land. Then one grid barrier (y and its row amax complete), GEMM2 on weights already in
 * shared memory with its pair's requantised codes made once an item into shared memory, a
 * second grid barrier, the combine.
 *
 * The sums are the library's small-batch kernel's (sm90_mma_decode.cuh) at KS = 4: 16 warps,
 * warp w on slice w % 4 and K quarter w / 4 (groups [q·G/4, (q+1)·G/4)), quarters added in order,
 * then sm90_epilogue_slice; GEMM2's codes as sm89_requant_kernel's. The grid must be resident at
 * once (one block an SM; the barriers spin): launched cooperatively where it can be.
 */
#ifndef W4A8MOE_FUSED_BULK_DECODE_CUH
#define W4A8MOE_FUSED_BULK_DECODE_CUH

#define FB_THREADS 512
#define FB_CHUNK 4   /* K blocks a copy (two groups at g = 128) */
#define FB_BARS 96   /* mbarriers a block */

struct fb_args {
    fd_args f;                  /* weights, token, ids, weights, y, rowmax, o, out (the lab's) */
    const int32_t *sched;       /* [grid + 1] offsets into items: block b's items, GEMM1's first */
    const int32_t *items;       /* (gemm << 24 | j << 16 | rb) */
    unsigned *bar_count, *bar_gen; /* the grid barrier (zero once) */
    int codes_at;               /* shared offset of the token's codes [H], then GEMM2's [I] */
    int data_at;                /* shared offset of the items' bytes (128-aligned) */
    int stages, stage_bytes;    /* version 3: its ring (bars at 0: full [stages], empty [stages]) */
};

/* The block's N threads (named barrier 1: all of version 2's, version 3's consumers) wait for
 * each other (fb_sync), or until every block of the grid has arrived, their writes before it
 * visible after it (fb_grid_barrier): the library's one-launch path's (sm90_fused_decode.cuh). */
template <int N>
__device__ __forceinline__ void fb_sync(void)
{
    sm90f_sync<N>();
}

template <int N>
__device__ __forceinline__ void fb_grid_barrier(unsigned *count, unsigned *gen)
{
    sm90f_grid_barrier<N>(count, gen);
}

/* An item's bytes in shared memory: KB blocks of blk, then G x 64 f32 scales. */
__host__ __device__ __forceinline__ int64_t fb_item_bytes(int64_t KB, int blk, int64_t G)
{
    return KB * blk + G * 64 * 4;
}

/* The shared memory a block's steps below use besides the items' bytes. */
struct fb_block {
    float red[3 * 4 * 32 * 4];                  /* K quarters 1-3's sums of each slice */
    float s_sa[FD_MAXK], s_r[FD_MAXK], s_w[FD_MAXK]; /* token scale, pair scales, pair weights */
    int32_t s_e[FD_MAXK];                       /* the pairs' experts */
    uint32_t s_max[32];                         /* a warp's amax */
};

/* The token's e4m3 codes into s_a [H], its scale, the pairs' experts and weights: the block's
 * first N threads (every block, as version 1). */
template <int N>
__device__ __forceinline__ void fb_token_codes(const fd_args &p, uint8_t *s_a, fb_block &sb)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (threadIdx.x < p.k) {
        sb.s_e[threadIdx.x] = p.ids[threadIdx.x];
        sb.s_w[threadIdx.x] = p.wts[threadIdx.x];
    }
    uint32_t m = 0;
    for (int64_t h = threadIdx.x; h < p.H; h += N) m = max(m, w4a8moe_f32_bits(fabsf(p.x[h])));
    for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) sb.s_max[warp] = m;
    fb_sync<N>();
    m = 0;
    for (int w = 0; w < N / 32; w++) m = max(m, sb.s_max[w]);
    const float s_t = w4a8moe_act_scale(w4a8moe_bits_f32(m));
    for (int64_t h = threadIdx.x; h < p.H; h += N) s_a[h] = w4a8moe_f32_to_e4m3(__fdiv_rn(p.x[h], s_t));
    if (threadIdx.x < p.k) sb.s_sa[threadIdx.x] = s_t;
    fb_sync<N>();
}

/* Pair j's requantised codes into s_b [I] (sm89_requant_kernel's) and its scale s_r[j], once
 * y and the row amax are complete (after the grid barrier; read through L2). */
template <int N>
__device__ __forceinline__ void fb_pair_codes(const fd_args &p, int j, uint8_t *s_b, fb_block &sb)
{
    if (threadIdx.x == 0) sb.s_r[j] = w4a8moe_act_scale(w4a8moe_bits_f32(__ldcg(&p.rowmax[j])));
    fb_sync<N>();
    const float rj = sb.s_r[j];
    for (int64_t i = threadIdx.x; i < p.I; i += N)
        s_b[i] = w4a8moe_f32_to_e4m3(__fdiv_rn(__ldcg(p.y + (int64_t)j * p.I + i), rj));
    fb_sync<N>();
}

/* Group b's products for the thread's slice (t = 32 slice + lane): w, the group's first K block
 * in the cuda_sm90 layout (blk bytes a block); codes, the row's e4m3 values from element 0. */
template <int GSTEPS>
__device__ __forceinline__ void fb_group(const char *w, int blk, const uint8_t *codes, int64_t b, int t, int tig,
                                         float (&tmp)[4])
{
#pragma unroll
    for (int s = 0; s < GSTEPS; s++) {
        const int64_t ks = b * GSTEPS + s;
        const uint2 v = *((const uint2 *)(w + (s >> 1) * blk) + sm90s_word_index(t, s & 1));
        uint32_t a[2][4];
        sm90m_weights<false>(v, 0u, a);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t kk = ks * 32 + h * 16 + 2 * tig;
            const uint32_t bl = fd_e4m3x2_f16x2(*(const uint16_t *)(codes + kk));
            const uint32_t bh = fd_e4m3x2_f16x2(*(const uint16_t *)(codes + kk + 8));
            sm90m_mma(tmp, a[h], bl, bh);
        }
    }
}

/* An item's end: the K quarters' sums added in order into quarter 0's (the library's KS = 4),
 * then its epilogue — GEMM1: y and the row amax; GEMM2: the pair's rows of o. */
template <int N>
__device__ __forceinline__ void fb_finish_item(const fd_args &p, int gemm, int j, int rb, int slice, int kq,
                                               int lane, float (&acc)[4], fb_block &sb)
{
    if (kq > 0)
#pragma unroll
        for (int i = 0; i < 4; i++) sb.red[(((kq - 1) * 4 + slice) * 32 + lane) * 4 + i] = acc[i];
    fb_sync<N>();
    if (kq == 0) {
#pragma unroll
        for (int q = 1; q < 4; q++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] += sb.red[(((q - 1) * 4 + slice) * 32 + lane) * 4 + i];
        const int64_t e = sb.s_e[j];
        sm90_gemm_args ea = {};
        ea.g = p.g;
        if (!gemm) {
            ea.nrb = p.nrb1, ea.act_scale = sb.s_sa, ea.wc = p.wc13, ea.n_out = p.I, ea.out = p.y;
            ea.rowmax = p.rowmax, ea.act_fn = 0;
            sm90_epilogue_slice<8, true>(ea, e, rb, slice, lane, j, j + 1, acc);
        } else {
            ea.nrb = p.nrb2, ea.act_scale = sb.s_r, ea.wc = p.wc2, ea.n_out = p.H, ea.out = p.o;
            sm90_epilogue_slice<8, false>(ea, e, rb, slice, lane, j, j + 1, acc);
        }
    }
    fb_sync<N>(); /* red reused */
}

/* The combine, j ascending, once every pair's o is written; block 0 then zeroes the row maxima
 * for the next launch (nothing reads them after the barrier before it). */
template <int N>
__device__ __forceinline__ void fb_combine(const fd_args &p, const fb_block &sb)
{
    for (int64_t ch = (int64_t)blockIdx.x * N + threadIdx.x; ch < p.H; ch += (int64_t)gridDim.x * N) {
        float v = 0.0f;
        for (int q = 0; q < p.k; q++) v = __fadd_rn(v, __fmul_rn(sb.s_w[q], __ldcg(&p.o[(int64_t)q * p.H + ch])));
        p.out[ch] = v;
    }
    if (blockIdx.x == 0 && threadIdx.x < p.k) p.rowmax[threadIdx.x] = 0u;
}

template <int GSTEPS>
static __global__ void __launch_bounds__(FB_THREADS, 1) fused_bulk_kernel(fb_args a)
{
#if SM90_ENABLED
    const fd_args &p = a.f;
    extern __shared__ __align__(128) char sm[];
    uint64_t *bars = (uint64_t *)sm;
    uint8_t *s_a = (uint8_t *)sm + a.codes_at, *s_b = s_a + p.H;
    __shared__ fb_block sb;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tig = lane & 3;
    const int slice = warp & 3, kq = warp >> 2, t = slice * 32 + lane, r = slice * 16 + (lane >> 2);
    const int i0 = a.sched[blockIdx.x], i1 = a.sched[blockIdx.x + 1];
    const int64_t KB1 = p.H / 64, KB2 = p.I / 64, G1 = p.H / p.g, G2 = p.I / p.g;
    constexpr int GK = GSTEPS / 2; /* K blocks a group (a chunk holds whole groups) */

    /* 1. warp 0 asks for every chunk of every item: lane c of round q takes chunk 32 q + c */
    if (warp == 0) {
        const int32_t id = lane < p.k ? __ldg(p.ids + lane) : 0; /* one round trip for all k */
        int nb = 0; /* chunks (and barriers) so far */
        int64_t at = a.data_at;
        for (int it = i0; it < i1; it++) {
            const int code = a.items[it], gemm = code >> 24, j = (code >> 16) & 255, rb = code & 0xffff;
            const int64_t e = __shfl_sync(0xffffffffu, id, j), KB = gemm ? KB2 : KB1, G = gemm ? G2 : G1;
            const int64_t nrb = gemm ? p.nrb2 : p.nrb1;
            const char *wsrc = (gemm ? p.w2 : p.w13) + (e * nrb + rb) * KB * p.blk;
            const float *ssrc = (gemm ? p.ws2 : p.ws13) + (e * nrb + rb) * G * 64;
            const int nch = (int)((KB + FB_CHUNK - 1) / FB_CHUNK) + 1; /* + the scales */
            for (int c = lane; c < nch; c += 32) {
                uint64_t *bar = bars + nb + c;
                sm90_bar_init(bar, 1);
                sm90_bar_init_fence();
                if (c + 1 < nch) {
                    const int64_t kb0 = (int64_t)c * FB_CHUNK, n = min((int64_t)FB_CHUNK, KB - kb0);
                    sm90_bar_expect_tx(bar, (uint32_t)(n * p.blk));
                    sm90_bulk_load(sm + at + kb0 * p.blk, wsrc + kb0 * p.blk, (uint32_t)(n * p.blk), bar);
                } else {
                    sm90_bar_expect_tx(bar, (uint32_t)(G * 64 * 4));
                    sm90_bulk_load(sm + at + KB * p.blk, ssrc, (uint32_t)(G * 64 * 4), bar);
                }
            }
            nb += nch;
            at += fb_item_bytes(KB, p.blk, G);
        }
    }
    /* 2. the token's codes (its first barrier also orders warp 0's barrier inits before any wait) */
    fb_token_codes<FB_THREADS>(p, s_a, sb);

    /* 3. the items in order: GEMM1's, the grid barrier, GEMM2's */
    int nb = 0, have_b = -1;
    int64_t at = a.data_at;
    bool crossed = false;
    for (int it = i0; it < i1; it++) {
        const int code = a.items[it], gemm = code >> 24, j = (code >> 16) & 255, rb = code & 0xffff;
        const int64_t KB = gemm ? KB2 : KB1, G = gemm ? G2 : G1;
        if (gemm && !crossed) {
            fb_grid_barrier<FB_THREADS>(a.bar_count, a.bar_gen); /* every y and row amax written */
            crossed = true;
        }
        if (gemm && have_b != j) { /* the pair's requantised codes, once an item at most */
            fb_pair_codes<FB_THREADS>(p, j, s_b, sb);
            have_b = j;
        }
        const char *wd = sm + at;
        const float *sc = (const float *)(sm + at + KB * p.blk) + r;
        const int nch = (int)((KB + FB_CHUNK - 1) / FB_CHUNK) + 1;
        sm90_bar_wait(bars + nb + nch - 1, 0); /* the scales */
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t b = kq * G / 4; b < (kq + 1) * G / 4; b++) {
            sm90_bar_wait(bars + nb + (int)(b * GK / FB_CHUNK), 0); /* the group's chunk */
            float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            fb_group<GSTEPS>(wd + b * GK * p.blk, p.blk, gemm ? s_b : s_a, b, t, tig, tmp);
            const float sx = sc[b * 64], sy = sc[b * 64 + 8];
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sy : sx, tmp[i], acc[i]);
        }
        fb_finish_item<FB_THREADS>(p, gemm, j, rb, slice, kq, lane, acc, sb);
        nb += nch;
        at += fb_item_bytes(KB, p.blk, G);
    }
    if (!crossed) fb_grid_barrier<FB_THREADS>(a.bar_count, a.bar_gen); /* a block without GEMM2 items */
    fb_grid_barrier<FB_THREADS>(a.bar_count, a.bar_gen);                /* every pair's o written */
    fb_combine<FB_THREADS>(p, sb); /* 4. */
#endif
}

#endif /* W4A8MOE_FUSED_BULK_DECODE_CUH */
