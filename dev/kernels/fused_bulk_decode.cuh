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

/* The block's N threads (named barrier 1: all of version 2's, version 3's consumers) wait until
 * every block of the grid has arrived; their writes before it are visible after it. */
template <int N>
__device__ __forceinline__ void fb_sync(void)
{
    asm volatile("bar.sync 1, %0;" ::"n"(N) : "memory");
}

template <int N>
__device__ __forceinline__ void fb_grid_barrier(unsigned *count, unsigned *gen)
{
    fb_sync<N>();
    if (threadIdx.x == 0) {
        unsigned g;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(g) : "l"(gen) : "memory");
        __threadfence(); /* the block's writes (every thread's, ordered by the barrier above) first */
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            *count = 0u;
            __threadfence();
            asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(gen), "r"(g + 1u) : "memory");
        } else {
            unsigned now;
            do {
                __nanosleep(20);
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(gen) : "memory");
            } while (now == g);
        }
    }
    fb_sync<N>();
}

/* An item's bytes in shared memory: KB blocks of blk, then G x 64 f32 scales. */
__host__ __device__ __forceinline__ int64_t fb_item_bytes(int64_t KB, int blk, int64_t G)
{
    return KB * blk + G * 64 * 4;
}

template <int GSTEPS>
static __global__ void __launch_bounds__(FB_THREADS, 1) fused_bulk_kernel(fb_args a)
{
#if SM90_ENABLED
    const fd_args &p = a.f;
    extern __shared__ __align__(128) char sm[];
    uint64_t *bars = (uint64_t *)sm;
    uint8_t *s_a = (uint8_t *)sm + a.codes_at, *s_b = s_a + p.H;
    __shared__ float red[3 * 4 * 32 * 4];
    __shared__ float s_sa[FD_MAXK], s_r[FD_MAXK], s_w[FD_MAXK];
    __shared__ int32_t s_e[FD_MAXK];
    __shared__ uint32_t s_max[FB_THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int slice = warp & 3, kq = warp >> 2, t = slice * 32 + lane, r = slice * 16 + gid;
    const int k = p.k, i0 = a.sched[blockIdx.x], i1 = a.sched[blockIdx.x + 1];
    const int64_t KB1 = p.H / 64, KB2 = p.I / 64, G1 = p.H / p.g, G2 = p.I / p.g;

    /* 1. warp 0 asks for every chunk of every item: lane c of round q takes chunk 32 q + c */
    if (warp == 0) {
        const int32_t id = lane < k ? __ldg(p.ids + lane) : 0; /* one round trip for all k */
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
    /* 2. the token's codes, every block (as the old kernel) */
    if (threadIdx.x < k) {
        s_e[threadIdx.x] = p.ids[threadIdx.x];
        s_w[threadIdx.x] = p.wts[threadIdx.x];
    }
    uint32_t m = 0;
    for (int64_t h = threadIdx.x; h < p.H; h += FB_THREADS) m = max(m, w4a8moe_f32_bits(fabsf(p.x[h])));
    for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) s_max[warp] = m;
    __syncthreads(); /* also: every barrier initialised before anyone waits on it */
    m = 0;
    for (int w = 0; w < FB_THREADS / 32; w++) m = max(m, s_max[w]);
    const float s_t = w4a8moe_act_scale(w4a8moe_bits_f32(m));
    for (int64_t h = threadIdx.x; h < p.H; h += FB_THREADS) s_a[h] = w4a8moe_f32_to_e4m3(__fdiv_rn(p.x[h], s_t));
    if (threadIdx.x < k) s_sa[threadIdx.x] = s_t;
    __syncthreads();

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
            if (threadIdx.x == 0) s_r[j] = w4a8moe_act_scale(w4a8moe_bits_f32(__ldcg(&p.rowmax[j])));
            __syncthreads();
            const float rj = s_r[j];
            for (int64_t i = threadIdx.x; i < p.I; i += FB_THREADS)
                s_b[i] = w4a8moe_f32_to_e4m3(__fdiv_rn(__ldcg(p.y + (int64_t)j * p.I + i), rj));
            __syncthreads();
            have_b = j;
        }
        const uint8_t *codes = gemm ? s_b : s_a;
        const char *wd = sm + at;
        const float *sc = (const float *)(sm + at + KB * p.blk) + r;
        const int nch = (int)((KB + FB_CHUNK - 1) / FB_CHUNK) + 1;
        sm90_bar_wait(bars + nb + nch - 1, 0); /* the scales */
        const int64_t b0 = kq * G / 4, b1 = (kq + 1) * G / 4;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int waited = -1;
        for (int64_t b = b0; b < b1; b++) {
            float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int s = 0; s < GSTEPS; s++) {
                const int64_t ks = b * GSTEPS + s, kb = ks >> 1;
                const int ch = (int)(kb / FB_CHUNK);
                if (ch != waited) {
                    sm90_bar_wait(bars + nb + ch, 0);
                    waited = ch;
                }
                const uint2 v = *((const uint2 *)(wd + kb * p.blk) + sm90s_word_index(t, (int)(ks & 1)));
                uint32_t w[2][4];
                sm90m_weights<false>(v, 0u, w);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int64_t kk = ks * 32 + h * 16 + 2 * tig;
                    const uint32_t bl = fd_e4m3x2_f16x2(*(const uint16_t *)(codes + kk));
                    const uint32_t bh = fd_e4m3x2_f16x2(*(const uint16_t *)(codes + kk + 8));
                    sm90m_mma(tmp, w[h], bl, bh);
                }
            }
            const float sx = sc[b * 64], sy = sc[b * 64 + 8];
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sy : sx, tmp[i], acc[i]);
        }
        /* quarters added in order (the library's KS = 4), then the epilogue by quarter 0 */
        if (kq > 0)
