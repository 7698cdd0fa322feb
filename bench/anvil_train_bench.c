/* anvil_train_bench.c — Anvil's milliseconds per training step of a WORKLOADS.md workload
 * on 1x28x28 inputs, batch 128, cross-entropy, Adam lr 1e-3, fp32: mlp-small (the
 * built-in "mlp", 784-512-512-10 ReLU) or cnn-fmnist (the built-in "cnn").
 *
 * Two ways to feed it:
 *   resident  the data lives on the device (8 batches of 128 random images, uint8,
 *             gathered and converted on the device by the step itself, in order, so the
 *             8 batches rotate): the step is one graph launch.
 *   host      8 pre-made float32 host batches rotated, copied in by every step.
 * Each: warm-up, then 5 repetitions of N steps, each ended by reading the loss (one
 * synchronization per repetition, none inside); prints the median as one JSON line.
 *
 *   usage: anvil_train_bench MODEL(mlp|cnn) DEVICE(cpu|cuda) MODE(resident|host) [STEPS (200)] [WARMUP (50)] */
#include "anvil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 128
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

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

#define CHECK(call)                                                    \
    do {                                                               \
        if ((call) != ANVIL_OK) {                                      \
            fprintf(stderr, "%s: %s\n", #call, anvil_last_error());    \
            exit(1);                                                   \
        }                                                              \
    } while (0)

/* A dataset of N_BATCHES * BATCH random 28x28 images via a temporary IDX pair. */
static anvil_dataset *random_dataset(void)
{
    int n = N_BATCHES * BATCH;
    char ip[] = "/tmp/anvil-bench-imgXXXXXX", lp[] = "/tmp/anvil-bench-labXXXXXX";
    int fi = mkstemp(ip), fl = mkstemp(lp);
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 28, 0, 0, 0, 28};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, (unsigned char)(n >> 8), (unsigned char)n};
    unsigned char *img = malloc((size_t)n * 784), *lab = malloc((size_t)n);
    uint32_t s = 1;
    for (int i = 0; i < n * 784; i++)
        img[i] = (unsigned char)(lcg(&s) >> 24);
    for (int i = 0; i < n; i++)
        lab[i] = (unsigned char)((lcg(&s) >> 16) % 10);
    if (write(fi, ih, 16) != 16 || write(fi, img, (size_t)n * 784) != n * 784 || write(fl, lh, 8) != 8 ||
        write(fl, lab, (size_t)n) != n) {
        fprintf(stderr, "cannot write the temporary dataset\n");
        exit(1);
    }
    close(fi);
    close(fl);
    anvil_dataset *d;
    CHECK(anvil_dataset_load_idx(&d, ip, lp));
    unlink(ip);
    unlink(lp);
    free(img);
    free(lab);
    return d;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s mlp|cnn cpu|cuda resident|host [STEPS] [WARMUP]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1];
    bool cuda = strcmp(argv[2], "cuda") == 0, resident = strcmp(argv[3], "resident") == 0;
    int steps = argc > 4 ? atoi(argv[4]) : 200, warmup = argc > 5 ? atoi(argv[5]) : 50;
    anvil_model *m;
    CHECK(anvil_model_builtin(&m, model));
    anvil_trainer_config c = anvil_trainer_default_config();
    c.device = cuda ? ANVIL_DEVICE_CUDA : ANVIL_DEVICE_CPU;
    anvil_trainer *t;
    CHECK(anvil_trainer_create(&t, m, &c));
    anvil_dataset *d = random_dataset();
    anvil_tensor *xs[N_BATCHES], *ys[N_BATCHES];
    anvil_batcher *b;
    CHECK(anvil_batcher_create(&b, d, BATCH, false, 0));
    for (int i = 0; i < N_BATCHES; i++) {
        bool done;
        CHECK(anvil_batcher_next(b, &xs[i], &ys[i], &done));
    }
    if (resident)
        CHECK(anvil_trainer_attach_data(t, d, BATCH, false, 0));
    int k = 0;
    bool done;
#define STEP()                                                                  \
    do {                                                                        \
        if (resident) {                                                         \
            CHECK(anvil_train_step_resident(t, &done));                         \
            if (done)                                                           \
                CHECK(anvil_train_step_resident(t, &done));                     \
        } else {                                                                \
            CHECK(anvil_train_step(t, xs[k % N_BATCHES], ys[k % N_BATCHES]));   \
            k++;                                                                \
        }                                                                       \
    } while (0)
    for (int i = 0; i < warmup; i++)
        STEP();
    float loss;
    CHECK(anvil_trainer_last_loss(t, &loss));
    double ms[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        for (int i = 0; i < steps; i++)
            STEP();
        CHECK(anvil_trainer_last_loss(t, &loss));
        ms[r] = (now_s() - t0) * 1e3 / steps;
    }
    qsort(ms, REPS, sizeof *ms, cmp_double);
    anvil_counters last;
    CHECK(anvil_trainer_counters(t, NULL, &last));
    printf("{\"impl\":\"anvil\",\"model\":\"%s\",\"device\":\"%s\",\"mode\":\"%s\",\"ms_per_step\":%.4f,\"min\":%.4f,\"max\":%.4f,"
           "\"steps\":%d,\"loss\":%.4f,\"last_step\":{\"allocs\":%lld,\"h2d\":%lld,\"d2h\":%lld,\"graph_launches\":%lld,"
           "\"host_kernels\":%lld}}\n",
           model, cuda ? "cuda" : "cpu", resident ? "resident" : "host", ms[REPS / 2], ms[0], ms[REPS - 1], steps, loss,
           (long long)last.device_allocs, (long long)last.h2d_copies, (long long)last.d2h_copies,
           (long long)last.graph_launches, (long long)last.host_kernel_launches);
    for (int i = 0; i < N_BATCHES; i++) {
        anvil_tensor_release(xs[i]);
        anvil_tensor_release(ys[i]);
    }
    anvil_batcher_free(b);
    anvil_trainer_free(t);
    anvil_model_free(m);
    anvil_dataset_free(d);
    return 0;
}
