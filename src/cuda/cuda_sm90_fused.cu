/*
 * cuda_sm90_fused.cu — see cuda_sm90_fused.h.
 *
 * The schedule: item (gemm, tile q, row block) covers one 64-row block of one of the token's
 * (at most k) experts over all of K. GEMM1's items and GEMM2's are placed apart, each phase
 * bytes-balanced over the blocks (largest first onto the least-loaded block; the items of a
 * phase are all one size, so this deals them round robin), because the grid barrier between
 * them makes each phase's slowest block its time. Within a block GEMM1's items come first, then
 * GEMM2's by tile (a tile's requantised codes are made once).
 */
#include "cuda_sm90_fused.h"

#include <string.h>

#include <algorithm>
#include <vector>

#define SM90F_MAX_STAGES 64
#define SM90F_SM90_OPTIN (227 * 1024) /* an sm_90 block's most shared memory */

/* Bytes of a ring stage of gps groups: their weight blocks, then their 64 f32 scales each. */
static int stage_bytes_for(int g, int gps) { return gps * ((g / 64) * sm90s_block_bytes(g) + 256); }

/* Static shared memory of the kernel (its s_e, s_r and red arrays), an upper bound. */
#define SM90F_STATIC_SMEM (2 * SM90F_MAX_PAIRS * 4 + 3 * 4 * 32 * 4 * 4)

static int stages_for(int64_t H, int64_t I, int g, int gps, int optin)
{
    const int64_t room = (int64_t)optin - SM90F_STATIC_SMEM - H - I - 256;
    int64_t n = room / (stage_bytes_for(g, gps) + 16);
    n = n < SM90F_MAX_STAGES ? (n < 0 ? 0 : n) : SM90F_MAX_STAGES;
    return (int)(n & ~(int64_t)3); /* four rings, one a K quarter (kernels/sm90_fused_decode.cuh) */
}

int sm90_fused_fits(int64_t H, int64_t I, int k, int g, int gps, int optin, char *why, size_t cap)
{
    if (gps != 1 && gps != 2 && gps != 4) {
        snprintf(why, cap, "W4A8MOE_SM90_FUSED_GPS = %d (1, 2 or 4 groups a stage)", gps);
        return 0;
    }
    if (g != 64 && g != 128) {
        snprintf(why, cap, "group size %d (the one-launch path streams whole groups of 64 or 128)", g);
        return 0;
    }
    if (k > SM90F_MAX_PAIRS) {
        snprintf(why, cap, "top_k = %d exceeds the one-launch path's %d", k, SM90F_MAX_PAIRS);
        return 0;
    }
    const int stages = stages_for(H, I, g, gps, optin > 0 ? optin : SM90F_SM90_OPTIN);
    if (stages < SM90F_MIN_STAGES) {
        snprintf(why, cap, "H + I = %lld leaves room for %d ring stages of %d groups, fewer than %d",
                 (long long)(H + I), stages, gps, SM90F_MIN_STAGES);
        return 0;
    }
    return 1;
}

/* Deals n items of `bytes` each onto the least-loaded blocks. */
static void place(std::vector<std::vector<int32_t>> &per, std::vector<int64_t> &load, int gemm, int k,
                  int64_t nrb, int64_t bytes)
{
    const int sms = (int)per.size();
    for (int q = 0; q < k; q++)
        for (int64_t rb = 0; rb < nrb; rb++) {
            int best = 0;
            for (int b = 1; b < sms; b++)
                if (load[b] < load[best]) best = b;
            per[best].push_back(gemm << 24 | q << 16 | (int32_t)rb);
            load[best] += bytes;
        }
}

