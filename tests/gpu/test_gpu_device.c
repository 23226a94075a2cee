/*
 * test_gpu_device.c — the library never changes the caller's current CUDA device: create,
 * forward, explain and free of a layer on device D leave the calling thread's current device
 * as it was, whichever it was. Meaningful with two devices or more (the layer on one, the
 * caller on another); with one, it checks the device stays 0 and says so.
 */
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <cuda_runtime.h>
#include <string.h>

static int current(void)
{
    int d = -1;
    cudaGetDevice(&d);
    return d;
}

/* Layer on `ordinal`, caller's current device `caller`: every call must leave `caller`. */
static void one(int ordinal, int caller, uint64_t seed)
{
    w4a8moe_layer_desc d;
    w4a8moe_layer_desc_init(&d);
    d.max_tokens = 4;
    d.hidden = 256;
    d.inter = 128;
    d.num_experts = 8;
    d.top_k = 2;
    d.group_size = 64;
    d.io_dtype = W4A8MOE_DTYPE_F32;
    w4a8moe_synth_weights sw;
    CHECK(w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed) == 0, "weights");
    w4a8moe_layer_options o = W4A8MOE_INIT(w4a8moe_layer_options);
    o.device_kind = W4A8MOE_DEVICE_CUDA;
    o.device_ordinal = ordinal;
    CHECK(cudaSetDevice(caller) == cudaSuccess, "cudaSetDevice(%d)", caller);
    char buf[2048];
    CHECK(w4a8moe_explain(&d, &o, buf, sizeof buf, NULL) == W4A8MOE_STATUS_OK &&
              current() == caller,
          "explain on device %d moved the caller from %d to %d", ordinal, caller, current());
    w4a8moe_layer *L = NULL;
    CHECK(w4a8moe_layer_create(&d, &sw.weights, &o, &L) == W4A8MOE_STATUS_OK, "create: %s",
          w4a8moe_last_error());
    CHECK(current() == caller, "create on device %d moved the caller from %d to %d", ordinal,
          caller, current());
    /* inputs on the layer's device; the caller's current device is put back before forward */
    int32_t ids[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float wts[8] = {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.125f, 0.5f, 0.5f}, x[4 * 256];
    for (int i = 0; i < 4 * 256; i++) x[i] = (float)((i * 37) % 101 - 50) / 50.0f;
    void *dx = NULL, *dout = NULL, *dids = NULL, *dw = NULL;
    cudaSetDevice(ordinal);
    int ok = cudaMalloc(&dx, sizeof x) == cudaSuccess &&
             cudaMalloc(&dout, sizeof x) == cudaSuccess &&
             cudaMalloc(&dids, sizeof ids) == cudaSuccess &&
             cudaMalloc(&dw, sizeof wts) == cudaSuccess &&
             cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dids, ids, sizeof ids, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dw, wts, sizeof wts, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "device buffers");
    cudaSetDevice(caller);
    w4a8moe_routing_input r = {.topk_ids = dids, .topk_weights = dw};
    if (L && ok) {
        CHECK(w4a8moe_layer_forward(L, 4, dx, &r, dout, NULL) == W4A8MOE_STATUS_OK, "forward: %s",
              w4a8moe_layer_error(L));
        CHECK(current() == caller, "forward on device %d moved the caller from %d to %d",
              ordinal, caller, current());
    }
    w4a8moe_layer_free(L);
    CHECK(current() == caller, "free on device %d moved the caller from %d to %d", ordinal,
          caller, current());
    cudaSetDevice(ordinal);
    cudaDeviceSynchronize();
    cudaFree(dx);
    cudaFree(dout);
    cudaFree(dids);
    cudaFree(dw);
    cudaSetDevice(caller);
    w4a8moe_synth_weights_free(&sw);
}

int main(void)
{
    uint64_t seed = test_seed();
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
    }
    if (n == 0) {
        printf("SKIP: no CUDA device\n");
        CHECK(1, "nothing to run without a device");
        TEST_MAIN_END();
    }
    if (n == 1) printf("one CUDA device: checks the caller's device 0 stays current; the "
                       "restore across devices needs two (nvidia-h200-x2)\n");
    for (int layer_dev = 0; layer_dev < n && layer_dev < 2; layer_dev++)
        for (int caller = 0; caller < n && caller < 2; caller++)
            one(layer_dev, caller, seed + (uint64_t)(2 * layer_dev + caller));
    TEST_MAIN_END();
}
