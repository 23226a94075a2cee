/*
 * test_threads.c — layers used from several caller threads at once.
 *
 * The cpu backend's thread pools share one set of workers (src/common/threadpool.c), so layers
 * of different sizes and thread counts, driven from different caller threads at the same time,
 * must still each give exactly the output they give when run alone. Outputs are compared bit
 * for bit with a serial run of the same layer on the same input.
 *
 * fork(): a child forked while another thread runs forwards gets the layers but not the
 * workers; its forwards must still finish (not wait for workers that do not exist, nor for a
 * lock held by a thread that is gone) and give the same bits, and the parent carries on.
 */
#include "common/synth.h"
#include "test_util.h"
#include "w4a8moe.h"

#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NLAYERS 3
#define T 9

typedef struct case_ctx {
    w4a8moe_layer *layer;
    int64_t H;
    float *x, *want, *got;
    int32_t *ids;
    float *wts;
    int iters, mismatches, errors;
} case_ctx;

static void *drive(void *arg)
{
    case_ctx *c = arg;
    w4a8moe_routing_input r = {.topk_ids = c->ids, .topk_weights = c->wts};
    for (int it = 0; it < c->iters; it++) {
        memset(c->got, 0xff, (size_t)(T * c->H) * sizeof(float)); /* poison: NaN */
        if (w4a8moe_layer_forward(c->layer, T, c->x, &r, c->got, NULL) != W4A8MOE_STATUS_OK)
            c->errors++;
        else if (memcmp(c->got, c->want, (size_t)(T * c->H) * sizeof(float)) != 0)
            c->mismatches++;
    }
    return NULL;
}

/* In a forked child: every layer once, bit for bit against the serial run; the exit status
 * is the number of layers that failed. alarm() turns a hang into a failure. */
static void child_forwards(case_ctx *cases)
{
    alarm(60);
    int bad = 0;
    for (int i = 0; i < NLAYERS; i++) {
        case_ctx *c = &cases[i];
        w4a8moe_routing_input r = {.topk_ids = c->ids, .topk_weights = c->wts};
        memset(c->got, 0xff, (size_t)(T * c->H) * sizeof(float));
        if (w4a8moe_layer_forward(c->layer, T, c->x, &r, c->got, NULL) != W4A8MOE_STATUS_OK ||
            memcmp(c->got, c->want, (size_t)(T * c->H) * sizeof(float)) != 0)
            bad++;
    }
    _exit(bad);
}

static void test_fork(case_ctx *cases)
{
    /* a parent thread keeps the shared workers busy while the main thread forks */
    case_ctx busy = cases[2];
    busy.got = malloc((size_t)(T * busy.H) * sizeof(float));
    busy.iters = 20;
    busy.mismatches = busy.errors = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, drive, &busy) == 0, "busy thread");
    for (int k = 0; k < 2; k++) {
        pid_t pid = fork();
        if (pid == 0) child_forwards(cases);
        int status = -1;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "forked child %d: %s %d (exit = layers whose forward failed or differed; "
              "SIGALRM = hung)", k, WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    pthread_join(th, NULL);
    CHECK(busy.errors == 0 && busy.mismatches == 0, "parent forwards across the forks: %d failed, "
          "%d differ", busy.errors, busy.mismatches);
    free(busy.got);
}

int main(void)
{
    w4a8moe_synth_rng rng = {test_seed()};
    /* shapes and thread counts differ so the pools have different sizes (1, 2, 3 workers) */
    const int64_t Hs[NLAYERS] = {256, 320, 512}, Is[NLAYERS] = {128, 160, 256};
    const int32_t threads[NLAYERS] = {1, 2, 3}, Es[NLAYERS] = {8, 6, 16};
    case_ctx cases[NLAYERS];
    w4a8moe_synth_weights sw[NLAYERS];
    int iters = test_quick() ? 5 : 40;
    for (int i = 0; i < NLAYERS; i++) {
        w4a8moe_layer_desc d;
        w4a8moe_layer_desc_init(&d);
        d.max_tokens = T;
        d.hidden = Hs[i];
        d.inter = Is[i];
        d.num_experts = Es[i];
        d.top_k = 2;
        d.group_size = 32;
        d.io_dtype = W4A8MOE_DTYPE_F32;
        CHECK(w4a8moe_synth_weights_make(&sw[i], &d, W4A8MOE_DTYPE_BF16, 0, 0,
                                         w4a8moe_synth_next(&rng)) == 0, "weights %d", i);
        w4a8moe_layer_options o = {.backend = "cpu", .num_threads = threads[i]};
        case_ctx *c = &cases[i];
        memset(c, 0, sizeof *c);
        CHECK(w4a8moe_layer_create(&d, &sw[i].weights, &o, &c->layer) == W4A8MOE_STATUS_OK,
              "create %d: %s", i, w4a8moe_last_error());
        c->H = d.hidden;
        c->iters = iters;
        c->x = malloc((size_t)(T * d.hidden) * sizeof(float));
        c->want = malloc((size_t)(T * d.hidden) * sizeof(float));
        c->got = malloc((size_t)(T * d.hidden) * sizeof(float));
        c->ids = malloc(T * 2 * sizeof(int32_t));
        c->wts = malloc(T * 2 * sizeof(float));
        w4a8moe_synth_input(c->x, W4A8MOE_DTYPE_F32, T, d.hidden, 2.0f, &rng);
        w4a8moe_synth_routing(c->ids, c->wts, T, d.num_experts, 2, &rng);
        w4a8moe_routing_input r = {.topk_ids = c->ids, .topk_weights = c->wts};
        memset(c->want, 0xff, (size_t)(T * d.hidden) * sizeof(float));
        CHECK(w4a8moe_layer_forward(c->layer, T, c->x, &r, c->want, NULL) == W4A8MOE_STATUS_OK,
              "serial forward %d", i);
        int finite = 1;
        for (int64_t j = 0; j < T * d.hidden; j++) finite &= c->want[j] == c->want[j];
        CHECK(finite, "serial output %d written everywhere (no poison left)", i);
    }
    pthread_t th[NLAYERS];
    for (int i = 0; i < NLAYERS; i++) CHECK(pthread_create(&th[i], NULL, drive, &cases[i]) == 0, "thread %d", i);
    for (int i = 0; i < NLAYERS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NLAYERS; i++) {
        CHECK(cases[i].errors == 0, "layer %d: %d forwards failed", i, cases[i].errors);
        CHECK(cases[i].mismatches == 0, "layer %d: %d of %d concurrent forwards differ from the serial run",
              i, cases[i].mismatches, iters);
    }
    test_fork(cases);
    /* free in a different order than created: the shared workers outlive all but the last */
    for (int i = NLAYERS - 1; i >= 0; i--) {
        w4a8moe_layer_free(cases[i].layer);
        free(cases[i].x);
        free(cases[i].want);
        free(cases[i].got);
        free(cases[i].ids);
        free(cases[i].wts);
        w4a8moe_synth_weights_free(&sw[i]);
    }
    TEST_MAIN_END();
}
