/* anvil_train_bench.c — Anvil's milliseconds per training step of a WORKLOADS.md workload,
 * cross-entropy, fp32:
 *   mlp       mlp-small (the built-in "mlp", 784-512-512-10 ReLU), 1x28x28, batch 128, Adam lr 1e-3
 *   cnn       cnn-fmnist (the built-in "cnn"), 1x28x28, batch 128, Adam lr 1e-3
 *   resnet18  resnet18-cifar (anvil_model_resnet18(3, 32, 32, 10): CIFAR-style ResNet-18,
 *             3x3 stem of stride 1, no stem max-pool, BatchNorm, 10 classes), 3x32x32,
 *             batch 256, SGD lr 0.05 momentum 0.9
 *
 * Two ways to feed it:
 *   resident  the data lives on the device (8 batches of random images, uint8, gathered
 *             and converted on the device by the step itself, in order, so the 8 batches
 *             rotate): the step is one graph launch.
 *   host      8 pre-made float32 host batches rotated, copied in by every step.
 * Each: warm-up, then 5 repetitions of N steps, each ended by reading the loss (one
 * synchronization per repetition, none inside); prints the median as one JSON line.
 * The data: bytes of the LCG s = s * 1664525 + 1013904223 (s0 = 1), pixel = s >> 24 for
 * every pixel of every image in order, then label = (s >> 16) % 10 per image; pixels
 * reach the model as pixel / 255 (torch_train_bench.py rebuilds the same batches for
 * resnet18).
 *
 *   usage: anvil_train_bench MODEL(mlp|cnn|resnet18) DEVICE(cpu|cuda) MODE(resident|host) [STEPS (200)] [WARMUP (50)]
 *          anvil_train_bench MODEL DEVICE names   one JSON line: the parameter count and
 *                                                 every state_dict tensor's name, shape, dtype */
#include "anvil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A dataset of n random images of c x h x w via a temporary IDX pair (3-dim [n,h,w] for
 * one channel, as Fashion-MNIST's files; 4-dim [n,c,h,w] otherwise). */
static anvil_dataset *random_dataset(int n, int c, int h, int w)
{
    char ip[] = "/tmp/anvil-bench-imgXXXXXX", lp[] = "/tmp/anvil-bench-labXXXXXX";
    int fi = mkstemp(ip), fl = mkstemp(lp);
    if (fi < 0 || fl < 0) {
        fprintf(stderr, "cannot create the temporary dataset files\n");
        exit(1);
    }
    int ndim = c == 1 ? 3 : 4;
    uint32_t dims[4] = {(uint32_t)n, (uint32_t)c, (uint32_t)h, (uint32_t)w};
    if (c == 1) {
        dims[1] = (uint32_t)h;
        dims[2] = (uint32_t)w;
    }
    unsigned char ih[4 + 16] = {0, 0, 8, (unsigned char)ndim}, lh[8] = {0, 0, 8, 1};
    for (int i = 0; i < ndim; i++)
        be32(ih + 4 + 4 * i, dims[i]);
    be32(lh + 4, (uint32_t)n);
    size_t ihl = 4 + 4 * (size_t)ndim, px = (size_t)n * (size_t)c * (size_t)h * (size_t)w;
    unsigned char *img = malloc(px), *lab = malloc((size_t)n);
    if (!img || !lab) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint32_t s = 1;
    for (size_t i = 0; i < px; i++)
        img[i] = (unsigned char)(lcg(&s) >> 24);
    for (int i = 0; i < n; i++)
        lab[i] = (unsigned char)((lcg(&s) >> 16) % 10);
    if (write(fi, ih, ihl) != (ssize_t)ihl || write(fi, img, px) != (ssize_t)px || write(fl, lh, 8) != 8 ||
        write(fl, lab, (size_t)n) != (ssize_t)n) {
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

/* The state_dict (parameters and buffers, via a temporary safetensors file) as JSON. */
static void print_names(anvil_trainer *t, anvil_model *m, const char *model)
{
    char path[] = "/tmp/anvil-bench-namesXXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "cannot create a temporary file\n");
        exit(1);
    }
    close(fd);
    CHECK(anvil_trainer_save(t, path));
    int n;
    char **names;
    anvil_tensor **ts;
    CHECK(anvil_safetensors_read(path, &n, &names, &ts));
    unlink(path);
    printf("{\"impl\":\"anvil\",\"model\":\"%s\",\"params\":%lld,\"state_dict\":{", model,
           (long long)anvil_model_param_count(m));
    for (int i = 0; i < n; i++) {
        printf("%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", names[i], anvil_dtype_name(anvil_tensor_dtype(ts[i])));
        for (int k = 0; k < anvil_tensor_ndim(ts[i]); k++)
            printf("%s%lld", k ? "," : "", (long long)anvil_tensor_shape(ts[i])[k]);
        printf("]}");
    }
    printf("}}\n");
    anvil_safetensors_free(n, names, ts);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s mlp|cnn|resnet18 cpu|cuda resident|host|names [STEPS] [WARMUP]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1];
    bool cuda = strcmp(argv[2], "cuda") == 0, resident = strcmp(argv[3], "resident") == 0;
    bool names = strcmp(argv[3], "names") == 0;
    int steps = argc > 4 ? atoi(argv[4]) : 200, warmup = argc > 5 ? atoi(argv[5]) : 50;
    if (!resident && !names && strcmp(argv[3], "host") != 0) {
        fprintf(stderr, "unknown mode '%s' (resident, host or names)\n", argv[3]);
        return 2;
    }
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "STEPS must be >= 1 and WARMUP >= 0\n");
        return 2;
    }
    bool resnet = strcmp(model, "resnet18") == 0;
    int batch = resnet ? 256 : 128, c = resnet ? 3 : 1, hw = resnet ? 32 : 28;
    anvil_model *m;
    if (resnet)
        CHECK(anvil_model_resnet18(&m, c, hw, hw, 10));
    else
        CHECK(anvil_model_builtin(&m, model));
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = cuda ? ANVIL_DEVICE_CUDA : ANVIL_DEVICE_CPU;
    if (resnet) {
        cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
        cfg.optimizer.lr = 0.05f;
        cfg.optimizer.momentum = 0.9f;
    }
    anvil_trainer *t;
    CHECK(anvil_trainer_create(&t, m, &cfg));
    if (names) {
        print_names(t, m, model);
        anvil_trainer_free(t);
        anvil_model_free(m);
        return 0;
    }
    anvil_dataset *d = random_dataset(N_BATCHES * batch, c, hw, hw);
    anvil_tensor *xs[N_BATCHES], *ys[N_BATCHES];
    anvil_batcher *b;
    CHECK(anvil_batcher_create(&b, d, batch, false, 0));
    for (int i = 0; i < N_BATCHES; i++) {
        bool done;
        CHECK(anvil_batcher_next(b, &xs[i], &ys[i], &done));
    }
    if (resident)
        CHECK(anvil_trainer_attach_data(t, d, batch, false, 0));
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
           "\"steps\":%d,\"batch\":%d,\"loss\":%.4f,\"last_step\":{\"allocs\":%lld,\"h2d\":%lld,\"d2h\":%lld,\"graph_launches\":%lld,"
           "\"host_kernels\":%lld}}\n",
           model, cuda ? "cuda" : "cpu", resident ? "resident" : "host", ms[REPS / 2], ms[0], ms[REPS - 1], steps, batch, loss,
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