#pragma unroll
            for (int i = 0; i < 4; i++) red[(((kq - 1) * 4 + slice) * 32 + lane) * 4 + i] = acc[i];
        __syncthreads();
        if (kq == 0) {
#pragma unroll
            for (int q = 1; q < 4; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[i] += red[(((q - 1) * 4 + slice) * 32 + lane) * 4 + i];
            const int64_t e = s_e[j];
            sm90_gemm_args ea = {};
            ea.g = p.g;
            if (!gemm) {
                ea.nrb = p.nrb1, ea.act_scale = s_sa, ea.wc = p.wc13, ea.n_out = p.I, ea.out = p.y;
                ea.rowmax = p.rowmax, ea.act_fn = 0;
                sm90_epilogue_slice<8, true>(ea, e, rb, slice, lane, j, j + 1, acc);
            } else {
                ea.nrb = p.nrb2, ea.act_scale = s_r, ea.wc = p.wc2, ea.n_out = p.H, ea.out = p.o;
                sm90_epilogue_slice<8, false>(ea, e, rb, slice, lane, j, j + 1, acc);
            }
        }
        __syncthreads(); /* red reused */
        nb += nch;
        at += fb_item_bytes(KB, p.blk, G);
    }
    if (!crossed) fb_grid_barrier<FB_THREADS>(a.bar_count, a.bar_gen); /* a block without GEMM2 items */
    fb_grid_barrier<FB_THREADS>(a.bar_count, a.bar_gen);                /* every pair's o written */
    /* 4. the combine, j ascending; block 0 then zeroes the row maxima for the next launch */
    for (int64_t ch = (int64_t)blockIdx.x * FB_THREADS + threadIdx.x; ch < p.H; ch += (int64_t)gridDim.x * FB_THREADS) {
        float v = 0.0f;
        for (int q = 0; q < k; q++) v = __fadd_rn(v, __fmul_rn(s_w[q], __ldcg(&p.o[(int64_t)q * p.H + ch])));
        p.out[ch] = v;
    }
    if (blockIdx.x == 0 && threadIdx.x < k) p.rowmax[threadIdx.x] = 0u;
#endif
}

#endif /* W4A8MOE_FUSED_BULK_DECODE_CUH */
