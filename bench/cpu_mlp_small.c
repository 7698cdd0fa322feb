/* cpu_mlp_small.c — CPU milliseconds per training step of mlp-small (WORKLOADS.md):
 * 784-512-512-10 ReLU, batch 128, cross-entropy, Adam lr 1e-3, over 8 pre-made random
 * batches rotated; warm-up, then the median of 5 repetitions of N steps.
 *
 *   bench/run_cpu.sh builds and runs it next to bench/cpu_mlp_small.py (PyTorch).
 *   usage: cpu_mlp_small [STEPS_PER_REP (100)] [WARMUP_STEPS (20)]
 * Prints one JSON line. */
#include "anvil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 128
#define IN 784
#define HIDDEN 512
#define CLASSES 10
#define N_BATCHES 8
#define REPS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                        \
    do {                                                                   \
        anvil_status s_ = (call);                                          \
        if (s_ != ANVIL_OK) {                                              \
            fprintf(stderr, "%s: %s\n", #call, anvil_last_error());        \
            goto out;                                                      \
        }                                                                  \
    } while (0)

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int warmup = argc > 2 ? atoi(argv[2]) : 20;
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "usage: %s [STEPS_PER_REP] [WARMUP_STEPS]\n", argv[0]);
        return 2;
    }
    int rc = 1;
    anvil_model *model = NULL;
    anvil_trainer *trainer = NULL;
    anvil_tensor *xs[N_BATCHES] = {0}, *ys[N_BATCHES] = {0};

    const int64_t in_shape[1] = {IN};
    CHECK(anvil_model_create(&model, "mlp-small", 1, in_shape));
    anvil_layer_desc fc = anvil_layer_default(ANVIL_LAYER_LINEAR);
    anvil_layer_desc relu = anvil_layer_default(ANVIL_LAYER_RELU);
    fc.out_features = HIDDEN;
    CHECK(anvil_model_add(model, &fc));
    CHECK(anvil_model_add(model, &relu));
    CHECK(anvil_model_add(model, &fc));
    CHECK(anvil_model_add(model, &relu));
    fc.out_features = CLASSES;
    CHECK(anvil_model_add(model, &fc));

    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = ANVIL_DEVICE_CPU;
    cfg.loss = ANVIL_LOSS_CROSS_ENTROPY;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_ADAM);
    cfg.optimizer.lr = 1e-3f;
    cfg.seed = 0;
    CHECK(anvil_trainer_create(&trainer, model, &cfg));

    /* 8 pre-made batches: x ~ U[0,1), labels uniform over the classes */
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (int b = 0; b < N_BATCHES; b++) {
        const int64_t xshape[2] = {BATCH, IN}, yshape[1] = {BATCH};
        CHECK(anvil_tensor_create(&xs[b], ANVIL_F32, 2, xshape, NULL));
        CHECK(anvil_tensor_create(&ys[b], ANVIL_I32, 1, yshape, NULL));
        float *x = anvil_tensor_data(xs[b]);
        int32_t *y = anvil_tensor_data(ys[b]);
        for (int i = 0; i < BATCH * IN; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((state >> 40) & 0xFFFFFF) / 16777216.0f;
        }
        for (int i = 0; i < BATCH; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            y[i] = (int32_t)((state >> 33) % CLASSES);
        }
    }

    float loss = 0.0f;
    for (int i = 0; i < warmup; i++)
        CHECK(anvil_train_step(trainer, xs[i % N_BATCHES], ys[i % N_BATCHES]));
    CHECK(anvil_trainer_last_loss(trainer, &loss)); /* waits for the device */

    double ms[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        for (int i = 0; i < steps; i++)
            CHECK(anvil_train_step(trainer, xs[i % N_BATCHES], ys[i % N_BATCHES]));
        CHECK(anvil_trainer_last_loss(trainer, &loss));
        ms[r] = (now_s() - t0) * 1e3 / steps;
    }
    double sorted[REPS];
    memcpy(sorted, ms, sizeof ms);
    qsort(sorted, REPS, sizeof *sorted, cmp_double);
    printf("{\"impl\":\"anvil\",\"workload\":\"mlp-small\",\"device\":\"cpu\",\"ms_per_step\":%.4f,"
           "\"reps_ms\":[%.4f,%.4f,%.4f,%.4f,%.4f],\"steps_per_rep\":%d,\"warmup\":%d,"
           "\"final_loss\":%.4f,\"params\":%lld}\n",
           sorted[REPS / 2], ms[0], ms[1], ms[2], ms[3], ms[4], steps, warmup, (double)loss,
           (long long)anvil_model_param_count(model));
    rc = 0;
out:
    for (int b = 0; b < N_BATCHES; b++) {
        anvil_tensor_release(xs[b]);
        anvil_tensor_release(ys[b]);
    }
    anvil_trainer_free(trainer);
    anvil_model_free(model);
    return rc;
}
