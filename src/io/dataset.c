/* dataset.c — labelled image datasets from IDX files, and the seeded batcher that
 * turns them into float32 / int32 batches. */
#include "io/io.h"

#include "core/philox.h"

#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- loading */

anvil_status anvil_dataset_load_idx(anvil_dataset **out, const char *images_path,
                                    const char *labels_path)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_dataset_load_idx: out is NULL");
    *out = NULL;
    if (!images_path || !labels_path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_dataset_load_idx: a path is NULL");
    anvil_idx im, lb;
    ANVIL_TRY(anvil_idx_read(images_path, &im));
    anvil_status s = anvil_idx_read(labels_path, &lb);
    if (s != ANVIL_OK) {
        anvil_idx_free(&im);
        return s;
    }
    char shape[160];
    if (im.ndim < 2)
        s = anvil_fail(ANVIL_ERR_FORMAT,
                       "images file '%s' holds shape %s; images need [N, ...] with at least one "
                       "dimension per sample", images_path,
                       anvil_shape_str(shape, sizeof shape, im.ndim, im.dims));
    else if (lb.ndim != 1)
        s = anvil_fail(ANVIL_ERR_FORMAT, "labels file '%s' holds shape %s; labels must be [N]",
                       labels_path, anvil_shape_str(shape, sizeof shape, lb.ndim, lb.dims));
    else if (im.dims[0] != lb.dims[0])
        s = anvil_fail(ANVIL_ERR_FORMAT,
                       "images file '%s' holds %" PRId64 " samples but labels file '%s' holds %"
                       PRId64, images_path, im.dims[0], labels_path, lb.dims[0]);
    anvil_dataset *d = NULL;
    if (s == ANVIL_OK) {
        d = anvil_xcalloc(1, sizeof *d, "a dataset");
        if (d)
            d->labels = anvil_xmalloc((size_t)lb.dims[0] * sizeof(int32_t), "dataset labels");
        if (!d || !d->labels)
            s = ANVIL_ERR_OOM;
    }
    if (s != ANVIL_OK) {
        if (d)
            free(d);
        anvil_idx_free(&im);
        anvil_idx_free(&lb);
        return s;
    }
    d->n = im.dims[0];
    /* 2-D images [N,H,W] get a channel dimension, as torchvision gives them: [1,H,W] */
    if (im.ndim == 3) {
        d->sample_ndim = 3;
        d->sample_shape[0] = 1;
        d->sample_shape[1] = im.dims[1];
        d->sample_shape[2] = im.dims[2];
    } else {
        d->sample_ndim = im.ndim - 1;
        for (int i = 1; i < im.ndim; i++)
            d->sample_shape[i - 1] = im.dims[i];
    }
    d->sample_bytes = im.bytes / (size_t)d->n;
    d->images = im.data;
    d->labels_u8 = lb.data;
    int max_label = 0;
    for (int64_t i = 0; i < d->n; i++) {
        d->labels[i] = d->labels_u8[i];
        if (d->labels_u8[i] > max_label)
            max_label = d->labels_u8[i];
    }
    d->classes = max_label + 1;
    *out = d;
    return ANVIL_OK;
}

/* dir/base, or dir/base.gz; a clear error naming what is missing. */
static anvil_status find_file(const char *dir, const char *base, char **out)
{
    *out = NULL;
    size_t n = strlen(dir) + strlen(base) + 8;
    char *p = anvil_xmalloc(n, "a dataset path");
    if (!p)
        return ANVIL_ERR_OOM;
    struct stat st;
    size_t dl = strlen(dir);
    const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";
    for (int gz = 0; gz < 2; gz++) {
        snprintf(p, n, "%s%s%s%s", dir, sep, base, gz ? ".gz" : "");
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            *out = p;
            return ANVIL_OK;
        }
    }
    free(p);
    return anvil_fail(ANVIL_ERR_IO, "dataset folder '%s' has no %s (nor %s.gz)", dir, base, base);
}

static anvil_status load_split(anvil_dataset **out, const char *dir, const char *split)
{
    char ibase[64], lbase[64];
    snprintf(ibase, sizeof ibase, "%s-images-idx3-ubyte", split);
    snprintf(lbase, sizeof lbase, "%s-labels-idx1-ubyte", split);
    char *ipath = NULL, *lpath = NULL;
    anvil_status s = find_file(dir, ibase, &ipath);
    if (s == ANVIL_OK)
        s = find_file(dir, lbase, &lpath);
    if (s == ANVIL_OK)
        s = anvil_dataset_load_idx(out, ipath, lpath);
    free(ipath);
    free(lpath);
    return s;
}