w4a8moe_status sm90_fused_setup(sm90_fused *f, int64_t H, int64_t I, int k, int g, int gps, int64_t nrb1,
                                int64_t nrb2, int scaled2, int sms, w4a8moe_err *err)
{
    memset(f, 0, sizeof *f);
    int optin = 0, dev = 0;
    CUDA_TRY(err, cudaGetDevice(&dev)); /* the layer's (sm90_pack made it current) */
    CUDA_TRY(err, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    char why[W4A8MOE_WHY_CAP];
    if (!sm90_fused_fits(H, I, k, g, gps, optin, why, sizeof why) || sms <= 0 || nrb1 >= 0x10000 || nrb2 >= 0x10000)
        return W4A8MOE_STATUS_OK;
    const int blk = sm90s_block_bytes(g), gk = g / 64;
    const int64_t ib1 = (H / g) * (gk * blk + 256), ib2 = (I / g) * (gk * blk + (scaled2 ? 0 : 256));
    std::vector<std::vector<int32_t>> per1(sms), per2(sms);
    std::vector<int64_t> load1(sms, 0), load2(sms, 0);
    place(per1, load1, 0, k, nrb1, ib1);
    place(per2, load2, 1, k, nrb2, ib2);
    std::vector<int32_t> sched(1, 0), items;
    for (int b = 0; b < sms; b++) {
        std::stable_sort(per2[b].begin(), per2[b].end(), [](int32_t u, int32_t v) { return (u >> 16) < (v >> 16); });
        items.insert(items.end(), per1[b].begin(), per1[b].end());
        items.insert(items.end(), per2[b].begin(), per2[b].end());
        sched.push_back((int32_t)items.size());
    }
    f->g = g;
    f->grid = sms;
    f->threads = SM90F_THREADS;
    f->gps = gps;
    f->stage_bytes = stage_bytes_for(g, gps);
    f->stages = stages_for(H, I, g, gps, optin);
    f->codes_at = 16 * f->stages;
    f->data_at = (int)((f->codes_at + H + I + 127) / 128 * 128);
    f->smem = f->data_at + f->stages * f->stage_bytes;
    void (*kern)(sm90f_args) = g == 128 ? sm90_fused_decode_kernel<4> : sm90_fused_decode_kernel<2>;
    cudaFuncAttributes attr;
    CUDA_TRY(err, cudaFuncGetAttributes(&attr, kern));
    RETURN_IF(err, (size_t)f->smem + attr.sharedSizeBytes > (size_t)optin, W4A8MOE_STATUS_INTERNAL,
              "cuda_sm90 one-launch path: %d + %zu bytes of shared memory exceed the block's %d", f->smem,
              attr.sharedSizeBytes, optin);
    CUDA_TRY(err, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, f->smem));
    CUDA_TRY(err, cudaMalloc((void **)&f->sched, sched.size() * 4));
    CUDA_TRY(err, cudaMalloc((void **)&f->items, (items.size() ? items.size() : 1) * 4));
    CUDA_TRY(err, cudaMalloc((void **)&f->bar, 2 * sizeof(unsigned)));
    CUDA_TRY(err, cudaMemset(f->bar, 0, 2 * sizeof(unsigned)));
    CUDA_TRY(err, cudaMemcpy(f->sched, sched.data(), sched.size() * 4, cudaMemcpyHostToDevice));
    if (items.size()) CUDA_TRY(err, cudaMemcpy(f->items, items.data(), items.size() * 4, cudaMemcpyHostToDevice));
    f->ready = 1;
    return W4A8MOE_STATUS_OK;
}

cudaError_t sm90_fused_launch(const sm90_fused *f, sm90f_args a, cudaStream_t st, int pdl)
{
    a.sched = f->sched;
    a.items = f->items;
    a.bar = f->bar;
    a.codes_at = f->codes_at;
    a.data_at = f->data_at;
    a.stages = f->stages;
    a.stage_bytes = f->stage_bytes;
    a.gps = f->gps;
    void (*kern)(sm90f_args) = f->g == 128 ? sm90_fused_decode_kernel<4> : sm90_fused_decode_kernel<2>;
    return w4a8moe_launch(kern, dim3((unsigned)f->grid), dim3((unsigned)f->threads), (size_t)f->smem, st, pdl, a);
}

void sm90_fused_free(sm90_fused *f)
{
    cudaFree(f->sched);
    cudaFree(f->items);
    cudaFree(f->bar);
    memset(f, 0, sizeof *f);
}
