/*
 * fused_ring_decode.cuh — version 3 of dev/kernels/fused_decode_lab.cu's one-launch T = 1 layer,
 * included by it after fused_bulk_decode.cuh (fb_args, the grid barrier and the steps both share).
 *
 * Version 2 holds all of a block's weights in shared memory at once, which only a small layer's
 * k experts fit (qwen3-30b-a3b: 21 MB over the SMs); Mixtral's, DeepSeek-V3's and Llama-4's T = 1
 * layers stream 60-180 MB. Here the same items stream through a ring of `stages` one-group
 * stages (one K group of a 64-row block: g/64 K blocks and its 64 f32 scales) filled by a
 * producer warp with bulk copies and read by 16 consumer warps, so each SM keeps ~200 KB in
 * flight for any layer size, the layer still one launch:
 *   producer (warp 16, lane 0): every item's groups in the order below, each into the next
 *     stage once its four readers have released it (empty barrier, 4 arrivals); it runs ahead
 *     across the grid barrier, so GEMM2's first weights land while the last GEMM1 items finish;
 *   consumers (warps 0-15, warp w: slice w % 4, K quarter w / 4, as the library's KS = 4): the
 *     token's codes, GEMM1's items, the grid barrier, GEMM2's items (codes once a pair), the
 *     second barrier, the combine — version 2's steps, on named barrier 1 (the producer is in
 *     none of them).
 * Order of an item's groups: round robin over the quarters (group u of quarter 0, of 1, of 2, of
 * 3, then u + 1, ...), so the 16 warps work at once. Same sums as version 2.
 */
#ifndef W4A8MOE_FUSED_RING_DECODE_CUH
#define W4A8MOE_FUSED_RING_DECODE_CUH

#define FR_CONSUMERS 512
#define FR_THREADS (FR_CONSUMERS + 32)

/* Groups of quarter q of G (the library's split: [q G / 4, (q + 1) G / 4)). */
__host__ __device__ __forceinline__ int64_t fr_quarter_groups(int64_t G, int q)
{
    return (q + 1) * G / 4 - q * G / 4;
}

/* Position, in an item's round-robin order, of group u of quarter q. */
__device__ __forceinline__ int64_t fr_order(int64_t G, int q, int64_t u)
{
    int64_t before = 0; /* groups of every quarter at rounds < u, then quarters < q at round u */
    for (int x = 0; x < 4; x++) before += min(u, fr_quarter_groups(G, x)) + (x < q && u < fr_quarter_groups(G, x));
    return before;
}

/* COMPUTE = false: the stream alone (the consumers wait for each stage and release it, nothing
 * multiplied; out is not the layer's), the speed of light of the ring for the lab. */