anvil_status anvil_dataset_load_folder(anvil_dataset **train, anvil_dataset **test,
                                       const char *dir)
{
    if (train)
        *train = NULL;
    if (test)
        *test = NULL;
    if (!dir || (!train && !test))
        return anvil_fail(ANVIL_ERR_INVALID_ARG,
                          "anvil_dataset_load_folder: needs a folder and train and/or test");
    struct stat st;
    if (stat(dir, &st) != 0)
        return anvil_fail(ANVIL_ERR_IO, "dataset folder '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return anvil_fail(ANVIL_ERR_IO, "dataset folder '%s' is not a folder", dir);
    /* every missing file is reported before anything large is read */
    const char *need[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 4; i++) {
        if ((i < 2 && !train) || (i >= 2 && !test))
            continue;
        char *p = NULL;
        ANVIL_TRY(find_file(dir, need[i], &p));
        free(p);
    }
    if (train)
        ANVIL_TRY(load_split(train, dir, "train"));
    if (test) {
        anvil_status s = load_split(test, dir, "t10k");
        if (s != ANVIL_OK) {
            if (train) {
                anvil_dataset_free(*train);
                *train = NULL;
            }
            return s;
        }
    }
    return ANVIL_OK;
}

void anvil_dataset_free(anvil_dataset *d)
{
    if (!d)
        return;
    free(d->images);
    free(d->labels_u8);
    free(d->labels);
    free(d);
}

int64_t anvil_dataset_size(const anvil_dataset *d) { return d ? d->n : 0; }

int anvil_dataset_sample_shape(const anvil_dataset *d, int64_t shape[ANVIL_MAX_DIMS])
{
    if (!d)
        return -1;
    if (shape)
        for (int i = 0; i < d->sample_ndim; i++)
            shape[i] = d->sample_shape[i];
    return d->sample_ndim;
}

int anvil_dataset_classes(const anvil_dataset *d) { return d ? d->classes : 0; }

/* ---------------------------------------------------------------- shuffling */

/* Philox stream for one epoch's shuffle: key = seed, counter = (epoch lo, epoch hi,
 * block of 4 draws, a tag keeping it apart from init/dropout streams). */
#define SHUFFLE_TAG 0x53687566u /* "Shuf" */

typedef struct {
    uint32_t k0, k1, e0, e1;
    uint32_t block;
    uint32_t buf[4];
    int left;
} shuffle_rng;

static uint32_t rng_next(shuffle_rng *r)
{
    if (r->left == 0) {
        anvil_philox_out o = anvil_philox(r->e0, r->e1, r->block++, SHUFFLE_TAG, r->k0, r->k1);
        memcpy(r->buf, o.v, sizeof r->buf);
        r->left = 4;
    }
    return r->buf[4 - r->left--];
}

/* Uniform in [0, range) without modulo bias (Lemire's multiply-and-reject). */
static uint32_t rng_below(shuffle_rng *r, uint32_t range)
{
    uint64_t m = (uint64_t)rng_next(r) * range;
    uint32_t lo = (uint32_t)m;
    if (lo < range) {
        uint32_t t = (uint32_t)(-range) % range;
        while (lo < t) {
            m = (uint64_t)rng_next(r) * range;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void anvil_shuffle_order(uint32_t *order, int64_t n, bool shuffle, uint64_t seed,
                         uint64_t epoch)
{
    for (int64_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    if (!shuffle)
        return;
    shuffle_rng r = {(uint32_t)seed, (uint32_t)(seed >> 32), (uint32_t)epoch,
                     (uint32_t)(epoch >> 32), 0, {0, 0, 0, 0}, 0};
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        uint32_t j = rng_below(&r, (uint32_t)(i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---------------------------------------------------------------- batcher */

struct anvil_batcher {
    const anvil_dataset *d;
    int64_t batch_size;
    bool shuffle;
    uint64_t seed;
    uint64_t epoch;   /* index of the epoch being served */
    int64_t pos;      /* next position in order */
    uint32_t *order;  /* this epoch's sample order */
};

anvil_status anvil_batcher_create(anvil_batcher **out, const anvil_dataset *d, int batch_size,
                                  bool shuffle, uint64_t seed)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_batcher_create: out is NULL");
    *out = NULL;
    if (!d)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_batcher_create: dataset is NULL");
    if (batch_size <= 0)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "batch size must be positive, got %d",
                          batch_size);
    if (d->n <= 0 || d->n > (int64_t)UINT32_MAX)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "cannot batch a dataset of %" PRId64 " samples",
                          d->n);
    anvil_batcher *b = anvil_xcalloc(1, sizeof *b, "a batcher");
    if (!b)
        return ANVIL_ERR_OOM;
    b->order = anvil_xmalloc((size_t)d->n * sizeof *b->order, "the batcher's sample order");
    if (!b->order) {
        free(b);
        return ANVIL_ERR_OOM;
    }
    b->d = d;
    b->batch_size = batch_size;
    b->shuffle = shuffle;
    b->seed = seed;
    anvil_shuffle_order(b->order, d->n, shuffle, seed, 0);
    *out = b;
    return ANVIL_OK;
}

void anvil_batcher_free(anvil_batcher *b)
{
    if (!b)
        return;
    free(b->order);
    free(b);
}

int64_t anvil_batcher_batches_per_epoch(const anvil_batcher *b)
{
    return b ? (b->d->n + b->batch_size - 1) / b->batch_size : 0;
}

/* x[i] = pixel / 255 for the samples order[0..B); big batches use every core. */
static void gather(const anvil_dataset *d, const uint32_t *order, int64_t B, float *x,
                   int32_t *y)
{
    const size_t sb = d->sample_bytes;
    const uint8_t *images = d->images;
#pragma omp parallel for schedule(static) if ((size_t)B * sb >= ((size_t)1 << 22))
    for (int64_t i = 0; i < B; i++) {
        const uint8_t *src = images + (size_t)order[i] * sb;
        float *dst = x + (size_t)i * sb;
        for (size_t k = 0; k < sb; k++)
            dst[k] = (float)src[k] / 255.0f;
    }
    for (int64_t i = 0; i < B; i++)
        y[i] = d->labels[order[i]];
}

void anvil_batcher_position(const anvil_batcher *b, uint64_t *epoch, int64_t *pos)
{
    if (epoch)
        *epoch = b ? b->epoch : 0;
    if (pos)
        *pos = b ? b->pos : 0;
}

anvil_status anvil_batcher_seek(anvil_batcher *b, uint64_t epoch, int64_t pos)
{
    if (!b)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_batcher_seek: batcher is NULL");
    if (pos < 0 || pos > b->d->n)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_batcher_seek: position %lld outside the %lld samples",
                          (long long)pos, (long long)b->d->n);
    b->epoch = epoch;
    b->pos = pos;
    anvil_shuffle_order(b->order, b->d->n, b->shuffle, b->seed, b->epoch);
    return ANVIL_OK;
}

anvil_status anvil_batcher_next(anvil_batcher *b, anvil_tensor **x, anvil_tensor **y,
                                bool *done)
{
    if (x)
        *x = NULL;
    if (y)
        *y = NULL;
    if (!b || !x || !y || !done)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_batcher_next: NULL argument");
    const anvil_dataset *d = b->d;
    *done = false;
    if (b->pos >= d->n) { /* epoch over: prepare the next one's order */
        *done = true;
        b->epoch++;
        b->pos = 0;
        anvil_shuffle_order(b->order, d->n, b->shuffle, b->seed, b->epoch);
        return ANVIL_OK;
    }
    int64_t B = d->n - b->pos < b->batch_size ? d->n - b->pos : b->batch_size;
    int64_t xs[ANVIL_MAX_DIMS];
    xs[0] = B;
    for (int i = 0; i < d->sample_ndim; i++)
        xs[i + 1] = d->sample_shape[i];
    anvil_tensor *tx = NULL, *ty = NULL;
    ANVIL_TRY(anvil_tensor_create(&tx, ANVIL_F32, d->sample_ndim + 1, xs, NULL));
    anvil_status s = anvil_tensor_create(&ty, ANVIL_I32, 1, &B, NULL);
    if (s != ANVIL_OK) {
        anvil_tensor_release(tx);
        return s;
    }
    gather(d, b->order + b->pos, B, anvil_tensor_data(tx), anvil_tensor_data(ty));
    b->pos += B;
    *x = tx;
    *y = ty;
    return ANVIL_OK;
}
