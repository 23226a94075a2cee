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
 *   producer (warp 16, lanes 0-3): every item's groups (below), each into the next stage of its
 *     ring once its four readers have released it (empty barrier, 4 arrivals); it runs ahead
 *     across the grid barrier, so GEMM2's first weights land while the last GEMM1 items finish;
 *   consumers (warps 0-15, warp w: slice w % 4, K quarter w / 4, as the library's KS = 4): the
 *     token's codes, GEMM1's items, the grid barrier, GEMM2's items (codes once a pair), the
 *     second barrier, the combine — version 2's steps, on named barrier 1 (the producer is in
 *     none of them).
 * The producer's lane q streams K quarter q into its own ring of stages / 4 (round 38: one
 * thread issuing every stage, with 64-bit divisions, moved one stage an SM every ~400 ns, the
 * pipe at 1.5 TB/s); each quarter's four consumer warps count their stages. Same sums as
 * version 2.
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

    const int SQ = S / 4; /* stages a K quarter's ring */
    if (warp == FR_CONSUMERS / 32) { /* the producer: lane q streams K quarter q into its ring */
        if (lane < p.k) s_pe[lane] = __ldg(p.ids + lane);
        __syncwarp();
        if (lane < 4) {
            const int kq = lane;
            int st = 0;
            uint32_t ph = 0; /* the ring's stage and its pass's parity */
            for (int it = i0; it < i1; it++) {
                const int code = a.items[it], gemm = code >> 24, j = (code >> 16) & 255, rb = code & 0xffff;
                const int64_t e = s_pe[j], KB = gemm ? KB2 : KB1;
                const int G = (int)(gemm ? G2 : G1);
                const int64_t nrb = gemm ? p.nrb2 : p.nrb1;
                const char *wsrc = (gemm ? p.w2 : p.w13) + (e * nrb + rb) * KB * p.blk;
                const float *ssrc = (gemm ? p.ws2 : p.ws13) + (e * nrb + rb) * G * 64;
                const int q0 = kq * G / 4, n = (kq + 1) * G / 4 - q0;
                for (int u = 0; u < n; u++) {
                    const int x = kq * SQ + st, b = q0 + u;
                    sm90_bar_wait(&empty[x], ph ^ 1u);
                    char *stage = ring + x * a.stage_bytes;
                    sm90_bar_expect_tx(&full[x], (uint32_t)(GK * p.blk + 256));
                    sm90_bulk_load(stage, wsrc + (size_t)b * GK * p.blk, (uint32_t)(GK * p.blk), &full[x]);
                    sm90_bulk_load(stage + GK * p.blk, ssrc + b * 64, 256u, &full[x]);
                    if (++st == SQ) {
                        st = 0;
                        ph ^= 1u;
                    }
                }
            }
        }
        return;
    }

    /* the consumers: version 2's steps on their named barrier */
    const int slice = warp & 3, kq = warp >> 2, t = slice * 32 + lane, r = slice * 16 + (lane >> 2);
    fb_token_codes<FR_CONSUMERS>(p, s_a, sb);
    int cst = 0;
    uint32_t cph = 0; /* this warp's place in its quarter's ring: stage, parity */
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
            const int64_t b = b0 + u;
            const int x = kq * SQ + cst;
            sm90_bar_wait(&full[x], cph);
            const char *stage = ring + (int64_t)x * a.stage_bytes;
            float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if constexpr (COMPUTE) fb_group<GSTEPS>(stage, p.blk, gemm ? s_b : s_a, b, t, tig, tmp);
            const float *sc = (const float *)(stage + GK * p.blk);
            const float sx = sc[r], sy = sc[r + 8];
            __syncwarp();
            if (lane == 0) sm90_bar_arrive(&empty[x]); /* this warp is done with the stage */
            if (++cst == SQ) {
                cst = 0;
                cph ^= 1u;
            }
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf((i & 2) ? sy : sx, tmp[i], acc[i]);
        }
        fb_finish_item<FR_CONSUMERS>(p, gemm, j, rb, slice, kq, lane, acc, sb);
    }
    if (!crossed) fb_grid_barrier<FR_CONSUMERS>(a.bar_count, a.bar_gen);
    fb_grid_barrier<FR_CONSUMERS>(a.bar_count, a.bar_gen);
    fb_combine<FR_CONSUMERS>(p, sb);
#endif
}

#endif /* W4A8MOE_FUSED_RING_DECODE_CUH */