template <int GSTEPS, bool COMPUTE = true>
static __global__ void __launch_bounds__(FR_THREADS, 1) fused_ring_kernel(fb_args a)
{
#if SM90_ENABLED
    const fd_args &p = a.f;
    extern __shared__ __align__(128) char sm[];
    const int S = a.stages;
    uint64_t *full = (uint64_t *)sm, *empty = full + S;
    uint8_t *s_a = (uint8_t *)sm + a.codes_at, *s_b = s_a + p.H;
    char *ring = sm + a.data_at;
    __shared__ fb_block sb;
    __shared__ int32_t s_pe[FD_MAXK]; /* the producer's copy of the experts */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tig = lane & 3;
    const int i0 = a.sched[blockIdx.x], i1 = a.sched[blockIdx.x + 1];
    constexpr int GK = GSTEPS / 2; /* K blocks a group */
    const int64_t KB1 = p.H / 64, KB2 = p.I / 64, G1 = p.H / p.g, G2 = p.I / p.g;

    if (threadIdx.x == 0) {
        for (int s = 0; s < S; s++) {
            sm90_bar_init(&full[s], 1);
            sm90_bar_init(&empty[s], 4);
        }
        sm90_bar_init_fence();
    }
    __syncthreads(); /* the only whole-block barrier: the ring's barriers initialised */

    if (warp == FR_CONSUMERS / 32) { /* the producer */
        if (lane < p.k) s_pe[lane] = __ldg(p.ids + lane);
        __syncwarp();
        if (lane == 0) {
            int64_t seq = 0;
            for (int it = i0; it < i1; it++) {
                const int code = a.items[it], gemm = code >> 24, j = (code >> 16) & 255, rb = code & 0xffff;
                const int64_t e = s_pe[j], KB = gemm ? KB2 : KB1, G = gemm ? G2 : G1;
                const int64_t nrb = gemm ? p.nrb2 : p.nrb1;
                const char *wsrc = (gemm ? p.w2 : p.w13) + (e * nrb + rb) * KB * p.blk;
                const float *ssrc = (gemm ? p.ws2 : p.ws13) + (e * nrb + rb) * G * 64;
                const int64_t most = fr_quarter_groups(G, 3); /* the last quarter has the most */
                for (int64_t u = 0; u < most; u++)
                    for (int q = 0; q < 4; q++) {
                        if (u >= fr_quarter_groups(G, q)) continue;
                        const int64_t b = q * G / 4 + u;
                        const int st = (int)(seq % S);
                        sm90_bar_wait(&empty[st], (uint32_t)((seq / S) & 1) ^ 1u);
                        char *stage = ring + (int64_t)st * a.stage_bytes;
                        sm90_bar_expect_tx(&full[st], (uint32_t)(GK * p.blk + 256));
                        sm90_bulk_load(stage, wsrc + b * GK * p.blk, (uint32_t)(GK * p.blk), &full[st]);
                        sm90_bulk_load(stage + GK * p.blk, ssrc + b * 64, 256u, &full[st]);
                        seq++;
                    }
            }
        }
        return;
    }

    /* the consumers: version 2's steps on their named barrier */
    const int slice = warp & 3, kq = warp >> 2, t = slice * 32 + lane, r = slice * 16 + (lane >> 2);
    fb_token_codes<FR_CONSUMERS>(p, s_a, sb);
    int64_t base = 0; /* ring position of the item's first group */
    int have_b = -1;
    bool crossed = false;
    for (int it = i0; it < i1; it++) {
        const int code = a.items[it], gemm = code >> 24, j = (code >> 16) & 255, rb = code & 0xffff;
        const int64_t G = gemm ? G2 : G1;
        if (gemm && !crossed) {
            fb_grid_barrier<FR_CONSUMERS>(a.bar_count, a.bar_gen); /* every y and row amax written */
            crossed = true;
        }
        if (gemm && have_b != j) {
            fb_pair_codes<FR_CONSUMERS>(p, j, s_b, sb);
            have_b = j;
        }
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const int64_t b0 = kq * G / 4;
        for (int64_t u = 0; u < fr_quarter_groups(G, kq); u++) {
            const int64_t seq = base + fr_order(G, kq, u), b = b0 + u;
            const int st = (int)(seq % S);
            sm90_bar_wait(&full[st], (uint32_t)((seq / S) & 1));
            const char *stage = ring + (int64_t)st * a.stage_bytes;
            float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if constexpr (COMPUTE) fb_group<GSTEPS>(stage, p.blk, gemm ? s_b : s_a, b, t, tig, tmp);
            const float *sc = (const float *)(stage + GK * p.blk);
            const float sx = sc[r], sy = sc[r + 8];
            __syncwarp();
            if (lane == 0) sm90_bar_arrive(&empty[st]); /* this warp is done with the stage */
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sy : sx, tmp[i], acc[i]);
        }
        base += G;
        fb_finish_item<FR_CONSUMERS>(p, gemm, j, rb, slice, kq, lane, acc, sb);
    }
    if (!crossed) fb_grid_barrier<FR_CONSUMERS>(a.bar_count, a.bar_gen);
    fb_grid_barrier<FR_CONSUMERS>(a.bar_count, a.bar_gen);
    fb_combine<FR_CONSUMERS>(p, sb);
#endif
}

#endif /* W4A8MOE_FUSED_RING_DECODE_CUH */
