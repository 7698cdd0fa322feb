/* io.h — internal view of file formats and datasets: the IDX reader and the dataset
 * struct, so the trainer (and a device-resident dataset mode) can reach the raw bytes. */
#ifndef ANVIL_IO_H
#define ANVIL_IO_H

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- IDX */

/* IDX is the MNIST container: 0x00 0x00 <dtype> <ndim>, ndim big-endian uint32 dims,
 * then the row-major data.  Only dtype 0x08 (uint8) is read. */
#define ANVIL_IDX_UBYTE 0x08
#define ANVIL_IDX_MAX_BYTES ((uint64_t)1 << 40) /* 1 TiB: a header beyond this is garbage */

typedef struct {
    int ndim;
    int64_t dims[ANVIL_MAX_DIMS];
    uint8_t *data;   /* product(dims) bytes, owned */
    size_t bytes;
} anvil_idx;

/* Reads a plain or gzip-compressed IDX file whole.  ANVIL_ERR_IO when it cannot be
 * opened; ANVIL_ERR_FORMAT (naming the path) for a bad magic, dtype, ndim, dims, or a
 * size other than the header promises.  On failure *out is left empty. */
anvil_status anvil_idx_read(const char *path, anvil_idx *out);
void anvil_idx_free(anvil_idx *idx);

/* ---------------------------------------------------------------- datasets */

/* A labelled image dataset held in host memory exactly as the files store it: n samples
 * of sample_bytes uint8 each, and one class index per sample.  Batches convert to
 * float32 / int32 on the way out (so a device copy of the dataset is 4x smaller). */
struct anvil_dataset {
    int64_t n;
    int sample_ndim;                         /* images [C,H,W]: C = 1 for 2-D IDX images */
    int64_t sample_shape[ANVIL_MAX_DIMS];
    size_t sample_bytes;                     /* product(sample_shape) */
    uint8_t *images;                         /* [n, sample_shape...] */
    uint8_t *labels_u8;                      /* [n], as stored */
    int32_t *labels;                         /* [n], the same as int32 (what y holds) */
    int classes;                             /* max label + 1 */
};

/* The batcher's sample order for an epoch: 0..n-1, Fisher-Yates shuffled when asked by
 * Philox (key = seed, counter = (epoch, draw block, tag)).  A pure function of its
 * arguments, so a device-resident dataset can replay the same order. */
void anvil_shuffle_order(uint32_t *order, int64_t n, bool shuffle, uint64_t seed,
                         uint64_t epoch);

#ifdef __cplusplus
}
#endif
#endif
